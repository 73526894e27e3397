"""One-pass, mergeable statistics for z-scoring long recordings.

Each chunk is summarised by ``(count, mean, M2)`` in float64, where ``M2`` is the sum of
squared deviations from the chunk's mean; summaries merge exactly and stably (Chan, Golub &
LeVeque 1979), so the statistics of a recording far larger than memory come from a single
pass over its chunks and a tiny reduction. ``std`` uses ``ddof=0``, as numpy and
``mne.baseline.rescale(..., mode="zscore")`` do.

Complex input (wavelet coefficients) is summarised on its power ``|x|²``; real input as is.

Degenerate statistics, when the mean and std become z-scores (:func:`degenerate`):

- **zero variance**: a channel whose ``std`` is 0, or at most ``ZERO_VARIANCE_RTOL`` (1e-10)
  of ``|mean|`` (a constant 0.1, 1/3 or int16 × 0.195e-6 channel summarised in floating
  point keeps rounding noise of ~1e-17 of its mean), has no z-scores: they come out NaN,
  not ``±(noise / noise)`` or ``inf``;
- **NaN samples**: a NaN in the samples summarised makes its channel's mean and std NaN, so
  all of that channel's z-scores are NaN (no NaN-skipping statistics: a gap in the data
  stays visible). With statistics from elsewhere, a NaN sample gives a NaN z-score at that
  sample only.

:mod:`xnwb.accessors` warns naming the channels either way.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Moments",
    "block_moments",
    "combine",
    "degenerate",
    "merge",
    "moments",
    "power",
    "quantity",
    "row_moments",
    "values",
    "zscore",
]

#: A std at most this fraction of ``|mean|`` is rounding noise of a constant channel.
ZERO_VARIANCE_RTOL = 1e-10


class Moments(NamedTuple):
    """Count, mean and sum of squared deviations (``M2``) along a reduced axis.

    Examples
    --------
    >>> m = block_moments(np.array([1.0, 2.0, 3.0, 4.0]), axis=0)
    >>> int(m.count), float(m.mean), float(m.m2), float(m.std)
    (4, 2.5, 5.0, 1.118033988749895)
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @property
    def var(self) -> np.ndarray:
        """Variance with ``ddof=0``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.m2 / self.count

    @property
    def std(self) -> np.ndarray:
        """Standard deviation with ``ddof=0``."""
        return np.sqrt(self.var)


def power(x: Any) -> Any:
    """``|x|²`` of a numpy or dask array, computed as ``re² + im²`` (lazy on dask).

    Examples
    --------
    >>> power(np.array([3 + 4j, 1j]))
    array([25.,  1.])
    """
    return x.real**2 + x.imag**2


def quantity(x: Any) -> str:
    """What the statistics of ``x`` describe: ``"power"`` for complex data, else ``"value"``.

    Examples
    --------
    >>> quantity(np.zeros(2, complex)), quantity(np.zeros(2))
    ('power', 'value')
    """
    return "power" if np.dtype(x.dtype).kind == "c" else "value"


def values(x: Any) -> Any:
    """The quantity that is z-scored: power of complex data, real data unchanged.

    Examples
    --------
    >>> values(np.array([2j])), values(np.array([2.0]))
    (array([4.]), array([2.]))
    """
    return power(x) if quantity(x) == "power" else x


def block_moments(x: np.ndarray, axis: int = -1, *, keepdims: bool = False) -> Moments:
    """Moments of an in-memory block along ``axis``, in float64.

    Rows are summarised a few at a time (mean, then squared deviations from it), so the
    block is read from memory once and temporaries stay in cache.

    Examples
    --------
    >>> block_moments(np.array([[1.0, 3.0], [2.0, 2.0]]), axis=1).m2
    array([2., 0.])
    """
    x = np.moveaxis(np.asarray(x), axis, -1)
    lead, n = x.shape[:-1], x.shape[-1]
    rows = x.reshape(int(np.prod(lead, dtype=np.int64)), n)
    count = np.full(rows.shape[0], n, dtype=np.int64)
    mean = np.zeros(rows.shape[0])
    m2 = np.zeros(rows.shape[0])
    step = max(1, _CACHE_BYTES // (16 * max(n, 1)))  # rows whose temporaries stay in cache
    for r0 in range(0, rows.shape[0] if n else 0, step):
        v = np.asarray(values(rows[r0 : r0 + step]), dtype=np.float64)
        row_moments(v, mean[r0 : r0 + step], m2[r0 : r0 + step], _deviation_buffer(v.shape))
    out = [a.reshape(lead) for a in (count, mean, m2)]
    if keepdims:
        out = [np.expand_dims(a, axis % (len(lead) + 1)) for a in out]
    return Moments(*out)


def row_moments(
    rows: np.ndarray, mean: np.ndarray, m2: np.ndarray, deviations: np.ndarray | None = None
) -> None:
    """Mean and sum of squared deviations of each row of a 2-D float64 array, into ``mean``, ``m2``.

    ``deviations`` (the rows' shape) receives the deviations from the mean; ``rows`` itself
    when omitted (its values are then lost). :func:`block_moments` and the transform's
    statistics pass both summarise rows this way, so they agree to rounding (numpy sums the
    squares of a lone row longer than 8,192 samples in another order: ~1e-16 apart).

    Examples
    --------
    >>> mean, m2 = np.empty(1), np.empty(1)
    >>> row_moments(np.array([[1.0, 2.0, 6.0]]), mean, m2)
    >>> float(mean[0]), float(m2[0])
    (3.0, 14.0)
    """
    mu = rows.mean(axis=1)
    # inf - inf in a row holding infinities: its moments are NaN, which the statistics'
    # degenerate-channel warning reports by name (numpy's own warning would say nothing more)
    with np.errstate(invalid="ignore"):
        dev = np.subtract(rows, mu[:, None], out=rows if deviations is None else deviations)
    mean[...] = mu
    m2[...] = np.einsum("ij,ij->i", dev, dev)


_CACHE_BYTES = 2 * 2**20
_LOCAL = threading.local()


def _deviation_buffer(shape: tuple[int, ...]) -> np.ndarray:
    """This thread's buffer for deviations from the mean, reused call after call.

    A fresh temporary of a few MiB beside other fresh arrays is mapped anew each time, a page
    fault per 4 KiB (in this virtual machine it made the deviations 10 % of a transform's
    statistics pass); a thread summarises one piece at a time, so one buffer serves.
    """
    size = int(np.prod(shape))
    if size * 8 > 2 * _CACHE_BYTES:  # one very long row: not kept beyond this call
        return np.empty(shape)
    buf = getattr(_LOCAL, "deviations", None)
    if buf is None or buf.size < size:
        buf = _LOCAL.deviations = np.empty(size)
    return buf[:size].reshape(shape)


def merge(a: Moments, b: Moments) -> Moments:
    """Merge the moments of two disjoint parts (Chan et al.'s pairwise update).

    Examples
    --------
    >>> x = np.arange(10.0) ** 2
    >>> m = merge(block_moments(x[:3]), block_moments(x[3:]))
    >>> bool(np.isclose(m.mean, x.mean()) and np.isclose(m.std, x.std()))
    True
    """
    count = a.count + b.count
    with np.errstate(invalid="ignore", divide="ignore"):
        wb = np.where(count > 0, b.count / np.maximum(count, 1), 0.0)
    delta = b.mean - a.mean
    mean = a.mean + delta * wb
    m2 = a.m2 + b.m2 + delta**2 * a.count * wb
    return Moments(count, mean, m2)


def combine(parts: Moments, axis: int = 0) -> Moments:
    """Merge many partial moments stacked along ``axis`` in one vectorised step.

    ``mean = Σ nᵢ meanᵢ / n`` and ``M2 = Σ M2ᵢ + Σ nᵢ (meanᵢ - mean)²``: Chan et al.'s merge
    applied to all parts at once (the same algebra, no running sums of squares).

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((5, 40))
    >>> parts = Moments(*(np.stack(a) for a in zip(*(block_moments(c, 1) for c in
    ...                   np.array_split(x, 4, axis=1)))))
    >>> m = combine(parts, axis=0)
    >>> bool(np.allclose(m.std, x.std(axis=1)) and np.allclose(m.mean, x.mean(axis=1)))
    True
    """
    counts = np.asarray(parts.count, dtype=np.int64)
    weights = counts.astype(np.float64)
    total = counts.sum(axis=axis)
    safe = np.where(counts > 0, 1.0, 0.0)
    means = np.where(counts > 0, parts.mean, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (weights * means).sum(axis=axis) / total
    dev = means - np.expand_dims(mean, axis)
    m2 = (np.where(counts > 0, parts.m2, 0.0) + safe * weights * dev * dev).sum(axis=axis)
    return Moments(total, mean, m2)


def moments(x: Any, axis: int = -1, *, progress: bool = True) -> Moments:
    """Count, mean and M2 of ``values(x)`` along ``axis``, from one pass over the chunks.

    Parameters
    ----------
    x : numpy.ndarray or dask.array.Array
        Complex data are summarised on their power, real data as they are.
    axis : int
        The axis reduced (time).
    progress : bool
        Show a progress bar for passes longer than a second (also on ``distributed``).

    Returns
    -------
    Moments
        numpy arrays shaped like ``x`` without ``axis``. **Computes**: one ``dask.compute``
        of per-chunk summaries; no chunk of ``x`` is kept in memory beyond its task. An
        untouched lazy transform from :mod:`xnwb.tfr`, reduced along time, is summarised
        block by block as it is transformed: its values are never handed from task to task.

    Examples
    --------
    >>> import dask.array as da
    >>> x = da.from_array(np.arange(12.0).reshape(2, 6), chunks=(1, 4))
    >>> m = moments(x, axis=1, progress=False)
    >>> m.mean, m.std.round(6)
    (array([2.5, 8.5]), array([1.707825, 1.707825]))
    """
    axis = axis % x.ndim
    if not (hasattr(x, "dask") and hasattr(x, "chunks")):
        return block_moments(np.asarray(x), axis)
    # A lazy transform from xnwb.tfr summarises its blocks as it computes them (the same
    # per-block moments, without writing the transform out); anything else is summarised
    # chunk by chunk.
    hook = getattr(x, "_xnwb_block_moments", None)
    summaries = hook(x, axis) if callable(hook) else None
    if summaries is not None:  # (..., blocks x fields) along time: fields first, like below
        stacked = _compute(summaries, progress)
        n_fields = len(Moments._fields)  # (no -1: it is ambiguous for zero signals)
        fields = stacked.reshape(*stacked.shape[:-1], stacked.shape[-1] // n_fields, n_fields)
        return _merge(np.moveaxis(fields, -1, 0), axis=-1)
    parts = x.map_blocks(
        _chunk_moments,
        axis=axis,
        new_axis=0,
        chunks=((3,), *(c if i != axis else (1,) * len(c) for i, c in enumerate(x.chunks))),
        dtype=np.float64,
        meta=np.empty((0,) * (x.ndim + 1)),
        name=f"moments-{_token(x, axis)}",
    )
    return _merge(_compute(parts, progress), axis=axis)


def _merge(stacked: np.ndarray, axis: int) -> Moments:
    """Merge per-chunk summaries stacked as ``(count, mean, M2)`` along axis 0."""
    return combine(Moments(stacked[0].astype(np.int64), stacked[1], stacked[2]), axis=axis)


def zscore(x: Any, mean: Any, std: Any, axis: int = -1) -> Any:
    """``(values(x) - mean) / std`` with ``mean``/``std`` shaped like ``x`` without ``axis``.

    Lazy on dask input: nothing is computed.

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0]])
    >>> m = moments(x, axis=1)
    >>> zscore(x, m.mean, m.std, axis=1).round(4)
    array([[-1.2247,  0.    ,  1.2247]])
    """
    axis = axis % x.ndim
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    std = np.where(degenerate(mean, std)[0], np.nan, std)
    mean = np.expand_dims(mean, axis)
    std = np.expand_dims(std, axis)
    return (values(x) - mean) / std


def degenerate(mean: Any, std: Any) -> tuple[np.ndarray, np.ndarray]:
    """Masks of statistics that give no z-scores: ``(zero_variance, not_a_number)``.

    ``zero_variance``: ``std == 0`` or ``std <= ZERO_VARIANCE_RTOL * |mean|`` (a constant
    channel's rounding noise); ``not_a_number``: a NaN mean or std (NaN samples).

    Examples
    --------
    >>> x = np.full((3, 1000), 0.1); x[1] = 0.0; x[2] = np.arange(1000)
    >>> m = block_moments(x, axis=1)
    >>> bool(m.std[0] > 0), degenerate(m.mean, m.std)[0]
    (True, array([ True,  True, False]))
    >>> zscore(x, m.mean, m.std, axis=1)[:, :2]
    array([[        nan,         nan],
           [        nan,         nan],
           [-1.73031962, -1.72685552]])
    """
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    missing = np.isnan(mean) | np.isnan(std)
    with np.errstate(invalid="ignore"):
        zero = ~missing & ~(std > ZERO_VARIANCE_RTOL * np.abs(mean))
    return zero, missing


def _chunk_moments(block: np.ndarray, axis: int) -> np.ndarray:
    m = block_moments(block, axis, keepdims=True)
    return np.stack([m.count.astype(np.float64), m.mean, m.m2])


def _token(x: Any, axis: int) -> str:
    from dask.base import tokenize

    return tokenize(x.name, axis)


def _compute(arr: Any, progress: bool) -> np.ndarray:
    # xnwb.progress draws dask's bar locally and distributed's bar on a cluster.
    from xnwb.progress import compute

    (result,) = compute(arr, progress=progress)
    return np.asarray(result)
