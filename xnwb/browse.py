"""A notebook viewer that shows one window of a recording at a time, raw or as a spectrogram.

:func:`browse` returns a :class:`Browser`: a channel list, a start slider (seconds, absolute
recording time), a window duration, a raw / spectrogram switch and the figure. Every move
draws the new window through :func:`xnwb.plot.plot_window`, which selects the window first
and only then loads it, so a lazy recording reads only the chunks under the window and a lazy
transform computes only the blocks under it (plus their halo).

The figure is rendered to a PNG and placed in the viewer's output area by the viewer itself,
so it looks the same under any matplotlib backend and in scripts, tests or a kernel.
"""

from __future__ import annotations

import base64
import io
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from xnwb.accessors import sampling_rate
from xnwb.exceptions import ChannelNotFoundError

__all__ = ["RAW", "SPECTROGRAM", "Browser", "browse", "default_decim"]

RAW = "raw"
SPECTROGRAM = "spectrogram"
NO_CHANNEL = "no channel selected: pick one or more in the channel list"
_DEFAULT_CHANNELS = 4  # shown at first when ``channels`` is not given
_NO_TRANSFORM = "no spectrogram: pass tfr= (a transform of this recording) or freqs= to browse()"


def default_decim(rate: float, target: float = 1000.0) -> int:
    """The decimation giving an output rate near ``target`` Hz (1, for slower input).

    Examples
    --------
    >>> default_decim(30000.0), default_decim(2500.0), default_decim(500.0)
    (30, 2, 1)
    """
    return max(1, round(float(rate) / float(target)))


def browse(
    obj: xr.DataArray | xr.Dataset,
    *,
    start: float | None = None,
    duration: float = 1.0,
    channels: Sequence[Any] | None = None,
    view: str = RAW,
    tfr: xr.DataArray | xr.Dataset | None = None,
    freqs: Any = None,
    n_cycles: float | Any = 7.0,
    decim: int | None = None,
) -> Browser:
    """A notebook viewer of ``obj``: pick channels and a window, see traces or a spectrogram.

    Each move (start, duration, channels, view) loads only the new window: on a lazy recording
    only the chunks under it are read, on a lazy transform only its blocks under the window
    (plus the wavelet halo) are computed. Needs ``ipywidgets`` (``pip install 'xnwb[widgets]'``).

    Parameters
    ----------
    obj : Dataset or DataArray
        A recording with dims ``("time", "channel")`` (or ``("time",)``), time in seconds; a
        Dataset is browsed through its variable ``data``.
    start : float, optional
        First window's start in seconds of recording time (default: the recording's start).
    duration : float
        Window length in seconds, at most the recording's length.
    channels : sequence, optional
        Channel labels shown first (default: the first four).
    view : {"raw", "spectrogram"}
        The view shown first.
    tfr : Dataset or DataArray, optional
        The spectrogram to show, e.g. ``ds.ephys.morlet(freqs, decim=30)`` or its ``.zscore()``:
        lazy, with a ``frequency`` dim, every channel label of ``obj`` and ``obj``'s time range.
        Complex values are shown as power.
    freqs : array_like, optional
        Instead of ``tfr``: frequencies (Hz) of a lazy Morlet power transform,
        ``obj.ephys.morlet(freqs, n_cycles=n_cycles, decim=decim, output="power")``, in blocks
        about one window long (at least two wavelet halos), the cheapest for moving around.
    n_cycles : float or array_like
        Cycles per wavelet, with ``freqs``.
    decim : int, optional
        Decimation, with ``freqs``; default :func:`default_decim` (output near 1 kHz).

    Returns
    -------
    Browser
        Displays itself in a notebook; its widgets (``start``, ``duration``, ``channels``,
        ``view``) can be set from code, ``redraw()`` draws again, ``figure`` is the figure on
        display (``None`` while a message is shown).

    Raises
    ------
    ImportError
        Without ipywidgets.
    ValueError
        An unknown view, a non-positive duration, both ``tfr`` and ``freqs``, or a ``tfr``
        that does not match the recording (channels, time range, no frequency).
    xnwb.exceptions.ChannelNotFoundError
        (a ``KeyError``) for channel labels the recording does not have; it names them.

    Examples
    --------
    >>> import numpy as np
    >>> import xarray as xr
    >>> t = np.arange(5000) / 500.0
    >>> x = np.random.default_rng(0).standard_normal((5000, 3))
    >>> ds = xr.Dataset({"data": (("time", "channel"), x)},
    ...                 coords={"time": t, "channel": [10, 11, 12]})
    >>> viewer = browse(ds, duration=2.0, freqs=[10.0, 20.0, 40.0], n_cycles=5)
    >>> round(viewer.start.max, 6), len(viewer.figure.axes[0].lines)
    (8.0, 3)
    >>> viewer.start.value = 9.0  # clamped: the window ends with the record
    >>> viewer.start.value, float(viewer.figure.axes[0].get_xlim()[1])
    (8.0, 9.998)
    >>> viewer.duration.value = 4.0  # the start range follows the duration
    >>> round(viewer.start.max, 6), viewer.start.value
    (6.0, 6.0)
    >>> viewer.view.value = "spectrogram"
    >>> [ax.get_title(loc="left") for ax in viewer.figure.axes if ax.get_label() != "<colorbar>"]
    ['channel 10', 'channel 11', 'channel 12']
    >>> viewer.channels.value = ()
    >>> viewer.figure is None, viewer.message
    (True, 'no channel selected: pick one or more in the channel list')
    """
    return Browser(
        obj,
        start=start,
        duration=duration,
        channels=channels,
        view=view,
        tfr=tfr,
        freqs=freqs,
        n_cycles=n_cycles,
        decim=decim,
    )


