"""The reference index: zarr v2 metadata plus a byte range per chunk.

A :class:`ReferenceIndex` says, for every dataset of one HDF5 file, what zarr
array it is (shape, chunks, dtype, codec pipeline, attributes) and where each
chunk's bytes live (``offset``, ``length``) — or holds the bytes themselves for
small data. Offsets are kept as numpy arrays shaped like the chunk grid, so an
index of 100k chunks costs a few MB and no per-chunk Python objects.

It reads and writes the kerchunk JSON format (``{"version": 1, "refs": {...}}``),
so plain ``fsspec`` ``reference://`` + zarr can open what xnwb writes, and xnwb
can open what kerchunk writes.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xnwb.codecs import ChunkCodec
from xnwb.exceptions import UnsafeReferenceError, UnsupportedFilterError

__all__ = ["ArrayRef", "ReferenceIndex"]

_CHUNK_KEY = re.compile(r"^\d+(\.\d+)*$")


@dataclass(eq=False)
class ArrayRef:
    """One dataset: zarr metadata and where its chunks are.

    ``offsets``/``lengths`` are int64 arrays shaped like the chunk grid; ``-1``
    marks a chunk that is not stored (HDF5 reads those as ``fill_value``).
    ``inline`` maps a chunk's grid index to its encoded bytes. ``problem`` holds
    the reason the data cannot be read (an unsupported filter, say); metadata stay
    usable and reading raises with that reason.
    """

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    filters: list[dict[str, Any]] | None
    attrs: dict[str, Any]
    offsets: np.ndarray
    lengths: np.ndarray
    inline: dict[tuple[int, ...], bytes] = field(default_factory=dict)
    fill_value: Any = None
    problem: str | None = None
    layout: str = "chunked"
    stored_chunks: tuple[int, ...] | None = None
    #: A :class:`xnwb.lazyindex.LazyChunks` while the chunk offsets are read on demand.
    lazy: Any = None

    @classmethod
    def empty(
        cls,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
        dtype: np.dtype,
        *,
        filters: list[dict[str, Any]] | None = None,
        attrs: dict[str, Any] | None = None,
        layout: str = "chunked",
    ) -> ArrayRef:
        """An array with no chunk stored yet (every offset ``-1``)."""
        grid = tuple(-(-s // c) if c else 0 for s, c in zip(shape, chunks, strict=True))
        return cls(
            shape=tuple(shape),
            chunks=tuple(chunks),
            dtype=np.dtype(dtype),
            filters=filters,
            attrs=attrs if attrs is not None else {},
            offsets=np.full(grid, -1, dtype=np.int64),
            lengths=np.zeros(grid, dtype=np.int64),
            layout=layout,
        )

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of chunks along each axis."""
        return tuple(-(-s // c) if c else 0 for s, c in zip(self.shape, self.chunks, strict=True))

    @property
    def nbytes(self) -> int:
        """Uncompressed size of the array in bytes."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    # -- hook for a chunk index read on demand (xnwb.lazyindex) -----------------
    def ensure_chunks(self, box: Any = None) -> None:
        """Make the offsets of the chunks in ``box`` known (``None``: every chunk).

        ``box`` is one ``(first, stop)`` pair of chunk numbers per axis. A no-op
        unless the index is lazy (:class:`xnwb.lazyindex.LazyChunks`).
        """
        lazy = self.lazy
        if lazy is not None and not lazy.complete:
            lazy.resolve(self, box)

    def chunks_read(self) -> None:
        """Tell a lazy index that a read finished (it may complete itself in the background)."""
        lazy = self.lazy
        if lazy is not None and not lazy.complete:
            lazy.after_read()

    @property
    def stored_bytes(self) -> int:
        """Bytes the chunks occupy in the file (plus inlined bytes)."""
        self.ensure_chunks(None)
        stored = int(self.lengths[self.offsets >= 0].sum()) if self.offsets.size else 0
        return stored + sum(len(b) for b in self.inline.values())

    @property
    def chunk_nbytes(self) -> int:
        """Decoded size of one full chunk in bytes."""
        return int(np.prod(self.chunks, dtype=np.int64)) * self.dtype.itemsize

    def check_readable(self, path: str) -> None:
        """Raise the reason this array cannot be read, if there is one."""
        if self.problem is not None:
            raise UnsupportedFilterError(self.problem)

    @property
    def codec(self) -> ChunkCodec:
        """The chunk decoder (built on first use; rebuilt if chunks or filters change)."""
        key = (self.chunks, repr(self.filters), self.dtype.str)
        cached = self.__dict__.get("_codec")
        if cached is None or cached[0] != key:
            cached = (key, ChunkCodec(self.filters, self.dtype, self.chunks))
            self.__dict__["_codec"] = cached
        return cached[1]

    def decode(self, raw: bytes, index: tuple[int, ...], path: str) -> np.ndarray:
        """Decode the stored bytes of chunk ``index``."""
        return self.codec.decode(raw, where=f"chunk {index} of {path!r}")

    def zarray(self) -> dict[str, Any]:
        """The zarr v2 ``.zarray`` document.

        ``fill_value`` is written as ``null`` on purpose: a ``0`` there makes
        xarray's zarr reader mask every real zero sample to NaN.
        """
        dtype = "|O" if self.dtype == object else self.dtype.str
        filters = list(self.filters) if self.filters else None
        if self.dtype == object:
            filters = [{"id": "vlen-utf8"}]
        return {
            "zarr_format": 2,
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "dtype": dtype,
            "compressor": None,
            "filters": filters,
            "fill_value": None,
            "order": "C",
            "dimension_separator": ".",
        }

    def stored_indices(self) -> Iterator[tuple[int, ...]]:
        """Grid indices of the chunks stored in the file (not inline)."""
        self.ensure_chunks(None)
        for flat in np.flatnonzero(self.offsets.reshape(-1) >= 0):
            yield tuple(int(i) for i in np.unravel_index(flat, self.offsets.shape))


def _chunk_key(path: str, index: tuple[int, ...]) -> str:
    return f"{path}/{'.'.join(map(str, index)) if index else '0'}"


def _encode_inline(data: bytes) -> str:
    return "base64:" + base64.b64encode(data).decode("ascii")


def _decode_inline(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if value.startswith("base64:"):
        return base64.b64decode(value[7:])
    return value.encode("utf-8")


def _json_dumps(obj: Any) -> str:
    return json.dumps(obj, allow_nan=True, separators=(",", ":"))


@dataclass(eq=False)
class ReferenceIndex:
    """References to every dataset of one HDF5 file.

    Parameters
    ----------
    source
        The URL or path of the HDF5 file that every chunk reference points into.
    groups
        Group path (``""`` for the root) to its attributes.
    arrays
        Dataset path to its :class:`ArrayRef`.
    info
        Facts about the build: the file's size, ETag or mtime, the xnwb version,
        number of requests made while indexing.
    """

    source: str
    groups: dict[str, dict[str, Any]]
    arrays: dict[str, ArrayRef]
    info: dict[str, Any] = field(default_factory=dict)

    # -- navigation -------------------------------------------------------
    def attrs(self, path: str) -> dict[str, Any]:
        """Attributes of the group or dataset at ``path`` (empty if absent)."""
        path = path.strip("/")
        if path in self.arrays:
            return self.arrays[path].attrs
        return self.groups.get(path, {})

    def children(self, path: str) -> list[str]:
        """Names of the direct children (groups and arrays) of group ``path``."""
        prefix = path.strip("/")
        prefix = f"{prefix}/" if prefix else ""
        names = set()
        for key in (*self.groups, *self.arrays):
            if key and key.startswith(prefix) and key != prefix.rstrip("/"):
                names.add(key[len(prefix) :].split("/", 1)[0])
        return sorted(names)

    # -- kerchunk JSON ----------------------------------------------------
    def to_refs(self, *, chunks: bool = True) -> dict[str, Any]:
        """The index as a kerchunk version-1 reference dict.

        ``chunks=False`` leaves out the chunk entries (metadata only).

        Examples
        --------
        >>> idx = ReferenceIndex("rec.nwb", {"": {"a": 1}}, {})
        >>> sorted(idx.to_refs()["refs"])
        ['.zattrs', '.zgroup']
        """
        refs: dict[str, Any] = {}
        for path, attrs in self.groups.items():
            prefix = f"{path}/" if path else ""
            refs[f"{prefix}.zgroup"] = _json_dumps({"zarr_format": 2})
            refs[f"{prefix}.zattrs"] = _json_dumps(attrs)
        for path, arr in self.arrays.items():
            refs[f"{path}/.zarray"] = _json_dumps(arr.zarray())
            attrs = dict(arr.attrs)
            attrs.setdefault(
                "_ARRAY_DIMENSIONS",
                [f"{path.replace('/', '_')}_dim_{i}" for i in range(len(arr.shape))],
            )
            refs[f"{path}/.zattrs"] = _json_dumps(attrs)
            if arr.problem is not None or not chunks:
                continue
            for index in arr.stored_indices():
                refs[_chunk_key(path, index)] = [
                    self.source,
                    int(arr.offsets[index]),
                    int(arr.lengths[index]),
                ]
            for index, data in arr.inline.items():
                refs[_chunk_key(path, index)] = _encode_inline(data)
        return {"version": 1, "refs": refs, "xnwb": self._info_block()}

    def _info_block(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"info": self.info}
        special = {}
        for path, arr in self.arrays.items():
            note = {}
            if arr.problem is not None:
                note["problem"] = arr.problem
            if arr.fill_value is not None and arr.dtype != object:
                note["fill_value"] = np.asarray(arr.fill_value).item()
            if arr.layout != "chunked":
                note["layout"] = arr.layout
            if arr.stored_chunks is not None and tuple(arr.stored_chunks) != tuple(arr.chunks):
                note["stored_chunks"] = list(arr.stored_chunks)
            if note:
                special[path] = note
        extra["arrays"] = special
        return extra

    def to_json(self, path: str | None = None, **storage_options: Any) -> str:
        """Serialise to kerchunk JSON; write it to ``path`` (local or fsspec URL) if given."""
        text = json.dumps(self.to_refs(), allow_nan=True)
        if path is not None:
            import fsspec

            with fsspec.open(path, "w", **storage_options) as fh:
                fh.write(text)
        return text

    @classmethod
    def from_refs(cls, refs: dict[str, Any], *, source: str | None = None) -> ReferenceIndex:
        """Read a kerchunk reference dict (xnwb's or kerchunk's own).

        The URLs the chunk references name are kept in ``info["reference_urls"]``
        for the caller to check against what the user opened, and to refuse
        references into several files (see :func:`xnwb.api.open_source`).
        ``source`` overrides the file.

        Raises
        ------
        UnsafeReferenceError
            For templates, malformed entries,
            whole-file references or chunk keys outside the array's grid.
        """
        if not isinstance(refs, dict):
            raise UnsafeReferenceError("a reference file must hold a JSON object")
        if refs.get("templates"):
            raise UnsafeReferenceError("reference files with templates are not accepted")
        if refs.get("gen"):
            raise UnsafeReferenceError("reference files with generators ('gen') are not accepted")
        version = refs.get("version", 0)
        table: dict[str, Any] = refs.get("refs", refs) if version == 1 else refs
        extra = refs.get("xnwb", {}) if version == 1 else {}

        groups: dict[str, dict[str, Any]] = {}
        metas: dict[str, dict[str, Any]] = {}
        attrs: dict[str, dict[str, Any]] = {}
        chunk_refs: dict[str, list[tuple[tuple[int, ...], Any]]] = {}
        urls: set[str] = set()
        for key, value in table.items():
            parent, _, leaf = key.rpartition("/")
            if leaf == ".zgroup":
                groups.setdefault(parent, {})
            elif leaf == ".zattrs":
                attrs[parent] = json.loads(_decode_inline(value))
            elif leaf == ".zarray":
                metas[parent] = json.loads(_decode_inline(value))
            elif leaf in (".zmetadata", "zarr.json"):
                continue
            elif _CHUNK_KEY.match(leaf):
                if isinstance(value, list):
                    if len(value) not in (1, 3) or not isinstance(value[0], str):
                        raise UnsafeReferenceError(f"malformed reference for {key!r}: {value!r}")
                    urls.add(value[0])
                elif not isinstance(value, str | bytes):
                    raise UnsafeReferenceError(f"malformed reference for {key!r}: {value!r}")
                index = tuple(int(i) for i in leaf.split("."))
                chunk_refs.setdefault(parent, []).append((index, value))
            else:
                raise UnsafeReferenceError(f"unexpected key {key!r} in reference file")

        if source is None:
            source = next(iter(urls), "") if len(urls) == 1 else ""

        special = extra.get("arrays", {})
        arrays: dict[str, ArrayRef] = {}
        for path, meta in metas.items():
            arr_attrs = dict(attrs.get(path, {}))
            arr_attrs.pop("_ARRAY_DIMENSIONS", None)
            arrays[path] = _array_from_meta(path, meta, arr_attrs, chunk_refs.get(path, []))
            note = special.get(path, {})
            arrays[path].problem = note.get("problem")
            arrays[path].fill_value = note.get("fill_value")
            arrays[path].layout = note.get("layout", "chunked")
            if "stored_chunks" in note:
                arrays[path].stored_chunks = tuple(note["stored_chunks"])
        for path in groups:
            groups[path] = attrs.get(path, {})
        groups.setdefault("", attrs.get("", {}))
        info = dict(extra.get("info", {}))
        info["reference_urls"] = sorted(urls)
        return cls(source, groups, arrays, info)

    @classmethod
    def from_json(cls, text_or_path: str, **kwargs: Any) -> ReferenceIndex:
        """Read a kerchunk JSON file (path) or JSON text."""
        text = text_or_path
        if not text_or_path.lstrip().startswith("{"):
            import fsspec

            with fsspec.open(text_or_path, "r") as fh:
                text = fh.read()
        return cls.from_refs(json.loads(text), **kwargs)


def _array_from_meta(
    path: str,
    meta: dict[str, Any],
    attrs: dict[str, Any],
    chunk_refs: list[tuple[tuple[int, ...], Any]],
) -> ArrayRef:
    if meta.get("zarr_format") != 2:
        raise UnsafeReferenceError(f"{path!r}: only zarr v2 metadata is understood in references")
    shape = tuple(meta["shape"])
    chunks = tuple(meta["chunks"]) if shape else ()
    filters = list(meta.get("filters") or [])
    if meta.get("compressor"):
        filters.append(meta["compressor"])
    dtype_str = meta["dtype"]
    if dtype_str in ("|O", "O"):
        dtype = np.dtype(object)
    elif isinstance(dtype_str, list):
        dtype = np.dtype([tuple(f) for f in dtype_str])
    else:
        dtype = np.dtype(dtype_str)
    if meta.get("order", "C") != "C":
        raise UnsafeReferenceError(f"{path!r}: Fortran-ordered chunks are not supported")
    if dtype.kind == "O":
        # vlen strings are only ever inlined; keep their codec for decoding.
        filters = filters or [{"id": "vlen-utf8"}]
    ref = ArrayRef.empty(shape, chunks, dtype, filters=filters or None, attrs=attrs)
    grid, offsets, lengths, inline = ref.grid, ref.offsets, ref.lengths, ref.inline
    for index, value in chunk_refs:
        if not shape:
            index = ()
        if len(index) != len(grid) or any(i >= g for i, g in zip(index, grid, strict=True)):
            raise UnsafeReferenceError(f"chunk key {index} is outside the grid {grid} of {path!r}")
        if isinstance(value, list):
            if len(value) == 1:
                raise UnsafeReferenceError(
                    f"{path!r}: whole-file references are not accepted for chunks"
                )
            offset, length = int(value[1]), int(value[2])
            if offset < 0 or length < 0:
                raise UnsafeReferenceError(f"{path!r}: negative offset or length in {value!r}")
            offsets[index] = offset
            lengths[index] = length
        else:
            inline[index] = _decode_inline(value)
    return ref
    return ArrayRef(
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        filters=filters or None,
        attrs=attrs,
        offsets=offsets,
        lengths=lengths,
        inline=inline,
    )
