"""The checks of exercises 02 (list memory): right answers pass, typical wrong ones get the teaching message."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest

import rlmemlib as rm
from rlmemlib.checks import CheckFailed, ex02


# ------------------------------------------------------------------ exercise 1: add and sample
class RightMemory:
    def __init__(self):
        self.items = []

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def add(self, obs, action, reward, next_obs, terminated, truncated):
        self.items.append((obs, action, reward, next_obs, terminated, truncated))

    def sample(self, batch_size, rng):
        idx = rng.integers(0, len(self), size=batch_size)
        picked = [self[i] for i in idx]
        return tuple(np.array(column) for column in zip(*picked))


class StubMemory(RightMemory):
    def add(self, obs, action, reward, next_obs, terminated, truncated):
        transition = ...
        self.items.append(transition)


class PythonRandomMemory(RightMemory):
    def sample(self, batch_size, rng):
        picked = random.choices(self.items, k=batch_size)
        return tuple(np.array(column) for column in zip(*picked))


class OwnGeneratorMemory(RightMemory):
    def sample(self, batch_size, rng):
        return super().sample(batch_size, np.random.default_rng(0))


class GlobalNumpyMemory(RightMemory):
    def sample(self, batch_size, rng):
        idx = np.random.randint(0, len(self), size=batch_size)
        return tuple(np.array(column) for column in zip(*[self[i] for i in idx]))


class OffByOneSample(RightMemory):
    def sample(self, batch_size, rng):
        idx = rng.integers(0, len(self) - 1, size=batch_size)   # never draws the newest
        return tuple(np.array(column) for column in zip(*[self[i] for i in idx]))


class UnstackedSample(RightMemory):
    def sample(self, batch_size, rng):
        return [self[i] for i in rng.integers(0, len(self), size=batch_size)]


class FixedSizeSample(RightMemory):
    def sample(self, batch_size, rng):
        return super().sample(32, rng)


class CopyingMemory(RightMemory):
    def add(self, obs, action, reward, next_obs, terminated, truncated):
        super().add(obs.copy(), action, reward, next_obs.copy(), terminated, truncated)


class SwappedFields(RightMemory):
    def add(self, obs, action, reward, next_obs, terminated, truncated):
        self.items.append((obs, reward, action, next_obs, terminated, truncated))


class PrependingMemory(RightMemory):
    def add(self, *transition):
        self.items.insert(0, transition)


def test_ex1_right_answer_passes():
    ex02.verify_list_memory(RightMemory)


@pytest.mark.parametrize("wrong, message", [
    (PythonRandomMemory, "seeded alike.*not from Python's random"),
    (GlobalNumpyMemory, "seeded alike.*np.random's global state"),
    (OwnGeneratorMemory, "ignores its rng"),
    (OffByOneSample, r"rng.integers\(0, len\(self\), size=batch_size\) draws"),
    (UnstackedSample, "six arrays|one numpy array"),
    (FixedSizeSample, "batch_size"),
    (CopyingMemory, "no copies"),
    (SwappedFields, "keep the order of the arguments"),
    (PrependingMemory, "append at the end"),
], ids=lambda x: x.__name__ if isinstance(x, type) else "")
def test_ex1_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex02.verify_list_memory(wrong)


def test_ex1_rlmemlib_memory_agrees_with_the_rule():
    # The reference the fallback hands out draws the same rows as the right answer.
    data = ex02._data()
    ours, theirs = RightMemory(), rm.ListMemory()
    for t in data:
        ours.add(*t)
        theirs.add(*t)
    for a, b in zip(ours.sample(64, np.random.default_rng(5)), theirs.sample(64, np.random.default_rng(5))):
        assert np.array_equal(a, b)


# ------------------------------------------------------------------ exercise 2: forget the oldest
class RightRing:
    def __init__(self, capacity):
        self.capacity = capacity
        self.items = []
        self.start = 0

    def __len__(self):
        return len(self.items)

    def add(self, obs, action, reward, next_obs, terminated, truncated):
        transition = (obs, action, reward, next_obs, terminated, truncated)
        if len(self.items) < self.capacity:
            self.items.append(transition)
        else:
            self._overwrite(transition)

    def _overwrite(self, transition):
        self.items[self.start] = transition
        self.start = (self.start + 1) % self.capacity

    def _position(self, i, n):
        return (self.start + i) % n

    def __getitem__(self, i):
        n = len(self.items)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for {n} transitions")
        return self.items[self._position(i, n)]


class StubRing(RightRing):
    def __getitem__(self, i):
        position = ...
        return ...


class NeverEvicts(RightRing):
    def _overwrite(self, transition):
        self.items.append(transition)


class EvictsTheNewest(RightRing):
    def _overwrite(self, transition):
        self.items[-1] = transition


class StartNeverMoves(RightRing):
    def _overwrite(self, transition):
        self.items[self.start] = transition


class StartNeverWraps(RightRing):
    def _overwrite(self, transition):
        self.items[self.start] = transition
        self.start += 1


class IndexIgnoresStart(RightRing):
    def _position(self, i, n):
        return i


class IndexOffByOne(RightRing):
    def _position(self, i, n):
        return (self.start + i + 1) % n


class IndexWithoutWrap(RightRing):
    def _position(self, i, n):
        return self.start + i


class PopsTheFront(RightRing):
    """Right, too: the lesson's list.pop(0) eviction, start stays 0."""
    def _overwrite(self, transition):
        self.items.pop(0)
        self.items.append(transition)


