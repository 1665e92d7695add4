"""rlmemlib.atari: the numpy resize is area averaging, and the pipeline gives gymnasium's stacks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rlmemlib import atari


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The reference, written the slow way: each output averages the inputs it covers, by area."""
    scale = n_in / n_out
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), int(np.ceil(hi))):
            w[i, j] = (min(hi, j + 1) - max(lo, j)) / scale
    return w


@pytest.mark.parametrize("shape_in, shape_out", [((210, 160), (84, 84)), ((7, 5), (3, 2)),
                                                 ((84, 84), (84, 84)), ((10, 4), (5, 2))])
def test_resize_is_area_averaging(shape_in, shape_out):
    frames = np.random.default_rng(0).integers(0, 256, size=(20, *shape_in), dtype=np.uint8)
    rows, cols = area_matrix(shape_in[0], shape_out[0]), area_matrix(shape_in[1], shape_out[1])
    for frame in frames:
        exact = rows @ frame.astype(np.float64) @ cols.T
        got = atari.resize(frame, shape_out)
        assert got.dtype == np.uint8 and got.shape == shape_out
        assert np.abs(got - exact).max() <= 0.5 + 1e-9  # the exact average, rounded


def test_resize_refuses_a_colour_frame():
    with pytest.raises(ValueError, match=r"frame must be 2-D \(a grey image\), got shape \(210, 160, 3\)"):
        atari.resize(np.zeros((210, 160, 3), np.uint8))


def test_resize_agrees_with_opencv_inter_area():
    cv2 = pytest.importorskip("cv2")  # not a dependency of the course
    frames = np.random.default_rng(1).integers(0, 256, size=(30, 210, 160), dtype=np.uint8)
    for frame in frames:
        theirs = cv2.resize(frame, (84, 84), interpolation=cv2.INTER_AREA)
        assert np.abs(atari.resize(frame).astype(int) - theirs).max() <= 1  # rounding only


def test_make_gives_gymnasium_stacks_seeded_and_padded_at_reset():
    a, b = atari.make("Pong"), atari.make("Pong")
    obs_a, _ = a.reset(seed=3)
    obs_b, _ = b.reset(seed=3)
    assert obs_a.shape == (4, 84, 84) and obs_a.dtype == np.uint8
    assert all(np.array_equal(obs_a[0], f) for f in obs_a)  # the first stack repeats frame 0
    a.action_space.seed(0)
    for _ in range(20):
        action = a.action_space.sample()
        obs_a, *_ = a.step(action)
        obs_b, *_ = b.step(action)
    assert np.array_equal(obs_a, obs_b)  # the same seed and actions, the same frames
    assert np.array_equal(obs_a[1:], a.step(0)[0][:3])  # stacks slide by one frame


def test_the_emulator_banner_is_not_printed():
    code = "from rlmemlib import atari; atari.make('Pong').reset(seed=0)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "A.L.E" not in done.stderr and "Stella" not in done.stderr


def test_resize_returns_a_c_ordered_frame():
    """Frames go to byte-level consumers (zstd, tobytes, buffers) that need C order."""
    small = atari.resize(np.random.default_rng(2).integers(0, 256, (210, 160), dtype=np.uint8))
    assert small.flags.c_contiguous
    import zstandard

    zstandard.ZstdCompressor(level=1).compress(small)  # refuses a non-contiguous array


# ------------------------------------------------------------------ the course's pipeline and DQN's
def _course_frames(game: str, steps: int) -> list:
    """The newest frame of each step through ``atari.make`` (ALE v5: the last of 4 frames,
    sticky actions), and each episode's first frame."""
    env = atari.make(game)
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    frames = [obs[-1]]
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        frames.append(obs[-1])
        if terminated or truncated:
            frames.append(env.reset()[0][-1])
    return frames


def _dqn_frames(game: str, steps: int) -> list:
    """The same game through DQN's pipeline (what gymnasium's AtariPreprocessing does, without
    OpenCV): 4 emulator frames per step, the pixel-wise maximum of the last two, no sticky
    actions, up to 30 no-ops after each reset."""
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Warning)
    env = gym.make(f"ALE/{game}-v5", obs_type="grayscale", frameskip=1, repeat_action_probability=0.0)
    rng = np.random.default_rng(0)
    env.action_space.seed(0)

    def reset(**kwargs):
        frame, _ = env.reset(**kwargs)
        for _ in range(int(rng.integers(1, 31))):
            frame, *_ = env.step(0)
        return atari.resize(frame)

    frames = [reset(seed=0)]
    for _ in range(steps):
        action, last, ended = env.action_space.sample(), [], False
        for _ in range(4):
            frame, _, terminated, truncated, _ = env.step(action)
            last.append(frame)
            if terminated or truncated:
                ended = True
                break
        frames.append(atari.resize(np.maximum(last[-1], last[-2]) if len(last) > 1 else last[-1]))
        if ended:
            frames.append(reset())
    return frames


@pytest.mark.parametrize("steps", [600, pytest.param(2000, marks=pytest.mark.slow)])
@pytest.mark.parametrize("game", ["Pong", "MsPacman"])
def test_frames_compress_alike_through_the_course_pipeline_and_dqns(game, steps):
    """What the lesson's compressed sizes would be under DQN's own preprocessing: within 10%
    (measured: Pong 168 B against 180 B, MsPacman 1,182 B against 1,212 B at 2,000 steps)."""
    import zstandard

    cctx = zstandard.ZstdCompressor(level=1)
    sizes = [np.mean([len(cctx.compress(f)) for f in make(game, steps)])
             for make in (_course_frames, _dqn_frames)]
    assert all(f.shape == (84, 84) for f in _dqn_frames(game, 2))
    assert 0.9 < sizes[0] / sizes[1] < 1.1, sizes
