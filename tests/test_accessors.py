"""The ephys/nwb/zscore accessors on Datasets shaped like the nwbzarr backend's, vs MNE."""

from __future__ import annotations

import warnings

import dask.array as da
import mne
import numpy as np
import pytest
import xarray as xr
from mne.time_frequency import tfr_array_morlet

import xnwb  # noqa: F401  (registers the accessors)
from xnwb import tfr
from xnwb.accessors import EphysAccessor, ZscoreAccessor, sampling_rate, time_window
from xnwb.exceptions import StatisticsMismatchError, TFRParameterError, TimeAxisError
from xnwb.testing import counted_array, raise_if_dask_computes
from xnwb.timeindex import TimeIndex

RATE = 200.0
N_TIMES, N_CHANNELS = 2400, 3  # 12 s
START = 5.0  # starting_time of the series
FREQS = np.array([5.0, 11.0, 40.0])
TOL = 1e-10


def signal(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(N_TIMES) / RATE
    burst = np.where((t > 6) & (t < 8), np.sin(2 * np.pi * 11.0 * t), 0.0)
    return burst[:, None] * [1.0, 2.0, 0.5] + 0.3 * rng.standard_normal((N_TIMES, N_CHANNELS))


X = signal()
TIMES = START + np.arange(N_TIMES) / RATE


def recording(x: np.ndarray = X, *, time: str = "range", chunks: int | None = None) -> xr.Dataset:
    """A Dataset like ``open_dataset(..., engine="nwbzarr")`` gives: data (time, channel)."""
    attrs = {"unit": "volts", "description": "test series", "rate": RATE, "starting_time": START}
    coords = xr.Coordinates(
        {"channel": [100, 101, 102], "location": ("channel", ["CA1", "CA1", "CA3"])}
    )
    if time == "range":
        index = TimeIndex.from_rate(start=START, rate=RATE, size=x.shape[0], dim="time")
        coords = coords.assign(xr.Coordinates.from_xindex(index))
    elif time == "values":
        coords = coords.assign(time=TIMES[: x.shape[0]])
    data = xr.Variable(("time", "channel"), x, attrs=attrs)
    ds = xr.Dataset({"data": data}, coords=coords, attrs={"session": "test"})
    return ds.chunk({"time": chunks}) if chunks else ds


def mne_power_zscore(x: np.ndarray, baseline=None, decim: int = 1, n_cycles=7.0) -> np.ndarray:
    """MNE's Morlet power then MNE's z-score rescale, shape (channel, frequency, time)."""
    power = tfr_array_morlet(x.T[None], RATE, FREQS, n_cycles, decim=decim, output="power")[0]
    times = TIMES[::decim]
    window = (None, None) if baseline is None else baseline  # MNE: None means "do not rescale"
    return mne.baseline.rescale(power, times, window, mode="zscore", copy=True, verbose=False)


def assert_close(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err <= TOL, f"max error {err:.3g} of the reference"


# -- registration and the chain of the contract -------------------------------------------------


def test_accessors_are_registered_under_every_name():
    ds = recording()
    for obj in (ds, ds["data"]):
        assert isinstance(obj.ephys, EphysAccessor) and isinstance(obj.nwb, EphysAccessor)
        assert isinstance(obj.zscore, ZscoreAccessor) and callable(obj.zscore)


@pytest.mark.parametrize("time", ["range", "values", "attrs"])
@pytest.mark.parametrize("chunks", [None, 500, 97])
def test_morlet_zscore_chain_equals_mne(time, chunks):
    ds = recording(time=time, chunks=chunks)
    z = ds.ephys.morlet(FREQS).zscore(progress=False)
    assert isinstance(z, xr.Dataset) and z.data.dims == ("channel", "frequency", "time")
    assert_close(z.data.values, mne_power_zscore(X))


@pytest.mark.parametrize("decim", [1, 3, 8])
@pytest.mark.parametrize("baseline", [None, (6.0, 8.5), (None, 7.0), (12.0, None)])
def test_zscore_with_baseline_equals_mne_rescale(decim, baseline):
    ds = recording(chunks=450)
    tfr_ds = ds.nwb.morlet(FREQS, n_cycles=[3.0, 5.0, 7.0], decim=decim, output="power")
    z = tfr_ds.zscore(baseline=baseline, progress=False)
    assert_close(z.data.values, mne_power_zscore(X, baseline, decim, np.array([3.0, 5.0, 7.0])))


def test_complex_and_power_inputs_give_the_same_zscore():
    ds = recording(chunks=600)
    from_complex = ds.ephys.morlet(FREQS, decim=2).zscore(progress=False)
    from_power = ds.ephys.morlet(FREQS, decim=2, output="power").zscore(progress=False)
    assert_close(from_complex.data.values, from_power.data.values)


def test_zscore_of_the_raw_signal_is_per_channel():
    da_ = recording(chunks=700)["data"]
    z = da_.zscore(progress=False)
    assert z.dims == ("time", "channel")
    assert_close(z.values, (X - X.mean(0)) / X.std(0))


# -- the result's labels ----------------------------------------------------------------------


@pytest.mark.parametrize("decim", [1, 7])
def test_morlet_result_dims_coords_and_attrs(decim):
    ds = recording(chunks=500)
    out = ds.ephys.morlet(FREQS, n_cycles=5.0, decim=decim, output="amplitude")
    tfr_ = out["data"]
    assert tfr_.dims == ("channel", "frequency", "time")
    np.testing.assert_array_equal(tfr_.frequency.values, FREQS)
    assert tfr_.frequency.attrs["units"] == "Hz"
    np.testing.assert_allclose(tfr_.time.values, TIMES[::decim], rtol=0, atol=1e-12)
    assert isinstance(tfr_.xindexes["time"], TimeIndex)  # still lazy, still pandas-like .sel
    assert list(tfr_.location.values) == ["CA1", "CA1", "CA3"]
    assert tfr_.attrs["rate"] == RATE / decim and tfr_.attrs["decim"] == decim
    assert tfr_.attrs["wavelet"] == "morlet" and tfr_.attrs["output"] == "amplitude"
    assert tfr_.attrs["unit"] == "volts" and out.attrs == {"session": "test"}
    np.testing.assert_array_equal(tfr_.attrs["n_cycles"], [5.0, 5.0, 5.0])
    ref = tfr_array_morlet(X.T[None], RATE, FREQS, 5.0, decim=decim, verbose=False)[0]
    assert_close(tfr_.values, np.abs(ref))
    # label selection on the decimated axis
    assert tfr_.sel(time=slice(7.0, 8.0)).time.values[0] >= 7.0


def test_dataarray_in_dataarray_out_and_input_untouched():
    ds = recording(chunks=500)
    before = ds.copy(deep=True)
    out = ds["data"].ephys.morlet(FREQS, decim=4)
    assert isinstance(out, xr.DataArray) and out.name == "data"
    z = out.zscore(progress=False)
    assert isinstance(z, xr.DataArray) and z.attrs["units"] == "1" and "unit" not in z.attrs
    xr.testing.assert_identical(ds, before)


def test_one_dimensional_series_and_time_not_first():
    one = recording(chunks=500)["data"].isel(channel=0)
    assert one.ephys.morlet(FREQS).dims == ("frequency", "time")
    transposed = recording(chunks=500)["data"].transpose("channel", "time")
    assert_close(
        transposed.ephys.morlet(FREQS, decim=2).values,
        recording(chunks=500)["data"].ephys.morlet(FREQS, decim=2).values,
    )


def test_cwt_accessor_matches_the_array_function():
    ds = recording(chunks=300)
    got = ds.ephys.cwt(FREQS, "cmor1.5-1.0", decim=2)
    ref = tfr.cwt(X.T, RATE, FREQS, "cmor1.5-1.0", decim=2)
    assert got.data.attrs["wavelet"] == "cmor1.5-1.0"
    assert_close(got.data.values, ref)


# -- laziness: nothing, one pass, one window -----------------------------------------------------


def counted_recording(chunk: int = 400):
    arr, reads = counted_array(X, chunks=(chunk, N_CHANNELS))
    ds = recording()
    return ds.copy(data={"data": arr}), reads


def test_morlet_computes_nothing_and_zscore_exactly_one_pass():
    ds, reads = counted_recording()
    with raise_if_dask_computes():
        tfr_ds = ds.ephys.morlet(FREQS, decim=2)
    assert reads.reads == []
    with raise_if_dask_computes(max_computes=1) as scheduler:
        z = tfr_ds.zscore(progress=False)
    assert scheduler.total_computes == 1
    assert reads.samples_read(axis=0).all()  # the pass read the whole record, once
    assert len(reads.reads) == N_TIMES // 400  # each chunk read once, its halos shared
    assert z.data.chunks is not None


def test_zscore_with_given_stats_computes_nothing():
    ds, reads = counted_recording()
    tfr_ds = ds.ephys.morlet(FREQS, decim=2)
    saved = tfr_ds.ephys.stats(progress=False)
    reads.reset()
    with raise_if_dask_computes():
        z = tfr_ds.zscore(stats=saved)
    assert reads.reads == []
    assert_close(z.data.values, mne_power_zscore(X, decim=2))


def test_a_window_of_the_zscore_reads_only_its_chunks():
    ds, reads = counted_recording(chunk=400)
    # Blocks of 400 samples (the default plan's blocks are longer than this short record).
    z = ds.ephys.morlet(FREQS, chunks={"time": 400}).zscore(progress=False)  # halo: 222
    reads.reset()
    window = z.data.sel(time=slice(START + 6.0, START + 7.0), channel=101)  # samples 1200–1400
    with raise_if_dask_computes(max_computes=1):
        got = window.values
    touched = np.flatnonzero(reads.samples_read(axis=0))
    assert touched.min() >= 800 and touched.max() < 2000  # chunks 3–4 plus one each side
    ref = mne_power_zscore(X)[1, :, 1200:1401]
    assert_close(got, ref)


# -- statistics as a small Dataset --------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The data type:Warning", "ignore:Consolidated metadata:Warning")
def test_stats_dataset_round_trips_through_files(tmp_path):
    tfr_ds = recording(chunks=500).ephys.morlet(FREQS, decim=4)
    s = tfr_ds.ephys.stats(baseline=(6.0, None), progress=False)
    assert set(s.data_vars) == {"count", "mean", "std"}
    assert s["mean"].dims == ("channel", "frequency")
    assert s.attrs["quantity"] == "power" and s.attrs["ddof"] == 0
    assert s.nbytes < 1000
    s.to_netcdf(tmp_path / "stats.nc")
    s.to_zarr(tmp_path / "stats.zarr")
    expected = tfr_ds.zscore(baseline=(6.0, None), progress=False).data.values
    for reopened in (
        xr.open_dataset(tmp_path / "stats.nc"),
        xr.open_zarr(tmp_path / "stats.zarr"),
    ):
        with raise_if_dask_computes():
            z = tfr_ds.zscore(stats=reopened)
        assert_close(z.data.values, expected)


def test_stats_that_do_not_fit_are_refused():
    tfr_ds = recording(chunks=500).ephys.morlet(FREQS)
    raw_stats = recording(chunks=500).ephys.stats(progress=False)  # values, (channel,)
    with pytest.raises(StatisticsMismatchError, match="'value'"):
        tfr_ds.zscore(stats=raw_stats)
    other = tfr_ds.ephys.stats(progress=False).assign_coords(frequency=[1.0, 2.0, 3.0])
    with pytest.raises(StatisticsMismatchError, match="coordinates"):
        tfr_ds.zscore(stats=other)
    with pytest.raises(StatisticsMismatchError, match="Dataset with 'mean'"):
        tfr_ds.zscore(stats=xr.Dataset())
    with pytest.raises(TFRParameterError, match="either"):
        tfr_ds.zscore(stats=raw_stats, baseline=(1.0, 2.0))


# -- sampling rate and errors -------------------------------------------------------------------


def test_sampling_rate_sources():
    assert sampling_rate(recording()) == RATE
    assert sampling_rate(recording(time="values")) == RATE
    assert sampling_rate(recording(time="attrs")) == RATE
    stamps = np.datetime64("2025-01-01") + (np.arange(100) * 4).astype("timedelta64[ms]")
    dated = xr.DataArray(np.zeros(100), dims="time", coords={"time": stamps})
    assert sampling_rate(dated) == 250.0


def test_time_window_matches_mne_selection():
    for time in ("range", "values"):
        ds = recording(time=time)
        for window in [(6.0, 8.5), (6.0025, 6.0075), (None, 5.0), (16.99, None), (6.0, 6.0)]:
            sl = time_window(ds, window)
            lo = window[0] if window[0] is not None else -np.inf
            hi = window[1] if window[1] is not None else np.inf
            expected = np.flatnonzero((TIMES >= lo) & (TIMES <= hi))
            assert (sl.start, sl.stop) == (expected[0], expected[-1] + 1)
    with pytest.raises(ValueError, match="no sample"):
        time_window(recording(), (100.0, 200.0))


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: xr.DataArray(np.zeros((500, 2)), dims=("t", "channel")), TimeAxisError, "'time'"),
        (lambda: xr.DataArray(np.zeros(500), dims="time"), TimeAxisError, "rate"),
        (
            lambda: xr.DataArray(
                np.zeros(500),
                dims="time",
                coords={"time": np.cumsum(np.r_[0, np.ones(499)] + np.arange(500) % 2 * 0.1)},
            ),
            TimeAxisError,
            "not regularly sampled",
        ),
        (lambda: xr.Dataset({"lfp": ("time", np.zeros(500))}), KeyError, "no variable 'data'"),
        (lambda: recording(X[:100]), ValueError, "longest wavelet"),
    ],
)
def test_clear_errors_before_any_compute(make, error, match):
    obj = make()
    with raise_if_dask_computes(), pytest.raises(error, match=match):
        obj.ephys.morlet(FREQS)


