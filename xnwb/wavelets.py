"""Wavelet kernels: MNE's Morlet wavelets and PyWavelets' continuous wavelets as FIR banks.

A :class:`KernelBank` holds one finite kernel per frequency and the index of its centre;
:mod:`xnwb.tfr` applies it to chunked arrays. Building a bank validates the parameters, so
bad frequencies or cycles fail here, before any data is touched.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft as sfft

from xnwb.exceptions import SignalTooShortError, TFRParameterError

__all__ = ["KernelBank", "morlet_kernels", "pywt_kernels"]


@dataclass(frozen=True, eq=False)
class KernelBank:
    """Finite kernels and where each one is centred.

    ``transform`` computes ``out[f, n] = sum_j kernels[f][j] * x[n + centres[f] - j]`` with
    ``x`` zero outside the record: MNE's ``'same'`` convolution when ``centres[f]`` is
    ``(len(kernels[f]) - 1) // 2``.

    Examples
    --------
    >>> bank = morlet_kernels(1000.0, [10.0, 40.0], n_cycles=7.0)
    >>> len(bank), bank.lengths, bank.halo
    (2, (1115, 279), 557)
    """

    kernels: tuple[np.ndarray, ...]
    centres: tuple[int, ...]

    def __post_init__(self) -> None:
        kernels = tuple(np.ascontiguousarray(k, dtype=np.complex128).ravel() for k in self.kernels)
        if not kernels or len(kernels) != len(self.centres):
            raise TFRParameterError("a kernel bank needs one centre per kernel, and a kernel")
        for k in kernels:
            k.setflags(write=False)
        object.__setattr__(self, "kernels", kernels)
        object.__setattr__(self, "centres", tuple(int(c) for c in self.centres))
        digest = hashlib.sha1(repr(self.centres).encode())
        for k in kernels:
            digest.update(k.tobytes())
        object.__setattr__(self, "key", digest.hexdigest())
        real = all(not np.any(k.imag) for k in kernels)
        object.__setattr__(self, "real", real)

    def __len__(self) -> int:
        return len(self.kernels)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KernelBank) and other.key == self.key

    def __dask_tokenize__(self) -> str:
        return self.key

    @property
    def lengths(self) -> tuple[int, ...]:
        """Number of taps of each kernel."""
        return tuple(k.size for k in self.kernels)

    @property
    def halo(self) -> int:
        """Samples each output needs on either side: the overlap between chunks."""
        return max(max(c, k.size - 1 - c) for k, c in zip(self.kernels, self.centres, strict=True))

    def spectra(self, nfft: int, decim: int = 1, dtype: Any = np.complex128) -> np.ndarray:
        """Kernel spectra for FFT length ``nfft`` (cached, read-only).

        ``decim == 1``: shape ``(n_kernels, nfft)``. Otherwise the polyphase layout
        ``(m, decim, n_kernels)``, ``m = nfft // decim``: ``H[j, a, f]`` is such that the
        decimated output's spectrum is ``sum_a X_a[j] H[j, a, f]``, where ``X_a`` is the
        ``m``-point spectrum of the input's samples ``a, a + decim, a + 2 decim, ...``. Every
        ``decim``-th output ``y[n] = sum_t x[t] w[n decim - t]`` (circularly) splits into
        ``sum_a (x_a * v_a)[n]`` with ``v_a[r] = w[r decim - a]``, so ``H[:, a, f]`` is the
        ``m``-point spectrum of the kernel's samples ``-a, decim - a, 2 decim - a, ...``.
        Computed in double precision, then stored as ``dtype`` (``complex128`` or
        ``complex64``); computed once per process even when threads ask at once.

        Examples
        --------
        >>> bank = morlet_kernels(1000.0, [50.0], n_cycles=5)
        >>> bank.spectra(400, 4).shape
        (100, 4, 1)
        """
        key = (int(nfft), int(decim), np.dtype(dtype).str)
        # One computation per key: threads starting a pass together would each compute the
        # same spectra (tens of MB, tens of ms) and keep both until one copy is dropped. A
        # lock per key, so that spectra already cached never wait for another's build.
        with _BUILDING_LOCK:
            building = _BUILDING.setdefault((self, *key), threading.Lock())
        with building:
            try:
                return _spectra(self, *key)
            finally:
                with _BUILDING_LOCK:
                    _BUILDING.pop((self, *key), None)


# Locks of the spectra being built. A child forked while a thread of its parent held one
# would wait for it forever: the child starts with none.
_BUILDING_LOCK = threading.Lock()
_BUILDING: dict[tuple[Any, ...], threading.Lock] = {}


def _forget_builds_after_fork() -> None:
    global _BUILDING_LOCK, _BUILDING
    _BUILDING_LOCK, _BUILDING = threading.Lock(), {}


os.register_at_fork(after_in_child=_forget_builds_after_fork)


@functools.lru_cache(maxsize=8)
def _spectra(bank: KernelBank, nfft: int, decim: int, dtype: str = "<c16") -> np.ndarray:
    m = nfft // decim
    shape = (len(bank), nfft) if decim == 1 else (m, decim, len(bank))
    spec = np.empty(shape, dtype=np.dtype(dtype))
    row = np.empty(nfft, dtype=np.complex128)
    phases = np.empty((m, decim), dtype=np.complex128)
    # One kernel at a time, straight into the final layout: the bank's spectra are the
    # largest array of a block plan, and a second full-size copy would double the peak.
    for f, (kernel, centre) in enumerate(zip(bank.kernels, bank.centres, strict=True)):
        # Circularly centred: the output sample n lands at FFT index n, no trimming needed.
        if kernel.size > nfft:
            raise TFRParameterError(
                f"a kernel of {kernel.size} samples needs an FFT that long, not {nfft}"
            )
        row[:] = 0
        row[(np.arange(kernel.size) - centre) % nfft] = kernel  # any centre, even outside
        if decim == 1:
            spec[f] = sfft.fft(row)
            continue
        # phases[r, a] = row[(r decim - a) mod nfft]: a = 0 is every decim-th sample, the
        # others the samples just before them, reversed along a.
        grid = row.reshape(m, decim)
        phases[:, 0] = grid[:, 0]
        phases[1:, 1:] = grid[:-1, :0:-1]
        phases[0, 1:] = grid[-1, :0:-1]
        spec[:, :, f] = sfft.fft(phases, axis=0)
    spec.setflags(write=False)
    return spec


def morlet_kernels(
    sfreq: float,
    freqs: Any,
    n_cycles: float | Sequence[float] | np.ndarray = 7.0,
    *,
    zero_mean: bool = True,
    n_times: int | None = None,
) -> KernelBank:
    """Morlet wavelets exactly as :func:`mne.time_frequency.morlet` builds them.

    ``sigma_t = n_cycles / (2π f)``; taps at ``t = k / sfreq`` for ``|t| < 5 sigma_t`` (odd
    length); ``W = (exp(2iπft) - κ) exp(-t² / 2sigma_t²)`` with ``κ = exp(-n_cycles² / 2)`` when
    ``zero_mean`` else 0; ``W /= sqrt(0.5) ‖W‖``.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    freqs : array_like of float, shape (n_freqs,)
        Centre frequencies in Hz, each in ``(0, sfreq / 2)``.
    n_cycles : float or array_like, shape (n_freqs,)
        Cycles per wavelet, > 0.
    zero_mean : bool
        Subtract ``κ`` so each wavelet has (nearly) zero mean, as ``tfr_array_morlet`` does.
    n_times : int, optional
        Length of the record the kernels are for: a wavelet longer than it is refused
        before any kernel is built (a very low frequency or a huge ``n_cycles`` would
        otherwise allocate gigabytes first).

    Returns
    -------
    KernelBank

    Raises
    ------
    TFRParameterError
        A frequency outside ``(0, sfreq / 2)``, a non-positive ``n_cycles``, or a wavelet
        longer than :data:`MAX_KERNEL_SAMPLES`.
    SignalTooShortError
        A wavelet longer than ``n_times``.

    Examples
    --------
    >>> import numpy as np
    >>> from mne.time_frequency import morlet as mne_morlet
    >>> bank = morlet_kernels(250.0, [8.0, 20.0], n_cycles=[3.0, 5.0], zero_mean=True)
    >>> ref = mne_morlet(250.0, [8.0, 20.0], n_cycles=[3.0, 5.0], zero_mean=True)
    >>> all(np.array_equal(a, b) for a, b in zip(bank.kernels, ref))
    True
    """
    sfreq = _check_rate(sfreq)
    freqs = _check_freqs(freqs, sfreq)
    cycles = _check_cycles(n_cycles, freqs.size)
    # |t| < 5 sigma_t on a 1/sfreq grid: 2 * ceil(5 sigma_t sfreq) - 1 taps
    half = np.ceil(5.0 * cycles / (2.0 * np.pi * freqs) * sfreq)
    _check_kernel_lengths(2 * half - 1, freqs, n_times)
    kernels = []
    for f, nc in zip(freqs, cycles, strict=True):
        sigma_t = nc / (2.0 * np.pi * f)
        t = np.arange(0.0, 5.0 * sigma_t, 1.0 / sfreq)
        t = np.r_[-t[::-1], t[1:]]
        oscillation = np.exp(2.0 * 1j * np.pi * f * t)
        if zero_mean:
            oscillation -= np.exp(-2 * (np.pi * f * sigma_t) ** 2)
        w = oscillation * np.exp(-(t**2) / (2.0 * sigma_t**2))
        w /= np.sqrt(0.5) * np.linalg.norm(w.ravel())
        kernels.append(w)
    return KernelBank(tuple(kernels), tuple((k.size - 1) // 2 for k in kernels))


def pywt_kernels(
    sfreq: float,
    freqs: Any,
    wavelet: Any = "cmor1.5-1.0",
    *,
    precision: int = 12,
    n_times: int | None = None,
) -> KernelBank:
    """The kernels ``pywt.cwt(..., method="fft")`` convolves with, one per frequency.

    PyWavelets integrates the wavelet on a grid of ``2**precision`` points, resamples the
    integral at each scale ``s = pywt.frequency2scale(wavelet, f / sfreq)`` (lower grid point),
    convolves, differentiates (``-sqrt(s) · diff``) and keeps the centred samples. That
    equals one linear convolution with ``k = -sqrt(s) · diff([0, ψ_s, 0])`` centred at
    ``floor((len(ψ_s) - 2) / 2) + 1``, which is what this bank holds.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    freqs : array_like of float
        Frequencies in Hz, each in ``(0, sfreq / 2)``.
    wavelet : str or pywt.ContinuousWavelet
        Any continuous wavelet of PyWavelets (``pywt.wavelist(kind="continuous")``).
    precision : int
        Integration precision: the wavelet is integrated on ``2**precision`` points
        (``pywt.cwt``'s default, 12).
    n_times : int, optional
        Length of the record: a longer kernel is refused before it is built.

    Examples
    --------
    >>> bank = pywt_kernels(1000.0, [10.0, 50.0], "cmor1.5-1.0")
    >>> bank.lengths, bank.real
    ((1602, 322), False)
    >>> pywt_kernels(1000.0, [10.0], "mexh").real
    True
    """
    import pywt

    sfreq = _check_rate(sfreq)
    freqs = _check_freqs(freqs, sfreq)
    try:
        wav = (
            wavelet
            if isinstance(wavelet, pywt.ContinuousWavelet)
            else pywt.ContinuousWavelet(wavelet)
        )
    except ValueError as err:
        names = ", ".join(pywt.wavelist(kind="continuous")[:12])
        raise TFRParameterError(
            f"wavelet {wavelet!r} is not a continuous PyWavelets wavelet ({err}); try one of: "
            f"{names}, …"
        ) from None
    scales = pywt.frequency2scale(wav, freqs / sfreq)
    _check_kernel_lengths(scales * (wav.upper_bound - wav.lower_bound) + 2, freqs, n_times)
    int_psi, grid = pywt.integrate_wavelet(wav, precision=precision)
    int_psi = np.conj(int_psi) if wav.complex_cwt else int_psi
    step = grid[1] - grid[0]
    kernels, centres = [], []
    for f, scale in zip(freqs, scales, strict=True):
        j = (np.arange(scale * (grid[-1] - grid[0]) + 1) / (scale * step)).astype(int)
        psi_s = int_psi[j[j < int_psi.size]][::-1]
        if psi_s.size < 2:
            raise TFRParameterError(
                f"{f:g} Hz is too high for wavelet {wav.name!r} at {sfreq:g} Hz (scale {scale:.3g} "
                "gives a kernel of one sample); lower the frequency"
            )
        kernels.append(-np.sqrt(scale) * np.diff(np.concatenate([[0.0], psi_s, [0.0]])))
        centres.append((psi_s.size - 2) // 2 + 1)
    return KernelBank(tuple(kernels), tuple(centres))


# -- validation ----------------------------------------------------------------------------

#: Longest kernel built without a record length to compare with (2**26 complex taps: 1 GiB).
MAX_KERNEL_SAMPLES = 2**26


def _check_kernel_lengths(lengths: np.ndarray, freqs: np.ndarray, n_times: int | None) -> None:
    """Refuse kernels longer than the record (or than :data:`MAX_KERNEL_SAMPLES`) up front.

    Examples
    --------
    >>> _check_kernel_lengths(np.array([101.0]), np.array([10.0]), 1000)
    >>> _check_kernel_lengths(np.array([5e9]), np.array([1e-5]), None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xnwb.exceptions.TFRParameterError: the wavelet at 1e-05 Hz would be 5000000000 samples ...
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    worst = int(np.argmax(lengths))
    longest = lengths[worst]
    if n_times is not None and longest > n_times:
        raise SignalTooShortError(
            f"the record has {int(n_times)} samples, shorter than the longest wavelet "
            f"({longest:.0f} samples, at {freqs[worst]:g} Hz); use a longer record, higher "
            "frequencies or fewer cycles"
        )
    if longest > MAX_KERNEL_SAMPLES:
        raise TFRParameterError(
            f"the wavelet at {freqs[worst]:g} Hz would be {longest:.0f} samples long "
            f"({longest * 16 / 1e9:.0f} GB of taps), over the limit of {MAX_KERNEL_SAMPLES}; "
            "use higher frequencies or fewer cycles"
        )


def _check_decim(decim: Any, n_times: int) -> int:
    """A positive integer, clamped to the record's length.

    A factor of ``n_times`` or more keeps sample 0 only, exactly as ``n_times`` does (and
    as MNE's ``decim``); clamping keeps buffers sized by the decimation (``decim=10**9``
    asked for 119 GiB) bounded by the record instead.

    Examples
    --------
    >>> _check_decim(4, 1000), _check_decim(10**9, 1000)
    (4, 1000)
    >>> _check_decim(0, 1000)
    Traceback (most recent call last):
    ...
    xnwb.exceptions.TFRParameterError: decim must be a positive integer, got 0
    """
    if isinstance(decim, bool) or not isinstance(decim, int | np.integer) or decim < 1:
        raise TFRParameterError(f"decim must be a positive integer, got {decim!r}")
    return int(min(int(decim), max(int(n_times), 1)))


def _check_rate(sfreq: Any) -> float:
    try:
        rate = float(sfreq)
    except (TypeError, ValueError):
        raise TFRParameterError(f"sfreq must be a number in Hz, got {sfreq!r}") from None
    if not np.isfinite(rate) or rate <= 0:
        raise TFRParameterError(f"sfreq must be a positive finite rate in Hz, got {sfreq!r}")
    return rate


def _check_freqs(freqs: Any, sfreq: float) -> np.ndarray:
    try:
        f = np.asarray(freqs, dtype=np.float64)
    except (TypeError, ValueError):
        raise TFRParameterError(f"freqs must be numbers in Hz, got {freqs!r}") from None
    if f.ndim == 0:
        f = f[None]
    if f.ndim != 1 or f.size == 0:
        raise TFRParameterError(f"freqs must be a non-empty 1-D sequence, got shape {f.shape}")
    nyquist = sfreq / 2.0
    bad = f[~np.isfinite(f) | (f <= 0) | (f >= nyquist)]
    if bad.size:
        raise TFRParameterError(
            f"frequencies must lie in (0, {nyquist:g}) Hz (Nyquist of {sfreq:g} Hz), got "
            f"{bad.tolist()[:5]}"
        )
    return f


def _check_cycles(n_cycles: Any, n_freqs: int) -> np.ndarray:
    try:
        c = np.asarray(n_cycles, dtype=np.float64)
    except (TypeError, ValueError):
        raise TFRParameterError(
            f"n_cycles must be a number or one per frequency, got {n_cycles!r}"
        ) from None
    if c.ndim == 0:
        c = np.full(n_freqs, float(c))
    if c.shape != (n_freqs,):
        raise TFRParameterError(
            f"n_cycles must be a number or one per frequency ({n_freqs}), got shape {c.shape}"
        )
    if not np.all(np.isfinite(c) & (c > 0)):
        raise TFRParameterError(f"n_cycles must be positive and finite, got {c.tolist()[:5]}")
    return c
