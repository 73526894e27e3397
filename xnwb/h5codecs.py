"""numcodecs codecs for HDF5 filters whose chunk layout no stock codec reads.

Two HDF5 filters wrap a well-known compressor in a framing of their own:

- **bitshuffle** (filter 32008): with compression, a chunk is a 12-byte header
  (big-endian uint64 decoded bytes, big-endian uint32 block size in bytes) and then
  one record per block of ``block_size`` elements: a big-endian uint32 compressed
  size and an LZ4 block (or a zstd frame) holding the bit-shuffled block. The last
  block holds the remaining elements rounded down to a multiple of 8; the final
  ``n % 8`` elements are copied unshuffled and uncompressed at the end. Without
  compression the chunk is the bit-shuffled data itself.
- **Blosc2** (filter 32026): a chunk is a Blosc2 contiguous frame (a ``b2nd``
  array, or a plain super-chunk), which the ``blosc2`` package reads.

The bit operations and compressors come from imagecodecs and blosc2; this module
only follows the framing. Both codecs register with numcodecs on import, so a
reference file naming them opens in any reader that imports xnwb.
"""

from __future__ import annotations

from typing import Any

import numcodecs
import numpy as np
from numcodecs.abc import Codec

__all__ = ["HDF5Bitshuffle", "HDF5Blosc2"]

#: Bitshuffle works on groups of 8 elements; blocks are multiples of it.
_BLOCKED_MULT = 8
#: bitshuffle's default target block size in bytes (when the filter's block size is 0).
_TARGET_BLOCK_BYTES = 8192
_MIN_BLOCK = 128
_COMPRESSION = {0: "none", 2: "lz4", 3: "zstd"}


def _default_block_size(elementsize: int) -> int:
    size = _TARGET_BLOCK_BYTES // elementsize
    size -= size % _BLOCKED_MULT
    return max(size, _MIN_BLOCK)


