"""Progress bars must not change what a lesson measures.

Learners run with progress bars on (the default); the tests run with them off. A rollout must
allocate the same with either, or a lesson's tracemalloc asserts would pass under test and fail
for a learner.
"""

import os
import subprocess
import sys

SCRIPT = r"""
import gc, tracemalloc
import gymnasium as gym
import rlmemlib as rm

env = gym.make("CartPole-v1")
spec = rm.TransitionSpec.from_env(env)

def held_after_rollout(progress):
    gc.collect()
    pool = rm.CircularPool(3000, spec)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    rm.rollout(env, pool, 2000, seed=0, progress_bar=progress)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return held

on = held_after_rollout(True)   # the first bar of the process, as in a lesson
off = held_after_rollout(False)
import sys
sys.stderr.write(f"{on} {off}\n")  # stdout carries the progress bar
"""


def test_a_rollout_with_a_progress_bar_allocates_what_one_without_does():
    env = dict(os.environ, RLMEMLIB_PROGRESS="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    on, off = map(int, out.stderr.strip().splitlines()[-1].split())
    assert "rollout:" in out.stdout  # the bar did show
    assert abs(on - off) < 8 * 1024, f"with a progress bar {on} B stay allocated, without {off} B"
