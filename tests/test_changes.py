"""A file changed under an open Dataset or a saved index is an error, never the new bytes.

Local files are pinned at open by device, inode, size, mtime and ctime; these tests change
real h5py files the ways users and tools do (in place with the mtime put back, renamed
over between open and the first read, regenerated beside a saved index) and assert
:class:`~xnwb.exceptions.SourceChangedError` where the old code returned wrong values.
"""

from __future__ import annotations

import os
import pickle

import h5py
import numpy as np
import pytest
import xarray as xr

import xnwb
from tests.conftest import counts
from xnwb.exceptions import SourceChangedError
from xnwb.source import ByteSource, compare_identity, file_identity

DATA = "acquisition/ElectricalSeries/data"


def _contiguous(nwb_writer, name="rec.nwb", seed=0):
    """An NWB file whose data are contiguous and unfiltered (read at fixed offsets)."""
    data = counts(20_000, 4, seed=seed)
    path = nwb_writer(
        [dict(name="ElectricalSeries", data=data, rate=1000.0, region=range(4))], name=name
    )
    return path, data


def _data_offset(path):
    with h5py.File(path, "r") as f:
        return f[DATA].id.get_offset()


def _rewrite_in_place(path, keep_mtime=True):
    """Flip the stored samples without changing the size; put the mtime back."""
    before = os.stat(path)
    offset = _data_offset(path)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        raw = bytearray(fh.read(4000))
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in raw))
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert after.st_size == before.st_size
    assert not keep_mtime or after.st_mtime_ns == before.st_mtime_ns


def _rename_over(src, dest):
    """Replace ``dest`` by ``src`` (same size), giving it ``dest``'s mtime."""
    old = os.stat(dest)
    assert os.path.getsize(src) == old.st_size
    os.utime(src, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(src, dest)


def test_in_place_rewrite_with_same_size_and_mtime(nwb_writer):
    path, data = _contiguous(nwb_writer)
    ds = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False)
    np.testing.assert_array_equal(ds.data[:100].values, data[:100])  # descriptor now open
    _rewrite_in_place(path)
    with pytest.raises(SourceChangedError, match=r"changed since it was opened \(ctime"):
        ds.data[:100].values


def test_renamed_over_between_open_and_first_read(nwb_writer):
    """The old code read the new file at the old offsets (3.6 M wrong values in the report)."""
    path, _ = _contiguous(nwb_writer)
    other, _ = _contiguous(nwb_writer, name="other.nwb", seed=1)
    ds = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False)
    _rename_over(other, path)
    with pytest.raises(SourceChangedError, match="changed since it was opened"):
        ds.data.values


def test_renamed_over_after_a_read(nwb_writer):
    path, data = _contiguous(nwb_writer)
    other, _ = _contiguous(nwb_writer, name="other.nwb", seed=1)
    ds = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False)
    np.testing.assert_array_equal(ds.data[:10].values, data[:10])
    _rename_over(other, path)
    with pytest.raises(SourceChangedError, match="renamed over"):
        ds.data[100:200].values


def test_a_worker_process_checks_the_file_it_opens(nwb_writer):
    """The pin travels with the pickled source: a worker's descriptor is checked too."""
    path, _ = _contiguous(nwb_writer)
    other, _ = _contiguous(nwb_writer, name="other.nwb", seed=1)
    source = ByteSource(path)
    source.pin()
    shipped = pickle.dumps(source)
    _rename_over(other, path)
    worker_copy = pickle.loads(shipped)
    with pytest.raises(SourceChangedError):
        worker_copy.fetch([0], [8])


def test_unchanged_file_reads_after_a_touch_free_copy(nwb_writer):
    """Reading an untouched file keeps working (the check must not fire by itself)."""
    path, data = _contiguous(nwb_writer)
    ds = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False)
    for _ in range(3):
        np.testing.assert_array_equal(ds.data.values, data)


def test_saved_index_of_a_regenerated_same_size_file(nwb_writer, tmp_path):
    path, _ = _contiguous(nwb_writer)
    index_path = str(tmp_path / "rec.json")
    xnwb.build_index(path).to_json(index_path)
    other, _ = _contiguous(nwb_writer, name="other.nwb", seed=1)
    assert os.path.getsize(other) == os.path.getsize(path)
    os.replace(other, path)  # regenerated: same size, new mtime
    with pytest.raises(SourceChangedError, match="since its index was built"):
        xr.open_dataset(path, engine="nwbzarr", index=index_path)


def test_saved_index_of_a_file_rewritten_in_place(nwb_writer, tmp_path):
    path, _ = _contiguous(nwb_writer)
    index_path = str(tmp_path / "rec.json")
    xnwb.build_index(path).to_json(index_path)
    _rewrite_in_place(path)  # same inode, size and mtime: ctime moved
    with pytest.raises(SourceChangedError, match="ctime"):
        xr.open_dataset(path, engine="nwbzarr", index=index_path)


def test_saved_index_of_the_same_file_and_of_a_preserving_copy(nwb_writer, tmp_path):
    path, data = _contiguous(nwb_writer)
    index_path = str(tmp_path / "rec.json")
    xnwb.build_index(path).to_json(index_path)
    ds = xr.open_dataset(path, engine="nwbzarr", index=index_path, mask_and_scale=False)
    np.testing.assert_array_equal(ds.data.values, data)
    copy = tmp_path / "copy.nwb"
    copy.write_bytes(open(path, "rb").read())
    st = os.stat(path)
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p does
    ds = xr.open_dataset(
        copy, engine="nwbzarr", index=index_path, allowed_sources=[path], mask_and_scale=False
    )
    np.testing.assert_array_equal(ds.data.values, data)


def test_exported_index_records_the_identity(nwb_writer):
    path, _ = _contiguous(nwb_writer)
    refs = xnwb.ReferenceIndex.from_json(xnwb.build_index(path).to_json())
    recorded = refs.info["identity"]
    assert recorded == file_identity(path)
    assert set(recorded) >= {"size", "mtime_ns", "ctime_ns", "inode", "device"}
    assert compare_identity(recorded, {**recorded, "size": recorded["size"] + 1}).startswith("size")


def test_a_hard_link_made_under_an_open_file_is_not_a_change(nwb_writer, tmp_path):
    """A new hard link moves ctime (backup and dedup tools make them): the bytes are the same."""
    path, data = _contiguous(nwb_writer)
    ds = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False)
    np.testing.assert_array_equal(ds.data[:100].values, data[:100])
    before = os.stat(path).st_ctime_ns
    os.link(path, tmp_path / "another-name.nwb")
    assert os.stat(path).st_ctime_ns != before
    np.testing.assert_array_equal(ds.data[100:5000].values, data[100:5000])
    _rewrite_in_place(path)  # a rewrite after that is still seen
    with pytest.raises(SourceChangedError, match="ctime"):
        ds.data[5000:6000].values
