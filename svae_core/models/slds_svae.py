r"""The switching-LDS SVAE (Johnson et al. 2016, §2.3, §6.3): discrete states that switch
between linear dynamics in a latent space decoded by a neural network.

The model, stated once::

    π_0 ~ Dir(α₀),  π_k ~ Dir(α_k) (row k of the transition matrix)     θ, shared
    (m1, Q1) ~ NIW,  (A_k, Q_k) ~ MNIW for each state k = 1..K             θ, shared
    z_1 ~ Cat(π_0),  z_{t+1} | z_t ~ Cat(π_{z_t})                          per sequence
    x_1 ~ N(m1, Q1),  x_{t+1} | x_t, z_{t+1} ~ N(A_{z_{t+1}} x_t + b_{z_{t+1}}, Q_{z_{t+1}})
    y_t ~ N(μ(x_t; γ), diag σ²(γ))                                         the decoder

(the state that governs the step into x_{t+1} is z_{t+1}, as in the 2016 code). The offsets
b_k are optional (``affine``): without them (the 2016 model) b_k = 0; with them each state
has its own fixed point, as in the autoregressive HMMs of behaviour segmentation (MoSeq),
where a behaviour is a pose the body relaxes towards as much as a way of moving. With
offsets the MNIW of state k is over Ã_k = [A_k  b_k] acting on x̃ = [x; 1] (the constant
last, as :mod:`svae_core.expfam.mniw` and :mod:`svae_core.inference.expected_prior` state),
so its M is (D, D+1); every routine below reads which case it has from that shape.

Variational family: q(θ) of the prior's form (the flax parameter ``globals``,
:class:`SLDSGlobals`), and per sequence structured mean field q(z) q(x), with φ_t the
recognition network's Gaussian potentials on x_t (those of
:class:`svae_core.models.svae.SVAE`). Block coordinate ascent on the surrogate objective
(the ELBO with log p(y_t | x_t) replaced by log φ_t(x_t)) alternates

* **q(z)**: an HMM (:func:`svae_core.inference.hmm_smoother`) with log initial E[log π_0],
  log transitions E[log π], and node log potentials L_{t+1,k} = E_q(x) E_q(θ)[log N(x_{t+1} |
  A_k x_t, Q_k)] (:func:`state_log_likelihoods`; L_1 = 0);
* **q(x)**: the LDS smoother under the q(z)-weighted expected dynamics
  (:func:`mixture_expected_prior`: a time-varying point prior, extra node potentials and a
  constant, as :mod:`svae_core.inference.expected_prior` states), times the φ_t.

Sweeps start from the q(x) step with q(z) uniform (every state equally likely at every step,
so the start has the scale of q(θ)) and end with a q(x) step. With q(z) built from the
potentials L⁰ and q(x) from the current q(z), the local ELBO of one sequence is exactly

    ELBO = E_q[log p(y | x)] + log Z_z − Σ_t E_q(z)[L⁰_t(z_t)] + log Z_x − E_q(x)[Σ_t log φ_t]

(log Z_z, log Z_x the two normalisers), minus KL(q(θ) ‖ p(θ))/N in training. The surrogate
objective is the same with E_q(x)[Σ log φ_t] in place of the reconstruction; every step of
the sweep increases it.

**Gradients.** The sweeps run with the networks' potentials and q(θ) held constant
(``stop_gradient``); the last q(x) step, the reconstruction and the entropy terms are
differentiated with q(z) fixed. q(θ) learns by natural-gradient SVI, whose first term needs
only the expected statistics (:class:`SLDSTerms`.stats, packed like :class:`SLDSGlobals`).
With K = 1 the model is :class:`svae_core.models.conjugate_svae.ConjugateSVAE` (a test checks
it).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from svae_core.expfam import dirichlet, mniw, niw
from svae_core.expfam.dirichlet import DirichletNatural
from svae_core.expfam.mniw import MNIWNatural
from svae_core.expfam.niw import NIWNatural
from svae_core.expfam.wishart import multidigamma
from svae_core.inference import (
    GaussianPotentials,
    LDSPrior,
    hmm_smoother,
    lds_smoother,
    lds_smoother_and_sample,
)
from svae_core.inference.expected_prior import ExpectedLDSPrior, add_potentials
from svae_core.inference.lds import LDSPosterior
from svae_core.models.base import (
    check_sequence,
    reconstruction,
)
from svae_core.models.conjugate_svae import expected_local_stats
from svae_core.models.svae import PotentialNetworks, expected_log_potentials


class SLDSGlobals(NamedTuple):
    """Natural parameters of q(θ) (or of p(θ), or statistics packed alike).

    initial: DirichletNatural (K,) over π_0.  transitions: DirichletNatural (K, K), row k over π_k.
    init: NIWNatural over (m1, Q1).  dynamics: MNIWNatural with a leading K axis, state k's
    (A_k, Q_k).
    """

    initial: DirichletNatural
    transitions: DirichletNatural
    init: NIWNatural
    dynamics: MNIWNatural


def prior_globals(num_states: int, latent_dim: int, concentration: float = 5.0,
                  sticky: float = 0.0, dtype=None, scale: float = 1.0,
                  affine: bool = False) -> SLDSGlobals:
    """The 2016 SLDS prior with n = D: Dir(concentration) rows (plus ``sticky`` on the
    diagonal), NIW(m = 0, κ = 10, S = (n+10)s²·I, ν = n+10) on the initial state and, per
    state, MNIW(M = 0, K = 10s²·I, S = (n+10)s²·I, ν = n+10); s = ``scale`` (2016: 1), the
    latents' typical size. Both scalings keep the prior's meaning when the latents are s times
    larger or smaller: the noise covariances s²·I match them, and K, a column precision in
    units of x xᵀ (pairs add Σ x_t x_tᵀ to it), stays worth 10 pseudo-steps of data, so
    A_k ~ MN(0, Q_k, K⁻¹) has the same spread in any units. With ``affine``, M = 0 is
    (n, n+1) and K = diag(10s², …, 10s², 1): the offset b_k ~ N(0, Q_k), as broad as a
    step's noise, so that states can sit at different poses."""
    K, n = num_states, latent_dim
    dtype = dtype or jnp.result_type(float)
    eye = jnp.eye(n, dtype=dtype)
    nu = jnp.asarray(n + 10.0, dtype)
    S = (n + 10.0) * scale ** 2 * eye
    alpha = jnp.full((K, K), concentration, dtype) + sticky * jnp.eye(K, dtype=dtype)
    n_in = n + 1 if affine else n
    col = jnp.diag(jnp.full(n_in, 10.0 * scale ** 2, dtype).at[n:].set(1.0))
    dyn = mniw.from_standard(jnp.zeros((n, n_in), dtype), col, S, nu)
    return SLDSGlobals(
        dirichlet.from_standard(jnp.full(K, concentration, dtype)),
        dirichlet.from_standard(alpha),
        niw.from_standard(jnp.zeros(n, dtype), jnp.asarray(10.0, dtype), S, nu),
        jax.tree.map(lambda a: jnp.broadcast_to(a, (K, *a.shape)), dyn))


