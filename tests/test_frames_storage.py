"""FramePool on memory-mapped files (``rlmemlib.storage.memmap``): the same contract, its arrays
in a folder.

The reference is ``ListMemory`` fed the same transitions, as in ``test_frames.py``: every
transition held and every sampled batch equal, bit for bit, raw or compressed, through the
ring's growth, a ``flush``, a ``reopen`` and the adds that follow.
"""

from __future__ import annotations

import numpy as np
import pytest

import rlmemlib as rm
from rlmemlib import storage
from test_frames import assert_same_contents, ref_copy, state, stream, tiny_spec

OPS = ["slide"] * 6 + ["end", "zero_pad", "slide", "disjoint", "jump", "truncate", "same", "reset"]


def items(n: int, k: int = 4, frame=(6, 6), seed: int = 3) -> list:
    return list(stream((OPS * (n // len(OPS) + 1))[:n], k, seed, frame=frame, values=200))


def file_backed(pool, folder) -> list:
    """Every array the pool stores data in, each checked to be a view of a file in ``folder``."""
    arrays = {name: getattr(pool, name) for name in ("obs_ref", "next_ref", "action", "reward",
                                                     "flags", "depth")}
    store = pool._store
    if pool.compress:
        arrays.update(frame_at=store.at, frame_size=store.size)
        arrays.update({f"chunk {i}": c for i, c in enumerate(store.chunks)})
    else:
        arrays["frames"] = store.frames
    for name, arr in arrays.items():
        assert isinstance(arr.base, np.memmap), f"{name} is not memory-mapped"
        assert arr.base.filename is not None and str(folder) in str(arr.base.filename), name
    return list(arrays)


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_a_memmapped_frame_pool_keeps_the_contract_and_its_arrays_in_files(tmp_path, compress):
    spec = tiny_spec(4, frame=(6, 6))
    pool = storage.memmap(rm.FramePool, tmp_path, 20, spec, compress=compress)
    ref = rm.ListMemory(20)
    slots = pool.slots
    for n, t in enumerate(items(120), start=1):
        pool.add(*t)
        ref.add(*ref_copy(t))
        if n % 15 == 0:
            assert_same_contents(pool, ref, seed=n)
    assert pool.slots > slots  # non-overlapping stacks grew the ring: new arrays, new files
    assert type(pool).__name__ == "MemmapFramePool" and isinstance(pool, rm.FramePool)
    names = file_backed(pool, tmp_path)
    assert {"frames" if not compress else "frame_at", "depth", "obs_ref"} <= set(names)
    assert_same_contents(pool, ref)


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_a_reopened_frame_pool_holds_the_same_and_goes_on_the_same(tmp_path, compress):
    spec = tiny_spec(4, frame=(6, 6))
    stream_ = items(160)
    pool = storage.memmap(rm.FramePool, tmp_path, 25, spec, compress=compress)
    for t in stream_[:70]:
        pool.add(*t)
    pool.flush()
    again = storage.reopen(tmp_path)
    assert type(again).__name__ == "MemmapFramePool" and again.compress == compress
    assert state(again) == state(pool)
    file_backed(again, tmp_path)
    for t in stream_[70:]:  # both go on alike: same contents, same frames shared
        pool.add(*t)
        again.add(*t)
        assert state(again) == state(pool)


def test_a_memmapped_frame_pool_refuses_bad_input_and_changes_nothing(tmp_path):
    pool = storage.memmap(rm.FramePool, tmp_path, 10, tiny_spec(4, frame=(6, 6)))
    for t in items(15):
        pool.add(*t)
    before = state(pool)
    with pytest.raises(ValueError, match=r"obs has shape \(3, 6, 6\), expected \(4, 6, 6\)"):
        pool.add(np.zeros((3, 6, 6), np.uint8), 0, 0.0, np.zeros((4, 6, 6), np.uint8), False, False)
    with pytest.raises(ValueError, match=r"action\[1\] is 9"):
        pool.add_batch(np.zeros((2, 4, 6, 6), np.uint8), np.array([0, 9]), np.zeros(2),
                       np.zeros((2, 4, 6, 6), np.uint8), np.zeros(2, bool), np.zeros(2, bool))
    assert state(pool) == before


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_flushing_a_frame_pool_writes_a_copy_of_what_it_holds(tmp_path, compress):
    """storage's docstring: a FramePool's flush writes its held frames again, in order, to
    ``saved-*`` files, and reopen reads that copy (lazy reopening is CircularPool's alone)."""
    spec = tiny_spec(4, frame=(6, 6))
    pool = storage.memmap(rm.FramePool, tmp_path, 25, spec, compress=compress)
    for t in items(70):
        pool.add(*t)
    pool.flush()
    copy = tmp_path / ("saved-blobs.npy" if compress else "saved-frames.npy")
    assert copy.exists()
    held = np.load(copy)
    if compress:  # every held frame's compressed bytes, once more
        sizes = np.load(tmp_path / "saved-frame_size.npy")
        assert len(sizes) == pool.frames_held and held.nbytes == int(sizes.sum()) > 0
    else:
        assert held.shape == (pool.frames_held, 6, 6)  # every held frame, once more
    again = storage.reopen(tmp_path)
    assert state(again) == state(pool)
