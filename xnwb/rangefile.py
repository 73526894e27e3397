"""A read-only file object over a :class:`~xnwb.source.ByteSource`, for h5py.

h5py walks HDF5 metadata with many small reads scattered through the file. Over
a network each would be a round trip, so reads go through a cache of large
aligned blocks. On top of that, chunk-index B-tree nodes are recognised as h5py
reads them, and the child nodes they point to are fetched ahead, all at once:
a whole level of the tree costs one round trip instead of one per node.
"""

from __future__ import annotations

import bisect
import io
import struct
from collections import OrderedDict
from typing import Any

from xnwb.source import ByteSource

__all__ = ["RangeFile"]

DEFAULT_BLOCK_SIZE = 4 * 2**20
_NODE_GAP = 64 * 2**10


class RangeFile(io.RawIOBase):
    """File-like access to a remote object through cached blocks.

    Parameters
    ----------
    source
        The byte source.
    size
        Object size in bytes.
    block_size
        Size of the cached blocks.
    max_blocks
        Blocks kept (least recently used are dropped).
    prefetch_btree
        Fetch the children of HDF5 v1 chunk B-tree nodes ahead of h5py.
    prefetch_tail
        Fetch the file's last block together with the first one: h5py and pynwb
        write much of the metadata at the end (on close), so an open needs both, and
        together they cost one round trip instead of two.
    """

    def __init__(
        self,
        source: ByteSource,
        size: int,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        max_blocks: int = 256,
        prefetch_btree: bool = True,
        prefetch_tail: bool = False,
    ) -> None:
        super().__init__()
        self.source = source
        self.size = int(size)
        self.block_size = int(block_size)
        self.max_blocks = max_blocks
        self.prefetch_btree = prefetch_btree
        self._pos = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._spans: dict[int, bytes] = {}  # prefetched exact ranges: start -> bytes
        self._span_starts: list[int] = []  # sorted keys of ``_spans``, for bisection
        self.reads = 0
        self._tail_pending = prefetch_tail and self.size > self.block_size

    # -- io.RawIOBase ---------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        elif whence == io.SEEK_END:
            self._pos = self.size + offset
        else:  # pragma: no cover
            raise ValueError(f"bad whence {whence}")
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), max(0, self.size - self._pos))
        if n == 0:
            return 0
        data = self._read(self._pos, n)
        view[:n] = data
        self._pos += n
        self.reads += 1
        if self.prefetch_btree and n >= 24 and data[:4] == b"TREE":
            self._prefetch_children(bytes(data), n)
        return n

    def read_at(self, start: int, n: int) -> bytes | memoryview:
        """``n`` bytes at ``start`` through the block cache (clipped at the end of the file)."""
        n = max(0, min(n, self.size - start))
        return self._read(start, n) if n else b""

    def cached_at(self, start: int, n: int) -> bytes | None:
        """``n`` bytes at ``start`` if they are already in memory (else ``None``: no request)."""
        n = max(0, min(n, self.size - start))
        if n == 0 or not self._cached(start, n):
            return None
        return bytes(self._read(start, n))

    # -- cache ------------------------------------------------------------------
    def _read(self, start: int, n: int) -> bytes | memoryview:
        # The span starting at or before ``start`` is the only one that can hold the
        # read (spans are B-tree nodes: they do not overlap). A scan of every span
        # made a 1M-chunk index quadratic: 36k reads x 16k nodes.
        at = bisect.bisect_right(self._span_starts, start) - 1
        if at >= 0:
            span_start = self._span_starts[at]
            span = self._spans[span_start]
            if start + n <= span_start + len(span):
                return memoryview(span)[start - span_start : start - span_start + n]
        first, last = start // self.block_size, (start + n - 1) // self.block_size
        missing = [b for b in range(first, last + 1) if b not in self._blocks]
        if missing:
            if self._tail_pending:
                self._tail_pending = False
                tail = (self.size - 1) // self.block_size
                if tail not in missing and tail not in self._blocks:
                    missing = [*missing, tail]
            self._fetch_blocks(missing)
        if first == last:
            block = self._blocks[first]
            self._blocks.move_to_end(first)
            offset = start - first * self.block_size
            return memoryview(block)[offset : offset + n]
        joined = b"".join(self._blocks[b] for b in range(first, last + 1))
        offset = start - first * self.block_size
        return joined[offset : offset + n]

    def _fetch_blocks(self, numbers: list[int]) -> None:
        starts = [b * self.block_size for b in numbers]
        lengths = [min(self.block_size, self.size - s) for s in starts]
        for number, data in zip(numbers, self.source.fetch(starts, lengths), strict=True):
            self._blocks[number] = bytes(data)
        while len(self._blocks) > self.max_blocks:
            self._blocks.popitem(last=False)

    # -- B-tree read-ahead --------------------------------------------------------
    def _prefetch_children(self, node: bytes, node_size: int) -> None:
        """Fetch the subtree below an HDF5 v1 B-tree node, one batch per level.

        A v1 node is ``TREE``, type, level, entries used (u16), two sibling
        addresses, then keys and child addresses interleaved. Only raw-data
        (type 1) nodes above the leaves are followed; their children are nodes of
        the same size, so the key size follows from this node's size.
        """
        wave = [node]
        while wave:
            wanted: list[int] = []
            for parent in wave:
                for address in _child_addresses(parent, node_size):
                    if address + node_size <= self.size and not self._cached(address, node_size):
                        wanted.append(address)
            if not wanted:
                return
            # Nodes lie between data chunks: fetch each exactly (concurrently),
            # merging only near neighbours, not the data in between.
            fetched = self.source.fetch(wanted, [node_size] * len(wanted), max_gap=_NODE_GAP)
            wave = []
            for address, chunk in zip(wanted, fetched, strict=True):
                if address not in self._spans:
                    bisect.insort(self._span_starts, address)
                self._spans[address] = bytes(chunk)
                wave.append(self._spans[address])

    def _cached(self, start: int, n: int) -> bool:
        if start in self._spans:
            return True
        first, last = start // self.block_size, (start + n - 1) // self.block_size
        return all(b in self._blocks for b in range(first, last + 1))


