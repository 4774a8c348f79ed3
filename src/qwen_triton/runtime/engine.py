"""The engine loop: in-flight batching on its own thread. Requests join between steps, finished and
cancelled ones leave at once (their KV blocks freed). Knows token ids only, never text.

Thread model: submit()/abort() may be called from any thread and only touch the lock-protected inbox;
everything else (scheduler, sequences, sampler) belongs to the engine thread.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from ..config import EngineLimits
from .request import FinishReason, SamplingParams, Sequence
from .sampler import Sampler
from .scheduler import Scheduler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenEvent:
    seq_id: int
    new_token_ids: tuple[int, ...]  # usually one; () on cancel/error
    finish_reason: FinishReason | None  # None while running
    num_prompt_tokens: int
    num_output_tokens: int  # len(seq.output_ids) so far, stop token included
    error: str | None = None


# Called on the engine thread; returning False ends the request now (the sink has answered already).
Sink = Callable[[TokenEvent], bool]


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    free_kv_blocks: int


class Engine:
    def __init__(self, runner, limits: EngineLimits, sampler: Sampler | None = None,
                 on_stats: Callable[[EngineStats], None] | None = None):
        self.runner = runner
        self.limits = limits
        self.sampler = sampler or Sampler()
        self.scheduler = Scheduler(limits, runner.num_kv_blocks)
        self.on_stats = on_stats
        self._sinks: dict[int, Sink] = {}
        self._seqs: dict[int, Sequence] = {}
        self._inbox: list[tuple[Sequence, Sink]] = []
        self._aborts: set[int] = set()
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._last_stats: EngineStats | None = None
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
        return EngineStats(self.scheduler.num_running, self.scheduler.num_waiting, self.scheduler.blocks.num_free_blocks)

    def step(self) -> bool:
        self._drain_inbox()
        schedule = self.scheduler.schedule()
        if schedule.is_empty:
            self._report_stats()
            return False
        seqs = schedule.sequences
        try:
            logits = self.runner.execute(schedule)
            tokens = self.sampler.sample(logits, seqs)
        except Exception as exc:  # this step's requests fail; the loop and the others go on
            logger.exception("engine step failed for %d sequences", len(seqs))
            for seq in seqs:
                self._finish(seq, FinishReason.ERROR, error=f"{type(exc).__name__}: {exc}")
            return True
        self.scheduler.commit(schedule)
        for seq, token in zip(seqs, tokens):
            self._append(seq, token)
        self._report_stats()
        return True

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

    def _append(self, seq: Sequence, token: int) -> None:
        seq.output_ids.append(token)
        params = seq.params
        finish = None
        if token in params.stop_token_ids:
            finish = FinishReason.STOP
        elif len(seq.output_ids) >= params.max_tokens or len(seq) >= self.limits.max_seq_len:
            finish = FinishReason.LENGTH
        event = TokenEvent(seq.seq_id, (token,), finish, len(seq.prompt_ids), len(seq.output_ids))
        keep_going = self._emit(self._sinks[seq.seq_id], event)
        if finish is not None or not keep_going:
            self._release(seq)

    def _finish(self, seq: Sequence, reason: FinishReason, error: str | None = None) -> None:
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
                while not self._stop and not self._inbox and not self._aborts and not self.scheduler.has_unfinished():
                    self._wake.wait()
                if self._stop:
                    break
            self.step()
        self._drain_inbox()
        for seq in list(self._seqs.values()):
            self._finish(seq, FinishReason.CANCELLED)

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
