"""Seam-free wavelet time-frequency transforms on numpy and dask arrays.

Every transform here is a bank of finite kernels applied as a *linear* convolution with
zero padding beyond the record, which is what :func:`mne.time_frequency.tfr_array_morlet`
computes. A chunked (dask) array gives the same numbers as the unchunked one: each block
is extended by ``halo`` samples of its neighbours (zeros beyond the record, as MNE pads),
transformed, and trimmed back to its own samples.

Per block, the engine does one forward FFT per channel, multiplies the spectrum by each
kernel's spectrum, and inverts. With ``decim=q`` it never builds the full-rate output: for an
FFT length ``n = q·m``, ``ifft_n(Y)[::q] == ifft_m(Y.reshape(q, m).mean(0))`` exactly, so only
``m``-point inverse FFTs are needed. The forward side is split the same way (polyphase): the
``m``-point spectra of the ``q`` interleaved sequences ``x[a::q]``, and the kernels' spectra
folded, transformed over the aliases and twiddled once (:meth:`KernelBank.spectra`), give the
folded product as one batched matrix product per block, with no full-length FFT and no
transposing copy.

The array functions are :func:`morlet` (MNE's Morlet wavelets), :func:`cwt` (any PyWavelets
continuous wavelet, as ``pywt.cwt(..., method="fft")``) and the engine :func:`transform`.
A statistics pass (:func:`xnwb.stats.moments`) over a dask result along time asks the
result for its blocks' summaries: each block's ``(count, mean, M2)`` computed from the block's
values while they are in a work buffer, so the transform is never handed on nor held.

Results always have MNE's layout: the other axes in their order, then frequency, then time
(``(n_channels, n_times)`` in, ``(n_channels, n_freqs, n_times_out)`` out, whichever axis time
was). Rows along time are contiguous, which keeps every copy and reduction cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from xnwb import fft as _fft
from xnwb.blocks import (
    CACHE_BYTES,
    IN_CACHE_FFT_POINTS,
    BlockPlan,
    fft_length,
    full_rate_time,
    plan_blocks,
)
from xnwb.chunking import dask_chunk_size
from xnwb.exceptions import SignalTooShortError, TFRParameterError
from xnwb.halo import ExtendedBlock, map_halo_blocks
from xnwb.progress import active_client
from xnwb.stats import Moments, row_moments
from xnwb.wavelets import KernelBank, _check_decim, morlet_kernels, pywt_kernels

__all__ = [
    "OUTPUTS",
    "BlockPlan",
    "KernelBank",
    "cwt",
    "fft_length",
    "merge_small_chunks",
    "morlet",
    "morlet_kernels",
    "plan_blocks",
    "plan_transform",
    "pywt_kernels",
    "suggest_time_chunk",
    "transform",
]

OUTPUTS = ("complex", "power", "amplitude", "phase")
_DOUBLE = np.dtype(np.float64)


def morlet(
    x: Any,
    sfreq: float,
    freqs: Any,
    n_cycles: float | Sequence[float] | np.ndarray = 7.0,
    *,
    zero_mean: bool = True,
    output: str = "complex",
    decim: int = 1,
    axis: int = -1,
    workers: int | None = None,
    chunks: dict[int, int] | None = None,
    dtype: Any = None,
) -> Any:
    """Morlet time-frequency transform, equal to MNE's ``tfr_array_morlet``.

    Parameters
    ----------
    x : numpy.ndarray or dask.array.Array
        Signals, time along ``axis``. A dask array stays lazy: each block is computed from
        its own samples plus ``halo`` samples of its neighbours, so chunking never shows.
    sfreq : float
        Sampling rate in Hz.
    freqs : array_like of float, shape (n_freqs,)
        Frequencies in Hz, in ``(0, sfreq / 2)``.
    n_cycles : float or array_like, shape (n_freqs,)
        Cycles per wavelet (> 0).
    zero_mean : bool
        Zero-mean wavelets (MNE's default in ``tfr_array_morlet``).
    output : {"complex", "power", "amplitude", "phase"}
        Coefficients, ``|c|²``, ``|c|`` or ``angle(c)``.
    decim : int
        Keep every ``decim``-th output sample, as MNE's ``decim``; computed without the
        full-rate output.
    axis : int
        Time axis of ``x``.
    workers : int, optional
        Threads for numpy input (default: all CPUs); dask input uses dask's scheduler.
    chunks : dict, optional
        Dask input only: ``{axis: size}`` for the time and channel axes of the transform's
        blocks, overriding the memory plan (see :func:`transform`).
    dtype : {"complex128", "complex64"}, optional
        Precision of the computation and the result. ``"complex128"`` (the default) equals
        MNE to ~1e-15; ``"complex64"`` is opt-in single precision, about twice as fast, within
        ~1e-6 of the largest coefficient of MNE's float64 result (see :func:`transform`).

    Returns
    -------
    numpy.ndarray or dask.array.Array
        Shape ``(*other_axes, n_freqs, ceil(n_times / decim))``: the other axes of ``x`` in
        order, then frequency, then time (MNE's layout).

    Raises
    ------
    TFRParameterError, SignalTooShortError
        Before any computation.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from mne.time_frequency import tfr_array_morlet
    >>> x = np.random.default_rng(0).standard_normal((2, 3000))
    >>> ref = tfr_array_morlet(x[None], 250.0, [6.0, 20.0], 5.0, decim=3)[0]
    >>> ours = morlet(da.from_array(x, chunks=(1, 250)), 250.0, [6.0, 20.0], 5.0, decim=3)
    >>> ours.shape
    (2, 2, 1000)
    >>> bool(np.abs(ours.compute() - ref).max() <= 1e-10 * np.abs(ref).max())
    True
    """
    bank = morlet_kernels(sfreq, freqs, n_cycles, zero_mean=zero_mean, n_times=_n_times(x, axis))
    return transform(
        x,
        bank,
        output=output,
        decim=decim,
        axis=axis,
        workers=workers,
        chunks=chunks,
        dtype=dtype,
    )


def cwt(
    x: Any,
    sfreq: float,
    freqs: Any,
    wavelet: Any = "cmor1.5-1.0",
    *,
    output: str = "complex",
    decim: int = 1,
    axis: int = -1,
    precision: int = 12,
    workers: int | None = None,
    chunks: dict[int, int] | None = None,
    dtype: Any = None,
) -> Any:
    """Continuous wavelet transform with any PyWavelets wavelet, chunked and seam-free.

    Equals ``pywt.cwt(x, scales, wavelet, 1 / sfreq, method="fft", axis=axis)[0]`` with
    ``scales = pywt.frequency2scale(wavelet, freqs / sfreq)``, moved to this module's layout
    (frequency, then time, last). Both compute the same zero-padded linear convolution with the
    same kernels (see :func:`pywt_kernels`), edges included; they differ only by FFT rounding,
    about 1e-14 of the largest coefficient (tests assert 1e-10). Real wavelets give real
    coefficients.

    Parameters
    ----------
    x, sfreq, freqs, output, decim, axis, workers, chunks, dtype
        As in :func:`morlet`.
    wavelet : str or pywt.ContinuousWavelet
        A PyWavelets continuous wavelet, e.g. ``"cmor1.5-1.0"``, ``"morl"``, ``"mexh"``.
    precision : int
        Wavelet integration precision, ``2**precision`` points (``pywt.cwt``'s default).

    Examples
    --------
    >>> import numpy as np
    >>> import pywt
    >>> x = np.random.default_rng(1).standard_normal(2000)
    >>> freqs = np.array([8.0, 30.0])
    >>> scales = pywt.frequency2scale("cmor1.5-1.0", freqs / 500.0)
    >>> ref, _ = pywt.cwt(x, scales, "cmor1.5-1.0", 1 / 500.0, method="fft")
    >>> ours = cwt(x, 500.0, freqs, "cmor1.5-1.0")
    >>> bool(np.abs(ours - ref).max() <= 1e-10 * np.abs(ref).max())
    True
    """
    bank = pywt_kernels(sfreq, freqs, wavelet, precision=precision, n_times=_n_times(x, axis))
    return transform(
        x,
        bank,
        output=output,
        decim=decim,
        axis=axis,
        workers=workers,
        chunks=chunks,
        dtype=dtype,
    )


def _n_times(x: Any, axis: int) -> int | None:
    """Length of ``x`` along ``axis`` if it can be told (else the transform says why)."""
    shape = getattr(x, "shape", None)
    if shape is None:
        shape = np.shape(x)
    try:
        return int(shape[axis])
    except (IndexError, TypeError):
        return None


def transform(
    x: Any,
    bank: KernelBank,
    *,
    output: str = "complex",
    decim: int = 1,
    axis: int = -1,
    workers: int | None = None,
    chunks: dict[int, int] | None = None,
    dtype: Any = None,
) -> Any:
    """Apply a kernel bank along ``axis`` of a numpy or dask array (the engine).

    Parameters
    ----------
    x : numpy.ndarray or dask.array.Array
        Real or complex signals.
    bank : KernelBank
        From :func:`morlet_kernels`, :func:`pywt_kernels` or your own kernels.
    output : {"complex", "power", "amplitude", "phase"}
    decim : int
        Decimation factor of the output (exact, see the module docstring).
    axis : int
        Time axis.
    workers : int, optional
        Threads for numpy input (default: all CPUs).
    chunks : dict, optional
        Dask input only: block sizes ``{axis: size}`` overriding the memory plan of
        :func:`xnwb.blocks.plan_blocks` — ``axis`` (time) and the last other axis (channels);
        what is not given is planned so each task stays within dask's ``array.chunk-size``.
        The input's own chunks never decide the blocks: they are read once and re-split.
    dtype : {"complex128", "complex64"}, optional
        Precision of the FFTs, the products and the result (default ``"complex128"``).
        ``"complex64"`` computes in single precision from the kernels' double-precision
        spectra: measured against MNE's float64 result, the largest difference is ~2.4e-7 of
        the largest coefficient, ~4e-7 for power (``tests/test_precision.py`` pins ≤ 1e-6;
        MNE given float32 input differs from its float64 result by ~5e-8).

    Returns
    -------
    numpy.ndarray or dask.array.Array
        Shape ``(*other_axes, n_kernels, n_times_out)``; complex128 for
        ``"complex"`` (float64 when both kernels and signal are real), float64 otherwise;
        complex64 / float32 with ``dtype="complex64"``.

    Examples
    --------
    >>> import numpy as np
    >>> bank = KernelBank((np.array([1.0, 2.0, 3.0]),), (1,))  # out[n] = x[n+1] + 2x[n] + 3x[n-1]
    >>> transform(np.array([0.0, 1.0, 0.0, 0.0]), bank).round(12) + 0.0
    array([[1., 2., 3., 0.]])
    """
    if output not in OUTPUTS:
        raise TFRParameterError(f"output must be one of {OUTPUTS}, got {output!r}")
    if isinstance(decim, bool) or not isinstance(decim, int | np.integer) or decim < 1:
        raise TFRParameterError(f"decim must be a positive integer, got {decim!r}")
    is_dask = hasattr(x, "dask") and hasattr(x, "chunks")
    if not is_dask:
        x = np.asarray(x)
    if x.ndim == 0:
        raise TFRParameterError("the signal needs a time axis; got a scalar")
    if not -x.ndim <= axis < x.ndim:
        raise TFRParameterError(f"axis {axis} is out of range for an array of shape {x.shape}")
    axis = axis % x.ndim
    n = x.shape[axis]
    decim = _check_decim(decim, n)
    longest = max(bank.lengths)
    if n < longest:
        raise SignalTooShortError(
            f"the record has {n} samples along axis {axis}, shorter than the longest wavelet "
            f"({longest} samples); use a longer record, higher frequencies or fewer cycles"
        )
    if np.dtype(x.dtype).kind not in "biufc":
        raise TFRParameterError(f"the signal must be numeric, got dtype {x.dtype}")
    precision = _precision(dtype)
    complex_in = np.dtype(x.dtype).kind == "c"
    out_dtype = _out_dtype(output, bank.real and not complex_in, precision)
    spec = _BlockSpec(bank, axis, bank.halo, decim, output, out_dtype, complex_in, precision)
    if is_dask:
        return _transform_dask(x, spec, _block_plan(x, spec, chunks))
    return _transform_numpy(x, spec, workers)


# -- the engine ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _BlockSpec:
    bank: KernelBank
    axis: int
    halo: int
    decim: int
    output: str
    dtype: np.dtype  # of the result
    complex_in: bool
    precision: np.dtype = _DOUBLE  # real type of the FFTs and products
    summary: bool = False  # blocks give (count, mean, M2) of their values, not the values


def merge_small_chunks(chunks: Sequence[int], minimum: int) -> tuple[int, ...]:
    """Merge neighbouring chunks until each holds at least ``minimum`` samples.

    Only existing boundaries are kept or dropped, so the rechunk is a cheap concatenation.
    A record shorter than ``minimum`` becomes one chunk.

    Examples
    --------
    >>> merge_small_chunks((100, 10, 10, 300, 5), 50)
    (100, 325)
    >>> merge_small_chunks((7, 500, 1, 1200, 1292), 349)
    (507, 1201, 1292)
    """
    out: list[int] = []
    acc = 0
    for c in chunks:
        acc += int(c)
        if acc >= minimum:
            out.append(acc)
            acc = 0
    if acc:
        if out:
            out[-1] += acc
        else:
            out.append(acc)
    return tuple(out)


def suggest_time_chunk(
    n_times: int,
    n_other: int,
    n_freqs: int,
    halo: int,
    *,
    itemsize: int = 16,
    preferred: int | None = None,
    target_bytes: int | None = None,
) -> int:
    """A time-chunk length whose transformed block fits ``target_bytes`` (dask's chunk size).

    At least ``8 * halo`` (the overlap then costs ≤ 25 %), a multiple of ``preferred``
    (the storage chunk) when given, at most ``n_times``.

    Examples
    --------
    >>> suggest_time_chunk(600_000, 64, 20, 556, target_bytes=128 * 2**20)
    6553
    >>> suggest_time_chunk(600_000, 64, 20, 556, preferred=2000, target_bytes=128 * 2**20)
    6000
    """
    if target_bytes is None:
        target_bytes = dask_chunk_size()
    size = max(int(target_bytes) // max(1, n_other * n_freqs * itemsize), 8 * halo, 1)
    if preferred:
        size = max(int(preferred), size // int(preferred) * int(preferred))
    return int(min(size, n_times))


def _transform_numpy(x: np.ndarray, spec: _BlockSpec, workers: int | None) -> np.ndarray:
    h, q = spec.halo, spec.decim
    x = np.moveaxis(x, spec.axis, -1)
    n = x.shape[-1]
    workers = workers or os.cpu_count() or 1
    rows = math.prod(x.shape[:-1])
    out = np.empty((*x.shape[:-1], len(spec.bank), -(-n // q)), dtype=spec.dtype)
    if q > 1:
        # Decimated: the dask path's blocks (a few channels, ~16 halos). Their folded
        # products stay in cache; all channels at once made them tens of MB (64 channels at
        # 1 kHz, decim=10: 0.35 s against 0.22 s through dask).
        # (Bounded like dask's default chunk size, without importing dask for numpy input.)
        plan = plan_transform(
            x.shape, -1, spec.bank, output=spec.output, decim=q, dtype=x.dtype,
            precision=spec.precision, target_bytes=_NUMPY_BLOCK_BYTES,
        )  # fmt: skip
        group, block, nfft = plan.rows, plan.time, plan.nfft
    else:
        # All signals at once, in blocks as long as the dask plan's at full rate (one FFT
        # row in cache where that pays, see full_rate_time) unless memory binds first, at
        # least one block per worker, and as many samples as their FFT length holds.
        group = max(rows, 1)
        preferred = full_rate_time(h)
        shortest = min(8 * h, preferred)
        # Bounded: a worker's FFT buffers (the block's input, spectrum and row batches,
        # ~24 bytes per signal and sample) within _NUMPY_BLOCK_BYTES, down to 8 halos.
        bounded = max(shortest, _NUMPY_BLOCK_BYTES // (24 * group))
        block = max(shortest, min(preferred, bounded, -(-n // workers)))
        nfft = fft_length(min(block, n) + 2 * h)
        if block < n:
            block = max(block, nfft - 2 * h)
    if group < rows:
        # Signals a group at a time as the dask path takes them: the axes before the last
        # other axis one index at a time, the last in groups — always views of x and out
        # (flattening the other axes would copy the whole input for some layouts).
        parts: list[Any] = [
            (*index, slice(g, g + group))
            for index in np.ndindex(*x.shape[:-2])
            for g in range(0, x.shape[-2], group)
        ]
    else:
        parts = [Ellipsis] if rows else []

    pools: dict[int, _Scratch] = {}  # one per worker thread, for this call only

    def run(task: tuple[Any, int]) -> None:
        part, start = task
        stop = min(start + block, n)
        dst = out[part][..., -(-start // q) : -(-stop // q)]
        xe = _extended(x[part], start - h, stop + h)
        pool = pools.setdefault(threading.get_ident(), _Scratch())
        with pool.active():
            _block(xe, spec, start, stop - start, nfft, out=dst)  # straight into the result

    tasks = [(part, t) for part in parts for t in range(0, n, block)]
    workers = min(len(tasks), workers)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:  # FFTs and ufuncs release the GIL
            list(pool.map(run, tasks))
    else:
        for task in tasks:
            run(task)
    return out


def _extended(x: np.ndarray, lo: int, hi: int) -> ExtendedBlock:
    """Samples ``lo:hi`` along the last axis, zeros outside the record (MNE's padding).

    The samples inside the record as one piece, not copied: :func:`_block` copies them once
    into its FFT buffer and zeros the rest there (fresh memory is expensive, see
    :class:`_Scratch`).
    """
    n = x.shape[-1]
    a, b = max(lo, 0), min(hi, n)
    place = (*(slice(0, size) for size in x.shape[:-1]), slice(a - lo, b - lo))
    return ExtendedBlock((*x.shape[:-1], hi - lo), x.dtype, ((place, x[..., a:b]),))


def plan_transform(
    shape: Sequence[int],
    axis: int,
    bank: KernelBank,
    *,
    output: str = "complex",
    decim: int = 1,
    dtype: Any = np.float64,
    chunks: dict[int, int] | None = None,
    precision: Any = None,
    target_bytes: int | None = None,
) -> BlockPlan:
    """The block plan :func:`transform` uses for a dask array of ``shape`` and ``dtype``.

    ``target_bytes`` bounds one block's memory (default dask's ``array.chunk-size``); see
    :func:`xnwb.blocks.plan_blocks`.

    Examples
    --------
    >>> bank = morlet_kernels(30_000.0, np.geomspace(10, 100, 20))
    >>> p = plan_transform((124, 36_000_000), 1, bank, decim=30)
    >>> p.rows, p.time, p.halo
    (4, 150870, 16711)
    """
    ndim = len(shape)
    axis = axis % ndim
    others = [a for a in range(ndim) if a != axis]
    given = {int(a) % ndim: int(c) for a, c in (chunks or {}).items()}
    for a, c in given.items():
        if c < 1 or (a != axis and (not others or a != others[-1])):
            raise TFRParameterError(
                f"chunks may set the time axis ({axis}) and the channel axis "
                f"({others[-1] if others else None}) to positive sizes; got {chunks!r}"
            )
    complex_in = np.dtype(dtype).kind == "c"
    work = _precision(precision)
    out_dtype = _out_dtype(output, bank.real and not complex_in, work)
    return plan_blocks(
        shape[axis],
        math.prod(shape[a] for a in others) if others else 1,
        len(bank),
        bank.halo,
        decim=max(1, int(decim)),
        out_itemsize=out_dtype.itemsize,
        in_itemsize=np.dtype(dtype).itemsize,
        complex_in=complex_in,
        work_itemsize=np.result_type(work, np.complex64).itemsize,
        rows=given.get(others[-1]) if others else None,
        time=given.get(axis),
        target_bytes=target_bytes,
    )


def _block_plan(x: Any, spec: _BlockSpec, chunks: dict[int, int] | None) -> BlockPlan:
    """The memory plan of ``x``'s transform blocks (dask input), with ``chunks`` overrides."""
    return plan_transform(
        x.shape,
        spec.axis,
        spec.bank,
        output=spec.output,
        decim=spec.decim,
        dtype=x.dtype,
        chunks=chunks,
        precision=spec.precision,
    )


def _time_chunks(n: int, block: int, halo: int) -> tuple[int, ...]:
    """Blocks of ``block`` samples; a last remainder shorter than the halo joins its neighbour."""
    chunks = (block,) * (n // block) + ((n % block,) if n % block else ())
    return merge_small_chunks(chunks, max(halo, 1))


def _transform_dask(x: Any, spec: _BlockSpec, plan: BlockPlan) -> Any:
    result = _dask_blocks(x, spec, plan)
    name, ndim = result.name, result.ndim
    source = x.copy()  # the input as it is now: an in-place edit of x renames x, not this

    def block_moments_of(array: Any, axis: int) -> Any:
        # Only the untouched result (an in-place edit renames it), reduced along time.
        if getattr(array, "name", None) != name or axis % ndim != ndim - 1:
            return None
        # Computed right away by xnwb.stats.moments. With the local schedulers each block
        # takes the input chunk it overlaps most as it is, with no getitem task of its own
        # (0.96x of the seed's pass); a distributed worker is sent small halo pieces rather
        # than a neighbour's whole chunk, so there every overlap stays a piece.
        whole = active_client() is None
        return _dask_blocks(source, dataclasses.replace(spec, summary=True), plan, whole)

    # xnwb.stats.moments asks an array for this hook: the statistics pass then summarises
    # each block as it is transformed, without writing its values out (see _Summary). The
    # hook holds the input's graph (the result holds it anyway), never the result itself.
    result._xnwb_block_moments = block_moments_of
    return result


def _dask_blocks(x: Any, spec: _BlockSpec, plan: BlockPlan, whole_chunks: bool = False) -> Any:
    """The transform's dask graph: a block's coefficients, or its summary (``spec.summary``).

    ``whole_chunks``: each block takes its main input chunk whole (see
    :func:`~xnwb.halo.map_halo_blocks`), for graphs that are only computed whole."""
    from dask.base import tokenize

    h, q = spec.halo, spec.decim
    n = x.shape[spec.axis]
    # Blocks planned by memory: a few channels (the last other axis; any axes before it one
    # row at a time) and about sixteen halos of time (at full rate, one in-cache FFT where
    # that is cheaper); never the storage layout's grouping.
    other = [s for a, s in enumerate(x.shape) if a != spec.axis]
    other_chunks: tuple[tuple[int, ...], ...] = ()
    if other:
        rows = max(1, min(plan.rows, other[-1]))
        rest = other[-1] % rows
        groups = (rows,) * (other[-1] // rows) + ((rest,) if rest else ())
        # A zero-length axis is one empty chunk in dask, not none.
        other_chunks = (*(((1,) * s or (0,)) for s in other[:-1]), groups or (0,))
    chunks_t = _time_chunks(n, plan.time, h)
    starts = tuple(int(s) for s in np.cumsum((0, *chunks_t[:-1])))
    # One FFT length for all blocks (one set of kernel spectra: 59 MB at 30 kHz), except at
    # full rate in cache: there a last block that took in a short remainder gets a longer
    # FFT of its own rather than lengthen every block's past the cache (see
    # full_rate_time); its spectra are a few MB.
    regular = fft_length(min(plan.time, max(chunks_t)) + 2 * h, q)
    longest = fft_length(max(chunks_t) + 2 * h, q)
    if q > 1 or regular > IN_CACHE_FFT_POINTS:
        nffts = (longest,) * len(chunks_t)
    else:
        nffts = tuple(regular if c + 2 * h <= regular else longest for c in chunks_t)
    out_t = tuple(-(-(s + c) // q) - -(-s // q) for s, c in zip(starts, chunks_t, strict=True))
    prefix = f"{_NAMES[spec.output]}-summary" if spec.summary else _NAMES[spec.output]
    meta = np.empty((0,) * (x.ndim + 1), dtype=np.float64 if spec.summary else spec.dtype)
    if spec.summary:  # each block's (count, mean, M2) of every row, along its time axis
        out_t = (len(_Summary.FIELDS),) * len(chunks_t)
    name = f"{prefix}-{tokenize(x.name, spec, nffts, other_chunks, chunks_t, whole_chunks)}"
    return map_halo_blocks(
        _dask_block,
        x,
        other_chunks=other_chunks,
        time_chunks=chunks_t,
        halo=h,
        out_chunks=(*other_chunks, (len(spec.bank),), out_t),
        name=name,
        meta=meta,
        axis=spec.axis,
        spec=spec,
        starts=starts,
        lengths=chunks_t,
        nffts=nffts,
        pieces=True,  # _block copies each piece once, straight into its FFT buffer
        whole_main_chunk=whole_chunks,
    )


_NAMES = {
    "complex": "wavelet",
    "power": "wavelet-power",
    "amplitude": "wavelet-amplitude",
    "phase": "wavelet-phase",
}


def _dask_block(
    xe: ExtendedBlock,
    *,
    time_block: int,
    spec: _BlockSpec,
    starts: tuple[int, ...],
    lengths: tuple[int, ...],
    nffts: tuple[int, ...],
) -> np.ndarray:
    i = time_block
    with _thread_scratch().active():
        return _block(xe, spec, starts[i], lengths[i], nffts[i])


class _Scratch:
    """Work arrays reused from block to block by one thread.

    Fresh memory is expensive here: each new 4 KiB page costs ~8 µs in this virtual machine
    (a 1.3 MB spectrum: 2.6 ms of page faults, 6x its FFT), and freed blocks go back to the
    system. The engine's intermediates (padded input, spectrum, folded products) live in a
    thread's slots instead; results are always new arrays.
    """

    def __init__(self) -> None:
        self.slots: dict[str, np.ndarray] = {}

    def get(self, slot: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        size = math.prod(shape) * dtype.itemsize
        buf = self.slots.get(slot)
        if buf is None or buf.size < size:
            buf = self.slots[slot] = np.empty(size, dtype=np.uint8)
        return buf[:size].view(dtype).reshape(shape)

    @contextlib.contextmanager
    def active(self) -> Iterator[_Scratch]:
        previous = getattr(_LOCAL, "scratch", None)
        _LOCAL.scratch = self
        try:
            yield self
        finally:
            _LOCAL.scratch = previous


_LOCAL = threading.local()


def _thread_scratch() -> _Scratch:
    """This thread's lasting slots (dask's worker threads transform block after block)."""
    pool = getattr(_LOCAL, "lasting", None)
    if pool is None:
        pool = _LOCAL.lasting = _Scratch()
    return pool


def _work(slot: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised work array: from the active slots, or new outside the engine's loops."""
    pool = getattr(_LOCAL, "scratch", None)
    return np.empty(shape, dtype=dtype) if pool is None else pool.get(slot, shape, dtype)


def _block(
    xe: np.ndarray | ExtendedBlock,
    spec: _BlockSpec,
    start: int,
    n_valid: int,
    nfft: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Transform one extended block, time last: its samples plus ``halo`` on each side.

    ``xe`` is an array or the input pieces of one (:class:`~xnwb.halo.ExtendedBlock`),
    which are copied once, straight into the FFT buffer.

    ``start`` is the block's first sample in the record (it fixes the decimation phase);
    the result, written into ``out`` when given, has shape
    ``(*xe.shape[:-1], n_kernels, n_out)``; with ``spec.summary``, the ``(count, mean, M2)``
    of each of its rows instead, shape ``(*xe.shape[:-1], n_kernels, 3)``.
    """
    h, q = spec.halo, spec.decim
    block = xe if isinstance(xe, ExtendedBlock) else ExtendedBlock.of(xe)
    rest = block.shape[:-1]
    k = math.prod(rest)
    offset = (-start) % q  # first sample of this block on the decimated grid
    n_out = max(0, -(-(n_valid - offset) // q))
    n_freqs = len(spec.bank)
    if k == 0:  # no signals (FFT libraries refuse empty arrays): an empty result
        if spec.summary:
            return np.empty((*rest, n_freqs, len(_Summary.FIELDS)))
        return out if out is not None else np.empty((*rest, n_freqs, n_out), spec.dtype)
    convert = _CONVERT[
        spec.output if spec.dtype.kind == "c" or spec.output != "complex" else "real"
    ]
    if spec.summary:
        sink: _Store | _Summary = _Summary((k, n_freqs, n_out), spec.dtype, convert)
    else:
        sink = _Store(_rows_view(out, (k, n_freqs, n_out), spec.dtype), convert)
    work_dtype = np.dtype(spec.precision)
    cdtype = np.result_type(work_dtype, np.complex64)
    # Place the block circularly so that its first wanted output lands at FFT index 0.
    shift = h + offset
    buf = _work("input", (k, nfft), cdtype if spec.complex_in else work_dtype)
    block.rotate_into(buf.reshape(*rest, nfft), shift)
    if q == 1:
        # The full complex spectrum, real input or not; then a few rows at a time, so
        # multiply, inverse FFT and conversion stay in cache and the result is written once.
        spectrum = _fft.forward(buf, out=_work("spectrum", (k, nfft), cdtype))
        del buf
        kernels = spec.bank.spectra(nfft, 1, cdtype)
        rows = max(1, min(k, _CACHE_BYTES // (cdtype.itemsize * nfft)))
        scratch = _work("rows", (rows, nfft), cdtype)
        for c0 in range(0, k, rows):
            part = spectrum[c0 : c0 + rows]
            work = scratch[: part.shape[0]]
            for f in range(n_freqs):
                np.multiply(part, kernels[f], out=work)
                coefs = _fft.ifft(work, out=work)
                sink.put(coefs[:, :n_out], slice(c0, c0 + rows), f)
    else:
        # Polyphase: the m-point spectra of the q interleaved sample sequences
        # buf[:, a::q], written straight into a (bin, channel, phase) layout, times the
        # kernels' polyphase spectra (m, q, F) — one small product (k, q) @ (q, F) per bin
        # j — give the spectrum of every q-th output sample (see KernelBank.spectra). The
        # FFTs are shorter than one of length nfft, and no transposing copy is needed.
        m = nfft // q
        bins = _work("bins", (m, k, q), cdtype)
        _fft.forward(buf.reshape(k, m, q), axis=1, out=bins.transpose(1, 0, 2))
        del buf
        # The complex product: as fast as or faster than the same product on interleaved real
        # views (0.78-0.95x of its time in blocks of 4-16 channels, complex128 and complex64).
        prod = _work("products", (m, k, n_freqs), cdtype)
        np.matmul(bins, spec.bank.spectra(nfft, q, cdtype), out=prod)
        del bins
        # The inverse FFTs, a few signals at a time, write into a cache-sized (rows, F, m)
        # slot that the sink converts or summarises while it is still in cache. (All at
        # once, the block's coefficients went to memory and came back for the power and
        # each moment: as long as the folding product at 1 kHz, decim=10.)
        rows = max(1, min(k, _CACHE_BYTES // (cdtype.itemsize * n_freqs * m)))
        slot = _work("coefficients", (rows, n_freqs, m), cdtype)
        for c0 in range(0, k, rows):
            coefs = slot[: min(rows, k - c0)]
            _fft.ifft(prod[:, c0 : c0 + rows], axis=0, out=coefs.transpose(2, 0, 1))
            sink.put(coefs[..., :n_out], slice(c0, c0 + rows), slice(None))
        del prod
    if isinstance(sink, _Summary):
        return sink.finish().reshape(*rest, n_freqs, len(_Summary.FIELDS))
    res = sink.res
    if out is not None and not np.may_share_memory(res, out):
        out[...] = res.reshape(out.shape)
    return res.reshape(*rest, n_freqs, n_out) if out is None else out


class _Store:
    """Where a block's coefficients go: converted (power, phase, ...) into its result rows."""

    def __init__(self, res: np.ndarray, convert: Any) -> None:
        self.res, self.convert = res, convert

    def put(self, coefs: np.ndarray, rows: slice, freqs: slice | int) -> None:
        self.convert(coefs, self.res[rows, freqs])


class _Summary:
    """A block's statistics instead of its values: ``(count, mean, M2)`` of each row.

    The values summarised are those :func:`xnwb.stats.values` takes of the result (the power
    of complex coefficients, real results as they are). Each piece of coefficients handed
    over is converted a few rows at a time into a work slot and summarised there by
    :func:`xnwb.stats.row_moments` while it is in cache: the statistics pass never writes a
    transform block to memory nor hands it on.
    """

    FIELDS = Moments._fields

    def __init__(self, shape: tuple[int, int, int], dtype: np.dtype, convert: Any) -> None:
        rows, n_freqs, self.n = shape
        self.value_dtype = np.finfo(dtype).dtype
        self.mean = np.zeros((rows, n_freqs))
        self.m2 = np.zeros((rows, n_freqs))
        self.convert = _power if np.dtype(dtype).kind == "c" else convert

    def put(self, coefs: np.ndarray, rows: slice, freqs: slice | int) -> None:
        n = self.n
        if n == 0:  # no output sample in this block: count 0, moments 0
            return
        src = coefs.reshape(-1, n)
        mean, m2 = np.empty(src.shape[0]), np.empty(src.shape[0])
        step = max(1, _CACHE_BYTES // (src.itemsize * n))
        for r0 in range(0, src.shape[0], step):
            part = src[r0 : r0 + step]
            vals = _work("summary", part.shape, self.value_dtype)
            self.convert(part, vals)
            if vals.dtype != np.float64:  # single precision: moments still in float64
                vals = vals.astype(np.float64)
            row_moments(vals, mean[r0 : r0 + step], m2[r0 : r0 + step])
        shape = self.mean[rows, freqs].shape
        self.mean[rows, freqs] = mean.reshape(shape)
        self.m2[rows, freqs] = m2.reshape(shape)

    def finish(self) -> np.ndarray:
        count = np.full(self.mean.shape, self.n, dtype=np.float64)
        return np.stack((count, self.mean, self.m2), axis=-1)


_CACHE_BYTES = CACHE_BYTES  # working set of the inner loop: a few FFT rows
_NUMPY_BLOCK_BYTES = 128 * 2**20  # memory bound of one numpy-path block (per worker)


def _rows_view(out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``out`` seen as ``shape`` without copying, or a new array when that is impossible."""
    if out is not None:
        view = out.reshape(shape)
        if np.may_share_memory(view, out):
            return view
    return np.empty(shape, dtype=dtype)


def _copy(src: np.ndarray, dst: np.ndarray) -> None:
    np.copyto(dst, src)


def _real(src: np.ndarray, dst: np.ndarray) -> None:
    np.copyto(dst, src.real)


def _power(src: np.ndarray, dst: np.ndarray) -> None:
    # src is the engine's work memory, free to overwrite: its interleaved real and imaginary
    # parts are squared in place (one contiguous pass) and added in pairs into dst, a few
    # rows at a time so both stay in cache (2.9 against 3.7 ms for a 16-channel block here;
    # a fresh temporary beside the fresh result had made it 5.7 ms).
    src, dst = np.atleast_2d(src), np.atleast_2d(dst)  # views: writes land in dst
    if src.strides[-1] != src.itemsize or not src.flags.writeable:
        np.square(src.real, out=dst)  # not work memory: left as it is
        dst += np.square(src.imag)
        return
    step = max(1, _CACHE_BYTES // max(1, src[0].nbytes))
    for r0 in range(0, dst.shape[0], step):
        parts = src[r0 : r0 + step].view(src.real.dtype)
        np.square(parts, out=parts)
        np.add(parts[..., 0::2], parts[..., 1::2], out=dst[r0 : r0 + step])


def _amplitude(src: np.ndarray, dst: np.ndarray) -> None:
    np.abs(src, out=dst)


def _phase(src: np.ndarray, dst: np.ndarray) -> None:
    np.arctan2(src.imag, src.real, out=dst)


_CONVERT = {
    "complex": _copy,
    "real": _real,
    "power": _power,
    "amplitude": _amplitude,
    "phase": _phase,
}


_PRECISIONS = {"complex128": np.float64, "complex64": np.float32}


def _precision(dtype: Any) -> np.dtype:
    """The real type the engine computes in, from ``dtype=`` (``None``: double precision)."""
    if dtype is None:
        return np.dtype(np.float64)
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = repr(dtype)
    name = {"float64": "complex128", "float32": "complex64"}.get(name, name)
    if name not in _PRECISIONS:
        raise TFRParameterError(
            f"dtype must be 'complex128' (the default, equal to MNE) or 'complex64' (single "
            f"precision, ~1e-6 relative), got {dtype!r}"
        )
    return np.dtype(_PRECISIONS[name])


def _out_dtype(output: str, real: bool, precision: Any = np.float64) -> np.dtype:
    real_type = np.dtype(precision)
    if output == "complex" and not real:
        return np.result_type(real_type, np.complex64)
    return real_type
