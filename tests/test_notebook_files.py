"""Meta tests of the committed notebooks: regenerated after every code change, and well formed.

nbval checks that each notebook's outputs are what its code prints; these tests check what
nbval cannot: that the outputs were produced by the current code (a code hash written by
``tools/course.py regen``), that they were produced top to bottom in a fresh kernel, and that
every lesson follows the course's skeleton.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from nbtools import HASH_KEY, code_hash, package_hash  # noqa: E402

EXECUTED = sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("solutions/*.ipynb")])
LESSONS = sorted(ROOT.glob("notebooks/*.ipynb"))
MACHINE_PATHS = re.compile(r"/(work|root|home|tmp|private|Users)/[\w.\-]+")
REGEN = "python3 tools/course.py regen"
PACKAGE_HASH = package_hash()


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _text(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def outputs_are_current(nb: dict, package: str | None = None) -> str | None:
    """Why the outputs are stale, or None when they were made by the current code.

    The current code is the notebook's own cells and rlmemlib's sources (``package``: their
    hash, by default the working tree's): figures and numbers come from both.
    """
    record = nb.get("metadata", {}).get(HASH_KEY, {})
    recorded = record.get("code_hash")
    if recorded is None:
        return "it was never run by the regenerator"
    if recorded != code_hash(nb):
        return "its code changed after its outputs were regenerated"
    if record.get("package_hash") != (package or PACKAGE_HASH):
        return "rlmemlib changed after its outputs were regenerated"
    counts = [c.get("execution_count") for c in _code_cells(nb)]
    if counts != list(range(1, len(counts) + 1)):
        return f"its execution counts are {counts}, not 1..{len(counts)} (run top to bottom)"
    if any("execution" in c.get("metadata", {}) for c in nb["cells"]):
        return "it carries timing metadata"
    return None


def test_package_hash_sees_every_source_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    before = package_hash(tmp_path)
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")  # a change in a subpackage
    assert package_hash(tmp_path) != before
    (tmp_path / "sub" / "b.py").write_text("y = 2\r\n")  # line endings alone are no change
    assert package_hash(tmp_path) == before


def test_there_are_lessons():
    assert [p.name for p in LESSONS][:1] == ["00_measuring_memory.ipynb"]


@pytest.mark.parametrize("path", EXECUTED, ids=_id)
def test_outputs_were_regenerated_by_the_current_code(path):
    problem = outputs_are_current(_load(path))
    assert problem is None, f"{_id(path)}: {problem}. Run: {REGEN} {_id(path)}"


def test_a_code_change_without_regeneration_is_caught():
    nb = _load(LESSONS[0])
    assert outputs_are_current(nb) is None
    _code_cells(nb)[1]["source"] = _text(_code_cells(nb)[1]) + "\nx = 1"
    assert "code changed" in outputs_are_current(nb)
    nb = _load(LESSONS[0])
    assert "rlmemlib changed" in outputs_are_current(nb, package="0" * 16)
    nb = _load(LESSONS[0])
    _code_cells(nb)[2]["execution_count"] = 7
    assert "execution counts" in outputs_are_current(nb)
    nb = _load(LESSONS[0])
    nb["cells"][0].setdefault("metadata", {})["execution"] = {"iopub.status.busy": "now"}
    assert "timing" in outputs_are_current(nb)


@pytest.mark.parametrize("path", LESSONS, ids=_id)
def test_lesson_follows_the_skeleton(path):
    nb = _load(path)
    markdown = "\n".join(_text(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    number = path.name[:2]
    first = _text(nb["cells"][0])
    assert first.startswith(f"# {number} · "), f"{path.name}: title must start with '# {number} · '"
    assert re.search(r"^≈ \d+ min · CPU", first, re.M), f"{path.name}: header line '≈ N min · CPU · ...'"
    for heading in ("**By the end you will be able to**", "## 1. ", "## Summary", "## Self-check"):
        assert heading in markdown, f"{path.name}: missing {heading!r}"
    assert "**Think!**" in markdown and "<details>" in markdown, f"{path.name}: needs Think! prompts with answers"
    assert markdown.count("<details>") >= 4, f"{path.name}: Think! and quiz answers go in <details>"
    code = "\n".join(_text(c) for c in _code_cells(nb))
    assert "assert " in code, f"{path.name}: measured claims must be asserted"
    if "## Bonus" in markdown:
        assert markdown.index("## Bonus") > markdown.index("## Self-check"), "Bonus only at the end"


@pytest.mark.parametrize("path", LESSONS, ids=_id)
def test_plot_cells_end_with_show(path):
    for cell in _code_cells(_load(path)):
        src = _text(cell)
        if "rm.plotting." in src or "plt." in src:
            lines = [l for l in src.strip().splitlines() if l.strip()]
            if any(k in src for k in ("plot", "bar", "subplots")) and "plt.show()" not in src:
                raise AssertionError(f"{path.name}: a plot cell must end with plt.show():\n{src}")
            if "plt.show()" in src:
                assert lines[-1].strip() == "plt.show()", f"{path.name}: plt.show() must be last:\n{src}"


@pytest.mark.parametrize("path", sorted(ROOT.glob("*/*.ipynb")), ids=_id)
def test_no_machine_paths_in_notebooks(path):
    found = MACHINE_PATHS.findall(path.read_text(encoding="utf-8"))
    assert not found, f"{_id(path)} mentions paths of one machine: {found[:3]}"


def test_every_lesson_is_on_the_course_map():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in LESSONS:
        assert f"(notebooks/{path.name})" in readme, f"README's course map misses {path.name}"


def minutes_in_readme(readme: str, name: str) -> str | None:
    """The time the README's course map gives a lesson, e.g. '45', or None."""
    found = re.search(r"\[" + re.escape(name) + r"\]\([^)]*\) \| ≈ (\d+) min", readme)
    return found.group(1) if found else None


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_the_course_map_gives_each_lesson_the_time_of_its_header(path):
    header = _text(_load(path)["cells"][0])
    minutes = re.search(r"≈ (\d+) min", header)
    assert minutes, f"{path.name}: the header line gives no '≈ N min'"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert minutes_in_readme(readme, path.stem) == minutes.group(1), (
        f"README's course map gives {path.stem} ≈ {minutes_in_readme(readme, path.stem)} min, "
        f"its header ≈ {minutes.group(1)} min")
    assert minutes_in_readme(readme.replace(f"≈ {minutes.group(1)} min", "≈ 1 min"),
                             path.stem) != minutes.group(1)  # the lookup sees a changed time
