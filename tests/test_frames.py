"""FramePool: the same transitions as a plain list of what was added, each frame stored once.

The reference model is ``ListMemory`` fed the same transitions (copies of the arrays): every
transition held and every sampled batch must be equal, bit for bit, after any sequence of adds,
batches, refused calls and clears. The streams mix what frame-stacked environments produce
(stacks that slide by one frame, padded first stacks, episode ends) with what they should not
but may (stacks that do not overlap, a chain broken in the middle, identical stacks), over tiny
frames with few values, so that frames often repeat by accident.
"""

from __future__ import annotations

import gc

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rlmemlib as rm
from rlmemlib.measure import traced

FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")
OPS = ("slide", "slide", "slide", "end", "truncate", "reset", "zero_pad", "jump", "same",
       "disjoint")


def tiny_spec(k: int, frame=(2,), dtype=np.uint8) -> rm.TransitionSpec:
    return rm.TransitionSpec((k, *frame), dtype, (), np.uint8, action_low=0, action_high=5)


def stream(ops, k, seed, frame=(2,), values=3, dtype=np.uint8):
    """Transitions (obs, action, reward, next_obs, terminated, truncated) for a list of ops."""
    rng = np.random.default_rng(seed)

    def new_frame():
        return rng.integers(0, values, size=frame).astype(dtype)

    def new_stack():
        return np.stack([new_frame() for _ in range(k)])

    prev_next, ended = None, True
    for op in ops:
        if prev_next is None or ended or op == "reset":
            obs = np.stack([new_frame()] * k)                   # padded by repeating frame 0
        elif op == "zero_pad":
            obs = np.stack([np.zeros(frame, dtype)] * (k - 1) + [new_frame()])
        elif op == "jump":
            obs = new_stack()                                   # the chain breaks mid-episode
        else:
            obs = prev_next.copy()
        if op == "same":
            nxt = obs.copy()
        elif op == "disjoint":
            nxt = new_stack()                                   # stacks that do not overlap
        else:
            nxt = np.concatenate([obs[1:], new_frame()[None]])  # slides by one frame
        terminated, truncated = op == "end", op == "truncate"
        ended = terminated or truncated
        prev_next = nxt
        yield obs, int(rng.integers(0, 6)), float(np.float32(rng.normal())), nxt, terminated, truncated


def assert_same_contents(mem, ref, seed=0):
    assert len(mem) == len(ref)
    for i in range(len(ref)):
        got, want = mem[i], ref[i]
        for name, x, y in zip(FIELDS, got, want):
            assert np.array_equal(x, y), f"transition {i} of {len(ref)}: {name} differs"
        assert got.obs.dtype == mem.spec.obs_dtype and got.obs.shape == mem.spec.obs_shape
    if len(ref):
        b1 = mem.sample(16, np.random.default_rng(seed))
        b2 = ref.sample(16, np.random.default_rng(seed))
        for name, x, y in zip(FIELDS, b1, b2):
            assert np.array_equal(x, y), f"sampled {name} differs"


def state(mem):
    """Everything observable of a memory, to check that a refused call changed nothing."""
    items = [tuple(np.asarray(v).tobytes() for v in t) for t in mem]
    batch = mem.sample(8, np.random.default_rng(3)) if len(mem) else None
    return items, None if batch is None else [a.tobytes() for a in batch], mem.frames_held


def ref_copy(t):
    return (t[0].copy(), t[1], t[2], t[3].copy(), t[4], t[5])


# ------------------------------------------------------------------ property tests
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(1, 4), capacity=st.integers(1, 9), seed=st.integers(0, 2**16),
       ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=60),
       compress=st.sampled_from([None, "zstd"]))
def test_holds_exactly_the_last_capacity_transitions(k, capacity, seed, ops, compress):
    mem = rm.FramePool(capacity, tiny_spec(k), compress=compress)
    ref = rm.ListMemory(capacity)
    for n, t in enumerate(stream(ops, k, seed), start=1):
        mem.add(*t)
        ref.add(*ref_copy(t))
        if n % 7 == 0 or n == len(ops):
            assert_same_contents(mem, ref, seed=n)
    assert mem.frames_held <= 2 * k * len(mem)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(1, 4), capacity=st.integers(1, 12), seed=st.integers(0, 2**16),
       ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=50),
       cuts=st.lists(st.integers(0, 50), max_size=6), compress=st.sampled_from([None, "zstd"]))
