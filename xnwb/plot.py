"""Look at a window of a recording or of its time-frequency decomposition.

:func:`plot_window` selects the window first and only then loads it, so on a lazy
(dask) object only the chunks of that window — plus a transform's halo — are read
and computed, once. Traces are stacked around their window medians with a spacing from a
robust spread and an amplitude scale bar; spectrograms get a log-frequency axis and one
colour scale shared by all channel panels. The notebook viewer is :func:`xnwb.browse.browse`
(:func:`browse` here forwards to it).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from xnwb.accessors import values_unit
from xnwb.exceptions import ChannelNotFoundError, TimeAxisError
from xnwb.units import label_and_factor, quantity_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["browse", "plot_window", "select_window"]

MAX_CHANNELS = 16  # default cap on traces / panels in one figure
MAX_HEIGHT = 11.0  # inches: the tallest figure plot_window makes
TRACE_SPACING = 6.0  # robust standard deviations between neighbouring trace baselines
MAX_POINTS = 2000  # display columns; longer windows are binned (traces: min and max per bin)
COLOUR_PERCENTILES = (1.0, 99.0)  # robust colour limits (z-scores: the 99th of |z|)
_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution × this = its standard deviation


def _as_dataarray(obj: xr.DataArray | xr.Dataset) -> xr.DataArray:
    if isinstance(obj, xr.Dataset):
        if "data" not in obj.data_vars:
            raise ValueError(
                f"the Dataset has no 'data' variable (variables: {list(obj.data_vars)}); "
                "pass the DataArray to plot instead"
            )
        return obj["data"]
    return obj


def _channel_list(channels: Any) -> list[Any] | None:
    """``None``, one label (``3``, ``"CA1"``) or a sequence of labels -> a list or None."""
    if channels is None:
        return None
    if isinstance(channels, str | bytes) or np.ndim(channels) == 0:
        return [channels]
    return list(channels)


def _plain(label: Any) -> Any:
    return label.item() if isinstance(label, np.generic) else label


def _channel_labels(da: xr.DataArray) -> list[Any]:
    # (Never ``da.indexes``: it builds a pandas index of every dimension, and of a long lazy
    # time axis that costs a quarter of a second each time.)
    if "channel" in da.xindexes:
        return [_plain(c) for c in da["channel"].values]
    return list(range(da.sizes["channel"]))


def _check_channels(da: xr.DataArray, chosen: list[Any]) -> None:
    if "channel" not in da.dims:
        if chosen:
            raise ChannelNotFoundError(
                f"channels {[_plain(c) for c in chosen]!r} asked for, but this series has no "
                f"'channel' dimension (dims: {da.dims}); leave channels=None"
            )
        return
    labels = _channel_labels(da)
    known = set(labels)
    missing = [_plain(c) for c in chosen if _plain(c) not in known]
    if missing:
        shown = labels if len(labels) <= 8 else [*labels[:4], "…", *labels[-2:]]
        raise ChannelNotFoundError(
            f"channel label(s) {missing!r} not in this series; its {len(labels)} channels are "
            f"{', '.join(map(str, shown))}. Channels are labels (electrode ids), not positions: "
            "for positions select with .isel(channel=...) first"
        )


def select_window(
    obj: xr.DataArray | xr.Dataset,
    start: float,
    duration: float,
    channels: Sequence[Any] | Any | None = None,
) -> xr.DataArray:
    """The lazy window ``[start, start + duration)`` s of ``obj`` (channels by label).

    Nothing is loaded: the result is as lazy as ``obj``.

    Parameters
    ----------
    obj
        A series with a ``time`` dimension in seconds (a Dataset: its ``data`` variable).
    start, duration
        The window, in the seconds of the ``time`` coordinate (absolute recording time).
    channels
        Channel labels (``channel`` coordinate values, e.g. electrode ids), one label, or
        ``None`` for all.

    Returns
    -------
    xarray.DataArray

    Raises
    ------
    xnwb.exceptions.TimeAxisError
        (a ``ValueError``) for a start or duration that is not a finite number of seconds
        (a non-positive duration), a window outside the recording, or a time coordinate
        that does not increase.
    xnwb.exceptions.ChannelNotFoundError
        (a ``KeyError``) for channel labels that do not exist; the message names them.

    Examples
    --------
    >>> da = xr.DataArray(np.arange(20.0).reshape(10, 2), dims=("time", "channel"),
    ...                   coords={"time": np.arange(10) / 10, "channel": [5, 6]})
    >>> select_window(da, 0.2, 0.3, channels=[6]).values.ravel().tolist()
    [5.0, 7.0, 9.0]
    >>> select_window(da, 0.2, 0.3, channels=6).dims
    ('time', 'channel')
    """
    da = _as_dataarray(obj)
    if not np.isfinite(start):
        raise TimeAxisError(f"start must be a time in seconds, got {start!r}")
    if not (np.isfinite(duration) and duration > 0):
        raise TimeAxisError(f"duration must be a positive number of seconds, got {duration!r}")
    if "time" not in da.dims:
        raise TimeAxisError(f"no 'time' dimension to window (dims: {da.dims})")
    n = da.sizes["time"]
    step = 0.0
    if "time" in da.xindexes and n:
        # The ends and the first step only: a lazy time index is never materialised.
        first, second, last = (
            float(t) for t in da["time"].isel(time=[0, min(1, n - 1), n - 1]).values
        )
        if start > last or start + duration < first:
            raise TimeAxisError(
                f"window {start}–{start + duration} s lies outside the recording "
                f"({first:g}–{last:g} s)"
            )
        step = second - first
    stop = start + duration - 0.5 * step if step > 0 else start + duration
    chosen = _channel_list(channels)
    if chosen is not None:
        _check_channels(da, chosen)
    try:
        window = da.sel(time=slice(start, stop))
    except KeyError:  # pandas refuses a slice of times that do not increase
        raise TimeAxisError(
            "the time coordinate does not increase (it steps back somewhere), so a window "
            "in seconds is ambiguous; select the samples by position (.isel) instead"
        ) from None
    if chosen is not None and "channel" in window.dims:
        if "channel" in window.xindexes:
            window = window.sel(channel=chosen)
        else:
            window = window.isel(channel=chosen)
    return window


def plot_window(
    obj: xr.DataArray | xr.Dataset,
    start: float,
    duration: float,
    channels: Sequence[Any] | Any | None = None,
    *,
    ax: Axes | Sequence[Axes] | None = None,
    max_channels: int | None = MAX_CHANNELS,
    spacing: float | None = None,
    share_scale: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: Any = None,
    **kwargs: Any,
) -> Figure:
    """Plot ``duration`` seconds from ``start``: stacked traces, or a spectrogram per channel.

    **Loads** only that window, once: it is selected on the lazy object, then computed (on a
    dask-backed series only its chunks are read; on a lazy transform only its chunks and their
    halo are computed). The time axis is the series' own, in seconds of recording time, so a
    window from 3600 s reads 3600.0, 3600.5, ….

    *Traces* (a series without a ``frequency`` dimension): each trace's window median is
    removed and the traces are stacked ``spacing`` apart, each channel label (y tick) at its
    trace's baseline; a vertical scale bar at the right gives the amplitude in the series'
    unit (attribute ``unit`` or ``units``; ``"volts"`` shows as e.g. "200 µV"). A 1-D series
    is drawn on a plain y axis labelled with its unit. Complex traces are drawn as power.

    *Spectrograms* (a ``frequency`` dimension): one panel per channel, log-frequency axis in
    Hz, time along x. Complex coefficients are shown as power ``|c|²``; z-scores (attribute
    ``zscore_of``, or ``units == "1"``) on a diverging colormap centred on 0 with symmetric
    limits (a ``TwoSlopeNorm``); phase on a cyclic one. Colour limits are robust (the 1st
    and 99th percentiles; for z-scores ±the 99th percentile of ``|z|``), so one hot pixel does
    not wash out the picture; ``vmin``/``vmax`` override them.

    A window longer than ``2 × MAX_POINTS`` (4000) samples is drawn as a screen can show it:
    traces as the minimum and maximum of each of 2000 bins (spikes survive), spectrograms as
    2000 bin means (phase: each bin's first sample).

    Parameters
    ----------
    obj
        A recording (``time``, ``channel``), a 1-D series (``time``), or a decomposition with
        a ``frequency`` dimension (``channel``, ``frequency``, ``time``); a Dataset stands for
        its ``data`` variable.
    start, duration
        The window, in seconds of the ``time`` coordinate.
    channels
        Channel labels (the ``channel`` coordinate, e.g. electrode ids, not positions), one
        label (``channels=3`` is ``[3]``), or ``None`` for all (capped by ``max_channels``).
    ax
        Traces: the matplotlib Axes to draw in (default: a new figure). Spectrograms: one
        Axes per panel (a single Axes for a single panel); a count that does not match is a
        ``ValueError``. With ``ax`` the figure's layout is the caller's.
    max_channels
        Show at most this many channels (the first ones; default 16); the figure then says
        how many were left out. ``None`` shows all.
    spacing
        Traces: distance between neighbouring baselines, in the series' unit (default:
        6 × the median over channels of each trace's robust standard deviation,
        1.4826 × its median absolute deviation, so one noisy channel does not squash the rest).
    share_scale
        Spectrograms: one colour scale (and colour bar) for all panels, so channels can be
        compared; ``False`` gives each panel its own.
    vmin, vmax
        Spectrograms: colour limits, overriding the robust ones.
    cmap
        Spectrograms: colormap (default ``"RdBu_r"`` for z-scores, ``"twilight"`` for phase,
        ``"viridis"`` otherwise).
    **kwargs
        Passed to ``Axes.plot`` (traces) or ``Axes.pcolormesh`` (spectrograms; a ``norm``
        there, e.g. ``matplotlib.colors.LogNorm()``, replaces the robust limits).

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn in (created through ``pyplot``, so ``plt.show()`` and notebooks show
        it; close it with ``plt.close(fig)`` when drawing many).

    Raises
    ------
    ValueError
        For a window outside the recording, one without samples, or an ``ax`` count that does
        not match the panels.
    xnwb.exceptions.ChannelNotFoundError
        (a ``KeyError``) for unknown channel labels; the message names them.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> t = np.arange(2000) / 1000
    >>> da = xr.DataArray(1e-4 * np.sin(2 * np.pi * 8 * t)[:, None] * [1, 2, 3],
    ...                   dims=("time", "channel"), attrs={"unit": "volts"},
    ...                   coords={"time": t, "channel": [10, 11, 12]})
    >>> fig = plot_window(da, 0.5, 1.0)
    >>> len(fig.axes[0].lines), [t.get_text() for t in fig.axes[0].get_yticklabels()]
    (3, ['10', '11', '12'])
    >>> [t.get_text() for t in fig.axes[0].texts]  # the scale bar
    ['1 mV']
    >>> fig = plot_window(da, 0.5, 1.0, channels=11)
    >>> len(fig.axes[0].lines)
    1

    Into axes of your own (the figure returned is theirs):

    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> plot_window(da, 0.5, 1.0, channels=[10, 12], ax=ax) is fig
    True

    A spectrogram panel per channel, with one colour scale:

    >>> tfr = xr.DataArray(np.random.default_rng(0).normal(size=(2, 4, 200)),
    ...                    dims=("channel", "frequency", "time"), attrs={"zscore_of": "power"},
    ...                    coords={"channel": [10, 11], "frequency": [10.0, 20, 40, 80],
    ...                            "time": np.arange(200) / 100})
    >>> fig = plot_window(tfr, 0.0, 1.0)
    >>> len(fig.axes), fig.axes[-1].get_ylabel()  # two panels and their shared colour bar
    (3, 'z-score of power')
    """
    da = _as_dataarray(obj)
    chosen = _channel_list(channels)
    if chosen == []:
        raise ValueError("channels=[] selects no channel; pass channels=None for all of them")
    note = None
    if "channel" in da.dims:
        asked = chosen if chosen is not None else _channel_labels(da)
        if max_channels is not None and len(asked) > max_channels:
            if max_channels < 1:
                raise ValueError(f"max_channels must be at least 1 (or None), got {max_channels}")
            _check_channels(da, asked)
            whole = "requested channels" if chosen is not None else "channels"
            note = (
                f"first {max_channels} of {len(asked)} {whole} shown, {len(asked) - max_channels}"
                f" left out (max_channels={max_channels})"
            )
            chosen = asked[:max_channels]
    window = select_window(da, start, duration, chosen).compute()  # the one read
    if window.sizes["time"] == 0:
        raise ValueError(
            f"the window {start}–{start + duration} s holds no samples; make it longer than "
            "one sample period"
        )
    _warn_blank(obj, window)
    if "frequency" in window.dims:
        return _plot_spectrogram(
            window, ax, note, share_scale=share_scale, vmin=vmin, vmax=vmax, cmap=cmap, **kwargs
        )
    return _plot_traces(window, ax, note, spacing=spacing, **kwargs)


def _warn_blank(obj: xr.DataArray | xr.Dataset, window: xr.DataArray) -> None:
    """Warn of what would draw blank: a half-written result store, channels with no values."""
    if isinstance(obj, xr.Dataset) and obj.attrs.get("xnwb_complete") is False:
        done, parts = len(obj.attrs.get("xnwb_parts_done", [])), obj.attrs.get("xnwb_parts", "?")
        warnings.warn(
            f"this result store is incomplete ({done} of {parts} parts written): parts not "
            "written yet draw blank; run the same `xnwb tfr` command again to finish it",
            UserWarning,
            stacklevel=3,
        )
    values = np.asarray(window.values)
    if values.size == 0 or values.dtype.kind not in "fc":
        return
    finite = np.isfinite(values)
    if "channel" in window.dims:
        axes = tuple(a for a, d in enumerate(window.dims) if d != "channel")
        empty = ~finite.any(axis=axes)
        labels = [_plain(c) for c in np.asarray(window["channel"].values)[empty]]
        more = f" and {len(labels) - 8} more" if len(labels) > 8 else ""
        listed = ", ".join(map(str, labels[:8])) + more
        which = f"channel{'s' * (len(labels) > 1)} {listed}"
    else:
        labels = [] if finite.any() else [_series_name(window)]
        which = labels[0] if labels else ""
    if labels:
        warnings.warn(
            f"no finite value in the window {float(window['time'][0]):g}–"
            f"{float(window['time'][-1]):g} s for {which}: drawn blank",
            UserWarning,
            stacklevel=3,
        )


# -- traces ---------------------------------------------------------------------------------


def _plot_traces(
    window: xr.DataArray, ax: Any, note: str | None, *, spacing: float | None, **kwargs: Any
) -> Figure:
    from matplotlib import cbook
    from matplotlib.lines import Line2D

    extra = [d for d in window.dims if d not in ("time", "channel")]
    if extra:
        raise ValueError(
            f"traces need dims ('time', 'channel') or ('time',); this window also has {extra}: "
            "select one value of those with .sel/.isel first"
        )
    unit = _unit(window)
    values = window.transpose("time", ...).values
    quantity, power = "", 1
    if np.iscomplexobj(values):
        values, quantity, power = np.abs(values) ** 2, "power |c|²", 2
    values = values.astype(float, copy=False)
    times = window["time"].values
    stacked = "channel" in window.dims
    n = window.sizes.get("channel", 1)
    fig, ax = _figure_and_axes(ax, min(MAX_HEIGHT, 1.3 + 0.38 * n) if stacked else 3.0)
    style = {"linewidth": 0.6, "color": "k"} | cbook.normalize_kwargs(kwargs, Line2D)
    if not stacked:
        ax.plot(*_envelope(times, values), **style)
        _prefix_axis(ax, f"{_series_name(window)} {quantity}".strip(), values, unit, power)
    else:
        values = values - np.nanmedian(values, axis=0)  # each trace around its baseline
        if spacing is None:
            spacing = TRACE_SPACING * _robust_spread(values)
        offsets = -spacing * np.arange(n)
        for i in range(n):
            ax.plot(*_envelope(times, values[:, i] + offsets[i]), **style)
        ax.set_yticks(offsets, [str(c) for c in _channel_labels(window)])
        # Robust spacing lets bursts cross neighbouring traces, but the outer traces'
        # peaks must stay inside the axes rather than be cut off at its edges.
        top = max(offsets[0] + 0.6 * spacing, _finite_extent(values[:, 0], np.max) + offsets[0])
        bottom = min(
            offsets[-1] - 0.6 * spacing, _finite_extent(values[:, -1], np.min) + offsets[-1]
        )
        margin = 0.05 * spacing
        ax.set_ylim(bottom - margin, top + margin)
        ax.set_ylabel("channel" if not quantity else f"channel ({quantity})")
        _scale_bar(ax, spacing, unit, power, base=offsets[-1])
    _time_axis(ax, times)
    if note:
        ax.set_title(note, loc="right", fontsize="small", color="0.35")
    return fig


def _envelope(times: np.ndarray, trace: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The trace as a screen can show it: beyond ``2 × MAX_POINTS`` samples, the minimum and
    the maximum of each of ``MAX_POINTS`` bins, in time order (peaks and spikes survive).

    >>> t, y = _envelope(np.arange(10_000.0), np.sin(np.arange(10_000.0)))
    >>> len(y) <= 2 * MAX_POINTS, bool(y.max() == np.sin(np.arange(10_000.0)).max())
    (True, True)
    """
    n = len(trace)
    if n <= 2 * MAX_POINTS:
        return times, trace
    q = math.ceil(n / MAX_POINTS)
    blocks = np.pad(trace, (0, -n % q), mode="edge").reshape(-1, q)
    starts = np.arange(0, blocks.shape[0] * q, q)
    finite = np.isfinite(blocks)
    low = starts + np.argmin(np.where(finite, blocks, np.inf), axis=1)
    high = starts + np.argmax(np.where(finite, blocks, -np.inf), axis=1)
    order = np.sort(np.stack([low, high], axis=1), axis=1).ravel().clip(0, n - 1)
    return times[order], trace[order]


