"""Where a pool's bytes live: memory-mapped files, shared memory, and what the OS counts.

Every array a pool stores data in is made by one method, ``_new_array(name, shape, dtype)``.
The functions here build the same pool classes with that method backed by something else;
the pools keep their contract (contents, sampling rule, errors) unchanged.

Design choices and their memory trade-off:

* :func:`memmap` puts each array in a ``.npy`` file of a folder, mapped into memory
  (``numpy.lib.format.open_memmap``). The files are sparse until rows are written, and only
  the pages a process touches are resident, as *file-backed* pages of the page cache, which
  the kernel can write back and drop when memory runs short, instead of *anonymous* pages,
  which it can only swap. So a pool can be larger than RAM, and each sampled row that is not
  in the page cache costs a read from disk. :meth:`MemmapBacked.flush` writes the pool's
  cursor to ``state.json`` (atomically); :func:`reopen` maps the files again later, lazily:
  reopening reads the flags (one byte per row, checked) and no other rows. No checksum: the
  arrays are the live data, written in place, and a reopened pool holds what the last
  ``flush`` described (rows written after it may have replaced rows it counted as held).
  That laziness is the CircularPool's alone: a :class:`~rlmemlib.FramePool` saves its held
  frames in arrival order, so its ``flush`` writes a copy of every held frame to
  ``saved-*.npy`` files (as many bytes as the frames it holds) and ``reopen`` reads that copy.
* :func:`shared` puts each array in a ``multiprocessing.shared_memory`` segment (a file in
  ``/dev/shm`` on Linux), and the cursor too, so several processes :func:`attach` to one pool
  and write rows in place: no copy of a transition between processes. A lock (one per pool)
  makes each ``add``, ``add_batch``, ``sample``, index and ``save`` whole: a reader never
  sees a row half written, and writers never take the same rows. ``len`` reads the cursor
  without the lock (one aligned integer); the arrays themselves (``pool.obs``, ...) are not
  guarded, and a process killed while it holds the lock leaves it held. Shared memory is
  not file backed for the kernel's purposes: it is counted as ``shmem`` and can only be
  swapped.
  Only ``CircularPool(share_next_obs=False)`` is offered: shared observations keep a side store
  of final observations that lives in one process.
* ``save(path)`` of a backed pool writes the same ``.npz`` file as the pool's own class (it
  names ``CircularPool`` or ``FramePool``), so ``CircularPool.load`` reads it back into RAM.
* :func:`resident` splits a process's resident memory into anonymous, file-backed and shared
  memory pages (``/proc/<pid>/status``, Linux); :func:`container_memory` reads what the
  memory cgroup (v1 or v2) charges, the limit a container is held to.

>>> import tempfile, numpy as np, rlmemlib as rm
>>> spec = rm.TransitionSpec((2,), np.float32, (), np.uint8)
>>> folder = tempfile.mkdtemp()
>>> pool = memmap(rm.CircularPool, folder, 4, spec)
>>> pool.add(np.zeros(2, np.float32), 1, 1.0, np.ones(2, np.float32), False, False)
>>> pool.close()
>>> again = reopen(folder)
>>> len(again), again[0].next_obs, type(again.obs.base).__name__
(1, array([1., 1.], dtype=float32), 'memmap')
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import persist
from .spec import TransitionSpec

__all__ = ["memmap", "reopen", "MemmapBacked", "shared", "attach", "SharedBacked", "SharedHandle",
           "Resident", "resident", "filesystem", "container_memory"]

STATE_FILE = "state.json"
FORMAT = "rlmemlib-memmap"
VERSION = 1

# What a backed pool is being built with: set only while its constructor runs, so that the
# first _new_array calls (made inside the pool's __init__) know where to put the arrays.
_BUILDING: contextvars.ContextVar = contextvars.ContextVar("rlmemlib_storage_building")


def _supported(cls) -> type:
    """The pool classes that allocate a few large arrays through ``_new_array``."""
    from .memory import CircularPool

    allowed = (CircularPool,)
    try:
        from .frames import FramePool
        allowed += (FramePool,)
    except ImportError:  # FramePool arrives with lesson 07
        pass
    if not (isinstance(cls, type) and issubclass(cls, allowed)):
        names = ", ".join(c.__name__ for c in allowed)
        raise TypeError(f"memory class must be one of {names} (a few large arrays), got "
                        f"{getattr(cls, '__name__', cls)!r}")
    return cls


def _backed_class(mixin: type, cls: type) -> type:
    """``cls`` with ``mixin``'s storage, made once per pair."""
    key = (mixin, cls)
    made = _CLASSES.get(key)
    if made is None:
        made = _CLASSES[key] = type(f"{mixin.prefix}{cls.__name__}", (mixin, cls),
                                    {"__module__": __name__, "_base": cls})
    return made


