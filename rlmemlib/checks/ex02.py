"""Checks for the exercises of lesson 02, the list memory.

Each public function takes the learner's answer and checks it (see :mod:`rlmemlib.checks`);
``verify_*`` functions hold the invariants and raise :class:`CheckFailed` with a teaching
message, so the unit tests can feed them typical wrong answers. The checks run on real
CartPole transitions and print nothing that varies.

Transitions are recognised by the bytes of their two observations, so a check can say which
step of the rollout a memory returned ("mem[0] is step 3, the oldest held is step 2").
"""

from __future__ import annotations

import gc
import numbers

import numpy as np

from . import expect, is_unfinished, run_check, working
from ..measure import footprint
from ..memory import ListMemory
from ._shared import cartpole_data, step_of

FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")


# ---------------------------------------------------------------- shared helpers
def _data() -> tuple:
    """200 CartPole transitions from the seeded random agent (the same in every run)."""
    return cartpole_data(200)


def _step_of(transition):
    """The step a stored transition came from, or None when it is not one of ``_data()``."""
    if not isinstance(transition, tuple) or len(transition) != 6:
        return None
    return step_of(transition, 200)


def _same(a, b) -> bool:
    try:
        return bool(np.array_equal(a, b))
    except (TypeError, ValueError):
        return False


def _span(steps) -> str:
    steps = list(steps)
    if len(steps) > 2 and steps == list(range(steps[0], steps[0] + len(steps))):
        return f"steps {steps[0]} to {steps[-1]}"
    return "steps " + ", ".join("?" if s is None else str(s) for s in steps)


