"""bench/frames.py runs, and its tables have a row for every memory (timings are never asserted)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROWS = ["FramePool", "FramePool (zstd)", "CircularPool (share_next_obs)", "SB3 ReplayBuffer",
        "SB3 ReplayBuffer (optimize_memory_usage)", "cpprb ReplayBuffer (stack_compress, next_of)",
        "TorchRL ReplayBuffer (CompressedListStorage)"]


@pytest.mark.slow
def test_quick_frames_benchmark_runs_and_names_every_memory(tmp_path):
    env = dict(os.environ, RLMEMLIB_PROGRESS="0", MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "frames.py"), "--quick", "--out",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (tmp_path / "frames.md").read_text()
    assert "cores" in table and "ale-py" in table
    for game in ("### Pong", "### MsPacman"):
        assert game in table
    for name in ROWS:
        rows = [line for line in table.splitlines() if line.startswith(f"| {name} |")]
        assert len(rows) == 2, name  # one per game
        first = rows[0].split("|")[2].strip()
        assert first[0].isdigit() or first.startswith("skipped"), (name, first)
        assert len(rows[0].split("|")) == 8 or first.startswith("skipped"), rows[0]
    for name in ("FramePool", "FramePool (zstd)"):
        assert all(" | yes | " in line for line in table.splitlines() if line.startswith(f"| {name} |"))
