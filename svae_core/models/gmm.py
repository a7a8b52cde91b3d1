r"""A Bayesian Gaussian mixture on the raw observations, fitted by conjugate mean-field
variational Bayes: the "GMM on y" baseline of Johnson et al. (2016, Fig. 1), which must bend
its ellipses around the spiral's arms that the GMM-SVAE straightens with a network.

The model, stated once (n = 1..N points, k = 1..K components, y_n ∈ R^D)::

    π ~ Dir(α)                          q(π)        = Dir, natural parameter α − 1
    (μ_k, Σ_k) ~ NIW(λ)                 q(μ_k, Σ_k) = NIW, packed (S + κmmᵀ, κm, κ, ν)
    z_n | π ~ Cat(π)                    q(z_n)      = Cat(r_n)        (responsibilities)
    y_n | z_n ~ N(μ_{z_n}, Σ_{z_n})

This is the GMM-SVAE's prior (:mod:`svae_core.models.gmm_svae`) with x_n = y_n observed, so
q(θ) = q(π) ∏_k q(μ_k, Σ_k) is the same :class:`~svae_core.models.gmm_svae.GMMGlobals`
pytree of natural parameters, and the label step is the GMM-SVAE's with q(x_n) a point mass at
y_n (:func:`observed_moments` feeds :func:`~svae_core.models.gmm_svae.expected_log_normals`).

**Coordinate ascent** (one sweep = :func:`vb_update`), each step an exact maximiser of the ELBO
in its factor:

* local step (:func:`local_step`): log r_nk = E[log π_k] + E[log N(y_n | μ_k, Σ_k)] − log Z_n;
* global step (:func:`global_step`): η = η₀ + Σ_n t_n, with t_n the statistics of y_n weighted
  by r_n and packed like η (:func:`sufficient_stats`): Dirichlet counts Σ_n r_nk and
  NIW (Σ_n r_nk y_n y_nᵀ, Σ_n r_nk y_n, Σ_n r_nk, Σ_n r_nk).

**Objective** (nats). At the optimal q(z_n) the local part of the ELBO has a closed form::

    L_n(q(θ)) = max_{q(z_n)} E_{q(z_n)q(θ)}[log p(y_n, z_n | θ) − log q(z_n)]
              = logsumexp_k(E[log π_k] + E[log N(y_n | μ_k, Σ_k)])
    ELBO(q(θ)) = Σ_n L_n − KL(q(θ) ‖ p(θ)) ≤ log p(y_{1:N})

(:func:`local_step` returns L_n, :func:`training_elbo` the ELBO / N, nats per point). Since
log-sum-exp is convex, Jensen gives L_n ≤ E_{q(θ)} log p(y_n | θ) ≤ log ∫ p(y_n | θ) q(θ) dθ
for any point y_n, with equality in the first as q(θ) concentrates on one θ; so L_n of new
points (:func:`heldout_elbo`) lower-bounds the expected log-likelihood under the fitted
posterior. ELBO(q(θ)) evaluated after each sweep never decreases: with q(z) the optimum for
q(θ)_t, ELBO(q(θ)_{t+1}) ≥ ELBO(q(z), q(θ)_{t+1}) ≥ ELBO(q(z), q(θ)_t) = ELBO(q(θ)_t).

**Prior.** ``fit``'s default, :func:`~svae_core.models.gmm_svae.prior_globals`, is the 2016
latent-space prior: components of unit scale around 0, right for standardised data. The
spiral's raw points have norm ≈ 10, so for them pass :func:`data_prior` (NIW centred and
scaled by the data), e.g. ``fit(y, 15, key=key, prior=data_prior(y, 15))``.

All functions are pure jax over NamedTuples; y is (N, D), K = num_components.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from svae_core.expfam import niw
from svae_core.expfam.dirichlet import DirichletNatural
from svae_core.models.gmm_svae import (
    GaussianMoments,
    GMMGlobals,
    expected_global_stats,
    expected_log_normals,
    global_kl,
    prior_globals,
    weighted_stats,
    with_means,
)

__all__ = [
    "GMMFit",
    "data_prior",
    "fit",
    "global_step",
    "heldout_elbo",
    "initial_globals",
    "kmeanspp_means",
    "local_step",
    "observed_moments",
    "predict",
    "sufficient_stats",
    "training_elbo",
    "vb_update",
]


class GMMFit(NamedTuple):
    """:func:`fit`'s result.

    globals: GMMGlobals, q(θ) after ``num_sweeps`` sweeps.
    elbo_history: (num_iters + 1,) training ELBO per point, nats (:func:`training_elbo`):
        entry t is the ELBO after t sweeps (t = 0: the initialisation); entries past
        ``num_sweeps`` are NaN. Non-decreasing up to rounding.
    num_sweeps: () int, sweeps done (≤ num_iters; fewer when the ``tol`` test stopped it).
    """

    globals: GMMGlobals
    elbo_history: jax.Array
    num_sweeps: jax.Array


def observed_moments(y) -> GaussianMoments:
    """The moments of point masses at y (..., D), for the GMM-SVAE's local algebra.

    Returns GaussianMoments(mean = y (..., D), cov = 0 (..., D, D), second = y yᵀ (..., D, D),
    logdet_J = +inf (...)): a point mass has unbounded precision; :func:`expected_log_normals`
    does not read logdet_J.
    """
    y = jnp.asarray(y)
    second = y[..., :, None] * y[..., None, :]
    return GaussianMoments(y, jnp.zeros_like(second), second,
                           jnp.full(y.shape[:-1], jnp.inf, y.dtype))


@jax.jit
def local_step(globals_: GMMGlobals, y):
    """The optimal q(z_n) for q(θ) = globals_, and the local ELBO there.

    Args:
        globals_: GMMGlobals of q(θ), K components in D dimensions.  y: (N, D).
    Returns:
        log_resp: (N, K) log r_nk = log q(z_n = k), normalised over k.
        elbo_n: (N,) nats, L_n = logsumexp_k(E[log π_k] + E[log N(y_n | μ_k, Σ_k)]), the
            local ELBO at that q(z_n): a lower bound on E_{q(θ)} log p(y_n | θ).
    """
    stats = expected_global_stats(globals_)
    log_normals = jax.vmap(expected_log_normals, in_axes=(0, None))(observed_moments(y), stats)
    logits = stats.log_pi + log_normals
    elbo_n = jax.nn.logsumexp(logits, axis=-1)
    return logits - elbo_n[:, None], elbo_n


@jax.jit
def sufficient_stats(y, resp) -> GMMGlobals:
    """Σ_n of the statistics of y_n weighted by r_n, packed like η (the conjugate update).

    y: (N, D); resp: (N, K) responsibilities (rows on the simplex, or one-hot labels).
    Returns GMMGlobals(DirichletNatural(Σ_n r_nk) (K,), NIWNatural(Σ_n r_nk y_n y_nᵀ (K, D, D),
    Σ_n r_nk y_n (K, D), Σ_n r_nk (K,), Σ_n r_nk (K,))): the packing of
    :func:`~svae_core.models.gmm_svae.expected_local_stats` with zero covariance.
    """
    y = jnp.asarray(y)
    resp = jnp.asarray(resp, y.dtype)
    return weighted_stats(resp, y, y[:, :, None] * y[:, None, :])


@jax.jit
def global_step(prior: GMMGlobals, y, resp) -> GMMGlobals:
    """The optimal q(θ) for fixed q(z): η = η₀ + :func:`sufficient_stats` (y (N, D),
    resp (N, K)). With one-hot resp this is the exact conjugate posterior given the labels."""
    return jax.tree_util.tree_map(jnp.add, prior, sufficient_stats(y, resp))


@jax.jit
def vb_update(globals_: GMMGlobals, prior: GMMGlobals, y) -> GMMGlobals:
    """One coordinate-ascent sweep: :func:`local_step` at q(θ) = globals_, then
    :func:`global_step`. y: (N, D). Returns the new q(θ)."""
    log_resp, _ = local_step(globals_, y)
    return global_step(prior, y, jnp.exp(log_resp))


def _training_elbo(globals_, prior, elbo_n):
    return jnp.mean(elbo_n) - global_kl(globals_, prior) / elbo_n.shape[0]


@jax.jit
def training_elbo(globals_: GMMGlobals, prior: GMMGlobals, y):
    """ELBO(q(θ)) / N at the optimal q(z), nats per point: mean_n L_n − KL(q(θ)‖p(θ)) / N,
    a lower bound on log p(y_{1:N}) / N. y: (N, D). Scalar."""
    _, elbo_n = local_step(globals_, y)
    return _training_elbo(globals_, prior, elbo_n)


@jax.jit
def heldout_elbo(globals_: GMMGlobals, y):
    """(N,) L_n of points y (N, D) under the fitted q(θ), nats: a lower bound on
    E_{q(θ)} log p(y_n | θ) (no global KL: that belongs to the training data)."""
    return local_step(globals_, y)[1]


@jax.jit
def predict(globals_: GMMGlobals, y):
    """(N,) int hard labels argmax_k q(z_n = k) of points y (N, D)."""
    return jnp.argmax(local_step(globals_, y)[0], axis=-1)


def data_prior(y, num_components, *, fraction=None, kappa=None, nu=None,
               alpha_minus_one=None) -> GMMGlobals:
    """A weak prior matched to the location and scale of raw data y (N, D).

    Every component gets NIW(m = mean(y), κ, S = ν·c·Cov(y), ν) with ν = D + 0.5 (the
    weakest of the 2016 prior's choices), so E[Σ_k⁻¹] = ν S⁻¹ = (c·Cov(y))⁻¹: a priori a
    component is an ellipse shaped like the data, with c = ``fraction`` of its variance.
    The default c = K^(−2/D) makes K such components together cover about the data's volume
    (each spans 1/K of it: linear size K^(−1/D)). The default κ = c gives the component means
    a prior spread Cov(μ_k) ≈ Σ_k/κ ≈ Cov(y), i.e. anywhere in the data cloud, at a weight
    of c < 1 pseudo-points. Dirichlet natural parameter 0.05/K (α ≈ 1, nearly flat), as in
    :func:`~svae_core.models.gmm_svae.prior_globals`.

    Why: the unit-scale latent prior puts components of size 1 around the origin; on the
    spiral's raw points (norm ≈ 10, Cov ≈ 55·I) that is a strong, misplaced prior on the
    component shapes, and its KL term would dominate a per-point ELBO comparison. This one
    is invariant to shifting and rescaling the data.

    Returns GMMGlobals of p(θ) (K components, dtype of y).
    """
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(jnp.result_type(float))
    N, D = y.shape
    if N < 2:
        raise ValueError(f"data_prior needs at least 2 points to estimate a covariance, got {N}")
    K = num_components
    c = K ** (-2.0 / D) if fraction is None else fraction
    nu = D + 0.5 if nu is None else nu
    kappa = c if kappa is None else kappa
    mean = jnp.mean(y, axis=0)
    cov = (y - mean).T @ (y - mean) / (N - 1)
    one = niw.from_standard(mean, jnp.asarray(kappa, y.dtype), nu * c * cov,
                            jnp.asarray(nu, y.dtype))
    stacked = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (K, *x.shape)), one)
    a = 0.05 / K if alpha_minus_one is None else alpha_minus_one
    return GMMGlobals(DirichletNatural(jnp.full((K,), a, y.dtype)), stacked)


@partial(jax.jit, static_argnames="num_components")
def kmeanspp_means(key, y, num_components):
    """K points of y (N, D) chosen by k-means++ seeding: the first uniformly, each next one
    with probability ∝ its squared distance to the nearest already chosen. Returns (K, D).

    Spread-out starting means keep coordinate ascent out of the local optima where two
    components share one cluster while another component straddles two clusters.
    """
    y = jnp.asarray(y)
    keys = jax.random.split(key, num_components)
    first = jax.random.randint(keys[0], (), 0, y.shape[0])
    means = jnp.zeros((num_components, y.shape[1]), y.dtype).at[0].set(y[first])
    d2 = jnp.sum((y - y[first]) ** 2, axis=-1)

    def body(k, carry):
        means, d2 = carry
        logits = jnp.where(jnp.sum(d2) > 0, jnp.log(d2), 0.0)  # all points chosen: uniform
        idx = jax.random.categorical(keys[k], logits)
        return means.at[k].set(y[idx]), jnp.minimum(d2, jnp.sum((y - y[idx]) ** 2, axis=-1))

    means, _ = lax.fori_loop(1, num_components, body, (means, d2))
    return means


def initial_globals(key, y, prior: GMMGlobals) -> GMMGlobals:
    """q(θ) to start from: the prior with component means m_k at K data points of y (N, D)
    (:func:`kmeanspp_means`), keeping the prior's κ, S, ν and Dirichlet."""
    K = prior.dirichlet.alpha_minus_one.shape[-1]
    return GMMGlobals(prior.dirichlet, with_means(prior.niw, kmeanspp_means(key, y, K)))


@partial(jax.jit, static_argnames="num_iters")
def _coordinate_ascent(globals_, prior, y, num_iters, tol):
    """Sweeps until num_iters or an ELBO gain ≤ tol: (globals, history, sweeps)."""
    log_resp, elbo_n = local_step(globals_, y)
    elbo = _training_elbo(globals_, prior, elbo_n)
    history = jnp.full((num_iters + 1,), jnp.nan, elbo.dtype).at[0].set(elbo)

    def cond(carry):
        i, _, _, elbo, prev, _ = carry
        return (i < num_iters) & ((i == 0) | (elbo - prev > tol))

    def body(carry):
        i, _, log_resp, elbo, _, history = carry
        new = global_step(prior, y, jnp.exp(log_resp))
        log_resp, elbo_n = local_step(new, y)
        new_elbo = _training_elbo(new, prior, elbo_n)
        return i + 1, new, log_resp, new_elbo, elbo, history.at[i + 1].set(new_elbo)

    init = (jnp.zeros((), jnp.int32), globals_, log_resp, elbo, elbo, history)
    i, globals_, _, _, _, history = lax.while_loop(cond, body, init)
    return globals_, history, i


def fit(y, num_components, *, key, num_iters=100, prior=None, tol=1e-6) -> GMMFit:
    """Fit q(θ) to y (N, D) by coordinate ascent from :func:`initial_globals`.

    Args:
        y: (N, D) observations.  num_components: K.  key: PRNG key for the starting means.
        num_iters: at most this many sweeps (:func:`vb_update`).
        prior: GMMGlobals of p(θ); default :func:`~svae_core.models.gmm_svae.prior_globals`
            (K, D), the unit-scale 2016 prior. For raw data such as the spiral (norm ≈ 10)
            pass :func:`data_prior` (y, K).
        tol: stop once a sweep raises the training ELBO by at most ``tol`` nats per point;
            None runs all ``num_iters`` sweeps.
    Returns:
        :class:`GMMFit` (globals, elbo_history (num_iters + 1,), num_sweeps).
    """
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(jnp.result_type(float))
    if prior is None:
        prior = prior_globals(num_components, y.shape[-1], dtype=y.dtype)
    if prior.dirichlet.alpha_minus_one.shape[-1] != num_components:
        raise ValueError(f"prior has {prior.dirichlet.alpha_minus_one.shape[-1]} components, "
                         f"num_components is {num_components}")
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")
    tol = -jnp.inf if tol is None else tol
    globals_ = initial_globals(key, y, prior)
    out = _coordinate_ascent(globals_, prior, y, num_iters, jnp.asarray(tol, y.dtype))
    return GMMFit(*out)
