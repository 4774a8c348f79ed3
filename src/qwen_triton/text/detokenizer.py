"""Incremental detokenizer for one generated stream: it releases token ids only where the UTF-8 decoder is empty
and never text that could still become a stop string, so released chunks decode on their own and concatenate
to exactly tokenizer.decode(all ids); it must not re-decode text it already decoded, nor know the engine."""
from __future__ import annotations

import codecs
from collections import deque
from dataclasses import dataclass
from typing import Sequence

from .tokenizer import QwenTokenizer


@dataclass(frozen=True)
class Release:
    token_ids: tuple[int, ...] = ()  # tokenizer.decode(token_ids) == text, always
    text: str = ""
    stopped: bool = False  # a stop string matched: the request must end now


_NOTHING = Release()
_STOPPED = Release(stopped=True)


def _failure(pattern: str) -> list[int]:
    """KMP failure function: fail[i] = length of the longest proper border of pattern[:i + 1]."""
    fail = [0] * len(pattern)
    k = 0
    for i in range(1, len(pattern)):
        while k and pattern[i] != pattern[k]:
            k = fail[k - 1]
        if pattern[i] == pattern[k]:
            k += 1
        fail[i] = k
    return fail


# Work per push is O(token bytes x number of stop strings): each token's bytes go through one incremental
# UTF-8 decoder once, and each stop string is matched by a KMP automaton over the new characters only.
class StopMatcher:
    """Finds stop strings in text fed piecewise. `held` is the longest suffix of everything fed that is a
    (proper) prefix of some stop string: text that must not be released yet."""

    def __init__(self, stop_strings: Sequence[str]):
        self.stops = tuple(dict.fromkeys(s for s in stop_strings if s))
        self._fail = [_failure(s) for s in self.stops]
        self._state = [0] * len(self.stops)  # per stop: matched prefix length at the end of the fed text
        self.held = 0

    def feed(self, text: str, offset: int) -> int | None:
        """Advance over `text`, whose first char sits at `offset` in the stream; return the stream offset
        where the earliest-starting stop string that completed in `text` begins, else None."""
        earliest = None
        for k, stop in enumerate(self.stops):
            fail, state = self._fail[k], self._state[k]
            for i, char in enumerate(text):
                while state and stop[state] != char:
                    state = fail[state - 1]
                if stop[state] == char:
                    state += 1
                    if state == len(stop):
                        start = offset + i + 1 - state
                        earliest = start if earliest is None else min(earliest, start)
                        break
            self._state[k] = state
        self.held = max(self._state, default=0)
        return earliest


class TextStream:
    """One request's generated tokens -> Releases. After a stop string matched, push() and finish() return
    an empty stopped Release; after finish(), push() raises RuntimeError (the caller ended the stream)."""

    def __init__(self, tokenizer: QwenTokenizer, stop_strings: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self._matcher = StopMatcher(stop_strings) if any(stop_strings) else None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # Pushed but not yet released: ids, and the text the decoder gave back for each (often "").
        self._ids: list[int] = []
        self._pieces: list[str] = []
        self._released = (0, 0)  # stream totals (ids, chars) released so far
        self._pushed_chars = 0
        # Stream totals (ids, chars) after each token that left the decoder empty, oldest first.
        self._safe: deque[tuple[int, int]] = deque()
        self.stopped = False
        self.finished = False

    def push(self, token_id: int) -> Release:
        if self.stopped:
            return _STOPPED
        if self.finished:
            raise RuntimeError("push() after finish()")
        new_text = self._decoder.decode(self.tokenizer.token_bytes(token_id))
        self._ids.append(token_id)
        self._pieces.append(new_text)
        offset = self._pushed_chars
        self._pushed_chars += len(new_text)
        if self._matcher is not None and new_text:
            start = self._matcher.feed(new_text, offset)
            if start is not None:
                return self._stop(start)
        if self._decoder.getstate()[0] == b"":
            self._safe.append((self._released[0] + len(self._ids), self._pushed_chars))
        held = self._matcher.held if self._matcher is not None else 0
        return self._release_upto(self._pushed_chars - held)

    def finish(self) -> Release:
        """Flushes all held tokens: bytes of an unfinished character decode to U+FFFD, as in decode()."""
        if self.stopped:
            return _STOPPED
        if self.finished:
            raise RuntimeError("finish() called twice")
        self.finished = True
        tail = self._decoder.decode(b"", final=True)
        if tail:
            offset = self._pushed_chars
            self._pieces.append(tail)
            self._pushed_chars += len(tail)
            start = self._matcher.feed(tail, offset) if self._matcher is not None else None
            if start is not None:
                return self._stop(start)
        release = Release(tuple(self._ids), "".join(self._pieces))
        self._ids, self._pieces = [], []
        return release

    def _stop(self, start: int) -> Release:
        """Ends the stream with the text before a stop string that begins at stream char offset `start`."""
        self.stopped = True
        released_ids, released_chars = self._released
        text = "".join(self._pieces)[:start - released_chars]
        ids = next((self._ids[:n - released_ids] for n, c in self._safe if c == start), None)
        if ids is None:
            # The stop string begins inside a token (or among an unfinished character's bytes):
            # re-tokenize the text before it; decode(encode(s)) == s for every str, U+FFFD included.
            ids = self.tokenizer.encode(text)
        self._ids, self._pieces, self._safe = [], [], deque()
        return Release(tuple(ids), text, stopped=True)

    def _release_upto(self, char_limit: int) -> Release:
        """Releases through the last safe token boundary at or before stream char offset `char_limit`."""
        cut = None
        while self._safe and self._safe[0][1] <= char_limit:
            cut = self._safe.popleft()
        if cut is None:
            return _NOTHING
        n = cut[0] - self._released[0]
        release = Release(tuple(self._ids[:n]), "".join(self._pieces[:n]))
        del self._ids[:n], self._pieces[:n]
        self._released = cut
        return release
