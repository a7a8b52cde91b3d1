"""CNN-AR-L: the AR-L posterior of :mod:`.rnn_ar_l` with a temporal CNN in place of the
bidirectional GRU (Zhao & Linderman 2023, §2.2, fig. 1e)::

    (m_t, A_t, v_t) = heads(CNN(y ⊙ mask)_t)

The CNN sees a finite window of steps (≈ cnn_layers·(cnn_kernel − 1) + 1), so unlike the RNN
families q(x_t | ·) cannot depend on arbitrarily distant observations.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from svae_core.models.recognition import LinearGaussianBaseline


class TimeConv(nn.Module):
    """(T, C) -> (T, features): a 1-D 'SAME' convolution over time (cross-correlation, as
    ``nn.Conv``, with the same parameter names, shapes and initialisers), written as one
    matrix product over stacked shifted copies. XLA's CPU convolution gradient is very slow
    inside ``lax.scan`` (where the Trainer runs its steps); a matmul is not."""

    features: int
    kernel: int

    @nn.compact
    def __call__(self, x):
        T, C = x.shape
        K = self.kernel
        w = self.param("kernel", nn.initializers.lecun_normal(), (K, C, self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        pad_lo = (K - 1) // 2  # lax 'SAME': the extra zero goes at the end for even K
        xp = jnp.pad(x, ((pad_lo, K - 1 - pad_lo), (0, 0)))
        windows = jnp.stack([xp[k:k + T] for k in range(K)], axis=1)  # (T, K, C)
        return windows.reshape(T, K * C) @ w.reshape(K * C, self.features) + b


class TemporalCNN(nn.Module):
    """(T, N) -> (T, features): ``layers`` 1-D convolutions over time, kernel ``kernel``,
    'SAME' padding (output length T, zeros beyond the ends), ReLU after each."""

    features: int
    layers: int
    kernel: int

    @nn.compact
    def __call__(self, y):
        h = y
        for i in range(self.layers):
            h = nn.relu(TimeConv(self.features, self.kernel, name=f"conv_{i}")(h))
        return h


class CNNARL(LinearGaussianBaseline):
    """AR-L posterior from a temporal CNN (config.cnn_layers × config.cnn_features, kernel
    config.cnn_kernel) and MLP heads (config.head_hidden). ``posterior`` returns
    BaselinePosterior(mean=E_q[x_t] (T, D), samples (S, T, D))."""

    transition = True

    def make_encoder(self):
        c = self.config
        return TemporalCNN(c.cnn_features, c.cnn_layers, c.cnn_kernel)
