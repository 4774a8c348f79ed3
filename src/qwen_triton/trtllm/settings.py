"""Executor settings of a TensorRT-LLM engine folder (`executor_config.json`, written by the build next to
the engine): what tensorrtllm_backend reads from config.pbtxt parameters lives here, typed and validated,
so config.pbtxt stays wiring only."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import ConfigError

EXECUTOR_CONFIG_FILE = "executor_config.json"
SCHEDULER_POLICIES = ("guaranteed_no_evict", "max_utilization")


@dataclass(frozen=True)
class ExecutorSettings:
    kv_cache_free_gpu_mem_fraction: float = 0.9  # of the memory left after weights and activations
    max_tokens_in_paged_kv_cache: int | None = None  # None: sized by the fraction only
    enable_kv_cache_reuse: bool = False  # prefix reuse; needs an engine built with paged context FMHA
    batch_scheduler_policy: str = "guaranteed_no_evict"
    enable_chunked_context: bool = False
    stats_period_ms: int = 100  # how often iteration stats feed the Triton gauges
    # Engines built with tp_size > 1 run in orchestrator mode: this process spawns one MPI worker per rank.
    executor_worker_path: str = "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker"

    def __post_init__(self):
        if not 0 < self.kv_cache_free_gpu_mem_fraction <= 1:
            raise ConfigError(f"kv_cache_free_gpu_mem_fraction must be in (0, 1], got {self.kv_cache_free_gpu_mem_fraction}")
        if self.max_tokens_in_paged_kv_cache is not None and self.max_tokens_in_paged_kv_cache <= 0:
            raise ConfigError("max_tokens_in_paged_kv_cache must be > 0 when set")
        if self.batch_scheduler_policy not in SCHEDULER_POLICIES:
            raise ConfigError(f"batch_scheduler_policy must be one of {SCHEDULER_POLICIES}, "
                              f"got {self.batch_scheduler_policy!r}")
        if self.stats_period_ms <= 0:
            raise ConfigError("stats_period_ms must be > 0")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def load_executor_settings(engine_dir: str | Path) -> ExecutorSettings:
    path = Path(engine_dir) / EXECUTOR_CONFIG_FILE
    if not path.is_file():
        return ExecutorSettings()
    data = json.loads(path.read_text())
    unknown = set(data) - {f.name for f in fields(ExecutorSettings)}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
    return ExecutorSettings(**data)
