"""Remote reads over loopback HTTP with injected latency: xnwb against pynwb and kerchunk.

    python benchmarks/bench_remote.py [--latency 0.02]

An aiohttp range server on 127.0.0.1 (``tests/loopback.py``) adds ``--latency`` seconds to
every request and counts them. Peers, in the same run on the same file: pynwb over an
fsspec HTTP file, pynwb over remfile, and kerchunk references read through fsspec + zarr.
Results go to ``benchmarks/results/remote.json`` and a table on stdout. With
``--only dask-windows``, only 1 s × 4-channel windows through ``chunks={}`` and the lazy
array, on the 1 GB file and on a 1M-chunk file. With ``--only cold-open`` (issue 11): first
open, first and later windows, side by side with h5py + remfile, h5py + fsspec, pynwb +
fsspec, h5coro and LINDI (``--lindi-python``: a venv with lindi, which needs zarr 2), on
31k-, 100k-, 1M-chunk and large-chunk files; then a full pass right after a cold open, and
the local open of the 1M-chunk file. With ``--only full-read``, only that full pass (half
of the 31k-chunk recording, ``--rounds`` interleaved rounds) after a cold open, with the
index cached, and with the full index built at open as xnwb did before the lazy index.
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


def _pass_dataset(url: str, cache, **options):
    """The recording as a full pass reads it: stored counts, dask tasks of 240,000 rows."""
    import xarray as xr

    return xr.open_dataset(
        url,
        engine="nwbzarr",
        index_cache=cache,
        mask_and_scale=False,
        chunks={"time": 240_000, "channel": -1},
        **options,
    )


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
        raw = _pass_dataset(url, cache)
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
            # The lazy index reads B-tree nodes per window until its background completion
            # ends (``--only cold-open`` measures those windows): wait for it (it completes
            # this index in place and caches it, so the next open is complete too), so these
            # windows read through a complete index, as "built once" means.
            completion = _completion(url)
            if completion is not None and (not completion.wait(600) or completion.error):
                raise RuntimeError(f"the index of {url} did not complete: {completion.error}")
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


# -- cold open at any chunk count (issue 11) ----------------------------------------------
_LINDI_CHILD = r"""
import sys, time, json, warnings
warnings.simplefilter("ignore")
import lindi
url, data, rate = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
f = ds = None
for line in sys.stdin:
    cmd = line.split()
    tic = time.perf_counter()
    if cmd[0] == "open":
        f = lindi.LindiH5pyFile.from_hdf5_file(url)
        ds = f[data]
    elif cmd[0] == "window":
        s = int(cmd[1])
        ds[s : s + rate, 0:4]
    else:
        break
    print(json.dumps({"seconds": time.perf_counter() - tic}), flush=True)
