"""nbgrader end to end: the machinery and the tests, shared by ``tests/test_nbgrader*.py``.

Each of those files takes a share of the solutions notebooks (``ASSIGNMENTS``; together they
take every one, found by glob) and star-imports the tests below, so pytest-xdist's
``--dist loadfile`` grades the shares at the same time. Per file, a temporary course folder
(nothing is written into the repository) gets one assignment per solutions notebook, copied to
``source/<stem>/<stem>.ipynb``; then, as a teacher would:

1. ``nbgrader generate_assignment "*"`` writes ``release/``;
2. four students hand in each assignment (``submitted/<student>/<stem>/<stem>.ipynb``):

   * ``solution``: nbgrader's release with every solution cell filled in from solutions/
     (markers removed): full marks;
   * ``release``: nbgrader's release unchanged (its stub is ``raise NotImplementedError()``):
     zero;
   * ``handout``: exercises/ handed back unchanged (the repository's ``...`` stubs): zero;
   * ``wrong``: exercises/ filled in from solutions/ except one typical wrong answer: every
     check cell scores but the one after the wrong answer. This one also shows that exercises/
     handed out instead of the release is graded;

3. one ``nbgrader autograde "*"`` grades all of them; ``nbgrader generate_feedback`` writes the
   feedback of ``wrong``, which must show the check's teaching message.

Scores come from nbgrader's gradebook, cell by cell. A last test runs each notebook without
nbgrader, with its answers left empty (``pass``: functions return None) and the visible checks
removed, so only the hidden tests judge: each of them must fail.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
COURSE_ID = "rl-memory"
# The course folder's whole configuration, as the README gives it to teachers; nbgrader's
# defaults for everything else, except its limit of 30 s per cell, too tight on a busy machine.
CONFIG = ('c = get_config()\nc.CourseDirectory.course_id = "rl-memory"\n'
          'c.Execute.timeout = 300\n')
STUDENTS = ("solution", "release", "handout", "wrong")
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
MARKERS = (BEGIN, END, BEGIN_HIDDEN, END_HIDDEN)


@dataclass(frozen=True)
class Wrong:
    """A typical wrong answer: the first solution region of the solution cell whose first line
    is ``where`` replaced by ``body``; the feedback must show ``message``."""

    where: str
    body: str
    message: str


# One typical wrong answer per assignment, each one a wrong answer of the check's unit tests
# (tests/test_checks_exNN.py). An assignment not listed here gets the generic one: its first
# solution region left empty (``pass``), and its feedback must show a teaching message
# ("expected ..., got ...").
WRONG = {
    "00_measuring_memory": Wrong(
        "def held_bytes(arr):",
        "return arr.nbytes",
        "follow .base"),
    "01_experience_and_references": Wrong(
        "def death_log(namespace, order):",
        "events = []\n"
        "weakref.finalize(namespace[order[0]], events.append, 'freed')\n"
        "for name in order:\n"
        "    del namespace[name]\n"
        "    events.append(f'del {name}')\n"
        "return events",
        "before you delete"),
    "02_list_memory": Wrong(
        "class RingListMemory:",
        "self.items[self.start] = transition",
        "move self.start on by one"),
    "03_circular_pool": Wrong(
        "def ring_arrays(capacity):",
        "obs = np.zeros((capacity, 4), np.float32)\n"
        "next_obs = np.zeros((capacity, 4), np.float32)\n"
        "action = np.zeros(capacity, np.int64)\n"
        "reward = np.zeros(capacity, np.float32)\n"
        "terminated = np.zeros(capacity, np.bool_)\n"
        "truncated = np.zeros(capacity, np.bool_)",
        "one-byte integer dtype"),
    "04_object_recycling": Wrong(
        "class Pool:",
        "if self.free:\n"
        "    obj = self.free.pop()\n"
        "else:\n"
        "    obj = self.factory()\n"
        "    self.created += 1\n"
        "self.lent[id(obj)] = obj\n"
        "return obj",
        "add 1 to reused"),
    "05_explicit_deletion": Wrong(
        "class BudgetMemory(Budgeted):",
        "self.items.append(rm.Transition(obs, action, reward, next_obs, terminated, truncated))\n"
        "while len(self.items) > self.budget // self.cost + 1:\n"
        "    self.items.popleft()\n"
        "self.nbytes = len(self.items) * self.cost",
        "make room before appending"),
    "09_beyond_one_machine": Wrong(
        "def reopen_arrays(folder):",
        'arrays = {path.stem: np.load(path) for path in sorted(Path(folder).glob("*.npy"))}',
        "np.load without mmap_mode reads the whole file"),
}
GENERIC = Wrong("", "pass", "expected ")


# ------------------------------------------------------------------ notebooks and cells
def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _grade_id(cell) -> str | None:
    return _nbgrader(cell).get("grade_id")


def _graded_ids(nb) -> list[str]:
    return [_grade_id(c) for c in nb.cells if _nbgrader(c).get("grade")]


def _solution_ids(nb) -> list[str]:
    return [_grade_id(c) for c in nb.cells if _nbgrader(c).get("solution")]


def _without_markers(source: str) -> str:
    """A cell's code as a learner who finished wrote it: the marker lines removed."""
    return "\n".join(line for line in source.split("\n") if line.strip() not in MARKERS)