class Browser:
    """The viewer :func:`browse` returns: widgets, the figure on display, and ``redraw()``.

    A plain object holding its ipywidgets layout as :attr:`widget` rather than a ``VBox``
    subclass: it can be defined (and documented, and type-checked) without ipywidgets
    installed, and its attributes cannot collide with a widget's many traits and methods.
    It displays itself in a notebook; put :attr:`widget` into a larger ipywidgets layout.

    Attributes
    ----------
    start : ipywidgets.FloatSlider
        Window start in seconds; its maximum is the record's end minus the duration.
    duration : ipywidgets.BoundedFloatText
        Window length in seconds, bounded by the record.
    channels : ipywidgets.SelectMultiple
        Channel labels shown (absent, ``None``, for a 1-D series).
    view : ipywidgets.ToggleButtons
        ``"raw"`` or ``"spectrogram"``; disabled, with a tooltip, without a transform.
    back, forward : ipywidgets.Button
        Move the window by one duration.
    output : ipywidgets.Output
        Shows the figure (a PNG) or a message.
    widget : ipywidgets.VBox
        The whole layout.
    data : DataArray
        The recording browsed.
    tfr : DataArray or None
        The (lazy) spectrogram browsed in the spectrogram view.
    figure : matplotlib.figure.Figure or None
        The last figure drawn, ``None`` when the output shows a message instead.
    message : str or None
        The message on display (no channel selected, or why a window could not be drawn).
    error : Exception or None
        The exception behind the last failed draw.
    draws : int
        How many times the output was drawn (a figure or a message).
    """

    def __init__(
        self,
        obj: xr.DataArray | xr.Dataset,
        *,
        start: float | None = None,
        duration: float = 1.0,
        channels: Sequence[Any] | None = None,
        view: str = RAW,
        tfr: xr.DataArray | xr.Dataset | None = None,
        freqs: Any = None,
        n_cycles: float | Any = 7.0,
        decim: int | None = None,
    ) -> None:
        try:
            import ipywidgets as widgets
        except ImportError as err:
            raise ImportError("browse() needs ipywidgets: pip install 'xnwb[widgets]'") from err

        self.data = _series(obj, "obj")
        self.figure: Any = None
        self.message: str | None = None
        self.error: Exception | None = None
        self.draws = 0
        self._quiet = False
        # Axes and figure-text positions (the shared frequency label, the channel-cap note) of
        # the last laid-out figure, by what decides its layout: a move that changes only the
        # window reuses them instead of running the layout engine again (constrained layout
        # measures every tick label, about half of a redraw).
        self._layout: tuple[Any, list[Any], list[Any]] | None = None

        self._first, self._end, self._step = _extent(self.data)
        length = self._end - self._first
        if not duration > 0:
            raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
        duration = min(float(duration), length)
        self.tfr = _spectrogram_source(self.data, tfr, freqs, n_cycles, decim, duration)
        if view not in (RAW, SPECTROGRAM):
            raise ValueError(f"view must be {RAW!r} or {SPECTROGRAM!r}, got {view!r}")
        if view == SPECTROGRAM and self.tfr is None:
            raise ValueError(f"view={SPECTROGRAM!r} needs a transform: {_NO_TRANSFORM}")

        self.start = widgets.FloatSlider(
            value=self._first,
            min=self._first,
            max=self._first,
            description="start (s)",
            continuous_update=False,
            readout_format=".3f",
            style={"description_width": "initial"},
            layout=widgets.Layout(width="420px"),
        )
        self.duration = widgets.BoundedFloatText(
            value=duration,
            min=min(duration, max(2 * self._step, 1e-3)),
            max=length,
            step=0.1,
            description="duration (s)",
            style={"description_width": "initial"},
            layout=widgets.Layout(width="170px"),
        )
        self._fit_start()
        self.start.value = self._clamp(self._first if start is None else float(start))
        self.back = widgets.Button(description="◀", tooltip="previous window")
        self.forward = widgets.Button(description="▶", tooltip="next window")
        for button in (self.back, self.forward):
            button.layout = widgets.Layout(width="40px")
        self.view = widgets.ToggleButtons(
            options=[RAW, SPECTROGRAM],
            value=view,
            disabled=self.tfr is None,
            tooltips=["traces", "spectrogram" if self.tfr is not None else _NO_TRANSFORM],
            tooltip=None if self.tfr is not None else _NO_TRANSFORM,
            style={"button_width": "90px"},
        )
        self.channels: Any = None
        labels = _labels(self.data)
        if labels is None and channels is not None:
            raise ChannelNotFoundError(
                f"channels {channels!r} asked for, but this series has no 'channel' dimension "
                f"(dims: {self.data.dims}); leave channels=None"
            )
        if labels is not None:
            chosen = labels[:_DEFAULT_CHANNELS] if channels is None else _known(channels, labels)
            self.channels = widgets.SelectMultiple(
                options=[(str(label), label) for label in labels],
                value=tuple(chosen),
                rows=min(8, max(2, len(labels))),
                description="channels",
                layout=widgets.Layout(width="200px"),
            )
        self.output = widgets.Output()

        self.start.observe(self._on_start, names="value")
        self.duration.observe(self._on_duration, names="value")
        self.view.observe(self._on_change, names="value")
        if self.channels is not None:
            self.channels.observe(self._on_change, names="value")
        self.back.on_click(lambda _: self._page(-1))
        self.forward.on_click(lambda _: self._page(+1))

        row = [self.start, self.back, self.forward, self.duration, self.view]
        controls = widgets.HBox([widgets.VBox([widgets.HBox(row[:3]), widgets.HBox(row[3:])])])
        if self.channels is not None:
            controls.children = (*controls.children, self.channels)
        self.widget = widgets.VBox([controls, self.output])
        self.redraw()

    # -- drawing --------------------------------------------------------------------------

    def redraw(self) -> Any:
        """Draw the current window (only it is loaded); returns the figure, or ``None``.

        ``None`` when no channel is selected or the window cannot be drawn: the output then
        shows why (see :attr:`message` and :attr:`error`).
        """
        import matplotlib.pyplot as plt

        from xnwb.plot import plot_window

        self.draws += 1
        chosen = None if self.channels is None else list(self.channels.value)
        if chosen == []:
            self._show_message(NO_CHANNEL)
            return None
        source = self.tfr if self.view.value == SPECTROGRAM else self.data
        try:
            figure = plot_window(source, self.start.value, self.duration.value, chosen)
        except Exception as err:  # shown in the output: a widget callback cannot raise to you
            self._show_message(f"could not draw this window: {type(err).__name__}: {err}", err)
            return None
        key = (
            self.view.value,
            tuple(chosen or ()),
            self.duration.value,
            len(figure.axes),
            len(figure.texts),
        )
        reuse = self._layout is not None and self._layout[0] == key
        if reuse:
            figure.set_layout_engine("none")
            for ax, position in zip(figure.axes, self._layout[1], strict=True):
                ax.set_position(position)
            for text, position in zip(figure.texts, self._layout[2], strict=True):
                text.set_position(position)
        try:
            png = _render_png(figure)
        finally:
            plt.close(figure)  # no second copy from an inline backend; still inspectable
        if not reuse:
            self._layout = (
                key,
                [ax.get_position() for ax in figure.axes],
                [text.get_position() for text in figure.texts],
            )
        self.figure, self.message, self.error = figure, None, None
        self.output.outputs = (
            {
                "output_type": "display_data",
                "data": {
                    "image/png": base64.b64encode(png).decode("ascii"),
                    "text/plain": f"<{self.view.value} view, {self.start.value:.3f} s "
                    f"+ {self.duration.value:g} s>",
                },
                "metadata": {},
            },
        )
        return figure

    def _show_message(self, message: str, error: Exception | None = None) -> None:
        self.figure, self.message, self.error = None, message, error
        outputs: list[dict[str, Any]] = [
            {"output_type": "stream", "name": "stdout", "text": message + "\n"}
        ]
        if error is not None:
            text = "".join(traceback.format_exception(error))
            outputs.append({"output_type": "stream", "name": "stderr", "text": text})
        self.output.outputs = tuple(outputs)

    # -- moves ----------------------------------------------------------------------------

    def _on_start(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self.redraw()

    def _on_duration(self, change: dict[str, Any]) -> None:
        self._fit_start()  # may clamp the start: one redraw for both
        self.redraw()

    def _on_change(self, change: dict[str, Any]) -> None:
        self.redraw()

    def _page(self, direction: int) -> None:
        self.start.value = self._clamp(self.start.value + direction * self.duration.value)

    def _clamp(self, start: float) -> float:
        return float(min(max(start, self.start.min), self.start.max))

    def _fit_start(self) -> None:
        """Bound the start by ``end - duration`` without drawing (the caller draws)."""
        duration = self.duration.value
        self._quiet = True
        try:
            top = max(self._first, self._end - duration)
            if top >= self.start.max:
                self.start.max = top
            else:  # lower the value first: the slider would clamp it, but announce it
                self.start.value = min(self.start.value, top)
                self.start.max = top
            self.start.step = max(duration / 10, self._step)
        finally:
            self._quiet = False

    # -- display --------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        view = self.view.value
        return (
            f"<xnwb Browser: {view} view, {self.start.value:.3f}–"
            f"{self.start.value + self.duration.value:.3f} s of {self._first:g}–{self._end:g} s>"
        )


# -- helpers ------------------------------------------------------------------------------


def _render_png(figure: Any) -> bytes:
    """The figure as PNG bytes, drawn once.

    ``savefig`` draws a figure twice when it has a layout engine (once to lay it out, once to
    render), and a figure whose layout is reused still carries a placeholder engine; drawing
    on an Agg canvas and encoding the pixels with a fast zlib level halves a redraw.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(canvas.buffer_rgba())).save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def _series(obj: Any, name: str) -> xr.DataArray:
    if isinstance(obj, xr.Dataset):
        if "data" not in obj.data_vars:
            raise ValueError(
                f"{name}: the Dataset has no variable 'data' to browse (variables: "
                f"{list(obj.data_vars)}); pass the DataArray to browse instead, e.g. ds[name]"
            )
        obj = obj["data"]
    if not isinstance(obj, xr.DataArray):
        raise TypeError(f"{name} must be an xarray Dataset or DataArray, got {type(obj).__name__}")
    if "time" not in obj.dims:
        raise ValueError(f"{name} has no 'time' dimension to browse (dims: {obj.dims})")
    return obj


def _extent(da: xr.DataArray) -> tuple[float, float, float]:
    """(first sample time, end of the record, sample step) in seconds, without building times."""
    n = da.sizes["time"]
    index = da.xindexes.get("time")
    if isinstance(index, xr.indexes.RangeIndex):
        first, step = float(index.start), float(index.step)
    elif "time" in da.coords and n:
        ends = da["time"].isel(time=[0, -1]).values
        if ends.dtype.kind not in "iuf":
            raise ValueError(f"browse() needs time in seconds, got a {ends.dtype} time axis")
        first = float(ends[0])
        step = float(ends[1] - ends[0]) / (n - 1) if n > 1 else 0.0
    else:
        raise ValueError("browse() needs a 'time' coordinate in seconds")
    if n < 2 or not step > 0:
        raise ValueError(f"browse() needs at least two increasing samples, got {n}")
    return first, first + n * step, step


def _labels(da: xr.DataArray) -> list[Any] | None:
    if "channel" not in da.dims:
        return None
    if "channel" in da.coords:
        return np.asarray(da["channel"].values).tolist()
    return list(range(da.sizes["channel"]))


def _known(channels: Sequence[Any], labels: list[Any]) -> list[Any]:
    if isinstance(channels, str) or not isinstance(channels, Sequence | np.ndarray):
        channels = [channels]
    chosen = np.asarray(channels).tolist()
    missing = [c for c in chosen if c not in labels]
    if missing:
        shown = labels if len(labels) <= 12 else [*labels[:12], "..."]
        raise ChannelNotFoundError(
            f"channels {missing} are not in this recording; its {len(labels)} channel labels "
            f"(electrode ids, not positions) are {shown}"
        )
    return chosen


def _spectrogram_source(
    series: xr.DataArray, tfr: Any, freqs: Any, n_cycles: Any, decim: int | None, duration: float
) -> xr.DataArray | None:
    if tfr is not None and freqs is not None:
        raise ValueError("pass tfr= (a transform to show) or freqs= (to compute one), not both")
    if tfr is None and freqs is None:
        if decim is not None:
            raise ValueError("decim= applies to a transform computed from freqs=; pass freqs too")
        return None
    if tfr is None:
        from xnwb.wavelets import morlet_kernels

        rate = sampling_rate(series)
        q = default_decim(rate) if decim is None else int(decim)
        # Blocks for looking, not for a whole pass: a window computes the blocks under it,
        # each with a halo either side, so blocks about a window long (at least two halos)
        # cost the least per move.
        halo = morlet_kernels(rate, freqs, n_cycles).halo
        block = {"time": max(2 * halo, round(duration * rate))}
        return series.ephys.morlet(freqs, n_cycles=n_cycles, decim=q, output="power", chunks=block)
    tfr = _series(tfr, "tfr")
    if "frequency" not in tfr.dims:
        raise ValueError(
            f"tfr has no 'frequency' dimension (dims: {tfr.dims}); pass a transform such as "
            "ds.ephys.morlet(freqs) or its .zscore()"
        )
    labels, have = _labels(series), _labels(tfr)
    if labels is not None:
        missing = [c for c in labels if have is None or c not in have]
        if missing:
            raise ValueError(
                f"tfr lacks channels {missing[:12]} of the recording; pass a transform of the "
                "whole recording (ds.ephys.morlet(...))"
            )
    first, end, step = _extent(series)
    t_first, t_end, t_step = _extent(tfr)
    tolerance = t_step + step
    if abs(t_first - first) > tolerance or abs(t_end - end) > tolerance:
        raise ValueError(
            f"tfr covers {t_first:g}–{t_end:g} s but the recording {first:g}–{end:g} s; "
            "pass a transform of the whole recording (ds.ephys.morlet(...))"
        )
    return tfr
