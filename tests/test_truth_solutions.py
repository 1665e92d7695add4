"""The claims of exercises 00-05 (and of their checks' messages) that their cells do not measure
themselves, measured here.

Each test names the sentence it stands behind, in the solutions notebook or in
``rlmemlib/checks/exNN.py``.
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections import deque

import gymnasium as gym
import numpy as np
import pytest

import rlmemlib as rm
from rlmemlib.checks import ex02, ex03, ex04, ex05


@pytest.fixture(scope="module")
def cartpole():
    return rm.cartpole_transitions(5_000, seed=0)


# ================================================================ 00 measuring memory
def test_00_a_view_counts_only_its_header_yet_keeps_the_whole_buffer():
    """Exercise 1: 'sys.getsizeof of a view counts only the view's own header (112 bytes for a
    one-dimensional view), yet the view keeps its base array's whole buffer alive.'"""
    base = np.zeros(100_000)
    view = base[::100]
    assert sys.getsizeof(view) == 112
    assert sys.getsizeof(base[::2, None]) > 112          # more dimensions, a longer header
    freed = []
    weakref.finalize(base, freed.append, True)
    del base
    assert not freed and view.base.nbytes == 800_000     # the view keeps the 800,000 bytes
    del view
    assert freed


def test_00_and_02_a_list_of_small_arrays_costs_about_136_bytes_per_item():
    """ex02's messages: 'about 136 bytes per item for a list of 2,000 small arrays'; exercise 00
    prints 'about 140 B per observation' for 10,000."""
    for n in (2_000, 10_000):
        held, m = rm.measure.footprint(lambda: [np.zeros(4, np.float32) for _ in range(n)])
        assert 130 < m.current / n < 142


# ================================================================ 01 experience and references
def test_01_a_discrete_action_space_has_dtype_int64():
    """Exercise 2, hint 2: 'Leave action_space.dtype aside: it is int64, eight bytes'."""
    space = gym.make("CartPole-v1").action_space
    assert space.dtype == np.int64 and space.dtype.itemsize == 8


class _Episode:
    def __init__(self):
        self.observations = []
        self.steps = []


class _CyclicStep:
    def __init__(self, episode, action):
        self.episode = episode
        self.action = action
        episode.steps.append(self)


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="three generations up to 3.13")
def test_01_the_collector_left_on_frees_only_the_cycles_of_the_young_generation():
    """Exercise 4, after the measurement: 'Those runs freed most of the dropped episodes, not all.
    An episode dropped after the last run simply waited; one that was still in use at a run had
    moved up a generation, where the young collections that followed did not look.'"""
    transitions = rm.cartpole_transitions(2_000, seed=0)
    runs: list = []

    def count(phase, info):
        if phase == "start":
            runs.append(info["generation"])

    gc.collect()
    assert gc.isenabled()
    gc.callbacks.append(count)
    try:
        dropped, episode, runs_at_start = [], _Episode(), 0
        for obs, action, reward, next_obs, terminated, truncated in transitions:
            episode.observations.append(obs)
            _CyclicStep(episode, action)
            if terminated or truncated:
                ref, started = weakref.ref(episode), runs_at_start
                runs_at_start = len(runs)     # the next episode is in use from here on
                episode = _Episode()          # a run while this allocates still sees the old one
                dropped.append((ref, started, len(runs)))   # unbound: later runs can free it
    finally:
        gc.callbacks.remove(count)
    alive = [(started, ended) for ref, started, ended in dropped if ref() is not None]
    assert runs and set(runs) == {0}                      # it ran, young collections only
    assert 0 < len(alive) < len(dropped) / 2              # most freed, not all
    for started, ended in alive:                          # each one left: dropped after the last
        assert ended == len(runs) or started < ended      # run, or in use at a run
    assert all(ref() is None for ref, started, ended in dropped if started == ended < len(runs))
    del dropped, episode, alive
    gc.collect()


# ================================================================ 02 list memory
def test_02_a_cartpole_observation_is_a_112_byte_header_and_16_bytes_of_data():
    """Exercise 3's Predict: 'A CartPole observation array costs 128 bytes by sys.getsizeof: a
    112-byte header and 16 bytes of data.'"""
    obs, _ = gym.make("CartPole-v1").reset(seed=0)
    assert sys.getsizeof(obs) == 128 and obs.nbytes == 16


def test_02_check_message_list_memory_about_240_bytes(cartpole):
    """ex02's message: 'over 150 bytes per transition for rm.ListMemory filled by a rollout
    (about 240)'."""
    env = gym.make("CartPole-v1")

    def fill():
        memory = rm.ListMemory()
        rm.rollout(env, memory, 5_000, seed=0, progress_bar=False)
        return memory

    assert 230 < ex02.reference_bytes_per_transition(fill) < 250


# ================================================================ 03 circular pool
def test_03_check_data_has_560_transitions_and_27_episode_ends_of_both_kinds():
    """Exercise 3: 'The check adds 560 real transitions with 27 episode ends, most by falling
    (terminated) and some by a time limit (truncated), ... at capacities 1, 2, 7 and 50'."""
    data = ex03._episodes()
    terminated = sum(bool(t[4]) for t in data)
    truncated = sum(bool(t[5]) and not t[4] for t in data)
    assert len(data) == 560 and terminated + truncated == 27
    assert terminated > truncated > 0
    import inspect
    assert "(1, 2, 7, 50)" in inspect.getsource(ex03.verify_shared_ring)


