#!/usr/bin/env python3
"""Set up the course and run it: the README's two commands, plus the maintainers' one.

    python3 tools/course.py lab     # set everything up, open the course in JupyterLab
    python3 tools/course.py test    # set everything up, run every test
    python3 tools/course.py regen   # re-execute notebooks, regenerate exercises (maintainers)
    python3 tools/course.py flaky   # strict nbval 3 times over, report cells that change

Set-up makes a virtual environment in ``.venv`` beside this folder and installs the course
into it (``pip install -e ".[test]"``); it installs again only when ``pyproject.toml``
changes. It needs nothing but ``python3`` (3.10 or newer) and the network to PyPI.
Extra arguments after the subcommand go to JupyterLab, pytest or the regenerator.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("RLMEMLIB_VENV", ROOT / ".venv"))
STAMP = VENV / ".course-installed"
FIRST_LESSON = "notebooks/00_measuring_memory.ipynb"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _stamp_text() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return f"{digest} {sys.version_info[:2]}"


def _say(text: str) -> None:
    print(f"[course] {text}", flush=True)


def setup() -> Path:
    """Make ``.venv`` and install the course into it, unless that is already done."""
    if sys.version_info < (3, 10):
        sys.exit(f"The course needs Python 3.10 or newer; this is {sys.version.split()[0]}.")
    python = venv_python()
    if not python.exists():
        _say(f"creating a virtual environment in {VENV.relative_to(ROOT) if VENV.is_relative_to(ROOT) else VENV}")
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except Exception as exc:  # Debian/Ubuntu ship venv without ensurepip
            sys.exit(f"Could not create a virtual environment ({exc}).\n"
                     "On Debian or Ubuntu: sudo apt install python3-venv, then run this again.")
    if not STAMP.exists() or STAMP.read_text() != _stamp_text():
        _say("installing the course and its dependencies (the first time takes a few minutes)")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-e", f"{ROOT}[test]"], check=True)
        STAMP.write_text(_stamp_text())
    return python


def lab_command(python: Path, extra: list[str] | None = None) -> list[str]:
    """JupyterLab on localhost only, token on (Jupyter's default), opened at the first lesson."""
    cmd = [str(python), "-m", "jupyter", "lab", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.root_dir={ROOT}", f"--LabApp.default_url=/lab/tree/{FIRST_LESSON}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers often run as root; Jupyter refuses it otherwise
    return cmd + list(extra or [])


def test_command(python: Path, extra: list[str] | None = None) -> list[str]:
    return [str(python), "-m", "pytest", *list(extra or [])]


def course_env() -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("lab", "test", "regen", "flaky", "setup"):
        print(__doc__)
        return 2
    what, extra = argv[0], argv[1:]
    python = setup()
    os.chdir(ROOT)
    if what == "setup":
        return 0
    if what == "lab":
        _say("starting JupyterLab on 127.0.0.1; open the link with the token that it prints")
        return subprocess.call(lab_command(python, extra), env=course_env())
    if what in ("regen", "flaky"):
        return subprocess.call([str(python), str(ROOT / "tools" / f"{what}.py"), *extra], env=course_env())
    code = subprocess.call(test_command(python, extra), env=course_env())
    return code


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
