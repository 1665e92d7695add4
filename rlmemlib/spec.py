"""What one transition is made of, and how raw values are checked and cast.

Design choices and their memory trade-off:

* A :class:`TransitionSpec` names the shape and dtype of every field of a transition.
  It is built from gymnasium spaces and picks the *narrowest* dtype that holds every value
  of the space exactly: a ``Discrete(2)`` action takes one byte (``uint8``), not the eight
  of ``int64``. ``spec.nbytes`` is the packed size of one transition (every field in its dtype,
  nothing between them): the yardstick every memory is measured against. It is not a floor: the
  pool packs the two flags into one byte, and sharing ``next_obs`` stores each observation once.
* Rewards are ``float32`` by default (as in Stable-Baselines3): half the bytes of ``float64``,
  and CartPole's reward of 1.0 is exact in it.
* The cast rule is strict where a cast could lie: a value is *refused* when casting it to an
  integer dtype would change it (an action of 1.5, or 10**6 into one byte), when a finite float
  would overflow to infinity, or when it is not a number at all (text, ``None``). Floats may be
  rounded to the nearest value of the stored float dtype: that is precision, not a different
  value, and every memory rounds the same way.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

__all__ = ["TransitionSpec", "Transition", "Batch", "narrowest_int_dtype"]

FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")
_ndarray = np.ndarray  # for the fast paths' class checks
_BOOL = np.dtype(np.bool_)
_AS_UNSIGNED = {np.dtype(t): np.dtype(u) for t, u in [
    (np.int8, np.uint8), (np.int16, np.uint16), (np.int32, np.uint32), (np.int64, np.uint64),
    (np.uint8, np.uint8), (np.uint16, np.uint16), (np.uint32, np.uint32), (np.uint64, np.uint64)]}


def _max(arr: np.ndarray):
    """The largest value (NaN if any): argmax is several times faster than max on small arrays."""
    return arr.flat[arr.argmax()] if arr.ndim != 1 else arr[arr.argmax()]


def _min(arr: np.ndarray):
    """The smallest value (NaN if any), by argmin for the same reason."""
    return arr.flat[arr.argmin()] if arr.ndim != 1 else arr[arr.argmin()]


_UNSIGNED = (np.uint8, np.uint16, np.uint32, np.uint64)
_SIGNED = (np.int8, np.int16, np.int32, np.int64)


def narrowest_int_dtype(low: int, high: int) -> np.dtype:
    """The smallest integer dtype that holds every integer in ``[low, high]``.

    >>> narrowest_int_dtype(0, 1)
    dtype('uint8')
    >>> narrowest_int_dtype(-1, 300)
    dtype('int16')
    """
    low, high = int(low), int(high)
    if low > high:
        raise ValueError(f"empty range: low {low} is above high {high}")
    for dtype in _UNSIGNED if low >= 0 else _SIGNED:
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    raise ValueError(f"no integer dtype holds the range [{low}, {high}]")


class Transition(NamedTuple):
    """One step of experience, as stored and as returned by ``mem[i]``."""

    obs: Any
    action: Any
    reward: Any
    next_obs: Any
    terminated: Any
    truncated: Any


@dataclass(eq=False)
class Batch:
    """A batch of transitions: one array per field, the batch along axis 0.

    Make one with :meth:`TransitionSpec.empty_batch` and pass it as ``out=`` to ``sample``
    to reuse its arrays: the next ``sample(..., out=batch)`` overwrites them.
    """

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    def __len__(self) -> int:
        return len(self.reward)

    def __iter__(self):
        return iter((self.obs, self.action, self.reward, self.next_obs, self.terminated, self.truncated))

    @property
    def nbytes(self) -> int:
        """Bytes held by the six arrays' buffers."""
        return sum(a.nbytes for a in self)


