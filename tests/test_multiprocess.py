"""rlmemlib.multiprocess: what lesson 09 measures of several processes around one memory, at
other sizes than the lesson's: bytes written per chunk in each design, where the pool's pages
are counted (RSS, PSS, USS), a failed collector cleaned up after, and what a forked child
copies of a list memory and of a numpy pool."""

from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest

import rlmemlib as rm
from rlmemlib import multiprocess as mp
from rlmemlib import storage

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")

RUN = dict(collectors=2, chunks=12, chunk_size=1_000, num_envs=8)


@pytest.fixture(scope="module")
def runs(cartpole_spec):
    shared_pool, shared_run = mp.run_shared(50_000, cartpole_spec, **RUN)
    held = len(shared_pool) * shared_pool.nbytes // shared_pool.capacity
    shared_len = len(shared_pool)
    shared_pool.close()
    queue_pool, queue_run = mp.run_queue(50_000, cartpole_spec, **RUN)
    return shared_run, queue_run, held, shared_len, len(queue_pool)


def test_every_transition_arrives_in_both_designs(runs):
    shared_run, queue_run, _, shared_len, queue_len = runs
    assert shared_len == queue_len == 2 * 12 * 1_000
    assert shared_run.batches == queue_run.batches == 24 and shared_run.transitions == queue_run.transitions


def test_only_the_queue_writes_the_chunks_to_a_pipe(runs):
    shared_run, queue_run, *_ = runs
    assert shared_run.pipe_bytes_per_chunk == 0
    # the pickled chunk and the pipe's 4-byte length header, give or take the end-of-run marker
    assert 0 <= queue_run.pipe_bytes_per_chunk - queue_run.pickled_chunk_nbytes - 4 < 16
    assert queue_run.chunk_nbytes < queue_run.pickled_chunk_nbytes < 1.02 * queue_run.chunk_nbytes


def test_the_shared_pool_counted_once_by_pss_in_no_uss_and_more_than_once_by_rss(runs):
    shared_run, queue_run, held, *_ = runs
    procs = shared_run.processes
    assert abs(sum(p.pool_pss for p in procs) - held) < 0.1 * held
    assert sum(p.pool_rss for p in procs) > 1.5 * held
    assert sum(p.pool_uss for p in procs) < 0.1 * held
    assert all(p.pool_rss is None for p in queue_run.processes)  # no segments to look at


def test_segment_pages_reads_only_the_named_segments():
    from multiprocessing import shared_memory

    seg = shared_memory.SharedMemory(create=True, size=8 * 2**20)
    other = shared_memory.SharedMemory(create=True, size=8 * 2**20)
    try:
        np.ndarray((8 * 2**20,), np.uint8, buffer=seg.buf)[: 4 * 2**20] = 1  # half of it touched
        np.ndarray((8 * 2**20,), np.uint8, buffer=other.buf)[:] = 1
        rss, pss, private = mp._segment_pages(os.getpid(), [seg.name])
        assert 4 * 2**20 <= rss < 4.5 * 2**20 and pss == rss == private  # mapped by this process only
    finally:
        for s in (seg, other):
            s.close()
            s.unlink()


def test_a_failed_collector_raises_and_frees_the_pool(cartpole_spec, monkeypatch):
    from multiprocessing import shared_memory

    names = []
    real_shared = storage.shared

    def keep(*args, **kwargs):
        pool = real_shared(*args, **kwargs)
        names.extend(s.name for s in pool._segments.values())
        return pool

    monkeypatch.setattr(storage, "shared", keep)
    with pytest.raises(RuntimeError, match="exit code"):  # num_envs=0: the collector cannot start
        mp.run_shared(10_000, cartpole_spec, collectors=1, chunks=2, chunk_size=100, num_envs=0)
    assert len(names) == 6  # the cursor and five arrays
    for name in names:  # every segment unlinked
        with pytest.raises(FileNotFoundError):
            shared_memory.SharedMemory(name=name)


def test_the_run_refuses_a_pool_too_small_for_it(cartpole_spec):
    with pytest.raises(ValueError, match="capacity is 100"):
        mp.run_queue(100, cartpole_spec, collectors=1, chunks=2, chunk_size=100)


# ------------------------------------------------------------------ fork
@pytest.fixture(scope="module")
def memories(cartpole_spec):
    data = rm.cartpole_transitions(2_000, seed=1)
    gc.collect()
    before = storage.resident().anon
    listed = rm.ListMemory(None, cartpole_spec)
    for k in range(40_000):
        obs, action, reward, next_obs, terminated, truncated = data[k % len(data)]
        listed.add(obs.copy(), action, reward, next_obs.copy(), terminated, truncated)
    list_bytes = storage.resident().anon - before
    pooled = rm.CircularPool(40_000, cartpole_spec)
    for t in listed:
        pooled.add(*t)
    return listed, pooled, list_bytes


def test_a_forked_reader_copies_most_of_a_list_memory_and_little_of_a_pool(memories):
    listed, pooled, list_bytes = memories
    read_list = mp.after_fork(listed, "read")
    assert read_list > 0.5 * list_bytes
    assert mp.after_fork(listed, "read", freeze=True) > 0.5 * list_bytes  # freeze leaves refcounts
    assert mp.after_fork(pooled, "read") < 0.05 * read_list


def test_gc_freeze_keeps_a_forked_collection_off_the_parents_objects(memories):
    listed, _, list_bytes = memories
    collected = mp.after_fork(listed, "gc")
    assert collected > 0.5 * list_bytes
    assert mp.after_fork(listed, "gc", freeze=True) < 0.25 * collected


def test_after_fork_refuses_unknown_work(memories):
    with pytest.raises(ValueError, match="work must be"):
        mp.after_fork(memories[1], "write")
