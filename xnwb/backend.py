"""The xarray backend: ``xr.open_dataset(source, engine="nwbzarr")``."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from typing import Any

import xarray as xr
from xarray.backends import BackendEntrypoint

from xnwb.api import open_source
from xnwb.exceptions import XnwbError
from xnwb.index import DEFAULT_MAX_CHUNK_BYTES
from xnwb.nwb import (
    XnwbWarning,
    file_attrs,
    find_series,
    pick_series,
    series_dataset,
    skipped_series,
)

__all__ = ["NWBZarrBackendEntrypoint"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


#: The parameters ``open_dataset`` and ``open_datatree`` share, documented once.
_SHARED_PARAMETERS = """\
        mask_and_scale : bool, default True
            Decode the stored counts to physical units (``conversion``, ``offset`` and
            ``channel_conversion`` become CF ``scale_factor``/``add_offset``, applied
            lazily). ``False`` returns the stored integers untouched.
        storage_options : dict, optional
            fsspec options for a remote source and its reference file, e.g.
            ``{"anon": True}`` (public S3), ``{"token": "anon"}`` (public GCS),
            ``{"endpoint_url": ...}``; credentials go only where these send them.
        index : str, path or ReferenceIndex, optional
            References built earlier for this source (``xnwb index``, or
            :func:`xnwb.build_index` ``.to_json``): no HDF5 metadata is read, every read goes
            to ``filename_or_obj``. Each reference must point into that source (see
            ``allowed_sources``) and end within the file.
        index_cache : bool or str or path, default True
            Cache of indexes (remote files, and local ones of at least 10,000 chunks):
            ``True`` uses ``$XNWB_CACHE_DIR`` (else ``~/.cache/xnwb``), a path uses that
            folder, ``False`` builds the index every time. An entry is used only for the
            same version of the file (see :mod:`xnwb.cache`).
        allowed_sources : iterable of str, default ()
            Places (URLs or folders, matched by scheme, host, port and whole path
            segments) that references may point to besides the opened source (for a
            reference file whose data you moved). Without it, ``file://`` targets, other
            hosts and ``..`` are refused with :class:`~xnwb.exceptions.UnsafeReferenceError`.
        max_chunk_bytes : int, default 4 MiB
            Largest virtual sub-chunk cut out of contiguous or unfiltered datasets along
            time when a new index is built, so a short window never fetches a whole
            dataset. Larger means fewer, bigger reads.
        lazy_index : bool, default True
            Read the chunk index of big chunked datasets on demand: a window fetches only
            the B-tree nodes over it, and the full index is completed in a background
            thread after the first read (then cached). ``False`` lists every chunk before
            returning, as a whole pass or a distributed run may prefer.
        decode_times : bool, optional
            Accepted for xarray's sake (it passes its decoders on); times are NWB's seconds
            (from the session start) either way, never datetimes.
        decode_timedelta : bool, optional
            Accepted and ignored, as ``decode_times``.
        decode_coords : bool or str, optional
            Accepted and ignored: coordinates come from the NWB electrodes table.
        use_cftime : bool, optional
            Accepted and ignored, as ``decode_times``.
        concat_characters : bool, optional
            Accepted and ignored: NWB text is read as Python strings.
"""

_XARRAY_DECODERS = (
    "decode_times", "decode_timedelta", "decode_coords", "use_cftime", "concat_characters",
)  # fmt: skip


def _shared_parameters(method: Any) -> Any:
    """Fill the ``{shared_parameters}`` place of ``method``'s docstring."""
    if method.__doc__:  # ``python -OO`` strips docstrings
        method.__doc__ = method.__doc__.replace("        {shared_parameters}\n", _SHARED_PARAMETERS)
    return method


