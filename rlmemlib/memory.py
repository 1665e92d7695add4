"""Replay memories: the same interface, four ways to hold the bytes.

Design choices and their memory trade-off:

* :class:`ListMemory` keeps a Python list of :class:`~rlmemlib.Transition` tuples holding the
  objects it was given. Simple, and several times the raw size of the data: every transition
  pays for a tuple, an array header per observation, and a list slot. When an agent passes
  the same array as one step's ``next_obs`` and the next step's ``obs``, the list shares it
  for free.
* :class:`CircularPool` preallocates one numpy array per field (struct of arrays) and
  overwrites the oldest row once full: memory is fixed once the pool is full, at the raw size of
  the data. With ``share_next_obs=True`` each observation is stored once, because one step's
  ``next_obs`` is the next step's ``obs``: about half the bytes. Where that chain breaks
  (an episode ends, or any add whose ``obs`` differs from the previous ``next_obs``), the lost
  final observation goes into a small side store, so ``next_obs`` is still exact. The two
  flags share one byte (``flags``), so a CartPole transition takes 38 bytes, one under
  ``spec.nbytes``, and about 23 with ``share_next_obs``.
* :class:`RecyclingMemory` preallocates one record object per slot and overwrites records in
  place: no allocation per ``add``, but each record still pays an object header.
* All memories share one sampling rule, ``rng.integers(0, len(mem), size=batch_size)`` over
  logical indices (0 is the oldest transition held), so memories holding the same transitions
  return the same batch for the same generator state.
* Every ``add`` checks all six values before it writes anything: a rejected ``add`` leaves
  the memory exactly as it was.
* ``add_batch`` takes ``n`` transitions as arrays with a leading axis of ``n`` (what a vector
  environment hands over) and leaves exactly what ``n`` adds would. The whole batch is checked
  first (:meth:`TransitionSpec.cast_batch`: an error names the field and the first bad row),
  then written with one slice store per array where the layout allows it.
* Every array that holds stored data is made by one method, ``_new_array(name, shape,
  dtype)`` (``np.zeros`` here): a subclass can back the memory by memory-mapped files or
  shared memory by overriding it alone.
* Saving and loading: each memory hands :mod:`rlmemlib.persist` its arrays and state
  (``_saved_state``) and builds itself from a checked file (``_from_saved``); persist owns the
  file format and checksums and imports no memory, so the dependency runs one way.
"""

from __future__ import annotations

import numbers
from typing import Callable

import numpy as np

from . import persist
from .spec import (Batch, Transition, TransitionSpec, cast_array, cast_flag, cast_float_scalar,
                   check_batch_size)

_ndarray = np.ndarray  # for the fast path's class checks

__all__ = ["ListMemory", "CircularPool", "RecyclingMemory", "ObjectPool"]

TERMINATED = 1  # bits of CircularPool.flags
TRUNCATED = 2
FINAL_ELSEWHERE = 4  # this row's next_obs is in the side store, not in the next row


