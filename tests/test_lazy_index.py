"""The lazy chunk index equals the eager one chunk for chunk: locally, over HTTP, on a cluster."""

from __future__ import annotations

import re
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

import xnwb.lazyindex
from tests.conftest import counts, real_nwb_files
from xnwb.api import build_index, open_source
from xnwb.btree import node_read_size
from xnwb.lazyindex import complete_index, lazy_arrays

DATA = "acquisition/ElectricalSeries/data"


@pytest.fixture
def every_dataset_lazy(monkeypatch):
    """Small test files too: every chunked dataset gets the lazy index."""
    monkeypatch.setattr(xnwb.lazyindex, "LAZY_MIN_CHUNKS", 1)


def assert_lazy_equals_eager(path, boxes: int = 25, **options):
    """Random chunk boxes, then the completed index, against ``chunk_iter``'s index."""
    eager = build_index(path, **options)
    lazy = build_index(path, lazy=True, **options)
    rng = np.random.default_rng(0)
    pending = lazy_arrays(lazy)
    for name, arr in pending.items():
        ref = eager.arrays[name]
        assert arr.chunks == ref.chunks and arr.offsets.shape == ref.offsets.shape, name
        for _ in range(boxes):
            box = []
            for g in arr.offsets.shape:
                lo = int(rng.integers(0, g))
                box.append((lo, int(rng.integers(lo + 1, min(g, lo + 6) + 1))))
            arr.ensure_chunks(box)
            window = tuple(slice(lo, hi) for lo, hi in box)
            np.testing.assert_array_equal(arr.offsets[window], ref.offsets[window], err_msg=name)
            np.testing.assert_array_equal(arr.lengths[window], ref.lengths[window], err_msg=name)
            for key in ref.inline:
                if all(lo <= k < hi for k, (lo, hi) in zip(key, box, strict=True)):
                    assert arr.inline[key] == ref.inline[key], (name, key)
    complete_index(lazy)
    assert not lazy_arrays(lazy)
    assert lazy.arrays.keys() == eager.arrays.keys()
    for name, ref in eager.arrays.items():
        arr = lazy.arrays[name]
        assert arr.chunks == ref.chunks and arr.shape == ref.shape, name
        np.testing.assert_array_equal(arr.offsets, ref.offsets, err_msg=name)
        np.testing.assert_array_equal(arr.lengths, ref.lengths, err_msg=name)
        assert arr.inline == ref.inline, name
        assert np.asarray(arr.fill_value == ref.fill_value).all(), name
    return pending, lazy


def _h5(tmp_path: Path, build) -> str:
    path = tmp_path / "layouts.h5"
    with h5py.File(path, "w") as f:
        build(f)
    return str(path)


def test_filters_ragged_edges_and_unwritten_chunks(tmp_path, every_dataset_lazy):
    rng = np.random.default_rng(2)

    def build(f):
        f.create_dataset(
            "gzip",
            data=rng.integers(0, 50, (1003, 17), dtype="<i2"),
            chunks=(64, 5),
            compression="gzip",
            shuffle=True,
        )
        f.create_dataset(
            "f32", data=rng.normal(size=(7770,)).astype("<f4"), chunks=(10,), fletcher32=True
        )
        part = f.create_dataset(
            "partial",
            shape=(500, 12),
            chunks=(16, 4),
            dtype="<i4",
            fillvalue=-7,
            compression="gzip",
        )
        part[100:200, 4:8] = 3  # most chunks never written: fill value
        part[480:, :] = 1
        f.create_dataset(
            "cube", data=rng.integers(0, 9, (60, 40, 10), dtype="u1"), chunks=(4, 3, 7)
        )

    path = _h5(tmp_path, build)
    pending, lazy = assert_lazy_equals_eager(path)
    assert set(pending) == {"gzip", "f32", "partial", "cube"}
    assert lazy.arrays["partial"].fill_value == -7
    assert (lazy.arrays["partial"].offsets == -1).sum() > 50


