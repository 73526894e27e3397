"""Seed scale (issue 7): windows, browsing and the whole-recording pass, beside h5py/pynwb/MNE.

    python benchmarks/bench_seed.py                       # 20 min recording, everything
    python benchmarks/bench_seed.py --minutes 1 --repeat 3 --skip-distributed   # quick look

Data: ``benchmarks/seed_data.py`` (124 ch x 30 kHz int16, hdmf's default ~10 MB chunks,
gzip + shuffle, 1 kHz LFP beside it); generate it first with ``python benchmarks/seed_data.py
--minutes N``. Transform settings throughout: 20 log-spaced frequencies 10-100 Hz, 7 cycles,
``decim=30`` (output at 1 kHz).

Sections (every tool in the same run, taking turns, each on windows of its own, medians):

- ``raw_window``: 1 s x 4 channels: xnwb lazy array, xnwb ``chunks={}``, h5py, pynwb.
- ``spectrogram_window``: 1 s x 1 channel of the z-scored power (statistics given): xnwb
  local and over loopback HTTP (+ latency per request), beside h5py (window + halo) + MNE
  ``tfr_array_morlet`` z-scored by hand, locally and through remfile over the same server.
- ``redraw``: a viewer move including ``fig.canvas.draw()``: raw traces and spectrogram.
- ``full_pass``: ``ds.ephys.morlet(freqs, decim=30).stats()`` over the whole recording in a child
  process (wall time, peak RSS, bytes read / stored), beside plain full reads (xnwb via dask,
  h5py chunk by chunk) and MNE on 8 channels x 2 min (extrapolated, labelled so).
- ``distributed``: the same pass on ``LocalCluster(n_workers=2, threads_per_worker=1)``:
  statistics equal to the local pass's, wall time, peak RSS per worker.

Results: ``benchmarks/results/seed_<minutes>min.json`` and a summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from bench_io import interleaved_medians  # noqa: E402
from seed_data import seed_path  # noqa: E402

RESULTS = HERE / "results"
SERIES = "acquisition/ElectricalSeries"
DATA = f"{SERIES}/data"
RATE = 30_000
FREQS = np.geomspace(10.0, 100.0, 20)
N_CYCLES = 7.0
DECIM = 30
OUT_RATE = RATE // DECIM
# half the longest wavelet (MNE's length: 2 * ceil(5 sigma_t fs) - 1), rounded up to DECIM
_HALF = int(np.ceil(5 * N_CYCLES / (2 * np.pi * FREQS.min()) * RATE)) - 1
HALO = -(-_HALF // DECIM) * DECIM
GOALS = {
    "raw_window_x_h5py": 1.5,
    "spectrogram_local_s": 0.25,
    "spectrogram_http_s": 0.6,
    "redraw_raw_s": 0.5,
    "redraw_spectrogram_s": 1.0,
    "pass_peak_rss_gb": 2.0,
    "pass_throughput_x_read": 0.3,
}


def _quiet() -> None:
    warnings.simplefilter("ignore")
    os.environ.setdefault("MPLBACKEND", "Agg")


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "xnwb"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + ("+uncommitted xnwb/ changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class FetchCounter:
    """Sum the bytes xnwb fetches, by wrapping ``ByteSource.fetch`` (this process only)."""

    def __init__(self) -> None:
        from xnwb.source import ByteSource

        self._cls = ByteSource
        self._original = ByteSource.fetch
        self.bytes = 0
        self.calls = 0
        self._lock = threading.Lock()

    def __enter__(self) -> FetchCounter:
        original, counter = self._original, self

        def fetch(source, starts, lengths, **kwargs):
            with counter._lock:
                counter.bytes += int(sum(lengths))
                counter.calls += 1
            return original(source, starts, lengths, **kwargs)

        self._cls.fetch = fetch
        return self

    def __exit__(self, *exc: object) -> None:
        self._cls.fetch = self._original


def recording_facts(path: Path) -> dict[str, Any]:
    """Shape, chunking, filters and stored bytes of the raw series (and the LFP)."""
    import h5py

    out: dict[str, Any] = {"path": str(path), "file_gb": path.stat().st_size / 1e9}
    with h5py.File(path, "r") as f:
        for key, name in (("raw", DATA), ("lfp", "processing/ecephys/LFP/ElectricalSeries/data")):
            if name not in f:
                continue
            dset = f[name]
            stored = [0, 0]

            def tally(info, stored=stored) -> None:
                stored[0] += info.size
                stored[1] += 1

            dset.id.chunk_iter(tally)
            raw_bytes = int(np.prod(dset.shape)) * dset.dtype.itemsize
            out[key] = {
                "shape": list(dset.shape),
                "dtype": str(dset.dtype),
                "chunks": list(dset.chunks),
                "n_chunks": stored[1],
                "compression": f"{dset.compression}({dset.compression_opts})"
                + ("+shuffle" if dset.shuffle else ""),
                "stored_bytes": stored[0],
                "raw_bytes": raw_bytes,
                "compression_ratio": stored[0] / raw_bytes,
                "rate": float(f[name.rsplit("/", 1)[0] + "/starting_time"].attrs["rate"]),
            }
    return out


def _windows(n_times: int, n_channels: int, count: int, width: int, seed: int) -> Iterator:
    """Endless random ``(start, first_channel)`` pairs, starts multiples of ``DECIM``."""
    rng = np.random.default_rng(seed)
    lo, hi = HALO + DECIM, n_times - RATE - HALO - DECIM
    while True:
        starts = rng.integers(lo // DECIM, hi // DECIM, count) * DECIM
        channels = rng.integers(0, n_channels - width + 1, count)
        yield from zip(starts.tolist(), channels.tolist(), strict=True)


def _turns(readers: dict[str, Callable[[int, int], Any]], windows: dict[str, Iterator], repeat):
    """Median seconds per reader, the readers taking turns, each on its own windows."""
    return interleaved_medians(
        {name: (lambda r=read, w=windows[name]: r(*next(w))) for name, read in readers.items()},
        repeat,
    )


# -- 1 s x 4 channel raw window --------------------------------------------------------------
def bench_raw_window(path: Path, repeat: int) -> dict[str, Any]:
    import h5py
    import xarray as xr
    from pynwb import NWBHDF5IO

    ds = xr.open_dataset(path, engine="nwbzarr")
    dc = xr.open_dataset(path, engine="nwbzarr", chunks={})
    h5 = h5py.File(path, "r")
    dset = h5[DATA]
    conversion = float(h5[DATA].attrs["conversion"])
    io = NWBHDF5IO(str(path), "r")
    series = io.read().acquisition["ElectricalSeries"]
    readers = {
        "xnwb lazy array": lambda s, c: ds.data[s : s + RATE, c : c + 4].values,
        "xnwb chunks={}": lambda s, c: dc.data[s : s + RATE, c : c + 4].values,
        "h5py": lambda s, c: dset[s : s + RATE, c : c + 4] * conversion,
        "pynwb": lambda s, c: series.data[s : s + RATE, c : c + 4] * series.conversion,
    }
    n_times, n_channels = dset.shape
    check = next(_windows(n_times, n_channels, 1, 4, seed=1))
    ref = readers["h5py"](*check)
    for name, read in readers.items():
        np.testing.assert_allclose(read(*check), ref, rtol=1e-12, err_msg=name)
    windows = {
        name: _windows(n_times, n_channels, repeat + 1, 4, seed=10 + k)
        for k, name in enumerate(readers)
    }
    seconds = _turns(readers, windows, repeat)
    io.close()
    h5.close()
    return {"seconds": seconds, "x_h5py": {k: v / seconds["h5py"] for k, v in seconds.items()}}


# -- 1 s x 1 channel z-scored spectrogram window ----------------------------------------------
def baseline_stats(ds, seconds: float):
    """The statistics of the first ``seconds`` s (computed once per run, timed)."""
    tic = time.perf_counter()
    stats = ds.ephys.morlet(FREQS, n_cycles=N_CYCLES, decim=DECIM).ephys.stats(
        baseline=(0.0, seconds), progress=False
    )
    return stats.compute(), time.perf_counter() - tic


def mne_zscored(x: np.ndarray, offset: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """By hand: MNE power of ``x`` (window + halo), decimated, cropped, z-scored."""
    from mne.time_frequency import tfr_array_morlet

    power = tfr_array_morlet(
        x[None, None],
        sfreq=RATE,
        freqs=FREQS,
        n_cycles=N_CYCLES,
        output="power",
        decim=DECIM,
        verbose=False,
    )[0, 0]
    window = power[:, offset // DECIM : offset // DECIM + OUT_RATE]
    return (window - mean[:, None]) / std[:, None]


def _hand_reader(dset, conversion: float, stats) -> Callable[[int, int], np.ndarray]:
    n_times = dset.shape[0]
    mean = stats["mean"].transpose("channel", "frequency").values
    std = stats["std"].transpose("channel", "frequency").values

    def read(s: int, c: int) -> np.ndarray:
        a, b = max(0, s - HALO), min(n_times, s + RATE + HALO)
        x = dset[a:b, c] * conversion
        return mne_zscored(x, s - a, mean[c], std[c])

    return read


def bench_spectrogram_window(path: Path, repeat: int, latency: float, stats) -> dict[str, Any]:
    import h5py
    import xarray as xr

    from tests.loopback import RangeServer

    out: dict[str, Any] = {}
    ds = xr.open_dataset(path, engine="nwbzarr")
    n_times, n_channels = ds.data.shape
    z = ds.ephys.morlet(FREQS, n_cycles=N_CYCLES, decim=DECIM).zscore(stats=stats)
    labels = ds.channel.values

    def xnwb_reader(zz) -> Callable[[int, int], np.ndarray]:
        def read(s: int, c: int) -> np.ndarray:
            one = zz.data.sel(channel=labels[c]).isel(time=slice(s // DECIM, s // DECIM + OUT_RATE))
            return one.transpose("frequency", "time").values

        return read

    root = Path(tempfile.mkdtemp(prefix="xnwb-seed-"))
    cache = root / "index-cache"
    try:
        os.link(path, root / "rec.nwb")
    except OSError:
        os.symlink(path, root / "rec.nwb")
    h5 = h5py.File(path, "r")
    conversion = float(h5[DATA].attrs["conversion"])
    try:
        with RangeServer(root) as server:
            import remfile

            url = server.url_for("rec.nwb")
            server.latency = latency
            tic = time.perf_counter()
            dh = xr.open_dataset(url, engine="nwbzarr", index_cache=cache)
            out["http_first_open_s"] = time.perf_counter() - tic
            zh = dh.ephys.morlet(FREQS, n_cycles=N_CYCLES, decim=DECIM).zscore(stats=stats)
            h5r = h5py.File(remfile.File(url), "r")
            readers = {
                "xnwb local": xnwb_reader(z),
                "xnwb HTTP": xnwb_reader(zh),
                "h5py + MNE local (by hand)": _hand_reader(h5[DATA], conversion, stats),
                "h5py + remfile + MNE HTTP (by hand)": _hand_reader(h5r[DATA], conversion, stats),
            }
            check = next(_windows(n_times, n_channels, 1, 1, seed=2))
            ref = readers["h5py + MNE local (by hand)"](*check)
            out["max_abs_diff_vs_mne_z"] = {}
            for name, read in readers.items():
                got = read(*check)
                out["max_abs_diff_vs_mne_z"][name] = float(np.max(np.abs(got - ref)))
                np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6, err_msg=name)

            # requests and bytes of one window each way, on fresh windows
            per_window: dict[str, dict[str, float]] = {}
            for k, name in enumerate(readers):
                if "HTTP" not in name:
                    continue
                s, c = next(_windows(n_times, n_channels, 1, 1, seed=90 + k))
                before_n, before_b = server.count(), server.bytes_sent
                readers[name](s, c)
                per_window[name] = {
                    "requests": server.count() - before_n,
                    "mb": (server.bytes_sent - before_b) / 1e6,
                }
            with FetchCounter() as counter:
                s, c = next(_windows(n_times, n_channels, 1, 1, seed=99))
                readers["xnwb local"](s, c)
            per_window["xnwb local"] = {"mb": counter.bytes / 1e6}
            out["per_window"] = per_window

            windows = {
                name: _windows(n_times, n_channels, repeat + 1, 1, seed=20 + k)
                for k, name in enumerate(readers)
            }
            out["seconds"] = _turns(readers, windows, repeat)
            out["latency_s"] = latency
            h5r.close()
    finally:
        h5.close()
        shutil.rmtree(root, ignore_errors=True)
    return out


# -- a viewer move: load + draw ----------------------------------------------------------------
def bench_redraw(path: Path, repeat: int, stats, n_traces: int = 4) -> dict[str, Any]:
    """Seconds per move of the viewer (``xnwb.browse``; else ``plot_window`` + draw).

    The viewer renders each move to a PNG (``savefig``, which draws the canvas); the by-hand
    peers do the same (h5py read, matplotlib plot or MNE + ``pcolormesh``, ``savefig``).
    """
    import io

    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import xarray as xr

    ds = xr.open_dataset(path, engine="nwbzarr")
    n_times, n_channels = ds.data.shape
    z = ds.ephys.morlet(FREQS, n_cycles=N_CYCLES, decim=DECIM).zscore(stats=stats)
    labels = ds.channel.values
    h5 = h5py.File(path, "r")
    dset = h5[DATA]
    conversion = float(dset.attrs["conversion"])
    hand = _hand_reader(dset, conversion, stats)

    def render(fig) -> None:
        fig.savefig(io.BytesIO(), format="png")
        plt.close(fig)

    try:
        from xnwb.browse import browse

        viewer_name = "xnwb.browse.browse"
        raw_view = browse(ds, duration=1.0, channels=list(labels[:n_traces]))
        spec_view = browse(ds, duration=1.0, channels=[labels[0]], view="spectrogram", tfr=z)

        def move(viewer, s: int) -> None:
            """A slider move: the viewer loads and draws the new window."""
            before = viewer.draws
            viewer.start.value = s / RATE
            if viewer.draws == before:  # the same start again: draw explicitly
                viewer.redraw()
            if viewer.figure is None:
                raise RuntimeError(f"the viewer drew nothing: {viewer.message} {viewer.error}")

        def xnwb_raw(s: int, c: int) -> None:
            move(raw_view, s)

        def xnwb_spectrogram(s: int, c: int) -> None:
            move(spec_view, s)

    except ImportError:
        from xnwb.plot import plot_window

        viewer_name = "xnwb.plot.plot_window"

        def xnwb_raw(s: int, c: int) -> None:
            render(plot_window(ds, s / RATE, 1.0, channels=list(labels[:n_traces])))

        def xnwb_spectrogram(s: int, c: int) -> None:
            render(plot_window(z, s / RATE, 1.0, channels=[labels[0]]))

    def hand_raw(s: int, c: int) -> None:
        x = dset[s : s + RATE, :n_traces] * conversion
        fig, ax = plt.subplots(figsize=(10, 1 + 0.4 * n_traces))
        spacing = 3 * float(np.median(x.std(axis=0)))
        ax.plot(np.arange(s, s + RATE) / RATE, x - spacing * np.arange(n_traces), lw=0.8)
        render(fig)

    def hand_spectrogram(s: int, c: int) -> None:
        zz = hand(s, 0)
        fig, ax = plt.subplots(figsize=(10, 2.2))
        mesh = ax.pcolormesh((s + DECIM * np.arange(OUT_RATE)) / RATE, FREQS, zz, shading="auto")
        ax.set_yscale("log")
        fig.colorbar(mesh, ax=ax)
        render(fig)

    readers = {
        "xnwb raw": xnwb_raw,
        "h5py + matplotlib raw (by hand)": hand_raw,
        "xnwb spectrogram": xnwb_spectrogram,
        "h5py + MNE + matplotlib spectrogram (by hand)": hand_spectrogram,
    }
    windows = {
        name: _windows(n_times, n_channels, repeat + 1, n_traces, seed=30 + k)
        for k, name in enumerate(readers)
    }
    seconds = _turns(readers, windows, repeat)
    h5.close()
    return {
        "viewer": viewer_name,
        "raw_channels": n_traces,
        "spectrogram_channels": 1,
        "window_s": 1.0,
        "render": "PNG via savefig (draws the canvas), as the viewer does",
        "seconds": seconds,
    }


# -- the whole-recording pass (children) --------------------------------------------------------
def _opened(path: Path, span: int):
    """The recording, its first ``span`` samples if ``span`` > 0."""
    import xarray as xr

    ds = xr.open_dataset(path, engine="nwbzarr")
    return ds.isel(time=slice(0, span)) if span > 0 else ds


def child_stats(path: Path, out: Path, span: int = 0) -> dict[str, Any]:
    ds = _opened(path, span)
    with FetchCounter() as counter:
        tic = time.perf_counter()
        stats = ds.ephys.morlet(FREQS, n_cycles=N_CYCLES, decim=DECIM).ephys.stats(progress=False)
        seconds = time.perf_counter() - tic
    np.savez(out, mean=stats["mean"].values, std=stats["std"].values, count=stats["count"].values)
    return {"seconds": seconds, "bytes_fetched": counter.bytes, "fetch_calls": counter.calls}


def child_read_dask(path: Path, out: Path, span: int = 0) -> dict[str, Any]:
    import xarray as xr

    ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    with FetchCounter() as counter:
        tic = time.perf_counter()
        ds.data.sum().compute()
        seconds = time.perf_counter() - tic
    return {"seconds": seconds, "bytes_fetched": counter.bytes, "tasks": ds.data.data.npartitions}


def child_read_h5py(path: Path, out: Path, span: int = 0) -> dict[str, Any]:
    import h5py

    with h5py.File(path, "r") as f:
        dset = f[DATA]
        (n_times, n_channels), (ct, cc) = dset.shape, dset.chunks
        tic = time.perf_counter()
        for t0 in range(0, n_times, ct):
            for c0 in range(0, n_channels, cc):
                dset[t0 : t0 + ct, c0 : c0 + cc]
        seconds = time.perf_counter() - tic
    return {"seconds": seconds, "threads": 1}


def child_mne_subset(path: Path, out: Path, span: int = 0, channels: int = 8) -> dict:
    """MNE's ``tfr_array_morlet`` + moments over ``channels`` x ``span`` samples (default 60 s)
    from the middle of the recording, in 30 s segments each read with its halo."""
    import h5py

    from xnwb.stats import Moments, block_moments, combine

    with h5py.File(path, "r") as f:
        dset = f[DATA]
        conversion = float(dset.attrs["conversion"])
        n_times = dset.shape[0]
        span = min(span or 60 * RATE, n_times - 2 * HALO)
        span -= span % DECIM
        first = (n_times - span) // 2 // DECIM * DECIM
        segment = 30 * RATE
        parts = []
        tic = time.perf_counter()
        read_s = 0.0
        for s in range(first, first + span, segment):
            e = min(s + segment, first + span)
            a, b = max(0, s - HALO), min(n_times, e + HALO)
            t_read = time.perf_counter()
            x = (dset[a:b, :channels] * conversion).T
            read_s += time.perf_counter() - t_read
            from mne.time_frequency import tfr_array_morlet

            power = tfr_array_morlet(
                x[None],
                sfreq=RATE,
                freqs=FREQS,
                n_cycles=N_CYCLES,
                output="power",
                decim=DECIM,
                verbose=False,
            )[0]
            keep = power[..., (s - a) // DECIM : (s - a + e - s) // DECIM]
            parts.append(block_moments(keep, axis=-1, keepdims=True))
        seconds = time.perf_counter() - tic
    m = combine(
        Moments(*(np.concatenate([getattr(p, f) for p in parts], -1) for f in Moments._fields)),
        axis=-1,
    )
    np.savez(out, mean=m.mean, std=m.std, first=first, span=span, channels=channels)
    return {
        "seconds": seconds,
        "read_seconds": read_s,
        "channels": channels,
        "samples": span,
        "minutes": span / RATE / 60,
        "segment_s": segment / RATE,
    }


def _worker_count_fetches() -> None:
    """On a worker: sum the bytes its ``ByteSource.fetch`` calls read (one thread each)."""
    from xnwb.source import ByteSource

    if getattr(ByteSource, "_bench_original", None) is None:
        original = ByteSource.fetch
        ByteSource._bench_original = original
        ByteSource._bench_bytes = 0

        def fetch(self, starts, lengths, **kwargs):
            ByteSource._bench_bytes += int(sum(lengths))
            return original(self, starts, lengths, **kwargs)

        ByteSource.fetch = fetch


def _worker_fetched() -> int:
    from xnwb.source import ByteSource

    return int(getattr(ByteSource, "_bench_bytes", 0))


def child_distributed(path: Path, out: Path, span: int = 0) -> dict[str, Any]:
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    samples: list[dict[str, float]] = []
    stop = threading.Event()

    guard = {"over": None}

    def sample() -> None:
        while not stop.is_set():
            try:
                info = client.scheduler_info()["workers"]
                snap = {w: v["metrics"]["memory"] for w, v in info.items()}
                samples.append((time.perf_counter(), snap))
            except Exception:
                pass
            if samples and max(samples[-1][1].values(), default=0) > WORKER_GUARD_BYTES:
                # the machine is shared: stop before the kernel's OOM killer does
                guard["over"] = {w: round(v / 1e6) for w, v in samples[-1][1].items()}
                cluster.close()
                return
            stop.wait(0.5)

    def worker_peak() -> float:
        import resource as r

        return r.getrusage(r.RUSAGE_SELF).ru_maxrss / 1024

    try:
        baseline_rss = client.run(worker_peak)
        client.run(_worker_count_fetches)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        ds = _opened(path, span)
        tic = time.perf_counter()
        try:
            tfr = ds.ephys.morlet(FREQS, n_cycles=N_CYCLES, decim=DECIM)
            stats = tfr.ephys.stats(progress=False)
        except Exception as err:
            if guard["over"] is None:
                raise
            raise RuntimeError(
                f"stopped after {time.perf_counter() - tic:.0f} s: a worker passed "
                f"{WORKER_GUARD_BYTES / 1e9:g} GB (MB per worker: {guard['over']})"
            ) from err
        seconds = time.perf_counter() - tic
        stop.set()
        sampler.join()
        peaks = client.run(worker_peak)
        fetched = client.run(_worker_fetched)
    finally:
        client.close()
        cluster.close()
    np.savez(out, mean=stats["mean"].values, std=stats["std"].values, count=stats["count"].values)
    sampled: dict[str, float] = {}
    for _, snap in samples:
        for w, v in snap.items():
            sampled[w] = max(sampled.get(w, 0.0), v / 1e6)
    # the workers' memory over the pass, ~20 points: seconds from the start, MB per worker
    every = max(1, len(samples) // 20)
    timeline = [
        [round(t - tic, 1), *(round(v / 1e6) for v in snap.values())]
        for t, snap in samples[::every]
        if t >= tic
    ]
    return {
        "seconds": seconds,
        "worker_peak_rss_mb": peaks,
        "worker_rss_before_mb": baseline_rss,
        "worker_sampled_max_mb": sampled,
        "worker_memory_timeline_mb": timeline,
        "bytes_fetched": sum(fetched.values()),
    }


WORKER_GUARD_BYTES = 7e9  # the cluster pass is stopped when a worker's memory passes this

CHILDREN = {
    "stats": child_stats,
    "read-dask": child_read_dask,
    "read-h5py": child_read_h5py,
    "mne-subset": child_mne_subset,
    "distributed": child_distributed,
}


def run_child(name: str, path: Path, scratch: Path, span: int = 0) -> dict[str, Any]:
    """Run one child in a fresh process; its result plus wall time and peak RSS."""
    out = scratch / f"{name}-{span}.npz"
    cmd = [sys.executable, __file__, "--child", name, "--path", str(path), "--child-out", str(out)]
    cmd += ["--span", str(span)]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        raise RuntimeError(f"child {name!r} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    result["load_average_after"] = os.getloadavg()
    print(
        f"  {name}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB", flush=True
    )
    return result


def stored_bytes_before(path: Path, n_samples: int) -> int:
    """Stored bytes of the raw series' chunks that begin before sample ``n_samples``."""
    import h5py

    total = [0]

    def tally(info) -> None:
        if info.chunk_offset[0] < n_samples:
            total[0] += info.size

    with h5py.File(path, "r") as f:
        f[DATA].id.chunk_iter(tally)
    return total[0]


