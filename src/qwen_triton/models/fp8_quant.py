"""Per-token fp8 (e4m3) quantization of activations on CUDA, for W8A8 (ops.fp8_linear): one kernel where
ops.quantize_rows_fp8 runs several torch kernels (a float32 copy, abs, amax, where, divide, clamp, cast), each
a pass over the activations and, in a step that is not graphed, a launch from the host. The results are the
same bits on CUDA: the same float32 arithmetic, rounded to nearest (the scale is the row's largest magnitude
times 1/448, as torch divides a CUDA tensor by a number; each value is divided by it), the same clamp and cast."""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl

    from . import pdl
except ImportError:  # CPU-only installs
    triton = None

FP8_MAX = 448.0  # largest finite float8_e4m3fn (ops.FP8_MAX)
# torch._scaled_mm's row-wise fp8 GEMM on the H100 runs some row counts well past 128 slower than the next
# multiple of 128 (benchmarks/results/fp8_rows_h100.jsonl), so for it x is quantized into a buffer of that many
# rows (quantize_rows_padded: benchmarks/quant_gemv.py's scaled_mm variant; the runtime's W8A8, models/fp8_gemm.py,
# takes any row count).
PAD_ROWS = 128


def padded_rows(M: int) -> int:
    """M, or past PAD_ROWS the next multiple of it."""
    return M if M <= PAD_ROWS else -(-M // PAD_ROWS) * PAD_ROWS


if triton is not None:

    @triton.jit
    def _quantize_rows_kernel(x_ptr, q_ptr, scale_ptr, M, K, x_stride, FP8_MAX: tl.constexpr, BLOCK: tl.constexpr,
                              PDL: tl.constexpr):
        # One program per row: scale[row] = amax(|x[row]|) / FP8_MAX (1 for an all-zero row), then
        # q[row] = clamp(x[row] / scale[row]) in e4m3. The row is read twice; the second read hits the cache.
        # Rows from M on (padding) are zeros with scale 1.
        pdl.wait_then_release(PDL)
        row = tl.program_id(0)
        x_row = x_ptr + tl.minimum(row, M - 1).to(tl.int64) * x_stride
        K_live = tl.where(row < M, K, 0)
        amax = tl.zeros((BLOCK,), tl.float32)
        for k in range(0, K, BLOCK):
            cols = k + tl.arange(0, BLOCK)
            amax = tl.maximum(amax, tl.abs(tl.load(x_row + cols, mask=cols < K_live, other=0.0).to(tl.float32)))
        row_max = tl.max(amax, axis=0)
        # Times the reciprocal, as torch divides a CUDA tensor by a Python number (ops.quantize_rows_fp8).
        scale = tl.where(row_max > 0, row_max * (1.0 / FP8_MAX), 1.0)
        tl.store(scale_ptr + row, scale)
        for k in range(0, K, BLOCK):
            cols = k + tl.arange(0, BLOCK)
            x = tl.load(x_row + cols, mask=cols < K_live, other=0.0).to(tl.float32)
            q = tl.minimum(tl.maximum(tl.math.div_rn(x, scale), -FP8_MAX), FP8_MAX)
            tl.store(q_ptr + row.to(tl.int64) * K + cols, q.to(tl.float8e4nv), mask=cols < K)


def quantize_rows(x: torch.Tensor, rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) on CUDA, unit stride along K -> (float8_e4m3fn (R, K), float32 scales (R, 1)), as
    ops.quantize_rows_fp8 makes them on CUDA; rows R >= M (default M): rows from M on are zeros, scale 1."""
    M, K = x.shape
    R = M if rows is None else rows
    q = torch.empty((R, K), dtype=torch.float8_e4m3fn, device=x.device)
    scales = torch.empty((R, 1), dtype=torch.float32, device=x.device)
    if M:
        _quantize_rows_kernel[(R,)](x, q, scales, M, K, x.stride(0), FP8_MAX=FP8_MAX, BLOCK=1024, num_warps=4,
                                    **pdl.launch_kwargs(x.device))
    return q, scales


def quantize_rows_padded(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_rows into padded_rows(M) rows, for ops.fp8_linear (torch._scaled_mm) on CUDA, which drops the extra
    outputs."""
    return quantize_rows(x, padded_rows(x.shape[0]))
