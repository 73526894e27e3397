"""Transform arguments that would allocate gigabytes are refused (or bounded) up front."""

from __future__ import annotations

import tracemalloc

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import xnwb  # noqa: F401  (accessors)
from xnwb import tfr
from xnwb.exceptions import SignalTooShortError, TFRParameterError
from xnwb.wavelets import morlet_kernels, pywt_kernels

RATE = 1000.0
SIGNAL = np.random.default_rng(0).standard_normal((2, 5000))


def _series(lazy: bool) -> xr.DataArray:
    data = da.from_array(SIGNAL.T, chunks=(1000, 2)) if lazy else SIGNAL.T
    return xr.DataArray(data, dims=("time", "channel"), attrs={"rate": RATE})


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize(
    "kwargs", [dict(freqs=[1e-5]), dict(freqs=[10.0], n_cycles=1e6)], ids=["1e-5 Hz", "1e6 cycles"]
)
def test_huge_wavelet_is_refused_before_it_is_built(lazy, kwargs):
    tracemalloc.start()
    try:
        with pytest.raises(SignalTooShortError, match="5000 samples, shorter than the longest"):
            _series(lazy).ephys.morlet(**kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20  # the wavelet alone would be gigabytes


def test_array_functions_check_against_the_record_too():
    with pytest.raises(SignalTooShortError, match="longest wavelet"):
        tfr.morlet(SIGNAL, RATE, [1e-5])
    with pytest.raises(SignalTooShortError, match="longest wavelet"):
        tfr.cwt(SIGNAL, RATE, [1e-4], "cmor1.5-1.0")


def test_kernels_without_a_record_have_a_ceiling():
    with pytest.raises(TFRParameterError, match="over the limit"):
        morlet_kernels(RATE, [1e-5])
    with pytest.raises(TFRParameterError, match="over the limit"):
        pywt_kernels(RATE, [1e-6], "cmor1.5-1.0")
    assert (
        morlet_kernels(RATE, [10.0], n_times=5000).lengths == morlet_kernels(RATE, [10.0]).lengths
    )


@pytest.mark.parametrize("lazy", [False, True])
def test_decim_beyond_the_record_is_bounded_and_equals_decim_of_the_record(lazy):
    series = _series(lazy)
    tracemalloc.start()
    try:
        huge = series.ephys.morlet([20.0], decim=10**9, output="power").values
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20  # was 119 GiB asked for
    whole = series.ephys.morlet([20.0], decim=5000, output="power").values
    assert huge.shape == (2, 1, 1)
    np.testing.assert_array_equal(huge, whole)
    ref = tfr.morlet(SIGNAL, RATE, [20.0], output="power")[..., :1]
    np.testing.assert_allclose(huge, ref, rtol=1e-10)
    direct = tfr.morlet(SIGNAL, RATE, [20.0], output="power", decim=10**9)
    np.testing.assert_allclose(direct, ref, rtol=1e-10)


@pytest.mark.parametrize("decim", [0, -3, 2.0, True])
def test_bad_decim_is_a_parameter_error(decim):
    with pytest.raises(TFRParameterError, match="decim must be a positive integer"):
        _series(False).ephys.morlet([20.0], decim=decim)
