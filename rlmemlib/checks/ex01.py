"""Checks for the exercises of lesson 01, experience and references.

Each public function takes the learner's answer and checks it (see :mod:`rlmemlib.checks`);
``verify_*`` functions hold the invariants and raise :class:`CheckFailed` with a teaching
message, so the unit tests can feed them typical wrong answers.

Exercise 4 frees objects by reference counting alone: its check switches the cyclic garbage
collector off while it runs (so that a collection cannot hide a cycle) and restores the
collector's previous state afterwards.
"""

from __future__ import annotations

import gc
import numbers
import weakref

import numpy as np

from . import CheckFailed, expect, is_unfinished, run_check, working
from ..spec import TransitionSpec, narrowest_int_dtype

_UNSIGNED = (np.uint8, np.uint16, np.uint32, np.uint64)


# ---------------------------------------------------------------- exercise 1: the narrowest action dtype
def _as_dtype(got, call: str) -> np.dtype:
    expect(got is not None, f"{call} to be a numpy dtype", "None",
           "every path through the function must return a dtype, np.dtype(np.uint8) for instance")
    try:
        return np.dtype(got)
    except TypeError:
        raise CheckFailed(f"expected {call} to be a numpy dtype, got {got!r}: return a dtype such "
                          "as np.dtype(np.uint8)") from None


def verify_narrowest_action_dtype(narrowest_action_dtype) -> None:
    for n in (2, 1, 18, 255, 256, 257, 300, 65_536, 65_537, 2**32, 2**32 + 1):
        call = f"narrowest_action_dtype({n})"
        dtype = _as_dtype(narrowest_action_dtype(n), call)
        expect(dtype.kind == "u", f"{call} to be an unsigned integer dtype (uint8, uint16, ...)",
               str(dtype),
               "an action of Discrete(n) is a whole number from 0 to n - 1, never negative, so an "
               "unsigned integer holds it: a signed type spends its top bit on a sign"
               if dtype.kind == "i" else "an action is a whole number: store it in an integer dtype")
        largest = n - 1
        expect(largest <= np.iinfo(dtype).max, f"{call} to hold the largest action, {largest:,}",
               f"{dtype}, whose largest value is {np.iinfo(dtype).max:,}",
               f"a memory would refuse action {largest:,} or wrap it around to a wrong action; "
               "choose the first of uint8, uint16, uint32, uint64 whose np.iinfo(...).max is at "
               "least n - 1")
        right = narrowest_int_dtype(0, largest)
        expect(dtype == right, f"{call} == {right}, the narrowest that holds 0 to {largest:,}",
               str(dtype),
               f"the largest action of Discrete({n}) is n - 1 = {largest:,}, not n: {right} holds it"
               if dtype == narrowest_int_dtype(0, n) else
               f"{dtype} is wider than needed: every transition would spend "
               f"{dtype.itemsize - right.itemsize} byte(s) more on its action for nothing")


def narrowest_action_dtype(answer) -> None:
    run_check("Exercise 1 (the narrowest action dtype)", answer, verify_narrowest_action_dtype)


def reference_narrowest_action_dtype(n):
    """rlmemlib's answer to exercise 1: the narrowest unsigned dtype holding 0 .. n - 1."""
    return narrowest_int_dtype(0, int(n) - 1)


def working_narrowest_action_dtype(answer):
    """The learner's ``narrowest_action_dtype`` if it passes, else rlmemlib's."""
    return working(answer, reference_narrowest_action_dtype, verify_narrowest_action_dtype,
                   "narrowest_action_dtype")


# ---------------------------------------------------------------- exercise 2: raw bytes of a transition
def _spaces():
    """(description, observation space, action space): CartPole's first, then shapes that differ."""
    import gymnasium as gym
    from gymnasium import spaces

    env = gym.make("CartPole-v1")
    cases = [("CartPole-v1", env.observation_space, env.action_space)]
    env.close()
    cases += [
        ("8 float32 numbers, Discrete(300)",
         spaces.Box(-1.0, 1.0, (8,), np.float32), spaces.Discrete(300)),
        ("84x84 uint8 frames, Discrete(18)", spaces.Box(0, 255, (84, 84), np.uint8), spaces.Discrete(18)),
        ("3 float64 numbers, Discrete(5)", spaces.Box(-1.0, 1.0, (3,), np.float64), spaces.Discrete(5)),
    ]
    return cases


