"""Replay on Ray: a replay actor holding an rlmemlib memory, collectors, shards, measurements.

Ray is imported only when a function here needs it, so ``import rlmemlib`` never needs Ray.
The classes are plain Python: ``ray.remote(ReplayServer)`` turns one into an actor, and the
same class runs in-process in the tests.

Design choices and their memory trade-off:

* The memory lives in one process, the replay actor (:class:`ReplayServer`). Collectors send it
  chunks of transitions (``add_batch``), the learner asks it for batches. Every chunk and every
  sampled batch is serialized and copied between processes: small ones (under Ray's inline
  limit, 100 KiB by default) inside the call's message, larger ones through Ray's object store
  (shared memory on the node), which holds them until every reference to them is dropped.
* Chunks, not single transitions: a remote call costs about a millisecond on one machine
  whatever it carries, so a chunk of a few hundred transitions pays it once for all of them.
  A collector keeps at most ``max_in_flight`` chunks unanswered, so a slow replay actor slows
  the collectors down instead of filling the object store.
* Shards (:class:`ShardedReplay`): K replay actors, each with a memory of its own. Adds go
  round robin, transition by transition, so the shards fill evenly. Sampling keeps the
  memories' rule: the learner draws ``rng.integers(0, total, size=batch_size)`` over the
  shards' transitions taken one shard after another (shard 0's oldest first), and each shard
  returns its rows. The batch is exactly the one a single memory holding the same transitions
  in that order returns for the same generator state. What sharding changes: the order those
  indices refer to, and eviction (each shard drops its own oldest transition).
* The rows a shard returns come from the memory's own ``sample``, handed a generator that
  draws the indices the learner chose (:class:`GivenIndices`): any rlmemlib memory can be a
  shard, and its vectorized sampling path is used.

>>> import numpy as np, rlmemlib as rm
>>> spec = rm.TransitionSpec((2,), np.float32, (), np.uint8)
>>> server = ReplayServer(lambda: rm.CircularPool(8, spec))
>>> obs = np.arange(10, dtype=np.float32).reshape(5, 2)
>>> server.add_batch(obs, np.ones(5, np.uint8), np.ones(5, np.float32), obs + 1,
...                  np.zeros(5, bool), np.zeros(5, bool))
5
>>> server.rows(np.array([4, 0])).obs
array([[8., 9.],
       [0., 1.]], dtype=float32)
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from .spec import Batch, TransitionSpec, check_batch_size

__all__ = ["start_local", "ReplayServer", "Collector", "ShardedReplay", "GivenIndices", "locate", "LOOPBACK_ENV",
           "ray_processes", "process_memory", "object_store_used", "serialized_nbytes",
           "ray_serialized_nbytes", "in_object_store", "ConnectionWatch", "foreign_connections"]

FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")

# Set before Ray is imported. On Linux, without the first one a local cluster takes the
# machine's network address for its processes and its servers listen on every interface of
# the machine; with it, they use and listen on 127.0.0.1 only. The second one stops Ray's
# usage statistics.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def start_local(**options):
    """``ray.init(**options)`` for a cluster on this machine only; returns Ray's context.

    The variables of :data:`LOOPBACK_ENV` must be set before Ray is imported (Ray reads them
    once, at import; the lesson sets them itself); this refuses to start otherwise. Ray's own
    defaults are changed only where ``options`` says. If start-up times out (Ray waits 30 s
    for its raylet to register, which a busy machine can exceed), Ray is shut down and
    started once more.
    """
    wrong = {k: os.environ.get(k) for k, v in LOOPBACK_ENV.items() if os.environ.get(k) != v}
    if wrong:
        raise RuntimeError(f"set {LOOPBACK_ENV} in os.environ before importing Ray; now {wrong}")
    import sys

    constants = getattr(sys.modules.get("ray._private.ray_constants"), "ENABLE_RAY_CLUSTER", False)
    if constants:  # Ray reads the variable once, when it is first imported
        raise RuntimeError("Ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set, so "
                           "it would bind the machine's network address: set the variable before "
                           "`import ray` (restart the kernel)")
    ray = _ray()
    try:
        return ray.init(**options)
    except Exception as exc:  # Ray raises a bare Exception for this
        if "timed out during startup" not in str(exc):
            raise
        ray.shutdown()
        return ray.init(**options)


def _ray():
    try:
        import ray
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError("this part of rlmemlib needs Ray: pip install 'ray>=2.10,<3' "
                          "(the course's set-up installs it)") from None
    return ray


# ====================================================================== sampling by given indices
class GivenIndices(np.random.Generator):
    """A numpy Generator whose ``integers`` returns indices chosen beforehand.

    Every rlmemlib memory samples by drawing ``rng.integers(0, len(mem), size=batch_size)``;
    handed this generator, ``mem.sample(len(indices), GivenIndices(indices))`` returns the rows
    at exactly those logical indices, through the memory's own sampling code.

    >>> import numpy as np, rlmemlib as rm
    >>> mem = rm.ListMemory()
    >>> for t in range(5):
    ...     mem.add(np.full(2, t, np.float32), 0, 1.0, np.full(2, t + 1, np.float32), False, False)
    >>> mem.sample(2, GivenIndices([3, 0])).obs[:, 0]
    array([3., 0.], dtype=float32)
    """

    def __init__(self, indices):
        super().__init__(np.random.PCG64(0))
        self.indices = np.asarray(indices, dtype=np.int64)
        if self.indices.ndim != 1:
            raise ValueError(f"indices must be one-dimensional, got shape {self.indices.shape}")

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        n = len(self.indices)
        if low != 0 or high is None or endpoint or size != n:
            raise ValueError(f"expected integers(0, len(memory), size={n}) by the sampling rule, "
                             f"got integers({low}, {high}, size={size}, endpoint={endpoint})")
        if n and (self.indices.min() < 0 or self.indices.max() >= high):
            raise IndexError(f"indices must lie in [0, {high}) for a memory holding {high} "
                             f"transitions, got {self.indices.min()} to {self.indices.max()}")
        return self.indices.copy()


def locate(indices, sizes) -> tuple[np.ndarray, np.ndarray]:
    """Shard and index inside the shard of each logical index over shards taken in order.

    Logical index ``i`` counts shard 0's transitions first (oldest first), then shard 1's, and
    so on; empty shards take no indices.

    >>> locate([0, 2, 3, 5], [3, 0, 3])
    (array([0, 0, 2, 2]), array([0, 2, 0, 2]))
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    idx = np.asarray(indices, dtype=np.int64)
    ends = np.cumsum(sizes)
    if len(idx) and (idx.min() < 0 or idx.max() >= (ends[-1] if len(ends) else 0)):
        raise IndexError(f"logical indices must lie in [0, {int(sizes.sum())}), got "
                         f"{idx.min()} to {idx.max()}")
    shard = np.searchsorted(ends, idx, side="right")  # the first shard whose end is past i
    return shard, idx - (ends[shard] - sizes[shard])


