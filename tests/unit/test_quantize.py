"""Weight-only int8/int4: the round-to-nearest quantizer's error bounds, int4 packing, the quantized linear ops
against dequantize-then-F.linear (CPU, float32) at the layer shapes of Qwen-7B, Qwen2-7B and Qwen2.5-1.5B,
engine_config.json's quantization, and build.convert --weight-only writing the layout the loader reads."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from qwen_triton.config import EngineConfig, EngineLimits, ModelConfig, QuantConfig, load_engine_folder
from qwen_triton.errors import ConfigError
from qwen_triton.models import ops
from qwen_triton.models import quant_gemv as quant_gemv_ops
from qwen_triton.models.quant_linear import QuantLinear
from qwen_triton.runtime.loader import load_model
from qwen_triton.tools.convert import convert_checkpoint
from qwen_triton.tools.quantize import (dequantize_int4, dequantize_int8, pack_int4, quantize_int4, quantize_int8,
                                        quantize_weight, unpack_int4, weight_bytes)
from qwen_triton.tools.random_checkpoint import TINY, make_random_checkpoint
from qwen_triton.tools.random_engine import make_random_engine

LIMITS = EngineLimits(max_batch_size=2, max_input_len=64, max_seq_len=128)
ROOT = Path(__file__).resolve().parents[2]
INT8, INT4_32 = QuantConfig("int8"), QuantConfig("int4", group_size=32)
# (N, K) of qkv_proj, o_proj, gate_up_proj, down_proj: hidden / intermediate / heads / kv heads from config.json.
LAYER_SHAPES = {
    "qwen-7b": [(12288, 4096), (4096, 4096), (22016, 4096), (4096, 11008)],
    "qwen2-7b": [(4608, 3584), (3584, 3584), (37888, 3584), (3584, 18944)],
    "qwen2.5-1.5b": [(2048, 1536), (1536, 1536), (17920, 1536), (1536, 8960)],
}


def _weights(n, k, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=gen) * 0.02
    w[0, 5] = 0.5  # an outlier: its row's (group's) scale grows, the bound must still hold
    w[1] = 0.0  # an all-zero row
    return w


def test_int8_round_trip_is_within_half_a_scale_per_element():
    w = _weights(64, 96)
    qweight, scales = quantize_int8(w)
    assert qweight.dtype == torch.int8 and qweight.shape == (64, 96) and scales.shape == (64,)
    assert scales.dtype == torch.float32 and qweight.abs().max() <= 127
    error = (dequantize_int8(qweight, scales) - w).abs()
    assert (error <= scales[:, None] / 2 * (1 + 1e-6)).all()
    assert torch.equal(dequantize_int8(qweight, scales)[1], torch.zeros(96))


@pytest.mark.parametrize("group", [32, 64])
def test_int4_round_trip_is_within_half_a_scale_per_group(group):
    w = _weights(48, 128) + 0.01  # shifted: groups are not centred on zero
    qweight, scales, zeros = quantize_int4(w, group)
    assert qweight.dtype == torch.uint8 and qweight.shape == (48, 64)
    assert scales.shape == zeros.shape == (48, 128 // group) and zeros.dtype == torch.uint8 and zeros.max() <= 15
    error = (dequantize_int4(qweight, scales, zeros) - w).abs()  # (N, K)
    bound = scales.repeat_interleave(group, dim=1) / 2
    assert (error <= bound * (1 + 1e-5) + 1e-7).all()
    assert error.max() > 0  # 4 bits cannot hold the weights exactly: the bound is not vacuous


def test_pack_int4_puts_even_columns_in_the_low_nibble():
    assert pack_int4(torch.tensor([[1, 2, 3, 15]])).tolist() == [[0x21, 0xF3]]


def test_pack_and_unpack_int4_are_inverse_on_random_data():
    gen = torch.Generator().manual_seed(1)
    q = torch.randint(0, 16, (37, 258), generator=gen, dtype=torch.uint8)
    assert torch.equal(unpack_int4(pack_int4(q)), q)
    packed = torch.randint(0, 256, (5, 40), generator=gen, dtype=torch.uint8)
    assert torch.equal(pack_int4(unpack_int4(packed)), packed)


def _random_layout(n, k, precision, gen):
    if precision == "int8":
        return torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8), torch.rand(n, generator=gen) * 1e-3
    groups = k // 128
    return (torch.randint(0, 256, (n, k // 2), generator=gen, dtype=torch.uint8),
            torch.rand(n, groups, generator=gen) * 1e-3, torch.randint(0, 16, (n, groups), generator=gen,
                                                                         dtype=torch.uint8))


def _ops_and_rows(precision, row_counts):
    """(op, rows) to check: the CPU float32 op at every row count and, where it is another function, the
    reference (what CUDA uses in float32) at one row."""
    name = f"linear_{precision}"
    cpu, reference = getattr(ops.select_ops("cpu", torch.float32), name), getattr(ops.TORCH_OPS, name)
    return [(cpu, rows) for rows in row_counts] + ([(reference, 1)] if reference is not cpu else [])


def _check_op(n, k, precision, row_counts, gen):
    stored = _random_layout(n, k, precision, gen)
    weight = (dequantize_int8 if precision == "int8" else dequantize_int4)(*stored)  # (N, K) float32
    x = torch.randn(max(row_counts), k, generator=gen)
    bias = torch.randn(n, generator=gen)
    for op, rows in _ops_and_rows(precision, row_counts):
        got = op(x[:rows], *stored, bias if rows % 2 else None)
        want = F.linear(x[:rows], weight, bias if rows % 2 else None)
        assert got.shape == (rows, n) and got.dtype == torch.float32
        assert (got - want).abs().max() <= 1e-5 * want.abs().max(), (op.__name__, (n, k), rows)


@pytest.mark.parametrize("precision", ["int8", "int4"])
@torch.inference_mode()
def test_quantized_linear_ops_equal_dequantize_then_linear_for_1_to_64_rows(precision):
    _check_op(256, 512, precision, range(1, 65), torch.Generator().manual_seed(5))


@pytest.mark.parametrize("model", LAYER_SHAPES)
@pytest.mark.parametrize("precision", ["int8", "int4"])
@torch.inference_mode()
def test_quantized_linear_ops_equal_dequantize_then_linear_at_real_layer_shapes(model, precision):
    """The CPU float32 ops (the chunked dequantize: rows on each side of a chunk, N not a multiple of it) and the
    reference that CUDA float32 uses, at every layer shape, group size 128; rows on each side of the switch.
    CUDA's half-precision kernels: tests/gpu/test_quant_kernels.py, and interpreted on CPU in
    tests/unit/test_kernels_interpreted.py."""
    gen = torch.Generator().manual_seed(2)
    rows = (1, 5, 64)
    for n, k in LAYER_SHAPES[model]:
        _check_op(n, k, precision, rows, gen)


@pytest.mark.parametrize("triton", [False, True])
def test_the_quantized_ops_are_chosen_once_per_device_and_dtype(monkeypatch, triton):
    monkeypatch.setattr(ops, "TRITON", triton)
    assert ops.select_ops("cpu", torch.bfloat16).linear_int8 is ops.int8pack_linear
    assert ops.select_ops("cpu", torch.bfloat16).linear_int4 is ops.int4pack_linear
    for dtype in (torch.float32, torch.float16):
        assert ops.select_ops("cpu", dtype).linear_int8 is ops.chunked_linear_int8
        assert ops.select_ops("cpu", dtype).linear_int4 is ops.chunked_linear_int4
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        cuda = ops.select_ops("cuda", dtype)
        # CUDA: the dequantizing GEMV in half precision with Triton, the reference otherwise.
        quant_gemv = triton and dtype != torch.float32
        assert (cuda.linear_int8, cuda.linear_int4) == ((quant_gemv_ops.linear_int8, quant_gemv_ops.linear_int4)
                                                        if quant_gemv else
                                                        (ops.dequant_linear_int8, ops.dequant_linear_int4))
        assert ops.select_ops("cpu", dtype).prepare_int4 is (ops.int4pack_layout if dtype == torch.bfloat16 else None)
        assert cuda.prepare_int4 is None
        # fp8: W8A8 everywhere except CUDA half precision with Triton, where decode rows take the e4m3 GEMV.
        assert ops.select_ops("cpu", dtype).linear_fp8 is ops.fp8_linear
        assert cuda.linear_fp8 is (ops.small_batch_fp8_linear if quant_gemv else ops.fp8_linear)


def test_fp8_on_cuda_takes_w8a16_below_the_w8a8_rows_then_the_rows_kernel_then_the_gemm(monkeypatch):
    """ops.small_batch_fp8_linear's three paths by rows (recorded, not run: the kernels need a GPU)."""
    from qwen_triton.models import fp8_gemm, quant_launch

    taken = []
    monkeypatch.setattr(quant_launch, "FP8_W8A8_ROWS", 32)
    for module, name in ((quant_gemv_ops, "linear_fp8_weight"), (fp8_gemm, "linear_rows"), (fp8_gemm, "linear")):
        monkeypatch.setattr(module, name, lambda x, *a, name=name: taken.append((x.shape[0], name)))
    for rows in (1, 31, 32, 64, 65):
        ops.small_batch_fp8_linear(torch.zeros(rows, 16, dtype=torch.float16), None, None)
    assert taken == [(1, "linear_fp8_weight"), (31, "linear_fp8_weight"), (32, "linear_rows"), (64, "linear_rows"),
                     (65, "linear")]
    # rows_launch: the smallest row bound that holds M, by output width.
    assert [fp8_gemm.rows_launch(m, 4096)[0] for m in (2, 16, 17, 32, 33, 64)] == [16, 16, 32, 32, 64, 64]
    assert fp8_gemm.rows_launch(64, 4096) == fp8_gemm.ROWS_LAUNCHES[64]["narrow"]
    assert fp8_gemm.rows_launch(64, 12288) == fp8_gemm.ROWS_LAUNCHES[64]["wide"]


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_one_float16_row_of_a_wide_int8_or_fp8_layer_goes_to_row_gemv_and_a_narrow_one_does_not(monkeypatch,
                                                                                                precision):
    """quant_gemv's hook into models/row_gemv.py: quant_launch.ROW_LAUNCHES has int8's and fp8's wide outputs only
    (qkv_proj, gate_up_proj), one float16 row only."""
    from qwen_triton.models import quant_launch, row_gemv

    calls = []
    monkeypatch.setattr(row_gemv, "linear", lambda kind, x, q, *a: calls.append((kind, x.shape[0], q.shape[0])))
    op = quant_gemv_ops.linear_int8 if precision == "int8" else quant_gemv_ops.linear_fp8_weight
    dtype = torch.int8 if precision == "int8" else torch.float8_e4m3fn
    wide = torch.zeros(12288, 4096, dtype=dtype)
    op(torch.zeros(1, 4096, dtype=torch.float16), wide, torch.ones(12288))
    assert calls == [(precision, 1, 12288)]
    assert quant_launch.row_launch(1, 12288, 4096, precision, True) == quant_launch.ROW_LAUNCHES[precision]["wide"]
    for rows, n, float16 in ((1, 4096, True), (2, 12288, True), (1, 12288, False)):  # narrow, two rows, bfloat16
        assert quant_launch.row_launch(rows, n, 4096, precision, float16) is None


