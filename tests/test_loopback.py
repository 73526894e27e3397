"""The loopback servers in ``tests/loopback.py`` behave as documented."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import fsspec
import numpy as np
import pytest

from tests.loopback import (
    GCSEmulator,
    GCSRemote,
    MotoServer,
    RangeServer,
    Remote,
    _start_or_skip,
)

pytest_plugins = ["tests.loopback"]

SIZE = 1 << 20
SPANS = [(0, 1), (0, 4096), (12_345, 23_456), (SIZE // 2, SIZE // 2 + 777), (SIZE - 10, SIZE)]


def payload(size: int = SIZE, seed: int = 0) -> bytes:
    """Deterministic random bytes."""
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def raw(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request with http.client: no redirects followed, no retries, raw status."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(
            method, parts.path + (f"?{parts.query}" if parts.query else ""), None, headers or {}
        )
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def http_fs() -> fsspec.AbstractFileSystem:
    """A fresh fsspec HTTP filesystem (no instance cache)."""
    return fsspec.filesystem("http", skip_instance_cache=True)


# -- every back end ----------------------------------------------------------------------
def test_range_reads_return_the_right_bytes_and_are_counted(remote: Remote) -> None:
    data = payload()
    url = remote.upload("dir/rec.bin", data)
    fs = remote.filesystem()
    remote.server.reset()
    for start, end in SPANS:
        assert fs.cat_file(url, start=start, end=end) == data[start:end], (start, end)
    assert remote.server.count("GET", ranged=True) == len(SPANS)
    assert remote.server.bytes_sent >= sum(end - start for start, end in SPANS)
    starts, ends = zip(*SPANS, strict=True)
    assert fs.cat_ranges([url] * len(SPANS), list(starts), list(ends)) == [
        data[s:e] for s, e in SPANS
    ]
    assert remote.server.count("GET", ranged=True) == 2 * len(SPANS)
    remote.server.reset()
    assert remote.server.count() == 0 and remote.server.requests == []


def test_latency_is_added_to_every_request(remote: Remote) -> None:
    url = remote.upload("rec.bin", payload(10_000))
    fs = remote.filesystem()
    fs.cat_file(url, start=0, end=10)  # warm up connections and metadata
    remote.server.reset()
    remote.server.latency = 0.25
    t0 = time.perf_counter()
    assert fs.cat_file(url, start=100, end=200) == payload(10_000)[100:200]
    assert time.perf_counter() - t0 >= 0.25
    assert remote.server.requests and all(r.elapsed >= 0.25 for r in remote.server.requests)
    remote.server.reset()
    assert remote.server.latency == 0.0


def test_etag_changes_when_the_object_is_rewritten(remote: Remote) -> None:
    url = remote.upload("rec.bin", payload(50_000, seed=1))
    before = remote.filesystem().info(url)
    remote.upload("rec.bin", payload(50_000, seed=2))  # same size, other bytes
    after = remote.filesystem().info(url)
    key = "etag" if remote.kind == "gcs" else "ETag"
    assert before[key] and after[key] and before[key] != after[key]
    assert after["size"] == 50_000
    if remote.kind == "gcs":
        assert before["generation"] != after["generation"]
        assert after["md5Hash"]
    assert remote.filesystem().cat_file(url, start=0, end=64) == payload(50_000, seed=2)[:64]


# -- the counting proxy in front of moto and the GCS emulator ----------------------------
@pytest.mark.parametrize("remote", ["s3", "gcs"], indirect=True)
def test_proxy_faults_reach_the_client(remote: Remote) -> None:
    data = payload(100_000)
    url = remote.upload("rec.bin", data)
    fs = remote.filesystem()
    remote.server.inject("rec.bin", 404)
    with pytest.raises(FileNotFoundError):
        fs.cat_file(url, start=0, end=100)
    remote.server.clear_faults()
    remote.server.reset()
    fault = remote.server.inject("rec.bin", 500, times=1, ranged_only=True)
    assert fs.cat_file(url, start=10, end=20) == data[10:20]  # both clients retry a 500
    assert fault.fired == 1
    assert [r.status for r in remote.server.requests if r.range] == [500, 206]
    fault = remote.server.inject("rec.bin", "drop", times=1)
    assert fs.cat_file(url, start=0, end=50_000) == data[:50_000]  # and a dropped body
    assert fault.fired == 1
    dropped = [r for r in remote.server.requests if r.fault == "drop"]
    assert len(dropped) == 1 and dropped[0].bytes_sent == 25_000


def test_emulators_listen_on_loopback_only(
    moto_server: MotoServer, gcs_emulator: GCSEmulator
) -> None:
    for server in (moto_server, gcs_emulator):
        assert urlsplit(server.endpoint_url).hostname == "127.0.0.1"
        assert server.proxy is not None and urlsplit(server.proxy.url).hostname == "127.0.0.1"
        assert raw(server.proxy.url + server.health_path)[0] == 200


def test_gcs_emulator_quirk_suffix_range_is_ignored(
    gcs_remote: GCSRemote, gcs_emulator: GCSEmulator
) -> None:
    # Documented in tests/loopback.py; if this fails, the emulator was fixed: update the notes.
    data = payload(1000)
    gcs_remote.upload("q.bin", data)
    url = f"{gcs_emulator.endpoint_url}/download/storage/v1/b/{gcs_remote.bucket}/o/q.bin?alt=media"
    status, _, body = raw(url, headers={"Range": "bytes=-10"})
    assert (status, body) == (200, data)
    status, _, body = raw(url, headers={"Range": "bytes=990-"})
    assert (status, body) == (206, data[990:])


def test_missing_executable_skips_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(MotoServer, "executable", "no-such-moto-server")
    with pytest.raises(pytest.skip.Exception, match="no-such-moto-server not found"):
        _start_or_skip(MotoServer(tmp_path))


# -- the HTTP range server ---------------------------------------------------------------
def test_head_and_get_headers(range_server: RangeServer) -> None:
    url = range_server.put("a.bin", payload(5000))
    status, headers, body = raw(url, "HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == "5000"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["ETag"] == RangeServer.etag(range_server.path("a.bin"))
    assert headers["Last-Modified"].endswith("GMT")
    info = http_fs().info(url)
    assert info["size"] == 5000 and info["ETag"] == headers["ETag"]
    heads = [r for r in range_server.requests if r.method == "HEAD"]
    assert len(heads) == 2 and all(r.bytes_sent == 0 for r in heads)
    status, get_headers, _ = raw(url, headers={"Range": "bytes=0-9"})
    assert status == 206 and get_headers["ETag"] == headers["ETag"]


@pytest.mark.parametrize(
    ("header", "status", "span", "content_range"),
    [
        (None, 200, (0, 100), None),
        ("bytes=0-0", 206, (0, 1), "bytes 0-0/100"),
        ("bytes=10-19", 206, (10, 20), "bytes 10-19/100"),
        ("bytes=90-500", 206, (90, 100), "bytes 90-99/100"),
        ("bytes=95-", 206, (95, 100), "bytes 95-99/100"),
        ("bytes=-5", 206, (95, 100), "bytes 95-99/100"),
        ("bytes=-500", 206, (0, 100), "bytes 0-99/100"),
        ("bytes=100-", 416, (0, 0), "bytes */100"),
        ("bytes=-0", 416, (0, 0), "bytes */100"),
        ("bytes=0-1,5-6", 200, (0, 100), None),  # multi-range: whole body, as S3
        ("bytes=5-2", 200, (0, 100), None),  # invalid: ignored
        ("items=0-5", 200, (0, 100), None),
    ],
)
def test_range_semantics(
    range_server: RangeServer,
    header: str | None,
    status: int,
    span: tuple[int, int],
    content_range: str | None,
) -> None:
    data = payload(100)
    url = range_server.put("r.bin", data)
    got_status, headers, body = raw(url, headers={"Range": header} if header else {})
    assert got_status == status
    assert body == data[span[0] : span[1]]
    assert headers.get("Content-Range") == content_range
    assert range_server.requests[-1].status == status


def test_range_support_can_be_switched_off(range_server: RangeServer) -> None:
    data = payload(1000)
    url = range_server.put("r.bin", data)
    range_server.range_support = False
    assert raw(url, headers={"Range": "bytes=0-9"})[::2] == (200, data)
    range_server.reset()
    assert raw(url, headers={"Range": "bytes=0-9"})[::2] == (206, data[:10])


def test_missing_files_and_escapes_are_404(range_server: RangeServer, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("no")
    assert raw(range_server.url_for("nope.bin"))[0] == 404
    assert raw(range_server.url + "/%2e%2e/secret.txt")[0] == 404
    with pytest.raises(FileNotFoundError):
        http_fs().cat_file(range_server.url_for("nope.bin"))
    with pytest.raises(ValueError, match="outside"):
        range_server.path("../secret.txt")


def test_status_faults(range_server: RangeServer) -> None:
    data = payload(4000)
    url = range_server.put("f.bin", data)
    fs = http_fs()
    range_server.inject("f.bin", 404)
    with pytest.raises(FileNotFoundError):
        fs.cat_file(url, start=0, end=10)
    with pytest.raises(FileNotFoundError):
        fs.info(url)
    range_server.clear_faults()
    fault = range_server.inject("f.bin", 500, times=2)
    for _ in range(2):
        with pytest.raises(aiohttp.ClientResponseError) as err:
            fs.cat_file(url, start=0, end=10)
        assert err.value.status == 500
    assert fs.cat_file(url, start=0, end=10) == data[:10]  # 500 twice, then OK
    assert (fault.seen, fault.fired) == (3, 2)
    assert [r.fault for r in range_server.requests[-3:]] == ["500", "500", None]


def test_nth_request_and_ranged_only_faults(range_server: RangeServer) -> None:
    data = payload(4000)
    url = range_server.put("f.bin", data)
    fs = http_fs()
    fault = range_server.inject("f.bin", 503, after=1, times=1, ranged_only=True)
    assert fs.info(url)["size"] == 4000  # HEAD, no Range: untouched
    assert fs.cat_file(url, start=0, end=10) == data[:10]  # 1st ranged request passes
    with pytest.raises(aiohttp.ClientResponseError, match="503"):
        fs.cat_file(url, start=0, end=10)  # the 2nd fails
    assert fs.cat_file(url, start=0, end=10) == data[:10]
    assert (fault.seen, fault.fired) == (3, 1)


@pytest.mark.parametrize(
    ("kind", "message"),
    [("drop", "Response payload is not completed"), ("truncate", "Not enough data")],
)
def test_body_faults(range_server: RangeServer, kind: str, message: str) -> None:
    data = payload(200_000)
    url = range_server.put("f.bin", data)
    fs = http_fs()
    fault = range_server.inject("f.bin", kind, times=1)
    with pytest.raises(aiohttp.ClientPayloadError, match=message):
        fs.cat_file(url, start=1000, end=101_000)
    assert fs.cat_file(url, start=1000, end=101_000) == data[1000:101_000]
    assert fault.fired == 1
    first, second = range_server.requests[-2:]
    assert (first.status, first.fault, first.bytes_sent) == (206, kind, 50_000)
    assert (second.fault, second.bytes_sent) == (None, 100_000)


def test_dandi_redirects_and_signed_url_expiry(range_server: RangeServer) -> None:
    data = payload(10_000)
    range_server.put("rec.nwb", data)
    dandi = range_server.dandi_url("rec.nwb")
    fs = http_fs()
    assert fs.cat_file(dandi, start=100, end=200) == data[100:200]
    assert range_server.redirects == 1
    assert [(r.path.split("/")[1], r.status) for r in range_server.requests] == [
        ("dandi", 302),
        ("signed", 206),
    ]

    range_server.signed_max_uses = 1
    status, headers, _ = raw(dandi)
    assert status == 302
    signed = headers["Location"]
    assert urlsplit(signed).path.startswith("/signed/") and signed.endswith("/rec.nwb")
    assert raw(signed, headers={"Range": "bytes=0-9"})[::2] == (206, data[:10])
    status, _, body = raw(signed, headers={"Range": "bytes=0-9"})
    assert status == 403 and b"Request has expired" in body
    with pytest.raises(aiohttp.ClientResponseError) as err:
        fs.cat_file(signed, start=0, end=10)
    assert err.value.status == 403
    fresh = raw(dandi)[1]["Location"]
    assert fresh != signed
    assert raw(fresh, headers={"Range": "bytes=0-9"})[::2] == (206, data[:10])

    range_server.signed_max_uses = None
    range_server.signed_ttl = 0.2
    signed = raw(dandi)[1]["Location"]
    assert raw(signed)[0] == 200
    time.sleep(0.3)
    assert raw(signed)[0] == 403
    assert fs.cat_file(dandi, start=0, end=10) == data[:10]  # re-resolved: fresh token

    range_server.signed_ttl = None
    signed = raw(dandi)[1]["Location"]
    range_server.expire_signed_urls()
    assert raw(signed)[0] == 403
    range_server.signed_get_only = True
    assert raw(raw(dandi)[1]["Location"], "HEAD")[0] == 403
    assert range_server.redirects == range_server.count(status=302) == 7
    assert raw(range_server.dandi_url("missing.nwb"))[0] == 404


def test_concurrent_range_requests(range_server: RangeServer) -> None:
    data = payload(80_000)
    url = range_server.put("c.bin", data)
    range_server.latency = 0.3

    async def fetch_all() -> list[tuple[int, bytes]]:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> tuple[int, bytes]:
                rng = {"Range": f"bytes={i * 10_000}-{i * 10_000 + 9_999}"}
                async with session.get(url, headers=rng) as resp:
                    return resp.status, await resp.read()

            return await asyncio.gather(*(one(i) for i in range(8)))

    results = asyncio.run(fetch_all())
    assert results == [(206, data[i * 10_000 : (i + 1) * 10_000]) for i in range(8)]
    assert range_server.max_in_flight == 8
    range_server.reset()
    starts = list(range(0, 80_000, 10_000))
    chunks = http_fs().cat_ranges([url] * 8, starts, [s + 5000 for s in starts])
    assert chunks == [data[s : s + 5000] for s in starts]
    assert range_server.max_in_flight >= 2  # fsspec issues them in parallel
    assert range_server.in_flight == 0


def test_servers_stop_cleanly(tmp_path: Path) -> None:
    server = RangeServer(tmp_path).start()
    thread = server._thread
    url = server.put("x.bin", b"abc")
    assert raw(url)[2] == b"abc"
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)
    assert thread not in threading.enumerate()
