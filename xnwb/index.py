"""Build a :class:`~xnwb.refs.ReferenceIndex` by walking an HDF5 file once with h5py.

h5py is used here and only here: after the index exists, data are read by byte
range (see :mod:`xnwb.store`). Per chunked dataset, one ``chunk_iter`` pass lists
every chunk (``get_chunk_info`` is quadratic and only a fallback). Contiguous and
unfiltered chunked data are cut into virtual sub-chunks along the first axis so a
short window never fetches a whole dataset.
"""

from __future__ import annotations

import gc
import itertools
import operator
import os
import warnings
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from xnwb.chunklist import object_address, read_chunk_btree
from xnwb.codecs import encode_chunk, hdf5_filters_to_codecs
from xnwb.exceptions import ChunkReadError, NotNWBError, UnsupportedFilterError
from xnwb.refs import ArrayRef, ReferenceIndex

__all__ = ["DEFAULT_INLINE_BYTES", "DEFAULT_MAX_CHUNK_BYTES", "index_hdf5"]

#: Largest virtual sub-chunk cut out of contiguous or unfiltered data.
DEFAULT_MAX_CHUNK_BYTES = 4 * 2**20
#: Datasets at most this large are read once and stored in the index itself.
DEFAULT_INLINE_BYTES = 16 * 2**10
#: Strings and references are always inlined; beyond this many bytes they are skipped.
_MAX_INLINE_OBJECT_BYTES = 64 * 2**20
#: Chunks listed between two progress reports (a remote B-tree leaf holds a few hundred).
_PROGRESS_EVERY = 256


