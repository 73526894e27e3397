"""Dask chunks of ``open_dataset(chunks={})``: whole storage chunks, and cheap windows.

The sizing rule (:func:`xnwb.chunking.dask_chunks`) is tested as a pure function, then on
pynwb-written files: a 64-channel recording in gzip+shuffle chunks of (2000, 8), and one of
~100k tiny (1024, 1) chunks (1M would take a minute to write here). A 1 s × 4-channel window
through ``chunks={}`` is counted at the one place bytes are read (``ByteSource.fetch``), for
slices and for channel lists, locally and over loopback HTTP.
"""

from __future__ import annotations

import math

import dask
import h5py
import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import write_nwb
from xnwb.chunking import MIN_CHUNK_BYTES, dask_chunks
from xnwb.lazyindex import index_completion
from xnwb.source import ByteSource
from xnwb.testing import raise_if_dask_computes

DATA = "acquisition/ElectricalSeries/data"
RATE = 30_000.0
CONVERSION = 1e-6
SMALL_CHUNK_SIZE = "16MiB"  # dask's array.chunk-size in the file tests: several time chunks
SMALL_TARGET = 4 * 2**20  # a quarter of it


# -- the sizing rule ------------------------------------------------------------------------


def _is_grid_of(chunks, storage, shape):
    return all(
        c == s or (c % min(u, s) == 0 and c <= s)
        for c, u, s in zip(chunks, storage, shape, strict=True)
    )


@given(
    n_time=st.integers(1, 10**8),
    n_channels=st.integers(1, 512),
    chunk_time=st.integers(1, 100_000),
    chunk_channels=st.integers(1, 512),
    itemsize=st.sampled_from([1, 2, 4, 8, 16]),
    target=st.integers(2**10, 2**30),
)
def test_chunks_are_whole_storage_chunks_within_the_target(
    n_time, n_channels, chunk_time, chunk_channels, itemsize, target
):
    shape, storage = (n_time, n_channels), (chunk_time, chunk_channels)
    chunks = dask_chunks(shape, storage, itemsize, target_bytes=target)
    assert _is_grid_of(chunks, storage, shape)
    unit = [min(c, s) for c, s in zip(storage, shape, strict=True)]
    assert chunks[1] >= min(4, n_channels)
    nbytes = math.prod(chunks) * itemsize
    if chunks[0] < n_time:
        # time still to grow: within the target, unless one row of storage chunks exceeds it
        assert nbytes <= target or chunks[0] == unit[0]
    else:
        # the whole time axis: channels grow only while the chunk is under MIN_CHUNK_BYTES
        base = min(n_channels, unit[1] * math.ceil(min(4, n_channels) / unit[1]))
        smaller = n_time * (chunks[1] - unit[1]) * itemsize
        assert chunks[1] == base or smaller < min(MIN_CHUNK_BYTES, target)


@pytest.mark.parametrize(
    ("shape", "storage", "itemsize", "target", "expected"),
    [
        ((7_800_000, 64), (2000, 8), 8, 32 * 2**20, (524_000, 8)),
        ((7_800_000, 64), (2000, 8), 2, 32 * 2**20, (2_096_000, 8)),  # raw int16 counts
        ((16_777_216, 64), (1024, 1), 8, 32 * 2**20, (1_048_576, 4)),
        ((16_777_216, 64), (1024, 1), 8, 128 * 2**20, (4_194_304, 4)),
        ((300_000, 3), (1000, 1), 8, 32 * 2**20, (300_000, 3)),  # fewer channels than 4
        ((100, 2), (1000, 10), 8, 32 * 2**20, (100, 2)),  # chunks larger than the data
        ((50, 1000), (10, 1), 8, 32 * 2**20, (50, 1000)),  # tiny: channels grow
        ((0, 8), (1000, 8), 8, 32 * 2**20, (0, 8)),
        ((1000,), (4096,), 8, 32 * 2**20, (1000,)),
        ((10**6, 32, 32), (1, 32, 32), 8, 2**20, (128, 32, 32)),
    ],
)
def test_chunk_examples(shape, storage, itemsize, target, expected):
    assert dask_chunks(shape, storage, itemsize, target_bytes=target) == expected