def _replace_regions(source: str, body: str, first_only: bool = False) -> str:
    """``source`` with its solution regions (or the first one) replaced by ``body``, indented
    as the region was, markers removed."""
    out: list[str] = []
    lines = iter(source.split("\n"))
    done = False
    for line in lines:
        if line.strip() != BEGIN or done:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out += textwrap.indent(body, indent, lambda _: True).split("\n")
        for inner in lines:
            if inner.strip() == END:
                break
        done = first_only
    return _without_markers("\n".join(out))


def _fill(nb, sources: dict[str, str]):
    """A copy of ``nb`` whose solution cells get ``sources[grade_id]``."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if _nbgrader(cell).get("solution") and _grade_id(cell) in sources:
            cell.source = sources[_grade_id(cell)]
    return nb


def wrong_answer(stem: str, source) -> tuple[str, Wrong]:
    """The grade id of the solution cell that gets the wrong answer, and the answer."""
    wrong = WRONG.get(stem, GENERIC)
    for cell in source.cells:
        if _nbgrader(cell).get("solution") and cell.source.split("\n")[0].startswith(wrong.where):
            return _grade_id(cell), wrong
    raise AssertionError(f"{stem}: no solution cell starts with {wrong.where!r}")


def check_cell_after(nb, grade_id: str) -> str:
    """The grade id of the first check cell after the cell ``grade_id``: the one it is graded by."""
    ids = [_grade_id(c) for c in nb.cells]
    return next(g for g in ids[ids.index(grade_id) + 1:] if g in _graded_ids(nb))


# ------------------------------------------------------------------ a course, as a teacher runs it
def nbgrader_env(course: Path) -> dict:
    """A teacher's shell with the course's venv active: its ``bin`` first on PATH (nbgrader runs
    ``alembic`` from there), no check mode set, nbgrader's configuration only the course's."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("RLMEMLIB_CHECK_MODE", None)
    env["JUPYTER_CONFIG_DIR"] = str(course / ".jupyter")
    return env


def nbgrader(course: Path, *args: str) -> str:
    """Run the ``nbgrader`` command in ``course``; fail with its log when it reports an error."""
    command = [str(Path(sys.executable).parent / "nbgrader"), *args]
    done = subprocess.run(command, cwd=course, env=nbgrader_env(course), capture_output=True,
                          text=True)
    log = done.stdout + done.stderr
    (course / f"nbgrader-{args[0]}.log").write_text(log)
    if done.returncode != 0 or re.search(r"\| ERROR\]", log):
        first = min((i for i in (log.find("Traceback"), log.find("| ERROR]")) if i >= 0), default=0)
        raise AssertionError(f"nbgrader {' '.join(args)} failed ({done.returncode}):\n"
                             f"{log[max(0, first - 2000):first + 8000]}")
    return log