def test_filter_mask_chunks_are_inlined_like_the_eager_index(tmp_path, every_dataset_lazy):
    import zlib

    data = np.arange(128 * 80, dtype="<i4").reshape(128, 80)

    def build(f):
        ds = f.create_dataset(
            "masked", shape=data.shape, chunks=(8, 10), dtype="<i4", compression="gzip"
        )
        for i in range(0, 128, 8):
            for j in range(0, 80, 10):
                block = np.ascontiguousarray(data[i : i + 8, j : j + 10])
                if (i // 8 + j // 10) % 3 == 0:  # gzip skipped for this chunk
                    ds.id.write_direct_chunk((i, j), block.tobytes(), filter_mask=1)
                else:
                    ds.id.write_direct_chunk((i, j), zlib.compress(block.tobytes()))

    path = _h5(tmp_path, build)
    _, lazy = assert_lazy_equals_eager(path)
    skipped = sum((a + b) % 3 == 0 for a in range(16) for b in range(8))
    assert len(lazy.arrays["masked"].inline) == skipped == 43
    from xnwb.read import read_selection
    from xnwb.source import ByteSource

    fresh = build_index(path, lazy=True)
    got = read_selection(fresh.arrays["masked"], ByteSource(path), (slice(5, 120), slice(3, 78)))
    np.testing.assert_array_equal(got, data[5:120, 3:78])


def test_big_unfiltered_chunks_are_split_the_same_way(tmp_path, every_dataset_lazy):
    def build(f):
        f.create_dataset("big", data=counts(12_000, 40), chunks=(4000, 40))

    path = _h5(tmp_path, build)
    _pending, lazy = assert_lazy_equals_eager(path, max_chunk_bytes=128 * 2**10)
    assert lazy.arrays["big"].chunks[0] == 1000  # cut into sub-chunks, lazily as eagerly


def test_deep_tree(tmp_path, every_dataset_lazy):
    def build(f):
        f.create_dataset("x", data=np.arange(120_000, dtype="<i2").reshape(-1, 2), chunks=(5, 1))

    pending, _ = assert_lazy_equals_eager(_h5(tmp_path, build), boxes=60)
    lazy = pending["x"].lazy
    assert lazy.tree.address > 0 and lazy.complete


def test_other_chunk_indexes_fall_back_with_a_note(tmp_path, every_dataset_lazy):
    path = tmp_path / "latest.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("ext", data=np.arange(10_000), chunks=(10,), maxshape=(None,))
        f.create_dataset("fixed", data=np.arange(10_000), chunks=(10,))
    pending, lazy = assert_lazy_equals_eager(str(path))
    assert not pending
    notes = lazy.info["lazy_index_notes"]
    assert set(notes) == {"ext", "fixed"} and "version 4" in notes["ext"]


def test_pynwb_files_and_reads(nwb_writer, every_dataset_lazy):
    data = counts(30_000, 8)
    path = nwb_writer(
        [
            dict(
                name="ElectricalSeries",
                data=data,
                rate=1000.0,
                region=range(8),
                chunks=(300, 2),
                compression="gzip",
                shuffle=True,
            ),
            dict(
                name="LFP",
                data=data[::4, :3].copy(),
                rate=250.0,
                module="ecephys",
                region=range(3),
                chunks=(64, 3),
            ),
        ]
    )
    pending, _ = assert_lazy_equals_eager(path)
    assert DATA in pending
    refs, _ = open_source(path)  # local opens are lazy too
    assert refs.arrays[DATA].lazy is not None
    ds = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False)
    window = ds.data.isel(time=slice(1234, 5678), channel=[1, 6]).values
    np.testing.assert_array_equal(window, data[1234:5678][:, [1, 6]])


@pytest.mark.parametrize("path", real_nwb_files(), ids=lambda p: p.name)
def test_real_files(path, every_dataset_lazy):
    assert_lazy_equals_eager(str(path), boxes=10)


# -- over HTTP ------------------------------------------------------------------
@pytest.fixture
def many_chunks(nwb_writer):
    """20,000 chunks: a three-level B-tree, as in a long recording with small chunks."""
    return nwb_writer(
        [
            dict(
                name="ElectricalSeries",
                data=counts(200_000, 8),
                rate=1000.0,
                region=range(8),
                chunks=(100, 1),
                compression="gzip",
            )
        ]
    )


