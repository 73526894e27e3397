"""Where a reference may point: URLs and paths reduced to comparable places.

A reference file names the file its chunks live in. Before xnwb reads a byte it
checks that this file is the one source the user named (or lies under one of
``allowed_sources``). Strings are not compared as strings: each is reduced to a
:class:`Place` — scheme, host, port and path *segments* — so that
``http://127.0.0.1:4545`` does not admit port ``45451``, ``/data`` does not admit
``/data2``, and a local path is resolved with :func:`os.path.realpath` so a symlink
or ``..`` cannot lead out of a folder. ``file://``, ``file://localhost/`` and
``local://`` URLs are local paths like any other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from xnwb.exceptions import UnsafeReferenceError

__all__ = ["Place", "place_of"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOCAL_SCHEMES = ("", "file", "local")


@dataclass(frozen=True)
class Place:
    """A file or folder: ``scheme`` (``"file"`` for local paths), host, port, path segments.

    Examples
    --------
    >>> place_of("http://127.0.0.1:4545/data").contains(place_of("http://127.0.0.1:45451/data"))
    False
    >>> place_of("s3://bucket/data").contains(place_of("s3://bucket/data2/rec.nwb"))
    False
    >>> place_of("s3://bucket/data").contains(place_of("s3://bucket/data/rec.nwb"))
    True
    """

    scheme: str
    host: str
    port: int | None
    segments: tuple[str, ...]

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def folder(self) -> Place:
        """The folder holding this file."""
        return Place(self.scheme, self.host, self.port, self.segments[:-1])

    def contains(self, other: Place) -> bool:
        """Whether ``other`` is this place or lies below it (whole segments only)."""
        return (
            (self.scheme, self.host, self.port) == (other.scheme, other.host, other.port)
            and other.segments[: len(self.segments)] == self.segments
        )

    def __str__(self) -> str:
        path = "/" + "/".join(self.segments)
        if self.is_local:
            return path
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{self.host}{port}{path}"


def is_relative(url: str) -> bool:
    """A plain relative path (no scheme, not absolute)."""
    return not urlsplit(url).scheme and not os.path.isabs(url)


def local_target_path(url: str, folder: str | None = None) -> str:
    """The real filesystem path of a local ``url`` (relative ones against ``folder``)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UnsafeReferenceError(
                f"reference target {url!r} names the host {parts.netloc!r}: a file URL must be "
                "local (file:///path or file://localhost/path)"
            )
        path = unquote(parts.path)
    elif parts.scheme == "local":
        path = url[len("local://") :]
    else:
        path = url
    if "\x00" in path:
        raise UnsafeReferenceError(f"reference target {url!r} holds a NUL byte")
    if not os.path.isabs(path):
        path = os.path.join(folder if folder is not None else os.getcwd(), path)
    return os.path.realpath(path)


def place_of(url: str, folder: str | None = None) -> Place:
    """The :class:`Place` a URL or path names.

    Parameters
    ----------
    url
        A local path, ``file://``/``local://`` URL, or a remote URL.
    folder
        Local folder that a relative local path is resolved against (default: the
        working directory).

    Raises
    ------
    UnsafeReferenceError
        For a remote URL with ``..`` or ``.`` segments, an invalid port, or a
        ``file://`` URL naming another host.
    """
    url = os.fspath(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in _LOCAL_SCHEMES or (len(scheme) == 1 and os.name == "nt"):
        path = local_target_path(url, folder)
        return Place("file", "", None, tuple(s for s in path.split(os.sep) if s))
    try:
        port = parts.port
    except ValueError as err:
        raise UnsafeReferenceError(f"reference target {url!r} has an invalid port") from err
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    segments = tuple(s for s in unquote(parts.path).split("/") if s)
    if any(s in ("..", ".") for s in segments) or any("\\" in s for s in segments):
        raise UnsafeReferenceError(
            f"reference target {url!r} contains '..' (or '.', '\\') path segments"
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeReferenceError(f"reference target {url!r} names no host or bucket")
    return Place(scheme, host, port, segments)
