"""Shared pieces of the baseline posterior families (Zhao & Linderman 2023, §2.2).

The baselines keep the SVAE's LDS prior and decoder but let a recognition network output q(x)
directly, so their KL has no closed form and is estimated by Monte Carlo from the same
reparameterised samples as the reconstruction term.

Here:

* :class:`BiGRUEncoder`: (T, N) -> (T, 2H) features of a bidirectional GRU over the sequence.
* :class:`GaussianHeads`: per-step MLP heads -> shift m_t (T, D), optional transition
  A_t (T, D, D), diagonal variance v_t (T, D).
* the linear-Gaussian autoregressive ("AR-L") family shared by RNN-AR-L and CNN-AR-L::

      q(x) = N(x_1; m_1, diag v_1) ∏_{t≥2} N(x_t; A_t x_{t-1} + m_t, diag v_t)

  (mean field is the special case A_t = 0), with its sampler, log-density and marginal means.
* :func:`monte_carlo_elbo`: the ELBO terms from samples and their log q.
* :class:`LinearGaussianBaseline`: the model body shared by RNN-MF, RNN-AR-L and CNN-AR-L,
  which differ only in their encoder and whether A_t is learned.

Masked steps are shown to the encoders as zeros (``masked_input``), as in the paper. With image
observations (config.frame_shape) the zeroed frames go through the per-frame CNN trunk
('frame_encoder'), whose (T, F) features replace y as the BiGRU's / temporal CNN's input; the
decoder is then the CNN decoder.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from svae_core.inference import lds_log_prob
from svae_core.models.base import (
    ELBOTerms,
    LearnedLDSPrior,
    SequenceModel,
    check_sequence,
    make_decoder,
    make_frame_encoder,
    mlp,
    reconstruction,
)

# Initial posterior variance: moderate, so early samples neither ignore the prior scale nor
# swamp the decoder (the prior's own noise starts at 0.1, its initial state at 1).
INIT_VARIANCE = 0.5
_SOFTPLUS_INV_INIT_VAR = math.log(math.expm1(INIT_VARIANCE))
# Output layers of the variance and transition heads start small: variances ≈ INIT_VARIANCE
# and A_t ≈ 0 at every step, yet still (weakly) data-dependent so gradients reach the encoder.
_SMALL_INIT = nn.initializers.variance_scaling(0.01, "fan_in", "truncated_normal")


class BaselinePosterior(NamedTuple):
    """What a baseline's ``posterior`` method returns for one sequence.

    mean: (T, D) marginal means E_q[x_t] where they are cheap (closed form for the linear
    families), else None (RNN-AR-NL). samples: (S, T, D) reparameterised draws from q.
    """

    mean: jax.Array | None
    samples: jax.Array


class LinearGaussianParams(NamedTuple):
    """Parameters of the AR-L family: shift m (T, D), transitions A (T, D, D) (A[0] unused
    and zero; all zero for mean field), diagonal variances v (T, D) > 0."""

    m: jax.Array
    A: jax.Array
    v: jax.Array


def masked_input(y, mask):
    """y (T, N) with zeros where mask (T,) is False: the encoder cannot see those steps.

    ``where`` rather than multiplication so NaN/inf placeholders at hidden steps stay hidden.
    """
    return jnp.where(mask[:, None], y, jnp.zeros((), y.dtype))


def noise_dtype(y):
    """Floating dtype for the noise: y's own if floating, else float32."""
    return y.dtype if jnp.issubdtype(y.dtype, jnp.floating) else jnp.float32


