"""Loopback stand-ins for the cloud: an HTTP range server, S3 (moto) and GCS (emulator).

Everything here binds ``127.0.0.1`` only, on ports the OS picks, and every wait is a bounded
loop. Use it as a pytest plugin (``pytest_plugins = ["tests.loopback"]`` in the root
``conftest.py``) or import the classes directly (benchmarks).

Servers
-------
:class:`RangeServer`
    ``aiohttp.web`` in a background thread serving files from a directory, with runtime
    switches: ``latency``, a request log, injected faults, DANDI-like signed redirects.
:class:`CountingProxy`
    The same switches (latency, log, faults) as a reverse proxy in front of another server;
    put in front of moto and the GCS emulator so their traffic can be counted and disturbed.
:class:`MotoServer`, :class:`GCSEmulator`
    ``moto_server`` / ``gcp-storage-emulator`` subprocesses, each with a session proxy.

Fixtures
--------
``range_server``
    function scope; a started :class:`RangeServer` rooted at ``tmp_path / "www"``.
``moto_server``, ``gcs_emulator``
    session scope; the subprocesses (skipped with a reason when the executable is missing).
``http_remote``, ``s3_remote``, ``gcs_remote``
    function scope; a :class:`Remote` with ``upload``/``url``/``storage_options``/
    ``filesystem()`` and ``server`` (the object with the switches), counters and faults reset
    before and after each test; S3/GCS get a fresh bucket per test.
``remote``
    parametrised over ``http``, ``s3``, ``gcs`` -- run one test against every back end.

The switch API (:class:`RangeServer` and :class:`CountingProxy`)
----------------------------------------------------------------
``latency`` (seconds added before answering each request), ``requests`` (list of
:class:`LoggedRequest`), ``count(method=None, path=None, status=None, ranged=None)``,
``bytes_sent``, ``in_flight``/``max_in_flight``, ``inject(target, fault, ...)``,
``clear_faults()``, ``reset()``. Thread-safe: the test thread flips them while the server
thread serves.

Range semantics of :class:`RangeServer`
---------------------------------------
One range ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` gives ``206`` with ``Content-Range``
(``b`` clamped to the end). A first byte at or past the end (or ``bytes=-0``, or any range of
an empty file) gives ``416`` with ``Content-Range: bytes */size``. Several ranges
(``bytes=0-1,5-6``) or a malformed/inverted range are ignored and answered ``200`` with the
whole body, as S3 does and as RFC 9110 allows -- a client must check for ``206``. Set
``multi_range = True`` to answer several ranges as nginx and Apache do: ``206`` with a
``multipart/byteranges`` body, one part (with its own ``Content-Range``) per satisfiable
range, in the order asked. Set ``range_support = False`` to imitate ``python -m http.server``
(Range always ignored).

Environment
-----------
Importing this module sets ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` (unconditionally):
gcsfs reads it once, at its own import, and with it enabled every call first waits ~60 s on a
gRPC probe that cannot succeed on loopback. This module never imports gcsfs at top level; if
gcsfs was imported earlier with the variable unset, the ``gcs_*`` fixtures fail with a message
saying so. ``s3_remote`` sets ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY=testing``,
``AWS_DEFAULT_REGION=us-east-1`` and points ``AWS_CONFIG_FILE``/``AWS_SHARED_CREDENTIALS_FILE``
at nothing, so no real profile is read; ``gcs_remote`` sets ``STORAGE_EMULATOR_HOST`` to its
proxy. Both are undone after each test.

Emulator quirks (gcp-storage-emulator 2026.7.19, moto 5.2.5) and workarounds
-----------------------------------------------------------------------------
- GCS emulator: a suffix range ``bytes=-n`` is not understood; it answers ``200`` with the
  whole object, and gcsfs (``cat_file(path, -n)``) hands that back silently -- wrong bytes.
  Workaround: use non-negative offsets (``start = size - n`` from ``fs.info``).
- GCS emulator: a range starting at or past the end answers ``206`` with an empty body and a
  bogus ``Content-Range: bytes 50-9/10`` instead of ``416``; an inverted range the same.
  gcsfs returns ``b""`` either way, as for real GCS.
- GCS emulator: single-threaded (``http.server.HTTPServer``) and HTTP/1.0, so requests are
  served one at a time and each opens a new connection. Concurrency and throughput numbers
  through it mean nothing; use :class:`RangeServer` for those. The proxy applies ``latency``
  concurrently, before forwarding, so latency-bound request counting still works.
- GCS emulator: ``etag`` is the base64 MD5 of the content (real GCS: an opaque generation
  tag), so rewriting identical bytes keeps the ETag; ``generation`` (a time stamp) changes on
  every upload -- key caches on ``generation`` for GCS. A fresh object reports
  ``metageneration`` ``"2"``. Range responses carry no ``x-goog-hash``.
- moto: no request counter in ``/moto-api/``; :class:`CountingProxy` does the counting.
  ``POST /moto-api/reset`` wipes every bucket (:meth:`MotoServer.reset_state`).
- Both emulators start in roughly 1 s; hence session scope, with a fresh bucket per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import itertools
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Self

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"  # before any gcsfs import

__all__ = [
    "CountingProxy",
    "Fault",
    "GCSEmulator",
    "LoggedRequest",
    "MotoServer",
    "RangeServer",
    "Remote",
    "free_port",
    "gcs_emulator",
    "gcs_remote",
    "http_remote",
    "moto_server",
    "range_server",
    "remote",
    "s3_remote",
]

HOST = "127.0.0.1"
FaultKind = int | Literal["drop", "truncate"]
_HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
    )
)
_ERROR_CODES = {403: "AccessDenied", 404: "NoSuchKey", 500: "InternalError", 503: "SlowDown"}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Returns
    -------
    int
        The port number (another process may still take it; callers retry).
    """
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _error_body(status: int, message: str) -> bytes:
    code = _ERROR_CODES.get(status, str(status))
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()