def test_add_batch_is_n_adds(k, capacity, seed, ops, cuts, compress):
    spec = tiny_spec(k)
    items = list(stream(ops, k, seed))
    one, many = rm.FramePool(capacity, spec, compress=compress), rm.FramePool(capacity, spec, compress=compress)
    for t in items:
        one.add(*t)
    bounds = sorted({0, len(items), *[c for c in cuts if c < len(items)]})
    for a, b in zip(bounds, bounds[1:]):
        chunk = items[a:b]
        many.add_batch(np.stack([t[0] for t in chunk]), np.array([t[1] for t in chunk]),
                       np.array([t[2] for t in chunk]), np.stack([t[3] for t in chunk]),
                       np.array([t[4] for t in chunk]), np.array([t[5] for t in chunk]))
    assert state(one) == state(many)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), ops=st.lists(st.sampled_from(OPS), min_size=5, max_size=40),
       k=st.integers(2, 4))
def test_float_frames_keep_their_bits(seed, ops, k):
    """-0.0 and 0.0 compare equal as numbers but are different bytes: both come back as added."""
    spec = rm.TransitionSpec((k, 2), np.float32, (), np.uint8, action_low=0, action_high=5)
    mem, ref = rm.FramePool(7, spec), rm.ListMemory(7)
    for t in stream(ops, k, seed, dtype=np.float32):
        obs = t[0] * np.float32(-1) if seed % 2 else t[0]  # -0.0 where the frame was 0
        t = (obs, *t[1:])
        mem.add(*t)
        ref.add(*ref_copy(t))
    for i in range(len(ref)):
        assert mem[i].obs.tobytes() == ref[i].obs.tobytes()
        assert mem[i].next_obs.tobytes() == ref[i].next_obs.tobytes()


# ------------------------------------------------------------------ episode starts and ends
@pytest.mark.parametrize("compress", [None, "zstd"])
@pytest.mark.parametrize("padding", ["reset", "zero"])
def test_frame_stack_wrapper_padding_and_episode_ends_come_back_exactly(compress, padding):
    """gymnasium's FrameStackObservation on CartPole: episode starts padded either way, many ends."""
    env = gym.wrappers.FrameStackObservation(gym.make("CartPole-v1", max_episode_steps=15), 4,
                                             padding_type=padding)
    spec = rm.TransitionSpec.from_env(env)
    mem, ref = rm.FramePool(120, spec, compress=compress), rm.ListMemory(120)
    stats = rm.rollout(env, mem, 300, seed=0, progress_bar=False)
    rm.rollout(env, ref, 300, seed=0, progress_bar=False)
    assert stats.episodes > 10 and any(t.truncated for t in ref) and any(t.terminated for t in ref)
    assert_same_contents(mem, ref)
    first = next(i for i in range(1, len(ref)) if ref[i - 1].terminated or ref[i - 1].truncated)
    pad = ref[first].obs[0]
    assert np.array_equal(pad, ref[first].obs[-1] if padding == "reset" else np.zeros(4))
    # Frames once: one per step, plus the frames of each new episode's first stack
    starts = sum(bool(t.terminated or t.truncated) for t in ref) + 1
    assert mem.frames_held <= len(ref) + starts * (2 if padding == "zero" else 1) + 3


@pytest.mark.parametrize("padding, first_stack_frames", [("reset", 1), ("zero", 2)])
def test_a_padded_first_stack_stores_its_repeated_frame_once(padding, first_stack_frames):
    """Lesson 07's Think!: a first stack padded by repeating its frame costs one frame; padded
    with zeros, two (one zero frame for the three positions it fills, and the first frame)."""
    env = gym.wrappers.FrameStackObservation(gym.make("CartPole-v1"), 4, padding_type=padding)
    obs, _ = env.reset(seed=0)
    next_obs, reward, terminated, truncated, _ = env.step(0)
    mem = rm.FramePool(4, rm.TransitionSpec.from_env(env))
    mem.add(obs, 0, reward, next_obs, terminated, truncated)
    assert mem.frames_held == first_stack_frames + 1  # and one new frame for next_obs
    assert np.array_equal(mem[0].obs, obs) and np.array_equal(mem[0].next_obs, next_obs)


