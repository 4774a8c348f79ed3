"""What tensorrt_llm receives (tensorrtllm_backend's names), typed: a generation (LLMRequest) or a stop of a running
one (StopRequest); every bad value names its field. Defaults are not applied here (LLMService settles them)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidRequest
from ..schema import NEUTRAL_TENSORRT_LLM, TRTLLM_SAMPLING_NAMES
from .wire_values import check_neutral, get_aliased, get_bool, get_ids, get_int, get_texts, scalar


@dataclass(frozen=True)
class LLMRequest:
    """What the tensorrt_llm model receives (tensorrtllm_backend names), before defaults are applied."""

    input_ids: tuple[int, ...]
    request_output_len: int | None = None  # None: the engine's generation_config max_new_tokens
    streaming: bool = False
    end_id: int | None = None
    pad_id: int | None = None  # reaches the runtime; no response is ever padded
    stop_words: tuple[str, ...] = ()  # stop strings as text (the ensemble's)
    stop_words_list: np.ndarray | None = None  # (2, N) word-list layout (NVIDIA's direct clients)
    bad_words_list: np.ndarray | None = None
    sampling: dict = field(default_factory=dict)  # ensemble knob name -> value, only those sent
    exclude_input_in_output: bool = True
    echo_ids: tuple[int, ...] = ()  # echoed instead of input_ids when exclude_input_in_output is false
    return_log_probs: bool = False
    embedding_bias: np.ndarray | None = None  # (vocab,) float32 added to the logits; None when absent or empty
    cancel_probe_ms: int = 0  # > 0: sent by the ensemble, which wants request_key and probes (cancellation.py)

    def __post_init__(self):
        if not self.input_ids:
            raise InvalidRequest("input_ids", "is empty")
        if self.request_output_len is not None and self.request_output_len <= 0:
            raise InvalidRequest("max_tokens", f"must be > 0, got {self.request_output_len}")

    @classmethod
    def from_inputs(cls, values: dict[str, np.ndarray]) -> "LLMRequest":
        ids = get_ids(values, "input_ids")
        length = get_int(values, "input_lengths", len(ids))
        check_neutral(values, NEUTRAL_TENSORRT_LLM)
        sampling = {}
        for knob, wire_name in TRTLLM_SAMPLING_NAMES.items():
            raw = scalar(values, wire_name)
            if raw is not None:
                sampling[knob] = raw.item() if hasattr(raw, "item") else raw
        min_tokens = get_aliased(values, "min_tokens")  # min_length: tensorrtllm_backend v0.13 to v0.19's name
        if min_tokens is not None:
            sampling["min_tokens"] = min_tokens
        bias = values.get("embedding_bias")
        return cls(
            input_ids=ids[:length],
            request_output_len=get_int(values, "request_output_len"),
            streaming=get_bool(values, "streaming", False),
            end_id=get_int(values, "end_id"),
            pad_id=get_int(values, "pad_id"),
            stop_words=get_texts(values, "stop_words"),
            stop_words_list=values.get("stop_words_list"),
            bad_words_list=values.get("bad_words_list"),
            sampling=sampling,
            exclude_input_in_output=get_bool(values, "exclude_input_in_output", True),
            echo_ids=get_ids(values, "echo_ids"),
            return_log_probs=get_bool(values, "return_log_probs", False),
            embedding_bias=None if bias is None or np.asarray(bias).size == 0 else np.asarray(bias, np.float32).reshape(-1),
            cancel_probe_ms=max(0, get_int(values, "cancel_probe_ms", 0)),
        )


@dataclass(frozen=True)
class StopRequest:
    """stop=true sent to tensorrt_llm: end the running request whose responses carry this request_key."""

    request_key: int

    @classmethod
    def from_inputs(cls, values: dict[str, np.ndarray]) -> "StopRequest":
        key = get_int(values, "request_key")
        if key is None:
            raise InvalidRequest("request_key", "is required with stop=true")
        return cls(key)


def parse_llm_inputs(values: dict[str, np.ndarray]) -> LLMRequest | StopRequest:
    return StopRequest.from_inputs(values) if get_bool(values, "stop", False) else LLMRequest.from_inputs(values)
