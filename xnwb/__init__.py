"""xnwb: lazy, labeled xarray access to HDF5 NWB recordings through Zarr references."""

from __future__ import annotations

__version__ = "0.1.0.dev0"
