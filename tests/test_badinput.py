"""Bad input matrix: every case ends in a specific xnwb error that names the thing and the
way out, or opens with the right numbers and a warning where the file is defective but
readable. Files are written by pynwb and then altered with h5py, as real defects are."""

from __future__ import annotations

import json
import re
import warnings
from datetime import UTC, datetime
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
import xarray as xr

import xnwb
from tests.conftest import REALDATA, counts
from xnwb.exceptions import (
    ExternalDataError,
    SeriesNotFoundError,
    UnindexedDataError,
    UnsupportedFilterError,
)
from xnwb.nwb import XnwbWarning

TS = "acquisition/ts"


def _one_timeseries(path: Path, data=None) -> Path:
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    nwb = NWBFile("bad input", "xnwb-bad", datetime(2025, 1, 1, tzinfo=UTC))
    data = np.arange(4000, dtype=np.float32).reshape(1000, 4) if data is None else data
    nwb.add_acquisition(TimeSeries(name="ts", data=data, unit="V", rate=100.0))
    with NWBHDF5IO(path, "w") as io:
        io.write(nwb)
    return path


def _replace_data(path: Path, make) -> None:
    with h5py.File(path, "r+") as f:
        old = f[f"{TS}/data"]
        attrs = dict(old.attrs)
        del f[f"{TS}/data"]
        make(f, f"{TS}/data", path)
        if isinstance(f.get(f"{TS}/data", getlink=True), h5py.HardLink):
            for key, value in attrs.items():
                f[f"{TS}/data"].attrs[key] = value


def _compound(f, name, path):
    f.create_dataset(name, data=np.zeros(1000, dtype=[("a", "<f4"), ("b", "<i4")]))


def _external_raw(f, name, path):
    raw = path.with_suffix(".raw")
    np.arange(4000, dtype=np.float32).tofile(raw)
    f.create_dataset(name, shape=(1000, 4), dtype="<f4", external=[(raw.name, 0, 16000)])


def _virtual(f, name, path):
    f.create_dataset("source_block", data=np.arange(4000, dtype=np.float32).reshape(1000, 4))
    layout = h5py.VirtualLayout(shape=(1000, 4), dtype="<f4")
    layout[:] = h5py.VirtualSource(f["source_block"])
    f.create_virtual_dataset(name, layout)


def _external_link(f, name, path):
    other = path.with_name("other.h5")
    with h5py.File(other, "w") as g:
        g.create_dataset("x", data=np.arange(4000, dtype=np.float32).reshape(1000, 4))
    f[name] = h5py.ExternalLink(other.name, "/x")


SKIPPED = {
    "compound dtype": (_compound, r"dtype .* is not indexed"),
    "external raw files": (_external_raw, r"data stored in external raw files"),
    "virtual dataset": (_virtual, r"HDF5 virtual dataset"),
    "external link": (_external_link, r"external link to other\.h5:/x"),
}


@pytest.mark.parametrize("case", sorted(SKIPPED))
def test_series_whose_data_was_skipped_says_why(tmp_path, case):
    make, reason = SKIPPED[case]
    path = _one_timeseries(tmp_path / "rec.nwb")
    _replace_data(path, make)
    assert re.search(reason, xnwb.build_index(path).info["skipped"][f"{TS}/data"])
    # The default open and the explicit group both name the real reason.
    for kwargs in ({}, {"group": TS}, {"group": f"{TS}/data"}):
        with pytest.raises(UnindexedDataError, match=reason) as caught:
            xr.open_dataset(path, engine="nwbzarr", index_cache=False, **kwargs)
        assert TS in str(caught.value)
    tree_warning = pytest.warns(XnwbWarning, match=rf"1 series left out.*{TS}")
    with tree_warning:
        tree = xr.open_datatree(path, engine="nwbzarr", index_cache=False)
    assert re.search(reason, json.loads(tree.attrs["skipped_series"])[TS])
    assert re.search(reason, xnwb.list_series(path, index_cache=False).attrs["cannot_open"][TS])


def test_series_whose_timestamps_were_skipped_says_why(tmp_path):
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    nwb = NWBFile("stamps", "xnwb-stamps", datetime(2025, 1, 1, tzinfo=UTC))
    nwb.add_acquisition(
        TimeSeries(name="ts", data=np.arange(50.0), unit="V", timestamps=np.arange(50.0) / 10)
    )
    path = tmp_path / "stamps.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(nwb)
    with h5py.File(path, "r+") as f:
        del f[f"{TS}/timestamps"]
        f[f"{TS}/timestamps"] = h5py.ExternalLink("elsewhere.h5", "/t")
    with pytest.raises(UnindexedDataError, match=r"its timestamps: external link to elsewhere"):
        xr.open_dataset(path, engine="nwbzarr", index_cache=False, group=TS)


