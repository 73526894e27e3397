"""Errors raised by xnwb.

Every class subclasses a builtin exception, so code that already catches
``ValueError`` or ``OSError`` keeps working, while callers who care can catch
the specific xnwb error.
"""

from __future__ import annotations

__all__ = [
    "ChunkDecodeError",
    "ChunkReadError",
    "NotNWBError",
    "NotTimeSeriesError",
    "SeriesNotFoundError",
    "UnsafeReferenceError",
    "UnsupportedFilterError",
    "XnwbError",
]


class XnwbError(Exception):
    """Base class of every error raised by xnwb."""


class NotNWBError(XnwbError, ValueError):
    """The source is not an HDF5 file, or is HDF5 but not NWB."""


class SeriesNotFoundError(XnwbError, KeyError):
    """No time series at the requested path, or no unambiguous default."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0]) if self.args else ""


class NotTimeSeriesError(SeriesNotFoundError):
    """The requested group exists but is not an NWB time series."""


class UnsupportedFilterError(XnwbError, NotImplementedError):
    """An HDF5 filter in a dataset's pipeline that xnwb cannot decode."""


class ChunkReadError(XnwbError, OSError):
    """Fetching the bytes of a chunk failed (missing file, short read, network)."""


class ChunkDecodeError(XnwbError, ValueError):
    """The bytes of a chunk could not be decoded: corrupt data or bad checksum."""


class UnsafeReferenceError(XnwbError, ValueError):
    """A reference points outside the source the user opened."""


class TFRParameterError(XnwbError, ValueError):
    """Invalid time-frequency parameters: frequencies, cycles, decimation, output, wavelet."""


class SignalTooShortError(TFRParameterError):
    """The record along the time axis is shorter than the longest wavelet."""


class TimeAxisError(XnwbError, ValueError):
    """No time axis with a sampling rate: missing dimension, irregular samples, no ``rate``."""


class StatisticsMismatchError(XnwbError, ValueError):
    """Statistics passed to ``zscore(stats=...)`` do not fit the data they should normalise."""


# Errors of the time-frequency and z-scoring layer (xnwb.tfr, xnwb.stats, xnwb.accessors).
__all__ += [
    "SignalTooShortError",
    "StatisticsMismatchError",
    "TFRParameterError",
    "TimeAxisError",
]


class ChannelNotFoundError(XnwbError, KeyError):
    """Channel labels asked for that the series does not have (labels, not positions)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0]) if self.args else ""


__all__ += ["ChannelNotFoundError"]


class SourceChangedError(ChunkReadError):
    """The file changed since it was opened (or since its index was built).

    Raised instead of reading a replaced or rewritten file with the old layout: the bytes
    at the recorded offsets would belong to another version of the file. Reopen the
    source (and rebuild an exported ``index=``) to read the new version.
    """


class RemoteTimeoutError(ChunkReadError):
    """A remote server did not answer (or stopped sending) within the configured timeouts.

    Not a :class:`TimeoutError`: fsspec's event-loop bridge would replace any such error
    by its own bare ``FSTimeoutError``, losing the URL and the byte range.
    """


__all__ += ["RemoteTimeoutError", "SourceChangedError"]


class XnwbWarning(UserWarning):
    """Base class of the warnings xnwb gives: the result is computed, but look at it."""


class DegenerateStatisticsWarning(XnwbWarning):
    """Z-scores that cannot be formed: zero-variance channels, NaN samples in the statistics."""


class TimeAxisWarning(XnwbWarning):
    """A series opened with a defective time axis (NaN or decreasing timestamps)."""


__all__ += ["DegenerateStatisticsWarning", "TimeAxisWarning", "XnwbWarning"]


class UnindexedDataError(SeriesNotFoundError):
    """A series whose data the index had to leave out, with the reason.

    Compound dtypes, data in external raw files, HDF5 virtual datasets, an external
    link to another file, or a filter HDF5 itself lacks.
    """


class ExternalDataError(NotTimeSeriesError):
    """A series whose samples live in external files (``external_file``), not in the NWB file."""


class CacheWarning(XnwbWarning):
    """The index cache could not be used (damaged entry, unwritable folder): open went on."""


__all__ += ["CacheWarning", "ExternalDataError", "UnindexedDataError"]


class MalformedReferenceError(UnsafeReferenceError):
    """A reference file that cannot be understood: the message names the key and the field.

    Raised while opening, before any chunk is read; a subclass of
    :class:`UnsafeReferenceError` because a hostile file is often also malformed.
    """


class ReferenceWarning(XnwbWarning):
    """A reference file opens, but part of it cannot be checked (missing chunk keys, say)."""


__all__ += ["MalformedReferenceError", "ReferenceWarning"]


class ResultError(XnwbError, ValueError):
    """A saved result (``xnwb tfr`` output) that cannot be used as asked."""


class IncompleteResultError(ResultError):
    """A result store whose writing was interrupted: resume it before reading it."""


__all__ += ["IncompleteResultError", "ResultError"]


class UsageError(ValueError):
    """A bad value on the ``xnwb`` command line (the message says which and what is accepted)."""


__all__ += ["UsageError"]
