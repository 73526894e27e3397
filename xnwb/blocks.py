"""Block plans for the chunked transform: how many channels and samples one dask task takes.

The transform's blocks are planned by memory, not by how the file happens to be stored. A
wavelet transform multiplies the data: one float64 sample in becomes ``n_freqs`` complex128
samples out, and its FFT work buffers are as long as the block plus two halos. So a block that
spans every channel of a 121-channel storage chunk at 30 kHz holds gigabytes, and a one-channel
window that lands in it transforms all 121 channels. A plan instead takes

- **a small group of channels** per block: as many as give the block about
  :data:`BLOCK_POINTS` (2**20) FFT points, from :data:`MIN_ROWS` (4) to ``max_rows`` (16 by
  default) — 4 channels at 30 kHz, 16 at 1–2.5 kHz, where short FFTs in groups of 4 pay their
  per-block and per-product overheads over and over. A window of ``k`` channels computes
  only the blocks of those channels' groups, about one block's work per group at any rate;
- **time blocks of about 16 halos** (the halo is half the longest wavelet), so the overlap
  re-transformed at each seam stays near 12 % of the work (with 8 halos it was a quarter, and
  the dask path ran ~25 % behind the numpy one), filled up to their fast FFT length, a
  multiple of ``decim`` so every block starts on the decimated grid. At full rate, where the
  inverse FFTs are the work, a block instead fills one FFT row that stays in cache
  (:data:`IN_CACHE_FFT_POINTS`, 8,192 points) whenever that costs less per output sample
  and is at least eight halos long (:func:`full_rate_time`): a 1 kHz block of 10-100 Hz
  wavelets then re-transforms 14 % instead of 11 %, but each point costs two thirds;
- both reduced (channels down to 4 first, then time, then channels) until the estimated peak
  memory of one task (input, FFT buffers, result and the kernel spectra) fits
  ``target_bytes`` — dask's ``array.chunk-size`` unless given — whatever the channel count,
  sampling rate, number of frequencies and ``decim``.

Examples
--------
>>> plan = plan_blocks(36_000_000, 124, n_freqs=20, halo=16711, decim=30,
...                    target_bytes=128 * 2**20)
>>> plan.rows, plan.time, plan.peak_bytes <= 128 * 2**20
(4, 150870, True)
"""

from __future__ import annotations

from dataclasses import dataclass

from xnwb.chunking import dask_chunk_size

__all__ = [
    "BLOCK_POINTS",
    "CACHE_BYTES",
    "DEFAULT_MAX_ROWS",
    "MIN_ROWS",
    "BlockPlan",
    "block_peak_bytes",
    "fast_size",
    "fft_length",
    "full_rate_time",
    "plan_blocks",
]

MIN_ROWS = 4  # channels per block, memory allowing, however long the FFTs
DEFAULT_MAX_ROWS = 16  # channels per block at most: what a one-channel window transforms
BLOCK_POINTS = 2**20  # FFT points (channels x FFT length) one block aims at
HALOS_PER_BLOCK = 16  # block length in halos: the overlap is ~2/16 of the work
MIN_HALOS = 8  # shortest block (in halos) before a plan gives up channels per block
MIN_BLOCK = 1024  # samples: below this, per-task overheads dominate short kernels
# FFT rows of at most this many points cost least per point: an inverse FFT of 8,192
# points took 7.9 ns per point here (complex128, ducc0, one thread), 11-13 ns at
# 9,216-12,288, 9-10 ns at 16,384-32,768 and 15.6 ns at 61,440; complex64 5.3 ns up to
# 9,216, then 7.6-15 ns up to 24,576. (A row of 8,192 complex128 points, with the few rows an
# FFT library interleaves for SIMD, fills a 512 KiB L2 cache.)
IN_CACHE_FFT_POINTS = 8192
# Per-point cost of longer rows, relative: 1.4-1.7 just past the step (the 16-halo blocks of
# short wavelets land there), 1.2 at 16,384-32,768, so an in-cache block must also be at
# least MIN_HALOS halos long (below that its overlap costs more than the cache saves).
OUT_OF_CACHE_COST = 1.5
#: Working set of the transform's inner loops (a few FFT rows and what is made of them).
CACHE_BYTES = 2 * 2**20


@dataclass(frozen=True)
class BlockPlan:
    """One task's share of a transform.

    Attributes
    ----------
    rows : int
        Signals (channels) per block.
    time : int
        Samples per block along time (the last block may hold up to ``halo`` more).
    halo : int
        Samples borrowed from each neighbour.
    nfft : int
        FFT length of one extended block (at full rate, a last block that took in a
        short remainder has a longer one of its own).
    peak_bytes : int
        Estimated peak memory of one task, kernel spectra included.
    """

    rows: int
    time: int
    halo: int
    nfft: int
    peak_bytes: int