def _robust_spread(values: np.ndarray) -> float:
    """Median over channels of each trace's robust standard deviation (1.4826 × MAD).

    Falls back to the IQR, then the standard deviation, then 1, for traces whose MAD is 0.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN traces
        mad = _MAD_TO_SIGMA * np.nanmedian(np.abs(values - np.nanmedian(values, 0)), axis=0)
        q75, q25 = np.nanpercentile(values, [75, 25], axis=0)
        fallbacks = (mad, (q75 - q25) / 1.349, np.nanstd(values, axis=0))
    for spread in fallbacks:
        good = spread[np.isfinite(spread) & (spread > 0)]
        if good.size:
            return float(np.median(good))
    return 1.0


def _scale_bar(ax: Any, spacing: float, unit: str, power: int, base: float) -> None:
    """A vertical bar of a round length just right of the axes, labelled in the unit."""
    from matplotlib.collections import LineCollection
    from matplotlib.transforms import blended_transform_factory

    length = _round_down(spacing)
    where = blended_transform_factory(ax.transAxes, ax.transData)
    ends = [(1.015, base - 0.5 * length), (1.015, base + 0.5 * length)]
    bar = LineCollection([ends], colors="k", linewidths=2.5, transform=where, clip_on=False)
    bar.set_gid("scale bar")
    ax.add_collection(bar, autolim=False)
    ax.text(
        1.03, base, quantity_text(length, unit, power), transform=where, clip_on=False,
        ha="left", va="center", fontsize="small", gid="scale bar",
    )  # fmt: skip


def _round_down(x: float) -> float:
    """The largest 1, 2 or 5 × 10^k not above ``x``.

    >>> _round_down(0.00047), _round_down(3.0), _round_down(1.0)
    (0.0002, 2.0, 1.0)
    """
    if not (x > 0 and math.isfinite(x)):
        return 1.0
    power = 10.0 ** math.floor(math.log10(x))
    mantissa = max(m for m in (1, 2, 5, 10) if m * power <= x * (1 + 1e-9))
    return float(f"{mantissa * power:.3g}")


# -- units ----------------------------------------------------------------------------------


def _unit(window: xr.DataArray) -> str:
    """The unit of the values (:func:`xnwb.accessors.values_unit`: "counts" for stored values
    not converted), that of their amplitude for a power transform (the plot squares it)."""
    unit = values_unit(window) or ""
    if unit.endswith("**2") and window.attrs.get("output") == "power":
        return unit[:-3]  # a power transform records "volts**2"; the power is applied here
    return unit


def _series_name(window: xr.DataArray) -> str:
    series = str(window.attrs.get("series", "")).strip("/")
    if series:
        return series.rsplit("/", 1)[-1]
    return str(window.name) if window.name not in (None, "data") else "value"


def _prefix_axis(ax: Any, name: str, values: np.ndarray, unit: str, power: int = 1) -> None:
    """Label a 1-D plot's y axis with its unit, SI-prefixed to read well (µV, not 1e-4 V)."""
    finite = np.abs(values[np.isfinite(values)])
    label, factor = label_and_factor(name, unit, power, float(finite.max()) if finite.size else 0)
    ax.set_ylabel(label)
    if factor != 1.0:
        ax.yaxis.set_major_formatter(_scaled_formatter(factor))