@dataclass
class Graded:
    course: Path
    stems: list[str]
    scores: dict  # (stem, student) -> {grade_id: (auto_score, needs_manual_grade)}
    loses: dict   # stem -> grade id of the check cell the wrong answer must lose

    def autograded(self, student: str, stem: str):
        return nbformat.read(self.course / "autograded" / student / stem / f"{stem}.ipynb", 4)

    def feedback(self, student: str, stem: str) -> str:
        """The feedback page as the text a browser shows (tags removed, entities decoded)."""
        page = (self.course / "feedback" / student / stem / f"{stem}.html").read_text()
        return html.unescape(re.sub(r"<[^>]+>", "", page))


def make_course(root: Path, solutions: list[Path]) -> Path:
    course = root / "course"
    (course / ".jupyter").mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(CONFIG)
    for path in solutions:
        (course / "source" / path.stem).mkdir(parents=True)
        shutil.copy(path, course / "source" / path.stem / path.name)
    nbgrader(course, "generate_assignment", "*")
    return course


def hand_in(course: Path, solution: Path) -> str:
    """Put the four submissions of one assignment into ``submitted/``; return the grade id of
    the check cell that ``wrong`` must lose."""
    stem = solution.stem
    source = nbformat.read(solution, as_version=4)
    release = nbformat.read(course / "release" / stem / solution.name, as_version=4)
    handout = nbformat.read(ROOT / "exercises" / solution.name, as_version=4)
    assert _solution_ids(release) == _solution_ids(source) == _solution_ids(handout), (
        f"exercises/{solution.name} does not match solutions/: run tools/course.py regen")
    solved = {_grade_id(c): _without_markers(c.source) for c in source.cells
              if _nbgrader(c).get("solution")}
    wrong_id, wrong = wrong_answer(stem, source)
    source_of = {_grade_id(c): c.source for c in source.cells}
    wrong_cells = dict(solved, **{wrong_id: _replace_regions(source_of[wrong_id], wrong.body, True)})
    submissions = {"solution": _fill(release, solved), "release": release, "handout": handout,
                   "wrong": _fill(handout, wrong_cells)}
    for student, nb in submissions.items():
        folder = course / "submitted" / student / stem
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / solution.name)
    return check_cell_after(source, wrong_id)


def read_scores(course: Path, stems: list[str]) -> dict:
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gb:
        for stem in stems:
            for student in STUDENTS:
                nb = gb.find_submission_notebook(stem, stem, student)
                out[stem, student] = {g.name: (g.auto_score, g.needs_manual_grade) for g in nb.grades}
    return out


def grade(root: Path, solutions: list[Path]) -> Graded:
    """The whole round: generate, hand in, autograde, feedback; the scores read back."""
    course = make_course(root, solutions)
    loses = {path.stem: hand_in(course, path) for path in solutions}
    nbgrader(course, "autograde", "*")
    nbgrader(course, "generate_feedback", "*", "--student=wrong")
    stems = [path.stem for path in solutions]
    return Graded(course, stems, read_scores(course, stems), loses)


# ------------------------------------------------------------------ the tests
def pytest_generate_tests(metafunc):
    if "assignment" in metafunc.fixturenames:
        share = metafunc.module.ASSIGNMENTS
        metafunc.parametrize("assignment", share, ids=[p.stem for p in share])


@pytest.fixture(scope="module")
def graded(request, tmp_path_factory) -> Graded:
    share = request.module.ASSIGNMENTS
    if not share:
        pytest.skip("no assignment in this share")
    return grade(tmp_path_factory.mktemp("nbgrader"), share)


