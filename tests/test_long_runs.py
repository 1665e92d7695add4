"""Long runs: many adds and samples with memory flat after fill (tracemalloc), and the agent.

The default test run does a small version; `pytest -m slow tests/test_long_runs.py` runs
10**6 adds and 10**4 samples per memory, and trains the capstone's agent on CartPole-v1 from
five seeds (with and without its scaled inputs), testing each on 100 greedy episodes.
"""

from __future__ import annotations

import gc
import itertools
import tracemalloc

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest

import rlmemlib as rm
from rlmemlib.agent import DQNConfig, evaluate, train
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


# ---------------------------------------------------------------------- the capstone's agent
SEEDS = range(5)  # the notebook trains seed 0
TEST_SEED = 10_000  # 100 greedy episodes, seeds 10,000 to 10,099, as in the notebook


def _train_and_test(seed: int, config: DQNConfig) -> tuple[float, float | None]:
    """Mean greedy return over 100 test episodes of the kept weights, and of the last ones."""
    env = gym.make("CartPole-v1")
    run = train(env, rm.CircularPool(15_000, rm.TransitionSpec.from_env(env)), 20_000, seed=seed,
                config=config, progress_bar=False)
    kept = float(evaluate(run.agent, env, episodes=100, seed=TEST_SEED).mean())
    if run.last_weights is None:
        return kept, None
    run.agent.net.flat[...] = run.last_weights
    return kept, float(evaluate(run.agent, env, episodes=100, seed=TEST_SEED).mean())


def _report(results: dict) -> str:
    return "; ".join(f"seed {seed}: {kept:.1f}" + ("" if last is None else f" (last weights {last:.1f})")
                     for seed, (kept, last) in results.items())


@pytest.mark.slow
def test_the_agent_solves_cartpole_for_most_seeds():
    threshold = gym.spec("CartPole-v1").reward_threshold
    results = {seed: _train_and_test(seed, DQNConfig()) for seed in SEEDS}
    print("\nkept weights, mean greedy return over 100 episodes:", _report(results))
    solved = sum(kept >= threshold for kept, _ in results.values())
    assert solved >= 4, _report(results)
    # Keeping the best validated weights is what the notebook says it is for:
    solved_last = sum(last >= threshold for _, last in results.values())
    assert solved_last < solved, _report(results)


@pytest.mark.slow
def test_without_scaled_inputs_the_agent_does_not_solve_cartpole():
    threshold = gym.spec("CartPole-v1").reward_threshold
    results = {seed: _train_and_test(seed, replace(DQNConfig(), obs_scale=None)) for seed in SEEDS}
    print("\nunscaled inputs, mean greedy return over 100 episodes:", _report(results))
    assert sum(kept >= threshold for kept, _ in results.values()) <= 1, _report(results)
