"""The tensorrt_llm runtime (ExecutorEngine) driven against the fake TensorRT-LLM 1.0.0 executor: request
conversion, streaming, Qwen stop handling, cancellation, per-request failures, stats."""
import json
import shutil
import threading

import pytest

from qwen_triton.config import EngineLimits
from qwen_triton.errors import InvalidRequest
from qwen_triton.runtime.sequence import FinishReason, SamplingParams
from qwen_triton.errors import ConfigError
from qwen_triton.trtllm.executor_engine import ExecutorEngine, engine_world_size
from qwen_triton.trtllm.executor_request import executor_config, executor_request, sampling_config
from qwen_triton.trtllm.settings import ExecutorSettings
from qwen_triton.vocab import ENDOFTEXT_ID, IM_END_ID, IM_START_ID

LIMITS = EngineLimits(dtype="float16", max_batch_size=8, max_input_len=256, max_seq_len=512,
                      max_num_batched_tokens=1024, block_size=64)


class Collector:
    def __init__(self, keep_going=True, raise_on_token=None):
        self.events, self.keep_going, self.raise_on_token = [], keep_going, raise_on_token
        self.done = threading.Event()

    def __call__(self, event):
        self.events.append(event)
        if event.finish_reason is not None:
            self.done.set()
        if self.raise_on_token in event.new_token_ids:
            raise ValueError("sink broke")
        return self.keep_going

    @property
    def tokens(self):
        return [t for e in self.events for t in e.new_token_ids]

    @property
    def finish(self):
        return self.events[-1].finish_reason


@pytest.fixture
def engine_factory(trtllm, trtllm_engine, tmp_path):
    engines = []

    def make(tokens=None, step_ms=1, max_input_len=None, on_stats=None, settings=ExecutorSettings(stats_period_ms=5)):
        folder = tmp_path / f"engine{len(engines)}"
        shutil.copytree(trtllm_engine, folder)
        if tokens is not None:
            (folder / "fake_executor.json").write_text(json.dumps({"tokens": tokens, "step_ms": step_ms}))
        if max_input_len is not None:  # the engine's own limit, below what the adapter checks
            config = json.loads((folder / "config.json").read_text())
            config["build_config"]["max_input_len"] = max_input_len
            (folder / "config.json").write_text(json.dumps(config))
        executor = trtllm.Executor(str(folder), trtllm.ModelType.DECODER_ONLY, executor_config(trtllm, settings))
        engine = ExecutorEngine(executor, trtllm, LIMITS, settings, on_stats=on_stats)
        engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.shutdown()


def run(engine, prompt, params=SamplingParams(max_tokens=16), sink=None):
    sink = sink or Collector()
    engine.submit(prompt, params, sink)
    assert sink.done.wait(5), "no final event"
    return sink


def test_sampling_config_uses_the_1_0_names(trtllm):
    greedy = sampling_config(trtllm, SamplingParams())
    assert greedy.top_k == 1 and greedy.temperature is None
    sampled = sampling_config(trtllm, SamplingParams(temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.1,
                                                     min_tokens=3, seed=42, presence_penalty=0.5))
    assert (sampled.temperature, sampled.top_k, sampled.top_p) == (0.7, 20, 0.8)
    assert (sampled.repetition_penalty, sampled.min_tokens, sampled.seed) == (1.1, 3, 42)
    assert sampled.presence_penalty == 0.5 and sampled.frequency_penalty is None
    with pytest.raises(TypeError):  # the fake is as strict as pybind11 about keyword names; 0.14's are gone
        trtllm.SamplingConfig(random_seed=1)
    with pytest.raises(TypeError):
        trtllm.Request([1], max_new_tokens=4)


def test_request_ends_at_im_end_and_stops_on_the_other_qwen_tokens(trtllm):
    request = executor_request(trtllm, [1, 2, 3], SamplingParams(max_tokens=600, bad_words_ids=((7, 8),)), LIMITS)
    assert request.end_id == IM_END_ID and request.pad_id == ENDOFTEXT_ID
    assert sorted(request.stop_words) == [[ENDOFTEXT_ID], [IM_START_ID]]
    assert request.bad_words == [[7, 8]] and request.streaming is True
    assert request.output_config.exclude_input_from_output is True
    assert request.max_tokens == LIMITS.max_seq_len - 3  # clamped to the engine's sequence length


def test_executor_config_carries_the_settings(trtllm):
    config = executor_config(trtllm, ExecutorSettings(kv_cache_free_gpu_mem_fraction=0.5, enable_kv_cache_reuse=True,
                                                      batch_scheduler_policy="max_utilization",
                                                      max_tokens_in_paged_kv_cache=4096))
    assert config.kv_cache_config.free_gpu_memory_fraction == 0.5 and config.kv_cache_config.enable_block_reuse
    assert config.kv_cache_config.max_tokens == 4096 and config.batching_type == trtllm.BatchingType.INFLIGHT
    assert config.scheduler_config.capacity_scheduler_policy == trtllm.CapacitySchedulerPolicy.MAX_UTILIZATION


