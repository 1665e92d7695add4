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


# ------------------------------------------------------------------ RLlib's check, read from its code
def _rllib_function(name: str, path: str):
    """A function of RLlib's source, run on its own (importing RLlib needs extras the course
    does not install): its code as Ray ships it, with psutil, log_once and logger given."""
    import ast
    import importlib.util
    import logging

    spec = importlib.util.find_spec("ray")
    if spec is None or spec.origin is None:
        pytest.skip("ray is not installed")
    from pathlib import Path

    source = (Path(spec.origin).parent / path).read_text()
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    text = ast.get_source_segment(source, node)
    node.decorator_list = []
    space = {"psutil": None, "log_once": lambda key: True, "logger": logging.getLogger("rllib-test")}
    exec(compile(ast.Module([node], []), path, "exec"), space)
    return space[name], text, source


class _Batch:
    def __init__(self, count, nbytes):
        self.count, self._nbytes = count, nbytes

    def size_bytes(self):
        return self._nbytes


def test_rllib_raises_when_its_estimate_is_above_total_memory_and_checks_on_the_first_add():
    import types

    check, text, source = _rllib_function("warn_replay_capacity",
                                          "rllib/utils/replay_buffers/replay_buffer.py")
    stack = 4 * 84 * 84
    for total, raises in ((16 * 2**30, True), (64 * 2**30, False)):
        check.__globals__["psutil"] = types.SimpleNamespace(
            virtual_memory=lambda t=total: types.SimpleNamespace(total=t))
        if raises:  # a million stacks (28 GB) against 16 GiB of memory
            with pytest.raises(ValueError, match="Estimated max memory usage for replay buffer"):
                check(item=_Batch(1, stack), num_items=1_000_000)
        else:  # against 64 GiB: a log line, and the run goes on
            check(item=_Batch(1, stack), num_items=1_000_000)
    # it counts the machine's total memory, not what is available, and runs in add()
    assert ".total" in text and ".available" not in text
    add = source.split("    def add(")[1].split("\n    def ")[0]
    assert "warn_replay_capacity(item=batch" in add


# ------------------------------------------------------------------ what Linux refuses at once
def _meminfo() -> dict:
    with open("/proc/meminfo") as f:
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}


def test_linux_refuses_only_a_plan_above_memory_and_swap_together():
    """Lesson 07: by default (heuristic overcommit) a plan larger than RAM and swap together is
    refused at once; a plan below that is accepted, even above what is available now."""
    from pathlib import Path

    mode = Path("/proc/sys/vm/overcommit_memory")
    if not mode.exists() or mode.read_text().strip() != "0":
        pytest.skip("not Linux with the default (heuristic) overcommit mode")
    info = _meminfo()
    limit = info["MemTotal"] + info["SwapTotal"]
    with pytest.raises(MemoryError, match="Unable to allocate"):
        np.zeros(int(limit * 1.05), np.uint8)
    planned = int(info["MemTotal"] * 0.97)  # more than is free, less than the limit
    big = np.zeros(planned, np.uint8)       # accepted: pages arrive when written
    assert big.nbytes == planned and rm.measure.rss() < planned / 2
    del big
