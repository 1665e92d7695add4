"""Checks for the exercises of lesson 00, measuring memory.

Each public function takes the learner's answer and checks it (see :mod:`rlmemlib.checks`);
``verify_*`` functions hold the invariants and raise :class:`CheckFailed` with a teaching
message, so the unit tests can feed them typical wrong answers.
"""

from __future__ import annotations

import gc
import sys

import numpy as np

from . import expect, is_unfinished, run_check, working
from ..measure import fmt_bytes, footprint


# ---------------------------------------------------------------- exercise 1: what a view holds
def verify_held_bytes(held_bytes) -> None:
    big = np.zeros(100_000)
    for arr, name in ((big, "an array that owns its data"), (big[::100], "a view big[::100]"),
                      (big[10:20][::2], "a view of a view")):
        got = held_bytes(arr)
        expect(got == big.nbytes, f"held_bytes({name}) == {big.nbytes:,} (the whole buffer)",
               f"{got!r}",
               "a view has no buffer of its own: follow .base to the array that owns the data "
               "and count that array's nbytes" if got == arr.nbytes or got == sys.getsizeof(arr)
               else "return the nbytes of the array that owns the data (the end of the .base chain)")
    small = np.ones(3, np.float32)
    expect(held_bytes(small) == 12, "held_bytes(np.ones(3, float32)) == 12", f"{held_bytes(small)!r}",
           "an array that owns its data holds exactly its nbytes")


def held_bytes(answer) -> None:
    run_check("Exercise 1 (what a view holds)", answer, verify_held_bytes)


# ---------------------------------------------------------------- exercise 2: tracemalloc by hand
def verify_measure(measure) -> None:
    gc.collect()
    result = measure(lambda: np.zeros(10_000))
    expect(isinstance(result, tuple) and len(result) == 2, "a pair (obj, nbytes)",
           f"{type(result).__name__}", "return both the object you built and the bytes it holds")
    obj, nbytes = result
    expect(isinstance(obj, np.ndarray) and obj.shape == (10_000,), "the object build() returned",
           f"{type(obj).__name__}", "return the object itself, so it stays alive")
    expect(nbytes != 0, "about 80,000 bytes for np.zeros(10_000)", "0",
           "was tracemalloc tracing (tracemalloc.start()) while build() ran, and did you read "
           "get_traced_memory() while the object was still alive?")
    expect(nbytes >= 80_000, "at least 80,000 bytes for np.zeros(10_000)", f"{nbytes:,}",
           "was the array still alive when you read get_traced_memory()? keep it in a name "
           "(obj = build()) and read the bytes after that")
    expect(nbytes < 80_000 + 2_048, "under 82,048 bytes for np.zeros(10_000)", f"{nbytes:,}",
           "subtract the traced bytes before build() from the traced bytes after it")
    _, list_bytes = measure(lambda: [float(i) for i in range(1_000)])
    expect(list_bytes > 24_000, "over 24,000 bytes for a list of 1,000 floats", f"{list_bytes:,}",
           "tracemalloc must see the floats too, not only the list: measure while build() runs")


def measure(answer) -> None:
    run_check("Exercise 2 (tracemalloc by hand)", answer, verify_measure)


def reference_measure(build):
    """rlmemlib's answer to exercise 2: ``(obj, bytes it holds)``."""
    obj, traced = footprint(build)
    return obj, traced.current


def working_measure(answer):
    """The learner's ``measure`` if it passes, else rlmemlib's."""
    return working(answer, reference_measure, verify_measure, "measure")


# ---------------------------------------------------------------- exercise 3: bytes per item
def verify_bytes_per_item(bytes_per_item) -> None:
    one_block = bytes_per_item(lambda n: np.zeros((n, 4), np.float32), 10_000)
    expect(isinstance(one_block, float), "a float", type(one_block).__name__,
           "divide the bytes by the number of items with / (true division)")
    expect(15.5 < one_block < 17.5, "about 16 bytes per row of np.zeros((n, 4), float32)",
           f"{one_block:.1f}", "measure the whole structure with tracemalloc, then divide by n")
    many = bytes_per_item(lambda n: [np.zeros(4, np.float32) for _ in range(n)], 10_000)
    expect(many > 100, "over 100 bytes per item for a list of small arrays", f"{many:.1f}",
           "sys.getsizeof counts the list's pointers only (8 bytes each); tracemalloc sees the "
           "arrays too" if many < 10 else "measure the structure with tracemalloc while it is built")


def bytes_per_item(answer) -> None:
    run_check("Exercise 3 (bytes per item)", answer, verify_bytes_per_item)


def reference_bytes_per_item(build, n):
    """rlmemlib's answer to exercise 3: traced bytes held by ``build(n)``, per item."""
    _, nbytes = reference_measure(lambda: build(n))
    return nbytes / n


def working_bytes_per_item(answer):
    """The learner's ``bytes_per_item`` if it passes, else rlmemlib's."""
    return working(answer, reference_bytes_per_item, verify_bytes_per_item, "bytes_per_item")


__all__ = ["is_unfinished", "held_bytes", "measure", "bytes_per_item", "working_measure", "reference_measure",
           "working_bytes_per_item", "reference_bytes_per_item",
           "verify_held_bytes", "verify_measure", "verify_bytes_per_item", "fmt_bytes"]
