"""Helpers to test laziness: count dask computes and count the chunk reads of an array.

In the style of xarray's ``raise_if_dask_computes``: wrap code in
:func:`raise_if_dask_computes` to assert it computes nothing (or at most ``n`` times), and
build inputs with :func:`counted_array` to see exactly which chunks a computation read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = [
    "CountingScheduler",
    "FileServer",
    "ReadCounter",
    "counted_array",
    "raise_if_dask_computes",
    "serve_files",
]


class CountingScheduler:
    """A dask scheduler that counts its calls and refuses more than ``max_computes``.

    Examples
    --------
    >>> import dask
    >>> import dask.array as da
    >>> scheduler = CountingScheduler(max_computes=1)
    >>> with dask.config.set(scheduler=scheduler):
    ...     _ = da.ones(4, chunks=2).sum().compute()
    >>> scheduler.total_computes
    1
    """

    def __init__(self, max_computes: int = 0) -> None:
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        import dask.threaded

        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(
                f"too many dask computations: {self.total_computes} > {self.max_computes}"
            )
        return dask.threaded.get(dsk, keys, **kwargs)


@contextmanager
def raise_if_dask_computes(max_computes: int = 0) -> Iterator[CountingScheduler]:
    """Raise ``RuntimeError`` if the block computes with dask more than ``max_computes`` times.

    Examples
    --------
    >>> import dask.array as da
    >>> x = da.ones(4, chunks=2)
    >>> with raise_if_dask_computes():
    ...     y = x + 1  # lazy: fine
    >>> with raise_if_dask_computes():
    ...     y.compute()
    Traceback (most recent call last):
    ...
    RuntimeError: too many dask computations: 1 > 0
    """
    import dask

    scheduler = CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler


class ReadCounter:
    """An array-like over a numpy array that records every read (thread-safe).

    ``reads`` holds one tuple of ``(start, stop)`` per axis for each ``__getitem__``; use it as
    the source of ``dask.array.from_array`` (see :func:`counted_array`).

    Examples
    --------
    >>> rc = ReadCounter(np.arange(10.0))
    >>> rc[2:5]
    array([2., 3., 4.])
    >>> rc.reads
    [((2, 5),)]
    """

    def __init__(self, data: np.ndarray) -> None:
        self.data = np.asarray(data)
        self.shape = self.data.shape
        self.dtype = self.data.dtype
        self.ndim = self.data.ndim
        self.reads: list[tuple[tuple[int, int], ...]] = []
        self._lock = threading.Lock()

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        bounds = []
        for k, n in zip(key, self.shape, strict=False):
            if isinstance(k, slice):
                start, stop, _ = k.indices(n)
                bounds.append((start, stop))
            else:
                idx = np.asarray(k).ravel()
                bounds.append((int(idx.min()), int(idx.max()) + 1) if idx.size else (0, 0))
        bounds += [(0, n) for n in self.shape[len(bounds) :]]
        with self._lock:
            self.reads.append(tuple(bounds))
        return self.data[key]

    def reset(self) -> None:
        """Forget the reads so far."""
        with self._lock:
            self.reads.clear()

    def samples_read(self, axis: int) -> np.ndarray:
        """Boolean mask of the indices along ``axis`` that any read touched."""
        touched = np.zeros(self.shape[axis], dtype=bool)
        for bounds in self.reads:
            start, stop = bounds[axis]
            touched[start:stop] = True
        return touched

    def __reduce__(self) -> Any:  # locks do not pickle; a copy starts counting afresh
        return (type(self), (self.data,))


def counted_array(
    data: np.ndarray, chunks: Any, name: str | None = None
) -> tuple[Any, ReadCounter]:
    """A dask array over ``data`` whose chunk reads are recorded, and the recorder.

    Examples
    --------
    >>> x, reads = counted_array(np.arange(100.0), chunks=10)
    >>> float(x[35:45].sum().compute())
    395.0
    >>> sorted(b[0] for b in reads.reads)  # dask narrows each chunk read to the slice used
    [(35, 40), (40, 45)]
    """
    import dask.array as da

    counter = ReadCounter(data)
    arr = da.from_array(
        counter, chunks=chunks, asarray=True, lock=False, name=name or False, inline_array=False
    )
    counter.reset()  # from_array peeks at the data to learn its type
    return arr, counter


class FileServer:
    """A local HTTP server of one folder's files (see :func:`serve_files`).

    Attributes
    ----------
    url : str
        Base URL, ``http://127.0.0.1:PORT``; a file's URL is ``f"{url}/{name}"``.
    """

    def __init__(self, folder: str | Any) -> None:
        import asyncio
        import os

        from aiohttp import web

        self._loop = asyncio.new_event_loop()
        # The loop runs in its own thread from the start: the caller's thread may already run
        # one (a Jupyter kernel does), and a thread cannot run two.
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="xnwb-serve-files", daemon=True
        )
        self._thread.start()
        app = web.Application()
        app.router.add_static("/", os.fspath(folder))
        self._runner = web.AppRunner(app, access_log=None)

        async def start() -> int:
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            return int(self._runner.addresses[0][1])

        port = asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=30)
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        """Stop serving (idempotent)."""
        import asyncio

        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_files(folder: str | Any) -> FileServer:
    """Serve the files of ``folder`` over HTTP on ``127.0.0.1``, in a background thread.

    A stand-in for a web or cloud server in examples and tests: byte-range requests are
    honoured (aiohttp's static files), as on S3, GCS or the DANDI archive, so
    ``xr.open_dataset(url, engine="nwbzarr")`` reads just the ranges it needs. Use it as a
    context manager, or call ``close()`` when done.

    Examples
    --------
    >>> import os, tempfile, urllib.request
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "hello.txt"), "w") as f:
    ...     _ = f.write("hello, range")
    >>> with serve_files(folder) as server:
    ...     request = urllib.request.Request(f"{server.url}/hello.txt",
    ...                                      headers={"Range": "bytes=7-11"})
    ...     urllib.request.urlopen(request).read()
    b'range'
    """
    return FileServer(folder)
