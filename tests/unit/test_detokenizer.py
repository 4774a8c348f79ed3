"""TextStream: chunks cut only at UTF-8 boundaries, concatenating to exactly decode(all ids); stop strings cut on
text, wherever they fall relative to tokens; linear work."""
import random

import pytest

from qwen_triton.text.detokenizer import Release, TextStream
from qwen_triton.text.tokenizer import QwenTokenizer
from qwen_triton.vocab import NUM_BPE_RANKS

tok = QwenTokenizer.load()


def _invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


BYTE_ID = {tok.token_bytes(i)[0]: i for i in range(NUM_BPE_RANKS) if len(tok.token_bytes(i)) == 1}
LEADS = [BYTE_ID[b] for b in range(0xC2, 0xF5)]
CONTINUATIONS = [BYTE_ID[b] for b in range(0x80, 0xC0)]
# Multi-byte tokens that are not UTF-8 on their own: halves of CJK characters, " \xe6\x88" and the like.
PARTIAL = [i for i in range(NUM_BPE_RANKS) if len(tok.token_bytes(i)) > 1 and _invalid_utf8(tok.token_bytes(i))]
TEXTY = tok.encode("我们今天去公园散步，天气非常好。中文字符 𠀀龘靐齉 emoji 🎉👍🏽👨‍👩‍👧 text\n\nUser: ok")


def run(ids, stops=()):
    stream, releases = TextStream(tok, stops), []
    for token in ids:
        releases.append(stream.push(token))
        if releases[-1].stopped:
            return releases
    releases.append(stream.finish())
    return releases


def joined(releases):
    return "".join(r.text for r in releases)


def assert_chunks_decode_alone(releases):
    for r in releases:
        assert tok.decode(r.token_ids) == r.text


def bytes_as_tokens(data: bytes, rng: random.Random) -> list[int]:
    """A non-canonical tokenization of `data`: random byte cuts, each piece BPE-encoded on its own bytes."""
    ids, i = [], 0
    while i < len(data):
        j = min(len(data), i + rng.randint(1, 6))
        piece = data[i:j]
        ids += tok.encode(piece.decode("utf-8")) if not _invalid_utf8(piece) else [BYTE_ID[b] for b in piece]
        i = j
    assert tok.decode_bytes(ids) == data
    return ids


def test_byte_pools_exist():
    assert len(BYTE_ID) == 256 and len(PARTIAL) > 1000
    assert any(_invalid_utf8(tok.token_bytes(i)) for i in TEXTY)  # canonical Chinese text has split characters


@pytest.mark.parametrize("seed", range(25))
def test_random_tokens_concatenate_to_the_full_decode(seed):
    rng = random.Random(seed)
    pools = [LEADS, CONTINUATIONS, PARTIAL, TEXTY, range(NUM_BPE_RANKS)]
    ids = [rng.choice(rng.choice(pools)) for _ in range(300)]
    releases = run(ids)
    assert joined(releases) == tok.decode(ids)
    assert_chunks_decode_alone(releases)
    assert [t for r in releases for t in r.token_ids] == ids
    assert not any(r.stopped for r in releases)


@pytest.mark.parametrize("seed", range(5))
def test_special_ids_are_zero_width(seed):
    rng = random.Random(seed)
    ids = [rng.choice([*LEADS, *CONTINUATIONS, *TEXTY, 151643, 151645, 151850]) for _ in range(200)]
    releases = run(ids)
    assert joined(releases) == tok.decode(ids)
    assert_chunks_decode_alone(releases)
    assert [t for r in releases for t in r.token_ids] == ids


def test_chinese_streams_in_whole_characters():
    text = "我们今天去公园散步，天气非常好。生僻字：𠀀龘靐齉。"
    releases = run(tok.encode(text))
    assert joined(releases) == text
    assert all("\ufffd" not in r.text for r in releases)
    assert_chunks_decode_alone(releases)


def test_no_stop_strings_means_no_holding_beyond_utf8():
    ids = tok.encode("plain ascii text, nothing held back\n\nUser: at all")
    stream = TextStream(tok)
    assert [stream.push(i).token_ids for i in ids] == [(i,) for i in ids]


def test_emoji_split_over_byte_tokens_is_held_until_complete():
    byte_ids = [BYTE_ID[b] for b in "🎉".encode()]
    stream = TextStream(tok)
    releases = [stream.push(i) for i in byte_ids]
    assert [r.text for r in releases] == ["", "", "", "🎉"]
    assert releases[-1].token_ids == tuple(byte_ids)


def test_finish_flushes_an_unfinished_character_as_decode_does():
    stream = TextStream(tok)
    assert stream.push(tok.encode("a")[0]).text == "a"
    assert stream.push(BYTE_ID[0xE4]) == Release()
    final = stream.finish()
    assert final.text == "\ufffd" == tok.decode(final.token_ids)
    with pytest.raises(RuntimeError):
        stream.push(5)


def test_stop_string_spanning_three_tokens():
    ids = tok.encode("alpha beta gamma delta")
    assert [tok.decode([i]) for i in ids] == ["alpha", " beta", " gamma", " delta"]
    releases = run(ids, [" beta gamma delta"])
    assert [r.text for r in releases] == ["alpha", "", "", ""]
    assert releases[-1].stopped and releases[-1].token_ids == ()


