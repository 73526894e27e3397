"""Remote sources on real loopback servers: HTTP (aiohttp), S3 (moto), GCS (emulator)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

import xnwb
from tests.conftest import counts, kerchunk_references
from xnwb.exceptions import ChunkReadError, UnsafeReferenceError


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
                conversion=1e-6,
                chunks=(1000, 4),
                compression="gzip",
                shuffle=True,
            ),
            dict(
                name="LFP",
                data=data[::4].astype("f4"),
                rate=250.0,
                region=range(8),
                module="ecephys",
                compression="gzip",
            ),
        ]
    )
    return path, data


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "index-cache"


def _open(url, remote, cache, **kwargs):
    return xr.open_dataset(
        url, engine="nwbzarr", storage_options=remote.storage_options, index_cache=cache, **kwargs
    )


def test_remote_equals_local_and_cached_open_reads_no_metadata(remote, recording, cache):
    path, data = recording
    url = remote.upload("rec.nwb", path)
    local = xr.open_dataset(path, engine="nwbzarr")

    remote.server.reset()
    ds = _open(url, remote, cache)
    first = remote.server.count()
    assert ds.encoding["xnwb_open"]["index_cached"] is False
    assert first == ds.encoding["xnwb_open"]["requests"] > 0
    xr.testing.assert_identical(ds.data, local.data)
    np.testing.assert_array_equal(ds.channel.values, local.channel.values)
    lfp = _open(url, remote, cache, group="processing/ecephys/LFP/LFP")
    xr.testing.assert_identical(
        lfp.data, xr.open_dataset(path, engine="nwbzarr", group="processing/ecephys/LFP/LFP").data
    )

    remote.server.reset()
    again = _open(url, remote, cache)
    assert again.encoding["xnwb_open"]["index_cached"] is True
    # The version check and, over HTTP, the content fingerprint (first and last 64 KiB)
    # in the same round trip: one request where the server answers several ranges at
    # once (tests/test_cache.py), two in flight together here (the loopback server, as
    # S3 does, answers them with the whole object; xnwb remembered that at the first
    # open). Nothing of the HDF5 metadata.
    assert remote.server.count() <= 2
    np.testing.assert_array_equal(again.data[3000:3100].values, data[3000:3100] * 1e-6)

    listing = xnwb.list_series(url, storage_options=remote.storage_options, index_cache=cache)
    assert listing.attrs["open"]["index_cached"] is True
    assert list(listing.index) == list(xnwb.list_series(path).index)
    tree = xr.open_datatree(
        url, engine="nwbzarr", storage_options=remote.storage_options, index_cache=cache
    )
    assert "/processing/ecephys/LFP/LFP" in tree.groups


def test_changed_object_is_reindexed(remote, recording, nwb_writer, cache):
    path, _ = recording
    url = remote.upload("rec.nwb", path)
    _open(url, remote, cache).data.values
    other = counts(5000, 8, seed=9)
    new_path = nwb_writer(
        [
            dict(
                name="ElectricalSeries",
                data=other,
                rate=1000.0,
                region=range(8),
                chunks=(700, 8),
                compression="gzip",
            )
        ],
        name="other.nwb",
    )
    remote.upload("rec.nwb", new_path)
    ds = _open(url, remote, cache, mask_and_scale=False)
    assert ds.encoding["xnwb_open"]["index_cached"] is False
    np.testing.assert_array_equal(ds.data.values, other)


def test_window_costs_about_one_round_trip(http_remote, recording, cache):
    path, data = recording
    url = http_remote.upload("rec.nwb", path)
    ds = _open(url, http_remote, cache, mask_and_scale=False)
    server = http_remote.server
    server.reset()
    server.latency = 0.05
    window = ds.data.isel(time=slice(2500, 6500), channel=slice(0, 3)).values  # 5 chunks
    np.testing.assert_array_equal(window, data[2500:6500, :3])
    assert server.count() <= 2
    assert server.max_in_flight >= 1


@pytest.mark.parametrize("fault", [500, 503, "drop", "truncate"])
def test_transient_faults_are_retried(http_remote, recording, cache, fault):
    path, data = recording
    url = http_remote.upload("rec.nwb", path)
    ds = _open(url, http_remote, cache, mask_and_scale=False)
    record = http_remote.server.inject("rec.nwb", fault, times=2, ranged_only=True)
    np.testing.assert_array_equal(ds.data[5000:7000].values, data[5000:7000])
    assert record.fired == 2


def test_persistent_fault_names_chunk_url_and_range(http_remote, recording, cache):
    path, _ = recording
    url = http_remote.upload("rec.nwb", path)
    ds = _open(url, http_remote, cache, mask_and_scale=False)
    http_remote.server.inject("rec.nwb", 500, ranged_only=True)
    with pytest.raises(ChunkReadError, match=r"bytes \d+-\d+ of http://127\.0\.0\.1:\d+/rec\.nwb"):
        ds.data[5000:7000].values
    http_remote.server.clear_faults()
    http_remote.server.inject("rec.nwb", 404, ranged_only=True)
    with pytest.raises(ChunkReadError, match="not found"):
        ds.data[0:100].values


def test_server_ignoring_range_is_an_error_not_wrong_bytes(http_remote, recording, cache):
    path, _ = recording
    url = http_remote.upload("rec.nwb", path)
    ds = _open(url, http_remote, cache, mask_and_scale=False)
    http_remote.server.range_support = False
    with pytest.raises(ChunkReadError, match="ignore"):
        ds.data[5000:7000].values


def test_dandi_redirects_and_expired_signatures(http_remote, recording, cache):
    path, data = recording
    server = http_remote.server
    server.put("rec.nwb", path)
    url = server.dandi_url("rec.nwb")
    ds = _open(url, http_remote, cache, mask_and_scale=False)
    server.reset()
    np.testing.assert_array_equal(ds.data[0:3000].values, data[:3000])
    data_reads = [r.path for r in server.requests if r.range and r.status == 206]
    assert data_reads and all(p.startswith("/signed/") for p in data_reads)
    assert server.count(path="/dandi/rec.nwb") <= 1  # at most one re-resolve
    server.expire_signed_urls()
    server.reset()
    np.testing.assert_array_equal(ds.data[6000:9000].values, data[6000:9000])
    assert server.redirects >= 1  # resolved again
    server.reset()
    cached = _open(url, http_remote, cache)  # the cache is keyed by the URL the user gave
    assert cached.encoding["xnwb_open"]["index_cached"] is True


# -- reference files -------------------------------------------------------------------
def test_reference_json_as_source_or_index(http_remote, recording, tmp_path):
    path, data = recording
    url = http_remote.upload("rec.nwb", path)
    refs = xnwb.build_index(url)
    assert refs.info["requests"] > 0
    local_json = tmp_path / "rec.json"
    refs.to_json(str(local_json))
    ds = xr.open_dataset(url, engine="nwbzarr", index=str(local_json), mask_and_scale=False)
    np.testing.assert_array_equal(ds.data.values, data)
    # Served beside the data, the JSON can be the source itself.
    json_url = http_remote.upload("rec.json", local_json)
    beside = xr.open_dataset(json_url, engine="nwbzarr", mask_and_scale=False)
    np.testing.assert_array_equal(beside.data[:50].values, data[:50])
    # kerchunk's own references work too.
    pytest.importorskip("kerchunk.hdf")

    kc = tmp_path / "kc.json"
    with open(path, "rb") as fh:  # a file object: kerchunk then names `url` in its refs
        kc.write_text(json.dumps(kerchunk_references(fh, url, inline_threshold=300)))
    ds_kc = xr.open_dataset(url, engine="nwbzarr", index=str(kc), mask_and_scale=False)
    np.testing.assert_array_equal(ds_kc.data.values, data)


def _hostile(refs_doc: dict, key_filter, new_value) -> dict:
    doc = json.loads(json.dumps(refs_doc))
    for key, value in doc["refs"].items():
        if isinstance(value, list) and key_filter(key):
            doc["refs"][key] = new_value(value)
    return doc


@pytest.mark.parametrize(
    ("name", "mutate", "message"),
    [
        ("file", lambda v: ["file:///etc/passwd", v[1], v[2]], "outside the opened source"),
        ("host", lambda v: ["http://203.0.113.9/rec.nwb", v[1], v[2]], "outside the opened source"),
        ("dotdot", lambda v: [v[0].replace("rec.nwb", "../secret/rec.nwb"), v[1], v[2]], r"'\.\.'"),
        ("past-end", lambda v: [v[0], v[1] + 10**9, v[2]], "past the end"),
        ("whole-file", lambda v: [v[0]], "whole-file"),
    ],
)
def test_hostile_references_are_refused(http_remote, recording, tmp_path, name, mutate, message):
    path, _ = recording
    url = http_remote.upload("rec.nwb", path)
    doc = json.loads(xnwb.build_index(url).to_json())
    bad = _hostile(doc, lambda k: k.startswith("acquisition/ElectricalSeries/data/"), mutate)
    target = tmp_path / f"{name}.json"
    target.write_text(json.dumps(bad))
    with pytest.raises(UnsafeReferenceError, match=message):
        xr.open_dataset(url, engine="nwbzarr", index=str(target))
    served = http_remote.upload(f"{name}.json", target)
    with pytest.raises(UnsafeReferenceError):
        xr.open_dataset(served, engine="nwbzarr")


def test_templates_are_refused(tmp_path, recording):
    path, _ = recording
    doc = json.loads(xnwb.build_index(path).to_json())
    doc["templates"] = {"u": path}
    target = tmp_path / "t.json"
    target.write_text(json.dumps(doc))
    with pytest.raises(UnsafeReferenceError, match="templates"):
        xr.open_dataset(target, engine="nwbzarr")


def test_missing_extra_is_named(monkeypatch):
    import builtins

    from xnwb.remote import filesystem_for

    real_import = builtins.__import__

    def no_s3fs(name, *args, **kwargs):
        if name == "s3fs":
            raise ImportError("No module named 's3fs'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_s3fs)
    with pytest.raises(ImportError, match=r"pip install 'xnwb\[s3\]'"):
        filesystem_for("s3://bucket/rec.nwb")


def test_faults_on_every_backend(remote, recording, cache):
    """A transient 500 is retried to the right bytes; a persistent one is an error."""
    path, data = recording
    url = remote.upload("rec.nwb", path)
    ds = _open(url, remote, cache, mask_and_scale=False)
    remote.server.inject("rec.nwb", 500, times=1, ranged_only=True)
    np.testing.assert_array_equal(ds.data[4000:6000].values, data[4000:6000])
    remote.server.clear_faults()
    remote.server.inject("rec.nwb", 404, ranged_only=True)
    with pytest.raises(
        ChunkReadError, match=r"chunk\(s\) \(\d+, \d+\).*'/acquisition/ElectricalSeries/data'"
    ):
        ds.data[8000:9000].values


def test_references_into_another_bucket_are_refused(remote, recording, tmp_path):
    path, _ = recording
    url = remote.upload("rec.nwb", path)
    doc = json.loads(xnwb.build_index(path).to_json())
    other = (
        url.replace("rec.nwb", "../other-bucket/rec.nwb")
        if remote.kind == "http"
        else (url.split("://")[0] + "://another-bucket/rec.nwb")
    )
    bad = _hostile(doc, lambda k: True, lambda v: [other, v[1], v[2]])
    target = tmp_path / "other.json"
    target.write_text(json.dumps(bad))
    with pytest.raises(UnsafeReferenceError):
        xr.open_dataset(
            url, engine="nwbzarr", index=str(target), storage_options=remote.storage_options
        )
