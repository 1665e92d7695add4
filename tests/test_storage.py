"""rlmemlib.storage: pools on memory-mapped files and in shared memory keep the pool's contract,
reopen lazily, and the memory kinds they use are the ones the lesson says, down to what a
memory cgroup does at its limit."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rlmemlib as rm
from rlmemlib import storage

ON_LINUX = sys.platform.startswith("linux")


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _fill(data, *pools):
    for t in data:
        for p in pools:
            p.add(*t)


# ------------------------------------------------------------------ memory-mapped pools
@pytest.mark.parametrize("share", [False, True], ids=["plain", "shared-next-obs"])
def test_memmap_pool_holds_and_samples_what_a_pool_in_ram_does(tmp_path, cartpole_spec, cartpole_data, helpers, share):
    disk = storage.memmap(rm.CircularPool, tmp_path, 700, cartpole_spec, share_next_obs=share)
    ram = rm.CircularPool(700, cartpole_spec, share_next_obs=share)
    _fill(cartpole_data[:2500], disk, ram)
    assert isinstance(disk, rm.CircularPool) and isinstance(disk.obs.base, np.memmap)
    assert helpers.contents(disk, cartpole_spec) == helpers.contents(ram, cartpole_spec)
    assert _same(disk.sample(128, np.random.default_rng(3)), ram.sample(128, np.random.default_rng(3)))


@pytest.mark.parametrize("share", [False, True], ids=["plain", "shared-next-obs"])
def test_reopened_pool_goes_on_like_the_pool_that_never_stopped(tmp_path, cartpole_spec, cartpole_data, helpers, share):
    disk = storage.memmap(rm.CircularPool, tmp_path, 700, cartpole_spec, share_next_obs=share)
    ram = rm.CircularPool(700, cartpole_spec, share_next_obs=share)
    _fill(cartpole_data[:1900], disk, ram)
    disk.close()
    del disk
    again = storage.reopen(tmp_path)
    assert type(again).__name__ == "MemmapCircularPool" and isinstance(again.obs.base, np.memmap)
    assert type(again[0].obs) is np.ndarray and type(again.sample(2, np.random.default_rng(0)).obs) is np.ndarray
    assert helpers.contents(again, cartpole_spec) == helpers.contents(ram, cartpole_spec)
    _fill(cartpole_data[1900:3200], again, ram)  # wraps around, evicts finals from before the reopen
    assert helpers.contents(again, cartpole_spec) == helpers.contents(ram, cartpole_spec)
    assert _same(again.sample(64, np.random.default_rng(9)), ram.sample(64, np.random.default_rng(9)))


@settings(max_examples=25, deadline=None)
@given(capacity=st.integers(1, 40), cut=st.integers(0, 300), share=st.booleans())
def test_flush_then_reopen_at_any_point(tmp_path_factory, cartpole_spec, cartpole_data, helpers, capacity, cut, share):
    folder = tmp_path_factory.mktemp("pool")
    disk = storage.memmap(rm.CircularPool, folder, capacity, cartpole_spec, share_next_obs=share)
    ram = rm.CircularPool(capacity, cartpole_spec, share_next_obs=share)
    _fill(cartpole_data[:cut], disk, ram)
    disk.flush()
    again = storage.reopen(folder)
    _fill(cartpole_data[cut:cut + 60], again, ram)
    assert helpers.contents(again, cartpole_spec) == helpers.contents(ram, cartpole_spec)


def test_side_store_that_doubles_keeps_its_old_rows(tmp_path, cartpole_spec, helpers):
    # Episodes of one step: every add moves a final observation to the side store, which
    # doubles several times; each doubling makes a new file while the old one is still read.
    spec = cartpole_spec
    disk = storage.memmap(rm.CircularPool, tmp_path, 300, spec, share_next_obs=True)
    ram = rm.CircularPool(300, spec, share_next_obs=True)
    rng = np.random.default_rng(0)
    for k in range(400):
        obs, nxt = rng.normal(size=(2, 4)).astype(np.float32)
        for p in (disk, ram):
            p.add(obs, k % 2, 1.0, nxt, True, False)
    assert helpers.contents(disk, spec) == helpers.contents(ram, spec)
    assert sorted(p.name for p in tmp_path.glob("*.npy") if p.name.startswith("final")) == \
        ["final_obs.npy", "final_seq.npy"]  # the replaced files are gone from the folder


def test_files_are_sparse_and_reopening_reads_no_rows(tmp_path, cartpole_spec, cartpole_data):
    capacity = 4_000_000  # 152 MB of rows planned
    disk = storage.memmap(rm.CircularPool, tmp_path, capacity, cartpole_spec)
    _fill(cartpole_data[:1000], disk)
    disk.close()
    del disk
    apparent = sum(p.stat().st_size for p in tmp_path.glob("*.npy"))
    if hasattr(os, "statvfs") and ON_LINUX:
        on_disk = sum(p.stat().st_blocks * 512 for p in tmp_path.glob("*.npy"))
        assert apparent > 150e6 and on_disk < 2e6  # blocks only where rows were written
    if ON_LINUX:
        before = storage.resident().file
        again = storage.reopen(tmp_path)
        opened = storage.resident().file - before
        # the cursor, the headers and the flags (checked: one byte per row), not the other rows
        assert opened < capacity + 2**20 and opened < apparent / 20, opened
        batch = again.sample(256, np.random.default_rng(0))
        assert len(batch) == 256


def test_reopen_refuses_what_is_not_a_pool_folder(tmp_path, cartpole_spec, cartpole_data):
    with pytest.raises(ValueError, match="no memory-mapped pool"):
        storage.reopen(tmp_path)
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        storage.reopen(tmp_path)
    pool = storage.memmap(rm.CircularPool, tmp_path, 50, cartpole_spec)
    _fill(cartpole_data[:20], pool)
    pool.close()
    meta = json.loads((tmp_path / "state.json").read_text())
    for change, message in [({"format": "other"}, "not a memory-mapped pool"),
                            ({"version": 99}, "version 99"),
                            ({"type": "ListMemory"}, "expected one of"),
                            ({"capacity": 60}, r"obs is \(50, 4\) float32, expected \(60, 4\)"),
                            ({"arrays": {**meta["arrays"], "obs": "../obs.npy"}}, "not a file name"),
                            ({"arrays": {**meta["arrays"], "obs": "gone.npy"}}, "gone.npy is missing")]:
        (tmp_path / "state.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(ValueError, match=message):
            storage.reopen(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps({**meta, "state": {**meta["state"], "len": 51}}))
    with pytest.raises(ValueError, match=r"len is 51, expected an int in \[0, 50\]"):
        storage.reopen(tmp_path)


def test_only_pools_of_a_few_large_arrays_are_backed(tmp_path, cartpole_spec):
    for cls in (rm.ListMemory, rm.RecyclingMemory, dict):
        with pytest.raises(TypeError, match="memory class must be one of"):
            storage.memmap(cls, tmp_path, 10, cartpole_spec)
        with pytest.raises(TypeError, match="CircularPool"):
            storage.shared(cls, 10, cartpole_spec)


def test_a_rejected_add_changes_nothing_on_disk(tmp_path, cartpole_spec, cartpole_data, helpers):
    pool = storage.memmap(rm.CircularPool, tmp_path, 30, cartpole_spec)
    _fill(cartpole_data[:40], pool)
    before = helpers.contents(pool, cartpole_spec)
    with pytest.raises(ValueError, match="obs"):
        pool.add(np.zeros(3, np.float32), 0, 1.0, np.zeros(4, np.float32), False, False)
    assert helpers.contents(pool, cartpole_spec) == before


# ------------------------------------------------------------------ shared memory
def _writer(handle, rows, seed):
    pool = storage.attach(handle)
    rng = np.random.default_rng(seed)
    for _ in range(rows):
        obs = rng.normal(size=4).astype(np.float32)
        pool.add(obs, 1, 1.0, obs + 1, False, False)
    pool.close()


def test_processes_attached_to_a_shared_pool_write_one_pool(cartpole_spec):
    pool = storage.shared(rm.CircularPool, 500, cartpole_spec)
    try:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_writer, args=(pool.handle(), 150, seed)) for seed in (1, 2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
            assert p.exitcode == 0
        assert len(pool) == 300
        # every row the writers wrote is there, each with next_obs = obs + 1 (no torn rows)
        rows = [pool[i] for i in range(300)]
        assert all(np.array_equal(t.next_obs, t.obs + 1) for t in rows)
        expected = set()
        for seed in (1, 2):
            rng = np.random.default_rng(seed)
            expected |= {rng.normal(size=4).astype(np.float32).tobytes() for _ in range(150)}
        assert {t.obs.tobytes() for t in rows} == expected
    finally:
        names = list(pool.handle().segments.values())
        pool.close()
    from multiprocessing import shared_memory
    for name in names:  # the maker's close freed every segment
        with pytest.raises(FileNotFoundError):
            shared_memory.SharedMemory(name=name)


def test_shared_pool_keeps_the_pool_contract(cartpole_spec, cartpole_data, helpers):
    pool = storage.shared(rm.CircularPool, 120, cartpole_spec)
    view = storage.attach(pool.handle())  # a second view in this process: the same rows and cursor
    ram = rm.CircularPool(120, cartpole_spec)
    try:
        _fill(cartpole_data[:200], pool, ram)
        assert helpers.contents(view, cartpole_spec) == helpers.contents(ram, cartpole_spec)
        assert _same(view.sample(50, np.random.default_rng(4)), ram.sample(50, np.random.default_rng(4)))
        with pytest.raises(TypeError, match="action"):
            view.add(cartpole_data[0][0], "left", 1.0, cartpole_data[0][3], False, False)
        assert helpers.contents(pool, cartpole_spec) == helpers.contents(ram, cartpole_spec)
        view.clear()
        assert len(pool) == 0
    finally:
        view.close()
        pool.close()


# ------------------------------------------------------------------ what the OS counts
@pytest.mark.skipif(not ON_LINUX, reason="reads Linux's /proc")
def test_resident_tells_anonymous_file_backed_and_shared_pages(tmp_path):
    from multiprocessing import shared_memory

    n = 64 * 2**20
    before = storage.resident()
    anon = np.ones(n, np.uint8)
    after_anon = storage.resident()
    assert after_anon.anon - before.anon > 0.9 * n and abs(after_anon.shmem - before.shmem) < n / 10
    mapped = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.uint8, shape=(n,))
    mapped[:] = 2
    after_file = storage.resident()
    assert after_file.file - after_anon.file > 0.9 * n and after_file.anon - after_anon.anon < n / 10
    seg = shared_memory.SharedMemory(create=True, size=n)
    try:
        view = np.ndarray((n,), np.uint8, buffer=seg.buf)
        view[:] = 3
        after_shm = storage.resident()
        assert after_shm.shmem - after_file.shmem > 0.9 * n
        del view
    finally:
        seg.close()
        seg.unlink()
    del anon, mapped


def test_container_memory_reads_numbers_or_none():
    found = storage.container_memory()
    if found is None:
        pytest.skip("no memory cgroup readable here")
    assert found["version"] in (1, 2)
    for key in ("usage", "anon", "file", "shmem"):
        assert isinstance(found[key], int) and found[key] >= 0
    assert found["limit"] is None or found["limit"] > 0


CHILD = textwrap.dedent("""
    import sys, numpy as np
    kind, path, n = sys.argv[1], sys.argv[2], 256 * 2**20
    if kind == "file":
        a = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n,))
        a[:] = 1
        a.flush()
        assert int(a[::4096].sum()) == n // 4096
    elif kind == "anon":
        a = np.ones(n, np.uint8)
    else:
        from multiprocessing import shared_memory
        seg = shared_memory.SharedMemory(create=True, size=n)
        print("segment", seg.name, flush=True)  # the test frees it if this process is killed
        a = np.ndarray((n,), np.uint8, buffer=seg.buf)
        a[:] = 1
    print("survived")
