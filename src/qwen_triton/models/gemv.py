"""Small-batch linear layers (y = x W^T + b with few rows of x) as a split-K Triton GEMV on CUDA. At batch 1 a
decode step only streams weights, and cuBLAS reads some Qwen-7B shapes (the square 4096 x 4096 o_proj most)
well below the memory bandwidth: more, smaller programs keep more bytes in flight. Each program sums
BLOCK_K-wide slices of BLOCK_N weight rows over its split of K in float32; splits are summed (and the bias
added) in float32 before one rounding to the output dtype, as cuBLAS rounds once, by the program of each output
tile that finishes last (store_tile), so a split call is one kernel. ops.small_batch_linear
sends a half-precision CUDA model's calls of up to max_rows rows here (benchmarks/gemv.py compares)."""
from __future__ import annotations

import torch

from .counters import split_counters

try:
    import triton
    import triton.language as tl

    from . import pdl
except ImportError:  # CPU-only installs
    triton = None


MAX_ROWS = 64  # above this (prefill, mixed steps) cuBLAS's GEMMs take over
MAX_ROWS_SQUARE = 16  # 4096 x 4096 (o_proj): cuBLAS from here on (max_rows)


def max_rows(n: int, k: int) -> int:
    """The most rows of x the GEMV takes for a weight (n, k); cuBLAS above. From 17 to 64 rows the Triton tiles
    beat cuBLAS on an H100 only where one side is longer than 4,096 (qkv, gate_up, down, lm_head); the square
    4096 x 4096 o_proj stays with cuBLAS there (benchmarks/results/gemv_bs32_64_h100.jsonl)."""
    return MAX_ROWS if max(n, k) > 4096 else MAX_ROWS_SQUARE


if triton is not None:

    @triton.jit
    def _gemv_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, parts_ptr, count_ptr, M, N, K, x_stride, k_per_split,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLITS: tl.constexpr,
                     HAS_BIAS: tl.constexpr, PDL: tl.constexpr):
        # out[m, n] = sum over k of x[m, k] * w[n, k] (+ bias[n]); this program sums its split of K (store_tile)
        pdl.wait_then_release(PDL)
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        split = tl.program_id(1)
        rm = tl.arange(0, BLOCK_M)
        k_start = split * k_per_split
        k_end = tl.minimum(k_start + k_per_split, K)
        w_rows = w_ptr + rn[:, None].to(tl.int64) * K  # (BLOCK_N, 1)
        n_live = rn < N
        if BLOCK_M == 1:
            acc = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)  # reduced once after the loop
            for k in range(k_start, k_end, BLOCK_K):
                rk = k + tl.arange(0, BLOCK_K)
                k_live = rk < k_end
                w = tl.load(w_rows + rk[None, :], mask=n_live[:, None] & k_live[None, :], other=0.0)
                x = tl.load(x_ptr + rk, mask=k_live, other=0.0)
                acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
            total = tl.sum(acc, axis=1)[None, :]  # (1, BLOCK_N)
        else:
            total = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
            for k in range(k_start, k_end, BLOCK_K):
                rk = k + tl.arange(0, BLOCK_K)
                k_live = rk < k_end
                w = tl.load(w_rows + rk[None, :], mask=n_live[:, None] & k_live[None, :], other=0.0)
                x = tl.load(x_ptr + rm[:, None] * x_stride + rk[None, :], mask=(rm[:, None] < M) & k_live[None, :],
                            other=0.0)
                total = tl.dot(x, tl.trans(w), total)  # (BLOCK_M, BLOCK_N)
        store_tile(total, bias_ptr, out_ptr, parts_ptr, count_ptr, rm, rn, M, N, SPLITS, HAS_BIAS)

    @triton.jit
    def store_tile(total, bias_ptr, out_ptr, parts_ptr, count_ptr, rm, rn, M, N, SPLITS: tl.constexpr,
                   HAS_BIAS: tl.constexpr):
        """The end of every kernel split_k launches: total (BLOCK_M, BLOCK_N) float32 holds this program's sums over
        its split of K for rows rm, columns rn. One split: (+ bias) rounded into out. Several: stored to parts
        (SPLITS, M, N) float32, and the program that arrives last at its output tile (count_ptr: a counter per
        tile, zero between calls) adds the tile's partials in split order (+ bias), rounds them once into out and
        zeroes its counter again. No second kernel sums the splits, and the result does not depend on which split
        finishes last."""
        live = (rm < M)[:, None] & (rn < N)[None, :]
        offsets = rm[:, None] * N + rn[None, :]
        if SPLITS == 1:
            _round_into(total, bias_ptr, out_ptr, offsets, rn, live, N, HAS_BIAS)
        else:
            tl.store(parts_ptr + tl.program_id(1) * M * N + offsets, total, mask=live)
            tl.debug_barrier()  # every thread's partials are written before the counter's release publishes them
            tile = tl.program_id(2) * tl.num_programs(0) + tl.program_id(0)
            if tl.atomic_add(count_ptr + tile, 1, sem="acq_rel", scope="gpu") == SPLITS - 1:
                summed = tl.zeros_like(total)
                for split in tl.static_range(SPLITS):  # .cg: read from L2, where the other programs' stores are
                    summed += tl.load(parts_ptr + split * M * N + offsets, mask=live, other=0.0, cache_modifier=".cg")
                _round_into(summed, bias_ptr, out_ptr, offsets, rn, live, N, HAS_BIAS)
                tl.store(count_ptr + tile, 0)

    @triton.jit
    def _round_into(total, bias_ptr, out_ptr, offsets, rn, live, N, HAS_BIAS: tl.constexpr):
        if HAS_BIAS:
            total += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + offsets, total.to(out_ptr.dtype.element_ty), mask=live)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           launch: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """x (M, K) unit stride along K, M <= MAX_ROWS; weight (N, K) contiguous; bias (N,) -> (M, N) in x's dtype.
    launch: (BLOCK_N, BLOCK_K, splits, warps); default by shape (choose_launch)."""
    M, K = x.shape
    block_n, block_k, splits, warps = launch or choose_launch(M, weight.shape[0], K)
    launch = (one_block_m(M), block_n, block_k, splits, warps)
    return split_k(_gemv_kernel, x, (weight,), bias, weight.shape[0], launch)


