"""Tests for the paper's LDS benchmark data (svae_core.datasets.lds, second half).

Oracles: dynamax's sequential Kalman filter (``marginal_loglik``), dense (T·N)-dimensional
Gaussians built by brute force in NumPy float64 (tests/reference.py), and moment checks.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import dense_prior_moments
from scipy.stats import multivariate_normal

from svae_core.datasets import (
    LDS_APPENDIX,
    LDS_GRID,
    LDS_SETTINGS,
    LDSSetting,
    LinearGaussianSSM,
    lds_setting,
    make_lds_benchmark,
    prior_marginals,
    random_lds,
    sample_ssm,
    ssm_log_likelihood,
    static_null_log_likelihood,
)
from svae_core.inference import METHODS, LDSPrior


def _np(a):
    return np.asarray(a, np.float64)


def _general_ssm(seed, D, N, dtype=np.float64):
    """A model with every term non-trivial: m1, b, d ≠ 0, dense Q1, Q, R, stable A."""
    rng = np.random.default_rng(seed)
    Om, _ = np.linalg.qr(rng.normal(size=(D, D)))
    A = 0.9 * Om
    B = rng.normal(size=(D, D))
    Q = 0.2 * B @ B.T / D + 0.1 * np.eye(D)
    B1 = rng.normal(size=(D, D))
    Q1 = B1 @ B1.T / D + 0.5 * np.eye(D)
    BR = rng.normal(size=(N, N))
    R = 0.3 * BR @ BR.T / N + 0.2 * np.eye(N)
    prior = LDSPrior(m1=rng.normal(size=D), Q1=Q1, A=A, b=0.3 * rng.normal(size=D), Q=Q)
    ssm = LinearGaussianSSM(prior, C=rng.normal(size=(N, D)), d=rng.normal(size=N), R=R)
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), ssm)


def _dense_joint(ssm, T):
    """Mean (T·N,) and covariance (T·N, T·N) of y_{1:T}, by brute force in float64."""
    p = {k: _np(v) for k, v in ssm.prior._asdict().items()}
    C, d, R = _np(ssm.C), _np(ssm.d), _np(ssm.R)
    mx, Sx = dense_prior_moments(p, T)
    big_C = np.kron(np.eye(T), C)
    mean = big_C @ mx + np.tile(d, T)
    cov = big_C @ Sx @ big_C.T + np.kron(np.eye(T), R)
    return mean, cov


# ------------------------------------------------------------------------------ random_lds


@pytest.mark.parametrize("D", [2, 3, 6])
def test_random_lds_is_a_rotation_about_a_random_axis(D):
    ssm = random_lds(jax.random.PRNGKey(D), D, 2 * D, q=0.1, r=1.0, dtype=jnp.float32)
    A = _np(ssm.prior.A)
    np.testing.assert_allclose(A.T @ A, np.eye(D), atol=1e-5)  # orthogonal
    assert np.linalg.det(A) == pytest.approx(1.0, abs=1e-5)  # proper rotation
    # Exactly one rotation plane: A − I has rank 2, so D − 2 eigenvalues equal 1.
    assert np.linalg.matrix_rank(A - np.eye(D), tol=1e-4) == 2 or D == 2
    angles = np.sort(np.abs(np.angle(np.linalg.eigvals(A))))
    np.testing.assert_allclose(angles[: D - 2], 0.0, atol=2e-3)
    theta = angles[-1]
    assert 0 < theta <= math.pi / 2 + 1e-6
    np.testing.assert_allclose(angles[-2], theta, atol=1e-5)
    # The paper's other choices.
    np.testing.assert_allclose(_np(ssm.prior.Q), 0.1 * np.eye(D), rtol=1e-6)
    np.testing.assert_allclose(_np(ssm.R), 1.0 * np.eye(2 * D), rtol=1e-6)
    np.testing.assert_array_equal(_np(ssm.prior.m1), 0.0)
    np.testing.assert_array_equal(_np(ssm.prior.b), 0.0)
    np.testing.assert_array_equal(_np(ssm.d), 0.0)
    np.testing.assert_allclose(_np(ssm.prior.Q1), np.eye(D))
    assert ssm.C.shape == (2 * D, D) and ssm.C.dtype == jnp.float32


def test_random_lds_axis_angle_and_emissions_are_random_and_reproducible():
    key = jax.random.PRNGKey(7)
    a, b = random_lds(key, 5, 10, 0.1, 0.1), random_lds(key, 5, 10, 0.1, 0.1)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)
    c = random_lds(jax.random.PRNGKey(8), 5, 10, 0.1, 0.1)
    assert not np.allclose(a.prior.A, c.prior.A) and not np.allclose(a.C, c.C)
    # Angles spread over (0, π/2); C entries are N(0, 1) (the scale that reproduces appendix A).
    thetas = [np.max(np.abs(np.angle(np.linalg.eigvals(_np(random_lds(
        jax.random.PRNGKey(s), 3, 4, 0.1, 0.1).prior.A))))) for s in range(30)]
    assert 0 < min(thetas) < 0.5 and 1.1 < max(thetas) <= math.pi / 2 + 1e-6
    big = random_lds(jax.random.PRNGKey(0), 40, 50, 0.1, 0.1)
    assert _np(big.C).std() == pytest.approx(1.0, rel=0.05)
    assert abs(_np(big.C).mean()) < 0.05


def test_random_lds_options_and_errors():
    ssm = random_lds(jax.random.PRNGKey(0), 4, 3, 0.2, 0.3, decay=0.9, emission_scale=0.5,
                     dynamics_bias_scale=1.0, emission_bias_scale=1.0, initial_var=2.0)
    A = _np(ssm.prior.A)
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(A)), 0.9, rtol=1e-5)
    assert np.all(_np(ssm.prior.b) != 0) and np.all(_np(ssm.d) != 0)
    np.testing.assert_allclose(_np(ssm.prior.Q1), 2.0 * np.eye(4), rtol=1e-6)
    one = random_lds(jax.random.PRNGKey(0), 1, 2, 0.1, 0.1)
    np.testing.assert_allclose(_np(one.prior.A), [[1.0]])
    for kwargs in (dict(q=0.0), dict(r=-1.0), dict(latent_dim=0), dict(emission_scale=0.0),
                   dict(dynamics_bias_scale=-1.0)):
        args = dict(latent_dim=2, obs_dim=3, q=0.1, r=0.1) | kwargs
        with pytest.raises(ValueError):
            random_lds(jax.random.PRNGKey(0), **args)


# ------------------------------------------------------------------------------ presets


def test_presets_cover_the_paper_grid_and_appendix():
    assert len(LDS_GRID) == 9 and len(LDS_APPENDIX) == 2
    cells = {(s.q, s.r, s.latent_dim, s.obs_dim) for s in LDS_GRID}
    assert cells == {(q, r, D, N) for q, r in ((0.1, 0.1), (0.1, 1.0), (0.01, 10.0))
                     for D, N in ((3, 5), (5, 10), (10, 20))}
    assert [(s.latent_dim, s.obs_dim) for s in LDS_APPENDIX] == [(32, 64), (64, 128)]
    assert all((s.q, s.r) == (0.1, 1.0) for s in LDS_APPENDIX)
    names = [s.name for s in LDS_GRID + LDS_APPENDIX]
    assert len(set(names)) == 11 and set(LDS_SETTINGS) == set(names)
    assert LDS_GRID[0].name == "D3_N5_q0.1_r0.1"
    assert "D10_N20_q0.01_r10" in names and "D64_N128_q0.1_r1" in names
    assert lds_setting("D5_N10_q0.1_r1") == LDSSetting(5, 10, 0.1, 1.0)
    with pytest.raises(ValueError, match="unknown LDS setting"):
        lds_setting("D4_N4_q1_r1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        LDS_GRID[0].q = 1.0


def test_make_lds_benchmark_shapes_determinism_and_splits():
    setting = LDS_GRID[0]
    a = make_lds_benchmark(setting, seed=3, num_train=6, num_test=4, num_timesteps=30)
    assert a.y_train.shape == (6, 30, 5) and a.x_train.shape == (6, 30, 3)
    assert a.y_test.shape == (4, 30, 5) and a.x_test.shape == (4, 30, 3)
    assert a.y_train.dtype == jnp.float32
    b = make_lds_benchmark(setting.name, seed=3, num_train=10, num_test=4, num_timesteps=30)
    assert b.setting == setting  # the name resolves to the preset
    np.testing.assert_array_equal(a.y_test, b.y_test)  # the test set ignores num_train
    np.testing.assert_array_equal(a.y_train, b.y_train[:6])  # more data extends the set
    np.testing.assert_array_equal(a.ssm.C, b.ssm.C)
    c = make_lds_benchmark(setting, seed=4, num_train=6, num_test=4, num_timesteps=30)
    assert not np.allclose(a.y_test, c.y_test) and not np.allclose(a.ssm.C, c.ssm.C)
    assert not np.allclose(a.y_train[:4], a.y_test)


def test_sample_ssm_moments():
    """y − Cx − d has covariance R; x follows the prior recursions (growing covariance)."""
    ssm = _general_ssm(0, D=2, N=3, dtype=np.float32)
    ssm = ssm._replace(prior=ssm.prior._replace(A=_np(ssm.prior.A) / 0.9))  # pure rotation
    S, T = 4000, 12
    x, y = sample_ssm(jax.random.PRNGKey(0), ssm, S, T)
    assert x.shape == (S, T, 2) and y.shape == (S, T, 3)
    x, y = _np(x), _np(y)
    noise = (y - x @ _np(ssm.C).T - _np(ssm.d)).reshape(-1, 3)
    np.testing.assert_allclose(np.cov(noise.T), _np(ssm.R), atol=0.03)
    means, covs = (_np(v) for v in prior_marginals(ssm.prior, T))
    se = np.sqrt(np.diagonal(covs, axis1=1, axis2=2) / S)
    assert np.all(np.abs(x.mean(0) - means) < 5 * se)
    emp = np.einsum("sti,stj->tij", x - x.mean(0), x - x.mean(0)) / (S - 1)
    np.testing.assert_allclose(emp, covs, rtol=0.12, atol=0.05)
    with pytest.raises(ValueError):
        sample_ssm(jax.random.PRNGKey(0), ssm, 0, T)


# ------------------------------------------------------------------------------ likelihoods


def test_ssm_log_likelihood_matches_dynamax():
    # One method suffices here (conventions); the dense test pins both to 1e-11.
    from dynamax.linear_gaussian_ssm import inference as dx

    D, N, T, S = 3, 4, 25, 3
    with jax.enable_x64(True):
        ssm = jax.tree_util.tree_map(jnp.asarray, _general_ssm(1, D, N))
        _, y = sample_ssm(jax.random.PRNGKey(1), ssm, S, T)
        p = ssm.prior
        params = dx.make_lgssm_params(p.m1, p.Q1, p.A, p.Q, ssm.C, ssm.R, dynamics_bias=p.b,
                                      emissions_bias=ssm.d)
        theirs = np.array([dx.lgssm_filter(params, y[s]).marginal_loglik for s in range(S)])
        ours = np.asarray(ssm_log_likelihood(ssm, y))
    assert ours.shape == (S,)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_ssm_log_likelihood_matches_dense_gaussian_with_and_without_mask(method):
    D, N, T = 2, 3, 5
    ssm64 = _general_ssm(2, D, N)
    mean, cov = _dense_joint(ssm64, T)
    rng = np.random.default_rng(3)
    y = rng.multivariate_normal(mean, cov, size=2).reshape(2, T, N)
    mask = np.array([[True, False, True, True, False], [True] * T])
    with jax.enable_x64(True):
        ssm = jax.tree_util.tree_map(jnp.asarray, ssm64)
        full = np.asarray(ssm_log_likelihood(ssm, y, method=method))
        y_nan = np.where(mask[..., None], y, np.nan)  # masked values must not matter
        masked = np.asarray(ssm_log_likelihood(ssm, y_nan, mask, method=method))
    for s in range(2):
        np.testing.assert_allclose(full[s], multivariate_normal(mean, cov).logpdf(y[s].ravel()),
                                   rtol=1e-11)
        keep = np.repeat(mask[s], N)
        ref = multivariate_normal(mean[keep], cov[np.ix_(keep, keep)]).logpdf(y[s].ravel()[keep])
        np.testing.assert_allclose(masked[s], ref, rtol=1e-11)


def test_static_null_is_the_time_independent_dense_gaussian():
    D, N, T = 2, 3, 5
    ssm64 = _general_ssm(4, D, N)
    mean, cov = _dense_joint(ssm64, T)
    block = np.zeros_like(cov)  # keep only the within-step blocks: no time correlations
    for t in range(T):
        sl = slice(t * N, (t + 1) * N)
        block[sl, sl] = cov[sl, sl]
    y = np.random.default_rng(5).normal(size=(3, T, N)) + mean.reshape(T, N)
    mask = np.array([True, True, False, True, False])
    with jax.enable_x64(True):
        ssm = jax.tree_util.tree_map(jnp.asarray, ssm64)
        null = np.asarray(static_null_log_likelihood(ssm, y))
        null_masked = np.asarray(static_null_log_likelihood(ssm, y, mask))
        single = float(static_null_log_likelihood(ssm, y[0]))
    keep = np.repeat(mask, N)
    for s in range(3):
        np.testing.assert_allclose(null[s], multivariate_normal(mean, block).logpdf(y[s].ravel()),
                                   rtol=1e-11)
        ref = multivariate_normal(mean[keep], block[np.ix_(keep, keep)]).logpdf(y[s].ravel()[keep])
        np.testing.assert_allclose(null_masked[s], ref, rtol=1e-11)
    assert single == pytest.approx(null[0], rel=1e-12)


def test_null_equals_truth_without_dynamics_and_is_below_it_with_them():
    # A = 0 and Q1 = Q: the x_t are i.i.d., so the static model *is* the true model.
    ssm = random_lds(jax.random.PRNGKey(0), 3, 5, q=0.5, r=0.2, initial_var=0.5)
    iid = ssm._replace(prior=ssm.prior._replace(A=jnp.zeros((3, 3))))
    _, y = sample_ssm(jax.random.PRNGKey(1), iid, 64, 40)
    np.testing.assert_allclose(static_null_log_likelihood(iid, y), ssm_log_likelihood(iid, y),
                               rtol=2e-6)
    # The paper's rotation (strong dynamics): on average the null model is far below the truth.
    _, y = sample_ssm(jax.random.PRNGKey(2), ssm, 64, 40)
    diff = _np(ssm_log_likelihood(ssm, y)) - _np(static_null_log_likelihood(ssm, y))
    assert diff.mean() > 10 * diff.std() / np.sqrt(len(diff))
    assert diff.mean() / (40 * 5) > 0.3  # nats per step per dim


def test_likelihood_shapes_masks_and_batching():
    ssm = random_lds(jax.random.PRNGKey(0), 2, 3, 0.1, 0.1)
    _, y = sample_ssm(jax.random.PRNGKey(1), ssm, 6, 10)
    ll = ssm_log_likelihood(ssm, y)
    assert ll.shape == (6,) and ll.dtype == jnp.float32
    np.testing.assert_allclose(ssm_log_likelihood(ssm, y, batch_size=4), ll, rtol=1e-6)
    np.testing.assert_allclose(ssm_log_likelihood(ssm, y[2]), ll[2], rtol=1e-6)
    assert ssm_log_likelihood(ssm, y.reshape(2, 3, 10, 3)).shape == (2, 3)
    mask = jnp.arange(10) % 3 != 0
    shared = ssm_log_likelihood(ssm, y, mask)
    np.testing.assert_allclose(ssm_log_likelihood(ssm, y, jnp.broadcast_to(mask, (6, 10))),
                               shared, rtol=1e-6)
    none = ssm_log_likelihood(ssm, y, jnp.zeros(10, bool))
    np.testing.assert_array_equal(none, 0.0)
    np.testing.assert_array_equal(static_null_log_likelihood(ssm, y, jnp.zeros(10, bool)), 0.0)
    with pytest.raises(ValueError, match="mask"):
        ssm_log_likelihood(ssm, y, jnp.ones((6, 9), bool))
    with pytest.raises(ValueError, match="mask"):
        ssm_log_likelihood(ssm, y, jnp.ones(10))
    with pytest.raises(ValueError, match="y must have shape"):
        ssm_log_likelihood(ssm, y[..., :2])
    with pytest.raises(ValueError, match="emission shapes"):
        ssm_log_likelihood(ssm._replace(d=jnp.zeros(4)), y)
