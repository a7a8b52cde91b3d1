r"""Matrix-normal-inverse-Wishart distribution over linear-Gaussian dynamics (A, Σ).

The family, stated once for every routine in this module::

    model     y = A x + ε,  ε ~ N(0, Σ),   x ∈ R^{D_in}, y ∈ R^{D_out}  (an LDS: y = x_{t+1},
              x = x_t; append a constant 1 to x for an offset b)
    standard  Σ ~ IW(S, ν),  A | Σ ~ MN(M, Σ, K⁻¹),  i.e. vec A ~ N(vec M, K⁻¹ ⊗ Σ)
                                                        [MNIWStandard(M, K, S, nu)]
    p(A, Σ) = h(A, Σ) exp{⟨η, t(A, Σ)⟩ − A(η)},   A ∈ R^{D_out×D_in},  Σ ∈ S^{D_out}_{++}
    t(A, Σ) = (−½ Σ⁻¹, Σ⁻¹A, −½ AᵀΣ⁻¹A, −½ log|Σ|)
    η       = (S + M K Mᵀ, M K, K, ν)                   [MNIWNatural(Phi, MK, K, nu)]
    h(A, Σ) = |Σ|^{−(D_out + D_in + 1)/2}
    A(η)    = (D_out D_in/2) log 2π − (D_out/2) log|K| + (ν D_out/2) log 2 + log Γ_{D_out}(ν/2)
              − (ν/2) log|S|,    M = MK K⁻¹,  S = Phi − M K Mᵀ
    ∇A      = (−½ ν S⁻¹,  ν S⁻¹M,  −½(ν MᵀS⁻¹M + D_out K⁻¹),
               ½(ψ_{D_out}(ν/2) + D_out log 2 − log|S|))

K is the column *precision* (a pseudo-count matrix, like κ of the NIW, which is the case
D_in = 1, x = 1 of this family, packed the same way). A transition pair contributes
log N(y | Ax, Σ) = ⟨t(A, Σ), (y yᵀ, y xᵀ, x xᵀ, 1)⟩ − (D_out/2) log 2π, so pairs add
(Σ y yᵀ, Σ y xᵀ, Σ x xᵀ, N) to η (:func:`likelihood_stats`).

The expected statistics that the LDS mean-field step needs — E[Σ⁻¹], E[Σ⁻¹A], E[AᵀΣ⁻¹A] and
E[log|Σ⁻¹|], which make E_q[log p(x_{t+1} | x_t)] a Gaussian potential on (x_t, x_{t+1}) —
are ∇A rescaled (:func:`expected_dynamics_stats`).

Routines act on one member; vmap over batches (e.g. the dynamics of each discrete state).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

from svae_core.expfam import base
from svae_core.expfam.wishart import multigammaln, sample_inverse_wishart


class MNIWNatural(NamedTuple):
    """Natural parameters.

    Phi: (D_out, D_out) = S + M K Mᵀ, symmetric.  MK: (D_out, D_in) = M K.
    K: (D_in, D_in) symmetric PD column precision.  nu: () = ν > D_out − 1.
    """

    Phi: jax.Array
    MK: jax.Array
    K: jax.Array
    nu: jax.Array


class MNIWStandard(NamedTuple):
    """Standard parameters: Σ ~ IW(S, ν), A | Σ ~ MN(M, Σ, K⁻¹).

    M: (D_out, D_in) mean of A.  K: (D_in, D_in) symmetric PD column precision.
    S: (D_out, D_out) symmetric PD scale of Σ.  nu: () degrees of freedom, ν > D_out − 1.
    """

    M: jax.Array
    K: jax.Array
    S: jax.Array
    nu: jax.Array


class MNIWExpectedStats(NamedTuple):
    """E[Σ⁻¹] (D_out, D_out), E[Σ⁻¹A] (D_out, D_in), E[AᵀΣ⁻¹A] (D_in, D_in), E[log|Σ⁻¹|] ()."""

    prec: jax.Array
    prec_A: jax.Array
    At_prec_A: jax.Array
    logdet_prec: jax.Array


@jax.jit
def from_standard(M, K, S, nu):
    """(M, K, S, ν) -> MNIWNatural(S + M K Mᵀ, M K, K, ν)."""
    M, K, S, nu = map(jnp.asarray, (M, K, S, nu))
    K = base.symmetrize(K)
    MK = M @ K
    return MNIWNatural(base.symmetrize(S + MK @ M.T), MK, K, nu)


def _standard_and_chol_K(eta):
    K = base.symmetrize(eta.K)
    chol_K = jnp.linalg.cholesky(K)
    M = cho_solve((chol_K, True), eta.MK.T).T  # MK K⁻¹
    S = base.symmetrize(eta.Phi - M @ eta.MK.T)
    return MNIWStandard(M, K, S, eta.nu), chol_K


@jax.jit
def to_standard(eta):
    """MNIWNatural -> MNIWStandard(M = MK K⁻¹, K, S = Phi − M K Mᵀ, ν)."""
    return _standard_and_chol_K(eta)[0]


@jax.jit
def log_partition(eta):
    """A(η), as in the module docstring. Scalar."""
    d_out, d_in = eta.MK.shape
    std, chol_K = _standard_and_chol_K(eta)
    logdet_K = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol_K)))
    logdet_S = 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(std.S))))
    return (0.5 * d_out * d_in * math.log(2 * math.pi) - 0.5 * d_out * logdet_K
            + 0.5 * eta.nu * d_out * math.log(2.0)
            + multigammaln(0.5 * eta.nu, d_out)
            - 0.5 * eta.nu * logdet_S)


@jax.jit
def sufficient_stats(A, Sigma):
    """t(A, Σ) = MNIWNatural(−½Σ⁻¹, Σ⁻¹A, −½AᵀΣ⁻¹A, −½log|Σ|). A: (D_out, D_in); Sigma PD."""
    chol = jnp.linalg.cholesky(base.symmetrize(Sigma))
    prec_A = cho_solve((chol, True), A)
    prec = cho_solve((chol, True), jnp.eye(A.shape[0], dtype=Sigma.dtype))
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return MNIWNatural(-0.5 * base.symmetrize(prec), prec_A,
                       -0.5 * base.symmetrize(A.T @ prec_A), -0.5 * logdet)


@jax.jit
def log_base_measure(A, Sigma):
    """log h(A, Σ) = −(D_out + D_in + 1)/2 · log|Σ|. Scalar."""
    d_out, d_in = A.shape
    return -0.5 * (d_out + d_in + 1) * jnp.linalg.slogdet(Sigma)[1]


@jax.jit
def likelihood_stats(x, y, weights=None):
    """Statistics of transition pairs y_n = A x_n + ε_n for the conjugate update, packed like η.

    x: (N, D_in) inputs.  y: (N, D_out) outputs.  weights: optional (N,).
    Returns MNIWNatural(Σ w y yᵀ, Σ w y xᵀ, Σ w x xᵀ, Σ w); the posterior is η₀ + this. For
    statistics expected under q(x), build MNIWNatural(Σ E[yyᵀ], Σ E[yxᵀ], Σ E[xxᵀ], N) directly.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    w = jnp.ones(x.shape[:1], x.dtype) if weights is None else jnp.asarray(weights, x.dtype)
    return MNIWNatural(jnp.einsum("n,ni,nj->ij", w, y, y), jnp.einsum("n,ni,nj->ij", w, y, x),
                       jnp.einsum("n,ni,nj->ij", w, x, x), jnp.sum(w))