def test_cold_open_window_then_background_completion_and_cached_reopen(
    http_remote, many_chunks, tmp_path
):
    server = http_remote.server
    url = http_remote.upload("rec.nwb", many_chunks)
    cache = tmp_path / "cache"
    eager = build_index(many_chunks)
    server.reset()
    refs, source = open_source(url, index_cache=cache)
    opened = server.count()
    arr = refs.arrays[DATA]
    assert arr.lazy is not None and not arr.lazy.complete
    assert opened <= 5  # not one request per batch of leaves
    assert not any(cache.glob("*.npz"))  # nothing cached until the index is complete

    from xnwb.read import read_selection

    server.reset()
    window = read_selection(arr, source, (slice(100_000, 101_000), slice(0, 4)), DATA)
    assert server.count() <= 4
    np.testing.assert_array_equal(window, counts(200_000, 8)[100_000:101_000, :4])

    completion = arr.lazy.completion
    assert completion is not None and completion.wait(120) and completion.error is None
    assert arr.lazy.complete
    np.testing.assert_array_equal(arr.offsets, eager.arrays[DATA].offsets)
    server.reset()
    read_selection(arr, source, (slice(150_000, 151_000), slice(0, 4)), DATA)
    assert server.count() == 1  # the index is complete: only data

    for _ in range(100):  # the cache entry is written right after completion
        if any(cache.glob("*.npz")):
            break
        time.sleep(0.05)
    server.reset()
    again, _ = open_source(url, index_cache=cache)
    # The probe with the content fingerprint of the first and last 64 KiB that an HTTP
    # entry is checked against (ETags alone are not trusted over HTTP: see xnwb.cache):
    # two single ranges in flight together on this server (one multi-range request where
    # a server answers those, tests/test_cache.py).
    assert again.info["open"]["index_cached"] and server.count() <= 2
    assert again.arrays[DATA].lazy is None
    np.testing.assert_array_equal(again.arrays[DATA].offsets, eager.arrays[DATA].offsets)


def test_lazy_index_can_be_switched_off(http_remote, many_chunks, tmp_path):
    url = http_remote.upload("rec.nwb", many_chunks)
    refs, _ = open_source(url, index_cache=False, lazy_index=False)
    assert refs.arrays[DATA].lazy is None
    np.testing.assert_array_equal(
        refs.arrays[DATA].offsets, build_index(many_chunks).arrays[DATA].offsets
    )


def test_cluster_workers_resolve_regions_themselves(http_remote, many_chunks, tmp_path):
    distributed = pytest.importorskip("distributed")
    url = http_remote.upload("rec.nwb", many_chunks)
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    try:
        with distributed.Client(cluster):
            ds = xr.open_dataset(
                url, engine="nwbzarr", chunks={}, index_cache=False, mask_and_scale=False
            )
            graph = dict(ds.data.data.__dask_graph__())
            import pickle

            sizes = {key: len(pickle.dumps(task)) for key, task in graph.items()}
            big = max(sizes, key=sizes.get)
            others = [size for key, size in sizes.items() if key != big]
            assert max(others) < 1000 < sizes[big]  # the lazy index is one shared key
            total = ds.data.sum("time").compute().values
    finally:
        cluster.close()
    np.testing.assert_array_equal(total, counts(200_000, 8).sum(axis=0, dtype=np.int64))


def test_pickled_lazy_index_resolves_its_regions_again(many_chunks, every_dataset_lazy):
    """A worker's copy claims nothing known: the offsets beside it may be an older snapshot."""
    import pickle

    eager = build_index(many_chunks).arrays[DATA]
    arr = build_index(many_chunks, lazy=True).arrays[DATA]
    arr.ensure_chunks([(10, 20), (0, 8)])
    copy = pickle.loads(pickle.dumps(arr))
    assert not copy.lazy.complete and copy.lazy._known is None
    assert copy.lazy._inner  # the internal nodes travel: a region costs a leaf read or so
    copy.ensure_chunks([(1500, 1600), (2, 5)])
    window = (slice(1500, 1600), slice(2, 5))
    np.testing.assert_array_equal(copy.offsets[window], eager.offsets[window])