def global_kl(globals_: SLDSGlobals, prior: SLDSGlobals) -> jax.Array:
    """KL(q(θ) ‖ p(θ)) in nats, closed form."""
    return (dirichlet.kl(globals_.initial, prior.initial)
            + jnp.sum(jax.vmap(dirichlet.kl)(globals_.transitions, prior.transitions))
            + niw.kl(globals_.init, prior.init)
            + jnp.sum(jax.vmap(mniw.kl)(globals_.dynamics, prior.dynamics)))


def _half_log_gap(nu, dim):
    """½(E[log|Σ⁻¹|] − log|E[Σ⁻¹]|) for Σ ~ IW(S, ν), without the log|S| terms; nu () or (K,)."""
    one = lambda n: 0.5 * (multidigamma(0.5 * n, dim) + dim * math.log(2.0) - dim * jnp.log(n))
    return jnp.vectorize(one)(nu)


def _precisions(dyn: mniw.MNIWStandard):
    """P_k = E[Q_k⁻¹] = ν_k S_k⁻¹ (K, D, D) and ½ log|P_k| (K,)."""
    S_inv = jnp.linalg.inv(dyn.S)
    P = dyn.nu[:, None, None] * 0.5 * (S_inv + jnp.swapaxes(S_inv, -1, -2))
    return P, 0.5 * jnp.linalg.slogdet(P)[1]


def _is_affine(globals_: SLDSGlobals) -> bool:
    """Whether the state dynamics carry offsets: M is (D, D+1) rather than (D, D)."""
    MK = globals_.dynamics.MK
    return MK.shape[-1] == MK.shape[-2] + 1


