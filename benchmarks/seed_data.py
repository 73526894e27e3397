"""A seed-scale NWB recording for ``bench_seed.py``: 124 channels x 30 kHz int16 and its LFP.

Written once into ``benchmarks/_data`` (git-ignored) by pynwb, chunked as hdmf's default
``GenericDataChunkIterator`` chunks it (``chunk_mb=10``: the iterator's own default chunk
shape, printed) with gzip + shuffle, as neuroconv writes by default. The 1 kHz LFP (124 ch) goes
into the same file at ``processing/ecephys/LFP/ElectricalSeries``.

The signal is synthetic but looks like a hippocampal recording: a 1/f background (a sum of
equal-variance AR(1) processes with corners at 1, 2, 4, ... 1024 Hz, from 6 latent sources
mixed into the channels with smooth depth profiles), a theta rhythm (7.5 +- 0.5 Hz, amplitude
and phase varying with depth and slowly in time), gamma bursts (35-90 Hz, 30-80 ms Gaussian
envelopes, ~2 per second, each over ~20 neighbouring channels) and white noise per channel.
It is generated block by block (one ~38 s block of all channels at a time, the filters' state
carried over), so memory stays bounded (~2 GB) whatever the duration. The LFP holds the same
components at 1 kHz (the sources low-passed at 300 Hz and decimated; theta and gamma evaluated at
the LFP's sample times; its own, smaller, white noise).

Run ``python benchmarks/seed_data.py --minutes 20`` (the default; ~9 GB raw). The file is
written to a ``.tmp`` name and renamed when complete.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

try:
    from datasets import DATA_DIR
except ImportError:  # imported as benchmarks.seed_data
    from benchmarks.datasets import DATA_DIR

N_CHANNELS = 124
RATE = 30_000.0
LFP_RATE = 1_000.0
CONVERSION = 0.195e-6  # V per count (Intan)
N_SOURCES = 6
CORNERS = 2.0 ** np.arange(11)  # 1 ... 1024 Hz: equal variance per octave -> 1/f
UV = 1e-6 / CONVERSION  # counts per microvolt


def seed_path(minutes: float) -> Path:
    """Where the recording of ``minutes`` minutes lives (it may not exist yet)."""
    return DATA_DIR / f"seed_124ch_30khz_{minutes:g}min.nwb"


class SeedSignal:
    """The synthetic recording, generated in consecutive blocks of samples."""

    def __init__(self, n_times: int, seed: int = 7) -> None:
        self.n_times = n_times
        rng = np.random.default_rng(seed)
        depth = np.arange(N_CHANNELS) / (N_CHANNELS - 1)
        centres = np.linspace(0.0, 1.0, N_SOURCES)
        signs = rng.choice([-1.0, 1.0], N_SOURCES)
        # 1/f background: ~60 uV rms in total, smooth over depth
        profiles = signs[:, None] * np.exp(-((depth[None] - centres[:, None]) ** 2) / 0.08)
        self.mixing = (profiles / np.sqrt(N_SOURCES) * 60 * UV).astype(np.float32)  # (src, ch)
        self.theta_gain = (150 * UV * np.cos(1.3 * np.pi * depth)).astype(np.float32)
        self.theta_lag = (0.6 * depth).astype(np.float32)  # radians of phase lag with depth
        self.noise_sd = np.float32(10 * UV)
        # gamma bursts: Poisson events over the whole recording, drawn once
        duration = n_times / RATE
        n_bursts = rng.poisson(2.0 * duration)
        self.bursts = np.rec.fromarrays(
            [
                np.sort(rng.uniform(0, duration, n_bursts)),
                rng.uniform(35, 90, n_bursts),
                rng.uniform(0.03, 0.08, n_bursts) / 2.355,  # FWHM -> sigma
                rng.uniform(30, 80, n_bursts) * UV,
                rng.uniform(0, N_CHANNELS - 1, n_bursts),
                rng.uniform(0, 2 * np.pi, n_bursts),
            ],
            names="t,freq,sigma,amp,centre,phase",
        )
        from scipy.signal import butter

        self.poles = np.exp(-2 * np.pi * CORNERS / RATE)
        self.ar_state = np.zeros((len(CORNERS), N_SOURCES))
        self.lowpass = butter(4, 300.0, fs=RATE, output="sos")
        self.lp_state = np.zeros((self.lowpass.shape[0], 2, N_SOURCES))
        self.next_start = 0
        self.rng = np.random.default_rng(seed + 1)

    def _sources(self, n: int) -> np.ndarray:
        from scipy.signal import lfilter

        out = np.zeros((n, N_SOURCES))
        for k, a in enumerate(self.poles):
            w = self.rng.standard_normal((n, N_SOURCES))
            y, self.ar_state[k] = lfilter(
                [np.sqrt(1 - a * a)], [1.0, -a], w, axis=0, zi=self.ar_state[k][None]
            )
            out += y
        return out / np.sqrt(len(self.poles))

    def _theta(self, t: np.ndarray) -> np.ndarray:
        phase = 2 * np.pi * 7.5 * t - 0.5 / 0.05 * np.cos(2 * np.pi * 0.05 * t)
        envelope = 1 + 0.5 * np.sin(2 * np.pi * 0.021 * t + 1.0)
        phase = phase.astype(np.float32)[:, None] - self.theta_lag[None]
        return (envelope.astype(np.float32)[:, None] * self.theta_gain[None]) * np.sin(phase)

    def _gamma(self, t0: float, t: np.ndarray, rate: float, out: np.ndarray) -> None:
        t1 = t0 + len(t) / rate
        b = self.bursts
        hit = np.flatnonzero((b.t + 4 * b.sigma > t0) & (b.t - 4 * b.sigma < t1))
        channels = np.arange(N_CHANNELS)
        for i in hit:
            lo = max(0, int(np.floor((b.t[i] - 4 * b.sigma[i] - t0) * rate)))
            hi = min(len(t), int(np.ceil((b.t[i] + 4 * b.sigma[i] - t0) * rate)))
            tt = t[lo:hi] - b.t[i]
            wave = np.exp(-(tt**2) / (2 * b.sigma[i] ** 2)) * np.cos(
                2 * np.pi * b.freq[i] * tt + b.phase[i]
            )
            space = b.amp[i] * np.exp(-((channels - b.centre[i]) ** 2) / (2 * 6.0**2))
            out[lo:hi] += np.outer(wave, space).astype(np.float32)

    def block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, int]:
        """int16 counts for samples ``[start, stop)``, plus the LFP samples in that range.

        Blocks must come in order (the filters carry state). Returns ``(raw, lfp, lfp_start)``
        with ``lfp`` the 1 kHz samples whose times fall in the block.
        """
        if start != self.next_start:
            raise ValueError(f"blocks must come in order: expected {self.next_start}, got {start}")
        n = stop - start
        t = (start + np.arange(n)) / RATE
        sources = self._sources(n)
        x = sources.astype(np.float32) @ self.mixing
        x += self._theta(t)
        self._gamma(start / RATE, t, RATE, x)
        x += self.noise_sd * self.rng.standard_normal((n, N_CHANNELS), dtype=np.float32)
        raw = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
        del x
        # LFP: the same components at 1 kHz
        from scipy.signal import sosfilt

        low, self.lp_state = sosfilt(self.lowpass, sources, axis=0, zi=self.lp_state)
        q = int(RATE // LFP_RATE)
        first = (-start) % q
        idx = np.arange(first, n, q)
        tl = t[idx]
        y = low[idx].astype(np.float32) @ self.mixing
        y += self._theta(tl)
        self._gamma(tl[0] if len(tl) else 0.0, tl, LFP_RATE, y)
        y += np.float32(0.16) * self.noise_sd * self.rng.standard_normal(y.shape, np.float32)
        lfp = np.clip(np.rint(y), -32768, 32767).astype(np.int16)
        self.next_start = stop
        return raw, lfp, (start + first) // q


def write_seed(path: Path, minutes: float) -> Path:
    """Write the recording (raw + LFP) to ``path`` via a ``.tmp`` file; return ``path``."""
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from hdmf.data_utils import GenericDataChunkIterator
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import LFP, ElectricalSeries

    n_times = round(minutes * 60 * RATE)
    n_lfp = -(-n_times // int(RATE // LFP_RATE))
    signal = SeedSignal(n_times)
    lfp = np.zeros((n_lfp, N_CHANNELS), np.int16)  # 1 kHz x 124 ch: 15 MB per minute
    progress = {"t": time.perf_counter(), "done": 0}

    class Raw(GenericDataChunkIterator):
        def _get_data(self, selection):
            rows, cols = selection
            start, stop = rows.start or 0, rows.stop if rows.stop is not None else n_times
            raw, low, first = signal.block(start, stop)
            lfp[first : first + len(low)] = low
            progress["done"] = stop
            elapsed = time.perf_counter() - progress["t"]
            print(f"  {stop / n_times:6.1%} of the raw data, {elapsed:5.0f} s", flush=True)
            return raw[:, cols]

        def _get_maxshape(self):
            return (n_times, N_CHANNELS)

        def _get_dtype(self):
            return np.dtype("int16")

    class Lfp(GenericDataChunkIterator):
        def _get_data(self, selection):
            return lfp[selection]

        def _get_maxshape(self):
            return lfp.shape

        def _get_dtype(self):
            return lfp.dtype

    # the iterator's own default chunk shape (chunk_mb=10); a buffer of one chunk-row of time
    # by all channels keeps memory bounded and makes the blocks come in time order
    probe = Raw()
    chunk_shape = probe.chunk_shape
    raw_iter = Raw(buffer_shape=(chunk_shape[0], N_CHANNELS), chunk_shape=chunk_shape)
    print(f"raw: {(n_times, N_CHANNELS)} int16, chunks {chunk_shape} (hdmf default, chunk_mb=10)")

    nwbfile = NWBFile(
        session_description="xnwb seed-scale benchmark recording (synthetic)",
        identifier=path.stem,
        session_start_time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    device = nwbfile.create_device(name="probe")
    group = nwbfile.create_electrode_group("shank", "124-channel linear probe", "CA1", device)
    for i in range(N_CHANNELS):
        nwbfile.add_electrode(group=group, location="CA1", x=0.0, y=20.0 * i, z=0.0)
    region = nwbfile.create_electrode_table_region(list(range(N_CHANNELS)), "all")
    nwbfile.add_acquisition(
        ElectricalSeries(
            name="ElectricalSeries",
            data=H5DataIO(raw_iter, compression="gzip", shuffle=True),
            electrodes=region,
            rate=RATE,
            conversion=CONVERSION,
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tic = time.perf_counter()
    with NWBHDF5IO(str(tmp), "w") as io:
        io.write(nwbfile)
    print(f"raw written in {time.perf_counter() - tic:.0f} s")
    if signal.next_start != n_times:
        raise RuntimeError(f"raw data incomplete: {signal.next_start} of {n_times} samples")

    # the LFP, now complete in memory, appended to the same file
    with NWBHDF5IO(str(tmp), "a") as io:
        nwbfile = io.read()
        region = nwbfile.create_electrode_table_region(list(range(N_CHANNELS)), "all (LFP)")
        lfp_iter = Lfp()
        print(f"lfp: {lfp.shape} int16, chunks {lfp_iter.chunk_shape} (hdmf default)")
        series = ElectricalSeries(
            name="ElectricalSeries",
            data=H5DataIO(lfp_iter, compression="gzip", shuffle=True),
            electrodes=region,
            rate=LFP_RATE,
            conversion=CONVERSION,
            filtering="synthetic: the raw components below 300 Hz at 1 kHz",
        )
        module = nwbfile.create_processing_module("ecephys", "LFP at 1 kHz")
        module.add(LFP(electrical_series=series))
        io.write(nwbfile)
    tmp.rename(path)
    print(f"wrote {path}: {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - tic:.0f} s")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="duration (default 20)")
    parser.add_argument("--force", action="store_true", help="rewrite an existing file")
    args = parser.parse_args(argv)
    path = seed_path(args.minutes)
    if path.exists() and not args.force:
        print(f"{path} exists ({path.stat().st_size / 1e9:.2f} GB); --force rewrites it")
        return
    write_seed(path, args.minutes)


if __name__ == "__main__":
    main()
