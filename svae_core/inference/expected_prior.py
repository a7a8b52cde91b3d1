r"""Mean-field expected LDS prior, as an ordinary prior plus node potentials plus a constant.

With q(θ) over the LDS parameters θ = (m1, Q1, A_t, b_t, Q_t) and q(x) over the states, the
mean-field update of q(x) and its log-normaliser need

    log Z = log ∫ exp(E_q(θ)[log p(x | θ)]) ∏_t φ_t(x_t) dx,

where p(x | θ) = N(x_1 | m1, Q1) ∏_{t=1}^{T-1} N(x_{t+1} | A_t x_t + b_t, Q_t) and φ_t are the
Gaussian potentials of :mod:`.lds`. E_q(θ)[log p(x | θ)] depends on q(θ) only through the
expected statistics

    dynamics  P_t = E[Q_t⁻¹],  R_t = E[Q_t⁻¹Ã_t],  S_t = E[Ã_tᵀQ_t⁻¹Ã_t],  ℓ_t = E[log|Q_t⁻¹|]
    initial   P_1 = E[Q1⁻¹],   r_1 = E[Q1⁻¹m1],    s_1 = E[m1ᵀQ1⁻¹m1],     ℓ_1 = E[log|Q1⁻¹|]

(:class:`svae_core.expfam.mniw.MNIWExpectedStats` and
:class:`svae_core.expfam.niw.NIWExpectedStats` hold exactly these, in this order). The offset
b enters as in the MNIW module: Ã_t = [A_t  b_t] acts on x̃ = [x; 1] (the constant 1 *last*), so
R_t is (D, D+1) and S_t (D+1, D+1). Statistics of A alone, R_t (D, D) and S_t (D, D), mean b = 0.

:func:`expected_lds_prior` rewrites that expectation exactly as a point prior p̄ (the
existing smoother's :class:`~svae_core.inference.lds.LDSPrior`) times node potentials times a
constant, so no second smoother is needed::

    Q̄_t = P_t⁻¹,  [Ā_t  b̄_t] = P_t⁻¹R_t,         Q̄1 = P_1⁻¹,  m̄1 = P_1⁻¹r_1
    W_t = S_t − R_tᵀP_t⁻¹R_t = E[(Ã_t − Ã̄_t)ᵀ Q_t⁻¹ (Ã_t − Ã̄_t)] ⪰ 0,
          partitioned over x̃ = [x; 1] as W_t = [[W_xx, w_x], [w_xᵀ, w_11]]
    E_q(θ)[log p(x | θ)] = log p̄(x) + Σ_{t=1}^{T-1} (−½ x_tᵀ W_xx,t x_t − w_x,tᵀ x_t) + c
    c = ½(ℓ_1 − log|P_1|) − ½(s_1 − r_1ᵀP_1⁻¹r_1)
        + Σ_{t=1}^{T-1} [ ½(ℓ_t − log|P_t|) − ½ w_11,t ]

Derivation, per transition: E[log N(y | Ãx̃, Q)] = −½yᵀPy + yᵀRx̃ − ½x̃ᵀSx̃ + ½ℓ − (D/2)log 2π
and log N(y | Ã̄x̃, Q̄) = −½yᵀPy + yᵀRx̃ − ½x̃ᵀRᵀP⁻¹Rx̃ + ½log|P| − (D/2)log 2π; their
difference is −½x̃ᵀWx̃ + ½(ℓ − log|P|) (the 2π terms cancel). The initial state is the same
with x̃ = 1. Both brackets of c are ≤ 0 (Jensen: log|·| is concave; W ⪰ 0), and all vanish
when q(θ) is a point mass, where W = 0 and p̄ is the point prior.

Hence, with the returned potentials ψ_t = (W_xx,t, −w_x,t) on x_t, t = 1..T−1 (ψ_T = 0)::

    log Z = lds_smoother(p̄, φ + ψ).log_normalizer + c

and the smoother's posterior marginals are those of the mean-field q(x). The potentials are
PSD (W_xx ⪰ 0), so the smoother treats them like any others. W is formed as a difference of
expectations; when q(θ) is very concentrated it is small and carries the rounding of S_t
(float64 is advisable there).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

from svae_core.inference.lds import GaussianPotentials, LDSPrior
from svae_core.inference.linalg import symmetrize


class ExpectedLDSPrior(NamedTuple):
    """prior: :class:`LDSPrior` p̄ (time-varying iff the dynamics statistics were per step).
    potentials: :class:`GaussianPotentials` ψ, J (T, D, D) PSD and h (T, D), zero at step T.
    constant: scalar c. log Z = lds_smoother(prior, φ + potentials).log_normalizer + constant.
    """

    prior: LDSPrior
    potentials: GaussianPotentials
    constant: jax.Array


def _point_and_remainder(prec, prec_x, x_prec_x, logdet_prec):
    """From P, R = E[Q⁻¹Ã], S = E[ÃᵀQ⁻¹Ã], ℓ: (P⁻¹, P⁻¹R, W = S − RᵀP⁻¹R, ½(ℓ − log|P|))."""
    chol = jnp.linalg.cholesky(symmetrize(prec))
    cov = cho_solve((chol, True), jnp.eye(prec.shape[-1], dtype=prec.dtype))
    coef = cho_solve((chol, True), prec_x)
    white = solve_triangular(chol, prec_x, lower=True)  # L⁻¹R, so RᵀP⁻¹R = (L⁻¹R)ᵀ(L⁻¹R)
    remainder = symmetrize(x_prec_x - white.T @ white)
    half_gap = 0.5 * logdet_prec - jnp.sum(jnp.log(jnp.diagonal(chol)))
    return symmetrize(cov), coef, remainder, half_gap


def _transition(dim, prec, prec_A, At_prec_A, logdet_prec):
    """One transition's (A, b, Q, J_extra, h_extra, constant)."""
    Q, coef, W, half_gap = _point_and_remainder(prec, prec_A, At_prec_A, logdet_prec)
    if prec_A.shape[-1] == dim:  # no offset
        return coef, jnp.zeros((dim,), prec.dtype), Q, W, jnp.zeros((dim,), prec.dtype), half_gap
    constant = half_gap - 0.5 * W[dim, dim]
    return coef[:, :dim], coef[:, dim], Q, W[:dim, :dim], -W[:dim, dim], constant


