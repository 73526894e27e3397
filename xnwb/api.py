"""Entry points that take a source (path or URL): build or load the index, list series."""

from __future__ import annotations

import logging
import os
import time
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from xnwb.cache import cache_dir, load_cached, store_cached
from xnwb.exceptions import UnsafeReferenceError
from xnwb.index import DEFAULT_INLINE_BYTES, DEFAULT_MAX_CHUNK_BYTES, index_hdf5, open_h5
from xnwb.nwb import check_nwb, find_series, series_summary
from xnwb.refs import ReferenceIndex
from xnwb.source import ByteSource, is_local, local_path

__all__ = ["build_index", "list_series", "open_source"]

logger = logging.getLogger("xnwb")


def build_index(
    source: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    *,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    inline_bytes: int = DEFAULT_INLINE_BYTES,
    byte_source: ByteSource | None = None,
) -> ReferenceIndex:
    """Walk the HDF5 metadata of ``source`` once and return its references.

    Remote files are read through large cached blocks, and the chunk B-trees one
    level per round trip; ``index.info["requests"]`` says how many requests it took.

    Parameters
    ----------
    source
        Path or URL (``s3://``, ``gs://``, ``https://``) of an HDF5 (NWB) file.
    storage_options
        fsspec options for remote sources.
    max_chunk_bytes
        Largest virtual sub-chunk cut out of contiguous or unfiltered data.
    inline_bytes
        Datasets up to this size are stored in the index itself.
    byte_source
        Reuse this :class:`~xnwb.source.ByteSource` (and its resolved URL).

    Returns
    -------
    ReferenceIndex
        ``.to_json(path)`` writes kerchunk-compatible references.

    Examples
    --------
    >>> import os, tempfile, xnwb, xnwb.demo
    >>> folder = tempfile.mkdtemp()
    >>> path = xnwb.demo.write_demo_recording(os.path.join(folder, "rec.nwb"), duration=1.0)
    >>> refs = xnwb.build_index(path)
    >>> refs.arrays["acquisition/ElectricalSeries/data"].shape
    (1000, 8)
    """
    url = os.fspath(source)
    options = dict(max_chunk_bytes=max_chunk_bytes, inline_bytes=inline_bytes)
    if is_local(url):
        path = local_path(url)
        size = os.path.getsize(path) if os.path.exists(path) else None
        with open_h5(path, repr(url)) as h5file:
            return index_hdf5(h5file, url, file_size=size, **options)

    from xnwb.rangefile import RangeFile

    remote = byte_source or ByteSource(url, storage_options)
    before = remote.requests
    tic = time.perf_counter()
    fingerprint = remote.fingerprint()
    with RangeFile(remote, fingerprint.size) as fobj, open_h5(fobj, repr(url)) as h5file:
        index = index_hdf5(h5file, url, file_size=fingerprint.size, **options)
    index.info.update(
        fingerprint=fingerprint.to_dict(),
        requests=remote.requests - before,
        seconds=time.perf_counter() - tic,
    )
    logger.info(
        "indexed %s: %d requests, %.2f s", url, index.info["requests"], index.info["seconds"]
    )
    return index


def _looks_like_references(url: str) -> bool:
    path = urlparse(url).path if not is_local(url) else url
    return path.lower().endswith((".json", ".json.gz")) or url.startswith("reference://")


def _same_place(target: str, base: str) -> bool:
    """Whether ``target`` lives where ``base`` does (same scheme and host or bucket)."""
    t, b = urlparse(target), urlparse(base)
    if is_local(target) and is_local(base):
        return True
    return (t.scheme, t.netloc) == (b.scheme, b.netloc) and bool(t.netloc)


def _check_target(target: str, opened: str, allowed: tuple[str, ...]) -> None:
    """Refuse references that leave the source the user opened."""
    parsed = urlparse(target)
    if ".." in parsed.path.split("/") or ".." in target.replace("\\", "/").split("/"):
        raise UnsafeReferenceError(f"reference target {target!r} contains '..'")
    if any(target.startswith(prefix) for prefix in allowed):
        return
    if target == opened:
        return
    raise UnsafeReferenceError(
        f"references point to {target!r}, outside the opened source {opened!r}; "
        "pass allowed_sources=[...] to allow it"
    )


def _check_extent(index: ReferenceIndex, size: int) -> None:
    for path, arr in index.arrays.items():
        stored = arr.offsets >= 0
        if stored.any():
            end = int((arr.offsets + arr.lengths)[stored].max())
            if end > size:
                raise UnsafeReferenceError(
                    f"references of {path!r} reach byte {end}, past the end of "
                    f"{index.source!r} ({size} bytes): a stale or hostile index"
                )


def _load_references(refs_url: str, storage_options: dict[str, Any] | None) -> ReferenceIndex:
    import json

    import fsspec

    with fsspec.open(refs_url, "rt", compression="infer", **(storage_options or {})) as fh:
        doc = json.load(fh)
    return ReferenceIndex.from_refs(doc)


