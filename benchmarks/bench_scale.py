"""Read a leading share of the 1M-chunk recording at once: xnwb against h5py.

Run as a whole process so its wall time and peak memory can be measured from outside,
e.g. ``/usr/bin/time -v python benchmarks/bench_scale.py xnwb 1.0``.

Usage: ``python benchmarks/bench_scale.py {xnwb,xnwb-dask,h5py} [share of the time axis]``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datasets import recording_1m_chunks

DATA = "acquisition/ElectricalSeries/data"


def main() -> None:
    reader = sys.argv[1]
    share = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    path = recording_1m_chunks()
    tic = time.perf_counter()
    if reader == "h5py":
        import h5py

        with h5py.File(path, "r") as f:
            n = int(f[DATA].shape[0] * share)
            values = f[DATA][:n]
    else:
        import xarray as xr

        chunks = {} if reader == "xnwb-dask" else None
        ds = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False, chunks=chunks)
        n = int(ds.sizes["time"] * share)
        values = ds.data[:n].values
    print(f"{reader}: {values.shape} {values.dtype} in {time.perf_counter() - tic:.2f} s")


if __name__ == "__main__":
    main()
