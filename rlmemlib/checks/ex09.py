"""Checks for the exercises of lesson 09, beyond one machine's RAM and one process.

Each public function takes the learner's answer and checks it (see :mod:`rlmemlib.checks`);
``verify_*`` functions hold the invariants and raise :class:`CheckFailed` with a teaching
message, so the unit tests can feed them typical wrong answers. Nothing here starts Ray: the
shards of exercises 2 and 3 are memories in this process, which is all the sampling rule needs.

* Exercise 1 (arrays that live in files): reopen every ``.npy`` file of a folder memory-mapped,
  read and write, so that rows stay on disk until used and writes reach the files. The usual
  slips each get their message: ``np.load`` without ``mmap_mode`` (the whole file in RAM),
  ``"r"`` (read-only), ``"c"`` (writes stay in the process), ``open_memmap(..., "w+")`` (the
  file made anew, its rows gone).
* Exercise 2 (where a logical index lives): map logical indices over shards taken one after
  the other to (shard, index inside the shard), empty shards included.
* Exercise 3 (sampling across shards): draw the indices once, by the memories' rule, over all
  shards; each shard returns its rows, put back at their places in the batch. The batch is the
  one a single memory holding the shards' transitions in order returns for the same generator.
"""

from __future__ import annotations

import mmap
import tempfile
from pathlib import Path

import numpy as np

from . import CheckFailed, expect, run_check, working
from ..memory import CircularPool, ListMemory
from ..spec import Batch
from ._shared import cartpole_data, cartpole_spec

FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")


# ---------------------------------------------------------------- exercise 1: reopen arrays
def make_arrays(folder, capacity: int = 1000) -> dict:
    """A folder like a memory-mapped pool's: one ``.npy`` file per field, the first rows written,
    and a ``state.json`` beside them. Returns what was written, as arrays in RAM."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = cartpole_data(200)
    written = {}
    for f, name in enumerate(("obs", "action", "reward")):
        column = np.array([t[f] for t in data])
        arr = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=column.dtype,
                                        shape=(capacity, *column.shape[1:]))
        arr[:len(column)] = column
        arr.flush()
        written[name] = np.array(arr)
        del arr
    (folder / "state.json").write_text('{"len": 200}')
    return written


def _mapped(arr) -> bool:
    """Whether an array's memory is a mapping of a file (np.memmap, or a view of one)."""
    while arr is not None:
        if isinstance(arr, (np.memmap, mmap.mmap)):
            return True
        arr = getattr(arr, "base", None)
    return False


def _reopened(reopen_arrays, folder) -> dict:
    try:
        arrays = reopen_arrays(folder)
    except ValueError as exc:
        expect(False, "every .npy file of the folder, reopened", f"ValueError ({exc})",
               "open only the .npy files (Path(folder).glob('*.npy')): state.json is not an array")
    expect(isinstance(arrays, dict) and set(arrays) == {"obs", "action", "reward"},
           "a dict {'obs': ..., 'action': ..., 'reward': ...}, one entry per .npy file",
           f"{type(arrays).__name__}" + (f" with keys {sorted(arrays)}" if isinstance(arrays, dict) else ""),
           "name each array after its file without the suffix (path.stem)")
    return arrays


def verify_reopen_arrays(reopen_arrays) -> None:
    folder = Path(tempfile.mkdtemp(prefix="rlmemlib-ex09-"))
    written = make_arrays(folder)
    arrays = _reopened(reopen_arrays, folder)
    obs = arrays["obs"]
    expect(_mapped(obs), "arrays mapped from their files (np.memmap)", f"a {type(obs).__name__} in RAM",
           "np.load without mmap_mode reads the whole file into anonymous memory, which is "
           "what a pool larger than RAM cannot afford: pass mmap_mode")
    expect(obs.shape == (1000, 4), "obs of shape (1000, 4), as stored", f"{obs.shape}",
           "reopen the file as it is: np.load(path, mmap_mode=...) reads shape and dtype from it")
    expect(np.array_equal(obs[:200], written["obs"][:200]),
           "the 200 rows written before to come back", "other values (zeros)",
           "open_memmap(..., mode='w+') makes the file anew and its rows are lost; reopen "
           "an existing file with np.load(path, mmap_mode='r+')")
    try:
        obs[0] = obs[0] + 1
    except ValueError:
        expect(False, "arrays the pool can write", "a read-only mapping",
               "mmap_mode='r' maps the file read-only, so no add could write a row: use 'r+'")
    _flush(obs)
    on_disk = np.load(folder / "obs.npy")
    expect(np.array_equal(on_disk[0], written["obs"][0] + 1), "a write to reach the file",
           "the file unchanged", "mmap_mode='c' (copy on write) keeps writes in this process's "
           "memory and the file never sees them: use 'r+'")


