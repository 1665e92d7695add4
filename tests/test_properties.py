"""Property tests: every memory against a plain reference model, bit for bit.

The reference is a Python list keeping the last ``capacity`` transitions, each as the bytes
its fields have after the spec's cast. Any sequence of adds (episode ends, truncations,
discontinuities with no flag, observations equal as numbers but not as bits), rejected adds,
samples and clears must leave every memory holding exactly what the reference holds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import rlmemlib as rm
from rlmemlib.spec import narrowest_int_dtype

# obs: 3 x float32 (any bits); action: Discrete(3, start=-1), stored as int8 in [-1, 1]
SPEC = rm.TransitionSpec.from_spaces(spaces.Box(-np.inf, np.inf, (3,), np.float32),
                                     spaces.Discrete(3, start=-1))
PROPERTY = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------- strategies
SPECIAL_BITS = [0x00000000, 0x80000000,             # 0.0 and -0.0
                0x7FC00000, 0xFFC00000, 0x7FC00001,  # quiet NaNs, signs and payloads
                0x7F800001, 0x7FBFFFFF,              # signalling NaNs
                0x7F800000, 0xFF800000,              # +-inf
                0x7F7FFFFF, 0xFF7FFFFF,              # +-largest float32
                0x00000001, 0x80800000]              # a subnormal, the smallest -normal
float32_bits = st.one_of(st.sampled_from(SPECIAL_BITS), st.integers(0, 2**32 - 1),
                         st.floats(width=32, allow_nan=False).map(
                             lambda x: int(np.array(x, np.float32).view(np.uint32))))
obs_bits = st.lists(float32_bits, min_size=3, max_size=3)
as_given = st.sampled_from(["float32", "float32", "float32", "float64", "list"])


def make_obs(bits, form):
    """An observation with these float32 bits, passed as a float32 array, a float64 array or a
    list of Python floats (the last two are cast back to float32 by ``add``)."""
    arr = np.array(bits, np.uint32).view(np.float32)
    if form == "float64":
        with np.errstate(invalid="ignore"):  # a signalling NaN becomes a quiet one
            return arr.astype(np.float64)
    if form == "list":
        return arr.tolist()
    return arr


actions = st.integers(-1, 1).flatmap(lambda a: st.sampled_from(
    [a, a, np.int8(a), np.int64(a), np.array(a), float(a), np.float32(a)]))
rewards = st.one_of(
    st.floats(width=32),  # nan and +-inf included
    st.floats(min_value=-3.4e38, max_value=3.4e38),  # float64, rounded to float32
    st.sampled_from([-0.0, 0.0, math.nan, -math.inf, 3.4028235e38, 1e-45, 1e-50]),
    st.integers(-10**6, 10**6),
).flatmap(lambda r: st.sampled_from([r, np.float64(r), np.float32(r)] if isinstance(r, float) else [r]))
flags = st.sampled_from([False, False, False, True, np.False_, np.True_, 0, 1])

# How an add's obs relates to the previous add's next_obs.
OBS_MODES = ["same", "same", "copy", "copy", "fresh", "flip_zero", "nan_payload", "as_float64"]
NEXT_MODES = ["fresh", "fresh", "fresh", "equal_obs"]

add_op = st.tuples(st.just("add"), st.sampled_from(OBS_MODES), obs_bits, as_given,
                   st.sampled_from(NEXT_MODES), obs_bits, as_given, actions, rewards, flags, flags)

BAD_VALUES = [
    ("action", 1.5), ("action", 2), ("action", -2), ("action", 10**6), ("action", math.nan),
    ("action", "0"), ("action", None),
    ("obs", "abc"), ("obs", np.zeros(4, np.float32)), ("next_obs", np.zeros((3, 1), np.float32)),
    ("obs", np.full(3, 1e39)), ("next_obs", [1.0, "x", 2.0]), ("obs", np.zeros(3, complex)),
    ("reward", "1"), ("reward", 1e39), ("reward", -1e39), ("reward", 10**400), ("reward", None),
    ("reward", True), ("terminated", 2), ("terminated", "yes"), ("truncated", None), ("truncated", 0.5),
]
bad_op = st.tuples(st.just("bad"), add_op, st.sampled_from(BAD_VALUES))
sample_op = st.tuples(st.just("sample"), st.integers(0, 2**32 - 1), st.integers(1, 50), st.booleans())
clear_op = st.tuples(st.just("clear"))
op = st.one_of(add_op, add_op, add_op, add_op, add_op, add_op, bad_op, sample_op, clear_op)
ops = st.one_of(st.lists(op, max_size=10), st.lists(op, min_size=20, max_size=80))  # short and long runs
capacities = st.one_of(st.integers(1, 6), st.integers(17, 40))


# ---------------------------------------------------------------------- running ops
def resolve(op, prev_next):
    """The six add arguments an add op stands for, given the previous add's next_obs."""
    _, obs_mode, obs_b, obs_form, next_mode, next_b, next_form, action, reward, term, trunc = op
    if prev_next is None or obs_mode == "fresh":
        obs = make_obs(obs_b, obs_form)
    else:
        prev32 = np.asarray(prev_next).astype(np.float32) if not (
            isinstance(prev_next, np.ndarray) and prev_next.dtype == np.float32) else prev_next
        if obs_mode == "same":
            obs = prev_next                      # the very object
        elif obs_mode == "copy":
            obs = np.array(prev_next, copy=True)  # equal bits, another array
        elif obs_mode == "flip_zero":            # zeros change sign: equal as numbers, not as bits
            bits = prev32.view(np.uint32).copy()
            bits[(bits & 0x7FFFFFFF) == 0] ^= 0x80000000
            obs = bits.view(np.float32)
        elif obs_mode == "nan_payload":          # NaN stays NaN, with other bits
            bits = prev32.view(np.uint32).copy()
            bits[0] = 0x7FC00000 if bits[0] != 0x7FC00000 else 0x7FC00002
            obs = bits.view(np.float32)
        else:                                    # "as_float64": the same values, as float64
            with np.errstate(invalid="ignore"):
                obs = prev32.astype(np.float64)
    next_obs = np.array(obs, copy=True) if next_mode == "equal_obs" else make_obs(next_b, next_form)
    return obs, action, reward, next_obs, term, trunc


