"""Record every file opened and socket connected while a block runs (``sys.addaudithook``).

Audit hooks cannot be removed, so one hook is installed on first use and does
nothing unless a :func:`recording` block is active in this process.

Examples
--------
>>> with recording() as seen:
...     _ = open(__file__).close()
>>> any(path.endswith("audit.py") for path in seen.opened)
True
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["Seen", "recording"]


@dataclass
class Seen:
    """What happened inside a :func:`recording` block."""

    opened: list[str] = field(default_factory=list)
    connected: list[object] = field(default_factory=list)

    def opened_real(self) -> set[str]:
        """The opened paths, resolved (symlinks followed)."""
        return {os.path.realpath(p) for p in self.opened}


_active: list[Seen] = []
_lock = threading.Lock()
_installed = False


def _hook(event: str, args: tuple) -> None:
    if not _active:
        return
    if event == "open":
        path = args[0]
        if isinstance(path, int):  # os.fdopen and friends: no new file
            return
        text = os.fsdecode(path) if isinstance(path, bytes | os.PathLike) else str(path)
        for seen in _active:
            seen.opened.append(text)
    elif event == "socket.connect":
        for seen in _active:
            seen.connected.append(args[1])


@contextlib.contextmanager
def recording() -> Iterator[Seen]:
    """Collect the paths opened and addresses connected to while the block runs."""
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True
    seen = Seen()
    _active.append(seen)
    try:
        yield seen
    finally:
        _active.remove(seen)