def mixture_expected_prior(globals_: SLDSGlobals, weights) -> ExpectedLDSPrior:
    """E_q(z)q(θ)[log p(x | z, θ)] as (time-varying point prior p̄, potentials ψ, constant c),
    the result of :func:`~svae_core.inference.expected_prior.expected_lds_prior` on the
    weighted statistics Σ_k w_{t,k} E_k[·], written in standard parameters so that nothing
    cancels.

    weights: (T−1, K), w_{t,k} = q(z_{t+1} = k), the state governing x_{t+1} | x_t. With
    P_k = E[Q_k⁻¹] = ν_k S_k⁻¹ and P̄_t = Σ_k w P_k: Q̄_t = P̄_t⁻¹, Ã̄_t = P̄_t⁻¹ Σ_k w P_k M_k
    (= [Ā_t  b̄_t] with offsets), and the remainder W_t = Σ_k w [D·K_k⁻¹ + (M_k − Ã̄_t)ᵀ P_k
    (M_k − Ã̄_t)], a sum of PSD terms (the general route forms it as a difference of terms that
    grow like ν). With offsets W_t is over x̃ = [x; 1]: its x-block is the potential's J, its
    cross column gives h = −w_x and its corner enters the constant as −½ w_11."""
    weights = jnp.asarray(weights)
    T = weights.shape[0] + 1
    init = niw.to_standard(globals_.init)
    dyn = jax.vmap(mniw.to_standard)(globals_.dynamics)
    D = init.m.shape[-1]
    P, half_logdet = _precisions(dyn)
    P_bar = jnp.einsum("tk,kij->tij", weights, P)
    PM = jnp.einsum("kij,kjl->kil", P, dyn.M)
    A_bar = jnp.linalg.solve(P_bar, jnp.einsum("tk,kij->tij", weights, PM))  # (T−1, D, D_in)
    K_inv = jnp.linalg.inv(dyn.K)
    dev = dyn.M[None] - A_bar[:, None]  # (T−1, K, D, D_in)
    W = jnp.einsum("tk,kij->tij", weights, D * 0.5 * (K_inv + jnp.swapaxes(K_inv, -1, -2))) \
        + jnp.einsum("tk,tkji,kjl,tklm->tim", weights, dev, P, dev)
    W = 0.5 * (W + jnp.swapaxes(W, -1, -2))
    # ½(Σ_k w ℓ_k − log|P̄_t|) = Σ_k w [half-gap_k + ½log|P_k|] − ½log|P̄_t|
    dyn_const = (weights @ (_half_log_gap(dyn.nu, D) + half_logdet)
                 - 0.5 * jnp.linalg.slogdet(P_bar)[1])
    constant = _half_log_gap(init.nu, D) - 0.5 * D / init.kappa + jnp.sum(dyn_const)
    Q_bar = jnp.linalg.inv(P_bar)
    Q_bar = 0.5 * (Q_bar + jnp.swapaxes(Q_bar, -1, -2))
    zeros_h = jnp.zeros((1, D), W.dtype)
    if _is_affine(globals_):
        A, b = A_bar[..., :D], A_bar[..., D]
        h = jnp.concatenate([-W[:, :D, D], zeros_h])
        constant = constant - 0.5 * jnp.sum(W[:, D, D])
        W = W[:, :D, :D]
    else:
        A, b = A_bar, jnp.zeros((T - 1, D), W.dtype)
        h = jnp.zeros((T, D), W.dtype)
    prior = LDSPrior(init.m, init.S / init.nu, A, b, Q_bar)
    J = jnp.concatenate([W, jnp.zeros((1, D, D), W.dtype)])
    return ExpectedLDSPrior(prior, GaussianPotentials(J, h), constant)


def _tilde_moments(post: LDSPosterior, affine: bool):
    """Moments of x̃_t = [x_t; 1] (or x_t without offsets) that the state statistics need:
    E[x̃_t x̃_tᵀ] (T−1, D_in, D_in) for t < T, E[x_{t+1} x̃_tᵀ] (T−1, D, D_in), E[x̃_t] (T−1, D_in),
    and Cov(x̃_t, x_{t+1}) (T−1, D_in, D) (the constant has no covariance)."""
    mu, cov, cross = post.mean, post.cov, post.cross_cov  # cross[t] = Cov(x_t, x_{t+1})
    m, c, x = mu[:-1], cov[:-1], cross
    if affine:
        ones = jnp.ones((*m.shape[:-1], 1), m.dtype)
        m = jnp.concatenate([m, ones], -1)
        c = jnp.pad(c, ((0, 0), (0, 1), (0, 1)))
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 0)))
    second = c + m[:, :, None] * m[:, None, :]
    pair = jnp.swapaxes(x, -1, -2) + mu[1:, :, None] * m[:, None, :]
    return second, pair, m, x


