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
def outer_keys(draw):
    return tuple(_axis_key(draw, s) for s in SHAPE)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=outer_keys())
def test_outer_selection_matches_numpy(referenced, key):
    ref, source, data = referenced
    expected = data
    for axis in reversed(range(len(key))):
        k = key[axis]
        expected = np.take(
            expected, [k] if isinstance(k, int) else np.arange(SHAPE[axis])[k], axis=axis
        )
    drop = tuple(i for i, k in enumerate(key) if isinstance(k, int))
    expected = expected.squeeze(axis=drop) if drop else expected
    np.testing.assert_array_equal(read_selection(ref, source, key), expected)


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
