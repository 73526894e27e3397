"""Dask chunks for a stored array: whole storage chunks, grown along time first.

``xr.open_dataset(..., engine="nwbzarr", chunks={})`` chunks each variable as its backend
prefers (``encoding["preferred_chunks"]``). One dask task per stored HDF5 chunk is far too
many: a recording of (2000, 8) chunks has 31k of them per GB, and a one-second window then
costs a dozen tasks and fetches. :func:`dask_chunks` groups stored chunks instead:

- every dask chunk is a **whole number of storage chunks** along every axis (a stored chunk is
  never split between tasks, so a whole pass reads each one once);
- it grows **along time first**, keeping the storage chunk's channel span. dask fuses a
  *slice* of a chunk into its read (``x[a:b, 0:4]`` reads only the stored chunks it touches,
  in one coalesced fetch), but a channel *list* (``x[a:b, [1, 2, 3, 4]]``, which
  ``.sel(channel=[...])`` produces) goes through dask's ``take``, whose read fetches every
  channel of the dask chunk over the sliced time range. With the storage chunk's channel span,
  that is no more than the stored chunks the window touches anyway;
- along channels it spans at least ``min_span`` channels (4 by default), so a few-channel
  window touches one or two dask chunks, hence one or two fetches (requests, remotely), even
  when the file stores one channel per chunk;
- it grows along the other axes only when the whole time axis fits and the chunk would stay
  below ``MIN_CHUNK_BYTES``: below that, scheduling overheads outweigh the read;
- the size target is a quarter of dask's ``array.chunk-size`` (32 MiB of the default
  128 MiB), in bytes of the *in-memory* dtype (float64 once a conversion applies). A sliced
  window's cost does not depend on it (the slice is fused into the read), but everything
  that is not fused reads whole dask chunks: ``rechunk``, ``map_overlap``, the wavelet
  transform's re-split into its blocks (a 1 s z-scored window
  over ``chunks={}`` data reads 262 stored chunks at 32 MiB, 1048 at 128 MiB). A quarter also
  leaves room, within dask's task size, for the int16 read buffer and the float64
  temporaries of scaling, and whole passes lose nothing (the 1 GB recording in 120 tasks).
  ``chunks="auto"`` lets dask grow these chunks, in whole multiples, up to its full
  ``array.chunk-size`` (along channels too).

Examples
--------
A 64-channel, 30 kHz recording stored as (2000, 8) int16 chunks, read as float64, with
dask's default chunk size:

>>> import dask
>>> with dask.config.set({"array.chunk-size": "128MiB"}):
...     dask_chunks((7_800_000, 64), (2000, 8), 8)
(524000, 8)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "CHUNK_SIZE_FRACTION",
    "MIN_CHUNK_BYTES",
    "MIN_SPAN",
    "channel_span",
    "dask_chunk_size",
    "dask_chunks",
    "default_target_bytes",
]

#: Channels a dask chunk spans at least (rounded up to whole storage chunks): a typical
#: few-channel window then touches one or two dask chunks.
MIN_SPAN = 4
#: A chunk whose time axis is whole grows along channels until it holds this much: a task
#: costs ~0.1-0.3 ms to schedule, a few percent of reading and decoding 1 MiB.
MIN_CHUNK_BYTES = 2**20
#: The size target is dask's ``array.chunk-size`` divided by this.
CHUNK_SIZE_FRACTION = 4


def dask_chunk_size() -> int:
    """dask's ``array.chunk-size`` in bytes (128 MiB unless configured).

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"array.chunk-size": "64MiB"}):
    ...     dask_chunk_size()
    67108864
    """
    import dask
    from dask.utils import parse_bytes

    return int(parse_bytes(dask.config.get("array.chunk-size")))


def default_target_bytes() -> int:
    """A quarter of dask's ``array.chunk-size``, in bytes (32 MiB unless configured).

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"array.chunk-size": "64MiB"}):
    ...     default_target_bytes()
    16777216
    """
    return max(1, dask_chunk_size() // CHUNK_SIZE_FRACTION)


def channel_span(
    shape: Sequence[int], storage_chunks: Sequence[int], min_span: int = MIN_SPAN
) -> int:
    """Channels (axis 1) one :func:`dask_chunks` chunk spans: at least ``min_span``, in whole
    storage chunks, capped by the channel count (before any growth of a short recording).

    Examples
    --------
    >>> channel_span((1000, 64), (100, 1)), channel_span((1000, 64), (100, 3))
    (4, 6)
    >>> channel_span((1000, 384), (100, 121)), channel_span((1000, 2), (100, 1))
    (121, 2)
    """
    n, unit = int(shape[1]), min(int(storage_chunks[1]), int(shape[1]))
    return min(n, unit * math.ceil(min(min_span, n) / max(unit, 1)))


def dask_chunks(
    shape: Sequence[int],
    storage_chunks: Sequence[int],
    itemsize: int,
    *,
    target_bytes: int | str | None = None,
    min_span: int = MIN_SPAN,
) -> tuple[int, ...]:
    """A dask chunk shape made of whole storage chunks, grown along axis 0 (time) first.

    Parameters
    ----------
    shape
        The array's shape; axis 0 is time, axis 1 (if any) channels.
    storage_chunks
        The stored chunk shape (the unit one read decodes); may exceed ``shape``.
    itemsize
        Bytes per element *in memory* (8 for float64 once a conversion applies).
    target_bytes
        Size aimed at for one chunk, in bytes or as a string such as ``"32MiB"``; when None,
        :func:`default_target_bytes` (a quarter of dask's ``array.chunk-size``). A single
        storage chunk larger than this is kept whole.
    min_span
        Channels (axis 1) a chunk spans at least, rounded up to whole storage chunks and
        capped by the channel count.

    Returns
    -------
    tuple of int
        The chunk length along each axis: a multiple of the storage chunk (clipped to the
        shape), except where it covers the whole axis.

    Raises
    ------
    ValueError
        If the lengths of ``shape`` and ``storage_chunks`` differ, or a size is not positive.

    Examples
    --------
    Time grows first and the storage chunk's 8 channels are kept, so a list of channels
    within them reads only their own stored chunks:

    >>> dask_chunks((7_800_000, 64), (2000, 8), 8, target_bytes="32MiB")
    (524000, 8)

    One channel per stored chunk: at least 4 channels per dask chunk, so a 4-channel window
    is one or two tasks and fetches:

    >>> dask_chunks((16_777_216, 64), (1024, 1), 8, target_bytes="32MiB")
    (1048576, 4)

    A short recording holds its whole time axis in one chunk; channels grow only while the
    chunk is under ``MIN_CHUNK_BYTES`` (1 MiB):

    >>> dask_chunks((20_000, 384), (1000, 1), 8, target_bytes="32MiB")
    (20000, 7)
    >>> dask_chunks((13_163, 384), (4114, 121), 2, target_bytes="32MiB")
    (13163, 121)

    A storage chunk larger than the target stays whole; chunks larger than the data are
    clipped:

    >>> dask_chunks((1_000_000, 124), (100_000, 124), 8, target_bytes="32MiB")
    (100000, 124)
    >>> dask_chunks((100,), (4096,), 4)
    (100,)
    """
    shape = tuple(int(s) for s in shape)
    storage = tuple(int(c) for c in storage_chunks)
    if len(shape) != len(storage):
        raise ValueError(
            f"shape {shape} and storage chunks {storage} have different lengths; "
            "pass one chunk length per axis"
        )
    if any(c < 1 for c in storage) or any(s < 0 for s in shape):
        raise ValueError(
            f"storage chunks {storage} must be positive and shape {shape} non-negative"
        )
    if itemsize < 1:
        raise ValueError(f"itemsize must be a positive number of bytes, got {itemsize!r}")
    if target_bytes is None:
        target = default_target_bytes()
    elif isinstance(target_bytes, str):
        from dask.utils import parse_bytes

        target = int(parse_bytes(target_bytes))
    else:
        target = int(target_bytes)
    if target < 1:
        raise ValueError(f"target_bytes must be positive, got {target_bytes!r}")

    unit = [min(c, s) for c, s in zip(storage, shape, strict=True)]
    if not shape or 0 in shape:
        return tuple(unit)
    out = list(unit)
    if len(shape) >= 2:
        out[1] = channel_span(shape, storage, min_span)

    # Time first: as many whole storage chunks as the target allows (at least one).
    row_bytes = itemsize * math.prod(out[1:])
    n_time = max(1, target // (row_bytes * unit[0]))
    out[0] = min(shape[0], n_time * unit[0])
    if out[0] < shape[0]:
        return tuple(out)

    # The whole time axis fits: grow the other axes, in order, only while the chunk is small.
    floor = min(MIN_CHUNK_BYTES, target)
    for axis in range(1, len(shape)):
        others = itemsize * math.prod(out[:axis] + out[axis + 1 :])
        if others * out[axis] >= floor:
            break
        # ``out[axis]`` is a multiple of ``unit[axis]`` (or the whole axis, which stops below).
        n_units = math.ceil(floor / (others * unit[axis]))
        out[axis] = min(shape[axis], max(out[axis], n_units * unit[axis]))
    return tuple(out)
