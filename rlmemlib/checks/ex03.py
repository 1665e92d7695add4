"""Checks for the exercises of lesson 03, the circular pool.

Each public function takes the learner's answer and checks it (see :mod:`rlmemlib.checks`);
``verify_*`` functions hold the invariants and raise :class:`CheckFailed` with a teaching
message, so the unit tests can feed them typical wrong answers. The checks run on real
CartPole-v1 transitions, made once on first use, and print nothing that varies.

* Exercise 1 (choosing dtypes): the six arrays of a CartPole ring, each in the narrowest dtype
  that holds its values exactly, 39 bytes per transition.
* Exercise 2 (a numpy ring): ``add`` writes at a row that wraps around; logical indices (0 the
  oldest held, -1 the newest) map to rows, full or not.
* Exercise 3 (next_obs at an episode end): a ring that stores each observation once keeps the
  final observation of each episode aside, and forgets it when its transition is overwritten.
  It is compared with :class:`~rlmemlib.ListMemory` on data with many episode ends (terminations
  and time-limit truncations), down to capacity 1.

Transitions are recognised by the bytes of their two observations, so a message can say which
step a ring returned ("memory[0] is step 3, the oldest held is step 2").
"""

from __future__ import annotations

import functools
import numbers

import numpy as np

from . import expect, is_unfinished, run_check, working
from ..memory import CircularPool, ListMemory
from ._shared import cartpole_data, cartpole_spec, step_of

FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")
PACKED_BYTES = 39  # the packed size of a CartPole transition (spec.nbytes): 2 x 4 float32, a 1-byte action, a float32, 2 flags


# ---------------------------------------------------------------- shared helpers
_spec = cartpole_spec


def _data() -> tuple:
    """200 CartPole transitions from the seeded random agent (the same in every run)."""
    return cartpole_data(200)


def _step_of(transition):
    """The step a stored transition came from, or None when it is not one of ``_data()``."""
    return step_of(transition, 200)


def _what(step) -> str:
    return "a row holding no transition added" if step is None else f"step {step}"


def _span(steps) -> str:
    steps = list(steps)
    if len(steps) > 2 and steps == list(range(steps[0], steps[0] + len(steps))):
        return f"steps {steps[0]} to {steps[-1]}"
    return "steps " + ", ".join("?" if s is None else str(s) for s in steps)


# ---------------------------------------------------------------- exercise 1: choosing dtypes
def _shape(name: str, capacity: int) -> tuple:
    return (capacity, 4) if name in ("obs", "next_obs") else (capacity,)


def _made(ring_arrays, capacity: int) -> dict:
    arrays = ring_arrays(capacity)
    expect(isinstance(arrays, dict) and set(arrays) == set(FIELDS),
           f"a dict with the six fields {FIELDS}", f"{type(arrays).__name__}"
           + (f" with keys {sorted(arrays)}" if isinstance(arrays, dict) else ""),
           "return the dict the starter builds, one array per field")
    for name in FIELDS:
        a = arrays[name]
        expect(isinstance(a, np.ndarray), f"arrays[{name!r}] to be a numpy array",
               type(a).__name__, "make each one with np.zeros(shape, dtype)")
        want = _shape(name, capacity)
        expect(a.shape == want, f"arrays[{name!r}].shape == {want} for capacity {capacity}",
               f"{a.shape}", "one row per transition: np.zeros((capacity, 4), dtype) for "
               "observations (CartPole's 4 numbers), np.zeros(capacity, dtype) for the others")
    return arrays


def _obs_dtype(name: str, dtype: np.dtype) -> None:
    if dtype == np.float32:
        return
    if dtype.kind == "f" and dtype.itemsize > 4:
        hint = (f"CartPole produces float32 observations (transitions[0][0].dtype): {dtype} "
                f"spends {dtype.itemsize} bytes on each number and adds no information")
    elif dtype.kind == "f":
        hint = (f"{dtype} keeps about 3 significant digits, so CartPole's float32 observations "
                "would come back rounded: store them as the environment produces them, float32")
    else:
        hint = ("an observation is 4 real numbers; an integer dtype cuts off their fractions: "
                "store them as the environment produces them, float32")
    expect(False, f"arrays[{name!r}] of dtype float32, the dtype CartPole's observations come in",
           f"{dtype}", hint)