def test_frequency_above_nyquist_and_bad_cycles():
    ds = recording(chunks=500)
    with pytest.raises(TFRParameterError, match="Nyquist"):
        ds.ephys.morlet([10.0, 100.0])
    with pytest.raises(ValueError, match="n_cycles"):
        ds.ephys.morlet(FREQS, n_cycles=0)


# -- real signals (../shared/realdata/other) -----------------------------------------------------

PEAKS = {
    "neurodsp_sample_data_2_rat_hc_LFP_1kHz.npy": (6.5, (5.5, 7.5)),  # hippocampal theta
    "neurodsp_sample_data_1_human_M1_ECoG_1kHz.npy": (18.0, (15.0, 21.0)),  # motor beta
}


@pytest.mark.parametrize("name", list(PEAKS))
def test_real_spectral_peaks(realdata, name):
    path = realdata / "other" / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    x = np.load(path)
    da_ = xr.DataArray(x, dims="time", attrs={"rate": 1000.0}).chunk({"time": 5000})
    freqs = np.arange(2.0, 40.5, 0.5)
    power = da_.ephys.morlet(freqs, output="power", decim=10).mean("time").values
    # The peak above the 1/f background: largest residual of a log-log line fit.
    fit = np.polyfit(np.log(freqs), np.log(power), 1)
    residual = np.log(power) - np.polyval(fit, np.log(freqs))
    low, high = PEAKS[name][1]
    assert low <= freqs[np.argmax(residual)] <= high


