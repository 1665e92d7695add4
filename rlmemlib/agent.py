"""A small DQN written with numpy alone, to train on any replay memory of the course.

DQN (Mnih et al., 2015) with Double DQN targets, gradient clipping, a learning-rate schedule,
scaled inputs, and the best validated weights kept. Design choices:

* **Network**: observation -> dense layer -> ReLU -> dense layer -> one Q-value per action.
  All weights live in one ``float64`` array (``w1, b1, w2, b2`` are views of it), so Adam and
  clipping are a few whole-array operations: 898 numbers for CartPole with 128 hidden units.
  The agent keeps five such arrays (weights, target copy, gradient, Adam's two moments), 35 KiB:
  far less than any memory of the course.
* **Gradient by hand**: :meth:`QNetwork.backward` is the chain rule through the two layers;
  a test checks it against finite differences.
* **Loss**: the temporal-difference error ``Q(s, a) - (r + gamma * Q_target(s', a'))``, squared
  and averaged over the batch (a Huber loss is an option, ``huber=1.0``). With ``double=True``
  the online network picks ``a'`` and the target network scores it (Double DQN, van Hasselt et
  al., 2016), which that paper shows reduces the upward bias of a max over noisy estimates.
* **Bootstrapping stops on ``terminated`` only.** CartPole's 500-step time limit sets
  ``truncated``: the pole was still up, so the target still looks one step ahead.
* **Optimiser**: Adam on the gradient scaled down to a global L2 norm of at most
  ``max_grad_norm``, its step size falling linearly from ``lr`` to ``lr_end`` over the run.
  Moments are updated in place.
* **Target network**: a second copy of the weights, moved towards the online ones every
  ``target_every`` steps by Polyak averaging with weight ``tau`` (``tau=1`` is a hard copy).
* **Scaled inputs**: the network sees ``obs / obs_scale``. CartPole's pole angle moves by
  hundredths of a radian; :data:`CARTPOLE_SCALE` brings each feature to order 1. The memory
  stores the observations as the environment gave them.
* **Keeping the best weights**: every ``validate_every`` steps the greedy policy plays
  ``validate_episodes`` episodes on a second environment (seeds from ``validate_seed``), and
  training ends with the weights that scored best. A DQN's greedy policy rises and falls during
  training; the slow tests show the last weights solving fewer seeds than the kept ones.
* **Exploration**: epsilon-greedy, epsilon falling linearly from ``eps_start`` to ``eps_end``
  over the first ``eps_decay_steps`` steps.
* **Defaults**: on CartPole-v1, 20,000 steps with a memory of 15,000, tested on 100 greedy
  episodes (seeds 10,000 to 10,099) against the registered threshold of 475: the slow tests
  train five seeds and require four to solve the task; lesson 06 asserts it for seed 0.
* **Any memory**: the agent only calls ``memory.add(...)`` and ``memory.sample(batch_size, rng)``
  (with ``out=`` a reused batch when the memory accepts one). Every batch field is cast to
  ``float64`` (actions to ``intp``) before any arithmetic, so memories that store different
  dtypes (a ``ListMemory`` without a spec keeps ``int64`` actions) give bit-identical updates.
* **Deterministic**: one seed makes the weights, the exploration stream and the sampling stream
  (three generators spawned from it) and seeds the environment's first reset. All memories share
  one sampling rule, so the same seed gives the same batches, the same weights and the same
  returns on every memory. (Matrix products go through numpy's BLAS, whose last bits can differ
  between processors; on one machine, runs are bit-identical.)
* **Measuring the memory**: tracemalloc slows every allocation, and every update allocates
  temporary arrays. Training keeps a :class:`Recording` of its experience (34 bytes a step
  for CartPole: observation, action, flags and a reference to the reward object) and a 64-bit
  fingerprint of every batch; :func:`playback` feeds a fresh memory that experience with no
  learning, so memory against steps is traced without the learner's temporaries, and it can
  check that the memory draws training's batch at every update.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import numbers
import time
from dataclasses import dataclass, field

import numpy as np

from .measure import MemoryCurve, traced
from .rollout import progress
from .spec import Batch

__all__ = ["DQNConfig", "QNetwork", "Adam", "DQNAgent", "TrainResult", "Playback", "train",
           "evaluate", "playback", "playback_traced", "epsilon_at", "learns_at", "td_targets",
           "td_loss_grad", "clip_by_global_norm", "seed_streams", "canonical_batch",
           "batch_fingerprint", "PARTS"]


# ====================================================================== configuration
# CartPole-v1's observation is (cart position, cart velocity, pole angle, pole angular velocity).
# Divided by these, each is of order 1 while the pole is balanced (the notebook measures it).
CARTPOLE_SCALE = (0.5, 0.25, 0.025, 0.25)


@dataclass(frozen=True)
class DQNConfig:
    """Hyperparameters of the agent and of its training loop.

    With the defaults, 20,000 steps and a memory of 15,000, the agent solves CartPole-v1 by its
    registered definition (a mean greedy return of at least 475 over 100 episodes) for at least
    four of five seeds (the slow tests).

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
    eps_decay_steps: int = 5_000   # ... over these many steps
    huber: float | None = None     # Huber threshold on the TD error; None: squared error
    max_grad_norm: float | None = 10.0  # global-norm gradient clipping; None: off
    double: bool = True            # Double DQN targets
    obs_scale: tuple | None = CARTPOLE_SCALE  # the network sees obs / obs_scale; None: obs
    validate_every: int | None = 1000  # steps between greedy validations; None: keep the last
    validate_episodes: int = 10    # episodes per validation, seeded validate_seed + i
    validate_seed: int = 20_000    # apart from training's seed and evaluate's default 10_000

    def __post_init__(self) -> None:
        for name in ("hidden", "batch_size", "train_every", "target_every", "eps_decay_steps",
                     "validate_episodes"):
            _check_int(getattr(self, name), name, minimum=1)
        _check_int(self.learning_starts, "learning_starts", minimum=0)
        _check_int(self.validate_seed, "validate_seed", minimum=0)
        if self.validate_every is not None:
            _check_int(self.validate_every, "validate_every", minimum=1)
        for name in ("gamma", "tau", "eps_start", "eps_end"):
            _check_unit(getattr(self, name), name)
        _check_positive(self.lr, "lr")
        for name in ("huber", "max_grad_norm", "lr_end"):
            if getattr(self, name) is not None:
                _check_positive(getattr(self, name), name)
        if self.tau == 0:
            raise ValueError("tau must be above 0: with tau=0 the target network never moves")
        if self.obs_scale is not None:
            for k, value in enumerate(self.obs_scale):
                _check_positive(value, f"obs_scale[{k}]")


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

    flat: np.ndarray  # every weight in one float64 array, so Adam and clipping are a few ops
    w1: np.ndarray    # (obs_dim, hidden) view of flat
    b1: np.ndarray    # (hidden,) view of flat
    w2: np.ndarray    # (hidden, n_actions) view of flat
    b2: np.ndarray    # (n_actions,) view of flat

    def __init__(self, obs_dim: int, n_actions: int, hidden: int, rng: np.random.Generator):
        _check_int(obs_dim, "obs_dim", 1)
        _check_int(n_actions, "n_actions", 2)
        _check_int(hidden, "hidden", 1)
        self.shapes = ((obs_dim, hidden), (hidden,), (hidden, n_actions), (n_actions,))
        self._bind(np.zeros(obs_dim * hidden + hidden + hidden * n_actions + n_actions))
        # He-uniform for the ReLU layer, a small output layer so the first Q-values are near 0.
        lim1 = np.sqrt(6.0 / obs_dim)
        self.w1[...] = rng.uniform(-lim1, lim1, (obs_dim, hidden))
        lim2 = np.sqrt(1.0 / hidden)
        self.w2[...] = rng.uniform(-lim2, lim2, (hidden, n_actions))

    def _bind(self, flat: np.ndarray) -> None:
        self.flat = flat
        self.w1, self.b1, self.w2, self.b2 = self.split(flat)

    def split(self, flat: np.ndarray) -> tuple[np.ndarray, ...]:
        """Views of ``flat`` shaped like ``w1, b1, w2, b2`` (for the weights or their gradient)."""
        views, start = [], 0
        for shape in self.shapes:
            size = shape[0] * shape[1] if len(shape) == 2 else shape[0]
            views.append(flat[start:start + size].reshape(shape))
            start += size
        return tuple(views)

    @property
    def params(self) -> tuple[np.ndarray, ...]:
        """The four parameter arrays, in a fixed order (the order of ``backward``'s gradients)."""
        return (self.w1, self.b1, self.w2, self.b2)

    @property
    def n_params(self) -> int:
        return self.flat.size

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
        hid = x @ self.w1
        hid += self.b1
        np.maximum(hid, 0.0, out=hid)
        q = hid @ self.w2
        q += self.b2
        return q

    def backward(self, cache: tuple, dq: np.ndarray,
                 out: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Gradients with respect to ``params`` given ``dq = dloss / dq``, as views of one array.

        ``out`` is a flat array of ``n_params`` to write them into (a new one when not given).
        """
        out = np.empty_like(self.flat) if out is None else out
        dw1, db1, dw2, db2 = self.split(out)
        x, pre, hid = cache
        np.matmul(hid.T, dq, out=dw2)
        dq.sum(axis=0, out=db2)
        dhid = dq @ self.w2.T
        dhid *= pre > 0.0  # ReLU: the gradient passes where the unit was active
        np.matmul(x.T, dhid, out=dw1)
        dhid.sum(axis=0, out=db1)
        return (dw1, db1, dw2, db2)

    def copy_from(self, other: "QNetwork", tau: float = 1.0) -> None:
        """Move the weights towards ``other``'s: ``p = tau * p_other + (1 - tau) * p``, in place."""
        if tau == 1.0:
            self.flat[...] = other.flat
        else:
            self.flat *= 1.0 - tau
            self.flat += tau * other.flat

    def clone(self) -> "QNetwork":
        """An independent copy (the target network starts as one)."""
        twin = object.__new__(QNetwork)
        twin.shapes = self.shapes
        twin._bind(self.flat.copy())
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
                 huber: float | None, out: np.ndarray | None = None
                 ) -> tuple[float, tuple[np.ndarray, ...]]:
    """The mean TD loss of ``Q(obs, action)`` against fixed targets ``y``, and its gradients.

    Huber: ``0.5 d**2`` for ``|d| <= huber``, ``huber * (|d| - 0.5 huber)`` beyond; its
    derivative is ``d`` clipped to ``[-huber, huber]``. ``huber=None``: ``0.5 d**2`` everywhere.
    ``out``: a flat array that receives the gradients (see :meth:`QNetwork.backward`).
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
    return loss, net.backward(cache, dq, out)


# ====================================================================== agent
def seed_streams(seed: int) -> tuple[np.random.Generator, ...]:
    """The three generators one seed makes: weights, exploration, batch sampling.

    :func:`playback` makes the third again, so it draws the very batch indices training drew.

    >>> a = seed_streams(3)[2].integers(0, 100, 4); b = seed_streams(3)[2].integers(0, 100, 4)
    >>> bool((a == b).all())
    True
    """
    children = np.random.SeedSequence(_check_int(seed, "seed", 0)).spawn(3)
    return tuple(np.random.default_rng(child) for child in children)


def canonical_batch(batch) -> Batch:
    """The batch in the dtypes the agent computes with: ``float64`` values, ``intp`` actions.

    Memories store different dtypes (a ``ListMemory`` without a spec keeps ``int64`` actions,
    the pools ``uint8``); the same values cast to one dtype make the same arithmetic.
    """
    return Batch(obs=np.asarray(batch.obs, np.float64), action=np.asarray(batch.action, np.intp),
                 reward=np.asarray(batch.reward, np.float64),
                 next_obs=np.asarray(batch.next_obs, np.float64),
                 terminated=np.asarray(batch.terminated, np.bool_),
                 truncated=np.asarray(batch.truncated, np.bool_))


def batch_fingerprint(batch: Batch) -> int:
    """A 64-bit hash of every field of a canonical batch: equal batches, equal fingerprints."""
    digest = hashlib.blake2b(digest_size=8)
    for array in batch:
        digest.update(np.ascontiguousarray(array).data)
    return int.from_bytes(digest.digest(), "little")


class DQNAgent:
    """An online Q-network, its target copy, Adam, and epsilon-greedy action selection.

    >>> agent = DQNAgent(4, 2, DQNConfig(hidden=8), seed=0)
    >>> agent.greedy(np.zeros(4, np.float32)) in (0, 1), agent.nbytes  # 5 arrays of 58 numbers
    (True, 2320)
    """

    def __init__(self, obs_dim: int, n_actions: int, config: DQNConfig | None = None,
                 seed: int = 0):
        self.config = config = DQNConfig() if config is None else config
        if not isinstance(config, DQNConfig):
            raise TypeError(f"config must be a DQNConfig, got {type(config).__name__}")
        init, self.explore_rng, self.sample_rng = seed_streams(seed)
        self.n_actions = n_actions
        self.inv_scale = _inverse_scale(config.obs_scale, obs_dim)
        self.net = QNetwork(obs_dim, n_actions, config.hidden, init)
        self.target = self.net.clone()
        self.grad = np.zeros_like(self.net.flat)  # the gradient of every weight, reused
        self.opt = Adam((self.net.flat,), lr=config.lr)
        self.updates = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the agent's arrays: the weights, their target copy, their gradient and Adam's
        two moments (five arrays of ``n_params`` numbers)."""
        arrays = (self.net.flat, self.target.flat, self.grad, *self.opt.m, *self.opt.v)
        return sum(a.nbytes for a in arrays)

    def inputs(self, obs) -> np.ndarray:
        """What the network sees of one observation or a batch: ``obs / obs_scale`` in float64."""
        x = np.asarray(obs, np.float64)
        return x if self.inv_scale is None else x * self.inv_scale

    def greedy(self, obs) -> int:
        """The action with the highest Q-value (the first one on a tie)."""
        return int(np.argmax(self.net.q_values(self.inputs(obs))))

    def act(self, obs, step: int) -> int:
        """Epsilon-greedy: a uniformly random action with probability ``epsilon_at(step)``."""
        if self.explore_rng.random() < epsilon_at(step, self.config):
            return int(self.explore_rng.integers(self.n_actions))
        return self.greedy(obs)

    def learn(self, batch) -> float:
        """One Adam step on a batch from any memory; returns the loss before the step."""
        cfg = self.config
        b = canonical_batch(batch)  # one dtype for every memory (a no-op on a canonical batch)
        y = td_targets(self.net, self.target, b.reward, self.inputs(b.next_obs),
                       b.terminated.astype(np.float64), cfg.gamma, cfg.double)
        loss, _ = td_loss_grad(self.net, self.inputs(b.obs), b.action, y, cfg.huber, out=self.grad)
        clip_by_global_norm((self.grad,), cfg.max_grad_norm)
        self.opt.step((self.grad,))
        self.updates += 1
        return loss

    def sync_target(self) -> None:
        self.target.copy_from(self.net, self.config.tau)