_CLASSES: dict = {}


def _spec_dict(spec: TransitionSpec) -> dict:
    return {"obs_shape": list(spec.obs_shape), "obs_dtype": spec.obs_dtype.str,
            "action_shape": list(spec.action_shape), "action_dtype": spec.action_dtype.str,
            "reward_dtype": spec.reward_dtype.str, "action_low": spec.action_low,
            "action_high": spec.action_high}


def _spec_from(d: dict) -> TransitionSpec:
    return TransitionSpec(tuple(d["obs_shape"]), np.dtype(d["obs_dtype"]), tuple(d["action_shape"]),
                          np.dtype(d["action_dtype"]), np.dtype(d["reward_dtype"]),
                          d["action_low"], d["action_high"])


# ====================================================================== memory-mapped files
class MemmapBacked:
    """Mixin: every array of the pool is a ``.npy`` file in ``folder``, memory-mapped."""

    prefix = "Memmap"
    folder: Path
    _files: dict    # array name -> the memmap backing it (the live one for each name)
    _views: dict    # array name -> the plain ndarray view of it that the pool holds
    _reuse: dict    # while reopening: array name -> the memmap found in the folder

    def __init__(self, *args, **kwargs):
        folder, reuse = _BUILDING.get()
        self.folder, self._files, self._views, self._reuse = folder, {}, {}, dict(reuse)
        super().__init__(*args, **kwargs)
        self._reuse = {}

    def _new_array(self, name: str, shape: tuple, dtype) -> np.ndarray:
        found = self._reuse.pop(name, None)
        if found is not None and found.shape == tuple(shape) and found.dtype == np.dtype(dtype):
            self._files[name] = found  # reopening: the file's own rows, not a copy
            view = self._views[name] = found.view(np.ndarray)
            return view
        # A new file under a temporary name, renamed into place: an array of the same name
        # that is still mapped (a side store that doubles) keeps its old file until dropped.
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".npy", dir=self.folder)
        os.close(fd)
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        os.replace(tmp, self.folder / f"{name}.npy")
        self._files[name] = arr
        # A plain ndarray view of the mapping: rows read from it are plain arrays, not memmaps.
        view = self._views[name] = arr.view(np.ndarray)
        return view

    @property
    def file_nbytes(self) -> int:
        """Apparent size of the pool's array files (what they would hold if every row were written)."""
        return sum((self.folder / f"{name}.npy").stat().st_size for name in self._files)

    def flush(self) -> None:
        """Write dirty rows back to the files and the cursor to ``state.json`` (atomically)."""
        arrays, state = self._saved_state()
        listing = {}
        for name, arr in arrays.items():
            if self._views.get(name) is arr:  # the whole array the pool holds: its file, flushed
                self._files[name].flush()
                listing[name] = f"{name}.npy"
            else:  # a view or a copy (the live part of a side store): saved whole, small
                listing[name] = f"saved-{name}.npy"
                persist.atomic_write(self.folder / listing[name], lambda h, a=arr: np.save(h, np.asarray(a)))
        meta = {"format": FORMAT, "version": VERSION, "type": self._base.__name__,
                "spec": _spec_dict(self.spec), "capacity": self.capacity, "state": state,
                "arrays": listing}
        persist.atomic_write(self.folder / STATE_FILE, lambda h: h.write(json.dumps(meta, indent=1).encode()))

    def close(self) -> None:
        """``flush``; the mappings go when the pool object is dropped, the folder stays."""
        self.flush()
        self._files, self._views = {}, {}

    def save(self, path):
        """Write the pool to a ``.npz`` file as its own class would; ``load`` reads it into RAM."""
        return persist.save(_plain(self), path)


def _plain(pool, **cursor):
    """An object of the pool's own class over the same arrays (and ``cursor`` values), so that
    what ``persist`` writes names that class and loads with it."""
    plain = object.__new__(pool._base)
    plain.__dict__.update(pool.__dict__)
    plain.__dict__.update(cursor)
    return plain


