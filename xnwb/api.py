"""Entry points that take a source (path or URL): build or load the index, list series."""

from __future__ import annotations

import logging
import os
import time
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from xnwb.cache import cache_dir, load_cached, source_identity, store_cached
from xnwb.exceptions import MalformedReferenceError, UnsafeReferenceError
from xnwb.index import DEFAULT_INLINE_BYTES, DEFAULT_MAX_CHUNK_BYTES, index_hdf5, open_h5
from xnwb.lazyindex import IndexCompletion, LazyPlan, lazy_arrays, preload_top
from xnwb.nwb import check_nwb, find_series, series_summary, unopenable_series
from xnwb.places import Place, is_relative, local_target_path, place_of
from xnwb.progress import count_bar
from xnwb.refload import load_reference_file
from xnwb.refs import ReferenceIndex
from xnwb.remote import split_options
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
    lazy: bool = False,
    progress: bool = False,
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
    lazy
        Leave the chunk index of big chunked datasets to be read on demand, a
        window's B-tree nodes at a time (:mod:`xnwb.lazyindex`); ``False`` lists
        every chunk now.
    progress
        Show a progress bar (chunks listed of those the datasets can hold) once the
        walk has lasted a second: :func:`xnwb.progress.count_bar`.

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
        identity = ByteSource(url).identity() if os.path.exists(path) else None
        size = identity["size"] if identity else None
        with open_h5(path, repr(url)) as h5file:
            if lazy:
                local = byte_source or ByteSource(url)
                options["lazy"] = LazyPlan(local, _reader(local), file_size=size)
            with count_bar(progress) as update:
                index = index_hdf5(h5file, url, file_size=size, progress=update, **options)
        if identity is not None:
            index.info["identity"] = identity  # compared when the index is used (index=)
        return index

    from xnwb.rangefile import RangeFile

    remote = byte_source or ByteSource(url, storage_options)
    before = remote.requests
    tic = time.perf_counter()
    fingerprint = remote.fingerprint()
    with (
        RangeFile(remote, fingerprint.size, prefetch_tail=lazy) as fobj,
        open_h5(fobj, repr(url)) as h5file,
    ):
        if lazy:  # object headers come from the block cache h5py has just filled
            options["lazy"] = LazyPlan(
                remote, lambda s, n: bytes(fobj.read_at(s, n)), file_size=fingerprint.size
            )
        with count_bar(progress) as update:
            index = index_hdf5(
                h5file, url, file_size=fingerprint.size, progress=update, **options
            )
        if lazy:
            preload_top(index, fobj.cached_at)
    index.info.update(
        fingerprint=fingerprint.to_dict(),
        identity=remote.identity(),
        requests=remote.requests - before,
        seconds=time.perf_counter() - tic,
    )
    logger.info(
        "indexed %s: %d requests, %.2f s", url, index.info["requests"], index.info["seconds"]
    )
    return index


def _reader(source: ByteSource) -> Any:
    """``read(start, length) -> bytes`` over ``source``, clipped at the end of the file."""
    size = source.size()

    def read(start: int, length: int) -> bytes:
        length = max(0, min(length, size - start))
        return bytes(source.fetch([start], [length])[0]) if length else b""

    return read


def _looks_like_references(url: str) -> bool:
    path = urlparse(url).path if not is_local(url) else url
    return path.lower().endswith((".json", ".json.gz")) or url.startswith("reference://")


def _allowed(place: Place, allowed: tuple[str, ...]) -> bool:
    """Whether ``place`` lies under one of ``allowed_sources`` (whole segments, same port)."""
    return any(place_of(prefix).contains(place) for prefix in allowed)


def _resolve_target(target: str, refs_url: str) -> str:
    """A reference's target as a URL or real path; relative ones beside ``refs_url``."""
    if is_local(refs_url) and (is_relative(target) or is_local(target)):
        folder = os.path.dirname(os.path.realpath(local_path(refs_url)))
        return local_target_path(target, folder)
    if is_relative(target):
        return f"{refs_url.rsplit('/', 1)[0]}/{target}"
    return local_target_path(target) if is_local(target) else target