def test_naive_frame_ring_would_be_wrong_at_episode_starts_and_the_pool_is_not():
    """A ring of newest frames rebuilt from the previous rows mixes two episodes; FramePool does not."""
    env = gym.wrappers.FrameStackObservation(gym.make("CartPole-v1"), 4)
    mem, ref = rm.FramePool(200, rm.TransitionSpec.from_env(env)), rm.ListMemory(200)
    rm.rollout(env, mem, 200, seed=1, progress_bar=False)
    rm.rollout(env, ref, 200, seed=1, progress_bar=False)
    newest = np.stack([t.obs[-1] for t in ref])
    naive_wrong = 0
    for i in range(3, len(ref)):
        naive = newest[i - 3:i + 1]
        naive_wrong += not np.array_equal(naive, ref[i].obs)
        assert np.array_equal(mem[i].obs, ref[i].obs)
    assert naive_wrong > 0


def test_a_one_byte_difference_is_never_shared():
    spec = tiny_spec(3, frame=(4,))
    mem = rm.FramePool(4, spec)
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    b = np.concatenate([a[1:], np.full((1, 4), 9, np.uint8)])
    mem.add(a, 0, 0.0, b, False, False)
    almost = b.copy()
    almost[0, 0] ^= 1  # one bit off the previous next_obs: a new stack, not a shared one
    mem.add(almost, 0, 0.0, b, False, False)
    assert np.array_equal(mem[1].obs, almost) and np.array_equal(mem[0].next_obs, b)
    assert np.array_equal(mem[1].next_obs, b)


# ------------------------------------------------------------------ growth and capacity
@pytest.mark.parametrize("compress", [None, "zstd"])
def test_ring_grows_when_stacks_do_not_overlap_and_stays_exact(compress):
    k, capacity = 4, 300
    mem, ref = rm.FramePool(capacity, tiny_spec(k, frame=(8,)), compress=compress), rm.ListMemory(capacity)
    slots = mem.slots
    for t in stream(["disjoint"] * 700, k, seed=5, frame=(8,), values=200):
        mem.add(*t)
        ref.add(*ref_copy(t))
    assert mem.slots > slots  # 2k frames per transition do not fit capacity + capacity // 128
    assert mem.frames_held <= 2 * k * capacity
    assert_same_contents(mem, ref)


def test_full_pool_on_sliding_stacks_never_grows():
    k, capacity = 4, 256
    mem = rm.FramePool(capacity, tiny_spec(k, frame=(8,)))
    slots = mem.slots
    ops = (["slide"] * 150 + ["end"]) * 10
    for t in stream(ops, k, seed=2, frame=(8,), values=200):
        mem.add(*t)
    assert mem.slots == slots
    assert mem.frames_held <= capacity + 2 + k  # one per step, one per episode start


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_a_deleted_pool_is_freed_at_once_no_reference_cycle(compress):
    import weakref

    mem = rm.FramePool(5, tiny_spec(3), compress=compress)
    for t in stream(["slide"] * 9, 3, seed=1):
        mem.add(*t)
    gone = weakref.ref(mem)
    gc.disable()
    try:
        del mem
        assert gone() is None  # freed by reference counting, not left for the cyclic collector
    finally:
        gc.enable()


def test_clear_forgets_everything_and_the_pool_works_again():
    mem, ref = rm.FramePool(5, tiny_spec(3), compress="zstd"), rm.ListMemory(5)
    for t in stream(["slide"] * 9, 3, seed=1):
        mem.add(*t)
    mem.clear()
    assert len(mem) == 0 and mem.frames_held == 0
    with pytest.raises(ValueError, match="empty"):
        mem.sample(1, np.random.default_rng(0))
    for t in stream(["slide", "end"] * 4, 3, seed=2):
        mem.add(*t)
        ref.add(*ref_copy(t))
    assert_same_contents(mem, ref)