def test_stop_string_at_a_token_boundary():
    ids = tok.encode("hello\n\n") + tok.encode("User")
    releases = run(ids, ["\n\nUser"])
    assert joined(releases) == "hello" and releases[-1].stopped
    assert [t for r in releases for t in r.token_ids] == tok.encode("hello")


def test_stop_string_starting_mid_token():
    ids = tok.encode("hello!\n\nUser")
    assert tok.decode(ids[1:2]) == "!\n\n"  # the stop string begins inside this token
    releases = run(ids, ["\n\nUser"])
    assert joined(releases) == "hello!" and releases[-1].stopped
    assert releases[-1].text == "!" and releases[-1].token_ids == tuple(tok.encode("!"))  # re-tokenized


def test_stop_string_ending_mid_token():
    ids = tok.encode("hello\n\nUsers")
    assert tok.decode(ids[-1:]) == "Users"
    releases = run(ids, ["\n\nUser"])
    assert joined(releases) == "hello" and releases[-1].stopped


def test_false_alarm_prefix_is_held_then_released():
    ids = tok.encode("hi\n\nUsual")
    assert [tok.decode([i]) for i in ids] == ["hi", "\n\n", "Us", "ual"]
    releases = run(ids, ["\n\nUser"])
    assert [r.text for r in releases] == ["hi", "", "", "\n\nUsual", ""]
    assert not any(r.stopped for r in releases)


def test_earliest_of_two_stop_strings_wins():
    assert joined(run(tok.encode("alpha beta gamma delta"), ["delta", "beta"])) == "alpha "
    # Both complete inside the same token " delta": the one starting first wins, whatever the order given.
    assert joined(run(tok.encode("x delta"), ["lt", "de"])) == "x "


def test_stop_string_completed_by_the_final_flush():
    stream = TextStream(tok, ["x\ufffd"])
    assert stream.push(tok.encode("a")[0]).text == "a"
    assert stream.push(tok.encode("x")[0]) == Release()  # held: it could still become the stop string
    assert stream.push(BYTE_ID[0xE4]) == Release()
    assert stream.finish() == Release((), "", stopped=True)  # the flush's U+FFFD completes "x\ufffd"


def test_nothing_after_a_stop():
    stream = TextStream(tok, ["b"])
    assert stream.push(tok.encode("ab")[0]) == Release(tuple(tok.encode("a")), "a", stopped=True)
    assert stream.push(5) == Release(stopped=True)
    assert stream.finish() == Release(stopped=True)


def _expected_cut(text, stops):
    # Valid when no stop string contains another: then the first to complete is also the first to start.
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


@pytest.mark.parametrize("seed", range(30))
def test_random_stop_strings_cut_exactly(seed):
    rng = random.Random(seed)
    stops = ["\n\nUser", "停止", "🎉!", "abab", "\ufffdz"]
    words = ["a", "b", "ab", "\n", "\n\nUs", "er", "停", "止", "🎉", "!", "中文", " ", "z", "ok"]
    text = "".join(rng.choice(words) for _ in range(60))
    ids = bytes_as_tokens(text.encode(), rng)
    if rng.random() < 0.5:
        ids.insert(rng.randrange(len(ids)), rng.choice(LEADS))  # U+FFFD can complete "\ufffdz"
    expected, stopped = _expected_cut(tok.decode(ids), stops)
    releases = run(ids, stops)
    assert joined(releases) == expected and releases[-1].stopped == stopped
    assert_chunks_decode_alone(releases)


@pytest.mark.parametrize("seed", range(20))
def test_self_overlapping_stop_strings(seed):
    rng = random.Random(100 + seed)
    text = "".join(rng.choice("ab") for _ in range(40))
    stops = ["abaab", "bbb"]
    ids = bytes_as_tokens(text.encode(), rng)
    expected, stopped = _expected_cut(text, stops)
    releases = run(ids, stops)
    assert joined(releases) == expected and releases[-1].stopped == stopped


class CountingTokenizer:
    def __init__(self):
        self.calls = {"token_bytes": 0, "decode": 0, "encode": 0}

    def token_bytes(self, token_id):
        self.calls["token_bytes"] += 1
        return tok.token_bytes(token_id)

    def decode(self, ids):
        self.calls["decode"] += 1
        return tok.decode(ids)

    def encode(self, text):
        self.calls["encode"] += 1
        return tok.encode(text)


def test_linear_work_and_bounded_backlog():
    rng = random.Random(3)
    ids = bytes_as_tokens(("ab\n\nUs中文 🎉 " * 3000).encode(), rng)
    counting = CountingTokenizer()
    stream, released, backlog = TextStream(counting, ["\n\nUser:", "ab ab"]), 0, 0
    for n, token in enumerate(ids, 1):
        released += len(stream.push(token).token_ids)
        backlog = max(backlog, n - released)
    released += len(stream.finish().token_ids)
    assert released == len(ids) > 20000
    assert counting.calls == {"token_bytes": len(ids), "decode": 0, "encode": 0}  # each byte decoded once
    assert backlog <= 12  # held tokens never pile up: the held text is at most len(stop) - 1 chars
