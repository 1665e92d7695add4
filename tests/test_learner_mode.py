"""Every lesson and exercise notebook runs as a learner runs it: progress bars on, no check
mode (exercises unfinished, so their checks say "not yet" and later cells fall back).

The default test run executes the notebooks with progress bars off, under nbval; this slower
run (``pytest -m slow tests/test_learner_mode.py``) catches what only shows with them on, such
as a bar's first import inflating a lesson's tracemalloc measurement.
"""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("exercises/*.ipynb")])


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_runs_for_a_learner(path, monkeypatch):
    monkeypatch.setenv("RLMEMLIB_PROGRESS", "1")
    monkeypatch.delenv("RLMEMLIB_CHECK_MODE", raising=False)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    if path.parent.name == "exercises":
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        assert "not yet" in text and "in place of your" in text
