"""Unit tests of the four memories and ObjectPool: contents, indexing, sampling, bad input, bytes.

Every memory kind runs through the same tests (the ``make_memory`` fixture), on the CartPole
spec (obs: 4 x float32, action: Discrete(2) as uint8).
"""

from __future__ import annotations

import gc
import math
import tracemalloc
import weakref
from contextlib import contextmanager

import gymnasium as gym
import numpy as np
import pytest

import rlmemlib as rm
from rlmemlib.measure import footprint, traced
from rlmemlib.rollout import cartpole_transitions, progress_enabled, rollout

SHARING_KINDS = ["CircularPool", "CircularPool-shared", "RecyclingMemory"]  # take out=


def chain(n: int, episode: int = 4, first: int = 0) -> list:
    """``n`` CartPole-shaped transitions; every ``episode`` steps an episode ends (terminated)
    and the next ``obs`` is a reset, an array different from the last ``next_obs``."""
    out = []
    obs = np.full(4, 1000.0 + first, np.float32)
    for t in range(first, first + n):
        nxt = np.full(4, t + 1, np.float32)
        end = (t + 1) % episode == 0
        out.append((obs, t % 2, float(t), nxt, end, False))
        obs = np.full(4, -(t + 1), np.float32) if end else nxt
    return out


def filled(make, capacity, spec, transitions):
    mem = make(capacity, spec)
    for t in transitions:
        mem.add(*t)
    return mem


