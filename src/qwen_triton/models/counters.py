"""Done-counters of the kernels whose programs split one output among them and let the last to finish combine
the parts (paged_attention's decode splits, gemv.split_k's K splits): int32, one per output row or tile, all zero
between launches (each launch's last program zeroes what it counted). Shared by every such launch on a device:
launches on one stream never overlap (programmatic dependent launch waits for the launch before), and the
runtime runs a model on one stream."""
from __future__ import annotations

import torch

# Per device, every counter buffer made so far, the newest (largest) last. A grown buffer never frees the
# ones before it: CUDA graphs captured with them keep their addresses and still run.
_counters: dict[torch.device, list[torch.Tensor]] = {}


def split_counters(device: torch.device, rows: int) -> torch.Tensor:
    """The device's int32 done-counters, at least `rows` of them, all 0. Grown only outside graph capture; a
    capture's warm-up run with the same shapes grows it first."""
    cuda = device.type == "cuda"
    if cuda and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    made = _counters.setdefault(device, [])
    if not made or made[-1].numel() < rows:
        if cuda and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("split counters grown inside a CUDA graph capture; warm up first")
        made.append(torch.zeros(max(rows, 4096), dtype=torch.int32, device=device))
    return made[-1]
