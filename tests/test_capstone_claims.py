"""Claims of lesson 06 about the operating system's view, checked where they apply (Linux, glibc)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

REGION = textwrap.dedent("""
    import numpy as np

    def region(array):
        with open("/proc/self/maps") as maps:
            for line in maps:
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                if start <= array.ctypes.data < end:
                    return "heap" if line.rstrip().endswith("[heap]") else "own mapping"

    before = np.zeros(240_000, np.uint8)  # the capstone pool's obs array: 15,000 x 4 float32
    import gymnasium
    after = np.zeros(240_000, np.uint8)
    print(region(before), region(after), sep=",")
""")


@pytest.mark.skipif(not GLIBC, reason="glibc's mmap threshold")
def test_importing_gymnasium_raises_the_mmap_threshold_above_a_pool_array():
    out = subprocess.run([sys.executable, "-c", REGION], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "own mapping,heap"
