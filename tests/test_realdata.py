"""Every series of every real NWB file in ``../shared/realdata/nwb`` against pynwb."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xnwb
from tests.conftest import pynwb_series, real_nwb_files
from xnwb.exceptions import NotTimeSeriesError, TimeAxisWarning
from xnwb.nwb import XnwbWarning

FILES = real_nwb_files()
pytestmark = pytest.mark.skipif(
    not FILES, reason="../shared/realdata/nwb is absent (it ships beside the CI checkout)"
)

# Departures from the schema found in these files, and what xnwb does about them.
EXPECTED_WARNING = {
    (
        "linkml_aibs_ecephys_truncated.nwb",
        "acquisition/probe_769322820_lfp/probe_769322820_lfp_data",
    ),
    # AqNWB's synthetic recording: its timestamps step back by 0.97 ms at sample 300
    # (its last 30 timestamps repeat those of samples 270-299): a TimeAxisWarning.
    ("aqnwb_cpp_exampleRecording_synthetic.nwb", "acquisition/esdata0"),
    # Lick event times, not sorted (54 and 95 steps back in time).
    ("dandicli_sub-anm369963_ses-20170228.nwb", "acquisition/lick_times/lick_left_times"),
    ("dandicli_sub-anm369963_ses-20170228.nwb", "acquisition/lick_times/lick_right_times"),
    # Event times out of order (12 steps back in time, the first at sample 294).
    ("matnwb_rutishauser_sub-4_ses-4_ecephys+image.nwb", "acquisition/events"),
    ("matnwb_rutishauser_sub-4_ses-4_ecephys+image.nwb", "acquisition/experiment_ids"),
}
EXPECTED_ERROR = {
    # An OpticalSeries whose frames live in external files: 90 timestamps, a (2, 2, 2) placeholder.
    (
        "matnwb_rutishauser_sub-4_ses-4_ecephys+image.nwb",
        "stimulus/presentation/StimulusPresentation_encoding",
    ),
}


def _cases() -> list[tuple[Path, str]]:
    cases = []
    for path in FILES:
        for series in xnwb.list_series(path).index:
            cases.append(
                pytest.param(path, series, id=f"{path.stem[:24]}:{series.rsplit('/', 1)[-1]}")
            )
    return cases


@pytest.fixture(scope="module")
def pynwb_files():
    from pynwb import NWBHDF5IO

    opened = {}
    ios = []
    for path in FILES:
        io = NWBHDF5IO(str(path), "r", load_namespaces=True)
        ios.append(io)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opened[path.name] = io.read()
    yield opened
    for io in ios:
        io.close()


@pytest.mark.parametrize(("path", "series"), _cases() if FILES else [])
def test_series_equals_pynwb(path: Path, series: str, pynwb_files):
    key = (path.name, series)
    if key in EXPECTED_ERROR:
        with pytest.raises(NotTimeSeriesError, match="external"):
            xr.open_dataset(path, engine="nwbzarr", group=series)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = xr.open_dataset(path, engine="nwbzarr", group=series)
    ours = [w for w in caught if issubclass(w.category, XnwbWarning)]
    assert bool(ours) == (key in EXPECTED_WARNING), [str(w.message) for w in ours]

    obj = pynwb_series(pynwb_files[path.name], series)
    expected = np.asarray(obj.get_data_in_units())
    # pynwb computes in the dtype of the conversion attribute (float32 in AqNWB files).
    rtol = 1e-6 if expected.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(ds.data.values, expected, rtol=rtol, atol=0)
    np.testing.assert_allclose(ds.time.values, obj.get_timestamps(), rtol=1e-12, atol=1e-9)
    assert ds.attrs["unit"] == obj.unit

    electrodes = getattr(obj, "electrodes", None)
    ours = [w for w in ours if not issubclass(w.category, TimeAxisWarning)]
    if electrodes is not None and not ours:
        region = np.asarray(electrodes.data[:])
        ids = np.asarray(electrodes.table.id[:])
        np.testing.assert_array_equal(ds.channel.values, ids[region])
    elif ours:
        np.testing.assert_array_equal(ds.channel.values, np.arange(ds.sizes["channel"]))
        assert "electrodes_mismatch" in ds.attrs


def test_real_ephys_file_metadata(realdata: Path):
    path = realdata / "nwb" / "nwbguide_spikeglx_NP1_LF_sub-001_ses-1.nwb"
    ds = xr.open_dataset(path, engine="nwbzarr")
    assert ds.attrs["series"] == "/acquisition/ElectricalSeriesLF"
    assert ds.sizes == {"time": 13163, "channel": 384}
    assert ds.attrs["rate"] == 2500.0
    assert ds.data.encoding["chunks"] == (4114, 121)  # the stored chunk
    assert ds.data.encoding["preferred_chunks"] == {"time": 13163, "channel": 121}
    for column in ("channel_name", "gain_to_uV", "rel_x", "rel_y", "group_name", "location"):
        assert column in ds.coords, column
    raw = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False)
    assert raw.data.dtype == np.int16
    np.testing.assert_allclose(ds.data[:50, :5].values, raw.data[:50, :5].values * 9.375e-6)


def test_real_contiguous_file_is_split_into_subchunks(realdata: Path):
    path = realdata / "nwb" / "FergusonEtAl2015_PYR5_rebound.nwb"
    refs = xnwb.build_index(path, max_chunk_bytes=16 * 1024)
    data = refs.arrays["acquisition/CurrentClampSeries_01/data"]
    assert data.layout == "contiguous"
    assert data.chunks == (4096,) and data.grid == (5,)
    ds = xr.open_dataset(
        path, engine="nwbzarr", group="acquisition/CurrentClampSeries_01", max_chunk_bytes=16 * 1024
    )
    import h5py

    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(
            ds.data.values, f["acquisition/CurrentClampSeries_01/data"][:]
        )
