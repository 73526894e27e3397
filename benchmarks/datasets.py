"""Generated NWB recordings for the benchmarks (written once, kept in ``benchmarks/_data``).

Run as a script to (re)create them: ``python benchmarks/datasets.py``.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

DATA_DIR = Path(os.environ.get("XNWB_BENCH_DATA", Path(__file__).parent / "_data"))


def _signal_block(n_times: int, n_channels: int, start: int, rate: float, rng) -> np.ndarray:
    """int16 counts resembling wideband ephys: an LFP rhythm plus noise."""
    t = (start + np.arange(n_times)) / rate
    lfp = 300 * np.sin(2 * np.pi * 7.0 * t)[:, None] * np.linspace(0.5, 1.5, n_channels)
    noise = rng.normal(0, 40, (n_times, n_channels))
    return np.clip(lfp + noise, -32768, 32767).astype(np.int16)


def write_recording(
    path: Path,
    *,
    n_channels: int = 64,
    rate: float = 30_000.0,
    duration: float = 260.0,
    chunks: tuple[int, int] = (2000, 8),
    compression: str | None = "gzip",
    zeros: bool = False,
) -> Path:
    """An NWB file written by pynwb holding one int16 ElectricalSeries, block by block."""
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from hdmf.data_utils import GenericDataChunkIterator
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries

    n_times = int(duration * rate)
    rng = np.random.default_rng(0)

    class Blocks(GenericDataChunkIterator):
        def _get_data(self, selection):
            rows, cols = selection
            start = rows.start or 0
            stop = rows.stop if rows.stop is not None else n_times
            if zeros:
                return np.zeros((stop - start, n_channels), np.int16)[:, cols]
            return _signal_block(stop - start, n_channels, start, rate, rng)[:, cols]

        def _get_maxshape(self):
            return (n_times, n_channels)

        def _get_dtype(self):
            return np.dtype("int16")

    nwbfile = NWBFile(
        session_description="xnwb benchmark recording",
        identifier=path.stem,
        session_start_time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    device = nwbfile.create_device(name="probe")
    group = nwbfile.create_electrode_group("shank", "benchmark", "CA1", device)
    for i in range(n_channels):
        nwbfile.add_electrode(group=group, location="CA1", x=0.0, y=float(i), z=0.0)
    region = nwbfile.create_electrode_table_region(list(range(n_channels)), "all")
    buffer_rows = chunks[0] * max(1, 60_000 // chunks[0])
    iterator = Blocks(buffer_shape=(buffer_rows, n_channels), chunk_shape=chunks)
    io_kwargs = {"compression": compression, "shuffle": True} if compression else {}
    data = H5DataIO(iterator, **io_kwargs) if compression else iterator
    nwbfile.add_acquisition(
        ElectricalSeries(
            name="ElectricalSeries", data=data, electrodes=region, rate=rate, conversion=0.195e-6
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with NWBHDF5IO(str(tmp), "w") as io:
        io.write(nwbfile)
    tmp.rename(path)
    return path


def recording_1gb() -> Path:
    """64 ch × 30 kHz × 260 s int16 (~1 GB), gzip+shuffle chunks of (2000, 8): 31,200 chunks."""
    path = DATA_DIR / "rec_64ch_30khz_1gb.nwb"
    if not path.exists():
        tic = time.perf_counter()
        write_recording(path)
        print(f"wrote {path} in {time.perf_counter() - tic:.0f} s")
    return path


def recording_100k_chunks() -> Path:
    """A recording whose data has ~100k chunks (1024 × 1), for index-build timing."""
    path = DATA_DIR / "rec_100k_chunks.nwb"
    if not path.exists():
        write_recording(
            path,
            n_channels=64,
            rate=30_000.0,
            duration=1_600_000 / 30_000.0,
            chunks=(1024, 1),
            zeros=True,
        )
    return path


def recording_1m_chunks() -> Path:
    """64 ch × 30 kHz × 559 s of zeros in (1024, 1) chunks: 1,048,576 chunks (~1.5 min)."""
    path = DATA_DIR / "rec_1m_chunks.nwb"
    if not path.exists():
        tic = time.perf_counter()
        write_recording(
            path,
            n_channels=64,
            rate=30_000.0,
            duration=1024 * 16_384 / 30_000.0,
            chunks=(1024, 1),
            zeros=True,
        )
        print(f"wrote {path} in {time.perf_counter() - tic:.0f} s")
    return path


def recording_large_chunks() -> Path:
    """64 ch × 30 kHz × 60 s int16 in 100 chunks of (18000, 64) (~2.3 MB each), gzip+shuffle."""
    path = DATA_DIR / "rec_100_large_chunks.nwb"
    if not path.exists():
        tic = time.perf_counter()
        write_recording(path, n_channels=64, rate=30_000.0, duration=60.0, chunks=(18_000, 64))
        print(f"wrote {path} in {time.perf_counter() - tic:.0f} s")
    return path


if __name__ == "__main__":
    for make in (recording_100k_chunks, recording_1gb, recording_1m_chunks):
        p = make()
        print(p, f"{p.stat().st_size / 1e6:.0f} MB")
