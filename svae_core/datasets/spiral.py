r"""The spiral ("pinwheel") data of Johnson et al. (2016), Fig. 1: 2-D points on curved arms.

The construction of the 2016 code (``make_pinwheel_data``), for K arms, per point::

    (r, τ) ~ N((1, 0), diag(radial_std², tangential_std²))   radial and tangential coordinates
    a      = 2πk/K + rate · exp(r)                           k = the point's arm (its label)
    point  = scale · (r cos a + τ sin a,  −r sin a + τ cos a)

The last line is the 2016 code's row-vector product (r, τ)·R(a) with R(a) = [[cos a, −sin a],
[sin a, cos a]], i.e. the feature vector turned *clockwise* by a. Points are then shuffled
(labels shuffled with them; the 2016 code returned no labels) and scaled by ``scale``: the
2016 code multiplies by 10 (``10*npr.permutation(...)``), and so does the default here.
Defaults: 5 arms × 100 points, radial sd 0.3, tangential sd 0.05, rate 0.25.

So on arm k the centre line (τ = 0, r > 0) is the curve ρ = scale · log((−θ_k − φ)/rate) in
polar coordinates (ρ, φ), θ_k = 2πk/K, angles mod 2π (a point sits at polar angle φ = −a):
the radius grows as the logarithm of the angle turned clockwise (not the equiangular spiral
ρ ∝ e^{bφ}); an arm turns by rate·(e^{1.3} − e^{0.7}) ≈ 0.41 rad across ±1 radial sd, and a
point's distance from its arm's centre line is about scale·|τ|. Units: points are
dimensionless ("data units"), typically of norm ≈ scale (r ≈ 1 ± 0.3 before scaling);
angles in radians.

Randomness: ``SeedSequence(seed)`` spawns a train and a test stream, so the two splits are
independent draws, and the test set does not depend on the training-set size.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from svae_core.datasets._validation import check_float, check_int

__all__ = [
    "SpiralBenchmark",
    "SpiralData",
    "make_spiral_dataset",
    "spiral_points",
]


class SpiralData(NamedTuple):
    """One split, N = num_arms · points_per_arm points in shuffled order.

    points: (N, 2) float32, the observations (data units).
    labels: (N,) int32 in [0, num_arms), the arm each point was drawn on.
    features: (N, 2) float32, its unscaled (radial r, tangential τ) coordinates before the
        rotation, so that ``points = spiral_points(features, labels, ...)``.
    """

    points: np.ndarray
    labels: np.ndarray
    features: np.ndarray


class SpiralBenchmark(NamedTuple):
    """:func:`make_spiral_dataset`'s result: ``train`` and ``test`` :class:`SpiralData`, and
    ``config``, a dict of every generating parameter."""

    train: SpiralData
    test: SpiralData
    config: dict


def spiral_points(features, labels, num_arms: int = 5, rate: float = 0.25,
                  scale: float = 10.0) -> np.ndarray:
    """The deterministic map of the 2016 code from (radial, tangential) coordinates to points.

    features: (..., 2) (r, τ).  labels: (...) integer arms in [0, num_arms).
    Returns (..., 2) float64: scale · (r cos a + τ sin a, −r sin a + τ cos a),
    a = 2π·label/num_arms + rate·exp(r). With τ = 0 it draws the arms' centre lines.
    """
    features = np.asarray(features, dtype=np.float64)
    r, tau = features[..., 0], features[..., 1]
    angle = 2 * math.pi * np.asarray(labels) / num_arms + rate * np.exp(r)
    c, s = np.cos(angle), np.sin(angle)
    return scale * np.stack([r * c + tau * s, -r * s + tau * c], axis=-1)


def _split(rng, num_arms, per_arm, radial_std, tangential_std, rate, scale):
    n = num_arms * per_arm
    features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    features[:, 0] += 1.0
    labels = np.repeat(np.arange(num_arms), per_arm)
    order = rng.permutation(n)
    features, labels = features[order], labels[order]
    points = spiral_points(features, labels, num_arms, rate, scale)
    return SpiralData(points.astype(np.float32), labels.astype(np.int32),
                      features.astype(np.float32))


def make_spiral_dataset(
    seed: int = 0,
    points_per_arm: int = 100,
    test_points_per_arm: int = 100,
    num_arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.05,
    rate: float = 0.25,
    scale: float = 10.0,
) -> SpiralBenchmark:
    """Seeded train and held-out spiral data (2016 defaults: 5 arms × 100 points).

    Args:
        seed: int ≥ 0.
        points_per_arm, test_points_per_arm: points per arm in each split, ≥ 1.
        num_arms: K ≥ 1.
        radial_std, tangential_std: standard deviations of r and τ (unscaled), ≥ 0.
        rate: angular rate of the arms, > 0.
        scale: the final multiplier, > 0 (the 2016 code: 10).
    Returns:
        :class:`SpiralBenchmark`: ``train.points`` (K·points_per_arm, 2),
        ``train.labels`` (K·points_per_arm,), ``test`` likewise with test_points_per_arm.
    Raises:
        ValueError: on any out-of-range argument.
    """
    seed = check_int("seed", seed, minimum=0)
    points_per_arm = check_int("points_per_arm", points_per_arm)
    test_points_per_arm = check_int("test_points_per_arm", test_points_per_arm)
    num_arms = check_int("num_arms", num_arms)
    radial_std = check_float("radial_std", radial_std, positive=False)
    tangential_std = check_float("tangential_std", tangential_std, positive=False)
    rate = check_float("rate", rate)
    scale = check_float("scale", scale)
    config = dict(seed=seed, points_per_arm=points_per_arm,
                  test_points_per_arm=test_points_per_arm, num_arms=num_arms,
                  radial_std=radial_std, tangential_std=tangential_std, rate=rate, scale=scale)
    train_ss, test_ss = np.random.SeedSequence(seed).spawn(2)
    common = (num_arms, radial_std, tangential_std, rate, scale)
    train = _split(np.random.default_rng(train_ss), common[0], points_per_arm, *common[1:])
    test = _split(np.random.default_rng(test_ss), common[0], test_points_per_arm, *common[1:])
    return SpiralBenchmark(train, test, config)
