"""Feed a gymnasium environment, single or vector, into any memory, seeded, with a progress bar.

Design choices:

* A vector environment (``gymnasium.vector.VectorEnv``) is fed with one ``add_batch`` per
  step: one row per sub-environment, in the order of the sub-environments, so a memory sees
  the rows interleaved as the environment hands them over.
* Only real transitions are stored. Under gymnasium's default ``NEXT_STEP`` autoreset, the step
  after an episode ends resets that sub-environment: its "transition" would go from the final
  observation to the reset observation, with reward 0 and no flag, an action the environment
  ignored, and a value target that teaches nonsense. That row is left out. Under
  ``SAME_STEP`` the step that ends an episode returns the reset observation, and the true
  ``next_obs`` is ``info["final_obs"]``: that is what is stored. Other modes are refused.
* Progress bars are for people: they show in JupyterLab and stay quiet when the output must be
  deterministic (tests and the command that regenerates notebooks set ``RLMEMLIB_PROGRESS=0``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["rollout", "RolloutStats", "autoreset_mode", "progress_enabled", "progress"]


def progress_enabled() -> bool:
    """Whether progress bars show: on unless ``RLMEMLIB_PROGRESS`` is ``0``."""
    return os.environ.get("RLMEMLIB_PROGRESS", "1") not in ("0", "false", "no", "off")


def progress(total: int, desc: str = "", enabled: bool | None = None):
    """A tqdm progress bar, or a do-nothing stand-in when progress bars are off."""
    if enabled is None:
        enabled = progress_enabled()
    if not enabled:
        return _NoBar()
    return _tqdm()(total=total, desc=desc, leave=False, mininterval=0.2, file=sys.stdout)


_TQDM = None


def _tqdm():
    """tqdm's class, set up once so that a bar allocates nothing lasting inside a measurement.

    The plain text bar, written to stdout (JupyterLab redraws it in place): a notebook widget
    bar would leave tens of kilobytes of widget state behind in the kernel after every run.
    """
    global _TQDM
    if _TQDM is None:
        from tqdm.std import tqdm

        tqdm.monitor_interval = 0  # no monitor thread: it would allocate in every measured block
        tqdm(total=1, disable=True).close()  # tqdm makes its class-wide locks on the first bar
        _TQDM = tqdm
    return _TQDM


if progress_enabled():
    # Import tqdm now, with rlmemlib, not at the first rollout: that one is
    # often inside a lesson's tracemalloc measurement, which the import would inflate.
    _tqdm()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class RolloutStats:
    """What a rollout did: steps, transitions stored, finished episodes, their returns and lengths.

    For a single environment every step stores one transition. For a vector environment
    ``steps`` counts calls of ``env.step``; ``transitions`` counts rows stored (one per
    sub-environment and step, less ``autoreset_steps``, the reset steps of ``NEXT_STEP``
    autoreset, never stored). Episodes are listed in the order they end (sub-environments of
    one step in their order).
    """

    steps: int = 0
    transitions: int = 0
    autoreset_steps: int = 0
    episode_returns: list = field(default_factory=list)
    episode_lengths: list = field(default_factory=list)

    @property
    def episodes(self) -> int:
        return len(self.episode_returns)


def rollout(env, memory, steps: int, seed: int = 0, policy: Callable | None = None,
            on_step: Callable[[int], None] | None = None, progress_bar: bool | None = None,
            desc: str = "rollout") -> RolloutStats:
    """Run ``env`` for ``steps`` steps and store every real transition in ``memory``.

    ``policy(obs) -> action`` picks actions (a batch of them for a vector environment); by
    default a uniformly random policy seeded with ``seed``. The environment is reset with
    ``seed`` first (a vector environment seeds sub-environment ``i`` with ``seed + i``), and
    a single environment again after every episode end. ``on_step(step)`` is called after each
    step, e.g. to record a :class:`~rlmemlib.measure.MemoryCurve`.

    Each observation is copied once as it arrives, from ``reset`` and from ``step``, and the
    copy is shared: it is one transition's ``next_obs`` and the next one's ``obs``. Some
    environments write every observation into one array and return it at every step; without
    that copy, ``obs`` and ``next_obs`` would be that one array by the time ``add`` copies them.

    For a ``gymnasium.vector.VectorEnv``, ``steps`` counts calls of ``env.step``; each stores
    one transition per sub-environment with ``memory.add_batch``, exactly the transitions each
    sub-environment would give stepped alone, for ``NEXT_STEP`` and ``SAME_STEP`` autoreset
    alike. See the module notes.

    >>> import gymnasium as gym, rlmemlib as rm
    >>> env = gym.make("CartPole-v1")
    >>> mem = rm.ListMemory()
    >>> stats = rollout(env, mem, 100, seed=0, progress_bar=False)
    >>> len(mem), stats.steps
    (100, 100)
    >>> envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 4)
    >>> stats = rollout(envs, rm.ListMemory(), 100, seed=0, progress_bar=False)
    >>> stats.transitions + stats.autoreset_steps == 4 * stats.steps
    True
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    run = _rollout_vector if _is_vector(env) else _rollout_single
    bar = progress(int(steps), desc, progress_bar)
    try:
        return run(env, memory, int(steps), seed, policy, on_step, bar)
    finally:
        bar.close()


