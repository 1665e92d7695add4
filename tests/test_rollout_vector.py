"""``rm.rollout`` with a gymnasium VectorEnv: the transitions stored are exactly those of each
sub-environment stepped alone (same seeds, same actions), under NEXT_STEP and SAME_STEP
autoreset; the reset step of NEXT_STEP is never stored; other modes are refused. And the shared
pool keeps its sharing when the sub-environments' rows arrive interleaved.
"""

from __future__ import annotations

import gc

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import rlmemlib as rm
from rlmemlib.measure import traced

MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP]


def make_envs(n: int, mode=AutoresetMode.NEXT_STEP, copy: bool = True, max_steps: int | None = None):
    def one():
        return gym.make("CartPole-v1", max_episode_steps=max_steps) if max_steps else gym.make("CartPole-v1")
    return SyncVectorEnv([one] * n, autoreset_mode=mode, copy=copy)


def recording_policy(n: int, seed: int):
    """Random actions from a generator of our own, each batch recorded."""
    rng = np.random.default_rng(seed)
    record = []

    def policy(_obs):
        actions = rng.integers(0, 2, size=n)
        record.append(actions.copy())
        return actions
    return policy, record


def alone(n: int, seed: int, actions: list, mode, max_steps: int | None = None) -> list:
    """The transitions of each sub-environment stepped alone, interleaved as a vector env
    steps them: for each step, sub-environment 0, 1, ... (a NEXT_STEP reset step stores none)."""
    envs = [gym.make("CartPole-v1", max_episode_steps=max_steps) if max_steps else gym.make("CartPole-v1")
            for _ in range(n)]
    obs = [e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]
    resetting = [False] * n
    out = []
    for batch in actions:
        for i, env in enumerate(envs):
            if resetting[i]:  # the vector env spends this step resetting sub-environment i
                resetting[i] = False
                continue
            nxt, reward, term, trunc, _ = env.step(int(batch[i]))
            out.append((obs[i], int(batch[i]), reward, nxt, term, trunc))
            if term or trunc:
                obs[i] = env.reset()[0]
                resetting[i] = mode == AutoresetMode.NEXT_STEP
            else:
                obs[i] = nxt
    return out


def canon(t) -> tuple:
    o, a, r, n, te, tr = t
    return (np.asarray(o, np.float32).tobytes(), int(a), np.float32(r).tobytes(),
            np.asarray(n, np.float32).tobytes(), bool(te), bool(tr))


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("n", [1, 3, 4])
def test_stored_transitions_are_each_sub_environment_alone(mode, n):
    seed, steps = 7, 150
    policy, actions = recording_policy(n, seed=1)
    mem = rm.ListMemory()
    stats = rm.rollout(make_envs(n, mode), mem, steps, seed=seed, policy=policy, progress_bar=False)
    expected = [canon(t) for t in alone(n, seed, actions, mode)]
    assert [canon(t) for t in mem] == expected
    assert stats.steps == steps and stats.transitions == len(mem)
    assert stats.transitions + stats.autoreset_steps == n * steps
    if mode == AutoresetMode.NEXT_STEP:
        assert stats.autoreset_steps >= stats.episodes - n  # one reset step per episode end
    else:
        assert stats.autoreset_steps == 0
    assert stats.episodes > 2 * n and sum(stats.episode_lengths) <= len(mem)
    assert all(t.reward == 1.0 for t in mem)  # CartPole pays 1 per real step; a reset step pays 0


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_time_limits_are_stored_as_truncations_with_their_final_observation(mode):
    policy, actions = recording_policy(3, seed=2)
    mem = rm.ListMemory()
    rm.rollout(make_envs(3, mode, max_steps=9), mem, 60, seed=0, policy=policy, progress_bar=False)
    assert [canon(t) for t in mem] == [canon(t) for t in alone(3, 0, actions, mode, max_steps=9)]
    assert sum(t.truncated for t in mem) >= 6


