r"""Wishart and inverse-Wishart pieces shared by :mod:`.niw` and :mod:`.mniw`.

Conventions: Λ ~ W(V, ν) has density ∝ |Λ|^{(ν−D−1)/2} exp(−½ tr V⁻¹Λ), E[Λ] = νV;
Σ ~ IW(S, ν) ⟺ Σ⁻¹ ~ W(S⁻¹, ν), density ∝ |Σ|^{−(ν+D+1)/2} exp(−½ tr SΣ⁻¹), E[Σ] = S/(ν−D−1).
ν > D − 1 (real, not necessarily an integer). These match scipy.stats.wishart / invwishart.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import digamma, multigammaln

__all__ = ["bartlett_factor", "multidigamma", "multigammaln", "sample_inverse_wishart",
           "sample_wishart"]


def multidigamma(a, dim):
    """ψ_D(a) = Σ_{i=0}^{D−1} ψ(a − i/2), the derivative of log Γ_D(a). a: scalar; dim: int."""
    return jnp.sum(digamma(a - 0.5 * jnp.arange(dim, dtype=jnp.result_type(a, float))))


def bartlett_factor(key, nu, dim, dtype=None):
    """The Bartlett factor B (D, D), lower triangular, with B Bᵀ ~ W(I, ν).

    B_ii = sqrt(χ²_{ν−i}) (i = 0..D−1), B_ij ~ N(0, 1) for i > j, 0 above the diagonal.
    Any square root R of V then gives R B Bᵀ Rᵀ ~ W(V, ν).
    """
    dtype = dtype or jnp.result_type(nu, float)
    k_chi, k_normal = jax.random.split(key)
    shape = 0.5 * (nu - jnp.arange(dim, dtype=dtype))
    chi2 = 2.0 * jax.random.gamma(k_chi, shape, dtype=dtype)
    normal = jnp.tril(jax.random.normal(k_normal, (dim, dim), dtype=dtype), -1)
    return normal + jnp.diag(jnp.sqrt(chi2))


def sample_wishart(key, scale, nu):
    """One draw Λ ~ W(scale, ν). scale: (D, D) symmetric PD; nu: scalar > D − 1. Returns (D, D)."""
    dim = scale.shape[-1]
    root = jnp.linalg.cholesky(scale) @ bartlett_factor(key, nu, dim, scale.dtype)
    return root @ root.T


def sample_inverse_wishart(key, scale, nu):
    """One draw Σ ~ IW(scale, ν), and a square root R (R Rᵀ = Σ, not triangular).

    scale: (D, D) symmetric PD; nu: scalar > D − 1. Returns (Σ (D, D), R (D, D)).
    With scale = C Cᵀ and Bartlett factor B, Σ⁻¹ = C⁻ᵀ B Bᵀ C⁻¹ ~ W(S⁻¹, ν), so R = C B⁻ᵀ:
    no explicit inverse of a sampled matrix is formed.
    """
    dim = scale.shape[-1]
    chol = jnp.linalg.cholesky(scale)
    bart = bartlett_factor(key, nu, dim, scale.dtype)
    root = solve_triangular(bart, chol.T, lower=True).T  # C B⁻ᵀ
    return root @ root.T, root
