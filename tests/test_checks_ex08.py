"""The checks of exercises 08 (vector environments): right answers pass, typical wrong ones are
rejected with the teaching message, unfinished ones say "not yet"."""

from __future__ import annotations

import numpy as np
import pytest

from rlmemlib.checks import CheckFailed, ExerciseError, ex08


@pytest.fixture(autouse=True)
def learner_mode(monkeypatch):
    monkeypatch.delenv("RLMEMLIB_CHECK_MODE", raising=False)


# ------------------------------------------------------------------ exercise 1: NEXT_STEP
def right_store_step(memory, obs, actions, rewards, next_obs, terminated, truncated, resetting):
    keep = ~resetting
    memory.add_batch(obs[keep], actions[keep], rewards[keep], next_obs[keep], terminated[keep],
                     truncated[keep])
    return terminated | truncated


def row_by_row(memory, obs, actions, rewards, next_obs, terminated, truncated, resetting):
    for i in range(len(obs)):
        if not resetting[i]:
            memory.add(obs[i], int(actions[i]), float(rewards[i]), next_obs[i], bool(terminated[i]),
                       bool(truncated[i]))
    return np.logical_or(terminated, truncated)


def stores_every_row(memory, obs, actions, rewards, next_obs, terminated, truncated, resetting):
    """The loop written for one environment: the reset rows go in too."""
    memory.add_batch(obs, actions, rewards, next_obs, terminated, truncated)
    return terminated | truncated


def drops_the_ends(memory, obs, actions, rewards, next_obs, terminated, truncated, resetting):
    """Filters with this step's flags: the real last transitions go, the reset rows stay."""
    keep = ~(terminated | truncated)
    memory.add_batch(obs[keep], actions[keep], rewards[keep], next_obs[keep], terminated[keep],
                     truncated[keep])
    return terminated | truncated


def returns_nothing(memory, obs, actions, rewards, next_obs, terminated, truncated, resetting):
    keep = ~resetting
    memory.add_batch(obs[keep], actions[keep], rewards[keep], next_obs[keep], terminated[keep],
                     truncated[keep])


def returns_the_old_mask(memory, obs, actions, rewards, next_obs, terminated, truncated, resetting):
    keep = ~resetting
    memory.add_batch(obs[keep], actions[keep], rewards[keep], next_obs[keep], terminated[keep],
                     truncated[keep])
    return resetting


def only_terminated(memory, obs, actions, rewards, next_obs, terminated, truncated, resetting):
    keep = ~resetting
    memory.add_batch(obs[keep], actions[keep], rewards[keep], next_obs[keep], terminated[keep],
                     truncated[keep])
    return terminated.copy()


def stores_obs_twice(memory, obs, actions, rewards, next_obs, terminated, truncated, resetting):
    keep = ~resetting
    memory.add_batch(obs[keep], actions[keep], rewards[keep], obs[keep], terminated[keep],
                     truncated[keep])
    return terminated | truncated


def stub_store_step(memory, obs, actions, rewards, next_obs, terminated, truncated, resetting):
    keep = ...
    return terminated | truncated


@pytest.mark.parametrize("right", [right_store_step, row_by_row, ex08.reference_store_step])
def test_ex1_right_answers_pass(right):
    ex08.verify_store_step(right)


@pytest.mark.parametrize("wrong, message", [
    (stores_every_row, r"no stored transition with reward 0.*the reset rows.*obs\[~resetting\]"),
    (drops_the_ends, r"transitions that end an episode.*keep it.*not this step's"),
    (returns_nothing, r"return the mask.*got None"),
    (returns_the_old_mask, r"that is the mask you were given"),
    (stores_obs_twice, r"memory\[0\] differs"),
], ids=["every-row", "drops-the-ends", "returns-none", "old-mask", "obs-as-next-obs"])
def test_ex1_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex08.verify_store_step(wrong)