# ====================================================================== the replay actor
class ReplayServer:
    """A replay memory behind a small interface that Ray can serve: ``ray.remote(ReplayServer)``.

    ``make_memory()`` builds the memory inside the actor's process, so the memory's arrays are
    allocated there and never travel.
    """

    def __init__(self, make_memory: Callable[[], object]):
        self.reset(make_memory)

    def reset(self, make_memory: Callable[[], object]) -> int:
        """Replace the memory by ``make_memory()`` (the old one is dropped first); returns 0."""
        self.memory = None  # the old arrays go before the new ones are made
        self.memory = make_memory()
        self.adds = 0       # add_batch calls served
        self.received = 0   # transitions received
        return len(self.memory)

    def add_batch(self, obs, action, reward, next_obs, terminated, truncated) -> int:
        """Store ``n`` transitions (arrays with a leading axis of ``n``); returns ``len(memory)``."""
        self.memory.add_batch(obs, action, reward, next_obs, terminated, truncated)
        self.adds += 1
        self.received += len(reward)
        return len(self.memory)

    def size(self) -> int:
        return len(self.memory)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[Batch, np.random.Generator]:
        """The memory's own ``sample``; the generator comes back too, advanced as it was used."""
        return self.memory.sample(batch_size, rng), rng

    def rows(self, indices) -> Batch:
        """The transitions at these logical indices (0 is the oldest held), as one batch."""
        indices = np.asarray(indices, dtype=np.int64)
        return self.memory.sample(len(indices), GivenIndices(indices))

    def stats(self) -> dict:
        """Process id, calls served, and the memory's own bytes (``nbytes`` where it has one)."""
        return {"pid": os.getpid(), "adds": self.adds, "received": self.received,
                "len": len(self.memory), "nbytes": getattr(self.memory, "nbytes", None)}


