"""Look at a window of a recording or of its time-frequency decomposition.

:func:`plot_window` selects the window first and only then loads it, so on a lazy
(dask) object only the chunks of that window — plus a transform's halo — are read
and computed. :func:`browse` wraps it in an ipywidgets viewer for notebooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["browse", "plot_window", "select_window"]


def _as_dataarray(obj: xr.DataArray | xr.Dataset) -> xr.DataArray:
    if isinstance(obj, xr.Dataset):
        if "data" not in obj.data_vars:
            raise ValueError(
                f"the Dataset has no 'data' variable (variables: {list(obj.data_vars)})"
            )
        return obj["data"]
    return obj


def select_window(
    obj: xr.DataArray | xr.Dataset,
    start: float,
    duration: float,
    channels: Sequence[Any] | None = None,
) -> xr.DataArray:
    """The lazy window ``[start, start + duration)`` s of ``obj`` (channels by label).

    Raises
    ------
    ValueError
        For a non-positive ``duration`` or a window outside the recording.
    KeyError
        For channel labels that do not exist.

    Examples
    --------
    >>> da = xr.DataArray(np.arange(20.0).reshape(10, 2), dims=("time", "channel"),
    ...                   coords={"time": np.arange(10) / 10, "channel": [5, 6]})
    >>> select_window(da, 0.2, 0.3, channels=[6]).values.ravel().tolist()
    [5.0, 7.0, 9.0]
    """
    da = _as_dataarray(obj)
    if not duration > 0:
        raise ValueError(f"duration must be positive, got {duration!r}")
    if "time" not in da.dims:
        raise ValueError(f"no 'time' dimension to window (dims: {da.dims})")
    times = da.indexes["time"] if "time" in da.indexes else None
    if times is not None and len(times):
        first, last = float(times[0]), float(times[-1])
        if start > last or start + duration < first:
            raise ValueError(
                f"window {start}–{start + duration} s lies outside the recording "
                f"({first:g}–{last:g} s)"
            )
    step = 0.0
    if times is not None and len(times) > 1:
        step = float(times[1] - times[0])
    stop = start + duration - 0.5 * step if step > 0 else start + duration
    window = da.sel(time=slice(start, stop))
    if channels is not None and "channel" in window.dims:
        window = window.sel(channel=list(channels))
    return window


def plot_window(
    obj: xr.DataArray | xr.Dataset,
    start: float,
    duration: float,
    channels: Sequence[Any] | None = None,
    *,
    ax: Any = None,
    spacing: float | None = None,
    **kwargs: Any,
) -> Any:
    """Plot ``duration`` seconds from ``start``: traces, or a spectrogram per channel.

    Loads only that window (on lazy input, only its chunks are read and computed).

    Parameters
    ----------
    obj
        A recording (``time``, ``channel``) or a decomposition with a ``frequency`` dim.
    start, duration
        Window in seconds.
    channels
        Channel labels to show (default: all).
    ax
        Matplotlib axes for traces (a new figure otherwise). Spectrograms get one axes
        per channel in a new figure.
    spacing
        Vertical offset between traces (default: 3 × the median channel std).
    **kwargs
        Passed to ``plot`` (traces) or ``pcolormesh`` (spectrograms).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> t = np.arange(1000) / 100
    >>> da = xr.DataArray(np.sin(t)[:, None] * [1, 2], dims=("time", "channel"),
    ...                   coords={"time": t, "channel": [0, 1]})
    >>> fig = plot_window(da, 2.0, 1.0)
    >>> len(fig.axes[0].lines)
    2
    """
    import matplotlib.pyplot as plt

    window = select_window(obj, start, duration, channels).compute()
    if "frequency" in window.dims:
        return _plot_spectrogram(window, **kwargs)
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 1 + 0.4 * window.sizes.get("channel", 1)))
    else:
        fig = ax.figure
    values = np.real(window.transpose("time", ...).values).reshape(window.sizes["time"], -1)
    times = window["time"].values
    labels = window["channel"].values if "channel" in window.dims else [window.name or "data"]
    if spacing is None:
        spread = np.nanstd(values, axis=0)
        spacing = 3.0 * float(np.nanmedian(spread)) if np.any(spread > 0) else 1.0
    offsets = -spacing * np.arange(values.shape[1])
    ax.plot(times, values + offsets, lw=0.8, **kwargs)
    ax.set_yticks(offsets, [str(label) for label in labels])
    ax.set_xlabel("time (s)")
    unit = window.attrs.get("unit", "")
    ax.set_ylabel(f"channel ({unit})" if unit else "channel")
    ax.set_xlim(times[0], times[-1]) if len(times) > 1 else None
    return fig


def _plot_spectrogram(window: xr.DataArray, **kwargs: Any) -> Any:
    import matplotlib.pyplot as plt

    if np.iscomplexobj(window.values):
        window = np.abs(window) ** 2
        label = "power"
    elif "zscore_of" in window.attrs:
        label = f"z-score of {window.attrs['zscore_of']}"
    else:
        label = window.attrs.get("output", window.name or "value")
    channels = window["channel"].values if "channel" in window.dims else [None]
    fig, axes = plt.subplots(len(channels), 1, figsize=(10, 2.2 * len(channels)), squeeze=False)
    for ax, channel in zip(axes[:, 0], channels, strict=True):
        panel = window.sel(channel=channel) if channel is not None else window
        panel = panel.transpose("frequency", "time")
        mesh = ax.pcolormesh(
            panel["time"].values, panel["frequency"].values, panel.values, shading="auto", **kwargs
        )
        ax.set_yscale("log")
        ax.set_ylabel("frequency (Hz)")
        ax.set_title(f"channel {channel}" if channel is not None else "")
        fig.colorbar(mesh, ax=ax, label=label)
    axes[-1, 0].set_xlabel("time (s)")
    return fig


def browse(
    obj: xr.DataArray | xr.Dataset,
    *,
    duration: float = 1.0,
    channels: Sequence[Any] | None = None,
) -> Any:
    """An ipywidgets viewer: a time slider, a window length and a channel picker.

    Each move loads only the new window. Needs ``ipywidgets``
    (``pip install 'xnwb[widgets]'``).

    Returns
    -------
    ipywidgets.VBox
        Display it in a notebook; ``.children`` holds the controls and the output.
    """
    try:
        import ipywidgets as widgets
    except ImportError as err:
        raise ImportError("browse() needs ipywidgets: pip install 'xnwb[widgets]'") from err
    import matplotlib.pyplot as plt
    from IPython.display import display

    da = _as_dataarray(obj)
    times = da.indexes["time"]
    first, last = float(times[0]), float(times[-1])
    all_channels = list(da["channel"].values) if "channel" in da.dims else []
    chosen = list(channels) if channels is not None else all_channels[: min(8, len(all_channels))]

    start = widgets.FloatSlider(
        value=first,
        min=first,
        max=max(first, last - duration),
        step=duration / 10,
        description="start (s)",
        continuous_update=False,
        readout_format=".3f",
    )
    length = widgets.BoundedFloatText(
        value=duration, min=1e-3, max=max(1e-3, last - first), description="length (s)"
    )
    picker = widgets.SelectMultiple(
        options=all_channels, value=tuple(chosen), description="channels", rows=6
    )
    output = widgets.Output()

    def redraw(*_: Any) -> None:
        output.clear_output(wait=True)
        with output:
            fig = plot_window(da, start.value, length.value, list(picker.value) or None)
            display(fig)
            plt.close(fig)

    for control in (start, length, picker):
        control.observe(redraw, names="value")
    redraw()
    controls = (
        widgets.HBox([start, length, picker]) if all_channels else widgets.HBox([start, length])
    )
    viewer = widgets.VBox([controls, output])
    viewer.redraw = redraw  # for scripted use and tests
    return viewer
