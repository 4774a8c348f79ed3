"""The runtimes behind the tensorrt_llm model, selected by its `runtime` parameter.

Both answer the same interface (LLMEngine): token ids in, TokenEvents out through a sink, so the
service's text handling (UTF-8 cuts, stop strings, Qwen stop tokens) is shared and identical.
"""
from __future__ import annotations

from typing import Callable, Protocol

from ..config import EngineFolder
from ..runtime.engine import EngineStats, Sink
from ..runtime.request import SamplingParams
from .model_params import LLMModelParams
from .stats_reporter import StatsReporter

StatsCallback = Callable[[EngineStats], None]


class LLMEngine(Protocol):
    def submit(self, prompt_ids: list[int], params: SamplingParams, sink: Sink) -> int: ...
    def abort(self, seq_id: int) -> None: ...
    def stalled_s(self) -> float: ...  # seconds without progress while work waits; 0 when idle
    def shutdown(self, timeout: float = 10.0) -> None: ...


def start_engine(params: LLMModelParams, folder: EngineFolder, on_stats: StatsCallback | None) -> LLMEngine:
    on_stats = StatsReporter(on_stats) if on_stats is not None else None  # never an IPC on the engine thread
    if params.runtime == "tensorrt_llm":
        from ..trtllm.executor_engine import start_executor_engine  # imports tensorrt_llm

        return start_executor_engine(folder, on_stats=on_stats)
    from ..runtime.engine import Engine
    from ..runtime.model_runner import ModelRunner  # torch import only when this runtime is chosen

    runner = ModelRunner(folder, device=params.device or None, dtype=params.dtype or None)
    if runner.device.type == "cpu":
        import torch

        torch.set_num_threads(params.torch_cpu_threads())
    engine = Engine(runner, folder.config.limits, on_stats=on_stats)
    engine.start()
    return engine