@pytest.mark.parametrize("dtype, torchs_kernel", [(torch.bfloat16, True), (torch.float32, False),
                                                  (torch.float16, False)])
def test_the_cpu_int8_op_takes_torchs_kernel_in_bfloat16_only(monkeypatch, dtype, torchs_kernel):
    """In float32 and float16 torch's int8 kernel goes row by row: the chunked dequantize is used at every row count."""
    calls = []
    kernel = torch._weight_int8pack_mm
    monkeypatch.setattr(torch, "_weight_int8pack_mm", lambda x, *a: calls.append(x.shape[0]) or kernel(x, *a))
    qweight, scales = _random_layout(8, 16, "int8", torch.Generator().manual_seed(6))
    for rows in (1, 5, 64):
        ops.select_ops("cpu", dtype).linear_int8(torch.randn(rows, 16).to(dtype), qweight, scales)
    assert calls == ([1, 5, 64] if torchs_kernel else [])


def test_the_chunked_dequantize_covers_every_weight_row_once(monkeypatch):
    """A weight of 2.5 chunks: every output column computed, from its own rows (a lost or repeated chunk fails)."""
    from qwen_triton.models import cpu_quant

    monkeypatch.setattr(cpu_quant, "DEQUANTIZE_CHUNK_ROWS", 4)
    qweight, scales = _random_layout(10, 16, "int8", torch.Generator().manual_seed(2))
    x = torch.randn(3, 16)
    want = F.linear(x, dequantize_int8(qweight, scales))
    assert torch.allclose(cpu_quant.chunked_linear_int8(x, qweight, scales), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@torch.inference_mode()
def test_cpu_int8_op_in_half_precision_stays_within_its_rounding(dtype):
    gen = torch.Generator().manual_seed(3)
    qweight, scales = _random_layout(256, 512, "int8", gen)
    x = torch.randn(9, 512, generator=gen).to(dtype)
    for rows in (1, 9):  # bfloat16: torch's int8 matmul; float16: the chunked dequantize
        got = ops.select_ops("cpu", dtype).linear_int8(x[:rows], qweight, scales)
        want = F.linear(x[:rows].float(), dequantize_int8(qweight, scales))
        assert got.dtype == dtype and (got.float() - want).abs().max() <= 2e-2 * want.abs().max()


def test_engine_config_round_trips_its_quantization_and_old_folders_load_unquantized():
    model = ModelConfig(vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                        num_attention_heads=4, num_key_value_heads=2)
    for quant in (QuantConfig(), INT8, QuantConfig("int4", group_size=128, quantize_head=True)):
        data = json.loads(EngineConfig(model=model, quantization=quant).to_json())
        assert data["quantization"]["weight_only_precision"] == quant.weight_only_precision
        assert EngineConfig.from_dict(data).quantization == quant
    old = json.loads(EngineConfig(model=model).to_json())
    del old["quantization"]
    assert EngineConfig.from_dict(old).quantization == QuantConfig()


@pytest.mark.parametrize("fields,match", [
    (dict(weight_only_precision="int2"), "weight_only_precision"), (dict(weight_only_precision="int4", group_size=0), "group_size"),
    (dict(weight_only_precision="int4", group_size=33), "group_size"),
    (dict(weight_only_precision="int8", group_size=128), "int4 only"), (dict(quantize_head=True), "quantize_head")])
def test_inconsistent_quantization_is_refused(fields, match):
    with pytest.raises(ConfigError, match=match):
        QuantConfig(**fields)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("quant") / "hf", "qwen", seed=4)