def test_multi_gpu_engines_run_in_orchestrator_mode(trtllm, trtllm_engine, tmp_path):
    assert engine_world_size(trtllm_engine) == 1
    assert executor_config(trtllm, ExecutorSettings()).parallel_config is None
    config = executor_config(trtllm, ExecutorSettings(executor_worker_path="/w/worker"), world_size=2)
    assert config.parallel_config.communication_mode == trtllm.CommunicationMode.ORCHESTRATOR
    assert config.parallel_config.orchestrator_config.worker_executable_path == "/w/worker"
    with pytest.raises(ConfigError, match="not a TensorRT-LLM engine folder"):
        engine_world_size(tmp_path)


def test_streams_tokens_and_finishes_at_end_id(engine_factory):
    engine = engine_factory(tokens=[11, 12, 13, IM_END_ID, 99])
    sink = run(engine, [1, 2, 3])
    assert sink.tokens == [11, 12, 13] and sink.finish == FinishReason.STOP
    assert [len(e.new_token_ids) for e in sink.events[:3]] == [1, 1, 1]
    assert sink.events[-1].num_prompt_tokens == 3 and sink.events[-1].num_output_tokens == 3


def test_stop_word_and_length(engine_factory):
    engine = engine_factory(tokens=[11, 12, ENDOFTEXT_ID, 13])
    sink = run(engine, [1, 2])
    assert sink.tokens == [11, 12, ENDOFTEXT_ID] and sink.finish == FinishReason.STOP
    sink = run(engine, [1, 2], SamplingParams(max_tokens=2))
    assert sink.tokens == [11, 12] and sink.finish == FinishReason.LENGTH


def test_prompt_over_the_limit_is_rejected_synchronously(engine_factory):
    engine = engine_factory(tokens=[5])
    with pytest.raises(InvalidRequest, match="at most 256"):
        engine.submit(list(range(300)), SamplingParams(), Collector())


def test_executor_error_response_fails_only_that_request(engine_factory):
    engine = engine_factory(tokens=[5, 6, IM_END_ID], max_input_len=4)
    bad, good = Collector(), Collector()
    engine.submit(list(range(1, 10)), SamplingParams(), bad)
    engine.submit([1, 2], SamplingParams(), good)
    assert bad.done.wait(5) and good.done.wait(5)
    assert bad.finish == FinishReason.ERROR and "max_input_len" in bad.events[-1].error
    assert good.tokens == [5, 6] and good.finish == FinishReason.STOP


def test_sink_ending_the_request_cancels_it_and_frees_its_kv(engine_factory):
    stats_seen = []
    engine = engine_factory(tokens=list(range(100, 200)), step_ms=2, on_stats=stats_seen.append)
    sink = Collector(keep_going=False)
    engine.submit([1, 2, 3], SamplingParams(max_tokens=100), sink)
    idle = False
    for _ in range(300):
        stats = engine.stats()
        idle = not engine._tracked and stats is not None and stats.running == 0 and stats.free_kv_blocks == 8 * 8
        if idle:
            break
        threading.Event().wait(0.01)
    assert idle, f"request still holds the executor: {engine.stats()}"
    assert len(sink.events) == 1, "no event after the sink said stop"
    assert stats_seen, "the stats callback never ran"


def test_abort_ends_with_cancelled(engine_factory):
    engine = engine_factory(tokens=list(range(100, 200)), step_ms=5)
    sink = Collector()
    seq_id = engine.submit([1, 2, 3], SamplingParams(max_tokens=100), sink)
    engine.abort(seq_id)
    assert sink.done.wait(5) and sink.finish == FinishReason.CANCELLED and len(sink.tokens) < 100


def test_failing_sink_fails_its_request_and_the_others_finish(engine_factory):
    engine = engine_factory(tokens=[21, 22, 23, IM_END_ID])
    broken, fine = Collector(raise_on_token=22), Collector()
    engine.submit([1], SamplingParams(), broken)
    engine.submit([2], SamplingParams(), fine)
    assert broken.done.wait(5) and fine.done.wait(5)
    assert broken.finish == FinishReason.ERROR and "sink broke" in broken.events[-1].error
    assert fine.tokens == [21, 22, 23] and fine.finish == FinishReason.STOP


def test_many_concurrent_requests_get_their_own_ids(engine_factory):
    engine = engine_factory(tokens=[31, 32, IM_END_ID])
    sinks = [Collector() for _ in range(20)]  # more than max_batch_size: some wait in the executor's queue
    ids = [engine.submit([i + 1], SamplingParams(), s) for i, s in enumerate(sinks)]
    assert len(set(ids)) == 20
    assert all(s.done.wait(5) for s in sinks)
    assert all(s.tokens == [31, 32] for s in sinks)


def test_stats_reach_the_callback(engine_factory):
    stats = []
    engine = engine_factory(tokens=[41, IM_END_ID], on_stats=stats.append)
    run(engine, [1, 2, 3])
    threading.Event().wait(0.05)
    assert stats and stats[-1].free_kv_blocks == 64 and stats[-1].running == 0


def test_shutdown_answers_requests_in_flight(engine_factory):
    engine = engine_factory(tokens=list(range(100, 200)), step_ms=20)
    sink = Collector()
    engine.submit([1, 2, 3], SamplingParams(max_tokens=100), sink)
    engine.shutdown()
    assert sink.done.is_set() and sink.finish == FinishReason.CANCELLED
