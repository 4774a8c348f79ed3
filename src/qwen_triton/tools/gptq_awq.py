"""GPTQ (auto-gptq / GPTQModel "gptq" format) and AWQ (AutoAWQ GEMM) packed linears -> our weight-only layouts.

It knows the two published packings and the engine's int4 / int8 layouts, one linear at a time; it must not know
checkpoint names or files (gptq_awq_import.py does). Every check names the tensor at fault.

Both formats store W as (in=K, out=N)-major int32 words; ours is the nn.Linear (N, K) layout:
  int4: qweight uint8 (N, K/2) (low nibble = even k), scales float32 (N, K/g), zeros uint8 (N, K/g) in [0, 15],
        W[n, k] = (q[n, k] - zeros[n, k // g]) * scales[n, k // g]
  int8: qweight int8 (N, K), scales float32 (N,), W[n, k] = qweight[n, k] * scales[n]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..models.quant_linear import pack_int4

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ GEMM: nibble i of a word holds output column 8 * word + AWQ_ORDER[i]
SUPPORTED_BITS = (4, 8)


@dataclass(frozen=True)
class QuantFormat:
    """What quantize_config.json / config.json `quantization_config` say about every linear."""

    method: str  # "gptq" or "awq"
    bits: int
    group_size: int  # -1: one group spanning all of K
    zero_offset: int = 0  # added to stored zeros: 1 for auto-gptq's v1 "zeros - 1" convention, else 0


@dataclass(frozen=True)
class UnpackedLinear:
    """One linear as integers, in the (N, K) layout, before any re-packing; exact, nothing rounded.
    W[n, k] = (q[n, k] - zeros[n, group[k]]) * scales[n, group[k]]."""

    name: str
    bits: int
    q: torch.Tensor  # (N, K) int16, values in [0, 2**bits)
    zeros: torch.Tensor  # (N, G) int16; may be 2**bits for a v1 zero of 0 stored as -1
    scales: torch.Tensor  # (N, G) float32 (the checkpoint's float16 values, exactly)
    group: torch.Tensor  # (K,) int64: the group of each input channel (GPTQ g_idx)

    def dequantize(self) -> torch.Tensor:
        """(N, K) float32: the formats' own dequantization (auto-gptq's torch path, AutoAWQ's dequantize_gemm)."""
        return (self.q.float() - self.zeros[:, self.group].float()) * self.scales[:, self.group]


def _fail(name: str, message: str):
    raise ConfigError(f"{name}: {message}")


def _check(name: str, tensor: torch.Tensor, shape: tuple[int, ...], dtypes: tuple[torch.dtype, ...]) -> None:
    if tuple(tensor.shape) != shape:
        _fail(name, f"shape {tuple(tensor.shape)}, expected {shape} from the quantization config")
    if tensor.dtype not in dtypes:
        _fail(name, f"dtype {tensor.dtype}, expected one of {[str(d) for d in dtypes]}")


