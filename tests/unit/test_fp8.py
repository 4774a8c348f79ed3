"""fp8 W8A8 (TensorRT-LLM's FP8_PER_CHANNEL_PER_TOKEN): e4m3 weights with per-output-channel scales and
activations quantized per token at run time, on CPU through torch._scaled_mm: the quantizer's error bound, the op
against the same quantized operands multiplied in float32, the config's words, build.convert --fp8 and the loader.
Fidelity against the float model: tests/fidelity/test_quantized.py; GPU: tests/gpu/test_quant_kernels.py."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from qwen_triton.config import FP8_ALGO, EngineLimits, QuantConfig
from qwen_triton.errors import ConfigError
from qwen_triton.models import ops
from qwen_triton.models.quant_linear import QuantLinear
from qwen_triton.runtime.loader import load_model
from qwen_triton.tools.convert import convert_checkpoint
from qwen_triton.tools.quantize import dequantize_fp8, quantize_fp8, weight_bytes
from qwen_triton.tools.random_checkpoint import make_random_checkpoint

FP8 = QuantConfig(quant_algo=FP8_ALGO)
LIMITS = EngineLimits(max_batch_size=2, max_input_len=64, max_seq_len=128)
ROOT = Path(__file__).resolve().parents[2]
E4M3_RELATIVE = 2 ** -4  # 3 mantissa bits: half a step of 2^-3
E4M3_SUBNORMAL_STEP = 2 ** -9


def test_fp8_round_trip_is_within_e4m3_rounding_per_element():
    w = torch.randn(64, 96, generator=torch.Generator().manual_seed(0)) * 0.02
    w[0, 3], w[1] = 0.7, 0.0  # an outlier sets its row's scale; an all-zero row
    q, scales = quantize_fp8(w)
    assert q.dtype == torch.float8_e4m3fn and scales.shape == (64,) and scales[1] == 1.0
    err = (dequantize_fp8(q, scales) - w).abs()
    bound = torch.maximum(w.abs() * E4M3_RELATIVE, scales[:, None] * E4M3_SUBNORMAL_STEP / 2)
    assert (err <= bound * (1 + 1e-6)).all()
    assert (dequantize_fp8(q, scales).abs().amax(dim=1)[0] - 0.7).abs() < 1e-6  # the row's largest is exact


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.inference_mode()
def test_fp8_linear_equals_its_quantized_operands_multiplied_in_float32(dtype):
    gen = torch.Generator().manual_seed(1)
    q, scales = quantize_fp8(torch.randn(48, 128, generator=gen) * 0.05)
    x, bias = torch.randn(64, 128, generator=gen) * 3, torch.randn(48, generator=gen)
    x[5] = 0.0  # a zero token: scale 1, zero output before the bias
    for rows in range(1, 65):
        xq, x_scales = ops.quantize_rows_fp8(x[:rows].to(dtype))
        assert xq.dtype == torch.float8_e4m3fn and x_scales.shape == (rows, 1)
        want = (xq.float() * x_scales) @ dequantize_fp8(q, scales).T + bias.to(dtype).float()
        got = ops.fp8_linear(x[:rows].to(dtype), q, scales, bias.to(dtype))
        rounding = 1e-5 if dtype == torch.float32 else 2 ** -7
        assert got.dtype == dtype and (got.float() - want).abs().max() <= 2 * rounding * want.abs().max(), rows
    # Per token: one large row does not coarsen its neighbours' quantization.
    loud = x[:2].clone()
    loud[0] *= 1000
    assert torch.equal(ops.quantize_rows_fp8(loud)[0][1], ops.quantize_rows_fp8(x[:2])[0][1])


@pytest.mark.parametrize("fields,match", [
    (dict(quant_algo="fp8"), "quant_algo"), (dict(quant_algo=FP8_ALGO, weight_only_precision="int8"), "weight_only"),
    (dict(quant_algo=FP8_ALGO, group_size=128), "group_size")])
def test_inconsistent_fp8_configs_are_refused(fields, match):
    with pytest.raises(ConfigError, match=match):
        QuantConfig(**fields)


def test_fp8_is_its_own_precision_in_tensorrt_llms_words():
    assert (FP8.precision, FP8.weight_only_precision, FP8.quant_algo) == ("fp8", None, "FP8_PER_CHANNEL_PER_TOKEN")
    assert QuantConfig(quant_algo=FP8_ALGO, quantize_head=True).quantize_head


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("fp8") / "hf", "qwen", seed=4)


def test_build_convert_fp8_writes_e4m3_layers_the_loader_serves(checkpoint, tmp_path):
    spec = importlib.util.spec_from_file_location("build_convert", ROOT / "build" / "convert.py")
    convert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert)
    convert.main(["--hf-dir", str(checkpoint), "--max-input-len", "32", "--max-seq-len", "64", "--out",
                  str(tmp_path / "e"), "--fp8"])
    assert json.loads((tmp_path / "e" / "engine_config.json").read_text())["quantization"] == {
        "weight_only_precision": None, "group_size": None, "quantize_head": False, "quant_algo": FP8_ALGO}
    with safe_open(str(tmp_path / "e" / "model.safetensors"), framework="pt") as f:
        stored = {name: f.get_tensor(name) for name in f.keys()}
    layer = "model.layers.0.mlp.gate_up_proj"
    assert stored[f"{layer}.qweight"].dtype == torch.float8_e4m3fn and stored[f"{layer}.scales"].dtype == torch.float32
    assert "lm_head.weight" in stored and f"{layer}.weight" not in stored
    folder = convert_checkpoint(checkpoint, tmp_path / "f", LIMITS, quant=FP8)
    assert weight_bytes(folder.config.model, torch.float32, FP8) == sum(t.numel() * t.element_size()
                                                                        for t in stored.values())
    model = load_model(folder, "cpu", torch.float32)
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert len(layers) == 4 * model.config.num_hidden_layers and {m.precision for m in layers} == {"fp8"}
    with torch.inference_mode():  # the model runs them in tests/fidelity and tests/e2e/test_quantized.py
        out = layers[0](torch.randn(3, layers[0].in_features))
    assert out.shape == (3, layers[0].out_features) and torch.isfinite(out).all()