def _settled(lazy, timeout: float = 60.0) -> None:
    """Wait (bounded) until no region is being read ahead."""
    deadline = time.monotonic() + timeout
    while lazy._pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not lazy._pending


def test_a_pass_reads_the_next_regions_index_ahead(http_remote, many_chunks):
    """Long regions read one after another (as a dask pass does, here last first): the
    B-tree leaves of the next ones are read in the background, in the pass's direction,
    exactly as chunk_iter lists them; the region itself then costs only its data."""
    from xnwb.read import read_selection

    server = http_remote.server
    url = http_remote.upload("rec.nwb", many_chunks)
    eager = build_index(many_chunks).arrays[DATA]
    refs, source = open_source(url, index_cache=False)
    arr = refs.arrays[DATA]
    lazy = arr.lazy
    assert lazy is not None and arr.offsets.shape == (2000, 8)
    data = counts(200_000, 8)
    # 10,000 rows x 8 channels: 800 chunks, a long region (not a window).
    for start in (150_000, 140_000):
        block = read_selection(arr, source, (slice(start, start + 10_000), slice(None)), DATA)
        np.testing.assert_array_equal(block, data[start : start + 10_000])
    _settled(lazy)
    # After 1500-1600 and then 1400-1500 (backwards): 1300-1400, 1200-1300, 1100-1200
    # (each leaf holds 64 chunks, 8 rows: the leaf at an edge reaches a few rows further).
    assert lazy._known[1100:1400].all() and not lazy._known[:1090].any()
    known = lazy._known
    np.testing.assert_array_equal(arr.offsets[known], eager.offsets[known])
    np.testing.assert_array_equal(arr.lengths[known], eager.lengths[known])
    server.reset()
    fetched = lazy.nodes_fetched
    block = read_selection(arr, source, (slice(130_000, 140_000), slice(None)), DATA)
    np.testing.assert_array_equal(block, data[130_000:140_000])
    _settled(lazy)
    assert lazy.nodes_fetched > fetched  # it went on reading ahead, in the background
    # The region's own read: only data (its chunks sit together: one or two requests).
    data_requests = [r for r in server.requests if r.bytes_sent > 64 * 2**10]
    assert 1 <= len(data_requests) <= 2


def test_a_first_long_region_reads_nothing_ahead(http_remote, many_chunks):
    """Until a second long region gives the direction, nothing is read ahead: of the
    regions either side of the first, one is not part of the pass (or past its end)."""
    from xnwb.read import read_selection

    refs, source = open_source(http_remote.upload("rec.nwb", many_chunks), index_cache=False)
    arr = refs.arrays[DATA]
    lazy = arr.lazy
    block = read_selection(arr, source, (slice(150_000, 160_000), slice(None)), DATA)
    np.testing.assert_array_equal(block, counts(200_000, 8)[150_000:160_000])
    _settled(lazy)
    # Rows 1500-1600 and the few its edge leaves reach (64 chunks, 8 rows each), no more.
    assert lazy._known[1500:1600].all()
    assert not lazy._known[:1490].any() and not lazy._known[1610:].any()


def test_a_long_region_far_from_the_last_starts_a_new_pass(http_remote, many_chunks):
    """A second pass over an index still incomplete does not take the direction of the
    first: a long region more than two regions from the last reads nothing ahead (a
    backwards pass that ended near row 1400 would otherwise read rows 400-500, 300-400 and
    200-300 ahead of a forward pass starting at row 500); the next region gives the new
    direction."""
    from xnwb.read import read_selection

    refs, source = open_source(http_remote.upload("rec.nwb", many_chunks), index_cache=False)
    arr = refs.arrays[DATA]
    lazy = arr.lazy
    data = counts(200_000, 8)

    def region(start: int) -> None:
        block = read_selection(arr, source, (slice(start, start + 10_000), slice(None)), DATA)
        np.testing.assert_array_equal(block, data[start : start + 10_000])
        _settled(lazy)

    region(150_000)
    region(140_000)  # backwards: 1300-1400, 1200-1300 and 1100-1200 read ahead
    assert lazy._known[1100:1400].all()
    region(50_000)  # a forward pass begins at row 500
    assert lazy._known[500:600].all()
    assert not lazy._known[:490].any()  # nothing read ahead below it
    assert not lazy._known[610:1090].any()
    region(60_000)  # its second region: 700-1000 ahead
    assert lazy._known[600:1000].all()
    assert not lazy._known[:490].any()


