r"""Exact inference in a linear-Gaussian chain with Gaussian potentials (information form).

The model, stated once for every routine in this module::

    prior      p(x) = N(x_1 | m1, Q1) ∏_{t=1}^{T-1} N(x_{t+1} | A_t x_t + b_t, Q_t)
    potentials φ_t(x_t) = exp(h_t·x_t − ½ x_tᵀ J_t x_t),   t = 1..T
    posterior  q(x) ∝ p(x) ∏_t φ_t(x_t)
    log_normalizer = log E_{p(x)}[∏_t φ_t(x_t)]   (φ carries no normalising constant)

``x_t ∈ R^D``. The dynamics are time-invariant (A_t = A, b_t = b, Q_t = Q: arrays (D, D), (D,),
(D, D)) or time-varying (a leading T−1 axis, entry t−1 for the step x_t → x_{t+1}); see
:class:`LDSPrior`. A recognition network (or an observation model) supplies (J_t, h_t); J_t is
symmetric positive semi-definite, dense (T, D, D) or diagonal (T, D). ``J_t = 0, h_t = 0``
means "step t unobserved" and is handled exactly: such a step leaves the posterior equal to
prior propagation and adds exactly 0 to the log-normalizer. An all-missing sequence returns
the prior marginals with log_normalizer 0.

Each routine has two implementations that agree to rounding:
``method="sequential"`` (``lax.scan``, O(T) depth) and ``method="parallel"`` (prefix sums over
the associative elements of Särkkä & García-Fernández 2020, computed by the blocked scan in
:mod:`.scan`: O(√T) depth, about 2T combines, and a compile time independent of T). The potential
update never inverts a covariance or J; it factorises I + ΣJ, which is what makes singular
J (including J = 0) exact.

All functions are pure, jit-compiled, differentiable in every prior and potential entry,
and vmap over batches of sequences and of priors.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from svae_core.inference.linalg import (
    cholesky,
    condition_on_potential,
    inv,
    inv_and_logabsdet,
    mm,
    symmetrize,
)
from svae_core.inference.scan import chunked_scan

METHODS = ("parallel", "sequential")


class LDSPrior(NamedTuple):
    """Parameters of the linear-Gaussian chain prior.

    m1: (D,) initial mean.  Q1: (D, D) initial covariance (positive definite).
    A: (D, D) dynamics.  b: (D,) dynamics offset.  Q: (D, D) dynamics noise covariance (PD).

    Time-varying dynamics: any of A, b, Q may carry a leading axis of length T − 1 (A (T−1, D, D),
    b (T−1, D), Q (T−1, D, D)); entry t−1 (0-based) governs x_{t+1} | x_t. It is detected by
    ndim; the others are then broadcast along it. T is the potentials' length, so a
    time-varying prior fixes T. Time-invariant dynamics keep their own, cheaper code path.
    """

    m1: jax.Array
    Q1: jax.Array
    A: jax.Array
    b: jax.Array
    Q: jax.Array


class GaussianPotentials(NamedTuple):
    """Per-step Gaussian potentials φ_t(x) = exp(h_t·x − ½ xᵀ J_t x).

    J: (T, D, D) symmetric PSD, or (T, D) for diagonal J_t.  h: (T, D).
    J_t = 0 and h_t = 0 mark step t as missing.
    """

    J: jax.Array
    h: jax.Array


class LDSFiltered(NamedTuple):
    """Filtered marginals p(x_t | φ_1..φ_t).

    mean: (T, D).  cov: (T, D, D).  log_normalizer: scalar, as in the module docstring.
    log_normalizer_increments: (T,) their per-step terms log E[φ_t | φ_1..φ_{t-1}].
    """

    mean: jax.Array
    cov: jax.Array
    log_normalizer: jax.Array
    log_normalizer_increments: jax.Array

    @property
    def filtered_means(self):
        return self.mean

    @property
    def filtered_covs(self):
        return self.cov


class LDSPosterior(NamedTuple):
    """Smoothed marginals of q(x) ∝ p(x) ∏ φ_t(x_t).

    mean: (T, D).  cov: (T, D, D).  cross_cov: (T-1, D, D), Cov(x_t, x_{t+1}) (centred).
    log_normalizer: scalar.  filtered: the forward pass it came from.
    """

    mean: jax.Array
    cov: jax.Array
    cross_cov: jax.Array
    log_normalizer: jax.Array
    filtered: LDSFiltered


class _BackwardElements(NamedTuple):
    """x_t | x_{t+1} ~ N(E_t x_{t+1} + g_t, L_t); the last step has E = 0 (x_T ~ N(g_T, L_T))."""

    E: jax.Array  # (T, D, D)
    g: jax.Array  # (T, D)
    L: jax.Array  # (T, D, D)


# ----------------------------------------------------------------------------- validation


def _validate(prior, potentials, method):
    """Check shapes, promote dtypes, densify diagonal J; raise ValueError naming shapes."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(prior, LDSPrior):
        prior = LDSPrior(*prior)
    if not isinstance(potentials, GaussianPotentials):
        potentials = GaussianPotentials(*potentials)
    shapes = {name: jnp.shape(v) for name, v in prior._asdict().items()}
    if len(shapes["m1"]) != 1:
        raise ValueError(f"LDSPrior.m1 must have shape (D,), got {shapes['m1']}")
    dim = shapes["m1"][0]
    expected = {"m1": (dim,), "Q1": (dim, dim), "A": (dim, dim), "b": (dim,), "Q": (dim, dim)}
    # Time-varying dynamics: A, b or Q with one more axis than expected; its length is T − 1.
    varying = [k for k in ("A", "b", "Q") if len(shapes[k]) == len(expected[k]) + 1]
    steps = shapes[varying[0]][0] if varying else None
    for k in varying:
        expected[k] = (steps, *expected[k])
    bad = {k: s for k, s in shapes.items() if s != expected[k]}
    if bad:
        got = ", ".join(f"{k}={s}" for k, s in shapes.items())
        want = ", ".join(f"{k}={s}" for k, s in expected.items())
        raise ValueError(f"LDSPrior shapes disagree with D={dim}: got {got}; expected {want}")
    J, h = potentials
    h_shape, J_shape = jnp.shape(h), jnp.shape(J)
    if len(h_shape) != 2 or h_shape[1] != dim or h_shape[0] < 1:
        raise ValueError(
            f"GaussianPotentials.h must have shape (T, D) with D={dim} from the prior and T>=1, "
            f"got h={h_shape} (J={J_shape})"
        )
    T = h_shape[0]
    if J_shape not in ((T, dim, dim), (T, dim)):
        raise ValueError(
            f"GaussianPotentials.J must have shape (T, D, D)=({T}, {dim}, {dim}) or diagonal "
            f"(T, D)=({T}, {dim}) to match h={h_shape}, got J={J_shape}"
        )
    if varying and steps != T - 1:
        got = ", ".join(f"{k}={shapes[k]}" for k in varying)
        raise ValueError(f"time-varying LDSPrior dynamics need a leading axis of length "
                         f"T-1={T - 1} for potentials of length T={T} (h={h_shape}), got {got}")
    dtype = jnp.result_type(*prior, J, h, jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"inputs must be real floating point, got dtype {dtype}")
    prior = LDSPrior(*(jnp.asarray(v, dtype) for v in prior))
    if varying:
        prior = prior._replace(**{k: jnp.broadcast_to(getattr(prior, k), (steps, *expected[k]))
                                  for k in ("A", "b", "Q") if k not in varying})
    J, h = jnp.asarray(J, dtype), jnp.asarray(h, dtype)
    if J.ndim == 2:
        J = J[:, :, None] * jnp.eye(dim, dtype=dtype)
    return prior, GaussianPotentials(J, h)


