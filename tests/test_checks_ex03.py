"""The checks of exercises 03 (circular pool): right answers pass, typical wrong ones are
rejected with the teaching message, unfinished ones say "not yet"."""

from __future__ import annotations

import numpy as np
import pytest

import rlmemlib as rm
from rlmemlib.checks import CheckFailed, ExerciseError, ex03

FIELDS = ex03.FIELDS


@pytest.fixture(autouse=True)
def learner_mode(monkeypatch):
    monkeypatch.delenv("RLMEMLIB_CHECK_MODE", raising=False)


# ------------------------------------------------------------------ exercise 1: choosing dtypes
def arrays_in(obs=np.float32, action=np.uint8, reward=np.float32, flags=np.bool_):
    """A ring_arrays answer with the given dtypes."""
    def ring_arrays(capacity):
        return {"obs": np.zeros((capacity, 4), obs), "action": np.zeros(capacity, action),
                "reward": np.zeros(capacity, reward), "next_obs": np.zeros((capacity, 4), obs),
                "terminated": np.zeros(capacity, flags), "truncated": np.zeros(capacity, flags)}
    return ring_arrays


def right_ring_arrays(capacity):
    obs = np.zeros((capacity, 4), np.float32)
    next_obs = np.zeros((capacity, 4), np.float32)
    action = np.zeros(capacity, np.uint8)
    reward = np.zeros(capacity, np.float32)
    terminated = np.zeros(capacity, np.bool_)
    truncated = np.zeros(capacity, np.bool_)
    return {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs,
            "terminated": terminated, "truncated": truncated}


def stub_ring_arrays(capacity):
    obs = ...
    next_obs = ...
    action = ...
    reward = ...
    terminated = ...
    truncated = ...
    return {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs,
            "terminated": terminated, "truncated": truncated}


def float64_everywhere(capacity):
    """numpy's default dtype for every field: the typical first attempt."""
    return {name: np.zeros((capacity, 4) if name.endswith("obs") else capacity) for name in FIELDS}


def one_obs_array(capacity):
    arrays = right_ring_arrays(capacity)
    arrays["next_obs"] = arrays["obs"]
    return arrays


def fixed_capacity(capacity):
    return right_ring_arrays(200)


def flat_obs(capacity):
    arrays = right_ring_arrays(capacity)
    arrays["obs"] = np.zeros(capacity * 4, np.float32)
    return arrays


@pytest.mark.parametrize("right", [right_ring_arrays, arrays_in(action=np.int8),
                                   arrays_in(flags=np.uint8), ex03.reference_ring_arrays],
                         ids=["bool-uint8", "int8-action", "uint8-flags", "reference"])
def test_ex1_right_answers_pass(right):
    ex03.verify_ring_arrays(right)


@pytest.mark.parametrize("wrong, message", [
    (float64_everywhere, r"arrays\['obs'\] of dtype float32.*got float64: CartPole produces "
                         r"float32 observations.*8 bytes on each number"),
    (arrays_in(obs=np.float16), "about 3 significant digits.*float32"),
    (arrays_in(obs=np.int16), "cuts off their fractions"),
    (arrays_in(action=np.int64), "two actions, 0 and 1, fit in one byte.*int64 spends 8 bytes"),
    (arrays_in(action=np.float32), "an action is an index"),
    (arrays_in(action=np.bool_), "not a yes or no"),
    (arrays_in(reward=np.float64), "doubles the bytes of every reward"),
    (arrays_in(reward=np.float16), "0.1 comes back as 0.0999755859375"),
    (arrays_in(reward=np.int8), "real number"),
    (arrays_in(flags=np.float32), r"np.bool_ stores it in one byte, float32 spends 4"),
    (one_obs_array, "two names for one array"),
    (fixed_capacity, r"shape == \(3, 4\) for capacity 3"),
    (flat_obs, "one row per transition"),
], ids=["float64-everywhere", "float16-obs", "int-obs", "int64-action", "float-action",
        "bool-action", "float64-reward", "float16-reward", "int-reward", "float32-flags",
        "shared-obs-array", "fixed-capacity", "flat-obs"])
def test_ex1_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex03.verify_ring_arrays(wrong)


