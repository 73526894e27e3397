"""Time axes as stored in real files: regular timestamps kept lazy, defects named, not hidden.

Per case: a rate that is not a positive finite number, NaN timestamps and timestamps that
go backwards all open (the samples are fine) with a :class:`TimeAxisWarning` and the
defect in ``attrs["time_axis_defect"]``; transforms then refuse with :class:`TimeAxisError`
instead of computing at a wrong rate.
"""

from __future__ import annotations

import tracemalloc
import warnings

import h5py
import numpy as np
import pytest
import xarray as xr

import xnwb
import xnwb.nwb
from xnwb.exceptions import TimeAxisError, TimeAxisWarning
from xnwb.timeindex import TimeIndex


def _write(nwb_writer, n=20_000, **timing):
    data = np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)
    spec = dict(name="ElectricalSeries", data=data, region=range(2), **timing)
    return nwb_writer([spec], n_electrodes=2), data


def test_pause_plus_one_nan_is_not_called_regular(nwb_writer):
    """The old check saw a NaN gap as 'regular' and gave 333.29 Hz instead of refusing."""
    stamps = np.arange(20_000) / 1000.0
    stamps[10_000:] += 10.0  # a 10 s pause
    stamps[5000] = np.nan
    path, _ = _write(nwb_writer, timestamps=stamps)
    with pytest.warns(TimeAxisWarning, match=r"1 NaN/inf timestamp\(s\) \(first at sample 5000\)"):
        ds = xr.open_dataset(path, engine="nwbzarr")
    assert "NaN" in ds.attrs["time_axis_defect"]
    with pytest.raises(TimeAxisError, match="NaN"):
        ds.ephys.morlet([20.0])


def test_pause_alone_is_irregular(nwb_writer):
    stamps = np.arange(20_000) / 1000.0
    stamps[10_000:] += 10.0
    path, _ = _write(nwb_writer, timestamps=stamps)
    ds = _open_quietly(path)
    np.testing.assert_array_equal(ds.time.values, stamps)
    with pytest.raises(TimeAxisError, match="not regularly sampled"):
        ds.ephys.morlet([20.0])


def test_timestamps_going_backwards(nwb_writer):
    stamps = np.arange(20_000) / 1000.0
    stamps[[700, 900]] = stamps[[600, 100]]
    path, _ = _write(nwb_writer, timestamps=stamps)
    with pytest.warns(
        TimeAxisWarning, match=r"2 step\(s\) back in time \(first at sample 700"
    ):
        ds = xr.open_dataset(path, engine="nwbzarr")
    np.testing.assert_array_equal(ds.time.values, stamps)
    with pytest.raises(TimeAxisError):
        ds.ephys.morlet([20.0])


@pytest.mark.parametrize("rate", [0.0, -5.0, np.nan, np.inf, "fast"])
def test_unusable_rate_opens_with_a_warning_and_no_time_coordinate(nwb_writer, rate):
    path, data = _write(nwb_writer, rate=1000.0)
    with h5py.File(path, "r+") as f:
        f["acquisition/ElectricalSeries/starting_time"].attrs["rate"] = rate
    with pytest.warns(TimeAxisWarning, match="rate"):
        ds = xr.open_dataset(path, engine="nwbzarr")
    assert "time" not in ds.coords and "rate" not in ds.attrs
    assert "rate" in ds.attrs["time_axis_defect"]
    np.testing.assert_array_equal(ds.data.values, data)  # the samples are fine
    with pytest.raises(TimeAxisError, match="defective"):
        ds.ephys.morlet([20.0])
    listing = xnwb.list_series(path)
    assert np.isnan(listing.loc["acquisition/ElectricalSeries", "rate"])


def _open_quietly(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", TimeAxisWarning)
        return xr.open_dataset(path, engine="nwbzarr", **kwargs)


def test_regular_timestamps_become_a_lazy_range_index(nwb_writer):
    stamps = 12.5 + np.arange(20_000) / 1000.0
    path, data = _write(nwb_writer, timestamps=stamps)
    ds = _open_quietly(path)
    assert isinstance(ds.xindexes["time"], TimeIndex)
    np.testing.assert_allclose(ds.time.values, stamps, rtol=0, atol=1e-12)
    assert "regular" in ds.attrs["timestamps"]
    assert xnwb.accessors.sampling_rate(ds) == pytest.approx(1000.0, rel=1e-12)
    window = ds.sel(time=slice(13.0, 13.0099))
    np.testing.assert_array_equal(window.data.values, data[500:510])


def test_regular_timestamps_are_checked_in_bounded_memory(nwb_writer):
    """Millions of timestamps are scanned a piece at a time, never held whole.

    What stays is bounded by the stored chunks read at once (4 MiB sub-chunks here), not by
    the 48 MB of timestamps.
    """
    n = 6_000_000
    stamps = np.arange(n) / 30_000.0
    path = nwb_writer(
        [dict(name="Series", data=np.zeros(n, np.int16), timestamps=stamps, unit="V")]
    )
    del stamps
    tracemalloc.start()
    try:
        ds = _open_quietly(path, chunks={})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(ds.xindexes["time"], TimeIndex)
    assert peak < n * 8 / 2
