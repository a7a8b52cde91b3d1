"""Independent references for the Gaussian-chain tests: dense joint Gaussians in NumPy float64.

Nothing here shares code with svae_core: the prior's joint moments are built by brute force
over all T·D coordinates, and the posterior follows from dense Gaussian algebra.
"""

from __future__ import annotations

import numpy as np


def random_prior(rng, dim, radius=0.95):
    """A stable random LDS prior (spectral radius of A = radius) as float64 NumPy arrays."""
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    A = radius * q @ np.diag(np.sign(rng.normal(size=dim))) if dim > 1 else np.array([[radius]])
    B = rng.normal(size=(dim, dim))
    Q = 0.3 * B @ B.T / dim + 0.2 * np.eye(dim)
    B1 = rng.normal(size=(dim, dim))
    Q1 = B1 @ B1.T / dim + 0.5 * np.eye(dim)
    return dict(m1=rng.normal(size=dim), Q1=Q1, A=A, b=0.3 * rng.normal(size=dim), Q=Q)


def random_potentials(rng, T, dim, scale=1.0, diagonal=False):
    """Random PSD potentials; J rank-deficient at some steps to exercise singular J."""
    if diagonal:
        J = scale * rng.uniform(0.1, 2.0, size=(T, dim))
    else:
        B = rng.normal(size=(T, dim, max(dim - 1, 1)))
        J = scale * np.einsum("tik,tjk->tij", B, B) / dim
    h = rng.normal(size=(T, dim))
    return J, h


def dense_prior_moments(p, T):
    """Joint mean (T·D,) and covariance (T·D, T·D) of the LDS prior, by brute force."""
    dim = p["m1"].shape[0]
    means = [p["m1"]]
    covs = {(0, 0): p["Q1"]}
    for t in range(1, T):
        means.append(p["A"] @ means[-1] + p["b"])
        for s in range(t):  # Cov(x_s, x_t) = Cov(x_s, x_{t-1}) Aᵀ
            covs[(s, t)] = covs[(s, t - 1)] @ p["A"].T
        covs[(t, t)] = p["A"] @ covs[(t - 1, t - 1)] @ p["A"].T + p["Q"]
    S = np.zeros((T * dim, T * dim))
    for (s, t), c in covs.items():
        S[s * dim : (s + 1) * dim, t * dim : (t + 1) * dim] = c
        S[t * dim : (t + 1) * dim, s * dim : (s + 1) * dim] = c.T
    return np.concatenate(means), S


def dense_posterior(p, J, h):
    """Posterior marginals, cross-covariances and log E_p[∏ φ_t] by dense algebra (float64)."""
    J = np.asarray(J, np.float64)
    h = np.asarray(h, np.float64)
    T, dim = h.shape
    if J.ndim == 2:
        J = np.stack([np.diag(j) for j in J])
    mu, S = dense_prior_moments(p, T)
    Jbig = np.zeros((T * dim, T * dim))
    for t in range(T):
        Jbig[t * dim : (t + 1) * dim, t * dim : (t + 1) * dim] = J[t]
    S_inv = np.linalg.inv(S)
    P = S_inv + Jbig
    P_inv = np.linalg.inv(P)
    eta = S_inv @ mu + h.reshape(-1)
    mean = P_inv @ eta
    log_z = (
        0.5 * eta @ mean
        - 0.5 * mu @ S_inv @ mu
        - 0.5 * np.linalg.slogdet(S)[1]
        - 0.5 * np.linalg.slogdet(P)[1]
    )
    blk = lambda s, t: P_inv[s * dim : (s + 1) * dim, t * dim : (t + 1) * dim]
    return dict(
        mean=mean.reshape(T, dim),
        cov=np.stack([blk(t, t) for t in range(T)]),
        cross_cov=np.array([blk(t, t + 1) for t in range(T - 1)]).reshape(T - 1, dim, dim),
        log_normalizer=log_z,
        joint_cov=P_inv,
    )


def dense_filtered(p, J, h):
    """Filtered marginals p(x_t | φ_1..φ_t) by conditioning the dense prefix joint."""
    T = np.shape(h)[0]
    out = [dense_posterior(p, J[: t + 1], h[: t + 1]) for t in range(T)]
    return dict(
        mean=np.stack([o["mean"][-1] for o in out]),
        cov=np.stack([o["cov"][-1] for o in out]),
        log_normalizer=out[-1]["log_normalizer"],
    )


def spd(rng, dim, scale=1.0):
    """A random (dim, dim) symmetric positive definite matrix, scale·(AAᵀ/dim + I)."""
    a = rng.normal(size=(dim, dim))
    return scale * (a @ a.T / dim + np.eye(dim))


def murphy_niw_posterior(m0, kappa0, S0, nu0, x):
    """The NIW posterior (standard parameters m, kappa, S, nu) after observing the rows of x
    (N, D): Murphy (2007), 'Conjugate Bayesian analysis of the Gaussian distribution',
    eqs. 250-254."""
    n = len(x)
    xbar = x.mean(0)
    scatter = (x - xbar).T @ (x - xbar)
    kappa = kappa0 + n
    m = (kappa0 * m0 + n * xbar) / kappa
    S = S0 + scatter + kappa0 * n / kappa * np.outer(xbar - m0, xbar - m0)
    return dict(m=m, kappa=kappa, S=S, nu=nu0 + n)