def _stored(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


@pytest.mark.parametrize("quant", [INT8, INT4_32, QuantConfig("int4", group_size=64, quantize_head=True)],
                         ids=["int8", "int4-g32", "int4-g64-head"])
def test_convert_writes_the_layout_and_the_loader_builds_quantized_layers(checkpoint, tmp_path, quant):
    float_engine = _stored(convert_checkpoint(checkpoint, tmp_path / "float", LIMITS).weights)
    folder = convert_checkpoint(checkpoint, tmp_path / "q", LIMITS, quant=quant)
    assert load_engine_folder(folder.path).config.quantization == quant
    stored = _stored(folder.weights)
    layer = "model.layers.1.mlp.down_proj"
    assert f"{layer}.weight" not in stored and stored[f"{layer}.qweight"].dtype == (
        torch.int8 if quant.weight_only_precision == "int8" else torch.uint8)
    args = [stored[f"{layer}.{t}"] for t in ("qweight", "scales", "zeros") if f"{layer}.{t}" in stored]
    dequantized = (dequantize_int8 if quant.weight_only_precision == "int8" else dequantize_int4)(*args)
    scales = args[1] if args[1].dim() == 2 else args[1][:, None]
    bound = scales.repeat_interleave(dequantized.shape[1] // scales.shape[1], dim=1) / 2
    assert ((dequantized - float_engine[f"{layer}.weight"]).abs() <= bound * (1 + 1e-5) + 1e-7).all()
    for kept in ("model.embed_tokens.weight", "model.layers.0.self_attn.qkv_proj.bias", "model.norm.weight"):
        assert torch.equal(stored[kept], float_engine[kept])
    assert ("lm_head.weight" in stored) != quant.quantize_head
    assert weight_bytes(folder.config.model, torch.float32, quant) == sum(
        t.numel() * t.element_size() for t in stored.values())
    model = load_model(folder, "cpu", torch.float32)
    quantized = [name for name, m in model.named_modules() if isinstance(m, QuantLinear)]
    assert len(quantized) == 4 * model.config.num_hidden_layers + quant.quantize_head


def test_a_shape_the_group_does_not_divide_is_refused_naming_the_tensor(checkpoint, tmp_path):
    # The tiny model's hidden size is 64: the first quantized weight, qkv_proj of layer 0, has K = 64.
    with pytest.raises(ConfigError, match=r"model\.layers\.0\.self_attn\.qkv_proj\.weight: 64 input columns"):
        convert_checkpoint(checkpoint, tmp_path, LIMITS, quant=QuantConfig("int4", group_size=128))
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "model.safetensors.partial").exists()


def test_an_int4_engine_whose_group_the_gpu_kernels_cannot_tile_is_refused_on_cuda_naming_group_size(
        checkpoint, tmp_path):
    """The CUDA kernels' int4 tiles lie inside one group of at least 32 columns: group 16 is refused at load, by
    name (before any weight reaches the device, so this runs without a GPU), not left to a kernel's launch; group
    32 passes the checks, and group 16 still loads on the CPU (the torch ops take any even group)."""
    from qwen_triton.runtime import loader

    def engine(group):
        quant = QuantConfig("int4", group_size=group)
        return load_engine_folder(convert_checkpoint(checkpoint, tmp_path / f"g{group}", LIMITS, quant=quant).path)

    with pytest.raises(ConfigError, match="int4 on a GPU needs a group_size that is a multiple of 32.*got 16"):
        loader.load_model(engine(16), "cuda", torch.float16)
    assert loader.load_model(engine(16), "cpu", torch.float32) is not None
    with pytest.raises(Exception) as g32_on_cuda:  # past the checks: it fails only for want of a GPU here
        loader.load_model(engine(32), "cuda", torch.float16)
    assert "group_size" not in str(g32_on_cuda.value)


def test_quantize_head_is_refused_when_the_head_is_the_embedding(tmp_path):
    make_random_checkpoint(tmp_path / "hf", "qwen2", seed=1)  # the tiny Qwen2 checkpoint ties its head
    with pytest.raises(ConfigError, match="ties lm_head"):
        convert_checkpoint(tmp_path / "hf", tmp_path / "e", LIMITS, quant=QuantConfig("int8", quantize_head=True))


def test_build_convert_weight_only_flags(checkpoint, tmp_path):
    spec = importlib.util.spec_from_file_location("build_convert", ROOT / "build" / "convert.py")
    convert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert)
    common = ["--hf-dir", str(checkpoint), "--max-input-len", "32", "--max-seq-len", "64"]
    convert.main([*common, "--out", str(tmp_path / "e"), "--weight-only", "int4", "--group-size", "32"])
    assert json.loads((tmp_path / "e" / "engine_config.json").read_text())["quantization"] == {
        "weight_only_precision": "int4", "group_size": 32, "quantize_head": False, "quant_algo": None}
    with pytest.raises(SystemExit, match="qkv_proj.weight"):
        convert.main([*common, "--out", str(tmp_path / "f"), "--weight-only", "int4"])  # group 128 > K = 64


