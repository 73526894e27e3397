"""Open, window and full-read speed: xnwb against h5py, pynwb and kerchunk, in one run.

    python benchmarks/bench_io.py            # writes benchmarks/results/io.json, prints a table

Data: ``benchmarks/datasets.py`` writes (once) a ~1 GB pynwb recording, 64 ch × 30 kHz
int16, gzip+shuffle chunks of (2000, 8) (31,200 chunks), a 100k-chunk file for the
index timing and a 1M-chunk file (1024 × 1 chunks) for windows through ``chunks={}``
(``python benchmarks/bench_io.py --only dask-window`` runs that section alone). Every figure
is the median of several runs on a warm page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from datasets import recording_1gb, recording_1m_chunks, recording_100k_chunks

SERIES = "acquisition/ElectricalSeries"
DATA = f"{SERIES}/data"
RESULTS = Path(__file__).parent / "results"


def _collect_pynwb_garbage() -> None:
    """Free pynwb's IO objects now, on this thread.

    Left to the garbage collector, an ``NWBHDF5IO.__del__`` can run on zarr's event-loop
    thread while this thread holds h5py's lock inside kerchunk's walk: a deadlock.
    """
    import gc

    gc.collect()


def interleaved_medians(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median time of each function, run in rotation so machine noise hits all alike."""
    for fn in fns.values():
        fn()  # warm-up (imports, caches)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            tic = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - tic)
    return {name: statistics.median(values) for name, values in times.items()}


def median_time(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeat):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


