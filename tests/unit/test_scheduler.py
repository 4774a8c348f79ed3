"""Block manager and scheduler on CPU, no torch: admission, FIFO, preemption, cancellation, no leaks."""
import pytest

from qwen_triton.config import EngineLimits
from qwen_triton.errors import InvalidRequest
from qwen_triton.runtime.block_manager import BlockManager
from qwen_triton.runtime.sequence import SamplingParams, Sequence, SequenceStatus
from qwen_triton.runtime.scheduler import Scheduler


def make_requests(n, prompt_len=10, max_tokens=8):
    return [Sequence(list(range(1, prompt_len + 1)), SamplingParams(max_tokens=max_tokens)) for _ in range(n)]


def make_scheduler(num_blocks=64, mixed_prefill_tokens=0, **limits):
    defaults = dict(max_batch_size=4, max_input_len=64, max_seq_len=128, max_num_batched_tokens=64, block_size=4)
    return Scheduler(EngineLimits(**{**defaults, **limits}), num_blocks, mixed_prefill_tokens)


def run_decode_step(scheduler):
    out = scheduler.schedule()
    scheduler.commit(out)
    for seq in out.sequences:
        seq.output_ids.append(7)
    return out


def test_block_manager_allocates_appends_and_frees_without_leaks():
    blocks = BlockManager(num_blocks=8, block_size=4)
    a, b = make_requests(2, prompt_len=5)
    blocks.allocate(a)
    blocks.allocate(b)
    assert len(a.block_table) == 2 and not set(a.block_table) & set(b.block_table)
    for _ in range(4):  # 5 -> 9 tokens: crosses into a third block exactly once
        a.output_ids.append(1)
        assert blocks.can_append(a)
        blocks.may_append(a)
    assert len(a.block_table) == 3 and blocks.num_free_blocks == 3
    blocks.deallocate(a)
    blocks.deallocate(b)
    assert blocks.num_free_blocks == 8 and a.block_table == [] and a.num_cached_tokens == 0


def test_admission_respects_batch_size_and_token_budget_fifo():
    scheduler = make_scheduler(max_batch_size=3, max_num_batched_tokens=25, max_input_len=20)
    seqs = make_requests(5, prompt_len=10)
    for seq in seqs:
        scheduler.add(seq)
    first = scheduler.schedule()
    assert first.prefill == tuple(seqs[:2])  # 2 x 10 tokens fit the 25-token budget, 3 do not
    scheduler.commit(first)
    second = scheduler.schedule()
    assert second.prefill == (seqs[2],)  # batch size 3 reached
    scheduler.commit(second)
    third = scheduler.schedule()
    assert third.decode == tuple(seqs[:3]) and scheduler.num_waiting == 2


def test_new_request_joins_between_decode_steps():
    scheduler = make_scheduler()
    a, b = make_requests(2)
    scheduler.add(a)
    run_decode_step(scheduler)
    run_decode_step(scheduler)
    scheduler.add(b)
    assert scheduler.schedule().prefill == (b,)
    assert scheduler.num_running == 2


def test_preemption_when_blocks_run_out_then_recompute_from_scratch():
    scheduler = make_scheduler(num_blocks=6, block_size=4)
    a, b = make_requests(2, prompt_len=8)  # 2 blocks each, 2 left
    scheduler.add(a)
    scheduler.add(b)
    run_decode_step(scheduler)  # prefill both: 9 tokens each after the step
    out = run_decode_step(scheduler)  # both need a third block: 2 free -> fine
    assert out.decode == (a, b) and scheduler.blocks.num_free_blocks == 0
    for _ in range(3):
        run_decode_step(scheduler)
    out = scheduler.schedule()  # 13th token: a needs a 4th block, none free -> b is preempted
    assert b in out.preempted and out.decode == (a,)
    assert b.status is SequenceStatus.WAITING and b.block_table == [] and b.num_cached_tokens == 0
    scheduler.finish(a)
    again = scheduler.schedule()
    assert again.prefill == (b,) and b.num_cached_tokens == 0  # recomputed from token 0


