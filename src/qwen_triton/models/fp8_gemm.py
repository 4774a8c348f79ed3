"""W8A8 fp8 GEMM on CUDA (compute capability 8.9+) as Triton kernels: x quantized per token (fp8_quant), the
e4m3 weight as stored, float32 sums on the fp8 tensor cores, and both scales, the bias and the rounding to x's
dtype in the kernel's epilogue. torch._scaled_mm's row-wise kernel writes bfloat16 only, so a float16 model
paid a cast of its output on top, and it runs some row counts past 128 slower than the next multiple of 128.
Two kernels: linear, the GEMM for wide calls (prefill, mixed steps); linear_rows, for decode steps of a few rows
(up to gemv.MAX_ROWS), the weight first in the MMA (its rows fill the tensor cores' 64-row side, x's few rows
the other) and K split among programs when the output is narrow (gemv.split_k: float32 partials that each tile's
last split sums)."""
from __future__ import annotations

import torch

from . import fp8_quant, gemv

try:
    import triton
    import triton.language as tl

    from . import pdl
except ImportError:  # CPU-only installs
    triton = None

# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages): the fastest of benchmarks/quant_gemv.py's sweep at Qwen-7B's layer
# shapes at 128, 300 and 512 rows on the H100, where it beat torch._scaled_mm (benchmarks/results/fp8_gemm_h100.jsonl).
LAUNCH = (128, 128, 128, 8, 4)
GROUP_M = 8  # row blocks that walk the weight's column blocks together, so a weight tile is read from L2
# linear_rows' (BLOCK_M, BLOCK_N, BLOCK_K, splits, warps, stages) by rows of x (the smallest bound that holds them)
# and output width (narrow: N <= 4096, o_proj and down_proj; wide: the others): the fastest over each width's layers
# of benchmarks/quant_gemv.py's w8a8_rows sweep (benchmarks/results/fp8_w8a8_rows_h200.jsonl, an H200).
ROWS_LAUNCHES = {16: {"narrow": (16, 64, 256, 1, 4, 5), "wide": (16, 64, 256, 1, 4, 3)},
                 32: {"narrow": (32, 64, 256, 2, 4, 5), "wide": (32, 64, 256, 1, 4, 3)},
                 64: {"narrow": (64, 64, 256, 2, 4, 5), "wide": (64, 64, 256, 1, 4, 3)}}


def rows_launch(M: int, N: int) -> tuple[int, int, int, int, int, int]:
    """linear_rows' launch for M <= gemv.MAX_ROWS rows and N outputs."""
    bound = next((b for b in sorted(ROWS_LAUNCHES) if M <= b), max(ROWS_LAUNCHES))
    return ROWS_LAUNCHES[bound]["narrow" if N <= 4096 else "wide"]