def run(ops_list, capacity, kinds, canon, contents, batch_rows):
    event(f"{len(ops_list) // 10 * 10}+ ops")  # shown by --hypothesis-show-statistics
    names = list(kinds)
    mems = {name: kinds[name](capacity, SPEC) for name in names}
    outs = {name: {} for name in names}
    ref: list = []
    prev_next = None
    for step, op in enumerate(ops_list):
        kind = op[0]
        if kind == "add":
            args = resolve(op, prev_next)
            for mem in mems.values():
                mem.add(*args)
            ref = (ref + [canon(args, SPEC)])[-capacity:]
            prev_next = args[3]
        elif kind == "bad":
            args = list(resolve(op[1], prev_next))
            field, value = op[2]
            args[rm.spec.FIELDS.index(field)] = value
            for name, mem in mems.items():
                with pytest.raises((ValueError, TypeError)) as info:
                    mem.add(*args)
                assert str(info.value).startswith(field + " "), (name, str(info.value))
        elif kind == "clear":
            for mem in mems.values():
                mem.clear()
            ref, prev_next = [], None
        else:  # sample
            _, seed, batch_size, use_out = op
            if not ref:
                for mem in mems.values():
                    with pytest.raises(ValueError, match="empty memory"):
                        mem.sample(batch_size, np.random.default_rng(seed))
            else:
                idx = np.random.default_rng(seed).integers(0, len(ref), size=batch_size)
                expected = [ref[i] for i in idx]
                for name, mem in mems.items():
                    rng = np.random.default_rng(seed)
                    if use_out and name != "ListMemory":
                        out = outs[name].setdefault(batch_size, SPEC.empty_batch(batch_size))
                        batch = mem.sample(batch_size, rng, out=out)
                        assert batch is out
                    else:
                        batch = mem.sample(batch_size, rng)
                    assert batch_rows(batch, SPEC) == expected, (name, step)
        for name, mem in mems.items():
            assert len(mem) == len(ref), (name, step)
            assert contents(mem, SPEC) == ref, (name, step, op[0])


