"""Many readers at once give the same bytes as one: 8 threads, and a 2-process cluster.

The windows overlap and cut through stored chunks, so the same chunks are fetched and
decoded by several readers at the same time (shared descriptor, shared decode pool,
per-process remote sessions).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest
import xarray as xr

from tests.conftest import counts

DATA = "acquisition/ElectricalSeries/data"
N = 30_000


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from tests.conftest import write_nwb

    path = tmp_path_factory.mktemp("conc") / "rec.nwb"
    data = counts(N, 8, seed=11)
    write_nwb(
        path,
        [
            dict(
                name="ElectricalSeries",
                data=data,
                rate=1000.0,
                region=range(8),
                chunks=(700, 3),
                compression="gzip",
                shuffle=True,
            )
        ],
    )
    with h5py.File(path, "r") as f:  # the reference reader
        assert np.array_equal(f[DATA][:], data)
    return str(path), data


def _windows(count=48, seed=0):
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, N - 4000, count)
    lengths = rng.integers(1, 4000, count)
    channels = [np.sort(rng.choice(8, rng.integers(1, 9), replace=False)) for _ in range(count)]
    return [(int(s), int(s + n), c) for s, n, c in zip(starts, lengths, channels, strict=True)]


def _read(ds, window):
    start, stop, channels = window
    return ds.data.isel(time=slice(start, stop), channel=channels).values


def _check_threads(ds, data):
    windows = _windows()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda w: _read(ds, w), windows * 2))
    for (start, stop, channels), got in zip(windows * 2, results, strict=True):
        np.testing.assert_array_equal(got, data[start:stop][:, channels])


def test_eight_threads_local(recording):
    path, data = recording
    ds = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False)
    _check_threads(ds, data)


def test_eight_threads_over_http(recording, http_remote, tmp_path):
    path, data = recording
    url = http_remote.upload("rec.nwb", path)
    ds = xr.open_dataset(url, engine="nwbzarr", mask_and_scale=False, index_cache=tmp_path / "c")
    _check_threads(ds, data)
    assert http_remote.server.max_in_flight >= 2  # the reads did overlap


def test_two_process_cluster_local_and_http(recording, http_remote, tmp_path):
    distributed = pytest.importorskip("distributed")
    path, data = recording
    url = http_remote.upload("rec.nwb", path)
    sources = [
        xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False),
        xr.open_dataset(url, engine="nwbzarr", mask_and_scale=False, index_cache=tmp_path / "c"),
    ]
    windows = _windows(24, seed=1)
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
    )
    try:
        with distributed.Client(cluster) as client:
            for ds in sources:
                futures = client.map(_read, [ds] * len(windows), windows, pure=False)
                results = client.gather(futures)
                for (start, stop, channels), got in zip(windows, results, strict=True):
                    np.testing.assert_array_equal(got, data[start:stop][:, channels])
                assert len(client.scheduler_info()["workers"]) == 2
            lazy = sources[1].chunk({"time": 1000}).data
            total = client.compute(lazy.astype("int64").sum("time")).result()
            np.testing.assert_array_equal(total.values, data.astype(np.int64).sum(axis=0))
    finally:
        cluster.close()
