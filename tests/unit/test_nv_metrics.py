"""NVIDIA's nv_trt_llm_* families from EngineStats (NvMetrics over the fake pb_utils), the stats both runtimes
fill for them, and the inter-token-latency observation on the outbox thread."""
import dataclasses
import datetime
import gc
import json
import shutil
import threading
import time

import numpy as np
import pytest
import torch
import triton_python_backend_utils as pb_utils

from qwen_triton.config import EngineLimits
from qwen_triton.runtime.engine import Engine, EngineStats, TokenEvent
from qwen_triton.engine_api import FinishReason, SamplingParams
from qwen_triton.serving.nv_metrics import NvMetrics
from qwen_triton.serving.outbox import Outbox
from qwen_triton.serving.llm_request import LLMRequest
from qwen_triton.serving.responses import ResponseStream
from qwen_triton.text.detokenizer import TextStream
from qwen_triton.text.tokenizer import QwenTokenizer
from qwen_triton.trtllm.executor_engine import ExecutorEngine, iteration_engine_stats
from qwen_triton.trtllm.executor_request import executor_config
from qwen_triton.trtllm.settings import ExecutorSettings
from qwen_triton.vocab import IM_END_ID, PADDED_VOCAB_SIZE, STOP_TOKEN_IDS

# tensorrtllm_backend v0.17.0 (inflight batcher) + v0.18.0's "waiting" and "fraction": family -> (category, values).
NVIDIA = {
    "nv_trt_llm_request_metrics": ("request_type", {"active", "max", "scheduled", "context", "waiting"}),
    "nv_trt_llm_runtime_memory_metrics": ("memory_type", {"cpu", "gpu", "pinned"}),
    "nv_trt_llm_kv_cache_block_metrics": ("kv_cache_block_type", {"max", "free", "used", "tokens_per", "fraction"}),
    "nv_trt_llm_inflight_batcher_metrics": ("inflight_batcher_specific_metric", {
        "total_context_tokens", "generation_requests", "micro_batch_id", "paused_requests"}),
    "nv_trt_llm_general_metrics": ("general_type", {"iteration_counter", "timestamp"}),
}
FULL = EngineStats(running=3, waiting=2, free_kv_blocks=40, max_running=8, max_kv_blocks=64, used_kv_blocks=24,
                   tokens_per_kv_block=16, scheduled=3, context=1, context_tokens=17, paused=0, micro_batch_id=0,
                   iteration=12, timestamp_s=1.7e9, gpu_mem_bytes=1 << 30, cpu_mem_bytes=0, pinned_mem_bytes=4096)


def values(nv):
    """{family: {category value: metric value}}, checking every metric's labels on the way."""
    out = {}
    for name, family in nv.families.items():
        category, _ = NVIDIA[name]
        assert family.kind == pb_utils.MetricFamily.GAUGE
        for metric in family.metrics:
            assert set(metric.labels) == {"model", "version", category}
            assert (metric.labels["model"], metric.labels["version"]) == ("tensorrt_llm", "3")
            out.setdefault(name, {})[metric.labels[category]] = metric.value()
    return out


def test_every_nvidia_family_and_label_value_is_published_from_full_stats():
    nv = NvMetrics(pb_utils, "tensorrt_llm", 3)
    nv(FULL)
    published = values(nv)
    assert {name: set(v) for name, v in published.items()} == {name: labels for name, (_, labels) in NVIDIA.items()}
    assert published["nv_trt_llm_request_metrics"] == {"active": 3, "max": 8, "scheduled": 3, "context": 1,
                                                       "waiting": 2}
    assert published["nv_trt_llm_kv_cache_block_metrics"] == {"max": 64, "free": 40, "used": 24, "tokens_per": 16,
                                                              "fraction": 24 / 64}
    assert published["nv_trt_llm_inflight_batcher_metrics"] == {
        "total_context_tokens": 17, "generation_requests": 2, "micro_batch_id": 0, "paused_requests": 0}
    assert published["nv_trt_llm_general_metrics"] == {"iteration_counter": 12, "timestamp": 1.7e9}
    assert published["nv_trt_llm_runtime_memory_metrics"] == {"cpu": 0, "gpu": 1 << 30, "pinned": 4096}


