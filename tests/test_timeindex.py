"""The lazy time index: pandas-style label selection, survives slicing and dask."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import xarray as xr

from xnwb.timeindex import TimeIndex


@pytest.fixture
def ds() -> xr.Dataset:
    index = TimeIndex.from_rate(start=-0.5, rate=1000.0, size=10_000, dim="time")
    coords = xr.Coordinates.from_xindex(index)
    return xr.Dataset({"v": ("time", np.arange(10_000.0))}, coords=coords)


def test_values_match_starting_time_plus_arange_over_rate(ds):
    np.testing.assert_allclose(
        ds.time.values, -0.5 + np.arange(10_000) / 1000.0, rtol=0, atol=1e-12
    )


def test_inclusive_label_slice(ds):
    sub = ds.sel(time=slice(1.0, 2.0))
    assert sub.sizes["time"] == 1001
    assert sub.time.values[0] == pytest.approx(1.0) and sub.time.values[-1] == pytest.approx(2.0)
    np.testing.assert_array_equal(sub.v.values, np.arange(1500, 2501))
    assert isinstance(sub.xindexes["time"], TimeIndex)  # still lazy after slicing


def test_slice_between_samples_and_open_ends(ds):
    assert ds.sel(time=slice(1.0005, 1.0025)).v.values.tolist() == [1501, 1502]
    assert ds.sel(time=slice(None, -0.498)).sizes["time"] == 3
    assert ds.sel(time=slice(9.497, None)).sizes["time"] == 3
    assert ds.sel(time=slice(20.0, 30.0)).sizes["time"] == 0
    assert ds.sel(time=slice(0.0, 1.0, 10)).sizes["time"] == 101


def test_exact_scalar_and_array_labels(ds):
    assert ds.sel(time=2.0).v.item() == 2500
    np.testing.assert_array_equal(ds.sel(time=[0.0, 0.001, -0.5]).v.values, [500, 501, 0])
    with pytest.raises(KeyError, match="not found"):
        ds.sel(time=2.0004)
    with pytest.raises(KeyError):
        ds.sel(time=100.0)


def test_nearest(ds):
    assert ds.sel(time=2.0004, method="nearest").v.item() == 2500
    assert ds.sel(time=2.0006, method="nearest").v.item() == 2501
    with pytest.raises(ValueError, match="not supported"):
        ds.sel(time=2.0, method="ffill")


def test_survives_isel_chunk_pickle(ds):
    assert isinstance(ds.isel(time=slice(10, 20)).xindexes["time"], TimeIndex)
    chunked = ds.chunk({"time": 1000})
    assert isinstance(chunked.xindexes["time"], TimeIndex)
    again = pickle.loads(pickle.dumps(chunked))
    assert again.sel(time=slice(0.0, 0.002)).v.values.tolist() == [500, 501, 502]
    assert ds.xindexes["time"].rate == pytest.approx(1000.0)


def test_odd_rates(ds):
    index = TimeIndex.from_rate(start=0.0, rate=50000.00000000001, size=100_000, dim="time")
    d = xr.Dataset(coords=xr.Coordinates.from_xindex(index))
    assert d.sel(time=slice(1.0, 1.0001)).sizes["time"] == 6
    with pytest.raises(ValueError, match="positive"):
        TimeIndex.from_rate(start=0.0, rate=0.0, size=3)


def _series(start: float, size: int, rate: float = 1000.0):

    index = TimeIndex.from_rate(start=start, rate=rate, size=size, dim="time")
    values = np.arange(size, dtype=float) + start * rate  # the sample number as the value
    return xr.DataArray(values, dims="time", coords=xr.Coordinates.from_xindex(index))


def test_overlapping_windows_align_like_pandas():
    """``a - b`` of two windows of one series: the shared samples, as with a pandas index."""

    whole = _series(0.0, 5000)
    early, late = whole.isel(time=slice(0, 3000)), whole.isel(time=slice(2000, 5000))
    diff = late - early
    assert isinstance(diff.xindexes["time"], TimeIndex)
    assert diff.sizes["time"] == 1000 and float(abs(diff).max()) == 0.0
    np.testing.assert_allclose(diff.time.values, whole.time.values[2000:3000])
    a, b = xr.align(early, late, join="outer")
    assert a.sizes["time"] == 5000 and isinstance(a.xindexes["time"], TimeIndex)
    assert np.isnan(a.values[3000:]).all() and np.isnan(b.values[:2000]).all()
    np.testing.assert_array_equal(a.values[:3000], early.values)
    np.testing.assert_array_equal(b.values[2000:], late.values)
    apart = whole.isel(time=slice(0, 10)) + whole.isel(time=slice(100, 110))
    assert apart.sizes["time"] == 0


def test_axes_on_different_grids_do_not_align_silently():

    a = _series(0.0, 100)
    shifted = _series(0.0005, 100)  # half a sample off
    other_rate = _series(0.0, 100, rate=500.0)
    for b in (shifted, other_rate):
        with pytest.raises(ValueError, match="different grids"):
            a - b
    with pytest.raises(ValueError, match="different grids"):
        xr.align(a, shifted, join="outer")


def test_nearest_agrees_with_pandas_before_after_and_between_samples(ds):
    # xarray's RangeIndex sent a label before the start to the last samples (5.498 s -> the
    # end of a 5.5 s .. 6.502 s series) and raised IndexError past the end.
    ref = ds.drop_indexes("time").set_xindex("time")  # the same axis as a pandas index
    rng = np.random.default_rng(0)
    labels = np.concatenate(
        [[-0.6, -0.5004, -0.5006, 9.4994, 9.4996, 9.51, 100.0, -1e9, 1.0005, 2.25],
         rng.uniform(-1.0, 10.0, 200)]
    )  # fmt: skip
    got = ds.sel(time=labels, method="nearest").v.values
    want = ref.sel(time=labels, method="nearest").v.values
    np.testing.assert_array_equal(got, want)
    for label in labels[:10]:
        assert (
            ds.sel(time=label, method="nearest").v.item()
            == ref.sel(time=label, method="nearest").v.item()
        )
    labelled = xr.DataArray(labels[:4], dims="pick")
    assert ds.sel(time=labelled, method="nearest").v.dims == ("pick",)
    assert ds.sel(time=-0.5004, method="nearest", tolerance=0.001).v.item() == 0
    with pytest.raises(KeyError, match="within tolerance"):
        ds.sel(time=-0.6, method="nearest", tolerance=0.001)
    with pytest.raises(KeyError, match="NaN"):
        ds.sel(time=np.nan, method="nearest")
    with pytest.raises(KeyError, match="empty"):
        ds.isel(time=slice(0, 0)).sel(time=1.0, method="nearest")


def test_exact_labels_given_as_a_dataarray_keep_their_dims(ds):
    picks = xr.DataArray([1.0, 2.0], dims="pick")
    assert ds.sel(time=picks).v.dims == ("pick",)
    assert ds.sel(time=picks).v.values.tolist() == [1500, 2500]


def test_label_slices_with_a_negative_step_go_backwards_as_pandas(ds):
    ref = ds.drop_indexes("time").set_xindex("time")
    rev = ref.isel(time=slice(None, None, -1))  # pandas needs a decreasing index for these
    for key in (slice(1.01, 1.0, -1), slice(1.0, None, -2), slice(None, 1.0, -1),
                slice(9.6, 9.0, -3), slice(-0.6, -0.7, -1), slice(1.0, 1.01, -1)):  # fmt: skip
        got = ds.sel(time=key).v.values
        want = rev.sel(time=slice(key.start, key.stop)).v.values[:: -key.step]
        np.testing.assert_array_equal(got, want, err_msg=str(key))
    with pytest.raises(ValueError, match="zero"):
        ds.sel(time=slice(1.0, 2.0, 0))
