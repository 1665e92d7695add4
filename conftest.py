"""pytest settings for the notebook folders (unit tests live in tests/).

* notebooks/ and solutions/ run under strict nbval (outputs compared), exercises/ under lax
  nbval (they are shipped without outputs).
* Kernels inherit the environment: progress bars off, a fixed hash seed, and the check mode of
  rlmemlib.checks for the folder (``solution`` for solutions/, ``stub`` for exercises/).
* Every notebook runs offline (tools/offline/sitecustomize.py refuses connections to other
  hosts) and from a working directory that is not its own folder, so a notebook that downloads
  something or reads a relative path fails its test. (The regenerator runs them from their own
  folder, as JupyterLab does: both must work.)
"""

import os
import sys
import tempfile
from pathlib import Path

import nbval.plugin
import pytest

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tools"))
from nbtools import CHECK_MODE  # noqa: E402

os.environ["RLMEMLIB_PROGRESS"] = "0"
os.environ.setdefault("PYTHONHASHSEED", "0")
OFFLINE = str(ROOT / "tools" / "offline")
os.environ["PYTHONPATH"] = os.pathsep.join(
    [OFFLINE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != OFFLINE])
ELSEWHERE = tempfile.mkdtemp(prefix="course-cwd-")


class _KernelElsewhere(nbval.plugin.RunningKernel):
    """nbval's kernel, started in a scratch folder instead of the notebook's own."""

    elsewhere = ELSEWHERE

    def __init__(self, kernel_name, cwd=None, startup_timeout=60):
        super().__init__(kernel_name, cwd=self.elsewhere, startup_timeout=startup_timeout)


nbval.plugin.RunningKernel = _KernelElsewhere


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
