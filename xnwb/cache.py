"""A local cache of reference indexes, keyed by URL and checked against the object's version.

Walking HDF5 metadata over a network is the slow part of opening a remote file, so
the index is saved after the first open. An entry is used only if the object's size
and version tag (ETag, generation, mtime) still match; a changed file is indexed
again, never read with stale offsets. Entries are ``.npz`` files (numpy arrays of
offsets plus a JSON document; no pickle) named by a hash of the URL.

The folder is ``$XNWB_CACHE_DIR``, else ``$XDG_CACHE_HOME/xnwb``, else
``~/.cache/xnwb``; ``index_cache=False`` (or ``XNWB_CACHE_DIR=off``) disables it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from xnwb.refs import ReferenceIndex
from xnwb.remote import Fingerprint

__all__ = ["cache_dir", "load_cached", "store_cached"]

_FORMAT = 1


def cache_dir(setting: bool | str | os.PathLike[str] | None = True) -> Path | None:
    """The cache folder for a user setting (``True``: the default; ``False``: none).

    Examples
    --------
    >>> cache_dir(False) is None
    True
    >>> cache_dir("/tmp/my-cache").as_posix()
    '/tmp/my-cache'
    """
    if setting is False or setting is None:
        return None
    if setting is not True:
        return Path(setting)
    env = os.environ.get("XNWB_CACHE_DIR")
    if env is not None:
        return None if env.lower() in ("", "0", "off", "false", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xnwb"


def _entry(folder: Path, url: str) -> Path:
    return folder / (hashlib.sha256(url.encode("utf-8")).hexdigest()[:40] + ".npz")


def load_cached(folder: Path | None, url: str, fingerprint: Fingerprint) -> ReferenceIndex | None:
    """The cached index of ``url`` if it was built from this version of the object."""
    if folder is None:
        return None
    path = _entry(folder, url)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            doc = json.loads(bytes(npz["doc"]).decode("utf-8"))
            if doc.get("format") != _FORMAT or doc.get("url") != url:
                return None
            if Fingerprint.from_dict(doc["fingerprint"]) != fingerprint:
                return None
            arrays = {name: npz[name] for name in npz.files if name != "doc"}
    except (OSError, ValueError, KeyError):
        return None  # a damaged entry is rebuilt, not trusted
    return _from_parts(doc["refs"], arrays, url)


def store_cached(
    folder: Path | None, url: str, fingerprint: Fingerprint, index: ReferenceIndex
) -> Path | None:
    """Save ``index`` for ``url`` (atomically); returns the entry's path."""
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    refs, arrays = _to_parts(index)
    doc = {"format": _FORMAT, "url": url, "fingerprint": fingerprint.to_dict(), "refs": refs}
    arrays["doc"] = np.frombuffer(json.dumps(doc).encode("utf-8"), dtype=np.uint8)
    path = _entry(folder, url)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _to_parts(index: ReferenceIndex) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metadata-only kerchunk refs, plus offsets/lengths as arrays."""
    refs = index.to_refs(chunks=False)
    inline: dict[str, dict[str, str]] = {}
    arrays: dict[str, np.ndarray] = {}
    names: dict[str, int] = {}
    for n, (path, arr) in enumerate(index.arrays.items()):
        names[path] = n
        arrays[f"o{n}"] = arr.offsets
        arrays[f"l{n}"] = arr.lengths
        if arr.inline:
            import base64

            inline[path] = {
                ".".join(map(str, key)): base64.b64encode(value).decode("ascii")
                for key, value in arr.inline.items()
            }
    refs["arrays"] = names
    refs["inline"] = inline
    return refs, arrays


def _from_parts(refs: dict[str, Any], arrays: dict[str, np.ndarray], url: str) -> ReferenceIndex:
    import base64

    names = refs.pop("arrays")
    inline = refs.pop("inline")
    index = ReferenceIndex.from_refs(refs, source=url)
    for path, n in names.items():
        arr = index.arrays[path]
        arr.offsets = arrays[f"o{n}"]
        arr.lengths = arrays[f"l{n}"]
        arr.inline = {
            tuple(int(i) for i in key.split(".")) if key else (): base64.b64decode(value)
            for key, value in inline.get(path, {}).items()
        }
    return index
