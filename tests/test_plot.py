"""plot_window: pictures a scientist can read, drawn from only the window asked for."""

from __future__ import annotations

import io
import itertools
import re

import matplotlib
import numpy as np
import pytest
import xarray as xr

from tests.conftest import counts
from xnwb.exceptions import ChannelNotFoundError
from xnwb.plot import MAX_HEIGHT, MAX_POINTS, plot_window, select_window
from xnwb.testing import counted_array, raise_if_dask_computes

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.colors import TwoSlopeNorm


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


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
def offset_recording(nwb_writer):
    """8 channels of normal noise (σ = 50 µV) on very different DC offsets, and a 1-D series."""
    rng = np.random.default_rng(1)
    offsets = np.array([0, 3000, -2000, 800, 12000, -9000, 50, 400])
    data = (rng.normal(0, 50, size=(20_000, 8)) + offsets).astype(np.int16)
    path = nwb_writer(
        [
            dict(name="ElectricalSeries", data=data, rate=1000.0, region=range(8),
                 conversion=1e-6, chunks=(1000, 8)),
            dict(name="Voltage", data=data[:, 0] * 1e-6, rate=1000.0, unit="volts"),
            dict(name="Temperature", data=20 + rng.normal(0, 0.1, 2000), rate=100.0,
                 unit="degC"),
        ]
    )  # fmt: skip
    return path, data


def _spectrogram(n_channels=3, seed=0, scale=None, **attrs):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_channels, 6, 400))
    if scale is not None:
        values = values * np.asarray(scale, float)[:, None, None]
    return xr.DataArray(
        values,
        dims=("channel", "frequency", "time"),
        coords={
            "channel": 10 + np.arange(n_channels),
            "frequency": np.geomspace(10, 100, 6),
            "time": 50.0 + np.arange(400) / 100,
        },
        attrs=attrs,
    )


def _colorbar_axes(fig):
    return [ax for ax in fig.axes if hasattr(ax, "_colorbar")]


def _meshes(fig):
    """The spectrogram meshes, one per panel (not the colour bars')."""
    bars = _colorbar_axes(fig)
    return [ax.collections[0] for ax in fig.axes if ax not in bars]


# -- reading only the window --------------------------------------------------------------


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


def test_many_channels_are_capped_before_reading():
    data = np.random.default_rng(0).normal(size=(2000, 384))
    arr, reads = counted_array(data, chunks=(500, 8))
    da = xr.DataArray(
        arr, dims=("time", "channel"), attrs={"unit": "volts"},
        coords={"time": np.arange(2000) / 1000, "channel": np.arange(384)},
    )  # fmt: skip
    with raise_if_dask_computes(max_computes=1):  # select, then one compute
        fig = plot_window(da, 0.5, 0.5)
    assert len(fig.axes[0].lines) == 16
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [str(i) for i in range(16)]
    assert reads.samples_read(axis=1).sum() == 16  # channels 0-15 only
    note = fig.axes[0].get_title(loc="right")
    assert "16 of 384" in note and "368 left out" in note and "max_channels" in note
    assert fig.get_size_inches()[1] <= MAX_HEIGHT


def test_max_channels_applies_to_an_explicit_list_and_can_be_lifted():
    da = xr.DataArray(
        np.random.default_rng(0).normal(size=(300, 40)), dims=("time", "channel"),
        coords={"time": np.arange(300) / 100, "channel": np.arange(40)},
    )  # fmt: skip
    fig = plot_window(da, 0, 1, channels=list(range(20, 40)))
    assert len(fig.axes[0].lines) == 16
    assert "16 of 20 requested" in fig.axes[0].get_title(loc="right")
    fig = plot_window(da, 0, 1, max_channels=None)
    assert len(fig.axes[0].lines) == 40
    assert fig.axes[0].get_title(loc="right") == ""
    assert fig.get_size_inches()[1] <= MAX_HEIGHT  # 40 traces still fit a bounded figure


# -- traces ---------------------------------------------------------------------------------