# ------------------------------------------------------------------ sampling
def test_sample_into_out_reuses_the_arrays_and_matches_a_new_batch():
    mem = rm.FramePool(50, tiny_spec(4, frame=(3, 3)))
    for t in stream(["slide"] * 30 + ["end"] + ["slide"] * 40, 4, seed=0, frame=(3, 3)):
        mem.add(*t)
    out = mem.spec.empty_batch(32)
    arrays = tuple(out)
    got = mem.sample(32, np.random.default_rng(9), out=out)
    new = mem.sample(32, np.random.default_rng(9))
    assert got is out and all(a is b for a, b in zip(tuple(got), arrays))
    assert all(np.array_equal(a, b) for a, b in zip(got, new))


def test_sample_into_strided_out_arrays():
    mem = rm.FramePool(20, tiny_spec(2))
    for t in stream(["slide"] * 25, 2, seed=0):
        mem.add(*t)
    wide = np.zeros((8, 2, 2, 3), np.uint8)
    out = mem.spec.empty_batch(8)
    out.obs = wide[..., 1]  # a strided view, not contiguous
    assert not out.obs.flags.c_contiguous
    got = mem.sample(8, np.random.default_rng(1), out=out)
    new = mem.sample(8, np.random.default_rng(1))
    assert np.array_equal(got.obs, new.obs) and np.array_equal(wide[..., 1], new.obs)
    assert np.array_equal(got.next_obs, new.next_obs)


# ------------------------------------------------------------------ bad input
def filled(compress=None):
    mem = rm.FramePool(6, tiny_spec(3), compress=compress)
    for t in stream(["slide", "slide", "end", "slide", "jump", "slide", "truncate", "slide"], 3, seed=4):
        mem.add(*t)
    return mem


GOOD = (np.zeros((3, 2), np.uint8), 1, 0.5, np.ones((3, 2), np.uint8), False, False)


@pytest.mark.parametrize("field, value, error, message", [
    ("obs", np.zeros((4, 2), np.uint8), ValueError, r"obs has shape \(4, 2\), expected \(3, 2\)"),
    ("next_obs", np.zeros((3, 2), np.float32) + 0.5, ValueError, "next_obs must hold whole numbers"),
    ("obs", np.full((3, 2), 300), ValueError, "do not fit dtype uint8"),
    ("obs", "pixels", TypeError, "obs must be numeric"),
    ("action", 6, ValueError, r"action is 6, expected an int in \[0, 5\]"),
    ("action", 1.5, ValueError, "action must be a whole number"),
    ("reward", "1", TypeError, "reward must be a real number"),
    ("terminated", None, TypeError, "terminated must be a bool"),
    ("truncated", 2, TypeError, "truncated must be a bool"),
])
@pytest.mark.parametrize("compress", [None, "zstd"])
def test_a_refused_add_names_the_field_and_changes_nothing(field, value, error, message, compress):
    mem = filled(compress)
    before = state(mem)
    args = list(GOOD)
    args[FIELDS.index(field)] = value
    with pytest.raises(error, match=message):
        mem.add(*args)
    assert state(mem) == before


def batch_of(n=4, **bad):
    fields = dict(obs=np.zeros((n, 3, 2), np.uint8), action=np.ones(n, np.uint8),
                  reward=np.zeros(n, np.float32), next_obs=np.ones((n, 3, 2), np.uint8),
                  terminated=np.zeros(n, bool), truncated=np.zeros(n, bool))
    fields.update(bad)
    return fields


def last_row_bad(name, value):
    arr = batch_of()[name].copy()
    arr[-1] = value
    return {name: arr}


