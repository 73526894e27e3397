"""Remote objects: filesystems, fingerprints, and ranged reads with retries.

One :class:`RemoteObject` per (process, URL) fetches byte ranges of one object on
``http(s)://`` (aiohttp through fsspec's session), ``s3://`` (s3fs), ``gs://`` (gcsfs)
or any other fsspec async filesystem, on fsspec's event loop:

- HTTP redirects are resolved once (DANDI's asset URLs redirect to signed, expiring
  S3 URLs) and ranges go straight to the final location; when that location stops
  answering (403/404/410: the signature expired) the original URL is resolved again;
- every request has a connect timeout and a read timeout (the longest silence
  allowed while waiting for the answer or between pieces of the body), so a server
  that stalls cannot hang a read;
- transient failures (5xx, 429, resets, truncated bodies, timeouts) are retried a
  bounded number of times with exponential backoff spanning seconds (a server's
  ``Retry-After`` is honoured, up to a bound), then raised as
  :class:`~xnwb.exceptions.ChunkReadError` (:class:`~xnwb.exceptions.RemoteTimeoutError`
  for timeouts) naming the URL and byte range;
- every response is checked to hold exactly the bytes asked for: status 206, a
  ``Content-Range`` whose start, end and total match the request and the object's
  size, a body of that length. A server that ignores or mangles ``Range`` (the one-byte
  probe at open included) never yields wrong bytes;
- the object's ETag (or Last-Modified) is pinned at open: ranged GETs carry
  ``If-Match`` with a strong ETag (412 means the object was replaced), and every
  response's ETag/Last-Modified and total size are compared with the pinned ones;
  a change raises :class:`~xnwb.exceptions.SourceChangedError`. On s3:// and gs://
  every ranged GET is conditional on the pinned version (S3 ``IfMatch`` with the ETag,
  GCS ``ifGenerationMatch`` with the generation: 412 means replaced), and each answer's
  ETag / ``x-goog-generation`` and ``Content-Range`` (range and total size) are checked
  (:mod:`xnwb.buckets`); no metadata request is added, none per range, none per process.

The timeouts and the retry policy are set through ``storage_options`` (xnwb takes
these keys out before the rest goes to fsspec): ``connect_timeout`` (s, default 10),
``read_timeout`` (s, default 30), ``retries`` (default 4), ``retry_wait`` (first
backoff in s, default 0.5, doubling), ``max_retry_wait`` (cap on one wait, including
a server's ``Retry-After``, default 30).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from xnwb.exceptions import ChunkReadError, RemoteTimeoutError, SourceChangedError

__all__ = ["Fingerprint", "RemoteObject", "filesystem_for", "split_options"]

_EXTRAS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
}
_S3 = ("s3", "s3a")
_GCS = ("gs", "gcs")
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
#: Requests in flight per remote object and process.
DEFAULT_CONCURRENCY = 16
_EXPIRED_STATUS = {401, 403, 404, 410}

#: ``storage_options`` keys read by xnwb itself (never passed to fsspec), with defaults.
XNWB_OPTIONS: dict[str, float] = {
    "connect_timeout": 10.0,
    "read_timeout": 30.0,
    "retries": 4,
    "retry_wait": 0.5,
    "max_retry_wait": 30.0,
}
#: How retries wait (a module attribute so tests can record the waits asked for).
_sleep = asyncio.sleep
#: Throughput below which a non-HTTP read counts as stalled (its timeout grows with size).
_MIN_THROUGHPUT = 64 * 2**10


def split_options(
    storage_options: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Split ``storage_options`` into fsspec's options and xnwb's timeouts/retry policy.

    Examples
    --------
    >>> fs_opts, ours = split_options({"read_timeout": 2, "headers": {"a": "b"}})
    >>> fs_opts, ours["read_timeout"], ours["retries"]
    ({'headers': {'a': 'b'}}, 2.0, 4)
    """
    options = dict(storage_options or {})
    ours: dict[str, float] = {}
    for key, default in XNWB_OPTIONS.items():
        value = options.pop(key, default)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"storage_options[{key!r}] must be a number, got {value!r}") from None
        if not number >= 0 or (key != "retries" and number == float("inf")):
            raise ValueError(f"storage_options[{key!r}] must be >= 0 and finite, got {value!r}")
        ours[key] = int(number) if key == "retries" else number
    return options, ours


