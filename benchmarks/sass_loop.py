"""The instruction mix of a quantized kernel's inner loop, read from its Hopper (sm_90) SASS on any machine, GPU
or not: Triton's compiler and ptxas make the cubin, the cuobjdump shipped in Triton's wheel disassembles it, and
the longest backward branch delimits the loop. Prints the loop's instructions, the weights each thread handles
per iteration, their ratio and the loop's opcode histogram: the counts docs/perf-log.md quotes. A count is not a
time (latency, memory and issue limits decide that; benchmarks/quant_gemv.py times on a GPU), but it showed
where instructions went before any device time was spent.

    PYTHONPATH=.venv/triton-interpreter:src .venv/bin/python -m benchmarks.sass_loop int4 16 64 128 4
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import tempfile
from pathlib import Path

from qwen_triton.models import quant_gemv

INSTRUCTION = re.compile(r"^\s+/\*([0-9a-f]+)\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)([^;]*);")


def compile_for_hopper(kernel, pointers: dict[str, str], constexprs: dict, warps: int):
    """`kernel` compiled for sm_90 by Triton's compiler and ptxas (no GPU needed): pointer arguments typed by
    `pointers`, every other argument i32 divisible by 16 (as the launcher specializes Qwen's sizes) or constexpr
    (`constexprs`, else its default). Triton is imported here: the server's CPU install has none (make test's
    interpreter folder does)."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constexprs = {**{p.name: p.default for p in kernel.params
                     if p.is_constexpr and p.default is not inspect.Parameter.empty}, **constexprs}
    names = kernel.arg_names
    signature = {n: "constexpr" if n in constexprs else pointers.get(n, "i32") for n in names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if signature[n] != "constexpr"}
    source = ASTSource(fn=kernel, signature=signature, attrs=attrs,
                       constexprs={(names.index(n),): v for n, v in constexprs.items()})
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})


def compile_cubin(precision: str, constexprs: dict, warps: int, dtype: str = "fp16") -> bytes:
    """The cubin of int8/fp8 (_int8_gemv_kernel) or int4 (_int4_gemv_kernel) at one launch, pointers typed as
    the runtime passes them."""
    kernel = quant_gemv._int4_gemv_kernel if precision == "int4" else quant_gemv._int8_gemv_kernel
    pointers = {"x_ptr": f"*{dtype}", "q_ptr": "*i8" if precision == "int8" else "*u8", "bias_ptr": f"*{dtype}",
                "out_ptr": f"*{dtype}", "scale_ptr": "*fp32", "zero_ptr": "*u8", "parts_ptr": "*fp32",
                "count_ptr": "*i32"}
    return compile_for_hopper(kernel, pointers, constexprs, warps).asm["cubin"]


def weights_per_thread(block_n: int, block_k: int, warps: int) -> float:
    """Weights one thread handles per iteration of the loop: a BLOCK_N x BLOCK_K tile over 32 * warps threads."""
    return block_n * block_k / (32 * warps)


def disassemble(cubin: bytes) -> str:
    """SASS text of a cubin, by the cuobjdump in Triton's wheel."""
    import triton

    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernel.cubin"
        path.write_bytes(cubin)
        return subprocess.run([cuobjdump, "-sass", path], check=True, capture_output=True, text=True).stdout


def loop_mix(sass: str) -> tuple[int, collections.Counter]:
    """(instructions, opcode counts) between the longest backward branch and its target."""
    rows = [(int(m.group(1), 16), m.group(3), m.group(4)) for m in map(INSTRUCTION.match, sass.splitlines()) if m]
    loops = [(target, addr) for addr, op, rest in rows if op == "BRA"
             for target in [int(rest.strip().split()[0], 16)] if target < addr]
    start, end = max(loops, key=lambda span: span[1] - span[0])
    ops = [op.split(".")[0] for addr, op, _ in rows if start <= addr <= end]
    return len(ops), collections.Counter(ops)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("precision", choices=("int8", "int4", "fp8"))
    parser.add_argument("launch", type=int, nargs=4, metavar=("BLOCK_M", "BLOCK_N", "BLOCK_K", "WARPS"))
    parser.add_argument("--group", type=int, default=128)
    parser.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16")
    args = parser.parse_args(argv)
    block_m, block_n, block_k, warps = args.launch
    constexprs = {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "SPLITS": 1, "HAS_BIAS": False,
                  "PDL": True}
    constexprs.update({"GROUP": args.group} if args.precision == "int4" else {"FP8": args.precision == "fp8"})
    count, mix = loop_mix(disassemble(compile_cubin(args.precision, constexprs, warps, args.dtype)))
    weights = weights_per_thread(block_n, block_k, warps)
    print(json.dumps({"precision": args.precision, "launch": args.launch, "dtype": args.dtype, "loop": count,
                      "weights_per_thread": weights, "per_weight": round(count / weights, 2),
                      "mix": dict(mix.most_common(16))}))


if __name__ == "__main__":
    main()