def state_log_likelihoods(globals_: SLDSGlobals, post: LDSPosterior) -> jax.Array:
    """(T, K) node log potentials of q(z): row 0 zero, row t ≥ 1
    E_q(x) E_q(θ)[log N(x_{t+1} | A_k x_t, Q_k)] (0-based: the step into x_t), nats.

    E = −½ tr(P_k E[r rᵀ]) − (D/2) tr(K_k⁻¹ E[x̃_t x̃_tᵀ]) + ½ E[log|Q_k⁻¹|] − (D/2) log 2π with
    r = x_{t+1} − M_k x̃_t (x̃_t = [x_t; 1] with offsets, else x_t), from q(x)'s means,
    covariances and cross-covariances (no cancellation of terms that grow like ν)."""
    dyn = jax.vmap(mniw.to_standard)(globals_.dynamics)
    D = post.mean.shape[-1]
    P, half_logdet = _precisions(dyn)
    second_x, _, m_in, cross = _tilde_moments(post, _is_affine(globals_))
    mu, cov = post.mean, post.cov
    M = dyn.M
    r_mean = mu[None, 1:] - jnp.einsum("kij,tj->kti", M, m_in)  # (K, T−1, D)
    M_cross = jnp.einsum("kij,tjl->ktil", M, cross)  # M Cov(x̃_t, x_{t+1})
    c_in = second_x - m_in[:, :, None] * m_in[:, None, :]
    r_cov = (cov[None, 1:] + jnp.einsum("kij,tjl,kml->ktim", M, c_in, M)
             - M_cross - jnp.swapaxes(M_cross, -1, -2))
    second_r = r_cov + r_mean[..., :, None] * r_mean[..., None, :]
    K_inv = jnp.linalg.inv(dyn.K)
    quad = jnp.einsum("kij,ktji->kt", P, second_r) \
        + D * jnp.einsum("kij,tji->kt", K_inv, second_x)
    log_det = _half_log_gap(dyn.nu, D) + half_logdet  # ½ E[log|Q_k⁻¹|]
    L = -0.5 * quad + log_det[:, None] - 0.5 * D * math.log(2 * math.pi)
    return jnp.concatenate([jnp.zeros((1, L.shape[0]), L.dtype), L.T])


def _hmm(globals_: SLDSGlobals, L, method):
    log_init = dirichlet.expected_stats(globals_.initial).alpha_minus_one
    log_trans = jax.vmap(dirichlet.expected_stats)(globals_.transitions).alpha_minus_one
    return hmm_smoother(log_init, log_trans, L, method=method)


def _lds(globals_: SLDSGlobals, qz, pots, method):
    ep = mixture_expected_prior(globals_, qz.marginals[1:])
    post = lds_smoother(ep.prior, add_potentials(pots, ep.potentials), method=method)
    return ep, post


class MeanField(NamedTuple):
    """One sequence's structured mean field after the sweeps: qz (HMMPosterior), qx
    (LDSPosterior), ep (the expected prior q(x) came from), L (T, K) the node log potentials
    q(z) came from, surrogate (num_sweeps,) the surrogate objective after each sweep."""

    qz: object
    qx: LDSPosterior
    ep: ExpectedLDSPrior
    L: jax.Array
    surrogate: jax.Array


def surrogate_objective(qz, L, qx, ep) -> jax.Array:
    """log Z_z − E_q(z)[L] + log Z_x: the mean-field objective with the recognition
    potentials in place of the likelihood (module docstring)."""
    return qz.log_normalizer - jnp.sum(qz.marginals * L) + qx.log_normalizer + ep.constant


def mean_field(globals_: SLDSGlobals, pots: GaussianPotentials, num_sweeps: int,
               hmm_method: str = "sequential", lds_method: str = "sequential") -> MeanField:
    """Block coordinate ascent for q(z) q(x) of one sequence (module docstring), ``num_sweeps``
    sweeps of (q(z) step, q(x) step) from the fixed start LDS. Pure; vmap over sequences."""
    pots = GaussianPotentials(*pots)

    def sweep(qx, _):
        L = state_log_likelihoods(globals_, qx)
        qz = _hmm(globals_, L, hmm_method)
        ep, qx = _lds(globals_, qz, pots, lds_method)
        return qx, (qz, L, ep, surrogate_objective(qz, L, qx, ep))

    T, K = pots.h.shape[0], globals_.initial.alpha_minus_one.shape[0]
    uniform = jnp.full((T - 1, K), 1.0 / K, pots.h.dtype)
    ep0 = mixture_expected_prior(globals_, uniform)
    qx0 = lds_smoother(ep0.prior, add_potentials(pots, ep0.potentials), method=lds_method)
    qx, (qz, L, ep, surrogate) = jax.lax.scan(sweep, qx0, None, length=num_sweeps)
    last = lambda tree: jax.tree.map(lambda a: a[-1], tree)
    return MeanField(last(qz), qx, last(ep), L[-1], surrogate)


