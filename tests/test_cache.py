"""The persistent index cache: local files too, never stopping an open, never trusting a
stale or altered entry. Real files (pynwb), real folders, real processes, a real server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

import xnwb
from tests.conftest import write_nwb
from xnwb.api import LOCAL_CACHE_MIN_CHUNKS
from xnwb.cache import load_cached, local_identity, source_identity
from xnwb.exceptions import CacheWarning
from xnwb.source import ByteSource

ROOT = Path(__file__).resolve().parents[1]
SERIES = "acquisition/ElectricalSeries/data"


def _many_chunks(path: Path, seed: int = 0, identifier_tag: str = "a") -> tuple[str, np.ndarray]:
    """A file whose index holds more than LOCAL_CACHE_MIN_CHUNKS chunks (worth caching)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(-1000, 1000, size=(2 * LOCAL_CACHE_MIN_CHUNKS, 2), dtype=np.int16)
    written = write_nwb(
        path.with_name(f"{path.stem}-{identifier_tag}.nwb"),
        [dict(name="ElectricalSeries", data=data, rate=1e3, region=range(2), chunks=(2, 1))],
        n_electrodes=2,
    )
    shutil.move(written, path)
    return os.fspath(path), data


@pytest.fixture
def big(tmp_path):
    return _many_chunks(tmp_path / "big.nwb")


def _open(path, cache, **kwargs):
    # The full index at open, so the entry is written before open_dataset returns; the
    # lazy index's entry (written when its background completion ends) is tested below.
    kwargs.setdefault("lazy_index", False)
    return xr.open_dataset(
        path, engine="nwbzarr", index_cache=cache, mask_and_scale=False, **kwargs
    )


def _entry(cache: Path) -> Path:
    entries = list(cache.glob("*.npz"))
    assert len(entries) == 1, entries
    return entries[0]


def test_local_index_is_cached_and_used(big, tmp_path):
    path, data = big
    cache = tmp_path / "cache"
    first = _open(path, cache)
    assert first.encoding["xnwb_open"]["index_cached"] is False
    _entry(cache)
    again = _open(path, cache)
    assert again.encoding["xnwb_open"]["index_cached"] is True
    np.testing.assert_array_equal(again.data.values, data)
    # Another spelling of the same file (a symlink) finds the same entry.
    link = tmp_path / "link.nwb"
    link.symlink_to(path)
    assert _open(link, cache).encoding["xnwb_open"]["index_cached"] is True
    assert len(list(cache.glob("*.npz"))) == 1


def test_lazy_local_index_is_cached_once_complete(big, tmp_path):
    from xnwb.lazyindex import index_completion

    path, data = big
    cache = tmp_path / "cache"
    first = _open(path, cache, lazy_index=True)
    np.testing.assert_array_equal(first.data[:10].values, data[:10])
    completion = index_completion(path)
    assert completion is not None
    completion.wait()
    _entry(cache)
    again = _open(path, cache, lazy_index=True)
    assert again.encoding["xnwb_open"]["index_cached"] is True
    np.testing.assert_array_equal(again.data.values, data)


def test_small_local_index_is_not_worth_an_entry(nwb_writer, tmp_path):
    path = nwb_writer(
        [dict(name="ElectricalSeries", data=np.zeros((100, 2), "i2"), rate=1e3, region=range(2))],
        n_electrodes=2,
    )
    cache = tmp_path / "cache"
    _open(path, cache)
    assert not cache.exists() or not list(cache.glob("*.npz"))


def _rewrite_in_place(path: str, new_bytes: bytes) -> None:
    """Same inode, same size, mtime set back: only ctime tells."""
    before = os.stat(path)
    assert len(new_bytes) == before.st_size
    with open(path, "r+b") as fh:
        fh.write(new_bytes)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )


def test_local_file_rewritten_with_same_size_and_mtime_is_reindexed(big, tmp_path):
    path, _ = big
    other, other_data = _many_chunks(tmp_path / "oth.nwb", seed=5, identifier_tag="a")
    cache = tmp_path / "cache"
    _open(path, cache).data.values
    _rewrite_in_place(path, Path(other).read_bytes())
    ds = _open(path, cache)
    assert ds.encoding["xnwb_open"]["index_cached"] is False
    np.testing.assert_array_equal(ds.data.values, other_data)


