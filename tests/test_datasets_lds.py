"""Tests for svae_core.datasets.lds: the rotating prior, simulation and observation potentials.

References are closed-form recursions and dense Gaussians in NumPy float64, written here and
sharing no code with svae_core.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svae_core.datasets import (
    missing_span_mask,
    observation_log_constant,
    potentials_from_observations,
    rotating_lds_prior,
    sample_lds,
    sample_observations,
)
from svae_core.inference import lds_smoother


def _np_prior(prior):
    return {k: np.asarray(v, np.float64) for k, v in prior._asdict().items()}


def _prior_marginals(p, T):
    """m_{t+1} = A m_t + b, P_{t+1} = A P_t Aᵀ + Q, and Cov(x_t, x_{t+1}) = P_t Aᵀ."""
    means, covs, cross = [p["m1"]], [p["Q1"]], []
    for _ in range(T - 1):
        cross.append(covs[-1] @ p["A"].T)
        means.append(p["A"] @ means[-1] + p["b"])
        covs.append(p["A"] @ covs[-1] @ p["A"].T + p["Q"])
    return np.stack(means), np.stack(covs), np.stack(cross)


# ----------------------------------------------------------------------------- rotating prior


def test_rotating_prior_2d_is_decayed_rotation():
    angle, decay = 2 * math.pi / 12, 0.9
    prior = rotating_lds_prior(dim=2, angle=angle, decay=decay, q=0.2)
    A = np.asarray(prior.A, np.float64)
    c, s = math.cos(angle), math.sin(angle)
    np.testing.assert_allclose(A, decay * np.array([[c, -s], [s, c]]), atol=1e-6)
    eig = np.linalg.eigvals(A)
    np.testing.assert_allclose(np.abs(eig), decay, rtol=1e-5)
    np.testing.assert_allclose(np.sort(np.abs(np.angle(eig))), [angle, angle], rtol=1e-5)
    # A rotates anticlockwise: e_1 goes to (cos θ, sin θ)·decay.
    np.testing.assert_allclose(A @ [1.0, 0.0], decay * np.array([c, s]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(prior.Q), 0.2 * np.eye(2), atol=1e-7)
    np.testing.assert_array_equal(np.asarray(prior.b), 0.0)
    np.testing.assert_array_equal(np.asarray(prior.m1), 0.0)


@pytest.mark.parametrize("dim", [1, 2, 3, 4, 5])
def test_rotating_prior_default_initial_cov_is_stationary(dim):
    prior = rotating_lds_prior(dim=dim, angle=0.3, decay=0.95, q=0.1)
    p = _np_prior(prior)
    assert p["A"].shape == (dim, dim) and p["Q1"].shape == (dim, dim)
    np.testing.assert_allclose(p["A"] @ p["Q1"] @ p["A"].T + p["Q"], p["Q1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(p["A"])), 0.95, rtol=1e-5)


def test_rotating_prior_per_block_angles_and_odd_dim():
    prior = rotating_lds_prior(dim=5, angle=(0.1, 0.7), decay=0.5, q=1.0, initial_var=2.0)
    A = np.asarray(prior.A, np.float64)
    np.testing.assert_allclose(A[0, 1], -0.5 * math.sin(0.1), rtol=1e-5)
    np.testing.assert_allclose(A[2, 3], -0.5 * math.sin(0.7), rtol=1e-5)
    np.testing.assert_allclose(A[4], [0, 0, 0, 0, 0.5], atol=1e-7)
    np.testing.assert_array_equal(A[:2, 2:], 0.0)
    np.testing.assert_allclose(np.asarray(prior.Q1), 2.0 * np.eye(5), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dim=0), "dim"),
        (dict(dim=2.0), "dim"),
        (dict(q=0.0), "q"),
        (dict(decay=-0.5), "decay"),
        (dict(decay=1.0), "stationary"),
        (dict(dim=4, angle=(0.1, 0.2, 0.3)), "angle"),
        (dict(dim=2, initial_mean=jnp.zeros(3)), "initial_mean"),
        (dict(initial_var=-1.0), "initial_var"),
    ],
)
def test_rotating_prior_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rotating_lds_prior(**kwargs)


# ----------------------------------------------------------------------------- simulation


def test_sample_lds_shapes_dtype_and_determinism():
    prior = rotating_lds_prior()
    key = jax.random.PRNGKey(3)
    x = sample_lds(key, prior, 7)
    assert x.shape == (7, 2) and x.dtype == jnp.float32
    xs = sample_lds(key, prior, 7, num_sequences=4)
    assert xs.shape == (4, 7, 2)
    np.testing.assert_array_equal(np.asarray(sample_lds(key, prior, 7)), np.asarray(x))
    assert not np.allclose(np.asarray(sample_lds(jax.random.PRNGKey(4), prior, 7)), x)
    assert sample_lds(key, prior, 1).shape == (1, 2)


def test_sample_lds_moments_match_prior_recursions():
    """Sample mean, covariance and lag-1 cross-covariance against the closed-form recursions.

    A non-stationary prior (offset b, non-zero m1, initial covariance far from stationary,
    correlated Q) so that a transposed A, a wrong noise factor or an off-by-one in time shows.
    """
    S, T = 40_000, 12
    prior = rotating_lds_prior(
        dim=2, angle=2 * math.pi / 10, decay=0.9, q=0.3, initial_mean=jnp.array([3.0, -1.0])
    )
    prior = prior._replace(
        b=jnp.array([0.5, 0.2]),
        Q=jnp.array([[0.3, 0.12], [0.12, 0.2]]),
        Q1=jnp.array([[0.05, 0.0], [0.0, 0.4]]),
    )
    x = np.asarray(sample_lds(jax.random.PRNGKey(0), prior, T, num_sequences=S), np.float64)
    m, P, C = _prior_marginals(_np_prior(prior), T)

    sample_mean = x.mean(axis=0)
    centred = x - sample_mean
    sample_cov = np.einsum("sti,stj->tij", centred, centred) / (S - 1)
    sample_cross = np.einsum("sti,stj->tij", centred[:, :-1], centred[:, 1:]) / (S - 1)

    sd = np.sqrt(np.diagonal(P, axis1=1, axis2=2))  # (T, D)
    assert np.all(np.abs(sample_mean - m) < 5 * sd / math.sqrt(S)), np.abs(sample_mean - m)
    # Var of a covariance estimate ≈ (P_ii P_jj + P_ij²)/S; 5 standard errors.
    cov_se = np.sqrt((sd[:, :, None] ** 2 * sd[:, None, :] ** 2 + P**2) / S)
    assert np.all(np.abs(sample_cov - P) < 5 * cov_se), np.max(np.abs(sample_cov - P) / cov_se)
    cross_se = np.sqrt((sd[:-1, :, None] ** 2 * sd[1:, None, :] ** 2 + C**2) / S)
    assert np.all(np.abs(sample_cross - C) < 5 * cross_se), np.max(
        np.abs(sample_cross - C) / cross_se
    )


def test_sample_lds_rejects_bad_arguments():
    prior = rotating_lds_prior()
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="num_timesteps"):
        sample_lds(key, prior, 0)
    with pytest.raises(ValueError, match="num_sequences"):
        sample_lds(key, prior, 5, num_sequences=0)
    bad = prior._replace(A=jnp.eye(3))
    with pytest.raises(ValueError, match="shapes disagree"):
        sample_lds(key, bad, 5)


# ----------------------------------------------------------------------------- potentials


def test_potentials_values_and_exact_zeros_at_masked_steps():
    T, D, r = 6, 2, 0.25
    y = np.arange(T * D, dtype=np.float32).reshape(T, D) - 3.0
    mask = np.array([True, False, True, True, False, False])
    y_nan = y.copy()
    y_nan[~mask] = np.nan  # whatever sits at a masked step must not leak through
    pots = potentials_from_observations(jnp.asarray(y_nan), r, mask=jnp.asarray(mask))
    assert pots.J.shape == (T, D) and pots.h.shape == (T, D)
    J, h = np.asarray(pots.J), np.asarray(pots.h)
    np.testing.assert_array_equal(J[~mask], 0.0)
    np.testing.assert_array_equal(h[~mask], 0.0)
    np.testing.assert_allclose(J[mask], 1 / r)
    np.testing.assert_allclose(h[mask], y[mask] / r, rtol=1e-6)

    # Per-coordinate noise and no mask.
    r_vec = np.array([0.5, 2.0], np.float32)
    pots = potentials_from_observations(y, r_vec)
    np.testing.assert_allclose(np.asarray(pots.J), np.broadcast_to(1 / r_vec, (T, D)))
    np.testing.assert_allclose(np.asarray(pots.h), y / r_vec, rtol=1e-6)

    # Leading batch axes.
    pots = potentials_from_observations(np.stack([y, -y]), r, mask=np.stack([mask, ~mask]))
    assert pots.J.shape == (2, T, D)
    np.testing.assert_array_equal(np.asarray(pots.J[1, mask]), 0.0)


def test_masked_observations_do_not_change_the_posterior():
    prior = rotating_lds_prior()
    T = 30
    y = np.asarray(sample_lds(jax.random.PRNGKey(1), prior, T))
    mask = np.ones(T, bool)
    mask[10:20] = False
    other = y.copy()
    other[~mask] = 1e6
    a = lds_smoother(prior, potentials_from_observations(y, 0.5, mask), method="sequential")
    b = lds_smoother(prior, potentials_from_observations(other, 0.5, mask), method="sequential")
    np.testing.assert_array_equal(np.asarray(a.mean), np.asarray(b.mean))
    np.testing.assert_array_equal(np.asarray(a.log_normalizer), np.asarray(b.log_normalizer))


def _dense_log_marginal(p, y, r, mask):
    """log p(y_observed) under x ~ LDS prior, y_t = x_t + N(0, r I), by a dense Gaussian."""
    T, D = y.shape
    means, covs, _ = _prior_marginals(p, T)
    big = np.zeros((T * D, T * D))
    for s in range(T):
        big[s * D : (s + 1) * D, s * D : (s + 1) * D] = covs[s]
        for t in range(s + 1, T):
            block = covs[s] @ np.linalg.matrix_power(p["A"], t - s).T  # Cov(x_s, x_t)
            big[s * D : (s + 1) * D, t * D : (t + 1) * D] = block
            big[t * D : (t + 1) * D, s * D : (s + 1) * D] = block.T
    idx = np.concatenate([np.arange(t * D, (t + 1) * D) for t in range(T) if mask[t]])
    cov = big[np.ix_(idx, idx)] + r * np.eye(idx.size)
    resid = y.reshape(-1)[idx] - means.reshape(-1)[idx]
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (resid @ np.linalg.solve(cov, resid) + logdet + idx.size * np.log(2 * np.pi))


@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_log_normalizer_plus_constant_is_exact_log_likelihood(method):
    """The potentials and observation_log_constant reproduce log p(y_obs) of the linear model."""
    T, r = 8, 0.3
    prior = rotating_lds_prior(dim=2, angle=0.5, decay=0.9, q=0.2, initial_mean=[1.0, -2.0])
    prior = prior._replace(b=jnp.array([0.3, -0.1]))
    y = np.asarray(sample_lds(jax.random.PRNGKey(2), prior, T), np.float64)
    y = y + math.sqrt(r) * np.random.default_rng(0).normal(size=y.shape)
    mask = np.array([True, True, False, True, False, False, True, True])
    y32 = y.astype(np.float32)
    post = lds_smoother(prior, potentials_from_observations(y32, r, mask), method=method)
    got = float(post.log_normalizer) + float(observation_log_constant(y32, r, mask))
    want = _dense_log_marginal(_np_prior(prior), y32.astype(np.float64), r, mask)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_all_masked_gives_zero_constant_and_zero_potentials():
    y = np.ones((5, 3), np.float32)
    mask = np.zeros(5, bool)
    assert float(observation_log_constant(y, 1.0, mask)) == 0.0
    pots = potentials_from_observations(y, 1.0, mask)
    assert not np.any(np.asarray(pots.J)) and not np.any(np.asarray(pots.h))


@pytest.mark.parametrize(
    "y_shape, r, mask_shape, match",
    [
        ((5,), 1.0, None, "y must have shape"),
        ((0, 2), 1.0, None, "y must have shape"),
        ((5, 2), np.ones(3), None, "obs_noise_var must be a scalar or have shape"),
        ((5, 2), np.ones((5, 2)), None, "obs_noise_var must be a scalar or have shape"),
        ((5, 2), 0.0, None, "obs_noise_var must be > 0"),
        ((5, 2), np.array([1.0, -1.0]), None, "obs_noise_var must be > 0"),
        ((5, 2), 1.0, (4,), "mask must have shape"),
        ((5, 2), 1.0, (5, 2), "mask must have shape"),
    ],
)
def test_potentials_reject_bad_shapes(y_shape, r, mask_shape, match):
    y = np.zeros(y_shape, np.float32)
    mask = None if mask_shape is None else np.ones(mask_shape, bool)
    with pytest.raises(ValueError, match=match):
        potentials_from_observations(y, r, mask)
    with pytest.raises(ValueError, match=match):
        observation_log_constant(y, r, mask)


def test_potentials_reject_float_mask():
    with pytest.raises(ValueError, match="mask must be boolean"):
        potentials_from_observations(np.zeros((3, 2)), 1.0, np.array([0.5, 1.0, 0.0]))


def test_potentials_work_under_jit_and_grad():
    """Gradients through the potentials against central differences of the same function."""
    y = jnp.asarray(np.linspace(-1.0, 1.5, 8).reshape(4, 2), jnp.float32)
    mask = jnp.array([True, False, True, True])
    prior = rotating_lds_prior()

    def loss(r, y):
        pots = potentials_from_observations(y, r, mask)
        return lds_smoother(prior, pots, method="sequential").log_normalizer

    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))  # one compilation for every call
    y_nan = y.at[1].set(jnp.nan)
    _, (g_r, g_y) = f(0.5, y_nan)
    np.testing.assert_array_equal(np.asarray(g_y[1]), 0.0)  # NaN at a masked step: no effect
    # float32: a step of 3e-3 keeps rounding (~1e-7/eps) and the O(eps²) truncation error
    # (~1e-4 here) below the 5e-4 tolerance.
    eps = 3e-3
    fd_r = (f(0.5 + eps, y_nan)[0] - f(0.5 - eps, y_nan)[0]) / (2 * eps)
    np.testing.assert_allclose(float(g_r), float(fd_r), rtol=5e-4)
    bump = jnp.zeros_like(y).at[2, 1].set(eps)
    fd_y = (f(0.5, y_nan + bump)[0] - f(0.5, y_nan - bump)[0]) / (2 * eps)
    np.testing.assert_allclose(float(g_y[2, 1]), float(fd_y), rtol=5e-4)


def test_prior_dtype_reaches_every_array():
    # Under x64 an array created without the dtype would come out float64.
    with jax.enable_x64(True):
        for dtype in (jnp.float32, jnp.float64):
            prior = rotating_lds_prior(dim=3, dtype=dtype, initial_mean=[1.0, 2.0, 3.0])
            assert all(v.dtype == dtype for v in prior), [v.dtype for v in prior]


# ----------------------------------------------------------------------------- observations, masks


def test_sample_observations_noise_moments():
    states = jnp.tile(jnp.array([1.0, -2.0]), (50_000, 1))  # (T, D) with T large
    r = np.array([0.5, 2.0])
    y = np.asarray(sample_observations(jax.random.PRNGKey(5), states, r), np.float64)
    assert y.shape == states.shape
    noise = y - np.asarray(states)
    n = noise.shape[0]
    assert np.all(np.abs(noise.mean(0)) < 5 * np.sqrt(r / n))
    assert np.all(np.abs(noise.var(0) - r) < 5 * r * np.sqrt(2 / n))
    assert abs(np.corrcoef(noise.T)[0, 1]) < 5 / np.sqrt(n)
    batched = sample_observations(jax.random.PRNGKey(0), jnp.zeros((3, 4, 2)), 1.0)
    assert batched.shape == (3, 4, 2)
    with pytest.raises(ValueError, match="obs_noise_var must be > 0"):
        sample_observations(jax.random.PRNGKey(0), states, -1.0)


def test_missing_span_mask():
    mask = np.asarray(missing_span_mask(10, 3, 7))
    np.testing.assert_array_equal(mask, [1, 1, 1, 0, 0, 0, 0, 1, 1, 1])
    assert mask.dtype == bool
    assert np.all(np.asarray(missing_span_mask(5, 2, 2)))
    assert not np.any(np.asarray(missing_span_mask(5, 0, 5)))
    for args in [(10, 7, 3), (10, -1, 3), (10, 3, 11), (0, 0, 0), (10, 2.0, 3)]:
        with pytest.raises(ValueError, match="start <= stop"):
            missing_span_mask(*args)