def _raw_hint(got: int, spec: TransitionSpec) -> str:
    """The likely mistake behind a wrong byte count, from the size of the gap."""
    right, obs, action = spec.nbytes, spec.obs_nbytes, spec.action_nbytes
    mistakes = {
        right - action + 8: "the action was counted as 8 bytes: action_space.dtype is int64, numpy's "
                            "default integer, but a Discrete(n) action fits in "
                            f"narrowest_action_dtype(n), {spec.action_dtype} here",
        right - obs: "next_obs was not counted: a transition holds two observations, obs and "
                     "next_obs, each of the observation space's shape and dtype",
        right - obs - action + 8: "next_obs was not counted, and the action was counted as an "
                                  "8-byte int64: count two observations, and the action in "
                                  "narrowest_action_dtype(n)",
        right + 4: "the reward was counted as an 8-byte float64; store it as float32 (4 bytes)",
        right - 2: "the two flags (terminated, truncated) were left out: one byte each",
        right - 4: "the reward was left out: a float32, 4 bytes",
        right - action: "the action was left out",
    }
    if action != 1:
        mistakes[right - action + 1] = (f"the action was counted as one byte, but Discrete"
                                        f"({spec.action_high + 1}) has actions up to "
                                        f"{spec.action_high}: it needs {spec.action_dtype}, the "
                                        "narrowest dtype that holds n - 1")
    if got in mistakes:
        return mistakes[got]
    return (f"count 2 x {obs:,} (obs and next_obs: the number of values in the shape times "
            f"the dtype's itemsize) + {action} (the action as {spec.action_dtype}) + 4 (a float32 "
            "reward) + 2 (two one-byte flags)")


def verify_raw_nbytes(raw_nbytes) -> None:
    for name, observation_space, action_space in _spaces():
        spec = TransitionSpec.from_spaces(observation_space, action_space)
        got = raw_nbytes(observation_space, action_space)
        expect(isinstance(got, numbers.Integral) and not isinstance(got, (bool, np.bool_)),
               f"a whole number of bytes for {name}", f"{got!r} ({type(got).__name__})",
               "return an int: np.prod(shape) is a whole number, and so is itemsize (wrap a "
               "product in int() if it came out as a float)")
        expect(int(got) == spec.nbytes, f"{spec.nbytes:,} bytes for {name} (spec.nbytes)",
               f"{int(got):,}", _raw_hint(int(got), spec))


def raw_nbytes(answer) -> None:
    run_check("Exercise 2 (raw bytes of one transition)", answer, verify_raw_nbytes)


def reference_raw_nbytes(observation_space, action_space):
    """rlmemlib's answer to exercise 2: ``TransitionSpec.from_spaces(...).nbytes``."""
    return TransitionSpec.from_spaces(observation_space, action_space).nbytes


def working_raw_nbytes(answer):
    """The learner's ``raw_nbytes`` if it passes, else rlmemlib's."""
    return working(answer, reference_raw_nbytes, verify_raw_nbytes, "raw_nbytes")


# ---------------------------------------------------------------- exercise 3: the moment an object dies
def _two_names():
    obs = np.arange(4, dtype=np.float32)
    return {"a": obs, "b": obs}, ["a", "b"]


def _one_name():
    return {"a": np.arange(4, dtype=np.float32)}, ["a"]


def _then_another():
    obs = np.arange(4, dtype=np.float32)
    return {"a": obs, "b": obs, "other": np.zeros(4, np.float32)}, ["a", "b", "other"]


def _in_a_memory():
    obs = np.arange(4, dtype=np.float32)
    transition = (obs, 1, 1.0, obs + 1, False, False)
    return {"obs": obs, "transition": transition, "memory": [transition]}, ["obs", "transition", "memory"]


