"""The whole promise on a pynwb file: open with the engine, morlet, zscore, look at a window."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from tests.conftest import counts

mne = pytest.importorskip("mne")


@pytest.fixture
def recording(nwb_writer):
    rate, n = 500.0, 6000
    t = np.arange(n) / rate
    rng = np.random.default_rng(5)
    burst = (np.abs(t - 7.0) < 0.5) * 800 * np.sin(2 * np.pi * 40 * t)
    data = (rng.normal(0, 200, (n, 4)) + burst[:, None]).astype(np.int16)
    data[:, 1] = counts(n, 1, seed=2)[:, 0]
    path = nwb_writer(
        [
            dict(
                name="ElectricalSeries",
                data=data,
                rate=rate,
                region=[3, 0, 2, 1],
                conversion=2e-6,
                chunks=(700, 4),
                compression="gzip",
                shuffle=True,
            )
        ],
        n_electrodes=4,
    )
    return path, data * 2e-6, rate


@pytest.mark.parametrize("decim", [1, 4])
def test_open_morlet_zscore_window_equals_mne_and_numpy(recording, decim):
    path, volts, rate = recording
    freqs = np.geomspace(8.0, 60.0, 6)
    ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    z = ds.ephys.morlet(freqs, n_cycles=5.0, decim=decim).zscore(progress=False)
    window = z.data.sel(time=slice(6.5, 7.5), channel=100).compute()  # electrode id 100 = column 1

    power = mne.time_frequency.tfr_array_morlet(
        volts.T[None], rate, freqs, n_cycles=5.0, output="power", decim=decim
    )[0]
    expected = (power - power.mean(-1, keepdims=True)) / power.std(-1, keepdims=True)
    times = np.arange(volts.shape[0])[::decim] / rate
    keep = (times >= 6.5 - 1e-9) & (times <= 7.5 + 1e-9)
    reference = expected[1][:, keep]
    got = window.transpose("frequency", "time").values
    np.testing.assert_allclose(got, reference, rtol=1e-10, atol=1e-10 * np.abs(reference).max())
    np.testing.assert_allclose(window.time.values, times[keep])
    # the 40 Hz burst (6.5-7.5 s, electrode 103 = column 0) stands out where it was put
    forty = z.data.sel(channel=103, frequency=freqs[np.argmin(np.abs(freqs - 40))])
    inside = float(forty.sel(time=slice(6.7, 7.3)).mean())
    outside = float(forty.sel(time=slice(2.0, 5.0)).mean())
    assert inside > 2.0 > 0.0 > outside