# ----------------------------------------------------------------------------- forward pass


def _identity_like(elems):
    """Identity element for every combine here: identity matrices where the element's
    leading entry is a matrix (A, E), zeros elsewhere."""
    first, *rest = (x[0] for x in elems)
    return (jnp.eye(first.shape[-1], dtype=first.dtype), *(jnp.zeros_like(x) for x in rest))


def _parallel_scan(combine, elems, reverse=False):
    return chunked_scan(combine, elems, _identity_like(elems), reverse=reverse)



def _time_varying(prior):
    """Whether the prior's dynamics carry a leading time axis (after :func:`_validate`)."""
    return prior.A.ndim == 3


def _update_predict(carry, potential, A, b, Q):
    """Condition the prediction for x_t on φ_t, then predict x_{t+1} under (A, b, Q)."""
    pred_mean, pred_cov = carry
    mean, cov, log_z = condition_on_potential(pred_mean, pred_cov, *potential)
    return (mm(A, mean) + b, symmetrize(mm(mm(A, cov), A.T)) + Q), (mean, cov, log_z)


def _filter_sequential(prior, pots):
    A, b, Q = prior.A, prior.b, prior.Q
    if _time_varying(prior):
        # Step t predicts x_{t+1} with dynamics t; the last step's prediction is discarded,
        # so it gets zero dynamics.
        pad = lambda x: jnp.concatenate([x, jnp.zeros((1, *x.shape[1:]), x.dtype)])
        step = lambda carry, inputs: _update_predict(carry, *inputs)
        inputs = (pots, pad(A), pad(b), pad(Q))
    else:
        step = lambda carry, potential: _update_predict(carry, potential, A, b, Q)
        inputs = pots
    _, (means, covs, log_zs) = lax.scan(step, (prior.m1, prior.Q1), inputs)
    return means, covs, log_zs


