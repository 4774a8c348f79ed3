"""ChatRequest -> tensorrt_llm inputs: the ChatML prompt's ids and the other text the request carries as ids
(bad words, embedding-bias words, the echoed input). It applies the template and tokenizes, nothing more: the
output length, end and pad ids and stop strings go from the ensemble straight to tensorrt_llm, which settles
every default and limit (serving/llm_service.py), for direct callers as well.

Owns the edge checks that need the tokenizer: the prompt's length after the template, word lengths in tokens.
"""
from __future__ import annotations

import numpy as np

from ..config import EngineFolder, load_engine_folder
from ..errors import InvalidRequest
from ..text.chat_template import DEFAULT_SYSTEM_PROMPT, build_prompt, parse_history
from ..text.tokenizer import QwenTokenizer
from ..text.word_lists import check_words, encode_words, to_word_list
from .cancellation import CANCEL_PROBE_MS
from .chat_request import ChatRequest


class Preprocessor:
    def __init__(self, folder: EngineFolder, tokenizer: QwenTokenizer):
        self.folder = folder
        self.tokenizer = tokenizer

    @classmethod
    def from_engine_dir(cls, engine_dir: str) -> "Preprocessor":
        folder = load_engine_folder(engine_dir)
        return cls(folder, QwenTokenizer.load(folder.path))

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        if not request.apply_chat_template:
            return self.tokenizer.encode(request.text_input)
        history = parse_history(request.history) if request.history else None
        system = request.system_prompt
        if system is None:
            system = history.system if history and history.system is not None else DEFAULT_SYSTEM_PROMPT
        turns = history.turns if history else []
        config = self.folder.config
        return build_prompt(self.tokenizer, request.text_input, turns, system, config.max_window_size,
                            max_prompt_len=config.limits.max_input_len)

    def word_list(self, words: tuple[str, ...], field: str) -> np.ndarray:
        limits, vocab = self.folder.config.limits, self.folder.config.model.vocab_size
        if len(words) > limits.max_words_per_list:  # before tokenizing them all
            raise InvalidRequest(field, f"{len(words)} words; this engine accepts at most {limits.max_words_per_list}")
        ids = encode_words(self.tokenizer, list(words))
        check_words(ids, field, limits.max_words_per_list, limits.max_word_tokens, vocab)
        return to_word_list(ids)

    def __call__(self, request: ChatRequest) -> dict[str, np.ndarray]:
        ids = self.prompt_ids(request)
        limits = self.folder.config.limits
        if len(ids) > limits.max_input_len:
            raise InvalidRequest(
                "text_input", f"prompt is {len(ids)} tokens after the chat template; "
                f"this engine accepts at most {limits.max_input_len}")
        return {
            "input_ids": np.asarray(ids, dtype=np.int32),
            "input_lengths": np.asarray([len(ids)], dtype=np.int32),
            "bad_words_list": self.word_list(request.bad_words, "bad_words"),
            "cancel_probe_ms": np.asarray([CANCEL_PROBE_MS], dtype=np.int32),
            **self.knobs(request),
        }

    def knobs(self, request: ChatRequest) -> dict[str, np.ndarray]:
        """Only what the request gave: an output left out reaches tensorrt_llm as an absent input."""
        out = {}
        if request.min_tokens is not None:
            out["min_tokens"] = np.asarray([request.min_tokens], dtype=np.int32)
        if request.seed is not None:
            out["seed"] = np.asarray([request.seed], dtype=np.uint64)
        if request.embedding_bias:
            out["embedding_bias"] = self.embedding_bias(request.embedding_bias)
        if not request.exclude_input_in_output:
            out["echo_ids"] = np.asarray(self.tokenizer.encode(request.text_input), dtype=np.int32)
        return out

    def embedding_bias(self, pairs: tuple[tuple[str, float], ...]) -> np.ndarray:
        """(vocab,) float32: each word's weight added to every id of that word, as tensorrtllm_backend's
        preprocessing builds it."""
        limits, vocab = self.folder.config.limits, self.folder.config.model.vocab_size
        if len(pairs) > limits.max_words_per_list:
            raise InvalidRequest("embedding_bias_words", f"{len(pairs)} words; this engine accepts at most "
                                 f"{limits.max_words_per_list}")
        bias = np.zeros(vocab, dtype=np.float32)
        for word, weight in pairs:
            if not np.isfinite(weight):
                raise InvalidRequest("embedding_bias_weights", f"must be finite, got {weight}")
            for token in self.tokenizer.encode(word):
                bias[token] += weight
        return bias