def _is_vector(env) -> bool:
    from gymnasium.vector import VectorEnv

    return isinstance(env, VectorEnv) or isinstance(getattr(env, "unwrapped", None), VectorEnv)


def _random_policy(env, seed: int) -> Callable:
    env.action_space.seed(seed)
    return lambda _obs: env.action_space.sample()


def _rollout_single(env, memory, steps, seed, policy, on_step, bar) -> RolloutStats:
    policy = policy or _random_policy(env, seed)
    stats = RolloutStats()
    obs = _own(env.reset(seed=seed)[0])
    ep_return, ep_len = 0.0, 0
    for step in range(steps):
        action = policy(obs)
        if isinstance(action, np.integer):
            action = int(action)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        next_obs = _own(next_obs)  # the environment may write into its array again
        memory.add(obs, action, reward, next_obs, terminated, truncated)
        ep_return += float(reward)
        ep_len += 1
        stats.steps += 1
        stats.transitions += 1
        if on_step is not None:
            on_step(step + 1)
        bar.update()
        if terminated or truncated:
            stats.episode_returns.append(ep_return)
            stats.episode_lengths.append(ep_len)
            ep_return, ep_len = 0.0, 0
            obs = _own(env.reset()[0])
        else:
            obs = next_obs
    return stats


def _own(obs):
    """A copy of an array observation (other observations, such as ints, are immutable)."""
    return obs.copy() if isinstance(obs, np.ndarray) else obs


def autoreset_mode(env) -> str:
    """``"NextStep"`` or ``"SameStep"``: the autoreset mode of a vector env, or a clear error."""
    mode = getattr(env, "metadata", {}).get("autoreset_mode")
    name = getattr(mode, "value", mode)
    if name in ("NextStep", "SameStep"):
        return name
    if mode is None:
        raise ValueError("this vector environment does not say its autoreset mode "
                         "(gymnasium 1.x sets env.metadata['autoreset_mode']); without it the "
                         "reset steps cannot be told from real transitions")
    raise ValueError(f"autoreset mode {name} is not supported: rollout stores the transitions of "
                     "a vector environment that resets its sub-environments itself, with "
                     "AutoresetMode.NEXT_STEP (gymnasium's default) or AutoresetMode.SAME_STEP; "
                     "with DISABLED, reset them yourself and call memory.add_batch")


def _rollout_vector(env, memory, steps, seed, policy, on_step, bar) -> RolloutStats:
    same_step = autoreset_mode(env) == "SameStep"
    policy = policy or _random_policy(env, seed)
    stats = RolloutStats()
    obs, _ = env.reset(seed=seed)
    obs = np.array(obs)  # our own copy: an env made with copy=False reuses its array
    n = len(obs)
    resetting = np.zeros(n, bool)  # NEXT_STEP: sub-environments whose next step is a reset
    returns, lengths = np.zeros(n), np.zeros(n, np.int64)
    for step in range(steps):
        actions = np.asarray(policy(obs))
        next_obs, reward, terminated, truncated, info = env.step(actions)
        stored_next = _true_next_obs(next_obs, info) if same_step else next_obs
        real = ~resetting  # a reset step is not a transition: never stored
        memory.add_batch(obs[real], actions[real], reward[real], stored_next[real],
                         terminated[real], truncated[real])
        _count(stats, real, reward, terminated | truncated, returns, lengths)
        resetting = np.zeros(n, bool) if same_step else terminated | truncated
        obs = np.array(next_obs)
        if on_step is not None:
            on_step(step + 1)
        bar.update()
    return stats


def _true_next_obs(next_obs, info) -> np.ndarray:
    """SAME_STEP: where an episode ended, the final observation from ``info``, not the reset."""
    ended = info.get("_final_obs")
    if ended is None or not np.any(ended):
        return next_obs
    true = np.array(next_obs)
    for i in np.flatnonzero(ended):
        true[i] = info["final_obs"][i]
    return true


def _count(stats, real, reward, ended, returns, lengths) -> None:
    """Steps, transitions and finished episodes of one vector step, per sub-environment."""
    stats.steps += 1
    stats.transitions += int(real.sum())
    stats.autoreset_steps += int((~real).sum())
    returns += np.where(real, reward, 0.0)
    lengths += real
    for i in np.flatnonzero(ended & real):
        stats.episode_returns.append(float(returns[i]))
        stats.episode_lengths.append(int(lengths[i]))
        returns[i], lengths[i] = 0.0, 0


def cartpole_transitions(n: int, seed: int = 0) -> list:
    """``n`` CartPole-v1 transitions from a seeded random policy, as a list of tuples."""
    import gymnasium as gym

    from .memory import ListMemory

    mem = ListMemory()
    env = gym.make("CartPole-v1")
    rollout(env, mem, n, seed=seed, progress_bar=False)
    env.close()
    return [tuple(t) for t in mem]