# ====================================================================== collectors
class Collector:
    """Steps gymnasium environments with a seeded random policy and ships chunks of transitions.

    A chunk is a :class:`~rlmemlib.Batch` of ``chunk_size`` transitions, ready for
    ``add_batch``. With ``num_envs > 1`` the environments run as one gymnasium vector
    environment (each step gives up to ``num_envs`` transitions); the step that follows an
    episode end only resets that environment (gymnasium's next-step autoreset), so it is not a
    transition and is never shipped. ``ray.remote(Collector)`` makes it an actor.

    >>> c = Collector(seed=0, chunk_size=64, num_envs=8)
    >>> batch = c.chunk()
    >>> len(batch), bool((batch.reward == 1.0).all())  # CartPole pays 1.0 for every real step
    (64, True)
    """

    def __init__(self, env_id: str = "CartPole-v1", seed: int = 0, chunk_size: int = 500,
                 num_envs: int = 1):
        import gymnasium as gym

        self.chunk_size = check_batch_size(chunk_size)
        self.num_envs = check_batch_size(num_envs)
        if self.num_envs == 1:
            self.env = gym.make(env_id)
            self.spec = TransitionSpec.from_env(self.env)
        else:
            # CartPole has a numpy-vectorized version (all environments in one step of array
            # arithmetic); other environments step one after another.
            mode = "vector_entry_point" if gym.spec(env_id).vector_entry_point else "sync"
            self.env = gym.make_vec(env_id, num_envs=self.num_envs, vectorization_mode=mode)
            mode = self.env.metadata.get("autoreset_mode")
            if getattr(mode, "name", None) != "NEXT_STEP":
                raise ValueError(f"num_envs > 1 needs gymnasium's next-step autoreset (gymnasium "
                                 f">= 1.0), got autoreset mode {mode!r}")
            self.spec = TransitionSpec.from_spaces(self.env.single_observation_space,
                                                   self.env.single_action_space)
        self.env.action_space.seed(seed)
        self.obs, _ = self.env.reset(seed=seed)
        self._resetting = np.zeros(self.num_envs, bool)  # vector: envs whose next step is a reset
        self._spare: list = []  # vector: transitions stepped but not shipped yet (lists of rows)
        self.steps = 0

    def chunk(self) -> Batch:
        """The next ``chunk_size`` transitions, episode ends included, in the spec's dtypes."""
        out = self.spec.empty_batch(self.chunk_size)
        if self.num_envs == 1:
            self._fill_single(out)
        else:
            self._fill_vector(out)
        self.steps += self.chunk_size
        return out

    def _fill_single(self, out: Batch) -> None:
        env, obs = self.env, self.obs
        for k in range(self.chunk_size):
            action = int(env.action_space.sample())
            next_obs, reward, terminated, truncated, _ = env.step(action)
            out.obs[k], out.action[k], out.reward[k] = obs, action, reward
            out.next_obs[k], out.terminated[k], out.truncated[k] = next_obs, terminated, truncated
            obs = env.reset()[0] if terminated or truncated else next_obs
        self.obs = obs

    def _fill_vector(self, out: Batch) -> None:
        filled = 0
        while filled < self.chunk_size:
            if not self._spare:
                self._step_vector()
            rows = self._spare.pop(0)
            take = min(len(rows[0]), self.chunk_size - filled)
            for dest, src in zip(out, rows):
                dest[filled:filled + take] = src[:take]
            if take < len(rows[0]):
                self._spare.insert(0, [a[take:] for a in rows])
            filled += take

    def _step_vector(self) -> None:
        action = self.env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        real = ~self._resetting  # a resetting env's step only starts its next episode
        self._spare.append([a[real] for a in (self.obs, action, reward, next_obs, terminated, truncated)])
        self._resetting = terminated | truncated
        self.obs = next_obs

    def run(self, replay: "ShardedReplay", chunks: int, max_in_flight: int = 2) -> dict:
        """Send ``chunks`` chunks to ``replay``, waiting whenever ``max_in_flight`` are unanswered."""
        ray = _ray()
        pending: list = []
        start = time.perf_counter()
        for _ in range(chunks):
            pending += replay.send(self.chunk())
            if len(pending) > max_in_flight * replay.shards:
                done, pending = ray.wait(pending, num_returns=len(pending) - max_in_flight * replay.shards)
                ray.get(done)  # raises here if an add was refused
        ray.get(pending)
        return {"pid": os.getpid(), "transitions": chunks * self.chunk_size,
                "seconds": time.perf_counter() - start}