@dataclasses.dataclass(frozen=True)
class LoggedRequest:
    """One request as a loopback server saw it.

    Attributes
    ----------
    method, path, query : str
        HTTP method, URL-decoded path, raw query string.
    range : str or None
        The ``Range`` header as sent.
    status : int
        Status answered (``0`` if the handler never answered).
    bytes_sent : int
        Body bytes handed to the socket (fewer than promised under ``drop``/``truncate``).
    fault : str or None
        The injected fault that hit this request, if any.
    elapsed : float
        Seconds from arrival until the answer was committed (latency included, body
        transfer not). A request is logged just before its body goes out, so once a client
        has its answer, the request is in the log.
    """

    method: str
    path: str
    query: str
    range: str | None
    status: int
    bytes_sent: int
    fault: str | None
    elapsed: float


@dataclasses.dataclass
class Fault:
    """A fault injected into a loopback server; see :meth:`_SwitchServer.inject`.

    ``seen`` counts matching requests, ``fired`` those the fault hit.
    """

    target: str
    kind: FaultKind
    times: int | None = None
    after: int = 0
    methods: frozenset[str] = frozenset({"GET", "HEAD"})
    ranged_only: bool = False
    fraction: float = 0.5
    seen: int = 0
    fired: int = 0

    @property
    def label(self) -> str:
        return str(self.kind)


@dataclasses.dataclass
class _Exchange:
    start: float
    status: int = 0
    sent: int = 0
    fault: str | None = None
    logged: bool = False


