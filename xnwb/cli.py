"""The ``xnwb`` command.

``xnwb demo`` writes a demo recording and opens it (the README's main job);
``xnwb list FILE`` lists the series of an NWB file; ``xnwb index FILE OUT.json``
writes kerchunk-compatible references.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def _demo(args: argparse.Namespace) -> int:
    import xarray as xr

    import xnwb
    from xnwb.demo import write_demo_recording

    out_dir = args.out or tempfile.mkdtemp(prefix="xnwb-demo-")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "demo.nwb")
    tic = time.perf_counter()
    write_demo_recording(path, duration=args.duration, n_channels=args.channels)
    print(
        f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB) in {time.perf_counter() - tic:.1f} s"
    )
    print()
    print(xnwb.list_series(path).to_string())
    print()
    tic = time.perf_counter()
    ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    print(f"opened lazily in {1e3 * (time.perf_counter() - tic):.1f} ms:")
    print(ds)
    window = ds.data.sel(time=slice(1.0, 1.01), channel=[0, 1, 2]).compute()
    print()
    print("10 ms of channels 0-2 (volts):")
    print(window.to_pandas().head())

    import numpy as np

    freqs = np.geomspace(4.0, 100.0, 12)
    tic = time.perf_counter()
    z = ds.ephys.morlet(freqs, n_cycles=7.0, decim=4).zscore(progress=False)
    print()
    print(
        f"Morlet power z-scored over the whole recording (statistics pass: "
        f"{time.perf_counter() - tic:.2f} s); still lazy:"
    )
    print(z.data)
    band = z.data.sel(channel=0, time=slice(0.5, 1.5)).mean("time").compute()
    print()
    print("mean z-score of channel 0 in 0.5-1.5 s, by frequency (theta and a gamma burst):")
    print(band.to_pandas().round(2).to_string())
    if args.plot:
        fig = z.ephys.plot_window(start=0.5, duration=1.0, channels=[0])
        out = os.path.join(out_dir, "zscore_window.png")
        fig.savefig(out, dpi=80)
        print(f"\nplot of that window: {out}")
    return 0


def _list(args: argparse.Namespace) -> int:
    import xnwb

    print(xnwb.list_series(args.source).to_string())
    return 0


def _index(args: argparse.Namespace) -> int:
    import xnwb

    tic = time.perf_counter()
    refs = xnwb.build_index(args.source)
    refs.to_json(args.output)
    print(f"indexed {args.source} in {time.perf_counter() - tic:.2f} s -> {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``xnwb`` command line."""
    parser = argparse.ArgumentParser(prog="xnwb", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="write a demo NWB recording, open it and print it")
    demo.add_argument("--out", help="folder for the demo file (default: a temporary folder)")
    demo.add_argument("--duration", type=float, default=20.0, help="seconds (default 20)")
    demo.add_argument("--channels", type=int, default=16, help="channels (default 16)")
    demo.add_argument("--plot", action="store_true", help="save a PNG of a z-scored window")
    demo.set_defaults(func=_demo)
    lister = sub.add_parser("list", help="list the time series of an NWB file")
    lister.add_argument("source")
    lister.set_defaults(func=_list)
    index = sub.add_parser("index", help="write kerchunk-compatible references as JSON")
    index.add_argument("source")
    index.add_argument("output")
    index.set_defaults(func=_index)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
