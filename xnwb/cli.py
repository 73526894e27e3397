"""The ``xnwb`` command: look at, index, transform and plot NWB recordings from a shell.

``xnwb info SOURCE`` (alias ``list``) prints what a file holds; ``xnwb index SOURCE -o
refs.json`` writes its references; ``xnwb tfr SOURCE --freqs 10:100:20 -o out.zarr`` writes
the whole recording's Morlet power (or its z-score) to Zarr, resumably; ``xnwb plot`` saves a
window as a picture; ``xnwb demo`` runs the whole workflow on a synthetic recording.

Built on :mod:`argparse`: the standard library's parser does everything these commands need
(sub-commands, repeated options, typed values) and adds no dependency; each command's body
lives in :mod:`xnwb.commands`. Every user error (a missing file, a bad option, an output that
cannot be written) is printed as one line, ``xnwb: error: what went wrong; what to do``, with
exit status 1 (2 for a bad command line); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, NoReturn

from xnwb.exceptions import UsageError

__all__ = ["main"]

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr, not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def main(argv: list[str] | None = None) -> int:
    """Run the ``xnwb`` command line; returns the exit status.

    Examples
    --------
    >>> main(["--version"])  # doctest: +ELLIPSIS
    xnwb ...
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version and usage errors exit here
        return int(stop.code or 0)
    if getattr(args, "version", False):
        import xnwb

        print(f"xnwb {xnwb.__version__}")
        return 0
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        note = getattr(args, "on_interrupt", None) or "interrupted"
        print(f"\nxnwb: {note}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if args.debug:
            raise
        print(f"xnwb: error: {describe(err)}", file=sys.stderr)
        return EXIT_ERROR


def describe(err: BaseException) -> str:
    """One line for an error: its message with whitespace collapsed, and a way out.

    Examples
    --------
    >>> describe(FileNotFoundError("no such file: 'x.nwb'"))
    "no such file: 'x.nwb'"
    >>> describe(RuntimeError("boom"))
    'unexpected RuntimeError: boom (rerun with --debug for the traceback, and report it)'
    """
    from xnwb.exceptions import XnwbError

    text = re.sub(r"\s+", " ", str(err)).strip() or type(err).__name__
    if len(text) > 400:
        text = text[:397] + "..."
    if isinstance(err, XnwbError | UsageError | OSError | KeyError | ImportError):
        return text
    if isinstance(err, ValueError | TypeError) and type(err).__module__.startswith("xnwb"):
        return text
    hint = "rerun with --debug for the traceback, and report it"
    return f"unexpected {type(err).__name__}: {text} ({hint})"


# -- the parser --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``xnwb`` (its sub-commands and their options)."""
    from xnwb import commands

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS,
        help="show the full traceback of an error",
    )
    source = argparse.ArgumentParser(add_help=False, parents=[common])
    source.add_argument("source", metavar="SOURCE",
                        help="an NWB file (path, https://, s3://, gs:// URL) or references JSON")
    source.add_argument("--group", metavar="G",
                        help="the series to use, e.g. processing/ecephys/LFP/ElectricalSeries "
                             "(default: the file's only ElectricalSeries in acquisition)")
    source.add_argument("--storage-option", metavar="KEY=VALUE", action="append", default=[],
                        dest="storage_options", type=_storage_option,
                        help="an fsspec option for a remote SOURCE (repeatable): anon=true, "
                             "token=anon, client_kwargs.endpoint_url=http://…")

    parser = _Parser(prog="xnwb", description=__doc__.split("\n\n")[0].split(":", 1)[1].strip(),
                     epilog="`xnwb COMMAND --help` describes each command.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    for name, aliases in (("info", ["list"]),):
        info = sub.add_parser(name, aliases=aliases, parents=[source],
                              help="the file's identity, session start and series table",
                              description="Print the file's identity and session start, and "
                                          "one row per time series (shape, rate, duration, "
                                          "chunks, compression, stored size).")
        info.set_defaults(func=commands.info)

    index = sub.add_parser("index", parents=[source], help="write the file's Zarr references",
                           description="Write kerchunk-compatible references (JSON) of the "
                                       "whole file; open them with "
                                       "xr.open_dataset(SOURCE, engine='nwbzarr', index=OUT).")
    index.add_argument("-o", "--output", required=True, metavar="OUT.json",
                       help="file to write (its folder must exist)")
    index.add_argument("--force", action="store_true", help="overwrite OUT.json")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.set_defaults(func=commands.index)

    tfr = sub.add_parser("tfr", parents=[source],
                         help="write the whole recording's Morlet power or z-score to Zarr",
                         description="Morlet wavelet power of the whole recording (identical to "
                                     "MNE's tfr_array_morlet), or its z-score over the recording "
                                     "or a baseline, written to Zarr part by part with bounded "
                                     "memory. Interrupted? Run the same command again: it "
                                     "resumes. The store is marked complete only at the end.")
    _transform_options(tfr, required=True)
    tfr.add_argument("--baseline", metavar="T0,T1", type=_baseline,
                     help="z-score against this window (seconds; an end may be empty) "
                          "instead of the whole recording; needs --zscore")
    tfr.add_argument("-o", "--output", required=True, metavar="OUT.zarr", help="the Zarr store")
    tfr.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                     help="stored type (default float32)")
    tfr.add_argument("--scheduler", metavar="S",
                     help="threads (default), processes, synchronous, or a dask.distributed "
                          "scheduler address such as tcp://10.0.0.5:8786")
    tfr.add_argument("--part-size", metavar="BYTES", type=_bytes, default=None,
                     help="bytes per resumable part, output or input, e.g. 256MiB (default)")
    tfr.add_argument("--force", action="store_true",
                     help="replace OUT.zarr if it holds a finished or different result")
    tfr.add_argument("--quiet", action="store_true", help="no progress bars")
    tfr.set_defaults(func=commands.tfr)

    plot = sub.add_parser("plot", parents=[source], help="save a window as a picture",
                          description="Save a window of the recording as a picture: raw "
                                      "traces, or with --tfr/--freqs a spectrogram per channel. "
                                      "Only that window is read (and transformed).")
    plot.add_argument("--start", type=float, default=0.0, metavar="S",
                      help="window start, seconds of recording time (default 0)")
    plot.add_argument("--duration", type=float, default=1.0, metavar="S",
                      help="window length in seconds (default 1)")
    plot.add_argument("--channels", type=_channels, metavar="IDS",
                      help="electrode ids, e.g. 0,3 (default: the first 16)")
    plot.add_argument("--tfr", metavar="OUT.zarr", help="a finished `xnwb tfr` store to show")
    _transform_options(plot, required=False)
    plot.add_argument("-o", "--output", required=True, metavar="FIG.png",
                      help="picture to write (PNG, SVG, PDF; replaced if it exists)")
    plot.add_argument("--dpi", type=int, default=100, help="resolution (default 100)")
    plot.set_defaults(func=commands.plot)

    demo = sub.add_parser("demo", parents=[common],
                          help="the whole workflow on a synthetic recording",
                          description="Write a realistic recording (1/f background, theta, beta "
                                      "and gamma bursts at known times and channels) to a "
                                      "cache folder, open it lazily, run morlet(...).zscore() "
                                      "over all of it and show where the bursts are.")
    demo.add_argument("--out", metavar="DIR",
                      help="folder for the recording and pictures (default: "
                           "$XNWB_CACHE_DIR/demo, else ~/.cache/xnwb/demo)")
    demo.add_argument("--duration", type=float, default=20.0, metavar="S",
                      help="seconds of recording (default 20)")
    demo.add_argument("--channels", type=int, default=16, metavar="N",
                      help="number of channels (default 16)")
    demo.add_argument("--plot", action="store_true",
                      help="save the raw window and the z-scored spectrogram as PNGs")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=commands.demo)
    return parser


