"""Word-list tensors: tensorrtllm_backend's layout, round trip, malformed input."""
import random

import numpy as np
import pytest

from qwen_triton.errors import InvalidRequest
from qwen_triton.text.tokenizer import QwenTokenizer
from qwen_triton.text.word_lists import encode_words, from_word_list, to_word_list

tok = QwenTokenizer.load()


def backend_word_list(words: list[str]) -> np.ndarray:
    """tensorrtllm_backend preprocessing `_to_word_list_format` for a batch of one, transliterated."""
    flat_ids, offsets = [], []
    for word_list in [words]:
        item_flat_ids, item_offsets = [], []
        for word in word_list:
            ids = tok.encode(word)
            if len(ids) == 0:
                continue
            item_flat_ids += ids
            item_offsets.append(len(ids))
        flat_ids.append(np.array(item_flat_ids))
        offsets.append(np.cumsum(np.array(item_offsets)))
    pad_to = max(1, max(len(ids) for ids in flat_ids))
    for i, (ids, offs) in enumerate(zip(flat_ids, offsets)):
        flat_ids[i] = np.pad(ids, (0, pad_to - len(ids)), constant_values=0)
        offsets[i] = np.pad(offs, (0, pad_to - len(offs)), constant_values=-1)
    return np.array([flat_ids, offsets], dtype="int32").transpose((1, 0, 2))


def test_layout_golden():
    array = to_word_list([[11, 12], [13], [14, 15, 16]])
    assert array.dtype == np.int32
    assert array.tolist() == [[11, 12, 13, 14, 15, 16], [2, 3, 6, -1, -1, -1]]


def test_no_words():
    assert to_word_list([]).tolist() == [[0], [-1]]
    assert from_word_list(to_word_list([])) == []
    assert from_word_list(np.empty((1, 2, 0), np.int32)) == []  # the backend's "no list" tensor


@pytest.mark.parametrize("words", [[], [""], ["\n\nUser:", "", "停", "🎉 done"], ["Observation:", "a"]])
def test_matches_tensorrtllm_backend(words):
    assert np.array_equal(to_word_list(encode_words(tok, words)), backend_word_list(words)[0])


def test_encode_words_drops_empty_and_round_trips_text():
    words = encode_words(tok, ["\n\nUser:", "", "停止", "<|im_end|>"])
    assert len(words) == 3
    assert [tok.decode(w) for w in words] == ["\n\nUser:", "停止", "<|im_end|>"]
    assert max(max(w) for w in words) < 151643  # a typed stop word never becomes a control token


def test_random_round_trip():
    rng = random.Random(7)
    for _ in range(200):
        seqs = [[rng.randrange(151851) for _ in range(rng.randint(1, 6))] for _ in range(rng.randint(0, 8))]
        array = to_word_list(seqs)
        assert array.shape == (2, max(1, sum(map(len, seqs))))
        assert from_word_list(array) == seqs
        assert from_word_list(array[np.newaxis]) == seqs


@pytest.mark.parametrize("array", [
    np.zeros((3, 4), np.int32),
    np.zeros((2, 2, 4), np.int32),
    np.array([[1, 2, 3], [2, 1, -1]], np.int32),  # offsets go backwards
    np.array([[1, 2, 3], [2, 2, -1]], np.int32),  # an empty word
    np.array([[1, 2, 3], [4, -1, -1]], np.int32),  # past the ids
    np.array([[1, 2, 3], [1, -1, 3]], np.int32),  # a word after the padding
    np.array([[1, 2, 3], [-2, -1, -1]], np.int32),
])
def test_malformed_word_list_names_the_field(array):
    with pytest.raises(InvalidRequest) as info:
        from_word_list(array, field="stop_words_list")
    assert info.value.field == "stop_words_list"