def _child_addresses(node: bytes, node_size: int) -> list[int]:
    """Child addresses of a raw-data B-tree node above the leaves (else [])."""
    if len(node) < 24 or node[:4] != b"TREE":
        return []
    node_type, level = node[4], node[5]
    (entries,) = struct.unpack_from("<H", node, 6)
    if node_type != 1 or level == 0 or entries == 0:
        return []
    layout = _key_layout(node_size, entries)
    if layout is None:
        return []
    key_size, first_child = layout
    addresses = []
    for i in range(entries):
        (address,) = struct.unpack_from("<Q", node, first_child + i * (key_size + 8))
        if address > 0:
            addresses.append(address)
    return addresses


def _key_layout(node_size: int, entries: int) -> tuple[int, int] | None:
    """Key size and offset of the first child address in a raw-data B-tree node.

    The node holds ``2K + 1`` keys and ``2K`` children after a 24-byte header;
    HDF5 reads whole nodes, so ``node_size`` fixes ``K`` for a given key size.
    Keys are ``4 + 4 + 8 * (rank + 1)`` bytes.
    """
    candidates = []
    for rank in range(1, 33):
        key_size = 8 + 8 * (rank + 1)
        rest = node_size - 24 - key_size
        if rest > 0 and rest % (key_size + 8) == 0:
            capacity = rest // (key_size + 8)  # 2K children
            if capacity >= entries and capacity % 2 == 0:
                candidates.append((capacity != 64, key_size))  # K = 32 is HDF5's default
    if not candidates:
        return None
    key_size = min(candidates)[1]
    return key_size, 24 + key_size
