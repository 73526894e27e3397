"""Bad input: each a clear, specific error; never wrong numbers."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import xarray as xr

import xnwb
from tests.conftest import counts
from xnwb.exceptions import ChunkDecodeError, ChunkReadError, NotNWBError


def test_not_hdf5(tmp_path):
    path = tmp_path / "notes.nwb"
    path.write_bytes(b"this is a text file, not HDF5\n" * 100)
    with pytest.raises(NotNWBError, match="not an HDF5 file"):
        xr.open_dataset(path, engine="nwbzarr")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        xr.open_dataset(tmp_path / "absent.nwb", engine="nwbzarr")


def test_hdf5_but_not_nwb(tmp_path):
    path = tmp_path / "plain.nwb"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.arange(10))
    with pytest.raises(NotNWBError, match="HDF5 but not NWB"):
        xr.open_dataset(path, engine="nwbzarr")
    with pytest.raises(NotNWBError):
        xnwb.list_series(path)


def _recording(nwb_writer, **io_options):
    data = counts(4000, 4, zeros=False)
    path = nwb_writer(
        [dict(name="ElectricalSeries", data=data, rate=1000.0, region=range(4), **io_options)],
        n_electrodes=4,
    )
    return path, data


def test_truncated_file(nwb_writer, tmp_path):
    path, _ = _recording(nwb_writer, chunks=(500, 4), compression="gzip")
    cut = tmp_path / "cut.nwb"
    shutil.copy(path, cut)
    with open(cut, "r+b") as fh:
        fh.truncate(cut.stat().st_size // 2)
    with pytest.raises((ChunkReadError, NotNWBError), match="truncated"):
        xr.open_dataset(cut, engine="nwbzarr")


def _corrupt_chunk(path, index=(2, 0), chunks=(500, 4)):
    refs = xnwb.build_index(path)
    arr = refs.arrays["acquisition/ElectricalSeries/data"]
    offset, length = int(arr.offsets[index]), int(arr.lengths[index])
    with open(path, "r+b") as fh:
        fh.seek(offset + length // 3)
        fh.write(b"\xff\x00\xfe\x01" * 8)
    return offset, length


def test_corrupted_gzip_chunk_raises_naming_the_chunk(nwb_writer):
    path, data = _recording(nwb_writer, chunks=(500, 4), compression="gzip", shuffle=True)
    _corrupt_chunk(path)
    ds = xr.open_dataset(path, engine="nwbzarr")
    np.testing.assert_allclose(ds.data[:1000].values, data[:1000])  # intact chunks still read
    with pytest.raises(
        ChunkDecodeError, match=r"chunk \(2, 0\) of '/acquisition/ElectricalSeries/data'"
    ):
        ds.data[900:1200].values


def test_corrupted_chunk_fails_fletcher32(nwb_writer):
    path, _ = _recording(nwb_writer, chunks=(500, 4), fletcher32=True)
    _corrupt_chunk(path)
    ds = xr.open_dataset(path, engine="nwbzarr")
    with pytest.raises(ChunkDecodeError, match=r"fletcher32|checksum"):
        ds.data.values


def test_file_truncated_after_indexing_is_a_read_error(nwb_writer, tmp_path):
    """The index says a chunk is there, the file ends first: an error, not zeros."""
    path, _ = _recording(nwb_writer, chunks=(500, 4), compression="gzip")
    ds = xr.open_dataset(path, engine="nwbzarr")
    refs = xnwb.build_index(path)
    arr = refs.arrays["acquisition/ElectricalSeries/data"]
    with open(path, "r+b") as fh:
        fh.truncate(int(arr.offsets[4, 0]) + 10)
    # the truncation is seen as a change of the file (its size and ctime moved)
    with pytest.raises(ChunkReadError, match=r"changed since it was opened \(size"):
        ds.data.values