if triton is not None:

    @triton.jit
    def _fp8_gemm_kernel(xq_ptr, w_ptr, x_scale_ptr, w_scale_ptr, bias_ptr, out_ptr, M, N, K,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         GROUP_M: tl.constexpr, HAS_BIAS: tl.constexpr, PDL: tl.constexpr):
        # out[m, n] = x_scale[m] * w_scale[n] * sum_k xq[m, k] * w[n, k]  (+ bias[n]); xq (M, K) and w (N, K)
        # e4m3, K contiguous in both: the layout (A row-major, B K-major) Hopper's fp8 MMA takes.
        pdl.wait_then_release(PDL)
        pid = tl.program_id(0)
        blocks_m, blocks_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
        in_group = GROUP_M * blocks_n
        first_m = (pid // in_group) * GROUP_M
        group_rows = tl.minimum(blocks_m - first_m, GROUP_M)
        pid_m = first_m + (pid % in_group) % group_rows
        pid_n = (pid % in_group) // group_rows
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        x_tile = xq_ptr + rm[:, None].to(tl.int64) * K + rk[None, :]  # (BLOCK_M, BLOCK_K)
        w_tile = w_ptr + rn[:, None].to(tl.int64) * K + rk[None, :]  # (BLOCK_N, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for k in range(0, K, BLOCK_K):
            k_live = (rk < K - k)[None, :]
            x = tl.load(x_tile, mask=(rm < M)[:, None] & k_live, other=0.0)
            w = tl.load(w_tile, mask=(rn < N)[:, None] & k_live, other=0.0)
            acc = tl.dot(x, tl.trans(w), acc)
            x_tile += BLOCK_K
            w_tile += BLOCK_K
        acc *= tl.load(x_scale_ptr + rm, mask=rm < M, other=0.0)[:, None]
        acc *= tl.load(w_scale_ptr + rn, mask=rn < N, other=0.0)[None, :]
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + rm[:, None].to(tl.int64) * N + rn[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=(rm < M)[:, None] & (rn < N)[None, :])

    @triton.jit
    def _fp8_rows_kernel(xq_ptr, w_ptr, x_scale_ptr, w_scale_ptr, bias_ptr, out_ptr, parts_ptr, count_ptr, M, N, K,
                         x_stride, k_per_split, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         SPLITS: tl.constexpr, STAGES: tl.constexpr, HAS_BIAS: tl.constexpr, PDL: tl.constexpr):
        # out[m, n] = x_scale[m] * w_scale[n] * sum over k of xq[m, k] * w[n, k] (+ bias[n]), this program's split
        # of K (gemv.store_tile; x_stride: xq's row stride). The weight first: acc (BLOCK_N, BLOCK_M) = W tile .
        # xq tile^T, both K-major as the fp8 MMA takes them; a few rows of x (BLOCK_M 16-64) fill its narrow side.
        # The scales are linear, so each split applies both to its partial sums.
        pdl.wait_then_release(PDL)
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        split = tl.program_id(1)
        rm = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
        k_start = split * k_per_split
        k_end = tl.minimum(k_start + k_per_split, K)
        rk = k_start + tl.arange(0, BLOCK_K)
        w_tile = w_ptr + rn[:, None].to(tl.int64) * K + rk[None, :]  # (BLOCK_N, BLOCK_K)
        x_tile = xq_ptr + rm[:, None].to(tl.int64) * x_stride + rk[None, :]  # (BLOCK_M, BLOCK_K)
        acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
        for k in tl.range(k_start, k_end, BLOCK_K, num_stages=STAGES):
            k_live = (rk < k_end - k + k_start)[None, :]
            w = tl.load(w_tile, mask=(rn < N)[:, None] & k_live, other=0.0)
            x = tl.load(x_tile, mask=(rm < M)[:, None] & k_live, other=0.0)
            acc = tl.dot(w, tl.trans(x), acc)
            w_tile += BLOCK_K
            x_tile += BLOCK_K
        total = tl.trans(acc)  # (BLOCK_M, BLOCK_N)
        total *= tl.load(x_scale_ptr + rm, mask=rm < M, other=0.0)[:, None]
        total *= tl.load(w_scale_ptr + rn, mask=rn < N, other=0.0)[None, :]
        gemv.store_tile(total, bias_ptr, out_ptr, parts_ptr, count_ptr, rm, rn, M, N, SPLITS, HAS_BIAS)


def linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None,
           launch: tuple[int, int, int, int, int] | None = None) -> torch.Tensor:
    """W8A8 on CUDA: x (M, K) half precision, unit stride along K; qweight float8_e4m3fn (N, K), scales float32
    (N,) -> (M, N) in x's dtype. x is quantized per token as ops.quantize_rows_fp8 quantizes it (fp8_quant's
    kernel, same bits). launch: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages), default LAUNCH."""
    M, K = x.shape
    N = qweight.shape[0]
    xq, x_scales = fp8_quant.quantize_rows(x)
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    block_m, block_n, block_k, warps, stages = launch or LAUNCH
    grid = (triton.cdiv(M, block_m) * triton.cdiv(N, block_n),)
    _fp8_gemm_kernel[grid](xq, qweight, x_scales, scales, bias if bias is not None else scales, out, M, N, K,
                           BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=GROUP_M,
                           HAS_BIAS=bias is not None, num_warps=warps, num_stages=stages,
                           **pdl.launch_kwargs(x.device))
    return out


def linear_rows(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None,
                launch: tuple[int, int, int, int, int, int] | None = None) -> torch.Tensor:
    """W8A8 for a few rows (decode steps, up to gemv.MAX_ROWS): as linear (x quantized per token by fp8_quant's
    kernel, the same bits), the weight first in the MMA and K split where launch says. launch: (BLOCK_M,
    BLOCK_N, BLOCK_K, splits, warps, stages), default rows_launch."""
    M, N = x.shape[0], qweight.shape[0]
    xq, x_scales = fp8_quant.quantize_rows(x)
    block_m, block_n, block_k, splits, warps, stages = launch or rows_launch(M, N)
    return gemv.split_k(_fp8_rows_kernel, xq, (qweight, x_scales, scales), bias, N,
                        (block_m, block_n, block_k, splits, warps), STAGES=stages, out_dtype=x.dtype)
