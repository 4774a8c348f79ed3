"""The torch runtime's factory, as trtllm/executor_engine.start_executor_engine is TensorRT-LLM's: imported by
serving/runtime_choice.py only when the model's `runtime` parameter chooses it (this module imports torch)."""
from __future__ import annotations

from typing import Callable

import torch

from ..config import EngineFolder
from ..engine_api import EngineStats
from .engine import Engine
from .model_runner import ModelRunner


def start_torch_engine(folder: EngineFolder, device: str | None, dtype: str | None, cpu_threads: int,
                       on_stats: Callable[[EngineStats], None] | None = None) -> Engine:
    runner = ModelRunner(folder, device=device, dtype=dtype)
    if runner.device.type == "cpu":
        torch.set_num_threads(cpu_threads)
    engine = Engine(runner, folder.config.limits, on_stats=on_stats)
    engine.start()
    return engine
