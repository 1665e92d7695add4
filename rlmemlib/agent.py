"""A small DQN written with numpy alone, to train on any replay memory of the course.

Design choices:

* **Network**: observation -> dense layer -> ReLU -> dense layer -> one Q-value per action.
  Four ``float64`` arrays (``w1, b1, w2, b2``): 898 parameters for CartPole with the default
  128 hidden units, so an update on a batch of 64 takes about a hundred microseconds, and the
  whole agent (weights, target copy, Adam's two moments) takes 28 KiB: far less than any memory.
* **Gradient by hand**: :meth:`QNetwork.backward` is the chain rule through the two layers;
  a test checks it against finite differences.
* **Loss**: the temporal-difference error ``Q(s, a) - (r + gamma * Q_target(s', a'))``, squared
  and averaged over the batch. A Huber loss is an option (``huber=1.0``); with a reward of 1 per
  step CartPole's Q-values climb towards 100 and a Huber loss caps each error's gradient at 1,
  which in our runs learned too slowly to solve the task in 20,000 steps. With ``double=True``
  the online network picks ``a'`` and the target network scores it (Double DQN).
* **Bootstrapping stops on ``terminated`` only.** CartPole's 500-step time limit sets
  ``truncated``: the pole was still up, so the target still looks one step ahead.
* **Optimiser**: Adam on the gradient clipped to a maximum global norm, its step size falling
  linearly from ``lr`` to ``lr_end`` over the run, so the policy we evaluate at the end is not
  caught in the middle of a large step. Moments are updated in place.
* **Target network**: a second copy of the weights, moved towards the online ones every
  ``target_every`` steps by Polyak averaging with weight ``tau`` (``tau=1`` is a hard copy).
* **Exploration**: epsilon-greedy, epsilon falling linearly from ``eps_start`` to ``eps_end``
  over the first ``eps_decay_steps`` steps.
* **Defaults from a sweep**: on CartPole-v1, 20,000 steps and 20 greedy test episodes, all 32
  seeds tried solved the task (mean returns from 228 to 361; 195 is the bar).
* **Any memory**: the agent only calls ``memory.add(...)`` and ``memory.sample(batch_size, rng)``
  (with ``out=`` a reused batch when the memory accepts one). Every batch field is cast to
  ``float64`` (actions to ``intp``) before any arithmetic, so memories that store different
  dtypes (a ``ListMemory`` without a spec keeps ``int64`` actions) give bit-identical updates.
* **Deterministic**: one seed makes the weights, the exploration stream and the sampling stream
  (three generators spawned from it) and seeds the environment's first reset. All memories share
  one sampling rule, so the same seed gives the same batches, the same weights and the same
  returns on every memory. (Matrix products go through numpy's BLAS, whose last bits can differ
  between processors; on one machine, runs are bit-identical.)
* **Measuring the memory**: tracemalloc slows every allocation, and an update makes dozens of
  temporary arrays. :func:`replay` feeds a fresh memory the experience of a finished run (same
  seed, same actions, no learning), so memory against steps is traced at a fraction of the cost.
"""

from __future__ import annotations

import gc
import inspect
import numbers
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .measure import MemoryCurve, traced
from .rollout import progress

__all__ = ["DQNConfig", "QNetwork", "Adam", "DQNAgent", "TrainResult", "train", "evaluate",
           "epsilon_at", "td_targets", "td_loss_grad", "clip_by_global_norm", "replay",
           "replay_traced", "plot_dashboard"]


