"""Byte ranges of one file, fetched concurrently and coalesced.

:class:`ByteSource` is the only thing that touches a file's bytes after the index
exists. Local files take a cheap path (``os.pread`` on a per-process descriptor:
~7 µs a range instead of ~0.5 ms through a reference filesystem); anything else goes
through fsspec's async interface so many ranges are in flight at once. Nearby ranges
are merged into one request first. A failed or short read always raises
:class:`~xnwb.exceptions.ChunkReadError` naming the URL and byte range: it never
turns into a missing key (which zarr would fill with zeros).

The file's identity is pinned when it is opened (:meth:`ByteSource.pin`) and travels
with the pickled source to every process. Locally, that is the device, inode, size,
mtime and ctime (nanoseconds): the descriptor each process opens is checked against it
(a file renamed over after open has another inode), and after every batch of reads the
descriptor (``fstat``: an in-place rewrite moves ctime even when size and mtime are
restored) and the path (``stat``: renamed over or removed) are checked again, two
syscalls per batch. Remote objects are pinned by ETag (or Last-Modified) and size, see
:mod:`xnwb.remote`. A change raises :class:`~xnwb.exceptions.SourceChangedError`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np

from xnwb.exceptions import ChunkReadError, SourceChangedError

__all__ = ["ByteSource", "compare_identity", "file_identity", "is_local"]

#: Ranges closer than this are fetched as one request (the gap is read and dropped).
#: Locally a read costs microseconds, so only near-adjacent ranges merge; over a
#: network a round trip costs milliseconds, worth a good many bytes of gap.
LOCAL_MAX_GAP = 16 * 2**10
REMOTE_MAX_GAP = 256 * 2**10
#: A merged request never grows past this (remote: smaller, so a big read is
#: several concurrent requests rather than one long one).
DEFAULT_MAX_BLOCK = 32 * 2**20
REMOTE_MAX_BLOCK = 4 * 2**20
#: Most bytes read ahead and held for the reads that follow (:meth:`ByteSource.hold`).
HELD_BYTES = 256 * 2**20
#: ... for this many seconds at most.
HELD_SECONDS = 30.0
#: Seconds a read waits at most for bytes another thread is fetching to hold, then fetches
#: them itself: a span of a few 4 MiB pieces comes in well under it, and a fetch that
#: stalls or fails (nothing is held then) does not hold the read up for its retries.
CLAIM_WAIT_SECONDS = 1.0


def is_local(url: str) -> bool:
    """Whether ``url`` names a local file (a plain path or ``file://``)."""
    scheme = urlparse(str(url)).scheme
    return scheme in ("", "file", "local") or (len(scheme) == 1 and os.name == "nt")


def local_path(url: str) -> str:
    """The filesystem path of a local ``url``."""
    url = os.fspath(url)
    if url.startswith("file://"):
        return urlparse(url).path
    if url.startswith("local://"):
        return url[len("local://") :]
    return url


_LOCAL_KEYS = ("size", "mtime_ns", "ctime_ns", "inode", "device")


def _stat_identity(stat: os.stat_result) -> dict[str, Any]:
    return {
        "kind": "local",
        "size": int(stat.st_size),
        "mtime_ns": int(stat.st_mtime_ns),
        "ctime_ns": int(stat.st_ctime_ns),
        "inode": int(stat.st_ino),
        "device": int(stat.st_dev),
        "links": int(stat.st_nlink),
    }


def file_identity(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What identifies the current version of a file: recorded in indexes, compared at open.

    Local files: ``size``, ``mtime_ns``, ``ctime_ns``, ``inode``, ``device``. Remote
    objects: ``size``, ``etag`` and ``last_modified`` (``None`` when the server sends
    none), ``tag`` (ETag, S3 ETag, GCS generation or mtime: what the cache keys on).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as fh:
    ...     _ = fh.write(b"abc"); fh.flush()
    ...     ident = file_identity(fh.name)
    >>> ident["kind"], ident["size"]
    ('local', 3)
    """
    return ByteSource(url, storage_options).identity()


def compare_identity(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why ``current`` is not the version ``recorded`` describes, or ``None`` if it may be.

    Only what both sides know is compared (an index written before identities were
    recorded, or a server that sends no ETag, compares on size alone). Locally, a file
    with another inode but the same size and mtime is taken for a copy (``cp -p``,
    another machine) and accepted; the same inode must also keep its ctime, unless its
    link count changed too (a hard link made or removed moves ctime, not the bytes).

    Examples
    --------
    >>> a = {"kind": "local", "size": 3, "mtime_ns": 1, "ctime_ns": 2, "inode": 7, "device": 1,
    ...      "links": 1}
    >>> compare_identity(a, dict(a)) is None
    True
    >>> compare_identity(a, {**a, "ctime_ns": 5})
    'ctime 2 -> 5 (rewritten in place)'
    """
    if not recorded or not current:
        return None
    if recorded.get("size") is not None and int(recorded["size"]) != int(current["size"]):
        return f"size {recorded['size']} -> {current['size']} bytes"
    if recorded.get("kind") == "local" and current.get("kind") == "local":
        if recorded.get("mtime_ns") is not None and recorded["mtime_ns"] != current["mtime_ns"]:
            return f"mtime {recorded['mtime_ns']} -> {current['mtime_ns']} ns"
        same_file = (recorded.get("inode"), recorded.get("device")) == (
            current["inode"],
            current["device"],
        )
        relinked = recorded.get("links") not in (None, current.get("links"))
        if (
            same_file
            and not relinked
            and recorded.get("ctime_ns") not in (None, current["ctime_ns"])
        ):
            return f"ctime {recorded['ctime_ns']} -> {current['ctime_ns']} (rewritten in place)"
        return None
    # Every validator both sides have must agree: a server may keep one ETag for every
    # version of an object while its Last-Modified moves on.
    compared = False
    for key, label in (("etag", "ETag"), ("last_modified", "Last-Modified")):
        old, new = recorded.get(key), current.get(key)
        if old and new:
            if old != new:
                return f"{label} {old} -> {new}"
            compared = True
    old, new = recorded.get("tag"), current.get("tag")
    if not compared and old and new and old != new:
        return f"version {old} -> {new}"
    return None


def _changed(url: str, why: str, since: str = "it was opened") -> SourceChangedError:
    return SourceChangedError(
        f"{url!r} changed since {since} ({why}): its data no longer sit where the index "
        "says; reopen it (and rebuild any saved index=) to read the new version"
    )


def coalesce(
    starts: Sequence[int], lengths: Sequence[int], max_gap: int, max_block: int
) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Merge byte ranges into fewer blocks.

    Ranges (sorted by start) join the current block while they begin at most ``max_gap``
    bytes after its furthest end and the block stays within ``max_block`` bytes (a range
    larger than that is a block of its own). Worked out with numpy, one step per block:
    a million ranges take milliseconds.

    Returns
    -------
    block_starts, block_ends
        The merged blocks, sorted.
    placement
        For every input range, ``(block number, offset within the block)``.

    Examples
    --------
    >>> coalesce([0, 10, 1000], [10, 10, 5], max_gap=100, max_block=2**20)
    ([0, 1000], [20, 1005], [(0, 0), (0, 10), (1, 0)])
    >>> coalesce([0, 10, 20], [10, 10, 10], max_gap=0, max_block=15)[:2]
    ([0, 10, 20], [10, 20, 30])
    """
    blocks, within, bstarts, bends = coalesce_arrays(
        np.asarray(starts, np.int64), np.asarray(lengths, np.int64), max_gap, max_block
    )
    placement = list(zip(blocks.tolist(), within.tolist(), strict=True))
    return bstarts.tolist(), bends.tolist(), placement


def coalesce_arrays(
    starts: np.ndarray, lengths: np.ndarray, max_gap: int, max_block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`coalesce` on arrays: ``(block of each range, offset in it, block starts, ends)``."""
    if starts.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    order = np.argsort(starts, kind="stable")
    s = starts[order]
    e = s + lengths[order]
    reach = np.maximum.accumulate(e)
    # A gap larger than max_gap after everything so far starts a new block ...
    gap_start = np.ones(s.size, bool)
    gap_start[1:] = s[1:] - reach[:-1] > max_gap
    group_ends = np.append(np.flatnonzero(gap_start)[1:], s.size)
    group_of = np.cumsum(gap_start) - 1
    # ... and within a group, a block takes the ranges that keep it within max_block
    # (one step per block, not per range: the reach is sorted, so it is a bisection).
    new = np.zeros(s.size, bool)
    i = 0
    while i < s.size:
        new[i] = True
        last = int(np.searchsorted(reach, s[i] + max_block, side="right")) - 1
        i = min(max(last, i) + 1, int(group_ends[group_of[i]]))
    block_sorted = np.cumsum(new) - 1
    bstarts = s[new]
    bends = np.maximum.reduceat(e, np.flatnonzero(new))
    blocks = np.empty_like(block_sorted)
    blocks[order] = block_sorted
    within = starts - bstarts[blocks]
    return blocks, within, bstarts, bends


def _forget_threads_after_fork() -> None:
    for source in list(_SOURCES):
        source._forget_after_fork()


_SOURCES: weakref.WeakSet[ByteSource] = weakref.WeakSet()
os.register_at_fork(after_in_child=_forget_threads_after_fork)


class ByteSource:
    """Fetch byte ranges of one file.

    Parameters
    ----------
    url
        Local path, ``file://`` URL, or any fsspec URL (``s3://``, ``gs://``, ``https://``).
    storage_options
        Passed to the fsspec filesystem.
    max_gap, max_block
        Coalescing: ranges closer than ``max_gap`` bytes merge, up to ``max_block``.
        ``max_gap`` defaults to 16 KiB for local files and 256 KiB otherwise.

    Examples
    --------
    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile(delete=False) as fh:
    ...     _ = fh.write(b"0123456789")
    >>> [bytes(b) for b in ByteSource(fh.name).fetch([2, 7], [3, 2])]
    [b'234', b'78']
    >>> os.unlink(fh.name)
    """

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        *,
        max_gap: int | None = None,
        max_block: int | None = None,
    ) -> None:
        self.url = os.fspath(url)
        self.storage_options = dict(storage_options or {})
        self._local = is_local(self.url)
        if max_gap is None:
            max_gap = LOCAL_MAX_GAP if self._local else REMOTE_MAX_GAP
        self.max_gap = max_gap
        if max_block is None:
            max_block = DEFAULT_MAX_BLOCK if self._local else REMOTE_MAX_BLOCK
        self.max_block = max_block
        self._fd: int | None = None
        self._fd_pid: int | None = None
        self._lock = threading.Lock()
        self._remote: Any = None
        self._remote_pid: int | None = None
        self._held: Any = None  # xnwb.heldbytes.HeldBytes: bytes read ahead of a pass
        #: Identity of the version opened (see :meth:`pin`); checked on every read.
        self.pinned: dict[str, Any] | None = None
        _SOURCES.add(self)

    # Pickling drops descriptors and filesystem handles; each process reopens.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_fd=None, _fd_pid=None, _lock=None, _remote=None, _remote_pid=None, _held=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        _SOURCES.add(self)

    def _forget_after_fork(self) -> None:
        # A forked child has none of its parent's threads: a lock one of them held stays
        # taken, and their claims on bytes being fetched are never released.
        self._lock = threading.Lock()
        self._held = None

    def __repr__(self) -> str:
        return f"ByteSource({self.url!r})"

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None and self._fd_pid == os.getpid():
            try:
                os.close(fd)
            except OSError:
                pass

    @property
    def is_local(self) -> bool:
        return self._local

    # -- identity -----------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """The identity of the file as it is now (see :func:`file_identity`)."""
        if self._local:
            try:
                return _stat_identity(os.stat(local_path(self.url)))
            except OSError as err:
                raise ChunkReadError(f"cannot stat {self.url!r}: {err}") from err
        return self.remote().identity()

    def pin(self, identity: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record the version being opened; later reads raise if the file changes.

        Parameters
        ----------
        identity
            The version to hold the file to (default: the file as it is now).
            With a recorded identity that the file no longer matches, raises
            :class:`~xnwb.exceptions.SourceChangedError` at once.
        """
        current = self.identity()
        if identity is not None:
            why = compare_identity(identity, current)
            if why is not None:
                raise _changed(self.url, why, "its index was built")
        self.pinned = current
        self._held = None  # bytes held were read under the earlier pin
        if not self._local and self._remote is not None:
            self._remote.pinned = current
        return current

    def check_unchanged(self) -> None:
        """Raise :class:`~xnwb.exceptions.SourceChangedError` if the pinned file changed."""
        if self.pinned is None:
            return
        why = compare_identity(self.pinned, self.identity())
        if why is not None:
            raise _changed(self.url, why)

    def _check_local(self, fd: int) -> None:
        """The descriptor and the path both still show the pinned version."""
        pinned = self.pinned
        if pinned is None:
            return
        now = os.fstat(fd)
        try:
            at_path = os.stat(local_path(self.url))
        except OSError as err:
            raise _changed(self.url, f"removed: {err}") from err
        if (at_path.st_ino, at_path.st_dev) != (now.st_ino, now.st_dev) or (
            now.st_ino,
            now.st_dev,
        ) != (pinned["inode"], pinned["device"]):
            raise _changed(self.url, "another file was renamed over it")
        if (now.st_size, now.st_mtime_ns, now.st_ctime_ns) != (
            pinned["size"],
            pinned["mtime_ns"],
            pinned["ctime_ns"],
        ):
            why = compare_identity(pinned, _stat_identity(now))
            if why is not None:
                raise _changed(self.url, why)
            # Only ctime moved, with the link count: a hard link made or removed (backup
            # and deduplication tools do it), not a rewrite. Hold reads to the new ctime.
            self.pinned = {**pinned, "ctime_ns": now.st_ctime_ns, "links": now.st_nlink}

    # -- local ------------------------------------------------------------
    def _descriptor(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._fd_pid != pid:
            with self._lock:
                if self._fd is None or self._fd_pid != pid:
                    try:
                        fd = os.open(local_path(self.url), os.O_RDONLY)
                    except OSError as err:
                        raise ChunkReadError(f"cannot open {self.url!r}: {err}") from err
                    try:
                        self._check_local(fd)
                    except SourceChangedError:
                        os.close(fd)
                        raise
                    self._fd, self._fd_pid = fd, pid
        return self._fd

    def _fetch_local(self, bstarts: list[int], bends: list[int]) -> list[bytes]:
        fd = self._descriptor()
        blocks = []
        for start, end in zip(bstarts, bends, strict=True):
            try:
                data = os.pread(fd, end - start, start)
            except OSError as err:
                failed = ChunkReadError(
                    f"reading bytes {start}-{end} of {self.url!r} failed: {err}"
                )
                failed.byte_range = (start, end)  # type: ignore[attr-defined]
                raise failed from err
            blocks.append(data)
        # After the reads: a change that landed while they ran is seen too.
        self._check_local(fd)
        return blocks

    # -- remote -------------------------------------------------------------
    def remote(self) -> Any:
        """The per-process :class:`~xnwb.remote.RemoteObject` for this URL."""
        if self._remote is None or self._remote_pid != os.getpid():
            from xnwb.remote import RemoteObject

            with self._lock:
                if self._remote is None or self._remote_pid != os.getpid():
                    remote = RemoteObject(self.url, self.storage_options)
                    remote.pinned = self.pinned
                    self._remote, self._remote_pid = remote, os.getpid()
        return self._remote

    def _fetch_remote(
        self, bstarts: list[int], bends: list[int], background: bool = False
    ) -> list[bytes]:
        remote = self.remote()
        return remote.run(remote.get_ranges(bstarts, bends, background=background))

    @property
    def requests(self) -> int:
        """Requests made so far by this process (0 for local files)."""
        return self._remote.requests if self._remote is not None else 0

    @property
    def bytes_read(self) -> int:
        """Bytes received so far by this process (remote sources)."""
        return self._remote.bytes_read if self._remote is not None else 0

    def fingerprint(self) -> Any:
        """Size and version (ETag, generation or mtime) of the file now."""
        from xnwb.remote import Fingerprint

        if self._local:
            try:
                stat = os.stat(local_path(self.url))
            except OSError as err:
                raise ChunkReadError(f"cannot stat {self.url!r}: {err}") from err
            return Fingerprint(stat.st_size, str(stat.st_mtime_ns))
        return self.remote().fingerprint()

    def ends(self, n: int) -> tuple[bytes, int, bytes]:
        """The first and last ``n`` bytes of the file: ``(head, tail_start, tail)``.

        Remote sources not yet resolved bring them with their probe (see
        :meth:`xnwb.remote.RemoteObject.ends`).
        """
        if not self._local:
            return self.remote().ends(n)
        size = self.size()
        tail_start = max(0, size - n)
        head, tail = self.fetch([0, tail_start], [min(n, size), size - tail_start])
        return bytes(head), tail_start, bytes(tail)

    # -- public -------------------------------------------------------------
    def fetch(
        self,
        starts: Sequence[int],
        lengths: Sequence[int],
        *,
        max_gap: int | None = None,
        background: bool = False,
    ) -> list[memoryview]:
        """Bytes ``[start, start + length)`` for every range, in the order given.

        The pieces are zero-copy views into the merged blocks. ``max_gap``
        overrides the coalescing gap for this call. ``background`` (remote): requests
        with slots of their own, never queued in front of the reads in the foreground.

        Raises
        ------
        ChunkReadError
            When a range cannot be read in full.
        """
        if not starts:
            return []
        held = self._held
        if held is not None:
            # Bytes another thread is fetching to hold them come from there, not again
            # from the server (if that fetch fails, they are fetched here).
            held.wait_for_claims(starts, lengths, CLAIM_WAIT_SECONDS)
        if held is not None and len(held):
            got = held.take(starts, lengths)
            rest = [i for i, view in enumerate(got) if view is None]
            if len(rest) < len(got):
                if rest:
                    fetched = self._fetch(
                        [starts[i] for i in rest], [lengths[i] for i in rest], max_gap, background
                    )
                    for i, view in zip(rest, fetched, strict=True):
                        got[i] = view
                return [memoryview(view) for view in got]
        return self._fetch(starts, lengths, max_gap, background)

    def hold(self, start: int, data: bytes | memoryview, metadata: int = 0) -> None:
        """Keep ``data`` (this file's bytes from ``start``) for the reads that follow.

        Used by a lazy chunk index that fetched a region's B-tree leaves as the byte
        span holding them, which in files written in order holds the region's chunks
        too (:mod:`xnwb.heldbytes`). ``metadata``: bytes of it no read will ask for.
        """
        self._held_store().add(start, data, metadata)

    def held_bytes(self, start: int, length: int) -> memoryview | bytes | None:
        """Held bytes ``[start, start + length)`` (not counted as read), or ``None``."""
        held = self._held
        return None if held is None else held.peek(start, length)

    def claim_unheld(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of bytes ``[start, end)`` neither held nor being fetched to be held,
        claimed for the caller to fetch and :meth:`hold`; then :meth:`release_claim`."""
        return self._held_store().claim(start, end)

    def release_claim(self, claimed: Sequence[tuple[int, int]]) -> None:
        """End the claims :meth:`claim_unheld` returned."""
        self._held_store().release(claimed)

    def _held_store(self) -> Any:
        """This process's :class:`~xnwb.heldbytes.HeldBytes`, made on first use."""
        if self._held is None:
            from xnwb.heldbytes import HeldBytes

            with self._lock:
                if self._held is None:
                    self._held = HeldBytes(HELD_BYTES, HELD_SECONDS)
        return self._held

    def _fetch(
        self,
        starts: Sequence[int],
        lengths: Sequence[int],
        max_gap: int | None,
        background: bool,
    ) -> list[memoryview]:
        gap = self.max_gap if max_gap is None else max_gap
        starts_a = np.asarray(starts, np.int64)
        lengths_a = np.asarray(lengths, np.int64)
        blocks_of, within_of, bstarts_a, bends_a = coalesce_arrays(
            starts_a, lengths_a, gap, self.max_block
        )
        bstarts, bends = bstarts_a.tolist(), bends_a.tolist()
        if self._local:
            blocks = self._fetch_local(bstarts, bends)
        else:
            try:
                blocks = self._fetch_remote(bstarts, bends, background)
            except ChunkReadError as err:
                raise self._isolate(err, starts, lengths) from err
        got = np.fromiter((len(block) for block in blocks), np.int64, len(blocks))
        short = np.flatnonzero(within_of + lengths_a > got[blocks_of])
        if short.size:
            i = int(short[0])
            start, length = int(starts_a[i]), int(lengths_a[i])
            returned = max(0, int(got[blocks_of[i]] - within_of[i]))
            failed = ChunkReadError(
                f"short read of {self.url!r}: bytes {start}-{start + length} asked, "
                f"{min(returned, length)} returned (file truncated or changed?)"
            )
            failed.byte_range = (start, start + length)  # type: ignore[attr-defined]
            raise failed
        views = [memoryview(block) for block in blocks]
        ends_of = (within_of + lengths_a).tolist()
        return [
            views[b][w:e]
            for b, w, e in zip(blocks_of.tolist(), within_of.tolist(), ends_of, strict=True)
        ]

    def _isolate(
        self, err: ChunkReadError, starts: Sequence[int], lengths: Sequence[int]
    ) -> ChunkReadError:
        """Find which of the ranges merged into a failed request fail on their own.

        One attempt each, only after the merged request failed for good: the error then
        names the failing range (and so the failing chunk), not the whole merged block.
        """
        span = getattr(err, "byte_range", None)
        if span is None or isinstance(err, SourceChangedError):
            return err
        inside = [
            (s, n) for s, n in zip(starts, lengths, strict=True) if s < span[1] and s + n > span[0]
        ]
        if len(inside) < 2:
            return err
        remote = self.remote()
        outcomes = remote.run(remote.try_ranges([s for s, _ in inside], [s + n for s, n in inside]))
        for outcome in outcomes:
            if isinstance(outcome, ChunkReadError):
                located = type(outcome)(
                    f"{outcome} (tried on its own after the merged request for bytes "
                    f"{span[0]}-{span[1]} failed after {remote.retries + 1} attempts)"
                )
                located.byte_range = outcome.byte_range  # type: ignore[attr-defined]
                return located
        return err

    async def afetch(self, starts: Sequence[int], lengths: Sequence[int]) -> list[memoryview]:
        """Async :meth:`fetch`, for zarr's event loop (runs the fetch off the loop)."""
        return await asyncio.to_thread(self.fetch, starts, lengths)

    def size(self) -> int:
        """Size of the file in bytes."""
        return int(self.fingerprint().size)
