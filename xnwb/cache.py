"""A persistent cache of reference indexes, keyed by source and checked against its identity.

Walking HDF5 metadata is the slow part of opening a file (seconds over a network;
seconds locally too once a file has a million chunks), so the index is saved after
the first open. An entry is used only when the source's **identity** still matches
the one recorded when the index was built; anything else means the index is built
again, never read with stale offsets.

What identifies a source (:func:`source_identity`):

- a **local file**: its real path, device, inode, size, ``mtime_ns`` and ``ctime_ns``.
  ``ctime`` cannot be set back by a user (only the clock can), so a file replaced or
  rewritten in place — even with its size and mtime restored — no longer matches.
- a **remote object**: size and version tag (ETag, GCS generation, mtime). An ETag is
  trusted as it stands only from object stores that derive it from the content or a
  per-write generation (``s3://``, ``gs://``). HTTP servers commonly build ETags from
  inode/size/mtime (so a restored mtime restores the ETag), send weak ones (``W/``),
  constant ones or none: for every ``http(s)://`` source the identity also holds a
  **content fingerprint**, a SHA-256 of the file's first and last 64 KiB (where HDF5
  keeps the superblock, the root group and the metadata written at close). It comes
  with the probe that finds the size and tag: one request for both where the server
  answers several ranges at once (nginx, Apache), else two single ranges in flight
  together (S3 and GCS answer a multi-range request with the whole object, whose body
  is not read, aiohttp's static files with 416; that origin then gets single ranges for
  the rest of the process).
  What cannot be detected: an HTTP object rewritten with
  the same size, tag and first and last 64 KiB but a different layout in between.

Each entry is one ``.npz`` file (offsets and lengths as int32 or int64 arrays plus a JSON
document; no pickle) named by a hash of the key, written to a temporary file and
renamed into place (two processes building one entry leave one valid entry). Its
last member is a SHA-256 over everything before it: an entry altered or cut short
after it was written is rebuilt, not trusted.

The cache never stops an open: a damaged, truncated, empty or unreadable entry is
rebuilt, and a folder that cannot be created or written (read-only, full, a regular
file) means the open goes on uncached; each case with a :class:`CacheWarning`.

The folder is ``$XNWB_CACHE_DIR``, else ``$XDG_CACHE_HOME/xnwb``, else
``~/.cache/xnwb``; ``index_cache=False`` (or ``XNWB_CACHE_DIR=off``) disables it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from xnwb.exceptions import CacheWarning
from xnwb.refs import ReferenceIndex

__all__ = ["cache_dir", "load_cached", "source_identity", "store_cached"]

#: Version of the entry layout; entries of another version are rebuilt (3: offsets and
#: lengths stored as int32 where they fit).
_FORMAT = 3
#: Bytes hashed at each end of an HTTP object for its content fingerprint.
CONTENT_FINGERPRINT_BYTES = 64 * 2**10
#: Schemes whose version tags change with every write of the content.
_TRUSTED_TAG_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs"})


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


def local_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What identifies one version of a local file (``os.stat`` of its real path).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as fh:
    ...     sorted(local_identity(fh.name))
    ['ctime_ns', 'dev', 'ino', 'kind', 'mtime_ns', 'path', 'size']
    """
    real = os.path.realpath(os.fspath(path))
    stat = os.stat(real)
    return {
        "kind": "local",
        "path": real,
        "dev": stat.st_dev,
        "ino": stat.st_ino,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
    }


def tag_is_trusted(url: str, tag: str | None) -> bool:
    """Whether a version tag alone identifies the content of ``url`` (see the module notes).

    Examples
    --------
    >>> tag_is_trusted("s3://bucket/rec.nwb", '"9b2cf535f27731c974343645a3985328"')
    True
    >>> tag_is_trusted("https://host/rec.nwb", '"5f3e2a1b-1a2b"')
    False
    >>> tag_is_trusted("gs://bucket/rec.nwb", None)
    False
    """
    if not tag or str(tag).startswith("W/"):
        return False
    return urlparse(url).scheme in _TRUSTED_TAG_SCHEMES


