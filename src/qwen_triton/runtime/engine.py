"""The engine loop: in-flight batching on its own thread. Requests join between steps, finished and
cancelled ones leave at once (their KV blocks freed). Knows token ids only, never text.

Overlap: when every running sequence samples greedily on the device, step N+1 is launched before step N's
tokens are read; its input ids come from step N's ids on the device (TokenFeed), and step N's tokens are
settled (stop checks, events) while the GPU computes step N+1. Until then they stand as PENDING_TOKEN in
output_ids. The engine settles first (no overlap) before any step that could preempt or sample on the host,
since those read every token id.

Thread model: submit()/abort() may be called from any thread and only touch the lock-protected inbox;
everything else (scheduler, sequences, sampler) belongs to the engine thread.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..config import EngineLimits
from ..engine_api import EngineStats, FinishReason, SamplingParams, Sink, TokenEvent  # noqa: F401
from .sequence import PENDING_TOKEN, Sequence
from .sampler import Sampler
from .schedule_output import ScheduleOutput
from .scheduler import Scheduler
from .staging import HostRing
from .token_feed import PendingTokens, TokenFeed

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _InFlight:
    """A launched step whose sampled ids have not been read yet."""

    seqs: tuple[Sequence, ...]
    output_index: tuple[int, ...]  # where row i's token goes in seqs[i].output_ids
    feed: TokenFeed
    pending: PendingTokens


class Engine:
    def __init__(self, runner, limits: EngineLimits, sampler: Sampler | None = None,
                 on_stats: Callable[[EngineStats], None] | None = None, overlap: bool | None = None):
        self.runner = runner
        # Default: overlap on CUDA only. A CPU step computes while it is launched, so launching step N+1
        # before settling step N gains nothing and delays step N's tokens (a prompt's first token by a step).
        on_cuda = getattr(getattr(runner, "device", None), "type", "") == "cuda"
        self.overlap = on_cuda if overlap is None else overlap
        self._inflight: _InFlight | None = None
        self._host_ring = HostRing()  # sampled ids come back through it; at most two flights use it at once
        self.limits = limits
        self.sampler = sampler or Sampler(staging=getattr(runner, "staging", None))
        self.scheduler = Scheduler(limits, runner.num_kv_blocks, runner.mixed_prefill_tokens)
        self.on_stats = on_stats
        self._sinks: dict[int, Sink] = {}
        self._seqs: dict[int, Sequence] = {}
        self._inbox: list[tuple[Sequence, Sink]] = []
        self._aborts: set[int] = set()
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._idle = True  # the engine thread waits for work
        self._beat = time.monotonic()  # when the engine thread last woke up or finished a step
        self._last_stats: EngineStats | None = None
        self._last_step: dict = {"iteration": 0}  # EngineStats' last-step fields, replaced whole by each step
        self._report_stats()  # gauges show the idle engine (all KV blocks free) before any request

    def submit(self, prompt_ids: list[int], params: SamplingParams, sink: Sink) -> int:
        seq = Sequence(prompt_ids, params)
        self.scheduler.check_fits(seq)  # answered synchronously, before the request is queued
        with self._wake:
            self._inbox.append((seq, sink))
            self._wake.notify()
        return seq.seq_id

    def abort(self, seq_id: int) -> None:
        with self._wake:
            self._aborts.add(seq_id)
            self._wake.notify()

    def stats(self) -> EngineStats:
        blocks = self.scheduler.blocks
        return EngineStats(self.scheduler.num_running, self.scheduler.num_waiting, blocks.num_free_blocks,
                           max_running=self.limits.max_batch_size, max_kv_blocks=blocks.num_blocks,
                           used_kv_blocks=blocks.num_blocks - blocks.num_free_blocks,
                           tokens_per_kv_block=blocks.block_size, reused_kv_blocks=blocks.reused_blocks,
                           missed_kv_blocks=blocks.missed_blocks, **self._last_step)

    def _count_step(self, schedule: ScheduleOutput) -> None:
        """The step that just ran, for stats. Called before its tokens are appended and before the scheduler
        commits it, so a prefill computed len(seq) - num_cached_tokens tokens (no chunking)."""
        self._last_step = {"scheduled": len(schedule.sequences), "context": len(schedule.prefill),
                           "context_tokens": sum(len(seq) - seq.num_cached_tokens for seq in schedule.prefill),
                           "paused": len(schedule.preempted), "iteration": self._last_step["iteration"] + 1,
                           "timestamp_s": time.time()}

    def step(self) -> bool:
        self._drain_inbox()
        if self._inflight is not None and not self._can_overlap():
            self._settle_inflight()
        schedule = self.scheduler.schedule()
        if schedule.is_empty:
            busy = self._inflight is not None
            self._settle_inflight()
            self._report_stats()
            return busy
        on_device = self.overlap and all(self.sampler.on_device(seq) for seq in schedule.sequences)
        try:
            schedule, logits = self._execute_isolated(schedule)
            seqs = schedule.sequences
            if seqs and on_device:
                device_tokens = self.sampler.sample_on_device(logits, seqs)
            elif seqs:
                seqs, tokens = self._sample_isolated(logits, seqs)
        except Exception as exc:  # what is left of this step fails; the loop and the others go on
            logger.exception("engine step failed for %d sequences", len(schedule.sequences))
            for seq in schedule.sequences:
                self._fail(seq, exc)
            return True
        if not seqs:
            self._report_stats()
            return True
        self._count_step(schedule)
        self.scheduler.commit(schedule)
        previous = self._inflight
        self._inflight = self._launched(seqs, device_tokens) if on_device else None
        if previous is not None:
            self._settle_flight(previous)
        if not on_device:
            for seq, token in zip(seqs, tokens):
                seq.output_ids.append(token)
                self._settle(seq, len(seq.output_ids))
        self._report_stats()
        return True

    def _execute_isolated(self, schedule: ScheduleOutput):
        """runner.execute; when a step of several sequences raises, each runs alone, those that still raise
        fail, and the rest run again together (a sequence's K/V writes are the same each time). One request
        that breaks the forward pass fails alone. Returns (the schedule that ran, its logits)."""
        feed = self._inflight.feed if self._inflight else None
        try:
            return schedule, self.runner.execute(schedule, feed)
        except Exception:
            if len(schedule.sequences) == 1:
                raise
            logger.exception("engine step of %d sequences failed; running each alone", len(schedule.sequences))
        failed = set()
        for seq in schedule.sequences:
            alone = ScheduleOutput(prefill=(seq,)) if seq in schedule.prefill else ScheduleOutput(decode=(seq,))
            try:
                self.runner.execute(alone, feed)
            except Exception as exc:
                failed.add(seq.seq_id)
                self._fail(seq, exc)
        keep = lambda seqs: tuple(s for s in seqs if s.seq_id not in failed)  # noqa: E731
        schedule = ScheduleOutput(prefill=keep(schedule.prefill), decode=keep(schedule.decode),
                                  preempted=schedule.preempted)
        return schedule, (None if schedule.is_empty else self.runner.execute(schedule, feed))

    def _sample_isolated(self, logits, seqs) -> tuple[tuple[Sequence, ...], list[int]]:
        """Sampler.sample; when it raises for several rows, row by row, and the rows that raise fail alone."""
        try:
            return seqs, self.sampler.sample(logits, seqs)
        except Exception:
            if len(seqs) == 1:
                raise
            logger.exception("sampling %d sequences failed; sampling each alone", len(seqs))
        kept, tokens = [], []
        for row, seq in enumerate(seqs):
            try:
                tokens += self.sampler.sample(logits[row:row + 1], [seq])
                kept.append(seq)
            except Exception as exc:
                self._fail(seq, exc)
        return tuple(kept), tokens

    def _fail(self, seq: Sequence, exc: BaseException) -> None:
        if not seq.is_finished:
            self._finish(seq, FinishReason.ERROR, error=f"{type(exc).__name__}: {exc}")

    def _can_overlap(self) -> bool:
        return self.scheduler.can_decode_without_preemption() and all(
            self.sampler.on_device(seq) for seq in self.scheduler.running)

    def _launched(self, seqs, device_tokens) -> _InFlight:
        for seq in seqs:
            seq.output_ids.append(PENDING_TOKEN)
        feed = TokenFeed(device_tokens, {seq.seq_id: row for row, seq in enumerate(seqs)})
        return _InFlight(seqs, tuple(len(seq.output_ids) - 1 for seq in seqs), feed,
                         PendingTokens(device_tokens, self._host_ring))

    def _settle_inflight(self) -> None:
        flight, self._inflight = self._inflight, None
        if flight is not None:
            self._settle_flight(flight)

    def _settle_flight(self, flight: _InFlight) -> None:
        try:
            tokens = flight.pending.wait()
        except Exception as exc:  # a device error surfaces here; the step's requests fail
            logger.exception("engine step failed for %d sequences", len(flight.seqs))
            for seq in flight.seqs:
                if not seq.is_finished:
                    self._finish(seq, FinishReason.ERROR, error=f"{type(exc).__name__}: {exc}")
            return
        for seq, index, token in zip(flight.seqs, flight.output_index, tokens):
            if not seq.is_finished:  # finished (stop token, abort) while this step was in flight: dropped
                seq.output_ids[index] = token
                self._settle(seq, index + 1)

    def _drain_inbox(self) -> None:
        with self._wake:
            inbox, self._inbox = self._inbox, []
            aborts, self._aborts = self._aborts, set()
        for seq, sink in inbox:
            try:
                self.scheduler.add(seq)
            except Exception as exc:
                self._emit(sink, TokenEvent(seq.seq_id, (), FinishReason.ERROR, len(seq.prompt_ids), 0, str(exc)))
                continue
            self._sinks[seq.seq_id] = sink
            self._seqs[seq.seq_id] = seq
        for seq_id in aborts:
            seq = self._seqs.get(seq_id)
            if seq is not None:
                self._finish(seq, FinishReason.CANCELLED)

    def _settle(self, seq: Sequence, num_output: int) -> None:
        """output_ids[num_output - 1] is known now: emit it and finish the sequence if it ends there."""
        token, params = seq.output_ids[num_output - 1], seq.params
        finish = None
        if token in params.stop_token_ids:
            finish = FinishReason.STOP
        elif num_output >= params.max_tokens or len(seq.prompt_ids) + num_output >= self.limits.max_seq_len:
            finish = FinishReason.LENGTH
        logprob = self.sampler.logprobs.pop(seq.seq_id, None) if params.logprobs else None
        event = TokenEvent(seq.seq_id, (token,), finish, len(seq.prompt_ids), num_output,
                           logprobs=() if logprob is None else (logprob,))
        keep_going = self._emit(self._sinks[seq.seq_id], event)
        if finish is not None or not keep_going:
            del seq.output_ids[num_output:]  # tokens still in flight are dropped
            self._release(seq)

    def _finish(self, seq: Sequence, reason: FinishReason, error: str | None = None) -> None:
        while seq.has_pending_token:
            seq.output_ids.pop()
        sink = self._sinks.get(seq.seq_id)
        if sink is not None:
            self._emit(sink, TokenEvent(seq.seq_id, (), reason, len(seq.prompt_ids), len(seq.output_ids), error))
        self._release(seq)

    def _release(self, seq: Sequence) -> None:
        self.scheduler.finish(seq)
        self.sampler.release(seq.seq_id)
        self._sinks.pop(seq.seq_id, None)
        self._seqs.pop(seq.seq_id, None)

    @staticmethod
    def _emit(sink: Sink, event: TokenEvent) -> bool:
        try:
            return bool(sink(event))
        except Exception:
            logger.exception("response sink failed for sequence %d; dropping it", event.seq_id)
            return False

    def _report_stats(self) -> None:
        stats = self.stats()
        if self.on_stats is not None and stats != self._last_stats:
            self._last_stats = stats
            try:
                self.on_stats(stats)
            except Exception:
                logger.exception("stats callback failed")

    def has_unfinished(self) -> bool:
        with self._wake:
            return bool(self._inbox) or self.scheduler.has_unfinished()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="qwen-engine", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._wake:
                self._idle = True
                while not self._stop and not self._inbox and not self._aborts and not self.scheduler.has_unfinished():
                    self._wake.wait()
                self._idle, self._beat = False, time.monotonic()
                if self._stop:
                    break
            self.step()
            self._beat = time.monotonic()
        self._drain_inbox()
        self._inflight = None  # its tokens are dropped with their sequences
        for seq in list(self._seqs.values()):
            self._finish(seq, FinishReason.CANCELLED)

    def stalled_s(self) -> float:
        """Seconds the engine thread has been busy without finishing a step (or dead with work waiting);
        0 while it waits for work. Read by the serving watchdog from another thread."""
        return 0.0 if self._idle else time.monotonic() - self._beat

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