# ------------------------------------------------------------------ exercise 2: a numpy ring
class RightRing:
    def __init__(self, capacity):
        self.capacity = capacity
        self.arrays = right_ring_arrays(capacity)
        self.start = 0
        self.len = 0

    def __len__(self):
        return self.len

    def _row_for_add(self):
        row = (self.start + self.len) % self.capacity
        if self.len == self.capacity:
            self.start = (self.start + 1) % self.capacity
        else:
            self.len += 1
        return row

    def add(self, obs, action, reward, next_obs, terminated, truncated):
        row = self._row_for_add()
        for name, value in zip(FIELDS, (obs, action, reward, next_obs, terminated, truncated)):
            self.arrays[name][row] = value

    def _row(self, i):
        return (self.start + i % self.len) % self.capacity

    def __getitem__(self, i):
        if not -self.len <= i < self.len:
            raise IndexError(f"index {i} is out of range for {self.len} transitions")
        return rm.Transition(*(self.arrays[name][self._row(i)] for name in FIELDS))


class StubRing(RightRing):
    def __getitem__(self, i):
        row = ...
        return rm.Transition(*(self.arrays[name][row] for name in FIELDS))


class NeverWraps(RightRing):
    def _row_for_add(self):
        row = self.start + self.len  # no % capacity
        if self.len == self.capacity:
            self.start = (self.start + 1) % self.capacity
        else:
            self.len += 1
        return row


class StuckInTheLastRow(RightRing):
    def _row_for_add(self):
        row = min(self.len, self.capacity - 1)
        self.len = min(self.len + 1, self.capacity)
        return row


class NeverStopsGrowing(RightRing):
    def _row_for_add(self):
        row = (self.start + self.len) % self.capacity
        self.len += 1
        return row


class StartNeverMoves(RightRing):
    def _row_for_add(self):
        row = (self.start + self.len) % self.capacity
        self.len = min(self.len + 1, self.capacity)
        return row


class IndexIgnoresStart(RightRing):
    def _row(self, i):
        return i % self.len


class NegativeIndexFromCapacity(RightRing):
    def _row(self, i):
        return (self.start + i) % self.capacity


class IndexOffByOne(RightRing):
    def _row(self, i):
        return (self.start + i % self.len + 1) % self.capacity


class IndexWithoutWrap(RightRing):
    def _row(self, i):
        return self.start + i % self.len


class CursorRing(RightRing):
    """Right too: the lesson's bookkeeping, a cursor and a size, with start derived from them."""

    def __init__(self, capacity):
        super().__init__(capacity)
        self.cursor = 0
        del self.start

    def _row_for_add(self):
        row = self.cursor
        self.cursor = (row + 1) % self.capacity
        self.len = min(self.len + 1, self.capacity)
        return row

    def _row(self, i):
        return (self.cursor - self.len + i % self.len) % self.capacity


def test_ex2_right_answers_pass():
    ex03.verify_numpy_ring(RightRing)
    ex03.verify_numpy_ring(CursorRing)


@pytest.mark.parametrize("wrong, message", [
    (NeverWraps, r"add #11 into a ring of 10 to work, got IndexError.*the row after the last "
                 r"one is row 0 again"),
    (StuckInTheLastRow, "kept writing into the last row"),
    (NeverStopsGrowing, r"expected len\(memory\) <= 10, the capacity, got len\(memory\) == 11 "
                        r"after 11 adds: did add\(\) overwrite the oldest row once the ring was full\?"),
    (StartNeverMoves, r"move self.start on by one row"),
    (IndexIgnoresStart, r"memory\[i\] returned row i.*oldest sits at row self.start"),
    (NegativeIndexFromCapacity, r"memory\[-1\] to be step 0, the newest, with 1 held in a "
                                r"ring of 10, got a row holding no transition added.*i % self.len"),
    (IndexOffByOne, "off by one"),
    (IndexWithoutWrap, r"IndexError.*wraps around"),
], ids=lambda x: x.__name__ if isinstance(x, type) else "")
def test_ex2_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex03.verify_numpy_ring(wrong)


def test_ex2_rlmemlib_fallback_passes_the_check():
    ex03.verify_numpy_ring(ex03.CartPolePool)


