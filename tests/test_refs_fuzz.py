"""A hypothesis fuzz of reference files: right numbers or a specific error, no read outside.

Each example takes xnwb's reference JSON of a real pynwb file and breaks it in one to
three ways (a value replaced by random JSON, a chunk pointed at another file or byte,
a key deleted or added, a ``.zarray`` field changed, the text cut or its bytes
altered), then opens it as the source and reads the data. Every outcome must be
the recording's own numbers or an :class:`xnwb.exceptions.XnwbError`; and while it
runs an audit hook records every file opened and socket connected: nothing outside
the JSON and its one data file may be opened, and no socket connected at all.

CI runs a few hundred examples (the ``xnwb-ci`` settings profile); run more by hand
with ``XNWB_FUZZ_EXAMPLES=5000 python -m pytest tests/test_refs_fuzz.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xnwb
from tests.audit import recording
from tests.conftest import counts, write_nwb
from xnwb.exceptions import XnwbError

DATA = "acquisition/ElectricalSeries/data"
#: A mutated ``.zarray`` may declare a huge array (legitimately: its chunks can all be
#: unwritten); reading all of it would cost that much memory, as it would in h5py.
_MAX_READ_BYTES = 2**26

settings.register_profile(
    "xnwb-ci",
    max_examples=int(os.environ.get("XNWB_FUZZ_EXAMPLES", "300")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class World:
    """The files one fuzz run works with."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / "data"
        self.folder.mkdir()
        self.data = counts(2000, 2, seed=3)
        self.nwb = Path(
            write_nwb(
                self.folder / "rec.nwb",
                [
                    dict(
                        name="ElectricalSeries",
                        data=self.data,
                        rate=1000.0,
                        region=range(2),
                        chunks=(250, 2),
                        compression="gzip",
                        fletcher32=True,
                    )
                ],
                n_electrodes=2,
            )
        )
        outside = root / "outside"
        outside.mkdir()
        self.secret = outside / "secret.nwb"
        shutil.copy(self.nwb, self.secret)
        self.notes = self.folder / "notes.txt"
        self.notes.write_bytes(b"private " * 1000)
        (self.folder / "link.nwb").symlink_to(self.secret)
        self.json = self.folder / "refs.json"
        self.doc = json.loads(xnwb.build_index(str(self.nwb)).to_json())
        for value in self.doc["refs"].values():  # relative, as a user would ship it
            if isinstance(value, list):
                value[0] = "rec.nwb"
        self.allowed = {str(self.json.resolve()), str(self.nwb.resolve())}
        self.forbidden = {str(self.secret.resolve()), str(self.notes.resolve()), "/etc/passwd"}

    def urls(self) -> list[str]:
        return [
            "rec.nwb",
            str(self.nwb),
            f"file://{self.nwb}",
            f"file://localhost{self.nwb}",
            "link.nwb",
            "notes.txt",
            str(self.secret),
            f"file://{self.secret}",
            f"local://{self.secret}",
            "../outside/secret.nwb",
            "/etc/passwd",
            "file:///etc/passwd",
            "file://otherhost/etc/passwd",
            "http://127.0.0.1:9/rec.nwb",
            "s3://bucket/rec.nwb",
            "",
            "..",
            "rec.nwb\x00.txt",
        ]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("fuzz"))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
numbers = st.sampled_from([-1, 0, 1, 7, 2**31, 2**53, 2**62, 2**63, 2**64]) | st.integers(
    min_value=-10, max_value=10**6
)
zarray_fields = st.sampled_from(
    ["shape", "chunks", "dtype", "filters", "compressor", "fill_value", "order", "zarr_format"]
)
field_values = (
    json_values
    | st.sampled_from(
        [
            "<i2",
            ">i2",
            "<f8",
            "|O",
            "|S3",
            "<M8[ns]",
            "|V8",
            [{"id": "pickle"}],
            [{"id": "zlib"}],
            {"id": "zlib"},
            [{"id": "fletcher32"}, {"id": "zlib", "level": 4}],
            [{"id": "vlen-utf8"}],
            "NaN",
            [2000, 2],
            [0, 2],
            [10**8, 2],
            [250, 2],
            [1, 1],
        ]
    )
)


