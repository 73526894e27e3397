"""An s3:// or gs:// object replaced under an open Dataset is an error, never the new bytes.

Every ranged read is conditional on the version pinned at open (S3: ``IfMatch`` with the
ETag; GCS: ``ifGenerationMatch`` with the generation) and each answer's version and
``Content-Range`` total are compared with the pinned ones. The data here are contiguous and
unfiltered, so a replacement read at the old offsets decodes without a complaint: only the
version check can tell.

moto honours ``IfMatch`` on GetObject. gcp-storage-emulator ignores ``ifGenerationMatch``
(and ``generation``) on downloads and sends no ``x-goog-generation``; the GCS tests that
need either put :class:`GCSLikeProxy` in front of it, which does what real GCS does from
the emulator's own object metadata. What the bare emulator allows is tested against it.
"""

from __future__ import annotations

import json
import pickle
from urllib.parse import quote

import numpy as np
import pytest
import xarray as xr
from aiohttp import web
from multidict import CIMultiDict

from tests.conftest import counts
from tests.loopback import CountingProxy, GCSRemote, S3Remote
from xnwb.exceptions import SourceChangedError
from xnwb.source import ByteSource

_GENERATION = web.RequestKey("generation", str)


class GCSLikeProxy(CountingProxy):
    """A counting proxy in front of the GCS emulator that adds what real GCS does on downloads.

    ``enforce``: answer 412 (GCS's JSON error) when ``ifGenerationMatch`` is not the
    object's current generation. ``send_generation``: add ``x-goog-generation``. The
    generation is looked up in the emulator's object metadata (not counted).
    """

    def __init__(self, upstream: str, *, enforce: bool = True, send_generation: bool = True):
        super().__init__(upstream)
        self.enforce = enforce
        self.send_generation = send_generation

    async def _serve(self, request, ex):
        prefix = "/download/storage/v1/b/"
        if request.method == "GET" and request.path.startswith(prefix) and "/o/" in request.path:
            bucket, name = request.path[len(prefix) :].split("/o/", 1)
            meta = f"{self.upstream}/storage/v1/b/{bucket}/o/{quote(name, safe='')}"
            async with self._session.get(meta) as reply:
                generation = (await reply.json())["generation"] if reply.status == 200 else None
            wanted = request.query.get("ifGenerationMatch")
            if self.enforce and generation and wanted not in (None, generation):
                error = {
                    "code": 412,
                    "message": "At least one of the pre-conditions you specified did not hold.",
                }
                body = json.dumps({"error": error}).encode()
                headers = CIMultiDict({"Content-Type": "application/json"})
                return await self._reply(request, ex, 412, headers, body)
            request[_GENERATION] = generation
        return await super()._serve(request, ex)

    async def _reply(self, request, ex, status, headers, body, fault=None, head_length=None):
        if self.send_generation and request.get(_GENERATION) and status < 300:
            headers = CIMultiDict(headers)
            headers["x-goog-generation"] = request[_GENERATION]
        return await super()._reply(request, ex, status, headers, body, fault, head_length)


class NoIfMatchProxy(CountingProxy):
    """An S3-compatible store that ignores ``If-Match`` (drops it before moto sees it)."""

    async def _serve(self, request, ex):
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k != "If-Match")
        return await super()._serve(request.clone(headers=headers), ex)


@pytest.fixture
def pair(nwb_writer):
    """Two NWB files of the same size, contiguous and unfiltered, with other samples."""
    first, second = counts(20_000, 4, seed=0), counts(20_000, 4, seed=1)
    spec = dict(name="ElectricalSeries", rate=1000.0, region=range(4))
    a = nwb_writer([dict(spec, data=first)], name="rec.nwb")
    b = nwb_writer([dict(spec, data=second)], name="new.nwb")
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert len(fa.read()) == len(fb.read())
    return (a, first), (b, second)


@pytest.fixture
def gcs_like(gcs_remote, gcs_emulator, monkeypatch, request):
    """``gcs_remote`` read through a :class:`GCSLikeProxy` (``enforce``/``send_generation``
    from ``request.param``)."""
    enforce, send_generation = getattr(request, "param", (True, True))
    proxy = GCSLikeProxy(
        gcs_emulator.endpoint_url, enforce=enforce, send_generation=send_generation
    ).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    options = {"token": "anon", "endpoint_url": proxy.url}
    try:
        yield GCSRemote("gcs", proxy, options, gcs_remote.bucket, gcs_remote.direct)
    finally:
        proxy.stop()


@pytest.fixture
def s3_no_if_match(s3_remote, moto_server):
    proxy = NoIfMatchProxy(moto_server.endpoint_url).start()
    options = {**s3_remote.storage_options, "endpoint_url": proxy.url}
    try:
        yield S3Remote("s3", proxy, options, s3_remote.bucket, s3_remote.direct)
    finally:
        proxy.stop()


def _open(url, remote, tmp_path):
    return xr.open_dataset(
        url,
        engine="nwbzarr",
        storage_options=remote.storage_options,
        index_cache=tmp_path / "cache",
        mask_and_scale=False,
    )


