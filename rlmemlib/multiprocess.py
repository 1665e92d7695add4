"""One memory, several processes on one machine: shared memory, a queue, and ``fork``.

The experiments of lesson 09, as functions, so that the processes they start (with
``spawn``, which every platform has) can import them.

Design choices and their memory trade-off:

* :func:`run_shared`: the pool's arrays live in shared memory (:func:`rlmemlib.storage.shared`);
  collector processes write their chunks into its rows in place (under the pool's lock) and
  the learner samples from the same rows. A transition is copied once, from the collector's
  chunk into the pool; the pool's pages exist once however many processes map them: each
  process's RSS counts the pages it touched whole, PSS splits them among the processes, and
  no process's USS holds them while another maps them too.
* :func:`run_queue`: the pool lives in the learner; collectors send their chunks through a
  ``multiprocessing.Queue``. Each chunk is pickled, written to a pipe, read and unpickled
  before ``add_batch`` copies it into the pool; the pool is the learner's own memory.
* What crosses between processes is measured, not computed: each collector reads its own
  ``wchar`` (bytes passed to write system calls, Linux ``/proc/self/io``) before and after
  shipping its chunks, and each process's share of the pool's segments comes from its
  ``/proc/<pid>/smaps`` (Linux; elsewhere these figures are None).
* :func:`after_fork`: a child made by ``fork`` shares its parent's pages until either writes
  one. Reading a Python object writes its reference count, and a garbage collection writes
  the header of every container object it examines, so an object-based memory is copied page
  by page in a child that only reads it; numpy arrays are one object each, whatever their size.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .distributed import Collector
from .spec import TransitionSpec

__all__ = ["ProcessReport", "RunReport", "run_shared", "run_queue", "pickled_nbytes", "after_fork"]


@dataclass
class ProcessReport:
    """One process's memory, measured while every process of the run was alive."""

    role: str    # "learner" or "collector"
    pid: int
    uss: int     # pages only this process maps
    pss: int     # every page, shared ones divided by the number of processes mapping them
    anon: int    # resident anonymous pages
    shmem: int   # resident shared-memory pages
    pool_rss: int | None = None   # pages of the pool's shared-memory segments it maps
    pool_pss: int | None = None   # the same, divided by the number of processes mapping each
    pool_uss: int | None = None   # the same, mapped by this process only


@dataclass
class RunReport:
    """What a multi-process run did and what its processes held."""

    design: str
    transitions: int          # added to the pool by all collectors
    batches: int              # sampled by the learner while the collectors ran
    seconds: float
    pipe_bytes_per_chunk: int | None  # bytes the collectors wrote (write system calls: the
                                      # queue's pipe) while shipping, per chunk; None off Linux
    chunk_nbytes: int          # bytes of one chunk's arrays
    pickled_chunk_nbytes: int  # one chunk pickled as multiprocessing pickles it
    processes: list = field(default_factory=list)

    @property
    def learner(self) -> ProcessReport:
        return next(p for p in self.processes if p.role == "learner")

    @property
    def collectors(self) -> list:
        return [p for p in self.processes if p.role == "collector"]


def _measure(role: str, pid: int, segments=()) -> ProcessReport:
    import psutil

    from .storage import resident

    info = psutil.Process(pid).memory_full_info()
    kinds = resident(pid)
    pool = _segment_pages(pid, segments) if segments else (None, None, None)
    return ProcessReport(role, pid, info.uss, getattr(info, "pss", info.uss), kinds.anon, kinds.shmem,
                         *pool)


def _segment_pages(pid: int, names) -> tuple:
    """(Rss, Pss, Private) bytes of a process's mappings of the named shared-memory segments,
    summed from ``/proc/<pid>/smaps``; Nones where that file does not exist."""
    paths = tuple(f"/{n.lstrip('/')}" for n in names)  # a segment's file: /dev/shm/<name>
    totals, inside = {"Rss": 0, "Pss": 0, "Private": 0}, False
    try:
        with open(f"/proc/{pid}/smaps") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None, None, None
    for line in lines:
        key, _, value = line.partition(":")
        if " " in key:  # a mapping's first line: addresses, permissions, offset, device, inode, path
            fields = line.split(maxsplit=5)
            inside = len(fields) == 6 and fields[5].removesuffix(" (deleted)").endswith(paths)
        elif inside and key in ("Rss", "Pss"):
            totals[key] += int(value.split()[0]) * 1024  # reported in kB
        elif inside and key in ("Private_Clean", "Private_Dirty"):
            totals["Private"] += int(value.split()[0]) * 1024
    return totals["Rss"], totals["Pss"], totals["Private"]


