"""RNN-AR-NL: nonlinear autoregressive posterior (Zhao & Linderman 2023, §2.2, fig. 1d; the
LFADS / PlaNet style)::

    u = BiGRU(y ⊙ mask)                                   (T, 2H) features
    h_t = GRU(h_{t-1}, [x_{t-1}, u_t]),  h_0 = 0, x_0 = 0
    q(x_t | x_{1:t-1}) = N(x_t; g(h_t), diag Q(h_t))      g, Q: MLP heads on h_t

The GRU state h_t summarises x_{1:t-1}, so g and Q depend on the whole past path, as in the
paper's g(x_{1:t-1}, u_t). With x_0 = h_0 = 0, q(x_1) = N(m_1, V_1) depends on u_1 alone.
Sampling is sequential (lax.scan carrying (h_t, x_t)); log q accumulates along the way.
KL(q‖p) is estimated by Monte Carlo (see :mod:`.recognition`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from svae_core.models.base import LearnedLDSPrior, make_decoder, make_frame_encoder
from svae_core.models.recognition import (
    BaselinePosterior,
    BiGRUEncoder,
    GaussianHeads,
    MonteCarloBaseline,
    diag_gaussian_log_prob,
    masked_input,
)


class AutoregressiveCell(nn.Module):
    """One posterior step for S samples at once.

    carry (h (S, H), x_prev (S, D)), inputs (u_t (F,), ε_t (S, D)) ->
    carry (h_t, x_t), outputs (x_t (S, D), log q(x_t | x_{<t}) (S,)).
    """

    latent_dim: int
    hidden: int
    head_hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, carry, inputs):
        h, x_prev = carry
        u_t, eps_t = inputs
        u_t = jnp.broadcast_to(u_t, x_prev.shape[:-1] + u_t.shape[-1:])
        h, _ = nn.GRUCell(self.hidden, name="gru")(h, jnp.concatenate([x_prev, u_t], -1))
        mean, _, var = GaussianHeads(self.latent_dim, self.head_hidden, name="heads")(h)
        x = mean + jnp.sqrt(var) * eps_t
        return (h, x), (x, diag_gaussian_log_prob(x, mean, var))


class RNNARNL(MonteCarloBaseline):
    """RNN-AR-NL posterior; BiGRU and autoregressive GRU both of width config.rnn_hidden, heads
    of widths config.head_hidden. Parameters: 'prior', 'decoder' (as the SVAE), 'encoder',
    'autoregressive', and 'frame_encoder' (the CNN trunk) when config.frame_shape is set.
    ``posterior`` returns BaselinePosterior(mean=None, samples (S, T, D)): the
    marginal means have no closed form (average the samples if needed)."""

    def setup(self):
        c = self.config
        self.prior = LearnedLDSPrior(c.latent_dim, c.dynamics_init)
        self.decoder = make_decoder(c)
        self.frame_encoder = make_frame_encoder(c)
        self.encoder = BiGRUEncoder(c.rnn_hidden)
        # lax.scan over time with the cell's parameters shared across steps.
        self.autoregressive = nn.scan(
            AutoregressiveCell,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=0,
            out_axes=0,
        )(c.latent_dim, c.rnn_hidden, c.head_hidden)

    def sample_and_log_prob(self, y, mask, eps):
        """Samples x (S, T, D) driven by noise ε (S, T, D), and log q(x) (S,)."""
        u = self.encoder(self.encoder_features(masked_input(y, mask)))  # (T, 2H)
        S, _, D = eps.shape
        carry = (jnp.zeros((S, self.config.rnn_hidden), u.dtype), jnp.zeros((S, D), eps.dtype))
        _, (x, log_q) = self.autoregressive(carry, (u, jnp.swapaxes(eps, 0, 1)))
        return jnp.swapaxes(x, 0, 1), jnp.sum(log_q, axis=0)

    def posterior(self, y, mask, key, num_samples=1) -> BaselinePosterior:
        """BaselinePosterior(None, samples (S, T, D)); the samples ``__call__`` uses for key."""
        eps = self.noise(key, num_samples, y)
        return BaselinePosterior(None, self.sample_and_log_prob(y, mask, eps)[0])

    def posterior_mean(self, y, mask, key=None, num_samples=256):
        """(T, D) Monte Carlo estimate of E_q[x_t]: the average of num_samples draws from q
        (no closed form); key None means PRNGKey(0), so the estimate is deterministic. Its
        error per coordinate is std_q(x_t)/√num_samples."""
        key = jax.random.PRNGKey(0) if key is None else key
        return jnp.mean(self.posterior_samples(y, mask, key, num_samples), axis=0)
