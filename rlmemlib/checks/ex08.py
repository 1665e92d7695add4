"""Checks for the exercises of lesson 08, vector environments.

Each public function takes the learner's answer and checks it (see :mod:`rlmemlib.checks`);
``verify_*`` functions hold the invariants and raise :class:`CheckFailed` with a teaching
message, so the unit tests can feed them typical wrong answers. The checks run on real
CartPole-v1 sub-environments stepped with seeded actions, and print nothing that varies.

* Exercise 1 (``NEXT_STEP``): ``store_step`` stores the rows of one vector step, except the
  rows of sub-environments that spend the step resetting, and returns which sub-environments
  will reset at the next step. Compared with ``rm.rollout`` on the same seeds and actions.
* Exercise 2 (``SAME_STEP``): ``true_next_obs`` puts the final observations from ``info`` in
  the rows of the sub-environments whose episode just ended, without changing the array the
  environment handed over (it is the next step's ``obs``).
* Exercise 3 (chains by content): ``hops`` finds, for each row, how many rows on its
  ``next_obs`` is stored as an ``obs``, comparing bytes (``-0.0`` is not ``0.0``, and a NaN
  equals a NaN with the same bits).
* Exercise 4 (row views): ``keep_rows`` gives each row of a batch as an array of its own, so
  that keeping rows does not keep the batch.
"""

from __future__ import annotations

import functools
import gc
import weakref

import numpy as np

from . import expect, run_check, working
from ..memory import ListMemory

__all__ = ["store_step", "true_next_obs", "hops", "keep_rows", "verify_store_step",
           "verify_true_next_obs", "verify_hops", "verify_keep_rows", "working_store_step",
           "working_true_next_obs", "reference_store_step", "reference_true_next_obs",
           "reference_hops", "reference_keep_rows", "cartpoles"]

N_ENVS, STEPS, SEED = 4, 300, 0


def cartpoles(n: int = N_ENVS, same_step: bool = False):
    """``n`` CartPole-v1 sub-environments in a SyncVectorEnv (NEXT_STEP unless ``same_step``)."""
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    mode = AutoresetMode.SAME_STEP if same_step else AutoresetMode.NEXT_STEP
    return SyncVectorEnv([lambda: gym.make("CartPole-v1")] * n, autoreset_mode=mode)


@functools.lru_cache(maxsize=1)
def _actions() -> tuple:
    rng = np.random.default_rng(SEED)
    return tuple(rng.integers(0, 2, size=N_ENVS) for _ in range(STEPS))


def _canon(t) -> tuple:
    return (np.asarray(t[0], np.float32).tobytes(), int(t[1]), float(t[2]),
            np.asarray(t[3], np.float32).tobytes(), bool(t[4]), bool(t[5]))


# ---------------------------------------------------------------- references
def reference_store_step(memory, obs, actions, rewards, next_obs, terminated, truncated, resetting):
    """Store the rows of this step that are transitions; return who resets at the next step."""
    real = ~resetting
    memory.add_batch(obs[real], actions[real], rewards[real], next_obs[real], terminated[real],
                     truncated[real])
    return terminated | truncated


def reference_true_next_obs(next_obs, info):
    """``next_obs`` with the final observations of the episodes that just ended, as a new array."""
    true = np.array(next_obs)
    for i in np.flatnonzero(info.get("_final_obs", ())):
        true[i] = info["final_obs"][i]
    return true


def reference_hops(obs, next_obs, reach):
    """For each row, the smallest hop in 1..reach to a row whose obs has the bytes of its
    next_obs, 0 if none."""
    n = len(obs)
    keys = [np.ascontiguousarray(row).tobytes() for row in obs]
    out = []
    for k in range(n):
        want = np.ascontiguousarray(next_obs[k]).tobytes()
        out.append(next((h for h in range(1, reach + 1) if k + h < n and keys[k + h] == want), 0))
    return out


def reference_keep_rows(batch):
    """Each row of ``batch`` as an array of its own."""
    return [row.copy() for row in batch]


