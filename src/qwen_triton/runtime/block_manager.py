"""Paged KV-cache block allocator (nano-vllm vocabulary). Torch-free: it hands out block numbers; the
model runner owns the tensor they index.

Without reuse a block belongs to at most one sequence. With reuse (engine setting enable_kv_cache_reuse,
TensorRT-LLM's word) a full block whose K/V a sequence computed is remembered by its tokens and everything
before them (a chained hash) when the sequence lets it go; it stays in the free pool, and a later prompt that
starts with the same tokens takes it instead of recomputing it. Invariants:
- a remembered block is full and is never written again: a sequence computes only past its reused blocks;
- a block in the free pool is free (reference count 0) whether remembered or not: free blocks are handed out
  least recently freed first, and a remembered one handed out fresh is forgotten;
- a block's K/V is remembered only up to seq.num_cached_tokens (what finished steps wrote), never a token
  still in flight.
"""
from __future__ import annotations

from collections import OrderedDict

from .sequence import PENDING_TOKEN, Sequence


def chain_hash(parent: int | None, tokens: tuple[int, ...]) -> int:
    return hash((parent, tokens))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, reuse: bool = False):
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError("num_blocks and block_size must be > 0")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.reuse = reuse
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # oldest first
        self._refs = [0] * num_blocks
        self._key: dict[int, tuple[int, tuple[int, ...]]] = {}  # block -> (hash, its tokens)
        self._by_hash: dict[int, int] = {}  # hash -> block
        self.reused_blocks = 0  # prompt blocks taken from the cache, since start
        self.missed_blocks = 0  # full prompt blocks that had to be computed, since start (reuse on)

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """Blocks holding seq's leading full blocks of tokens, longest run; always leaves one token to compute
        (its logits are the step's output)."""
        if not self.reuse:
            return []
        bs, tokens, found, parent = self.block_size, seq.token_ids, [], None
        for start in range(0, len(seq) - 1 - bs + 1, bs):
            block_tokens = tuple(tokens[start:start + bs])
            parent = chain_hash(parent, block_tokens)
            block = self._by_hash.get(parent)
            if block is None or self._key[block][1] != block_tokens:
                break
            found.append(block)
        return found

    def can_allocate(self, seq: Sequence) -> bool:
        cached = self._cached_prefix(seq)
        in_use = sum(1 for block in cached if self._refs[block] > 0)  # shared: takes nothing from the pool
        return seq.num_blocks_needed(self.block_size) - in_use <= len(self._free)

    def allocate(self, seq: Sequence) -> None:
        """Gives seq its block table; seq.num_cached_tokens says how many leading tokens are already cached."""
        assert not seq.block_table, "sequence already holds blocks"
        if not self.can_allocate(seq):
            raise RuntimeError("allocate() without can_allocate()")
        cached = self._cached_prefix(seq)
        for block in cached:
            self._take(block)
        fresh = [self._take_fresh() for _ in range(seq.num_blocks_needed(self.block_size) - len(cached))]
        seq.block_table = cached + fresh
        seq.num_cached_tokens = len(cached) * self.block_size
        if self.reuse:
            self.reused_blocks += len(cached)
            self.missed_blocks += max(0, (len(seq) - 1) // self.block_size - len(cached))

    def _take(self, block: int) -> None:
        if self._refs[block] == 0:
            del self._free[block]
        self._refs[block] += 1

    def _take_fresh(self) -> int:
        block, _ = self._free.popitem(last=False)
        self._forget(block)
        self._refs[block] = 1
        return block

    def _forget(self, block: int) -> None:
        key = self._key.pop(block, None)
        if key is not None and self._by_hash.get(key[0]) == block:
            del self._by_hash[key[0]]

    def deallocate(self, seq: Sequence) -> None:
        if self.reuse:
            self._remember(seq)
        # The tail first: a prompt's leading blocks, the likeliest to be asked for again, are evicted last.
        for block in reversed(seq.block_table):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free[block] = None
        seq.block_table = []
        seq.num_cached_tokens = 0

    def _remember(self, seq: Sequence) -> None:
        """Records every full block whose K/V seq's finished steps wrote (a prefix of its table)."""
        bs, tokens, parent = self.block_size, seq.token_ids, None
        for i, block in enumerate(seq.block_table[:seq.num_cached_tokens // bs]):
            block_tokens = tuple(tokens[i * bs:(i + 1) * bs])
            if PENDING_TOKEN in block_tokens:
                return
            parent = chain_hash(parent, block_tokens)
            if block in self._key or parent in self._by_hash:  # already remembered (this block or a twin)
                continue
            self._key[block] = (parent, block_tokens)
            self._by_hash[parent] = block

    def can_append(self, seq: Sequence) -> bool:
        """Room for one more token (the one the next decode step writes)."""
        return len(seq.block_table) * self.block_size > len(seq) - 1 or len(self._free) > 0

    def may_append(self, seq: Sequence) -> None:
        """Give seq a new block when its last token (position len-1) falls past its table."""
        if (len(seq) - 1) // self.block_size >= len(seq.block_table):
            seq.block_table.append(self._take_fresh())