def _two_series(tmp_path: Path, bad_filter) -> Path:
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    nwb = NWBFile("two", "xnwb-two", datetime(2025, 1, 1, tzinfo=UTC))
    good = np.arange(3000, dtype=np.float32).reshape(1000, 3)
    bad = H5DataIO(good.copy(), chunks=(500, 3), allow_plugin_filters=True, **bad_filter)
    nwb.add_acquisition(TimeSeries(name="good", data=good, unit="V", rate=100.0))
    nwb.add_acquisition(TimeSeries(name="bad", data=bad, unit="V", rate=100.0))
    path = tmp_path / "two.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(nwb)
    return path


def test_datatree_opens_the_rest_when_one_series_cannot_be_opened(tmp_path):
    path = _two_series(tmp_path, hdf5plugin.SZ(absolute=1e-3))
    with pytest.warns(XnwbWarning, match=r"acquisition/bad \(UnsupportedFilterError: .*'sz'"):
        tree = xr.open_datatree(path, engine="nwbzarr", index_cache=False)
    assert "acquisition/good" in [node.path.strip("/") for node in tree.subtree]
    np.testing.assert_array_equal(
        tree["acquisition/good"].data.values, np.arange(3000, dtype=np.float32).reshape(1000, 3)
    )
    assert "acquisition/bad" in json.loads(tree.attrs["skipped_series"])
    # The one series that can be opened is the default, and the bad one says why.
    ds = xr.open_dataset(path, engine="nwbzarr", index_cache=False)
    assert ds.attrs["series"] == "/acquisition/good"
    with pytest.raises(UnsupportedFilterError, match=r"'sz' \(id 32017\)"):
        xr.open_dataset(path, engine="nwbzarr", index_cache=False, group="acquisition/bad")


