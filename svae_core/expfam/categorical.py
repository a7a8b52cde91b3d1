r"""Categorical distribution over K labels, with unnormalised log-probabilities as parameters.

The family, stated once for every routine in this module::

    p(z) = exp{⟨η, t(z)⟩ − A(η)},   z ∈ {0, …, K−1},   base measure 1 (counting)
    t(z) = onehot(z) ∈ {0, 1}^K
    η    = logits, any vector with softmax(η) = π      [CategoricalNatural(logits)]
    A(η) = logsumexp(η)
    ∇A   = E[onehot(z)] = softmax(η) = π

η is over-complete: η + c·1 is the same distribution, so the Fisher information
diag(π) − ππᵀ is singular along 1 and natural gradients are defined up to that direction.
This is the form the mean-field label step produces (logits = expected log-likelihoods +
E[log π]), so labels' natural parameters need no normalisation.

Routines act on one member; vmap over batches.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from svae_core.expfam import base


class CategoricalNatural(NamedTuple):
    """Natural parameters. logits: (K,) log-probabilities up to an additive constant."""

    logits: jax.Array


@jax.jit
def from_standard(probs):
    """probs (K,) on the simplex -> CategoricalNatural(log probs)."""
    return CategoricalNatural(jnp.log(probs))


@jax.jit
def to_standard(eta):
    """CategoricalNatural -> probs (K,) = softmax(logits)."""
    return jax.nn.softmax(eta.logits)


@jax.jit
def log_partition(eta):
    """A(η) = logsumexp(logits). Scalar."""
    return logsumexp(eta.logits)


@partial(jax.jit, static_argnames="num_classes")
def sufficient_stats(z, num_classes):
    """t(z) = CategoricalNatural(onehot(z)) for an integer label z; num_classes K."""
    return CategoricalNatural(jax.nn.one_hot(z, num_classes))


@jax.jit
def expected_stats(eta):
    """∇A(η) = CategoricalNatural(softmax(logits))."""
    return base.expected_stats(log_partition, eta)


@jax.jit
def log_prob(eta, z):
    """log p(z) = logits[z] − logsumexp(logits). z: integer label. Scalar."""
    return eta.logits[z] - log_partition(eta)


@jax.jit
def kl(eta_q, eta_p):
    """KL(q‖p) = Σ_k π^q_k log(π^q_k / π^p_k). Scalar."""
    return base.kl(log_partition, eta_q, eta_p)


@partial(jax.jit, static_argnames="shape")
def sample(key, eta, shape=()):
    """Integer labels z ~ Categorical(softmax(logits)), of the given shape (int32)."""
    return jax.random.categorical(key, eta.logits, shape=tuple(shape))
