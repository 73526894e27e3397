"""HDF5 filter pipelines as numcodecs codec configurations, and chunk decoding.

HDF5 applies a dataset's filters in pipeline order when writing and in reverse
when reading. Zarr v2 metadata lists ``filters`` in encode order and decodes them
in reverse, so an HDF5 pipeline maps one-to-one onto the zarr ``filters`` list
(with ``compressor: null``). That keeps the references readable by plain zarr.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numcodecs
import numpy as np

from xnwb.exceptions import ChunkDecodeError, UnsupportedFilterError

__all__ = [
    "FILTER_NAMES",
    "PRODUCED_CODEC_IDS",
    "ChunkCodec",
    "codec_pipeline",
    "decode_chunk",
    "encode_chunk",
    "hdf5_filters_to_codecs",
    "reference_codec_ids",
]

#: Every HDF5 filter id the HDF Group registers (and the predefined ones) -> its name.
FILTER_NAMES: dict[int, str] = {
    1: "deflate (gzip)",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    307: "bzip2",
    32000: "lzf",
    32001: "blosc",
    32002: "mafisc",
    32003: "snappy",
    32004: "lz4",
    32005: "apax",
    32006: "cbf",
    32007: "jpeg-xr",
    32008: "bitshuffle",
    32009: "spdp",
    32010: "lpc-rice",
    32011: "ccsds-123",
    32012: "jpeg-ls",
    32013: "zfp",
    32014: "fpzip",
    32015: "zstd",
    32016: "b3d",
    32017: "sz",
    32018: "fcidecomp",
    32019: "jpeg",
    32020: "vbz",
    32021: "fapec",
    32022: "bitgroom",
    32023: "granular bitround",
    32024: "sz3",
    32025: "delta-rice",
    32026: "blosc2",
    32027: "flac",
    32028: "sperr",
    32033: "htj2k",
}

#: Every numcodecs codec id a filter pipeline of xnwb's index can name (plus
#: ``vlen-utf8`` for inlined strings). The one list: a reference file naming any
#: other codec is not one xnwb would write.
PRODUCED_CODEC_IDS: frozenset[str] = frozenset(
    {
        "zlib",
        "shuffle",
        "fletcher32",
        "bz2",
        "blosc",
        "zstd",
        "imagecodecs_lzf",
        "imagecodecs_lz4h5",
        "imagecodecs_jpegls",
        "xnwb_hdf5_bitshuffle",
        "xnwb_hdf5_blosc2",
        "vlen-utf8",
    }
)


def filter_name(filter_id: int) -> str:
    """An HDF5 filter id as words, for messages.

    Examples
    --------
    >>> filter_name(1)
    "'deflate (gzip)' (id 1)"
    >>> filter_name(32017)
    "'sz' (id 32017)"
    >>> filter_name(40000)
    'id 40000 (not in the HDF Group registry of filters)'
    """
    name = FILTER_NAMES.get(filter_id)
    if name is None:
        return f"id {filter_id} (not in the HDF Group registry of filters)"
    return f"{name!r} (id {filter_id})"


def _imagecodecs_config(codec_id: str, filter_id: int, path: str) -> dict[str, Any]:
    try:
        import imagecodecs.numcodecs  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise UnsupportedFilterError(
            f"dataset {path!r} uses the HDF5 filter {filter_name(filter_id)}, which needs "
            "imagecodecs: pip install imagecodecs"
        ) from err
    return {"id": codec_id}


def _bitshuffle_config(cd_values: tuple[int, ...], itemsize: int, path: str) -> dict[str, Any]:
    compression = {0: "none", 2: "lz4", 3: "zstd"}.get(cd_values[4] if len(cd_values) > 4 else 0)
    if compression is None:
        raise UnsupportedFilterError(
            f"dataset {path!r} uses the HDF5 filter {filter_name(32008)} with compression "
            f"code {cd_values[4]}, which xnwb cannot decode (it reads none, lz4 and zstd)"
        )
    return {
        "id": "xnwb_hdf5_bitshuffle",
        "elementsize": int(cd_values[2]) if len(cd_values) > 2 and cd_values[2] else itemsize,
        "blocksize": int(cd_values[3]) if len(cd_values) > 3 else 0,
        "compression": compression,
        "level": int(cd_values[5]) if len(cd_values) > 5 else 0,
    }


def _blosc2_config(itemsize: int, path: str) -> dict[str, Any]:
    try:
        import blosc2  # noqa: F401
    except ImportError as err:
        raise UnsupportedFilterError(
            f"dataset {path!r} uses the HDF5 filter {filter_name(32026)}, which needs the "
            "blosc2 package: pip install blosc2"
        ) from err
    return {"id": "xnwb_hdf5_blosc2", "typesize": int(itemsize)}


def hdf5_filters_to_codecs(
    filters: Sequence[tuple[int, int, tuple[int, ...], bytes | str]],
    itemsize: int,
    path: str,
) -> list[dict[str, Any]]:
    """Translate an HDF5 filter pipeline into numcodecs configurations.

    Parameters
    ----------
    filters
        ``(filter_id, flags, cd_values, name)`` tuples in pipeline order, as
        ``h5py`` ``PropDCID.get_filter(i)`` returns them.
    itemsize
        Size in bytes of one element (the shuffle filter needs it).
    path
        Dataset path, named in error messages.

    Returns
    -------
    list of dict
        numcodecs configurations in encode order (zarr v2 ``filters``).

    Raises
    ------
    UnsupportedFilterError
        For a filter no installed codec decodes (szip, nbit, scaleoffset, …).

    Examples
    --------
    >>> hdf5_filters_to_codecs([(2, 0, (), b""), (1, 0, (4,), b"")], 2, "/data")
    [{'id': 'shuffle', 'elementsize': 2}, {'id': 'zlib', 'level': 4}]
    """
    configs: list[dict[str, Any]] = []
    for filter_id, _flags, cd_values, _name in filters:
        if filter_id == 1:
            configs.append({"id": "zlib", "level": int(cd_values[0]) if cd_values else 6})
        elif filter_id == 2:
            configs.append({"id": "shuffle", "elementsize": int(itemsize)})
        elif filter_id == 3:
            configs.append({"id": "fletcher32"})
        elif filter_id == 307:
            configs.append({"id": "bz2", "level": int(cd_values[0]) if cd_values else 9})
        elif filter_id == 32001:
            # An hdf5-blosc chunk is a self-describing blosc buffer.
            configs.append({"id": "blosc"})
        elif filter_id == 32015:
            configs.append({"id": "zstd", "level": int(cd_values[0]) if cd_values else 0})
        elif filter_id == 32000:
            # HDF5's LZF chunks carry no size header; decode_chunk supplies the size.
            configs.append(
                {**_imagecodecs_config("imagecodecs_lzf", filter_id, path), "header": False}
            )
        elif filter_id == 32004:
            configs.append(_imagecodecs_config("imagecodecs_lz4h5", filter_id, path))
        elif filter_id == 32008:
            configs.append(_bitshuffle_config(tuple(cd_values), itemsize, path))
        elif filter_id == 32018:
            # FCIDECOMP chunks are plain JPEG-LS images.
            configs.append(_imagecodecs_config("imagecodecs_jpegls", filter_id, path))
        elif filter_id == 32026:
            configs.append(_blosc2_config(itemsize, path))
        else:
            raise UnsupportedFilterError(
                f"dataset {path!r} uses the HDF5 filter {filter_name(filter_id)}, which xnwb "
                "cannot decode; re-pack the file with h5repack using gzip, blosc, zstd or lz4 "
                "(e.g. h5repack -f GZIP=4 in.nwb out.nwb)"
            )
    return configs


#: Codecs a reference file may name besides those HDF5 filters map to: xnwb writes
#: strings and references as vlen-utf8 (they are always inlined).
_EXTRA_REFERENCE_CODECS = frozenset({"vlen-utf8"})


@lru_cache(maxsize=1)
def reference_codec_ids() -> frozenset[str]:
    """The codec ids a reference file may name: those an HDF5 filter maps to, and vlen-utf8.

    The same list :func:`hdf5_filters_to_codecs` produces from
    (:data:`PRODUCED_CODEC_IDS`), so a filter added there is admitted here with no
    second list to keep. Anything else — pickle, above all, which runs code on decode — is
    refused when a reference file is opened.

    Examples
    --------
    >>> {"zlib", "shuffle", "fletcher32"} <= reference_codec_ids()
    True
    >>> "pickle" in reference_codec_ids()
    False
    """
    return PRODUCED_CODEC_IDS | _EXTRA_REFERENCE_CODECS


# Codecs whose streams do not record the decoded size.
_NEEDS_OUTPUT_SIZE = frozenset({"imagecodecs_lzf"})


@lru_cache(maxsize=256)
def _codecs_from_key(key: str) -> tuple[numcodecs.abc.Codec, ...]:
    import json

    if "imagecodecs_" in key:
        import imagecodecs.numcodecs

        imagecodecs.numcodecs.register_codecs(verbose=False)
    if "xnwb_hdf5_" in key:
        import xnwb.h5codecs  # noqa: F401  (registers the codecs)
    return tuple(numcodecs.get_codec(dict(c)) for c in json.loads(key))


def codec_pipeline(configs: Sequence[dict[str, Any]] | None) -> tuple[numcodecs.abc.Codec, ...]:
    """Codec objects for a list of numcodecs configurations (cached; encode order)."""
    import json

    if not configs:
        return ()
    return _codecs_from_key(json.dumps(list(configs), sort_keys=True))


def _inflate(buf: Any, nbytes: int, out: np.ndarray | None = None) -> Any:
    """Decompress a zlib stream whose decoded size is known (into ``out`` if given).

    libdeflate (through imagecodecs) inflates about twice as fast as zlib and,
    like zlib, checks the stream's Adler-32; both release the GIL. The result is
    ``out`` (its decoded part) when libdeflate wrote there, else new bytes.
    """
    if _deflate_decode is not None and nbytes > _SMALL_INFLATE:
        return _deflate_decode(buf, out=nbytes if out is None else out)
    return zlib.decompress(buf, 15, nbytes)


#: Chunks up to this many bytes go to zlib: libdeflate's ~10 us set-up per call
#: (measured here) outweighs its speed below ~4 KiB.
_SMALL_INFLATE = 4096


try:  # imagecodecs is a dependency, but keep working without it
    from imagecodecs import deflate_decode as _deflate_decode
except ImportError:  # pragma: no cover
    _deflate_decode = None


class ChunkCodec:
    """Decodes the chunks of one array; built once per array, used per chunk.

    The common NWB pipelines (deflate, shuffle+deflate, either with fletcher32)
    take a fast path: the inflated byte planes are un-shuffled while being copied
    into the output, so a chunk costs one inflate and one strided copy.

    Parameters
    ----------
    configs
        numcodecs configurations in encode order (zarr v2 ``filters``).
    dtype, chunk_shape
        Of one decoded chunk.
    """

    def __init__(
        self,
        configs: Sequence[dict[str, Any]] | None,
        dtype: np.dtype,
        chunk_shape: tuple[int, ...],
    ) -> None:
        self.codecs = codec_pipeline(configs)
        self.dtype = np.dtype(dtype)
        self.chunk_shape = tuple(chunk_shape)
        self.nbytes = int(np.prod(chunk_shape, dtype=np.int64)) * self.dtype.itemsize
        ids = [c.codec_id for c in self.codecs]
        self.checksum = self.codecs[-1] if ids[-1:] == ["fletcher32"] else None
        core = ids[:-1] if self.checksum is not None else ids
        itemsize = self.dtype.itemsize
        self.shuffled = core == ["shuffle", "zlib"] and self.codecs[0].elementsize == itemsize
        self.fast = self.dtype.kind != "O" and (core in ([], ["zlib"]) or self.shuffled)
        self.inflate = "zlib" in core

    def _raw_bytes(self, raw: Any) -> Any:
        buf = self.checksum.decode(raw) if self.checksum is not None else raw
        return _inflate(buf, self.nbytes) if self.inflate else buf

    def decode(self, raw: Any, where: str = "chunk") -> np.ndarray:
        """The chunk as an array of ``chunk_shape``.

        Raises
        ------
        ChunkDecodeError
            When a codec fails (corrupt stream, checksum mismatch) or the decoded
            size does not match the chunk shape. ``where`` names the chunk.
        """
        try:
            if not self.fast:
                return decode_chunk(
                    raw, None, self.dtype, self.chunk_shape, where=where, codecs=self.codecs
                )
            buf = self._raw_bytes(raw)
        except ChunkDecodeError:
            raise
        except Exception as err:
            raise ChunkDecodeError(f"cannot decode {where}: {type(err).__name__}: {err}") from err
        flat = np.frombuffer(buf, dtype=np.uint8)
        _check_size(flat.size, self.nbytes, where)
        flat = flat[: self.nbytes]
        if self.shuffled:
            planes = flat.reshape(self.dtype.itemsize, -1)
            return np.ascontiguousarray(planes.T).view(self.dtype).reshape(self.chunk_shape)
        return flat.view(self.dtype).reshape(self.chunk_shape)

    def inflate_into(self, raw: Any, dest: np.ndarray, where: str = "chunk") -> None:
        """Write the chunk's stored-order bytes (still shuffled, if it is) into ``dest``.

        ``dest`` is a C-contiguous ``uint8`` array of :attr:`nbytes`. Only for the
        :attr:`fast` pipelines; :func:`xnwb.read.read_selection` then un-shuffles many
        chunks with one copy.
        """
        try:
            buf = self.checksum.decode(raw) if self.checksum is not None else raw
            got = _inflate(buf, self.nbytes, dest) if self.inflate else buf
            flat = np.frombuffer(got, np.uint8)
            size = flat.size
            if not np.may_share_memory(flat, dest):  # zlib or no compression: copy it in
                dest[: min(size, self.nbytes)] = flat[: self.nbytes]
        except Exception as err:
            raise ChunkDecodeError(f"cannot decode {where}: {type(err).__name__}: {err}") from err
        _check_size(size, self.nbytes, where)

    def decode_into(
        self,
        raw: Any,
        out: np.ndarray,
        out_bytes: np.ndarray | None,
        target: Any,
        inner: Any,
        where: str = "chunk",
    ) -> None:
        """Write ``chunk[inner]`` into ``out[target]`` (``out_bytes``: ``out`` as byte planes)."""
        if not (self.fast and self.shuffled and out_bytes is not None and _deflate_decode):
            out[target] = self.decode(raw, where)[inner]
            return
        try:
            buf = self.checksum.decode(raw) if self.checksum is not None else raw
            # Inflate into a per-thread scratch buffer that stays in cache.
            flat = np.frombuffer(_inflate(buf, self.nbytes, _scratch(self.nbytes)), np.uint8)
        except Exception as err:
            raise ChunkDecodeError(f"cannot decode {where}: {type(err).__name__}: {err}") from err
        _check_size(flat.size, self.nbytes, where)
        planes = flat[: self.nbytes].reshape((self.dtype.itemsize, *self.chunk_shape))
        # Un-shuffle while copying: byte plane k goes to byte k of every element,
        # one plane at a time so the source is read contiguously (4x faster than
        # one transposed copy).
        # (out_bytes[..., k] first, then target: a channel list in target and k side by
        # side would be two advanced indices apart, which numpy moves to the front.)
        for k in range(self.dtype.itemsize):
            out_bytes[..., k][target] = planes[k][inner]


_THREAD_LOCAL = threading.local()


def _scratch(nbytes: int) -> np.ndarray:
    """A reusable per-thread byte buffer of ``nbytes``."""
    buf = getattr(_THREAD_LOCAL, "buf", None)
    if buf is None or buf.size != nbytes:
        buf = _THREAD_LOCAL.buf = np.empty(nbytes, dtype=np.uint8)
    return buf


def _check_size(got: int, expected: int, where: str) -> None:
    if got < expected:
        raise ChunkDecodeError(f"cannot decode {where}: {got} bytes decoded, {expected} expected")


def decode_chunk(
    raw: bytes | memoryview,
    configs: Sequence[dict[str, Any]] | None,
    dtype: np.dtype,
    chunk_shape: tuple[int, ...],
    *,
    where: str = "chunk",
    codecs: tuple[numcodecs.abc.Codec, ...] | None = None,
) -> np.ndarray:
    """Decode one stored chunk into an array of ``chunk_shape`` (any pipeline).

    Raises
    ------
    ChunkDecodeError
        When a codec fails (corrupt stream, checksum mismatch) or the decoded size
        does not match the chunk shape. ``where`` names the chunk in the message.
    """
    buf: Any = raw
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(chunk_shape, dtype=np.int64)) * dtype.itemsize
    try:
        for codec in reversed(codecs if codecs is not None else codec_pipeline(configs)):
            if codec.codec_id == "zlib":
                buf = _inflate(buf, nbytes)
            elif codec.codec_id in _NEEDS_OUTPUT_SIZE:
                buf = codec.decode(buf, out=np.empty(nbytes, dtype=np.uint8))
            else:
                buf = codec.decode(buf)
    except Exception as err:
        raise ChunkDecodeError(f"cannot decode {where}: {type(err).__name__}: {err}") from err
    if dtype.kind == "O":
        arr = np.asarray(buf, dtype=object)
        return arr.reshape(chunk_shape)
    arr = np.frombuffer(buf, dtype=dtype) if not isinstance(buf, np.ndarray) else buf
    arr = arr.view(dtype) if arr.dtype != dtype else arr
    expected = int(np.prod(chunk_shape, dtype=np.int64))
    if arr.size < expected:
        raise ChunkDecodeError(
            f"cannot decode {where}: {arr.size} elements decoded, {expected} expected"
        )
    return arr.reshape(-1)[:expected].reshape(chunk_shape)


def encode_chunk(array: np.ndarray, configs: Sequence[dict[str, Any]] | None) -> bytes:
    """Encode an array with a pipeline (inverse of :func:`decode_chunk`)."""
    buf: Any = np.ascontiguousarray(array)
    for codec in codec_pipeline(configs):
        buf = codec.encode(buf)
    return bytes(buf) if not isinstance(buf, bytes) else buf
