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
