"""Fake of tensorrt_llm.bindings.executor (TensorRT-LLM 1.0.0): same names and keywords, a scripted model."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from ._scripted import ScriptedExecutorLoop
from ._types import (BatchingType, CapacitySchedulerPolicy, CommunicationMode, ExecutorConfig, InflightBatchingStats,
                     IterationStats, KvCacheConfig, KvCacheStats, ModelType, OrchestratorConfig, OutputConfig,
                     ParallelConfig, Request, Response, Result, SamplingConfig, SchedulerConfig, _Active)


class Executor:
    def __init__(self, model_path, model_type, executor_config):
        engine = Path(model_path)
        if not (engine / "config.json").is_file() or not list(engine.glob("rank*.engine")):
            raise RuntimeError(f"[TensorRT-LLM][ERROR] no engine (config.json, rank0.engine) in {engine}")
        if model_type is not ModelType.DECODER_ONLY or not isinstance(executor_config, ExecutorConfig):
            raise TypeError("Executor(model_path, ModelType.DECODER_ONLY, ExecutorConfig)")
        build = json.loads((engine / "config.json").read_text())["build_config"]
        script_file = engine / "fake_executor.json"
        script = json.loads(script_file.read_text()) if script_file.is_file() else {}
        self._loop = ScriptedExecutorLoop(build, executor_config, script)
        self._ids = itertools.count(1)
        self.enqueued: list[Request] = []  # what the adapter sent, for tests to inspect

    def can_enqueue_requests(self):
        return self._loop.running

    def enqueue_request(self, request):
        if not isinstance(request, Request):
            raise TypeError("enqueue_request(): incompatible function arguments")
        request_id = next(self._ids)
        self.enqueued.append(request)
        self._loop.add(_Active(request_id, request))
        return request_id

    def enqueue_requests(self, requests):
        return [self.enqueue_request(r) for r in requests]

    def await_responses(self, id=None, timeout=None):
        return self._loop.take(id, timeout.total_seconds() if timeout is not None else None)

    def cancel_request(self, id):
        self._loop.cancel(id)

    def get_latest_iteration_stats(self):
        return self._loop.take_stats()

    def shutdown(self):
        self._loop.stop()


__all__ = ["BatchingType", "CapacitySchedulerPolicy", "CommunicationMode", "Executor", "ExecutorConfig",
           "InflightBatchingStats", "IterationStats", "KvCacheConfig", "KvCacheStats", "ModelType",
           "OrchestratorConfig", "OutputConfig", "ParallelConfig", "Request", "Response", "Result", "SamplingConfig",
           "SchedulerConfig"]