# ---------------------------------------------------------------- exercise 1: add and sample
def _check_added(mem, data) -> None:
    """``mem`` holds ``data`` in order, each transition a tuple of the objects given to add()."""
    n = len(data)
    expect(len(mem) == n, f"len(memory) == {n} after {n} adds", f"{len(mem)}",
           "add() should append one transition per call to self.items")
    for k in (0, 1, n // 2, n - 1):
        got = mem[k]
        expect(isinstance(got, tuple) and len(got) == 6,
               f"memory[{k}] to be a tuple of six values", f"{type(got).__name__}"
               + (f" of length {len(got)}" if hasattr(got, "__len__") else ""),
               "add() should store one tuple (obs, action, reward, next_obs, terminated, truncated)")
        step = _step_of(got)
        expect(step is None or step == k, f"memory[{k}] to be step {k}",
               f"step {step}",
               "add() should append at the end of the list, so memory[0] is the oldest")
        for f, name in enumerate(FIELDS):
            if got[f] is data[k][f]:
                continue
            copy = type(got[f]) is type(data[k][f]) and _same(got[f], data[k][f])
            expect(not copy, f"memory[{k}].{name} to be the very object given "
                   "to add()", "an equal copy",
                   "a list memory stores the objects as they come, no copies: that is how one "
                   "step's next_obs and the next step's obs stay one array")
            expect(False, f"memory[{k}][{f}] to be the {name} given to add()", f"{got[f]!r:.60}",
                   "keep the order of the arguments: (obs, action, reward, next_obs, terminated, "
                   "truncated)")


def _batch_steps(mem, batch_size: int, seed: int) -> list:
    """The steps of the rows ``mem.sample(batch_size, default_rng(seed))`` returned."""
    batch = mem.sample(batch_size, np.random.default_rng(seed))
    columns = list(batch) if hasattr(batch, "__iter__") else None
    expect(columns is not None and len(columns) == 6,
           "six arrays (obs, action, reward, next_obs, terminated, truncated)",
           f"{type(batch).__name__}" + (f" of length {len(columns)}" if columns is not None else ""),
           "zip(*picked) turns the picked transitions into six columns; stack each with np.array")
    for name, col in zip(FIELDS, columns):
        expect(isinstance(col, np.ndarray), f"batch {name} to be one numpy array",
               f"{type(col).__name__}", "stack each column into one array: np.array(column)")
        expect(len(col) == batch_size, f"{batch_size} rows of {name} for batch_size={batch_size}",
               f"{len(col)}", "draw batch_size indices: rng.integers(0, len(self), size=batch_size)")
    obs, action, reward, next_obs, terminated, truncated = columns
    expect(obs.shape == (batch_size, 4), f"batch obs of shape ({batch_size}, 4)", f"{obs.shape}",
           "the batch goes along axis 0: stack the picked observations with np.array(column)")
    data, steps = _data(), []
    for r in range(batch_size):
        step = _step_of((obs[r], action[r], reward[r], next_obs[r], terminated[r], truncated[r]))
        expect(step is not None, f"row {r} of the batch to be a transition the memory holds",
               "a row that is none of them",
               "return the columns in the order (obs, action, reward, next_obs, terminated, "
               "truncated), row r of each from the same transition")
        t = data[step]
        expect(_same(action[r], t[1]) and _same(reward[r], t[2]) and _same(terminated[r], t[4])
               and _same(truncated[r], t[5]), f"row {r} of every column from one transition",
               "a row whose action, reward or flags belong to another",
               "stack every column from the same picked transitions, in the order of the fields")
        steps.append(step)
    return steps


def verify_list_memory(cls) -> None:
    data = _data()
    mem = cls()
    for t in data:
        mem.add(*t)
    _check_added(mem, data)
    n = len(data)
    rule = np.random.default_rng(7).integers(0, n, size=32).tolist()
    drawn = _batch_steps(mem, 32, seed=7)
    if drawn != rule:
        again = _batch_steps(mem, 32, seed=7)
        expect(again == drawn, "the same batch from two generators seeded alike",
               "two different batches",
               "draw the indices from the rng that sample() is given (rng.integers), not from "
               "Python's random module or np.random's global state")
        other = _batch_steps(mem, 32, seed=8)
        expect(other != drawn, "different batches from generators seeded 7 and 8", "the same batch",
               "sample() ignores its rng argument: draw from the rng it is given, not from a "
               "generator of your own")
        expect(False, f"the rows idx = rng.integers(0, len(self), size=batch_size) draws, "
               f"starting with {rule[:4]}", f"rows starting with {drawn[:4]}",
               "draw with exactly that call, once per sample, so every memory returns the same "
               "batch for the same generator state")
    small = _batch_steps(mem, 5, seed=3)
    expect(small == np.random.default_rng(3).integers(0, n, size=5).tolist(),
           "the rule's 5 rows for batch_size=5", f"rows {small}",
           "use batch_size, not a fixed number, as the size of the draw")


def list_memory(answer) -> None:
    run_check("Exercise 1 (add and sample)", answer, verify_list_memory)


def working_list_memory(answer):
    """The learner's list memory class if it passes, else rlmemlib's ``ListMemory``."""
    return working(answer, ListMemory, verify_list_memory, "ListMemory")


# ---------------------------------------------------------------- exercise 2: forget the oldest
def _ring_add(mem, t, k: int, capacity: int) -> None:
    try:
        mem.add(*t)
    except IndexError as exc:
        expect(False, f"add #{k} to work with capacity {capacity}", f"IndexError ({exc})",
               "did self.start go back to 0 after the last slot? (self.start + 1) % self.capacity")


def _ring_get(mem, i: int):
    try:
        return mem[i]
    except IndexError as exc:
        expect(False, f"memory[{i}] to work while the memory holds {len(mem)} transitions",
               f"IndexError ({exc})",
               "the list position wraps around: (self.start + i) % len(self.items)")


def _check_ring_state(mem, k: int, capacity: int) -> None:
    """After ``k`` adds, ``mem`` holds steps ``k - len .. k - 1``, oldest first."""
    n = len(mem)
    want_n = min(k, capacity)
    expect(n <= capacity, f"len(memory) <= {capacity}, the capacity", f"len(memory) == {n} "
           f"after {k} adds", "did add() overwrite the oldest slot once the memory was full?")
    expect(n == want_n, f"len(memory) == {want_n} after {k} adds", f"{n}",
           "add() should append until the memory holds capacity transitions")
    want = list(range(k - n, k))
    got = [_step_of(_ring_get(mem, i)) for i in range(n)]
    if got == want:
        newest, oldest = _step_of(_ring_get(mem, -1)), _step_of(_ring_get(mem, -n))
        expect(newest == k - 1 and oldest == k - n,
               f"memory[-1] to be the newest (step {k - 1}) and memory[-{n}] the oldest "
               f"(step {k - n})", f"steps {newest} and {oldest}",
               "a negative index counts back from the newest; (self.start + i) % len(self.items) "
               "handles both signs")
        return
    items = getattr(mem, "items", None)
    held = sorted((s for s in map(_step_of, items) if s is not None), key=int) \
        if isinstance(items, list) else None
    if held is not None and held != want:
        expect(not (held == list(range(n - 1)) + [k - 1]), f"the newest {n} transitions "
               f"({_span(want)})", f"{_span(held)}",
               "add() overwrote the newest slot, so the first transitions stay forever: "
               "overwrite the oldest one, at list position self.start")
        expect(False, f"the newest {n} transitions ({_span(want)}) after {k} adds",
               f"{_span(held)}", "did add() overwrite the slot at self.start (the oldest), then "
               "move self.start on by one, back to 0 after the last slot?")
    start = getattr(mem, "start", None)
    if held is not None and isinstance(start, numbers.Integral) and k > capacity:
        want_start = (k - capacity) % capacity
        expect(start == want_start, f"self.start == {want_start} after {k} adds "
               f"(the list position of the oldest, step {k - n})", f"self.start == {start}",
               "after each overwrite the oldest is the next slot: move self.start on by one, "
               "back to 0 after the last slot")
    if held is not None and got == [_step_of(t) for t in items]:
        expect(False, f"memory[0] to be step {want[0]}, the oldest held", f"step {got[0]}",
               "memory[i] returned list position i, but once the list wraps the oldest sits at "
               "self.start: logical index i is at (self.start + i) % len(self.items)")
    if got in (want[1:] + want[:1], want[-1:] + want[:-1]):
        expect(False, f"memory[0] to be step {want[0]}, the oldest held",
               f"step {got[0]}, one slot off",
               "off by one: the oldest sits at list position self.start itself, so logical index "
               "i is at (self.start + i) % len(self.items)")
    expect(False, f"memory[0..{n - 1}] to be {_span(want)}, oldest first", f"{_span(got)}",
           "logical index i is at list position (self.start + i) % len(self.items)")


def verify_ring_memory(cls) -> None:
    data = _data()
    for capacity, adds in ((10, 25), (1, 3)):
        mem = cls(capacity=capacity)
        for k, t in enumerate(data[:adds], start=1):
            _ring_add(mem, t, k, capacity)
            _check_ring_state(mem, k, capacity)


def ring_memory(answer) -> None:
    run_check("Exercise 2 (forget the oldest)", answer, verify_ring_memory)


def working_ring_memory(answer):
    """The learner's ring class if it passes, else rlmemlib's ``ListMemory`` (same constructor)."""
    return working(answer, ListMemory, verify_ring_memory, "RingListMemory")


# ---------------------------------------------------------------- exercise 3: bytes per transition
def _small_arrays(n: int = 2_000) -> list:
    return [np.zeros(4, np.float32) for _ in range(n)]


def _with_a_temporary() -> list:
    scratch = np.ones(4_000_000, np.uint8)   # 4 MB that fill() frees before it returns
    del scratch
    return _small_arrays()


def verify_bytes_per_transition(bytes_per_transition) -> None:
    gc.collect()
    per = bytes_per_transition(_small_arrays)
    expect(isinstance(per, numbers.Real) and not isinstance(per, bool), "a number",
           type(per).__name__, "return the traced bytes divided by len(memory)")
    expect(per > 1, "about 136 bytes per item for a list of 2,000 small arrays", f"{per:.1f}",
           "fill() must run while tracemalloc traces: call it inside rm.measure.footprint (or "
           "between tracemalloc.start() and the reading), and keep what it returns alive")
    expect(per > 50, "about 136 bytes per item for a list of 2,000 small arrays", f"{per:.1f}",
           "sys.getsizeof prices the list alone, 8 bytes per slot; tracemalloc sees the arrays "
           "it holds too" if per < 20 else
           "measure everything fill() allocates and still holds, arrays included")
    expect(per < 200, "about 136 bytes per item for a list of 2,000 small arrays", f"{per:.1f}",
           "divide by len(memory), the number of transitions held")
    gc.collect()
    per_temp = bytes_per_transition(_with_a_temporary)
    expect(per_temp < 200, "about 136 bytes per item when fill() also made and freed a 4 MB "
           "temporary", f"{per_temp:.0f}",
           "the peak counts what fill() freed before it returned; the memory holds .current")

    import gymnasium as gym

    from ..rollout import rollout

    env = gym.make("CartPole-v1")
    env.reset(seed=0)

    def fill():
        memory = ListMemory()
        rollout(env, memory, 2_000, seed=0, progress_bar=False)
        return memory

    gc.collect()
    per_list = bytes_per_transition(fill)
    expect(per_list > 150, "over 150 bytes per transition for rm.ListMemory filled by a rollout "
           "(about 240)", f"{per_list:.0f}",
           "count every object the memory keeps: tuples and arrays, not only its list")
    env.close()


def bytes_per_transition(answer) -> None:
    run_check("Exercise 3 (bytes per transition)", answer, verify_bytes_per_transition)


def reference_bytes_per_transition(fill):
    """rlmemlib's answer to exercise 3: traced bytes held by the memory ``fill()`` returns, per
    transition."""
    memory, traced = footprint(fill)
    return traced.current / len(memory)


def working_bytes_per_transition(answer):
    """The learner's ``bytes_per_transition`` if it passes, else rlmemlib's."""
    return working(answer, reference_bytes_per_transition, verify_bytes_per_transition,
                   "bytes_per_transition")


__all__ = ["is_unfinished", "list_memory", "ring_memory", "bytes_per_transition",
           "working_list_memory", "working_ring_memory", "working_bytes_per_transition",
           "reference_bytes_per_transition", "verify_list_memory",
           "verify_ring_memory", "verify_bytes_per_transition", "FIELDS"]
