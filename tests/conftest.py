"""Fixtures: NWB files written by pynwb, the shared real data, pynwb look-ups."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata``; tests using it skip when a user's clone lacks it."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} is absent (it ships beside the CI checkout)")
    return REALDATA


def real_nwb_files() -> list[Path]:
    """The real NWB files, or [] when the folder is absent (parametrisation time)."""
    folder = REALDATA / "nwb"
    return sorted(folder.glob("*.nwb")) if folder.is_dir() else []


def write_nwb(
    path: str | os.PathLike[str], series: list[dict[str, Any]], n_electrodes: int = 8
) -> str:
    """Write an NWB file with pynwb holding the given series.

    Each series dict has ``name``, ``data`` and either ``rate`` (+ ``starting_time``) or
    ``timestamps``; optional: ``module`` (put it in ``processing/<module>/LFP``),
    ``region`` (electrode rows; ElectricalSeries when given), ``conversion``, ``offset``,
    ``channel_conversion``, and H5DataIO options ``chunks``, ``compression``, ``shuffle``,
    ``fletcher32``, ``maxshape``.
    """
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.ecephys import LFP, ElectricalSeries

    nwbfile = NWBFile(
        session_description="xnwb test file",
        identifier=f"xnwb-test-{Path(path).stem}",
        session_start_time=datetime(2025, 5, 17, 9, 30, tzinfo=UTC),
    )
    device = nwbfile.create_device(name="probe")
    group = nwbfile.create_electrode_group("shank0", "test shank", "CA1", device)
    for i in range(n_electrodes):
        nwbfile.add_electrode(
            group=group, location=f"site{i}", x=1.0 * i, y=20.0 * i, z=-5.0, id=100 + i
        )
    modules: dict[str, Any] = {}
    for spec in series:
        io_options = {
            k: spec[k]
            for k in (
                "chunks",
                "compression",
                "shuffle",
                "fletcher32",
                "maxshape",
                "compression_opts",
            )
            if k in spec
        }
        data = H5DataIO(spec["data"], **io_options) if io_options else spec["data"]
        timing = (
            {"timestamps": spec["timestamps"]}
            if "timestamps" in spec
            else {
                "rate": float(spec["rate"]),
                "starting_time": float(spec.get("starting_time", 0.0)),
            }
        )
        common = dict(
            name=spec["name"],
            data=data,
            conversion=spec.get("conversion", 1.0),
            offset=spec.get("offset", 0.0),
            description=f"{spec['name']} for tests",
            **timing,
        )
        if "region" in spec:
            region = nwbfile.create_electrode_table_region(list(spec["region"]), "electrodes")
            extra = {}
            if "channel_conversion" in spec:
                extra["channel_conversion"] = spec["channel_conversion"]
            obj = ElectricalSeries(electrodes=region, **common, **extra)
        else:
            obj = TimeSeries(unit=spec.get("unit", "volts"), **common)
        if "module" in spec:
            if spec["module"] not in modules:
                modules[spec["module"]] = nwbfile.create_processing_module(spec["module"], "test")
                modules[spec["module"]].add(LFP(name="LFP"))
            modules[spec["module"]]["LFP"].add_electrical_series(obj)
        else:
            nwbfile.add_acquisition(obj)
    with NWBHDF5IO(os.fspath(path), "w") as io:
        io.write(nwbfile)
    return os.fspath(path)


@pytest.fixture
def nwb_writer(tmp_path: Path) -> Callable[..., str]:
    """``nwb_writer(series, name="rec.nwb", n_electrodes=8)`` -> path of a new pynwb file."""

    def make(series: list[dict[str, Any]], name: str = "rec.nwb", n_electrodes: int = 8) -> str:
        return write_nwb(tmp_path / name, series, n_electrodes)

    return make


def counts(n_times: int, n_channels: int, seed: int = 0, zeros: bool = True) -> np.ndarray:
    """int16 test signal with runs of exact zeros (they must not become NaN)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(-2000, 2000, size=(n_times, n_channels), dtype=np.int16)
    if zeros:
        data[::7] = 0
    return data


def pynwb_series(nwbfile: Any, path: str) -> Any:
    """The pynwb object of the series at HDF5 ``path``."""
    skip = {"acquisition", "processing", "stimulus", "presentation", "templates", "analysis"}
    obj = nwbfile
    for part in path.strip("/").split("/"):
        if part in skip and obj is nwbfile:
            continue
        children = {c.name: c for c in obj.children}
        if part not in children:
            raise KeyError(f"{part!r} not among {sorted(children)} under {obj.name!r}")
        obj = children[part]
    return obj


@pytest.fixture
def fetch_log(monkeypatch) -> list[tuple[int, int]]:
    """Every data range read through ``ByteSource.fetch`` while the test runs: (start, length).

    Chunk-index reads of the lazy index (HDF5 B-tree nodes, which begin ``TREE``) are left
    out: they are not data, and a local window reads a few of them the first time.
    """
    from xnwb.source import ByteSource

    log: list[tuple[int, int]] = []
    original = ByteSource.fetch

    def logged(self, starts, lengths, **kwargs):
        pieces = original(self, starts, lengths, **kwargs)
        log.extend(
            (start, length)
            for start, length, piece in zip(starts, lengths, pieces, strict=True)
            if bytes(piece[:4]) != b"TREE"
        )
        return pieces

    monkeypatch.setattr(ByteSource, "fetch", logged)
    return log


def kerchunk_references(file: Any, url: str, **options: Any) -> dict[str, Any]:
    """kerchunk's ``SingleHdf5ToZarr(file, url, **options).translate()``, without its deadlock.

    kerchunk writes zarr attributes from inside h5py's ``visititems``, so the main thread
    holds h5py's global lock while it waits for zarr's event-loop thread. If the garbage
    collector runs on that thread and frees an h5py object left by an earlier test, the
    object's finaliser waits for the same lock: both threads hang (seen in CI). The
    collector is run first and paused during the translation.
    """
    import gc

    from kerchunk.hdf import SingleHdf5ToZarr

    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return SingleHdf5ToZarr(file, url, **options).translate()
    finally:
        if was_enabled:
            gc.enable()


@pytest.fixture(autouse=True)
def _fresh_single_range_origins():
    """Each test starts with no origin remembered as refusing multi-range requests.

    xnwb remembers such origins for the process (``xnwb.remote._SINGLE_RANGE_ORIGINS``); the
    loopback servers of different tests can get the same port, and a test that expects the
    multi-range probe then saw two single ones (a flaky ``test_probe_answered_with_other_bytes``).
    """
    from xnwb import remote

    remote._SINGLE_RANGE_ORIGINS.clear()
    yield
    remote._SINGLE_RANGE_ORIGINS.clear()
