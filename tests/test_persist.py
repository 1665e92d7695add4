"""Saving and loading memories: exact round trips, atomic writes, and files that must be refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import rlmemlib as rm
from rlmemlib import persist
from rlmemlib.rollout import cartpole_transitions

ROOT = Path(__file__).resolve().parent.parent
SPEC = rm.TransitionSpec((4,), np.float32, (), np.uint8, np.float32, 0, 1)
DATA = cartpole_transitions(700, seed=3)


def _memories(capacity=200):
    return {
        "list": rm.ListMemory(capacity, SPEC),
        "list-unbounded": rm.ListMemory(),
        "pool": rm.CircularPool(capacity, SPEC),
        "shared": rm.CircularPool(capacity, SPEC, share_next_obs=True),
        "recycling": rm.RecyclingMemory(capacity, SPEC),
    }


def _same(a, b) -> None:
    assert len(a) == len(b) and a.capacity == b.capacity
    for i in range(len(a)):
        for x, y in zip(a[i], b[i]):
            assert np.asarray(x).tobytes() == np.asarray(y).tobytes() or np.array_equal(x, y), i


@pytest.mark.parametrize("kind", list(_memories()))
@pytest.mark.parametrize("n", [0, 57, 200, 650])
def test_round_trip_is_exact_and_goes_on_like_the_original(tmp_path, kind, n):
    mem = _memories()[kind]
    for t in DATA[:n]:
        mem.add(*t)
    path = mem.save(tmp_path / "mem.npz")
    loaded = type(mem).load(path)
    _same(mem, loaded)
    if n:
        for x, y in zip(mem.sample(64, np.random.default_rng(9)), loaded.sample(64, np.random.default_rng(9))):
            assert np.array_equal(x, y)
    for t in DATA[n:n + 120]:
        mem.add(*t)
        loaded.add(*t)
    _same(mem, loaded)
    for x, y in zip(mem.sample(64, np.random.default_rng(4)), loaded.sample(64, np.random.default_rng(4))):
        assert np.array_equal(x, y)


def test_saving_writes_exactly_the_path_given_and_leaves_no_temporary_file(tmp_path):
    pool = rm.CircularPool(10, SPEC)
    pool.add(*DATA[0])
    pool.save(tmp_path / "pool.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.bin"]


def test_a_list_memory_whose_values_would_change_is_not_saved(tmp_path):
    mem = rm.ListMemory(spec=SPEC)
    mem.add(np.zeros(4, np.float32), 1, 0.1, np.zeros(4, np.float32), False, False)  # 0.1 is not a float32
    with pytest.raises(ValueError, match="reward values change"):
        mem.save(tmp_path / "list.npz")
    assert not (tmp_path / "list.npz").exists()


# ---------------------------------------------------------------- files that must be refused
@pytest.fixture
def saved(tmp_path):
    pool = rm.CircularPool(300, SPEC, share_next_obs=True)
    for t in DATA[:500]:
        pool.add(*t)
    return pool.save(tmp_path / "pool.npz")


def test_truncated_file_is_refused(saved):
    data = saved.read_bytes()
    for keep in (len(data) // 2, len(data) - 10, 100, 0):
        saved.write_bytes(data[:keep])
        with pytest.raises(ValueError, match="truncated or damaged|not a readable"):
            rm.CircularPool.load(saved)


def test_one_changed_byte_in_the_data_is_refused(saved):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("obs.npy")
    spot = info.header_offset + 30 + len(info.filename) + 200  # inside obs.npy's bytes
    data[spot] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged"):
        rm.CircularPool.load(saved)


def test_changed_data_with_a_valid_archive_fails_the_checksum(saved):
    with np.load(saved) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["reward"] = arrays["reward"].copy()
    arrays["reward"][3] += 1
    np.savez(saved, **arrays)
    with pytest.raises(ValueError, match="checksum"):
        rm.CircularPool.load(saved)


def _rewrite_meta(path: Path, **changes) -> None:
    """Change the meta record and fix the checksum, as a careful forger would."""
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    meta.update(changes)
    meta["checksum"] = persist.checksum(arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("changes, message", [
    ({"len": 301}, "len is 301"),
    ({"start": 400}, "start is 400"),
    ({"capacity": 299}, "len is 300"),
    ({"capacity": 301}, "obs is"),
    ({"version": 2}, "version 2"),
    ({"format": "something-else"}, "not an rlmemlib memory file"),
    ({"type": "RecyclingMemory"}, "not a CircularPool"),
    ({"spec": {"obs_shape": [5]}}, "spec is not valid"),
    ({"added": 7}, "added is 7"),
])
def test_inconsistent_meta_is_refused(saved, changes, message):
    _rewrite_meta(saved, **changes)
    with pytest.raises(ValueError, match=message):
        rm.CircularPool.load(saved)


def test_side_store_that_does_not_match_the_flags_is_refused(saved):
    with np.load(saved) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    arrays["final_seq"] = arrays["final_seq"][:-1]
    arrays["final_obs"] = arrays["final_obs"][:-1]
    meta["checksum"] = persist.checksum(arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(saved, **arrays)
    with pytest.raises(ValueError, match="side store"):
        rm.CircularPool.load(saved)


def test_pickled_objects_are_never_loaded(tmp_path):
    path = tmp_path / "evil.npz"
    marker = tmp_path / "ran"
    meta = {"format": persist.FORMAT, "version": persist.VERSION, "type": "CircularPool"}
    payload = np.array([_Boom(str(marker))], dtype=object)
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), obs=payload)
    with pytest.raises(ValueError, match="pickled"):
        rm.CircularPool.load(path)
    assert not marker.exists()


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("content, message", [
    (b"", "empty"), (b"hello, not a memory", "not a zip archive"),
    (b"\x80\x04K\x01.", "not a zip archive"),  # a pickle is not even looked at
    (b"PK\x03\x04" + b"\x00" * 40, "truncated or damaged")])
def test_a_file_that_is_not_a_memory_is_refused(tmp_path, content, message):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        rm.CircularPool.load(path)


def test_an_npz_without_meta_and_a_missing_file_are_refused(tmp_path):
    np.savez(tmp_path / "plain.npz", obs=np.zeros(3))
    with pytest.raises(ValueError, match="not an rlmemlib memory file"):
        rm.RecyclingMemory.load(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="not a file"):
        rm.RecyclingMemory.load(tmp_path / "missing.npz")


# ---------------------------------------------------------------- atomic writes
KILLER = r"""
import sys, numpy as np, rlmemlib as rm
spec = rm.TransitionSpec((84, 84), np.uint8, (), np.uint8, np.float32, 0, 5)
pool = rm.CircularPool(600, spec)
k = int(sys.argv[2])
frame = np.full((84, 84), k % 251, np.uint8)
for i in range(600):
    pool.add(frame, i % 6, float(k), frame, False, False)
