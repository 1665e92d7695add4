"""Checks for the exercises of lesson 04, object recycling.

Each public function takes the learner's answer and checks it (see :mod:`rlmemlib.checks`);
``verify_*`` functions hold the invariants and raise :class:`CheckFailed` with a teaching
message, so the unit tests can feed them typical wrong answers. The data are real CartPole-v1
transitions from a seeded random policy, made once on first use.
"""

from __future__ import annotations

import functools
import gc

import numpy as np

from . import CheckFailed, expect, is_unfinished, run_check, working
from ..measure import traced
from ..memory import CircularPool, ListMemory, ObjectPool, RecyclingMemory
from ._shared import cartpole_data, cartpole_spec, same_transition
from ..spec import Batch

FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")


_spec, _same = cartpole_spec, same_transition


def _data() -> tuple:
    """3,000 CartPole transitions from the seeded random agent (the same in every run)."""
    return cartpole_data(3_000)


# ---------------------------------------------------------------- exercise 1: blocks kept per add
class _KeepsCopies:
    """A memory that keeps a new copy of each observation: about 3 blocks per add."""

    def __init__(self):
        self.items = []

    def add(self, obs, action, reward, next_obs, terminated, truncated):
        self.items.append(obs.copy())

    def __len__(self):
        return len(self.items)


def verify_blocks_per_add(blocks_per_add) -> None:
    data = _data()
    adds = data[:2_000]
    n = len(adds)
    listed = ListMemory()
    got = blocks_per_add(listed, adds)
    expect(isinstance(got, float), "a float", type(got).__name__,
           "divide the blocks by the number of adds with / (true division)")
    expect(len(listed) == n, f"len(mem) == {n:,} after blocks_per_add (every transition added)",
           f"{len(listed):,}", "call mem.add(*t) for each transition t, inside the traced block")
    if 0.8 * n < got < 1.3 * n:
        hint = "that is the total for all the adds: divide by the number of adds"
    elif got > 20:
        hint = ("that looks like bytes: m.current counts bytes, m.blocks counts blocks"
                if got < 300 else "count only the blocks allocated inside the traced block, "
                "per add: m.blocks / len(transitions)")
    elif abs(got) < 0.2:
        hint = ("did the adds run inside the `with rm.measure.traced() as m:` block? tracemalloc "
                "only counts what is allocated while it traces")
    else:
        hint = "trace only the adds, read m.blocks after the with block, and divide by the number of adds"
    expect(0.8 < got < 1.3, "about 1 block kept per add for a ListMemory (one tuple per transition)",
           f"{got:.1f}", hint)
    copies = blocks_per_add(_KeepsCopies(), adds)
    expect(2.7 < copies < 3.3,
           "about 3 blocks per add for a memory keeping a copy of each observation array",
           f"{copies:.1f}", "count what the adds leave alive, net: m.blocks / len(transitions)")
    full = RecyclingMemory(1_000, _spec())
    for t in data[:1_000]:
        full.add(*t)
    recycled = blocks_per_add(full, data[1_000:])
    expect(recycled < 0.1, "about 0 blocks per add for a full RecyclingMemory", f"{recycled:.1f}",
           "count only the blocks the adds allocated and left alive (m.blocks), not everything "
           "tracemalloc holds")


def blocks_per_add(answer) -> None:
    run_check("Exercise 1 (blocks kept per add)", answer, verify_blocks_per_add)


def reference_blocks_per_add(mem, transitions) -> float:
    """rlmemlib's answer to exercise 1: net blocks kept alive per add."""
    gc.collect()
    with traced() as m:
        for t in transitions:
            mem.add(*t)
    return m.blocks / len(transitions)


def working_blocks_per_add(answer):
    """The learner's ``blocks_per_add`` if it passes, else rlmemlib's."""
    return working(answer, reference_blocks_per_add, verify_blocks_per_add, "blocks_per_add")


# ---------------------------------------------------------------- exercise 2: a ring of records
def _ring_contents(ring, added: list, capacity: int) -> None:
    """After ``step + 1`` adds, the ring holds the last ``capacity`` of them, oldest first."""
    held = min(len(added), capacity)
    expect(len(ring) == held, f"len(ring) == {held} after {len(added)} adds into a ring of "
           f"{capacity}", f"{len(ring)}",
           "once the ring is full, an add replaces the oldest transition, so len stays at the "
           "capacity" if len(ring) > held else
           "add 1 to self.len at each add until the ring is full")
    first = len(added) - held
    for i in range(held):
        want = first + i
        got = ring[i]
        if _same(got, added[want]):
            continue
        found = [j for j, t in enumerate(added) if _same(got, t)]
        came = f"transition {found[0]} added" if found else "none of the transitions added"
        if not found:
            hint = "copy all six values into the record"
        elif len(added) > capacity:
            hint = ("once full, the new transition goes into the record of the oldest, and start "
                    "moves one slot on: start = (start + 1) % capacity")
        else:
            hint = "write into the record after the newest, slot (start + len) % capacity"
        expect(False, f"ring[{i}] to be transition {want} added (0 the first), with "
               f"{len(added)} added into a ring of {capacity}", came, hint)


