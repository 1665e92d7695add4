"""rlmemlib.distributed on a real local Ray cluster, started the way lesson 09 starts it: every
Ray process on 127.0.0.1 only, shards keeping the sampling rule, the object store and inline
limits the lesson states, and Ray's serialized size against the one the lesson computes."""

from __future__ import annotations

import functools
import os
import time

import numpy as np
import pytest

import rlmemlib as rm
from rlmemlib import distributed as rd

# Ray reads these once, when it is first imported: set them before (this test process keeps them).
os.environ.update(rd.LOOPBACK_ENV)
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    rd.start_local(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    watch = rd.ConnectionWatch(interval=0.2).start()
    yield watch
    watch.stop()
    ray.shutdown()


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_start_local_refuses_to_start_without_the_loopback_setting(monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    with pytest.raises(RuntimeError, match="before importing Ray"):
        rd.start_local(num_cpus=1)


def test_sharded_replay_on_ray_samples_as_one_memory_in_shard_order(cluster, cartpole_spec, helpers):
    Replay = ray.remote(rd.ReplayServer)
    shards = [Replay.options(num_cpus=0).remote(functools.partial(rm.CircularPool, 500, cartpole_spec))
              for _ in range(3)]
    client = rd.ShardedReplay(shards, cartpole_spec)
    single = rm.CircularPool(1500, cartpole_spec)
    feeder = rd.Collector(seed=11, chunk_size=250)
    for _ in range(9):
        chunk = feeder.chunk()
        client.add_batch(*chunk)
        single.add_batch(*chunk)
    parts = [ray.get(s.rows.remote(np.arange(n))) for s, n in zip(shards, client.sizes())]
    in_order = rm.ListMemory(None, cartpole_spec)
    for part in parts:
        for row in zip(*part):
            in_order.add(*row)
    assert {helpers.canon(t, cartpole_spec) for t in in_order} == \
        {helpers.canon(t, cartpole_spec) for t in single}  # the newest 1,500, like one memory
    assert _same(client.sample(300, np.random.default_rng(2)), in_order.sample(300, np.random.default_rng(2)))
    # one shard: the learner's generator travels to the actor and back, and the batch is the memory's
    batch, rng = ray.get(shards[0].sample.remote(64, np.random.default_rng(3)))
    own = rm.CircularPool(500, cartpole_spec)
    own.add_batch(*parts[0])
    expected = np.random.default_rng(3)
    assert _same(batch, own.sample(64, expected)) and rng.bit_generator.state == expected.bit_generator.state


def test_collectors_feed_the_shards(cluster, cartpole_spec):
    Replay, Collector = ray.remote(rd.ReplayServer), ray.remote(rd.Collector)
    shards = [Replay.options(num_cpus=0).remote(functools.partial(rm.CircularPool, 10_000, cartpole_spec))
              for _ in range(2)]
    collectors = [Collector.options(num_cpus=0).remote(seed=k, chunk_size=300, num_envs=8) for k in range(2)]
    client = rd.ShardedReplay(shards, cartpole_spec)
    reports = ray.get([c.run.remote(client, 5) for c in collectors])
    assert sum(r["transitions"] for r in reports) == 3000 and client.sizes() == [1500, 1500]
    batch = client.sample(256, np.random.default_rng(0))
    assert (batch.reward == 1.0).all() and not batch.obs.flags.writeable is None


def test_small_results_stay_out_of_the_object_store_large_ones_go_in(cluster):
    @ray.remote(num_cpus=0)
    class Maker:
        def array(self, nbytes):
            return np.ones(nbytes, np.uint8)

    maker = Maker.remote()
    ray.get(maker.array.remote(1))
    time.sleep(1.5)
    base = rd.object_store_used()
    small = [maker.array.remote(90 * 1024) for _ in range(10)]  # references kept
    ray.get(small)
    time.sleep(1.5)
    small_growth = rd.object_store_used() - base
    large = [maker.array.remote(110 * 1024) for _ in range(10)]
    values = ray.get(large)
    time.sleep(1.5)
    large_growth = rd.object_store_used() - base
    del small, large
    time.sleep(1.5)
    released = rd.object_store_used() - base
    assert small_growth < 64 * 1024, small_growth          # 90 KiB results: inside the messages
    assert large_growth > 10 * 100 * 1024, large_growth    # 110 KiB results: in the store
    assert released < 64 * 1024, released                  # freed once no reference is left
    assert not values[0].flags.writeable                   # read from the store without a copy


def test_the_lesson_counts_what_ray_serializes(cluster, cartpole_spec):
    from ray._private.worker import global_worker

    batch = cartpole_spec.empty_batch(256)
    ours = rd.serialized_nbytes(batch)
    theirs = global_worker.get_serialization_context().serialize(batch).total_bytes
    assert abs(ours - theirs) < 1024, (ours, theirs)


def test_every_ray_process_stays_on_loopback(cluster):
    # runs last in this module: by now the cluster has run every test above
    cluster.look()
    assert cluster.looks >= 3 and len(cluster.processes) >= 4
    assert cluster.foreign == [], cluster.foreign


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="Linux's default")
def test_the_variable_is_what_turns_loopback_on():
    """Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, at import: on Linux, unset, a cluster
    takes the machine's own address (its route to the outside); "0" keeps it on 127.0.0.1."""
    import subprocess
    import sys

    code = ("import ray._private.ray_constants as c, ray._private.services as s; "
            "print(c.ENABLE_RAY_CLUSTER, s.get_node_ip_address() if not c.ENABLE_RAY_CLUSTER else '-')")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    unset = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    zero = subprocess.run([sys.executable, "-c", code], env={**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                          capture_output=True, text=True)
    assert unset.stdout.split() == ["True", "-"], unset.stderr[-300:]
    assert zero.stdout.split() == ["False", "127.0.0.1"], zero.stderr[-300:]