def _replace_after_a_read(remote, pair, tmp_path):
    (path, data), (new_path, _) = pair
    url = remote.upload("rec.nwb", path)
    ds = _open(url, remote, tmp_path)
    np.testing.assert_array_equal(ds.data[:1000].values, data[:1000])
    remote.upload("rec.nwb", new_path)
    return ds


def test_s3_object_replaced_after_a_read_gives_412(s3_remote, pair, tmp_path):
    """moto refuses the conditional GET; the old code read the new file at the old offsets."""
    ds = _replace_after_a_read(s3_remote, pair, tmp_path)
    with pytest.raises(SourceChangedError, match=r"'s3://.*rec\.nwb' changed .*412"):
        ds.data[5000:6000].values


def test_s3_store_ignoring_if_match_is_caught_by_the_answers_etag(s3_no_if_match, pair, tmp_path):
    ds = _replace_after_a_read(s3_no_if_match, pair, tmp_path)
    with pytest.raises(SourceChangedError, match="ETag"):
        ds.data[5000:6000].values


def test_gcs_object_replaced_after_a_read_gives_412(gcs_like, pair, tmp_path):
    ds = _replace_after_a_read(gcs_like, pair, tmp_path)
    with pytest.raises(SourceChangedError, match=r"'gs://.*rec\.nwb' changed .*412"):
        ds.data[5000:6000].values


@pytest.mark.parametrize("gcs_like", [(False, True)], indirect=True)
def test_gcs_answer_with_another_generation(gcs_like, pair, tmp_path):
    ds = _replace_after_a_read(gcs_like, pair, tmp_path)
    with pytest.raises(SourceChangedError, match="generation"):
        ds.data[5000:6000].values


def test_gcs_reads_ask_for_the_pinned_generation(gcs_remote, pair, tmp_path):
    """The bare emulator ignores the condition, but every data read carries it."""
    (path, data), _ = pair
    url = gcs_remote.upload("rec.nwb", path)
    generation = gcs_remote.direct.info(url)["generation"]
    ds = _open(url, gcs_remote, tmp_path)
    gcs_remote.server.reset()
    np.testing.assert_array_equal(ds.data[2000:9000].values, data[2000:9000])
    reads = [r for r in gcs_remote.server.requests if r.range is not None]
    assert reads and all(f"ifGenerationMatch={generation}" in r.query for r in reads)


@pytest.mark.parametrize(
    ("remote", "why"),
    [("s3", "412"), ("gcs", r"size \d+ -> \d+ bytes, from Content-Range")],
    indirect=["remote"],
)
def test_replaced_by_another_size(remote, why, pair, nwb_writer, tmp_path):
    """Where the condition is ignored (the bare GCS emulator), each answer's total size is
    still compared with the pinned size."""
    (path, data), _ = pair
    url = remote.upload("rec.nwb", path)
    ds = _open(url, remote, tmp_path)
    np.testing.assert_array_equal(ds.data[:1000].values, data[:1000])
    longer = counts(30_000, 4, seed=2)
    spec = dict(name="ElectricalSeries", rate=1000.0, region=range(4))
    remote.upload("rec.nwb", nwb_writer([dict(spec, data=longer)], name="big.nwb"))
    with pytest.raises(SourceChangedError, match=why):
        ds.data[5000:6000].values


@pytest.mark.parametrize("kind", ["s3", "gcs_like"])
def test_unchanged_object_reads_one_request_per_window(kind, pair, tmp_path, request):
    """The checks ride on the data reads: no extra request per range or window."""
    remote = request.getfixturevalue("s3_remote" if kind == "s3" else "gcs_like")
    (path, data), _ = pair
    url = remote.upload("rec.nwb", path)
    ds = _open(url, remote, tmp_path)
    server = remote.server
    server.reset()
    np.testing.assert_array_equal(ds.data[:1000].values, data[:1000])
    first = server.count()
    assert first <= 2  # the process's one version check, then the data
    for start in (3000, 9000, 15000):
        server.reset()
        np.testing.assert_array_equal(
            ds.data[start : start + 2000, 1:3].values, data[start : start + 2000, 1:3]
        )
        assert server.count() == server.count(ranged=True) == 1
    np.testing.assert_array_equal(ds.data.values, data)


@pytest.mark.parametrize("kind", ["s3", "gcs_like"])
def test_a_worker_reads_conditionally_without_a_version_request(kind, pair, request):
    """A pickled source (as a dask worker gets it) reads with the pinned condition from its
    first request on: one request per read, and a replacement is refused by that request."""
    remote = request.getfixturevalue("s3_remote" if kind == "s3" else "gcs_like")
    (path, _), (new_path, _) = pair
    url = remote.upload("rec.nwb", path)
    source = ByteSource(url, remote.storage_options)
    source.pin()
    shipped = pickle.dumps(source)
    with open(path, "rb") as fh:
        head = fh.read(4096)
    remote.server.reset()
    assert bytes(pickle.loads(shipped).fetch([1000], [64])[0]) == head[1000:1064]
    assert remote.server.count() == 1
    remote.upload("rec.nwb", new_path)
    remote.server.reset()
    with pytest.raises(SourceChangedError, match="412"):
        pickle.loads(shipped).fetch([1000], [64])
    assert remote.server.count() == 1
