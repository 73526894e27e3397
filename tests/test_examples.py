"""The examples run as a user runs them: the script with Python, the notebook in a real kernel.

Both do the seed's workflow end to end (open locally and through a URL, raw traces, morlet,
zscore over the whole recording, the z-scored spectrogram, the pass on a distributed
cluster, save to Zarr) and print the checks they make; the tests read those and the files
the examples leave behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
import pytest
import xarray as xr

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CHECKS = (
    "a 1 s window through the URL equals the local read: True",
    "cluster statistics equal the local ones: True",
    "equals the lazy z-score: True",
)


def not_blank(path: Path) -> bool:
    image = matplotlib.image.imread(path)[..., :3]
    return bool((image.mean(axis=2) < 0.6).mean() > 0.01)


def test_workflow_script(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    env.setdefault("MPLCONFIGDIR", str(tmp_path / "mpl"))
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "workflow.py"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for check in CHECKS:
        assert check in done.stdout, (check, done.stdout[-2000:])
    assert "100% Completed" in done.stdout  # distributed's progress bar for the cluster pass
    out = tmp_path / "out"
    for name in ("raw.png", "zscore.png", "saved.png"):
        assert not_blank(out / name), name
    saved = xr.open_zarr(out / "zscore.zarr")
    stats = xr.open_zarr(out / "zscore.zarr", group="statistics")
    assert saved.data.dims == ("channel", "frequency", "time")
    assert np.isfinite(saved.data.values).all()
    # a z-score over the whole recording: mean 0 and std 1 per channel and frequency
    np.testing.assert_allclose(saved.data.mean("time"), 0, atol=1e-4)
    np.testing.assert_allclose(saved.data.std("time"), 1, rtol=1e-4)
    assert stats["std"].shape == saved.data.shape[:2]


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernel spec for this interpreter with Jupyter/IPython dirs under ``tmp_path`` (as
    in ``tests/test_browse.py``), importing xnwb from this checkout."""
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
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own default (inline)
    if not os.environ.get("MPLCONFIGDIR"):
        monkeypatch.setenv("MPLCONFIGDIR", str(root / "matplotlib"))
    spec = root / "kernels" / "xnwb-examples"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel_json = {"argv": argv, "display_name": "xnwb examples", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel_json))
    return KernelSpecManager(kernel_dirs=[str(root / "kernels")])


def test_workflow_notebook_in_a_kernel(kernel, tmp_path, monkeypatch):
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("XNWB_EXAMPLE_OUT", str(out))
    nb = nbformat.read(EXAMPLES / "workflow.ipynb", as_version=4)
    assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
    km = KernelManager(kernel_name="xnwb-examples", kernel_spec_manager=kernel)
    client = NotebookClient(nb, km=km, timeout=240, startup_timeout=60,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on any failing cell

    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
        if o.output_type == "stream"
    )
    assert "URL window equals local: True" in text
    assert "cluster statistics equal the local ones: True" in text
    assert "saved equals lazy: True" in text
    shown = [
        sorted(o.get("data", {}))
        for c in nb.cells if c.cell_type == "code" for o in c.outputs
        if o.output_type in ("display_data", "execute_result")
    ]
    widgets = [m for m in shown if "application/vnd.jupyter.widget-view+json" in m]
    assert len(widgets) >= 3  # raw browser, spectrogram browser, saved-result browser
    assert any("image/png" in m for m in shown)  # the inline z-score picture
    assert (out / "zscore.zarr").is_dir()
