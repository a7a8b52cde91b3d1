"""Tests for svae_core.datasets.bouncing_dot: the triangle wave, the renderer and the data set.

References written here: a step-by-step simulation of a point moving at constant speed and
reflected at ±1 (small steps, exact reflection of the overshoot); the reflection law between
consecutive frames (a straight step, or a step folded back at the wall it overshoots); the
Gaussian bump written out pixel by pixel; and Monte Carlo moments of the pixel noise held to
5 standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from svae_core.datasets import (
    BouncingDotBenchmark,
    BouncingDotData,
    bouncing_dot,
    make_bouncing_dot_dataset,
    triangle_wave,
)
from svae_core.datasets.bouncing_dot import frame_positions, render


def simulate_reflecting(start, direction, speed, dt, num_frames, substeps=200):
    """Brute force: x += v·h in steps of h = dt/substeps; on crossing a wall, fold the overshoot
    back and reverse v. Vectorised over sequences; returns positions and velocities (S, T)."""
    x = np.array(start, np.float64).copy()
    v = speed * np.array(direction, np.float64)
    h = dt / substeps
    pos, vel = np.empty(x.shape + (num_frames,)), np.empty(x.shape + (num_frames,))
    pos[..., 0], vel[..., 0] = x, v
    # A dot starting on a wall and pointing out of it bounces at once.
    vel[..., 0] = np.where((x >= 1) & (v > 0) | (x <= -1) & (v < 0), -v, v)
    v = vel[..., 0].copy()
    for k in range(1, num_frames):
        for _ in range(substeps):
            x = x + v * h
            over, under = x > 1, x < -1
            x = np.where(over, 2 - x, np.where(under, -2 - x, x))
            v = np.where(over | under, -v, v)
        pos[..., k], vel[..., k] = x, v
    return pos, vel


# ----------------------------------------------------------------------------- triangle wave


@pytest.mark.parametrize("speed, dt", [(0.75, 0.1), (2.3, 0.05)])
def test_triangle_wave_matches_a_step_by_step_reflecting_simulation(speed, dt):
    rng = np.random.default_rng(0)
    start = np.concatenate([rng.uniform(-1, 1, 20), [1.0, -1.0, 1.0, -1.0, 0.0]])
    direction = np.concatenate([rng.choice([-1.0, 1.0], 20), [1.0, -1.0, -1.0, 1.0, -1.0]])
    pos_ref, vel_ref = simulate_reflecting(start, direction, speed, dt, 60)
    t = dt * np.arange(60)
    pos = triangle_wave(t, speed, start[:, None], direction[:, None])
    assert pos.shape == (25, 60) and pos.dtype == np.float64
    np.testing.assert_allclose(pos, pos_ref, rtol=0, atol=1e-9)
    # Scalar start/direction, one sequence.
    np.testing.assert_allclose(triangle_wave(t, speed, float(start[0]), float(direction[0])),
                               pos_ref[0], rtol=0, atol=1e-9)
    # Sanity of the reference itself: several bounces happened.
    assert np.sum(np.diff(np.sign(vel_ref), axis=1) != 0) > 25


def test_triangle_wave_period_half_period_and_range():
    rng = np.random.default_rng(1)
    t = rng.uniform(-20, 20, 500)
    for speed in (0.75, 1.0, 3.1):
        for start, direction in ((0.3, 1.0), (-0.8, -1.0), (1.0, 1.0)):
            x = triangle_wave(t, speed, start, direction)
            period = 4 / speed
            np.testing.assert_allclose(triangle_wave(t + period, speed, start, direction), x,
                                       rtol=0, atol=1e-9)
            # Half a round trip mirrors the position (the point is on the other leg), so
            # 4/speed is the fundamental period.
            np.testing.assert_allclose(triangle_wave(t + period / 2, speed, start, direction),
                                       -x, rtol=0, atol=1e-9)
            assert np.all((x >= -1) & (x <= 1))
    dense = triangle_wave(np.linspace(0, 4 / 0.75, 10001), 0.75, 0.0, 1.0)
    assert dense.max() == pytest.approx(1.0, abs=1e-6)
    assert dense.min() == pytest.approx(-1.0, abs=1e-6)
    # Starting at 0 moving up: reaches +1 after 1/speed, −1 after 3/speed, back at 4/speed.
    np.testing.assert_allclose(triangle_wave(np.array([0, 1, 2, 3, 4]) / 0.75, 0.75),
                               [0, 1, 0, -1, 0], atol=1e-12)
    # Slope ±speed between walls.
    np.testing.assert_allclose(triangle_wave(0.1, 0.75, 0.2, -1.0), 0.2 - 0.075, atol=1e-12)


def test_velocity_on_a_wall_points_out_of_it():
    """The documented convention: the velocity is the right derivative, so a dot sitting
    exactly on a wall (phase exactly 2 or 0 in binary floating point) already moves away."""
    from svae_core.datasets.bouncing_dot import _triangle_velocity

    assert _triangle_velocity(0.5, 1.0, 0.5, 1.0) == -1.0  # reaches +1 at t = 0.5
    assert _triangle_velocity(0.5, 1.0, -0.5, -1.0) == 1.0  # reaches −1 at t = 0.5
    assert _triangle_velocity(0.0, 0.75, 1.0, 1.0) == -0.75  # starts on +1 heading out
    assert _triangle_velocity(0.0, 0.75, -1.0, -1.0) == 0.75
    assert _triangle_velocity(0.0, 0.75, 1.0, -1.0) == -0.75
    assert triangle_wave(0.5, 1.0, 0.5, 1.0) == 1.0
    # Just before and after the bounce: the velocity is the secant slope.
    assert _triangle_velocity(0.25, 1.0, 0.5, 1.0) == 1.0
    assert _triangle_velocity(0.75, 1.0, 0.5, 1.0) == -1.0


# ----------------------------------------------------------------------------- rendering


def test_render_is_the_gaussian_bump_pixel_by_pixel():
    positions = np.array([[-1.0, -0.33, 0.0], [0.5, 1.0, 1.2]])
    frames = render(positions, num_pixels=7, width=0.2)
    assert frames.shape == (2, 3, 7) and frames.dtype == np.float32
    for idx in np.ndindex(positions.shape):
        for i in range(7):
            g = -1 + 2 * i / 6
            expected = math.exp(-((g - positions[idx]) ** 2) / (2 * 0.2**2))
            assert frames[idx + (i,)] == pytest.approx(expected, rel=1e-6, abs=1e-7)
    # On a pixel centre the peak is exactly 1 there.
    assert render(-1 + 2 * 5 / 19)[5] == pytest.approx(1.0, rel=1e-7)


def test_clean_frames_argmax_tracks_the_position():
    bench = make_bouncing_dot_dataset(seed=2, num_train=20, num_test=5)
    spacing = 2 / 19
    grid = np.linspace(-1, 1, 20)
    for split in (bench.train, bench.test):
        peak = grid[np.argmax(split.clean_frames, axis=-1)]
        # The nearest pixel centre wins: within half a spacing (so certainly within one).
        assert np.max(np.abs(peak - split.positions)) <= spacing / 2 + 1e-6
        # And the bump's weighted centre follows the position in the interior (where the
        # bump is not cut off by the image edge: ≥ 3 widths inside).
        inner = np.abs(split.positions) < 1 - 3 * 0.15
        centre = (split.clean_frames @ grid) / split.clean_frames.sum(-1)
        assert inner.sum() > 100
        assert np.max(np.abs(centre - split.positions)[inner]) < 0.02


# ----------------------------------------------------------------------------- read-out


@pytest.mark.parametrize("num_pixels, width", [(20, 0.15), (32, 0.1)])
def test_frame_positions_reads_clean_frames_to_the_grid_spacing(num_pixels, width):
    rng = np.random.default_rng(0)
    positions = np.concatenate([rng.uniform(-1, 1, 200), np.linspace(-1, 1, 41),
                                [-1.0, 1.0, -0.999, 0.999, -0.97, 0.97]])
    frames = render(positions, num_pixels, width)
    for resolution, extent in [(481, 1.2), (101, 1.0)]:
        read = frame_positions(frames, width, resolution, extent)
        assert read.shape == positions.shape and read.dtype == np.float64
        spacing = 2 * extent / (resolution - 1)
        np.testing.assert_array_less(np.abs(read - positions), spacing + 1e-3)


def test_frame_positions_on_noisy_frames():
    rng = np.random.default_rng(1)
    positions = rng.uniform(-1, 1, 400)
    frames = render(positions) + 0.1 * rng.standard_normal((400, 20))
    err = np.abs(frame_positions(frames) - positions)
    # Measured mean absolute error ≈ 0.012 (three seeds: 0.0116–0.0118) at noise sd 0.1, the
    # data set's default; 0.05 leaves a 4× margin, still well under a pixel (0.105).
    assert err.mean() < 0.05


def test_frame_positions_keeps_the_leading_shape_and_blocks_agree(monkeypatch):
    rng = np.random.default_rng(2)
    positions = rng.uniform(-1, 1, (3, 4, 5))
    frames = render(positions) + 0.1 * rng.standard_normal((3, 4, 5, 20))
    whole = frame_positions(frames)
    assert whole.shape == (3, 4, 5)
    assert frame_positions(frames[0, 0, 0]).shape == ()
    # Forcing blocks of 7 frames (not dividing the 60 frames) gives the same answer.
    monkeypatch.setattr(bouncing_dot, "_READOUT_BLOCK_ENTRIES", 7 * 481)
    np.testing.assert_array_equal(frame_positions(frames), whole)


def test_frame_positions_of_an_empty_frame_is_finite():
    # All candidates tie (the best amplitude is 0); the documented tie-break is the centre.
    for frame in (np.zeros(20), np.zeros((2, 20), np.float32), -np.ones(20)):
        read = frame_positions(frame)
        assert np.all(np.isfinite(read))
        np.testing.assert_array_equal(read, 0.0)


def test_frame_positions_rejects_bad_arguments():
    frames = render(np.zeros(3))
    for kwargs in (dict(width=0.0), dict(resolution=1), dict(resolution=10.0),
                   dict(extent=-1.0)):
        with pytest.raises(ValueError):
            frame_positions(frames, **kwargs)
    for bad in (np.zeros((3, 1)), np.float32(0.0), np.array([0.0, np.nan])):
        with pytest.raises(ValueError):
            frame_positions(bad)


# ----------------------------------------------------------------------------- data set


def test_default_shapes_dtypes_and_constants():
    bench = make_bouncing_dot_dataset()
    assert isinstance(bench, BouncingDotBenchmark)
    assert isinstance(bench.train, BouncingDotData)
    for split, s in ((bench.train, 100), (bench.test, 10)):
        assert split.frames.shape == split.clean_frames.shape == (s, 50, 20)
        assert split.positions.shape == split.velocities.shape == (s, 50)
        for a in split:
            assert a.dtype == np.float32
        assert np.all(np.abs(split.positions) <= 1)
        np.testing.assert_array_equal(np.abs(split.velocities), np.float32(0.75))
    assert bench.train.frames.shape[0] * bench.train.frames.shape[1] == 5000  # the paper's
    assert (bench.dt, bench.speed, bench.noise_sd) == (0.1, 0.75, 0.1)
    assert bench.period_frames == pytest.approx(4 / (0.75 * 0.1))  # ≈ 53.3 frames


def test_data_follow_the_reference_simulation_and_start_uniformly():
    bench = make_bouncing_dot_dataset(seed=7, num_train=200, num_test=3, num_frames=40)
    pos, vel = bench.train.positions, bench.train.velocities
    start, direction = pos[:, 0].astype(np.float64), np.sign(vel[:, 0]).astype(np.float64)
    pos_ref, vel_ref = simulate_reflecting(start, direction, 0.75, 0.1, 40, substeps=20)
    np.testing.assert_allclose(pos, pos_ref, rtol=0, atol=1e-5)
    near_wall = np.abs(np.abs(pos_ref) - 1) < 1e-5  # the direction there is a convention
    np.testing.assert_array_equal(vel[~near_wall], vel_ref[~near_wall])
    np.testing.assert_allclose(bench.train.clean_frames, render(pos_ref), atol=1e-5)
    # Starts ~ U(−1, 1): mean 0 (sd 1/√3), fraction below 0 is ½; directions balanced. 5 s.e.
    n = len(start)
    assert abs(start.mean()) < 5 / math.sqrt(3 * n)
    assert abs(np.mean(start < 0) - 0.5) < 5 * 0.5 / math.sqrt(n)
    assert abs(np.mean(direction > 0) - 0.5) < 5 * 0.5 / math.sqrt(n)
    assert start.min() < -0.9 and start.max() > 0.9


def test_velocity_flips_exactly_at_the_walls():
    """Between consecutive frames the dot either moves straight by v·dt (same velocity next
    frame), or overshoots a wall and is folded back at it (velocity reversed next frame)."""
    bench = make_bouncing_dot_dataset(seed=3, num_train=50, num_test=1, num_frames=80,
                                      noise_sd=0.0)
    pos = bench.train.positions.astype(np.float64)
    vel = bench.train.velocities.astype(np.float64)
    straight = pos[:, :-1] + vel[:, :-1] * 0.1
    bounce = np.abs(straight) > 1
    folded = np.where(bounce, 2 * np.sign(straight) - straight, straight)
    np.testing.assert_allclose(pos[:, 1:], folded, rtol=0, atol=1e-5)
    flips = vel[:, 1:] != vel[:, :-1]
    tie = np.abs(np.abs(straight) - 1) < 1e-6
    np.testing.assert_array_equal(flips[~tie], bounce[~tie])
    # A flip points away from the wall just hit.
    np.testing.assert_array_equal(np.sign(vel[:, 1:][bounce]), -np.sign(straight[bounce]))
    assert bounce.sum() > 50
    # Flip spacing: two bounces per round trip of period_frames frames, so the 79 frame
    # intervals hold L = 79 / (period_frames / 2) ≈ 2.96 bounces: ⌊L⌋ or ⌈L⌉ per sequence,
    # L on average over uniform phases (here P(3) ≈ 0.96: s.e. of the mean of 50 ≈ 0.03).
    per_sequence = flips.sum(axis=1)
    expected = 79 / (bench.period_frames / 2)
    assert set(per_sequence) <= {math.floor(expected), math.ceil(expected)}
    assert abs(per_sequence.mean() - expected) < 0.15


def test_noise_residual_sd_and_mean():
    """100 × 50 × 20 = 10⁵ residuals: s.e.(sd) ≈ 0.1/√(2·10⁵) ≈ 2.2e-4, s.e.(mean) ≈ 3.2e-4;
    tolerance 5 s.e. (plus float32 rounding, ~1e-8)."""
    bench = make_bouncing_dot_dataset(seed=4)
    noise = bench.train.frames.astype(np.float64) - bench.train.clean_frames
    n = noise.size
    assert abs(noise.std() - 0.1) < 5 * 0.1 / math.sqrt(2 * n)
    assert abs(noise.mean()) < 5 * 0.1 / math.sqrt(n)
    # Independent across neighbouring pixels (lag-1 correlation ≈ 0, s.e. 1/√n).
    r = np.corrcoef(noise[..., :-1].ravel(), noise[..., 1:].ravel())[0, 1]
    assert abs(r) < 5 / math.sqrt(n)
    scaled = make_bouncing_dot_dataset(seed=4, noise_sd=0.3)
    np.testing.assert_allclose(scaled.train.frames - scaled.train.clean_frames, 3 * noise,
                               atol=1e-5)
    quiet = make_bouncing_dot_dataset(seed=4, num_train=2, num_test=1, noise_sd=0.0)
    np.testing.assert_array_equal(quiet.train.frames, quiet.train.clean_frames)


def test_seed_determinism_and_independent_splits():
    kw = dict(num_train=4, num_test=3, num_frames=10)
    a, b = make_bouncing_dot_dataset(seed=1, **kw), make_bouncing_dot_dataset(seed=1, **kw)
    c = make_bouncing_dot_dataset(seed=2, **kw)
    for x, y, z in zip(a.train + a.test, b.train + b.test, c.train + c.test, strict=True):
        np.testing.assert_array_equal(x, y)
        assert not np.array_equal(x, z)
    assert not np.array_equal(a.train.positions[:3], a.test.positions)
    # The test split does not depend on num_train; more sequences extend fewer.
    large = make_bouncing_dot_dataset(seed=1, num_train=9, num_test=3, num_frames=10)
    for x, y in zip(a.test, large.test, strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.train, large.train, strict=True):
        np.testing.assert_array_equal(x, y[:4])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(seed=-1), dict(seed=1.5), dict(num_train=0), dict(num_test=0), dict(num_frames=0),
        dict(num_train=True), dict(num_pixels=1), dict(num_pixels=20.0), dict(speed=0.0),
        dict(speed=-0.75), dict(speed=float("inf")), dict(dt=0.0), dict(dt=float("nan")),
        dict(noise_sd=-0.1), dict(noise_sd=float("nan")), dict(width=0.0), dict(width=-1.0),
    ],
)
def test_make_dataset_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_bouncing_dot_dataset(**{"num_train": 1, "num_test": 1, "num_frames": 2, **kwargs})


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(speed=0.0), dict(speed=-1.0), dict(start=1.5), dict(start=np.array([0.0, -1.1])),
        dict(direction=0.0), dict(direction=0.5), dict(t=np.array([0.0, np.nan])),
        dict(t=np.zeros(3), start=np.zeros(2)),
    ],
)
def test_triangle_wave_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        triangle_wave(**{"t": np.zeros(3), **kwargs})


def test_render_rejects_bad_arguments():
    for kwargs in (dict(num_pixels=1), dict(num_pixels=2.5), dict(width=0.0),
                   dict(width=-0.1)):
        with pytest.raises(ValueError):
            render(np.zeros(3), **kwargs)
    with pytest.raises(ValueError):
        render(np.array([0.0, np.inf]))
