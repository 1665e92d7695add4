"""The checks of exercises 05 (explicit deletion): right answers pass, typical wrong ones are
rejected with the teaching message, unfinished ones say "not yet"."""

from __future__ import annotations

import gc
import inspect
import textwrap
import tracemalloc
from collections import deque
from pathlib import Path

import nbformat
import pytest

import rlmemlib as rm
from rlmemlib.checks import CheckFailed, ExerciseError, ex05

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def learner_mode(monkeypatch):
    monkeypatch.delenv("RLMEMLIB_CHECK_MODE", raising=False)


@pytest.fixture(autouse=True)
def leaves_tracemalloc_and_gc_as_found():
    tracing, collecting = tracemalloc.is_tracing(), gc.isenabled()
    yield
    assert tracemalloc.is_tracing() == tracing
    assert gc.isenabled() == collecting


# ------------------------------------------------------------------ exercise 1: where the bytes grew
def _growth(run, group="lineno", keep=True, stat=lambda top: (top.size_diff, top.traceback[0].lineno),
            order="after-before"):
    before = tracemalloc.take_snapshot()
    result = run()
    if not keep:
        result = None  # what run() returned dies before the second snapshot
    after = tracemalloc.take_snapshot()
    top = (after.compare_to(before, group) if order == "after-before"
           else before.compare_to(after, group))[0]
    del result
    return stat(top)


def right_biggest_growth(run):
    before = tracemalloc.take_snapshot()
    result = run()
    after = tracemalloc.take_snapshot()
    top = after.compare_to(before, "lineno")[0]
    return top.size_diff, top.traceback[0].lineno


def test_ex1_right_answer_passes_with_or_without_tracing(capsys):
    ex05.biggest_growth(right_biggest_growth)
    assert "Exercise 1 (where the bytes grew): ok" in capsys.readouterr().out
    tracemalloc.start()
    try:
        ex05.verify_biggest_growth(right_biggest_growth)
        assert tracemalloc.is_tracing()  # the check leaves tracing on when it found it on
    finally:
        tracemalloc.stop()


def test_ex1_unfinished_says_not_yet(capsys):
    def biggest_growth(run):
        before = ...
        return ...

    ex05.biggest_growth(biggest_growth)
    assert "not yet" in capsys.readouterr().out


def test_ex1_largest_line_instead_of_growth_is_rejected():
    def largest(run):
        result = run()
        top = tracemalloc.take_snapshot().statistics("lineno")[0]
        return top.size, top.traceback[0].lineno

    with pytest.raises(CheckFailed, match="allocated them before run.*compare_to"):
        ex05.verify_biggest_growth(largest)


def test_ex1_size_instead_of_size_diff_is_rejected():
    with pytest.raises(CheckFailed, match="top.size is everything the line holds now"):
        ex05.verify_biggest_growth(
            lambda run: _growth(run, stat=lambda top: (top.size, top.traceback[0].lineno)))


def test_ex1_grouping_by_filename_is_rejected():
    with pytest.raises(CheckFailed, match="grouped by 'filename' has no line number"):
        ex05.verify_biggest_growth(lambda run: _growth(run, group="filename"))


def test_ex1_snapshots_compared_the_wrong_way_round_are_rejected():
    with pytest.raises(CheckFailed, match="a growth is positive"):
        ex05.verify_biggest_growth(lambda run: _growth(run, order="before-after"))


def test_ex1_run_outside_the_snapshots_is_rejected():
    def outside(run):
        before = tracemalloc.take_snapshot()
        after = tracemalloc.take_snapshot()
        result = run()
        top = after.compare_to(before, "lineno")[0]
        return top.size_diff, top.traceback[0].lineno

    with pytest.raises(CheckFailed, match="almost nothing grew: take the first snapshot, then call run"):
        ex05.verify_biggest_growth(outside)


def test_ex1_dropping_what_run_returns_is_rejected():
    with pytest.raises(CheckFailed, match=r"keep what run\(\) returns alive"):
        ex05.verify_biggest_growth(lambda run: _growth(run, keep=False))


def test_ex1_swapped_pair_is_rejected():
    with pytest.raises(CheckFailed, match=r"return the bytes first"):
        ex05.verify_biggest_growth(lambda run: _growth(run)[::-1])


def test_ex1_fallback_is_rlmemlibs_and_says_so(capsys):
    assert ex05.working_biggest_growth(lambda run: ...) is ex05.reference_biggest_growth
    assert "in place of your biggest_growth" in capsys.readouterr().out
    assert ex05.working_biggest_growth(right_biggest_growth) is right_biggest_growth


