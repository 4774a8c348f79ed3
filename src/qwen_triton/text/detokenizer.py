"""Incremental detokenizer for one generated stream: releases token ids only at UTF-8 boundaries and never
text that could still turn into a stop string, so released chunks concatenate to the full decode.

O(token bytes + longest stop string) work per token; never re-decodes what it already decoded.
Knows tokens and text; knows nothing of the engine or Triton.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Sequence

from .tokenizer import QwenTokenizer


@dataclass(frozen=True)
class Release:
    token_ids: tuple[int, ...] = ()  # tokenizer.decode(token_ids) == text
    text: str = ""
    stopped: bool = False  # a stop string matched: the request must end now


class TextStream:
    def __init__(self, tokenizer: QwenTokenizer, stop_strings: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.max_stop_len = max((len(s) for s in self.stop_strings), default=0)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._ids: list[int] = []  # pushed, not released
        self._text = ""  # decoded text of self._ids (complete characters only)
        # (number of ids, length of text) at token boundaries where the decoder holds no bytes.
        self._safe: list[tuple[int, int]] = []
        self.stopped = False

    def push(self, token_id: int) -> Release:
        if self.stopped:
            return Release(stopped=True)
        new_text = self._decoder.decode(self.tokenizer.token_bytes(token_id))
        self._ids.append(token_id)
        search_from = max(0, len(self._text) - self.max_stop_len + 1)
        self._text += new_text
        if self._decoder.getstate()[0] == b"":
            self._safe.append((len(self._ids), len(self._text)))
        stop_at = self._find_stop(search_from)
        if stop_at is not None:
            self.stopped = True
            text = self._text[:stop_at]
            # The sampled tokens may straddle the stop string's start: re-tokenize the text before it.
            return Release(tuple(self.tokenizer.encode(text)), text, stopped=True)
        return self._release_upto(len(self._text) - self._held_suffix())

    def finish(self) -> Release:
        if self.stopped:
            return Release(stopped=True)
        self._text += self._decoder.decode(b"", final=True)
        release = Release(tuple(self._ids), self._text)
        self._ids, self._text, self._safe = [], "", []
        return release

    def _find_stop(self, start: int) -> int | None:
        found = [i for i in (self._text.find(s, start) for s in self.stop_strings) if i >= 0]
        return min(found) if found else None

    def _held_suffix(self) -> int:
        """Length of the longest suffix of the unreleased text that begins some stop string."""
        for k in range(min(self.max_stop_len - 1, len(self._text)), 0, -1):
            tail = self._text[-k:]
            if any(s.startswith(tail) for s in self.stop_strings):
                return k
        return 0

    def _release_upto(self, text_limit: int) -> Release:
        cut = None
        for boundary in self._safe:
            if boundary[1] <= text_limit:
                cut = boundary
        if cut is None or cut[0] == 0:
            return Release()
        n_ids, n_chars = cut
        release = Release(tuple(self._ids[:n_ids]), self._text[:n_chars])
        self._ids, self._text = self._ids[n_ids:], self._text[n_chars:]
        self._safe = [(i - n_ids, c - n_chars) for i, c in self._safe if i > n_ids]
        return release
