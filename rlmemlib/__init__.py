"""rlmemlib: the helper package of the course *Memory for RL agents*.

>>> import rlmemlib as rm
>>> import gymnasium as gym
>>> spec = rm.TransitionSpec.from_env(gym.make("CartPole-v1"))
>>> spec.nbytes, rm.CircularPool(1000, spec, share_next_obs=True).capacity
(39, 1000)
"""

from . import measure
from . import distributed, multiprocess, storage  # lesson 09; Ray is imported only when used
from .frames import FramePool
from .memory import CircularPool, ListMemory, ObjectPool, RecyclingMemory
from .rollout import RolloutStats, cartpole_transitions, rollout
from .spec import Batch, Transition, TransitionSpec

__all__ = ["agent", "plotting", "TransitionSpec", "Transition", "Batch", "ListMemory", "CircularPool", "RecyclingMemory",
           "ObjectPool", "FramePool", "measure", "rollout", "RolloutStats", "cartpole_transitions"]
__version__ = "0.1.0"


def __getattr__(name):
    # Submodules that import matplotlib load on first use, so `import rlmemlib` stays light.
    if name in ("plotting", "agent"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
