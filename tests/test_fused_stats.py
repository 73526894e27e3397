"""The statistics pass over a lazy transform summarises each block as it is transformed.

``xnwb.stats.moments`` of an untouched dask result of ``xnwb.tfr`` asks the transform for
per-block ``(count, mean, M2)`` instead of computing the coefficients and summarising them
afterwards. These tests pin that the shortcut is taken, that it gives the numbers of the
general chunk-by-chunk path (and MNE's), and that anything else falls back to that path.
"""

from __future__ import annotations

import itertools

import dask
import dask.array as da
import dask.threaded
import numpy as np
import pytest
from mne.time_frequency import tfr_array_morlet

from xnwb import stats, tfr
from xnwb.testing import raise_if_dask_computes

RATE = 250.0
FREQS = np.array([8.0, 20.0, 45.0])
RNG = np.random.default_rng(7)
SIGNAL = RNG.standard_normal((3, 4000)) + 0.5


class KeyRecorder:
    """A scheduler that remembers the names of every key it was asked to compute."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __call__(self, dsk, keys, **kwargs):
        graph = dsk.__dask_graph__() if hasattr(dsk, "__dask_graph__") else dsk
        for key in graph:
            self.names.add(key[0] if isinstance(key, tuple) else key)
        return dask.threaded.get(dsk, keys, **kwargs)


def general_path(y: da.Array) -> stats.Moments:
    """The chunk-by-chunk path: same values under a new name, so no transform hook."""
    return stats.moments(y.map_blocks(np.asarray, dtype=y.dtype), axis=-1, progress=False)


def transformed(output="power", decim=1, dtype=None, chunks=(3, 700)) -> da.Array:
    x = da.from_array(SIGNAL, chunks=chunks)
    return tfr.morlet(x, RATE, FREQS, 5.0, output=output, decim=decim, dtype=dtype)


@pytest.mark.parametrize("output", ["complex", "power", "amplitude", "phase"])
@pytest.mark.parametrize("decim", [1, 3])
@pytest.mark.parametrize("dtype", [None, "complex64"])
def test_block_summaries_equal_the_general_path(output, decim, dtype):
    y = transformed(output, decim, dtype)
    recorder = KeyRecorder()
    with dask.config.set(scheduler=recorder):
        fused = stats.moments(y, axis=-1, progress=False)
    # The coefficients themselves were never a task: only their per-block summaries.
    assert y.name not in recorder.names
    assert any(name.startswith("wavelet") and "-summary-" in name for name in recorder.names)
    general = general_path(y)
    np.testing.assert_array_equal(fused.count, general.count)
    np.testing.assert_allclose(fused.mean, general.mean, rtol=1e-13, atol=0)
    np.testing.assert_allclose(fused.m2, general.m2, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("decim", [1, 4])
def test_block_summaries_equal_mne_power_statistics(decim):
    y = transformed("complex", decim, chunks=(1, 333))
    m = stats.moments(y, axis=-1, progress=False)
    power = tfr_array_morlet(
        SIGNAL[None], RATE, FREQS, 5.0, decim=decim, output="power", verbose=False
    )[0]
    np.testing.assert_array_equal(m.count, power.shape[-1])
    np.testing.assert_allclose(m.mean, power.mean(-1), rtol=1e-12)
    np.testing.assert_allclose(m.std, power.std(-1), rtol=1e-11)


def test_one_compute_and_nothing_before_it():
    with raise_if_dask_computes(max_computes=0):
        y = transformed()
    with raise_if_dask_computes(max_computes=1) as scheduler:
        stats.moments(y, axis=-1, progress=False)
    assert scheduler.total_computes == 1


def test_time_along_the_first_axis_and_extra_axes():
    x = np.moveaxis(np.stack([SIGNAL, 2 * SIGNAL[::-1]]), -1, 0)  # (time, 2, 3)
    xd = da.from_array(x, chunks=(900, 1, 2))
    y = tfr.morlet(xd, RATE, FREQS, 5.0, output="power", axis=0, decim=2)
    assert y.shape[:2] == (2, 3)
    fused = stats.moments(y, axis=-1, progress=False)
    general = general_path(y)
    np.testing.assert_allclose(fused.mean, general.mean, rtol=1e-13)
    np.testing.assert_allclose(fused.m2, general.m2, rtol=1e-12)


def test_other_axes_and_modified_results_take_the_general_path():
    y = transformed()
    power = y.compute()
    across_frequencies = stats.moments(y, axis=1, progress=False)
    np.testing.assert_allclose(across_frequencies.mean, power.mean(axis=1), rtol=1e-12)
    y[0, 0, :50] = 0.0  # in place: the result is renamed, its statistics change
    power[0, 0, :50] = 0.0
    m = stats.moments(y, axis=-1, progress=False)
    np.testing.assert_allclose(m.mean, power.mean(-1), rtol=1e-12)
    np.testing.assert_allclose(m.std, power.std(-1), rtol=1e-11)


def test_a_window_of_the_result_is_summarised_as_a_window():
    y = transformed()
    window = y[..., 100:1500]
    m = stats.moments(window, axis=-1, progress=False)
    power = y.compute()[..., 100:1500]
    np.testing.assert_allclose(m.mean, power.mean(-1), rtol=1e-12)
    np.testing.assert_allclose(m.std, power.std(-1), rtol=1e-11)


def test_an_input_edited_after_the_transform_does_not_change_its_statistics():
    x = da.from_array(SIGNAL.copy(), chunks=(3, 700))
    y = tfr.morlet(x, RATE, FREQS, 5.0, output="power")
    before = y.compute()
    x[:, :1500] = 100.0  # renames x; y still describes the signal it was made from
    m = stats.moments(y, axis=-1, progress=False)
    np.testing.assert_allclose(m.mean, before.mean(-1), rtol=1e-12)
    np.testing.assert_allclose(m.std, before.std(-1), rtol=1e-11)


@pytest.mark.parametrize("wavelet", ["mexh", "morl", "cmor1.5-1.0"])
@pytest.mark.parametrize("output", ["complex", "power"])
def test_real_and_complex_wavelets_of_integer_samples(wavelet, output):
    samples = da.from_array((SIGNAL * 1000).astype(np.int16), chunks=(2, 900))
    y = tfr.cwt(samples, RATE, FREQS, wavelet, output=output, decim=3)
    recorder = KeyRecorder()
    with dask.config.set(scheduler=recorder):
        fused = stats.moments(y, axis=-1, progress=False)
    assert any("-summary-" in name for name in recorder.names)
    general = general_path(y)
    np.testing.assert_allclose(fused.mean, general.mean, rtol=1e-13)
    np.testing.assert_allclose(fused.m2, general.m2, rtol=1e-12)


def test_a_dropped_result_is_freed_at_once():
    import gc
    import weakref

    gc.disable()  # no cycle collector: only reference counts free the result
    try:
        y = transformed()
        alive = weakref.ref(y)
        del y
        assert alive() is None
    finally:
        gc.enable()


def test_power_of_work_memory_is_the_sum_of_squares_and_leaves_other_input_alone():
    from xnwb.tfr import _power

    z = RNG.standard_normal((5, 300)) + 1j * RNG.standard_normal((5, 300))
    expected = z.real**2 + z.imag**2
    work = z.copy()
    out = np.empty(z.shape)
    _power(work, out)
    np.testing.assert_array_equal(out, expected)  # same arithmetic, same bits
    strided = z.copy()[:, ::2]  # not work memory the engine laid out: left as it is
    kept = strided.copy()
    out = np.empty(strided.shape)
    _power(strided, out)
    np.testing.assert_array_equal(out, expected[:, ::2])
    np.testing.assert_array_equal(strided, kept)


def test_a_block_summary_holds_a_few_rows_of_values_not_the_block():
    import tracemalloc

    from xnwb.stats import block_moments
    from xnwb.tfr import _CACHE_BYTES, _power, _Scratch, _Summary

    rows, n_freqs, n = 16, 20, 7078  # a full-rate block at 1 kHz: 18 MB of power values
    z = RNG.standard_normal((rows * n_freqs, n)) + 1j * RNG.standard_normal((rows * n_freqs, n))
    expected_power = np.empty(z.shape)
    _power(z.copy(), expected_power)
    expected = block_moments(expected_power.reshape(rows, n_freqs, n), axis=-1)
    with _Scratch().active():
        tracemalloc.start()
        summary = _Summary((rows, n_freqs, n), np.dtype(np.complex128), None)
        for f in range(n_freqs):  # as the full-rate engine hands over one frequency at a time
            for r0 in range(0, rows, 4):
                summary.put(
                    z.reshape(rows, n_freqs, n)[r0 : r0 + 4, f].copy(), slice(r0, r0 + 4), f
                )
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    # the copies handed over (4 rows) and one work slot of cache size, never 18 MB
    bound = 4 * n * 16 + 2 * _CACHE_BYTES
    assert peak < bound < rows * n_freqs * n * 8 / 3
    got = summary.finish()
    np.testing.assert_array_equal(got[..., 0], n)
    np.testing.assert_array_equal(got[..., 1], expected.mean)
    np.testing.assert_array_equal(got[..., 2], expected.m2)


@pytest.mark.parametrize("output", ["power", "complex"])
def test_decimated_coefficients_reach_the_sink_a_cache_slot_at_a_time(output):
    # A decimated block's inverse FFTs fill a cache-sized slot a few signals at a time, and
    # the sink converts or summarises each while it is in cache: the block's coefficients
    # (16 channels x 20 frequencies x 1024 bins, 5.2 MB) are never laid out whole.
    from xnwb.tfr import _CACHE_BYTES, _thread_scratch

    rate, freqs = 1000.0, np.geomspace(10, 100, 20)
    signal = np.random.default_rng(3).standard_normal((16, 30_000))
    x = da.from_array(signal, chunks=(16, -1))
    y = tfr.morlet(x, rate, freqs, 7.0, output=output, decim=10, chunks={0: 16, 1: 9120})
    assert y.chunks[0] == (16,) and max(y.chunks[-1]) > 900  # blocks of 16 x ~9120
    with dask.config.set(scheduler="sync"):  # the blocks run in this thread, on its slots
        slots = _thread_scratch().slots
        slots.clear()
        got = y.compute()
        assert slots["coefficients"].nbytes <= _CACHE_BYTES
        slots.clear()
        summary = stats.moments(y, axis=-1, progress=False) if output == "power" else None
        if summary is not None:
            assert slots["coefficients"].nbytes <= _CACHE_BYTES
    ref = tfr_array_morlet(signal[None], rate, freqs, 7.0, decim=10, output=output)[0]
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() <= 1e-12 * scale
    if summary is not None:
        np.testing.assert_allclose(summary.mean, ref.mean(axis=-1), rtol=1e-12)
        np.testing.assert_allclose(summary.std, ref.std(axis=-1), rtol=1e-10)


def _input_pieces(array: da.Array) -> int:
    """The getitem tasks that cut input pieces for the transform's blocks."""
    layer = array.__dask_graph__().layers[array.name]
    return sum(1 for key in layer if isinstance(key, tuple) and key[0].endswith("-input"))