@PROPERTY
@given(capacity=capacities, ops_list=ops)
def test_every_memory_holds_exactly_the_last_transitions(capacity, ops_list, helpers):
    run(ops_list, capacity, helpers.kinds, helpers.canon, helpers.contents, helpers.batch_rows)


@pytest.mark.slow
@settings(PROPERTY, max_examples=5000)
@given(capacity=capacities, ops_list=ops)
def test_every_memory_holds_exactly_the_last_transitions_long(capacity, ops_list, helpers):
    """The same property with a far larger budget: ``pytest -m slow tests/test_properties.py``."""
    run(ops_list, capacity, helpers.kinds, helpers.canon, helpers.contents, helpers.batch_rows)


@pytest.mark.parametrize("seed", range(3))
def test_long_random_runs_against_the_reference(seed, helpers):
    """Long runs hypothesis does not reach in its budget: wide capacities, thousands of adds,
    the side store of final observations growing, sliding and draining."""
    rng = np.random.default_rng(seed)
    capacity = int(rng.integers(30, 200))
    end_rate = [0.02, 0.2, 0.7][seed]
    ops_list = []
    for _ in range(2500):
        r = rng.random()
        bits = rng.integers(0, 2**32, size=3).tolist()
        nxt = rng.integers(0, 2**32, size=3).tolist()
        if r < 0.003:
            ops_list.append(("clear",))
            continue
        if r < 0.01:
            ops_list.append(("sample", int(rng.integers(2**32)), int(rng.integers(1, 300)), bool(r < 0.007)))
            continue
        mode = "fresh" if rng.random() < end_rate else "same"
        term = bool(mode == "fresh" and rng.random() < 0.6)
        trunc = bool(mode == "fresh" and not term and rng.random() < 0.5)
        ops_list.append(("add", mode, bits, "float32", "fresh", nxt, "float32", int(rng.integers(-1, 2)),
                         float(rng.standard_normal()), term, trunc))
    run_checked_every(ops_list, capacity, helpers.kinds, helpers, every=250)


def run_checked_every(ops_list, capacity, kinds, helpers, every):
    mems = {name: kinds[name](capacity, SPEC) for name in kinds}
    ref, prev_next = [], None
    for step, op in enumerate(ops_list):
        if op[0] == "add":
            args = resolve(op, prev_next)
            for mem in mems.values():
                mem.add(*args)
            ref.append(helpers.canon(args, SPEC))
            if len(ref) > capacity:
                del ref[0]
            prev_next = args[3]
        elif op[0] == "clear":
            for mem in mems.values():
                mem.clear()
            ref, prev_next = [], None
        elif ref:
            _, seed, batch_size, use_out = op
            idx = np.random.default_rng(seed).integers(0, len(ref), size=batch_size)
            for name, mem in mems.items():
                out = SPEC.empty_batch(batch_size) if use_out and name != "ListMemory" else None
                kwargs = {} if out is None else {"out": out}
                batch = mem.sample(batch_size, np.random.default_rng(seed), **kwargs)
                assert helpers.batch_rows(batch, SPEC) == [ref[i] for i in idx], (name, step)
        if step % every == 0 or step == len(ops_list) - 1:
            for name, mem in mems.items():
                assert helpers.contents(mem, SPEC) == ref, (name, step)


# ---------------------------------------------------------------------- the cast rules
SPEC_OBS_SPACE = spaces.Box(-1.0, 1.0, (2,), np.float32)


