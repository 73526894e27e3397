"""Sphinx directives whose tables xnwb computes at build time, so the guide cannot go stale.

``xnwb-memory-table``: the transform's block plan (:func:`xnwb.tfr.plan_transform`) and what
it means in memory and output size, for the recordings the guide discusses.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

#: (label, rate Hz, channels, decim, output) rows of the memory table
CASES = [
    ("wideband", 30_000.0, 124, 1, "complex"),
    ("wideband", 30_000.0, 124, 1, "power"),
    ("wideband", 30_000.0, 124, 10, "power"),
    ("wideband", 30_000.0, 124, 30, "power"),
    ("wideband", 30_000.0, 384, 30, "power"),
    ("LFP", 1_000.0, 124, 1, "power"),
    ("LFP", 2_500.0, 384, 2, "power"),
]
FREQS = np.geomspace(10.0, 100.0, 20)
N_CYCLES = 7.0


def memory_rows(threads: int = 2, hours: float = 1.0) -> list[str]:
    """Markdown rows: block plan, peak per task and per worker, and the output per hour."""
    from xnwb.tfr import morlet_kernels, plan_transform

    head = [
        "| series | rate | channels | `decim` | output | block (channels × s) | tasks per hour "
        f"| peak per task | {threads} threads | output per hour (float32) |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    rows = []
    for label, rate, channels, decim, output in CASES:
        bank = morlet_kernels(rate, FREQS, N_CYCLES)
        n = int(rate * 3600 * hours)
        plan = plan_transform((channels, n), 1, bank, decim=decim, output=output)
        tasks = -(-channels // plan.rows) * -(-n // plan.time)
        itemsize = 8 if output == "complex" else 4  # complex64 or float32 stored
        out_bytes = channels * len(FREQS) * (n // decim) * itemsize
        rows.append(
            f"| {label} | {rate / 1000:g} kHz | {channels} | {decim} | {output} "
            f"| {plan.rows} × {plan.time / rate:.2f} | {tasks:,} "
            f"| {plan.peak_bytes / 2**20:.0f} MiB | {threads * plan.peak_bytes / 2**20:.0f} MiB "
            f"| {_size(out_bytes)} |"
        )
    return head + rows


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"


class MemoryTable(SphinxDirective):
    """``xnwb-memory-table``: the block plan's memory for typical recordings."""

    has_content = False
    option_spec: ClassVar[dict[str, Any]] = {"threads": int}

    def run(self) -> list[nodes.Node]:
        threads = int(self.options.get("threads", 2))
        container = nodes.container()
        self.state.nested_parse(StringList(memory_rows(threads)), self.content_offset, container)
        return container.children


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("xnwb-memory-table", MemoryTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
