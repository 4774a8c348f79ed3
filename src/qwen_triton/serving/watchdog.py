"""Notices an engine that stopped stepping while work waits (a wedged kernel, a dead engine thread): every
request still open gets an error, then on_stall runs (the model exits its stub, so the launcher restarts the
server). Knows nothing of Triton."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from ..errors import Unavailable

logger = logging.getLogger(__name__)


class Watchdog:
    def __init__(self, stalled_s: Callable[[], float], fail_all: Callable[[BaseException], None],
                 on_stall: Callable[[], None], limit_s: float, period_s: float = 1.0):
        self._stalled_s, self._fail_all, self._on_stall = stalled_s, fail_all, on_stall
        self.limit_s, self.period_s = limit_s, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="qwen-watchdog", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            stalled = self._stalled_s()
            if stalled > self.limit_s:
                logger.error("the engine has not finished a step for %.0f s while requests wait", stalled)
                self._fail_all(Unavailable(f"the engine stalled for {stalled:.0f} s; the server restarts"))
                self._on_stall()
                return

    def stop(self) -> None:
        self._stop.set()