# ---------------------------------------------------------------- exercise 1: NEXT_STEP
def _drive(store_step) -> tuple:
    """Run 4 CartPoles for STEPS steps through ``store_step``; the memory and what it returned."""
    envs = cartpoles()
    obs, _ = envs.reset(seed=SEED)
    memory, resetting = ListMemory(), np.zeros(N_ENVS, bool)
    for step, actions in enumerate(_actions()):
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        returned = store_step(memory, obs, actions, rewards, next_obs, terminated, truncated,
                              resetting)
        _check_returned(returned, step, terminated | truncated, resetting)
        resetting = np.asarray(returned, bool)
        obs = next_obs
    return memory


def _check_returned(returned, step, ended, resetting) -> None:
    expect(returned is not None, "store_step to return the mask of the sub-environments that "
           "reset at the next step", "None", "return terminated | truncated: a sub-environment "
           "whose episode ends now spends the next step resetting")
    got = np.asarray(returned)
    expect(got.shape == ended.shape and got.dtype == np.bool_,
           f"a bool array of shape {ended.shape} (one flag per sub-environment)",
           f"{type(returned).__name__} {getattr(got, 'dtype', '')} of shape {got.shape}",
           "return terminated | truncated")
    if np.array_equal(got, ended):
        return
    hint = ("that is the mask you were given: the rows to leave out at the next step are those "
            "of the sub-environments whose episode ends at this step, terminated | truncated"
            if np.array_equal(got, resetting) else
            "a sub-environment resets at the step after its episode ends: return "
            "terminated | truncated")
    expect(False, f"the mask {ended.astype(int).tolist()} after step {step}",
           f"{got.astype(int).tolist()}", hint)


@functools.lru_cache(maxsize=1)
def _reference_rows() -> tuple:
    from ..rollout import rollout

    memory = ListMemory()
    batches = iter(_actions())
    rollout(cartpoles(), memory, STEPS, seed=SEED, policy=lambda _obs: next(batches),
            progress_bar=False)
    return tuple(_canon(t) for t in memory)


def verify_store_step(store_step) -> None:
    got = [_canon(t) for t in _drive(store_step)]
    want = list(_reference_rows())
    ends_want = sum(t[4] or t[5] for t in want)
    ends_got = sum(t[4] or t[5] for t in got)
    expect(ends_got == ends_want, f"{ends_want} transitions that end an episode (terminated or "
           "truncated)", f"{ends_got}", "the step that ends an episode is a real transition, the "
           "last of its episode: keep it. The row to leave out is the next step's, given by the "
           "mask resetting, not this step's terminated | truncated")
    bogus = [k for k, t in enumerate(got) if t[2] == 0.0]
    expect(not bogus, "no stored transition with reward 0 (CartPole pays 1 for every real step)",
           f"{len(bogus)} of them, the first at memory[{bogus[0]}]" if bogus else "",
           "those are the reset rows: the sub-environment spent that step resetting, from its "
           "final observation to a reset one. Leave out the rows where resetting is True: "
           "memory.add_batch(obs[~resetting], ...)")
    expect(len(got) == len(want), f"{len(want)} transitions after {STEPS} steps of {N_ENVS} "
           "CartPoles", f"{len(got)}", "store one row per sub-environment and step, except the "
           "rows where resetting is True")
    first = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), None)
    expect(first is None, "every transition as each sub-environment made it, in the order of the "
           "steps and then of the sub-environments", f"memory[{first}] differs",
           "store obs, actions, rewards, next_obs, terminated, truncated of the same rows, in "
           "that order, as the vector environment hands them over")


def store_step(answer) -> None:
    run_check("Exercise 1 (NEXT_STEP: leave out the reset rows)", answer, verify_store_step)


def working_store_step(answer):
    return working(answer, reference_store_step, verify_store_step, "store_step")


# ---------------------------------------------------------------- exercise 2: SAME_STEP
def _same_step_cases() -> list:
    """(next_obs, info, ended rows) from real SAME_STEP steps: none, one and two episodes ended."""
    envs = cartpoles(same_step=True)
    envs.reset(seed=SEED)
    cases, found = [], set()
    for actions in _actions():
        next_obs, _, terminated, truncated, info = envs.step(actions)
        ended = int((terminated | truncated).sum())
        if ended not in found and ended <= 2:
            found.add(ended)
            cases.append((next_obs, info, np.flatnonzero(terminated | truncated)))
        if len(found) == 3:
            break
    return cases


