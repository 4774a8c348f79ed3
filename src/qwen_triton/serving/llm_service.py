"""The tensorrt_llm model's logic: LLMRequest -> engine submission, engine events -> released responses.

Runs the per-request TextStream on the engine thread so every response carries only ids that end
on a UTF-8 boundary and never a stop string. Knows nothing of pb_utils: a Responder does the I/O.
"""
from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from ..config import GenerationDefaults, load_engine_folder
from ..runtime.engine import TokenEvent
from ..runtime.request import FinishReason, SamplingParams
from ..text.detokenizer import TextStream
from ..text.tokenizer import QwenTokenizer
from ..text.word_lists import from_word_list
from ..vocab import STOP_TOKEN_IDS
from .model_params import LLMModelParams
from .requests import LLMRequest
from .runtimes import LLMEngine, start_engine

logger = logging.getLogger(__name__)


class Responder(Protocol):
    def send(self, outputs: dict[str, np.ndarray], final: bool) -> None: ...
    def fail(self, exc: BaseException) -> None: ...
    def is_cancelled(self) -> bool: ...


class ResponseStream:
    """Engine sink for one request; returns False when the request must end now."""

    def __init__(self, request: LLMRequest, stop_ids: frozenset[int], text: TextStream, responder: Responder):
        self.streaming = request.streaming
        self.stop_ids = stop_ids
        self.text = text
        self.responder = responder
        self.num_input_tokens = len(request.input_ids)
        self.num_output_tokens = 0
        # exclude_input_in_output=false echoes the prompt ids ahead of the first released chunk.
        self.pending: list[int] = [] if request.exclude_input_in_output else list(request.input_ids)

    def __call__(self, event: TokenEvent) -> bool:
        if event.error is not None:
            self.responder.fail(RuntimeError(f"generation failed: {event.error}"))
            return False
        finish = event.finish_reason
        if finish is None and self.responder.is_cancelled():
            finish = FinishReason.CANCELLED
        for token in event.new_token_ids:
            if token in self.stop_ids:
                continue
            self.num_output_tokens += 1
            release = self.text.push(token)
            self.pending.extend(release.token_ids)
            if release.stopped:
                finish = FinishReason.STOP
                break
        else:
            if finish is not None:
                self.pending.extend(self.text.finish().token_ids)
        if finish is not None or (self.streaming and self.pending):
            self._send(finish)
        return finish is None

    def _send(self, finish: FinishReason | None) -> None:
        ids, self.pending = self.pending, []
        self.responder.send({
            "output_ids": np.asarray(ids, dtype=np.int32),
            "sequence_length": np.asarray([len(ids)], dtype=np.int32),
            "finish_reason": np.asarray([finish.value.encode() if finish else b""], dtype=np.object_),
            "num_input_tokens": np.asarray([self.num_input_tokens], dtype=np.int32),
            "num_output_tokens": np.asarray([self.num_output_tokens], dtype=np.int32),
        }, final=finish is not None)


class LLMService:
    def __init__(self, engine: LLMEngine, tokenizer: QwenTokenizer, defaults: GenerationDefaults):
        self.engine = engine
        self.tokenizer = tokenizer
        self.defaults = defaults

    @classmethod
    def from_params(cls, params: LLMModelParams, on_stats=None) -> "LLMService":
        folder = load_engine_folder(params.engine_dir)
        engine = start_engine(params, folder, on_stats)
        return cls(engine, QwenTokenizer.load(folder.path), folder.generation)

    def sampling_params(self, request: LLMRequest) -> SamplingParams:
        d = self.defaults
        knobs = {"temperature": d.temperature, "top_k": d.top_k, "top_p": d.top_p,
                 "repetition_penalty": d.repetition_penalty, **request.sampling}
        stop_ids = set(STOP_TOKEN_IDS) | ({request.end_id} if request.end_id is not None else set())
        bad_words = ([] if request.bad_words_list is None
                     else from_word_list(request.bad_words_list, field="bad_words"))
        return SamplingParams(max_tokens=request.request_output_len, stop_token_ids=tuple(sorted(stop_ids)),
                              bad_words_ids=tuple(tuple(w) for w in bad_words), **knobs)

    def stop_strings(self, request: LLMRequest) -> list[str]:
        if request.stop_words_list is None:
            return []
        # Word lists carry ids; the stop is matched on text, and decode(encode(s)) == s.
        words = from_word_list(request.stop_words_list, field="stop_words")
        return [text for text in (self.tokenizer.decode(w) for w in words) if text]

    def submit(self, request: LLMRequest, responder: Responder) -> int:
        params = self.sampling_params(request)
        text = TextStream(self.tokenizer, self.stop_strings(request))
        sink = ResponseStream(request, frozenset(params.stop_token_ids), text, responder)
        return self.engine.submit(list(request.input_ids), params, sink)

    def shutdown(self) -> None:
        self.engine.shutdown()