def expected_stats(qz, qx: LDSPosterior, affine: bool = False) -> SLDSGlobals:
    """E_q[t(z, x)] of one sequence packed like η: q(z_1) for π_0, Σ_t q(z_t, z_{t+1}) for the
    rows, (E[x_1x_1ᵀ], E[x_1], 1, 1) for the NIW and, for state k, Σ_t q(z_{t+1} = k) ·
    (E[x_{t+1}x_{t+1}ᵀ], E[x_{t+1}x̃_tᵀ], E[x̃_t x̃_tᵀ], 1) for its MNIW, x̃_t = [x_t; 1] with
    ``affine`` offsets, else x_t."""
    one = expected_local_stats(qx)  # the single-LDS statistics, summed over t
    mu, cov = qx.mean, qx.cov
    second_next = cov[1:] + mu[1:, :, None] * mu[1:, None, :]
    second, pair, _, _ = _tilde_moments(qx, affine)
    w = qz.marginals[1:]  # (T−1, K)
    dyn = MNIWNatural(jnp.einsum("tk,tij->kij", w, second_next),
                      jnp.einsum("tk,tij->kij", w, pair),
                      jnp.einsum("tk,tij->kij", w, second), jnp.sum(w, 0))
    return SLDSGlobals(DirichletNatural(qz.marginals[0]),
                       DirichletNatural(qz.transition_counts), one.init, dyn)


class SLDSTerms(NamedTuple):
    """One sequence's terms, nats: elbo = reconstruction − kl; kl = the local KL plus
    KL(q(θ)‖p(θ))/num_sequences; stats: :func:`expected_stats`; marginals (T, K) q(z_t)."""

    elbo: jax.Array
    reconstruction: jax.Array
    kl: jax.Array
    stats: SLDSGlobals
    marginals: jax.Array


class SLDSSVAE(PotentialNetworks):
    """Parameters: 'globals' (:class:`SLDSGlobals`, initialised at the prior with the state
    dynamics' means M_k spread as in :func:`init_globals`), 'encoder', 'decoder' and, with
    config.frame_shape, 'frame_encoder' (the submodules of the SVAE, so their parameters are
    interchangeable). num_sequences: N for the global KL share (None: held-out evaluation).
    num_sweeps: mean-field sweeps per sequence. concentration, sticky, prior_scale, affine: the
    prior (:func:`prior_globals`; ``affine`` gives every state an offset b_k)."""

    num_states: int
    num_sequences: int | None = None
    num_sweeps: int = 10
    concentration: float = 5.0
    sticky: float = 0.0
    prior_scale: float = 1.0
    affine: bool = False

    def setup(self):
        self.globals = self.param("globals", lambda key: init_globals(
            key, self.num_states, self.config.latent_dim, self.concentration, self.sticky,
            scale=self.prior_scale, affine=self.affine))
        self.setup_networks()

    def prior_globals(self) -> SLDSGlobals:
        return prior_globals(self.num_states, self.config.latent_dim, self.concentration,
                             self.sticky, self.globals.init.Phi.dtype, self.prior_scale,
                             self.affine)

    def global_kl(self):
        return global_kl(self.globals, self.prior_globals())

    def infer(self, y, mask) -> MeanField:
        """The mean field of one sequence under the current q(θ) (no gradients)."""
        pots = jax.lax.stop_gradient(self.potentials(y, mask))
        return mean_field(jax.lax.stop_gradient(self.globals), pots, self.num_sweeps,
                          lds_method=self.config.smoother)

    def __call__(self, y, mask, key, num_samples=1, observed=None) -> SLDSTerms:
        """One sequence y (T, N), mask (T,): :class:`SLDSTerms`."""
        check_sequence(y, mask, self.config)
        pots = self.potentials(y, mask if observed is None else mask & observed)
        glob = self.globals
        mf = mean_field(jax.lax.stop_gradient(glob), jax.lax.stop_gradient(pots),
                        self.num_sweeps, lds_method=self.config.smoother)
        qz = jax.tree.map(jax.lax.stop_gradient, mf.qz)
        ep = mixture_expected_prior(jax.lax.stop_gradient(glob), qz.marginals[1:])
        qx, x = lds_smoother_and_sample(key, ep.prior, add_potentials(pots, ep.potentials),
                                        num_samples=num_samples, method=self.config.smoother)
        local_kl = -(qz.log_normalizer - jnp.sum(qz.marginals * mf.L) + qx.log_normalizer
                     + ep.constant - expected_log_potentials(pots.J, pots.h, qx.mean, qx.cov))
        recon = reconstruction(self.decoder, x, y, observed)
        kl = local_kl if self.num_sequences is None \
            else local_kl + self.global_kl() / self.num_sequences
        stats = jax.lax.stop_gradient(expected_stats(qz, qx, self.affine))
        return SLDSTerms(recon - kl, recon, kl, stats, qz.marginals)


