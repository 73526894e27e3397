"""Benchmark: xnwb's chunked Morlet transform and z-score statistics vs MNE and the seed pipeline.

Run ``python benchmarks/bench_tfr.py`` (``--help`` for sizes). It prints a markdown table:

1. ``xnwb.tfr.morlet`` on numpy and on a dask array (threads) vs
   ``mne.time_frequency.tfr_array_morlet`` on the same numpy data: 64 channels × 60 s × 1 kHz
   float64, 20 log-spaced frequencies 10–100 Hz, 7 cycles; full rate and ``decim=10``; each
   FFT library available (ducc0, scipy) and each precision (complex128, complex64); medians
   of ``--repeat`` interleaved rounds, as ratios to MNE, plus the largest difference to MNE.
2. The floor: the inverse FFTs (and, with ``decim=10``, the folding product) and the result
   write that any transform of these data needs, per FFT library and precision.
3. The z-score statistics pass (per channel and frequency mean and std of the power over the
   whole record): xnwb's one pass of mergeable moments vs the seed-style pipeline
   (``map_blocks(tfr_array_morlet)`` then ``da.mean``/``da.std``), with the seed's error at the
   chunk seams. :func:`seed_power`, :func:`seed_stats`, :func:`xnwb_stats` and
   :func:`seam_errors` take any dask array (time along ``axis``), so they run unchanged on
   an NWB recording opened with ``engine="nwbzarr"`` (``ds["data"].data``).

The machine is shared and noisy: compare ratios within one run; never assert timings in tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
from mne.time_frequency import tfr_array_morlet

from xnwb import fft, stats, tfr

DTYPES = ("complex128", "complex64")
FREQS = np.logspace(np.log10(10.0), np.log10(100.0), 20)


def seed_power(
    x: da.Array,
    sfreq: float,
    freqs: np.ndarray = FREQS,
    n_cycles: float = 7.0,
    *,
    decim: int = 1,
    axis: int = 0,
) -> da.Array:
    """The seed pipeline's power: ``tfr_array_morlet`` on each chunk, no overlap.

    Same layout as ``xnwb.tfr.morlet``: ``(*other_axes, frequency, time)``. Chunks along time
    should be multiples of ``decim`` (or the decimation grid shifts at every seam, too).
    """
    x = da.moveaxis(x, axis, -1)

    def block(b: np.ndarray) -> np.ndarray:
        flat = b.reshape(1, -1, b.shape[-1])
        out = tfr_array_morlet(
            flat, sfreq, freqs, n_cycles, decim=decim, output="power", verbose=False
        )[0]
        return out.reshape(*b.shape[:-1], len(freqs), out.shape[-1])

    time_chunks = tuple(-(-c // decim) for c in x.chunks[-1])
    return x.map_blocks(
        block,
        new_axis=[x.ndim - 1],
        chunks=(*x.chunks[:-1], (len(freqs),), time_chunks),
        dtype=np.float64,
        meta=np.empty((0,) * (x.ndim + 1)),
    )


def seed_stats(x: da.Array, sfreq: float, freqs=FREQS, n_cycles=7.0, *, decim=1, axis=0):
    """Mean and std of the seed's power over time: ``da.mean`` and ``da.std``, one compute."""
    p = seed_power(x, sfreq, freqs, n_cycles, decim=decim, axis=axis)
    return dask.compute(p.mean(axis=-1), p.std(axis=-1))


def xnwb_stats(x: da.Array, sfreq: float, freqs=FREQS, n_cycles=7.0, *, decim=1, axis=0):
    """xnwb's statistics pass: exact power, one pass of mergeable (count, mean, M2)."""
    p = tfr.morlet(x, sfreq, freqs, n_cycles, output="power", decim=decim, axis=axis)
    m = stats.moments(p, axis=-1, progress=False)
    return m.mean, m.std


