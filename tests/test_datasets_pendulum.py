"""Tests for svae_core.datasets.pendulum: the RK4 pendulum, the renderer and the data set.

References are physics written here: energy conservation without friction, the small-angle
period 2π/√(g/l), the exact large-angle period 2π / (√(g/l) · AGM(1, cos(θ0/2))), the damped
small-angle oscillator with friction, and the bob's position from the documented image
convention.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from svae_core.datasets import (
    make_pendulum_dataset,
    pendulum_energy,
    render_frames,
    simulate_pendulum,
)

G = 9.81


def _agm(a, b):
    for _ in range(40):
        a, b = 0.5 * (a + b), math.sqrt(a * b)
    return a


def _exact_period(amplitude, g_over_l):
    """Period of a frictionless pendulum released from rest at ``amplitude`` (s)."""
    return 2 * math.pi / (math.sqrt(g_over_l) * _agm(1.0, math.cos(amplitude / 2)))


def _measured_period(angle, dt):
    """Mean spacing of upward zero crossings, each located by linear interpolation (s)."""
    i = np.nonzero((angle[:-1] < 0) & (angle[1:] >= 0))[0]
    crossings = (i + angle[i] / (angle[i] - angle[i + 1])) * dt
    assert len(crossings) >= 3, "too few swings to measure a period"
    return (crossings[-1] - crossings[0]) / (len(crossings) - 1)


@pytest.fixture(scope="module")
def default_bench():
    return make_pendulum_dataset(seed=0)


# ----------------------------------------------------------------------------- dynamics


@pytest.mark.parametrize("theta0", [2.5, 3.0])
def test_energy_conserved_for_large_swings(theta0):
    angle, velocity = simulate_pendulum(theta0, 0.0, 100, 0.1, G)
    energy = pendulum_energy(angle, velocity, G)
    drift = np.max(np.abs(energy - energy[0])) / abs(energy[0])
    assert drift < 1e-5
    assert np.max(np.abs(angle)) < math.pi  # released from rest below the top: it swings


def test_energy_conserved_per_sequence_in_a_batch():
    theta0 = np.array([-2.8, -1.0, 0.3, 2.0, 0.0])
    omega0 = np.array([0.5, -3.0, 1.0, 0.0, 7.0])  # the last one rotates (E > g/l)
    angle, velocity = simulate_pendulum(theta0, omega0, 100, 0.1, G)
    energy = pendulum_energy(angle, velocity, G)
    np.testing.assert_allclose(energy, energy[:, :1] * np.ones((1, 100)), rtol=0, atol=1e-6 * G)
    assert energy[-1, 0] > G and np.max(angle[-1]) > 2 * math.pi  # rotation, unwrapped angle


@pytest.mark.parametrize("g_over_l", [G, 4.0])
def test_small_angle_period(g_over_l):
    angle, velocity = simulate_pendulum(0.05, 0.0, 200, 0.1, g_over_l)
    assert velocity[1] < 0  # released at θ > 0, gravity pulls it back towards 0
    period = _measured_period(angle, 0.1)
    np.testing.assert_allclose(period, 2 * math.pi / math.sqrt(g_over_l), rtol=5e-3)


def test_large_angle_period_is_longer_and_matches_the_agm_formula():
    small = _measured_period(simulate_pendulum(0.05, 0.0, 300, 0.1, G)[0], 0.1)
    large = _measured_period(simulate_pendulum(2.5, 0.0, 300, 0.1, G)[0], 0.1)
    assert large / small > 1.5  # exact ratio 1/AGM(1, cos 1.25) ≈ 1.643; linear model: 1
    np.testing.assert_allclose(large, _exact_period(2.5, G), rtol=1e-3)


def test_velocity_is_the_derivative_of_angle():
    dt = 0.01
    angle, velocity = simulate_pendulum(np.array([1.0, -2.5]), np.array([0.0, 1.0]), 300, dt, G)
    central = (angle[:, 2:] - angle[:, :-2]) / (2 * dt)
    np.testing.assert_allclose(central, velocity[:, 1:-1], atol=2e-3)


def test_small_swing_with_friction_is_the_damped_oscillator():
    """θ'' = −kθ − γθ' (sin θ ≈ θ at 1 mrad): θ(t) = e^{−γt/2}(θ0 cos ω_d t + c sin ω_d t),
    ω_d = √(k − γ²/4), c = (ω0 + γθ0/2)/ω_d."""
    k, gamma, theta0, omega0 = 9.81, 0.3, 1e-3, 2e-3
    angle, _ = simulate_pendulum(theta0, omega0, 200, 0.05, g_over_l=k, friction=gamma)
    t = 0.05 * np.arange(200)
    wd = math.sqrt(k - gamma**2 / 4)
    exact = np.exp(-gamma * t / 2) * (theta0 * np.cos(wd * t)
                                      + (omega0 + gamma * theta0 / 2) / wd * np.sin(wd * t))
    np.testing.assert_allclose(angle, exact, rtol=0, atol=1e-9)


def test_friction_drains_the_energy_of_a_large_swing():
    angle, velocity = simulate_pendulum(2.8, 0.0, 300, 0.05, friction=0.1)
    energy = pendulum_energy(angle, velocity)
    assert np.all(np.diff(energy) < 0)
    assert energy[-1] < energy[0] - 0.5 * (energy[0] + 9.81)  # more than half is gone
    bench = make_pendulum_dataset(num_train=2, num_test=1, num_frames=50, friction=0.1)
    e = pendulum_energy(bench.train.angle, bench.train.velocity)
    assert bench.config["friction"] == 0.1 and np.all(np.diff(e, axis=1) < 0)


def test_simulate_shapes_and_initial_state():
    a, v = simulate_pendulum(0.3, 0.1, 7, 0.1)
    assert a.shape == v.shape == (7,) and a.dtype == np.float64
    assert a[0] == 0.3 and v[0] == 0.1
    a, v = simulate_pendulum(np.zeros((2, 1)), np.ones((1, 3)), 5, 0.1)
    assert a.shape == v.shape == (2, 3, 5)
    np.testing.assert_array_equal(a[0], a[1])  # same initial states, same trajectories


# ----------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("size", [24, 32])
def test_bob_centre_of_mass_sits_at_the_angle(size):
    angle = np.linspace(-math.pi, math.pi, 37)
    frames = render_frames(angle, size=size)
    assert frames.shape == (37, size, size) and frames.dtype == np.float32
    c, L = (size - 1) / 2, 0.375 * size
    pix = np.arange(size)
    mass = frames.sum(axis=(1, 2))
    row = np.einsum("shw,h->s", frames, pix) / mass
    col = np.einsum("shw,w->s", frames, pix) / mass
    # θ = 0: straight below the pivot (larger row), θ > 0: to the right (larger column).
    assert np.max(np.hypot(row - (c + L * np.cos(angle)), col - (c + L * np.sin(angle)))) < 0.5
    assert row[18] > c + 0.3 * size and abs(col[18] - c) < 0.5  # angle[18] = 0


def test_render_peak_is_one_on_a_pixel_centre():
    # size 25: c = 12 and L = 0.375·25 = 9.375; θ = 0 puts the bob at row 21.375, between
    # pixels. Use arm_length = 9/25 so the bob lands on pixel (21, 12).
    frame = render_frames(0.0, size=25, arm_length=9 / 25)
    assert frame.shape == (25, 25)
    assert np.unravel_index(np.argmax(frame), frame.shape) == (21, 12)
    np.testing.assert_allclose(frame[21, 12], 1.0, rtol=1e-6)


# ----------------------------------------------------------------------------- data set


def test_default_dataset_shapes_dtypes_and_physics(default_bench):
    for split in (default_bench.train, default_bench.test):
        assert split.frames.shape == split.clean_frames.shape == (100, 100, 24, 24)
        assert split.angle.shape == split.velocity.shape == (100, 100)
        for a in split:
            assert a.dtype == np.float32
        assert np.max(np.abs(split.angle)) < math.pi  # default speed_fraction < 1: all swing
        # Most sequences are far outside the small-angle regime.
        assert np.mean(np.max(np.abs(split.angle), axis=1) > 0.5) > 0.7
    cfg = default_bench.config
    assert cfg["frame_interval"] == pytest.approx(0.1)
    assert cfg["small_angle_period_frames"] == pytest.approx(2 * math.pi / math.sqrt(G) / 0.1)
    # The stored velocity is the derivative of the stored angle at the kept-frame spacing.
    a, v = default_bench.train.angle[0], default_bench.train.velocity[0]
    a_sim, v_sim = simulate_pendulum(float(a[0]), float(v[0]), 100, 0.1, G)
    np.testing.assert_allclose(a, a_sim, atol=1e-5)
    np.testing.assert_allclose(v, v_sim, atol=1e-4)


def test_noise_std_and_mean_match_the_configuration():
    bench = make_pendulum_dataset(seed=3, num_train=20, num_test=1, num_frames=50,
                                  noise_std=0.15)
    noise = bench.train.frames.astype(np.float64) - bench.train.clean_frames
    assert abs(noise.std() - 0.15) < 0.01 * 0.15
    assert abs(noise.mean()) < 1e-3
    quiet = make_pendulum_dataset(seed=3, num_train=2, num_test=1, num_frames=5, noise_std=0.0)
    np.testing.assert_array_equal(quiet.train.frames, quiet.train.clean_frames)


def test_seed_determinism():
    kw = dict(num_train=3, num_test=2, num_frames=10)
    a, b = make_pendulum_dataset(seed=1, **kw), make_pendulum_dataset(seed=1, **kw)
    c = make_pendulum_dataset(seed=2, **kw)
    for x, y, z in zip(a.train + a.test, b.train + b.test, c.train + c.test, strict=True):
        np.testing.assert_array_equal(x, y)
        assert not np.array_equal(x, z)


def test_more_sequences_extend_fewer_and_test_set_ignores_num_train():
    small = make_pendulum_dataset(seed=5, num_train=2, num_test=2, num_frames=10)
    large = make_pendulum_dataset(seed=5, num_train=6, num_test=3, num_frames=10)
    for x, y in zip(small.train, large.train, strict=True):
        np.testing.assert_array_equal(x, y[:2])
    for x, y in zip(small.test, large.test, strict=True):
        np.testing.assert_array_equal(x, y[:2])
    assert not np.array_equal(large.train.angle[:2], large.test.angle[:2])


def test_frame_skip_keeps_every_kth_rendered_frame():
    kw = dict(seed=4, num_train=3, num_test=1, dt=0.05)
    skipped = make_pendulum_dataset(num_frames=20, frame_skip=2, **kw)
    every = make_pendulum_dataset(num_frames=39, frame_skip=1, **kw)
    np.testing.assert_allclose(skipped.train.angle, every.train.angle[:, ::2], atol=1e-6)
    np.testing.assert_allclose(skipped.train.clean_frames, every.train.clean_frames[:, ::2],
                               atol=1e-5)
    assert skipped.config["frame_interval"] == pytest.approx(0.1)


def test_speed_fraction_above_one_allows_rotation():
    bench = make_pendulum_dataset(seed=0, num_train=40, num_test=1, num_frames=40,
                                  speed_fraction=3.0)
    energy = pendulum_energy(bench.train.angle[:, 0], bench.train.velocity[:, 0], G)
    rotating = energy > G
    assert rotating.any() and not rotating.all()
    assert np.all(np.ptp(bench.train.angle[rotating], axis=1) > 2 * math.pi)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(size=0), dict(size=2), dict(size=24.0), dict(num_train=0), dict(num_test=-1),
        dict(num_frames=0), dict(noise_std=-0.1), dict(noise_std=float("nan")), dict(dt=0.0),
        dict(frame_skip=0), dict(g_over_l=-1.0), dict(substeps=0), dict(max_angle=4.0),
        dict(max_angle=0.0), dict(speed_fraction=-1.0), dict(arm_length=0.6),
        dict(bob_sigma=0.0), dict(seed=-1), dict(seed=1.5), dict(friction=-0.1),
    ],
)
def test_make_dataset_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_pendulum_dataset(**{"num_train": 1, "num_test": 1, "num_frames": 2, **kwargs})


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((0.1, 0.0, 0, 0.1), {}), ((0.1, 0.0, 5, 0.0), {}), ((0.1, 0.0, 5, -0.1), {}),
        ((np.nan, 0.0, 5, 0.1), {}), ((np.zeros(3), np.zeros(2), 5, 0.1), {}),
        ((0.1, 0.0, 5, 0.1), dict(g_over_l=0.0)), ((0.1, 0.0, 5, 0.1), dict(substeps=0)),
        ((0.1, 0.0, 5, 0.1), dict(friction=float("nan"))),
    ],
)
def test_simulate_rejects_bad_arguments(args, kwargs):
    with pytest.raises(ValueError):
        simulate_pendulum(*args, **kwargs)


def test_render_rejects_bad_arguments():
    for kwargs in (dict(size=1), dict(arm_length=0.0), dict(arm_length=0.51),
                   dict(bob_sigma=-0.1)):
        with pytest.raises(ValueError):
            render_frames(np.zeros(3), **kwargs)
    with pytest.raises(ValueError):
        render_frames(np.array([0.0, np.inf]))
