"""The kernel spectra the engine multiplies by: their definition, and one computation each."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from xnwb.exceptions import TFRParameterError
from xnwb.wavelets import KernelBank, _spectra, morlet_kernels


def _random_bank(rng: np.random.Generator) -> KernelBank:
    lengths = (7, 12, 31)  # odd and even, centred anywhere inside
    kernels = [rng.standard_normal(n) + 1j * rng.standard_normal(n) for n in lengths]
    return KernelBank(tuple(kernels), tuple(int(rng.integers(0, n)) for n in lengths))


@pytest.mark.parametrize(("nfft", "decim"), [(60, 1), (60, 3), (96, 4), (90, 30), (64, 64)])
def test_polyphase_spectra_give_the_decimated_circular_convolution(nfft: int, decim: int) -> None:
    rng = np.random.default_rng(nfft + decim)
    bank = _random_bank(rng)
    x = rng.standard_normal(nfft)
    spectra = bank.spectra(nfft, decim)
    for f, (kernel, centre) in enumerate(zip(bank.kernels, bank.centres, strict=True)):
        row = np.zeros(nfft, complex)
        row[(np.arange(kernel.size) - centre) % nfft] = kernel
        expected = np.fft.ifft(np.fft.fft(x) * np.fft.fft(row))[::decim]
        if decim == 1:
            got = np.fft.ifft(np.fft.fft(x) * spectra[f])
        else:
            phases = np.fft.fft(x.reshape(-1, decim), axis=0)  # X_a[j], (m, decim)
            got = np.fft.ifft((phases * spectra[:, :, f]).sum(axis=1))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_threads_asking_at_once_compute_the_spectra_once() -> None:
    bank = morlet_kernels(30_000.0, np.geomspace(10.0, 100.0, 8), n_cycles=7)
    _spectra.cache_clear()
    start = threading.Barrier(4)
    results = []

    def ask() -> None:
        start.wait()
        results.append(bank.spectra(184_320, 30))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _spectra.cache_info().misses == 1
    assert all(r is results[0] for r in results)  # one array, shared
    assert not results[0].flags.writeable


def test_a_kernel_longer_than_the_fft_is_refused() -> None:
    bank = morlet_kernels(1000.0, [10.0], n_cycles=7)  # 1,115 samples
    with pytest.raises(TFRParameterError, match="1115 samples"):
        bank.spectra(1000, 10)