print("ready", flush=True)
while True:
    k += 1
    pool.add(np.full((84, 84), k % 251, np.uint8), 0, float(k), frame, False, False)
    pool.save(sys.argv[1])
"""


def test_a_process_killed_while_saving_leaves_a_loadable_file(tmp_path):
    target = tmp_path / "pool.npz"
    spec = rm.TransitionSpec((84, 84), np.uint8, (), np.uint8, np.float32, 0, 5)
    first = rm.CircularPool(600, spec)
    first.add(np.zeros((84, 84), np.uint8), 0, 0.0, np.zeros((84, 84), np.uint8), False, False)
    first.save(target)
    rng = np.random.default_rng(0)
    for trial in range(6):
        proc = subprocess.Popen([sys.executable, "-c", KILLER, str(target), str(trial * 1000)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.6)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        loaded = rm.CircularPool.load(target)  # raises if the file were torn
        assert len(loaded) in (1, 600)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "pool.npz"]
    assert all(name.endswith(".tmp") for name in leftovers)  # a killed writer may leave its temp file


# ---------------------------------------------------------------- one-way dependency, plug-ins
def test_persist_imports_no_memory_module():
    """persist knows the file format only; memories import it, never the reverse."""
    import ast

    tree = ast.parse(Path(persist.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert not any(name and "memory" in name for name in imported), imported
    assert {"CircularPool", "ListMemory", "RecyclingMemory"}.isdisjoint(vars(persist))


class TinyRing:
    """A memory class persist has never heard of: it follows the protocol and nothing else."""

    def __init__(self, capacity, spec):
        self.capacity, self.spec = capacity, spec
        self.obs = np.zeros((capacity, *spec.obs_shape), spec.obs_dtype)
        self.len = 0

    def _saved_state(self):
        return {"obs": self.obs}, {"len": self.len}

    @classmethod
    def _from_saved(cls, saved):
        capacity = saved.int("capacity", 1, 100)
        ring = cls(capacity, saved.require_spec())
        ring.obs[...] = saved.array("obs", (capacity, *ring.spec.obs_shape), ring.spec.obs_dtype)
        ring.len = saved.int("len", 0, capacity)
        return ring


def test_a_memory_class_from_elsewhere_plugs_into_save_and_load(tmp_path):
    ring = TinyRing(5, SPEC)
    ring.obs[:2] = 7
    ring.len = 2
    loaded = persist.load(TinyRing, persist.save(ring, tmp_path / "tiny.npz"))
    assert loaded.len == 2 and np.array_equal(loaded.obs, ring.obs)
    _rewrite_meta(tmp_path / "tiny.npz", len=9)  # the class's own checks run on its own state
    with pytest.raises(ValueError, match="len is 9, expected an int in"):
        persist.load(TinyRing, tmp_path / "tiny.npz")
    with pytest.raises(ValueError, match="holds a TinyRing, not a CircularPool"):
        rm.CircularPool.load(tmp_path / "tiny.npz")
    with pytest.raises(TypeError, match="cannot save a dict"):
        persist.save({}, tmp_path / "x.npz")


@pytest.mark.parametrize("kind", ["pool", "shared", "recycling"])
def test_every_stored_array_is_made_by_new_array(kind):
    """One overridable method makes every array that holds data (memory-mapped or shared
    storage can replace it); the side store's growth goes through it too."""
    made = []

    def tracked(base):
        class Tracked(base):
            def _new_array(self, name, shape, dtype):
                arr = super()._new_array(name, shape, dtype)
                made.append((name, arr))
                return arr
        return Tracked

    base = type(_memories()[kind])
    mem = tracked(base)(50, SPEC, share_next_obs=True) if kind == "shared" else tracked(base)(50, SPEC)
    for t in cartpole_transitions(400, seed=5):  # many episode ends: the side store grows
        mem.add(*t)
    ids = {id(arr) for _, arr in made}
    holders = [mem] + ([mem._finals] if kind == "shared" else [])
    stored = [v for h in holders for k, v in vars(h).items()
              if isinstance(v, np.ndarray) and not k.startswith(("_lut", "_gather"))]  # constants, scratch
    stored += list(getattr(mem, "records", []))
    assert stored and all(id(a if a.base is None else a.base) in ids for a in stored)
    if kind == "shared":
        assert sum(name == "final_obs" for name, _ in made) >= 2  # made again when it grew


def test_an_open_tail_with_flags_set_is_refused(tmp_path):
    """The newest transition of a shared pool waits as an open tail, unflagged; a file that
    flags it was not written by a pool."""
    pool = rm.CircularPool(50, SPEC, share_next_obs=True)
    for t in DATA[:30]:
        pool.add(*t)
    path = pool.save(tmp_path / "pool.npz")
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    assert len(arrays["open_seq"]) >= 1
    row = (meta["start"] + int(arrays["open_seq"][0]) - (meta["added"] - meta["len"])) % 50
    arrays["flags"] = arrays["flags"].copy()
    arrays["flags"][row] |= 1
    meta["checksum"] = persist.checksum(arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="open tail's flags are set"):
        rm.CircularPool.load(path)
