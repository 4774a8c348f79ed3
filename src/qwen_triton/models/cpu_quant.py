"""The CPU op set's quantized linear layers (models/ops.py CPU_OPS). In bfloat16, torch's int8 and int4
weight-only kernels (int4 on torch's own packing, made once at load: int4pack_layout, QuantLinear.prepare). In
float32 and float16 those kernels go row by row, and dequantizing the weight in row chunks, each multiplied by the
BLAS GEMM while it is still in cache, is as fast at one row and far faster beyond
(benchmarks/results/cpu_quant_linear.json). Weights in the engine's layout (models/quant_linear.py).

Shapes: x (M, K); int8 qweight (N, K), scales (N,); int4 qweight (N, K/2), scales and zeros (N, K/g) -> (M, N)."""
from __future__ import annotations

from typing import Callable

import torch

from .quant_linear import unpack_int4

# Weight rows dequantized (in float32, then x's dtype) and multiplied at a time: 256 x 4096 float32 is 4 MiB,
# about what stays in this class of CPU's cache (benchmarks/cpu_quant_linear.py).
DEQUANTIZE_CHUNK_ROWS = 256


def chunked_dequant_linear(x: torch.Tensor, n: int, fill: Callable[[torch.Tensor, int, int], None],
                           bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ W^T (+ bias) with W (n, K) made DEQUANTIZE_CHUNK_ROWS rows at a time: fill(buffer, start, stop) writes
    rows start..stop of W in float32 into buffer (stop - start, K); the same values as dequantizing the whole
    weight first. Two scratch buffers per call, reused by every chunk: a chunk freshly allocated each time costs
    more in page faults than its matmul."""
    k = x.shape[1]
    out = torch.empty((x.shape[0], n), dtype=x.dtype, device=x.device)
    rows = min(DEQUANTIZE_CHUNK_ROWS, n)
    scratch = torch.empty((rows, k), dtype=torch.float32, device=x.device)
    cast = scratch if x.dtype == torch.float32 else torch.empty((rows, k), dtype=x.dtype, device=x.device)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        fill(scratch[:stop - start], start, stop)
        weight = cast[:stop - start].copy_(scratch[:stop - start]) if cast is not scratch else scratch[:stop - start]
        torch.matmul(x, weight.T, out=out[:, start:stop])
    return out if bias is None else out + bias


def chunked_linear_int8(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                        bias: torch.Tensor | None = None) -> torch.Tensor:
    def fill(buffer, i, j):
        torch.mul(qweight[i:j], scales[i:j, None], out=buffer)  # W[n, k] = q[n, k] * scales[n]
    return chunked_dequant_linear(x, qweight.shape[0], fill, bias)


def chunked_linear_int4(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                        bias: torch.Tensor | None = None) -> torch.Tensor:
    def fill(buffer, i, j):
        packed = qweight[i:j]  # (r, K/2): low nibble = even k, high nibble = odd k
        pairs = buffer.view(j - i, -1, 2)  # (r, K/2, 2)
        pairs[..., 0].copy_(packed & 0x0F)
        pairs[..., 1].copy_(packed >> 4)
        groups = buffer.view(j - i, scales.shape[1], -1)  # (r, K/g, g)
        groups.sub_(zeros[i:j, :, None]).mul_(scales[i:j, :, None])  # W = (q - zero) * scale, per group
    return chunked_dequant_linear(x, qweight.shape[0], fill, bias)


def int8pack_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """torch._weight_int8pack_mm computes x @ (qweight * scales).T with per-output-channel scales, which must be
    in x's dtype (float32, bfloat16 or float16) and x contiguous along K."""
    out = torch._weight_int8pack_mm(x.contiguous(), qweight, scales.to(x.dtype))  # (M, N)
    return out if bias is None else out + bias


def int4pack_layout(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                    dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Once at load: the engine's int4 layer in torch's own layout, {} where torch's kernel cannot take it
    (N not a multiple of 16). torch computes W = (q - 8) * scale + zero', so zero' = (8 - zero) * scale.
    int4_packed: uint8 (N, K/2) in torch's order; int4_scales_and_zeros: (K/g, N, 2) in the model's dtype."""
    if qweight.shape[0] % 16:
        return {}
    packed = torch._convert_weight_to_int4pack_for_cpu(unpack_int4(qweight).to(torch.int32), 1)
    scales_and_zeros = torch.stack([scales.T, ((8 - zeros.float()) * scales).T], dim=-1)
    return {"int4_packed": packed, "int4_scales_and_zeros": scales_and_zeros.to(dtype).contiguous()}


def int4pack_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                    bias: torch.Tensor | None = None, int4_packed: torch.Tensor | None = None,
                    int4_scales_and_zeros: torch.Tensor | None = None) -> torch.Tensor:
    """torch._weight_int4pack_mm_for_cpu on the layout int4pack_layout made; the chunked dequantize for a layer
    that layout could not take."""
    if int4_packed is None:
        return chunked_linear_int4(x, qweight, scales, zeros, bias)
    group = x.shape[1] // int4_scales_and_zeros.shape[0]
    out = torch._weight_int4pack_mm_for_cpu(x.contiguous(), int4_packed, group, int4_scales_and_zeros)  # (M, N)
    return out if bias is None else out + bias
