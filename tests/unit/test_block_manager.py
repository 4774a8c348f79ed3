"""Prefix reuse in the KV block allocator: what a finished sequence computed is found again by its tokens, only
whole blocks that its finished steps wrote, never past a differing block, shared while in use, and forgotten once
handed out fresh."""
import pytest

from qwen_triton.engine_api import SamplingParams
from qwen_triton.runtime.block_manager import BlockManager
from qwen_triton.runtime.sequence import PENDING_TOKEN, Sequence

BS = 4


def seq(tokens) -> Sequence:
    return Sequence(list(tokens), SamplingParams())


def run_and_release(blocks: BlockManager, tokens, computed: int | None = None) -> Sequence:
    """A sequence that was allocated, computed `computed` tokens (all by default) and finished."""
    s = seq(tokens)
    blocks.allocate(s)
    s.num_cached_tokens = len(s) if computed is None else computed  # what the scheduler commits after a step
    table = list(s.block_table)
    blocks.deallocate(s)
    s.block_table = table  # kept for the assertions
    return s


def test_without_reuse_nothing_is_found_again():
    blocks = BlockManager(16, BS)
    run_and_release(blocks, range(10))
    again = seq(range(10))
    blocks.allocate(again)
    assert again.num_cached_tokens == 0 and blocks.reused_blocks == 0


def test_a_finished_prompts_full_blocks_are_reused_and_one_token_is_always_computed():
    blocks = BlockManager(16, BS, reuse=True)
    first = run_and_release(blocks, range(10))  # blocks: [0..3] [4..7] [8, 9]
    longer = seq(list(range(10)) + [99])
    blocks.allocate(longer)
    assert longer.num_cached_tokens == 8 and longer.block_table[:2] == first.block_table[:2]
    same = seq(range(8))  # two full blocks, all cached: the last block is computed anyway (its logits)
    blocks.allocate(same)
    assert same.num_cached_tokens == 4 and same.block_table[0] == first.block_table[0]
    assert same.block_table[1] != first.block_table[1]  # computed again: it is not its last block's twin
    assert blocks.reused_blocks == 3


def test_only_what_finished_steps_wrote_is_remembered():
    blocks = BlockManager(16, BS, reuse=True)
    run_and_release(blocks, range(12), computed=5)  # a step failed after the first 5 tokens
    again = seq(range(12))
    blocks.allocate(again)
    assert again.num_cached_tokens == 4


def test_a_block_holding_a_token_still_in_flight_is_not_remembered():
    blocks = BlockManager(16, BS, reuse=True)
    s = seq(range(6))
    blocks.allocate(s)
    s.output_ids += [7, PENDING_TOKEN]  # 8 tokens: the second block ends with a token not yet read back
    blocks.may_append(s)
    s.num_cached_tokens = 8
    blocks.deallocate(s)
    assert len(blocks._by_hash) == 1  # the first block only


def test_a_block_is_found_only_after_the_same_blocks_before_it():
    blocks = BlockManager(16, BS, reuse=True)
    run_and_release(blocks, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    run_and_release(blocks, [0, 0, 0, 0, 9, 9, 9, 9, 9])
    mixed = seq([0, 0, 0, 0, 5, 6, 7, 8, 9])  # first block as the second sequence, second as the first
    blocks.allocate(mixed)
    assert mixed.num_cached_tokens == 4


def test_blocks_in_use_are_shared_and_stay_out_of_the_free_pool():
    blocks = BlockManager(8, BS, reuse=True)
    first = run_and_release(blocks, range(9))  # 3 blocks, 2 remembered
    a, b = seq(list(range(8)) + [50, 51]), seq(list(range(8)) + [60, 61])
    blocks.allocate(a)
    free_after_a = blocks.num_free_blocks
    assert blocks.can_allocate(b)
    blocks.allocate(b)
    assert a.block_table[:2] == b.block_table[:2] == first.block_table[:2]
    assert blocks.num_free_blocks == free_after_a - 1  # b took one fresh block only: the two are shared
    blocks.deallocate(a)
    assert not set(b.block_table) & set(blocks._free)  # b's blocks, shared ones included, are not free
    blocks.deallocate(b)
    assert blocks.num_free_blocks == 8


def test_a_remembered_block_handed_out_fresh_is_forgotten():
    blocks = BlockManager(4, BS, reuse=True)
    first = run_and_release(blocks, range(9))  # remembers blocks 0 and 1 of its table; all 4 free again
    filler = seq([500 + i for i in range(16)])  # needs every block: the remembered ones are overwritten
    blocks.allocate(filler)
    assert set(first.block_table[:2]) <= set(filler.block_table) and filler.num_cached_tokens == 0
    blocks.deallocate(filler)
    again = seq(range(9))
    blocks.allocate(again)
    assert again.num_cached_tokens == 0


def test_least_recently_freed_blocks_go_first_and_a_prompts_lead_last():
    blocks = BlockManager(6, BS, reuse=True)
    first = run_and_release(blocks, range(13))  # 4 blocks; 3 remembered
    taker = seq([900, 901, 902, 903, 904])  # takes 2 fresh blocks: the never-used ones first
    blocks.allocate(taker)
    assert not set(taker.block_table) & set(first.block_table)
    more, one = seq([800, 801]), seq([700])  # then `first`'s blocks from its tail: it was freed tail first
    blocks.allocate(more)
    blocks.allocate(one)
    assert more.block_table + one.block_table == [first.block_table[3], first.block_table[2]]
    blocks.deallocate(taker)
    again = seq(range(13))
    blocks.allocate(again)
    assert again.num_cached_tokens == 8


@pytest.mark.parametrize("reuse", [False, True])
def test_allocation_fails_loudly_without_room(reuse):
    blocks = BlockManager(2, BS, reuse=reuse)
    big = seq(range(12))
    assert not blocks.can_allocate(big)
    with pytest.raises(RuntimeError):
        blocks.allocate(big)