@jax.jit
def expected_stats(eta):
    """∇A(η) = MNIWNatural(E[−½Σ⁻¹], E[Σ⁻¹A], E[−½AᵀΣ⁻¹A], E[−½log|Σ|])."""
    return base.expected_stats(log_partition, eta)


@jax.jit
def expected_dynamics_stats(eta):
    """MNIWExpectedStats(E[Σ⁻¹], E[Σ⁻¹A], E[AᵀΣ⁻¹A], E[log|Σ⁻¹|]): ∇A times (−2, 1, −2, 2)."""
    g = expected_stats(eta)
    return MNIWExpectedStats(-2.0 * g.Phi, g.MK, -2.0 * g.K, 2.0 * g.nu)


@jax.jit
def log_prob(eta, A, Sigma):
    """log p(A, Σ) (density with respect to Lebesgue measure on (A, upper triangle of Σ))."""
    return (base.inner(eta, sufficient_stats(A, Sigma)) - log_partition(eta)
            + log_base_measure(A, Sigma))


@jax.jit
def kl(eta_q, eta_p):
    """KL(q‖p) between two MNIWs given by natural parameters. Scalar."""
    return base.kl(log_partition, eta_q, eta_p)


@partial(jax.jit, static_argnames="shape")
def sample(key, eta, shape=()):
    """(A, Σ) ~ MNIW: Σ ~ IW(S, ν) by the Bartlett decomposition, then A = M + R Z L⁻¹
    with R Rᵀ = Σ, K = L Lᵀ and Z standard normal (so vec A has covariance K⁻¹ ⊗ Σ).

    Returns (A: shape + (D_out, D_in), Sigma: shape + (D_out, D_out)).
    """
    std, chol_K = _standard_and_chol_K(eta)

    def one(k):
        k_sigma, k_a = jax.random.split(k)
        Sigma, root = sample_inverse_wishart(k_sigma, std.S, std.nu)
        z = jax.random.normal(k_a, std.M.shape, std.M.dtype)
        z_col = solve_triangular(chol_K.T, z.T, lower=False).T  # Z L⁻¹
        return std.M + root @ z_col, Sigma

    return base.batch_sample(one, key, shape)
