"""Atari replay memories side by side, on real frames: bytes per transition and sample time.

    python bench/frames.py            # the full run: writes bench/results/frames.md and the README tables
    python bench/frames.py --quick    # a small run that checks everything works (bench/results/quick/)
    python bench/frames.py --out DIR  # write the results somewhere else

What is measured, for each game (Pong, and MsPacman, a busier screen): the transitions of a
seeded random policy through the course's Atari pipeline (``rlmemlib.atari.make``: ALE's grey
frames with its v5 defaults, the last of 4 emulator frames per step and sticky actions, resized
to 84 x 84 by area averaging, in stacks of 4 from gymnasium's ``FrameStackObservation``), added
in order to each memory until it is exactly full. Then, per memory:

* bytes per transition: what tracemalloc sees the full memory keep alive, over its capacity;
* exact: whether every transition reads back as it was added (``obs`` and ``next_obs`` stacks
  compared byte for byte, episode ends included);
* ``sample(256)`` in ms: the median over interleaved repetitions (every repetition times each
  memory once, in a rotating order), and its ratio to Stable-Baselines3's
  ``optimize_memory_usage`` buffer measured in the same repetition;
* for the course's memories, ``add`` (a run of single adds on the full memory, in µs per add)
  and ``add_batch`` of 256 transitions (µs per transition), fed what gymnasium returns (the
  batches stacked before timing), with their ratio to ``CircularPool(share_next_obs=True)`` in
  the same repetition. The peers' adds are timed on CartPole by ``bench/run.py``.

The references: one frame plus the scalar fields (what a memory storing each frame once
cannot go below), and the frames' own zstd sizes (each frame compressed alone at level 1, as
``FramePool(compress="zstd")`` does). Nothing asserts a timing. The peers (Stable-Baselines3,
cpprb, TorchRL) are optional: a row says "skipped" when one cannot be imported.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a clone without installing rlmemlib
sys.path.insert(0, str(HERE))

import rlmemlib as rm  # noqa: E402
from rlmemlib import atari  # noqa: E402
from rlmemlib.measure import traced  # noqa: E402
# bench/run.py: the same machine line, timer and README writer
from run import _timed, machine, update_readme  # noqa: E402

BATCH = 256
GAMES = ("Pong", "MsPacman")
MODES = {
    "full": dict(capacity=10_000, reps=31),
    "quick": dict(capacity=300, reps=3),
}
README_BEGIN = "<!-- frames: written by bench/frames.py -->"
README_END = "<!-- end of frames -->"
BASELINE = "SB3 ReplayBuffer (optimize_memory_usage)"
ADD_BASELINE = "CircularPool (share_next_obs)"
ADD_RUN = 64  # single adds per timing


# ====================================================================== the contenders
@dataclass
class Contender:
    """One memory through its own API: make, add every transition, read one back, sample."""

    name: str
    make: Callable[[int, Any], Any]               # (capacity, env) -> memory
    add_all: Callable[[Any, list], None]          # (memory, transitions)
    reader: Callable[[Any], Callable]             # memory -> (i -> (obs, next_obs) stacks, (k, 84, 84))
    sample: Callable[[Any, int, Any], Any]        # (memory, batch size, numpy rng)
    note: str = ""
    skipped: str | None = None
    add_one: Callable[[Any, Any], None] | None = None    # (memory, transition): timed when given
    add_many: Callable[[Any, tuple], None] | None = None  # (memory, stacked fields of n transitions)


def _add_rlmemlib(mem, items):
    add = mem.add
    for t in items:
        add(*t)


def rlmemlib_contenders() -> list[Contender]:
    def read(mem):
        return lambda i: mem[i][::3]  # (obs, next_obs)

    def sample_out(mem, n, rng):
        out = getattr(mem, "bench_out", None)
        if out is None or len(out) != n:
            out = mem.bench_out = mem.spec.empty_batch(n)
        return mem.sample(n, rng, out=out)

    def add_one(mem, t):
        mem.add(*t)

    def add_many(mem, fields):
        mem.add_batch(*fields)

    spec = lambda env: rm.TransitionSpec.from_env(env)  # noqa: E731
    adds = dict(add_one=add_one, add_many=add_many)
    return [
        Contender("FramePool", lambda c, env: rm.FramePool(c, spec(env)), _add_rlmemlib, read,
                  sample_out, "each frame once; sample into a reused batch (out=); add_batch "
                  "stores its (checked) transitions one by one", **adds),
        Contender("FramePool (zstd)", lambda c, env: rm.FramePool(c, spec(env), compress="zstd"),
                  _add_rlmemlib, read, sample_out,
                  "each frame once, zstd level 1, one frame at a time; out=", **adds),
        Contender("CircularPool (share_next_obs)",
                  lambda c, env: rm.CircularPool(c, spec(env), share_next_obs=True), _add_rlmemlib,
                  read, sample_out, "whole stacks, each stack once; out=", **adds),
    ]


def sb3_contenders() -> list[Contender]:
    names = ["SB3 ReplayBuffer", BASELINE]
    try:
        from stable_baselines3.common.buffers import ReplayBuffer
    except Exception as exc:  # ImportError (no torch, no SB3) or a broken install
        why = f"skipped: stable_baselines3 not importable ({type(exc).__name__})"
        return [Contender(n, None, None, None, None, skipped=why) for n in names]

    def make(optimize):
        def build(capacity, env):
            # One more row with optimize_memory_usage: it keeps next_obs in the next row, so a
            # buffer of `capacity` rows holds capacity - 1 whole transitions.
            return ReplayBuffer(capacity + optimize, env.observation_space, env.action_space,
                                device="cpu", optimize_memory_usage=optimize,
                                handle_timeout_termination=not optimize)
        return build

    def add_all(rb, items):
        add = rb.add
        for o, a, r, n, te, tr in items:
            add(o[None], n[None], np.array([a]), np.array([r], np.float32), np.array([te or tr]),
                [{"TimeLimit.truncated": tr and not te}])

    def read(rb):
        if rb.optimize_memory_usage:
            return lambda i: (rb.observations[i, 0], rb.observations[i + 1, 0])
        return lambda i: (rb.observations[i, 0], rb.next_observations[i, 0])

    notes = ["stacks as given; sample returns torch tensors",
             "next_obs read from the next row (needs handle_timeout_termination=False); one "
             "spare row; sample returns torch tensors"]
    return [Contender(n, make(opt), add_all, read, lambda rb, k, _rng: rb.sample(k), note)
            for n, opt, note in zip(names, (False, True), notes)]


def cpprb_contenders() -> list[Contender]:
    name = "cpprb ReplayBuffer (stack_compress, next_of)"
    try:
        import cpprb
    except Exception as exc:
        return [Contender(name, None, None, None, None,
                          skipped=f"skipped: cpprb not importable ({type(exc).__name__})")]

    def make(capacity, env):
        k, h, w = env.observation_space.shape
        return cpprb.ReplayBuffer(capacity, {"obs": {"shape": (h, w, k), "dtype": np.uint8},
                                             "act": {"dtype": np.uint8}, "rew": {"dtype": np.float32},
                                             "terminated": {"dtype": np.bool_},
                                             "truncated": {"dtype": np.bool_}},
                                  next_of="obs", stack_compress="obs")

    def add_all(rb, items):
        for o, a, r, n, te, tr in items:  # cpprb stacks on the last axis: (84, 84, 4)
            rb.add(obs=o.transpose(1, 2, 0), next_obs=n.transpose(1, 2, 0), act=a, rew=r,
                   terminated=te, truncated=tr)
            if te or tr:
                rb.on_episode_end()  # cpprb's rule with next_of: the episode's last next_obs

    def read(rb):
        every = rb.get_all_transitions()
        return lambda i: (every["obs"][i].transpose(2, 0, 1), every["next_obs"][i].transpose(2, 0, 1))

    return [Contender(name, make, add_all, read, lambda rb, k, _rng: rb.sample(k),
                      f"cpprb {_version('cpprb')}; frames stacked on the last axis, as cpprb "
                      "expects; on_episode_end() at every episode end")]


def torchrl_contenders() -> list[Contender]:
    name = "TorchRL ReplayBuffer (CompressedListStorage)"
    try:
        import torch
        from tensordict import TensorDict
        from torchrl.data import CompressedListStorage, ReplayBuffer
    except Exception as exc:
        return [Contender(name, None, None, None, None,
                          skipped=f"skipped: torchrl not importable ({type(exc).__name__})")]

    def add_all(rb, items):
        for o, a, r, n, te, tr in items:
            rb.add(TensorDict({"obs": torch.from_numpy(o), "action": torch.tensor(a, dtype=torch.uint8),
                               "reward": torch.tensor(r, dtype=torch.float32),
                               "next_obs": torch.from_numpy(n), "terminated": torch.tensor(te),
                               "truncated": torch.tensor(tr)}, batch_size=[]))

    def read(rb):
        def one(i):
            item = rb.storage.get(i)
            return item["obs"].numpy(), item["next_obs"].numpy()
        return one

    codec = "zstd" if sys.version_info >= (3, 14) else "zlib"
    return [Contender(name, lambda c, env: ReplayBuffer(storage=CompressedListStorage(c)), add_all,
                      read, lambda rb, k, _rng: rb.sample(k),
                      f"torchrl {_version('torchrl')}; its default codec on Python "
                      f"{sys.version_info.major}.{sys.version_info.minor} is {codec} (level 3), "
                      "each field of each transition compressed on its own; the tensors' own "
                      "headers are allocated by torch, outside tracemalloc's view")]


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)


def all_contenders(peers: bool) -> list[Contender]:
    found = rlmemlib_contenders()
    if peers:
        return found + sb3_contenders() + cpprb_contenders() + torchrl_contenders()
    names = ["SB3 ReplayBuffer", BASELINE, "cpprb ReplayBuffer (stack_compress, next_of)",
             "TorchRL ReplayBuffer (CompressedListStorage)"]
    return found + [Contender(n, None, None, None, None, skipped="skipped: --no-peers") for n in names]


# ====================================================================== transitions
def collect(game: str, steps: int) -> tuple:
    """``steps`` transitions of a seeded random policy, the env (for its spaces) and the stats."""
    env = atari.make(game)
    mem = rm.ListMemory()
    stats = rm.rollout(env, mem, steps, seed=0, progress_bar=False, desc=game)
    env.close()
    return list(mem), env, stats


def own_zstd_bytes(items) -> int:
    """The frames' own zstd sizes: each frame of the run compressed alone at level 1 (the first
    frame of each episode, which its padded first stack repeats, and the newest of each step)."""
    import zstandard

    cctx = zstandard.ZstdCompressor(level=1)
    total = 0
    for i, t in enumerate(items):
        if i == 0 or items[i - 1].terminated or items[i - 1].truncated:
            total += len(cctx.compress(t.obs[-1]))
        total += len(cctx.compress(t.next_obs[-1]))
    return total


# ====================================================================== measuring
@dataclass
class Row:
    contender: Contender
    memory: Any = None
    traced: float = 0.0           # bytes per transition
    exact: str = ""
    sample_ms: list = field(default_factory=list)
    ratio: list = field(default_factory=list)
    add_us: list = field(default_factory=list)      # µs per single add, one entry per repetition
    batch_us: list = field(default_factory=list)    # µs per transition of add_batch(256)


def build(c: Contender, env, items) -> Row:
    gc.collect()
    with traced(count_blocks=False) as m:
        mem = c.make(len(items), env)
        c.add_all(mem, items)
        gc.collect()
    row = Row(c, mem, m.current / len(items))
    read = c.reader(mem)
    wrong = [i for i, t in enumerate(items)
             if not all(np.array_equal(a, b) for a, b in zip(read(i), (t.obs, t.next_obs)))]
    del read
    ends = {i for i, t in enumerate(items) if t.terminated or t.truncated}
    row.exact = ("yes" if not wrong else
                 f"no: {len(wrong)} of {len(items):,}" + (" (episode ends)" if set(wrong) <= ends else ""))
    return row


def time_samples(rows: list[Row], reps: int, log) -> None:
    rng = {id(r): np.random.default_rng(0) for r in rows}
    for r in rows:  # one call each first: lazy set-up out of the timings
        r.contender.sample(r.memory, BATCH, rng[id(r)])
    for rep in range(reps):
        shift = rep % len(rows)
        for r in rows[shift:] + rows[:shift]:
            r.sample_ms.append(_timed(r.contender.sample, r.memory, BATCH, rng[id(r)]) / 1e6)
        if (rep + 1) % max(1, reps // 5) == 0:
            log(f"  repetition {rep + 1}/{reps}")
    base = next((r for r in rows if r.contender.name == BASELINE), None)
    for r in rows:
        if base is not None:
            r.ratio = [a / b for a, b in zip(r.sample_ms, base.sample_ms)]


def _stacked(items: list, start: int) -> tuple:
    """The fields of ``BATCH`` consecutive transitions from ``start``, stacked (add_batch's input)."""
    chunk = [items[(start + j) % len(items)] for j in range(BATCH)]
    return (np.stack([t.obs for t in chunk]), np.array([t.action for t in chunk]),
            np.array([t.reward for t in chunk]), np.stack([t.next_obs for t in chunk]),
            np.array([t.terminated for t in chunk]), np.array([t.truncated for t in chunk]))


def time_adds(rows: list[Row], items: list, reps: int) -> None:
    """Single adds and batched adds on the full memories, interleaved as the samples are: each
    repetition times every memory once, in a rotating order. The memories stay full (each add
    overwrites the oldest) and go on through the transitions in order."""
    timed = [r for r in rows if r.contender.add_one is not None]
    batches = [_stacked(items, b * BATCH) for b in range(min(4, max(1, len(items) // BATCH)))]
    cursor = {id(r): 0 for r in timed}

    def run_of_adds(r):
        add, mem, at = r.contender.add_one, r.memory, cursor[id(r)]
        for j in range(ADD_RUN):
            add(mem, items[(at + j) % len(items)])
        cursor[id(r)] = (at + ADD_RUN) % len(items)

    for rep in range(reps):
        shift = rep % max(1, len(timed))
        for r in timed[shift:] + timed[:shift]:
            r.add_us.append(_timed(run_of_adds, r) / 1e3 / ADD_RUN)
            r.batch_us.append(_timed(r.contender.add_many, r.memory, batches[rep % len(batches)])
                              / 1e3 / BATCH)


def _add_ratios(rows: list[Row]) -> dict:
    """Median per-repetition ratios of add and add_batch to ADD_BASELINE's, by memory name."""
    base = next((r for r in rows if r.contender.name == ADD_BASELINE and r.add_us), None)
    if base is None:
        return {}
    return {r.contender.name: (statistics.median(a / b for a, b in zip(r.add_us, base.add_us)),
                               statistics.median(a / b for a, b in zip(r.batch_us, base.batch_us)))
            for r in rows if r.add_us}


def run_game(game: str, cfg: dict, contenders: list[Contender], log) -> dict:
    capacity = cfg["capacity"]
    t0 = time.perf_counter()
    items, env, stats = collect(game, capacity)
    log(f"{game}: {capacity:,} transitions collected in {time.perf_counter() - t0:.0f} s "
        f"({stats.episodes} episodes ended)")
    spec = rm.TransitionSpec.from_env(env)
    frame = spec.obs_nbytes // spec.obs_shape[0]
    scalars = spec.action_nbytes + spec.reward_dtype.itemsize + 2
    own = own_zstd_bytes(items) / capacity
    rows = []
    for c in contenders:
        if c.skipped:
            continue
        rows.append(build(c, env, items))
        log(f"  {c.name}: {rows[-1].traced:,.0f} B per transition, exact: {rows[-1].exact}")
    time_samples(rows, cfg["reps"], log)
    time_adds(rows, items, cfg["reps"])
    add_ratios = _add_ratios(rows)
    result = {"game": game, "capacity": capacity, "episodes": stats.episodes,
              "episode_lengths": stats.episode_lengths, "frame": frame, "scalars": scalars,
              "own_zstd": own, "rows": {}}
    for r in rows:
        result["rows"][r.contender.name] = {
            "traced": r.traced, "exact": r.exact, "sample_ms": statistics.median(r.sample_ms),
            "ratio": statistics.median(r.ratio) if r.ratio else None, "runs_ms": r.sample_ms}
        if r.add_us:
            result["rows"][r.contender.name].update(
                add_us=statistics.median(r.add_us), batch_us=statistics.median(r.batch_us),
                add_ratio=add_ratios.get(r.contender.name, (None, None))[0],
                batch_ratio=add_ratios.get(r.contender.name, (None, None))[1],
                add_runs_us=r.add_us, batch_runs_us=r.batch_us)
        r.memory = None
    del rows, items
    gc.collect()
    return result


# ====================================================================== report
def targets(result: dict) -> list[tuple[str, str, str]]:
    game, rows = result["game"], result["rows"]
    out = []
    bound = result["frame"] + result["scalars"]
    if "FramePool" in rows:
        b = rows["FramePool"]["traced"]
        out.append((f"{game}: FramePool within 2% of one frame plus the scalars ({bound:,} B)",
                    f"{b:,.0f} B = {b / bound:.3f} ×", "met" if b <= 1.02 * bound else "NOT met"))
    if "FramePool (zstd)" in rows:
        b, own = rows["FramePool (zstd)"]["traced"], result["own_zstd"]
        out.append((f"{game}: FramePool (zstd) within 1.3× of the frames' own zstd sizes "
                    f"({own:,.0f} B per transition)", f"{b:,.0f} B = {b / own:.2f} ×",
                    "met" if b <= 1.3 * own else "NOT met"))
    r = rows.get("FramePool", {}).get("ratio")
    if r is not None:
        out.append((f"{game}: FramePool sample(256) at least as fast as {BASELINE}",
                    f"×{r:.2f} of its time", "met" if r <= 1.0 else "NOT met"))
    return out


def markdown(info: dict, cfg: dict, mode: str, results: list[dict], contenders) -> str:
    head = (f"Machine: {info['cpu']}, {info['cores']} cores, {info['os']}; Python {info['python']}, "
            f"numpy {info['numpy']}, rlmemlib {info['rlmemlib']}, gymnasium {info['gymnasium']}, "
            f"ale-py {info['ale-py']}, zstandard {info['zstandard']}, cpprb {info['cpprb']}, "
            f"stable-baselines3 {info['stable-baselines3']}, torch {info['torch']}, "
            f"torchrl {info['torchrl']}.")
    lines = [f"# Atari replay memories on real frames ({mode} run)", "", head, ""]
    if mode == "quick":
        lines += ["**A quick run: small memories and few repetitions, to check that everything "
                  "runs. Its numbers are not a measurement; run without `--quick` for that.**", ""]
    lines += [f"Real transitions of a seeded random policy through `rlmemlib.atari.make` (ALE's "
              f"grey frames with its v5 defaults: the last of 4 emulator frames per step, no "
              f"maximum over the last two, sticky actions; resized to 84 × 84 by area averaging; "
              f"stacks of 4), added in order until each memory holds "
              f"{cfg['capacity']:,}. Bytes: tracemalloc, everything the full memory keeps alive, "
              f"over its capacity. Exact: every `obs` and `next_obs` stack read back equal to the "
              f"one added. sample(256): median of {cfg['reps']} interleaved repetitions; (×r) = "
              f"median ratio to {BASELINE} in the same repetition; fastest: the quickest of "
              f"the repetitions (on a busy machine the median counts other processes' work).", ""]
    for res in results:
        bound = res["frame"] + res["scalars"]
        lengths = res["episode_lengths"]
        lines += [f"### {res['game']}", "",
                  f"{res['episodes']} episodes ended in {res['capacity']:,} steps"
                  + (f" (mean length {np.mean(lengths):.0f})" if lengths else "")
                  + f". One frame plus the scalar fields: {bound:,} B; the frames' own zstd sizes "
                  f"(level 1, each frame alone): {res['own_zstd']:,.0f} B per transition "
                  f"({res['frame'] / res['own_zstd']:.0f}× below one "
                  "frame).", "",
                  "| memory | bytes / transition | × (one frame + scalars) | exact | sample(256) (ms) "
                  "| fastest sample(256) (ms) |",
                  "|---|---:|---:|---|---:|---:|"]
        for c in contenders:
            r = res["rows"].get(c.name)
            if r is None:
                lines.append(f"| {c.name} | {c.skipped} | | | | |")
                continue
            ratio = f" (×{r['ratio']:.2f})" if r["ratio"] is not None else ""
            lines.append(f"| {c.name} | {r['traced']:,.0f} | {r['traced'] / bound:.3f} | {r['exact']} "
                         f"| {r['sample_ms']:.2f}{ratio} | {min(r['runs_ms']):.2f} |")
        lines.append("")
    lines += adds_table(results, cfg, contenders)
    lines += ["Notes:"] + [f"- {c.name}: {c.note}." for c in contenders if c.note and not c.skipped]
    lines += ["", "#### Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    for res in results:
        lines += [f"| {t} | {m} | {v} |" for t, m, v in targets(res)]
    return "\n".join(lines) + "\n"


def adds_table(results: list[dict], cfg: dict, contenders) -> list[str]:
    """The course's memories' add and add_batch times, for every game, in one table."""
    named = [c.name for c in contenders if c.add_one is not None and not c.skipped]
    if not named:
        return []
    lines = ["#### Adds (the course's memories)", "",
             f"Median of {cfg['reps']} interleaved repetitions on the full memories: `add` is a run "
             f"of {ADD_RUN} single adds, in µs per add; `add_batch` takes {BATCH} transitions "
             f"stacked beforehand, in µs per transition; (×r) = median ratio to {ADD_BASELINE} "
             "in the same repetition; fastest: the quickest repetition (a run of adds lasts "
             "longer than one sample, so on a busy machine its median counts more of other "
             "processes' work).", "",
             "| memory, game | add (µs) | fastest add (µs) | add_batch(256) (µs per transition) "
             "| fastest add_batch(256) (µs per transition) |", "|---|---:|---:|---:|---:|"]
    for res in results:
        for name in named:
            r = res["rows"].get(name)
            if r is None or "add_us" not in r:
                continue
            ra = f" (×{r['add_ratio']:.2f})" if r.get("add_ratio") is not None else ""
            rb = f" (×{r['batch_ratio']:.2f})" if r.get("batch_ratio") is not None else ""
            lines.append(f"| {name}, {res['game']} | {r['add_us']:.1f}{ra} | {min(r['add_runs_us']):.1f} "
                         f"| {r['batch_us']:.1f}{rb} | {min(r['batch_runs_us']):.1f} |")
    return lines + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run that checks it all works")
    parser.add_argument("--out", type=Path, default=None, help="folder for the results")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default by mode)")
    parser.add_argument("--no-peers", action="store_true", help="skip SB3, cpprb and TorchRL")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    cfg = dict(MODES[mode])
    if args.reps:
        cfg["reps"] = args.reps
    out_dir = (args.out or HERE / "results" / ("quick" if args.quick else "")).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", flush=True)

    contenders = all_contenders(peers=not args.no_peers)
    for c in contenders:
        if c.skipped:
            log(f"{c.name}: {c.skipped}; going on without it")
    results = [run_game(game, cfg, contenders, log) for game in GAMES]
    info = machine()
    for pkg in ("ale-py", "zstandard", "torchrl"):
        try:
            info[pkg] = _version(pkg)
        except Exception:
            info[pkg] = "not installed"
    table = markdown(info, cfg, mode, results, contenders)
    (out_dir / "frames.md").write_text(table)
    raw = {"mode": mode, "config": cfg, "machine": info, "results": results,
           "targets": [t for res in results for t in targets(res)]}
    (out_dir / "frames.json").write_text(json.dumps(raw, indent=1) + "\n")
    if not args.quick and args.out is None:
        update_readme(table, README_BEGIN, README_END)
    print()
    print(table)
    log(f"wrote {out_dir / 'frames.md'} and frames.json in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