def content_fingerprint(byte_source: Any) -> str:
    """SHA-256 of the first and last :data:`CONTENT_FINGERPRINT_BYTES` of a source.

    Each byte counts once (a file shorter than twice the span is hashed whole). Over
    HTTP the bytes come with the probe that finds the object's size and version:
    one request where the server answers several ranges at once
    (:meth:`xnwb.remote.RemoteObject.ends`).

    Examples
    --------
    >>> import hashlib, os, tempfile
    >>> from xnwb.source import ByteSource
    >>> with tempfile.NamedTemporaryFile(delete=False) as fh:
    ...     _ = fh.write(b"0123456789")
    >>> content_fingerprint(ByteSource(fh.name)) == hashlib.sha256(b"0123456789").hexdigest()
    True
    >>> os.unlink(fh.name)
    """
    head, tail_start, tail = byte_source.ends(CONTENT_FINGERPRINT_BYTES)
    digest = hashlib.sha256(head)
    digest.update(tail[max(0, len(head) - tail_start) :])
    return digest.hexdigest()


def source_identity(byte_source: Any) -> dict[str, Any]:
    """What identifies the version of ``byte_source`` (a :class:`~xnwb.source.ByteSource`).

    Local files: :func:`local_identity`. Remote objects: size and tag, plus a content
    fingerprint unless :func:`tag_is_trusted`. Over HTTP the fingerprint is asked for
    first, so that it travels with the probe.
    """
    if byte_source.is_local:
        from xnwb.source import local_path

        return local_identity(local_path(byte_source.url))
    untrusted_scheme = urlparse(byte_source.url).scheme not in _TRUSTED_TAG_SCHEMES
    content = content_fingerprint(byte_source) if untrusted_scheme else None
    fingerprint = byte_source.fingerprint()
    identity: dict[str, Any] = {"kind": "remote", **fingerprint.to_dict()}
    if not tag_is_trusted(byte_source.url, identity.get("tag")):
        identity["content"] = content or content_fingerprint(byte_source)
    return identity


def _as_identity(identity: Any) -> dict[str, Any]:
    return identity.to_dict() if hasattr(identity, "to_dict") else dict(identity)


def _entry(folder: Path, key: str) -> Path:
    return folder / (hashlib.sha256(key.encode("utf-8")).hexdigest()[:40] + ".npz")


def _digest(members: dict[str, np.ndarray]) -> str:
    """SHA-256 over every member (names, dtypes, shapes and bytes), in name order."""
    digest = hashlib.sha256()
    for name in sorted(members):
        arr = np.ascontiguousarray(members[name])
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        digest.update(arr.reshape(-1).view(np.uint8))  # (memoryview casts refuse (0, 1))
    return digest.hexdigest()


def _warn(message: str) -> None:
    warnings.warn(message, CacheWarning, stacklevel=4)


def load_cached(folder: Path | None, key: str, identity: Any) -> ReferenceIndex | None:
    """The cached index of ``key`` if it was built from this ``identity`` of the source.

    ``None`` when there is no entry, it belongs to another version, or it is damaged
    (then with a :class:`CacheWarning`; the caller rebuilds and overwrites it).
    """
    if folder is None:
        return None
    path = _entry(folder, key)
    try:
        if not path.exists():
            return None
    except OSError:
        return None
    wanted = _as_identity(identity)
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            if "digest" not in names or "doc" not in names:
                raise ValueError("incomplete entry")
            members = {name: npz[name] for name in names if name != "digest"}
            recorded = bytes(npz["digest"]).decode("ascii")
        if _digest(members) != recorded:
            raise ValueError("its checksum does not match its contents")
        doc = json.loads(bytes(members.pop("doc")).decode("utf-8"))
        if doc.get("format") != _FORMAT or doc.get("key") != key:
            return None
        if doc.get("identity") != json.loads(json.dumps(wanted)):
            return None  # another version of the source: rebuild
        return _from_parts(doc["refs"], members, doc["source"])
    except Exception as err:  # any damage: rebuild, never trust, never stop the open
        _warn(
            f"index cache entry {str(path)!r} is damaged ({type(err).__name__}: {err}); "
            "indexing the file again"
        )
        return None


