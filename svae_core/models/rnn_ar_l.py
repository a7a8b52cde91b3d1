"""RNN-AR-L: a bidirectional GRU outputs a linear-Gaussian autoregressive posterior
(Zhao & Linderman 2023, §2.2, fig. 1c)::

    q(x) = N(x_1; m_1, diag v_1) ∏_{t≥2} N(x_t; A_t x_{t-1} + m_t, diag v_t),
    (m_t, A_t, v_t) = heads(BiGRU(y ⊙ mask)_t),   A_t a dense (D, D) matrix.

This family contains the exact posterior of an LDS with the right (m_t, A_t, V_t) except that
V_t is diagonal here. KL(q‖p) is estimated by Monte Carlo (see :mod:`.recognition`).
"""

from __future__ import annotations

from svae_core.models.recognition import BiGRUEncoder, LinearGaussianBaseline


class RNNARL(LinearGaussianBaseline):
    """AR-L posterior from a BiGRU (width config.rnn_hidden) and MLP heads (config.head_hidden).
    ``posterior`` returns BaselinePosterior(mean=E_q[x_t] (T, D), samples (S, T, D))."""

    transition = True

    def make_encoder(self):
        return BiGRUEncoder(self.config.rnn_hidden)