@dataclass(frozen=True)
class TransitionSpec:
    """Shapes and dtypes of one transition's fields.

    >>> import gymnasium as gym
    >>> spec = TransitionSpec.from_spaces(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2))
    >>> spec.action_dtype, spec.nbytes
    (dtype('uint8'), 39)
    """

    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    action_shape: tuple[int, ...] = ()
    action_dtype: np.dtype = np.dtype(np.int64)
    reward_dtype: np.dtype = np.dtype(np.float32)
    action_low: int | None = None  # inclusive bounds of an integer action space, if known
    action_high: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "obs_shape", tuple(int(n) for n in self.obs_shape))
        object.__setattr__(self, "action_shape", tuple(int(n) for n in self.action_shape))
        for name in ("obs_dtype", "action_dtype", "reward_dtype"):
            dtype = np.dtype(getattr(self, name))
            if dtype.kind not in "biuf":
                raise TypeError(f"{name} must be a numeric dtype, got {dtype}")
            object.__setattr__(self, name, dtype)
        if self.reward_dtype.kind != "f":
            raise TypeError(f"reward_dtype must be a float dtype, got {self.reward_dtype}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_env(cls, env, reward_dtype=np.float32) -> "TransitionSpec":
        """The spec of an environment's transitions (its observation and action spaces).

        For a vector environment, the spec of one sub-environment's transitions (its
        ``single_observation_space`` and ``single_action_space``), which is what a memory stores.

        >>> import gymnasium as gym
        >>> envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 3)
        >>> TransitionSpec.from_env(envs) == TransitionSpec.from_env(gym.make("CartPole-v1"))
        True
        """
        observations = getattr(env, "single_observation_space", env.observation_space)
        actions = getattr(env, "single_action_space", env.action_space)
        return cls.from_spaces(observations, actions, reward_dtype=reward_dtype)

    @classmethod
    def from_spaces(cls, observation_space, action_space, reward_dtype=np.float32) -> "TransitionSpec":
        """The spec for these gymnasium spaces, with the narrowest exact dtypes."""
        obs_shape, obs_dtype, _, _ = _space_layout(observation_space, "observation_space")
        act_shape, act_dtype, low, high = _space_layout(action_space, "action_space")
        return cls(obs_shape, obs_dtype, act_shape, act_dtype, np.dtype(reward_dtype), low, high)

    # ------------------------------------------------------------------ sizes
    @property
    def obs_nbytes(self) -> int:
        return int(np.prod(self.obs_shape, dtype=np.int64)) * self.obs_dtype.itemsize

    @property
    def action_nbytes(self) -> int:
        return int(np.prod(self.action_shape, dtype=np.int64)) * self.action_dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Packed bytes of one transition: two observations, action, reward and two one-byte flags."""
        return 2 * self.obs_nbytes + self.action_nbytes + self.reward_dtype.itemsize + 2

    @property
    def record_dtype(self) -> np.dtype:
        """A packed structured dtype holding one whole transition (``itemsize == nbytes``)."""
        return np.dtype([
            ("obs", self.obs_dtype, self.obs_shape),
            ("action", self.action_dtype, self.action_shape),
            ("reward", self.reward_dtype),
            ("next_obs", self.obs_dtype, self.obs_shape),
            ("terminated", np.bool_),
            ("truncated", np.bool_),
        ])

    def empty_batch(self, batch_size: int) -> Batch:
        """A batch of ``batch_size`` rows, to be filled by ``sample(..., out=batch)``."""
        n = check_batch_size(batch_size)
        return Batch(
            obs=np.zeros((n, *self.obs_shape), self.obs_dtype),
            action=np.zeros((n, *self.action_shape), self.action_dtype),
            reward=np.zeros(n, self.reward_dtype),
            next_obs=np.zeros((n, *self.obs_shape), self.obs_dtype),
            terminated=np.zeros(n, np.bool_),
            truncated=np.zeros(n, np.bool_),
        )

    # ------------------------------------------------------------------ checking values
    def cast_obs(self, value, field: str = "obs") -> np.ndarray:
        """``value`` as an array of the observation's shape and dtype, or a clear error."""
        return cast_array(value, self.obs_shape, self.obs_dtype, field)

    def cast_action(self, value):
        """``value`` cast to the action dtype; refuses values outside the action space."""
        if self.action_shape == ():
            return cast_int_scalar(value, self.action_dtype, "action", self.action_low, self.action_high) \
                if self.action_dtype.kind in "iub" else cast_float_scalar(value, self.action_dtype, "action")
        arr = cast_array(value, self.action_shape, self.action_dtype, "action")
        if self.action_low is not None and arr.size:
            lo, hi = arr.min(), arr.max()
            if lo < self.action_low or hi > self.action_high:
                raise ValueError(f"action has values in [{lo}, {hi}], expected values in "
                                 f"[{self.action_low}, {self.action_high}] from the action space")
        return arr

    def cast_reward(self, value):
        return cast_float_scalar(value, self.reward_dtype, "reward")

    # ------------------------------------------------------------------ checking batches
    def check_batch(self, obs, action, reward, next_obs, terminated, truncated) -> Batch:
        """The batch, checked by the rules of :meth:`cast_batch`, for a memory that stores it.

        What a vector environment hands over (arrays of the right shapes, float32 observations,
        bool flags; an int64 action array and float64 rewards) is checked in a few array
        operations and returned as it is: an action or reward array may keep its own dtype,
        because every value in it fits the spec's dtype exactly (or rounds, for a float), and a
        store into the memory's arrays casts it. Anything else goes through ``cast_batch``.
        """
        fast = self._fast_batch(obs, action, reward, next_obs, terminated, truncated)
        if fast is None:
            return self.cast_batch(obs, action, reward, next_obs, terminated, truncated)
        return fast

    def _fast_batch(self, obs, action, reward, next_obs, terminated, truncated) -> Batch | None:
        """The common batch, checked with a few argmin or argmax calls; None for anything else."""
        if self._common_rows(obs, action, reward, next_obs, terminated, truncated) < 0:
            return None
        return Batch(obs, action, reward, next_obs, terminated, truncated)

    def _common_rows(self, obs, action, reward, next_obs, terminated, truncated) -> int:
        """The number of rows of a batch in the common form whose values all fit, found with at
        most four argmin or argmax calls; -1 for anything else, which then takes the careful path.

        The common form: ndarrays of the right shapes, observations of the spec's dtype, bool
        flags, an integer action array and a float reward array of any width. Every value then
        fits when the actions lie in the action space and no reward overflows the spec's float.
        """
        od, ndim, obs_shape, action_shape, rd, top, high = self._batch_plan
        if not (obs.__class__ is _ndarray and next_obs.__class__ is _ndarray
                and action.__class__ is _ndarray and reward.__class__ is _ndarray
                and terminated.__class__ is _ndarray and truncated.__class__ is _ndarray
                and obs.dtype is od and next_obs.dtype is od and terminated.dtype is _BOOL
                and truncated.dtype is _BOOL and obs.ndim == ndim):
            return -1
        shape = obs.shape
        one = shape[:1]  # (n,)
        if (shape != one + obs_shape or next_obs.shape != shape or reward.shape != one
                or terminated.shape != one or truncated.shape != one
                or action.shape != one + action_shape):
            return -1
        n = one[0]
        if not n:
            return 0
        given = reward.dtype
        if given is not rd and not (given.kind == "f" and given.itemsize <= rd.itemsize):
            # A wider float (float64 rewards into float32): none may overflow.
            if given.kind != "f" or not (-top <= reward[reward.argmin()]
                                         and reward[reward.argmax()] <= top):
                return -1  # also NaN (argmin finds it) and infinity: the careful path
        if high is not None and action.dtype.kind in "iu":  # ints into a space [0, high]
            # (argmax and argmin: several times faster than max and min on small arrays)
            if action[action.argmax()] > high or (action.dtype.kind == "i"
                                                  and action[action.argmin()] < 0):
                return -1
        elif not self._fast_actions_fit(action):
            return -1
        return n

    @cached_property
    def _batch_plan(self) -> tuple:
        """What the fast check of a batch compares with, in one tuple: the obs dtype, a batch's
        ndim, the obs and action shapes, the reward dtype, its largest value, and the action
        space's top when argmax and argmin check the actions (scalar ints from 0), else None."""
        top = float(np.finfo(self.reward_dtype).max)
        high = self.action_high if self.action_shape == () and self.action_low == 0 else None
        return (self.obs_dtype, len(self.obs_shape) + 1, self.obs_shape, self.action_shape,
                self.reward_dtype, top, high)

    def _fast_actions_fit(self, action: np.ndarray) -> bool:
        low, high = self.action_low, self.action_high
        if low is None:  # no bounds: only the same dtype is surely exact
            return action.dtype is self.action_dtype
        unsigned = _AS_UNSIGNED.get(action.dtype)
        if unsigned is None:
            return False
        if low == 0:  # a negative signed int seen as unsigned is huge: one max() tests both ends
            return _max(action if unsigned is action.dtype else action.view(unsigned)) <= high
        return low <= _min(action) and _max(action) <= high

    def cast_batch(self, obs, action, reward, next_obs, terminated, truncated) -> Batch:
        """``n`` transitions (arrays with a leading axis of ``n``) cast to the spec's dtypes.

        The rules are those of one transition, row by row: a batch of numeric arrays is accepted
        exactly when each of its rows would be, and every value comes out as ``add`` would store
        it. Arrays that already have the right shape and dtype are returned as they are (no
        copy). An error names the field, the first bad row, and what was expected.

        >>> spec = TransitionSpec((2,), np.float32, (), np.uint8, np.float32, 0, 1)
        >>> rows = spec.cast_batch(np.zeros((3, 2)), [0, 1, 1], [1.0, 1.0, 0.5], np.ones((3, 2)),
        ...                        [False, False, True], [False, False, False])
        >>> len(rows), rows.obs.dtype, rows.action.dtype
        (3, dtype('float32'), dtype('uint8'))
        >>> spec.cast_batch(np.zeros((3, 2)), [0, 2, 1], [1.0] * 3, np.ones((3, 2)), [False] * 3,
        ...                 [False] * 3)
        Traceback (most recent call last):
        ...
        ValueError: action[1] is 2, expected an int in [0, 1] from the action space
        """
        obs = _as_numeric_array(obs, "obs", self.obs_shape)
        if obs.ndim != len(self.obs_shape) + 1 or obs.shape[1:] != self.obs_shape:
            raise ValueError(f"obs has shape {obs.shape}, expected (n, {_dims(self.obs_shape)}): "
                             f"a leading axis of n transitions, then the observation shape "
                             f"{self.obs_shape}")
        n = obs.shape[0]
        obs = cast_rows(obs, n, self.obs_shape, self.obs_dtype, "obs")
        next_obs = cast_rows(next_obs, n, self.obs_shape, self.obs_dtype, "next_obs")
        action = self._cast_action_rows(action, n)
        reward = cast_real_rows(reward, n, self.reward_dtype, "reward")
        return Batch(obs, action, reward, next_obs, cast_flag_rows(terminated, n, "terminated"),
                     cast_flag_rows(truncated, n, "truncated"))

    def _cast_action_rows(self, value, n: int) -> np.ndarray:
        dtype, low, high = self.action_dtype, self.action_low, self.action_high
        if self.action_shape == () and dtype.kind == "f":
            return cast_real_rows(value, n, dtype, "action")
        arr = _as_numeric_array(value, "action", self.action_shape)
        if self.action_shape == () and arr.dtype.kind == "b":
            arr = arr.view(np.uint8)  # one action at a time, a bool is the int 0 or 1
        if self.action_shape == () and low is not None:
            _check_rows_shape(arr, n, (), "action")
            if arr.dtype.kind == "f":
                _check_whole(arr, dtype, "action")
            _check_in_space(arr, low, high)  # [low, high] lies inside the dtype's range
            return arr if arr.dtype == dtype else arr.astype(dtype)
        arr = cast_rows(arr, n, self.action_shape, dtype, "action")
        if low is not None and n and (arr.min() < low or arr.max() > high):
            flat = arr.reshape(n, -1)
            row = _first_row((flat < low) | (flat > high))
            raise ValueError(f"action[{row}] has values in [{flat[row].min()}, {flat[row].max()}], "
                             f"expected values in [{low}, {high}] from the action space")
        return arr


def _check_in_space(arr: np.ndarray, low: int, high: int) -> None:
    """Scalar integer actions: every one in ``[low, high]`` (one pass when ``low`` is 0)."""
    if not len(arr):
        return
    if low == 0 and arr.dtype.kind in "iu":
        # A negative signed int seen as unsigned is huge, so one max() tests both ends.
        top = arr.view(arr.dtype.str.replace("i", "u")).max()
        if top <= high:
            return
    elif arr.min() >= low and arr.max() <= high:
        return
    row = _first_row((arr < low) | (arr > high))
    raise ValueError(f"action[{row}] is {arr[row]:g}, expected an int in [{low}, {high}] from the "
                     "action space")


# ---------------------------------------------------------------------- spaces
def _space_layout(space, name):
    """(shape, dtype, low, high) for a supported gymnasium space."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        low = int(space.start)
        high = low + int(space.n) - 1
        return (), narrowest_int_dtype(low, high), low, high
    if isinstance(space, spaces.MultiBinary):
        return tuple(np.atleast_1d(space.n)), np.dtype(np.uint8), 0, 1
    if isinstance(space, spaces.MultiDiscrete):
        low = int(np.min(space.start)) if hasattr(space, "start") else 0
        high = int(np.max(np.asarray(space.nvec) + (space.start if hasattr(space, "start") else 0))) - 1
        return tuple(space.shape), narrowest_int_dtype(low, high), low, high
    if isinstance(space, spaces.Box):
        dtype = np.dtype(space.dtype)
        if dtype.kind in "iu" and np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high)):
            low, high = int(np.min(space.low)), int(np.max(space.high))
            return tuple(space.shape), narrowest_int_dtype(low, high), None, None
        return tuple(space.shape), dtype, None, None
    raise TypeError(f"{name} is a {type(space).__name__}; expected Box, Discrete, MultiBinary or "
                    "MultiDiscrete (flatten other spaces first)")


# ---------------------------------------------------------------------- casting rules
def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"batch_size must be a positive int, got {_describe(batch_size)} "
                        f"({type(batch_size).__name__})")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    return int(batch_size)


def cast_flag(value, field: str) -> bool:
    """A terminated/truncated flag: a bool, or an int that is 0 or 1."""
    if value is True or value is False:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "biu" and value in (0, 1):
        return bool(value)
    raise TypeError(f"{field} must be a bool, got {_describe(value)} ({type(value).__name__})")


def cast_int_scalar(value, dtype: np.dtype, field: str, low=None, high=None):
    """An integer that fits ``dtype`` (and ``[low, high]``) exactly; refuses 1.5, 10**6 into uint8."""
    if isinstance(value, (bool, np.bool_)) and dtype.kind != "b":
        value = int(value)
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, numbers.Integral):
        ivalue = int(value)
    elif isinstance(value, numbers.Real):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{field} must be a whole number for dtype {dtype}, got {_describe(value)}")
        ivalue = int(value)
    else:
        raise TypeError(f"{field} must be an int for dtype {dtype}, got {_describe(value)} "
                        f"({type(value).__name__})")
    if low is not None and not (low <= ivalue <= high):
        raise ValueError(f"{field} is {ivalue}, expected an int in [{low}, {high}] from the action space")
    info = np.iinfo(dtype)
    if not (info.min <= ivalue <= info.max):
        raise ValueError(f"{field} is {ivalue}, which does not fit dtype {dtype} "
                         f"[{info.min}, {info.max}]")
    return dtype.type(ivalue)


def cast_float_scalar(value, dtype: np.dtype, field: str):
    """A real number as ``dtype``; refuses text, complex numbers and overflow to infinity."""
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "biuf":
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{field} must be a real number, got {_describe(value)} ({type(value).__name__})")
    try:
        with np.errstate(over="ignore"):
            cast = dtype.type(value)
    except OverflowError:  # a Python int beyond every float: 10**400
        raise ValueError(f"{field} is {_describe(value)}, which overflows dtype {dtype}") from None
    if math.isinf(cast) and math.isfinite(value):
        raise ValueError(f"{field} is {value}, which overflows dtype {dtype}")
    return cast


def cast_array(value, shape: tuple, dtype: np.dtype, field: str) -> np.ndarray:
    """``value`` as an array of exactly ``shape`` and ``dtype``, or a clear error.

    The common case, an array of the right shape and dtype, is returned as it is (no copy).

    >>> cast_array([1, 2], (2,), np.dtype(np.uint8), "obs")
    array([1, 2], dtype=uint8)
    >>> cast_array([1, 300], (2,), np.dtype(np.uint8), "obs")
    Traceback (most recent call last):
    ...
    ValueError: obs has values up to 300, which do not fit dtype uint8 [0, 255]
    """
    if type(value) is np.ndarray and value.dtype == dtype and value.shape == shape:
        return value
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{field} must be numeric, got text {_describe(value)}")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and odd objects
        raise TypeError(f"{field} could not be read as an array of shape {shape}: {exc}") from None
    if arr.shape != shape:
        raise ValueError(f"{field} has shape {arr.shape}, expected {shape} from the observation space"
                         if field in ("obs", "next_obs") else
                         f"{field} has shape {arr.shape}, expected {shape}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{field} must be numeric, got dtype {arr.dtype} ({_describe(value)})")
    if arr.dtype == dtype:
        return arr
    if dtype.kind in "iu":
        return _cast_to_int_array(arr, dtype, field)
    if dtype.kind == "b":
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{field} must hold only 0 and 1 for dtype bool")
        return arr.astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = arr.astype(dtype)
    if arr.dtype.kind == "f" and np.any(np.isinf(cast) & np.isfinite(arr)):
        raise ValueError(f"{field} has values that overflow dtype {dtype}")
    return cast


# ---------------------------------------------------------------------- batches: the same rules, row by row
def _dims(shape: tuple) -> str:
    return ", ".join(str(d) for d in shape) if shape else ""


def _first_row(bad: np.ndarray) -> int:
    """The first row of ``bad`` (rows on axis 0) holding a True."""
    return int(np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))[0])


def _as_numeric_array(value, field: str, row_shape: tuple | None = None) -> np.ndarray:
    """``value`` as a numeric array; an empty list or tuple is zero rows of ``row_shape``."""
    if type(value) is not np.ndarray:
        if isinstance(value, (str, bytes)):
            raise TypeError(f"{field} must be numeric, got text {_describe(value)}")
        if isinstance(value, (list, tuple)) and not value and row_shape is not None:
            return np.zeros((0, *row_shape), np.uint8)  # no rows: any dtype casts
        try:
            value = np.asarray(value)
        except Exception as exc:  # ragged lists and odd objects
            raise TypeError(f"{field} could not be read as an array: {exc}") from None
    if value.dtype.kind not in "biuf":
        raise TypeError(f"{field} must be numeric, got dtype {value.dtype} ({_describe(value)})")
    return value


def _check_rows_shape(arr: np.ndarray, n: int, shape: tuple, field: str) -> None:
    if arr.shape != (n, *shape):
        raise ValueError(f"{field} has shape {arr.shape}, expected {(n, *shape)}: one row per "
                         f"transition ({n}, as obs has), each of shape {shape}")


def cast_rows(value, n: int, shape: tuple, dtype: np.dtype, field: str) -> np.ndarray:
    """``n`` rows of ``shape`` as ``dtype``, by the rule of :func:`cast_array`; names the bad row."""
    arr = _as_numeric_array(value, field, shape)
    _check_rows_shape(arr, n, shape, field)
    if arr.dtype == dtype:
        return arr
    if dtype.kind in "iu":
        return _cast_rows_to_int(arr, dtype, field)
    if dtype.kind == "b":
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{field}[{_first_row(~np.isin(arr, (0, 1)))}] must hold only 0 and 1 "
                             "for dtype bool")
        return arr.astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = arr.astype(dtype)
    if arr.dtype.kind == "f" and arr.size:
        overflow = np.isinf(cast) & np.isfinite(arr)
        if overflow.any():
            raise ValueError(f"{field}[{_first_row(overflow)}] has values that overflow dtype {dtype}")
    return cast


def _check_whole(arr: np.ndarray, dtype: np.dtype, field: str) -> None:
    """Float values headed for an integer dtype: finite and whole, or the first bad row named."""
    bad = ~np.isfinite(arr) | (arr != np.round(arr))
    if bad.any():
        row = _first_row(bad)
        raise ValueError(f"{field}[{row}] must hold whole numbers for dtype {dtype}, got "
                         f"{_describe(arr[row].tolist())}")


def _cast_rows_to_int(arr: np.ndarray, dtype: np.dtype, field: str) -> np.ndarray:
    if arr.size == 0:
        return arr.astype(dtype)
    if arr.dtype.kind == "f":
        _check_whole(arr, dtype, field)
    info = np.iinfo(dtype)
    if arr.min() < info.min or arr.max() > info.max:
        row = _first_row((arr < info.min) | (arr > info.max))
        raise ValueError(f"{field}[{row}] has values in [{arr[row].min():g}, {arr[row].max():g}], "
                         f"which do not fit dtype {dtype} [{info.min}, {info.max}]")
    return arr.astype(dtype)


def cast_real_rows(value, n: int, dtype: np.dtype, field: str) -> np.ndarray:
    """``n`` real numbers as ``dtype``, by the rule of :func:`cast_float_scalar` (no bools)."""
    arr = _as_numeric_array(value, field, ())
    if arr.dtype.kind == "b" and arr.size:  # no row, no bool to refuse
        raise TypeError(f"{field} must hold real numbers, got dtype bool")
    return cast_rows(arr, n, (), dtype, field)


def cast_flag_rows(value, n: int, field: str) -> np.ndarray:
    """``n`` flags as bools, by the rule of :func:`cast_flag`: bools, or ints that are 0 or 1."""
    arr = _as_numeric_array(value, field, ())
    _check_rows_shape(arr, n, (), field)
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind == "f" and n:  # no row, no float to refuse
        raise TypeError(f"{field} must hold bools, got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        row = _first_row(bad)
        raise TypeError(f"{field}[{row}] must be a bool, got {arr[row]} ({arr.dtype})")
    return arr.astype(np.bool_)


def _cast_to_int_array(arr: np.ndarray, dtype: np.dtype, field: str) -> np.ndarray:
    info = np.iinfo(dtype)
    if arr.size == 0:
        return arr.astype(dtype)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise ValueError(f"{field} must hold whole numbers for dtype {dtype}, got {_describe(arr)}")
    lo, hi = arr.min(), arr.max()
    if lo < info.min or hi > info.max:
        worst = hi if hi > info.max else lo
        raise ValueError(f"{field} has values up to {worst:g}, which do not fit dtype {dtype} "
                         f"[{info.min}, {info.max}]" if hi > info.max else
                         f"{field} has values down to {worst:g}, which do not fit dtype {dtype} "
                         f"[{info.min}, {info.max}]")
    return arr.astype(dtype)