def test_traces_sit_on_their_labels_and_do_not_overlap(offset_recording):
    path, _ = offset_recording
    ds = xr.open_dataset(path, engine="nwbzarr")
    fig = plot_window(ds, 5.0, 2.0)
    ax = fig.axes[0]
    ticks = ax.get_yticks()
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(100 + i) for i in range(8)]
    assert len(ax.lines) == 8
    spacing = abs(ticks[0] - ticks[1])
    np.testing.assert_allclose(np.diff(ticks), -spacing)
    for line, tick in zip(ax.lines, ticks, strict=True):
        y = line.get_ydata()
        assert abs(np.median(y) - tick) < 0.01 * spacing  # baseline at its label
        low, high = np.percentile(y - tick, [0.5, 99.5])
        assert -spacing / 2 < low and high < spacing / 2  # stays in its own lane
    sigma = 50e-6  # the noise of every channel, in volts
    assert 4 * sigma < spacing < 8 * sigma  # a robust multiple of it, DC offsets ignored


def test_one_loud_channel_does_not_squash_the_others():
    rng = np.random.default_rng(2)
    values = rng.normal(size=(1000, 6))
    values[:, 2] *= 500
    coords = {"time": np.arange(1000) / 100, "channel": list("abcdef")}
    da = xr.DataArray(values, dims=("time", "channel"), coords=coords)
    ticks = plot_window(da, 0, 10).axes[0].get_yticks()
    assert 4 < abs(ticks[1] - ticks[0]) < 8  # set by the quiet channels' σ = 1


def test_scale_bar_shows_a_round_length_in_si_units(offset_recording):
    path, _ = offset_recording
    ds = xr.open_dataset(path, engine="nwbzarr")
    ax = plot_window(ds, 5.0, 2.0).axes[0]
    texts = [t for t in ax.texts if t.get_gid() == "scale bar"]
    assert len(texts) == 1
    match = re.fullmatch(r"(\d+) (µV|mV)", texts[0].get_text())
    assert match, texts[0].get_text()
    number = int(match[1])
    assert number in (1, 2, 5, 10, 20, 50, 100, 200, 500)
    (bar,) = [c for c in ax.collections if c.get_gid() == "scale bar"]
    (segment,) = bar.get_segments()
    length = abs(segment[1, 1] - segment[0, 1])
    factor = {"µV": 1e-6, "mV": 1e-3}[match[2]]
    assert length == pytest.approx(number * factor)
    spacing = abs(np.diff(ax.get_yticks())[0])
    assert spacing / 2.5 <= length <= spacing  # comparable to the traces


def test_raw_counts_are_labelled_counts(offset_recording):
    path, _ = offset_recording
    ds = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False)
    ax = plot_window(ds, 5.0, 1.0, channels=[100, 101]).axes[0]
    (text,) = [t.get_text() for t in ax.texts if t.get_gid() == "scale bar"]
    assert text.endswith(" counts")


def test_a_1d_series_gets_a_y_axis_in_its_unit(offset_recording):
    path, data = offset_recording
    ds = xr.open_dataset(path, engine="nwbzarr", group="acquisition/Voltage")
    fig = plot_window(ds, 5.0, 1.0)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "Voltage (µV)"  # values of ~±150 µV, not "0.00015 volts"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), data[5000:6000, 0] * 1e-6)
    fig.canvas.draw()
    labels = [float(t.get_text().replace("−", "-")) for t in ax.get_yticklabels()]
    np.testing.assert_allclose(labels, ax.get_yticks() * 1e6, atol=1e-6)
    temperature = xr.open_dataset(path, engine="nwbzarr", group="acquisition/Temperature")
    assert plot_window(temperature, 1.0, 5.0).axes[0].get_ylabel() == "Temperature (degC)"