def _scaled_formatter(factor: float) -> Any:
    """Tick labels of ``x × factor`` with as many decimals as the tick step needs."""
    from matplotlib import ticker

    class Scaled(ticker.Formatter):
        def format_ticks(self, values: Any) -> list[str]:
            scaled = np.asarray(values, float) * factor
            steps = np.abs(np.diff(scaled))
            step = float(steps[steps > 0].min()) if np.any(steps > 0) else 1.0
            decimals = max(0, -math.floor(math.log10(step) + 1e-9))
            return [self.fix_minus(f"{v:.{decimals}f}") for v in scaled]

        def __call__(self, x: float, pos: int | None = None) -> str:
            return self.fix_minus(f"{x * factor:.6g}")

    return Scaled()


# -- layout ---------------------------------------------------------------------------------


def _figure_and_axes(ax: Any, height: float) -> tuple[Figure, Any]:
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig = plt.figure(figsize=(10.0, height), layout="constrained")
    return fig, fig.add_subplot()


def _time_axis(ax: Any, times: np.ndarray) -> None:
    ax.set_xlabel("time (s)")
    if len(times) > 1:
        ax.set_xlim(times[0], times[-1])
    ax.ticklabel_format(axis="x", useOffset=False, style="plain")  # absolute recording time


# -- spectrograms ---------------------------------------------------------------------------


