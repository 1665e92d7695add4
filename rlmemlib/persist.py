"""Saving and loading memories: numpy ``.npz`` files, atomic, checked, never pickle.

Design choices:

* The file is a plain ``.npz`` archive of numeric arrays plus one ``meta`` array holding JSON
  text as bytes. It is read with ``allow_pickle=False``, so a file from a stranger can hold
  data but never code.
* Writing is atomic: the archive goes to a temporary file in the target's folder, is flushed
  and fsynced, then renamed over the target. A process killed at any moment leaves either the
  previous file or the new one, never a mix.
* Loading checks everything before it builds anything: the format name and version, the
  memory type, the spec, capacity, length and cursor, the shapes and dtypes of the arrays, and
  a SHA-256 checksum of their bytes. Any problem is a ``ValueError`` naming it; nothing
  half-loaded is returned.
* ``ListMemory`` is saved as arrays of its spec's dtypes, and only when that is exact (a value
  that the cast would change is refused), so the loaded memory samples the same batches. Its
  transitions come back as numpy arrays and scalars, equal in value to the originals.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .spec import TransitionSpec

FORMAT = "rlmemlib-memory"
VERSION = 1
_FLAG_BITS = 7  # TERMINATED | TRUNCATED | FINAL_ELSEWHERE


# ====================================================================== writing
def save(memory, path) -> Path:
    """Write ``memory`` to ``path`` atomically; returns the path."""
    from .memory import CircularPool, ListMemory, RecyclingMemory

    if isinstance(memory, CircularPool):
        arrays, state = _pool_arrays(memory)
    elif isinstance(memory, RecyclingMemory):
        arrays, state = _recycling_arrays(memory)
    elif isinstance(memory, ListMemory):
        arrays, state = _list_arrays(memory)
    else:
        raise TypeError(f"cannot save a {type(memory).__name__}; expected an rlmemlib memory")
    meta = {"format": FORMAT, "version": VERSION, "type": type(memory).__name__,
            "spec": _spec_to_dict(memory.spec), "capacity": memory.capacity, **state,
            "checksum": checksum(arrays)}
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    return _atomic_savez(Path(path), arrays)


def _atomic_savez(path: Path, arrays: dict) -> Path:
    folder = path.resolve().parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(folder)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def checksum(arrays: dict) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _pool_arrays(pool):
    arrays = {"obs": pool.obs, "action": pool.action, "reward": pool.reward, "flags": pool.flags}
    if pool.next_obs is not None:
        arrays["next_obs"] = pool.next_obs
    state = {"share_next_obs": pool.share_next_obs, "len": pool._len, "start": pool._start,
             "added": pool._added if pool.share_next_obs else pool._len}
    if pool.share_next_obs:
        finals = pool._finals
        live = slice(finals.head, finals.head + finals.count)
        arrays["final_obs"] = finals.obs[live]
        arrays["final_seq"] = finals.seq[live]
    return arrays, state


def _recycling_arrays(mem):
    records = np.stack(mem.records) if mem.records else np.zeros(0, mem.spec.record_dtype)
    return {"records": records}, {"len": mem._len, "start": mem._start}


def _list_arrays(mem):
    spec = mem.spec
    items = list(mem)
    if spec is None:  # nothing was ever added
        return {}, {"len": 0, "start": 0}
    arrays = {}
    for field, dtype, shape in (("obs", spec.obs_dtype, spec.obs_shape),
                                ("action", spec.action_dtype, spec.action_shape),
                                ("reward", spec.reward_dtype, ()),
                                ("next_obs", spec.obs_dtype, spec.obs_shape),
                                ("terminated", np.dtype(np.bool_), ()),
                                ("truncated", np.dtype(np.bool_), ())):
        values = [getattr(t, field) for t in items]
        cast = np.array(values, dtype=dtype).reshape((len(items), *shape))
        exact = np.array(values).reshape(cast.shape) if values else cast
        if values and not np.array_equal(exact, cast, equal_nan=exact.dtype.kind == "f"):
            raise ValueError(f"cannot save this ListMemory exactly: its {field} values change when "
                             f"cast to {dtype}; give the memory a matching spec")
        arrays[field] = cast
    return arrays, {"len": len(items), "start": 0}


def _spec_to_dict(spec) -> dict | None:
    if spec is None:
        return None
    return {"obs_shape": list(spec.obs_shape), "obs_dtype": spec.obs_dtype.str,
            "action_shape": list(spec.action_shape), "action_dtype": spec.action_dtype.str,
            "reward_dtype": spec.reward_dtype.str, "action_low": spec.action_low,
            "action_high": spec.action_high}


# ====================================================================== reading
def load(cls, path):
    """Read a memory of type ``cls`` from ``path``, checked; a ``ValueError`` names any problem."""
    arrays, meta = _read(Path(path))
    if meta.get("type") != cls.__name__:
        raise ValueError(f"{path} holds a {meta.get('type')}, not a {cls.__name__}: "
                         f"load it with {meta.get('type')}.load")
    expected = meta.get("checksum")
    if checksum(arrays) != expected:
        raise ValueError(f"{path}: the checksum of the stored arrays does not match: the data "
                         "was changed or damaged after it was saved")
    spec = _spec_from_dict(meta.get("spec"), path)
    builder = {"CircularPool": _build_pool, "RecyclingMemory": _build_recycling,
               "ListMemory": _build_list}[cls.__name__]
    return builder(cls, spec, meta, arrays, path)


def _read(path: Path):
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    with path.open("rb") as handle:
        head = handle.read(4)
    if head != b"PK\x03\x04":  # every .npz is a zip archive; np.load would try other formats
        raise ValueError(f"{path} is not an .npz memory file (not a zip archive)"
                         if head else f"{path} is empty: truncated or damaged")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if "meta" not in names:
                raise ValueError(f"{path} is not an rlmemlib memory file (no meta record)")
            arrays = {name: archive[name] for name in names}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise ValueError(f"{path} holds pickled Python objects; memory files hold numbers "
                             "only, and pickles are never loaded (they can run code)") from None
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path} is not a readable .npz memory file ({exc})") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
        raise ValueError(f"{path} is truncated or damaged and cannot be read ({exc})") from None
    meta_bytes = arrays.pop("meta")
    if meta_bytes.dtype != np.uint8 or meta_bytes.ndim != 1:
        raise ValueError(f"{path} is not an rlmemlib memory file (bad meta record)")
    try:
        meta = json.loads(meta_bytes.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not an rlmemlib memory file (meta record is not JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an rlmemlib memory file")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path} has format version {meta.get('version')}; this rlmemlib reads "
                         f"version {VERSION}")
    return arrays, meta


def _spec_from_dict(d, path) -> TransitionSpec | None:
    if d is None:
        return None
    try:
        return TransitionSpec(tuple(d["obs_shape"]), np.dtype(d["obs_dtype"]), tuple(d["action_shape"]),
                              np.dtype(d["action_dtype"]), np.dtype(d["reward_dtype"]),
                              d["action_low"], d["action_high"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: the stored spec is not valid ({exc})") from None


def _int(meta, key, path, low, high) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{path}: {key} is {value!r}, expected an int in [{low}, {high}]")
    return value


def _expect_array(arrays, name, shape, dtype, path) -> np.ndarray:
    if name not in arrays:
        raise ValueError(f"{path}: the array {name!r} is missing")
    arr = arrays[name]
    if arr.shape != tuple(shape) or arr.dtype != dtype:
        raise ValueError(f"{path}: {name} is {arr.shape} {arr.dtype}, expected {tuple(shape)} {dtype}")
    return arr


def _build_pool(cls, spec, meta, arrays, path):
    capacity = _int(meta, "capacity", path, 1, 2**40)
    shared = meta.get("share_next_obs")
    if not isinstance(shared, bool) or spec is None:
        raise ValueError(f"{path}: share_next_obs and spec must be stored for a CircularPool")
    rows = capacity + 1 if shared else capacity
    length = _int(meta, "len", path, 0, capacity)
    start = _int(meta, "start", path, 0, rows - 1)
    added = _int(meta, "added", path, length, 2**62)
    fields = {"obs": ((rows, *spec.obs_shape), spec.obs_dtype),
              "action": ((rows, *spec.action_shape), spec.action_dtype),
              "reward": ((rows,), spec.reward_dtype), "flags": ((rows,), np.dtype(np.uint8))}
    if not shared:
        fields["next_obs"] = fields["obs"]
    got = {name: _expect_array(arrays, name, *sd, path) for name, sd in fields.items()}
    if np.any(got["flags"] & ~np.uint8(_FLAG_BITS)):
        raise ValueError(f"{path}: flags hold bits that no CircularPool writes")
    pool = cls(capacity, spec, share_next_obs=shared)
    if shared:
        _restore_finals(pool, arrays, got["flags"], start, length, added, path)
    for name, arr in got.items():
        getattr(pool, name)[...] = arr
    pool._pos, pool._len, pool._added = (start + length) % rows, length, added
    return pool


def _restore_finals(pool, arrays, flags, start, length, added, path):
    seq = _expect_array(arrays, "final_seq", arrays.get("final_seq", np.zeros(0)).shape, np.dtype(np.int64), path)
    obs = _expect_array(arrays, "final_obs", (len(seq), *pool.spec.obs_shape), pool.spec.obs_dtype, path)
    rows = (start + np.arange(length)) % (pool.capacity + 1)
    owners = added - length + np.flatnonzero(flags[rows] & 4)
    if len(owners) != len(seq) or not np.array_equal(owners, seq):
        raise ValueError(f"{path}: the side store of final observations does not match the flags")
    for s, o in zip(seq.tolist(), obs):
        pool._finals.push(s, o)


def _build_recycling(cls, spec, meta, arrays, path):
    capacity = _int(meta, "capacity", path, 1, 2**40)
    length = _int(meta, "len", path, 0, capacity)
    start = _int(meta, "start", path, 0, capacity - 1)
    if spec is None:
        raise ValueError(f"{path}: a RecyclingMemory needs its spec stored")
    records = _expect_array(arrays, "records", (capacity,), spec.record_dtype, path)
    mem = cls(capacity, spec)
    for record, row in zip(mem.records, records):
        record[()] = row
    mem._start, mem._len = start, length
    return mem


def _build_list(cls, spec, meta, arrays, path):
    capacity = meta.get("capacity")
    if capacity is not None:
        capacity = _int(meta, "capacity", path, 1, 2**40)
    length = _int(meta, "len", path, 0, capacity if capacity is not None else 2**40)
    mem = cls(capacity, spec)
    if length == 0:
        return mem
    if spec is None:
        raise ValueError(f"{path}: a ListMemory holding transitions needs its spec stored")
    shapes = {"obs": ((length, *spec.obs_shape), spec.obs_dtype),
              "action": ((length, *spec.action_shape), spec.action_dtype),
              "reward": ((length,), spec.reward_dtype),
              "next_obs": ((length, *spec.obs_shape), spec.obs_dtype),
              "terminated": ((length,), np.dtype(np.bool_)), "truncated": ((length,), np.dtype(np.bool_))}
    got = {name: _expect_array(arrays, name, *sd, path) for name, sd in shapes.items()}
    for i in range(length):
        mem.add(got["obs"][i], got["action"][i], got["reward"][i], got["next_obs"][i],
                bool(got["terminated"][i]), bool(got["truncated"][i]))
    return mem