def verify_true_next_obs(true_next_obs) -> None:
    for next_obs, info, ended in _same_step_cases():
        given = next_obs.copy()
        try:
            got = true_next_obs(next_obs, info)
        except KeyError as exc:
            expect(False, f"true_next_obs to work at a step where {len(ended)} episodes ended",
                   f"KeyError {exc}", "when no episode ended, gymnasium leaves 'final_obs' and "
                   "'_final_obs' out of info: info.get('_final_obs') is None then")
        expect(np.array_equal(next_obs, given), "next_obs unchanged (it is also the next step's "
               "obs, where the sub-environments start their new episodes)",
               "it was changed in place", "build a new array, np.array(next_obs), and change that")
        expect(isinstance(got, np.ndarray) and got.shape == next_obs.shape,
               f"an array of shape {next_obs.shape}", f"{type(got).__name__}"
               + (f" of shape {got.shape}" if isinstance(got, np.ndarray) else ""),
               "return the array with the final observations put in")
        for i in range(len(next_obs)):
            want = info["final_obs"][i] if i in ended else next_obs[i]
            what = "its final observation, info['final_obs'][i]" if i in ended else \
                "next_obs[i] as handed over: its episode goes on"
            expect(np.array_equal(got[i], want), f"row {i} to be {what}",
                   "the reset observation" if i in ended and np.array_equal(got[i], next_obs[i])
                   else "something else",
                   "the rows to change are those where info['_final_obs'] is True"
                   if i in ended else "change only the rows where info['_final_obs'] is True "
                   "(when no episode ended, gymnasium leaves that key out of info)")


def true_next_obs(answer) -> None:
    run_check("Exercise 2 (SAME_STEP: the final observations from info)", answer,
              verify_true_next_obs)


def working_true_next_obs(answer):
    return working(answer, reference_true_next_obs, verify_true_next_obs, "true_next_obs")


# ---------------------------------------------------------------- exercise 3: chains by content
def _bits(*words) -> np.ndarray:
    return np.array(words, np.uint32).view(np.float32)


def _hop_cases() -> list:
    """(obs, next_obs, reach, what) cases where a careless comparison goes wrong."""
    rng = np.random.default_rng(SEED)
    three = []  # three environments in turn, chained: the successor is 3 rows on
    state = [rng.standard_normal(2).astype(np.float32) for _ in range(3)]
    obs, nxt = [], []
    for t in range(8):
        for e in range(3):
            new = rng.standard_normal(2).astype(np.float32)
            obs.append(state[e])
            nxt.append(new)
            state[e] = new
    three = (np.array(obs), np.array(nxt), 4, "three environments in turn")
    two = (np.array(obs[:4]), np.array(nxt[:4]), 3, "three environments, reach 3")
    zero, neg = _bits(0, 0), _bits(0x80000000, 0)
    nan_a, nan_b = _bits(0x7FC00000, 7), _bits(0x7FC00001, 7)
    signs = (np.array([_bits(1, 1), neg, nan_a, _bits(2, 2)]),
             np.array([zero, nan_a, _bits(3, 3), _bits(4, 4)]), 3,
             "-0.0 where 0.0 was, and NaNs")
    payload = (np.array([_bits(1, 1), nan_b]), np.array([nan_a, _bits(2, 2)]), 3,
               "a NaN with other bits")
    far = (np.array([_bits(9, 9), _bits(1, 1), _bits(2, 2), _bits(5, 5)]),
           np.array([_bits(5, 5), _bits(2, 2), _bits(6, 6), _bits(7, 7)]), 2,
           "a successor farther than reach")
    twice = (np.array([_bits(1, 1), _bits(5, 5), _bits(5, 5)]),
             np.array([_bits(5, 5), _bits(6, 6), _bits(7, 7)]), 4, "two rows with that obs")
    return [three, two, signs, payload, far, twice]