def test_target_is_a_quarter_of_dask_chunk_size():
    with dask.config.set({"array.chunk-size": "128MiB"}):
        assert dask_chunks((7_800_000, 64), (2000, 8), 8) == (524_000, 8)
    with dask.config.set({"array.chunk-size": "512MiB"}):
        assert dask_chunks((7_800_000, 64), (2000, 8), 8) == (2_096_000, 8)
    assert dask_chunks((7_800_000, 64), (2000, 8), 8, target_bytes="16MiB") == (262_000, 8)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (((10, 10), (5,), 8), {}, "different lengths"),
        (((10, 10), (5, 0), 8), {}, "must be positive"),
        (((10, 10), (5, 5), 0), {}, "itemsize"),
        (((10, 10), (5, 5), 8), {"target_bytes": 0}, "target_bytes"),
    ],
)
def test_bad_arguments_are_named(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dask_chunks(*args, **kwargs)


# -- files ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """64 channels × 4 s at 30 kHz, gzip+shuffle chunks of (2000, 8): 480 stored chunks."""
    rng = np.random.default_rng(7)
    data = rng.integers(-2000, 2000, size=(120_000, 64), dtype=np.int16)
    data[::5] = 0
    path = tmp_path_factory.mktemp("wide") / "wide.nwb"
    series = dict(
        name="ElectricalSeries",
        data=data,
        rate=RATE,
        region=range(64),
        conversion=CONVERSION,
        chunks=(2000, 8),
        compression="gzip",
        shuffle=True,
    )
    return write_nwb(path, [series], n_electrodes=64), (2000, 8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """64 channels × 53 s at 30 kHz in (1024, 1) chunks: 100,032 stored chunks (mostly zeros)."""
    n_times = 1024 * 1563
    data = np.zeros((n_times, 64), np.int16)
    data[::37] = (np.arange(64, dtype=np.int16) * 11 + 1)[None, :]
    path = tmp_path_factory.mktemp("tiny") / "tiny.nwb"
    series = dict(
        name="ElectricalSeries",
        data=data,
        rate=RATE,
        region=range(64),
        conversion=CONVERSION,
        chunks=(1024, 1),
        compression="gzip",
        shuffle=True,
    )
    return write_nwb(path, [series], n_electrodes=64), (1024, 1)


@pytest.fixture(params=["wide", "tiny"])
def recording(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def fetch_log(monkeypatch):
    """One entry per ``ByteSource.fetch`` call: the number of stored chunks it fetched.

    Reads of the lazy chunk index (B-tree nodes, which begin ``TREE``) are not data reads
    and are left out.
    """
    log: list[int] = []
    original = ByteSource.fetch

    def logged(self, starts, lengths, **kwargs):
        pieces = original(self, starts, lengths, **kwargs)
        if not pieces or any(bytes(p[:4]) != b"TREE" for p in pieces):
            log.append(len(starts))
        return pieces

    monkeypatch.setattr(ByteSource, "fetch", logged)
    return log


def _h5(path, rows, cols):
    with h5py.File(path, "r") as f:
        return f[DATA][rows, :][:, cols] * CONVERSION


def _touched(start, stop, step):
    """Grid cells of length ``step`` that [start, stop) touches."""
    return (stop - 1) // step - start // step + 1


def test_chunks_are_storage_multiples_and_encoding_keeps_the_storage_chunk(recording):
    path, storage = recording
    with dask.config.set({"array.chunk-size": SMALL_CHUNK_SIZE}):
        ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
        auto = xr.open_dataset(path, engine="nwbzarr", chunks="auto")
    enc = ds.data.encoding
    assert enc["chunks"] == storage == enc["hdf5_chunks"]
    assert ds.data.dtype == np.float64  # the conversion applies: sized as float64
    for opened, limit in ((auto, 4 * SMALL_TARGET), (ds, SMALL_TARGET)):
        time_chunks, channel_chunks = opened.data.chunks
        assert all(c % storage[0] == 0 for c in time_chunks[:-1])
        assert all(c % storage[1] == 0 for c in channel_chunks[:-1])
        assert max(time_chunks) * max(channel_chunks) * 8 <= limit
    # chunks={}: the storage chunk's channel span (at least 4), time grown to the target
    assert len(time_chunks) > 1
    assert max(channel_chunks) == max(storage[1], 4)
    assert max(time_chunks) * max(channel_chunks) * 8 > SMALL_TARGET / 2
    assert enc["preferred_chunks"] == {
        "time": max(time_chunks),
        "channel": max(channel_chunks),
    }
    assert ds.data.data.npartitions < math.prod(
        math.ceil(n / c) for n, c in zip(ds.data.shape, storage, strict=True)
    )

    default = xr.open_dataset(path, engine="nwbzarr", chunks={})
    assert max(default.data.chunks[0]) * max(default.data.chunks[1]) * 8 <= 32 * 2**20


@pytest.mark.parametrize("channels", ["slice", "list"])
@pytest.mark.parametrize("start", [31_000, 50_000])
def test_a_window_reads_only_its_stored_chunks_one_fetch_per_dask_chunk(
    recording, fetch_log, channels, start
):
    path, storage = recording
    stop = start + 30_000
    with dask.config.set({"array.chunk-size": SMALL_CHUNK_SIZE}):
        ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    dask_t, dask_c = max(ds.data.chunks[0]), max(ds.data.chunks[1])
    cols = [1, 2, 3, 4]
    key = slice(1, 5) if channels == "slice" else cols
    fetch_log.clear()
    window = ds.data.isel(time=slice(start, stop), channel=key).values

    np.testing.assert_array_equal(window, _h5(path, slice(start, stop), cols))
    dask_time_chunks = _touched(start, stop, dask_t)
    dask_channel_chunks = _touched(1, 5, dask_c)
    assert len(fetch_log) == dask_time_chunks * dask_channel_chunks <= 2
    stored_time = _touched(start, stop, storage[0])
    if channels == "slice":
        # dask fuses the slice into the read: exactly the stored chunks of the window
        assert sum(fetch_log) == stored_time * _touched(1, 5, storage[1])
    else:
        # a list goes through dask's take: every channel of each dask chunk touched, over the
        # window's time range -- with the storage chunk's channel span, nothing more
        assert sum(fetch_log) == stored_time * dask_channel_chunks * dask_c // storage[1]
        if storage[1] >= 4:
            assert sum(fetch_log) == stored_time * _touched(1, 5, storage[1])


def test_a_window_by_label_reads_one_storage_column(wide, fetch_log):
    path, _ = wide
    ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    fetch_log.clear()
    window = ds.data.sel(time=slice(2.0, 2.0 + 29_999 / RATE), channel=[109, 110]).load()
    assert window.shape == (30_000, 2)
    assert fetch_log == [15]  # one fetch: 15 stored chunks of channels 8-15
    np.testing.assert_array_equal(window.values, _h5(path, slice(60_000, 90_000), [9, 10]))


def test_electrode_coordinates_are_dask_under_chunks_and_load_once(wide, fetch_log):
    """xarray makes every non-index coordinate a dask array under ``chunks=`` (no backend can
    keep them numpy: only index coordinates are spared), and slices each with dask on every
    selection, the largest cost of a window through ``chunks={}`` beyond the lazy array
    (docs/benchmarks.md). Loading them once, as the guide shows, reads no sample, keeps
    ``data`` lazy, and a window then reads the same stored chunks and computes once.
    """
    path, _ = wide
    ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    columns = [name for name in ds.coords if name not in ds.xindexes]
    assert {"location", "x", "y", "z"} <= set(columns)
    assert all(ds[name].chunks is not None for name in columns)
    assert ds.channel.chunks is None  # the index coordinate stays in memory

    fetch_log.clear()
    loaded = ds.assign_coords({name: ds[name].variable.compute() for name in columns})
    assert fetch_log == []  # the columns were read at open; loading them reads nothing
    assert all(isinstance(loaded[name].variable.data, np.ndarray) for name in columns)
    np.testing.assert_array_equal(loaded.x.values, 1.0 * np.arange(64))
    assert loaded.data.chunks == ds.data.chunks

    with raise_if_dask_computes(max_computes=1):
        window = loaded.data.sel(time=slice(2.0, 2.0 + 29_999 / RATE), channel=[109, 110])
        assert isinstance(window.location.variable.data, np.ndarray)
        values = window.values
    assert fetch_log == [15]  # as without loading: channels 8-15 of 15 stored chunks
    np.testing.assert_array_equal(values, _h5(path, slice(60_000, 90_000), [9, 10]))
    assert list(window.location.values) == ["site9", "site10"]


def test_a_whole_pass_reads_every_stored_chunk_once(wide, fetch_log):
    path, _ = wide
    with dask.config.set({"array.chunk-size": SMALL_CHUNK_SIZE}):
        ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    fetch_log.clear()
    total = float(ds.data.sum().compute())
    assert sum(fetch_log) == 60 * 8
    assert len(fetch_log) == ds.data.data.npartitions
    np.testing.assert_allclose(total, _h5(path, slice(None), slice(None)).sum())


def test_datatree_chunks_like_the_dataset(wide):
    path, _ = wide
    with dask.config.set({"array.chunk-size": SMALL_CHUNK_SIZE}):
        tree = xr.open_datatree(path, engine="nwbzarr", chunks={})
        ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    assert tree["acquisition/ElectricalSeries"].data.chunks == ds.data.chunks


def test_raw_counts_are_sized_in_their_own_dtype(wide):
    path, _ = wide
    with dask.config.set({"array.chunk-size": "4MiB"}):
        raw = xr.open_dataset(path, engine="nwbzarr", chunks={}, mask_and_scale=False)
        scaled = xr.open_dataset(path, engine="nwbzarr", chunks={})
    assert raw.data.dtype == np.int16
    assert max(raw.data.chunks[0]) == 4 * max(scaled.data.chunks[0])  # 2 bytes, not 8


@pytest.mark.parametrize("channels", ["slice", "list"])
def test_a_remote_window_is_at_most_two_requests(
    recording, http_remote, tmp_path, channels, fetch_log
):
    path, _ = recording
    url = http_remote.upload("rec.nwb", path)
    cache = tmp_path / "cache"
    ds = xr.open_dataset(url, engine="nwbzarr", chunks={}, index_cache=cache)
    completion = index_completion(url)  # a window after the lazy index is complete
    assert completion is None or (completion.wait(120) and completion.error is None)
    start = 45_000
    key = slice(1, 5) if channels == "slice" else [1, 2, 3, 4]
    http_remote.server.reset()
    fetch_log.clear()
    window = ds.data.isel(time=slice(start, start + 30_000), channel=key).values
    assert http_remote.server.count() <= 2
    assert len(fetch_log) == http_remote.server.count()  # one request per fetch
    np.testing.assert_array_equal(window, _h5(path, slice(start, start + 30_000), [1, 2, 3, 4]))
