"""browse(): the notebook viewer draws each window it is moved to, and reads only that window.

Two kinds of tests: in-process ones that set the widgets' values and count the byte ranges
read (``ByteSource.fetch`` wrapped, as in ``tests/test_plot.py``), mapped back to HDF5 chunks
with h5py; and one that runs a notebook in a real Jupyter kernel (nbclient) and checks the
figure after every move from facts the kernel prints.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import h5py
import matplotlib
import numpy as np
import pytest
import xarray as xr
from dask.callbacks import Callback

from tests.conftest import counts, write_nwb
from xnwb.browse import NO_CHANNEL, Browser, browse
from xnwb.exceptions import ChannelNotFoundError
from xnwb.plot import select_window

matplotlib.use("Agg")
pytest.importorskip("ipywidgets", reason="browse() needs ipywidgets")

RATE, N_TIMES, CHUNK = 10_000.0, 600_000, (10_000, 4)  # 60 s × 8 channels, 1 s × 4 channels
MARGIN = 12.0  # s: how far around a window a transform's reads may reach (its blocks, halo)
FREQS = [10.0, 20.0, 40.0]
DATA_PATH = "acquisition/ElectricalSeries/data"


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("browse") / "rec.nwb"
    return write_nwb(
        path,
        [
            dict(
                name="ElectricalSeries",
                data=counts(N_TIMES, 8),
                rate=RATE,
                region=range(8),  # electrode ids 100..107
                conversion=1e-6,
                chunks=CHUNK,
                compression="gzip",
                shuffle=True,
            )
        ],
    )


@pytest.fixture(scope="module")
def chunk_of(recording) -> dict[int, tuple[int, int]]:
    """Byte offset of every stored chunk -> its (time, channel) chunk position, from h5py."""
    where: dict[int, tuple[int, int]] = {}
    with h5py.File(recording) as f:
        f[DATA_PATH].id.chunk_iter(
            lambda c: where.__setitem__(
                c.byte_offset, (c.chunk_offset[0] // CHUNK[0], c.chunk_offset[1] // CHUNK[1])
            )
        )
    return where


def read_chunks(log, chunk_of) -> list[tuple[int, int]]:
    """The (time, channel) chunks read since the last call, sorted (a chunk read twice shows
    twice), and clear the log."""
    got = sorted(chunk_of[start] for start, _ in log)
    log.clear()
    return got


def window_chunks(t0: float, t1: float, channel_chunks=(0,)) -> list[tuple[int, int]]:
    """Stored chunks holding the samples of [t0, t1) s."""
    first, last = int(t0 * RATE) // CHUNK[0], (round(t1 * RATE) - 1) // CHUNK[0]
    return sorted((t, c) for t in range(first, last + 1) for c in channel_chunks)


def panels(fig) -> list:
    """Spectrogram panels of a figure (its axes holding a mesh, colour bars left out)."""
    return [ax for ax in fig.axes if ax.collections and ax.get_label() != "<colorbar>"]


def title(ax) -> str:
    return ax.get_title() or ax.get_title(loc="left")


def span(t0: float, duration: float) -> tuple[float, float]:
    """The x-limits of a window's traces: its first and last sample times."""
    return round(t0, 6), round(t0 + duration - 1 / RATE, 6)


def xlim(fig) -> tuple[float, float]:
    lo, hi = fig.axes[0].get_xlim()
    return round(float(lo), 6), round(float(hi), 6)


@pytest.mark.parametrize("chunks", [None, {}], ids=["lazy-array", "dask"])
def test_each_move_reads_only_the_new_window(recording, chunk_of, fetch_log, chunks):
    ds = xr.open_dataset(recording, engine="nwbzarr", chunks=chunks)
    fetch_log.clear()
    viewer = browse(ds, start=10.0, duration=0.5, channels=[100])
    assert read_chunks(fetch_log, chunk_of) == [(10, 0)]
    assert len(viewer.figure.axes[0].lines) == 1 and xlim(viewer.figure) == span(10.0, 0.5)

    viewer.start.value = 30.0
    assert read_chunks(fetch_log, chunk_of) == [(30, 0)]
    assert xlim(viewer.figure) == span(30.0, 0.5)

    viewer.duration.value = 2.0
    assert read_chunks(fetch_log, chunk_of) == window_chunks(30.0, 32.0)
    assert xlim(viewer.figure) == span(30.0, 2.0)

    viewer.channels.value = (100, 105)  # electrode 105 lives in the second channel chunk
    assert read_chunks(fetch_log, chunk_of) == window_chunks(30.0, 32.0, (0, 1))
    lines = viewer.figure.axes[0].lines
    assert len(lines) == 2
    ticks = [t.get_text() for t in viewer.figure.axes[0].get_yticklabels()]
    assert ticks == ["100", "105"]

    viewer.forward.click()  # one window on
    assert viewer.start.value == 32.0
    assert read_chunks(fetch_log, chunk_of) == window_chunks(32.0, 34.0, (0, 1))
    viewer.back.click()
    viewer.back.click()
    assert viewer.start.value == 28.0
    assert read_chunks(fetch_log, chunk_of) == window_chunks(28.0, 32.0, (0, 1))
    assert viewer.draws == 7 and viewer.error is None
    assert viewer.output.outputs[0]["data"]["image/png"]  # the figure is on display