def _split_words(words: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 words (...) -> (..., 32 // bits) fields, least significant first, as int16 in [0, 2**bits)."""
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    return ((words.to(torch.int32).unsqueeze(-1) >> shifts) & (2**bits - 1)).to(torch.int16)


def _groups(name: str, in_features: int, group_size: int) -> int:
    if group_size == -1:
        return 1
    if group_size <= 0 or in_features % group_size:
        _fail(name, f"in_features {in_features} is not a multiple of group_size {group_size}")
    return in_features // group_size


def _check_bits(name: str, bits: int) -> None:
    if bits not in SUPPORTED_BITS:
        _fail(name, f"{bits}-bit weights are not supported (only {SUPPORTED_BITS})")


def logical_shape(fmt: QuantFormat, qweight_shape: tuple[int, ...]) -> tuple[int, int]:
    """(N, K) of the float linear that a packed qweight holds."""
    per_word = 32 // fmt.bits
    if fmt.method == "gptq":  # (K * bits / 32, N): packed along K
        return qweight_shape[1], qweight_shape[0] * per_word
    return qweight_shape[1] * per_word, qweight_shape[0]  # AWQ (K, N * bits / 32): packed along N


def unpack_gptq(name: str, fmt: QuantFormat, qweight, qzeros, scales, g_idx=None) -> UnpackedLinear:
    """auto-gptq QuantLinear.pack's inverse: qweight int32 (K*bits/32, N), word r holds k = r * 32/bits + i in
    field i; qzeros int32 (G, N*bits/32) packed the same way along N, stored as zero - zero_offset; scales
    float16 (G, N); g_idx int32 (K,) (absent in some exports: then k // group_size)."""
    _check_bits(f"{name}.qweight", fmt.bits)
    per_word = 32 // fmt.bits
    if qweight.dim() != 2:
        _fail(f"{name}.qweight", f"expected 2 dimensions, got shape {tuple(qweight.shape)}")
    out_features, in_features = logical_shape(fmt, tuple(qweight.shape))
    if out_features % per_word:
        _fail(f"{name}.qzeros", f"out_features {out_features} is not a multiple of {per_word} ({fmt.bits}-bit zeros)")
    n_groups = _groups(f"{name}.qweight", in_features, fmt.group_size)
    _check(f"{name}.qweight", qweight, (in_features // per_word, out_features), (torch.int32,))
    _check(f"{name}.qzeros", qzeros, (n_groups, out_features // per_word), (torch.int32,))
    _check(f"{name}.scales", scales, (n_groups, out_features), (torch.float16, torch.bfloat16, torch.float32))
    group_size = in_features if fmt.group_size == -1 else fmt.group_size
    default_group = torch.arange(in_features) // group_size
    if g_idx is None:
        group = default_group
    else:
        _check(f"{name}.g_idx", g_idx, (in_features,), (torch.int32, torch.int64))
        group = g_idx.long()
        if group.min() < 0 or group.max() >= n_groups:
            _fail(f"{name}.g_idx", f"group indices outside [0, {n_groups})")
    q = _split_words(qweight, fmt.bits).permute(0, 2, 1).reshape(in_features, out_features).t()
    zeros = _split_words(qzeros, fmt.bits).reshape(n_groups, out_features).t() + fmt.zero_offset
    return UnpackedLinear(name, fmt.bits, q.contiguous(), zeros.contiguous(), scales.float().t().contiguous(), group)


def unpack_awq(name: str, fmt: QuantFormat, qweight, qzeros, scales) -> UnpackedLinear:
    """AutoAWQ WQLinear_GEMM.from_linear's inverse: qweight int32 (K, N/8), qzeros int32 (G, N/8), both packed
    along N in AWQ_ORDER; scales float16 (G, N); zeros stored as they are (no offset)."""
    if fmt.bits != 4:
        _fail(f"{name}.qweight", f"AWQ GEMM packing is 4-bit only, config says {fmt.bits}")
    if qweight.dim() != 2:
        _fail(f"{name}.qweight", f"expected 2 dimensions, got shape {tuple(qweight.shape)}")
    out_features, in_features = logical_shape(fmt, tuple(qweight.shape))
    n_groups = _groups(f"{name}.qweight", in_features, fmt.group_size)
    _check(f"{name}.qweight", qweight, (in_features, out_features // 8), (torch.int32,))
    _check(f"{name}.qzeros", qzeros, (n_groups, out_features // 8), (torch.int32,))
    _check(f"{name}.scales", scales, (n_groups, out_features), (torch.float16, torch.bfloat16, torch.float32))
    inverse = torch.tensor(AWQ_ORDER).argsort()  # output column j of a word is field inverse[j]

    def columns(words: torch.Tensor) -> torch.Tensor:  # (rows, N/8) -> (rows, N) in output-column order
        return _split_words(words, 4)[:, :, inverse].reshape(words.shape[0], -1)

    group_size = in_features if fmt.group_size == -1 else fmt.group_size
    return UnpackedLinear(name, 4, columns(qweight).t().contiguous(), columns(qzeros).t().contiguous(),
                          scales.float().t().contiguous(), torch.arange(in_features) // group_size)


def concat_parts(name: str, parts: list[UnpackedLinear]) -> UnpackedLinear:
    """q, k, v (or gate, up) stacked along N, still integer: exact only when they share K, bits and groups."""
    first = parts[0]
    for part in parts[1:]:
        if part.bits != first.bits or not torch.equal(part.group, first.group):
            _fail(name, f"cannot fuse {part.name} with {first.name} exactly: bits or input-channel groups "
                        "(group size, g_idx) differ")
    return UnpackedLinear(name, first.bits, torch.cat([p.q for p in parts]), torch.cat([p.zeros for p in parts]),
                          torch.cat([p.scales for p in parts]), first.group)


def int4_group_size(layer: UnpackedLinear, wanted: int) -> int:
    """The group size our int4 layout stores `layer` at, exactly: `wanted` must divide K and every aligned block
    of `wanted` input channels must lie in one source group (true for k // g groups of any g that `wanted`
    divides; false for GPTQ act-order g_idx, whose groups are scattered over K)."""
    in_features = layer.q.shape[1]
    if in_features % wanted:
        _fail(layer.name, f"in_features {in_features} is not a multiple of the engine group size {wanted}")
    blocks = layer.group.view(-1, wanted)
    if not torch.equal(blocks, blocks[:, :1].expand_as(blocks)):
        _fail(layer.name, "g_idx puts input channels of one group in different places (GPTQ desc_act / act-order "
                          "reordering): the engine's int4 layout needs contiguous groups and the runtime does not "
                          "permute activations; re-quantize without desc_act")
    return wanted


def to_int4(layer: UnpackedLinear, group_size: int) -> dict[str, torch.Tensor]:
    """Exact re-packing into the engine's int4 layout (qweight, scales, zeros), or a ConfigError."""
    if layer.bits != 4:
        _fail(layer.name, f"{layer.bits}-bit weights cannot be stored in the int4 layout")
    int4_group_size(layer, group_size)
    if layer.zeros.min() < 0 or layer.zeros.max() > 15:
        _fail(layer.name, "a zero point outside [0, 15] (auto-gptq v1 stores a zero of 0 as -1, which its kernels "
                          "read as 16): not representable in the int4 layout")
    first_of_block = torch.arange(0, layer.q.shape[1], group_size)
    source = layer.group[first_of_block]  # (K / group_size,): the source group of each engine group
    return {"qweight": pack_int4(layer.q).contiguous(), "scales": layer.scales[:, source].contiguous(),
            "zeros": layer.zeros[:, source].to(torch.uint8).contiguous()}


def to_int8(layer: UnpackedLinear, requantize: bool = False) -> dict[str, torch.Tensor]:
    """int8 per-output-channel symmetric (qweight, scales). Exact when each row has one scale and its values
    q - zero fit int8 (auto-gptq 8-bit sym with group_size -1: zero 128); otherwise, only with requantize, the
    dequantized float32 weight is re-quantized round-to-nearest with scale = max|W[n]| / 127 (lossy)."""
    values = layer.q - layer.zeros[:, layer.group]  # (N, K) int16
    row_scale = layer.scales[:, :1]
    if torch.equal(layer.scales[:, layer.group], row_scale.expand_as(values)) and \
            values.min() >= -128 and values.max() <= 127:
        return {"qweight": values.to(torch.int8).contiguous(), "scales": row_scale[:, 0].contiguous()}
    if not requantize:
        _fail(layer.name, "8-bit GPTQ weights with several groups per row or asymmetric zeros are not exactly "
                          "int8 per-channel; pass --requantize-int8 to dequantize and re-quantize them (lossy)")
    weight = layer.dequantize()
    scales = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127
    qweight = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return {"qweight": qweight.contiguous(), "scales": scales.contiguous()}


def engine_group_size(group_size: int, in_features: list[int]) -> int:
    """The one int4 group size an engine records: the checkpoint's, or for group_size -1 (one group per row)
    the largest of 128, 64, 32, 16 dividing every K (scales and zeros then repeat, exactly), else their gcd."""
    if group_size != -1:
        return group_size
    for candidate in (128, 64, 32, 16):
        if all(k % candidate == 0 for k in in_features):
            return candidate
    return math.gcd(*in_features)
