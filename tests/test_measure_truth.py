"""rlmemlib.measure's allocator helpers: fresh processes, glibc's heap and its mapping threshold.

The lessons use these to show what RSS does at ``del`` and what tracing costs; each helper is
checked here against a case where the answer is known.
"""

from __future__ import annotations

import builtins
import tracemalloc

import numpy as np
import pytest

from rlmemlib import measure
from rlmemlib.measure import (c_heap, fmt_bytes, freed_arrays_rss, in_c_heap, in_fresh_process, is_glibc,
                              small_arrays_rss)

MiB = 2**20
glibc_only = pytest.mark.skipif(not is_glibc(), reason="the thresholds and mallinfo2 are glibc's")


# ---------------------------------------------------------------------- in_fresh_process
def test_in_fresh_process_returns_the_result():
    assert in_fresh_process(fmt_bytes, 3 * MiB) == "3.00 MiB"


def test_in_fresh_process_runs_in_another_interpreter():
    import os

    assert in_fresh_process(os.getpid) != os.getpid()


def test_in_fresh_process_refuses_what_a_new_interpreter_cannot_import():
    with pytest.raises(ValueError, match="module-level function"):
        in_fresh_process(lambda: 1)

    def local():
        return 1

    with pytest.raises(ValueError, match="module-level function"):
        in_fresh_process(local)


def test_in_fresh_process_reports_the_error_of_the_child():
    import math

    with pytest.raises(RuntimeError, match=r"(?s)math\.sqrt\(-1\) failed.*math domain error"):
        in_fresh_process(math.sqrt, -1)


# ---------------------------------------------------------------------- the C library's heap
@pytest.mark.skipif(not is_glibc(), reason="/proc and [heap] are Linux's")
def test_in_c_heap_tells_heap_blocks_from_own_mappings():
    small = np.ones(1000, np.uint8)      # far below any mapping threshold: from the heap
    big = np.ones(64 * MiB, np.uint8)    # above glibc's 32 MiB cap: always a mapping of its own
    assert in_c_heap(small.ctypes.data) is True
    assert in_c_heap(big.ctypes.data) is False


def test_in_c_heap_is_none_without_proc(monkeypatch):
    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(builtins, "open", no_proc)
    assert in_c_heap(12345) is None


@glibc_only
def test_c_heap_counts_what_malloc_hands_out():
    before = c_heap()
    assert set(before) == {"in_use", "free", "mapped"} and all(v >= 0 for v in before.values())
    arrays = [np.ones(2, np.float64) for _ in range(10_000)]  # 16-byte data blocks from malloc
    grown = c_heap()["in_use"] - before["in_use"]
    assert grown >= 10_000 * 16
    del arrays


def test_c_heap_is_none_off_glibc(monkeypatch):
    monkeypatch.setattr(measure, "is_glibc", lambda: False)
    assert c_heap() is None


# ---------------------------------------------------------------------- the experiments
@glibc_only
def test_freed_arrays_rss_sees_the_threshold_rise_and_its_cap():
    fresh = in_fresh_process(freed_arrays_rss, [10])
    assert fresh[0]["heap"] is False and fresh[0]["returned"] > 9 * MiB
    after_30 = in_fresh_process(freed_arrays_rss, [30, 10])
    assert after_30[0]["returned"] > 29 * MiB                         # 30 MiB mapped, went back...
    assert after_30[1]["heap"] is True and after_30[1]["returned"] < MiB  # ...and raised the threshold
    after_40 = in_fresh_process(freed_arrays_rss, [40, 10])
    assert after_40[1]["heap"] is False and after_40[1]["returned"] > 9 * MiB  # 40 MiB is past the cap


@glibc_only
def test_small_arrays_rss_accounts_for_tracing_and_the_heap():
    off = in_fresh_process(small_arrays_rss, 100_000, False)
    on = in_fresh_process(small_arrays_rss, 100_000, True)
    assert off["traced"] == 0 and off["tracing_records"] < 4096   # its empty tables only
    assert 100_000 * 128 <= on["traced"] < 100_000 * 150       # 3 blocks: 96 + 16 + 16 B, and the list
    assert on["tracing_records"] > 0
    assert on["rss_growth"] - off["rss_growth"] > 0.8 * on["tracing_records"]
    assert 1.9 < off["c_heap_growth"] / (100_000 * 2 * 16) < 2.1  # 32 B per 16-byte request
    assert off["c_heap_free"] >= 100_000 * 2 * 32 * 0.9           # kept in the heap after del
    assert not tracemalloc.is_tracing()                             # nothing traced here


_HEAP_IN_PIECES = """
import json
import numpy as np
from rlmemlib.measure import in_c_heap
a = np.ones(30 * 2**20, np.uint8)
del a                                   # the threshold rises to 30 MiB: 25 MiB now comes from the heap
blocks = [np.ones(25 * 2**20, np.uint8) for _ in range(3)]
print(json.dumps([in_c_heap(b.ctypes.data) for b in blocks]))
"""


@glibc_only
def test_in_c_heap_sees_every_piece_of_the_heap():
    """numpy's madvise on big blocks splits the heap into several lines of /proc/self/maps."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _HEAP_IN_PIECES], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True, True, True]


def test_footprint_with_repeat_keeps_the_smallest_build():
    sizes = iter([30_000, 10_000, 20_000])
    obj, m = measure.footprint(lambda: bytearray(next(sizes)), repeat=3)
    assert len(obj) == 10_000 and 10_000 <= m.current < 10_200  # the smallest, with its object
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="repeat must be an int >= 1"):
            measure.footprint(bytearray, repeat=bad)