""")


def _limited_cgroup(tmp_name: str) -> Path | None:
    """A child of this process's memory cgroup with a 64 MiB limit, where one can be made."""
    if not ON_LINUX or os.geteuid() != 0 or _has_swap():
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if "memory" in names.split(","):  # cgroup v1
            parent = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            limit_file = "memory.limit_in_bytes"
            break
    else:
        path = next((l.split(":", 2)[2] for l in Path("/proc/self/cgroup").read_text().splitlines()
                     if l.startswith("0::")), None)
        if path is None:
            return None
        parent, limit_file = Path("/sys/fs/cgroup") / path.lstrip("/"), "memory.max"
    child = parent / tmp_name
    try:
        child.mkdir()
        (child / limit_file).write_text(str(64 * 2**20))
    except OSError:
        if child.exists():
            child.rmdir()
        return None
    return child


def _remove(group: Path) -> None:
    """Remove the test's cgroup once the processes started in it (a killed child's resource
    tracker, say) have ended; those still there after a while are ended here."""
    import signal
    import time

    for attempt in range(50):
        pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        if not pids:
            try:
                group.rmdir()
                return
            except OSError:
                pass
        elif attempt > 20:
            for pid in pids:  # started by this test, inside its cgroup
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    group.rmdir()


def _has_swap() -> bool:
    import psutil

    return psutil.swap_memory().total > 0


