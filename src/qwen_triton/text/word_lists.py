"""tensorrtllm_backend's word-list tensors (stop_words_list, bad_words_list) and back; it knows the (2, N) int32
layout (row 0 the words' ids end to end, padded with 0; row 1 each word's end offset, padded with -1) and must
not decide what the words mean."""
from __future__ import annotations

import numpy as np

from ..errors import InvalidRequest
from .tokenizer import QwenTokenizer


def encode_words(tokenizer: QwenTokenizer, words: list[str]) -> list[list[int]]:
    # Empty words are dropped, as tensorrtllm_backend's preprocessing skips words with no ids.
    return [tokenizer.encode(w) for w in words if w]


def to_word_list(token_seqs: list[list[int]]) -> np.ndarray:
    """(2, N) with N = max(1, total ids): `_to_word_list_format` for one request; no words -> [[0], [-1]]."""
    seqs = [list(seq) for seq in token_seqs if len(seq) > 0]
    flat = [t for seq in seqs for t in seq]
    width = max(1, len(flat))  # every word has >= 1 id, so offsets never outnumber ids
    out = np.zeros((2, width), dtype=np.int32)
    out[1, :] = -1
    out[0, :len(flat)] = flat
    out[1, :len(seqs)] = np.cumsum([len(seq) for seq in seqs])
    return out


def from_word_list(array: np.ndarray, field: str = "word_list") -> list[list[int]]:
    """Inverse of to_word_list; takes (2, N) or a batch of one (1, 2, N). Malformed -> InvalidRequest(field)."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.shape[0] != 2:
        raise InvalidRequest(field, f"expected shape (2, N) or (1, 2, N), got {array.shape}")
    ids, offsets = array[0].tolist(), array[1].tolist()
    ends = offsets[:offsets.index(-1)] if -1 in offsets else offsets
    if any(o != -1 for o in offsets[len(ends):]):
        raise InvalidRequest(field, "offsets must be padded with -1 only after the last word")
    starts = [0, *ends[:-1]]
    if any(not s < e for s, e in zip(starts, ends)) or (ends and ends[-1] > len(ids)):
        raise InvalidRequest(field, f"word end offsets {ends} must increase strictly and stay within {len(ids)} ids")
    return [ids[s:e] for s, e in zip(starts, ends)]


def check_ids(ids, field: str, vocab_size: int) -> None:
    """Every id in [0, vocab_size), else InvalidRequest(field) naming the first one outside."""
    bad = next((i for i in ids if not 0 <= i < vocab_size), None)
    if bad is not None:
        raise InvalidRequest(field, f"token id {bad} is outside the vocabulary [0, {vocab_size})")


def check_token_fields(vocab_size: int, **fields: int | None) -> None:
    """Each token id given by field name (None: not sent) within the vocabulary."""
    for name, value in fields.items():
        if value is not None:
            check_ids((value,), name, vocab_size)


def check_words(words: list[list[int]], field: str, max_words: int, max_tokens: int, vocab_size: int) -> None:
    """A word list within the engine's bounds (word count, ids per word) and vocabulary."""
    if len(words) > max_words:
        raise InvalidRequest(field, f"{len(words)} words; this engine accepts at most {max_words}")
    longest = max((len(w) for w in words), default=0)
    if longest > max_tokens:
        raise InvalidRequest(field, f"a word of {longest} tokens; this engine accepts at most {max_tokens}")
    for word in words:
        check_ids(word, field, vocab_size)