def memmap(cls, folder, *args, **kwargs):
    """A new ``cls(*args, **kwargs)`` whose arrays are memory-mapped ``.npy`` files in ``folder``.

    The folder is created if needed; files of an earlier pool in it are replaced. Call
    ``flush()`` to make the folder reopenable at that point, ``close()`` when done.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backed = _backed_class(MemmapBacked, _supported(cls))
    token = _BUILDING.set((folder, {}))
    try:
        pool = backed(*args, **kwargs)
    finally:
        _BUILDING.reset(token)
    pool.flush()
    return pool


def reopen(folder):
    """The pool saved in ``folder`` by ``flush``/``close``, its files mapped again (read+write).

    Nothing is read but the cursor, each array's header and what the pool class checks (a
    CircularPool checks its flags, one byte per row): rows come in from disk as they are used. A ``ValueError`` names any problem with the folder.
    """
    folder = Path(folder)
    meta = _read_state(folder)
    from .memory import CircularPool

    classes = {"CircularPool": CircularPool}
    with contextlib.suppress(ImportError):
        from .frames import FramePool
        classes["FramePool"] = FramePool
    if meta.get("type") not in classes:
        raise ValueError(f"{folder / STATE_FILE}: type is {meta.get('type')!r}, expected one of "
                         f"{sorted(classes)}")
    arrays = {name: _open_array(folder, file, mapped=not file.startswith("saved-"))
              for name, file in meta["arrays"].items()}
    spec = _spec_from(meta["spec"])
    flat = {k: v for k, v in meta.items() if k not in ("state", "arrays")}
    saved = persist.Saved(folder / STATE_FILE, {**flat, **meta["state"]}, arrays, spec)
    backed = _backed_class(MemmapBacked, classes[meta["type"]])
    reuse = {name: arr for name, arr in arrays.items() if isinstance(arr, np.memmap)}
    token = _BUILDING.set((folder, reuse))
    try:
        return backed._from_saved(saved)
    finally:
        _BUILDING.reset(token)


def _read_state(folder: Path) -> dict:
    path = folder / STATE_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{folder} holds no memory-mapped pool (no {STATE_FILE}); make one "
                         "with rlmemlib.storage.memmap(...)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a memory-mapped pool's state")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path} has version {meta.get('version')}; this rlmemlib reads {VERSION}")
    if not isinstance(meta.get("arrays"), dict) or not isinstance(meta.get("state"), dict):
        raise ValueError(f"{path} lists no arrays or no state")
    return meta


def _open_array(folder: Path, file, mapped: bool) -> np.ndarray:
    if not isinstance(file, str) or Path(file).name != file or not file.endswith(".npy"):
        raise ValueError(f"{folder / STATE_FILE}: {file!r} is not a file name of this folder")
    try:
        return np.load(folder / file, mmap_mode="r+" if mapped else None, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{folder}: {file} is missing") from None
    except ValueError as exc:
        raise ValueError(f"{folder / file} is not a readable .npy array ({exc})") from None


# ====================================================================== shared memory
_CURSOR = ("_pos", "_len", "_added")  # the pool's cursor, kept in shared memory too


def _cursor_property(k: int, name: str) -> property:
    def get(self):
        return int(self._cursor[k])

    def set_(self, value):
        if not self._attaching:  # attaching must not reset the cursor the others are using
            self._cursor[k] = value
    return property(get, set_, doc=f"{name}, in shared memory")


class SharedBacked:
    """Mixin: every array of the pool, and its cursor, in ``multiprocessing.shared_memory``.

    It leans on ``CircularPool``'s private state, which a change there must keep in step:
    the cursor ``_pos``, ``_len`` and ``_added`` become properties over a shared int64 array
    (every process sees every add); ``_tail``, the bytes of the newest ``next_obs`` that a
    pool in one process remembers, is always None (another process may have written the row
    since); and ``close`` drops the memoryview writers ``_action_w``, ``_reward_w``,
    ``_flags_w`` and ``_obs_b``, since a segment cannot be unmapped while a view of it exists.
    """

    prefix = "Shared"
    _segments: dict   # array name -> SharedMemory
    _owner: bool      # made the segments (and unlinks them on close)
    _lock: object     # a multiprocessing lock, one per pool
    _cursor: np.ndarray
    _attaching: bool

    _pos = _cursor_property(0, "row the next transition goes to")
    _len = _cursor_property(1, "transitions held")
    _added = _cursor_property(2, "transitions added")

    def __init__(self, *args, **kwargs):
        names, lock = _BUILDING.get()
        self._segments, self._owner, self._lock = {}, names is None, lock
        self._attach_names = names or {}
        self._attaching = names is not None
        self._cursor = self._new_array("cursor", (len(_CURSOR),), np.int64)
        super().__init__(*args, **kwargs)
        self._attaching = False

    def _new_array(self, name: str, shape: tuple, dtype) -> np.ndarray:
        from multiprocessing import shared_memory

        dtype = np.dtype(dtype)
        nbytes = max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        if self._owner:
            seg = shared_memory.SharedMemory(create=True, size=nbytes)
        else:
            seg = _attach_segment(self._attach_names[name])
        self._segments[name] = seg
        return np.ndarray(shape, dtype, buffer=seg.buf)  # new segments read as zeros

    @property
    def _tail(self):
        return None  # always compare with the row itself: another process may have written it

    @_tail.setter
    def _tail(self, value):
        pass

    def handle(self) -> "SharedHandle":
        """What another process needs to :func:`attach` (pass it as a ``Process`` argument)."""
        return SharedHandle(self._base.__name__, self.spec, self.capacity,
                            {n: s.name for n, s in self._segments.items()}, self._lock)

    @property
    def segment_nbytes(self) -> int:
        return sum(s.size for s in self._segments.values())

    def add(self, *args, **kwargs):
        with self._lock:
            return super().add(*args, **kwargs)

    def add_batch(self, *args, **kwargs):
        with self._lock:
            return super().add_batch(*args, **kwargs)

    def sample(self, *args, **kwargs):
        with self._lock:
            return super().sample(*args, **kwargs)

    def __getitem__(self, i):
        with self._lock:
            return super().__getitem__(i)

    def clear(self):
        if self._attaching:
            return
        with self._lock:
            return super().clear()

    def save(self, path):
        """Write the pool as it is at one moment (under the lock) to a ``.npz`` file that
        ``CircularPool.load`` reads into RAM."""
        with self._lock:
            return persist.save(_plain(self, **{k: getattr(self, k) for k in _CURSOR}, _tail=None), path)

    def close(self) -> None:
        """Unmap this process's view; the process that made the pool also frees the segments."""
        for name in ("obs", "next_obs", "action", "reward", "flags"):
            if hasattr(self, name):
                setattr(self, name, None)
        self._action_w = self._reward_w = self._flags_w = self._obs_b = None
        self._cursor = None
        for seg in self._segments.values():
            seg.close()
            if self._owner:
                seg.unlink()
        self._segments = {}


