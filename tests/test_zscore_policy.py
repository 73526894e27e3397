"""Z-scores of degenerate channels: zero variance (exact or rounding noise) and NaN samples.

Policy (xnwb.stats module docstring, README): no z-scores exist for a channel without
variance, so they are NaN, not rounding noise divided by rounding noise; NaN samples make
their channel's statistics NaN (the gap stays visible). Both warn, naming the channels.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import xnwb  # noqa: F401  (accessors)
from xnwb.exceptions import DegenerateStatisticsWarning


def _da(columns, channel_ids=None):
    data = np.column_stack(columns)
    ids = channel_ids if channel_ids is not None else np.arange(data.shape[1]) + 10
    return xr.DataArray(
        data, dims=("time", "channel"), coords={"channel": ids}, attrs={"rate": 1000.0}
    )


def _no_warnings(call):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateStatisticsWarning)
        return call()


@pytest.mark.parametrize("value", [0.1, 1 / 3, 0.0, 1e-300, 12345.678])
def test_constant_channel_gives_nan_and_a_warning(value):
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(10_000)
    da = _da([np.full(10_000, value), signal])
    assert da.ephys.stats(progress=False)["std"].values[0] >= 0  # noise or exact zero
    with pytest.warns(DegenerateStatisticsWarning, match=r"zero variance.*channel 10\b") as rec:
        z = da.zscore(progress=False).values
    assert "channel 11" not in str(rec[0].message)
    assert np.isnan(z[:, 0]).all()
    np.testing.assert_allclose(z[:, 1], (signal - signal.mean()) / signal.std(), atol=1e-12)


def test_constant_int16_channel_of_a_real_file(nwb_writer):
    """int16 counts × 0.195e-6 V: a constant channel's float64 statistics keep rounding noise."""
    rng = np.random.default_rng(1)
    data = rng.integers(-2000, 2000, size=(20_000, 4), dtype=np.int16)
    data[:, 1] = 123
    data[:, 3] = 0
    path = nwb_writer(
        [
            dict(
                name="ElectricalSeries",
                data=data,
                rate=1000.0,
                region=range(4),
                conversion=0.195e-6,
                chunks=(1000, 4),
            )
        ],
        n_electrodes=4,
    )
    ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    with pytest.warns(
        DegenerateStatisticsWarning, match=r"2 channel\(s\).*channel 101, channel 103"
    ):
        z = ds.zscore(progress=False).data.values
    assert np.isnan(z[:, [1, 3]]).all()
    volts = data[:, [0, 2]] * 0.195e-6
    ref = (volts - volts.mean(axis=0)) / volts.std(axis=0)
    np.testing.assert_allclose(z[:, [0, 2]], ref, atol=1e-9)


def test_nan_samples_make_their_channel_nan_and_are_counted():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(5000), rng.standard_normal(5000)
    a[[10, 2000]] = np.nan
    a[4999] = np.inf  # an infinite sample makes the moments NaN too, and is counted
    da = _da([a, b]).chunk({"time": 1000})
    with pytest.warns(DegenerateStatisticsWarning, match=r"channel 10 .*|3 NaN or inf") as rec:
        z = da.zscore(progress=False).values
    message = " ".join(str(r.message) for r in rec)
    assert "3 NaN or infinite sample(s)" in message
    assert "channel 10" in message and "channel 11" not in message
    assert np.isnan(z[:, 0]).all()
    np.testing.assert_allclose(z[:, 1], (b - b.mean()) / b.std(), atol=1e-12)


def test_nan_outside_clean_statistics_stays_at_its_sample():
    rng = np.random.default_rng(3)
    a = rng.standard_normal(4000)
    da = _da([a, a[::-1].copy()])
    stats = da.isel(time=slice(0, 2000)).ephys.stats(progress=False)
    a_nan = a.copy()
    a_nan[3000] = np.nan
    z = _no_warnings(lambda: _da([a_nan, a[::-1].copy()]).zscore(stats=stats).values)
    assert np.isnan(z[:, 0]).sum() == 1 and np.isnan(z[3000, 0])


def test_given_statistics_with_zero_std_warn_too():
    da = _da([np.arange(100.0), np.arange(100.0) * 2])
    stats = da.ephys.stats(progress=False)
    stats["std"] = stats["std"].copy(data=np.array([0.0, 1.0]))
    with pytest.warns(DegenerateStatisticsWarning, match="channel 10"):
        z = da.zscore(stats=stats).values
    assert np.isnan(z[:, 0]).all() and np.isfinite(z[:, 1]).all()


def test_zero_power_band_of_a_transform_names_channel_and_frequency():
    rng = np.random.default_rng(4)
    da = _da([np.zeros(4000), rng.standard_normal(4000)])
    tfr = da.ephys.morlet([20.0, 40.0], n_cycles=4)
    with pytest.warns(DegenerateStatisticsWarning, match=r"\(channel=10, frequency=20.0\)"):
        z = tfr.zscore(progress=False).values
    assert np.isnan(z[0]).all() and np.isfinite(z[1]).all()


def test_ordinary_data_give_no_warning():
    rng = np.random.default_rng(5)
    da = _da([rng.standard_normal(3000) + 5.0, rng.standard_normal(3000) * 1e-6])
    z = _no_warnings(lambda: da.zscore(progress=False).values)
    assert np.isfinite(z).all()
