"""The checks of exercise set 01 (experience and references) reject typical wrong answers with
their teaching message, accept the right ones, and say "not yet" to the unfinished stubs."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from rlmemlib.checks import CheckFailed, ex01


# ------------------------------------------------------------------ right answers, as in solutions/
def right_dtype(n):
    largest = n - 1
    fits = [d for d in (np.uint8, np.uint16, np.uint32, np.uint64) if np.iinfo(d).max >= largest]
    return np.dtype(fits[0])


def right_raw(observation_space, action_space):
    obs_bytes = int(np.prod(observation_space.shape)) * observation_space.dtype.itemsize
    return 2 * obs_bytes + right_dtype(action_space.n).itemsize + 4 + 2


def right_log(namespace, order):
    events = []
    weakref.finalize(namespace[order[0]], events.append, "freed")
    for name in order:
        events.append(f"del {name}")
        del namespace[name]
    return events


class RightStep:
    def __init__(self, episode, action):
        self._episode = weakref.ref(episode)
        self.action = action
        episode.steps.append(self)

    @property
    def episode(self):
        return self._episode()


# ------------------------------------------------------------------ unfinished stubs, as in exercises/
def stub_dtype(n):
    largest = ...
    fits = ...
    return ...


def stub_raw(observation_space, action_space):
    obs_bytes = ...
    action_bytes = ...
    return ...


def stub_log(namespace, order):
    events = ...
    return ...


class StubStep:
    def __init__(self, episode, action):
        self._episode = ...
        self.action = action
        episode.steps.append(self)

    @property
    def episode(self):
        return ...


CHECKS = [(ex01.narrowest_action_dtype, right_dtype, stub_dtype),
          (ex01.raw_nbytes, right_raw, stub_raw),
          (ex01.death_log, right_log, stub_log),
          (ex01.step, RightStep, StubStep)]
IDS = ["narrowest_action_dtype", "raw_nbytes", "death_log", "step"]


@pytest.mark.parametrize("check, right, stub", CHECKS, ids=IDS)
def test_learner_mode_says_not_yet_to_the_stub_and_ok_to_the_answer(check, right, stub, monkeypatch, capsys):
    monkeypatch.delenv("RLMEMLIB_CHECK_MODE", raising=False)
    check(stub)
    assert "not yet" in capsys.readouterr().out
    check(right)
    assert capsys.readouterr().out.endswith(": ok\n")


def test_the_reference_answers_pass():
    ex01.verify_narrowest_action_dtype(ex01.reference_narrowest_action_dtype)
    ex01.verify_raw_nbytes(ex01.reference_raw_nbytes)
    ex01.verify_death_log(ex01.reference_death_log)
    ex01.verify_step(ex01.ReferenceStep)


def test_working_falls_back_to_rlmemlib_and_says_so(capsys):
    assert ex01.working_narrowest_action_dtype(stub_dtype) is ex01.reference_narrowest_action_dtype
    assert ex01.working_raw_nbytes(lambda o, a: 46) is ex01.reference_raw_nbytes  # wrong: falls back too
    assert ex01.working_death_log(stub_log) is ex01.reference_death_log
    assert ex01.working_step(StubStep) is ex01.ReferenceStep
    assert capsys.readouterr().out.count("in place of your") == 4
    assert ex01.working_step(RightStep) is RightStep
    assert "Using your Step." in capsys.readouterr().out


# ------------------------------------------------------------------ exercise 1: the narrowest action dtype
def test_a_dtype_that_cannot_hold_n_minus_1_is_rejected():
    with pytest.raises(CheckFailed, match=r"narrowest_action_dtype\(257\) to hold the largest action, 256"):
        ex01.verify_narrowest_action_dtype(lambda n: np.dtype(np.uint8))


def test_counting_up_to_n_instead_of_n_minus_1_is_rejected():
    with pytest.raises(CheckFailed, match=r"is n - 1 = 255, not n"):
        ex01.verify_narrowest_action_dtype(lambda n: np.min_scalar_type(n))


def test_numpys_default_int64_is_rejected():
    with pytest.raises(CheckFailed, match="unsigned"):
        ex01.verify_narrowest_action_dtype(lambda n: np.dtype(np.int64))


def test_a_wider_unsigned_dtype_is_rejected():
    with pytest.raises(CheckFailed, match="wider than needed"):
        ex01.verify_narrowest_action_dtype(lambda n: np.dtype(np.uint32))


def test_falling_off_the_end_is_rejected():
    with pytest.raises(CheckFailed, match="got None"):
        ex01.verify_narrowest_action_dtype(lambda n: None)


# ------------------------------------------------------------------ exercise 2: raw bytes of one transition
def test_counting_an_int64_action_is_rejected():
    def int64_action(observation_space, action_space):
        obs_bytes = int(np.prod(observation_space.shape)) * observation_space.dtype.itemsize
        return 2 * obs_bytes + action_space.dtype.itemsize + 4 + 2  # action_space.dtype is int64

    with pytest.raises(CheckFailed, match=r"expected 39 bytes for CartPole-v1.*got 46.*counted as 8 bytes"):
        ex01.verify_raw_nbytes(int64_action)


def test_counting_next_obs_zero_times_is_rejected():
    def one_observation(observation_space, action_space):
        obs_bytes = int(np.prod(observation_space.shape)) * observation_space.dtype.itemsize
        return obs_bytes + right_dtype(action_space.n).itemsize + 4 + 2

    with pytest.raises(CheckFailed, match=r"got 23: next_obs was not counted"):
        ex01.verify_raw_nbytes(one_observation)


def test_assuming_one_byte_actions_is_rejected_on_a_large_action_space():
    def one_byte_action(observation_space, action_space):
        obs_bytes = int(np.prod(observation_space.shape)) * observation_space.dtype.itemsize
        return 2 * obs_bytes + 1 + 4 + 2

    with pytest.raises(CheckFailed, match=r"Discrete\(300\).*needs uint16"):
        ex01.verify_raw_nbytes(one_byte_action)


def test_assuming_float32_observations_is_rejected():
    def four_bytes_a_value(observation_space, action_space):
        return 2 * int(np.prod(observation_space.shape)) * 4 + right_dtype(action_space.n).itemsize + 6

    with pytest.raises(CheckFailed, match=r"uint8 frames.*itemsize"):
        ex01.verify_raw_nbytes(four_bytes_a_value)


def test_a_float_count_is_rejected():
    with pytest.raises(CheckFailed, match="whole number"):
        ex01.verify_raw_nbytes(lambda o, a: float(right_raw(o, a)))


# ------------------------------------------------------------------ exercise 3: the moment an object dies
def test_predicting_death_at_the_first_del_of_two_names_is_rejected():
    def dies_at_first_del(namespace, order):
        events = []
        for k, name in enumerate(order):
            events.append(f"del {name}")
            del namespace[name]
            if k == 0:
                events.append("freed")  # the belief: del frees
        return events

    with pytest.raises(CheckFailed, match=r"""came right after "del a", but 'b' still referred"""):
        ex01.verify_death_log(dies_at_first_del)


def test_recording_the_del_after_deleting_is_rejected():
    def late_record(namespace, order):
        events = []
        weakref.finalize(namespace[order[0]], events.append, "freed")
        for name in order:
            del namespace[name]
            events.append(f"del {name}")
        return events

    with pytest.raises(CheckFailed, match=r"last\s+reference, not its first.*before you delete"):
        ex01.verify_death_log(late_record)


def test_a_local_reference_that_keeps_the_object_alive_is_rejected():
    def keeps_a_name(namespace, order):
        events = []
        obj = namespace[order[0]]
        weakref.finalize(obj, events.append, "freed")
        for name in order:
            events.append(f"del {name}")
            del namespace[name]
        return events

    with pytest.raises(CheckFailed, match=r"obj = namespace\[\.\.\.\]"):
        ex01.verify_death_log(keeps_a_name)


def test_writing_freed_by_hand_is_rejected():
    def by_hand(namespace, order):
        events = [f"del {name}" for name in order]
        for name in order:
            del namespace[name]
        return events + ["freed"]

    with pytest.raises(CheckFailed, match='never append "freed" yourself'):
        ex01.verify_death_log(by_hand)


def test_calling_the_callback_at_registration_is_rejected():
    def called_at_once(namespace, order):
        events = []
        weakref.finalize(namespace[order[0]], lambda: None)
        events.append("freed")
        for name in order:
            events.append(f"del {name}")
            del namespace[name]
        return events

    with pytest.raises(CheckFailed, match="before any del"):
        ex01.verify_death_log(called_at_once)


def test_forgetting_to_delete_is_rejected():
    def only_records(namespace, order):
        return [f"del {name}" for name in order]

    with pytest.raises(CheckFailed, match=r"del namespace\[name\]"):
        ex01.verify_death_log(only_records)


# ------------------------------------------------------------------ exercise 4: break the cycle
class StrongStep:
    def __init__(self, episode, action):
        self._episode = episode  # a strong back-reference: a cycle
        self.action = action
        episode.steps.append(self)

    @property
    def episode(self):
        return self._episode


class UncalledStep(RightStep):
    @property
    def episode(self):
        return self._episode  # the weak reference itself, not the episode


class ShadowingStep:
    def __init__(self, episode, action):
        self.episode = weakref.ref(episode)  # collides with the property
        self.action = action
        episode.steps.append(self)

    @property
    def episode(self):
        return None


def test_a_back_reference_kept_strong_is_rejected():
    with pytest.raises(CheckFailed, match=r"strong back-reference.*weakref\.ref\(episode\)"):
        ex01.verify_step(StrongStep)


def test_an_uncalled_weak_reference_is_rejected():
    with pytest.raises(CheckFailed, match=r"call it, self\._episode\(\)"):
        ex01.verify_step(UncalledStep)


def test_storing_under_the_property_name_is_rejected():
    with pytest.raises(CheckFailed, match="under another name"):
        ex01.verify_step(ShadowingStep)


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("answer", [RightStep, StrongStep], ids=["right", "strong"])
def test_the_cycle_check_restores_the_collector(enabled, answer):
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        try:
            ex01.verify_step(answer)
        except CheckFailed:
            pass
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
