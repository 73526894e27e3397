"""xnwb.btree against h5py: object headers, layout messages and B-tree nodes of real files."""

from __future__ import annotations

import itertools
from pathlib import Path

import h5py
import numpy as np
import pytest

from xnwb import btree
from xnwb.rangefile import RangeFile
from xnwb.source import ByteSource


def _reader(path: Path):
    data = Path(path).read_bytes()
    return lambda start, n: data[start : start + n]


def _address(ds: h5py.Dataset) -> int:
    return h5py.h5o.get_info(ds.id).addr


def _leaves(read, tree: btree.ChunkTree) -> dict[tuple[int, ...], tuple[int, int, int]]:
    """Every chunk under the tree, by walking all of it: offset -> (address, size, mask)."""
    out = {}
    wave = [tree.address]
    while wave:
        nodes = [btree.parse_node(read(a, btree.node_read_size(tree)), a, tree) for a in wave]
        wave = []
        for node in nodes:
            assert not isinstance(node, int)
            if node.level == 0:
                for key, child, size, mask in zip(
                    node.keys[:-1], node.children, node.sizes, node.masks, strict=True
                ):
                    out[tuple(int(k) for k in key)] = (int(child), int(size), int(mask))
            else:
                wave.extend(int(c) for c in node.children)
    return out


def _chunk_iter(ds: h5py.Dataset) -> dict[tuple[int, ...], tuple[int, int, int]]:
    infos = []
    ds.id.chunk_iter(infos.append)
    return {tuple(i.chunk_offset): (i.byte_offset, i.size, i.filter_mask) for i in infos}


@pytest.mark.parametrize("libver", ["earliest", "v108"])  # object header v1 and v2 (OHDR)
@pytest.mark.parametrize(
    ("shape", "chunks", "options"),
    [
        ((1000, 10), (64, 3), {"compression": "gzip", "shuffle": True}),
        ((5000,), (7,), {}),
        ((40, 30, 20), (7, 11, 6), {"fletcher32": True}),
    ],
)
def test_walk_equals_chunk_iter(tmp_path, libver, shape, chunks, options):
    path = tmp_path / "f.h5"
    rng = np.random.default_rng(1)
    with h5py.File(path, "w", libver=libver) as f:
        for i in range(5):  # attributes and siblings push messages into continuation blocks
            f.attrs[f"a{i}"] = "x" * 200
        ds = f.create_dataset("x", data=rng.integers(0, 99, shape).astype("<i4"), chunks=chunks,
                              **options)
        for i in range(40):
            ds.attrs[f"attr{i}"] = np.arange(i + 1)
    read = _reader(path)
    with h5py.File(path) as f:
        superblock = btree.read_superblock(read)
        assert superblock.offset_size == 8
        tree = btree.find_chunk_tree(read, _address(f["x"]), superblock)
        assert tree.chunk_shape == chunks and tree.element_size == 4
        assert _leaves(read, tree) == _chunk_iter(f["x"])


def test_deep_tree_and_overfull_nodes_are_read(tmp_path):
    """20,000 chunks: three levels. A node with more entries than K=32 allows is re-read."""
    path = tmp_path / "deep.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(200_000, dtype="<i2").reshape(-1, 1), chunks=(10, 1))
    read = _reader(path)
    with h5py.File(path) as f:
        tree = btree.find_chunk_tree(read, _address(f["x"]), btree.read_superblock(read))
        root = btree.parse_node(read(tree.address, btree.node_read_size(tree)), tree.address, tree)
        assert root.level >= 2
        assert _leaves(read, tree) == _chunk_iter(f["x"])
    short = read(tree.address, 40)
    need = btree.parse_node(short, tree.address, tree)
    assert isinstance(need, int) and need > 40


def test_not_a_v1_btree_is_reported(tmp_path):
    path = tmp_path / "latest.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("chunked", data=np.zeros((100, 4)), chunks=(10, 4), maxshape=(None, 4))
        f.create_dataset("contiguous", data=np.zeros(10))
    read = _reader(path)
    with h5py.File(path) as f:
        superblock = btree.read_superblock(read)
        with pytest.raises(btree.UnsupportedLayout, match="layout message version 4"):
            btree.find_chunk_tree(read, _address(f["chunked"]), superblock)
        with pytest.raises(btree.UnsupportedLayout, match=r"version 4|not chunked"):
            btree.find_chunk_tree(read, _address(f["contiguous"]), superblock)


def test_unwritten_dataset_has_no_tree(tmp_path):
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", shape=(100, 4), chunks=(10, 4), dtype="<f4")
    read = _reader(path)
    with h5py.File(path) as f, pytest.raises(btree.UnsupportedLayout, match="ever written"):
        btree.find_chunk_tree(read, _address(f["x"]), btree.read_superblock(read))


def test_no_superblock_is_reported():
    with pytest.raises(btree.UnsupportedLayout, match="superblock"):
        btree.read_superblock(lambda start, n: b"\0" * n)


def _brute_force(first, last, lower, upper, step):
    axes = [range(lo, hi + 1, st) for lo, hi, st in zip(lower, upper, step, strict=True)]
    return any(tuple(first) <= c <= tuple(last) for c in itertools.product(*axes))


def test_box_test_equals_brute_force():
    rng = np.random.default_rng(3)
    step = [4, 3, 2]
    for _ in range(3000):
        lower = [int(rng.integers(0, 5)) * s for s in step]
        upper = [lo + int(rng.integers(0, 4)) * s for lo, s in zip(lower, step, strict=True)]
        a = [int(rng.integers(0, 9)) * s for s in step]
        b = [int(rng.integers(0, 9)) * s for s in step]
        first, last = sorted([a, b])
        expected = _brute_force(first, last, lower, upper, step)
        got = btree._meets(first, last, lower, upper, step)
        assert got == expected, (first, last, lower, upper)


def test_rangefile_serves_prefetched_nodes_by_bisection(tmp_path):
    """The prefetched-node lookup (bisection) returns exactly the bytes of the file."""
    path = tmp_path / "deep.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(100_000, dtype="<i2").reshape(-1, 1), chunks=(10, 1))
    raw = path.read_bytes()
    source = ByteSource(str(path))
    with RangeFile(source, len(raw), block_size=4096, max_blocks=4) as fobj:
        with h5py.File(fobj, "r") as f:
            assert _chunk_iter(f["x"]) == _chunk_iter(h5py.File(path)["x"])
        assert len(fobj._span_starts) > 100 and fobj._span_starts == sorted(fobj._spans)
        for start in fobj._span_starts[::17]:
            fobj.seek(start + 3)
            assert fobj.read(20) == raw[start + 3 : start + 23]
