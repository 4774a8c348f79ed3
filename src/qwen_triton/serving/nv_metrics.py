"""NVIDIA tensorrtllm_backend's metric families (nv_trt_llm_*), published beside ours so that dashboards built
for that backend read this server too. docs/metrics.md lists them.

Names, label keys and label values are tensorrtllm_backend's (v0.17.0: its Python model's create_metrics and
the C++ CustomMetricsReporter; v0.18.0 added request_type="waiting" and kv_cache_block_type="fraction"). Each is a
gauge labelled `model` and `version` plus one category label: the backend sets model and version itself, since
Triton adds no label to a backend's custom metric. A value the engine cannot tell (None in EngineStats) is never
published: no metric is created for it, rather than one reading 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..engine_api import EngineStats

Read = Callable[[EngineStats], "float | None"]


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    category: str  # the label key that tells the family's metrics apart
    values: dict[str, Read]  # category label value -> its value in EngineStats


def _minus(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a - b


def _free_kv_blocks(s: EngineStats) -> int | None:
    # The TensorRT-LLM runtime fills free_kv_blocks with 0 when the executor gave no KV-cache stats.
    return None if s.max_kv_blocks is None else s.free_kv_blocks


def _kv_fraction(s: EngineStats) -> float | None:
    return None if not s.max_kv_blocks or s.used_kv_blocks is None else s.used_kv_blocks / s.max_kv_blocks


FAMILIES = (
    Family("nv_trt_llm_request_metrics", "TRT LLM request metrics", "request_type", {
        "active": lambda s: s.running, "max": lambda s: s.max_running, "scheduled": lambda s: s.scheduled,
        "context": lambda s: s.context, "waiting": lambda s: s.waiting}),
    Family("nv_trt_llm_runtime_memory_metrics", "TRT LLM runtime memory metrics", "memory_type", {
        "cpu": lambda s: s.cpu_mem_bytes, "gpu": lambda s: s.gpu_mem_bytes, "pinned": lambda s: s.pinned_mem_bytes}),
    Family("nv_trt_llm_kv_cache_block_metrics", "TRT LLM KV cache block metrics", "kv_cache_block_type", {
        "max": lambda s: s.max_kv_blocks, "free": _free_kv_blocks, "used": lambda s: s.used_kv_blocks,
        "tokens_per": lambda s: s.tokens_per_kv_block, "fraction": _kv_fraction}),
    Family("nv_trt_llm_inflight_batcher_metrics", "TRT LLM inflight_batcher-specific metrics",
           "inflight_batcher_specific_metric", {
               "total_context_tokens": lambda s: s.context_tokens,
               "generation_requests": lambda s: _minus(s.scheduled, s.context),
               "micro_batch_id": lambda s: s.micro_batch_id, "paused_requests": lambda s: s.paused}),
    # timestamp in seconds, as tensorrtllm_backend's Python model and README (its C++ backend: microseconds).
    Family("nv_trt_llm_general_metrics", "General TRT LLM metrics", "general_type", {
        "iteration_counter": lambda s: s.iteration, "timestamp": lambda s: s.timestamp_s}),
)


class NvMetrics:
    """Publishes FAMILIES from EngineStats through `pb_utils` (handed in: only a Triton stub has the module).

    Each metric create or set is an IPC round trip to the server, so a metric is created the first time its value
    is known and set only when its value changed. The families are kept as long as their metrics: the backend
    refuses to set a metric whose family was freed."""

    def __init__(self, pb_utils, model: str, version: str, families: tuple[Family, ...] = FAMILIES):
        self.pb_utils = pb_utils
        self.common = {"model": model, "version": str(version)}
        self.spec = families
        self.families: dict[str, object] = {}  # name -> pb_utils.MetricFamily, made with its first metric
        self.metrics: dict[tuple[str, str], object] = {}  # (family name, category value) -> pb_utils Metric
        self.published: dict[tuple[str, str], float] = {}

    def __call__(self, stats: EngineStats) -> None:
        for family in self.spec:
            for label, read in family.values.items():
                value, key = read(stats), (family.name, label)
                if value is None or self.published.get(key) == value:
                    continue
                self._metric(family, label).set(value)
                self.published[key] = value

    def _metric(self, family: Family, label: str):
        key = (family.name, label)
        if key not in self.metrics:
            if family.name not in self.families:
                self.families[family.name] = self.pb_utils.MetricFamily(
                    name=family.name, description=family.description, kind=self.pb_utils.MetricFamily.GAUGE)
            self.metrics[key] = self.families[family.name].Metric(labels={family.category: label, **self.common})
        return self.metrics[key]