@pytest.mark.parametrize("bad, error, message", [
    (dict(obs=np.zeros((4, 3, 3), np.uint8)), ValueError, r"obs has shape \(4, 3, 3\), expected \(n, 3, 2\)"),
    (dict(action=np.ones(3, np.uint8)), ValueError, r"action has shape \(3,\), expected \(4,\)"),
    (last_row_bad("action", 6), ValueError, r"action\[3\] is 6, expected an int in \[0, 5\]"),
    (dict(action=np.array([0, 1, 2, 2.5])), ValueError, r"action\[3\] must hold whole numbers"),
    (dict(reward=np.array([0.0, 1e39, 0.0, 0.0])), ValueError, r"reward\[1\] has values that overflow"),
    (dict(reward=np.zeros(4, bool)), TypeError, "reward must hold real numbers"),
    (dict(terminated=np.array([0, 1, 2, 0])), TypeError, r"terminated\[2\] must be a bool, got 2"),
    (dict(truncated=np.zeros(4, np.float32)), TypeError, "truncated must hold bools"),
    (dict(next_obs=np.full((4, 3, 2), -1)), ValueError, r"next_obs\[0\] has values in \[-1, -1\], which do not fit"),
    (dict(obs=5), ValueError, r"obs has shape \(\), expected \(n, 3, 2\): a leading axis of n"),
])
@pytest.mark.parametrize("compress", [None, "zstd"])
def test_a_refused_batch_names_the_field_and_changes_nothing(bad, error, message, compress):
    mem = filled(compress)
    before = state(mem)
    with pytest.raises(error, match=message):
        mem.add_batch(**batch_of(**bad))
    assert state(mem) == before


def test_bad_construction_is_refused_clearly():
    with pytest.raises(ValueError, match="stacks of k >= 1 frames on axis 0"):
        rm.FramePool(10, rm.TransitionSpec((), np.float32))
    with pytest.raises(ValueError, match=r"compress must be None or one of \('zstd',\), got 'lz4'"):
        rm.FramePool(10, tiny_spec(4), compress="lz4")
    with pytest.raises(TypeError, match="spec must be a TransitionSpec"):
        rm.FramePool(10, (4, 84, 84))
    with pytest.raises(ValueError, match="capacity must be a positive int"):
        rm.FramePool(0, tiny_spec(4))


def test_bad_index_and_sample_arguments():
    mem = filled()
    with pytest.raises(IndexError, match="out of range"):
        mem[len(mem)]
    with pytest.raises(TypeError, match="index must be an int"):
        mem[1.0]
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        mem.sample(4, 0)
    with pytest.raises(ValueError, match=r"out.obs is \(4, 3, 2\) uint8, expected shape \(5, 3, 2\)"):
        mem.sample(5, np.random.default_rng(0), out=mem.spec.empty_batch(4))


# ------------------------------------------------------------------ where the arrays come from
def test_every_array_is_made_by_new_array_so_it_can_live_in_a_file(tmp_path):
    made = []

    class OnDisk(rm.FramePool):
        def _new_array(self, name, shape, dtype):
            made.append(name)
            path = tmp_path / f"{name}-{len(made)}.npy"
            return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)

    for compress in (None, "zstd"):
        mem, ref = OnDisk(40, tiny_spec(4, frame=(16,)), compress=compress), rm.ListMemory(40)
        for t in stream(["disjoint"] * 100, 4, seed=3, frame=(16,), values=250):  # forces growth
            mem.add(*t)
            ref.add(*ref_copy(t))
        assert_same_contents(mem, ref)
        arrays = [v for v in vars(mem).values() if isinstance(v, np.ndarray) and v.size > 4]
        arrays += [v for v in vars(mem._store).values() if isinstance(v, np.ndarray)]
        arrays += mem._store.chunks if compress else []
        assert arrays and all(isinstance(a, np.memmap) for a in arrays)
    assert {"frames", "depth", "obs_ref", "next_ref", "frame_at", "chunk0"} <= set(made)


# ------------------------------------------------------------------ real frames, real sizes
def pong_transitions(steps: int) -> tuple:
    """``steps`` transitions of Pong from a seeded random policy, frames 84 x 84, stacks of 4."""
    from rlmemlib import atari

    env = atari.make("Pong")
    mem = rm.ListMemory()
    stats = rm.rollout(env, mem, steps, seed=0, progress_bar=False)
    env.close()
    return rm.TransitionSpec.from_env(env), list(mem), stats


@pytest.fixture(scope="module")
def pong():
    return pong_transitions(600)


def measured_pool(spec, items, compress=None):
    gc.collect()
    with traced(count_blocks=False) as m:
        mem = rm.FramePool(len(items), spec, compress=compress)
        for t in items:
            mem.add(*t)
        del t
    ref = rm.ListMemory(len(items))
    for t in items:
        ref.add(*t)
    assert_same_contents(mem, ref)
    return mem, m.current


