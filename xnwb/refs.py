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
import binascii
import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xnwb.codecs import ChunkCodec
from xnwb.exceptions import (
    MalformedReferenceError,
    ReferenceWarning,
    UnsafeReferenceError,
    UnsupportedFilterError,
)

__all__ = ["ArrayRef", "ReferenceIndex"]

_CHUNK_KEY = re.compile(r"^[0-9]+(\.[0-9]+)*$")


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
        """The zarr v2 ``.zarray`` document, decoding to the right numbers in any zarr reader.

        ``fill_value`` is the HDF5 fill value, so chunks HDF5 never wrote read right
        in plain zarr too; a zero fill is written as ``null`` (zarr's default, zero)
        because a ``0`` there makes xarray's zarr reader mask every real zero sample
        to NaN.
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
            "fill_value": _zarr_fill_value(self.fill_value, self.dtype),
            "order": "C",
            "dimension_separator": ".",
        }

    def stored_indices(self) -> Iterator[tuple[int, ...]]:
        """Grid indices of the chunks stored in the file (not inline)."""
        self.ensure_chunks(None)
        for flat in np.flatnonzero(self.offsets.reshape(-1) >= 0):
            yield tuple(int(i) for i in np.unravel_index(flat, self.offsets.shape))


def _zarr_fill_value(fill: Any, dtype: np.dtype) -> Any:
    """A fill value as zarr v2 JSON: ``null`` for zero, NaN and infinities as strings."""
    if fill is None or dtype.kind not in "biuf":
        return None
    value = np.asarray(fill).astype(dtype).item()
    if isinstance(value, float):
        if np.isnan(value):
            return "NaN"
        if np.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
    return None if value == 0 else value


def _zattrs(path: str, arr: ArrayRef) -> dict[str, Any]:
    attrs = dict(arr.attrs)
    attrs.setdefault(
        "_ARRAY_DIMENSIONS", [f"{path.replace('/', '_')}_dim_{i}" for i in range(len(arr.shape))]
    )
    return attrs


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
    def to_refs(self, *, chunks: bool = True, source: str | None = None) -> dict[str, Any]:
        """The index as a kerchunk version-1 reference dict.

        ``chunks=False`` leaves out the chunk entries (metadata only); ``source`` names the
        file in the chunk references instead of :attr:`source` (the same file, seen from
        elsewhere).

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
            if arr.problem is not None:
                # Left out of the zarr view (its metadata live in the xnwb block): a plain
                # zarr reader must fail on it, not return the fill value.
                continue
            refs[f"{path}/.zarray"] = _json_dumps(arr.zarray())
            refs[f"{path}/.zattrs"] = _json_dumps(_zattrs(path, arr))
            if not chunks:
                continue
            for index in arr.stored_indices():
                refs[_chunk_key(path, index)] = [
                    self.source if source is None else source,
                    int(arr.offsets[index]),
                    int(arr.lengths[index]),
                ]
            for index, data in arr.inline.items():
                refs[_chunk_key(path, index)] = _encode_inline(data)
        return {"version": 1, "refs": refs, "xnwb": self._info_block(chunks=chunks)}

    def _info_block(self, *, chunks: bool = True) -> dict[str, Any]:
        extra: dict[str, Any] = {"info": self.info}
        special = {}
        for path, arr in self.arrays.items():
            note: dict[str, Any] = {}
            if chunks and arr.problem is None:
                # Which chunks HDF5 never wrote: a missing key is then told from a deleted one.
                note["unallocated"] = _unallocated_ranges(arr)
            if arr.problem is not None:
                note["problem"] = arr.problem
                note["zarray"] = arr.zarray()
                note["zattrs"] = _zattrs(path, arr)
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
        """Serialise to kerchunk JSON; write it to ``path`` (local or fsspec URL) if given.

        A relative local source is written relative to ``path``'s folder, where readers
        look for it (``sub/rec.nwb`` indexed into ``sub/rec.json`` is named ``rec.nwb``).
        """
        text = json.dumps(self.to_refs(source=_seen_from(self.source, path)), allow_nan=True)
        if path is not None:
            import fsspec

            with fsspec.open(path, "w", **storage_options) as fh:
                fh.write(text)
        return text


    @classmethod
    def from_refs(cls, refs: dict[str, Any], *, source: str | None = None) -> ReferenceIndex:
        """Read a kerchunk reference dict (xnwb's or kerchunk's own), checking every field.

        The URLs the chunk references name are kept in ``info["reference_urls"]``
        for the caller to check against what the user opened, and to refuse
        references into several files (see :func:`xnwb.api.open_source`).
        ``source`` overrides the file. Chunk keys left out read as the fill value
        here; :meth:`from_reference_file` also checks that none is missing.

        Raises
        ------
        UnsafeReferenceError
            For templates, generators, whole-file references, codecs that no HDF5
            filter maps to (pickle, say).
        MalformedReferenceError
            For anything else that is not a well-formed reference file: the
            message names the key and the field.
        """
        return _parse_references(cls, refs, source)[0]

    @classmethod
    def from_reference_file(
        cls, refs: dict[str, Any], *, source: str | None = None, label: str = "reference file"
    ) -> ReferenceIndex:
        """:meth:`from_refs`, plus the check that no stored chunk's key was left out.

        xnwb's own exports record which chunks HDF5 never allocated
        (``xnwb.arrays[path].unallocated``); any other missing key is an error.
        Reference files without that record (kerchunk's) cannot tell a chunk HDF5
        never wrote from a deleted key: those read as the fill value, with a
        :class:`~xnwb.exceptions.ReferenceWarning` naming the arrays.
        """
        index, notes = _parse_references(cls, refs, source)
        _check_chunk_keys(index, notes, label)
        return index

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike[str], **kwargs: Any) -> ReferenceIndex:
        """Read a kerchunk JSON file (path or URL, read within bounds) or JSON text."""
        from xnwb.refload import load_reference_file, parse_json

        if isinstance(text_or_path, os.PathLike):
            text_or_path = os.fspath(text_or_path)
        if text_or_path.lstrip().startswith("{"):
            doc = parse_json(text_or_path, "reference JSON text")
            label = "reference JSON text"
        else:
            doc = load_reference_file(text_or_path)
            label = f"reference file {text_or_path!r}"
        return cls.from_reference_file(doc, label=label, **kwargs)


