"""Pieces every sequence model shares: configuration, the learned LDS prior, the Gaussian
decoder, and the ELBO terms a model returns.

Contract of a model (a flax ``nn.Module`` built from a :class:`ModelConfig`)::

    terms = model.apply(params, y, mask, key, num_samples=S, observed=None)
        y:    (T, N) one observed sequence
        mask: (T,) bool, True where the encoder may see y_t. The reconstruction term still
              scores every step of y (self-supervised masking: hidden steps must be predicted).
        key:  PRNG key for the reparameterised samples
        observed: optional (T,) bool, False at steps that were never observed: hidden from
              the encoder and left out of the reconstruction (default: all observed)
        returns ELBOTerms(elbo, reconstruction, kl), each a scalar in nats for the sequence,
        estimated with S samples (the SVAE's KL is exact; the baselines' is Monte Carlo).

Batches of sequences and of seeds come from ``jax.vmap`` over ``apply``.

Image observations (``ModelConfig.frame_shape = (H, W)``): y stays (T, N) with N = H·W, frames
flattened row-major. Every recognition network then starts with the per-frame CNN trunk of
:mod:`svae_core.networks` (frames -> (T, F) features), and the decoder is the CNN decoder.
Masked frames are replaced by zeros *before* the trunk (the baselines' encoders see zero
frames, as for vectors); the SVAE in addition sets the masked steps' potentials to exactly 0.

Forecasting and posterior queries, the same for every model (:class:`SequenceModel`; call them
with ``model.apply(params, ..., method="name")``, the integer arguments static under jit)::

    posterior_samples(y, mask, key, num_samples)       -> (S, T, D) draws from q(x | y)
    posterior_mean(y, mask, key=None, num_samples=256) -> (T, D) E_q[x_t]
    forecast(y, num_observed, key, num_samples)        -> (S, T − num_observed, D)
    forecast_log_weights(y, num_observed, key, num_samples) -> (S,) nats
    predictive_log_likelihood(y, num_observed, key, num_samples) -> (log p̂, s.e.) nats
    decode(x)                                          -> (means (..., N), log_var (N,))
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from svae_core.inference import LDSPrior
from svae_core.networks import FrameDecoder, FrameEncoder

DYNAMICS_INITS = ("decay", "rotation")
#: Encoder and decoder hidden widths for a user's own data (the CLI's defaults). Linear
#: networks make the SVAE a linear-Gaussian SSM, no better on real sensor data than the
#: linear model itself; one hidden layer of 64 units puts it well above at 5 of the 6 data
#: set and latent-size pairs tried (the real-data chapter, ``benchmarks/real_data.py``).
#: ModelConfig's own defaults stay linear, the paper's LDS setting.
RECOMMENDED_HIDDEN = (64,)


def resolve_smoother(choice: str) -> str:
    """The smoother to use: ``choice`` ("sequential" or "parallel"), or for "auto" the faster
    one on JAX's default backend (sequential on CPU, where the parallel scan's extra work is
    not spread over many cores; parallel on a GPU/TPU, where its O(sqrt T) depth wins)."""
    if choice != "auto":
        return choice
    return "sequential" if jax.default_backend() == "cpu" else "parallel"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes and choices for every model family; each model reads the fields it needs.

    latent_dim D, obs_dim N. decoder_hidden: widths of the decoder MLP (empty: linear mean).
    encoder_hidden: SVAE recognition MLP widths (empty: linear, as in the paper's LDS runs).
    potential: SVAE potential precision, "diagonal" or "dense". smoother: "parallel" or
    "sequential". rnn_hidden: bidirectional GRU width H. head_hidden: MLP widths of the RNN/CNN
    output heads. cnn_features, cnn_layers, cnn_kernel: the CNN-AR-L encoder.

    Image observations: frame_shape (H, W) with H·W = obs_dim (None: vector observations).
    frame_channels: conv widths of the per-frame CNN trunk (its stride-2 layers; the decoder
    mirrors them), frame_features: F, the trunk's output per frame (see
    :mod:`svae_core.networks`). decoder_hidden then sets the decoder's MLP before its grid.

    dynamics_init: the prior's initial A, "decay" (0.95·I plus 0.01-scale noise: every latent
    direction starts as a slowly decaying constant) or "rotation" (0.99·expm(S), S a random
    skew-symmetric matrix with N(0, 0.1²) entries: the latent starts as slow oscillators).
    """

    latent_dim: int
    obs_dim: int
    decoder_hidden: tuple[int, ...] = ()
    encoder_hidden: tuple[int, ...] = ()
    potential: str = "diagonal"
    smoother: str = "parallel"
    rnn_hidden: int = 20
    head_hidden: tuple[int, ...] = (32,)
    cnn_features: int = 32
    cnn_layers: int = 3
    cnn_kernel: int = 10
    frame_shape: tuple[int, int] | None = None
    frame_channels: tuple[int, ...] = (16, 32)
    frame_features: int = 64
    dynamics_init: str = "decay"

    def __post_init__(self):
        if self.latent_dim < 1 or self.obs_dim < 1:
            raise ValueError(
                f"latent_dim and obs_dim must be positive, got {self.latent_dim}, {self.obs_dim}"
            )
        if self.potential not in ("diagonal", "dense"):
            raise ValueError(f"potential must be 'diagonal' or 'dense', got {self.potential!r}")
        if self.dynamics_init not in DYNAMICS_INITS:
            raise ValueError(f"dynamics_init must be one of {DYNAMICS_INITS}, "
                             f"got {self.dynamics_init!r}")
        if self.smoother not in ("parallel", "sequential"):
            raise ValueError(f"smoother must be 'parallel' or 'sequential', got {self.smoother!r}")
        if self.frame_shape is not None:
            shape = tuple(self.frame_shape)
            if len(shape) != 2 or min(shape) < 1 or shape[0] * shape[1] != self.obs_dim:
                raise ValueError(f"frame_shape must be (H, W) with H·W = obs_dim = "
                                 f"{self.obs_dim}, got {self.frame_shape}")
            object.__setattr__(self, "frame_shape", (int(shape[0]), int(shape[1])))
            object.__setattr__(self, "frame_channels", tuple(self.frame_channels))
            if len(self.frame_channels) < 1 or min(self.frame_channels) < 1 \
                    or self.frame_features < 1:
                raise ValueError("frame_channels must be a non-empty tuple of positive widths "
                                 f"and frame_features positive, got {self.frame_channels}, "
                                 f"{self.frame_features}")