def _written() -> int | None:
    """Bytes this process has passed to write system calls so far (``wchar``), or None."""
    try:
        with open("/proc/self/io") as handle:
            text = handle.read()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("wchar:")), None)


def _delta(before, after):
    return None if before is None or after is None else after - before


def pickled_nbytes(obj) -> int:
    """Bytes ``multiprocessing`` writes to a pipe for ``obj`` (its pickler, its protocol)."""
    from multiprocessing.reduction import ForkingPickler

    return len(ForkingPickler.dumps(obj))


# ====================================================================== collector processes
def _collect_shared(handle, seed: int, chunks: int, chunk_size: int, num_envs: int, done, hold) -> None:
    from .storage import attach

    pool = attach(handle)
    collector = Collector(seed=seed, chunk_size=chunk_size, num_envs=num_envs)
    before = _written()
    for _ in range(chunks):
        pool.add_batch(*collector.chunk())  # rows written in place, in the pages every process maps
    done.put((os.getpid(), _delta(before, _written())))
    hold.wait()  # stay alive until the learner has measured every process
    pool.close()


def _collect_queue(queue, seed: int, chunks: int, chunk_size: int, num_envs: int, done, hold) -> None:
    collector = Collector(seed=seed, chunk_size=chunk_size, num_envs=num_envs)
    before = _written()
    for _ in range(chunks):
        queue.put(tuple(collector.chunk()))  # pickled, then written to a pipe by a feeder thread
    queue.put(None)
    queue.close()
    queue.join_thread()  # the feeder thread has written everything to the pipe
    done.put((os.getpid(), _delta(before, _written())))
    hold.wait()


def _start(target, first_arg, collectors, chunks, chunk_size, num_envs, seed, ctx):
    done, hold = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=target, args=(first_arg, seed + k, chunks, chunk_size, num_envs, done, hold))
             for k in range(collectors)]
    for p in procs:
        p.start()
    return procs, done, hold


def _finish(report: RunReport, procs, hold, segments=()) -> RunReport:
    report.processes = [_measure("learner", os.getpid(), segments)] + \
        [_measure("collector", p.pid, segments) for p in procs]
    hold.set()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a collector process ended with exit code {p.exitcode}")
    return report


def _per_chunk(reports: list, chunks: int) -> int | None:
    """Bytes the collectors wrote while shipping, per chunk, from their (pid, bytes) reports."""
    written = [w for _, w in reports]
    if not written or any(w is None for w in written):
        return None
    return round(sum(written) / (len(written) * chunks))


def _stop(procs, hold) -> None:
    """After a failure: let the collectors go, and end those still running."""
    hold.set()
    for p in procs:
        p.join(timeout=5)
        if p.exitcode is None:
            p.terminate()
            p.join()


def _check_room(capacity: int, collectors: int, chunks: int, chunk_size: int) -> int:
    total = collectors * chunks * chunk_size
    if capacity < total:
        raise ValueError(f"capacity is {capacity:,}, expected at least the {total:,} transitions "
                         "of the run (collectors * chunks * chunk_size): the learner counts chunks "
                         "by the pool's length")
    return total


def run_shared(capacity: int, spec: TransitionSpec, collectors: int = 2, chunks: int = 100,
               chunk_size: int = 1000, num_envs: int = 64, batch_size: int = 256, seed: int = 0):
    """Collectors write into a pool in shared memory; this process samples from it meanwhile,
    one batch for each chunk stored.

    Returns the pool (still open: ``pool.close()`` frees it) and a :class:`RunReport`. If a
    collector fails, its error is raised and the pool's segments are freed.
    """
    from .memory import CircularPool
    from .storage import shared

    total = _check_room(capacity, collectors, chunks, chunk_size)
    ctx = multiprocessing.get_context("spawn")
    pool = shared(CircularPool, capacity, spec, context=ctx)
    segments = pool.handle().segments.values()
    rng, start = np.random.default_rng(seed), time.perf_counter()
    procs, done, hold = _start(_collect_shared, pool.handle(), collectors, chunks, chunk_size,
                               num_envs, seed, ctx)
    try:
        batches = _sample_while_filling(pool, procs, collectors * chunks, chunk_size, batch_size, rng)
        reports = [_get(done, procs) for _ in procs]
        report = RunReport("shared memory", total, batches, time.perf_counter() - start,
                           _per_chunk(reports, chunks), _chunk_nbytes(spec, chunk_size),
                           _pickled_chunk_nbytes(spec, chunk_size))
        return pool, _finish(report, procs, hold, segments)
    except BaseException:
        _stop(procs, hold)
        pool.close()
        raise