def _plot_spectrogram(
    window: xr.DataArray,
    ax: Any,
    note: str | None,
    *,
    share_scale: bool,
    vmin: float | None,
    vmax: float | None,
    cmap: Any,
    **kwargs: Any,
) -> Figure:

    extra = [d for d in window.dims if d not in ("time", "channel", "frequency")]
    if extra:
        raise ValueError(
            f"spectrograms need dims ('channel', 'frequency', 'time'); this window also has "
            f"{extra}: select one value of those with .sel/.isel first"
        )
    kind, name, unit, power, values = _colour_quantity(window)
    has_channel = "channel" in window.dims
    order = ("channel", "frequency", "time") if has_channel else ("frequency", "time")
    window = window.copy(data=values).transpose(*order)
    # The bands are drawn between neighbouring frequencies: they must ascend (a transform
    # keeps the order its frequencies were given in, e.g. `--freqs 10,100,20`).
    freqs = window["frequency"].values.astype(float)
    if np.any(np.diff(freqs) <= 0):
        if np.unique(freqs).size < freqs.size:
            raise ValueError(f"a spectrogram needs distinct frequencies, got {freqs.tolist()}")
        window = window.sortby("frequency")
    if has_channel:
        arrays = [window.values[i] for i in range(window.sizes["channel"])]
        titles = [f"channel {c}" for c in _channel_labels(window)]
    else:
        arrays, titles = [window.values], [_series_name(window)]
    fig, axes = _panel_axes(ax, len(arrays))
    if cmap is None:
        cmap = {"z": "RdBu_r", "phase": "twilight"}.get(kind, "viridis")
    times = window["time"].values
    freqs = window["frequency"].values.astype(float)
    log = bool(np.all(freqs > 0))
    t_edges, f_edges = _edges(times, log=False), _edges(freqs, log=log)
    if len(times) > 2 * MAX_POINTS:  # more columns than pixels: show bin means
        starts = np.arange(0, len(times), math.ceil(len(times) / MAX_POINTS))
        t_edges = t_edges[np.r_[starts, len(times)]]
        if kind == "phase":  # an average of angles means nothing: keep each bin's first
            arrays = [a[:, starts] for a in arrays]
        else:
            widths = np.diff(np.r_[starts, len(times)])
            arrays = [np.add.reduceat(a, starts, axis=-1) / widths for a in arrays]
    user_norm = kwargs.pop("norm", None)
    shared = _norm(arrays, kind, vmin, vmax) if share_scale else None
    for i, (axis, data, title) in enumerate(zip(axes, arrays, titles, strict=True)):
        norm, extend = (
            (user_norm, "neither") if user_norm else shared or _norm([data], kind, vmin, vmax)
        )
        mesh = axis.pcolormesh(
            t_edges, f_edges, data, norm=norm, cmap=cmap, shading="flat", rasterized=True, **kwargs
        )
        _frequency_axis(axis, freqs, log, label=ax is not None or len(axes) == 1)
        axis.set_title(title, loc="left", fontsize="medium")
        if shared is None or i == len(axes) - 1:
            where = axis if shared is None else axes
            shrink = 1.0 if shared is None else min(1.0, 0.3 + 0.7 / len(axes))
            bar = fig.colorbar(mesh, ax=where, extend=extend, shrink=shrink)
            largest = max(abs(mesh.norm.vmin), abs(mesh.norm.vmax))
            label, factor = label_and_factor(name, unit, power, largest)
            bar.set_label(label)
            if factor != 1.0:
                bar.formatter = _scaled_formatter(factor)
                bar.update_ticks()
    for axis in axes[:-1]:
        axis.tick_params(labelbottom=False)
    _time_axis(axes[-1], times)
    if note:
        axes[0].set_title(note, loc="right", fontsize="small", color="0.35")
    return fig