def test_real_lfp_equals_mne(realdata):
    path = realdata / "other" / "neurodsp_sample_data_2_rat_hc_LFP_1kHz.npy"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    x = np.load(path)[:20000].astype(np.float64)  # 20 s, int16 counts
    freqs = np.array([4.0, 6.5, 9.0, 30.0, 80.0])
    ref = tfr_array_morlet(x[None, None], 1000.0, freqs, 7.0, decim=5, output="power")[0, 0]
    times = np.arange(0, 20000, 5) / 1000.0
    ref_z = mne.baseline.rescale(ref, times, (2.0, 18.0), mode="zscore", verbose=False)
    da_ = xr.DataArray(x, dims="time", coords={"time": np.arange(20000) / 1000.0})
    for chunks in (20000, 3000, 777):
        tfr_ = da_.chunk({"time": chunks}).ephys.morlet(freqs, decim=5, output="power")
        assert_close(tfr_.values, ref)
        assert_close(tfr_.zscore(baseline=(2.0, 18.0), progress=False).values, ref_z)


def test_morlet_of_unchunked_data_is_chunked_lazily():
    da_ = recording()["data"]
    out = da_.ephys.morlet(FREQS, output="power")
    assert isinstance(out.data, da.Array)
    assert_close(out.values, tfr.morlet(X.T, RATE, FREQS, output="power"))


