"""tensorrtllm_backend's word-list tensors (stop_words_list, bad_words_list): shape (2, N) int32, row 0
the concatenated token ids of all words, row 1 each word's end offset, padded with -1."""
from __future__ import annotations

import numpy as np

from .tokenizer import QwenTokenizer


def encode_words(tokenizer: QwenTokenizer, words: list[str]) -> list[list[int]]:
    return [tokenizer.encode(w) for w in words if w]


def to_word_list(token_seqs: list[list[int]]) -> np.ndarray:
    flat = [t for seq in token_seqs for t in seq]
    offsets = np.cumsum([len(seq) for seq in token_seqs]).tolist()
    width = max(len(flat), len(offsets), 1)
    out = np.zeros((2, width), dtype=np.int32)
    out[1, :] = -1
    out[0, :len(flat)] = flat
    out[1, :len(offsets)] = offsets
    return out


def from_word_list(array: np.ndarray) -> list[list[int]]:
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[0]
    ids, offsets = array[0].tolist(), [o for o in array[1].tolist() if o >= 0]
    starts = [0] + offsets[:-1]
    return [ids[s:e] for s, e in zip(starts, offsets) if e > s]
