"""Read HDF5 chunk indexes (version-1 B-trees) straight from a file's bytes.

h5py's ``chunk_iter`` lists every chunk of a dataset, which over a network means
every B-tree node, one request per batch of leaves. This module reads the same
structures itself, from bytes handed in by the caller, so that only the nodes a
region needs are fetched. It knows three things of the HDF5 file format
specification (version 3):

- the superblock's field sizes (:func:`read_superblock`);
- object headers, versions 1 and 2, enough to find a dataset's Data Layout message
  (:func:`find_chunk_tree`, :func:`chunk_layout`; :mod:`xnwb.chunklist` uses it too);
- version-1 B-tree nodes of type 1 (raw data chunks), whose keys hold each chunk's
  stored size, filter mask and offset (:func:`parse_node`, :func:`children_in_box`).

Everything else (HDF5 1.10's fixed/extensible arrays, version-2 B-trees, single and
implicit chunk indexes) is reported as unsupported, and the caller falls back to
listing every chunk with h5py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "UNDEFINED_ADDRESS",
    "ChunkTree",
    "Node",
    "Superblock",
    "UnsupportedLayout",
    "children_in_box",
    "chunk_layout",
    "find_chunk_tree",
    "node_read_size",
    "parse_node",
    "read_superblock",
]

#: ``read(start, length) -> bytes``: how this module gets the file's bytes.
Reader = Callable[[int, int], bytes]

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_UNDEFINED = 0xFFFFFFFFFFFFFFFF
#: The address HDF5 writes where nothing is stored (a B-tree never created).
UNDEFINED_ADDRESS = _UNDEFINED
_LAYOUT_MESSAGE = 0x0008
_CONTINUATION_MESSAGE = 0x0010
#: Entries per node assumed before a node is read (HDF5's default K = 32 for chunk
#: B-trees: up to 64 children). A fuller node is read again at its real size.
DEFAULT_ENTRIES = 64


class UnsupportedLayout(Exception):
    """The dataset's chunk index is not a version-1 B-tree this module reads (the reason)."""


@dataclass(frozen=True)
class Superblock:
    """What node parsing needs from the superblock."""

    version: int
    offset_size: int
    length_size: int
    base_address: int


@dataclass(frozen=True)
class ChunkTree:
    """Where a chunked dataset's version-1 B-tree is, and the chunk shape its keys use."""

    address: int
    chunk_shape: tuple[int, ...]
    element_size: int

    @property
    def rank(self) -> int:
        return len(self.chunk_shape)

    @property
    def key_size(self) -> int:
        """Bytes of one key: chunk size (4), filter mask (4), ``rank + 1`` offsets (8 each)."""
        return 8 + 8 * (self.rank + 1)


@dataclass(frozen=True)
class Node:
    """One parsed B-tree node.

    ``keys`` is ``(entries + 1, rank)`` chunk offsets in elements; child ``i`` covers
    the chunks from ``keys[i]`` up to ``keys[i + 1]``. In a leaf (``level == 0``)
    child ``i`` is chunk ``keys[i]``, stored at ``children[i]`` with ``sizes[i]``
    bytes, some filters skipped as ``masks[i]`` says.
    """

    address: int
    level: int
    keys: np.ndarray
    children: np.ndarray
    sizes: np.ndarray
    masks: np.ndarray


def read_superblock(read: Reader) -> Superblock:
    """Field sizes and base address from the superblock at byte 0.

    Raises
    ------
    UnsupportedLayout
        For a superblock elsewhere (a user block) or field sizes other than 8 bytes.
    """
    head = read(0, 48)
    if head[:8] != _SIGNATURE:
        raise UnsupportedLayout("no HDF5 superblock at byte 0 (a user block?)")
    version = head[8]
    if version in (0, 1):
        offset_size, length_size = head[13], head[14]
        base_at = 24 if version == 0 else 28
    elif version in (2, 3):
        offset_size, length_size = head[9], head[10]
        base_at = 12
    else:
        raise UnsupportedLayout(f"superblock version {version}")
    if offset_size != 8 or length_size != 8:
        raise UnsupportedLayout(f"{offset_size}-byte offsets, {length_size}-byte lengths")
    (base,) = struct.unpack_from("<Q", head, base_at)
    return Superblock(version, offset_size, length_size, base)