def _check(init, dyn):
    prec1, prec_mean1, mean_prec_mean1, logdet1 = map(jnp.asarray, init)
    prec, prec_A, At_prec_A, logdet = map(jnp.asarray, dyn)
    dim = prec1.shape[-1] if prec1.ndim == 2 else None
    if dim is None or prec1.shape != (dim, dim) or prec_mean1.shape != (dim,) or \
            mean_prec_mean1.shape != () or logdet1.shape != ():
        raise ValueError(
            "initial-state statistics must be (E[Q1⁻¹] (D, D), E[Q1⁻¹m1] (D,), E[m1ᵀQ1⁻¹m1] (), "
            f"E[log|Q1⁻¹|] ()), got shapes {tuple(jnp.shape(x) for x in init)}")
    lead = prec.shape[:-2] if prec.ndim >= 2 else None
    d_in = prec_A.shape[-1] if prec_A.ndim >= 1 else None
    if lead not in ((), prec.shape[:1]) or d_in not in (dim, dim + 1) or \
            prec.shape != (*lead, dim, dim) or prec_A.shape != (*lead, dim, d_in) or \
            At_prec_A.shape != (*lead, d_in, d_in) or logdet.shape != lead:
        raise ValueError(
            f"dynamics statistics must be (E[Q⁻¹] (D, D), E[Q⁻¹Ã] (D, D_in), E[ÃᵀQ⁻¹Ã] "
            f"(D_in, D_in), E[log|Q⁻¹|] ()) with D={dim}, D_in = D (no offset) or D+1 (offset, "
            f"x̃ = [x; 1]), optionally all with a leading T-1 axis; got shapes "
            f"{tuple(jnp.shape(x) for x in dyn)}")
    dtype = jnp.result_type(*init, *dyn, jnp.float32)
    cast = lambda xs: tuple(jnp.asarray(x, dtype) for x in xs)
    return dim, cast((prec1, prec_mean1, mean_prec_mean1, logdet1)), \
        cast((prec, prec_A, At_prec_A, logdet)), len(lead) == 1


