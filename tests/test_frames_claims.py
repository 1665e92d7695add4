"""What lesson 07 says about other libraries' sizing checks, tested against their code.

The libraries are not dependencies of the course (they are the benchmark's peers, see
bench/README.md): each test is skipped when its library is not installed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium import spaces

import rlmemlib as rm

ATARI = spaces.Box(0, 255, (4, 84, 84), np.uint8)
QUOTE = ("This system does not have apparently enough memory to store the complete replay buffer")


class _Memory:
    def __init__(self, available):
        self.available = available
        self.total = available


def sb3_buffer(monkeypatch, available, size=1_000, **kwargs):
    """An SB3 ReplayBuffer made while psutil reports ``available`` bytes; (buffer, warnings)."""
    buffers = pytest.importorskip("stable_baselines3.common.buffers")
    monkeypatch.setattr(buffers.psutil, "virtual_memory", lambda: _Memory(available))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rb = buffers.ReplayBuffer(size, ATARI, spaces.Discrete(6), device="cpu", **kwargs)
    return rb, [str(w.message) for w in caught if QUOTE[:20] in str(w.message)]


def arrays_nbytes(rb) -> int:
    arrays = [rb.observations, rb.actions, rb.rewards, rb.dones, rb.timeouts]
    if not rb.optimize_memory_usage:
        arrays.append(rb.next_observations)
    return sum(a.nbytes for a in arrays)


def test_sb3_warns_with_the_quoted_text_and_makes_the_buffer_anyway(monkeypatch):
    rb, said = sb3_buffer(monkeypatch, available=10**6)
    assert len(said) == 1 and said[0].startswith(QUOTE + " ")  # word for word, then the sizes
    assert said[0].endswith("GB > 0.00GB")
    assert rb.observations.shape == (1_000, 1, 4, 84, 84)       # warned, and went on


def test_sb3_check_leaves_the_timeouts_array_out_of_its_sum(monkeypatch):
    rb, _ = sb3_buffer(monkeypatch, available=10**12)
    counted = arrays_nbytes(rb) - rb.timeouts.nbytes
    rb, said = sb3_buffer(monkeypatch, available=counted)  # exactly what it counts
    assert said == [] and arrays_nbytes(rb) > counted       # no warning, yet the arrays need more


def test_cpprb_makes_its_buffer_resident_at_construction():
    cpprb = pytest.importorskip("cpprb")
    before = rm.measure.rss()
    rb = cpprb.ReplayBuffer(4_000, {"obs": {"shape": (4, 84, 84), "dtype": np.uint8}})
    grown = rm.measure.rss() - before
    assert grown > 0.9 * 4_000 * 4 * 84 * 84  # every page written at once: fails fast
    del rb