def test_transform_units_follow_the_output():
    ds = recording()
    assert ds.ephys.morlet(FREQS).data.attrs["unit"] == "volts"
    assert ds.ephys.morlet(FREQS, output="power").data.attrs["unit"] == "volts**2"
    assert ds.ephys.morlet(FREQS, output="phase").data.attrs["unit"] == "radians"


def test_a_dataset_result_carries_the_rate_and_unit_of_its_data_not_of_the_input():
    ds = recording()
    ds.attrs.update(rate=RATE, unit="volts", starting_time=START)  # as a file's Dataset has
    power = ds.ephys.morlet(FREQS, n_cycles=5.0, decim=4, output="power")
    assert power.attrs["rate"] == power.data.attrs["rate"] == RATE / 4
    assert power.attrs["unit"] == power.data.attrs["unit"] == "volts**2"
    assert power.attrs["starting_time"] == power.data.attrs["starting_time"]
    assert power.attrs["session"] == "test"  # the file's own attrs stay
    assert power.drop_vars("time").ephys.rate == RATE / 4  # was the input's rate
    z = power.ephys.zscore(progress=False)
    assert "unit" not in z.attrs and z.data.attrs["units"] == "1"
    assert z.data.attrs["zscore_of"] == "power"  # was "value": the z-scores of a power output
    # As a file's Dataset: the series' starting_time on the Dataset only, not on its data.
    del ds["data"].attrs["starting_time"]
    ds.attrs["starting_time"] = START - 1.0  # what the result's time axis says is what counts
    late = ds.isel(time=slice(int(RATE), None)).ephys.morlet(FREQS, n_cycles=5.0, decim=4)
    assert late.attrs["starting_time"] == float(late.time[0]) == START + 1.0
    z = late.ephys.zscore(progress=False)
    assert z.data.attrs["output"] == "power" and z.data.attrs["zscore_of"] == "power"
    assert late.data.attrs["output"] == "complex"  # the transform's own stays as it was