# -- reading reference files: every field checked ------------------------------------

#: Most chunks one array of a reference file may declare (grid cells), and all
#: arrays together. Offsets and lengths cost 16 bytes a cell; a reference file
#: within :data:`xnwb.refload.MAX_REFERENCE_BYTES` lists at most ~2.5M chunks.
MAX_GRID_CHUNKS = 2**22
MAX_TOTAL_GRID_CHUNKS = 2**23
#: Offsets and lengths must be below this (2**53: exact as a JSON number anywhere;
#: their sum can never wrap an int64).
MAX_OFFSET = 2**53
_MAX_ITEMSIZE = 2**20
_MAX_ELEMENTS = 2**62
_TOP_LEVEL_KEYS = frozenset({"version", "refs", "templates", "gen", "xnwb"})
_LAYOUTS = frozenset({"chunked", "contiguous", "inline"})


def _fail(message: str) -> MalformedReferenceError:
    return MalformedReferenceError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _metadata_document(key: str, value: Any) -> dict[str, Any]:
    """A ``.zarray``/``.zattrs``/``.zgroup`` value as a JSON object."""
    from xnwb.refload import parse_json

    if not isinstance(value, str | bytes):
        raise _fail(f"{key!r} must be JSON text (a string), not {type(value).__name__}")
    raw = _inline_bytes(key, value)
    doc = parse_json(raw, f"{key!r}")
    if not isinstance(doc, dict):
        raise _fail(f"{key!r} must hold a JSON object, not {type(doc).__name__}")
    return doc


