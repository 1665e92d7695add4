"""Checks for the exercises of lesson 07, pixels and frame stacks.

Each public function takes the learner's answer and checks it (see :mod:`rlmemlib.checks`);
``verify_*`` functions hold the invariants and raise :class:`CheckFailed` with a teaching
message, so the unit tests can feed them typical wrong answers. The frame stacks come from
gymnasium's ``FrameStackObservation`` on CartPole-v1 with short episodes (a "frame" is then
CartPole's 4 numbers: the stacking, the padding and the episode ends are exactly those of an
Atari pipeline, with frames of 16 bytes instead of 7,056), made once on first use.

* Exercise 1 (planned bytes): the bytes of the observations of a memory of each layout (stacks
  with ``next_obs``, each stack once, each frame once) for uint8 frames.
* Exercise 2 (fail fast): a check that raises ``MemoryError``, with both sizes in its message,
  when a plan is above a share of the memory available, and stays silent otherwise.
* Exercise 3 (stacks at episode starts): a stack rebuilt from the newest frame of each step,
  padded at an episode's start as ``FrameStackObservation`` pads it.
* Exercise 4 (each frame once): a frame store that shares frames only where the bytes agree,
  compared with what was added on streams with episode starts of both paddings, stacks that
  do not overlap, and chains broken in mid-episode.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from . import expect, run_check, working
from ..measure import fmt_bytes

GiB = 2**30
LAYOUTS = ("stacks", "shared", "frames")


# ---------------------------------------------------------------- data
@functools.lru_cache(maxsize=4)
def stacked_steps(k: int = 4, padding: str = "reset", steps: int = 150) -> tuple:
    """Transitions ``(obs, action, reward, next_obs, terminated, truncated)`` of CartPole with
    frame stacks of ``k`` and episodes of at most 15 steps, from a seeded random policy."""
    import gymnasium as gym

    from ..memory import ListMemory
    from ..rollout import rollout

    env = gym.wrappers.FrameStackObservation(gym.make("CartPole-v1", max_episode_steps=15), k,
                                             padding_type=padding)
    memory = ListMemory()
    rollout(env, memory, steps, seed=0, progress_bar=False)
    env.close()
    return tuple(tuple(t) for t in memory)


def episode_starts(steps) -> list[int]:
    """The steps at which an episode begins (0, and each step after an end)."""
    return [0] + [i for i in range(1, len(steps)) if steps[i - 1][4] or steps[i - 1][5]]


def _start_of(starts, i: int) -> int:
    return max(s for s in starts if s <= i)


# ---------------------------------------------------------------- exercise 1: planned bytes
def _planned(capacity: int, frame_shape: tuple, k: int, layout: str) -> int:
    frame = int(np.prod(frame_shape))
    return capacity * {"stacks": 2 * k * frame, "shared": k * frame, "frames": frame}[layout]


def _explain_planned(got, capacity, frame_shape, k, layout) -> None:
    want = _planned(capacity, frame_shape, k, layout)
    where = f"planned_bytes({capacity:,}, {frame_shape}, {k}, {layout!r})"
    frame = int(np.prod(frame_shape))
    if layout == "stacks" and got == want // 2:
        expect(False, f"{where} == {want:,}", f"{got:,}",
               "that is obs alone: a ring of stacks also stores next_obs, a second stack per "
               "transition")
    if layout == "frames" and got in (k * capacity * frame, 2 * capacity * frame):
        expect(False, f"{where} == {want:,}", f"{got:,}",
               "storing each frame once costs one frame per transition: each step brings one "
               "new frame, and the stacks are rebuilt from the frames")
    if got == 4 * want or got == 8 * want:
        expect(False, f"{where} == {want:,}", f"{got:,}",
               f"{got // want} bytes per pixel: frames are uint8, one byte per pixel (4 or 8 "
               "bytes is the obs / 255 pitfall)")
    if got in (want // k, 2 * want // k):
        expect(False, f"{where} == {want:,}", f"{got:,}",
               f"a stack holds k = {k} frames: multiply by k where the layout stores stacks")
    if got > want and (got - want) % capacity == 0 and (got - want) // capacity < 64:
        expect(False, f"{where} == {want:,}", f"{got:,}",
               "count the observations only (the frames), not the action, reward or flags")
    expect(False, f"{where} == {want:,}", f"{got!r}",
           "capacity × (bytes per transition of the layout): 2 stacks, 1 stack or 1 frame, "
           "a frame being the product of frame_shape (one byte per pixel)")


def verify_planned_bytes(planned_bytes) -> None:
    for capacity, frame_shape, k in ((10, (3, 5), 2), (7, (2, 2), 3), (1_000_000, (84, 84), 4)):
        for layout in LAYOUTS:
            got = planned_bytes(capacity, frame_shape, k, layout)
            expect(isinstance(got, (int, np.integer)) and not isinstance(got, bool),
                   f"planned_bytes(...) to return a whole number of bytes",
                   f"{got!r} ({type(got).__name__})",
                   "bytes are counted in whole numbers: multiply ints, do not divide")
            if int(got) != _planned(capacity, frame_shape, k, layout):
                _explain_planned(int(got), capacity, frame_shape, k, layout)


def planned_bytes(answer) -> None:
    run_check("Exercise 1 (planned bytes)", answer, verify_planned_bytes)


def reference_planned_bytes(capacity, frame_shape, k, layout):
    """rlmemlib's answer to exercise 1."""
    return _planned(capacity, frame_shape, k, layout)


