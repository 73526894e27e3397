"""Peak memory and time of ``xnwb tfr`` (the resumable Zarr writer), by part size.

Each run is a fresh child process (``python -m xnwb.cli tfr ...``); its peak resident set is
read from ``getrusage(RUSAGE_CHILDREN)`` and the runs of the part sizes take turns. Results
go to ``benchmarks/results/cli_tfr.json``.

    python benchmarks/bench_cli.py benchmarks/_data/seed_124ch_30khz_1min.nwb \\
        --part-size 256MiB --part-size 64GiB --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(source: str, part_size: str, freqs: str, zscore: bool) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="xnwb-bench-cli-")) / "out.zarr"
    argv = [sys.executable, "-m", "xnwb.cli", "tfr", source, "--freqs", freqs, "-o", str(out),
            "--part-size", part_size, "--quiet"] + (["--zscore"] if zscore else [])
    # a fresh child per run: RUSAGE_CHILDREN's maximum is then this child's (larger ones
    # from earlier runs would mask it, so the runs go smallest-first within a round)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    tic = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - tic
    if done.returncode:
        raise SystemExit(done.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    parts = json.loads((out / "zarr.json").read_text())["attributes"]["xnwb_parts"]
    shutil.rmtree(out.parent)
    return {"seconds": seconds, "peak_rss_mb_max_so_far": peak, "parts": parts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--part-size", action="append", default=None)
    parser.add_argument("--freqs", default="10:100:20")
    parser.add_argument("--zscore", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--output", default="benchmarks/results/cli_tfr.json")
    args = parser.parse_args()
    sizes = args.part_size or ["256MiB", "64GiB"]
    results: dict[str, list[dict[str, float]]] = {s: [] for s in sizes}
    for _ in range(args.repeat):
        for size in sizes:
            results[size].append(run_once(args.source, size, args.freqs, args.zscore))
            print(size, results[size][-1], flush=True)
    record = {"source": args.source, "freqs": args.freqs, "zscore": args.zscore,
              "load_average": os.getloadavg(), "results": results}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
