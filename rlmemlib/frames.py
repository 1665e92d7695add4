"""A replay memory for stacked frames: each frame stored once, stacks rebuilt when read.

An Atari agent sees a stack of the last ``k`` frames (``FrameStackObservation``), and one
step's ``next_obs`` stack shares ``k - 1`` frames with its ``obs`` stack, which is the previous
step's ``next_obs``. A pool of stacks stores each frame ``2k`` times; this one stores it once.

Design choices and their memory trade-off:

* **Rows and frames.** Each transition is a row: the action, the reward, the two flags in one
  byte, and two int32 references, to the newest frame of its ``obs`` stack and of its
  ``next_obs`` stack. Frames live apart, in a ring of *slots*, in the order they arrived.
* **How a stack is found.** The frames of a stack are the slots just before its newest one.
  Each slot keeps one byte, its ``depth``: how many distinct older frames lie under it in its
  stack (at most ``k - 1``). The stack whose newest frame is slot ``s`` holds the slots
  ``s - min(j, depth[s])`` for ``j = k - 1, ..., 0``: where the depth runs out, the bottom frame
  repeats. That is exactly how ``FrameStackObservation`` pads the first stack of an episode
  (it repeats the first frame), and a stack padded with zeros stores one zero frame.
* **Exact, verified by bytes.** ``add`` shares frames only where the bytes say so: ``obs``
  reuses the previous transition's ``next_obs`` stack when their bytes are equal, and
  ``next_obs`` reuses the ``k - 1`` frames of ``obs`` when they are the same bytes shifted by
  one frame. Anything else (an episode start, a truncation, stacks that do not overlap) is
  stored as a new stack. Nothing needs to be told where episodes end.
* **Cost.** About one frame per transition, plus one frame per episode start (its first
  frame), plus 9 bytes per transition of references and depths: 1.010 times one frame plus
  the scalar fields on 10,000 real Pong transitions (``bench/frames.py``). The frame ring
  starts with ``capacity + capacity // 128 + k + 2`` slots: a full pool within one episode
  needs ``capacity + k + 1`` (the oldest stack reaches ``k - 1`` frames back, the newest
  ``next_obs`` one frame ahead, and one slot stays free), which leaves room for an episode
  start every 128 steps. When a window holds more, the ring grows by an eighth, and that
  copies the frames once (for a moment both copies exist).
* **Compressed** (``compress="zstd"``): each frame is compressed on its own with zstd
  (level 1) into chunks of one big byte arena, with its position and length in two arrays:
  no Python object per frame (a ``bytes`` object costs 33 bytes of header, and
  zstandard's ``compress()`` returns one that keeps its whole output buffer). Chunks are
  freed as the oldest frames leave. Reading decompresses each frame a batch needs once.
* **Arrays are made by one method**, ``_new_array(name, shape, dtype)`` (shared by every
  memory), which a subclass may override to place them elsewhere (a memory-mapped file, shared
  memory): the rows, the depths, the frames or the compressed chunks and their positions.
* **Saved** as the held frames in order and the rows in logical order (``save``/``load``, see
  :mod:`rlmemlib.persist`); loading checks every reference, depth and compressed frame before
  it builds the pool.
"""

from __future__ import annotations

import numbers
import weakref

import numpy as np
import zstandard

from . import persist
from .memory import TERMINATED, TRUNCATED, _check_capacity, _check_spec, _Memory
from .spec import Batch, Transition, TransitionSpec

__all__ = ["FramePool"]

# FramePool.flags holds the bits TERMINATED and TRUNCATED of CircularPool.flags (from .memory)
SAME, SLIDE = -1, -2  # plans for a next_obs stack (a new stack is planned by its first index)
SPARE = 128  # the frame ring starts with capacity + capacity // SPARE + k + 2 slots
COMPRESSORS = ("zstd",)
_REF = np.int32
_REF_MAX = np.iinfo(_REF).max


