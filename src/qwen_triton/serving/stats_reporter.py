"""Engine stats to Triton gauges off the engine thread. A gauge update from a Python backend model is an
IPC round trip to the server; made from the engine thread after every step whose stats changed it held
every request in the batch, delaying first tokens (docs/perf-log.md has the measurement). Here the
engine only stores the latest stats; one thread publishes them, at most every MIN_INTERVAL_S."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Generic, TypeVar

logger = logging.getLogger(__name__)
MIN_INTERVAL_S = 0.05
Stats = TypeVar("Stats")


class StatsReporter(Generic[Stats]):
    def __init__(self, publish: Callable[[Stats], None], min_interval_s: float = MIN_INTERVAL_S):
        self.publish = publish
        self.min_interval_s = min_interval_s
        self._cond = threading.Condition()
        self._latest: Stats | None = None
        self._fresh = False
        threading.Thread(target=self._loop, name="qwen-stats", daemon=True).start()

    def __call__(self, stats: Stats) -> None:
        """Called on the engine thread: never blocks beyond a lock."""
        with self._cond:
            self._latest, self._fresh = stats, True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._fresh:
                    self._cond.wait()
                stats, self._fresh = self._latest, False
            try:
                self.publish(stats)
            except Exception:
                logger.exception("stats callback failed")
            with self._cond:  # bounds the IPC rate; a newer value waits and is published next
                self._cond.wait_for(lambda: False, timeout=self.min_interval_s)


class SampledObserver:
    """A histogram observe() off the caller's thread: the outbox thread only appends a value (no IPC; an observe
    is a round trip to the server, and one per response halved how many responses that thread could send). A
    thread of its own observes at most `per_period` of the values kept every `period_s`; the rest are dropped, so
    under load the histogram is a sample of the newest values, not a count of them."""

    def __init__(self, observe: Callable[[float], None], period_s: float = 0.25, per_period: int = 64):
        self.observe = observe
        self.period_s, self.per_period = period_s, per_period
        self._values: deque[float] = deque(maxlen=per_period)
        threading.Thread(target=self._loop, name="qwen-observe", daemon=True).start()

    def __call__(self, value: float) -> None:
        self._values.append(value)  # deque.append is atomic; the oldest falls out when full

    def _loop(self) -> None:
        while True:
            time.sleep(self.period_s)
            for _ in range(len(self._values)):
                try:
                    self.observe(self._values.popleft())
                except IndexError:
                    break
                except Exception:
                    logger.exception("histogram observe failed")