class HDF5Bitshuffle(Codec):
    """The HDF5 bitshuffle filter (id 32008), with LZ4, zstd or no compression.

    Parameters
    ----------
    elementsize
        Bytes per element.
    blocksize
        Elements per block; ``0`` means bitshuffle's default for the element size.
    compression
        ``"none"``, ``"lz4"`` or ``"zstd"``.
    level
        zstd level used when encoding.

    Examples
    --------
    >>> codec = HDF5Bitshuffle(elementsize=2, compression="lz4")
    >>> data = np.arange(1001, dtype=np.int16)
    >>> np.array_equal(np.frombuffer(codec.decode(codec.encode(data)), np.int16), data)
    True
    """

    codec_id = "xnwb_hdf5_bitshuffle"

    def __init__(
        self, elementsize: int, blocksize: int = 0, compression: str = "none", level: int = 0
    ) -> None:
        if compression not in _COMPRESSION.values():
            raise ValueError(f"bitshuffle compression {compression!r} is not lz4, zstd or none")
        self.elementsize = int(elementsize)
        self.blocksize = int(blocksize)
        self.compression = compression
        self.level = int(level)

    def _block(self) -> int:
        return self.blocksize or _default_block_size(self.elementsize)

    def _blocks(self, n_elements: int, block: int) -> list[int]:
        """Element counts of the compressed blocks of a chunk of ``n_elements``."""
        sizes = [block] * (n_elements // block)
        last = n_elements % block
        last -= last % _BLOCKED_MULT
        if last:
            sizes.append(last)
        return sizes

    def encode(self, buf: Any) -> bytes:
        import imagecodecs

        # Bytes, not arrays: imagecodecs takes an array's own itemsize over ``itemsize``.
        raw = np.ascontiguousarray(buf).view(np.uint8).reshape(-1)
        if self.compression == "none":
            return bytes(
                imagecodecs.bitshuffle_encode(
                    raw.tobytes(), itemsize=self.elementsize, blocksize=self.blocksize
                )
            )
        block = self._block()
        size = self.elementsize
        n = raw.size // size
        parts = [(raw.size).to_bytes(8, "big"), (block * size).to_bytes(4, "big")]
        start = 0
        for count in self._blocks(n, block):
            piece = raw[start : start + count * size]
            shuffled = imagecodecs.bitshuffle_encode(
                piece.tobytes(), itemsize=size, blocksize=count
            )
            if self.compression == "lz4":
                packed = imagecodecs.lz4_encode(shuffled, header=False)
            else:
                packed = imagecodecs.zstd_encode(shuffled, level=self.level or None)
            parts += [len(packed).to_bytes(4, "big"), bytes(packed)]
            start += count * size
        parts.append(raw[start:].tobytes())
        return b"".join(parts)

    def decode(self, buf: Any, out: Any = None) -> bytes:
        import imagecodecs

        data = memoryview(bytes(buf)) if not isinstance(buf, bytes | memoryview) else buf
        size = self.elementsize
        if self.compression == "none":
            decoded = imagecodecs.bitshuffle_decode(
                bytes(data), itemsize=size, blocksize=self.blocksize
            )
            return bytes(decoded)
        if len(data) < 12:
            raise ValueError(f"a bitshuffle chunk of {len(data)} bytes has no header")
        total = int.from_bytes(data[:8], "big")
        block_bytes = int.from_bytes(data[8:12], "big")
        if block_bytes % size or total % size:
            raise ValueError(
                f"bitshuffle header: {total} bytes in blocks of {block_bytes} bytes do not "
                f"fit {size}-byte elements"
            )
        block = block_bytes // size or self._block()
        result = bytearray(total)
        pos, start = 12, 0
        for count in self._blocks(total // size, block):
            if pos + 4 > len(data):
                raise ValueError("bitshuffle chunk ends inside a block header")
            packed_len = int.from_bytes(data[pos : pos + 4], "big")
            packed = bytes(data[pos + 4 : pos + 4 + packed_len])
            if len(packed) != packed_len:
                raise ValueError("bitshuffle chunk ends inside a block")
            pos += 4 + packed_len
            nbytes = count * size
            if self.compression == "lz4":
                shuffled = imagecodecs.lz4_decode(packed, header=False, out=nbytes)
            else:
                shuffled = imagecodecs.zstd_decode(packed, out=nbytes)
            if len(shuffled) != nbytes:
                raise ValueError(f"bitshuffle block decoded to {len(shuffled)} bytes, not {nbytes}")
            result[start : start + nbytes] = imagecodecs.bitshuffle_decode(
                shuffled, itemsize=size, blocksize=count
            )
            start += nbytes
        tail = total - start
        result[start:] = bytes(data[pos : pos + tail])
        if len(data) - pos < tail:
            raise ValueError("bitshuffle chunk is shorter than its header says")
        return bytes(result)

    def get_config(self) -> dict[str, Any]:
        return {
            "id": self.codec_id,
            "elementsize": self.elementsize,
            "blocksize": self.blocksize,
            "compression": self.compression,
            "level": self.level,
        }


class HDF5Blosc2(Codec):
    """The HDF5 Blosc2 filter (id 32026): each chunk is one Blosc2 frame.

    Decoding needs the ``blosc2`` package (``pip install blosc2``).

    Parameters
    ----------
    typesize
        Bytes per element (used when encoding).
    """

    codec_id = "xnwb_hdf5_blosc2"

    def __init__(self, typesize: int = 1) -> None:
        self.typesize = int(typesize)

    def encode(self, buf: Any) -> bytes:
        import blosc2

        array = np.ascontiguousarray(buf)
        schunk = blosc2.SChunk(chunksize=max(1, array.nbytes), cparams={"typesize": self.typesize})
        schunk.append_data(array.view(np.uint8).reshape(-1))
        return bytes(schunk.to_cframe())

    def decode(self, buf: Any, out: Any = None) -> bytes:
        import blosc2

        frame = bytes(buf)
        try:
            array = blosc2.ndarray_from_cframe(frame)
        except Exception:  # a plain super-chunk frame, not a b2nd array
            schunk = blosc2.schunk_from_cframe(frame)
            return b"".join(bytes(schunk.decompress_chunk(i)) for i in range(schunk.nchunks))
        return array[...].tobytes()

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "typesize": self.typesize}


numcodecs.register_codec(HDF5Bitshuffle)
numcodecs.register_codec(HDF5Blosc2)
