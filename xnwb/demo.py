"""Write small, realistic NWB recordings with pynwb (for demos, docs and tests).

Needs ``pynwb`` (``pip install 'xnwb[demo]'``).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import numpy as np

__all__ = ["demo_signal", "write_demo_recording"]


def demo_signal(n_times: int, n_channels: int, rate: float, seed: int = 0) -> np.ndarray:
    """A synthetic LFP-like signal in volts: theta, gamma bursts, 1/f-ish noise.

    Examples
    --------
    >>> demo_signal(1000, 4, 1000.0).shape
    (1000, 4)
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_times) / rate
    theta = 80e-6 * np.sin(2 * np.pi * 7.0 * t)[:, None] * rng.uniform(0.5, 1.5, n_channels)
    burst = np.exp(-(((t % 2.0) - 1.0) ** 2) / (2 * 0.1**2))
    gamma = 20e-6 * (burst * np.sin(2 * np.pi * 40.0 * t))[:, None]
    noise = np.cumsum(rng.normal(0, 2e-6, (n_times, n_channels)), axis=0)
    noise -= np.linspace(noise[0], noise[-1], n_times)
    return theta + gamma + noise


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
    >>> p = write_demo_recording(tmp_path / "demo.nwb", duration=1.0, n_channels=4)
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