def init_globals(key, num_states: int, latent_dim: int, concentration: float = 5.0,
                 sticky: float = 0.0, spread: float = 0.5, scale: float = 1.0,
                 affine: bool = False) -> SLDSGlobals:
    """The prior, with each state's dynamics mean A_k = 0.9·I + ``spread``·N(0, 1/D) entries
    (offsets b_k = 0), so the states start distinct (identical states stay identical under
    mean field). With num_states = 1, A = 0.9·I exactly."""
    prior = prior_globals(num_states, latent_dim, concentration, sticky, scale=scale,
                          affine=affine)
    std = jax.vmap(mniw.to_standard)(prior.dynamics)
    D = latent_dim
    noise = jax.random.normal(key, (num_states, D, D)) * spread / math.sqrt(D)
    noise = jnp.where(num_states > 1, noise, 0.0)
    M = std.M.at[:, :, :D].set(0.9 * jnp.eye(D) + noise)
    return prior._replace(dynamics=jax.vmap(mniw.from_standard)(M, std.K, std.S, std.nu))


def globals_from_segmentation(prior: SLDSGlobals, x, labels, weight: float = 1.0
                              ) -> SLDSGlobals:
    """q(θ) = the conjugate posterior given latent paths and a hard segmentation, as if
    observed: η₀ + weight · Σ_n t(z_n, x_n). A start for the SLDS-SVAE that does not collapse:
    each state begins with dynamics fitted to its own segments (e.g. k-means of a pretrained
    LDS-SVAE's posterior means), rather than states that differ only by noise.

    x: (S, T, D) latent paths (e.g. posterior means); labels: (S, T) ints in [0, K);
    weight: how much the paths count (1: as N sequences; smaller keeps q(θ) broader)."""
    x, labels = jnp.asarray(x), jnp.asarray(labels)
    K = prior.initial.alpha_minus_one.shape[0]
    z = jax.nn.one_hot(labels, K, dtype=x.dtype)  # (S, T, K)
    w = z[:, 1:]  # state of the step into x_{t+1}
    outer = lambda a, b: a[..., :, None] * b[..., None, :]
    x_in = x[:, :-1]
    if _is_affine(prior):
        x_in = jnp.concatenate([x_in, jnp.ones((*x_in.shape[:-1], 1), x.dtype)], -1)
    dyn = MNIWNatural(jnp.einsum("stk,stij->kij", w, outer(x[:, 1:], x[:, 1:])),
                      jnp.einsum("stk,stij->kij", w, outer(x[:, 1:], x_in)),
                      jnp.einsum("stk,stij->kij", w, outer(x_in, x_in)),
                      jnp.sum(w, (0, 1)))
    S = x.shape[0]
    one = jnp.ones((), x.dtype)
    stats = SLDSGlobals(
        DirichletNatural(jnp.sum(z[:, 0], 0)),
        DirichletNatural(jnp.einsum("sti,stj->ij", z[:, :-1], z[:, 1:])),
        NIWNatural(jnp.sum(outer(x[:, 0], x[:, 0]), 0), jnp.sum(x[:, 0], 0), S * one, S * one),
        dyn)
    return jax.tree.map(lambda e0, t: e0 + weight * t, prior, stats)


__all__ = [
    "MeanField",
    "SLDSGlobals",
    "SLDSSVAE",
    "SLDSTerms",
    "expected_stats",
    "global_kl",
    "globals_from_segmentation",
    "init_globals",
    "mean_field",
    "mixture_expected_prior",
    "prior_globals",
    "state_log_likelihoods",
    "surrogate_objective",
]