def _inverse_scale(obs_scale, obs_dim: int) -> np.ndarray | None:
    if obs_scale is None:
        return None
    if len(obs_scale) != obs_dim:
        raise ValueError(f"obs_scale has {len(obs_scale)} numbers, the observation has {obs_dim}: "
                         "give one scale per feature, or DQNConfig(obs_scale=None)")
    return 1.0 / np.asarray(obs_scale, np.float64)


# ====================================================================== training
PARTS = ("env", "act", "add", "sample", "learn", "validate")  # where training spends its time


class Recording:
    """The experience of a run, kept compactly so that :func:`playback` can feed it again.

    Observations are kept in one array of the environment's dtype (what ``env.step`` returned
    at each step) plus the observation of each reset; flags in a small array; rewards as the
    objects the environment returned (CartPole returns one shared ``1.0``, so a list memory fed
    by playback shares it as in training). ``transitions()`` hands them out as ``env.step``
    did: a new observation array per step, passed on as the next step's ``obs``.
    """

    def __init__(self, steps: int):
        self.steps = steps
        self.actions = np.zeros(steps, np.intp)
        self.rewards: list = [None] * steps
        self.flags = np.zeros((steps, 2), np.bool_)  # terminated, truncated
        self.next_obs: np.ndarray | None = None      # made at the first step: shape, dtype
        self.first_obs: list = []                    # a copy of what each reset returned

    def reset(self, obs) -> None:
        self.first_obs.append(np.array(obs, copy=True))

    def step(self, step: int, action: int, reward, next_obs, terminated, truncated) -> None:
        if self.next_obs is None:
            next_obs = np.asarray(next_obs)
            self.next_obs = np.zeros((self.steps, *next_obs.shape), next_obs.dtype)
        self.actions[step], self.rewards[step] = action, reward
        self.next_obs[step] = next_obs
        self.flags[step] = terminated, truncated

    def transitions(self):
        """``(obs, action, reward, next_obs, terminated, truncated)`` of every step, in order."""
        starts = iter(self.first_obs)
        obs = next(starts).copy()
        for step in range(self.steps):
            next_obs = self.next_obs[step].copy()  # a new array, as env.step returns
            terminated, truncated = (bool(f) for f in self.flags[step])
            yield (obs, int(self.actions[step]), self.rewards[step], next_obs, terminated,
                   truncated)
            obs = next(starts).copy() if terminated or truncated else next_obs