def test_datatree_of_a_clean_file_has_no_skipped_attribute(nwb_writer):
    path = nwb_writer(
        [dict(name="ElectricalSeries", data=counts(500, 4), rate=1e3, region=range(4))]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", XnwbWarning)
        tree = xr.open_datatree(path, engine="nwbzarr", index_cache=False)
    assert "skipped_series" not in tree.attrs


# -- default series: ElectricalSeries inside acquisition containers ----------------------------


def test_default_finds_an_electrical_series_inside_an_acquisition_container(tmp_path):
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.ecephys import LFP, ElectricalSeries

    nwb = NWBFile("lfp", "xnwb-lfp", datetime(2025, 1, 1, tzinfo=UTC))
    group = nwb.create_electrode_group("shank", "s", "CA1", nwb.create_device(name="probe"))
    for i in range(4):
        nwb.add_electrode(group=group, location=f"site{i}", id=10 + i)
    region = nwb.create_electrode_table_region([0, 1, 2, 3], "all")
    data = counts(800, 4)
    lfp = LFP(name="probe_lfp")
    lfp.add_electrical_series(
        ElectricalSeries(name="probe_lfp_data", data=data, electrodes=region, rate=250.0)
    )
    nwb.add_acquisition(lfp)
    nwb.add_acquisition(TimeSeries(name="running", data=np.zeros(100), unit="m/s", rate=10.0))
    path = tmp_path / "lfp.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(nwb)
    ds = xr.open_dataset(path, engine="nwbzarr", index_cache=False)
    assert ds.attrs["series"] == "/acquisition/probe_lfp/probe_lfp_data"
    np.testing.assert_array_equal(ds.data.values, data)
    assert list(ds.channel.values) == [10, 11, 12, 13]


def test_default_without_a_unique_choice_lists_group_hints(nwb_writer):
    path = nwb_writer(
        [
            dict(name="A", data=counts(500, 4), rate=1e3, region=range(4)),
            dict(name="B", data=counts(500, 4), rate=1e3, region=range(4)),
        ]
    )
    with pytest.raises(
        SeriesNotFoundError,
        match=r"2 ElectricalSeries in acquisition; candidates: group='acquisition/A' "
        r"\(ElectricalSeries, shape \(500, 4\)\); group='acquisition/B'",
    ):
        xr.open_dataset(path, engine="nwbzarr", index_cache=False)


def test_real_allen_lfp_opens_by_default(realdata):
    path = REALDATA / "nwb" / "linkml_aibs_ecephys_truncated.nwb"
    if not path.exists():
        pytest.skip(f"{path.name} is not in this copy of the real data")
    ds = xr.open_dataset(path, engine="nwbzarr", index_cache=False)
    assert ds.attrs["series"] == "/acquisition/probe_769322820_lfp/probe_769322820_lfp_data"
    assert ds.data.shape == (10, 87)


# -- shapes from the schema ---------------------------------------------------------------------


def _ecephys_file(path: Path, add) -> Path:
    from pynwb import NWBHDF5IO, NWBFile

    nwb = NWBFile("shapes", "xnwb-shapes", datetime(2025, 1, 1, tzinfo=UTC))
    group = nwb.create_electrode_group("shank", "s", "CA1", nwb.create_device(name="probe"))
    for i in range(6):
        nwb.add_electrode(group=group, location=f"site{i}", id=100 + i)
    add(nwb)
    with NWBHDF5IO(path, "w") as io:
        io.write(nwb)
    return path


def test_spike_event_series_dims_follow_the_schema(tmp_path):
    from pynwb.ecephys import SpikeEventSeries

    waveforms = np.random.default_rng(1).normal(size=(40, 3, 32)).astype(np.float32)
    stamps = np.sort(np.random.default_rng(2).uniform(0, 10, 40))

    def add(nwb):
        region = nwb.create_electrode_table_region([1, 3, 5], "tetrode")
        nwb.add_acquisition(
            SpikeEventSeries(name="spikes", data=waveforms, timestamps=stamps, electrodes=region)
        )

    path = _ecephys_file(tmp_path / "ses.nwb", add)
    ds = xr.open_dataset(path, engine="nwbzarr", index_cache=False, group="acquisition/spikes")
    assert ds.data.dims == ("time", "channel", "sample")
    assert list(ds.channel.values) == [101, 103, 105]
    assert list(ds.location.values) == ["site1", "site3", "site5"]
    np.testing.assert_array_equal(ds.data.values, waveforms)
    np.testing.assert_array_equal(ds.time.values, stamps)
    np.testing.assert_array_equal(ds.sel(channel=103).data.values, waveforms[:, 1])


def test_one_electrode_series_keeps_its_channel_as_a_scalar_coordinate(tmp_path):
    from pynwb.ecephys import ElectricalSeries, SpikeEventSeries

    trace = np.arange(500, dtype=np.int16)

    def add(nwb):
        region = nwb.create_electrode_table_region([4], "one")
        nwb.add_acquisition(ElectricalSeries(name="one", data=trace, electrodes=region, rate=1e3))
        region2 = nwb.create_electrode_table_region([2], "one again")
        nwb.add_acquisition(
            SpikeEventSeries(
                name="single",
                data=np.ones((5, 16)),
                timestamps=np.arange(5.0),
                electrodes=region2,
            )
        )

    path = _ecephys_file(tmp_path / "one.nwb", add)
    ds = xr.open_dataset(path, engine="nwbzarr", index_cache=False, group="acquisition/one")
    assert ds.data.dims == ("time",)
    assert ds.channel.ndim == 0 and int(ds.channel) == 104
    assert str(ds.location.values) == "site4"
    np.testing.assert_array_equal(ds.data.values, trace)
    single = xr.open_dataset(path, engine="nwbzarr", index_cache=False, group="acquisition/single")
    assert single.data.dims == ("time", "sample")
    assert int(single.channel) == 102


def test_image_series_with_external_files_is_a_clear_error(tmp_path):
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.image import ImageSeries

    nwb = NWBFile("video", "xnwb-video", datetime(2025, 1, 1, tzinfo=UTC))
    nwb.add_acquisition(
        ImageSeries(
            name="behavior_video",
            external_file=["video_a.avi", "video_b.avi"],
            starting_frame=[0, 100],
            format="external",
            rate=30.0,
            num_samples=200,
        )
    )
    path = tmp_path / "video.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(nwb)
    with pytest.raises(ExternalDataError, match=r"external files \['video_a.avi', 'video_b.avi'\]"):
        xr.open_dataset(path, engine="nwbzarr", index_cache=False)
    with pytest.warns(XnwbWarning, match="behavior_video"):
        tree = xr.open_datatree(path, engine="nwbzarr", index_cache=False)
    assert "video_a.avi" in json.loads(tree.attrs["skipped_series"])["acquisition/behavior_video"]


# -- electrodes regions pointing outside the table ----------------------------------------------


@pytest.mark.parametrize("bad", [99, -1, 2**62])
def test_electrodes_region_outside_the_table_warns_and_marks_positions(nwb_writer, bad):
    data = counts(600, 4)
    path = nwb_writer(
        [dict(name="ElectricalSeries", data=data, rate=1e3, region=range(4))], n_electrodes=16
    )
    with h5py.File(path, "r+") as f:
        region = f["acquisition/ElectricalSeries/electrodes"]
        attrs = dict(region.attrs)
        values = np.array([0, 1, bad, 3], dtype=np.int64)
        del f["acquisition/ElectricalSeries/electrodes"]
        f.create_dataset("acquisition/ElectricalSeries/electrodes", data=values)
        for key, value in attrs.items():
            f["acquisition/ElectricalSeries/electrodes"].attrs[key] = value
    with pytest.warns(XnwbWarning, match=rf"rows \[{bad}\].*16 rows.*positions"):
        ds = xr.open_dataset(path, engine="nwbzarr", index_cache=False)
    assert list(ds.channel.values) == [0, 1, 2, 3]
    assert ds.attrs["channel_labels"] == "positions"
    assert "unknown" in ds.channel.attrs["long_name"]
    assert "location" not in ds.coords  # no column values for rows that do not exist
    np.testing.assert_array_equal(ds.data.values, data)
