"""Saved transforms: a whole-recording transform (or z-score) written to Zarr, resumably.

:func:`write_transform` writes a lazy transform to a Zarr store part by part: each part is a
slab of whole output chunks along time, computed and written by dask chunk by chunk (memory
stays at a few transform blocks per thread, whatever the recording's length), and recorded in
the store's attributes once it is on disk. An interrupted run therefore continues with the
first part not recorded, and the store is marked complete (``xnwb_complete: true``, then its
metadata consolidated) only after the last part. :func:`open_result` refuses a store that is
not marked complete, so a half-written result is never read as if it were whole.

Layout of a store::

    out.zarr/             the result: variable ``data`` (channel, frequency, time), its coords
    out.zarr/statistics/  for a z-score: ``count``, ``mean``, ``std`` used (``zscore(stats=)``)

Both open with plain xarray: ``xr.open_zarr("out.zarr")`` and
``xr.open_zarr("out.zarr", group="statistics")``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from xnwb.exceptions import IncompleteResultError, ResultError

__all__ = [
    "DEFAULT_PART_BYTES",
    "WriteReport",
    "open_result",
    "result_state",
    "save_transform",
    "write_transform",
]

DEFAULT_PART_BYTES = 256 * 2**20  # bytes (output, or the input behind it) per resumable part
FORMAT = 1  # layout version written in ``xnwb_format``
STATS_GROUP = "statistics"


@dataclass(frozen=True)
class WriteReport:
    """What :func:`write_transform` did.

    Attributes
    ----------
    path : str
        The store.
    parts : int
        Parts of the whole result.
    written : int
        Parts written by this call (the others were on disk already).
    resumed : bool
        Whether an earlier, interrupted run's parts were kept.
    """

    path: str
    parts: int
    written: int
    resumed: bool


def result_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``xnwb_*`` attributes of a result store, or ``None`` where there is no store.

    Raises
    ------
    ResultError
        ``path`` exists but is not a Zarr group (xnwb never writes over it).

    Examples
    --------
    >>> result_state("/no/such/store.zarr") is None
    True
    """
    import zarr

    path = os.fspath(path)
    if not os.path.exists(path):
        return None
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as err:  # zarr raises several kinds for "not a group"
        raise ResultError(
            f"{path!r} exists and is not a Zarr store; choose another output path"
        ) from err
    return {k: v for k, v in group.attrs.asdict().items() if k.startswith("xnwb_")}