def _flush(arr) -> None:
    while arr is not None and not isinstance(arr, np.memmap):
        arr = getattr(arr, "base", None)
    if arr is not None:
        arr.flush()


def reopen_arrays(answer) -> None:
    run_check("Exercise 1 (arrays that live in files)", answer, verify_reopen_arrays)


def reference_reopen_arrays(folder) -> dict:
    """rlmemlib's answer to exercise 1."""
    return {path.stem: np.load(path, mmap_mode="r+") for path in sorted(Path(folder).glob("*.npy"))}


def working_reopen_arrays(answer):
    """The learner's ``reopen_arrays`` if it passes, else rlmemlib's."""
    return working(answer, reference_reopen_arrays, verify_reopen_arrays, "reopen_arrays")


# ---------------------------------------------------------------- exercise 2: locate
def reference_locate(indices, sizes):
    """rlmemlib's answer to exercise 2."""
    sizes = np.asarray(sizes, dtype=np.int64)
    ends = np.cumsum(sizes)
    idx = np.asarray(indices, dtype=np.int64)
    shard = np.searchsorted(ends, idx, side="right")
    return shard, idx - (ends[shard] - sizes[shard])


_LOCATE_CASES = (([3, 0, 4, 1], np.arange(8)), ([5, 5], np.array([9, 0, 4, 5, 5])),
                 ([7], np.array([6, 0, 3])), ([0, 2, 0, 3], np.array([4, 0, 1, 2])))


def _as_pair(result, n):
    expect(isinstance(result, tuple) and len(result) == 2, "a tuple (shard, local)",
           type(result).__name__, "return shard, local: two arrays as long as indices")
    shard, local = (np.asarray(r) for r in result)
    expect(shard.shape == (n,) and local.shape == (n,), f"two arrays of {n} entries",
           f"shapes {shard.shape} and {local.shape}", "one shard and one local index per index")
    return shard, local


def verify_locate(locate) -> None:
    for sizes, idx in _LOCATE_CASES:
        shard, local = _as_pair(locate(idx.copy(), list(sizes)), len(idx))
        want_shard, want_local = reference_locate(idx, sizes)
        if not np.array_equal(shard, want_shard):
            _explain_shard(idx, sizes, shard, want_shard)
        expect(np.array_equal(local, want_local), f"local indices {want_local.tolist()} for "
               f"indices {idx.tolist()} over shards of sizes {sizes}", f"{local.tolist()}",
               "the index inside a shard is the logical index minus the number of "
               "transitions in the shards before it (where the shard starts)")


def _explain_shard(idx, sizes, shard, want) -> None:
    k = int(np.flatnonzero(shard != want)[0])
    i, got, right = int(idx[k]), int(shard[k]), int(want[k])
    if np.array_equal(shard, idx % len(sizes)):
        hint = ("that is i % K, round robin by index; here logical index i counts shard 0's "
                "transitions first, then shard 1's: compare i with the running total of sizes")
    elif 0 <= got < len(sizes) and sizes[got] == 0:
        hint = (f"shard {got} is empty and can hold no index: with np.searchsorted on the "
                "running totals, side='right' skips empty shards")
    elif got == right - 1 or (got < right and i == int(np.cumsum(sizes)[got])):
        hint = (f"index {i} is the first of shard {right}: the running total of the sizes up to "
                f"shard {got} is an end, not a member (np.searchsorted(ends, i, side='right'))")
    else:
        hint = "find the first shard whose running total of sizes is greater than the index"
    expect(False, f"index {i} in shard {right} (shard sizes {sizes})", f"shard {got}", hint)


def locate(answer) -> None:
    run_check("Exercise 2 (where a logical index lives)", answer, verify_locate)


def working_locate(answer):
    """The learner's ``locate`` if it passes, else rlmemlib's."""
    return working(answer, reference_locate, verify_locate, "locate")


