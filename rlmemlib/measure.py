"""Measuring memory: exact bytes with tracemalloc, the operating system's view with RSS.

The course's rule: assert on tracemalloc (exact and deterministic, numpy buffers included),
show RSS for the operating system's view (biased by allocator history and page granularity;
assert it only coarsely).

>>> import numpy as np
>>> with traced() as m:
...     block = np.zeros(1_000_000, np.uint8)
>>> m.current >= 1_000_000, fmt_bytes(1_000_000)
(True, '977 KiB')
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["traced", "Traced", "footprint", "fmt_bytes", "rss", "rss_peak_during", "MemoryCurve",
           "traced_now"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def fmt_bytes(n) -> str:
    """The course's one way to print a byte count: binary units, three significant digits.

    >>> fmt_bytes(39), fmt_bytes(2048), fmt_bytes(1536), fmt_bytes(-3 * 2**20), fmt_bytes(123456789)
    ('39 B', '2.00 KiB', '1.50 KiB', '-3.00 MiB', '118 MiB')
    """
    value = float(n)
    sign = "-" if value < 0 else ""
    value = abs(value)
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{sign}{value:.0f} B" if value == int(value) else f"{sign}{value:.1f} B"
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{sign}{value:.{digits}f} {_UNITS[unit]}"


@dataclass
class Traced:
    """What a ``traced()`` block allocated: bytes and blocks still alive at its end, and the peak."""

    current: int = 0   # bytes allocated in the block and still alive at its end (net)
    peak: int = 0      # highest traced bytes during the block, above where it started
    blocks: int = 0    # memory blocks allocated in the block and still alive at its end (net)

    def __str__(self) -> str:
        # Rounded on purpose: inside a Jupyter kernel, the kernel's own threads allocate a few
        # blocks now and then, and tracemalloc sees the whole process.
        return f"current {fmt_bytes(self.current)}, peak {fmt_bytes(self.peak)}"


class traced:
    """A context manager measuring what its block allocates, with tracemalloc.

    It starts tracemalloc if it is off and stops it again at the end; if tracemalloc was
    already on it leaves it on, so measurements can span several cells. Collect garbage
    first (``gc.collect()``) when a cycle from earlier work could be freed inside the block.
    """

    def __init__(self, count_blocks: bool = True):
        self.count_blocks = count_blocks
        self.result = Traced()

    def __enter__(self) -> Traced:
        self._started = not tracemalloc.is_tracing()
        if self._started:
            tracemalloc.start()
        self._blocks0 = _live_blocks() if self.count_blocks else 0
        tracemalloc.reset_peak()
        self._bytes0 = tracemalloc.get_traced_memory()[0]
        return self.result

    def __exit__(self, *exc) -> None:
        now, peak = tracemalloc.get_traced_memory()
        self.result.current = now - self._bytes0
        self.result.peak = max(0, peak - self._bytes0)
        if self.count_blocks:
            self.result.blocks = _live_blocks() - self._blocks0
        if self._started:
            tracemalloc.stop()


def _live_blocks() -> int:
    """Memory blocks tracemalloc traces now (the snapshot's own objects freed before we return)."""
    snapshot = tracemalloc.take_snapshot()
    count = len(snapshot.traces)
    del snapshot
    return count


def traced_now() -> int:
    """Bytes tracemalloc traces right now (0 when it is off)."""
    return tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0


def footprint(build: Callable[[], object]):
    """Build an object and measure the bytes it keeps alive: returns ``(obj, Traced)``.

    >>> data, m = footprint(lambda: bytearray(10_000))
    >>> 10_000 <= m.current < 10_200
    True
    """
    gc.collect()
    with traced() as m:
        obj = build()
    return obj, m


def rss() -> int:
    """Resident set size of this process in bytes: what the operating system has mapped in."""
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


def rss_peak_during(func: Callable, *args, interval: float = 0.01, **kwargs):
    """Run ``func`` and return ``(its result, peak RSS in bytes while it ran)``, via memory_profiler."""
    from memory_profiler import memory_usage

    peak_mib, result = memory_usage((func, args, kwargs), interval=interval, max_usage=True,
                                    retval=True, include_children=False)
    return result, int(peak_mib * 2**20)


@dataclass
class MemoryCurve:
    """Memory against steps, recorded as a run goes; plot it with ``rlmemlib.plotting``.

    ``record(step)`` stores the bytes tracemalloc traces (``traced``) and, when
    ``with_rss`` is set, the process RSS (``rss``). ``offset`` is subtracted from the traced
    bytes, so a curve can start at zero.
    """

    label: str = ""
    with_rss: bool = False
    offset: int = 0
    steps: list = field(default_factory=list)
    traced: list = field(default_factory=list)
    rss: list = field(default_factory=list)

    def record(self, step: int, nbytes: int | None = None) -> None:
        """Record one point; ``nbytes`` overrides the tracemalloc reading (e.g. ``pool.nbytes``)."""
        self.steps.append(int(step))
        self.traced.append((traced_now() if nbytes is None else int(nbytes)) - self.offset)
        if self.with_rss:
            self.rss.append(rss())

    def zero_here(self) -> "MemoryCurve":
        """Make the current traced bytes the curve's zero."""
        self.offset = traced_now()
        return self

    @property
    def last(self) -> int:
        return self.traced[-1] if self.traced else 0


# ---------------------------------------------------------------------------------------------
# The C library's allocator, and experiments in a fresh process.
#
# Whether freed memory goes back to the operating system depends on the C library's malloc and
# on everything the process allocated before. glibc serves a request from a mapping of its own
# only above its mmap threshold, which starts at 128 KiB and rises, up to 32 MiB on 64-bit
# systems, to the size of each such block freed; below it, freed memory stays in the heap until
# ``malloc_trim``. An experiment about the operating system's view is repeatable only in a
# process with a known history: ``in_fresh_process`` runs one in a new interpreter.

def _glibc():
    """The C library through ctypes when it is glibc, else None (musl, macOS, Windows)."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  (present in every glibc; checked anyway)
    except (OSError, AttributeError):
        return None
    return libc


def is_glibc() -> bool:
    """Whether this process's C library is glibc (the allocator the course's RSS figures show)."""
    return _glibc() is not None


def malloc_trim() -> bool | None:
    """glibc's ``malloc_trim(0)``: give the heap's free pages back to the operating system.

    Returns whether glibc released memory, or None when the C library is not glibc (there is
    no such call; the memory a C library keeps is then its own business).
    """
    libc = _glibc()
    if libc is None:
        return None
    return bool(libc.malloc_trim(0))


def malloc_stats() -> dict | None:
    """glibc's ``mallinfo2()`` of the main heap, in bytes, or None when not glibc.

    ``heap``: bytes the heap has from the operating system (``brk``); ``mapped``: bytes in
    blocks with a mapping of their own (above the mmap threshold); ``in_use``: bytes handed out
    from the heap; ``free``: bytes free inside the heap, kept for reuse (RSS counts those of
    its pages that were ever written); ``top``: free bytes at the top of the heap, which a trim
    gives back first. Only the main arena is counted (other threads' arenas are not).
    """
    import ctypes

    libc = _glibc()
    if libc is None:
        return None
    names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
             "fordblks", "keepcost")
    field_type = ctypes.c_size_t if hasattr(libc, "mallinfo2") else ctypes.c_int

    class _Info(ctypes.Structure):
        _fields_ = [(n, field_type) for n in names]

    fn = libc.mallinfo2 if hasattr(libc, "mallinfo2") else libc.mallinfo
    fn.restype = _Info
    info = fn()
    return {"heap": info.arena, "mapped": info.hblkhd, "in_use": info.uordblks,
            "free": info.fordblks, "top": info.keepcost}


def pymalloc_stats() -> dict | None:
    """CPython's small-object allocator now, from ``sys._debugmallocstats()``; None if absent.

    ``arenas``: arenas held (each ``arena_size`` bytes, mapped from the operating system and
    given back only when every block in it is free); ``in_use``: bytes in allocated blocks
    (requests rounded up to the size classes, 16-byte steps on 64-bit builds); ``size_classes``.
    None when the interpreter does not use pymalloc (``PYTHONMALLOC=malloc``, other Pythons).
    """
    import re
    import sys
    import tempfile

    if not hasattr(sys, "_debugmallocstats"):
        return None
    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)  # the statistics go to the C-level stderr
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    arenas = re.search(r"^(\d+) arenas \* (\d+) bytes/arena", text, re.M)
    in_use = re.search(r"# bytes in allocated blocks\s*=\s*([\d,]+)", text)
    classes = re.search(r"in (\d+) size classes", text)
    if arenas is None or in_use is None:
        return None
    return {"arenas": int(arenas[1]), "arena_size": int(arenas[2]),
            "in_use": int(in_use[1].replace(",", "")),
            "size_classes": int(classes[1]) if classes else None}


_FRESH_PRELUDE = """\
import gc, json, sys
import numpy as np
from rlmemlib.measure import rss, malloc_trim, malloc_stats, is_glibc, pymalloc_stats
MiB = 2**20
def report(*values):
    sys.stdout.write("@report " + json.dumps(values[0] if len(values) == 1 else values) + "\\n")
    sys.stdout.flush()
"""


def in_fresh_process(source: str, timeout: float = 300.0) -> list:
    """Run Python ``source`` in a new interpreter; return the values it passed to ``report``.

    The source sees ``np``, ``gc``, ``MiB``, ``rss()``, ``malloc_trim()``, ``malloc_stats()``,
    ``is_glibc()``, ``pymalloc_stats()`` and ``report(*values)`` (values must be JSON: numbers, strings, lists). The
    new process has no allocator history, so its RSS figures repeat from run to run. An error
    in the source raises ``RuntimeError`` with the end of its traceback.

    >>> in_fresh_process("report(len([0] * 3), 'ok')")
    [[3, 'ok']]
    """
    import subprocess
    import sys
    import textwrap

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    code = _FRESH_PRELUDE + textwrap.dedent(source)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-6:])
        raise RuntimeError(f"the fresh process failed (exit code {done.returncode}):\n{tail}")
    import json

    marker = "@report "
    return [json.loads(line[len(marker):]) for line in done.stdout.split("\n")
            if line.startswith(marker)]


__all__ += ["is_glibc", "malloc_trim", "malloc_stats", "pymalloc_stats", "in_fresh_process"]


def time_per_call(candidates: dict, number: int = 1000, rounds: int = 7, globals: dict | None = None) -> dict:
    """Median seconds per call of each candidate, timed in interleaved rounds.

    ``candidates`` maps a name to a statement (a string, run in ``globals``) or to a callable
    with no arguments. Each round times every candidate ``number`` times, one after the other,
    so a slow moment of the machine hits them all alike; the median over ``rounds`` is
    returned. For illustration only: the course never asserts on a timing.

    >>> t = time_per_call({"sum": "sum(range(100))"}, number=100, rounds=3)
    >>> 0 < t["sum"] < 1
    True
    """
    import statistics
    import timeit

    timers = {name: timeit.Timer(c, globals=globals) if isinstance(c, str) else timeit.Timer(c)
              for name, c in candidates.items()}
    seen: dict = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            seen[name].append(timer.timeit(number) / number)
    return {name: statistics.median(times) for name, times in seen.items()}


__all__ += ["time_per_call"]
