"""The checks of exercises 04 (object recycling): right answers pass, typical wrong ones are
rejected with the teaching message, unfinished ones say "not yet"."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import rlmemlib as rm
from rlmemlib.checks import CheckFailed, ExerciseError, ex04


@pytest.fixture(autouse=True)
def learner_mode(monkeypatch):
    monkeypatch.delenv("RLMEMLIB_CHECK_MODE", raising=False)


# ------------------------------------------------------------------ exercise 1: blocks kept per add
def right_blocks_per_add(mem, transitions):
    gc.collect()
    with rm.measure.traced() as m:
        for t in transitions:
            mem.add(*t)
    return m.blocks / len(transitions)


def test_ex1_right_answer_passes(capsys):
    ex04.blocks_per_add(right_blocks_per_add)
    assert "Exercise 1 (blocks kept per add): ok" in capsys.readouterr().out


def test_ex1_unfinished_says_not_yet(capsys):
    def blocks_per_add(mem, transitions):
        kept = ...
        return ...

    ex04.blocks_per_add(blocks_per_add)
    assert "not yet" in capsys.readouterr().out


def test_ex1_total_instead_of_per_add_is_rejected():
    def total(mem, transitions):
        with rm.measure.traced() as m:
            for t in transitions:
                mem.add(*t)
        return m.blocks

    with pytest.raises(CheckFailed, match="divide the blocks by the number of adds"):
        ex04.verify_blocks_per_add(total)
    with pytest.raises(CheckFailed, match="total for all the adds"):
        ex04.verify_blocks_per_add(lambda mem, ts: float(total(mem, ts)))


def test_ex1_bytes_instead_of_blocks_is_rejected():
    def bytes_per_add(mem, transitions):
        with rm.measure.traced() as m:
            for t in transitions:
                mem.add(*t)
        return m.current / len(transitions)

    with pytest.raises(CheckFailed, match="looks like bytes"):
        ex04.verify_blocks_per_add(bytes_per_add)


def test_ex1_adds_outside_the_traced_block_are_rejected():
    def outside(mem, transitions):
        with rm.measure.traced() as m:
            pass
        for t in transitions:
            mem.add(*t)
        return m.blocks / len(transitions)

    with pytest.raises(CheckFailed, match="inside the `with rm.measure.traced"):
        ex04.verify_blocks_per_add(outside)


def test_ex1_fallback_is_rlmemlibs_and_says_so(capsys):
    assert ex04.working_blocks_per_add(lambda mem, ts: ...) is ex04.reference_blocks_per_add
    assert "in place of your blocks_per_add" in capsys.readouterr().out
    assert ex04.working_blocks_per_add(right_blocks_per_add) is right_blocks_per_add


# ------------------------------------------------------------------ exercise 2: a ring of records
class Record:
    __slots__ = ("obs", "action", "reward", "next_obs", "terminated", "truncated")

    def __init__(self, spec):
        self.obs = np.zeros(spec.obs_shape, spec.obs_dtype)
        self.next_obs = np.zeros(spec.obs_shape, spec.obs_dtype)
        self.action, self.reward = 0, 0.0
        self.terminated = self.truncated = False


class Ring:
    def __init__(self, capacity, spec):
        self.capacity, self.spec = capacity, spec
        self.records = [Record(spec) for _ in range(capacity)]
        self.start, self.len = 0, 0

    def __len__(self):
        return self.len

    def __getitem__(self, i):
        r = self.records[(self.start + i) % self.capacity]
        return rm.Transition(r.obs.copy(), r.action, r.reward, r.next_obs.copy(),
                             r.terminated, r.truncated)


class RightRing(Ring):
    def add(self, obs, action, reward, next_obs, terminated, truncated):
        record = self.records[(self.start + self.len) % self.capacity]
        np.copyto(record.obs, obs)
        np.copyto(record.next_obs, next_obs)
        record.action, record.reward = action, reward
        record.terminated, record.truncated = terminated, truncated
        if self.len == self.capacity:
            self.start = (self.start + 1) % self.capacity
        else:
            self.len += 1


def test_ex2_right_answer_passes(capsys):
    ex04.ring(RightRing)
    assert "Exercise 2 (a ring of records): ok" in capsys.readouterr().out


def test_ex2_unfinished_says_not_yet(capsys):
    class RecordRing(Ring):
        def add(self, obs, action, reward, next_obs, terminated, truncated):
            record = ...
            record.action, record.reward = ...

    ex04.ring(RecordRing)
    assert "not yet" in capsys.readouterr().out


def test_ex2_a_new_record_per_add_is_rejected():
    class NewRecords(RightRing):
        def add(self, obs, action, reward, next_obs, terminated, truncated):
            slot = (self.start + self.len) % self.capacity
            self.records[slot] = Record(self.spec)   # allocates a record at every add
            super().add(obs, action, reward, next_obs, terminated, truncated)

    with pytest.raises(CheckFailed, match="add replaced the record"):
        ex04.verify_ring(NewRecords)


def test_ex2_keeping_the_callers_array_is_rejected():
    class Rebinds(Ring):
        def add(self, obs, action, reward, next_obs, terminated, truncated):
            record = self.records[(self.start + self.len) % self.capacity]
            record.obs, record.next_obs = obs, next_obs   # the caller's arrays, not copies
            record.action, record.reward = action, reward
            record.terminated, record.truncated = terminated, truncated
            if self.len == self.capacity:
                self.start = (self.start + 1) % self.capacity
            else:
                self.len += 1

    with pytest.raises(CheckFailed, match="hold the caller's array"):
        ex04.verify_ring(Rebinds)


def test_ex2_a_ring_whose_start_never_moves_is_rejected():
    class NeverWraps(Ring):
        def add(self, obs, action, reward, next_obs, terminated, truncated):
            record = self.records[(self.start + self.len) % self.capacity]
            np.copyto(record.obs, obs)
            np.copyto(record.next_obs, next_obs)
            record.action, record.reward = action, reward
            record.terminated, record.truncated = terminated, truncated
            self.len = min(self.len + 1, self.capacity)

    with pytest.raises(CheckFailed, match=r"ring\[0\] to be transition 1 .*start moves one slot on"):
        ex04.verify_ring(NeverWraps)


def test_ex2_a_ring_that_grows_past_its_capacity_is_rejected():
    class Grows(RightRing):
        def add(self, *t):
            full = self.len == self.capacity
            super().add(*t)
            if full:
                self.len += 1

    with pytest.raises(CheckFailed, match="len stays at the capacity"):
        ex04.verify_ring(Grows)


def test_ex2_a_ring_that_keeps_something_per_add_is_rejected():
    class Logs(RightRing):
        def add(self, *t):
            super().add(*t)
            self.log = getattr(self, "log", [])
            self.log.append(t[0].copy())   # a new array kept at every add

    with pytest.raises(CheckFailed, match="no memory block kept per add"):
        ex04.verify_ring(Logs)


def test_ex2_fallback_is_rlmemlibs_recycling_memory(capsys):
    class Unfinished(Ring):
        def add(self, *t):
            ...

    assert ex04.working_ring(Unfinished) is rm.RecyclingMemory
    assert "rlmemlib's RecyclingMemory in place of your RecordRing" in capsys.readouterr().out


# ------------------------------------------------------------------ exercise 3: keep a copy
def _most(memory, batch, rng, steps, keep, ties_last=False):
    best, most = None, -1
    for _ in range(steps):
        memory.sample(len(batch), rng, out=batch)
        ends = int(batch.terminated.sum())
        if ends > most or (ties_last and ends == most):
            best, most = keep(batch), ends
    return best


def right_most_episode_ends(memory, batch, rng, steps):
    return _most(memory, batch, rng, steps, lambda b: rm.Batch(*(a.copy() for a in b)))


def test_ex3_right_answer_passes(capsys):
    ex04.most_episode_ends(right_most_episode_ends)
    assert "Exercise 3 (keep a copy): ok" in capsys.readouterr().out


def test_ex3_unfinished_says_not_yet(capsys):
    def most_episode_ends(memory, batch, rng, steps):
        best, most = ...
        return ...

    ex04.most_episode_ends(most_episode_ends)
    assert "not yet" in capsys.readouterr().out


def test_ex3_keeping_the_reused_batch_is_rejected():
    with pytest.raises(CheckFailed, match="the reused batch itself.*holds the last batch drawn"):
        ex04.verify_most_episode_ends(lambda m, b, rng, s: _most(m, b, rng, s, lambda x: x))


def test_ex3_a_new_batch_around_the_same_arrays_is_rejected():
    with pytest.raises(CheckFailed, match="kept obs with a buffer of its own.*copy each array"):
        ex04.verify_most_episode_ends(lambda m, b, rng, s: _most(m, b, rng, s, lambda x: rm.Batch(*x)))


def test_ex3_copying_only_the_observations_is_rejected():
    def obs_only(x):
        return rm.Batch(x.obs.copy(), x.action, x.reward, x.next_obs, x.terminated, x.truncated)

    with pytest.raises(CheckFailed, match="kept action with a buffer of its own"):
        ex04.verify_most_episode_ends(lambda m, b, rng, s: _most(m, b, rng, s, obs_only))


def test_ex3_copying_after_the_loop_is_rejected():
    def late_copy(memory, batch, rng, steps):
        best = _most(memory, batch, rng, steps, lambda x: x)
        return rm.Batch(*(a.copy() for a in best))

    with pytest.raises(CheckFailed, match="holds the last batch drawn: copy at the moment"):
        ex04.verify_most_episode_ends(late_copy)


def test_ex3_not_sampling_into_the_batch_is_rejected():
    def fresh(memory, batch, rng, steps):
        best, most = None, -1
        for _ in range(steps):
            drawn = memory.sample(len(batch), rng)
            if int(drawn.terminated.sum()) > most:
                best, most = drawn, int(drawn.terminated.sum())
        return best

    with pytest.raises(CheckFailed, match="out=batch"):
        ex04.verify_most_episode_ends(fresh)


def test_ex3_keeping_the_last_of_a_tie_is_rejected():
    def last_of_tie(memory, batch, rng, steps):
        return _most(memory, batch, rng, steps, lambda b: rm.Batch(*(a.copy() for a in b)),
                     ties_last=True)

    with pytest.raises(CheckFailed, match="on a tie keep the first batch"):
        ex04.verify_most_episode_ends(last_of_tie)


# ------------------------------------------------------------------ exercise 4: a pool that refuses
class RightPool:
    def __init__(self, factory):
        self.factory = factory
        self.free, self.lent = [], {}
        self.created = self.reused = 0

    def acquire(self):
        if self.free:
            obj = self.free.pop()
            self.reused += 1
        else:
            obj = self.factory()
            self.created += 1
        self.lent[id(obj)] = obj
        return obj

    def release(self, obj):
        if id(obj) not in self.lent:
            raise ValueError("not out")
        del self.lent[id(obj)]
        self.free.append(obj)


def test_ex4_right_answer_passes(capsys):
    ex04.pool(RightPool)
    assert "Exercise 4 (a pool that refuses): ok" in capsys.readouterr().out


def test_ex4_unfinished_says_not_yet_and_modes(monkeypatch, capsys):
    class Pool(RightPool):
        def acquire(self):
            self.lent[id(obj)] = ...  # noqa: F821
            return ...

    ex04.pool(Pool)
    assert "not yet" in capsys.readouterr().out
    monkeypatch.setenv("RLMEMLIB_CHECK_MODE", "solution")
    with pytest.raises(ExerciseError, match="gap"):
        ex04.pool(Pool)
    monkeypatch.setenv("RLMEMLIB_CHECK_MODE", "stub")
    with pytest.raises(ExerciseError, match="leaked"):
        ex04.pool(RightPool)


def test_ex4_a_pool_that_hands_out_the_same_object_twice_is_rejected():
    class Peeks(RightPool):
        def acquire(self):
            if not self.free:
                self.free.append(self.factory())
                self.created += 1
            obj = self.free[-1]   # handed out but left in free
            self.lent[id(obj)] = obj
            return obj

    with pytest.raises(CheckFailed, match="the same object twice.*pop\\(\\)"):
        ex04.verify_pool(Peeks)


def test_ex4_a_pool_that_forgets_to_count_reuse_is_rejected():
    class NoReuseCount(RightPool):
        def acquire(self):
            reused = self.reused
            obj = super().acquire()
            self.reused = reused
            return obj

    with pytest.raises(CheckFailed, match="reused == 1 .*add 1 to reused"):
        ex04.verify_pool(NoReuseCount)


def test_ex4_a_release_that_accepts_foreign_objects_is_rejected():
    class LessonPool(RightPool):   # refuses a double release only
        def release(self, obj):
            if any(free is obj for free in self.free):
                raise ValueError("already released")
            self.free.append(obj)

    with pytest.raises(CheckFailed, match="never handed out.*self.lent\\[id\\(obj\\)\\] = obj"):
        ex04.verify_pool(LessonPool)


def test_ex4_a_release_that_accepts_a_double_release_is_rejected():
    class Trusting(RightPool):
        def release(self, obj):
            self.lent.pop(id(obj), None)
            self.free.append(obj)

    with pytest.raises(CheckFailed, match="second release.*two users"):
        ex04.verify_pool(Trusting)


def test_ex4_comparing_arrays_with_in_is_rejected():
    class UsesIn(RightPool):
        def release(self, obj):
            if obj in self.free:   # == on numpy arrays: ambiguous
                raise ValueError("already released")
            super().release(obj)

    with pytest.raises(CheckFailed, match="element by element"):
        ex04.verify_pool(UsesIn)


def test_ex4_a_refused_release_that_changed_the_pool_is_rejected():
    class RaisesLate(RightPool):
        def release(self, obj):
            self.free.append(obj)   # changes the pool before checking
            if self.lent.pop(id(obj), None) is not obj:
                raise ValueError("not out")

    with pytest.raises(CheckFailed, match="raise before you change anything"):
        ex04.verify_pool(RaisesLate)


def test_ex4_fallback_is_rlmemlibs_object_pool(capsys):
    class Unfinished(RightPool):
        def release(self, obj):
            ...

    assert ex04.working_pool(Unfinished) is rm.ObjectPool
    assert "rlmemlib's ObjectPool in place of your Pool" in capsys.readouterr().out
    assert ex04.working_pool(RightPool) is RightPool