def _action_dtype(dtype: np.dtype) -> None:
    if dtype.kind in "iu" and dtype.itemsize == 1:
        return
    if dtype.kind in "iu":
        hint = (f"CartPole's two actions, 0 and 1, fit in one byte: np.uint8 holds 0 to 255, "
                f"{dtype} spends {dtype.itemsize} bytes on each")
    elif dtype.kind == "b":
        hint = "an action is an index, not a yes or no: store it as a one-byte integer, np.uint8"
    else:
        hint = "an action is an index (0 or 1): store it as an integer, np.uint8 (one byte)"
    expect(False, "arrays['action'] of a one-byte integer dtype (np.uint8)", f"{dtype}", hint)


def _reward_dtype(dtype: np.dtype) -> None:
    if dtype == np.float32:
        return
    if dtype.kind == "f" and dtype.itemsize > 4:
        hint = (f"{dtype} doubles the bytes of every reward; float32 holds CartPole's 1.0 "
                "exactly and any reward to about 7 significant digits")
    elif dtype.kind == "f":
        hint = (f"{dtype} rounds rewards to about 3 significant digits (0.1 comes back as "
                f"{float(np.float16(0.1))!r}): store rewards as float32")
    else:
        hint = "a reward is a real number in general (0.5, -0.01): store it as float32"
    expect(False, "arrays['reward'] of dtype float32", f"{dtype}", hint)


def _flag_dtype(name: str, dtype: np.dtype) -> None:
    if dtype.kind == "b" or (dtype.kind in "iu" and dtype.itemsize == 1):
        return
    expect(False, f"arrays[{name!r}] of dtype bool (one byte per flag)", f"{dtype}",
           f"a flag is True or False: np.bool_ stores it in one byte, {dtype} spends "
           f"{dtype.itemsize}")


def verify_ring_arrays(ring_arrays) -> None:
    for capacity in (3, 200):
        arrays = _made(ring_arrays, capacity)
        _obs_dtype("obs", arrays["obs"].dtype)
        _obs_dtype("next_obs", arrays["next_obs"].dtype)
        _action_dtype(arrays["action"].dtype)
        _reward_dtype(arrays["reward"].dtype)
        _flag_dtype("terminated", arrays["terminated"].dtype)
        _flag_dtype("truncated", arrays["truncated"].dtype)
        expect(not np.shares_memory(arrays["obs"], arrays["next_obs"]),
               "obs and next_obs in two arrays of their own", "two names for one array",
               "writing a row's next_obs would overwrite its obs: make each with its own np.zeros")
    data = _data()
    for f, name in enumerate(FIELDS):
        column = arrays[name]
        for k, t in enumerate(data):
            column[k] = t[f]
        expect(np.array_equal(column, np.array([t[f] for t in data])),
               f"200 real transitions to come back from arrays[{name!r}] exactly",
               "other values", "choose a dtype that holds every value of the field exactly")
    per = sum(a.nbytes for a in arrays.values()) / len(data)
    expect(per == PACKED_BYTES, f"{PACKED_BYTES} bytes per transition", f"{per:g}",
           "the narrowest exact dtype for every field")


def ring_arrays(answer) -> None:
    run_check("Exercise 1 (choosing dtypes)", answer, verify_ring_arrays)


def reference_ring_arrays(capacity):
    """rlmemlib's answer to exercise 1: the six arrays in the CartPole spec's dtypes."""
    spec = _spec()
    arrays = {name: np.zeros((capacity, *spec.obs_shape), spec.obs_dtype)
              for name in ("obs", "next_obs")}
    arrays["action"] = np.zeros((capacity, *spec.action_shape), spec.action_dtype)
    arrays["reward"] = np.zeros(capacity, spec.reward_dtype)
    arrays["terminated"] = np.zeros(capacity, np.bool_)
    arrays["truncated"] = np.zeros(capacity, np.bool_)
    return {name: arrays[name] for name in FIELDS}


def working_ring_arrays(answer):
    """The learner's ``ring_arrays`` if it passes, else rlmemlib's."""
    return working(answer, reference_ring_arrays, verify_ring_arrays, "ring_arrays")


