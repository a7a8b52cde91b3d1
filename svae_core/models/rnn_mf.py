"""RNN-MF: a bidirectional GRU outputs a mean-field Gaussian posterior (Zhao & Linderman 2023,
§2.2, fig. 1b; the deep Kalman filter's recognition network)::

    q(x) = ∏_t N(x_t; m_t, diag v_t),   (m_t, v_t) = heads(BiGRU(y ⊙ mask)_t)

KL(q‖p) to the LDS prior is estimated by Monte Carlo (see :mod:`.recognition`).
"""

from __future__ import annotations

from svae_core.models.recognition import BiGRUEncoder, LinearGaussianBaseline


class RNNMF(LinearGaussianBaseline):
    """Mean-field posterior from a BiGRU (width config.rnn_hidden) and MLP heads
    (config.head_hidden). ``posterior`` returns BaselinePosterior(mean=m (T, D), samples)."""

    transition = False

    def make_encoder(self):
        return BiGRUEncoder(self.config.rnn_hidden)
