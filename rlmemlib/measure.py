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
    """What a ``traced()`` block left and what passed through it.

    ``current`` and ``blocks`` are net: what the block allocated and left alive, minus what it
    freed of what was there before (a block that frees as much as it allocates shows 0, however
    much it allocated). ``peak`` sees what passed through: the most bytes alive at once during
    the block, above where it started.
    """

    current: int = 0   # net traced bytes: at the block's end minus at its start
    peak: int = 0      # highest traced bytes during the block, above where it started
    blocks: int = 0    # net live memory blocks: at the block's end minus at its start

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


def footprint(build: Callable[[], object], repeat: int = 1):
    """Build an object and measure the bytes it keeps alive: returns ``(obj, Traced)``.

    tracemalloc sees the whole process: in a Jupyter kernel, the kernel's own threads allocate
    a few blocks now and then, and one may land inside the measurement. With ``repeat=n`` the
    object is built ``n`` times and the build with the smallest ``current`` is returned.

    >>> data, m = footprint(lambda: bytearray(10_000))
    >>> 10_000 <= m.current < 10_200
    True
    >>> footprint(lambda: bytearray(10_000), repeat=3)[1].current < 10_200
    True
    """
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be an int >= 1, got {repeat!r}")
    best = None
    for _ in range(repeat):
        gc.collect()
        with traced() as m:
            obj = build()
        if best is None or m.current < best[1].current:
            best = (obj, m)
        del obj
    return best


def rss() -> int:
    """Resident set size of this process in bytes: what the operating system has mapped in."""
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


def rss_peak_during(func: Callable, *args, interval: float = 0.01, **kwargs):
    """Run ``func`` once and return ``(its result, peak RSS in bytes while it ran)``.

    memory_profiler's ``memory_usage`` samples RSS every ``interval`` seconds from a second
    process, so a peak shorter than that can be missed. Left to itself, it runs a function that
    ended before a fifth reading again with a ten times shorter interval; ``max_iterations=1``
    stops that, so ``func`` runs exactly once and its side effects happen once.
    """
    from memory_profiler import memory_usage

    peak_mib, result = memory_usage((func, args, kwargs), interval=interval, max_usage=True,
                                    retval=True, include_children=False, max_iterations=1)
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


# ------------------------------------------------------------------------------------------
# The allocators under the lenses: which one served a block, what tracing itself costs, and
# what goes back to the operating system. RSS depends on a process's history, so these
# experiments run in a fresh interpreter (``in_fresh_process``, below) when a lesson must not
# let its own earlier cells decide the result.

def is_glibc() -> bool:
    """Whether this Python runs on glibc, the C library whose ``malloc`` the lessons describe."""
    import platform

    return platform.libc_ver()[0] == "glibc"


def in_c_heap(address: int) -> bool | None:
    """Whether ``address`` lies in the C library's main heap (``[heap]`` in ``/proc/self/maps``).

    A block glibc's ``malloc`` served from its own mapping lies outside it, and so do the
    arenas of pymalloc, Python's allocator for small objects. ``None`` where ``/proc`` is
    missing (not Linux). Meaningful for blocks the main thread allocated.
    """
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return None
    for line in lines:  # the heap can show as several lines (numpy's madvise splits it)
        if line.endswith("[heap]"):
            low, high = (int(x, 16) for x in line.split()[0].split("-"))
            if low <= address < high:
                return True
    return False


def c_heap() -> dict | None:
    """glibc's own account of its ``malloc`` memory (``mallinfo2``), in bytes; ``None`` elsewhere.

    ``in_use``: bytes of blocks handed out from its heaps; ``free``: bytes freed but kept in
    its heaps for reuse (resident once written, so RSS still counts them); ``mapped``: bytes
    of blocks it gave mappings of their own (these go back to the system at ``free``).
    """
    if not is_glibc():
        return None
    import ctypes

    class _Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):  # glibc before 2.33
        return None
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    return {"in_use": info.uordblks, "free": info.fordblks, "mapped": info.hblkhd}


def freed_arrays_rss(sizes_mib, small_first: int = 0) -> list:
    """Make a written ``uint8`` array of each size in turn (MiB), then ``del`` it.

    Per array: ``mib``; ``heap`` (True when the C library served it from its heap, False when
    from a mapping of its own); ``returned`` (bytes RSS fell at the ``del``). With
    ``small_first``, that many 4-float arrays are made and freed first (one more is kept after
    them), leaving their ``malloc`` blocks free in the heap. Run it with ``in_fresh_process``:
    in a long-lived process, earlier frees decide the answer.
    """
    import numpy as np

    smalls = [np.zeros(4, np.float32) for _ in range(small_first)]
    pin = np.zeros(4, np.float32)  # allocated after them, so their freed blocks are not the heap's top
    del smalls
    results = []
    for size in sizes_mib:
        array = np.ones(int(size * 2**20), np.uint8)  # ones: every page written, so resident
        heap = in_c_heap(array.ctypes.data)
        before = rss()
        del array
        results.append({"mib": size, "heap": heap, "returned": before - rss()})
    del pin
    return results