def pass_shares(
    x: da.Array, sfreq: float, freqs=FREQS, n_cycles=7.0, *, decim=1, axis=0
) -> dict[str, float]:
    """Where xnwb's statistics pass spends its time: reading, transforming, reducing.

    Three passes over the same graph pieces: the read alone (each input chunk summed), the
    read and the transform (each power block reduced to one number), and the whole pass
    (mergeable moments). Their differences are the shares; seconds, one run each. The whole
    pass summarises each block inside its transform task, so "reduce" is what the summary
    costs beyond a transform whose blocks are dropped, not a separate step.
    """
    t_read, _ = timed(lambda: x.sum().compute())
    p = tfr.morlet(x, sfreq, freqs, n_cycles, output="power", decim=decim, axis=axis)
    t_transform, _ = timed(
        lambda: p.map_blocks(lambda b: np.zeros((1,) * b.ndim), dtype=float).sum().compute()
    )
    t_pass, _ = timed(lambda: xnwb_stats(x, sfreq, freqs, n_cycles, decim=decim, axis=axis))
    return {
        "pass": t_pass,
        "read": t_read / t_pass,
        "transform": max(0.0, t_transform - t_read) / t_pass,
        "reduce": max(0.0, t_pass - t_transform) / t_pass,
    }


def shares_text(shares: dict[str, float]) -> str:
    return f"{shares['read']:.0%} / {shares['transform']:.0%} / {shares['reduce']:.0%}"


def seam_errors(
    x: da.Array, sfreq: float, freqs=FREQS, n_cycles=7.0, *, decim=1, axis=0
) -> dict[str, float]:
    """How wrong the seed's power is, sample by sample, against the exact (xnwb = MNE) power.

    One dask pass computing both transforms block by block: nothing of full size is kept.
    Returns the fraction of samples off by more than 1 %, the largest relative error, and the
    largest relative errors of the per-channel, per-frequency mean and std.
    """
    seed = seed_power(x, sfreq, freqs, n_cycles, decim=decim, axis=axis)
    exact = tfr.morlet(x, sfreq, freqs, n_cycles, output="power", decim=decim, axis=axis)
    rel = abs(seed - exact) / exact
    (frac, worst, s_mean, s_std, e_mean, e_std) = dask.compute(
        (rel > 0.01).mean(), rel.max(), seed.mean(-1), seed.std(-1), exact.mean(-1), exact.std(-1)
    )
    return {
        "samples_off_by_over_1pct": float(frac),
        "max_relative_error": float(worst),
        "mean_max_relative_error": float(np.max(np.abs(s_mean - e_mean) / e_mean)),
        "std_max_relative_error": float(np.max(np.abs(s_std - e_std) / e_std)),
    }


CPU_SECONDS: list[float] = []  # process CPU time (all threads) of each timed() call


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of ``fn()`` and its result; its CPU seconds go to ``CPU_SECONDS``."""
    c, t = time.process_time(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t
    CPU_SECONDS.append(time.process_time() - c)
    return wall, out


def _store_new(y: da.Array) -> np.ndarray:
    """``y`` computed into one new array, block by block (what ``.compute()`` does, less its
    final concatenation)."""
    out = np.empty(y.shape, dtype=y.dtype)
    da.store(y, out, lock=False)
    return out


def best_and_median(samples: list[float]) -> str:
    return f"{min(samples):.2f} / {statistics.median(samples):.2f}"


def make_data(n_channels: int, seconds: float, rate: float, seed: int = 0) -> np.ndarray:
    """(channels, time) float64: noise plus bursts at a few of the analysed frequencies."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = rng.standard_normal((n_channels, n))
    for f, t0 in ((12.0, 5.0), (25.0, 20.0), (70.0, 40.0)):
        x += np.where((t > t0) & (t < t0 + 3.0), 2.0 * np.sin(2 * np.pi * f * t), 0.0)
    return x


