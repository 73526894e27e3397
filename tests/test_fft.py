"""xnwb.fft: the FFT library behind the transforms, and MNE equality with each one."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from mne.time_frequency import tfr_array_morlet

from xnwb import fft, tfr
from xnwb.exceptions import TFRParameterError

X = np.random.default_rng(0).standard_normal((2, 4000))
FREQS = np.array([6.0, 25.0, 80.0])


@pytest.mark.parametrize("backend", fft.available_backends())
@pytest.mark.parametrize("decim", [1, 4])
def test_every_backend_equals_mne(backend, decim):
    ref = tfr_array_morlet(X[None], 500.0, FREQS, 5.0, decim=decim)[0]
    with fft.use_fft_backend(backend):
        assert fft.fft_backend() == backend
        got = tfr.morlet(X, 500.0, FREQS, 5.0, decim=decim, workers=1)
    assert np.abs(got - ref).max() <= 1e-10 * np.abs(ref).max()


def test_ducc0_is_the_default_when_installed(monkeypatch):
    monkeypatch.delenv("XNWB_FFT_BACKEND", raising=False)
    pytest.importorskip("ducc0", reason="ducc0 is a dependency; without it scipy is used")
    assert fft.fft_backend() == "ducc0"
    assert fft.available_backends() == ("ducc0", "scipy")


def test_environment_variable_chooses_and_bad_names_are_refused(monkeypatch):
    monkeypatch.setenv("XNWB_FFT_BACKEND", "scipy")
    assert fft.fft_backend() == "scipy"
    monkeypatch.setenv("XNWB_FFT_BACKEND", "fftw")
    with pytest.raises(TFRParameterError, match=r"XNWB_FFT_BACKEND.*'fftw'"):
        fft.fft_backend()
    with pytest.raises(TFRParameterError, match="unknown FFT library 'mkl'"):
        with fft.use_fft_backend("mkl"):
            pass


def test_backends_agree_on_strided_inverse_with_out():
    a = np.random.default_rng(1).standard_normal((6, 5, 8)) + 1j
    results = []
    for backend in fft.available_backends():
        with fft.use_fft_backend(backend):
            out = np.empty_like(a)
            res = fft.ifft(a.copy(), axis=0, out=out)
            assert res is out
            results.append(res)
    for res in results:
        np.testing.assert_allclose(res, np.fft.ifft(a, axis=0), atol=1e-14)


@pytest.mark.parametrize("backend", fft.available_backends())
@pytest.mark.parametrize("n", [7, 8])
@pytest.mark.parametrize("kind", ["real", "complex"])
def test_forward_along_a_middle_axis_into_a_strided_out(backend, n, kind):
    """The polyphase layout: spectra along axis 1 of (k, m, q) written into a (m, k, q)
    buffer seen as (k, m, q); odd and even lengths (the real mirror differs)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, n, 5))
    if kind == "complex":
        x = x + 1j * rng.standard_normal(x.shape)
    buffer = np.full((n, 3, 5), np.nan, dtype=complex)
    with fft.use_fft_backend(backend):
        got = fft.forward(x, axis=1, out=buffer.transpose(1, 0, 2))
    assert np.shares_memory(got, buffer)
    np.testing.assert_allclose(buffer.transpose(1, 0, 2), np.fft.fft(x, axis=1), atol=1e-13)


@pytest.mark.parametrize("backend", fft.available_backends())
@pytest.mark.parametrize("decim", [3, 7])
def test_complex_input_with_decim_equals_mne(backend, decim):
    """Complex signals take the polyphase path's complex FFT (no mirror)."""
    z = X + 1j * X[::-1, ::-1]
    ref = tfr_array_morlet(z[None], 500.0, FREQS, 5.0, decim=decim)[0]
    with fft.use_fft_backend(backend):
        got = tfr.morlet(z, 500.0, FREQS, 5.0, decim=decim, workers=1)
        chunked = tfr.morlet(
            da.from_array(z, chunks=(1, 900)), 500.0, FREQS, 5.0, decim=decim
        ).compute()
    for ours in (got, chunked):
        assert np.abs(ours - ref).max() <= 1e-10 * np.abs(ref).max()


@pytest.mark.parametrize("decim", [4, 9])
def test_fold_equals_mne_on_numpy_and_dask(decim):
    """The polyphase fold (one complex product per folded bin) gives MNE's numbers on both
    paths, whatever the block length."""
    ref = tfr_array_morlet(X[None], 500.0, FREQS, 5.0, decim=decim)[0]
    on = tfr.morlet(X, 500.0, FREQS, 5.0, decim=decim)
    off = tfr.morlet(da.from_array(X, chunks=(1, 700)), 500.0, FREQS, 5.0, decim=decim).compute()
    for ours in (on, off):
        assert np.abs(ours - ref).max() <= 1e-10 * np.abs(ref).max()