class ELBOTerms(NamedTuple):
    """ELBO = reconstruction − kl, nats for one sequence (scalars)."""

    elbo: jax.Array
    reconstruction: jax.Array
    kl: jax.Array


def psd_from_raw(raw, jitter=1e-6):
    """(D, D) unconstrained -> L Lᵀ + jitter·I, L lower-triangular with softplus diagonal."""
    L = jnp.tril(raw, -1) + jnp.diag(jax.nn.softplus(jnp.diagonal(raw)))
    return L @ L.T + jitter * jnp.eye(raw.shape[-1], dtype=raw.dtype)


def _raw_for_scaled_identity(scale):
    """Initialiser whose psd_from_raw is ≈ scale·I."""
    diag = math.log(math.expm1(math.sqrt(scale)))  # softplus⁻¹(√scale)

    def init(key, shape, dtype=jnp.float32):
        return diag * jnp.eye(shape[0], dtype=dtype)

    return init


def contract_spectral_norm(W):
    """W / max(1, ‖W‖₂): dynamics with singular values ≤ 1 (stable for any T)."""
    return W / jnp.maximum(1.0, jnp.linalg.norm(W, ord=2))


def _init_dynamics(kind, scale):
    """Initialiser of A_raw (see ModelConfig.dynamics_init)."""

    def init(key, shape, dtype=jnp.float32):
        noise = jax.random.normal(key, shape, dtype)
        if kind == "decay":
            return scale * jnp.eye(shape[0], dtype=dtype) + 0.01 * noise
        skew = 0.1 * (jnp.triu(noise, 1) - jnp.triu(noise, 1).T)
        return 0.99 * jax.scipy.linalg.expm(skew)  # orthogonal: ‖A‖₂ = 0.99

    return init


class LearnedLDSPrior(nn.Module):
    """The LDS prior with learned (m1, Q1, A, b, Q); Q1, Q positive definite, ‖A‖₂ ≤ 1.
    dynamics_init: "decay" or "rotation" (see :class:`ModelConfig`); init_dynamics_scale is
    the decay's factor."""

    latent_dim: int
    dynamics_init: str = "decay"
    init_dynamics_scale: float = 0.95
    init_noise_var: float = 0.1

    @nn.compact
    def __call__(self) -> LDSPrior:
        D = self.latent_dim
        m1 = self.param("m1", nn.initializers.zeros, (D,))
        Q1 = psd_from_raw(self.param("Q1_raw", _raw_for_scaled_identity(1.0), (D, D)))
        A_raw = self.param("A_raw", _init_dynamics(self.dynamics_init,
                                                   self.init_dynamics_scale), (D, D))
        b = self.param("b", nn.initializers.zeros, (D,))
        Q = psd_from_raw(self.param("Q_raw", _raw_for_scaled_identity(self.init_noise_var),
                                    (D, D)))
        return LDSPrior(m1=m1, Q1=Q1, A=contract_spectral_norm(A_raw), b=b, Q=Q)


