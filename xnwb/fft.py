"""The FFT library behind the transforms: ``ducc0.fft`` when installed, ``scipy.fft`` otherwise.

Both compute the same transforms (pocketfft's algorithms; ducc0 is its successor, by the same
author); they differ by rounding only (~1e-16 relative). ducc0 is faster here where it counts:
about 1.3× on long contiguous batches and 2–3× on short strided ones, it writes into a given
output array (no temporary per call), and it transforms real input straight to the full complex
spectrum. :func:`fft_backend` says which library is used; the environment variable
``XNWB_FFT_BACKEND`` (``"ducc0"`` or ``"scipy"``) or :func:`use_fft_backend` choose one.

Examples
--------
>>> import numpy as np
>>> fft_backend() in BACKENDS
True
>>> x = np.random.default_rng(0).standard_normal((2, 16))
>>> with use_fft_backend("scipy"):
...     a = ifft(forward(x))
>>> bool(np.allclose(a.real, x))
True
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.fft as sfft

from xnwb.exceptions import TFRParameterError

__all__ = ["BACKENDS", "available_backends", "fft_backend", "forward", "ifft", "use_fft_backend"]

BACKENDS = ("ducc0", "scipy")
_override: list[str] = []  # innermost use_fft_backend() last; a process-local choice


def available_backends() -> tuple[str, ...]:
    """The FFT libraries this interpreter can use, fastest first.

    Examples
    --------
    >>> "scipy" in available_backends()
    True
    """
    return tuple(name for name in BACKENDS if name == "scipy" or _ducc() is not None)


def fft_backend() -> str:
    """Name of the FFT library the transforms use now: ``"ducc0"`` or ``"scipy"``.

    ``use_fft_backend(...)`` wins, then ``XNWB_FFT_BACKEND``, then ducc0 when it is installed.

    Examples
    --------
    >>> with use_fft_backend("scipy"):
    ...     fft_backend()
    'scipy'
    """
    if _override:
        return _override[-1]
    wanted = os.environ.get("XNWB_FFT_BACKEND", "").strip().lower()
    if wanted:
        return _check(wanted, "the environment variable XNWB_FFT_BACKEND")
    return "ducc0" if _ducc() is not None else "scipy"


@contextlib.contextmanager
def use_fft_backend(name: str) -> Iterator[str]:
    """Use the FFT library ``name`` inside a ``with`` block (this process's threads).

    Raises
    ------
    TFRParameterError
        An unknown name, or ``"ducc0"`` when it is not installed.

    Examples
    --------
    >>> with use_fft_backend("scipy") as name:
    ...     name
    'scipy'
    """
    _override.append(_check(str(name).lower(), "use_fft_backend"))
    try:
        yield _override[-1]
    finally:
        _override.pop()


def forward(
    x: np.ndarray, *, axis: int = -1, out: np.ndarray | None = None, threads: int = 1
) -> np.ndarray:
    """Full complex spectrum along ``axis`` of a real or complex array.

    Written into ``out`` (complex, ``x``'s shape and precision, any strides: the transform
    can land straight in the layout its consumer wants) when given, else a new array.

    Examples
    --------
    >>> forward(np.array([1.0, 0.0, 0.0, 0.0])).real
    array([1., 1., 1., 1.])
    >>> x = np.random.default_rng(0).standard_normal((3, 8))
    >>> bool(np.allclose(forward(x, axis=0), np.fft.fft(x, axis=0)))
    True
    """
    axis = axis % x.ndim
    ducc = _ducc() if fft_backend() == "ducc0" else None
    if ducc is None:
        res = sfft.fft(x, axis=axis, workers=threads)
        if out is None:
            return res
        np.copyto(out, res)
        return out
    if out is None:
        out = np.empty(x.shape, dtype=np.result_type(x.dtype, np.complex64))
    if np.dtype(x.dtype).kind == "c":
        return ducc.fft.c2c(x, axes=(axis,), forward=True, out=out, nthreads=threads)
    # Real input: the half spectrum, then its mirror X[n - j] = conj(X[j]) (ducc0's own
    # real-to-full path is ~5x slower than this here).
    n = x.shape[axis]
    half = n // 2 + 1
    rows = np.moveaxis(out, axis, -1)
    ducc.fft.r2c(
        x, axes=(axis,), forward=True, out=np.moveaxis(rows[..., :half], -1, axis), nthreads=threads
    )
    np.conjugate(rows[..., 1 : n - half + 1][..., ::-1], out=rows[..., half:])
    return out


def ifft(
    x: np.ndarray, *, axis: int = -1, out: np.ndarray | None = None, threads: int = 1
) -> np.ndarray:
    """Inverse FFT (divided by the length) of a complex array along ``axis``.

    ``out`` (same shape and dtype as ``x``, or ``x`` itself) receives the result when given;
    ``x`` may be overwritten either way.

    Examples
    --------
    >>> x = np.array([4.0 + 0j, 0, 0, 0])
    >>> ifft(x, out=x) is x, x
    (True, array([1.+0.j, 1.+0.j, 1.+0.j, 1.+0.j]))
    """
    axis = axis % x.ndim
    ducc = _ducc() if fft_backend() == "ducc0" else None
    if ducc is not None:
        return ducc.fft.c2c(x, axes=(axis,), forward=False, inorm=2, out=out, nthreads=threads)
    res = sfft.ifft(x, axis=axis, overwrite_x=True, workers=threads)
    if out is not None and res is not out:
        np.copyto(out, res)
        return out
    return res


def _check(name: str, where: str) -> str:
    if name not in BACKENDS:
        raise TFRParameterError(f"{where}: unknown FFT library {name!r}; use one of {BACKENDS}")
    if name == "ducc0" and _ducc() is None:
        raise TFRParameterError(
            f"{where} asks for ducc0, which is not installed; `pip install ducc0` or use 'scipy'"
        )
    return name


def _ducc() -> Any:
    try:
        import ducc0
    except ImportError:
        return None
    return ducc0
