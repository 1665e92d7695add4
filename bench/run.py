"""Replay memories side by side: bytes per transition, add time and sample time, in one run.

    python bench/run.py            # the full run: writes bench/results/ and the table in bench/README.md
    python bench/run.py --quick    # a small run that checks everything works (bench/results/quick/)
    python bench/run.py --out DIR  # write the results somewhere else

What is measured, for every memory, on real CartPole-v1 transitions (a seeded random policy,
cycled): bytes per transition once the memory is full (tracemalloc), one ``add`` in µs, a batched
add of 256 transitions where the library has one (µs per transition), ``sample(256)`` in µs, and
``sample(256, out=batch)`` where a reused batch is possible. Then the shared pool's bytes per
transition when 1, 4 or 8 CartPole sub-environments of a vector env feed it interleaved, and
bytes per transition for Atari-sized transitions (4x84x84 uint8 observations).

How it is timed: every memory is first filled to capacity (so adds overwrite the oldest, the
steady state of training). Each repetition times every (memory, operation) pair once, in a
rotating round-robin order, so a change of machine load hits all memories alike. A timing is a
loop of many calls measured with ``time.perf_counter_ns`` (garbage collection paused, as
``timeit`` does), its number of calls calibrated so that it lasts about half a millisecond: a
longer window would often be preempted on a busy machine and count other processes' work.
The table gives the median over repetitions; a ratio against the bare numpy
ring is the median of the per-repetition ratios, both measured in the same repetition.
Nothing here asserts a timing.

The peers (cpprb, Stable-Baselines3) are optional: when one cannot be imported, its rows say
"skipped" and the run goes on. Install them as bench/README.md says.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a clone without installing rlmemlib

import rlmemlib as rm  # noqa: E402
from rlmemlib.measure import traced  # noqa: E402
from rlmemlib.rollout import cartpole_transitions  # noqa: E402

BATCH = 256          # sample size, and chunk size of a batched add
MODES = {
    # capacity: CartPole memories; atari_capacity: Atari-sized memories (bytes only)
    # source: distinct real transitions, cycled; reps: round-robin repetitions
    # window_us: how long one timing lasts (its number of calls is calibrated to that)
    "full": dict(capacity=100_000, atari_capacity=2_000, source=10_000, reps=101, window_us=500),
    "quick": dict(capacity=1_000, atari_capacity=40, source=600, reps=3, window_us=100),
}
ATARI_OBS = (4, 84, 84)
ATARI_ACTIONS = 6


# ====================================================================== the limit: a bare ring
class BareRing:
    """The limit: six preallocated arrays, six stores and a cursor per add, fancy indexing to sample.

    No checks at all, no logical order, no episode handling: what a hand-written buffer costs.
    """

    def __init__(self, capacity: int, spec: rm.TransitionSpec):
        self.capacity = capacity
        self.obs = np.zeros((capacity, *spec.obs_shape), spec.obs_dtype)
        self.action = np.zeros((capacity, *spec.action_shape), spec.action_dtype)
        self.reward = np.zeros(capacity, spec.reward_dtype)
        self.next_obs = np.zeros((capacity, *spec.obs_shape), spec.obs_dtype)
        self.terminated = np.zeros(capacity, np.bool_)
        self.truncated = np.zeros(capacity, np.bool_)
        self.pos = 0
        self.size = 0

    def add(self, obs, action, reward, next_obs, terminated, truncated):
        i = self.pos
        self.obs[i] = obs
        self.action[i] = action
        self.reward[i] = reward
        self.next_obs[i] = next_obs
        self.terminated[i] = terminated
        self.truncated[i] = truncated
        self.pos = i + 1 if i + 1 < self.capacity else 0
        if self.size < self.capacity:
            self.size += 1

    def add_batch(self, obs, action, reward, next_obs, terminated, truncated):
        """Store len(reward) transitions with slice assignments (two when they wrap)."""
        n = len(reward)
        start, cap = self.pos, self.capacity
        first = min(n, cap - start)
        for dest, src in ((self.obs, obs), (self.action, action), (self.reward, reward),
                          (self.next_obs, next_obs), (self.terminated, terminated),
                          (self.truncated, truncated)):
            dest[start:start + first] = src[:first]
            if first < n:
                dest[:n - first] = src[first:]
        self.pos = (start + n) % cap
        self.size = min(self.size + n, cap)

    def sample(self, batch_size, rng):
        idx = rng.integers(0, self.size, size=batch_size)
        return (self.obs[idx], self.action[idx], self.reward[idx], self.next_obs[idx],
                self.terminated[idx], self.truncated[idx])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.obs, self.action, self.reward, self.next_obs,
                                      self.terminated, self.truncated))


class BareRingTake(BareRing):
    """The same ring, sampling with ``ndarray.take`` instead of fancy indexing.

    Fancy indexing of a 2-D array (``obs[idx]``) is much slower in numpy than ``obs.take(idx,
    axis=0)``: this row shows how much of a pool's lead on sampling comes from that alone.
    """

    def sample(self, batch_size, rng):
        idx = rng.integers(0, self.size, size=batch_size)
        return (self.obs.take(idx, axis=0), self.action.take(idx, axis=0), self.reward.take(idx),
                self.next_obs.take(idx, axis=0), self.terminated.take(idx), self.truncated.take(idx))


# ====================================================================== the contenders
@dataclass
class Setting:
    """What one kind of transition needs: the spec and the gymnasium spaces."""

    name: str
    spec: rm.TransitionSpec
    observation_space: Any
    action_space: Any


@dataclass
class Contender:
    """One memory, seen through its own API (each gets its input in the form that API takes)."""

    name: str
    group: str                               # "rlmemlib", "baseline" or "peer"
    make: Callable[[int, Setting], Any]
    prep: Callable[[tuple], Any]             # rollout tuple -> the item add_loop takes
    add_loop: Callable[[Any, list], None]    # add every item, one call per transition
    sample: Callable[[Any, int, Any], Any]   # (memory, batch size, numpy rng)
    sample_out: Callable | None = None       # (memory, batch size, rng, out)
    make_out: Callable | None = None         # (memory, batch size) -> out
    batch_make: Callable | None = None       # (capacity, setting) -> memory for batched adds, or
    batch_prep: Callable | None = None       #   None to use the same memory; chunk of tuples -> item
    batch_add: Callable | None = None        # (memory, item)
    nbytes: Callable | None = None           # memory -> bytes of its arrays
    notes: list = field(default_factory=list)
    skipped: str | None = None               # why it is not measured


def _stack(chunk):
    """A chunk of rollout tuples as six arrays (obs, action, reward, next_obs, terminated,
    truncated), in the dtypes a gymnasium vector env and its sampled actions hand over: float32
    observations, int64 actions, float64 rewards, bool flags."""
    o, a, r, n, te, tr = zip(*chunk)
    return (np.stack(o), np.array(a, np.int64), np.array(r, np.float64), np.stack(n),
            np.array(te, np.bool_), np.array(tr, np.bool_))


def _loop_rlmemlib(mem, items):
    add = mem.add
    for o, a, r, n, te, tr in items:
        add(o, a, r, n, te, tr)


def _loop_deque(mem, items):
    append = mem.append
    for o, a, r, n, te, tr in items:
        append((o, a, r, n, te, tr))


def _sample_deque(mem, batch_size, _rng):
    """The tutorial pattern: random.sample, zip(*batch), one array per field."""
    batch = random.sample(mem, batch_size)
    o, a, r, n, te, tr = zip(*batch)
    return (np.stack(o), np.array(a), np.array(r, np.float32), np.stack(n), np.array(te),
            np.array(tr))


def rlmemlib_contenders() -> list[Contender]:
    same = dict(prep=lambda t: t, add_loop=_loop_rlmemlib)
    batched = dict(batch_prep=_stack, batch_add=lambda m, arrays: m.add_batch(*arrays))
    pool_sample = dict(sample=lambda m, n, rng: m.sample(n, rng),
                       sample_out=lambda m, n, rng, out: m.sample(n, rng, out=out),
                       make_out=lambda m, n: m.spec.empty_batch(n))
    add_batch = "batched add is add_batch (the whole chunk checked, then written)"
    return [
        Contender("ListMemory", "rlmemlib", lambda c, s: rm.ListMemory(c, s.spec), **same,
                  **batched, sample=lambda m, n, rng: m.sample(n, rng),
                  notes=["batched add is add_batch (a copy of each row and Python numbers)"]),
        Contender("deque + random.sample", "baseline",
                  lambda c, s: collections.deque(maxlen=c), prep=lambda t: t,
                  add_loop=_loop_deque, sample=_sample_deque,
                  batch_prep=list, batch_add=lambda m, chunk: m.extend(chunk),
                  notes=["batched add is deque.extend; random.sample draws without replacement"]),
        Contender("CircularPool", "rlmemlib", lambda c, s: rm.CircularPool(c, s.spec), **same,
                  **batched, **pool_sample, nbytes=lambda m: m.nbytes, notes=[add_batch]),
        Contender("CircularPool (share_next_obs)", "rlmemlib",
                  lambda c, s: rm.CircularPool(c, s.spec, share_next_obs=True), **same,
                  **batched, **pool_sample, nbytes=lambda m: m.nbytes,
                  notes=[add_batch + "; its rows are linked by comparing bytes"]),
        Contender("RecyclingMemory", "rlmemlib", lambda c, s: rm.RecyclingMemory(c, s.spec), **same,
                  **batched, **pool_sample, notes=[add_batch]),
        Contender("bare numpy ring", "baseline", lambda c, s: BareRing(c, s.spec), **same,
                  sample=lambda m, n, rng: m.sample(n, rng),
                  batch_prep=_stack, batch_add=lambda m, arrays: m.add_batch(*arrays),
                  nbytes=lambda m: m.nbytes,
                  notes=["the limit: no checks; batched add is two slice stores per array; samples "
                         "by fancy indexing (`obs[idx]`)"]),
        Contender("bare numpy ring (take)", "baseline", lambda c, s: BareRingTake(c, s.spec), **same,
                  sample=lambda m, n, rng: m.sample(n, rng), nbytes=lambda m: m.nbytes,
                  notes=["the same ring (the same add), sampling with `ndarray.take` instead of "
                         "fancy indexing"]),
    ]


def cpprb_contenders() -> list[Contender]:
    names = ["cpprb ReplayBuffer", "cpprb ReplayBuffer (next_of)"]
    try:
        import cpprb
    except Exception as exc:  # ImportError, or a broken binary wheel
        why = f"skipped: cpprb not importable ({type(exc).__name__})"
        return [Contender(n, "peer", None, None, None, None, skipped=why) for n in names]

    def env_dict(s: Setting, shared: bool):
        d = {"obs": {"shape": s.spec.obs_shape, "dtype": s.spec.obs_dtype},
             "act": {"dtype": s.spec.action_dtype},
             "rew": {"dtype": s.spec.reward_dtype},
             "next_obs": {"shape": s.spec.obs_shape, "dtype": s.spec.obs_dtype},
             "terminated": {"dtype": np.bool_}, "truncated": {"dtype": np.bool_}}
        if shared:
            del d["next_obs"]
        return d

    def loop(rb, items):
        add = rb.add
        for o, a, r, n, te, tr in items:
            add(obs=o, act=a, rew=r, next_obs=n, terminated=te, truncated=tr)

    def loop_next_of(rb, items):
        add, end = rb.add, rb.on_episode_end
        for o, a, r, n, te, tr in items:
            add(obs=o, act=a, rew=r, next_obs=n, terminated=te, truncated=tr)
            if te or tr:
                end()  # cpprb's rule with next_of: keeps the episode's final next_obs exact

    def add_chunk(rb, arrays):
        o, a, r, n, te, tr = arrays
        rb.add(obs=o, act=a, rew=r, next_obs=n, terminated=te, truncated=tr)

    common = dict(prep=lambda t: t, sample=lambda rb, n, _rng: rb.sample(n),
                  batch_prep=_stack, batch_add=add_chunk)
    return [
        Contender(names[0], "peer", lambda c, s: cpprb.ReplayBuffer(c, env_dict(s, False)),
                  add_loop=loop, **common,
                  notes=[f"cpprb {cpprb_version()}; narrow dtypes set in env_dict"]),
        Contender(names[1], "peer",
                  lambda c, s: cpprb.ReplayBuffer(c, env_dict(s, True), next_of="obs"),
                  add_loop=loop_next_of, **common,
                  notes=["next_obs shared with obs; on_episode_end() called at every episode end"]),
    ]


def cpprb_version() -> str:
    from importlib.metadata import version

    return version("cpprb")


def sb3_contenders() -> list[Contender]:
    names = ["SB3 ReplayBuffer", "SB3 ReplayBuffer (optimize_memory_usage)"]
    try:
        from stable_baselines3.common.buffers import ReplayBuffer
    except Exception as exc:  # ImportError (no torch, no SB3) or a broken install
        why = f"skipped: stable_baselines3 not importable ({type(exc).__name__})"
        return [Contender(n, "peer", None, None, None, None, skipped=why) for n in names]

    def make(optimize: bool, n_envs: int = 1):
        def build(capacity, s: Setting):
            return ReplayBuffer(capacity, s.observation_space, s.action_space, device="cpu",
                                n_envs=n_envs, optimize_memory_usage=optimize,
                                handle_timeout_termination=not optimize)
        return build

    def prep(t):
        # What a VecEnv with one env hands SB3: arrays with a leading env axis.
        o, a, r, n, te, tr = t
        return (o[None], n[None], np.array([a]), np.array([r], np.float32), np.array([te or tr]),
                [{"TimeLimit.truncated": tr and not te}])

    def loop(rb, items):
        add = rb.add
        for o, n, a, r, d, info in items:
            add(o, n, a, r, d, info)

    def prep_chunk(chunk):
        o, a, r, n, te, tr = _stack(chunk)
        return (o, n, a.astype(np.int64), r, te | tr,
                [{"TimeLimit.truncated": bool(x and not y)} for x, y in zip(tr, te)])

    def nbytes(rb):
        arrays = [rb.observations, rb.actions, rb.rewards, rb.dones, rb.timeouts]
        if not rb.optimize_memory_usage:
            arrays.append(rb.next_observations)
        return sum(a.nbytes for a in arrays)

    common = dict(prep=prep, add_loop=loop, sample=lambda rb, n, _rng: rb.sample(n),
                  batch_prep=prep_chunk, batch_add=lambda rb, item: rb.add(*item), nbytes=nbytes)
    return [
        Contender(names[0], "peer", make(False), batch_make=make(False, BATCH), **common,
                  notes=["sample returns torch tensors (a copy); batched add = a buffer with "
                         "n_envs=256"]),
        Contender(names[1], "peer", make(True), batch_make=make(True, BATCH), **common,
                  notes=["needs handle_timeout_termination=False; next_obs at an episode end is "
                         "the next episode's first obs (not kept)"]),
    ]


def all_contenders(peers: bool = True) -> list[Contender]:
    found = rlmemlib_contenders()
    if peers:
        found += cpprb_contenders() + sb3_contenders()
    else:
        for name in ("cpprb ReplayBuffer", "cpprb ReplayBuffer (next_of)", "SB3 ReplayBuffer",
                     "SB3 ReplayBuffer (optimize_memory_usage)"):
            found.append(Contender(name, "peer", None, None, None, None,
                                   skipped="skipped: --no-peers"))
    return found


# ====================================================================== transitions
def cartpole_setting() -> Setting:
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    setting = Setting("CartPole", rm.TransitionSpec.from_env(env), env.observation_space,
                      env.action_space)
    env.close()
    return setting


def atari_setting() -> Setting:
    from gymnasium import spaces

    obs_space = spaces.Box(0, 255, ATARI_OBS, np.uint8)
    act_space = spaces.Discrete(ATARI_ACTIONS)
    return Setting("Atari-sized", rm.TransitionSpec.from_spaces(obs_space, act_space), obs_space,
                   act_space)


def atari_source(cartpole: list, frames: int = 32) -> list:
    """Atari-sized transitions with CartPole's episode structure (same flags and actions).

    Observations are random uint8 frames from a small bank; within an episode one step's
    next_obs is the next step's obs (the same array), as in an agent's loop.
    """
    rng = np.random.default_rng(0)
    bank = rng.integers(0, 256, size=(frames, *ATARI_OBS), dtype=np.uint8)
    out, prev_next, k = [], None, 0
    for o, a, r, n, te, tr in cartpole:
        obs = prev_next if prev_next is not None else bank[k % frames]
        k += 1
        nxt = bank[k % frames]
        out.append((obs, a, r, nxt, te, tr))
        prev_next = None if (te or tr) else nxt
    return out


def fresh(source: list, n: int):
    """``n`` transitions cycled from ``source``, each with observation arrays of its own.

    Cycling must not hand a memory that keeps references (a list, a deque) the same array
    twice, or it would look smaller than it is. Each step gets copies; where the source passes
    one step's next_obs as the next step's obs, the copies are shared the same way.
    """
    prev_src = prev_copy = None
    size = len(source)
    for k in range(n):
        o, a, r, nx, te, tr = source[k % size]
        oc = prev_copy if o is prev_src else o.copy()
        nc = nx.copy()
        prev_src, prev_copy = nx, nc
        yield (oc, a, r, nc, te, tr)


def whole_episodes(source: list, multiple: int = 1, least: int = 1) -> list:
    """A run of ``source`` that starts an episode and ends one (terminated or truncated), of at
    least ``least`` rows and a multiple of ``multiple``: cycled, it is a stream of whole
    episodes, as a real environment hands over (no break inside an episode at the wrap)."""
    ended = [bool(t[4] or t[5]) for t in source]
    starts = [0] + [k + 1 for k, e in enumerate(ended[:-1]) if e]
    first = -(-least // multiple) * multiple
    for length in range(first, len(source) + 1, multiple):
        for s in starts:
            if s + length <= len(source) and ended[s + length - 1]:
                return source[s:s + length]
    raise ValueError(f"no run of whole episodes of a multiple of {multiple} rows in the source")


def fill(c: Contender, mem, source: list, n: int, chunk: int = 1000) -> None:
    stream = fresh(source, n)
    while True:
        items = [c.prep(t) for _, t in zip(range(chunk), stream)]
        if not items:
            break
        c.add_loop(mem, items)


# ====================================================================== bytes
def bytes_per_transition(c: Contender, setting: Setting, capacity: int, source: list) -> dict:
    """Bytes the full memory keeps alive (tracemalloc) and the bytes of its arrays, per transition."""
    gc.collect()
    with traced(count_blocks=False) as m:
        mem = c.make(capacity, setting)
        fill(c, mem, source, capacity)
        gc.collect()
    result = {"traced": m.current / capacity}
    if c.nbytes is not None:
        result["nbytes"] = c.nbytes(mem) / capacity
    del mem
    gc.collect()
    return result


class _Recorder:
    """Keeps the batches a rollout hands over (copies), to feed a memory later, measured."""

    def __init__(self):
        self.batches = []

    def add_batch(self, *arrays):
        self.batches.append(tuple(np.array(a) for a in arrays))


def interleaved_bytes(spec, n: int, capacity: int) -> float:
    """Bytes per transition (tracemalloc) of a full shared pool fed by ``n`` interleaved
    CartPole sub-environments through ``rm.rollout``: the batches are recorded first, so only
    the pool is measured, not the environments."""
    import gymnasium as gym
    from gymnasium.vector import SyncVectorEnv

    recorder = _Recorder()
    envs = SyncVectorEnv([lambda: gym.make("CartPole-v1")] * n)
    rm.rollout(envs, recorder, (capacity + capacity // 10) // n + 1, seed=0, progress_bar=False)
    envs.close()
    gc.collect()
    with traced(count_blocks=False) as m:
        pool = rm.CircularPool(capacity, spec, share_next_obs=True)
        for batch in recorder.batches:
            pool.add_batch(*batch)
        gc.collect()
    assert len(pool) == capacity
    return m.current / capacity


# ====================================================================== time
def _timed(fn, *args) -> int:
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        fn(*args)
        return time.perf_counter_ns() - t0
    finally:
        if gc_was:
            gc.enable()


@dataclass
class Task:
    """One (memory, operation) pair: ``go(rep, k)`` does ``k`` units of it and returns the ns."""

    contender: Contender
    op: str                           # "add", "batch", "sample", "sample_out"
    go: Callable[[int, int], int]
    per_unit: int                     # transitions (batch: BATCH) or calls in one unit
    max_units: int                    # the most units one window can do
    units: int = 1                    # units per window, set by calibrate()
    ns: list = field(default_factory=list)


def build_tasks(contenders, setting, cfg, source, log) -> list[Task]:
    tasks = []
    cap = cfg["capacity"]
    for c in contenders:
        t0 = time.perf_counter()
        mem = c.make(cap, setting)
        fill(c, mem, source, cap)
        native = [c.prep(t) for t in fresh(source, len(source))]
        rng = np.random.default_rng(0)
        # Each window continues the stream where the last window of the same task stopped, and
        # the stream cycles at an episode end: no memory sees a break inside an episode that a
        # real environment would not make (a shared pool would search for each one).
        at = {"add": cap % len(native), "batch": 0}

        def add_go(rep, k, c=c, mem=mem, native=native, at=at):
            start = at["add"]
            at["add"] = (start + k) % len(native)
            items = native[start:start + k] + native[:max(0, start + k - len(native))]
            return _timed(c.add_loop, mem, items)

        tasks.append(Task(c, "add", add_go, 1, len(native) // 2))

        if c.batch_add is not None:
            # A memory of its own (filled by batches), so that single adds between two batch
            # windows do not break its stream either.
            bmem = (c.batch_make or c.make)(cap, setting)
            cycle = whole_episodes(source * (BATCH * 64 // len(source) + 2), BATCH, BATCH * 16)
            stream = fresh(cycle, len(cycle))
            chunks = [c.batch_prep([t for _, t in zip(range(BATCH), stream)])
                      for _ in range(len(cycle) // BATCH)]
            rounds = -(-cap // BATCH)  # batches that fill the memory
            for k in range(rounds):  # full, ending where the cycle starts again
                c.batch_add(bmem, chunks[(k - rounds) % len(chunks)])

            def batch_go(rep, k, c=c, bmem=bmem, chunks=chunks, at=at):
                start = at["batch"]
                at["batch"] = (start + k) % len(chunks)
                picked = [chunks[(start + j) % len(chunks)] for j in range(k)]

                def run():
                    add = c.batch_add
                    for item in picked:
                        add(bmem, item)
                return _timed(run)

            tasks.append(Task(c, "batch", batch_go, BATCH, len(chunks)))

        def sample_go(rep, k, c=c, mem=mem, rng=rng):
            def run():
                sample = c.sample
                for _ in range(k):
                    sample(mem, BATCH, rng)
            return _timed(run)

        tasks.append(Task(c, "sample", sample_go, 1, 10_000))
        if c.sample_out is not None:
            out = c.make_out(mem, BATCH)

            def out_go(rep, k, c=c, mem=mem, rng=rng, out=out):
                def run():
                    sample = c.sample_out
                    for _ in range(k):
                        sample(mem, BATCH, rng, out)
                return _timed(run)

            tasks.append(Task(c, "sample_out", out_go, 1, 10_000))
        log(f"  ready: {c.name} ({time.perf_counter() - t0:.1f} s to fill {cap:,})")
    return tasks


def calibrate(tasks: list[Task], window_ns: int) -> None:
    """Units per window so that each timing lasts about ``window_ns`` (best of three probes).

    Short windows keep the timings honest on a loaded machine: a window that outlasts the
    scheduler's time slice gets preempted, and its time counts the other processes' work.
    """
    for task in tasks:
        probe = 1
        while True:
            best = min(task.go(0, probe) for _ in range(3))
            if best >= window_ns / 8 or probe >= task.max_units:
                break
            probe = min(probe * 4, task.max_units)
        task.units = int(max(1, min(task.max_units, round(window_ns * probe / max(best, 1)))))


def run_timings(tasks: list[Task], reps: int, log) -> None:
    every = max(1, reps // 5)
    for rep in range(reps):
        shift = rep % len(tasks)
        for task in tasks[shift:] + tasks[:shift]:
            task.ns.append(task.go(rep, task.units))
        if (rep + 1) % every == 0 or rep + 1 == reps:
            log(f"  repetition {rep + 1}/{reps} done")


def per_call_us(task: Task) -> list[float]:
    return [ns / (task.units * task.per_unit) / 1000 for ns in task.ns]


def summarize(tasks: list[Task]) -> dict:
    """{name: {op: {"us": median, "ratio": median of per-rep ratios to the ring's reference op}}}."""
    by = {(t.contender.name, t.op): t for t in tasks}
    ring = "bare numpy ring"
    reference = {"add": "add", "batch": "batch", "sample": "sample", "sample_out": "sample"}
    out: dict = {}
    for (name, op), task in by.items():
        us = per_call_us(task)
        entry = {"us": statistics.median(us), "runs_us": us}
        ref = by.get((ring, reference[op]))
        if ref is not None:
            ratios = [a / b for a, b in zip(us, per_call_us(ref))]
            entry["ratio"] = statistics.median(ratios)
        out.setdefault(name, {})[op] = entry
    return out


def ratio_between(tasks: list[Task], a: str, b: str, op: str = "add",
                  op_b: str | None = None) -> float | None:
    """Median over repetitions of (a's time / b's time) for one operation each."""
    ta = next((t for t in tasks if t.contender.name == a and t.op == op), None)
    tb = next((t for t in tasks if t.contender.name == b and t.op == (op_b or op)), None)
    if ta is None or tb is None:
        return None
    return statistics.median(x / y for x, y in zip(per_call_us(ta), per_call_us(tb)))


# ====================================================================== report
def machine() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "numpy": np.__version__,
            "rlmemlib": rm.__version__}
    try:  # which rlmemlib was measured: the commit, and whether its files had changes on top
        import subprocess

        git = ["git", "-C", str(Path(rm.__file__).resolve().parent.parent)]  # the rlmemlib imported
        head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--", "rlmemlib"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        if head:
            info["rlmemlib"] += f" (commit {head}{', with local changes' if dirty else ''})"
    except (OSError, subprocess.SubprocessError):
        pass
    for pkg in ("gymnasium", "cpprb", "stable-baselines3", "torch"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = "not installed"
    return info


def _us(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def _x(r: float | None) -> str:
    return "" if r is None else f" (×{r:.2f})"


def _b(x: float) -> str:
    return f"{x:.1f}" if x < 1000 else f"{x:,.0f}"


def targets(spec, cart_bytes, summary, tasks) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows."""
    rows = []
    raw = spec.nbytes
    shared_bound = raw - spec.obs_nbytes  # each observation once
    for name, goal, limit in (
            ("CircularPool", f"about the packed size, spec.nbytes = {raw} B (≤ 1.02×)", 1.02 * raw),
            ("CircularPool (share_next_obs)", f"about {shared_bound} B, each observation once, "
             f"plus the final observations of episodes (≤ 1.15×)", 1.15 * shared_bound)):
        b = cart_bytes.get(name, {}).get("traced")
        if b is not None:
            rows.append((f"{name}: bytes per transition {goal}", f"{b:.1f} B = {b / raw:.2f} × {raw} B",
                         "met" if b <= limit else "NOT met"))
    for name in ("CircularPool", "CircularPool (share_next_obs)"):
        r = summary.get(name, {}).get("add", {}).get("ratio")
        if r is not None:
            rows.append((f"{name}: add within 1.5× of the bare ring", f"×{r:.2f}",
                         "met" if r <= 1.5 else "NOT met"))
        for peer in ("cpprb ReplayBuffer", "SB3 ReplayBuffer"):
            r = ratio_between(tasks, name, peer)
            if r is None:
                rows.append((f"{name}: add faster than {peer}", "peer skipped", "not measured"))
            else:
                rows.append((f"{name}: add faster than {peer}", f"×{r:.2f} of its time",
                             "met" if r < 1 else "NOT met"))
        rows += batch_targets(name, summary, tasks)
        r = summary.get(name, {}).get("sample_out", {}).get("ratio")
        if r is not None:
            rows.append((f"{name}: sample(256, out=) no slower than the ring's fancy indexing",
                         f"×{r:.2f}", "met" if r <= 1.0 else "NOT met"))
        r = ratio_between(tasks, name, "bare numpy ring (take)", "sample_out", "sample")
        if r is not None:
            rows.append((f"{name}: sample(256, out=) against a ring sampling with take (not a target)",
                         f"×{r:.2f}", "faster" if r < 1 else "slower"))
    return rows


def batch_targets(name, summary, tasks) -> list[tuple[str, str, str]]:
    """add_batch of 256: per transition within 1.5x of the ring's slice stores, faster than the
    peers' batched adds."""
    rows = []
    r = summary.get(name, {}).get("batch", {}).get("ratio")
    if r is not None:
        rows.append((f"{name}: add_batch(256) per transition within 1.5× of the bare ring's slice "
                     "stores", f"×{r:.2f}", "met" if r <= 1.5 else "NOT met"))
    for peer in ("cpprb ReplayBuffer", "SB3 ReplayBuffer"):
        r = ratio_between(tasks, name, peer, "batch")
        if r is None:
            rows.append((f"{name}: add_batch(256) faster than {peer}'s batched add", "peer skipped",
                         "not measured"))
        else:
            rows.append((f"{name}: add_batch(256) faster than {peer}'s batched add",
                         f"×{r:.2f} of its time", "met" if r < 1 else "NOT met"))
    return rows


def interleaved_targets(spec, interleaved) -> list[tuple[str, str, str]]:
    """The shared pool's bytes with interleaved sub-environments: below 0.65 × spec.nbytes."""
    rows = []
    for n in (4, 8):
        b = interleaved.get(n)
        if b is not None:
            rows.append((f"CircularPool (share_next_obs), {n} interleaved sub-environments: bytes "
                         f"per transition below 0.65 × spec.nbytes ({0.65 * spec.nbytes:.1f} B)",
                         f"{b:.1f} B = {b / spec.nbytes:.2f} × {spec.nbytes} B",
                         "met" if b < 0.65 * spec.nbytes else "NOT met"))
    return rows


def markdown(info, cfg, mode, contenders, spec, cart_bytes, atari_bytes, atari_spec, summary,
             target_rows, interleaved) -> str:
    head = (f"Machine: {info['cpu']}, {info['cores']} cores, {info['os']}; Python {info['python']}, "
            f"numpy {info['numpy']}, rlmemlib {info['rlmemlib']}, gymnasium {info['gymnasium']}, "
            f"cpprb {info['cpprb']}, stable-baselines3 {info['stable-baselines3']}, "
            f"torch {info['torch']}.")
    lines = [f"# Replay memories side by side ({mode} run)", "", head, ""]
    if mode == "quick":
        lines += ["**A quick run: small memories and few repetitions, to check that everything "
                  "runs. Its numbers are not a measurement; run without `--quick` for that.**", ""]
    lines += [
             f"CartPole-v1 transitions (obs 4 × float32, Discrete(2) action, float32 reward, two "
             f"flags; `spec.nbytes` = {spec.nbytes} B), capacity {cfg['capacity']:,}, "
             f"the whole episodes among {cfg['source']:,} real transitions ({cfg.get('whole', cfg['source']):,} "
             f"steps) cycled. Times: median of {cfg['reps']} "
             f"interleaved repetitions, each a loop of calls lasting about {cfg['window_us']} µs, "
             f"each continuing the stream where the last one stopped; (×r) = median ratio to the bare numpy ring in the same "
             f"repetition (for both sample columns: to the ring's `sample(256)`).", "",
             "| memory | bytes / transition (tracemalloc) | array bytes / capacity | add (µs) | "
             "batched add, 256 at once (µs per transition) | sample(256) (µs) | "
             "sample(256, out=) (µs) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for c in contenders:
        if c.skipped:
            lines.append(f"| {c.name} | {c.skipped} | | | | | |")
            continue
        b = cart_bytes[c.name]
        s = summary[c.name]

        def cell(op):
            if op not in s:
                return "n/a"
            return f"{_us(s[op]['us'])}{_x(s[op].get('ratio'))}"

        nb = _b(b["nbytes"]) if "nbytes" in b else "–"
        lines.append(f"| {c.name} | {_b(b['traced'])} | {nb} | {cell('add')} | {cell('batch')} | "
                     f"{cell('sample')} | {cell('sample_out')} |")
    lines += ["", "Notes:"]
    for c in contenders:
        for note in c.notes:
            lines.append(f"- {c.name}: {note}.")
    lines += ["- Every memory gets its input in the form its own API takes (SB3: arrays with a "
              "leading env axis, made before timing); the rlmemlib memories, the deque and the ring "
              "get what gymnasium returns. A batched add gets 256 consecutive transitions as "
              "arrays in the dtypes a gymnasium vector env and its sampled actions hand over "
              "(float32 observations, int64 actions, float64 rewards, bool flags), the same "
              "arrays for the rlmemlib memories, the ring and cpprb.",
              "- Adds are timed on full memories (each add overwrites the oldest), garbage "
              "collection paused during a timing, as `timeit` does.", "",
              "## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {v} |" for t, m, v in target_rows]
    lines += ["", f"## Shared pool with interleaved sub-environments, capacity {cfg['capacity']:,}",
              "", "CircularPool (share_next_obs) fed by `rm.rollout` from a gymnasium "
              "SyncVectorEnv of CartPole-v1 sub-environments (NEXT_STEP autoreset: one "
              "`add_batch` per step, rows interleaved sub-environment by sub-environment), "
              "full; tracemalloc bytes of the pool alone.", "",
              "| sub-environments | bytes / transition (tracemalloc) | × spec.nbytes |",
              "|---|---:|---:|"]
    lines += [f"| {n} | {b:.1f} | {b / spec.nbytes:.2f} |" for n, b in interleaved.items()]
    lines += ["", f"## Atari-sized transitions (4 × 84 × 84 uint8 observations, Discrete("
              f"{ATARI_ACTIONS}) action; `spec.nbytes` = {atari_spec.nbytes:,} B), capacity "
              f"{cfg['atari_capacity']:,}", "",
              "Random frames with CartPole's episode ends (about one in 22 steps: many episode "
              "ends, the hard case for a shared pool).", "",
              "| memory | KiB / transition (tracemalloc) | × spec.nbytes |", "|---|---:|---:|"]
    for c in contenders:
        if c.skipped:
            lines.append(f"| {c.name} | {c.skipped} | |")
            continue
        b = atari_bytes[c.name]["traced"]
        lines.append(f"| {c.name} | {b / 1024:.1f} | {b / atari_spec.nbytes:.2f} |")
    return "\n".join(lines) + "\n"


def figure(path: Path, contenders, spec, cart_bytes, atari_bytes, atari_spec, summary, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlmemlib.plotting import PALETTE, use_style

    use_style()
    names = [c.name for c in contenders]
    skipped = {c.name: c.skipped for c in contenders if c.skipped}
    y = np.arange(len(names))
    fig, axes = plt.subplots(1, 4, figsize=(17, 0.45 * len(names) + 2.2), sharey=True)

    def bars(ax, values: dict, fmt, color, offset=0.0, height=0.8, label=None, hatch=None):
        xs = [values.get(n) for n in names]
        ys = [yy + offset for yy, x in zip(y, xs) if x is not None]
        vs = [x for x in xs if x is not None]
        ax.barh(ys, vs, height=height, color=color, label=label, hatch=hatch, edgecolor="white")
        for yy, v in zip(ys, vs):
            ax.text(v, yy, " " + fmt(v), va="center", fontsize=7.5)

    def mark_missing(ax, values, offset=0.0, what="n/a"):
        for yy, n in zip(y, names):
            if n in skipped:
                if offset <= 0:
                    ax.text(0.02, yy, "skipped (not installed)", va="center", fontsize=8,
                            color="grey", transform=ax.get_yaxis_transform())
            elif values.get(n) is None:
                ax.text(0.02, yy + offset, what, va="center", fontsize=7, color="grey",
                        transform=ax.get_yaxis_transform())

    ax = axes[0]
    vals = {n: cart_bytes[n]["traced"] for n in cart_bytes}
    bars(ax, vals, lambda v: f"{v:.0f} B", PALETTE[0])
    ax.axvline(spec.nbytes, color="black", ls="--", lw=1)
    ax.text(spec.nbytes, -0.7, f" raw {spec.nbytes} B", fontsize=8)
    ax.set_xlabel("bytes per transition")
    ax.set_title("CartPole: bytes / transition")
    mark_missing(ax, vals)

    ax = axes[1]
    vals = {n: atari_bytes[n]["traced"] / 1024 for n in atari_bytes}
    bars(ax, vals, lambda v: f"{v:.1f} KiB", PALETTE[2])
    ax.axvline(atari_spec.nbytes / 1024, color="black", ls="--", lw=1)
    ax.text(atari_spec.nbytes / 1024, -0.7, f" raw {atari_spec.nbytes / 1024:.1f} KiB", fontsize=8)
    ax.set_xlabel("KiB per transition")
    ax.set_title("Atari-sized: KiB / transition")
    mark_missing(ax, vals)

    ax = axes[2]
    single = {n: summary[n]["add"]["us"] for n in summary}
    batch = {n: summary[n]["batch"]["us"] for n in summary if "batch" in summary[n]}
    bars(ax, single, _us, PALETTE[1], -0.2, 0.4, "one add")
    bars(ax, batch, _us, PALETTE[5], 0.2, 0.4, "batched add of 256", hatch="//")
    ax.set_xscale("log")
    ax.set_xlabel("µs per transition (log scale)")
    ax.set_title("add")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    mark_missing(ax, single, -0.2)
    mark_missing(ax, batch, 0.2, "no batch add")

    ax = axes[3]
    new = {n: summary[n]["sample"]["us"] for n in summary}
    out = {n: summary[n]["sample_out"]["us"] for n in summary if "sample_out" in summary[n]}
    bars(ax, new, _us, PALETTE[3], -0.2, 0.4, "new batch")
    bars(ax, out, _us, PALETTE[4], 0.2, 0.4, "into a reused batch (out=)", hatch="//")
    ax.set_xscale("log")
    ax.set_xlabel("µs per call (log scale)")
    ax.set_title("sample(256)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    mark_missing(ax, new, -0.2)
    mark_missing(ax, out, 0.2, "no out=")

    axes[0].set_yticks(y, names)
    axes[0].invert_yaxis()
    for ax in axes:
        ax.grid(axis="y", visible=False)
        lo, hi = ax.get_xlim()
        ax.set_xlim(lo, hi * (3 if ax.get_xscale() == "log" else 1.25))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


README_BEGIN = "<!-- latest full run: written by bench/run.py -->"
README_END = "<!-- end of latest full run -->"


def update_readme(table: str, begin: str = README_BEGIN, end: str = README_END) -> None:
    """Write the table, less its title line, between the markers ``begin`` and ``end`` of
    bench/README.md and of the course's README.md (where a file has both)."""
    body = table.split("\n", 1)[1].strip()  # drop the file's own title line
    for readme in (HERE / "README.md", HERE.parent / "README.md"):
        text = readme.read_text() if readme.exists() else ""
        if begin not in text or end not in text:
            continue
        before, rest = text.split(begin, 1)
        _, after = rest.split(end, 1)
        readme.write_text(f"{before}{begin}\n{body}\n{end}{after}")


# ====================================================================== main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (seconds) that checks it all works")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the results (default bench/results, or bench/results/quick)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default by mode)")
    parser.add_argument("--no-peers", action="store_true", help="skip cpprb and Stable-Baselines3")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    cfg = dict(MODES[mode])
    if args.reps:
        cfg["reps"] = args.reps
    default_out = HERE / "results" / ("quick" if args.quick else "")
    out_dir = (args.out or default_out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:5.1f} s] {msg}", flush=True)

    contenders = all_contenders(peers=not args.no_peers)
    for c in contenders:
        if c.skipped:
            log(f"{c.name}: {c.skipped}; going on without it")
    cart = cartpole_setting()
    atari = atari_setting()
    source = whole_episodes(cartpole_transitions(cfg["source"], seed=0), least=cfg["source"] * 9 // 10)
    cfg["whole"] = len(source)  # the whole episodes among them
    live = [c for c in contenders if not c.skipped]
    gc.collect()
    gc.freeze()  # the libraries' own objects: later collections need not walk them again

    log(f"bytes per transition, CartPole, capacity {cfg['capacity']:,}")
    cart_bytes = {}
    for c in live:
        cart_bytes[c.name] = bytes_per_transition(c, cart, cfg["capacity"], source)
        log(f"  {c.name}: {cart_bytes[c.name]['traced']:.1f} B")
    log(f"bytes per transition, Atari-sized, capacity {cfg['atari_capacity']:,}")
    a_source = atari_source(source[: max(cfg["atari_capacity"], 200)])
    atari_bytes = {c.name: bytes_per_transition(c, atari, cfg["atari_capacity"], a_source) for c in live}
    del a_source
    gc.collect()

    log("timing: filling every memory to capacity")
    tasks = build_tasks(live, cart, cfg, source, log)
    calibrate(tasks, cfg["window_us"] * 1000)
    log(f"timing: {cfg['reps']} round-robin repetitions over {len(tasks)} (memory, operation) pairs, "
        f"windows of about {cfg['window_us']} µs")
    run_timings(tasks, cfg["reps"], log)
    summary = summarize(tasks)

    log("bytes per transition of the shared pool fed by 1, 4 and 8 interleaved sub-environments")
    interleaved = {n: interleaved_bytes(cart.spec, n, cfg["capacity"]) for n in (1, 4, 8)}
    info = machine()
    target_rows = targets(cart.spec, cart_bytes, summary, tasks) + interleaved_targets(cart.spec, interleaved)
    table = markdown(info, cfg, mode, contenders, cart.spec, cart_bytes, atari_bytes, atari.spec,
                     summary, target_rows, interleaved)
    (out_dir / "cartpole.md").write_text(table)
    title = (f"Replay memories, {mode} run: CartPole capacity {cfg['capacity']:,}, Atari-sized "
             f"capacity {cfg['atari_capacity']:,}; times are medians of {cfg['reps']} interleaved "
             f"repetitions\n{info['cpu']}, {info['cores']} cores, Python {info['python']}, numpy "
             f"{info['numpy']}, cpprb {info['cpprb']}, stable-baselines3 {info['stable-baselines3']}")
    figure(out_dir / "cartpole.png", contenders, cart.spec, cart_bytes, atari_bytes, atari.spec,
           summary, title)
    raw = {"mode": mode, "config": cfg, "machine": info, "spec_nbytes": cart.spec.nbytes,
           "atari_spec_nbytes": atari.spec.nbytes,
           "skipped": {c.name: c.skipped for c in contenders if c.skipped},
           "bytes": cart_bytes, "atari_bytes": atari_bytes, "interleaved_bytes": interleaved,
           "times": summary,
           "targets": target_rows}
    (out_dir / "cartpole.json").write_text(json.dumps(raw, indent=1) + "\n")
    if not args.quick and args.out is None:
        update_readme(table)
    print()
    print(table)
    log(f"wrote {out_dir / 'cartpole.md'}, cartpole.png and cartpole.json "
        f"in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
