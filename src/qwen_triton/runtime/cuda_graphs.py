"""CUDA graphs of the decode step (forward + logits), one per (batch bucket, KV-block bucket), captured
largest first into one memory pool (nano-vllm's capture_cudagraph). Replaying one graph replaces hundreds
of kernel launches: at batch 1 a 7B decode step is launch-bound without it. The model's ops were chosen at
load (models/ops.py) and launch a fixed set of kernels per shape, so a capture records exactly the eager step.

Padded rows write their K/V to a scratch block the scheduler never hands out, so they corrupt nothing.
"""
from __future__ import annotations

import gc

import torch

from ..models.qwen import AttentionBatch

BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128)
PREFILL_BUCKETS = (16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048)  # tokens of one sequence
# A mixed step's prompt rows ride on the decode step's weight pass, so their padding costs compute on every
# step that admits a prompt: finer buckets where served prompts are common (ShareGPT-like lengths), for fewer
# padding rows per prompt than PREFILL_BUCKETS give.
MIXED_TOKEN_BUCKETS = tuple(sorted({*PREFILL_BUCKETS, 96, 192, 320}))
BLOCK_BUCKETS = (16, 32, 64, 128)  # x block_size tokens of context read per sequence


def capture(step, pool):
    """(graph, output) of step() captured into pool, after one warm-up run outside the graph (allocator,
    kernels chosen)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    # No garbage collection inside a capture: an unreachable graph (an old runner's) destroyed mid-capture
    # invalidates the capture (cudaErrorStreamCaptureInvalidated, seen in tests/gpu).
    gc.collect()
    gc.disable()
    try:
        with torch.cuda.graph(graph, pool=pool):
            out = step()
    finally:
        gc.enable()
    return graph, out


class PrefillGraphs:
    """The prefill of one sequence (forward + its last row's logits), one graph per token bucket: eager, the
    hundreds of kernel launches of a prefill cost the host more than the GPU needs for a short prompt, and
    every running sequence waits for them. Padding tokens come after the real ones, so causal attention keeps
    them out of the real rows; they write their K/V to the scratch slot."""

    def __init__(self, model, kv_caches, max_tokens: int, scratch_slot: int, device):
        self.buckets = [b for b in PREFILL_BUCKETS if b < max_tokens] + [max_tokens]  # every prompt has one
        self.scratch_slot = scratch_slot
        top = self.buckets[-1]
        long = dict(dtype=torch.long, device=device)
        self.ids, self.positions = torch.zeros(top, **long), torch.zeros(top, **long)
        self.slots = torch.full((top,), scratch_slot, **long)
        self.last = torch.zeros(1, **long)  # row of the last real token
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = None
        for tokens in reversed(self.buckets):  # largest first: the smaller ones reuse its memory
            self.graphs[tokens] = self._capture(model, kv_caches, tokens)
            self.pool = self.graphs[tokens][0].pool()

    def _capture(self, model, kv_caches, tokens: int):
        batch = AttentionBatch.prefill(self.slots[:tokens], (tokens,))

        def step():
            hidden = model(self.ids[:tokens], self.positions[:tokens], batch, kv_caches)  # (tokens, hidden)
            return model.compute_logits(hidden[self.last])  # (1, vocab)

        return capture(step, self.pool)

    def bucket(self, num_tokens: int) -> int | None:
        return next((b for b in self.buckets if b >= num_tokens), None)

    def run(self, tokens: int, ids, positions, slots) -> torch.Tensor:
        """One sequence's n <= tokens ids, positions, slots -> (1, vocab) logits of its last token."""
        n = ids.shape[0]
        self.ids[:n], self.positions[:n], self.slots[:n] = ids, positions, slots
        self.ids[n:tokens] = 0
        self.positions[n:tokens] = 0
        self.slots[n:tokens] = self.scratch_slot
        self.last.fill_(n - 1)
        graph, logits = self.graphs[tokens]
        graph.replay()
        return logits


class _DecodeRows:
    """Static input buffers of decode rows (and extra_rows after them), shared by the decode and mixed
    graphs. Padding rows read block 0 for one token and write their K/V to the scratch slot."""

    def __init__(self, max_batch: int, extra_rows: int, max_blocks: int, scratch_slot: int, device):
        self.batch_buckets = [b for b in BATCH_BUCKETS if b <= max_batch]
        top = self.batch_buckets[-1]
        long = dict(dtype=torch.long, device=device)
        self.scratch_slot = scratch_slot
        self.ids, self.positions = torch.zeros(top + extra_rows, **long), torch.zeros(top + extra_rows, **long)
        self.slots = torch.full((top + extra_rows,), scratch_slot, **long)
        self.tables, self.lens = torch.zeros(top, max_blocks, **long), torch.ones(top, **long)

    def put(self, ids, positions, slots, tables, lens) -> int:
        """Rows [0, n) from the inputs, every other row padding; returns n."""
        n, width = tables.shape
        self.ids.zero_()
        self.positions.zero_()
        self.slots.fill_(self.scratch_slot)
        self.lens.fill_(1)
        self.ids[:n], self.positions[:n], self.slots[:n], self.lens[:n] = ids, positions, slots, lens
        self.tables[:n, :width] = tables
        self.tables[:n, width:] = 0
        return n

    def _capture_grid(self, model, kv_caches, inner_buckets, pool) -> dict:
        """One graph per (batch bucket, inner bucket), largest first so the smaller ones reuse its pool."""
        graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        for bs in reversed(self.batch_buckets):
            for inner in reversed(inner_buckets):
                graph, logits = self._capture(model, kv_caches, bs, inner, pool)
                pool = graph.pool()
                graphs[(bs, inner)] = (graph, logits)
        return graphs

    def _grid_bucket(self, batch_size: int, inner: int, inner_buckets) -> tuple[int, int] | None:
        bs = next((b for b in self.batch_buckets if b >= batch_size), None)
        fit = next((b for b in inner_buckets if b >= inner), None)
        return None if bs is None or fit is None else (bs, fit)


class DecodeGraphs(_DecodeRows):
    def __init__(self, model, kv_caches, max_batch: int, max_blocks: int, scratch_slot: int, device,
                 paged_attention_kernel: bool = False, pool=None):
        # The paged kernel reads only live blocks, so one full-width table serves every context length;
        # the SDPA fallback gathers the whole table, so it gets context buckets.
        buckets = (max_blocks,) if paged_attention_kernel else (*BLOCK_BUCKETS, max_blocks)
        self.block_buckets = sorted({min(b, max_blocks) for b in buckets})
        super().__init__(max_batch, 0, max_blocks, scratch_slot, device)
        self.graphs = self._capture_grid(model, kv_caches, self.block_buckets, pool)

    def _capture(self, model, kv_caches, bs: int, nb: int, pool):
        batch = AttentionBatch.decode(self.slots[:bs], self.tables[:bs, :nb], self.lens[:bs])

        def step():
            hidden = model(self.ids[:bs], self.positions[:bs], batch, kv_caches)
            return model.compute_logits(hidden)

        return capture(step, pool)

    def bucket(self, batch_size: int, blocks: int) -> tuple[int, int] | None:
        return self._grid_bucket(batch_size, blocks, self.block_buckets)

    def run(self, key, ids, positions, slots, tables, lens) -> torch.Tensor:
        """Inputs for n <= key's batch rows; returns (n, vocab) logits."""
        n = self.put(ids, positions, slots, tables, lens)
        graph, logits = self.graphs[key]
        graph.replay()
        return logits[:n]


class MixedGraphs(_DecodeRows):
    """A decode step with one short prefill in the same pass over the weights, one graph per (batch bucket,
    prefill token bucket). Rows [0, bs) decode (padding rows as in DecodeGraphs), rows [bs, bs + tokens) the
    prefill (padding after its real tokens, as in PrefillGraphs). Needs the paged kernel's full-width tables."""

    def __init__(self, model, kv_caches, max_batch: int, max_tokens: int, max_blocks: int, scratch_slot: int,
                 device, pool=None):
        self.token_buckets = [b for b in MIXED_TOKEN_BUCKETS if b < max_tokens] + [max_tokens]
        super().__init__(max_batch, self.token_buckets[-1], max_blocks, scratch_slot, device)
        self.arange = torch.arange(self.batch_buckets[-1], dtype=torch.long, device=device)
        self.last = torch.zeros(1, dtype=torch.long, device=device)  # row of the prefill's last token
        self.graphs = self._capture_grid(model, kv_caches, self.token_buckets, pool)

    def _capture(self, model, kv_caches, bs: int, tokens: int, pool):
        T = bs + tokens
        batch = AttentionBatch.decode(self.slots[:T], self.tables[:bs], self.lens[:bs], prefill_lens=(tokens,))

        def step():
            hidden = model(self.ids[:T], self.positions[:T], batch, kv_caches)  # (T, hidden)
            return model.compute_logits(hidden[torch.cat((self.arange[:bs], self.last))])  # (bs + 1, vocab)

        return capture(step, pool)

    def bucket(self, batch_size: int, prefill_tokens: int) -> tuple[int, int] | None:
        return self._grid_bucket(batch_size, prefill_tokens, self.token_buckets)

    def run(self, key, decode: tuple, prefill: tuple) -> torch.Tensor:
        """decode: (ids, positions, slots, tables, lens) of n rows; prefill: (ids, positions, slots) of one
        sequence. Returns (n + 1, vocab) logits: the decodes, then the prefill's last token."""
        bs, m = key[0], prefill[0].shape[0]
        n = self.put(*decode)
        self.ids[bs:bs + m], self.positions[bs:bs + m], self.slots[bs:bs + m] = prefill
        self.last.fill_(bs + m - 1)
        graph, logits = self.graphs[key]
        graph.replay()
        return torch.cat((logits[:n], logits[bs:]))  # a new tensor: the graph's buffer is rewritten next replay
