"""Checks for the exercises of lesson 05, explicit deletion.

Each public function takes the learner's answer and checks it (see :mod:`rlmemlib.checks`);
``verify_*`` functions hold the invariants and raise :class:`CheckFailed` with a teaching
message, so the unit tests can feed them typical wrong answers. The data are real CartPole-v1
transitions from a seeded random policy, made once on first use.

* Exercise 1 (where the bytes grew) runs the learner's function while tracemalloc traces, and
  leaves tracemalloc as it found it.
* Exercise 2 (a byte budget) measures a budgeted memory with tracemalloc, with a margin for the
  few KiB that a notebook kernel's own threads allocate now and then.
* Exercise 3 (release at the end of training) checks with weak references that the memory's
  arrays die when ``release`` returns. It switches the cyclic garbage collector off while it
  runs, so that a collection at a random moment cannot hide a cycle, and restores the
  collector's previous state afterwards.
"""

from __future__ import annotations

import gc
import inspect
import tracemalloc
import weakref
from collections import deque

import numpy as np

from . import CheckFailed, expect, is_unfinished, run_check, working
from ..measure import fmt_bytes, traced_now
from ..memory import CircularPool
from ._shared import cartpole_data, cartpole_spec, same_transition
from ..spec import Transition

KiB, MiB = 2**10, 2**20


_spec, _same = cartpole_spec, same_transition


def _data() -> tuple:
    """5,000 CartPole transitions from the seeded random agent (the same in every run)."""
    return cartpole_data(5_000)


class _Tracing:
    """tracemalloc on inside the block; off again afterwards if it was off before."""

    def __enter__(self):
        self.started = not tracemalloc.is_tracing()
        if self.started:
            tracemalloc.start()
        return self

    def __exit__(self, *exc):
        if self.started and tracemalloc.is_tracing():
            tracemalloc.stop()


def _line_of(func, marker: str) -> int:
    """The line number, in this file, of the line of ``func`` that carries ``marker``."""
    lines, first = inspect.getsourcelines(func)
    return first + next(k for k, line in enumerate(lines) if marker in line)


# ---------------------------------------------------------------- exercise 1: where the bytes grew
_SEEN: list = []  # what the forgotten debugging line of _scale keeps


def _scale(frame):
    """Scale a frame of bytes to floats in [0, 1]; a debugging line keeps every result."""
    scaled = frame.astype(np.float64) / 255  # [growth] 256 KiB per frame
    _SEEN.append(scaled)
    return scaled


def _scale_eight():
    """Eight frames through _scale; returns the last result only."""
    for k in range(8):
        out = _scale(np.zeros((256, 128), np.uint8) + k)
    return out


def _frames():
    """A new 2 MiB array that nothing but the caller will hold."""
    return np.zeros((512, 512)) + 1.0  # [result] 2 MiB


def _growth_of(biggest_growth, run):
    """Call the learner's function; check the shape of what comes back."""
    got = biggest_growth(run)
    expect(isinstance(got, tuple) and len(got) == 2, "a pair (size_diff, lineno)",
           type(got).__name__, "return two numbers: top.size_diff, top.traceback[0].lineno")
    size, line = got
    expect(all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in got),
           "two ints", f"({type(size).__name__}, {type(line).__name__})",
           "return top.size_diff (bytes) and top.traceback[0].lineno (a line number)")
    return int(size), int(line)