def _filter_element(A, b, Q, J, h):
    """Prefix-sum element a_t = (A_t, b_t, C_t, η_t, J_t, c_t) (Särkkä & García-Fernández 2020).

    For the transition x_t ~ N(A x_{t-1} + b, Q) and potential φ_t = (J, h):
    p(x_t | x_{t-1}, φ_t) = N(A_t x_{t-1} + b_t, C_t) and
    log E[φ_t | x_{t-1}] = c_t + η_t·x_{t-1} − ½ x_{t-1}ᵀ J_t x_{t-1}.
    The first step is the same element with A = 0, b = m1, Q = Q1.
    """
    dim = b.shape[0]
    M_inv, logdet = inv_and_logabsdet(jnp.eye(dim, dtype=b.dtype) + mm(Q, J))  # M = I + QJ
    C = symmetrize(mm(M_inv, Q))
    resid = h - mm(J, b)
    shift = mm(C, resid)
    back = mm(M_inv, A).T  # Aᵀ M⁻ᵀ
    log_c = -0.5 * logdet + mm(h - 0.5 * mm(J, b), b) + 0.5 * mm(resid, shift)
    return mm(M_inv, A), b + shift, C, mm(back, resid), symmetrize(mm(mm(back, J), A)), log_c


def _combine_filter_elements(earlier, later):
    """a_i ⊗ a_j for consecutive blocks i (earlier) and j (later).

    Besides the conditional (A, b, C) and the backward potential (η, J), the scalar c tracks
    log E[∏ φ over both blocks | x before block i] at x = 0, so the prefix at T carries the
    log-normalizer and no separate pass is needed.
    """
    Ai, bi, Ci, etai, Ji, ci = earlier
    Aj, bj, Cj, etaj, Jj, cj = later
    dim = bi.shape[0]
    M_inv, logdet = inv_and_logabsdet(jnp.eye(dim, dtype=bi.dtype) + mm(Ci, Jj))  # M = I + CᵢJⱼ
    M_inv_C = mm(M_inv, Ci)
    fwd = mm(Aj, M_inv)  # A_j M⁻¹
    back = mm(M_inv, Ai).T  # A_iᵀ M⁻ᵀ, with M⁻ᵀ = (I + J_j C_i)⁻¹
    resid = etaj - mm(Jj, bi)
    log_c = (
        ci + cj - 0.5 * logdet + mm(etaj - 0.5 * mm(Jj, bi), bi)
        + 0.5 * mm(resid, mm(M_inv_C, resid))
    )
    return (
        mm(fwd, Ai),
        mm(Aj, mm(M_inv, bi) + mm(M_inv_C, etaj)) + bj,
        symmetrize(mm(mm(Aj, M_inv_C), Aj.T) + Cj),
        mm(back, resid) + etai,
        symmetrize(mm(mm(back, Jj), Ai) + Ji),
        log_c,
    )


