"""Per-request state inside the engine (nano-vllm's sequence.py): token ids, KV block table, status.

Knows nothing about text. A Sequence is owned by the engine thread; other threads only read
`seq_id` and call Engine.abort().
"""
from __future__ import annotations

import itertools
from enum import Enum

from ..engine_api import FinishReason, SamplingParams
from ..errors import InvalidRequest


class SequenceStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


_seq_ids = itertools.count()

# Stands in Sequence.output_ids for a token whose step is still in flight on the device (engine overlap);
# never a real id, never fed to the model (the runner takes that token from the device instead).
PENDING_TOKEN = -1


class Sequence:
    """One request's tokens and KV placement. Internal ids only: client ids are never trusted as keys."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams):
        if not prompt_ids:
            raise InvalidRequest("input_ids", "empty prompt")
        self.seq_id = next(_seq_ids)
        self.prompt_ids = list(prompt_ids)
        self.output_ids: list[int] = []
        self.params = params
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []  # physical KV block per logical block
        self.num_cached_tokens = 0  # leading tokens whose K/V are written in the cache
        self.finish_reason: FinishReason | None = None

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def last_token_id(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]

    @property
    def num_uncached_tokens(self) -> int:
        return len(self) - self.num_cached_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def has_pending_token(self) -> bool:
        return bool(self.output_ids) and self.output_ids[-1] == PENDING_TOKEN

    def num_blocks_needed(self, block_size: int) -> int:
        return (len(self) + block_size - 1) // block_size
