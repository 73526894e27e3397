"""The bodies of the ``xnwb`` sub-commands (the parser is :mod:`xnwb.cli`).

Each takes the parsed arguments, prints what it did to standard output and returns the exit
status; errors are raised (an :class:`xnwb.exceptions.XnwbError`, ``OSError`` or
:class:`xnwb.exceptions.UsageError`) and turned into one line by :func:`xnwb.cli.main`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from xnwb.exceptions import UsageError

__all__ = ["demo", "human_bytes", "index", "info", "plot", "tfr"]


# -- info --------------------------------------------------------------------------------


def info(args: argparse.Namespace) -> int:
    """``xnwb info SOURCE``: identity, session start and the series table."""
    import pandas as pd

    from xnwb.api import open_source
    from xnwb.nwb import file_attrs, find_series, pick_series, series_summary

    _check_source(args.source)
    refs, source = open_source(args.source, storage_options(args.storage_options))
    paths = [pick_series(refs, args.group)] if args.group else find_series(refs)
    attrs = file_attrs(refs, source)
    print(f"file                 {args.source}")
    for key, label in (
        ("identifier", "identifier"),
        ("session_description", "session description"),
        ("session_start_time", "session start"),
        ("nwb_version", "NWB version"),
    ):
        if key in attrs:
            print(f"{label:<20} {attrs[key]}")
    opened = refs.info.get("open", {})
    if opened.get("requests"):  # remote sources: what opening cost
        cached = " (index from cache)" if opened.get("cached") else ""
        print(f"{'opened with':<20} {opened['requests']} requests{cached}")
    print()
    rows = [series_summary(refs, source, p) for p in paths]
    if not rows:
        print("no time series in this file")
        return 0
    table = pd.DataFrame(
        {
            "series": [r["path"] for r in rows],
            "type": [r["neurodata_type"] for r in rows],
            "shape": [" × ".join(str(n) for n in r["shape"]) for r in rows],
            "dtype": [r["dtype"] for r in rows],
            "rate": [_rate(r["rate"]) for r in rows],
            "duration": [_duration(r["duration"]) for r in rows],
            "chunks": [" × ".join(str(n) for n in r["chunks"]) for r in rows],
            "compression": [r["compression"] for r in rows],
            "stored": [human_bytes(r["stored_bytes"]) for r in rows],
        }
    )
    print(table.to_string(index=False))
    return 0


def human_bytes(n: float | None) -> str:
    """Bytes in binary units, three significant digits.

    Examples
    --------
    >>> human_bytes(512), human_bytes(3 * 2**20), human_bytes(70.2e9)
    ('512 B', '3 MiB', '65.4 GiB')
    """
    if n is None or not np.isfinite(n):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _rate(rate: Any) -> str:
    if isinstance(rate, str):
        return rate
    return f"{rate / 1000:g} kHz" if rate >= 1000 else f"{rate:g} Hz"


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    if seconds < 120:
        return f"{seconds:.3g} s"
    h, rest = divmod(round(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


# -- index -------------------------------------------------------------------------------


def index(args: argparse.Namespace) -> int:
    """``xnwb index SOURCE -o refs.json``: write the references of the whole file."""
    import xnwb
    from xnwb.nwb import pick_series

    _check_source(args.source)
    _check_output(args.output, force=args.force)
    options = storage_options(args.storage_options)
    tic = time.perf_counter()
    refs = xnwb.build_index(args.source, options, progress=not args.quiet)
    if args.group:  # the references cover the file; check the series asked for is in it
        pick_series(refs, args.group)
    refs.to_json(args.output)
    n_chunks = sum(int((a.offsets >= 0).sum()) for a in refs.arrays.values())
    print(
        f"indexed {args.source} in {time.perf_counter() - tic:.2f} s: {len(refs.arrays)} "
        f"datasets, {n_chunks} chunks -> {args.output} "
        f"({human_bytes(os.path.getsize(args.output))})"
    )
    return 0


# -- tfr ---------------------------------------------------------------------------------


def tfr(args: argparse.Namespace) -> int:
    """``xnwb tfr SOURCE --freqs ... -o out.zarr``: the whole-recording transform to Zarr."""
    from xnwb.results import DEFAULT_PART_BYTES, result_state, write_transform

    if args.baseline is not None and not args.zscore:
        raise UsageError("--baseline chooses the z-score's statistics: add --zscore")
    _check_source(args.source)
    _check_output_folder(args.output)
    result_state(args.output)  # refuses early a path that is not a Zarr store
    with scheduler(args.scheduler):
        ds = _open(args)
        series = ds["data"]
        decim = _default_decim(series) if args.decim is None else args.decim
        power = series.ephys.morlet(args.freqs, n_cycles=args.n_cycles, decim=decim,
                                    output="power")
        if args.baseline is not None:  # refused before any store is made, not after
            from xnwb.accessors import time_window

            time_window(power, args.baseline)
        params = {
            "source": _identity(args.source),
            # the version too: a store half written from another file of the same path and
            # shape would otherwise resume and mix the two recordings
            "source_version": _version(args.source, storage_options(args.storage_options)),
            "series": ds.attrs.get("series", args.group),
            "shape": list(series.shape),
            "freqs": [float(f) for f in args.freqs],
            "n_cycles": float(args.n_cycles),
            "decim": int(decim),
            "quantity": "zscore" if args.zscore else "power",
            "baseline": None if args.baseline is None else list(args.baseline),
            "dtype": args.dtype,
        }
        statistics = None
        if args.zscore:
            def statistics():
                print("statistics pass (count, mean, std of the power over "
                      f"{'the baseline' if args.baseline else 'the whole recording'})")
                return power.ephys.stats(baseline=args.baseline, progress=not args.quiet)

        def build(stats: Any) -> Any:
            return power if stats is None else power.zscore(stats=stats)

        def report(done: int, parts: int, where: str) -> None:
            print(f"part {done}/{parts} written ({where})", flush=True)

        args.on_interrupt = (
            f"interrupted; the parts written so far are kept in {args.output}: run the same "
            "command again to resume"
        )
        tic = time.perf_counter()
        what = "z-scored power" if args.zscore else "power"
        print(f"{what} of {params['series']} ({' × '.join(map(str, series.shape))} samples), "
              f"{len(args.freqs)} frequencies {args.freqs[0]:.3g}-{args.freqs[-1]:.3g} Hz, "
              f"decim {decim} -> {args.output}", flush=True)
        done = write_transform(
            build, args.output, params=params, statistics=statistics,
            dtype=np.dtype(args.dtype), part_bytes=args.part_size or DEFAULT_PART_BYTES,
            force=args.force, progress=not args.quiet, on_part=report,
        )
    if done.written == 0:
        print(f"{args.output} is already complete (same parameters); --force recomputes it")
    else:
        kept = done.parts - done.written
        again = f" (resumed: {kept} parts were on disk)" if done.resumed else ""
        print(f"wrote {done.written} of {done.parts} parts in "
              f"{time.perf_counter() - tic:.1f} s{again}; {args.output} is complete")
    print(f'open it with xr.open_zarr("{args.output}")'
          + (', its statistics with group="statistics"' if args.zscore else ""))
    return 0


@contextlib.contextmanager
def scheduler(spec: str | None) -> Iterator[Any]:
    """Run the block under a dask scheduler named on the command line.

    ``None``/``threads``, ``processes``, ``synchronous``, or the address of a
    ``dask.distributed`` scheduler (``tcp://host:8786``, ``host:8786``), whose client is
    closed afterwards.
    """
    import dask

    if spec is None or spec in ("threads", "threading"):
        with dask.config.set(scheduler="threads"):
            yield None
        return
    if spec in ("processes", "synchronous", "sync", "single-threaded"):
        with dask.config.set(scheduler=spec):
            yield None
        return
    if "://" not in spec and ":" not in spec:
        raise UsageError(
            f"--scheduler {spec!r}: use threads, processes, synchronous, or a "
            "dask.distributed address such as tcp://10.0.0.5:8786"
        )
    from distributed import Client

    try:
        client = Client(spec, timeout="10s", set_as_default=True)
    except (OSError, TimeoutError) as err:
        raise UsageError(
            f"could not reach the dask scheduler at {spec!r} ({err}); is it running?"
        ) from None
    try:
        print(f"on {spec}: {len(client.scheduler_info().get('workers', {}))} workers")
        yield client
    finally:
        client.close()


# -- plot --------------------------------------------------------------------------------


def plot(args: argparse.Namespace) -> int:
    """``xnwb plot SOURCE --start S --duration S -o fig.png``: save one window."""
    import matplotlib

    matplotlib.use("Agg")
    _check_output_folder(args.output)
    from matplotlib.backend_bases import FigureCanvasBase

    kinds = FigureCanvasBase.get_supported_filetypes()
    extension = os.path.splitext(str(args.output))[1].lstrip(".").lower()
    if extension not in kinds:
        raise UsageError(
            f"cannot save a figure as {extension or 'a file without an extension'!r}: "
            f"name the output with one of .{', .'.join(sorted(kinds))}"
        )
    if args.tfr and args.freqs:
        raise UsageError("give either --tfr (a saved result) or --freqs (computed), not both")
    if args.duration <= 0:
        raise UsageError(f"--duration {args.duration:g}: give a positive number of seconds")
    if args.tfr:
        from xnwb.results import open_result

        shown = open_result(args.tfr)["data"]
        made_from = shown.attrs.get("xnwb_params", {}) or {}
        if isinstance(made_from, dict) and made_from.get("source") not in (
            None,
            _identity(args.source),
        ):
            print(f"note: {args.tfr} was computed from {made_from['source']}")
        what = "saved " + ("z-score" if "zscore_of" in shown.attrs else "power")
    else:
        _check_source(args.source)
        ds = _open(args)
        shown = ds["data"]
        what = "raw traces"
        if args.freqs:
            decim = _default_decim(shown) if args.decim is None else args.decim
            shown = shown.ephys.morlet(args.freqs, n_cycles=args.n_cycles, decim=decim,
                                       output="power")
            what = "power"
            if args.zscore:
                shown = shown.zscore()
                what = "z-scored power"
        elif args.zscore:
            raise UsageError("--zscore needs --freqs (or a saved --tfr)")
    fig = shown.ephys.plot_window(args.start, args.duration, channels=args.channels)
    fig.savefig(args.output, dpi=args.dpi)
    print(f"{what}, {args.duration:g} s from {args.start:g} s -> {args.output}")
    return 0


# -- demo --------------------------------------------------------------------------------

DEMO_FREQS = np.geomspace(4.0, 100.0, 16)
DEMO_CYCLES = 7.0
DEMO_RATE = 1000.0
DEMO_DECIM = 4


def demo(args: argparse.Namespace) -> int:
    """``xnwb demo``: the README's main job on a synthetic recording with known bursts."""
    import xarray as xr

    import xnwb
    from xnwb.cache import cache_dir
    from xnwb.demo import demo_bursts, write_demo_recording

    shortest = _longest_wavelet(DEMO_FREQS[0], DEMO_CYCLES)
    if args.channels < 1:
        raise UsageError(f"--channels {args.channels}: a recording needs at least 1 channel")
    if args.channels > 1024:
        raise UsageError(f"--channels {args.channels}: the demo writes at most 1024 channels")
    if not np.isfinite(args.duration) or args.duration < shortest:
        raise UsageError(
            f"--duration {args.duration:g}: the demo needs at least {np.ceil(shortest * 10) / 10:g}"
            f" s (its {DEMO_FREQS[0]:g} Hz, {DEMO_CYCLES:g}-cycle wavelet is {shortest:.2f} s long)"
        )
    if args.duration > 3600:
        raise UsageError(f"--duration {args.duration:g}: the demo writes at most 3600 s")
    cache = cache_dir(True)  # None when XNWB_CACHE_DIR=off: then the system's temp folder
    folder = args.out or (
        os.path.join(cache, "demo") if cache else os.path.join(tempfile.gettempdir(), "xnwb-demo")
    )
    os.makedirs(folder, exist_ok=True)
    name = f"demo-{args.channels}ch-{args.duration:g}s.nwb"
    path = os.path.join(folder, name)
    tic = time.perf_counter()
    if os.path.exists(path):
        print(f"using {path} (written earlier)")
    else:
        partial = os.path.join(folder, f"writing-{os.getpid()}-{name}")
        write_demo_recording(partial, duration=args.duration, n_channels=args.channels,
                             rate=DEMO_RATE)
        os.replace(partial, path)  # never leave a half-written file under the name
        print(f"wrote {path} ({human_bytes(os.path.getsize(path))}) in "
              f"{time.perf_counter() - tic:.1f} s")
    print()
    print(xnwb.list_series(path)[["shape", "rate", "duration", "chunks", "compression"]]
          .to_string())
    print()
    tic = time.perf_counter()
    ds = xr.open_dataset(path, engine="nwbzarr")
    print(f"indexed and opened lazily in {1e3 * (time.perf_counter() - tic):.0f} ms:")
    print(ds)

    freqs = DEMO_FREQS
    tic = time.perf_counter()
    z = ds.ephys.morlet(freqs, n_cycles=DEMO_CYCLES, decim=DEMO_DECIM).zscore(
        progress=not args.quiet
    )
    print()
    print(f"Morlet power ({len(freqs)} frequencies {freqs[0]:g}-{freqs[-1]:g} Hz, "
          f"{DEMO_CYCLES:g} cycles, decim {DEMO_DECIM}) z-scored over the whole recording: "
          f"statistics pass {time.perf_counter() - tic:.2f} s; the result stays lazy:")
    print(z.data)

    bursts = demo_bursts(args.duration, args.channels)
    print()
    print("where the bursts were put, and the mean z-score the analysis finds there:")
    print(_burst_table(z.data, bursts).to_string(index=False))
    if args.plot:
        _demo_pictures(ds, z, bursts, folder)
    return 0


def _burst_table(z: Any, bursts: list[Any]) -> Any:
    import pandas as pd

    rows = []
    for b in bursts:
        band = z.sel(frequency=slice(b.low, b.high))
        inside = band.sel(time=slice(b.start, b.stop)).mean("frequency").mean("time").compute()
        outside = band.where((band.time < b.start) | (band.time > b.stop)).mean(
            ("frequency", "time")
        ).compute()
        others = inside.drop_sel(channel=b.channel) if inside.sizes["channel"] > 1 else None
        rows.append(
            {
                "burst": f"{b.band} {b.frequency:g} Hz",
                "channel": b.channel,
                "time (s)": f"{b.start:g}-{b.stop:g}",
                "z there": round(float(inside.sel(channel=b.channel)), 2),
                "z other channels, same time": "-" if others is None
                else round(float(others.mean()), 2),
                "z same channel, other times": round(float(outside.sel(channel=b.channel)), 2),
            }
        )
    return pd.DataFrame(rows)


def _demo_pictures(ds: Any, z: Any, bursts: list[Any], folder: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    theta = bursts[0]
    n = ds.sizes["channel"]
    raw = ds.ephys.plot_window(max(0.0, theta.start - 0.5), 2.0,
                               channels=list(range(min(n, 4))))
    raw_path = os.path.join(folder, "demo_raw.png")
    raw.savefig(raw_path, dpi=100)
    channels = sorted({b.channel for b in bursts})
    spec = z.ephys.plot_window(0.0, float(ds.time[-1]) + 1 / DEMO_RATE, channels=channels)
    spec_path = os.path.join(folder, "demo_zscore.png")
    spec.savefig(spec_path, dpi=100)
    print()
    print(f"raw traces around the theta burst: {raw_path}")
    print(f"z-scored spectrogram of channels {', '.join(map(str, channels))}: {spec_path}")


def _longest_wavelet(fmin: float, n_cycles: float, rate: float = DEMO_RATE) -> float:
    """Seconds of the longest Morlet wavelet (MNE's length, 2⌈5σ·fs⌉ - 1 samples)."""
    sigma = n_cycles / (2 * np.pi * fmin)
    return (2 * np.ceil(5 * sigma * rate) - 1) / rate


# -- shared ------------------------------------------------------------------------------


def _open(args: argparse.Namespace) -> Any:
    import xarray as xr

    return xr.open_dataset(
        args.source,
        engine="nwbzarr",
        group=args.group,
        storage_options=storage_options(args.storage_options),
    )


def _default_decim(series: Any) -> int:
    from xnwb.browse import default_decim

    return int(default_decim(series.ephys.rate))


def _identity(source: str) -> str:
    from xnwb.source import is_local, local_path

    return os.path.abspath(local_path(source)) if is_local(source) else source


def _version(source: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What tells this version of the source from another: size and modification time of
    a local file; size, version tag and (where the tag is not trusted) a fingerprint of the
    content of a remote object (:func:`xnwb.cache.source_identity`)."""
    from xnwb.cache import source_identity
    from xnwb.source import ByteSource

    identity = source_identity(ByteSource(source, options))
    return {k: v for k, v in identity.items() if k in ("size", "mtime_ns", "tag", "content")}


def _check_source(source: str) -> None:
    """Local sources: say plainly what is wrong before h5py does it in its own words."""
    from xnwb.source import is_local, local_path

    if not is_local(source):
        return
    path = local_path(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {source!r}")
    if os.path.isdir(path):
        raise UsageError(f"{source!r} is a folder, not an NWB file")


def _check_output_folder(output: str) -> None:
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise UsageError(
            f"the folder of {output!r} does not exist ({folder}); create it first"
        )
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"cannot write in {folder} (for {output!r}); choose another place")


def _check_output(output: str, *, force: bool) -> None:
    _check_output_folder(output)
    if os.path.isdir(output):
        raise UsageError(f"{output!r} is a folder; give a file name such as refs.json")
    if os.path.exists(output) and not force:
        raise UsageError(f"{output!r} exists; pass --force to overwrite it")


def storage_options(pairs: list[tuple[str, Any]]) -> dict[str, Any] | None:
    """Nest ``a.b=value`` pairs into ``{"a": {"b": value}}`` (fsspec's option shape).

    Examples
    --------
    >>> storage_options([("anon", True), ("client_kwargs.endpoint_url", "http://x")])
    {'anon': True, 'client_kwargs': {'endpoint_url': 'http://x'}}
    >>> storage_options([]) is None
    True
    """
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for key, value in pairs:
        *parents, leaf = key.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise UsageError(f"--storage-option {key}: {name!r} was already given a value")
        node[leaf] = value
    return out