def test_a_statistics_pass_cuts_each_block_from_its_main_chunk_in_the_task():
    # The summary graph is only computed whole: each block takes the input chunk it
    # overlaps most as it is; only the other overlaps (a neighbour's halo) are getitem
    # tasks. A 4000-sample record in chunks of 2000, blocks of 500 plus halos: the blocks
    # at the seam meet two chunks, the others one.
    from xnwb.halo import _bounds, _overlaps
    from xnwb.wavelets import morlet_kernels

    x = da.from_array(SIGNAL, chunks=(3, 2000))
    y = tfr.morlet(x, RATE, FREQS, 5.0, output="power", chunks={1: 500})
    halo = morlet_kernels(RATE, FREQS, n_cycles=5.0).halo
    starts = np.cumsum((0, *y.chunks[-1]))
    met = [
        len(_overlaps(int(a) - halo, int(b) + halo, _bounds(x.chunks[1])))
        for a, b in itertools.pairwise(starts)
    ]
    assert len(met) == 8 and 1 in met and 2 in met
    assert _input_pieces(y) == sum(met)  # the transform: every overlap is a piece
    with dask.config.set(scheduler="threads"):
        summaries = y._xnwb_block_moments(y, -1)
        assert _input_pieces(summaries) == sum(met) - len(met)  # all but the main chunks
        got = stats.moments(y, axis=-1, progress=False)
    expected = general_path(y)
    np.testing.assert_allclose(got.mean, expected.mean, rtol=1e-13)
    np.testing.assert_allclose(got.std, expected.std, rtol=1e-12)