def test_the_start_range_follows_the_duration_with_one_draw_per_move(recording, fetch_log):
    ds = xr.open_dataset(recording, engine="nwbzarr")
    viewer = browse(ds, duration=1.0, channels=[101])
    assert (viewer.start.min, viewer.start.max) == (0.0, 59.0)
    assert viewer.duration.max == 60.0  # bounded by the record

    viewer.start.value = 100.0  # past the end: clamped to the last full window
    assert viewer.start.value == 59.0
    assert xlim(viewer.figure) == span(59.0, 1.0)
    draws = viewer.draws
    fetch_log.clear()
    viewer.duration.value = 5.0  # lowers the start's maximum below its value: one redraw
    assert (viewer.start.max, viewer.start.value) == (55.0, 55.0)
    assert viewer.draws == draws + 1
    assert len(fetch_log) == 5  # 55-60 s of one channel chunk, read once
    assert xlim(viewer.figure) == span(55.0, 5.0)

    viewer.duration.value = 0.5  # raises the maximum: the start stays
    assert (viewer.start.max, viewer.start.value) == (59.5, 55.0)
    assert viewer.draws == draws + 2

    viewer.duration.value = 1000.0  # longer than the record: the whole record
    assert viewer.duration.value == 60.0
    assert (viewer.start.max, viewer.start.value) == (0.0, 0.0)
    assert xlim(viewer.figure) == span(0.0, 60.0)
    assert viewer.draws == draws + 3


def test_no_channel_selected_shows_a_message_and_draws_nothing(recording, fetch_log):
    ds = xr.open_dataset(recording, engine="nwbzarr")
    viewer = browse(ds, duration=0.5, freqs=FREQS, n_cycles=5)
    assert list(viewer.channels.value) == [100, 101, 102, 103]  # the first few by default
    fetch_log.clear()
    viewer.channels.value = ()
    assert viewer.figure is None and viewer.message == NO_CHANNEL
    assert fetch_log == []
    (shown,) = viewer.output.outputs
    assert shown["output_type"] == "stream" and NO_CHANNEL in shown["text"]
    viewer.view.value = "spectrogram"  # still nothing to draw, nothing computed
    viewer.start.value = 20.0
    assert viewer.figure is None and fetch_log == []

    viewer.channels.value = (107,)
    assert len(panels(viewer.figure)) == 1 and viewer.message is None
    assert title(panels(viewer.figure)[0]) == "channel 107"
    assert "image/png" in viewer.output.outputs[0]["data"]