def test_channels_accepts_one_label():
    da = xr.DataArray(np.random.default_rng(0).normal(size=(200, 3)), dims=("time", "channel"),
                      coords={"time": np.arange(200) / 100, "channel": [3, 4, 5]})  # fmt: skip
    one = plot_window(da, 0.0, 1.0, channels=3).axes[0]
    listed = plot_window(da, 0.0, 1.0, channels=[3]).axes[0]
    assert len(one.lines) == 1
    np.testing.assert_array_equal(one.lines[0].get_ydata(), listed.lines[0].get_ydata())
    assert [t.get_text() for t in one.get_yticklabels()] == ["3"]


def test_unknown_channels_are_named(recording):
    path, _ = recording
    ds = xr.open_dataset(path, engine="nwbzarr")
    with pytest.raises(ChannelNotFoundError, match=r"\[999\].*100, 101") as info:
        plot_window(ds, 1.0, 1.0, channels=[100, 999])
    assert isinstance(info.value, KeyError)
    assert "positions" in str(info.value)  # the way out: labels are electrode ids
    with pytest.raises(ChannelNotFoundError, match="3"):
        plot_window(ds, 1.0, 1.0, channels=3)


def test_window_errors_are_clear(recording):
    path, _ = recording
    ds = xr.open_dataset(path, engine="nwbzarr")
    with pytest.raises(ValueError, match="outside the recording"):
        select_window(ds, 500.0, 1.0)
    with pytest.raises(ValueError, match="positive"):
        select_window(ds, 1.0, 0.0)
    with pytest.raises(KeyError, match="999"):
        select_window(ds, 1.0, 1.0, channels=[999])
    with pytest.raises(ValueError, match="no samples"):
        plot_window(ds, 1.0001, 0.0005)


def test_traces_draw_into_a_given_axes_and_keep_absolute_time(recording):
    path, _ = recording
    ds = xr.open_dataset(path, engine="nwbzarr")
    fig, ax = plt.subplots()
    assert plot_window(ds, 42.0, 0.5, channels=[100, 101], ax=ax) is fig
    assert len(ax.lines) == 2
    assert ax.get_xlim() == pytest.approx((42.0, 42.499))
    assert ax.get_xlabel() == "time (s)"
    fig.canvas.draw()
    assert not ax.xaxis.get_major_formatter().get_useOffset()
    assert ax.xaxis.get_offset_text().get_text() == ""
    assert any(t.get_text().startswith("42") for t in ax.get_xticklabels())


def test_complex_traces_are_drawn_as_power():
    values = np.exp(1j * np.arange(100.0))[:, None] * [1.0, 2.0]
    da = xr.DataArray(values, dims=("time", "channel"), attrs={"unit": "volts"},
                      coords={"time": np.arange(100) / 100, "channel": [0, 1]})  # fmt: skip
    ax = plot_window(da, 0.0, 1.0).axes[0]
    assert "power" in ax.get_ylabel()
    np.testing.assert_allclose(ax.lines[1].get_ydata() - ax.get_yticks()[1], 0, atol=1e-9)
    (text,) = [t.get_text() for t in ax.texts if t.get_gid() == "scale bar"]
    assert text.endswith("V²")


def test_long_windows_are_drawn_as_their_envelope():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(30_000, 2))
    values[12_345, 1] = 40.0  # a spike that must stay visible
    da = xr.DataArray(values, dims=("time", "channel"),
                      coords={"time": np.arange(30_000) / 30_000, "channel": [0, 1]})  # fmt: skip
    ax = plot_window(da, 0.0, 1.0).axes[0]
    ticks = ax.get_yticks()
    for i, (line, tick) in enumerate(zip(ax.lines, ticks, strict=True)):
        y = line.get_ydata() - tick
        assert len(y) <= 2 * MAX_POINTS
        centred = values[:, i] - np.median(values[:, i])
        assert y.max() == pytest.approx(centred.max()) and y.min() == pytest.approx(centred.min())
        assert np.all(np.diff(line.get_xdata()) >= 0)  # still in time order
    assert ax.lines[1].get_xdata()[np.argmax(ax.lines[1].get_ydata())] == pytest.approx(
        12_345 / 30_000
    )


# -- layout survives savefig ----------------------------------------------------------------


