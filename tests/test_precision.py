"""Opt-in single precision (``dtype="complex64"``): its error against MNE's float64 result."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from mne.time_frequency import tfr_array_morlet

import xnwb  # noqa: F401  (registers the accessors)
from xnwb import tfr
from xnwb.exceptions import TFRParameterError

RATE = 1000.0
FREQS = np.geomspace(10.0, 100.0, 8)
# Pinned bounds: measured ~2.4e-7 of the largest coefficient (64 ch x 60 s, 20 freqs) and
# ~4e-7 for power; MNE given float32 input differs from its float64 result by ~5e-8.
BOUND = 1e-6
PER_FREQ_BOUND = 2e-6


def signal(n_channels: int = 3, seconds: float = 8.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    bursts = np.where((t > 2) & (t < 3), 3.0 * np.sin(2 * np.pi * 40.0 * t), 0.0)
    return 50e-6 * (rng.standard_normal((n_channels, t.size)) + bursts)  # volts, as NWB gives


SIGNAL = signal()


def mne(decim: int, output: str = "complex") -> np.ndarray:
    return tfr_array_morlet(SIGNAL[None], RATE, FREQS, 7.0, decim=decim, output=output)[0]


@pytest.mark.parametrize("decim", [1, 3, 10])
@pytest.mark.parametrize("dask_chunks", [None, (1, 1500), (3, 777)])
def test_single_precision_error_against_mne_float64(decim, dask_chunks):
    ref = mne(decim)
    x = SIGNAL if dask_chunks is None else da.from_array(SIGNAL, chunks=dask_chunks)
    got = tfr.morlet(x, RATE, FREQS, 7.0, decim=decim, dtype="complex64")
    got = np.asarray(got)
    assert got.dtype == np.complex64 and got.shape == ref.shape
    err = np.abs(got - ref)
    assert err.max() <= BOUND * np.abs(ref).max()
    # No frequency is worse off than the others (each against its own largest value).
    per_freq = err.max(axis=(0, 2)) / np.abs(ref).max(axis=(0, 2))
    assert per_freq.max() <= PER_FREQ_BOUND
    # ...and it is single precision, not double: the error is well above float64 rounding.
    assert err.max() > 1e-12 * np.abs(ref).max()


@pytest.mark.parametrize(
    "output,dtype", [("power", np.float32), ("amplitude", np.float32), ("phase", np.float32)]
)
def test_single_precision_outputs(output, dtype):
    ref = mne(5, "power" if output == "power" else "complex")
    got = tfr.morlet(SIGNAL, RATE, FREQS, 7.0, decim=5, output=output, dtype="complex64")
    assert got.dtype == dtype
    if output == "power":
        assert np.abs(got - ref).max() <= 2 * BOUND * ref.max()
    elif output == "amplitude":
        assert np.abs(got - np.abs(ref)).max() <= BOUND * np.abs(ref).max()
    else:
        strong = np.abs(ref) > 1e-3 * np.abs(ref).max()
        wrapped = np.angle(np.exp(1j * (got - np.angle(ref))))
        assert np.abs(wrapped[strong]).max() <= 1e-3


def test_double_precision_stays_the_default_and_equal_to_mne():
    ref = mne(1)
    default = tfr.morlet(SIGNAL, RATE, FREQS, 7.0)
    explicit = tfr.morlet(SIGNAL, RATE, FREQS, 7.0, dtype="complex128")
    assert default.dtype == np.complex128
    np.testing.assert_array_equal(default, explicit)
    assert np.abs(default - ref).max() <= 1e-10 * np.abs(ref).max()


@pytest.mark.parametrize("bad", ["complex256", "int16", "single-ish", object])
def test_unknown_dtype_is_refused_before_compute(bad):
    with pytest.raises(TFRParameterError, match="dtype must be 'complex128'"):
        tfr.morlet(da.from_array(SIGNAL, chunks=(1, 1000)), RATE, FREQS, dtype=bad)


def test_accessor_passes_dtype_and_statistics_stay_close():
    arr = xr.DataArray(
        SIGNAL.T, dims=("time", "channel"), coords={"channel": [0, 1, 2]}, attrs={"rate": RATE}
    ).chunk({"time": 2000})
    single = arr.ephys.morlet(FREQS, decim=10, dtype="complex64")
    double = arr.ephys.morlet(FREQS, decim=10)
    assert single.dtype == np.complex64 and double.dtype == np.complex128
    s1 = single.ephys.stats(progress=False)
    s2 = double.ephys.stats(progress=False)
    assert s1["mean"].dtype == np.float64  # moments are merged in float64 either way
    np.testing.assert_allclose(s1["mean"], s2["mean"], rtol=1e-5)
    np.testing.assert_allclose(s1["std"], s2["std"], rtol=1e-5)
    cwt = arr.ephys.cwt(FREQS[:2], "cmor1.5-1.0", dtype="complex64")
    assert cwt.dtype == np.complex64


def test_single_precision_halves_the_planned_block_memory():
    bank = tfr.morlet_kernels(30_000.0, np.geomspace(10, 100, 20))
    double = tfr.plan_transform((124, 36_000_000), 1, bank, decim=30)
    single = tfr.plan_transform(
        (124, 36_000_000), 1, bank, decim=30, dtype=np.float32, precision="complex64"
    )
    assert single.peak_bytes < 0.75 * double.peak_bytes or single.time > double.time
