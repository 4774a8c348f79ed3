"""Per-request state inside the engine (nano-vllm's sequence.py): token ids, KV block table, status.

Knows nothing about text. A Sequence is owned by the engine thread; other threads only read
`seq_id` and call Engine.abort().
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from enum import Enum

from ..errors import InvalidRequest
from ..vocab import STOP_TOKEN_IDS


MIN_TEMPERATURE = 1e-5  # vLLM's _SAMPLING_EPS: lower temperatures sample greedily


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    min_tokens: int = 0  # stop tokens are masked until this many tokens were generated
    temperature: float = 0.0  # 0 -> greedy
    top_k: int = 0  # 0 -> off, 1 -> greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # HF semantics: divide positive logits of seen tokens
    presence_penalty: float = 0.0  # OpenAI semantics: subtract once per seen token
    frequency_penalty: float = 0.0  # OpenAI semantics: subtract per occurrence
    seed: int | None = None  # same seed -> same tokens, whatever else is in the batch
    stop_token_ids: tuple[int, ...] = STOP_TOKEN_IDS
    bad_words_ids: tuple[tuple[int, ...], ...] = ()  # token sequences never completed
    logit_bias: tuple[tuple[int, float], ...] = ()  # (id, value) added to that id's logit (embedding_bias)
    logprobs: bool = False  # report each sampled token's log-probability (return_log_probs)
    banned: "BannedWords" = field(init=False, repr=False, compare=False)  # bad_words_ids, indexed

    def __post_init__(self):
        _check(self.max_tokens > 0, "max_tokens", f"must be > 0, got {self.max_tokens}")
        _check(0 <= self.min_tokens <= self.max_tokens, "min_tokens", f"must be in [0, max_tokens], got {self.min_tokens}")
        _check(math.isfinite(self.temperature) and self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        _check(self.top_k >= 0, "top_k", f"must be >= 0, got {self.top_k}")
        _check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1] (0 from a client means off), got {self.top_p}")
        _check(self.repetition_penalty > 0, "repetition_penalty", f"must be > 0, got {self.repetition_penalty}")
        _check(math.isfinite(self.presence_penalty), "presence_penalty", "must be finite")
        _check(math.isfinite(self.frequency_penalty), "frequency_penalty", "must be finite")
        _check(self.seed is None or 0 <= self.seed < 2**64, "seed", "must fit in uint64")
        _check(all(len(w) > 0 for w in self.bad_words_ids), "bad_words", "empty bad word")
        _check(all(math.isfinite(v) for _, v in self.logit_bias), "embedding_bias", "values must be finite")
        # Built here, on the thread that submits, so the engine thread only looks words up.
        object.__setattr__(self, "banned", BannedWords(self.bad_words_ids))

    @property
    def greedy(self) -> bool:
        # Below MIN_TEMPERATURE, dividing the logits overflows to inf/nan; the limit of sampling is argmax.
        return self.temperature < MIN_TEMPERATURE or self.top_k == 1


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise InvalidRequest(name, message)


class BannedWords:
    """Bad words indexed by what must precede their last id: the ids banned after some output cost one
    lookup per distinct prefix length, however many words there are."""

    def __init__(self, words: tuple[tuple[int, ...], ...]):
        self.always = tuple(sorted({w[0] for w in words if len(w) == 1}))
        after: dict[int, dict[tuple[int, ...], list[int]]] = {}  # prefix length -> prefix -> last ids
        for word in words:
            if len(word) > 1:
                after.setdefault(len(word) - 1, {}).setdefault(tuple(word[:-1]), []).append(word[-1])
        self.after = after

    def __bool__(self) -> bool:
        return bool(self.always or self.after)

    def banned(self, output_ids: list[int]) -> list[int]:
        """Ids whose sampling would complete a bad word right after output_ids."""
        ids = list(self.always)
        for length, table in self.after.items():
            if len(output_ids) >= length:
                ids.extend(table.get(tuple(output_ids[-length:]), ()))
        return ids


class SequenceStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(str, Enum):
    STOP = "stop"  # stop token or stop string
    LENGTH = "length"  # max_tokens or max_seq_len reached
    CANCELLED = "cancelled"  # client cancelled or disconnected
    ERROR = "error"  # the runtime failed this request (others go on)


_seq_ids = itertools.count()

# Stands in Sequence.output_ids for a token whose step is still in flight on the device (engine overlap);
# never a real id, never fed to the model (the runner takes that token from the device instead).
PENDING_TOKEN = -1


class Sequence:
    """One request's tokens and KV placement. Internal ids only: client ids are never trusted as keys."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams):
        if not prompt_ids:
            raise InvalidRequest("input_ids", "empty prompt")
        self.seq_id = next(_seq_ids)
        self.prompt_ids = list(prompt_ids)
        self.output_ids: list[int] = []
        self.params = params
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []  # physical KV block per logical block
        self.num_cached_tokens = 0  # leading tokens whose K/V are written in the cache
        self.finish_reason: FinishReason | None = None

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def last_token_id(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]

    @property
    def num_uncached_tokens(self) -> int:
        return len(self) - self.num_cached_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def has_pending_token(self) -> bool:
        return bool(self.output_ids) and self.output_ids[-1] == PENDING_TOKEN

    def num_blocks_needed(self, block_size: int) -> int:
        return (len(self) + block_size - 1) // block_size