def mlp(x, widths, name_prefix):
    """ReLU layers of the given widths (none: identity)."""
    for i, width in enumerate(widths):
        x = nn.relu(nn.Dense(width, name=f"{name_prefix}_{i}")(x))
    return x


class GaussianDecoder(nn.Module):
    """p(y_t | x_t) = N(y_t; f(x_t), diag(exp(log_var))), f linear or an MLP."""

    obs_dim: int
    hidden: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, x):
        """x (..., D) -> log-density function's parameters: mean (..., N), log_var (N,)."""
        mean = nn.Dense(self.obs_dim, name="mean")(mlp(x, self.hidden, "hidden"))
        log_var = self.param("log_var", nn.initializers.zeros, (self.obs_dim,))
        return mean, log_var


def gaussian_log_prob(y, mean, log_var):
    """Σ over the last axis of log N(y; mean, diag(exp(log_var)))."""
    return -0.5 * jnp.sum(
        (y - mean) ** 2 * jnp.exp(-log_var) + log_var + jnp.log(2 * jnp.pi), axis=-1
    )


def reconstruction(decoder, x, y, observed=None):
    """E_q[Σ_t log p(y_t | x_t)] by Monte Carlo: x (S, T, D) samples, y (T, N); nats.

    observed: optional (T,) bool; steps that were never observed are left out of the sum.
    """
    mean, log_var = decoder(x)
    log_p = gaussian_log_prob(y, mean, log_var)  # (S, T)
    if observed is not None:
        log_p = jnp.where(observed, log_p, 0.0)
    return jnp.mean(jnp.sum(log_p, axis=-1))


def check_sequence(y, mask, config):
    """Shapes of one sequence: y (T, N) with N = config.obs_dim, mask (T,)."""
    if y.ndim != 2 or y.shape[1] != config.obs_dim:
        raise ValueError(f"y must have shape (T, {config.obs_dim}), got {y.shape}")
    if mask.shape != y.shape[:1]:
        raise ValueError(f"mask must have shape ({y.shape[0]},) to match y {y.shape}, "
                         f"got {mask.shape}")


# ----------------------------------------------------------------------------- images


def make_decoder(config: ModelConfig) -> nn.Module:
    """The decoder every model uses: :class:`GaussianDecoder` for vectors, the CNN
    :class:`~svae_core.networks.FrameDecoder` when config.frame_shape is set. Both map
    x (..., D) to (mean (..., N), log_var (N,))."""
    if config.frame_shape is None:
        return GaussianDecoder(config.obs_dim, config.decoder_hidden)
    return FrameDecoder(config.frame_shape, config.frame_channels, config.decoder_hidden)


def make_frame_encoder(config: ModelConfig) -> nn.Module | None:
    """The per-frame CNN trunk when config.frame_shape is set, else None."""
    if config.frame_shape is None:
        return None
    return FrameEncoder(config.frame_shape, config.frame_channels, config.frame_features)


# ----------------------------------------------------------------------------- forecasting


def rollout_prior(prior: LDSPrior, x_start, key, num_steps: int):
    """Sample paths of the prior dynamics from given states.

    x_start (S, D) -> (S, num_steps, D) with x_{k+1} = A x_k + b + chol(Q) ε_k, ε_k ~ N(0, I)
    drawn from ``key`` as one (num_steps, S, D) array; x_start itself is not included.
    """
    S, D = x_start.shape
    eps = jax.random.normal(key, (num_steps, S, D), x_start.dtype)
    chol_Q = jnp.linalg.cholesky(prior.Q)

    def step(x, e):
        x = x @ prior.A.T + prior.b + e @ chol_Q.T
        return x, x

    _, xs = jax.lax.scan(step, x_start, eps)
    return jnp.swapaxes(xs, 0, 1)


def log_mean_exp(log_w):
    """(log((1/S) Σ_s w_s), its standard error) from log-weights (S,) = log w_s.

    The standard error is the delta method's: s.e.(log w̄) ≈ s.e.(w̄)/w̄ = std(w/w̄)/√S
    (sample std, ddof = 1; NaN for S = 1). The estimate of log E[w] is biased low by about
    s.e.²/2 (Jensen), negligible once the s.e. is small. When a single weight dominates
    (:func:`effective_sample_size` ≈ 1, common for long image futures) the s.e. saturates
    near √((S − 1)/S) ≈ 1 and does not measure the error: the estimate is then a lower
    bound in expectation, not an accurate value.
    """
    S = log_w.shape[0]
    estimate = jax.scipy.special.logsumexp(log_w) - jnp.log(S)
    ratio = jnp.exp(log_w - estimate)  # w_s / w̄, mean 1
    return estimate, jnp.std(ratio, ddof=1) / jnp.sqrt(S)


