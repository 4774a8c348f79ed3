"""Typed requests parsed from wire values (numpy, batch dim removed); every bad value names its field.

Knows the wire names and Python types; knows nothing of tokenizers or engines.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidRequest
from ..schema import ALIASES, NEUTRAL_ENSEMBLE, NEUTRAL_TENSORRT_LLM, Neutral, TRTLLM_SAMPLING_NAMES


def _scalar(values: dict[str, np.ndarray], name: str):
    array = values.get(name)
    if array is None:
        return None
    flat = np.asarray(array).reshape(-1)
    if flat.size != 1:
        raise InvalidRequest(name, f"expected one value, got {flat.size}")
    return flat[0]


def _as_text(name: str, raw) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(name, f"is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def get_text(values, name: str, default: str | None = None) -> str | None:
    raw = _scalar(values, name)
    return default if raw is None else _as_text(name, raw)


def get_texts(values, name: str) -> tuple[str, ...]:
    array = values.get(name)
    if array is None:
        return ()
    return tuple(text for text in (_as_text(name, raw) for raw in np.asarray(array).reshape(-1)) if text)


def get_int(values, name: str, default: int | None = None) -> int | None:
    raw = _scalar(values, name)
    return default if raw is None else int(raw)


def get_float(values, name: str, default: float | None = None) -> float | None:
    raw = _scalar(values, name)
    return default if raw is None else float(raw)


def get_bool(values, name: str, default: bool) -> bool:
    raw = _scalar(values, name)
    return default if raw is None else bool(raw)


def get_ids(values, name: str) -> tuple[int, ...]:
    array = values.get(name)
    return () if array is None else tuple(int(i) for i in np.asarray(array).reshape(-1))


# Request parameters Triton or NVIDIA's clients may set that mean nothing to generation (tensorrtllm_backend's
# inflight_batcher_llm_client sends "Streaming"); any other parameter is a key this model does not know.
KNOWN_PARAMETERS = frozenset({"sequence_id", "sequence_start", "sequence_end", "priority", "timeout",
                              "binary_data_output", "Streaming", "streaming"})


def check_parameters(parameters: str | dict | None, inputs: tuple[str, ...]) -> None:
    """Triton's HTTP generate turns every JSON key that is not an input into a request parameter, which the
    ensemble hands to preprocessing; refused here, so a misspelt or unsupported key is an error, not ignored."""
    if not parameters:
        return
    names = sorted(set(json.loads(parameters) if isinstance(parameters, str) else parameters) - KNOWN_PARAMETERS)
    if names:
        raise InvalidRequest(names[0], f"is not an input of this model (unknown keys: {', '.join(names)}); "
                                       f"the inputs are: {', '.join(inputs)}")


def check_neutral(values, neutrals: tuple[Neutral, ...]) -> None:
    """NVIDIA inputs for features this server lacks: fine at their neutral value, refused by name otherwise."""
    for neutral in neutrals:
        array = values.get(neutral.spec.name)
        if array is None or np.asarray(array).size == 0:
            continue
        if neutral.off is None:
            flat = np.asarray(array).reshape(-1)
            if neutral.spec.dtype == "STRING" and not any(len(v) for v in flat):
                continue  # an empty string: not asked for
            raise InvalidRequest(neutral.spec.name, neutral.why)
        value = _scalar(values, neutral.spec.name)
        if value != neutral.off:
            raise InvalidRequest(neutral.spec.name, f"must be {neutral.off!r} ({neutral.why}), got {value!r}")


def get_aliased(values, name: str, get=None):
    """A knob under its name or its older one (ALIASES); both given and different: refused."""
    get = get or get_int
    old = next(old for old, new in ALIASES.items() if new == name)
    value, old_value = get(values, name), get(values, old)
    if value is not None and old_value is not None and value != old_value:
        raise InvalidRequest(old, f"is the older name of {name}; both were given, with different values "
                                  f"({old_value} and {value})")
    return value if value is not None else old_value


def get_floats(values, name: str) -> tuple[float, ...]:
    array = values.get(name)
    return () if array is None else tuple(float(v) for v in np.asarray(array).reshape(-1))


@dataclass(frozen=True)
class ChatRequest:
    """What preprocessing receives from the ensemble."""

    text_input: str
    bad_words: tuple[str, ...] = ()
    system_prompt: str | None = None
    history: str | None = None
    apply_chat_template: bool = True
    min_tokens: int | None = None  # min_tokens or min_length
    seed: int | None = None  # seed or random_seed
    embedding_bias: tuple[tuple[str, float], ...] = ()  # (word, weight) from embedding_bias_words/_weights
    exclude_input_in_output: bool = True

    def __post_init__(self):
        if not self.text_input.strip():
            raise InvalidRequest("text_input", "is empty")

    @classmethod
    def from_inputs(cls, values: dict[str, np.ndarray]) -> "ChatRequest":
        text = get_text(values, "text_input")
        if text is None:
            raise InvalidRequest("text_input", "is required")
        check_neutral(values, NEUTRAL_ENSEMBLE)
        get_float(values, "length_penalty")  # beam search only: accepted, no effect at beam width 1
        return cls(
            text_input=text,
            bad_words=get_texts(values, "bad_words"),
            system_prompt=get_text(values, "system_prompt"),
            history=get_text(values, "history"),
            apply_chat_template=get_bool(values, "apply_chat_template", True),
            min_tokens=get_aliased(values, "min_tokens"),
            seed=get_aliased(values, "seed"),
            embedding_bias=_embedding_bias(values),
            exclude_input_in_output=get_bool(values, "exclude_input_in_output", True),
        )


def _embedding_bias(values) -> tuple[tuple[str, float], ...]:
    words = tuple(_as_text("embedding_bias_words", raw) for raw in np.asarray(values.get("embedding_bias_words", [])).reshape(-1))
    weights = get_floats(values, "embedding_bias_weights")
    if len(words) != len(weights):
        raise InvalidRequest("embedding_bias_weights", f"{len(weights)} weights for {len(words)} embedding_bias_words")
    return tuple((w, v) for w, v in zip(words, weights) if w)


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
            raw = _scalar(values, wire_name)
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
