"""Makes goldens.safetensors with the REAL reference libraries' pack code (not run by the tests; rerun by hand):

    pip download --no-deps -d /tmp/wheels autoawq==0.2.7.post3
    pip download --no-deps --only-binary :all: --python-version 3.11 --platform manylinux2014_x86_64 \
        -d /tmp/wheels auto-gptq==0.7.1
    cd /tmp/wheels && unzip -q -o 'autoawq-*.whl' -d awq && unzip -q -o 'auto_gptq-*.whl' -d gptq -x '*.so'
    .venv/bin/python tests/support/quant_goldens/make_goldens.py /tmp/wheels/gptq /tmp/wheels/awq

Each case is a random integer linear (q, zeros, scales, g_idx), the float weight W = (q - zeros[g]) * scales[g]
it stands for, and what auto-gptq 0.7.1 `auto_gptq/nn_modules/qlinear/qlinear_cuda.py` QuantLinear.pack or
AutoAWQ 0.2.7.post3 `awq/modules/linear/gemm.py` WQLinear_GEMM.from_linear made of W. Before saving, the
libraries' own dequantization (auto-gptq's torch forward on an identity input; AutoAWQ's
`awq/utils/packing_utils.py` dequantize_gemm) is checked to give W back, so a golden is self-consistent.
Only the libraries' module files are loaded (by path), not their packages, whose imports need CUDA-era deps.
"""
import importlib.util
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).with_name("goldens.safetensors")
K, N = 256, 32
# (name, method, bits, group_size, symmetric, act_order)
CASES = [("gptq_b4_g128_sym", "gptq", 4, 128, True, False), ("gptq_b4_gall_sym", "gptq", 4, -1, True, False),
         ("gptq_b4_g32_asym", "gptq", 4, 32, False, False), ("gptq_b4_g64_asym", "gptq", 4, 64, False, False),
         ("gptq_b8_g128_sym", "gptq", 8, 128, True, False), ("gptq_b8_gall_sym", "gptq", 8, -1, True, False),
         ("gptq_b8_g32_asym", "gptq", 8, 32, False, False), ("gptq_b4_g64_actorder", "gptq", 4, 64, True, True),
         ("awq_b4_g128", "awq", 4, 128, False, False), ("awq_b4_g64", "awq", 4, 64, False, False)]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _awq_gemm(root: Path):
    # gemm.py imports awq.utils.{module,utils,packing_utils}; awq/__init__ and utils.py's `import accelerate`
    # pull in the whole model zoo, so empty packages and an empty accelerate stand in for them.
    for package in ("awq", "awq.utils", "awq.modules", "awq.modules.linear"):
        module = types.ModuleType(package)
        module.__path__ = [str(root / package.replace(".", "/"))]
        sys.modules[package] = module
    sys.modules.setdefault("accelerate", types.ModuleType("accelerate"))
    for sub in ("utils/module", "utils/utils", "utils/packing_utils", "modules/linear/gemm"):
        _load(root / "awq" / f"{sub}.py", "awq." + sub.replace("/", "."))
    return sys.modules["awq.modules.linear.gemm"], sys.modules["awq.utils.packing_utils"]


def _case(gen, bits, group_size, symmetric, act_order):
    groups = 1 if group_size == -1 else K // group_size
    q = torch.randint(0, 2**bits, (N, K), generator=gen, dtype=torch.int32)
    # v1 GPTQ stores zero - 1, so a zero of 0 would wrap; auto-gptq's sym zero is 2**(bits-1).
    zeros = torch.full((N, groups), 2 ** (bits - 1)) if symmetric else torch.randint(1, 2**bits, (N, groups),
                                                                                       generator=gen)
    scales = (torch.rand(N, groups, generator=gen) * 0.02 + 0.001).half().float()
    g_idx = torch.arange(K) // (K if group_size == -1 else group_size)
    if act_order:
        g_idx = g_idx[torch.randperm(K, generator=gen)]
    weight = (q - zeros[:, g_idx]).float() * scales[:, g_idx]
    return q, zeros.int(), scales, g_idx.int(), weight


def main(gptq_root: str, awq_root: str) -> None:
    gptq = _load(Path(gptq_root) / "auto_gptq/nn_modules/qlinear/qlinear_cuda.py", "ref_qlinear_cuda")
    gemm, packing = _awq_gemm(Path(awq_root))
    gen, out = torch.Generator().manual_seed(24), {}
    for name, method, bits, group_size, symmetric, act_order in CASES:
        q, zeros, scales, g_idx, weight = _case(gen, bits, group_size, symmetric, act_order)
        linear = torch.nn.Linear(K, N, bias=False)
        linear.weight.data = weight
        if method == "gptq":
            layer = gptq.QuantLinear(bits, group_size, K, N, bias=False, weight_dtype=torch.float32)
            layer.pack(linear, scales.clone(), zeros.clone().float(), g_idx=g_idx.clone())
            assert torch.equal(layer(torch.eye(K)).t(), weight), name  # the library's own dequantization
            packed = {"qweight": layer.qweight, "qzeros": layer.qzeros, "scales": layer.scales.half(),
                      "g_idx": layer.g_idx.int()}
        else:
            layer = gemm.WQLinear_GEMM.from_linear(linear, bits, group_size, scales=scales.t().contiguous(),
                                                   zeros=zeros.t().contiguous())
            dequantized = packing.dequantize_gemm(layer.qweight, layer.qzeros, layer.scales.float(), bits, group_size)
            assert torch.equal(dequantized.t(), weight), name
            packed = {"qweight": layer.qweight, "qzeros": layer.qzeros, "scales": layer.scales}
        out |= {f"{name}.{k}": v.contiguous() for k, v in packed.items()}
        out |= {f"{name}.expect_q": q.to(torch.uint8), f"{name}.expect_zeros": zeros.to(torch.int16),
                f"{name}.expect_scales": scales, f"{name}.expect_group": g_idx.to(torch.int16)}
    save_file(out, str(OUT), metadata={"made_by": "auto-gptq 0.7.1 qlinear_cuda.QuantLinear.pack; "
                                                  "autoawq 0.2.7.post3 WQLinear_GEMM.from_linear"})
    print(f"wrote {len(CASES)} cases to {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