def own_zstd_bytes(items) -> int:
    """What the frames of these transitions weigh compressed one by one (zstd level 1): the
    first frame of each episode (its first stack repeats it) and the newest frame of each step."""
    import zstandard

    cctx = zstandard.ZstdCompressor(level=1)
    frames = []
    for i, t in enumerate(items):
        if i == 0 or items[i - 1].terminated or items[i - 1].truncated:
            assert all(np.array_equal(f, t.obs[-1]) for f in t.obs)
            frames.append(t.obs[-1])
        frames.append(t.next_obs[-1])
    return sum(len(cctx.compress(f)) for f in frames)


def test_real_pong_frames_are_exact_and_each_frame_is_held_once(pong):
    spec, items, stats = pong
    assert stats.episodes == 0  # Pong's first episode is longer than 600 steps
    mem, kept = measured_pool(spec, items)
    assert mem.frames_held == len(items) + 1  # a frame per step, and the first stack's one frame
    assert mem.slots == len(items) + len(items) // 128 + 4 + 2
    # tracemalloc sees the pool's arrays, the newest stack's bytes (kept to compare the next
    # obs with) and the object itself: nothing per transition beyond the arrays
    assert 0 < kept - mem.nbytes < spec.obs_nbytes + 4096


def test_real_pong_frames_compressed_are_exact_and_near_their_zstd_size(pong):
    spec, items, _ = pong
    mem, kept = measured_pool(spec, items, compress="zstd")
    own = own_zstd_bytes(items)
    assert mem.frames_nbytes < 1.01 * own  # a frame never straddles two chunks
    assert kept < 2 * own  # a small pool: its last stack and half-used chunks weigh more here


def atari_spec() -> rm.TransitionSpec:
    """Pong's: stacks of 4 frames of 84 x 84 bytes, Discrete(6) actions, float32 rewards."""
    return rm.TransitionSpec((4, 84, 84), np.uint8, (), np.uint8, action_low=0, action_high=5)


def test_at_a_million_the_bookkeeping_is_27_bytes_and_the_fixed_costs_under_2_mb():
    """What lesson 07 adds to the frames' own bytes when it projects a compressed pool to a
    million transitions: the arrays of a pool of a million (made before the first add) are 27
    bytes per transition, two 4-byte references and 6 bytes of action, reward and flags per
    row, an 8-byte position, a 4-byte length and a 1-byte depth per frame slot; what does not
    grow with the pool (a chunk being filled, one being emptied, the last stack) is under 2 MB."""
    spec = atari_spec()
    pool = rm.FramePool(1_000_000, spec, compress="zstd")
    assert pool._store.chunks == []  # no frame yet: nbytes is the bookkeeping alone
    per_row = 4 + 4 + spec.action_nbytes + spec.reward_dtype.itemsize + 1
    per_slot = 8 + 4 + 1
    assert per_row + per_slot == 27
    assert pool.nbytes == 1_000_000 * per_row + pool.slots * per_slot
    assert 27 < pool.nbytes / 1_000_000 < 27.2  # slots: capacity + capacity // 128 + k + 2
    assert pool._store.chunk == 1_000_000 * 7056 // 8192 == 861_328  # chunks of 861 KB
    assert 2 * pool._store.chunk + spec.obs_nbytes < 2 * 10**6
    # Uncompressed, the same slots hold raw frames: within 2% of one frame plus the scalars
    frame, scalars = spec.obs_nbytes // 4, spec.action_nbytes + spec.reward_dtype.itemsize + 2
    raw = 1_000_000 * (per_row - 1) + pool.slots * (frame + 1)  # rows, then depth and frame
    assert raw / 1_000_000 < 1.01 * (frame + scalars)


def test_a_compressed_pool_is_its_frames_its_bookkeeping_and_a_few_fixed_costs(pong):
    """The split lesson 07 uses for its projection, on real Pong: what tracemalloc sees is the
    frames as stored (chunk ends included), the bookkeeping arrays, and fixed costs: the last
    stack (kept to compare the next add with) and chunks not full of held frames."""
    spec, items, _ = pong
    mem, kept = measured_pool(spec, items, compress="zstd")
    store = mem._store
    bookkeeping = mem.nbytes - sum(c.nbytes for c in store.chunks + store._spare)
    assert bookkeeping == len(items) * 14 + mem.slots * 13
    arena = sum(c.nbytes for c in store.chunks + store._spare)
    assert 0 <= arena - mem.frames_nbytes < 3 * store.chunk  # a chunk filling, one emptying, a spare
    assert 0 < kept - mem.nbytes < spec.obs_nbytes + 8192   # the last stack and a few objects