def _transform_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--freqs", type=parse_freqs, required=required, metavar="SPEC",
                        help="frequencies in Hz: START:STOP:COUNT log-spaced (10:100:20) or a "
                             "list (4,8,16)")
    parser.add_argument("--n-cycles", type=float, default=7.0, metavar="N",
                        help="cycles per wavelet (default 7)")
    parser.add_argument("--decim", type=int, default=None, metavar="Q",
                        help="keep every Q-th sample (default: output near 1 kHz)")
    parser.add_argument("--zscore", action="store_true",
                        help="z-score each channel and frequency over the whole recording")


# -- option values -------------------------------------------------------------------------


def parse_freqs(spec: str) -> list[float]:
    """Frequencies from ``START:STOP:COUNT`` (log-spaced, ends included) or ``F1,F2,...``.

    Examples
    --------
    >>> [round(f, 2) for f in parse_freqs("10:100:3")]
    [10.0, 31.62, 100.0]
    >>> parse_freqs("4,8.5")
    [4.0, 8.5]
    >>> parse_freqs("10:100")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: '10:100' is not START:STOP:COUNT (log-spaced) nor a comma list...
    """
    import numpy as np

    bad = argparse.ArgumentTypeError(
        f"{spec!r} is not START:STOP:COUNT (log-spaced) nor a comma list of Hz; "
        "e.g. 10:100:20 or 4,8,16"
    )
    try:
        if ":" in spec:
            parts = spec.split(":")
            if len(parts) != 3:
                raise bad
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
            if not (0 < start < stop) or count < 1:
                raise argparse.ArgumentTypeError(
                    f"{spec!r}: need 0 < START < STOP and COUNT ≥ 1, e.g. 10:100:20"
                )
            return [float(f) for f in np.geomspace(start, stop, count)]
        freqs = [float(f) for f in spec.split(",") if f.strip()]
    except ValueError:
        raise bad from None
    if not freqs or any(not np.isfinite(f) or f <= 0 for f in freqs):
        raise argparse.ArgumentTypeError(f"{spec!r}: frequencies must be positive Hz")
    return freqs


def _storage_option(text: str) -> tuple[str, Any]:
    """``key=value``: the value read as JSON where it parses (``true``, ``3``), else text."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE, e.g. anon=true")
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def _baseline(text: str) -> tuple[float | None, float | None]:
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        t0, t1 = (float(p) if p.strip() else None for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not T0,T1 in seconds, e.g. 0,60 (an end may be empty: ,60)"
        ) from None
    return t0, t1


def _channels(text: str) -> list[int | str]:
    out: list[int | str] = []
    for item in (s.strip() for s in text.split(",")):
        if item:
            out.append(int(item) if re.fullmatch(r"-?\d+", item) else item)
    if not out:
        raise argparse.ArgumentTypeError(f"{text!r} names no channel; e.g. 0,3")
    return out


def _bytes(text: str) -> int:
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
             "kib": 2**10, "mib": 2**20, "gib": 2**30}
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in units:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 512MiB or 2GB")
    size = int(float(match.group(1)) * units[match.group(2).lower()])
    if size < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a part needs at least one byte")
    return size


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
