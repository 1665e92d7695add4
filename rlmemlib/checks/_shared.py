"""What the exercise checks share: seeded CartPole data, its spec, and ways to compare
transitions. Cached, so a notebook builds the data once however many checks use it."""

from __future__ import annotations

import functools

import numpy as np

from ..spec import TransitionSpec


@functools.lru_cache(maxsize=1)
def cartpole_spec() -> TransitionSpec:
    """The spec of CartPole-v1 (4 float32 observations, a one-byte action)."""
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    spec = TransitionSpec.from_env(env)
    env.close()
    return spec


@functools.lru_cache(maxsize=4)
def cartpole_data(n: int) -> tuple:
    """``n`` CartPole transitions from the seeded random agent (the same in every run)."""
    from ..rollout import cartpole_transitions

    return tuple(cartpole_transitions(n, seed=0))


def transition_key(obs, next_obs) -> bytes:
    """A transition recognised by the bytes of its two observations."""
    return np.asarray(obs, np.float32).tobytes() + np.asarray(next_obs, np.float32).tobytes()


@functools.lru_cache(maxsize=4)
def _step_numbers(n: int) -> dict:
    return {transition_key(t[0], t[3]): k for k, t in enumerate(cartpole_data(n))}


def step_of(transition, n: int):
    """The step of ``cartpole_data(n)`` a stored transition came from, or None."""
    try:
        return _step_numbers(n).get(transition_key(transition[0], transition[3]))
    except (TypeError, ValueError, IndexError):
        return None


def same_transition(a, b) -> bool:
    """Two transitions (six values each) equal field by field."""
    return all(np.array_equal(x, y) for x, y in zip(a, b))
