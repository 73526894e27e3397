"""The zarr 3 store over references: zarr sees the whole file, failures raise."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import xnwb
from tests.conftest import counts
from xnwb.exceptions import ChunkReadError
from xnwb.store import ReferenceStore


@pytest.fixture
def path(nwb_writer):
    return nwb_writer(
        [
            dict(
                name="ElectricalSeries",
                data=counts(3000, 8),
                rate=1000.0,
                region=range(8),
                chunks=(500, 8),
                compression="gzip",
                shuffle=True,
            ),
            dict(
                name="LFP1",
                data=np.ones((300, 8), "f4"),
                rate=100.0,
                region=range(8),
                module="ecephys",
            ),
        ]
    )


def test_zarr_sees_nested_groups_strings_and_data(path):
    import h5py

    group = zarr.open_group(ReferenceStore(xnwb.build_index(path)), mode="r", zarr_format=2)
    assert "LFP1" in group["processing/ecephys/LFP"]
    assert group["identifier"][()] == "xnwb-test-rec"  # a scalar string survives
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(
            group["acquisition/ElectricalSeries/data"][:], f["acquisition/ElectricalSeries/data"][:]
        )
    assert group["acquisition/ElectricalSeries"].attrs["neurodata_type"] == "ElectricalSeries"


def test_failed_fetch_raises_instead_of_fill(path, tmp_path):
    refs = xnwb.build_index(path)
    arr = refs.arrays["acquisition/ElectricalSeries/data"]
    with open(path, "r+b") as fh:
        fh.truncate(int(arr.offsets[3, 0]) + 5)
    group = zarr.open_group(ReferenceStore(refs), mode="r", zarr_format=2)
    with pytest.raises(ChunkReadError):
        group["acquisition/ElectricalSeries/data"][:]


def test_store_is_read_only_and_lists(path):
    import asyncio

    from zarr.core.buffer import default_buffer_prototype

    store = ReferenceStore(xnwb.build_index(path))

    async def run():
        keys = [k async for k in store.list_dir("acquisition/ElectricalSeries/data")]
        assert ".zarray" in keys and "0.0" in keys and "5.0" in keys
        assert await store.exists("acquisition/ElectricalSeries/data/5.0")
        assert not await store.exists("acquisition/ElectricalSeries/data/6.0")
        assert (
            await store.get("acquisition/ElectricalSeries/data/6.0", default_buffer_prototype())
            is None
        )
        parts = await store.get_partial_values(
            default_buffer_prototype(),
            [
                ("acquisition/ElectricalSeries/data/0.0", None),
                ("acquisition/ElectricalSeries/data/1.0", None),
            ],
        )
        assert all(p is not None and len(p) > 0 for p in parts)
        with pytest.raises(PermissionError):
            await store.set("x", parts[0])

    asyncio.run(run())