def test_ex1_a_mask_of_terminations_only_is_caught_when_a_time_limit_comes():
    """CartPole's random episodes never reach the 500-step limit: the check's 300 steps have no
    truncation, so this wrong answer passes there; the hidden test's truncation catches it."""
    ex08.verify_store_step(only_terminated)
    memory = ex08.ListMemory()
    obs = np.zeros((2, 4), np.float32)
    got = only_terminated(memory, obs, np.zeros(2, np.int64), np.ones(2), obs + 1,
                          np.zeros(2, bool), np.array([False, True]), np.zeros(2, bool))
    assert not np.array_equal(got, [False, True])


# ------------------------------------------------------------------ exercise 2: SAME_STEP
def right_true_next_obs(next_obs, info):
    true = next_obs.copy()
    if "_final_obs" in info:
        for i in np.flatnonzero(info["_final_obs"]):
            true[i] = info["final_obs"][i]
    return true


def in_place(next_obs, info):
    for i in np.flatnonzero(info.get("_final_obs", [])):
        next_obs[i] = info["final_obs"][i]
    return next_obs


def always_indexes_info(next_obs, info):
    true = next_obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        true[i] = info["final_obs"][i]
    return true


def as_handed_over(next_obs, info):
    return next_obs.copy()


def every_row_from_info(next_obs, info):
    true = next_obs.copy()
    for i in range(len(true)):
        if info.get("final_obs") is not None and info["final_obs"][i] is not None:
            true[i] = info["final_obs"][i]
        else:
            true[i] = 0
    return true


@pytest.mark.parametrize("right", [right_true_next_obs, ex08.reference_true_next_obs])
def test_ex2_right_answers_pass(right):
    ex08.verify_true_next_obs(right)


@pytest.mark.parametrize("wrong, message", [
    (in_place, r"next_obs unchanged.*changed in place.*np.array\(next_obs\)"),
    (always_indexes_info, r"KeyError.*leaves 'final_obs' and '_final_obs' out of info"),
    (as_handed_over, r"its final observation.*got the reset observation"),
    (every_row_from_info, r"next_obs\[i\] as handed over.*change only the rows"),
], ids=["in-place", "key-error", "unchanged", "every-row"])
def test_ex2_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex08.verify_true_next_obs(wrong)


# ------------------------------------------------------------------ exercise 3: chains by content
def right_hops(obs, next_obs, reach):
    out = []
    for k in range(len(obs)):
        hop = 0
        for h in range(1, reach + 1):
            if k + h < len(obs) and obs[k + h].tobytes() == next_obs[k].tobytes():
                hop = h
                break
        out.append(hop)
    return out


def by_value(obs, next_obs, reach):
    out = []
    for k in range(len(obs)):
        hits = [h for h in range(1, reach + 1) if k + h < len(obs) and np.array_equal(obs[k + h], next_obs[k])]
        out.append(hits[0] if hits else 0)
    return out


def nan_as_equal(obs, next_obs, reach):
    out = []
    for k in range(len(obs)):
        hits = [h for h in range(1, reach + 1)
                if k + h < len(obs) and np.array_equal(obs[k + h], next_obs[k], equal_nan=True)]
        out.append(hits[0] if hits else 0)
    return out


def next_row_only(obs, next_obs, reach):
    return [1 if k + 1 < len(obs) and obs[k + 1].tobytes() == next_obs[k].tobytes() else 0
            for k in range(len(obs))]


def short_of_reach(obs, next_obs, reach):
    return [next((h for h in range(1, reach) if k + h < len(obs)
                  and obs[k + h].tobytes() == next_obs[k].tobytes()), 0) for k in range(len(obs))]


def past_reach(obs, next_obs, reach):
    return [next((h for h in range(1, len(obs)) if k + h < len(obs)
                  and obs[k + h].tobytes() == next_obs[k].tobytes()), 0) for k in range(len(obs))]