class _SwitchServer:
    """An ``aiohttp.web`` app on 127.0.0.1:<port 0>, run by its own thread and event loop.

    Subclasses implement ``_serve(request, exchange)`` and ``_fault_matches``.
    """

    shutdown_timeout = 0.5

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latency = 0.0
        self._log: list[LoggedRequest] = []
        self._faults: list[Fault] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:<port>`` (no trailing slash)."""
        if self.port is None:
            raise RuntimeError(f"{type(self).__name__} is not running; call start() first")
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 10.0) -> Self:
        """Start serving in a background thread; return once the socket listens.

        Parameters
        ----------
        timeout : float
            Seconds to wait for the server to come up.

        Returns
        -------
        Self
            The started server.

        Raises
        ------
        RuntimeError
            If it does not come up within ``timeout``.
        """
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started at {self.url}")
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._astart())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._astop())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"{type(self).__name__} did not start within {timeout} s")
        if errors:
            self._thread = None
            raise RuntimeError(f"{type(self).__name__} failed to start") from errors[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread (bounded by ``timeout``); idempotent."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} thread did not stop within {timeout} s")
        self._thread = self._loop = None
        self.port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _astart(self) -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=self.shutdown_timeout
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, 0).start()
        self.port = self._runner.addresses[0][1]

    async def _astop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- switches ------------------------------------------------------------------------
    @property
    def latency(self) -> float:
        """Seconds slept before answering each request (all methods, redirects too)."""
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {seconds!r}")
        with self._lock:
            self._latency = float(seconds)

    @property
    def requests(self) -> list[LoggedRequest]:
        """A copy of the request log, oldest first (a request is logged when it finishes)."""
        with self._lock:
            return list(self._log)

    def count(
        self,
        method: str | None = None,
        *,
        path: str | None = None,
        status: int | None = None,
        ranged: bool | None = None,
    ) -> int:
        """Count logged requests matching every given criterion.

        Parameters
        ----------
        method : str, optional
            e.g. ``"GET"``.
        path : str, optional
            A substring of the decoded request path.
        status : int, optional
            Status answered.
        ranged : bool, optional
            Whether the request carried a ``Range`` header.

        Returns
        -------
        int
        """
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method)
            and (path is None or path in r.path)
            and (status is None or r.status == status)
            and (ranged is None or (r.range is not None) == ranged)
        )

    @property
    def bytes_sent(self) -> int:
        """Body bytes sent over all logged requests."""
        return sum(r.bytes_sent for r in self.requests)

    @property
    def in_flight(self) -> int:
        """Requests being handled right now."""
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """Largest number of requests handled at once since the last :meth:`reset`."""
        with self._lock:
            return self._max_in_flight

    def inject(
        self,
        target: str,
        fault: FaultKind,
        *,
        times: int | None = None,
        after: int = 0,
        methods: tuple[str, ...] | None = None,
        ranged_only: bool = False,
        fraction: float = 0.5,
    ) -> Fault:
        """Make matching requests fail.

        Parameters
        ----------
        target : str
            Which requests: see the subclass's ``_fault_matches`` (:class:`RangeServer`: a
            file name, or an exact path starting with ``/``; :class:`CountingProxy`: a
            substring of the decoded path).
        fault : int or {"drop", "truncate"}
            An HTTP status to answer instead (e.g. ``404``, ``500``, ``503``), ``"drop"``
            (send the headers and ``fraction`` of the body, then reset the connection with
            an RST) or ``"truncate"`` (same, but close it cleanly: ``Content-Length`` promises
            more than arrives).
        times : int, optional
            Hit this many matching requests, then let them through (``500`` for the first N
            requests then OK: ``inject(name, 500, times=N)``). Default: every one.
        after : int
            Let this many matching requests through first (the n-th request only:
            ``after=n - 1, times=1``).
        methods : tuple of str, optional
            Methods affected; default ``("GET", "HEAD")`` for status faults, ``("GET",)``
            for body faults.
        ranged_only : bool
            Only requests that carry a ``Range`` header (data reads, not metadata).
        fraction : float
            Share of the body sent before a ``drop``/``truncate``.

        Returns
        -------
        Fault
            Live record; ``fault.fired`` says how many requests it hit.
        """
        if not (isinstance(fault, int) or fault in ("drop", "truncate")):
            raise ValueError(f"fault must be an HTTP status or 'drop'/'truncate', got {fault!r}")
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
        if methods is None:
            methods = ("GET", "HEAD") if isinstance(fault, int) else ("GET",)
        record = Fault(
            target=target,
            kind=fault,
            times=times,
            after=after,
            methods=frozenset(m.upper() for m in methods),
            ranged_only=ranged_only,
            fraction=fraction,
        )
        with self._lock:
            self._faults.append(record)
        return record

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Clear the log, faults and in-flight maximum; set latency back to 0."""
        with self._lock:
            self._log.clear()
            self._faults.clear()
            self._latency = 0.0
            self._max_in_flight = self._in_flight

    # -- request handling ----------------------------------------------------------------
    def _fault_matches(self, target: str, request: web.BaseRequest, name: str | None) -> bool:
        raise NotImplementedError

    async def _serve(self, request: web.Request, ex: _Exchange) -> web.StreamResponse:
        raise NotImplementedError

    def _take_fault(self, request: web.BaseRequest, name: str | None = None) -> Fault | None:
        ranged = "Range" in request.headers
        with self._lock:
            hit = None
            for f in self._faults:
                if (
                    request.method in f.methods
                    and (ranged or not f.ranged_only)
                    and self._fault_matches(f.target, request, name)
                ):
                    f.seen += 1
                    live = f.seen > f.after and (f.times is None or f.fired < f.times)
                    if live and hit is None:
                        f.fired += 1
                        hit = f
            return hit

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ex = _Exchange(start=time.perf_counter())
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            latency = self._latency
        try:
            if latency > 0:
                await asyncio.sleep(latency)
            return await self._serve(request, ex)
        finally:
            self._record(request, ex)

    def _record(self, request: web.BaseRequest, ex: _Exchange) -> None:
        """Log the request once, *before* its last bytes go out (so a client that has its
        answer always finds it in the log) or when the handler ends without answering."""
        if ex.logged:
            return
        ex.logged = True
        entry = LoggedRequest(
            method=request.method,
            path=request.path,
            query=request.query_string,
            range=request.headers.get("Range"),
            status=ex.status,
            bytes_sent=ex.sent,
            fault=ex.fault,
            elapsed=time.perf_counter() - ex.start,
        )
        with self._lock:
            self._in_flight -= 1
            self._log.append(entry)

    async def _fail(
        self, request: web.Request, ex: _Exchange, status: int, message: str
    ) -> web.StreamResponse:
        headers = CIMultiDict({"Content-Type": "application/xml"})
        return await self._reply(request, ex, status, headers, _error_body(status, message))

    async def _reply(
        self,
        request: web.Request,
        ex: _Exchange,
        status: int,
        headers: CIMultiDict[str],
        body: bytes,
        fault: Fault | None = None,
        head_length: int | None = None,
    ) -> web.StreamResponse:
        """Send ``body`` (or, for HEAD, only headers), honouring a drop/truncate fault."""
        ex.status = status
        resp = web.StreamResponse(status=status, headers=headers)
        if request.method == "HEAD":
            resp.headers["Content-Length"] = str(len(body) if head_length is None else head_length)
            self._record(request, ex)
            await resp.prepare(request)
            return resp
        resp.content_length = len(body)
        if fault is None or isinstance(fault.kind, int):
            ex.sent = len(body)
            self._record(request, ex)
            await resp.prepare(request)
            await resp.write(body)
            return resp
        ex.fault = fault.label
        part = int(len(body) * fault.fraction)
        ex.sent = part
        self._record(request, ex)
        await resp.prepare(request)
        await resp.write(body[:part])
        transport = request.transport
        if transport is not None:
            deadline = time.monotonic() + 2.0
            while transport.get_write_buffer_size() and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            if fault.kind == "drop":
                sock = transport.get_extra_info("socket")
                if sock is not None:  # SO_LINGER 0: close() sends RST, not FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            else:
                transport.close()
        return resp  # aiohttp's write_eof then meets a closed transport and gives up quietly