def bench_transform(x: np.ndarray, xd: da.Array, rate: float, repeat: int) -> None:
    """Table 1: MNE vs xnwb (numpy and dask) at decim 1 and 10, each FFT library, each dtype.

    Every configuration runs once per round, rounds interleaved, so each ratio to MNE compares
    figures taken under the same load. Complex output, the same data for everyone.
    """
    configs = [(backend, dtype) for backend in fft.available_backends() for dtype in DTYPES]
    header = " | ".join(f"{b} {d}: numpy / dask" for b, d in configs)
    print(
        f"| decim | MNE, s | {header} | max \\|diff\\| / max \\|MNE\\| (complex128 / complex64) |"
    )
    print("|---|---:|" + "---|" * len(configs) + "---|")
    cpu_rows: list[str] = []
    store_lines: list[str] = []
    for decim in (1, 10):
        t_mne: list[float] = []
        times: dict[tuple[str, str, str], list[float]] = {}
        diff = {d: 0.0 for d in DTYPES}
        cpu: dict[Any, list[float]] = {}
        for backend, dtype in configs:  # warm-up: plans, kernel spectra, thread pools
            with fft.use_fft_backend(backend):
                tfr.morlet(x[:, : x.shape[1] // 4], rate, FREQS, 7.0, decim=decim, dtype=dtype)
        for _ in range(repeat):
            dt, ref = timed(
                lambda decim=decim: tfr_array_morlet(
                    x[None], rate, FREQS, 7.0, decim=decim, verbose=False
                )[0]
            )
            t_mne.append(dt)
            cpu.setdefault("MNE", []).append(CPU_SECONDS[-1])
            scale = float(np.abs(ref).max())
            for backend, dtype in configs:
                with fft.use_fft_backend(backend):
                    dt, ours = timed(
                        lambda decim=decim, dtype=dtype: tfr.morlet(
                            x, rate, FREQS, 7.0, decim=decim, dtype=dtype
                        )
                    )
                    times.setdefault((backend, dtype, "numpy"), []).append(dt)
                    cpu.setdefault((backend, dtype, "numpy"), []).append(CPU_SECONDS[-1])
                    diff[dtype] = max(diff[dtype], float(np.abs(ours - ref).max()) / scale)
                    del ours
                    y = tfr.morlet(xd, rate, FREQS, 7.0, decim=decim, axis=0, dtype=dtype)
                    dt, ours = timed(y.compute)
                    times.setdefault((backend, dtype, "dask"), []).append(dt)
                    cpu.setdefault((backend, dtype, "dask"), []).append(CPU_SECONDS[-1])
                    diff[dtype] = max(diff[dtype], float(np.abs(ours - ref).max()) / scale)
                    del ours
                    if (backend, dtype) == configs[0]:
                        # The same dask blocks stored into one new array (no concatenation
                        # of the blocks into a second one, which .compute() adds).
                        dt, ours = timed(lambda y=y: _store_new(y))
                        times.setdefault((backend, dtype, "dask-store"), []).append(dt)
                        diff[dtype] = max(diff[dtype], float(np.abs(ours - ref).max()) / scale)
                        del ours
            del ref
        mne_median = statistics.median(t_mne)
        cells = []
        for backend, dtype in configs:
            med_np = statistics.median(times[(backend, dtype, "numpy")])
            med_da = statistics.median(times[(backend, dtype, "dask")])
            cells.append(
                f"{med_np:.3f} / {med_da:.3f} s: **{mne_median / med_np:.1f}× / "
                f"{mne_median / med_da:.1f}×** (dask {med_da / med_np:.2f}× numpy)"
            )
        print(
            f"| {decim} | {mne_median:.2f} | "
            + " | ".join(cells)
            + f" | {diff['complex128']:.1e} / {diff['complex64']:.1e} |",
            flush=True,
        )
        store = statistics.median(times[(*configs[0], "dask-store")])
        store_lines.append(
            f"decim={decim}, {configs[0][0]} {configs[0][1]}: dask blocks stored into one "
            f"new array (`da.store`) {store:.3f} s: {mne_median / store:.1f}× MNE, "
            f"{store / statistics.median(times[(*configs[0], 'numpy')]):.2f}× numpy"
        )
        mne_cpu = statistics.median(cpu["MNE"])
        cpu_cells = [
            f"{mne_cpu / statistics.median(cpu[(b, d, 'numpy')]):.1f}× / "
            f"{mne_cpu / statistics.median(cpu[(b, d, 'dask')]):.1f}×"
            for b, d in configs
        ]
        cpu_rows.append(f"| {decim} | {mne_cpu:.2f} | " + " | ".join(cpu_cells) + " |")
    print("\n" + "\n".join(store_lines))
    print(
        "\nCPU seconds (all threads; what a loaded machine or a cluster pays): MNE's, and its "
        "ratio to xnwb's numpy / dask:\n"
    )
    print(f"| decim | MNE CPU, s | {header} |")
    print("|---|---:|" + "---|" * len(configs))
    print("\n".join(cpu_rows))


def fft_floor(n_channels: int, n_times: int, rate: float, repeat: int) -> None:
    """Table 2: the FFTs and the result write that any transform of these data needs.

    Full rate: 20 × ``n_channels`` inverse FFTs of one fast length covering the record and
    the longest wavelet (batches of one channel's 20 rows); the same in the engine's blocks
    (:func:`xnwb.blocks.full_rate_time`: rows that stay in cache, each block re-transforming
    its halos); and allocating and writing the result. ``decim=10``: the folded inverse FFTs
    (``n_channels × 20`` transforms of a tenth of that length, along contiguous rows) and the
    folding product. Both on all cores.
    """
    from xnwb.blocks import fft_length, full_rate_time

    threads = os.cpu_count() or 1
    bank = tfr.morlet_kernels(rate, FREQS, 7.0)
    names = [f"{b} {d}" for b in fft.available_backends() for d in DTYPES]
    print("| step | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * (len(fft.available_backends()) * len(DTYPES)))
    rows: dict[str, list[str]] = {}
    for backend in fft.available_backends():
        for dtype in DTYPES:
            cd = np.dtype(dtype)
            nfft = fft_length(n_times + 2 * bank.halo)
            batch = np.ones((len(FREQS), nfft), dtype=cd)
            block = full_rate_time(bank.halo)
            n_blocks = -(-n_times // block)
            block_nfft = fft_length(block + 2 * bank.halo)
            block_batch = np.ones((len(FREQS), block_nfft), dtype=cd)
            m = fft_length(n_times + 2 * bank.halo, 10) // 10
            folded = np.ones((n_channels, len(FREQS), m), dtype=cd)
            bins = np.ones((m, n_channels, 10), dtype=cd)
            kern = np.ones((m, 10, len(FREQS)), dtype=cd)
            prods = np.ones((m, n_channels, len(FREQS)), dtype=cd)
            signal = np.ones((n_channels, m * 10), dtype=np.finfo(cd).dtype)

            def inverse_full(batch=batch) -> None:
                for _ in range(n_channels):
                    fft.ifft(batch, out=batch, threads=threads)

            def inverse_blocks(block_batch=block_batch, n_blocks=n_blocks) -> None:
                for _ in range(n_channels * n_blocks):
                    fft.ifft(block_batch, out=block_batch, threads=threads)

            def write_result(cd=cd) -> None:
                np.empty((n_channels, len(FREQS), n_times), dtype=cd).fill(0)

            with fft.use_fft_backend(backend):
                steps = {
                    f"full rate: {len(FREQS)}×{n_channels} inverse FFTs of {nfft}": inverse_full,
                    "full rate: the same in the engine's blocks (rows in cache)": inverse_blocks,
                    "full rate: allocate + write the result": write_result,
                    f"decim=10: {n_channels}×{len(FREQS)} folded inverse FFTs of {m}": (
                        lambda folded=folded: fft.ifft(folded, out=folded, threads=threads)
                    ),
                    f"decim=10: forward, {n_channels}×10 real polyphase FFTs of {m}": (
                        lambda signal=signal, bins=bins, m=m: fft.forward(
                            signal.reshape(n_channels, m, 10),
                            axis=1,
                            out=bins.transpose(1, 0, 2),
                            threads=threads,
                        )
                    ),
                    "decim=10: folding product (matmul, contiguous, as the engine does)": (
                        lambda bins=bins, kern=kern, prods=prods: np.matmul(bins, kern, out=prods)
                    ),
                }
                for name, step in steps.items():
                    step()
                    samples = [timed(step)[0] for _ in range(max(3, repeat))]
                    rows.setdefault(name, []).append(f"{statistics.median(samples):.3f}")
            del batch, block_batch, folded, bins, kern, prods, signal
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


def bench_stats(x: np.ndarray, xd: da.Array, rate: float, repeat: int) -> None:
    """Table 2: the z-score statistics pass, xnwb vs the seed pipeline, and the seed's errors."""
    print(
        "| decim | seed: map_blocks(tfr_array_morlet) + da.mean/std | xnwb one pass "
        "| speed-up (best) | seed: samples off > 1 % | seed: max rel. error "
        "| seed: mean / std max rel. error | xnwb: mean / std max rel. error vs MNE "
        "| xnwb time: read / transform / reduce |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for decim in (1, 10):
        t_seed, t_ours = [], []
        for _ in range(repeat):
            dt, _ = timed(lambda decim=decim: seed_stats(xd, rate, decim=decim))
            t_seed.append(dt)
            dt, (mean, std) = timed(lambda decim=decim: xnwb_stats(xd, rate, decim=decim))
            t_ours.append(dt)
        seams = seam_errors(xd, rate, decim=decim)
        shares = pass_shares(xd, rate, decim=decim)
        ref = tfr_array_morlet(
            x[None], rate, FREQS, 7.0, decim=decim, output="power", verbose=False
        )[0]
        ours_mean = np.max(np.abs(mean - ref.mean(-1)) / ref.mean(-1))
        ours_std = np.max(np.abs(std - ref.std(-1)) / ref.std(-1))
        del ref
        print(
            f"| {decim} | {best_and_median(t_seed)} | {best_and_median(t_ours)} | "
            f"{min(t_seed) / min(t_ours):.1f}× | {seams['samples_off_by_over_1pct']:.2%} | "
            f"{seams['max_relative_error']:.2g} | {seams['mean_max_relative_error']:.2%} / "
            f"{seams['std_max_relative_error']:.2%} | {ours_mean:.1e} / {ours_std:.1e} "
            f"| {shares_text(shares)} |",
            flush=True,
        )


def stats_pass_over(gigabytes: float, rate: float, n_channels: int, chunk: int, decim: int) -> None:
    """xnwb's statistics pass over a generated recording of ``gigabytes`` (float64 in).

    Chunks are generated inside their tasks (nothing is held up front), as a lazily read
    recording would be; run under ``/usr/bin/time -v`` to see the peak memory of the pass.
    """
    n = int(gigabytes * 1e9 / 8 / n_channels) // chunk * chunk
    x = da.random.default_rng(0).standard_normal((n, n_channels), chunks=(chunk, n_channels))
    dt, (mean, _) = timed(lambda: xnwb_stats(x, rate, decim=decim))
    print(
        f"stats pass over {n * n_channels * 8 / 1e9:.2f} GB ({n_channels} ch × {n / rate:.0f} s "
        f"× {rate:g} Hz, chunks of {chunk} samples), decim={decim}: {dt:.1f} s, "
        f"{n * n_channels * 8 / 1e6 / dt:.0f} MB/s in; mean power {float(mean.mean()):.3g}"
    )


def stats_pass_over_nwb(gigabytes: float, chunk_seconds: float, decims: list[int]) -> None:
    """Both statistics passes over a generated NWB recording opened with ``engine="nwbzarr"``.

    A pynwb file of ``gigabytes`` of int16 samples (64 ch × 1 kHz, gzip+shuffle chunks of
    (10000, 16)), read lazily in ``chunk_seconds`` blocks of all channels, in volts (float64).
    The seed pipeline's error is measured against xnwb's statistics (equal to MNE's).
    """
    import sys
    from pathlib import Path

    import xarray as xr

    sys.path.insert(0, str(Path(__file__).parent))
    from datasets import DATA_DIR, write_recording

    rate, n_channels = 1000.0, 64
    # Whole dask chunks: the seed pipeline cannot transform a last chunk shorter than its
    # longest wavelet (MNE refuses it).
    seconds = max(1, round(gigabytes * 1e9 / 2 / n_channels / rate / chunk_seconds))
    seconds = round(seconds * chunk_seconds)
    path = DATA_DIR / f"lfp_64ch_1khz_{seconds}s.nwb"
    if not path.exists():
        write_recording(
            path, n_channels=n_channels, rate=rate, duration=seconds, chunks=(10000, 16)
        )
    chunk = int(chunk_seconds * rate)
    ds = xr.open_dataset(path, engine="nwbzarr", chunks={"time": chunk, "channel": -1})
    x = ds["data"].data
    print(
        f"NWB recording {path.name}: {x.shape[1]} ch × {x.shape[0] / rate:.0f} s × {rate:g} Hz "
        f"int16 ({x.shape[0] * x.shape[1] * 2 / 1e9:.2f} GB stored samples, "
        f"{path.stat().st_size / 1e9:.2f} GB file), dask chunks of {chunk} samples\n"
    )
    print(
        "| decim | seed pipeline, s | xnwb one pass, s | speed-up "
        "| seed mean / std max rel. error | xnwb time: read / transform / reduce |"
    )
    print("|---|---:|---:|---:|---|---|")
    for decim in decims:
        t_ours, (mean, std) = timed(
            lambda decim=decim: dask.compute(*xnwb_stats(x, rate, decim=decim))
        )
        t_seed, (s_mean, s_std) = timed(lambda decim=decim: seed_stats(x, rate, decim=decim))
        err_mean = float(np.max(np.abs(s_mean - mean) / mean))
        err_std = float(np.max(np.abs(s_std - std) / std))
        shares = pass_shares(x, rate, decim=decim)
        print(
            f"| {decim} | {t_seed:.1f} | {t_ours:.1f} | {t_seed / t_ours:.1f}× | "
            f"{100 * err_mean:.2f}% / {100 * err_std:.2f}% | {shares_text(shares)} |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--chunk", type=float, default=10.0, help="dask time chunk, seconds")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--synthetic-gb",
        type=float,
        default=None,
        help="only time the statistics pass over a generated recording of this size "
        "(run under /usr/bin/time -v for its peak memory)",
    )
    parser.add_argument("--decim", type=int, default=1, help="decim of --synthetic-gb")
    parser.add_argument(
        "--nwb-gb",
        type=float,
        default=None,
        help="only compare the statistics passes over a generated NWB recording of this size",
    )
    args = parser.parse_args(argv)
    if args.nwb_gb:
        stats_pass_over_nwb(args.nwb_gb, args.chunk, [1, 10])
        return
    if args.synthetic_gb:
        chunk = int(args.chunk * args.rate)
        stats_pass_over(args.synthetic_gb, args.rate, args.channels, chunk, args.decim)
        return

    x = make_data(args.channels, args.seconds, args.rate)
    chunk = int(args.chunk * args.rate)
    xd = da.from_array(np.ascontiguousarray(x.T), chunks=(chunk, args.channels))
    print(
        f"{args.channels} ch × {args.seconds:g} s × {args.rate:g} Hz float64 "
        f"({x.nbytes / 1e6:.0f} MB); numpy (channel, time) for MNE and xnwb, dask (time, channel) "
        f"as NWB stores it, chunks of {chunk} samples × {args.channels} ch; {len(FREQS)} "
        f"log-spaced freqs {FREQS[0]:g}–{FREQS[-1]:g} Hz, 7 cycles. {os.cpu_count()} CPUs: MNE "
        "on one thread (its default), xnwb on all (numpy: a thread per block; dask: threaded "
        f"scheduler). FFT library by default: {fft.fft_backend()}. Table 1: medians of \n"
        f"{args.repeat} interleaved rounds, as ratios to MNE in the same rounds.\n"
    )
    bench_transform(x, xd, args.rate, args.repeat)
    print(
        "\nThe floor: the FFTs and the result write any transform of these data needs "
        f"(median of {max(3, args.repeat)}, seconds, all {os.cpu_count()} cores):\n"
    )
    fft_floor(args.channels, x.shape[1], args.rate, args.repeat)
    print("\nz-score statistics pass (mean and std of the power per channel × frequency):\n")
    bench_stats(x, xd, args.rate, args.repeat)


if __name__ == "__main__":
    main()