def effective_sample_size(log_w):
    """Kish's effective sample size (Σ w)² / Σ w² of log-weights (S,), between 1 and S."""
    log_w = log_w - jnp.max(log_w)
    return jnp.exp(2 * jax.scipy.special.logsumexp(log_w)
                   - jax.scipy.special.logsumexp(2 * log_w))


def _check_static_int(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a Python int in [{low}, {high}], got {value!r}")
    return value


def encoder_features(config: ModelConfig, frame_encoder, y_masked):
    """What a recognition network reads: y (T, N) itself, or (T, F) trunk features of its
    frames (``frame_encoder``, :func:`make_frame_encoder`) when config.frame_shape is set
    (masked frames already zero)."""
    if config.frame_shape is None:
        return y_masked
    return frame_encoder(y_masked.reshape(y_masked.shape[0], *config.frame_shape))


class SequenceModel(nn.Module):
    """Base of every model: posterior queries and forecasting, written once.

    Subclasses define ``setup`` with submodules ``prior`` (:class:`LearnedLDSPrior`),
    ``decoder`` (:func:`make_decoder`) and ``frame_encoder`` (:func:`make_frame_encoder`),
    and the methods ``posterior_samples(y, mask, key, num_samples)`` (S, T, D) and
    ``posterior_mean(y, mask, key=None, num_samples=256)`` (T, D).

    Forecast (the metric of Zhao & Linderman 2023, fig. 5): q is inferred from the first
    ``num_observed`` = t0 steps only (mask = t < t0, the rest hidden as in training: SVAE
    potentials dropped, baseline encoders shown zeros), x_{t0} is drawn from q (for the SVAE
    q(x_{t0} | y_{1:t0}) is the filter at t0), and the learned prior rolls it forward.
    """

    config: ModelConfig

    def encoder_features(self, y_masked):
        """What the recognition network reads (:func:`encoder_features`)."""
        return encoder_features(self.config, self.frame_encoder, y_masked)

    def decode(self, x):
        """x (..., D) -> (means (..., N), log_var (N,)) of p(y_t | x_t) (diagonal Gaussian)."""
        return self.decoder(x)

    def forecast(self, y, num_observed: int, key, num_samples: int = 1):
        """Latent futures (S, T − t0, D) for steps t0+1..T (1-based) given y_{1:t0}.

        y (T, N) (steps ≥ t0 are never read; any finite or NaN placeholder works), t0 =
        num_observed a Python int in [1, T − 1]. ``key`` is split into (k_post, k_roll):
        x_{t0} = posterior_samples(y, t < t0, k_post, S)[:, t0 − 1], then
        :func:`rollout_prior` (k_roll) for T − t0 steps.
        """
        T = y.shape[0]
        num_observed = _check_static_int("num_observed", num_observed, 1, T - 1)
        k_post, k_roll = jax.random.split(key)
        mask = jnp.arange(T) < num_observed
        x_last = self.posterior_samples(y, mask, k_post, num_samples)[:, num_observed - 1]
        return rollout_prior(self.prior(), x_last, k_roll, T - num_observed)

    def forecast_log_weights(self, y, num_observed: int, key, num_samples: int = 1):
        """log w_s = Σ_{t > t0} log N(y_t; decode(x_{s,t})) (S,), nats, for the S futures of
        :meth:`forecast` with the same key. Compute them in chunks (different keys) and
        combine with :func:`log_mean_exp` when S·(T − t0) decoded frames do not fit."""
        x = self.forecast(y, num_observed, key, num_samples)
        mean, log_var = self.decoder(x)
        return jnp.sum(gaussian_log_prob(y[num_observed:], mean, log_var), axis=-1)

    def predictive_log_likelihood(self, y, num_observed: int, key, num_samples: int = 1):
        """(log p̂(y_{t0+1:T} | y_{1:t0}), its Monte Carlo standard error), nats for the
        sequence (sum over future steps and observation dims; divide by (T − t0)·N for the
        per-pixel figure), :func:`log_mean_exp` of :meth:`forecast_log_weights`."""
        return log_mean_exp(self.forecast_log_weights(y, num_observed, key, num_samples))