"""


class _LindiPeer:
    """LINDI in its own virtual environment (it needs zarr 2; xnwb needs zarr 3)."""

    def __init__(self, python: str, url: str) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [python, "-c", _LINDI_CHILD, url, "/" + DATA, str(RATE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def ask(self, *words: object) -> float:
        self.proc.stdin.write(" ".join(map(str, words)) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["seconds"]

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(30)


def _completion(url: str):
    """The background index completion of the xnwb open of ``url`` (``None`` when none runs)."""
    from xnwb.lazyindex import index_completion

    return index_completion(url)


def bench_full_read_after_open(server: RangeServer, latency: float, rounds: int) -> dict:
    """A full pass right after a cold open (31k chunks, half the recording), against the
    same pass with the index cached and with the full index built at open (xnwb before
    the lazy index): interleaved rounds, each open and pass timed together and apart."""

    import xnwb.remote

    xnwb.remote.DEFAULT_CONCURRENCY = 8
    name = recording_1gb().name
    if not (Path(server.root) / name).exists():
        os.link(recording_1gb(), Path(server.root) / name)
    url = server.url_for(name)
    stop = 3_900_000
    cached = Path(tempfile.mkdtemp(prefix="xnwb-cache-"))
    server.latency = latency
    # Warm-up through dask as the passes read (imports, thread pools), once with the index
    # cached and once from a cold open (the lazy index's own code paths): otherwise only
    # the first round's first arm pays them (a cold pass ran 1.3x slower in its process's
    # first round than in the next ones).
    _pass_dataset(url, cached).data[:240_000].sum().compute()
    completion = _completion(url)
    if completion is not None:
        completion.wait(600)
    time.sleep(0.5)  # the cache entry is written right after completion
    _pass_dataset(url, Path(tempfile.mkdtemp())).data[:960_000].sum().compute()
    completion = _completion(url)
    if completion is not None:
        completion.wait(600)

    def full_pass(cache, seconds: dict, **options):
        # The open and the pass are timed apart too: the open has goals of its own.
        tic = time.perf_counter()
        ds = _pass_dataset(url, cache, **options)
        seconds["open"] = time.perf_counter() - tic
        total = ds.data[:stop].sum().compute()
        seconds["pass"] = time.perf_counter() - tic - seconds["open"]
        return total

    arms = {
        "cold open (lazy index)": {},
        "cached index": {},
        "cold open, full index at open (before)": {"lazy_index": False},
    }
    got: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
    names = list(arms)
    for round_number in range(rounds):
        # The arms take turns going first: whichever runs first in a round meets the
        # machine as the last round's third arm left it (memory, a cache write).
        shift = round_number % len(names)
        for arm in names[shift:] + names[:shift]:
            options = arms[arm]
            cache = cached if arm == "cached index" else Path(tempfile.mkdtemp())
            server.reset()
            server.latency = latency
            parts: dict[str, float] = {}
            _, m = _measure(server, lambda c=cache, o=options, p=parts: full_pass(c, p, **o))
            m.update(open_s=parts["open"], pass_s=parts["pass"])
            got[arm].append(m)
            completion = _completion(url)
            if completion is not None:  # the cold open's completion, before the next pass
                completion.wait(600)
    full: dict[str, object] = {}
    for arm, ms in got.items():
        seconds = float(np.median([m["seconds"] for m in ms]))
        full[arm] = {
            "seconds": seconds,
            "requests": int(np.median([m["requests"] for m in ms])),
            "mb_per_s": stop * 64 * 2 / 1e6 / seconds,
            "rounds_s": [m["seconds"] for m in ms],
            "open_s": float(np.median([m["open_s"] for m in ms])),
            "pass_s": float(np.median([m["pass_s"] for m in ms])),
        }
    cold = got["cold open (lazy index)"]
    for arm in ("cached index", "cold open, full index at open (before)"):
        ratios = [w["seconds"] / c["seconds"] for c, w in zip(cold, got[arm], strict=True)]
        full[f"throughput ratio cold lazy / {arm} (median of rounds)"] = float(np.median(ratios))
        full[f"throughput ratios cold lazy / {arm} (rounds)"] = ratios
        passes = [w["pass_s"] / c["pass_s"] for c, w in zip(cold, got[arm], strict=True)]
        full[f"pass alone: throughput ratio cold lazy / {arm} (median of rounds)"] = float(
            np.median(passes)
        )
        full[f"pass alone: throughput ratios cold lazy / {arm} (rounds)"] = passes
    return full


def print_full_read(full: dict) -> None:
    for name, m in full.items():
        if isinstance(m, dict):
            print(
                f"full read, {name}: {m['mb_per_s']:.0f} MB/s ({m['requests']} requests; "
                f"rounds {', '.join(f'{s:.2f}' for s in m['rounds_s'])} s; medians: open "
                f"{m['open_s']:.3f} s, pass {m['pass_s']:.3f} s)"
            )
        elif isinstance(m, list):
            print(f"full read, {name}: {', '.join(f'{r:.2f}' for r in m)}")
        else:
            print(f"full read, {name}: {m:.2f}")


def bench_cold_open(
    latency: float, n_windows: int, lindi_python: str | None, full_rounds: int = 3
) -> dict:
    """First open, first and later 1 s × 4 ch windows, per tool and file, over loopback HTTP."""
    import fsspec
    import h5py
    import remfile
    import xarray as xr
    from datasets import recording_100k_chunks, recording_large_chunks

    files = {
        "31k chunks (2000, 8)": recording_1gb(),
        "100k chunks (1024, 1)": recording_100k_chunks(),
        "1M chunks (1024, 1)": recording_1m_chunks(),
        "100 large chunks (18000, 64)": recording_large_chunks(),
    }
    root = Path(tempfile.mkdtemp(prefix="xnwb-bench-"))
    results: dict[str, dict] = {}
    # Imports and first-call set-up are not part of any tool's open.
    import xnwb.demo
    import xnwb.remote

    warm = xnwb.demo.write_demo_recording(root / "warm.nwb", duration=1.0)
    _ = xr.open_dataset(warm, engine="nwbzarr").data[:10].values
    with RangeServer(root) as server:

        def measure(fn):
            server.reset()
            server.latency = latency
            before = server.count()
            tic = time.perf_counter()
            out = fn()
            return out, {"requests": server.count() - before, "seconds": time.perf_counter() - tic}

        def one_file(label: str, source: Path) -> dict:
            try:
                os.link(source, root / source.name)
            except OSError:
                import shutil

                shutil.copy(source, root / source.name)
            url = server.url_for(source.name)
            with h5py.File(source) as f:
                n_times = f[DATA].shape[0]
            starts = [
                int(s) for s in np.random.default_rng(11).integers(0, n_times - RATE, n_windows + 1)
            ]
            per: dict[str, dict] = {}

            def run(tool, opener, window, *, after=None):
                handle, first_open = measure(opener)
                _, first = measure(lambda: window(handle, starts[0]))
                later = [measure(lambda s=s: window(handle, s))[1] for s in starts[1:]]
                entry = {
                    "first open": first_open,
                    "first window": first,
                    "later windows": {
                        "max_requests": max(m["requests"] for m in later),
                        "median_requests": float(np.median([m["requests"] for m in later])),
                        "median_ms": 1e3 * float(np.median([m["seconds"] for m in later])),
                    },
                    "open + windows s": first_open["seconds"]
                    + first["seconds"]
                    + sum(m["seconds"] for m in later[: n_windows - 1]),
                }
                if after is not None:
                    entry.update(after(handle))
                per[tool] = entry
                return handle

            cache = Path(tempfile.mkdtemp(prefix="xnwb-cache-"))

            def xnwb_after(ds, cache=cache, url=url):
                out = {}
                completion = _completion(url)
                if completion is not None:
                    _, done = measure(lambda: completion.wait(600))
                    out["completion (background)"] = done
                    for _ in range(200):  # the cache entry is written right after
                        if any(cache.glob("*.npz")):
                            break
                        time.sleep(0.05)
                later = [measure(lambda s=s: ds.data[s : s + RATE, 0:4].values)[1] for s in starts]
                out["windows after completion"] = {
                    "max_requests": max(m["requests"] for m in later),
                    "median_ms": 1e3 * float(np.median([m["seconds"] for m in later])),
                }
                _, out["cached open"] = measure(
                    lambda: xr.open_dataset(url, engine="nwbzarr", index_cache=cache)
                )

                def reopen_on_a_multi_range_server():
                    # as nginx or Apache answer (this server, by default, answers several
                    # ranges with the whole object, as S3 does; xnwb has remembered that)
                    server.multi_range = True
                    xnwb.remote._SINGLE_RANGE_ORIGINS.clear()
                    return xr.open_dataset(url, engine="nwbzarr", index_cache=cache)

                remembered = set(xnwb.remote._SINGLE_RANGE_ORIGINS)
                _, out["cached open (multi-range server)"] = measure(reopen_on_a_multi_range_server)
                server.multi_range = False
                # Back to the S3-like server xnwb has learnt about (a session's state).
                xnwb.remote._SINGLE_RANGE_ORIGINS.update(remembered)
                return out

            def xr_window(ds, s):
                return ds.data[s : s + RATE, 0:4].values

            run(
                "xnwb (lazy index)",
                lambda: xr.open_dataset(url, engine="nwbzarr", index_cache=cache),
                xr_window,
                after=xnwb_after,
            )
            run(
                "xnwb (full index, before)",
                lambda url=url: xr.open_dataset(
                    url, engine="nwbzarr", index_cache=False, lazy_index=False
                ),
                xr_window,
            )

            def h5_window(ds, s):
                return ds[s : s + RATE, 0:4]

            run("h5py + remfile", lambda: h5py.File(remfile.File(url), "r")[DATA], h5_window)
            run(
                "h5py + fsspec",
                lambda url=url: h5py.File(fsspec.filesystem("http").open(url, "rb"), "r")[DATA],
                h5_window,
            )

            def pynwb_open(url=url):
                from pynwb import NWBHDF5IO

                handle = h5py.File(fsspec.filesystem("http").open(url, "rb"), "r")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    io = NWBHDF5IO(file=handle, load_namespaces=True)
                    return io.read().acquisition["ElectricalSeries"].data

            run("pynwb + fsspec", pynwb_open, h5_window)
            try:
                from h5coro import h5coro, webdriver

                def coro_window(h5obj, s):
                    slab = [[s, s + RATE], [0, 4]]
                    promise = h5obj.readDatasets(
                        [{"dataset": "/" + DATA, "hyperslice": slab}], block=True
                    )
                    return promise["/" + DATA]

                run(
                    "h5coro",
                    lambda url=url: h5coro.H5Coro(url, webdriver.HTTPDriver),
                    coro_window,
                )
            except ImportError as err:
                per["h5coro"] = {"unavailable": str(err)}
            if lindi_python:
                peer = _LindiPeer(lindi_python, url)
                try:
                    _, first_open = measure(lambda: peer.ask("open"))
                    _, first = measure(lambda: peer.ask("window", starts[0]))
                    later = [measure(lambda s=s: peer.ask("window", s))[1] for s in starts[1:]]
                    per["LINDI (h5py path)"] = {
                        "first open": first_open,
                        "first window": first,
                        "later windows": {
                            "max_requests": max(m["requests"] for m in later),
                            "median_requests": float(np.median([m["requests"] for m in later])),
                            "median_ms": 1e3 * float(np.median([m["seconds"] for m in later])),
                        },
                        "open + windows s": first_open["seconds"]
                        + first["seconds"]
                        + sum(m["seconds"] for m in later[: n_windows - 1]),
                    }
                finally:
                    peer.close()
            else:
                per["LINDI (h5py path)"] = {"unavailable": "no --lindi-python given"}
            return per

        for label, source in files.items():
            results[label] = one_file(label, source)
            import gc

            gc.collect()

        results["full read after open (31k chunks)"] = bench_full_read_after_open(
            server, latency, full_rounds
        )

    # Local open of the 1M-chunk file: lazy against the full index.
    local = {}
    for name, options in (("lazy index", {}), ("full index", {"lazy_index": False})):
        times = []
        for _ in range(5):
            tic = time.perf_counter()
            xr.open_dataset(recording_1m_chunks(), engine="nwbzarr", **options)
            times.append(time.perf_counter() - tic)
        local[name] = {"median_s": float(np.median(times)), "min_s": min(times)}
    results["local open (1M chunks)"] = local
    return results


def print_cold_open(results: dict, latency: float) -> None:
    print(f"\nCold open over loopback HTTP ({1e3 * latency:.0f} ms per request)")
    print(
        "| file | tool | first open: req / s | first window: req / ms | "
        "later windows: max req / median ms | open + 5 windows s |"
    )
    print("|---|---|---|---|---|---:|")
    for label, per in results.items():
        if label.startswith(("full", "local")):
            continue
        for tool, r in per.items():
            if "unavailable" in r:
                print(f"| {label} | {tool} | unavailable: {r['unavailable']} | | | |")
                continue
            fo, fw, lw = r["first open"], r["first window"], r["later windows"]
            print(
                f"| {label} | {tool} | {fo['requests']} / {fo['seconds']:.2f} | "
                f"{fw['requests']} / {1e3 * fw['seconds']:.0f} | "
                f"{lw['max_requests']} / {lw['median_ms']:.0f} | {r['open + windows s']:.2f} |"
            )
            if "cached open" in r:
                c, w = r["cached open"], r["windows after completion"]
                m = r.get("cached open (multi-range server)", {})
                done = r.get("completion (background)", {})
                print(
                    f"| {label} | ↳ background completion / after it / cached reopen "
                    "(S3-like server; multi-range server) | "
                    f"{done.get('requests', 0)} req, {done.get('seconds', 0):.2f} s | "
                    f"windows: {w['max_requests']} req / {w['median_ms']:.0f} ms | "
                    f"reopen {c['requests']} req / {c['seconds']:.2f} s; "
                    f"{m.get('requests', '-')} req / {m.get('seconds', float('nan')):.2f} s | |"
                )
    print("\nRatios xnwb (lazy index) ÷ peer (below 1: xnwb faster)")
    print("| file | peer | first open s | first window ms | later window ms | open + 5 windows s |")
    print("|---|---|---:|---:|---:|---:|")
    for label, per in results.items():
        if label.startswith(("full", "local")):
            continue
        ours = per["xnwb (lazy index)"]
        for tool, r in per.items():
            if tool == "xnwb (lazy index)" or "unavailable" in r:
                continue
            print(
                f"| {label} | {tool} | "
                f"{ours['first open']['seconds'] / r['first open']['seconds']:.2f} | "
                f"{ours['first window']['seconds'] / r['first window']['seconds']:.2f} | "
                f"{ours['later windows']['median_ms'] / r['later windows']['median_ms']:.2f} | "
                f"{ours['open + windows s'] / r['open + windows s']:.2f} |"
            )
    print_full_read(results.get("full read after open (31k chunks)", {}))
    for name, m in results.get("local open (1M chunks)", {}).items():
        print(f"local open of the 1M-chunk file, {name}: median {m['median_s']:.3f} s")


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
        choices=["dask-windows", "cold-open", "full-read"],
        help="run one section only (its results go to results/remote-<section>.json)",
    )
    parser.add_argument("--windows", type=int, default=7, help="windows per tool (dask-windows)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of the full read after open"
    )
    parser.add_argument("--output", default=None)
    parser.add_argument(
        "--lindi-python",
        default=None,
        help="python of a virtual environment with lindi installed (it needs zarr 2)",
    )
    args = parser.parse_args(argv)
    if args.only == "full-read":
        root = Path(tempfile.mkdtemp(prefix="xnwb-bench-"))
        with RangeServer(root) as server:
            full = bench_full_read_after_open(server, args.latency, args.rounds)
        output = Path(args.output or HERE / "results" / "remote-full-read.json")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(full, indent=2))
        print(f"\nFull read right after a cold open, loopback HTTP {1e3 * args.latency:.0f} ms")
        print_full_read(full)
        return 0
    if args.only == "cold-open":
        cold = bench_cold_open(args.latency, args.windows, args.lindi_python, args.rounds)
        output = Path(args.output or HERE / "results" / "remote-cold-open.json")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(cold, indent=2))
        print_cold_open(cold, args.latency)
        return 0
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
