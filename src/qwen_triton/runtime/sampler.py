"""Per-request logits processing and sampling. Each row has its own params and its own random generator,
so a seeded request samples the same tokens whatever else shares its batch."""
from __future__ import annotations

import random
from collections import Counter

import torch

from ..vocab import NUM_TOKENIZER_IDS
from .sequence import Sequence
from .staging import PinnedStaging


class Sampler:
    def __init__(self, vocab_size_limit: int = NUM_TOKENIZER_IDS, staging: PinnedStaging | None = None):
        self.vocab_size_limit = vocab_size_limit
        self.staging = staging  # the runner's: host-to-device copies without a sync
        self._generators: dict[int, random.Random] = {}
        # seq_id -> log-probability of the token the last sample() chose, for rows that asked (params.logprobs)
        self.logprobs: dict[int, float] = {}

    def release(self, seq_id: int) -> None:
        self._generators.pop(seq_id, None)
        self.logprobs.pop(seq_id, None)

    @property
    def num_generators(self) -> int:
        return len(self._generators)

    @staticmethod
    def on_device(seq: Sequence) -> bool:
        """This sequence's next token needs no host-side processing (sample_on_device serves it)."""
        return _plain_greedy(seq)

    def sample_on_device(self, logits: torch.Tensor, seqs) -> torch.Tensor:
        """(N,) long ids on logits' device, without a host sync; every seq must be on_device()."""
        # One argmax where the logits are (the GPU): N ids cross to the host instead of N x 152k floats.
        return torch.argmax(self._mask_min_tokens(logits[:, :self.vocab_size_limit], seqs), dim=-1)

    def sample(self, logits: torch.Tensor, seqs) -> list[int]:
        if all(_plain_greedy(seq) for seq in seqs):
            return self.sample_on_device(logits, seqs).tolist()
        logits = logits.float().cpu().clone()  # (N, V); a normal tensor: rows are edited in place
        logits[:, self.vocab_size_limit:] = float("-inf")  # embedding padding is never sampled
        return [self._sample_row(logits[i], seq) for i, seq in enumerate(seqs)]

    def _mask_min_tokens(self, logits: torch.Tensor, seqs) -> torch.Tensor:
        """Stop tokens at -inf for rows below min_tokens, in one indexed write on logits' device."""
        masked = [(i, t) for i, seq in enumerate(seqs) if len(seq.output_ids) < seq.params.min_tokens
                  for t in seq.params.stop_token_ids]
        if not masked:
            return logits
        flat = [i for i, _ in masked] + [t for _, t in masked]
        if self.staging is not None:  # the runner's, on the device of its logits; no sync
            rows, cols = self.staging.to_device(flat).view(2, -1)
        else:  # a blocking copy when logits are on a GPU
            rows, cols = torch.tensor(flat, device=logits.device).view(2, -1)
        logits = logits.contiguous().clone()  # (N, V)
        # index_fill_ takes the value as a scalar argument; `logits[rows, cols] = -inf` would copy it from
        # the host, a blocking copy.
        return logits.view(-1).index_fill_(0, rows * logits.shape[1] + cols, float("-inf")).view(logits.shape)

    def _sample_row(self, row: torch.Tensor, seq: Sequence) -> int:
        params = seq.params
        self._apply_penalties(row, seq)
        if params.logit_bias:
            ids, values = zip(*params.logit_bias)
            row[list(ids)] += torch.tensor(values, dtype=row.dtype)
        self._ban_words(row, seq)
        if len(seq.output_ids) < params.min_tokens:
            row[list(params.stop_token_ids)] = float("-inf")
        if params.greedy:
            return self._chosen(row, int(torch.argmax(row)), seq)
        row = row / params.temperature
        token = self._draw(row.clone() if params.logprobs else row, seq)  # _draw cuts its row in place
        return self._chosen(row, token, seq)

    def _chosen(self, row: torch.Tensor, token: int, seq: Sequence) -> int:
        """Records the token's log-probability when asked: log-softmax of the logits after penalties, bias,
        bans and temperature (none when greedy), before top-k and top-p cut the distribution."""
        if seq.params.logprobs:
            self.logprobs[seq.seq_id] = float(torch.log_softmax(row, dim=-1)[token])
        return token

    def _draw(self, row: torch.Tensor, seq: Sequence) -> int:
        params = seq.params
        if params.top_k > 0:
            kth = torch.topk(row, min(params.top_k, row.numel())).values[-1]
            row[row < kth] = float("-inf")
        probs = torch.softmax(row, dim=-1)
        if params.top_p < 1.0:
            probs = _top_p(probs, params.top_p)
        # Inverse CDF with one uniform draw: exact, and far cheaper than multinomial over 152k ids.
        cdf = torch.cumsum(probs, dim=-1)
        u = torch.tensor([self._generator(seq).random()], dtype=cdf.dtype) * cdf[-1]
        return min(int(torch.searchsorted(cdf, u, right=True)), probs.numel() - 1)

    def _generator(self, seq: Sequence) -> random.Random:
        # random.Random takes every bit of a uint64 seed; torch.Generator's CPU engine keeps only the low 32.
        generator = self._generators.get(seq.seq_id)
        if generator is None:
            seed = seq.params.seed if seq.params.seed is not None else random.getrandbits(64)
            generator = self._generators[seq.seq_id] = random.Random(seed)
        return generator

    @staticmethod
    def _apply_penalties(row: torch.Tensor, seq: Sequence) -> None:
        params = seq.params
        if params.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(seq.token_ids)), dtype=torch.long)
            values = row[seen]
            row[seen] = torch.where(values > 0, values / params.repetition_penalty, values * params.repetition_penalty)
        if (params.presence_penalty or params.frequency_penalty) and seq.output_ids:
            counts = Counter(seq.output_ids)
            ids = torch.tensor(list(counts), dtype=torch.long)
            freq = torch.tensor(list(counts.values()), dtype=row.dtype)
            row[ids] -= params.presence_penalty + params.frequency_penalty * freq

    @staticmethod
    def _ban_words(row: torch.Tensor, seq: Sequence) -> None:
        banned = seq.params.banned.banned(seq.output_ids)
        if banned:
            row[banned] = float("-inf")


def _plain_greedy(seq: Sequence) -> bool:
    p = seq.params
    return (p.greedy and p.repetition_penalty == 1.0 and not p.presence_penalty and not p.frequency_penalty
            and not p.bad_words_ids and not p.logit_bias and not p.logprobs)


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely ids whose mass reaches top_p (at least one id).
    Peaked distributions are settled by a small top-k; only flat ones pay for the full sort."""
    top, order = torch.topk(probs, min(1024, probs.numel()))  # descending
    if top.sum() < top_p:
        top, order = torch.sort(probs, descending=True)
    drop = torch.cumsum(top, dim=-1) - top >= top_p
    top[drop] = 0.0
    return torch.zeros_like(probs).scatter_(0, order, top)
