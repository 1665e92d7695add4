"""pytest settings for the notebook folders (unit tests live in tests/).

* notebooks/ and solutions/ run under strict nbval (outputs compared), exercises/ under lax
  nbval (they are shipped without outputs).
* Kernels inherit the environment: progress bars off, a fixed hash seed, and the check mode of
  rlmemlib.checks for the folder (``solution`` for solutions/, ``stub`` for exercises/).
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tools"))
from nbtools import CHECK_MODE  # noqa: E402

os.environ["RLMEMLIB_PROGRESS"] = "0"
os.environ.setdefault("PYTHONHASHSEED", "0")


def _folder(path) -> str:
    try:
        return Path(path).resolve().relative_to(ROOT).parts[0]
    except (ValueError, IndexError):
        return ""


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path, parent):
    collectors = yield
    if file_path.suffix == ".ipynb" and _folder(file_path) == "exercises":
        for collector in collectors or []:
            if hasattr(collector, "compare_outputs"):
                collector.compare_outputs = False  # lax: exercises carry no outputs
    return collectors


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Runs before nbval starts a notebook's kernel, so the kernel inherits the mode.
    if item.path.suffix == ".ipynb":
        os.environ["RLMEMLIB_CHECK_MODE"] = CHECK_MODE.get(_folder(item.path), "")