def working_planned_bytes(answer):
    """The learner's ``planned_bytes`` if it passes, else rlmemlib's."""
    return working(answer, reference_planned_bytes, verify_planned_bytes, "planned_bytes")


# ---------------------------------------------------------------- exercise 2: fail fast
def _outcome(check_fits, planned, available):
    """("raised", error), ("warned", message), or ("returned", value)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = check_fits(planned, available, "a test memory")
        except Exception as err:  # the learner's code: any error is an outcome to explain
            return "raised", err
    if caught:
        return "warned", str(caught[0].message)
    return "returned", value


def verify_check_fits(check_fits) -> None:
    big, laptop = int(26.5 * GiB), 16 * GiB
    kind, what = _outcome(check_fits, big, laptop)
    plan = f"check_fits({fmt_bytes(big)}, {fmt_bytes(laptop)}, ...)"
    expect(kind != "warned", f"{plan} to stop the program with MemoryError", "a warning",
           "a warning lets the run start anyway (Stable-Baselines3's check does this), and the "
           "process is killed when the memory has filled: raise MemoryError instead")
    expect(kind == "raised", f"{plan} to raise MemoryError", f"it returned {what!r}",
           "a check that returns a value can be ignored by its caller: raise MemoryError, so "
           "that the program stops at this line")
    expect(isinstance(what, MemoryError), f"{plan} to raise MemoryError",
           f"{type(what).__name__}: {what}",
           "MemoryError is the error Python raises when memory cannot be had: raise that one, "
           "so that callers who handle it handle this too")
    message = str(what)
    expect(fmt_bytes(big) in message and fmt_bytes(laptop) in message,
           f"the message to say both sizes, {fmt_bytes(big)!r} and {fmt_bytes(laptop)!r}",
           repr(message), "say what was planned and what is available (fmt_bytes prints them), "
           "so that whoever reads it knows how far off the plan is")
    for planned, must_raise in ((int(13.5 * GiB), True), (12 * GiB, False), (GiB, False),
                                (int(0.8 * laptop) + 1, True), (int(0.8 * laptop), False)):
        kind, what = _outcome(check_fits, planned, laptop)
        share = planned / laptop
        if must_raise:
            expect(kind == "raised" and isinstance(what, MemoryError),
                   f"a plan of {share:.1%} of the available memory to raise MemoryError",
                   "no error", "keep a share of the memory free for the rest of the process: "
                   "raise when planned > share * available (share defaults to 0.8)")
        else:
            expect(kind == "returned", f"a plan of {share:.1%} of the available memory to pass",
                   f"{type(what).__name__}: {what}" if kind == "raised" else kind,
                   "refuse only what is above share * available (80% by default): a plan "
                   "that fits must go through silently")


def check_fits(answer) -> None:
    run_check("Exercise 2 (fail fast)", answer, verify_check_fits)


def reference_check_fits(planned, available, what, share=0.8):
    """rlmemlib's answer to exercise 2."""
    if planned > share * available:
        raise MemoryError(f"{what} needs {fmt_bytes(planned)}, more than {share:.0%} of the "
                          f"{fmt_bytes(available)} available")


def working_check_fits(answer):
    """The learner's ``check_fits`` if it passes, else rlmemlib's."""
    return working(answer, reference_check_fits, verify_check_fits, "check_fits")


# ---------------------------------------------------------------- exercise 3: episode starts
def _candidates(newest, start: int, i: int, k: int) -> dict:
    """Stacks that typical wrong answers build, by name."""
    frames = newest[0].shape
    at = lambda j: newest[j] if j >= 0 else newest[0]  # noqa: E731
    return {
        "ring": np.stack([at(j) for j in range(i - k + 1, i + 1)]),
        "zeros": np.stack([newest[j] if j >= start else np.zeros(frames, newest[0].dtype)
                           for j in range(i - k + 1, i + 1)]),
        "early": np.stack([newest[max(j, start)] for j in range(i - k, i)]),
        "reversed": np.stack([newest[max(j, start)] for j in range(i, i - k, -1)]),
    }


