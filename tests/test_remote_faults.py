"""Remote reads against loopback servers that stall, shift, mangle or replace what they serve.

:class:`FaultyServer` is the project's :class:`~tests.loopback.RangeServer` with extra
misbehaviours. Every stall is bounded (a few seconds at most, cut short when the test
stops the server) and the client is given short timeouts through ``storage_options``, so
each test finishes in seconds.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import re

import numpy as np
import pytest
import xarray as xr
from multidict import CIMultiDict

import xnwb
import xnwb.remote
from tests.conftest import counts
from tests.loopback import RangeServer, _read_range, parse_range
from xnwb.cache import CONTENT_FINGERPRINT_BYTES
from xnwb.exceptions import (
    ChunkDecodeError,
    ChunkReadError,
    RemoteTimeoutError,
    SourceChangedError,
)
from xnwb.remote import RemoteObject

FAST = {"connect_timeout": 0.5, "read_timeout": 0.5, "retries": 1, "retry_wait": 0.01}
STALL = 4.0  # longer than every timeout used here; the server is stopped after each test


_HEAD = f"bytes=0-{CONTENT_FINGERPRINT_BYTES - 1}"
_TAIL = f"bytes=-{CONTENT_FINGERPRINT_BYTES}"


class FaultyServer(RangeServer):
    """A range server with switchable misbehaviour on data reads (not on the probe).

    ``mode``: ``None``, ``"stall_head"`` (no answer), ``"stall_body"`` (half the body,
    then silence), ``"shift_range"`` (the bytes two further on, labelled so),
    ``"shift_body"`` (the bytes two further on under the Content-Range asked for),
    ``"wrong_total"``, ``"probe_whole"`` (answer the probe with the whole file, as
    RangeHTTPServer does ``bytes=0-0``), ``"probe_mangled"`` (bytes 0-99 to any probe).
    ``if_match``: answer 412 when ``If-Match`` does not name the current ETag.
    ``validators``: send ETag and Last-Modified. ``retry_after``: ``(times, seconds)`` of
    503 + Retry-After.
    ``fail_at``: answer 500 to every data read whose range holds this byte.
    """

    def __init__(self, root):
        super().__init__(root)
        self.mode: str | None = None
        self.if_match = False
        self.validators = True
        self.retry_after: tuple[int, str] | None = None
        self.fail_at: int | None = None
        self.constant_etag: str | None = None

    async def _reply(self, request, ex, status, headers, body, fault=None, head_length=None):
        if not self.validators:
            headers = CIMultiDict(
                (k, v) for k, v in headers.items() if k not in ("ETag", "Last-Modified")
            )
        elif self.constant_etag is not None and "ETag" in headers:
            headers = CIMultiDict(headers)
            headers["ETag"] = self.constant_etag
        return await super()._reply(request, ex, status, headers, body, fault, head_length)

    async def _serve(self, request, ex):
        header = request.headers.get("Range")
        file = self._lookup(request.path.lstrip("/"))
        if file is None or header is None:
            return await super()._serve(request, ex)
        size = file.stat().st_size
        # The one-byte probe, or the probe that brings both ends for the content
        # fingerprint of a cached open (one multi-range request, or the two ends apart).
        probe = header in ("bytes=0-0", _HEAD, _TAIL) or "," in header
        mode = self.mode
        if probe and mode == "probe_whole":
            return await self._reply(request, ex, 200, CIMultiDict(), file.read_bytes())
        if probe and mode == "probe_mangled":
            body = _read_range(file, 0, 100)
            headers = CIMultiDict({"Content-Range": f"bytes 0-99/{size}"})
            return await self._reply(request, ex, 206, headers, body)
        if probe:
            return await super()._serve(request, ex)
        if self.retry_after is not None and self.retry_after[0] > 0:
            self.retry_after = (self.retry_after[0] - 1, self.retry_after[1])
            headers = CIMultiDict({"Retry-After": self.retry_after[1]})
            return await self._reply(request, ex, 503, headers, b"")
        if self.if_match and request.headers.get("If-Match") not in (None, self.etag(file)):
            return await self._reply(request, ex, 412, CIMultiDict(), b"")
        start, stop = parse_range(header, size)
        if self.fail_at is not None and start <= self.fail_at < stop:
            return await self._fail(request, ex, 500, "injected fault at a byte")
        if mode == "stall_head":
            await asyncio.sleep(STALL)
        content_range = f"bytes {start}-{stop - 1}/{size}"
        body = _read_range(file, start, stop - start)
        if mode in ("shift_range", "shift_body"):
            body = _read_range(file, start + 2, stop - start)
            if mode == "shift_range":
                content_range = f"bytes {start + 2}-{stop + 1}/{size}"
        if mode == "wrong_total":
            content_range = f"bytes {start}-{stop - 1}/{size + 10}"
        modified = email.utils.formatdate(file.stat().st_mtime, usegmt=True)
        headers = CIMultiDict(
            {"Content-Range": content_range, "ETag": self.etag(file), "Last-Modified": modified}
        )
        if mode == "stall_body":
            from aiohttp import web

            ex.status = 206
            resp = web.StreamResponse(status=206, headers=headers)
            resp.content_length = len(body)
            self._record(request, ex)
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            await asyncio.sleep(STALL)
            await resp.write(body[len(body) // 2 :])
            return resp
        return await self._reply(request, ex, 206, headers, body)


@pytest.fixture
def server(tmp_path):
    with FaultyServer(tmp_path / "www") as srv:
        yield srv


@pytest.fixture
def recording(nwb_writer):
    data = counts(12_000, 8)
    path = nwb_writer(
        [
            dict(
                name="ElectricalSeries",
                data=data,
                rate=1000.0,
                region=range(8),
                chunks=(1000, 4),
                compression="gzip",
            )
        ]
    )
    return path, data


@pytest.fixture
def plain(nwb_writer):
    """Unfiltered contiguous data (its bytes are read at fixed offsets)."""
    data = counts(12_000, 8, seed=3)
    path = nwb_writer(
        [dict(name="ElectricalSeries", data=data, rate=1000.0, region=range(8))], name="plain.nwb"
    )
    return path, data


def _open(url, tmp_path, **options):
    return xr.open_dataset(
        url,
        engine="nwbzarr",
        storage_options={**FAST, **options},
        index_cache=tmp_path / "cache",
        mask_and_scale=False,
    )


URL_AND_RANGE = r"bytes \d+-\d+ of http://127\.0\.0\.1:\d+/rec\.nwb"


# -- hangs --------------------------------------------------------------------------------
def test_stall_before_answering_times_out_naming_url_and_range(server, recording, tmp_path):
    path, _ = recording
    ds = _open(server.put("rec.nwb", path), tmp_path)
    server.mode = "stall_head"
    with pytest.raises(RemoteTimeoutError, match=URL_AND_RANGE) as info:
        ds.data[:2000].values
    assert "2 attempts" in str(info.value) and "read_timeout" in str(info.value)


def test_stall_mid_body_times_out(server, recording, tmp_path):
    path, _ = recording
    ds = _open(server.put("rec.nwb", path), tmp_path)
    server.mode = "stall_body"
    with pytest.raises(RemoteTimeoutError, match=URL_AND_RANGE):
        ds.data[:2000].values


def test_stall_on_every_request_at_open(server, recording, tmp_path):
    path, _ = recording
    url = server.put("rec.nwb", path)
    server.latency = STALL
    with pytest.raises(RemoteTimeoutError, match=r"resolving http://127\.0\.0\.1:\d+/rec\.nwb"):
        _open(url, tmp_path)


def test_default_policy_has_timeouts_and_a_backoff_spanning_seconds():
    remote = RemoteObject("http://127.0.0.1:9/x.nwb")
    assert 0 < remote.connect_timeout <= 30 and 0 < remote.read_timeout <= 60
    waits = [remote._wait(n, None) for n in range(remote.retries)]
    assert sum(waits) >= 3.0  # the old policy spent all attempts within 0.8 s
    assert remote._wait(0, 12.0) == 12.0  # Retry-After is honoured ...
    assert remote._wait(0, 3600.0) == remote.max_wait  # ... up to a bound


def test_timeouts_come_from_storage_options_and_never_reach_fsspec():
    remote = RemoteObject("http://127.0.0.1:9/x.nwb", {"read_timeout": 2, "headers": {"a": "b"}})
    assert remote.read_timeout == 2.0
    assert remote.storage_options == {"headers": {"a": "b"}}
    with pytest.raises(ValueError, match="read_timeout"):
        RemoteObject("http://127.0.0.1:9/x.nwb", {"read_timeout": "soon"})


def test_retry_after_is_honoured(server, recording, tmp_path, monkeypatch):
    path, data = recording
    ds = _open(server.put("rec.nwb", path), tmp_path, retries=3)
    waits = []
    real_sleep = asyncio.sleep

    async def record(seconds):
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(xnwb.remote, "_sleep", record)
    server.retry_after = (2, "7")
    np.testing.assert_array_equal(ds.data[:1000].values, data[:1000])
    assert waits == [7.0, 7.0]
    server.retry_after = (1, email.utils.formatdate(usegmt=True))  # an HTTP date: now
    waits.clear()
    np.testing.assert_array_equal(ds.data[3000:4000].values, data[3000:4000])
    assert len(waits) == 1 and 0.0 <= waits[0] <= 1.0


# -- wrong answers ------------------------------------------------------------------------
def test_content_range_not_the_one_asked_is_an_error(server, plain, tmp_path):
    path, _ = plain
    ds = _open(server.put("rec.nwb", path), tmp_path)
    server.mode = "shift_range"
    with pytest.raises(ChunkReadError, match=r"mangles Range: asked bytes \d+-\d+, got"):
        ds.data[:2000].values


def test_content_range_total_other_than_the_size_is_a_change(server, plain, tmp_path):
    path, _ = plain
    ds = _open(server.put("rec.nwb", path), tmp_path)
    server.mode = "wrong_total"
    with pytest.raises(SourceChangedError, match="Content-Range"):
        ds.data[:2000].values


def test_shifted_body_under_a_correct_range_fails_decoding_when_filtered(
    server, recording, tmp_path
):
    """Undetectable from the headers; compressed chunks then fail to decode (documented)."""
    path, _ = recording
    ds = _open(server.put("rec.nwb", path), tmp_path)
    server.mode = "shift_body"
    with pytest.raises(ChunkDecodeError):
        ds.data[:2000].values


def test_probe_answered_with_the_whole_file(server, recording, tmp_path):
    path, _ = recording
    url = server.put("rec.nwb", path)
    server.mode = "probe_whole"
    with pytest.raises(ChunkReadError, match="server ignores Range"):
        _open(url, tmp_path)  # the probe for both ends (a cached open)
    with pytest.raises(ChunkReadError, match=r"ignores Range .*'Range: bytes=0-0'"):
        xr.open_dataset(url, engine="nwbzarr", storage_options=FAST, index_cache=False)


def test_probe_answered_with_other_bytes(server, recording, tmp_path):
    path, _ = recording
    url = server.put("rec.nwb", path)
    server.mode = "probe_mangled"
    with pytest.raises(ChunkReadError, match=r"mangles Range: asked bytes 0-65535,-65536"):
        _open(url, tmp_path)
    with pytest.raises(ChunkReadError, match=r"mangles Range: asked bytes 0-0"):
        xr.open_dataset(url, engine="nwbzarr", storage_options=FAST, index_cache=False)


def test_probe_truncated_once_is_retried_and_always_is_wrapped(server, recording, tmp_path):
    path, data = recording
    url = server.put("rec.nwb", path)
    fault = server.inject("/rec.nwb", "truncate", times=1, ranged_only=True)
    ds = _open(url, tmp_path)
    assert fault.fired == 1
    np.testing.assert_array_equal(ds.data[:100].values, data[:100])
    server.clear_faults()
    server.inject("/rec.nwb", "truncate", ranged_only=True)
    with pytest.raises(ChunkReadError, match=r"resolving http://127\.0\.0\.1:\d+/rec\.nwb"):
        _open(url, tmp_path / "other")


def test_failed_read_names_the_failing_chunk(server, recording, tmp_path):
    path, _ = recording
    url = server.put("rec.nwb", path)
    ds = _open(url, tmp_path)
    refs = xnwb.build_index(path)
    arr = refs.arrays["acquisition/ElectricalSeries/data"]
    server.fail_at = int(arr.offsets[9, 1]) + 1  # inside chunk (9, 1)
    with pytest.raises(ChunkReadError) as info:
        ds.data.values
    named = re.findall(r"\((\d+), (\d+)\)", str(info.value).split(" of ")[0])
    assert (("9", "1") in named) and ("0", "0") not in named, str(info.value)


def test_failed_index_span_of_a_long_region_names_the_array_and_its_chunks(
    server, nwb_writer, tmp_path
):
    # Narrow chunks: a dask task of 80 chunk rows is a long region, whose B-tree leaves
    # a cold (lazy) index fetches as the byte span holding them, before any chunk is known.
    data = counts(200_000, 8, seed=5)
    path = nwb_writer(
        [dict(name="ElectricalSeries", data=data, rate=1000.0, region=range(8), chunks=(500, 1))]
    )
    url = server.put("rec.nwb", path)
    arr = xnwb.build_index(path).arrays["acquisition/ElectricalSeries/data"]
    ds = xr.open_dataset(
        url,
        engine="nwbzarr",
        storage_options=FAST,
        index_cache=False,
        mask_and_scale=False,
        chunks={"time": 40_000, "channel": -1},
    )
    server.fail_at = int(arr.offsets[150, 3]) + 1  # inside chunk (150, 3): task 1's span
    with pytest.raises(ChunkReadError) as info:
        ds.data[40_000:80_000].values
    message = str(info.value)
    assert "'/acquisition/ElectricalSeries/data'" in message, message
    assert "chunks (80-159, 0-7)" in message, message
    server.fail_at = None
    np.testing.assert_array_equal(ds.data[40_000:80_000].values, data[40_000:80_000])


# -- the object replaced after open ---------------------------------------------------------
def test_replaced_object_with_if_match_enforced_gives_412(server, recording, plain, tmp_path):
    path, _ = recording
    url = server.put("rec.nwb", path)
    ds = _open(url, tmp_path)
    server.if_match = True
    server.put("rec.nwb", plain[0])
    with pytest.raises(SourceChangedError, match="412"):
        ds.data[:1000].values


def test_replaced_object_new_etag_without_if_match_support(server, recording, tmp_path):
    path, data = recording
    url = server.put("rec.nwb", path)
    ds = _open(url, tmp_path)
    np.testing.assert_array_equal(ds.data[:1000].values, data[:1000])
    other = tmp_path / "same-bytes-new-version.nwb"
    other.write_bytes(open(path, "rb").read())
    server.put("rec.nwb", other)  # a new version (new ETag), even with identical bytes
    with pytest.raises(SourceChangedError, match="ETag"):
        ds.data[2000:3000].values


def test_a_constant_etag_does_not_hide_a_new_last_modified(server, recording, tmp_path):
    # Some servers send one ETag for every version of an object; its Last-Modified still
    # moves. Both validators count, for an open Dataset and for the cached index.
    path, data = recording
    server.constant_etag = '"same-for-every-version"'
    url = server.put("rec.nwb", path)
    ds = _open(url, tmp_path)
    np.testing.assert_array_equal(ds.data[:1000].values, data[:1000])
    later = tmp_path / "same-size-later.nwb"
    later.write_bytes(open(path, "rb").read())
    server.put("rec.nwb", later)
    served = server.path("rec.nwb")
    bumped = served.stat().st_mtime_ns + 5_000_000_000  # Last-Modified counts whole seconds
    os.utime(served, ns=(bumped, bumped))
    with pytest.raises(SourceChangedError, match="Last-Modified"):
        ds.data[2000:3000].values
    again = _open(url, tmp_path)
    assert again.encoding["xnwb_open"]["index_cached"] is False  # the entry was another version's
    np.testing.assert_array_equal(again.data[:1000].values, data[:1000])


def test_replaced_object_without_validators_is_caught_by_its_size(
    server, recording, plain, tmp_path
):
    path, _ = recording
    server.validators = False
    url = server.put("rec.nwb", path)
    ds = _open(url, tmp_path)
    server.put("rec.nwb", plain[0])  # another size
    with pytest.raises(SourceChangedError, match="size"):
        ds.data[:1000].values


def test_stale_cached_index_of_a_same_size_object_is_not_used(server, plain, nwb_writer, tmp_path):
    """A saved index of a URL records its ETag; opening it against a new version fails."""
    path, _ = plain
    url = server.put("rec.nwb", path)
    index_path = str(tmp_path / "rec.json")
    xnwb.build_index(url, FAST).to_json(index_path)
    regenerated = nwb_writer(
        [
            dict(
                name="ElectricalSeries",
                data=counts(12_000, 8, seed=9),
                rate=1000.0,
                region=range(8),
            )
        ],
        name="regen.nwb",
    )
    server.put("rec.nwb", regenerated)
    with pytest.raises(SourceChangedError, match="since its index was built"):
        xr.open_dataset(url, engine="nwbzarr", index=index_path, storage_options=FAST)
