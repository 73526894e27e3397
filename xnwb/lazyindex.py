"""A chunk index read on demand: the B-tree nodes a window needs, then the rest in the background.

Opening a file with many small chunks used to mean listing every chunk first — over
a network one request per batch of B-tree leaves, hundreds of requests and tens of
seconds for a million chunks. Here a big chunked dataset's :class:`~xnwb.refs.ArrayRef`
starts with no chunk known and a :class:`LazyChunks` attached. Before a read, the
reader asks for the box of chunks it touches (:meth:`ArrayRef.ensure_chunks`), and
the B-tree is walked from the root down to the leaves that cover that box only, one
batch of concurrent (merged) requests per level; internal nodes are kept, so a later
window costs one request for its leaves at most.

The whole index still appears: :class:`IndexCompletion` walks every tree in a
background thread once the first read is done (or :func:`complete_index` does it
now) and hands the finished index to a callback — :func:`xnwb.api.open_source` stores
it in the persistent cache, so the next open is the one-request cached open.

The offsets found are exactly those of h5py's ``chunk_iter`` (tests compare them
chunk for chunk): chunks stored with some filters skipped (``filter_mask``) are read,
decoded and inlined as the eager index does, chunks never written stay ``-1``
(fill value), and big unfiltered chunks are cut into the same virtual sub-chunks.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from struct import error as struct_error
from typing import Any

import numpy as np

from xnwb.btree import ChunkTree, Node, children_in_box, node_read_size, parse_node
from xnwb.exceptions import ChunkReadError
from xnwb.source import ByteSource

__all__ = [
    "IndexCompletion",
    "LazyChunks",
    "LazyPlan",
    "complete_index",
    "index_completion",
    "lazy_arrays",
    "preload_top",
]

logger = logging.getLogger("xnwb")
_COMPLETIONS: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_LAZY: weakref.WeakSet[Any] = weakref.WeakSet()  # every lazy index of this process


def _forget_threads_after_fork() -> None:
    _COMPLETIONS.clear()  # their threads are the parent's
    for lazy in list(_LAZY):
        lazy._forget_after_fork()


os.register_at_fork(after_in_child=_forget_threads_after_fork)

#: B-tree nodes lie between data chunks: fetch them exactly, merging only near neighbours.
_NODE_GAP = 64 * 2**10
#: ...except for a window's leaves, a few adjacent ones a MB or so apart: one request
#: for them (a round trip of 20-50 ms buys a few MB at cloud throughput).
_WINDOW_NODE_GAP = 2 * 2**20
_FEW_NODES = 4

#: Chunked datasets with fewer chunks get the full index at open (a few B-tree leaves).
LAZY_MIN_CHUNKS = 512

#: A whole-tree walk fetches at most this many nodes per batch, so that the requests of
#: a window read meanwhile queue behind one batch, not behind a whole level.
_COMPLETION_BATCH = 32
#: Longest the background walk waits for one foreground read before going on.
_YIELD_SECONDS = 1.0
#: A read of more stored chunks than this is a long region (a dask task of a whole pass),
#: not a window: the next regions of its size are resolved ahead of it.
_LONG_REGION_CHUNKS = 512
#: How many regions ahead.
_LOOKAHEAD = 3
#: A long region's leaves come with the byte span that holds them (and its chunks)
#: up to this size; a longer span, exactly.
_SPAN_MAX = 32 * 2**20
#: ... and up to this multiple of the bytes the region's chunks take uncompressed.
_SPAN_SHARE = 1.5
#: Names of the threads that read B-tree nodes in the background.
_BACKGROUND_THREADS = ("xnwb-index-ahead", "xnwb-index-completion")

Box = Sequence[tuple[int, int]]


class LazyChunks:
    """Resolves the chunk offsets of one :class:`~xnwb.refs.ArrayRef` from its B-tree.

    Parameters
    ----------
    source
        Where the file's bytes are (pickled to workers, which reopen it).
    tree
        The dataset's B-tree root and chunk shape (:func:`xnwb.btree.find_chunk_tree`).
    path
        Dataset path, for messages.
    hdf5_filters
        The dataset's HDF5 filter pipeline (``get_filter`` tuples), to decode chunks
        stored with some filters skipped.
    split
        Virtual sub-chunks per stored chunk along the first axis (1: none).
    file_size
        Size of the file; chunks reaching past it are refused.
    """

    def __init__(
        self,
        source: ByteSource,
        tree: ChunkTree,
        *,
        path: str,
        hdf5_filters: list[Any],
        split: int = 1,
        file_size: int | None = None,
    ) -> None:
        self.source = source
        self.tree = tree
        self.path = path
        self.hdf5_filters = list(hdf5_filters)
        self.split = int(split)
        self.file_size = file_size
        self.complete = False
        self.completion: IndexCompletion | None = None
        self.nodes_fetched = 0
        self._inner: dict[int, Node] = {}  # internal nodes, kept: few and reused by every box
        self._leaves_done: set[int] = set()  # leaves already copied into the offsets
        self._known: np.ndarray | None = None  # stored-grid cells whose state is known
        # Regions being read ahead, each with the event its walk's end sets.
        self._pending: dict[tuple[tuple[int, int], ...], Any] = {}
        # Regions reads are walking now: {token: (box, event its end sets)}.
        self._reading: dict[object, tuple[tuple[tuple[int, int], ...], Any]] = {}
        self._last_long: int | None = None  # first row of the last long region (None: none yet)
        self._lock = threading.Lock()
        _LAZY.add(self)

    # Workers get the source, the tree and the internal nodes, not the thread or lock, and
    # no claim of what is known: the offsets pickled beside this object may be a snapshot
    # older than that claim (a background walk may be writing them), so a worker resolves
    # its own regions again — from the internal nodes it receives, a leaf request or so.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(
            _lock=None,
            completion=None,
            complete=False,
            _known=None,
            _leaves_done=set(),
            _pending={},
            _reading={},
            _inner=dict(self._inner),  # a copy made at once: the walk may be adding nodes
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        _LAZY.add(self)

    def _forget_after_fork(self) -> None:
        # A forked child has none of its parent's threads: the walks they had under way
        # never end there, a lock one of them held stays taken, and the background
        # completion is not running. The child's reads resolve their own regions.
        self._lock = threading.Lock()
        self._pending = {}
        self._reading = {}
        self._last_long = None
        self.completion = None

    def __repr__(self) -> str:
        return f"LazyChunks({self.path!r}, complete={self.complete})"

    # -- public ---------------------------------------------------------------
    def resolve(self, ref: Any, box: Box | None) -> None:
        """Make the offsets of chunk box ``box`` of ``ref`` (its grid; ``None``: all) known."""
        if self.complete:
            return
        if box is not None and self.completion is not None:
            self.completion.foreground_begin()  # ended by after_read
        stored_grid = tuple(
            -(-s // c) for s, c in zip(ref.shape, self.tree.chunk_shape, strict=True)
        )
        if self._known is None:
            with self._lock:
                if self._known is None:
                    self._known = np.zeros(stored_grid, dtype=bool)
        if box is None:
            stored_box = [(0, g) for g in stored_grid]
        else:
            stored_box = list(box)
            if self.split > 1 and stored_box:
                lo, hi = stored_box[0]
                stored_box[0] = (lo // self.split, -(-hi // self.split))
            stored_box = [
                (max(0, lo), min(g, hi))
                for (lo, hi), g in zip(stored_box, stored_grid, strict=True)
            ]
        if any(hi <= lo for lo, hi in stored_box):
            return
        window = _slices(stored_box)
        long_region = box is not None and _cells(stored_box) > _LONG_REGION_CHUNKS
        if box is None:  # the whole tree: after the walks under way (reads go on meanwhile)
            self._wait_for_overlapping(stored_box)
            if not self._known.all():
                self._walk(ref, stored_box)
                self._known[window] = True
            self.complete = True
            return
        # This read's walk is registered before anything else, so that no thread reads its
        # region ahead meanwhile (its bytes were fetched twice). A long region waits instead
        # for a walk under way that covers it (its span would come twice); a window walks
        # its few nodes itself, never held up by a long walk's retries.
        waits, mine = self._begin_walk(stored_box, window, wait=long_region)
        try:
            if long_region and not self.source.is_local:
                self._look_ahead(ref, stored_box)  # locally a node costs a pread: no round trip
            if waits:
                # Once: a walk that failed (or did not make all of this box known) is not
                # waited for again, nor does a second waiter queue behind this one's retry.
                for done in waits:
                    done.wait()
                _, mine = self._begin_walk(stored_box, window, wait=False)
            if mine is not None:
                self._walk(ref, stored_box, spans=long_region)
                self._known[window] = True
        finally:
            if mine is not None:
                self._end_walk(mine)
        if self._known.all():
            self.complete = True

    # -- a whole pass: the next regions' nodes are read while this one's data are --------
    def _look_ahead(self, ref: Any, stored_box: list[tuple[int, int]]) -> None:
        """Resolve the next :data:`_LOOKAHEAD` regions of this size along axis 0 (in the
        direction the reads go), in the background: a pass reads region after region, and
        each would otherwise wait a round trip or two for its leaves before its data
        (20 ms each at cloud latency). The first long region this index sees only records
        where it starts: the second one gives the direction. So does a long region far
        from the last one (more than two regions away): another pass begins."""
        assert self._known is not None
        lo, hi = stored_box[0]
        n_rows = self._known.shape[0]
        # Which way the pass goes (dask's threads often take a pass's tasks last first) is
        # known from its second long region on. Nothing is read ahead of the first: of the
        # regions either side, one is not part of the pass (or beyond its end), and their
        # leaves cost 30-100 of a cold pass's 135-200 requests for no gain in time (measured
        # on the 31k-chunk recording). Two threads may take neighbouring regions in either
        # order, so a region up to two away continues the pass.
        step = hi - lo
        with self._lock:
            previous, self._last_long = self._last_long, lo
        if previous is None or abs(lo - previous) > 2 * step:
            return
        shifts = [k * (step if previous <= lo else -step) for k in range(1, _LOOKAHEAD + 1)]
        for shift in shifts:
            first, stop = max(0, lo + shift), min(n_rows, hi + shift)
            if stop <= first:
                continue
            ahead = ((first, stop), *stored_box[1:])
            with self._lock:
                # Not a region another read (or read ahead) is walking: its bytes come once.
                if self._walked_now(ahead) or self._known[_slices(ahead)].all():
                    continue
                done = self._pending[ahead] = threading.Event()
            threading.Thread(
                target=self._resolve_ahead,
                args=(ref, ahead, done),
                name="xnwb-index-ahead",
                daemon=True,
            ).start()

    def _resolve_ahead(self, ref: Any, ahead: tuple[tuple[int, int], ...], done: Any) -> None:
        completion = self.completion
        if completion is not None:  # the whole-tree walk waits for it as for a read
            completion.foreground_begin()
        try:
            self._walk(ref, list(ahead), spans=True)
            assert self._known is not None
            self._known[_slices(ahead)] = True
        except Exception as err:  # the region's own read walks it again and raises
            logger.debug("reading ahead the chunk index of %s failed: %s", self.path, err)
        finally:
            with self._lock:
                self._pending.pop(ahead, None)
            done.set()
            if completion is not None:
                completion.foreground_end()

    def _begin_walk(
        self, stored_box: list[tuple[int, int]], window: tuple[slice, ...], *, wait: bool
    ) -> tuple[list[Any], Any]:
        """Register a read's walk of ``stored_box``: ``([], token)`` (end it with
        :meth:`_end_walk`). With ``wait``, ``(events, None)`` instead when walks under way
        cover the whole box (its chunks are known once they end: wait for them); a walk
        that covers part of it does not hold this one up. ``([], None)``: nothing to walk."""
        assert self._known is not None
        with self._lock:
            if self._known[window].all():
                return [], None
            if wait:
                walks = [*self._pending.items(), *self._reading.values()]
                waits = [done for other, done in walks if _covers(other, stored_box)]
                if waits:
                    return waits, None
            token = object()
            self._reading[token] = (tuple(stored_box), threading.Event())
            return [], token

    def _end_walk(self, token: object) -> None:
        with self._lock:
            _, done = self._reading.pop(token)
        done.set()

    def _walked_now(self, box: Sequence[tuple[int, int]]) -> bool:
        """Whether a walk under way (a read's or a read ahead) overlaps ``box``."""
        return any(_overlap(other, box) for other in self._pending) or any(
            _overlap(other, box) for other, _ in self._reading.values()
        )

    def _wait_for_overlapping(self, stored_box: list[tuple[int, int]]) -> None:
        """Wait for the reads ahead that overlap ``stored_box`` (no node is fetched twice)."""
        with self._lock:
            waits = [done for ahead, done in self._pending.items() if _overlap(ahead, stored_box)]
        for done in waits:
            done.wait()

    def after_read(self) -> None:
        """Called once a read is done: start completing the index in the background."""
        if self.completion is not None and not self.complete:
            self.completion.foreground_end()
            self.completion.start()

    # -- the walk -------------------------------------------------------------
    def _walk(self, ref: Any, stored_box: list[tuple[int, int]], spans: bool = False) -> None:
        chunk = np.asarray(self.tree.chunk_shape, dtype=np.int64)
        lower = np.asarray([lo for lo, _ in stored_box], dtype=np.int64) * chunk
        upper = np.asarray([hi - 1 for _, hi in stored_box], dtype=np.int64) * chunk
        everything = (
            all(lo == 0 for lo, _ in stored_box)
            and self._known is not None
            and all(hi == g for (_, hi), g in zip(stored_box, self._known.shape, strict=True))
        )
        # A window's few nodes merge generously (a round trip costs more than the gap's
        # bytes); the whole tree merges only near neighbours, not the data in between.
        window_gap = max(_WINDOW_NODE_GAP, self.source.max_gap)
        wave = [self.tree.address]
        wave_level: int | None = None  # the root's level is known once it is read
        while wave:
            spanned = (
                None
                if everything or not spans or wave_level != 0 or self.source.is_local
                else self._leaves_by_span(wave, stored_box)
            )
            if spanned is not None:
                nodes = spanned
            elif everything:
                nodes = []
                for at in range(0, len(wave), _COMPLETION_BATCH):
                    if self.completion is not None:
                        self.completion.yield_to_reads()
                    # Leaves that reads have applied meanwhile are not fetched again.
                    batch = [
                        a for a in wave[at : at + _COMPLETION_BATCH] if a not in self._leaves_done
                    ]
                    nodes.extend(self._nodes(batch, _NODE_GAP))
            else:
                # A few nodes (a window's): merged generously. Many (a long region's, a
                # dask task of a full pass): exactly, or the gaps would double its bytes.
                gap = window_gap if len(wave) <= _FEW_NODES else _NODE_GAP
                nodes = self._nodes(wave, gap)
            wave = []
            for node in nodes:
                wave_level = node.level - 1
                if node.level == 0:
                    self._apply_leaf(ref, node)
                    continue
                keep = (
                    np.ones(len(node.children), dtype=bool)
                    if everything
                    else children_in_box(node, lower, upper, chunk)
                )
                for child, child_level_leaf in zip(
                    node.children[keep].tolist(), [node.level == 1] * int(keep.sum()), strict=True
                ):
                    if child_level_leaf and child in self._leaves_done:
                        continue
                    wave.append(child)
            if spanned is not None:
                self._hold_region_chunks(ref, stored_box)

    def _leaves_by_span(
        self, addresses: list[int], stored_box: list[tuple[int, int]]
    ) -> list[Node] | None:
        """A long region's leaves from the byte span that holds them, its bytes kept.

        Files written in order put each leaf among the chunks it lists, about a MB
        apart: one request per leaf would cost a pass hundreds of round trips, while the
        span from the first leaf to the last is mostly the region's own chunks. It is
        fetched in ``max_block`` pieces, the leaves parsed from it, and the bytes held by
        the source for the region's read (:meth:`~xnwb.source.ByteSource.hold`). ``None``
        where that does not pay: a few leaves (a window's), or a span much longer than
        the region's chunks uncompressed (another layout, or a region of a few channels
        among many: the span would be mostly other data).
        """
        if len(addresses) <= _FEW_NODES:
            return None
        ordered = sorted(set(addresses))
        size = node_read_size(self.tree)
        lo, hi = ordered[0], ordered[-1] + self._clip(ordered[-1], size)
        # Leaves list chunks in row-major order, every column of a row of the grid: a
        # box over a few of the columns (channels) would bring the others' bytes too,
        # however well they compress.
        assert self._known is not None
        columns = math.prod(b - a for a, b in stored_box[1:])
        if _SPAN_SHARE * columns < math.prod(self._known.shape[1:]):
            return None
        # Not much more than the region's chunks take uncompressed (its edge leaves list
        # some chunks of the next regions): a longer span is mostly other data.
        chunk_bytes = math.prod(self.tree.chunk_shape) * self.tree.element_size
        if hi - lo > min(_SPAN_MAX, _SPAN_SHARE * _cells(stored_box) * chunk_bytes):
            return None
        self._fetch_and_hold(lo, hi, self._node_addresses(ordered))
        out: dict[int, Node] = {}
        rest = []
        for address in ordered:
            data = self.source.held_bytes(address, self._clip(address, size))
            node = None if data is None else parse_node(bytes(data), address, self.tree)
            if isinstance(node, Node):
                out[address] = node
            else:  # no longer held, or fuller than HDF5's default K: fetched exactly
                rest.append(address)
        self.nodes_fetched += len(ordered) - len(rest)
        if rest:
            out.update(zip(rest, self._nodes(rest), strict=True))
        return [out[a] for a in addresses]

    def _hold_region_chunks(self, ref: Any, stored_box: list[tuple[int, int]]) -> None:
        """After :meth:`_leaves_by_span`: fetch and hold the region's chunk bytes that lie
        outside the leaves' span (a leaf is written after some of the chunks it lists),
        so that the region's read — or a read ahead of the pass — asks for nothing more.
        Skipped where the chunks are not one stretch of the file."""
        (lo, hi), *rest = stored_box
        window = (slice(lo * self.split, hi * self.split), *(slice(a, b) for a, b in rest))
        offsets, lengths = ref.offsets[window], ref.lengths[window]
        stored = offsets >= 0
        if not stored.any():
            return
        first = int(offsets[stored].min())
        end = int((offsets[stored] + lengths[stored]).max())
        if end - first > min(_SPAN_MAX, 2 * int(lengths[stored].sum())):
            return
        self._fetch_and_hold(first, end, self._node_addresses([]))

    def _node_addresses(self, more: list[int]) -> list[int]:
        """Sorted addresses of every B-tree node known (their bytes are no read's)."""
        with self._lock:
            return sorted({*more, *self._inner, *self._leaves_done})

    def _fetch_and_hold(self, lo: int, hi: int, node_addresses: list[int]) -> None:
        """Fetch the bytes of ``[lo, hi)`` not yet held, in ``max_block`` pieces, and hold
        them; ``node_addresses`` (sorted): B-tree nodes, bytes no read will ask for."""
        step = self.source.max_block
        claimed = self.source.claim_unheld(lo, hi)
        try:
            starts, lengths = [], []
            for first, stop in claimed:
                for at in range(first, stop, step):
                    starts.append(at)
                    lengths.append(min(step, stop - at))
            if not starts:
                return
            fetched = self.source.fetch(starts, lengths, max_gap=0, background=_in_background())
            size = node_read_size(self.tree)
            for at, view in zip(starts, fetched, strict=True):
                inside = bisect.bisect_left(node_addresses, at + len(view)) - bisect.bisect_left(
                    node_addresses, at
                )
                self.source.hold(at, view, metadata=min(len(view), inside * size))
        finally:
            self.source.release_claim(claimed)

    def _nodes(self, addresses: list[int], gap: int = _NODE_GAP) -> list[Node]:
        """The nodes at ``addresses``: kept ones from memory, the rest in one batch.

        Fetched in the background's own request slots from the threads that read ahead
        or complete the index (the foreground's reads never queue behind them)."""
        out: dict[int, Node] = {a: self._inner[a] for a in addresses if a in self._inner}
        wanted = sorted({a for a in addresses if a not in out})
        size = node_read_size(self.tree)
        while wanted:
            lengths = [self._clip(a, size) for a in wanted]
            fetched = self.source.fetch(wanted, lengths, max_gap=gap, background=_in_background())
            self.nodes_fetched += len(wanted)
            again: list[int] = []
            for address, data in zip(wanted, fetched, strict=True):
                node = parse_node(bytes(data), address, self.tree)
                if isinstance(node, int):  # more entries than HDF5's default K allows
                    size = max(size, node)
                    again.append(address)
                    continue
                out[address] = node
                if node.level > 0:
                    self._inner[address] = node
            wanted = again
        return [out[a] for a in addresses]

    def _clip(self, address: int, size: int) -> int:
        if self.file_size is None:
            return size
        return max(24, min(size, self.file_size - address))

    def _apply_leaf(self, ref: Any, node: Node) -> None:
        if node.address in self._leaves_done:
            return
        chunk = np.asarray(self.tree.chunk_shape, dtype=np.int64)
        n = len(node.children)
        coords = node.keys[:n]
        stored_grid = self._known.shape if self._known is not None else ref.offsets.shape
        index = coords // chunk
        if n and (
            np.any(coords % chunk) or np.any(index >= np.asarray(stored_grid)) or np.any(index < 0)
        ):
            raise ChunkReadError(
                f"dataset {self.path!r}: a chunk B-tree leaf at byte {node.address} names chunks "
                "outside the dataset (a damaged file)"
            )
        if self.file_size is not None and n:
            end = int((node.children + node.sizes).max())
            if end > self.file_size:
                raise ChunkReadError(
                    f"dataset {self.path!r} has chunks up to byte {end}, past the end of "
                    f"the file ({self.file_size} bytes): the file is truncated"
                )
        idx = tuple(index.T)
        if self.split == 1:
            ref.offsets[idx] = node.children
            ref.lengths[idx] = node.sizes
        else:
            self._apply_split(ref, index, node)
        masked = np.flatnonzero(node.masks)
        if masked.size:
            self._inline_masked(
                ref, index[masked], node.children[masked], node.sizes[masked], node.masks[masked]
            )
        if self._known is not None and n:
            self._known[idx] = True
        self._leaves_done.add(node.address)

    def _apply_split(self, ref: Any, index: np.ndarray, node: Node) -> None:
        """Virtual sub-chunks: ``split`` row blocks per stored (unfiltered) chunk."""
        whole = int(np.prod(self.tree.chunk_shape)) * self.tree.element_size
        if np.any(node.sizes != whole):
            raise ChunkReadError(
                f"dataset {self.path!r}: an unfiltered chunk is stored with a size other than "
                f"{whole} bytes (a damaged file); open it with index_cache=False and lazy "
                "indexing off"
            )
        step = whole // self.split
        n_virtual = ref.offsets.shape[0]
        for j in range(self.split):
            rows = index[:, 0] * self.split + j
            keep = rows < n_virtual
            target = (rows[keep], *(index[keep, 1:].T))
            ref.offsets[target] = node.children[keep] + j * step
            ref.lengths[target] = step

    def _inline_masked(
        self,
        ref: Any,
        index: np.ndarray,
        addresses: np.ndarray,
        sizes: np.ndarray,
        masks: np.ndarray,
    ) -> None:
        """Chunks stored with some filters skipped: decoded and re-encoded inline, as eagerly."""
        from xnwb.codecs import decode_chunk, encode_chunk, hdf5_filters_to_codecs

        raws = self.source.fetch(addresses.tolist(), sizes.tolist())
        for grid_index, raw, mask in zip(index.tolist(), raws, masks.tolist(), strict=True):
            applied = [f for i, f in enumerate(self.hdf5_filters) if not (mask >> i) & 1]
            configs = hdf5_filters_to_codecs(applied, ref.dtype.itemsize, "/" + self.path)
            offset = tuple(
                int(i * c) for i, c in zip(grid_index, self.tree.chunk_shape, strict=True)
            )
            array = decode_chunk(
                bytes(raw),
                configs,
                ref.dtype,
                self.tree.chunk_shape,
                where=f"chunk {offset} of {self.path!r}",
            )
            key = tuple(grid_index)
            ref.inline[key] = encode_chunk(array, ref.filters)
            ref.offsets[key] = -1
            ref.lengths[key] = 0


def _in_background() -> bool:
    return threading.current_thread().name.startswith(_BACKGROUND_THREADS)


def _cells(box: Sequence[tuple[int, int]]) -> int:
    return math.prod(max(0, hi - lo) for lo, hi in box)


def _covers(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> bool:
    return all(lo <= x and y <= hi for (lo, hi), (x, y) in zip(a, b, strict=True))


def _overlap(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> bool:
    return all(lo < y and x < hi for (lo, hi), (x, y) in zip(a, b, strict=True))


def _slices(box: Sequence[tuple[int, int]]) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in box)


def lazy_arrays(index: Any) -> dict[str, Any]:
    """The arrays of ``index`` whose chunk index is not complete yet."""
    seen: dict[int, Any] = {}
    out = {}
    for path, arr in index.arrays.items():
        lazy = getattr(arr, "lazy", None)
        if lazy is not None and not lazy.complete and id(arr) not in seen:
            seen[id(arr)] = arr
            out[path] = arr
    return out


def complete_index(index: Any) -> Any:
    """Walk every remaining chunk B-tree of ``index`` now; returns ``index``, complete.

    Examples
    --------
    >>> import xnwb, xnwb.demo
    >>> path = xnwb.demo.write_demo_recording(tmp_path / "rec.nwb", duration=1.0)
    >>> complete_index(xnwb.build_index(path)).arrays["acquisition/ElectricalSeries/data"].shape
    (1000, 8)
    """
    for arr in lazy_arrays(index).values():
        arr.ensure_chunks(None)
    return index


def index_completion(source: str) -> IndexCompletion | None:
    """The background completion of the index of ``source`` opened last (``None``: none).

    ``index_completion(url).wait()`` blocks until the full index is built (and cached).
    """
    return _COMPLETIONS.get(str(source))


class IndexCompletion:
    """Completes a lazy index once, in a background thread, then calls ``on_complete(index)``.

    Parameters
    ----------
    index
        The :class:`~xnwb.refs.ReferenceIndex` with lazy arrays.
    on_complete
        Called with the complete index (e.g. to store it in the cache); its errors are
        logged, not raised — the lazy index keeps working without it.
    """

    def __init__(self, index: Any, on_complete: Callable[[Any], None] | None = None) -> None:
        self.index = index
        self.on_complete = on_complete
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._reads = 0  # reads in progress in the foreground
        self._last_read = 0.0
        for arr in lazy_arrays(index).values():
            arr.lazy.completion = self
        _COMPLETIONS[index.source] = self

    def start(self) -> None:
        """Start the background walk (once; later calls do nothing)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="xnwb-index-completion", daemon=True
            )
            self._thread.start()

    # -- politeness: the walk pauses between batches while a window is being read ----------
    def foreground_begin(self) -> None:
        with self._lock:
            self._reads += 1
            self._last_read = time.monotonic()

    def foreground_end(self) -> None:
        with self._lock:
            self._reads = max(0, self._reads - 1)

    def yield_to_reads(self) -> None:
        """Wait while a foreground read is in progress (a read that failed half-way and
        never ended counts for at most :data:`_YIELD_SECONDS`)."""
        while True:
            with self._lock:
                busy = self._reads > 0 and time.monotonic() - self._last_read < _YIELD_SECONDS
            if not busy:
                return
            time.sleep(0.005)

    def _run(self) -> None:
        try:
            complete_index(self.index)
            if self.on_complete is not None:
                self.on_complete(self.index)
        except Exception as err:  # the lazy index still answers every read
            self.error = err
            logger.warning("completing the chunk index in the background failed: %s", err)
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Start if needed and wait for the walk; ``True`` when it finished."""
        self.start()
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()


class LazyPlan:
    """Decides, dataset by dataset while a file is indexed, which chunk indexes stay lazy.

    Parameters
    ----------
    source
        The file's byte source (B-tree nodes are read through it later).
    read
        ``read(start, length) -> bytes`` for object headers while the file is being
        indexed (a remote file's block cache, so they cost no extra request).
    file_size
        Size of the file.
    min_chunks
        Datasets with fewer chunks are listed eagerly (a few leaves: no saving);
        default :data:`LAZY_MIN_CHUNKS`.
    """

    def __init__(
        self,
        source: ByteSource,
        read: Callable[[int, int], bytes],
        *,
        file_size: int | None,
        min_chunks: int | None = None,
    ) -> None:
        self.source = source
        self.read = read
        self.file_size = file_size
        self.min_chunks = LAZY_MIN_CHUNKS if min_chunks is None else min_chunks
        self.notes: dict[str, str] = {}  # dataset -> why its index was listed eagerly
        self._superblock: Any = None

    def tree_for(self, header_address: int, path: str) -> ChunkTree | None:
        """The dataset's version-1 chunk B-tree, or ``None`` (with a note saying why)."""
        from xnwb.btree import UnsupportedLayout, find_chunk_tree, read_superblock

        try:
            if self._superblock is None:
                self._superblock = read_superblock(self.read)
            return find_chunk_tree(self.read, header_address, self._superblock)
        except (UnsupportedLayout, struct_error, IndexError, ValueError) as why:
            self.notes[path] = f"chunk index listed in full: {why}"
            return None

    def make(self, tree: ChunkTree, path: str, hdf5_filters: list[Any], split: int) -> LazyChunks:
        return LazyChunks(
            self.source,
            tree,
            path=path,
            hdf5_filters=hdf5_filters,
            split=split,
            file_size=self.file_size,
        )


def preload_top(index: Any, cached: Callable[[int, int], bytes | None]) -> int:
    """Keep the B-tree roots of ``index``'s lazy arrays that are already in memory.

    Roots usually sit among the metadata a remote open has just read: ``cached``
    returns those bytes (else ``None``, and the root is fetched with the first
    window). Returns the number of roots kept. No request is made.
    """
    kept = 0
    for arr in lazy_arrays(index).values():
        lazy = arr.lazy
        size = lazy._clip(lazy.tree.address, node_read_size(lazy.tree))
        data = cached(lazy.tree.address, size)
        if data is None:
            continue
        root = parse_node(bytes(data), lazy.tree.address, lazy.tree)
        if isinstance(root, int) or root.level == 0:
            continue  # an overfull root, or a root that is a leaf: read on demand
        lazy._inner[root.address] = root
        kept += 1
    return kept
