r"""The bouncing-dot videos of Johnson et al. (2016, §6.1): a blurred dot on a 1-D image.

The model of the data, per sequence::

    centre     p(t) = triangle wave in [−1, 1]: constant speed v, reflected at the walls ±1
    frames     x_t = exp(−(g − p(t·dt))² / (2 w²)) + ε_t,   ε_t ~ N(0, noise_sd² I) i.i.d.

with g the pixel grid ``linspace(−1, 1, num_pixels)`` (the pixel centres, the outer ones on the
walls), w the render width and t = 0, 1, ..., T − 1 the frame index. Each sequence starts at a
uniformly random position p(0) ~ U(−1, 1) and a random direction (±1 with probability ½), so
the sequences are different phases of one and the same wave.

Units. Positions are in image units: the image spans [−1, 1] and the walls sit at ±1. Time is
in the units of the speed (``speed`` image units per time unit); frames are ``dt`` time units
apart, so the dot moves ``speed · dt`` image units per frame, a wall-to-wall crossing takes
2/(speed·dt) frames and a round trip ``period_frames`` = 4/(speed·dt) frames. Velocities are in
image units per time unit (±speed).

Defaults follow the 2016 experiment as the project's notes reconstruct it (the paper leaves
these details out): 20 pixels, render width 0.15, speed 0.75, dt = 0.1 (so 0.075 image units
per frame, ≈ 26.7 frames per crossing and ≈ 53.3 per round trip), pixel noise sd 0.1, and
5000 training frames cut into windows of 50 (``num_train = 100`` sequences × 50 frames).

At a wall the direction is resolved as the direction in which the dot *leaves* it: the
velocity stored for a frame is the right derivative of the position, so when a bounce falls
between frames k and k + 1 (or exactly on frame k + 1) the velocity flips sign at frame k + 1.

Randomness: ``SeedSequence(seed)`` spawns a train and a test stream, each spawning one stream
per sequence (its start, direction and noise). So the test set does not depend on
``num_train``, and a larger ``num_train`` (or ``num_test``) extends the smaller set.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from svae_core.datasets._validation import check_float, check_int

__all__ = [
    "BouncingDotBenchmark",
    "BouncingDotData",
    "frame_positions",
    "make_bouncing_dot_dataset",
    "render",
    "triangle_wave",
]


# ----------------------------------------------------------------------------- dynamics


def _phase(t, speed, start, direction):
    """The dot's phase φ ∈ [0, 4) on the unfolded round trip, and the validated speed.

    φ ∈ [0, 2): moving up at position φ − 1; φ ∈ [2, 4): moving down at position 3 − φ.
    Time always advances φ at rate ``speed`` (mod 4); the half-open ranges put a dot sitting
    on a wall in the direction it leaves the wall.
    """
    speed = check_float("speed", speed)
    t = np.asarray(t, np.float64)
    start = np.asarray(start, np.float64)
    direction = np.asarray(direction, np.float64)
    if not np.all(np.isfinite(t)):
        raise ValueError("t must be finite")
    if not np.all((start >= -1.0) & (start <= 1.0)):
        raise ValueError(f"start must lie in [-1, 1], got {start!r}")
    if not np.all((direction == 1.0) | (direction == -1.0)):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    try:
        np.broadcast_shapes(t.shape, start.shape, direction.shape)
    except ValueError as err:
        raise ValueError(f"t {t.shape}, start {start.shape} and direction {direction.shape} "
                         f"do not broadcast: {err}") from None
    phase0 = np.where(direction > 0, start + 1.0, 3.0 - start)
    phase = np.mod(phase0 + speed * t, 4.0)
    phase = np.where(phase >= 4.0, phase - 4.0, phase)  # np.mod(−tiny, 4) rounds to 4.0
    return phase, speed


def triangle_wave(t, speed: float = 0.75, start: float = 0.0, direction: float = 1.0
                  ) -> np.ndarray:
    """Position of a point moving at constant ``speed`` between walls at ±1 that reflect it.

    Args:
        t: times (any shape; time units, so frame k of :func:`make_bouncing_dot_dataset` is at
            t = k·dt), finite; negative times run the motion backwards.
        speed: image units per time unit, > 0 (period 4/speed time units).
        start: position at t = 0, in [−1, 1] (scalar or array broadcasting against ``t``).
        direction: +1 (towards +1) or −1, the direction of motion at t = 0 (same broadcasting).
            At a wall, the direction pointing out of it is a bounce at t = 0.
    Returns:
        float64 positions in [−1, 1], of the broadcast shape of ``t``, ``start``, ``direction``:
        1 − |φ − 2| with φ = (φ0 + speed·t) mod 4, φ0 = start + 1 (direction +1) or 3 − start.
    Raises:
        ValueError: on a non-positive ``speed``, a ``start`` outside [−1, 1], a ``direction``
            other than ±1, non-finite times, or shapes that do not broadcast.
    """
    phase, _ = _phase(t, speed, start, direction)
    return 1.0 - np.abs(phase - 2.0)


def _triangle_velocity(t, speed, start, direction):
    """dp/dt from the right: +speed while the phase is in [0, 2), −speed in [2, 4)."""
    phase, speed = _phase(t, speed, start, direction)
    return np.where(phase < 2.0, speed, -speed)


# ----------------------------------------------------------------------------- rendering


def render(positions, num_pixels: int = 20, width: float = 0.15) -> np.ndarray:
    """Noise-free 1-D frames: a Gaussian bump of peak 1 centred at each position.

    Pixel i has intensity exp(−(g_i − p)² / (2·width²)), g = linspace(−1, 1, num_pixels)
    (pixel spacing 2/(num_pixels − 1), 0.105 at 20 pixels: the default bump is ≈ 1.4 pixels
    wide in sd).

    Args:
        positions: (...,) centres in image units, finite (outside [−1, 1] the bump is cut off).
        num_pixels: P ≥ 2.
        width: the bump's standard deviation in image units, > 0.
    Returns:
        float32 (..., num_pixels), values in [0, 1].
    Raises:
        ValueError: on a bad ``num_pixels`` or ``width``, or non-finite positions.
    """
    num_pixels = check_int("num_pixels", num_pixels, minimum=2)
    width = check_float("width", width)
    positions = np.asarray(positions, np.float64)
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions must be finite")
    grid = np.linspace(-1.0, 1.0, num_pixels)
    return np.exp(-0.5 * ((grid - positions[..., None]) / width) ** 2).astype(np.float32)


# ----------------------------------------------------------------------------- read-out

# Frames per block in frame_positions: bounds its (block, resolution) float64 scores to
# about 2**22 entries (32 MiB), whatever the number of frames.
_READOUT_BLOCK_ENTRIES = 2**22


def frame_positions(frames, width: float = 0.15, resolution: int = 481, extent: float = 1.2
                    ) -> np.ndarray:
    """The dot's position read from frames by template matching, in image units.

    What it is for: reading the dot's position off a decoded or predicted frame — the model's
    images, not its latents, whose coordinates are arbitrary — so that predictions can be
    compared with the true positions in image units (e.g. a prediction error in image units
    per frame ahead).

    Each frame f is fitted by a · g_c, with g_c = ``render([c], P, width)`` the bump centred at
    c (so the pixel grid and width are the renderer's own) and a ≥ 0 its best amplitude in
    least squares, a = max(0, ⟨f, g_c⟩/⟨g_c, g_c⟩). The read-out is the candidate centre c
    on ``linspace(−extent, extent, resolution)`` with the smallest squared residual
    ‖f − a·g_c‖² = ‖f‖² − max(0, ⟨f, g_c⟩)²/⟨g_c, g_c⟩. With no candidate fitting better
    than a = 0 (a frame that is zero, or nowhere positively correlated with a bump) all
    residuals tie and the candidate nearest 0 is returned (0 itself for an odd resolution).

    Args:
        frames: (..., P) frames, any leading shape (e.g. (S, samples, T, P) predictions), P ≥ 2
            pixels on the grid ``linspace(−1, 1, P)``, finite. Any real dtype.
        width: the bump's standard deviation in image units, > 0 (the renderer's, 0.15 by
            default).
        resolution: number of candidate centres, ≥ 2; the read-out is quantised to the grid
            spacing 2·extent/(resolution − 1) (0.005 image units at the defaults).
        extent: candidates span [−extent, extent] image units, > 0 (beyond the walls ±1, so a
            prediction that overshoots a wall reads as such).
    Returns:
        float64 (...) positions in image units, in [−extent, extent]. Memory: the scores are
        formed in blocks of frames, at most about 2**22 float64 entries at a time.
    Raises:
        ValueError: on a bad ``width``, ``resolution`` or ``extent``, frames with fewer than
            two pixels on the last axis, or non-finite frames.
    """
    width = check_float("width", width)
    resolution = check_int("resolution", resolution, minimum=2)
    extent = check_float("extent", extent)
    frames = np.asarray(frames)
    if frames.ndim < 1 or frames.shape[-1] < 2:
        raise ValueError(f"frames must have shape (..., P) with P >= 2, got {frames.shape}")
    if not np.issubdtype(frames.dtype, np.number) or np.iscomplexobj(frames):
        raise ValueError(f"frames must be real numbers, got dtype {frames.dtype}")
    if not np.all(np.isfinite(frames)):
        raise ValueError("frames must be finite")
    num_pixels = frames.shape[-1]
    centres = np.linspace(-extent, extent, resolution)
    # Candidates ordered by distance from 0, so that argmax resolves ties towards the centre.
    centres = centres[np.argsort(np.abs(centres), kind="stable")]
    templates = render(centres, num_pixels, width).astype(np.float64)  # (R, P)
    norms = np.sum(templates**2, axis=-1)  # 0 only for a bump entirely off the image
    inv_norms = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)

    flat = frames.reshape(-1, num_pixels)
    out = np.empty(flat.shape[0], np.float64)
    block = max(1, _READOUT_BLOCK_ENTRIES // resolution)
    for start in range(0, flat.shape[0], block):
        corr = flat[start:start + block].astype(np.float64) @ templates.T  # (block, R)
        fit = np.maximum(corr, 0.0) ** 2 * inv_norms  # ‖f‖² − residual
        out[start:start + block] = centres[np.argmax(fit, axis=-1)]
    return out.reshape(frames.shape[:-1])


# ----------------------------------------------------------------------------- data set


class BouncingDotData(NamedTuple):
    """One split of the bouncing-dot data set, S sequences of T frames of P pixels.

    frames: (S, T, P) float32, clean frames plus N(0, noise_sd²) per pixel (not clipped).
    clean_frames: (S, T, P) float32, the noise-free rendering, values in [0, 1].
    positions: (S, T) float32, the dot's true centre in image units, in [−1, 1].
    velocities: (S, T) float32, ±speed in image units per time unit, the direction in which
        the dot leaves each frame's position (so it flips at the frame after a bounce).
    """

    frames: np.ndarray
    clean_frames: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray


class BouncingDotBenchmark(NamedTuple):
    """:func:`make_bouncing_dot_dataset`'s result: ``train`` and ``test``
    :class:`BouncingDotData`; ``dt`` (time units per frame), ``speed`` (image units per time
    unit), ``noise_sd`` (pixel noise sd) and ``period_frames`` = 4/(speed·dt), the frames per
    round trip (a float; ≈ 53.3 at the defaults)."""

    train: BouncingDotData
    test: BouncingDotData
    dt: float
    speed: float
    noise_sd: float
    period_frames: float


def _make_split(seeds, num_frames, num_pixels, speed, dt, noise_sd, width):
    rngs = [np.random.default_rng(s) for s in seeds]
    # Per sequence: start ~ U(−1, 1), direction ±1 with probability ½, then the noise.
    draws = np.array([rng.uniform(-1.0, 1.0, size=2) for rng in rngs])  # (S, 2)
    start = draws[:, :1]
    direction = np.where(draws[:, 1:] < 0.0, -1.0, 1.0)
    t = dt * np.arange(num_frames)
    positions = triangle_wave(t, speed, start, direction)  # (S, T)
    velocities = _triangle_velocity(t, speed, start, direction)
    clean = render(positions, num_pixels, width)
    noise = np.stack([rng.standard_normal((num_frames, num_pixels)) for rng in rngs])
    frames = (clean + noise_sd * noise).astype(np.float32)
    return BouncingDotData(frames, clean, positions.astype(np.float32),
                           velocities.astype(np.float32))


def make_bouncing_dot_dataset(
    seed: int = 0,
    num_train: int = 100,
    num_test: int = 10,
    num_frames: int = 50,
    num_pixels: int = 20,
    speed: float = 0.75,
    dt: float = 0.1,
    noise_sd: float = 0.1,
    width: float = 0.15,
) -> BouncingDotBenchmark:
    """Generate the §6.1 bouncing-dot videos, deterministically from ``seed``.

    Defaults: 100 training windows of 50 frames (the 2016 experiment's 5000 frames) and 10
    held-out windows, 20 pixels, speed 0.75, dt = 0.1, noise sd 0.1, render width 0.15. Each
    sequence starts at a uniform position in [−1, 1] moving in a random direction; see the
    module docstring for the model and units.

    Args:
        seed: int ≥ 0.
        num_train, num_test: sequences per split, ≥ 1.  num_frames: T ≥ 1.
        num_pixels: P ≥ 2.  speed: image units per time unit, > 0.  dt: time units per
            frame, > 0.  noise_sd: pixel noise sd, ≥ 0.  width: render sd, > 0.
    Returns:
        :class:`BouncingDotBenchmark`.
    Raises:
        ValueError: on any out-of-range argument.
    """
    seed = check_int("seed", seed, minimum=0)
    num_train = check_int("num_train", num_train)
    num_test = check_int("num_test", num_test)
    num_frames = check_int("num_frames", num_frames)
    num_pixels = check_int("num_pixels", num_pixels, minimum=2)
    speed = check_float("speed", speed)
    dt = check_float("dt", dt)
    noise_sd = check_float("noise_sd", noise_sd, positive=False)
    width = check_float("width", width)

    train_ss, test_ss = np.random.SeedSequence(seed).spawn(2)
    common = (num_frames, num_pixels, speed, dt, noise_sd, width)
    train = _make_split(train_ss.spawn(num_train), *common)
    test = _make_split(test_ss.spawn(num_test), *common)
    return BouncingDotBenchmark(train, test, dt, speed, noise_sd, 4.0 / (speed * dt))
