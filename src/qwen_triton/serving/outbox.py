"""The thread that sends the tensorrt_llm model's responses, off the engine thread.

A Python-backend response send is a blocking round trip to the server process, so sending caps the
responses per second; a stream posted again while earlier ones are sent gets its piled-up ids merged into one
response. Streams that have sent nothing yet go before the others, so a new request's first response does not
wait for a whole pass over the running ones (time to first token under load).

All of the model's response IPC (sends, cancellation polls, the first-response metric) stays on this one
thread: with Triton 2.51's Python backend, sends from several threads aborted the server
(boost::interprocess::lock_exception) and a cancellation poll on a thread of its own beside the sender hung
it, both in tests/e2e on this project's CPU machine.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Hashable, Protocol

logger = logging.getLogger(__name__)
CANCEL_POLL_S = 0.1  # as tensorrtllm_backend's cancellation_check_period_ms


class Flushable(Hashable, Protocol):
    def flush(self) -> None: ...  # sends what is pending; never raises
    def poll(self) -> None: ...  # cancellation check (and probe) of a registered stream, every CANCEL_POLL_S


class Reply:
    """A one-shot answer outside any stream (a refusal, a stop's acknowledgement), sent on the outbox thread."""

    def __init__(self, send: Callable[[], None]):
        self._send = send

    def flush(self) -> None:
        try:
            self._send()
        except Exception:
            logger.exception("could not send a reply")

    def poll(self) -> None:
        pass


class Outbox:
    def __init__(self, on_first_response: Callable[[float], None] | None = None,
                 on_inter_token: Callable[[float], None] | None = None):
        # Both called on the outbox thread, in seconds: from submission, and between two responses with tokens.
        self._on_first_response = on_first_response
        self._on_inter_token = on_inter_token
        self._cond = threading.Condition()
        # Insertion-ordered sets of posted streams: those with no response sent yet, then the others.
        self._first: dict[Flushable, None] = {}
        self._ready: dict[Flushable, None] = {}
        self._live: set[Flushable] = set()
        self._when_idle: list[Flushable] = []  # sent once no stream is registered and nothing is posted
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="qwen-outbox", daemon=True)
        self._thread.start()

    def register(self, stream: Flushable) -> None:
        with self._cond:
            self._live.add(stream)

    def unregister(self, stream: Flushable) -> None:
        with self._cond:
            self._live.discard(stream)
            self._cond.notify()

    def live(self) -> list[Flushable]:
        """The registered streams (those not finished) at this moment."""
        with self._cond:
            return list(self._live)

    def post(self, stream: Flushable, first: bool = False) -> None:
        with self._cond:
            if stream not in self._ready and stream not in self._first:
                (self._first if first else self._ready)[stream] = None
            self._cond.notify()

    def when_idle(self, reply: Flushable) -> None:
        """Sends `reply` once every registered stream has sent its last response (the drain's acknowledgement:
        when it arrives, Triton has taken every response of the model)."""
        with self._cond:
            self._when_idle.append(reply)
            self._cond.notify()

    def _next(self) -> Flushable | None:
        """Under the lock: the oldest posted stream with nothing sent yet, else the oldest posted, else a
        when_idle reply once nothing is registered."""
        for queue in (self._first, self._ready):
            if queue:
                stream = next(iter(queue))
                del queue[stream]
                return stream
        if self._when_idle and (not self._live or self._closing):
            return self._when_idle.pop(0)
        return None

    def _has_work(self) -> bool:
        return bool(self._first or self._ready or (self._when_idle and (not self._live or self._closing)))

    def _loop(self) -> None:
        next_poll = time.monotonic() + CANCEL_POLL_S
        while True:
            with self._cond:
                if not self._has_work() and not self._closing:
                    self._cond.wait(max(0.0, next_poll - time.monotonic()))
                stream = self._next()
                if stream is None and self._closing:
                    return
                poll = time.monotonic() >= next_poll
                live = list(self._live) if poll else []
            if stream is not None:
                stream.flush()
            if poll:
                for each in live:
                    self._poll(each)
                next_poll = time.monotonic() + CANCEL_POLL_S

    @staticmethod
    def _poll(stream: Flushable) -> None:
        try:
            stream.poll()
        except Exception:
            logger.exception("cancellation check failed")

    def first_response_sent(self, seconds: float) -> None:
        self._observe(self._on_first_response, seconds, "first-response")

    def inter_token_sent(self, seconds: float) -> None:
        self._observe(self._on_inter_token, seconds, "inter-token")

    @staticmethod
    def _observe(callback: Callable[[float], None] | None, seconds: float, what: str) -> None:
        if callback is None:
            return
        try:
            callback(seconds)
        except Exception:  # a metric must never end a request
            logger.exception("%s callback failed", what)

    def close(self, timeout: float = 10.0) -> None:
        """Sends what is posted, then stops."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
