"""Read a reference file's text within bounds: size, gzip expansion, UTF-8, nesting.

A reference file is input from outside. Whatever it holds, reading it costs at most
:data:`MAX_REFERENCE_BYTES` of text (a gzip member that would inflate further is
refused part-way, so a 1.4 MB file claiming 2 GiB costs 256 MiB at most), and every
way it can fail ends in :class:`~xnwb.exceptions.MalformedReferenceError` naming the
file and what is wrong — never a builtin ``UnicodeDecodeError`` or ``RecursionError``.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from xnwb.exceptions import MalformedReferenceError

__all__ = ["MAX_REFERENCE_BYTES", "load_reference_file", "parse_json"]

#: Largest reference text accepted, after decompression (kerchunk's JSON of a
#: 1M-chunk file is about 100 MB; xnwb's is smaller).
MAX_REFERENCE_BYTES = 256 * 2**20
_GZIP_MAGIC = b"\x1f\x8b"
_READ_BLOCK = 2**20


def _gunzip_bounded(raw: bytes, label: str, limit: int) -> bytes:
    """Inflate every gzip member of ``raw``, refusing output beyond ``limit`` bytes."""
    out = bytearray()
    data = raw
    while data:
        inflater = zlib.decompressobj(wbits=31)
        try:
            while not inflater.eof:
                out += inflater.decompress(data, _READ_BLOCK)
                if len(out) > limit:
                    raise MalformedReferenceError(
                        f"reference file {label} inflates to more than {limit} bytes "
                        f"({len(raw)} compressed): refused (at most xnwb.refload."
                        "MAX_REFERENCE_BYTES of text is read)"
                    )
                data = inflater.unconsumed_tail
                if not data and not inflater.eof:
                    raise MalformedReferenceError(
                        f"reference file {label} is a truncated gzip stream"
                    )
        except zlib.error as err:
            raise MalformedReferenceError(
                f"reference file {label} is not valid gzip: {err}"
            ) from err
        data = inflater.unused_data  # the next member, if any
    return bytes(out)


def decode_reference_bytes(raw: bytes, label: str, limit: int = MAX_REFERENCE_BYTES) -> str:
    """The text of a reference file's bytes (gzip detected by its magic number)."""
    if len(raw) > limit:
        raise MalformedReferenceError(
            f"reference file {label} holds more than {limit} bytes: refused"
        )
    if raw[:2] == _GZIP_MAGIC:
        raw = _gunzip_bounded(raw, label, limit)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedReferenceError(
            f"reference file {label} is not UTF-8 text (byte {err.start}: "
            f"{raw[err.start : err.start + 4]!r}); a reference file is JSON"
        ) from err


def parse_json(text: str | bytes, what: str) -> Any:
    """``json.loads`` with every failure as :class:`MalformedReferenceError` naming ``what``."""
    try:
        return json.loads(text)
    except RecursionError as err:
        raise MalformedReferenceError(f"{what} is JSON nested too deeply to read") from err
    except json.JSONDecodeError as err:
        raise MalformedReferenceError(
            f"{what} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from err
    except (ValueError, TypeError) as err:  # e.g. an integer of 5000 digits, bytes not UTF-8
        raise MalformedReferenceError(f"{what} cannot be read as JSON: {err}") from err


def read_reference_bytes(url: str, storage_options: dict[str, Any] | None, limit: int) -> bytes:
    """At most ``limit + 1`` raw bytes of the file at ``url`` (local or fsspec URL)."""
    import fsspec

    label = repr(url)
    try:
        with fsspec.open(url, "rb", **(storage_options or {})) as fh:
            # Block by block: read(limit) would set aside ``limit`` bytes up front.
            pieces: list[bytes] = []
            total = 0
            while total <= limit:
                piece = fh.read(_READ_BLOCK)
                if not piece:
                    break
                pieces.append(piece)
                total += len(piece)
            raw = b"".join(pieces)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise MalformedReferenceError(f"cannot read reference file {label}: {err}") from err
    return raw


def load_reference_file(
    url: str, storage_options: dict[str, Any] | None = None, *, limit: int = MAX_REFERENCE_BYTES
) -> Any:
    """The parsed JSON document of the reference file at ``url``, read within bounds.

    Raises
    ------
    MalformedReferenceError
        When the file is too large, a gzip bomb, not UTF-8, nested too deeply or not JSON.
    """
    raw = read_reference_bytes(url, storage_options, limit)
    text = decode_reference_bytes(raw, repr(url), limit)
    return parse_json(text, f"reference file {url!r}")
