r"""Dirichlet distribution over the probability simplex, natural parameter α − 1.

The family, stated once for every routine in this module::

    p(π) = exp{⟨η, t(π)⟩ − A(η)},   π ∈ Δ^{K−1},   base measure 1 (Lebesgue on the simplex)
    t(π) = log π                                       (K,)
    η    = α − 1                                       [DirichletNatural(alpha_minus_one)]
    A(η) = Σ_k log Γ(α_k) − log Γ(Σ_k α_k),   α = η + 1
    ∇A   = E[log π] = ψ(α) − ψ(Σ_k α_k)

**Convention.** The natural parameter is the concentration minus one, as in the 2016 SVAE
code: a natural parameter of 0.05/K there means α ≈ 1 (a nearly flat prior), not a sparse
α = 0.05/K. Use :func:`from_standard` / :func:`to_standard` to go through α explicitly.
With this convention the conjugate update from labels is η_post = η₀ + counts
(:func:`likelihood_stats`), since p(z | π) = exp⟨onehot(z), log π⟩.

Routines act on one member; vmap over batches.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

from svae_core.expfam import base


class DirichletNatural(NamedTuple):
    """Natural parameters. alpha_minus_one: (K,) = α − 1, with α > 0 elementwise."""

    alpha_minus_one: jax.Array


@jax.jit
def from_standard(alpha):
    """Concentration α (K,), α > 0 -> DirichletNatural(α − 1)."""
    return DirichletNatural(jnp.asarray(alpha) - 1.0)


@jax.jit
def to_standard(eta):
    """DirichletNatural -> concentration α (K,) = η + 1."""
    return eta.alpha_minus_one + 1.0


@jax.jit
def log_partition(eta):
    """A(η) = Σ log Γ(α_k) − log Γ(Σ α_k), α = η + 1. Scalar."""
    alpha = to_standard(eta)
    return jnp.sum(gammaln(alpha)) - gammaln(jnp.sum(alpha))


@jax.jit
def sufficient_stats(pi):
    """t(π) = DirichletNatural(log π) for one point π (K,) on the simplex."""
    return DirichletNatural(jnp.log(pi))


@partial(jax.jit, static_argnames="num_classes")
def likelihood_stats(labels, num_classes, weights=None):
    """Statistics of observed labels for the conjugate update: DirichletNatural(counts (K,)).

    labels: (N,) integers in [0, K), or (N, K) one-hot / responsibilities (num_classes is then
    ignored). weights: optional (N,) per-point weights. Posterior: η₀ + likelihood_stats.
    """
    labels = jnp.asarray(labels)
    onehot = jax.nn.one_hot(labels, num_classes) if labels.ndim == 1 else labels
    if weights is not None:
        onehot = onehot * jnp.asarray(weights)[:, None]
    return DirichletNatural(jnp.sum(onehot, axis=0))


@jax.jit
def expected_stats(eta):
    """∇A(η) = DirichletNatural(E[log π] = ψ(α) − ψ(Σα))."""
    return base.expected_stats(log_partition, eta)


@jax.jit
def log_prob(eta, pi):
    """log p(π) = ⟨α − 1, log π⟩ − A(η). pi: (K,) on the simplex. Scalar."""
    return base.inner(eta, sufficient_stats(pi)) - log_partition(eta)


@jax.jit
def kl(eta_q, eta_p):
    """KL(q‖p) between two Dirichlets given by natural parameters. Scalar."""
    return base.kl(log_partition, eta_q, eta_p)


@partial(jax.jit, static_argnames="shape")
def sample(key, eta, shape=()):
    """π ~ Dir(α) by jax.random.dirichlet. -> shape + (K,)."""
    alpha = to_standard(eta)
    return jax.random.dirichlet(key, alpha, shape=tuple(shape), dtype=alpha.dtype)
