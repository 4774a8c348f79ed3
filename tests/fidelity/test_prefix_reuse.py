"""Prefix reuse (enable_kv_cache_reuse) through the model, CPU float32: a prefill that starts past cached blocks
computes only the rest and gives the logits of a prefill from token 0, alone and inside a mixed step; the
engine with reuse on answers exactly as with it off (multi-turn prompts, preemption, overlap), computing fewer
prompt tokens."""
from dataclasses import replace

import pytest
import torch

from qwen_triton.config import load_engine_folder
from qwen_triton.engine_api import SamplingParams
from qwen_triton.runtime.engine import Engine
from qwen_triton.runtime.model_runner import ModelRunner
from qwen_triton.runtime.schedule_output import ScheduleOutput
from qwen_triton.runtime.sequence import Sequence

TOL = 1e-4
# 28 tokens (a ChatML prompt and a short plain one): one full 16-token block to reuse, 12 to compute.
LONGER = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 108386, 3837,
          104169, 151645, 198, 151644, 77091, 9707, 11, 1879, 0, 220, 16, 17]
SHORT = LONGER[-7:]


def _sequence(prompt, blocks, cached=0) -> Sequence:
    seq = Sequence(list(prompt), SamplingParams())
    seq.block_table, seq.num_cached_tokens = list(blocks), cached
    return seq


def _decode(runner, seq, logits, steps: int):
    """Greedy decode steps after a prefill: (steps + 1, V) logits."""
    rows = [logits[-1]]
    for _ in range(steps):
        seq.num_cached_tokens = len(seq)
        seq.output_ids.append(int(rows[-1].argmax()))
        rows.append(runner.execute(ScheduleOutput(decode=(seq,)))[0])
    return torch.stack(rows)


@torch.inference_mode()
def test_a_prefill_past_a_reused_block_equals_one_from_token_zero(case, runners):
    runner = runners(case)
    whole = _sequence(LONGER, [0, 1, 6])
    expected = _decode(runner, whole, runner.execute(ScheduleOutput(prefill=(whole,))), steps=6)
    # Block 0 holds LONGER's first 16 tokens now; another copy of them, elsewhere, is what a reuse finds.
    runner.kv_cache[:, :, 7] = runner.kv_cache[:, :, 0]
    runner.kv_cache[:, :, 0] = 0  # nothing may be read from where the first sequence wrote
    reused = _sequence(LONGER, [7, 3, 8], cached=16)
    ids, positions, batch, _ = runner._prefill_inputs((reused,))
    assert ids.tolist() == LONGER[16:] and positions.tolist() == list(range(16, 28)) and batch.cached_lens == (16,)
    got = _decode(runner, reused, runner.execute(ScheduleOutput(prefill=(reused,))), steps=6)
    assert torch.allclose(got, expected, atol=TOL, rtol=0), (got - expected).abs().max()
    assert reused.output_ids == whole.output_ids


@torch.inference_mode()
def test_a_mixed_step_with_a_reused_prefix_equals_its_parts(qwen2_case, runners):
    runner = runners(qwen2_case)
    first = _sequence(LONGER, [0, 1])
    runner.execute(ScheduleOutput(prefill=(first,)))
    decoding = _sequence(SHORT, [2])
    logits = runner.execute(ScheduleOutput(prefill=(decoding,)))
    decoding.num_cached_tokens = len(decoding)
    decoding.output_ids.append(int(logits[0].argmax()))
    alone_decode = runner.execute(ScheduleOutput(decode=(decoding,)))  # rewrites the same slot each time
    alone_prefill = runner.execute(ScheduleOutput(prefill=(_sequence(LONGER, [0, 4], cached=16),)))
    mixed = runner.execute(ScheduleOutput(prefill=(_sequence(LONGER, [0, 5], cached=16),), decode=(decoding,)))
    expected = torch.cat((alone_decode, alone_prefill))
    assert torch.allclose(mixed, expected, atol=TOL, rtol=0), (mixed - expected).abs().max()


class Recorder:
    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append((event.new_token_ids, event.finish_reason))
        return True


def _turns():
    """A multi-turn chat as the template sends it: each prompt repeats the one before, its answer and more."""
    system = [151644, 8948, 198] + list(range(2000, 2040)) + [151645, 198]
    return [system + list(range(3000, 3000 + 9 * turn)) for turn in range(1, 5)]


def _serve(folder, reuse: bool, overlap: bool, kv_blocks=None, mixed_prefill_tokens=0):
    runner = ModelRunner(folder, device="cpu")
    runner.mixed_prefill_tokens = mixed_prefill_tokens  # on CPU only set here: the eager mixed path
    if kv_blocks is not None:
        runner.num_kv_blocks = kv_blocks
    mixed_past_cache = []  # steps that mixed decodes with a prefill starting past reused blocks
    execute = runner.execute
    runner.execute = lambda schedule, feed=None: (
        mixed_past_cache.append(schedule.is_mixed and any(s.num_cached_tokens for s in schedule.prefill)),
        execute(schedule, feed))[1]
    engine = Engine(runner, replace(folder.config.limits, enable_kv_cache_reuse=reuse), overlap=overlap)
    computed, events = [], []
    count = engine._count_step
    engine._count_step = lambda schedule: (count(schedule), computed.append(engine._last_step["context_tokens"]))
    for turn, prompt in enumerate(_turns()):
        sinks = [Recorder(), Recorder()]  # each turn joins a request of its own that is decoding
        engine.submit([77, 78, 79] * (turn + 1), SamplingParams(max_tokens=30), sinks[1])
        engine.step()
        engine.submit(prompt, SamplingParams(max_tokens=12), sinks[0])
        for _ in range(200):
            if not engine.step():
                break
        events.append([s.events for s in sinks])
    assert not engine.has_unfinished() and engine.stats().free_kv_blocks == runner.num_kv_blocks
    return events, sum(computed), engine.scheduler.blocks.reused_blocks, any(mixed_past_cache)


@pytest.fixture(scope="module")
def folder(tiny_engine):
    return load_engine_folder(tiny_engine)


@pytest.mark.parametrize("overlap, kv_blocks, mixed", [(False, None, 0), (True, None, 0), (True, 8, 0),
                                                       (False, None, 64)],
                         ids=["serial", "overlap", "preempting", "mixed"])
def test_the_engine_answers_the_same_with_reuse_and_computes_less(folder, overlap, kv_blocks, mixed):
    without, computed_without, reused_without, _ = _serve(folder, False, overlap, kv_blocks, mixed)
    with_reuse, computed_with, reused_with, mixed_past_cache = _serve(folder, True, overlap, kv_blocks, mixed)
    assert with_reuse == without
    assert mixed_past_cache == bool(mixed)  # the mixed case did run the eager mixed path past a reused prefix
    assert reused_without == 0 and reused_with > 0
    assert computed_with < computed_without
