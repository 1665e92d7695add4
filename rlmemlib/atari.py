"""Real Atari frames for the course: ale-py's games, grey, 84 × 84, stacked by gymnasium.

Design choices:

* The games come from ``ale-py``, whose wheel ships the game ROMs: nothing is downloaded when
  an environment is made, so the lessons run offline.
* The frames are shrunk from 210 × 160 to 84 × 84 with numpy, not OpenCV. Each output pixel is
  the average of the input pixels its rectangle covers, weighted by the covered area (the
  "area" resampling that DQN-style preprocessing asks of OpenCV), first along the rows, then
  along the columns: each output row is a weighted sum of the three or four input rows it
  overlaps. It is plain numpy, with no matrix product (a BLAS call would start threads that
  fight over the cores of a busy machine). It agrees with OpenCV's ``INTER_AREA`` to within one
  grey level, a rounding difference (``tests/test_atari.py`` compares them when OpenCV is
  installed). OpenCV is then not a dependency of the course: its headless build takes about
  150 MB once installed (version 5.0, measured), for one function.
* ALE's log is set to warnings and errors: its start-up banner, printed to the process's
  stderr, is left out.
* The pipeline is gymnasium's: the game with ``obs_type="grayscale"`` (ALE's own grey
  levels) and the ``-v5`` defaults (each step repeats the action for 4 emulator frames and
  returns the last one; sticky actions: with probability 0.25 the emulator repeats the
  previous action instead), a ``TransformObservation`` wrapper that resizes, and
  ``FrameStackObservation``, which stacks the last ``stack`` frames on axis 0 and pads the
  first stack of an episode by repeating its first frame.
* It differs from DQN's (Nature, 2015) pipeline, which gymnasium's ``AtariPreprocessing``
  follows: there each observation is the pixel-wise maximum of the last two of the 4 skipped
  frames (against sprites that flicker), with no sticky actions and up to 30 no-op actions at
  each reset. The frames are the same size and the stacks the same shape, so every byte count
  of an uncompressed memory is the same; how well the frames compress changes by less than a
  tenth (zstd level 1 over 2,000 random steps: Pong 168 B a frame here, 180 B there; MsPacman
  1,182 B and 1,212 B; ``tests/test_atari.py`` compares the two pipelines).

>>> import numpy as np
>>> frame = np.full((210, 160), 7, np.uint8)
>>> small = resize(frame)
>>> small.shape, small.dtype, int(small.min()), int(small.max())
((84, 84), dtype('uint8'), 7, 7)
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["resize", "make"]

FRAME = (84, 84)


@functools.lru_cache(maxsize=16)
def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Which inputs each output averages, and with what weights: two ``(n_out, taps)`` arrays.

    Output ``i`` covers ``[i * s, (i + 1) * s)`` of the input, ``s = n_in / n_out``, and input
    ``j`` fills ``[j, j + 1)``: its weight is the length of the overlap divided by ``s``. An
    output overlaps at most ``ceil(s) + 1`` inputs; taps past the end weigh 0.
    """
    scale = n_in / n_out
    lo = np.arange(n_out)[:, None] * scale
    index = np.floor(lo).astype(np.intp) + np.arange(int(np.ceil(scale)) + 1)
    overlap = np.minimum(lo + scale, index + 1) - np.maximum(lo, index)
    weight = np.clip(overlap, 0, None) / scale
    return np.minimum(index, n_in - 1), weight


def _area_rows(values: np.ndarray, n_out: int) -> np.ndarray:
    """Area averages along axis 0: a weighted sum of a few gathered rows per output row."""
    index, weight = _taps(values.shape[0], n_out)
    out = weight[:, :1] * values[index[:, 0]]
    for t in range(1, index.shape[1]):
        out += weight[:, t:t + 1] * values[index[:, t]]
    return out


def resize(frame: np.ndarray, shape: tuple[int, int] = FRAME) -> np.ndarray:
    """A 2-D frame shrunk (or grown) to ``shape`` by area averaging, rounded to uint8.

    >>> resize(np.array([[0, 10, 20, 30, 40]], np.uint8), (1, 2))  # each output covers 2.5 inputs
    array([[ 8, 32]], dtype=uint8)
    """
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise ValueError(f"frame must be 2-D (a grey image), got shape {frame.shape}")
    out = _area_rows(_area_rows(frame.astype(np.float64), shape[0]).T, shape[1]).T
    return np.clip(np.rint(out), 0, 255).astype(np.uint8, order="C")  # C order, as frames are


def make(game: str = "Pong", stack: int = 4, shape: tuple[int, int] = FRAME, **kwargs):
    """``ALE/<game>-v5`` with grey frames resized to ``shape`` and stacks of ``stack`` frames.

    Extra keyword arguments go to ``gymnasium.make`` (``frameskip=``,
    ``repeat_action_probability=``, ``max_episode_steps=``, ...). Seed it at ``reset(seed=...)``.
    """
    import ale_py
    import gymnasium as gym
    from gymnasium.spaces import Box
    from gymnasium.wrappers import FrameStackObservation, TransformObservation

    gym.register_envs(ale_py)
    # Warnings and errors only: the emulator's banner on stderr would make outputs vary.
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Warning)
    env = gym.make(f"ALE/{game}-v5", obs_type="grayscale", **kwargs)
    small = Box(0, 255, tuple(shape), np.uint8)
    env = TransformObservation(env, lambda frame: resize(frame, shape), small)
    return FrameStackObservation(env, stack)
