"""The lazy xarray backend array over a referenced dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
from xarray.backends import BackendArray
from xarray.core import indexing

from xnwb.read import read_selection
from xnwb.refs import ArrayRef
from xnwb.source import ByteSource

__all__ = ["ReferenceBackendArray"]


class ReferenceBackendArray(BackendArray):
    """A dataset read by byte range on indexing; nothing is read before that.

    Parameters
    ----------
    ref
        References of the dataset.
    source
        Where its bytes live.
    path
        Dataset path inside the file, for messages.
    channel_scale
        Optional per-channel factors along axis 1 (NWB ``channel_conversion``),
        applied on read; the values then come out as float64.
    """

    def __init__(
        self,
        ref: ArrayRef,
        source: ByteSource,
        path: str,
        channel_scale: np.ndarray | None = None,
    ) -> None:
        self.ref = ref
        self.source = source
        self.path = path
        self.shape = tuple(ref.shape)
        self.channel_scale = None if channel_scale is None else np.asarray(channel_scale, float)
        self.dtype = np.dtype(np.float64) if self.channel_scale is not None else ref.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._getitem
        )

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        values = read_selection(self.ref, self.source, key, self.path)
        if self.channel_scale is None:
            return values
        channel_key = key[1] if len(key) > 1 else slice(None)
        scale = self.channel_scale[channel_key]
        if np.ndim(scale) == 0:
            return values * float(scale)
        # The stored channel axis is 1; an integer time index drops axis 0 before it. (Not
        # "the last axis": a (time, channel, sample) series has one after it.)
        axis = 0 if isinstance(key[0], int | np.integer) else 1
        shape = [1] * values.ndim
        shape[axis] = scale.size
        return values * scale.reshape(shape)

    def __repr__(self) -> str:
        return f"ReferenceBackendArray({self.path!r}, shape={self.shape}, dtype={self.dtype})"
