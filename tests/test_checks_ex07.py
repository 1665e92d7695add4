"""The checks of exercises 07 (pixels and frame stacks): right answers pass, typical wrong ones
are rejected with the teaching message, unfinished ones say "not yet"."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pytest

from rlmemlib.checks import CheckFailed, ExerciseError, ex07
from rlmemlib.measure import fmt_bytes

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions" / "07_pixels_and_frame_stacks.ipynb"
sys.path.insert(0, str(ROOT / "tools"))
import make_exercises  # noqa: E402


@pytest.fixture(autouse=True)
def learner_mode(monkeypatch):
    monkeypatch.delenv("RLMEMLIB_CHECK_MODE", raising=False)


# ------------------------------------------------------------------ exercise 1: planned bytes
def planned(per):
    """A planned_bytes answer that charges `per(k, frame)` bytes per transition for each layout."""
    def planned_bytes(capacity, frame_shape, k, layout):
        frame = int(np.prod(frame_shape))
        return capacity * per[layout](k, frame)
    return planned_bytes


RIGHT = {"stacks": lambda k, f: 2 * k * f, "shared": lambda k, f: k * f, "frames": lambda k, f: f}


def with_(layout, rule):
    return planned({**RIGHT, layout: rule})


def stub_planned_bytes(capacity, frame_shape, k, layout):
    frame = int(np.prod(frame_shape))
    per_transition = ...
    return ...


@pytest.mark.parametrize("right", [planned(RIGHT), ex07.reference_planned_bytes])
def test_ex1_right_answers_pass(right):
    ex07.verify_planned_bytes(right)


@pytest.mark.parametrize("wrong, message", [
    (with_("stacks", lambda k, f: k * f), "that is obs alone: a ring of stacks also stores next_obs"),
    (planned({name: (lambda rule: lambda k, f: 4 * rule(k, f))(rule) for name, rule in RIGHT.items()}),
     "4 bytes per pixel: frames are uint8"),
    (with_("frames", lambda k, f: k * f), "one frame per transition"),
    (with_("shared", lambda k, f: f), "a stack holds k = 2 frames"),
    (planned({name: (lambda rule: lambda k, f: rule(k, f) + 7)(rule) for name, rule in RIGHT.items()}),
     "count the observations only"),
    (planned({name: (lambda rule: lambda k, f: rule(k, f) / 1)(rule) for name, rule in RIGHT.items()}),
     "a whole number of bytes"),
], ids=["obs-only", "float32-pixels", "frames-as-stacks", "forgot-k", "with-scalars", "float"])
def test_ex1_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex07.verify_planned_bytes(wrong)


def test_ex1_stub_says_not_yet_and_is_an_error_for_a_solution(monkeypatch, capsys):
    ex07.planned_bytes(stub_planned_bytes)
    assert "not yet" in capsys.readouterr().out
    monkeypatch.setenv("RLMEMLIB_CHECK_MODE", "solution")
    with pytest.raises(ExerciseError):
        ex07.planned_bytes(stub_planned_bytes)


# ------------------------------------------------------------------ exercise 2: fail fast
def right_check_fits(planned, available, what, share=0.8):
    if planned > share * available:
        raise MemoryError(f"{what} needs {fmt_bytes(planned)}, more than {share:.0%} of the "
                          f"{fmt_bytes(available)} available")


def returns_false(planned, available, what, share=0.8):
    return planned <= share * available


def warns(planned, available, what, share=0.8):
    if planned > share * available:
        warnings.warn(f"{what} needs {fmt_bytes(planned)} > {fmt_bytes(available)}")


def value_error(planned, available, what, share=0.8):
    if planned > share * available:
        raise ValueError(f"{what} needs {fmt_bytes(planned)} > {fmt_bytes(available)}")


def no_sizes(planned, available, what, share=0.8):
    if planned > share * available:
        raise MemoryError("not enough memory")


def no_headroom(planned, available, what, share=0.8):
    if planned > available:
        raise MemoryError(f"{what} needs {fmt_bytes(planned)} > {fmt_bytes(available)}")


def too_strict(planned, available, what, share=0.8):
    if planned > 0.5 * available:
        raise MemoryError(f"{what} needs {fmt_bytes(planned)} > {fmt_bytes(available)}")


def stub_check_fits(planned, available, what, share=0.8):
    ...


@pytest.mark.parametrize("right", [right_check_fits, ex07.reference_check_fits])
def test_ex2_right_answers_pass(right):
    ex07.verify_check_fits(right)


@pytest.mark.parametrize("wrong, message", [
    (returns_false, "a check that returns a value can be ignored"),
    (warns, "a warning lets the run start anyway"),
    (value_error, "MemoryError is the error Python raises"),
    (no_sizes, "the message to say both sizes"),
    (no_headroom, "keep a share of the memory free"),
    (too_strict, "a plan that fits must go through silently"),
])
def test_ex2_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex07.verify_check_fits(wrong)


def test_ex2_stub_says_not_yet_and_the_fallback_is_used(capsys):
    ex07.check_fits(stub_check_fits)
    assert "not yet" in capsys.readouterr().out
    assert ex07.working_check_fits(stub_check_fits) is ex07.reference_check_fits
    assert ex07.working_check_fits(right_check_fits) is right_check_fits


# ------------------------------------------------------------------ exercise 3: episode starts
def right_stack_at(newest, start, i, k=4):
    return np.stack([newest[max(j, start)] for j in range(i - k + 1, i + 1)])


def ring(newest, start, i, k=4):
    return np.stack([newest[max(j, 0)] for j in range(i - k + 1, i + 1)])


def zeros(newest, start, i, k=4):
    return np.stack([newest[j] if j >= start else np.zeros_like(newest[0]) for j in range(i - k + 1, i + 1)])


def off_by_one(newest, start, i, k=4):
    return np.stack([newest[max(j, start)] for j in range(i - k, i)])


def reversed_order(newest, start, i, k=4):
    return np.stack([newest[max(j, start)] for j in range(i, i - k, -1)])


def as_list(newest, start, i, k=4):
    return [newest[max(j, start)] for j in range(i - k + 1, i + 1)][1:]


def four_always(newest, start, i, k=4):
    return np.stack([newest[max(j, start)] for j in range(i - 3, i + 1)])


def stub_stack_at(newest, start, i, k=4):
    steps = ...
    return ...


@pytest.mark.parametrize("right", [right_stack_at, ex07.reference_stack_at])
def test_ex3_right_answers_pass(right):
    ex07.verify_stack_at(right)


@pytest.mark.parametrize("wrong, message", [
    (ring, "frames of the previous episode"),
    (zeros, "repeats the episode's first frame"),
    (off_by_one, "off by one"),
    (reversed_order, "oldest first"),
    (as_list, r"return the k frames stacked on axis 0"),
    (four_always, r"of shape \(3, 4\)"),
])
def test_ex3_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex07.verify_stack_at(wrong)


def test_ex3_stub_says_not_yet(capsys):
    ex07.stack_at(stub_stack_at)
    assert "not yet" in capsys.readouterr().out


# ------------------------------------------------------------------ exercise 4: each frame once
class Trusting(ex07.ReferenceFrameStore):
    """Reuses the last next_obs for obs without comparing: wrong at every episode start."""

    def add(self, obs, next_obs):
        obs_idx = self.last[1] if self.last is not None else self.store(obs)
        next_idx = obs_idx[1:] + self.store(next_obs[-1:])
        self.last = (next_obs.tobytes(), next_idx)
        return obs_idx, next_idx


class LastFrameOnly(ex07.ReferenceFrameStore):
    def add(self, obs, next_obs):
        same = self.last is not None and obs[-1].tobytes() == self.last[0][-obs[-1].nbytes:]
        obs_idx = self.last[1] if same else self.store(obs)
        shifted = next_obs[:-1].tobytes() == obs[1:].tobytes()
        next_idx = obs_idx[1:] + self.store(next_obs[-1:]) if shifted else self.store(next_obs)
        self.last = (next_obs.tobytes(), next_idx)
        return obs_idx, next_idx


class AlwaysShifts(ex07.ReferenceFrameStore):
    def add(self, obs, next_obs):
        same = self.last is not None and obs.tobytes() == self.last[0]
        obs_idx = self.last[1] if same else self.store(obs)
        next_idx = obs_idx[1:] + self.store(next_obs[-1:])
        self.last = (next_obs.tobytes(), next_idx)
        return obs_idx, next_idx


class ShiftsTheWrongWay(ex07.ReferenceFrameStore):
    def add(self, obs, next_obs):
        same = self.last is not None and obs.tobytes() == self.last[0]
        obs_idx = self.last[1] if same else self.store(obs)
        shifted = next_obs[:-1].tobytes() == obs[1:].tobytes()
        next_idx = obs_idx[:-1] + self.store(next_obs[-1:]) if shifted else self.store(next_obs)
        self.last = (next_obs.tobytes(), next_idx)
        return obs_idx, next_idx


class NeverShares(ex07.ReferenceFrameStore):
    def add(self, obs, next_obs):
        return self.store(obs), self.store(next_obs)


class KeepsReferences(ex07.ReferenceFrameStore):
    """Stores the caller's frames, not copies (the check's caller reuses its arrays)."""

    def store(self, stack):
        first = len(self.frames)
        self.frames.extend(stack)  # views into the caller's array
        return list(range(first, len(self.frames)))



class StubStore(ex07.ReferenceFrameStore):
    def add(self, obs, next_obs):
        same_as_last = ...
        obs_idx = ...
        shifted = ...
        next_idx = ...
        self.last = (next_obs.tobytes(), next_idx)
        return obs_idx, next_idx


def test_ex4_right_answer_passes():
    ex07.verify_frame_store(ex07.ReferenceFrameStore)


@pytest.mark.parametrize("wrong, message", [
    (Trusting, "an episode's first obs is not the last next_obs"),
    (LastFrameOnly, "compare the whole stack's bytes, not one frame"),
    (AlwaysShifts, "this next_obs does not overlap obs"),
    (ShiftsTheWrongWay, r"its shared frames are obs_idx\[1:\], not obs_idx\[:-1\]"),
    (NeverShares, "each step brings one new frame"),
    (KeepsReferences, "the store kept the caller's arrays, not their values"),
])
def test_ex4_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex07.verify_frame_store(wrong)


def test_ex4_stub_says_not_yet_and_the_fallback_is_used(capsys):
    ex07.frame_store(StubStore)
    assert "not yet" in capsys.readouterr().out
    assert ex07.working_frame_store(StubStore) is ex07.ReferenceFrameStore


def test_the_data_has_what_the_checks_need():
    steps = ex07.stacked_steps(4)
    starts = ex07.episode_starts(steps)
    assert len(starts) >= 8  # many episode starts, of both kinds of end
    assert any(t[4] for t in steps) and any(t[5] for t in steps)
    zero = ex07.stacked_steps(4, "zero")
    assert not np.any(zero[0][0][0]) and np.any(zero[0][0][-1])  # padded with zeros


# ------------------------------------------------------------------ hidden tests against blank answers
def _cells():
    nb = nbformat.read(SOLUTIONS, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _nbgrader_stub(source: str) -> str:
    """nbgrader's student version of a solution cell: each block becomes NotImplementedError."""
    return re.sub(r"( *)### BEGIN SOLUTION\n.*?### END SOLUTION",
                  lambda m: f"{m.group(1)}# YOUR CODE HERE\n{m.group(1)}raise NotImplementedError()",
                  source, flags=re.S)


