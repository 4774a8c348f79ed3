"""Decode attention over the paged KV cache as Triton kernels on CUDA: each (sequence, head, split) program
reads only live blocks of its share of the context (online softmax), so cost follows real context lengths,
not the padded table; the split that finishes last merges the splits, in the same launch. Launches depend on
shapes only, so they run inside CUDA graphs. ops.select_ops picks decode() for every CUDA model when Triton
imports; elsewhere the torch reference (ops.decode_attention) gathers the whole table through SDPA."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .counters import split_counters

try:
    import triton
    import triton.language as tl

    from . import pdl
except ImportError:  # CPU-only installs: torch's CPU wheel carries no Triton
    triton = None


if triton is not None:

    @triton.jit
    def _decode_kernel(q_ptr, k_ptr, v_ptr, tables_ptr, lens_ptr, out_ptr, acc_ptr, m_ptr, l_ptr, counters_ptr, scale,
                       table_stride, NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                       BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr, SPLITS: tl.constexpr, SPLITS_POW2: tl.constexpr,
                       CHUNK_TILES: tl.constexpr, PDL: tl.constexpr, STAGES: tl.constexpr):
        # Program (sequence, head, split) reads tiles [first, first + per_split) of its sequence. A sequence read
        # by one program gets its output here; otherwise each live split stores its partial state (acc, m, l)
        # and counts itself done on the (sequence, head)'s counter; the one that counts last merges them (no
        # second launch per layer) and sets the counter back to 0, the state every launch starts from.
        # Programs past the sequence's last tile read and write nothing.
        pdl.wait_then_release(PDL)
        seq = tl.program_id(0)
        head = tl.program_id(1)
        split = tl.program_id(2)
        length = tl.load(lens_ptr + seq).to(tl.int32)
        per_split = _tiles_per_split(length, TILE, SPLITS, CHUNK_TILES)
        num_tiles = tl.cdiv(length, TILE)
        first = split * per_split
        if first < num_tiles:
            dims = tl.arange(0, HEAD_DIM)
            row = seq * NUM_HEADS + head
            q = tl.load(q_ptr + row * HEAD_DIM + dims).to(tl.float32)  # (D,)
            acc, m_i, l_i = _attend(q, k_ptr, v_ptr, tables_ptr + seq * table_stride, length, first,
                                    tl.minimum(first + per_split, num_tiles), scale,
                                    head // (NUM_HEADS // NUM_KV_HEADS), NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE, TILE,
                                    STAGES)
            if SPLITS == 1:  # decided at compile time: no partial state is written at all
                tl.store(out_ptr + row * HEAD_DIM + dims, (acc / l_i).to(out_ptr.dtype.element_ty))
            elif per_split >= num_tiles:
                tl.store(out_ptr + row * HEAD_DIM + dims, (acc / l_i).to(out_ptr.dtype.element_ty))
            else:
                part = row * SPLITS + split
                tl.store(acc_ptr + part * HEAD_DIM + dims, acc)
                tl.store(m_ptr + part, m_i)
                tl.store(l_ptr + part, l_i)
                # Every thread's stores before the counter's release (acq_rel, device scope); the last split's
                # acquire then sees all live splits' partials.
                tl.debug_barrier()
                live = tl.cdiv(num_tiles, per_split)
                if tl.atomic_add(counters_ptr + row, 1, sem="acq_rel", scope="gpu") == live - 1:
                    tl.store(counters_ptr + row, 0)
                    _merge(acc_ptr, m_ptr, l_ptr, out_ptr, row, live, HEAD_DIM, SPLITS, SPLITS_POW2)

    @triton.jit
    def _attend(q, k_ptr, v_ptr, table_ptr, length, first, end, scale, kv_head, NUM_KV_HEADS: tl.constexpr,
                HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr, STAGES: tl.constexpr):
        # Online softmax over tiles [first, end): (acc (D,), running max m, running sum l), all float32.
        # TILE tokens (several KV blocks) per iteration: each token finds its own block, so more bytes are in
        # flight per program than with one 16-token block at a time. The next tile's block ids are loaded
        # while this tile computes, and the compiler pipelines the K/V loads STAGES deep, so a tile's reads no
        # longer wait on its table read.
        dims = tl.arange(0, HEAD_DIM)
        offsets = tl.arange(0, TILE)
        m_i = tl.full([], float("-inf"), tl.float32)
        l_i = tl.full([], 0.0, tl.float32)
        acc = tl.zeros([HEAD_DIM], dtype=tl.float32)
        tokens = first * TILE + offsets
        physical = tl.load(table_ptr + tokens // BLOCK_SIZE, mask=tokens < length, other=0).to(tl.int64)
        for tile in tl.range(first, end, num_stages=STAGES):
            tokens = tile * TILE + offsets
            live = tokens < length
            rows = (physical * BLOCK_SIZE + tokens % BLOCK_SIZE) * NUM_KV_HEADS + kv_head  # (TILE,)
            ptrs = rows[:, None] * HEAD_DIM + dims[None, :]  # (TILE, D)
            k = tl.load(k_ptr + ptrs, mask=live[:, None], other=0.0)
            ahead = tokens + TILE
            physical = tl.load(table_ptr + ahead // BLOCK_SIZE, mask=ahead < length, other=0).to(tl.int64)
            scores = tl.sum(k.to(tl.float32) * q[None, :], axis=1) * scale
            scores = tl.where(live, scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, axis=0))
            p = tl.exp(scores - m_new)
            alpha = tl.exp(m_i - m_new)
            v = tl.load(v_ptr + ptrs, mask=live[:, None], other=0.0).to(tl.float32)
            acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
            l_i = l_i * alpha + tl.sum(p, axis=0)
            m_i = m_new
        return acc, m_i, l_i

    @triton.jit
    def _tiles_per_split(length, TILE: tl.constexpr, SPLITS: tl.constexpr, CHUNK_TILES: tl.constexpr):
        # Even: the sequence's tiles shared among SPLITS programs. Chunked: CHUNK_TILES per program, so a long
        # sequence gets more programs and none outlasts the others by more than a chunk; a sequence longer than
        # SPLITS chunks is shared evenly (the grid is capped, see default_launch).
        even = tl.cdiv(tl.cdiv(length, TILE), SPLITS)
        if CHUNK_TILES > 0:
            return tl.maximum(even, CHUNK_TILES)
        return even

    @triton.jit
    def _merge(acc_ptr, m_ptr, l_ptr, out_ptr, row, live, HEAD_DIM: tl.constexpr, SPLITS: tl.constexpr,
               SPLITS_POW2: tl.constexpr):
        # Other programs wrote the partials: loaded through L2 (.cg), never from this SM's stale L1.
        index = tl.arange(0, SPLITS_POW2)
        parts = row * SPLITS + index
        written = index < live
        dims = tl.arange(0, HEAD_DIM)
        m = tl.load(m_ptr + parts, mask=written, other=float("-inf"), cache_modifier=".cg")  # (S,); split 0 live
        weights = tl.exp(m - tl.max(m, axis=0))
        acc = tl.load(acc_ptr + parts[:, None] * HEAD_DIM + dims[None, :], mask=written[:, None], other=0.0,
                      cache_modifier=".cg")  # (S, D)
        total = tl.sum(weights * tl.load(l_ptr + parts, mask=written, other=0.0, cache_modifier=".cg"), axis=0)
        tl.store(out_ptr + row * HEAD_DIM + dims, (tl.sum(weights[:, None] * acc, axis=0) / total)
                 .to(out_ptr.dtype.element_ty))


WARPS = 2
CHUNK_TILES = 4
CHUNK_TILE = 64
# Programs past a sequence's end still cost a launch slot each: at most this many programs per chunked launch
# (batch 64 x 32 heads x 8 splits; a longer max_seq_len shares long sequences evenly instead).
MAX_CHUNK_PROGRAMS = 16384


@dataclass(frozen=True)
class Launch:
    splits: int  # programs per (sequence, head)
    tile: int  # tokens per loop iteration (at least the block size)
    warps: int
    # 0: a sequence's tiles shared evenly by the splits; else this many per program, or the even share when more
    chunk_tiles: int = 0
    stages: int = 1  # software-pipeline depth of the tile loop; 1: none

    def __post_init__(self):
        if self.splits < 1 or self.tile < 1 or self.warps < 1 or self.chunk_tiles < 0 or self.stages < 1:
            raise ValueError(f"bad attention launch {self}")


@dataclass(frozen=True)
class LaunchPolicy:
    """How default_launch shapes the grid on a class of device."""
    programs_per_sm: int  # even splits: about this many programs per SM
    max_splits: int
    min_even_splits: int  # fewer programs than this per (sequence, head): chunks instead
    even_tiles: tuple[int, int]  # tile with 8 or more even splits, with fewer
    stages: int


# Chosen from runs on an H200 with each call reading its own cache (benchmarks/attention.py, Qwen-7B heads,
# scattered blocks, benchmarks/results/attention_pipelined_h200.jsonl): with the tile loop pipelined, about 8
# programs per SM of 32-token tiles, 2 warps each, read fastest at batch 1 to 8 (contexts of 512 and 2,000),
# ahead of fewer splits of 128-token tiles pipelined or not; 3 stages were slower at every shape. Where even
# splits give too few programs (batch 16 and up), contexts differ under load and the longest sequences'
# programs ran alone at the end of the layer: chunks of CHUNK_TILES tiles per program instead (see Launch). A
# pipelined 64-token chunk takes 33 KiB of shared memory per program, so only devices with Hopper-class shared
# memory pipeline; the others keep the launch chosen before pipelining (benchmarks/results/attention_h200.jsonl:
# about 4 programs per SM).
PIPELINED = LaunchPolicy(programs_per_sm=8, max_splits=32, min_even_splits=4, even_tiles=(32, 32), stages=2)
UNPIPELINED = LaunchPolicy(programs_per_sm=4, max_splits=16, min_even_splits=2, even_tiles=(64, 128), stages=1)
PIPELINE_MIN_SHARED_BYTES = 200 * 1024  # per SM: H100 and H200 have 228 KiB, an A100 164, an L4 100


def launch_policy(props) -> LaunchPolicy:
    """props: torch.cuda.get_device_properties(device)."""
    shared = getattr(props, "shared_memory_per_multiprocessor", 0)  # absent in older torch: no pipelining
    return PIPELINED if shared >= PIPELINE_MIN_SHARED_BYTES else UNPIPELINED


def num_splits(batch: int, heads: int, sms: int, policy: LaunchPolicy) -> int:
    """Programs per (sequence, head): the largest power of two that keeps to about policy.programs_per_sm
    programs per SM (flash-decoding at small batch), at least 1."""
    wanted = policy.programs_per_sm * sms // (batch * heads)
    return 1 if wanted <= 1 else min(policy.max_splits, 1 << (wanted.bit_length() - 1))


def default_launch(batch: int, heads: int, max_tokens: int, device: torch.device) -> Launch:
    """max_tokens: the most a sequence can hold (block table width x block size); fixed by the shapes, so the
    launch is graph-safe."""
    props = torch.cuda.get_device_properties(device)
    policy = launch_policy(props)
    splits = num_splits(batch, heads, props.multi_processor_count, policy)
    if splits >= policy.min_even_splits:
        tile = policy.even_tiles[0] if splits >= 8 else policy.even_tiles[1]
        return Launch(splits, tile, WARPS, stages=policy.stages)
    splits = min(-(-max_tokens // (CHUNK_TILES * CHUNK_TILE)), max(1, MAX_CHUNK_PROGRAMS // (batch * heads)))
    return Launch(splits, CHUNK_TILE, WARPS, CHUNK_TILES, policy.stages)


def decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
           context_lens: torch.Tensor, launch: Launch | None = None) -> torch.Tensor:
    """q (B, H, D); caches (num_blocks, block_size, Hkv, D); block_tables (B, max_blocks); -> (B, H, D)."""
    B, H, D = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    launch = launch or default_launch(B, H, block_tables.shape[1] * block_size, q.device)
    splits, tile = launch.splits, max(launch.tile, block_size)
    out = torch.empty_like(q)
    pdl_args = pdl.launch_kwargs(q.device)
    if splits == 1:
        partial, m, l, counters = out, out, out, out  # unused: one split writes the output
    else:
        partial = torch.empty(B, H, splits, D, dtype=torch.float32, device=q.device)
        m = torch.empty(B, H, splits, dtype=torch.float32, device=q.device)
        l = torch.empty_like(m)
        counters = split_counters(q.device, B * H)
    _decode_kernel[(B, H, splits)](q.contiguous(), k_cache, v_cache, block_tables, context_lens, out, partial, m, l,
                                   counters, D ** -0.5, block_tables.stride(0), NUM_HEADS=H,
                                   NUM_KV_HEADS=num_kv_heads, HEAD_DIM=D, BLOCK_SIZE=block_size, TILE=tile,
                                   SPLITS=splits, SPLITS_POW2=triton.next_power_of_2(splits),
                                   CHUNK_TILES=launch.chunk_tiles, num_warps=launch.warps, STAGES=launch.stages,
                                   **pdl_args)
    return out
