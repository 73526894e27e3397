"""xnwb: lazy, labeled xarray access to HDF5 NWB recordings through Zarr references.

Open a recording with ``xr.open_dataset(path_or_url, engine="nwbzarr")``; importing
xnwb (or opening with that engine) registers the ``ephys``/``nwb`` accessors.
"""

from __future__ import annotations

try:  # registers the accessors
    from xnwb import accessors as _accessors  # noqa: F401
except ImportError:  # pragma: no cover - accessors land with the tfr issue
    pass
from xnwb.api import build_index, list_series
from xnwb.exceptions import (
    ChunkDecodeError,
    ChunkReadError,
    NotNWBError,
    NotTimeSeriesError,
    SeriesNotFoundError,
    UnsafeReferenceError,
    UnsupportedFilterError,
    XnwbError,
)
from xnwb.refs import ReferenceIndex

__version__ = "0.1.0.dev0"

__all__ = [
    "ChunkDecodeError",
    "ChunkReadError",
    "NotNWBError",
    "NotTimeSeriesError",
    "ReferenceIndex",
    "SeriesNotFoundError",
    "UnsafeReferenceError",
    "UnsupportedFilterError",
    "XnwbError",
    "__version__",
    "build_index",
    "list_series",
]
