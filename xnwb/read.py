"""Read an orthogonal selection of a referenced array: batched fetch, threaded decode.

zarr reads chunk by chunk, and at 0.5 ms of per-key overhead that caps a 30k-chunk
recording at a few MB/s. Here one call works out every chunk a selection touches,
fetches all their byte ranges in one coalesced batch, decodes them in a thread pool
(zlib and friends release the GIL) and copies each straight into the output.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from xnwb.exceptions import ChunkReadError
from xnwb.refs import ArrayRef
from xnwb.source import ByteSource

__all__ = ["DimSelection", "read_array", "read_selection"]

# One selection along one axis: (chunk number, selection inside the chunk, positions in the output)
DimSelection = list[tuple[int, slice | np.ndarray, slice | np.ndarray]]

_POOL: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()
# Decoding a handful of chunks is quicker than handing them to threads.
_MIN_CHUNKS_FOR_THREADS = 4
#: Stored bytes fetched at once by one read (more come in further batches).
_FETCH_BATCH_BYTES = 32 * 2**20


def _decode_pool() -> ThreadPoolExecutor:
    """A per-process decode pool (a forked child must not reuse its parent's threads)."""
    pid = os.getpid()
    pool = _POOL.get(pid)
    if pool is None:
        with _POOL_LOCK:
            pool = _POOL.get(pid)
            if pool is None:
                pool = ThreadPoolExecutor(
                    max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="xnwb-decode"
                )
                _POOL[pid] = pool
    return pool


def _dim_selection(sel: slice | np.ndarray, size: int, chunk: int) -> tuple[DimSelection, int]:
    """Split one axis' selection by chunk; returns the pieces and the output length."""
    if isinstance(sel, slice):
        start, stop, step = sel.indices(size)
        if step == 1:
            n_out = max(0, stop - start)
            pieces: DimSelection = []
            if n_out == 0:
                return pieces, 0
            for c in range(start // chunk, (stop - 1) // chunk + 1):
                lo, hi = max(start, c * chunk), min(stop, (c + 1) * chunk)
                pieces.append(
                    (c, slice(lo - c * chunk, hi - c * chunk), slice(lo - start, hi - start))
                )
            return pieces, n_out
        sel = np.arange(start, stop, step)
    idx = np.asarray(sel, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < -size or idx.max() >= size):
        raise IndexError(f"index out of bounds for axis of size {size}")
    idx = np.where(idx < 0, idx + size, idx)
    owners = idx // chunk
    pieces = []
    for c in np.unique(owners):
        positions = np.flatnonzero(owners == c)
        pieces.append((int(c), idx[positions] - c * chunk, positions))
    return pieces, idx.size


def read_selection(
    ref: ArrayRef,
    source: ByteSource,
    key: Sequence[slice | np.ndarray | int],
    path: str = "array",
) -> np.ndarray:
    """Read ``ref[key]`` with outer (orthogonal) indexing semantics.

    Parameters
    ----------
    ref
        The array's references.
    source
        Where the referenced bytes live.
    key
        One slice, integer array, or integer per axis (integers drop the axis).
    path
        Name used in error messages.

    Returns
    -------
    numpy.ndarray
    """
    ref.check_readable(path)
    key = tuple(key) + (slice(None),) * (len(ref.shape) - len(key))
    drop = tuple(i for i, k in enumerate(key) if isinstance(k, int | np.integer))
    norm = [np.asarray([k]) if isinstance(k, int | np.integer) else k for k in key]
    per_dim = [_dim_selection(k, s, c) for k, s, c in zip(norm, ref.shape, ref.chunks, strict=True)]
    out_shape = tuple(n for _, n in per_dim)
    fill = ref.fill_value if ref.fill_value is not None else (0 if ref.dtype != object else "")
    out = np.empty(out_shape, dtype=ref.dtype)
    if 0 in out_shape:
        return out.squeeze(axis=drop) if drop else out

    # Every chunk the selection touches, as flat task numbers over the per-axis pieces
    # (row-major, as itertools.product would list them): the chunk -> bytes mapping is
    # worked out with numpy, so a million-chunk read costs no per-chunk Python here.
    pieces = [p for p, _ in per_dim]
    # A lazy chunk index reads the B-tree nodes covering this box first (and, for a long
    # region, the byte span holding them and the region's chunks).
    box = [(p[0][0], p[-1][0] + 1) for p in pieces]
    try:
        ref.ensure_chunks(box)
    except ChunkReadError as err:
        raise _name_box(err, box, path) from err
    counts = tuple(len(p) for p in pieces)
    axis_chunks = [np.fromiter((c for c, _, _ in p), np.int64, len(p)) for p in pieces]
    grid = np.ix_(*axis_chunks)
    if ref.offsets.size:
        offsets = np.broadcast_to(ref.offsets[grid], counts).ravel()
        lengths = np.broadcast_to(ref.lengths[grid], counts).ravel()
    else:
        offsets = np.full(int(np.prod(counts)), -1, np.int64)
        lengths = np.zeros_like(offsets)
    stored = offsets >= 0
    inline: dict[int, Any] = {}
    if ref.inline:
        for index, raw in ref.inline.items():
            n = _task_number(index, axis_chunks, counts)
            if n is not None:
                inline[n] = raw
                stored[n] = False
    fetch_at = np.flatnonzero(stored)
    starts = offsets[fetch_at].tolist()
    sizes = lengths[fetch_at].tolist()
    # Inline and never-written chunks need no bytes: they go with the first batch.
    first_jobs: list[tuple[int, Any]] = list(inline.items())
    missing = np.flatnonzero(~stored).tolist()
    first_jobs.extend((n, None) for n in missing if n not in inline)

    codec = ref.codec
    # ``out`` as byte planes lets shuffled chunks be un-shuffled straight into it.
    out_bytes = (
        out.view(np.uint8).reshape((*out.shape, out.dtype.itemsize))
        if codec.shuffled and out.ndim
        else None
    )

    def place(batch: list[tuple[int, Any]]) -> None:
        for n, raw in batch:
            task = _task(n, pieces, counts)
            inner = _ix(tuple(s for _, s, _ in task))
            target = _ix(tuple(p for _, _, p in task))
            if raw is None:
                out[target] = fill
            else:
                index = tuple(c for c, _, _ in task)
                codec.decode_into(raw, out, out_bytes, target, inner, f"chunk {index} of {path!r}")

    # Many narrow chunks: one copy per run of a chunk row instead of one per chunk.
    slabs = _Slabs.plan(codec, out, pieces, fill, path)
    placer = slabs.place if slabs is not None else place

    def decode(jobs: list[tuple[int, Any]]) -> None:
        # Decode in threads for interactive reads; inside a dask task (not the main
        # thread) the scheduler already runs one task per core, and a second pool only
        # makes the threads fight over the cores. The pool gets a few batches per thread,
        # not one future per chunk (a future costs ~50 us: more than decoding a small chunk).
        if (
            len(jobs) >= _MIN_CHUNKS_FOR_THREADS
            and ref.filters
            and threading.current_thread() is threading.main_thread()
        ):
            pool = _decode_pool()
            n_batches = min(len(jobs), 4 * pool._max_workers)
            step = -(-len(jobs) // n_batches)
            for _ in pool.map(placer, [jobs[i : i + step] for i in range(0, len(jobs), step)]):
                pass
        else:
            placer(jobs)

    def fetch(lo: int, hi: int) -> list[tuple[int, Any]]:
        try:
            fetched = source.fetch(starts[lo:hi], sizes[lo:hi])
        except ChunkReadError as err:
            indices = [_chunk_index(int(n), pieces, counts) for n in fetch_at[lo:hi]]
            raise _name_chunks(err, indices, starts[lo:hi], sizes[lo:hi], path) from err
        return list(zip(fetch_at[lo:hi].tolist(), fetched, strict=True))

    # The stored bytes come in batches of at most _FETCH_BATCH_BYTES, the next fetched
    # while the last is decoded: a big read holds its output plus two batches, not the
    # output plus every compressed chunk (as much again for incompressible data).
    bounds = _byte_batches(sizes, _FETCH_BATCH_BYTES)
    if len(bounds) <= 1:
        decode((fetch(*bounds[0]) if bounds else []) + first_jobs)
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="xnwb-fetch") as ahead:
            pending = ahead.submit(fetch, *bounds[0])
            for k in range(len(bounds)):
                jobs = pending.result()
                if k + 1 < len(bounds):
                    pending = ahead.submit(fetch, *bounds[k + 1])
                decode(jobs + first_jobs if k == 0 else jobs)
    ref.chunks_read()
    return out.squeeze(axis=drop) if drop else out


class _Slabs:
    """Decode a 2-D selection one chunk row at a time: inflate, then one copy per row.

    With narrow chunks (``(1024, 1)`` × 64 channels: a million chunks in a 2 GB file)
    the per-chunk copy into the output costs more than inflating it. Here each chunk of a
    run of whole chunks along a grid row is inflated into a per-thread staging buffer and
    the run is un-shuffled into the output with a single strided copy; partial chunks at
    the selection's edges are copied one by one.
    """

    def __init__(
        self, codec: Any, out: np.ndarray, pieces: list[DimSelection], fill: Any, path: str
    ) -> None:
        self.codec, self.pieces, self.path = codec, pieces, path
        self.isz = out.dtype.itemsize
        self.out_u8 = out.view(np.uint8).reshape((*out.shape, self.isz))
        self.cr, self.cc = codec.chunk_shape
        self.n_cols = len(pieces[1])
        # One chunk's bytes as stored: planes (itemsize, rows, cols) when shuffled.
        self.chunk_layout = (
            (self.isz, self.cr, self.cc) if codec.shuffled else (self.cr, self.cc, self.isz)
        )
        fill_bytes = np.frombuffer(np.asarray(fill, dtype=out.dtype).tobytes(), np.uint8)
        self.fill = fill_bytes[:, None, None] if codec.shuffled else fill_bytes

    @classmethod
    def plan(
        cls, codec: Any, out: np.ndarray, pieces: list[DimSelection], fill: Any, path: str
    ) -> _Slabs | None:
        """The slab decoder, or ``None`` where chunk-by-chunk placing is as good."""
        if not (codec.fast and out.ndim == 2 and len(pieces[1]) >= 2 and out.dtype.kind in "iuf"):
            return None
        if any(not isinstance(inner, slice) for p in pieces for _, inner, _ in p):
            return None
        return cls(codec, out, pieces, fill, path)

    def place(self, batch: list[tuple[int, Any]]) -> None:
        """Decode ``batch`` (``(task number, raw or None)``, any order) into the output."""
        run: list[tuple[int, Any]] = []
        for n, raw in sorted(batch, key=lambda job: job[0]):
            if run and (n != run[-1][0] + 1 or n // self.n_cols != run[0][0] // self.n_cols):
                self._run(run)
                run = []
            run.append((n, raw))
        if run:
            self._run(run)

    def _run(self, run: list[tuple[int, Any]]) -> None:
        """Consecutive chunks of one grid row."""
        row, first_col = divmod(run[0][0], self.n_cols)
        _chunk_row, rows_in, rows_out = self.pieces[0][row]
        staging = _staging(len(run) * self.codec.nbytes).reshape(len(run), *self.chunk_layout)
        for k, (_n, raw) in enumerate(run):
            if raw is None:
                staging[k] = self.fill
            else:
                col = self.pieces[1][first_col + k][0]
                where = f"chunk {(self.pieces[0][row][0], col)} of {self.path!r}"
                self.codec.inflate_into(raw, staging[k].reshape(-1), where)
        # Whole chunks go in one copy; a partial one (at the selection's edges) alone.
        whole = [
            k for k in range(len(run)) if self.pieces[1][first_col + k][1] == slice(0, self.cc)
        ]
        if whole and whole == list(range(whole[0], whole[-1] + 1)):
            k0, k1 = whole[0], whole[-1] + 1
            start = self.pieces[1][first_col + k0][2].start
            target = self.out_u8[rows_out, start : start + (k1 - k0) * self.cc].view()
            target.shape = (target.shape[0], k1 - k0, self.cc, self.isz)  # a view, never a copy
            target[...] = self._as_out(staging[k0:k1], rows_in, slice(None))
            others = [k for k in range(len(run)) if not k0 <= k < k1]
        else:
            others = list(range(len(run)))
        for k in others:
            _col, cols_in, cols_out = self.pieces[1][first_col + k]
            self.out_u8[rows_out, cols_out] = self._as_out(staging[k : k + 1], rows_in, cols_in)[
                :, 0
            ]

    def _as_out(self, chunks: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        """``chunks`` (k, *chunk_layout) as (rows, k, cols, itemsize): the output's order."""
        if self.codec.shuffled:
            return chunks[:, :, rows, cols].transpose(2, 0, 3, 1)
        return chunks[:, rows, cols, :].transpose(1, 0, 2, 3)


_STAGING = threading.local()


def _staging(nbytes: int) -> np.ndarray:
    """A reusable per-thread byte buffer of at least ``nbytes`` (its first ``nbytes``)."""
    buf = getattr(_STAGING, "buf", None)
    if buf is None or buf.size < nbytes:
        buf = _STAGING.buf = np.empty(nbytes, dtype=np.uint8)
    return buf[:nbytes]


def _byte_batches(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """``[(lo, hi), ...]`` runs of ``sizes`` (in order) of at most ``limit`` bytes each.

    A run holds at least one item, so an item larger than ``limit`` is a run of its own.

    Examples
    --------
    >>> _byte_batches([4, 4, 4, 9, 1], 8)
    [(0, 2), (2, 3), (3, 4), (4, 5)]
    >>> _byte_batches([], 8)
    []
    """
    if not sizes:
        return []
    ends = np.cumsum(np.asarray(sizes, dtype=np.int64))
    bounds = []
    lo = 0
    while lo < len(sizes):
        base = int(ends[lo - 1]) if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base + limit, side="right")))
        bounds.append((lo, hi))
        lo = hi
    return bounds


def _task(
    n: int, pieces: list[DimSelection], counts: tuple[int, ...]
) -> list[tuple[int, slice | np.ndarray, slice | np.ndarray]]:
    """The per-axis pieces of flat task number ``n`` (row-major over ``counts``)."""
    parts = []
    for axis in range(len(counts) - 1, -1, -1):
        n, i = divmod(n, counts[axis])
        parts.append(pieces[axis][i])
    return parts[::-1]


def _chunk_index(n: int, pieces: list[DimSelection], counts: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(c for c, _, _ in _task(n, pieces, counts))


def _task_number(
    index: tuple[int, ...], axis_chunks: list[np.ndarray], counts: tuple[int, ...]
) -> int | None:
    """Flat task number of chunk ``index`` in this selection, or None if not touched."""
    n = 0
    for chunk, available, count in zip(index, axis_chunks, counts, strict=True):
        hit = np.flatnonzero(available == chunk)
        if hit.size == 0:
            return None
        n = n * count + int(hit[0])
    return n


def _name_chunks(
    err: ChunkReadError,
    indices: list[tuple[int, ...]],
    starts: list[int],
    lengths: list[int],
    path: str,
) -> ChunkReadError:
    """The same error (same class) naming the chunks whose bytes failed, not the first ones.

    A failed request covers the byte range ``err.byte_range`` (set by the byte source); the
    chunks inside it are the ones named. Without a range (the whole file changed) the error
    names the array only.
    """
    span = getattr(err, "byte_range", None)
    if span is None:
        named = ""
    else:
        lo, hi = span
        hit = [i for i, s, n in zip(indices, starts, lengths, strict=True) if s < hi and s + n > lo]
        hit = hit or indices
        more = f" (and {len(hit) - 4} more in the same request)" if len(hit) > 4 else ""
        named = "chunk(s) " + ", ".join(map(str, hit[:4])) + more + " of "
    new = type(err)(f"reading {named}{path!r}: {err}")
    new.byte_range = span  # type: ignore[attr-defined]
    return new


def _name_box(err: ChunkReadError, box: list[tuple[int, int]], path: str) -> ChunkReadError:
    """The same error (same class) naming the array and the chunks of a failed index read.

    A lazy index fetches a region's B-tree leaves, and for a long region the bytes around
    them, before any chunk is known: the chunks named are the region's.

    Examples
    --------
    >>> str(_name_box(ChunkReadError("HTTP 500"), [(150, 160), (0, 1)], "/data"))
    "reading the chunk index of chunks (150-159, 0) of '/data': HTTP 500"
    """
    rows = ", ".join(str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}" for lo, hi in box)
    new = type(err)(f"reading the chunk index of chunks ({rows}) of {path!r}: {err}")
    new.byte_range = getattr(err, "byte_range", None)  # type: ignore[attr-defined]
    return new


def _ix(parts: tuple[slice | np.ndarray, ...]) -> tuple[slice | np.ndarray, ...]:
    """Orthogonal indexing tuple: arrays are broadcast against each other like ``np.ix_``."""
    if sum(isinstance(p, np.ndarray) for p in parts) <= 1:
        return parts
    ndim = len(parts)
    out: list[slice | np.ndarray] = []
    for axis, p in enumerate(parts):
        if isinstance(p, np.ndarray):
            shape = [1] * ndim
            shape[axis] = p.size
            out.append(p.reshape(shape))
        else:
            out.append(
                np.arange(p.start, p.stop, p.step or 1).reshape(
                    [-1 if i == axis else 1 for i in range(ndim)]
                )
            )
    return tuple(out)


def read_array(ref: ArrayRef, source: ByteSource, path: str = "array") -> np.ndarray:
    """The whole array (for small arrays such as timestamps and table columns)."""
    return read_selection(ref, source, (), path)