def _texts_to_check(fig):
    texts = []
    for ax in fig.axes:
        texts += [ax.xaxis.label, ax.yaxis.label, ax.title, ax._left_title, ax._right_title]
        texts += ax.texts
    if fig._supylabel is not None:
        texts.append(fig._supylabel)
    return [t for t in texts if t.get_visible() and t.get_text()]


def _assert_inside_png(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches=None, dpi=fig.dpi)
    renderer = fig.canvas.get_renderer()
    width, height = fig.canvas.get_width_height()
    texts = _texts_to_check(fig)
    assert any(t.get_text() == "time (s)" for t in texts)
    for text in texts:
        box = text.get_window_extent(renderer)
        assert box.x0 >= 0 and box.y0 >= 0, text.get_text()
        assert box.x1 <= width and box.y1 <= height, text.get_text()
    buffer.seek(0)
    pixels = plt.imread(buffer)
    assert pixels.shape[:2] == (height, width)
    assert pixels[..., :3].std() > 0.05  # not blank
    assert (pixels[..., :3].min(axis=-1) < 0.2).mean() > 0.005  # some dark ink: lines, text
    return texts, renderer


@pytest.mark.parametrize("channels", [[100], [100, 101, 102, 103, 104, 105, 106, 107]])
def test_saved_traces_keep_their_labels(offset_recording, channels):
    path, _ = offset_recording
    ds = xr.open_dataset(path, engine="nwbzarr")
    texts, _ = _assert_inside_png(plot_window(ds, 5.0, 2.0, channels=channels))
    assert {"time (s)", "channel"} <= {t.get_text() for t in texts}


def test_saved_1d_series_keeps_its_labels(offset_recording):
    path, _ = offset_recording
    one_d = xr.open_dataset(path, engine="nwbzarr", group="acquisition/Voltage")
    texts, _ = _assert_inside_png(plot_window(one_d, 5.0, 2.0))
    assert {"time (s)", "Voltage (µV)"} <= {t.get_text() for t in texts}


@pytest.mark.parametrize("n_channels", [3, 16])
def test_saved_spectrograms_keep_their_labels_and_titles_clear(n_channels):
    fig = plot_window(_spectrogram(n_channels, zscore_of="power"), 50.0, 3.0)
    texts, renderer = _assert_inside_png(fig)
    assert {"time (s)", "frequency (Hz)", "z-score of power"} <= {t.get_text() for t in texts}
    panels = [ax for ax in fig.axes if ax not in _colorbar_axes(fig)]
    assert len(panels) == n_channels
    for i, (above, below) in enumerate(itertools.pairwise(panels)):
        (title,) = [t for t in (below.title, below._left_title) if t.get_text()]
        assert title.get_text() == f"channel {11 + i}"
        top_of_title = title.get_window_extent(renderer).y1
        assert top_of_title < above.get_window_extent(renderer).y0  # below the panel above
        assert top_of_title <= above.get_tightbbox(renderer).y0 + 0.5  # and its tick labels
        assert not any(t.get_visible() and t.get_text() for t in above.get_xticklabels())
    assert fig.get_size_inches()[1] <= MAX_HEIGHT


# -- spectrograms ---------------------------------------------------------------------------


def test_plot_window_of_a_spectrogram():
    t = np.arange(4000) / 200.0
    tfr = xr.DataArray(
        np.abs(np.random.default_rng(0).normal(size=(2, 5, 4000))),
        dims=("channel", "frequency", "time"),
        coords={"channel": [3, 4], "frequency": np.geomspace(5, 50, 5), "time": t},
    )
    fig = plot_window(tfr, 3.0, 2.0, channels=[4])
    assert len(fig.axes) == 2  # one panel and its colour bar
    ax = fig.axes[0]
    mesh = ax.collections[0]
    assert mesh.get_array().size == 5 * 400
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "frequency (Hz)"
    lowest, highest = ax.get_ylim()
    assert lowest < 5 < 50 < highest and lowest > 0  # cells centred on their frequencies
    assert ax.get_title(loc="left") == "channel 4"