def _explain_stack(got, newest, start, i, k) -> None:
    where = f"the stack of step {i}" + (f" ({i - start + 1} steps into an episode)" if i - start < k - 1 else "")
    wrong = _candidates(newest, start, i, k)
    if np.array_equal(got, wrong["zeros"]):
        expect(False, f"{where} padded as FrameStackObservation pads it", "zeros before the "
               "episode's first frame", "FrameStackObservation (padding_type='reset', the "
               "default) repeats the episode's first frame, newest[start], in front of it")
    if i - start < k - 1 and np.array_equal(got, wrong["ring"]):
        expect(False, f"{where} to hold only frames of its own episode",
               "frames of the previous episode", "a ring of frames reaches back across the "
               "episode start: where j < start, use the episode's first frame newest[start]")
    if np.array_equal(got, wrong["reversed"]):
        expect(False, f"{where} oldest first", "the newest frame first",
               "position 0 of a stack is its oldest frame and position k - 1 the newest, "
               "newest[i]")
    if np.array_equal(got, wrong["early"]):
        expect(False, f"{where} to end with step {i}'s own newest frame, newest[{i}]",
               f"frames up to newest[{i - 1}]", "off by one: the stack of step i holds steps "
               "i - k + 1 to i, range(i - k + 1, i + 1)")
    expect(False, f"{where} to be the stack the environment produced", "other frames",
           "take steps j = i - k + 1, ..., i, and use max(j, start) so that the frames "
           "before the episode's start repeat its first frame")


def verify_stack_at(stack_at) -> None:
    for k in (4, 3):
        steps = stacked_steps(k)
        newest = [t[0][-1] for t in steps]
        starts = episode_starts(steps)
        for i, t in enumerate(steps):
            start = _start_of(starts, i)
            got = np.asarray(stack_at(newest, start, i, k))
            expect(got.shape == t[0].shape, f"stack_at(newest, {start}, {i}, {k}) of shape "
                   f"{t[0].shape}", f"shape {got.shape}",
                   "return the k frames stacked on axis 0: np.stack([...])")
            if not np.array_equal(got, t[0]):
                _explain_stack(got, newest, start, i, k)


def stack_at(answer) -> None:
    run_check("Exercise 3 (stacks at episode starts)", answer, verify_stack_at)


def reference_stack_at(newest, start, i, k=4):
    """rlmemlib's answer to exercise 3."""
    return np.stack([newest[max(j, start)] for j in range(i - k + 1, i + 1)])


def working_stack_at(answer):
    """The learner's ``stack_at`` if it passes, else rlmemlib's."""
    return working(answer, reference_stack_at, verify_stack_at, "stack_at")


# ---------------------------------------------------------------- exercise 4: each frame once
class ReferenceFrameStore:
    """rlmemlib's answer to exercise 4 (the class the exercise asks for, finished)."""

    def __init__(self):
        self.frames = []   # every frame stored, in the order stored
        self.last = None   # (bytes of the last next_obs, its frame indices)

    def store(self, stack):
        """Append a copy of each frame of ``stack``; return their indices."""
        first = len(self.frames)
        self.frames.extend(frame.copy() for frame in stack)
        return list(range(first, len(self.frames)))

    def add(self, obs, next_obs):
        same_as_last = self.last is not None and obs.tobytes() == self.last[0]
        obs_idx = self.last[1] if same_as_last else self.store(obs)
        shifted = next_obs[:-1].tobytes() == obs[1:].tobytes()
        next_idx = obs_idx[1:] + self.store(next_obs[-1:]) if shifted else self.store(next_obs)
        self.last = (next_obs.tobytes(), next_idx)
        return obs_idx, next_idx


def broken_chains(k: int = 4) -> tuple:
    """Stacks that an environment should not produce but a caller may pass: next stacks that do
    not overlap obs, an obs that is not the previous next_obs although its newest frame is, and
    a next_obs whose newest frame repeats while its oldest changes."""
    steps = stacked_steps(k)
    rng = np.random.default_rng(7)
    out = []
    for n, t in enumerate(steps[:60]):
        obs, nxt = np.array(t[0]), np.array(t[3])
        if n % 7 == 3:
            nxt = np.array(steps[n + 20][3])                      # does not overlap
        if n % 11 == 5 and out:
            obs = np.array(out[-1][3])
            obs[0] = rng.normal(size=obs[0].shape)                # same newest frame, older differ
            nxt = np.concatenate([obs[1:], t[3][-1:]])
        out.append((obs, t[1], t[2], nxt, t[4], t[5]))
    return tuple(out)


def _streams() -> dict:
    return {"episodes padded by repeating the first frame": stacked_steps(4),
            "episodes padded with zeros": stacked_steps(4, "zero"),
            "stacks of 3": stacked_steps(3),
            "broken chains": broken_chains()}


def _rebuilt(store, idx) -> np.ndarray:
    return np.stack([store.frames[j] for j in idx])


