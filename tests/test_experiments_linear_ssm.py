"""The linear-SSM yardstick (svae_core.experiments.linear_ssm): its held-out score against
dynamax's marginal likelihood, and its fit against the true model's held-out likelihood on
data simulated from it, with and without missing steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svae_core.datasets.lds import random_lds, sample_ssm
from svae_core.experiments import linear_ssm as ls

D, N = 2, 4


@pytest.fixture(scope="module")
def data():
    ssm = random_lds(jax.random.PRNGKey(0), D, N, q=0.1, r=0.1, emission_bias_scale=1.0,
                     dynamics_bias_scale=0.1)
    _, y_train = sample_ssm(jax.random.PRNGKey(1), ssm, 40, 50)
    _, y_test = sample_ssm(jax.random.PRNGKey(2), ssm, 20, 50)
    return ssm, np.asarray(y_train), np.asarray(y_test)


def test_heldout_nats_is_dynamax_marginal_likelihood_per_step_and_channel(data):
    from dynamax.linear_gaussian_ssm import inference as dx

    ssm, _, y_test = data
    p = ssm.prior
    params = dx.make_lgssm_params(p.m1, p.Q1, p.A, p.Q, ssm.C, ssm.R, dynamics_bias=p.b,
                                  emissions_bias=ssm.d)
    ref = sum(float(dx.lgssm_filter(params, jnp.asarray(y)).marginal_loglik) for y in y_test[:3])
    np.testing.assert_allclose(ls.heldout_nats(ssm, y_test[:3]) * 3 * 50 * N, ref, rtol=1e-4)


@pytest.mark.parametrize("missing", [0.0, 0.2])
def test_fit_reaches_the_true_models_heldout_likelihood(data, missing):
    ssm, y_train, y_test = data
    mask = np.random.default_rng(5).random(y_train.shape[:2]) >= missing
    y_holes = np.where(mask[..., None], y_train, np.nan)  # never read at hidden steps
    fit = ls.fit_linear_ssm(y_holes, D, mask, steps=600, learning_rate=3e-2)
    truth = ls.heldout_nats(ssm, y_test)
    assert fit.trace[-1] < fit.trace[0]
    assert abs(ls.heldout_nats(fit.ssm, y_test) - truth) < 0.03, truth


def test_a_state_too_small_is_measurably_worse(data):
    ssm, y_train, y_test = data
    fit = ls.fit_linear_ssm(y_train, 1, steps=600, learning_rate=3e-2)
    assert ls.heldout_nats(fit.ssm, y_test) < ls.heldout_nats(ssm, y_test) - 0.05


def test_bad_inputs_raise(data):
    ssm, y_train, _ = data
    with pytest.raises(ValueError, match="shape"):
        ls.heldout_nats(ssm, y_train[0])
    with pytest.raises(ValueError, match="mask"):
        ls.fit_linear_ssm(y_train, D, np.ones(y_train.shape[:2], int), steps=1)
    with pytest.raises(ValueError, match="finite"):
        ls.fit_linear_ssm(np.full((2, 3, N), np.nan), D, steps=1)


def _dense_joint(ssm, T):
    """Mean (T·N,) and covariance (T·N, T·N) of y_{1:T} under ssm, by dense algebra in
    float64: x = M ε + mean stacked over time, y = (I ⊗ C) x + d + noise."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), ssm.prior)
    C, d, R = (np.asarray(a, np.float64) for a in (ssm.C, ssm.d, ssm.R))
    means, covs = [p.m1], {(0, 0): p.Q1}
    for t in range(1, T):
        means.append(p.A @ means[-1] + p.b)
        covs[(t, t)] = p.A @ covs[(t - 1, t - 1)] @ p.A.T + p.Q
    Sx = np.zeros((T * D, T * D))
    for s in range(T):
        for t in range(s, T):  # Cov(x_t, x_s) = A^{t-s} Cov(x_s)
            block = np.linalg.matrix_power(p.A, t - s) @ covs[(s, s)]
            Sx[t * D:(t + 1) * D, s * D:(s + 1) * D] = block
            Sx[s * D:(s + 1) * D, t * D:(t + 1) * D] = block.T
    big_C = np.kron(np.eye(T), C)
    mean = big_C @ np.concatenate(means) + np.tile(d, T)
    return mean, big_C @ Sx @ big_C.T + np.kron(np.eye(T), R)


def test_forecast_is_the_dense_gaussian_conditional(data):
    """Means, sds and the predictive log-likelihood of linear_ssm_forecast against
    conditioning the joint Gaussian of y_{1:T} on its first t0 steps (float64 reference)."""
    from scipy.stats import multivariate_normal

    ssm, _, y_test = data
    t0, T = 4, 7
    y = y_test[:3, :T]
    fc = ls.linear_ssm_forecast(ssm, y, t0)
    mu, cov = _dense_joint(ssm, T)
    p, f = slice(0, t0 * N), slice(t0 * N, T * N)
    gain = cov[f, p] @ np.linalg.inv(cov[p, p])
    cond_cov = cov[f, f] - gain @ cov[p, f]
    for s in range(3):
        flat = y[s].astype(np.float64).reshape(-1)
        cond_mean = mu[f] + gain @ (flat[p] - mu[p])
        np.testing.assert_allclose(fc.mean[s].reshape(-1), cond_mean, atol=2e-4)
        np.testing.assert_allclose(fc.sd[s].reshape(-1), np.sqrt(np.diag(cond_cov)), rtol=1e-4)
        ref = multivariate_normal(cond_mean, cond_cov).logpdf(flat[f])
        np.testing.assert_allclose(fc.log_likelihood[s], ref, atol=2e-3 * abs(ref) + 1e-3)
    with pytest.raises(ValueError, match="num_observed"):
        ls.linear_ssm_forecast(ssm, y, T)
