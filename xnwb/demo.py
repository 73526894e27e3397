"""Write small, realistic NWB recordings with pynwb (for demos, docs and tests).

Needs ``pynwb`` (``pip install 'xnwb[demo]'``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

__all__ = ["Burst", "demo_bursts", "demo_signal", "write_demo_recording"]


@dataclass(frozen=True)
class Burst:
    """An oscillation burst put into the demo signal: which band, where and when.

    Attributes
    ----------
    band : str
        Name of the rhythm ("theta", "beta", "gamma").
    frequency : float
        Its frequency in Hz.
    low, high : float
        The band (Hz) a summary averages over.
    channel : int
        Channel (position and electrode id) that carries it.
    start, stop : float
        Seconds from the start of the recording.
    amplitude : float
        Peak amplitude in volts.
    """

    band: str
    frequency: float
    low: float
    high: float
    channel: int
    start: float
    stop: float
    amplitude: float


def demo_bursts(duration: float, n_channels: int) -> list[Burst]:
    """Where and when the demo signal carries its theta, beta and gamma bursts.

    The bursts sit at fixed fractions of the recording, each on its own channel where there
    are channels enough (theta on channel 0, beta on the middle one, gamma on the last), so a
    spectrogram shows each rhythm in one place only.

    Examples
    --------
    >>> [(b.band, b.channel, b.start, b.stop) for b in demo_bursts(20.0, 16)]
    [('theta', 0, 4.0, 7.0), ('beta', 8, 10.0, 11.0), ('gamma', 15, 15.0, 15.6)]
    >>> [b.channel for b in demo_bursts(10.0, 1)]
    [0, 0, 0]
    """
    last = n_channels - 1
    plan = [  # band, Hz, band edges, channel, start and length as fractions of the record
        ("theta", 7.0, 5.0, 9.0, 0, 0.20, 0.15, 60e-6),
        ("beta", 20.0, 15.0, 25.0, n_channels // 2, 0.50, 0.05, 30e-6),
        ("gamma", 60.0, 45.0, 75.0, last, 0.75, 0.03, 20e-6),
    ]
    return [
        Burst(band, f, lo, hi, ch, round(a * duration, 6), round((a + n) * duration, 6), amp)
        for band, f, lo, hi, ch, a, n, amp in plan
    ]


def demo_signal(n_times: int, n_channels: int, rate: float, seed: int = 0) -> np.ndarray:
    """A synthetic LFP-like signal in volts: a 1/f background with theta, beta, gamma bursts.

    The background has a power spectrum falling as 1/f (about 20 µV rms per channel), as
    recorded field potentials do; the bursts are those of :func:`demo_bursts`, each a
    sinusoid under a smooth (Tukey) envelope.

    Examples
    --------
    >>> x = demo_signal(20_000, 4, 1000.0)
    >>> x.shape, bool(15e-6 < x[:, 1].std() < 40e-6)
    ((20000, 4), True)
    """
    rng = np.random.default_rng(seed)
    duration = n_times / rate
    spectrum = np.fft.rfft(rng.standard_normal((n_times, n_channels)), axis=0)
    f = np.fft.rfftfreq(n_times, 1.0 / rate)
    spectrum *= 1.0 / np.sqrt(np.maximum(f, 1.0))[:, None]  # power ∝ 1/f above 1 Hz
    spectrum[0] = 0.0
    background = np.fft.irfft(spectrum, n=n_times, axis=0)
    background *= 20e-6 / max(float(background.std()), 1e-30)
    t = np.arange(n_times) / rate
    for burst in demo_bursts(duration, n_channels):
        inside = (t >= burst.start) & (t < burst.stop)
        envelope = np.zeros(n_times)
        envelope[inside] = _tukey(int(inside.sum()))
        background[:, burst.channel] += (
            burst.amplitude * envelope * np.sin(2 * np.pi * burst.frequency * t)
        )
    return background


def _tukey(n: int, taper: float = 0.25) -> np.ndarray:
    """A window flat in the middle with cosine edges (``taper`` of its length each side)."""
    if n <= 0:
        return np.zeros(0)
    x = np.linspace(0.0, 1.0, n)
    w = np.ones(n)
    edge = x < taper
    w[edge] = 0.5 * (1 - np.cos(np.pi * x[edge] / taper))
    edge = x > 1 - taper
    w[edge] = 0.5 * (1 - np.cos(np.pi * (1 - x[edge]) / taper))
    return w


def write_demo_recording(
    path: str | os.PathLike[str],
    *,
    duration: float = 10.0,
    n_channels: int = 8,
    rate: float = 1000.0,
    chunks: tuple[int, int] | None = None,
    conversion: float = 1e-6 / 4,
    lfp_rate: float | None = 250.0,
    compression: Any = "gzip",
    seed: int = 0,
) -> str:
    """Write an NWB file with an int16 ElectricalSeries (and an LFP series).

    Parameters
    ----------
    path
        Output file.
    duration
        Seconds of signal.
    n_channels
        Number of electrodes/channels.
    rate
        Sampling rate of ``acquisition/ElectricalSeries`` in Hz.
    chunks
        HDF5 chunk shape (time, channel); default ``(rate, n_channels)`` clipped.
    conversion
        Volts per stored count.
    lfp_rate
        Rate of ``processing/ecephys/LFP/ElectricalSeries``; ``None`` leaves it out.
    compression
        h5py compression (``"gzip"``, ``None`` for contiguous storage, …).
    seed
        Random seed of the signal.

    Returns
    -------
    str
        The path written.

    Examples
    --------
    >>> import os, tempfile
    >>> p = write_demo_recording(os.path.join(tempfile.mkdtemp(), "demo.nwb"),
    ...                          duration=1.0, n_channels=4)
    >>> p.endswith("demo.nwb")
    True
    """
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import LFP, ElectricalSeries

    nwbfile = NWBFile(
        session_description="xnwb demo recording",
        identifier="xnwb-demo",
        session_start_time=datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
    )
    device = nwbfile.create_device(name="probe")
    group = nwbfile.create_electrode_group(
        name="shank0", description="demo shank", location="CA1", device=device
    )
    for i in range(n_channels):
        nwbfile.add_electrode(group=group, location="CA1", x=0.0, y=20.0 * i, z=0.0)
    region = nwbfile.create_electrode_table_region(list(range(n_channels)), "all electrodes")

    n_times = round(duration * rate)
    volts = demo_signal(n_times, n_channels, rate, seed)
    counts = np.clip(np.round(volts / conversion), -32768, 32767).astype(np.int16)
    if compression is None:
        data: Any = counts
    else:
        chunk_shape = chunks or (min(n_times, int(rate)), n_channels)
        data = H5DataIO(counts, chunks=chunk_shape, compression=compression, shuffle=True)
    nwbfile.add_acquisition(
        ElectricalSeries(
            name="ElectricalSeries",
            data=data,
            electrodes=region,
            rate=float(rate),
            starting_time=0.0,
            conversion=conversion,
            description="demo wideband signal",
        )
    )
    if lfp_rate is not None:
        step = max(1, round(rate / lfp_rate))
        lfp_data = volts[::step].astype(np.float32)
        module = nwbfile.create_processing_module("ecephys", "processed ephys")
        module.add(
            LFP(
                electrical_series=ElectricalSeries(
                    name="ElectricalSeries",
                    data=H5DataIO(lfp_data, compression="gzip"),
                    electrodes=region,
                    rate=float(rate / step),
                    starting_time=0.0,
                    description="demo LFP",
                )
            )
        )
    with NWBHDF5IO(os.fspath(path), "w") as io:
        io.write(nwbfile)
    return os.fspath(path)
