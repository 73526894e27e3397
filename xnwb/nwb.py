"""NWB meaning on top of the reference index: series, time axes, electrodes, units.

Everything here works from a :class:`~xnwb.refs.ReferenceIndex` (attributes and
small inlined datasets) and reads larger arrays (timestamps, table columns) by byte
range; no h5py.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from xarray.core import indexing
from xarray.indexes import PandasIndex

from xnwb.array import ReferenceBackendArray
from xnwb.chunking import dask_chunks
from xnwb.codecs import codec_pipeline
from xnwb.exceptions import (
    ExternalDataError,
    NotNWBError,
    NotTimeSeriesError,
    SeriesNotFoundError,
    TimeAxisWarning,
    UnindexedDataError,
    XnwbWarning,
)
from xnwb.read import read_array, read_selection
from xnwb.refs import ArrayRef, ReferenceIndex
from xnwb.source import ByteSource
from xnwb.timeindex import TimeIndex

__all__ = [
    "XnwbWarning",
    "find_series",
    "pick_series",
    "series_dataset",
    "series_summary",
]

_ELECTRODES_TABLE = "general/extracellular_ephys/electrodes"
_RESERVED_COORDS = {"time", "channel", "data", "frequency"}


# XnwbWarning (a file that departs from the NWB schema in a way xnwb works around) lives
# in xnwb.exceptions with the other warnings; it is re-exported here for old imports.


def _scalar(value: Any) -> Any:
    """MatNWB writes scalar attributes as 1-element arrays; unwrap them."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    while isinstance(value, list | tuple | np.ndarray) and len(value) == 1:
        value = value[0]
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_nwb(index: ReferenceIndex, label: str) -> None:
    """Raise :class:`NotNWBError` unless the file looks like NWB 2.x."""
    root = index.groups.get("", {})
    if "nwb_version" in root or root.get("neurodata_type") == "NWBFile":
        return
    raise NotNWBError(
        f"{label} is HDF5 but not NWB: the root group has no 'nwb_version' attribute "
        f"(top-level names: {index.children('')[:8]})"
    )


def _is_series(index: ReferenceIndex, path: str) -> bool:
    attrs = index.groups.get(path)
    if attrs is None or "neurodata_type" not in attrs:
        return False
    has_data = f"{path}/data" in index.arrays
    has_time = f"{path}/timestamps" in index.arrays or f"{path}/starting_time" in index.arrays
    return has_data and has_time


def find_series(index: ReferenceIndex) -> list[str]:
    """Paths of every NWB time series that can be opened, sorted."""
    return sorted(p for p in index.groups if p and _is_series(index, p))


def skipped_series(index: ReferenceIndex) -> dict[str, str]:
    """Series the index could not take, with the reason: their ``data`` was skipped.

    A group counts when it has a ``neurodata_type``, cannot be opened, and its ``data``
    or ``timestamps`` dataset is in ``index.info["skipped"]`` (compound dtype, external
    raw storage, an HDF5 virtual dataset, an external link to another file, a filter
    HDF5 itself lacks).
    """
    skipped = index.info.get("skipped", {}) or {}
    openable = set(find_series(index))
    out: dict[str, str] = {}
    for name, why in skipped.items():
        parent, _, leaf = name.strip("/").rpartition("/")
        if leaf not in ("data", "timestamps") or parent in openable:
            continue  # (a skipped timestamps beside a starting_time is harmless)
        if "neurodata_type" in index.groups.get(parent, {}):
            text = str(why) if leaf == "data" else f"its timestamps: {why}"
            out[parent] = f"{out[parent]}; {text}" if parent in out else text
    return dict(sorted(out.items()))


def unopenable_series(index: ReferenceIndex) -> dict[str, str]:
    """Every series that cannot be opened, with the reason (skipped or undecodable)."""
    out = skipped_series(index)
    for path in find_series(index):
        problem = index.arrays[f"{path}/data"].problem
        if problem:
            out[path] = problem
    return dict(sorted(out.items()))