def test_ex2_right_answers_pass():
    ex02.verify_ring_memory(RightRing)
    ex02.verify_ring_memory(PopsTheFront)


@pytest.mark.parametrize("wrong, message", [
    (NeverEvicts, r"len\(memory\) <= 10, the capacity, got len\(memory\) == 11 after 11 adds: "
                  r"did add\(\) overwrite the oldest slot once the memory was full\?"),
    (EvictsTheNewest, "overwrote the newest slot"),
    (StartNeverMoves, r"self.start == 1 after 11 adds.*move self.start on by one"),
    (StartNeverWraps, "IndexError.*go back to 0"),
    (IndexIgnoresStart, "returned list position i"),
    (IndexOffByOne, "off by one"),
    (IndexWithoutWrap, r"IndexError.*\(self.start \+ i\) % len\(self.items\)"),
], ids=lambda x: x.__name__ if isinstance(x, type) else "")
def test_ex2_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex02.verify_ring_memory(wrong)


def test_ex2_rlmemlib_fallback_passes_its_own_invariants():
    # The fallback has no .items/.start, so only the logical view is checked: it must pass.
    ex02.verify_ring_memory(rm.ListMemory)


# ------------------------------------------------------------------ exercise 3: bytes per transition
def right_bytes(fill):
    memory, traced = rm.measure.footprint(fill)
    return traced.current / len(memory)


def stub_bytes(fill):
    memory, traced = ...
    return ...


def test_ex3_right_answer_passes():
    ex02.verify_bytes_per_transition(right_bytes)


@pytest.mark.parametrize("wrong, message", [
    (lambda fill: sys.getsizeof(fill()) / len(fill()), "sys.getsizeof prices the list alone"),
    (lambda fill: (lambda m: m.peak / len(fill()))(rm.measure.footprint(fill)[1]), "peak"),
    (lambda fill: (lambda m: rm.measure.footprint(lambda: None)[1].current / len(m))(fill()),
     "must run while tracemalloc traces"),
    (lambda fill: rm.measure.footprint(fill)[1].current, "divide by len"),
], ids=["getsizeof", "peak", "measured-nothing", "not-divided"])
def test_ex3_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex02.verify_bytes_per_transition(wrong)


def test_ex3_the_check_sees_a_memory_not_only_arrays():
    # A list of arrays passes the first probes; a rollout memory must weigh in at its real size.
    def tuples_only(fill):
        memory, traced = rm.measure.footprint(fill)
        per = traced.current / len(memory)
        return per if isinstance(memory, list) else 100.0

    with pytest.raises(CheckFailed, match="tuples and arrays"):
        ex02.verify_bytes_per_transition(tuples_only)


# ------------------------------------------------------------------ modes and fallbacks
@pytest.mark.parametrize("check, stub", [
    (ex02.list_memory, StubMemory), (ex02.ring_memory, StubRing),
    (ex02.bytes_per_transition, stub_bytes)])
def test_an_unfinished_stub_says_not_yet_in_learner_mode(check, stub, monkeypatch, capsys):
    monkeypatch.delenv("RLMEMLIB_CHECK_MODE", raising=False)
    check(stub)
    assert "not yet" in capsys.readouterr().out


@pytest.mark.parametrize("check, right", [
    (ex02.list_memory, RightMemory), (ex02.ring_memory, RightRing),
    (ex02.bytes_per_transition, right_bytes)])
def test_a_right_answer_prints_ok_in_learner_mode(check, right, monkeypatch, capsys):
    monkeypatch.delenv("RLMEMLIB_CHECK_MODE", raising=False)
    check(right)
    assert capsys.readouterr().out.endswith(": ok\n")


def test_a_wrong_answer_raises_in_learner_mode(monkeypatch):
    monkeypatch.delenv("RLMEMLIB_CHECK_MODE", raising=False)
    with pytest.raises(CheckFailed, match="capacity"):
        ex02.ring_memory(NeverEvicts)


def test_working_falls_back_to_rlmemlib_and_says_so(capsys):
    assert ex02.working_ring_memory(StubRing) is rm.ListMemory
    assert "Using rlmemlib's ListMemory in place of your RingListMemory" in capsys.readouterr().out
    assert ex02.working_ring_memory(EvictsTheNewest) is rm.ListMemory
    assert ex02.working_list_memory(PythonRandomMemory) is rm.ListMemory
    assert ex02.working_ring_memory(RightRing) is RightRing
    assert ex02.working_list_memory(RightMemory) is RightMemory
    assert "Using your ListMemory." in capsys.readouterr().out


def test_the_check_data_tells_every_step_apart():
    data = ex02._data()
    assert len({ex02._step_of(t) for t in data}) == len(data) == 200