def test_03_check_messages_on_float16_and_float32_digits():
    """ex03's messages: float16 'keeps about 3 significant digits', float32 'about 7'."""
    assert np.finfo(np.float16).precision == 3
    assert 6 <= np.finfo(np.float32).precision <= 7 and 7 < 24 * np.log10(2) < 7.3


# ================================================================ 04 object recycling
def test_04_check_draws_most_ends_and_tie_counted_from_1():
    """ex04's comment: 'the most ends at draw 13 of 20; a tie at draws 6 and 9 of 10 (counted
    from 1)'."""
    memory = ex04._sampled_memory()
    (seed_a, size_a, steps_a), (seed_b, size_b, steps_b) = ex04._DRAWS
    first = ex04._draws(memory, seed_a, size_a, steps_a)
    assert steps_a == 20 and ex04._first_most(first) + 1 == 13
    second = ex04._draws(memory, seed_b, size_b, steps_b)
    ends = [int(b.terminated.sum()) for b in second]
    assert steps_b == 10 and [k + 1 for k, e in enumerate(ends) if e == max(ends)] == [6, 9]


def test_04_sample_into_a_reused_batch_keeps_nothing_but_allocates(cartpole):
    """Exercise 3: 'Nothing kept, yet each call allocates and frees a few KiB', for the full
    CartPole pool of 2,000 the exercise samples from, and at the lesson's capacity."""
    spec = rm.TransitionSpec.from_env(gym.make("CartPole-v1"))
    for pool in (rm.CircularPool(2_000, spec), rm.CircularPool(5_000, spec, share_next_obs=True)):
        for t in cartpole[:pool.capacity]:
            pool.add(*t)
        batch, rng = spec.empty_batch(256), np.random.default_rng(0)
        pool.sample(256, rng, out=batch)
        kept, peaks = [], []
        for _ in range(11):
            with rm.measure.traced(count_blocks=False) as m:
                pool.sample(256, rng, out=batch)
            kept.append(m.current)
            peaks.append(m.peak)
        assert np.median(kept) < 100
        assert 256 * 8 < np.median(peaks) < 16 * 1024


# ================================================================ 05 explicit deletion
def _per_transition(transitions, new_reward: bool) -> float:
    kept, m = rm.measure.footprint(lambda: deque(
        rm.Transition(t[0].copy(), t[1], float(i) if new_reward else t[2], t[3].copy(), t[4], t[5])
        for i, t in enumerate(transitions)))
    return m.current / len(kept)


def test_05_a_stored_transition_with_arrays_of_its_own_costs_about_360_bytes(cartpole):
    """Exercise 2: 'costs about 360 bytes ... (The lesson's estimate, 384 bytes, also counts a
    new float for each reward; CartPole hands out one shared 1.0.) ... a fixed cost of 400 bytes,
    rounded up from that'; ex05: 'COST = 400 ... about 360 measured, rounded up'."""
    assert all(t[2] is cartpole[0][2] for t in cartpole)        # one shared reward object
    shared_reward = _per_transition(cartpole, new_reward=False)
    own_reward = _per_transition(cartpole, new_reward=True)
    assert 350 < shared_reward < 370
    assert 375 < own_reward < 395 and 20 < own_reward - shared_reward < 28
    assert own_reward < ex05.COST


def test_05_the_fixed_charge_breaks_for_views(cartpole):
    """Exercise 2: 'as long as no transition costs more: one whose observations are views of a
    bigger array would'."""
    budget = 64 * 1024
    memory = ex05.BudgetMemory(budget, ex05.COST)
    gc.collect()
    with rm.measure.traced() as m:
        trajectory = np.ones((100_001, 4), np.float32)
        for i in range(1_000):
            memory.add(trajectory[i], 0, 1.0, trajectory[i + 1], False, False)
        del trajectory
    assert memory.nbytes <= budget < m.current


def test_05_the_trainer_keeps_its_memory_through_a_view_a_bound_method_and_a_cycle():
    """Exercise 3, hint 2: 'memory.add is a bound method: it keeps the memory in .__self__.
    memory.obs[-256:] is a view: its .base is the whole observation array. The memory and its
    sampler refer to each other: ... reference counting cannot free them; only the cyclic
    garbage collector can'."""
    spec = rm.TransitionSpec.from_env(gym.make("CartPole-v1"))
    trainer = ex05.Trainer(rm.CircularPool(1_000, spec))
    memory = trainer.memory
    assert trainer.callbacks["store"].__self__ is memory
    assert trainer.last_batch.base is memory.obs and len(trainer.last_batch) == 256
    probe = weakref.ref(memory)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        del memory
        trainer.last_batch = trainer.last_batch.copy()
        del trainer.callbacks["store"]
        trainer.memory = None
        assert probe() is not None          # the cycle memory <-> sampler: reference counting stops
        gc.collect()
        assert probe() is None
    finally:
        if was_enabled:
            gc.enable()
