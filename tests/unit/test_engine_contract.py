"""One contract, two runtimes: the torch engine (the tiny engine on CPU) and the TensorRT-LLM Executor adapter
(over the fake executor) answer engine_api.LLMEngine the same way, each started by its own factory."""
import json
import shutil
import threading
import time

import pytest

from qwen_triton.config import load_engine_folder
from qwen_triton.engine_api import EngineStats, FinishReason, LLMEngine, SamplingParams


class Sink:
    def __init__(self):
        self.events, self.done = [], threading.Event()

    def __call__(self, event):
        self.events.append(event)
        if event.finish_reason is not None:
            self.done.set()
        return True

    @property
    def tokens(self):
        return [t for e in self.events for t in e.new_token_ids]


@pytest.fixture(params=["torch", "tensorrt_llm"])
def engine(request, tiny_engine, tmp_path) -> LLMEngine:
    if request.param == "torch":
        from qwen_triton.runtime.factory import start_torch_engine

        engine = start_torch_engine(load_engine_folder(tiny_engine), "cpu", None, cpu_threads=1)
    else:
        from qwen_triton.trtllm.executor_engine import start_executor_engine

        request.getfixturevalue("trtllm")
        folder = tmp_path / "engine"
        shutil.copytree(request.getfixturevalue("trtllm_engine"), folder)
        script = list(range(1000, 1100))  # never an end token: requests run to max_tokens
        (folder / "fake_executor.json").write_text(json.dumps({"tokens": script, "step_ms": 2}))
        engine = start_executor_engine(load_engine_folder(folder))
    yield engine
    engine.shutdown()


def test_a_request_streams_its_tokens_and_ends_once(engine):
    sink = Sink()
    engine.submit([1, 2, 3], SamplingParams(max_tokens=6, min_tokens=6, stop_token_ids=()), sink)
    assert sink.done.wait(30)
    finals = [e for e in sink.events if e.finish_reason is not None]
    assert len(finals) == 1 and finals[0] is sink.events[-1]
    assert finals[0].finish_reason == FinishReason.LENGTH and len(sink.tokens) == 6
    assert finals[0].num_prompt_tokens == 3 and finals[0].num_output_tokens == 6


def test_abort_ends_a_running_request_cancelled_and_frees_it(engine):
    sink = Sink()
    seq_id = engine.submit([1, 2, 3], SamplingParams(max_tokens=400, min_tokens=400, stop_token_ids=()), sink)
    engine.abort(seq_id)
    assert sink.done.wait(30) and sink.events[-1].finish_reason == FinishReason.CANCELLED
    assert len(sink.tokens) < 400


def test_logprobs_come_with_their_tokens_when_asked(engine):
    sink = Sink()
    engine.submit([1, 2, 3], SamplingParams(max_tokens=4, min_tokens=4, stop_token_ids=(), logprobs=True), sink)
    assert sink.done.wait(30)
    for event in sink.events:
        assert len(event.logprobs) == len(event.new_token_ids)
        assert all(value <= 0 for value in event.logprobs)


def test_stats_report_occupancy_and_return_to_idle(engine):
    sink = Sink()
    engine.submit([1, 2, 3], SamplingParams(max_tokens=3, min_tokens=3, stop_token_ids=()), sink)
    assert sink.done.wait(30)
    deadline = time.monotonic() + 5  # the Executor's stats come from its iteration reports, polled periodically
    while True:
        stats = engine.stats()
        if isinstance(stats, EngineStats) and stats.running == stats.waiting == 0 and stats.iteration:
            break
        assert time.monotonic() < deadline, stats
        time.sleep(0.02)
    assert stats.free_kv_blocks > 0 and stats.max_running > 0
