"""Continuous batching: admits waiting sequences, decodes running ones, preempts when KV blocks run out.
Torch-free; returns a ScheduleOutput. A prefill computes a sequence from its first token not in the cache:
token 0, or past the blocks the block manager found cached (enable_kv_cache_reuse); no chunking. A preempted
sequence loses its blocks and is computed again (from what of it is still cached).

Mixed steps (mixed_prefill_tokens > 0, when the runner can run them): while sequences are decoding, the
next waiting one joins a decode step if it has at most mixed_prefill_tokens tokens, so the running
sequences do not stall for a prefill step of their own. A longer one, an idle engine, or more than
mixed_max_waiting waiting prompts (when set) get a prefill step."""
from __future__ import annotations

from collections import deque

from ..config import EngineLimits
from ..errors import InvalidRequest
from .block_manager import BlockManager
from .sequence import Sequence, SequenceStatus
from .schedule_output import ScheduleOutput


class Scheduler:
    def __init__(self, limits: EngineLimits, num_kv_blocks: int, mixed_prefill_tokens: int = 0):
        self.limits = limits
        self.mixed_prefill_tokens = mixed_prefill_tokens
        self.blocks = BlockManager(num_kv_blocks, limits.block_size, reuse=limits.enable_kv_cache_reuse)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        self.check_fits(seq)
        self.waiting.append(seq)

    def check_fits(self, seq: Sequence) -> None:
        """Reject a prompt that can never be scheduled. Reads only immutable limits: safe from any thread."""
        n, limits = len(seq.prompt_ids), self.limits
        if n > limits.max_input_len:
            raise InvalidRequest("input_ids", f"prompt is {n} tokens; this engine accepts at most {limits.max_input_len}")
        if seq.num_blocks_needed(limits.block_size) + 1 > self.blocks.num_blocks:
            raise InvalidRequest("input_ids", f"prompt of {n} tokens needs more KV blocks than the cache has")

    def schedule(self) -> ScheduleOutput:
        if self._can_mix():
            decode = self._decode()
            if decode.preempted or not decode.decode:  # no KV room to spare, or nothing to decode yet
                return decode
            return ScheduleOutput(prefill=tuple(self._admit(max_seqs=1)), decode=decode.decode)
        prefill = self._admit()
        if prefill:
            return ScheduleOutput(prefill=tuple(prefill))
        return self._decode()

    def _can_mix(self) -> bool:
        queue_cap = self.limits.mixed_max_waiting
        return (0 < len(self.running) < self.limits.max_batch_size and bool(self.waiting)
                and len(self.waiting[0]) <= self.mixed_prefill_tokens
                and (queue_cap == 0 or len(self.waiting) <= queue_cap)
                and any(self._wants_decode(seq) for seq in self.running))

    def _admit(self, max_seqs: int | None = None) -> list[Sequence]:
        admitted, tokens = [], 0
        while self.waiting and len(self.running) < self.limits.max_batch_size and len(admitted) != max_seqs:
            seq = self.waiting[0]
            # The first admission ignores the token budget: a preempted sequence (prompt + outputs)
            # may exceed it and must not starve.
            over_budget = admitted and tokens + len(seq) > self.limits.max_num_batched_tokens
            if over_budget or not self.blocks.can_allocate(seq):
                break
            self.waiting.popleft()
            self.blocks.allocate(seq)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            admitted.append(seq)
            tokens += len(seq)
        return admitted

    def _wants_decode(self, seq: Sequence) -> bool:
        # With the engine's overlap a sequence's last tokens may still be in flight: once every token it
        # may generate is scheduled it waits (running, holding its blocks) until the engine settles it.
        return len(seq.output_ids) < seq.params.max_tokens and len(seq) < self.limits.max_seq_len

    def can_decode_without_preemption(self) -> bool:
        """True when a decode step now would find a KV slot for every running sequence (read-only)."""
        bs = self.blocks.block_size
        needing = sum(1 for seq in self.running
                      if self._wants_decode(seq) and (len(seq) - 1) // bs >= len(seq.block_table))
        return needing <= self.blocks.num_free_blocks

    def _decode(self) -> ScheduleOutput:
        scheduled, preempted = [], []
        for seq in list(self.running):
            if seq not in self.running or not self._wants_decode(seq):  # preempted below, or all scheduled
                continue
            while not self.blocks.can_append(seq):
                victim = self.running[-1]
                self._preempt(victim)
                preempted.append(victim)
                if victim is seq:
                    break
            else:
                self.blocks.may_append(seq)
                scheduled.append(seq)
        return ScheduleOutput(decode=tuple(scheduled), preempted=tuple(preempted))

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.deallocate(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)

    def commit(self, schedule: ScheduleOutput) -> None:
        """After the step ran: every scheduled sequence's K/V is cached up to its current length."""
        for seq in schedule.sequences:
            seq.num_cached_tokens = len(seq)

    def finish(self, seq: Sequence) -> None:
        if seq.status is SequenceStatus.FINISHED:
            return
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.deallocate(seq)
        seq.status = SequenceStatus.FINISHED
