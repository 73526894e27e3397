"""The kernel spectra the engine multiplies by: their definition, and one computation each."""

from __future__ import annotations

import os
import signal
import threading
import time

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


@pytest.mark.parametrize("centre", [-2, 0, 1, 3, 9])
def test_a_centre_anywhere_is_placed_circularly(centre: int) -> None:
    kernel = np.array([1.0, 0.5 - 0.25j])
    bank = KernelBank((kernel,), (centre,))
    nfft, decim = 24, 3
    row = np.zeros(nfft, complex)
    row[(np.arange(kernel.size) - centre) % nfft] = kernel
    np.testing.assert_allclose(bank.spectra(nfft, 1)[0], np.fft.fft(row), atol=1e-14)
    x = np.random.default_rng(centre + 5).standard_normal(nfft)
    expected = np.fft.ifft(np.fft.fft(x) * np.fft.fft(row))[::decim]
    phases = np.fft.fft(x.reshape(-1, decim), axis=0)
    got = np.fft.ifft((phases * bank.spectra(nfft, decim)[:, :, 0]).sum(axis=1))
    np.testing.assert_allclose(got, expected, atol=1e-13)


def test_spectra_already_built_do_not_wait_for_another_build(monkeypatch) -> None:
    from xnwb import wavelets

    bank = morlet_kernels(1000.0, [20.0, 40.0], n_cycles=5)
    cached = bank.spectra(2048, 4)
    release = threading.Event()
    real = wavelets._spectra

    def slow_for_one_length(b, nfft, decim, dtype="<c16"):
        if nfft == 4096:
            release.wait(10)
        return real(b, nfft, decim, dtype)

    monkeypatch.setattr(wavelets, "_spectra", slow_for_one_length)
    builder = threading.Thread(target=bank.spectra, args=(4096, 4))
    builder.start()
    try:
        got: list[np.ndarray] = []
        reader = threading.Thread(target=lambda: got.append(bank.spectra(2048, 4)))
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), "a cached lookup waited for another length's build"
        assert got[0] is cached
    finally:
        release.set()
        builder.join(10)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_child_forked_during_a_build_can_build_spectra() -> None:
    from xnwb import wavelets

    bank = morlet_kernels(1000.0, [20.0], n_cycles=5)
    with wavelets._BUILDING_LOCK:  # as if a thread were registering a build at the fork
        pid = os.fork()
        if pid == 0:  # the child: one build, then out, whatever happens
            ok = False
            try:
                ok = bank.spectra(1024, 2).shape == (512, 2, 1)
            finally:
                os._exit(0 if ok else 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child waited forever for its parent's lock")