# ------------------------------------------------------------------ exercise 2: a byte budget
class Budgeted:
    """The notebook's base class: everything but add."""

    def __init__(self, budget, cost):
        if cost > budget:
            raise ValueError("one transition costs more than the whole budget")
        self.budget, self.cost = budget, cost
        self.items = deque()
        self.nbytes = 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _budget_class(room_of, evict="popleft", keep_evicted=False, store=lambda t: rm.Transition(*t)):
    """A BudgetMemory made of parts, right or wrong."""

    class BudgetMemory(Budgeted):
        def add(self, *t):
            room = room_of(self)
            while len(self.items) >= room:
                gone = getattr(self.items, evict)()
                if keep_evicted:
                    self.__dict__.setdefault("evicted", []).append(gone)
            self.items.append(store(t))
            self.nbytes = len(self.items) * self.cost

    return BudgetMemory


RightBudget = _budget_class(lambda m: m.budget // m.cost)


def test_ex2_right_answer_passes(capsys):
    ex05.budget_memory(RightBudget)
    assert "Exercise 2 (a byte budget): ok" in capsys.readouterr().out
    ex05.verify_budget_memory(_budget_class(lambda m: m.budget // m.cost, store=tuple))
    ex05.verify_budget_memory(_budget_class(lambda m: m.budget // m.cost, store=list))


def test_ex2_unfinished_says_not_yet(capsys):
    class BudgetMemory(Budgeted):
        def add(self, obs, action, reward, next_obs, terminated, truncated):
            item = ...
            room = ...
            self.nbytes = ...

    ex05.budget_memory(BudgetMemory)
    assert "not yet" in capsys.readouterr().out


def test_ex2_a_budget_that_evicts_the_newest_is_rejected():
    with pytest.raises(CheckFailed, match=r"mem\[0\] to be transition 4,990.*got transition 0.*pop\(\) takes the newest"):
        ex05.verify_budget_memory(_budget_class(lambda m: m.budget // m.cost, evict="pop"))


def test_ex2_a_budget_that_never_evicts_is_rejected():
    class NeverEvicts(Budgeted):
        def add(self, *t):
            self.items.append(rm.Transition(*t))
            self.nbytes = len(self.items) * self.cost

    with pytest.raises(CheckFailed, match="at most 10 transitions held.*got 5,000.*nothing was ever evicted"):
        ex05.verify_budget_memory(NeverEvicts)


def test_ex2_a_budget_that_counts_transitions_instead_of_bytes_is_rejected():
    with pytest.raises(CheckFailed, match="stopped at 4,200 transitions.*the budget counts bytes"):
        ex05.verify_budget_memory(_budget_class(lambda m: m.budget))


def test_ex2_a_budget_that_appends_before_evicting_is_rejected():
    class OneTooMany(Budgeted):
        def add(self, *t):
            self.items.append(rm.Transition(*t))
            while len(self.items) > self.budget // self.cost + 1:  # allows one over, then trims
                self.items.popleft()
            self.nbytes = len(self.items) * self.cost

    with pytest.raises(CheckFailed, match="one transition too many: make room before appending"):
        ex05.verify_budget_memory(OneTooMany)


def test_ex2_a_budget_that_evicts_too_much_is_rejected():
    with pytest.raises(CheckFailed, match="10 transitions held once the budget is reached.*got 9"):
        ex05.verify_budget_memory(_budget_class(lambda m: m.budget // m.cost - 1))


def test_ex2_a_wrong_nbytes_is_rejected():
    class Counts(RightBudget):
        def add(self, *t):
            super().add(*t)
            self.nbytes = len(self.items)  # transitions, not bytes

    with pytest.raises(CheckFailed, match=r"mem.nbytes == len\(mem\) \* cost"):
        ex05.verify_budget_memory(Counts)


def test_ex2_a_budget_that_keeps_what_it_evicts_is_rejected():
    with pytest.raises(CheckFailed, match="traced by tracemalloc.*evicted are still alive"):
        ex05.verify_budget_memory(_budget_class(lambda m: m.budget // m.cost, keep_evicted=True))


def test_ex2_storing_a_dict_per_transition_is_rejected():
    fields = ("obs", "action", "reward", "next_obs", "terminated", "truncated")

    class AsDict(RightBudget):
        def __getitem__(self, i):
            return tuple(self.items[i].values())

    AsDict.add = _budget_class(lambda m: m.budget // m.cost,
                               store=lambda t: dict(zip(fields, t))).add
    with pytest.raises(CheckFailed, match="costs more than the 400 B charged"):
        ex05.verify_budget_memory(AsDict)


def test_ex2_fallback_is_rlmemlibs_and_says_so(capsys):
    class Unfinished(Budgeted):
        def add(self, *t):
            ...

    assert ex05.working_budget_memory(Unfinished) is ex05.BudgetMemory
    assert "rlmemlib's BudgetMemory in place of your BudgetMemory" in capsys.readouterr().out
    assert ex05.working_budget_memory(RightBudget) is RightBudget


# ------------------------------------------------------------------ exercise 3: release
def right_release(trainer):
    trainer.last_batch = trainer.last_batch.copy()
    del trainer.callbacks["store"]
    trainer.memory = None
    gc.collect()


def test_ex3_right_answers_pass(capsys):
    ex05.release(right_release)
    assert "Exercise 3 (release at the end of training): ok" in capsys.readouterr().out

    def breaks_the_cycle(trainer):
        trainer.last_batch = trainer.last_batch.copy()
        trainer.callbacks.pop("store")
        trainer.memory.sampler = None
        del trainer.memory

    ex05.verify_release(breaks_the_cycle)


def test_ex3_the_check_restores_a_disabled_collector():
    gc.disable()
    try:
        ex05.verify_release(right_release)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_ex3_unfinished_says_not_yet_and_modes(monkeypatch, capsys):
    def release(trainer):
        trainer.last_batch = ...
        trainer.memory = ...

    ex05.release(release)
    assert "not yet" in capsys.readouterr().out
    monkeypatch.setenv("RLMEMLIB_CHECK_MODE", "solution")
    with pytest.raises(ExerciseError, match="gap"):
        ex05.release(release)
    monkeypatch.setenv("RLMEMLIB_CHECK_MODE", "stub")
    with pytest.raises(ExerciseError, match="leaked"):
        ex05.release(right_release)


def test_ex3_a_release_that_deletes_only_the_name_is_rejected():
    def only_the_name(trainer):
        memory = trainer.memory
        del memory

    with pytest.raises(CheckFailed, match="trainer.memory still refers.*del removes a name"):
        ex05.verify_release(only_the_name)


def test_ex3_clearing_the_pool_is_rejected():
    with pytest.raises(CheckFailed, match="clear\\(\\) keeps a CircularPool's arrays"):
        ex05.verify_release(lambda trainer: trainer.memory.clear())


def test_ex3_none_then_del_while_a_view_holds_the_buffer_is_rejected():
    def none_then_del(trainer):
        trainer.memory = None
        del trainer.memory
        del trainer.callbacks["store"]
        gc.collect()

    with pytest.raises(CheckFailed, match="last_batch still holds memory.obs.*it is a view.*copy"):
        ex05.verify_release(none_then_del)


def test_ex3_forgetting_the_bound_method_is_rejected():
    def keeps_callback(trainer):
        trainer.last_batch = trainer.last_batch.copy()
        trainer.memory = None
        gc.collect()

    with pytest.raises(CheckFailed, match=r"callbacks\['store'\] still holds the memory.*bound method"):
        ex05.verify_release(keeps_callback)


def test_ex3_leaving_the_cycle_to_the_collector_is_rejected():
    def no_collect(trainer):
        trainer.last_batch = trainer.last_batch.copy()
        del trainer.callbacks["store"]
        trainer.memory = None

    with pytest.raises(CheckFailed, match="freed only by a garbage collection.*cycle.*gc.collect"):
        ex05.verify_release(no_collect)


def test_ex3_dropping_the_last_batch_is_rejected():
    def drops_it(trainer):
        trainer.last_batch = None
        del trainer.callbacks["store"]
        trainer.memory = None
        gc.collect()

    with pytest.raises(CheckFailed, match="last_batch to keep its values.*got None"):
        ex05.verify_release(drops_it)


def test_ex3_dropping_every_callback_is_rejected():
    def clears_all(trainer):
        trainer.last_batch = trainer.last_batch.copy()
        trainer.callbacks.clear()
        trainer.memory = None
        gc.collect()

    with pytest.raises(CheckFailed, match="keep its 'log' entry"):
        ex05.verify_release(clears_all)


def test_ex3_keeping_the_memory_elsewhere_is_rejected():
    kept = []

    def hides_it(trainer):
        kept.append(trainer.memory)
        right_release(trainer)

    with pytest.raises(CheckFailed, match="something outside the trainer still refers"):
        ex05.verify_release(hides_it)
    kept.clear()


def test_ex3_fallback_is_rlmemlibs_and_says_so(capsys):
    assert ex05.working_release(lambda trainer: ...) is ex05.reference_release
    assert "in place of your release" in capsys.readouterr().out
    assert ex05.working_release(right_release) is right_release


def test_the_notebook_shows_the_trainer_the_check_uses():
    nb = nbformat.read(ROOT / "solutions" / "05_explicit_deletion.ipynb", as_version=4)
    shown = [c.source for c in nb.cells if c.cell_type == "code" and "class Trainer" in c.source]
    expected = "\n\n\n".join(textwrap.dedent(inspect.getsource(c)).strip("\n")
                               for c in (ex05.Sampler, ex05.Trainer))
    assert shown == [expected], "the notebook's Trainer cell differs from rlmemlib.checks.ex05's"