def test_local_file_replaced_by_rename_is_reindexed(big, tmp_path):
    path, _ = big
    other, other_data = _many_chunks(tmp_path / "oth.nwb", seed=6, identifier_tag="a")
    cache = tmp_path / "cache"
    _open(path, cache).data.values
    mtime = os.stat(path).st_mtime_ns
    os.utime(other, ns=(mtime, mtime))
    os.replace(other, path)
    ds = _open(path, cache)
    assert ds.encoding["xnwb_open"]["index_cached"] is False
    np.testing.assert_array_equal(ds.data.values, other_data)


# -- damaged entries: rebuild with a warning, and the rebuilt entry is good -----------------


def _corrupt(entry: Path) -> None:
    entry.write_bytes(os.urandom(entry.stat().st_size))


def _truncate(entry: Path) -> None:
    with open(entry, "r+b") as fh:
        fh.truncate(entry.stat().st_size // 2)


def _empty(entry: Path) -> None:
    entry.write_bytes(b"")


def _unreadable(entry: Path) -> None:
    entry.unlink()
    entry.mkdir()  # opening it fails (IsADirectoryError), even for root


def _swap_two_offsets(entry: Path) -> None:
    """Well-formed, same identity, two chunk offsets exchanged; checksum left as it was."""
    with np.load(entry) as npz:
        members = {name: npz[name] for name in npz.files}
    doc = json.loads(bytes(members["doc"]))
    n = doc["refs"]["arrays"][SERIES]
    offsets = members[f"o{n}"].copy()
    flat = offsets.reshape(-1)
    flat[[0, 1]] = flat[[1, 0]]
    members[f"o{n}"] = offsets
    with open(entry, "wb") as fh:
        np.savez(fh, **members)


DAMAGE = {
    "corrupt": _corrupt,
    "truncated": _truncate,
    "zero-length": _empty,
    "unreadable": _unreadable,
    "two offsets swapped": _swap_two_offsets,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_entry_is_rebuilt_with_a_warning(big, tmp_path, damage):
    path, data = big
    cache = tmp_path / "cache"
    _open(path, cache)
    entry = _entry(cache)
    DAMAGE[damage](entry)
    with pytest.warns(CacheWarning, match="index cache"):
        ds = _open(path, cache)
    assert ds.encoding["xnwb_open"]["index_cached"] is False
    np.testing.assert_array_equal(ds.data.values, data)
    if damage != "unreadable":  # the rebuilt entry replaced the damaged one
        with warnings.catch_warnings():
            warnings.simplefilter("error", CacheWarning)
            assert _open(path, cache).encoding["xnwb_open"]["index_cached"] is True


# -- folders that cannot hold the cache: go uncached with a warning -----------------------------


def test_cache_folder_that_is_a_regular_file(big, tmp_path):
    path, data = big
    folder = tmp_path / "not-a-folder"
    folder.write_text("I am a file")
    with pytest.warns(CacheWarning, match="cannot write the index cache"):
        ds = _open(path, folder)
    np.testing.assert_array_equal(ds.data.values, data)
    assert folder.read_text() == "I am a file"


def test_cache_folder_that_cannot_be_created(big, tmp_path):
    path, data = big
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.warns(CacheWarning, match="index_cache=False to silence this"):
        ds = _open(path, blocker / "sub" / "cache")
    np.testing.assert_array_equal(ds.data.values, data)


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder no one may create files in: mode 0555, or the immutable attribute for root."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    try:
        (folder / "probe").touch()
    except OSError:
        pass
    else:  # root ignores modes: make the folder immutable instead
        (folder / "probe").unlink()
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: no way to make a read-only folder")
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"this filesystem refuses the immutable attribute: {done.stderr!r}")
        immutable = True
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def test_read_only_cache_folder(big, read_only_folder):
    path, data = big
    with pytest.warns(CacheWarning, match="cannot write the index cache"):
        ds = _open(path, read_only_folder)
    np.testing.assert_array_equal(ds.data.values, data)
    assert not list(read_only_folder.iterdir())


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.fspath(ROOT))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def test_full_disk_while_writing_the_entry(big, tmp_path):
    """A process that may write only 4 KiB (RLIMIT_FSIZE: writes fail as on a full disk)."""
    path, data = big
    cache = tmp_path / "cache"
    np.save(tmp_path / "expected.npy", data)
    done = _run(
        """
        import resource, signal, sys, warnings
        import numpy as np, xarray as xr
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = xr.open_dataset(sys.argv[1], engine="nwbzarr", index_cache=sys.argv[2],
                                 lazy_index=False, mask_and_scale=False)
            values = ds.data.values
        assert np.array_equal(values, np.load(sys.argv[3])), "wrong values"
        print([str(w.message) for w in caught if w.category.__name__ == "CacheWarning"])
        """,
        path,
        os.fspath(cache),
        os.fspath(tmp_path / "expected.npy"),
    )
    assert done.returncode == 0, done.stderr
    assert "cannot write the index cache" in done.stdout
    assert "File too large" in done.stdout or "No space" in done.stdout
    assert not list(cache.glob("*.npz"))
    assert not list(cache.glob("*.tmp"))  # the partial temporary file is gone


