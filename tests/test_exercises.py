"""Exercises: generated from solutions/, checked in three modes, and their checks teach."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from rlmemlib import checks
from rlmemlib.checks import CheckFailed, ExerciseError, ex00

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_exercises  # noqa: E402

SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


# ------------------------------------------------------------------ single source, no drift
def test_every_solution_has_its_exercise_and_back():
    assert SOLUTIONS, "solutions/ is empty"
    assert {p.name for p in SOLUTIONS} == {p.name for p in (ROOT / "exercises").glob("*.ipynb")}


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_exercise_is_what_the_generator_writes(path):
    made = make_exercises.generate(write=False, paths=[path])
    target = ROOT / "exercises" / path.name
    committed = nbformat.read(target, as_version=4)
    assert made[target] == committed, (
        f"exercises/{path.name} differs from what solutions/{path.name} generates: "
        f"run python3 tools/course.py regen solutions/{path.name}")


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_carries_current_nbgrader_metadata(path):
    nb = nbformat.read(path, as_version=4)
    annotated = nbformat.read(path, as_version=4)
    make_exercises.annotate(annotated, path.stem)
    assert nb == annotated, f"run python3 tools/course.py regen solutions/{path.name}"
    kinds = [c.metadata.get("nbgrader", {}) for c in nb.cells if c.cell_type == "code"]
    assert any(k.get("solution") for k in kinds) and any(k.get("grade") for k in kinds)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_exercise_has_gaps_no_answers_no_hidden_tests_no_outputs(path):
    exercise = json.loads((ROOT / "exercises" / path.name).read_text())
    solution = json.loads(path.read_text())
    text = json.dumps(exercise)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS"):
        assert marker not in text
    code = [c for c in exercise["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    gaps = sum("".join(c["source"]).count("# YOUR CODE HERE") for c in code)
    blocks = sum("".join(c["source"]).count("### BEGIN SOLUTION") for c in solution["cells"])
    assert gaps == blocks >= 2, "2 to 4 exercises, each with a gap"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_exercise_carries_the_nbgrader_metadata_of_its_solution(path):
    """So exercises/ handed out and collected into nbgrader is graded (tests/test_nbgrader_*.py)."""
    exercise = nbformat.read(ROOT / "exercises" / path.name, as_version=4)
    solution = nbformat.read(path, as_version=4)
    meta = [[c.metadata.get("nbgrader") for c in nb.cells] for nb in (exercise, solution)]
    assert meta[0] == meta[1] and any(m and m.get("grade") for m in meta[0])


def test_stub_keeps_targets_and_returns_only():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    y = x + 1\n    for i in range(3):\n        y += i\n    return y\n    ### END SOLUTION"
    assert make_exercises.strip_solutions(src) == (
        "def f(x):\n    # YOUR CODE HERE\n    y = ...\n    return ...")
    assert make_exercises.strip_solutions("### BEGIN SOLUTION\nprint(1)\n### END SOLUTION") == \
        "# YOUR CODE HERE\n..."
    with pytest.raises(ValueError):
        make_exercises.strip_solutions("### BEGIN SOLUTION\nx = 1")
    hidden = "check.f(f)\n### BEGIN HIDDEN TESTS\nassert f(2) == 3\n### END HIDDEN TESTS"
    assert make_exercises.strip_solutions(hidden) == "check.f(f)"


# ------------------------------------------------------------------ the three modes
def _unfinished(arr):
    return ...


def _right(arr):
    owner = arr
    while owner.base is not None:
        owner = owner.base
    return owner.nbytes


def test_learner_mode_says_not_yet_and_ok(monkeypatch, capsys):
    monkeypatch.delenv("RLMEMLIB_CHECK_MODE", raising=False)
    ex00.held_bytes(_unfinished)
    assert "not yet" in capsys.readouterr().out
    ex00.held_bytes(_right)
    assert ": ok" in capsys.readouterr().out


def test_solution_mode_refuses_an_unfinished_answer(monkeypatch):
    monkeypatch.setenv("RLMEMLIB_CHECK_MODE", "solution")
    with pytest.raises(ExerciseError, match="gap"):
        ex00.held_bytes(_unfinished)


def test_stub_mode_refuses_a_finished_answer(monkeypatch, capsys):
    monkeypatch.setenv("RLMEMLIB_CHECK_MODE", "stub")
    ex00.held_bytes(_unfinished)
    assert "not yet" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="leaked"):
        ex00.held_bytes(_right)


# nbgrader's release writes this where exercises/ has `...` (its default code stub)
def _nbgrader_stub(arr):
    # YOUR CODE HERE
    raise NotImplementedError()


def test_nbgrader_stub_is_unfinished_in_every_form():
    def bare(arr):
        raise NotImplementedError

    class Ring:
        def add(self, x):
            raise NotImplementedError()

    def other_error(arr):
        raise ValueError("not a gap")

    assert checks.is_unfinished(_nbgrader_stub) and checks.is_unfinished(bare)
    assert checks.is_unfinished(Ring)
    assert not checks.is_unfinished(other_error)


def test_nbgrader_stub_says_not_yet_in_learner_and_stub_mode(monkeypatch, capsys):
    for mode in ("", "stub"):
        monkeypatch.setenv("RLMEMLIB_CHECK_MODE", mode)
        ex00.held_bytes(_nbgrader_stub)
        out = capsys.readouterr().out
        assert "not yet" in out and "raise NotImplementedError()" in out


def test_nbgrader_stub_is_an_error_in_solution_mode(monkeypatch):
    monkeypatch.setenv("RLMEMLIB_CHECK_MODE", "solution")
    with pytest.raises(ExerciseError, match="gap, `raise NotImplementedError\\(\\)`"):
        ex00.held_bytes(_nbgrader_stub)


def test_a_stub_reached_through_another_function_says_not_yet(monkeypatch, capsys):
    monkeypatch.delenv("RLMEMLIB_CHECK_MODE", raising=False)

    def helper(arr):
        raise NotImplementedError()

    def finished_but_calls_a_stub(arr):
        return helper(arr)

    ex00.held_bytes(finished_but_calls_a_stub)
    assert "not yet" in capsys.readouterr().out
    monkeypatch.setenv("RLMEMLIB_CHECK_MODE", "solution")
    with pytest.raises(ExerciseError, match="gap"):
        ex00.held_bytes(finished_but_calls_a_stub)


def test_working_falls_back_on_nbgrader_stub_and_on_a_crash(capsys):
    def crashes(build):
        raise ZeroDivisionError("the learner's own bug")

    assert ex00.working_measure(_nbgrader_stub) is ex00.reference_measure
    assert ex00.working_measure(lambda build: helper_stub(build)) is ex00.reference_measure
    assert ex00.working_measure(crashes) is ex00.reference_measure
    assert capsys.readouterr().out.count("in place of your") == 3


def helper_stub(build):
    raise NotImplementedError()


def test_unknown_mode_is_an_error(monkeypatch):
    monkeypatch.setenv("RLMEMLIB_CHECK_MODE", "teacher")
    with pytest.raises(ExerciseError, match="expected one of"):
        checks.mode()


def test_ellipsis_in_an_index_or_docstring_is_not_a_gap():
    def f(a):
        """Like a[..., 0] ..."""
        return a[..., 0]

    class Ring:
        def add(self, x):
            return ...

    class Step:
        def __init__(self, episode):
            self.episode_ref = episode

        @property
        def episode(self):
            return ...

    assert not checks.is_unfinished(f)
    assert checks.is_unfinished(Ring)
    assert checks.is_unfinished(Step)  # a gap in a property counts too


def test_working_falls_back_and_says_so(capsys):
    used = ex00.working_measure(lambda build: ...)
    assert used is ex00.reference_measure
    assert "in place of your" in capsys.readouterr().out


def test_a_solution_copied_into_the_exercises_fails_in_stub_mode(tmp_path):
    source = ROOT / "solutions" / "00_measuring_memory.ipynb"
    leaked = tmp_path / "exercises" / source.name
    leaked.parent.mkdir()
    shutil.copy(source, leaked)
    nb = nbformat.read(leaked, as_version=4)
    old = os.environ.get("RLMEMLIB_CHECK_MODE")
    os.environ["RLMEMLIB_CHECK_MODE"] = "stub"
    try:
        with pytest.raises(CellExecutionError, match="leaked into the exercises"):
            NotebookClient(nb, timeout=120, kernel_name="python3",
                           resources={"metadata": {"path": str(leaked.parent)}}).execute()
        exercise = nbformat.read(ROOT / "exercises" / source.name, as_version=4)
        NotebookClient(exercise, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(leaked.parent)}}).execute()
    finally:
        if old is None:
            os.environ.pop("RLMEMLIB_CHECK_MODE", None)
        else:
            os.environ["RLMEMLIB_CHECK_MODE"] = old


# ------------------------------------------------------------------ typical wrong answers, ex00
def test_ex00_view_counted_as_its_own_bytes_is_rejected():
    with pytest.raises(CheckFailed, match="follow .base"):
        ex00.verify_held_bytes(lambda arr: arr.nbytes)


def test_ex00_measure_without_tracing_is_rejected():
    import tracemalloc

    def forgot_start(build):
        obj = build()
        return obj, tracemalloc.get_traced_memory()[0]

    assert not tracemalloc.is_tracing()
    with pytest.raises(CheckFailed, match="tracemalloc.start"):
        ex00.verify_measure(forgot_start)


def test_ex00_measure_that_lets_the_object_die_is_rejected():
    import tracemalloc

    def lets_it_die(build):
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        build()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return np.zeros(10_000), after - before

    with pytest.raises(CheckFailed, match="still alive"):
        ex00.verify_measure(lets_it_die)


def test_ex00_shallow_bytes_per_item_is_rejected():
    with pytest.raises(CheckFailed, match="getsizeof|tracemalloc"):
        ex00.verify_bytes_per_item(lambda build, n: sys.getsizeof(build(n)) / n)
