"""The linear-Gaussian state-space model as the yardstick for real sequences: the model a
practitioner fits first, with an exact marginal likelihood.

The model (:class:`svae_core.datasets.lds.LinearGaussianSSM`)::

    x_1 ~ N(m1, Q1),  x_{t+1} = A x_t + b + N(0, Q),  y_t = C x_t + d + N(0, R)

is fitted by maximum likelihood with Adam on the exact log-likelihood of the observed steps
(:func:`svae_core.datasets.lds.ssm_log_likelihood`, which marginalises unobserved ones, so
masked and variable-length data need nothing special), diagonal R, full Q and Q1
(:func:`fit_linear_ssm`). Not EM: dynamax 1.0.3's ``LinearGaussianSSM.fit_em`` on a batch of
sequences returns NaN from its second iteration here (float32 and float64; one sequence at a
time it works), an instability its tracker reports too (probml/dynamax #316, #355).

Held-out sequences are scored by :func:`heldout_nats`: exact log p(y) of the observed steps,
in nats per observed step per channel, the unit the SVAE's held-out ELBO is quoted in.
:func:`linear_ssm_forecast` gives exact Gaussian forecasts after a conditioning window and
the exact predictive log-likelihood of the future.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from svae_core.datasets.lds import LinearGaussianSSM, ssm_log_likelihood
from svae_core.inference import GaussianPotentials, LDSPrior, lds_smoother


class LinearSSMFit(NamedTuple):
    """ssm: the fitted :class:`LinearGaussianSSM`; trace (steps,): the loss per step, minus
    the training log-likelihood in nats per observed step per channel."""

    ssm: LinearGaussianSSM
    trace: np.ndarray


def _check(y, mask):
    y = np.asarray(y, np.float64)
    if y.ndim != 3 or min(y.shape) < 1:
        raise ValueError(f"y must have shape (S, T, N), got {y.shape}")
    if mask is None:
        mask = np.ones(y.shape[:2], bool)
    mask = np.asarray(mask)
    if mask.shape != y.shape[:2] or mask.dtype != bool:
        raise ValueError(f"mask must be bool of shape {y.shape[:2]}, got {mask.dtype} "
                         f"{mask.shape}")
    if not np.all(np.isfinite(y[mask])):
        raise ValueError("y must be finite at the observed steps")
    return np.where(mask[..., None], y, 0.0), mask


def _tril(raw, dim):
    """A covariance L Lᵀ + 1e-4·I from raw (dim, dim): L lower triangular, softplus diagonal."""
    L = jnp.tril(raw, -1) + jnp.diag(jax.nn.softplus(jnp.diag(raw)))
    return L @ L.T + 1e-4 * jnp.eye(dim)


def _unpack(theta, D):
    prior = LDSPrior(theta["m1"], _tril(theta["Q1"], D), theta["A"], theta["b"],
                     _tril(theta["Q"], D))
    R = jnp.diag(jax.nn.softplus(theta["r"]) + 1e-4)
    return LinearGaussianSSM(prior, theta["C"], theta["d"], R)


def fit_linear_ssm(y, latent_dim: int, mask=None, steps: int = 2000,
                   learning_rate: float = 1e-2, seed: int = 0) -> LinearSSMFit:
    """Maximum-likelihood linear SSM with a ``latent_dim``-dimensional state on y (S, T, N)
    (mask (S, T) bool, True = observed; None: all): full-batch Adam on −(exact log-likelihood
    of the observed steps) per observed step per channel. C starts random (seed)."""
    y, mask = _check(y, mask)
    S, T, N = y.shape
    D = latent_dim
    key = jax.random.PRNGKey(seed)
    inv = lambda v: np.log(np.expm1(v))  # softplus⁻¹
    theta = {"m1": jnp.zeros(D), "Q1": jnp.diag(jnp.full(D, inv(1.0))),
             "A": 0.9 * jnp.eye(D), "b": jnp.zeros(D), "Q": jnp.diag(jnp.full(D, inv(0.3))),
             "C": jax.random.normal(key, (N, D)) / np.sqrt(D),
             "d": jnp.asarray(y[mask].mean(0), jnp.float32), "r": jnp.full(N, inv(0.5))}
    theta = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), theta)
    yj, mj = jnp.asarray(y, jnp.float32), jnp.asarray(mask)
    count = float(mask.sum() * N)
    tx = optax.adam(learning_rate)

    def loss(theta):
        return -jnp.sum(ssm_log_likelihood(_unpack(theta, D), yj, mj, batch_size=S)) / count

    @jax.jit
    def step(theta, opt_state):
        value, grad = jax.value_and_grad(loss)(theta)
        updates, opt_state = tx.update(grad, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, value

    opt_state = tx.init(theta)
    trace = np.empty(steps)
    for i in range(steps):
        theta, opt_state, value = step(theta, opt_state)
        trace[i] = float(value)
    if not np.isfinite(trace[-1]):
        raise ValueError("Adam fit of the linear SSM diverged; lower learning_rate")
    return LinearSSMFit(_unpack(theta, D), trace)


def heldout_nats(ssm: LinearGaussianSSM, y, mask=None) -> float:
    """Exact log p(observed steps of y) under ``ssm``, summed over sequences y (S, T, N) and
    divided by the number of observed steps × N: nats per observed step per channel."""
    y, mask = _check(y, mask)
    ll = ssm_log_likelihood(ssm, jnp.asarray(y, jnp.float32), jnp.asarray(mask))
    return float(jnp.sum(ll)) / float(mask.sum() * y.shape[-1])


class LinearSSMForecast(NamedTuple):
    """Exact forecasts of a linear SSM for steps t0+1..t0+H given y_{1:t0}.

    mean, sd: (S, H, N), the Gaussian predictive p(y_t | y_{1:t0}) per step and channel (sd
    includes the observation noise). log_likelihood: (S,) nats, log p(y_{t0+1:t0+H} |
    y_{1:t0}) = log p(y_{1:t0+H}) − log p(y_{1:t0}), the joint over the H future steps."""

    mean: np.ndarray
    sd: np.ndarray
    log_likelihood: np.ndarray


def linear_ssm_forecast(ssm: LinearGaussianSSM, y, num_observed: int) -> LinearSSMForecast:
    """Forecast y (S, t0 + H, N), every step observed, from its first t0 = ``num_observed``
    steps: the state's filter at t0 rolled forward by the dynamics (the smoother with the
    future's potentials zero), read out through C, d and R; and the exact predictive
    log-likelihood of the H future steps."""
    y = np.asarray(y, np.float32)
    S, T, N = y.shape
    if not 1 <= num_observed < T:
        raise ValueError(f"num_observed must be in [1, {T - 1}], got {num_observed}")
    past = np.arange(T) < num_observed
    R_inv = jnp.linalg.inv(ssm.R)
    J = jnp.where(past[:, None, None], ssm.C.T @ R_inv @ ssm.C, 0.0)

    def one(y_s):
        h = jnp.where(past[:, None], (y_s - ssm.d) @ R_inv @ ssm.C, 0.0)
        post = lds_smoother(ssm.prior, GaussianPotentials(J, h), method="sequential")
        mean = post.mean[num_observed:] @ ssm.C.T + ssm.d
        var = jnp.einsum("nd,tde,ne->tn", ssm.C, post.cov[num_observed:], ssm.C)
        return mean, jnp.sqrt(var + jnp.diag(ssm.R))

    mean, sd = jax.jit(jax.vmap(one))(jnp.asarray(y))
    yj = jnp.asarray(y)
    joint = ssm_log_likelihood(ssm, yj)
    given = ssm_log_likelihood(ssm, yj, jnp.broadcast_to(jnp.asarray(past), (S, T)))
    return LinearSSMForecast(np.asarray(mean), np.asarray(sd), np.asarray(joint - given))