def test_two_processes_building_one_entry_leave_a_valid_entry(big, tmp_path):
    path, _ = big
    cache = tmp_path / "cache"
    script = """
        import sys, xarray as xr
        ds = xr.open_dataset(sys.argv[1], engine="nwbzarr", index_cache=sys.argv[2],
                             lazy_index=False)
        print(ds.encoding["xnwb_open"]["index_cached"])
    """
    env = dict(os.environ, PYTHONPATH=os.fspath(ROOT))
    for _round in range(2):
        shutil.rmtree(cache, ignore_errors=True)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(script), path, os.fspath(cache)],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        assert not list(cache.glob("*.tmp"))
        with warnings.catch_warnings():
            warnings.simplefilter("error", CacheWarning)
            refs = load_cached(cache, os.path.realpath(path), local_identity(path))
        assert refs is not None
        fresh = xnwb.build_index(path)
        np.testing.assert_array_equal(refs.arrays[SERIES].offsets, fresh.arrays[SERIES].offsets)
        np.testing.assert_array_equal(refs.arrays[SERIES].lengths, fresh.arrays[SERIES].lengths)


# -- remote trust rules: an HTTP ETag alone is not enough ---------------------------------------


def _same_size_pair(tmp_path):
    """Two pynwb files of identical size and layout, different identifiers and samples."""
    specs = []
    for seed in (1, 2):
        data = np.random.default_rng(seed).integers(-900, 900, size=(6000, 4), dtype=np.int16)
        path = write_nwb(
            tmp_path / f"v{seed}.nwb",
            [dict(name="ElectricalSeries", data=data, rate=1e3, region=range(4))],
            n_electrodes=4,
        )
        specs.append((path, data))
    assert os.path.getsize(specs[0][0]) == os.path.getsize(specs[1][0])
    return specs