def _describe(index: ReferenceIndex, path: str) -> str:
    data = index.arrays[f"{path}/data"]
    kind = index.groups[path].get("neurodata_type", "?")
    return f"group={path!r} ({kind}, shape {tuple(data.shape)})"


def _listing(index: ReferenceIndex, candidates: list[str]) -> str:
    text = "; ".join(_describe(index, p) for p in candidates) if candidates else "none"
    broken = unopenable_series(index)
    if broken:
        text += "; cannot be opened: " + "; ".join(f"{p} ({why})" for p, why in broken.items())
    return text


def pick_series(index: ReferenceIndex, group: str | None) -> str:
    """The series to open: ``group``, or the default one.

    The default is the one ``ElectricalSeries`` directly in ``acquisition``; failing
    that, the one ``ElectricalSeries`` anywhere under ``acquisition`` (inside an
    ``LFP`` or ``FilteredEphys`` container, say); failing that, the file's only series
    that can be opened.

    Raises
    ------
    NotTimeSeriesError
        ``group`` exists but is not a time series.
    UnindexedDataError
        ``group`` is a series whose data the index had to leave out (the message
        says why: compound dtype, external storage, virtual dataset, external link).
    SeriesNotFoundError
        ``group`` does not exist, or there is no unambiguous default; the message
        lists the candidates as ``group=...`` arguments.
    """
    candidates = find_series(index)
    skipped = skipped_series(index)
    if group is not None:
        path = group.strip("/")
        if path in candidates:
            return path
        if path.endswith("/data") and path[: -len("/data")] in candidates:
            return path[: -len("/data")]
        bare = path[: -len("/data")] if path.endswith("/data") else path
        if bare in skipped:
            raise UnindexedDataError(
                f"series {bare!r} cannot be opened: its data was left out of the index "
                f"({skipped[bare]}); series that can be opened: {_listing(index, candidates)}"
            )
        if path in index.groups or path in index.arrays:
            kind = index.attrs(path).get(
                "neurodata_type", "a dataset" if path in index.arrays else "a group"
            )
            raise NotTimeSeriesError(
                f"group {group!r} is not a time series ({kind}); "
                f"series in this file: {_listing(index, candidates)}"
            )
        raise SeriesNotFoundError(
            f"no group {group!r} in the file; series in this file: {_listing(index, candidates)}"
        )
    openable = [p for p in candidates if not index.arrays[f"{p}/data"].problem]

    def electrical(paths: list[str]) -> list[str]:
        return [p for p in paths if index.groups[p].get("neurodata_type") == "ElectricalSeries"]

    acquired = [p for p in electrical(candidates) if p.startswith("acquisition/")]
    direct = [p for p in acquired if p.count("/") == 1]
    for choice in (direct, acquired):
        if len(choice) == 1:
            return choice[0]
    if not acquired and len(openable) == 1:
        return openable[0]
    if not acquired and not openable and len(candidates) == 1:
        return candidates[0]  # opening it raises its own reason (the filter it uses)
    if acquired:
        why = f"{len(acquired)} ElectricalSeries in acquisition"
    elif openable:
        why = f"no ElectricalSeries in acquisition and {len(openable)} series"
    else:
        why = "no series that can be opened"
    # Nothing to open but something that failed: the reason is the news.
    error = UnindexedDataError if not openable and unopenable_series(index) else SeriesNotFoundError
    raise error(f"pick a series with group=...: {why}; candidates: {_listing(index, candidates)}")


@dataclass
class _Time:
    rate: float | None
    start: float
    timestamps: np.ndarray | None
    #: What is wrong with the stored time axis (also put in the attrs), or None.
    defect: str | None = None
    #: Regular timestamps replaced by a range index: their largest deviation from it (s).
    deviation: float | None = None


#: Timestamps are checked for regularity this many at a time (2 MB of float64).
_TIMESTAMP_PIECE = 1 << 18