class _Memory:
    """What every memory shares: logical indexing and the sampling rule."""

    _capacity: int | None
    _len: int

    def __len__(self) -> int:
        return self._len

    @property
    def capacity(self) -> int | None:
        return self._capacity

    @property
    def is_full(self) -> bool:
        return self._capacity is not None and self._len == self._capacity

    def _logical(self, i) -> int:
        """``i`` as an index in ``[0, len)``; negative counts from the newest."""
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, numbers.Integral):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        n = self._len
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"index {i} is out of range for a memory holding {n} transitions")
        return j

    def __iter__(self):
        for i in range(self._len):
            yield self[i]

    def _check_sample(self, batch_size, rng) -> int:
        """The batch size, once ``batch_size`` and ``rng`` are checked and there is data."""
        n = check_batch_size(batch_size)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), "
                            f"got {type(rng).__name__}")
        if self._len == 0:
            raise ValueError("cannot sample from an empty memory: add transitions first")
        return n

    def _sample_indices(self, batch_size, rng) -> np.ndarray:
        """The shared sampling rule; checks everything before touching the generator."""
        n = self._check_sample(batch_size, rng)
        return rng.integers(0, self._len, size=n)

    def _out_batch(self, out, n: int) -> Batch:
        if out is None:
            return self.spec.empty_batch(n)
        arrays = self._out_ok
        if (arrays and isinstance(out, Batch) and out.obs is arrays[0] and out.action is arrays[1]
                and out.reward is arrays[2] and out.next_obs is arrays[3] and out.terminated is arrays[4]
                and out.truncated is arrays[5] and len(out.reward) == n):
            return out  # the same arrays as last time: already checked
        _check_out(out, self.spec, n)
        self._out_ok = tuple(out)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(len={self._len}, capacity={self._capacity})"

    def _kept_after(self, n: int) -> int:
        """How many of ``n`` new transitions are still held once all ``n`` are added."""
        return n if self._capacity is None else min(n, self._capacity)

    # ------------------------------------------------------------------ storage and files
    def _new_array(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """A zero-filled array that will hold stored data; every such array is made here.

        ``name`` says which one (``"obs"``, ``"flags"``, ``"final_obs"``, ...). Override this
        one method to back a memory by memory-mapped files or shared memory. ``np.zeros``
        leaves the pages untouched, so they become resident only as rows are written.
        """
        return np.zeros(shape, dtype)

    def save(self, path):
        """Write this memory to ``path`` (a numpy ``.npz`` file) atomically; returns the path.

        See :mod:`rlmemlib.persist`: no pickle, a temporary file renamed over the target.
        """
        return persist.save(self, path)

    @classmethod
    def load(cls, path):
        """Read a memory saved by ``save``, checked; a ``ValueError`` names any problem.

        >>> import tempfile, pathlib, numpy as np
        >>> pool = CircularPool(4, TransitionSpec((2,), np.float32, (), np.uint8))
        >>> pool.add(np.zeros(2, np.float32), 1, 1.0, np.ones(2, np.float32), False, False)
        >>> path = pool.save(pathlib.Path(tempfile.mkdtemp()) / "pool.npz")
        >>> CircularPool.load(path)[0].next_obs
        array([1., 1.], dtype=float32)
        """
        return persist.load(cls, path)


def _owned(value):
    """A scalar field as a numpy scalar, an array field as a copy that later writes cannot change."""
    if isinstance(value, np.ndarray):
        return value[()] if value.ndim == 0 else value.copy()
    return value


def _check_capacity(capacity, allow_none=False) -> int | None:
    if capacity is None and allow_none:
        return None
    if isinstance(capacity, (bool, np.bool_)) or not isinstance(capacity, numbers.Integral):
        raise TypeError(f"capacity must be a positive int{' or None' if allow_none else ''}, "
                        f"got {capacity!r}")
    if capacity <= 0:
        raise ValueError(f"capacity must be a positive int, got {capacity}")
    return int(capacity)


def _check_spec(spec) -> TransitionSpec:
    if not isinstance(spec, TransitionSpec):
        raise TypeError(f"spec must be a TransitionSpec (TransitionSpec.from_env(env)), got "
                        f"{type(spec).__name__}")
    return spec


def _check_out(out, spec: TransitionSpec, n: int) -> Batch:
    if not isinstance(out, Batch):
        raise TypeError(f"out must be a Batch (spec.empty_batch({n})), got {type(out).__name__}")
    expected = spec.empty_batch(1)
    for name, want in zip(("obs", "action", "reward", "next_obs", "terminated", "truncated"), expected):
        got = getattr(out, name)
        shape = (n, *want.shape[1:])
        if not isinstance(got, np.ndarray) or got.shape != shape or got.dtype != want.dtype:
            desc = f"{got.shape} {got.dtype}" if isinstance(got, np.ndarray) else type(got).__name__
            raise ValueError(f"out.{name} is {desc}, expected shape {shape} and dtype {want.dtype}")
    return out


# ====================================================================== ListMemory
class ListMemory(_Memory):
    """The naive memory: a list of ``Transition`` tuples holding the objects given to ``add``.

    With a ``capacity`` the list becomes a ring: once full, each ``add`` replaces the oldest.
    Values are checked against ``spec`` (or against the first transition added) but stored as
    they came, so an observation array passed twice is stored once.

    >>> import numpy as np
    >>> mem = ListMemory(capacity=2)
    >>> for t in range(3):
    ...     mem.add(np.full(4, t, np.float32), 0, 1.0, np.full(4, t + 1, np.float32), False, False)
    >>> len(mem), float(mem[0].obs[0]), float(mem[-1].obs[0])
    (2, 1.0, 2.0)
    """

    def __init__(self, capacity=None, spec: TransitionSpec | None = None):
        self._capacity = _check_capacity(capacity, allow_none=True)
        self.spec = None if spec is None else _check_spec(spec)
        self._items: list[Transition] = []
        self._start = 0  # list position of the oldest transition once the ring has wrapped
        self._len = 0

    def add(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        """Append one transition; once full, replace the oldest."""
        spec = self.spec or _infer_spec(obs, action)
        spec.cast_obs(obs, "obs")
        spec.cast_obs(next_obs, "next_obs")
        spec.cast_action(action)
        spec.cast_reward(reward)
        item = Transition(obs, action, reward, next_obs,
                          cast_flag(terminated, "terminated"), cast_flag(truncated, "truncated"))
        self.spec = spec  # only now: a rejected first add leaves no spec behind
        self._append(item)

    def _append(self, item: Transition) -> None:
        if self._capacity is None or self._len < self._capacity:
            self._items.append(item)
            self._len += 1
        else:
            self._items[self._start] = item  # the oldest slot takes the newest transition
            self._start = (self._start + 1) % self._capacity

    def add_batch(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        """Add ``n`` transitions given as arrays with a leading axis of ``n``, as ``n`` adds would.

        The whole batch is checked before anything is stored. Each transition keeps copies of
        its two observation rows and Python numbers for the rest, so the memory never keeps
        the caller's batch arrays alive (a row view would keep its whole batch).
        """
        spec = self.spec or _infer_batch_spec(obs, action)
        if spec is None:
            return  # an empty first batch: nothing to store, no row to learn the spec from
        rows = spec.cast_batch(obs, action, reward, next_obs, terminated, truncated)
        self.spec = spec  # only now: a rejected first batch leaves no spec behind
        m = self._kept_after(len(rows))
        if not m:
            return
        tail = slice(len(rows) - m, None)
        for item in zip([o.copy() for o in rows.obs[tail]], rows.action[tail].tolist(),
                        rows.reward[tail].tolist(), [o.copy() for o in rows.next_obs[tail]],
                        rows.terminated[tail].tolist(), rows.truncated[tail].tolist()):
            self._append(Transition(*item))

    def __getitem__(self, i) -> Transition:
        j = self._logical(i)
        return self._items[(self._start + j) % len(self._items)]

    def sample(self, batch_size, rng) -> Batch:
        """A new batch of ``batch_size`` transitions drawn with replacement."""
        idx = self._sample_indices(batch_size, rng)
        items, start, n = self._items, self._start, len(self._items)
        picked = [items[(start + i) % n] for i in idx.tolist()]
        s = self.spec
        return Batch(
            obs=np.array([t.obs for t in picked], dtype=s.obs_dtype),
            action=np.array([t.action for t in picked], dtype=s.action_dtype),
            reward=np.array([t.reward for t in picked], dtype=s.reward_dtype),
            next_obs=np.array([t.next_obs for t in picked], dtype=s.obs_dtype),
            terminated=np.array([t.terminated for t in picked], dtype=np.bool_),
            truncated=np.array([t.truncated for t in picked], dtype=np.bool_),
        )

    def clear(self) -> None:
        """Forget every transition (the spec learned from the first add stays)."""
        self._items = []
        self._start = 0
        self._len = 0

    # ------------------------------------------------------------------ files
    def _saved_state(self):
        """Arrays of the spec's dtypes, refused when a value would change in the cast."""
        spec = self.spec
        if spec is None:  # nothing was ever added
            return {}, {"len": 0, "start": 0}
        items = list(self)
        arrays = {}
        for name, (shape, dtype) in _field_layouts(spec).items():
            values = [getattr(t, name) for t in items]
            cast = np.array(values, dtype=dtype).reshape((len(items), *shape))
            exact = np.array(values).reshape(cast.shape) if values else cast
            if values and not np.array_equal(exact, cast, equal_nan=exact.dtype.kind == "f"):
                raise ValueError(f"cannot save this ListMemory exactly: its {name} values change "
                                 f"when cast to {dtype}; give the memory a matching spec")
            arrays[name] = cast
        return arrays, {"len": len(items), "start": 0}

    @classmethod
    def _from_saved(cls, saved: persist.Saved) -> "ListMemory":
        capacity = saved.meta.get("capacity")
        if capacity is not None:
            capacity = saved.int("capacity", 1, 2**40)
        length = saved.int("len", 0, capacity if capacity is not None else 2**40)
        mem = cls(capacity, saved.spec)
        if length == 0:
            return mem
        spec = saved.require_spec()
        got = {name: saved.array(name, (length, *shape), dtype)
               for name, (shape, dtype) in _field_layouts(spec).items()}
        for i in range(length):
            mem.add(got["obs"][i], got["action"][i], got["reward"][i], got["next_obs"][i],
                    bool(got["terminated"][i]), bool(got["truncated"][i]))
        return mem


def _field_layouts(spec: TransitionSpec) -> dict:
    """Shape and dtype of each of the six fields of one transition, in the order of ``add``."""
    return {"obs": (spec.obs_shape, spec.obs_dtype), "action": (spec.action_shape, spec.action_dtype),
            "reward": ((), spec.reward_dtype), "next_obs": (spec.obs_shape, spec.obs_dtype),
            "terminated": ((), np.dtype(np.bool_)), "truncated": ((), np.dtype(np.bool_))}


def _infer_batch_spec(obs, action) -> TransitionSpec | None:
    """A spec read off the first row of a batch (None for an empty batch: nothing to learn)."""
    if isinstance(obs, (str, bytes)):
        raise TypeError(f"obs must be numeric, got text {obs!r:.40}")
    try:
        arr, act = np.asarray(obs), np.asarray(action)
    except Exception as exc:  # ragged lists and odd objects
        raise TypeError(f"obs and action must be arrays with a leading axis of n: {exc}") from None
    if arr.ndim == 0 or act.ndim == 0:
        field, got = ("obs", arr) if arr.ndim == 0 else ("action", act)
        raise ValueError(f"{field} has shape {got.shape}, expected a leading axis of n transitions")
    if not len(arr):
        return None
    return _infer_spec(arr[0], act[0] if len(act) else act)


def _infer_spec(obs, action) -> TransitionSpec:
    """A spec read off the first transition, for a ListMemory made without one."""
    if isinstance(obs, (str, bytes)):
        raise TypeError(f"obs must be numeric, got text {obs!r:.40}")
    arr = np.asarray(obs)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"obs must be numeric, got dtype {arr.dtype}")
    act = np.asarray(action)
    if act.dtype.kind not in "biuf":
        raise TypeError(f"action must be numeric, got {type(action).__name__}")
    return TransitionSpec(arr.shape, arr.dtype, act.shape, act.dtype)


# ====================================================================== CircularPool
class CircularPool(_Memory):
    """A preallocated numpy ring: one array per field, the oldest row overwritten once full.

    ``share_next_obs=True`` stores each observation once: row ``r`` holds a transition's
    ``obs`` and row ``r + 1`` its ``next_obs``. That halves the memory for long episodes, at the
    cost of a small side store for the final observations of episodes.

    >>> import numpy as np
    >>> spec = TransitionSpec((2,), np.float32, (), np.uint8)
    >>> pool = CircularPool(3, spec, share_next_obs=True)
    >>> pool.add(np.array([0, 0], np.float32), 1, 1.0, np.array([1, 1], np.float32), False, False)
    >>> pool.add(np.array([1, 1], np.float32), 0, 1.0, np.array([9, 9], np.float32), True, False)
    >>> pool.add(np.array([5, 5], np.float32), 1, 1.0, np.array([6, 6], np.float32), False, False)
    >>> pool[1].next_obs  # the episode's last observation, kept although row 2 now holds [5, 5]
    array([9., 9.], dtype=float32)
    """

    obs: np.ndarray               # (rows, *obs_shape): obs of the transition in each row
    next_obs: np.ndarray | None   # (rows, *obs_shape), or None when shared with obs
    action: np.ndarray            # (rows, *action_shape)
    reward: np.ndarray            # (rows,)
    flags: np.ndarray             # (rows,) uint8: TERMINATED | TRUNCATED | FINAL_ELSEWHERE

    def __init__(self, capacity, spec: TransitionSpec, share_next_obs: bool = False):
        self._capacity = _check_capacity(capacity)
        self.spec = _check_spec(spec)
        self.share_next_obs = bool(share_next_obs)
        # Shared: one spare row, so the newest transition's next_obs has a row of its own.
        rows = self._rows = self._capacity + 1 if self.share_next_obs else self._capacity
        self.obs = self._new_array("obs", (rows, *spec.obs_shape), spec.obs_dtype)
        self.next_obs = (None if self.share_next_obs else
                         self._new_array("next_obs", (rows, *spec.obs_shape), spec.obs_dtype))
        self.action = self._new_array("action", (rows, *spec.action_shape), spec.action_dtype)
        self.reward = self._new_array("reward", (rows,), spec.reward_dtype)
        self.flags = self._new_array("flags", (rows,), np.uint8)
        # The side store starts small (a row per 64 transitions, at most 16) and doubles as needed.
        self._finals = (_FinalStore(spec, min(16, self._capacity // 64 + 1), self._new_array)
                        if self.share_next_obs else None)
        self._lut_term = np.array([bool(f & TERMINATED) for f in range(8)])
        self._lut_trunc = np.array([bool(f & TRUNCATED) for f in range(8)])
        # Constants of the fast path in add().
        self._obs_dtype, self._obs_shape = spec.obs_dtype, spec.obs_shape
        scalar_int = spec.action_shape == () and spec.action_low is not None
        self._action_low = spec.action_low if scalar_int else 1   # low > high: never fast
        self._action_high = spec.action_high if scalar_int else 0
        self._reward_max = float(np.finfo(spec.reward_dtype).max)
        self._out_ok: tuple = ()  # the arrays of the last `out` batch that passed the checks
        # Writers for the scalar fields: a memoryview stores a Python number faster than numpy
        # indexing does (array-valued actions keep the numpy array).
        self._action_w = memoryview(self.action) if spec.action_shape == () else self.action
        self._reward_w = memoryview(self.reward)
        self._flags_w = memoryview(self.flags)
        self.clear()

    def clear(self) -> None:
        """Forget every transition; the arrays stay allocated for reuse."""
        self._pos = 0     # row the next transition goes to
        self._len = 0
        self._added = 0   # shared only: transitions added since the last clear (sequence numbers)
        self._tail = None  # shared only: bytes of the newest next_obs, as the last add wrote them
        if self._finals is not None:
            self._finals.clear()

    @property
    def nbytes(self) -> int:
        """Bytes of every array this pool holds, the side store of final observations included."""
        arrays = (self.obs, self.next_obs, self.action, self.reward, self.flags)
        total = sum(a.nbytes for a in arrays if a is not None)
        return total + (self._finals.nbytes if self._finals is not None else 0)

    @property
    def _start(self) -> int:
        """Row of the oldest transition (derived: the cursor minus the length, around the ring)."""
        return (self._pos - self._len) % self._rows

    def _row(self, j: int) -> int:
        return (self._pos - self._len + j) % self._rows

    # ------------------------------------------------------------------ add
    def add(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        """Store one transition, overwriting the oldest once the pool is full."""
        # Fast path: arrays of the right shape and dtype, a Python int action inside the space,
        # a finite Python float reward, bool flags. Anything else takes the checked path.
        # Everything is checked before anything is written.
        dtype, shape = self._obs_dtype, self._obs_shape
        if (obs.__class__ is _ndarray and next_obs.__class__ is _ndarray
                and obs.dtype is dtype and next_obs.dtype is dtype
                and obs.shape == shape and next_obs.shape == shape
                and action.__class__ is int and self._action_low <= action <= self._action_high
                and reward.__class__ is float and -self._reward_max <= reward <= self._reward_max
                and (terminated is False or terminated is True)
                and (truncated is False or truncated is True)):
            flag = terminated + 2 * truncated  # TERMINATED | TRUNCATED, from two checked bools
        else:
            obs, action, reward, next_obs, flag = self._checked(obs, action, reward, next_obs,
                                                                terminated, truncated)
        row = self._pos
        if self.share_next_obs:
            self._add_shared(row, obs, next_obs)
        else:
            self.obs[row] = obs
            self.next_obs[row] = next_obs
        self._action_w[row] = action
        self._reward_w[row] = reward
        self._flags_w[row] = flag
        self._pos = row + 1 if row + 1 < self._rows else 0
        if self._len < self._capacity:
            self._len += 1  # once full, the row just written was the oldest: it is gone now

    def _checked(self, obs, action, reward, next_obs, terminated, truncated):
        """The values cast to the pool's dtypes, or a ValueError/TypeError naming the field."""
        spec = self.spec
        obs = cast_array(obs, spec.obs_shape, spec.obs_dtype, "obs")
        next_obs = cast_array(next_obs, spec.obs_shape, spec.obs_dtype, "next_obs")
        action = spec.cast_action(action)
        reward = cast_float_scalar(reward, spec.reward_dtype, "reward")
        flag = (TERMINATED if cast_flag(terminated, "terminated") else 0) | \
               (TRUNCATED if cast_flag(truncated, "truncated") else 0)
        return obs, action, reward, next_obs, flag

    def _add_shared(self, row: int, obs: np.ndarray, next_obs: np.ndarray) -> None:
        # Invariant: while the pool is not empty, row `row` (one past the newest) holds the
        # newest transition's next_obs.
        # `_tail` keeps the bytes written there by the last add (None after clear or load).
        tail = self._tail
        if not self._len:
            self.obs[row] = obs
        elif (self.obs[row].tobytes() if tail is None else tail) != obs.tobytes():
            # The chain breaks (an episode ended): move the newest next_obs to the side store
            # before this obs overwrites it.
            self._finals.push(self._added - 1, self.obs[row])
            self.flags[row - 1] |= FINAL_ELSEWHERE  # row - 1 is the newest (-1 wraps to the end)
            self.obs[row] = obs
        nxt = row + 1 if row + 1 < self._rows else 0
        if self._len == self._capacity and self._flags_w[nxt] & FINAL_ELSEWHERE:
            self._finals.pop_oldest()  # nxt holds the oldest transition, which is evicted now
        self.obs[nxt] = next_obs
        self._tail = next_obs.tobytes()
        self._added += 1  # sequence numbers name the owners of final observations

    # ------------------------------------------------------------------ add_batch
    def add_batch(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        """Store ``n`` transitions given as arrays with a leading axis of ``n``.

        The same contents and later samples as ``n`` calls of ``add`` in that order; the whole
        batch is checked before anything is written, so a refused batch changes nothing.

        >>> import numpy as np
        >>> pool = CircularPool(3, TransitionSpec((2,), np.float32, (), np.uint8, np.float32, 0, 1))
        >>> pool.add_batch(np.zeros((4, 2)), [0, 1, 1, 0], np.ones(4), np.ones((4, 2)),
        ...                [False] * 4, [False, False, False, True])
        >>> len(pool), pool[-1].truncated
        (3, True)
        """
        rows = self.spec.cast_batch(obs, action, reward, next_obs, terminated, truncated)
        n = len(rows)
        codes = rows.terminated.view(np.uint8) | (rows.truncated.view(np.uint8) << 1)
        if self.share_next_obs:
            self._add_batch_shared(rows, codes)
            return
        m = min(n, self._capacity)
        first = (self._pos + n - m) % self._rows  # row of the first transition still held after
        for dest, src in _ring_spans(first, m, self._rows, n - m):
            self.obs[dest] = rows.obs[src]
            self.next_obs[dest] = rows.next_obs[src]
            self.action[dest] = rows.action[src]
            self.reward[dest] = rows.reward[src]
            self.flags[dest] = codes[src]
        self._pos = (self._pos + n) % self._rows
        self._len = min(self._len + n, self._capacity)

    def _add_batch_shared(self, rows: Batch, codes: np.ndarray) -> None:
        for k in range(len(rows)):
            row = self._pos
            self._add_shared(row, rows.obs[k], rows.next_obs[k])
            self.action[row] = rows.action[k]
            self.reward[row] = rows.reward[k]
            self.flags[row] = codes[k]
            self._pos = row + 1 if row + 1 < self._rows else 0
            if self._len < self._capacity:
                self._len += 1

    # ------------------------------------------------------------------ files
    def _saved_state(self):
        arrays = {"obs": self.obs, "action": self.action, "reward": self.reward, "flags": self.flags}
        if self.next_obs is not None:
            arrays["next_obs"] = self.next_obs
        state = {"share_next_obs": self.share_next_obs, "len": self._len, "start": self._start,
                 "added": self._added if self.share_next_obs else self._len}
        if self.share_next_obs:
            arrays["final_obs"], arrays["final_seq"] = self._finals.live()
        return arrays, state

    @classmethod
    def _from_saved(cls, saved: persist.Saved) -> "CircularPool":
        capacity = saved.int("capacity", 1, 2**40)
        shared = saved.flag("share_next_obs")
        spec = saved.require_spec()
        rows = capacity + 1 if shared else capacity
        length = saved.int("len", 0, capacity)
        start = saved.int("start", 0, rows - 1)
        added = saved.int("added", length, 2**62)
        fields = {"obs": ((rows, *spec.obs_shape), spec.obs_dtype),
                  "action": ((rows, *spec.action_shape), spec.action_dtype),
                  "reward": ((rows,), spec.reward_dtype), "flags": ((rows,), np.uint8)}
        if not shared:
            fields["next_obs"] = fields["obs"]
        got = {name: saved.array(name, *layout) for name, layout in fields.items()}
        if np.any(got["flags"] & ~np.uint8(TERMINATED | TRUNCATED | FINAL_ELSEWHERE)):
            raise saved.error("flags hold bits that no CircularPool writes")
        pool = cls(capacity, spec, share_next_obs=shared)
        if shared:
            pool._restore_finals(saved, got["flags"], start, length, added)
        for name, arr in got.items():
            getattr(pool, name)[...] = arr
        pool._pos, pool._len, pool._added = (start + length) % rows, length, added
        return pool

    def _restore_finals(self, saved, flags, start, length, added) -> None:
        seq = saved.arrays.get("final_seq", np.zeros(0, np.int64))
        seq = saved.array("final_seq", seq.shape[:1], np.int64)
        obs = saved.array("final_obs", (len(seq), *self.spec.obs_shape), self.spec.obs_dtype)
        rows = (start + np.arange(length)) % self._rows
        owners = added - length + np.flatnonzero(flags[rows] & FINAL_ELSEWHERE)
        if len(owners) != len(seq) or not np.array_equal(owners, seq):
            raise saved.error("the side store of final observations does not match the flags")
        for s, o in zip(seq.tolist(), obs):
            self._finals.push(s, o)

    # ------------------------------------------------------------------ read
    def __getitem__(self, i) -> Transition:
        j = self._logical(i)
        row = self._row(j)
        flag = int(self.flags[row])
        return Transition(self.obs[row].copy(), _owned(self.action[row]), self.reward[row],
                          self._next_obs_of(j, row, flag).copy(),
                          bool(flag & TERMINATED), bool(flag & TRUNCATED))

    def _next_obs_of(self, j: int, row: int, flag: int) -> np.ndarray:
        if not self.share_next_obs:
            return self.next_obs[row]
        if flag & FINAL_ELSEWHERE:
            return self._finals.get(self._added - self._len + j)
        return self.obs[(row + 1) % self._rows]

    def sample(self, batch_size, rng, out: Batch | None = None) -> Batch:
        """A batch of ``batch_size`` transitions, written into ``out`` when given.

        Reusing ``out`` allocates no batch arrays, but the next call overwrites them: copy what
        you want to keep.
        """
        n = self._check_sample(batch_size, rng)
        out = self._out_batch(out, n)  # checked before the generator moves: a refusal draws nothing
        idx = rng.integers(0, self._len, size=n)
        # Logical index -> row is (start + i) mod rows: take(mode="wrap") does the mod for free.
        start = self._start
        rows = idx + start if start else idx
        self.obs.take(rows, axis=0, out=out.obs, mode="wrap")
        self.action.take(rows, axis=0, out=out.action, mode="wrap")
        self.reward.take(rows, out=out.reward, mode="wrap")
        flags = self.flags.take(rows, mode="wrap")
        self._lut_term.take(flags, out=out.terminated, mode="clip")
        self._lut_trunc.take(flags, out=out.truncated, mode="clip")
        if not self.share_next_obs:
            self.next_obs.take(rows, axis=0, out=out.next_obs, mode="wrap")
            return out
        self.obs.take(rows + 1, axis=0, out=out.next_obs, mode="wrap")  # the next row's obs...
        if self._finals.count:  # ...except where an episode ended: those are in the side store
            elsewhere = (flags >= FINAL_ELSEWHERE).nonzero()[0]  # flags < 8: >= tests the bit
            if len(elsewhere):
                seqs = idx.take(elsewhere)
                seqs += self._added - self._len
                out.next_obs[elsewhere] = self._finals.get_many(seqs)
        return out


def _ring_spans(first: int, m: int, rows: int, src_start: int = 0):
    """``m`` consecutive ring rows from ``first``, as (ring slice, source slice) pairs: one,
    or two when they wrap past the end; the source rows start at ``src_start``."""
    head = min(m, rows - first)
    spans = [(slice(first, first + head), slice(src_start, src_start + head))]
    if head < m:
        spans.append((slice(0, m - head), slice(src_start + head, src_start + m)))
    return spans


class _FinalStore:
    """Final observations of episodes for a shared CircularPool, oldest first.

    Entries are pushed in the order of their transitions and leave in the same order (the pool
    evicts its oldest transition first), so the live entries are one sorted run
    ``[head, head + count)``: a lookup is a binary search on sequence numbers. The arrays
    double when full and never shrink, so once the pool is full they stop growing unless the
    pool holds more episode ends than it ever has.
    """

    obs: np.ndarray   # (size, *obs_shape): the final observations, live in [head, head + count)
    seq: np.ndarray   # (size,) int64: sequence number of the owning transition

    def __init__(self, spec: TransitionSpec, size: int, new_array: Callable):
        self._new_array = new_array  # the owning pool's allocator
        self.obs = new_array("final_obs", (size, *spec.obs_shape), spec.obs_dtype)
        self.seq = new_array("final_seq", (size,), np.int64)
        self.clear()

    def clear(self) -> None:
        self.head = 0
        self.count = 0

    @property
    def nbytes(self) -> int:
        return self.obs.nbytes + self.seq.nbytes

    def push(self, seq: int, obs: np.ndarray) -> None:
        end = self.head + self.count
        if end == len(self.seq):
            if self.head:  # slide the live run to the front
                self.obs[:self.count] = self.obs[self.head:end]
                self.seq[:self.count] = self.seq[self.head:end]
            else:          # full: double
                self.obs = self._grown("final_obs", self.obs)
                self.seq = self._grown("final_seq", self.seq)
            self.head, end = 0, self.count
        self.obs[end] = obs
        self.seq[end] = seq
        self.count += 1

    def _grown(self, name: str, arr: np.ndarray) -> np.ndarray:
        bigger = self._new_array(name, (2 * len(arr), *arr.shape[1:]), arr.dtype)
        bigger[:len(arr)] = arr
        return bigger

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """The live final observations and their sequence numbers, oldest first (views)."""
        live = slice(self.head, self.head + self.count)
        return self.obs[live], self.seq[live]

    def pop_oldest(self) -> None:
        self.head += 1
        self.count -= 1

    def _positions(self, seqs) -> np.ndarray:
        # Every sought seq is live (its transition is held), so searchsorted finds it exactly.
        pos = self.seq[self.head:self.head + self.count].searchsorted(seqs)
        pos += self.head
        return pos

    def get(self, seq: int) -> np.ndarray:
        return self.obs[self._positions(np.array([seq]))[0]]

    def get_many(self, seqs: np.ndarray) -> np.ndarray:
        return self.obs.take(self._positions(seqs), axis=0)


# ====================================================================== ObjectPool
class ObjectPool:
    """Objects made once and handed out again: ``acquire()`` then ``release(obj)``.

    ``size`` objects are made up front. When none is free, ``acquire`` makes one more, so
    ``created`` above ``size`` says the pool was too small.

    >>> pool = ObjectPool(lambda: bytearray(1024), size=2)
    >>> a = pool.acquire(); pool.release(a); b = pool.acquire()
    >>> a is b, pool.created, pool.reused
    (True, 2, 1)
    """

    def __init__(self, factory: Callable[[], object], size: int = 0):
        if not callable(factory):
            raise TypeError(f"factory must be callable, got {type(factory).__name__}")
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, numbers.Integral) or size < 0:
            raise ValueError(f"size must be an int >= 0, got {size!r}")
        self._factory = factory
        self.created = 0     # objects made by the factory
        self.reused = 0      # acquires served by an object that had been released before
        self._free: list = [self._make() for _ in range(int(size))]
        self._fresh = len(self._free)  # free objects never handed out (at the end of _free's bottom)
        self._in_use: dict[int, object] = {}

    def _make(self):
        self.created += 1
        return self._factory()

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def available(self) -> int:
        return len(self._free)

    def acquire(self):
        """A free object (one released earlier if there is one), or a new one."""
        if len(self._free) > self._fresh:
            obj = self._free.pop()
            self.reused += 1
        elif self._free:
            obj = self._free.pop()
            self._fresh -= 1
        else:
            obj = self._make()
        self._in_use[id(obj)] = obj
        return obj

    def release(self, obj) -> None:
        """Give ``obj`` back. It must be in use: handed out by this pool and not yet released."""
        held = self._in_use.get(id(obj))
        if held is not obj:
            if any(free is obj for free in self._free):
                raise ValueError("this object was already released to the pool: releasing it "
                                 "twice would hand it out to two users")
            raise ValueError(f"this {type(obj).__name__} was not handed out by this pool")
        del self._in_use[id(obj)]
        self._free.append(obj)

    def __repr__(self) -> str:
        return (f"ObjectPool(created={self.created}, reused={self.reused}, in_use={self.in_use}, "
                f"available={self.available})")


# ====================================================================== RecyclingMemory
class RecyclingMemory(_Memory):
    """A ring of preallocated record objects, each overwritten in place once the ring is full.

    A record is a zero-dimensional structured numpy array holding one whole transition
    (``spec.record_dtype``). All records are made up front, so ``add`` allocates nothing.

    >>> import numpy as np
    >>> spec = TransitionSpec((2,), np.float32, (), np.uint8)
    >>> mem = RecyclingMemory(2, spec)
    >>> first = mem.records[0]
    >>> for t in range(3):
    ...     mem.add(np.full(2, t, np.float32), 1, 1.0, np.full(2, t + 1, np.float32), False, False)
    >>> mem.records[0] is first, mem[-1].obs
    (True, array([2., 2.], dtype=float32))
    """

    def __init__(self, capacity, spec: TransitionSpec):
        self._capacity = _check_capacity(capacity)
        self.spec = _check_spec(spec)
        dtype = spec.record_dtype
        self.records: list[np.ndarray] = [self._new_array(f"record{i}", (), dtype)
                                          for i in range(self._capacity)]
        self._gather = np.zeros(0, spec.record_dtype)  # scratch rows for the last batch size
        self._out_ok: tuple = ()
        self.clear()

    def clear(self) -> None:
        """Forget every transition; the records stay for reuse."""
        self._start = 0
        self._len = 0

    def add(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        """Overwrite the next record in place (the oldest once full)."""
        spec = self.spec
        obs = cast_array(obs, spec.obs_shape, spec.obs_dtype, "obs")
        next_obs = cast_array(next_obs, spec.obs_shape, spec.obs_dtype, "next_obs")
        action = spec.cast_action(action)
        reward = cast_float_scalar(reward, spec.reward_dtype, "reward")
        terminated = cast_flag(terminated, "terminated")
        truncated = cast_flag(truncated, "truncated")
        cap = self._capacity
        record = self.records[(self._start + self._len) % cap]
        record["obs"] = obs
        record["action"] = action
        record["reward"] = reward
        record["next_obs"] = next_obs
        record["terminated"] = terminated
        record["truncated"] = truncated
        if self._len == cap:
            self._start = (self._start + 1) % cap
        else:
            self._len += 1

    def add_batch(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        """Overwrite ``n`` records in place, as ``n`` adds would; the batch is checked first."""
        rows = self.spec.cast_batch(obs, action, reward, next_obs, terminated, truncated)
        n, cap = len(rows), self._capacity
        m = min(n, cap)
        packed = np.empty(m, self.spec.record_dtype)  # the kept rows, one record each
        for name, values in zip(("obs", "action", "reward", "next_obs", "terminated", "truncated"),
                                rows):
            packed[name] = values[n - m:]
        end = self._start + self._len + n  # one past the newest, counted from the old start
        for k in range(m):
            self.records[(end - m + k) % cap][()] = packed[k]
        dropped = max(0, self._len + n - cap)
        self._start = (self._start + dropped) % cap
        self._len = min(self._len + n, cap)

    def _saved_state(self):
        return {"records": np.stack(self.records)}, {"len": self._len, "start": self._start}

    @classmethod
    def _from_saved(cls, saved: persist.Saved) -> "RecyclingMemory":
        capacity = saved.int("capacity", 1, 2**40)
        length = saved.int("len", 0, capacity)
        start = saved.int("start", 0, capacity - 1)
        spec = saved.require_spec()
        records = saved.array("records", (capacity,), spec.record_dtype)
        mem = cls(capacity, spec)
        for record, row in zip(mem.records, records):
            record[()] = row
        mem._start, mem._len = start, length
        return mem

    def __getitem__(self, i) -> Transition:
        record = self.records[(self._start + self._logical(i)) % self._capacity]
        return Transition(record["obs"].copy(), _owned(record["action"]), record["reward"][()],
                          record["next_obs"].copy(), bool(record["terminated"]),
                          bool(record["truncated"]))

    def sample(self, batch_size, rng, out: Batch | None = None) -> Batch:
        """A batch of ``batch_size`` transitions, copied record by record into ``out``."""
        n = self._check_sample(batch_size, rng)
        out = self._out_batch(out, n)
        idx = rng.integers(0, self._len, size=n)
        rows = self._gather
        if len(rows) != n:
            rows = self._gather = np.zeros(n, self.spec.record_dtype)
        records, start, cap = self.records, self._start, self._capacity
        for k, i in enumerate(idx.tolist()):
            rows[k] = records[(start + i) % cap]
        for name, dest in zip(("obs", "action", "reward", "next_obs", "terminated", "truncated"), out):
            dest[...] = rows[name]
        return out
