"""Cost of reading a reference file with every field checked.

Writes xnwb's JSON of a benchmark file once (``--write``), then times reading it back
the way ``open_dataset("refs.json")`` does (bounded read, parse, checks), and prints
seconds and the Python heap peak::

    python benchmarks/bench_refs.py --write benchmarks/_data/rec_1m_chunks.nwb /tmp/refs.json
    python benchmarks/bench_refs.py /tmp/refs.json
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import xnwb
from xnwb.refs import ReferenceIndex


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", metavar="NWB", help="index this file and write the JSON first")
    parser.add_argument("json")
    parser.add_argument("--trace", action="store_true", help="report the heap peak (slower)")
    args = parser.parse_args()
    if args.write:
        xnwb.build_index(args.write).to_json(args.json)
        return
    if args.trace:
        tracemalloc.start()
    tic = time.perf_counter()
    try:
        from xnwb.refload import load_reference_file

        doc = load_reference_file(args.json)
        index = ReferenceIndex.from_reference_file(doc)
    except ImportError:  # before the bounded loader existed
        with open(args.json) as fh:
            index = ReferenceIndex.from_refs(json.load(fh))
    seconds = time.perf_counter() - tic
    chunks = sum(a.offsets.size for a in index.arrays.values())
    peak = tracemalloc.get_traced_memory()[1] / 2**20 if args.trace else float("nan")
    print(f"{chunks} chunks: {seconds:.2f} s, heap peak {peak:.0f} MiB")


if __name__ == "__main__":
    main()
