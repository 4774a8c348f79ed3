"""Incremental detokenizer: chunks end on UTF-8 boundaries, concatenate to the full decode, cut stop strings."""
import random

import pytest

from qwen_triton.text.detokenizer import TextStream
from qwen_triton.text.tokenizer import QwenTokenizer

tok = QwenTokenizer.load()
# Byte-level tokens a random-weight model emits: lone lead and continuation bytes.
LONE_BYTES = [i for i in range(151643) if len(tok.token_bytes(i)) == 1 and tok.token_bytes(i)[0] >= 0x80]


def _run(ids, stops=()):
    stream, releases = TextStream(tok, stops), []
    for token in ids:
        releases.append(stream.push(token))
        if releases[-1].stopped:
            return releases
    releases.append(stream.finish())
    return releases


def test_lone_byte_tokens_exist():
    assert len(LONE_BYTES) >= 100


@pytest.mark.parametrize("seed", range(20))
def test_random_byte_tokens_concatenate_exactly(seed):
    rng = random.Random(seed)
    pool = LONE_BYTES + tok.encode("中文字符和表情🎉，混合 text") + [rng.randrange(151643) for _ in range(50)]
    ids = [rng.choice(pool) for _ in range(200)]
    releases = _run(ids)
    assert "".join(r.text for r in releases) == tok.decode(ids)
    for r in releases:
        assert tok.decode(r.token_ids) == r.text  # each chunk decodes alone: no split characters
    assert [t for r in releases for t in r.token_ids] == ids


def test_chinese_streams_in_whole_characters():
    text = "我们今天去公园散步，天气非常好。🎉"
    releases = _run(tok.encode(text))
    assert "".join(r.text for r in releases) == text
    assert "\ufffd" not in "".join(r.text for r in releases)


def test_emoji_split_over_byte_tokens_is_held_until_complete():
    emoji = "🎉".encode()
    byte_ids = [next(i for i in LONE_BYTES + list(range(256)) if tok.token_bytes(i) == bytes([b])) for b in emoji]
    stream = TextStream(tok)
    assert [stream.push(i).text for i in byte_ids] == ["", "", "", "🎉"]


def test_stop_string_spanning_tokens_ends_with_the_text_before_it():
    ids = tok.encode("The answer is 42.\n\nUser: next question")
    releases = _run(ids, stops=["\n\nUser"])
    assert releases[-1].stopped
    assert "".join(r.text for r in releases) == "The answer is 42."


def test_stop_string_starting_mid_token():
    ids = [tok.encode("hello!!")[0], *tok.encode("!! world")]
    first = tok.decode(ids[:1])
    stop = first[-1] + "!!"
    releases = _run(ids, stops=[stop])
    text = "".join(r.text for r in releases)
    assert releases[-1].stopped and text == (first + tok.decode(ids[1:])).split(stop)[0]
    assert tok.decode(releases[-1].token_ids) == releases[-1].text  # re-tokenized text before the stop


def test_false_alarm_prefix_is_held_then_released():
    stream = TextStream(tok, ["STOP"])
    held = stream.push(tok.encode("ST")[0])
    assert held.text == ""  # could still become STOP
    rest = [stream.push(t) for t in tok.encode("AND then")]
    text = "".join(r.text for r in [held, *rest]) + stream.finish().text
    assert text == tok.decode(tok.encode("ST")[:1]) + "AND then"


def test_earliest_of_two_stop_strings_wins():
    releases = _run(tok.encode("alpha beta gamma delta"), stops=["delta", "beta"])
    assert "".join(r.text for r in releases) == "alpha "


def test_no_work_after_stop():
    stream = TextStream(tok, ["b"])
    assert stream.push(tok.encode("ab")[0]).stopped
    assert stream.push(5).stopped and stream.push(5).text == ""
