"""From engine events to Triton responses, with the I/O off the engine thread.

The engine thread only runs the incremental detokenizer and appends released ids (ResponseStream.__call__).
One Outbox thread sends: a request whose ids pile up while earlier responses are being sent gets them
merged into its next response, so under load there are fewer, larger responses instead of a backlog.
The same thread polls client cancellation (an IPC round trip per request) every CANCEL_POLL_S, and reports
each request's time from submission to its first response sent (on_first_response, an IPC for a metric).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Protocol

import numpy as np

from ..runtime.engine import TokenEvent
from ..runtime.request import FinishReason
from ..text.detokenizer import TextStream
from .requests import LLMRequest

logger = logging.getLogger(__name__)
CANCEL_POLL_S = 0.1  # as tensorrtllm_backend's cancellation_check_period_ms
# Histogram on Triton's metrics port: submission -> first response sent by the tensorrt_llm model (the engine's
# queue and prefill, the detokenizer, the outbox). The ensemble's pre- and postprocessing are not in it.
FIRST_RESPONSE_METRIC = "qwen_time_to_first_response_seconds"
FIRST_RESPONSE_BUCKETS_S = (0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 10.0)


class Responder(Protocol):
    def send(self, outputs: dict[str, np.ndarray], final: bool) -> None: ...
    def fail(self, exc: BaseException) -> None: ...
    def is_cancelled(self) -> bool: ...


class ResponseStream:
    """One request. __call__ runs on the engine thread (False: end the request now); flush() on the outbox's."""

    def __init__(self, request: LLMRequest, stop_ids: frozenset[int], text: TextStream, responder: Responder,
                 outbox: "Outbox"):
        self.streaming = request.streaming
        self.stop_ids = stop_ids
        self.text = text
        self.responder = responder
        self.outbox = outbox
        self.num_input_tokens = len(request.input_ids)
        self.num_output_tokens = 0
        self._lock = threading.Lock()  # guards the fields below, shared by the two threads
        # exclude_input_in_output=false echoes the prompt ids ahead of the first released chunk.
        self._pending: list[int] = [] if request.exclude_input_in_output else list(request.input_ids)
        self._finish: FinishReason | None = None
        self._error: BaseException | None = None
        self._stopped_by_client = False  # cancelled, or a response could not be sent
        self._done = False  # the final response (or the failure) has been sent
        self._submitted_s = time.perf_counter()
        self._first_sent = False  # only the outbox thread reads or writes it
        outbox.register(self)

    def __call__(self, event: TokenEvent) -> bool:
        if event.error is not None:
            return self._end(error=RuntimeError(f"generation failed: {event.error}"))
        if self._stopped_by_client:
            return self._end(finish=FinishReason.CANCELLED)
        finish, released = event.finish_reason, []
        for token in event.new_token_ids:
            if token in self.stop_ids:
                continue
            self.num_output_tokens += 1
            release = self.text.push(token)
            released.extend(release.token_ids)
            if release.stopped:
                finish = FinishReason.STOP
                break
        else:
            if finish is not None:
                released.extend(self.text.finish().token_ids)
        with self._lock:
            self._pending.extend(released)
            self._finish = finish
        if finish is not None or (self.streaming and released):
            self.outbox.post(self)
        return finish is None

    def _end(self, finish: FinishReason | None = None, error: BaseException | None = None) -> bool:
        with self._lock:
            self._finish, self._error = finish, error
        self.outbox.post(self)
        return False

    def flush(self) -> None:
        with self._lock:
            if self._done:
                return
            ids, self._pending = self._pending, []
            finish, error = self._finish, self._error
            self._done = finish is not None or error is not None
        try:
            if error is not None:
                self.responder.fail(error)
            elif ids or finish is not None:
                self.responder.send(self._outputs(ids, finish), final=finish is not None)
                if not self._first_sent:
                    self._first_sent = True
                    self.outbox.first_response_sent(time.perf_counter() - self._submitted_s)
        except Exception:
            logger.exception("could not send a response; ending the request")
            self._stopped_by_client = True
        if self._done:
            self.outbox.unregister(self)

    def poll_cancelled(self) -> None:
        if not self._done and self.responder.is_cancelled():
            self._stopped_by_client = True  # the engine thread ends the request at its next event

    def _outputs(self, ids: list[int], finish: FinishReason | None) -> dict[str, np.ndarray]:
        return {
            "output_ids": np.asarray(ids, dtype=np.int32),
            "sequence_length": np.asarray([len(ids)], dtype=np.int32),
            "finish_reason": np.asarray([finish.value.encode() if finish else b""], dtype=np.object_),
            "num_input_tokens": np.asarray([self.num_input_tokens], dtype=np.int32),
            "num_output_tokens": np.asarray([self.num_output_tokens], dtype=np.int32),
        }


class Outbox:
    """The sending thread. Streams posted while it sends are flushed together on its next pass."""

    def __init__(self, on_first_response: Callable[[float], None] | None = None):
        self._on_first_response = on_first_response  # seconds from submission; called on this thread
        self._cond = threading.Condition()
        self._ready: dict[ResponseStream, None] = {}  # insertion-ordered set
        self._live: set[ResponseStream] = set()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="qwen-outbox", daemon=True)
        self._thread.start()

    def register(self, stream: ResponseStream) -> None:
        with self._cond:
            self._live.add(stream)

    def unregister(self, stream: ResponseStream) -> None:
        with self._cond:
            self._live.discard(stream)

    def post(self, stream: ResponseStream) -> None:
        with self._cond:
            self._ready[stream] = None
            self._cond.notify()

    def _loop(self) -> None:
        next_poll = time.monotonic() + CANCEL_POLL_S
        while True:
            with self._cond:
                if not self._ready and not self._closing:
                    self._cond.wait(max(0.0, next_poll - time.monotonic()))
                ready, self._ready = list(self._ready), {}
                closing = self._closing
                poll = time.monotonic() >= next_poll
                live = list(self._live) if poll else []
            for stream in ready:
                stream.flush()
            if poll:
                for stream in live:
                    self._poll(stream)
                next_poll = time.monotonic() + CANCEL_POLL_S
            if closing and not ready:
                return

    def first_response_sent(self, seconds: float) -> None:
        if self._on_first_response is None:
            return
        try:
            self._on_first_response(seconds)
        except Exception:  # a metric must never end a request
            logger.exception("first-response callback failed")

    @staticmethod
    def _poll(stream: ResponseStream) -> None:
        try:
            stream.poll_cancelled()
        except Exception:
            logger.exception("cancellation check failed")

    def close(self, timeout: float = 10.0) -> None:
        """Sends what is posted, then stops."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