# -- open / index --------------------------------------------------------------
def bench_index(path: Path, repeat: int) -> dict[str, float]:
    import h5py
    import xarray as xr
    from kerchunk.hdf import SingleHdf5ToZarr
    from pynwb import NWBHDF5IO

    import xnwb

    def h5py_chunk_iter() -> int:
        count = [0]

        def tick(_info: object) -> None:
            count[0] += 1

        with h5py.File(path, "r") as f:
            f[DATA].id.chunk_iter(tick)
        return count[0]

    def pynwb_open() -> None:
        with NWBHDF5IO(str(path), "r") as io:
            io.read()
        _collect_pynwb_garbage()

    def kerchunk_translate() -> None:
        SingleHdf5ToZarr(str(path), inline_threshold=100).translate()

    with h5py.File(path, "r") as f:
        n_chunks = f[DATA].id.get_num_chunks()
    out: dict[str, float] = {"chunks": n_chunks}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out.update(
            interleaved_medians(
                {
                    "h5py chunk_iter pass": h5py_chunk_iter,
                    "xnwb build_index": lambda: xnwb.build_index(path),
                    "xnwb open_dataset": lambda: xr.open_dataset(path, engine="nwbzarr"),
                    "pynwb NWBHDF5IO.read": pynwb_open,
                },
                repeat,
            )
        )
        out["kerchunk translate"] = median_time(kerchunk_translate, max(1, repeat // 4))
    return out


# -- readers of the 1 GB file ------------------------------------------------------
def kerchunk_array(path: Path):
    _collect_pynwb_garbage()
    import fsspec
    import zarr
    from kerchunk.hdf import SingleHdf5ToZarr

    refs = SingleHdf5ToZarr(str(path), inline_threshold=100).translate()
    fs = fsspec.filesystem("reference", fo=refs, asynchronous=True)
    store = zarr.storage.FsspecStore(fs, path=DATA, read_only=True)
    return zarr.open_array(store, mode="r", zarr_format=2)


def xnwb_zarr_array(path: Path):
    import zarr

    import xnwb
    from xnwb.store import ReferenceStore

    group = zarr.open_group(ReferenceStore(xnwb.build_index(path)), mode="r", zarr_format=2)
    return group[DATA]


def bench_window(path: Path, n_windows: int) -> dict[str, float]:
    import h5py
    import xarray as xr
    from pynwb import NWBHDF5IO

    rng = np.random.default_rng(42)
    with h5py.File(path, "r") as f:
        n_times = f[DATA].shape[0]
    rate = 30_000
    starts = [int(s) for s in rng.integers(0, n_times - rate, n_windows * 6)]

    # kerchunk's walk first: it must not run while pynwb objects are alive (see above).
    kerchunk = kerchunk_array(path)
    zarr_ours = xnwb_zarr_array(path)
    h5 = h5py.File(path, "r")
    dset = h5[DATA]
    ds_raw = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False)
    ds = xr.open_dataset(path, engine="nwbzarr")
    channels = ds.channel.values[:4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        io = NWBHDF5IO(str(path), "r")
        series = io.read().acquisition["ElectricalSeries"]
        readers: dict[str, Callable[[int], np.ndarray]] = {
            "h5py": lambda s: dset[s : s + rate, 0:4],
            "pynwb": lambda s: series.data[s : s + rate, 0:4],
            "xnwb (stored counts, isel)": lambda s: ds_raw.data[s : s + rate, 0:4].values,
            "xnwb (volts, sel by time and channel labels)": lambda s: (
                ds.data.sel(time=slice(s / rate, (s + rate - 1) / rate), channel=channels).values
            ),
            "zarr over xnwb.ReferenceStore": lambda s: zarr_ours[s : s + rate, 0:4],
            "kerchunk + zarr": lambda s: kerchunk[s : s + rate, 0:4],
        }
        times: dict[str, list[float]] = {name: [] for name in readers}
        for read in readers.values():
            read(starts[-1])  # warm-up
        # The tools take turns, so machine noise hits all alike, each on windows of its
        # own: HDF5 shares one chunk cache between handles of the same dataset.
        n = len(starts) // len(readers)
        for j in range(n):
            for k, (name, read) in enumerate(readers.items()):
                tic = time.perf_counter()
                window = read(starts[k * n + j])
                times[name].append(time.perf_counter() - tic)
                assert window.shape == (rate, 4), (name, window.shape)
        io.close()
    h5.close()
    return {name: statistics.median(values) for name, values in times.items()}


class _FreeReads:
    """An array-like whose reads cost nothing (zeros): under dask, what dask alone costs."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape, self.dtype, self.ndim = shape, dtype, len(shape)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        size = tuple(len(range(*k.indices(n))) for k, n in zip(key, self.shape, strict=True))
        return np.zeros(size, self.dtype)


def bench_dask_window(path: Path, n_windows: int) -> dict[str, dict[str, float]]:
    """A 1 s × 4-channel window through ``chunks={}`` beside the lazy array and h5py.

    Per tool: median ms over random windows (the tools take turns, each on windows of its own),
    and for xnwb the fetches and stored chunks one window reads (counted at ``ByteSource.fetch``).
    Two ways to pick the channels: a slice (``isel(channel=slice(0, 4))``, which dask fuses
    into its read) and labels (``sel(channel=[...])``, a list, which goes through dask's take).
    "coords loaded" is the same ``chunks={}`` Dataset with its electrodes-table coordinates
    loaded into memory once (xarray makes every non-index coordinate a dask array under
    ``chunks=``, and then slices each of them with dask on every selection): it isolates
    what those coordinates cost a window. "dask alone" slices an array of the same shape and
    dask chunks whose reads cost nothing: dask's own cost per window (graph, optimization,
    scheduling), the floor of any dask-backed window.
    """
    import dask.array as da
    import h5py
    import xarray as xr

    from xnwb.source import ByteSource

    rate = 30_000
    xr.open_dataset(path, engine="nwbzarr")  # the index is built (or cached) once here
    tic = time.perf_counter()
    lazy = xr.open_dataset(path, engine="nwbzarr")
    open_lazy = time.perf_counter() - tic
    tic = time.perf_counter()
    dk = xr.open_dataset(path, engine="nwbzarr", chunks={})
    open_dask = time.perf_counter() - tic
    unindexed = [name for name in dk.coords if name not in dk.xindexes]
    dk_loaded = dk.assign_coords({name: dk[name].variable.compute() for name in unindexed})
    free = da.from_array(
        _FreeReads(dk.data.shape, dk.data.dtype), chunks=dk.data.chunks, meta=np.ndarray
    )
    n_times = lazy.sizes["time"]
    labels = lazy.channel.values[:4]
    rng = np.random.default_rng(7)
    h5 = h5py.File(path, "r")
    dset = h5[DATA]

    def by_slice(ds: xr.Dataset) -> Callable[[int], np.ndarray]:
        return lambda s: ds.data.isel(time=slice(s, s + rate), channel=slice(0, 4)).values

    def by_labels(ds: xr.Dataset) -> Callable[[int], np.ndarray]:
        return lambda s: (
            ds.data.sel(time=slice(s / rate, (s + rate - 1) / rate), channel=labels).values
        )

    readers: dict[str, Callable[[int], np.ndarray]] = {
        "h5py": lambda s: dset[s : s + rate, 0:4],
        "xnwb lazy, isel slice": by_slice(lazy),
        "xnwb chunks={}, isel slice": by_slice(dk),
        "xnwb lazy, sel labels": by_labels(lazy),
        "xnwb chunks={}, sel labels": by_labels(dk),
        "xnwb chunks={}, coords loaded, isel slice": by_slice(dk_loaded),
        "xnwb chunks={}, coords loaded, sel labels": by_labels(dk_loaded),
        "dask alone (free reads, same chunks), slice": lambda s: free[s : s + rate, 0:4].compute(),
    }
    starts = [int(s) for s in rng.integers(0, n_times - rate, n_windows * len(readers))]
    times: dict[str, list[float]] = {name: [] for name in readers}
    for read in readers.values():
        read(starts[-1])  # warm-up
    for j in range(n_windows):
        for k, (name, read) in enumerate(readers.items()):
            tic = time.perf_counter()
            window = read(starts[k * n_windows + j])
            times[name].append(time.perf_counter() - tic)
            assert window.shape == (rate, 4), (name, window.shape)
    h5.close()
    out: dict[str, dict[str, float]] = {
        name: {"ms": 1e3 * statistics.median(values)} for name, values in times.items()
    }

    log: list[int] = []
    original = ByteSource.fetch

    def counted(self, starts, lengths, **kwargs):  # type: ignore[no-untyped-def]
        log.append(len(starts))
        return original(self, starts, lengths, **kwargs)

    ByteSource.fetch = counted  # type: ignore[method-assign]
    try:
        for name, read in readers.items():
            if name == "h5py" or name.startswith("dask alone"):
                continue
            fetches, chunks = [], []
            for s in starts[:n_windows]:
                log.clear()
                read(s)
                fetches.append(len(log))
                chunks.append(sum(log))
            out[name].update(fetches=max(fetches), stored_chunks=statistics.median(chunks))
    finally:
        ByteSource.fetch = original  # type: ignore[method-assign]
    # Before: one dask task per stored chunk (what chunks={} gave until now), a few windows.
    tic = time.perf_counter()
    old = lazy.chunk(dict(zip(lazy.data.dims, lazy.data.encoding["chunks"], strict=True)))
    old_chunk_seconds = time.perf_counter() - tic
    before = []
    for s in starts[: max(3, n_windows // 10)]:
        tic = time.perf_counter()
        by_slice(old)(s)
        before.append(time.perf_counter() - tic)
    out["xnwb one task per stored chunk (before), isel slice"] = {
        "ms": 1e3 * statistics.median(before),
        "windows": len(before),
    }
    with h5py.File(path, "r") as f:
        n_chunks = f[DATA].id.get_num_chunks()
    out["file"] = {
        "old_tasks": old.data.data.npartitions,
        "old_chunk_seconds": old_chunk_seconds,
        "stored_chunks": n_chunks,
        "storage_chunk": list(dk.data.encoding["chunks"]),
        "dask_chunk": list(dk.data.data.chunksize),
        "dask_tasks": dk.data.data.npartitions,
        "open_chunks_seconds": open_dask,
        "open_lazy_seconds": open_lazy,
        "dask_coordinates": len(unindexed),
    }
    return out


def print_dask_window(results: dict[str, dict[str, float]], n_windows: int) -> None:
    info = results["file"]
    print(
        f"\n1 s × 4 ch window through chunks={{}}: {info['stored_chunks']:,} stored chunks of "
        f"{tuple(info['storage_chunk'])}, dask chunks {tuple(info['dask_chunk'])} "
        f"({info['dask_tasks']} tasks; open: lazy {info['open_lazy_seconds']:.2f} s, chunks={{}} "
        f"{info['open_chunks_seconds']:.2f} s); median of {n_windows} random windows; before: "
        f"{info['old_tasks']:,} tasks ({info['old_chunk_seconds']:.2f} s to chunk); "
        f"{info['dask_coordinates']} non-index coordinates made dask arrays by chunks={{}}"
    )
    print(
        "| tool | ms | × h5py | × lazy | fetches | stored chunks read |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    h5 = results["h5py"]["ms"]
    for name, r in results.items():
        if name == "file":
            continue
        lazy_name = (
            name.replace("chunks={}, coords loaded", "lazy")
            .replace("chunks={}", "lazy")
            .replace("one task per stored chunk (before)", "lazy")
        )
        if name.startswith("dask alone"):  # its cost as a share of the lazy window
            lazy_name = "xnwb lazy, isel slice"
        ratio = r["ms"] / results[lazy_name]["ms"] if lazy_name in results else float("nan")
        fetches = r.get("fetches", "")
        chunks = r.get("stored_chunks", "")
        print(
            f"| {name} | {r['ms']:.2f} | {r['ms'] / h5:.2f} | "
            f"{'' if name == lazy_name or name == 'h5py' else f'{ratio:.2f}'} | "
            f"{fetches} | {chunks} |"
        )


def bench_full_read(path: Path, kerchunk_fraction: float) -> dict[str, float]:
    """MB/s of stored samples (uncompressed int16 bytes)."""
    import dask
    import dask.array as da
    import h5py
    import xarray as xr
    from pynwb import NWBHDF5IO

    out: dict[str, float] = {}
    with h5py.File(path, "r") as f:
        dset = f[DATA]
        n_times, n_channels = dset.shape
        nbytes = n_times * n_channels * dset.dtype.itemsize

        def slabs(read: Callable[[int, int], np.ndarray], stop: int = n_times) -> None:
            for i in range(0, stop, 60_000):
                read(i, min(i + 60_000, stop))

        tic = time.perf_counter()
        slabs(lambda a, b: dset[a:b])
        out["h5py, 1 thread"] = nbytes / (time.perf_counter() - tic) / 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(path), "r") as io:
            series = io.read().acquisition["ElectricalSeries"]
            tic = time.perf_counter()
            slabs(lambda a, b: series.data[a:b])
            out["pynwb, 1 thread"] = nbytes / (time.perf_counter() - tic) / 1e6
            series = None
        _collect_pynwb_garbage()

    with dask.config.set(scheduler="threads"):
        ds = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False, chunks="auto")
        tic = time.perf_counter()
        ds.data.sum().compute()
        out["xnwb, dask threads"] = nbytes / (time.perf_counter() - tic) / 1e6

        stop = int(n_times * kerchunk_fraction)
        part = stop * n_channels * 2
        for name, array in (
            ("kerchunk + zarr, dask threads", kerchunk_array(path)),
            ("zarr over xnwb.ReferenceStore, dask threads", xnwb_zarr_array(path)),
        ):
            lazy = da.from_zarr(array)[:stop].rechunk({0: 240_000})
            tic = time.perf_counter()
            lazy.sum().compute()
            out[name] = part / (time.perf_counter() - tic) / 1e6
    out["cores"] = os.cpu_count() or 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument(
        "--kerchunk-fraction",
        type=float,
        default=0.1,
        help="share of the file the slow peers read in the full-read test",
    )
    parser.add_argument(
        "--only",
        choices=["dask-window"],
        help="run one section only (its results go to results/io-<section>.json)",
    )
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    big = recording_1gb()
    if args.only == "dask-window":
        results = {
            "dask_window": bench_dask_window(big, args.windows),
            "dask_window_1m_chunks": bench_dask_window(recording_1m_chunks(), args.windows),
        }
        output = Path(args.output or RESULTS / "io-dask-window.json")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2))
        for key in ("dask_window", "dask_window_1m_chunks"):
            print_dask_window(results[key], args.windows)
        return 0

    many = recording_100k_chunks()
    results = {
        "index": bench_index(many, args.repeat),
        "window": bench_window(big, args.windows),
        "dask_window": bench_dask_window(big, args.windows),
        "dask_window_1m_chunks": bench_dask_window(recording_1m_chunks(), args.windows),
        "full_read": bench_full_read(big, args.kerchunk_fraction),
        "file_mb": big.stat().st_size / 1e6,
    }
    output = Path(args.output or RESULTS / "io.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))

    idx = results["index"]
    base = idx["h5py chunk_iter pass"]
    print(f"\nOpen / index build, {idx['chunks']:,} chunks (median of {args.repeat})")
    print("| tool | seconds | × h5py chunk_iter |\n|---|---:|---:|")
    for key, value in idx.items():
        if key != "chunks":
            print(f"| {key} | {value:.3f} | {value / base:.2f} |")
    win = results["window"]
    print(f"\n1 s × 4 channel window (median of {args.windows} random windows)")
    print("| tool | ms | × h5py |\n|---|---:|---:|")
    for key, value in win.items():
        print(f"| {key} | {1e3 * value:.2f} | {value / win['h5py']:.2f} |")
    for key in ("dask_window", "dask_window_1m_chunks"):
        print_dask_window(results[key], args.windows)
    full = results["full_read"]
    h5 = full["h5py, 1 thread"]
    print(f"\nFull read of {results['file_mb']:.0f} MB file (MB/s of int16 samples)")
    print("| tool | MB/s | × h5py 1 thread |\n|---|---:|---:|")
    for key, value in full.items():
        if key != "cores":
            print(f"| {key} | {value:.0f} | {value / h5:.2f} |")
    goal = 0.8 * full["cores"] * h5
    print(f"\ngoal: xnwb ≥ 0.8 × {full['cores']} cores × h5py = {goal:.0f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
