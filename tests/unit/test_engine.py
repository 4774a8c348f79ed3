"""The engine loop with a fake runner: in-flight joins, finishing, abort, failures, threads, no leaks."""
import threading

import torch

from qwen_triton.config import EngineLimits
from qwen_triton.runtime.engine import Engine
from qwen_triton.runtime.sequence import FinishReason, SamplingParams
from qwen_triton.vocab import IM_END_ID, PADDED_VOCAB_SIZE

LIMITS = EngineLimits(max_batch_size=4, max_input_len=32, max_seq_len=64, max_num_batched_tokens=128, block_size=4)


class FakeRunner:
    """Greedy next token = f(last token, position): depends only on the sequence's own tokens."""

    num_kv_blocks = 64
    block_size = 4
    mixed_prefill_tokens = 0

    def __init__(self, fail_on_token=None, stop_after=None):
        self.fail_on_token = fail_on_token
        self.stop_after = stop_after
        self.batch_sizes = []

    def execute(self, schedule, feed=None):
        seqs = schedule.sequences
        self.batch_sizes.append(len(seqs))
        out = torch.zeros(len(seqs), PADDED_VOCAB_SIZE)
        for i, seq in enumerate(seqs):
            last = feed.token(seq.seq_id) if seq.has_pending_token else seq.last_token_id
            if last == self.fail_on_token:
                raise RuntimeError("boom")
            nxt = (last * 31 + len(seq)) % 1000 + 1
            if self.stop_after is not None and len(seq.output_ids) >= self.stop_after:
                nxt = IM_END_ID
            out[i, nxt] = 1.0
        return out


class Collector:
    def __init__(self, keep_going=True):
        self.events, self.keep_going, self.done = [], keep_going, threading.Event()

    def __call__(self, event):
        self.events.append(event)
        if event.finish_reason is not None:
            self.done.set()
        return self.keep_going

    @property
    def tokens(self):
        return [t for e in self.events for t in e.new_token_ids]


def drain(engine):
    while engine.step():
        pass


def test_request_joins_a_running_batch_and_both_finish():
    runner = FakeRunner()
    engine = Engine(runner, LIMITS)
    a, b = Collector(), Collector()
    engine.submit([1, 2, 3], SamplingParams(max_tokens=6), a)
    engine.step(), engine.step()
    engine.submit([4, 5], SamplingParams(max_tokens=3), b)
    drain(engine)
    assert len(a.tokens) == 6 and len(b.tokens) == 3
    assert a.events[-1].finish_reason is FinishReason.LENGTH and b.events[-1].num_output_tokens == 3
    assert 2 in runner.batch_sizes  # b decoded alongside a
    assert engine.stats().free_kv_blocks == 64 and engine.sampler.num_generators == 0


def test_stop_token_finishes_with_stop():
    engine = Engine(FakeRunner(stop_after=2), LIMITS)
    sink = Collector()
    engine.submit([1], SamplingParams(max_tokens=10), sink)
    drain(engine)
    assert sink.tokens[-1] == IM_END_ID and sink.events[-1].finish_reason is FinishReason.STOP


def test_abort_and_sink_refusal_free_blocks():
    engine = Engine(FakeRunner(), LIMITS)
    aborted, refusing = Collector(), Collector(keep_going=False)
    seq_id = engine.submit([1, 2], SamplingParams(max_tokens=50), aborted)
    engine.submit([3, 4], SamplingParams(max_tokens=50), refusing)
    engine.step(), engine.step()
    engine.abort(seq_id)
    drain(engine)
    assert aborted.events[-1].finish_reason is FinishReason.CANCELLED
    assert len(refusing.events) == 1  # freed silently after it said stop
    assert engine.stats().free_kv_blocks == 64 and not engine.has_unfinished()
    engine.abort(seq_id)  # unknown id: no-op
    engine.step()


