"""W8A8 fp8 GEMM on CUDA (compute capability 8.9+) as one Triton kernel: x quantized per token (fp8_quant), the
e4m3 weight as stored, float32 sums on the fp8 tensor cores, and both scales, the bias and the rounding to x's
dtype in the kernel's epilogue. torch._scaled_mm's row-wise kernel writes bfloat16 only, so a float16 model
paid a cast of its output on top, and it runs some row counts past 128 slower than the next multiple of 128."""
from __future__ import annotations

import torch

from . import fp8_quant

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
