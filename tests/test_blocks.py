"""The transform's block plan: bounded memory at any scale, windows that compute only their
channels, whole passes that read each stored chunk once."""

from __future__ import annotations

import tracemalloc

import dask
import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr
from mne.time_frequency import tfr_array_morlet

import xnwb  # noqa: F401  (registers the accessors)
from tests.conftest import counts
from xnwb import tfr
from xnwb.blocks import (
    BLOCK_POINTS,
    DEFAULT_MAX_ROWS,
    HALOS_PER_BLOCK,
    IN_CACHE_FFT_POINTS,
    MIN_HALOS,
    MIN_ROWS,
    fft_length,
    full_rate_time,
    plan_blocks,
)
from xnwb.wavelets import _spectra, morlet_kernels

MiB = 2**20
SEED_FREQS = np.geomspace(10, 100, 20)


# -- the plan is bounded whatever the scale ---------------------------------------------------


@pytest.mark.parametrize("n_channels", [1, 32, 124, 384])
@pytest.mark.parametrize("rate", [1000.0, 30_000.0])
@pytest.mark.parametrize(
    "decim,out_itemsize",
    [(1, 16), (1, 8), (10, 16), (30, 8)],  # complex or power output
)
@pytest.mark.parametrize("n_freqs,n_cycles", [(20, 7.0), (40, 7.0), (20, 20.0)])
def test_plan_fits_dask_chunk_size_at_any_scale(
    n_channels, rate, decim, out_itemsize, n_freqs, n_cycles
):
    bank = morlet_kernels(rate, np.geomspace(10, 100, n_freqs), n_cycles)
    with dask.config.set({"array.chunk-size": "128MiB"}):
        plan = plan_blocks(
            int(rate * 3600),
            n_channels,
            n_freqs,
            bank.halo,
            decim=decim,
            out_itemsize=out_itemsize,
        )
    assert plan.peak_bytes <= 128 * MiB
    assert plan.rows <= min(DEFAULT_MAX_ROWS, n_channels)
    assert plan.time % decim == 0 and plan.time >= 2 * bank.halo


