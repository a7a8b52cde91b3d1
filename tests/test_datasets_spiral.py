"""Tests for svae_core.datasets.spiral: the 2016 pinwheel construction and the seeded splits.

References: the 2016 code's matrix form of the construction (rotation matrices stacked and
applied by ``einsum('ti,tij->tj')``), written out here in NumPy; and the points' (radial,
tangential) coordinates recovered from the points alone by inverting the rotation, whose
sample moments are held to 5 standard errors of their Gaussian values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from svae_core.datasets.spiral import make_spiral_dataset, spiral_points


def recover_features(points, labels, num_arms=5, rate=0.25, scale=10.0, iterations=60):
    """(r, τ) from the points and their arms: the fixed point of f = (p/scale)·R(a(r))ᵀ,
    a(r) = 2πk/K + rate·exp(r) (a contraction: |∂f/∂r| ≈ |τ|·rate·e^r ≪ 1)."""
    p = np.asarray(points, np.float64) / scale
    theta = 2 * math.pi * np.asarray(labels) / num_arms
    r = np.linalg.norm(p, axis=-1)
    for _ in range(iterations):
        a = theta + rate * np.exp(r)
        r = p[:, 0] * np.cos(a) - p[:, 1] * np.sin(a)
    tau = p[:, 0] * np.sin(a) + p[:, 1] * np.cos(a)
    return r, tau


def reference_2016(features, labels, num_arms=5, rate=0.25, scale=10.0):
    """The 2016 code's last lines (before its shuffle), on given features and labels."""
    rads = np.linspace(0, 2 * np.pi, num_arms, endpoint=False)
    angles = rads[labels] + rate * np.exp(features[:, 0])
    rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)])
    rotations = np.reshape(rotations.T, (-1, 2, 2))
    return scale * np.einsum("ti,tij->tj", features, rotations)


def test_shapes_dtypes_labels_and_config():
    data = make_spiral_dataset(seed=0)
    assert data.train.points.shape == (500, 2) and data.test.points.shape == (500, 2)
    assert data.train.points.dtype == np.float32 and data.train.labels.dtype == np.int32
    assert data.train.features.shape == (500, 2)
    for split in (data.train, data.test):
        np.testing.assert_array_equal(np.bincount(split.labels, minlength=5), [100] * 5)
        assert not np.all(np.diff(split.labels) >= 0)  # shuffled
    assert data.config == dict(seed=0, points_per_arm=100, test_points_per_arm=100, num_arms=5,
                               radial_std=0.3, tangential_std=0.05, rate=0.25, scale=10.0)
    other = make_spiral_dataset(seed=1, points_per_arm=7, test_points_per_arm=3, num_arms=3)
    np.testing.assert_array_equal(np.bincount(other.train.labels), [7, 7, 7])
    np.testing.assert_array_equal(np.bincount(other.test.labels), [3, 3, 3])


def test_deterministic_by_seed_and_held_out_draws_are_independent():
    a, b, c = make_spiral_dataset(seed=3), make_spiral_dataset(seed=3), make_spiral_dataset(4)
    for x, y in zip(a.train + a.test, b.train + b.test, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a.train.points, c.train.points)
    # Held out: no point shared with the training set, and the test split is its own stream
    # (unchanged when the training set grows).
    train = {tuple(p) for p in a.train.points}
    assert not any(tuple(p) in train for p in a.test.points)
    bigger = make_spiral_dataset(seed=3, points_per_arm=300)
    for x, y in zip(a.test, bigger.test, strict=True):
        np.testing.assert_array_equal(x, y)


def test_points_follow_the_2016_construction():
    data = make_spiral_dataset(seed=5)
    for split in (data.train, data.test):
        ref = reference_2016(split.features.astype(np.float64), split.labels)
        np.testing.assert_allclose(split.points, ref, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(spiral_points(split.features, split.labels), ref,
                                   rtol=1e-12, atol=1e-12)
    # Scale by 10, as the 2016 code: mean norm ≈ 10·E|(r, τ)| ≈ 10.
    assert 9.0 < np.linalg.norm(data.train.points, axis=1).mean() < 11.0
    small = make_spiral_dataset(seed=5, scale=1.0)
    np.testing.assert_allclose(small.train.points * 10.0, data.train.points, rtol=1e-6)


@pytest.mark.parametrize("split", ["train", "test"])
def test_each_arm_lies_near_its_spiral(split):
    """From the points alone: the radial coordinate recovered by undoing each arm's rotation
    has mean 1·scale and sd 0.3·scale, the tangential offset mean 0 and sd 0.05·scale, per arm
    (2000 points per arm; 5 standard errors: s.e.(mean) = sd/√n, s.e.(sd) ≈ sd/√(2n))."""
    n, scale = 2000, 10.0
    kw = dict(points_per_arm=n, test_points_per_arm=n)
    data = getattr(make_spiral_dataset(seed=11, **kw), split)
    r, tau = recover_features(data.points, data.labels)
    np.testing.assert_allclose(np.stack([r, tau], 1), data.features, atol=1e-5)
    for arm in range(5):
        on = data.labels == arm
        for values, mean, sd in ((scale * r[on], scale * 1.0, scale * 0.3),
                                 (scale * tau[on], 0.0, scale * 0.05)):
            assert abs(values.mean() - mean) < 5 * sd / math.sqrt(n), (arm, values.mean())
            assert abs(values.std(ddof=1) - sd) < 5 * sd / math.sqrt(2 * n), (arm, values.std())
        # Near the centre line: every point within 5 tangential sds (scaled) of it.
        centre = spiral_points(np.stack([r[on], 0 * r[on]], 1), data.labels[on])
        assert np.linalg.norm(data.points[on] - centre, axis=1).max() < 5 * 0.05 * scale
        # And the centre line is the spiral ρ = scale·log((−θ_k − φ)/rate) (where r > 0; the
        # rare r < 0 lands on the opposite side of the origin).
        centre = centre[r[on] > 0]
        rho = np.linalg.norm(centre, axis=1)
        phi = np.arctan2(centre[:, 1], centre[:, 0])
        turn = np.mod(-2 * math.pi * arm / 5 - phi, 2 * math.pi)  # = rate·e^r (mod 2π)
        np.testing.assert_allclose(rho, scale * np.log(turn / 0.25), rtol=1e-9)


def test_rejects_bad_arguments():
    for kw in (dict(seed=-1), dict(points_per_arm=0), dict(num_arms=0), dict(rate=0.0),
               dict(scale=-1.0), dict(radial_std=-0.1), dict(tangential_std=float("nan"))):
        with pytest.raises(ValueError):
            make_spiral_dataset(**kw)