def bench_full_pass(
    path: Path, facts: dict[str, Any], *, local: bool, distributed: bool, dist_span: int
) -> dict[str, Any]:
    """Children: full reads, the local statistics pass, MNE on a subset, the cluster pass.

    The cluster pass runs over the first ``dist_span`` samples (0: all); when that is less
    than the whole, a local pass over the same samples runs beside it for the comparison.
    """
    scratch = Path(tempfile.mkdtemp(prefix="xnwb-seed-pass-"))
    out: dict[str, Any] = {}
    raw = facts["raw"]
    n_times = raw["shape"][0]
    dist_span = 0 if dist_span >= n_times else dist_span
    try:
        if local:
            for name in ("read-h5py", "read-dask", "stats", "mne-subset"):
                out[name] = run_child(name, path, scratch)
            mb = raw["raw_bytes"] / 1e6
            for name in ("read-h5py", "read-dask", "stats"):
                out[name]["mb_per_s"] = mb / out[name]["seconds"]
            st = out["stats"]
            for name in ("read-dask", "stats"):
                out[name]["bytes_fetched_x_stored"] = (
                    out[name]["bytes_fetched"] / raw["stored_bytes"]
                )
            st["throughput_x_read_dask"] = out["read-dask"]["seconds"] / st["seconds"]
            st["throughput_x_read_h5py"] = out["read-h5py"]["seconds"] / st["seconds"]
            sub = out["mne-subset"]
            factor = (raw["shape"][1] / sub["channels"]) * (n_times / sub["samples"])
            sub["extrapolation_factor"] = factor
            sub["extrapolated_whole_s"] = sub["seconds"] * factor
            transform = (sub["seconds"] - sub["read_seconds"]) * factor
            sub["extrapolated_by_hand_total_s"] = transform + out["read-h5py"]["seconds"]
        if distributed:
            try:
                d = out["distributed"] = run_child("distributed", path, scratch, dist_span)
            except RuntimeError as err:
                out["distributed"] = {"failed": str(err)[-1500:], "samples": dist_span or n_times}
                print(f"  distributed: FAILED {str(err)[-300:]}", flush=True)
                return out
            if dist_span or not local:
                ref = run_child("stats", path, scratch, dist_span)
                out["stats_same_span_as_distributed"] = ref
            else:
                ref = out["stats"]
            d["samples"] = dist_span or n_times
            d["minutes"] = d["samples"] / RATE / 60
            d["local_seconds_same_span"] = ref["seconds"]
            d["x_local_seconds"] = d["seconds"] / ref["seconds"]
            stored = stored_bytes_before(path, dist_span) if dist_span else raw["stored_bytes"]
            d["bytes_fetched_x_stored"] = d["bytes_fetched"] / stored
            mine = np.load(scratch / f"distributed-{dist_span}.npz")
            theirs = np.load(scratch / f"stats-{dist_span}.npz")
            for key in ("mean", "std"):
                np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-12, err_msg=key)
            assert np.array_equal(mine["count"], theirs["count"])
            d["equal_to_local_rtol"] = 1e-12
            d["max_rel_diff"] = {
                key: float(np.max(np.abs(mine[key] - theirs[key]) / np.abs(theirs[key])))
                for key in ("mean", "std")
            }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