@pytest.mark.parametrize("decim,output", [(1, "complex"), (30, "power")])
def test_lazy_transform_of_384_channels_is_laid_out_as_planned(decim, output):
    rate, n_channels, n_times = 30_000.0, 384, 30_000 * 60
    # Input chunks as a storage layout might give them: 121 channels, 10 s (never computed).
    x = da.zeros((n_channels, n_times), chunks=(121, 300_000))
    halo = morlet_kernels(rate, SEED_FREQS).halo
    with dask.config.set({"array.chunk-size": "128MiB"}):
        y = tfr.morlet(x, rate, SEED_FREQS, 7.0, output=output, decim=decim)
        plan = plan_blocks(
            n_times, n_channels, 20, halo, decim=decim, out_itemsize=y.dtype.itemsize
        )
    assert max(y.chunks[0]) == plan.rows <= DEFAULT_MAX_ROWS  # not the 121 of the input
    assert y.chunks[2][0] == plan.time // decim
    out_block = plan.rows * 20 * (plan.time // decim) * y.dtype.itemsize
    assert out_block <= plan.peak_bytes <= 128 * MiB


def test_plan_follows_the_configured_chunk_size():
    halo = morlet_kernels(30_000.0, SEED_FREQS).halo
    small = plan_blocks(18_000_000, 384, 20, halo, target_bytes=64 * MiB)
    large = plan_blocks(18_000_000, 384, 20, halo, out_itemsize=8, target_bytes=1024 * MiB)
    assert small.peak_bytes <= 64 * MiB
    assert (large.rows, large.time) > (small.rows, small.time)


def test_explicit_rows_and_time_are_kept_and_rounded_to_decim():
    plan = plan_blocks(600_000, 64, 20, halo=557, decim=7, rows=16, time=5000)
    assert plan.rows == 16 and plan.time == 5005  # up to a multiple of decim
    assert plan_blocks(600_000, 64, 20, halo=557, time=100).time == 557  # at least the halo


@pytest.mark.parametrize("decim", [10, 30])
def test_blocks_are_long_against_the_halo_and_fill_their_fft(decim):
    """16 halos when memory allows (the overlap ~12 % of the work), filled to the FFT length."""
    halo = morlet_kernels(1000.0, SEED_FREQS).halo
    plan = plan_blocks(3_600_000, 64, 20, halo, decim=decim)
    assert plan.time >= HALOS_PER_BLOCK * halo
    assert plan.time % decim == 0
    assert 0 <= plan.nfft - (plan.time + 2 * halo) < decim  # no FFT sample left unused
    assert plan.peak_bytes <= 128 * MiB


@pytest.mark.parametrize("work_itemsize", [16, 8])
def test_full_rate_blocks_fill_one_fft_row_that_stays_in_cache(work_itemsize):
    """At full rate with short wavelets a block is one in-cache FFT row (8,192 points, in
    either precision), filled with samples; the overlap stays a modest share of it."""
    halo = morlet_kernels(1000.0, SEED_FREQS).halo
    plan = plan_blocks(3_600_000, 64, 20, halo, work_itemsize=work_itemsize)
    assert plan.nfft == IN_CACHE_FFT_POINTS
    assert plan.time == plan.nfft - 2 * halo == full_rate_time(halo)  # every FFT sample used
    assert 2 * halo / plan.nfft < 0.15
    assert plan.rows == DEFAULT_MAX_ROWS and plan.peak_bytes <= 128 * MiB


def test_full_rate_blocks_of_long_wavelets_stay_long():
    """A 30 kHz, 10 Hz wavelet (halo 16,711) cannot fit a cached FFT at a fair overlap: its
    blocks keep 16 halos (before the memory bound, which one channel per block meets here)."""
    halo = morlet_kernels(30_000.0, SEED_FREQS).halo
    assert full_rate_time(halo) >= HALOS_PER_BLOCK * halo
    plan = plan_blocks(36_000_000, 1, 20, halo, target_bytes=1024 * MiB)
    assert plan.time == full_rate_time(halo)
    assert plan.nfft == fft_length(plan.time + 2 * halo)


@pytest.fixture
def fft_log(monkeypatch):
    """Every kernel application of the engine: (rows, FFT length) of its block."""
    log: list[tuple[int, int]] = []
    original = tfr._block

    def logged(xe, spec, start, n_valid, nfft, out=None):
        log.append((int(np.prod(xe.shape[:-1])), nfft))
        return original(xe, spec, start, n_valid, nfft, out=out)

    monkeypatch.setattr(tfr, "_block", logged)
    return log


def test_full_rate_dask_blocks_each_have_their_own_fft_length(fft_log):
    """A last block that takes in a short remainder must not lengthen the other blocks'
    FFTs past the cache; each block's FFT is as long as its own extended samples need."""
    rate, freqs = 1000.0, SEED_FREQS
    halo = morlet_kernels(rate, freqs).halo
    t = full_rate_time(halo)
    n = 3 * t + halo // 2  # the remainder (< halo) joins the last block
    x = np.random.default_rng(1).standard_normal((2, n))
    got = tfr.morlet(da.from_array(x, chunks=(2, 1000)), rate, freqs).compute()
    nffts = [nfft for _, nfft in fft_log]
    assert sorted(nffts) == [fft_length(t + 2 * halo)] * 2 + [fft_length(t + halo // 2 + 2 * halo)]
    assert sorted(nffts)[1] <= IN_CACHE_FFT_POINTS  # the first two: in cache
    ref = tfr_array_morlet(x[None], rate, freqs, 7.0, verbose=False)[0]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_in_cache_blocks_are_at_least_min_halos_long():
    """A halo of 1,392 samples (2.5 kHz, 10 Hz) would leave an in-cache block of 3.9 halos,
    a third of its FFT re-transformed: the plan keeps long blocks there."""
    assert full_rate_time(1392) >= HALOS_PER_BLOCK * 1392
    assert full_rate_time(557) >= MIN_HALOS * 557


@pytest.mark.parametrize(
    "rate,freqs,extra",
    [
        (1000.0, SEED_FREQS, 5),  # a short last block (more than a halo left over)
        (30_000.0, np.array([10.0]), 5),  # long FFTs: one length, one set of spectra
        (30_000.0, np.array([10.0]), 0),  # ... also when a remainder joins the last block
    ],
)
def test_full_rate_blocks_share_one_fft_length_otherwise(rate, freqs, extra, fft_log):
    """One set of kernel spectra per transform except for a merged last block in cache."""
    halo = morlet_kernels(rate, freqs).halo
    t = full_rate_time(halo)
    n = 2 * t + (extra * halo if extra else halo // 2)
    x = np.random.default_rng(2).standard_normal((1, n))
    tfr.morlet(da.from_array(x, chunks=(1, 100_000)), rate, freqs).compute()
    nffts = [nfft for _, nfft in fft_log]
    assert len(nffts) == (3 if extra else 2) and len(set(nffts)) == 1


def test_numpy_full_rate_blocks_keep_their_buffers_bounded(fft_log, monkeypatch):
    """The numpy path's full-rate blocks shrink (to 8 halos at least) to keep a worker's
    FFT buffers within _NUMPY_BLOCK_BYTES, however many signals it takes at once."""
    monkeypatch.setattr(tfr, "_NUMPY_BLOCK_BYTES", 2 * MiB)
    halo = morlet_kernels(1000.0, SEED_FREQS).halo
    x = np.random.default_rng(3).standard_normal((16, 60_000))
    got = tfr.morlet(x, 1000.0, SEED_FREQS)
    rows, nfft = fft_log[0]
    assert rows == 16 and nfft < fft_length(full_rate_time(halo) + 2 * halo)
    # Within the bound plus the halos, and the fast FFT length's rounding (< 12.5 %).
    assert rows * nfft * 24 <= 1.125 * (2 * MiB + rows * 2 * halo * 24)
    ref = tfr_array_morlet(x[None], 1000.0, SEED_FREQS, 7.0, verbose=False)[0]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_memory_bound_plans_shorten_blocks_before_splitting_channels():
    """At 30 kHz the bound bites: blocks shrink towards MIN_HALOS halos, keeping 4 channels."""
    halo = morlet_kernels(30_000.0, SEED_FREQS).halo
    with dask.config.set({"array.chunk-size": "128MiB"}):
        plan = plan_blocks(36_000_000, 124, 20, halo, decim=30)
    assert plan.rows == MIN_ROWS
    assert MIN_HALOS * halo <= plan.time < HALOS_PER_BLOCK * halo
    assert plan.peak_bytes <= 128 * MiB


@pytest.mark.parametrize(
    "rate,decim,rows",
    [(1000.0, 10, DEFAULT_MAX_ROWS), (2500.0, 10, DEFAULT_MAX_ROWS), (30_000.0, 30, MIN_ROWS)],
)
def test_channels_per_block_follow_the_fft_work(rate, decim, rows):
    """Short FFTs (low rates) come in wide channel groups, long ones in MIN_ROWS: a block is
    about BLOCK_POINTS of FFT work, so a one-channel window costs about one block at any rate."""
    halo = morlet_kernels(rate, SEED_FREQS).halo
    plan = plan_blocks(int(rate * 3600), 384, 20, halo, decim=decim, target_bytes=128 * MiB)
    assert plan.rows == rows
    assert plan.time >= HALOS_PER_BLOCK * halo or plan.rows == MIN_ROWS
    if rows == DEFAULT_MAX_ROWS:  # the budget, not the cap, would allow more
        assert BLOCK_POINTS // fft_length(HALOS_PER_BLOCK * halo + 2 * halo, decim) >= rows
    assert plan.rows * plan.nfft <= max(BLOCK_POINTS, MIN_ROWS * plan.nfft)
    # Few channels in all: never more rows than there are.
    assert plan_blocks(int(rate * 3600), 3, 20, halo, decim=decim).rows == 3


@pytest.mark.parametrize("decim", [1, 30])
def test_single_precision_plans_fit_the_bound(decim):
    halo = morlet_kernels(30_000.0, SEED_FREQS).halo
    double = plan_blocks(36_000_000, 124, 20, halo, decim=decim, target_bytes=128 * MiB)
    single = plan_blocks(
        36_000_000,
        124,
        20,
        halo,
        decim=decim,
        out_itemsize=8,
        work_itemsize=8,
        target_bytes=128 * MiB,
    )
    assert single.peak_bytes <= 128 * MiB
    assert (single.rows, single.time) >= (double.rows, double.time)


def test_peak_estimate_covers_what_a_block_allocates():
    """tracemalloc sees numpy's allocations: the estimate must not be an underestimate."""
    rate, freqs = 30_000.0, SEED_FREQS
    bank = morlet_kernels(rate, freqs)
    for decim, output in [(1, "complex"), (30, "power")]:
        plan = plan_blocks(
            40 * bank.halo,
            4,
            20,
            bank.halo,
            decim=decim,
            out_itemsize=16 if output == "complex" else 8,
        )
        x = np.random.default_rng(0).standard_normal((plan.rows, plan.time + 2 * bank.halo))
        spec = tfr._BlockSpec(
            bank,
            1,
            bank.halo,
            decim,
            output,
            np.dtype(complex if output == "complex" else float),
            False,
        )
        _spectra.cache_clear()
        tracemalloc.start()
        tfr._block(x, spec, 0, plan.time, plan.nfft)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak <= plan.peak_bytes, (decim, peak / MiB, plan.peak_bytes / MiB)
        assert peak >= 0.4 * plan.peak_bytes  # and not a wild overestimate


# -- windows compute only their channels --------------------------------------------------------

RATE = 1000.0
N_TIMES, N_CHANNELS = 120_000, 64  # two minutes, storage chunks span every channel
STORAGE = (4000, 64)
FREQS = np.array([8.0, 20.0, 45.0])


@pytest.fixture(scope="module")
def wide_recording(tmp_path_factory):
    from tests.conftest import write_nwb

    data = counts(N_TIMES, N_CHANNELS, seed=3, zeros=False)
    path = write_nwb(
        tmp_path_factory.mktemp("blocks") / "wide.nwb",
        [
            dict(
                name="ElectricalSeries",
                data=data,
                rate=RATE,
                region=range(N_CHANNELS),
                conversion=1e-6,
                chunks=STORAGE,
                compression="gzip",
                shuffle=True,
            )
        ],
        n_electrodes=N_CHANNELS,
    )
    with h5py.File(path) as f:
        dset = f["acquisition/ElectricalSeries/data"]
        chunks: dict[int, int] = {}
        dset.id.chunk_iter(lambda info: chunks.__setitem__(info.byte_offset, info.size))
    return path, data, chunks


@pytest.fixture
def block_log(monkeypatch):
    """Every kernel application of the dask engine: (rows, samples) of its extended block."""
    log: list[tuple[int, int]] = []
    original = tfr._block

    def logged(xe, spec, start, n_valid, nfft, out=None):
        log.append((int(np.prod(xe.shape[:-1])), xe.shape[-1]))
        return original(xe, spec, start, n_valid, nfft, out=out)

    monkeypatch.setattr(tfr, "_block", logged)
    return log


@pytest.mark.parametrize("chunks", [None, {}])
def test_one_channel_window_transforms_one_channel_group(
    wide_recording, fetch_log, block_log, chunks
):
    path, data, stored = wide_recording
    # With chunks={} the file's dask chunks are read whole (dask narrows a read to a slice
    # only when one task uses the chunk): keep them small here, as on a long recording.
    with dask.config.set({"array.chunk-size": "8MiB"}):
        ds = xr.open_dataset(path, engine="nwbzarr", chunks=chunks)
    piece = STORAGE[0] if chunks is None else ds.data.chunks[0][0]
    z = ds.ephys.morlet(FREQS, decim=10, output="power")
    plan = plan_blocks(
        N_TIMES, N_CHANNELS, len(FREQS), morlet_kernels(RATE, FREQS).halo, decim=10, out_itemsize=8
    )
    fetch_log.clear()
    window = z.data.sel(channel=130, time=slice(60.0, 60.999))
    got = window.values
    # One channel group, the time blocks under one second: not 64 channels.
    assert 1 <= len(block_log) <= 2
    assert all(rows <= plan.rows for rows, _ in block_log)
    assert plan.rows <= N_CHANNELS // 4
    assert sum(rows for rows, _ in block_log) <= 2 * plan.rows
    # Reads: the stored chunks under those blocks and their halo, each once.
    offsets = [start for start, _ in fetch_log]
    assert len(offsets) == len(set(offsets))
    pieces = (2 * plan.time + 2 * plan.halo) // piece + 2  # read pieces under the blocks
    assert len(offsets) <= pieces * piece // STORAGE[0] < len(stored) / 2
    ref = tfr_array_morlet(
        (data[:, 30].astype(float) * 1e-6)[None, None],
        RATE,
        FREQS,
        7.0,
        decim=10,
        output="power",
    )[0, 0][:, 6000:6100]  # 60-61 s at the decimated 100 Hz
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())


def test_whole_pass_reads_each_stored_chunk_once(wide_recording, fetch_log, block_log):
    path, data, stored = wide_recording
    ds = xr.open_dataset(path, engine="nwbzarr")
    fetch_log.clear()
    stats = ds.ephys.morlet(FREQS, decim=10).ephys.stats(progress=False)
    offsets = [start for start, _ in fetch_log]
    assert sorted(offsets) == sorted(stored)  # every stored chunk, exactly once
    assert sum(n for _, n in fetch_log) == sum(stored.values())
    # ...while the transform ran in small channel groups.
    assert max(rows for rows, _ in block_log) <= DEFAULT_MAX_ROWS
    x = data[:, :8].T.astype(float) * 1e-6
    power = tfr_array_morlet(x[None], RATE, FREQS, 7.0, decim=10, output="power")[0]
    np.testing.assert_allclose(stats["mean"].values[:8], power.mean(-1), rtol=1e-9)
    np.testing.assert_allclose(stats["std"].values[:8], power.std(-1), rtol=1e-9)


@pytest.mark.parametrize(
    "n,decim,chunk", [(997, 997, 100), (1000, 1001, 250), (3000, 7, 100), (2000, 400, 1)]
)
def test_decim_longer_than_input_chunks_and_halo(n, decim, chunk):
    """Blocks are multiples of decim, so no block is left without an output sample."""
    x = np.random.default_rng(0).standard_normal((2, n))
    ref = tfr_array_morlet(x[None], 250.0, [20.0, 40.0], 3.0, decim=decim)[0]
    for chunks in (None, {1: chunk}):
        y = tfr.morlet(
            da.from_array(x, chunks=(1, chunk)),
            250.0,
            [20.0, 40.0],
            3.0,
            decim=decim,
            chunks=chunks,
        )
        got = y.compute()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-10 * np.abs(ref).max()


@pytest.mark.filterwarnings(
    "ignore:Consolidated metadata:UserWarning", "ignore:The data type:Warning"
)
def test_zscore_to_zarr_reads_each_stored_chunk_once(wide_recording, fetch_log, tmp_path):
    path, data, stored = wide_recording
    ds = xr.open_dataset(path, engine="nwbzarr")
    tfr_ds = ds.ephys.morlet(FREQS, decim=10)
    stats = tfr_ds.ephys.stats(progress=False)
    fetch_log.clear()
    tfr_ds.zscore(stats=stats).to_zarr(tmp_path / "z.zarr")
    assert sorted(start for start, _ in fetch_log) == sorted(stored)
    saved = xr.open_zarr(tmp_path / "z.zarr")["data"]
    power = tfr_array_morlet(
        (data[:, 5].astype(float) * 1e-6)[None, None],
        RATE,
        FREQS,
        7.0,
        decim=10,
        output="power",
    )[0, 0]
    expected = (power - power.mean(-1, keepdims=True)) / power.std(-1, keepdims=True)
    np.testing.assert_allclose(saved.isel(channel=5).values, expected, rtol=1e-8, atol=1e-8)
