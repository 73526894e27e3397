"""Bytes of a remote file read ahead of a pass, held until the pass reads them.

A whole-recording pass right after a cold open must learn each region's chunk
offsets before it can read the region's chunks. In files written the usual way
(h5py, pynwb, neuroconv: chunks appended in order), the B-tree leaves that list a
region's chunks lie *between* those chunks, about a leaf per MB. Fetching the leaves
one by one costs a request each (hundreds per pass); fetching the byte span that
holds them brings the region's data with them. :class:`HeldBytes` keeps those spans
so that the read that follows is served from memory instead of asking again.

It is bounded: a span is dropped once every byte of it that is not B-tree metadata
has been served, the oldest go first whenever the total passes ``capacity``, and none
is kept longer than ``max_age`` seconds (a pass reads what it read ahead within
seconds; what it never asks for — a neighbour's chunk read before it was held — goes).
Nothing in it is ever a different version of the file: it holds bytes fetched
through the same pinned :class:`~xnwb.source.ByteSource` as any read.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["HeldBytes"]


@dataclass
class _Block:
    start: int
    data: memoryview
    #: Bytes of the block no read will ask for (B-tree nodes parsed from it already).
    metadata: int
    added: float
    served: int = 0

    @property
    def end(self) -> int:
        return self.start + len(self.data)


class HeldBytes:
    """Contiguous blocks of a file's bytes, served to later reads, then dropped.

    Parameters
    ----------
    capacity
        Most bytes held at once; the oldest blocks go first beyond it.
    max_age
        Seconds a block is kept at most (checked whenever the store is used).

    Examples
    --------
    >>> held = HeldBytes(capacity=100)
    >>> held.add(10, b"abcdefghij")
    >>> [None if v is None else bytes(v) for v in held.take([12, 18, 19], [3, 2, 4])]
    [b'cde', b'ij', None]
    """

    def __init__(self, capacity: int, max_age: float = 30.0) -> None:
        self.capacity = int(capacity)
        self.max_age = float(max_age)
        self._blocks: dict[int, _Block] = {}
        self._starts: list[int] = []  # sorted keys of _blocks
        self._held = 0
        # Byte ranges being fetched to be held (disjoint), each with the thread fetching it.
        self._claims: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._held

    def add(self, start: int, data: bytes | memoryview, metadata: int = 0) -> None:
        """Hold ``data``, the file's bytes from ``start`` (``metadata``: bytes of it no
        read will ask for). Blocks overlapping one already held are not added."""
        view = memoryview(data).cast("B")
        if not len(view) or len(view) > self.capacity:
            return
        with self._lock:
            self._expire()
            if self._overlapping(start, start + len(view)):
                return
            bisect.insort(self._starts, start)
            self._blocks[start] = _Block(start, view, int(metadata), time.monotonic())
            self._held += len(view)
            while self._held > self.capacity:
                self._drop(next(iter(self._blocks)))  # dicts keep order: the oldest

    def claim(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` neither held nor claimed by another fetch, now
        claimed by the caller (two threads reading ahead around one region boundary
        fetch its bytes once). Release them with :meth:`release` once held or failed."""
        with self._lock:
            self._expire()
            taken = sorted(
                [(b.start, b.end) for b in self._blocks.values() if b.start < end and start < b.end]
                + [(lo, hi) for lo, hi in self._claims if lo < end and start < hi]
            )
            out = []
            at = start
            for lo, hi in taken:
                if lo > at:
                    out.append((at, min(lo, end)))
                at = max(at, hi)
                if at >= end:
                    break
            if at < end:
                out.append((at, end))
            me = threading.get_ident()
            self._claims.update((span, me) for span in out)
        return out

    def release(self, claimed: Sequence[tuple[int, int]]) -> None:
        """End the claims :meth:`claim` returned."""
        with self._lock:
            for span in claimed:
                del self._claims[span]
            self._released.notify_all()

    def wait_for_claims(
        self, starts: Sequence[int], lengths: Sequence[int], timeout: float
    ) -> bool:
        """Wait (at most ``timeout`` seconds) until no other thread is fetching bytes of
        these ranges to hold them; ``True`` if there was such a fetch. A read that arrives
        while its bytes are on their way would otherwise fetch them a second time. The
        fetching thread's own reads never wait (it fetches those very bytes)."""
        # The common case, on every fetch: no claim, no conversion, no lock (a claim made
        # this very instant is missed, and the read fetches its bytes itself).
        if not self._claims:
            return False
        me = threading.get_ident()
        firsts = np.asarray(starts, dtype=np.int64)
        ends = firsts + np.asarray(lengths, dtype=np.int64)

        def busy() -> bool:
            return any(
                owner != me and bool(np.any((firsts < hi) & (ends > lo)))
                for (lo, hi), owner in self._claims.items()
            )

        with self._lock:
            if not busy():
                return False
            self._released.wait_for(lambda: not busy(), timeout)
            return True

    def take(
        self, starts: Sequence[int], lengths: Sequence[int]
    ) -> list[memoryview | bytes | None]:
        """Each range's bytes where held blocks cover all of it, else ``None``.

        A range inside one block is a view of it; one across adjacent blocks is joined
        (a copy). A range that is only partly held is ``None``: it is fetched whole."""
        out: list[memoryview | bytes | None] = []
        with self._lock:
            self._expire()
            if not self._blocks:
                return [None] * len(starts)
            for start, length in zip(starts, lengths, strict=True):
                out.append(self._take_one(int(start), int(length), serve=True))
        return out

    def peek(self, start: int, length: int) -> memoryview | bytes | None:
        """The bytes of one range, as :meth:`take`, without counting them as served
        (for metadata parsed from a block: those bytes are its ``metadata``)."""
        with self._lock:
            return self._take_one(int(start), int(length), serve=False)

    # -- internal (under the lock) -----------------------------------------------
    def _take_one(self, start: int, length: int, serve: bool) -> memoryview | bytes | None:
        end = start + length
        i = bisect.bisect_right(self._starts, start) - 1
        if i < 0:
            return None
        parts: list[_Block] = []
        at = start
        while at < end and i < len(self._starts):
            block = self._blocks[self._starts[i]]
            if not block.start <= at < block.end:
                return None
            parts.append(block)
            at = block.end
            i += 1
        if at < end:
            return None
        pieces = []
        for block in parts:
            lo, hi = max(start, block.start), min(end, block.end)
            pieces.append(block.data[lo - block.start : hi - block.start])
            if serve:
                block.served += hi - lo
        for block in parts:
            if serve and block.served + block.metadata >= len(block.data):
                self._drop(block.start)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _expire(self) -> None:
        oldest = time.monotonic() - self.max_age
        while self._blocks:
            first = next(iter(self._blocks.values()))  # dicts keep order: the oldest
            if first.added >= oldest:
                break
            self._drop(first.start)

    def _overlapping(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self._starts, start) - 1
        for j in (i, i + 1):
            if 0 <= j < len(self._starts):
                block = self._blocks[self._starts[j]]
                if block.start < end and start < block.end:
                    return True
        return False

    def _drop(self, start: int) -> None:
        block = self._blocks.pop(start)
        self._starts.remove(start)
        self._held -= len(block.data)
