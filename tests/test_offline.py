"""The notebooks' test kernels run offline and away from their folder (see the root conftest)."""

import os
import subprocess
import sys
from pathlib import Path

import nbval.plugin

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = str(ROOT / "tools" / "offline")


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=OFFLINE)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)


def test_test_processes_get_the_offline_guard():
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == OFFLINE


def test_connections_to_other_hosts_fail_at_once():
    out = _run("import socket\n"
               "try:\n    socket.create_connection(('93.184.216.34', 80), timeout=5)\n"
               "except OSError as e:\n    print('refused', e)\n")
    assert "refused" in out.stdout and "offline" in out.stdout, out
    out = _run("import urllib.request\n"
               "try:\n    urllib.request.urlopen('http://example.com', timeout=5)\n"
               "except OSError as e:\n    print('refused', e)\n")
    assert "refused" in out.stdout, out


def test_connections_to_this_machine_still_work():
    out = _run("import socket\n"
               "server = socket.socket(); server.bind(('127.0.0.1', 0)); server.listen()\n"
               "client = socket.create_connection(server.getsockname(), timeout=5)\n"
               "print('connected')\n")
    assert "connected" in out.stdout, out


def test_notebook_kernels_start_elsewhere():
    kernel_class = nbval.plugin.RunningKernel
    assert kernel_class.__name__ == "_KernelElsewhere"
    elsewhere = Path(kernel_class.elsewhere)
    assert elsewhere.is_dir() and not elsewhere.resolve().is_relative_to(ROOT)


def test_flaky_report_names_cells_that_change_or_fail():
    sys.path.insert(0, str(ROOT / "tools"))
    import flaky

    steady = {"nb::Cell 0": "passed", "nb::Cell 1": "passed"}
    assert flaky.report([steady, steady, steady]) == []
    wobbly = dict(steady, **{"nb::Cell 1": "failed"})
    assert flaky.report([steady, wobbly, steady]) == ["nb::Cell 1: passed / failed / passed"]
    assert flaky.report([steady, {"nb::Cell 0": "passed"}]) == ["nb::Cell 1: passed / missing"]