def test_an_env_that_reuses_its_arrays_gives_the_same_transitions():
    """copy=False hands back the same observation array every step: the rollout keeps its own."""
    got = {}
    for copy in (True, False):
        policy, _ = recording_policy(4, seed=3)
        mem = rm.ListMemory()
        rm.rollout(make_envs(4, copy=copy), mem, 80, seed=3, policy=policy, progress_bar=False)
        got[copy] = [canon(t) for t in mem]
    assert got[True] == got[False]


@pytest.mark.parametrize("kind", ["CircularPool", "CircularPool-shared", "RecyclingMemory"])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_every_memory_stores_the_same_rows(kind, mode, helpers):
    spec = rm.TransitionSpec.from_env(gym.make("CartPole-v1"))
    ref, mem = rm.ListMemory(300, spec), helpers.kinds[kind](300, spec)
    for m in (ref, mem):
        rm.rollout(make_envs(4, mode), m, 200, seed=5, progress_bar=False)
    assert helpers.contents(mem, spec) == helpers.contents(ref, spec)


def test_default_policy_is_seeded():
    runs = []
    for _ in range(2):
        mem = rm.ListMemory()
        rm.rollout(make_envs(3), mem, 50, seed=11, progress_bar=False)
        runs.append([canon(t) for t in mem])
    assert runs[0] == runs[1]


def test_on_step_counts_vector_steps():
    seen = []
    rm.rollout(make_envs(2), rm.ListMemory(), 12, seed=0, on_step=seen.append, progress_bar=False)
    assert seen == list(range(1, 13))


def test_a_mode_that_is_not_supported_is_refused():
    envs = make_envs(2, AutoresetMode.DISABLED)
    mem = rm.ListMemory()
    with pytest.raises(ValueError, match="autoreset mode Disabled is not supported.*NEXT_STEP.*SAME_STEP"):
        rm.rollout(envs, mem, 5, seed=0, progress_bar=False)
    assert len(mem) == 0
    envs = make_envs(2)
    envs.metadata = {k: v for k, v in envs.metadata.items() if k != "autoreset_mode"}
    with pytest.raises(ValueError, match="does not say its autoreset mode"):
        rm.rollout(envs, mem, 5, seed=0, progress_bar=False)


# ---------------------------------------------------------------- sharing survives interleaving
CAPACITY = 20_000  # at a few thousand rows the side store's doubling slack shows: about 2 B more


class Recorder:
    """Keeps every batch a rollout hands over (copies), to replay into memories later."""

    def __init__(self):
        self.batches = []

    def add_batch(self, *arrays):
        self.batches.append(tuple(np.array(a) for a in arrays))


def recorded(n: int, mode, steps: int) -> list:
    rec = Recorder()
    rm.rollout(make_envs(n, mode), rec, steps, seed=0, progress_bar=False)
    return rec.batches


def shared_bytes_per_transition(batches: list):
    """A full shared pool fed these batches: tracemalloc bytes per transition; and an unshared
    pool fed the same, to check the shared one against."""
    spec = rm.TransitionSpec.from_env(gym.make("CartPole-v1"))
    gc.collect()
    with traced(count_blocks=False) as m:
        pool = rm.CircularPool(CAPACITY, spec, share_next_obs=True)
        for batch in batches:
            pool.add_batch(*batch)
        gc.collect()
    plain = rm.CircularPool(CAPACITY, spec)
    for batch in batches:
        plain.add_batch(*batch)
    return m.current / CAPACITY, pool, plain