# -- a pass's leaves from the byte spans that hold them (xnwb.heldbytes) --------------
@pytest.fixture
def spread_leaves(nwb_writer):
    """400 x 8 chunks of 8 KB, as pynwb writes them: a B-tree leaf every ~460 KB of
    data, each among the chunks it lists (too far apart to merge leaf requests)."""
    data = np.random.default_rng(1).normal(size=(400_000, 8))
    path = nwb_writer(
        [dict(name="ElectricalSeries", data=data, rate=1000.0, region=range(8), chunks=(1000, 1))]
    )
    return path, data


def _data_requests(server) -> int:
    return len([r for r in server.requests if r.bytes_sent > 64 * 2**10])


def _opened_cold(http_remote, path: str, name: str = "spread.nwb"):
    """``path`` served over HTTP and opened with no index cache: ``(refs, source, array)``."""
    refs, source = open_source(http_remote.upload(name, path), index_cache=False)
    return refs, source, refs.arrays[DATA]


def test_a_long_regions_leaves_come_with_its_chunks(http_remote, spread_leaves, monkeypatch):
    """The region's read asks for its leaves as the span holding them, which brings its
    chunks: the data read that follows is served from those bytes. No leaf is fetched
    on its own, and no byte twice."""
    from xnwb.btree import node_read_size
    from xnwb.read import read_selection

    monkeypatch.setattr(xnwb.lazyindex.LazyChunks, "_look_ahead", lambda *a: None)
    path, data = spread_leaves
    server = http_remote.server
    eager = build_index(path).arrays[DATA]
    _, source, arr = _opened_cold(http_remote, path)
    lazy = arr.lazy
    arr.lazy.completion = None  # no background walk in this count
    server.reset()
    block = read_selection(arr, source, (slice(100_000, 180_000), slice(None)), DATA)
    np.testing.assert_array_equal(block, data[100_000:180_000])
    window = (slice(100, 180), slice(None))
    np.testing.assert_array_equal(arr.offsets[window], eager.offsets[window])
    np.testing.assert_array_equal(arr.lengths[window], eager.lengths[window])
    leaf_sized = [r for r in server.requests if r.bytes_sent <= 2 * node_read_size(lazy.tree)]
    assert not leaf_sized  # no leaf on its own (10 leaves, ~460 KB apart)
    region_bytes = int(eager.lengths[window].sum())
    sent = sum(r.bytes_sent for r in server.requests)
    assert region_bytes <= sent <= region_bytes + 2 * 460_000  # its span, ~one leaf more
    assert lazy.nodes_fetched >= 10


def test_a_pass_reads_the_next_regions_with_their_chunks_ahead(http_remote, spread_leaves):
    """Once the pass's direction is known, the regions ahead come with their chunks:
    reading one of them then asks for nothing."""
    from xnwb.read import read_selection

    path, data = spread_leaves
    server = http_remote.server
    eager = build_index(path).arrays[DATA]
    refs, source, arr = _opened_cold(http_remote, path)
    lazy = arr.lazy
    for start in (330_000, 260_000):  # 70 x 8 chunks each, last first as dask's threads go
        block = read_selection(arr, source, (slice(start, start + 70_000), slice(None)), DATA)
        np.testing.assert_array_equal(block, data[start : start + 70_000])
    _settled(lazy)
    assert lazy._known[50:260].all()  # three regions ahead: 190-260, 120-190, 50-120
    lazy._look_ahead = lambda *a: None  # count this region's own requests only
    server.reset()
    block = read_selection(arr, source, (slice(190_000, 260_000), slice(None)), DATA)
    np.testing.assert_array_equal(block, data[190_000:260_000])
    assert _data_requests(server) == 0  # its chunks were read with its leaves
    np.testing.assert_array_equal(arr.offsets[190:260], eager.offsets[190:260])
    for start, stop in ((120_000, 190_000), (50_000, 120_000), (0, 50_000)):  # the rest
        block = read_selection(arr, source, (slice(start, stop), slice(None)), DATA)
        np.testing.assert_array_equal(block, data[start:stop])
    # What the pass never asked for (chunks of neighbours read before they were held)
    # is little, and goes with age.
    assert source._held.nbytes <= 2 * source.max_block
    source._held.max_age = 0.0
    source._held.take([0], [1])
    assert source._held.nbytes == 0
    complete_index(refs)  # the rest walked now (no cache here: no background walk)
    np.testing.assert_array_equal(arr.offsets, eager.offsets)
    np.testing.assert_array_equal(arr.lengths, eager.lengths)