def _panel_axes(ax: Any, n: int) -> tuple[Figure, list[Any]]:
    """A new constrained-layout figure of ``n`` stacked panels, or the caller's ``n`` axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig = plt.figure(figsize=(10.0, min(MAX_HEIGHT, 0.9 + 1.6 * n)), layout="constrained")
        return fig, list(fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0])
    axes = list(np.ravel(ax)) if isinstance(ax, Sequence | np.ndarray) else [ax]
    if len(axes) != n:
        raise ValueError(
            f"ax= got {len(axes)} axes for {n} spectrogram panels (one per channel); pass "
            f"a sequence of {n} axes, or leave ax=None for a new figure"
        )
    return axes[0].figure, axes


def _colour_quantity(window: xr.DataArray) -> tuple[str, str, str, int, np.ndarray]:
    """(kind, name, unit, power of the unit, values) of what the colours show.

    Complex coefficients -> power ``|c|²``; z-scores; phase; power, amplitude or values.
    """
    attrs = window.attrs
    values = window.values
    unit = _unit(window)
    output = str(attrs.get("output", ""))
    if np.iscomplexobj(values):
        return "power", "power |c|²", unit, 2, np.abs(values) ** 2
    values = values.astype(float, copy=False)
    if "zscore_of" in attrs or str(attrs.get("units", "")) == "1":
        of = str(attrs.get("zscore_of", ""))
        if of in ("", "value") and output in ("power", "amplitude"):
            of = output
        return "z", f"z-score of {of}" if of else "z-score", "", 1, values
    if output == "power":
        return "power", "power", unit, 2, values
    if output == "phase":
        return "phase", "phase", "rad", 1, values
    if output == "amplitude":
        return "value", "amplitude", unit, 1, values
    return "value", _series_name(window), unit, 1, values


def _norm(arrays: list[np.ndarray], kind: str, vmin: float | None, vmax: float | None) -> Any:
    """(norm, colour-bar extend) from robust percentiles of all ``arrays`` together."""
    from matplotlib.colors import Normalize, TwoSlopeNorm

    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    if not finite.size:
        finite = np.zeros(1)
    if kind == "z":
        high = float(np.percentile(np.abs(finite), COLOUR_PERCENTILES[1])) or 1.0
        low = -high
    elif kind == "phase":
        low, high = -math.pi, math.pi
    else:
        low, high = (float(v) for v in np.percentile(finite, COLOUR_PERCENTILES))
    low = low if vmin is None else float(vmin)
    high = high if vmax is None else float(vmax)
    if not high > low:
        low, high = low - 0.5 * (abs(low) or 1.0), high + 0.5 * (abs(high) or 1.0)
    below, above = bool(finite.min() < low), bool(finite.max() > high)
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (below, above), "neither"
    )
    if kind == "z" and low < 0 < high:
        return TwoSlopeNorm(vcenter=0.0, vmin=low, vmax=high), extend
    return Normalize(vmin=low, vmax=high), extend


def _edges(centres: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around ``centres`` (geometric midpoints on a log axis).

    >>> _edges(np.array([10.0, 20.0, 40.0]), log=True).round(2).tolist()
    [7.07, 14.14, 28.28, 56.57]
    """
    x = np.log(centres) if log else np.asarray(centres, float)
    if x.size == 1:
        half = 0.5 * (np.log(2.0) if log else 1.0)
        inner = np.array([x[0] - half, x[0] + half])
    else:
        mid = 0.5 * (x[1:] + x[:-1])
        inner = np.concatenate([[x[0] - (mid[0] - x[0])], mid, [x[-1] + (x[-1] - mid[-1])]])
    return np.exp(inner) if log else inner


def _frequency_axis(ax: Any, freqs: np.ndarray, log: bool, label: bool) -> None:
    from matplotlib import ticker

    if label:
        ax.set_ylabel("frequency (Hz)")
    else:  # stacked panels of a new figure share one label
        ax.figure.supylabel("frequency (Hz)", fontsize="medium")
    if not log:
        return
    ax.set_yscale("log")
    decades = math.log10(freqs.max() / freqs.min()) if freqs.size > 1 else 0.0
    subs = (1.0,) if decades > 1.5 else (1.0, 2.0, 5.0)
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10.0, subs=subs))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(ticker.NullLocator())  # unlabelled log ticks cost a lot to draw


def browse(obj: xr.DataArray | xr.Dataset, **kwargs: Any) -> Any:
    """The notebook viewer; see :func:`xnwb.browse.browse`."""
    from xnwb.browse import browse as _browse

    return _browse(obj, **kwargs)


def _finite_extent(trace: np.ndarray, reduce: Any) -> float:
    """``reduce`` (np.max or np.min) of a trace's finite samples; 0 for none."""
    finite = trace[np.isfinite(trace)]
    return float(reduce(finite)) if finite.size else 0.0
