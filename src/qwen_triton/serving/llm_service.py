"""The tensorrt_llm model's logic: LLMRequest -> engine submission; engine events -> responses (responses.py).

Every response carries only ids that end on a UTF-8 boundary and never a stop string. Knows nothing of
pb_utils: a Responder does the I/O, on the Outbox's thread.
"""
from __future__ import annotations

import logging
import weakref
from functools import partial
from typing import Callable

import numpy as np

from ..config import EngineConfig, GenerationDefaults, load_engine_folder
from ..errors import InvalidRequest, Unavailable
from ..engine_api import LLMEngine, SamplingParams
from ..text.detokenizer import TextStream
from ..text.tokenizer import QwenTokenizer
from ..text.word_lists import check_ids, check_token_fields, check_words, from_word_list
from ..vocab import STOP_TOKEN_IDS
from .cancellation import drain_key_from_env, new_request_key
from .model_params import LLMModelParams
from .outbox import Reply
from .llm_request import LLMRequest, StopRequest
from .responses import Outbox, Responder, ResponseStream
from .runtime_choice import start_engine
from .watchdog import Watchdog

logger = logging.getLogger(__name__)


class LLMService:
    def __init__(self, engine: LLMEngine, tokenizer: QwenTokenizer, config: EngineConfig,
                 defaults: GenerationDefaults, on_first_response: Callable[[float], None] | None = None,
                 drain_key: int | None = None, on_inter_token: Callable[[float], None] | None = None,
                 decoupled: bool = True):
        self.engine = engine
        self.decoupled = decoupled  # False: exactly one response per request (no streaming, no probes)
        self.watchdog: Watchdog | None = None
        self.drain_key = drain_key
        self.draining = False
        self.tokenizer = tokenizer
        self.config = config
        self.defaults = defaults
        self.outbox = Outbox(on_first_response, on_inter_token)
        # request_key -> its stream while it runs (a stream no one else holds is finished and drops out).
        self._by_key: weakref.WeakValueDictionary[int, ResponseStream] = weakref.WeakValueDictionary()

    @classmethod
    def from_params(cls, params: LLMModelParams, on_stats=None, on_first_response=None,
                    on_stall: Callable[[], None] | None = None, on_inter_token=None) -> "LLMService":
        """on_stall: what to do once the watchdog has failed every request of a stalled engine."""
        folder = load_engine_folder(params.engine_dir)
        engine = start_engine(params, folder, on_stats)
        service = cls(engine, QwenTokenizer.load(folder.path), folder.config, folder.generation, on_first_response,
                      drain_key=drain_key_from_env(), on_inter_token=on_inter_token, decoupled=params.decoupled)
        if on_stall is not None:
            service.watchdog = Watchdog(engine.stalled_s, service.fail_all, on_stall,
                                        folder.config.limits.stall_timeout_s)
        return service

    def sampling_params(self, request: LLMRequest) -> SamplingParams:
        """The one place a request is settled: defaults applied, every limit and id checked against the engine,
        before the engine sees any of it (the ensemble's requests and direct callers' alike)."""
        d, vocab = self.defaults, self.config.model.vocab_size
        check_ids(request.input_ids, "input_ids", vocab)  # its length: the engine's own limit (LLMEngine.submit)
        check_token_fields(vocab, end_id=request.end_id, pad_id=request.pad_id)
        knobs = {"temperature": d.temperature, "top_k": d.top_k, "top_p": d.top_p,
                 "repetition_penalty": d.repetition_penalty, **request.sampling}
        if knobs["top_p"] == 0:  # TensorRT-LLM's "off" (tensorrtllm_backend's client sends 0 by default)
            knobs["top_p"] = 1.0
        stop_ids = set(STOP_TOKEN_IDS) | ({request.end_id} if request.end_id is not None else set())
        bad_words = self.words(request.bad_words_list, "bad_words")
        pad = {} if request.pad_id is None else {"pad_id": request.pad_id}
        return SamplingParams(max_tokens=request.request_output_len or d.max_new_tokens,
                              stop_token_ids=tuple(sorted(stop_ids)), bad_words_ids=tuple(tuple(w) for w in bad_words),
                              logprobs=request.return_log_probs, logit_bias=self.logit_bias(request.embedding_bias),
                              **pad, **knobs)

    def logit_bias(self, bias) -> tuple[tuple[int, float], ...]:
        """A dense embedding_bias (at most one value per vocabulary id) -> its non-zero (id, value) pairs."""
        if bias is None:
            return ()
        vocab = self.config.model.vocab_size
        if bias.size > vocab:
            raise InvalidRequest("embedding_bias", f"has {bias.size} values; the vocabulary has {vocab}")
        return tuple((int(i), float(bias[i])) for i in np.flatnonzero(bias))

    def words(self, word_list, field: str) -> list[list[int]]:
        if word_list is None:
            return []
        words = from_word_list(word_list, field=field)
        limits = self.config.limits
        check_words(words, field, limits.max_words_per_list, limits.max_word_tokens, self.config.model.vocab_size)
        return words

    def stop_strings(self, request: LLMRequest) -> list[str]:
        """Stops are matched on the decoded text. The ensemble sends them as text; NVIDIA's direct clients as a
        word list of ids, decoded here once (decode(encode(s)) == s). Both within the word-list limits."""
        limits = self.config.limits
        texts = [t for t in request.stop_words if t]
        if len(texts) > limits.max_words_per_list:
            raise InvalidRequest("stop_words", f"{len(texts)} words; this engine accepts at most "
                                               f"{limits.max_words_per_list}")
        for text in texts:  # a stop string's cost when matched grows with its length, bounded as a word's
            check_words([self.tokenizer.encode(text)], "stop_words", 1, limits.max_word_tokens,
                        self.config.model.vocab_size)
        words = self.words(request.stop_words_list, "stop_words_list")
        return texts + [text for text in (self.tokenizer.decode(w) for w in words) if text]

    def handle(self, request: LLMRequest | StopRequest, responder: Responder) -> None:
        if isinstance(request, StopRequest):
            self.stop(request.request_key, responder)
        else:
            self.submit(request, responder)

    def submit(self, request: LLMRequest, responder: Responder) -> int:
        if self.draining:
            raise Unavailable("the server is shutting down")
        if request.streaming and not self.decoupled:
            raise InvalidRequest("stream", "streaming needs the decoupled model; this repository was filled with "
                                           "--decoupled false (one response per request)")
        params = self.sampling_params(request)
        text = TextStream(self.tokenizer, self.stop_strings(request))
        # Probes are extra responses: only a decoupled model may send them.
        key = new_request_key() if request.cancel_probe_ms > 0 and self.decoupled else None
        stream = ResponseStream(request, frozenset(params.stop_token_ids), text, responder, self.outbox, key)
        self.outbox.register(stream)
        try:
            seq_id = self.engine.submit(list(request.input_ids), params, stream)
        except BaseException:
            self.outbox.unregister(stream)
            raise
        stream.on_cancel = partial(self.engine.abort, seq_id)
        if key is not None:
            self._by_key[key] = stream
        return seq_id

    def stop(self, key: int, responder: Responder) -> None:
        """Ends the running request tagged `key` (unknown: already finished, nothing to do) and acknowledges.
        The drain key ends them all, refuses what comes after (the launcher's shutdown) and acknowledges once
        the last of them is answered."""
        ack = Reply(lambda: responder.send({}, final=True))
        if self.drain_key is not None and key == self.drain_key:
            # Acknowledged once every request has sent its final response: Triton 2.51's shutdown refuses
            # new ensemble steps, and a postprocessing step refused while tensorrt_llm still answers that
            # request keeps the ensemble request forever (docs/cancellation.md), so SIGINT must wait for it.
            self.drain()
            self.outbox.when_idle(ack)
            return
        stream = self._by_key.get(key)
        if stream is not None:
            stream.cancel()
        self.outbox.post(ack)

    def drain(self) -> None:
        """Every running request ends cancelled at the engine's next step; later submissions are refused."""
        self.draining = True
        for stream in self.outbox.live():
            stream.cancel()

    def fail_all(self, exc: BaseException) -> None:
        """Every open request gets `exc` now and new ones are refused; waits (2 s at most) for the sends."""
        self.draining = True
        for stream in self.outbox.live():
            stream.abandon(exc)
        self.outbox.close(timeout=2.0)

    def refuse(self, responder: Responder, exc: BaseException) -> None:
        """A request that could not be submitted gets its error from the outbox thread, like every response."""
        self.outbox.post(Reply(lambda: responder.fail(exc)))

    def shutdown(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        self.drain()
        self.engine.shutdown()  # answers the requests in flight (cancelled) through the outbox
        self.outbox.close()
