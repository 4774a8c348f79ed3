"""From engine events to Triton responses, with the I/O off the engine thread.

The engine thread only runs the incremental detokenizer and appends released ids (ResponseStream.__call__).
The Outbox's one thread sends (outbox.py): a request whose ids pile up while its earlier response is being sent
gets them merged into its next response, so under load there are fewer, larger responses instead of a
backlog. Each request's time from submission to its first response sent goes to on_first_response.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Protocol

import numpy as np

from ..engine_api import FinishReason, TokenEvent
from ..text.detokenizer import TextStream
from .logprobs import TokenLogProbs
from .outbox import Outbox
from .llm_request import LLMRequest

logger = logging.getLogger(__name__)
# Histogram on Triton's metrics port: submission -> first response sent by the tensorrt_llm model (the engine's
# queue and prefill, the detokenizer, the outbox). The ensemble's pre- and postprocessing are not in it.
FIRST_RESPONSE_METRIC = "qwen_time_to_first_response_seconds"
FIRST_RESPONSE_BUCKETS_S = (0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 10.0)
# Histogram: seconds between two consecutive responses carrying tokens of one streaming request, as they leave
# the tensorrt_llm model. Under load the outbox merges tokens into fewer responses: this is the gap a client
# sees, not the engine's step time.
INTER_TOKEN_METRIC = "qwen_inter_token_latency_seconds"
INTER_TOKEN_BUCKETS_S = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
                         1.0, 2.5)


class Responder(Protocol):
    def send(self, outputs: dict[str, np.ndarray], final: bool) -> None: ...
    def fail(self, exc: BaseException) -> None: ...
    def is_cancelled(self) -> bool: ...


class ResponseStream:
    """One request. __call__ runs on the engine thread (False: end the request now); flush() and poll() on the
    outbox's. `key`: the request_key its responses carry when the ensemble asked for probes (cancellation.py).
    The owner sets on_cancel (ends the request in the engine at once) and registers the stream with the outbox
    before the engine may call it."""

    def __init__(self, request: LLMRequest, stop_ids: frozenset[int], text: TextStream, responder: Responder,
                 outbox: "Outbox", key: int | None = None):
        self.streaming = request.streaming
        self.key = key
        self.probe_s = request.cancel_probe_ms / 1000 if key is not None else 0.0
        self.on_cancel: Callable[[], None] | None = None
        self.stop_ids = stop_ids
        self.text = text
        self.responder = responder
        self.outbox = outbox
        self.num_input_tokens = len(request.input_ids)
        self.num_output_tokens = 0
        self._lock = threading.Lock()  # guards the fields below, shared by the two threads
        # exclude_input_in_output=false: a non-streamed answer starts with the prompt (echo_ids when the
        # ensemble sent them: text_input without the chat template), as TensorRT-LLM's; a stream never does.
        echo = [] if request.exclude_input_in_output or request.streaming else request.echo_ids or request.input_ids
        self._pending: list[int] = list(echo)
        # The text of _pending, decoded once here (postprocessing passes it on instead of decoding again).
        self._pending_text: list[str] = [text.tokenizer.decode(list(echo))] if echo else []
        self.logprobs = TokenLogProbs() if request.return_log_probs else None
        self._pending_logprobs: list[float] = []  # of the generated ids in _pending
        self._cumulative = 0.0  # TokenLogProbs.cumulative when _pending was last extended
        self._finish: FinishReason | None = None
        self._error: BaseException | None = None
        self._stopped_by_client = False  # cancelled, or a response could not be sent
        self._done = False  # the final response (or the failure) has been sent
        self._submitted_s = time.perf_counter()
        self._last_sent_s = time.monotonic()  # outbox thread only: when a response (or probe) last left
        self._first_sent = False  # written by the one sender flushing this stream; read racily for priority
        self._tokens_sent_s: float | None = None  # outbox thread only: when a response with ids last left

    def __call__(self, event: TokenEvent) -> bool:
        if event.error is not None:
            return self._end(error=RuntimeError(f"generation failed: {event.error}"))
        if self._stopped_by_client:
            return self._end(finish=FinishReason.CANCELLED)
        finish, released, texts = event.finish_reason, [], []
        for i, token in enumerate(event.new_token_ids):
            self._sampled(event, i, token)
            if token in self.stop_ids:
                continue
            self.num_output_tokens += 1
            release = self.text.push(token)
            released.extend(release.token_ids)
            texts.append(release.text)
            if release.stopped:
                finish = FinishReason.STOP
                break
        else:
            if finish is not None:
                release = self.text.finish()
                released.extend(release.token_ids)
                texts.append(release.text)
        logprobs = self.logprobs.released(len(released)) if self.logprobs else []
        with self._lock:
            self._pending.extend(released)
            self._pending_text.extend(texts)
            self._pending_logprobs.extend(logprobs)
            self._cumulative = self.logprobs.cumulative if self.logprobs else 0.0
            self._finish = finish
        if finish is not None or (self.streaming and released):
            self.outbox.post(self, first=not self._first_sent)
        return finish is None

    def _sampled(self, event: TokenEvent, i: int, token: int) -> None:
        if self.logprobs is not None and i < len(event.logprobs):
            self.logprobs.sampled(event.logprobs[i])
            if token not in self.stop_ids:
                self.logprobs.pushed(event.logprobs[i])

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
            text, self._pending_text = "".join(self._pending_text), []
            logprobs, self._pending_logprobs = self._pending_logprobs, []
            cumulative = self._cumulative
            finish, error = self._finish, self._error
            self._done = finish is not None or error is not None
        try:
            if error is not None:
                self.responder.fail(error)
            elif ids or finish is not None:
                outputs = self._outputs(ids, finish)
                outputs["text"] = np.asarray([text.encode("utf-8")], dtype=np.object_)
                if self.logprobs is not None:
                    outputs["cum_log_probs"] = np.asarray([cumulative], dtype=np.float32)
                    outputs["output_log_probs"] = np.asarray([logprobs], dtype=np.float32)  # [beam=1, n]
                self.responder.send(outputs, final=finish is not None)
                self._last_sent_s = time.monotonic()
                if not self._first_sent:
                    self._first_sent = True
                    self.outbox.first_response_sent(time.perf_counter() - self._submitted_s)
                if ids:  # only a streaming request sends ids more than once
                    self._observe_inter_token()
        except Exception:
            logger.exception("could not send a response; ending the request")
            self.cancel()
        if self._done:
            self.outbox.unregister(self)

    def _observe_inter_token(self) -> None:
        now = time.perf_counter()
        if self._tokens_sent_s is not None:
            self.outbox.inter_token_sent(now - self._tokens_sent_s)
        self._tokens_sent_s = now

    def abandon(self, exc: BaseException) -> None:
        """Answers the request with an error now, without the engine (which may never call again)."""
        self._end(error=exc)

    def cancel(self) -> None:
        """The client is gone: the engine ends the request at once (on_cancel) or at its next event; the final
        response says cancelled. Any thread; idempotent."""
        if self._done or self._stopped_by_client:
            return
        self._stopped_by_client = True
        if self.on_cancel is not None:
            self.on_cancel()

    def poll(self) -> None:
        if self._done:
            return
        if self.key is None:
            # A direct request: Triton marks it cancelled. One sent by the ensemble never is (Triton 2.51
            # does not tell a running step); its cancellation arrives as a stop, so only its probes are due.
            if self.responder.is_cancelled():
                self.cancel()
        elif time.monotonic() - self._last_sent_s >= self.probe_s:
            try:  # a probe: the ensemble schedules a postprocessing step that can see its cancellation
                self.responder.send({"request_key": np.asarray([self.key], dtype=np.uint64)}, final=False)
                self._last_sent_s = time.monotonic()
            except Exception:
                logger.exception("could not send a probe; ending the request")
                self.cancel()

    def _outputs(self, ids: list[int], finish: FinishReason | None) -> dict[str, np.ndarray]:
        outputs = {
            "output_ids": np.asarray([ids], dtype=np.int32),  # [beam=1, n]
            "sequence_length": np.asarray([len(ids)], dtype=np.int32),
            "batch_index": np.asarray([0], dtype=np.int32),  # one row per request, one sequence per row
            "sequence_index": np.asarray([0], dtype=np.int32),
            "finish_reason": np.asarray([finish.value.encode() if finish else b""], dtype=np.object_),
            "num_input_tokens": np.asarray([self.num_input_tokens], dtype=np.int32),
            "num_output_tokens": np.asarray([self.num_output_tokens], dtype=np.int32),
        }
        if self.key is not None:
            outputs["request_key"] = np.asarray([self.key], dtype=np.uint64)
        return outputs