def _rewrite_keeping_etag(range_server, name, replacement):
    """Rewrite a served file in place and set its mtime back: the server's
    inode-size-mtime ETag is unchanged (as after a restore that keeps timestamps)."""
    served = range_server.path(name)
    etag = range_server.etag(served)
    before = os.stat(served)
    served.write_bytes(Path(replacement).read_bytes())
    os.utime(served, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert range_server.etag(served) == etag


def test_http_object_rewritten_with_the_same_etag_is_reindexed(range_server, tmp_path):
    (v1, _), (v2, data2) = _same_size_pair(tmp_path)
    url = range_server.put("rec.nwb", v1)
    cache = tmp_path / "cache"
    first = _open(url, cache)
    assert first.encoding["xnwb_open"]["index_cached"] is False
    _rewrite_keeping_etag(range_server, "rec.nwb", v2)
    ds = _open(url, cache)
    assert ds.encoding["xnwb_open"]["index_cached"] is False  # the content fingerprint moved
    np.testing.assert_array_equal(ds.data.values, data2)
    # Unchanged since: the entry is used.
    assert _open(url, cache).encoding["xnwb_open"]["index_cached"] is True


def test_identity_of_sources(big, range_server):
    path, _ = big
    local = source_identity(ByteSource(path))
    assert local["kind"] == "local" and local["ino"] == os.stat(path).st_ino
    assert "ctime_ns" in local
    url = range_server.put("big.nwb", path)
    remote = source_identity(ByteSource(url))
    assert remote["kind"] == "remote" and remote["size"] == os.path.getsize(path)
    assert len(remote["content"]) == 64  # HTTP: a SHA-256 content fingerprint


# -- a cached HTTP reopen in one request ------------------------------------------------------


def test_cached_http_reopen_is_one_request(range_server, tmp_path):
    """Size, version and both ends of the content fingerprint come in the probe itself."""
    (v1, data1), (v2, data2) = _same_size_pair(tmp_path)
    range_server.multi_range = True  # as nginx and Apache answer several ranges
    url = range_server.put("rec.nwb", v1)
    cache = tmp_path / "cache"
    assert _open(url, cache).encoding["xnwb_open"]["index_cached"] is False
    range_server.reset()
    range_server.multi_range = True
    ds = _open(url, cache)
    assert ds.encoding["xnwb_open"]["index_cached"] is True
    assert range_server.count() == 1
    (probe,) = range_server.requests
    assert probe.status == 206 and probe.range == "bytes=0-65535,-65536"
    np.testing.assert_array_equal(ds.data.values, data1)
    # Change detection is as strong as before: rewritten in place, ETag restored.
    _rewrite_keeping_etag(range_server, "rec.nwb", v2)
    ds = _open(url, cache)
    assert ds.encoding["xnwb_open"]["index_cached"] is False
    np.testing.assert_array_equal(ds.data.values, data2)


def test_cached_http_reopen_where_the_server_answers_one_range_only(range_server, tmp_path):
    """A server that answers several ranges with the whole object (S3, GCS): its body is
    not read, and from then on the two ends are two single ranges sent together."""
    (v1, data1), _ = _same_size_pair(tmp_path)
    url = range_server.put("rec.nwb", v1)
    cache = tmp_path / "cache"
    _open(url, cache)
    multi = [r for r in range_server.requests if r.range and "," in r.range]
    assert [r.status for r in multi] == [200]  # asked once, refused, remembered
    range_server.reset()
    ds = _open(url, cache)
    assert ds.encoding["xnwb_open"]["index_cached"] is True
    assert sorted(r.range for r in range_server.requests) == ["bytes=-65536", "bytes=0-65535"]
    np.testing.assert_array_equal(ds.data.values, data1)


def test_probe_parts_are_checked(range_server, tmp_path):
    """The multipart answer is read by each part's Content-Range, and held to what was asked."""
    from xnwb.exceptions import ChunkReadError
    from xnwb.remote import _check_parts, _multipart_parts

    body = (
        b"--XX\r\nContent-Range: bytes 0-3/10\r\n\r\n--XX\r\n"
        b"--XX\r\nContent-Range: bytes 8-9/10\r\n\r\nab\r\n--XX--\r\n"
    )
    parts = _multipart_parts(body, "multipart/byteranges; boundary=XX", "u", "bytes 0-3,-2")
    assert parts == [("bytes 0-3/10", b"--XX"), ("bytes 8-9/10", b"ab")]  # boundary in the data
    assert _check_parts(parts, "0-3,-2", "u", "a") == (10, [(0, b"--XX"), (8, b"ab")])
    with pytest.raises(ChunkReadError, match="bytes 8-9 missing"):
        _check_parts(parts[:1], "0-3,-2", "u", "a")
    # Ranges merged into one part, over the gap between them (RFC 9110 allows it) ...
    assert _check_parts([("bytes 0-9/10", b"0123456789")], "0-3,-2", "u", "a")[0] == 10
    # ... but never bytes beyond what was asked.
    with pytest.raises(ChunkReadError, match="got bytes 8-9"):
        _check_parts([parts[0], ("bytes 8-9/10", b"ab")], "0-3,5-6", "u", "a")
    with pytest.raises(ChunkReadError, match="object sizes 10 and 11"):
        _check_parts([parts[0], ("bytes 9-10/11", b"ab")], "0-3,-2", "u", "a")
    with pytest.raises(ChunkReadError, match="is cut short"):
        _multipart_parts(body[:40], "multipart/byteranges; boundary=XX", "u", "a")


def test_offsets_are_stored_narrow_and_read_back_as_int64(big, tmp_path):
    """A file under 2 GiB: int32 in the entry (half the bytes to read and check), int64 out."""
    path, _ = big
    cache = tmp_path / "cache"
    _open(path, cache)
    with np.load(_entry(cache)) as npz:
        assert {npz[name].dtype for name in npz.files if name[0] in "ol"} == {np.dtype(np.int32)}
    refs = load_cached(cache, os.path.realpath(path), local_identity(path))
    fresh = xnwb.build_index(path)
    assert refs.arrays[SERIES].offsets.dtype == np.int64
    np.testing.assert_array_equal(refs.arrays[SERIES].offsets, fresh.arrays[SERIES].offsets)
    np.testing.assert_array_equal(refs.arrays[SERIES].lengths, fresh.arrays[SERIES].lengths)
    # Values that do not fit stay int64.
    from xnwb.cache import _narrow

    assert _narrow(np.array([0, 2**40])).dtype == np.int64
    assert _narrow(np.array([-1, 5])).dtype == np.int32


def test_cached_reopen_where_the_server_refuses_several_ranges_with_416(tmp_path):
    """aiohttp's static files answer a multi-range request 416: the two ends are then
    asked one by one, and the origin is remembered."""
    import xnwb.remote
    from xnwb.testing import serve_files

    (v1, data1), _ = _same_size_pair(tmp_path)
    folder = tmp_path / "www"
    folder.mkdir()
    shutil.copy(v1, folder / "rec.nwb")
    cache = tmp_path / "cache"
    with serve_files(folder) as server:
        url = f"{server.url}/rec.nwb"
        assert _open(url, cache).encoding["xnwb_open"]["index_cached"] is False
        assert xnwb.remote._origin(url) in xnwb.remote._SINGLE_RANGE_ORIGINS
        again = _open(url, cache)
        assert again.encoding["xnwb_open"]["index_cached"] is True
        assert again.encoding["xnwb_open"]["requests"] == 2  # the two ends, in flight together
        np.testing.assert_array_equal(again.data.values, data1)


def test_an_empty_2d_array_is_cached(tmp_path):
    # Its (0, 1) offset arrays made the entry's digest fail (memoryview casts refuse zero
    # sizes), and so the whole open of any file holding one, where the index is cached.
    path = tmp_path / "empty.nwb"
    with h5py.File(path, "w") as f:
        f.attrs["nwb_version"] = "2.7.0"
        g = f.create_group("acquisition/ES")
        g.attrs["neurodata_type"] = "ElectricalSeries"
        g.create_dataset("data", data=np.arange(40_000, dtype="i2").reshape(20_000, 2),
                         chunks=(2, 2))  # fmt: skip
        g.create_dataset("starting_time", data=0.0).attrs["rate"] = 1000.0
        e = f.create_group("acquisition/empty")
        e.attrs["neurodata_type"] = "TimeSeries"
        e.create_dataset("data", shape=(0, 3), dtype="f4", maxshape=(None, 3), chunks=(1, 3))
        e.create_dataset("starting_time", data=0.0).attrs["rate"] = 1.0
    for _ in range(2):  # written, then read back
        ds = xr.open_dataset(path, engine="nwbzarr", group="acquisition/ES", lazy_index=False,
                             index_cache=tmp_path / "cache")  # fmt: skip
        np.testing.assert_array_equal(ds.data.values[:3], [[0, 1], [2, 3], [4, 5]])
    assert ds.encoding["xnwb_open"]["index_cached"] is True