@dataclass
class TrainResult:
    """What ``train`` did: returns against steps, the experience, the batches, the time."""

    agent: DQNAgent
    seed: int
    steps: int
    recording: Recording                                  # the experience, for playback
    episode_returns: list = field(default_factory=list)   # return of each finished episode
    episode_ends: list = field(default_factory=list)      # step at which each one ended
    loss_steps: list = field(default_factory=list)        # steps where the mean loss was recorded
    losses: list = field(default_factory=list)            # mean loss since the previous record
    fingerprints: list | np.ndarray = field(default_factory=list)  # of every batch (uint64)
    validation_steps: list = field(default_factory=list)  # steps where the greedy policy was tested
    validation_means: list = field(default_factory=list)  # its mean return there
    best_step: int | None = None      # the step whose weights the agent kept (None: the last)
    last_weights: np.ndarray | None = None  # the weights at the last step, when others were kept
    curve: MemoryCurve | None = None  # memory against steps, when train was given a curve
    seconds: float = 0.0              # wall time of the whole run
    seconds_in: dict = field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))  # wall time per part

    @property
    def actions(self) -> np.ndarray:
        """The action of every step, in order."""
        return self.recording.actions

    @property
    def memory_seconds(self) -> float:
        """Wall time in ``memory.add`` and ``memory.sample``."""
        return self.seconds_in["add"] + self.seconds_in["sample"]

    def same_learning(self, other: "TrainResult") -> bool:
        """Whether two runs took the same actions and batches and ended with the same weights."""
        return (np.array_equal(self.actions, other.actions)
                and self.episode_returns == other.episode_returns
                and np.array_equal(self.fingerprints, other.fingerprints)
                and np.array_equal(self.agent.net.flat, other.agent.net.flat))


