"""The LDS-SVAE (Johnson et al. 2016; Zhao & Linderman 2023, §2.1 and §3).

A recognition network maps each y_t to a Gaussian potential (J_t, h_t); the smoother combines
the potentials with the learned LDS prior into q(x) ∝ p(x) ∏ φ_t(x_t). Masked steps get
J_t = 0, h_t = 0 (exactly missing). The KL is in closed form,

    KL(q‖p) = E_q[Σ_t log φ_t(x_t)] − log Z = Σ_t (h_t·μ_t − ½ tr[J_t(Σ_t + μ_t μ_tᵀ)]) − log Z,

and the reconstruction term uses reparameterised joint samples from q.

With image observations (config.frame_shape) the recognition network is the per-frame CNN
trunk followed by the same potential heads, and the decoder is the CNN decoder.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from svae_core.inference import GaussianPotentials, lds_smoother, lds_smoother_and_sample
from svae_core.models.base import (
    ELBOTerms,
    LearnedLDSPrior,
    ModelConfig,
    SequenceModel,
    check_sequence,
    encoder_features,
    make_decoder,
    make_frame_encoder,
    mlp,
    reconstruction,
)


class PotentialEncoder(nn.Module):
    """features (T, F) -> (J_t, h_t): J_t = diag(softplus(·)) or L Lᵀ, h_t = J_t m_t, per
    step. The features are y_t itself, or the CNN trunk's features of frame t."""

    config: ModelConfig

    @nn.compact
    def __call__(self, y):
        D = self.config.latent_dim
        feats = mlp(y, self.config.encoder_hidden, "hidden")
        mean = nn.Dense(D, name="mean")(feats)
        if self.config.potential == "diagonal":
            J = nn.softplus(nn.Dense(D, name="precision")(feats) + 1.0)
            return J, J * mean
        raw = nn.Dense(D * D, name="precision")(feats).reshape(*y.shape[:-1], D, D)
        L = jnp.tril(raw, -1) + jnp.eye(D) * nn.softplus(jnp.diagonal(raw, axis1=-2,
                                                                      axis2=-1) + 1.0)[..., None]
        J = L @ jnp.swapaxes(L, -1, -2)
        return J, jnp.einsum("...ij,...j->...i", J, mean)


def expected_log_potentials(J, h, mean, cov):
    """Σ_t E_q[h_t·x_t − ½ x_tᵀJ_t x_t] for J (T,D) diagonal or (T,D,D), marginals of q."""
    second = cov + mean[:, :, None] * mean[:, None, :]
    if J.ndim == 2:
        quad = jnp.sum(J * jnp.diagonal(second, axis1=1, axis2=2))
    else:
        quad = jnp.sum(J * second)
    return jnp.sum(h * mean) - 0.5 * quad


def masked_potentials(encoder, features, y, mask) -> GaussianPotentials:
    """The recognition network's potentials for y (T, N) with mask (T,): (J, h) per step,
    exactly zero where mask is False. Hidden steps are selected out, not multiplied by 0, so a
    NaN placeholder there cannot leak (nor into gradients); hidden frames reach the CNN trunk
    (``features``) as zeros."""
    J, h = encoder(features(jnp.where(mask[:, None], y, 0.0)))
    J = jnp.where(mask.reshape(-1, *([1] * (J.ndim - 1))), J, 0.0)
    return GaussianPotentials(J, jnp.where(mask[:, None], h, 0.0))


class PotentialNetworks(nn.Module):
    """Base of the SVAEs whose q(θ) is conjugate (:mod:`.conjugate_svae`, :mod:`.slds_svae`):
    the networks, written once. Submodules 'encoder' (:class:`PotentialEncoder`), 'decoder'
    (:func:`make_decoder`) and, with config.frame_shape, 'frame_encoder' (the CNN trunk), named
    as the SVAE's so that parameters move between these models; subclasses call
    :meth:`setup_networks` in their ``setup``."""

    config: ModelConfig

    def setup_networks(self):
        self.encoder = PotentialEncoder(self.config)
        self.decoder = make_decoder(self.config)
        self.frame_encoder = make_frame_encoder(self.config)

    def potentials(self, y, mask):
        """(J, h) per step, exactly zero where mask is False (:func:`masked_potentials`)."""
        features = lambda y_masked: encoder_features(self.config, self.frame_encoder, y_masked)
        return masked_potentials(self.encoder, features, y, mask)

    def decode(self, x):
        """x (..., D) -> (means (..., N), log_var (N,)) of p(y_t | x_t)."""
        return self.decoder(x)


class SVAE(SequenceModel):
    """Parameters: 'prior', 'encoder' (potential heads), 'decoder', and 'frame_encoder' (the
    CNN trunk) when config.frame_shape is set."""

    def setup(self):
        self.prior = LearnedLDSPrior(self.config.latent_dim, self.config.dynamics_init)
        self.encoder = PotentialEncoder(self.config)
        self.decoder = make_decoder(self.config)
        self.frame_encoder = make_frame_encoder(self.config)

    def potentials(self, y, mask):
        """(J, h) per step; exactly zero where mask is False (:func:`masked_potentials`)."""
        return masked_potentials(self.encoder, self.encoder_features, y, mask)

    def posterior(self, y, mask, key, num_samples=1):
        """(LDSPosterior, samples (S, T, D)) of q for one sequence."""
        return lds_smoother_and_sample(key, self.prior(), self.potentials(y, mask),
                                       num_samples=num_samples, method=self.config.smoother)

    def posterior_samples(self, y, mask, key, num_samples=1):
        """(S, T, D) joint samples of q (smoother + backward sampling over the potentials of
        the steps in mask, with the learned prior); equal to ``posterior``'s for the key."""
        return self.posterior(y, mask, key, num_samples)[1]

    def posterior_mean(self, y, mask, key=None, num_samples=None):
        """(T, D) smoothed means E_q[x_t], exact (key and num_samples are ignored)."""
        return lds_smoother(self.prior(), self.potentials(y, mask),
                            method=self.config.smoother).mean

    def __call__(self, y, mask, key, num_samples=1, observed=None):
        check_sequence(y, mask, self.config)
        pots = self.potentials(y, mask if observed is None else mask & observed)
        post, x = lds_smoother_and_sample(key, self.prior(), pots, num_samples=num_samples,
                                          method=self.config.smoother)
        kl = expected_log_potentials(pots.J, pots.h, post.mean, post.cov) - post.log_normalizer
        recon = reconstruction(self.decoder, x, y, observed)
        return ELBOTerms(recon - kl, recon, kl)