def open_source(
    source: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    *,
    index: str | os.PathLike[str] | ReferenceIndex | None = None,
    index_cache: bool | str | os.PathLike[str] = True,
    allowed_sources: tuple[str, ...] | list[str] = (),
    **index_options: Any,
) -> tuple[ReferenceIndex, ByteSource]:
    """The reference index of an NWB file and a byte source for its data.

    Parameters
    ----------
    source
        The NWB file (path or URL), or a kerchunk/xnwb reference JSON.
    storage_options
        fsspec options for the data (and a reference file on the same store).
    index
        References for ``source`` built earlier (a JSON path or a
        :class:`ReferenceIndex`); every read then goes to ``source``.
    index_cache
        Cache of indexes of remote files: ``True`` (default folder), a folder, or
        ``False``.
    allowed_sources
        URL prefixes references may point to besides the opened source.
    **index_options
        ``max_chunk_bytes``, ``inline_bytes`` for a new index.
    """
    url = os.fspath(source)
    allowed = tuple(allowed_sources)
    tic = time.perf_counter()

    if index is not None or _looks_like_references(url):
        if index is None:  # the source is a reference file: data must live beside it
            refs = _load_references(url, storage_options)
            for target in refs.info.get("reference_urls", []):
                if not _same_place(target, url) and urlparse(target).scheme:
                    _check_target(target, url, allowed)
                _check_target(target, target, allowed)
            _single_file(refs)
            target = refs.source
            if target and not urlparse(target).scheme and not os.path.isabs(target):
                _check_target(target, target, allowed)  # no '..' out of the folder
                if is_local(url):
                    target = os.path.join(os.path.dirname(local_path(url)), target)
                else:
                    target = f"{url.rsplit('/', 1)[0]}/{target}"
            elif not _same_place(target, url):
                _check_target(target, url, allowed)
            _check_target(target, target, allowed)
            data_url = target
        else:
            refs = (
                index
                if isinstance(index, ReferenceIndex)
                else _load_references(os.fspath(index), storage_options)
            )
            for target in _targets(refs):
                _check_target(target, url, allowed)
            _single_file(refs)
            data_url = url
        refs.source = data_url
        byte_source = ByteSource(data_url, storage_options)
        _check_extent(refs, byte_source.fingerprint().size)
        check_nwb(refs, repr(url))
        refs.info["open"] = _report(byte_source, tic, cached=True)
        return refs, byte_source

    byte_source = ByteSource(url, storage_options)
    folder = cache_dir(index_cache) if not byte_source.is_local else None
    refs = None
    if folder is not None:
        fingerprint = byte_source.fingerprint()
        refs = load_cached(folder, url, fingerprint)
    if refs is None:
        refs = build_index(url, storage_options, byte_source=byte_source, **index_options)
        if folder is not None:
            store_cached(folder, url, fingerprint, refs)
        cached = False
    else:
        cached = True
    check_nwb(refs, repr(url))
    refs.info["open"] = _report(byte_source, tic, cached=cached)
    return refs, byte_source


def _single_file(refs: ReferenceIndex) -> None:
    urls = refs.info.get("reference_urls", [])
    if len(urls) > 1:
        raise UnsafeReferenceError(
            f"references point into {len(urls)} different files ({urls[:3]}); "
            "xnwb opens one file at a time"
        )


def _targets(refs: ReferenceIndex) -> set[str]:
    urls = set(refs.info.get("reference_urls", []))
    return urls or ({refs.source} if refs.source else set())


def _report(byte_source: ByteSource, tic: float, cached: bool) -> dict[str, Any]:
    return {
        "requests": byte_source.requests,
        "bytes": byte_source.bytes_read,
        "seconds": round(time.perf_counter() - tic, 4),
        "index_cached": cached,
    }


def list_series(
    source: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    **open_options: Any,
) -> pd.DataFrame:
    """What can be opened in an NWB file: one row per time series.

    Parameters
    ----------
    source
        Path or URL of the NWB file (or a reference JSON).
    storage_options
        fsspec options for remote sources.
    **open_options
        ``index``, ``index_cache``, ``allowed_sources`` as for ``open_dataset``.

    Returns
    -------
    pandas.DataFrame
        Indexed by series path, with ``neurodata_type``, ``shape``, ``dtype``,
        ``rate`` (Hz, or ``"timestamps"``), ``duration`` (s), ``chunks``,
        ``compression`` and ``stored_bytes``. ``df.attrs["open"]`` reports the
        requests, bytes and seconds opening took, and whether the index was cached.

    Examples
    --------
    >>> import os, tempfile, xnwb, xnwb.demo
    >>> folder = tempfile.mkdtemp()
    >>> path = xnwb.demo.write_demo_recording(os.path.join(folder, "rec.nwb"), duration=1.0)
    >>> xnwb.list_series(path)[["neurodata_type", "rate"]]  # doctest: +NORMALIZE_WHITESPACE
                                               neurodata_type    rate
    path
    acquisition/ElectricalSeries             ElectricalSeries  1000.0
    processing/ecephys/LFP/ElectricalSeries  ElectricalSeries   250.0
    """
    index, byte_source = open_source(source, storage_options, **open_options)
    rows = [series_summary(index, byte_source, p) for p in find_series(index)]
    columns = [
        "path",
        "neurodata_type",
        "shape",
        "dtype",
        "rate",
        "duration",
        "chunks",
        "compression",
        "stored_bytes",
    ]
    frame = pd.DataFrame(rows, columns=columns).set_index("path")
    frame.attrs["open"] = index.info.get("open", {})
    return frame