@pytest.mark.parametrize("time", ["range", "values"])
def test_time_windows_refuse_nan_ends_and_take_infinite_ones_as_open(time):
    from xnwb.accessors import time_window

    ds = recording(time=time)
    n = ds.sizes["time"]
    assert time_window(ds, (-np.inf, START + 1.0)) == time_window(ds, (None, START + 1.0))
    assert time_window(ds, (START + 1.0, np.inf)) == slice(int(RATE), n)
    with pytest.raises(ValueError, match="got NaN"):
        time_window(ds, (np.nan, START + 1.0))
    with pytest.raises(ValueError, match="no sample"):
        time_window(ds, (np.inf, None))


def test_a_time_window_on_a_time_axis_that_steps_back_is_refused():
    from xnwb.exceptions import TimeAxisError

    times = TIMES.copy()
    times[500:510] -= 1.0  # a glitch of the acquisition clock
    ds = recording(time="values").assign_coords(time=times)
    with pytest.raises(TimeAxisError, match="steps back in time after sample 499"):
        ds.ephys.stats(baseline=(START + 1.0, START + 3.0), progress=False)


def test_zscore_refuses_statistics_of_another_output_or_of_the_stored_counts():
    from xnwb.exceptions import StatisticsMismatchError

    ds = recording()
    power = ds.ephys.morlet(FREQS, n_cycles=5.0, output="power")
    amplitude_stats = ds.ephys.morlet(FREQS, n_cycles=5.0, output="amplitude").ephys.stats(
        progress=False
    )
    assert amplitude_stats.attrs["output"] == "amplitude"
    refused = r"values in 'volts', the data of values in 'volts\*\*2'"
    with pytest.raises(StatisticsMismatchError, match=refused):
        power.ephys.zscore(stats=amplitude_stats)
    counts = (ds.data / 1e-6).round().astype(np.int16).assign_attrs(ds.data.attrs, conversion=1e-6)
    volts = (counts * 1e-6).assign_attrs(ds.data.attrs, conversion=1e-6)
    count_stats = counts.ephys.stats(progress=False)
    assert count_stats.attrs["unit"] == "counts"
    with pytest.raises(StatisticsMismatchError, match="values in 'counts'"):
        volts.ephys.zscore(stats=count_stats)
    z = power.ephys.zscore(stats=power.ephys.stats(progress=False))  # its own: accepted
    assert z.data.attrs["units"] == "1"