# ---------------------------------------------------------------------------------------
# HTTP range server
# ---------------------------------------------------------------------------------------
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class _Unsatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Parse a single-range ``Range`` header against an object of ``size`` bytes.

    Parameters
    ----------
    header : str or None
        The header value.
    size : int
        Object size in bytes.

    Returns
    -------
    tuple of int or None
        ``(start, stop)`` with ``stop`` exclusive, or ``None`` to ignore the header and send
        the whole body (absent, malformed, inverted or multi-range).

    Raises
    ------
    _Unsatisfiable
        The range starts at or past the end (answer ``416``).

    Examples
    --------
    >>> parse_range("bytes=2-4", 10), parse_range("bytes=-3", 10), parse_range("bytes=8-", 10)
    ((2, 5), (7, 10), (8, 10))
    >>> parse_range("bytes=0-1,4-5", 10) is None, parse_range("bytes=5-2", 10) is None
    (True, True)
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        n = int(last)
        if n == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - n), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise _Unsatisfiable
    stop = size if not last else min(int(last) + 1, size)
    return start, stop


#: Bodies larger than this are sent piece by piece, headers first.
_STREAM_ABOVE = 4 * 2**20


def _read_range(path: Path, start: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(length)


@dataclasses.dataclass
class _Token:
    name: str
    issued: float
    uses: int = 0
    revoked: bool = False


class RangeServer(_SwitchServer):
    """Serve the files under ``root`` over HTTP with byte ranges, faults and redirects.

    Routes: ``/<name>`` serves ``root/<name>``; ``/dandi/<name>`` answers ``302`` to
    ``/signed/<token>/<name>`` (a fresh token each time), which serves the file until the
    token expires (``signed_ttl`` seconds, ``signed_max_uses`` requests, or
    :meth:`expire_signed_urls`), then answers ``403`` with S3's "Request has expired" XML.
    ``GET`` and ``HEAD`` answer ``Content-Length``, ``ETag``, ``Last-Modified``,
    ``Accept-Ranges: bytes``; the ETag is ``"<inode>-<size>-<mtime_ns>"`` (hex), so it
    changes when the file is replaced or rewritten (use :meth:`put` to guarantee it: it
    replaces the file and moves its mtime forward).

    Parameters
    ----------
    root : path-like
        Directory to serve (created if missing).

    Examples
    --------
    >>> import tempfile, fsspec
    >>> with RangeServer(tempfile.mkdtemp()) as server:
    ...     url = server.put("a.bin", bytes(range(10)))
    ...     fs = fsspec.filesystem("http", skip_instance_cache=True)
    ...     fs.cat_file(url, start=2, end=5), server.count("GET", status=206)
    (b'\\x02\\x03\\x04', 1)
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__()
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._range_support = True
        self._multi_range = False
        self._signed_ttl: float | None = None
        self._signed_max_uses: int | None = None
        self._signed_get_only = False
        self._tokens: dict[str, _Token] = {}

    # -- files ---------------------------------------------------------------------------
    def url_for(self, name: str) -> str:
        """Direct URL of ``root/<name>``."""
        return f"{self.url}/{name.lstrip('/')}"

    def dandi_url(self, name: str) -> str:
        """Redirecting URL ``/dandi/<name>`` (answers 302 to a signed URL)."""
        return f"{self.url}/dandi/{name.lstrip('/')}"

    def path(self, name: str) -> Path:
        """Local path of ``name``; refuses names that escape ``root``."""
        path = (self.root / name.lstrip("/")).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{name!r} is outside the served directory {self.root}")
        return path

    def put(self, name: str, data: bytes | os.PathLike[str]) -> str:
        """Write (or replace) ``root/<name>`` atomically, changing its ETag.

        Parameters
        ----------
        name : str
            Relative file name (subdirectories allowed).
        data : bytes or path-like
            Content, or a local file to copy.

        Returns
        -------
        str
            The direct URL.
        """
        dest = self.path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        old = dest.stat() if dest.exists() else None
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
        if isinstance(data, bytes | bytearray | memoryview):
            tmp.write_bytes(data)
        else:
            shutil.copyfile(data, tmp)
        if old is not None:  # coarse clocks: make sure mtime (and so the ETag) moves
            mtime = max(time.time_ns(), old.st_mtime_ns + 1_000_000)
            os.utime(tmp, ns=(mtime, mtime))
        os.replace(tmp, dest)
        return self.url_for(name)

    @staticmethod
    def etag(path: Path, st: os.stat_result | None = None) -> str:
        """The ETag the server sends for ``path`` (``st``: its ``stat``, if already taken)."""
        st = path.stat() if st is None else st
        return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'

    # -- switches ------------------------------------------------------------------------
    @property
    def range_support(self) -> bool:
        """If False, ignore ``Range`` and always answer 200 (like ``python -m http.server``)."""
        with self._lock:
            return self._range_support

    @range_support.setter
    def range_support(self, value: bool) -> None:
        with self._lock:
            self._range_support = bool(value)

    @property
    def multi_range(self) -> bool:
        """If True, answer several ranges with ``multipart/byteranges`` (nginx, Apache)."""
        with self._lock:
            return self._multi_range

    @multi_range.setter
    def multi_range(self, value: bool) -> None:
        with self._lock:
            self._multi_range = bool(value)

    @property
    def signed_ttl(self) -> float | None:
        """Seconds a signed URL stays valid after its redirect (None: forever)."""
        with self._lock:
            return self._signed_ttl

    @signed_ttl.setter
    def signed_ttl(self, seconds: float | None) -> None:
        with self._lock:
            self._signed_ttl = seconds

    @property
    def signed_max_uses(self) -> int | None:
        """Requests a signed URL answers before it expires (None: unlimited)."""
        with self._lock:
            return self._signed_max_uses

    @signed_max_uses.setter
    def signed_max_uses(self, uses: int | None) -> None:
        with self._lock:
            self._signed_max_uses = uses

    @property
    def signed_get_only(self) -> bool:
        """If True, a signed URL answers 403 to HEAD, as S3 does for a presigned GET URL."""
        with self._lock:
            return self._signed_get_only

    @signed_get_only.setter
    def signed_get_only(self, value: bool) -> None:
        with self._lock:
            self._signed_get_only = bool(value)

    def expire_signed_urls(self) -> None:
        """Expire every signed URL issued so far."""
        with self._lock:
            for token in self._tokens.values():
                token.revoked = True

    @property
    def redirects(self) -> int:
        """Number of ``302`` redirects answered since the last :meth:`reset`."""
        return self.count(status=302)

    def reset(self) -> None:
        """Also forget signed URLs and restore range support and signing defaults."""
        super().reset()
        with self._lock:
            self._tokens.clear()
            self._range_support = True
            self._multi_range = False
            self._signed_ttl = None
            self._signed_max_uses = None
            self._signed_get_only = False

    # -- handling ------------------------------------------------------------------------
    def _fault_matches(self, target: str, request: web.BaseRequest, name: str | None) -> bool:
        if target.startswith("/"):
            return request.path == target
        return name is not None and name == target.lstrip("/")

    def _signed_ok(self, token: str, name: str) -> bool:
        with self._lock:
            tok = self._tokens.get(token)
            if tok is None or tok.name != name or tok.revoked:
                return False
            ttl, max_uses = self._signed_ttl, self._signed_max_uses
            if ttl is not None and time.monotonic() - tok.issued > ttl:
                return False
            if max_uses is not None and tok.uses >= max_uses:
                return False
            tok.uses += 1
            return True

    def _lookup(self, name: str) -> Path | None:
        try:
            path = self.path(name)
        except ValueError:
            return None
        return path if path.is_file() else None

    async def _serve(self, request: web.Request, ex: _Exchange) -> web.StreamResponse:
        path = request.path
        if path.startswith("/dandi/"):
            name = path.removeprefix("/dandi/")
            fault = self._take_fault(request, None)
            if fault is not None:
                ex.fault = fault.label
                return await self._fail(request, ex, int(fault.kind), "injected fault")
            if self._lookup(name) is None:
                return await self._fail(request, ex, 404, f"no asset {name!r}")
            token = secrets.token_urlsafe(12)
            with self._lock:
                self._tokens[token] = _Token(name=name, issued=time.monotonic())
            location = f"{self.url}/signed/{token}/{name}"
            headers = CIMultiDict({"Location": location})
            return await self._reply(request, ex, 302, headers, b"")
        if path.startswith("/signed/"):
            token, _, name = path.removeprefix("/signed/").partition("/")
            if request.method == "HEAD" and self.signed_get_only:
                return await self._fail(request, ex, 403, "SignatureDoesNotMatch")
            if not self._signed_ok(token, name):
                return await self._fail(request, ex, 403, "Request has expired")
        else:
            name = path.lstrip("/")
        file = self._lookup(name)
        fault = self._take_fault(request, name)
        if fault is not None and isinstance(fault.kind, int):
            ex.fault = fault.label
            return await self._fail(request, ex, fault.kind, "injected fault")
        if file is None:
            return await self._fail(request, ex, 404, f"{name!r} not found")
        st = file.stat()
        size = st.st_size
        headers = CIMultiDict(
            {
                "Content-Type": "application/octet-stream",
                "Accept-Ranges": "bytes",
                "ETag": self.etag(file, st),
                "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True),
            }
        )
        header = request.headers.get("Range")
        if self.range_support and self.multi_range and header and "," in header:
            return await self._multipart(request, ex, file, header, headers)
        try:
            span = parse_range(header, size) if self.range_support else None
        except _Unsatisfiable:
            headers["Content-Range"] = f"bytes */{size}"
            return await self._reply(request, ex, 416, headers, b"")
        start, stop = span if span is not None else (0, size)
        status = 200
        if span is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        if request.method == "HEAD":
            return await self._reply(request, ex, status, headers, b"", head_length=stop - start)
        if fault is None and stop - start > _STREAM_ABOVE:
            return await self._stream(request, ex, status, headers, file, start, stop)
        body = await asyncio.to_thread(_read_range, file, start, stop - start)
        return await self._reply(request, ex, status, headers, body, fault)

    async def _stream(
        self,
        request: web.Request,
        ex: _Exchange,
        status: int,
        headers: CIMultiDict[str],
        file: Path,
        start: int,
        stop: int,
    ) -> web.StreamResponse:
        """A large body piece by piece, headers first (as S3 sends a whole object): a
        client that reads the headers only and closes costs the server little."""
        ex.status = status
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = stop - start
        ex.sent = stop - start
        self._record(request, ex)
        await resp.prepare(request)
        at = start
        try:
            while at < stop:
                piece = await asyncio.to_thread(
                    _read_range, file, at, min(_STREAM_ABOVE, stop - at)
                )
                await resp.write(piece)
                at += len(piece)
        except (ConnectionError, RuntimeError):  # the client closed: stop sending
            pass
        return resp

    async def _multipart(
        self,
        request: web.Request,
        ex: _Exchange,
        file: Path,
        header: str,
        headers: CIMultiDict[str],
    ) -> web.StreamResponse:
        """Several ranges as ``206 multipart/byteranges`` (416 if none is satisfiable)."""
        size = file.stat().st_size
        unit, _, specs = header.strip().partition("=")
        spans = []
        for spec in specs.split(","):
            try:
                span = parse_range(f"{unit}={spec.strip()}", size)
            except _Unsatisfiable:
                continue
            if span is None:  # one malformed range: ignore the header, as for one range
                return await self._reply(request, ex, 200, headers, file.read_bytes())
            spans.append(span)
        if not spans:
            headers["Content-Range"] = f"bytes */{size}"
            return await self._reply(request, ex, 416, headers, b"")
        boundary = secrets.token_hex(8)
        body = bytearray()
        for start, stop in spans:
            body += (
                f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Range: bytes {start}-{stop - 1}/{size}\r\n\r\n"
            ).encode("ascii")
            body += await asyncio.to_thread(_read_range, file, start, stop - start)
            body += b"\r\n"
        body += f"--{boundary}--\r\n".encode("ascii")
        headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        if request.method == "HEAD":
            return await self._reply(request, ex, 206, headers, b"", head_length=len(body))
        return await self._reply(request, ex, 206, headers, bytes(body))


# ---------------------------------------------------------------------------------------
# Counting reverse proxy
# ---------------------------------------------------------------------------------------
class CountingProxy(_SwitchServer):
    """Reverse proxy on 127.0.0.1 that logs, delays and disturbs traffic to ``upstream``.

    Forwards method, raw path and query, headers (``Host`` kept, so links the upstream builds
    point back at the proxy) and body; answers with the upstream's status, headers and body.
    Redirects are passed back, not followed. A fault ``target`` matches any request whose
    decoded path contains it (S3: ``/<bucket>/<key>``; GCS: ``.../b/<bucket>/o/<key>``).

    Parameters
    ----------
    upstream : str
        Base URL, e.g. ``"http://127.0.0.1:5000"``.
    """

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def _astart(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=120),
            connector=aiohttp.TCPConnector(limit=64),
        )
        await super()._astart()

    async def _astop(self) -> None:
        await super()._astop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _fault_matches(self, target: str, request: web.BaseRequest, name: str | None) -> bool:
        return target in request.path

    async def _serve(self, request: web.Request, ex: _Exchange) -> web.StreamResponse:
        fault = self._take_fault(request)
        if fault is not None and isinstance(fault.kind, int):
            ex.fault = fault.label
            return await self._fail(request, ex, fault.kind, "injected fault")
        assert self._session is not None
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP
        )
        data = await request.read()
        url = URL(self.upstream + request.raw_path, encoded=True)
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=data or None, allow_redirects=False
            ) as up:
                body = await up.read()
                out = CIMultiDict(
                    (k, v) for k, v in up.headers.items() if k.lower() not in _HOP_BY_HOP
                )
                length = up.headers.get("Content-Length")
                status = up.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return await self._fail(request, ex, 502, f"upstream {self.upstream}: {exc!r}")
        head_length = int(length) if length is not None else None
        return await self._reply(request, ex, status, out, body, fault, head_length=head_length)


# ---------------------------------------------------------------------------------------
# Emulator subprocesses
# ---------------------------------------------------------------------------------------
def _executable(name: str) -> str | None:
    """Find ``name`` on PATH or beside the running interpreter (an unactivated venv)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, data: bytes | None = None, timeout: float = 5.0) -> int:
    """One request without proxies; return the status (an HTTP error status too)."""
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with _NO_PROXY.open(req, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


class _Subprocess:
    """A server executable on 127.0.0.1:<free port>, polled until it answers HTTP."""

    executable = ""
    install_hint = ""
    health_path = "/"

    def __init__(self, log_dir: str | os.PathLike[str], startup_timeout: float = 30.0) -> None:
        self.log_path = Path(log_dir) / f"{self.executable}.log"
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.proxy: CountingProxy | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def find(cls) -> str | None:
        """Path of the executable, or None when it is not installed."""
        return _executable(cls.executable)

    @property
    def endpoint_url(self) -> str:
        """Direct URL of the emulator (not counted; use ``proxy.url`` to be counted)."""
        return f"http://{HOST}:{self.port}"

    def _argv(self, exe: str, port: int) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        """Start the subprocess and its :class:`CountingProxy`; wait until both answer.

        Raises
        ------
        FileNotFoundError
            The executable is missing.
        RuntimeError
            It exits early or does not answer within ``startup_timeout`` (after 3 tries
            on fresh ports).
        """
        exe = self.find()
        if exe is None:
            raise FileNotFoundError(f"{self.executable} not found; {self.install_hint}")
        problem = ""
        for _attempt in range(3):
            port = free_port()
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    self._argv(exe, port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.port = port
            problem = self._wait_up()
            if not problem:
                self.proxy = CountingProxy(self.endpoint_url).start()
                return self
            self._kill()
        log_tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.executable} did not start: {problem}\n{log_tail}")

    def _wait_up(self) -> str:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return f"exited with code {self._proc.returncode}"
            try:
                _http("GET", self.endpoint_url + self.health_path, timeout=1.0)
                return ""
            except OSError:
                time.sleep(0.05)
        return f"no answer on port {self.port} within {self.startup_timeout} s"

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop(self) -> None:
        """Stop the proxy and the subprocess (terminate, then kill after 5 s)."""
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        self._kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MotoServer(_Subprocess):
    """``moto_server -H 127.0.0.1 -p <port>``; ``proxy`` counts the traffic.

    Read through ``s3fs.S3FileSystem(endpoint_url=moto.proxy.url, key="testing",
    secret="testing")``; ``endpoint_url`` (direct) for set-up that should not be counted.

    Parameters
    ----------
    log_dir : path-like
        Where ``moto_server.log`` goes.
    startup_timeout : float
        Seconds to wait for it to answer.
    """

    executable = "moto_server"
    install_hint = "install the test extra: pip install 'moto[server]' 'boto3<1.43.118'"
    health_path = "/moto-api/"

    def _argv(self, exe: str, port: int) -> list[str]:
        return [exe, "-H", HOST, "-p", str(port)]

    def reset_state(self) -> None:
        """Wipe every bucket and object (``POST /moto-api/reset``)."""
        _http("POST", self.endpoint_url + "/moto-api/reset", data=b"")


class GCSEmulator(_Subprocess):
    """``gcp-storage-emulator start --in-memory``; ``proxy`` counts the traffic.

    Parameters
    ----------
    log_dir : path-like
        Where the emulator's log goes.
    default_bucket : str
        Bucket created at start.
    """

    executable = "gcp-storage-emulator"
    install_hint = "install it: pip install gcp-storage-emulator"

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        default_bucket: str = "xnwb-default",
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(log_dir, startup_timeout)
        self.default_bucket = default_bucket

    def _argv(self, exe: str, port: int) -> list[str]:
        return [
            exe,
            "start",
            "--host",
            HOST,
            "--port",
            str(port),
            "--in-memory",
            "--default-bucket",
            self.default_bucket,
        ]

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` through the JSON API (direct, not counted)."""
        body = f'{{"name": "{bucket}"}}'.encode()
        req = urllib.request.Request(
            f"{self.endpoint_url}/storage/v1/b?project=test",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with _NO_PROXY.open(req, timeout=5) as resp:
            resp.read()

    def wipe(self) -> None:
        """Delete every object and bucket (the emulator's ``/wipe``)."""
        _http("GET", self.endpoint_url + "/wipe")


# ---------------------------------------------------------------------------------------
# Uniform per-test handles
# ---------------------------------------------------------------------------------------
class Remote:
    """One storage back end as a test sees it.

    Attributes
    ----------
    kind : {"http", "s3", "gcs"}
    server : RangeServer or CountingProxy
        Holds the switches (``latency``, ``requests``, ``count``, ``inject``, ``reset``) for
        every request a client sends to :meth:`url`.
    storage_options : dict
        What to pass to fsspec / ``xr.open_dataset(..., storage_options=...)``.
    """

    kind: str
    server: _SwitchServer
    protocol: str

    def __init__(self, kind: str, server: _SwitchServer, storage_options: dict[str, Any]):
        self.kind = kind
        self.server = server
        self._storage_options = storage_options

    @property
    def storage_options(self) -> dict[str, Any]:
        return dict(self._storage_options)

    def url(self, name: str) -> str:
        """URL of ``name`` as a user would type it."""
        raise NotImplementedError

    def upload(self, name: str, data: bytes | os.PathLike[str]) -> str:
        """Store ``data`` (bytes or a local file) as ``name``, bypassing the counters.

        Returns
        -------
        str
            :meth:`url` of ``name``.
        """
        raise NotImplementedError

    def filesystem(self, **kwargs: Any) -> Any:
        """A fresh fsspec filesystem (no instance cache) through the counting server.

        Parameters
        ----------
        **kwargs
            Added to :attr:`storage_options`, e.g. ``asynchronous=True``.
        """
        import fsspec

        options = self.storage_options | {"skip_instance_cache": True} | kwargs
        return fsspec.filesystem(self.protocol, **options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} via {self.server.url}>"


class HTTPRemote(Remote):
    """:class:`RangeServer` as a :class:`Remote`."""

    protocol = "http"
    server: RangeServer

    def __init__(self, server: RangeServer) -> None:
        super().__init__("http", server, {})

    def url(self, name: str) -> str:
        return self.server.url_for(name)

    def upload(self, name: str, data: bytes | os.PathLike[str]) -> str:
        return self.server.put(name, data)


class _BucketRemote(Remote):
    server: CountingProxy

    def __init__(
        self,
        kind: str,
        server: CountingProxy,
        storage_options: dict[str, Any],
        bucket: str,
        direct: Any,
    ) -> None:
        super().__init__(kind, server, storage_options)
        self.bucket = bucket
        self.direct = direct  #: fsspec filesystem talking to the emulator directly

    def url(self, name: str) -> str:
        return f"{self.protocol}://{self.bucket}/{name.lstrip('/')}"

    def upload(self, name: str, data: bytes | os.PathLike[str]) -> str:
        path = f"{self.bucket}/{name.lstrip('/')}"
        if isinstance(data, bytes | bytearray | memoryview):
            self.direct.pipe_file(path, bytes(data))
        else:
            self.direct.put_file(os.fspath(data), path)
        self.direct.invalidate_cache()
        return self.url(name)


class S3Remote(_BucketRemote):
    """A fresh bucket on :class:`MotoServer`, read through its proxy with s3fs."""

    protocol = "s3"


class GCSRemote(_BucketRemote):
    """A fresh bucket on :class:`GCSEmulator`, read through its proxy with gcsfs."""

    protocol = "gs"


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------
_bucket_ids = itertools.count()


def _bucket_name() -> str:
    return f"xnwb-{os.getpid()}-{next(_bucket_ids)}"


@contextlib.contextmanager
def _fresh(server: _SwitchServer) -> Iterator[None]:
    server.reset()
    try:
        yield
    finally:
        server.reset()


@pytest.fixture
def range_server(tmp_path: Path) -> Iterator[RangeServer]:
    """A started :class:`RangeServer` serving ``tmp_path / "www"``; stopped after the test."""
    with RangeServer(tmp_path / "www") as server:
        yield server


@pytest.fixture
def http_remote(range_server: RangeServer) -> HTTPRemote:
    """``range_server`` as a :class:`Remote` (``kind == "http"``)."""
    return HTTPRemote(range_server)


def _start_or_skip(server: _Subprocess) -> _Subprocess:
    if server.find() is None:
        pytest.skip(f"{server.executable} not found on PATH or beside {sys.executable}")
    return server.start()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A session-wide :class:`MotoServer` (skipped when ``moto_server`` is missing)."""
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    _start_or_skip(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSEmulator]:
    """A session-wide :class:`GCSEmulator` (skipped when the executable is missing)."""
    server = GCSEmulator(tmp_path_factory.mktemp("gcs"))
    _start_or_skip(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_remote(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[S3Remote]:
    """A fresh S3 bucket on moto, read through the counting proxy (reset per test)."""
    s3fs = pytest.importorskip("s3fs", reason="s3fs is needed for s3:// (pip install s3fs)")
    for var, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(var, value)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    assert moto_server.proxy is not None
    credentials = {"key": "testing", "secret": "testing"}
    region = {"client_kwargs": {"region_name": "us-east-1"}}
    direct = s3fs.S3FileSystem(
        endpoint_url=moto_server.endpoint_url, skip_instance_cache=True, **credentials, **region
    )
    bucket = _bucket_name()
    direct.call_s3("create_bucket", Bucket=bucket)  # mkdir would send a LocationConstraint
    options = {"endpoint_url": moto_server.proxy.url, **credentials, **region}
    with _fresh(moto_server.proxy):
        yield S3Remote("s3", moto_server.proxy, options, bucket, direct)


def _import_gcsfs() -> Any:
    gcsfs = pytest.importorskip("gcsfs", reason="gcsfs is needed for gs:// (pip install gcsfs)")
    if gcsfs.GCSFileSystem.__module__ != "gcsfs.core":
        pytest.fail(
            "gcsfs was imported before tests.loopback set GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="
            "false, so every call would wait ~60 s on a gRPC probe; import tests.loopback "
            "first (root conftest: pytest_plugins = ['tests.loopback']) or export the variable"
        )
    return gcsfs


@pytest.fixture
def gcs_remote(gcs_emulator: GCSEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[GCSRemote]:
    """A fresh GCS bucket on the emulator, read through the counting proxy (reset per test)."""
    gcsfs = _import_gcsfs()
    assert gcs_emulator.proxy is not None
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.proxy.url)
    bucket = _bucket_name()
    gcs_emulator.create_bucket(bucket)
    direct = gcsfs.GCSFileSystem(
        token="anon", endpoint_url=gcs_emulator.endpoint_url, skip_instance_cache=True
    )
    options = {"token": "anon", "endpoint_url": gcs_emulator.proxy.url}
    with _fresh(gcs_emulator.proxy):
        yield GCSRemote("gcs", gcs_emulator.proxy, options, bucket, direct)


@pytest.fixture(params=["http", "s3", "gcs"])
def remote(request: pytest.FixtureRequest) -> Remote:
    """Each back end in turn: ``http_remote``, ``s3_remote``, ``gcs_remote``."""
    return request.getfixturevalue(f"{request.param}_remote")