def _hidden(source: str) -> str:
    return source.split("### BEGIN HIDDEN TESTS", 1)[1].split("### END HIDDEN TESTS", 1)[0]


EXERCISES = [k for k, src in enumerate(_cells()) if "### BEGIN SOLUTION" in src]


def test_there_are_four_exercises_each_with_hidden_tests():
    cells = _cells()
    assert len(EXERCISES) == 4
    assert sum("### BEGIN HIDDEN TESTS" in c for c in cells) == 4


@pytest.mark.parametrize("blank", ["ellipsis", "NotImplementedError"])
@pytest.mark.parametrize("target", EXERCISES, ids=lambda k: f"cell{k}")
def test_hidden_tests_fail_a_blank_answer_and_pass_the_solution(target, blank, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RLMEMLIB_PROGRESS", "0")
    cells = _cells()
    check_cell = next(k for k in range(target + 1, len(cells)) if "### BEGIN HIDDEN TESTS" in cells[k])
    ns: dict = {}
    for k, source in enumerate(cells[:check_cell]):
        if k == target:
            source = make_exercises.strip_solutions(source) if blank == "ellipsis" else _nbgrader_stub(source)
        elif "### BEGIN HIDDEN TESTS" in source:
            source = source.replace("### BEGIN HIDDEN TESTS", "").replace("### END HIDDEN TESTS", "")
        exec(compile(source, f"cell{k}", "exec"), ns)
    with pytest.raises(Exception):
        exec(compile(_hidden(cells[check_cell]), "hidden", "exec"), ns)
    exec(compile(cells[target], "solution", "exec"), ns)  # the same hidden tests pass the solution
    exec(compile(_hidden(cells[check_cell]), "hidden", "exec"), ns)
