"""xnwb.tfr and xnwb.wavelets against MNE and PyWavelets, on every chunking of time."""

from __future__ import annotations

import itertools
import pickle
from functools import lru_cache

import dask.array as da
import numpy as np
import pytest
import pywt
from hypothesis import given, settings
from hypothesis import strategies as st
from mne.time_frequency import morlet as mne_morlet
from mne.time_frequency import tfr_array_morlet

from xnwb import tfr
from xnwb.exceptions import SignalTooShortError, TFRParameterError
from xnwb.testing import counted_array, raise_if_dask_computes
from xnwb.wavelets import morlet_kernels, pywt_kernels

RATE = 250.0
N_TIMES = 3000  # 12 s
FREQS = (4.0, 9.5, 30.0, 60.0)  # 4 Hz, 7 cycles: 697-tap wavelet, halo 348
CYCLES = {"scalar": 7.0, "per-freq": np.array([2.0, 3.5, 5.0, 7.0])}
CHUNKINGS = {
    "one chunk": (N_TIMES,),
    "long": (1000, 1000, 1000),
    "shorter than halo": (60,) * 50,
    "uneven": (7, 500, 1, 1200, 1292),
}
OUTPUTS = ("complex", "power", "amplitude", "phase")
TOL = 1e-10
# Transform blocks: the memory plan (one block on this short record) and explicit plans whose
# seams fall everywhere: a block as short as the halo, uneven rows, a ragged last block.
BLOCKS = {
    "planned": None,
    "halo-long blocks, one row": {0: 1, 1: 348},
    "400-sample blocks, two rows": {0: 2, 1: 400},
    "1001-sample blocks": {1: 1001},
}