def train(env, memory, steps: int, seed: int = 0, config: DQNConfig | None = None,
          curve: MemoryCurve | None = None, record_every: int = 500,
          progress_bar: bool | None = None, desc: str = "training") -> TrainResult:
    """Train a fresh :class:`DQNAgent` on ``env`` for ``steps`` steps, storing into ``memory``.

    ``memory`` is any empty memory of the course (it needs ``add`` and ``sample``). Every
    ``record_every`` steps the mean loss is recorded, and ``curve.record(step)`` when a
    ``curve`` is given: it reads tracemalloc, so run the call inside
    ``rlmemlib.measure.traced()`` (which slows training several times; :func:`playback`
    measures the same memory against steps quickly).

    >>> import gymnasium as gym, rlmemlib as rm
    >>> env = gym.make("CartPole-v1")
    >>> cfg = DQNConfig(hidden=8, batch_size=8, learning_starts=50)
    >>> run = train(env, rm.ListMemory(), 200, seed=0, config=cfg, progress_bar=False)
    >>> run.agent.updates, len(run.fingerprints), len(run.actions), sum(run.episode_returns) <= 200
    (150, 150, 200, True)
    """
    config = DQNConfig() if config is None else config
    steps = _check_int(steps, "steps", 0)
    _check_int(record_every, "record_every", 1)
    _check_memory(memory)
    obs_dim, n_actions = _check_env(env)
    agent = DQNAgent(obs_dim, n_actions, config, seed=seed)
    run = TrainResult(agent, seed, steps, Recording(steps), curve=curve)
    loop = _Loop(env, memory, agent, run, _validation_env(env, config))
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
    loop.keep_best()
    run.fingerprints = np.array(run.fingerprints, np.uint64)
    run.seconds = time.perf_counter() - start
    return run


