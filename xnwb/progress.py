"""Compute dask collections with a progress bar, on a local scheduler or on ``distributed``.

dask's :class:`dask.diagnostics.ProgressBar` is a local-scheduler callback: under a
``distributed.Client`` it sees nothing, so a cluster pass used to run silently. Here the
collections go to the client as futures and :func:`distributed.progress` draws the bar (a
text bar in a terminal, a widget in a notebook); on the local schedulers dask's own bar is
used. Both print ``[####…] | 100% Completed | 1.2s`` to standard output.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["MINIMUM_SECONDS", "active_client", "compute", "count_bar"]

#: Seconds a step must last before its bar appears (short steps stay quiet).
MINIMUM_SECONDS = 1.0
#: dask's bar, drawn by tqdm: ``[#####   ] |  60% Completed | 1.2s``.
_BAR_FORMAT = "[{bar:40}] | {percentage:3.0f}% Completed | {elapsed_s:.1f}s"


def active_client() -> Any | None:
    """The ``distributed.Client`` dask would run on now, or ``None`` (local schedulers).

    A client exists but is not used when ``dask.config.set(scheduler=...)`` chose another
    scheduler; then this returns ``None`` too.

    Examples
    --------
    >>> active_client() is None  # no client started here
    True
    """
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        client = default_client()
    except ValueError:  # no client
        return None
    import dask.base

    scheduler = dask.base.get_scheduler()
    return client if getattr(scheduler, "__self__", None) is client else None


def compute(
    *collections: Any, progress: bool = True, minimum: float | None = None
) -> tuple[Any, ...]:
    """``dask.compute(*collections)``, showing a progress bar while it runs.

    Parameters
    ----------
    *collections
        dask arrays, delayed objects, xarray objects … as for :func:`dask.compute`.
    progress : bool
        Draw the bar. Locally it appears once the work has lasted ``minimum`` seconds; on
        ``distributed`` (:func:`active_client`) it is drawn by :func:`distributed.progress`.
    minimum : float, optional
        Seconds before dask's local bar appears (default :data:`MINIMUM_SECONDS`).

    Returns
    -------
    tuple
        The computed results, one per collection.

    Examples
    --------
    >>> import dask.array as da
    >>> (total,) = compute(da.ones(10, chunks=5).sum(), progress=False)
    >>> int(total)
    10
    """
    import dask

    client = active_client()
    if client is not None:
        futures = client.compute(list(collections))
        if progress:
            from distributed import progress as draw

            draw(futures)  # a terminal: blocks until done; a notebook: a widget
        return tuple(client.gather(futures))
    if not progress:
        return dask.compute(*collections)
    from dask.diagnostics import ProgressBar

    wait = MINIMUM_SECONDS if minimum is None else minimum
    with ProgressBar(minimum=wait, dt=0.25, out=sys.stdout):
        return dask.compute(*collections)


@contextlib.contextmanager
def count_bar(show: bool = True) -> Iterator[Callable[[int, int], None] | None]:
    """A bar for work counted as ``(done, total)``, drawn like dask's on standard output.

    Yields the ``update(done, total)`` callback to hand to the work (``None`` when
    ``show`` is false, so the work skips its counting). The bar appears once the work has
    lasted :data:`MINIMUM_SECONDS`; it is drawn by :mod:`tqdm` (at most ten times a second).

    Examples
    --------
    >>> with count_bar() as update:
    ...     for done in range(0, 101, 25):
    ...         update(done, 100)  # quick: no bar is drawn
    """
    if not show:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=0, file=sys.stdout, ascii=" #", bar_format=_BAR_FORMAT,
               delay=MINIMUM_SECONDS, mininterval=0.1)

    def update(done: int, total: int) -> None:
        if total != bar.total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()
