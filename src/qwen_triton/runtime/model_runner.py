"""Runs one ScheduleOutput through the model: builds flat inputs and cache slots, owns the paged KV cache.
Reads sequences, never mutates them (the scheduler commits what was cached)."""
from __future__ import annotations

import math

import torch

from ..config import EngineFolder
from ..models.qwen import AttentionBatch
from .loader import TORCH_DTYPES, load_model
from .schedule import ScheduleOutput

GPU_MEMORY_FRACTION = 0.85  # of the memory free after weights, given to the KV cache


def pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(engine_dtype: str, device: torch.device, override: str | None) -> torch.dtype:
    if override:
        return TORCH_DTYPES[override]
    if device.type == "cuda" and engine_dtype == "float32":
        return torch.float16
    return TORCH_DTYPES[engine_dtype]


class ModelRunner:
    def __init__(self, folder: EngineFolder, device: str | None = None, dtype: str | None = None):
        self.config = folder.config
        self.device = pick_device(device)
        self.dtype = pick_dtype(folder.config.limits.dtype, self.device, dtype)
        self.block_size = folder.config.limits.block_size
        self.model = load_model(folder, self.device, self.dtype)
        self.num_kv_blocks = self._kv_blocks()
        m = folder.config.model
        # One tensor for all layers: (layers, 2, num_blocks, block_size, Hkv, D).
        self.kv_cache = torch.zeros(m.num_hidden_layers, 2, self.num_kv_blocks, self.block_size,
                                    m.num_key_value_heads, m.head_dim, device=self.device, dtype=self.dtype)
        self.kv_caches = [(self.kv_cache[i, 0], self.kv_cache[i, 1]) for i in range(m.num_hidden_layers)]

    def _kv_blocks(self) -> int:
        limits, m = self.config.limits, self.config.model
        enough = limits.max_batch_size * math.ceil(limits.max_seq_len / self.block_size)
        if self.device.type != "cuda":
            return enough
        free, _ = torch.cuda.mem_get_info(self.device)
        bytes_per_block = 2 * m.num_hidden_layers * self.block_size * m.num_key_value_heads * m.head_dim \
            * torch.tensor([], dtype=self.dtype).element_size()
        return max(1, min(enough * 4, int(free * GPU_MEMORY_FRACTION) // bytes_per_block))

    def _slots(self, block_table: list[int], start: int, end: int) -> list[int]:
        bs = self.block_size
        return [block_table[p // bs] * bs + p % bs for p in range(start, end)]

    def _prefill_inputs(self, seqs):
        ids, positions, slots, lens = [], [], [], []
        for seq in seqs:
            n = len(seq)
            ids.extend(seq.token_ids)
            positions.extend(range(n))
            slots.extend(self._slots(seq.block_table, 0, n))
            lens.append(n)
        last = torch.tensor(lens).cumsum(0) - 1
        batch = AttentionBatch(True, self._tensor(slots), seq_lens=tuple(lens))
        return self._tensor(ids), self._tensor(positions), batch, last.to(self.device)

    def _decode_inputs(self, seqs):
        max_blocks = max(len(seq.block_table) for seq in seqs)
        tables = [seq.block_table + [0] * (max_blocks - len(seq.block_table)) for seq in seqs]
        batch = AttentionBatch(False, self._tensor([self._slots(s.block_table, len(s) - 1, len(s))[0] for s in seqs]),
                               block_tables=self._tensor(tables), context_lens=self._tensor([len(s) for s in seqs]))
        ids = self._tensor([s.last_token_id for s in seqs])
        positions = self._tensor([len(s) - 1 for s in seqs])
        return ids, positions, batch, torch.arange(len(seqs), device=self.device)

    def _tensor(self, values) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def execute(self, schedule: ScheduleOutput) -> torch.Tensor:
        seqs = schedule.sequences
        build = self._prefill_inputs if schedule.is_prefill else self._decode_inputs
        ids, positions, batch, last = build(seqs)
        hidden = self.model(ids, positions, batch, self.kv_caches)
        return self.model.compute_logits(hidden[last]).float()  # (N, vocab)
