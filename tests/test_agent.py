"""The numpy DQN of rlmemlib.agent: its gradient, its optimiser, its determinism on every memory,
its errors, and that it solves CartPole-v1 for several seeds."""

from __future__ import annotations

import sys
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest

import rlmemlib as rm
from rlmemlib.agent import (PARTS, Adam, DQNAgent, DQNConfig, QNetwork, batch_fingerprint,
                            canonical_batch, evaluate, playback, playback_traced, td_loss_grad,
                            td_targets, train)

SMALL = DQNConfig(hidden=16, batch_size=16, learning_starts=200, target_every=100,
                  eps_decay_steps=1000)


@pytest.fixture
def env():
    env = gym.make("CartPole-v1")
    yield env
    env.close()


@pytest.fixture
def spec(env):
    return rm.TransitionSpec.from_env(env)


# ---------------------------------------------------------------------- gradient
def _numeric_grads(net, obs, action, y, huber, eps=1e-6):
    grads = []
    for p in net.params:
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = td_loss_grad(net, obs, action, y, huber)[0]
            p[i] = old - eps
            down = td_loss_grad(net, obs, action, y, huber)[0]
            p[i] = old
            g[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize("huber", [None, 0.5])
def test_gradient_matches_finite_differences(huber):
    rng = np.random.default_rng(0)
    net = QNetwork(3, 2, hidden=6, rng=rng)
    net.b1 += rng.normal(0, 0.1, 6)  # biases away from zero, so they are checked too
    net.b2 += rng.normal(0, 0.1, 2)
    obs = rng.normal(size=(9, 3))
    action = rng.integers(0, 2, 9)
    y = rng.normal(0, 1.5, 9)
    if huber is not None:  # both pieces of the Huber loss are exercised
        delta = net.q_values(obs)[np.arange(9), action] - y
        assert (np.abs(delta) < huber).any() and (np.abs(delta) > huber).any()
    _, grads = td_loss_grad(net, obs, action, y, huber)
    numeric = _numeric_grads(net, obs, action, y, huber)
    for name, g, num in zip(("w1", "b1", "w2", "b2"), grads, numeric):
        assert np.allclose(g, num, rtol=1e-5, atol=1e-8), f"gradient of {name} is wrong"


def test_targets_bootstrap_unless_terminated():
    rng = np.random.default_rng(1)
    net = QNetwork(4, 2, hidden=8, rng=rng)
    next_obs = rng.normal(size=(2, 4))
    reward = np.array([1.0, 1.0])
    y = td_targets(net, net, reward, next_obs, np.array([0.0, 1.0]), gamma=0.9, double=False)
    assert y[1] == 1.0  # terminated: the reward alone
    assert y[0] == 1.0 + 0.9 * net.q_values(next_obs[0]).max()


def _batch(terminated=False, truncated=False, n=8):
    rng = np.random.default_rng(2)
    return rm.Batch(obs=rng.normal(size=(n, 4)).astype(np.float32),
                    action=rng.integers(0, 2, n).astype(np.uint8),
                    reward=np.ones(n, np.float32),
                    next_obs=rng.normal(size=(n, 4)).astype(np.float32),
                    terminated=np.full(n, terminated), truncated=np.full(n, truncated))


def test_learning_cuts_the_bootstrap_on_terminated_not_truncated():
    plain, trunc, term = (DQNAgent(4, 2, SMALL, seed=0) for _ in range(3))
    plain.learn(_batch())
    trunc.learn(_batch(truncated=True))
    term.learn(_batch(terminated=True))
    assert all(np.array_equal(a, b) for a, b in zip(plain.net.params, trunc.net.params))
    assert not np.array_equal(plain.net.w2, term.net.w2)


# ---------------------------------------------------------------------- optimiser, target
def test_adam_matches_the_textbook_form():
    rng = np.random.default_rng(3)
    p = rng.normal(size=5)
    mine = p.copy()
    opt = Adam((mine,), lr=0.01, eps=0.0)  # with eps=0 the two forms are the same algebra
    m = v = np.zeros(5)
    for t in range(1, 21):
        g = np.sin(np.arange(5) + t)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        p = p - 0.01 * (m / (1 - 0.9**t)) / np.sqrt(v / (1 - 0.999**t))
        opt.step((g.copy(),))
    assert np.allclose(mine, p, rtol=1e-12, atol=1e-12)


def test_adam_minimises_a_quadratic():
    p = np.array([5.0, -3.0])
    opt = Adam((p,), lr=0.05)
    for _ in range(2000):
        opt.step((2 * (p - np.array([1.0, 2.0])),))
    assert np.allclose(p, [1.0, 2.0], atol=1e-3)


def test_target_update_is_polyak_and_hard_copy_at_tau_one():
    rng = np.random.default_rng(4)
    a, b = QNetwork(4, 2, 8, rng), QNetwork(4, 2, 8, rng)
    w_a, w_b = a.w1.copy(), b.w1.copy()
    a.copy_from(b, tau=0.25)
    assert np.allclose(a.w1, 0.75 * w_a + 0.25 * w_b)
    a.copy_from(b)
    assert all(np.array_equal(x, y) for x, y in zip(a.params, b.params))
    b.w1 += 1.0
    assert not np.array_equal(a.w1, b.w1)  # a copy, not a shared array


# ---------------------------------------------------------------------- determinism
def test_same_seed_same_weights_other_seed_other_weights(env, spec):
    runs = [train(env, rm.CircularPool(2000, spec), 1500, seed=s, config=SMALL) for s in (3, 3, 4)]
    assert runs[0].same_learning(runs[1])
    assert not runs[0].same_learning(runs[2])


def test_every_memory_trains_identically(env, spec):
    capacity, steps = 700, 1500  # smaller than the run: every ring wraps around
    memories = {
        "list": rm.ListMemory(capacity),  # no spec: it keeps int64 actions, the agent casts
        "pool": rm.CircularPool(capacity, spec),
        "shared pool": rm.CircularPool(capacity, spec, share_next_obs=True),
        "recycling": rm.RecyclingMemory(capacity, spec),
    }
    runs = {name: train(env, mem, steps, seed=5, config=SMALL) for name, mem in memories.items()}
    rng = np.random.default_rng(0)
    list_actions = memories["list"].sample(4, rng).action
    assert list_actions.dtype != memories["pool"].sample(4, rng).action.dtype
    first = runs["list"]
    assert len(first.episode_returns) > 10
    for name, run in runs.items():
        assert run.same_learning(first), f"{name} learned differently from the list memory"


class _OtherRule(rm.ListMemory):
    """A memory that breaks the shared sampling rule: one extra draw before every batch."""

    def sample(self, batch_size, rng):
        rng.integers(0, 2)
        return super().sample(batch_size, rng)


def test_a_memory_with_another_sampling_rule_learns_differently(env):
    same = train(env, rm.ListMemory(), 1200, seed=5, config=SMALL)
    other = train(env, _OtherRule(), 1200, seed=5, config=SMALL)
    assert not same.same_learning(other)


def test_a_recording_keeps_34_bytes_a_step_for_cartpole(env, spec):
    """The docstring's figure: observation (16), action (8), flags (2), a reward reference (8)."""
    run = train(env, rm.ListMemory(), 300, config=DQNConfig(hidden=8), progress_bar=False)
    rec = run.recording
    per_step = (rec.next_obs.nbytes + rec.actions.nbytes + rec.flags.nbytes
                + 8 * len(rec.rewards)) / rec.steps
    assert per_step == 34


def test_playback_gives_the_memory_the_same_transitions(env, spec):
    trained = rm.CircularPool(600, spec, share_next_obs=True)
    run = train(env, trained, 900, seed=6, config=SMALL)
    played, curve = playback_traced(lambda: rm.CircularPool(600, spec, share_next_obs=True),
                                    run, "pool", record_every=300)
    assert curve.steps == [0, 300, 600, 900]
    assert len(played) == len(trained)
    for i in range(-len(trained), 0):
        for got, want in zip(played[i], trained[i]):
            assert np.array_equal(got, want)


def test_playback_hands_out_arrays_as_the_environment_did(env):
    trained = rm.ListMemory()
    run = train(env, trained, 400, seed=6, config=SMALL)
    played = playback(rm.ListMemory(), run).memory
    for i in range(len(trained) - 1):
        within_episode = not (trained[i].terminated or trained[i].truncated)
        assert (trained[i].next_obs is trained[i + 1].obs) == within_episode  # training shared
        assert (played[i].next_obs is played[i + 1].obs) == within_episode    # so does playback
        assert type(played[i].reward) is type(trained[i].reward)
        assert type(played[i].terminated) is type(trained[i].terminated)
    assert len({id(t.obs) for t in played}) == len(played)  # a new array for every step
    assert _unique_bytes(played) == _unique_bytes(trained)  # the same objects, shared alike


def _unique_bytes(memory) -> int:
    """Bytes of a list memory's tuples and of every distinct object they hold."""
    seen, total = set(), 0
    for t in memory:
        for obj in (t, *t):
            if id(obj) not in seen:
                seen.add(id(obj))
                total += sys.getsizeof(obj)
    return total


def _makers(spec, capacity):
    return {"list": lambda: rm.ListMemory(capacity),
            "pool": lambda: rm.CircularPool(capacity, spec),
            "shared pool": lambda: rm.CircularPool(capacity, spec, share_next_obs=True),
            "recycling": lambda: rm.RecyclingMemory(capacity, spec)}


def test_every_memory_draws_the_training_batches_in_playback(env, spec):
    run = train(env, rm.CircularPool(700, spec), 1500, seed=8, config=SMALL)  # evicts 800
    assert len(run.fingerprints) == run.agent.updates == 1300
    for name, make in _makers(spec, 700).items():
        result = playback(make(), run, sample=True)
        assert result.batches == 1300
        assert result.same_batches, f"{name}: first other batch at update {result.first_mismatch}"
        assert result.add_seconds > 0 and result.sample_seconds > 0


def test_playback_finds_the_first_other_batch(env, spec):
    run = train(env, rm.CircularPool(700, spec), 1500, seed=8, config=SMALL)
    other_rule = playback(_OtherRule(700), run, sample=True)
    assert other_rule.first_mismatch == 0 and not other_rule.same_batches
    no_eviction = playback(rm.CircularPool(1500, spec), run, sample=True)
    assert no_eviction.first_mismatch == 700 - SMALL.learning_starts  # the first after the 701st add
    no_batches = playback(rm.CircularPool(700, spec), run)
    assert no_batches.batches == 0 and not no_batches.same_batches


def test_a_fingerprint_sees_one_changed_value():
    batch = canonical_batch(_batch())
    same = canonical_batch(_batch())
    assert batch_fingerprint(batch) == batch_fingerprint(same)
    for name in ("obs", "reward", "next_obs"):
        changed = canonical_batch(_batch())
        getattr(changed, name).flat[5] = np.nextafter(getattr(changed, name).flat[5], np.inf)
        assert batch_fingerprint(changed) != batch_fingerprint(batch), name
    flipped = canonical_batch(_batch())
    flipped.action[0] = 1 - flipped.action[0]
    assert batch_fingerprint(flipped) != batch_fingerprint(batch)


def test_train_times_each_part(env, spec):
    run = train(env, rm.ListMemory(), 600, seed=0, config=replace(SMALL, validate_every=300))
    assert set(run.seconds_in) == set(PARTS)
    assert all(t > 0 for t in run.seconds_in.values())
    assert sum(run.seconds_in.values()) <= run.seconds
    assert run.memory_seconds == run.seconds_in["add"] + run.seconds_in["sample"]


def test_train_records_memory_against_steps_under_tracemalloc(env):
    curve = rm.measure.MemoryCurve()
    with rm.measure.traced(count_blocks=False):
        curve.zero_here()
        train(env, rm.ListMemory(), 600, seed=0, config=SMALL, curve=curve, record_every=200)
    assert curve.steps == [200, 400, 600]
    assert curve.traced[0] < curve.traced[1] < curve.traced[2]  # a list memory grows


# ---------------------------------------------------------------------- validation
def test_the_agent_keeps_the_best_validated_weights(env, spec):
    cfg = replace(SMALL, validate_every=250, validate_episodes=3)
    run = train(env, rm.CircularPool(1500, spec), 1500, seed=2, config=cfg)
    assert run.validation_steps == [250, 500, 750, 1000, 1250, 1500]
    best = max(run.validation_means)
    last_best = max(k for k, m in enumerate(run.validation_means) if m == best)
    assert run.best_step == run.validation_steps[last_best]  # a tie goes to the later weights
    again = evaluate(run.agent, gym.make("CartPole-v1"), cfg.validate_episodes, cfg.validate_seed)
    assert again.mean() == best  # the network holds the kept weights


def test_validation_does_not_change_training(env, spec):
    plain = train(env, rm.CircularPool(1200, spec), 1200, seed=3,
                  config=replace(SMALL, validate_every=None))
    checked = train(env, rm.CircularPool(1200, spec), 1200, seed=3,
                    config=replace(SMALL, validate_every=300))
    assert plain.best_step is None and plain.validation_means == []
    assert np.array_equal(plain.actions, checked.actions)
    assert np.array_equal(plain.fingerprints, checked.fingerprints)
    assert plain.episode_returns == checked.episode_returns


def test_validation_needs_an_environment_from_make(spec):
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    with pytest.raises(ValueError, match="validate_every=None"):
        train(CartPoleEnv(), rm.ListMemory(), 10)
    run = train(CartPoleEnv(), rm.ListMemory(), 10, config=replace(SMALL, validate_every=None))
    assert len(run.actions) == 10


def test_scaled_inputs(env):
    agent = DQNAgent(4, 2, DQNConfig(obs_scale=(2.0, 4.0, 0.5, 1.0)), seed=0)
    assert np.array_equal(agent.inputs(np.array([1, 1, 1, 1], np.float32)), [0.5, 0.25, 2.0, 1.0])
    plain = DQNAgent(4, 2, DQNConfig(obs_scale=None), seed=0)
    assert np.array_equal(plain.inputs(np.array([1, 2, 3, 4], np.float32)), [1, 2, 3, 4])
    with pytest.raises(ValueError, match="obs_scale has 4 numbers, the observation has 3"):
        DQNAgent(3, 2, DQNConfig())


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, error, words", [
    ({"gamma": 1.5}, ValueError, "gamma must be in [0, 1]"),
    ({"lr": 0.0}, ValueError, "lr must be above 0"),
    ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
    ({"hidden": 2.5}, TypeError, "hidden must be an int"),
    ({"tau": 0.0}, ValueError, "tau must be above 0"),
    ({"huber": -1.0}, ValueError, "huber must be above 0"),
    ({"eps_end": "low"}, TypeError, "eps_end must be a number"),
    ({"validate_every": 0}, ValueError, "validate_every must be an int >= 1"),
    ({"validate_episodes": 1.5}, TypeError, "validate_episodes must be an int"),
    ({"obs_scale": (1.0, 0.0)}, ValueError, "obs_scale[1] must be above 0"),
])
def test_bad_config_is_refused(kwargs, error, words):
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        DQNConfig(**kwargs)