def test_the_docs_show_the_committed_results_and_the_memory_is_current():
    from benchmarks.quant_fidelity import DOC_BEGIN, DOC_END, markdown, qwen_7b_weight_gib

    report = json.loads((ROOT / "benchmarks" / "results" / "quant_fidelity_cpu.json").read_text())
    doc = (ROOT / "docs" / "quantization.md").read_text()
    assert doc.split(DOC_BEGIN)[1].split(DOC_END)[0].strip() == markdown(report), "python -m benchmarks.quant_fidelity"
    assert report["qwen_7b_weight_gib"] == qwen_7b_weight_gib()


@pytest.mark.parametrize("quant", [INT8, INT4_32], ids=["int8", "int4"])
@torch.inference_mode()
def test_a_random_weight_engine_is_quantized_at_load_as_convert_would_store_it(tmp_path, quant):
    """The GPU benchmark's quantized engines: seeded weights made at load, then the quantizer's tensors."""
    plain = load_model(make_random_engine(tmp_path / "plain", TINY, LIMITS, seed=3), "cpu", torch.float32)
    folder = make_random_engine(tmp_path / "quant", TINY, LIMITS, seed=3, quantization=quant)
    assert folder.config.quantization == quant
    model = load_model(folder, "cpu", torch.float32)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert len(layers) == 4 * folder.config.model.num_hidden_layers and "lm_head" not in layers
    for name, layer in layers.items():
        want = quantize_weight(f"{name}.weight", plain.get_submodule(name).weight, torch.float32, quant)
        assert want and all(torch.equal(getattr(layer, stored.rsplit(".", 1)[1]), t) for stored, t in want.items())
    assert not any(isinstance(m, torch.nn.Linear) and n in layers for n, m in model.named_modules())