@pytest.mark.parametrize("kind, survives", [("file", True), ("anon", False), ("shm", False)])
def test_at_a_memory_limit_file_pages_are_dropped_and_the_others_are_not(tmp_path, kind, survives):
    """A 64 MiB memory cgroup without swap: 256 MiB of memory-mapped file fit (the kernel writes
    back and drops page-cache pages); 256 MiB of anonymous or shared memory get the process killed."""
    group = _limited_cgroup(f"rlmemlib-test-{os.getpid()}-{kind}")
    if group is None:
        pytest.skip("needs root, a writable memory cgroup and no swap")
    script = tmp_path / "child.py"
    script.write_text(CHILD)

    def enter():
        (group / "cgroup.procs").write_text(str(os.getpid()))

    try:
        done = subprocess.run([sys.executable, str(script), kind, str(tmp_path / "big.npy")],
                              preexec_fn=enter, capture_output=True, text=True, timeout=300)
    finally:
        _remove(group)
    for line in done.stdout.splitlines():  # a killed process leaves its segment behind
        if line.startswith("segment "):
            Path("/dev/shm", line.split()[1].lstrip("/")).unlink(missing_ok=True)
    if survives:
        assert done.returncode == 0 and "survived" in done.stdout, done.stderr[-500:]
    else:
        assert done.returncode == -9 and "survived" not in done.stdout  # killed by the OOM killer