def test_spectrogram_frequencies_in_any_order_are_drawn_ascending():
    """A transform keeps its frequencies in the order given (``--freqs 10,100,20``); the
    bands are drawn between neighbouring frequencies, so they are sorted first."""
    t = np.arange(400) / 200.0
    values = np.random.default_rng(1).normal(size=(1, 3, 400)) ** 2
    coords = {"channel": [0], "time": t}
    given = xr.DataArray(values, dims=("channel", "frequency", "time"),
                         coords={**coords, "frequency": [10.0, 100.0, 20.0]})
    (mesh,) = _meshes(plot_window(given, 0.0, 2.0))
    shown = mesh.get_array().reshape(3, -1)
    np.testing.assert_allclose(shown, values[0, [0, 2, 1]])
    edges = mesh.get_coordinates()[:, 0, 1]
    assert np.all(np.diff(edges) > 0)
    assert edges[0] < 10 < edges[1] < 20 < edges[2] < 100 < edges[3]
    twice = given.assign_coords(frequency=[10.0, 20.0, 10.0])
    with pytest.raises(ValueError, match="distinct frequencies"):
        plot_window(twice, 0.0, 2.0)


def test_channel_panels_share_one_colour_scale():
    tfr = _spectrogram(3, scale=[1, 10, 100], output="power")
    fig = plot_window(tfr, 50.0, 3.0)
    limits = {(m.norm.vmin, m.norm.vmax) for m in _meshes(fig)}
    assert len(limits) == 1  # one scale for all panels
    assert len(_colorbar_axes(fig)) == 1
    fig = plot_window(tfr, 50.0, 3.0, share_scale=False)
    limits = [(m.norm.vmin, m.norm.vmax) for m in _meshes(fig)]
    assert len(set(limits)) == 3
    assert limits[2][1] > 50 * limits[0][1]  # each panel scaled to its own channel
    assert len(_colorbar_axes(fig)) == 3


def test_robust_colour_limits_ignore_a_hot_pixel_and_yield_to_vmin_vmax():
    tfr = _spectrogram(2, output="power")
    tfr[0, 3, 100] = 1e6
    mesh = _meshes(plot_window(tfr, 50.0, 3.0))[0]
    assert mesh.norm.vmax < 10  # the normal values (σ = 1) keep the colours
    assert mesh.norm.vmin > -10
    mesh = _meshes(plot_window(tfr, 50.0, 3.0, vmin=-1.0, vmax=2.5))[1]
    assert (mesh.norm.vmin, mesh.norm.vmax) == (-1.0, 2.5)


def test_zscores_are_diverging_and_centred(recording):
    path, _ = recording
    ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    z = ds.ephys.morlet(np.geomspace(10, 100, 6), n_cycles=5, decim=10).zscore(progress=False)
    fig = plot_window(z, 10.0, 2.0, channels=[100, 101, 102])
    meshes = _meshes(fig)
    assert len(meshes) == 3
    for mesh in meshes:
        assert isinstance(mesh.norm, TwoSlopeNorm)
        assert mesh.norm.vcenter == 0
        assert mesh.norm.vmin == pytest.approx(-mesh.norm.vmax)
        assert mesh.cmap.name == "RdBu_r"
    (bar,) = _colorbar_axes(fig)
    assert bar.get_ylabel() == "z-score of power"
    fig = plot_window(z, 10.0, 2.0, channels=[100], vmin=-1, vmax=4)
    norm = _meshes(fig)[0].norm
    assert isinstance(norm, TwoSlopeNorm) and (norm.vmin, norm.vcenter, norm.vmax) == (-1, 0, 4)


def test_complex_input_is_shown_as_power(recording):
    path, _ = recording
    ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    tfr = ds.ephys.morlet([10.0, 20.0, 40.0], n_cycles=5)
    fig = plot_window(tfr, 10.0, 0.5, channels=[101])
    (mesh,) = _meshes(fig)
    expected = np.abs(tfr["data"].sel(channel=101, time=slice(10.0, 10.4995)).values) ** 2
    np.testing.assert_allclose(mesh.get_array().reshape(expected.shape), expected)
    (bar,) = _colorbar_axes(fig)
    assert re.fullmatch(r"power \|c\|² \((µV|mV|V)²\)", bar.get_ylabel()), bar.get_ylabel()
    assert mesh.cmap.name == "viridis" and not isinstance(mesh.norm, TwoSlopeNorm)


