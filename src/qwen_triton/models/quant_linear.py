"""The engine's weight-only quantized layout and the module that holds it: which linear layers are quantized,
the tensors each one stores, int4 packing, dequantization, and QuantLinear (computing through ops.linear_int8 /
ops.linear_int4). It defines the layout that build/ and the GPTQ/AWQ importers write (docs/quantization.md) and
must not know how weights were quantized.

Layout per quantized layer `<layer>` (the engine's weight name without `.weight`; W is (N, K), N out, K in):
  int8: <layer>.qweight int8 (N, K), <layer>.scales float32 (N,):  W[n, k] = qweight[n, k] * scales[n]
  int4: <layer>.qweight uint8 (N, K/2), low nibble = even k, high nibble = odd k;
        <layer>.scales float32 (N, K/g), <layer>.zeros uint8 (N, K/g) in [0, 15]:
        W[n, k] = (q[n, k] - zeros[n, k // g]) * scales[n, k // g]
  fp8:  <layer>.qweight float8_e4m3fn (N, K), <layer>.scales float32 (N,):  W[n, k] = qweight[n, k] * scales[n];
        activations are quantized per token at run time (ops.linear_fp8), so the matmul itself is in fp8
Biases stay `<layer>.bias` in the model's dtype."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ..config import QuantConfig
    from .ops import Ops

DECODER_LINEARS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")  # every linear layer of a decoder layer
HEAD = "lm_head"


def is_quantized_layer(layer: str, quant: QuantConfig) -> bool:
    """layer: a module name (`model.layers.0.self_attn.qkv_proj`, `lm_head`). The head only with quantize_head;
    the embedding never (it is a lookup, not a matmul)."""
    if quant.precision is None:
        return False
    if layer == HEAD:
        return quant.quantize_head
    return layer.startswith("model.layers.") and layer.rsplit(".", 1)[-1] in DECODER_LINEARS


def quantized_tensors(layer: str, out_features: int, in_features: int,
                      quant: QuantConfig) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """{stored name: (dtype, shape)} replacing `<layer>.weight`, in the order they are stored."""
    n, k = out_features, in_features
    if quant.precision in ("int8", "fp8"):
        dtype = torch.int8 if quant.precision == "int8" else torch.float8_e4m3fn
        return {f"{layer}.qweight": (dtype, (n, k)), f"{layer}.scales": (torch.float32, (n,))}
    groups = k // quant.group_size
    return {f"{layer}.qweight": (torch.uint8, (n, k // 2)), f"{layer}.scales": (torch.float32, (n, groups)),
            f"{layer}.zeros": (torch.uint8, (n, groups))}


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(N, K) integers in [0, 15] -> (N, K/2) uint8: column k//2 holds k even in its low nibble, k + 1 high."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(N, K/2) uint8 -> (N, K) uint8 in [0, 15]; the inverse of pack_int4."""
    low, high = packed & 0x0F, packed >> 4
    return torch.stack((low, high), dim=-1).reshape(packed.shape[0], -1)


def dequantize_int8(qweight: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, K) int8, (N,) -> W (N, K): computed in float32, then cast."""
    return (qweight.float() * scales.float()[:, None]).to(dtype)


def dequantize_fp8(qweight: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, K) float8_e4m3fn, (N,) -> W (N, K): computed in float32, then cast."""
    return (qweight.float() * scales.float()[:, None]).to(dtype)


def dequantize_int4(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, K/2) uint8, (N, K/g), (N, K/g) -> W (N, K): computed in float32, then cast. g = K / scales.shape[1]."""
    q = unpack_int4(qweight).float()  # (N, K)
    n, k = q.shape
    groups = q.view(n, scales.shape[1], -1)  # (N, K/g, g): group j holds columns j*g .. j*g + g - 1
    return ((groups - zeros.float()[..., None]) * scales.float()[..., None]).view(n, k).to(dtype)


class QuantLinear(nn.Module):
    """A linear layer whose weight is stored in the layout above, as buffers (not parameters: they keep their
    own dtypes whatever the model's compute dtype; the loader casts only parameters). The bias is a parameter.
    After loading, prepare() lets the op set add a layout of its own for int4 (Ops.prepare_int4, once: torch's
    CPU int4 kernel wants its own packing), kept in non-persistent buffers and passed to ops.linear_int4 by name."""

    def __init__(self, in_features: int, out_features: int, ops: Ops, bias: bool, quant: QuantConfig):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.precision = quant.precision
        self.ops = ops
        for name, (dtype, shape) in quantized_tensors("", out_features, in_features, quant).items():
            self.register_buffer(name.lstrip("."), torch.empty(shape, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.prepared: tuple[str, ...] = ()  # names of the op set's own buffers (prepare)

    @torch.no_grad()
    def prepare(self, dtype: torch.dtype) -> None:
        """Once, after the stored tensors are loaded: the op set's own int4 layout, if it has one."""
        if self.precision == "int4" and self.ops.prepare_int4 is not None:
            extra = self.ops.prepare_int4(self.qweight, self.scales, self.zeros, dtype)
            for name, tensor in extra.items():
                self.register_buffer(name, tensor, persistent=False)
            self.prepared = tuple(extra)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "int8":
            return self.ops.linear_int8(x, self.qweight, self.scales, self.bias)  # (T, in) -> (T, out)
        if self.precision == "fp8":
            return self.ops.linear_fp8(x, self.qweight, self.scales, self.bias)
        return self.ops.linear_int4(x, self.qweight, self.scales, self.zeros, self.bias,
                                    **{name: getattr(self, name) for name in self.prepared})

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.precision}"


def quantize_modules(model: nn.Module, quant: QuantConfig) -> nn.Module:
    """Replaces every nn.Linear that is_quantized_layer names by an empty QuantLinear of the same shape and ops,
    in place (on the meta device, before the loader assigns the stored tensors); returns the model."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and is_quantized_layer(name, quant):
            parent, _, child = name.rpartition(".")
            replacement = QuantLinear(module.in_features, module.out_features, module.ops, module.bias is not None,
                                      quant)
            setattr(model.get_submodule(parent) if parent else model, child, replacement)
    return model
