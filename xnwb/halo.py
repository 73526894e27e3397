"""Dask blocks that see their neighbours: each task gets its samples plus a halo on each side.

``dask.array.map_overlap`` first rechunks, then asks every neighbouring *block* for its edge,
so a block needs its neighbours computed in full: a one-second window of a transform reads
three blocks' worth of input, and a rechunked storage chunk is held by several tasks, which
stops dask from narrowing its read to the part used. Here each extended block is assembled
straight from the *input* chunks it overlaps, one ``getitem`` per input chunk, zeros beyond
the record (MNE's padding). When a window's graph uses one part of a chunk, dask's slice
fusion then reads only that part; a whole pass reads each input chunk once and slices it.

A consumer that copies the block anyway (the transform fills its FFT buffer) can take the
pieces themselves (``pieces=True``: an :class:`ExtendedBlock`) and place them straight where
it wants them, so the samples are copied once, not assembled first and copied again.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["ExtendedBlock", "map_halo_blocks"]


def _bounds(chunks: Sequence[int]) -> np.ndarray:
    return np.cumsum((0, *chunks))


def _overlaps(lo: int, hi: int, bounds: np.ndarray) -> list[tuple[int, slice, slice]]:
    """Input chunks meeting ``[lo, hi)``: (chunk, slice inside it, slice inside the block)."""
    size = int(bounds[-1])
    a, b = max(lo, 0), min(hi, size)
    out = []
    if a >= b:
        return out
    first = int(np.searchsorted(bounds, a, side="right")) - 1
    for j in range(first, len(bounds) - 1):
        c0, c1 = int(bounds[j]), int(bounds[j + 1])
        if c0 >= b:
            break
        s0, s1 = max(a, c0), min(b, c1)
        out.append((j, slice(s0 - c0, s1 - c0), slice(s0 - lo, s1 - lo)))
    return out


class ExtendedBlock:
    """A block and its halos, time last, as the input pieces that make it up (not copied).

    ``parts`` are ``(place, piece)`` pairs: ``piece`` (a view of an input chunk, time moved
    last) fills ``place`` (slices of the block). The pieces do not overlap; they tile the block
    along every axis but time, where samples beyond the record are missing and read as zeros
    (MNE's padding).

    Examples
    --------
    >>> whole = ExtendedBlock.of(np.arange(4.0))
    >>> dst = np.full(6, np.nan)
    >>> whole.rotate_into(dst, 1)   # x[1:], zeros, then x[:1]
    >>> dst.tolist()
    [1.0, 2.0, 3.0, 0.0, 0.0, 0.0]
    >>> ExtendedBlock((5,), np.dtype(float), (((slice(1, 5),), np.ones(4)),)).array().tolist()
    [0.0, 1.0, 1.0, 1.0, 1.0]
    """

    __slots__ = ("dtype", "parts", "shape")

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: np.dtype,
        parts: tuple[tuple[tuple[slice, ...], np.ndarray], ...],
    ) -> None:
        self.shape, self.dtype, self.parts = tuple(shape), np.dtype(dtype), tuple(parts)

    @classmethod
    def of(cls, xe: np.ndarray) -> ExtendedBlock:
        """An in-memory block (time last) as a single piece."""
        xe = np.asarray(xe)
        return cls(xe.shape, xe.dtype, ((tuple(slice(0, n) for n in xe.shape), xe),))

    def array(self) -> np.ndarray:
        """The block as one array (a new one, unless it is a single whole piece)."""
        if len(self.parts) == 1 and self.parts[0][1].shape == self.shape:
            return self.parts[0][1]
        xe = np.empty(self.shape, dtype=self.dtype)
        self.rotate_into(xe, 0)
        return xe

    def rotate_into(self, dst: np.ndarray, shift: int) -> None:
        """Write the block, rotated ``shift`` samples to the left, into ``dst``; zeros elsewhere.

        ``dst`` has the block's shape but a time length ``L >= shape[-1]``: sample ``i``
        lands at ``(i - shift) % L``, and every other sample of ``dst`` (the padding between,
        and what lies beyond the record) is set to zero. One copy of each piece, converted
        to ``dst``'s type on the way.
        """
        n, length = self.shape[-1], dst.shape[-1]
        if dst.shape[:-1] != self.shape[:-1] or not 0 <= shift <= n <= length:
            raise ValueError(f"cannot rotate a block of {self.shape} by {shift} into {dst.shape}")
        if not self.parts:  # nothing to place (no signals): all zeros
            dst[...] = 0
            return
        lo = min(place[-1].start for place, _ in self.parts)
        hi = max(place[-1].stop for place, _ in self.parts)
        cells = sum(math.prod(piece.shape) for _, piece in self.parts)
        if cells < math.prod(self.shape[:-1]) * (hi - lo):
            dst[...] = 0  # not a tiling along the other axes: zero first, then place
        else:
            present = _rotated(lo, hi, shift, length)
            runs = sorted((at, at + stop - first) for first, stop, at in present)
            end = 0
            for start, stop in runs:  # the images of the samples present tile the rest
                if start > end:
                    dst[..., end:start] = 0
                end = stop
            if end < length:
                dst[..., end:] = 0
        for place, piece in self.parts:
            t0 = place[-1].start
            for first, stop, start in _rotated(t0, place[-1].stop, shift, length):
                dst[(*place[:-1], slice(start, start + stop - first))] = piece[
                    ..., first - t0 : stop - t0
                ]


def _rotated(first: int, stop: int, shift: int, length: int) -> list[tuple[int, int, int]]:
    """Where samples ``first:stop`` land rotated left by ``shift`` in ``length``: at most two
    runs ``(first, stop, start in dst)``."""
    runs = []
    if first < shift:  # wraps to the end
        runs.append((first, min(stop, shift), length - shift + first))
    if stop > shift:
        a = max(first, shift)
        runs.append((a, stop, a - shift))
    return [r for r in runs if r[1] > r[0]]


def map_halo_blocks(
    func: Callable[..., np.ndarray],
    x: Any,
    *,
    axis: int,
    other_chunks: tuple[tuple[int, ...], ...],
    time_chunks: tuple[int, ...],
    halo: int,
    out_chunks: tuple[tuple[int, ...], ...],
    name: str,
    meta: np.ndarray,
    pieces: bool = False,
    whole_main_chunk: bool = False,
    **kwargs: Any,
) -> Any:
    """Apply ``func(xe, time_block=i, **kwargs)`` to halo-extended blocks of ``x``.

    Parameters
    ----------
    func
        Called with the extended block ``xe``, time moved last (the block's other-axis
        extent, its time samples plus ``halo`` on each side, zeros beyond the record), and
        ``time_block``, the block's index along time; returns the output block.
    x : dask.array.Array
        The input. Its chunks only decide how blocks are read, not their shape. Pieces are
        cut from its chunks as they are (no transpose first), so dask can fuse each cut into
        the read of the chunk.
    axis
        The time axis of ``x``.
    other_chunks, time_chunks
        The blocks' chunks along the other axes (in ``x``'s order) and along time.
    halo
        Samples borrowed from each side.
    out_chunks
        Chunks of the result: ``other_chunks``, then one new axis (a single chunk), then
        the output time chunks (one per time block).
    name
        Name of the result (deterministic: tokenize the inputs).
    meta
        Empty array of the result's type.
    pieces
        Hand ``func`` an :class:`ExtendedBlock` (the pieces, not copied) instead of an array,
        for a ``func`` that copies the block anyway.
    whole_main_chunk
        Hand each block the input chunk it overlaps most as it is, cut inside the block's
        task, instead of through a ``getitem`` task of its own; the other overlaps (a
        neighbour's halo) stay ``getitem`` tasks, so a distributed worker is sent the halo,
        not the neighbour's chunk. For graphs only ever computed whole (a statistics pass):
        a few tasks instead of two or three per block (a distributed scheduler pays about
        a millisecond for each), but a window of such a graph reads the main chunk whole.

    Returns
    -------
    dask.array.Array

    Examples
    --------
    >>> import dask.array as da
    >>> x = da.arange(10.0, chunks=3)
    >>> sums = map_halo_blocks(lambda xe, time_block: xe.sum(keepdims=True)[None],
    ...                        x, axis=0, other_chunks=(), time_chunks=(5, 5), halo=1,
    ...                        out_chunks=((1,), (1, 1)), name="s", meta=np.empty((0, 0)))
    >>> sums.compute().tolist()  # [0..5] and [4..9]: each block sees one sample of the next
    [[15.0, 39.0]]
    """
    import dask.array as da
    from dask._task_spec import DataNode, Task, TaskRef
    from dask.highlevelgraph import HighLevelGraph

    axis = axis % x.ndim
    in_bounds = [_bounds(c) for c in x.chunks]
    block_bounds = [_bounds(c) for c in other_chunks]
    t_bounds = _bounds(time_chunks)
    piece_name = f"{name}-input"
    # The function and its keywords (a kernel bank can be megabytes) are one key of the
    # graph, which a distributed scheduler ships once per worker, not once per task.
    params_key = f"{name}-params"
    layer: dict[Any, Any] = {params_key: DataNode(params_key, (func, kwargs, bool(pieces)))}
    # Each axis's blocks and the input chunks they meet, worked out once per axis (a long
    # recording has tens of thousands of blocks: the graph is built in seconds, not minutes).
    extents_of: list[list[tuple[int, int]]] = [
        [(int(b[i]), int(b[i + 1])) for i in range(len(b) - 1)] for b in block_bounds
    ]
    extents_of.insert(
        axis,
        [(int(t_bounds[i]) - halo, int(t_bounds[i + 1]) + halo) for i in range(len(time_chunks))],
    )
    overlaps_of = [
        [_overlaps(lo, hi, bounds) for lo, hi in extents]
        for extents, bounds in zip(extents_of, in_bounds, strict=True)
    ]
    for idx in itertools.product(*(range(len(c)) for c in (*other_chunks, time_chunks))):
        *others, it = idx
        positions = list(others)
        positions.insert(axis, it)
        shape = tuple(hi - lo for (lo, hi) in (extents_of[a][i] for a, i in enumerate(positions)))
        per_axis = [overlaps_of[a][i] for a, i in enumerate(positions)]
        combos = list(itertools.product(*per_axis))
        main = -1
        if whole_main_chunk and combos:
            sizes = [math.prod(s.stop - s.start for _, _, s in combo) for combo in combos]
            main = sizes.index(max(sizes))
        refs, places, cuts = [], [], []
        for n, combo in enumerate(combos):
            chunk = tuple(j for j, _, _ in combo)
            inner = tuple(s for _, s, _ in combo)
            places.append(tuple(p for _, _, p in combo))
            if n == main:  # the chunk itself, cut inside the block's task
                refs.append(TaskRef((x.name, *chunk)))
                cuts.append(inner)
                continue
            key = (piece_name, *idx, n)
            layer[key] = Task(
                key, operator.getitem, TaskRef((x.name, *chunk)), DataNode(None, inner)
            )
            refs.append(TaskRef(key))
            cuts.append(None)
        out_key = (name, *others, 0, it)
        layer[out_key] = Task(
            out_key,
            _assemble,
            TaskRef(params_key),
            axis,
            shape,
            x.dtype,
            tuple(places),
            tuple(cuts),
            it,
            *refs,
        )
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[x])
    return da.Array(graph, name, out_chunks, meta=meta)


def _assemble(
    params: tuple[Callable[..., np.ndarray], dict[str, Any], bool],
    axis: int,
    shape: tuple[int, ...],
    dtype: np.dtype,
    places: tuple[tuple[slice, ...], ...],
    cuts: tuple[tuple[slice, ...] | None, ...],
    time_block: int,
    *pieces: np.ndarray,
) -> np.ndarray:
    func, kwargs, as_pieces = params
    block = ExtendedBlock(
        _time_last(shape, axis),
        dtype,
        tuple(
            (
                _time_last(place, axis),
                np.moveaxis(np.asarray(piece if cut is None else piece[cut]), axis, -1),
            )
            for place, cut, piece in zip(places, cuts, pieces, strict=True)
        ),
    )
    # An array only for a func that wants one (a block inside one chunk is not copied).
    return func(block if as_pieces else block.array(), time_block=time_block, **kwargs)


def _time_last(items: tuple[Any, ...], axis: int) -> tuple[Any, ...]:
    return (*items[:axis], *items[axis + 1 :], items[axis])