# ------------------------------------------------------------------ FramePool on files, and save()
@pytest.mark.parametrize("compress", [None, "zstd"])
def test_memmap_frame_pool_holds_reopens_and_samples_like_one_in_ram(tmp_path, compress):
    pytest.importorskip("zstandard") if compress else None
    spec = rm.TransitionSpec((4, 8, 8), np.uint8, (), np.uint8, action_low=0, action_high=5)
    frames = np.random.default_rng(0).integers(0, 256, (400, 8, 8), dtype=np.uint8)

    def stack(t):  # the four frames up to t, the first one repeated at the start
        return frames[np.clip(np.arange(t - 3, t + 1), 0, None)]

    disk = storage.memmap(rm.FramePool, tmp_path, 50, spec, compress=compress)
    ram = rm.FramePool(50, spec, compress=compress)
    steps = [(stack(t), t % 6, 1.0, stack(t + 1), t % 37 == 36, False) for t in range(300)]
    _fill(steps[:120], disk, ram)
    disk.close()
    del disk
    again = storage.reopen(tmp_path)
    assert type(again).__name__ == "MemmapFramePool" and isinstance(again.action.base, np.memmap)
    assert _same_contents(again, ram)
    _fill(steps[120:], again, ram)  # goes on after the reopen, wrapping around
    assert _same_contents(again, ram)
    assert _same(again.sample(64, np.random.default_rng(1)), ram.sample(64, np.random.default_rng(1)))