# ---------------------------------------------------------------- exercise 2: a numpy ring
class CartPolePool(CircularPool):
    """rlmemlib's CircularPool for CartPole transitions, made as ``CartPolePool(capacity)``."""

    def __init__(self, capacity):
        super().__init__(capacity, _spec())


def _ring_add(mem, t, k: int, capacity: int) -> None:
    try:
        mem.add(*t)
    except IndexError as exc:
        expect(False, f"add #{k} into a ring of {capacity} to work", f"IndexError ({exc})",
               "the row after the last one is row 0 again: wrap the row around, "
               "(self.start + self.len) % self.capacity")


def _ring_get(mem, i: int):
    try:
        return mem[i]
    except IndexError as exc:
        expect(False, f"memory[{i}] to work while the ring holds {len(mem)} transitions",
               f"IndexError ({exc})",
               "the row of a logical index wraps around: (self.start + i % self.len) % self.capacity")


def _rows_held(mem, capacity: int):
    """The step held in each row of the learner's arrays, or None when they cannot be read."""
    arrays = getattr(mem, "arrays", None)
    if not isinstance(arrays, dict) or "obs" not in arrays or "next_obs" not in arrays:
        return None
    obs, next_obs = arrays["obs"], arrays["next_obs"]
    if not isinstance(obs, np.ndarray) or len(obs) != capacity or len(next_obs) != capacity:
        return None
    return [_step_of((obs[r], None, None, next_obs[r])) for r in range(capacity)]


def _check_ring_state(mem, k: int, capacity: int) -> None:
    """After ``k`` adds, ``mem`` holds steps ``k - len .. k - 1``, oldest first."""
    n = len(mem)
    expect(n <= capacity, f"len(memory) <= {capacity}, the capacity", f"len(memory) == {n} "
           f"after {k} adds", "did add() overwrite the oldest row once the ring was full? Then "
           "self.len stays at the capacity and self.start moves on")
    want_n = min(k, capacity)
    expect(n == want_n, f"len(memory) == {want_n} after {k} adds", f"{n}",
           "add 1 to self.len at each add until the ring is full")
    want = list(range(k - n, k))
    got = [_step_of(_ring_get(mem, i)) for i in range(n)]
    if got == want:
        hint = ("a negative index counts back from the newest. (self.start + i) % self.capacity "
                "gets it right only once the ring is full: turn i into 0..len-1 first, "
                "(self.start + i % self.len) % self.capacity")
        for i, want_step in ((-1, k - 1), (-n, k - n)):
            step = _step_of(_ring_get(mem, i))
            expect(step == want_step, f"memory[{i}] to be step {want_step}, the "
                   f"{'newest' if i == -1 else 'oldest'}, with {n} held in a ring of {capacity}",
                   _what(step), hint)
        return
    rows = _rows_held(mem, capacity)
    if rows is not None:
        held = sorted(s for s in rows if s is not None)
        if held != want:
            if k > capacity and held == list(range(capacity - 1)) + [k - 1]:
                hint = ("add() kept writing into the last row once the ring was full, so the "
                        "first transitions stay forever: the row after the last is row 0, "
                        "(self.start + self.len) % self.capacity")
            else:
                hint = ("once the ring is full, the row after the newest is the oldest's row, "
                        "self.start: write there, then move self.start on by one row, back to "
                        "0 after the last")
            expect(False, f"the arrays to hold the newest {n} transitions ({_span(want)}) after "
                   f"{k} adds into a ring of {capacity}", _span(held), hint)
        start = getattr(mem, "start", None)
        if isinstance(start, numbers.Integral) and k > capacity:
            want_start = k % capacity
            expect(start == want_start, f"self.start == {want_start} after {k} adds (the row of "
                   f"the oldest, step {k - n})", f"self.start == {start}",
                   "each overwrite makes the next row the oldest: move self.start on by one "
                   "row, back to 0 after the last")
        if got == rows[:n]:
            expect(False, f"memory[0] to be step {want[0]}, the oldest held", f"step {got[0]}",
                   "memory[i] returned row i, but once the ring wraps the oldest sits at row "
                   "self.start: logical index i is at row (self.start + i % self.len) % "
                   "self.capacity")
    if n > 1 and got in (want[1:] + want[:1], want[-1:] + want[:-1]):
        expect(False, f"memory[0] to be step {want[0]}, the oldest held",
               f"step {got[0]}, one row off",
               "off by one: the oldest sits at row self.start itself, so logical index i is at "
               "row (self.start + i % self.len) % self.capacity")
    if None in got:
        j = got.index(None)
        expect(False, f"memory[{j}] to be step {want[j]}, with {n} held in a ring of {capacity}",
               "a row holding no transition added",
               "is the row off by one? The oldest sits at row self.start itself, so logical "
               "index i is at row (self.start + i % self.len) % self.capacity")
    expect(False, f"memory[0..{n - 1}] to be {_span(want)}, oldest first", _span(got),
           "logical index i is at row (self.start + i % self.len) % self.capacity")