def standard_normal_noise(key, num_samples, T, D, dtype=jnp.float32):
    """ε (S, T, D) ~ N(0, I), the noise every baseline's sampler is driven by."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) \
            or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    num_samples = int(num_samples)
    return jax.random.normal(key, (num_samples, T, D), dtype)


class BiGRUEncoder(nn.Module):
    """(T, N) -> (T, 2H): forward and backward GRU states, concatenated per step."""

    hidden: int

    @nn.compact
    def __call__(self, y):
        return nn.Bidirectional(nn.RNN(nn.GRUCell(self.hidden), name="forward"),
                                nn.RNN(nn.GRUCell(self.hidden), name="backward"),
                                name="bigru")(y)


class GaussianHeads(nn.Module):
    """Per-step MLP heads on features (..., F): one MLP (widths ``hidden``) per output.

    Returns (m (..., D), A (..., D, D) or None, v (..., D)); v = softplus(·) > 0 starts near
    INIT_VARIANCE, A near 0. ``transition=False`` skips the A head (mean field, AR-NL).
    """

    latent_dim: int
    hidden: tuple[int, ...]
    transition: bool = False

    @nn.compact
    def __call__(self, feats):
        D = self.latent_dim
        m = nn.Dense(D, name="mean_out")(mlp(feats, self.hidden, "mean"))
        raw_v = nn.Dense(D, kernel_init=_SMALL_INIT, name="var_out")(
            mlp(feats, self.hidden, "var"))
        v = nn.softplus(raw_v + _SOFTPLUS_INV_INIT_VAR) + 1e-6  # floor keeps log v finite
        A = None
        if self.transition:
            raw_A = nn.Dense(D * D, kernel_init=_SMALL_INIT, name="transition_out")(
                mlp(feats, self.hidden, "transition"))
            raw_A = raw_A.reshape(*feats.shape[:-1], D, D)
            # ‖A_t‖₂ ≤ ‖A_t‖_F ≤ 1: products of A_t over long sequences cannot blow up
            # (unconstrained heads on unnormalised inputs can overflow to inf by T = 1000).
            frob = jnp.sqrt(jnp.sum(raw_A**2, axis=(-2, -1), keepdims=True) + 1e-12)
            A = raw_A / jnp.maximum(1.0, frob)
        return m, A, v


def linear_gaussian_params(m, A, v):
    """Pack head outputs (m (T,D), A (T,D,D) or None, v (T,D)) as LinearGaussianParams with
    A[0] = 0 (x_1 has no predecessor) and A = 0 throughout for mean field."""
    if A is None:
        A = jnp.zeros(m.shape + m.shape[-1:], m.dtype)
    return LinearGaussianParams(m, A.at[0].set(0.0), v)


def _linear_recursion(A, innov):
    """z (S, T, D) with z_1 = innov_1, z_t = A_t z_{t-1} + innov_t (lax.scan over t; A[0]
    is never used)."""

    def step(z_prev, inputs):
        A_t, innov_t = inputs
        z_t = jnp.sum(A_t * z_prev[..., None, :], axis=-1) + innov_t  # fused, no tiny matmul
        return z_t, z_t

    _, z = lax.scan(step, jnp.zeros_like(innov[:, 0]), (A, jnp.swapaxes(innov, 0, 1)))
    return jnp.swapaxes(z, 0, 1)


def ar_linear_sample(params: LinearGaussianParams, eps):
    """Samples (S, T, D) of the AR-L family from noise ε (S, T, D).

    x_1 = m_1 + √v_1 ε_1, x_t = A_t x_{t-1} + m_t + √v_t ε_t. Differentiable in the
    parameters (reparameterisation).
    """
    m, A, v = params
    return _linear_recursion(A, m + jnp.sqrt(v) * eps)


def diag_gaussian_log_prob(x, mean, var):
    """Σ over the last axis of log N(x; mean, diag var)."""
    return -0.5 * jnp.sum((x - mean) ** 2 / var + jnp.log(var) + jnp.log(2 * jnp.pi), axis=-1)


def ar_linear_log_prob(params: LinearGaussianParams, x):
    """log q(x) (S,) of the AR-L family for trajectories x (S, T, D).

    Given x, the conditional means A_t x_{t-1} + m_t are known for all t at once, so this is
    parallel over time (no scan).
    """
    m, A, v = params
    x_prev = jnp.concatenate([jnp.zeros_like(x[:, :1]), x[:, :-1]], axis=1)
    pred = jnp.einsum("tij,stj->sti", A, x_prev) + m
    return jnp.sum(diag_gaussian_log_prob(x, pred, v), axis=-1)


def ar_linear_marginal_means(params: LinearGaussianParams):
    """E_q[x_t] (T, D) of the AR-L family: μ_1 = m_1, μ_t = A_t μ_{t-1} + m_t."""
    return _linear_recursion(params.A, params.m[None])[0]


def encoder_mask(mask, observed):
    """Steps the encoder may see: mask, and (if given) only steps that were ever observed."""
    return mask if observed is None else mask & observed


def monte_carlo_elbo(prior_module, decoder, x, log_q, y, observed=None):
    """ELBOTerms from samples x (S, T, D) of q with log q(x) (S,), observations y (T, N);
    steps with observed (T,) False are left out of the reconstruction.

    KL(q‖p) ≈ mean_s [log q(x_s) − log p(x_s)] with the same samples as the reconstruction
    term (unbiased; its gradient is the usual reparameterisation gradient).
    """
    prior = prior_module()
    log_p = jax.vmap(lds_log_prob, in_axes=(None, 0))(prior, x)
    kl = jnp.mean(log_q - log_p)
    recon = reconstruction(decoder, x, y, observed)
    return ELBOTerms(recon - kl, recon, kl)


class MonteCarloBaseline(SequenceModel):
    """What every baseline shares: noise for S samples and the Monte Carlo ELBO. Subclasses
    provide ``self.prior``, ``self.decoder``, ``self.frame_encoder``,
    ``sample_and_log_prob(y, mask, eps)`` and ``posterior(y, mask, key, num_samples)``."""

    def posterior_samples(self, y, mask, key, num_samples=1):
        """(S, T, D) reparameterised draws from q; those ``__call__`` uses for the same key."""
        return self.posterior(y, mask, key, num_samples).samples

    def noise(self, key, num_samples, y):
        """Standard normal ε (S, T, D) for y (T, N)."""
        return standard_normal_noise(key, num_samples, y.shape[0], self.config.latent_dim,
                                     noise_dtype(y))

    def __call__(self, y, mask, key, num_samples=1, observed=None) -> ELBOTerms:
        """ELBOTerms for y (T, N), mask (T,) with S = num_samples reparameterised samples;
        observed (T,) optional, as in the contract of :mod:`.base`."""
        check_sequence(y, mask, self.config)
        eps = standard_normal_noise(key, num_samples, y.shape[0], self.config.latent_dim,
                                    noise_dtype(y))
        x, log_q = self.sample_and_log_prob(y, encoder_mask(mask, observed), eps)
        return monte_carlo_elbo(self.prior, self.decoder, x, log_q, y, observed)


class LinearGaussianBaseline(MonteCarloBaseline):
    """Common body of RNN-MF, RNN-AR-L and CNN-AR-L: an encoder (T, N) -> (T, F) features,
    per-step heads -> LinearGaussianParams, and the AR-L (or mean-field) posterior.

    Subclasses set the class attribute ``transition`` (False: mean field, A_t = 0) and
    implement ``make_encoder()``. Parameters: 'prior', 'decoder' (as the SVAE), 'encoder',
    'heads', and 'frame_encoder' (the CNN trunk) when config.frame_shape is set.
    """

    transition = False  # class attribute, not a dataclass field

    def make_encoder(self) -> nn.Module:
        raise NotImplementedError

    def setup(self):
        self.prior = LearnedLDSPrior(self.config.latent_dim, self.config.dynamics_init)
        self.decoder = make_decoder(self.config)
        self.frame_encoder = make_frame_encoder(self.config)
        self.encoder = self.make_encoder()
        self.heads = GaussianHeads(self.config.latent_dim, self.config.head_hidden,
                                   transition=self.transition)

    def gaussian_params(self, y, mask) -> LinearGaussianParams:
        """q's parameters (m (T,D), A (T,D,D), v (T,D)) for y (T, N) seen through mask (T,)."""
        feats = self.encoder_features(masked_input(y, mask))
        return linear_gaussian_params(*self.heads(self.encoder(feats)))

    def _sample(self, params, eps):
        if not self.transition:  # mean field: no recursion needed
            x = params.m + jnp.sqrt(params.v) * eps
            return x, jnp.sum(diag_gaussian_log_prob(x, params.m, params.v), axis=-1)
        x = ar_linear_sample(params, eps)
        return x, ar_linear_log_prob(params, x)

    def sample_and_log_prob(self, y, mask, eps):
        """Samples x (S, T, D) driven by noise ε (S, T, D), and log q(x) (S,)."""
        return self._sample(self.gaussian_params(y, mask), eps)

    def posterior(self, y, mask, key, num_samples=1) -> BaselinePosterior:
        """BaselinePosterior(mean (T, D) = E_q[x_t], samples (S, T, D)) for one sequence;
        the samples are those ``__call__`` uses for the same key."""
        params = self.gaussian_params(y, mask)
        x, _ = self._sample(params, self.noise(key, num_samples, y))
        return BaselinePosterior(ar_linear_marginal_means(params), x)

    def posterior_mean(self, y, mask, key=None, num_samples=None):
        """(T, D) marginal means E_q[x_t] in closed form (μ_1 = m_1, μ_t = A_t μ_{t-1} + m_t;
        key and num_samples are ignored)."""
        return ar_linear_marginal_means(self.gaussian_params(y, mask))
