"""Replay memories: the same interface, four ways to hold the bytes.

Design choices and their memory trade-off:

* :class:`ListMemory` keeps a Python list of :class:`~rlmemlib.Transition` tuples holding the
  objects it was given. Simple, and several times the packed size (``spec.nbytes``): every transition
  pays for a tuple, an array header per observation, and a list slot. When an agent passes
  the same array as one step's ``next_obs`` and the next step's ``obs``, the list shares it
  for free.
* :class:`CircularPool` preallocates one numpy array per field (struct of arrays) and
  overwrites the oldest row once full: memory is fixed once the pool is full, at the packed size
  of the data. The two flags share one byte (``flags``), so a CartPole transition takes 38 bytes,
  one under ``spec.nbytes``.
* ``CircularPool(share_next_obs=True)`` stores each observation once, because one step's
  ``next_obs`` is the same environment's next ``obs``: about 23 bytes per CartPole transition.
  A row keeps its ``obs``; its ``next_obs`` is the ``obs`` of the row ``hop`` rows later, and
  the hop (1 to 63) lives in the six spare bits of the flags byte, so sharing costs no extra
  byte per row. With one environment the hop is 1. A vector environment hands its rows over
  interleaved, one per environment and step, so one environment's next row is several rows on:
  the single chain "the next row's obs" would break at every row and keep every ``next_obs``
  aside, more than the unshared pool.
* The pool finds the chains by content, without environment ids (``add_batch`` has none):
  a transition whose successor has not come yet is an *open tail*, its ``next_obs`` kept as
  bytes. Each add compares its ``obs``, byte for byte (never trusting the caller), with the
  open tail at the hop of the last link, which with regular interleaving is the one (a single
  bytes comparison); failing that, with the other open tails within 63 rows. A batch checks
  all its rows at that hop in one array comparison and searches only the exceptions. At most
  one open tail per environment, plus rare breaks without a flag; a row up to 63 rows on can
  continue one, after that it joins the side store (single adds move such tails every 64 adds).
* Where no later row holds ``next_obs`` (the episode ended: terminated or truncated; or an
  open tail that no row within reach continued), the observation goes to a side store of final
  observations ordered by sequence number: ``next_obs`` stays exact at every episode end and
  truncation. With CartPole's random-policy episodes (about 22 steps) the store adds about one
  byte per transition, the same with 1, 4 or 8 interleaved environments. The limit: a link
  reaches 63 rows. With 64 or more environments in strict turn no row links; fed by ``rollout``
  under ``NEXT_STEP`` autoreset, the reset rows left out shorten the hops, so 64 CartPoles
  still link most rows (27 bytes per transition), 66 about half, 70 almost none. Then every
  ``next_obs`` goes to the side store, 24 bytes an entry in arrays that double: 61 bytes per
  CartPole transition in a pool of 20,000, more than the unshared pool's 38. Past 63
  interleaved environments, use ``share_next_obs=False``.
* :class:`RecyclingMemory` preallocates one record object per slot and overwrites records in
  place: no allocation per ``add``, but each record still pays an object header.
* All memories share one sampling rule, ``rng.integers(0, len(mem), size=batch_size)`` over
  logical indices (0 is the oldest transition held), so memories holding the same transitions
  return the same batch for the same generator state.
* Every ``add`` checks all six values before it writes anything: a rejected ``add`` leaves
  the memory exactly as it was.
* ``add_batch`` takes ``n`` transitions as arrays with a leading axis of ``n`` (what a vector
  environment hands over) and leaves exactly what ``n`` adds would. The whole batch is checked
  first, then written with one slice store per array where the layout allows it. The common
  form (ndarrays of the right shapes, observations in the spec's dtype, integer actions, float
  rewards, bool flags: what a vector environment hands over) is checked by at most four argmin
  and argmax calls; anything else by :meth:`TransitionSpec.cast_batch`, whose error
  names the field and the first bad row. A shared pool stores a batch whose only breaks at the
  hop are its episode ends (the usual one) in a few array operations; any other batch takes
  the general linking above.
* Every array that holds stored data is made by one method, ``_new_array(name, shape,
  dtype)`` (``np.zeros`` here): a subclass can back the memory by memory-mapped files or
  shared memory by overriding it alone.
* Saving and loading: each memory hands :mod:`rlmemlib.persist` its arrays and state
  (``_saved_state``) and builds itself from a checked file (``_from_saved``); persist owns the
  file format and checksums and imports no memory, so the dependency runs one way.
"""

from __future__ import annotations

import numbers
import weakref
from typing import Callable

import numpy as np

from . import persist
from .spec import (Batch, Transition, TransitionSpec, cast_array, cast_flag, cast_float_scalar,
                   check_batch_size)

_ndarray = np.ndarray  # for the fast path's class checks

__all__ = ["ListMemory", "CircularPool", "RecyclingMemory", "ObjectPool"]

