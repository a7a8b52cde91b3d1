"""Small convolutional networks for image observations (the pendulum videos of Zhao &
Linderman 2023, §4.3: "convolutional neural networks for generating the recognition potentials
and implementing the decoder").

Shapes. A video is stored the way every model sees a sequence, y (T, N) with N = H·W (frames
flattened row-major); these networks work per frame:

* :class:`FrameEncoder` (the CNN trunk shared by every recognition network):
  frames (..., H, W) -> features (..., F). ``len(channels)`` 3×3 convolutions of stride 2,
  'SAME' padding, ReLU (H×W -> ⌈H/2⌉×⌈W/2⌉ -> …), then a dense layer to F features, ReLU.
* :class:`FrameDecoder`: latents x (..., D) -> (pixel means (..., H·W), log_var (H·W,)),
  the Gaussian likelihood p(y_t | x_t) = N(y_t; mean(x_t), diag(exp(log_var))) with a learned
  per-pixel log-variance (initialised at 0). An MLP (widths ``hidden``, ReLU; may be empty),
  a dense layer to a ⌈H/2^L⌉×⌈W/2^L⌉×channels[-1] grid (ReLU), L = ``len(channels)``
  transposed convolutions of kernel 4 and stride 2 (each doubles the grid; channels
  channels[-2], …, channels[0], then 1; ReLU after all but the last), cropped to H×W.

Both fold every leading axis into one batch axis, so they apply to a frame, a sequence or a
batch of sample paths alike. Neither normalises anything: feed frames on their own scale.
"""

from __future__ import annotations

import math

import flax.linen as nn

ENCODER_KERNEL = 3
DECODER_KERNEL = 4  # a multiple of the stride: transposed convolutions overlap evenly


def _check_frame_shape(frame_shape):
    if len(frame_shape) != 2 or min(frame_shape) < 1:
        raise ValueError(f"frame_shape must be (H, W) with H, W >= 1, got {frame_shape}")
    return tuple(int(s) for s in frame_shape)


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
        h = frames.reshape(-1, H, W, 1)
        for i, width in enumerate(self.channels):
            h = nn.relu(nn.Conv(width, (ENCODER_KERNEL, ENCODER_KERNEL), strides=(2, 2),
                                padding="SAME", name=f"conv_{i}")(h))
        h = h.reshape(h.shape[0], -1)
        h = nn.relu(nn.Dense(self.features, name="dense")(h))
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
        widths = (*reversed(self.channels[:-1]), 1)
        for i, width in enumerate(widths):
            z = nn.ConvTranspose(width, (DECODER_KERNEL, DECODER_KERNEL), strides=(2, 2),
                                 padding="SAME", name=f"deconv_{i}")(z)
            if i < L - 1:
                z = nn.relu(z)
        mean = z[:, :H, :W, 0].reshape(*lead, H * W)
        log_var = self.param("log_var", nn.initializers.zeros, (H * W,))
        return mean, log_var


__all__ = ["DECODER_KERNEL", "ENCODER_KERNEL", "FrameDecoder", "FrameEncoder"]