def test_long_spectrogram_windows_are_binned_for_display():
    tfr = _spectrogram(1, output="power").isel(time=0)
    tfr = tfr.expand_dims(time=np.arange(20_000) / 2000).transpose("channel", "frequency", "time")
    tfr = tfr.copy(data=np.random.default_rng(4).normal(size=tfr.shape))
    (mesh,) = _meshes(plot_window(tfr, 0.0, 10.0))
    shown = mesh.get_array().reshape(6, -1)
    assert shown.shape[1] == MAX_POINTS
    q = 20_000 // MAX_POINTS
    np.testing.assert_allclose(shown, tfr.values[0].reshape(6, -1, q).mean(-1))
    assert mesh.axes.get_xlim() == pytest.approx((0.0, 19_999 / 2000))


def test_spectrogram_axes_must_match_the_panels():
    tfr = _spectrogram(3)
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="1 axes for 3 spectrogram panels"):
        plot_window(tfr, 50.0, 1.0, ax=ax)
    fig, axes = plt.subplots(3, 1)
    assert plot_window(tfr, 50.0, 1.0, ax=axes) is fig
    assert all(len(ax.collections) == 1 for ax in axes)
    fig, ax = plt.subplots()
    assert plot_window(tfr, 50.0, 1.0, channels=11, ax=ax) is fig
    assert ax.get_title(loc="left") == "channel 11"


def test_accessor_plots_a_window_of_the_zscored_transform(recording):
    path, _ = recording
    ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    z = ds.ephys.morlet([10.0, 20.0, 40.0], n_cycles=5).zscore(progress=False)
    fig = z.ephys.plot_window(start=10.0, duration=2.0, channels=[103])
    mesh = fig.axes[0].collections[0]
    assert mesh.get_array().size == 3 * 2000
    fig = ds.ephys.plot_window(start=10.0, duration=0.5, channels=[100, 101, 102])
    assert len(fig.axes[0].lines) == 3


# -- real data ------------------------------------------------------------------------------


def test_real_lfp_traces_and_spectrogram(realdata):
    lfp = np.load(realdata / "other" / "neurodsp_sample_data_2_rat_hc_LFP_1kHz.npy")
    n = 20_000
    data = np.stack([lfp[i * 3000 : i * 3000 + n] for i in range(4)], axis=1) * 1e-6
    data = data + np.array([0.0, 5e-3, -5e-3, 1e-2])  # electrode DC offsets
    coords = {"time": 100 + np.arange(n) / 1000, "channel": [1, 2, 3, 4]}
    da = xr.DataArray(data, dims=("time", "channel"), attrs={"unit": "volts"}, coords=coords)
    fig = plot_window(da, 105.0, 2.0)
    ax = fig.axes[0]
    spacing = abs(np.diff(ax.get_yticks())[0])
    for line, tick in zip(ax.lines, ax.get_yticks(), strict=True):
        assert abs(np.median(line.get_ydata()) - tick) < 0.01 * spacing
        assert np.percentile(np.abs(line.get_ydata() - tick), 95) < spacing / 2
    _assert_inside_png(fig)
    ds = xr.Dataset({"data": da.chunk({"time": 5000})})
    tfr = ds.ephys.morlet(np.geomspace(4, 100, 12), n_cycles=5, decim=10)
    fig = plot_window(tfr, 105.0, 2.0, channels=[1, 2])
    texts, _ = _assert_inside_png(fig)
    assert any(t.get_text().startswith("power |c|²") for t in texts)