def _data_file_beside(refs: ReferenceIndex, refs_url: str, allowed: tuple[str, ...]) -> str:
    """The one data file a reference file opened as the source may read.

    It is the single file the chunk references name, and it must sit in the same
    folder as the reference file (local paths compared after ``realpath``, so a
    symlink beside the JSON cannot lead elsewhere; URLs by scheme, host, port and
    path segments), or under ``allowed_sources``.
    """
    urls = refs.info.get("reference_urls", [])
    if not urls:
        raise MalformedReferenceError(
            f"reference file {refs_url!r} names no data file (no chunk is a "
            "[url, offset, length] reference); open the NWB file itself with "
            f"index={refs_url!r}"
        )
    targets = sorted({_resolve_target(u, refs_url) for u in urls})
    if len(targets) > 1:
        raise UnsafeReferenceError(
            f"references point into {len(targets)} different files ({targets[:3]}); "
            "xnwb opens one file at a time"
        )
    target = targets[0]
    place = place_of(target)
    if _allowed(place, allowed):
        return target
    home = place_of(os.path.realpath(local_path(refs_url)) if is_local(refs_url) else refs_url)
    if place.folder == home.folder:
        return target
    raise UnsafeReferenceError(
        f"references point to {str(place)!r}, outside the opened source: a reference file "
        f"opened as the source may point only at one file in its own folder "
        f"({str(home.folder)!r}). Open the data file with index={refs_url!r}, or pass "
        "allowed_sources=[...] to allow it"
    )


def _check_index_targets(
    refs: ReferenceIndex, url: str, index_url: str | None, allowed: tuple[str, ...]
) -> None:
    """Every reference of an ``index=`` must name the opened source (or an allowed place)."""
    source = place_of(url)
    for target in sorted(_targets(refs)):
        candidates = [place_of(target)]
        if index_url is not None and is_local(index_url) and is_relative(target):
            folder = os.path.dirname(os.path.realpath(local_path(index_url)))
            candidates.append(place_of(target, folder))
        if any(c == source or _allowed(c, allowed) for c in candidates):
            continue
        raise UnsafeReferenceError(
            f"references point to {target!r}, outside the opened source {url!r}; "
            "pass allowed_sources=[...] to allow it"
        )


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_hdf5(byte_source: ByteSource, size: int, label: str) -> None:
    """Refuse a data file that is not HDF5: references read only from HDF5 files.

    The superblock sits at byte 0, 512, 1024, 2048, … (after a user block).
    """
    offset = 0
    while offset + 8 <= size and offset <= 2**20:
        if bytes(byte_source.fetch([offset], [8])[0]) == _HDF5_SIGNATURE:
            return
        offset = 512 if offset == 0 else offset * 2
    raise UnsafeReferenceError(
        f"the references point into {label}, which is not an HDF5 file: "
        "xnwb reads references only into the HDF5 file they were built from"
    )


def _check_extent(index: ReferenceIndex, size: int) -> None:
    for path, arr in index.arrays.items():
        stored = arr.offsets >= 0
        if stored.any():
            # Offsets and lengths are below 2**53 (checked when read): no int64 wrap.
            end = int((arr.offsets + arr.lengths)[stored].max())
            if end > size:
                raise UnsafeReferenceError(
                    f"references of {path!r} reach byte {end}, past the end of "
                    f"{index.source!r} ({size} bytes): a stale or hostile index"
                )


def _load_references(refs_url: str, storage_options: dict[str, Any] | None) -> ReferenceIndex:
    options, _ = split_options(storage_options)  # xnwb's own keys are not fsspec's
    doc = load_reference_file(refs_url, options)
    return ReferenceIndex.from_reference_file(doc, label=f"reference file {refs_url!r}")