@contextmanager
def tracing():
    """tracemalloc on for the block (left as it was found)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


def live_blocks() -> int:
    """Memory blocks alive now, over the whole process, as tracemalloc counts them."""
    snapshot = tracemalloc.take_snapshot()
    count = len(snapshot.traces)
    del snapshot
    return count


def net_blocks(action, warmup) -> int:
    """Blocks still alive after ``action()`` that were not before, over the whole process.

    Measured the same way on ``warmup()`` twice first, with tracemalloc on, and the cost of
    measuring (the ints holding the counts) taken off. What is left is exact but for CPython's
    and numpy's free lists (floats, dicts, contexts), which keep a few freed objects for reuse:
    their fill level moves by a handful of blocks from one window to the next, whatever the
    number of operations. Hence ``FREE_LIST_SLACK``, far below one block per operation.
    """
    gc.collect()  # garbage of earlier tests is not freed inside the window
    with tracing():
        for step in (warmup, warmup, action):
            e0 = live_blocks()
            e1 = live_blocks()
            b0 = live_blocks()
            step()
            b1 = live_blocks()
    return (b1 - b0) - (e1 - e0)


FREE_LIST_SLACK = 8


# ====================================================================== construction
def test_new_memory_is_empty(make_memory, cartpole_spec):
    mem = make_memory(5, cartpole_spec)
    assert len(mem) == 0 and mem.capacity == 5 and not mem.is_full
    assert list(mem) == []
    assert repr(mem) == f"{type(mem).__name__}(len=0, capacity=5)"


@pytest.mark.parametrize("capacity, exc, match", [
    (0, ValueError, "capacity must be a positive int, got 0"),
    (-3, ValueError, "capacity must be a positive int, got -3"),
    (2.5, TypeError, "capacity must be a positive int.*got 2.5"),
    ("10", TypeError, "capacity must be a positive int.*got '10'"),
    (True, TypeError, "capacity must be a positive int.*got True"),
])
def test_bad_capacity(make_memory, cartpole_spec, capacity, exc, match):
    with pytest.raises(exc, match=match):
        make_memory(capacity, cartpole_spec)


def test_capacity_none_only_for_list(cartpole_spec):
    assert rm.ListMemory(None).capacity is None
    for cls in (rm.CircularPool, rm.RecyclingMemory):
        with pytest.raises(TypeError, match="capacity must be a positive int, got None"):
            cls(None, cartpole_spec)


@pytest.mark.parametrize("cls", [rm.CircularPool, rm.RecyclingMemory, rm.ListMemory])
def test_spec_must_be_a_spec(cls):
    with pytest.raises(TypeError, match="spec must be a TransitionSpec .*got dict"):
        cls(3, {"obs_shape": (4,)})


def test_numpy_int_capacity(make_memory, cartpole_spec):
    mem = make_memory(np.int64(3), cartpole_spec)
    assert mem.capacity == 3 and type(mem.capacity) is int


# ====================================================================== contents and indexing
def test_holds_the_last_capacity_transitions(make_memory, cartpole_spec, helpers):
    data = chain(11, episode=3)
    mem = make_memory(4, cartpole_spec)
    for n, t in enumerate(data, 1):
        mem.add(*t)
        assert len(mem) == min(n, 4) and mem.is_full == (n >= 4)
        assert helpers.contents(mem, cartpole_spec) == [helpers.canon(x, cartpole_spec)
                                                        for x in data[max(0, n - 4):n]]


def test_logical_index_zero_oldest_minus_one_newest(make_memory, cartpole_spec, helpers):
    data = chain(7)
    mem = filled(make_memory, 5, cartpole_spec, data)  # holds data[2:7]
    c = lambda t: helpers.canon(t, cartpole_spec)  # noqa: E731
    assert c(mem[0]) == c(data[2]) and c(mem[-1]) == c(data[6])
    assert c(mem[-5]) == c(mem[0]) and c(mem[4]) == c(mem[-1]) and c(mem[1]) == c(data[3])
    assert c(mem[np.int64(2)]) == c(data[4]) and c(mem[np.uint8(1)]) == c(data[3])
    assert [c(t) for t in mem] == [c(t) for t in data[2:]]
    assert isinstance(mem[0], rm.Transition)


@pytest.mark.parametrize("index", [5, 6, -6, 10**20, -10**20])
def test_index_out_of_range(make_memory, cartpole_spec, index):
    mem = filled(make_memory, 5, cartpole_spec, chain(7))
    with pytest.raises(IndexError, match=f"index {index} is out of range for a memory holding 5 transitions"):
        mem[index]


def test_index_into_empty_memory(make_memory, cartpole_spec):
    mem = make_memory(5, cartpole_spec)
    for index in (0, -1):
        with pytest.raises(IndexError, match="out of range for a memory holding 0 transitions"):
            mem[index]


@pytest.mark.parametrize("index", [1.0, "0", None, True, slice(0, 2), [0], np.array([0]), np.float64(0)])
def test_index_must_be_an_int(make_memory, cartpole_spec, index):
    mem = filled(make_memory, 5, cartpole_spec, chain(3))
    with pytest.raises(TypeError, match="index must be an int, got"):
        mem[index]


def test_keywords_work(make_memory, cartpole_spec, helpers):
    obs, action, reward, next_obs, term, trunc = chain(1)[0]
    mem = make_memory(2, cartpole_spec)
    mem.add(truncated=trunc, terminated=term, next_obs=next_obs, reward=reward, action=action, obs=obs)
    assert helpers.contents(mem, cartpole_spec) == [helpers.canon(chain(1)[0], cartpole_spec)]


def test_values_come_back_in_the_spec_dtypes(cartpole_spec):
    for make in (lambda: rm.CircularPool(3, cartpole_spec), lambda: rm.CircularPool(3, cartpole_spec, True),
                 lambda: rm.RecyclingMemory(3, cartpole_spec)):
        mem = make()
        mem.add([0.1, 0.2, 0.3, 0.4], np.int64(1), 1, np.array([1, 2, 3, 4.0]), np.True_, 0)
        t = mem[0]
        assert t.obs.dtype == np.float32 and t.next_obs.dtype == np.float32
        assert type(t.action) is np.uint8 and type(t.reward) is np.float32
        assert t.terminated is True and t.truncated is False
        assert t.obs.tobytes() == np.array([0.1, 0.2, 0.3, 0.4]).astype(np.float32).tobytes()


def test_pools_copy_what_they_are_given(cartpole_spec):
    for mem in (rm.CircularPool(3, cartpole_spec), rm.CircularPool(3, cartpole_spec, True),
                rm.RecyclingMemory(3, cartpole_spec)):
        obs, nxt = np.zeros(4, np.float32), np.ones(4, np.float32)
        mem.add(obs, 0, 1.0, nxt, False, False)
        obs[:] = 7
        nxt[:] = 7
        got = mem[0]
        assert got.obs.tolist() == [0] * 4 and got.next_obs.tolist() == [1] * 4
        got.obs[:] = 9  # mem[i] returns copies: writing to them leaves the memory alone
        assert mem[0].obs.tolist() == [0] * 4


def test_list_memory_holds_the_objects_it_was_given(cartpole_spec):
    obs, nxt = np.zeros(4, np.float32), np.ones(4, np.float32)
    mem = rm.ListMemory(None, cartpole_spec)
    mem.add(obs, 0, 1.0, nxt, False, False)
    mem.add(nxt, 1, 1.0, np.full(4, 2, np.float32), False, False)
    assert mem[0].obs is obs and mem[0].next_obs is nxt and mem[1].obs is nxt  # shared for free


def test_list_memory_unbounded_and_capped(cartpole_spec, helpers):
    data = chain(1000, episode=7)
    unbounded = filled(lambda c, s: rm.ListMemory(c, s), None, cartpole_spec, data)
    assert len(unbounded) == 1000 and not unbounded.is_full and unbounded.capacity is None
    assert helpers.canon(unbounded[0], cartpole_spec) == helpers.canon(data[0], cartpole_spec)
    capped = filled(lambda c, s: rm.ListMemory(c, s), 10, cartpole_spec, data)
    assert len(capped) == 10 and capped.is_full
    assert helpers.contents(capped, cartpole_spec) == [helpers.canon(t, cartpole_spec) for t in data[-10:]]


def test_list_memory_without_spec_learns_it_from_the_first_add():
    mem = rm.ListMemory(3)
    with pytest.raises(TypeError, match="obs must be numeric, got text"):
        mem.add("text", 0, 1.0, "text", False, False)
    with pytest.raises(TypeError, match="terminated must be a bool"):
        mem.add(np.zeros(2), 0, 1.0, np.zeros(2), "yes", False)
    assert mem.spec is None and len(mem) == 0  # a rejected first add leaves no spec behind
    mem.add(np.zeros(2, np.float32), 1, 1.0, np.ones(2, np.float32), False, False)
    assert mem.spec.obs_shape == (2,) and mem.spec.obs_dtype == np.float32
    with pytest.raises(ValueError, match=r"obs has shape \(3,\), expected \(2,\)"):
        mem.add(np.zeros(3, np.float32), 1, 1.0, np.ones(2, np.float32), False, False)
    with pytest.raises(ValueError, match="action must be a whole number"):
        mem.add(np.zeros(2, np.float32), 1.5, 1.0, np.ones(2, np.float32), False, False)
    assert len(mem) == 1
    batch = mem.sample(4, np.random.default_rng(0))
    assert batch.obs.shape == (4, 2) and batch.obs.dtype == np.float32
    mem.clear()
    assert len(mem) == 0 and mem.spec is not None  # the learned spec stays


def test_clear_forgets_and_reuses(make_memory, cartpole_spec, helpers):
    mem = filled(make_memory, 4, cartpole_spec, chain(6))
    mem.clear()
    assert len(mem) == 0 and mem.capacity == 4 and list(mem) == []
    with pytest.raises(ValueError, match="cannot sample from an empty memory"):
        mem.sample(2, np.random.default_rng(0))
    data = chain(6, episode=2, first=50)
    for t in data:
        mem.add(*t)
    assert helpers.contents(mem, cartpole_spec) == [helpers.canon(t, cartpole_spec) for t in data[-4:]]


def test_clear_keeps_preallocated_arrays(cartpole_spec):
    pool = filled(lambda c, s: rm.CircularPool(c, s, share_next_obs=True), 4, cartpole_spec, chain(6))
    arrays, finals = pool.obs, pool._finals.obs
    open_bytes = sum(len(b) for b in pool._open.values())  # the newest next_obs, not in an array
    nbytes = pool.nbytes
    pool.clear()
    assert pool.obs is arrays and pool._finals.obs is finals and pool.nbytes == nbytes - open_bytes
    rec = filled(lambda c, s: rm.RecyclingMemory(c, s), 4, cartpole_spec, chain(6))
    records = list(rec.records)
    rec.clear()
    for t in chain(9):
        rec.add(*t)
    assert all(a is b for a, b in zip(rec.records, records))  # overwritten in place, never replaced


# ====================================================================== sampling
def test_sampling_rule(make_memory, cartpole_spec, cartpole_data, helpers):
    mem = filled(make_memory, 300, cartpole_spec, cartpole_data[:700])  # wrapped around twice
    batch = mem.sample(64, np.random.default_rng(5))
    idx = np.random.default_rng(5).integers(0, len(mem), size=64)
    assert len(batch) == 64
    assert helpers.batch_rows(batch, cartpole_spec) == [helpers.canon(mem[i], cartpole_spec) for i in idx]


def test_every_memory_returns_the_same_batch(cartpole_spec, cartpole_data, helpers):
    memories = {name: filled(make, 500, cartpole_spec, cartpole_data[:1300])
                for name, make in helpers.kinds.items()}
    batches = {name: mem.sample(256, np.random.default_rng(11)) for name, mem in memories.items()}
    rows = {name: helpers.batch_rows(b, cartpole_spec) for name, b in batches.items()}
    first = rows.pop("ListMemory")
    assert len(set(t[0] for t in first)) > 100  # a real batch, not one row repeated
    for name, r in rows.items():
        assert r == first, name
        for a, b in zip(batches[name], batches["ListMemory"]):  # values equal, compared as numpy does
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_the_generator_state_decides_the_batch(make_memory, cartpole_spec, helpers):
    mem = filled(make_memory, 50, cartpole_spec, chain(80))
    rng = np.random.default_rng(3)
    a, b = mem.sample(16, rng), mem.sample(16, rng)  # the generator moves on
    assert helpers.batch_rows(a, cartpole_spec) != helpers.batch_rows(b, cartpole_spec)
    rng2 = np.random.default_rng(3)
    assert helpers.batch_rows(mem.sample(16, rng2), cartpole_spec) == helpers.batch_rows(a, cartpole_spec)
    assert helpers.batch_rows(mem.sample(16, rng2), cartpole_spec) == helpers.batch_rows(b, cartpole_spec)


def test_sample_from_one_transition_and_capacity_one(make_memory, cartpole_spec, helpers):
    data = chain(3, episode=1)
    mem = filled(make_memory, 1, cartpole_spec, data)
    batch = mem.sample(5, np.random.default_rng(0))
    assert helpers.batch_rows(batch, cartpole_spec) == [helpers.canon(data[-1], cartpole_spec)] * 5


def test_sampled_arrays_are_not_views_of_the_memory(make_memory, cartpole_spec, helpers):
    mem = filled(make_memory, 8, cartpole_spec, chain(10))
    before = helpers.contents(mem, cartpole_spec)
    batch = mem.sample(8, np.random.default_rng(0))
    for a in batch:
        a[...] = 1
    assert helpers.contents(mem, cartpole_spec) == before


@pytest.mark.parametrize("kind", SHARING_KINDS)
def test_sample_into_a_reused_batch(kind, cartpole_spec, cartpole_data, helpers):
    mem = filled(helpers.kinds[kind], 400, cartpole_spec, cartpole_data[:1000])
    out = cartpole_spec.empty_batch(32)
    arrays = list(out)
    got = mem.sample(32, np.random.default_rng(1), out=out)
    assert got is out and all(a is b for a, b in zip(out, arrays))  # filled in place
    fresh = mem.sample(32, np.random.default_rng(1))
    assert helpers.batch_rows(out, cartpole_spec) == helpers.batch_rows(fresh, cartpole_spec)
    first = helpers.batch_rows(out, cartpole_spec)
    # the next sample overwrites the same arrays
    again = mem.sample(32, np.random.default_rng(2), out=out)
    assert again is out and all(a is b for a, b in zip(out, arrays))
    assert helpers.batch_rows(out, cartpole_spec) == helpers.batch_rows(
        mem.sample(32, np.random.default_rng(2)), cartpole_spec)
    assert helpers.batch_rows(out, cartpole_spec) != first


@pytest.mark.parametrize("kind", SHARING_KINDS)
def test_sample_out_reuse_allocates_no_batch(kind, cartpole_spec, cartpole_data, helpers):
    mem = filled(helpers.kinds[kind], 1000, cartpole_spec, cartpole_data[:1000])
    out, rng = cartpole_spec.empty_batch(256), np.random.default_rng(0)

    def draw(times):
        for _ in range(times):
            mem.sample(256, rng, out=out)

    assert abs(net_blocks(lambda: draw(30), warmup=lambda: draw(3))) <= FREE_LIST_SLACK  # 30 samples


# ---------------------------------------------------------------------- bad sampling arguments
def test_sample_empty_memory(make_memory, cartpole_spec):
    mem = make_memory(4, cartpole_spec)
    with pytest.raises(ValueError, match="cannot sample from an empty memory: add transitions first"):
        mem.sample(2, np.random.default_rng(0))


@pytest.mark.parametrize("batch_size, exc, match", [
    (0, ValueError, "batch_size must be a positive int, got 0"),
    (-1, ValueError, "batch_size must be a positive int, got -1"),
    (2.5, TypeError, r"batch_size must be a positive int, got 2.5 \(float\)"),
    (True, TypeError, r"batch_size must be a positive int, got True \(bool\)"),
    ("8", TypeError, r"batch_size must be a positive int, got '8' \(str\)"),
    (None, TypeError, "batch_size must be a positive int, got None"),
])
def test_sample_bad_batch_size(make_memory, cartpole_spec, batch_size, exc, match):
    mem = filled(make_memory, 4, cartpole_spec, chain(5))
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    with pytest.raises(exc, match=match):
        mem.sample(batch_size, rng)
    assert rng.bit_generator.state == state  # refused before drawing


@pytest.mark.parametrize("rng", [None, 0, np.random.RandomState(0), np.random, np.random.PCG64(0)],
                         ids=["None", "int", "RandomState", "module", "BitGenerator"])
def test_sample_rng_must_be_a_generator(make_memory, cartpole_spec, rng):
    mem = filled(make_memory, 4, cartpole_spec, chain(5))
    with pytest.raises(TypeError, match=r"rng must be a numpy Generator \(np.random.default_rng\(seed\)\), got"):
        mem.sample(2, rng)


def _bad_batch(spec, n, field, array):
    batch = spec.empty_batch(n)
    setattr(batch, field, array)
    return batch


@pytest.mark.parametrize("kind", SHARING_KINDS)
@pytest.mark.parametrize("field, array, match", [
    ("obs", np.zeros((8, 5), np.float32), r"out.obs is \(8, 5\) float32, expected shape \(8, 4\) and dtype float32"),
    ("obs", np.zeros((8, 4), np.float64), r"out.obs is \(8, 4\) float64, expected shape \(8, 4\) and dtype float32"),
    ("next_obs", np.zeros((8, 4), np.float16), r"out.next_obs is \(8, 4\) float16, expected"),
    ("action", np.zeros(8, np.int64), r"out.action is \(8,\) int64, expected shape \(8,\) and dtype uint8"),
    ("reward", np.zeros((8, 1), np.float32), r"out.reward is \(8, 1\) float32, expected shape \(8,\)"),
    ("terminated", np.zeros(8, np.uint8), r"out.terminated is \(8,\) uint8, expected shape \(8,\) and dtype bool"),
    ("truncated", [False] * 8, r"out.truncated is list, expected shape \(8,\) and dtype bool"),
])
def test_sample_out_of_the_wrong_shape_or_dtype(kind, cartpole_spec, helpers, field, array, match):
    mem = filled(helpers.kinds[kind], 4, cartpole_spec, chain(5))
    bad = _bad_batch(cartpole_spec, 8, field, array)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    with pytest.raises(ValueError, match=match):
        mem.sample(8, rng, out=bad)
    assert rng.bit_generator.state == state  # a refused sample draws nothing
    # and after a good batch was used once, a changed one is checked again
    good = cartpole_spec.empty_batch(8)
    mem.sample(8, rng, out=good)
    setattr(good, field, array)
    with pytest.raises(ValueError, match=match):
        mem.sample(8, rng, out=good)


@pytest.mark.parametrize("kind", SHARING_KINDS)
def test_sample_out_of_the_wrong_size_or_type(kind, cartpole_spec, helpers):
    mem = filled(helpers.kinds[kind], 4, cartpole_spec, chain(5))
    rng = np.random.default_rng(0)
    out = cartpole_spec.empty_batch(8)
    with pytest.raises(ValueError, match=r"out.obs is \(8, 4\) float32, expected shape \(16, 4\)"):
        mem.sample(16, rng, out=out)
    assert mem.sample(8, rng, out=out) is out
    with pytest.raises(ValueError, match=r"expected shape \(4, 4\)"):
        mem.sample(4, rng, out=out)  # the same arrays as last time, but the wrong size
    for bad in ("x", object(), dict(out.__dict__), tuple(out)):
        with pytest.raises(TypeError, match=r"out must be a Batch \(spec.empty_batch\(8\)\), got"):
            mem.sample(8, rng, out=bad)
    other = rm.TransitionSpec((4,), np.float64, (), np.uint8).empty_batch(8)
    with pytest.raises(ValueError, match="out.obs is .* float64, expected shape"):
        mem.sample(8, rng, out=other)


# ====================================================================== share_next_obs: exact next_obs
def _check_shared_against_reference(transitions, capacity, spec, helpers):
    """Add one by one to a shared pool; after every add it holds exactly the last transitions."""
    pool = rm.CircularPool(capacity, spec, share_next_obs=True)
    plain = rm.CircularPool(capacity, spec)
    ref = []
    for n, t in enumerate(transitions, 1):
        pool.add(*t)
        plain.add(*t)
        ref = (ref + [helpers.canon(t, spec)])[-capacity:]
        assert helpers.contents(pool, spec) == ref, f"after add {n}"
        rng = np.random.default_rng(n)
        rows = helpers.batch_rows(pool.sample(2 * capacity, rng), spec)
        assert rows == helpers.batch_rows(plain.sample(2 * capacity, np.random.default_rng(n)), spec)
    return pool


@pytest.mark.parametrize("capacity", [1, 2, 3, 5, 8])
def test_shared_next_obs_at_episode_ends(capacity, cartpole_spec, helpers):
    _check_shared_against_reference(chain(20, episode=3), capacity, cartpole_spec, helpers)


@pytest.mark.parametrize("capacity", [1, 2, 4, 7])
def test_shared_next_obs_at_truncations_and_unflagged_breaks(capacity, cartpole_spec, helpers):
    f = lambda v: np.full(4, v, np.float32)  # noqa: E731
    data = [
        (f(0), 0, 1.0, f(1), False, False),
        (f(1), 1, 1.0, f(2), False, True),    # truncated: the next obs is a reset
        (f(10), 0, 1.0, f(11), False, False),
        (f(12), 1, 1.0, f(13), False, False),  # a break with no flag at all
        (f(13), 0, 1.0, f(14), True, True),    # both flags
        (f(14), 1, 1.0, f(15), True, False),   # ended, yet the reset equals the final obs
        (f(15), 0, 1.0, f(16), False, False),
        (f(99), 1, 1.0, f(99), False, False),  # obs == next_obs
        (f(99), 0, 1.0, f(7), False, True),
        (f(7), 1, 1.0, f(8), False, False),
        (f(0), 0, 1.0, f(1), True, False),
        (f(5), 1, 1.0, f(6), True, False),
    ]
    _check_shared_against_reference(data, capacity, cartpole_spec, helpers)


@pytest.mark.parametrize("capacity", [1, 3])
def test_shared_next_obs_is_bit_exact(capacity, cartpole_spec, helpers):
    """-0.0 equals 0.0 and NaN differs from NaN as numbers; the pool compares bits."""
    bits = lambda *u: np.array(u, np.uint32).view(np.float32)  # noqa: E731
    zero, negzero = bits(0, 0, 0, 0), bits(0x80000000, 0, 0, 0)
    nan_a, nan_b = bits(0x7FC00000, 1, 2, 3), bits(0x7FC00001, 1, 2, 3)
    data = [
        (bits(5, 5, 5, 5), 0, -0.0, zero, False, False),
        (negzero, 1, math.nan, nan_a, False, False),   # == zero as numbers, not as bits: a break
        (nan_a.copy(), 0, 1.0, nan_a.copy(), False, False),   # same NaN bits: the chain holds
        (nan_b, 1, 1.0, negzero, False, False),        # another NaN payload: a break
        (negzero.copy(), 0, 3.4e38, bits(0x7F800001, 0, 0, 0), True, False),  # signalling NaN
        (bits(1, 1, 1, 1), 1, -3.4e38, bits(0xFF800000, 0, 0, 0), False, False),  # -inf
    ]
    pool = _check_shared_against_reference(data, capacity, cartpole_spec, helpers)
    assert pool[-1].next_obs.view(np.uint32)[0] == 0xFF800000


def test_shared_chain_stores_no_final_observations(cartpole_spec, helpers):
    """Where next_obs is the next obs (bit for bit, NaN included), nothing goes to the side store."""
    nan = np.array([np.nan, -0.0, 1, 2], np.float32)
    data = [(nan.copy(), 0, 1.0, nan.copy(), False, False) for _ in range(10)]
    pool = _check_shared_against_reference(data, 4, cartpole_spec, helpers)
    assert pool._finals.count == 0


def test_shared_side_store_grows_and_slides(cartpole_spec, helpers):
    """Every transition ends an episode: the side store holds one final obs per transition, must
    grow past its initial size, and slide its live run as the oldest leave."""
    data = chain(200, episode=1)
    pool = _check_shared_against_reference(data[:90], 40, cartpole_spec, helpers)
    assert pool._finals.count >= 39
    for t in data[90:]:
        pool.add(*t)
    assert helpers.contents(pool, cartpole_spec) == [helpers.canon(t, cartpole_spec) for t in data[-40:]]


def test_shared_pool_on_real_cartpole(cartpole_spec, cartpole_data, helpers):
    shared = filled(helpers.kinds["CircularPool-shared"], 1000, cartpole_spec, cartpole_data)
    ends = sum(1 for t in cartpole_data[-1000:] if t[4] or t[5])
    assert ends > 20  # the held window has many episode ends, each a break in the chain
    assert helpers.contents(shared, cartpole_spec) == [helpers.canon(t, cartpole_spec)
                                                       for t in cartpole_data[-1000:]]


# ====================================================================== bytes
def test_pool_bytes_per_transition(cartpole_spec, cartpole_data, helpers):
    capacity = 5000
    plain = filled(helpers.kinds["CircularPool"], capacity, cartpole_spec, cartpole_data)
    shared = filled(helpers.kinds["CircularPool-shared"], capacity, cartpole_spec, cartpole_data)
    assert plain.nbytes / capacity <= cartpole_spec.nbytes          # at the raw bound
    assert shared.nbytes / capacity < 0.65 * cartpole_spec.nbytes   # about half of it
    assert shared.nbytes / capacity > 0.5 * cartpole_spec.nbytes - 1  # (the bound is 23 B)


@pytest.mark.parametrize("kind", ["CircularPool", "CircularPool-shared"])
def test_pool_nbytes_is_what_tracemalloc_sees(kind, cartpole_spec, cartpole_data, helpers):
    make = helpers.kinds[kind]
    pool, m = footprint(lambda: filled(make, 2000, cartpole_spec, cartpole_data[:3000]))
    assert pool.nbytes <= m.current < pool.nbytes + 8 * 1024  # arrays, plus a few small objects


# ====================================================================== tracemalloc: flat once full
def _adder(mem, transitions):
    def add_all():
        for t in transitions:
            mem.add(*t)
    return add_all


@pytest.mark.parametrize("kind", SHARING_KINDS)
def test_memory_stays_flat_once_full(kind, cartpole_spec, cartpole_data, helpers):
    mem = filled(helpers.kinds[kind], 1000, cartpole_spec, cartpole_data[:2000])  # full, then once around
    warmup, later = cartpole_data[2000:2500], cartpole_data[2500:4500]
    assert abs(net_blocks(_adder(mem, later), warmup=_adder(mem, warmup))) <= FREE_LIST_SLACK  # 2000 adds
    gc.collect()
    with traced() as m:  # the course's own lens agrees: flat, within the measurement's own ints
        _adder(mem, cartpole_data[4500:])()
    assert abs(m.current) < 2048 and m.blocks < 20


def test_recycling_memory_allocates_nothing_per_add_but_a_list_does(cartpole_spec, cartpole_data, helpers):
    recycling = filled(helpers.kinds["RecyclingMemory"], 500, cartpole_spec, cartpole_data[:500])
    listmem = rm.ListMemory(None, cartpole_spec)
    warmup, batch = cartpole_data[500:800], cartpole_data[1000:2000]
    assert abs(net_blocks(_adder(recycling, batch), warmup=_adder(recycling, warmup))) <= FREE_LIST_SLACK
    assert net_blocks(_adder(listmem, batch), warmup=_adder(listmem, warmup)) >= len(batch)  # a tuple each


# ====================================================================== bad input, for every memory
def _replace(t, field, value):
    names = ("obs", "action", "reward", "next_obs", "terminated", "truncated")
    return dict(zip(names, t)) | {field: value}


BAD_ADDS = [
    ("action", 1.5, ValueError, r"action must be a whole number for dtype uint8, got 1\.5"),
    ("action", 10**6, ValueError, r"action is 1000000, expected an int in \[0, 1\] from the action space"),
    ("action", -1, ValueError, r"action is -1, expected an int in \[0, 1\]"),
    ("action", 2, ValueError, r"action is 2, expected an int in \[0, 1\]"),
    ("action", np.int64(2), ValueError, r"action is 2, expected an int in \[0, 1\]"),
    ("action", np.float64(1.5), ValueError, "action must be a whole number"),
    ("action", "1", TypeError, "action must be an int for dtype uint8, got '1'"),
    ("action", None, TypeError, "action must be an int for dtype uint8, got None"),
    ("obs", "text", TypeError, "obs must be numeric, got text 'text'"),
    ("next_obs", "abcd", TypeError, "next_obs must be numeric, got text 'abcd'"),
    ("obs", np.zeros(3, np.float32), ValueError, r"obs has shape \(3,\), expected \(4,\) from the observation space"),
    ("next_obs", np.zeros((2, 2), np.float32), ValueError, r"next_obs has shape \(2, 2\), expected \(4,\)"),
    ("obs", [0.0, [1.0], 2.0, 3.0], TypeError, r"obs could not be read as an array of shape \(4,\)"),
    ("obs", np.full(4, 1e39), ValueError, "obs has values that overflow dtype float32"),
    ("next_obs", np.zeros(4, complex), TypeError, "next_obs must be numeric, got dtype complex128"),
    ("reward", "1.0", TypeError, r"reward must be a real number, got '1.0' \(str\)"),
    ("reward", None, TypeError, "reward must be a real number, got None"),
    ("reward", 1e39, ValueError, r"reward is 1e\+39, which overflows dtype float32"),
    ("reward", 10**400, ValueError, "reward is 1000.*, which overflows dtype float32"),
    ("terminated", 2, TypeError, r"terminated must be a bool, got 2 \(int\)"),
    ("terminated", "yes", TypeError, r"terminated must be a bool, got 'yes' \(str\)"),
    ("truncated", None, TypeError, "truncated must be a bool, got None"),
    ("truncated", 0.5, TypeError, "truncated must be a bool, got 0.5"),
]


@pytest.mark.parametrize("field, value, exc, match", BAD_ADDS,
                         ids=[f"{f}={v!r:.12}" for f, v, _, _ in BAD_ADDS])
def test_rejected_add_leaves_the_memory_as_it_was(make_memory, cartpole_spec, helpers, field, value, exc, match):
    data = chain(12, episode=3)
    mem = filled(make_memory, 4, cartpole_spec, data[:6])   # full: the next slot holds the oldest
    twin = filled(make_memory, 4, cartpole_spec, data[:6])
    before = helpers.contents(mem, cartpole_spec)
    # the rejected transition starts a new chain (obs differs from the last next_obs)
    good = (np.full(4, 77, np.float32), 1, 5.0, np.full(4, 78, np.float32), False, False)
    with pytest.raises(exc, match=match):
        mem.add(**_replace(good, field, value))
    assert len(mem) == 4
    assert helpers.contents(mem, cartpole_spec) == before
    # nothing hidden changed either: it goes on exactly like a memory that never saw the bad add
    for t in [good] + data[6:]:
        mem.add(*t)
        twin.add(*t)
    assert helpers.contents(mem, cartpole_spec) == helpers.contents(twin, cartpole_spec)
    assert helpers.batch_rows(mem.sample(20, np.random.default_rng(0)), cartpole_spec) == \
        helpers.batch_rows(twin.sample(20, np.random.default_rng(0)), cartpole_spec)


@pytest.mark.parametrize("field, value, exc, match", BAD_ADDS[:4] + BAD_ADDS[8:10],
                         ids=[f"{f}={v!r:.12}" for f, v, _, _ in BAD_ADDS[:4] + BAD_ADDS[8:10]])
def test_rejected_add_into_empty_memory(make_memory, cartpole_spec, field, value, exc, match):
    mem = make_memory(3, cartpole_spec)
    with pytest.raises(exc, match=match):
        mem.add(**_replace(chain(1)[0], field, value))
    assert len(mem) == 0
    with pytest.raises(ValueError, match="empty memory"):
        mem.sample(1, np.random.default_rng(0))


# ====================================================================== ObjectPool
def test_object_pool_acquire_release_and_counters():
    made = []
    pool = rm.ObjectPool(lambda: made.append(bytearray(8)) or made[-1], size=2)
    assert (pool.created, pool.reused, pool.in_use, pool.available) == (2, 0, 0, 2)
    a = pool.acquire()
    b = pool.acquire()
    assert a is not b and {id(a), id(b)} == {id(x) for x in made}
    assert (pool.created, pool.reused, pool.in_use, pool.available) == (2, 0, 2, 0)
    c = pool.acquire()  # none free: one more is made
    assert (pool.created, pool.reused, pool.in_use, pool.available) == (3, 0, 3, 0)
    pool.release(b)
    assert (pool.in_use, pool.available) == (2, 1)
    assert pool.acquire() is b  # a released object is handed out again
    assert (pool.created, pool.reused, pool.in_use, pool.available) == (3, 1, 3, 0)
    for obj in (a, b, c):
        pool.release(obj)
    assert (pool.created, pool.reused, pool.in_use, pool.available) == (3, 1, 0, 3)
    got = [pool.acquire() for _ in range(3)]
    assert {id(x) for x in got} == {id(a), id(b), id(c)} and pool.reused == 4 and pool.created == 3
    assert repr(pool) == "ObjectPool(created=3, reused=4, in_use=3, available=0)"


def test_object_pool_counts_fresh_objects_as_not_reused():
    pool = rm.ObjectPool(list, size=3)
    x = pool.acquire()
    pool.release(x)
    y = pool.acquire()  # the released one comes back first
    assert y is x and pool.reused == 1
    pool.acquire()
    pool.acquire()  # two never-used objects: not reuse
    assert pool.reused == 1 and pool.created == 3 and pool.available == 0
    pool.acquire()
    assert pool.created == 4


def test_object_pool_refuses_foreign_and_double_releases():
    pool, other = rm.ObjectPool(dict, size=1), rm.ObjectPool(dict, size=1)
    a = pool.acquire()
    with pytest.raises(ValueError, match="this dict was not handed out by this pool"):
        pool.release({})               # equal to a, but not a
    with pytest.raises(ValueError, match="this dict was not handed out by this pool"):
        pool.release(other.acquire())  # another pool's object
    pool.release(a)
    with pytest.raises(ValueError, match="this object was already released to the pool: releasing it twice"):
        pool.release(a)
    assert (pool.in_use, pool.available) == (0, 1)
    assert pool.acquire() is a and pool.available == 0  # still handed out only once


@pytest.mark.parametrize("factory, size, exc, match", [
    (None, 1, TypeError, "factory must be callable, got NoneType"),
    (list, -1, ValueError, "size must be an int >= 0, got -1"),
    (list, 1.5, ValueError, "size must be an int >= 0, got 1.5"),
    (list, True, ValueError, "size must be an int >= 0, got True"),
])
def test_object_pool_bad_arguments(factory, size, exc, match):
    with pytest.raises(exc, match=match):
        rm.ObjectPool(factory, size)


def test_object_pool_with_size_zero_makes_on_demand():
    pool = rm.ObjectPool(lambda: np.zeros(4))
    assert (pool.created, pool.available) == (0, 0)
    pool.acquire()
    assert pool.created == 1 and pool.in_use == 1


# ====================================================================== rollout
def test_rollout_feeds_every_memory_the_same_transitions(cartpole_spec, helpers):
    memories = {name: make(150, cartpole_spec) for name, make in helpers.kinds.items()}
    for mem in memories.values():
        env = gym.make("CartPole-v1")
        stats = rollout(env, mem, 300, seed=4, progress_bar=False)
        env.close()
        assert stats.steps == 300 and len(mem) == 150
        assert stats.episodes == len(stats.episode_lengths) > 5
        assert sum(stats.episode_lengths) <= 300 and stats.episode_returns == \
            [float(n) for n in stats.episode_lengths]  # CartPole pays 1 per step
    first = helpers.contents(memories.pop("ListMemory"), cartpole_spec)
    for mem in memories.values():
        assert helpers.contents(mem, cartpole_spec) == first


def test_rollout_policy_and_on_step(cartpole_spec):
    mem, steps = rm.ListMemory(None, cartpole_spec), []
    env = gym.make("CartPole-v1")
    rollout(env, mem, 40, seed=0, policy=lambda obs: np.int64(1), on_step=steps.append, progress_bar=False)
    env.close()
    assert steps == list(range(1, 41))
    assert {t.action for t in mem} == {1} and all(type(t.action) is int for t in mem)


@pytest.mark.parametrize("steps", [-1, 2.5, True, "10", None])
def test_rollout_bad_steps(steps):
    with pytest.raises(ValueError, match="steps must be an int >= 0, got"):
        rollout(gym.make("CartPole-v1"), rm.ListMemory(), steps)


def test_progress_switch(monkeypatch):
    monkeypatch.setenv("RLMEMLIB_PROGRESS", "0")
    assert not progress_enabled()
    monkeypatch.setenv("RLMEMLIB_PROGRESS", "1")
    assert progress_enabled()
    monkeypatch.delenv("RLMEMLIB_PROGRESS")
    assert progress_enabled()


def test_cartpole_transitions_are_seeded(cartpole_spec, helpers):
    a, b, c = cartpole_transitions(200, seed=1), cartpole_transitions(200, seed=1), cartpole_transitions(200, seed=2)
    canon = lambda data: [helpers.canon(t, cartpole_spec) for t in data]  # noqa: E731
    assert canon(a) == canon(b) and canon(a) != canon(c)
    for t, nxt in zip(a, a[1:]):  # a chain, broken only where an episode ended
        continues = t[3].tobytes() == nxt[0].tobytes()
        assert continues != (t[4] or t[5])


@pytest.mark.parametrize("kind", ["ListMemory", "CircularPool", "CircularPool-shared", "RecyclingMemory"])
def test_a_memory_dropped_is_freed_at_once_without_the_cyclic_collector(kind, cartpole_spec, cartpole_data, helpers):
    """No reference cycle inside a memory: its last reference gone, reference counting frees it
    (lesson 05's rule), even with the side store grown and the collector switched off."""
    mem = filled(helpers.kinds[kind], 200, cartpole_spec, cartpole_data[:1000])
    alive = weakref.ref(mem)
    gc.disable()
    try:
        del mem
        assert alive() is None
    finally:
        gc.enable()
