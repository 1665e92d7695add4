"""Long runs: many adds and samples with memory flat after fill (tracemalloc).

The default test run does a small version; `pytest -m slow tests/test_long_runs.py` runs
10**6 adds and 10**4 samples per memory.
"""

from __future__ import annotations

import gc
import itertools
import tracemalloc

import numpy as np
import pytest

import rlmemlib as rm
from rlmemlib.rollout import cartpole_transitions

SPEC = rm.TransitionSpec((4,), np.float32, (), np.uint8, np.float32, 0, 1)
DATA = cartpole_transitions(3_000, seed=11)


def _makers(capacity):
    return {
        "CircularPool": lambda: rm.CircularPool(capacity, SPEC),
        "CircularPool(shared)": lambda: rm.CircularPool(capacity, SPEC, share_next_obs=True),
        "RecyclingMemory": lambda: rm.RecyclingMemory(capacity, SPEC),
        "ListMemory": lambda: rm.ListMemory(capacity, SPEC),
    }


def _run(make, capacity, adds, samples):
    """Traced bytes right after fill (+ one warm-up pass) and at the end of the run."""
    gc.collect()
    tracemalloc.start()
    try:
        mem = make()
        rng = np.random.default_rng(0)
        out = SPEC.empty_batch(64)
        stream = itertools.cycle(DATA)
        for t in itertools.islice(stream, 2 * capacity):  # fill, then one pass of overwrites
            mem.add(*t)
        gc.collect()
        at_fill = tracemalloc.get_traced_memory()[0]
        every = max(1, adds // samples)
        for k, t in enumerate(itertools.islice(stream, adds)):
            mem.add(*t)
            if k % every == 0:
                if isinstance(mem, rm.ListMemory):
                    mem.sample(64, rng)
                else:
                    mem.sample(64, rng, out=out)
        gc.collect()
        at_end = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return mem, at_fill, at_end


def _check(name, capacity, adds, samples):
    mem, at_fill, at_end = _run(_makers(capacity)[name], capacity, adds, samples)
    assert len(mem) == capacity
    # Flat: what grows after fill is at most a few kilobytes of interpreter noise, for a
    # memory of hundreds of kilobytes (a leak of one byte per add would show as adds bytes).
    assert at_end - at_fill < 4096, f"{name} grew by {at_end - at_fill} bytes over {adds} adds"


@pytest.mark.parametrize("name", list(_makers(1)))
def test_memory_is_flat_after_fill_small(name):
    _check(name, capacity=2_000, adds=30_000, samples=300)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(_makers(1)))
def test_memory_is_flat_after_fill_long(name):
    _check(name, capacity=50_000, adds=1_000_000, samples=10_000)


def test_the_flatness_check_sees_a_leak():
    class Leaky(rm.CircularPool):
        def add(self, *args):
            super().add(*args)
            self.kept = getattr(self, "kept", []) + [args[0]]  # keeps every observation

    with pytest.raises(AssertionError, match="grew by"):
        mem, at_fill, at_end = _run(lambda: Leaky(500, SPEC), 500, 2_000, 10)
        assert at_end - at_fill < 4096, f"Leaky grew by {at_end - at_fill} bytes"