def store_cached(
    folder: Path | None, key: str, identity: Any, index: ReferenceIndex
) -> Path | None:
    """Save ``index`` for ``key`` atomically; the entry's path, or ``None`` if it could not.

    Never raises for the folder's sake: an unwritable folder gives a
    :class:`CacheWarning` and ``None``.
    """
    if folder is None:
        return None
    refs, arrays = _to_parts(index)
    doc = {
        "format": _FORMAT,
        "key": key,
        "source": index.source,
        "identity": _as_identity(identity),
        "refs": refs,
    }
    members = dict(arrays)
    members["doc"] = np.frombuffer(json.dumps(doc).encode("utf-8"), dtype=np.uint8)
    digest = np.frombuffer(_digest(members).encode("ascii"), dtype=np.uint8)
    path = _entry(folder, key)
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=path.stem, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **members, digest=digest)  # the checksum is the last member
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        _warn(
            f"cannot write the index cache in {str(folder)!r} ({type(err).__name__}: {err}); "
            "the file opens uncached: pass index_cache=<folder> or set XNWB_CACHE_DIR to a "
            "writable folder, or index_cache=False to silence this"
        )
        return None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def _to_parts(index: ReferenceIndex) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metadata-only kerchunk refs, plus offsets/lengths as arrays."""
    refs = index.to_refs(chunks=False)
    inline: dict[str, dict[str, str]] = {}
    arrays: dict[str, np.ndarray] = {}
    names: dict[str, int] = {}
    for n, (path, arr) in enumerate(index.arrays.items()):
        names[path] = n
        arrays[f"o{n}"] = _narrow(arr.offsets)
        arrays[f"l{n}"] = _narrow(arr.lengths)
        if arr.inline:
            inline[path] = {
                ".".join(map(str, key)): base64.b64encode(value).decode("ascii")
                for key, value in arr.inline.items()
            }
    refs["arrays"] = names
    refs["inline"] = inline
    return refs, arrays


def _narrow(values: np.ndarray) -> np.ndarray:
    """int32 when every value fits (files under 2 GiB), else int64: a million chunks'
    offsets and lengths are then 8 MB to read and check at every open, not 16."""
    values = np.asarray(values)
    small = values.size == 0 or (
        int(values.min()) >= np.iinfo(np.int32).min and int(values.max()) <= np.iinfo(np.int32).max
    )
    return np.ascontiguousarray(values, dtype=np.int32 if small else np.int64)


def _from_parts(refs: dict[str, Any], arrays: dict[str, np.ndarray], url: str) -> ReferenceIndex:
    names = refs.pop("arrays")
    inline = refs.pop("inline")
    index = ReferenceIndex.from_refs(refs, source=url)
    for path, n in names.items():
        arr = index.arrays[path]
        offsets, lengths = arrays[f"o{n}"], arrays[f"l{n}"]
        if offsets.size != arr.offsets.size or lengths.size != arr.offsets.size:
            raise ValueError(f"the chunk grid of {path!r} does not match its metadata")
        if offsets.dtype not in (np.int32, np.int64) or lengths.dtype not in (np.int32, np.int64):
            raise ValueError(f"the chunk offsets of {path!r} are stored as {offsets.dtype}")
        arr.offsets = offsets.astype(np.int64, copy=False).reshape(arr.offsets.shape)
        arr.lengths = lengths.astype(np.int64, copy=False).reshape(arr.offsets.shape)
        arr.inline = {
            tuple(int(i) for i in key.split(".")) if key else (): base64.b64decode(value)
            for key, value in inline.get(path, {}).items()
        }
    return index
