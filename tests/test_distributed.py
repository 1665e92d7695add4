"""rlmemlib.distributed without a cluster: the replay server, rows by given indices, shard
routing and the sampling rule across shards (Ray's calls replaced by direct ones), collectors,
and the measuring helpers. tests/test_ray_loopback.py runs the same on a real local cluster."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import rlmemlib as rm
from rlmemlib import distributed as rd

ROOT = Path(__file__).resolve().parent.parent


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _chunk(data) -> rm.Batch:
    spec = rd.Collector().spec
    out = spec.empty_batch(len(data))
    for k, t in enumerate(data):
        for dest, value in zip(out, t):
            dest[k] = value
    return out


# ------------------------------------------------------------------ Ray replaced by direct calls
class _Call:
    def __init__(self, method):
        self.method = method

    def remote(self, *args, **kwargs):
        return self.method(*args, **kwargs)  # the "reference" is the value itself


class _Handle:
    """Stands for a Ray actor handle of a ReplayServer: handle.method.remote(...)."""

    def __init__(self, server):
        self.server = server

    def __getattr__(self, name):
        return _Call(getattr(self.server, name))


class _FakeRay:
    @staticmethod
    def get(refs):
        return refs

    @staticmethod
    def wait(refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]


@pytest.fixture
def no_cluster(monkeypatch):
    monkeypatch.setattr(rd, "_ray", lambda: _FakeRay)


def _shards(k, capacity, spec):
    servers = [rd.ReplayServer(lambda: rm.CircularPool(capacity, spec)) for _ in range(k)]
    return servers, [_Handle(s) for s in servers]


# ------------------------------------------------------------------ rows at given indices
@pytest.mark.parametrize("kind", ["ListMemory", "CircularPool", "CircularPool-shared", "RecyclingMemory"])
def test_given_indices_give_exactly_those_rows_from_every_memory(kind, cartpole_spec, cartpole_data, helpers):
    mem = helpers.kinds[kind](300, cartpole_spec)
    for t in cartpole_data[:700]:
        mem.add(*t)
    idx = np.array([0, 299, 5, 5, 150, 298])
    rows = helpers.batch_rows(mem.sample(len(idx), rd.GivenIndices(idx)), cartpole_spec)
    assert rows == [helpers.canon(mem[int(i)], cartpole_spec) for i in idx]


def test_given_indices_refuse_a_draw_the_rule_does_not_make():
    rng = rd.GivenIndices([1, 2])
    with pytest.raises(ValueError, match="sampling rule"):
        rng.integers(0, 10, size=3)
    with pytest.raises(ValueError, match="sampling rule"):
        rng.integers(1, 10, size=2)
    with pytest.raises(IndexError, match=r"\[0, 2\)"):
        rng.integers(0, 2, size=2)
    with pytest.raises(ValueError, match="one-dimensional"):
        rd.GivenIndices([[1]])


def test_locate_maps_logical_indices_to_shards_in_order():
    shard, local = rd.locate([0, 1, 2, 3, 4, 5, 6], [2, 0, 4, 1])
    assert shard.tolist() == [0, 0, 2, 2, 2, 2, 3] and local.tolist() == [0, 1, 0, 1, 2, 3, 0]
    with pytest.raises(IndexError, match=r"\[0, 7\)"):
        rd.locate([7], [2, 0, 4, 1])
    with pytest.raises(IndexError):
        rd.locate([-1], [3])


# ------------------------------------------------------------------ the replay server
def test_replay_server_adds_and_samples_like_its_memory(cartpole_spec, cartpole_data):
    server = rd.ReplayServer(lambda: rm.CircularPool(500, cartpole_spec))
    local = rm.CircularPool(500, cartpole_spec)
    for start in range(0, 1200, 300):
        server.add_batch(*_chunk(cartpole_data[start:start + 300]))
        for t in cartpole_data[start:start + 300]:
            local.add(*t)
    batch, rng = server.sample(64, np.random.default_rng(5))
    expected_rng = np.random.default_rng(5)
    assert _same(batch, local.sample(64, expected_rng))
    assert rng.bit_generator.state == expected_rng.bit_generator.state  # came back advanced
    stats = server.stats()
    assert stats["received"] == 1200 and stats["adds"] == 4 and stats["len"] == 500


def test_reset_replaces_the_memory(cartpole_spec, cartpole_data):
    server = rd.ReplayServer(lambda: rm.CircularPool(50, cartpole_spec))
    server.add_batch(*_chunk(cartpole_data[:30]))
    assert server.reset(lambda: rm.ListMemory(None, cartpole_spec)) == 0
    assert isinstance(server.memory, rm.ListMemory) and server.stats()["received"] == 0


def test_a_refused_chunk_changes_nothing_in_the_server(cartpole_spec, cartpole_data, helpers):
    server = rd.ReplayServer(lambda: rm.CircularPool(100, cartpole_spec))
    server.add_batch(*_chunk(cartpole_data[:50]))
    before = helpers.contents(server.memory, cartpole_spec)
    bad = _chunk(cartpole_data[50:60])
    bad.obs = bad.obs[:, :3]
    with pytest.raises(ValueError, match="obs"):
        server.add_batch(*bad)
    assert helpers.contents(server.memory, cartpole_spec) == before


# ------------------------------------------------------------------ shards
@pytest.mark.parametrize("k", [1, 2, 3])
def test_round_robin_shards_hold_the_newest_transitions_and_sample_by_the_rule(no_cluster, k, cartpole_spec, cartpole_data, helpers):
    servers, handles = _shards(k, 100, cartpole_spec)
    client = rd.ShardedReplay(handles, cartpole_spec)
    for start in range(0, 1000, 70):  # chunks that do not divide evenly among the shards
        client.add_batch(*_chunk(cartpole_data[start:min(start + 70, 1000)]))
    assert client.sizes() == [100] * k
    held = {helpers.canon(t, cartpole_spec) for s in servers for t in s.memory}
    assert held == {helpers.canon(t, cartpole_spec) for t in cartpole_data[1000 - 100 * k:1000]}
    # the batch one memory holding the shards' transitions, shard after shard, returns
    one = rm.ListMemory(None, cartpole_spec)
    for s in servers:
        for t in s.memory:
            one.add(*t)
    got = client.sample(256, np.random.default_rng(7))
    assert _same(got, one.sample(256, np.random.default_rng(7)))


def test_shards_of_different_sizes_keep_the_rule(no_cluster, cartpole_spec, cartpole_data):
    servers, handles = _shards(3, 1000, cartpole_spec)
    servers[0].add_batch(*_chunk(cartpole_data[:10]))
    servers[2].add_batch(*_chunk(cartpole_data[10:400]))  # shard 1 stays empty
    client = rd.ShardedReplay(handles, cartpole_spec)
    one = rm.ListMemory(None, cartpole_spec)
    for t in cartpole_data[:400]:
        one.add(*t)
    assert _same(client.sample(500, np.random.default_rng(1)), one.sample(500, np.random.default_rng(1)))


def test_sharded_sample_refuses_bad_calls(no_cluster, cartpole_spec):
    _, handles = _shards(2, 10, cartpole_spec)
    client = rd.ShardedReplay(handles, cartpole_spec)
    with pytest.raises(ValueError, match="empty"):
        client.sample(4, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        client.sample(4, 0)
    with pytest.raises(ValueError, match="at least one"):
        rd.ShardedReplay([], cartpole_spec)


def test_collector_run_bounds_the_calls_in_flight(monkeypatch, cartpole_spec):
    """Collector.run keeps at most `max_in_flight` chunks unanswered: a call is answered only
    when run waits for it, and run never holds more than two chunks' calls (one per shard)."""
    unanswered, most = [], [0]

    class Ray:
        @staticmethod
        def wait(refs, num_returns=1):
            for ref in refs[:num_returns]:
                unanswered.remove(ref)
            return refs[:num_returns], refs[num_returns:]

        @staticmethod
        def get(refs):
            for ref in refs:
                if ref in unanswered:
                    unanswered.remove(ref)
            return refs

    class Sent(rd.ShardedReplay):
        def send(self, chunk):
            refs = [object() for _ in range(self.shards)]  # one call per shard, answered later
            unanswered.extend(refs)
            most[0] = max(most[0], len(unanswered))
            self.sent += len(chunk)
            return refs

    monkeypatch.setattr(rd, "_ray", lambda: Ray)
    report = rd.Collector(seed=3, chunk_size=100).run(Sent([None, None], cartpole_spec), chunks=9)
    assert report["transitions"] == 900 and not unanswered
    assert most[0] == 3 * 2  # two chunks unanswered, and the one just sent


