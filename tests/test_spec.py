"""TransitionSpec, Transition, Batch and the cast rules of rlmemlib.spec."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import rlmemlib as rm
from rlmemlib.spec import FIELDS, cast_array, cast_flag, check_batch_size, narrowest_int_dtype

BOX4 = spaces.Box(-1.0, 1.0, (4,), np.float32)


# ---------------------------------------------------------------------- CartPole
def test_cartpole_spec_is_narrow_and_39_bytes(cartpole_spec):
    spec = cartpole_spec
    assert spec.obs_shape == (4,) and spec.obs_dtype == np.float32
    assert spec.action_shape == () and spec.action_dtype == np.uint8  # Discrete(2): one byte
    assert spec.reward_dtype == np.float32
    assert (spec.action_low, spec.action_high) == (0, 1)
    assert spec.obs_nbytes == 16 and spec.action_nbytes == 1
    assert spec.nbytes == 39  # 2 * 16 (obs, next_obs) + 1 (action) + 4 (reward) + 2 (flags)
    assert spec.record_dtype.itemsize == spec.nbytes


def test_from_env_equals_from_spaces():
    env = gym.make("CartPole-v1")
    assert rm.TransitionSpec.from_env(env) == rm.TransitionSpec.from_spaces(env.observation_space,
                                                                            env.action_space)
    spec64 = rm.TransitionSpec.from_env(env, reward_dtype=np.float64)
    assert spec64.reward_dtype == np.float64 and spec64.nbytes == 43
    env.close()


# ---------------------------------------------------------------------- action spaces
ACTION_SPACES = [
    # space, shape, dtype, low, high
    (spaces.Discrete(2), (), np.uint8, 0, 1),
    (spaces.Discrete(256), (), np.uint8, 0, 255),
    (spaces.Discrete(257), (), np.uint16, 0, 256),
    (spaces.Discrete(3, start=-1), (), np.int8, -1, 1),
    (spaces.Discrete(5, start=250), (), np.uint8, 250, 254),
    (spaces.Discrete(1, start=-129), (), np.int16, -129, -129),
    (spaces.Discrete(2, start=2**31), (), np.uint32, 2**31, 2**31 + 1),
    (spaces.MultiBinary(3), (3,), np.uint8, 0, 1),
    (spaces.MultiBinary([2, 3]), (2, 3), np.uint8, 0, 1),
    (spaces.MultiDiscrete([3, 5]), (2,), np.uint8, 0, 4),
    (spaces.MultiDiscrete([3, 5], start=[-2, 0]), (2,), np.int8, -2, 4),
    (spaces.MultiDiscrete([300, 2]), (2,), np.uint16, 0, 299),
    (spaces.Box(0, 255, (2,), np.int64), (2,), np.uint8, None, None),
    (spaces.Box(-5, 5, (), np.int32), (), np.int8, None, None),
    (spaces.Box(-1000, 70000, (3,), np.int64), (3,), np.int32, None, None),
    (spaces.Box(-1.0, 1.0, (2,), np.float32), (2,), np.float32, None, None),
    (spaces.Box(-1.0, 1.0, (2,), np.float64), (2,), np.float64, None, None),
]


@pytest.mark.parametrize("space, shape, dtype, low, high", ACTION_SPACES, ids=repr)
def test_action_space_layout(space, shape, dtype, low, high):
    spec = rm.TransitionSpec.from_spaces(BOX4, space)
    assert spec.action_shape == shape
    assert spec.action_dtype == np.dtype(dtype)
    assert (spec.action_low, spec.action_high) == (low, high)
    action_nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    assert spec.nbytes == 2 * 16 + action_nbytes + 4 + 2
    assert spec.record_dtype.itemsize == spec.nbytes
    # every value of the space fits the chosen dtype and passes the cast unchanged
    space.seed(0)
    for _ in range(20):
        value = space.sample()
        cast = spec.cast_action(value)
        assert np.array_equal(np.asarray(cast, dtype=np.float64), np.asarray(value, dtype=np.float64))
        assert np.asarray(cast).dtype == spec.action_dtype


OBS_SPACES = [
    (spaces.Box(0, 255, (84, 84), np.uint8), (84, 84), np.uint8),
    (spaces.Box(0, 255, (3,), np.int64), (3,), np.uint8),      # int Box: narrowest exact dtype
    (spaces.Box(-3, 3, (2, 2), np.int16), (2, 2), np.int8),
    (spaces.Box(-np.inf, np.inf, (4,), np.float32), (4,), np.float32),
    (spaces.Box(-1.0, 1.0, (2,), np.float16), (2,), np.float16),
    (spaces.Box(-1.0, 1.0, (2,), np.float64), (2,), np.float64),
    (spaces.Discrete(10), (), np.uint8),
    (spaces.Discrete(70000), (), np.uint32),
    (spaces.MultiBinary(4), (4,), np.uint8),
    (spaces.MultiDiscrete([4, 4, 4]), (3,), np.uint8),
]


@pytest.mark.parametrize("space, shape, dtype", OBS_SPACES, ids=repr)
def test_observation_space_layout(space, shape, dtype):
    spec = rm.TransitionSpec.from_spaces(space, spaces.Discrete(2))
    assert spec.obs_shape == shape and spec.obs_dtype == np.dtype(dtype)
    obs_nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    assert spec.obs_nbytes == obs_nbytes
    assert spec.nbytes == 2 * obs_nbytes + 1 + 4 + 2
    assert spec.record_dtype.itemsize == spec.nbytes
    assert spec.record_dtype.names == FIELDS
    space.seed(0)
    value = space.sample()
    assert np.array_equal(spec.cast_obs(value), np.asarray(value))


@pytest.mark.parametrize("space", [
    spaces.Tuple([spaces.Discrete(2)]),
    spaces.Dict({"a": spaces.Discrete(2)}),
    spaces.Text(5),
    spaces.Sequence(spaces.Discrete(2)),
], ids=lambda s: type(s).__name__)
def test_unsupported_spaces_are_refused(space):
    name = type(space).__name__
    with pytest.raises(TypeError, match=f"action_space is a {name}; expected Box, Discrete"):
        rm.TransitionSpec.from_spaces(BOX4, space)
    with pytest.raises(TypeError, match=f"observation_space is a {name}; expected Box"):
        rm.TransitionSpec.from_spaces(space, spaces.Discrete(2))


@pytest.mark.parametrize("low, high, dtype", [
    (0, 1, np.uint8), (0, 255, np.uint8), (0, 256, np.uint16), (-1, 1, np.int8),
    (-128, 127, np.int8), (-129, 0, np.int16), (-1, 300, np.int16), (0, 2**32 - 1, np.uint32),
    (0, 2**64 - 1, np.uint64), (-2**63, 2**63 - 1, np.int64), (5, 5, np.uint8),
])
def test_narrowest_int_dtype(low, high, dtype):
    assert narrowest_int_dtype(low, high) == np.dtype(dtype)


def test_narrowest_int_dtype_refuses_bad_ranges():
    with pytest.raises(ValueError, match="empty range: low 2 is above high 1"):
        narrowest_int_dtype(2, 1)
    with pytest.raises(ValueError, match=r"no integer dtype holds the range \[-1, 18446744073709551615\]"):
        narrowest_int_dtype(-1, 2**64 - 1)


# ---------------------------------------------------------------------- TransitionSpec itself
def test_spec_normalizes_shapes_and_dtypes():
    spec = rm.TransitionSpec([np.int64(2), 3], "float32", [np.int32(2)], "int16")
    assert spec.obs_shape == (2, 3) and all(type(n) is int for n in spec.obs_shape)
    assert spec.action_shape == (2,) and spec.action_dtype == np.int16
    assert spec.obs_dtype == np.float32 and isinstance(spec.obs_dtype, np.dtype)
    assert spec == rm.TransitionSpec((2, 3), np.float32, (2,), np.int16)
    assert hash(spec) == hash(rm.TransitionSpec((2, 3), np.float32, (2,), np.int16))
    with pytest.raises(Exception):  # frozen
        spec.obs_shape = (1,)


@pytest.mark.parametrize("kwargs, match", [
    (dict(obs_dtype=object), "obs_dtype must be a numeric dtype, got object"),
    (dict(obs_dtype=np.complex64), "obs_dtype must be a numeric dtype, got complex64"),
    (dict(action_dtype="U3"), "action_dtype must be a numeric dtype, got <U3"),
    (dict(reward_dtype=np.int32), "reward_dtype must be a float dtype, got int32"),
])
def test_spec_refuses_non_numeric_dtypes(kwargs, match):
    args = dict(obs_shape=(2,), obs_dtype=np.float32) | kwargs
    with pytest.raises(TypeError, match=match):
        rm.TransitionSpec(**args)


def test_empty_batch(cartpole_spec):
    batch = cartpole_spec.empty_batch(5)
    assert isinstance(batch, rm.Batch) and len(batch) == 5
    assert [a.shape for a in batch] == [(5, 4), (5,), (5,), (5, 4), (5,), (5,)]
    assert [a.dtype for a in batch] == [np.float32, np.uint8, np.float32, np.float32, np.bool_, np.bool_]
    assert batch.nbytes == 5 * cartpole_spec.nbytes
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        cartpole_spec.empty_batch(0)
    with pytest.raises(TypeError, match="batch_size must be a positive int, got 2.5"):
        cartpole_spec.empty_batch(2.5)


# ---------------------------------------------------------------------- Transition and Batch
def test_transition_is_a_named_tuple_in_field_order():
    t = rm.Transition(obs=1, action=2, reward=3.0, next_obs=4, terminated=True, truncated=False)
    assert t._fields == FIELDS == ("obs", "action", "reward", "next_obs", "terminated", "truncated")
    obs, action, reward, next_obs, terminated, truncated = t
    assert (obs, action, reward, next_obs, terminated, truncated) == (1, 2, 3.0, 4, True, False)
    assert t == rm.Transition(1, 2, 3.0, 4, True, False)


def test_batch_iterates_its_fields_in_order():
    arrays = [np.zeros((3, 2)), np.ones(3, np.uint8), np.full(3, 2.0, np.float32),
              np.zeros((3, 2)), np.zeros(3, bool), np.ones(3, bool)]
    batch = rm.Batch(*arrays)
    assert len(batch) == 3
    assert all(a is b for a, b in zip(batch, arrays))
    assert [batch.obs, batch.action, batch.reward, batch.next_obs, batch.terminated,
            batch.truncated] == list(batch)
    assert batch.nbytes == sum(a.nbytes for a in arrays)


# ---------------------------------------------------------------------- cast rules
@pytest.mark.parametrize("value, exc, match", [
    (1.5, ValueError, "action must be a whole number for dtype uint8, got 1.5"),
    (np.float32(0.5), ValueError, "action must be a whole number"),
    (math.nan, ValueError, "action must be a whole number"),
    (math.inf, ValueError, "action must be a whole number"),
    (10**6, ValueError, r"action is 1000000, expected an int in \[0, 1\] from the action space"),
    (10**30, ValueError, r"expected an int in \[0, 1\]"),
    (-1, ValueError, r"action is -1, expected an int in \[0, 1\]"),
    (2, ValueError, r"action is 2, expected an int in \[0, 1\]"),
    (np.int64(2), ValueError, r"action is 2, expected an int in \[0, 1\]"),
    (np.array(2), ValueError, r"action is 2, expected an int in \[0, 1\]"),
    ("1", TypeError, "action must be an int for dtype uint8, got '1'"),
    (None, TypeError, "action must be an int for dtype uint8, got None"),
    (np.array([1]), TypeError, "action must be an int"),
    (1 + 0j, TypeError, "action must be an int"),
])
def test_discrete_action_cast_refuses_what_would_change(cartpole_spec, value, exc, match):
    with pytest.raises(exc, match=match):
        cartpole_spec.cast_action(value)


@pytest.mark.parametrize("value", [0, 1, np.int64(1), np.uint8(0), 1.0, np.float32(0.0), np.array(1)])
def test_discrete_action_cast_accepts_exact_values(cartpole_spec, value):
    cast = cartpole_spec.cast_action(value)
    assert type(cast) is np.uint8 and cast == value


def test_array_action_cast():
    spec = rm.TransitionSpec.from_spaces(BOX4, spaces.MultiBinary(3))
    assert spec.cast_action([1, 0, 1]).dtype == np.uint8
    with pytest.raises(ValueError, match=r"action has values in \[0, 2\], expected values in \[0, 1\]"):
        spec.cast_action([0, 1, 2])
    with pytest.raises(ValueError, match=r"action has shape \(2,\), expected \(3,\)"):
        spec.cast_action([0, 1])
    with pytest.raises(ValueError, match="action must hold whole numbers for dtype uint8"):
        spec.cast_action([0, 0.5, 1])
    with pytest.raises(ValueError, match="action has values down to -1, which do not fit dtype uint8"):
        spec.cast_action([0, -1, 1])


@pytest.mark.parametrize("value, exc, match", [
    ("1.0", TypeError, "reward must be a real number, got '1.0' \\(str\\)"),
    (None, TypeError, "reward must be a real number, got None"),
    (True, TypeError, "reward must be a real number, got True \\(bool\\)"),
    (1 + 2j, TypeError, "reward must be a real number"),
    (np.array([1.0]), TypeError, "reward must be a real number"),
    (1e39, ValueError, r"reward is 1e\+39, which overflows dtype float32"),
    (-1e39, ValueError, r"reward is -1e\+39, which overflows dtype float32"),
    (np.float64(1e39), ValueError, "reward is 1e\\+39, which overflows dtype float32"),
    (10**39, ValueError, "reward is 10+, which overflows dtype float32"),
    (10**400, ValueError, "reward is 10+.*, which overflows dtype float32"),
], ids=lambda v: repr(v)[:20] if not isinstance(v, str) else "")
def test_reward_cast_refuses(cartpole_spec, value, exc, match):
    with pytest.raises(exc, match=match):
        cartpole_spec.cast_reward(value)


@pytest.mark.parametrize("value", [1.0, -0.0, math.inf, -math.inf, 3.4e38, 1e-45, 1, np.float64(0.1),
                                   np.float32(2.5), np.int64(-3), np.array(1.5)])
def test_reward_cast_accepts_real_numbers(cartpole_spec, value):
    cast = cartpole_spec.cast_reward(value)
    assert type(cast) is np.float32
    assert cast.tobytes() == np.asarray(value).astype(np.float32).tobytes()  # -0.0 stays -0.0


def test_reward_cast_keeps_nan(cartpole_spec):
    assert math.isnan(cartpole_spec.cast_reward(math.nan))


@pytest.mark.parametrize("value, exc, match", [
    ("abcd", TypeError, "obs must be numeric, got text 'abcd'"),
    (b"abcd", TypeError, "obs must be numeric, got text"),
    ([1, [2], 3, 4], TypeError, r"obs could not be read as an array of shape \(4,\)"),
    (np.zeros(4, complex), TypeError, "obs must be numeric, got dtype complex128"),
    ([None] * 4, TypeError, "obs must be numeric, got dtype object"),
    (np.zeros(3, np.float32), ValueError, r"obs has shape \(3,\), expected \(4,\) from the observation space"),
    (np.zeros((4, 1), np.float32), ValueError, r"obs has shape \(4, 1\), expected \(4,\)"),
    (None, ValueError, r"obs has shape \(\), expected \(4,\)"),
    (np.full(4, 1e39), ValueError, "obs has values that overflow dtype float32"),
])
def test_obs_cast_refuses(cartpole_spec, value, exc, match):
    with pytest.raises(exc, match=match):
        cartpole_spec.cast_obs(value)


def test_obs_cast_names_next_obs(cartpole_spec):
    with pytest.raises(ValueError, match=r"next_obs has shape \(5,\), expected \(4,\)"):
        cartpole_spec.cast_obs(np.zeros(5), "next_obs")


def test_obs_cast_returns_a_matching_array_without_copy(cartpole_spec):
    obs = np.arange(4, dtype=np.float32)
    assert cartpole_spec.cast_obs(obs) is obs
    as64 = cartpole_spec.cast_obs(np.array([0.1, -0.0, np.inf, np.nan]))
    assert as64.dtype == np.float32
    assert as64.tobytes() == np.array([0.1, -0.0, np.inf, np.nan]).astype(np.float32).tobytes()
    assert cartpole_spec.cast_obs([1, 2, 3, 4]).dtype == np.float32


@pytest.mark.parametrize("value, match", [
    ([1, 300], "obs has values up to 300, which do not fit dtype uint8 \\[0, 255\\]"),
    ([-1, 0], "obs has values down to -1, which do not fit dtype uint8"),
    ([1.5, 2], "obs must hold whole numbers for dtype uint8"),
    ([np.nan, 2], "obs must hold whole numbers for dtype uint8"),
    (np.array([2**40, 0], np.int64), "obs has values up to 1.09951e\\+12"),
])
def test_int_obs_cast_refuses_what_would_change(value, match):
    with pytest.raises(ValueError, match=match):
        cast_array(value, (2,), np.dtype(np.uint8), "obs")


def test_int_obs_cast_accepts_exact_values():
    out = cast_array(np.array([1.0, 255.0]), (2,), np.dtype(np.uint8), "obs")
    assert out.dtype == np.uint8 and out.tolist() == [1, 255]
    out = cast_array([True, False], (2,), np.dtype(np.bool_), "obs")
    assert out.dtype == np.bool_
    with pytest.raises(ValueError, match="obs must hold only 0 and 1 for dtype bool"):
        cast_array([2, 0], (2,), np.dtype(np.bool_), "obs")


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), (np.True_, True), (np.False_, False), (1, True), (0, False),
    (np.int64(1), True), (np.array(True), True), (np.array(0), False),
])
def test_flag_cast_accepts_bools(value, expected):
    assert cast_flag(value, "terminated") is expected


@pytest.mark.parametrize("value", [2, -1, "yes", "True", None, 1.0, 0.5, np.array([1]), np.array(2), [True]])
def test_flag_cast_refuses(value):
    with pytest.raises(TypeError, match="truncated must be a bool, got"):
        cast_flag(value, "truncated")


@pytest.mark.parametrize("value, exc", [(0, ValueError), (-1, ValueError), (2.5, TypeError),
                                        (True, TypeError), ("8", TypeError), (None, TypeError),
                                        (np.float64(8.0), TypeError)])
def test_check_batch_size_refuses(value, exc):
    with pytest.raises(exc, match="batch_size must be a positive int, got"):
        check_batch_size(value)


def test_check_batch_size_accepts_numpy_ints():
    assert check_batch_size(np.int64(8)) == 8 and type(check_batch_size(np.int64(8))) is int
