"""Generate exercises/ from solutions/, the single source of the exercises.

    python3 tools/course.py regen     # runs this first, then re-executes solutions/

Markers in solutions/ are nbgrader's:

* ``### BEGIN SOLUTION`` / ``### END SOLUTION`` in a code cell: the lines between become a
  stub. An assignment keeps its target (``slot = ...``), a ``return`` becomes ``return ...``,
  anything else is dropped; an empty stub is a bare ``...``. A ``# YOUR CODE HERE`` line
  marks the place.
* ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` in a check cell: removed.

Solutions also get nbgrader cell metadata (solution cells, and autograded check cells worth one
point), so a teacher can put a solutions notebook into nbgrader's ``source/`` folder as it is.
Exercises are written without outputs, and with the same nbgrader cell metadata as their
solutions: an exercise notebook handed out as it is and collected into nbgrader is graded like
nbgrader's own release (``nbgrader autograde`` puts the hidden tests back into its check cells).
Without that metadata nbgrader would grade nothing in it, and say nothing.
"""

from __future__ import annotations

import ast
import copy
import re
import sys
import textwrap
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbtools import HASH_KEY, normalize_metadata  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
# A check cell starts with a call of the lesson's check module, `check.name(answer)`;
# `check.working...` (fallbacks) and `check.is_unfinished` are helpers, not checks.
CHECK_CELL = re.compile(r"^check\.(?!working|is_unfinished)\w+\(")


def stub(lines: list[str], indent: str) -> list[str]:
    """The stub that replaces a solution block (lines without their newline)."""
    body = textwrap.dedent("\n".join(lines))
    kept: list[str] = []
    try:
        tree = ast.parse(body)
    except SyntaxError:
        tree = None
    for node in tree.body if tree else []:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            kept.append(" = ".join(ast.get_source_segment(body, t) for t in targets) + " = ...")
        elif isinstance(node, ast.Return):
            kept.append("return ...")
    return [indent + "# YOUR CODE HERE"] + [indent + line for line in kept or ["..."]]


def strip_solutions(source: str) -> str:
    """A code cell's source with solution blocks stubbed and hidden tests removed."""
    out: list[str] = []
    block: list[str] | None = None
    hidden = False
    indent = ""
    for line in source.split("\n"):
        marker = line.strip()
        if marker == BEGIN:
            block, indent = [], line[: len(line) - len(line.lstrip())]
        elif marker == END:
            if block is None:
                raise ValueError(f"{END} without {BEGIN}")
            out += stub(block, indent)
            block = None
        elif marker == BEGIN_HIDDEN:
            hidden = True
        elif marker == END_HIDDEN:
            hidden = False
        elif block is not None:
            block.append(line)
        elif not hidden:
            out.append(line)
    if block is not None or hidden:
        raise ValueError("a solution or hidden-tests block is not closed")
    return "\n".join(out).rstrip("\n")


def annotate(nb, stem: str) -> None:
    """Give solution and check cells nbgrader's metadata (idempotent)."""
    for k, cell in enumerate(nb.cells):
        meta = cell.setdefault("metadata", {})
        if cell.cell_type != "code":
            meta.pop("nbgrader", None)
            continue
        grade_id = f"{stem}-cell-{k}"
        if BEGIN in cell.source:
            meta["nbgrader"] = {"grade": False, "grade_id": grade_id, "locked": False,
                                "schema_version": 3, "solution": True, "task": False}
        elif CHECK_CELL.match(cell.source.lstrip()):
            meta["nbgrader"] = {"grade": True, "grade_id": grade_id, "locked": True, "points": 1,
                                "schema_version": 3, "solution": False, "task": False}
        else:
            meta.pop("nbgrader", None)


def exercise_from(solution) -> nbformat.NotebookNode:
    """The exercise notebook made from a solution notebook: stubs, no outputs, no hidden tests,
    the solution's nbgrader cell metadata."""
    nb = copy.deepcopy(solution)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop(HASH_KEY, None)
    normalize_metadata(nb)
    return nb


def generate(write: bool = True, paths=None) -> dict[Path, nbformat.NotebookNode]:
    """Annotate solutions (all, or ``paths``) and make their exercises; write unless ``write`` is False."""
    made = {}
    for path in sorted(Path(p).resolve() for p in paths) if paths else sorted((ROOT / "solutions").glob("*.ipynb")):
        solution = nbformat.read(path, as_version=4)
        before = copy.deepcopy(solution)
        annotate(solution, path.stem)
        if write and solution != before:
            nbformat.write(solution, path)
        made[ROOT / "exercises" / path.name] = exercise_from(solution)
    if write:
        (ROOT / "exercises").mkdir(exist_ok=True)
        for target, nb in made.items():
            nbformat.write(nb, target)
            print(f"{target.relative_to(ROOT)}: generated", flush=True)
    return made


if __name__ == "__main__":
    generate(paths=sys.argv[1:] or None)
