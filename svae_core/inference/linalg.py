"""Small dense linear-algebra pieces shared by the Gaussian-chain routines.

Everything here acts on single (D, D) matrices; batching comes from vmap.

Why a hand-written inverse: the chain routines factorise one small D×D matrix per time step
(D is 2–10 in the papers' experiments). On CPU each LAPACK call (getrf, trsm) is a custom call
with fixed overhead, and XLA cannot fuse across it; for D ≤ ``SMALL_DIM`` a Gauss–Jordan
elimination written as D vectorised steps fuses into a handful of loops, runs several times
faster and compiles faster (benchmarks/smoother.py measures it). Larger D uses LAPACK's LU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import lu_factor, lu_solve

SMALL_DIM = 8


def mm(a, b):
    """a @ b for (D, D) or (D,) operands. For D ≤ SMALL_DIM as a broadcast product and sum,
    which XLA fuses with its neighbours instead of emitting one small dot kernel per product:
    about 10–15% less compile and run time in the scan bodies (measured on CPU)."""
    if max(a.shape[-1], b.shape[0]) > SMALL_DIM:
        return a @ b
    if b.ndim == 1:
        return (a * b).sum(-1)
    if a.ndim == 1:
        return (a[:, None] * b).sum(0)
    return (a[:, :, None] * b[None, :, :]).sum(1)


def symmetrize(a):
    """(..., D, D) -> ½(a + aᵀ): removes the asymmetry that rounding leaves."""
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def _gauss_jordan(M):
    """Inverse and log|det| of M (D, D) by Gauss–Jordan elimination with partial pivoting.

    Rows are never swapped: each step picks the largest unused row as pivot, and the
    permutation is undone by one product at the end. That keeps the program free of gathers
    and scatters, which dominate XLA compile time for such small loops. M = I is inverted
    exactly (every pivot is 1, every eliminator 0), with log-determinant exactly 0.
    """
    dim = M.shape[-1]
    aug = jnp.concatenate([M, jnp.eye(dim, dtype=M.dtype)], axis=-1)  # (D, 2D)
    unused = jnp.ones((dim,), bool)
    rows = jnp.arange(dim)
    logdet = jnp.zeros((), M.dtype)
    for k in range(dim):
        col = aug[:, k]
        if k < dim - 1:
            # The unused row of largest |col| (lowest index on ties), by pairwise comparison:
            # an elementwise op XLA fuses, where argmax is a separate reduction.
            score = jnp.where(unused, jnp.abs(col), -1.0)
            beats = (score[:, None] > score[None, :]) | (
                (score[:, None] == score[None, :]) & (rows[:, None] <= rows[None, :])
            )
            pick = beats.all(axis=1)
        else:
            pick = unused  # one row left: no search
        pivot_row = jnp.where(pick[:, None], aug, 0).sum(axis=0)
        pivot = pivot_row[k]
        logdet = logdet + jnp.log(jnp.abs(pivot))
        new_row = pivot_row / pivot
        aug = jnp.where(pick[:, None], new_row, aug - col[:, None] * new_row)
        unused = unused & ~pick
    # The left block is now a permutation P with P[p_k, k] = 1; M⁻¹ = Pᵀ · right block.
    return mm(aug[:, :dim].T, aug[:, dim:]), logdet


@jax.custom_jvp
def inv_and_logabsdet(M):
    """(M⁻¹, log|det M|) for a nonsingular (D, D) matrix M.

    Gauss–Jordan for D ≤ SMALL_DIM, LAPACK LU otherwise; derivatives by the closed forms
    dM⁻¹ = −M⁻¹ dM M⁻¹ and d log|det M| = tr(M⁻¹ dM), so nothing differentiates through pivoting.
    """
    dim = M.shape[-1]
    if dim <= SMALL_DIM:
        return _gauss_jordan(M)
    lu, piv = lu_factor(M)
    inv = lu_solve((lu, piv), jnp.eye(dim, dtype=M.dtype))
    return inv, jnp.sum(jnp.log(jnp.abs(jnp.diagonal(lu))))


@inv_and_logabsdet.defjvp
def _inv_and_logabsdet_jvp(primals, tangents):
    (M,), (dM,) = primals, tangents
    inv, logdet = inv_and_logabsdet(M)
    return (inv, logdet), (-inv @ dM @ inv, jnp.sum(inv.T * dM))


def cholesky(M):
    """Lower Cholesky factor L (L Lᵀ = M) of a symmetric positive-definite (D, D) matrix.

    For D ≤ SMALL_DIM the Cholesky–Banachiewicz recursion written out entry by entry: XLA
    fuses it into a few elementwise loops over the batch, where LAPACK's potrf is one custom
    call per matrix and its gradient two more (trsm), which dominate the sampler's cost on
    CPU for batches of 3×3 matrices. Larger D uses LAPACK.
    """
    dim = M.shape[-1]
    if dim > SMALL_DIM:
        return jnp.linalg.cholesky(M)
    zero = jnp.zeros((), M.dtype)
    L = cholesky_entries(lambda i, j: M[i, j], dim, zero)
    return jnp.stack([jnp.stack([L[i, j] if j <= i else zero for j in range(dim)])
                      for i in range(dim)])


def cholesky_entries(entry, dim, zero=0.0):
    """The Cholesky–Banachiewicz recursion entry by entry: {(i, j): L_ij for i ≥ j} with
    L Lᵀ = M, where ``entry(i, j)`` returns M_ij (i ≥ j) as a scalar or a batch of scalars.
    ``zero`` starts the sums (pass a typed zero to keep the dtype)."""
    L = {}
    for j in range(dim):
        L[j, j] = jnp.sqrt(entry(j, j) - sum((L[j, k] ** 2 for k in range(j)), zero))
        inv_diag = 1.0 / L[j, j]
        for i in range(j + 1, dim):
            off = entry(i, j) - sum((L[i, k] * L[j, k] for k in range(j)), zero)
            L[i, j] = off * inv_diag
    return L


def inv(M):
    """M⁻¹ for a nonsingular (D, D) matrix (see :func:`inv_and_logabsdet`)."""
    return inv_and_logabsdet(M)[0]


def condition_on_potential(mean, cov, J, h):
    """Multiply N(mean, cov) by the potential exp(h·x − ½ xᵀJx) and renormalise.

    Works with M = I + cov·J, never with cov⁻¹, so J may be singular; J = 0, h = 0
    returns (mean, cov, 0) exactly (M = I inverts exactly).

    Args:
        mean: (D,) prior mean.  cov: (D, D) prior covariance (positive definite).
        J: (D, D) symmetric PSD potential precision.  h: (D,) potential linear term.
    Returns:
        post_mean (D,), post_cov (D, D), and the scalar
        log ∫ N(x; mean, cov) exp(h·x − ½ xᵀJx) dx.
    """
    dim = mean.shape[-1]
    residual = h - mm(J, mean)  # gradient of the log-potential at the prior mean
    # det(I + ΣJ) = det(I + Σ½JΣ½) ≥ 1 > 0, so log|det| is the log-determinant.
    M_inv, logdet = inv_and_logabsdet(jnp.eye(dim, dtype=cov.dtype) + mm(cov, J))
    post_cov = symmetrize(mm(M_inv, cov))  # (I + ΣJ)⁻¹Σ = (Σ⁻¹ + J)⁻¹
    shift = mm(post_cov, residual)
    log_z = -0.5 * logdet + mm(h - 0.5 * mm(J, mean), mean) + 0.5 * mm(residual, shift)
    return mean + shift, post_cov, log_z


__all__ = [
    "SMALL_DIM",
    "cholesky",
    "cholesky_entries",
    "condition_on_potential",
    "inv",
    "inv_and_logabsdet",
    "mm",
    "symmetrize",
]