def one_block_m(M: int) -> int:
    """BLOCK_M holding all M rows in one block: 1 (the elementwise path) or a tensor-core tile of 16 or more."""
    return 1 if M == 1 else max(16, triton.next_power_of_2(M))


def split_k(kernel, x: torch.Tensor, operands: tuple, bias: torch.Tensor | None, N: int,
            launch: tuple[int, int, int, int, int], out_dtype: torch.dtype | None = None,
            **constexprs) -> torch.Tensor:
    """Launches a split-K kernel of this module's signature (x, *operands, bias, out, parts, counts, M, N, K,
    x_stride, k_per_split; BLOCK_M/N/K, SPLITS, HAS_BIAS, PDL) that ends in store_tile: launch (BLOCK_M, BLOCK_N,
    BLOCK_K, splits, warps), a grid over N blocks, splits and M blocks. With several splits the float32 partials
    go to a scratch buffer and each tile's last split sums them (with the bias), rounded once to out_dtype (x's
    unless given): one kernel either way."""
    M, K = x.shape
    block_m, block_n, block_k, splits, warps = launch
    k_per_split = triton.cdiv(triton.cdiv(K, splits), block_k) * block_k
    splits = triton.cdiv(K, k_per_split)
    grid = (triton.cdiv(N, block_n), splits, triton.cdiv(M, block_m))
    out = torch.empty((M, N), dtype=out_dtype or x.dtype, device=x.device)
    parts, counts = out, out  # unused with one split
    if splits > 1:
        parts = torch.empty((splits, M, N), dtype=torch.float32, device=x.device)
        counts = split_counters(x.device, grid[0] * grid[2])
    kernel[grid](x, *operands, bias if bias is not None else operands[0], out, parts, counts, M, N, K, x.stride(0),
                 k_per_split, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SPLITS=splits,
                 HAS_BIAS=bias is not None, num_warps=warps, **constexprs, **pdl.launch_kwargs(x.device))
    return out


def choose_launch(M: int, N: int, K: int) -> tuple[int, int, int, int]:
    """Fastest launches of benchmarks/gemv.py for Qwen-7B's shapes. Batch 1 (H200,
    benchmarks/results/gemv_h200.jsonl): 4 rows x 1,024 columns per program for the narrow outputs (o_proj,
    down_proj), 16 x 256 for the wide ones. 2 to 16 rows: 32-wide tensor-core tiles, K split in 4 for the narrow
    outputs; 17 to 64 (H100, benchmarks/results/gemv_bs32_64_h100.jsonl): K split in 2 for down_proj, the wide
    outputs unsplit."""
    narrow = N <= 4096
    if M == 1:
        return (4, 1024, 1, 4) if narrow else (16, 256, 1, 4)
    if narrow:
        return (32, 128, 4 if M <= MAX_ROWS_SQUARE else 2, 4)
    return (32, 128, 1, 4)