def _attach_segment(name: str):
    """An existing segment, opened without asking this process's resource tracker to free it.

    Before Python 3.13 attaching registers the segment with the resource tracker, which frees
    what is registered when the tracker ends. A process started by the pool's maker (as
    ``multiprocessing`` starts them) shares its maker's tracker, where the segment is already
    registered, so that is harmless; an unrelated process attaching would have a tracker of its
    own, which would free the segment when that process ends.
    """
    from multiprocessing import shared_memory

    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    return shared_memory.SharedMemory(name=name)


@dataclass
class SharedHandle:
    """Names of a shared pool's segments, its spec and its lock: enough to attach to it."""

    type: str
    spec: TransitionSpec
    capacity: int
    segments: dict
    lock: object


def shared(cls, capacity: int, spec: TransitionSpec, *, context=None):
    """A new ``cls(capacity, spec)`` whose arrays and cursor live in shared memory.

    ``context`` is the multiprocessing context the processes will be started with (default:
    ``spawn``, which every platform has); the pool's lock comes from it.
    """
    from .memory import CircularPool

    if not (isinstance(cls, type) and issubclass(cls, CircularPool)):
        raise TypeError(f"shared memory backs CircularPool (share_next_obs=False) only, got "
                        f"{getattr(cls, '__name__', cls)!r}")
    import multiprocessing

    lock = (context or multiprocessing.get_context("spawn")).Lock()
    token = _BUILDING.set((None, lock))
    try:
        return _backed_class(SharedBacked, cls)(capacity, spec)
    finally:
        _BUILDING.reset(token)


