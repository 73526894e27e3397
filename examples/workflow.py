"""The whole xnwb workflow on one recording, end to end.

Open a recording (from disk, then through a URL), look at raw traces, compute the Morlet
transform, z-score it over the whole recording, look at the z-scored spectrogram, run the
statistics pass on a ``distributed`` cluster, and save the z-score to Zarr to browse later.

Run it as ``python examples/workflow.py [--out FOLDER] [--url URL]``. Without ``--url`` the
recording is a synthetic one (:mod:`xnwb.demo`) served over HTTP from this machine, which
reads exactly as a file on a web server, S3, GCS or the DANDI archive would; with ``--url``
(and ``--group`` for a series other than the default) it is yours. The notebook
``examples/workflow.ipynb`` holds the same steps with the interactive viewer.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile

import matplotlib
import numpy as np
import xarray as xr
from distributed import Client, LocalCluster

import xnwb
from xnwb.demo import write_demo_recording
from xnwb.results import save_transform
from xnwb.testing import serve_files

matplotlib.use("Agg")  # a script saves its pictures; the notebook shows them

FREQS = np.geomspace(6.0, 60.0, 6)  # Hz: theta to low gamma, log-spaced


def main(out: str, url: str | None = None, group: str | None = None) -> None:
    os.makedirs(out, exist_ok=True)

    # 1. A recording on disk: 6 channels × 20 s at 1 kHz with theta, beta and gamma bursts.
    path = os.path.join(out, "rec.nwb")
    if not os.path.exists(path):
        write_demo_recording(path, duration=20.0, n_channels=6)
    print(xnwb.list_series(path)[["shape", "rate", "duration"]].to_string())
    local = xr.open_dataset(path, engine="nwbzarr")  # lazy: nothing read yet

    with contextlib.ExitStack() as stack:
        # 2. The same recording through a URL (only the byte ranges a window needs are read).
        if url is None:
            url = f"{stack.enter_context(serve_files(out)).url}/rec.nwb"
        ds = xr.open_dataset(url, engine="nwbzarr", group=group,
                             index_cache=os.path.join(out, "index-cache"))
        print(f"opened {url}: {dict(ds.sizes)}, {ds.encoding['xnwb_open'].get('requests')} "
              "requests")
        if url.endswith("/rec.nwb") and url.startswith("http://127.0.0.1"):
            window = dict(time=slice(10.0, 11.0), channel=[0, 1])
            same = np.array_equal(ds.data.sel(window).values, local.data.sel(window).values)
            print(f"a 1 s window through the URL equals the local read: {same}")

        # 3. Raw traces of a window (reads only that window).
        fig = ds.ephys.plot_window(start=5.5, duration=2.0, channels=[0, 1, 2, 3])
        fig.savefig(os.path.join(out, "raw.png"), dpi=90)

        # 4. Morlet power (lazy; identical to MNE's tfr_array_morlet) and 5. its z-score
        #    over the whole recording (one statistics pass; the z-score itself stays lazy).
        power = ds.ephys.morlet(FREQS, n_cycles=7.0, decim=4, output="power")
        local_stats = power.ephys.stats()  # count, mean, std per channel and frequency
        z = power.zscore(stats=local_stats)  # the same as power.zscore(), keeping the stats
        print(f"z-score: {dict(z.data.sizes)}, lazy: {z.data.chunks is not None}")

        # 6. The z-scored spectrogram of one window (computes that window and its halo).
        fig = z.ephys.plot_window(start=4.0, duration=8.0, channels=[0, 4])
        fig.savefig(os.path.join(out, "zscore.png"), dpi=90)

        # 7. The same statistics pass on a distributed cluster (here two local processes;
        #    a Kubernetes, HPC or hosted cluster's address works the same way).
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster):
            stats = power.ephys.stats()
        agree = np.allclose(stats["std"], local_stats["std"], rtol=1e-10)
        print(f"cluster statistics equal the local ones: {agree}")

        # 8. Save the z-score (and its statistics) to Zarr: resumable, chunk by chunk.
        store = os.path.join(out, "zscore.zarr")
        save_transform(power.zscore(stats=stats), store, statistics=stats, force=True)
        expected = z.data.sel(channel=0).values

    saved = xr.open_zarr(store)  # browse it later without recomputing anything
    fig = saved.ephys.plot_window(start=4.0, duration=8.0, channels=[0])
    fig.savefig(os.path.join(out, "saved.png"), dpi=90)
    equal = np.allclose(saved.data.sel(channel=0).values, expected, rtol=1e-5, atol=1e-5)
    print(f"saved {store}: {dict(saved.data.sizes)}; equals the lazy z-score: {equal}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "xnwb-workflow"),
                        help="folder for the recording, pictures and the Zarr store")
    parser.add_argument("--url", help="an NWB file's URL to open instead of the served demo")
    parser.add_argument("--group", help="the series to open (with --url)")
    args = parser.parse_args()
    main(args.out, args.url, args.group)
