"""Saving and loading memories: numpy ``.npz`` files, atomic, checked, never pickle.

Design choices:

* This module knows the file format and no memory class. A memory saves itself by handing
  :func:`save` its arrays and a few JSON values (``memory._saved_state()``); it loads itself
  from a :class:`Saved`, the checked contents of a file (``cls._from_saved(saved)``). So a
  memory class written in another module plugs into ``save``/``load`` without this module
  changing, and the import runs one way: memories import ``persist``, never the reverse.
* The file is a plain ``.npz`` archive of numeric arrays plus one ``meta`` array holding JSON
  text as bytes. It is read with ``allow_pickle=False``, so a file from a stranger can hold
  data but never code.
* Writing is atomic: the archive goes to a temporary file in the target's folder, is flushed
  and fsynced, then renamed over the target. A process killed at any moment leaves either the
  previous file or the new one, never a mix.
* Loading checks everything before it builds anything: here the format name and version, the
  memory type, the spec and a SHA-256 checksum of the arrays' bytes; in the memory class (with
  the checked accessors of :class:`Saved`) its capacity, length and cursor and the shape and
  dtype of each array. Any problem is a ``ValueError`` naming it; nothing half-loaded is
  returned.

The protocol a memory class follows::

    memory.spec, memory.capacity           # stored in the meta record
    memory._saved_state() -> (arrays, state)  # dict of numeric arrays, dict of JSON values
    cls._from_saved(saved) -> memory        # saved: a Saved; raise saved.error(...) on a problem

>>> import tempfile, pathlib
>>> class Counter:
...     spec, capacity = None, 3
...     def __init__(self, values): self.values = values
...     def _saved_state(self): return {"values": self.values}, {"len": len(self.values)}
...     @classmethod
...     def _from_saved(cls, saved):
...         n = saved.int("len", 0, cls.capacity)
...         return cls(saved.array("values", (n,), np.dtype(np.int64)))
>>> path = save(Counter(np.arange(3)), pathlib.Path(tempfile.mkdtemp()) / "c.npz")
>>> load(Counter, path).values
array([0, 1, 2])
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

__all__ = ["save", "load", "Saved", "checksum", "FORMAT", "VERSION"]

FORMAT = "rlmemlib-memory"
VERSION = 1


# ====================================================================== writing
def save(memory, path) -> Path:
    """Write ``memory`` to ``path`` atomically; returns the path."""
    state_of = getattr(memory, "_saved_state", None)
    if state_of is None:
        raise TypeError(f"cannot save a {type(memory).__name__}; expected an rlmemlib memory")
    arrays, state = state_of()
    arrays = dict(arrays)
    reserved = {"format", "version", "type", "spec", "capacity", "checksum"} & set(state)
    if "meta" in arrays or reserved:
        raise ValueError(f"{type(memory).__name__} uses reserved names: {sorted(reserved) or ['meta']}")
    meta = {"format": FORMAT, "version": VERSION, "type": type(memory).__name__,
            "spec": _spec_to_dict(memory.spec), "capacity": memory.capacity, **state,
            "checksum": checksum(arrays)}
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    return _atomic_savez(Path(path), arrays)


def _atomic_savez(path: Path, arrays: dict) -> Path:
    return atomic_write(path, lambda handle: np.savez(handle, **arrays))


def atomic_write(path: Path, write) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it to ``path``:
    readers see the old file or the whole new one, never half of it (also after a crash)."""
    path = Path(path)
    folder = path.resolve().parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
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
    from_saved = getattr(cls, "_from_saved", None)
    if from_saved is None:
        raise TypeError(f"cannot load a {getattr(cls, '__name__', cls)}; expected an rlmemlib "
                        "memory class")
    path = Path(path)
    arrays, meta = _read(path)
    if meta.get("type") != cls.__name__:
        raise ValueError(f"{path} holds a {meta.get('type')}, not a {cls.__name__}: "
                         f"load it with {meta.get('type')}.load")
    expected = meta.get("checksum")
    if checksum(arrays) != expected:
        raise ValueError(f"{path}: the checksum of the stored arrays does not match: the data "
                         "was changed or damaged after it was saved")
    return from_saved(Saved(path, meta, arrays, _spec_from_dict(meta.get("spec"), path)))


class Saved:
    """The checked contents of a memory file, handed to ``cls._from_saved``.

    Every accessor checks what it returns and raises a ``ValueError`` that names the file and
    the problem, so a memory class builds itself from values that are already right.
    """

    path: Path
    meta: dict            # the JSON record: format, type, spec, capacity and the memory's state
    arrays: dict          # name -> numpy array, as stored (checksum verified)
    spec: TransitionSpec | None

    def __init__(self, path: Path, meta: dict, arrays: dict, spec: TransitionSpec | None):
        self.path, self.meta, self.arrays, self.spec = path, meta, arrays, spec

    def error(self, message: str) -> ValueError:
        """A ``ValueError`` about this file, to raise."""
        return ValueError(f"{self.path}: {message}")

    def int(self, key: str, low: int, high: int) -> int:
        """The meta value ``key``, an int in ``[low, high]``."""
        value = self.meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(f"{key} is {value!r}, expected an int in [{low}, {high}]")
        return value

    def flag(self, key: str) -> bool:
        """The meta value ``key``, a bool."""
        value = self.meta.get(key)
        if not isinstance(value, bool):
            raise self.error(f"{key} is {value!r}, expected true or false")
        return value

    def array(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """The stored array ``name``, which must have exactly ``shape`` and ``dtype``."""
        if name not in self.arrays:
            raise self.error(f"the array {name!r} is missing")
        arr, dtype = self.arrays[name], np.dtype(dtype)
        if arr.shape != tuple(shape) or arr.dtype != dtype:
            raise self.error(f"{name} is {arr.shape} {arr.dtype}, expected {tuple(shape)} {dtype}")
        return arr

    def require_spec(self) -> TransitionSpec:
        """The stored spec; a memory that cannot exist without one calls this."""
        if self.spec is None:
            raise self.error(f"a {self.meta.get('type')} needs its spec stored")
        return self.spec


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