def verify_biggest_growth(biggest_growth) -> None:
    growth_line, ballast_line = _line_of(_scale, "[growth]"), _line_of(_prepare_ballast, "[ballast]")
    unit = 256 * 128 * 8  # bytes of one scaled frame
    with _Tracing():
        _SEEN.clear()
        gc.collect()
        ballast = _prepare_ballast()  # 8 MiB allocated before, held during the call
        _scale(np.zeros((256, 128), np.uint8))
        _scale(np.zeros((256, 128), np.uint8))  # the line holds 2 frames before run() starts
        try:
            size, line = _growth_of(biggest_growth, _scale_eight)
        finally:
            _SEEN.clear()
        del ballast
        if line == ballast_line:
            hint = ("that line holds the most bytes in all, but it allocated them before run(): "
                    "compare the two snapshots, after.compare_to(before, 'lineno')")
        elif line == 0:
            hint = ("a statistic grouped by 'filename' has no line number (0): group by "
                    "'lineno', after.compare_to(before, 'lineno')")
        elif size == growth_line:
            hint = "return the bytes first, then the line: (size_diff, lineno)"
        elif line == growth_line and 9.5 * unit < size < 10.5 * unit:
            hint = ("top.size is everything the line holds now, the 2 frames from before run() "
                    "included: return top.size_diff, the growth")
        elif line == growth_line and size < 0:
            hint = ("a growth is positive when you compare the later snapshot to the earlier "
                    "one: after.compare_to(before, 'lineno')")
        elif abs(size) < unit:
            hint = ("almost nothing grew: take the first snapshot, then call run(), then take "
                    "the second snapshot")
        else:
            hint = ("compare the snapshot after run() to the one before, grouped by 'lineno', "
                    "and return the first statistic's size_diff and traceback[0].lineno")
        expect(line == growth_line and 7.5 * unit < size < 8.5 * unit,
               f"about {fmt_bytes(8 * unit)} grown at the scaling line (line {growth_line} of "
               "the checks' file), where run() allocated 8 frames that a list keeps",
               f"{fmt_bytes(size)} at line {line}", hint)

        gc.collect()
        size, line = _growth_of(biggest_growth, _frames)
        result_line = _line_of(_frames, "[result]")
        expect(line == result_line and 1.9 * MiB < size < 2.1 * MiB,
               f"about 2.00 MiB grown at line {result_line}, where run() made the array it "
               "returns", f"{fmt_bytes(size)} at line {line}",
               "keep what run() returns alive until after the second snapshot "
               "(result = run()): what it returns is part of what it leaves allocated")


def _prepare_ballast():
    """8 MiB allocated before the call, at a line of its own."""
    return np.zeros(MiB) + 1.0  # [ballast] 8 MiB


def biggest_growth(answer) -> None:
    run_check("Exercise 1 (where the bytes grew)", answer, verify_biggest_growth)


def reference_biggest_growth(run):
    """rlmemlib's answer to exercise 1: ``(size_diff, lineno)`` of the line that grew most."""
    before = tracemalloc.take_snapshot()
    result = run()
    after = tracemalloc.take_snapshot()
    top = after.compare_to(before, "lineno")[0]
    del result
    return top.size_diff, top.traceback[0].lineno


def working_biggest_growth(answer):
    """The learner's ``biggest_growth`` if it passes, else rlmemlib's."""
    return working(answer, reference_biggest_growth, verify_biggest_growth, "biggest_growth")


# ---------------------------------------------------------------- exercise 2: a byte budget
COST = 400  # bytes charged per CartPole transition: about 360 measured, rounded up


class BudgetMemory:
    """rlmemlib's answer to exercise 2: the oldest transitions leave to keep within a byte budget."""

    def __init__(self, budget, cost):
        if cost > budget:
            raise ValueError(f"one transition costs {cost} B, more than the whole budget of {budget} B")
        self.budget, self.cost = budget, cost
        self.items = deque()
        self.nbytes = 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def add(self, obs, action, reward, next_obs, terminated, truncated):
        item = Transition(obs, action, reward, next_obs, terminated, truncated)
        room = self.budget // self.cost
        while len(self.items) >= room:  # make room first: the budget holds at every moment
            self.items.popleft()
        self.items.append(item)
        self.nbytes = len(self.items) * self.cost


def _which(item, fed) -> str:
    found = [k for k, t in enumerate(fed) if _same(item, t)]
    return f"transition {found[0]:,}" if found else "none of the transitions added"