# ------------------------------------------------------------------ exercise 3: next_obs at an end
class SharedRows:
    """The given part of exercise 3, as in the notebook."""

    def __init__(self, capacity):
        self.capacity, self.rows = capacity, capacity + 1
        self.start, self.len = 0, 0
        self.obs = np.zeros((self.rows, 4), np.float32)
        self.action = np.zeros(self.rows, np.uint8)
        self.reward = np.zeros(self.rows, np.float32)
        self.terminated = np.zeros(self.rows, np.bool_)
        self.truncated = np.zeros(self.rows, np.bool_)
        self.finals = {}

    def __len__(self):
        return self.len

    def add(self, obs, action, reward, next_obs, terminated, truncated):
        row = (self.start + self.len) % self.rows
        self.obs[row], self.action[row], self.reward[row] = obs, action, reward
        self.terminated[row], self.truncated[row] = terminated, truncated
        self.obs[(row + 1) % self.rows] = next_obs
        if self.len == self.capacity:
            self.start = (self.start + 1) % self.rows
        else:
            self.len += 1
        self.keep_final(row, next_obs, terminated, truncated)

    def __getitem__(self, i):
        if not -self.len <= i < self.len:
            raise IndexError(f"index {i} is out of range for {self.len} transitions")
        row = (self.start + i % self.len) % self.rows
        return rm.Transition(self.obs[row], self.action[row], self.reward[row],
                             self.next_obs_of(row), self.terminated[row], self.truncated[row])


class RightShared(SharedRows):
    def keep_final(self, row, next_obs, terminated, truncated):
        self.finals.pop(row, None)
        if terminated or truncated:
            self.finals[row] = next_obs.copy()

    def next_obs_of(self, row):
        final = self.finals.get(row)
        return self.obs[(row + 1) % self.rows] if final is None else final


class EvictsOnTheWayOut(RightShared):
    """Right too: forgets the final of the row that add() has just evicted."""

    def keep_final(self, row, next_obs, terminated, truncated):
        if self.len == self.capacity:
            self.finals.pop((row + 1) % self.rows, None)  # the old start, evicted by this add
        self.finals.pop(row, None)
        if terminated or truncated:
            self.finals[row] = next_obs.copy()


class StubShared(SharedRows):
    def keep_final(self, row, next_obs, terminated, truncated):
        ...

    def next_obs_of(self, row):
        final = ...
        return ...


class BootstrapsFromTheNextRow(RightShared):
    """The bootstrapping trap: next_obs is always the next row's obs."""

    def keep_final(self, row, next_obs, terminated, truncated):
        pass

    def next_obs_of(self, row):
        return self.obs[(row + 1) % self.rows]


class KeepsButNeverReads(RightShared):
    def next_obs_of(self, row):
        return self.obs[(row + 1) % self.rows]


class NeverCleaned(RightShared):
    """A side store that is never cleaned when its transition is overwritten."""

    def keep_final(self, row, next_obs, terminated, truncated):
        if terminated or truncated:
            self.finals[row] = next_obs.copy()


class OnlyTerminated(RightShared):
    def keep_final(self, row, next_obs, terminated, truncated):
        self.finals.pop(row, None)
        if terminated:
            self.finals[row] = next_obs.copy()


class KeepsTheCallersArray(RightShared):
    def keep_final(self, row, next_obs, terminated, truncated):
        self.finals.pop(row, None)
        if terminated or truncated:
            self.finals[row] = next_obs


class ForgetsEverythingEachAdd(RightShared):
    def keep_final(self, row, next_obs, terminated, truncated):
        self.finals.clear()
        if terminated or truncated:
            self.finals[row] = next_obs.copy()


class SeqKeyedNeverCleaned(RightShared):
    """Keys by a running count: right values, but the store grows with every episode end."""

    def __init__(self, capacity):
        super().__init__(capacity)
        self.added = 0
        self.row_seq = {}

    def keep_final(self, row, next_obs, terminated, truncated):
        self.row_seq[row] = self.added
        if terminated or truncated:
            self.finals[self.added] = next_obs.copy()
        self.added += 1

    def next_obs_of(self, row):
        final = self.finals.get(self.row_seq[row])
        return self.obs[(row + 1) % self.rows] if final is None else final


def test_ex3_right_answers_pass():
    ex03.verify_shared_ring(RightShared)
    ex03.verify_shared_ring(EvictsOnTheWayOut)


