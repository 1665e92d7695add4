"""The set-up promises of the README: one dependency list, and command 1 serving the course."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _course_module():
    spec = importlib.util.spec_from_file_location("course", ROOT / "tools" / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _requirement(text: str) -> tuple[str, str]:
    """('numpy', '<3,>=1.24') from 'numpy>=1.24,<3': name normalized, specifiers sorted."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*([^;]*?)\s*", text)
    assert match, f"cannot read the requirement {text!r}"
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    specs = ",".join(sorted(s.strip() for s in match.group(2).split(",") if s.strip()))
    return name, specs


def _pyproject_deps() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(_requirement(d) for d in project["dependencies"])


def _conda_deps() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = {}
    for item in env["dependencies"]:
        if isinstance(item, str):
            name, specs = _requirement(item)
            if name not in ("python", "pip"):
                deps[name] = specs
    return deps


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    pyproject, conda = _pyproject_deps(), _conda_deps()
    missing = sorted(set(pyproject) - set(conda))
    extra = sorted(set(conda) - set(pyproject))
    differ = sorted(n for n in set(pyproject) & set(conda) if pyproject[n] != conda[n])
    assert not (missing or extra or differ), (
        f"environment.yml and pyproject.toml disagree: missing from environment.yml {missing}, "
        f"only in environment.yml {extra}, different ranges {[(n, pyproject[n], conda[n]) for n in differ]}")


def test_environment_yml_installs_the_course_itself_and_needs_python_3_10():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = [i for i in env["dependencies"] if isinstance(i, dict)][0]["pip"]
    assert "-e ." in pip_section
    assert "python>=3.10" in env["dependencies"]


def test_dependencies_are_ranges_not_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    every = project["dependencies"] + [d for ds in project["optional-dependencies"].values() for d in ds]
    pinned = [d for d in every if "==" in d]
    assert not pinned, f"pinned dependencies (use ranges): {pinned}"
    assert not [d for d in every if re.match(r"\s*torch\b", d)], "torch must never be a course dependency"


def test_requirement_reader_catches_a_difference():
    # The comparison above must be able to fail: a changed range is seen.
    assert _requirement("numpy>=1.24,<3") != _requirement("numpy>=1.24,<2")
    assert _requirement("memory_profiler>=0.61") == _requirement("memory-profiler>=0.61")


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", readme, re.S)
    first = [line for line in blocks[0].splitlines() if line.strip() and not line.startswith("#")]
    assert first == ["python3 tools/course.py lab", "python3 tools/course.py test"], first
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [l for l in ci.splitlines() if l.strip() and not l.startswith("#")
                and not l.startswith(("set ", "cd "))]
    assert commands == ["exec python3 tools/course.py test"], commands


def test_readme_never_turns_the_token_off():
    text = (ROOT / "README.md").read_text() + (ROOT / "tools" / "course.py").read_text()
    for notebook in ROOT.glob("notebooks/*.ipynb"):
        text += notebook.read_text()
    assert not re.search(r"token\s*=\s*(''|\"\"|$)", text, re.M)
    assert "--ServerApp.token=" not in text and "--NotebookApp.token=" not in text
    assert "--ip=0.0.0.0" not in text and "ServerApp.ip=0.0.0.0" not in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, json.loads(response.read() or b"null")


def test_command_1_serves_the_lessons_on_localhost_with_a_token(tmp_path):
    course = _course_module()
    port = _free_port()
    cmd = course.lab_command(Path(sys.executable), ["--no-browser", f"--ServerApp.port={port}",
                                                    "--ServerApp.port_retries=0"])
    assert "--ServerApp.ip=127.0.0.1" in cmd
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        info = _wait_for_server_info(tmp_path / "runtime", server, deadline=time.time() + 90)
        assert info["port"] == port and info["hostname"] in ("127.0.0.1", "localhost")
        token = info["token"]
        assert len(token) >= 16, "command 1 must keep Jupyter's token on"
        base = f"http://127.0.0.1:{port}"
        status, _ = _get(f"{base}/api/status?token={token}")
        assert status == 200
        _, listing = _get(f"{base}/api/contents/notebooks?token={token}")
        served = {item["name"] for item in listing["content"]}
        lessons = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
        assert "00_measuring_memory.ipynb" in served and lessons <= served, (served, lessons)
        try:
            _get(f"{base}/api/contents/notebooks")
            raise AssertionError("the server answered without a token")
        except urllib.error.HTTPError as err:
            assert err.code == 403
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    assert server.returncode is not None


def _wait_for_server_info(runtime: Path, server, deadline: float) -> dict:
    while time.time() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"JupyterLab exited early with code {server.returncode}")
        for path in runtime.glob("jpserver-*.json"):
            try:
                info = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue  # being written
            try:
                _get(f"http://127.0.0.1:{info['port']}/api/status?token={info['token']}", timeout=2)
                return info
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
        time.sleep(0.5)
    raise AssertionError("JupyterLab did not come up within 90 s")
