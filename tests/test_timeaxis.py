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


def test_irregular_timestamps_cost_their_own_size_at_open(nwb_writer, monkeypatch):
    """Irregular stamps must be held (they are the index), but only once: no copies.

    The read fetches the stored bytes in batches (2 MiB here) and the defect scan works a
    piece at a time, so the peak is the stamps plus a few MB whatever their length (before:
    the stamps plus all their stored bytes, plus three more stamp-sized temporaries).
    """
    import xnwb.read

    monkeypatch.setattr(xnwb.read, "_FETCH_BATCH_BYTES", 2 * 2**20, raising=False)
    n = 3_000_000
    rng = np.random.default_rng(1)
    stamps = np.cumsum(rng.uniform(0.5e-3, 1.5e-3, n))  # incompressible, irregular
    path = nwb_writer(
        [dict(name="Series", data=np.zeros(n, np.int16), timestamps=stamps, unit="V",
              chunks=(50_000,), compression="gzip")]
    )
    tracemalloc.start()
    try:
        ds = _open_quietly(path, chunks={})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not isinstance(ds.xindexes["time"], TimeIndex)
    np.testing.assert_array_equal(ds.time.values, stamps)  # read over many batches
    # Measured: ~16 MB above the stamps (two 4 MiB sub-chunks in flight, the scan's 2 MB
    # pieces, first-use allocations); before: ~96 MB (all stored bytes + 3 temporaries).
    assert peak - n * 8 < 24 * 2**20, (peak - n * 8) / 2**20


def test_defects_are_counted_across_pieces(monkeypatch):
    """The piecewise scan finds what a whole-array scan finds, at the same positions."""
    monkeypatch.setattr(xnwb.nwb, "_TIMESTAMP_PIECE", 7)
    rng = np.random.default_rng(2)
    for _ in range(200):
        stamps = np.cumsum(rng.uniform(0, 1, rng.integers(1, 60)))
        for k in rng.integers(0, stamps.size, rng.integers(0, 4)):
            stamps[k] = rng.choice([np.nan, np.inf, stamps[k] - 5, stamps[k] + 5])
        finite = np.flatnonzero(np.isfinite(stamps))
        back = finite[1:][np.diff(stamps[finite]) < 0]
        bad = np.flatnonzero(~np.isfinite(stamps))
        expected = []
        if bad.size:
            expected.append(f"{bad.size} NaN/inf timestamp(s) (first at sample {bad[0]})")
        if back.size:
            expected.append(f"{back.size} step(s) back in time (first at sample {back[0]})")
        assert xnwb.nwb._timestamp_defect(stamps) == ("; ".join(expected) or None)