def verify_ring(RecordRing) -> None:
    spec, data = _spec(), _data()
    capacity = 3
    ring = RecordRing(capacity, spec)
    records = list(ring.records)
    arrays = [(r.obs, r.next_obs) for r in records]
    added = []
    for t in data[:2 * capacity + 1]:
        ring.add(*t)
        added.append(t)
        _ring_contents(ring, added, capacity)
    for k, record in enumerate(ring.records):
        expect(record is records[k], f"ring.records[{k}] to be the record made in __init__",
               "a new object", "add replaced the record: write the values into the existing "
               "record instead of making a new one")
        expect(record.obs is arrays[k][0] and record.next_obs is arrays[k][1],
               f"ring.records[{k}].obs and .next_obs to be the record's own arrays",
               "other arrays",
               "`record.obs = obs` makes the record hold the caller's array (and drops its own), "
               "so the caller can change the stored values later; copy the values into the "
               "record's array: record.obs[:] = obs, or np.copyto(record.obs, obs)")
    big = RecordRing(500, spec)
    for t in data[:500]:
        big.add(*t)
    gc.collect()
    with traced() as m:
        for t in data[500:2_000]:
            big.add(*t)
    per_add = m.blocks / 1_500
    expect(per_add < 0.1, "no memory block kept per add once the ring is full",
           f"{per_add:.1f} per add",
           "an add must not create objects that the ring keeps: write into the record's arrays "
           "and attributes")


def ring(answer) -> None:
    run_check("Exercise 2 (a ring of records)", answer, verify_ring)


def working_ring(answer):
    """The learner's ``RecordRing`` class if it passes, else rlmemlib's RecyclingMemory."""
    return working(answer, RecyclingMemory, verify_ring, "RecordRing")


# ---------------------------------------------------------------- exercise 3: keep a copy
# (seed, batch size, draws): the most ends at draw 13 of 20; a tie at draws 6 and 9 of 10
# (counted from 1, as the messages count them).
_DRAWS = ((0, 64, 20), (2, 32, 10))


@functools.lru_cache(maxsize=1)
def _sampled_memory() -> CircularPool:
    memory = CircularPool(2_000, _spec())
    for t in _data()[:2_000]:
        memory.add(*t)
    return memory


def _draws(memory, seed: int, size: int, steps: int) -> list:
    rng = np.random.default_rng(seed)
    return [memory.sample(size, rng) for _ in range(steps)]


def _first_most(batches, ties_last: bool = False) -> int:
    ends = [int(b.terminated.sum()) for b in batches]
    most = max(ends)
    hits = [k for k, e in enumerate(ends) if e == most]
    return hits[-1] if ties_last else hits[0]


def _batch_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def verify_most_episode_ends(most_episode_ends) -> None:
    memory = _sampled_memory()
    for seed, size, steps in _DRAWS:
        batches = _draws(memory, seed, size, steps)
        best = _first_most(batches)
        batch = _spec().empty_batch(size)
        got = most_episode_ends(memory, batch, np.random.default_rng(seed), steps)
        expect(isinstance(got, Batch), "a Batch", type(got).__name__,
               "return the batch you kept, e.g. rm.Batch(*(a.copy() for a in batch))")
        expect(got is not batch, "a batch of its own, not the reused one", "the reused batch itself",
               "every later sample wrote into it, so it holds the last batch drawn; keep a copy "
               "when you find a batch with more ends")
        for name in FIELDS:
            expect(not np.shares_memory(getattr(got, name), getattr(batch, name)),
                   f"a kept {name} with a buffer of its own", "the reused batch's array",
                   "a new Batch around the same arrays still changes at the next sample: copy "
                   "each array, a.copy()")
        expect(_batch_equal(batch, batches[-1]),
               f"the reused batch to hold the last of the {steps} batches drawn",
               "other values", "sample into the batch you were given, "
               "memory.sample(len(batch), rng, out=batch), once per step")
        if _batch_equal(got, batches[best]):
            continue
        ends = int(np.sum(got.terminated))
        if _batch_equal(got, batches[-1]):
            hint = ("it holds the last batch drawn: copy at the moment you find a better batch, "
                    "before the next sample overwrites it")
        elif _batch_equal(got, batches[_first_most(batches, ties_last=True)]):
            hint = "on a tie keep the first batch: replace the kept one only when ends > most"
        else:
            hint = ("count the ends of each batch with batch.terminated.sum() and keep a copy of "
                    "the first batch with the most")
        expect(False, f"the batch of draw {best + 1} of {steps}, with "
               f"{int(batches[best].terminated.sum())} episode ends", f"a batch with {ends}", hint)