# FFT lengths 2**a times one of these: at most 12.5 % longer than asked, and 1.5-3x faster
# per point than lengths with factors 7 or 11 (31,185 = 3**4·5·7·11: 12 ns per point here,
# 31,104 = 2**7·3**5 and 32,768: 5 ns).
_FAST_ODD_FACTORS = (1, 3, 5, 9, 15, 27, 45)


def fast_size(n: int) -> int:
    """Smallest length ``>= n`` of the form ``2**a * s``, ``s`` in 1, 3, 5, 9, 15, 27, 45.

    Examples
    --------
    >>> fast_size(11114), fast_size(31000), fast_size(1)
    (11520, 32768, 1)
    """
    n = max(1, int(n))
    best = None
    for s in _FAST_ODD_FACTORS:
        size = s
        while size < n:
            size *= 2
        best = size if best is None else min(best, size)
    return int(best)


def fft_length(n: int, decim: int = 1) -> int:
    """Fast FFT length ``>= n`` that is a multiple of ``decim`` (``decim × fast_size``).

    Any length ``>= n`` gives the same linear convolution (MNE's result to rounding); this one
    is fast for both FFT libraries, and with ``decim`` its folded inverse FFTs are fast too.

    Examples
    --------
    >>> fft_length(11114), fft_length(11114, 10)
    (11520, 11520)
    """
    return decim * fast_size(-(-int(n) // decim))


def full_rate_time(halo: int) -> int:
    """Samples per block at full rate (``decim=1``): the cheaper per output sample of

    - the longest block whose FFT rows stay in cache (:data:`IN_CACHE_FFT_POINTS`), when
      that is at least :data:`MIN_HALOS` halos long, and
    - :data:`HALOS_PER_BLOCK` halos (at least :data:`MIN_BLOCK`), filled to its FFT length,

    each FFT point costing :data:`OUT_OF_CACHE_COST` in rows longer than the cache holds.
    Long wavelets (a 10 Hz one at 30 kHz: 16,711-sample halos) keep the long blocks.

    Examples
    --------
    >>> full_rate_time(557)  # 1 kHz, 10-100 Hz, 7 cycles: one 8,192-point FFT per block
    7078
    >>> full_rate_time(16711) == fft_length(16 * 16711 + 2 * 16711) - 2 * 16711
    True
    """
    h = max(0, int(halo))
    in_cache = IN_CACHE_FFT_POINTS  # a power of two: a fast length itself

    def cost(nfft: int) -> float:
        per_point = 1.0 if nfft <= in_cache else OUT_OF_CACHE_COST
        return per_point * nfft / (nfft - 2 * h)

    long_fft = fft_length(max(HALOS_PER_BLOCK * h, MIN_BLOCK) + 2 * h)
    if in_cache - 2 * h >= max(MIN_HALOS * h, 1) and cost(in_cache) <= cost(long_fft):
        return in_cache - 2 * h
    return long_fft - 2 * h


def block_peak_bytes(
    rows: int,
    time: int,
    halo: int,
    n_freqs: int,
    *,
    decim: int = 1,
    out_itemsize: int = 16,
    in_itemsize: int = 8,
    complex_in: bool = False,
    work_itemsize: int = 16,
) -> int:
    """Estimated peak memory of transforming one block of ``rows × time`` samples.

    Counts what :func:`xnwb.tfr.transform` holds at once for a block: the extended input
    (twice: dask's overlap assembles it from its neighbours' pieces), the zero-padded FFT
    buffer and its spectrum, the inverse-FFT work arrays (``decim > 1``: the folded products and
    a cache-sized slot of their inverse FFTs),
    the result, and the kernel spectra for this FFT length (cached once per process).
    ``work_itemsize`` is the engine's complex type: 16 bytes, or 8 with ``dtype="complex64"``.

    Examples
    --------
    >>> block_peak_bytes(1, 10_000, 1_000, 20) // 2**20  # MiB
    7
    """
    q = max(1, int(decim))
    ext = time + 2 * halo
    nfft = fft_length(ext, q)
    n_out = -(-time // q)
    c = int(work_itemsize)
    buf_item = c if complex_in else c // 2
    total = 2 * rows * ext * in_itemsize  # the extended block and the pieces it came from
    total += rows * nfft * (buf_item + c)  # padded buffer and its spectrum
    if q == 1:
        total += 2 * max(1, min(rows, CACHE_BYTES // (c * nfft))) * nfft * c  # row batches
    else:
        m = nfft // q
        total += m * rows * n_freqs * c  # the folded products
        # their inverse FFTs, a few signals at a time in a cache-sized slot
        total += max(1, min(rows, CACHE_BYTES // (c * n_freqs * m))) * n_freqs * m * c
    total += rows * n_freqs * n_out * out_itemsize  # the result
    total += n_freqs * nfft * c  # the kernel spectra (shared by the tasks of one process)
    return int(total)


def plan_blocks(
    n_times: int,
    n_rows: int,
    n_freqs: int,
    halo: int,
    *,
    decim: int = 1,
    out_itemsize: int = 16,
    in_itemsize: int = 8,
    complex_in: bool = False,
    work_itemsize: int = 16,
    target_bytes: int | None = None,
    rows: int | None = None,
    time: int | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> BlockPlan:
    """Plan transform blocks whose peak memory stays within ``target_bytes``.

    Parameters
    ----------
    n_times, n_rows : int
        Samples along time; signals (channels and any other axes) in all.
    n_freqs : int
        Kernels in the bank.
    halo : int
        The bank's halo (:attr:`xnwb.wavelets.KernelBank.halo`).
    decim : int
        Output decimation; block lengths are multiples of it.
    out_itemsize, in_itemsize : int
        Bytes per output and input sample (16 for complex output, 8 for real).
    complex_in : bool
        Complex input signals.
    work_itemsize : int
        Bytes of the engine's complex type (16; 8 with ``dtype="complex64"``).
    target_bytes : int, optional
        Memory bound of one task; default dask's ``array.chunk-size`` (128 MiB unless set).
    rows, time : int, optional
        Fix either (an explicit ``chunks=``); the other is planned around it. A fixed
        ``time`` is rounded up to a multiple of ``decim`` and to at least the halo.
    max_rows : int
        Most signals per block when ``rows`` is not fixed; between :data:`MIN_ROWS` and
        this, as many as give a block about :data:`BLOCK_POINTS` FFT points.

    Returns
    -------
    BlockPlan

    Examples
    --------
    >>> p = plan_blocks(1_800_000, 384, 20, halo=16711, target_bytes=128 * 2**20)
    >>> p.rows, p.time, p.peak_bytes <= 128 * 2**20     # full rate, complex: one channel
    (1, 150898, True)
    >>> plan_blocks(600_000, 64, 20, halo=557, decim=10, rows=8, time=5000).time
    5000
    """
    if target_bytes is None:
        target_bytes = dask_chunk_size()
    q = max(1, int(decim))
    h = max(0, int(halo))
    n_times, n_rows = max(1, int(n_times)), max(1, int(n_rows))

    def round_time(t: int) -> int:
        t = max(int(t), h, 1)
        t = -(-t // q) * q  # every block starts on the decimated grid
        return min(t, -(-n_times // q) * q)

    def peak(r: int, t: int) -> int:
        return block_peak_bytes(
            r,
            t,
            h,
            n_freqs,
            decim=q,
            out_itemsize=out_itemsize,
            in_itemsize=in_itemsize,
            complex_in=complex_in,
            work_itemsize=work_itemsize,
        )

    if time is not None:
        t = round_time(time)
    elif q == 1:  # the inverse FFTs are the work: their rows in cache where that pays
        t = round_time(full_rate_time(h))
    else:
        t = round_time(max(HALOS_PER_BLOCK * h, MIN_BLOCK))
    if rows is None:
        # Channels enough for ~BLOCK_POINTS of FFT work: short FFTs in small groups pay
        # their per-block and per-product overheads over and over (a whole pass at 1 kHz
        # runs ~1.7x faster in 16-channel blocks than in 4-channel ones), while a window
        # of one channel still transforms about one block's work whatever the rate.
        wanted = max(MIN_ROWS, BLOCK_POINTS // fft_length(t + 2 * h, q))
        r = max(1, min(int(max_rows), wanted, n_rows))
        while r > MIN_ROWS and peak(r, t) > target_bytes:
            r -= 1
    else:
        r = max(1, min(int(rows), n_rows))
    if time is None:
        # Over the bound: first give up the channels beyond MIN_ROWS, then block length down
        # to MIN_HALOS halos (a third of the work re-transformed at worst), then channels,
        # then length again.
        short = round_time(max(MIN_HALOS * h, MIN_BLOCK))
        while t > short and peak(r, t) > target_bytes:
            t = round_time(max(short, t * 3 // 4))
    if rows is None:
        while r > 1 and peak(r, t) > target_bytes:
            r -= 1
    if time is None:
        # Shorter blocks cost a larger halo share, but memory is the bound that matters.
        floor = round_time(max(2 * h, MIN_BLOCK))
        while t > floor and peak(r, t) > target_bytes:
            t = round_time(max(floor, t * 3 // 4))
        # The FFT length is rounded up to a fast size: fill it with samples (more output for
        # the same transforms) when that still fits the memory bound.
        filled = (fft_length(t + 2 * h, q) - 2 * h) // q * q
        if t < filled < n_times and peak(r, filled) <= target_bytes:
            t = filled
    return BlockPlan(
        rows=r, time=t, halo=h, nfft=fft_length(min(t, n_times) + 2 * h, q), peak_bytes=peak(r, t)
    )