def test_picking_a_shard_at_random_over_samples_the_small_one():
    """Self-check 4 of lesson 09: shards of 10,000 and 1,000 transitions, each batch from one
    shard picked at random: a transition of the small shard comes up ten times as often; the
    course's rule (indices over all 11,000) draws every transition equally."""
    rng, sizes, draws = np.random.default_rng(0), np.array([10_000, 1_000]), 2_000
    per_shard = np.zeros(2)
    for _ in range(draws):
        per_shard[rng.integers(0, 2)] += 256
    random_shard = per_shard / sizes
    shard, _ = rd.locate(rng.integers(0, sizes.sum(), size=draws * 256), sizes)
    by_rule = np.bincount(shard, minlength=2) / sizes
    assert 9 < random_shard[1] / random_shard[0] < 11
    assert 0.9 < by_rule[1] / by_rule[0] < 1.1


# ------------------------------------------------------------------ collectors
@pytest.mark.parametrize("num_envs", [1, 16])
def test_collector_chunks_are_real_steps_only(num_envs):
    collector = rd.Collector(seed=0, chunk_size=300, num_envs=num_envs)
    chunks = [collector.chunk() for _ in range(5)]
    reward = np.concatenate([c.reward for c in chunks])
    ends = np.concatenate([c.terminated | c.truncated for c in chunks])
    assert (reward == 1.0).all()  # an autoreset step would pay 0.0
    assert ends.sum() >= 20  # about one episode end in 22 steps
    same = rd.Collector(seed=0, chunk_size=300, num_envs=num_envs).chunk()
    assert _same(same, chunks[0])  # seeded
    if num_envs == 1:  # each next_obs is the following obs, except at episode ends
        flat = [np.concatenate([getattr(c, f) for c in chunks]) for f in ("obs", "next_obs")]
        cont = ~ends[:-1]
        assert np.array_equal(flat[1][:-1][cont], flat[0][1:][cont])