def filesystem_for(url: str, storage_options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """The fsspec filesystem for ``url``; a missing extra is named in the error.

    Examples
    --------
    >>> type(filesystem_for("https://example.org/x.nwb")).__name__
    'HTTPFileSystem'
    """
    import fsspec

    protocol = urlparse(url).scheme or "file"
    storage_options, _ = split_options(storage_options)
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
    """A failure worth retrying (``retry_after``: seconds the server asked to wait)."""

    def __init__(self, message: str, retry_after: float | None = None, timeout: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.timeout = timeout


class _Expired(Exception):
    """The resolved (signed) location stopped answering: resolve again."""


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass
class RemoteObject:
    """Ranged reads of one remote object (not pickled; one per process).

    ``pinned`` is the identity (:func:`xnwb.source.file_identity`) of the version opened;
    when set, every response is checked against it.
    """

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    concurrency: int = field(default_factory=lambda: DEFAULT_CONCURRENCY)
    requests: int = 0
    bytes_read: int = 0
    pinned: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.storage_options, policy = split_options(self.storage_options)
        self.connect_timeout = policy["connect_timeout"]
        self.read_timeout = policy["read_timeout"]
        self.retries = int(policy["retries"])
        self.backoff = policy["retry_wait"]
        self.max_wait = policy["max_retry_wait"]
        self.protocol = urlparse(self.url).scheme
        self.is_http = self.protocol in ("http", "https")
        if not self.is_http:
            # s3fs and gcsfs retry transient errors themselves; one more attempt on
            # top covers what they give up on without multiplying their backoff.
            self.retries = min(self.retries, 1)
            if self.protocol in _S3:
                config = dict(self.storage_options.get("config_kwargs") or {})
                config.setdefault("connect_timeout", self.connect_timeout)
                config.setdefault("read_timeout", self.read_timeout)
                self.storage_options["config_kwargs"] = config
        self._fs: Any = None
        self._target: str | None = None
        self._fingerprint: Fingerprint | None = None
        self._identity: dict[str, Any] | None = None
        #: ``(start, bytes)`` the probe brought beyond its one byte (the object's ends).
        self._parts: list[tuple[int, bytes]] = []
        self._resolve_lock: asyncio.Lock | None = None
        self._sem: asyncio.Semaphore | None = None
        self._background_sem: asyncio.Semaphore | None = None  # index reads ahead
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

    async def _http_request(self, url: str, headers: dict[str, str], **extra: Any) -> Any:
        """``session.get`` with the fsspec filesystem's options and xnwb's timeouts."""
        import aiohttp

        fs = self._filesystem()
        session = await fs.set_session()
        kwargs = {k: v for k, v in fs.kwargs.items() if k != "headers"}
        kwargs.setdefault(
            "timeout",
            aiohttp.ClientTimeout(
                total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
            ),
        )
        kwargs.update(extra)
        return session.get(url, headers={**fs.kwargs.get("headers", {}), **headers}, **kwargs)

    def _transient_from(self, err: BaseException) -> _Transient | None:
        if isinstance(err, TimeoutError | asyncio.TimeoutError):
            return _Transient(
                f"no answer within the timeouts (connect {self.connect_timeout:g} s, "
                f"read {self.read_timeout:g} s; set storage_options read_timeout=...)",
                timeout=True,
            )
        if _is_transient_exception(err):
            return _Transient(f"{type(err).__name__}: {err}")
        return None

    # -- resolving ---------------------------------------------------------------
    async def _resolve_http(self, ends: int = 0) -> tuple[str, Fingerprint]:
        """Follow redirects with a ranged GET (signed URLs often refuse HEAD).

        ``ends`` > 0: the probe also brings the first and last ``ends`` bytes (the
        content fingerprint of :mod:`xnwb.cache`) in the same round trip, see
        :meth:`_probe_ends`; else it is one byte.
        """
        try:
            if ends > 0:
                return await self._probe_ends(ends)
            return await self._ranged_probe("0-0", 1)  # one byte
        except (_Transient, _Expired, ChunkReadError, FileNotFoundError):
            raise
        except Exception as err:
            transient = self._transient_from(err)
            if transient is not None:
                raise transient from err
            raise ChunkReadError(
                f"{self.url}: the one-byte probe (Range: bytes=0-0) failed: "
                f"{type(err).__name__}: {err}"
            ) from err

    def _refuse_probe_answer(self, resp: Any, spec: str) -> None:
        """Raise for a probe's answer that is not a 206 (its body, maybe the whole object,
        is left unread)."""
        status = resp.status
        if status == 206:
            return
        self._count(0)
        if status == 404:
            raise FileNotFoundError(f"{self.url}: 404 Not Found")
        if status in _TRANSIENT_STATUS:
            raise _Transient(f"HTTP {status}", _retry_after(resp.headers))
        if status >= 400:
            raise ChunkReadError(f"{self.url}: HTTP {status} {resp.reason}")
        raise ChunkReadError(
            f"{self.url}: the server ignores Range (answered HTTP {status} to "
            f"'Range: bytes={spec}'); xnwb needs a server that honours HTTP Range requests"
        )

    async def _probe_ends(self, n: int) -> tuple[str, Fingerprint]:
        """The probe as one request for both ends: ``Range: bytes=0-<n-1>,-<n>``.

        A server that answers several ranges (nginx, Apache: ``206 multipart/byteranges``)
        gives the size, the version and the first and last ``n`` bytes in one request.
        One that declines (S3 and GCS answer ``200``, whose body is not read; aiohttp's
        static files ``416``) is remembered for its origin, in this process; then, and
        from then on, the two ends are two single-range requests sent at once (each
        checked as the one-byte probe is). Every part must have a ``Content-Range`` within
        what was asked, of one and the same object size, and a body of exactly that
        length; every range asked must be answered in full.
        """
        origin = _origin(self.url)
        if origin not in _SINGLE_RANGE_ORIGINS:
            try:
                return await self._ranged_probe(f"0-{n - 1},-{n}", n)
            except _MultiRangeRefused:
                _SINGLE_RANGE_ORIGINS.add(origin)
        (target, fingerprint), (_, tail_fp) = await asyncio.gather(
            self._ranged_probe(f"0-{n - 1}", n), self._ranged_probe(f"-{n}", n, keep=True)
        )
        if tail_fp != fingerprint:
            raise ChunkReadError(
                f"{self.url}: the object changed while it was being opened "
                f"({fingerprint} at its head, {tail_fp} at its tail)"
            )
        return target, fingerprint

    async def _ranged_probe(self, spec: str, n: int, keep: bool = False) -> tuple[str, Fingerprint]:
        """One probing GET with ``Range: bytes=<spec>``; its parts go to ``self._parts``."""
        asked = f"bytes {spec}"
        request = await self._http_request(
            self.url, {"Range": f"bytes={spec}"}, allow_redirects=True
        )
        async with request as resp:
            for _ in resp.history:  # each followed redirect was a request too
                self._count(0)
            if "," in spec and resp.status in _MULTI_RANGE_REFUSED:
                self._count(0)  # the body (maybe the whole object) is not read
                raise _MultiRangeRefused
            self._refuse_probe_answer(resp, spec)
            # At most both ends plus the part headers: never read an unbounded body.
            limit = 2 * n + 64 * 2**10
            if resp.content_length is not None and resp.content_length > limit:
                self._count(0)
                raise ChunkReadError(
                    f"{self.url}: the server mangles Range: {resp.content_length} bytes "
                    f"answered to 'Range: bytes={spec}'"
                )
            body = await resp.content.read(limit + 1)
            while len(body) <= limit and not resp.content.at_eof():
                more = await resp.content.read(limit + 1 - len(body))
                if not more:
                    break
                body += more
            self._count(len(body))
            if len(body) > limit:
                raise ChunkReadError(
                    f"{self.url}: the server mangles Range: more than {limit} bytes answered "
                    f"to 'Range: bytes={spec}'"
                )
            content_type = resp.headers.get("Content-Type", "")
            if content_type.lower().startswith("multipart/byteranges"):
                parts = _multipart_parts(body, content_type, self.url, asked)
            else:
                parts = [(resp.headers.get("Content-Range", ""), body)]
            size, pieces = _check_parts(parts, spec, self.url, asked)
            identity = _probed_identity(size, resp.headers)
            if not keep:
                self._identity = identity
            self._parts.extend(pieces)
            return str(resp.url), _fingerprint_of(identity)

    async def _ends(self, n: int) -> tuple[bytes, int, bytes]:
        """``(head, tail_start, tail)``: the first and the last ``n`` bytes (clipped)."""
        if self.is_http and self._fingerprint is None:
            await self.resolve(ends=n)
        size = (await self.resolve()).size
        wanted = [(0, min(n, size)), (max(0, size - n), size)]
        found: list[bytes | None] = []
        for start, stop in wanted:
            piece = None
            for at, data in self._parts:
                if at <= start and stop <= at + len(data):
                    piece = data[start - at : stop - at]
                    break
            found.append(piece)
        missing = [i for i, piece in enumerate(found) if piece is None]
        if missing:
            got = await self.get_ranges(
                [wanted[i][0] for i in missing], [wanted[i][1] for i in missing]
            )
            for i, data in zip(missing, got, strict=True):
                found[i] = data
        head, tail = found
        assert head is not None and tail is not None
        return head, wanted[1][0], tail

    def ends(self, n: int) -> tuple[bytes, int, bytes]:
        """The first and last ``n`` bytes: ``(head, tail_start, tail)``.

        Over HTTP, before the object is resolved, they come with the probe (one
        request where the server answers several ranges at once).
        """
        return self.run(self._ends(n))

    async def _resolve_other(self) -> tuple[str, Fingerprint]:
        fs = self._filesystem()
        # gcsfs' _info also lists the "directory"; _get_object is one request.
        getter = getattr(fs, "_get_object", None) or fs._info
        try:
            info = await asyncio.wait_for(
                getter(self.url), self.connect_timeout + self.read_timeout
            )
        except (FileNotFoundError, PermissionError):
            raise
        except Exception as err:
            transient = self._transient_from(err)
            if transient is not None or isinstance(err, OSError):
                raise (transient or _Transient(f"{type(err).__name__}: {err}")) from err
            raise
        self._count(0)
        tag = None
        for key in ("generation", "ETag", "etag", "VersionId", "LastModified", "updated", "mtime"):
            if info.get(key):
                tag = str(info[key])
                break
        etag = info.get("ETag") or info.get("etag")
        modified = info.get("LastModified") or info.get("updated") or info.get("mtime")
        self._identity = {
            "kind": "remote",
            "size": int(info["size"]),
            "etag": None if etag is None else str(etag),
            "last_modified": None if modified is None else str(modified),
            "tag": tag,
        }
        return self.url, Fingerprint(int(info["size"]), tag)

    async def resolve(self, force: bool = False, ends: int = 0) -> Fingerprint:
        """Find the object's final location, size and version tag.

        ``ends`` > 0 (HTTP): bring the first and last ``ends`` bytes in the same round
        trip (see :meth:`ends`).
        """
        if self._resolve_lock is None:
            self._resolve_lock = asyncio.Lock()
        async with self._resolve_lock:
            if force or self._fingerprint is None:
                self._parts = []
                resolver = (
                    functools.partial(self._resolve_http, ends)
                    if self.is_http
                    else self._resolve_other
                )
                target, fingerprint = await self._with_retries(resolver, "resolving")
                self._target, self._fingerprint = target, fingerprint
                self._check_pinned(self._identity)
        assert self._fingerprint is not None
        return self._fingerprint

    def _check_pinned(self, current: dict[str, Any] | None) -> None:
        from xnwb.source import compare_identity

        if self.pinned is None or current is None:
            return
        why = compare_identity(self.pinned, current)
        if why is not None:
            raise SourceChangedError(
                f"{self.url!r} changed since it was opened ({why}): its data no longer sit "
                "where the index says; reopen it to read the new version"
            )

    def fingerprint(self) -> Fingerprint:
        """Size and version tag (one request the first time)."""
        return self.run(self.resolve())

    def identity(self) -> dict[str, Any]:
        """Size, ETag, Last-Modified and version tag (one request the first time)."""
        self.run(self.resolve())
        assert self._identity is not None
        return dict(self._identity)

    # -- reading -----------------------------------------------------------------
    def _pinned_etag(self) -> str | None:
        """The pinned ETag if it is strong (``If-Match`` compares strongly)."""
        etag = (self.pinned or {}).get("etag")
        return etag if etag and not etag.startswith("W/") else None

    async def _get_http(self, start: int, end: int) -> bytes:
        headers = {"Range": f"bytes={start}-{end - 1}"}
        etag = self._pinned_etag()
        if etag:
            headers["If-Match"] = etag
        target = self._target or self.url
        try:
            request = await self._http_request(target, headers)
            async with request as resp:
                status = resp.status
                whole = status == 200 and start == 0 and resp.content_length == end - start
                if status == 206 or whole:  # never read a 200's body that is more than asked
                    body = await resp.read()
                else:
                    body = b""
                self._count(len(body))
                reply = resp.headers
        except Exception as err:
            transient = self._transient_from(err)
            if transient is not None:
                raise transient from err
            raise ChunkReadError(f"{type(err).__name__}: {err}") from err
        if status == 412:
            raise SourceChangedError(
                f"{self.url!r} changed since it was opened (the server answered 412 to "
                f"If-Match: {etag}): reopen it to read the new version"
            )
        if status in _EXPIRED_STATUS and target != self.url:
            raise _Expired(f"HTTP {status} from the resolved location")
        if status in _TRANSIENT_STATUS:
            raise _Transient(f"HTTP {status}", _retry_after(reply))
        if status == 404:
            raise FileNotFoundError("HTTP 404 Not Found")
        if status >= 400:
            raise ChunkReadError(f"HTTP {status}")
        self._check_pinned(self._response_identity(reply))
        if status == 206:
            self._check_content_range(reply.get("Content-Range"), start, end)
        elif not (start == 0 and len(body) == end - start):
            raise ChunkReadError(
                f"the server ignores Range (HTTP {status} to 'Range: bytes={start}-{end - 1}', "
                f"{len(body)} bytes)"
            )
        return body

    def _response_identity(self, headers: Any) -> dict[str, Any] | None:
        """What a response says of the object's version (only what it sends)."""
        if self.pinned is None:
            return None
        etag, modified = headers.get("ETag"), headers.get("Last-Modified")
        if not etag and not modified:
            return None
        pinned = self.pinned
        return {
            "kind": "remote",
            "size": pinned.get("size"),
            "etag": etag,
            "last_modified": modified,
            "tag": None,
        }

    def _check_content_range(self, value: str | None, start: int, end: int) -> None:
        """A 206 answers exactly the bytes asked, of an object of the pinned size."""
        match = _CONTENT_RANGE.fullmatch((value or "").strip())
        if match is None:
            raise ChunkReadError(
                f"the server answered 206 without a usable Content-Range ({value!r}) to "
                f"'Range: bytes={start}-{end - 1}'"
            )
        first, last, total = int(match.group(1)), int(match.group(2)), match.group(3)
        size = (self.pinned or {}).get("size")
        if size is None and self._fingerprint is not None:
            size = self._fingerprint.size
        if total != "*" and size is not None and int(total) != int(size):
            raise SourceChangedError(
                f"{self.url!r} changed since it was opened (size {size} -> {total} bytes, "
                "from Content-Range): reopen it to read the new version"
            )
        if (first, last) != (start, end - 1):
            raise ChunkReadError(
                f"the server mangles Range: asked bytes {start}-{end - 1}, got Content-Range "
                f"{value!r}"
            )

    def _pinned_generation(self) -> str | None:
        """The pinned GCS generation (the version tag of a ``gs://`` object)."""
        tag = (self.pinned or {}).get("tag")
        return tag if self.protocol in _GCS and tag and str(tag).isdigit() else None

    async def _read_other(self, start: int, end: int) -> bytes:
        """One GET; on s3/gs conditional on the pinned version and its answer checked."""
        from xnwb import buckets

        fs = self._filesystem()
        if end <= start:
            return b""  # nothing to ask for (and "bytes=5-4" would mean the whole object)
        if self.protocol in _S3:
            answer = await buckets.s3_range(fs, self.url, start, end, self._pinned_etag())
        elif self.protocol in _GCS:
            answer = await buckets.gcs_range(fs, self.url, start, end, self._pinned_generation())
        else:
            return await fs._cat_file(self.url, start=start, end=end)
        if answer.content_range is not None:
            self._check_content_range(answer.content_range, start, end)
        return answer.body

    async def _get_other(self, start: int, end: int) -> bytes:
        budget = self.connect_timeout + self.read_timeout + (end - start) / _MIN_THROUGHPUT
        try:
            body = await asyncio.wait_for(self._read_other(start, end), budget)
        except (FileNotFoundError, PermissionError, ChunkReadError):
            raise
        except Exception as err:
            transient = self._transient_from(err)
            if transient is not None or isinstance(err, OSError):
                raise (transient or _Transient(f"{type(err).__name__}: {err}")) from err
            raise
        self._count(len(body))
        return bytes(body)

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry number ``attempt + 1``: jittered doubling, or Retry-After."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_wait)
        base = min(self.backoff * 2**attempt, self.max_wait)
        return base * (0.5 + 0.5 * random.random())  # jitter: workers do not retry in step

    async def _with_retries(self, attempt: Any, what: str, retries: int | None = None) -> Any:
        retries = self.retries if retries is None else retries
        last: BaseException | None = None
        for n in range(retries + 1):
            retry_after = None
            try:
                return await attempt()
            except _Transient as err:
                last = err
                retry_after = err.retry_after
            except _Expired as err:
                last = err
                self._fingerprint = None
                self._target = None
                if self.is_http:
                    with contextlib.suppress(Exception):
                        self._target, self._fingerprint = await self._resolve_http()
                    self._check_pinned(self._identity)
            if n < retries:
                await _sleep(self._wait(n, retry_after))
        error = (
            RemoteTimeoutError if isinstance(last, _Transient) and last.timeout else ChunkReadError
        )
        raise error(f"{what} {self.url} failed after {retries + 1} attempts: {last}") from last

    async def get_range(
        self, start: int, end: int, retries: int | None = None, background: bool = False
    ) -> bytes:
        """Bytes ``[start, end)``, retried on transient failures, length-checked.

        ``background`` requests (reading a chunk index ahead) have slots of their own, so
        that they never queue in front of the data reads they are meant to speed up.
        """
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
            self._background_sem = asyncio.Semaphore(self.concurrency)
        sem = self._background_sem if background else self._sem
        # A process's first read checks the pinned version with one metadata request,
        # unless every s3/gs read is conditional on it anyway (ETag or generation).
        conditional = self._pinned_etag() if self.protocol in _S3 else self._pinned_generation()
        if self._target is None and (self.is_http or (self.pinned is not None and not conditional)):
            await self.resolve()
        getter = self._get_http if self.is_http else self._get_other

        async def attempt() -> bytes:
            async with sem:
                body = await getter(start, end)
            if len(body) != end - start:
                raise _Transient(f"short body: {len(body)} of {end - start} bytes")
            return body

        try:
            return await self._with_retries(attempt, f"reading bytes {start}-{end} of", retries)
        except FileNotFoundError as err:
            failed = ChunkReadError(f"bytes {start}-{end} of {self.url}: not found ({err})")
        except PermissionError as err:
            failed = ChunkReadError(f"bytes {start}-{end} of {self.url}: forbidden ({err})")
        except ChunkReadError as err:
            failed = (
                err
                if self.url in str(err)
                else type(err)(f"bytes {start}-{end} of {self.url}: {err}")
            )
        if not isinstance(failed, SourceChangedError):
            failed.byte_range = (start, end)  # type: ignore[attr-defined]
        raise failed

    async def get_ranges(
        self, starts: list[int], ends: list[int], background: bool = False
    ) -> list[bytes]:
        """Many ranges at once, ``concurrency`` in flight."""
        return list(
            await asyncio.gather(
                *(
                    self.get_range(s, e, background=background)
                    for s, e in zip(starts, ends, strict=True)
                )
            )
        )

    async def try_ranges(self, starts: list[int], ends: list[int]) -> list[bytes | BaseException]:
        """Each range once, without retries: its bytes or its error (to locate a failure)."""
        return list(
            await asyncio.gather(
                *(self.get_range(s, e, retries=0) for s, e in zip(starts, ends, strict=True)),
                return_exceptions=True,
            )
        )


def _probed_identity(size: int, headers: Any) -> dict[str, Any]:
    """The identity a probe's answer gives: size, ETag, Last-Modified, version tag."""
    etag, modified = headers.get("ETag"), headers.get("Last-Modified")
    return {
        "kind": "remote",
        "size": size,
        "etag": etag,
        "last_modified": modified,
        # both validators, when both are sent, so a cached index notices either moving
        "tag": f"{etag} {modified}" if etag and modified else etag or modified,
    }


def _fingerprint_of(identity: dict[str, Any]) -> Fingerprint:
    return Fingerprint(identity["size"], identity["tag"])


class _MultiRangeRefused(Exception):
    """The server answered a request for several ranges with the whole object."""


#: How servers decline several ranges in one request: the whole object (S3, GCS), 416
#: (aiohttp's static files), 400 or 501. The ranges are then asked one by one.
_MULTI_RANGE_REFUSED = frozenset({200, 400, 416, 501})
#: Origins (scheme://host:port) that declined several ranges in one request.
_SINGLE_RANGE_ORIGINS: set[str] = set()


def _origin(url: str) -> str:
    parts = urlparse(url)
    return f"{parts.scheme}://{parts.netloc}"


def _multipart_parts(
    body: bytes, content_type: str, url: str, asked: str
) -> list[tuple[str, bytes]]:
    """``(Content-Range, bytes)`` of each part of a ``multipart/byteranges`` body.

    Each part's length comes from its own ``Content-Range``, not from a search for the
    boundary, so a body that happens to contain the boundary cannot cut a part short.
    """

    def mangled(why: str) -> ChunkReadError:
        return ChunkReadError(
            f"{url}: the server mangles Range: its multipart answer to 'Range: {asked}' {why}"
        )

    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise mangled("names no boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    parts: list[tuple[str, bytes]] = []
    at = body.find(delimiter)
    while at >= 0:
        at += len(delimiter)
        if body.startswith(b"--", at):
            return parts
        head_end = body.find(b"\r\n\r\n", at)
        if head_end < 0:
            raise mangled("has a part without headers")
        fields = {}
        for line in body[at:head_end].decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        content_range = fields.get("content-range", "")
        span = _CONTENT_RANGE.fullmatch(content_range)
        if span is None:
            raise mangled(f"has a part with Content-Range {content_range!r}")
        start = head_end + 4
        stop = start + int(span.group(2)) - int(span.group(1)) + 1
        if stop > len(body):
            raise mangled("is cut short")
        parts.append((content_range, body[start:stop]))
        at = body.find(delimiter, stop)
    raise mangled("does not end with its closing boundary")


def _check_parts(
    parts: list[tuple[str, bytes]], spec: str, url: str, asked: str
) -> tuple[int, list[tuple[int, bytes]]]:
    """The object size and ``(start, bytes)`` of the parts answered to ``bytes=<spec>``."""
    size: int | None = None
    pieces = []
    for content_range, data in parts:
        match = _CONTENT_RANGE.fullmatch(content_range.strip())
        if match is None or match.group(3) == "*":
            raise ChunkReadError(
                f"{url}: the server mangles Range: asked {asked}, got Content-Range "
                f"{content_range!r} (no object size)"
            )
        first, last, total = (int(g) for g in match.groups())
        if size is not None and total != size:
            raise ChunkReadError(
                f"{url}: the server mangles Range: parts of one answer to {asked} give "
                f"object sizes {size} and {total}"
            )
        size = total
        if last < first or last >= total or len(data) != last - first + 1:
            raise ChunkReadError(
                f"{url}: the server mangles Range: asked {asked}, got Content-Range "
                f"{content_range!r} with {len(data)} body bytes"
            )
        pieces.append((first, last, data))
    if size is None:
        raise ChunkReadError(f"{url}: the server answered {asked} with no part")
    ranges = []
    for item in spec.split(","):
        a, _, b = item.partition("-")
        ranges.append(
            (max(0, size - int(b)), size - 1) if not a else (int(a), min(int(b), size - 1))
        )
    # A server may merge overlapping or nearby ranges into one part (RFC 9110): a part
    # may span the gap between two ranges asked, never reach outside them, and every
    # range asked must be answered in full.
    hull = (min(a for a, _ in ranges), max(b for _, b in ranges))
    for first, last, _ in pieces:
        if not hull[0] <= first <= last <= hull[1]:
            raise ChunkReadError(
                f"{url}: the server mangles Range: asked {asked}, got bytes {first}-{last}"
            )
    for a, b in ranges:
        if not any(first <= a and b <= last for first, last, _ in pieces):
            raise ChunkReadError(
                f"{url}: the server mangles Range: asked {asked}, bytes {a}-{b} missing "
                f"from its answer"
            )
    return size, [(first, bytes(data)) for first, _, data in pieces]


def _retry_after(headers: Any) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date)."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


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