REUSED = 99  # what the checks' caller writes into its arrays after each add, as a loop reusing them


def _explain_store(name, steps, n, which, got) -> None:
    t = steps[n]
    where = f"{which} of step {n} ({name})"
    if np.any(np.all(got == REUSED, axis=tuple(range(1, got.ndim)))):
        expect(False, f"{where} to come back as added", "frames the caller wrote into its own "
               "arrays after add() returned", "the store kept the caller's arrays, not their "
               "values, and the caller reuses its arrays: store copies, frame.copy()")
    starts = episode_starts(steps)
    prev_next = steps[n - 1][3] if n else None
    if which == "obs" and n in starts and prev_next is not None and np.array_equal(got, prev_next):
        expect(False, f"{where}, the first of an episode, to come back as added",
               "the previous step's next_obs", "an episode's first obs is not the last next_obs: "
               "reuse the last next_obs's indices only when obs has the same bytes "
               "(obs.tobytes() == self.last[0])")
    if which == "obs" and prev_next is not None and np.array_equal(got, prev_next):
        expect(False, f"{where} to come back as added", "the previous step's next_obs, which "
               "differs from obs in an older frame", "compare the whole stack's bytes, not one "
               "frame: obs.tobytes() == self.last[0]")
    if which == "next_obs":
        obs = t[0]
        if np.array_equal(got, np.concatenate([obs[1:], t[3][-1:]])):
            expect(False, f"{where} to come back as added", "obs shifted by one frame, with "
                   "next_obs's newest frame", "this next_obs does not overlap obs: share obs's "
                   "frames only when next_obs[:-1] has the same bytes as obs[1:]")
        if np.array_equal(got, np.concatenate([obs[:-1], t[3][-1:]])):
            expect(False, f"{where} to come back as added", "obs's first k - 1 frames and one "
                   "new frame", "next_obs drops obs's oldest frame and adds one at the end: its "
                   "shared frames are obs_idx[1:], not obs_idx[:-1]")
    expect(False, f"{where} to come back exactly as added", "other frames",
           "rebuild each stack from its indices, and share only frames whose bytes you "
           "compared: the whole obs with self.last[0], next_obs[:-1] with obs[1:]")


def _run_store(FrameStore, name, steps) -> int:
    store = FrameStore()
    kept = []
    for n, t in enumerate(steps):
        passed = (np.array(t[0]), np.array(t[3]))  # arrays of the caller's own
        obs_idx, next_idx = store.add(*passed)
        kept.append((list(obs_idx), list(next_idx)))
        for which, idx, want in (("obs", obs_idx, t[0]), ("next_obs", next_idx, t[3])):
            expect(len(idx) == len(want), f"{len(want)} frame indices for {which} of step {n}",
                   f"{len(idx)}", "return one index per frame of the stack")
            got = _rebuilt(store, idx)
            if not np.array_equal(got, want):
                _explain_store(name, steps, n, which, got)
        for arr in passed:  # the caller's loop reuses its arrays
            arr[...] = REUSED
    for n, (t, (obs_idx, next_idx)) in enumerate(zip(steps, kept)):  # later adds change nothing
        expect(np.array_equal(_rebuilt(store, obs_idx), t[0]) and np.array_equal(_rebuilt(store, next_idx), t[3]),
               f"step {n}'s stacks ({name}) to stay as added after all the later adds",
               "other frames", "never change a stored frame: store appends copies, and indices "
               "point at frames that stay")
    return len(store.frames)


def verify_frame_store(FrameStore) -> None:
    for name, steps in _streams().items():
        held = _run_store(FrameStore, name, steps)
        if name.startswith("episodes") or name.startswith("stacks"):
            k = len(steps[0][0])
            starts = len(episode_starts(steps))
            most = len(steps) + k * starts
            expect(held <= most, f"at most {most} frames for {len(steps)} steps in {starts} "
                   f"episodes ({name})", f"{held}",
                   "each step brings one new frame (next_obs's newest) and each episode's "
                   "first stack a few: share obs with the last next_obs, and next_obs with obs, "
                   "wherever the bytes agree")


def frame_store(answer) -> None:
    run_check("Exercise 4 (each frame once)", answer, verify_frame_store)


def working_frame_store(answer):
    """The learner's frame store if it passes, else rlmemlib's."""
    return working(answer, ReferenceFrameStore, verify_frame_store, "FrameStore")


__all__ = ["planned_bytes", "check_fits", "stack_at", "frame_store", "working_frame_store",
           "working_planned_bytes", "working_check_fits", "working_stack_at",
           "reference_planned_bytes", "reference_check_fits", "reference_stack_at",
           "verify_planned_bytes", "verify_check_fits", "verify_stack_at", "verify_frame_store",
           "ReferenceFrameStore", "stacked_steps", "episode_starts", "broken_chains"]