# ---------------------------------------------------------------- exercise 3: sample across shards
def make_shards(sizes=(300, 40, 0, 150), capacity: int = 300) -> list:
    """Shards (CircularPools in this process) fed consecutive CartPole transitions: shard k
    gets the next ``sizes[k]`` of them, more than its capacity if asked."""
    spec, data = cartpole_spec(), cartpole_data(1000)
    shards, start = [], 0
    for n in sizes:
        pool = CircularPool(capacity, spec)
        for t in data[start:start + n]:
            pool.add(*t)
        shards.append(pool)
        start += n
    return shards


def one_after_other(shards) -> ListMemory:
    """One memory holding every shard's transitions, shard 0's first (each oldest first)."""
    one = ListMemory(None, cartpole_spec())
    for shard in shards:
        for t in shard:
            one.add(*t)
    return one


def _rows(batch):
    return [tuple(np.asarray(a[k]).tobytes() for a in batch) for k in range(len(batch.reward))]


def verify_sample_shards(sample_shards) -> None:
    for sizes in ((300, 40, 0, 150), (10, 10), (0, 5)):
        shards = make_shards(sizes)
        one = one_after_other(shards)
        rng, ref_rng = np.random.default_rng(11), np.random.default_rng(11)
        got = sample_shards(shards, 256, rng)
        expect(isinstance(got, Batch) and len(got.reward) == 256, "a Batch of 256 rows",
               f"{type(got).__name__}", "fill spec.empty_batch(batch_size) and return it")
        want = one.sample(256, ref_rng)
        if _rows(got) == _rows(want):
            expect(rng.bit_generator.state == ref_rng.bit_generator.state,
                   "the generator to move as one draw of 256 indices", "another state",
                   "draw once: rng.integers(0, total, size=batch_size)")
            continue
        _explain_batch(got, want, shards, sizes)


def _held(shard) -> set:
    """The rows a shard holds, in the form of ``_rows``."""
    return {tuple(np.asarray(v).tobytes() for v in shard[i]) for i in range(len(shard))}


def _explain_batch(got, want, shards, sizes) -> None:
    rows, held = _rows(got), [_held(shard) for shard in shards]
    expect(all(any(r in h for h in held) for r in rows), "every row to be a transition the shards hold",
           "rows no shard holds", "take each shard's rows from that shard, at its local indices")
    if sorted(rows) == sorted(_rows(want)):
        expect(False, f"the batch for shard sizes {list(sizes)}", "the right rows in another order",
               "put each shard's rows back where its indices stand in the batch "
               "(out.obs[positions] = part.obs), not one shard after the other")
    used = {k for k, h in enumerate(held) for r in rows if r in h}
    if len(used) == 1 and sum(1 for n in sizes if n) > 1:
        expect(False, "rows from every shard that holds transitions", f"rows of shard {used.pop()} only",
               "a batch from one shard picked at random over-samples the small shards' "
               "transitions; draw the indices over all shards' transitions instead")
    expect(False, f"the batch a single memory holding the shards' transitions in order returns "
           f"(shard sizes {list(sizes)})", "another batch",
           "draw the indices once over all transitions, idx = rng.integers(0, sum(sizes), "
           "size=batch_size); a shard sampling batch_size // K rows with its own draws gives "
           "every shard the same share of the batch, whatever its size")


def sample_shards(answer) -> None:
    run_check("Exercise 3 (sampling across shards)", answer, verify_sample_shards)


def reference_sample_shards(shards, batch_size, rng) -> Batch:
    """rlmemlib's answer to exercise 3."""
    from ..distributed import GivenIndices

    sizes = [len(shard) for shard in shards]
    shard, local = reference_locate(rng.integers(0, sum(sizes), size=batch_size), sizes)
    out = shards[0].spec.empty_batch(batch_size)
    for k, memory in enumerate(shards):
        positions = np.flatnonzero(shard == k)
        if len(positions):
            for dest, src in zip(out, memory.sample(len(positions), GivenIndices(local[positions]))):
                dest[positions] = src
    return out


def working_sample_shards(answer):
    """The learner's ``sample_shards`` if it passes, else rlmemlib's."""
    return working(answer, reference_sample_shards, verify_sample_shards, "sample_shards")


__all__ = ["make_arrays", "reopen_arrays", "verify_reopen_arrays", "reference_reopen_arrays",
           "working_reopen_arrays", "locate", "verify_locate", "reference_locate", "working_locate",
           "make_shards", "one_after_other", "sample_shards", "verify_sample_shards",
           "reference_sample_shards", "working_sample_shards", "CheckFailed"]
