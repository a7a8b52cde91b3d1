r"""Family-independent pieces of exponential-family algebra, over pytrees of natural parameters.

Every family in this package is written the same way::

    p(x) = h(x) exp{⟨η, t(x)⟩ − A(η)},      ⟨a, b⟩ = Σ_leaves Σ_entries a ⊙ b

with natural parameters η a NamedTuple of arrays (a pytree: it jits, vmaps, and goes through
optax unchanged), sufficient statistics t(x) a NamedTuple of the same type and shapes, base
measure h(x) fixed by the family, and log partition A(η). Matrix-valued fields that pair with
symmetric statistics are symmetrised inside A, so A sees only their symmetric part, ∇A is
symmetric, and the Hessian of A in the full (D·D) coordinates equals Cov[t(x)] (both vanish
on antisymmetric directions).

Two identities make the rest generic:

* the mean parameters are the gradient of the log partition, E_p[t(x)] = ∇A(η)
  (:func:`expected_stats`), and its Hessian is the Fisher information, ∇²A(η) = Cov_p[t(x)];
* between two members of one family, KL(q‖p) is the Bregman divergence of A,
  A(η_p) − A(η_q) − ⟨η_p − η_q, ∇A(η_q)⟩ (:func:`kl`).

For a conjugate pair (a prior on θ with statistics t_θ(θ) and a likelihood
p(x | θ) ∝ exp⟨t_θ(θ), (t_x(x), 1)⟩), the data enter only through s = Σ_n (t_x(x_n), 1) packed
like η (each prior module's ``likelihood_stats``). Then the posterior is η₀ + s, and for
q(θ) in the family the optimisation objective of SVI (Hoffman et al. 2013; Johnson et al. 2016
eq. 4, first term) is :func:`conjugate_elbo`, whose natural gradient — Fisher⁻¹ times its
Euclidean gradient — is η₀ + s − η (:func:`natural_gradient`). One step of size 1 from any η
lands on the exact posterior.

The functions taking ``log_partition`` are jitted with it as a static argument: pass a
module-level function (each family's ``log_partition``), not a fresh lambda per call, or every
call recompiles.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp


def inner(a, b):
    """⟨a, b⟩: the sum over all leaves and entries of a ⊙ b, for two pytrees of one structure.

    Returns a scalar (leading batch axes are summed too: vmap for per-member products).
    """
    leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: jnp.sum(x * y), a, b))
    return sum(leaves[1:], leaves[0])


@partial(jax.jit, static_argnums=0)
def expected_stats(log_partition, eta):
    """E_p[t(x)] = ∇A(η), as a pytree shaped like η (the same NamedTuple type).

    log_partition: η -> scalar A(η).  eta: one member's natural parameters (vmap for a batch).
    """
    return jax.grad(log_partition)(eta)


@partial(jax.jit, static_argnums=0)
def kl(log_partition, eta_q, eta_p):
    """KL(q‖p) = A(η_p) − A(η_q) − ⟨η_p − η_q, ∇A(η_q)⟩ for q, p in one family. Scalar.

    The base measures cancel, so this holds for every family here whatever h(x) is.
    """
    a_q, grad_q = jax.value_and_grad(log_partition)(eta_q)
    diff = jax.tree_util.tree_map(jnp.subtract, eta_p, eta_q)
    return log_partition(eta_p) - a_q - inner(diff, grad_q)


@partial(jax.jit, static_argnums=0)
def conjugate_elbo(log_partition, eta, eta_prior, stats):
    """E_q[log p₀(θ) + ⟨t_θ(θ), s⟩ − log q(θ)] for q = η, p₀ = η₀, data statistics s = ``stats``.

    Equals ⟨η₀ + s − η, ∇A(η)⟩ + A(η) − A(η₀) = ⟨s, E_q t_θ⟩ − KL(q‖p₀): the part of the
    evidence lower bound that depends on q(θ), up to the data's base-measure constants
    (e.g. −(N·D/2)·log 2π for Gaussian observations). Its maximiser is η = η₀ + s. Scalar.
    """
    a, grad = jax.value_and_grad(log_partition)(eta)
    gap = natural_gradient(eta, eta_prior, stats)
    return inner(gap, grad) + a - log_partition(eta_prior)


@jax.jit
def natural_gradient(eta, eta_prior, stats):
    """η₀ + s − η: the natural gradient (Fisher⁻¹ · Euclidean gradient) of :func:`conjugate_elbo`.

    Pytree shaped like η. Minibatch use scales s by N/|B| first (Johnson et al. 2016, Alg. 1).
    """
    return jax.tree_util.tree_map(lambda p, s, e: p + s - e, eta_prior, stats, eta)


@jax.jit
def natural_gradient_step(eta, eta_prior, stats, step_size):
    """η + ρ·(η₀ + s − η). With ρ = 1 and full-batch s it returns the exact posterior η₀ + s."""
    grad = natural_gradient(eta, eta_prior, stats)
    return jax.tree_util.tree_map(lambda e, g: e + step_size * g, eta, grad)


def batch_sample(sample_one, key, shape):
    """Draw ``shape`` independent samples of ``sample_one(key)``; leaves get ``shape`` prepended.

    sample_one: key -> pytree of arrays (one draw).  shape: tuple of ints (``()`` for one draw).
    """
    shape = tuple(shape)
    if not shape:
        return sample_one(key)
    n = math.prod(shape)
    draws = jax.vmap(sample_one)(jax.random.split(key, n))
    return jax.tree_util.tree_map(lambda x: x.reshape(shape + x.shape[1:]), draws)


def symmetrize(a):
    """(..., D, D) -> ½(a + aᵀ)."""
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))