def _validation_env(env, config: DQNConfig):
    """A second environment like ``env`` for validation episodes (training's stays mid-episode)."""
    if config.validate_every is None:
        return None
    if getattr(env, "spec", None) is None:
        raise ValueError("validation needs an environment made by gymnasium.make (env.spec is None): "
                         "pass DQNConfig(validate_every=None) to keep the last weights instead")
    import gymnasium

    return gymnasium.make(env.spec)


def learns_at(step: int, config: DQNConfig) -> bool:
    """Whether the agent makes an update after adding the transition of ``step`` (from 0)."""
    return step + 1 > config.learning_starts and (step + 1) % config.train_every == 0


class _Loop:
    """The state of one training run between steps (kept out of ``train`` to keep it short)."""

    def __init__(self, env, memory, agent: DQNAgent, run: TrainResult, validation_env=None):
        self.env, self.memory, self.agent, self.run = env, memory, agent, run
        self.validation_env, self.best_mean, self.best = validation_env, -np.inf, None
        self.sampler = _Sampler(memory, agent.config.batch_size)
        self.clock = run.seconds_in
        self.ep_return = 0.0
        self.loss_sum, self.loss_count = 0.0, 0

    def reset(self, seed: int | None = None) -> None:
        self.obs, _ = self.env.reset(seed=seed)
        self.run.recording.reset(self.obs)
        self.ep_return = 0.0

    def step(self, step: int) -> None:
        agent, cfg, clock = self.agent, self.agent.config, self.clock
        if cfg.lr_end is not None:
            agent.opt.lr = cfg.lr + (cfg.lr_end - cfg.lr) * step / max(1, self.run.steps - 1)
        t0 = time.perf_counter()
        action = agent.act(self.obs, step)
        t1 = time.perf_counter()
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        t2 = time.perf_counter()
        self.run.recording.step(step, action, reward, next_obs, terminated, truncated)
        self.memory.add(self.obs, action, reward, next_obs, terminated, truncated)
        t3 = time.perf_counter()
        clock["act"] += t1 - t0
        clock["env"] += t2 - t1
        clock["add"] += t3 - t2
        self.ep_return += float(reward)
        if learns_at(step, cfg):
            self._learn(agent.sample_rng)
        if (step + 1) % cfg.target_every == 0:
            agent.sync_target()
        if terminated or truncated:
            self.run.episode_returns.append(self.ep_return)
            self.run.episode_ends.append(step + 1)
            self.reset()
        else:
            self.obs = next_obs  # the same array is the next step's obs: a ListMemory shares it
        if cfg.validate_every is not None and (step + 1) % cfg.validate_every == 0:
            self.validate(step + 1)

    def validate(self, step: int) -> None:
        """Test the greedy policy; keep a copy of the weights when they score at least the best."""
        cfg, t0 = self.agent.config, time.perf_counter()
        mean = float(evaluate(self.agent, self.validation_env, cfg.validate_episodes,
                              cfg.validate_seed).mean())
        self.run.validation_steps.append(step)
        self.run.validation_means.append(mean)
        if mean >= self.best_mean:  # a tie goes to the later, more trained weights
            self.best_mean, self.best, self.run.best_step = mean, self.agent.net.flat.copy(), step
        self.clock["validate"] += time.perf_counter() - t0

    def keep_best(self) -> None:
        """At the end of training, put the best validated weights back into the network."""
        if self.best is not None:
            self.run.last_weights = self.agent.net.flat.copy()
            self.agent.net.flat[...] = self.best

    def _learn(self, rng) -> None:
        t0 = time.perf_counter()
        batch = canonical_batch(self.sampler.sample(rng))
        t1 = time.perf_counter()
        self.loss_sum += self.agent.learn(batch)
        self.loss_count += 1
        self.run.fingerprints.append(batch_fingerprint(batch))
        self.clock["sample"] += t1 - t0
        self.clock["learn"] += time.perf_counter() - t1

    def record(self, step: int) -> None:
        if self.run.curve is not None:
            self.run.curve.record(step)
        if self.loss_count:
            self.run.loss_steps.append(step)
            self.run.losses.append(self.loss_sum / self.loss_count)
        self.loss_sum, self.loss_count = 0.0, 0


