"""Round-to-nearest quantization of float weights into the engine's layout (models/quant_linear.py), computed in
float32: int8 symmetric per output channel, int4 asymmetric per group of input columns, fp8 (e4m3) per output
channel. build/'s
converter calls quantize_weight per planned tensor; the GPTQ/AWQ importers reuse pack_int4 and the layout. It
knows the layout and must not know checkpoints or the model."""
from __future__ import annotations

import math

import torch

from ..config import ModelConfig, QuantConfig
from ..errors import ConfigError
from ..models.ops import TORCH_OPS, quantize_rows_fp8
from ..models.quant_linear import (dequantize_fp8, dequantize_int4, dequantize_int8, is_quantized_layer,
                                   pack_int4, quantized_tensors, unpack_int4)

__all__ = ["quantize_int8", "quantize_int4", "quantize_fp8", "dequantize_int8", "dequantize_int4", "dequantize_fp8",
           "pack_int4", "unpack_int4", "stored_tensors", "quantize_weight", "weight_bytes"]

INT8_MAX = 127  # symmetric: -127..127, so q * scale never exceeds the row's largest magnitude
INT4_MAX = 15
FP8_ALIGN = 16  # torch._scaled_mm on CUDA takes K and N in multiples of 16


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W (N, K) -> qweight int8 (N, K), scales float32 (N,): scale = max |W[n]| / 127, so every element is
    within scale / 2 of qweight * scale. An all-zero row gets scale 1 (and zeros)."""
    w = w.float()
    amax = w.abs().amax(dim=1)  # (N,)
    scales = torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax))
    qweight = torch.round(w / scales[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return qweight, scales


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W (N, K), K % group_size == 0 -> qweight uint8 (N, K/2) packed, scales float32 (N, K/g), zeros uint8
    (N, K/g). Each group's range is widened to hold 0 (as GPTQ's RTN quantizer does), so the zero point rounds
    into [0, 15] and every element is within scale / 2 of (q - zero) * scale."""
    n, k = w.shape
    if k % group_size:
        raise ValueError(f"K={k} is not a multiple of group_size={group_size}")
    groups = w.float().reshape(n, k // group_size, group_size)  # (N, K/g, g)
    low = groups.amin(dim=-1).clamp(max=0)  # (N, K/g)
    high = groups.amax(dim=-1).clamp(min=0)
    span = high - low
    scales = torch.where(span > 0, span / INT4_MAX, torch.ones_like(span))
    zeros = torch.round(-low / scales).clamp_(0, INT4_MAX)  # (N, K/g)
    q = (torch.round(groups / scales[..., None]) + zeros[..., None]).clamp_(0, INT4_MAX)  # (N, K/g, g)
    return pack_int4(q.reshape(n, k)), scales, zeros.to(torch.uint8)


def quantize_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W (N, K) -> qweight float8_e4m3fn (N, K), scales float32 (N,): scale = max |W[n]| / 448, so the row's
    largest magnitude maps to e4m3's largest; each element is then within e4m3's relative rounding (2^-4) of
    its value, or below its subnormal step. An all-zero row gets scale 1 (and zeros). The same per-row rule the
    runtime applies to activations (ops.quantize_rows_fp8)."""
    qweight, scales = quantize_rows_fp8(w)
    return qweight, scales[:, 0]


def check_quantizable(name: str, shape: tuple[int, ...], quant: QuantConfig) -> None:
    """Refuses, naming the tensor, a weight whose shape the layout cannot hold (int4: K % group_size)."""
    if len(shape) != 2:
        raise ConfigError(f"{name}: cannot quantize a tensor of shape {shape}, need (out, in)")
    if quant.precision == "int4" and shape[1] % quant.group_size:
        raise ConfigError(f"{name}: {shape[1]} input columns do not divide into int4 groups of "
                          f"{quant.group_size}; pick a --group-size that divides {shape[1]}")
    if quant.precision == "fp8" and (shape[0] % FP8_ALIGN or shape[1] % FP8_ALIGN):
        raise ConfigError(f"{name}: fp8 needs both sides in multiples of {FP8_ALIGN} (torch._scaled_mm), got {shape}")


def _layer(name: str) -> str | None:
    return name[:-len(".weight")] if name.endswith(".weight") else None


def stored_tensors(name: str, shape: tuple[int, ...], dtype: torch.dtype,
                   quant: QuantConfig) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """The tensors the engine file holds for one float tensor `name` of `shape`: itself in `dtype`, or, for a
    quantized layer's weight, the layout's tensors (checked first: check_quantizable)."""
    layer = _layer(name)
    if layer is None or not is_quantized_layer(layer, quant):
        return {name: (dtype, tuple(shape))}
    check_quantizable(name, tuple(shape), quant)
    return quantized_tensors(layer, shape[0], shape[1], quant)


def quantize_weight(name: str, tensor: torch.Tensor, dtype: torch.dtype,
                    quant: QuantConfig) -> dict[str, torch.Tensor]:
    """One float tensor -> {stored name: tensor} as stored_tensors describes them."""
    layer = _layer(name)
    if layer is None or not is_quantized_layer(layer, quant):
        return {name: tensor.to(dtype)}
    if quant.precision == "int8":
        values = quantize_int8(tensor)
    elif quant.precision == "fp8":
        values = quantize_fp8(tensor)
    else:
        values = quantize_int4(tensor, quant.group_size)
    return dict(zip(quantized_tensors(layer, *tensor.shape, quant), values, strict=True))


def weight_bytes(model: ModelConfig, dtype: torch.dtype, quant: QuantConfig) -> int:
    """Bytes of every tensor an engine file holds for `model`, stored in `dtype` except what `quant` quantizes."""
    from ..models.qwen import QwenForCausalLM

    with torch.device("meta"):
        state = QwenForCausalLM(model, TORCH_OPS).state_dict()  # on the meta device: its ops are never called
    stored = (stored_tensors(name, tuple(t.shape), dtype, quant).values() for name, t in state.items())
    return sum(torch.empty((), dtype=d).element_size() * math.prod(shape) for tensors in stored for d, shape in tensors)
