"""Opening reads no sample data; after opening, h5py is never used again."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

import xnwb
from tests.conftest import counts
from xnwb.source import ByteSource


@pytest.fixture
def recording(nwb_writer):
    data = counts(20_000, 8)
    path = nwb_writer(
        [
            dict(
                name="ElectricalSeries",
                data=data,
                rate=1000.0,
                region=range(8),
                conversion=1e-6,
                chunks=(1000, 8),
                compression="gzip",
                shuffle=True,
            )
        ]
    )
    return path, data


def _no_compute(*args, **kwargs):
    raise AssertionError("a dask computation ran")


def test_open_with_dask_computes_nothing(recording):
    path, _ = recording
    with dask.config.set(scheduler=_no_compute):
        ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
        window = ds.data.sel(time=slice(2.0, 3.0), channel=[101, 103])
    assert window.shape == (1001, 2)


class _Sentinel(Exception):
    pass


def test_open_touches_no_sample_bytes(recording, monkeypatch):
    path, _ = recording
    refs = xnwb.build_index(path)
    arr = refs.arrays["acquisition/ElectricalSeries/data"]
    stored = arr.offsets >= 0
    lo, hi = int(arr.offsets[stored].min()), int((arr.offsets + arr.lengths)[stored].max())

    fetched: list[tuple[int, int]] = []
    original = ByteSource.fetch

    def guarded(self, starts, lengths):
        for s, n in zip(starts, lengths, strict=True):
            if s < hi and s + n > lo:
                raise _Sentinel(f"sample bytes {s}-{s + n} were read")
            fetched.append((s, n))
        return original(self, starts, lengths)

    monkeypatch.setattr(ByteSource, "fetch", guarded)
    ds = xr.open_dataset(path, engine="nwbzarr")
    tree = xr.open_datatree(path, engine="nwbzarr")
    assert ds.sizes["time"] == 20_000 and "acquisition" in tree
    # The data are only reachable through that fetch: reading now hits the sentinel.
    with pytest.raises(_Sentinel):
        ds.data[:10].values


def test_reads_work_with_h5py_unusable(recording, monkeypatch):
    path, data = recording
    ds = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False)
    lazy = xr.open_dataset(path, engine="nwbzarr", chunks={"time": 3000})
    import h5py

    def refuse(*args, **kwargs):
        raise AssertionError("h5py used after the index was built")

    monkeypatch.setattr(h5py, "File", refuse)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", refuse)
    monkeypatch.setattr(h5py.Dataset, "read_direct", refuse)
    np.testing.assert_array_equal(ds.data.values, data)
    np.testing.assert_array_equal(
        ds.data.isel(time=[5, 3, 19_999], channel=[7, 0]).values, data[[5, 3, 19_999]][:, [7, 0]]
    )
    np.testing.assert_allclose(lazy.data.mean("time").values, data.mean(0) * 1e-6, rtol=1e-10)


def test_lazy_arrays_pickle(recording):
    import pickle

    path, data = recording
    ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    again = pickle.loads(pickle.dumps(ds))
    np.testing.assert_allclose(again.data[100:200].values, data[100:200] * 1e-6)
    assert type(again.xindexes["time"]).__name__ == "TimeIndex"