def verify_numpy_ring(cls) -> None:
    data = _data()
    for capacity, adds in ((10, 25), (4, 4), (1, 3)):
        mem = cls(capacity)
        for k, t in enumerate(data[:adds], start=1):
            _ring_add(mem, t, k, capacity)
            _check_ring_state(mem, k, capacity)


def numpy_ring(answer) -> None:
    run_check("Exercise 2 (a numpy ring)", answer, verify_numpy_ring)


def working_numpy_ring(answer):
    """The learner's ring class if it passes, else rlmemlib's pool (``CartPolePool(capacity)``)."""
    return working(answer, CartPolePool, verify_numpy_ring, "NumpyRing")


# ---------------------------------------------------------------- exercise 3: next_obs at an end
class SharedCartPolePool(CircularPool):
    """rlmemlib's CircularPool with ``share_next_obs=True`` for CartPole, ``(capacity)``."""

    def __init__(self, capacity):
        super().__init__(capacity, _spec(), share_next_obs=True)


def _balance(obs) -> int:
    return int(obs[2] + 0.5 * obs[3] > 0)


@functools.lru_cache(maxsize=1)
def _episodes() -> tuple:
    """About 560 CartPole transitions in order, with many episode ends of both kinds.

    Random steps (episodes end by falling: terminated), then a balancing policy under a time
    limit of 20 steps (episodes end by truncation), then random steps again. Each piece stops
    at an episode end, so every ``obs`` is the previous ``next_obs`` unless an episode ended.
    """
    import gymnasium as gym

    from ..rollout import rollout

    pieces = []
    for steps, seed, limit, policy in ((300, 0, 500, None), (100, 1, 20, _balance),
                                       (200, 2, 500, None)):
        env = gym.make("CartPole-v1", max_episode_steps=limit)
        mem = ListMemory()
        rollout(env, mem, steps, seed=seed, policy=policy, progress_bar=False)
        env.close()
        items = [tuple(t) for t in mem]
        last_end = max(k for k, t in enumerate(items) if t[4] or t[5])
        pieces += items[:last_end + 1]
    return tuple(pieces)


@functools.lru_cache(maxsize=1)
def _finals() -> frozenset:
    """The final observations of the episodes in ``_episodes()``, as bytes."""
    return frozenset(np.asarray(t[3], np.float32).tobytes() for t in _episodes() if t[4] or t[5])


def _explain_next_obs(got, data, s: int, where: str, reused: bool) -> None:
    t = data[s]
    ended = bool(t[4] or t[5])
    got = np.asarray(got)
    if reused and got.shape == (4,) and np.all(got == 99):
        expect(False, f"{where}: next_obs to stay what add() was given",
               "the values the caller wrote into its array after add() returned",
               "self.finals[row] = next_obs keeps the caller's array, not its values, and the "
               "caller may reuse that array: keep a copy, next_obs.copy()")
    if ended and s + 1 < len(data) and np.array_equal(got, data[s + 1][0]):
        how = "was cut by the time limit (truncated)" if t[5] and not t[4] else \
            "ended its episode (terminated)"
        hint = ("the row after it holds the first observation of the next episode, written by "
                "the next add: when a transition ends its episode, keep a copy of next_obs in "
                "self.finals[row], and read it back in next_obs_of")
        if t[5] and not t[4]:
            hint += ("; a time limit ends an episode too (terminated or truncated), and a "
                     "truncated transition is the one whose target bootstraps from next_obs")
        expect(False, f"{where}, which {how}, to have its final observation as next_obs",
               "the first observation of the next episode (the bootstrapping trap)", hint)
    if not ended and got.shape == (4,) and np.asarray(got, np.float32).tobytes() in _finals():
        expect(False, f"{where}, which did not end an episode, to have the next row's obs as "
               "next_obs", "the final observation of an older episode",
               "that final was kept for a transition this row held before it was overwritten: "
               "when add() writes a new transition into a row, forget the row's old final, "
               "self.finals.pop(row, None)")
    expect(False, f"{where} to have step {s}'s next_obs", "other values",
           "next_obs_of(row) returns self.finals[row] when the transition in that row ended "
           "its episode, else the obs of the next row, self.obs[(row + 1) % self.rows]")