def _parse_rate(value: Any) -> tuple[float | None, str | None]:
    """The rate in Hz, or ``None`` and why it is unusable."""
    try:
        rate = float(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None, f"starting_time's rate {value!r} is not a number"
    if not np.isfinite(rate) or rate <= 0:
        return None, f"starting_time's rate {rate!r} is not a positive finite number of Hz"
    return rate, None


def _time_axis(index: ReferenceIndex, source: ByteSource, path: str, n: int, load: bool) -> _Time:
    st = index.arrays.get(f"{path}/starting_time")
    if st is not None:
        raw_rate = _scalar(st.attrs.get("rate"))
        if raw_rate is None:
            raise NotTimeSeriesError(f"series {path!r}: starting_time has no 'rate' attribute")
        start = float(_scalar(read_array(st, source, f"{path}/starting_time")))
        rate, defect = _parse_rate(raw_rate)
        return _Time(rate, start, None, defect)
    ts_ref = index.arrays[f"{path}/timestamps"]
    if ts_ref.shape[0] != n:
        external = ""
        if f"{path}/external_file" in index.arrays:
            external = " (its samples live in the external files named by 'external_file')"
        raise NotTimeSeriesError(
            f"series {path!r}: timestamps has {ts_ref.shape[0]} entries for {n} samples{external}"
        )
    if not load:
        return _Time(None, float("nan"), None)
    return _scan_timestamps(ts_ref, source, f"{path}/timestamps", n)


def _scan_timestamps(ref: ArrayRef, source: ByteSource, label: str, n: int) -> _Time:
    """Regular timestamps become a lazy range index; others are loaded and checked.

    Regular means within float rounding of ``t0 + i * step`` (1e-9 of a step plus 16 ulp
    of the largest time), checked a piece at a time: memory stays bounded however long
    the recording, and the coordinate equals the stored values to that rounding.
    """
    if n >= 3:
        t0, tn = (float(v) for v in read_selection(ref, source, (np.array([0, n - 1]),), label))
        step = (tn - t0) / (n - 1)
        if np.isfinite(step) and step > 0:
            tol = 1e-9 * step + 16 * float(np.spacing(max(abs(t0), abs(tn))))
            worst = 0.0
            for lo in range(0, n, _TIMESTAMP_PIECE):
                hi = min(n, lo + _TIMESTAMP_PIECE)
                piece = np.asarray(read_selection(ref, source, (slice(lo, hi),), label), float)
                grid = np.arange(lo, hi, dtype=np.float64)  # in place: two pieces in memory
                grid *= step
                grid += t0
                np.subtract(piece, grid, out=grid)
                deviation = float(np.max(np.abs(grid, out=grid)))
                if not deviation <= tol:  # NaN too
                    break
                worst = max(worst, deviation)
            else:
                return _Time(1.0 / step, t0, None, deviation=worst)
    stamps = np.asarray(read_array(ref, source, label), np.float64)
    return _Time(None, float("nan"), stamps, _timestamp_defect(stamps))


def _timestamp_defect(stamps: np.ndarray) -> str | None:
    """NaN/inf or decreasing timestamps, counted, with the first position of each.

    Scanned a piece at a time: the temporaries stay a few MB however long the series
    (the stamps themselves are the only full-length array).
    """
    n_bad = n_back = 0
    first_bad = first_back = -1
    previous = np.nan  # the last finite time seen before the current piece
    for lo in range(0, stamps.shape[0], _TIMESTAMP_PIECE):
        piece = stamps[lo : lo + _TIMESTAMP_PIECE]
        finite = np.isfinite(piece)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            n_bad += bad.size
            first_bad = lo + int(bad[0]) if first_bad < 0 else first_bad
        where = np.flatnonzero(finite)
        if not where.size:
            continue
        times = piece[where]
        back = np.flatnonzero(np.diff(times) < 0) + 1  # repeated times are fine
        if previous > times[0]:
            back = np.concatenate([[0], back])
        if back.size:
            n_back += back.size
            first_back = lo + int(where[back[0]]) if first_back < 0 else first_back
        previous = float(times[-1])
    problems = []
    if n_bad:
        problems.append(f"{n_bad} NaN/inf timestamp(s) (first at sample {first_bad})")
    if n_back:
        problems.append(f"{n_back} step(s) back in time (first at sample {first_back})")
    return "; ".join(problems) or None


def _filters_label(ref: ArrayRef) -> str:
    if ref.problem:
        return "unsupported: " + ref.problem.split("uses the HDF5 filter ", 1)[-1].split(", ")[0]
    if ref.layout == "inline":
        return "inline"
    if not ref.filters:
        return "none" if ref.layout != "contiguous" else "none (contiguous)"
    return "+".join(type(c).codec_id for c in codec_pipeline(ref.filters))


def series_summary(index: ReferenceIndex, source: ByteSource, path: str) -> dict[str, Any]:
    """One row of :func:`xnwb.list_series`."""
    data = index.arrays[f"{path}/data"]
    n = data.shape[0] if data.shape else 0
    info: dict[str, Any] = {
        "path": path,
        "neurodata_type": index.groups[path].get("neurodata_type"),
        "shape": tuple(data.shape),
        "dtype": str(data.dtype),
    }
    st = index.arrays.get(f"{path}/starting_time")
    if st is not None and st.attrs.get("rate") is not None:
        rate, _ = _parse_rate(_scalar(st.attrs["rate"]))
        info["rate"] = float("nan") if rate is None else rate
        info["duration"] = float("nan") if rate is None else n / rate
    else:
        info["rate"] = "timestamps"
        ts = index.arrays.get(f"{path}/timestamps")
        duration = float("nan")
        if ts is not None and ts.shape and ts.shape[0]:
            ends = read_selection_ends(ts, source, f"{path}/timestamps")
            duration = float(ends[-1] - ends[0])
        info["duration"] = duration
    info["chunks"] = tuple(data.stored_chunks or data.chunks)
    info["compression"] = _filters_label(data)
    info["stored_bytes"] = data.stored_bytes
    return info


def read_selection_ends(ref: ArrayRef, source: ByteSource, path: str) -> np.ndarray:
    """First and last element of a 1-D array, reading at most two chunks."""
    from xnwb.read import read_selection

    last = ref.shape[0] - 1
    return np.asarray(read_selection(ref, source, (np.array([0, last]),), path), dtype=float)


def _electrodes(
    index: ReferenceIndex, source: ByteSource, path: str, n_channels: int
) -> tuple[np.ndarray, dict[str, tuple[str, np.ndarray]], dict[str, Any]]:
    """Channel ids, electrodes-table columns as coordinates, and notes."""
    notes: dict[str, Any] = {}
    region_ref = index.arrays.get(f"{path}/electrodes")
    default = np.arange(n_channels)
    if region_ref is None:
        return default, {}, notes
    region = np.asarray(read_array(region_ref, source, f"{path}/electrodes")).reshape(-1)
    table = str(_scalar(region_ref.attrs.get("table", _ELECTRODES_TABLE))).strip("/")
    if region.size != n_channels:
        warnings.warn(
            f"series {path!r}: the electrodes region has {region.size} entries for "
            f"{n_channels} channels; the channel coordinate is the column position instead "
            "and electrode columns are left out",
            XnwbWarning,
            stacklevel=4,
        )
        notes["electrodes_mismatch"] = f"{region.size} region entries for {n_channels} channels"
        notes["channel_labels"] = "positions"
        return default, {}, notes
    id_ref = index.arrays.get(f"{table}/id")
    if id_ref is None and table not in index.groups and f"{_ELECTRODES_TABLE}/id" in index.arrays:
        # kerchunk writes the object reference as the text "<HDF5 object reference>"; NWB
        # allows one electrodes table, so the region can only point into that one.
        notes["electrodes_table"] = (
            f"the region's table reference {table!r} is unreadable; read as "
            f"/{_ELECTRODES_TABLE}, the one electrodes table NWB allows"
        )
        table = _ELECTRODES_TABLE
        id_ref = index.arrays[f"{table}/id"]
    if id_ref is None:
        # Region indices are row numbers, not electrode ids: never pass them off as ids.
        warnings.warn(
            f"series {path!r}: the electrodes table /{table} is absent or has no id column, "
            "so the electrode ids are unknown; the channel coordinate holds positions "
            "(attrs['channel_labels'] == 'positional')",
            XnwbWarning,
            stacklevel=4,
        )
        notes["electrodes_table"] = f"/{table} is absent or has no id column"
        notes["channel_labels"] = "positional"
        return default, {}, notes
    ids = np.asarray(read_array(id_ref, source, f"{table}/id")).reshape(-1)
    outside = (region < 0) | (region >= ids.size)
    if outside.any():
        # Rows that do not exist: no electrode id is known for sure, so the labels
        # are the column positions, marked as such, never ids that look right.
        bad = [int(v) for v in region[outside][:5]]
        warnings.warn(
            f"series {path!r}: the electrodes region points at rows {bad} of /{table}, "
            f"which has {ids.size} rows (0..{ids.size - 1}); the channel coordinate holds "
            "column positions 0..n-1 instead of electrode ids, and electrode columns are "
            "left out (attrs['channel_labels'] == 'positions')",
            XnwbWarning,
            stacklevel=4,
        )
        notes["electrodes_mismatch"] = (
            f"region rows {bad} outside the {ids.size}-row table /{table}"
        )
        notes["channel_labels"] = "positions"
        return default, {}, notes

    columns: dict[str, tuple[str, np.ndarray]] = {}
    skipped = []
    colnames = index.attrs(table).get("colnames", [])
    if isinstance(colnames, str):
        colnames = [colnames]
    for col in colnames:
        col_ref = index.arrays.get(f"{table}/{col}")
        if col_ref is None or f"{table}/{col}_index" in index.arrays:
            skipped.append(col)  # ragged or not indexed
            continue
        if len(col_ref.shape) != 1 or col_ref.shape[0] != ids.size or col_ref.problem:
            skipped.append(col)
            continue
        values = np.asarray(read_array(col_ref, source, f"{table}/{col}"))[region]
        if values.dtype.kind == "O":
            # Fixed-width strings: object columns break dask's chunks="auto".
            values = values.astype(str)
        name = f"electrodes_{col}" if col in _RESERVED_COORDS else col
        columns[name] = ("channel", values)
    if skipped:
        notes["electrodes_columns_skipped"] = skipped
    return ids[region], columns, notes


_IMAGE_TYPES = {
    "ImageSeries",
    "ImageMaskSeries",
    "OpticalSeries",
    "TwoPhotonSeries",
    "OnePhotonSeries",
}


def _data_dims(ndim: int, neurodata_type: str | None = None) -> tuple[str, ...]:
    """Dimension names from the NWB schema of the series' type.

    Examples
    --------
    >>> _data_dims(3, "SpikeEventSeries")
    ('time', 'channel', 'sample')
    >>> _data_dims(2, "SpikeEventSeries")
    ('time', 'sample')
    >>> _data_dims(3, "TwoPhotonSeries")
    ('time', 'x', 'y')
    """
    if ndim == 1:
        return ("time",)
    if neurodata_type == "SpikeEventSeries":  # (events, [channels,] samples per event)
        return ("time", "sample") if ndim == 2 else ("time", "channel", "sample")
    if neurodata_type == "ElectricalSeries" and ndim == 3:  # (times, channels, samples)
        return ("time", "channel", "sample")
    if neurodata_type in _IMAGE_TYPES:
        last = "r_g_b" if neurodata_type == "OpticalSeries" and ndim == 4 else "z"
        return ("time", "x", "y", last)[:ndim]
    if ndim == 2:
        return ("time", "channel")
    return ("time", *(f"dim_{i}" for i in range(1, ndim)))


_SERIES_ATTRS = ("description", "comments", "continuity", "filtering", "neurodata_type")
_DATA_ATTRS = ("unit", "resolution", "continuity")


def series_dataset(
    index: ReferenceIndex,
    source: ByteSource,
    path: str,
    *,
    mask_and_scale: bool = True,
) -> xr.Dataset:
    """The Dataset of one series: ``data`` with time, channels and NWB attributes.

    ``mask_and_scale=True`` gives physical units:
    ``data × conversion × channel_conversion[channel] + offset``; ``conversion`` and
    ``offset`` go through xarray's CF ``scale_factor``/``add_offset`` decoding.
    """
    data_ref = index.arrays[f"{path}/data"]
    data_ref.check_readable(f"/{path}/data")
    if not data_ref.shape:
        raise NotTimeSeriesError(f"series {path!r}: data is a scalar, not a series")
    n = data_ref.shape[0]
    group_attrs = index.groups[path]
    neurodata_type = _scalar(group_attrs.get("neurodata_type"))
    dims = _data_dims(len(data_ref.shape), neurodata_type)
    data_attrs = data_ref.attrs
    external = _external_files(index, source, path, data_ref)

    conversion = float(_scalar(data_attrs.get("conversion", 1.0)))
    offset = float(_scalar(data_attrs.get("offset", 0.0)))
    cc_ref = index.arrays.get(f"{path}/channel_conversion")
    channel_conversion = None
    if cc_ref is not None and "channel" in dims:
        channel_conversion = np.asarray(
            read_array(cc_ref, source, f"{path}/channel_conversion"), np.float64
        ).reshape(-1)
        n_channels = data_ref.shape[dims.index("channel")]
        if channel_conversion.size != n_channels:
            raise NotTimeSeriesError(
                f"series {path!r}: channel_conversion has {channel_conversion.size} entries "
                f"for {n_channels} channels"
            )

    attrs: dict[str, Any] = {"series": f"/{path}"}
    for key in _SERIES_ATTRS:
        if key in group_attrs:
            attrs[key] = _scalar(group_attrs[key])
    for key in _DATA_ATTRS:
        if key in data_attrs:
            attrs[key] = _scalar(data_attrs[key])
    attrs["conversion"] = conversion
    attrs["offset"] = offset
    file_level = file_attrs(index, source)
    file_level.pop("session_description", None)
    attrs.update(file_level)

    time = _time_axis(index, source, path, n, load=True)
    if time.rate is not None:
        if time.deviation is None:
            attrs["rate"] = time.rate
            attrs["starting_time"] = time.start
        else:  # regular timestamps, kept lazy
            attrs["timestamps"] = (
                f"regular: held as a range index (largest deviation {time.deviation:.3g} s)"
            )
        coords = xr.Coordinates.from_xindex(
            TimeIndex.from_rate(time.start, time.rate, n, dim="time")
        )
    elif time.timestamps is not None:
        # The stamps as the index itself: xr.Coordinates({"time": stamps}) would copy them.
        stamps = pd.Index(time.timestamps, copy=False, name="time")
        coords = xr.Coordinates.from_xindex(PandasIndex(stamps, "time"))
    else:
        coords = xr.Coordinates()
    if "time" in coords:
        coords["time"].attrs.update(units="s", long_name="time")
    if time.defect is not None:
        attrs["time_axis_defect"] = time.defect
        warnings.warn(
            f"series {path!r} has a defective time axis: {time.defect}; it opens, but "
            "time-based selection and transforms need a valid, increasing time axis "
            "(attrs['time_axis_defect'])",
            TimeAxisWarning,
            stacklevel=2,
        )

    var_attrs = {
        k: v
        for k, v in attrs.items()
        if k in ("unit", "conversion", "offset", "resolution", "rate", "series")
    }
    if not mask_and_scale and (
        conversion != 1.0 or offset != 0.0 or channel_conversion is not None
    ):
        # the NWB unit applies once the values are converted: say that they are not
        var_attrs["scaling"] = "not applied"
    backend = ReferenceBackendArray(
        data_ref,
        source,
        f"/{path}/data",
        channel_scale=channel_conversion if mask_and_scale else None,
    )
    encoded_attrs = dict(var_attrs)
    if mask_and_scale and (conversion != 1.0 or offset != 0.0):
        encoded_attrs["scale_factor"] = np.float64(conversion)
        encoded_attrs["add_offset"] = np.float64(offset)
    variable = xr.Variable(dims, indexing.LazilyIndexedArray(backend), encoded_attrs)
    if mask_and_scale:
        variable = xr.conventions.decode_cf_variable(
            "data", variable, mask_and_scale=True, decode_times=False, decode_timedelta=False
        )
    # ``chunks`` is the grid reads decode (the HDF5 chunk, or the virtual sub-chunk of a
    # contiguous dataset); ``preferred_chunks`` (what ``chunks={}`` gives) groups whole ones,
    # sized for dask in the in-memory dtype (float64 once a conversion applies).
    chunks = tuple(min(c, s) for c, s in zip(data_ref.chunks, data_ref.shape, strict=True))
    preferred = dask_chunks(data_ref.shape, data_ref.chunks, variable.dtype.itemsize)
    variable.encoding.update(
        {
            "chunks": chunks,
            "preferred_chunks": dict(zip(dims, preferred, strict=True)),
            "source": source.url,
            "dtype": data_ref.dtype,
        }
    )
    if data_ref.stored_chunks is not None:
        variable.encoding["hdf5_chunks"] = tuple(data_ref.stored_chunks)
    if backend.channel_scale is not None:
        # The values hold channel_conversion too, which one scale_factor cannot undo:
        # xarray's writers would store (v - offset) / conversion as integers (zeros for a
        # 5e-8 gain). They are saved as the float64 they are.
        variable.encoding["dtype"] = np.dtype(np.float64)
        for key in ("scale_factor", "add_offset", "_FillValue", "missing_value"):
            variable.encoding.pop(key, None)

    ds = xr.Dataset({"data": variable}, coords=coords, attrs=attrs)
    if external:
        ds.attrs["external_file"] = external
    if "channel" in dims:
        n_channels = data_ref.shape[dims.index("channel")]
        channel_ids, columns, notes = _electrodes(index, source, path, n_channels)
        ds = ds.assign_coords(channel=("channel", channel_ids), **columns)
        if notes.get("channel_labels") == "positions":
            ds["channel"].attrs["long_name"] = "channel position (electrode ids unknown)"
        if channel_conversion is not None:
            ds = ds.assign_coords(channel_conversion=("channel", channel_conversion))
        ds.attrs.update(notes)
    elif f"{path}/electrodes" in index.arrays:
        # One channel, no channel axis (a 1-D ElectricalSeries, a 2-D SpikeEventSeries):
        # the electrode stays a scalar coordinate, as after ``ds.sel(channel=id)``.
        channel_ids, columns, notes = _electrodes(index, source, path, 1)
        if channel_ids.size == 1:
            scalars = {name: ((), values[0]) for name, (_, values) in columns.items()}
            ds = ds.assign_coords(channel=((), channel_ids[0]), **scalars)
        ds.attrs.update(notes)
    return ds


def _external_files(
    index: ReferenceIndex, source: ByteSource, path: str, data_ref: ArrayRef
) -> list[str]:
    """The ``external_file`` names of an ImageSeries; an error if its data are only there."""
    ref = index.arrays.get(f"{path}/external_file")
    if ref is None:
        return []
    names = [str(v) for v in np.asarray(read_array(ref, source, f"{path}/external_file")).ravel()]
    shown = str(names) if len(names) <= 5 else f"{names[:5]} and {len(names) - 5} more"
    if data_ref.nbytes == 0:
        raise ExternalDataError(
            f"series {path!r} keeps its samples in external files {shown} (its "
            "'external_file'), not in the NWB file; open those with a reader for their "
            "format (e.g. imageio or OpenCV for video), using 'starting_frame' to map "
            "frames to files"
        )
    warnings.warn(
        f"series {path!r} names external files {shown} besides the data stored in the "
        "file; only the stored data are opened (see attrs['external_file'])",
        XnwbWarning,
        stacklevel=4,
    )
    return names


def file_attrs(index: ReferenceIndex, source: ByteSource) -> dict[str, Any]:
    """File-level attributes: NWB version, identifier, session start time."""
    out: dict[str, Any] = {}
    root = index.groups.get("", {})
    if "nwb_version" in root:
        out["nwb_version"] = _scalar(root["nwb_version"])
    for key in ("identifier", "session_start_time", "session_description"):
        ref = index.arrays.get(key)
        if ref is not None and not ref.problem:
            out[key] = str(_scalar(read_array(ref, source, key)))
    return out
