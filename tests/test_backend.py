"""``xr.open_dataset(..., engine="nwbzarr")`` on files pynwb writes, against pynwb."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import xnwb
from tests.conftest import counts, pynwb_series
from xnwb.exceptions import NotTimeSeriesError, SeriesNotFoundError

RATE = 1000.0


def _compare_with_pynwb(path: str, group: str, **open_kwargs) -> xr.Dataset:
    from pynwb import NWBHDF5IO

    ds = xr.open_dataset(path, engine="nwbzarr", group=group, **open_kwargs)
    with NWBHDF5IO(path, "r") as io:
        series = pynwb_series(io.read(), group)
        expected = series.get_data_in_units()
        np.testing.assert_allclose(ds.data.values, expected, rtol=1e-12, atol=0)
        np.testing.assert_allclose(ds.time.values, series.get_timestamps(), rtol=1e-12, atol=1e-12)
        if getattr(series, "electrodes", None) is not None:
            region = np.asarray(series.electrodes.data[:])
            ids = np.asarray(series.electrodes.table.id[:])
            np.testing.assert_array_equal(ds.channel.values, ids[region])
            locations = np.asarray(series.electrodes.table["location"].data[:])[region]
            np.testing.assert_array_equal(ds.location.values.astype(str), locations.astype(str))
        assert ds.attrs["unit"] == series.unit
        assert ds.attrs["description"] == series.description
    return ds


LAYOUTS = {
    "gzip+shuffle": dict(chunks=(256, 4), compression="gzip", shuffle=True),
    "fletcher32": dict(chunks=(256, 8), compression="gzip", fletcher32=True),
    "fletcher32-only": dict(chunks=(500, 8), fletcher32=True),
    "contiguous": dict(),
    "ragged-grid": dict(chunks=(300, 3), compression="gzip", shuffle=True),
    "chunks-larger-than-data": dict(chunks=(4096, 16), maxshape=(None, None), compression="gzip"),
    "unfiltered-chunks": dict(chunks=(2000, 8)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_equal_pynwb(nwb_writer, layout):
    data = counts(2000, 8)
    path = nwb_writer(
        [
            dict(
                name="ElectricalSeries",
                data=data,
                rate=RATE,
                region=range(8),
                conversion=2.5e-7,
                offset=1e-3,
                **LAYOUTS[layout],
            )
        ]
    )
    # A small sub-chunk size makes the contiguous and unfiltered cases split.
    ds = _compare_with_pynwb(path, "acquisition/ElectricalSeries", max_chunk_bytes=4096)
    assert ds.data.dtype == np.float64
    raw = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False)
    np.testing.assert_array_equal(raw.data.values, data)
    assert raw.data.dtype == np.int16
    # Real zeros stay zeros: no fill-value masking anywhere.
    assert not np.isnan(ds.data.values).any()
    assert (raw.data.values[::7] == 0).all()


def test_channel_conversion_and_unsorted_electrode_subset(nwb_writer):
    data = counts(1500, 4)
    cc = np.array([1.0, 0.5, 2.0, 4.0])
    path = nwb_writer(
        [
            dict(
                name="ElectricalSeries",
                data=data,
                rate=RATE,
                region=[5, 2, 7, 0],
                conversion=1e-6,
                offset=-2e-3,
                channel_conversion=cc,
                chunks=(100, 4),
                compression="gzip",
            )
        ]
    )
    ds = _compare_with_pynwb(path, "acquisition/ElectricalSeries")
    np.testing.assert_array_equal(ds.channel.values, [105, 102, 107, 100])
    np.testing.assert_array_equal(ds.channel_conversion.values, cc)
    np.testing.assert_array_equal(ds.x.values, [5.0, 2.0, 7.0, 0.0])
    # channel selection by label reads the right columns, lazily scaled.
    picked = ds.data.sel(channel=[107, 105]).isel(time=slice(10, 20)).values
    expected = data[10:20][:, [2, 0]] * 1e-6 * cc[[2, 0]] - 2e-3
    np.testing.assert_allclose(picked, expected, rtol=1e-12)
    one = ds.data.isel(time=5, channel=2).values
    np.testing.assert_allclose(one, data[5, 2] * 1e-6 * 2.0 - 2e-3, rtol=1e-12)
    raw = xr.open_dataset(path, engine="nwbzarr", mask_and_scale=False)
    np.testing.assert_array_equal(raw.data.values, data)


def test_lfp_timestamps_and_several_rates(nwb_writer):
    rng = np.random.default_rng(3)
    stamps = np.cumsum(rng.uniform(0.0009, 0.0011, 700)) - 0.25  # irregular, starts negative
    series = [
        dict(
            name="ElectricalSeries",
            data=counts(3000, 8),
            rate=RATE,
            region=range(8),
            chunks=(512, 8),
            compression="gzip",
        ),
        dict(
            name="LFPSeries",
            data=rng.normal(size=(600, 8)).astype(np.float32),
            rate=200.0,
            starting_time=1.5,
            region=range(8),
            module="ecephys",
            compression="gzip",
        ),
        dict(name="Irregular", data=rng.normal(size=700), timestamps=stamps, unit="mV"),
    ]
    path = nwb_writer(series)
    _compare_with_pynwb(path, "acquisition/ElectricalSeries")
    lfp = _compare_with_pynwb(path, "processing/ecephys/LFP/LFPSeries")
    assert lfp.attrs["rate"] == 200.0 and lfp.time.values[0] == 1.5
    irregular = _compare_with_pynwb(path, "acquisition/Irregular")
    assert irregular.data.dims == ("time",)
    assert "rate" not in irregular.attrs

    listing = xnwb.list_series(path)
    assert list(listing.index) == [
        "acquisition/ElectricalSeries",
        "acquisition/Irregular",
        "processing/ecephys/LFP/LFPSeries",
    ]
    assert listing.loc["acquisition/ElectricalSeries", "rate"] == RATE
    assert listing.loc["acquisition/ElectricalSeries", "shape"] == (3000, 8)
    assert listing.loc["acquisition/ElectricalSeries", "chunks"] == (512, 8)
    assert listing.loc["acquisition/Irregular", "rate"] == "timestamps"
    assert listing.loc["acquisition/Irregular", "duration"] == pytest.approx(stamps[-1] - stamps[0])
    assert listing.loc["processing/ecephys/LFP/LFPSeries", "duration"] == pytest.approx(3.0)
    assert listing.loc["acquisition/ElectricalSeries", "compression"] == "zlib"

    # Without group=: the single ElectricalSeries in acquisition.
    default = xr.open_dataset(path, engine="nwbzarr")
    assert default.attrs["series"] == "/acquisition/ElectricalSeries"

    tree = xr.open_datatree(path, engine="nwbzarr")
    assert set(tree.groups) >= {
        "/acquisition/ElectricalSeries",
        "/acquisition/Irregular",
        "/processing/ecephys/LFP/LFPSeries",
    }
    np.testing.assert_array_equal(
        tree["processing/ecephys/LFP/LFPSeries"].data.values, lfp.data.values
    )
    assert tree.attrs["identifier"] == "xnwb-test-rec"


def test_attrs_and_encoding(nwb_writer):
    path = nwb_writer(
        [
            dict(
                name="ElectricalSeries",
                data=counts(1000, 8),
                rate=RATE,
                region=range(8),
                conversion=0.5,
                chunks=(250, 8),
                compression="gzip",
            )
        ]
    )
    ds = xr.open_dataset(path, engine="nwbzarr")
    for key in (
        "unit",
        "description",
        "comments",
        "conversion",
        "offset",
        "resolution",
        "rate",
        "series",
        "session_start_time",
        "identifier",
    ):
        assert key in ds.attrs, key
    assert ds.attrs["session_start_time"].startswith("2025-05-17T09:30")
    assert ds.data.encoding["chunks"] == (250, 8)  # the stored chunk
    # whole stored chunks, sized for dask (here the whole, small, series)
    assert ds.data.encoding["preferred_chunks"] == {"time": 1000, "channel": 8}
    assert ds.data.encoding["scale_factor"] == 0.5
    assert ds.time.attrs["units"] == "s"
    dask_ds = xr.open_dataset(path, engine="nwbzarr", chunks={})
    assert dask_ds.data.chunks == ((1000,), (8,))


def test_datatree_on_file_with_one_series_and_defaults(nwb_writer):
    path = nwb_writer([dict(name="Only", data=np.arange(100.0), rate=10.0)])
    ds = xr.open_dataset(path, engine="nwbzarr")  # the only series, not an ElectricalSeries
    assert ds.attrs["series"] == "/acquisition/Only"
    np.testing.assert_array_equal(ds.data.values, np.arange(100.0))


def test_group_errors_are_specific(nwb_writer):
    path = nwb_writer(
        [
            dict(name="A", data=counts(100, 8), rate=RATE, region=range(8)),
            dict(name="B", data=counts(100, 8), rate=RATE, region=range(8)),
        ]
    )
    with pytest.raises(
        SeriesNotFoundError, match=r"2 ElectricalSeries in acquisition.*acquisition/A"
    ):
        xr.open_dataset(path, engine="nwbzarr")
    with pytest.raises(NotTimeSeriesError, match=r"'general/devices/probe' is not a time series"):
        xr.open_dataset(path, engine="nwbzarr", group="general/devices/probe")
    with pytest.raises(SeriesNotFoundError, match=r"no group 'acquisition/C'.*acquisition/A"):
        xr.open_dataset(path, engine="nwbzarr", group="acquisition/C")
    ds = xr.open_dataset(path, engine="nwbzarr", group="/acquisition/B/data")
    assert ds.attrs["series"] == "/acquisition/B"


def test_engine_is_guessed_from_extension(nwb_writer):
    path = nwb_writer(
        [dict(name="ElectricalSeries", data=counts(100, 8), rate=RATE, region=range(8))]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_dataset(path)
    assert ds.attrs["series"] == "/acquisition/ElectricalSeries"
    from xnwb.backend import NWBZarrBackendEntrypoint

    entry = NWBZarrBackendEntrypoint()
    assert entry.guess_can_open("x.NWB")
    assert not entry.guess_can_open("x.nc")
    assert not entry.guess_can_open(object())


def test_engine_registers_accessors_without_importing_xnwb(nwb_writer):
    import subprocess
    import sys

    path = nwb_writer(
        [dict(name="ElectricalSeries", data=counts(100, 8), rate=RATE, region=range(8))]
    )
    code = (
        "import sys, xarray as xr\n"
        f"ds = xr.open_dataset({path!r}, engine='nwbzarr')\n"
        "assert 'xnwb' in sys.modules\n"
        "print(type(ds.ephys).__name__, type(ds.nwb).__name__, callable(ds.data.zscore))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["EphysAccessor", "EphysAccessor", "True"]


@pytest.mark.parametrize(
    "decoder",
    [dict(decode_times=False), dict(decode_times=True), dict(decode_coords="all"),
     dict(use_cftime=False), dict(decode_timedelta=False), dict(concat_characters=True)],
)  # fmt: skip
def test_xarray_decoder_keywords_are_accepted(nwb_writer, decoder):
    # xarray hands on every decoder a user sets; they were a TypeError here.
    data = np.arange(2000, dtype=np.int16).reshape(1000, 2)
    path = nwb_writer([dict(name="ElectricalSeries", data=data, rate=1000.0, region=range(2))])
    plain = xr.open_dataset(path, engine="nwbzarr")
    xr.testing.assert_identical(xr.open_dataset(path, engine="nwbzarr", **decoder), plain)
    tree = xr.open_datatree(path, engine="nwbzarr", **decoder)
    assert tree["acquisition/ElectricalSeries"].dataset.sizes["time"] == 1000