def test_a_window_of_a_long_lazy_time_axis_never_builds_its_pandas_index(monkeypatch):
    """``DataArray.indexes`` turns a 36M-sample lazy time index into pandas (~0.25 s a call)."""
    import dask.array as dsa

    from xnwb.timeindex import TimeIndex

    index = TimeIndex.from_rate(start=100.0, rate=30_000.0, size=36_000_000, dim="time")
    rec = xr.DataArray(
        dsa.random.default_rng(0).standard_normal((36_000_000, 4), chunks=(300_000, 4)) * 1e-4,
        dims=("time", "channel"),
        coords=xr.Coordinates.from_xindex(index),
        attrs={"unit": "volts"},
    ).assign_coords(channel=[7, 8, 9, 10])

    def refuse(self):
        raise AssertionError("the lazy time index was turned into a pandas index")

    monkeypatch.setattr(TimeIndex, "to_pandas_index", refuse)
    fig = plot_window(rec, 700.0, 1.0, channels=[8, 9])
    assert len(fig.axes[0].lines) >= 2
    assert fig.axes[0].get_xlim()[0] == pytest.approx(700.0, abs=1e-3)
    with pytest.raises(ValueError, match="outside the recording"):
        select_window(rec, 5000.0, 1.0)


def test_outer_traces_are_not_cut_off_by_the_axes():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(2000, 4))
    values[800:900, 0] += 40.0  # a burst far beyond the robust spacing, top trace
    values[1200:1300, 3] -= 40.0  # and on the bottom trace
    window = xr.DataArray(
        values,
        dims=("time", "channel"),
        coords={"time": np.arange(2000) / 1000.0, "channel": [0, 1, 2, 3]},
        attrs={"unit": "volts"},
    )
    fig = plot_window(window, 0.0, 2.0)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    for line in ax.get_lines():
        y = np.asarray(line.get_ydata(), float)
        y = y[np.isfinite(y)]
        if y.size:
            assert low <= y.min() and y.max() <= high
    plt.close(fig)


def test_stored_values_are_never_labelled_in_the_series_unit(nwb_writer):
    # Opened with mask_and_scale=False, values stored as floats with a conversion, or as
    # integers with only a channel_conversion, are not in volts: a scale bar in kV was
    # shown for 200 µV.
    rng = np.random.default_rng(4)
    floats = (rng.normal(0, 500, size=(4000, 2))).astype(np.float32)  # x 2e-7 -> volts
    ints = rng.normal(0, 1000, size=(4000, 2)).astype(np.int16)
    path = nwb_writer(
        [
            dict(name="ElectricalSeries", data=floats, rate=1000.0, region=range(2),
                 conversion=2e-7, chunks=(1000, 2)),
            dict(name="Gained", data=ints, rate=1000.0, region=range(2), chunks=(1000, 2),
                 channel_conversion=np.array([5e-8, 5e-8])),
        ]
    )  # fmt: skip
    for group, unit in (("acquisition/ElectricalSeries", "stored units"),
                        ("acquisition/Gained", "counts")):  # fmt: skip
        raw = xr.open_dataset(path, engine="nwbzarr", group=group, mask_and_scale=False)
        assert raw.data.attrs["scaling"] == "not applied"
        ax = plot_window(raw, 1.0, 1.0).axes[0]
        (text,) = [t.get_text() for t in ax.texts if t.get_gid() == "scale bar"]
        assert text.endswith(f" {unit}"), text
        power = raw.ephys.morlet([40.0], n_cycles=5.0, output="power")
        assert power.data.attrs["unit"] == f"{unit}**2"
        (bar,) = _colorbar_axes(plot_window(power.isel(channel=[0]), 1.0, 1.0))
        # "counts²", "(stored units)²": never "power ((counts)²)"
        squared = "counts²" if unit == "counts" else f"({unit})²"
        assert squared in bar.get_ylabel() and "((" not in bar.get_ylabel()
        scaled = xr.open_dataset(path, engine="nwbzarr", group=group)
        assert "scaling" not in scaled.data.attrs
        ax = plot_window(scaled, 1.0, 1.0).axes[0]
        (text,) = [t.get_text() for t in ax.texts if t.get_gid() == "scale bar"]
        assert text.endswith("V"), text