def bursts(n_channels: int = 3, n_times: int = N_TIMES, seed: int = 0) -> np.ndarray:
    """Noise with a 9.5 Hz burst at 4–6 s and a 30 Hz burst at 8–9 s, scaled per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_times) / RATE
    clean = np.where((t >= 4) & (t < 6), np.sin(2 * np.pi * 9.5 * t), 0.0)
    clean += np.where((t >= 8) & (t < 9), 1.5 * np.sin(2 * np.pi * 30.0 * t), 0.0)
    gains = 1.0 + np.arange(n_channels)[:, None]
    return gains * clean + 0.2 * rng.standard_normal((n_channels, n_times))


SIGNAL = bursts()


@lru_cache(maxsize=64)
def mne_reference(cycles: str, decim: int, output: str) -> np.ndarray:
    """MNE on SIGNAL, shape (channels, freqs, times); 'amplitude' as |complex|."""
    mne_output = "complex" if output == "amplitude" else output
    ref = tfr_array_morlet(
        SIGNAL[None],
        RATE,
        np.array(FREQS),
        CYCLES[cycles],
        decim=decim,
        output=mne_output,
        verbose=False,
    )[0]
    return np.abs(ref) if output == "amplitude" else ref


def assert_matches(ours: np.ndarray, ref: np.ndarray, output: str = "complex") -> None:
    """max |ours - ref| <= TOL * max |ref| (phase: wrapped, where the amplitude is not ~0)."""
    assert ours.shape == ref.shape
    if output == "phase":
        diff = np.abs(np.angle(np.exp(1j * (ours - ref))))
        scale = np.pi
    else:
        diff = np.abs(ours - ref)
        scale = np.abs(ref).max()
    assert diff.max() <= TOL * scale, f"max error {diff.max() / scale:.3g} of the reference"


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


# -- kernels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("zero_mean", [True, False])
@pytest.mark.parametrize("sfreq,cycles", [(250.0, 7.0), (1000.0, (3.0, 10.0, 4.5)), (512.0, 1.0)])
def test_morlet_kernels_are_mne_wavelets(sfreq, cycles, zero_mean):
    freqs = [6.0, 13.3, 80.0]
    ours = morlet_kernels(sfreq, freqs, cycles, zero_mean=zero_mean)
    ref = mne_morlet(sfreq, freqs, n_cycles=cycles, zero_mean=zero_mean)
    for kernel, wavelet, centre in zip(ours.kernels, ref, ours.centres, strict=True):
        np.testing.assert_allclose(kernel, wavelet, rtol=0, atol=1e-15)
        assert centre == (wavelet.size - 1) // 2
    assert ours.halo == max(w.size // 2 for w in ref)


def test_kernel_bank_hash_and_pickle():
    a = morlet_kernels(250.0, FREQS)
    b = morlet_kernels(250.0, list(FREQS))
    assert a == b and hash(a) == hash(b) and a != morlet_kernels(250.0, FREQS, 6.0)
    assert pickle.loads(pickle.dumps(a)) == a


# -- equality with MNE -----------------------------------------------------------------------


@pytest.mark.parametrize("blocks", list(BLOCKS))
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("decim", [1, 3, 7])
@pytest.mark.parametrize("cycles", list(CYCLES))
def test_morlet_equals_mne_for_every_chunking(chunking, decim, cycles, blocks):
    x = da.from_array(SIGNAL, chunks=((1, 2), CHUNKINGS[chunking]))
    for output in OUTPUTS:
        ours = tfr.morlet(
            x, RATE, FREQS, CYCLES[cycles], output=output, decim=decim, chunks=BLOCKS[blocks]
        )
        assert ours.chunks[-2] == (len(FREQS),)
        if BLOCKS[blocks] and 0 in BLOCKS[blocks]:
            assert max(ours.chunks[0]) == BLOCKS[blocks][0]
        assert_matches(ours.compute(), mne_reference(cycles, decim, output), output)


@pytest.mark.parametrize("decim", [1, 2, 5, 10])
@pytest.mark.parametrize("output", OUTPUTS)
def test_morlet_numpy_equals_mne(decim, output):
    ours = tfr.morlet(SIGNAL, RATE, FREQS, 7.0, output=output, decim=decim)
    assert isinstance(ours, np.ndarray)
    assert_matches(ours, mne_reference("scalar", decim, output), output)


@pytest.mark.parametrize("workers", [1, 3, 16])
def test_numpy_blocks_and_threads_do_not_show(workers):
    """The numpy path cuts the record into blocks (one per worker at least) written in place."""
    long = np.tile(SIGNAL, 4)  # 48 s
    ref = tfr_array_morlet(long[None], RATE, np.array(FREQS), 7.0, decim=3, verbose=False)[0]
    assert_matches(tfr.morlet(long, RATE, FREQS, 7.0, decim=3, workers=workers), ref)


@pytest.mark.parametrize("zero_mean", [True, False])
def test_zero_mean_flag_follows_mne(zero_mean):
    ref = tfr_array_morlet(
        SIGNAL[None], RATE, np.array(FREQS), 3.0, zero_mean=zero_mean, verbose=False
    )[0]
    ours = tfr.morlet(da.from_array(SIGNAL, chunks=(3, 700)), RATE, FREQS, 3.0, zero_mean=zero_mean)
    assert_matches(ours.compute(), ref)


def test_time_first_layout_gives_mne_layout():
    """(time, channel) in, (channel, frequency, time) out, whichever axis time was on."""
    x = da.from_array(SIGNAL.T.copy(), chunks=(500, 2))
    ours = tfr.morlet(x, RATE, FREQS, 7.0, decim=4, axis=0)
    assert ours.shape == (3, len(FREQS), N_TIMES // 4)
    assert_matches(ours.compute(), mne_reference("scalar", 4, "complex"))


def test_epochs_and_one_dimensional_input():
    epochs = np.stack([SIGNAL, SIGNAL[::-1]])  # (epochs, channels, time)
    ref = tfr_array_morlet(epochs, RATE, np.array(FREQS), 7.0, verbose=False)
    ours = tfr.morlet(da.from_array(epochs, chunks=(1, 3, 800)), RATE, FREQS, 7.0)
    assert_matches(ours.compute(), ref)
    assert_matches(tfr.morlet(SIGNAL[0], RATE, FREQS, 7.0), ref[0, 0])


def test_complex_and_integer_input():
    z = SIGNAL + 1j * SIGNAL[::-1]
    ref = tfr_array_morlet(z[None], RATE, np.array(FREQS), 5.0, verbose=False)[0]
    assert_matches(tfr.morlet(da.from_array(z, chunks=(3, 900)), RATE, FREQS, 5.0).compute(), ref)
    counts = (SIGNAL * 1000).astype(np.int16)
    ref = tfr_array_morlet(counts[None].astype(float), RATE, np.array(FREQS), 5.0, verbose=False)[0]
    assert_matches(tfr.morlet(counts, RATE, FREQS, 5.0), ref)


def test_record_exactly_as_long_as_the_longest_wavelet():
    n = morlet_kernels(RATE, FREQS).lengths[0]  # 697
    x = SIGNAL[:, :n]
    ref = tfr_array_morlet(x[None], RATE, np.array(FREQS), 7.0, decim=2, verbose=False)[0]
    ours = tfr.morlet(da.from_array(x, chunks=(3, 100)), RATE, FREQS, 7.0, decim=2)
    assert_matches(ours.compute(), ref)


def test_bursts_are_found_where_they_are():
    power = tfr.morlet(SIGNAL, RATE, FREQS, 7.0, output="power")
    t = np.arange(N_TIMES) / RATE
    in_alpha = (t > 4.5) & (t < 5.5)
    in_beta = (t > 8.3) & (t < 8.7)
    assert FREQS[int(np.argmax(power[:, :, in_alpha].mean(axis=(0, 2))))] == 9.5
    assert FREQS[int(np.argmax(power[:, :, in_beta].mean(axis=(0, 2))))] == 30.0


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(1, N_TIMES - 1), max_size=12, unique=True),
    decim=st.integers(1, 12),
)
def test_any_chunking_equals_unchunked(cuts, decim):
    bounds = [0, *sorted(cuts), N_TIMES]
    chunks = tuple(b - a for a, b in itertools.pairwise(bounds))
    x = SIGNAL[:1]
    whole = tfr.morlet(x, RATE, FREQS, 7.0, decim=decim)
    chunked = tfr.morlet(da.from_array(x, chunks=(1, chunks)), RATE, FREQS, 7.0, decim=decim)
    assert relative_error(chunked.compute(), whole) <= 1e-12


@given(
    chunks=st.lists(st.integers(1, 400), min_size=1, max_size=30),
    minimum=st.integers(1, 800),
)
def test_merge_small_chunks(chunks, minimum):
    merged = tfr.merge_small_chunks(chunks, minimum)
    assert sum(merged) == sum(chunks)
    assert all(c >= minimum for c in merged) or merged == (sum(chunks),)
    old = set(np.cumsum(chunks).tolist())
    assert set(np.cumsum(merged).tolist()) <= old  # only existing boundaries survive


def test_fft_length_is_a_fast_multiple_of_decim():
    for n in (1, 97, 11114, 60000):
        for q in (1, 3, 10, 13):
            length = tfr.fft_length(n, q)
            assert length >= n and length % q == 0


# -- laziness ----------------------------------------------------------------------------------


def test_morlet_computes_and_reads_nothing():
    x, reads = counted_array(SIGNAL, chunks=(3, 500))
    with raise_if_dask_computes():
        y = tfr.morlet(x, RATE, FREQS, 7.0, output="power", decim=5)
        y = y[..., 100:200] * 2
    assert reads.reads == []


@pytest.mark.parametrize("decim", [1, 4])
@pytest.mark.parametrize("chunk", [400, 250])
def test_window_reads_only_its_chunks_and_halo(decim, chunk):
    x, reads = counted_array(SIGNAL, chunks=(3, chunk))
    # Blocks as long as the input chunks (explicit chunks=; the default plan would take the
    # whole 3000-sample record as one block).
    y = tfr.morlet(x, RATE, FREQS, 7.0, decim=decim, chunks={1: chunk})
    halo = morlet_kernels(RATE, FREQS).halo  # 348 samples
    size = chunk if chunk >= halo else 2 * chunk  # 250-sample chunks are merged in pairs
    start, stop = 1500, 1700  # 6.0–6.8 s
    window = y[..., start // decim : stop // decim]
    with raise_if_dask_computes(max_computes=1):
        got = window.compute()
    touched = np.flatnonzero(reads.samples_read(axis=1))
    # Only the chunks under the window and those within one halo of it are read.
    assert touched.min() >= (start - halo) // size * size
    assert touched.max() < -(-(stop + halo) // size) * size
    assert touched.size <= 3 * size + chunk
    ref = mne_reference("scalar", decim, "complex")
    assert_matches(got, ref[..., start // decim : stop // decim])


def test_result_pickles_and_computes_elsewhere():
    y = tfr.morlet(da.from_array(SIGNAL, chunks=(3, 700)), RATE, FREQS, 7.0, decim=3)
    assert_matches(pickle.loads(pickle.dumps(y)).compute(), mne_reference("scalar", 3, "complex"))


def test_names_are_deterministic():
    x = da.from_array(SIGNAL, chunks=(3, 700))
    assert tfr.morlet(x, RATE, FREQS).name == tfr.morlet(x, RATE, FREQS).name
    assert tfr.morlet(x, RATE, FREQS).name != tfr.morlet(x, RATE, FREQS, decim=2).name


# -- invalid input: clear errors, nothing computed -----------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"freqs": [0.0, 10.0]}, r"\(0, 125\)"),
        ({"freqs": [-5.0]}, "must lie in"),
        ({"freqs": [125.0]}, "Nyquist"),
        ({"freqs": [10.0, np.nan]}, "must lie in"),
        ({"freqs": []}, "non-empty"),
        ({"n_cycles": 0.0}, "positive"),
        ({"n_cycles": -3.0}, "positive"),
        ({"n_cycles": [7.0, 7.0]}, "one per frequency"),
        ({"decim": 0}, "positive integer"),
        ({"decim": 2.5}, "positive integer"),
        ({"decim": True}, "positive integer"),
        ({"output": "avg_power"}, "output must be one of"),
        ({"sfreq": -1.0}, "sfreq"),
    ],
)
def test_invalid_parameters_fail_before_compute(kwargs, match):
    x, reads = counted_array(SIGNAL, chunks=(3, 500))
    args = {"sfreq": RATE, "freqs": FREQS, **kwargs}
    with raise_if_dask_computes(), pytest.raises(TFRParameterError, match=match) as info:
        tfr.morlet(x, **args)
    assert isinstance(info.value, ValueError)
    assert reads.reads == []


def test_record_shorter_than_the_longest_wavelet():
    x = da.from_array(SIGNAL[:, :696], chunks=(3, 100))
    with raise_if_dask_computes(), pytest.raises(SignalTooShortError, match="697 samples"):
        tfr.morlet(x, RATE, FREQS)
    with pytest.raises(ValueError, match="longest wavelet"):
        tfr.morlet(SIGNAL[:, :696], RATE, FREQS)


# -- PyWavelets ------------------------------------------------------------------------------

WAVELETS = ["cmor1.5-1.0", "morl", "mexh", "gaus2", "cgau3", "shan1-1.5", "fbsp1-1.5-1.0"]


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("chunking", ["one chunk", "shorter than halo", "uneven"])
def test_cwt_equals_pywt_fft_method(wavelet, chunking):
    """Same kernels, same zero-padded linear convolution: equal to 1e-10, edges included
    (we measure ~4e-15; only the FFT rounding differs)."""
    freqs = np.array(FREQS)
    scales = pywt.frequency2scale(wavelet, freqs / RATE)
    ref, ref_freqs = pywt.cwt(SIGNAL, scales, wavelet, 1 / RATE, method="fft")
    np.testing.assert_allclose(ref_freqs, freqs, rtol=1e-12)
    ref = np.moveaxis(ref, 0, 1)  # (scales, channels, time) -> (channels, freqs, time)
    x = da.from_array(SIGNAL, chunks=((3,), CHUNKINGS[chunking]))
    ours = tfr.cwt(x, RATE, freqs, wavelet).compute()
    assert ours.dtype == ref.dtype
    assert_matches(ours, ref)
    assert_matches(tfr.cwt(x, RATE, freqs, wavelet, decim=3).compute(), ref[..., ::3])


def test_cwt_rejects_unknown_and_discrete_wavelets():
    for name in ("db4", "nonsense"):
        with pytest.raises(TFRParameterError, match="continuous"):
            pywt_kernels(RATE, FREQS, name)
    with pytest.raises(TFRParameterError, match="Nyquist"):
        pywt_kernels(RATE, [125.0], "mexh")


@pytest.mark.parametrize("shape", [(0, 3000), (2, 0, 3000)])
@pytest.mark.parametrize("decim", [1, 3])
def test_zero_signals_give_empty_results_on_both_paths(shape, decim):
    """No channels: empty coefficients and statistics, not an FFT library's assertion."""
    from xnwb import stats

    bank = morlet_kernels(500.0, [20.0, 40.0], n_cycles=5)
    n_out = -(-shape[-1] // decim)
    got = tfr.transform(np.zeros(shape), bank, decim=decim)
    lazy = tfr.transform(
        da.zeros(shape, chunks=(1,) * (len(shape) - 1) + (1000,)), bank, decim=decim
    )
    assert got.shape == lazy.shape == (*shape[:-1], 2, n_out)
    assert lazy.compute().shape == got.shape
    power = tfr.transform(
        da.zeros(shape, chunks=(1,) * (len(shape) - 1) + (1000,)), bank, output="power"
    )
    assert stats.moments(power, axis=-1, progress=False).mean.shape == (*shape[:-1], 2)


def test_numpy_input_with_decim_plans_blocks_without_importing_dask():
    """The numpy path plans decimated blocks like the dask path, bounded without dask."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from xnwb import tfr; "
        "x = np.random.default_rng(0).standard_normal((20, 4000)); "
        "y = tfr.morlet(x, 500.0, [20.0, 40.0], 5.0, decim=4); "
        "assert y.shape == (20, 2, 1000); print('dask' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("layout", ["channels-time", "time-channels", "3-d"])
def test_numpy_decimated_blocks_of_channel_groups_equal_mne(layout):
    """More channels than one block takes (16): the numpy path splits them into groups and
    each group into time blocks; the numbers are MNE's for every layout of the input."""
    from xnwb.blocks import DEFAULT_MAX_ROWS

    rng = np.random.default_rng(11)
    n_ch = 2 * DEFAULT_MAX_ROWS + 3
    data = rng.standard_normal((n_ch, 6000))
    freqs = [12.0, 30.0, 60.0]
    ref = tfr_array_morlet(data[None], 500.0, freqs, 5.0, decim=7)[0]
    if layout == "channels-time":
        got = tfr.morlet(data, 500.0, freqs, 5.0, decim=7)
    elif layout == "time-channels":
        got = tfr.morlet(data.T.copy(), 500.0, freqs, 5.0, decim=7, axis=0)
    else:  # (time, a, b) with channels split over two axes, time first
        cube = np.ascontiguousarray(data[: n_ch - 1].T.reshape(6000, 2, (n_ch - 1) // 2))
        got = tfr.morlet(cube, 500.0, freqs, 5.0, decim=7, axis=0).reshape(n_ch - 1, 3, -1)
        ref = ref[: n_ch - 1]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-12 * np.abs(ref).max()


def test_numpy_decimated_blocks_never_copy_the_whole_input():
    """Time in the middle of a 3-D input: its signals cannot be flattened without a copy,
    so the numpy path takes them a group at a time through views (and equals MNE)."""
    import tracemalloc

    x = np.random.default_rng(5).standard_normal((3, 40_000, 20))  # 19 MB, time in the middle
    freqs = [40.0, 80.0]
    tracemalloc.start()
    try:
        got = tfr.morlet(x, 1000.0, freqs, 3.0, decim=20, axis=1, workers=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.shape == (3, 20, 2, 2000)
    assert peak < got.nbytes + x.nbytes / 4, (peak, got.nbytes, x.nbytes)
    ref = tfr_array_morlet(np.moveaxis(x, 1, -1), 1000.0, freqs, 3.0, decim=20)
    assert np.abs(got - ref).max() <= 1e-12 * np.abs(ref).max()