@partial(jax.jit, static_argnames="num_timesteps")
def expected_lds_prior(init_stats, dynamics_stats, num_timesteps: int | None = None):
    """E_q(θ)[log p(x | θ)] as (point prior p̄, node potentials ψ, constant c); see the module
    docstring for the formulas.

    Args:
        init_stats: (E[Q1⁻¹] (D, D), E[Q1⁻¹m1] (D,), E[m1ᵀQ1⁻¹m1] (), E[log|Q1⁻¹|] ()), e.g.
            :func:`svae_core.expfam.niw.expected_precision_stats`.
        dynamics_stats: (E[Q⁻¹] (D, D), E[Q⁻¹Ã] (D, D_in), E[ÃᵀQ⁻¹Ã] (D_in, D_in),
            E[log|Q⁻¹|] ()), e.g. :func:`svae_core.expfam.mniw.expected_dynamics_stats`, with
            Ã = [A b] (D_in = D + 1, the constant 1 last) or Ã = A (D_in = D, b = 0). Shared
            by all steps, or per step with a leading T−1 axis on all four.
        num_timesteps: T; required for shared dynamics statistics, checked against per-step.
    Returns:
        :class:`ExpectedLDSPrior` (prior, potentials, constant):
        log ∫ exp(E_q(θ)[log p(x | θ)]) ∏φ_t(x_t) dx
        = lds_smoother(prior, φ + potentials).log_normalizer + constant
        (add potentials with :func:`add_potentials`). The prior is time-invariant for shared
        statistics (the smoother's fast path), time-varying for per-step ones.
    Raises:
        ValueError: on inconsistent shapes or a missing/mismatched ``num_timesteps``.
    """
    dim, init, dyn, per_step = _check(init_stats, dynamics_stats)
    if per_step:
        T = dyn[0].shape[0] + 1
        if num_timesteps is not None and num_timesteps != T:
            raise ValueError(f"per-step dynamics statistics have T-1={T - 1} steps, but "
                             f"num_timesteps={num_timesteps}")
        A, b, Q, J, h, consts = jax.vmap(partial(_transition, dim))(*dyn)
        dyn_constant = jnp.sum(consts)
    else:
        if not (isinstance(num_timesteps, int) and num_timesteps >= 1):
            raise ValueError("shared dynamics statistics need num_timesteps=T (a positive int), "
                             f"got {num_timesteps!r}")
        T = num_timesteps
        A, b, Q, J, h, const = _transition(dim, *dyn)
        J = jnp.broadcast_to(J, (T - 1, dim, dim))
        h = jnp.broadcast_to(h, (T - 1, dim))
        dyn_constant = (T - 1) * const
    prec1, prec_mean1, mean_prec_mean1, logdet1 = init
    Q1, m1, W1, half_gap1 = _point_and_remainder(prec1, prec_mean1[:, None],
                                                 mean_prec_mean1[None, None], logdet1)
    constant = half_gap1 - 0.5 * W1[0, 0] + dyn_constant
    potentials = GaussianPotentials(jnp.concatenate([J, jnp.zeros((1, dim, dim), J.dtype)]),
                                    jnp.concatenate([h, jnp.zeros((1, dim), h.dtype)]))
    return ExpectedLDSPrior(LDSPrior(m1[:, 0], Q1, A, b, Q), potentials, constant)


def add_potentials(a, b):
    """φ + ψ: the product of two :class:`GaussianPotentials` (diagonal J (T, D) densified)."""
    def dense(p):
        J = jnp.asarray(p[0])
        return J[..., :, None] * jnp.eye(J.shape[-1], dtype=J.dtype) if J.ndim == jnp.ndim(p[1]) \
            else J

    return GaussianPotentials(dense(a) + dense(b), jnp.asarray(a[1]) + jnp.asarray(b[1]))


__all__ = ["ExpectedLDSPrior", "add_potentials", "expected_lds_prior"]
