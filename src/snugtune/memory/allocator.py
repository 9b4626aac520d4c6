"""A model of PyTorch's CUDA caching allocator, replayed over a traced allocation sequence.

Source: ``c10/cuda/CUDACachingAllocator.cpp`` (PyTorch 2.x, default settings: no
``expandable_segments``, no ``max_split_size_mb``, no ``roundup_power2_divisions``):

* every request is rounded up to a multiple of 512 B (``kMinBlockSize``);
* requests of at most 1 MiB (``kSmallSize``) are served from the small pool, carved out of
  2 MiB segments (``kSmallBuffer``); larger requests use the large pool, where a new segment
  is 20 MiB (``kLargeBuffer``) for requests under 10 MiB (``kMinLargeAlloc``) and the request
  rounded up to 2 MiB (``kRoundLarge``) otherwise;
* a request takes the smallest free cached block that fits (best fit, lowest address on ties)
  from its pool; the block is split when the rest is at least 512 B (small pool) or more than
  1 MiB (large pool);
* a freed block merges with free neighbours of the same segment and stays cached: reserved
  memory (what ``nvidia-smi`` shows, besides the context) never shrinks without
  ``empty_cache``.

``reserved`` is the sum of segment sizes; ``allocated`` the sum of rounded live blocks.

With a ``limit`` (``torch.cuda.set_per_process_memory_fraction`` caps ``reserved``), a
``cudaMalloc`` that would pass the limit first releases every cached segment that is wholly
free (``release_cached_blocks``) and retries; if it still does not fit, the step is out of
memory (:class:`OutOfMemory`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from snugtune.units import MIB

__all__ = [
    "K_LARGE_BUFFER",
    "K_MIN_BLOCK_SIZE",
    "K_MIN_LARGE_ALLOC",
    "K_ROUND_LARGE",
    "K_SMALL_BUFFER",
    "K_SMALL_SIZE",
    "CachingAllocatorModel",
    "OutOfMemory",
    "round_size",
    "segment_size",
]

K_MIN_BLOCK_SIZE = 512  # all sizes are rounded to at least 512 bytes
K_SMALL_SIZE = 1 * MIB  # largest "small" allocation
K_SMALL_BUFFER = 2 * MIB  # "small" allocations are packed in 2 MiB segments
K_LARGE_BUFFER = 20 * MIB  # allocate 20 MiB segments for "large" requests under 10 MiB
K_MIN_LARGE_ALLOC = 10 * MIB  # allocations from 1 to 10 MiB share 20 MiB segments
K_ROUND_LARGE = 2 * MIB  # larger segments are rounded up to 2 MiB


def round_size(nbytes: int) -> int:
    """Block size the allocator hands out for a request (``round_size``)."""
    if nbytes < K_MIN_BLOCK_SIZE:
        return K_MIN_BLOCK_SIZE
    return K_MIN_BLOCK_SIZE * ((nbytes + K_MIN_BLOCK_SIZE - 1) // K_MIN_BLOCK_SIZE)


def segment_size(block: int) -> int:
    """Size of the new segment ``cudaMalloc``-ed when no cached block fits (``get_allocation_size``)."""
    if block <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if block < K_MIN_LARGE_ALLOC:
        return K_LARGE_BUFFER
    return K_ROUND_LARGE * ((block + K_ROUND_LARGE - 1) // K_ROUND_LARGE)


class OutOfMemory(Exception):
    """The replayed sequence does not fit the allocator's limit."""


@dataclass
class _Pool:
    """Free blocks of one pool, sorted by (size, segment, offset) for best fit."""

    free: list[tuple[int, int, int]] = field(default_factory=list)


@dataclass
class CachingAllocatorModel:
    """Replays ``malloc``/``free`` calls; tracks ``allocated``, ``reserved`` and their peaks."""

    limit: int | None = None
    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    segments: int = 0
    _pools: tuple[_Pool, _Pool] = field(default_factory=lambda: (_Pool(), _Pool()))
    # segment -> offset -> [size, used, previous block's offset or -1]
    # live key -> (segment, offset, size, pool)
    _blocks: dict[int, dict[int, list[int]]] = field(default_factory=dict)
    _live: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)

    def malloc(self, key: int, nbytes: int) -> None:
        """Allocate ``nbytes`` for ``key`` (any hashable id of the tensor storage)."""
        if nbytes <= 0:
            return
        size = round_size(nbytes)
        pool_id = 0 if size <= K_SMALL_SIZE else 1
        pool = self._pools[pool_id]
        i = bisect.bisect_left(pool.free, (size, -1, -1))
        if i < len(pool.free):
            bsize, seg, off = pool.free.pop(i)
        else:
            seg, off = self.segments, 0
            bsize = self._new_segment(size)
        blocks = self._blocks[seg]
        rest = bsize - size
        if rest >= K_MIN_BLOCK_SIZE if pool_id == 0 else rest > K_SMALL_SIZE:
            blocks[off][:2] = [size, 1]
            blocks[off + size] = [rest, 0, off]
            after = blocks.get(off + bsize)
            if after is not None:
                after[2] = off + size
            bisect.insort(pool.free, (rest, seg, off + size))
        else:
            size = bsize
            blocks[off][1] = 1
        self._live[key] = (seg, off, size, pool_id)
        self.allocated += size
        self.peak_allocated = max(self.peak_allocated, self.allocated)

    def _new_segment(self, size: int) -> int:
        bsize = segment_size(size)
        if self.limit is not None and self.reserved + bsize > self.limit:
            self.release_cached()
            if self.reserved + bsize > self.limit:
                raise OutOfMemory(f"{bsize} B segment with {self.reserved} B reserved")
        self._blocks[self.segments] = {0: [bsize, 0, -1]}
        self.segments += 1
        self.reserved += bsize
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return bsize

    def release_cached(self) -> None:
        """Give back every segment that is one free block (``emptyCache`` semantics)."""
        for seg, blocks in list(self._blocks.items()):
            if len(blocks) == 1 and blocks[0][1] == 0:
                size = blocks[0][0]
                # small-pool segments are exactly 2 MiB; large ones are >= 10 MiB
                self._pools[0 if size == K_SMALL_BUFFER else 1].free.remove((size, seg, 0))
                del self._blocks[seg]
                self.reserved -= size

    def free(self, key: int) -> None:
        """Return ``key``'s block to its pool, merging it with free neighbours."""
        entry = self._live.pop(key, None)
        if entry is None:
            return
        seg, off, size, pool_id = entry
        self.allocated -= size
        blocks, pool = self._blocks[seg], self._pools[pool_id]
        prev = blocks[off][2]
        nxt = blocks.get(off + size)
        if nxt is not None and nxt[1] == 0:  # merge with the next free block
            pool.free.remove((nxt[0], seg, off + size))
            del blocks[off + size]
            size += nxt[0]
        if prev >= 0 and blocks[prev][1] == 0:  # merge into the previous free block
            pool.free.remove((blocks[prev][0], seg, prev))
            del blocks[off]
            off, size = prev, blocks[prev][0] + size
        blocks[off][:2] = [size, 0]
        after = blocks.get(off + size)
        if after is not None:
            after[2] = off
        bisect.insort(pool.free, (size, seg, off))
