"""Orthogonal selections read through references equal numpy's."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xnwb
from xnwb.read import read_selection
from xnwb.source import ByteSource, coalesce

SHAPE = (1000, 7)


@pytest.fixture(scope="module")
def referenced(tmp_path_factory):
    data = np.random.default_rng(1).integers(-999, 999, SHAPE).astype("i4")
    path = tmp_path_factory.mktemp("read") / "r.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(64, 3), compression="gzip", shuffle=True)
    refs = xnwb.build_index(path)
    return refs.arrays["x"], ByteSource(str(path)), data


def _axis_key(draw, size):
    kind = draw(st.sampled_from(["slice", "array", "int"]))
    if kind == "int":
        return draw(st.integers(-size, size - 1))
    if kind == "array":
        return np.asarray(draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=20)))
    start = draw(st.integers(0, size))
    stop = draw(st.integers(0, size))
    step = draw(st.sampled_from([None, 1, 2, 5]))
    return slice(start, stop, step)


@st.composite
def outer_keys(draw, shape=SHAPE):
    return tuple(_axis_key(draw, s) for s in shape)


def _outer_expected(data: np.ndarray, key: tuple) -> np.ndarray:
    """numpy's answer to an outer (orthogonal) selection: each axis indexed on its own."""
    expected = data
    for axis in reversed(range(len(key))):
        k = key[axis]
        expected = np.take(
            expected, [k] if isinstance(k, int) else np.arange(data.shape[axis])[k], axis=axis
        )
    drop = tuple(i for i, k in enumerate(key) if isinstance(k, int))
    return expected.squeeze(axis=drop) if drop else expected


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=outer_keys())
def test_outer_selection_matches_numpy(referenced, key):
    ref, source, data = referenced
    np.testing.assert_array_equal(read_selection(ref, source, key), _outer_expected(data, key))


SHAPE_3D = (40, 7, 41)  # (time, channel, sample), as a SpikeEventSeries


@pytest.fixture(scope="module")
def referenced_3d(tmp_path_factory):
    data = np.random.default_rng(2).integers(-999, 999, SHAPE_3D).astype("i2")
    path = tmp_path_factory.mktemp("read3d") / "r.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(16, 3, 8), compression="gzip", shuffle=True)
    refs = xnwb.build_index(path)
    return refs.arrays["x"], ByteSource(str(path)), data


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=outer_keys(SHAPE_3D))
def test_outer_selection_of_3d_shuffled_data_matches_numpy(referenced_3d, key):
    # A channel list between two slices once came back transposed (or raised a shape
    # mismatch): the byte-plane copy added its plane index beside the list.
    ref, source, data = referenced_3d
    np.testing.assert_array_equal(read_selection(ref, source, key), _outer_expected(data, key))


def test_channel_list_of_3d_shuffled_data(referenced_3d):
    ref, source, data = referenced_3d
    got = read_selection(ref, source, (slice(0, 2), np.array([3, 5]), slice(None)))
    np.testing.assert_array_equal(got, data[0:2][:, [3, 5], :])


def test_out_of_bounds_array_index(referenced):
    ref, source, _ = referenced
    with pytest.raises(IndexError):
        read_selection(ref, source, (np.array([0, 5000]), slice(None)))


def test_coalesce_merges_only_nearby_ranges():
    starts, ends, placement = coalesce([100, 0, 5000], [50, 60, 10], max_gap=100, max_block=10**6)
    assert (starts, ends) == ([0, 5000], [150, 5010])
    assert placement == [(0, 100), (0, 0), (1, 0)]
    starts, ends, _ = coalesce([0, 100], [100, 100], max_gap=1000, max_block=150)
    assert len(starts) == 2  # max_block caps the merge


PIPELINES = {
    "shuffle+gzip": dict(compression="gzip", shuffle=True),
    "gzip": dict(compression="gzip"),
    "fletcher32+shuffle+gzip": dict(compression="gzip", shuffle=True, fletcher32=True),
    "fletcher32": dict(fletcher32=True),
}


@pytest.fixture(
    scope="module",
    params=[(p, d) for p in PIPELINES for d in ("i2", "f8", ">i4")],
    ids=lambda pd: f"{pd[0]}-{pd[1]}",
)
def narrow_chunks(request, tmp_path_factory):
    """Narrow chunks (many per grid row: the one-copy-per-row path), a ragged last column
    of chunks, and chunks never written (read as the fill value -7)."""
    pipeline, dtype = request.param
    shape, chunks = (700, 23), (50, 2)
    data = np.random.default_rng(3).integers(-999, 999, shape).astype(dtype)
    path = tmp_path_factory.mktemp("narrow") / "n.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "x", shape=shape, dtype=dtype, chunks=chunks, fillvalue=-7, **PIPELINES[pipeline]
        )
        ds[:400] = data[:400]
        ds[500:, :10] = data[500:, :10]  # rows 400-499 and 500+ x 10+ are never written
    expected = np.full(shape, -7, dtype)
    expected[:400] = data[:400]
    expected[500:, :10] = data[500:, :10]
    refs = xnwb.build_index(path)
    return refs.arrays["x"], ByteSource(str(path)), expected


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(r0=st.integers(0, 700), r1=st.integers(0, 700), c0=st.integers(0, 23), c1=st.integers(0, 23))
def test_narrow_chunk_slabs_match_h5py(narrow_chunks, r0, r1, c0, c1):
    ref, source, expected = narrow_chunks
    got = read_selection(ref, source, (slice(r0, r1), slice(c0, c1)))
    np.testing.assert_array_equal(got, expected[r0:r1, c0:c1])
    assert got.dtype == expected.dtype


def test_narrow_chunk_slabs_in_threads_and_batches(narrow_chunks, monkeypatch):
    """The whole array through the decode pool and several fetch batches (rows split
    between batches and threads) equals h5py's values."""
    import xnwb.read

    ref, source, expected = narrow_chunks
    monkeypatch.setattr(xnwb.read, "_FETCH_BATCH_BYTES", 3000)
    np.testing.assert_array_equal(read_selection(ref, source, ()), expected)


def test_corrupt_narrow_chunk_is_named(tmp_path):
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "x",
            data=np.arange(40_000, dtype="i4").reshape(4000, 10),
            chunks=(100, 2),
            compression="gzip",
            shuffle=True,
        )
    ref = xnwb.build_index(path).arrays["x"]
    offset = int(ref.offsets[2, 3])
    with open(path, "r+b") as f:  # garble chunk (2, 3)'s deflate stream
        f.seek(offset + 4)
        f.write(b"\xff" * 8)
    from xnwb.exceptions import ChunkDecodeError

    with pytest.raises(ChunkDecodeError, match=r"chunk \(2, 3\)"):
        read_selection(ref, ByteSource(str(path)), ())
