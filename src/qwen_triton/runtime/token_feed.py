"""Sampled token ids on their way from the device to the host. The engine launches step N+1 before it reads
step N's tokens (the GPU computes while the host settles the step before), so step N+1's input ids come
from step N's ids where they are, on the device, and step N's ids reach the host by an async copy."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .staging import HostRing


@dataclass(frozen=True)
class TokenFeed:
    """Step N's sampled ids for step N+1's inputs: sequence seq_id's token is tokens[rows[seq_id]]."""

    tokens: torch.Tensor  # (N,) long, on the runner's device
    rows: dict[int, int]

    def token(self, seq_id: int) -> int:
        """Host value (a device sync): for runners that compute on the host."""
        return int(self.tokens[self.rows[seq_id]])


class PendingTokens:
    """A device-to-host copy of (N,) ids, started now and waited for only when the ids are read."""

    def __init__(self, tokens: torch.Tensor, host_ring: HostRing):
        """tokens (N,) long; host_ring gives the pinned destination when tokens are on a GPU."""
        self._ready = None
        if tokens.is_cuda:
            self._host = host_ring.buffer(tokens.numel())
            self._host.copy_(tokens, non_blocking=True)
            self._ready = torch.cuda.Event()
            self._ready.record()
        else:
            self._host = tokens

    def wait(self) -> list[int]:
        if self._ready is not None:
            self._ready.synchronize()
        return self._host.tolist()