def _messages_v1(read: Reader, address: int) -> list[tuple[int, int, bytes]]:
    """``(type, flags, body)`` of every message of a version-1 object header."""
    prefix = read(address, 16)
    (size,) = struct.unpack_from("<I", prefix, 8)
    blocks = [(address + 16, size)]
    out = []
    while blocks:
        start, length = blocks.pop(0)
        data = read(start, length)
        pos = 0
        while pos + 8 <= len(data):
            kind, body_size, flags = struct.unpack_from("<HHB", data, pos)
            body = data[pos + 8 : pos + 8 + body_size]
            pos += 8 + body_size
            if kind == _CONTINUATION_MESSAGE:
                blocks.append(struct.unpack_from("<QQ", body, 0))
            out.append((kind, flags, body))
    return out


def _messages_v2(read: Reader, address: int) -> list[tuple[int, int, bytes]]:
    """``(type, flags, body)`` of every message of a version-2 object header."""
    prefix = read(address, 48)
    if prefix[4] != 2:
        raise UnsupportedLayout(f"object header version {prefix[4]}")
    flags = prefix[5]
    pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
    width = 1 << (flags & 0x03)
    chunk0 = int.from_bytes(prefix[pos : pos + width], "little")
    pos += width
    with_order = bool(flags & 0x04)
    header = 6 if with_order else 4
    blocks = [(address + pos, chunk0)]
    out = []
    while blocks:
        start, length = blocks.pop(0)
        data = read(start, length)
        at = 0
        while at + header <= len(data):
            kind = data[at]
            (body_size,) = struct.unpack_from("<H", data, at + 1)
            message_flags = data[at + 3]
            body = data[at + header : at + header + body_size]
            at += header + body_size
            if kind == _CONTINUATION_MESSAGE:
                where, size = struct.unpack_from("<QQ", body, 0)
                # An "OCHK" block: signature, messages, checksum.
                blocks.append((where + 4, size - 8))
            out.append((kind, message_flags, body))
    return out


def find_chunk_tree(read: Reader, header_address: int, superblock: Superblock) -> ChunkTree:
    """The version-1 B-tree of the chunked dataset whose object header is at ``header_address``.

    Raises
    ------
    UnsupportedLayout
        When the dataset is not chunked, or its chunks are indexed some other way
        (layout message version 4: HDF5 1.10's indexes), or nothing was written.
    """
    tree = chunk_layout(read, header_address + superblock.base_address)
    if tree.address == _UNDEFINED:
        raise UnsupportedLayout("no chunk was ever written (no B-tree)")
    return tree


def chunk_layout(read: Reader, address: int) -> ChunkTree:
    """The chunk layout in the object header at the absolute file ``address``.

    Its ``address`` is ``UNDEFINED_ADDRESS`` when no chunk was ever written.

    Raises
    ------
    UnsupportedLayout
        When the dataset is not chunked or its chunks are indexed some other way.
    """
    signature = read(address, 4)
    messages = _messages_v2(read, address) if signature == b"OHDR" else _messages_v1(read, address)
    for kind, flags, body in messages:
        if kind != _LAYOUT_MESSAGE:
            continue
        if flags & 0x02:
            raise UnsupportedLayout("a shared layout message")
        return _parse_layout(body)
    raise UnsupportedLayout("no data layout message in the object header")


def _parse_layout(body: bytes) -> ChunkTree:
    version = body[0]
    if version in (1, 2):
        ndims, layout_class = body[1], body[2]
        dims_at = 8 + 8
        (tree,) = struct.unpack_from("<Q", body, 8)
    elif version == 3:
        layout_class = body[1]
        if layout_class != 2:
            raise UnsupportedLayout(f"layout class {layout_class}, not chunked")
        ndims = body[2]
        (tree,) = struct.unpack_from("<Q", body, 3)
        dims_at = 11
    else:
        raise UnsupportedLayout(
            f"layout message version {version} (HDF5 1.10+ chunk indexes are listed eagerly)"
        )
    if layout_class != 2:
        raise UnsupportedLayout(f"layout class {layout_class}, not chunked")
    if ndims < 2:
        raise UnsupportedLayout(f"bad chunk dimensionality {ndims}")
    dims = struct.unpack_from(f"<{ndims}I", body, dims_at)
    return ChunkTree(tree, tuple(int(d) for d in dims[:-1]), int(dims[-1]))


def node_read_size(tree: ChunkTree, entries: int = DEFAULT_ENTRIES) -> int:
    """Bytes that hold a node of ``entries`` children: header, keys and addresses."""
    return 24 + entries * (tree.key_size + 8) + tree.key_size


