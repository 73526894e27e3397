"""The direct B-tree reader lists exactly what h5py's chunk_iter lists, or declines."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import xnwb
from xnwb.chunklist import read_chunk_btree
from xnwb.read import read_array
from xnwb.source import ByteSource


def _chunk_iter(ds):
    infos = []
    ds.id.chunk_iter(infos.append)
    coords = np.array([i.chunk_offset for i in infos], dtype=np.int64).reshape(-1, ds.ndim)
    fields = [
        np.array([getattr(i, f) for i in infos], dtype=np.int64)
        for f in ("byte_offset", "size", "filter_mask")
    ]
    return coords, *fields


CASES = {
    "1-D, one level": dict(shape=(5000,), chunks=(100,), dtype="i2"),
    "2-D, many levels": dict(shape=(40000, 4), chunks=(10, 1), dtype="i2"),
    "3-D gzip": dict(shape=(60, 30, 20), chunks=(7, 8, 9), dtype="f4", compression="gzip"),
    "sparse (unwritten chunks)": dict(shape=(10000, 2), chunks=(50, 2), dtype="f8", sparse=True),
    "extendible": dict(shape=(3000, 3), chunks=(64, 3), dtype="u2", maxshape=(None, 3)),
    "userblock": dict(shape=(4000,), chunks=(64,), dtype="i4", userblock_size=1024),
    "tracked creation order (v2 header)": dict(
        shape=(4000, 2), chunks=(40, 2), dtype="i2", track_order=True, libver="earliest"
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_btree_matches_chunk_iter(tmp_path, case):
    spec = dict(CASES[case])
    path = tmp_path / "x.h5"
    sparse = spec.pop("sparse", False)
    file_kw = {k: spec.pop(k) for k in ("userblock_size", "libver") if k in spec}
    rng = np.random.default_rng(3)
    data = rng.integers(0, 1000, size=spec["shape"]).astype(spec["dtype"])
    with h5py.File(path, "w", **file_kw) as f:
        ds = f.create_dataset("x", **spec)
        if sparse:
            ds[1000:1500] = data[1000:1500]
            ds[7000:] = data[7000:]
        else:
            ds[...] = data
    with h5py.File(path, "r") as f:
        ds = f["x"]
        got = read_chunk_btree(ds, str(path), None)
        assert got is not None, "the reader declined a version-1 B-tree"
        want = _chunk_iter(ds)
        order = np.lexsort(want[0].T[::-1])
        got_order = np.lexsort(got[0].T[::-1])
        for ours, theirs in zip(got, want, strict=True):
            np.testing.assert_array_equal(ours[got_order], theirs[order])
        expected = ds[()]
    ref = xnwb.build_index(path).arrays["x"]
    np.testing.assert_array_equal(read_array(ref, ByteSource(str(path)), "x"), expected)


def test_btree_declines_other_chunk_indexes(tmp_path):
    path = tmp_path / "latest.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("x", data=np.arange(10000), chunks=(100,), maxshape=(None,))
        f.create_dataset("y", data=np.arange(10000), chunks=(100,))
    with h5py.File(path, "r") as f:
        assert read_chunk_btree(f["x"], str(path), None) is None  # extensible array
        assert read_chunk_btree(f["y"], str(path), None) is None  # fixed array
    # ... and indexing falls back to h5py with the same result.
    refs = xnwb.build_index(path)
    np.testing.assert_array_equal(
        read_array(refs.arrays["x"], ByteSource(str(path)), "x"), np.arange(10000)
    )


def test_btree_declines_a_damaged_node(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(20000, dtype="i4"), chunks=(10,))
    raw = bytearray(path.read_bytes())
    first = raw.find(b"TREE", 2000)  # a node past the root group's own B-tree
    raw[first : first + 4] = b"XXXX"
    path.write_bytes(bytes(raw))
    with h5py.File(path, "r") as f:
        assert read_chunk_btree(f["x"], str(path), None) is None