def _filter_parallel(prior, pots):
    T, dim = pots.h.shape
    if _time_varying(prior):
        steps = lambda first, rest: jnp.concatenate([first[None], rest])
        no_dynamics = jnp.zeros(prior.A.shape[1:], prior.A.dtype)
    else:
        steps = lambda first, rest: jnp.concatenate([first[None], jnp.broadcast_to(
            rest, (T - 1, *rest.shape))])
        no_dynamics = jnp.zeros_like(prior.A)
    elements = jax.vmap(_filter_element)(
        steps(no_dynamics, prior.A),
        steps(prior.m1, prior.b),
        steps(prior.Q1, prior.Q),
        pots.J,
        pots.h,
    )
    _, means, covs, _, _, log_c = _parallel_scan(_combine_filter_elements, elements)
    # log_c[t] = log E[φ_1..φ_t]; a masked step repeats the previous prefix exactly.
    return means, covs, log_c[-1], jnp.diff(log_c, prepend=0.0)


def _filter(prior, pots, method):
    if method == "parallel":
        return LDSFiltered(*_filter_parallel(prior, pots))
    means, covs, log_zs = _filter_sequential(prior, pots)
    return LDSFiltered(means, covs, jnp.sum(log_zs), log_zs)


# ----------------------------------------------------------------------------- backward pass


def _backward_elements(prior, filt_means, filt_covs):
    """Condition x_t on x_{t+1} under the filtered marginal (RTS gains), all t at once.

    Written as a potential update of N(μ_f, Σ_f) by the dynamics' precision AᵀQ⁻¹A:
    with M = I + Σ_f AᵀQ⁻¹A,  E = M⁻¹Σ_f AᵀQ⁻¹,  I − EA = M⁻¹,  g = M⁻¹μ_f − E b,
    L = M⁻¹Σ_f. This never forms μ_f − E(Aμ_f + b), a difference of nearly equal terms
    whenever Σ_f ≫ Q (long missing stretches), so float32 keeps its digits there.
    Time-varying dynamics use (A_t, b_t, Q_t) at step t.
    """
    A, b, Q = prior.A, prior.b, prior.Q
    dim = b.shape[-1]

    def element(mean, cov, Q_inv_A, dyn_precision, b):
        M_inv = inv(jnp.eye(dim, dtype=b.dtype) + mm(cov, dyn_precision))
        M_inv_cov = mm(M_inv, cov)
        gain = mm(M_inv_cov, Q_inv_A.T)  # Σ_f Aᵀ (AΣ_fAᵀ + Q)⁻¹ by Woodbury
        return gain, mm(M_inv, mean) - mm(gain, b), symmetrize(M_inv_cov)

    if _time_varying(prior):
        Q_inv_A = jax.vmap(inv)(Q) @ A
        dyn_precision = symmetrize(jnp.swapaxes(A, -1, -2) @ Q_inv_A)  # A_tᵀQ_t⁻¹A_t
        E, g, L = jax.vmap(element)(filt_means[:-1], filt_covs[:-1], Q_inv_A, dyn_precision, b)
    else:
        Q_inv_A = inv(Q) @ A
        dyn_precision = symmetrize(A.T @ Q_inv_A)  # AᵀQ⁻¹A
        E, g, L = jax.vmap(lambda mean, cov: element(mean, cov, Q_inv_A, dyn_precision, b))(
            filt_means[:-1], filt_covs[:-1])
    return _BackwardElements(
        jnp.concatenate([E, jnp.zeros((1, dim, dim), b.dtype)]),
        jnp.concatenate([g, filt_means[-1:]]),
        jnp.concatenate([L, filt_covs[-1:]]),
    )