def _same_contents(a, b) -> bool:
    return len(a) == len(b) and all(_same(a[i], b[i]) for i in range(len(a)))


def test_save_of_a_backed_pool_loads_as_the_pool_class(tmp_path, cartpole_spec, cartpole_data, helpers):
    ram = rm.CircularPool(60, cartpole_spec, share_next_obs=True)
    disk = storage.memmap(rm.CircularPool, tmp_path / "files", 60, cartpole_spec, share_next_obs=True)
    plain = rm.CircularPool(60, cartpole_spec)
    in_shm = storage.shared(rm.CircularPool, 60, cartpole_spec)
    try:
        _fill(cartpole_data[:150], ram, disk)
        _fill(cartpole_data[:150], plain, in_shm)
        for backed, like in ((disk, ram), (in_shm, plain)):
            loaded = rm.CircularPool.load(backed.save(tmp_path / f"{type(backed).__name__}.npz"))
            assert type(loaded) is rm.CircularPool
            assert helpers.contents(loaded, cartpole_spec) == helpers.contents(like, cartpole_spec)
    finally:
        in_shm.close()


# ------------------------------------------------------------------ several writers, one reader
def _chunk_writer(handle, writer: int, chunks: int, size: int, ready, go) -> None:
    """Writes `chunks` chunks whose rows say who wrote them: obs = (writer, chunk, row, id)."""
    pool = storage.attach(handle)
    ready.put(writer)
    go.wait()  # every writer starts at once
    for c in range(chunks):
        rows = np.arange(size, dtype=np.float32)
        ident = writer * 1_000_000 + c * 1_000 + rows
        obs = np.stack([np.full(size, writer, np.float32), np.full(size, c, np.float32), rows, ident], axis=1)
        pool.add_batch(obs, ((writer + c + rows) % 2).astype(np.uint8), ident, obs + 0.5,
                       rows % 2 == 0, np.zeros(size, bool))
    pool.close()


def _whole(batch) -> bool:
    """Every row of the batch is one transition as a writer wrote it, no field from another."""
    obs = batch.obs
    return (np.array_equal(batch.next_obs, obs + 0.5) and np.array_equal(batch.reward, obs[:, 3])
            and np.array_equal(batch.action, ((obs[:, 0] + obs[:, 1] + obs[:, 2]) % 2).astype(np.uint8))
            and np.array_equal(batch.terminated, obs[:, 2] % 2 == 0))


def test_writers_and_a_reader_of_one_shared_pool_see_whole_rows_and_whole_chunks(cartpole_spec):
    """Three processes write chunks into one shared pool that wraps around many times while
    this one samples: every sampled row is whole, the length only grows to the capacity, and
    the pool ends holding whole chunks, each writer's in the order it wrote them."""
    capacity, size, chunks, writers = 1_000, 50, 300, 3
    pool = storage.shared(rm.CircularPool, capacity, cartpole_spec)
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_chunk_writer, args=(pool.handle(), w, chunks, size, ready, go))
             for w in range(writers)]
    try:
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=120)
        go.set()
        rng, lengths, samples = np.random.default_rng(0), [], 0
        while any(p.is_alive() for p in procs) or samples < 20:
            lengths.append(len(pool))
            if lengths[-1]:
                assert _whole(pool.sample(256, rng)), "a sampled row mixes two transitions"
                samples += 1
        for p in procs:
            p.join(timeout=120)
            assert p.exitcode == 0
        assert lengths == sorted(lengths) and lengths[-1] == capacity and samples >= 20
        held = np.array([pool[i].obs for i in range(len(pool))])
        assert len(held) == capacity and (held[:, 2] == np.tile(np.arange(size), capacity // size)).all()
        starts = held[::size]  # whole chunks: each begins at a multiple of `size` in the ring
        assert (held.reshape(-1, size, 4)[:, :, :2] == starts[:, None, :2]).all()
        for w in range(writers):  # each writer's chunks in the order it wrote them
            mine = starts[starts[:, 0] == w, 1]
            assert (np.diff(mine) > 0).all()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        pool.close()
