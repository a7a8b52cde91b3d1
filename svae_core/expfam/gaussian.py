r"""Multivariate Gaussian in information form.

The family, stated once for every routine in this module::

    p(x) = exp{⟨η, t(x)⟩ − A(η)},   x ∈ R^D,   base measure h(x) = 1
    t(x) = (−½ x xᵀ, x)
    η    = (J, h) = (Σ⁻¹, Σ⁻¹μ)                       [GaussianNatural(J, h)]
    A(η) = ½ hᵀJ⁻¹h − ½ log|J| + (D/2) log 2π
    ∇A   = (E[−½ x xᵀ], E[x]) = (−½(Σ + μμᵀ), μ)

so p(x) ∝ exp(hᵀx − ½ xᵀJx): the same (J, h) as the potentials of
:class:`svae_core.inference.lds.GaussianPotentials`. J is symmetrised inside A. The mean
parameters come back as a GaussianNatural whose fields hold E[−½xxᵀ] and E[x].

Routines act on one member; vmap over batches.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

from svae_core.expfam import base


class GaussianNatural(NamedTuple):
    """Natural parameters. J: (D, D) symmetric PD precision. h: (D,) precision-weighted mean."""

    J: jax.Array
    h: jax.Array


class GaussianStandard(NamedTuple):
    """Standard parameters. mean: (D,). cov: (D, D) symmetric PD."""

    mean: jax.Array
    cov: jax.Array


@jax.jit
def from_standard(mean, cov):
    """(mean (D,), cov (D, D)) -> GaussianNatural(J = cov⁻¹, h = cov⁻¹ mean)."""
    J = base.symmetrize(jnp.linalg.inv(cov))
    return GaussianNatural(J, J @ mean)


@jax.jit
def to_standard(eta):
    """GaussianNatural -> GaussianStandard(mean = J⁻¹h, cov = J⁻¹)."""
    cov = base.symmetrize(jnp.linalg.inv(base.symmetrize(eta.J)))
    return GaussianStandard(cov @ eta.h, cov)


@jax.jit
def log_partition(eta):
    """A(J, h) = ½ hᵀJ⁻¹h − ½ log|J| + (D/2) log 2π. Scalar."""
    dim = eta.h.shape[-1]
    chol = jnp.linalg.cholesky(base.symmetrize(eta.J))
    mean = cho_solve((chol, True), eta.h)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return 0.5 * eta.h @ mean - 0.5 * logdet + 0.5 * dim * math.log(2 * math.pi)


@jax.jit
def sufficient_stats(x):
    """t(x) = GaussianNatural(J = −½ x xᵀ, h = x) for one point x (D,)."""
    return GaussianNatural(-0.5 * jnp.outer(x, x), x)


@jax.jit
def expected_stats(eta):
    """∇A(η) = GaussianNatural(J = E[−½ x xᵀ], h = E[x])."""
    return base.expected_stats(log_partition, eta)


@jax.jit
def log_prob(eta, x):
    """log p(x) = hᵀx − ½ xᵀJx − A(η). x: (D,). Scalar."""
    return base.inner(eta, sufficient_stats(x)) - log_partition(eta)


@jax.jit
def kl(eta_q, eta_p):
    """KL(q‖p) between two Gaussians given by natural parameters. Scalar."""
    return base.kl(log_partition, eta_q, eta_p)


@partial(jax.jit, static_argnames="shape")
def sample(key, eta, shape=()):
    """x ~ N(J⁻¹h, J⁻¹) via the Cholesky factor of J: x = J⁻¹h + L⁻ᵀz, J = LLᵀ. -> shape + (D,)."""
    chol = jnp.linalg.cholesky(base.symmetrize(eta.J))
    mean = cho_solve((chol, True), eta.h)

    def one(k):
        z = jax.random.normal(k, mean.shape, mean.dtype)
        return mean + solve_triangular(chol.T, z, lower=False)

    return base.batch_sample(one, key, shape)
