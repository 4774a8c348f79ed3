"""Runs one ScheduleOutput through the model: owns the paged KV cache tensor, turns sequences into flat inputs
and cache slots, returns float32 logits. It reads sequences and must never mutate them (the scheduler commits
what was cached) nor decide which blocks a sequence gets."""
from __future__ import annotations

import itertools
import math
from dataclasses import replace

import torch

from ..config import EngineFolder
from ..errors import ConfigError
from ..models.ops import check_operands
from ..models.qwen import AttentionBatch
from .loader import TORCH_DTYPES, load_model
from .schedule_output import ScheduleOutput
from .staging import PinnedStaging
from .token_feed import TokenFeed

# More prompts at once prefill eagerly in one batch: a replay per prompt reads the weights once each, which
# outgrows the host cost of one eager batch's launches.
MAX_PREFILL_REPLAYS = 4


def _fresh_float(graph_logits: torch.Tensor) -> torch.Tensor:
    # Always a copy: a graph's output buffer is rewritten by its next replay, and .float() on float32
    # logits would return that buffer itself.
    return graph_logits.to(torch.float32, copy=True)


def pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(engine_dtype: str, device: torch.device, override: str | None) -> torch.dtype:
    if override:
        if override not in TORCH_DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(TORCH_DTYPES)}, got {override!r}")
        return TORCH_DTYPES[override]
    if device.type == "cuda" and engine_dtype == "float32":
        return torch.float16  # float32 weights on a GPU: serve in half precision
    return TORCH_DTYPES[engine_dtype]


