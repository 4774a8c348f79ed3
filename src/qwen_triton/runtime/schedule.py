"""What the scheduler decided for one engine step (read by the model runner and the engine)."""
from __future__ import annotations

from dataclasses import dataclass

from .request import Sequence


@dataclass(frozen=True)
class ScheduleOutput:
    # Sequences whose uncached tokens (seq.token_ids[seq.num_cached_tokens:]) are computed this
    # step; a step is either all prefill or all decode (nano-vllm), never both.
    prefill: tuple[Sequence, ...] = ()
    # Sequences that compute exactly one token (their last) this step.
    decode: tuple[Sequence, ...] = ()
    # Sequences pushed back to waiting this step to free KV blocks; their cache is gone
    # and they are recomputed from scratch (prompt + outputs so far) when rescheduled.
    preempted: tuple[Sequence, ...] = ()

    @property
    def sequences(self) -> tuple[Sequence, ...]:
        return self.prefill or self.decode

    @property
    def is_prefill(self) -> bool:
        return bool(self.prefill)

    @property
    def is_empty(self) -> bool:
        return not self.prefill and not self.decode