def open_source(
    source: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    *,
    index: str | os.PathLike[str] | ReferenceIndex | None = None,
    index_cache: bool | str | os.PathLike[str] = True,
    allowed_sources: tuple[str, ...] | list[str] = (),
    lazy_index: bool = True,
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
        Cache of indexes: ``True`` (default folder), a folder, or ``False``. Remote
        indexes are always cached; local ones when they hold at least
        ``LOCAL_CACHE_MIN_CHUNKS`` chunks (smaller ones build in milliseconds). See
        :mod:`xnwb.cache` for what makes an entry valid.
    allowed_sources
        URL prefixes references may point to besides the opened source.
    lazy_index
        Read the chunk index of big chunked datasets on demand, window by window,
        and complete it in the background after the first read (then cache it);
        ``False`` lists every chunk before returning.
    **index_options
        ``max_chunk_bytes``, ``inline_bytes`` for a new index.
    """
    url = os.fspath(source)
    allowed = tuple(allowed_sources)
    tic = time.perf_counter()

    if index is not None or _looks_like_references(url):
        if index is None:  # the source is a reference file: data must live beside it
            refs = _load_references(url, storage_options)
            data_url = _data_file_beside(refs, url, allowed)
        else:
            index_url = None if isinstance(index, ReferenceIndex) else os.fspath(index)
            refs = index if index_url is None else _load_references(index_url, storage_options)
            _check_index_targets(refs, url, index_url, allowed)
            data_url = url
        refs.source = data_url
        byte_source = ByteSource(data_url, storage_options)
        size = byte_source.fingerprint().size
        if index is None:
            _check_hdf5(byte_source, size, repr(data_url))
        _check_extent(refs, size)
        # A saved index is held to the version it was built from; then every read is
        # held to the version opened now.
        refs.info["identity"] = byte_source.pin(_recorded_identity(refs))
        check_nwb(refs, repr(url))
        refs.info["open"] = _report(byte_source, tic, cached=True)
        return refs, byte_source

    byte_source = ByteSource(url, storage_options)
    folder = cache_dir(index_cache)
    refs = identity = None
    key = url
    if folder is not None:
        try:
            identity = source_identity(byte_source)
        except FileNotFoundError:
            folder = None  # building the index names the missing file
        else:
            key = identity.get("path", url)  # a local file by its real path
            refs = load_cached(folder, key, identity)
    cached = refs is not None
    if refs is None:
        # Pinned before indexing, so a change while it runs is caught too (a missing
        # local file is left to build_index, which names it).
        missing = byte_source.is_local and not os.path.exists(local_path(url))
        pinned = None if missing else byte_source.pin()
        refs = build_index(
            url, storage_options, byte_source=byte_source, lazy=lazy_index, **index_options
        )
        byte_source.check_unchanged()
        refs.info["identity"] = pinned
        if identity is not None:
            _store_when_complete(refs, folder, key, identity, byte_source.is_local)
    else:
        refs.info["identity"] = byte_source.pin(_recorded_identity(refs))
    refs.source = url
    check_nwb(refs, repr(url))
    refs.info["open"] = _report(byte_source, tic, cached=cached)
    return refs, byte_source


#: Local indexes with fewer chunks than this build in milliseconds: not worth an entry.
LOCAL_CACHE_MIN_CHUNKS = 10_000


def _worth_caching(refs: ReferenceIndex, local: bool) -> bool:
    """Remote indexes always; local ones when the walk was long (many chunks)."""
    if not local:
        return True
    return sum(arr.offsets.size for arr in refs.arrays.values()) >= LOCAL_CACHE_MIN_CHUNKS


def _recorded_identity(refs: ReferenceIndex) -> dict[str, Any] | None:
    """The identity of the file an index was built from (older indexes: size and tag)."""
    identity = refs.info.get("identity")
    if isinstance(identity, dict) and "size" in identity:
        return identity
    fingerprint = refs.info.get("fingerprint")
    if isinstance(fingerprint, dict) and "size" in fingerprint:
        return {"kind": "remote", "size": fingerprint["size"], "tag": fingerprint.get("tag")}
    return None


def _store_when_complete(
    refs: ReferenceIndex, folder: Any, key: str, identity: dict[str, Any], local: bool
) -> None:
    """Cache the index now, or once its lazy chunk indexes are complete (in the background)."""

    def store(done: ReferenceIndex) -> None:
        if _worth_caching(done, local):
            store_cached(folder, key, identity, done)

    if not lazy_arrays(refs):
        store(refs)
        return
    IndexCompletion(refs, on_complete=store)


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
        requests, bytes and seconds opening took, and whether the index was cached;
        ``df.attrs["cannot_open"]`` maps series that cannot be opened to the reason.

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
    frame.attrs["cannot_open"] = unopenable_series(index)
    return frame
