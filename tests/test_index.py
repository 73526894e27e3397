"""The reference index: chunk locations, filters, sub-chunks, kerchunk JSON."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import xnwb
from tests.conftest import kerchunk_references
from xnwb.exceptions import UnsupportedFilterError
from xnwb.read import read_array, read_selection
from xnwb.refs import ReferenceIndex
from xnwb.source import ByteSource


def _signal(shape=(5000, 6), dtype="int16", seed=0):
    rng = np.random.default_rng(seed)
    data = (rng.normal(0, 300, shape)).astype(dtype)
    data[::11] = 0
    return data


def _index_and_read(path: Path, name: str, **kwargs) -> tuple[ReferenceIndex, np.ndarray]:
    refs = xnwb.build_index(path, **kwargs)
    return refs, read_array(refs.arrays[name], ByteSource(str(path)), name)


def test_chunk_locations_match_h5py(tmp_path):
    path = tmp_path / "chunks.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=_signal(), chunks=(300, 4), compression="gzip", shuffle=True)
    refs = xnwb.build_index(path)
    arr = refs.arrays["x"]
    assert arr.grid == (17, 2) and arr.chunks == (300, 4)
    with h5py.File(path, "r") as f:
        dsid = f["x"].id
        for i in range(dsid.get_num_chunks()):
            info = dsid.get_chunk_info(i)
            index = tuple(o // c for o, c in zip(info.chunk_offset, (300, 4), strict=True))
            assert arr.offsets[index] == info.byte_offset
            assert arr.lengths[index] == info.size


PLUGIN_FILTERS = ["gzip", "lzf", "blosc", "zstd", "lz4", "bzip2", "shuffle+gzip+fletcher32"]


def _filter_kwargs(name: str) -> dict:
    if name == "gzip":
        return dict(compression="gzip", compression_opts=7)
    if name == "lzf":
        return dict(compression="lzf")
    if name == "shuffle+gzip+fletcher32":
        return dict(compression="gzip", shuffle=True, fletcher32=True)
    hdf5plugin = pytest.importorskip("hdf5plugin", reason="hdf5plugin writes plugin filters")
    return dict(
        {
            "blosc": hdf5plugin.Blosc(),
            "zstd": hdf5plugin.Zstd(),
            "lz4": hdf5plugin.LZ4(),
            "bzip2": hdf5plugin.BZip2(),
        }[name]
    )


@pytest.mark.parametrize("name", PLUGIN_FILTERS)
@pytest.mark.parametrize("dtype", ["int16", ">f8"])
def test_filters_decode_to_h5py_values(tmp_path, name, dtype):
    data = _signal(dtype=dtype)
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(512, 6), **_filter_kwargs(name))
    refs, values = _index_and_read(path, "x")
    np.testing.assert_array_equal(values, data)
    assert refs.arrays["x"].filters


def test_unsupported_filter_is_a_clear_error_at_open(tmp_path):
    path = tmp_path / "scaleoffset.nwb"
    with h5py.File(path, "w") as f:
        f.attrs["nwb_version"] = "2.8.0"
        g = f.create_group("acquisition/ts")
        g.attrs["neurodata_type"] = "TimeSeries"
        g.create_dataset("data", data=_signal()[:, 0].astype("int32"), chunks=(500,), scaleoffset=0)
        g.create_dataset("starting_time", data=0.0).attrs["rate"] = 100.0
    refs = xnwb.build_index(path)  # the index is fine: metadata stay usable
    assert "scaleoffset" in refs.arrays["acquisition/ts/data"].problem
    import xarray as xr

    with pytest.raises(UnsupportedFilterError, match=r"'/acquisition/ts/data'.*scaleoffset"):
        xr.open_dataset(path, engine="nwbzarr")
    listing = xnwb.list_series(path)
    assert listing.loc["acquisition/ts", "compression"].startswith("unsupported")


def test_filter_mask_chunks_are_honoured(tmp_path):
    """A chunk written with gzip skipped (filter_mask bit 0) decodes like the others."""
    data = _signal((1000, 4))
    path = tmp_path / "mask.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("x", data=data, chunks=(250, 4), compression="gzip", shuffle=True)
        # Rewrite chunk 2 with the shuffle filter applied but deflate skipped.
        import numcodecs

        raw = numcodecs.Shuffle(2).encode(np.ascontiguousarray(data[500:750]))
        ds.id.write_direct_chunk((500, 0), bytes(raw), filter_mask=0b10)
    with h5py.File(path, "r") as f:
        assert f["x"].id.get_chunk_info_by_coord((500, 0)).filter_mask == 0b10
        np.testing.assert_array_equal(f["x"][:], data)
    refs, values = _index_and_read(path, "x", inline_bytes=0)
    np.testing.assert_array_equal(values, data)
    assert (2, 0) in refs.arrays["x"].inline


@pytest.mark.parametrize("max_chunk_bytes", [1000, 4096, 10**9])
def test_contiguous_split_into_subchunks(tmp_path, max_chunk_bytes):
    data = _signal((3001, 6))
    path = tmp_path / "contig.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data)
        f.create_dataset("after", data=np.arange(10))  # something after it in the file
    refs, values = _index_and_read(path, "x", max_chunk_bytes=max_chunk_bytes)
    np.testing.assert_array_equal(values, data)
    arr = refs.arrays["x"]
    assert arr.chunk_nbytes <= max(max_chunk_bytes, 12)
    rows = max(1, max_chunk_bytes // 12)
    assert arr.chunks == (min(rows, 3001), 6)


def test_contiguous_at_end_of_file_pads_last_subchunk(tmp_path):
    data = _signal((1001, 3))
    path = tmp_path / "tail.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("x", data=data)
    _, values = _index_and_read(path, "x", max_chunk_bytes=600)
    np.testing.assert_array_equal(values, data)


def test_window_of_contiguous_data_fetches_only_its_subchunks(tmp_path):
    data = _signal((200_000, 4))
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data)
    refs = xnwb.build_index(path, max_chunk_bytes=64 * 1024)
    source = _CountingSource(str(path))
    window = read_selection(refs.arrays["x"], source, (slice(100_000, 101_000), slice(0, 2)))
    np.testing.assert_array_equal(window, data[100_000:101_000, :2])
    assert source.fetched_bytes <= 2 * 64 * 1024  # not the 1.6 MB dataset


def test_unfiltered_chunks_are_split(tmp_path):
    data = _signal((8192, 8))
    path = tmp_path / "unfiltered.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(4096, 8))
    refs, values = _index_and_read(path, "x", max_chunk_bytes=16 * 1024)
    np.testing.assert_array_equal(values, data)
    assert refs.arrays["x"].chunks == (1024, 8)
    assert refs.arrays["x"].stored_chunks == (4096, 8)


def test_unallocated_chunks_read_as_fill_value(tmp_path):
    path = tmp_path / "sparse.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "x", shape=(4000,), dtype="f4", chunks=(1000,), fillvalue=-1.5, compression="gzip"
        )
        ds[1000:2000] = 3.0
    refs, values = _index_and_read(path, "x", inline_bytes=0)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(values, f["x"][:])
    assert (refs.arrays["x"].offsets == -1).sum() == 3


class _CountingSource(ByteSource):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.fetched_bytes = 0

    def fetch(self, starts, lengths):
        self.fetched_bytes += sum(lengths)
        return super().fetch(starts, lengths)


def test_kerchunk_json_roundtrip_and_plain_zarr(tmp_path):
    zarr = pytest.importorskip("zarr")
    import fsspec

    data = _signal((4000, 5))
    path = tmp_path / "k.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("g/x", data=data, chunks=(700, 5), compression="gzip", shuffle=True)
        f.create_dataset("g/contig", data=data[:, 0].astype("f8"))
        f["g"].attrs["note"] = "hello"
        f.create_dataset("g/name", data="a scalar string")
    refs = xnwb.build_index(path, max_chunk_bytes=8192)
    out = tmp_path / "refs.json"
    refs.to_json(str(out))
    doc = json.loads(out.read_text())
    assert doc["version"] == 1 and "g/x/.zarray" in doc["refs"]
    assert json.loads(doc["refs"]["g/x/.zarray"])["fill_value"] is None

    again = ReferenceIndex.from_json(str(out))
    np.testing.assert_array_equal(read_array(again.arrays["g/x"], ByteSource(str(path))), data)
    assert again.groups["g"]["note"] == "hello"

    # Plain fsspec reference:// + zarr read what xnwb wrote.
    fs = fsspec.filesystem("reference", fo=str(out), asynchronous=True)
    for name, expected in (("g/x", data), ("g/contig", data[:, 0].astype("f8"))):
        store = zarr.storage.FsspecStore(fs, path=name, read_only=True)
        arr = zarr.open_array(store, mode="r", zarr_format=2)
        np.testing.assert_array_equal(arr[:], expected)


def test_reads_kerchunk_references(tmp_path):
    pytest.importorskip("kerchunk.hdf")
    data = _signal((3000, 4))
    path = tmp_path / "kc.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(256, 4), compression="gzip", shuffle=True)
    with open(path, "rb") as fh:
        refs = kerchunk_references(fh, str(path), inline_threshold=0)
    index = ReferenceIndex.from_refs(refs)
    assert index.source == str(path)
    np.testing.assert_array_equal(read_array(index.arrays["x"], ByteSource(str(path))), data)


def test_fallback_without_chunk_iter_warns_and_agrees(tmp_path):
    from xnwb.index import XnwbIndexWarning, _chunk_locations

    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=_signal((3000, 4)), chunks=(256, 4), compression="gzip")
    with h5py.File(path, "r") as f:
        fast = _chunk_locations(f["x"], "x")

        class OldDatasetID:  # an h5py built on HDF5 < 1.12.3 has no chunk_iter
            def __init__(self, dsid):
                self.get_num_chunks = dsid.get_num_chunks
                self.get_chunk_info = dsid.get_chunk_info

        class OldDataset:
            shape = f["x"].shape
            id = OldDatasetID(f["x"].id)

        with pytest.warns(XnwbIndexWarning, match="quadratic"):
            slow = _chunk_locations(OldDataset(), "x")
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)


def _many_chunks(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("big", data=np.arange(3000 * 4, dtype="i2").reshape(3000, 4),
                         chunks=(1, 4))  # 3000 chunks
        f.create_dataset("small", data=np.arange(10.0))
        f.create_dataset("contiguous", data=np.zeros((5000, 2), "f4"))
    return path


def test_progress_counts_chunks_as_they_are_listed(tmp_path):
    from xnwb.index import index_hdf5

    path = _many_chunks(tmp_path / "many.h5")
    reports: list[tuple[int, int]] = []
    # Through a file object HDF5's chunk_iter lists the chunks (as for remote files).
    with open(path, "rb") as fobj, h5py.File(fobj, "r") as h5file:
        refs = index_hdf5(h5file, str(path), progress=lambda d, t: reports.append((d, t)))
    assert refs.arrays["big"].offsets.size == 3000
    totals = {t for _, t in reports}
    assert totals == {3000 + 1 + 1}  # the chunk grid, plus one for each other dataset
    done = [d for d, _ in reports]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 3002
    within = [d for d in done if 0 < d < 3000]
    assert len(set(within)) >= 3000 // 256 - 1  # reported while the chunks are listed


def test_cli_index_of_a_remote_file_shows_progress(tmp_path, range_server, monkeypatch, capsys):
    from xnwb import progress
    from xnwb.cli import main

    url = range_server.put("many.h5", _many_chunks(tmp_path / "many.h5").read_bytes())
    monkeypatch.setattr(progress, "MINIMUM_SECONDS", 0.0)
    assert main(["index", url, "-o", str(tmp_path / "refs.json")]) == 0
    out = capsys.readouterr().out
    assert "100% Completed" in out and "indexed" in out
    assert main(["index", url, "-o", str(tmp_path / "quiet.json"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Completed" not in out and "indexed" in out
    refs = ReferenceIndex.from_json(tmp_path / "refs.json")
    assert int((refs.arrays["big"].offsets >= 0).sum()) == 3000
