"""The user guide builds with warnings as errors, and the backend documents every parameter."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from xnwb.backend import NWBZarrBackendEntrypoint

ROOT = Path(__file__).resolve().parents[1]


def test_guide_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="the guide needs the test extra (sphinx)")
    pytest.importorskip("numpydoc")
    pytest.importorskip("myst_parser")
    out = tmp_path / "html"
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    pages = {p.relative_to(out).as_posix() for p in out.rglob("*.html")}
    for page in ("index.html", "api.html", "benchmarks.html", "guide/opening.html",
                 "guide/chunks.html", "guide/tfr.html", "guide/scaling.html",
                 "guide/references.html", "guide/cli.html", "guide/demo.html"):
        assert page in pages, page
    api = (out / "api.html").read_text()
    for name in ("allowed_sources", "max_chunk_bytes", "index_cache", "open_datatree",
                 "save_transform", "plot_window"):
        assert name in api, name
    chunks = (out / "guide" / "chunks.html").read_text()
    assert "tasks per hour" in chunks and "30 kHz" in chunks  # the computed memory table
    demo = (out / "guide" / "demo.html").read_text()
    assert "demo_zscore.png" in demo and (out / "_images" / "demo_zscore.png").is_file()


@pytest.mark.parametrize("method", ["open_dataset", "open_datatree"])
def test_backend_documents_every_parameter(method):
    from numpydoc.docscrape import FunctionDoc

    func = getattr(NWBZarrBackendEntrypoint, method)
    documented = {p.name for p in FunctionDoc(func)["Parameters"]}
    wanted = set(inspect.signature(func).parameters) - {"self"}
    assert wanted == documented
    assert FunctionDoc(func)["Returns"]


def test_memory_table_matches_the_block_plan():
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        import xnwb_docs
    finally:
        sys.path.remove(str(ROOT / "docs" / "_ext"))
    rows = xnwb_docs.memory_rows(threads=2)
    assert len(rows) == 2 + len(xnwb_docs.CASES)
    from xnwb.tfr import morlet_kernels, plan_transform

    bank = morlet_kernels(30_000.0, xnwb_docs.FREQS, xnwb_docs.N_CYCLES)
    plan = plan_transform((124, 30_000 * 3600), 1, bank, decim=30, output="power")
    seed_row = next(r for r in rows if "| 124 | 30 | power" in r)
    assert f"| {plan.rows} × {plan.time / 30_000:.2f} |" in seed_row
    assert f"| {plan.peak_bytes / 2**20:.0f} MiB |" in seed_row
    assert plan.peak_bytes <= 128 * 2**20  # within dask's default array.chunk-size
