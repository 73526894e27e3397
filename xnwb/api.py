"""Entry points that take a source (path or URL): build the index, list series."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from xnwb.index import DEFAULT_INLINE_BYTES, DEFAULT_MAX_CHUNK_BYTES, index_hdf5, open_h5
from xnwb.nwb import check_nwb, find_series, series_summary
from xnwb.refs import ReferenceIndex
from xnwb.source import ByteSource, is_local, local_path

__all__ = ["build_index", "list_series", "open_source"]


def build_index(
    source: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    *,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    inline_bytes: int = DEFAULT_INLINE_BYTES,
) -> ReferenceIndex:
    """Walk the HDF5 metadata of ``source`` once and return its references.

    Parameters
    ----------
    source
        Path or URL of an HDF5 (NWB) file.
    storage_options
        fsspec options for remote sources.
    max_chunk_bytes
        Largest virtual sub-chunk cut out of contiguous or unfiltered data.
    inline_bytes
        Datasets up to this size are stored in the index itself.

    Returns
    -------
    ReferenceIndex
        ``.to_json(path)`` writes kerchunk-compatible references.

    Examples
    --------
    >>> import xnwb, xnwb.demo
    >>> path = xnwb.demo.write_demo_recording(tmp_path / "rec.nwb", duration=1.0)
    >>> refs = xnwb.build_index(path)
    >>> refs.arrays["acquisition/ElectricalSeries/data"].shape
    (1000, 8)
    """
    url = os.fspath(source)
    if is_local(url):
        path = local_path(url)
        size = os.path.getsize(path) if os.path.exists(path) else None
        with open_h5(path, repr(url)) as h5file:
            return index_hdf5(
                h5file,
                url,
                file_size=size,
                max_chunk_bytes=max_chunk_bytes,
                inline_bytes=inline_bytes,
            )
    raise NotImplementedError(f"remote sources are not supported yet: {url!r}")


def open_source(
    source: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    **index_options: Any,
) -> tuple[ReferenceIndex, ByteSource]:
    """The index of an NWB file and a byte source for its data."""
    index = build_index(source, storage_options, **index_options)
    check_nwb(index, repr(os.fspath(source)))
    return index, ByteSource(index.source, storage_options)


def list_series(
    source: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> pd.DataFrame:
    """What can be opened in an NWB file: one row per time series.

    Parameters
    ----------
    source
        Path or URL of the NWB file.
    storage_options
        fsspec options for remote sources.

    Returns
    -------
    pandas.DataFrame
        Indexed by series path, with ``neurodata_type``, ``shape``, ``dtype``,
        ``rate`` (Hz, or ``"timestamps"``), ``duration`` (s), ``chunks``,
        ``compression`` and ``stored_bytes``.

    Examples
    --------
    >>> import xnwb, xnwb.demo
    >>> path = xnwb.demo.write_demo_recording(tmp_path / "rec.nwb", duration=1.0)
    >>> xnwb.list_series(path)[["neurodata_type", "rate"]]  # doctest: +NORMALIZE_WHITESPACE
                                           neurodata_type    rate
    path
    acquisition/ElectricalSeries         ElectricalSeries  1000.0
    processing/ecephys/LFP/ElectricalSeries  ElectricalSeries   250.0
    """
    index, byte_source = open_source(source, storage_options)
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
    return pd.DataFrame(rows, columns=columns).set_index("path")
