"""channel_conversion: on the channel axis of 2-D and 3-D series, and saved values that stay."""

from __future__ import annotations

import datetime
import warnings

import h5py
import numpy as np
import pytest
import xarray as xr

pynwb = pytest.importorskip("pynwb")


def _write(path, data, **series) -> str:
    from pynwb.ecephys import ElectricalSeries

    nwb = pynwb.NWBFile("d", "id", datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
    group = nwb.create_electrode_group("g", "d", "loc", nwb.create_device("dev"))
    for i in range(data.shape[1]):
        nwb.add_electrode(id=100 + i, location="CA1", group=group)
    region = nwb.create_electrode_table_region(list(range(data.shape[1])), "all")
    nwb.add_acquisition(ElectricalSeries(name="ES", data=data, electrodes=region, **series))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return str(path)


def _by_hand(path) -> np.ndarray:
    with h5py.File(path) as f:
        g = f["acquisition/ES"]
        cc = g["channel_conversion"][()]
        shape = (1, -1) + (1,) * (g["data"].ndim - 2)
        return (
            g["data"][()] * cc.reshape(shape) * g["data"].attrs["conversion"]
            + g["data"].attrs["offset"]
        )


@pytest.mark.parametrize("chunks", [None, {}])
def test_3d_series_scaled_on_the_channel_axis(tmp_path, chunks):
    # (time, channel, sample) as a SpikeEventSeries holds it: the gain once went on the last
    # axis left, wrong numbers when 3 time samples met 3 channels, a broadcast error else.
    rng = np.random.default_rng(0)
    raw = rng.integers(-100, 100, (50, 3, 4)).astype(np.int16)
    path = _write(tmp_path / "s.nwb", raw, rate=100.0, conversion=2.0,
                  channel_conversion=[1.0, 10.0, 100.0])  # fmt: skip
    want = _by_hand(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_dataset(path, engine="nwbzarr", chunks=chunks)
    data = ds.data
    for key in (dict(time=slice(0, 3)), dict(time=0), dict(), dict(time=[4, 2], sample=1)):
        np.testing.assert_allclose(data.isel(key).values, want[tuple(key.get(d, slice(None))
                                   for d in data.dims)], rtol=1e-12)  # fmt: skip
    np.testing.assert_allclose(data.isel({data.dims[1]: [2, 0]}).values, want[:, [2, 0]])


def test_saved_with_xarray_the_values_stay(tmp_path):
    # The encoding said int16 × conversion, but the values hold channel_conversion too:
    # to_zarr stored zeros for a 5e-8 gain.
    rng = np.random.default_rng(1)
    raw = rng.integers(-1000, 1000, (500, 3)).astype(np.int16)
    path = _write(tmp_path / "r.nwb", raw, rate=1000.0, conversion=0.25, offset=-3.0,
                  channel_conversion=[5e-8, 2.0, 0.5])  # fmt: skip
    ds = xr.open_dataset(path, engine="nwbzarr")
    np.testing.assert_allclose(ds.data.values, _by_hand(path), rtol=1e-12)
    keep = [c for c in ds.coords if ds[c].dtype.kind not in "OUS"]
    out = tmp_path / "saved.zarr"
    ds[["data"]].reset_coords(drop=True).assign_coords({c: ds[c] for c in keep}).to_zarr(out)
    np.testing.assert_array_equal(xr.open_zarr(out).data.values, ds.data.values)