def _errors(cell) -> list[str]:
    return [o.get("ename", "") for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_every_solution_has_a_hidden_test_behind_every_check(assignment):
    nb = nbformat.read(assignment, as_version=4)
    checks = [c for c in nb.cells if _nbgrader(c).get("grade")]
    assert checks
    for cell in checks:
        assert BEGIN_HIDDEN in cell.source, f"{_grade_id(cell)} has no hidden test"


def test_the_release_has_nbgrader_gaps_and_no_hidden_tests(graded, assignment):
    source = nbformat.read(assignment, as_version=4)
    release = nbformat.read(graded.course / "release" / assignment.stem / assignment.name, 4)
    code = "\n".join(c.source for c in release.cells if c.cell_type == "code")
    regions = sum(c.source.count(BEGIN) for c in source.cells)
    assert code.count("# YOUR CODE HERE\n") == code.count("raise NotImplementedError()") == regions
    visible = {_grade_id(c): c.source.split(BEGIN_HIDDEN)[0].rstrip() for c in source.cells}
    for cell in release.cells:
        if _nbgrader(cell).get("grade"):
            assert cell.source.rstrip() == visible[_grade_id(cell)]


def test_the_solution_gets_full_marks(graded, assignment):
    scores = graded.scores[assignment.stem, "solution"]
    assert scores and scores == {g: (1.0, False) for g in scores}


@pytest.mark.parametrize("student", ["release", "handout"])
def test_an_unfinished_notebook_gets_zero_and_runs_to_the_end(graded, assignment, student):
    """nbgrader's release unchanged, and exercises/ handed back unchanged: every check cell is
    graded (not left for manual grading) and scores 0; its check said "not yet" and its hidden
    test failed; no other cell failed (the fallbacks stood in for the missing answers)."""
    scores = graded.scores[assignment.stem, student]
    assert scores and scores == {g: (0.0, False) for g in scores}
    nb = graded.autograded(student, assignment.stem)
    source = {_grade_id(c): c.source for c in nbformat.read(assignment, as_version=4).cells}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if _nbgrader(cell).get("grade"):
            assert cell.source == source[_grade_id(cell)], "nbgrader restores the hidden tests"
            assert "not yet" in _text(cell), _grade_id(cell)
            assert _errors(cell) and _errors(cell)[0] not in ("CheckFailed", "ExerciseError")
        else:
            assert not _errors(cell), f"{student}: a cell failed:\n{cell.source}"


def test_one_wrong_answer_loses_exactly_its_check_and_the_feedback_teaches(graded, assignment):
    stem = assignment.stem
    scores = graded.scores[stem, "wrong"]
    lost = graded.loses[stem]
    assert scores == {g: ((0.0 if g == lost else 1.0), False) for g in scores}
    nb = graded.autograded("wrong", stem)
    (cell,) = [c for c in nb.cells if _grade_id(c) == lost]
    assert _errors(cell) == ["CheckFailed"]
    message = WRONG.get(stem, GENERIC).message
    (error,) = [o for o in cell.outputs if o.output_type == "error"]
    assert message in " ".join(error.evalue.split())  # shown under the cell in the feedback
    assert message in " ".join(graded.feedback("wrong", stem).split())


def test_hidden_tests_alone_fail_answers_left_empty(assignment, monkeypatch, tmp_path):
    """Every answer left empty (``pass``: functions return None, methods do nothing), the
    visible checks removed: every hidden test must fail on its own."""
    nb = nbformat.read(assignment, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if _nbgrader(cell).get("solution"):
            cell.source = _replace_regions(cell.source, "pass")
        elif _nbgrader(cell).get("grade"):
            hidden = cell.source.partition(BEGIN_HIDDEN)[2].partition(END_HIDDEN)[0]
            cell.source = textwrap.dedent(hidden).strip("\n")  # empty: no hidden test, it passes
    monkeypatch.delenv("RLMEMLIB_CHECK_MODE", raising=False)
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    passed = [_grade_id(c) for c in nb.cells if _nbgrader(c).get("grade") and not _errors(c)]
    assert not passed, f"hidden tests that pass an empty answer: {passed}"
