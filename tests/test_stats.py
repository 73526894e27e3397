"""xnwb.stats: one-pass mergeable moments, equal to numpy's two-pass mean and std (ddof=0)."""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from xnwb import stats
from xnwb.testing import raise_if_dask_computes

RNG = np.random.default_rng(42)
DATA = RNG.standard_normal((4, 5, 1200)) * np.arange(1, 6)[:, None] + 3.0


def assert_moments(m: stats.Moments, x: np.ndarray, axis: int) -> None:
    v = np.abs(x) ** 2 if np.iscomplexobj(x) else x
    np.testing.assert_array_equal(m.count, v.shape[axis])
    np.testing.assert_allclose(m.mean, v.mean(axis=axis), rtol=1e-12)
    np.testing.assert_allclose(m.std, v.std(axis=axis), rtol=1e-11)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_block_moments(axis):
    assert_moments(stats.block_moments(DATA, axis), DATA, axis)


@pytest.mark.parametrize(
    "chunks", [(4, 5, 1200), (1, 2, 100), (4, 5, (7, 500, 1, 692)), (2, 5, 299)]
)
def test_dask_moments_equal_numpy_in_one_pass(chunks):
    x = da.from_array(DATA, chunks=chunks)
    with raise_if_dask_computes(max_computes=1) as scheduler:
        m = stats.moments(x, axis=-1, progress=False)
    assert scheduler.total_computes == 1
    assert_moments(m, DATA, -1)
    assert m.count.dtype == np.int64


def test_complex_data_are_summarised_on_power():
    z = DATA + 1j * DATA[::-1]
    assert stats.quantity(z) == "power"
    m = stats.moments(da.from_array(z, chunks=(2, 5, 250)), axis=2, progress=False)
    assert_moments(m, z, 2)


def test_moments_along_a_middle_axis():
    x = da.from_array(np.moveaxis(DATA, 2, 1).copy(), chunks=(2, 333, 5))
    assert_moments(stats.moments(x, axis=1, progress=False), np.moveaxis(DATA, 2, 1), 1)


@settings(max_examples=40, deadline=None)
@given(
    x=arrays(np.float64, st.integers(2, 200), elements=st.floats(-1e6, 1e6)),
    cut=st.integers(0, 200),
)
def test_pairwise_merge_equals_whole(x, cut):
    cut = min(cut, x.size)
    m = stats.merge(stats.block_moments(x[:cut]), stats.block_moments(x[cut:]))
    assert int(m.count) == x.size
    scale = max(1.0, float(np.abs(x).max()))
    assert abs(float(m.mean) - x.mean()) <= 1e-12 * scale
    assert abs(float(m.m2) - ((x - x.mean()) ** 2).sum()) <= 1e-9 * scale**2 * x.size


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 600), max_size=20),
    offset=st.sampled_from([0.0, 1e3, 1e8]),
)
def test_many_way_combine_is_stable(cuts, offset):
    """Chunks of a signal riding on a large offset: no catastrophic cancellation."""
    x = offset + RNG.standard_normal(600)
    bounds = [0, *sorted(cuts), 600]
    parts = [stats.block_moments(x[a:b]) for a, b in itertools.pairwise(bounds)]
    m = stats.combine(stats.Moments(*(np.array(v) for v in zip(*parts, strict=True))))
    assert int(m.count) == 600
    assert abs(float(m.mean) - x.mean()) <= 1e-12 * max(1.0, offset)
    assert abs(float(m.std) - x.std()) <= 1e-9 * x.std() * max(1.0, offset / 1e3)


def test_empty_parts_are_ignored():
    x = DATA[0, 0]
    parts = [stats.block_moments(x[:0]), stats.block_moments(x[:500]), stats.block_moments(x[500:])]
    m = stats.combine(stats.Moments(*(np.array(v) for v in zip(*parts, strict=True))))
    assert_moments(m, x, 0)
    m = stats.merge(stats.block_moments(x[:0]), stats.block_moments(x))
    assert_moments(m, x, 0)


def test_zscore_function_is_lazy_and_right():
    x = da.from_array(DATA, chunks=(2, 5, 400))
    m = stats.moments(x, axis=2, progress=False)
    with raise_if_dask_computes():
        z = stats.zscore(x, m.mean, m.std, axis=2)
    expected = (DATA - DATA.mean(2, keepdims=True)) / DATA.std(2, keepdims=True)
    np.testing.assert_allclose(z.compute(), expected, rtol=1e-10, atol=1e-12)


def test_progress_bar_prints_only_for_long_passes(capsys):
    stats.moments(da.from_array(DATA, chunks=(2, 5, 400)), axis=2, progress=True)
    assert capsys.readouterr().out == ""  # under a second: silent