@settings(max_examples=200, deadline=None)
@given(start=st.integers(-2**40, 2**40), n=st.integers(1, 2**20))
def test_discrete_spaces_get_the_narrowest_exact_dtype(start, n):
    spec = rm.TransitionSpec.from_spaces(SPEC_OBS_SPACE, spaces.Discrete(n, start=start))
    info = np.iinfo(spec.action_dtype)
    low, high = start, start + n - 1
    assert info.min <= low and high <= info.max
    narrower = [d for d in (np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32)
                if np.dtype(d).itemsize < spec.action_dtype.itemsize]
    assert not any(np.iinfo(d).min <= low and high <= np.iinfo(d).max for d in narrower)
    assert spec.record_dtype.itemsize == spec.nbytes
    for value in (low, high):
        assert int(spec.cast_action(value)) == value


@settings(max_examples=200, deadline=None)
@given(start=st.integers(-300, 300), n=st.integers(1, 600),
       value=st.one_of(st.integers(-10**20, 10**20), st.integers(-700, 700),
                       st.floats(allow_nan=True, allow_infinity=True), st.floats(-700, 700)))
def test_an_action_is_stored_exactly_or_refused(start, n, value):
    spec = rm.TransitionSpec.from_spaces(SPEC_OBS_SPACE, spaces.Discrete(n, start=start))
    exact = math.isfinite(value) and value == int(value) and start <= int(value) <= start + n - 1
    if exact:
        cast = spec.cast_action(value)
        assert cast.dtype == spec.action_dtype and int(cast) == value
    else:
        with pytest.raises(ValueError, match="^action "):
            spec.cast_action(value)


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_reward_is_rounded_or_refused_never_made_infinite(value):
    spec = rm.TransitionSpec((2,), np.float32)
    with np.errstate(over="ignore"):
        rounded = np.float64(value).astype(np.float32)
    if math.isfinite(value) and math.isinf(rounded):
        with pytest.raises(ValueError, match="^reward is .* which overflows dtype float32"):
            spec.cast_reward(value)
    else:
        assert spec.cast_reward(value).tobytes() == rounded.tobytes()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-2**40, 2**40), min_size=1, max_size=2).map(sorted))
def test_narrowest_int_dtype_holds_the_range(bounds):
    low, high = bounds[0], bounds[-1]
    dtype = narrowest_int_dtype(low, high)
    assert np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max
    assert dtype.kind == ("u" if low >= 0 else "i")


# ---------------------------------------------------------------------- ObjectPool
pool_ops = st.lists(st.one_of(st.just(("acquire",)), st.tuples(st.just("release"), st.integers(0, 20)),
                              st.tuples(st.just("release_twice"), st.integers(0, 20)),
                              st.just(("release_foreign",))), max_size=60)


@settings(max_examples=150, deadline=None)
@given(size=st.integers(0, 5), ops_list=pool_ops)
def test_object_pool_bookkeeping(size, ops_list):
    pool = rm.ObjectPool(lambda: [0], size=size)
    held, released_once, ever_handed_out = [], [], set()
    acquires = reuses = 0
    for op in ops_list:
        if op[0] == "acquire":
            obj = pool.acquire()
            assert all(obj is not h for h in held)  # never handed out twice at once
            reuses += id(obj) in ever_handed_out
            acquires += 1
            ever_handed_out.add(id(obj))
            held.append(obj)
            released_once = [r for r in released_once if r is not obj]
        elif op[0] == "release" and held:
            obj = held.pop(op[1] % len(held))
            pool.release(obj)
            released_once.append(obj)
        elif op[0] == "release_twice" and released_once:
            with pytest.raises(ValueError, match="already released"):
                pool.release(released_once[op[1] % len(released_once)])
        elif op[0] == "release_foreign":
            with pytest.raises(ValueError, match="was not handed out by this pool"):
                pool.release([0])
        assert pool.in_use == len(held)
        assert pool.created == pool.in_use + pool.available
        assert pool.created >= size
        assert pool.reused == reuses
    # every hand-out of an object but its first is a reuse
    assert pool.reused == acquires - len(ever_handed_out)
