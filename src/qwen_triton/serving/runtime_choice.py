"""The runtimes behind the tensorrt_llm model, selected by its `runtime` parameter.

Both answer the same interface (LLMEngine): token ids in, TokenEvents out through a sink, so the
service's text handling (UTF-8 cuts, stop strings, Qwen stop tokens) is shared and identical.
"""
from __future__ import annotations

from typing import Callable

from ..config import EngineFolder
from ..engine_api import EngineStats, LLMEngine
from .model_params import LLMModelParams
from .stats_reporter import StatsReporter

StatsCallback = Callable[[EngineStats], None]


def start_engine(params: LLMModelParams, folder: EngineFolder, on_stats: StatsCallback | None) -> LLMEngine:
    on_stats = StatsReporter(on_stats) if on_stats is not None else None  # never an IPC on the engine thread
    if params.runtime == "tensorrt_llm":
        from ..trtllm.executor_engine import start_executor_engine  # imports tensorrt_llm

        return start_executor_engine(folder, on_stats=on_stats)
    from ..runtime.factory import start_torch_engine  # imports torch

    return start_torch_engine(folder, params.device or None, params.dtype or None, params.torch_cpu_threads(),
                              on_stats=on_stats)
