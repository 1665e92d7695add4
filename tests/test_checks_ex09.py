"""The checks of exercises 09 (beyond one machine): right answers pass, typical wrong answers are
rejected with the teaching message, unfinished ones say "not yet", and the hidden tests of the
solutions notebook fail a blank answer, both `...` stubs and nbgrader's NotImplementedError."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

import rlmemlib as rm
from rlmemlib.checks import CheckFailed, ExerciseError, ex09

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions" / "09_beyond_one_machine.ipynb"
sys.path.insert(0, str(ROOT / "tools"))
import make_exercises  # noqa: E402


@pytest.fixture(autouse=True)
def learner_mode(monkeypatch):
    monkeypatch.delenv("RLMEMLIB_CHECK_MODE", raising=False)


# ------------------------------------------------------------------ exercise 1: reopen arrays
def _npy(folder):
    return sorted(Path(folder).glob("*.npy"))


def open_memmap_r_plus(folder):
    return {p.stem: np.lib.format.open_memmap(p, mode="r+") for p in _npy(folder)}


def loaded_into_ram(folder):
    return {p.stem: np.load(p) for p in _npy(folder)}


def read_only(folder):
    return {p.stem: np.load(p, mmap_mode="r") for p in _npy(folder)}


def copy_on_write(folder):
    return {p.stem: np.load(p, mmap_mode="c") for p in _npy(folder)}


def made_anew(folder):
    out = {}
    for p in _npy(folder):
        old = np.load(p, mmap_mode="r")
        shape, dtype = old.shape, old.dtype
        del old
        out[p.stem] = np.lib.format.open_memmap(p, mode="w+", dtype=dtype, shape=shape)
    return out


def every_file(folder):
    return {p.stem: np.load(p, mmap_mode="r+") for p in Path(folder).iterdir()}


def named_with_suffix(folder):
    return {p.name: np.load(p, mmap_mode="r+") for p in _npy(folder)}


@pytest.mark.parametrize("right", [ex09.reference_reopen_arrays, open_memmap_r_plus],
                         ids=["np.load-r+", "open_memmap-r+"])
def test_ex1_right_answers_pass(right):
    ex09.verify_reopen_arrays(right)


@pytest.mark.parametrize("wrong, message", [
    (loaded_into_ram, "mapped from their files.*in RAM.*np.load without mmap_mode"),
    (read_only, "read-only.*use 'r\\+'"),
    (copy_on_write, "copy on write.*file never sees them"),
    (made_anew, r"rows written before.*mode='w\+'\) makes the file anew"),
    (every_file, "only the .npy files"),
    (named_with_suffix, "without the suffix"),
], ids=["np.load", "mmap-r", "mmap-c", "open_memmap-w+", "state.json-too", "keys-with-.npy"])
def test_ex1_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex09.verify_reopen_arrays(wrong)


# ------------------------------------------------------------------ exercise 2: locate
def locate_modulo(indices, sizes):
    indices = np.asarray(indices)
    return indices % len(sizes), indices // len(sizes)


def locate_left(indices, sizes):
    ends = np.cumsum(sizes)
    shard = np.searchsorted(ends, indices, side="left")
    return shard, np.asarray(indices) - (ends[shard] - np.asarray(sizes)[shard])


def locate_no_offset(indices, sizes):
    shard = np.searchsorted(np.cumsum(sizes), indices, side="right")
    return shard, np.asarray(indices)


def locate_by_loop(indices, sizes):
    shards, locals_ = [], []
    for i in np.asarray(indices).tolist():
        k = 0
        while i >= sizes[k]:
            i -= sizes[k]
            k += 1
        shards.append(k)
        locals_.append(i)
    return np.array(shards), np.array(locals_)


def test_ex2_right_answers_pass():
    ex09.verify_locate(ex09.reference_locate)
    ex09.verify_locate(locate_by_loop)
    ex09.verify_locate(rm.distributed.locate)


@pytest.mark.parametrize("wrong, message", [
    (locate_modulo, "i % K, round robin"),
    (locate_left, "is the first of shard .* side='right'|is empty and can hold no index"),
    (locate_no_offset, "minus the number of transitions in the shards before it"),
    (lambda indices, sizes: np.searchsorted(np.cumsum(sizes), indices, side="right"), "a tuple"),
], ids=["modulo", "side-left", "no-offset", "shard-only"])
def test_ex2_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex09.verify_locate(wrong)


# ------------------------------------------------------------------ exercise 3: sample across shards
def each_shard_draws_its_share(shards, batch_size, rng):
    held = [s for s in shards if len(s)]
    parts = [s.sample(batch_size // len(held) + (k < batch_size % len(held)), rng) for k, s in enumerate(held)]
    return rm.Batch(*(np.concatenate(field) for field in zip(*parts)))


def one_random_shard(shards, batch_size, rng):
    held = [s for s in shards if len(s)]
    return held[int(rng.integers(len(held)))].sample(batch_size, rng)


def shard_after_shard(shards, batch_size, rng):
    sizes = [len(s) for s in shards]
    shard, local = ex09.reference_locate(rng.integers(0, sum(sizes), size=batch_size), sizes)
    parts = [s.sample(int((shard == k).sum()), rm.distributed.GivenIndices(local[shard == k]))
             for k, s in enumerate(shards) if (shard == k).any()]
    return rm.Batch(*(np.concatenate(field) for field in zip(*parts)))


def draws_twice(shards, batch_size, rng):
    rng.integers(0, 2)
    return ex09.reference_sample_shards(shards, batch_size, rng)


def test_ex3_right_answer_passes():
    ex09.verify_sample_shards(ex09.reference_sample_shards)


@pytest.mark.parametrize("wrong, message", [
    (each_shard_draws_its_share, "draw the indices once over all transitions"),
    (one_random_shard, "over-samples the small shards"),
    (shard_after_shard, "right rows in another order"),
    (draws_twice, "draw the indices once|another batch"),
], ids=["share-per-shard", "one-random-shard", "shard-after-shard", "draws-twice"])
def test_ex3_wrong_answers_are_rejected_with_the_teaching_message(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        ex09.verify_sample_shards(wrong)


# ------------------------------------------------------------------ modes
def test_unfinished_answers_say_not_yet_and_blank_ones_never_pass(monkeypatch, capsys):
    def stub(folder):
        arrays = ...
        return arrays

    ex09.reopen_arrays(stub)
    assert "not yet" in capsys.readouterr().out

    def nbgrader_stub(indices, sizes):
        raise NotImplementedError()

    ex09.locate(nbgrader_stub)  # nbgrader's blank answer is unfinished too
    assert "not yet" in capsys.readouterr().out
    monkeypatch.setenv("RLMEMLIB_CHECK_MODE", "solution")
    with pytest.raises(ExerciseError, match="gap"):
        ex09.reopen_arrays(stub)
    monkeypatch.setenv("RLMEMLIB_CHECK_MODE", "stub")
    with pytest.raises(ExerciseError, match="leaked"):
        ex09.locate(ex09.reference_locate)


def test_fallbacks_say_which_is_used(capsys):
    assert ex09.working_locate(locate_modulo) is ex09.reference_locate
    assert "in place of your locate" in capsys.readouterr().out
    assert ex09.working_sample_shards(ex09.reference_sample_shards) is ex09.reference_sample_shards


# ------------------------------------------------------------------ hidden tests against blank answers
def _cells():
    nb = nbformat.read(SOLUTIONS, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _nbgrader_stub(source: str) -> str:
    """nbgrader's student version of a solution cell: each block becomes NotImplementedError."""
    return re.sub(r"( *)### BEGIN SOLUTION\n.*?### END SOLUTION",
                  lambda m: f"{m.group(1)}# YOUR CODE HERE\n{m.group(1)}raise NotImplementedError()",
                  source, flags=re.S)