class NWBZarrBackendEntrypoint(BackendEntrypoint):
    """Open NWB time series from HDF5 files through Zarr references.

    Notes
    -----
    ``chunks=`` (an argument of :func:`xarray.open_dataset` itself) chooses the array type:

    - ``None`` (the default): a lazy array; indexing reads just the stored chunks the
      selection touches, in one coalesced fetch.
    - ``{}`` or ``"auto"``: dask, in chunks of whole stored chunks grown along time first
      (the stored chunk's channel span, at least 4 channels) to a quarter of dask's
      ``array.chunk-size`` (32 MiB) in the in-memory dtype; see
      :func:`xnwb.chunking.dask_chunks`. ``"auto"`` lets dask grow those, in whole
      multiples, to its full ``array.chunk-size``. dask fuses a slice into
      the read, so a window reads only the stored chunks it touches, one fetch per dask chunk.
      A channel *list* (``.sel(channel=[...])``) reads every channel of each dask chunk it
      touches over the window's time range: no more than its stored chunks when they span
      at least the dask chunk's channels.
    - a dict such as ``{"time": 300_000}``: those chunks. Multiples of
      ``encoding["chunks"]`` read efficiently; xarray warns ("separate the stored chunks")
      when they split ``preferred_chunks``, the dask-sized groups, which costs nothing more.

    ``data.encoding["chunks"]`` is the stored chunk reads decode (a contiguous dataset's
    virtual sub-chunk), ``encoding["hdf5_chunks"]`` the HDF5 chunk, and
    ``encoding["preferred_chunks"]`` what ``chunks={}`` gives.

    Examples
    --------
    >>> import os, tempfile, xarray as xr, xnwb.demo
    >>> folder = tempfile.mkdtemp()
    >>> path = xnwb.demo.write_demo_recording(os.path.join(folder, "rec.nwb"), duration=1.0)
    >>> ds = xr.open_dataset(path, engine="nwbzarr")
    >>> ds.data.dims, ds.sizes["channel"]
    (('time', 'channel'), 8)

    Stored chunks of 500 samples × 2 channels, with a small dask chunk size to show the
    grouping (four stored chunks along time, two along channels):

    >>> import dask
    >>> path = xnwb.demo.write_demo_recording(os.path.join(folder, "small.nwb"),
    ...                                       duration=10.0, chunks=(500, 2))
    >>> with dask.config.set({"array.chunk-size": "256KiB"}):  # a 64 KiB target
    ...     dk = xr.open_dataset(path, engine="nwbzarr", chunks={})
    >>> dk.data.encoding["chunks"], dk.data.data.chunksize
    ((500, 2), (2000, 4))
    """

    description = "Open HDF5 NWB time series lazily through Zarr references (xnwb)"
    url = "https://github.com/xnwb/xnwb"
    open_dataset_parameters = (
        "filename_or_obj",
        "drop_variables",
        "group",
        "mask_and_scale",
        "storage_options",
        "index",
        "index_cache",
        "allowed_sources",
        "max_chunk_bytes",
        "lazy_index",
        *_XARRAY_DECODERS,
    )

    @_shared_parameters
    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: str | os.PathLike[Any],
        *,
        drop_variables: str | Iterable[str] | None = None,
        group: str | None = None,
        mask_and_scale: bool = True,
        storage_options: dict[str, Any] | None = None,
        index: Any = None,
        index_cache: bool | str | os.PathLike[str] = True,
        allowed_sources: Iterable[str] = (),
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
        lazy_index: bool = True,
        decode_times: bool | None = None,
        decode_timedelta: bool | None = None,
        decode_coords: bool | str | None = None,
        use_cftime: bool | None = None,
        concat_characters: bool | None = None,
    ) -> xr.Dataset:
        """Open one NWB time series as a Dataset (``xr.open_dataset(..., engine="nwbzarr")``).

        Parameters
        ----------
        filename_or_obj : str or path
            The NWB file: a local path, an ``https://`` URL (DANDI asset URLs redirect to
            signed S3 URLs; they are followed), ``s3://bucket/key`` (``xnwb[s3]``),
            ``gs://bucket/key`` (``xnwb[gcs]``), any fsspec URL; or a kerchunk/xnwb
            reference JSON, whose data must then live beside it (same folder or host).
        drop_variables : str or iterable of str, optional
            Variables (or coordinates such as ``"group"``) left out of each Dataset.
        group : str, optional
            Path of the series in the file, e.g. ``"processing/ecephys/LFP/ElectricalSeries"``
            (``xnwb.list_series`` or ``xnwb info`` list them; a leading ``/`` is fine).
            Default: the file's only ElectricalSeries under ``acquisition``, else its only
            time series; with several, the error lists them.
        {shared_parameters}

        Returns
        -------
        xarray.Dataset
            Variable ``data`` with dims ``("time", "channel")`` (``("time",)`` for 1-D
            series), coordinate ``time`` in seconds (a lazy range index for regular series),
            ``channel`` (electrode ids) and the electrodes table's columns; NWB attributes as
            attrs. ``encoding["xnwb_open"]`` reports what opening cost (requests, bytes,
            seconds, whether the index was cached). Nothing of ``data`` is read.

        Raises
        ------
        NotNWBError
            Not HDF5, or HDF5 without NWB.
        SeriesNotFoundError, NotTimeSeriesError
            ``group`` missing (or ambiguous default), or not a time series.
        UnsupportedFilterError
            A compression filter xnwb cannot decode (named with its dataset).
        UnsafeReferenceError
            A reference leaving the opened source, or past its end.
        FileNotFoundError, ChunkReadError
            The file cannot be reached.
        """
        refs, source = _open(
            filename_or_obj,
            storage_options,
            index,
            index_cache,
            allowed_sources,
            max_chunk_bytes,
            lazy_index,
        )
        path = pick_series(refs, group)
        ds = series_dataset(refs, source, path, mask_and_scale=mask_and_scale)
        ds.encoding["xnwb_open"] = refs.info.get("open", {})
        return _drop(ds, drop_variables)

    @_shared_parameters
    def open_datatree(  # type: ignore[override]
        self,
        filename_or_obj: str | os.PathLike[Any],
        *,
        drop_variables: str | Iterable[str] | None = None,
        mask_and_scale: bool = True,
        storage_options: dict[str, Any] | None = None,
        index: Any = None,
        index_cache: bool | str | os.PathLike[str] = True,
        allowed_sources: Iterable[str] = (),
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
        lazy_index: bool = True,
        decode_times: bool | None = None,
        decode_timedelta: bool | None = None,
        decode_coords: bool | str | None = None,
        use_cftime: bool | None = None,
        concat_characters: bool | None = None,
    ) -> xr.DataTree:
        """Open every time series of an NWB file as a DataTree (``xr.open_datatree``).

        One node per series, at its path in the file (``/acquisition/ElectricalSeries``, …),
        each a Dataset as :meth:`open_dataset` returns; the root node holds the file's
        attributes (NWB version, identifier, session start and description). The file is
        indexed once for all nodes.

        Parameters
        ----------
        filename_or_obj : str or path
            The NWB file: a local path, an ``https://`` URL (DANDI asset URLs redirect to
            signed S3 URLs; they are followed), ``s3://bucket/key`` (``xnwb[s3]``),
            ``gs://bucket/key`` (``xnwb[gcs]``), any fsspec URL; or a kerchunk/xnwb
            reference JSON, whose data must then live beside it (same folder or host).
        drop_variables : str or iterable of str, optional
            Variables (or coordinates such as ``"group"``) left out of each Dataset.
        {shared_parameters}

        Returns
        -------
        xarray.DataTree

        Raises
        ------
        NotNWBError, UnsupportedFilterError, UnsafeReferenceError, FileNotFoundError
            As for :meth:`open_dataset`.
        """
        refs, source = _open(
            filename_or_obj,
            storage_options,
            index,
            index_cache,
            allowed_sources,
            max_chunk_bytes,
            lazy_index,
        )
        root = xr.Dataset(attrs=file_attrs(refs, source))
        nodes: dict[str, xr.Dataset] = {"/": root}
        skipped = skipped_series(refs)
        for path in find_series(refs):
            try:
                ds = series_dataset(refs, source, path, mask_and_scale=mask_and_scale)
            except (XnwbError, ValueError) as err:  # one bad series must not hide the rest
                skipped[path] = f"{type(err).__name__}: {err}"
                continue
            nodes[f"/{path}"] = _drop(ds, drop_variables)
        if skipped:
            root.attrs["skipped_series"] = json.dumps(dict(sorted(skipped.items())))
            warnings.warn(
                f"{len(skipped)} series left out of the tree: "
                + "; ".join(f"{p} ({why})" for p, why in sorted(skipped.items()))
                + "; the root's attrs['skipped_series'] lists them (JSON)",
                XnwbWarning,
                stacklevel=2,
            )
        tree = xr.DataTree.from_dict(nodes)
        tree.encoding["xnwb_open"] = refs.info.get("open", {})
        return tree

    def open_groups_as_dict(  # type: ignore[override]
        self, filename_or_obj: str | os.PathLike[Any], **kwargs: Any
    ) -> dict[str, xr.Dataset]:
        """The nodes of :meth:`open_datatree` as ``{path: Dataset}`` (same keywords)."""
        tree = self.open_datatree(filename_or_obj, **kwargs)
        return {node.path: node.to_dataset() for node in tree.subtree}

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """Whether ``filename_or_obj`` looks like an NWB file (a ``.nwb`` name); never raises."""
        try:
            name = os.fspath(filename_or_obj)
        except TypeError:
            return False
        if isinstance(name, bytes):
            return False
        if name.lower().endswith(".nwb"):
            return True
        return False


def _drop(ds: xr.Dataset, names: str | Iterable[str] | None) -> xr.Dataset:
    if names is None:
        return ds
    return ds.drop_vars([names] if isinstance(names, str) else list(names), errors="ignore")


def _open(
    source: str | os.PathLike[Any],
    storage_options: dict[str, Any] | None,
    index: Any,
    index_cache: bool | str | os.PathLike[str],
    allowed_sources: Iterable[str],
    max_chunk_bytes: int,
    lazy_index: bool = True,
) -> tuple[Any, Any]:
    # Importing xnwb registers the accessors; engine users may never import it.
    import xnwb  # noqa: F401

    return open_source(
        source,
        storage_options,
        index=index,
        index_cache=index_cache,
        allowed_sources=tuple(allowed_sources),
        max_chunk_bytes=max_chunk_bytes,
        lazy_index=lazy_index,
    )