class TaskCount(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.tasks = 0

    def _pretask(self, key, dask, state) -> None:
        self.tasks += 1


@pytest.mark.parametrize("source", ["freqs", "zscore"])
def test_the_spectrogram_computes_only_the_window(recording, chunk_of, fetch_log, source):
    ds = xr.open_dataset(recording, engine="nwbzarr")
    if source == "freqs":
        spectrogram = {"freqs": FREQS, "n_cycles": 5}
    else:
        tfr = ds.ephys.morlet(FREQS, n_cycles=5, decim=10)
        stats = tfr.ephys.stats(progress=False)  # one pass, before the viewer
        spectrogram = {"tfr": tfr.zscore(stats=stats)}
    fetch_log.clear()
    viewer = browse(ds, start=30.0, duration=2.0, channels=[100, 101], **spectrogram)
    assert viewer.tfr.attrs["decim"] == 10  # 10 kHz in: about 1 kHz out
    assert viewer.tfr.chunks is not None  # lazy: the first (raw) draw read the raw window only
    assert read_chunks(fetch_log, chunk_of) == window_chunks(30.0, 32.0)
    with TaskCount() as counted:
        viewer.view.value = "spectrogram"
    got = read_chunks(fetch_log, chunk_of)
    assert set(window_chunks(30.0, 32.0)) <= set(got)  # the window's own chunks, once each
    assert len(got) == len(set(got))
    # The stored chunks under the transform blocks of channels 100-101 (positions 0-1) only.
    first_group = viewer.tfr.chunks[0][0]  # channels per transform block
    block_chunks = set(range(-(-first_group // CHUNK[1])))
    assert all(30.0 - MARGIN <= t < 32.0 + MARGIN and c in block_chunks for t, c in got), got
    graph = len(viewer.tfr.data.__dask_graph__())  # the whole record's transform
    assert counted.tasks < graph / 4, (counted.tasks, graph)
    with TaskCount() as alone:  # the same window of the transform, computed directly
        select_window(viewer.tfr, 30.0, 2.0, [100, 101]).compute()
    assert counted.tasks == alone.tasks
    fig = viewer.figure
    assert [title(ax) for ax in panels(fig)] == ["channel 100", "channel 101"]
    mesh = panels(fig)[0].collections[0]
    times = 2.0 * RATE / int(viewer.tfr.attrs["decim"])
    assert mesh.get_array().size == len(FREQS) * times
    assert xlim(fig)[0] == pytest.approx(30.0, abs=0.01)
    assert xlim(fig)[1] == pytest.approx(32.0, abs=0.01)

    fetch_log.clear()
    viewer.view.value = "raw"  # back to traces: the raw window only
    assert read_chunks(fetch_log, chunk_of) == window_chunks(30.0, 32.0)
    assert len(viewer.figure.axes[0].lines) == 2


def test_a_move_of_the_window_reuses_the_layout(recording):
    """Only a change of view, channels or duration lays the figure out again."""
    viewer = browse(xr.open_dataset(recording, engine="nwbzarr"), duration=1.0, channels=[100, 101])
    first = [ax.get_position().bounds for ax in viewer.figure.axes]
    viewer.start.value = 20.0
    moved = viewer.figure
    assert type(moved.get_layout_engine()).__name__ == "PlaceHolderLayoutEngine"
    assert [ax.get_position().bounds for ax in moved.axes] == first
    assert xlim(moved) == pytest.approx(span(20.0, 1.0), abs=2 / RATE)
    png = viewer.output.outputs[0]["data"]["image/png"]
    assert len(png) > 10_000  # a drawn figure, not an empty canvas
    viewer.channels.value = (100, 101, 102)
    assert type(viewer.figure.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
    assert len(viewer.figure.axes[0].lines) >= 3


def test_without_a_transform_the_switch_is_disabled(recording):
    ds = xr.open_dataset(recording, engine="nwbzarr")
    viewer = browse(ds)
    assert viewer.view.disabled and viewer.tfr is None
    assert "tfr=" in viewer.view.tooltip and "freqs=" in viewer.view.tooltip
    with pytest.raises(ValueError, match="freqs="):
        browse(ds, view="spectrogram")


def test_default_decimation_gives_about_1_khz():
    t = np.arange(20_000) / 5000.0
    da = xr.DataArray(
        np.random.default_rng(1).standard_normal((20_000, 2)),
        dims=("time", "channel"),
        coords={"time": t, "channel": ["a", "b"]},
    )
    viewer = browse(da, duration=0.5, freqs=FREQS, view="spectrogram")
    assert viewer.tfr.attrs["decim"] == 5 and viewer.tfr.attrs["rate"] == 1000.0
    assert [title(ax) for ax in panels(viewer.figure)] == ["channel a", "channel b"]
    assert browse(da, freqs=FREQS, decim=2).tfr.attrs["rate"] == 2500.0


def test_a_single_series_has_no_channel_list():
    t = np.arange(3000) / 100.0
    da = xr.DataArray(np.sin(t), dims="time", coords={"time": t + 5.0}, name="speed")
    viewer = browse(da, duration=10.0)
    assert viewer.channels is None
    assert (viewer.start.min, viewer.start.max) == (5.0, 25.0)
    assert len(viewer.figure.axes[0].lines) == 1
    viewer.start.value = 12.0
    assert xlim(viewer.figure) == (12.0, 21.99)
    with pytest.raises(ChannelNotFoundError, match="no 'channel' dimension"):
        browse(da, channels=[0])


def test_bad_arguments_are_named(recording):
    ds = xr.open_dataset(recording, engine="nwbzarr")
    with pytest.raises(ChannelNotFoundError, match=r"channels \[999\] are not in this rec"):
        browse(ds, channels=[100, 999])
    with pytest.raises(ValueError, match="positive"):
        browse(ds, duration=0.0)
    with pytest.raises(ValueError, match="not both"):
        browse(ds, freqs=FREQS, tfr=ds.ephys.morlet(FREQS))
    with pytest.raises(ValueError, match="view must be"):
        browse(ds, view="traces")
    tfr = ds.ephys.morlet(FREQS, n_cycles=5, decim=10)
    with pytest.raises(ValueError, match=r"lacks channels \[104, 105, 106, 107\]"):
        browse(ds, tfr=tfr.sel(channel=[100, 101, 102, 103]))
    with pytest.raises(ValueError, match="tfr covers 0–30 s but the recording 0–60 s"):
        browse(ds, tfr=tfr.isel(time=slice(0, 30_000)))
    with pytest.raises(ValueError, match="no 'frequency' dimension"):
        browse(ds, tfr=ds)
    with pytest.raises(ValueError, match="no variable 'data'"):
        browse(ds.rename({"data": "lfp"}))


def test_a_failed_read_is_shown_in_the_output(recording, tmp_path):
    path = tmp_path / "cut.nwb"
    shutil.copy(recording, path)
    ds = xr.open_dataset(path, engine="nwbzarr")
    viewer = browse(ds, duration=1.0, channels=[100])
    assert viewer.figure is not None
    with open(path, "r+b") as f:  # the file loses its second half under the viewer
        f.truncate(os.path.getsize(path) // 2)
    viewer.start.value = 55.0
    assert viewer.figure is None and viewer.error is not None
    assert viewer.message.startswith("could not draw this window: SourceChangedError")
    stdout, stderr = viewer.output.outputs
    assert "SourceChangedError" in stdout["text"] and "Traceback" in stderr["text"]


def test_it_displays_as_its_widget(recording):
    viewer = xr.open_dataset(recording, engine="nwbzarr").ephys.browse(duration=0.2)
    assert isinstance(viewer, Browser)
    bundle = viewer._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == (
        viewer.widget.model_id
    )
    assert viewer.output in viewer.widget.children
    assert "raw view, 0.000–0.200 s of 0–60 s" in repr(viewer)


def test_without_ipywidgets_the_error_says_what_to_install(recording, monkeypatch):
    ds = xr.open_dataset(recording, engine="nwbzarr")
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets now fails
    with pytest.raises(ImportError, match=r"pip install 'xnwb\[widgets\]'"):
        browse(ds)


# -- in a real Jupyter kernel ---------------------------------------------------------------


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernel spec for this interpreter, and Jupyter/IPython dirs inside ``tmp_path``.

    The spec runs ``sys.executable`` (the venv's Python, with xnwb installed), so neither
    the user's kernels in their home nor ``ipykernel install`` is involved; the kernel
    writes its connection file, IPython profile and history under ``tmp_path``.
    """
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager

    root = tmp_path / "jupyter"
    for name, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"),
    ]:
        monkeypatch.setenv(name, str(root / sub))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("XNWB_CACHE_DIR", "off")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own default (inline)
    if not os.environ.get("MPLCONFIGDIR"):
        monkeypatch.setenv("MPLCONFIGDIR", str(root / "matplotlib"))
    spec = root / "kernels" / "xnwb-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel_json = {"argv": argv, "display_name": "xnwb test", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel_json))
    return KernelSpecManager(kernel_dirs=[str(root / "kernels")])


SETUP = """
import json
import xarray as xr
from xnwb.source import ByteSource

reads = []
_fetch = ByteSource.fetch

def _logged(self, starts, lengths, **kwargs):
    reads.extend(int(s) for s in starts)
    return _fetch(self, starts, lengths, **kwargs)

ByteSource.fetch = _logged

def facts(viewer):
    fig = viewer.figure
    out = dict(
        draws=viewer.draws, start=viewer.start.value, start_max=viewer.start.max,
        duration=viewer.duration.value, view=viewer.view.value,
        channels=list(viewer.channels.value), message=viewer.message, reads=sorted(reads),
        shown=[sorted(o.get("data", {o["output_type"]: ""})) for o in viewer.output.outputs],
    )
    if fig is not None:
        meshes = [ax for ax in fig.axes if ax.collections and ax.get_label() != "<colorbar>"]
        out.update(
            lines=len(fig.axes[0].lines), panels=len(meshes),
            titles=[ax.get_title() or ax.get_title(loc='left') for ax in meshes],
            xlim=[float(x) for x in fig.axes[0].get_xlim()],
        )
    reads.clear()
    print("FACTS", json.dumps(out))
"""

MOVES = [
    # (code run in a cell, checks on the facts it prints)
    "viewer = ds.ephys.browse(duration=0.5, channels=[100], freqs=[10.0, 20.0, 40.0], n_cycles=5)\n"
    "display(viewer)",
    "viewer.start.value = 30.0",
    "viewer.duration.value = 2.0",
    "viewer.start.value = 59.5",
    "viewer.channels.value = (100, 101, 105)",
    "viewer.view.value = 'spectrogram'",
    "viewer.channels.value = ()",
    "viewer.channels.value = (104,)",
    "viewer.back.click()",
]


def test_browse_in_a_jupyter_kernel(recording, chunk_of, kernel, tmp_path):
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    cells = [SETUP, f"ds = xr.open_dataset({recording!r}, engine='nwbzarr')"]
    cells += [f"{move}\nfacts(viewer)" for move in MOVES]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    km = KernelManager(kernel_name="xnwb-test", kernel_spec_manager=kernel)
    client = NotebookClient(
        nb, km=km, timeout=120, startup_timeout=60, resources={"metadata": {"path": tmp_path}}
    )
    client.execute()

    facts, shown_by_cell = [], []
    for cell in nb.cells[2:]:
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        (line,) = [ln for ln in text.splitlines() if ln.startswith("FACTS ")]
        fact = json.loads(line.removeprefix("FACTS "))
        fact["reads"] = sorted(chunk_of[r] for r in fact["reads"])
        facts.append(fact)
        shown_by_cell.append([sorted(o.get("data", {})) for o in cell.outputs])
    opened, start, duration, clamped, channels, spectrogram, empty, one, back = facts

    for fact in (opened, start, duration, clamped, channels, spectrogram, one, back):
        assert fact["message"] is None, fact["message"]  # each of these moves drew a figure
    # the viewer displays as a widget, and the inline backend shows no stray copy of a figure
    assert "application/vnd.jupyter.widget-view+json" in shown_by_cell[0][0]
    assert not any("image/png" in mimes for cell in shown_by_cell for mimes in cell)
    assert opened["reads"] == [(0, 0)] and tuple(opened["xlim"]) == pytest.approx(span(0.0, 0.5))
    assert opened["shown"] == [["image/png", "text/plain"]] and opened["draws"] == 1

    assert start["reads"] == [(30, 0)] and tuple(start["xlim"]) == pytest.approx(span(30.0, 0.5))
    assert duration["reads"] == window_chunks(30.0, 32.0) and duration["start_max"] == 58.0
    assert duration["draws"] == 3  # one draw for the duration and the start it moved
    assert clamped["start"] == 58.0 and tuple(clamped["xlim"]) == pytest.approx(span(58.0, 2.0))
    assert clamped["reads"] == window_chunks(58.0, 60.0)
    assert channels["lines"] == 3 and channels["reads"] == window_chunks(58.0, 60.0, (0, 1))

    assert spectrogram["panels"] == 3 and spectrogram["lines"] == 0
    assert spectrogram["titles"] == ["channel 100", "channel 101", "channel 105"]
    assert spectrogram["xlim"] == pytest.approx([58.0, 60.0], abs=0.01)
    assert set(window_chunks(58.0, 60.0, (0, 1))) <= set(spectrogram["reads"])
    assert all(t >= 58 - MARGIN for t, _ in spectrogram["reads"])  # the end, not the record

    assert empty["message"].startswith("no channel selected") and "lines" not in empty
    assert empty["reads"] == [] and empty["shown"] == [["stream"]]
    assert one["panels"] == 1 and one["titles"] == ["channel 104"]
    assert back["start"] == 56.0 and back["titles"] == ["channel 104"]
    assert back["xlim"] == pytest.approx([56.0, 58.0], abs=0.01)
    assert back["draws"] == 9


def test_a_moved_spectrogram_keeps_its_shared_label_clear_of_the_ticks(recording):
    viewer = browse(
        xr.open_dataset(recording, engine="nwbzarr"),
        freqs=FREQS,
        view="spectrogram",
        channels=[100, 101],
    )
    laid_out = [text.get_position() for text in viewer.figure.texts]
    assert laid_out  # the shared "frequency (Hz)" label
    viewer.start.value = 20.0
    assert [text.get_position() for text in viewer.figure.texts] == laid_out