def _sample_while_filling(pool, procs, chunks_in_all: int, chunk_size: int, batch_size: int, rng) -> int:
    """Sample one batch for each chunk that arrives in ``pool``; returns the batches sampled."""
    batches = 0
    while batches < chunks_in_all:
        if batches < len(pool) // chunk_size:  # a chunk arrived that has no batch yet
            pool.sample(batch_size, rng)
            batches += 1
        else:
            time.sleep(0.0005)
            _check_alive(procs)
    return batches


def run_queue(capacity: int, spec: TransitionSpec, collectors: int = 2, chunks: int = 100,
              chunk_size: int = 1000, num_envs: int = 64, batch_size: int = 256, seed: int = 0):
    """Collectors send chunks through a queue; this process adds each to its pool and samples
    one batch for it.

    Returns the pool and a :class:`RunReport`.
    """
    from .memory import CircularPool

    _check_room(capacity, collectors, chunks, chunk_size)
    ctx = multiprocessing.get_context("spawn")
    pool = CircularPool(capacity, spec)
    queue = ctx.Queue(maxsize=4 * collectors)
    rng, start = np.random.default_rng(seed), time.perf_counter()
    procs, done, hold = _start(_collect_queue, queue, collectors, chunks, chunk_size, num_envs, seed, ctx)
    try:
        ended, batches = 0, 0
        while ended < collectors:
            chunk = _get(queue, procs)
            if chunk is None:
                ended += 1
                continue
            pool.add_batch(*chunk)
            pool.sample(batch_size, rng)
            batches += 1
        reports = [_get(done, procs) for _ in procs]  # each collector, once its pipe is flushed
        report = RunReport("queue", len(procs) * chunks * chunk_size, batches, time.perf_counter() - start,
                           _per_chunk(reports, chunks), _chunk_nbytes(spec, chunk_size),
                           _pickled_chunk_nbytes(spec, chunk_size))
        return pool, _finish(report, procs, hold)
    except BaseException:
        _stop(procs, hold)
        raise


def _check_alive(procs) -> None:
    for p in procs:
        if p.exitcode not in (None, 0):
            raise RuntimeError(f"a collector process ended with exit code {p.exitcode}")


def _get(queue, procs):
    """The next item of ``queue``, checking now and then that the collectors are alive."""
    import queue as queue_module

    while True:
        try:
            return queue.get(timeout=1.0)
        except queue_module.Empty:
            _check_alive(procs)


def _chunk_nbytes(spec: TransitionSpec, chunk_size: int) -> int:
    return spec.empty_batch(chunk_size).nbytes


def _pickled_chunk_nbytes(spec: TransitionSpec, chunk_size: int) -> int:
    return pickled_nbytes(tuple(spec.empty_batch(chunk_size)))


# ====================================================================== fork and copy-on-write
def after_fork(memory, work: str = "read", freeze: bool = False) -> int:
    """Bytes a ``fork``ed child copies from its parent while it does ``work`` on ``memory``.

    ``work`` is ``"nothing"``, ``"read"`` (every transition, ``mem[i]`` for each ``i``) or
    ``"gc"`` (one full ``gc.collect()``). ``freeze=True`` calls ``gc.freeze()`` in the parent
    before the fork: the objects alive then are left out of every later collection. The figure
    is the growth of the child's USS (pages only it maps) during the work. Linux and macOS.
    """
    if work not in ("nothing", "read", "gc"):
        raise ValueError(f"work must be 'nothing', 'read' or 'gc', got {work!r}")
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    if freeze:
        gc.freeze()
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns about fork in a threaded process;
            warnings.simplefilter("ignore", DeprecationWarning)  # the child runs only _child
            proc = ctx.Process(target=_child, args=(memory, work, child_end))
            proc.start()
    finally:
        if freeze:
            gc.unfreeze()
    before, after = parent_end.recv()
    proc.join()
    return after - before


def _child(memory, work: str, conn) -> None:
    import psutil

    me = psutil.Process()
    gc.disable()  # only the collection we ask for, none triggered by our own allocations
    before = me.memory_full_info().uss
    if work == "read":
        for i in range(len(memory)):
            for value in memory[i]:  # as sampling does: each field of each transition
                pass
    elif work == "gc":
        gc.collect()
    after = me.memory_full_info().uss
    conn.send((before, after))
