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
import xarray as xr
from xarray.core import indexing

from xnwb.array import ReferenceBackendArray
from xnwb.chunking import dask_chunks
from xnwb.codecs import codec_pipeline
from xnwb.exceptions import NotNWBError, NotTimeSeriesError, SeriesNotFoundError
from xnwb.read import read_array
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


class XnwbWarning(UserWarning):
    """A file that departs from the NWB schema in a way xnwb works around."""


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


def pick_series(index: ReferenceIndex, group: str | None) -> str:
    """The series to open: ``group``, or the default one.

    The default is the single ``ElectricalSeries`` directly in ``acquisition``;
    failing that, the file's only series.

    Raises
    ------
    NotTimeSeriesError
        ``group`` exists but is not a time series.
    SeriesNotFoundError
        ``group`` does not exist, or there is no unambiguous default.
    """
    candidates = find_series(index)
    listing = ", ".join(candidates) if candidates else "none"
    if group is not None:
        path = group.strip("/")
        if path in candidates:
            return path
        if path.endswith("/data") and path[: -len("/data")] in candidates:
            return path[: -len("/data")]
        if path in index.groups or path in index.arrays:
            kind = index.attrs(path).get(
                "neurodata_type", "a dataset" if path in index.arrays else "a group"
            )
            raise NotTimeSeriesError(
                f"group {group!r} is not a time series ({kind}); series in this file: {listing}"
            )
        raise SeriesNotFoundError(f"no group {group!r} in the file; series in this file: {listing}")
    acquired = [
        p
        for p in candidates
        if p.count("/") == 1
        and p.startswith("acquisition/")
        and index.groups[p].get("neurodata_type") == "ElectricalSeries"
    ]
    if len(acquired) == 1:
        return acquired[0]
    if len(candidates) == 1:
        return candidates[0]
    why = (
        f"{len(acquired)} ElectricalSeries in acquisition"
        if acquired
        else "no ElectricalSeries in acquisition"
    )
    raise SeriesNotFoundError(
        f"pick a series with group=...: {why}; series in this file: {listing}"
    )


@dataclass
class _Time:
    rate: float | None
    start: float
    timestamps: np.ndarray | None


def _time_axis(index: ReferenceIndex, source: ByteSource, path: str, n: int, load: bool) -> _Time:
    st = index.arrays.get(f"{path}/starting_time")
    if st is not None:
        rate = _scalar(st.attrs.get("rate"))
        if rate is None:
            raise NotTimeSeriesError(f"series {path!r}: starting_time has no 'rate' attribute")
        start = float(_scalar(read_array(st, source, f"{path}/starting_time")))
        return _Time(float(rate), start, None)
    ts_ref = index.arrays[f"{path}/timestamps"]
    if ts_ref.shape[0] != n:
        external = ""
        if f"{path}/external_file" in index.arrays:
            external = " (its samples live in the external files named by 'external_file')"
        raise NotTimeSeriesError(
            f"series {path!r}: timestamps has {ts_ref.shape[0]} entries for {n} samples{external}"
        )
    stamps = read_array(ts_ref, source, f"{path}/timestamps") if load else None
    return _Time(None, float("nan"), None if stamps is None else np.asarray(stamps, np.float64))


def _filters_label(ref: ArrayRef) -> str:
    if ref.problem:
        return "unsupported: " + ref.problem.split("uses the HDF5 ", 1)[-1].split(" filter")[0]
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
        rate = float(_scalar(st.attrs["rate"]))
        info["rate"] = rate
        info["duration"] = n / rate
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
    if region.size and (region.min() < 0 or region.max() >= ids.size):
        warnings.warn(
            f"series {path!r}: the electrodes region points at rows up to {int(region.max())} "
            f"but /{table} has {ids.size} rows; the channel coordinate holds the region "
            "indices and electrode columns are left out",
            XnwbWarning,
            stacklevel=4,
        )
        notes["electrodes_mismatch"] = f"region rows beyond the {ids.size}-row table"
        return region.astype(np.int64), {}, notes

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


def _data_dims(ndim: int) -> tuple[str, ...]:
    if ndim == 1:
        return ("time",)
    if ndim == 2:
        return ("time", "channel")
    return ("time", *("x", "y", "z", "w")[: ndim - 1])


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
    dims = _data_dims(len(data_ref.shape))
    group_attrs = index.groups[path]
    data_attrs = data_ref.attrs

    conversion = float(_scalar(data_attrs.get("conversion", 1.0)))
    offset = float(_scalar(data_attrs.get("offset", 0.0)))
    cc_ref = index.arrays.get(f"{path}/channel_conversion")
    channel_conversion = None
    if cc_ref is not None and len(dims) == 2:
        channel_conversion = np.asarray(
            read_array(cc_ref, source, f"{path}/channel_conversion"), np.float64
        ).reshape(-1)
        if channel_conversion.size != data_ref.shape[1]:
            raise NotTimeSeriesError(
                f"series {path!r}: channel_conversion has {channel_conversion.size} entries "
                f"for {data_ref.shape[1]} channels"
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
        attrs["rate"] = time.rate
        attrs["starting_time"] = time.start
        coords = xr.Coordinates.from_xindex(
            TimeIndex.from_rate(time.start, time.rate, n, dim="time")
        )
    else:
        coords = xr.Coordinates({"time": ("time", time.timestamps)})
    coords["time"].attrs.update(units="s", long_name="time")

    var_attrs = {
        k: v
        for k, v in attrs.items()
        if k in ("unit", "conversion", "offset", "resolution", "rate", "series")
    }
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

    ds = xr.Dataset({"data": variable}, coords=coords, attrs=attrs)
    if len(dims) >= 2:
        channel_ids, columns, notes = _electrodes(index, source, path, data_ref.shape[1])
        ds = ds.assign_coords(channel=("channel", channel_ids), **columns)
        if channel_conversion is not None:
            ds = ds.assign_coords(channel_conversion=("channel", channel_conversion))
        ds.attrs.update(notes)
    return ds


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