def write_transform(
    build: Callable[[xr.Dataset | None], xr.DataArray],
    path: str | os.PathLike[str],
    *,
    params: dict[str, Any],
    statistics: Callable[[], xr.Dataset] | None = None,
    dtype: Any = None,
    part_bytes: int = DEFAULT_PART_BYTES,
    force: bool = False,
    progress: bool = True,
    on_part: Callable[[int, int, str], None] | None = None,
) -> WriteReport:
    """Write the lazy result ``build(stats)`` to the Zarr store ``path``, resumably.

    Parameters
    ----------
    build : callable
        ``build(stats)`` returns the lazy result, a DataArray with a ``time`` dim last
        (``stats`` is the saved statistics Dataset, or ``None`` without ``statistics``).
    path : str or path
        The store (a local folder).
    params : dict
        What the result is (source, series, frequencies, …; JSON-serialisable). A store
        holding other parameters is refused unless ``force``; one holding these is resumed.
    statistics : callable, optional
        Computes the statistics a z-score uses (one pass); saved in the store's
        ``statistics`` group before any part, and reused when a run resumes.
    dtype : dtype, optional
        Type stored: by default ``float32`` for a real result (half the store of a float64
        transform) and ``complex64`` for a complex one. A type that would drop part of the
        values (a real type for complex coefficients, an integer type for floats) is refused.
    part_bytes : int
        Bytes of one resumable part, output and input alike (whole output chunks: a few
        channels and a stretch of time). A part is computed as one dask computation, so
        this bounds what dask may hold at once.
    force : bool
        Replace a finished store or one of other parameters (only ever an xnwb result).
    progress : bool
        A progress bar per part, and for the statistics pass (also on ``distributed``).
    on_part : callable, optional
        ``on_part(done, parts, where)`` after each part is recorded (``where`` names the
        channels and seconds it covered).

    Returns
    -------
    WriteReport

    Raises
    ------
    ResultError
        ``path`` is not an xnwb result, or holds other parameters (without ``force``), or
        ``dtype`` cannot hold the result's values.

    Examples
    --------
    >>> import tempfile, os, xarray as xr
    >>> da = xr.DataArray(np.random.default_rng(0).standard_normal((2, 4000)),
    ...                   dims=("channel", "time"), coords={"time": np.arange(4000) / 100.0},
    ...                   attrs={"rate": 100.0}).chunk({"time": 1000})
    >>> out = os.path.join(tempfile.mkdtemp(), "out.zarr")
    >>> report = write_transform(lambda stats: da, out, params={"demo": 1},
    ...                          part_bytes=2 * 1000 * 4, progress=False)  # one chunk a part
    >>> report.parts, report.written, open_result(out).attrs["xnwb_complete"]
    (4, 4, True)
    """
    import zarr

    path = os.fspath(path)
    wanted = _canonical(params)
    state = result_state(path)
    if state is not None:
        if "xnwb_params" not in state:
            raise ResultError(
                f"{path!r} is a Zarr store but not an xnwb result; xnwb will not write over "
                "it: choose another output path"
            )
        same = state["xnwb_params"] == wanted
        if state.get("xnwb_complete") and same and not force:
            n = int(state.get("xnwb_parts", 0))
            return WriteReport(path, n, 0, resumed=True)
        if not same and not force:
            raise ResultError(
                f"{path!r} holds a result of other parameters ({_differences(state, wanted)}); "
                "pass --force (force=True) to replace it, or choose another output path"
            )
        if force and (not same or state.get("xnwb_complete")):
            _remove_store(path)
            state = None
    markers = {"xnwb_format": FORMAT, "xnwb_params": wanted, "xnwb_complete": False}
    if state is None:
        zarr.open_group(path, mode="w").attrs.update(markers)
        state = dict(markers)

    stats = None
    if statistics is not None:
        stats = _saved_statistics(path)
        if stats is None:
            stats = _portable_text(statistics().load())
            stats.attrs["xnwb_complete"] = False
            _write_quietly(stats, path, group=STATS_GROUP, mode="w")
            zarr.open_group(path, mode="r+", path=STATS_GROUP).attrs["xnwb_complete"] = True
            stats.attrs["xnwb_complete"] = True

    result = _storable(build(stats))
    dtype = _stored_dtype(result.dtype, dtype)
    parts = _parts(result, np.dtype(dtype).itemsize, part_bytes)
    n_parts, n_times = len(parts), result.sizes["time"]
    resumed = "xnwb_parts" in state
    if not resumed:
        initial = result.to_dataset(name="data")
        initial.attrs = {**result.attrs, **markers, "xnwb_parts": n_parts, "xnwb_parts_done": []}
        encoding = {
            "data": {"dtype": np.dtype(dtype), "chunks": tuple(c[0] for c in result.chunks)},
            "time": {"chunks": (min(n_times, 2**20),)},
        }
        _write_quietly(initial, path, mode="a", compute=False, encoding=encoding)
        state = {**state, "xnwb_parts": n_parts, "xnwb_parts_done": []}
    elif int(state["xnwb_parts"]) != n_parts:
        raise ResultError(
            f"{path!r} was cut into {state['xnwb_parts']} parts, this run into {n_parts} "
            "(another part size): rerun with the same settings, or --force"
        )

    group = zarr.open_group(path, mode="r+")
    done = {int(i) for i in state.get("xnwb_parts_done", [])}
    times = result["time"].values
    written = 0
    for i, region in enumerate(parts):
        if i in done:
            continue
        part = result.isel(region).to_dataset(name="data").drop_vars(list(result.coords))
        delayed = _write_quietly(part, path, region=region, compute=False)
        from xnwb.progress import compute

        compute(delayed, progress=progress)
        done.add(i)
        group.attrs["xnwb_parts_done"] = sorted(done)
        written += 1
        if on_part is not None:
            on_part(len(done), n_parts, _describe(result, region, times))
    group.attrs["xnwb_complete"] = True  # last: only now does the store count as finished
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(path)
    return WriteReport(path, n_parts, written, resumed=resumed and bool(state["xnwb_parts_done"]))


