"""The ``xnwb`` command: every sub-command's output and exit status on good and bad input.

Most tests run :func:`xnwb.cli.main` in this process (its exit status, stdout and stderr
are what the shell sees); a few run the real console command in a subprocess (the entry
point, ``--debug``'s traceback). Results of ``xnwb tfr`` are checked against the library
(``ds.ephys.morlet``, ``zscore``) and against an uninterrupted run after an interruption.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import matplotlib
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
import zarr

import xnwb
from xnwb.cli import main
from xnwb.demo import demo_bursts, write_demo_recording
from xnwb.exceptions import IncompleteResultError
from xnwb.plot import plot_window
from xnwb.results import open_result, result_state

matplotlib.use("Agg")

FREQS = "6:60:5"  # five log-spaced frequencies
LFP = "processing/ecephys/LFP/ElectricalSeries"


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> str:
    """12 s × 8 channels at 1 kHz, stored in (1000, 8) gzip chunks."""
    path = tmp_path_factory.mktemp("cli") / "rec.nwb"
    return write_demo_recording(path, duration=12.0, n_channels=8)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *words: str, status: int = 1) -> None:
    assert code == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("xnwb"), lines[0]
    assert "error" in lines[0] and "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


# -- the command itself ----------------------------------------------------------------------


def test_version_and_help(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"xnwb {xnwb.__version__}"
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("info", "index", "tfr", "plot", "demo"):
        assert command in out
    assert "The ``xnwb`` command." not in out


def test_console_entry_point_and_debug_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    ok = subprocess.run(
        [sys.executable, "-m", "xnwb.cli", "--version"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert ok.returncode == 0 and ok.stdout.startswith("xnwb ")
    missing = str(tmp_path / "missing.nwb")
    plain = subprocess.run(
        [sys.executable, "-m", "xnwb.cli", "info", missing],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip() == f"xnwb: error: no such file: {missing!r}"
    debug = subprocess.run(
        [sys.executable, "-m", "xnwb.cli", "info", missing, "--debug"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "FileNotFoundError" in debug.stderr


def test_unknown_command_and_option_are_one_line(capsys):
    code, _, err = run(capsys, "frobnicate")
    assert_one_line_error(code, err, "frobnicate", status=2)
    code, _, err = run(capsys, "info")
    assert_one_line_error(code, err, "SOURCE", status=2)


# -- info / list -----------------------------------------------------------------------------


def test_info_prints_identity_and_human_sizes(rec, capsys):
    code, out, err = run(capsys, "info", rec)
    assert code == 0, err
    assert "identifier           xnwb-demo" in out
    assert "session start        2026-01-01T12:00:00+00:00" in out
    assert "acquisition/ElectricalSeries" in out and LFP in out
    assert "12000 × 8" in out and "1 kHz" in out and "250 Hz" in out and "12 s" in out
    assert "KiB" in out  # stored sizes in human units
    code, same, _ = run(capsys, "list", rec)
    assert code == 0 and same == out


def test_info_group_selects_one_series(rec, capsys):
    code, out, _ = run(capsys, "info", rec, "--group", LFP)
    assert code == 0 and LFP in out and "acquisition/ElectricalSeries" not in out
    code, _, err = run(capsys, "info", rec, "--group", "acquisition/Nope")
    assert_one_line_error(code, err, "acquisition/Nope")


@pytest.mark.parametrize("kind", ["missing", "text", "folder"])
def test_bad_sources_are_one_line_errors(kind, tmp_path, capsys):
    source = tmp_path / "thing.nwb"
    if kind == "text":
        source.write_text("not HDF5\n")
    elif kind == "folder":
        source.mkdir()
    code, _, err = run(capsys, "info", source)
    expected = {"missing": "no such file", "text": "not an HDF5 file", "folder": "is a folder"}
    assert_one_line_error(code, err, expected[kind])


def test_storage_options_reach_fsspec(rec, s3_remote, capsys):
    url = s3_remote.upload("rec.nwb", rec)
    options = s3_remote.storage_options
    argv = [
        "info",
        url,
        "--storage-option",
        f"endpoint_url={options['endpoint_url']}",
        "--storage-option",
        "key=testing",
        "--storage-option",
        "secret=testing",
        "--storage-option",
        "client_kwargs.region_name=us-east-1",
    ]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "xnwb-demo" in out and "acquisition/ElectricalSeries" in out
    assert "requests" in out  # a remote open reports its cost
    code, _, err = run(capsys, "info", url, "--storage-option", "anon")
    assert_one_line_error(code, err, "KEY=VALUE", status=2)


# -- index -----------------------------------------------------------------------------------


def test_index_writes_references_that_open(rec, tmp_path, capsys):
    out_json = tmp_path / "refs.json"
    code, out, err = run(capsys, "index", rec, "-o", out_json)
    assert code == 0, err
    assert str(out_json) in out and "chunks" in out
    assert "refs" in json.loads(out_json.read_text()) or json.loads(out_json.read_text())
    ds = xr.open_dataset(rec, engine="nwbzarr", index=str(out_json))
    direct = xr.open_dataset(rec, engine="nwbzarr")
    np.testing.assert_array_equal(ds.data.values, direct.data.values)


def test_index_refuses_missing_folder_and_overwrite(rec, tmp_path, capsys):
    target = tmp_path / "no" / "such" / "refs.json"
    code, _, err = run(capsys, "index", rec, "-o", target)
    assert_one_line_error(code, err, "does not exist", "create it first")
    assert not (tmp_path / "no").exists()  # no folder made behind the user's back
    existing = tmp_path / "refs.json"
    existing.write_text("keep me")
    code, _, err = run(capsys, "index", rec, "-o", existing)
    assert_one_line_error(code, err, "exists", "--force")
    assert existing.read_text() == "keep me"
    code, _, err = run(capsys, "index", rec, "-o", existing, "--force")
    assert code == 0 and existing.read_text() != "keep me"


def test_unwritable_output_is_one_line(rec, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for argv in (
        ["index", rec, "-o", a_file / "refs.json"],
        ["tfr", rec, "--freqs", FREQS, "-o", a_file / "out.zarr"],
        ["plot", rec, "-o", a_file / "fig.png"],
    ):
        code, _, err = run(capsys, *argv)
        assert_one_line_error(code, err, "does not exist")
    if os.geteuid() == 0:
        return  # root writes into read-only folders; the folder-mode check means nothing
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run(capsys, "index", rec, "-o", locked / "refs.json")
    assert_one_line_error(code, err, "cannot write")


# -- tfr -------------------------------------------------------------------------------------


def test_tfr_power_equals_the_library(rec, tmp_path, capsys):
    out = tmp_path / "power.zarr"
    code, stdout, err = run(
        capsys,
        "tfr",
        rec,
        "--freqs",
        FREQS,
        "--decim",
        "5",
        "-o",
        out,
        "--dtype",
        "float64",
        "--quiet",
    )
    assert code == 0, err
    assert "is complete" in stdout
    saved = open_result(out)
    ds = xr.open_dataset(rec, engine="nwbzarr")
    expected = ds.ephys.morlet(np.geomspace(6, 60, 5), n_cycles=7.0, decim=5, output="power")
    np.testing.assert_allclose(saved.data.values, expected.data.values, rtol=1e-12)
    np.testing.assert_allclose(saved.time.values, expected.time.values)
    assert saved.attrs["xnwb_complete"] is True
    code, stdout, _ = run(
        capsys, "tfr", rec, "--freqs", FREQS, "--decim", "5", "-o", out, "--dtype", "float64"
    )
    assert code == 0 and "already complete" in stdout


def test_tfr_zscore_saves_statistics_beside_it(rec, tmp_path, capsys):
    out = tmp_path / "z.zarr"
    code, stdout, err = run(
        capsys,
        "tfr",
        rec,
        "--freqs",
        FREQS,
        "--decim",
        "5",
        "--zscore",
        "--baseline",
        "1,9",
        "-o",
        out,
        "--quiet",
    )
    assert code == 0, err
    assert 'group="statistics"' in stdout
    ds = xr.open_dataset(rec, engine="nwbzarr")
    power = ds.ephys.morlet(np.geomspace(6, 60, 5), decim=5, output="power")
    stats = power.ephys.stats(baseline=(1.0, 9.0), progress=False)
    saved_stats = xr.open_zarr(out, group="statistics")
    np.testing.assert_allclose(saved_stats["mean"].values, stats["mean"].values, rtol=1e-12)
    np.testing.assert_allclose(saved_stats["std"].values, stats["std"].values, rtol=1e-12)
    expected = power.zscore(stats=stats).data.values
    np.testing.assert_allclose(open_result(out).data.values, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("argv", "status", "words"),
    [
        (["--freqs", "10:100"], 2, ["'10:100'", "START:STOP:COUNT"]),
        (["--freqs", "abc"], 2, ["'abc'"]),
        (["--freqs", "0,10"], 2, ["positive"]),
        (["--freqs", "10:5:3"], 2, ["START < STOP"]),
        (["--freqs", "10,900"], 1, ["900"]),  # above Nyquist: the library's own message
        (["--freqs", FREQS, "--baseline", "1,9"], 1, ["--zscore"]),
        (["--freqs", FREQS, "--zscore", "--baseline", "x"], 2, ["T0,T1"]),
        (["--freqs", FREQS, "--scheduler", "bogus"], 1, ["bogus", "tcp://"]),
        (["--freqs", FREQS, "--part-size", "lots"], 2, ["512MiB"]),
    ],
)
def test_tfr_bad_options(rec, tmp_path, capsys, argv, status, words):
    code, _, err = run(capsys, "tfr", rec, *argv, "-o", tmp_path / "out.zarr")
    assert_one_line_error(code, err, *words, status=status)
    assert not (tmp_path / "out.zarr").exists() or status == 1


def test_tfr_refuses_other_parameters_and_foreign_stores(rec, tmp_path, capsys):
    out = tmp_path / "out.zarr"
    assert run(capsys, "tfr", rec, "--freqs", FREQS, "-o", out, "--quiet")[0] == 0
    code, _, err = run(capsys, "tfr", rec, "--freqs", "6:60:6", "-o", out)
    assert_one_line_error(code, err, "other parameters", "--force")
    code, _, err = run(capsys, "tfr", rec, "--freqs", "6:60:6", "-o", out, "--force", "--quiet")
    assert code == 0, err
    assert open_result(out).sizes["frequency"] == 6
    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"x": ("t", np.arange(3))}).to_zarr(foreign, consolidated=False)
    code, _, err = run(capsys, "tfr", rec, "--freqs", FREQS, "-o", foreign, "--force")
    assert_one_line_error(code, err, "not an xnwb result")
    assert xr.open_zarr(foreign, consolidated=False).x.values.tolist() == [0, 1, 2]  # left alone
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "tfr", rec, "--freqs", FREQS, "-o", folder, "--force")
    assert_one_line_error(code, err, "not a Zarr store")
    assert (folder / "notes.txt").read_text() == "mine"


class InterruptAfterParts:
    """A dask callback that presses Ctrl-C once ``parts`` parts of ``store`` are recorded,
    in the middle of the next part's tasks (the KeyboardInterrupt a terminal would send)."""

    def __init__(self, store, parts: int) -> None:
        from dask.callbacks import Callback

        self.store, self.parts, self.tasks_after = store, parts, 0

        def posttask(key, result, dsk, state, worker_id):
            done = (result_state(self.store) or {}).get("xnwb_parts_done", [])
            if len(done) >= self.parts:
                self.tasks_after += 1
                if self.tasks_after >= 3:
                    raise KeyboardInterrupt

        self.callback = Callback(posttask=posttask)


