"""A hypothesis state machine per memory: adds, samples, indexing, clear, save/load and bad input,
checked after every step against a plain reference model.

The model keeps the last ``capacity`` transitions in a Python list, cast to the spec's dtypes.
Observations chain like an agent's (next step's obs is this step's next_obs) unless the
machine starts a new episode or breaks the chain on purpose.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import rlmemlib as rm

SPEC = rm.TransitionSpec((3,), np.float32, (), np.uint8, np.float32, 0, 2)
FLOATS = st.floats(width=32, allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1.0])
OBS = st.lists(FLOATS, min_size=3, max_size=3).map(lambda v: np.array(v, np.float32))
BAD = st.sampled_from([
    dict(action=3), dict(action=-1), dict(action=1.5), dict(action="1"), dict(obs="text"),
    dict(obs=np.zeros(4, np.float32)), dict(reward="1"), dict(reward=1e39), dict(terminated=2),
    dict(next_obs=[1.0, 2.0]), dict(truncated=None),
])


def _bits(x) -> bytes:
    return np.asarray(x).tobytes()


class MemoryMachine(RuleBasedStateMachine):
    kind = "pool"

    def _new(self, capacity):
        return {"list": lambda: rm.ListMemory(capacity, SPEC),
                "pool": lambda: rm.CircularPool(capacity, SPEC),
                "shared": lambda: rm.CircularPool(capacity, SPEC, share_next_obs=True),
                "recycling": lambda: rm.RecyclingMemory(capacity, SPEC)}[self.kind]()

    @initialize(capacity=st.integers(1, 7), first=OBS)
    def start(self, capacity, first):
        self.capacity = capacity
        self.mem = self._new(capacity)
        self.model: list[tuple] = []
        self.obs = first
        self.folder = tempfile.TemporaryDirectory()

    def teardown(self):
        if hasattr(self, "folder"):
            self.folder.cleanup()

    def _cast(self, obs, action, reward, next_obs, terminated, truncated):
        return (np.array(obs, np.float32), np.uint8(action), np.float32(reward),
                np.array(next_obs, np.float32), bool(terminated), bool(truncated))

    @rule(next_obs=OBS, action=st.integers(0, 2), reward=st.floats(-1e6, 1e6, width=32),
          end=st.sampled_from(["go on", "go on", "terminated", "truncated", "break"]), fresh=OBS)
    def add(self, next_obs, action, reward, end, fresh):
        terminated, truncated = end == "terminated", end == "truncated"
        self.mem.add(self.obs, action, reward, next_obs, terminated, truncated)
        self.model.append(self._cast(self.obs, action, reward, next_obs, terminated, truncated))
        del self.model[:-self.capacity]
        self.obs = fresh if end != "go on" else next_obs  # a new episode or a broken chain

    @rule(steps=st.lists(st.tuples(OBS, st.integers(0, 2), st.floats(-1e6, 1e6, width=32),
                                   st.sampled_from(["go on", "go on", "terminated", "truncated",
                                                    "break"]), OBS), max_size=12),
          bad_row=st.none() | st.integers(0, 11))
    def add_batch(self, steps, bad_row):
        """Chained steps as one batch; with ``bad_row``, one action out of the space refuses it."""
        rows, obs = [], self.obs
        for next_obs, action, reward, end, fresh in steps:
            rows.append((obs, action, reward, next_obs, end == "terminated", end == "truncated"))
            obs = fresh if end != "go on" else next_obs
        arrays = [np.array([r[k] for r in rows]) if rows else np.zeros((0, 3) if k in (0, 3) else 0)
                  for k in range(6)]
        if bad_row is not None and rows:
            arrays[1] = arrays[1].astype(np.int64)
            arrays[1][bad_row % len(rows)] = 3
            with pytest.raises(ValueError, match=rf"action\[{bad_row % len(rows)}\] is 3"):
                self.mem.add_batch(*arrays)
            return
        self.mem.add_batch(*arrays)
        self.model += [self._cast(*r) for r in rows]
        del self.model[:-self.capacity]
        self.obs = obs

    @rule(bad=BAD, next_obs=OBS)
    def add_bad_input(self, bad, next_obs):
        values = dict(obs=self.obs, action=1, reward=1.0, next_obs=next_obs, terminated=False,
                      truncated=False)
        values.update(bad)
        with pytest.raises((ValueError, TypeError)):
            self.mem.add(**values)

    @precondition(lambda self: self.model)
    @rule(batch=st.integers(1, 9), seed=st.integers(0, 2**32 - 1))
    def sample(self, batch, seed):
        got = self.mem.sample(batch, np.random.default_rng(seed))
        idx = np.random.default_rng(seed).integers(0, len(self.model), size=batch)
        for k, field in enumerate(got):
            want = np.array([self.model[i][k] for i in idx])
            assert _bits(field.astype(want.dtype)) == _bits(want), k

    @precondition(lambda self: not self.model)
    @rule()
    def sample_empty(self):
        with pytest.raises(ValueError, match="empty"):
            self.mem.sample(1, np.random.default_rng(0))

    @rule(i=st.integers(-10, 10))
    def index(self, i):
        if -len(self.model) <= i < len(self.model):
            for got, want in zip(self.mem[i], self.model[i]):
                assert _bits(np.asarray(got, np.asarray(want).dtype)) == _bits(want)
        else:
            with pytest.raises(IndexError):
                self.mem[i]

    @rule()
    def clear(self):
        self.mem.clear()
        self.model.clear()

    @rule()
    def save_and_load(self):
        path = Path(self.folder.name) / "mem.npz"
        self.mem.save(path)
        self.mem = type(self.mem).load(path)

    @invariant()
    def holds_exactly_the_model(self):
        if not hasattr(self, "mem"):
            return
        assert len(self.mem) == len(self.model)
        for i, want in enumerate(self.model):
            got = self.mem[i]
            for g, w in zip(got, want):
                assert _bits(np.asarray(g, np.asarray(w).dtype)) == _bits(w), (i, got, want)


def _machine(kind):
    machine = type(f"{kind.title()}Machine", (MemoryMachine,), {"kind": kind})
    machine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
    return machine.TestCase


TestListMemory = _machine("list")
TestCircularPool = _machine("pool")
TestSharedPool = _machine("shared")
TestRecyclingMemory = _machine("recycling")
