"""What preprocessing receives from the ensemble, typed (ChatRequest); every bad value names its field."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidRequest
from ..schema import NEUTRAL_ENSEMBLE
from .wire_values import as_text, check_neutral, get_aliased, get_bool, get_float, get_floats, get_text, get_texts


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
    words = tuple(as_text("embedding_bias_words", raw) for raw in np.asarray(values.get("embedding_bias_words", [])).reshape(-1))
    weights = get_floats(values, "embedding_bias_weights")
    if len(words) != len(weights):
        raise InvalidRequest("embedding_bias_weights", f"{len(weights)} weights for {len(words)} embedding_bias_words")
    return tuple((w, v) for w, v in zip(words, weights) if w)