def test_interrupted_tfr_resumes_to_the_uninterrupted_result(rec, tmp_path, capsys):
    # Short wavelets, so the transform's blocks (and the store's parts) are short; decimated,
    # so they are sixteen halos long (at full rate a block fills an 8,192-point FFT: two
    # blocks would cover this 12 s record).
    argv = ["tfr", rec, "--freqs", "40:80:3", "--decim", "2", "--zscore", "--part-size", "40KiB",
            "--quiet"]  # fmt: skip
    whole = tmp_path / "whole.zarr"
    assert run(capsys, *argv, "-o", whole)[0] == 0
    parts = result_state(whole)["xnwb_parts"]
    assert parts >= 4

    cut = tmp_path / "cut.zarr"
    with InterruptAfterParts(cut, 2).callback:
        code, _, err = run(capsys, *argv, "-o", cut)
    assert code == 130
    assert "run the same command again to resume" in err and str(cut) in err
    state = result_state(cut)
    assert state["xnwb_complete"] is False and len(state["xnwb_parts_done"]) == 2

    # A half-written store is refused by every reader that knows it, and says how to finish.
    with pytest.raises(IncompleteResultError, match="2 of"):
        open_result(cut)
    code, _, err = run(capsys, "plot", rec, "--tfr", cut, "-o", tmp_path / "f.png")
    assert_one_line_error(code, err, "incomplete", "again")
    assert not (tmp_path / "f.png").exists()
    # Opened with xarray itself (as `xnwb tfr` suggests for finished stores), the parts not
    # written yet would draw as blank panels: the plot says why.
    raw = xr.open_zarr(cut, consolidated=False)
    blank = raw.data.isnull().all(("channel", "frequency")).values
    at = float(raw.time[np.argmax(blank)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plt.close(plot_window(raw, at, 0.5))
    said = [str(w.message) for w in caught]
    assert any("incomplete (2 of" in m for m in said), said
    assert any("no finite value" in m and "channels 0, 1" in m for m in said), said

    code, out, err = run(capsys, *argv, "-o", cut)
    assert code == 0, err
    assert "resumed: 2 parts were on disk" in out and f"wrote {parts - 2} of {parts}" in out
    a, b = open_result(whole), open_result(cut)
    np.testing.assert_array_equal(a.data.values, b.data.values)
    np.testing.assert_array_equal(
        xr.open_zarr(whole, group="statistics")["std"].values,
        xr.open_zarr(cut, group="statistics")["std"].values,
    )


def test_tfr_on_a_distributed_scheduler_with_progress(rec, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    local = tmp_path / "local.zarr"
    assert run(capsys, "tfr", rec, "--freqs", FREQS, "--zscore", "-o", local, "--quiet")[0] == 0
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        out = tmp_path / "cluster.zarr"
        code, stdout, err = run(
            capsys,
            "tfr",
            rec,
            "--freqs",
            FREQS,
            "--zscore",
            "--scheduler",
            cluster.scheduler_address,
            "-o",
            out,
        )
    assert code == 0, err
    assert f"on {cluster.scheduler_address}: 2 workers" in stdout
    # distributed's own bar, for the statistics pass and for every part written
    assert stdout.count("100% Completed") >= 1 + result_state(out)["xnwb_parts"]
    np.testing.assert_allclose(
        open_result(out).data.values, open_result(local).data.values, rtol=1e-6
    )


def test_tfr_scheduler_not_reachable(rec, tmp_path, capsys):
    from tests.loopback import free_port

    code, _, err = run(
        capsys,
        "tfr",
        rec,
        "--freqs",
        FREQS,
        "-o",
        tmp_path / "o.zarr",
        "--scheduler",
        f"tcp://127.0.0.1:{free_port()}",
    )
    assert_one_line_error(code, err, "could not reach the dask scheduler")


# -- the saved result, opened by plain xarray --------------------------------------------------


def test_saved_result_plots_and_browses_without_recomputing(rec, tmp_path, capsys):
    pytest.importorskip("ipywidgets")
    from xnwb.testing import raise_if_dask_computes

    out = tmp_path / "z.zarr"
    assert run(capsys, "tfr", rec, "--freqs", FREQS, "--zscore", "-o", out, "--quiet")[0] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a finished store opens cleanly (consolidated)
        saved = xr.open_zarr(out)
    graph = saved.data.data.__dask_graph__()
    # Only reads of the store: no transform, no statistics in the graph.
    assert not [k for k in graph if "morlet" in str(k) or "transform" in str(k)]
    with raise_if_dask_computes(max_computes=2):
        fig = saved.ephys.plot_window(2.0, 3.0, channels=[0, 4])
    assert len(fig.axes) >= 2
    viewer = saved.ephys.browse(duration=2.0, channels=[1])
    assert viewer.figure is not None
    viewer.start.value = 6.0
    viewer.redraw()
    assert viewer.figure is not None


# -- plot ------------------------------------------------------------------------------------


def png_checks(path) -> None:
    """Not blank, and text kept at the bottom (time label) and left (channel/frequency label)."""
    image = matplotlib.image.imread(path)[..., :3]
    dark = image.mean(axis=2) < 0.6
    assert dark.mean() > 0.01, "the picture is (nearly) blank"
    h, w = dark.shape
    assert dark[int(0.93 * h) :, int(0.3 * w) : int(0.7 * w)].any(), "x-axis label clipped"
    assert dark[int(0.3 * h) : int(0.7 * h), : int(0.03 * w)].any(), "y-axis label clipped"


def test_plot_raw_tfr_and_zscore(rec, tmp_path, capsys):
    raw = tmp_path / "raw.png"
    code, out, err = run(
        capsys, "plot", rec, "--start", "2", "--duration", "1.5", "--channels", "0,3", "-o", raw
    )
    assert code == 0, err
    assert "raw traces" in out and str(raw) in out
    png_checks(raw)
    live = tmp_path / "live.png"
    code, out, err = run(
        capsys,
        "plot",
        rec,
        "--start",
        "2",
        "--duration",
        "2",
        "--channels",
        "0",
        "--freqs",
        FREQS,
        "--zscore",
        "-o",
        live,
    )
    assert code == 0 and "z-scored power" in out, err
    png_checks(live)
    store = tmp_path / "p.zarr"
    assert run(capsys, "tfr", rec, "--freqs", FREQS, "-o", store, "--quiet")[0] == 0
    saved = tmp_path / "saved.png"
    code, out, err = run(
        capsys,
        "plot",
        rec,
        "--tfr",
        store,
        "--start",
        "3",
        "--duration",
        "4",
        "--channels",
        "0,7",
        "-o",
        saved,
    )
    assert code == 0 and "saved power" in out, err
    png_checks(saved)


@pytest.mark.parametrize(
    ("argv", "status", "words"),
    [
        (["--channels", "0,42"], 1, ["42"]),
        (["--duration", "0"], 1, ["--duration"]),
        (["--zscore"], 1, ["--freqs"]),
        (["--channels", ","], 2, ["names no channel"]),
    ],
)
def test_plot_bad_input(rec, tmp_path, capsys, argv, status, words):
    code, _, err = run(capsys, "plot", rec, *argv, "-o", tmp_path / "f.png")
    assert_one_line_error(code, err, *words, status=status)
    assert not (tmp_path / "f.png").exists()


def test_plot_tfr_missing_store(rec, tmp_path, capsys):
    code, _, err = run(
        capsys, "plot", rec, "--tfr", tmp_path / "none.zarr", "-o", tmp_path / "f.png"
    )
    assert_one_line_error(code, err, "no result store", "xnwb tfr")


# -- demo ------------------------------------------------------------------------------------


def burst_rows(out: str) -> dict[str, list[float]]:
    """The demo's summary: per burst, (z there, z other channels, z same channel elsewhere)."""
    rows = {}
    for line in out.splitlines():
        for band in ("theta", "beta", "gamma"):
            if line.strip().startswith(band):
                values = line.split()[-3:]
                rows[band] = [float("nan") if v == "-" else float(v) for v in values]
    return rows


def test_demo_shows_the_bursts_where_they_were_put(tmp_path, capsys):
    code, out, err = run(
        capsys,
        "demo",
        "--out",
        tmp_path,
        "--duration",
        "12",
        "--channels",
        "6",
        "--plot",
        "--quiet",
    )
    assert code == 0, err
    rows = burst_rows(out)
    assert set(rows) == {"theta", "beta", "gamma"}
    for band, (there, others, elsewhere) in rows.items():
        assert there > 1.0, (band, rows)
        assert there > others + 1.0 and there > elsewhere + 1.0, (band, rows)
    for b in demo_bursts(12.0, 6):
        assert f"{b.start:g}-{b.stop:g}" in out
    for name in ("demo_raw.png", "demo_zscore.png"):
        assert str(tmp_path / name) in out
        png_checks(tmp_path / name)
    code, again, _ = run(
        capsys, "demo", "--out", tmp_path, "--duration", "12", "--channels", "6", "--quiet"
    )
    assert code == 0 and "written earlier" in again and burst_rows(again) == rows


@pytest.mark.parametrize("channels", [1, 2])
def test_demo_with_one_or_two_channels(tmp_path, capsys, channels):
    code, out, err = run(
        capsys, "demo", "--out", tmp_path, "--duration", "8", "--channels", channels, "--quiet"
    )
    assert code == 0, err
    rows = burst_rows(out)
    assert len(rows) == 3 and all(r[0] > 1.0 for r in rows.values()), rows


def test_demo_shortest_duration_works(tmp_path, capsys):
    code, out, err = run(
        capsys, "demo", "--out", tmp_path, "--duration", "2.8", "--channels", "3", "--quiet"
    )
    assert code == 0, err
    assert len(burst_rows(out)) == 3


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--channels", "0"], ["--channels 0", "at least 1"]),
        (["--channels", "-3"], ["--channels -3"]),
        (["--duration", "1"], ["--duration 1", "at least 2.8 s"]),
        (["--duration", "-5"], ["--duration -5"]),
        (["--duration", "nan"], ["--duration nan"]),
    ],
)
def test_demo_bad_sizes_are_one_line(tmp_path, capsys, argv, words):
    code, _, err = run(capsys, "demo", "--out", tmp_path, *argv)
    assert_one_line_error(code, err, *words)
    assert not any(tmp_path.glob("*.nwb"))


def test_zarr_store_layout_is_plain(rec, tmp_path, capsys):
    """What a user finds in the store: data, coordinates, and the markers last."""
    out = tmp_path / "o.zarr"
    assert run(capsys, "tfr", rec, "--freqs", FREQS, "-o", out, "--quiet")[0] == 0
    group = zarr.open_group(out, mode="r")
    assert {"data", "time", "frequency", "channel"} <= set(group.array_keys())
    attrs = group.attrs.asdict()
    assert attrs["xnwb_params"]["freqs"] == pytest.approx(list(np.geomspace(6, 60, 5)))
    assert attrs["xnwb_parts_done"] == list(range(attrs["xnwb_parts"]))


def test_a_saved_complex_transform_keeps_its_coefficients_and_lossy_types_are_refused(tmp_path):
    # A complex transform used to be stored as float32: its real parts only, with nothing
    # but numpy's ComplexWarning from inside dask to say so.
    from xnwb.exceptions import ResultError
    from xnwb.results import save_transform

    rng = np.random.default_rng(2)
    da = xr.DataArray(
        rng.standard_normal((2, 4000)),
        dims=("channel", "time"),
        coords={"time": np.arange(4000) / 250.0},
        attrs={"rate": 250.0},
    )
    coefs = da.chunk({"time": 1000}).ephys.morlet([10.0, 30.0], n_cycles=5.0, decim=2)
    out = tmp_path / "complex.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        save_transform(coefs, out, progress=False)
    back = open_result(out).data
    assert back.dtype == np.complex64
    expected = coefs.values
    assert float(np.abs(back.values - expected).max()) <= 1e-6 * float(np.abs(expected).max())
    for lossy, why in ((np.float32, "complex64 or complex128"), (np.int16, "floating-point")):
        source = coefs if lossy is np.float32 else coefs.real
        with pytest.raises(ResultError, match=why):
            save_transform(source, tmp_path / f"{np.dtype(lossy).name}.zarr", dtype=lossy)
    power = da.chunk({"time": 1000}).ephys.morlet([10.0], n_cycles=5.0, output="power")
    save_transform(power, tmp_path / "power.zarr", progress=False)
    assert open_result(tmp_path / "power.zarr").data.dtype == np.float32  # as before


def test_tfr_does_not_resume_or_reuse_a_store_made_from_another_version_of_the_file(
    tmp_path, capsys
):
    # Same path, same shape, other samples: resuming would mix two recordings in one store
    # and call it complete.
    source = tmp_path / "rec.nwb"
    write_demo_recording(source, duration=4.0, n_channels=4, seed=1)
    out = tmp_path / "out.zarr"
    assert run(capsys, "tfr", source, "--freqs", FREQS, "-o", out, "--quiet")[0] == 0
    os.remove(source)
    write_demo_recording(source, duration=4.0, n_channels=4, seed=2)
    code, _, err = run(capsys, "tfr", source, "--freqs", FREQS, "-o", out, "--quiet")
    assert_one_line_error(code, err, "other parameters", "source_version", "--force")


def test_tfr_refuses_decim_zero_and_a_baseline_outside_the_record_before_writing(
    rec, tmp_path, capsys
):
    out = tmp_path / "out.zarr"
    code, _, err = run(capsys, "tfr", rec, "--freqs", FREQS, "--decim", "0", "-o", out)
    assert_one_line_error(code, err, "decim must be a positive integer")
    for baseline, words in (("100,200", "no sample"), ("nan,2", "NaN")):
        code, _, err = run(
            capsys, "tfr", rec, "--freqs", FREQS, "--zscore", "--baseline", baseline, "-o", out
        )
        assert_one_line_error(code, err, words)
    assert not out.exists()  # so the corrected command is not refused as "other parameters"
    code, _, err = run(
        capsys, "tfr", rec, "--freqs", FREQS, "--zscore", "--baseline", "1,2", "-o", out, "--quiet"
    )
    assert code == 0, err


def test_a_half_precision_store_is_refused():
    from xnwb.exceptions import ResultError
    from xnwb.results import _stored_dtype

    with pytest.raises(ResultError, match="float32 or float64"):
        _stored_dtype(np.dtype("float64"), np.float16)
    assert _stored_dtype(np.dtype("float64"), np.float32) == np.float32


def test_an_index_of_a_relative_source_names_it_from_the_index_s_own_folder(
    rec, tmp_path, capsys, monkeypatch
):
    # Readers look for a relative source beside the JSON; it used to be written as given,
    # relative to the working folder (sub/rec.nwb indexed into sub/rec.json -> sub/sub/...).
    import shutil

    (tmp_path / "sub").mkdir()
    shutil.copy(rec, tmp_path / "sub" / "rec.nwb")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "index", "sub/rec.nwb", "-o", "sub/rec.json", "--quiet")
    assert code == 0, err
    monkeypatch.chdir(tmp_path / "sub")
    code, _, err = run(capsys, "index", "rec.nwb", "-o", "../up.json", "--quiet")
    assert code == 0, err
    expected = xr.open_dataset(rec, engine="nwbzarr").data[:500].values
    monkeypatch.chdir("/")  # anywhere else
    got = xr.open_dataset(tmp_path / "sub" / "rec.json", engine="nwbzarr").data[:500].values
    np.testing.assert_array_equal(got, expected)
    # an index outside the file's folder is used as index= (opened as the source, it may
    # name files in its own folder only); it names the right file
    up = xr.open_dataset(tmp_path / "sub" / "rec.nwb", engine="nwbzarr", index=tmp_path / "up.json")
    np.testing.assert_array_equal(up.data[:500].values, expected)
    assert json.loads((tmp_path / "up.json").read_text())["refs"]  # written
    assert '"sub/rec.nwb"' in (tmp_path / "up.json").read_text()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--start", "100"], ["outside the recording"]),
        (["--start", "nan"], ["start must be a time"]),
        (["--duration", "inf"], ["duration must be a positive"]),
        (["--start", "1", "-o", "fig.xyz"], ["'xyz'", ".png"]),
    ],
)
def test_plot_tells_ordinary_mistakes_in_one_line_not_as_crashes(
    rec, tmp_path, capsys, argv, words
):
    # These used to print "unexpected ValueError/OverflowError ... report it".
    output = [] if "-o" in argv else ["-o", tmp_path / "fig.png"]
    code, _, err = run(capsys, "plot", rec, *argv, *output)
    assert_one_line_error(code, err, *words)
    assert "unexpected" not in err


