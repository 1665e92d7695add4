"""The benchmark runs, and its table has a row for every memory (timings are never asserted)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MEMORIES = [
    "ListMemory",
    "deque + random.sample",
    "CircularPool",
    "CircularPool (share_next_obs)",
    "RecyclingMemory",
    "bare numpy ring",
    "bare numpy ring (take)",
]
PEERS = [
    "cpprb ReplayBuffer",
    "cpprb ReplayBuffer (next_of)",
    "SB3 ReplayBuffer",
    "SB3 ReplayBuffer (optimize_memory_usage)",
]


def _rows(text: str) -> dict:
    """Table rows by their first cell, for the first table after each heading."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| memory") and not line.startswith("| target"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.setdefault(cells[0], []).append(cells[1:])
    return rows


def test_quick_benchmark_runs_and_names_every_memory(tmp_path):
    env = dict(os.environ, RLMEMLIB_PROGRESS="0", MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (tmp_path / "cartpole.md").read_text()
    assert (tmp_path / "cartpole.png").stat().st_size > 10_000
    assert (tmp_path / "cartpole.json").exists()
    assert "cores" in table and "numpy" in table  # the machine is named
    rows = _rows(table)
    number = re.compile(r"^\d[\d,]*(\.\d+)?")
    for name in MEMORIES:
        assert name in rows, f"no row for {name}"
        cartpole, atari = rows[name][0], rows[name][1]
        assert number.match(cartpole[0]) and number.match(cartpole[2]), cartpole  # bytes, add
        assert number.match(atari[0]), atari
    for name in PEERS:
        assert name in rows, f"no row for {name}"
        first = rows[name][0][0]
        assert number.match(first) or first.startswith("skipped"), (name, first)
        if first.startswith("skipped"):
            assert f"{name}: skipped" in done.stdout  # and it said so as it ran