def test_runner_failure_fails_that_step_only():
    engine = Engine(FakeRunner(fail_on_token=999), LIMITS)
    bad, good = Collector(), Collector()
    engine.submit([999], SamplingParams(max_tokens=3), bad)
    drain(engine)
    assert bad.events[-1].finish_reason is FinishReason.ERROR and "boom" in bad.events[-1].error
    engine.submit([1], SamplingParams(max_tokens=3), good)
    drain(engine)
    assert len(good.tokens) == 3 and engine.stats().free_kv_blocks == 64


def test_a_poison_request_in_a_shared_step_fails_alone():
    runner = FakeRunner(fail_on_token=999)
    engine = Engine(runner, LIMITS)
    innocents = [Collector() for _ in range(3)]
    poison = Collector()
    for i, sink in enumerate(innocents[:2]):
        engine.submit([i + 1], SamplingParams(max_tokens=4), sink)
    engine.submit([999], SamplingParams(max_tokens=4), poison)  # joins the same prefill step
    engine.submit([3], SamplingParams(max_tokens=4), innocents[2])
    drain(engine)
    assert poison.events[-1].finish_reason is FinishReason.ERROR and "boom" in poison.events[-1].error
    assert all(len(s.tokens) == 4 and s.events[-1].finish_reason is FinishReason.LENGTH for s in innocents)
    assert runner.batch_sizes[0] == 4  # they did share the step that failed
    assert engine.stats().free_kv_blocks == 64 and engine.stats().running == 0


def test_a_row_the_sampler_cannot_sample_fails_alone(monkeypatch):
    engine = Engine(FakeRunner(), LIMITS)
    original = engine.sampler._sample_row

    def sample_row(row, seq):
        if seq.prompt_ids == [999]:
            raise IndexError("index 1000000000 is out of bounds")
        return original(row, seq)

    monkeypatch.setattr(engine.sampler, "_sample_row", sample_row)
    params = SamplingParams(max_tokens=3, temperature=1.0, seed=1)
    innocent, poison = Collector(), Collector()
    engine.submit([1], params, innocent)
    engine.submit([999], params, poison)
    drain(engine)
    assert poison.events[-1].finish_reason is FinishReason.ERROR and "out of bounds" in poison.events[-1].error
    assert len(innocent.tokens) == 3 and innocent.events[-1].finish_reason is FinishReason.LENGTH
    assert engine.stats().free_kv_blocks == 64


def test_a_raising_sink_does_not_kill_the_loop():
    def explode(event):
        raise ValueError("client gone")

    engine = Engine(FakeRunner(), LIMITS)
    engine.submit([1], SamplingParams(max_tokens=5), explode)
    ok = Collector()
    engine.submit([2], SamplingParams(max_tokens=5), ok)
    drain(engine)
    assert len(ok.tokens) == 5 and engine.stats().free_kv_blocks == 64


def test_threaded_engine_serves_concurrent_submitters_like_serial():
    prompts = [[i + 1, i + 2] for i in range(16)]
    serial_engine = Engine(FakeRunner(), LIMITS)
    serial = []
    for p in prompts:
        sink = Collector()
        serial_engine.submit(p, SamplingParams(max_tokens=7), sink)
        drain(serial_engine)
        serial.append(sink.tokens)
    engine = Engine(FakeRunner(), LIMITS)
    engine.start()
    sinks = [Collector() for _ in prompts]
    threads = [threading.Thread(target=engine.submit, args=(p, SamplingParams(max_tokens=7), s))
               for p, s in zip(prompts, sinks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s.done.wait(10) for s in sinks)
    assert [s.tokens for s in sinks] == serial
    engine.shutdown()
    assert not engine._thread.is_alive()
    assert engine.stats().free_kv_blocks == 64 and engine.sampler.num_generators == 0


def test_shutdown_cancels_what_is_left():
    engine = Engine(FakeRunner(), LIMITS)
    sink = Collector()
    engine.submit([1], SamplingParams(max_tokens=50), sink)
    engine.start()
    engine.shutdown()
    assert sink.events[-1].finish_reason in (FinishReason.CANCELLED, FinishReason.LENGTH)