def index_hdf5(
    h5file: h5py.File,
    source: str,
    *,
    file_size: int | None = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    inline_bytes: int = DEFAULT_INLINE_BYTES,
    lazy: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReferenceIndex:
    """Walk an open HDF5 file and return references to all of its datasets.

    Parameters
    ----------
    h5file
        An open ``h5py.File`` (local, or on an fsspec file object).
    source
        URL or path that the chunk references will name.
    file_size
        Size of the file in bytes; offsets past it are refused.
    max_chunk_bytes
        Largest virtual sub-chunk for contiguous or unfiltered chunked data.
    inline_bytes
        Datasets no larger than this are stored in the index itself.
    lazy
        A :class:`xnwb.lazyindex.LazyPlan`: big chunked datasets then get their chunk
        offsets from the B-tree on demand instead of a full ``chunk_iter`` listing.
    progress
        Called as ``progress(done, total)`` while the walk goes on: ``total`` is the number of
        chunks the file's chunked datasets can hold (other datasets count one each), ``done``
        how many of them are listed so far. Costs one extra pass over the object headers
        (the second reads them from h5py's/the block cache's memory).

    Returns
    -------
    ReferenceIndex
    """
    if max_chunk_bytes < 1:
        raise ValueError(f"max_chunk_bytes must be positive, got {max_chunk_bytes}")
    groups: dict[str, dict[str, Any]] = {"": _attrs(h5file, h5file)}
    arrays: dict[str, ArrayRef] = {}
    seen: dict[Any, str] = {}
    soft_links: dict[str, str] = {}
    skipped: dict[str, str] = {}
    failures: list[BaseException] = []
    counter = _Progress(h5file, progress) if progress is not None else None

    def visit(name: str, link: Any) -> Any:
        # h5py turns an exception raised inside this callback into a SystemError:
        # keep it and stop the walk instead.
        try:
            _visit(name, link)
        except Exception as err:
            failures.append(err)
            return 1
        return None

    def _visit(name: str, link: Any) -> None:
        if isinstance(link, h5py.SoftLink):
            soft_links[name] = link.path.strip("/")
            return
        if isinstance(link, h5py.ExternalLink):
            skipped[name] = f"external link to {link.filename}:{link.path}"
            return
        obj = h5file.get(name)
        if obj is None:
            return
        key = object_address(obj)
        if key in seen:
            soft_links[name] = seen[key]  # a second hard link to the same object
            return
        seen[key] = name
        if isinstance(obj, h5py.Group):
            groups[name] = _attrs(obj, h5file)
        elif isinstance(obj, h5py.Dataset):
            if counter is not None:
                counter.start(key)
            try:
                ref = _index_dataset(
                    obj, name, h5file, file_size, max_chunk_bytes, inline_bytes, lazy, counter
                )
            except _Skip as why:
                skipped[name] = str(why)
                return
            finally:
                if counter is not None:
                    counter.finish()
            arrays[name] = ref

    h5file.visititems_links(visit)
    if failures:
        raise failures[0]

    # Soft links to datasets (NWB links timestamps, data) become aliases of the target.
    for name, target in soft_links.items():
        if target in arrays:
            arrays[name] = arrays[target]
        elif target not in groups:
            skipped[name] = f"dangling link to /{target}"
    info: dict[str, Any] = {"skipped": skipped, "links": soft_links}
    if lazy is not None and lazy.notes:
        info["lazy_index_notes"] = dict(lazy.notes)
    if file_size is not None:
        info["size"] = int(file_size)
    return ReferenceIndex(source=source, groups=groups, arrays=arrays, info=info)


class _Progress:
    """Counts the chunks listed against the chunks the file's datasets can hold.

    Each dataset weighs the number of chunks in its grid (one if it is not chunked); its
    share is counted chunk by chunk while HDF5 lists them and completed when the dataset is
    done (inlined, lazy or skipped datasets jump to their share at once).
    """

    def __init__(self, h5file: h5py.File, report: Callable[[int, int], None]) -> None:
        self.weights: dict[int, int] = {}

        def weigh(_name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                self.weights[object_address(obj)] = _grid_size(obj)

        h5file.visititems(weigh)
        self.total = sum(self.weights.values())
        self.report = report
        self.base = 0  # datasets finished
        self.weight = 0  # the current dataset's share
        self.within = 0  # its chunks listed so far
        report(0, self.total)

    def start(self, key: int) -> None:
        self.weight = self.weights.get(key, 1)
        self.within = 0

    def chunks(self, n: int) -> None:
        self.within = min(self.weight, self.within + n)
        self.report(self.base + self.within, self.total)

    def finish(self) -> None:
        self.base = min(self.total, self.base + self.weight)
        self.weight = self.within = 0
        self.report(self.base, self.total)


def _grid_size(ds: h5py.Dataset) -> int:
    """How many chunks ``ds``'s chunk grid has (1 for a contiguous or scalar dataset)."""
    if ds.chunks is None or not ds.shape:
        return 1
    return max(1, int(np.prod([-(-n // c) for n, c in zip(ds.shape, ds.chunks, strict=True)])))


class XnwbIndexWarning(UserWarning):
    """Indexing works, but slowly or with a workaround."""


class _Skip(Exception):
    """A dataset the index leaves out, with the reason."""


def _ref_name(h5file: h5py.File, ref: Any) -> str:
    if not ref:
        return ""
    try:
        return (h5file[ref].name or "").strip("/")
    except (KeyError, ValueError, RuntimeError):
        return ""


def _jsonable(value: Any, h5file: h5py.File) -> Any:
    """An attribute value as plain JSON types (references become paths)."""
    if isinstance(value, h5py.Reference | h5py.RegionReference):
        return "/" + _ref_name(h5file, value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O" or value.dtype.kind in "SU":
            return [_jsonable(v, h5file) for v in value.tolist()]
        if value.dtype.names:
            return str(value.tolist())
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _attrs(obj: h5py.HLObject, h5file: h5py.File) -> dict[str, Any]:
    out = {}
    for name in obj.attrs:
        try:
            out[name] = _jsonable(obj.attrs[name], h5file)
        except (OSError, TypeError, ValueError) as err:  # unreadable attribute type
            out[name] = f"<unreadable attribute: {err}>"
    return out


def _index_dataset(
    ds: h5py.Dataset,
    name: str,
    h5file: h5py.File,
    file_size: int | None,
    max_chunk_bytes: int,
    inline_bytes: int,
    lazy: Any = None,
    counter: _Progress | None = None,
) -> ArrayRef:
    attrs = _attrs(ds, h5file)
    dtype = ds.dtype
    plist = ds.id.get_create_plist()
    if plist.get_external_count() > 0:
        raise _Skip("data stored in external raw files")
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise _Skip("HDF5 virtual dataset")

    if (
        h5py.check_string_dtype(dtype)
        or h5py.check_ref_dtype(dtype)
        or h5py.check_enum_dtype(dtype)
        or dtype.kind == "b"
    ):
        return _inline_objects(ds, name, h5file, attrs)
    if dtype.names is not None or h5py.check_vlen_dtype(dtype) is not None or dtype.kind == "V":
        raise _Skip(f"dtype {dtype} is not indexed")

    nbytes = int(np.prod(ds.shape, dtype=np.int64)) * dtype.itemsize
    # Sample data (NWB's ``data``) stay by reference however small, so opening
    # reads none of them and the HDF5 chunking survives as preferred chunks.
    small = nbytes <= inline_bytes and name.rsplit("/", 1)[-1] != "data"
    if ds.shape == () or small or layout == h5py.h5d.COMPACT:
        try:
            return _inline_numeric(ds, attrs)
        except OSError as err:  # HDF5 itself lacks a filter of the pipeline
            raise _Skip(_unreadable_reason(ds, plist, name, err)) from err

    fill = ds.fillvalue
    if layout == h5py.h5d.CONTIGUOUS:
        ref = _contiguous(ds, name, attrs, file_size, max_chunk_bytes)
    else:
        ref = _chunked(ds, name, h5file, attrs, plist, max_chunk_bytes, lazy, counter)
    ref.fill_value = None if fill is None or not np.any(fill) else fill
    if file_size is not None and ref.offsets.size:
        stored = ref.offsets >= 0
        ends = ref.offsets[stored] + ref.lengths[stored]
        if ends.size and int(ends.max()) > file_size:
            raise ChunkReadError(
                f"dataset {name!r} has chunks up to byte {int(ends.max())}, past the end of "
                f"the file ({file_size} bytes): the file is truncated"
            )
    return ref


def _unreadable_reason(ds: h5py.Dataset, plist: Any, name: str, err: OSError) -> str:
    """Why HDF5 could not read a small dataset: the filter it lacks, if that is it."""
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    try:
        hdf5_filters_to_codecs(filters, ds.dtype.itemsize, "/" + name)
    except UnsupportedFilterError as why:
        return str(why)
    return f"HDF5 cannot read it: {err}"


def _inline_ref(
    shape: tuple[int, ...],
    dtype: np.dtype,
    attrs: dict[str, Any],
    filters: list[dict[str, Any]] | None,
    payload: np.ndarray,
) -> ArrayRef:
    """A dataset stored in the index itself, as one chunk."""
    chunks = tuple(max(1, s) for s in shape)
    ref = ArrayRef.empty(shape, chunks, dtype, filters=filters, attrs=attrs, layout="inline")
    if all(ref.grid) or not shape:
        ref.inline[(0,) * len(shape)] = encode_chunk(payload, filters)
    return ref


def _inline_numeric(ds: h5py.Dataset, attrs: dict[str, Any]) -> ArrayRef:
    data = np.array(ds[()], order="C")
    shape = tuple(ds.shape)
    padded = np.zeros(tuple(max(1, s) for s in shape), dtype=data.dtype)
    padded[tuple(slice(0, s) for s in shape)] = data
    return _inline_ref(shape, data.dtype, attrs, None, padded)


def _inline_objects(
    ds: h5py.Dataset, name: str, h5file: h5py.File, attrs: dict[str, Any]
) -> ArrayRef:
    """Strings, references, enums and bools: read once, stored as UTF-8 or plain values."""
    n = int(np.prod(ds.shape, dtype=np.int64))
    if n * max(ds.dtype.itemsize, 8) > _MAX_INLINE_OBJECT_BYTES:
        raise _Skip(f"{n} strings/references are too many to inline")
    raw = ds[()]
    if h5py.check_enum_dtype(ds.dtype) is not None or ds.dtype.kind == "b":
        ref = _inline_numeric(ds, attrs)
        return ref
    flat = np.asarray(raw, dtype=object).reshape(-1)
    if h5py.check_ref_dtype(ds.dtype):
        values = ["/" + _ref_name(h5file, r) if r else "" for r in flat]
    else:
        values = [
            v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in flat
        ]
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    shape = tuple(ds.shape)
    return _inline_ref(shape, np.dtype(object), attrs, [{"id": "vlen-utf8"}], arr.reshape(shape))


def _rows_per_subchunk(row_bytes: int, max_chunk_bytes: int) -> int:
    return max(1, max_chunk_bytes // max(1, row_bytes))


def _contiguous(
    ds: h5py.Dataset,
    name: str,
    attrs: dict[str, Any],
    file_size: int | None,
    max_chunk_bytes: int,
) -> ArrayRef:
    shape = tuple(ds.shape)
    itemsize = ds.dtype.itemsize
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
    rows = min(shape[0], _rows_per_subchunk(row_bytes, max_chunk_bytes)) or 1
    chunks = (rows, *shape[1:])
    n = -(-shape[0] // rows)
    ref = ArrayRef.empty(shape, chunks, ds.dtype, attrs=attrs, layout="contiguous")
    offsets, lengths = ref.offsets, ref.lengths
    base = ds.id.get_offset()
    if base is None:  # never written: every value is the fill value
        return ref
    step = rows * row_bytes
    flat_offsets = base + np.arange(n, dtype=np.int64) * step
    offsets.reshape(-1)[:] = flat_offsets
    lengths.reshape(-1)[:] = step
    # The last sub-chunk is partial; zarr wants whole chunks. Reading on past the
    # dataset's end is harmless (zarr crops), unless that runs off the file.
    last_end = int(flat_offsets[-1]) + step
    data_end = base + int(np.prod(shape, dtype=np.int64)) * itemsize
    if file_size is not None and data_end > file_size:
        raise ChunkReadError(
            f"dataset {name!r} ends at byte {data_end}, past the end of the file "
            f"({file_size} bytes): the file is truncated"
        )
    if file_size is None or last_end > file_size:
        tail = np.zeros(chunks, dtype=ds.dtype)
        start = (n - 1) * rows
        tail[: shape[0] - start] = ds[start:]
        last = (n - 1,) + (0,) * (len(shape) - 1)
        offsets[last] = -1
        lengths[last] = 0
        ref.inline[last] = tail.tobytes()
    return ref


def _chunk_locations(
    ds: h5py.Dataset, name: str, counter: _Progress | None = None
) -> tuple[np.ndarray, ...]:
    """``(chunk_offsets, byte_offsets, sizes, filter_masks)`` of every stored chunk."""
    ndim = len(ds.shape)
    filename = getattr(getattr(ds, "file", None), "filename", None)
    listed = read_chunk_btree(ds, filename, None) if filename else None
    if listed is not None:  # the B-tree read directly: several times faster than chunk_iter
        return listed
    infos: list[Any] = []
    if hasattr(ds.id, "chunk_iter"):
        # A bound builtin as the callback: no Python frame per chunk (a Python one only
        # when progress is shown). The garbage collector is paused: 100k new tuples would
        # otherwise trigger it repeatedly.
        collect: Callable[[Any], None] = infos.append
        if counter is not None:

            def collect(info: Any) -> None:
                infos.append(info)
                if len(infos) % _PROGRESS_EVERY == 0:
                    counter.chunks(_PROGRESS_EVERY)

        was_enabled = gc.isenabled()
        gc.disable()
        try:
            ds.id.chunk_iter(collect)
        finally:
            if was_enabled:
                gc.enable()
    else:  # HDF5 < 1.12.3
        n = ds.id.get_num_chunks()
        warnings.warn(
            f"{name!r}: this HDF5 library lacks chunk_iter, so its {n} chunks are listed one "
            "by one, which takes quadratic time; upgrade h5py/HDF5 for fast indexing",
            XnwbIndexWarning,
            stacklevel=3,
        )
        infos = [ds.id.get_chunk_info(i) for i in range(n)]
    if not infos:
        empty = np.zeros(0, dtype=np.int64)
        return empty.reshape(0, ndim), empty, empty, empty
    # StoreInfo is a named tuple (chunk_offset, filter_mask, byte_offset, size):
    # pull the fields out with C-level iterators rather than attribute reads.
    n = len(infos)

    def field(i: int) -> np.ndarray:
        return np.fromiter(map(operator.itemgetter(i), infos), dtype=np.int64, count=n)

    coords = map(operator.itemgetter(0), infos)
    flat = np.fromiter(itertools.chain.from_iterable(coords), dtype=np.int64, count=n * ndim)
    return flat.reshape(-1, ndim), field(2), field(3), field(1)


def _chunked(
    ds: h5py.Dataset,
    name: str,
    h5file: h5py.File,
    attrs: dict[str, Any],
    plist: Any,
    max_chunk_bytes: int,
    lazy: Any = None,
    counter: _Progress | None = None,
) -> ArrayRef:
    shape = tuple(ds.shape)
    chunks = tuple(ds.chunks)
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    ref = ArrayRef.empty(shape, chunks, ds.dtype, attrs=attrs)
    ref.stored_chunks = chunks
    try:
        ref.filters = hdf5_filters_to_codecs(filters, ds.dtype.itemsize, "/" + name) or None
    except UnsupportedFilterError as err:
        ref.problem = str(err)
        return ref
    if lazy is not None and int(np.prod(ref.grid, dtype=np.int64)) >= lazy.min_chunks:
        if _make_lazy(ref, ds, name, filters, max_chunk_bytes, lazy):
            return ref

    coords, offsets, sizes, masks = _chunk_locations(ds, name, counter)
    if coords.size:
        idx = tuple((coords // np.asarray(chunks)).T)
        ref.offsets[idx] = offsets
        ref.lengths[idx] = sizes
    try:
        for row in np.flatnonzero(masks):
            _inline_masked_chunk(ref, ds, name, filters, coords[row], int(masks[row]))
    except Exception as err:  # a chunk whose skipped filters cannot be re-applied here
        ref.problem = (
            f"dataset '/{name}' has chunks stored with some filters skipped (filter_mask) that "
            f"xnwb cannot re-encode ({type(err).__name__}: {err}); re-pack the file with "
            "h5repack"
        )
        ref.inline.clear()
        return ref

    if ref.filters is None and not ref.inline and ref.chunk_nbytes > max_chunk_bytes:
        _split_unfiltered(ref, max_chunk_bytes)
    return ref


def _inline_masked_chunk(
    ref: ArrayRef,
    ds: h5py.Dataset,
    name: str,
    filters: list[Any],
    chunk_offset: np.ndarray,
    mask: int,
) -> None:
    """A chunk stored with some filters skipped (``filter_mask``): re-encode it inline.

    Zarr has one pipeline per array, so the chunk is decoded with the filters it
    really went through and stored again with the full pipeline.
    """
    offset = tuple(int(o) for o in chunk_offset)
    _mask, raw = ds.id.read_direct_chunk(offset)
    applied = [f for i, f in enumerate(filters) if not (mask >> i) & 1]
    configs = hdf5_filters_to_codecs(applied, ds.dtype.itemsize, "/" + name)
    from xnwb.codecs import decode_chunk

    array = decode_chunk(
        raw, configs, ds.dtype, tuple(ds.chunks), where=f"chunk {offset} of {name!r}"
    )
    index = tuple(o // c for o, c in zip(offset, ds.chunks, strict=True))
    ref.inline[index] = encode_chunk(array, ref.filters)
    ref.offsets[index] = -1
    ref.lengths[index] = 0


def _make_lazy(
    ref: ArrayRef, ds: h5py.Dataset, name: str, filters: list[Any], max_chunk_bytes: int, lazy: Any
) -> bool:
    """Attach a lazy chunk index to ``ref`` (False: the B-tree is not one it reads)."""
    tree = lazy.tree_for(object_address(ds), name)
    if tree is None:
        return False
    if tree.chunk_shape != tuple(ref.chunks) or tree.element_size != ds.dtype.itemsize:
        lazy.notes[name] = f"chunk index listed in full: layout {tree} disagrees with h5py"
        return False
    split = 1
    if ref.filters is None and ref.chunk_nbytes > max_chunk_bytes:
        rows = _split_rows(ref, max_chunk_bytes)
        if rows is not None:
            split = ref.chunks[0] // rows
            grid = (-(-ref.shape[0] // rows), *ref.grid[1:])
            ref.chunks = (rows, *ref.chunks[1:])
            ref.offsets = np.full(grid, -1, dtype=np.int64)
            ref.lengths = np.zeros(grid, dtype=np.int64)
    ref.lazy = lazy.make(tree, name, filters, split)
    return True


def _split_rows(ref: ArrayRef, max_chunk_bytes: int) -> int | None:
    """Rows per virtual sub-chunk of a big unfiltered chunk (``None``: no useful split)."""
    rows_in_chunk = ref.chunks[0]
    row_bytes = ref.chunk_nbytes // rows_in_chunk
    target = _rows_per_subchunk(row_bytes, max_chunk_bytes)
    # Sub-chunks must tile each stored chunk exactly: take the largest divisor <= target.
    rows = max(d for d in range(1, min(target, rows_in_chunk) + 1) if rows_in_chunk % d == 0)
    if rows == rows_in_chunk or rows * row_bytes < min(max_chunk_bytes, 64 * 2**10):
        return None
    return rows


def _split_unfiltered(ref: ArrayRef, max_chunk_bytes: int) -> None:
    """Cut big unfiltered chunks into row blocks: each is a contiguous byte range."""
    rows = _split_rows(ref, max_chunk_bytes)
    if rows is None:
        return  # no useful split
    rows_in_chunk = ref.chunks[0]
    row_bytes = ref.chunk_nbytes // rows_in_chunk
    per_chunk = rows_in_chunk // rows
    n_rows_total = -(-ref.shape[0] // rows)
    old_offsets, old_lengths = ref.offsets, ref.lengths
    if np.any(old_lengths[old_offsets >= 0] != ref.chunk_nbytes):
        return  # an unexpected stored size: keep whole chunks
    new_grid = (old_offsets.shape[0] * per_chunk, *old_offsets.shape[1:])
    step = np.arange(per_chunk, dtype=np.int64).reshape(
        (1, per_chunk) + (1,) * (old_offsets.ndim - 1)
    )
    expanded = old_offsets[:, None, ...] + step * rows * row_bytes
    expanded = np.where(old_offsets[:, None, ...] >= 0, expanded, -1)
    offsets = expanded.reshape(new_grid)[:n_rows_total]
    lengths = np.where(offsets >= 0, rows * row_bytes, 0).astype(np.int64)
    ref.offsets = np.ascontiguousarray(offsets)
    ref.lengths = lengths
    ref.chunks = (rows, *ref.chunks[1:])


def open_h5(path_or_file: Any, label: str) -> h5py.File:
    """Open HDF5 read-only, turning h5py's errors into specific xnwb errors."""
    if isinstance(path_or_file, str | os.PathLike) and not os.path.exists(path_or_file):
        raise FileNotFoundError(f"no such file: {os.fspath(path_or_file)!r}")
    try:
        return h5py.File(path_or_file, "r")
    except OSError as err:
        text = str(err)
        if "truncated" in text or "eof" in text.lower():
            raise ChunkReadError(f"{label} is a truncated HDF5 file: {text}") from err
        if "signature" in text or "not an HDF5" in text or "Unable to synchronously open" in text:
            raise NotNWBError(f"{label} is not an HDF5 file (h5py: {text})") from err
        raise