def test_collector_matches_gymnasium_vector_stepping():
    """The vector collector's transitions are the vector env's steps minus the autoreset steps."""
    import gymnasium as gym

    collector = rd.Collector(seed=4, chunk_size=200, num_envs=4)
    got = collector.chunk()
    env = gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="vector_entry_point")
    env.action_space.seed(4)
    obs, _ = env.reset(seed=4)
    resetting, rows = np.zeros(4, bool), []
    while sum(len(r[0]) for r in rows) < 200:
        action = env.action_space.sample()
        nxt, reward, term, trunc, _ = env.step(action)
        keep = ~resetting
        rows.append([a[keep] for a in (obs, action, reward, nxt, term, trunc)])
        resetting, obs = term | trunc, nxt
    expected = [np.concatenate([r[f] for r in rows])[:200] for f in range(6)]
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))


# ------------------------------------------------------------------ measuring helpers
def test_serialized_nbytes_counts_array_bytes_once():
    batch = rd.Collector().spec.empty_batch(256)
    n = rd.serialized_nbytes(batch)
    assert batch.nbytes < n < batch.nbytes + 2048


def test_foreign_connections_sees_a_socket_off_loopback():
    import socket

    import psutil

    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    loop = socket.socket()
    loop.bind(("127.0.0.1", 0))
    loop.listen()
    try:
        found = rd.foreign_connections([psutil.Process()])
        ports = {entry[2][1] for entry in found}
        assert listener.getsockname()[1] in ports  # every interface counts as foreign
        assert loop.getsockname()[1] not in ports
    finally:
        listener.close()
        loop.close()


def test_loopback_rules():
    assert rd._is_loopback("127.0.0.1") and rd._is_loopback("::1") and rd._is_loopback("::ffff:127.0.0.1")
    assert not rd._is_loopback("0.0.0.0") and not rd._is_loopback("::") and not rd._is_loopback("192.0.2.2")


def test_process_memory_lists_this_process_first():
    rows = rd.process_memory([])
    assert rows[0].pid == __import__("os").getpid() and rows[0].uss > 0 and rows[0].pss >= rows[0].uss / 2


def test_importing_rlmemlib_does_not_import_ray(tmp_path):
    import subprocess
    import sys

    code = "import sys, rlmemlib, rlmemlib.distributed, rlmemlib.storage; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "False", out.stderr


def test_environment_yml_installs_the_same_ray_as_pyproject():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    import yaml

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    ray_pip = [d for d in extra if re.match(r"ray\b", d)]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = [i for i in env["dependencies"] if isinstance(i, dict)][0]["pip"]
    assert len(ray_pip) == 1 and ray_pip[0] in pip, (ray_pip, pip)


def test_jsonschema_does_not_build_parsers_at_import(tmp_path):
    """Why pyproject bounds jsonschema below 4.24: Ray imports it in every one of its processes,
    and from 4.24 on it imports rfc3987_syntax, which builds its grammars at import (seconds)."""
    import subprocess
    import sys

    code = "import sys, jsonschema; print('rfc3987_syntax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "False", out.stderr