def _smooth_sequential(elems):
    def step(carry, elem):
        mean, cov = carry
        E, g, L = elem
        mean, cov = mm(E, mean) + g, symmetrize(mm(mm(E, cov), E.T)) + L
        return (mean, cov), (mean, cov)

    last = (elems.g[-1], elems.L[-1])
    head = _BackwardElements(elems.E[:-1], elems.g[:-1], elems.L[:-1])
    _, (means, covs) = lax.scan(step, last, head, reverse=True)
    return jnp.concatenate([means, last[0][None]]), jnp.concatenate([covs, last[1][None]])


def _combine_backward_elements(later, earlier):
    """Compose x_e = E_e x_l + … with x_l = E_l x_{l+} + … (reverse scan: later comes first)."""
    El, gl, Ll = later
    Ee, ge, Le = earlier
    return mm(Ee, El), mm(Ee, gl) + ge, symmetrize(mm(mm(Ee, Ll), Ee.T) + Le)


def _smooth_parallel(elems):
    _, means, covs = _parallel_scan(_combine_backward_elements, tuple(elems), reverse=True)
    return means, covs


def _compose_affine(later, earlier):
    El, cl = later
    Ee, ce = earlier
    return mm(Ee, El), mm(Ee, cl) + ce


def _sample_path(elems, chol_L, noise, method):
    """One draw: x_t = E_t x_{t+1} + g_t + chol(L_t) ε_t, run backwards from t = T."""
    offsets = elems.g + jnp.einsum("tij,tj->ti", chol_L, noise)
    if method == "parallel":
        _, path = _parallel_scan(_compose_affine, (elems.E, offsets), reverse=True)
        return path

    def step(x_next, elem):
        E, c = elem
        x = mm(E, x_next) + c
        return x, x

    _, path = lax.scan(step, offsets[-1], (elems.E[:-1], offsets[:-1]), reverse=True)
    return jnp.concatenate([path, offsets[-1:]])


def _smooth(filtered, elems, method):
    smooth = _smooth_parallel if method == "parallel" else _smooth_sequential
    means, covs = smooth(elems)
    cross_cov = elems.E[:-1] @ covs[1:]  # Cov(x_t, x_{t+1}) = E_t Σ_{t+1|T}
    return LDSPosterior(means, covs, cross_cov, filtered.log_normalizer, filtered)


def _sample(key, prior, pots, filtered, num_samples, method):
    elems = _backward_elements(prior, filtered.mean, filtered.cov)
    chol_L = jax.vmap(cholesky)(elems.L)
    noise = jax.random.normal(key, (num_samples, *elems.g.shape), elems.g.dtype)
    return jax.vmap(lambda eps: _sample_path(elems, chol_L, eps, method))(noise), elems


def _check_num_samples(num_samples):
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")


# ----------------------------------------------------------------------------- public API


@partial(jax.jit, static_argnames="method")
def lds_filter(prior: LDSPrior, potentials: GaussianPotentials, method: str = "parallel"):
    """Filtered marginals p(x_t | φ_1..φ_t) and the log-normalizer.

    Args:
        prior: :class:`LDSPrior` with D-dimensional state.
        potentials: :class:`GaussianPotentials`, J (T, D, D) or (T, D), h (T, D).
        method: ``"parallel"`` (associative scan) or ``"sequential"`` (``lax.scan``).
    Returns:
        :class:`LDSFiltered` with mean (T, D), cov (T, D, D), log_normalizer (scalar).
    Raises:
        ValueError: on a shape mismatch (the message names the shapes) or unknown method.
    """
    prior, pots = _validate(prior, potentials, method)
    return _filter(prior, pots, method)


