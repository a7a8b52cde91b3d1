"""Small dense linear-algebra pieces shared by the Gaussian-chain routines.

Everything here acts on the trailing two axes and broadcasts over leading ones.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve, lu_factor, lu_solve


def symmetrize(a):
    """(..., D, D) -> ½(a + aᵀ): removes the asymmetry that rounding leaves."""
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def psd_solve(a, b):
    """Solve a x = b for symmetric positive-definite a (D, D), b (D,) or (D, K)."""
    return cho_solve(cho_factor(a, lower=True), b)


def condition_on_potential(mean, cov, J, h):
    """Multiply N(mean, cov) by the potential exp(h·x − ½ xᵀJx) and renormalise.

    Works with M = I + cov·J, never with cov⁻¹, so J may be singular; J = 0, h = 0
    returns (mean, cov, 0) exactly (M = I factorises and solves exactly).

    Args:
        mean: (D,) prior mean.  cov: (D, D) prior covariance (positive definite).
        J: (D, D) symmetric PSD potential precision.  h: (D,) potential linear term.
    Returns:
        post_mean (D,), post_cov (D, D), and the scalar
        log ∫ N(x; mean, cov) exp(h·x − ½ xᵀJx) dx.
    """
    dim = mean.shape[-1]
    residual = h - J @ mean  # gradient of the log-potential at the prior mean
    lu = lu_factor(jnp.eye(dim, dtype=cov.dtype) + cov @ J)
    # (I + ΣJ)⁻¹ Σ = (Σ⁻¹ + J)⁻¹ and (Σ⁻¹ + J)⁻¹ r = shift of the mean.
    sol = lu_solve(lu, jnp.concatenate([cov, (cov @ residual)[:, None]], axis=1))
    post_cov = symmetrize(sol[:, :dim])
    shift = sol[:, dim]
    # det(I + ΣJ) > 0, so log|U_ii| sums to its log-determinant.
    logdet = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(lu[0]))))
    log_z = -0.5 * logdet + h @ mean - 0.5 * mean @ J @ mean + 0.5 * residual @ shift
    return mean + shift, post_cov, log_z


__all__ = ["condition_on_potential", "lu_factor", "lu_solve", "psd_solve", "symmetrize"]