def small_arrays_rss(n_arrays: int, trace: bool) -> dict:
    """Fill a list with ``n_arrays`` 4-float arrays, with tracemalloc on or off, then delete it.

    Returns, in bytes: ``rss_growth`` while filling; ``traced`` (what tracemalloc counted, 0
    when off); ``tracing_records`` (``tracemalloc.get_tracemalloc_memory()`` at the full
    list); ``c_heap_growth`` (glibc's ``in_use`` growth while filling); ``rss_back`` at the
    ``del``; ``c_heap_free`` (what glibc keeps free after the ``del``). The two ``c_heap``
    figures are ``None`` off glibc. Run it with ``in_fresh_process``.
    """
    import numpy as np

    gc.collect()
    if trace:
        tracemalloc.start()
    rss0, traced0, heap0 = rss(), traced_now(), c_heap()
    held = [np.zeros(4, dtype=np.float32) for _ in range(n_arrays)]
    grown, traced_bytes, heap1 = rss() - rss0, traced_now() - traced0, c_heap()
    records = tracemalloc.get_tracemalloc_memory()
    before_del = rss()
    del held
    back = before_del - rss()
    heap2 = c_heap()
    if trace:
        tracemalloc.stop()
    glibc = heap0 is not None
    return {"rss_growth": grown, "traced": traced_bytes, "tracing_records": records,
            "c_heap_growth": heap1["in_use"] - heap0["in_use"] if glibc else None,
            "rss_back": back, "c_heap_free": heap2["free"] if glibc else None}


__all__ += ["in_fresh_process", "is_glibc", "in_c_heap", "c_heap", "freed_arrays_rss",
            "small_arrays_rss"]


# ---------------------------------------------------------------------------------------------
# The C library's allocator, and experiments in a fresh process.
#
# Whether freed memory goes back to the operating system depends on the C library's malloc and
# on everything the process allocated before. glibc serves a request from a mapping of its own
# only above its mmap threshold, which starts at 128 KiB and rises, up to 32 MiB on 64-bit
# systems, to the size of each such block freed; below it, freed memory stays in the heap until
# ``malloc_trim``. An experiment about the operating system's view is repeatable only in a
# process with a known history. One mechanism runs them in a new interpreter, with two ways in:
# ``run_in_fresh_process(source)`` for an experiment a lesson shows as code in its own cell, and
# ``in_fresh_process(func, *args)`` for one kept in this module, tested, and called by name.

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


def malloc_trim() -> bool | None:
    """glibc's ``malloc_trim(0)``: give the heap's free pages back to the operating system.

    Returns whether glibc released memory, or None when the C library is not glibc (there is
    no such call; the memory a C library keeps is then its own business).
    """
    libc = _glibc()
    if libc is None:
        return None
    return bool(libc.malloc_trim(0))


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
from rlmemlib.measure import rss, malloc_trim, c_heap, is_glibc, pymalloc_stats
MiB = 2**20
def report(*values):
    sys.stdout.write("@report " + json.dumps(values[0] if len(values) == 1 else values) + "\\n")
    sys.stdout.flush()
"""


def run_in_fresh_process(source: str, timeout: float = 300.0) -> list:
    """Run Python ``source`` in a new interpreter; return the values it passed to ``report``.

    The way in for an experiment whose code a lesson shows in a cell of its own (a function
    kept in a module goes through ``in_fresh_process``, which runs on this one). The source
    sees ``np``, ``gc``, ``MiB``, ``rss()``, ``malloc_trim()``, ``c_heap()``, ``is_glibc()``,
    ``pymalloc_stats()`` and ``report(*values)`` (values must be JSON: numbers, strings,
    lists, dicts); each call of ``report`` adds one item to the list returned. The new process
    has only its imports (numpy, rlmemlib) behind it, the same at every run, so its RSS figures
    repeat from run to run. An error in the source raises ``RuntimeError`` with the end of its
    traceback.

    >>> run_in_fresh_process("report(len([0] * 3), 'ok')")
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


__all__ += ["malloc_trim", "pymalloc_stats", "run_in_fresh_process"]


def in_fresh_process(func: Callable, *args, timeout: float = 300.0):
    """Call ``func(*args)`` in a new Python interpreter and return its result.

    The way in for an experiment kept as a function of an importable module (tested there and
    called by name); one that a lesson shows as code goes through ``run_in_fresh_process``, on
    which this one runs. ``func`` must be a module-level function; its arguments and its result
    must be JSON values (numbers, strings, lists, dicts). A fresh process has only its imports
    behind it: no memory freed by earlier work to reuse, no allocator threshold moved by it.

    >>> in_fresh_process(fmt_bytes, 2048)
    '2.00 KiB'
    """
    import json

    module, name = getattr(func, "__module__", None), getattr(func, "__qualname__", "")
    if not module or module == "__main__" or not name.isidentifier():
        raise ValueError(f"func must be a module-level function of an importable module, got "
                         f"{module}.{name or type(func).__name__}")
    source = ("import importlib, json\n"
              f"func = getattr(importlib.import_module({module!r}), {name!r})\n"
              f"report(func(*json.loads({json.dumps(list(args))!r})))\n")
    try:
        return run_in_fresh_process(source, timeout=timeout)[0]
    except RuntimeError as err:
        call = f"{module}.{name}({', '.join(map(repr, args))})"
        raise RuntimeError(f"{call} failed in a fresh process: {err}") from None


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
