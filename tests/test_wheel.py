"""The course works installed as a wheel (``pip install .``), not only editable.

Conda users, a JupyterHub image or a Binder build install the package without ``-e``; an
editable install finds every subpackage in the source tree and would hide one left out of the
wheel. So this test:

1. copies the project (without ``build/``, ``*.egg-info``, ``.venv``, ``.git``) to a temporary
   folder and builds the wheel there with ``pip wheel --no-deps --no-build-isolation
   --no-index``: the course venv's own setuptools, no network, nothing written into the
   repository, and no stale ``build/lib`` that could slip a forgotten subpackage into the wheel;
2. checks that the wheel holds every module of the source tree's ``rlmemlib`` and declares the
   dependencies of ``pyproject.toml``;
3. makes a fresh virtual environment without system site-packages and installs the wheel into
   it with ``pip --python <new venv> install --no-deps --no-index``. rlmemlib comes only from
   the wheel. Its third-party dependencies (numpy, gymnasium, Jupyter, ...) come from the course
   venv through one ``.pth`` line naming its site-packages: installing them again would take
   minutes and the network, and they are not what is tested. A path line in a ``.pth`` file
   adds that folder to ``sys.path`` after the new venv's own site-packages, and ``.pth`` files
   inside it are not read, so the course venv's editable rlmemlib stays out of reach (checked:
   before the wheel is installed, numpy imports there and rlmemlib does not);
4. in that venv, away from the source tree, imports every module (each must come from the new
   venv) and runs an exercise notebook of solutions/ with its checks in ``solution`` mode: every
   check prints "ok", and the kernel's rlmemlib is the installed one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "solutions" / "00_measuring_memory.ipynb"  # the quickest exercise notebook
SKIP = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__",
                              ".pytest_cache", ".hypothesis", ".ipynb_checkpoints")

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import rlmemlib
names = sorted(m.name for m in pkgutil.walk_packages(rlmemlib.__path__, "rlmemlib."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"executable": sys.executable,
                  "files": {n: sys.modules[n].__file__ for n in ["rlmemlib", *names]}}))
"""

RUN_NOTEBOOK = """
import sys
import nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
nb.cells.insert(0, nbformat.v4.new_code_cell(
    "import sys, rlmemlib\\nprint(sys.executable)\\nprint(rlmemlib.__file__)"))
NotebookClient(nb, timeout=300, kernel_name="python3",
               resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(nb, sys.argv[3])
"""


def _modules_in_tree(files) -> set[str]:
    """Module names of the ``rlmemlib/...py`` paths among ``files`` (``/``-separated)."""
    names = set()
    for name in files:
        if re.fullmatch(r"rlmemlib/(\w+/)*\w+\.py", name):
            names.add(name[:-3].replace("/", ".").removesuffix(".__init__"))
    return names


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _outside_env(tmp_path: Path) -> dict:
    """An environment that reaches nothing of the source tree or of a user's site-packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", RLMEMLIB_CHECK_MODE="solution", RLMEMLIB_PROGRESS="0",
               JUPYTER_PATH=str(tmp_path / "jupyter"), HOME=str(tmp_path))
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a clean copy of the project."""
    work = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, work / "project", ignore=SKIP)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--quiet", "--wheel-dir", work / "dist", work / "project"])
    (found,) = (work / "dist").glob("rlmemlib-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) with the wheel installed; returns its python."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    venv.EnvBuilder(system_site_packages=False, with_pip=False, symlinks=os.name != "nt").create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (site / "_course_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    before = subprocess.run([python, "-I", "-c", "import numpy, nbclient, rlmemlib"], cwd=env_dir,
                            capture_output=True, text=True)
    assert "No module named 'rlmemlib'" in before.stderr, "the dependencies come, rlmemlib does not"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "--quiet", wheel])
    return python


def test_the_wheel_holds_every_module_of_the_package(wheel):
    in_source = _modules_in_tree(p.relative_to(ROOT).as_posix() for p in (ROOT / "rlmemlib").rglob("*.py"))
    in_wheel = _modules_in_tree(zipfile.ZipFile(wheel).namelist())
    assert "rlmemlib.checks" in in_source
    assert in_wheel == in_source, f"missing from the wheel: {sorted(in_source - in_wheel)}"


def test_the_wheel_declares_the_course_dependencies(wheel):
    with zipfile.ZipFile(wheel) as whl:
        (meta,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        lines = whl.read(meta).decode().splitlines()
    declared = {str(Requirement(line.split(":", 1)[1])) for line in lines if line.startswith("Requires-Dist:")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = {str(Requirement(r)) for r in project["dependencies"]}
    assert listed <= declared
    for extra, requirements in project["optional-dependencies"].items():
        for r in requirements:
            req = Requirement(r)
            req.marker = None
            assert any(str(Requirement(d)).startswith(str(req)) and f'extra == "{extra}"' in d
                       for d in declared), f"{r} (extra {extra}) is not declared by the wheel"


def test_every_module_imports_from_the_installed_wheel(installed, tmp_path):
    done = _run([installed, "-I", "-c", IMPORT_ALL], cwd=tmp_path, env=_outside_env(tmp_path))
    report = json.loads(done.stdout.strip().splitlines()[-1])
    env_dir = installed.parent.parent
    assert Path(report["executable"]).parent.parent == env_dir
    assert "rlmemlib.checks" in report["files"] and "rlmemlib.checks.ex00" in report["files"]
    for name, file in report["files"].items():
        assert Path(file).is_relative_to(env_dir), f"{name} came from {file}, not from the wheel"


def test_an_exercise_notebook_runs_its_checks_from_the_installed_wheel(installed, tmp_path):
    out = tmp_path / "ran.ipynb"
    _run([installed, "-c", RUN_NOTEBOOK, NOTEBOOK, tmp_path, out], cwd=tmp_path,
         env=_outside_env(tmp_path))
    import nbformat

    nb = nbformat.read(out, as_version=4)
    text = ["".join(o.get("text", "") for o in c.outputs) for c in nb.cells if c.cell_type == "code"]
    executable, rlmemlib_file = text[0].split()
    env_dir = installed.parent.parent
    assert Path(executable).parent.parent == env_dir, "the kernel ran another python"
    assert Path(rlmemlib_file).is_relative_to(env_dir), f"the kernel imported {rlmemlib_file}"
    checks = [c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]
    said = ["".join(o.get("text", "") for o in c.outputs) for c in checks]
    assert checks and all(s.rstrip().endswith(": ok") for s in said), said
