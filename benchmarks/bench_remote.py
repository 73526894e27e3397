"""Remote reads over loopback HTTP with injected latency: xnwb against pynwb and kerchunk.

    python benchmarks/bench_remote.py [--latency 0.02]

An aiohttp range server on 127.0.0.1 (``tests/loopback.py``) adds ``--latency`` seconds to
every request and counts them. Peers, in the same run on the same file: pynwb over an
fsspec HTTP file, pynwb over remfile, and kerchunk references read through fsspec + zarr.
Results go to ``benchmarks/results/remote.json`` and a table on stdout. With
``--only dask-windows``, only 1 s × 4-channel windows through ``chunks={}`` and the lazy
array, on the 1 GB file and on a 1M-chunk file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from datasets import recording_1gb, recording_1m_chunks  # noqa: E402

from tests.loopback import RangeServer  # noqa: E402

DATA = "acquisition/ElectricalSeries/data"
RATE = 30_000
WINDOW_START = 3_000_000


def _measure(server: RangeServer, fn) -> tuple[object, dict[str, float]]:
    server.reset_counters() if hasattr(server, "reset_counters") else None
    before_n, before_b = server.count(), server.bytes_sent
    tic = time.perf_counter()
    result = fn()
    return result, {
        "requests": server.count() - before_n,
        "mb": (server.bytes_sent - before_b) / 1e6,
        "seconds": time.perf_counter() - tic,
    }


def bench(latency: float, read_fraction: float) -> dict[str, dict[str, dict[str, float]]]:
    import fsspec
    import h5py
    import remfile
    import xarray as xr
    from pynwb import NWBHDF5IO

    source = recording_1gb()
    root = Path(tempfile.mkdtemp(prefix="xnwb-bench-"))
    try:
        os.link(source, root / "rec.nwb")
    except OSError:
        import shutil

        shutil.copy(source, root / "rec.nwb")
    cache = Path(tempfile.mkdtemp(prefix="xnwb-cache-"))
    results: dict[str, dict[str, dict[str, float]]] = {}
    with RangeServer(root) as server:
        url = server.url_for("rec.nwb")
        size = (root / "rec.nwb").stat().st_size
        n_times = 7_800_000
        stop = int(n_times * read_fraction)

        def fresh() -> None:
            server.reset()
            server.latency = latency

        # -- xnwb -------------------------------------------------------------
        fresh()
        ds, first = _measure(
            server, lambda: xr.open_dataset(url, engine="nwbzarr", index_cache=cache)
        )
        fresh()
        ds, cached = _measure(
            server, lambda: xr.open_dataset(url, engine="nwbzarr", index_cache=cache)
        )
        fresh()
        _, window = _measure(
            server, lambda: ds.data[WINDOW_START : WINDOW_START + RATE, 0:4].values
        )
        fresh()
        import xnwb.remote

        xnwb.remote.DEFAULT_CONCURRENCY = 8  # the full-read condition: 8 requests in flight
        raw = xr.open_dataset(
            url,
            engine="nwbzarr",
            index_cache=cache,
            mask_and_scale=False,
            chunks={"time": 240_000, "channel": -1},
        )
        _, full = _measure(server, lambda: raw.data[:stop].sum().compute())
        full["mb_per_s"] = stop * 64 * 2 / 1e6 / full["seconds"]
        full["max_in_flight"] = server.max_in_flight
        results["xnwb"] = {
            "first open": first,
            "cached open": cached,
            "window": window,
            "full read": full,
        }

        # -- pynwb over fsspec / remfile ---------------------------------------------
        for label, opener in (
            ("pynwb + fsspec", lambda: fsspec.filesystem("http").open(url, "rb")),
            ("pynwb + remfile", lambda: remfile.File(url)),
        ):
            fresh()

            def open_pynwb(opener=opener):
                handle = h5py.File(opener(), "r")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    io = NWBHDF5IO(file=handle, load_namespaces=True)
                    return io, io.read().acquisition["ElectricalSeries"]

            (io, series), first = _measure(server, open_pynwb)
            fresh()
            _, window = _measure(
                server, lambda series=series: series.data[WINDOW_START : WINDOW_START + RATE, 0:4]
            )
            fresh()

            def read_all(series=series) -> None:
                for i in range(0, stop, 240_000):
                    series.data[i : min(i + 240_000, stop)]

            _, full = _measure(server, read_all)
            full["mb_per_s"] = stop * 64 * 2 / 1e6 / full["seconds"]
            results[label] = {"first open": first, "window": window, "full read": full}
            io.close()
            del io, series
            import gc

            gc.collect()  # no pynwb __del__ later on zarr's loop thread (h5py lock deadlock)

        # -- kerchunk over fsspec ----------------------------------------------------
        fresh()

        def kerchunk_open():
            import zarr
            from kerchunk.hdf import SingleHdf5ToZarr

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                refs = SingleHdf5ToZarr(url, inline_threshold=100).translate()
            fs = fsspec.filesystem(
                "reference",
                fo=refs,
                remote_protocol="http",
                remote_options={"asynchronous": True},
                asynchronous=True,
            )
            store = zarr.storage.FsspecStore(fs, path=DATA, read_only=True)
            return zarr.open_array(store, mode="r", zarr_format=2)

        array, first = _measure(server, kerchunk_open)
        fresh()
        _, window = _measure(server, lambda: array[WINDOW_START : WINDOW_START + RATE, 0:4])
        fresh()
        kstop = stop // 10  # 31k chunk requests at full size would take minutes
        _, full = _measure(server, lambda: array[:kstop])
        full["mb_per_s"] = kstop * 64 * 2 / 1e6 / full["seconds"]
        results["kerchunk + fsspec"] = {"first open": first, "window": window, "full read": full}
    results["file"] = {"size_mb": {"seconds": size / 1e6}}
    return results


def bench_dask_windows(latency: float, n_windows: int) -> dict[str, dict[str, object]]:
    """1 s × 4-channel windows through ``chunks={}`` and the lazy array, over loopback HTTP.

    For the 1 GB file (31,200 chunks of (2000, 8)) and the 1M-chunk file ((1024, 1) chunks):
    the index is built once with no latency (and cached), then every window is read with
    ``latency`` per request; requests are the server's count, ms the median over windows.
    """
    import xarray as xr

    root = Path(tempfile.mkdtemp(prefix="xnwb-bench-"))
    cache = Path(tempfile.mkdtemp(prefix="xnwb-cache-"))
    files = {
        "31,200 chunks (2000, 8)": recording_1gb(),
        "1M chunks (1024, 1)": recording_1m_chunks(),
    }
    results: dict[str, dict[str, object]] = {}
    with RangeServer(root) as server:
        for label, source in files.items():
            try:
                os.link(source, root / source.name)
            except OSError:
                import shutil

                shutil.copy(source, root / source.name)
            url = server.url_for(source.name)
            server.latency = 0.0
            lazy = xr.open_dataset(url, engine="nwbzarr", index_cache=cache)
            dk = xr.open_dataset(url, engine="nwbzarr", index_cache=cache, chunks={})
            labels = lazy.channel.values[:4]
            n_times = lazy.sizes["time"]
            starts = np.random.default_rng(11).integers(0, n_times - RATE, n_windows)

            def by_slice(ds, s):
                return ds.data.isel(time=slice(s, s + RATE), channel=slice(0, 4)).values

            def by_labels(ds, s, labels=labels):
                t = slice(s / RATE, (s + RATE - 1) / RATE)
                return ds.data.sel(time=t, channel=labels).values

            readers = {
                "lazy, isel slice": lambda s, ds=lazy: by_slice(ds, s),
                "chunks={}, isel slice": lambda s, ds=dk: by_slice(ds, s),
                "lazy, sel labels": lambda s, ds=lazy: by_labels(ds, s),
                "chunks={}, sel labels": lambda s, ds=dk: by_labels(ds, s),
            }
            per: dict[str, dict[str, list[float]]] = {
                name: {"requests": [], "seconds": []} for name in readers
            }
            for s in starts:  # the readers take turns on the same windows (no cache in xnwb)
                for name, read in readers.items():
                    server.reset()
                    server.latency = latency
                    _, m = _measure(server, lambda read=read, s=int(s): read(s))
                    per[name]["requests"].append(m["requests"])
                    per[name]["seconds"].append(m["seconds"])
            results[label] = {
                "dask_chunk": list(dk.data.data.chunksize),
                "dask_tasks": dk.data.data.npartitions,
                **{
                    name: {
                        "max_requests": max(v["requests"]),
                        "median_requests": float(np.median(v["requests"])),
                        "ms": 1e3 * float(np.median(v["seconds"])),
                    }
                    for name, v in per.items()
                },
            }
    return results


def print_dask_windows(results: dict[str, dict[str, object]], latency: float, n: int) -> None:
    print(
        f"\n1 s × 4 ch window over loopback HTTP ({1e3 * latency:.0f} ms per request), "
        f"median of {n} windows; requests: max (median)"
    )
    print("| file | dask chunk | tool | requests | ms | × lazy |\n|---|---|---|---:|---:|---:|")
    for label, r in results.items():
        for name, m in r.items():
            if not isinstance(m, dict):
                continue
            lazy = r[name.replace("chunks={}", "lazy")]
            ratio = "" if "lazy" in name else f"{m['ms'] / lazy['ms']:.2f}"
            print(
                f"| {label} | {tuple(r['dask_chunk'])} | {name} | {m['max_requests']} "
                f"({m['median_requests']:g}) | {m['ms']:.0f} | {ratio} |"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    parser.add_argument(
        "--read-fraction",
        type=float,
        default=0.5,
        help="share of the recording read in the full-read test",
    )
    parser.add_argument(
        "--only",
        choices=["dask-windows"],
        help="run one section only (its results go to results/remote-<section>.json)",
    )
    parser.add_argument("--windows", type=int, default=7, help="windows per tool (dask-windows)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    if args.only == "dask-windows":
        windows = bench_dask_windows(args.latency, args.windows)
        output = Path(args.output or HERE / "results" / "remote-dask-windows.json")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(windows, indent=2))
        print_dask_windows(windows, args.latency, args.windows)
        return 0
    results = bench(args.latency, args.read_fraction)
    results["dask windows"] = bench_dask_windows(args.latency, args.windows)
    args.output = args.output or str(HERE / "results" / "remote.json")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(
        f"\nloopback HTTP, {1e3 * args.latency:.0f} ms per request, "
        f"{results['file']['size_mb']['seconds']:.0f} MB file, 31,200 chunks"
    )
    print(
        "| tool | first open: requests / MB / s | cached open: requests / s | "
        "1 s × 4 ch window: requests / ms | full read MB/s |"
    )
    print("|---|---|---|---|---:|")
    for tool, r in results.items():
        if tool in ("file", "dask windows"):
            continue
        fo = r["first open"]
        co = r.get("cached open")
        cached = f"{co['requests']} / {co['seconds']:.2f}" if co else "n/a (no index)"
        w = r["window"]
        print(
            f"| {tool} | {fo['requests']} / {fo['mb']:.1f} / {fo['seconds']:.2f} | {cached} | "
            f"{w['requests']} / {1e3 * w['seconds']:.0f} | {r['full read']['mb_per_s']:.0f} |"
        )
    print_dask_windows(results["dask windows"], args.latency, args.windows)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