def _compare_shared(mem, ref, data, k: int, capacity: int, reused: bool = False) -> None:
    """``mem`` holds what the reference list memory holds, field by field."""
    n = len(ref)
    expect(len(mem) == n, f"len(memory) == {n} after {k} adds into a ring of {capacity}",
           f"{len(mem)}", "the given SharedRows keeps start and len: run its cell again if you "
           "changed it")
    for i in range(n):
        want, got = ref[i], mem[i]
        s = k - n + i
        where = f"memory[{i}] (step {s}, {k} added to a ring of {capacity})"
        for f in (0, 1, 2, 4, 5):
            expect(np.array_equal(got[f], want[f]), f"{where}.{FIELDS[f]} to be what was added",
                   "other values", "the given SharedRows stores and reads this field: run its "
                   "cell again if you changed it")
        if not np.array_equal(got[3], want[3]):
            _explain_next_obs(got[3], data, s, where, reused)


def _check_side_store(mem, ref, k: int, capacity: int) -> None:
    finals = getattr(mem, "finals", None)
    if not hasattr(finals, "__len__"):
        return  # rlmemlib's pool keeps its side store elsewhere
    ends = sum(bool(t.terminated or t.truncated) for t in ref)
    expect(len(finals) <= ends + 1,
           f"at most {ends + 1} final observation{'s' if ends else ''} in self.finals after {k} adds into a ring of "
           f"{capacity} (one per transition held that ended its episode, {ends}, and at most one "
           "left by the transition just overwritten)", f"{len(finals)}",
           "when add() writes a new transition into a row, forget the final kept for the row's "
           "overwritten transition (self.finals.pop(row, None)), or the side store keeps the "
           "observations of transitions long gone")


def _run_shared(cls, data, capacity: int) -> None:
    mem, ref = cls(capacity), ListMemory(capacity)
    given = []
    for k, t in enumerate(data, start=1):
        passed = (t[0].copy(), t[1], t[2], t[3].copy(), t[4], t[5])  # arrays of the caller's own
        given.append(passed)
        mem.add(*passed)
        ref.add(*t)
        if capacity <= 7 or k % 10 == 0 or k == len(data):
            _compare_shared(mem, ref, data, k, capacity)
            _check_side_store(mem, ref, k, capacity)
    for passed in given:  # the caller reuses its arrays: the ring must have kept the values
        passed[0][:] = 99
        passed[3][:] = 99
    _compare_shared(mem, ref, data, len(data), capacity, reused=True)


def verify_shared_ring(cls) -> None:
    data = _episodes()
    for capacity in (1, 2, 7, 50):
        _run_shared(cls, data, capacity)


def shared_ring(answer) -> None:
    run_check("Exercise 3 (next_obs at an episode end)", answer, verify_shared_ring)


def working_shared_ring(answer):
    """The learner's shared ring if it passes, else rlmemlib's pool with ``share_next_obs=True``."""
    return working(answer, SharedCartPolePool, verify_shared_ring, "SharedRing")


__all__ = ["is_unfinished", "ring_arrays", "numpy_ring", "shared_ring", "working_ring_arrays",
           "working_numpy_ring", "working_shared_ring", "reference_ring_arrays", "CartPolePool",
           "SharedCartPolePool", "verify_ring_arrays", "verify_numpy_ring", "verify_shared_ring",
           "FIELDS", "PACKED_BYTES"]