def test_finish_frees_blocks_wherever_the_sequence_is():
    scheduler = make_scheduler(max_batch_size=1)
    a, b = make_requests(2)
    scheduler.add(a)
    scheduler.add(b)
    run_decode_step(scheduler)
    scheduler.finish(b)  # still waiting
    scheduler.finish(a)  # running
    scheduler.finish(a)  # idempotent
    assert not scheduler.has_unfinished() and scheduler.blocks.num_free_blocks == 64


def test_prompt_that_can_never_fit_is_rejected_at_add():
    scheduler = make_scheduler(num_blocks=4, block_size=4)
    with pytest.raises(InvalidRequest, match="input_ids"):
        scheduler.add(make_requests(1, prompt_len=65)[0])
    with pytest.raises(InvalidRequest, match="KV blocks"):
        scheduler.add(make_requests(1, prompt_len=20)[0])


def test_preempted_sequence_longer_than_the_token_budget_is_still_readmitted():
    scheduler = make_scheduler(max_num_batched_tokens=16, max_input_len=16)
    (seq,) = make_requests(1, prompt_len=12)
    scheduler.add(seq)
    for _ in range(8):
        run_decode_step(scheduler)
    scheduler._preempt(seq)  # now 19 tokens > the 16-token prefill budget
    assert scheduler.schedule().prefill == (seq,)


def test_short_waiting_prompt_joins_a_decode_step_one_per_step():
    scheduler = make_scheduler(mixed_prefill_tokens=12)
    running, short_a, short_b = make_requests(3)
    long_one = make_requests(1, prompt_len=20)[0]
    scheduler.add(running)
    assert scheduler.schedule().is_prefill  # an idle engine prefills alone
    running.output_ids.append(7)
    for seq in (short_a, long_one, short_b):
        scheduler.add(seq)
    out = scheduler.schedule()
    assert out.is_mixed and out.decode == (running,) and out.prefill == (short_a,)
    assert out.sequences == (running, short_a)  # logit rows: the decodes, then the prefill
    scheduler.commit(out)
    for seq in out.sequences:
        seq.output_ids.append(7)
    out = scheduler.schedule()  # the next one (20 tokens) is too long to mix: a prefill step of its own
    assert out.is_prefill and out.prefill == (long_one, short_b)


def test_a_queue_longer_than_mixed_max_waiting_gets_one_prefill_step():
    scheduler = make_scheduler(mixed_prefill_tokens=12, mixed_max_waiting=2)
    running, a, b, c = make_requests(4)
    scheduler.add(running)
    scheduler.commit(scheduler.schedule())
    running.output_ids.append(7)
    for seq in (a, b, c):
        scheduler.add(seq)
    out = scheduler.schedule()  # three wait, more than 2: one prefill step for all of them
    assert out.is_prefill and out.prefill == (a, b, c) and not out.decode
    scheduler.commit(out)
    for seq in out.sequences:
        seq.output_ids.append(7)
    late = make_requests(1)[0]
    scheduler.add(late)
    scheduler.finish(c)  # room for one more in the batch of 4
    out = scheduler.schedule()  # one waits: it joins the decode step
    assert out.is_mixed and out.prefill == (late,) and len(out.decode) == 3


def test_no_mixing_when_disabled_or_without_kv_room():
    scheduler = make_scheduler(mixed_prefill_tokens=0)
    running, waiting = make_requests(2)
    scheduler.add(running)
    scheduler.commit(scheduler.schedule())
    running.output_ids.append(7)
    scheduler.add(waiting)
    assert scheduler.schedule().is_prefill  # disabled: the old prefill-first step

    tight = make_scheduler(num_blocks=4, mixed_prefill_tokens=12)  # 10-token prompts need 3 blocks of 4
    running, waiting = make_requests(2)
    tight.add(running)
    tight.commit(tight.schedule())
    running.output_ids.append(7)
    tight.add(waiting)
    out = tight.schedule()
    assert out.decode == (running,) and not out.prefill and not out.preempted
    assert list(tight.waiting) == [waiting]
