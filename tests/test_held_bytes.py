"""Bytes held for the reads that follow (xnwb.heldbytes) and how a ByteSource serves them."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from xnwb.heldbytes import HeldBytes
from xnwb.source import ByteSource

FILE = bytes(range(256)) * 64  # 16 KiB whose every byte says where it is (mod 256)


def _held(*blocks: tuple[int, int], capacity: int = 2**20, metadata: int = 0) -> HeldBytes:
    held = HeldBytes(capacity)
    for start, end in blocks:
        held.add(start, FILE[start:end], metadata=metadata)
    return held


def test_ranges_inside_or_across_adjacent_blocks_are_served_partial_ones_are_not():
    held = _held((100, 200), (200, 300), (400, 500))
    got = held.take([120, 190, 250, 290, 399, 450], [10, 20, 50, 20, 2, 60])
    assert got[0] == FILE[120:130]  # inside one block
    assert got[1] == FILE[190:210]  # across two adjacent blocks, joined
    assert got[2] == FILE[250:300]  # up to a block's end exactly
    assert got[3] is None  # runs past the held bytes (300-400 is not held)
    assert got[4] is None  # begins before a block
    assert got[5] is None  # runs past the last block
    assert isinstance(got[0], memoryview)  # a view, not a copy


def test_a_block_goes_once_every_byte_but_its_metadata_has_been_served():
    held = _held((0, 100), metadata=20)
    assert held.peek(0, 20) == FILE[:20]  # metadata parsed from it: not counted
    held.take([20], [50])
    assert len(held) == 1 and held.nbytes == 100
    held.take([70], [10])
    assert len(held) == 1
    held.take([80], [20])  # 80 bytes served + 20 of metadata: the whole block
    assert len(held) == 0 and held.nbytes == 0
    assert held.take([90], [5]) == [None]


def test_the_oldest_blocks_go_first_beyond_the_capacity():
    held = _held((0, 100), (100, 200), (200, 300), capacity=250)
    assert held.nbytes == 200 and len(held) == 2
    assert held.take([50], [1]) == [None]  # the oldest went
    assert held.take([150, 250], [1, 1]) == [FILE[150:151], FILE[250:251]]
    held.add(0, FILE[:300])  # bigger than the capacity: never held
    assert held.take([0], [1]) == [None]


def test_overlapping_blocks_are_not_added_twice():
    held = _held((100, 200))
    held.add(150, FILE[150:250])
    assert held.nbytes == 100 and held.take([210], [5]) == [None]


def test_claims_split_a_range_between_threads_and_end_when_released():
    held = _held((100, 200))
    first = held.claim(0, 400)
    assert first == [(0, 100), (200, 400)]
    assert held.claim(50, 300) == []  # held or being fetched by the first claimer
    assert held.claim(350, 500) == [(400, 500)]
    held.release(first)
    assert held.claim(0, 120) == [(0, 100)]


def test_concurrent_takes_count_every_byte_once():
    held = _held((0, 8000))
    barrier = threading.Barrier(8)

    def reader(k: int) -> None:
        barrier.wait()
        for i in range(10):
            start = (k * 10 + i) * 100
            (got,) = held.take([start], [100])
            assert got == FILE[start : start + 100]

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(held) == 0  # 80 x 100 bytes: served exactly once each


def test_a_byte_source_serves_held_bytes_and_fetches_the_rest(tmp_path, http_remote):
    path = tmp_path / "f.bin"
    path.write_bytes(FILE)
    url = http_remote.upload("f.bin", str(path))
    source = ByteSource(url)
    source.fetch([0], [1])  # resolve the object first
    source.hold(1000, FILE[1000:5000])
    server = http_remote.server
    server.reset()
    got = source.fetch([1200, 4000], [100, 500])
    assert [bytes(g) for g in got] == [FILE[1200:1300], FILE[4000:4500]]
    assert server.count() == 0  # no request: both held
    got = source.fetch([4900, 9000], [50, 100])
    assert [bytes(g) for g in got] == [FILE[4900:4950], FILE[9000:9100]]
    assert server.count() == 1  # only the range not held
    assert source.claim_unheld(0, 6000) == [(0, 1000), (5000, 6000)]
    clone = pickle.loads(pickle.dumps(source))
    assert clone._held is None  # held bytes stay in the process that read them


@pytest.mark.parametrize("capacity", [0, -1])
def test_no_capacity_holds_nothing(capacity):
    held = HeldBytes(capacity)
    held.add(0, FILE[:10])
    assert len(held) == 0 and held.take([0], [1]) == [None]


def test_blocks_older_than_max_age_go_when_the_store_is_next_used(monkeypatch):
    import xnwb.heldbytes

    clock = [100.0]
    monkeypatch.setattr(xnwb.heldbytes.time, "monotonic", lambda: clock[0])
    held = HeldBytes(2**20, max_age=30.0)
    held.add(0, FILE[:100])
    clock[0] = 120.0
    held.add(100, FILE[100:200])
    clock[0] = 131.0  # the first block is 31 s old, the second 11 s
    assert held.take([10, 110], [5, 5]) == [None, FILE[110:115]]
    assert held.nbytes == 100


def test_a_new_pin_drops_the_bytes_held_under_the_old_one(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(FILE)
    source = ByteSource(str(path))
    source.pin()
    source.hold(0, FILE[:100])
    assert bytes(source.fetch([0], [4])[0]) == FILE[:4]
    path.write_bytes(b"A" * len(FILE))
    source.pin()  # the file as it is now
    assert bytes(source.fetch([0], [4])[0]) == b"AAAA"  # read again, not the held bytes


def test_a_read_waits_for_bytes_another_thread_is_fetching_but_not_for_its_own():
    held = HeldBytes(capacity=10_000)
    claimed = held.claim(100, 200)
    # the claiming thread's own reads of those bytes never wait (it is fetching them)
    tic = time.monotonic()
    assert held.wait_for_claims([150], [10], timeout=5) is False
    assert time.monotonic() - tic < 1
    waited = []

    def reader() -> None:
        waited.append(held.wait_for_claims([150, 500], [10, 10], timeout=10))
        waited.append(held.take([150], [10])[0])

    other = threading.Thread(target=reader)
    other.start()
    time.sleep(0.2)
    assert other.is_alive()  # waiting for the claim
    held.add(100, bytes(range(100)))
    held.release(claimed)
    other.join(5)
    assert waited[0] is True and bytes(waited[1]) == bytes(range(50, 60))
    # bytes nobody is fetching: no wait
    assert held.wait_for_claims([0], [10], timeout=5) is False