def test_a_window_on_a_time_axis_that_steps_back_is_refused_by_name():
    from xnwb.exceptions import TimeAxisError
    from xnwb.plot import select_window

    times = np.arange(100) / 10.0
    times[50] = times[40]
    da = xr.DataArray(np.zeros((100, 1)), dims=("time", "channel"), coords={"time": times})
    with pytest.raises(TimeAxisError, match="does not increase"):
        select_window(da, 4.2, 1.0)


def test_tfr_of_a_url_does_not_resume_a_store_made_from_another_version_of_it(
    http_remote, tmp_path, capsys
):
    first, second = tmp_path / "a.nwb", tmp_path / "b.nwb"
    write_demo_recording(first, duration=4.0, n_channels=4, seed=1)
    write_demo_recording(second, duration=4.0, n_channels=4, seed=2)
    url = http_remote.upload("rec.nwb", first)
    out = tmp_path / "out.zarr"
    assert run(capsys, "tfr", url, "--freqs", FREQS, "-o", out, "--quiet")[0] == 0
    code, out_text, _ = run(capsys, "tfr", url, "--freqs", FREQS, "-o", out, "--quiet")
    assert code == 0 and "already complete" in out_text  # the same object: reused
    http_remote.upload("rec.nwb", second)  # replaced in place, same name and shape
    code, _, err = run(capsys, "tfr", url, "--freqs", FREQS, "-o", out, "--quiet")
    assert_one_line_error(code, err, "other parameters", "source_version")