def _inline_bytes(key: str, value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if value.startswith("base64:"):
        try:
            return base64.b64decode(value[7:], validate=True)
        except (binascii.Error, ValueError) as err:
            raise _fail(f"{key!r}: the inline value is not valid base64 ({err})") from err
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _fail(f"{key!r}: the inline value is not encodable text ({err.reason})") from err


def _chunk_value(key: str, value: Any) -> tuple[str, int, int] | bytes:
    """A chunk entry: ``[url, offset, length]`` or inline bytes."""
    if isinstance(value, str | bytes):
        return _inline_bytes(key, value)
    if not isinstance(value, list):
        raise _fail(
            f"chunk {key!r} must be [url, offset, length] or inline text, "
            f"not {type(value).__name__}"
        )
    if len(value) == 1:
        raise UnsafeReferenceError(f"{key!r}: whole-file references are not accepted for chunks")
    if len(value) != 3:
        raise _fail(f"chunk {key!r} must be [url, offset, length], got {len(value)} items")
    url, offset, length = value
    if not isinstance(url, str) or not url:
        raise _fail(f"chunk {key!r}: the url must be a non-empty string, got {url!r}")
    if len(url) > 4096:
        raise _fail(f"chunk {key!r}: the url is {len(url)} characters long")
    for name, number in (("offset", offset), ("length", length)):
        if not _is_int(number):
            raise _fail(f"chunk {key!r}: the {name} must be an integer, got {number!r}")
        if number < 0:
            raise UnsafeReferenceError(f"chunk {key!r}: negative offset or length in {value!r}")
        if number >= MAX_OFFSET:
            raise UnsafeReferenceError(
                f"chunk {key!r}: the {name} {number} is beyond any file (at most 2**53)"
            )
    return url, offset, length


def _parse_references(
    cls: type[ReferenceIndex], refs: Any, source: str | None
) -> tuple[ReferenceIndex, dict[str, dict[str, Any]] | None]:
    """The index, and xnwb's per-array notes (``None`` for a foreign reference file)."""
    if not isinstance(refs, dict):
        raise _fail(f"a reference file must hold a JSON object, not {type(refs).__name__}")
    if refs.get("templates"):
        raise UnsafeReferenceError("reference files with templates are not accepted")
    if refs.get("gen"):
        raise UnsafeReferenceError("reference files with generators ('gen') are not accepted")
    version = refs.get("version", 0)
    if not _is_int(version) or version not in (0, 1):
        raise _fail(f"'version' must be 0 or 1 (kerchunk's formats), got {version!r}")
    if version == 1:
        unknown = sorted(set(refs) - _TOP_LEVEL_KEYS, key=str)
        if unknown:
            raise _fail(f"unexpected top-level key(s) {unknown[:3]} in a version-1 reference file")
        table = refs.get("refs")
        extra = refs.get("xnwb")
        if not isinstance(table, dict):
            raise _fail(f"'refs' must be a JSON object, not {type(table).__name__}")
    else:
        table, extra = refs, None
    notes, info = _xnwb_block(extra)

    groups: dict[str, dict[str, Any]] = {}
    metas: dict[str, dict[str, Any]] = {}
    attrs: dict[str, dict[str, Any]] = {}
    chunk_refs: dict[str, list[tuple[tuple[int, ...], Any]]] = {}
    urls: set[str] = set()
    for key, value in table.items():
        if not isinstance(key, str) or not key or key.startswith("/") or "\x00" in key:
            raise _fail(f"key {key!r} in a reference file is not a zarr key")
        parent, _, leaf = key.rpartition("/")
        if leaf == ".zgroup":
            _metadata_document(key, value)
            groups.setdefault(parent, {})
        elif leaf == ".zattrs":
            attrs[parent] = _metadata_document(key, value)
        elif leaf == ".zarray":
            metas[parent] = _metadata_document(key, value)
        elif leaf in (".zmetadata", "zarr.json"):
            continue
        elif _CHUNK_KEY.match(leaf) and len(leaf) <= 200:
            entry = _chunk_value(key, value)
            if isinstance(entry, tuple):
                urls.add(entry[0])
            index = tuple(int(i) for i in leaf.split("."))
            chunk_refs.setdefault(parent, []).append((index, entry))
        else:
            raise _fail(f"unexpected key {key!r} in reference file")
    for path, note in (notes or {}).items():
        if "problem" in note and path not in metas:  # an array xnwb cannot decode
            if not isinstance(note.get("zarray"), dict) or not isinstance(
                note.get("zattrs", {}), dict
            ):
                raise _fail(f"'xnwb.arrays[{path!r}]' must hold its zarray and zattrs objects")
            metas[path] = note["zarray"]
            attrs[path] = note.get("zattrs", {})
    orphans = sorted(set(chunk_refs) - set(metas))
    if orphans:
        raise _fail(f"chunk keys under {orphans[0]!r}, which has no .zarray")

    if source is None:
        source = next(iter(urls), "") if len(urls) == 1 else ""

    arrays: dict[str, ArrayRef] = {}
    total = 0
    for path, meta in metas.items():
        arr_attrs = dict(attrs.get(path, {}))
        arr_attrs.pop("_ARRAY_DIMENSIONS", None)
        note = (notes or {}).get(path, {})
        arr = _array_from_meta(path, meta, arr_attrs, chunk_refs.get(path, []), note)
        total += arr.offsets.size
        if total > MAX_TOTAL_GRID_CHUNKS:
            raise _fail(
                f"the arrays of this reference file declare more than {MAX_TOTAL_GRID_CHUNKS} "
                "chunks in all: refused"
            )
        arrays[path] = arr
    for path in groups:
        groups[path] = attrs.get(path, {})
    groups.setdefault("", attrs.get("", {}))
    info["reference_urls"] = sorted(urls)
    return cls(source, groups, arrays, info), notes


def _xnwb_block(
    extra: Any,
) -> tuple[dict[str, dict[str, Any]] | None, dict[str, Any]]:
    """xnwb's own block: per-array notes and build facts (both checked)."""
    if extra is None:
        return None, {}
    if not isinstance(extra, dict):
        raise _fail(f"'xnwb' must be a JSON object, not {type(extra).__name__}")
    info = extra.get("info", {})
    notes = extra.get("arrays", {})
    if not isinstance(info, dict):
        raise _fail("'xnwb.info' must be a JSON object")
    if not isinstance(notes, dict) or not all(isinstance(n, dict) for n in notes.values()):
        raise _fail("'xnwb.arrays' must map array paths to JSON objects")
    for path, note in notes.items():
        where = f"'xnwb.arrays[{path!r}]'"
        if "problem" in note and not isinstance(note["problem"], str):
            raise _fail(f"{where}.problem must be a string")
        if "layout" in note and (
            not isinstance(note["layout"], str) or note["layout"] not in _LAYOUTS
        ):
            raise _fail(f"{where}.layout must be one of {sorted(_LAYOUTS)}, got {note['layout']!r}")
        fill = note.get("fill_value")
        if fill is not None and (not isinstance(fill, int | float) or isinstance(fill, bool)):
            raise _fail(f"{where}.fill_value must be a number, got {fill!r}")
        stored = note.get("stored_chunks")
        if stored is not None and (
            not isinstance(stored, list) or not all(_is_int(c) and c > 0 for c in stored)
        ):
            raise _fail(f"{where}.stored_chunks must be a list of positive integers")
        ranges = note.get("unallocated")
        if ranges is not None and (
            not isinstance(ranges, list)
            or not all(
                isinstance(r, list) and len(r) == 2 and all(_is_int(v) for v in r) for r in ranges
            )
        ):
            raise _fail(f"{where}.unallocated must be a list of [start, stop] integer pairs")
    return notes, dict(info)


def _parse_dtype(path: str, meta: dict[str, Any]) -> np.dtype:
    dtype_str = meta.get("dtype")
    try:
        if dtype_str in ("|O", "O"):
            return np.dtype(object)
        if isinstance(dtype_str, list):
            dtype = np.dtype([tuple(f) for f in dtype_str])
        elif isinstance(dtype_str, str) and len(dtype_str) <= 32:
            dtype = np.dtype(dtype_str)
        else:
            raise TypeError(f"{dtype_str!r}")
    except (TypeError, ValueError, SyntaxError) as err:
        raise _fail(f"{path}/.zarray: dtype {dtype_str!r} is not a numpy dtype ({err})") from err
    if dtype.kind in "OVMm" and dtype.names is None:
        raise _fail(f"{path}/.zarray: dtype {dtype_str!r} is not accepted in reference files")
    if dtype.hasobject or not 0 < dtype.itemsize <= _MAX_ITEMSIZE:
        raise _fail(f"{path}/.zarray: dtype {dtype_str!r} has an unusable item size")
    return dtype


def _int_list(path: str, meta: dict[str, Any], name: str, minimum: int) -> tuple[int, ...]:
    value = meta.get(name)
    if not isinstance(value, list) or not all(_is_int(v) and v >= minimum for v in value):
        raise _fail(
            f"{path}/.zarray: {name} must be a list of integers >= {minimum}, got {value!r}"
        )
    if len(value) > 32:
        raise _fail(f"{path}/.zarray: {len(value)} dimensions")
    return tuple(value)


def _codec_configs(path: str, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The filter and compressor configurations, each id on the allowlist."""
    from xnwb.codecs import reference_codec_ids

    filters = meta.get("filters")
    compressor = meta.get("compressor")
    if filters is not None and not isinstance(filters, list):
        raise _fail(f"{path}/.zarray: filters must be a list or null, got {filters!r}")
    configs = list(filters or [])
    if compressor is not None:
        configs.append(compressor)
    allowed = reference_codec_ids()
    for config in configs:
        if not isinstance(config, dict) or not isinstance(config.get("id"), str):
            raise _fail(f"{path}/.zarray: a codec must be an object with an 'id', got {config!r}")
        if config["id"] not in allowed:
            raise UnsafeReferenceError(
                f"{path}/.zarray names the codec {config['id']!r}; reference files may name "
                f"only codecs HDF5 filters map to ({', '.join(sorted(allowed))})"
            )
    return configs


def _fill_value(path: str, meta: dict[str, Any], dtype: np.dtype) -> Any:
    """The zarr ``fill_value`` as a numpy scalar, or ``None`` for zero / not numeric."""
    value = meta.get("fill_value")
    if value is None or dtype.kind not in "biuf":
        return None
    special = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}
    if isinstance(value, str) and value in special and dtype.kind == "f":
        value = special[value]
    if isinstance(value, bool) != (dtype.kind == "b") or not isinstance(value, int | float):
        raise _fail(f"{path}/.zarray: fill_value {value!r} does not fit dtype {dtype}")
    try:
        with np.errstate(all="ignore"):
            fill = np.asarray(value).astype(dtype)
    except (OverflowError, ValueError) as err:
        raise _fail(f"{path}/.zarray: fill_value {value!r} does not fit dtype {dtype}") from err
    if dtype.kind in "iu" and (not _is_int(value) or int(fill) != value):
        raise _fail(f"{path}/.zarray: fill_value {value!r} does not fit dtype {dtype}")
    if not np.isnan(fill) and fill == 0:
        return None
    return fill[()]


def _array_from_meta(
    path: str,
    meta: dict[str, Any],
    attrs: dict[str, Any],
    chunk_refs: list[tuple[tuple[int, ...], Any]],
    note: dict[str, Any],
) -> ArrayRef:
    if meta.get("zarr_format") != 2:
        raise UnsafeReferenceError(f"{path!r}: only zarr v2 metadata is understood in references")
    if meta.get("order", "C") != "C":
        raise UnsafeReferenceError(f"{path!r}: Fortran-ordered chunks are not supported")
    if meta.get("dimension_separator", ".") != ".":
        raise _fail(f"{path}/.zarray: dimension_separator must be '.'")
    shape = _int_list(path, meta, "shape", 0)
    chunks = _int_list(path, meta, "chunks", 1) if shape else ()
    if shape and len(chunks) != len(shape):
        raise _fail(f"{path}/.zarray: chunks {list(chunks)} do not match shape {list(shape)}")
    problem = note.get("problem")
    dtype = _parse_dtype(path, meta)
    # An array xnwb exported as unreadable keeps its reason; its codecs never run.
    configs = [] if problem is not None else _codec_configs(path, meta)
    if dtype.kind == "O" and [c["id"] for c in configs] != ["vlen-utf8"]:
        raise _fail(f"{path}/.zarray: object arrays must use exactly the vlen-utf8 codec")
    if dtype.kind != "O" and any(c["id"] == "vlen-utf8" for c in configs):
        raise _fail(f"{path}/.zarray: vlen-utf8 is only for object (string) arrays")
    elements = 1
    for size in shape:
        elements *= size
    if elements * dtype.itemsize > _MAX_ELEMENTS:
        raise _fail(f"{path}/.zarray: shape {list(shape)} is larger than any file")
    cells = 1
    for size, chunk in zip(shape, chunks, strict=True):
        cells *= -(-size // chunk)
    if cells > MAX_GRID_CHUNKS:
        raise _fail(
            f"{path}/.zarray declares {cells} chunks (shape {list(shape)}, chunks "
            f"{list(chunks)}); xnwb opens reference files of at most {MAX_GRID_CHUNKS} "
            "chunks per array"
        )
    ref = ArrayRef.empty(shape, chunks, dtype, filters=configs or None, attrs=attrs)
    grid, offsets, lengths, inline = ref.grid, ref.offsets, ref.lengths, ref.inline
    for index, value in chunk_refs:
        if not shape:
            if index != (0,):
                raise UnsafeReferenceError(f"chunk key {index} of the scalar {path!r} is not 0")
            index = ()
        if len(index) != len(grid) or any(i >= g for i, g in zip(index, grid, strict=True)):
            raise UnsafeReferenceError(f"chunk key {index} is outside the grid {grid} of {path!r}")
        if isinstance(value, tuple):
            offsets[index] = value[1]
            lengths[index] = value[2]
        else:
            inline[index] = value
    if problem is not None:
        ref.problem = problem
    else:
        ref.fill_value = _fill_value(path, meta, dtype)
        _check_codecs(ref, path)
    if note.get("fill_value") is not None and dtype.kind in "biuf":
        ref.fill_value = note["fill_value"]
    ref.layout = note.get("layout", "chunked")
    if note.get("stored_chunks") is not None:
        if len(note["stored_chunks"]) != len(shape):
            raise _fail(f"'xnwb.arrays[{path!r}]'.stored_chunks does not match shape {shape}")
        ref.stored_chunks = tuple(note["stored_chunks"])
    return ref


def _check_codecs(ref: ArrayRef, path: str) -> None:
    """Build the decoder now: a codec's bad parameters fail at open, naming the array."""
    try:
        ref.codec  # noqa: B018 - built and cached for the reads to come
    except Exception as err:
        raise _fail(
            f"{path}/.zarray: the codecs {ref.filters!r} cannot be set up: "
            f"{type(err).__name__}: {err}"
        ) from err


def _unallocated_ranges(arr: ArrayRef) -> list[list[int]]:
    """Flat grid positions with no chunk key (HDF5 never allocated them), as [start, stop)."""
    missing = _missing_mask(arr)
    if not missing.any():
        return []
    padded = np.concatenate(([False], missing, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _missing_mask(arr: ArrayRef) -> np.ndarray:
    missing = arr.offsets.reshape(-1) < 0
    if arr.inline:
        if arr.offsets.ndim == 0:
            missing[:] = False
        else:
            keys = np.array(list(arr.inline), dtype=np.int64).T
            missing[np.ravel_multi_index(tuple(keys), arr.offsets.shape)] = False
    return missing


def _check_chunk_keys(
    index: ReferenceIndex, notes: dict[str, dict[str, Any]] | None, label: str
) -> None:
    """Refuse a deleted chunk key where xnwb recorded the unallocated chunks; else warn."""
    unchecked: list[str] = []
    for path, arr in index.arrays.items():
        if arr.problem is not None:
            continue
        missing = _missing_mask(arr)
        ranges = (notes or {}).get(path, {}).get("unallocated")
        if ranges is None:
            if missing.any():
                unchecked.append(f"{path!r} ({int(missing.sum())} of {missing.size})")
            continue
        expected = np.zeros(missing.size, dtype=bool)
        for start, stop in ranges:
            if not 0 <= start < stop <= missing.size:
                raise _fail(
                    f"{label}: 'xnwb.arrays[{path!r}]'.unallocated holds [{start}, {stop}], "
                    f"outside its {missing.size} chunks"
                )
            expected[start:stop] = True
        wrong = np.flatnonzero(missing != expected)
        if wrong.size:
            grid_index = np.unravel_index(int(wrong[0]), arr.offsets.shape)
            key = _chunk_key(path, tuple(int(i) for i in grid_index))
            state = "missing" if missing[wrong[0]] else "present, though recorded as unallocated"
            raise _fail(
                f"{label}: chunk key {key!r} is {state} ({wrong.size} chunk(s) of {path!r} "
                "disagree with the export's record): the reference file was edited or cut; "
                "build it again with xnwb.build_index(...).to_json(...)"
            )
    if unchecked:
        shown = ", ".join(unchecked[:3]) + (", …" if len(unchecked) > 3 else "")
        warnings.warn(
            f"{label} leaves out chunk keys of {shown}; they read as the fill value. "
            "kerchunk leaves out the chunks HDF5 never wrote, and a reference file without "
            "xnwb's record of them cannot tell those from deleted keys",
            ReferenceWarning,
            stacklevel=4,
        )


def _seen_from(source: str, json_path: str | None) -> str | None:
    """``source`` relative to the folder of a local ``json_path``; ``None``: as it is.

    Examples
    --------
    >>> import os
    >>> _seen_from("sub/rec.nwb", os.path.join("sub", "rec.json"))
    'rec.nwb'
    >>> _seen_from("/data/rec.nwb", "out.json"), _seen_from("rec.nwb", "s3://b/rec.json")
    (None, None)
    """
    if json_path is None or "://" in str(json_path) or "://" in source:
        return None
    if os.path.isabs(source):
        return None
    folder = os.path.dirname(os.path.abspath(json_path))
    return os.path.relpath(os.path.abspath(source), folder)
