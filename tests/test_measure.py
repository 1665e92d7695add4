"""rlmemlib.measure: the tracemalloc context manager, footprint, byte formatting, RSS, curves."""

from __future__ import annotations

import gc
import time
import tracemalloc

import numpy as np
import pytest

from rlmemlib.measure import MemoryCurve, Traced, fmt_bytes, footprint, rss, rss_peak_during, traced, traced_now

MiB = 2**20


@pytest.fixture
def tracemalloc_off():
    """Each test starts with tracemalloc off and leaves it off."""
    was_on = tracemalloc.is_tracing()
    if was_on:
        tracemalloc.stop()
    yield
    if tracemalloc.is_tracing():
        tracemalloc.stop()
    if was_on:
        tracemalloc.start()


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (1, "1 B"), (39, "39 B"), (1023, "1023 B"), (0.5, "0.5 B"), (1024, "1.00 KiB"),
    (1536, "1.50 KiB"), (10 * 1024, "10.0 KiB"), (1000 * 1024, "1000 KiB"), (1_000_000, "977 KiB"),
    (MiB, "1.00 MiB"), (123456789, "118 MiB"), (3 * 2**30, "3.00 GiB"), (2**40, "1.00 TiB"),
    (2**50, "1024 TiB"), (-3 * MiB, "-3.00 MiB"), (-39, "-39 B"), (np.int64(2048), "2.00 KiB"),
])
def test_fmt_bytes(n, text):
    assert fmt_bytes(n) == text


def test_traced_sees_numpy_buffers_exactly(tracemalloc_off):
    with traced() as m:
        block = np.ones(1_000_000, np.uint8)
    assert 1_000_000 <= m.current < 1_000_000 + 4096
    assert m.peak >= m.current and m.blocks >= 1
    assert not tracemalloc.is_tracing()  # it started tracemalloc, so it stopped it
    del block


def test_traced_peak_sees_what_was_freed_inside(tracemalloc_off):
    with traced() as m:
        np.ones(2_000_000, np.uint8).sum()
    assert m.peak >= 2_000_000
    assert abs(m.current) < 4096 and m.blocks < 10


def test_traced_leaves_tracemalloc_on_when_it_was_on(tracemalloc_off):
    tracemalloc.start()
    keep = bytearray(50_000)
    with traced() as outer:
        with traced(count_blocks=False) as inner:
            data = bytearray(100_000)
        more = bytearray(30_000)
    assert tracemalloc.is_tracing()
    assert 100_000 <= inner.current < 101_000 and inner.blocks == 0
    assert 130_000 <= outer.current < 132_000
    assert traced_now() >= 180_000
    tracemalloc.stop()
    assert traced_now() == 0
    del keep, data, more


def test_traced_stops_tracing_when_the_block_raises(tracemalloc_off):
    with pytest.raises(ZeroDivisionError):
        with traced():
            1 / 0
    assert not tracemalloc.is_tracing()


def test_traced_str_is_rounded():
    t = Traced(current=1536, peak=3 * MiB, blocks=7)
    assert str(t) == "current 1.50 KiB, peak 3.00 MiB"


def test_footprint(tracemalloc_off):
    obj, m = footprint(lambda: bytearray(10_000))
    assert isinstance(obj, bytearray) and len(obj) == 10_000
    assert 10_000 <= m.current < 10_200
    arrays, m = footprint(lambda: [np.zeros(1000, np.float64) for _ in range(10)])
    assert 80_000 <= m.current < 80_000 + 10 * 200  # ten buffers and their headers
    assert m.blocks >= 10


def test_footprint_collects_earlier_garbage_first(tracemalloc_off):
    class Node:
        pass

    tracemalloc.start()
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the cyclic collector frees it
    a.payload = np.zeros(1_000_000, np.uint8)
    del a, b

    def build():
        gc.collect()  # were the cycle still there, its megabyte would be freed here, inside
        return bytearray(100)

    _, m = footprint(build)
    tracemalloc.stop()
    assert abs(m.current) < 1000  # not -1 MB: the cycle was freed before measuring


def test_rss_is_the_process_resident_size():
    value = rss()
    assert isinstance(value, int) and value > 10 * MiB


def test_rss_peak_during_sees_a_large_allocation():
    def work():
        big = np.ones(150 * MiB, np.uint8)  # written, so resident
        time.sleep(0.3)
        return int(big[::4096].sum())

    before = rss()
    result, peak = rss_peak_during(work)
    assert result == len(range(0, 150 * MiB, 4096))
    assert isinstance(peak, int)
    assert peak - before > 100 * MiB  # coarse: the operating system's view


def test_rss_peak_during_runs_the_function_exactly_once():
    """memory_profiler reruns a function that ends before a fifth RSS reading (with a ten times
    shorter interval); rss_peak_during must not: a build with side effects would run again."""
    calls = []

    def short():
        calls.append(1)
        return sum(range(100))

    result, peak = rss_peak_during(short)
    assert result == 4950 and calls == [1]
    assert peak > 10 * MiB


def test_memory_curve(tracemalloc_off):
    curve = MemoryCurve("pool")
    curve.record(0, nbytes=100)
    curve.record(10, nbytes=250)
    assert curve.steps == [0, 10] and curve.traced == [100, 250] and curve.last == 250
    assert curve.rss == []
    assert MemoryCurve().last == 0

    tracemalloc.start()
    curve = MemoryCurve("traced", with_rss=True).zero_here()
    curve.record(0)
    keep = np.ones(500_000, np.uint8)
    curve.record(1)
    tracemalloc.stop()
    assert abs(curve.traced[0]) < 4096 and 500_000 <= curve.traced[1] < 510_000
    assert len(curve.rss) == 2 and all(isinstance(r, int) and r > 0 for r in curve.rss)
    del keep