def _one_name_left():
    obs = np.arange(4, dtype=np.float32)
    return {"a": obs, "b": obs}, ["a"]


# (description, build): build() makes a fresh namespace and order, and keeps no reference of its
# own to the watched object (a name outside the dict would keep it alive).
SCENES = [
    ('namespace {"a": obs, "b": obs} (two names, one array), order ["a", "b"]', _two_names),
    ('namespace {"a": obs} (one name), order ["a"]', _one_name),
    ('namespace {"a": obs, "b": obs, "other": another array}, order ["a", "b", "other"]', _then_another),
    ('namespace {"obs": obs, "transition": (obs, ...), "memory": [transition]}, '
     'order ["obs", "transition", "memory"]', _in_a_memory),
    ('namespace {"a": obs, "b": obs}, order ["a"] (b is never deleted)', _one_name_left),
]


def _true_log(namespace: dict, order: list) -> list:
    """What reference counting does: "freed" right after the del of the last reference."""
    events: list = []
    weakref.finalize(namespace[order[0]], events.append, "freed")
    for name in order:
        events.append(f"del {name}")
        del namespace[name]
    seen = list(events)  # before the names left over go, which may free the object too
    namespace.clear()
    return seen


def _death_hint(got: list, expected: list, order: list) -> str:
    dels = [e for e in got if e != "freed"]
    if dels != [f"del {name}" for name in order]:
        return ('record "del NAME" once for each name of order, in that order, just before you '
                "delete it")
    if "freed" not in got:
        return ('weakref.finalize never recorded "freed": register it on namespace[order[0]] before '
                'the first del, passing the function and its argument apart: '
                'weakref.finalize(obj, events.append, "freed")')
    at = got.index("freed")
    if at == 0:
        return ('"freed" came before any del: did you call events.append("freed") yourself when you '
                'registered the finalizer? Pass the function and its argument apart: '
                'weakref.finalize(obj, events.append, "freed")')
    if "freed" not in expected:
        return (f'"freed" was recorded, but a name that was never deleted still refers to the '
                'object, so it lives on. Let weakref.finalize record "freed"; never write it yourself')
    right = expected.index("freed")
    if at < right:
        deleted = got[at - 1][4:]
        left = [name for name in order[order.index(deleted) + 1:]
                if f"del {name}" in expected[:right]]
        return (f'"freed" came right after "del {deleted}", but {", ".join(repr(n) for n in left)} '
                "still referred to the object then. An object is freed at the del of its last "
                "reference, not its first. (If weakref.finalize wrote it there, append "
                '"del NAME" before you delete the name, not after.)')
    return (f'"freed" came only after {got[at - 1]!r}, a name that did not lead to the object. '
            "Does your function keep a name of its own for the object (obj = namespace[...])? That "
            "reference keeps it alive until the function returns: pass namespace[order[0]] to "
            "weakref.finalize directly, or del your own name before the loop. (And never append "
            '"freed" yourself: only the finalizer knows when the object goes.)')


def verify_death_log(death_log) -> None:
    for description, build in SCENES:
        expected = _true_log(*build())
        namespace, order = build()
        got = death_log(namespace, list(order))
        expect(isinstance(got, list), f"a list of events for {description}",
               f"{type(got).__name__}", "return the list that the events were appended to")
        got = list(got)  # a snapshot: a finalizer may still append to the learner's list later
        left = [name for name in order if name in namespace]
        expect(not left, f"the names of order deleted from the dict for {description}",
               f"{left} still there", "delete each name from the dict: del namespace[name]")
        expect(got == expected, f"{expected} for {description}", f"{got}",
               _death_hint(got, expected, order))
        namespace.clear()


def death_log(answer) -> None:
    run_check("Exercise 3 (the moment an object dies)", answer, verify_death_log)


def reference_death_log(namespace, order):
    """rlmemlib's answer to exercise 3: the events of deleting ``order`` from ``namespace``."""
    events = []
    weakref.finalize(namespace[order[0]], events.append, "freed")
    for name in order:
        events.append(f"del {name}")
        del namespace[name]
    return events


