"""CUDA graphs of the decode step (forward + logits), one per (batch bucket, KV-block bucket), captured
largest first into one memory pool (nano-vllm's capture_cudagraph). Replaying one graph replaces hundreds
of kernel launches: at batch 1 a 7B decode step is launch-bound without it.

Padded rows write their K/V to a scratch block the scheduler never hands out, so they corrupt nothing.
"""
from __future__ import annotations

import torch

from ..models.qwen import AttentionBatch

BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128)
BLOCK_BUCKETS = (16, 32, 64, 128)  # x block_size tokens of context read per sequence


class DecodeGraphs:
    def __init__(self, model, kv_caches, max_batch: int, max_blocks: int, scratch_slot: int, device,
                 paged_attention_kernel: bool = False):
        self.batch_buckets = [b for b in BATCH_BUCKETS if b <= max_batch]
        # The paged kernel reads only live blocks, so one full-width table serves every context length;
        # the SDPA fallback gathers the whole table, so it gets context buckets.
        buckets = (max_blocks,) if paged_attention_kernel else (*BLOCK_BUCKETS, max_blocks)
        self.block_buckets = sorted({min(b, max_blocks) for b in buckets})
        self.scratch_slot = scratch_slot
        top = self.batch_buckets[-1]
        long = dict(dtype=torch.long, device=device)
        self.ids = torch.zeros(top, **long)
        self.positions = torch.zeros(top, **long)
        self.slots = torch.full((top,), scratch_slot, **long)
        self.tables = torch.zeros(top, max_blocks, **long)
        self.lens = torch.ones(top, **long)
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        pool = None
        for bs in reversed(self.batch_buckets):
            for nb in reversed(self.block_buckets):
                graph, logits = self._capture(model, kv_caches, bs, nb, pool)
                pool = graph.pool()
                self.graphs[(bs, nb)] = (graph, logits)

    def _capture(self, model, kv_caches, bs: int, nb: int, pool):
        batch = AttentionBatch(False, self.slots[:bs], block_tables=self.tables[:bs, :nb], context_lens=self.lens[:bs])

        def step():
            hidden = model(self.ids[:bs], self.positions[:bs], batch, kv_caches)
            return model.compute_logits(hidden)

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            step()  # warm-up outside the graph (allocator, kernels chosen)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            logits = step()
        return graph, logits

    def bucket(self, batch_size: int, blocks: int) -> tuple[int, int] | None:
        bs = next((b for b in self.batch_buckets if b >= batch_size), None)
        nb = next((b for b in self.block_buckets if b >= blocks), None)
        return None if bs is None or nb is None else (bs, nb)

    def run(self, key, ids, positions, slots, tables, lens) -> torch.Tensor:
        """Inputs for n <= key's batch rows; returns (n, vocab) logits."""
        n, width = tables.shape
        self.ids.zero_()
        self.positions.zero_()
        self.slots.fill_(self.scratch_slot)
        self.lens.fill_(1)
        self.ids[:n], self.positions[:n], self.slots[:n], self.lens[:n] = ids, positions, slots, lens
        self.tables[:n, :width] = tables
        self.tables[:n, width:] = 0
        graph, logits = self.graphs[key]
        graph.replay()
        return logits[:n]