def test_bad_training_arguments_are_refused(env, spec):
    with pytest.raises(ValueError, match="steps must be an int >= 0"):
        train(env, rm.ListMemory(), -1)
    with pytest.raises(TypeError, match="steps must be an int"):
        train(env, rm.ListMemory(), 10.5)
    with pytest.raises(TypeError, match=r"add\(\) and sample\(\)"):
        train(env, [], 10)
    with pytest.raises(TypeError, match="config must be a DQNConfig"):
        train(env, rm.ListMemory(), 10, config={"lr": 1e-3})
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        train(env, rm.ListMemory(), 10, seed=-1)
    full = rm.CircularPool(10, spec)
    full.add(np.zeros(4, np.float32), 0, 1.0, np.zeros(4, np.float32), False, False)
    with pytest.raises(ValueError, match="must be empty"):
        train(env, full, 10)
    assert len(full) == 1


def test_continuous_actions_are_refused():
    env = gym.make("Pendulum-v1")
    with pytest.raises(TypeError, match="Discrete"):
        train(env, rm.ListMemory(), 10)


def test_evaluate_refuses_no_episodes(env):
    with pytest.raises(ValueError, match="episodes must be an int >= 1"):
        evaluate(DQNAgent(4, 2, SMALL), env, episodes=0)


# ---------------------------------------------------------------------- solving CartPole
def test_default_agent_solves_cartpole():
    """One seed here (the notebook runs seed 0); tests/test_long_runs.py runs five (-m slow)."""
    env = gym.make("CartPole-v1")
    run = train(env, rm.CircularPool(15_000, rm.TransitionSpec.from_env(env)), 20_000, seed=1)
    returns = evaluate(run.agent, env, episodes=100, seed=10_000)
    assert returns.mean() >= gym.spec("CartPole-v1").reward_threshold
