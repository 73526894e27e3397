"""Local index build and cached open at 1M chunks: the direct B-tree walk against h5py's
``chunk_iter``, and a cached open against an uncached one.

    python benchmarks/bench_index.py                 # all figures, benchmarks/results/index.json
    python benchmarks/bench_index.py --runs 7

Data: ``benchmarks/datasets.py`` writes (once) ``rec_1m_chunks.nwb``: 16.8 M samples x 64
channels int16 in 1024 x 1 chunks (1,048,576 chunks, gzip). A/B pairs run interleaved
(A B A B ...) so a machine whose speed drifts moves both; every figure is the median of the
pairs, and the ratio is taken pair by pair. Peak memory is measured in a fresh process per
figure (``ru_maxrss`` after the work minus after the imports).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

RESULTS = Path(__file__).parent / "results"


def _data() -> Path:
    from datasets import recording_1m_chunks

    return Path(recording_1m_chunks())


def _build(path: Path, direct: bool) -> float:
    import xnwb
    import xnwb.index as index_module

    original = index_module.read_chunk_btree
    if not direct:
        index_module.read_chunk_btree = lambda *args, **kwargs: None
    try:
        tic = time.perf_counter()
        xnwb.build_index(path)
        return time.perf_counter() - tic
    finally:
        index_module.read_chunk_btree = original


def _open(path: Path, cache: Path | bool, expect_cached: bool | None = None) -> float:
    import xarray as xr

    tic = time.perf_counter()
    ds = xr.open_dataset(path, engine="nwbzarr", index_cache=cache)
    seconds = time.perf_counter() - tic
    if expect_cached is not None:
        assert ds.encoding["xnwb_open"]["index_cached"] is expect_cached, "cache state"
    return seconds


def _pairs(runs: int, a, b) -> dict[str, float]:
    a_times, b_times = [], []
    a(), b()  # warm-up: page cache, imports
    for _ in range(runs):
        a_times.append(a())
        b_times.append(b())
    ratios = [x / y for x, y in zip(a_times, b_times, strict=True)]
    return {
        "a_median_s": statistics.median(a_times),
        "b_median_s": statistics.median(b_times),
        "a_min_s": min(a_times),
        "b_min_s": min(b_times),
        "ratio_median": statistics.median(ratios),
    }


def _peak(mode: str, path: Path, cache: Path) -> dict[str, float]:
    """Memory of one operation in a fresh process (MiB): the peak of what it allocates
    (``tracemalloc``: Python objects and numpy arrays) and the process's peak resident size."""
    script = f"""
import resource, sys, tracemalloc
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
import xarray as xr, xnwb, xnwb.index
tracemalloc.start()
if {mode!r} == "build-direct":
    xnwb.build_index({str(path)!r})
elif {mode!r} == "build-chunk_iter":
    xnwb.index.read_chunk_btree = lambda *a, **k: None
    xnwb.build_index({str(path)!r})
else:
    xr.open_dataset({str(path)!r}, engine="nwbzarr", index_cache={str(cache)!r})
print(tracemalloc.get_traced_memory()[1] / 2**20,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    traced, rss = map(float, out.stdout.strip().splitlines()[-1].split())
    return {"allocated_peak_mib": traced, "process_peak_rss_mib": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    path = _data()
    cache = Path(tempfile.mkdtemp(prefix="xnwb-bench-cache-"))
    results: dict[str, object] = {"file": path.name, "runs": args.runs}

    build = _pairs(args.runs, lambda: _build(path, True), lambda: _build(path, False))
    results["build_index"] = {"direct_btree": build, "note": "a = direct B-tree, b = chunk_iter"}
    print(
        f"build_index, 1M chunks: direct B-tree {build['a_median_s']:.2f} s, "
        f"chunk_iter {build['b_median_s']:.2f} s, ratio {build['ratio_median']:.2f}"
    )

    _open(path, False)
    _open(path, cache)  # writes the entry
    opened = _pairs(args.runs, lambda: _open(path, cache, True), lambda: _open(path, False, False))
    entries = list(cache.glob("*.npz"))
    size = sum(e.stat().st_size for e in entries)
    results["open"] = {"cached_vs_uncached": opened, "cache_entry_bytes": size}
    print(
        f"open_dataset: cached {opened['a_median_s']:.3f} s, uncached "
        f"{opened['b_median_s']:.3f} s, ratio {opened['ratio_median']:.3f}; "
        f"cache entry {size / 2**20:.1f} MiB"
    )

    peaks = {m: _peak(m, path, cache) for m in ("build-direct", "build-chunk_iter", "open-cached")}
    results["peak_mib"] = peaks
    for mode, peak in peaks.items():
        print(
            f"{mode}: allocations peak {peak['allocated_peak_mib']:.0f} MiB, "
            f"process peak RSS {peak['process_peak_rss_mib']:.0f} MiB"
        )

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "index.json").write_text(json.dumps(results, indent=2))
    for entry in entries:
        os.unlink(entry)
    os.rmdir(cache)


if __name__ == "__main__":
    main()
