"""Reference files from outside: no read outside the source, exact exports, bounded parsing.

Every test uses a real NWB file (pynwb or h5py), a real reference file and, for URLs,
a real loopback server. Reads are watched with an audit hook (``tests.audit``): files
opened and sockets connected, so "refused" also means "nothing was read first".
"""

from __future__ import annotations

import gzip
import json
import shutil
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

import xnwb
from tests.audit import recording
from tests.conftest import counts, kerchunk_references, write_nwb
from xnwb.exceptions import (
    MalformedReferenceError,
    ReferenceWarning,
    UnsafeReferenceError,
    UnsupportedFilterError,
    XnwbError,
)
from xnwb.places import place_of
from xnwb.read import read_array
from xnwb.refs import ReferenceIndex
from xnwb.source import ByteSource

DATA = "acquisition/ElectricalSeries/data"


@pytest.fixture(scope="module")
def recording_file(tmp_path_factory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("rec")
    data = counts(4000, 4)
    path = write_nwb(
        folder / "rec.nwb",
        [
            dict(
                name="ElectricalSeries",
                data=data,
                rate=1000.0,
                region=range(4),
                chunks=(500, 4),
                compression="gzip",
            )
        ],
        n_electrodes=4,
    )
    return Path(path), data


@pytest.fixture
def rec(recording_file, tmp_path) -> tuple[Path, np.ndarray, dict]:
    """A fresh copy of the recording in ``tmp_path/data``, and its xnwb reference document."""
    src, data = recording_file
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "rec.nwb"
    shutil.copy(src, path)
    doc = json.loads(xnwb.build_index(str(path)).to_json())
    return path, data, doc


def _write(doc: dict, path: Path) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _retarget(doc: dict, url: str) -> dict:
    doc = json.loads(json.dumps(doc))
    for key, value in doc["refs"].items():
        if isinstance(value, list):
            doc["refs"][key] = [url, *value[1:]]
    return doc


def _open(source, **kwargs) -> xr.Dataset:
    return xr.open_dataset(source, engine="nwbzarr", mask_and_scale=False, **kwargs)


# -- 1. references point into the one source ------------------------------------------
def test_json_beside_its_file_opens_with_relative_or_absolute_targets(rec):
    path, data, doc = rec
    for target in ("rec.nwb", str(path), f"file://{path}", f"file://localhost{path}"):
        refs = _write(_retarget(doc, target), path.parent / "refs.json")
        np.testing.assert_array_equal(_open(refs).data.values, data)


@pytest.mark.parametrize("form", ["absolute", "file", "file-localhost", "local", "relative-up"])
def test_local_json_cannot_point_at_a_file_elsewhere(rec, tmp_path, form):
    """Today the JSON reads any local file as `data`: /etc/passwd, keys, other recordings."""
    path, _, doc = rec
    secret = tmp_path / "secret" / "rec.nwb"  # another NWB file, in another folder
    secret.parent.mkdir()
    shutil.copy(path, secret)
    target = {
        "absolute": str(secret),
        "file": f"file://{secret}",
        "file-localhost": f"file://localhost{secret}",
        "local": f"local://{secret}",
        "relative-up": "../secret/rec.nwb",
    }[form]
    refs = _write(_retarget(doc, target), path.parent / "refs.json")
    with recording() as seen, pytest.raises(UnsafeReferenceError, match="outside the opened"):
        _open(refs)
    assert str(secret.resolve()) not in seen.opened_real()


def test_symlink_beside_the_json_cannot_lead_out(rec, tmp_path):
    path, _, doc = rec
    secret = tmp_path / "elsewhere.nwb"
    shutil.copy(path, secret)
    (path.parent / "link.nwb").symlink_to(secret)
    refs = _write(_retarget(doc, "link.nwb"), path.parent / "refs.json")
    with recording() as seen, pytest.raises(UnsafeReferenceError, match="outside the opened"):
        _open(refs)
    assert str(secret.resolve()) not in seen.opened_real()


def test_etc_passwd_is_refused_and_never_opened(rec):
    path, _, doc = rec
    refs = _write(_retarget(doc, "file:///etc/passwd"), path.parent / "refs.json")
    with recording() as seen, pytest.raises(UnsafeReferenceError):
        _open(refs)
    assert "/etc/passwd" not in seen.opened_real()


def test_a_non_hdf5_file_beside_the_json_is_refused(rec):
    path, _, doc = rec
    notes = path.parent / "notes.txt"
    notes.write_bytes(b"private notes " * 10_000)
    refs = _write(_retarget(doc, "notes.txt"), path.parent / "refs.json")
    with pytest.raises(UnsafeReferenceError, match="not an HDF5 file"):
        _open(refs)


def test_two_files_are_refused(rec):
    path, _, doc = rec
    doc = json.loads(json.dumps(doc))
    key = next(k for k, v in doc["refs"].items() if isinstance(v, list))
    doc["refs"][key] = ["other.nwb", *doc["refs"][key][1:]]
    with pytest.raises(UnsafeReferenceError, match="2 different files"):
        _open(_write(doc, path.parent / "refs.json"))


def test_allowed_sources_match_whole_path_segments(rec, tmp_path):
    path, data, doc = rec
    data2 = tmp_path / "data2"
    data2.mkdir()
    shutil.copy2(path, data2 / "rec.nwb")
    json_dir = tmp_path / "json"
    json_dir.mkdir()
    refs = _write(_retarget(doc, str(data2 / "rec.nwb")), json_dir / "refs.json")
    with pytest.raises(UnsafeReferenceError, match="outside the opened"):
        _open(refs, allowed_sources=[str(tmp_path / "data")])  # /data does not admit /data2
    ds = _open(refs, allowed_sources=[str(data2)])
    np.testing.assert_array_equal(ds.data.values, data)


def test_places_compare_scheme_host_port_and_segments():
    assert not place_of("http://127.0.0.1:4545").contains(place_of("http://127.0.0.1:45451/x"))
    assert place_of("http://127.0.0.1:80/").contains(place_of("http://127.0.0.1/a/rec.nwb"))
    assert not place_of("https://h/data").contains(place_of("http://h/data/rec.nwb"))
    assert not place_of("s3://b/data").contains(place_of("s3://b/data2/rec.nwb"))
    assert not place_of("http://h/data").contains(place_of("http://h@evil/data/rec.nwb"))
    with pytest.raises(UnsafeReferenceError, match=r"'\.\.'"):
        place_of("http://h/data/../private/rec.nwb")
    with pytest.raises(UnsafeReferenceError, match=r"'\.\.'"):
        place_of("http://h/data/%2e%2e/private/rec.nwb")
    with pytest.raises(UnsafeReferenceError, match="host"):
        place_of("file://fileserver/share/rec.nwb")


def test_served_json_may_point_only_beside_itself(http_remote, rec, tmp_path):
    """A JSON at http://host/dir/a.json may not reach http://host/other/...; port by port."""
    path, data, doc = rec
    url = http_remote.upload("dir/rec.nwb", path)
    http_remote.upload("other/private.nwb", path)
    base = url.rsplit("/dir/", 1)[0]
    beside = http_remote.upload("dir/a.json", _write(_retarget(doc, url), tmp_path / "a.json"))
    np.testing.assert_array_equal(_open(beside).data.values, data)
    relative = http_remote.upload("dir/r.json", _write(_retarget(doc, "rec.nwb"), tmp_path / "r"))
    np.testing.assert_array_equal(_open(relative).data[:10].values, data[:10])

    other = http_remote.upload(
        "dir/b.json", _write(_retarget(doc, f"{base}/other/private.nwb"), tmp_path / "b.json")
    )
    http_remote.server.reset()
    with pytest.raises(UnsafeReferenceError, match="outside the opened"):
        _open(other)
    assert not any("private" in r.path for r in http_remote.server.requests)

    # allowed_sources=["http://127.0.0.1:4340"] must not admit the server on port 43407.
    host, port = base.split("//")[1].rsplit(":", 1)
    local_json = _write(_retarget(doc, url), tmp_path / "c.json")
    http_remote.server.reset()
    with pytest.raises(UnsafeReferenceError, match="outside the opened"):
        _open(local_json, allowed_sources=[f"http://{host}:{port[:-1]}"])
    assert not http_remote.server.requests
    ds = _open(local_json, allowed_sources=[f"http://{host}:{port}/dir"])
    np.testing.assert_array_equal(ds.data[:10].values, data[:10])


def test_index_must_name_the_opened_file(rec, tmp_path):
    path, data, doc = rec
    other = tmp_path / "other.nwb"
    shutil.copy(path, other)
    index = _write(doc, tmp_path / "refs.json")
    np.testing.assert_array_equal(_open(path, index=str(index)).data.values, data)
    with pytest.raises(UnsafeReferenceError, match="outside the opened source"):
        _open(other, index=str(index))  # two different local paths are not one place


# -- 2. codecs: only those HDF5 filters map to ---------------------------------------
def test_pickle_codec_is_refused_before_anything_runs(rec, tmp_path, monkeypatch):
    import pickle

    import numcodecs.pickles

    monkeypatch.setenv("NUMCODECS_ALLOW_UNSAFE_PICKLE_DECODE", "1")
    monkeypatch.setattr(numcodecs.pickles, "ALLOW_UNSAFE_PICKLE_DECODE", True, raising=False)
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path, _, doc = rec
    doc = json.loads(json.dumps(doc))
    meta = json.loads(doc["refs"]["identifier/.zarray"])  # read at open today
    meta["filters"] = [{"id": "pickle"}]
    doc["refs"]["identifier/.zarray"] = json.dumps(meta)
    import base64

    payload = pickle.dumps(np.array([Payload()], dtype=object))
    doc["refs"]["identifier/0"] = "base64:" + base64.b64encode(payload).decode()
    refs = _write(doc, path.parent / "refs.json")
    with pytest.raises(UnsafeReferenceError, match="codec 'pickle'"):
        _open(refs)
    with pytest.raises(UnsafeReferenceError, match="codec 'pickle'"):
        ReferenceIndex.from_json(str(refs))
    assert not marker.exists()


@pytest.mark.parametrize(
    "codec", [{"id": "json2"}, {"id": "msgpack2"}, {"id": "delta", "dtype": "<i2"}]
)
def test_other_codecs_are_refused(rec, codec):
    path, _, doc = rec
    doc = json.loads(json.dumps(doc))
    meta = json.loads(doc["refs"][f"{DATA}/.zarray"])
    meta["filters"] = [codec]
    doc["refs"][f"{DATA}/.zarray"] = json.dumps(meta)
    with pytest.raises(UnsafeReferenceError, match="reference files may name only"):
        _open(_write(doc, path.parent / "refs.json"))


def test_every_codec_an_hdf5_filter_maps_to_is_admitted(tmp_path):
    from xnwb.codecs import reference_codec_ids

    signal = counts(3000, 3)
    path = tmp_path / "filters.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("gz", data=signal, chunks=(256, 3), compression="gzip", shuffle=True)
        f.create_dataset("fl", data=signal, chunks=(256, 3), fletcher32=True)
        f.create_dataset("lzf", data=signal, chunks=(256, 3), compression="lzf")
    index = xnwb.build_index(str(path), inline_bytes=0)
    used = {c["id"] for arr in index.arrays.values() for c in arr.filters or []}
    assert used <= reference_codec_ids()
    again = ReferenceIndex.from_json(index.to_json())
    for name in ("gz", "fl", "lzf"):
        np.testing.assert_array_equal(read_array(again.arrays[name], ByteSource(str(path))), signal)


# -- 3. exports readable by plain fsspec + zarr ----------------------------------------
def _plain_zarr(refs_json: Path, name: str):
    import fsspec
    import zarr

    fs = fsspec.filesystem("reference", fo=str(refs_json), asynchronous=True)
    store = zarr.storage.FsspecStore(fs, path=name, read_only=True)
    return zarr.open_array(store, mode="r", zarr_format=2)


@pytest.mark.parametrize(("dtype", "fill"), [("i2", -7), ("f4", np.nan), ("f8", 3.5)])
def test_export_fill_value_reads_right_in_plain_zarr(tmp_path, dtype, fill):
    path = tmp_path / "sparse.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("x", shape=(4000, 2), dtype=dtype, chunks=(500, 2), fillvalue=fill)
        ds[1000:1500] = 3
        ds[3000:3200] = 1
        expected = ds[()]
    out = tmp_path / "refs.json"
    xnwb.build_index(str(path), inline_bytes=0).to_json(str(out))
    np.testing.assert_array_equal(_plain_zarr(out, "x")[:], expected)
    again = ReferenceIndex.from_json(str(out))
    np.testing.assert_array_equal(read_array(again.arrays["x"], ByteSource(str(path))), expected)


def test_export_of_undecodable_filter_fails_in_plain_zarr(tmp_path):
    path = tmp_path / "scaleoffset.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(4000, dtype="i4"), chunks=(500,), scaleoffset=0)
    out = tmp_path / "refs.json"
    xnwb.build_index(str(path), inline_bytes=0).to_json(str(out))
    doc = json.loads(out.read_text())
    assert "x/.zarray" not in doc["refs"]  # plain zarr finds no array, not one of zeros
    assert "scaleoffset" in doc["xnwb"]["arrays"]["x"]["problem"]
    with pytest.raises(Exception):  # noqa: B017 - zarr's own error type varies by version
        _plain_zarr(out, "x")[:]
    again = ReferenceIndex.from_json(str(out))
    with pytest.raises(UnsupportedFilterError, match="scaleoffset"):
        read_array(again.arrays["x"], ByteSource(str(path)))


# -- 4. kerchunk's own JSON ------------------------------------------------------------
def test_kerchunk_fill_value_is_honoured(tmp_path):
    pytest.importorskip("kerchunk.hdf")
    path = tmp_path / "sparse.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("x", shape=(3000,), dtype="f4", chunks=(500,), fillvalue=-7.0)
        ds[500:1000] = 2.0
        expected = ds[()]
    with open(path, "rb") as fh:
        doc = kerchunk_references(fh, str(path), inline_threshold=0)
    with pytest.warns(ReferenceWarning, match="'x' \\(5 of 6\\)"):
        index = ReferenceIndex.from_reference_file(doc)
    np.testing.assert_array_equal(read_array(index.arrays["x"], ByteSource(str(path))), expected)


def test_kerchunk_unreadable_electrodes_table_keeps_the_real_ids(realdata, tmp_path):
    """kerchunk writes the region's table as text; ids [0, 14, 1, 15, …] must stay."""
    pytest.importorskip("kerchunk.hdf")
    path = realdata / "nwb" / "neuroconv_tingley_lfp_stub_test.nwb"
    group = "processing/ecephys/LFP/ElectricalSeries_lfp"
    with open(path, "rb") as fh:
        doc = kerchunk_references(fh, str(path), inline_threshold=300)
    attrs = json.loads(doc["refs"][f"{group}/electrodes/.zattrs"])
    assert attrs["table"] == "<HDF5 object reference>"
    refs = _write(doc, tmp_path / "kc.json")
    direct = xr.open_dataset(path, engine="nwbzarr", group=group)
    with pytest.warns(ReferenceWarning):  # kerchunk drops scalar strings
        through = xr.open_dataset(path, engine="nwbzarr", group=group, index=str(refs))
    assert list(direct.channel.values[:4]) == [0, 14, 1, 15]
    np.testing.assert_array_equal(through.channel.values, direct.channel.values)
    assert "unreadable" in through.attrs["electrodes_table"]
    np.testing.assert_array_equal(through.data.values, direct.data.values)


def test_unknown_electrode_ids_are_positional_and_say_so(tmp_path):
    path = tmp_path / "noids.nwb"
    with h5py.File(path, "w") as f:
        f.attrs["nwb_version"] = "2.8.0"
        g = f.create_group("acquisition/es")
        g.attrs["neurodata_type"] = "ElectricalSeries"
        g.create_dataset("data", data=np.zeros((100, 3), "i2"))
        g.create_dataset("starting_time", data=0.0).attrs["rate"] = 100.0
        region = g.create_dataset("electrodes", data=np.array([2, 0, 1]))
        region.attrs["table"] = "<HDF5 object reference>"
    with pytest.warns(UserWarning, match="electrode ids are unknown"):
        ds = xr.open_dataset(path, engine="nwbzarr")
    assert ds.attrs["channel_labels"] == "positional"
    assert list(ds.channel.values) == [0, 1, 2]  # positions, not the region's [2, 0, 1]


# -- 5. a deleted chunk key ---------------------------------------------------------------
def test_deleted_chunk_key_in_an_xnwb_export_is_an_error(rec):
    path, _, doc = rec
    doc = json.loads(json.dumps(doc))
    del doc["refs"][f"{DATA}/3.0"]
    with pytest.raises(MalformedReferenceError, match=rf"'{DATA}/3\.0' is missing"):
        _open(_write(doc, path.parent / "refs.json"))


def test_deleted_chunk_key_in_a_foreign_file_warns(rec):
    path, data, doc = rec
    doc = json.loads(json.dumps(doc))
    del doc["refs"][f"{DATA}/3.0"]
    del doc["xnwb"]
    with pytest.warns(ReferenceWarning, match=rf"'{DATA}' \(1 of 8\)"):
        ds = _open(_write(doc, path.parent / "refs.json"))
    np.testing.assert_array_equal(ds.data[:1500].values, data[:1500])


def test_sparse_export_round_trips_without_warning(tmp_path, recwarn):
    path = tmp_path / "sparse.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("x", shape=(4000,), dtype="i2", chunks=(500,), fillvalue=-7)
        ds[1000:1500] = 3
    index = xnwb.build_index(str(path), inline_bytes=0)
    doc = index.to_refs()
    assert doc["xnwb"]["arrays"]["x"]["unallocated"] == [[0, 2], [3, 8]]
    ReferenceIndex.from_reference_file(json.loads(json.dumps(doc)))
    assert not [w for w in recwarn if issubclass(w.category, ReferenceWarning)]


# -- 6. bounded parsing ------------------------------------------------------------------
def test_gzip_bomb_is_refused_within_the_bound(rec, tmp_path):
    path = rec[0]
    member = gzip.compress(b" " * 2**24, compresslevel=9)  # 16 MiB of spaces, ~16 KB
    bomb = path.parent / "bomb.json.gz"
    with open(bomb, "wb") as fh:
        fh.write(gzip.compress(b'{"version": 1, "refs": {"a": "'))
        for _ in range(128):  # 2 GiB once inflated
            fh.write(member)
    assert bomb.stat().st_size < 3 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(MalformedReferenceError, match="inflates to more than"):
            _open(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 600 * 2**20


def test_gzip_reference_file_opens(rec):
    path, data, doc = rec
    gz = path.parent / "refs.json.gz"
    gz.write_bytes(gzip.compress(json.dumps(doc).encode()))
    np.testing.assert_array_equal(_open(gz).data.values, data)


def test_deep_nesting_and_non_utf8_are_named(rec):
    path = rec[0]
    deep = path.parent / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(MalformedReferenceError, match="nested too deeply"):
        _open(deep)
    raw = path.parent / "latin.json"
    raw.write_bytes(b'{"version": 1, "refs": {"\xff\xfe": "x"}}')
    with pytest.raises(MalformedReferenceError, match="not UTF-8"):
        _open(raw)


def test_huge_declared_grid_is_refused_cheaply(rec):
    path, _, doc = rec
    doc = json.loads(json.dumps(doc))
    meta = json.loads(doc["refs"][f"{DATA}/.zarray"])
    meta["shape"] = [50_000_000, 4]
    meta["chunks"] = [1, 4]
    doc["refs"][f"{DATA}/.zarray"] = json.dumps(meta)
    refs = _write(doc, path.parent / "refs.json")
    tracemalloc.start()
    try:
        with pytest.raises(MalformedReferenceError, match="declares 50000000 chunks"):
            _open(refs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_offsets_that_would_wrap_int64_are_refused(rec):
    path, _, doc = rec
    doc = json.loads(json.dumps(doc))
    doc["refs"][f"{DATA}/0.0"] = ["rec.nwb", 2**62, 2**62]
    with pytest.raises(UnsafeReferenceError, match="beyond any file"):
        _open(_write(doc, path.parent / "refs.json"))


# -- 7. malformed reference files: a specific error at open ---------------------------------
def _set(key, value):
    def mutate(doc):
        doc["refs"][key] = value

    return mutate


def _meta(key, field, value):
    def mutate(doc):
        meta = json.loads(doc["refs"][key])
        meta[field] = value
        doc["refs"][key] = json.dumps(meta)

    return mutate


MALFORMED = {
    "refs-a-list": (lambda doc: doc.update(refs=[1, 2]), "'refs' must be"),
    "top-level-junk": (lambda doc: doc.update(extra=1), "unexpected top-level"),
    "bad-key": (_set("data/x", 1), "unexpected key"),
    "bad-version": (lambda doc: doc.update(version="1"), "'version'"),
    "zarray-not-json": (_set(f"{DATA}/.zarray", "{nope"), "not valid JSON"),
    "zarray-a-number": (_set(f"{DATA}/.zarray", 5), "must be JSON text"),
    "zarray-a-list": (_set(f"{DATA}/.zarray", "[1]"), "must hold a JSON object"),
    "zattrs-a-list": (_set(f"{DATA}/.zattrs", "[1]"), "must hold a JSON object"),
    "shape-strings": (_meta(f"{DATA}/.zarray", "shape", ["a", 4]), "shape must be a list"),
    "shape-negative": (_meta(f"{DATA}/.zarray", "shape", [-1, 4]), "shape must be a list"),
    "chunks-zero": (_meta(f"{DATA}/.zarray", "chunks", [0, 4]), "chunks must be a list"),
    "chunks-rank": (_meta(f"{DATA}/.zarray", "chunks", [500]), "do not match shape"),
    "dtype-junk": (_meta(f"{DATA}/.zarray", "dtype", "<q9"), "not a numpy dtype"),
    "dtype-object": (_meta(f"{DATA}/.zarray", "dtype", "|O"), "vlen-utf8"),
    "dtype-huge": (_meta(f"{DATA}/.zarray", "dtype", "|S2000000000"), "item size"),
    "filters-dict": (_meta(f"{DATA}/.zarray", "filters", {"id": "zlib"}), "filters must be"),
    "codec-no-id": (_meta(f"{DATA}/.zarray", "filters", [{"level": 1}]), "with an 'id'"),
    "codec-bad-arg": (_meta(f"{DATA}/.zarray", "filters", [{"id": "zlib", "x": 1}]), "set up"),
    "fill-string": (_meta(f"{DATA}/.zarray", "fill_value", "seven"), "fill_value"),
    "fill-overflow": (_meta(f"{DATA}/.zarray", "fill_value", 10**6), "fill_value"),
    "separator": (_meta(f"{DATA}/.zarray", "dimension_separator", "/"), "dimension_separator"),
    "chunk-two-items": (_set(f"{DATA}/0.0", ["rec.nwb", 5]), "got 2 items"),
    "chunk-float-offset": (_set(f"{DATA}/0.0", ["rec.nwb", 5.5, 10]), "must be an integer"),
    "chunk-bool-length": (_set(f"{DATA}/0.0", ["rec.nwb", 5, True]), "must be an integer"),
    "chunk-url-number": (_set(f"{DATA}/0.0", [7, 5, 10]), "url must be"),
    "chunk-empty-url": (_set(f"{DATA}/0.0", ["", 5, 10]), "url must be"),
    "chunk-a-dict": (_set(f"{DATA}/0.0", {"a": 1}), "must be \\[url"),
    "chunk-bad-base64": (_set(f"{DATA}/0.0", "base64:%%%"), "not valid base64"),
    "orphan-chunk": (_set("nowhere/0", ["rec.nwb", 0, 8]), "has no .zarray"),
    "unallocated-junk": (
        lambda doc: doc["xnwb"]["arrays"].setdefault(DATA, {}).update(unallocated="all"),
        "unallocated must be",
    ),
    "xnwb-fill-string": (
        lambda doc: doc["xnwb"]["arrays"].setdefault(DATA, {}).update(fill_value="x"),
        "fill_value must be a number",
    ),
    "no-chunk-url": (
        lambda doc: doc["refs"].update(
            {k: "base64:AAAA" for k, v in list(doc["refs"].items()) if isinstance(v, list)}
        ),
        "names no data file",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_reference_files_fail_at_open_naming_the_field(rec, case):
    path, _, doc = rec
    mutate, message = MALFORMED[case]
    doc = json.loads(json.dumps(doc))
    mutate(doc)
    with pytest.raises(MalformedReferenceError, match=message):
        _open(_write(doc, path.parent / "refs.json"))


def test_big_integer_text_is_a_specific_error(rec):
    path = rec[0]
    refs = path.parent / "refs.json"
    refs.write_text('{"version": 1, "refs": {"x/0": ["rec.nwb", ' + "9" * 5000 + ", 1]}}")
    with pytest.raises(XnwbError, match="cannot be read as JSON"):
        _open(refs)


def test_reference_file_missing_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        _open(tmp_path / "absent.json")