def working_death_log(answer):
    """The learner's ``death_log`` if it passes, else rlmemlib's."""
    return working(answer, reference_death_log, verify_death_log, "death_log")


# ---------------------------------------------------------------- exercise 4: break the cycle
class _Episode:
    """The check's episode: frames, and the steps taken in it."""

    def __init__(self, frames):
        self.frames = frames
        self.steps = []


def _holds_strongly(step, episode) -> bool:
    return any(value is episode for value in vars(step).values()) if hasattr(step, "__dict__") else False


def _verify_step_collector_off(Step) -> None:
    episode = _Episode(np.ones(1_000, np.float32))
    try:
        step = Step(episode, 1)
    except AttributeError as exc:
        if "episode" not in str(exc):
            raise
        raise CheckFailed("expected Step(episode, 1) to make a step, got AttributeError "
                          f"({exc}): episode is the name of the property, which has no setter; "
                          "store the weak reference under another name, self._episode") from None
    expect(any(s is step for s in episode.steps), "the new step in episode.steps",
           f"{len(episode.steps)} step(s) there, not this one",
           "Step(episode, action) appends itself to episode.steps, as the starter does: keep "
           "that line")
    expect(getattr(step, "action", None) == 1, "step.action == 1", repr(getattr(step, "action", None)),
           "keep self.action = action")
    got = step.episode
    expect(got is not Ellipsis, "step.episode to be the episode", "Ellipsis",
           "fill in the `...` of the episode property too")
    expect(got is episode, "step.episode to be the episode itself while it lives",
           f"a {type(got).__name__}",
           "a weakref.ref is a function of no arguments: call it, self._episode(), to get the "
           "episode back" if isinstance(got, weakref.ref) else
           "a weakref.proxy stands in for the episode but is not it: store weakref.ref(episode) "
           "and call it in the property" if isinstance(got, weakref.ProxyTypes) else
           "store a weak reference to the episode in __init__ and return what it leads to")
    freed: list = []
    weakref.finalize(episode, freed.append, "episode")
    strong = _holds_strongly(step, episode)
    del episode, got
    if not freed:
        gc.collect()  # free the cycle the answer made, before the message
    expect(bool(freed), "the episode freed at the del of its last name, with the collector off",
           "still alive",
           "the step keeps a strong back-reference (self._episode = episode): the step refers "
           "to the episode and the episode to the step, so neither count reaches zero until "
           "gc.collect(). Store weakref.ref(episode) instead: a weak reference is not counted"
           if strong else
           "something in your Step still refers to the episode; keep only a weakref.ref(episode)")
    got = step.episode
    expect(got is None, "step.episode to be None once the episode is freed", f"a {type(got).__name__}",
           "return self._episode(): a dead weak reference returns None")


def verify_step(Step) -> None:
    was_enabled = gc.isenabled()
    gc.disable()  # only reference counting may free the episode
    try:
        _verify_step_collector_off(Step)
    finally:
        if was_enabled:
            gc.enable()


def step(answer) -> None:
    run_check("Exercise 4 (break the cycle)", answer, verify_step)


class ReferenceStep:
    """rlmemlib's answer to exercise 4: a step with a weak reference back to its episode."""

    def __init__(self, episode, action):
        self._episode = weakref.ref(episode)
        self.action = action
        episode.steps.append(self)

    @property
    def episode(self):
        """The episode while it lives, else None."""
        return self._episode()


def working_step(answer):
    """The learner's ``Step`` if it passes, else rlmemlib's."""
    return working(answer, ReferenceStep, verify_step, "Step")


__all__ = ["is_unfinished", "narrowest_action_dtype", "raw_nbytes", "death_log", "step",
           "working_narrowest_action_dtype", "working_raw_nbytes", "working_death_log", "working_step",
           "reference_narrowest_action_dtype", "reference_raw_nbytes", "reference_death_log",
           "ReferenceStep", "verify_narrowest_action_dtype", "verify_raw_nbytes", "verify_death_log",
           "verify_step"]