TERMINATED = 1  # bits 0 and 1 of CircularPool.flags
TRUNCATED = 2
HOP_SHIFT = 2   # shared pools: bits 2-7 hold the hop, how many rows on next_obs is the obs;
HOP_1 = 1 << HOP_SHIFT  # flags below HOP_1: hop 0, next_obs is not in the ring
MAX_HOP = 63    # the most six bits hold: up to 63 environments interleaved share observations
SWEEP_EVERY = 64  # adds between two looks for open tails out of reach (a power of two)
_SWEEP_MASK = SWEEP_EVERY - 1
SHARED_LAYOUT = 2  # version of a shared pool's saved arrays


class _Memory:
    """What every memory shares: logical indexing and the sampling rule."""

    _capacity: int | None
    _len: int

    def __len__(self) -> int:
        return self._len

    def _checked(self, obs, action, reward, next_obs, terminated, truncated):
        """One transition cast to the spec's dtypes, the two flags packed into one byte
        (TERMINATED | TRUNCATED), or a ValueError/TypeError naming the field."""
        spec = self.spec
        obs = cast_array(obs, spec.obs_shape, spec.obs_dtype, "obs")
        next_obs = cast_array(next_obs, spec.obs_shape, spec.obs_dtype, "next_obs")
        action = spec.cast_action(action)
        reward = cast_float_scalar(reward, spec.reward_dtype, "reward")
        flag = (TERMINATED if cast_flag(terminated, "terminated") else 0) | \
               (TRUNCATED if cast_flag(truncated, "truncated") else 0)
        return obs, action, reward, next_obs, flag

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

    ``share_next_obs=True`` stores each observation once: a row keeps its transition's ``obs``,
    and its ``next_obs`` is found as the ``obs`` of a later row (the next one for a single
    environment, a few rows on when several environments are interleaved). Final observations
    of episodes go to a small side store. A row then costs its unshared size less one observation:
    about 23 bytes instead of 38 for CartPole (0.61 times), nearer half as observations grow.

    >>> import numpy as np
    >>> spec = TransitionSpec((2,), np.float32, (), np.uint8)
    >>> pool = CircularPool(3, spec, share_next_obs=True)
    >>> pool.add(np.array([0, 0], np.float32), 1, 1.0, np.array([1, 1], np.float32), False, False)
    >>> pool.add(np.array([1, 1], np.float32), 0, 1.0, np.array([9, 9], np.float32), True, False)
    >>> pool.add(np.array([5, 5], np.float32), 1, 1.0, np.array([6, 6], np.float32), False, False)
    >>> pool[1].next_obs  # the episode's last observation, kept although row 2 holds [5, 5]
    array([9., 9.], dtype=float32)
    """

    obs: np.ndarray               # (capacity, *obs_shape): obs of the transition in each row
    next_obs: np.ndarray | None   # (capacity, *obs_shape), or None when shared with obs
    action: np.ndarray            # (capacity, *action_shape)
    reward: np.ndarray            # (capacity,)
    flags: np.ndarray             # (capacity,) uint8: TERMINATED | TRUNCATED | hop << HOP_SHIFT
    _open: dict                   # shared: sequence number -> bytes of next_obs, for open tails

    def __init__(self, capacity, spec: TransitionSpec, share_next_obs: bool = False):
        self._capacity = _check_capacity(capacity)
        self.spec = _check_spec(spec)
        self.share_next_obs = bool(share_next_obs)
        rows = self._rows = self._capacity
        self.obs = self._new_array("obs", (rows, *spec.obs_shape), spec.obs_dtype)
        self.next_obs = (None if self.share_next_obs else
                         self._new_array("next_obs", (rows, *spec.obs_shape), spec.obs_dtype))
        self.action = self._new_array("action", (rows, *spec.action_shape), spec.action_dtype)
        self.reward = self._new_array("reward", (rows,), spec.reward_dtype)
        self.flags = self._new_array("flags", (rows,), np.uint8)
        # The side store starts small (a row per 64 transitions, at most 16) and doubles as needed.
        self._finals = (_FinalStore(spec, min(16, self._capacity // 64 + 1), self._new_array)
                        if self.share_next_obs else None)
        self._open = {}
        self._reach = min(MAX_HOP, self._capacity - 1)  # the longest hop that stays inside the ring
        self._lut_term = np.array([bool(f & TERMINATED) for f in range(256)])
        self._lut_trunc = np.array([bool(f & TRUNCATED) for f in range(256)])
        # Constants of the fast path in add().
        self._obs_dtype, self._obs_shape = spec.obs_dtype, spec.obs_shape
        scalar_int = spec.action_shape == () and spec.action_low is not None
        self._action_low = spec.action_low if scalar_int else 1   # low > high: never fast
        self._action_high = spec.action_high if scalar_int else 0
        self._reward_max = float(np.finfo(spec.reward_dtype).max)
        self._reward_min = -self._reward_max
        # Comparing observations by their bytes: rows read as k words of the widest int that fits.
        width = spec.obs_nbytes
        size = next(w for w in (8, 4, 2, 1) if width % w == 0)
        self._word, self._words_per_row = np.dtype(f"u{size}"), max(1, width // size)
        self._row_size = int(np.prod(spec.obs_shape, dtype=np.int64))  # values per observation
        self._any_word = np.dtype(f"u{self._words_per_row}") if self._words_per_row in (1, 2, 4, 8) \
            else None
        self._out_ok: tuple = ()  # the arrays of the last `out` batch that passed the checks
        # Writers for the scalar fields: a memoryview stores a Python number faster than numpy
        # indexing does (array-valued actions keep the numpy array).
        self._action_w = memoryview(self.action) if spec.action_shape == () else self.action
        self._reward_w = memoryview(self.reward)
        self._flags_w = memoryview(self.flags)
        # Shared pools store a row's obs from the bytes they compare it by (a byte view of obs).
        self._obs_width = spec.obs_nbytes
        self._obs_b = memoryview(self.obs).cast("B") if self.share_next_obs else None
        self.clear()

    def clear(self) -> None:
        """Forget every transition; the arrays stay allocated for reuse."""
        self._pos = 0     # row the next transition goes to
        self._len = 0
        self._added = 0   # shared only: transitions added since the last clear (sequence numbers)
        self._hop = min(1, self._reach)  # shared only: the last link's hop, tried first next
        self._open.clear()
        if self._finals is not None:
            self._finals.clear()

    @property
    def nbytes(self) -> int:
        """Bytes of data this pool holds: its arrays, the side store and the open tails' bytes."""
        arrays = (self.obs, self.next_obs, self.action, self.reward, self.flags)
        total = sum(a.nbytes for a in arrays if a is not None)
        if self._finals is not None:
            total += self._finals.nbytes + sum(len(b) for b in self._open.values())
        return total

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
                and reward.__class__ is float and self._reward_min <= reward <= self._reward_max
                and (terminated is False or terminated is True)
                and (truncated is False or truncated is True)):
            flag = terminated + 2 * truncated  # TERMINATED | TRUNCATED, from two checked bools
        else:
            obs, action, reward, next_obs, flag = self._checked(obs, action, reward, next_obs,
                                                                terminated, truncated)
        row = self._pos
        finals = self._finals
        if finals is None:
            self.obs[row] = obs
            self.next_obs[row] = next_obs
        else:  # shared: where do this obs and this next_obs live? (see the module notes)
            key, at = obs.tobytes(), row * self._obs_width
            self._obs_b[at:at + self._obs_width] = key  # the row's obs, as compared
            s, opened = self._added, self._open  # s: this transition's sequence number
            if opened:  # does obs continue an open tail? First tried at the last link's hop
                hop = self._hop
                tail = opened.pop(s - hop, None)
                if tail == key:  # the common case: one comparison of bytes
                    self._flags_w[row - hop] = hop << HOP_SHIFT  # an open tail's flags were 0
                else:
                    if tail is not None:
                        opened[s - hop] = tail  # not continued by this obs: it stays open
                    self._link_any(row, s, key)
            if flag:  # the episode ended: no later obs is this next_obs
                finals.push(s, next_obs, s + 1 - self._capacity)
            else:
                opened[s] = next_obs.tobytes()
            self._added = s + 1
            if not s & _SWEEP_MASK:
                self._sweep(s)
        self._action_w[row] = action
        self._reward_w[row] = reward
        self._flags_w[row] = flag  # hop 0: where this next_obs goes is decided by later adds
        self._pos = row + 1 if row + 1 < self._rows else 0
        if self._len < self._capacity:
            self._len += 1  # once full, the row just written was the oldest: it is gone now

    def _link_any(self, row: int, s: int, key: bytes) -> None:
        """Find an open tail within reach whose next_obs has the bytes ``key``; link it to ``row``."""
        for t, tail in self._open.items():
            if tail == key and s - t <= self._reach:
                del self._open[t]
                hop = self._hop = s - t
                self._flags_w[row - hop] = hop << HOP_SHIFT  # an open tail's flags were 0
                return

    def _sweep(self, newest: int) -> None:
        """Tidy the open tails after the add of ``newest``: those of transitions already
        evicted go; those no later add can reach (more than ``_reach`` rows back) join the side
        store. Single adds leave this to every SWEEP_EVERY-th add."""
        oldest = newest + 1 - self._capacity  # the oldest transition held once newest is
        for t in [t for t in self._open if t <= newest - self._reach]:
            tail = self._open.pop(t)
            if t >= oldest:
                self._finals.insert(t, self._bytes_as_obs(tail))

    def _bytes_as_obs(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, self._obs_dtype).reshape(self._obs_shape)

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
        spec = self.spec
        n = spec._common_rows(obs, action, reward, next_obs, terminated, truncated)
        if n < 0:  # not the common form: the careful checks, and casts
            obs, action, reward, next_obs, terminated, truncated = spec.cast_batch(
                obs, action, reward, next_obs, terminated, truncated)
            n = len(reward)
        # Checked (and cast where needed) from here on: a store casts, and the values fit.
        pos = self._pos
        end = pos + n
        if n and end <= self._rows:  # the common case: one slice of the ring, no wrap
            if self._finals is None:
                self.obs[pos:end] = obs
                self.next_obs[pos:end] = next_obs
                self.action[pos:end] = action
                self.reward[pos:end] = reward
                self.flags[pos:end] = terminated  # TERMINATED is bit 0: a bool stores as 0 or 1
                if truncated.tobytes().count(0) != n:  # a time limit is rare (counting bytes is
                    self.flags[pos:end][truncated] |= TRUNCATED  # cheaper than a reduction)
                self._pos = end if end < self._rows else 0
                held = self._len + n
                self._len = held if held < self._capacity else self._capacity
                return
            if self._add_shared_common(obs, action, reward, next_obs, terminated, truncated, n):
                return
        rows = Batch(obs, action, reward, next_obs, terminated, truncated)
        if self._finals is not None:
            self._add_batch_shared(rows)
            return
        m = min(n, self._capacity)  # wrapping: the rows still held once all n are written
        for dest, src in _ring_spans((pos + n - m) % self._rows, m, self._rows, n - m):
            self._write_rows(dest, Batch(*(field[src] for field in rows)))
        self._pos = (pos + n) % self._rows
        self._len = min(self._len + n, self._capacity)

    def _write_rows(self, dest: slice, rows: Batch) -> None:
        """Store checked rows into the ring rows ``dest`` (a store casts: the values fit)."""
        self.obs[dest] = rows.obs
        self.next_obs[dest] = rows.next_obs
        self.action[dest] = rows.action
        self.reward[dest] = rows.reward
        self.flags[dest] = rows.terminated  # TERMINATED is bit 0: a bool stores as 0 or 1
        trunc = rows.truncated
        if len(trunc) and trunc[trunc.argmax()]:  # a time limit is rare: argmax finds any
            self.flags[dest][trunc] |= TRUNCATED

    def _add_shared_common(self, obs, action, reward, next_obs, terminated, truncated,
                           n: int) -> bool:
        """The common checked batch of a shared pool, in few array operations; False, with
        nothing changed, when it is not that case (``_add_batch_shared`` then takes it).

        The common case: the batch fits before the end of the ring, and the rows that do not
        continue at the last link's hop are exactly the episode ends (an end's next_obs is
        never linked, and here no other row needs a search). It then does what
        ``_add_batch_shared`` does for such a batch, without its general bookkeeping.
        """
        hop, pos, s0 = self._hop, self._pos, self._added
        inside = n - hop  # rows whose successor at the hop is in the batch
        if inside <= 0 or not hop or self._capacity < n + 2 * SWEEP_EVERY:
            return False
        unlinked = self._differ(next_obs[:inside], obs[hop:]).nonzero()[0]
        ends = terminated.nonzero()[0]
        cut = None
        if truncated.tobytes().count(0) != n:  # a time limit is rare (bytes: cheaper than a
            cut = truncated.nonzero()[0]       # reduction)
            ends = np.union1d(ends, cut)
        k = len(unlinked)  # the unlinked rows must be the ends before `inside` (both sorted)
        if (unlinked.tobytes() != ends[:k].tobytes() or (k < len(ends) and ends[k] < inside)
                or (hop != 1 and k > inside // 2)):  # (_link_inside would retry at a hop of 1)
            return False
        flags = self.flags[pos:pos + n]
        flags[:inside] = hop << HOP_SHIFT
        flags[inside:] = 0
        if cut is None:
            flags[ends] = TERMINATED  # an episode end links nowhere
        else:
            flags[ends] = terminated[ends]  # TERMINATED is bit 0
            flags[cut] |= TRUNCATED
        opened = self._open
        if len(opened) == 1 and opened.get(s0 - hop) == obs[0].tobytes():
            del opened[s0 - hop]  # the usual open tail: the last batch's row `hop` back
            self._flags_w[pos - hop] |= hop << HOP_SHIFT  # (a negative index counts from the end)
        elif opened:
            self._link_open_tails(obs)
        last = next_obs[inside:].tobytes()  # the last rows: their successors come in later
        width, closed = self._obs_width, ends[k:].tolist()  # adds (an end's: the side store)
        for j in range(hop):
            if inside + j not in closed:
                opened[s0 + inside + j] = last[j * width:(j + 1) * width]
        if opened and min(opened) <= s0 + n - 1 - self._reach:
            self._sweep(s0 + n - 1)  # some open tail is now out of reach
        if len(ends):  # the episode ends' next_obs, to the side store
            self._finals.push_many(ends + s0, next_obs.take(ends, axis=0), s0 + n - self._capacity)
        self.obs[pos:pos + n] = obs
        self.action[pos:pos + n] = action
        self.reward[pos:pos + n] = reward
        self._pos = pos + n if pos + n < self._rows else 0
        self._len = min(self._len + n, self._capacity)
        self._added = s0 + n
        return True

    def _add_batch_shared(self, rows: Batch) -> None:
        n, cap = len(rows.reward), self._capacity
        if n >= cap:  # everything held now is overwritten: only the last `cap` rows matter
            self._skip(n - cap)
            rows = Batch(*(field[n - cap:] for field in rows))
            n = cap
        if not n:
            return
        s0, pos = self._added, self._pos
        if cap < n + 2 * SWEEP_EVERY:  # open tails live under 2 * SWEEP_EVERY adds: one may
            self._forget_open_before(s0 + n - cap)  # be overwritten now; it must not be linked
        obs, next_obs = np.ascontiguousarray(rows.obs), np.ascontiguousarray(rows.next_obs)
        wraps = pos + n > self._rows
        flags = np.empty(n, np.uint8) if wraps else self.flags[pos:pos + n]  # the ring's own
        inside, unlinked = self._link_inside(obs, next_obs, flags)
        ends = _mark_ends(rows, flags)  # after the links: an episode end links nowhere
        if self._open:
            self._link_open_tails(obs)
        self._settle_tails(obs, next_obs, flags, inside, unlinked, ends)
        for dest, src in _ring_spans(pos, n, self._rows):
            self.obs[dest] = obs[src]
            self.action[dest] = rows.action[src]
            self.reward[dest] = rows.reward[src]
            if wraps:
                self.flags[dest] = flags[src]
        self._pos = (pos + n) % self._rows
        self._len = min(self._len + n, cap)
        self._added = s0 + n

    def _skip(self, k: int) -> None:
        """Forget everything held, as if ``k`` more transitions had come and gone."""
        added, pos = self._added + k, (self._pos + k) % self._rows
        self.clear()
        self._added, self._pos = added, pos

    def _forget_before(self, seq: int) -> None:
        """Drop the side store entries and open tails of transitions older than ``seq``."""
        self._finals.drop_before(seq)
        self._forget_open_before(seq)

    def _forget_open_before(self, seq: int) -> None:
        for t in [t for t in self._open if t < seq]:
            del self._open[t]

    def _link_inside(self, obs: np.ndarray, next_obs: np.ndarray, flags: np.ndarray):
        """The common case, for all rows at once: row k continues at row k + hop, the hop of the
        last link (or 1, one environment, when that hop leaves most rows unlinked: a chance
        match far away must not cost a search per row). Writes each row's hop into ``flags``
        (0 where it does not continue); returns how many rows have their guessed successor in
        the batch, and those it does not continue."""
        hop = self._hop
        inside, unlinked = self._rows_not_at(hop, obs, next_obs)
        if hop != 1 and len(unlinked) > inside // 2 and self._reach:
            inside_1, unlinked_1 = self._rows_not_at(1, obs, next_obs)
            if len(unlinked_1) < len(unlinked):
                hop = self._hop = 1
                inside, unlinked = inside_1, unlinked_1
        flags[:inside] = hop << HOP_SHIFT  # every row linked...
        flags[inside:] = 0
        flags[unlinked] = 0  # ...but those whose successor differs
        return inside, unlinked.tolist()

    def _rows_not_at(self, hop: int, obs: np.ndarray, next_obs: np.ndarray):
        """How many rows have a row ``hop`` on in the batch, and those whose next_obs it is not."""
        inside = max(0, len(obs) - hop) if hop else 0
        if not inside:
            return 0, np.zeros(0, np.intp)
        return inside, self._differ(next_obs[:inside], obs[hop:]).nonzero()[0]

    def _link_open_tails(self, obs: np.ndarray) -> None:
        """Link each open tail of earlier adds to the first batch row within reach whose obs is
        its next_obs (tried first at the hop of the last link)."""
        s0, n, row0 = self._added, len(obs), self._pos
        for t, key in list(self._open.items()):
            guess = t + self._hop - s0
            if 0 <= guess < n and obs[guess].tobytes() == key:
                k = guess
            else:
                reach = obs[:max(0, min(n, t + self._reach - s0 + 1))]
                k = self._first_equal(reach, self._bytes_as_obs(key)) - 1  # -1: not found
            if k >= 0:
                hop = self._hop = s0 + k - t
                del self._open[t]
                self._flags_w[(row0 - (s0 - t)) % self._rows] |= hop << HOP_SHIFT

    def _settle_tails(self, obs: np.ndarray, next_obs: np.ndarray, flags: np.ndarray,
                      inside: int, unlinked: list, ends: np.ndarray) -> None:
        """Where the next_obs of each row that no row continues at the guessed hop waits. An
        episode end's goes to the side store. Another's is searched for at other hops when its
        guessed successor was in the batch; if not found, it waits among the open tails while a
        later add can still reach it, else it joins the side store too."""
        n, s0 = len(flags), self._added
        ended = ends.tolist()
        late = []  # rows not ended, whose next_obs no row of the batch holds
        if unlinked != ended[:len(unlinked)]:  # the common case: only episode ends unlinked
            ended_set, found = set(ended), []
            for k in unlinked:
                if k not in ended_set:
                    hop = self._first_equal(obs[k + 1:k + 1 + self._reach], next_obs[k])
                    if hop:  # an irregular hop
                        flags[k] = hop << HOP_SHIFT
                        found.append(hop)
                    else:
                        late.append(k)
            if len(found) > len(unlinked) // 2:  # the guess was wrong for most: guess better next
                self._hop = max(set(found), key=found.count)
        late += [k for k in range(inside, n) if k not in ended]
        finals = [k for k in late if k < n - self._reach]  # out of reach of later adds
        for k in late[len(finals):]:
            self._open[s0 + k] = next_obs[k].tobytes()
        self._sweep(s0 + n - 1)  # open tails of earlier adds now out of reach (sorted inserts)
        if finals:
            ends = np.union1d(ends, finals)
        if len(ends):
            seqs = np.arange(s0, s0 + n).take(ends)  # (take, not a ufunc: cheaper on few rows)
            self._finals.push_many(seqs, next_obs.take(ends, axis=0), s0 + n - self._capacity)

    def _differ(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row by row, nonzero where ``a`` and ``b`` (rows of observations; ``b`` may be one row,
        compared with every row of ``a``) hold different bytes, NaN payloads and -0.0 included:
        rows read as words of the widest int that divides them, compared in one operation."""
        n, k, size, word = len(a), self._words_per_row, self._row_size, self._word
        differ = None
        if a.ndim == 2 and b.ndim <= 2:  # rows already flat: viewed as they are
            try:
                differ = a.view(word) != b.view(word)
            except ValueError:  # a last axis with gaps cannot be read as wider words
                pass
        if differ is None:
            a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
            differ = a.reshape(n, size).view(word) != b.reshape(-1, size).view(word)
        if k in (1, 2, 4, 8):  # k bools side by side read as one k-byte int: nonzero if any
            return differ.view(self._any_word).reshape(n)
        return differ.any(axis=1)

    def _first_equal(self, rows: np.ndarray, target: np.ndarray) -> int:
        """1 + the index of the first of ``rows`` with the bytes of ``target``; 0 when none has."""
        if not len(rows):
            return 0
        differ = self._differ(rows, np.ascontiguousarray(target))
        k = int(differ.argmin())  # the first zero, if any
        return 0 if differ[k] else k + 1

    # ------------------------------------------------------------------ files
    def _saved_state(self):
        arrays = {"obs": self.obs, "action": self.action, "reward": self.reward, "flags": self.flags}
        state = {"share_next_obs": self.share_next_obs, "len": self._len, "start": self._start}
        if self.next_obs is not None:
            arrays["next_obs"] = self.next_obs
            return arrays, state
        self._forget_before(self._added - self._len)  # what single adds left for later
        arrays["final_obs"], arrays["final_seq"] = self._finals.live()
        seqs = sorted(self._open)
        arrays["open_seq"] = np.array(seqs, np.int64)
        arrays["open_obs"] = np.array([self._bytes_as_obs(self._open[t]) for t in seqs],
                                      self._obs_dtype).reshape(len(seqs), *self._obs_shape)
        state.update(added=self._added, layout=SHARED_LAYOUT)
        return arrays, state

    @classmethod
    def _from_saved(cls, saved: persist.Saved) -> "CircularPool":
        capacity = saved.int("capacity", 1, 2**40)
        shared = saved.flag("share_next_obs")
        spec = saved.require_spec()
        if shared and saved.meta.get("layout") != SHARED_LAYOUT:
            raise saved.error(f"this shared pool was saved in layout {saved.meta.get('layout', 1)}"
                              f"; this rlmemlib reads layout {SHARED_LAYOUT} (save it again with "
                              "the rlmemlib that wrote it, as an unshared pool)")
        length = saved.int("len", 0, capacity)
        start = saved.int("start", 0, capacity - 1)
        fields = {"obs": ((capacity, *spec.obs_shape), spec.obs_dtype),
                  "action": ((capacity, *spec.action_shape), spec.action_dtype),
                  "reward": ((capacity,), spec.reward_dtype), "flags": ((capacity,), np.uint8)}
        if not shared:
            fields["next_obs"] = fields["obs"]
        got = {name: saved.array(name, *layout) for name, layout in fields.items()}
        pool = cls(capacity, spec, share_next_obs=shared)
        if shared:
            pool._restore_shared(saved, got["flags"], start, length)
        elif np.any(got["flags"] & ~np.uint8(TERMINATED | TRUNCATED)):
            raise saved.error("flags hold bits that no unshared CircularPool writes")
        for name, arr in got.items():
            getattr(pool, name)[...] = arr
        pool._pos, pool._len = (start + length) % capacity, length
        return pool

    def _restore_shared(self, saved, flags, start, length) -> None:
        """The side store and open tails, checked against the hops in the flags."""
        added = saved.int("added", length, 2**62)
        hops = (flags[(start + np.arange(length)) % self._rows] >> HOP_SHIFT).astype(np.int64)
        if np.any(hops > np.arange(length)[::-1]):
            raise saved.error("a hop in flags points past the newest transition")
        seqs = {}
        for name in ("final", "open"):
            seq = saved.arrays.get(f"{name}_seq", np.zeros(0, np.int64))
            seqs[name] = saved.array(f"{name}_seq", seq.shape[:1], np.int64)
            saved.array(f"{name}_obs", (len(seq), *self.spec.obs_shape), self.spec.obs_dtype)
        owners = added - length + np.flatnonzero(hops == 0)
        both = np.concatenate([seqs["final"], seqs["open"]])
        if np.any(np.diff(seqs["final"]) <= 0) or not np.array_equal(np.sort(both), owners):
            raise saved.error("the side store and open tails do not match the flags")
        open_rows = (start + seqs["open"] - (added - length)) % self._rows
        if np.any(flags[open_rows]):  # an open tail is a transition that did not end an episode
            raise saved.error("an open tail's flags are set: the file does not hold what a pool writes")
        self._finals.push_many(seqs["final"], saved.arrays["final_obs"])
        for t, o in zip(seqs["open"].tolist(), saved.arrays["open_obs"]):
            self._open[t] = o.tobytes()
        self._added = added

    # ------------------------------------------------------------------ read
    def __getitem__(self, i) -> Transition:
        j = self._logical(i)
        row = self._row(j)
        flag = int(self.flags[row])
        return Transition(self.obs[row].copy(), _owned(self.action[row]), self.reward[row],
                          self._next_obs_of(j, row, flag).copy(),
                          bool(flag & TERMINATED), bool(flag & TRUNCATED))

    def _next_obs_of(self, j: int, row: int, flag: int) -> np.ndarray:
        if self._finals is None:
            return self.next_obs[row]
        hop = flag >> HOP_SHIFT
        if hop:
            return self.obs[(row + hop) % self._rows]
        seq = self._added - self._len + j
        if seq in self._open:
            return self._bytes_as_obs(self._open[seq])
        return self._finals.get(seq)

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
        self._lut_term.take(flags, out=out.terminated, mode="clip")  # flags < 256: no clipping
        self._lut_trunc.take(flags, out=out.truncated, mode="clip")
        if self._finals is None:
            self.next_obs.take(rows, axis=0, out=out.next_obs, mode="wrap")
            return out
        nxt = np.add(rows, flags >> HOP_SHIFT)  # the row holding next_obs, hop rows on...
        self.obs.take(nxt, axis=0, out=out.next_obs, mode="wrap")
        elsewhere = (flags < HOP_1).nonzero()[0]  # ...except where the hop is 0
        if len(elsewhere):
            seqs = idx.take(elsewhere)
            seqs += self._added - self._len
            out.next_obs[elsewhere] = self._elsewhere(seqs)
        return out

    def _elsewhere(self, seqs: np.ndarray) -> np.ndarray:
        """The next_obs of transitions whose hop is 0: in the side store, or still open."""
        if not self._open:
            return self._finals.get_many(seqs)
        oldest_open = min(self._open)
        got = np.empty((len(seqs), *self._obs_shape), self._obs_dtype)
        old = seqs < oldest_open  # below every open tail: surely in the side store
        got[old] = self._finals.get_many(seqs[old])
        for k in np.flatnonzero(~old).tolist():
            got[k] = self._next_obs_by_seq(int(seqs[k]))
        return got

    def _next_obs_by_seq(self, seq: int) -> np.ndarray:
        key = self._open.get(seq)
        return self._finals.get(seq) if key is None else self._bytes_as_obs(key)


def _mark_ends(rows: Batch, flags: np.ndarray) -> np.ndarray:
    """Write TERMINATED | TRUNCATED into ``flags`` for the rows that end an episode, over any
    hop written there (an episode end links nowhere); returns those rows, in order."""
    ends = rows.terminated.nonzero()[0]
    flags[ends] = TERMINATED
    trunc = rows.truncated
    if len(trunc) and trunc[trunc.argmax()]:  # a time limit is rare: one check for any
        cut = trunc.nonzero()[0]
        flags[cut] = flags[cut] & TERMINATED | TRUNCATED
        ends = np.union1d(ends, cut)
    return ends


def _flag_codes(rows: Batch) -> np.ndarray:
    """TERMINATED | TRUNCATED for each row, as uint8 (a time limit is rare: one check for it)."""
    codes = rows.terminated.astype(np.uint8)
    trunc = rows.truncated
    if len(trunc) and trunc[trunc.argmax()]:  # argmax: the first True, if any
        codes[trunc] |= TRUNCATED
    return codes


def _ring_spans(first: int, m: int, rows: int, src_start: int = 0):
    """``m`` consecutive ring rows from ``first``, as (ring slice, source slice) pairs: one,
    or two when they wrap past the end; the source rows start at ``src_start``."""
    head = min(m, rows - first)
    spans = [(slice(first, first + head), slice(src_start, src_start + head))]
    if head < m:
        spans.append((slice(0, m - head), slice(src_start + head, src_start + m)))
    return spans


class _FinalStore:
    """Final observations of a shared CircularPool's transitions, ordered by sequence number.

    Entries leave in the order of their transitions (the pool evicts its oldest transition
    first), so the live entries are one sorted run ``[head, head + count)`` and a lookup is a
    binary search. Entries mostly arrive in order too (``push``); an open tail that expires
    joins a little behind the newest (``insert``, which shifts the few entries after it). The
    arrays double when full and never shrink, so once the pool is full they stop growing
    unless the pool holds more final observations than it ever has.
    """

    obs: np.ndarray   # (size, *obs_shape): the final observations, live in [head, head + count)
    seq: np.ndarray   # (size,) int64: sequence number of the owning transition

    def __init__(self, spec: TransitionSpec, size: int, new_array: Callable):
        # The owning pool's allocator, held weakly: a strong bound method would make the pool
        # and its side store a reference cycle, freed only by the cyclic collector.
        self._allocator = weakref.WeakMethod(new_array)
        self.obs = new_array("final_obs", (size, *spec.obs_shape), spec.obs_dtype)
        self.seq = new_array("final_seq", (size,), np.int64)
        self.clear()

    def clear(self) -> None:
        self.head = 0
        self.count = 0

    @property
    def nbytes(self) -> int:
        return self.obs.nbytes + self.seq.nbytes

    def _room(self, k: int, oldest: int | None = None) -> int:
        """Room for ``k`` more entries after the live run; returns where the run ends. Entries
        of transitions older than ``oldest`` (evicted since) are dropped first when the arrays
        are full: until then they only wait at the head, where no lookup asks for them."""
        end = self.head + self.count
        if end + k > len(self.seq) and oldest is not None:
            self.drop_before(oldest)
            end = self.head + self.count
        if end + k > len(self.seq):
            if self.head and self.count + k <= len(self.seq):  # slide the live run to the front
                self.obs[:self.count] = self.obs[self.head:end]
                self.seq[:self.count] = self.seq[self.head:end]
            else:  # double until it fits
                size = len(self.seq)
                while size < self.count + k:
                    size *= 2
                self.obs = self._grown("final_obs", self.obs, size)
                self.seq = self._grown("final_seq", self.seq, size)
            self.head, end = 0, self.count
        return end

    def _grown(self, name: str, arr: np.ndarray, size: int) -> np.ndarray:
        bigger = self._allocator()(name, (size, *arr.shape[1:]), arr.dtype)
        bigger[:self.count] = arr[self.head:self.head + self.count]
        return bigger

    def push(self, seq: int, obs: np.ndarray, oldest: int) -> None:
        """Append a final observation newer than every entry; ``oldest`` is the oldest
        transition still held (see ``_room``)."""
        end = self.head + self.count
        if end >= len(self.seq):  # no room after the live run (the usual case has some)
            end = self._room(1, oldest)
        self.obs[end] = obs
        self.seq[end] = seq
        self.count += 1

    def push_many(self, seqs: np.ndarray, obs: np.ndarray, oldest: int | None = None) -> None:
        """Append final observations, in order, all newer than every entry; ``oldest`` as for
        ``push``."""
        k = len(seqs)
        end = self.head + self.count
        if end + k > len(self.seq):  # no room after the live run (the usual case has some)
            end = self._room(k, oldest)
        self.obs[end:end + k] = obs
        self.seq[end:end + k] = seqs
        self.count += k

    def insert(self, seq: int, obs: np.ndarray) -> None:
        """Add a final observation in its place by sequence number (behind a few newer ones)."""
        end = self._room(1)
        at = self.head + int(self.seq[self.head:end].searchsorted(seq))
        self.obs[at + 1:end + 1] = self.obs[at:end].copy()
        self.seq[at + 1:end + 1] = self.seq[at:end].copy()
        self.obs[at] = obs
        self.seq[at] = seq
        self.count += 1

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """The live final observations and their sequence numbers, oldest first (views)."""
        live = slice(self.head, self.head + self.count)
        return self.obs[live], self.seq[live]

    def pop_oldest(self) -> None:
        self.head += 1
        self.count -= 1

    def drop_before(self, seq: int) -> None:
        """Drop every entry older than ``seq``."""
        gone = int(self.seq[self.head:self.head + self.count].searchsorted(seq))
        self.head += gone
        self.count -= gone

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
