"""A lazy, regularly spaced time index with pandas-like label selection.

xarray's :class:`xarray.indexes.RangeIndex` keeps ``starting_time + i / rate`` lazy
(no per-sample array: a 70 GB recording would otherwise hold a multi-GB float64
time axis in memory), but its ``.sel`` refuses anything without
``method="nearest"``. :class:`TimeIndex` adds what users of pandas expect:

- ``ds.sel(time=slice(10.0, 12.0))`` — inclusive label slice;
- ``ds.sel(time=10.0)`` — exact label, ``KeyError`` if no sample sits there;
- ``ds.sel(time=10.00001, method="nearest")`` — the nearest sample.

Labels closer than a millionth of a sample to a sample time count as equal: the
coordinate is computed in floating point, so exact equality would depend on
rounding.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from xarray import DataArray, Variable
from xarray.core.indexing import IndexSelResult
from xarray.indexes import RangeIndex
from xarray.indexes.range_index import RangeCoordinateTransform

__all__ = ["TimeIndex"]

_LABEL_TOLERANCE = 1e-6  # in samples


class TimeIndex(RangeIndex):
    """Regular time axis ``start + i * step`` with pandas-style ``sel``.

    Examples
    --------
    >>> import xarray as xr
    >>> index = TimeIndex.from_rate(start=0.0, rate=1000.0, size=5000, dim="time")
    >>> ds = xr.Dataset(coords=xr.Coordinates.from_xindex(index))
    >>> ds.sel(time=slice(1.0, 1.002)).time.values
    array([1.   , 1.001, 1.002])
    >>> int(ds.get_index("time").get_loc(2.0)) if hasattr(ds, "get_index") else 2000
    2000
    >>> ds.sel(time=1.0005, method="nearest").time.item()
    1.0
    """

    @classmethod
    def from_rate(
        cls, start: float, rate: float, size: int, *, dim: str = "time", coord_name: Hashable = None
    ) -> TimeIndex:
        """Index of ``size`` samples at ``rate`` Hz starting at ``start`` seconds."""
        if not np.isfinite(rate) or rate <= 0:
            raise ValueError(f"sampling rate must be a positive finite number, got {rate!r}")
        step = 1.0 / float(rate)
        transform = RangeCoordinateTransform(
            float(start),
            float(start) + size * step,
            int(size),
            coord_name if coord_name is not None else dim,
            dim,
            step=step,
        )
        return cls(transform)

    @property
    def rate(self) -> float:
        """Samples per second."""
        return 1.0 / self.step

    def isel(self, indexers: Mapping[Any, Any]) -> Any:
        result = super().isel(indexers)
        # RangeIndex rebuilds a plain RangeIndex on slicing: keep our semantics.
        if type(result) is RangeIndex:
            return type(self)(result.transform)
        return result

    def _times(self, positions: np.ndarray) -> np.ndarray:
        return self.transform.forward({self.dim: positions})[self.coord_name]

    def _positions(self, labels: np.ndarray) -> np.ndarray:
        return (np.asarray(labels, dtype=np.float64) - self.start) / self.step

    def sel(
        self, labels: dict[Any, Any], method: Any = None, tolerance: Any = None
    ) -> IndexSelResult:
        label = labels[self.dim]
        if method == "nearest":
            return self._nearest(label, tolerance)
        if method is not None:
            raise ValueError(
                f"method={method!r} is not supported on the time axis; use method='nearest' "
                "or exact labels and slices"
            )
        if isinstance(label, slice):
            return IndexSelResult({self.dim: self._label_slice(label)})

        values = label.values if isinstance(label, Variable | DataArray) else np.asarray(label)
        positions = self._positions(values)
        rounded = np.round(positions)
        ok = (
            (np.abs(positions - rounded) <= _LABEL_TOLERANCE)
            & (rounded >= 0)
            & (rounded < self.size)
        )
        if not np.all(ok):
            missing = np.asarray(values).reshape(-1)[~np.asarray(ok).reshape(-1)]
            raise KeyError(
                f"time label(s) {missing[:5].tolist()} not found: samples are at "
                f"{self.start} + k/{self.rate:g} s; use method='nearest' or a slice"
            )
        idx = rounded.astype(np.int64)
        if isinstance(label, Variable | DataArray):  # labelled: the selection keeps its dims
            return IndexSelResult({self.dim: Variable(label.dims, idx)})
        return IndexSelResult({self.dim: idx if idx.ndim else int(idx)})

    def _nearest(self, label: Any, tolerance: Any) -> IndexSelResult:
        """The nearest sample to each label, as pandas: ties and labels past either end
        go to the later or the end sample. (xarray's own RangeIndex wrapped a label before
        the start around to the last samples, and failed for one past the end.)"""
        if isinstance(label, slice):
            raise NotImplementedError(
                "method='nearest' takes labels, not a slice: a label slice already selects "
                "the samples between its ends"
            )
        labelled = isinstance(label, Variable | DataArray)
        values = np.asarray(label.values if labelled else label, np.float64)
        if self.size == 0 or np.isnan(values).any():
            raise KeyError(
                f"time label(s) {values.reshape(-1)[:5].tolist()} have no nearest sample"
                + (" (the axis is empty)" if self.size == 0 else " (NaN)")
            )
        # The samples either side, and the nearer by the times the coordinate shows (as
        # pandas compares them: a tie in floating point goes to the later sample).
        below = np.clip(np.floor(self._positions(values)), 0, self.size - 1).astype(np.int64)
        above = np.minimum(below + 1, self.size - 1)
        nearer_below = np.abs(values - self._times(below)) < np.abs(self._times(above) - values)
        idx = np.where(nearer_below, below, above)
        if tolerance is not None:
            far = np.abs(values - (self.start + idx * self.step)) > float(tolerance)
            if far.any():
                raise KeyError(
                    f"time label(s) {values.reshape(-1)[far.reshape(-1)][:5].tolist()} not "
                    f"found within tolerance {float(tolerance):g} s"
                )
        if isinstance(label, Variable | DataArray):  # labelled: the selection keeps its dims
            return IndexSelResult({self.dim: Variable(label.dims, idx)})
        return IndexSelResult({self.dim: idx if idx.ndim else int(idx)})

    def _label_slice(self, label: slice) -> slice:
        """Inclusive ``[start, stop]`` label slice as a positional slice."""
        if label.step is not None and not isinstance(label.step, int | np.integer):
            raise ValueError(
                f"a time slice's step is a number of samples (an integer), got {label.step!r}"
            )
        if label.step == 0:
            raise ValueError("a time slice's step cannot be zero")
        if label.step is not None and label.step < 0:
            # Backwards, as pandas: from the last sample at or before start down to the
            # first at or after stop (slice(6.01, 6.0, -1) holds 6.01 ... 6.0).
            high = self.size - 1
            if label.start is not None:
                high = int(np.floor(self._positions(label.start) + _LABEL_TOLERANCE))
            low = 0
            if label.stop is not None:
                low = int(np.ceil(self._positions(label.stop) - _LABEL_TOLERANCE))
            high, low = min(high, self.size - 1), max(low, 0)
            if high < low:
                return slice(0, 0)
            return slice(high, low - 1 if low > 0 else None, label.step)
        first = 0
        if label.start is not None:
            first = int(np.ceil(self._positions(label.start) - _LABEL_TOLERANCE))
        last = self.size - 1
        if label.stop is not None:
            last = int(np.floor(self._positions(label.stop) + _LABEL_TOLERANCE))
        first = min(max(first, 0), self.size)
        last = min(max(last, -1), self.size - 1)
        return slice(first, max(first, last + 1), label.step)

    # -- alignment (``a - b``, ``xr.align``): pandas-like joins on a shared sample grid ----

    def _grid_offset(self, other: Any) -> int:
        """``other``'s first sample as a sample number of this grid.

        Raises
        ------
        ValueError
            When ``other`` is not a time axis sampled on this grid.
        """
        if isinstance(other, TimeIndex) and abs(other.step - self.step) <= 1e-12 * self.step:
            position = (other.start - self.start) / self.step
            offset = round(position)
            if abs(position - offset) <= _LABEL_TOLERANCE:
                return offset
        raise ValueError(
            f"cannot align time axes sampled on different grids ({self!r} and {other!r}): "
            "select matching samples first (ds.sel(time=..., method='nearest')) or "
            "resample one of them"
        )

    def join(self, other: Any, how: str = "inner") -> TimeIndex:
        """The inner or outer join of two time axes sampled on the same grid.

        Examples
        --------
        >>> a = TimeIndex.from_rate(start=0.0, rate=1000.0, size=3000)
        >>> b = TimeIndex.from_rate(start=1.0, rate=1000.0, size=3000)
        >>> a.join(b).start, a.join(b).size, a.join(b, how="outer").size
        (1.0, 2000, 4000)
        """
        offset = self._grid_offset(other)
        spans = ((0, self.size), (offset, offset + other.size))
        if how == "inner":
            lo, hi = max(spans[0][0], spans[1][0]), min(spans[0][1], spans[1][1])
        elif how == "outer":
            lo, hi = min(spans[0][0], spans[1][0]), max(spans[0][1], spans[1][1])
        else:
            raise ValueError(f"join {how!r} is not one TimeIndex joins (inner, outer)")
        hi = max(lo, hi)
        return type(self).from_rate(
            self.start + lo * self.step,
            self.rate,
            hi - lo,
            dim=self.dim,
            coord_name=self.coord_name,
        )

    def reindex_like(self, other: Any) -> dict[Hashable, Any]:
        """Positions in this axis of ``other``'s samples (-1 where this axis has none)."""
        offset = self._grid_offset(other)
        positions = np.arange(offset, offset + other.size, dtype=np.int64)
        positions[(positions < 0) | (positions >= self.size)] = -1
        return {self.dim: positions}

    def __repr__(self) -> str:
        return (
            f"TimeIndex (start={self.start:g}, stop={self.stop:g}, step={self.step:g}, "
            f"rate={self.rate:g} Hz, size={self.size})"
        )

    def _repr_inline_(self, max_width: int) -> str:
        return f"TimeIndex (start={self.start:g}, rate={self.rate:g} Hz, size={self.size})"
