"""HDF5 filters beyond gzip: files written with hdf5plugin, values compared with h5py."""

from __future__ import annotations

import re

import h5py
import hdf5plugin
import numpy as np
import pytest
import xarray as xr

import xnwb
from xnwb.codecs import PRODUCED_CODEC_IDS, filter_name, hdf5_filters_to_codecs
from xnwb.exceptions import UnsupportedFilterError
from xnwb.h5codecs import HDF5Bitshuffle, HDF5Blosc2
from xnwb.read import read_array
from xnwb.source import ByteSource

DECODED = {
    "bitshuffle": lambda: hdf5plugin.Bitshuffle(cname="none"),
    "bitshuffle-lz4": lambda: hdf5plugin.Bitshuffle(cname="lz4"),
    "bitshuffle-zstd": lambda: hdf5plugin.Bitshuffle(cname="zstd"),
    "bitshuffle-lz4-256": lambda: hdf5plugin.Bitshuffle(nelems=256, cname="lz4"),
    "blosc2-zstd-shuffle": lambda: hdf5plugin.Blosc2(
        cname="zstd", filters=hdf5plugin.Blosc2.SHUFFLE
    ),
    "blosc2-lz4-bitshuffle": lambda: hdf5plugin.Blosc2(
        cname="lz4", filters=hdf5plugin.Blosc2.BITSHUFFLE
    ),
    "blosc-zstd": lambda: hdf5plugin.Blosc(cname="zstd"),
    "lz4": lambda: hdf5plugin.LZ4(),
    "zstd": lambda: hdf5plugin.Zstd(),
    "bzip2": lambda: hdf5plugin.BZip2(),
}


def _signal(shape, dtype):
    rng = np.random.default_rng(7)
    values = np.cumsum(rng.normal(size=shape), axis=0) * 50
    return values.astype(dtype)


@pytest.mark.parametrize("name", sorted(DECODED))
@pytest.mark.parametrize(
    ("shape", "chunks", "dtype"),
    [
        ((4003, 5), (1000, 3), np.int16),
        ((3001,), (999,), np.float64),
        ((7770, 3), (1000, 2), "<u4"),
    ],
)
def test_plugin_filters_decode_like_h5py(tmp_path, name, shape, chunks, dtype):
    path = tmp_path / "filters.h5"
    data = _signal(shape, dtype)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=chunks, **DECODED[name]())
        expected = f["x"][()]
    index = xnwb.build_index(path)
    ref = index.arrays["x"]
    assert ref.problem is None
    assert {c["id"] for c in ref.filters} <= PRODUCED_CODEC_IDS
    got = read_array(ref, ByteSource(str(path)), "x")
    np.testing.assert_array_equal(got, expected)


def test_fcidecomp_decodes_as_jpeg_ls(tmp_path):
    path = tmp_path / "fci.h5"
    data = _signal((4000, 4), np.int16)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(1000, 4), **hdf5plugin.FciDecomp())
        expected = f["x"][()]
    ref = xnwb.build_index(path).arrays["x"]
    assert ref.filters == [{"id": "imagecodecs_jpegls"}]
    np.testing.assert_array_equal(read_array(ref, ByteSource(str(path)), "x"), expected)


def _nwb_with(tmp_path, io_filter, data):
    from datetime import UTC, datetime

    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    nwb = NWBFile("filters", "xnwb-filters", datetime(2025, 1, 1, tzinfo=UTC))
    wrapped = H5DataIO(data, chunks=(500, 4), allow_plugin_filters=True, **io_filter)
    nwb.add_acquisition(TimeSeries(name="ts", data=wrapped, unit="V", rate=1000.0))
    path = tmp_path / "rec.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(nwb)
    return path


def test_nwb_file_with_bitshuffle_lz4_opens_with_the_right_values(tmp_path):
    data = _signal((3000, 4), np.int16)
    path = _nwb_with(tmp_path, hdf5plugin.Bitshuffle(cname="lz4"), data)
    ds = xr.open_dataset(path, engine="nwbzarr", index_cache=False)
    np.testing.assert_array_equal(ds.data.values, data)
    assert (
        "bitshuffle"
        in xnwb.list_series(path, index_cache=False).loc["acquisition/ts", "compression"]
    )


@pytest.mark.parametrize(
    ("name", "options", "label"),
    [
        ("sz", lambda: hdf5plugin.SZ(absolute=1e-3), "'sz' (id 32017)"),
        ("zfp", lambda: hdf5plugin.Zfp(reversible=True), "'zfp' (id 32013)"),
        ("sz3", lambda: hdf5plugin.SZ3(absolute=1e-3), "'sz3' (id 32024)"),
    ],
)
def test_undecodable_filters_are_refused_at_open_by_name(tmp_path, name, options, label):
    data = _signal((3000, 4), np.float32)
    path = _nwb_with(tmp_path, options(), data)
    with pytest.raises(
        UnsupportedFilterError, match=re.escape(f"uses the HDF5 filter {label}") + ".*h5repack"
    ):
        xr.open_dataset(path, engine="nwbzarr", index_cache=False)
    listing = xnwb.list_series(path, index_cache=False)
    assert listing.loc["acquisition/ts", "compression"] == f"unsupported: {label}"


def test_unregistered_filter_id_is_named_once(tmp_path):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        for name in ("small", "series/data"):  # inlined at index time / read by reference
            ds = f.create_dataset(
                name,
                shape=(100,),
                dtype="i2",
                chunks=(50,),
                compression=40123,
                allow_unknown_filter=True,
            )
            ds.id.write_direct_chunk((0,), np.arange(50, dtype="i2").tobytes())
    index = xnwb.build_index(path)
    for problem in (index.arrays["series/data"].problem, index.info["skipped"]["small"]):
        assert "filter id 40123 (not in the HDF Group registry of filters)" in problem
        assert problem.count("40123") == 1


def test_filter_names_are_the_registered_ones():
    assert filter_name(32017) == "'sz' (id 32017)"
    assert filter_name(32026) == "'blosc2' (id 32026)"
    assert filter_name(32008) == "'bitshuffle' (id 32008)"
    with pytest.raises(UnsupportedFilterError, match=r"'szip' \(id 4\)"):
        hdf5_filters_to_codecs([(4, 0, (), b"")], 2, "/d")


@pytest.mark.parametrize(
    ("codec", "options"),
    [
        (
            lambda: HDF5Bitshuffle(2, compression="none"),
            lambda: hdf5plugin.Bitshuffle(cname="none"),
        ),
        (lambda: HDF5Bitshuffle(2, compression="lz4"), lambda: hdf5plugin.Bitshuffle(cname="lz4")),
        (
            lambda: HDF5Bitshuffle(2, compression="zstd"),
            lambda: hdf5plugin.Bitshuffle(cname="zstd"),
        ),
        (lambda: HDF5Blosc2(2), lambda: hdf5plugin.Blosc2()),
    ],
)
def test_our_encoding_is_read_back_by_hdf5_itself(tmp_path, codec, options):
    """Chunks re-encoded at index time (filter_mask) must be what the HDF5 plugin writes."""
    data = np.arange(-500, 501, dtype=np.int16)
    path = tmp_path / "encoded.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("x", shape=data.shape, dtype="i2", chunks=data.shape, **options())
        ds.id.write_direct_chunk((0,), codec().encode(data))
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["x"][()], data)
