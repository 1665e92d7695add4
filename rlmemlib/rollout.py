"""Feed a gymnasium environment into any memory, seeded, with an optional progress bar.

Progress bars are for people: they show in JupyterLab and stay quiet when the output must be
deterministic (tests and the command that regenerates notebooks set ``RLMEMLIB_PROGRESS=0``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["rollout", "RolloutStats", "progress_enabled", "progress"]


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
    """What a rollout did: steps, finished episodes and their returns and lengths."""

    steps: int = 0
    episode_returns: list = field(default_factory=list)
    episode_lengths: list = field(default_factory=list)

    @property
    def episodes(self) -> int:
        return len(self.episode_returns)


def rollout(env, memory, steps: int, seed: int = 0, policy: Callable | None = None,
            on_step: Callable[[int], None] | None = None, progress_bar: bool | None = None,
            desc: str = "rollout") -> RolloutStats:
    """Run ``env`` for ``steps`` steps and add every transition to ``memory``.

    ``policy(obs) -> action`` picks actions; by default a uniformly random policy seeded with
    ``seed``. The environment is reset with ``seed`` first and again after every episode end
    (``terminated`` or ``truncated``). ``on_step(step)`` is called after each add, e.g. to
    record a :class:`~rlmemlib.measure.MemoryCurve`.

    >>> import gymnasium as gym, rlmemlib as rm
    >>> env = gym.make("CartPole-v1")
    >>> mem = rm.ListMemory()
    >>> stats = rollout(env, mem, 100, seed=0, progress_bar=False)
    >>> len(mem), stats.steps
    (100, 100)
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if policy is None:
        env.action_space.seed(seed)
        policy = lambda _obs: env.action_space.sample()  # noqa: E731
    stats = RolloutStats()
    bar = progress(steps, desc, progress_bar)
    obs, _ = env.reset(seed=seed)
    ep_return, ep_len = 0.0, 0
    try:
        for step in range(int(steps)):
            action = policy(obs)
            if isinstance(action, np.integer):
                action = int(action)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            memory.add(obs, action, reward, next_obs, terminated, truncated)
            ep_return += float(reward)
            ep_len += 1
            stats.steps += 1
            if on_step is not None:
                on_step(step + 1)
            bar.update()
            if terminated or truncated:
                stats.episode_returns.append(ep_return)
                stats.episode_lengths.append(ep_len)
                ep_return, ep_len = 0.0, 0
                obs, _ = env.reset()
            else:
                obs = next_obs
    finally:
        bar.close()
    return stats


def cartpole_transitions(n: int, seed: int = 0) -> list:
    """``n`` CartPole-v1 transitions from a seeded random policy, as a list of tuples."""
    import gymnasium as gym

    from .memory import ListMemory

    mem = ListMemory()
    env = gym.make("CartPole-v1")
    rollout(env, mem, n, seed=seed, progress_bar=False)
    env.close()
    return [tuple(t) for t in mem]
