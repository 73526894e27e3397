"""Sphinx configuration of the xnwb user guide (``sphinx-build -W -b html docs docs/_build``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's xnwb, not an installed one
sys.path.insert(0, str(HERE / "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")

import xnwb  # noqa: E402

project = "xnwb"
author = "the xnwb developers"
copyright = "2026, the xnwb developers"
release = xnwb.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "xnwb_docs",  # docs/_ext: tables computed from xnwb itself at build time
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "README.md"]
root_doc = "index"

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

autosummary_generate = False  # the API pages list their objects; nothing is generated
autodoc_default_options = {"members": True, "undoc-members": False}
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

intersphinx_mapping: dict[str, tuple[str, str | None]] = {}  # offline builds: no inventories

# docs/benchmarks.md is written for GitHub as well: its headings start at level 2 under the
# title and it names files of the repository outside this folder.
suppress_warnings = ["myst.header", "myst.xref_missing"]

html_theme = "alabaster"
html_title = f"xnwb {release}"
html_static_path = ["_static"]
html_theme_options = {"description": "NWB recordings as lazy xarray, Morlet and z-scores with Dask"}
