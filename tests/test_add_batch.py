"""``add_batch`` on every memory: exactly ``n`` single adds, checked whole before anything is written.

The property test feeds the same stream of transitions to two memories of each kind: one gets
it in single adds and batches of any size (empty, larger than the capacity, wrapping around the
ring), the other ("the twin") gets every row of every batch as a single ``add``, with the very
rows the batch held (row ``k`` of each array). Both must hold the same transitions, bit for bit,
and draw the same samples. The stream interleaves several environments, as a vector env hands
them over, so one row's ``obs`` is usually the ``next_obs`` of a row a few rows back, not of the
row just before. Rejected batches (one bad value in one row, or a bad shape) must change nothing.
"""

from __future__ import annotations

import gc
import math
import weakref

import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import rlmemlib as rm

# obs: 3 x float32 (any bits); action: Discrete(3, start=-1), stored as int8 in [-1, 1]
SPEC = rm.TransitionSpec.from_spaces(spaces.Box(-np.inf, np.inf, (3,), np.float32),
                                     spaces.Discrete(3, start=-1))
PROPERTY = settings(max_examples=100, deadline=None,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
KINDS = {
    "ListMemory": lambda c: rm.ListMemory(c, SPEC),
    "CircularPool": lambda c: rm.CircularPool(c, SPEC),
    "CircularPool-shared": lambda c: rm.CircularPool(c, SPEC, share_next_obs=True),
    "RecyclingMemory": lambda c: rm.RecyclingMemory(c, SPEC),
}


# ---------------------------------------------------------------------- the stream of rows
SPECIAL_BITS = np.array([0x00000000, 0x80000000, 0x7FC00000, 0xFFC00001, 0x7F800001, 0x7F800000,
                         0xFF800000, 0x7F7FFFFF, 0x00000001], np.uint32)
SPECIAL_REWARDS = [-0.0, 0.0, math.nan, math.inf, -3.4e38, 1e-45, 1.0]


def stream(seed: int, n: int, envs: int, order: str, end_rate: float, break_rate: float) -> list:
    """``n`` rows of ``envs`` interleaved environments: (obs, action, reward, next_obs, term, trunc).

    Within one environment, ``obs`` is the previous ``next_obs`` (the same bits) unless its
    episode ended (a flag) or the chain breaks on purpose without a flag. Observations mix
    random bits with special ones (zeros of both signs, NaNs with payloads, infinities)."""
    rng = np.random.default_rng(seed)
    last = [None] * envs
    rows = []
    for i in range(n):
        e = i % envs if order == "round robin" else int(rng.integers(envs))
        fresh = rng.integers(0, 2**32, size=(2, 3), dtype=np.uint32)
        special = rng.random((2, 3)) < 0.2
        fresh[special] = rng.choice(SPECIAL_BITS, size=int(special.sum()))
        obs = last[e] if last[e] is not None and rng.random() >= break_rate else fresh[0].view(np.float32)
        ended = rng.random() < end_rate
        term, trunc = ended and rng.random() < 0.6, ended and rng.random() < 0.5
        reward = float(rng.standard_normal()) if rng.random() < 0.8 else SPECIAL_REWARDS[i % 7]
        next_obs = fresh[1].view(np.float32)
        rows.append((obs, int(rng.integers(-1, 2)), reward, next_obs, bool(term), bool(trunc)))
        last[e] = None if ended else next_obs
    return rows


FORMS = {
    "obs": ["float32", "float32", "float64", "list"],
    "action": ["int64", "int8", "float64", "list"],
    "reward": ["float64", "float32", "list"],
    "flags": ["bool", "int64", "list"],
}


def as_batch(rows, forms) -> list:
    """The rows as six batch arguments, each field in the form drawn for it."""
    obs, action, reward, next_obs, term, trunc = (list(c) for c in zip(*rows)) if rows else [[]] * 6

    def observations(values):
        arr = np.array(values, np.float32).reshape(len(values), 3)
        if forms["obs"] == "float64":
            with np.errstate(invalid="ignore"):
                return arr.astype(np.float64)
        return arr.tolist() if forms["obs"] == "list" else arr

    def typed(values, form, dtype_for):
        if form == "list":
            return list(values)
        return np.array(values, dtype_for[form])

    return [observations(obs), typed(action, forms["action"], {"int64": np.int64, "int8": np.int8,
                                                               "float64": np.float64}),
            typed(reward, forms["reward"], {"float64": np.float64, "float32": np.float32}),
            observations(next_obs), typed(term, forms["flags"], {"bool": np.bool_, "int64": np.int64}),
            typed(trunc, forms["flags"], {"bool": np.bool_, "int64": np.int64})]


def rows_of(batch) -> list:
    """What ``n`` single adds get: row ``k`` of every argument, as the batch holds it."""
    n = len(batch[2])
    return [tuple(field[k] for field in batch) for k in range(n)]


# ---------------------------------------------------------------------- comparing
def canon(t) -> tuple:
    obs, action, reward, next_obs, term, trunc = t
    f = lambda v, d: (np.asarray(v).astype(d) if np.asarray(v).dtype != d else np.asarray(v)).tobytes()  # noqa: E731
    with np.errstate(invalid="ignore", over="ignore"):
        return (f(obs, SPEC.obs_dtype), f(action, SPEC.action_dtype), f(reward, SPEC.reward_dtype),
                f(next_obs, SPEC.obs_dtype), bool(np.asarray(term)), bool(np.asarray(trunc)))


def contents(mem) -> list:
    return [canon(mem[i]) for i in range(len(mem))]


def sampled(mem, seed, n=40) -> list:
    return [canon(row) for row in zip(*mem.sample(n, np.random.default_rng(seed)))]


def hidden_state(mem):
    """Everything a memory keeps, in a comparable form (for 'a refused batch changes nothing')."""
    if isinstance(mem, rm.ListMemory):
        return [id(t) for t in mem._items], mem._start, mem._len, mem.spec
    arrays, state = mem._saved_state()
    return {k: (v.shape, v.tobytes()) for k, v in arrays.items()}, state, mem.nbytes if hasattr(mem, "nbytes") else 0


# ---------------------------------------------------------------------- bad batches
def corrupt(batch, field: str, row: int, how: str):
    """The batch with one bad value in ``row`` of ``field`` (or a bad shape); returns
    (batch, whether the error names the row)."""
    batch = [np.array(b, copy=True) if isinstance(b, np.ndarray) else list(b) for b in batch]
    i = rm.spec.FIELDS.index(field)
    if how == "shape":
        value = np.asarray(batch[i])
        if field in ("obs", "next_obs"):
            batch[i] = value[:, :-1]  # rows of 2 values, not 3
        else:
            batch[i] = value[:-1] if field != "reward" else value[:, None]
        return batch, False
    bad = {"obs": 1e39, "next_obs": -1e39, "action": [2, -2, 1.5, math.nan, 10**6][row % 5],
           "reward": 1e39, "terminated": 2, "truncated": -1}[field]
    target = batch[i]
    if field in ("obs", "next_obs"):
        with np.errstate(invalid="ignore"):  # a signalling NaN becomes a quiet one
            target = np.asarray(target, np.float64)
        target[row, row % 3] = bad
    else:
        target = np.array(target, np.float64 if isinstance(bad, float) else np.int64)
        target[row] = bad
    batch[i] = target
    return batch, True


# ---------------------------------------------------------------------- the property
op_draw = st.tuples(st.sampled_from(["single", "batch", "batch", "batch", "bad", "clear", "sample"]),
                    st.one_of(st.integers(0, 8), st.integers(0, 90)), st.sampled_from(FORMS["obs"]), st.sampled_from(FORMS["action"]),
                    st.sampled_from(FORMS["reward"]), st.sampled_from(FORMS["flags"]),
                    st.sampled_from(list(rm.spec.FIELDS)), st.sampled_from(["value", "value", "shape"]),
                    st.integers(0, 2**32 - 1))


# What the property draws: capacities small and large enough for a shared pool's common path.
BATCH_DRAWS = dict(
    capacity=st.one_of(st.integers(1, 6), st.integers(17, 40), st.integers(130, 230)),
    envs=st.integers(1, 5), order=st.sampled_from(["round robin", "random"]),
    seed=st.integers(0, 2**32 - 1),
    rates=st.sampled_from([(0.05, 0.0), (0.3, 0.0), (0.05, 0.05), (0.5, 0.3), (0.0, 0.0)]),
    ops=st.lists(op_draw, min_size=1, max_size=25))


@PROPERTY
@given(**BATCH_DRAWS)
def test_add_batch_is_n_single_adds(capacity, envs, order, seed, rates, ops):
    rows = stream(seed, sum(op[1] for op in ops), envs, order, *rates)
    mems = {k: make(capacity) for k, make in KINDS.items()}
    twins = {k: make(capacity) for k, make in KINDS.items()}
    ref: list = []
    at = 0
    for kind, size, fo, fa, fr, ff, field, how, seed in ops:
        forms = {"obs": fo, "action": fa, "reward": fr, "flags": ff}
        chunk = rows[at:at + size]
        if kind == "clear":
            for m in list(mems.values()) + list(twins.values()):
                m.clear()
            ref = []
        elif kind == "sample":
            if ref:
                for name in mems:
                    assert sampled(mems[name], seed) == sampled(twins[name], seed), name
        elif kind == "single":
            for t in chunk:
                for m in list(mems.values()) + list(twins.values()):
                    m.add(*t)
                ref.append(canon(t))
            at += len(chunk)
        elif kind == "batch":
            batch = as_batch(chunk, forms)
            for name in mems:
                mems[name].add_batch(*batch)
                for t in rows_of(batch):
                    twins[name].add(*t)
            ref += [canon(t) for t in rows_of(batch)]
            at += len(chunk)
        elif chunk:  # a batch with one bad row or a bad shape: refused whole, nothing changes
            row = seed % len(chunk)
            batch, names_row = corrupt(as_batch(chunk, forms), field, row, how)
            for name, mem in mems.items():
                before = hidden_state(mem)
                with pytest.raises((ValueError, TypeError)) as info:
                    mem.add_batch(*batch)
                message = str(info.value)
                assert message.startswith(field), (name, message)
                assert not names_row or f"{field}[{row}]" in message, (name, message)
                assert hidden_state(mem) == before, name
        ref = ref[-capacity:]
        for name in mems:
            assert contents(mems[name]) == ref, (name, kind)
            assert contents(twins[name]) == ref, (name, kind)


@pytest.mark.slow
@settings(PROPERTY, max_examples=3000)
@given(**BATCH_DRAWS)
def test_add_batch_is_n_single_adds_long(capacity, envs, order, seed, rates, ops):
    """The same property with a far larger budget: ``pytest -m slow tests/test_add_batch.py``."""
    test_add_batch_is_n_single_adds.hypothesis.inner_test(capacity, envs, order, seed, rates, ops)


def episodes(seed: int, n: int, envs: int, order: str, end_rate: float, break_rate: float,
             width: int = 3) -> list:
    """``n`` rows of ``envs`` interleaved environments as a vector env hands them: within one
    environment each ``obs`` is the last ``next_obs`` until an episode ends, with a flag
    (terminated, truncated or both), or the chain breaks without one (``break_rate``)."""
    rng = np.random.default_rng(seed)
    last = [None] * envs
    rows = []
    for i in range(n):
        e = i % envs if order == "round robin" else int(rng.integers(envs))
        fresh = rng.standard_normal((2, width)).astype(np.float32)
        obs = fresh[0] if last[e] is None or rng.random() < break_rate else last[e]
        ended = rng.random() < end_rate
        kind = rng.integers(3)  # terminated, truncated, or both
        term, trunc = ended and kind != 1, ended and kind != 0
        rows.append((obs, int(rng.integers(-1, 2)), float(rng.standard_normal()), fresh[1],
                     bool(term), bool(trunc)))
        last[e] = None if ended else fresh[1]
    return rows


def kept_apart(pool) -> list:
    """Sequence numbers of the held transitions whose next_obs a shared pool keeps outside its
    ring (side store and open tails together), repeats included: each such transition once."""
    oldest = pool._added - len(pool)
    _, seqs = pool._finals.live()
    return sorted([int(t) for t in seqs if t >= oldest] + [t for t in pool._open if t >= oldest])


SHARED_PATHS = [  # (envs, order, end rate, break rate, batch sizes): which path each batch takes
    (1, "round robin", 0.05, 0.0, [256, 100, 7, 1, 256]),   # one env: the common path
    (4, "round robin", 0.05, 0.0, [256, 64, 3, 255]),       # interleaved at a hop of 4
    (8, "round robin", 0.3, 0.0, [256, 9, 128]),            # many episode ends
    (1, "round robin", 0.05, 0.02, [256, 50, 256]),         # chains broken without a flag
    (3, "random", 0.05, 0.0, [256, 40, 200]),               # irregular hops
]


@pytest.mark.parametrize("envs, order, end_rate, break_rate, sizes", SHARED_PATHS)
def test_a_shared_pool_takes_its_common_path_exactly_as_single_adds(monkeypatch, envs, order,
                                                                     end_rate, break_rate, sizes):
    """Batches of a shared pool large enough for its common path (``_add_shared_common``): the
    same contents, samples and saved state as single adds, whether the common path takes a
    batch or hands it to the general one."""
    taken = []
    common = rm.CircularPool._add_shared_common

    def counting(self, *args):
        taken.append(common(self, *args))
        return taken[-1]

    monkeypatch.setattr(rm.CircularPool, "_add_shared_common", counting)
    capacity = 700
    rows = episodes(envs * 7 + len(sizes), sum(sizes) * 3, envs, order, end_rate, break_rate)
    if envs == 8:  # special rewards: a float64 batch with one takes the careful checks first
        rows = [(o, a, SPECIAL_REWARDS[k % 7] if k % 50 == 3 else r, n, te, tr)
                for k, (o, a, r, n, te, tr) in enumerate(rows)]
    forms = {"obs": "float32", "action": "int64", "reward": "float64", "flags": "bool"}
    mem, twin = (rm.CircularPool(capacity, SPEC, share_next_obs=True) for _ in range(2))
    at = 0
    for size in sizes * 3:  # three rounds: the ring wraps (a wrapping batch takes the general path)
        batch = as_batch(rows[at:at + size], forms)
        at += size
        mem.add_batch(*batch)
        for t in rows_of(batch):
            twin.add(*t)
        assert contents(mem) == contents(twin)
        # the ring itself, hops included (side stores may differ in size and in when an open
        # tail moves into them: single adds tidy every 64 adds, a batch at its end)
        assert mem.flags.tobytes() == twin.flags.tobytes() and mem.obs.tobytes() == twin.obs.tobytes()
        assert kept_apart(mem) == kept_apart(twin)
    assert sampled(mem, 5, 300) == sampled(twin, 5, 300)
    if break_rate == 0 and order == "round robin":
        assert taken.count(True) >= len(sizes), taken
    if break_rate or order == "random":
        assert False in taken, taken


def test_a_chain_broken_between_two_batches_is_kept_apart_as_single_adds_keep_it(monkeypatch):
    """The last row of one batch is continued by no row of the next (a break without a flag):
    the common path of the next batch leaves that open tail unlinked and, once no later add can
    reach it, moves its next_obs to the side store, as single adds do."""
    calls = []
    sweep, common = rm.CircularPool._sweep, rm.CircularPool._add_shared_common
    monkeypatch.setattr(rm.CircularPool, "_sweep",
                        lambda self, newest: (calls.append(("sweep", self)), sweep(self, newest))[1])
    monkeypatch.setattr(rm.CircularPool, "_add_shared_common",
                        lambda self, *args: (calls.append(("common", self)), common(self, *args))[1])
    rows = episodes(11, 600, 1, "round robin", 0.0, 0.0)  # one long episode
    o, a, r, n, te, tr = rows[200]
    rows[200] = (o + 1, a, r, n, te, tr)  # row 199's next_obs is not row 200's obs
    forms = {"obs": "float32", "action": "int64", "reward": "float64", "flags": "bool"}
    mem, twin = (rm.CircularPool(700, SPEC, share_next_obs=True) for _ in range(2))
    for start in (0, 200, 400):
        batch = as_batch(rows[start:start + 200], forms)
        mem.add_batch(*batch)
        for t in rows_of(batch):
            twin.add(*t)
        if start == 200:  # the batch after the break: the common path, which swept the tail
            assert [kind for kind, pool in calls if pool is mem] == ["common", "common", "sweep"]
            assert 199 in mem._finals.live()[1] and 199 not in mem._open
    assert contents(mem) == contents(twin) and kept_apart(mem) == kept_apart(twin)
    assert 199 in kept_apart(mem)


@pytest.mark.parametrize("layout", ["every other column", "every other row", "Fortran order"])
def test_a_shared_pool_links_observations_of_any_memory_layout(layout):
    """Observation arrays that are views with gaps, or in Fortran order, link as C-ordered ones."""
    rows = [(o, a % 2, r, n, te, tr)  # CartPole's layout: rows of 16 bytes, compared as 2 words
            for o, a, r, n, te, tr in episodes(5, 600, 2, "round robin", 0.05, 0.0, width=4)]
    mem, twin = (rm.CircularPool(700, CART, share_next_obs=True) for _ in range(2))
    for start in (0, 200, 400):
        obs, action, reward, next_obs, term, trunc = (np.array(c) for c in zip(*rows[start:start + 200]))
        batch = [obs, action, reward, next_obs, term, trunc]
        for i in (0, 3):
            if layout == "every other column":
                wide = np.zeros((200, 8), np.float32)
                wide[:, ::2] = batch[i]
                batch[i] = wide[:, ::2]
            elif layout == "every other row":
                tall = np.zeros((400, 4), np.float32)
                tall[::2] = batch[i]
                batch[i] = tall[::2]
            else:
                batch[i] = np.asfortranarray(batch[i])
        assert not batch[0].flags.c_contiguous
        mem.add_batch(*batch)
        for t in rows_of(batch):
            twin.add(*t)
    assert contents(mem) == contents(twin) and kept_apart(mem) == kept_apart(twin)
    assert mem.flags.tobytes() == twin.flags.tobytes()
    assert np.count_nonzero(mem.flags >> 2) > 500  # the rows are linked, not kept apart


# ---------------------------------------------------------------------- unit tests
CART = rm.TransitionSpec((4,), np.float32, (), np.uint8, np.float32, 0, 1)


def cart_batch(n: int, start: int = 0):
    obs = np.arange(start, start + n, dtype=np.float32)[:, None] * np.ones(4, np.float32)
    return [obs, np.arange(n) % 2, np.ones(n), obs + 1, np.zeros(n, bool), np.zeros(n, bool)]


CART_KINDS = {
    "ListMemory": lambda c: rm.ListMemory(c, CART),
    "CircularPool": lambda c: rm.CircularPool(c, CART),
    "CircularPool-shared": lambda c: rm.CircularPool(c, CART, share_next_obs=True),
    "RecyclingMemory": lambda c: rm.RecyclingMemory(c, CART),
}

BAD_BATCHES = [
    ("action", 1, 2, ValueError, r"^action\[2\] is 2, expected an int in \[0, 1\] from the action space$"),
    ("action", 1, -1, ValueError, r"^action\[2\] is -1, expected an int in \[0, 1\]"),
    ("action", 1, 1.5, ValueError, r"^action\[2\] must hold whole numbers for dtype uint8, got 1\.5"),
    ("action", 1, math.nan, ValueError, r"^action\[2\] must hold whole numbers"),
    ("reward", 2, 1e39, ValueError, r"^reward\[2\] has values that overflow dtype float32$"),
    ("obs", 0, 1e39, ValueError, r"^obs\[2\] has values that overflow dtype float32$"),
    ("next_obs", 3, -1e39, ValueError, r"^next_obs\[2\] has values that overflow dtype float32$"),
    ("terminated", 4, 2, TypeError, r"^terminated\[2\] must be a bool, got 2 \(int64\)$"),
    ("truncated", 5, -1, TypeError, r"^truncated\[2\] must be a bool, got -1 \(int64\)$"),
]


@pytest.mark.parametrize("kind", list(CART_KINDS))
@pytest.mark.parametrize("field, index, value, exc, match", BAD_BATCHES,
                         ids=[f"{f}={v!r:.8}" for f, _, v, _, _ in BAD_BATCHES])
def test_one_bad_value_in_the_middle_refuses_the_whole_batch(kind, field, index, value, exc, match):
    mem, twin = CART_KINDS[kind](6), CART_KINDS[kind](6)
    for m in (mem, twin):
        m.add_batch(*cart_batch(5))  # wrapped once the next batch comes
    batch = cart_batch(5, start=100)
    target = np.array(batch[index], np.float64 if isinstance(value, float) else np.int64)
    target[2] = value
    batch[index] = target
    before = hidden_state(mem)
    with pytest.raises(exc, match=match):
        mem.add_batch(*batch)
    assert hidden_state(mem) == before and len(mem) == 5
    # it goes on exactly like a memory that never saw the refused batch
    for m in (mem, twin):
        m.add_batch(*cart_batch(4, start=200))
    assert contents(mem) == contents(twin)
    assert sampled(mem, 3) == sampled(twin, 3)


F32_TOP = float(np.finfo(np.float32).max)
EDGE_REWARDS = [  # float64 rewards at the edges of float32, and far beyond them (from 1e154 on
    # a sum of their squares would overflow: a check must not rely on one)
    F32_TOP, -F32_TOP, np.nextafter(F32_TOP, math.inf), F32_TOP * (1 + 2**-25),
    F32_TOP * (1 + 2**-23), 1e39, -1e39, 1e20, 1e154, 1e155, 1e200, 1e308, math.inf, -math.inf,
    math.nan, 5e-324, -0.0]


@pytest.mark.filterwarnings("error")  # no warning either (neither a check nor a cast may warn)
@pytest.mark.parametrize("kind", list(CART_KINDS))
@pytest.mark.parametrize("value", EDGE_REWARDS, ids=[repr(float(v)) for v in EDGE_REWARDS])
def test_a_float64_reward_at_the_edge_is_taken_or_refused_as_single_adds_do(kind, value):
    """Batched float64 rewards are checked against float32's range before anything is written
    (argmin and argmax, then the careful path for a batch outside it): a batch is taken exactly
    when each of its rows would be, and stored as the single adds store it."""
    mem, twin = CART_KINDS[kind](8), CART_KINDS[kind](8)
    batch = cart_batch(5, start=10)
    batch[2] = np.array([0.5, -1.0, value, 2.0, 0.0], np.float64)
    try:
        for row in rows_of(batch):
            twin.add(*(v.item() if isinstance(v, np.generic) else v for v in row))
    except ValueError as single:
        before = hidden_state(mem)
        with pytest.raises(ValueError, match=r"^reward\[2\] has values that overflow dtype float32$"):
            mem.add_batch(*batch)
        assert "overflows dtype float32" in str(single) and hidden_state(mem) == before
    else:
        mem.add_batch(*batch)
        assert contents(mem) == contents(twin) and len(mem) == 5


BAD_SHAPES = [
    (0, np.zeros(4, np.float32), ValueError,
     r"^obs has shape \(4,\), expected \(n, 4\): a leading axis of n transitions, then the "
     r"observation shape \(4,\)$"),
    (0, np.zeros((3, 5), np.float32), ValueError, r"^obs has shape \(3, 5\), expected \(n, 4\)"),
    (3, np.zeros((2, 4), np.float32), ValueError,
     r"^next_obs has shape \(2, 4\), expected \(3, 4\): one row per transition \(3, as obs has\), "
     r"each of shape \(4,\)$"),
    (1, np.zeros((3, 1)), ValueError, r"^action has shape \(3, 1\), expected \(3,\)"),
    (2, 1.0, ValueError, r"^reward has shape \(\), expected \(3,\)"),
    (4, [False, False], ValueError, r"^terminated has shape \(2,\), expected \(3,\)"),
    (1, ["0", "1", "0"], TypeError, r"^action must be numeric, got dtype <U1"),
    (2, [1.0, None, 2.0], TypeError, r"^reward must be numeric, got dtype object"),
    (2, np.array([True, False, True]), TypeError, r"^reward must hold real numbers, got dtype bool$"),
    (5, np.array([0.0, 1.0, 0.0]), TypeError, r"^truncated must hold bools, got dtype float64$"),
    (0, "text", TypeError, r"^obs must be numeric, got text 'text'$"),
    (0, [[0.0] * 4, [0.0] * 3, [0.0] * 4], TypeError, r"^obs could not be read as an array"),
]


@pytest.mark.parametrize("kind", list(CART_KINDS))
@pytest.mark.parametrize("index, value, exc, match", BAD_SHAPES, ids=[m[:24] for *_, m in BAD_SHAPES])
def test_batches_of_the_wrong_shape_or_type_are_refused(kind, index, value, exc, match):
    mem = CART_KINDS[kind](4)
    mem.add_batch(*cart_batch(2))
    before = hidden_state(mem)
    batch = cart_batch(3, start=10)
    batch[index] = value
    with pytest.raises(exc, match=match):
        mem.add_batch(*batch)
    assert hidden_state(mem) == before


@pytest.mark.parametrize("kind", list(CART_KINDS))
def test_keywords_an_empty_batch_and_one_row(kind):
    mem, twin = CART_KINDS[kind](4), CART_KINDS[kind](4)
    obs, action, reward, next_obs, term, trunc = cart_batch(1)
    mem.add_batch(obs=obs[:0], action=action[:0], reward=reward[:0], next_obs=next_obs[:0],
                  terminated=term[:0], truncated=trunc[:0])
    assert len(mem) == 0
    mem.add_batch(next_obs=next_obs, truncated=trunc, obs=obs, reward=reward, action=action,
                  terminated=term)
    twin.add(obs[0], action[0], reward[0], next_obs[0], term[0], trunc[0])
    assert contents(mem) == contents(twin) and len(mem) == 1


def test_a_list_memory_learns_its_spec_from_the_first_batch_only_when_accepted():
    mem = rm.ListMemory()
    mem.add_batch(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4)),
                  np.zeros(0, bool), np.zeros(0, bool))
    assert mem.spec is None
    with pytest.raises(ValueError, match=r"next_obs has shape \(2, 3\)"):
        mem.add_batch(np.zeros((2, 4), np.float32), [0, 1], [1.0, 1.0], np.zeros((2, 3)),
                      [False, False], [False, False])
    assert mem.spec is None and len(mem) == 0
    mem.add_batch(np.zeros((2, 4), np.float32), [0, 1], [1.0, 1.0], np.ones((2, 4), np.float32),
                  [False, True], [False, False])
    assert mem.spec.obs_shape == (4,) and mem.spec.obs_dtype == np.float32 and len(mem) == 2