class _Sampler:
    """``memory.sample``, into one reused batch when the memory takes ``out=``."""

    def __init__(self, memory, batch_size: int):
        self.memory, self.batch_size = memory, batch_size
        self.takes_out = "out" in inspect.signature(memory.sample).parameters
        self.batch = None

    def sample(self, rng):
        if not self.takes_out:
            return self.memory.sample(self.batch_size, rng)
        if self.batch is None:
            self.batch = self.memory.spec.empty_batch(self.batch_size)
        return self.memory.sample(self.batch_size, rng, out=self.batch)


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


# ====================================================================== playback
@dataclass
class Playback:
    """What :func:`playback` did: the time in the memory, and whether its batches matched."""

    memory: object
    add_seconds: float = 0.0     # wall time in memory.add, over the whole run
    sample_seconds: float = 0.0  # wall time in memory.sample (0 without sample=True)
    batches: int = 0             # batches drawn (the run's updates, with sample=True)
    first_mismatch: int | None = None  # the first update whose batch differs from training's

    @property
    def same_batches(self) -> bool:
        """Every batch drawn equals, bit for bit, the batch of the same update in training."""
        return self.batches > 0 and self.first_mismatch is None


def playback(memory, run: TrainResult, curve: MemoryCurve | None = None,
             record_every: int = 500, sample: bool = False) -> Playback:
    """Feed ``memory`` the recorded experience of ``run`` again, with no learning.

    ``memory`` receives the very transitions that training stored, as training handed them
    over: a new observation array per step, passed on as the next step's ``obs`` (so a list
    memory shares arrays as it did in training). ``curve.record(step)`` runs at step 0 and
    every ``record_every`` steps. With ``sample=True`` the memory also draws a batch wherever
    training updated, from a generator made like the agent's, and each batch is compared with
    training's (by :func:`batch_fingerprint`): equal batches at every update mean this memory
    would have taught the agent exactly what the training memory taught it.

    >>> import gymnasium as gym, rlmemlib as rm
    >>> env = gym.make("CartPole-v1")
    >>> cfg = DQNConfig(hidden=8, learning_starts=100)
    >>> run = train(env, rm.ListMemory(250), 300, config=cfg, progress_bar=False)
    >>> spec = rm.TransitionSpec.from_env(env)
    >>> same = playback(rm.CircularPool(250, spec), run, sample=True)
    >>> len(same.memory), same.batches, same.same_batches
    (250, 200, True)
    >>> bigger = playback(rm.CircularPool(300, spec), run, sample=True)  # evicts nothing
    >>> bigger.first_mismatch  # the update right after the 251st add, the list's first eviction
    150
    """
    _check_memory(memory)
    _check_int(record_every, "record_every", 1)
    result = Playback(memory)
    if sample:  # made only when needed: under tracemalloc, their bytes would count in the curve
        sampler, rng = _Sampler(memory, run.agent.config.batch_size), seed_streams(run.seed)[2]
    if curve is not None:
        curve.record(0)  # the memory before its first transition (a pool's arrays are all there)
    for step, transition in enumerate(run.recording.transitions()):
        t0 = time.perf_counter()
        memory.add(*transition)
        result.add_seconds += time.perf_counter() - t0
        if sample and learns_at(step, run.agent.config):
            _check_batch(result, sampler, rng, run)
        if curve is not None and ((step + 1) % record_every == 0 or step + 1 == run.steps):
            curve.record(step + 1)
    return result