# -- report -------------------------------------------------------------------------------------
def _met(value: float, goal: float, smaller_is_better: bool = True) -> str:
    ok = value <= goal if smaller_is_better else value >= goal
    return "met" if ok else "NOT met"


def summary(results: dict[str, Any]) -> str:
    lines = []
    facts = results["data"]["raw"]
    lines.append(
        f"Data: {facts['shape'][1]} ch x {facts['shape'][0] / facts['rate'] / 60:g} min x "
        f"{facts['rate'] / 1e3:g} kHz {facts['dtype']}, chunks {tuple(facts['chunks'])} "
        f"({facts['n_chunks']} chunks), {facts['compression']}, "
        f"{facts['stored_bytes'] / 1e9:.2f} GB stored of {facts['raw_bytes'] / 1e9:.2f} GB"
    )
    if "raw_window" in results:
        w = results["raw_window"]
        lines += [
            "",
            "1 s x 4 channel raw window (median)",
            "| tool | ms | x h5py |",
            "|---|---:|---:|",
        ]
        for k, v in w["seconds"].items():
            lines.append(f"| {k} | {1e3 * v:.1f} | {w['x_h5py'][k]:.2f} |")
        x = w["x_h5py"]["xnwb lazy array"]
        lines.append(f"goal xnwb lazy <= 1.5 x h5py: {x:.2f} x, {_met(x, 1.5)}")
    if "spectrogram_window" in results:
        s = results["spectrogram_window"]
        lines += ["", "1 s x 1 channel z-scored spectrogram (median)", "| tool | s |", "|---|---:|"]
        for k, v in s["seconds"].items():
            lines.append(f"| {k} | {v:.3f} |")
        loc, http = s["seconds"]["xnwb local"], s["seconds"]["xnwb HTTP"]
        lines.append(f"goal local <= 0.25 s: {loc:.3f} s, {_met(loc, 0.25)}")
        lines.append(f"goal HTTP <= 0.6 s: {http:.3f} s, {_met(http, 0.6)}")
        lines.append(f"per window: {json.dumps(s['per_window'])}")
    if "redraw" in results:
        r = results["redraw"]["seconds"]
        lines += ["", "viewer move incl. draw (median)", "| tool | s |", "|---|---:|"]
        for k, v in r.items():
            lines.append(f"| {k} | {v:.3f} |")
    p = results.get("full_pass", {})
    if "stats" in p:
        lines += [
            "",
            "whole-recording pass",
            "| run | s | MB/s | peak RSS MB |",
            "|---|---:|---:|---:|",
        ]
        for k in ("read-h5py", "read-dask", "stats"):
            v = p[k]
            lines.append(
                f"| {k} | {v['seconds']:.1f} | {v['mb_per_s']:.0f} | {v['peak_rss_mb']:.0f} |"
            )
        st = p["stats"]
        lines.append(
            f"stats throughput x read: {st['throughput_x_read_dask']:.3f} (dask), "
            f"{st['throughput_x_read_h5py']:.3f} (h5py); bytes fetched / stored "
            f"{st['bytes_fetched_x_stored']:.3f}"
        )
        sub = p["mne-subset"]
        lines.append(
            f"MNE subset {sub['channels']} ch x {sub['minutes']:.1f} min: {sub['seconds']:.1f} s, "
            f"extrapolated whole (x{sub['extrapolation_factor']:.0f}): "
            f"{sub['extrapolated_by_hand_total_s']:.0f} s incl. the h5py read"
        )
    if "distributed" in p and "failed" in p["distributed"]:
        lines.append(f"distributed: FAILED: {p['distributed']['failed'][-400:]}")
    elif "distributed" in p:
        d = p["distributed"]
        lines.append(
            f"distributed 2 x 1 over {d['minutes']:g} min: {d['seconds']:.1f} s "
            f"({d['x_local_seconds']:.2f} x local {d['local_seconds_same_span']:.1f} s), "
            f"worker peak RSS MB {[round(v) for v in d['worker_peak_rss_mb'].values()]}, "
            f"bytes fetched / stored {d['bytes_fetched_x_stored']:.3f}, "
            f"max rel diff {d['max_rel_diff']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="recording length")
    parser.add_argument("--repeat", type=int, default=7, help="repeats per figure (median)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per HTTP request")
    parser.add_argument("--baseline", type=float, default=120.0, help="seconds of baseline")
    parser.add_argument("--skip-windows", action="store_true", help="no window/redraw figures")
    parser.add_argument("--skip-full-pass", action="store_true")
    parser.add_argument("--skip-distributed", action="store_true")
    parser.add_argument(
        "--skip-local-pass", action="store_true", help="of the pass, run the cluster part only"
    )
    parser.add_argument(
        "--distributed-minutes",
        type=float,
        help="run the cluster pass (and a local pass beside it) on the first N minutes only",
    )
    parser.add_argument("--output", help="JSON path (default results/seed_<minutes>min.json)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--span", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _quiet()

    if args.child:
        result = CHILDREN[args.child](Path(args.path), Path(args.child_out), args.span)
        result["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(result))
        return 0

    path = seed_path(args.minutes)
    if not path.exists():
        print(f"{path} is missing: python benchmarks/seed_data.py --minutes {args.minutes:g}")
        return 1
    facts = recording_facts(path)
    baseline = min(args.baseline, facts["raw"]["shape"][0] / RATE / 2)
    results: dict[str, Any] = {
        "command": "python benchmarks/bench_seed.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "xnwb": _git(),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "settings": {
            "freqs": FREQS.tolist(),
            "n_cycles": N_CYCLES,
            "decim": DECIM,
            "halo_samples": HALO,
            "repeat": args.repeat,
        },
        "goals": GOALS,
        "data": facts,
    }
    output = Path(args.output or RESULTS / f"seed_{args.minutes:g}min.json")
    output.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        tmp = output.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2, default=float))
        tmp.rename(output)

    results["load_average_start"] = os.getloadavg()
    if not args.skip_windows:
        print("raw window ...", flush=True)
        results["load_average_before_raw_window"] = os.getloadavg()
        results["raw_window"] = bench_raw_window(path, args.repeat)
        save()
        import xarray as xr

        print(f"baseline statistics over the first {baseline:g} s ...", flush=True)
        ds = xr.open_dataset(path, engine="nwbzarr")
        stats, seconds = baseline_stats(ds, baseline)
        results["baseline_stats"] = {"baseline_s": baseline, "seconds": seconds}
        print("spectrogram window ...", flush=True)
        results["load_average_before_spectrogram_window"] = os.getloadavg()
        results["spectrogram_window"] = bench_spectrogram_window(
            path, args.repeat, args.latency, stats
        )
        save()
        print("redraw ...", flush=True)
        results["load_average_before_redraw"] = os.getloadavg()
        results["redraw"] = bench_redraw(path, args.repeat, stats)
        save()
    if not args.skip_full_pass:
        print("whole-recording pass (child processes) ...", flush=True)
        results["load_average_before_full_pass"] = os.getloadavg()
        span = round(60 * RATE * args.distributed_minutes) if args.distributed_minutes else 0
        results["full_pass"] = bench_full_pass(
            path,
            facts,
            local=not args.skip_local_pass,
            distributed=not args.skip_distributed,
            dist_span=span,
        )
        save()
    print(summary(results))
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