def test_what_the_engine_cannot_tell_is_never_published():
    nv = NvMetrics(pb_utils, "tensorrt_llm", "3")
    nv(EngineStats(running=1, waiting=0, free_kv_blocks=0))  # a runtime that knows occupancy only
    assert values(nv) == {"nv_trt_llm_request_metrics": {"active": 1, "waiting": 0}}
    nv(dataclasses.replace(FULL, gpu_mem_bytes=None, cpu_mem_bytes=None, pinned_mem_bytes=None, micro_batch_id=None))
    published = values(nv)
    assert "nv_trt_llm_runtime_memory_metrics" not in published  # no family without a metric
    assert "micro_batch_id" not in published["nv_trt_llm_inflight_batcher_metrics"]


def test_only_changed_values_are_set_and_the_families_outlive_the_caller():
    nv = NvMetrics(pb_utils, "tensorrt_llm", "3")
    nv(FULL)
    sets = []
    for key, metric in nv.metrics.items():
        metric.set = lambda value, key=key, real=metric.set: (sets.append(key), real(value))
    nv(dataclasses.replace(FULL, running=4, iteration=13))
    assert sorted(sets) == [("nv_trt_llm_general_metrics", "iteration_counter"),
                            ("nv_trt_llm_request_metrics", "active")]  # one IPC per changed value only
    gc.collect()  # the fake refuses a set once its family is freed, as the backend does
    nv(dataclasses.replace(FULL, running=5))
    assert values(nv)["nv_trt_llm_request_metrics"]["active"] == 5


class StepRunner:
    """Greedy next token 7 for every row; the engine's paged-KV bookkeeping is what the test reads."""

    num_kv_blocks, block_size, mixed_prefill_tokens = 64, 4, 0

    def execute(self, schedule, feed=None):
        out = torch.zeros(len(schedule.sequences), PADDED_VOCAB_SIZE)
        out[:, 7] = 1.0
        return out


def test_torch_engine_stats_count_each_step():
    limits = EngineLimits(max_batch_size=4, max_input_len=32, max_seq_len=64, max_num_batched_tokens=128,
                          block_size=4)
    engine = Engine(StepRunner(), limits)
    assert engine.stats().iteration == 0 and engine.stats().scheduled is None  # no step has run
    for prompt in ([1, 2, 3], [4, 5, 6, 7, 8]):
        engine.submit(prompt, SamplingParams(max_tokens=3), lambda event: True)
    before = time.time()
    engine.step()
    first = engine.stats()
    assert (first.scheduled, first.context, first.context_tokens, first.paused, first.iteration) == (2, 2, 8, 0, 1)
    assert before <= first.timestamp_s <= time.time()
    assert (first.max_running, first.max_kv_blocks, first.tokens_per_kv_block) == (4, 64, 4)
    assert first.used_kv_blocks == 64 - first.free_kv_blocks == 1 + 2  # 3 and 5 prompt tokens in blocks of 4
    engine.step()
    second = engine.stats()
    assert (second.scheduled, second.context, second.context_tokens, second.iteration) == (2, 0, 0, 2)
    assert second.gpu_mem_bytes is None and second.micro_batch_id is None  # this runtime cannot tell them


@pytest.fixture
def fake_executor_engine(trtllm, trtllm_engine, tmp_path):
    folder = tmp_path / "engine"
    shutil.copytree(trtllm_engine, folder)
    (folder / "fake_executor.json").write_text(json.dumps({"tokens": [11, 12, 13, IM_END_ID], "step_ms": 2}))
    settings = ExecutorSettings(stats_period_ms=1)
    seen = []
    executor = trtllm.Executor(str(folder), trtllm.ModelType.DECODER_ONLY, executor_config(trtllm, settings))
    limits = EngineLimits(dtype="float16", max_batch_size=8, max_input_len=256, max_seq_len=512,
                          max_num_batched_tokens=1024, block_size=64)
    engine = ExecutorEngine(executor, trtllm, limits, settings, on_stats=seen.append)
    engine.start()
    yield engine, seen
    engine.shutdown()


