"""The xarray layer: the ``ephys`` accessor (also ``nwb``) and the callable ``zscore`` accessor.

Thin by design: each method finds the time axis and sampling rate, calls the array functions
of :mod:`xnwb.tfr` and :mod:`xnwb.stats`, and wraps the result in a new xarray object (the
input is never modified). On a Dataset the methods act on its time series variable ``data``
and return a Dataset holding the result as ``data``; on a DataArray they return a DataArray.

Everything stays lazy: unchunked input is chunked along time first (nothing is read), and
only :meth:`EphysAccessor.stats` — and :meth:`EphysAccessor.zscore` when no ``stats`` are
given — computes, in exactly one pass.

Examples
--------
>>> import numpy as np
>>> import xarray as xr
>>> import xnwb  # registers the accessors
>>> rate = 250.0
>>> t = np.arange(2500) / rate
>>> x = np.sin(2 * np.pi * 10 * t)[:, None] * [1.0, 2.0]
>>> ds = xr.Dataset({"data": (("time", "channel"), x)}, coords={"time": t, "channel": [3, 7]})
>>> z = ds.ephys.morlet([5.0, 10.0, 20.0], n_cycles=5, decim=5).zscore(progress=False)
>>> z.data.dims, z.data.shape
(('channel', 'frequency', 'time'), (2, 3, 500))
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import Any

import numpy as np
import xarray as xr

from xnwb import stats as _stats
from xnwb import tfr as _tfr
from xnwb.chunking import channel_span, dask_chunks
from xnwb.exceptions import (
    DegenerateStatisticsWarning,
    StatisticsMismatchError,
    TFRParameterError,
    TimeAxisError,
)
from xnwb.wavelets import _check_decim

__all__ = ["EphysAccessor", "ZscoreAccessor", "sampling_rate", "time_window"]

_REGULAR_RTOL = 1e-6  # relative jitter of the sample spacing still called regular
_MIN_READ_BYTES = 2**20  # smaller read pieces cost more in scheduling than they save


def sampling_rate(obj: xr.DataArray | xr.Dataset, dim: Hashable = "time") -> float:
    """Sampling rate in Hz of ``obj`` along ``dim``.

    From the coordinate ``dim`` when it is regularly spaced (a lazy range index is read
    without building its values), else from the ``rate`` attribute when there is no
    coordinate. Datetime coordinates count in seconds.

    Raises
    ------
    TimeAxisError
        No dimension ``dim``, irregular samples, or neither a coordinate nor ``rate``.

    Examples
    --------
    >>> da = xr.DataArray(np.zeros(5), dims="time", coords={"time": np.arange(5) / 500})
    >>> sampling_rate(da)
    500.0
    >>> sampling_rate(xr.DataArray(np.zeros(5), dims="time", attrs={"rate": 30000.0}))
    30000.0
    """
    if dim not in obj.dims:
        raise TimeAxisError(f"no dimension {dim!r} to transform along; dims are {tuple(obj.dims)}")
    attr = _attr_rate(obj)
    if dim not in obj.coords:
        if attr is None:
            defect = obj.attrs.get("time_axis_defect")
            why = f" (the file's time axis is defective: {defect})" if defect else ""
            raise TimeAxisError(
                f"cannot tell the sampling rate: no {dim!r} coordinate and no 'rate' "
                f"attribute{why}; add one, e.g. obj.assign_attrs(rate=1000.0)"
            )
        return attr
    index = obj.xindexes.get(dim)
    if isinstance(index, xr.indexes.RangeIndex):
        step = float(index.step)
    else:
        step = _regular_step(_seconds(obj[dim].values), dim)
    if not np.isfinite(step) or step <= 0:
        raise TimeAxisError(f"the {dim!r} coordinate must increase; its step is {step!r}")
    rate = 1.0 / step
    if attr is not None and np.isclose(attr, rate, rtol=_REGULAR_RTOL, atol=0):
        return attr  # the recorded rate, not its round trip through 1 / step
    return rate


def time_window(
    obj: xr.DataArray | xr.Dataset,
    window: tuple[float | None, float | None],
    dim: Hashable = "time",
) -> slice:
    """Positions of the samples with ``t0 <= time <= t1``, as MNE selects them.

    ``None`` (or an infinite end) leaves that end open; NaN is refused, and so is a time
    coordinate that steps back (a search in it would count the wrong samples).

    A lazy range index is evaluated only near the two ends.

    Examples
    --------
    >>> da = xr.DataArray(np.zeros(10), dims="time", coords={"time": np.arange(10) * 0.1})
    >>> time_window(da, (0.2, 0.5)), time_window(da, (None, 0.25))
    (slice(2, 6, None), slice(0, 3, None))
    """
    try:
        t0, t1 = window
    except (TypeError, ValueError):
        raise TimeAxisError(f"a time window is (start, stop) in seconds, got {window!r}") from None
    t0, t1 = _window_end(t0, window, open_at=-np.inf), _window_end(t1, window, open_at=np.inf)
    if (t0 is not None and np.isinf(t0)) or (t1 is not None and np.isinf(t1)):
        raise TimeAxisError(f"no sample of {dim!r} lies in the window {window!r}")
    if dim not in obj.coords:
        raise TimeAxisError(f"a time window needs a {dim!r} coordinate; found {list(obj.coords)}")
    n = obj.sizes[dim]
    index = obj.xindexes.get(dim)
    coord = obj[dim]
    if isinstance(index, xr.indexes.RangeIndex):
        start, step = float(index.start), float(index.step)

        def first(label: float, inclusive_right: bool) -> int:
            guess = int(np.floor((label - start) / step))
            lo, hi = max(guess - 2, 0), min(guess + 4, n)
            near = coord.isel({dim: slice(lo, hi)}).values if hi > lo else np.empty(0)
            side = "right" if inclusive_right else "left"
            return lo + int(np.searchsorted(near, label, side=side)) if hi > lo else min(lo, n)

        i0 = 0 if t0 is None else first(float(t0), False)
        i1 = n if t1 is None else first(float(t1), True)
    else:
        times = _seconds(coord.values)
        back = np.flatnonzero(np.diff(times) < 0)
        if back.size:  # a search would silently count the wrong samples
            raise TimeAxisError(
                f"{dim!r} steps back in time after sample {int(back[0])} "
                f"({float(times[back[0]])} s, then {float(times[back[0] + 1])} s): a window "
                "in seconds is ambiguous; select the samples by position (.isel) instead"
            )
        i0 = 0 if t0 is None else int(np.searchsorted(times, t0, side="left"))
        i1 = n if t1 is None else int(np.searchsorted(times, t1, side="right"))
    if i0 >= i1:
        raise TimeAxisError(f"no sample of {dim!r} lies in the window {window!r}")
    return slice(i0, i1)


def _window_end(end: Any, window: Any, open_at: float) -> float | None:
    """One end of a time window as seconds, ``None`` for an open end (``open_at``, ±inf)."""
    if end is None:
        return None
    try:
        value = float(end)
    except (TypeError, ValueError):
        raise TimeAxisError(
            f"a time window's ends are seconds or None, got {end!r} in {window!r}"
        ) from None
    if np.isnan(value):
        raise TimeAxisError(f"a time window's ends are seconds or None, got NaN in {window!r}")
    return None if value == open_at else value


class EphysAccessor:
    """Time-frequency analysis and z-scoring, as ``obj.ephys`` (or ``obj.nwb``).

    Examples
    --------
    >>> da = xr.DataArray(np.random.default_rng(0).standard_normal((1000, 2)),
    ...                   dims=("time", "channel"), attrs={"rate": 200.0})
    >>> da.ephys.rate
    200.0
    """

    def __init__(self, obj: xr.DataArray | xr.Dataset) -> None:
        self._obj = obj

    @property
    def rate(self) -> float:
        """Sampling rate in Hz along ``time`` (see :func:`sampling_rate`)."""
        return sampling_rate(self._obj, "time")

    def morlet(
        self,
        freqs: Any,
        n_cycles: float | Any = 7.0,
        *,
        zero_mean: bool = True,
        output: str = "complex",
        decim: int = 1,
        dim: Hashable = "time",
        chunks: dict[Hashable, int] | None = None,
        dtype: Any = None,
    ) -> xr.DataArray | xr.Dataset:
        """Morlet wavelet transform, identical to ``mne.time_frequency.tfr_array_morlet``.

        Lazy: computes nothing. The transform runs in blocks planned by memory, not by the
        file's storage chunks: a few channels and about sixteen halos (half the
        longest wavelet) of time per block (at full rate, one in-cache FFT where that is
        cheaper), shrunk until one block's peak memory fits dask's
        ``array.chunk-size`` (see :func:`xnwb.blocks.plan_blocks`). Computing a window of
        the result transforms only the blocks of the window's channels and times, and reads
        only their samples plus the halo.

        Parameters
        ----------
        freqs : array_like of float
            Frequencies in Hz, in ``(0, rate / 2)``.
        n_cycles : float or array_like
            Cycles per wavelet, one number or one per frequency.
        zero_mean : bool
            Zero-mean wavelets, MNE's default.
        output : {"complex", "power", "amplitude", "phase"}
        decim : int
            Keep every ``decim``-th sample, as MNE's ``decim`` (computed at the low rate).
        dim : str
            The time dimension.
        chunks : dict, optional
            Block sizes of the transform, ``{dim: samples, "channel": channels}`` (input
            samples, before ``decim``); what is not given is planned by memory.
        dtype : {"complex128", "complex64"}, optional
            Precision: ``"complex128"`` (default) equals MNE to ~1e-15; ``"complex64"`` is
            single precision (about twice as fast, half the memory, within ~1e-6 of the
            largest coefficient of MNE's float64 result; power/amplitude/phase as float32).

        Returns
        -------
        DataArray or Dataset
            Dims: the other dims, ``frequency`` (Hz), then ``dim`` (decimated, with its
            coordinate); attrs: the input's plus the parameters and the new ``rate``.

        Raises
        ------
        TFRParameterError, SignalTooShortError, TimeAxisError
            Before any computation.

        Examples
        --------
        >>> da = xr.DataArray(np.ones((800, 2)), dims=("time", "channel"), attrs={"rate": 100.0})
        >>> tfr = da.ephys.morlet([5.0, 10.0], n_cycles=3.0, output="power", decim=4)
        >>> tfr.dims, tfr.shape, tfr.attrs["rate"], tfr.frequency.values
        (('channel', 'frequency', 'time'), (2, 2, 200), 25.0, array([ 5., 10.]))
        """
        self._series()  # a Dataset without 'data' is the first thing to report
        rate = sampling_rate(self._obj, dim)
        n_times = self._series().sizes[dim]
        decim = _check_decim(decim, n_times)  # before kernels or plans are sized by it
        bank = _tfr.morlet_kernels(rate, freqs, n_cycles, zero_mean=zero_mean, n_times=n_times)
        cycles = np.broadcast_to(np.asarray(n_cycles, dtype=np.float64), (len(bank),))
        params = {"wavelet": "morlet", "n_cycles": cycles.copy(), "zero_mean": int(zero_mean)}
        return self._apply(
            bank,
            freqs,
            rate,
            output=output,
            decim=decim,
            dim=dim,
            params=params,
            chunks=chunks,
            dtype=dtype,
        )

    def cwt(
        self,
        freqs: Any,
        wavelet: Any = "cmor1.5-1.0",
        *,
        output: str = "complex",
        decim: int = 1,
        dim: Hashable = "time",
        precision: int = 12,
        chunks: dict[Hashable, int] | None = None,
        dtype: Any = None,
    ) -> xr.DataArray | xr.Dataset:
        """Continuous wavelet transform with a PyWavelets wavelet (as ``pywt.cwt``, FFT method).

        Same engine, block plan (``chunks=``), precision (``dtype=``), laziness and result
        layout as :meth:`morlet`;
        see :func:`xnwb.tfr.cwt` for the equivalence with PyWavelets.

        Examples
        --------
        >>> da = xr.DataArray(np.ones((800,)), dims="time", attrs={"rate": 100.0})
        >>> da.ephys.cwt([5.0, 10.0], "mexh").dtype
        dtype('float64')
        """
        self._series()  # a Dataset without 'data' is the first thing to report
        rate = sampling_rate(self._obj, dim)
        n_times = self._series().sizes[dim]
        decim = _check_decim(decim, n_times)
        bank = _tfr.pywt_kernels(rate, freqs, wavelet, precision=precision, n_times=n_times)
        params = {"wavelet": str(getattr(wavelet, "name", wavelet))}
        return self._apply(
            bank,
            freqs,
            rate,
            output=output,
            decim=decim,
            dim=dim,
            params=params,
            chunks=chunks,
            dtype=dtype,
        )

    def stats(
        self,
        dim: Hashable = "time",
        *,
        baseline: tuple[float | None, float | None] | None = None,
        progress: bool = True,
    ) -> xr.Dataset:
        """Count, mean and std (``ddof=0``) of the data along ``dim``, from one pass.

        Complex data are summarised on their power ``|x|²``. **Computes**: one pass over the
        data (or the ``baseline`` window), with dask's progress bar when it lasts over a
        second; per-chunk ``(count, mean, M2)`` merge exactly in float64.

        Parameters
        ----------
        dim : str
            Dimension reduced.
        baseline : (t0, t1), optional
            Only samples with ``t0 <= time <= t1`` (seconds; ``None`` is an open end).
        progress : bool
            Show a progress bar.

        Returns
        -------
        Dataset
            ``count``, ``mean``, ``std`` over the remaining dims; small, saveable with
            ``to_netcdf``/``to_zarr`` and reusable as ``zscore(stats=...)``.

        Examples
        --------
        >>> da = xr.DataArray([[1.0, 3.0], [2.0, 6.0]], dims=("time", "channel"),
        ...                   attrs={"rate": 10.0})
        >>> s = da.ephys.stats(progress=False)
        >>> s["mean"].values, s["std"].values, s.attrs["quantity"]
        (array([1.5, 4.5]), array([0.5, 1.5]), 'value')
        """
        da = self._series()
        if dim not in da.dims:
            raise TimeAxisError(f"no dimension {dim!r} to reduce; dims are {tuple(da.dims)}")
        _require_numbers(da)
        window = da if baseline is None else da.isel({dim: time_window(da, baseline, dim)})
        window = _chunked(window, dim)
        m = _stats.moments(window.data, axis=window.get_axis_num(dim), progress=progress)
        dims = tuple(d for d in da.dims if d != dim)
        coords = da.drop_vars([k for k, v in da.coords.items() if dim in v.dims]).coords
        attrs: dict[str, Any] = {"dim": str(dim), "quantity": _stats.quantity(da), "ddof": 0}
        attrs.update(_described(da))
        if baseline is not None:
            attrs["baseline"] = np.array([np.nan if b is None else b for b in baseline], float)
        return xr.Dataset(
            {
                "count": (dims, m.count, {"long_name": "samples summarised"}),
                "mean": (dims, m.mean, {"long_name": f"mean {attrs['quantity']}"}),
                "std": (dims, m.std, {"long_name": f"std of {attrs['quantity']} (ddof=0)"}),
            },
            coords=coords,
            attrs=attrs,
        )

    def zscore(
        self,
        dim: Hashable = "time",
        *,
        baseline: tuple[float | None, float | None] | None = None,
        stats: xr.Dataset | None = None,
        progress: bool = True,
    ) -> xr.DataArray | xr.Dataset:
        """Z-score along ``dim``: ``(x - mean) / std``, on power ``|x|²`` for complex data.

        Equal to ``mne.baseline.rescale(power, times, baseline, mode="zscore")``. **Computes**
        the statistics in one pass (:meth:`stats`) unless ``stats`` is given (then nothing);
        the z-scored result itself stays lazy, so a window of it computes that window only.

        Parameters
        ----------
        dim : str
            Dimension normalised.
        baseline : (t0, t1), optional
            Window of the statistics (seconds, inclusive; ``None`` is an open end); default
            the whole record.
        stats : Dataset, optional
            From :meth:`stats` (possibly saved and reopened): skips the pass.
        progress : bool
            Progress bar for the statistics pass.

        Raises
        ------
        StatisticsMismatchError
            ``stats`` that do not fit the data (dims, sizes, complex vs real).

        Examples
        --------
        >>> da = xr.DataArray([[1.0], [2.0], [3.0]], dims=("time", "channel"),
        ...                   attrs={"rate": 10.0})
        >>> da.zscore(progress=False).values.ravel().round(4)
        array([-1.2247,  0.    ,  1.2247])
        """
        da = self._series()
        _require_numbers(da)
        computed = stats is None
        if stats is None:
            stats = self.stats(dim, baseline=baseline, progress=progress)
        elif baseline is not None:
            raise TFRParameterError("pass either baseline= or stats=, not both")
        _check_stats(stats, da, dim)
        window = da if baseline is None else da.isel({dim: time_window(da, baseline, dim)})
        std_used = _warn_degenerate(stats, window if computed else None, dim)
        da = _chunked(da, dim)
        values = (da.real**2 + da.imag**2) if _stats.quantity(da) == "power" else da
        with xr.set_options(arithmetic_join="exact", keep_attrs=False):
            try:  # index coordinates must match; the others are the data's to keep
                mean = stats["mean"].reset_coords(drop=True)
                z = (values - mean) / std_used
            except ValueError as err:
                raise StatisticsMismatchError(
                    f"the statistics' coordinates do not match the data's: {err}"
                ) from None
        z = z.transpose(*da.dims)
        attrs = {k: v for k, v in da.attrs.items() if k not in ("unit", "units")}
        of = stats.attrs.get("quantity", _stats.quantity(da))
        if of == "value" and da.attrs.get("output") in ("power", "amplitude"):
            of = da.attrs["output"]  # a transform's real output: name what it is
        if da.attrs.get("output") == "complex":
            attrs["output"] = "power"  # the z-scores are of the coefficients' power, and real
        attrs.update(units="1", zscore_of=of)
        if "baseline" in stats.attrs:
            attrs["zscore_baseline"] = stats.attrs["baseline"]
        return self._wrap(z.rename(da.name).assign_attrs(attrs))

    # -- looking ------------------------------------------------------------------------

    def plot_window(
        self,
        start: float,
        duration: float,
        channels: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Plot ``duration`` s from ``start``: stacked traces, or a spectrogram per channel.

        **Loads** only that window (on a lazy transform: the blocks under it plus their
        halo). Keywords go to :func:`xnwb.plot.plot_window` (``ax=``, ``max_channels=``,
        ``share_scale=``, ``vmin``/``vmax``, ``cmap``, …).

        Returns
        -------
        matplotlib.figure.Figure

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> da = xr.DataArray(np.random.default_rng(0).standard_normal((500, 3)),
        ...                   dims=("time", "channel"),
        ...                   coords={"time": np.arange(500) / 100, "channel": [4, 5, 6]},
        ...                   attrs={"units": "volts"})
        >>> fig = da.ephys.plot_window(1.0, 2.0, channels=[4, 6])
        >>> len(fig.axes[0].lines) >= 2
        True
        """
        from xnwb.plot import plot_window

        return plot_window(self._series(), start, duration, channels, **kwargs)

    def browse(self, **kwargs: Any) -> Any:
        """A notebook viewer that loads one window at a time: see :func:`xnwb.browse.browse`.

        Keywords: ``start``, ``duration``, ``channels``, ``view`` (``"raw"`` or
        ``"spectrogram"``), ``tfr`` (a transform or z-score to show) or ``freqs`` (computed
        lazily, with ``n_cycles`` and ``decim``). Needs ``ipywidgets``.
        """
        from xnwb.browse import browse

        return browse(self._series(), **kwargs)

    # -- helpers --------------------------------------------------------------------------

    def _series(self) -> xr.DataArray:
        obj = self._obj
        if isinstance(obj, xr.DataArray):
            return obj
        if "data" not in obj.data_vars:
            raise KeyError(
                f"this Dataset has no variable 'data' to analyse; its variables are "
                f"{list(obj.data_vars)}; use ds[name].ephys instead"
            )
        return obj["data"]

    def _wrap(self, result: xr.DataArray) -> xr.DataArray | xr.Dataset:
        if isinstance(self._obj, xr.DataArray):
            return result
        # The file's attrs stay, but those describing the series follow the result: a
        # transform's rate is the decimated one and its unit squared, a z-score has none.
        attrs = dict(self._obj.attrs)
        for key in _SERIES_ATTRS:
            if key in attrs and key in result.attrs:
                attrs[key] = result.attrs[key]
            elif key == "starting_time" and key in attrs and result.sizes.get("time"):
                # NWB keeps it on the series (the Dataset); the result starts where its time does
                attrs[key] = float(result["time"].values[0])
            elif key in attrs:
                del attrs[key]
        return xr.Dataset({"data": result}, attrs=attrs)

    def _apply(
        self,
        bank: Any,
        freqs: Any,
        rate: float,
        *,
        output: str,
        decim: int,
        dim: Hashable,
        params: dict[str, Any],
        chunks: dict[Hashable, int] | None = None,
        dtype: Any = None,
    ) -> xr.DataArray | xr.Dataset:
        da = self._series()
        if "frequency" in da.dims:
            raise TFRParameterError("the data already have a 'frequency' dimension")
        blocks = _block_chunks(da, dim, chunks)
        plan = _tfr.plan_transform(
            da.shape,
            da.get_axis_num(dim),
            bank,
            output=output,
            decim=decim,
            dtype=da.dtype,
            chunks=blocks,
            precision=dtype,
        )
        # A lazily opened file is read in pieces about one block's input long, so a window
        # reads little more than its blocks need; each piece is still read once per pass.
        # Pieces span the channels dask_chunks gives them: a block wider than that reads
        # several pieces side by side, each about as long as the block (not longer).
        stored = da.encoding.get("chunks")
        piece_rows = plan.rows
        if stored is not None and da.ndim > 1 and len(stored) == da.ndim:
            piece_rows = min(plan.rows, channel_span(da.shape, stored))
        block_input = piece_rows * (plan.time + 2 * plan.halo) * np.dtype(da.dtype).itemsize
        data = _chunked(da, dim, target_bytes=block_input).data
        y = _tfr.transform(
            data,
            bank,
            output=output,
            decim=decim,
            axis=da.get_axis_num(dim),
            chunks=blocks,
            dtype=dtype,
        )
        template = da.isel({dim: slice(None, None, int(decim))})
        dims = (*(d for d in da.dims if d != dim), "frequency", dim)
        freq = np.atleast_1d(np.asarray(freqs, dtype=np.float64))
        attrs = {**da.attrs, **params, "output": output, "decim": int(decim)}
        attrs["rate"] = rate / int(decim)
        unit = values_unit(da)
        if unit is not None:  # stored counts (mask_and_scale=False) are counts, not volts
            attrs["unit" if "unit" in attrs or "units" not in attrs else "units"] = unit
        for key in ("unit", "units"):  # coefficients keep the signal's unit; power squares it
            if key in attrs and output == "power":
                attrs[key] = f"{attrs[key]}**2"
            elif key in attrs and output == "phase":
                attrs[key] = "radians"
        result = xr.DataArray(y, dims=dims, coords=template.coords, name=da.name, attrs=attrs)
        result = result.assign_coords(
            frequency=("frequency", freq, {"units": "Hz", "long_name": "frequency"})
        )
        return self._wrap(result)


class ZscoreAccessor:
    """``obj.zscore(...)``: the same as ``obj.ephys.zscore(...)``, callable directly.

    Examples
    --------
    >>> da = xr.DataArray([[1.0], [3.0]], dims=("time", "channel"), attrs={"rate": 1.0})
    >>> da.zscore(progress=False).values.ravel()
    array([-1.,  1.])
    """

    def __init__(self, obj: xr.DataArray | xr.Dataset) -> None:
        self._obj = obj

    def __call__(
        self,
        dim: Hashable = "time",
        *,
        baseline: tuple[float | None, float | None] | None = None,
        stats: xr.Dataset | None = None,
        progress: bool = True,
    ) -> xr.DataArray | xr.Dataset:
        return EphysAccessor(self._obj).zscore(
            dim, baseline=baseline, stats=stats, progress=progress
        )


for _name in ("ephys", "nwb"):
    xr.register_dataset_accessor(_name)(EphysAccessor)
    xr.register_dataarray_accessor(_name)(EphysAccessor)
xr.register_dataset_accessor("zscore")(ZscoreAccessor)
xr.register_dataarray_accessor("zscore")(ZscoreAccessor)


def _chunked(da: xr.DataArray, dim: Hashable, target_bytes: int | None = None) -> xr.DataArray:
    """``da`` itself when chunked, else a dask array over it (nothing is read).

    A file opened lazily is chunked in whole stored chunks (its ``encoding["chunks"]``),
    grouped to about ``target_bytes`` (default: as ``chunks={}`` would), so a whole pass reads
    each stored chunk once; the transform re-splits them into its own blocks. Data already in
    memory become one chunk: the transform's blocks are views of it.
    """
    if da.chunks is not None:
        return da
    # (xarray has no public "is this loaded?"; .data would load a lazy backend array.)
    if da.variable._in_memory:
        return da.chunk({d: -1 for d in da.dims})
    stored = da.encoding.get("chunks")
    if stored is not None and da.dims[0] == dim and len(stored) == da.ndim:
        target = None if target_bytes is None else max(int(target_bytes), _MIN_READ_BYTES)
        sizes = dask_chunks(da.shape, stored, np.dtype(da.dtype).itemsize, target_bytes=target)
        return da.chunk(dict(zip(da.dims, sizes, strict=True)))
    preferred = da.encoding.get("preferred_chunks") or {}
    if preferred:
        return da.chunk({d: preferred.get(d, -1) for d in da.dims})
    others = int(np.prod([s for d, s in da.sizes.items() if d != dim]))
    itemsize = np.dtype(da.dtype).itemsize
    return da.chunk({dim: _tfr.suggest_time_chunk(da.sizes[dim], others, 1, 0, itemsize=itemsize)})


def _block_chunks(
    da: xr.DataArray, dim: Hashable, chunks: dict[Hashable, int] | None
) -> dict[int, int] | None:
    """``chunks=`` of morlet/cwt by dimension name, as axes of the array transform."""
    if chunks is None:
        return None
    if not isinstance(chunks, dict):
        raise TFRParameterError(
            f"chunks must be a dict such as {{{str(dim)!r}: 60000, 'channel': 4}}, got {chunks!r}"
        )
    unknown = [d for d in chunks if d not in da.dims]
    if unknown:
        raise TFRParameterError(f"chunks names {unknown}, which are not dims of {tuple(da.dims)}")
    for d, c in chunks.items():
        if isinstance(c, bool) or not isinstance(c, int | np.integer) or c < 1:
            raise TFRParameterError(
                f"chunks[{d!r}] must be a positive number of samples or channels, got {c!r}"
            )
    return {da.get_axis_num(d): int(c) for d, c in chunks.items()}


# Attributes of a series that a transform or a z-score changes (rate, unit) or that no
# longer apply to its result (a window's own starting time is its first time coordinate).
_SERIES_ATTRS = ("rate", "unit", "units", "starting_time", "output", "decim")


def _attr_rate(obj: xr.DataArray | xr.Dataset) -> float | None:
    # A Dataset's series ('data') knows its own rate; the Dataset's attrs are the file's.
    rate = None
    if isinstance(obj, xr.Dataset) and "data" in obj:
        rate = obj["data"].attrs.get("rate")
    if rate is None:
        rate = obj.attrs.get("rate")
    if rate is None:
        return None
    try:
        value = float(np.asarray(rate).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        raise TimeAxisError(f"the 'rate' attribute must be a number in Hz, got {rate!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise TimeAxisError(f"the 'rate' attribute must be positive, got {rate!r}")
    return value


def _seconds(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "M":
        values = values - values[0]
    if values.dtype.kind == "m":
        return values / np.timedelta64(1, "s")
    if values.dtype.kind not in "iuf":
        raise TimeAxisError(f"the time coordinate must be numeric or datetime, got {values.dtype}")
    return values.astype(np.float64, copy=False)


def _regular_step(times: np.ndarray, dim: Hashable) -> float:
    n = times.size
    if n < 2:
        raise TimeAxisError(f"{dim!r} has {n} sample(s): cannot tell the sampling rate")
    step = (times[-1] - times[0]) / (n - 1)
    tol = _REGULAR_RTOL * abs(step) + 8 * np.spacing(np.max(np.abs(times[[0, -1]])))
    for lo in range(0, n - 1, 1 << 20):  # bounded memory on long timestamp arrays
        piece = times[lo : lo + (1 << 20) + 1]
        bad = np.flatnonzero(~np.isfinite(piece))
        if bad.size:  # a NaN would make every comparison below False, i.e. "regular"
            raise TimeAxisError(
                f"{dim!r} holds NaN/inf time(s) (first at sample {lo + int(bad[0])}); "
                "wavelet transforms need a regular time axis — drop or fill them first"
            )
        gaps = np.diff(piece)
        back = np.flatnonzero(gaps * np.sign(step) <= 0) if step else np.empty(0, int)
        if back.size:  # name the defect: time standing still or going backwards
            at = lo + int(back[0])
            raise TimeAxisError(
                f"{dim!r} does not increase: sample {at + 1} is at {float(times[at + 1])} s, "
                f"after {float(times[at])} s at sample {at}; wavelet transforms need a "
                "regular time axis — sort, drop the repeated stamps or resample first"
            )
        worst = float(np.max(np.abs(gaps - step)))
        if worst > tol:
            raise TimeAxisError(
                f"{dim!r} is not regularly sampled (spacing varies by {worst:.3g} s around a mean "
                f"step of {step:.6g} s); wavelet transforms need a regular time axis — "
                "resample (e.g. obj.interp) first"
            )
    return float(step)


def _warn_degenerate(stats: xr.Dataset, window: xr.DataArray | None, dim: Hashable) -> xr.DataArray:
    """The std to divide by (NaN where there is no variance), warning about what is lost.

    ``window`` (the samples the statistics came from, when computed here) lets the
    warning count NaN samples; that second look reads only the affected channels.
    """
    mean, std = stats["mean"], stats["std"]
    if std.chunks is not None or mean.chunks is not None:
        # Lazily loaded stats= (open_zarr): the same rule, applied lazily; a warning
        # would need their values, and zscore(stats=...) promises not to compute.
        lazy = std.reset_coords(drop=True)
        keep = lazy > _stats.ZERO_VARIANCE_RTOL * np.abs(mean.reset_coords(drop=True))
        return lazy.where(keep | lazy.isnull())
    zero, missing = _stats.degenerate(mean.values, std.values)
    if zero.any():
        warnings.warn(
            f"{int(zero.sum())} channel(s) have zero variance (constant, up to rounding): "
            f"{_labels(std, zero)}; their z-scores are NaN",
            DegenerateStatisticsWarning,
            stacklevel=3,
        )
    if missing.any():
        counted = ""
        if window is not None:
            # only the affected rows along each dim of the statistics are read again
            rows = {
                d: np.flatnonzero(missing.any(axis=tuple(j for j in range(std.ndim) if j != i)))
                for i, d in enumerate(std.dims)
            }
            # an infinite sample makes the moments NaN too (inf - inf): count both
            bad = int((~np.isfinite(window.isel(rows))).sum().compute())
            counted = f" ({bad} NaN or infinite sample(s) in them)"
        warnings.warn(
            f"NaN or infinite samples make the statistics of {int(missing.sum())} channel(s) NaN"
            f"{counted}: {_labels(std, missing)}; all their z-scores are NaN (fill or drop "
            "the gaps first, e.g. obj.fillna(...), or pass stats= from clean data)",
            DegenerateStatisticsWarning,
            stacklevel=3,
        )
    std = std.reset_coords(drop=True)
    return std.where(~zero) if zero.any() else std


def _labels(ref: xr.DataArray, mask: np.ndarray, limit: int = 10) -> str:
    """The labels of the masked positions of ``ref``: ``channel 14`` or ``(channel=3, ...)``."""
    names = []
    for pos in np.argwhere(mask)[:limit]:
        parts = []
        for d, i in zip(ref.dims, pos, strict=True):
            label = ref[d].values[i] if d in ref.coords else i
            parts.append(f"{d} {label}" if ref.ndim == 1 else f"{d}={label}")
        names.append(parts[0] if ref.ndim == 1 else "(" + ", ".join(parts) + ")")
    if ref.ndim == 0:
        names = ["all"]
    more = int(mask.sum()) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def _require_numbers(da: xr.DataArray) -> None:
    if da.dtype.kind not in "biufc":
        raise TypeError(
            f"statistics and z-scores need numbers; {da.name or 'the data'!r} holds "
            f"{da.dtype} values"
        )


def values_unit(da: xr.DataArray) -> str | None:
    """The unit of ``da``'s values: its ``unit``/``units`` attr, or ``"counts"`` for stored
    values not yet converted (opened with ``mask_and_scale=False``: ``"stored units"`` when
    they are floats; also integers with a ``conversion`` or ``offset``), whose NWB ``unit``
    applies only once they are converted; ``None`` when unknown.

    Examples
    --------
    >>> counts = xr.DataArray(np.zeros(3, np.int16), dims="time",
    ...                       attrs={"unit": "volts", "conversion": 1e-6})
    >>> values_unit(counts), values_unit(counts.astype(float) * 1e-6)  # converted: volts
    ('counts', 'volts')
    """
    attrs = da.attrs
    unit = attrs.get("unit", attrs.get("units"))
    unit = None if unit is None else str(unit)
    if attrs.get("scaling") == "not applied":  # opened with mask_and_scale=False
        if unit is not None and unit.startswith(("counts", "stored units")):
            return unit  # a transform of such values says so already ("counts**2")
        return "counts" if da.dtype.kind in "iu" else "stored units"
    scaled = float(np.asarray(attrs.get("conversion", 1.0), float).reshape(-1)[0]) != 1.0 or (
        float(np.asarray(attrs.get("offset", 0.0), float).reshape(-1)[0]) != 0.0
    )
    if da.dtype.kind in "iu" and scaled:
        return "counts"
    return unit


def _described(da: xr.DataArray) -> dict[str, str]:
    """What a statistics Dataset records of the values it summarises (to refuse others)."""
    described = {}
    unit = values_unit(da)
    if unit is not None:
        described["unit"] = unit
    if "output" in da.attrs:
        described["output"] = str(da.attrs["output"])
    return described


def _check_stats(stats: Any, da: xr.DataArray, dim: Hashable) -> None:
    if not isinstance(stats, xr.Dataset) or not {"mean", "std"} <= set(stats.data_vars):
        raise StatisticsMismatchError(
            "stats must be a Dataset with 'mean' and 'std' (from obj.ephys.stats())"
        )
    expected = {d: s for d, s in da.sizes.items() if d != dim}
    for name in ("mean", "std"):
        got = dict(stats[name].sizes)
        if dim in got or any(expected.get(d) != s for d, s in got.items()):
            raise StatisticsMismatchError(
                f"stats[{name!r}] has sizes {got}; the data need a subset of {expected} "
                f"(everything but {dim!r})"
            )
    # Statistics of another transform output (amplitude for power) or of the stored counts
    # for volts would z-score without complaint and give wrong numbers.
    for key, value in _described(da).items():
        if key in stats.attrs and str(stats.attrs[key]) != value:
            what = "values in" if key == "unit" else "the transform output"
            raise StatisticsMismatchError(
                f"the stats are of {what} {stats.attrs[key]!r}, the data of {what} {value!r}: "
                "z-score with the statistics of these data (obj.ephys.stats())"
            )
    quantity = stats.attrs.get("quantity")
    if quantity is not None and quantity != _stats.quantity(da):
        raise StatisticsMismatchError(
            f"the stats describe {quantity!r} but the data would be z-scored on "
            f"{_stats.quantity(da)!r} (complex data use power, real data their values)"
        )