def most_episode_ends(answer) -> None:
    run_check("Exercise 3 (keep a copy)", answer, verify_most_episode_ends)


# ---------------------------------------------------------------- exercise 4: a pool that refuses
class _Token:
    """An object equal only to itself (no value comparison to hide identity mistakes)."""

    __slots__ = ()


def _legit(what: str, call):
    """Run a call that must work; a ValueError from it gets a teaching message."""
    try:
        return call()
    except ValueError as err:
        if "truth value" in str(err):
            hint = ("`obj in some_list` and `==` compare numpy arrays element by element; "
                    "ask whether it is the very same object, with `is` or by id(obj)")
        else:
            hint = "release must accept an object that acquire handed out and nobody released since"
        raise CheckFailed(f"expected {what} to work, got ValueError({err}): {hint}") from None


def _refused(call) -> bool:
    try:
        call()
    except ValueError:
        return True
    return False


def _random_use(pool, steps: int = 300, seed: int = 0) -> None:
    """Random acquires and releases; no object may be handed out while it is out."""
    rng = np.random.default_rng(seed)
    held = []
    for _ in range(steps):
        if held and rng.random() < 0.5:
            obj = held.pop(int(rng.integers(len(held))))
            _legit("release of an object in use", lambda: pool.release(obj))
        else:
            obj = pool.acquire()
            expect(all(obj is not h for h in held), "acquire to hand out an object nobody holds",
                   "an object that is still out",
                   "take the object out of self.free when you hand it out (self.free.pop())")
            held.append(obj)


def verify_pool(Pool) -> None:
    pool = Pool(lambda: np.zeros(4, np.float32))
    a, b = pool.acquire(), pool.acquire()
    expect(a is not b, "two acquires in a row to hand out two objects", "the same object twice",
           "an object that is out must not be handed out again: take it out of self.free "
           "with pop(), and make a new one when self.free is empty")
    expect(pool.created == 2, "created == 2 after two acquires from an empty pool",
           f"created == {pool.created}", "add 1 to created each time the factory makes an object")
    _legit("release(a) of an object in use", lambda: pool.release(a))
    _legit("release(b) of an object in use", lambda: pool.release(b))
    c = pool.acquire()
    expect(c is a or c is b, "acquire to hand out a released object", "a new object",
           "when self.free holds released objects, hand one of them out instead of calling "
           "the factory")
    expect(pool.created == 2, "created == 2 (the third acquire was served by a released object)",
           f"created == {pool.created}", "add 1 to created only when the factory makes an object")
    expect(pool.reused == 1, "reused == 1 after one acquire served by a released object",
           f"reused == {pool.reused}", "add 1 to reused when acquire hands out a released object")
    _legit("release of an object in use", lambda: pool.release(c))
    expect(_refused(lambda: pool.release(c)), "a ValueError for a second release of one object",
           "no error", "the object was already back in self.free: two later acquires would hand "
           "it to two users. Refuse an object that is not out (not in self.lent)")
    expect(_refused(lambda: pool.release(np.zeros(4, np.float32))),
           "a ValueError for an object the pool never handed out", "no error",
           "release must refuse what it did not lend: record each object acquire hands out "
           "(self.lent[id(obj)] = obj) and refuse any other")
    token_pool = Pool(_Token)
    expect(_refused(lambda: token_pool.release(_Token())),
           "a ValueError for an object the pool never handed out", "no error",
           "release must refuse what it did not lend: record each object acquire hands out "
           "(self.lent[id(obj)] = obj) and refuse any other")
    x, y = pool.acquire(), pool.acquire()
    own = sum(1 for obj in (x, y) if obj is a or obj is b)
    expect(x is not y and own == 2, "the pool's two released objects from the next two acquires, "
           "as if the refused releases had not happened",
           "the same object twice" if x is y else f"{2 - own} other object(s)",
           "a refused release must leave the pool as it was: raise before you change anything")
    _random_use(token_pool)
    reference = ObjectPool(_Token)
    _random_use(reference)
    expect((token_pool.created, token_pool.reused) == (reference.created, reference.reused),
           f"(created, reused) == {(reference.created, reference.reused)} after 300 random "
           "acquires and releases", f"{(token_pool.created, token_pool.reused)}",
           "create only when no released object is free, and count each acquire once: "
           "either created or reused")


def pool(answer) -> None:
    run_check("Exercise 4 (a pool that refuses)", answer, verify_pool)


def working_pool(answer):
    """The learner's ``Pool`` class if it passes, else rlmemlib's ObjectPool."""
    return working(answer, ObjectPool, verify_pool, "Pool")


__all__ = ["is_unfinished", "blocks_per_add", "ring", "most_episode_ends", "pool",
           "working_blocks_per_add", "working_ring", "working_pool", "reference_blocks_per_add",
           "verify_blocks_per_add", "verify_ring", "verify_most_episode_ends", "verify_pool"]
