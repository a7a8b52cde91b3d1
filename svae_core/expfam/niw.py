r"""Normal-inverse-Wishart distribution over a Gaussian's mean and covariance (μ, Σ).

The family, stated once for every routine in this module::

    standard  Σ ~ IW(S, ν),  μ | Σ ~ N(m, Σ/κ)          [NIWStandard(m, kappa, S, nu)]
    p(μ, Σ) = h(μ, Σ) exp{⟨η, t(μ, Σ)⟩ − A(η)},   μ ∈ R^D,  Σ ∈ S^D_{++}
    t(μ, Σ) = (−½ Σ⁻¹, Σ⁻¹μ, −½ μᵀΣ⁻¹μ, −½ log|Σ|)
    η       = (S + κ m mᵀ, κ m, κ, ν)                   [NIWNatural(Phi, km, kappa, nu)]
    h(μ, Σ) = |Σ|^{−(D+2)/2}
    A(η)    = (D/2) log(2π/κ) + (νD/2) log 2 + log Γ_D(ν/2) − (ν/2) log|S|,
              S = Phi − km kmᵀ/κ
    ∇A      = (−½ ν S⁻¹,  ν S⁻¹m,  −½(D/κ + ν mᵀS⁻¹m),  ½(ψ_D(ν/2) + D log 2 − log|S|))

This is the 2016 SVAE code's packing (S + κmmᵀ, κm, κ, ν): the base measure absorbs the
|Σ|^{−(D+2)/2}, so η holds ν itself. It pairs with a Gaussian likelihood:
log N(x | μ, Σ) = ⟨t(μ, Σ), (x xᵀ, x, 1, 1)⟩ − (D/2) log 2π, so N observations add
(Σ x xᵀ, Σ x, N, N) to η (:func:`likelihood_stats`) — the standard updates κ_N = κ + N,
ν_N = ν + N, κ_N m_N = κm + Σx, S_N + κ_N m_N m_Nᵀ = S + κmmᵀ + Σxxᵀ.

The expected statistics the mean-field Gaussian step needs, E[Σ⁻¹], E[Σ⁻¹μ], E[μᵀΣ⁻¹μ] and
E[log|Σ⁻¹|], are ∇A rescaled (:func:`expected_precision_stats`).

Routines act on one member; vmap over batches (e.g. the K components of a mixture).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

from svae_core.expfam import base
from svae_core.expfam.wishart import multigammaln, sample_inverse_wishart


class NIWNatural(NamedTuple):
    """Natural parameters (the 2016 packing).

    Phi: (D, D) = S + κ m mᵀ, symmetric.  km: (D,) = κ m.  kappa: () = κ > 0.
    nu: () = ν > D − 1.
    """

    Phi: jax.Array
    km: jax.Array
    kappa: jax.Array
    nu: jax.Array


class NIWStandard(NamedTuple):
    """Standard parameters: Σ ~ IW(S, ν), μ | Σ ~ N(m, Σ/κ).

    m: (D,) mean of μ.  kappa: () pseudo-count of μ.  S: (D, D) symmetric PD scale of Σ.
    nu: () degrees of freedom, ν > D − 1 (E[Σ] = S/(ν − D − 1) for ν > D + 1).
    """

    m: jax.Array
    kappa: jax.Array
    S: jax.Array
    nu: jax.Array


class NIWExpectedStats(NamedTuple):
    """E[Σ⁻¹] (D, D), E[Σ⁻¹μ] (D,), E[μᵀΣ⁻¹μ] (), E[log|Σ⁻¹|] () under one NIW."""

    prec: jax.Array
    prec_mean: jax.Array
    mean_prec_mean: jax.Array
    logdet_prec: jax.Array


@jax.jit
def from_standard(m, kappa, S, nu):
    """(m (D,), κ (), S (D, D), ν ()) -> NIWNatural(S + κ m mᵀ, κ m, κ, ν)."""
    m, kappa, S, nu = map(jnp.asarray, (m, kappa, S, nu))
    return NIWNatural(base.symmetrize(S) + kappa * jnp.outer(m, m), kappa * m, kappa, nu)


@jax.jit
def to_standard(eta):
    """NIWNatural -> NIWStandard(m = km/κ, κ, S = Phi − κ m mᵀ, ν)."""
    m = eta.km / eta.kappa
    S = base.symmetrize(eta.Phi) - eta.kappa * jnp.outer(m, m)
    return NIWStandard(m, eta.kappa, S, eta.nu)


@jax.jit
def log_partition(eta):
    """A(η) = (D/2) log(2π/κ) + (νD/2) log 2 + log Γ_D(ν/2) − (ν/2) log|S|. Scalar."""
    dim = eta.km.shape[-1]
    S = base.symmetrize(eta.Phi) - jnp.outer(eta.km, eta.km) / eta.kappa
    logdet_S = 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(S))))
    return (0.5 * dim * (math.log(2 * math.pi) - jnp.log(eta.kappa))
            + 0.5 * eta.nu * dim * math.log(2.0)
            + multigammaln(0.5 * eta.nu, dim)
            - 0.5 * eta.nu * logdet_S)


@jax.jit
def sufficient_stats(mu, Sigma):
    """t(μ, Σ) = NIWNatural(−½Σ⁻¹, Σ⁻¹μ, −½μᵀΣ⁻¹μ, −½log|Σ|). mu: (D,); Sigma: (D, D) PD."""
    chol = jnp.linalg.cholesky(base.symmetrize(Sigma))
    prec = cho_solve((chol, True), jnp.eye(mu.shape[-1], dtype=Sigma.dtype))
    prec_mu = prec @ mu
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return NIWNatural(-0.5 * base.symmetrize(prec), prec_mu, -0.5 * mu @ prec_mu, -0.5 * logdet)


@jax.jit
def log_base_measure(mu, Sigma):
    """log h(μ, Σ) = −(D+2)/2 · log|Σ|. Scalar."""
    return -0.5 * (mu.shape[-1] + 2) * jnp.linalg.slogdet(Sigma)[1]


@jax.jit
def likelihood_stats(x, weights=None):
    """Statistics of Gaussian observations for the conjugate update, packed like η.

    x: (N, D).  weights: optional (N,) (e.g. one column of mixture responsibilities).
    Returns NIWNatural(Σ w x xᵀ, Σ w x, Σ w, Σ w); the posterior is η₀ + this. For statistics
    expected under a Gaussian q(x), build NIWNatural(Σ E[x xᵀ], Σ E[x], N, N) directly.
    """
    x = jnp.asarray(x)
    w = jnp.ones(x.shape[:1], x.dtype) if weights is None else jnp.asarray(weights, x.dtype)
    n = jnp.sum(w)
    return NIWNatural(jnp.einsum("n,ni,nj->ij", w, x, x), w @ x, n, n)


@jax.jit
def expected_stats(eta):
    """∇A(η) = NIWNatural(E[−½Σ⁻¹], E[Σ⁻¹μ], E[−½μᵀΣ⁻¹μ], E[−½log|Σ|])."""
    return base.expected_stats(log_partition, eta)


@jax.jit
def expected_precision_stats(eta):
    """NIWExpectedStats(E[Σ⁻¹], E[Σ⁻¹μ], E[μᵀΣ⁻¹μ], E[log|Σ⁻¹|]): ∇A times (−2, 1, −2, 2)."""
    g = expected_stats(eta)
    return NIWExpectedStats(-2.0 * g.Phi, g.km, -2.0 * g.kappa, 2.0 * g.nu)


@jax.jit
def log_prob(eta, mu, Sigma):
    """log p(μ, Σ) (density with respect to Lebesgue measure on (μ, upper triangle of Σ))."""
    return (base.inner(eta, sufficient_stats(mu, Sigma)) - log_partition(eta)
            + log_base_measure(mu, Sigma))


@jax.jit
def kl(eta_q, eta_p):
    """KL(q‖p) between two NIWs given by natural parameters. Scalar."""
    return base.kl(log_partition, eta_q, eta_p)


@partial(jax.jit, static_argnames="shape")
def sample(key, eta, shape=()):
    """(μ, Σ) ~ NIW: Σ ~ IW(S, ν) by the Bartlett decomposition, then μ = m + RZ/√κ (RRᵀ = Σ).

    Returns (mu: shape + (D,), Sigma: shape + (D, D)).
    """
    std = to_standard(eta)

    def one(k):
        k_sigma, k_mu = jax.random.split(k)
        Sigma, root = sample_inverse_wishart(k_sigma, std.S, std.nu)
        z = jax.random.normal(k_mu, std.m.shape, std.m.dtype)
        return std.m + root @ z / jnp.sqrt(std.kappa), Sigma

    return base.batch_sample(one, key, shape)
