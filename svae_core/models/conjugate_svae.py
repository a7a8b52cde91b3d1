r"""The LDS-SVAE with a conjugate prior on the LDS, trained by natural-gradient SVI (Johnson et
al. 2016, §2.2, §4.2, §6.1).

The model, stated once::

    (m1, Q1) ~ NIW(η₀ᴵ),   (A, Q) ~ MNIW(η₀ᴰ)                       θ, shared by all sequences
    x_1 ~ N(m1, Q1),   x_{t+1} ~ N(A x_t, Q)                         per sequence, t < T
    y_t ~ N(μ(x_t; γ), diag σ²(γ))                                   the decoder of ModelConfig

Variational family: q(θ) = NIW(ηᴵ) × MNIW(ηᴰ) (the flax parameter ``globals``, natural
parameters: :class:`LDSGlobals`), and per sequence q(x) ∝ exp(E_q(θ)[log p(x | θ)]) ∏_t φ_t(x_t),
with φ_t the recognition network's Gaussian potentials (those of
:class:`svae_core.models.svae.SVAE`; masked steps exactly missing). The exponent is rewritten by
:func:`svae_core.inference.expected_prior.expected_lds_prior` as a point prior p̄ times extra
potentials ψ times a constant c, so q(x) comes from the one LDS smoother, with
log Z = log_normalizer(p̄, φ + ψ) + c. The ELBO over N sequences is

    L = Σ_n ELBO_n − KL(q(θ) ‖ p(θ)),
    ELBO_n = E_q[log p(y | x)] + E_q E_q(θ)[log p(x | θ)] − E_q[log q(x)],

and E_q E_q(θ)[log p(x | θ)] = ⟨∇A(η), E_q[t(x)]⟩ − (T D/2) log 2π, with t(x) packed like η
(:func:`expected_local_stats`). Per sequence the model reports ELBO_n − KL(q(θ)‖p(θ))/N, so a
minibatch mean is an unbiased estimate of L/N.

**Gradient in η** (Eq. 4). With q(x) held at its optimum, the gradient of L in η is
∇²A(η)(η₀ + Σ_n E_q[t(x_n)] − η), so the natural gradient (``svae_core.natgrad``) is
η₀ + Σ_n E[t] − η: the first term. The second term is the path from η through q(x) (the
smoother's input) into the reconstruction and entropy. ``second_term=False`` (a bool, may be
traced) stops that path: the smoother gets E_q(θ) statistics with the gradient stopped, and the
gradient in η comes from ⟨∇A(η), E_q[t(x)]⟩ and the global KL alone.

**What the held-out ELBO bounds.** ELBO_n for a new sequence (without the global KL) is a lower
bound on E_q(θ)[log p(y | θ, γ)], the likelihood averaged over q(θ); a point-estimate model's
bounds log p(y | θ̂, γ). For a concentrated q(θ) the two agree; both are ≤ the marginal
likelihood of the true parameters only up to how well θ is fitted, exactly as for point
estimates.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from svae_core.expfam import mniw, niw
from svae_core.expfam.mniw import MNIWNatural
from svae_core.expfam.niw import NIWNatural
from svae_core.expfam.wishart import multidigamma
from svae_core.inference import GaussianPotentials, LDSPrior, lds_smoother, lds_smoother_and_sample
from svae_core.inference.expected_prior import ExpectedLDSPrior, add_potentials
from svae_core.inference.lds import LDSPosterior
from svae_core.models.base import (
    check_sequence,
    reconstruction,
)
from svae_core.models.svae import PotentialNetworks, expected_log_potentials


class LDSGlobals(NamedTuple):
    """Natural parameters of q(θ) (or of p(θ), or statistics packed alike).

    init: NIWNatural over (m1, Q1): Phi (D, D), km (D,), kappa (), nu ().
    dynamics: MNIWNatural over (A, Q): Phi (D, D), MK (D, D), K (D, D), nu ().
    """

    init: NIWNatural
    dynamics: MNIWNatural


def prior_globals(latent_dim: int, dtype=None) -> LDSGlobals:
    """The 2016 bouncing-dot prior with n = D: NIW(m = 0, κ = 1/(2n), S = 2(n+1)·I, ν = n+1)
    on the initial state and MNIW(M = I, K = I/(2n), S = 2(n+1)·I, ν = n+1) on the dynamics."""
    n = latent_dim
    dtype = dtype or jnp.result_type(float)
    eye = jnp.eye(n, dtype=dtype)
    scale, nu = 2.0 * (n + 1) * eye, jnp.asarray(n + 1.0, dtype)
    return LDSGlobals(
        niw.from_standard(jnp.zeros(n, dtype), jnp.asarray(1.0 / (2 * n), dtype), scale, nu),
        mniw.from_standard(eye, eye / (2 * n), scale, nu))


def concentrated_globals(prior: LDSPrior, pseudo_count: float = 1e4) -> LDSGlobals:
    """q(θ) concentrated at one LDS: NIW(m = m1, κ = c, S = c·Q1, ν = c) and
    MNIW(M = A, K = c·I, S = c·Q, ν = c), c = ``pseudo_count`` (as if fitted to c transitions).

    Its expected prior (:func:`expected_prior`) has Ā = A, Q̄ = Q, m̄1 = m1, Q̄1 = Q1 and a
    remainder W = D/c·I that vanishes as c grows. ``prior``: an
    :class:`~svae_core.inference.LDSPrior` with time-invariant A, Q and b = 0 (the conjugate
    model has no offset)."""
    D = prior.m1.shape[-1]
    dtype = jnp.asarray(prior.Q).dtype
    c = jnp.asarray(pseudo_count, dtype)
    return LDSGlobals(
        niw.from_standard(jnp.asarray(prior.m1, dtype), c, c * jnp.asarray(prior.Q1, dtype), c),
        mniw.from_standard(jnp.asarray(prior.A, dtype), c * jnp.eye(D, dtype=dtype),
                           c * jnp.asarray(prior.Q, dtype), c))


def global_kl(globals_: LDSGlobals, prior: LDSGlobals) -> jax.Array:
    """KL(q(θ) ‖ p(θ)) in nats, closed form."""
    return niw.kl(globals_.init, prior.init) + mniw.kl(globals_.dynamics, prior.dynamics)


def expected_theta_stats(globals_: LDSGlobals) -> LDSGlobals:
    """∇A(η) = E_q(θ)[t(θ)], per family (NIW: E[−½Q1⁻¹], E[Q1⁻¹m1], E[−½m1ᵀQ1⁻¹m1],
    E[−½log|Q1|]; MNIW likewise in (A, Q))."""
    return LDSGlobals(niw.expected_stats(globals_.init), mniw.expected_stats(globals_.dynamics))


def smoother_stats(globals_: LDSGlobals):
    """(initial, dynamics) expected statistics in the form
    :func:`~svae_core.inference.expected_prior.expected_lds_prior` takes."""
    return (tuple(niw.expected_precision_stats(globals_.init)),
            tuple(mniw.expected_dynamics_stats(globals_.dynamics)))


def _half_log_gap(nu, dim):
    """½(E[log|Σ⁻¹|] − log|E[Σ⁻¹]|) for Σ ~ IW(S, ν): ½(ψ_D(ν/2) + D log 2 − D log ν); the
    log|S| terms cancel, so it is formed without them."""
    return 0.5 * (multidigamma(0.5 * nu, dim) + dim * math.log(2.0) - dim * jnp.log(nu))


def expected_prior(globals_: LDSGlobals, num_timesteps: int) -> ExpectedLDSPrior:
    """E_q(θ)[log p(x | θ)] as (point prior p̄, potentials ψ, constant c), the result of
    :func:`~svae_core.inference.expected_prior.expected_lds_prior` on
    :func:`smoother_stats`, written in the standard parameters so that nothing cancels.

    With A | Q ~ MN(M, Q, K⁻¹) and Q ~ IW(S, ν): E[Q⁻¹] = νS⁻¹ and E[Q⁻¹A] = νS⁻¹M, so
    Q̄ = S/ν and Ā = M; the remainder W = E[(A − M)ᵀQ⁻¹(A − M)] = D·K⁻¹ exactly. Likewise for
    the initial state: m̄1 = m, Q̄1 = S₁/ν₁, W₁ = D/κ. The general route forms W as
    E[AᵀQ⁻¹A] − E[Q⁻¹A]ᵀE[Q⁻¹]⁻¹E[Q⁻¹A], a difference of numbers that grow like ν: once q(θ)
    has seen a few thousand transitions, float32 loses W in it."""
    T = num_timesteps
    init, dyn = niw.to_standard(globals_.init), mniw.to_standard(globals_.dynamics)
    D = init.m.shape[-1]
    K_inv = jnp.linalg.inv(dyn.K)
    W = D * 0.5 * (K_inv + K_inv.T)
    J = jnp.concatenate([jnp.broadcast_to(W, (T - 1, D, D)), jnp.zeros((1, D, D), W.dtype)])
    constant = (_half_log_gap(init.nu, D) - 0.5 * D / init.kappa
                + (T - 1) * _half_log_gap(dyn.nu, D))
    prior = LDSPrior(init.m, init.S / init.nu, dyn.M, jnp.zeros(D, W.dtype), dyn.S / dyn.nu)
    return ExpectedLDSPrior(prior, GaussianPotentials(J, jnp.zeros((T, D), W.dtype)), constant)


def expected_local_stats(post: LDSPosterior) -> LDSGlobals:
    """E_q[t(x)] of one sequence's q(x), packed like η: NIWNatural(E[x_1x_1ᵀ], E[x_1], 1, 1) and
    MNIWNatural(Σ_t E[x_{t+1}x_{t+1}ᵀ], Σ_t E[x_{t+1}x_tᵀ], Σ_t E[x_t x_tᵀ], T − 1), sums over
    t = 1..T−1. Adding it (times N/|B| summed over a minibatch) to η₀ gives the conjugate update."""
    mean, cov, cross = post.mean, post.cov, post.cross_cov
    second = cov + mean[:, :, None] * mean[:, None, :]
    # E[x_{t+1} x_tᵀ] = Cov(x_t, x_{t+1})ᵀ + μ_{t+1} μ_tᵀ
    pair = jnp.swapaxes(cross, -1, -2) + mean[1:, :, None] * mean[:-1, None, :]
    one = jnp.ones((), mean.dtype)
    return LDSGlobals(
        NIWNatural(second[0], mean[0], one, one),
        MNIWNatural(jnp.sum(second[1:], 0), jnp.sum(pair, 0), jnp.sum(second[:-1], 0),
                    (mean.shape[0] - 1) * one))


def tree_vdot(a, b) -> jax.Array:
    """Σ over leaves of ⟨a, b⟩ (full contraction)."""
    return sum(jnp.sum(x * y) for x, y in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


def expected_log_dynamics(theta_stats: LDSGlobals, local_stats: LDSGlobals, num_timesteps,
                          latent_dim) -> jax.Array:
    """E_q(x) E_q(θ)[log p(x_{1:T} | θ)] = ⟨E[t(θ)], E[t(x)]⟩ − (T D/2) log 2π, nats."""
    return tree_vdot(theta_stats, local_stats) - 0.5 * num_timesteps * latent_dim * math.log(
        2 * math.pi)


class ConjugateTerms(NamedTuple):
    """One sequence's terms, nats: elbo = reconstruction − kl; kl = the local KL plus
    KL(q(θ)‖p(θ))/num_sequences; stats: :func:`expected_local_stats` of its q(x)."""

    elbo: jax.Array
    reconstruction: jax.Array
    kl: jax.Array
    stats: LDSGlobals


class ConjugateSVAE(PotentialNetworks):
    """Parameters: 'globals' (:class:`LDSGlobals`, natural parameters of q(θ), initialised at
    the prior), 'encoder', 'decoder' and, with config.frame_shape, 'frame_encoder'.

    num_sequences: N, the training set's size, over which KL(q(θ)‖p(θ)) is shared; None
    leaves the global KL out (held-out evaluation: the local ELBO). Sequences are
    (T, obs_dim) with a (T,) bool mask, as for the other sequence models; vmap over a batch.
    """

    num_sequences: int | None = None

    def setup(self):
        D = self.config.latent_dim
        self.globals = self.param("globals", lambda key: prior_globals(D))
        self.setup_networks()

    def prior_globals(self) -> LDSGlobals:
        return prior_globals(self.config.latent_dim, self.globals.init.Phi.dtype)

    def global_kl(self):
        return global_kl(self.globals, self.prior_globals())

    def _smoother_globals(self, second_term):
        """q(θ) as the smoother sees it: with its gradient stopped unless second_term."""
        live = jnp.asarray(second_term)
        return jax.tree_util.tree_map(lambda g: jnp.where(live, g, jax.lax.stop_gradient(g)),
                                      self.globals)

    def posterior_mean(self, y, mask, key=None, num_samples=None):
        """(T, D) E_q[x_t] under the current q(θ)."""
        pots = self.potentials(y, mask)
        ep = expected_prior(self.globals, y.shape[0])
        return lds_smoother(ep.prior, add_potentials(pots, ep.potentials),
                            method=self.config.smoother).mean

    def posterior_samples(self, y, mask, key, num_samples=1):
        """(S, T, D) joint samples of q(x) under the current q(θ). Steps where mask is False
        get no potential, so there q(x) is the prediction of the expected dynamics from the
        observed steps (Johnson et al. 2016, Fig. 4: condition on the first frames, zero the
        later potentials)."""
        pots = self.potentials(y, mask)
        ep = expected_prior(self.globals, y.shape[0])
        return lds_smoother_and_sample(key, ep.prior, add_potentials(pots, ep.potentials),
                                       num_samples=num_samples, method=self.config.smoother)[1]

    def __call__(self, y, mask, key, num_samples=1, observed=None, second_term=True
                 ) -> ConjugateTerms:
        """One sequence y (T, N), mask (T,): :class:`ConjugateTerms`."""
        check_sequence(y, mask, self.config)
        T, D = y.shape[0], self.config.latent_dim
        pots = self.potentials(y, mask if observed is None else mask & observed)
        seen = self._smoother_globals(second_term)
        ep = expected_prior(seen, T)
        post, x = lds_smoother_and_sample(key, ep.prior, add_potentials(pots, ep.potentials),
                                          num_samples=num_samples,
                                          method=self.config.smoother)
        local = expected_local_stats(post)
        theta = expected_theta_stats(self.globals)
        smoother_theta = expected_theta_stats(seen)
        # E_q[log q(x)] = E_q[Σ log φ] + E_q E_θ'[log p(x|θ)] − log Z, θ' the smoother's q(θ)
        neg_entropy = (expected_log_potentials(pots.J, pots.h, post.mean, post.cov)
                       + expected_log_dynamics(smoother_theta, local, T, D)
                       - post.log_normalizer - ep.constant)
        local_kl = neg_entropy - expected_log_dynamics(theta, local, T, D)
        recon = reconstruction(self.decoder, x, y, observed)
        kl = local_kl if self.num_sequences is None \
            else local_kl + self.global_kl() / self.num_sequences
        return ConjugateTerms(recon - kl, recon, kl, jax.lax.stop_gradient(local))


__all__ = [
    "ConjugateSVAE",
    "ConjugateTerms",
    "LDSGlobals",
    "concentrated_globals",
    "expected_local_stats",
    "expected_log_dynamics",
    "expected_prior",
    "expected_theta_stats",
    "global_kl",
    "prior_globals",
    "smoother_stats",
    "tree_vdot",
]
