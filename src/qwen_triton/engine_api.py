"""The engine contract, torch-free: what a request asks (SamplingParams), what comes back (TokenEvent through a
Sink, ending with a FinishReason), the occupancy an engine reports (EngineStats), and the LLMEngine protocol
that both runtimes implement (the torch engine, runtime/, and TensorRT-LLM's Executor adapter, trtllm/).

Serving code and the TensorRT-LLM adapter import only this module, never the torch runtime (a test holds it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Protocol

from .errors import InvalidRequest
from .vocab import ENDOFTEXT_ID, STOP_TOKEN_IDS


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
    # What TensorRT-LLM pads its output buffers with; the torch engine pads nothing. No TokenEvent ever carries
    # padding: each holds exactly the ids generated.
    pad_id: int = ENDOFTEXT_ID
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


class FinishReason(str, Enum):
    STOP = "stop"  # stop token or stop string
    LENGTH = "length"  # max_tokens or max_seq_len reached
    CANCELLED = "cancelled"  # client cancelled or disconnected
    ERROR = "error"  # the runtime failed this request (others go on)


@dataclass(frozen=True)
class TokenEvent:
    seq_id: int
    new_token_ids: tuple[int, ...]  # usually one; () on cancel/error
    finish_reason: FinishReason | None  # None while running
    num_prompt_tokens: int
    num_output_tokens: int  # len(seq.output_ids) so far, stop token included
    error: str | None = None
    logprobs: tuple[float, ...] = ()  # of new_token_ids, when the request asked (SamplingParams.logprobs)


# Called on the engine thread; returning False ends the request now (the sink has answered already).
Sink = Callable[[TokenEvent], bool]


@dataclass(frozen=True)
class EngineStats:
    """Occupancy now, and what the last engine step did. None: this runtime cannot tell (never published)."""

    running: int
    waiting: int
    free_kv_blocks: int
    max_running: int | None = None  # the batch size limit
    max_kv_blocks: int | None = None
    used_kv_blocks: int | None = None
    tokens_per_kv_block: int | None = None
    # Prefix reuse (enable_kv_cache_reuse), since start: full prompt blocks found in the cache and not computed,
    # and full prompt blocks computed (TensorRT-LLM's reusedBlocks / missedBlocks).
    reused_kv_blocks: int | None = None
    missed_kv_blocks: int | None = None
    # The last step (they hold while the engine is idle, as TensorRT-LLM's iteration stats do):
    scheduled: int | None = None  # sequences computed
    context: int | None = None  # of which in their context phase (prefill)
    context_tokens: int | None = None  # tokens those prefills computed
    paused: int | None = None  # sequences preempted (KV freed, recomputed later)
    micro_batch_id: int | None = None
    iteration: int | None = None  # steps run since start
    timestamp_s: float | None = None  # Unix time of the last step
    # Bytes the runtime allocated (TensorRT-LLM's memory counters):
    gpu_mem_bytes: int | None = None
    cpu_mem_bytes: int | None = None
    pinned_mem_bytes: int | None = None


class LLMEngine(Protocol):
    """Token ids in, TokenEvents out through the request's sink; the same for both runtimes."""

    # Raises InvalidRequest("input_ids") for a prompt it can never take (beyond max_input_len or its KV cache).
    def submit(self, prompt_ids: list[int], params: SamplingParams, sink: Sink) -> int: ...
    def abort(self, seq_id: int) -> None: ...  # ends the request at the next step: a final CANCELLED event
    def stats(self) -> EngineStats: ...
    def stalled_s(self) -> float: ...  # seconds without progress while work waits; 0 when idle
    def shutdown(self, timeout: float = 10.0) -> None: ...