@st.composite
def mutation(draw: Any, world: World) -> tuple[str, Any]:
    keys = sorted(world.doc["refs"])
    kind = draw(
        st.sampled_from(["value", "url", "number", "delete", "add", "field", "top", "xnwb"])
    )
    if kind == "value":
        return kind, (draw(st.sampled_from(keys)), draw(json_values | st.text(max_size=30)))
    if kind in ("url", "number"):
        chunk_keys = [k for k in keys if isinstance(world.doc["refs"][k], list)]
        key = draw(st.sampled_from(chunk_keys))
        if kind == "url":
            return kind, (key, draw(st.sampled_from(world.urls())))
        return kind, (key, draw(st.sampled_from([1, 2])), draw(numbers))
    if kind == "delete":
        return kind, draw(st.sampled_from(keys))
    if kind == "add":
        name = draw(st.sampled_from([f"{DATA}/99.0", f"{DATA}/0.5", "x/0", "a/.zarray", "0"]))
        return kind, (name, draw(json_values | st.sampled_from([["rec.nwb", 0, 8], "base64:"])))
    if kind == "field":
        meta_keys = [k for k in keys if k.endswith(".zarray")]
        return kind, (
            draw(st.sampled_from([f"{DATA}/.zarray", *meta_keys])),
            draw(zarray_fields),
            draw(field_values),
        )
    if kind == "top":
        top = draw(st.sampled_from(["version", "templates", "gen", "refs"]))
        return kind, (top, draw(json_values))
    return kind, (
        draw(st.sampled_from([DATA, "identifier"])),
        draw(st.sampled_from(["unallocated", "fill_value", "layout", "stored_chunks", "problem"])),
        draw(json_values),
    )


def _apply(doc: dict[str, Any], kind: str, args: Any) -> str | None:
    """Apply one mutation; returns the key it touched (``None`` when global)."""
    refs = doc["refs"] if isinstance(doc.get("refs"), dict) else {}
    if kind == "value":
        key, value = args
        refs[key] = value
        return key
    if kind == "url":
        key, url = args
        if isinstance(refs.get(key), list) and refs[key]:
            refs[key][0] = url
        return key
    if kind == "number":
        key, position, number = args
        if isinstance(refs.get(key), list) and len(refs[key]) == 3:
            refs[key][position] = number
        return key
    if kind == "delete":
        refs.pop(args, None)
        return args
    if kind == "add":
        refs[args[0]] = args[1]
        return args[0]
    if kind == "field":
        key, name, value = args
        try:
            meta = json.loads(refs[key])
            meta[name] = value
            refs[key] = json.dumps(meta, allow_nan=True)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass
        return key
    if kind == "top":
        doc[args[0]] = args[1]
        return None
    path, name, value = args
    block = doc.get("xnwb")
    if isinstance(block, dict) and isinstance(block.get("arrays"), dict):
        block["arrays"].setdefault(path, {})
        if isinstance(block["arrays"][path], dict):
            block["arrays"][path][name] = value
    return f"{path}/"


def _text(doc: dict[str, Any], damage: tuple[str, int, int] | None) -> bytes:
    raw = json.dumps(doc, allow_nan=True).encode("utf-8", errors="surrogatepass")
    if damage is None:
        return raw
    kind, where, byte = damage
    where %= max(1, len(raw))
    if kind == "cut":
        return raw[:where]
    return raw[:where] + bytes([byte]) + raw[where + 1 :]


@settings(settings.get_profile("xnwb-ci"))
@given(data=st.data())
def test_any_reference_file_gives_the_numbers_or_a_specific_error(world, data):
    doc = json.loads(json.dumps(world.doc))
    touched = []
    for kind, args in data.draw(st.lists(mutation(world), min_size=1, max_size=3), "mutations"):
        touched.append(_apply(doc, kind, args))
    damage = data.draw(
        st.none()
        | st.tuples(st.sampled_from(["cut", "byte"]), st.integers(0, 10**6), st.integers(0, 255)),
        "damage",
    )
    world.json.write_bytes(_text(doc, damage))

    values = None
    with recording() as seen, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = xr.open_dataset(world.json, engine="nwbzarr", mask_and_scale=False)
            if ds.data.nbytes <= _MAX_READ_BYTES:
                values = ds.data.values
            else:  # a mutated shape may declare terabytes: read its two ends only
                ds.data[-1:].values
                values = ds.data[: world.data.shape[0]].values
        except XnwbError:
            pass

    opened = seen.opened_real()
    assert not opened & world.forbidden, f"read outside the source: {opened & world.forbidden}"
    inside_root = {p for p in opened if p.startswith(str(world.root.resolve()))}
    assert inside_root <= world.allowed, f"opened {inside_root - world.allowed}"
    assert not seen.connected, f"connected to {seen.connected}"

    data_untouched = damage is None and all(
        t is not None and not t.startswith(f"{DATA}/") for t in touched
    )
    if values is not None and data_untouched:
        np.testing.assert_array_equal(values, world.data)