def _stored_dtype(values: np.dtype, wanted: Any) -> np.dtype:
    """The type a result of ``values`` is stored as: ``wanted``, or float32 / complex64.

    Examples
    --------
    >>> _stored_dtype(np.dtype("complex128"), None), _stored_dtype(np.dtype("f8"), "f8")
    (dtype('complex64'), dtype('float64'))
    """
    values = np.dtype(values)
    if wanted is None:
        return np.dtype(np.complex64 if values.kind == "c" else np.float32)
    wanted = np.dtype(wanted)
    if wanted.kind in "fc" and wanted.itemsize < (4 if wanted.kind == "f" else 8):
        raise ResultError(
            f"cannot store results as {wanted}: its range (down to ~6e-5, up to 65504) "
            "would turn most values of a transform in volts to zeros; use float32 or float64"
        )
    if not np.can_cast(values, wanted, casting="same_kind"):
        hint = (
            "complex64 or complex128, or save output='power'"
            if values.kind == "c"
            else "a floating-point type"
        )
        raise ResultError(
            f"cannot store {values} values as {wanted}: part of each value would be lost "
            f"(for {values}, use {hint})"
        )
    return wanted


def save_transform(
    result: xr.DataArray | xr.Dataset,
    path: str | os.PathLike[str],
    *,
    statistics: xr.Dataset | None = None,
    **kwargs: Any,
) -> WriteReport:
    """Save a lazy transform or z-score (``ds.ephys.morlet(...)``, ``.zscore()``) to Zarr.

    The resumable writer of ``xnwb tfr`` (:func:`write_transform`) for a result already
    built: parts are recorded as they are written, so running the same call again after an
    interruption continues where it stopped (the result is recognised by its dask name,
    which is the same for the same source, parameters and chunks). ``statistics`` (from
    ``.ephys.stats()``) are saved in the store's ``statistics`` group.

    Parameters
    ----------
    result : DataArray or Dataset
        Lazy (dask) result with ``time`` last; a Dataset's ``data`` variable is saved.
    path : str or path
        The Zarr store.
    statistics : Dataset, optional
        Saved beside the result, e.g. the statistics a z-score used.
    **kwargs
        ``dtype``, ``part_bytes``, ``force``, ``progress``, ``on_part`` as for
        :func:`write_transform`.

    Examples
    --------
    >>> import os, tempfile, xarray as xr
    >>> da = xr.DataArray(np.ones((1, 2000)), dims=("channel", "time"),
    ...                   coords={"time": np.arange(2000) / 100.0}, attrs={"rate": 100.0})
    >>> z = da.ephys.morlet([5.0, 10.0], output="power", decim=2)
    >>> out = os.path.join(tempfile.mkdtemp(), "power.zarr")
    >>> save_transform(z, out, progress=False).written >= 1
    True
    >>> xr.open_zarr(out).data.dims
    ('channel', 'frequency', 'time')
    """
    da = result["data"] if isinstance(result, xr.Dataset) else result
    name = getattr(da.data, "name", None)
    params = {"dask_name": name, "dims": [str(d) for d in da.dims], "shape": list(da.shape)}
    saved = None if statistics is None else statistics

    def build(stats: xr.Dataset | None) -> xr.DataArray:
        return da

    return write_transform(
        build,
        path,
        params=params,
        statistics=None if saved is None else (lambda: saved),
        **kwargs,
    )


def open_result(path: str | os.PathLike[str], **kwargs: Any) -> xr.Dataset:
    """Open a finished result store (``xr.open_zarr``), refusing a half-written one.

    Parameters
    ----------
    path : str or path
        The store written by :func:`write_transform` (``xnwb tfr``).
    **kwargs
        Passed to :func:`xarray.open_zarr`.

    Raises
    ------
    IncompleteResultError
        The store's writing was interrupted (it says how many parts are on disk).
    ResultError
        No store at ``path``.

    Examples
    --------
    >>> open_result("/no/such/out.zarr")
    Traceback (most recent call last):
    ...
    xnwb.exceptions.ResultError: no result store at '/no/such/out.zarr'; write one with `xnwb tfr`
    """
    path = os.fspath(path)
    state = result_state(path)
    if state is None:
        raise ResultError(f"no result store at {path!r}; write one with `xnwb tfr`")
    if "xnwb_params" in state and not state.get("xnwb_complete"):
        done, parts = len(state.get("xnwb_parts_done", [])), state.get("xnwb_parts", "?")
        raise IncompleteResultError(
            f"{path!r} is incomplete ({done} of {parts} parts written): its writing was "
            "interrupted; run the same `xnwb tfr` command again to finish it"
        )
    return xr.open_zarr(path, **kwargs)


# -- helpers ----------------------------------------------------------------------------


