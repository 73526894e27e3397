"""A read-only zarr 3 store over a :class:`~xnwb.refs.ReferenceIndex`.

``zarr.open_group(ReferenceStore(index, source), mode="r")`` gives the whole HDF5
file as zarr (format 2 metadata): nested groups list properly, scalar strings are
kept, and chunks are served by byte range through :class:`~xnwb.source.ByteSource`.
A chunk whose fetch fails raises :class:`~xnwb.exceptions.ChunkReadError` — it is
never reported as missing, which zarr would silently fill with zeros. Only chunks
that HDF5 never allocated are missing.

xnwb's own xarray backend reads through the same references but batches a whole
selection per call (:mod:`xnwb.read`); this store is for zarr and other zarr-based
tools.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from xnwb.refs import _CHUNK_KEY, ReferenceIndex
from xnwb.source import ByteSource

__all__ = ["ReferenceStore"]


class ReferenceStore(Store):
    """Zarr store serving an HDF5 file's datasets through byte-range references.

    Parameters
    ----------
    index
        The file's references.
    source
        Byte source for the file (defaults to one for ``index.source``).

    Examples
    --------
    >>> import os, tempfile, zarr, xnwb, xnwb.demo
    >>> folder = tempfile.mkdtemp()
    >>> path = xnwb.demo.write_demo_recording(os.path.join(folder, "rec.nwb"), duration=1.0)
    >>> group = zarr.open_group(ReferenceStore(xnwb.build_index(path)), mode="r")
    >>> group["acquisition/ElectricalSeries/data"].shape
    (1000, 8)
    """

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = True

    def __init__(self, index: ReferenceIndex, source: ByteSource | None = None) -> None:
        super().__init__(read_only=True)
        self.index = index
        self.source = source if source is not None else ByteSource(index.source)
        self._meta = _metadata_documents(index)
        self._keys_cache: list[str] | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReferenceStore) and other.index is self.index

    def __repr__(self) -> str:
        return f"ReferenceStore({self.index.source!r})"

    # -- reading ------------------------------------------------------------
    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        value = await self._value(key)
        if value is None:
            return None
        return prototype.buffer.from_bytes(_cut(value, byte_range))

    async def _value(self, key: str) -> bytes | None:
        if key in self._meta:
            return self._meta[key]
        parent, _, leaf = key.rpartition("/")
        arr = self.index.arrays.get(parent)
        if arr is None or not _CHUNK_KEY.match(leaf):
            return None
        arr.check_readable(parent)
        index = tuple(int(i) for i in leaf.split(".")) if arr.shape else ()
        if len(index) != len(arr.shape) or any(
            i >= g for i, g in zip(index, arr.grid, strict=True)
        ):
            return None
        if arr.lazy is not None:  # a lazy chunk index may fetch B-tree nodes: off the loop
            await asyncio.to_thread(arr.ensure_chunks, [(i, i + 1) for i in index])
        if index in arr.inline:
            return arr.inline[index]
        offset = int(arr.offsets[index])
        if offset < 0:
            return None  # never allocated in HDF5: zarr uses the fill value
        (raw,) = await self.source.afetch([offset], [int(arr.lengths[index])])
        return bytes(raw)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        # One coalesced fetch for every referenced chunk asked for together.
        key_ranges = list(key_ranges)
        values: list[bytes | None] = [None] * len(key_ranges)
        pending: list[tuple[int, int, int]] = []
        for n, (key, _) in enumerate(key_ranges):
            located = self._locate(key)
            if located is None:
                values[n] = await self._value(key)
            else:
                pending.append((n, *located))
        if pending:
            fetched = await self.source.afetch([p[1] for p in pending], [p[2] for p in pending])
            for (n, _, _), raw in zip(pending, fetched, strict=True):
                values[n] = bytes(raw)
        return [
            None if v is None else prototype.buffer.from_bytes(_cut(v, br))
            for v, (_, br) in zip(values, key_ranges, strict=True)
        ]

    def _locate(self, key: str) -> tuple[int, int] | None:
        """(offset, length) when ``key`` is a chunk stored by reference."""
        parent, _, leaf = key.rpartition("/")
        arr = self.index.arrays.get(parent)
        if arr is None or arr.problem or not _CHUNK_KEY.match(leaf) or not arr.shape:
            return None
        index = tuple(int(i) for i in leaf.split("."))
        if len(index) != len(arr.shape) or any(
            i >= g for i, g in zip(index, arr.grid, strict=True)
        ):
            return None
        arr.ensure_chunks([(i, i + 1) for i in index])
        if index in arr.inline or arr.offsets[index] < 0:
            return None
        return int(arr.offsets[index]), int(arr.lengths[index])

    async def exists(self, key: str) -> bool:
        if key in self._meta:
            return True
        parent, _, leaf = key.rpartition("/")
        arr = self.index.arrays.get(parent)
        if arr is None or not _CHUNK_KEY.match(leaf):
            return False
        return (
            self._locate(key) is not None
            or (tuple(int(i) for i in leaf.split(".")) if arr.shape else ()) in arr.inline
        )

    # -- listing ------------------------------------------------------------
    def _all_keys(self) -> list[str]:
        if self._keys_cache is None:
            keys = list(self._meta)
            for path, arr in self.index.arrays.items():
                if arr.problem:
                    continue
                for index in (*arr.stored_indices(), *arr.inline):
                    keys.append(f"{path}/{'.'.join(map(str, index)) if index else '0'}")
            self._keys_cache = keys
        return self._keys_cache

    async def list(self) -> AsyncIterator[str]:
        for key in self._all_keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in self._all_keys():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/")
        seen = set()
        start = f"{prefix}/" if prefix else ""
        for key in self._all_keys():
            if key.startswith(start):
                name = key[len(start) :].split("/", 1)[0]
                if name not in seen:
                    seen.add(name)
                    yield name

    # -- writing is not supported --------------------------------------------
    async def set(self, key: str, value: Buffer) -> None:
        raise PermissionError("ReferenceStore is read-only")

    async def delete(self, key: str) -> None:
        raise PermissionError("ReferenceStore is read-only")


def _cut(value: bytes, byte_range: ByteRequest | None) -> bytes:
    if byte_range is None:
        return value
    if isinstance(byte_range, RangeByteRequest):
        return value[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return value[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return value[-byte_range.suffix :]
    raise TypeError(f"unexpected byte range {byte_range!r}")


def _metadata_documents(index: ReferenceIndex) -> dict[str, bytes]:
    """``.zgroup``/``.zattrs``/``.zarray`` of every node, encoded once."""
    docs: dict[str, bytes] = {}
    for key, value in index.to_refs(chunks=False)["refs"].items():
        docs[key] = value.encode("utf-8") if isinstance(value, str) else json.dumps(value).encode()
    # Arrays xnwb cannot decode stay visible here: reading one raises the reason.
    for path, arr in index.arrays.items():
        if arr.problem is not None:
            docs[f"{path}/.zarray"] = json.dumps(arr.zarray()).encode()
            docs[f"{path}/.zattrs"] = json.dumps(arr.attrs).encode()
    return docs
