"""The lazy arrays on a ``distributed`` cluster of processes, reading over HTTP."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import xarray as xr

from tests.conftest import counts

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_reduction_over_http_matches_local(client, http_remote, nwb_writer, tmp_path):
    data = counts(40_000, 8)
    path = nwb_writer(
        [dict(name="ElectricalSeries", data=data, rate=1000.0, region=range(8), conversion=1e-6,
              chunks=(1000, 8), compression="gzip", shuffle=True)]
    )
    url = http_remote.upload("rec.nwb", path)
    ds = xr.open_dataset(url, engine="nwbzarr", chunks={"time": 5000}, index_cache=tmp_path / "c")
    local = xr.open_dataset(path, engine="nwbzarr")
    result = ds.data.std("time").compute()
    np.testing.assert_allclose(result.values, local.data.std("time").values, rtol=1e-12)
    workers = {w for ws in client.who_has().values() for w in ws}
    assert len(client.scheduler_info()["workers"]) == 2 and workers is not None


def test_index_is_one_graph_key_not_copied_into_tasks(nwb_writer):
    data = counts(40_000, 8)
    path = nwb_writer(
        [dict(name="ElectricalSeries", data=data, rate=1000.0, region=range(8),
              chunks=(500, 8), compression="gzip")]
    )
    ds = xr.open_dataset(path, engine="nwbzarr", chunks={"time": 2000})
    graph = dict(ds.data.data.__dask_graph__())
    sizes = {key: len(pickle.dumps(task)) for key, task in graph.items()}
    big = max(sizes, key=sizes.get)
    assert "original" in str(big)  # the array (with the index) is one shared key
    others = [size for key, size in sizes.items() if key != big]
    assert len(others) == 20
    assert max(others) < 1000 < sizes[big]  # each task only names that key


def test_kernel_bank_is_one_graph_key_not_copied_into_transform_tasks():
    """A 30 kHz bank is megabytes: shipped per task, a cluster pass moved gigabytes."""
    import dask.array as da

    from xnwb import tfr

    x = da.zeros((8, 600_000), chunks=(8, 100_000))
    y = tfr.morlet(x, 30_000.0, np.geomspace(10, 100, 20), 7.0, decim=30)
    layer = dict(y.__dask_graph__().layers[y.name])
    sizes = {key: len(pickle.dumps(task)) for key, task in layer.items()}
    params = [key for key in sizes if str(key).endswith("-params")]
    assert len(params) == 1 and sizes[params[0]] > 1_000_000  # the bank, once
    assert max(size for key, size in sizes.items() if key not in params) < 5_000
    np.testing.assert_array_equal(y[:2, :, :10].compute(), np.zeros((2, 20, 10)))


def test_statistics_pass_on_the_cluster_ships_halo_pieces_and_equals_the_local_one(client):
    # On a cluster every overlap of a block with an input chunk stays a small getitem task,
    # so a worker is sent its neighbours' halos, never their whole chunks; the statistics
    # equal those of the local threads (which cut each block from its main chunk).
    import dask
    import dask.array as da

    from xnwb import stats, tfr

    signal = np.random.default_rng(5).standard_normal((4, 12_000))
    x = da.from_array(signal, chunks=(4, 3000))
    y = tfr.morlet(x, 500.0, np.array([10.0, 40.0]), 5.0, output="power", chunks={1: 1000})
    summaries = y._xnwb_block_moments(y, -1)
    layer = summaries.__dask_graph__().layers[summaries.name]
    pieces = [key for key in layer if isinstance(key, tuple) and key[0].endswith("-input")]
    blocks = [key for key in layer if isinstance(key, tuple) and key[0] == summaries.name]
    assert len(pieces) > len(blocks) == 12  # one piece per overlap, at least one per block
    on_cluster = stats.moments(y, axis=-1, progress=False)
    with dask.config.set(scheduler="threads"):
        local = stats.moments(y, axis=-1, progress=False)
    np.testing.assert_allclose(on_cluster.mean, local.mean, rtol=1e-13)
    np.testing.assert_allclose(on_cluster.std, local.std, rtol=1e-12)