# ====================================================================== shards
class ShardedReplay:
    """K replay actors used as one memory: adds round robin, sampling by the memories' rule.

    ``shards`` are Ray actor handles of :class:`ReplayServer` (one shard is a plain replay
    actor). The object holds only handles and a counter, so it can be passed to collectors.
    """

    def __init__(self, shards: Iterable, spec: TransitionSpec):
        self.handles = list(shards)
        if not self.handles:
            raise ValueError("shards must hold at least one replay actor handle, got none")
        self.spec = spec
        self.sent = 0  # transitions this client has sent; decides which shard gets the next one

    @property
    def shards(self) -> int:
        return len(self.handles)

    def send(self, chunk: Batch) -> list:
        """Send a chunk, transition ``t`` to shard ``t mod K``; returns the calls' references."""
        k, n = self.shards, len(chunk)
        first = self.sent % k
        refs = []
        for shard in range(k):
            rows = slice((shard - first) % k, None, k)  # this shard's share of the chunk
            if len(chunk.reward[rows]):
                refs.append(self.handles[shard].add_batch.remote(*(a[rows] for a in chunk)))
        self.sent += n
        return refs

    def add_batch(self, obs, action, reward, next_obs, terminated, truncated) -> int:
        """Like a memory's ``add_batch``: waits until every shard has stored its share."""
        ray = _ray()
        ray.get(self.send(Batch(obs, action, reward, next_obs, terminated, truncated)))
        return self.sent

    def sizes(self) -> list[int]:
        return _ray().get([h.size.remote() for h in self.handles])

    def __len__(self) -> int:
        return sum(self.sizes())

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """A batch by the memories' sampling rule over the shards' transitions, in shard order."""
        ray = _ray()
        n = check_batch_size(batch_size)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
        sizes = self.sizes()
        if not sum(sizes):
            raise ValueError("cannot sample from empty shards: add transitions first")
        shard, local = locate(rng.integers(0, sum(sizes), size=n), sizes)
        wanted = [np.flatnonzero(shard == k) for k in range(self.shards)]
        refs = {k: self.handles[k].rows.remote(local[pos]) for k, pos in enumerate(wanted) if len(pos)}
        out = self.spec.empty_batch(n)
        for k, part in zip(refs, ray.get(list(refs.values()))):
            for dest, src in zip(out, part):
                dest[wanted[k]] = src
        return out


# ====================================================================== measuring
def serialized_nbytes(obj) -> int:
    """Bytes of ``obj`` pickled with protocol 5, numpy buffers counted whole.

    Ray serializes with pickle protocol 5 too and ships numpy buffers out of band; this is
    the size of what crosses between processes, give or take Ray's own small header.

    >>> serialized_nbytes(np.zeros(1000, np.uint8)) > 1000
    True
    """
    buffers: list = []
    inband = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return len(inband) + sum(b.raw().nbytes for b in buffers)


def ray_serialized_nbytes(obj) -> int:
    """Bytes of ``obj`` as the connected Ray's own serializer makes them (header included)."""
    _ray()
    from ray._private.worker import global_worker  # Ray's serializer has no public entry

    return int(global_worker.get_serialization_context().serialize(obj).total_bytes)