def test_the_cuda_ops_accept_a_quantized_models_buffers_in_their_own_dtypes_and_refuse_strided_ones(tmp_path):
    """ModelRunner's load-time check for the Triton set (run only on CUDA): quantized weights keep their dtypes."""
    folder = make_random_engine(tmp_path / "q", TINY, LIMITS, seed=3, quantization=INT4_32)
    model = load_model(folder, "cpu", torch.float32)
    triton_set = ops.triton_ops(torch.float16)
    buffers = list(model.named_buffers())
    assert {t.dtype for _, t in buffers} == {torch.uint8, torch.float32}
    ops.check_operands(triton_set, buffers, None)
    name, qweight = buffers[0]
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        ops.check_operands(triton_set, [(name, qweight.t())], None)
    with pytest.raises(ValueError, match="float16"):  # parameters are still held to the model's dtype
        ops.check_operands(triton_set, list(model.named_parameters()), torch.float16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@torch.inference_mode()
def test_the_cpu_int4_op_in_half_precision_stays_within_its_rounding(dtype):
    gen = torch.Generator().manual_seed(7)
    stored = _random_layout(256, 512, "int4", gen)
    prepared = ops.int4pack_layout(*stored, dtype) if dtype == torch.bfloat16 else {}  # as QuantLinear.prepare
    x = torch.randn(8, 512, generator=gen).to(dtype)
    for rows in (1, 4, 8):
        got = ops.select_ops("cpu", dtype).linear_int4(x[:rows], *stored, None, **prepared)
        want = F.linear(x[:rows].float(), dequantize_int4(*stored))
        assert got.dtype == dtype and (got.float() - want).abs().max() <= 2e-2 * want.abs().max()


def test_a_bfloat16_int4_layer_carries_torchs_cpu_layout_and_a_width_torch_cannot_pack_keeps_the_chunked_path(
        tmp_path):
    folder = make_random_engine(tmp_path / "q", TINY, LIMITS, seed=3, quantization=INT4_32)
    layers = [m for m in load_model(folder, "cpu", torch.bfloat16).modules() if isinstance(m, QuantLinear)]
    assert layers and all(layer.prepared == ("int4_packed", "int4_scales_and_zeros") for layer in layers)
    assert all("int4_packed" not in layer.state_dict() for layer in layers)  # not part of the engine's layout
    float32 = [m for m in load_model(folder, "cpu", torch.float32).modules() if isinstance(m, QuantLinear)]
    assert float32 and all(layer.prepared == () for layer in float32)  # no second copy where it is not used
    assert ops.int4pack_layout(*_random_layout(50, 256, "int4", torch.Generator()), torch.float32) == {}


def test_loaded_cpu_tensors_are_aligned_for_torchs_kernels(checkpoint, tmp_path):
    """safetensors places tensors at unaligned file offsets; torch's bfloat16 int8 kernel crashed (SIGSEGV) on
    such a weight in a served model, so every tensor the loader keeps is copied to aligned memory."""
    from qwen_triton.runtime.loader import CPU_ALIGNMENT

    folder = convert_checkpoint(checkpoint, tmp_path / "q", LIMITS, quant=INT8)
    for dtype in (torch.float32, torch.bfloat16):
        model = load_model(folder, "cpu", dtype)
        tensors = [*model.named_parameters(), *model.named_buffers()]
        assert [name for name, t in tensors if t.data_ptr() % CPU_ALIGNMENT] == []
