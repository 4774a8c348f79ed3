"""Host-to-device copies of small int64 inputs without a device sync and without allocating pinned memory
per step. A copy from pageable memory waits for the stream (that is, for the step in flight), and a
pinned allocation per step takes a large share of the engine thread's time under load (docs/perf-log.md); so
each copy goes through the next buffer of a ring of pinned buffers allocated once.

Invariant: a buffer is reused RING_SIZE copies later. A step makes at most two copies and the engine
keeps at most one step in flight, so a reused buffer's copy ran before a step that has been waited for."""
from __future__ import annotations

import torch

RING_SIZE = 8


class PinnedStaging:
    def __init__(self, device: torch.device, ring_size: int = RING_SIZE):
        self.device = device
        self.pinned = device.type == "cuda"
        self._ring = [torch.empty(4096, dtype=torch.long, pin_memory=True) for _ in range(ring_size)] if self.pinned else []
        self._next = 0

    def to_device(self, values: list[int]) -> torch.Tensor:
        """(len(values),) long on the device, enqueued on the current stream."""
        if not self.pinned:
            return torch.tensor(values, dtype=torch.long, device=self.device)
        slot, n = self._next, len(values)
        self._next = (slot + 1) % len(self._ring)
        if self._ring[slot].numel() < n:  # grown once; the old buffer lives until its copy is done
            self._ring[slot] = torch.empty(2 * n, dtype=torch.long, pin_memory=True)
        host = self._ring[slot][:n]
        host.numpy()[:] = values
        return host.to(self.device, non_blocking=True)


class HostRing:
    """The device-to-host direction: pinned (n,) destinations reused RING_SIZE requests later."""

    def __init__(self, ring_size: int = RING_SIZE):
        self.ring_size = ring_size
        self._ring: list[torch.Tensor] = []  # allocated at first use: constructing one needs no CUDA
        self._next = 0

    def buffer(self, n: int) -> torch.Tensor:
        if not self._ring:
            self._ring = [torch.empty(256, dtype=torch.long, pin_memory=True) for _ in range(self.ring_size)]
        slot = self._next
        self._next = (slot + 1) % len(self._ring)
        if self._ring[slot].numel() < n:
            self._ring[slot] = torch.empty(2 * n, dtype=torch.long, pin_memory=True)
        return self._ring[slot][:n]
