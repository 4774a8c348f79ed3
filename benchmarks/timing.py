"""GPU time per call of small kernels as a decode step runs them: captured back to back in one CUDA graph, so
host launch cost (large for Triton kernels called eagerly) is not measured."""
from __future__ import annotations

import torch


def graph_ms(calls, replays: int = 10) -> float:
    """Mean ms per call of `calls` (a list of thunks) captured back to back in one graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for call in calls:
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / replays / len(calls)