def test_a_few_channels_of_a_long_region_do_not_bring_the_others(http_remote, spread_leaves):
    """Leaves list every channel's chunks: for 2 of 8 channels their span would be mostly
    other channels' bytes, so the leaves are read on their own and nothing is held (the
    read itself merges the gaps between the two channels' chunks as any read does)."""
    from xnwb.read import read_selection

    path, data = spread_leaves
    server = http_remote.server
    _, source, arr = _opened_cold(http_remote, path)
    arr.lazy.completion = None
    server.reset()
    block = read_selection(arr, source, (slice(0, 300_000), slice(2, 4)), DATA)
    np.testing.assert_array_equal(block, data[:300_000, 2:4])
    _settled(arr.lazy)
    assert source._held is None or source._held.nbytes == 0


def test_leaves_fuller_than_the_size_guessed_are_read_again_exactly(
    http_remote, spread_leaves, monkeypatch
):
    """A node holding more entries than assumed (files made with a larger B-tree K):
    parsing it from the span finds it short, and it is fetched at its real size; the
    index is still chunk_iter's. Here the guess is made too small for every leaf."""
    from xnwb.btree import node_read_size
    from xnwb.read import read_selection

    monkeypatch.setattr(
        xnwb.lazyindex, "node_read_size", lambda tree, entries=16: node_read_size(tree, entries)
    )
    path, data = spread_leaves
    eager = build_index(path).arrays[DATA]
    _, source, arr = _opened_cold(http_remote, path)
    block = read_selection(arr, source, (slice(0, 200_000), slice(None)), DATA)
    np.testing.assert_array_equal(block, data[:200_000])
    np.testing.assert_array_equal(arr.offsets[:200], eager.offsets[:200])
    np.testing.assert_array_equal(arr.lengths[:200], eager.lengths[:200])


def test_a_few_channels_of_compressed_chunks_do_not_bring_the_others(http_remote, nwb_writer):
    """However well the chunks compress, a box over 8 of 32 channels does not take the
    span of leaves that list all 32: nothing is held, no other channel's bytes come."""
    from xnwb.read import read_selection

    data = np.random.default_rng(4).integers(-3, 4, size=(200_000, 32)).astype(np.int16)
    path = nwb_writer(
        [
            dict(
                name="ElectricalSeries",
                data=data,
                rate=1000.0,
                region=range(32),
                chunks=(1000, 1),
                compression="gzip",
                shuffle=True,
            )
        ],
        n_electrodes=32,
    )
    _, source, arr = _opened_cold(http_remote, path, "few.nwb")
    arr.lazy.completion = None
    assert arr.lazy.tree is not None
    block = read_selection(arr, source, (slice(0, 100_000), slice(0, 8)), DATA)
    np.testing.assert_array_equal(block, data[:100_000, :8])
    _settled(arr.lazy)
    assert source._held is None or source._held.nbytes == 0


def _bytes_served_twice(server) -> int:
    """Bytes the server sent in more than one range answer."""
    spans = []
    for r in server.requests:
        found = re.match(r"bytes=(\d+)-(\d+)", r.range or "")
        if found and r.status == 206:
            spans.append((int(found.group(1)), int(found.group(2)) + 1))
    twice, end = 0, -1
    for lo, hi in sorted(spans):
        if lo < end:
            twice += min(hi, end) - lo
        end = max(end, hi)
    return twice


