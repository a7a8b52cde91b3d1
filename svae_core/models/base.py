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
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from svae_core.inference import LDSPrior


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes and choices for every model family; each model reads the fields it needs.

    latent_dim D, obs_dim N. decoder_hidden: widths of the decoder MLP (empty: linear mean).
    encoder_hidden: SVAE recognition MLP widths (empty: linear, as in the paper's LDS runs).
    potential: SVAE potential precision, "diagonal" or "dense". smoother: "parallel" or
    "sequential". rnn_hidden: bidirectional GRU width H. head_hidden: MLP widths of the RNN/CNN
    output heads. cnn_features, cnn_layers, cnn_kernel: the CNN-AR-L encoder.
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

    def __post_init__(self):
        if self.latent_dim < 1 or self.obs_dim < 1:
            raise ValueError(
                f"latent_dim and obs_dim must be positive, got {self.latent_dim}, {self.obs_dim}"
            )
        if self.potential not in ("diagonal", "dense"):
            raise ValueError(f"potential must be 'diagonal' or 'dense', got {self.potential!r}")
        if self.smoother not in ("parallel", "sequential"):
            raise ValueError(f"smoother must be 'parallel' or 'sequential', got {self.smoother!r}")


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


class LearnedLDSPrior(nn.Module):
    """The LDS prior with learned (m1, Q1, A, b, Q); Q1, Q positive definite, ‖A‖₂ ≤ 1."""

    latent_dim: int
    init_dynamics_scale: float = 0.95
    init_noise_var: float = 0.1

    @nn.compact
    def __call__(self) -> LDSPrior:
        D = self.latent_dim
        m1 = self.param("m1", nn.initializers.zeros, (D,))
        Q1 = psd_from_raw(self.param("Q1_raw", _raw_for_scaled_identity(1.0), (D, D)))
        A_raw = self.param(
            "A_raw",
            lambda key, shape: self.init_dynamics_scale * jnp.eye(D)
            + 0.01 * jax.random.normal(key, shape),
            (D, D),
        )
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