def _parts(result: xr.DataArray, itemsize: int, part_bytes: int) -> list[dict[str, slice]]:
    """Regions of whole output chunks, leading dim (channels) first, then time, each
    holding at most ``part_bytes`` of output and of the float64 input it is made from."""
    chunks = result.chunks
    lead = result.dims[0] if result.ndim > 1 else None
    time_chunk, n_times = chunks[-1][0], result.sizes["time"]
    middle = math.prod(result.shape[1:-1]) if result.ndim > 2 else 1
    decim = max(1, int(result.attrs.get("decim", 1) or 1))
    # bytes per (leading index, output sample): the output, or the input behind it
    per = max(middle * itemsize, decim * 8)
    lead_chunk = chunks[0][0] if lead is not None else 1
    n_lead = result.sizes[lead] if lead is not None else 1
    times_per_part = max(1, part_bytes // max(1, per * lead_chunk * time_chunk)) * time_chunk
    leads_per_part = lead_chunk
    if times_per_part >= n_times:  # whole rows fit: take several channel groups at once
        times_per_part = n_times
        groups = max(1, part_bytes // max(1, per * lead_chunk * n_times))
        leads_per_part = groups * lead_chunk
    regions = []
    for c0 in range(0, n_lead, leads_per_part):
        for t0 in range(0, n_times, times_per_part):
            region = {"time": slice(t0, min(n_times, t0 + times_per_part))}
            if lead is not None:
                region = {str(lead): slice(c0, min(n_lead, c0 + leads_per_part)), **region}
            regions.append(region)
    return regions


def _describe(result: xr.DataArray, region: dict[str, slice], times: np.ndarray) -> str:
    t = region["time"]
    text = f"{times[t.start]:.1f}-{times[t.stop - 1]:.1f} s"
    lead = next((d for d in region if d != "time"), None)
    if lead is None:
        return text
    labels = result[lead].values[region[lead]]
    return f"{lead} {labels[0]}-{labels[-1]}, {text}"


def _canonical(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as they read back from a store's JSON attributes."""
    return json.loads(json.dumps(params, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {value!r}")


def _differences(state: dict[str, Any], wanted: dict[str, Any]) -> str:
    had = state.get("xnwb_params", {})
    keys = sorted(k for k in set(had) | set(wanted) if had.get(k) != wanted.get(k))
    return ", ".join(
        f"{k}: {_short(had.get(k))} there, {_short(wanted.get(k))} now" for k in keys[:3]
    )


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > 3:
        return f"{len(value)} values {value[0]:.4g}…{value[-1]:.4g}"
    return repr(value)


def _remove_store(path: str) -> None:
    import shutil

    if os.path.isdir(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def _saved_statistics(path: str) -> xr.Dataset | None:
    import zarr

    try:
        group = zarr.open_group(path, mode="r", path=STATS_GROUP)
    except Exception:  # not written yet
        return None
    if not group.attrs.get("xnwb_complete"):
        return None
    return xr.open_zarr(path, group=STATS_GROUP, consolidated=False).load()


def _storable(result: xr.DataArray) -> xr.DataArray:
    """The result with uniform chunks (Zarr's grid), a plain time coordinate, and coordinates
    Zarr stores portably (variable-length strings rather than fixed-width unicode)."""
    if "time" not in result.dims or result.dims[-1] != "time":
        raise ResultError(f"a result needs 'time' as its last dimension; dims are {result.dims}")
    if not hasattr(result.data, "dask"):
        result = result.chunk()
    uniform = {d: c[0] for d, c in zip(result.dims, result.chunks, strict=True)}
    result = result.chunk(uniform)
    result = result.assign_coords(time=("time", np.asarray(result["time"].values)))
    return _portable_text(result)


def _portable_text(obj: Any) -> Any:
    """Fixed-width unicode coordinates as variable-length strings (Zarr 3 specifies those)."""
    coords = {
        name: (coord.dims, coord.values.astype(object), coord.attrs)
        for name, coord in obj.coords.items()
        if coord.dtype.kind == "U"
    }
    return obj.assign_coords(coords) if coords else obj


def _write_quietly(ds: xr.Dataset, path: str, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        # Zarr 3 flags consolidated metadata and text coordinates as not yet in its spec.
        warnings.filterwarnings("ignore", message=".*Zarr V3 specification", category=Warning)
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        return ds.to_zarr(path, consolidated=False, **kwargs)