def _check_batch(result: Playback, sampler: _Sampler, rng, run: TrainResult) -> None:
    """Draw the next batch and compare it with training's batch of the same update."""
    t0 = time.perf_counter()
    batch = sampler.sample(rng)
    result.sample_seconds += time.perf_counter() - t0
    k = result.batches
    result.batches += 1
    if result.first_mismatch is None and (
            k >= len(run.fingerprints)
            or batch_fingerprint(canonical_batch(batch)) != int(run.fingerprints[k])):
        result.first_mismatch = k


def playback_traced(make_memory, run: TrainResult, label: str = "",
                    record_every: int = 500) -> tuple[object, MemoryCurve]:
    """Build a memory with ``make_memory()`` and :func:`playback` ``run`` into it, under tracemalloc.

    The curve is zeroed before the memory is built, so it counts every byte the memory holds,
    its preallocated arrays included. Returns ``(memory, curve)``.

    >>> import gymnasium as gym, rlmemlib as rm
    >>> env = gym.make("CartPole-v1")
    >>> run = train(env, rm.ListMemory(), 300, config=DQNConfig(hidden=8), progress_bar=False)
    >>> spec = rm.TransitionSpec.from_env(env)
    >>> pool, curve = playback_traced(lambda: rm.CircularPool(300, spec), run, "pool", 100)
    >>> curve.steps, curve.last >= pool.nbytes
    ([0, 100, 200, 300], True)
    """
    gc.collect()
    with traced(count_blocks=False):
        curve = MemoryCurve(label).zero_here()
        memory = make_memory()
        playback(memory, run, curve, record_every)
    return memory, curve


# ====================================================================== evaluation
def evaluate(agent: DQNAgent, env, episodes: int = 100, seed: int = 10_000) -> np.ndarray:
    """Returns of ``episodes`` greedy episodes, episode ``i`` reset with ``seed + i``.

    An episode runs until the environment ends it: on CartPole-v1 the pole falls
    (``terminated``) or 500 steps pass (``truncated``, a return of 500).

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
