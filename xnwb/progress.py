"""Compute dask collections with a progress bar, on a local scheduler or on ``distributed``.

dask's :class:`dask.diagnostics.ProgressBar` is a local-scheduler callback: under a
``distributed.Client`` it sees nothing, so a cluster pass used to run silently. Here the
collections go to the client as futures and :func:`distributed.progress` draws the bar (a
text bar in a terminal, a widget in a notebook); on the local schedulers dask's own bar is
used. Both print ``[####…] | 100% Completed | 1.2s`` to standard output.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["active_client", "compute"]


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


def compute(*collections: Any, progress: bool = True, minimum: float = 1.0) -> tuple[Any, ...]:
    """``dask.compute(*collections)``, showing a progress bar while it runs.

    Parameters
    ----------
    *collections
        dask arrays, delayed objects, xarray objects … as for :func:`dask.compute`.
    progress : bool
        Draw the bar. Locally it appears once the work has lasted ``minimum`` seconds; on
        ``distributed`` (:func:`active_client`) it is drawn by :func:`distributed.progress`.
    minimum : float
        Seconds before dask's local bar appears (short steps stay quiet).

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

    with ProgressBar(minimum=minimum, dt=0.25, out=sys.stdout):
        return dask.compute(*collections)