def test_trtllm_runtime_fills_the_stats_from_iteration_stats(fake_executor_engine):
    engine, seen = fake_executor_engine
    done = threading.Event()

    def sink(event):
        if event.finish_reason is not None:
            done.set()
        return True

    before = time.time()
    engine.submit([1, 2, 3, 4, 5], SamplingParams(max_tokens=8), sink)
    assert done.wait(5)
    deadline = time.monotonic() + 5
    while not any(s.context == 1 for s in seen) or seen[-1].running:
        assert time.monotonic() < deadline, f"no context step in {seen}"
        time.sleep(0.01)
    context = next(s for s in seen if s.context == 1)
    assert context.context_tokens == 5 and context.scheduled == 1 and context.micro_batch_id == 0
    assert context.max_running == 8 and context.tokens_per_kv_block == 64 and context.used_kv_blocks == 1
    assert before - 1 <= context.timestamp_s <= time.time()  # the fake's clock has microseconds, as TensorRT-LLM's
    assert [s.iteration for s in seen] == sorted({s.iteration for s in seen})  # increasing, none repeated


def test_unreadable_timestamp_and_missing_kv_stats_stay_unknown(trtllm):
    stamp = datetime.datetime(2025, 3, 4, 5, 6, 7, 890123)
    latest = trtllm.IterationStats(timestamp=stamp.strftime("%m-%d-%Y %H:%M:%S.%f"), iter=4, num_active_requests=1,
                                   max_num_active_requests=8)
    stats = iteration_engine_stats(latest, tracked=3)
    assert stats.timestamp_s == pytest.approx(stamp.timestamp()) and (stats.iteration, stats.waiting) == (4, 2)
    assert stats.max_kv_blocks is None and stats.scheduled is None
    nv = NvMetrics(pb_utils, "tensorrt_llm", "3")
    nv(stats)
    assert "nv_trt_llm_kv_cache_block_metrics" not in nv.families  # not a made-up free=0
    assert iteration_engine_stats(dataclasses.replace(latest, timestamp="yesterday"), 1).timestamp_s is None


class Responder:
    def __init__(self):
        self.sent, self.finish, self.done = [], None, threading.Event()

    def send(self, outputs, final):
        self.sent.append(np.asarray(outputs["output_ids"]).ravel().tolist())
        if final:
            self.finish = np.asarray(outputs["finish_reason"]).ravel()[0]
            self.done.set()

    def fail(self, exc):
        self.done.set()

    def is_cancelled(self):
        return False


def _stream_tokens(outbox, streaming, gap_s=0.03):
    tokenizer = QwenTokenizer.load()
    responder = Responder()
    request = LLMRequest(input_ids=(1, 2, 3), request_output_len=100, streaming=streaming)
    stream = ResponseStream(request, frozenset(STOP_TOKEN_IDS), TextStream(tokenizer), responder, outbox)
    outbox.register(stream)
    tokens = tokenizer.encode(" one two three four")
    for i, token in enumerate(tokens):
        stream(TokenEvent(1, (token,), None, 3, i + 1))
        time.sleep(gap_s)  # each token leaves alone
    stream(TokenEvent(1, (IM_END_ID,), FinishReason.STOP, 3, len(tokens) + 1))
    assert responder.done.wait(5)
    return responder


def test_inter_token_latency_is_observed_between_responses_with_tokens_and_cannot_break_them():
    observed = []

    def on_inter_token(seconds):
        observed.append(seconds)
        raise RuntimeError("metric IPC failed")

    outbox = Outbox(on_inter_token=on_inter_token)
    try:
        streamed = _stream_tokens(outbox, streaming=True)
        with_tokens = [ids for ids in streamed.sent if ids]
        assert len(with_tokens) >= 3 and len(observed) == len(with_tokens) - 1
        assert all(0.02 <= s < 1 for s in observed)  # the gap between the engine's events, not 0
        assert streamed.finish == b"stop"  # the failing metric ended nothing
        observed.clear()
        _stream_tokens(outbox, streaming=False, gap_s=0)
        assert observed == []  # one response: no gap to measure
    finally:
        outbox.close()


def test_sampled_observer_observes_off_the_callers_thread_and_bounds_the_rate():
    import threading

    from qwen_triton.serving.stats_reporter import SampledObserver

    seen, threads = [], set()

    def observe(value):
        threads.add(threading.get_ident())
        seen.append(value)

    observer = SampledObserver(observe, period_s=0.05, per_period=8)
    for i in range(3):
        observer(float(i))
    deadline = time.monotonic() + 5
    while len(seen) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert seen == [0.0, 1.0, 2.0] and threading.get_ident() not in threads
    for i in range(100):  # a burst within one period: only the newest 8 are kept
        observer(float(i))
    time.sleep(0.3)
    assert seen[3:] == [float(i) for i in range(92, 100)]
