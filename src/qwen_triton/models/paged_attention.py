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
    def _decode_kernel(q_ptr, k_ptr, v_ptr, tables_ptr, lens_ptr, out_ptr, scale, table_stride,
                       NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                       BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr):
        seq = tl.program_id(0)
        head = tl.program_id(1)
        kv_head = head // (NUM_HEADS // NUM_KV_HEADS)
        dims = tl.arange(0, HEAD_DIM)
        offsets = tl.arange(0, TILE)
        q = tl.load(q_ptr + (seq * NUM_HEADS + head) * HEAD_DIM + dims).to(tl.float32)  # (D,)
        length = tl.load(lens_ptr + seq)
        m_i = float("-inf")
        l_i = 0.0
        acc = tl.zeros([HEAD_DIM], dtype=tl.float32)
        # TILE tokens (several KV blocks) per iteration: each token finds its own block, so more bytes are
        # in flight per program than with one 16-token block at a time.
        for tile in range(0, tl.cdiv(length, TILE)):
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
        tl.store(out_ptr + (seq * NUM_HEADS + head) * HEAD_DIM + dims, (acc / l_i).to(out_ptr.dtype.element_ty))


TILE_TOKENS = 64

def decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
           context_lens: torch.Tensor) -> torch.Tensor:
    """q (B, H, D); caches (num_blocks, block_size, Hkv, D); block_tables (B, max_blocks); -> (B, H, D)."""
    B, H, D = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    out = torch.empty_like(q)
    _decode_kernel[(B, H)](q.contiguous(), k_cache, v_cache, block_tables, context_lens, out, D ** -0.5,
                           block_tables.stride(0), NUM_HEADS=H, NUM_KV_HEADS=num_kv_heads, HEAD_DIM=D,
                           BLOCK_SIZE=block_size, TILE=max(TILE_TOKENS, block_size))
    return out
