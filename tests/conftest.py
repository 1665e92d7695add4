"""Shared fixtures of the rlmemlib unit and property tests.

Only plain fixtures live here (no hooks, nothing autouse), so the other test files in this
folder are not affected.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import rlmemlib as rm

# One factory per memory kind, all called as make(capacity, spec).
MEMORY_KINDS = {
    "ListMemory": lambda capacity, spec: rm.ListMemory(capacity, spec),
    "CircularPool": lambda capacity, spec: rm.CircularPool(capacity, spec),
    "CircularPool-shared": lambda capacity, spec: rm.CircularPool(capacity, spec, share_next_obs=True),
    "RecyclingMemory": lambda capacity, spec: rm.RecyclingMemory(capacity, spec),
}


def _field_bytes(value, dtype: np.dtype):
    """One field after the spec's cast, as (shape, dtype, raw bytes): equal means bit for bit."""
    arr = np.asarray(value)
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    return arr.shape, arr.dtype.str, arr.tobytes()


def canon(transition, spec: rm.TransitionSpec) -> tuple:
    """A transition (from ``add``'s arguments or from ``mem[i]``) in a form compared bit for bit.

    -0.0 and 0.0 differ here, and two NaNs are equal only when their bits are.
    ListMemory returns what it was given, so the cast is applied here, as ``add`` would.
    """
    obs, action, reward, next_obs, terminated, truncated = transition
    if isinstance(terminated, np.ndarray):
        terminated = terminated[()]
    if isinstance(truncated, np.ndarray):
        truncated = truncated[()]
    return (_field_bytes(obs, spec.obs_dtype), _field_bytes(action, spec.action_dtype),
            _field_bytes(reward, spec.reward_dtype), _field_bytes(next_obs, spec.obs_dtype),
            bool(terminated), bool(truncated))


def contents(mem, spec: rm.TransitionSpec) -> list:
    """Everything a memory holds, oldest first, bit for bit."""
    return [canon(mem[i], spec) for i in range(len(mem))]


def batch_rows(batch: rm.Batch, spec: rm.TransitionSpec) -> list:
    """A batch as a list of canonical rows (dtypes must already be the spec's)."""
    assert batch.obs.dtype == spec.obs_dtype and batch.next_obs.dtype == spec.obs_dtype
    assert batch.action.dtype == spec.action_dtype and batch.reward.dtype == spec.reward_dtype
    assert batch.terminated.dtype == np.bool_ and batch.truncated.dtype == np.bool_
    return [canon(row, spec) for row in zip(*batch)]


@pytest.fixture(scope="session")
def helpers():
    """The comparison helpers above, for test modules (a conftest is not imported directly)."""
    return SimpleNamespace(canon=canon, contents=contents, batch_rows=batch_rows, kinds=MEMORY_KINDS)


@pytest.fixture(params=list(MEMORY_KINDS), ids=list(MEMORY_KINDS))
def make_memory(request):
    """Each memory kind in turn, as a factory make(capacity, spec)."""
    return MEMORY_KINDS[request.param]


@pytest.fixture(scope="session")
def cartpole_spec() -> rm.TransitionSpec:
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    spec = rm.TransitionSpec.from_env(env)
    env.close()
    return spec


@pytest.fixture(scope="session")
def cartpole_data() -> list:
    """6000 real CartPole-v1 transitions from a seeded random policy (about 270 episodes)."""
    from rlmemlib.rollout import cartpole_transitions

    return cartpole_transitions(6000, seed=0)
