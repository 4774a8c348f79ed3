"""GPTQ / AWQ import (tools/gptq_awq.py, tools/gptq_awq_import.py, build/import_quantized.py): unpacking equals
what the real auto-gptq 0.7.1 and AutoAWQ 0.2.7.post3 packed (goldens), and the transcribed reference pack /
dequantize code on random tensors (bits 4 and 8; groups 128, -1, 32, 64; sym and asym; AWQ order); exact
re-packing into the engine layout, fused q/k/v and gate/up, refusals naming the tensor, and tiny random
checkpoints imported end to end whose logits equal the dequantized float model's."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwen_triton.config import EngineLimits, load_engine_folder
from qwen_triton.errors import ConfigError
from qwen_triton.models.qwen import AttentionBatch
from qwen_triton.models.quant_linear import dequantize_int4, dequantize_int8
from qwen_triton.runtime.loader import load_model
from qwen_triton.tools.convert import convert_checkpoint
from qwen_triton.tools.gptq_awq import (QuantFormat, concat_parts, engine_group_size, to_int4, to_int8, unpack_awq,
                                        unpack_gptq)
from qwen_triton.tools.gptq_awq_import import import_quantized, read_quant_format
from qwen_triton.tools.random_checkpoint import make_random_checkpoint

import gptq_awq_reference as ref  # tests/unit is on sys.path (pytest rootdir-relative import)

ROOT = Path(__file__).resolve().parents[2]
GOLDENS = ROOT / "tests/support/quant_goldens/goldens.safetensors"
LIMITS = EngineLimits(max_batch_size=2, max_input_len=64, max_seq_len=128)
K, N = 256, 64


def _random_linear(gen, bits, group_size, symmetric, n=N, k=K):
    weight = torch.randn(n, k, generator=gen) * 0.02
    return ref.rtn_quantize(weight, bits, group_size, symmetric)  # q (N, K), zeros (N, G), scales (N, G), W


def _gptq_fmt(bits, group_size):
    return QuantFormat("gptq", bits, group_size, zero_offset=1)


@pytest.fixture(scope="module")
def goldens():
    return load_file(GOLDENS)


def _golden_cases(goldens):
    return sorted({name.split(".")[0] for name in goldens})


def test_goldens_cover_the_issue_matrix(goldens):
    cases = _golden_cases(goldens)
    assert {c for c in cases if c.startswith("gptq_b4")} >= {"gptq_b4_g128_sym", "gptq_b4_gall_sym",
                                                              "gptq_b4_g32_asym", "gptq_b4_g64_asym"}
    assert any(c.startswith("gptq_b8") for c in cases) and any(c.startswith("awq") for c in cases)


def test_unpacking_equals_what_the_real_libraries_packed(goldens):
    for case in _golden_cases(goldens):
        g = {key.split(".", 1)[1]: value for key, value in goldens.items() if key.startswith(case + ".")}
        bits = int(case.split("_b")[1][0])
        group = case.split("_g")[1].split("_")[0]
        group_size = -1 if group == "all" else int(group)
        if case.startswith("awq"):
            layer = unpack_awq(case, QuantFormat("awq", bits, group_size), g["qweight"], g["qzeros"], g["scales"])
        else:
            layer = unpack_gptq(case, _gptq_fmt(bits, group_size), g["qweight"], g["qzeros"], g["scales"],
                                g["g_idx"])
        assert torch.equal(layer.q, g["expect_q"].to(torch.int16)), case
        assert torch.equal(layer.zeros, g["expect_zeros"]), case
        assert torch.equal(layer.scales, g["expect_scales"]), case
        assert torch.equal(layer.group, g["expect_group"].long()), case


def test_the_transcribed_reference_packs_as_the_real_libraries(goldens):
    """So the random-tensor tests below, which CI can run, test against the libraries' arithmetic."""
    for case in _golden_cases(goldens):
        g = {key.split(".", 1)[1]: value for key, value in goldens.items() if key.startswith(case + ".")}
        q, zeros, scales, group = (g["expect_q"].int(), g["expect_zeros"].int(), g["expect_scales"],
                                   g["expect_group"].long())
        weight = (q - zeros[:, group]).float() * scales[:, group]
        bits = int(case.split("_b")[1][0])
        if case.startswith("awq"):
            packed = ref.awq_pack(weight, scales.t().contiguous(), zeros.t().contiguous(), K // scales.shape[1])
        else:
            packed = ref.gptq_pack(weight, scales, zeros.float(), group, bits)
        assert torch.equal(packed[0], g["qweight"]) and torch.equal(packed[1], g["qzeros"]), case


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [128, -1, 32, 64])
@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_unpack_equals_the_reference_on_random_tensors(bits, group_size, symmetric):
    gen = torch.Generator().manual_seed(bits * 1000 + group_size + symmetric)
    q, zeros, scales, weight = _random_linear(gen, bits, group_size, symmetric)
    g_idx = (torch.arange(K) // (K if group_size == -1 else group_size)).int()
    qweight, qzeros, packed_scales = ref.gptq_pack(weight, scales, zeros.float(), g_idx, bits)
    layer = unpack_gptq("layer", _gptq_fmt(bits, group_size), qweight, qzeros, packed_scales, g_idx)
    assert torch.equal(layer.q, q.to(torch.int16)) and torch.equal(layer.zeros, zeros.to(torch.int16))
    assert torch.equal(layer.dequantize(), ref.gptq_dequantize(qweight, qzeros, packed_scales, g_idx, bits).t())
    assert torch.equal(layer.dequantize(), weight)


@pytest.mark.parametrize("group_size", [128, 64, 32])
def test_awq_unpack_equals_the_reference_on_random_tensors(group_size):
    gen = torch.Generator().manual_seed(group_size)
    q, zeros, scales, weight = _random_linear(gen, 4, group_size, symmetric=False)
    qweight, qzeros, packed_scales = ref.awq_pack(weight, scales.t().contiguous(), zeros.t().contiguous(),
                                                  group_size)
    layer = unpack_awq("layer", QuantFormat("awq", 4, group_size), qweight, qzeros, packed_scales)
    assert torch.equal(layer.q, q.to(torch.int16)) and torch.equal(layer.zeros, zeros.to(torch.int16))
    assert torch.equal(layer.dequantize(), ref.awq_dequantize(qweight, qzeros, packed_scales, 4, group_size).t())


def test_awq_order_matters():
    """A column-order mistake would still unpack the same multiset of values: check one word by hand."""
    word = sum(v << (4 * i) for i, v in enumerate(range(1, 9)))  # nibble i holds value i + 1
    word -= 2**32 if word >= 2**31 else 0  # the same 32 bits as a signed int32
    qweight = torch.tensor([[word]], dtype=torch.int32).expand(32, 1).contiguous()
    layer = unpack_awq("x", QuantFormat("awq", 4, 32), qweight, qweight[:1], torch.ones(1, 8, dtype=torch.float16))
    # AWQ_ORDER [0, 2, 4, 6, 1, 3, 5, 7]: nibble i holds column AWQ_ORDER[i]
    assert layer.q[:, 0].tolist() == [1, 5, 2, 6, 3, 7, 4, 8]


@pytest.mark.parametrize("group_size", [128, -1, 32, 64])
def test_int4_repacking_is_exact(group_size):
    gen = torch.Generator().manual_seed(7)
    _, zeros, scales, weight = _random_linear(gen, 4, group_size, symmetric=False)
    g_idx = (torch.arange(K) // (K if group_size == -1 else group_size)).int()
    layer = unpack_gptq("layer", _gptq_fmt(4, group_size), *ref.gptq_pack(weight, scales, zeros.float(), g_idx, 4),
                        g_idx)
    engine_group = engine_group_size(group_size, [K])
    stored = to_int4(layer, engine_group)
    assert stored["scales"].shape == (N, K // engine_group) and stored["qweight"].dtype == torch.uint8
    assert torch.equal(dequantize_int4(stored["qweight"], stored["scales"], stored["zeros"]), weight)


def test_int8_is_exact_for_one_group_and_requantized_only_on_request():
    gen = torch.Generator().manual_seed(8)
    for group_size, exact in ((-1, True), (64, False)):
        _, zeros, scales, weight = _random_linear(gen, 8, group_size, symmetric=True)
        g_idx = (torch.arange(K) // (K if group_size == -1 else group_size)).int()
        layer = unpack_gptq("model.layers.0.mlp.down_proj", _gptq_fmt(8, group_size),
                            *ref.gptq_pack(weight, scales, zeros.float(), g_idx, 8), g_idx)
        if exact:
            stored = to_int8(layer)
            assert torch.equal(dequantize_int8(stored["qweight"], stored["scales"]), weight)
            continue
        with pytest.raises(ConfigError, match="model.layers.0.mlp.down_proj: .*--requantize-int8"):
            to_int8(layer)
        stored = to_int8(layer, requantize=True)
        error = (dequantize_int8(stored["qweight"], stored["scales"]) - weight).abs()
        assert (error <= stored["scales"][:, None] / 2 + 1e-7).all()


def _packed(gen, name, n, group_size=32, bits=4):
    _, zeros, scales, weight = _random_linear(gen, bits, group_size, False, n=n, k=64)
    g_idx = (torch.arange(64) // group_size).int()
    return unpack_gptq(name, _gptq_fmt(bits, group_size), *ref.gptq_pack(weight, scales, zeros.float(), g_idx, bits),
                       g_idx), weight


def test_fused_parts_are_concatenated_without_dequantizing():
    gen = torch.Generator().manual_seed(9)
    parts = [_packed(gen, f"model.layers.0.self_attn.{p}_proj", n) for p, n in (("q", 64), ("k", 32), ("v", 32))]
    fused = concat_parts("model.layers.0.self_attn.qkv_proj", [p for p, _ in parts])
    stored = to_int4(fused, 32)
    want = torch.cat([w for _, w in parts])
    assert torch.equal(dequantize_int4(stored["qweight"], stored["scales"], stored["zeros"]), want)
    other, _ = _packed(gen, "model.layers.0.self_attn.v_proj", 32, group_size=16)
    with pytest.raises(ConfigError, match="qkv_proj: cannot fuse model.layers.0.self_attn.v_proj"):
        concat_parts("model.layers.0.self_attn.qkv_proj", [parts[0][0], other])


def test_refusals_name_the_tensor():
    gen = torch.Generator().manual_seed(10)
    _, zeros, scales, weight = _random_linear(gen, 4, 64, False)
    g_idx = (torch.arange(K) // 64).int()
    qweight, qzeros, packed_scales = ref.gptq_pack(weight, scales, zeros.float(), g_idx, 4)
    fmt = _gptq_fmt(4, 64)
    with pytest.raises(ConfigError, match=r"^lin\.qzeros: shape"):
        unpack_gptq("lin", fmt, qweight, qzeros[:, :-1], packed_scales, g_idx)
    with pytest.raises(ConfigError, match=r"^lin\.scales: shape"):
        unpack_gptq("lin", fmt, qweight, qzeros, packed_scales[:-1], g_idx)
    with pytest.raises(ConfigError, match=r"^lin\.qweight: dtype"):
        unpack_gptq("lin", fmt, qweight.float(), qzeros, packed_scales, g_idx)
    with pytest.raises(ConfigError, match=r"^lin\.qweight: in_features 256 is not a multiple of group_size 96"):
        unpack_gptq("lin", _gptq_fmt(4, 96), qweight, qzeros, packed_scales, g_idx)
    with pytest.raises(ConfigError, match=r"^lin\.g_idx: shape"):
        unpack_gptq("lin", fmt, qweight, qzeros, packed_scales, g_idx[:-1])
    with pytest.raises(ConfigError, match=r"^lin\.qweight: 3-bit"):
        unpack_gptq("lin", QuantFormat("gptq", 3, 64, 1), qweight, qzeros, packed_scales, g_idx)


def test_act_order_g_idx_is_refused_for_int4_naming_the_layer():
    gen = torch.Generator().manual_seed(11)
    q, zeros, scales, _ = _random_linear(gen, 4, 64, True)
    g_idx = (torch.arange(K) // 64)[torch.randperm(K, generator=gen)].int()  # desc_act: groups scattered over K
    weight = (q - zeros[:, g_idx.long()]).float() * scales[:, g_idx.long()]
    layer = unpack_gptq("model.layers.3.mlp.down_proj", _gptq_fmt(4, 64),
                        *ref.gptq_pack(weight, scales, zeros.float(), g_idx, 4), g_idx)
    assert torch.equal(layer.dequantize(), weight)  # unpacked right, but not storable with contiguous groups
    with pytest.raises(ConfigError, match="model.layers.3.mlp.down_proj: g_idx .*desc_act"):
        to_int4(layer, 64)


def test_a_v1_zero_of_zero_is_refused():
    """auto-gptq v1 writes zero 0 as -1: its kernels then use 16, which the int4 layout cannot hold."""
    gen = torch.Generator().manual_seed(12)
    q, zeros, scales, weight = _random_linear(gen, 4, 64, False)
    zeros[0, 0] = 0
    g_idx = (torch.arange(K) // 64).int()
    packed = ref.gptq_pack((q - zeros[:, g_idx.long()]).float() * scales[:, g_idx.long()], scales, zeros.float(),
                           g_idx, 4)
    layer = unpack_gptq("lin", _gptq_fmt(4, 64), *packed, g_idx)
    assert layer.zeros[0, 0] == 16  # as auto-gptq's own dequantization reads it:
    assert torch.equal(layer.dequantize(), ref.gptq_dequantize(*packed, g_idx, 4).t())
    with pytest.raises(ConfigError, match="^lin: a zero point outside"):
        to_int4(layer, 64)


@pytest.mark.parametrize("settings, message", [
    ({"quant_method": "gptq", "bits": 3, "group_size": 128}, "bits 3"),
    ({"quant_method": "gptq", "bits": 4, "group_size": 128, "checkpoint_format": "marlin"}, "'marlin'"),
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemv"}, "'gemv'"),
    ({"quant_method": "fp8"}, "bits 0"),
    ({"quant_method": "bitsandbytes", "bits": 4, "group_size": 64}, "'bitsandbytes' is not GPTQ or AWQ"),
])
def test_quantization_configs_that_cannot_be_imported_are_refused(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        read_quant_format(tmp_path, {"model_type": "qwen2", "quantization_config": settings})


def test_quantization_config_sources(tmp_path):
    (tmp_path / "quantize_config.json").write_text(json.dumps({"bits": 4, "group_size": 128, "sym": True}))
    assert read_quant_format(tmp_path, {"model_type": "qwen"}) == QuantFormat("gptq", 4, 128, 1)
    v2 = {"quant_method": "gptq", "bits": 8, "group_size": -1, "checkpoint_format": "gptq_v2"}
    assert read_quant_format(tmp_path, {"quantization_config": v2}) == QuantFormat("gptq", 8, -1, 0)
    awq = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "GEMM"}
    assert read_quant_format(tmp_path, {"quantization_config": awq}) == QuantFormat("awq", 4, 128, 0)


def _logits(engine: Path) -> torch.Tensor:
    folder = load_engine_folder(engine)
    m = folder.config.model
    model = load_model(folder, "cpu", torch.float32)
    tokens = 9
    caches = [tuple(torch.zeros(2, 1, 16, m.num_key_value_heads, m.head_dim)) for _ in range(m.num_hidden_layers)]
    with torch.inference_mode():
        hidden = model(torch.arange(1000, 1000 + tokens), torch.arange(tokens),
                       AttentionBatch.prefill(torch.arange(tokens), (tokens,)), caches)
        return model.compute_logits(hidden)


@pytest.mark.parametrize("flavour, method, bits, group_size, symmetric, precision", [
    ("qwen", "gptq", 4, 32, True, "int4"),  # Qwen-7B-Chat-Int4's layout (quantize_config.json, fused c_attn)
    ("qwen2", "gptq", 4, -1, False, "int4"),
    ("qwen2", "awq", 4, 64, False, "int4"),  # Qwen2.5-*-AWQ's layout
    ("qwen", "gptq", 8, -1, True, "int8"),
])
def test_a_random_checkpoint_imports_end_to_end(tmp_path, flavour, method, bits, group_size, symmetric, precision):
    """The imported engine loads in the runtime and computes the logits of the float model whose linears are
    the checkpoint's dequantized weights."""
    make_random_checkpoint(tmp_path / "hf", flavour, seed=3)
    dequantized = ref.quantize_checkpoint(tmp_path / "hf", method, bits, group_size, symmetric)
    make_random_checkpoint(tmp_path / "float", flavour, seed=3)
    save_file(dequantized, str(tmp_path / "float" / "model.safetensors"))
    folder = import_quantized(tmp_path / "hf", tmp_path / "engine", LIMITS, dtype="float32")
    assert folder.config.quantization.weight_only_precision == precision
    assert any(name.endswith("qkv_proj.qweight") for name in load_file(folder.weights))
    convert_checkpoint(tmp_path / "float", tmp_path / "reference", LIMITS)
    got, want = _logits(tmp_path / "engine"), _logits(tmp_path / "reference")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_cli_writes_an_engine_and_reports_refusals(tmp_path):
    spec = importlib.util.spec_from_file_location("build_import_quantized", ROOT / "build/import_quantized.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    make_random_checkpoint(tmp_path / "hf", "qwen2", seed=4)
    ref.quantize_checkpoint(tmp_path / "hf", "gptq", 8, 32, symmetric=False)
    args = ["--hf-dir", str(tmp_path / "hf"), "--out", str(tmp_path / "engine"), "--max-input-len", "64",
            "--max-seq-len", "128"]
    with pytest.raises(SystemExit, match="build.import_quantized: model.layers.0.self_attn.qkv_proj: .*requantize"):
        cli.main(args)
    assert not (tmp_path / "engine" / "model.safetensors").exists()
    cli.main(args + ["--requantize-int8"])
    assert load_engine_folder(tmp_path / "engine").config.quantization.weight_only_precision == "int8"
