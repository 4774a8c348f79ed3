"""What the scheduler decided for one engine step (read by the model runner and the engine)."""
from __future__ import annotations

from dataclasses import dataclass

from .sequence import Sequence


@dataclass(frozen=True)
class ScheduleOutput:
    # Sequences whose tokens are computed this step from seq.num_cached_tokens on (0 unless a prefix was
    # found in the cache); no chunking.
    prefill: tuple[Sequence, ...] = ()
    # Sequences that compute exactly one token (their last) this step. A step with both is mixed: the
    # decodes and one short prefill share one pass over the weights.
    decode: tuple[Sequence, ...] = ()
    # Sequences pushed back to waiting this step to free KV blocks; their blocks are gone and they are
    # computed again (prompt + outputs so far, less any prefix still cached) when rescheduled.
    preempted: tuple[Sequence, ...] = ()

    @property
    def sequences(self) -> tuple[Sequence, ...]:
        """Logit row order: the decodes, then each prefill's last token."""
        return self.decode + self.prefill

    @property
    def is_prefill(self) -> bool:
        return bool(self.prefill) and not self.decode

    @property
    def is_mixed(self) -> bool:
        return bool(self.prefill) and bool(self.decode)

    @property
    def is_empty(self) -> bool:
        return not self.prefill and not self.decode