def test_transforms_of_stored_counts_are_in_counts_not_in_the_series_unit():
    ds = recording()
    counts = (ds.data / 1e-6).round().astype(np.int16).assign_attrs(ds.data.attrs, conversion=1e-6)
    power = counts.ephys.morlet(FREQS, n_cycles=5.0, output="power")
    assert power.attrs["unit"] == "counts**2"
    coefs = counts.ephys.morlet(FREQS, n_cycles=5.0)
    assert coefs.attrs["unit"] == "counts"
    assert ds.data.ephys.morlet(FREQS, n_cycles=5.0, output="power").attrs["unit"] == "volts**2"


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "4"])
def test_block_chunks_that_are_not_positive_counts_are_named_by_dimension(bad):
    from xnwb.exceptions import TFRParameterError

    with pytest.raises(TFRParameterError, match=r"chunks\['time'\] must be a positive"):
        recording().ephys.morlet(FREQS, n_cycles=5.0, chunks={"time": bad})


@pytest.mark.parametrize("dtype", [object, str])
def test_statistics_of_values_that_are_not_numbers_are_refused_at_once(dtype):
    da = xr.DataArray(np.array(["a", "b", "c"] * 10, dtype=dtype), dims="time")
    da = da.assign_attrs(rate=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no misleading "zero variance" warning first
        for call in (
            lambda: da.ephys.stats(progress=False),
            lambda: da.ephys.zscore(progress=False),
        ):
            with pytest.raises(TypeError, match="need numbers"):
                call()


@pytest.mark.parametrize("back", [0.0005, 0.0])  # backwards, and a repeated stamp
def test_a_transform_over_time_that_does_not_increase_names_the_sample(back):
    times = TIMES.copy()
    times[700] = times[699] - back
    ds = recording(time="values").assign_coords(time=times)
    with pytest.raises(TimeAxisError, match="does not increase: sample 700"):
        ds.ephys.morlet(FREQS, n_cycles=5.0)