def past_the_end(obs, next_obs, reach):
    return [next((h for h in range(1, reach + 1) if obs[k + h].tobytes() == next_obs[k].tobytes()), 0)
            for k in range(len(obs))]


def last_match(obs, next_obs, reach):
    return [max([h for h in range(1, reach + 1) if k + h < len(obs)
                 and obs[k + h].tobytes() == next_obs[k].tobytes()] or [0]) for k in range(len(obs))]


@pytest.mark.parametrize("right", [right_hops, ex08.reference_hops])
def test_ex3_right_answers_pass(right):
    ex08.verify_hops(right)


@pytest.mark.parametrize("wrong, message", [
    (by_value, r"bit for bit: as numbers -0.0 equals 0.0"),
    (nan_as_equal, r"not row 0's next_obs bit for bit.*a.tobytes\(\) == b.tobytes\(\)"),
    (next_row_only, r"another environment: look further on"),
    (short_of_reach, r"include k \+ reach: range\(1, reach \+ 1\)"),
    (past_reach, r"a hop is at most reach"),
    (past_the_end, r"IndexError.*k \+ h < len\(obs\)"),
    (last_match, r"the smallest hop"),
], ids=["by-value", "nan-equal", "next-row", "short-of-reach", "past-reach", "past-the-end", "last"])
def test_ex3_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex08.verify_hops(wrong)


def test_ex3_comparing_numbers_is_caught_on_minus_zero():
    """-0.0 == 0.0: a value comparison links row 0 to row 1 in the signs case."""
    with pytest.raises(CheckFailed, match="bit for bit"):
        ex08.verify_hops(lambda o, n, r: by_value(o, n, r) if o.shape[0] == 4 and r == 3 else right_hops(o, n, r))


# ------------------------------------------------------------------ exercise 4: row views
def right_keep_rows(batch):
    return [np.array(row) for row in batch]


def views(batch):
    return list(batch)


def views_of_a_copy(batch):
    return list(batch.copy())


def as_lists(batch):
    return batch.tolist()


def one_copy_shared(batch):
    row = batch[0].copy()
    return [row] * len(batch)


@pytest.mark.parametrize("right", [right_keep_rows, ex08.reference_keep_rows])
def test_ex4_right_answers_pass(right):
    ex08.verify_keep_rows(right)


@pytest.mark.parametrize("wrong, message", [
    (views, r"row.base is None.*keeps the whole batch alive. Copy each row"),
    (views_of_a_copy, r"Copying the whole batch first does not help"),
    (as_lists, r"as a uint8 array of shape \(84, 84\).*got list"),
    (one_copy_shared, r"row 1 to hold the batch's row 1"),
], ids=["views", "views-of-copy", "lists", "one-row"])
def test_ex4_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex08.verify_keep_rows(wrong)


# ------------------------------------------------------------------ modes
@pytest.mark.parametrize("check, stub", [(ex08.store_step, stub_store_step)])
def test_unfinished_answers_say_not_yet_and_are_errors_in_solution_mode(check, stub, capsys,
                                                                         monkeypatch):
    check(stub)
    assert "not yet" in capsys.readouterr().out
    monkeypatch.setenv("RLMEMLIB_CHECK_MODE", "solution")
    with pytest.raises(ExerciseError):
        check(stub)


def test_nbgrader_stub_says_not_yet(capsys):
    def hops(obs, next_obs, reach):
        raise NotImplementedError()
    ex08.hops(hops)
    assert "not yet" in capsys.readouterr().out


def test_right_answers_print_ok(capsys):
    ex08.store_step(right_store_step)
    ex08.true_next_obs(right_true_next_obs)
    ex08.hops(right_hops)
    ex08.keep_rows(right_keep_rows)
    assert capsys.readouterr().out.count(": ok") == 4


def test_working_falls_back_to_rlmemlib(capsys):
    assert ex08.working_store_step(stores_every_row) is ex08.reference_store_step
    assert ex08.working_true_next_obs(right_true_next_obs) is right_true_next_obs