def _hidden(source: str) -> str:
    return source.split("### BEGIN HIDDEN TESTS", 1)[1].split("### END HIDDEN TESTS", 1)[0]


EXERCISES = [k for k, src in enumerate(_cells()) if "### BEGIN SOLUTION" in src]


@pytest.mark.parametrize("blank", ["ellipsis", "NotImplementedError"])
@pytest.mark.parametrize("target", EXERCISES, ids=lambda k: f"cell{k}")
def test_hidden_tests_fail_a_blank_answer(target, blank, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cells = _cells()
    check_cell = next(k for k in range(target + 1, len(cells)) if "### BEGIN HIDDEN TESTS" in cells[k])
    ns: dict = {}
    for k, source in enumerate(cells[:check_cell]):
        if k == target:
            source = make_exercises.strip_solutions(source) if blank == "ellipsis" else _nbgrader_stub(source)
        elif "### BEGIN HIDDEN TESTS" in source:
            source = source.replace("### BEGIN HIDDEN TESTS", "").replace("### END HIDDEN TESTS", "")
        exec(compile(source, f"cell{k}", "exec"), ns)
    with pytest.raises(Exception):
        exec(compile(_hidden(cells[check_cell]), "hidden", "exec"), ns)
    # and the same hidden tests pass on the solution
    exec(compile(cells[target], "solution", "exec"), ns)
    exec(compile(_hidden(cells[check_cell]), "hidden", "exec"), ns)
