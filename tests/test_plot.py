"""plot_window and browse: they draw, and read only the window asked for."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import xarray as xr

from tests.conftest import counts
from xnwb.plot import browse, plot_window, select_window
from xnwb.source import ByteSource

matplotlib.use("Agg")


@pytest.fixture
def recording(nwb_writer):
    data = counts(60_000, 8)
    path = nwb_writer(
        [
            dict(
                name="ElectricalSeries",
                data=data,
                rate=1000.0,
                region=range(8),
                conversion=1e-6,
                chunks=(1000, 4),
                compression="gzip",
                shuffle=True,
            )
        ]
    )
    return path, data


@pytest.fixture
def fetch_log(monkeypatch):
    log: list[tuple[int, int]] = []
    original = ByteSource.fetch

    def logged(self, starts, lengths, **kwargs):
        log.extend(zip(starts, lengths, strict=True))
        return original(self, starts, lengths, **kwargs)

    monkeypatch.setattr(ByteSource, "fetch", logged)
    return log


def test_plot_window_reads_only_the_window(recording, fetch_log):
    path, data = recording
    ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    fetch_log.clear()
    fig = plot_window(ds, start=10.0, duration=0.5, channels=[100, 101, 102])
    assert len(fig.axes[0].lines) == 3
    assert len(fetch_log) == 1  # one time chunk (10.0-10.5 s) of one channel chunk
    y = fig.axes[0].lines[1].get_ydata()
    np.testing.assert_allclose(
        y - y.mean(), (data[10_000:10_500, 1] - data[10_000:10_500, 1].mean()) * 1e-6
    )


def test_plot_window_of_a_spectrogram():
    t = np.arange(4000) / 200.0
    tfr = xr.DataArray(
        np.abs(np.random.default_rng(0).normal(size=(2, 5, 4000))),
        dims=("channel", "frequency", "time"),
        coords={"channel": [3, 4], "frequency": np.geomspace(5, 50, 5), "time": t},
    )
    fig = plot_window(tfr, 3.0, 2.0, channels=[4])
    assert len(fig.axes) == 2  # one panel and its colour bar
    mesh = fig.axes[0].collections[0]
    assert mesh.get_array().size == 5 * 400


def test_window_errors_are_clear(recording):
    path, _ = recording
    ds = xr.open_dataset(path, engine="nwbzarr")
    with pytest.raises(ValueError, match="outside the recording"):
        select_window(ds, 500.0, 1.0)
    with pytest.raises(ValueError, match="positive"):
        select_window(ds, 1.0, 0.0)
    with pytest.raises(KeyError):
        select_window(ds, 1.0, 1.0, channels=[999])


def test_browse_redraws_only_the_new_window(recording, fetch_log):
    pytest.importorskip("ipywidgets", reason="browse() needs ipywidgets")
    path, _ = recording
    ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    fetch_log.clear()
    viewer = browse(ds, duration=0.5, channels=[100])
    assert len(fetch_log) == 1
    slider = viewer.children[0].children[0]
    slider.value = 30.0
    assert len(fetch_log) == 2  # one more window, one more chunk
    assert fetch_log[-1] != fetch_log[0]


def test_accessor_plots_a_window_of_the_zscored_transform(recording):
    path, _ = recording
    ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    z = ds.ephys.morlet([10.0, 20.0, 40.0], n_cycles=5).zscore(progress=False)
    fig = z.ephys.plot_window(start=10.0, duration=2.0, channels=[103])
    mesh = fig.axes[0].collections[0]
    assert mesh.get_array().size == 3 * 2000
    fig = ds.ephys.plot_window(start=10.0, duration=0.5, channels=[100, 101, 102])
    assert len(fig.axes[0].lines) == 3
