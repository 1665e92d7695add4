"""rlmemlib.distributed on a real local Ray cluster, started the way lesson 09 starts it.

Lesson 09 runs under strict nbval in the default test run and asserts, on its own cluster,
everything it says about Ray: every process on 127.0.0.1 (this one included), shards keeping
the sampling rule, the 100 KiB inline limit, results over it in the object store and read from
it without a copy, the serialized size against Ray's own serializer. So the tests here that
need a cluster of their own (about 50 s) are in the slow set; they check the same on other
sizes and shapes (three shards, collectors without CPUs, 99/101 KiB). The default run keeps
what needs no cluster: the refusal to start without the loopback setting, what the setting
changes in Ray, and `ray start --address` refusing to join a cluster with it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap
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


# ------------------------------------------------------------------ no cluster needed
def test_start_local_refuses_to_start_without_the_loopback_setting(monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    with pytest.raises(RuntimeError, match="before importing Ray"):
        rd.start_local(num_cpus=1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's default")
def test_the_variable_is_what_turns_loopback_on():
    """Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, at import: on Linux, unset, a node
    takes the machine's own address (found from its route out); "0" gives it 127.0.0.1."""
    code = ("import ray._private.ray_constants as c, ray._private.services as s; "
            "print(c.ENABLE_RAY_CLUSTER, s.get_node_ip_address() if not c.ENABLE_RAY_CLUSTER else '-')")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    unset = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    zero = subprocess.run([sys.executable, "-c", code], env={**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                          capture_output=True, text=True)
    assert unset.stdout.split() == ["True", "-"], unset.stderr[-300:]
    assert zero.stdout.split() == ["False", "127.0.0.1"], zero.stderr[-300:]


def test_a_node_with_the_loopback_variable_refuses_to_join_a_cluster():
    """What lesson 09 says of a real cluster: with the variable, `ray start --address` refuses."""
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable))
    if ray_cli is None:
        pytest.skip("the ray command is not installed next to this Python")
    done = subprocess.run([ray_cli, "start", "--address=127.0.0.1:9"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    assert done.returncode != 0
    assert "Multi-node Ray clusters are not supported" in done.stdout + done.stderr


def test_actor_classes_travel_by_name(tmp_path):
    """Why lesson 09 says to install rlmemlib on every node: Ray's pickler sends the actors'
    classes and the memory factory by module name, and a Python without rlmemlib cannot load them."""
    code = textwrap.dedent("""
        import functools, sys, numpy as np, ray.cloudpickle as cp, rlmemlib as rm
        spec = rm.TransitionSpec((4,), np.float32, (), np.uint8)
        for obj in (rm.distributed.ReplayServer, rm.distributed.Collector):
            sys.stdout.buffer.write(cp.dumps(obj))
            sys.stdout.buffer.write(b"\\n--\\n")
    """)
    made = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert made.returncode == 0, made.stderr[-300:]
    for data in made.stdout.split(b"\n--\n")[:2]:
        assert b"rlmemlib.distributed" in data and len(data) < 500  # a name, not the code
        (tmp_path / "obj.pkl").write_bytes(data)
        bare = subprocess.run([sys.executable, "-S", "-c",  # -S: no site-packages, no rlmemlib
                               f"import pickle; pickle.loads(open({str(tmp_path / 'obj.pkl')!r}, 'rb').read())"],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert "No module named 'rlmemlib'" in bare.stderr, bare.stderr[-300:]


# ------------------------------------------------------------------ on a cluster of their own (slow)
@pytest.mark.slow
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


@pytest.mark.slow
def test_collectors_feed_the_shards(cluster, cartpole_spec):
    Replay, Collector = ray.remote(rd.ReplayServer), ray.remote(rd.Collector)
    shards = [Replay.options(num_cpus=0).remote(functools.partial(rm.CircularPool, 10_000, cartpole_spec))
              for _ in range(2)]
    collectors = [Collector.options(num_cpus=0).remote(seed=k, chunk_size=300, num_envs=8) for k in range(2)]
    client = rd.ShardedReplay(shards, cartpole_spec)
    reports = ray.get([c.run.remote(client, 5) for c in collectors])
    assert sum(r["transitions"] for r in reports) == 3000 and client.sizes() == [1500, 1500]
    batch = client.sample(256, np.random.default_rng(0))
    assert (batch.reward == 1.0).all()  # every row a real CartPole step
    assert batch.obs.flags.writeable   # the learner's own batch, filled from the replies


@pytest.mark.slow
def test_small_results_stay_out_of_the_object_store_large_ones_go_in(cluster):
    @ray.remote(num_cpus=0)
    class Maker:
        def array(self, nbytes):
            return np.ones(nbytes, np.uint8)

    maker = Maker.remote()
    ray.get(maker.array.remote(1))
    time.sleep(0.5)
    base = rd.object_store_used()
    small = [maker.array.remote(99 * 1024) for _ in range(10)]  # references kept
    small_values = ray.get(small)
    time.sleep(0.5)
    small_growth = rd.object_store_used() - base
    large = [maker.array.remote(101 * 1024) for _ in range(10)]
    values = ray.get(large)
    time.sleep(0.5)
    large_growth = rd.object_store_used() - base
    assert rd.in_object_store(values[0]) and not values[0].flags.writeable  # read there, no copy
    assert not rd.in_object_store(small_values[0])  # copied out of its message
    del small, large, values, small_values
    time.sleep(0.5)
    released = rd.object_store_used() - base
    assert small_growth < 64 * 1024, small_growth          # 99 KiB results: inside the messages
    assert large_growth > 10 * 101 * 1024, large_growth    # 101 KiB results: in the store
    assert released < 64 * 1024, released                  # freed once no reference is left


@pytest.mark.slow
def test_the_lesson_counts_what_ray_serializes(cluster, cartpole_spec):
    for n in (1, 256, 4096):
        batch = cartpole_spec.empty_batch(n)
        ours, theirs = rd.serialized_nbytes(batch), rd.ray_serialized_nbytes(batch)
        assert abs(ours - theirs) < 1024, (n, ours, theirs)


@pytest.mark.slow
def test_every_ray_process_stays_on_loopback(cluster):
    # runs last of the cluster's tests in this module: by now the cluster has run every test above
    cluster.look()
    assert cluster.looks >= 3 and len(cluster.processes) >= 5  # this process and Ray's
    assert cluster.foreign == [], cluster.foreign


# ------------------------------------------------------------------ without the variable (slow, isolated)
NETNS_SCRIPT = textwrap.dedent("""
    import json, os, sys
    if sys.argv[1] == "0":
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import psutil, ray
    from rlmemlib import distributed as rd
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    listening = sorted({c.laddr.ip for p in [psutil.Process()] + rd.ray_processes()
                        for c in p.net_connections(kind="inet") if c.status == "LISTEN"})
    print(json.dumps({"node": ray.util.get_node_ip_address(), "listening": listening}))
    ray.shutdown()
""")

NETNS_SETUP = ("ip link set lo up && ip link add v0 type veth peer name v1 && "
               "ip addr add 198.51.100.7/24 dev v0 && ip link set v0 up && ip link set v1 up && "
               "ip route add default via 198.51.100.1 dev v0")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux network namespaces")
@pytest.mark.parametrize("value", ["unset", "0"])
def test_what_ray_listens_on_without_the_variable(tmp_path, value):
    """Lesson 09's claim, checked where nothing can reach it: in a private network namespace
    whose only way out is a cable to nowhere (a veth pair), Ray without the variable gives its
    node that namespace's address and listens on every interface; with "0", on 127.0.0.1."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip")
    probe = subprocess.run(["unshare", "-n", "sh", "-c", NETNS_SETUP], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace with a veth pair here: {probe.stderr.strip()}")
    script = tmp_path / "ray_in_netns.py"
    script.write_text(NETNS_SCRIPT)
    # The tests' offline guard would hide the route; the namespace itself has no way out.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    done = subprocess.run(["unshare", "-n", "sh", "-c", f"{NETNS_SETUP} && exec {sys.executable} {script} {value}"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-500:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    everywhere = {"::", "0.0.0.0"}
    if value == "unset":
        assert found["node"] == "198.51.100.7" and everywhere & set(found["listening"]), found
    else:
        assert found["node"] == "127.0.0.1" and not everywhere & set(found["listening"]), found
        assert all(rd._is_loopback(ip) for ip in found["listening"]), found
