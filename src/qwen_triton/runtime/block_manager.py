"""Paged KV-cache block allocator (nano-vllm vocabulary). Torch-free: it hands out block numbers; the
model runner owns the tensor they index. Invariant: a block belongs to at most one sequence."""
from __future__ import annotations

from collections import deque

from .sequence import Sequence


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError("num_blocks and block_size must be > 0")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: deque[int] = deque(range(num_blocks))

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def can_allocate(self, seq: Sequence) -> bool:
        return seq.num_blocks_needed(self.block_size) <= len(self._free)

    def allocate(self, seq: Sequence) -> None:
        assert not seq.block_table, "sequence already holds blocks"
        needed = seq.num_blocks_needed(self.block_size)
        if needed > len(self._free):
            raise RuntimeError("allocate() without can_allocate()")
        seq.block_table = [self._free.popleft() for _ in range(needed)]

    def deallocate(self, seq: Sequence) -> None:
        self._free.extend(seq.block_table)
        seq.block_table = []
        seq.num_cached_tokens = 0

    def can_append(self, seq: Sequence) -> bool:
        """Room for one more token (the one the next decode step writes)."""
        return len(seq.block_table) * self.block_size > len(seq) - 1 or len(self._free) > 0

    def may_append(self, seq: Sequence) -> None:
        """Give seq a new block when its last token (position len-1) falls past its table."""
        if (len(seq) - 1) // self.block_size >= len(seq.block_table):
            seq.block_table.append(self._free.popleft())