def verify_budget_memory(BudgetMemory) -> None:
    data = _data()
    cost, budget = COST, 10 * COST + COST // 2  # pays for 10 transitions, not 10.5
    room = budget // cost
    mem = BudgetMemory(budget, cost)
    lens = []
    for k, t in enumerate(data):
        mem.add(*t)
        lens.append(len(mem))
        expect(mem.nbytes == len(mem) * cost,
               f"mem.nbytes == len(mem) * cost == {len(mem) * cost:,} after {k + 1:,} adds",
               f"{mem.nbytes!r}", "after each add, nbytes is the charge of what is held: "
               "len(self.items) * self.cost")
    most, last = max(lens), lens[-1]
    if most > room:
        if last == len(data):
            hint = ("nothing was ever evicted: before appending, let the oldest go "
                    "(self.items.popleft()) while the new transition would pass the budget")
        elif last == budget:
            hint = (f"it stopped at {budget:,} transitions, the budget's number: the budget "
                    f"counts bytes, and each transition costs {cost} B, so it pays for "
                    "budget // cost transitions")
        elif last == room + 1:
            hint = ("one transition too many: make room before appending, while "
                    "len(self.items) >= budget // cost, so the budget holds at every moment")
        else:
            hint = "evict while the transitions held, plus the new one, would cost more than the budget"
        expect(False, f"at most {room} transitions held ({budget:,} B of budget at {cost} B each)",
               f"{most:,}", hint)
    expect(last == room, f"{room} transitions held once the budget is reached ({budget:,} B at "
           f"{cost} B each)", f"{last}", "evict only while the new transition would not fit: "
           "the memory should use the whole budget it is given")
    fed = data[-room:]
    for i in range(room):
        if _same(mem[i], fed[i]):
            continue
        first = _which(mem[i], data)
        if _same(mem[-1], data[-1]) and _same(mem[0], data[0]):
            hint = ("the oldest stayed and newer ones left: pop() takes the newest out of a "
                    "deque; the oldest is on the left, popleft()")
        elif first == "none of the transitions added":
            hint = "store the six values you are given, as rm.Transition(obs, action, ...)"
        else:
            hint = ("keep the newest transitions, oldest first: append on the right, evict "
                    "from the left with popleft()")
        expect(False, f"mem[{i}] to be transition {len(data) - room + i:,} (the {room} newest of "
               f"{len(data):,} added, oldest first)", first, hint)
    _within_budget_traced(BudgetMemory, data)


def _within_budget_traced(BudgetMemory, data) -> None:
    """Fresh arrays per add, so the memory alone keeps them: tracemalloc sees what it holds."""
    budget = 256 * KiB
    room = budget // COST
    margin = 16 * KiB  # a notebook kernel's threads allocate a few KiB now and then
    with _Tracing():
        gc.collect()
        mem = BudgetMemory(budget, COST)
        zero = traced_now()
        tracemalloc.reset_peak()
        for obs, action, reward, next_obs, terminated, truncated in data[:4 * room]:
            mem.add(obs.copy(), action, reward, next_obs.copy(), terminated, truncated)
        held = traced_now() - zero
        peak = tracemalloc.get_traced_memory()[1] - zero
    expect(len(mem) == room, f"{room} transitions held under a budget of {fmt_bytes(budget)}",
           f"{len(mem)}", "the oldest leave so that len(self) * cost stays within the budget")
    if max(held, peak) > 2 * budget:
        hint = ("the transitions evicted are still alive: something besides self.items refers "
                "to them (a second list, a log of what left?). Evicting must drop the last "
                "reference")
    else:
        hint = (f"each stored transition costs more than the {COST} B charged: store it as "
                "rm.Transition(obs, action, reward, next_obs, terminated, truncated), a tuple, "
                "rather than a dict or an object of your own")
    expect(held <= budget + margin and peak <= budget + margin,
           f"at most {fmt_bytes(budget)} traced by tracemalloc while {4 * room:,} CartPole "
           "transitions went in (each with arrays of its own)",
           f"{fmt_bytes(max(held, peak))}, with len(mem) == {len(mem)}", hint)


def budget_memory(answer) -> None:
    run_check("Exercise 2 (a byte budget)", answer, verify_budget_memory)


def working_budget_memory(answer):
    """The learner's ``BudgetMemory`` class if it passes, else rlmemlib's."""
    return working(answer, BudgetMemory, verify_budget_memory, "BudgetMemory")


# ---------------------------------------------------------------- exercise 3: release at the end
class Sampler:
    """The part of training that picks the rows of each batch (its work left out here); it
    registers itself with the memory it samples."""

    def __init__(self, memory):
        self.memory = memory
        memory.sampler = self


class Trainer:
    """What a training run leaves behind, besides the network."""

    def __init__(self, memory):
        self.memory = memory
        Sampler(memory)
        self.callbacks = {"store": memory.add, "log": print}  # each is called at every step
        self.last_batch = memory.obs[-256:]                   # its last 256 rows, for a plot


def reference_release(trainer):
    """rlmemlib's answer to exercise 3: free the memory's arrays now, keep the rest."""
    trainer.last_batch = trainer.last_batch.copy()
    del trainer.callbacks["store"]
    trainer.memory = None
    gc.collect()