def test_a_list_memory_keeps_no_view_of_the_caller_batch():
    """Row views would keep the whole batch array alive; the list memory stores copies and
    Python numbers, so the caller's arrays are freed once the caller drops them."""
    mem = rm.ListMemory(10, CART)
    batch = cart_batch(64)
    probes = [weakref.ref(batch[0]), weakref.ref(batch[3])]
    mem.add_batch(*batch)
    del batch
    gc.collect()
    assert all(p() is None for p in probes)
    t = mem[-1]
    assert t.obs.base is None and type(t.action) is int and type(t.reward) is float
    assert type(t.terminated) is bool


@pytest.mark.parametrize("kind", list(CART_KINDS))
def test_pools_copy_the_batch(kind):
    mem = CART_KINDS[kind](8)
    batch = cart_batch(5)
    mem.add_batch(*batch)
    kept = contents(mem)
    for arr in batch:
        arr[...] = 0  # the caller reuses its arrays for the next step
    assert contents(mem) == kept


@pytest.mark.parametrize("n", [0, 1, 5, 6, 7, 13, 20])
@pytest.mark.parametrize("kind", list(CART_KINDS))
def test_batches_wrap_and_overflow_the_ring(kind, n):
    mem, twin = CART_KINDS[kind](6), CART_KINDS[kind](6)
    for m in (mem, twin):
        m.add_batch(*cart_batch(4, start=50))
    batch = cart_batch(n, start=100)
    mem.add_batch(*batch)
    for t in rows_of(batch):
        twin.add(*t)
    assert contents(mem) == contents(twin) and len(mem) == min(6, 4 + n)
    if len(mem):
        assert sampled(mem, 1) == sampled(twin, 1)