@partial(jax.jit, static_argnames="method")
def lds_smoother(prior: LDSPrior, potentials: GaussianPotentials, method: str = "parallel"):
    """Posterior marginals of q(x) ∝ p(x) ∏_t φ_t(x_t) (Kalman/RTS smoother).

    Args: as :func:`lds_filter`.
    Returns:
        :class:`LDSPosterior` with mean (T, D), cov (T, D, D), cross_cov (T-1, D, D) =
        Cov(x_t, x_{t+1}), log_normalizer (scalar), and the filtered pass.
    """
    prior, pots = _validate(prior, potentials, method)
    filtered = _filter(prior, pots, method)
    return _smooth(filtered, _backward_elements(prior, filtered.mean, filtered.cov), method)


@partial(jax.jit, static_argnames=("num_samples", "method"))
def lds_smoother_and_sample(
    key: jax.Array,
    prior: LDSPrior,
    potentials: GaussianPotentials,
    num_samples: int = 1,
    method: str = "parallel",
):
    """:func:`lds_smoother` and :func:`lds_sample` sharing one forward pass (what an SVAE
    needs each step: the marginals for the closed-form KL, samples for the reconstruction).

    Returns:
        (:class:`LDSPosterior`, samples (num_samples, T, D)); the samples equal
        ``lds_sample(key, ...)`` with the same key.
    """
    _check_num_samples(num_samples)
    prior, pots = _validate(prior, potentials, method)
    filtered = _filter(prior, pots, method)
    samples, elems = _sample(key, prior, pots, filtered, num_samples, method)
    return _smooth(filtered, elems, method), samples


@jax.jit
def lds_log_prob(prior: LDSPrior, x: jax.Array):
    """log p(x_{1:T}) under the LDS prior (time-invariant or time-varying), for a trajectory x
    of shape (T, D)."""
    prior, _ = _validate(prior, GaussianPotentials(jnp.zeros_like(x), jnp.zeros_like(x)),
                         "sequential")

    def log_normal(value, mean, cov):
        chol = jnp.linalg.cholesky(cov)
        z = jax.scipy.linalg.solve_triangular(chol, (value - mean).T, lower=True)
        logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol)))
        return -0.5 * (jnp.sum(z**2, axis=0) + logdet + x.shape[-1] * jnp.log(2 * jnp.pi))

    first = log_normal(x[:1], prior.m1, prior.Q1)
    if _time_varying(prior):
        means = jnp.einsum("tij,tj->ti", prior.A, x[:-1]) + prior.b
        rest = jax.vmap(lambda v, m, c: log_normal(v[None], m, c)[0])(x[1:], means, prior.Q)
    else:
        rest = log_normal(x[1:], x[:-1] @ prior.A.T + prior.b, prior.Q)
    return jnp.sum(first) + jnp.sum(rest)


@partial(jax.jit, static_argnames=("num_samples", "method"))
def lds_sample(
    key: jax.Array,
    prior: LDSPrior,
    potentials: GaussianPotentials,
    num_samples: int = 1,
    method: str = "parallel",
):
    """Reparameterised joint samples from q(x) ∝ p(x) ∏_t φ_t(x_t).

    Forward filter, then backward sampling x_t | x_{t+1} (an associative scan of affine maps
    for ``method="parallel"``).

    Differentiable in the prior and potentials (the noise is drawn from ``key``).

    Returns:
        (num_samples, T, D) array of latent trajectories.
    """
    _check_num_samples(num_samples)
    prior, pots = _validate(prior, potentials, method)
    return _sample(key, prior, pots, _filter(prior, pots, method), num_samples, method)[0]


__all__ = [
    "GaussianPotentials",
    "LDSFiltered",
    "LDSPosterior",
    "LDSPrior",
    "METHODS",
    "lds_filter",
    "lds_log_prob",
    "lds_sample",
    "lds_smoother",
    "lds_smoother_and_sample",
]