def _holders(trainer, memory, obs) -> list[tuple[str, str]]:
    """What in the trainer still refers to the memory (if alive) or to its observations (if
    alive), with a hint for each."""
    found = []
    if memory is not None and getattr(trainer, "memory", None) is memory:
        found.append(("trainer.memory still refers to the memory",
                      "del removes a name (in release, its own), not the object, and "
                      "memory.clear() keeps a CircularPool's arrays for reuse: drop the "
                      "reference itself, trainer.memory = None"))
    callbacks = getattr(trainer, "callbacks", None)
    for key, cb in (callbacks.items() if isinstance(callbacks, dict) and memory is not None else ()):
        if getattr(cb, "__self__", None) is memory:
            found.append((f"trainer.callbacks[{key!r}] still holds the memory",
                          f"it is a bound method, memory.add, and memory.add.__self__ is the "
                          f"memory: remove that entry, del trainer.callbacks[{key!r}]"))
    view = getattr(trainer, "last_batch", None)
    if obs is not None and isinstance(view, np.ndarray) and np.shares_memory(view, obs):
        found.append(("trainer.last_batch still holds memory.obs",
                      f"it is a view: its .base is the whole observation array "
                      f"({fmt_bytes(obs.nbytes)}), not just its {len(view)} rows. Keep a copy "
                      "of its own: trainer.last_batch = trainer.last_batch.copy()"))
    return found


def _why_alive(trainer, memory_ref, obs_ref) -> tuple[str, str]:
    """What keeps the memory or its observations alive after release: (what, hint)."""
    held = _holders(trainer, memory_ref(), obs_ref())
    if held:
        return held[0]
    if obs_ref() is None:
        return ("the memory object is still alive",
                "its arrays went, but not the memory: drop every reference to the memory "
                "itself rather than emptying it")
    gc.collect()  # no strong reference of ours is left at this point
    if memory_ref() is None and obs_ref() is None:
        return ("the memory freed only by a garbage collection",
                "the memory and its sampler refer to each other (memory.sampler.memory is "
                "memory): a cycle, which reference counting cannot free. Call gc.collect() at "
                "the end of release (or break the cycle first: trainer.memory.sampler = None)")
    return ("the memory alive after release and a garbage collection",
            "something outside the trainer still refers to it: did release keep it in a "
            "global name or a list?")


def _fill_trainer() -> tuple:
    memory = CircularPool(2_000, _spec())
    for t in _data()[:2_000]:
        memory.add(*t)
    trainer = Trainer(memory)
    return trainer, weakref.ref(memory), weakref.ref(memory.obs), memory.obs[-256:].copy()


def verify_release(release) -> None:
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()  # a collection at a random moment could hide a cycle
    try:
        trainer, memory_ref, obs_ref, last_values = _fill_trainer()
        release(trainer)
        if memory_ref() is not None or obs_ref() is not None:
            what, hint = _why_alive(trainer, memory_ref, obs_ref)
            expect(False, "the memory's arrays freed when release(trainer) returns, with the "
                   "trainer still alive", what, hint)
        view = getattr(trainer, "last_batch", None)
        expect(isinstance(view, np.ndarray) and np.array_equal(view, last_values),
               f"trainer.last_batch to keep its values ({len(last_values)} observations)",
               "None" if view is None else type(view).__name__ if not isinstance(view, np.ndarray)
               else "other values",
               "the plot still needs them: keep a copy that owns its data, "
               "trainer.last_batch = trainer.last_batch.copy()")
        callbacks = getattr(trainer, "callbacks", None)
        expect(isinstance(callbacks, dict) and callbacks.get("log") is print,
               "trainer.callbacks to keep its 'log' entry",
               "no callbacks" if not isinstance(callbacks, dict) else f"keys {sorted(callbacks)}",
               "remove only the entry that holds the memory, del trainer.callbacks['store']; "
               "the others belong to the rest of training")
    finally:
        if collecting:
            gc.enable()


def release(answer) -> None:
    run_check("Exercise 3 (release at the end of training)", answer, verify_release)


def working_release(answer):
    """The learner's ``release`` if it passes, else rlmemlib's."""
    return working(answer, reference_release, verify_release, "release")


__all__ = ["is_unfinished", "biggest_growth", "budget_memory", "release",
           "working_biggest_growth", "working_budget_memory", "working_release",
           "reference_biggest_growth", "reference_release", "BudgetMemory", "Sampler", "Trainer",
           "COST", "verify_biggest_growth", "verify_budget_memory", "verify_release",
           "CheckFailed"]
