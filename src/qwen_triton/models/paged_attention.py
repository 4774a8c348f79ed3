"""Decode attention over the paged KV cache as one Triton kernel on CUDA: each (sequence, head) program
reads only its live blocks (online softmax), so cost follows real context lengths, not the padded table.
Shapes are static, so it runs inside CUDA graphs. Without Triton or CUDA the caller uses its SDPA path."""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: torch's CPU wheel carries no Triton
    triton = None


def available(q: torch.Tensor) -> bool:
    return triton is not None and q.is_cuda


if triton is not None:

    @triton.jit
    def _decode_kernel(q_ptr, k_ptr, v_ptr, tables_ptr, lens_ptr, out_ptr, m_ptr, l_ptr, scale, table_stride,
                       NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                       BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr, SPLITS: tl.constexpr):
        seq = tl.program_id(0)
        head = tl.program_id(1)
        split = tl.program_id(2)
        kv_head = head // (NUM_HEADS // NUM_KV_HEADS)
        dims = tl.arange(0, HEAD_DIM)
        offsets = tl.arange(0, TILE)
        q = tl.load(q_ptr + (seq * NUM_HEADS + head) * HEAD_DIM + dims).to(tl.float32)  # (D,)
        length = tl.load(lens_ptr + seq)
        num_tiles = tl.cdiv(length, TILE)
        per_split = tl.cdiv(num_tiles, SPLITS)  # split s reads tiles [s * per_split, (s + 1) * per_split)
        m_i = tl.full([], float("-inf"), tl.float32)
        l_i = tl.full([], 0.0, tl.float32)
        acc = tl.zeros([HEAD_DIM], dtype=tl.float32)
        # TILE tokens (several KV blocks) per iteration: each token finds its own block, so more bytes are
        # in flight per program than with one 16-token block at a time.
        for tile in range(split * per_split, tl.minimum((split + 1) * per_split, num_tiles)):
            tokens = tile * TILE + offsets
            live = tokens < length
            table_slots = tables_ptr + seq * table_stride + tokens // BLOCK_SIZE
            physical = tl.load(table_slots, mask=live, other=0).to(tl.int64)
            rows = (physical * BLOCK_SIZE + tokens % BLOCK_SIZE) * NUM_KV_HEADS + kv_head  # (TILE,)
            ptrs = rows[:, None] * HEAD_DIM + dims[None, :]  # (TILE, D)
            k = tl.load(k_ptr + ptrs, mask=live[:, None], other=0.0).to(tl.float32)
            scores = tl.sum(k * q[None, :], axis=1) * scale
            scores = tl.where(live, scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, axis=0))
            p = tl.exp(scores - m_new)
            alpha = tl.exp(m_i - m_new)
            v = tl.load(v_ptr + ptrs, mask=live[:, None], other=0.0).to(tl.float32)
            acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
            l_i = l_i * alpha + tl.sum(p, axis=0)
            m_i = m_new
        if SPLITS == 1:
            tl.store(out_ptr + (seq * NUM_HEADS + head) * HEAD_DIM + dims, (acc / l_i).to(out_ptr.dtype.element_ty))
        else:  # partial state; _combine_kernel merges the splits (an empty split has m = -inf, l = 0)
            part = (seq * NUM_HEADS + head) * SPLITS + split
            tl.store(out_ptr + part * HEAD_DIM + dims, acc)
            tl.store(m_ptr + part, m_i)
            tl.store(l_ptr + part, l_i)

    @triton.jit
    def _combine_kernel(acc_ptr, m_ptr, l_ptr, out_ptr, NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                        SPLITS: tl.constexpr):
        row = tl.program_id(0) * NUM_HEADS + tl.program_id(1)
        parts = row * SPLITS + tl.arange(0, SPLITS)
        dims = tl.arange(0, HEAD_DIM)
        m = tl.load(m_ptr + parts)  # (S,); split 0 holds the first token, so the max is finite
        weights = tl.exp(m - tl.max(m, axis=0))
        acc = tl.load(acc_ptr + parts[:, None] * HEAD_DIM + dims[None, :])  # (S, D)
        total = tl.sum(weights * tl.load(l_ptr + parts), axis=0)
        tl.store(out_ptr + row * HEAD_DIM + dims, (tl.sum(weights[:, None] * acc, axis=0) / total)
                 .to(out_ptr.dtype.element_ty))


# Measured on an H200 with each call reading its own cache (python -m qwen_triton.bench.attention, Qwen-7B heads,
# scattered blocks, benchmarks/results/attention_h200.jsonl): about 4 programs per SM, 2 warps each, read fastest
# at every batch up to 16 and context 512 / 2,000 (batch 4, context 2,000: 40 us where 2 splits of 4 warps took
# 107); 64-token tiles with 8 or more splits, else 128 (at batch 64 without splits 128 reads 4.0 TB/s where 64
# read 2.6).
PROGRAMS_PER_SM = 4
MAX_SPLITS = 16
WARPS = 2


def num_splits(batch: int, heads: int, device: torch.device) -> int:
    """Programs per (sequence, head): the largest power of two that keeps to about PROGRAMS_PER_SM programs per
    SM (flash-decoding at small batch), at least 1."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    wanted = PROGRAMS_PER_SM * sms // (batch * heads)
    return 1 if wanted <= 1 else min(MAX_SPLITS, 1 << (wanted.bit_length() - 1))


def decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
           context_lens: torch.Tensor, splits: int | None = None,
           launch: tuple[int, int] | None = None) -> torch.Tensor:
    """q (B, H, D); caches (num_blocks, block_size, Hkv, D); block_tables (B, max_blocks); -> (B, H, D).
    splits: programs per (sequence, head), default num_splits(); fixed by the shapes, so graph-safe.
    launch: (tile tokens, warps), default by splits (above)."""
    B, H, D = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    splits = splits or num_splits(B, H, q.device)
    tile, num_warps = launch or (64 if splits >= 8 else 128, WARPS)
    out = torch.empty_like(q)
    if splits == 1:
        partial, m, l = out, out, out  # m and l are unused with one split
    else:
        partial = torch.empty(B, H, splits, D, dtype=torch.float32, device=q.device)
        m = torch.empty(B, H, splits, dtype=torch.float32, device=q.device)
        l = torch.empty_like(m)
    _decode_kernel[(B, H, splits)](q.contiguous(), k_cache, v_cache, block_tables, context_lens, partial, m, l,
                                   D ** -0.5, block_tables.stride(0), NUM_HEADS=H, NUM_KV_HEADS=num_kv_heads,
                                   HEAD_DIM=D, BLOCK_SIZE=block_size, TILE=max(tile, block_size),
                                   SPLITS=splits, num_warps=num_warps)
    if splits > 1:
        _combine_kernel[(B, H)](partial, m, l, out, NUM_HEADS=H, HEAD_DIM=D, SPLITS=splits)
    return out