def in_object_store(array: np.ndarray) -> bool:
    """Whether ``array``'s bytes lie in Ray's object store (its shared-memory ``plasma``
    file, mapped into this process) rather than in this process's own memory. Linux."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as handle:
        for line in handle:
            fields = line.split(maxsplit=5)
            low, high = (int(v, 16) for v in fields[0].split("-"))
            if low <= address < high:
                return len(fields) == 6 and "plasma" in os.path.basename(fields[5])
    return False


def object_store_used() -> int:
    """Bytes in the object store of the connected Ray cluster, as its nodes last reported."""
    ray = _ray()
    total = ray.cluster_resources().get("object_store_memory", 0.0)
    free = ray.available_resources().get("object_store_memory", 0.0)
    return int(total - free)


def ray_processes() -> list:
    """The processes Ray started for this driver: its descendants that run Ray.

    A local cluster started by ``ray.init()`` runs its servers (GCS, raylet, agents) and its
    workers as children and grandchildren of the driver. Other children (a multiprocessing
    resource tracker, say) are left out.
    """
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if _is_ray(p)]


def _is_ray(proc) -> bool:
    import psutil

    try:
        name, cmdline = proc.name(), " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return (name.startswith("ray::") or name in ("gcs_server", "raylet")
            or f"{os.sep}ray{os.sep}" in cmdline)


@dataclass
class ProcessMemory:
    pid: int
    name: str
    rss: int   # resident: pages mapped in, shared ones counted whole
    uss: int   # unique: pages only this process maps (what ending it would free)
    pss: int   # proportional: shared pages divided among the processes mapping them


def process_memory(procs=None) -> list[ProcessMemory]:
    """RSS, USS and PSS of each process (this one first), skipping processes that have ended."""
    import psutil

    procs = [psutil.Process()] + list(ray_processes() if procs is None else procs)
    rows = []
    for p in procs:
        try:
            info = p.memory_full_info()
            rows.append(ProcessMemory(p.pid, _label(p), info.rss, info.uss, getattr(info, "pss", info.uss)))
        except psutil.Error:
            continue  # ended meanwhile
    return rows


def _label(proc) -> str:
    """A short name: Ray names its workers 'ray::ClassName'; servers go by their executable."""
    import psutil

    try:
        name = proc.name()
        cmdline = proc.cmdline()
    except psutil.Error:
        return "?"
    if name.startswith("ray::") or not cmdline:
        return name
    for part in cmdline[1:3]:
        if part.endswith(".py"):
            return f"{name} {os.path.basename(part)}"
    return name


# ====================================================================== network watch
def _is_loopback(ip: str) -> bool:
    import ipaddress

    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or addr).is_loopback


def foreign_connections(procs=None) -> list[tuple]:
    """Internet sockets of the given processes bound or connected off loopback (default: this
    process, which runs Ray's driver when Ray is started here, and every process Ray started).

    Each entry is ``(pid, process name, local address, remote address, status)``; a server
    listening on every interface (``0.0.0.0`` or ``::``) counts as foreign too.
    """
    import psutil

    found = []
    for p in _driver_and_ray() if procs is None else procs:
        try:
            conns = p.net_connections(kind="inet") if hasattr(p, "net_connections") else p.connections("inet")
            name = p.name()
        except psutil.Error:
            continue
        for c in conns:
            ends = [a for a in (c.laddr, c.raddr) if a]
            if any(not _is_loopback(a.ip) for a in ends):
                found.append((p.pid, name, tuple(c.laddr) if c.laddr else None,
                              tuple(c.raddr) if c.raddr else None, c.status))
    return found


def _driver_and_ray() -> list:
    import psutil

    return [psutil.Process()] + ray_processes()


class ConnectionWatch:
    """Looks at the sockets of this process and of Ray's every ``interval`` seconds, in a thread.

    ``start()``, run the work, ``stop()``; then ``foreign`` lists every socket seen bound or
    connected anywhere but loopback, and ``looks`` counts the looks taken.
    """

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.foreign: list = []
        self.looks = 0
        self.processes: set = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while True:
            self.look()
            if self._stop.wait(self.interval):
                return

    def look(self) -> None:
        procs = _driver_and_ray()
        self.processes.update(p.pid for p in procs)
        for entry in foreign_connections(procs):
            if entry not in self.foreign:
                self.foreign.append(entry)
        self.looks += 1

    def start(self) -> "ConnectionWatch":
        self._thread.start()
        return self

    def stop(self) -> "ConnectionWatch":
        self._stop.set()
        self._thread.join()
        self.look()  # one last look, after the work
        return self