def attach(handle: SharedHandle):
    """This process's view of the shared pool described by ``handle``."""
    from .memory import CircularPool

    if handle.type != "CircularPool":
        raise ValueError(f"handle.type is {handle.type!r}, expected 'CircularPool'")
    token = _BUILDING.set((handle.segments, handle.lock))
    try:
        return _backed_class(SharedBacked, CircularPool)(handle.capacity, handle.spec)
    finally:
        _BUILDING.reset(token)


# ====================================================================== what the OS counts
@dataclass
class Resident:
    """Resident pages of one process, by kind (bytes)."""

    anon: int    # anonymous: heap, numpy arrays from np.zeros; swappable only
    file: int    # file-backed: code, libraries, memory-mapped files; the kernel can drop clean ones
    shmem: int   # shared memory (/dev/shm, multiprocessing.shared_memory); swappable only

    @property
    def total(self) -> int:
        return self.anon + self.file + self.shmem


def resident(pid: int | None = None) -> Resident:
    """RssAnon, RssFile and RssShmem of a process (Linux ``/proc/<pid>/status``)."""
    path = Path(f"/proc/{pid or os.getpid()}/status")
    fields = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise OSError(f"{path} not found: resident() reads Linux's /proc") from None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0]) * 1024  # reported in kB
    return Resident(fields.get("RssAnon", 0), fields.get("RssFile", 0), fields.get("RssShmem", 0))


def filesystem(path) -> str | None:
    """The type of the file system holding ``path`` (``"ext4"``, ``"tmpfs"``, ...), from Linux's
    ``/proc/self/mounts``; None elsewhere. A memory-mapped file on ``tmpfs`` is shared memory."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    target, best, kind = Path(path).resolve(), -1, None
    for line in mounts:
        parts = line.split()
        point = Path(parts[1].replace("\\040", " "))
        if (target == point or point in target.parents) and len(str(point)) > best:
            best, kind = len(str(point)), parts[2]
    return kind


def container_memory() -> dict | None:
    """What the memory cgroup of this process charges, in bytes, or None where there is none.

    Keys: ``version`` (1 or 2), ``limit`` (None when unlimited), ``usage`` (all charged),
    ``anon``, ``file`` (page cache, shared memory included) and ``shmem``.
    """
    for finder in (_cgroup_v2, _cgroup_v1):
        found = finder()
        if found is not None:
            return found
    return None


def _cgroup_dirs(controller: str | None) -> list[Path]:
    """Candidate folders of this process's cgroup: by its path, then the mount's root."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        _, names, path = line.split(":", 2)
        if (controller is None and names == "") or (controller and controller in names.split(",")):
            root = Path("/sys/fs/cgroup") if controller is None else Path("/sys/fs/cgroup") / controller
            return [root / path.lstrip("/"), root]
    return []


def _stat(folder: Path) -> dict:
    return {k: int(v) for k, v in (line.split() for line in (folder / "memory.stat").read_text().splitlines())}


def _cgroup_v2() -> dict | None:
    for folder in _cgroup_dirs(None):
        if (folder / "memory.current").is_file() and (folder / "memory.stat").is_file():
            stat = _stat(folder)
            limit = (folder / "memory.max").read_text().strip() if (folder / "memory.max").is_file() else "max"
            return {"version": 2, "limit": None if limit == "max" else int(limit),
                    "usage": int((folder / "memory.current").read_text()), "anon": stat.get("anon", 0),
                    "file": stat.get("file", 0), "shmem": stat.get("shmem", 0)}
    return None


def _cgroup_v1() -> dict | None:
    for folder in _cgroup_dirs("memory"):
        if (folder / "memory.usage_in_bytes").is_file() and (folder / "memory.stat").is_file():
            stat = _stat(folder)
            limit = int((folder / "memory.limit_in_bytes").read_text())
            return {"version": 1, "limit": None if limit >= 2**62 else limit,
                    "usage": int((folder / "memory.usage_in_bytes").read_text()),
                    "anon": stat.get("total_rss", stat.get("rss", 0)),
                    "file": stat.get("total_cache", stat.get("cache", 0)),
                    "shmem": stat.get("total_shmem", stat.get("shmem", 0))}
    return None