# ====================================================================== configuration
@dataclass(frozen=True)
class DQNConfig:
    """Hyperparameters of the agent and of its training loop.

    The defaults solve CartPole-v1 (a mean greedy return of at least 195) in 20,000 steps.

    >>> DQNConfig(lr=3e-3).lr
    0.003
    >>> DQNConfig(gamma=1.5)
    Traceback (most recent call last):
    ...
    ValueError: gamma must be in [0, 1], got 1.5
    """

    hidden: int = 128              # units of the hidden layer
    lr: float = 1e-3               # Adam's step size at the start ...
    lr_end: float | None = 1e-5    # ... falling linearly to this at the last step; None: constant
    gamma: float = 0.99            # discount
    batch_size: int = 64           # transitions per update
    learning_starts: int = 1_000   # steps of experience before the first update
    train_every: int = 1           # steps between updates
    target_every: int = 500        # steps between target-network updates
    tau: float = 1.0               # Polyak weight of a target update (1: hard copy)
    eps_start: float = 1.0         # exploration at step 0 ...
    eps_end: float = 0.05          # ... falling linearly to this ...
    eps_decay_steps: int = 10_000  # ... over these many steps
    huber: float | None = None     # Huber threshold on the TD error; None: squared error
    max_grad_norm: float | None = 10.0  # global-norm gradient clipping; None: off
    double: bool = True            # Double DQN targets

    def __post_init__(self) -> None:
        for name in ("hidden", "batch_size", "train_every", "target_every", "eps_decay_steps"):
            _check_int(getattr(self, name), name, minimum=1)
        _check_int(self.learning_starts, "learning_starts", minimum=0)
        for name in ("gamma", "tau", "eps_start", "eps_end"):
            _check_unit(getattr(self, name), name)
        _check_positive(self.lr, "lr")
        for name in ("huber", "max_grad_norm", "lr_end"):
            if getattr(self, name) is not None:
                _check_positive(getattr(self, name), name)
        if self.tau == 0:
            raise ValueError("tau must be above 0: with tau=0 the target network never moves")


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def _check_real(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def _check_unit(value, name: str) -> None:
    if not 0.0 <= _check_real(value, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _check_positive(value, name: str) -> None:
    if not _check_real(value, name) > 0.0:
        raise ValueError(f"{name} must be above 0, got {value}")


def epsilon_at(step: int, config: DQNConfig) -> float:
    """The exploration rate at ``step``: linear from ``eps_start`` to ``eps_end``, then flat.

    >>> cfg = DQNConfig(eps_start=1.0, eps_end=0.1, eps_decay_steps=100)
    >>> epsilon_at(0, cfg), epsilon_at(50, cfg), epsilon_at(1000, cfg)
    (1.0, 0.55, 0.1)
    """
    frac = min(1.0, step / config.eps_decay_steps)
    return (1.0 - frac) * config.eps_start + frac * config.eps_end


# ====================================================================== network
class QNetwork:
    """Two dense layers with a ReLU between them: ``q = relu(x @ w1 + b1) @ w2 + b2``.

    >>> net = QNetwork(4, 2, hidden=8, rng=np.random.default_rng(0))
    >>> q, cache = net.forward(np.ones((3, 4)))
    >>> q.shape, net.n_params
    ((3, 2), 58)
    """

    w1: np.ndarray  # (obs_dim, hidden)
    b1: np.ndarray  # (hidden,)
    w2: np.ndarray  # (hidden, n_actions)
    b2: np.ndarray  # (n_actions,)

    def __init__(self, obs_dim: int, n_actions: int, hidden: int, rng: np.random.Generator):
        _check_int(obs_dim, "obs_dim", 1)
        _check_int(n_actions, "n_actions", 2)
        _check_int(hidden, "hidden", 1)
        # He-uniform for the ReLU layer, a small output layer so the first Q-values are near 0.
        lim1 = np.sqrt(6.0 / obs_dim)
        self.w1 = rng.uniform(-lim1, lim1, (obs_dim, hidden))
        self.b1 = np.zeros(hidden)
        lim2 = np.sqrt(1.0 / hidden)
        self.w2 = rng.uniform(-lim2, lim2, (hidden, n_actions))
        self.b2 = np.zeros(n_actions)

    @property
    def params(self) -> tuple[np.ndarray, ...]:
        """The four parameter arrays, in a fixed order (the order of ``backward``'s gradients)."""
        return (self.w1, self.b1, self.w2, self.b2)

    @property
    def n_params(self) -> int:
        return sum(p.size for p in self.params)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, tuple]:
        """Q-values of a batch ``x`` of shape ``(batch, obs_dim)``, and what backward needs."""
        pre = x @ self.w1
        pre += self.b1
        hid = np.maximum(pre, 0.0)
        q = hid @ self.w2
        q += self.b2
        return q, (x, pre, hid)

    def q_values(self, x: np.ndarray) -> np.ndarray:
        """Q-values only (no cache): ``x`` is one observation or a batch of them."""
        return np.maximum(x @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2

    def backward(self, cache: tuple, dq: np.ndarray) -> tuple[np.ndarray, ...]:
        """Gradients of a loss with respect to ``params``, given ``dq = dloss / dq``."""
        x, pre, hid = cache
        dw2 = hid.T @ dq
        db2 = dq.sum(axis=0)
        dhid = dq @ self.w2.T
        dhid *= pre > 0.0  # ReLU: the gradient passes where the unit was active
        dw1 = x.T @ dhid
        db1 = dhid.sum(axis=0)
        return (dw1, db1, dw2, db2)

    def copy_from(self, other: "QNetwork", tau: float = 1.0) -> None:
        """Move the weights towards ``other``'s: ``p = tau * p_other + (1 - tau) * p``, in place."""
        for mine, theirs in zip(self.params, other.params):
            if tau == 1.0:
                mine[...] = theirs
            else:
                mine *= 1.0 - tau
                mine += tau * theirs

    def clone(self) -> "QNetwork":
        """An independent copy (the target network starts as one)."""
        twin = object.__new__(QNetwork)
        twin.w1, twin.b1, twin.w2, twin.b2 = (p.copy() for p in self.params)
        return twin


# ====================================================================== optimiser
class Adam:
    """Adam (Kingma and Ba, 2015) updating a tuple of arrays in place.

    >>> p = np.array([1.0]); opt = Adam((p,), lr=0.1)
    >>> opt.step((np.array([2.0]),)); p.round(6)
    array([0.9])
    """

    def __init__(self, params: tuple[np.ndarray, ...], lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8):
        self.params = params
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = [np.zeros_like(p) for p in params]  # first moment of each gradient
        self.v = [np.zeros_like(p) for p in params]  # second moment
        self.t = 0
        self._b1_t = self._b2_t = 1.0  # beta1**t and beta2**t, kept as running products

    def step(self, grads: tuple[np.ndarray, ...]) -> None:
        """One update of every parameter by its gradient."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        self._b1_t *= b1  # products, not pow(): the same bits on every platform
        self._b2_t *= b2
        # Bias corrections folded into the step size (the paper's efficient form).
        lr_t = self.lr * np.sqrt(1.0 - self._b2_t) / (1.0 - self._b1_t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * g * g
            p -= lr_t * m / (np.sqrt(v) + self.eps)


def clip_by_global_norm(grads: tuple[np.ndarray, ...], max_norm: float | None) -> float:
    """Scale ``grads`` in place so their global L2 norm is at most ``max_norm``; return the norm."""
    norm = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads)))
    if max_norm is not None and norm > max_norm:
        for g in grads:
            g *= max_norm / norm
    return norm


# ====================================================================== loss
def td_targets(online: QNetwork, target: QNetwork, reward: np.ndarray, next_obs: np.ndarray,
               terminated: np.ndarray, gamma: float, double: bool) -> np.ndarray:
    """``r + gamma * Q_target(s', a')`` where the episode goes on, ``r`` where it terminated."""
    q_next = target.q_values(next_obs)
    if double:  # the online network picks a', the target network scores it
        best = online.q_values(next_obs).argmax(axis=1)
        value = q_next[np.arange(len(best)), best]
    else:
        value = q_next.max(axis=1)
    return reward + gamma * (1.0 - terminated) * value


def td_loss_grad(net: QNetwork, obs: np.ndarray, action: np.ndarray, y: np.ndarray,
                 huber: float | None) -> tuple[float, tuple[np.ndarray, ...]]:
    """The mean TD loss of ``Q(obs, action)`` against fixed targets ``y``, and its gradients.

    Huber: ``0.5 d**2`` for ``|d| <= huber``, ``huber * (|d| - 0.5 huber)`` beyond; its
    derivative is ``d`` clipped to ``[-huber, huber]``. ``huber=None``: ``0.5 d**2`` everywhere.
    """
    q, cache = net.forward(obs)
    rows = np.arange(len(y))
    delta = q[rows, action] - y
    if huber is None:
        loss = 0.5 * float(np.mean(delta * delta))
        dloss = delta
    else:
        size = np.abs(delta)
        pieces = np.where(size <= huber, 0.5 * delta * delta, huber * (size - 0.5 * huber))
        loss = float(np.mean(pieces))
        dloss = np.clip(delta, -huber, huber)
    dq = np.zeros_like(q)
    dq[rows, action] = dloss / len(y)  # only the Q-value of the action taken gets a gradient
    return loss, net.backward(cache, dq)


# ====================================================================== agent
class DQNAgent:
    """An online Q-network, its target copy, Adam, and epsilon-greedy action selection.

    >>> agent = DQNAgent(4, 2, DQNConfig(hidden=8), seed=0)
    >>> agent.greedy(np.zeros(4, np.float32)) in (0, 1), agent.nbytes  # 4 copies of 58 numbers
    (True, 1856)
    """

    def __init__(self, obs_dim: int, n_actions: int, config: DQNConfig | None = None,
                 seed: int = 0):
        self.config = config = DQNConfig() if config is None else config
        if not isinstance(config, DQNConfig):
            raise TypeError(f"config must be a DQNConfig, got {type(config).__name__}")
        init, explore, sample = np.random.SeedSequence(_check_int(seed, "seed", 0)).spawn(3)
        self.n_actions = n_actions
        self.net = QNetwork(obs_dim, n_actions, config.hidden, np.random.default_rng(init))
        self.target = self.net.clone()
        self.opt = Adam(self.net.params, lr=config.lr)
        self.explore_rng = np.random.default_rng(explore)  # epsilon-greedy coin flips and actions
        self.sample_rng = np.random.default_rng(sample)    # the memory's batch indices
        self.updates = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the agent's arrays: the weights, their target copy and Adam's two moments."""
        arrays = (*self.net.params, *self.target.params, *self.opt.m, *self.opt.v)
        return sum(a.nbytes for a in arrays)

    def greedy(self, obs) -> int:
        """The action with the highest Q-value (the first one on a tie)."""
        return int(np.argmax(self.net.q_values(np.asarray(obs, np.float64))))

    def act(self, obs, step: int) -> int:
        """Epsilon-greedy: a uniformly random action with probability ``epsilon_at(step)``."""
        if self.explore_rng.random() < epsilon_at(step, self.config):
            return int(self.explore_rng.integers(self.n_actions))
        return self.greedy(obs)

    def learn(self, batch) -> float:
        """One Adam step on a batch from any memory; returns the loss before the step."""
        cfg = self.config
        obs = np.asarray(batch.obs, np.float64)  # one dtype for every memory (see the module doc)
        next_obs = np.asarray(batch.next_obs, np.float64)
        action = np.asarray(batch.action, np.intp)
        reward = np.asarray(batch.reward, np.float64)
        terminated = np.asarray(batch.terminated, np.float64)
        y = td_targets(self.net, self.target, reward, next_obs, terminated, cfg.gamma, cfg.double)
        loss, grads = td_loss_grad(self.net, obs, action, y, cfg.huber)
        clip_by_global_norm(grads, cfg.max_grad_norm)
        self.opt.step(grads)
        self.updates += 1
        return loss

    def sync_target(self) -> None:
        self.target.copy_from(self.net, self.config.tau)


# ====================================================================== training
@dataclass
class TrainResult:
    """What ``train`` did: returns against steps, the actions taken, and where the time went."""

    agent: DQNAgent
    seed: int
    steps: int
    actions: np.ndarray                                   # the action of every step, in order
    episode_returns: list = field(default_factory=list)   # return of each finished episode
    episode_ends: list = field(default_factory=list)      # step at which each one ended
    loss_steps: list = field(default_factory=list)        # steps where the mean loss was recorded
    losses: list = field(default_factory=list)            # mean loss since the previous record
    curve: MemoryCurve | None = None  # memory against steps, when train was given a curve
    seconds: float = 0.0              # wall time of the whole run
    memory_seconds: float = 0.0       # of which in memory.add and memory.sample

    def same_learning(self, other: "TrainResult") -> bool:
        """Whether two runs took the same actions and ended with bit-identical weights."""
        return (np.array_equal(self.actions, other.actions)
                and self.episode_returns == other.episode_returns
                and all(np.array_equal(a, b) for a, b in zip(self.agent.net.params,
                                                               other.agent.net.params)))


def train(env, memory, steps: int, seed: int = 0, config: DQNConfig | None = None,
          curve: MemoryCurve | None = None, record_every: int = 500,
          progress_bar: bool | None = None, desc: str = "training") -> TrainResult:
    """Train a fresh :class:`DQNAgent` on ``env`` for ``steps`` steps, storing into ``memory``.

    ``memory`` is any empty memory of the course (it needs ``add`` and ``sample``). Every
    ``record_every`` steps the mean loss is recorded, and ``curve.record(step)`` when a
    ``curve`` is given: it reads tracemalloc, so run the call inside
    ``rlmemlib.measure.traced()`` (which slows training several times; :func:`replay` measures
    the same memory against steps quickly).

    >>> import gymnasium as gym, rlmemlib as rm
    >>> env = gym.make("CartPole-v1")
    >>> cfg = DQNConfig(hidden=8, batch_size=8, learning_starts=50)
    >>> run = train(env, rm.ListMemory(), 200, seed=0, config=cfg, progress_bar=False)
    >>> run.agent.updates, len(run.actions), sum(run.episode_returns) <= 200
    (150, 200, True)
    """
    config = DQNConfig() if config is None else config
    steps = _check_int(steps, "steps", 0)
    _check_int(record_every, "record_every", 1)
    _check_memory(memory)
    obs_dim, n_actions = _check_env(env)
    agent = DQNAgent(obs_dim, n_actions, config, seed=seed)
    run = TrainResult(agent, seed, steps, np.zeros(steps, np.intp), curve=curve)
    loop = _Loop(env, memory, agent, run)
    bar = progress(steps, desc, progress_bar)
    start = time.perf_counter()
    try:
        loop.reset(seed)
        for step in range(steps):
            loop.step(step)
            if (step + 1) % record_every == 0 or step + 1 == steps:
                loop.record(step + 1)
            bar.update()
    finally:
        bar.close()
    run.seconds = time.perf_counter() - start
    return run


class _Loop:
    """The state of one training run between steps (kept out of ``train`` to keep it short)."""

    def __init__(self, env, memory, agent: DQNAgent, run: TrainResult):
        self.env, self.memory, self.agent, self.run = env, memory, agent, run
        self.batch = None  # a reused batch, for memories whose sample() takes ``out=``
        self.takes_out = "out" in inspect.signature(memory.sample).parameters
        self.ep_return = 0.0
        self.loss_sum, self.loss_count = 0.0, 0

    def reset(self, seed: int | None = None) -> None:
        self.obs, _ = self.env.reset(seed=seed)
        self.ep_return = 0.0

    def step(self, step: int) -> None:
        agent, cfg = self.agent, self.agent.config
        if cfg.lr_end is not None:
            agent.opt.lr = cfg.lr + (cfg.lr_end - cfg.lr) * step / max(1, self.run.steps - 1)
        action = self.run.actions[step] = agent.act(self.obs, step)
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        t0 = time.perf_counter()
        self.memory.add(self.obs, action, reward, next_obs, terminated, truncated)
        self.run.memory_seconds += time.perf_counter() - t0
        self.ep_return += float(reward)
        if step + 1 > cfg.learning_starts and (step + 1) % cfg.train_every == 0:
            self.loss_sum += agent.learn(self.sample(cfg.batch_size))
            self.loss_count += 1
        if (step + 1) % cfg.target_every == 0:
            agent.sync_target()
        if terminated or truncated:
            self.run.episode_returns.append(self.ep_return)
            self.run.episode_ends.append(step + 1)
            self.reset()
        else:
            self.obs = next_obs  # the same array is the next step's obs: a ListMemory shares it

    def sample(self, batch_size: int):
        t0 = time.perf_counter()
        if self.takes_out:
            if self.batch is None:
                self.batch = self.memory.spec.empty_batch(batch_size)
            batch = self.memory.sample(batch_size, self.agent.sample_rng, out=self.batch)
        else:
            batch = self.memory.sample(batch_size, self.agent.sample_rng)
        self.run.memory_seconds += time.perf_counter() - t0
        return batch

    def record(self, step: int) -> None:
        if self.run.curve is not None:
            self.run.curve.record(step)
        if self.loss_count:
            self.run.loss_steps.append(step)
            self.run.losses.append(self.loss_sum / self.loss_count)
        self.loss_sum, self.loss_count = 0.0, 0


def _check_memory(memory) -> None:
    for name in ("add", "sample"):
        if not callable(getattr(memory, name, None)):
            raise TypeError(f"memory must have add() and sample() like the course's memories, "
                            f"got {type(memory).__name__} without {name}()")
    if len(memory):
        raise ValueError(f"memory must be empty at the start of training, it holds {len(memory)} "
                         "transitions: pass a new memory or call memory.clear()")


def _check_env(env) -> tuple[int, int]:
    """``(obs_dim, n_actions)`` of an env with a flat Box observation and a Discrete action."""
    from gymnasium import spaces

    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
        raise TypeError(f"the observation space must be a flat Box (a vector), got {obs_space}")
    if not isinstance(act_space, spaces.Discrete) or act_space.start != 0:
        raise TypeError(f"the action space must be Discrete(n) starting at 0, got {act_space}")
    return int(obs_space.shape[0]), int(act_space.n)


# ====================================================================== replay
def replay(env, memory, run: TrainResult, curve: MemoryCurve | None = None,
           record_every: int = 500) -> None:
    """Feed ``memory`` the experience of ``run`` again, with no learning: a fast way to measure it.

    The environment is reset with the run's seed and stepped with the run's actions, so
    ``memory`` receives the very transitions (and the same sharing of observation arrays) that
    it received in training. ``curve.record(step)`` runs at step 0 and every ``record_every``
    steps. A ``ValueError`` says so if an episode ends at another step than in the run (another
    environment, or another seed).

    >>> import gymnasium as gym, rlmemlib as rm
    >>> env = gym.make("CartPole-v1")
    >>> run = train(env, rm.ListMemory(), 300, config=DQNConfig(hidden=8), progress_bar=False)
    >>> again = rm.ListMemory(); replay(env, again, run)
    >>> len(again), again[-1].action == int(run.actions[-1])
    (300, True)
    """
    _check_memory(memory)
    _check_int(record_every, "record_every", 1)
    if curve is not None:
        curve.record(0)  # the memory before its first transition (a pool's arrays are all there)
    obs, _ = env.reset(seed=run.seed)
    ends = iter(run.episode_ends)
    next_end = next(ends, None)
    for step in range(run.steps):
        action = int(run.actions[step])
        next_obs, reward, terminated, truncated, _ = env.step(action)
        memory.add(obs, action, reward, next_obs, terminated, truncated)
        if terminated or truncated:
            if next_end != step + 1:
                raise ValueError(f"the replay diverged from the run: an episode ended at step "
                                 f"{step + 1}, in the run at {next_end}; use the run's environment")
            next_end = next(ends, None)
            obs, _ = env.reset()
        else:
            obs = next_obs
        if curve is not None and ((step + 1) % record_every == 0 or step + 1 == run.steps):
            curve.record(step + 1)


def replay_traced(env, make_memory, run: TrainResult, label: str = "",
                  record_every: int = 500) -> tuple[object, MemoryCurve]:
    """Build a memory with ``make_memory()`` and :func:`replay` ``run`` into it, under tracemalloc.

    The curve is zeroed before the memory is built, so it counts every byte the memory holds,
    its preallocated arrays included. Returns ``(memory, curve)``.

    >>> import gymnasium as gym, rlmemlib as rm
    >>> env = gym.make("CartPole-v1")
    >>> run = train(env, rm.ListMemory(), 300, config=DQNConfig(hidden=8), progress_bar=False)
    >>> spec = rm.TransitionSpec.from_env(env)
    >>> pool, curve = replay_traced(env, lambda: rm.CircularPool(300, spec), run, "pool", 100)
    >>> curve.steps, curve.last >= pool.nbytes
    ([0, 100, 200, 300], True)
    """
    gc.collect()
    with traced(count_blocks=False):
        curve = MemoryCurve(label).zero_here()
        memory = make_memory()
        replay(env, memory, run, curve, record_every)
    return memory, curve


# ====================================================================== evaluation
def evaluate(agent: DQNAgent, env, episodes: int = 20, seed: int = 10_000) -> np.ndarray:
    """Returns of ``episodes`` greedy episodes, episode ``i`` reset with ``seed + i``.

    >>> import gymnasium as gym
    >>> env = gym.make("CartPole-v1")
    >>> evaluate(DQNAgent(4, 2, DQNConfig(hidden=8), seed=0), env, episodes=2).shape
    (2,)
    """
    _check_int(episodes, "episodes", 1)
    _check_int(seed, "seed", 0)
    returns = np.zeros(episodes)
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.greedy(obs))
            returns[i] += float(reward)
            done = terminated or truncated
    return returns


# ====================================================================== figure
def plot_dashboard(runs: Mapping[str, TrainResult], curves: Sequence[MemoryCurve],
                   window: int = 20, solved: float = 195.0):
    """Two panels: episode return against steps for each run, memory against steps for each curve.

    Returns are smoothed over ``window`` episodes. Identical runs draw on top of one another,
    so each is drawn a little thinner than the one before: a single visible line means they agree.
    """
    import matplotlib.pyplot as plt

    from .plotting import PALETTE, memory_curves, use_style

    use_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 3.8))
    for k, (label, run) in enumerate(runs.items()):
        returns = np.asarray(run.episode_returns, np.float64)
        width = min(window, len(returns)) or 1
        smooth = np.convolve(returns, np.ones(width) / width, mode="valid")
        left.plot(run.episode_ends[width - 1:], smooth, label=label,
                  color=PALETTE[k % len(PALETTE)], lw=2 + 2 * (len(runs) - 1 - k))
    left.axhline(solved, color="black", ls="--", lw=1)
    left.text(0, solved, f" {solved:g}: solved (greedy test)", fontsize=9, va="bottom")
    left.set_title("Return against steps")
    left.set_xlabel("steps (transitions added)")
    left.set_ylabel(f"episode return (mean of {window})")
    left.legend(loc="upper left")
    memory_curves(curves, title="Memory against steps", ax=right)
    fig.tight_layout()
    return fig