def verify_hops(hops) -> None:
    for obs, next_obs, reach, what in _hop_cases():
        want = reference_hops(obs, next_obs, reach)
        try:
            got = hops(obs, next_obs, reach)
        except IndexError as exc:
            expect(False, f"hops for {len(obs)} rows ({what}, reach {reach})",
                   f"IndexError ({exc})", "stay inside the batch: row k + h exists only while "
                   "k + h < len(obs)")
        expect(got is not None and len(got) == len(obs), f"one hop per row, {len(obs)} of them",
               "None" if got is None else f"{len(got)}", "return a list with a hop for every row")
        got = [int(h) for h in got]
        if got == want:
            continue
        k = next(k for k, (a, b) in enumerate(zip(got, want)) if a != b)
        expect(False, f"hops {want} ({what}, reach {reach})", f"{got}", _hop_hint(
            obs, next_obs, reach, k, got[k], want[k]))


def _hop_hint(obs, next_obs, reach, k, got, want) -> str:
    n = len(obs)
    if got > reach:
        return f"a hop is at most reach ({reach}): look at rows k + 1 to k + reach only"
    if got and k + got < n and obs[k + got].tobytes() != next_obs[k].tobytes():
        return (f"row {k + got}'s obs is not row {k}'s next_obs bit for bit: as numbers -0.0 "
                "equals 0.0, and a comparison that treats NaNs as equal joins NaNs with other "
                "bits. Compare bytes: a.tobytes() == b.tobytes()")
    if want and not got and np.isnan(next_obs[k]).any():
        return ("NaN != NaN as numbers, yet the row holds the very same bits: compare bytes, "
                "a.tobytes() == b.tobytes()")
    if want == reach and not got:
        return "rows k + 1 to k + reach include k + reach: range(1, reach + 1)"
    if want > 1 and not got:
        return ("the next row belongs to another environment: look further on, up to reach "
                "rows")
    if want and got > want:
        return "the smallest hop: the first row on with those bytes"
    return "for h in 1..reach, the first row k + h (inside the batch) whose obs has the bytes of " \
           "next_obs[k]; 0 if there is none"


def hops(answer) -> None:
    run_check("Exercise 3 (chains found by content)", answer, verify_hops)


# ---------------------------------------------------------------- exercise 4: row views
def verify_keep_rows(keep_rows) -> None:
    batch = np.random.default_rng(SEED).integers(0, 256, size=(8, 84, 84), dtype=np.uint8)
    values = batch.copy()
    rows = keep_rows(batch)
    expect(rows is not None and len(rows) == 8, "8 rows, one per sub-environment",
           "None" if rows is None else f"{len(rows)}", "return a list of the batch's rows")
    for i, row in enumerate(rows):
        expect(isinstance(row, np.ndarray) and row.shape == (84, 84) and row.dtype == np.uint8,
               f"row {i} as a uint8 array of shape (84, 84)", f"{type(row).__name__}"
               + (f" {row.dtype} {row.shape}" if isinstance(row, np.ndarray) else ""),
               "keep each row as a numpy array (a copy), not as Python lists")
        expect(np.array_equal(row, values[i]), f"row {i} to hold the batch's row {i}",
               "other values", "copy the rows in order")
    base = next((row.base for row in rows if row.base is not None), None)
    expect(base is None, "rows that own their data (row.base is None)",
           f"a row whose .base is an array of {base.nbytes:,} bytes" if base is not None else "",
           "batch[i] is a view: it keeps the whole batch alive. " + (
               "Copying the whole batch first does not help: each row is then a view of the "
               "copy, which stays alive instead. " if base is not batch else "")
           + "Copy each row: [row.copy() for row in batch]")
    alive = weakref.ref(batch)
    del batch
    gc.collect()
    expect(alive() is None, "the batch freed once only the rows are kept", "it is still alive",
           "something in the rows still refers to the batch")
    rows[0][0, 0] = 255
    expect(rows[1][0, 0] == values[1][0, 0], "rows independent of each other",
           "a change to row 0 showed in row 1", "copy each row on its own")


def keep_rows(answer) -> None:
    run_check("Exercise 4 (rows that do not keep their batch)", answer, verify_keep_rows)
