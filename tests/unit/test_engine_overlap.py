"""The engine's overlap (step N+1 launched before step N's ids are read, ids fed on the device) on the tiny
random model, CPU: every request gets exactly the events of the engine without overlap, through joins,
stop tokens, lengths, preemption, host-sampled requests and aborts; no placeholder ever reaches a sink."""
import pytest

from qwen_triton.config import load_engine_folder
from qwen_triton.runtime.engine import Engine
from qwen_triton.runtime.model_runner import ModelRunner
from qwen_triton.runtime.sequence import PENDING_TOKEN, FinishReason, SamplingParams


class Recorder:
    def __init__(self):
        self.events = []

    def __call__(self, event):
        assert PENDING_TOKEN not in event.new_token_ids
        self.events.append((event.new_token_ids, event.finish_reason, event.num_output_tokens))
        return True


def _serve(folder, overlap: bool, requests, kv_blocks=None, abort_after=None, mixed_prefill_tokens=0):
    runner = ModelRunner(folder, device="cpu")
    runner.mixed_prefill_tokens = mixed_prefill_tokens  # on CPU only set here: the eager mixed path
    fed = []
    execute = runner.execute
    runner.execute = lambda schedule, feed=None: fed.append(feed is not None) or execute(schedule, feed)
    if kv_blocks is not None:  # a small cache forces preemption
        runner.num_kv_blocks = kv_blocks
    engine = Engine(runner, folder.config.limits, overlap=overlap)
    schedule = engine.scheduler.schedule
    engine.scheduler.schedule = lambda: (out := schedule(), fed.extend(["preempted"] * len(out.preempted)),
                                         fed.extend(["mixed"] * out.is_mixed))[0]
    sinks = [Recorder() for _ in requests]
    ids = [engine.submit(prompt, params, sink) for (prompt, params), sink in zip(requests[:2], sinks)]
    for step in range(200):
        if step == 3:  # the rest join a running batch
            ids += [engine.submit(p, params, s) for (p, params), s in zip(requests[2:], sinks[2:])]
        if step == abort_after:
            engine.abort(ids[0])
        if not engine.step() and step > 3:
            break
    assert not engine.has_unfinished() and engine.stats().free_kv_blocks == runner.num_kv_blocks
    return [s.events for s in sinks], fed


def _requests():
    prompts = [[151644, 8948, 198, 2610, 525], [9707, 11, 1879], list(range(1000, 1030)), [100, 200, 300, 400]]
    greedy = [SamplingParams(max_tokens=20), SamplingParams(max_tokens=7, min_tokens=3),
              SamplingParams(max_tokens=25), SamplingParams(max_tokens=12)]
    return list(zip(prompts, greedy))


@pytest.fixture(scope="module")
def folder(tiny_engine):
    return load_engine_folder(tiny_engine)


def test_overlap_gives_the_same_events_as_serial_steps(folder):
    serial, fed_serial = _serve(folder, False, _requests())
    overlapped, fed = _serve(folder, True, _requests())
    assert overlapped == serial
    assert not any(fed_serial) and sum(f is True for f in fed) > 20  # the overlap really fed ids from the step in flight
    assert [e[-1][1] for e in serial] == [FinishReason.LENGTH] * 4


@pytest.mark.parametrize("sampled", [False, True])
def test_overlap_with_stop_tokens_preemption_and_a_sampled_request(folder, sampled):
    requests = _requests()
    first_tokens = [events[0][0][0] for events in _serve(folder, False, requests)[0]]
    # Request 0's first greedy token made a stop token: it stops while the others run.
    requests[0] = (requests[0][0], SamplingParams(max_tokens=20, stop_token_ids=(first_tokens[0],)))
    host_sampled = dict(temperature=0.8, seed=7) if sampled else {}
    requests[3] = (requests[3][0], SamplingParams(max_tokens=40, **host_sampled))
    requests[1] = (requests[1][0], SamplingParams(max_tokens=40))
    requests[2] = (requests[2][0], SamplingParams(max_tokens=40))  # 70 tokens: all 5 blocks
    serial, _ = _serve(folder, False, requests, kv_blocks=5)
    overlapped, fed = _serve(folder, True, requests, kv_blocks=5)
    assert overlapped == serial
    assert "preempted" in fed
    assert serial[0][-1][1] is FinishReason.STOP and len(serial[0]) == 1


def test_overlap_abort_frees_blocks_and_drops_the_token_in_flight(folder):
    overlapped, _ = _serve(folder, True, _requests(), abort_after=6)
    serial, _ = _serve(folder, False, _requests(), abort_after=6)
    assert overlapped[1:] == serial[1:]
    cancelled = overlapped[0][-1]
    assert cancelled[0] == () and cancelled[1] is FinishReason.CANCELLED
    assert cancelled[2] == len(overlapped[0]) - 1  # the count excludes tokens dropped in flight


@pytest.mark.parametrize("overlap", [False, True])
def test_mixed_steps_give_the_same_events_as_separate_prefill_steps(folder, overlap):
    separate, fed_separate = _serve(folder, False, _requests())
    mixed, fed = _serve(folder, overlap, _requests(), mixed_prefill_tokens=32)
    assert mixed == separate
    # Requests 2 (30 tokens) and 3 (4) join a running batch, each in a decode step of its own (one per step).
    assert fed.count("mixed") == 2 and "mixed" not in fed_separate


def test_cpu_engine_emits_the_first_token_before_computing_the_next_step(folder):
    """Without overlap by default on CPU: a prompt's first token is not held back by the decode step after it."""
    runner = ModelRunner(folder, device="cpu")
    steps_run = []
    execute = runner.execute
    runner.execute = lambda schedule, feed=None: steps_run.append(1) or execute(schedule, feed)
    engine = Engine(runner, folder.config.limits)
    first_seen_after = []
    sink = lambda event: (first_seen_after.append(len(steps_run)) if not first_seen_after else None) or True  # noqa: E731
    engine.submit([9707, 11, 1879], SamplingParams(max_tokens=4), sink)
    while engine.step():
        pass
    assert not engine.overlap and first_seen_after == [1] and len(steps_run) == 4