def check_sharing_survives_interleaving(mode, helpers):
    spec = rm.TransitionSpec.from_env(gym.make("CartPole-v1"))
    per = {}
    for n in (1, 4, 8):
        per[n], pool, plain = shared_bytes_per_transition(recorded(n, mode, (CAPACITY + 2000) // n))
        assert len(pool) == CAPACITY
        # exact, at every episode end and truncation too, bit for bit against the unshared pool
        ends = [i for i in range(CAPACITY) if plain.flags[(plain._start + i) % CAPACITY]]
        for i in ends + list(range(0, CAPACITY, 97)):
            assert helpers.canon(pool[i], spec) == helpers.canon(plain[i], spec), (n, i)
        a, b = (m.sample(4096, np.random.default_rng(n)) for m in (pool, plain))
        assert helpers.batch_rows(a, spec) == helpers.batch_rows(b, spec)
        assert len(ends) > CAPACITY / 40  # many episode ends in the window
    for n in (4, 8):
        assert per[n] < 0.65 * spec.nbytes, per
        assert abs(per[n] - per[1]) < 0.5, per  # near the single-environment figure
    assert per[1] < 0.65 * spec.nbytes


def test_shared_pool_keeps_its_bytes_with_interleaved_sub_environments(helpers):
    check_sharing_survives_interleaving(AutoresetMode.NEXT_STEP, helpers)


@pytest.mark.slow
def test_shared_pool_keeps_its_bytes_with_same_step_autoreset(helpers):
    check_sharing_survives_interleaving(AutoresetMode.SAME_STEP, helpers)


def test_naive_single_chain_would_lose_the_sharing():
    """Why the pool finds chains by content: with 8 sub-environments, the next row's obs is
    the same environment's next obs only where it is one environment."""
    n = 8
    mem = rm.ListMemory()
    rm.rollout(make_envs(n), mem, 200, seed=0, progress_bar=False)
    rows = list(mem)
    next_row = sum(np.array_equal(a.next_obs, b.obs) for a, b in zip(rows, rows[1:]))
    within_n = sum(any(np.array_equal(a.next_obs, b.obs) for b in rows[k + 1:k + 1 + n])
                   for k, a in enumerate(rows))
    ends = sum(t.terminated or t.truncated for t in rows)
    assert next_row == 0  # the single chain: every row a break
    assert within_n >= len(rows) - ends - n  # chains n rows apart (n - 1 after a reset step)


def round_robin(envs: int, steps: int, episode: int = 1000) -> list:
    """Transitions of ``envs`` environments stepped in turn, each chained, long episodes."""
    rows, obs = [], [np.full(4, 1000.0 * e, np.float32) for e in range(envs)]
    for t in range(steps):
        for e in range(envs):
            nxt = np.full(4, 1000.0 * e + t + 1, np.float32)
            end = (t + 1) % episode == 0
            rows.append((obs[e], 0, 1.0, nxt, end, False))
            obs[e] = np.full(4, -1000.0 * e - t, np.float32) if end else nxt
    return rows


@pytest.mark.parametrize("envs, shares", [(63, True), (64, False), (100, False)])
def test_sharing_reaches_63_interleaved_environments_and_no_further(envs, shares):
    """A hop lives in six bits: 63 environments in turn still share, 64 no longer do, and then
    each transition pays its row and a side-store entry, more than the unshared pool."""
    spec = rm.TransitionSpec((4,), np.float32, (), np.uint8, np.float32, 0, 1)
    capacity = 12_000
    shared, plain = rm.CircularPool(capacity, spec, share_next_obs=True), rm.CircularPool(capacity, spec)
    for t in round_robin(envs, capacity // envs + 200):
        shared.add(*t)
        plain.add(*t)
    hops = shared.flags >> 2
    per = shared.nbytes / capacity
    if shares:
        assert (hops == envs).mean() > 0.95 and per < 24
    else:
        assert not hops.any() and per >= 22 + 16 + 8 > plain.nbytes / capacity
    rng = np.random.default_rng(0)
    a, b = shared.sample(2000, rng), plain.sample(2000, np.random.default_rng(0))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_next_step_ignores_the_action_of_a_resetting_sub_environment():
    """Lesson 08: under NEXT_STEP, the step after an episode end resets that sub-environment,
    whatever action it is given: reward 0, no flag, the reset observation."""
    runs = []
    for other in (0, 1):
        envs = make_envs(2)
        envs.reset(seed=3)
        rng = np.random.default_rng(0)
        while True:
            _, _, te, tr, _ = envs.step(rng.integers(0, 2, size=2))
            if (te | tr).any():
                break
        i = int(np.flatnonzero(te | tr)[0])
        actions = np.array([1, 1])
        actions[i] = other  # two different actions for the resetting sub-environment
        obs, reward, te, tr, _ = envs.step(actions)
        runs.append((obs[i].tobytes(), reward[i], te[i], tr[i]))
    assert runs[0] == runs[1] and runs[0][1:] == (0.0, False, False)
