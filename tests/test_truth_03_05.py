"""Checks behind sentences of lessons 03 to 05 that the notebooks' own asserts cannot carry.

- Quotations of the blog post the course starts from are word for word: each is part of one of
  the post's sentences recorded below (checked against the post itself when the environment
  variable ``RLMEMLIB_SEED_POST`` names its file; the post is not shipped with the course).
- The lessons speak of "the packed size" (``spec.nbytes``), which is no lower bound, never of a
  "raw bound".
- A level marked on a figure (a planned size) sits at or under a labelled tick.
- The measurement helpers the lessons use for the operating system's view: experiments in a
  fresh process, glibc's ``malloc_trim``, pymalloc's arenas, interleaved timings.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from rlmemlib import measure

ROOT = Path(__file__).resolve().parent.parent
LESSONS = [ROOT / "notebooks" / name for name in
           ("03_circular_pool.ipynb", "04_object_recycling.ipynb", "05_explicit_deletion.ipynb")]
# The sentences of the post that the lessons quote to test its claims, word for word.
THE_POST_SAYS = (
    "A memory pool is a fixed-size buffer that stores experiences in a circular manner.",
    "Using a memory pool ensures that memory usage remains constant, irrespective of how long an "
    "RL agent interacts with an environment.",
    "Reusing objects reduces memory fragmentation and improves performance.",
    "By removing references to objects and explicitly using `del`, you can force the garbage "
    "collector to free up memory immediately.",
)
QUOTE = re.compile(r'"([^"\n]*(?:\n[^"\n]*){0,3})"')  # a quotation may wrap over a few lines


def _markdown(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


def _words(text: str) -> str:
    return " ".join(text.split())


def quotes_of_the_post(cells: list[str]) -> list[str]:
    """Quotations of four words or more in markdown cells that speak of the post."""
    found = []
    for cell in cells:
        if "post" not in cell:
            continue
        found += [_words(q) for q in QUOTE.findall(cell) if len(q.split()) >= 4]
    return found


def test_quotes_are_found():
    # A quotation pattern that finds nothing would make the next test pass for nothing.
    cells = ['The post says: "Using a memory pool ensures that memory usage\nremains constant".']
    assert quotes_of_the_post(cells) == ["Using a memory pool ensures that memory usage remains constant"]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_quotations_of_the_post_are_word_for_word(path):
    quotes = quotes_of_the_post(_markdown(path))
    assert quotes, f"{path.name} tests a claim of the post, so it quotes it"
    for quote in quotes:
        assert any(quote in sentence for sentence in THE_POST_SAYS), (
            f"{path.name} quotes words that are not the post's: {quote!r}")


def test_the_recorded_sentences_are_the_posts():
    post_file = os.environ.get("RLMEMLIB_SEED_POST")
    if not post_file:
        pytest.skip("RLMEMLIB_SEED_POST does not name the blog post's file")
    post = _words(Path(post_file).read_text(encoding="utf-8"))
    for sentence in THE_POST_SAYS:
        assert sentence in post, f"not in the post, word for word: {sentence!r}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_the_packed_size_is_not_called_a_bound(path):
    text = path.read_text(encoding="utf-8")
    assert "raw bound" not in text, (f"{path.name}: spec.nbytes is the packed size of the spec's "
                                     "dtypes, not a bound (the pool packs two flags in one byte)")


def _top_visible_tick(ax) -> float:
    lo, hi = ax.get_ylim()
    return max(t for t in ax.get_yticks() if lo <= t <= hi)


def test_a_marked_level_sits_under_a_labelled_tick():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlmemlib import plotting

    planned = 78_000_000  # lesson 03's 2,000,000-row ring: 74.4 MiB
    curve = measure.MemoryCurve(steps=[0, 0, 1000, 2000], traced=[0, planned, planned, planned],
                                rss=[0, 10, 3 * 10**7, 7 * 10**7])
    ax = plotting.lenses(curve)
    assert _top_visible_tick(ax) < planned  # what the figure showed before: the level above the ticks
    plotting.mark_level(ax, planned, "planned")
    assert _top_visible_tick(ax) >= planned
    plt.close("all")


def test_fresh_process_reports_and_fails_loudly():
    assert measure.run_in_fresh_process("report(1, 'a')\nreport([2, 3])") == [[1, "a"], [2, 3]]
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        measure.run_in_fresh_process("1 / 0")


@pytest.mark.skipif(not measure.is_glibc(), reason="glibc's allocator only")
def test_glibc_threshold_rises_after_a_mapped_block_is_freed():
    """The mechanism lesson 05 teaches, in a fresh process: 8 MiB goes back, then no more."""
    source = """
    sizes = []
    for size in (8, 8):
        mapped = c_heap()["mapped"]
        block = np.ones(size * MiB // 8)
        sizes.append(c_heap()["mapped"] - mapped)  # grows only for a block mapped alone
        del block
    report(sizes, malloc_trim())
    """
    (first, second), trimmed = measure.run_in_fresh_process(source)[0]
    assert first >= 8 * 2**20 and second == 0
    assert trimmed is True  # the freed 8 MiB sat in the heap: there was something to trim


def test_allocator_figures_are_none_or_complete():
    assert (measure.malloc_trim() is None) == (not measure.is_glibc())
    arenas = measure.pymalloc_stats()
    if arenas is not None:
        assert arenas["arenas"] >= 1 and arenas["arena_size"] >= 2**18 and arenas["in_use"] > 0


def test_pymalloc_arenas_are_kept_by_one_survivor_in_100():
    if measure.pymalloc_stats() is None:
        pytest.skip("this interpreter does not use pymalloc")
    source = """
    count = lambda: pymalloc_stats()["arenas"]
    start = count()
    floats = [float(i) for i in range(500_000)]
    made = count() - start
    kept = floats[::100]
    del floats
    report(made, count() - start)
    """
    made, left = measure.run_in_fresh_process(source)[0]
    assert made >= 10 and left >= 0.9 * made


def test_time_per_call_takes_statements_and_callables():
    times = measure.time_per_call({"statement": "x + 1", "callable": lambda: None},
                                  number=10, rounds=3, globals={"x": 1})
    assert set(times) == {"statement", "callable"} and all(0 < t < 1 for t in times.values())