class FramePool(_Memory):
    """A ring of transitions whose observations are stacks of frames on axis 0, each frame once.

    ``spec.obs_shape`` is ``(k, *frame_shape)``. Same interface as ``CircularPool``: ``add``,
    ``add_batch``, ``mem[i]``, ``sample(batch_size, rng, out=)``, ``clear``.

    >>> import numpy as np
    >>> spec = TransitionSpec((3, 2), np.uint8, (), np.uint8, action_low=0, action_high=1)
    >>> pool = FramePool(10, spec)
    >>> f = [np.full(2, v, np.uint8) for v in range(6)]
    >>> stacks = [np.stack([f[0], f[0], f[0]]), np.stack([f[0], f[0], f[1]]),
    ...           np.stack([f[0], f[1], f[2]]), np.stack([f[1], f[2], f[3]])]
    >>> for t in range(3):
    ...     pool.add(stacks[t], 1, 0.0, stacks[t + 1], False, t == 2)
    >>> pool.frames_held   # f0, f1, f2, f3: each once
    4
    >>> pool[0].obs[:, 0].tolist(), pool[-1].next_obs[:, 0].tolist()
    ([0, 0, 0], [1, 2, 3])
    """

    obs_ref: np.ndarray     # (capacity,) int32: slot of the newest frame of each obs stack
    next_ref: np.ndarray    # (capacity,) int32: slot of the newest frame of each next_obs stack
    action: np.ndarray      # (capacity, *action_shape)
    reward: np.ndarray      # (capacity,)
    flags: np.ndarray       # (capacity,) uint8: TERMINATED | TRUNCATED
    depth: np.ndarray       # (slots,) uint8: distinct older frames under each frame in its stack
    compress: str | None

    def __init__(self, capacity, spec: TransitionSpec, compress: str | None = None):
        self._capacity = _check_capacity(capacity)
        self.spec = _check_frame_spec(spec)
        if compress is not None and compress not in COMPRESSORS:
            raise ValueError(f"compress must be None or one of {COMPRESSORS}, got {compress!r}")
        self.compress = compress
        self.k = spec.obs_shape[0]
        self._frame_shape = spec.obs_shape[1:]
        self._frame_nbytes = spec.obs_nbytes // self.k
        cap = self._capacity
        self.obs_ref = self._new_array("obs_ref", (cap,), _REF)
        self.next_ref = self._new_array("next_ref", (cap,), _REF)
        self.action = self._new_array("action", (cap, *spec.action_shape), spec.action_dtype)
        self.reward = self._new_array("reward", (cap,), spec.reward_dtype)
        self.flags = self._new_array("flags", (cap,), np.uint8)
        slots = _check_slots(cap + cap // SPARE + self.k + 2)
        self.depth = self._new_array("depth", (slots,), np.uint8)
        self._store = (_ZstdFrames(self, slots) if compress else _RawFrames(self, slots))
        self._lut_term = np.array([bool(f & TERMINATED) for f in range(4)])
        self._lut_trunc = np.array([bool(f & TRUNCATED) for f in range(4)])
        self._out_ok: tuple = ()
        self.clear()

    def clear(self) -> None:
        """Forget every transition; the arrays stay allocated for reuse."""
        self._pos = 0          # row the next transition goes to
        self._len = 0
        self._slot = 0         # slot the next frame goes to
        self._floor = 0        # oldest slot still needed (== _slot when no frame is held)
        self._tail = None      # bytes of the newest next_obs, as the last add stored them
        self._tail_ref = -1    # its newest slot
        self._store.clear()

    # ------------------------------------------------------------------ sizes
    @property
    def slots(self) -> int:
        """Frame slots in the ring (held or free)."""
        return len(self.depth)

    @property
    def frames_held(self) -> int:
        """Frames the held transitions use, each stored once."""
        return (self._slot - self._floor) % self.slots if self._len else 0

    @property
    def frames_nbytes(self) -> int:
        """Bytes of the held frames as stored: raw, or compressed (chunk ends included)."""
        if not self._len:
            return 0
        if self.compress:
            return self._store.compressed_bytes(self._floor)
        return self.frames_held * self._frame_nbytes

    @property
    def nbytes(self) -> int:
        """Bytes of every array the pool holds: rows, depths and frames (or compressed chunks)."""
        rows = sum(a.nbytes for a in (self.obs_ref, self.next_ref, self.action, self.reward, self.flags))
        return rows + self.depth.nbytes + self._store.nbytes

    def _row(self, j: int) -> int:
        return (self._pos - self._len + j) % self._capacity

    # ------------------------------------------------------------------ add
    def add(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        """Store one transition, overwriting the oldest once the pool is full.

        Everything is checked before anything is written: a rejected add changes nothing.
        """
        obs, action, reward, next_obs, flag = self._checked(obs, action, reward, next_obs,
                                                            terminated, truncated)
        self._store_one(obs, action, reward, next_obs, flag)

    def add_batch(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        """Store ``n`` transitions given as arrays with a leading axis of ``n``.

        The same contents and later samples as ``n`` calls of ``add`` in order. The whole batch
        is checked before anything is written: a refused batch changes nothing.
        """
        rows = self.spec.cast_batch(obs, action, reward, next_obs, terminated, truncated)
        flags = rows.terminated.view(np.uint8) * TERMINATED | rows.truncated.view(np.uint8) * TRUNCATED
        for row in zip(rows.obs, rows.action, rows.reward, rows.next_obs, flags.tolist()):
            self._store_one(*row)

    def _store_one(self, obs, action, reward, next_obs, flag) -> None:
        """Write one checked transition: plan its frames, make room, push them, write the row."""
        obs_bytes, next_bytes = obs.tobytes(), next_obs.tobytes()
        reuse_obs = self._len > 0 and obs_bytes == self._tail
        obs_start = self.k if reuse_obs else self._repeats(obs_bytes)
        next_plan = self._plan_next(obs_bytes, next_bytes, reuse_obs)
        pushes = (self.k - obs_start) + {SAME: 0, SLIDE: 1}.get(next_plan, self.k - next_plan)
        self._make_room(self._floor_after(reuse_obs), pushes)
        obs_top = self._tail_ref if reuse_obs else self._push_stack(obs, obs_start)
        if next_plan == SAME:
            next_top = obs_top
        elif next_plan == SLIDE:
            next_top = self._push(next_obs[-1], min(int(self.depth[obs_top]) + 1, self.k - 1))
        else:
            next_top = self._push_stack(next_obs, next_plan)
        self._write_row(obs_top, next_top, action, reward, flag)
        self._tail, self._tail_ref = next_bytes, next_top

    def _repeats(self, stack_bytes: bytes) -> int:
        """Index of the first frame of a stack that differs from the one after it: the frames
        before it repeat it (a padded first stack of an episode), and are stored once."""
        fb = self._frame_nbytes
        # Slices of bytes, not of a memoryview: CPython compares bytes with memcmp, memoryviews
        # item by item (for 7 KB frames, about 50 µs against 1 µs).
        frame = lambda j: stack_bytes[j * fb:(j + 1) * fb]  # noqa: E731
        start = 0
        while start + 1 < self.k and frame(start) == frame(start + 1):
            start += 1
        return start

    def _plan_next(self, obs_bytes: bytes, next_bytes: bytes, reuse_obs: bool) -> int:
        """How ``next_obs`` is stored: ``SAME`` (the obs stack itself), ``SLIDE`` (the obs stack
        shifted by one frame, plus one new frame), or, for a new stack, the index of its first
        stored frame (see ``_repeats``)."""
        if next_bytes == obs_bytes:
            return SAME
        fb = self._frame_nbytes
        shifted = self.k == 1 or next_bytes[:-fb] == obs_bytes[fb:]  # bytes slices: see _repeats
        # A slide puts its new frame in the slot after the obs stack's newest frame, so that
        # newest frame must be the last one pushed (a reused obs stack always is: it is the
        # newest next_obs, and nothing was pushed since).
        if shifted and (not reuse_obs or self._tail_ref == (self._slot - 1) % self.slots):
            return SLIDE
        return self._repeats(next_bytes)

    def _floor_after(self, reuse_obs: bool) -> int:
        """The oldest slot still needed once this add has evicted the oldest transition."""
        if self._len < self._capacity:
            return self._floor if self._len else self._slot
        if self._capacity > 1:
            return self._bottom(int(self.obs_ref[self._row(1)]))
        return self._bottom(self._tail_ref) if reuse_obs else self._slot

    def _bottom(self, top: int) -> int:
        """The oldest slot of the stack whose newest frame is ``top``."""
        return (top - int(self.depth[top])) % self.slots

    def _make_room(self, floor: int, pushes: int) -> None:
        """Release frames below ``floor``; grow the ring if ``pushes`` new frames do not fit."""
        held = (self._slot - floor) % self.slots
        if held + pushes >= self.slots:  # one slot stays free: _slot == _floor means empty
            self._grow(floor, held, held + pushes + 1)
            floor = 0
        self._floor = floor

    def _push_stack(self, stack: np.ndarray, start: int) -> int:
        """Push frames ``start..k-1`` of a new stack (the frames under ``start`` repeat it)."""
        top = -1
        for depth, j in enumerate(range(start, self.k)):
            top = self._push(stack[j], depth)
        return top

    def _push(self, frame: np.ndarray, depth: int) -> int:
        slot = self._slot
        self._store.write(slot, frame)
        self.depth[slot] = depth
        self._slot = slot + 1 if slot + 1 < self.slots else 0
        return slot

    def _write_row(self, obs_top: int, next_top: int, action, reward, flag: int) -> None:
        row = self._pos
        self.obs_ref[row] = obs_top
        self.next_ref[row] = next_top
        self.action[row] = action
        self.reward[row] = reward
        self.flags[row] = flag
        self._pos = row + 1 if row + 1 < self._capacity else 0
        if self._len < self._capacity:
            self._len += 1  # once full, the row just written was the oldest: it is gone now
        self._store.release(self._floor)

    def _grow(self, floor: int, held: int, need: int) -> None:
        """Move the held frames to the front of a larger ring (an eighth larger, or more)."""
        old = self.slots
        new = _check_slots(max(old + old // 8, need + 2 * self.k))
        self._store.relayout(floor, held, new)
        depth = self._new_array("depth", (new,), np.uint8)
        depth[:held] = np.roll(self.depth, -floor)[:held]
        self.depth = depth
        for refs in (self.obs_ref, self.next_ref):  # every held reference moves by -floor
            refs[...] = (refs.astype(np.int64) - floor) % old
        if self._tail_ref >= 0:
            self._tail_ref = (self._tail_ref - floor) % old
        self._slot, self._floor = held, 0

    # ------------------------------------------------------------------ files
    def _saved_state(self):
        """The held frames in arrival order and the rows in logical order (references count
        from the oldest held frame)."""
        held, floor = self.frames_held, self._floor if self._len else 0
        order = (floor + np.arange(held)) % self.slots
        rows = (self._pos - self._len + np.arange(self._len)) % self._capacity
        arrays = {"depth": self.depth.take(order), "action": self.action.take(rows, axis=0),
                  "reward": self.reward.take(rows), "flags": self.flags.take(rows)}
        for name, refs in (("obs_ref", self.obs_ref), ("next_ref", self.next_ref)):
            arrays[name] = ((refs.take(rows).astype(np.int64) - floor) % self.slots).astype(_REF)
        arrays.update(self._store.saved(order))
        return arrays, {"len": self._len, "frames": held, "compress": self.compress}

    @classmethod
    def _from_saved(cls, saved: persist.Saved) -> "FramePool":
        spec, capacity = saved.require_spec(), saved.int("capacity", 1, _REF_MAX)
        compress = saved.meta.get("compress")
        if compress is not None and compress not in COMPRESSORS:
            raise saved.error(f"compress is {compress!r}, expected None or one of {COMPRESSORS}")
        pool = cls(capacity, spec, compress=compress)
        length = saved.int("len", 0, capacity)
        held = saved.int("frames", 0 if length == 0 else 1, 2 * pool.k * length)
        got = {"depth": saved.array("depth", (held,), np.uint8),
               "obs_ref": saved.array("obs_ref", (length,), _REF),
               "next_ref": saved.array("next_ref", (length,), _REF),
               "action": saved.array("action", (length, *spec.action_shape), spec.action_dtype),
               "reward": saved.array("reward", (length,), spec.reward_dtype),
               "flags": saved.array("flags", (length,), np.uint8)}
        pool._check_saved(saved, got, held)
        frames = pool._store.checked_frames(saved, held)
        if held + 1 > pool.slots:
            pool._grow(0, 0, held + 1)
        pool.depth[:held] = got["depth"]
        for slot, frame in enumerate(frames):
            pool._store.put(slot, frame)
        for name in ("obs_ref", "next_ref", "action", "reward", "flags"):
            getattr(pool, name)[:length] = got[name]
        pool._pos, pool._len, pool._slot, pool._floor = length % capacity, length, held, 0
        if length:
            pool._tail_ref = int(got["next_ref"][-1])
            pool._tail = pool[-1].next_obs.tobytes()
        return pool

    def _check_saved(self, saved: persist.Saved, got: dict, held: int) -> None:
        """Every reference inside the frames, the depths within the stacks, and the order the
        eviction relies on: each row's oldest frame is its obs stack's oldest, and never older
        than the previous row's."""
        if np.any(got["flags"] & ~np.uint8(TERMINATED | TRUNCATED)):
            raise saved.error("flags hold bits that no FramePool writes")
        depth = got["depth"].astype(np.int64)
        if np.any(depth > self.k - 1):
            raise saved.error(f"a frame's depth is above k - 1 = {self.k - 1}")
        refs = [got["obs_ref"].astype(np.int64), got["next_ref"].astype(np.int64)]
        if any(np.any((r < 0) | (r >= held)) for r in refs):
            raise saved.error(f"a frame reference is outside the {held} frames stored")
        low, next_low = (r - depth[r] for r in refs)
        if np.any(low < 0) or np.any(next_low < 0):
            raise saved.error("a stack reaches below the first frame stored")
        if len(low) and (low[0] != 0 or np.any(np.diff(low) < 0) or np.any(next_low < low)):
            raise saved.error("the frame references are out of order: this is not a FramePool's file")

    # ------------------------------------------------------------------ read
    def _stack_slots(self, tops: np.ndarray) -> np.ndarray:
        """``(n, k)`` slots of the stacks whose newest frames are ``tops``, oldest first."""
        below = np.arange(self.k - 1, -1, -1)
        steps = np.minimum(below[None, :], self.depth.take(tops)[:, None])
        return (tops[:, None] - steps) % self.slots

    def __getitem__(self, i) -> Transition:
        row = self._row(self._logical(i))
        tops = np.array([self.obs_ref[row], self.next_ref[row]], np.int64)
        stacks = np.zeros((2, *self.spec.obs_shape), self.spec.obs_dtype)
        self._store.read(self._stack_slots(tops).ravel(), stacks.reshape(2 * self.k, *self._frame_shape))
        flag = int(self.flags[row])
        action = self.action[row]
        return Transition(stacks[0], action.copy() if action.ndim else action[()], self.reward[row],
                          stacks[1], bool(flag & TERMINATED), bool(flag & TRUNCATED))

    def sample(self, batch_size, rng, out: Batch | None = None) -> Batch:
        """A batch of ``batch_size`` transitions, written into ``out`` when given.

        Reusing ``out`` allocates no batch arrays, but the next call overwrites them: copy what
        you want to keep.
        """
        n = self._check_sample(batch_size, rng)
        out = self._out_batch(out, n)  # checked before the generator moves: a refusal draws nothing
        idx = rng.integers(0, self._len, size=n)
        rows = idx + (self._pos - self._len)  # take(mode="wrap") maps them onto the ring
        tops = np.concatenate([self.obs_ref.take(rows, mode="wrap"),
                               self.next_ref.take(rows, mode="wrap")])
        slots = self._stack_slots(tops).ravel()
        if out.obs.flags.c_contiguous and out.next_obs.flags.c_contiguous:
            self._store.read_pair(slots, _frames_view(out.obs), _frames_view(out.next_obs))
        else:  # an `out` of strided views: gather first, then copy into them
            both = np.empty((2 * n, *self.spec.obs_shape), self.spec.obs_dtype)
            self._store.read(slots, _frames_view(both))
            out.obs[...], out.next_obs[...] = both[:n], both[n:]
        self.action.take(rows, axis=0, out=out.action, mode="wrap")
        self.reward.take(rows, out=out.reward, mode="wrap")
        flags = self.flags.take(rows, mode="wrap")
        self._lut_term.take(flags, out=out.terminated, mode="clip")
        self._lut_trunc.take(flags, out=out.truncated, mode="clip")
        return out

    def __repr__(self) -> str:
        how = f", compress={self.compress!r}" if self.compress else ""
        return (f"FramePool(len={self._len}, capacity={self._capacity}, frames_held="
                f"{self.frames_held}{how})")


# ====================================================================== frame stores
class _RawFrames:
    """Frames as they are: one array of ``slots`` frames."""

    frames: np.ndarray  # (slots, *frame_shape)

    def __init__(self, pool: FramePool, slots: int):
        self._new_array = weakref.WeakMethod(pool._new_array)  # the pool's allocator, no cycle
        self.frames = pool._new_array("frames", (slots, *pool._frame_shape), pool.spec.obs_dtype)

    def clear(self) -> None:
        pass

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes

    def write(self, slot: int, frame: np.ndarray) -> None:
        self.frames[slot] = frame

    put = write

    def saved(self, order: np.ndarray) -> dict:
        return {"frames": self.frames.take(order, axis=0)}

    def checked_frames(self, saved: persist.Saved, held: int) -> np.ndarray:
        return saved.array("frames", (held, *self.frames.shape[1:]), self.frames.dtype)

    # mode="wrap": the slots are in range anyway, and with out= numpy's default mode ("raise")
    # gathers into a temporary array first, then copies it (several times slower)
    def read(self, slots: np.ndarray, out: np.ndarray) -> None:
        self.frames.take(slots, axis=0, out=out, mode="wrap")

    def read_pair(self, slots: np.ndarray, out_a: np.ndarray, out_b: np.ndarray) -> None:
        half = len(out_a)
        self.frames.take(slots[:half], axis=0, out=out_a, mode="wrap")
        self.frames.take(slots[half:], axis=0, out=out_b, mode="wrap")

    def release(self, floor: int) -> None:
        pass

    def relayout(self, floor: int, held: int, slots: int) -> None:
        frames = self._new_array()("frames", (slots, *self.frames.shape[1:]), self.frames.dtype)
        first = min(held, len(self.frames) - floor)
        frames[:first] = self.frames[floor:floor + first]
        frames[first:held] = self.frames[:held - first]
        self.frames = frames


class _ZstdFrames:
    """Frames compressed one by one with zstd, packed into chunks of one byte arena.

    A frame's bytes never straddle two chunks. Positions are counted over the whole arena
    (chunk number × chunk size + offset), so a chunk is found by a division. Chunks leave from
    the front as the oldest frames are released, and are kept for reuse.
    """

    at: np.ndarray      # (slots,) int64: arena position of each frame's compressed bytes
    size: np.ndarray    # (slots,) uint32: their length
    LEVEL = 1

    def __init__(self, pool: FramePool, slots: int):
        self._new_array = weakref.WeakMethod(pool._new_array)  # the pool's allocator, no cycle
        self._cctx = zstandard.ZstdCompressor(level=self.LEVEL)
        self._dctx = zstandard.ZstdDecompressor()
        self._frame_nbytes = pool._frame_nbytes
        worst = self._frame_nbytes + self._frame_nbytes // 128 + 512  # above zstd's bound
        self.chunk = int(min(16 << 20, max(4 * worst, pool.capacity * self._frame_nbytes // 8192)))
        self.at = pool._new_array("frame_at", (slots,), np.int64)
        self.size = pool._new_array("frame_size", (slots,), np.uint32)
        self.chunks: list[np.ndarray] = []   # live chunks, oldest first
        self._spare: list[np.ndarray] = []   # released chunks, kept for reuse
        self._made = 0
        self.clear()

    def clear(self) -> None:
        self._spare += self.chunks
        self.chunks = []
        self._first = 0   # chunk number of chunks[0]
        self._end = 0     # arena position where the next frame's bytes go

    @property
    def nbytes(self) -> int:
        arena = sum(c.nbytes for c in self.chunks) + sum(c.nbytes for c in self._spare)
        return self.at.nbytes + self.size.nbytes + arena

    def compressed_bytes(self, floor: int) -> int:
        """Arena bytes from the frame in slot ``floor`` to the newest (chunk ends included)."""
        return self._end - int(self.at[floor])

    def _chunk(self, number: int) -> np.ndarray:
        """The chunk with this number, made (or taken from the spares) when it is new."""
        while number - self._first >= len(self.chunks):
            if self._spare:
                self.chunks.append(self._spare.pop())
            else:
                self.chunks.append(self._new_array()(f"chunk{self._made}", (self.chunk,), np.uint8))
                self._made += 1
        return self.chunks[number - self._first]

    def write(self, slot: int, frame: np.ndarray) -> None:
        self.put(slot, self._cctx.compress(np.ascontiguousarray(frame)))

    def put(self, slot: int, blob) -> None:
        """Store one frame's compressed bytes in the arena, at the end."""
        n = len(blob)
        start = self._end
        if start % self.chunk + n > self.chunk:  # does not fit: start the next chunk
            start += self.chunk - start % self.chunk
        chunk = self._chunk(start // self.chunk)
        offset = start % self.chunk
        chunk[offset:offset + n] = np.frombuffer(blob, np.uint8)
        self.at[slot], self.size[slot] = start, n
        self._end = start + n

    def _decoded(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each distinct slot decompressed once: ``(frames as bytes rows, row of each slot)``."""
        distinct, where = np.unique(slots, return_inverse=True)
        blobs, _ = self._blobs(distinct)
        decompress, size = self._dctx.decompress, self._frame_nbytes
        frames = b"".join([decompress(blob, max_output_size=size) for blob in blobs])
        return np.frombuffer(frames, np.uint8).reshape(len(distinct), size), where.ravel()

    def _blobs(self, slots: np.ndarray) -> tuple[list, list]:
        """The compressed bytes of these slots (memoryviews into the chunks) and their sizes."""
        chunk, first = self.chunk, self._first
        views = [memoryview(c) for c in self.chunks]
        sizes = self.size.take(slots).tolist()
        blobs = []
        for start, n in zip(self.at.take(slots).tolist(), sizes):
            offset = start % chunk
            blobs.append(views[start // chunk - first][offset:offset + n])
        return blobs, sizes

    def read(self, slots: np.ndarray, out: np.ndarray) -> None:
        decoded, where = self._decoded(slots)
        decoded.take(where, axis=0, out=out.reshape(len(slots), -1).view(np.uint8), mode="wrap")

    def read_pair(self, slots: np.ndarray, out_a: np.ndarray, out_b: np.ndarray) -> None:
        decoded, where = self._decoded(slots)
        half = len(out_a)
        for dest, rows in ((out_a, where[:half]), (out_b, where[half:])):
            decoded.take(rows, axis=0, out=dest.reshape(len(rows), -1).view(np.uint8), mode="wrap")

    def saved(self, order: np.ndarray) -> dict:
        blobs, _ = self._blobs(order)
        return {"frame_size": self.size.take(order), "blobs": np.frombuffer(b"".join(blobs), np.uint8)}

    def checked_frames(self, saved: persist.Saved, held: int) -> list:
        """The stored compressed frames, each checked to decompress to one frame."""
        sizes = saved.array("frame_size", (held,), np.uint32).astype(np.int64)
        blobs = saved.arrays.get("blobs", np.zeros(0, np.uint8))
        blobs = saved.array("blobs", (int(sizes.sum()),), np.uint8)
        ends = np.cumsum(sizes)
        frames = [blobs[end - n:end].tobytes() for end, n in zip(ends.tolist(), sizes.tolist())]
        for slot, blob in enumerate(frames):
            try:
                ok = len(self._dctx.decompress(blob, max_output_size=self._frame_nbytes)) == self._frame_nbytes
            except zstandard.ZstdError:
                ok = False
            if not ok:
                raise saved.error(f"compressed frame {slot} does not decompress to one frame")
        return frames

    def release(self, floor: int) -> None:
        """Give back the chunks that only hold frames older than slot ``floor`` (a held frame)."""
        oldest = int(self.at[floor]) // self.chunk
        while self._first < oldest:
            self._spare.append(self.chunks.pop(0))
            self._first += 1

    def relayout(self, floor: int, held: int, slots: int) -> None:
        """The frames' positions move to the front of larger tables; their bytes stay put."""
        for name in ("at", "size"):
            old = getattr(self, name)
            new = self._new_array()(f"frame_{name}", (slots,), old.dtype)
            new[:held] = np.roll(old, -floor)[:held]
            setattr(self, name, new)


# ====================================================================== helpers
def _check_frame_spec(spec) -> TransitionSpec:
    spec = _check_spec(spec)
    if len(spec.obs_shape) < 1 or spec.obs_shape[0] < 1:
        raise ValueError(f"spec.obs_shape is {spec.obs_shape}; a FramePool needs stacks of k >= 1 "
                         "frames on axis 0, e.g. (4, 84, 84) from FrameStackObservation")
    if spec.obs_shape[0] > 255:
        raise ValueError(f"spec.obs_shape is {spec.obs_shape}: stacks of at most 255 frames")
    return spec


def _check_slots(slots: int) -> int:
    if slots > _REF_MAX:
        raise ValueError(f"a FramePool holds at most {_REF_MAX:,} frames; {slots:,} were needed")
    return slots


def _frames_view(stacks: np.ndarray) -> np.ndarray:
    """A C-contiguous ``(n, k, *frame)`` array seen as ``(n * k, *frame)`` frames (a view)."""
    return stacks.reshape(stacks.shape[0] * stacks.shape[1], *stacks.shape[2:])
