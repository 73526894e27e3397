"""An extended block handed over as its input pieces (xnwb.halo.ExtendedBlock): placed once,
rotated, straight into a buffer, with zeros where no piece is (MNE's padding and the FFT's)."""

import itertools

import dask.array as da
import numpy as np
import pytest

from xnwb.halo import ExtendedBlock, map_halo_blocks


def _reference(full: np.ndarray, present: slice, shift: int, length: int) -> np.ndarray:
    """The block with zeros outside ``present`` (time), padded to ``length``, rotated."""
    padded = np.zeros((*full.shape[:-1], length))
    padded[..., present] = full[..., present]
    return np.roll(padded, -shift, axis=-1)


def _tiled(full: np.ndarray, present: slice, cuts_t, cuts_rows) -> ExtendedBlock:
    """``full[..., present]`` cut into a grid of pieces (time cuts and row cuts)."""
    t_edges = [present.start, *cuts_t, present.stop]
    r_edges = [0, *cuts_rows, full.shape[0]]
    parts = []
    for r0, r1 in itertools.pairwise(r_edges):
        for t0, t1 in itertools.pairwise(t_edges):
            place = (slice(r0, r1), slice(t0, t1))
            parts.append((place, full[place]))
    return ExtendedBlock(full.shape, full.dtype, tuple(parts))


@pytest.mark.parametrize("seed", range(40))
def test_rotate_into_equals_padding_then_rolling(seed):
    rng = np.random.default_rng(seed)
    rows, n = int(rng.integers(1, 5)), int(rng.integers(2, 40))
    full = rng.standard_normal((rows, n))
    a = int(rng.integers(0, n // 2 + 1))
    b = int(rng.integers(max(a + 1, n // 2), n + 1))
    present = slice(a, b)  # samples beyond the record on either side are missing
    cuts_t = (
        sorted(set(rng.integers(a + 1, b, size=int(rng.integers(0, 3))).tolist()))
        if b - a > 1
        else []
    )
    cuts_rows = (
        sorted(set(rng.integers(1, rows, size=int(rng.integers(0, 2))).tolist()))
        if rows > 1
        else []
    )
    block = _tiled(full, present, cuts_t, cuts_rows)
    shift = int(rng.integers(0, n + 1))
    length = n + int(rng.integers(0, 7))
    dst = np.full((rows, length), np.nan)  # stale contents must all be overwritten
    block.rotate_into(dst, shift)
    np.testing.assert_array_equal(dst, _reference(full, present, shift, length))


def test_pieces_are_converted_once_to_the_buffer_type():
    samples = np.arange(-6, 6, dtype=np.int16).reshape(2, 6)
    block = _tiled(samples, slice(0, 6), [2], [1])
    dst = np.empty((2, 8), dtype=np.float32)
    block.rotate_into(dst, 2)
    np.testing.assert_array_equal(dst, _reference(samples.astype(float), slice(0, 6), 2, 8))
    assert dst.dtype == np.float32


def test_a_partial_tiling_of_the_other_axes_is_zeroed_not_left_stale():
    full = np.ones((3, 5))
    block = ExtendedBlock(full.shape, full.dtype, (((slice(0, 2), slice(0, 5)), full[:2]),))
    dst = np.full((3, 6), np.nan)
    block.rotate_into(dst, 0)
    assert np.all(dst[:2, :5] == 1) and np.all(dst[2] == 0) and np.all(dst[:, 5] == 0)


def test_a_block_without_pieces_is_all_zeros():
    dst = np.full((0, 4), np.nan)
    ExtendedBlock((0, 3), np.dtype(float), ()).rotate_into(dst, 1)
    dst = np.full((2, 4), np.nan)
    ExtendedBlock((2, 3), np.dtype(float), ()).rotate_into(dst, 1)
    assert np.all(dst == 0)


def test_array_materialises_and_a_whole_piece_is_not_copied():
    x = np.arange(12.0).reshape(3, 4)
    assert ExtendedBlock.of(x).array() is x
    edge = ExtendedBlock((3, 6), x.dtype, (((slice(0, 3), slice(2, 6)), x),))
    np.testing.assert_array_equal(edge.array(), np.concatenate([np.zeros((3, 2)), x], axis=1))


@pytest.mark.parametrize(
    ("dst_shape", "shift"), [((2, 4), 0), ((3, 8), 0), ((2, 8), -1), ((2, 8), 6)]
)
def test_impossible_placements_are_refused(dst_shape, shift):
    block = ExtendedBlock.of(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="cannot rotate"):
        block.rotate_into(np.empty(dst_shape), shift)


@pytest.mark.parametrize("axis", [0, 1])
def test_map_halo_blocks_hands_over_pieces_equal_to_the_assembled_block(axis):
    """The same blocks either way: pieces=True hands ExtendedBlocks, their arrays equal the
    arrays handed without it, at the record's edges too (zeros beyond it)."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((7, 50))
    x = da.from_array(data if axis == 1 else data.T, chunks=(3, 9) if axis == 1 else (9, 3))
    seen: dict[bool, dict[tuple[int, int], np.ndarray]] = {True: {}, False: {}}

    def record(xe, time_block, as_pieces):
        if as_pieces:
            assert isinstance(xe, ExtendedBlock)
            xe = xe.array()
        seen[as_pieces][(xe.shape[0], time_block, round(float(xe.sum()), 8))] = xe.copy()
        return np.zeros((xe.shape[0], 1, 1))

    for as_pieces in (False, True):
        map_halo_blocks(
            record,
            x,
            axis=axis,
            other_chunks=((4, 3),),
            time_chunks=(20, 20, 10),
            halo=6,
            out_chunks=((4, 3), (1,), (1, 1, 1)),
            name=f"probe-{as_pieces}",
            meta=np.empty((0, 0, 0)),
            pieces=as_pieces,
            as_pieces=as_pieces,
        ).compute(scheduler="sync")
    assert len(seen[True]) == 6 and seen[True].keys() == seen[False].keys()
    for key, arr in seen[False].items():
        np.testing.assert_array_equal(seen[True][key], arr)