def test_regions_read_at_once_fetch_no_byte_twice(http_remote, spread_leaves):
    """Three tasks of a backwards pass on three threads, over a slow link. The third
    region's read ahead aims at the first region while that region's own read is still
    walking it (its bytes were fetched a second time), and the first region's read asked
    for chunks the third's span was still bringing (fetched twice too)."""
    import threading

    from xnwb.read import read_selection

    path, data = spread_leaves
    server = http_remote.server
    _, source, arr = _opened_cold(http_remote, path)
    arr.lazy.completion = None  # only the pass's own reads
    server.reset()
    server.latency = 0.2
    got = {}

    def region(lo: int) -> None:
        got[lo] = read_selection(arr, source, (slice(lo * 1000, (lo + 80) * 1000), slice(None)))

    threads = []
    for lo in (160, 320, 240):
        threads.append(threading.Thread(target=region, args=(lo,)))
        threads[-1].start()
        time.sleep(0.05)
    for t in threads:
        t.join(60)
    _settled(arr.lazy)
    server.latency = 0.0
    for lo, block in got.items():
        np.testing.assert_array_equal(block, data[lo * 1000 : (lo + 80) * 1000])
    assert len(got) == 3
    assert _bytes_served_twice(server) <= 4 * node_read_size(arr.lazy.tree)  # a leaf or two


def test_a_child_forked_during_a_pass_reads_on_its_own(http_remote, spread_leaves):
    """Forked while the parent's reads ahead were under way, a child has none of their
    threads: it used to wait for their walks forever, or for a lock one of them held."""
    import multiprocessing
    import threading

    from xnwb.read import read_selection

    path, data = spread_leaves
    _, source, arr = _opened_cold(http_remote, path)
    arr.lazy.completion = None
    http_remote.server.latency = 0.5  # a slow link: the reads ahead take a while
    read_selection(arr, source, (slice(320_000, 400_000), slice(None)))
    ahead = threading.Thread(
        target=read_selection, args=(arr, source, (slice(240_000, 320_000), slice(None)))
    )
    ahead.start()  # the pass's next task: the regions below are read ahead
    for _ in range(200):
        if arr.lazy._pending:
            break
        time.sleep(0.01)
    assert arr.lazy._pending  # the fork below happens while walks are under way

    def child(queue) -> None:
        block = read_selection(arr, source, (slice(160_000, 240_000), slice(None)))
        queue.put(bool(np.array_equal(block, data[160_000:240_000])))

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    process.join(30)
    alive = process.is_alive()
    if alive:
        process.kill()
        process.join(5)
    ahead.join(60)
    http_remote.server.latency = 0.0
    assert not alive, "the forked child waited for its parent's threads"
    assert process.exitcode == 0 and queue.get(timeout=5) is True


def test_a_window_is_not_held_up_by_a_long_walk_or_a_claim_that_never_ends(
    http_remote, spread_leaves, monkeypatch
):
    """A long region's walk under way (its span retrying a failing server, say) covers a
    one-row window; another thread claimed the window's bytes and never delivers. The
    window walks its own few nodes and, after a short wait, fetches its own bytes."""
    import threading

    import xnwb.source
    from xnwb.read import read_selection

    monkeypatch.setattr(xnwb.source, "CLAIM_WAIT_SECONDS", 0.2)
    path, data = spread_leaves
    eager = build_index(path).arrays[DATA]
    _, source, arr = _opened_cold(http_remote, path)
    arr.lazy.completion = None
    read_selection(arr, source, (slice(0, 1000), slice(None)))  # the inner nodes, kept
    lazy = arr.lazy
    window = (slice(200, 280), slice(None))
    _, stuck = lazy._begin_walk([(200, 280), (0, 8)], window, wait=False)  # never ended
    start = int(eager.offsets[250].min())
    claimed = []
    claimer = threading.Thread(
        target=lambda: claimed.extend(source.claim_unheld(start, start + 2**20))
    )
    claimer.start()
    claimer.join()
    got = []
    reader = threading.Thread(
        target=lambda: got.append(
            read_selection(arr, source, (slice(250_000, 251_000), slice(None)))
        )
    )
    reader.start()
    reader.join(20)
    finished = not reader.is_alive()
    lazy._end_walk(stuck)
    source.release_claim(claimed)
    reader.join(20)
    assert finished, "a window waited for a walk (or a claim) that never ended"
    np.testing.assert_array_equal(got[0], data[250_000:251_000])
