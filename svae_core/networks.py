"""Small convolutional networks for image observations (the pendulum videos of Zhao &
Linderman 2023, §4.3: "convolutional neural networks for generating the recognition potentials
and implementing the decoder").

Shapes. A video is stored the way every model sees a sequence, y (T, N) with N = H·W (frames
flattened row-major); these networks work per frame:

* :class:`FrameEncoder` (the CNN trunk shared by every recognition network):
  frames (..., H, W) -> features (..., F). Frames are zero-padded at the bottom and right
  to multiples of 2^L (L = ``len(channels)``), then L convolutions of kernel 2 and stride 2
  with ReLU, each halving the grid (24×24 -> 12×12 -> 6×6 with the default two), then a
  dense layer to F features with ReLU.
* :class:`FrameDecoder`: latents x (..., D) -> (pixel means (..., H·W), log_var (H·W,)),
  the Gaussian likelihood p(y_t | x_t) = N(y_t; mean(x_t), diag(exp(log_var))) with a learned
  per-pixel log-variance (initialised at 0). An MLP (widths ``hidden``, ReLU; may be empty),
  a dense layer to a ⌈H/2^L⌉×⌈W/2^L⌉×channels[-1] grid (ReLU), then L transposed
  convolutions of kernel 2 and stride 2, each doubling the grid (channels channels[-2], …,
  channels[0], then 1; ReLU after all but the last), cropped to the top-left H×W.

Why kernel 2, stride 2. Such a convolution is a space-to-depth reshape followed by a dense
layer (and its transpose a dense layer followed by depth-to-space), so both networks are
reshapes and matrix products only. On XLA:CPU that matters: inside the ``lax.scan`` with which
:class:`svae_core.training.Trainer` runs its steps, gradients of ``lax.conv`` layers fall back
to a naive kernel (measured 6–15× slower than outside the loop; about 35× slower per step than
this form at 24×24, T = 100, batch 10), while products keep their fast path.

Both fold every leading axis into one batch axis, so they apply to a frame, a sequence or a
batch of sample paths alike. Neither normalises anything: feed frames on their own scale.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp


def _check_frame_shape(frame_shape):
    if len(frame_shape) != 2 or min(frame_shape) < 1:
        raise ValueError(f"frame_shape must be (H, W) with H, W >= 1, got {frame_shape}")
    return tuple(int(s) for s in frame_shape)


def space_to_depth(x):
    """(B, 2h, 2w, C) -> (B, h, w, 4C), the 2×2 block of each output pixel flattened in
    (row offset, column offset, channel) order."""
    B, H, W, C = x.shape
    x = x.reshape(B, H // 2, 2, W // 2, 2, C).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H // 2, W // 2, 4 * C)


def depth_to_space(x):
    """(B, h, w, 4C) -> (B, 2h, 2w, C), the inverse of :func:`space_to_depth`."""
    B, H, W, C4 = x.shape
    x = x.reshape(B, H, W, 2, 2, C4 // 4).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, 2 * H, 2 * W, C4 // 4)


class PatchConv(nn.Module):
    """Convolution with kernel 2, stride 2, no padding: (B, 2h, 2w, C) -> (B, h, w, features).
    Parameters 'kernel' (2, 2, C, features), laid out as ``nn.Conv``'s, and 'bias'."""

    features: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (2, 2, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return space_to_depth(x) @ kernel.reshape(-1, self.features) + bias


class PatchDeconv(nn.Module):
    """Transposed convolution with kernel 2, stride 2: (B, h, w, C) -> (B, 2h, 2w, features);
    output pixel (2i + a, 2j + b) = x[i, j] @ kernel[:, a, b] + bias. Parameters 'kernel'
    (C, 2, 2, features) and 'bias'."""

    features: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2, 3)),
                            (x.shape[-1], 2, 2, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return depth_to_space(x @ kernel.reshape(x.shape[-1], -1)) + bias


class FrameEncoder(nn.Module):
    """Per-frame CNN trunk: (..., H, W) -> (..., features). Parameters 'conv_i', 'dense'."""

    frame_shape: tuple[int, int]
    channels: tuple[int, ...] = (16, 32)
    features: int = 64

    @nn.compact
    def __call__(self, frames):
        H, W = _check_frame_shape(self.frame_shape)
        if frames.shape[-2:] != (H, W):
            raise ValueError(f"frames must have shape (..., {H}, {W}), got {frames.shape}")
        lead = frames.shape[:-2]
        size = 2 ** len(self.channels)
        h = frames.reshape(-1, H, W, 1)
        h = jnp.pad(h, ((0, 0), (0, -H % size), (0, -W % size), (0, 0)))
        for i, width in enumerate(self.channels):
            h = nn.relu(PatchConv(width, name=f"conv_{i}")(h))
        h = nn.relu(nn.Dense(self.features, name="dense")(h.reshape(h.shape[0], -1)))
        return h.reshape(*lead, self.features)


class FrameDecoder(nn.Module):
    """x (..., D) -> (pixel means (..., H·W), log_var (H·W,)); see the module docstring.
    Parameters 'hidden_i', 'dense', 'deconv_i', 'log_var'."""

    frame_shape: tuple[int, int]
    channels: tuple[int, ...] = (16, 32)
    hidden: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, x):
        H, W = _check_frame_shape(self.frame_shape)
        L = len(self.channels)
        h0, w0 = math.ceil(H / 2**L), math.ceil(W / 2**L)
        lead = x.shape[:-1]
        z = x.reshape(-1, x.shape[-1])
        for i, width in enumerate(self.hidden):
            z = nn.relu(nn.Dense(width, name=f"hidden_{i}")(z))
        z = nn.relu(nn.Dense(h0 * w0 * self.channels[-1], name="dense")(z))
        z = z.reshape(-1, h0, w0, self.channels[-1])
        for i, width in enumerate((*reversed(self.channels[:-1]), 1)):
            z = PatchDeconv(width, name=f"deconv_{i}")(z)
            if i < L - 1:
                z = nn.relu(z)
        mean = z[:, :H, :W, 0].reshape(*lead, H * W)
        log_var = self.param("log_var", nn.initializers.zeros, (H * W,))
        return mean, log_var


__all__ = ["FrameDecoder", "FrameEncoder", "PatchConv", "PatchDeconv", "depth_to_space",
           "space_to_depth"]
