"""Remote objects: filesystems, fingerprints, and ranged reads with retries.

One :class:`RemoteObject` per (process, URL) fetches byte ranges of one object on
``http(s)://`` (aiohttp through fsspec's session), ``s3://`` (s3fs), ``gs://`` (gcsfs)
or any other fsspec async filesystem, on fsspec's event loop:

- HTTP redirects are resolved once (DANDI's asset URLs redirect to signed, expiring
  S3 URLs) and ranges go straight to the final location; when that location stops
  answering (403/404/410: the signature expired) the original URL is resolved again;
- transient failures (5xx, 429, resets, truncated bodies, timeouts) are retried a
  bounded number of times with exponential backoff, then raised as
  :class:`~xnwb.exceptions.ChunkReadError` naming the URL and byte range;
- every response is checked to hold exactly the bytes asked for: a server that
  ignores ``Range`` never yields wrong bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from xnwb.exceptions import ChunkReadError

__all__ = ["Fingerprint", "RemoteObject", "filesystem_for"]

_EXTRAS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
}
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
#: Requests in flight per remote object and process.
DEFAULT_CONCURRENCY = 16
_EXPIRED_STATUS = {401, 403, 404, 410}


def filesystem_for(url: str, storage_options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """The fsspec filesystem for ``url``; a missing extra is named in the error.

    Examples
    --------
    >>> type(filesystem_for("https://example.org/x.nwb")).__name__
    'HTTPFileSystem'
    """
    import fsspec

    protocol = urlparse(url).scheme or "file"
    if protocol in _EXTRAS:
        module, extra = _EXTRAS[protocol]
        try:
            __import__(module)
        except ImportError as err:
            raise ImportError(
                f"reading {protocol}:// URLs needs {module}: pip install 'xnwb[{extra}]'"
            ) from err
    options = dict(storage_options or {})
    options.update(kwargs)
    return fsspec.filesystem(protocol, **options)


@dataclass(frozen=True)
class Fingerprint:
    """What identifies one version of a remote object: size plus ETag/generation/mtime."""

    size: int
    tag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "tag": self.tag}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        return cls(int(data["size"]), data.get("tag"))


class _Transient(Exception):
    """A failure worth retrying."""


class _Expired(Exception):
    """The resolved (signed) location stopped answering: resolve again."""


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass
class RemoteObject:
    """Ranged reads of one remote object (not pickled; one per process)."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    retries: int = 4
    backoff: float = 0.05
    concurrency: int = field(default_factory=lambda: DEFAULT_CONCURRENCY)
    requests: int = 0
    bytes_read: int = 0

    def __post_init__(self) -> None:
        self.protocol = urlparse(self.url).scheme
        self.is_http = self.protocol in ("http", "https")
        if not self.is_http:
            # s3fs and gcsfs retry transient errors themselves; one more attempt on
            # top covers what they give up on without multiplying their backoff.
            self.retries = min(self.retries, 1)
        self._fs: Any = None
        self._target: str | None = None
        self._fingerprint: Fingerprint | None = None
        self._resolve_lock: asyncio.Lock | None = None
        self._sem: asyncio.Semaphore | None = None
        self._count_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        import fsspec.asyn

        return fsspec.asyn.get_loop()

    def run(self, coro: Any) -> Any:
        """Run a coroutine on fsspec's IO loop from synchronous code."""
        import fsspec.asyn

        return fsspec.asyn.sync(self.loop, lambda: coro)

    def _filesystem(self) -> Any:
        if self._fs is None:
            self._fs = filesystem_for(
                self.url, self.storage_options, asynchronous=True, loop=self.loop
            )
        return self._fs

    def _count(self, nbytes: int) -> None:
        with self._count_lock:
            self.requests += 1
            self.bytes_read += nbytes

    # -- resolving ---------------------------------------------------------------
    async def _resolve_http(self) -> tuple[str, Fingerprint]:
        """Follow redirects with a one-byte GET (signed URLs often refuse HEAD)."""
        fs = self._filesystem()
        session = await fs.set_session()
        headers = {**fs.kwargs.get("headers", {}), "Range": "bytes=0-0"}
        kwargs = {k: v for k, v in fs.kwargs.items() if k != "headers"}
        async with session.get(self.url, headers=headers, allow_redirects=True, **kwargs) as resp:
            await resp.read()
            self._count(1)
            # each followed redirect was a request too
            for _ in resp.history:
                self._count(0)
            if resp.status == 404:
                raise FileNotFoundError(f"{self.url}: 404 Not Found")
            if resp.status in _TRANSIENT_STATUS:
                raise _Transient(f"HTTP {resp.status}")
            if resp.status >= 400:
                raise ChunkReadError(f"{self.url}: HTTP {resp.status} {resp.reason}")
            match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if resp.status == 206 and match and match.group(3) != "*":
                size = int(match.group(3))
            elif resp.status == 200 and "Content-Length" in resp.headers:
                raise ChunkReadError(
                    f"{self.url} ignores HTTP Range requests (answered 200 to a ranged GET); "
                    "xnwb needs a server that honours Range"
                )
            else:
                raise ChunkReadError(f"{self.url}: no object size in the response")
            tag = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
            return str(resp.url), Fingerprint(size, tag)

    async def _resolve_other(self) -> tuple[str, Fingerprint]:
        fs = self._filesystem()
        # gcsfs' _info also lists the "directory"; _get_object is one request.
        getter = getattr(fs, "_get_object", None) or fs._info
        info = await getter(self.url)
        self._count(0)
        tag = None
        for key in ("generation", "ETag", "etag", "VersionId", "LastModified", "updated", "mtime"):
            if info.get(key):
                tag = str(info[key])
                break
        return self.url, Fingerprint(int(info["size"]), tag)

    async def resolve(self, force: bool = False) -> Fingerprint:
        """Find the object's final location, size and version tag."""
        if self._resolve_lock is None:
            self._resolve_lock = asyncio.Lock()
        async with self._resolve_lock:
            if force or self._fingerprint is None:
                resolver = self._resolve_http if self.is_http else self._resolve_other
                target, fingerprint = await self._with_retries(resolver, "resolving")
                self._target, self._fingerprint = target, fingerprint
        assert self._fingerprint is not None
        return self._fingerprint

    def fingerprint(self) -> Fingerprint:
        """Size and version tag (one request the first time)."""
        return self.run(self.resolve())

    # -- reading -----------------------------------------------------------------
    async def _get_http(self, start: int, end: int) -> bytes:
        fs = self._filesystem()
        session = await fs.set_session()
        headers = {**fs.kwargs.get("headers", {}), "Range": f"bytes={start}-{end - 1}"}
        kwargs = {k: v for k, v in fs.kwargs.items() if k != "headers"}
        target = self._target or self.url
        try:
            async with session.get(target, headers=headers, **kwargs) as resp:
                body = await resp.read()
                self._count(len(body))
                status = resp.status
        except TimeoutError as err:
            raise _Transient(f"timeout: {err}") from err
        except Exception as err:
            if _is_transient_exception(err):
                raise _Transient(f"{type(err).__name__}: {err}") from err
            raise
        if status in _EXPIRED_STATUS and target != self.url:
            raise _Expired(f"HTTP {status} from the resolved location")
        if status in _TRANSIENT_STATUS:
            raise _Transient(f"HTTP {status}")
        if status == 404:
            raise FileNotFoundError("HTTP 404 Not Found")
        if status >= 400:
            raise ChunkReadError(f"HTTP {status}")
        if status != 206 and not (start == 0 and len(body) == end - start):
            raise ChunkReadError(
                f"the server ignored the Range header (HTTP {status}, {len(body)} bytes)"
            )
        return body

    async def _get_other(self, start: int, end: int) -> bytes:
        fs = self._filesystem()
        try:
            body = await fs._cat_file(self.url, start=start, end=end)
        except (FileNotFoundError, PermissionError):
            raise
        except Exception as err:
            if _is_transient_exception(err) or isinstance(err, OSError):
                raise _Transient(f"{type(err).__name__}: {err}") from err
            raise
        self._count(len(body))
        return bytes(body)

    async def _with_retries(self, attempt: Any, what: str) -> Any:
        delay = self.backoff
        last: BaseException | None = None
        for n in range(self.retries + 1):
            try:
                return await attempt()
            except _Transient as err:
                last = err
            except _Expired as err:
                last = err
                self._fingerprint = None
                self._target = None
                if self.is_http:
                    with contextlib.suppress(Exception):
                        self._target, self._fingerprint = await self._resolve_http()
            if n < self.retries:
                await asyncio.sleep(delay)
                delay *= 2
        raise ChunkReadError(
            f"{what} {self.url} failed after {self.retries + 1} attempts: {last}"
        ) from last

    async def get_range(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``, retried on transient failures, length-checked."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        if self.is_http and self._target is None:
            await self.resolve()
        getter = self._get_http if self.is_http else self._get_other

        async def attempt() -> bytes:
            async with self._sem:
                body = await getter(start, end)
            if len(body) != end - start:
                raise _Transient(f"short body: {len(body)} of {end - start} bytes")
            return body

        try:
            return await self._with_retries(attempt, f"reading bytes {start}-{end} of")
        except FileNotFoundError as err:
            raise ChunkReadError(f"bytes {start}-{end} of {self.url}: not found ({err})") from err
        except PermissionError as err:
            raise ChunkReadError(f"bytes {start}-{end} of {self.url}: forbidden ({err})") from err
        except ChunkReadError as err:
            if self.url in str(err):
                raise
            raise ChunkReadError(f"bytes {start}-{end} of {self.url}: {err}") from err

    async def get_ranges(self, starts: list[int], ends: list[int]) -> list[bytes]:
        """Many ranges at once, ``concurrency`` in flight."""
        return list(
            await asyncio.gather(*(self.get_range(s, e) for s, e in zip(starts, ends, strict=True)))
        )


def _is_transient_exception(err: BaseException) -> bool:
    try:
        import aiohttp
    except ImportError:  # pragma: no cover
        aiohttp = None
    if aiohttp is not None:
        if isinstance(err, aiohttp.ClientResponseError):
            return err.status in _TRANSIENT_STATUS
        if isinstance(err, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError):
            return True
    return isinstance(
        err, ConnectionError | asyncio.TimeoutError | TimeoutError | asyncio.IncompleteReadError
    )