class ModelRunner:
    def __init__(self, folder: EngineFolder, device: str | None = None, dtype: str | None = None,
                 use_cuda_graphs: bool = True):
        self.config = folder.config
        self.device = pick_device(device)
        self.dtype = pick_dtype(folder.config.limits.dtype, self.device, dtype)
        self.block_size = folder.config.limits.block_size
        self.model = load_model(folder, self.device, self.dtype)
        self.staging = PinnedStaging(self.device)
        self.num_kv_blocks = self._kv_blocks()  # measured after the weights are on the device
        m = folder.config.model
        # (layers, 2 = K/V, num_kv_blocks + 1, block_size, Hkv, D). The extra last block is scratch for
        # CUDA-graph padding rows and is never handed to a sequence (the scheduler sees num_kv_blocks).
        self.kv_cache = torch.zeros(m.num_hidden_layers, 2, self.num_kv_blocks + 1, self.block_size,
                                    m.num_key_value_heads, m.head_dim, device=self.device, dtype=self.dtype)
        self.kv_caches = [(self.kv_cache[i, 0], self.kv_cache[i, 1]) for i in range(m.num_hidden_layers)]
        # Once, here: the CUDA ops read weights and caches as dense memory of the model's dtype (models/ops.py).
        caches = ((f"kv_cache[{i}][{j}]", c) for i, pair in enumerate(self.kv_caches) for j, c in enumerate(pair))
        check_operands(self.model.ops, [*self.model.named_parameters(), *caches], self.dtype)
        check_operands(self.model.ops, self.model.named_buffers(), None)  # quantized weights keep their dtypes
        self.prefill_graphs, self.graphs, self.mixed_graphs = self._capture_graphs(use_cuda_graphs)
        # Read by the scheduler: the longest prompt a decode step can take in (0: no mixed steps). Only
        # graphed: eager, a mixed step's launches would cost the host more than the prefill step they save.
        self.mixed_prefill_tokens = self.mixed_graphs.token_buckets[-1] if self.mixed_graphs else 0

    def _capture_graphs(self, enabled: bool):
        if not enabled or self.device.type != "cuda":
            return None, None, None
        from .cuda_graphs import DecodeGraphs, MixedGraphs, PrefillGraphs

        limits, scratch = self.config.limits, self.num_kv_blocks * self.block_size
        max_blocks = math.ceil(limits.max_seq_len / self.block_size)
        paged = self.model.ops.paged_decode
        with torch.inference_mode():
            prefill = PrefillGraphs(self.model, self.kv_caches, limits.max_input_len, scratch, self.device)
            decode = DecodeGraphs(self.model, self.kv_caches, limits.max_batch_size, max_blocks, scratch, self.device,
                                  paged_attention_kernel=paged, pool=prefill.pool)
            mixed_tokens = min(limits.mixed_prefill_tokens, limits.max_input_len)
            mixed = MixedGraphs(self.model, self.kv_caches, limits.max_batch_size, mixed_tokens, max_blocks,
                                scratch, self.device, pool=prefill.pool) if paged and mixed_tokens else None
        return prefill, decode, mixed

    def _kv_blocks(self) -> int:
        limits, m = self.config.limits, self.config.model
        per_seq = math.ceil(limits.max_seq_len / self.block_size)
        # Running sequences never hold more than this; without prefix reuse more blocks would only take memory
        # from activations and CUDA graphs, with it (on CUDA) they keep more finished prefixes.
        enough = limits.max_batch_size * per_seq
        if self.device.type != "cuda":
            return enough
        free, _ = torch.cuda.mem_get_info(self.device)
        element = torch.tensor([], dtype=self.dtype).element_size()
        bytes_per_block = 2 * m.num_hidden_layers * self.block_size * m.num_key_value_heads * m.head_dim * element
        budget = int(free * limits.kv_cache_free_gpu_mem_fraction) // bytes_per_block - 1  # minus the scratch block
        if budget < per_seq:
            raise ConfigError(f"KV cache: {budget} blocks fit in {free / 2**30:.1f} GiB free, one sequence of "
                              f"max_seq_len {limits.max_seq_len} needs {per_seq}; lower max_seq_len or free memory")
        return budget if limits.enable_kv_cache_reuse else min(enough, budget)

    def _slots(self, block_table: list[int], start: int, end: int) -> list[int]:
        bs = self.block_size
        if len(block_table) * bs < end:
            raise RuntimeError(f"block table of {len(block_table)} blocks cannot hold {end} tokens")
        return [block_table[p // bs] * bs + p % bs for p in range(start, end)]

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return self.staging.to_device(values)  # asynchronous: never waits for the step in flight

    def _prefill_inputs(self, seqs):
        # Each sequence is computed from seq.num_cached_tokens on: 0, or past a prefix the block manager
        # found cached (a preempted sequence lost its blocks; what it reuses was remembered when it let go).
        ids, positions, slots, lens, cached = [], [], [], [], []
        for seq in seqs:
            if seq.has_pending_token:
                raise RuntimeError(f"sequence {seq.seq_id} prefilled with a token still in flight")
            start, n = seq.num_cached_tokens, len(seq)
            ids.extend(seq.token_ids[start:])
            positions.extend(range(start, n))
            slots.extend(self._slots(seq.block_table, start, n))
            lens.append(n - start)
            cached.append(start)
        last = [end - 1 for end in itertools.accumulate(lens)]  # row of each sequence's last token
        T, P = len(ids), len(seqs)
        if not any(cached):
            ids, positions, slots, last = self._tensor(ids + positions + slots + last).split([T, T, T, P])
            return ids, positions, AttentionBatch.prefill(slots, tuple(lens)), last
        width = max(len(seq.block_table) for seq in seqs)
        tables = [block for seq in seqs for block in seq.block_table + [0] * (width - len(seq.block_table))]
        ids, positions, slots, last, tables = self._tensor(ids + positions + slots + last + tables).split(
            [T, T, T, P, P * width])
        return ids, positions, AttentionBatch.prefill(slots, tuple(lens), tuple(cached), tables.view(P, width)), last

    def _decode_inputs(self, seqs, feed: TokenFeed | None):
        # Only the last token is computed, at position len(seq) - 1; the rest is read from the cache.
        # All inputs travel in one host-to-device copy: [ids, positions, slots, lens, fed rows, fed
        # sources, tables (B, width)].
        B, width = len(seqs), max(len(seq.block_table) for seq in seqs)
        ids, positions, slots, lens, fed, sources, tables = [], [], [], [], [], [], []
        for row, seq in enumerate(seqs):
            n = len(seq)
            ids.append(max(seq.last_token_id, 0))
            positions.append(n - 1)
            slots.append(self._slots(seq.block_table, n - 1, n)[0])
            lens.append(n)
            tables += seq.block_table
            tables += [0] * (width - len(seq.block_table))
            if seq.has_pending_token:  # its last token is still in flight: taken from the step before's ids
                fed.append(row)
                sources.append(feed.rows[seq.seq_id])
        packed = self._tensor(ids + positions + slots + lens + fed + sources + tables)
        ids, positions, slots, lens, fed, sources, tables = packed.split([B] * 4 + [len(fed)] * 2 + [B * width])
        if len(fed):
            ids[fed] = feed.tokens[sources]
        batch = AttentionBatch.decode(slots, tables.view(B, width), lens)
        return ids, positions, batch, None

    def _mixed(self, schedule: ScheduleOutput, feed: TokenFeed | None) -> torch.Tensor:
        """The decodes and one prefill in one pass: (B + 1, vocab) float32 logits in schedule.sequences order."""
        if len(schedule.prefill) != 1:
            raise ValueError(f"a mixed step prefills one sequence, got {len(schedule.prefill)}")
        d_ids, d_positions, d_batch, _ = self._decode_inputs(schedule.decode, feed)
        p_ids, p_positions, p_batch, p_last = self._prefill_inputs(schedule.prefill)
        B = d_batch.num_decode
        graphable = self.mixed_graphs is not None and p_batch.prefill_tables is None  # graphs prefill from token 0
        key = self.mixed_graphs.bucket(B, p_ids.shape[0]) if graphable else None
        if key is not None:
            decode = (d_ids, d_positions, d_batch.slot_mapping, d_batch.block_tables, d_batch.context_lens)
            # run() already returns a new tensor (rows gathered out of the graph's buffer): no second copy.
            return self.mixed_graphs.run(key, decode, (p_ids, p_positions, p_batch.slot_mapping)).float()
        batch = replace(AttentionBatch.decode(torch.cat((d_batch.slot_mapping, p_batch.slot_mapping)),
                                              d_batch.block_tables, d_batch.context_lens, prefill_lens=p_batch.seq_lens),
                        cached_lens=p_batch.cached_lens, prefill_tables=p_batch.prefill_tables)
        last = torch.cat((torch.arange(B, device=p_last.device), p_last + B))  # (B + 1,) rows
        return self._forward(torch.cat((d_ids, p_ids)), torch.cat((d_positions, p_positions)), batch, last)

    def _graphed_prefill(self, seqs) -> torch.Tensor | None:
        """(N, vocab) float32 logits from one prefill-graph replay per sequence, or None when a sequence has
        no bucket (a preempted one longer than max_input_len). Replays beat one eager batched prefill: its
        hundreds of launches cost the host more than a replay's extra weight pass costs the GPU."""
        if self.prefill_graphs is None or len(seqs) > MAX_PREFILL_REPLAYS:
            return None
        buckets = [self.prefill_graphs.bucket(len(seq)) for seq in seqs]
        if None in buckets or any(seq.num_cached_tokens for seq in seqs):  # graphs prefill from token 0
            return None
        logits = None
        for row, (seq, tokens) in enumerate(zip(seqs, buckets)):
            ids, positions, batch, _ = self._prefill_inputs((seq,))
            out = self.prefill_graphs.run(tokens, ids, positions, batch.slot_mapping)  # (1, vocab), reused
            if logits is None:
                logits = torch.empty(len(seqs), out.shape[-1], dtype=torch.float32, device=out.device)
            logits[row] = out[0]  # copied before the next replay rewrites out (same stream)
        return logits

    @torch.inference_mode()
    def execute(self, schedule: ScheduleOutput, feed: TokenFeed | None = None) -> torch.Tensor:
        """(N, vocab_size) float32 logits; row i is the last position of schedule.sequences[i]. Asynchronous
        on CUDA. A sequence whose last token is PENDING_TOKEN takes it from feed (the step before's ids)."""
        if schedule.is_empty:
            raise ValueError("execute() on an empty schedule")
        if schedule.is_prefill:
            graphed = self._graphed_prefill(schedule.prefill)
            if graphed is not None:
                return graphed
            ids, positions, batch, last = self._prefill_inputs(schedule.prefill)
        elif schedule.is_mixed:
            return self._mixed(schedule, feed)
        else:
            ids, positions, batch, last = self._decode_inputs(schedule.decode, feed)
            key = self.graphs.bucket(batch.num_decode, batch.block_tables.shape[1]) if self.graphs else None
            if key is not None:
                return _fresh_float(self.graphs.run(key, ids, positions, batch.slot_mapping, batch.block_tables,
                                                    batch.context_lens))
        return self._forward(ids, positions, batch, last)

    def _forward(self, ids, positions, batch, last) -> torch.Tensor:
        hidden = self.model(ids, positions, batch, self.kv_caches)  # (T, hidden)
        rows = hidden if last is None else hidden[last]  # (N, hidden)
        return self.model.compute_logits(rows).float()