@pytest.mark.slow
def test_at_5000_real_pong_transitions_the_targets_hold():
    """The course's targets: within 2% of one frame plus the scalars, and compressed within 1.3x
    of the frames' own zstd sizes (tracemalloc, everything the pool keeps)."""
    spec, items, stats = pong_transitions(5000)
    assert stats.episodes >= 3
    frame, scalars = spec.obs_nbytes // 4, spec.action_nbytes + spec.reward_dtype.itemsize + 2
    _, kept = measured_pool(spec, items)
    assert kept / len(items) < 1.02 * (frame + scalars)
    _, kept = measured_pool(spec, items, compress="zstd")
    assert kept < 1.3 * own_zstd_bytes(items)


# ------------------------------------------------------------------ save and load
def forged(path, change_arrays=None, **meta_changes):
    """Rewrite a saved file with changed arrays or meta and a fixed checksum, as a forger would."""
    import json

    from rlmemlib import persist

    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    if change_arrays:
        change_arrays(arrays)
    meta.update(meta_changes)
    meta["checksum"] = persist.checksum(arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("compress", [None, "zstd"])
@pytest.mark.parametrize("adds", [0, 5, 23, 80])
def test_round_trip_is_exact_and_goes_on_like_the_original(tmp_path, compress, adds):
    ops = ["slide", "slide", "end", "zero_pad", "slide", "disjoint", "jump", "truncate", "same"] * 12
    items = list(stream(ops, 4, seed=7, frame=(3, 3), values=4))
    mem = rm.FramePool(11, tiny_spec(4, frame=(3, 3)), compress=compress)
    for t in items[:adds]:
        mem.add(*t)
    loaded = rm.FramePool.load(mem.save(tmp_path / "frames.npz"))
    assert loaded.compress == compress and loaded.capacity == mem.capacity
    assert state(loaded) == state(mem)
    for t in items[adds:adds + 30]:  # both go on the same way, sharing frames the same way
        mem.add(*t)
        loaded.add(*t)
        assert state(loaded) == state(mem)


@pytest.fixture
def saved_pool(tmp_path):
    mem = rm.FramePool(8, tiny_spec(3), compress="zstd")
    for t in stream(["slide"] * 5 + ["end"] + ["slide"] * 6, 3, seed=3):
        mem.add(*t)
    return mem.save(tmp_path / "pool.npz")


def _set(name, index, value):
    def change(arrays):
        arrays[name][index] = value
    return change


@pytest.mark.parametrize("change, meta, message", [
    (_set("obs_ref", 2, 99), {}, "outside the"),
    (_set("next_ref", 0, -1), {}, "outside the"),
    (lambda a: (_set("obs_ref", 0, 0)(a), _set("depth", 0, 1)(a)), {}, "reaches below the first frame"),
    (_set("depth", 5, 3), {}, "above k - 1 = 2"),
    (_set("flags", 1, 4), {}, "flags hold bits"),
    (_set("obs_ref", 5, 2), {}, "out of order"),
    (_set("blobs", slice(0, 8), 0), {}, "does not decompress"),
    (None, {"len": 9}, "len is 9"),
    (None, {"frames": 200}, "frames is 200"),
    (None, {"compress": "lz4"}, "compress is 'lz4'"),
    (None, {"capacity": 4}, "len is 8"),
])
def test_a_forged_or_damaged_file_is_refused(saved_pool, change, meta, message):
    forged(saved_pool, change, **meta)
    with pytest.raises(ValueError, match=message):
        rm.FramePool.load(saved_pool)


def test_a_file_of_another_memory_is_refused(tmp_path):
    pool = rm.CircularPool(4, tiny_spec(3))
    path = pool.save(tmp_path / "pool.npz")
    with pytest.raises(ValueError, match="not a FramePool"):
        rm.FramePool.load(path)