@pytest.mark.parametrize("wrong, message", [
    (BootstrapsFromTheNextRow, r"which ended its episode \(terminated\), to have its final "
                               r"observation as next_obs, got the first observation of the next "
                               r"episode \(the bootstrapping trap\)"),
    (KeepsButNeverReads, "bootstrapping trap.*read it back in next_obs_of"),
    (ForgetsEverythingEachAdd, "bootstrapping trap"),
    (NeverCleaned, "did not end an episode.*final observation of an older episode.*overwritten"),
    (SeqKeyedNeverCleaned, r"at most \d+ final observations? in self.finals.*transitions long gone"),
    (OnlyTerminated, r"which was cut by the time limit \(truncated\).*a time limit ends an "
                     r"episode too"),
    (KeepsTheCallersArray, r"keep a copy, next_obs.copy\(\)"),
], ids=lambda x: x.__name__ if isinstance(x, type) else "")
def test_ex3_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex03.verify_shared_ring(wrong)


def test_ex3_rlmemlib_fallback_passes_the_check():
    ex03.verify_shared_ring(ex03.SharedCartPolePool)


def test_ex3_the_check_data_has_both_kinds_of_episode_end_and_chains_otherwise():
    data = ex03._episodes()
    terminated = [k for k, t in enumerate(data) if t[4]]
    truncated = [k for k, t in enumerate(data) if t[5] and not t[4]]
    assert len(terminated) >= 15 and len(truncated) >= 3
    assert terminated[0] < truncated[0]  # a ring that keeps no final fails at a termination first
    for k in range(len(data) - 1):
        ended = data[k][4] or data[k][5]
        assert np.array_equal(data[k][3], data[k + 1][0]) != ended, k


# ------------------------------------------------------------------ modes and fallbacks
@pytest.mark.parametrize("check, stub", [
    (ex03.ring_arrays, stub_ring_arrays), (ex03.numpy_ring, StubRing),
    (ex03.shared_ring, StubShared)])
def test_an_unfinished_stub_says_not_yet_in_learner_mode(check, stub, capsys):
    check(stub)
    assert "not yet" in capsys.readouterr().out


@pytest.mark.parametrize("check, right", [
    (ex03.ring_arrays, right_ring_arrays), (ex03.numpy_ring, RightRing),
    (ex03.shared_ring, RightShared)])
def test_a_right_answer_prints_ok_in_learner_mode(check, right, capsys):
    check(right)
    assert capsys.readouterr().out.endswith(": ok\n")


@pytest.mark.parametrize("check, stub", [
    (ex03.ring_arrays, stub_ring_arrays), (ex03.numpy_ring, StubRing),
    (ex03.shared_ring, StubShared)])
def test_an_unfinished_stub_is_an_error_in_solution_mode(check, stub, monkeypatch):
    monkeypatch.setenv("RLMEMLIB_CHECK_MODE", "solution")
    with pytest.raises(ExerciseError, match="gap"):
        check(stub)


def test_a_wrong_answer_raises_in_learner_mode():
    with pytest.raises(CheckFailed, match="float32"):
        ex03.ring_arrays(float64_everywhere)
    with pytest.raises(CheckFailed, match="capacity"):
        ex03.numpy_ring(NeverStopsGrowing)
    with pytest.raises(CheckFailed, match="bootstrapping trap"):
        ex03.shared_ring(BootstrapsFromTheNextRow)


def test_working_falls_back_to_rlmemlib_and_says_so(capsys):
    assert ex03.working_ring_arrays(float64_everywhere) is ex03.reference_ring_arrays
    assert ex03.working_numpy_ring(StubRing) is ex03.CartPolePool
    assert ex03.working_shared_ring(NeverCleaned) is ex03.SharedCartPolePool
    out = capsys.readouterr().out
    assert "Using rlmemlib's CartPolePool in place of your NumpyRing until it passes" in out
    assert "Using rlmemlib's SharedCartPolePool in place of your SharedRing" in out
    assert ex03.working_ring_arrays(right_ring_arrays) is right_ring_arrays
    assert ex03.working_numpy_ring(RightRing) is RightRing
    assert ex03.working_shared_ring(RightShared) is RightShared
    assert "Using your SharedRing." in capsys.readouterr().out