def parse_node(data: bytes, address: int, tree: ChunkTree) -> Node | int:
    """The node in ``data``; or, when ``data`` is too short for it, the size it needs.

    Raises
    ------
    UnsupportedLayout
        When the bytes are not a raw-data B-tree node (a damaged file or a wrong address).
    """
    if len(data) < 24 or data[:4] != b"TREE":
        raise UnsupportedLayout(f"no B-tree node at byte {address}")
    node_type, level = data[4], data[5]
    (entries,) = struct.unpack_from("<H", data, 6)
    if node_type != 1:
        raise UnsupportedLayout(f"B-tree node at byte {address} is of type {node_type}, not 1")
    need = node_read_size(tree, entries)
    if len(data) < need:
        return need
    # Records are key (size u32, mask u32, offsets u64 * (rank + 1)) then child (u64);
    # the last key has no child. Read them as one structured array.
    n_offsets = tree.rank + 1
    record = np.dtype(
        [("size", "<u4"), ("mask", "<u4"), ("offsets", "<u8", (n_offsets,)), ("child", "<u8")]
    )
    body = np.frombuffer(data, dtype=np.uint8, count=entries * record.itemsize, offset=24)
    records = body.view(record)
    last = np.frombuffer(
        data, dtype=np.dtype("<u8"), count=n_offsets, offset=24 + entries * record.itemsize + 8
    )
    keys = np.empty((entries + 1, tree.rank), dtype=np.int64)
    keys[:entries] = records["offsets"][:, : tree.rank]
    keys[entries] = last[: tree.rank]
    return Node(
        address=address,
        level=int(level),
        keys=keys,
        children=records["child"].astype(np.int64),
        sizes=records["size"].astype(np.int64),
        masks=records["mask"].astype(np.int64),
    )


def _meets(
    first: list[int], last: list[int], lower: list[int], upper: list[int], step: list[int]
) -> bool:
    """Whether a chunk offset ``c`` with ``first <= c <= last`` (lexicographically) lies in the box.

    The box holds the offsets ``lower[d] + k * step[d]`` up to ``upper[d]`` on every
    axis ``d``. Walk the axes: on each, a value strictly between the two bounds
    leaves the later axes free; a value equal to a bound keeps that bound tight.
    """

    def search(d: int, low_tight: bool, high_tight: bool) -> bool:
        if d == len(lower) or not (low_tight or high_tight):
            return True
        lo = max(lower[d], first[d] + 1) if low_tight else lower[d]
        hi = min(upper[d], last[d] - 1) if high_tight else upper[d]
        start = lower[d] + -(-(lo - lower[d]) // step[d]) * step[d]
        if start <= hi:
            return True  # strictly between the bounds on this axis
        on_grid = [
            v
            for v, tight in ((first[d], low_tight), (last[d], high_tight))
            if tight and lower[d] <= v <= upper[d] and (v - lower[d]) % step[d] == 0
        ]
        for v in dict.fromkeys(on_grid):
            if (low_tight and v < first[d]) or (high_tight and v > last[d]):
                continue
            if search(d + 1, low_tight and v == first[d], high_tight and v == last[d]):
                return True
        return False

    return search(0, True, True)


def children_in_box(
    node: Node, lower: np.ndarray, upper: np.ndarray, step: np.ndarray
) -> np.ndarray:
    """Which children may hold chunks whose offsets lie in the box ``[lower, upper]``.

    Chunks sit in a B-tree in lexicographic order of their offsets, and child ``i``
    holds those from ``keys[i]`` to ``keys[i + 1]``. A child is kept when a chunk
    offset of the box (``lower + k * step`` per axis) lies in that range, bounds
    included — so nothing the box needs is left out, and a window of 4 channels
    does not pull in the nodes of the other 60.

    Parameters
    ----------
    node
        A parsed internal node.
    lower, upper
        First and last chunk offsets (in elements) of the box, inclusive.
    step
        The chunk shape.

    Returns
    -------
    numpy.ndarray
        Boolean, one per child.

    Examples
    --------
    >>> keys = np.array([[0, 0], [0, 40], [10, 0], [20, 0]])
    >>> node = Node(0, 1, keys, np.zeros(3, np.int64), np.zeros(3), np.zeros(3))
    >>> children_in_box(node, np.array([10, 0]), np.array([10, 10]), np.array([10, 10]))
    array([False,  True,  True])
    """
    lo, hi, st = lower.tolist(), upper.tolist(), step.tolist()
    keys = node.keys.tolist()
    return np.array(
        [_meets(keys[i], keys[i + 1], lo, hi, st) for i in range(len(node.children))], dtype=bool
    )
