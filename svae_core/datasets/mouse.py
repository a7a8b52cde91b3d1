r"""A stand-in for the 2016 mouse depth video (Johnson et al. 2016, §6.2–6.3), with true labels.

The 2016 experiment segments top-down Kinect depth video of a freely behaving mouse, centred
and aligned and downsampled to 30×30, with a switching-LDS SVAE. Those recordings were never
released, so this module renders egocentric depth frames of a rodent-like body whose pose
follows behaviour-specific linear dynamics under a semi-Markov behaviour sequence; the true
behaviour of every frame is known. For real recordings, :func:`load_depth_video` applies the
2016 preprocessing. Per sequence (NumPy, deterministic given a seed)::

    behaviours  z_1 ~ U{0..K−1};  run lengths d ~ U{d_min..d_max} frames (the first run
                left-truncated);  next behaviour z' ~ P[z, :], P with a zero diagonal
    pose        slow  p_{t+1} = p_t + α (m_z − p_t) + √(1 − (1 − α)²) s_z ⊙ ε_t,  z = z_{t+1}
                gait  a_{t+1} = a_t + α (g_z − a_t),  φ_{t+1} = φ_t + 2π f_gait/fps + 0.15 η_t
                breath b_{t+1} = b_t + α (r_z − b_t), ψ_{t+1} = ψ_t + 2π f_breath/fps + 0.1 η'_t
    frames      x_t = keep_t ⊙ (render(pose_t) + noise_sd · ε'_t),  keep_t ~ Bernoulli(1 − q)

per pixel, q = ``dropout``; ε, η, η', ε' standard normal, f_gait = 4 Hz, f_breath = 2.5 Hz
and α = 1 − exp(−1/(fps·τ)) (τ = 0.1 s: the pose relaxes to a new behaviour's mean pose
within ≈ 0.2 s), so that s_z is the stationary sd of the slow pose within a behaviour. The
gait (a, φ) and breathing (b, ψ) phases advance in every behaviour; only their amplitudes
g_z, r_z differ. Labels therefore switch abruptly while the frames change smoothly: at a
boundary the pose takes the first step of an exponential approach to the new mean.

Durations. ``duration_range`` = (0.2, 0.5) s by default, the length of the behavioural
"syllables" of the MoSeq line of work; at fps f it becomes d_min = max(1, round(0.2 f)),
d_max = max(d_min, round(0.5 f)) frames (6 and 15 at 30 fps), drawn uniformly. The first
run of a sequence has a uniform length in 1..d for a drawn d (the chain was already running),
the last is cut by the window's end. The default transition matrix is uniform over the other
five behaviours; the first behaviour is uniform over all six.

Pose (``POSE_NAMES``, one row of ``poses``; image units: the image spans [−1, 1] in both
directions, 2/29 ≈ 0.069 per pixel at size 30)::

    0 curvature     κ, constant bend of the spine, rad per image unit; > 0 bends the body
                    (and so the nose) towards the mouse's left = image left
    1 length        L, tail base to nose along the spine, image units
    2 torso_height  peak height of the back (height units, below)
    3 head_height   peak height of the head
    4 head_yaw      head angle relative to the torso, rad, > 0 to the left
    5 width         lateral sd of the widest part of the body, image units
    6 breath        b sin ψ: relative expansion of width and height by breathing
    7 gait_cos      a cos φ  } the gait oscillator: a travelling bending wave of the spine,
    8 gait_sin      a sin φ  } tangent angle 0.45 · env(u) · a sin(φ − 1.5π u), u = 0 tail .. 1 nose

Behaviours (``BEHAVIOURS``; label = index; mean pose m_z, gait amplitude g_z, breathing r_z)::

    pause       κ 0, L 1.10, torso 0.65, head 0.50, width 0.16; no gait; breathing 0.06
    walk        κ 0, L 1.30 (stretched), torso 0.55, head 0.45, width 0.135; gait 1 at 4 Hz
    turn_left   κ +1.3 (≈ 86° of bend over the body), head yaw +0.45, L 1.15, torso 0.6,
                width 0.15; gait 0.6
    turn_right  the mirror image of turn_left
    rear        L 0.80 (seen from above, a rearing mouse is short), torso 0.95, head 1.0,
                width 0.175
    groom       L 0.90, torso 0.75 (hunched), head 0.30 (down), width 0.195; head yaw jitters
                (stationary sd 0.45 rad) and head height (sd 0.07)

(stationary sds of the slow pose otherwise 0.08–0.15 per unit for κ, 0.03–0.04 for L, 0.02–0.05
for heights, 0.06–0.1 rad for head yaw, 0.005 for width; ``_PARAMS`` in the source.)

Breathing runs at 2.5 Hz in every behaviour with its amplitude r_z (largest in ``pause``).

Rendering (:func:`render_mouse`, deterministic). The spine is sampled at 25 points; its
tangent angle is κ L (u − ½) + head_yaw · (a ramp from 0 at u = 0.66 to 1 at u = 0.8) + the
gait wave (its envelope env(u) falls linearly from 1 at the tail base to 0.6 at the neck and
0.2 at the nose), integrated to positions. The body is then centred and aligned, much as the
MoSeq extraction does with an ellipse fit: rotated so that the chord from the tail base to
the neck, u ≈ 0.71, points to the top of the image (row 0), and translated so that the
body's centre of mass (the volume-weighted mean of its blobs) is at the image centre. At
each spine point sits an anisotropic Gaussian blob: sd 1.3 Δs along the spine (Δs = L/24,
so neighbouring blobs merge into a smooth ridge), a width profile times ``width`` across
it, and an amplitude giving the ridge a height profile that blends the torso (peak
``torso_height``) into the head (peak ``head_height``) at the neck; breathing scales widths
and heights by (1 + breath). The background is 0. Heights are in arbitrary units, chosen
so that a rearing mouse peaks at ≈ 0.9 (its pose heights 0.95 and 1.0: the blobs round the
ridge's peak off a little) and a pausing one at ≈ 0.65. A depth camera measures mm above
the floor, about 25–30 mm for a resting back and 60–70 mm rearing, so one unit is roughly
65–70 mm. Noise-free frames are ≥ 0 (a negative height in a pose is drawn as 0) and stay
below ≈ 1.1.

Sensor. ``noise_sd`` (default 0.02, 2% of a rearing mouse's height) i.i.d. Gaussian per pixel
and frame, then each pixel independently reads 0 with probability ``dropout`` (default 0; a
Kinect reports missing depth as 0). Frames are not clipped, so the background is centred on
0 as after the 2016 percentile subtraction.

Randomness: ``SeedSequence(seed)`` spawns a train and a test stream, each spawning one stream
per sequence (its labels, poses, noise and dropout in that order), so sequences are
independent, train and test never share a stream, the test set does not depend on
``num_train``, and a larger ``num_train`` (or ``num_test``) extends the smaller set.
Models take flat frames: :func:`flatten_frames` turns (S, T, 30, 30) into (S, T, 900).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from svae_core.datasets._validation import check_float, check_int

__all__ = [
    "BEHAVIOURS",
    "POSE_DIM",
    "POSE_NAMES",
    "MouseBenchmark",
    "MouseData",
    "default_transition_matrix",
    "flatten_frames",
    "load_depth_video",
    "make_mouse_dataset",
    "render_mouse",
    "sample_behaviour_labels",
    "simulate_poses",
]

BEHAVIOURS = ("pause", "walk", "turn_left", "turn_right", "rear", "groom")
POSE_NAMES = ("curvature", "length", "torso_height", "head_height", "head_yaw", "width",
              "breath", "gait_cos", "gait_sin")
POSE_DIM = len(POSE_NAMES)

# ----------------------------------------------------------------------------- behaviours

_NUM_SLOW = 6  # curvature, length, torso_height, head_height, head_yaw, width
_TAU = 0.1  # s, relaxation time of the slow pose and the oscillator amplitudes
_GAIT_HZ = 4.0
_BREATH_HZ = 2.5
_GAIT_PHASE_SD = 0.15  # rad per frame
_BREATH_PHASE_SD = 0.1


class _Behaviour(NamedTuple):
    mean: tuple  # slow pose mean (curvature, length, torso, head, yaw, width)
    sd: tuple  # stationary sd of the slow pose
    gait: float  # gait amplitude a
    breath: float  # breathing amplitude b


_PARAMS = {
    "pause": _Behaviour((0.0, 1.10, 0.65, 0.50, 0.0, 0.160),
                        (0.08, 0.03, 0.02, 0.03, 0.06, 0.004), 0.0, 0.06),
    "walk": _Behaviour((0.0, 1.30, 0.55, 0.45, 0.0, 0.135),
                       (0.10, 0.04, 0.03, 0.03, 0.08, 0.004), 1.0, 0.02),
    "turn_left": _Behaviour((1.3, 1.15, 0.60, 0.45, 0.45, 0.150),
                            (0.15, 0.04, 0.03, 0.03, 0.10, 0.004), 0.6, 0.02),
    "turn_right": _Behaviour((-1.3, 1.15, 0.60, 0.45, -0.45, 0.150),
                             (0.15, 0.04, 0.03, 0.03, 0.10, 0.004), 0.6, 0.02),
    "rear": _Behaviour((0.0, 0.80, 0.95, 1.00, 0.0, 0.175),
                       (0.10, 0.04, 0.05, 0.05, 0.10, 0.005), 0.0, 0.03),
    "groom": _Behaviour((0.0, 0.90, 0.75, 0.30, 0.0, 0.195),
                        (0.10, 0.04, 0.03, 0.07, 0.45, 0.005), 0.0, 0.01),
}
_MEANS = np.array([_PARAMS[b].mean for b in BEHAVIOURS])  # (K, 6)
_SDS = np.array([_PARAMS[b].sd for b in BEHAVIOURS])
_GAIT_AMP = np.array([_PARAMS[b].gait for b in BEHAVIOURS])
_BREATH_AMP = np.array([_PARAMS[b].breath for b in BEHAVIOURS])


def _as_rng(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(check_int("seed", seed, minimum=0))


def default_transition_matrix() -> np.ndarray:
    """(K, K) float64, K = len(BEHAVIOURS): uniform over the other behaviours, zero diagonal."""
    k = len(BEHAVIOURS)
    return (np.ones((k, k)) - np.eye(k)) / (k - 1)


def _check_transition_matrix(matrix):
    k = len(BEHAVIOURS)
    if matrix is None:
        return default_transition_matrix()
    matrix = np.asarray(matrix, np.float64)
    if matrix.shape != (k, k):
        raise ValueError(f"transition_matrix must have shape ({k}, {k}) (one row and column "
                         f"per behaviour in {BEHAVIOURS}), got {matrix.shape}")
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise ValueError("transition_matrix must hold finite non-negative probabilities")
    if np.any(np.diag(matrix) != 0):
        raise ValueError("transition_matrix must have a zero diagonal (a behaviour's run "
                         "length is its duration; no self-transitions)")
    sums = matrix.sum(axis=1)
    if not np.allclose(sums, 1.0, rtol=0, atol=1e-6):
        raise ValueError(f"transition_matrix rows must sum to 1, got sums {sums}")
    return matrix / sums[:, None]


def _duration_frames(duration_range, fps):
    try:
        low, high = (float(v) for v in duration_range)
    except (TypeError, ValueError):
        raise ValueError(f"duration_range must be a pair (min_s, max_s) of seconds, got "
                         f"{duration_range!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and 0 < low <= high):
        raise ValueError(f"duration_range must satisfy 0 < min_s <= max_s, got "
                         f"{duration_range!r}")
    d_min = max(1, round(low * fps))
    return d_min, max(d_min, round(high * fps))


def _sample_labels(rng, num_frames, matrix, d_min, d_max):
    k = matrix.shape[0]
    labels = np.empty(num_frames, np.int64)
    z = int(rng.integers(k))
    run = int(rng.integers(1, int(rng.integers(d_min, d_max + 1)) + 1))  # left-truncated
    t = 0
    while True:
        labels[t:t + run] = z
        t += run
        if t >= num_frames:
            return labels
        z = int(rng.choice(k, p=matrix[z]))
        run = int(rng.integers(d_min, d_max + 1))


def sample_behaviour_labels(
    num_frames: int, seed=0, transition_matrix=None, fps: float = 30.0,
    duration_range=(0.2, 0.5),
) -> np.ndarray:
    """Sample a behaviour sequence from the semi-Markov chain of the module docstring.

    Args:
        num_frames: T ≥ 1.
        seed: int ≥ 0 or a ``np.random.Generator`` (used in place).
        transition_matrix: (K, K) probabilities between behaviours (rows sum to 1, zero
            diagonal), K = len(BEHAVIOURS); ``None``: :func:`default_transition_matrix`.
        fps: frames per second, > 0.
        duration_range: (min_s, max_s) seconds per run, 0 < min_s ≤ max_s; run lengths are
            uniform over max(1, round(min_s·fps)) .. round(max_s·fps) frames.
    Returns:
        int64 (T,) labels, indices into ``BEHAVIOURS``; consecutive runs differ.
    Raises:
        ValueError: on a bad argument.
    """
    num_frames = check_int("num_frames", num_frames)
    fps = check_float("fps", fps)
    matrix = _check_transition_matrix(transition_matrix)
    d_min, d_max = _duration_frames(duration_range, fps)
    return _sample_labels(_as_rng(seed), num_frames, matrix, d_min, d_max)


def _check_labels(labels):
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] < 1:
        raise ValueError(f"labels must have shape (T,) with T >= 1, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if np.any((labels < 0) | (labels >= len(BEHAVIOURS))):
        raise ValueError(f"labels must lie in 0..{len(BEHAVIOURS) - 1} (indices into "
                         f"BEHAVIOURS), got values {np.unique(labels)}")
    return labels.astype(np.int64)


def _simulate(rng, labels, fps):
    num_frames = labels.shape[0]
    alpha = 1.0 - math.exp(-1.0 / (fps * _TAU))
    step_scale = math.sqrt(1.0 - (1.0 - alpha) ** 2)
    eps = rng.standard_normal((num_frames, _NUM_SLOW))
    phase_noise = rng.standard_normal((num_frames, 2))
    start_phases = rng.uniform(0.0, 2.0 * math.pi, size=2)
    means, sds = _MEANS[labels], _SDS[labels]
    slow = np.empty((num_frames, _NUM_SLOW))
    gait_amp = np.empty(num_frames)
    breath_amp = np.empty(num_frames)
    slow[0] = means[0] + sds[0] * eps[0]
    gait_amp[0], breath_amp[0] = _GAIT_AMP[labels[0]], _BREATH_AMP[labels[0]]
    for t in range(1, num_frames):
        slow[t] = slow[t - 1] + alpha * (means[t] - slow[t - 1]) + step_scale * sds[t] * eps[t]
        gait_amp[t] = gait_amp[t - 1] + alpha * (_GAIT_AMP[labels[t]] - gait_amp[t - 1])
        breath_amp[t] = breath_amp[t - 1] + alpha * (_BREATH_AMP[labels[t]] - breath_amp[t - 1])
    steps = np.arange(num_frames)
    gait_phase = (start_phases[0] + 2 * math.pi * _GAIT_HZ / fps * steps
                  + _GAIT_PHASE_SD * np.concatenate([[0.0], np.cumsum(phase_noise[1:, 0])]))
    breath_phase = (start_phases[1] + 2 * math.pi * _BREATH_HZ / fps * steps
                    + _BREATH_PHASE_SD * np.concatenate([[0.0], np.cumsum(phase_noise[1:, 1])]))
    return np.concatenate([
        slow,
        (breath_amp * np.sin(breath_phase))[:, None],
        (gait_amp * np.cos(gait_phase))[:, None],
        (gait_amp * np.sin(gait_phase))[:, None],
    ], axis=1)


def simulate_poses(labels, seed=0, fps: float = 30.0) -> np.ndarray:
    """Simulate the pose dynamics of the module docstring along a given behaviour sequence.

    The first frame's slow pose is drawn from its behaviour's stationary distribution, with
    that behaviour's gait and breathing amplitudes and uniform oscillator phases; then each
    frame relaxes towards the mean of its own label. Any label sequence is allowed (e.g. one
    behaviour throughout, to study it alone).

    Args:
        labels: (T,) ints in 0..K−1, indices into ``BEHAVIOURS``.
        seed: int ≥ 0 or a ``np.random.Generator`` (used in place).
        fps: frames per second, > 0 (the dynamics are defined in seconds; below ≈ 10 fps
            the 4 Hz gait aliases).
    Returns:
        float64 (T, POSE_DIM) poses, columns as ``POSE_NAMES``.
    Raises:
        ValueError: on bad labels or ``fps``.
    """
    labels = _check_labels(labels)
    fps = check_float("fps", fps)
    return _simulate(_as_rng(seed), labels, fps)


# ----------------------------------------------------------------------------- rendering

_NUM_SPINE = 25
_U = np.linspace(0.0, 1.0, _NUM_SPINE)  # 0 = tail base, 1 = nose
_NECK_INDEX = 17  # u = 0.708
_WIDTH_PROFILE = np.interp(_U, [0, .15, .4, .62, .72, .8, .9, 1],
                           [.5, .9, 1, .85, .6, .62, .5, .2])
_TORSO_PROFILE = np.interp(_U, [0, .15, .4, .62, .72, 1], [.45, .85, 1, .85, .6, .4])
_HEAD_PROFILE = np.interp(_U, [0, .72, .82, .92, 1], [.6, .8, 1, .8, .45])
_HEAD_WEIGHT = np.interp(_U, [.66, .8], [0, 1])
_GAIT_TILT = 0.45  # rad
_GAIT_WAVENUMBER = 1.5 * math.pi  # rad per body length
_GAIT_ENVELOPE = np.interp(_U, [0, .72, 1], [1, .6, .2])
_ALONG_SD = 1.3  # in spine spacings
_RENDER_CHUNK = 128


def _check_poses(poses):
    poses = np.asarray(poses, np.float64)
    if poses.ndim < 1 or poses.shape[-1] != POSE_DIM:
        raise ValueError(f"poses must have shape (..., {POSE_DIM}) (columns {POSE_NAMES}), "
                         f"got {poses.shape}")
    if not np.all(np.isfinite(poses)):
        raise ValueError("poses must be finite")
    if np.any(poses[..., 1] <= 0) or np.any(poses[..., 5] <= 0):
        raise ValueError("poses must have positive length and width")
    if np.any(poses[..., 6] <= -1):
        raise ValueError("poses must have breath > -1 (it scales the body by 1 + breath)")
    return poses


def _render_chunk(poses, x, y):
    """(F, POSE_DIM) poses → (F, size, size) float64 heights."""
    kappa, length, torso, head, yaw, width, breath, g_cos, g_sin = poses.T
    ds = length / (_NUM_SPINE - 1)  # (F,)
    theta = (kappa[:, None] * length[:, None] * (_U - 0.5)
             + yaw[:, None] * _HEAD_WEIGHT
             + _GAIT_TILT * _GAIT_ENVELOPE
             * (g_sin[:, None] * np.cos(_GAIT_WAVENUMBER * _U)
                - g_cos[:, None] * np.sin(_GAIT_WAVENUMBER * _U)))  # a sin(φ − k u)
    mid = 0.5 * (theta[:, 1:] + theta[:, :-1])
    steps = ds[:, None, None] * np.stack([-np.sin(mid), np.cos(mid)], axis=-1)  # (F, N−1, 2)
    pos = np.concatenate([np.zeros((len(poses), 1, 2)), np.cumsum(steps, axis=1)], axis=1)
    # Align: the chord tail base → neck points to +y (the top row).
    chord = pos[:, _NECK_INDEX] - pos[:, 0]
    gamma = np.arctan2(-chord[:, 0], chord[:, 1])
    c, s = np.cos(gamma)[:, None], np.sin(gamma)[:, None]
    px = c * pos[..., 0] + s * pos[..., 1]  # rotation by −γ
    py = -s * pos[..., 0] + c * pos[..., 1]
    theta = theta - gamma[:, None]
    scale = 1.0 + breath[:, None]
    sd_along = _ALONG_SD * ds[:, None]  # (F, 1)
    sd_across = width[:, None] * _WIDTH_PROFILE * scale  # (F, N)
    ridge = ((1.0 - _HEAD_WEIGHT) * np.maximum(torso, 0.0)[:, None] * _TORSO_PROFILE
             + _HEAD_WEIGHT * np.maximum(head, 0.0)[:, None] * _HEAD_PROFILE) * scale
    amp = ridge * ds[:, None] / (sd_along * math.sqrt(2 * math.pi))
    # Centre: the blobs' volume-weighted mean (volume ∝ amp · sd_along · sd_across).
    vol = amp * sd_across
    total = np.maximum(vol.sum(axis=1, keepdims=True), 1e-300)
    px = px - (vol * px).sum(axis=1, keepdims=True) / total
    py = py - (vol * py).sum(axis=1, keepdims=True) / total
    tx, ty = -np.sin(theta), np.cos(theta)  # (F, N)
    dx = x[None, None, None, :] - px[:, :, None, None]  # (F, N, 1, W)
    dy = y[None, None, :, None] - py[:, :, None, None]  # (F, N, H, 1)
    along = dx * tx[..., None, None] + dy * ty[..., None, None]
    across = -dx * ty[..., None, None] + dy * tx[..., None, None]  # normal (−ty, tx)
    expo = (along / sd_along[..., None, None]) ** 2 + (across / sd_across[..., None, None]) ** 2
    return np.einsum("fn,fnhw->fhw", amp, np.exp(-0.5 * expo))


def render_mouse(poses, size: int = 30) -> np.ndarray:
    """Noise-free egocentric top-down depth frames of the body in each pose.

    See the module docstring for the body model, the alignment (nose towards row 0, the
    mouse's left on the image's left, centre of mass at the image centre) and the height
    units. Pixel (i, j) is at x = linspace(−1, 1, size)[j], y = linspace(1, −1, size)[i].
    Deterministic; the body's size is in image units, so ``size`` only sets the resolution.

    Args:
        poses: (..., POSE_DIM) poses (columns ``POSE_NAMES``), finite, length and width > 0,
            breath > −1; negative heights are drawn as 0.
        size: H = W ≥ 3 pixels.
    Returns:
        float32 (..., size, size) heights ≥ 0 (background 0).
    Raises:
        ValueError: on a bad shape, non-finite values, non-positive length or width, or a
            bad ``size``.
    """
    size = check_int("size", size, minimum=3)
    poses = _check_poses(poses)
    flat = poses.reshape(-1, POSE_DIM)
    x = np.linspace(-1.0, 1.0, size)
    y = np.linspace(1.0, -1.0, size)
    out = np.empty((flat.shape[0], size, size), np.float32)
    for start in range(0, flat.shape[0], _RENDER_CHUNK):
        out[start:start + _RENDER_CHUNK] = _render_chunk(flat[start:start + _RENDER_CHUNK], x, y)
    return out.reshape(poses.shape[:-1] + (size, size))


def flatten_frames(frames) -> np.ndarray:
    """(..., H, W) frames as (..., H·W) (row-major, a view where possible), the model input
    layout: e.g. (S, T, 30, 30) → (S, T, 900)."""
    frames = np.asarray(frames)
    if frames.ndim < 2:
        raise ValueError(f"frames must have shape (..., H, W), got {frames.shape}")
    return frames.reshape(frames.shape[:-2] + (-1,))


# ----------------------------------------------------------------------------- data set


class MouseData(NamedTuple):
    """One split of the mouse data set, S sequences of T frames of size × size pixels.

    frames: (S, T, size, size) float32, clean frames plus N(0, noise_sd²) per pixel, then
        dropped pixels set to 0 (not clipped; heights in the units of the module docstring).
    clean_frames: (S, T, size, size) float32, the noise-free rendering, ≥ 0.
    labels: (S, T) int64, the true behaviour of each frame, an index into ``BEHAVIOURS``.
    poses: (S, T, POSE_DIM) float32, the true pose of each frame (columns ``POSE_NAMES``).
    """

    frames: np.ndarray
    clean_frames: np.ndarray
    labels: np.ndarray
    poses: np.ndarray


class MouseBenchmark(NamedTuple):
    """:func:`make_mouse_dataset`'s result: ``train`` and ``test`` :class:`MouseData`;
    ``behaviours`` (names, index = label) and ``pose_names``; ``fps``; ``noise_sd`` and
    ``dropout``; ``duration_frames`` = (d_min, d_max), the run lengths in frames; and the
    (K, K) ``transition_matrix`` between behaviours."""

    train: MouseData
    test: MouseData
    behaviours: tuple
    pose_names: tuple
    fps: float
    noise_sd: float
    dropout: float
    duration_frames: tuple
    transition_matrix: np.ndarray


def _make_split(seeds, num_frames, size, fps, noise_sd, dropout, matrix, d_min, d_max):
    rngs = [np.random.default_rng(s) for s in seeds]
    labels = np.stack([_sample_labels(rng, num_frames, matrix, d_min, d_max) for rng in rngs])
    poses = np.stack([_simulate(rng, lab, fps) for rng, lab in zip(rngs, labels, strict=True)])
    clean = render_mouse(poses, size)
    frames = np.empty_like(clean)
    for i, rng in enumerate(rngs):
        frames[i] = clean[i] + noise_sd * rng.standard_normal(clean.shape[1:])
        if dropout > 0:
            frames[i][rng.random(clean.shape[1:]) < dropout] = 0.0
    return MouseData(frames, clean, labels, poses.astype(np.float32))


def make_mouse_dataset(
    seed: int = 0,
    num_train: int = 100,
    num_test: int = 20,
    num_frames: int = 100,
    fps: float = 30.0,
    noise_sd: float = 0.02,
    dropout: float = 0.0,
    size: int = 30,
    transition_matrix=None,
    duration_range=(0.2, 0.5),
) -> MouseBenchmark:
    """Generate the stand-in mouse depth videos, deterministically from ``seed``.

    Defaults: 100 training and 20 held-out windows of 100 frames (3.3 s at 30 fps, about
    ten behaviour runs each), 30×30 frames, sensor noise sd 0.02, no dropout, runs of 6–15
    frames, uniform transitions. (The 2016 data were 8 recordings × 20 min, 288,000 frames;
    scale ``num_train`` up for a comparable amount.) See the module docstring for the model,
    units and randomness; :func:`flatten_frames` gives the models' (S, T, 900) layout.

    Args:
        seed: int ≥ 0.
        num_train, num_test: sequences per split, ≥ 1.  num_frames: T ≥ 1.
        fps: frames per second, > 0.  noise_sd: pixel noise sd, ≥ 0.
        dropout: probability that a pixel reads 0, in [0, 1).  size: H = W ≥ 3.
        transition_matrix: (K, K), see :func:`sample_behaviour_labels`; ``None``: uniform
            over the other behaviours.
        duration_range: (min_s, max_s) seconds per behaviour run.
    Returns:
        :class:`MouseBenchmark`.
    Raises:
        ValueError: on any out-of-range argument.
    """
    seed = check_int("seed", seed, minimum=0)
    num_train = check_int("num_train", num_train)
    num_test = check_int("num_test", num_test)
    num_frames = check_int("num_frames", num_frames)
    fps = check_float("fps", fps)
    noise_sd = check_float("noise_sd", noise_sd, positive=False)
    dropout = check_float("dropout", dropout, positive=False)
    if dropout >= 1:
        raise ValueError(f"dropout must be < 1, got {dropout}")
    size = check_int("size", size, minimum=3)
    matrix = _check_transition_matrix(transition_matrix)
    d_min, d_max = _duration_frames(duration_range, fps)

    train_ss, test_ss = np.random.SeedSequence(seed).spawn(2)
    common = (num_frames, size, fps, noise_sd, dropout, matrix, d_min, d_max)
    train = _make_split(train_ss.spawn(num_train), *common)
    test = _make_split(test_ss.spawn(num_test), *common)
    return MouseBenchmark(train, test, BEHAVIOURS, POSE_NAMES, fps, noise_sd, dropout,
                          (d_min, d_max), matrix)


# ----------------------------------------------------------------------------- real video

_RESIZE_CHUNK = 1024  # frames per block while resizing


def _read_array(path, key):
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if key is not None:
            raise ValueError(f"key={key!r} applies to .npz and .h5 files, not .npy ({path})")
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ValueError(f"could not read {path} as a .npy array: {err}") from None
    if suffix == ".npz":
        try:
            archive = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ValueError(f"could not read {path} as a .npz archive: {err}") from None
        with archive:
            names = list(archive.files)
            if key is None:
                if len(names) != 1:
                    raise ValueError(f"{path} holds {len(names)} arrays {names}, so which one "
                                     "is the video is ambiguous: pass key=")
                key = names[0]
            elif key not in names:
                raise ValueError(f"key {key!r} not in {path} (arrays: {names})")
            try:
                return archive[key]
            except (OSError, ValueError, EOFError) as err:
                raise ValueError(f"could not read array {key!r} of {path}: {err}") from None
    if suffix in (".h5", ".hdf5"):
        try:
            import h5py
        except ImportError:
            raise ImportError(f"reading {suffix} files needs h5py, which is not installed: "
                              "pip install h5py (or save the video as .npy/.npz)") from None
        try:
            with h5py.File(path, "r") as f:
                if key is None:
                    found = []
                    f.visititems(lambda name, obj: found.append(name)
                                 if isinstance(obj, h5py.Dataset) else None)
                    if len(found) != 1:
                        raise ValueError(f"{path} holds {len(found)} datasets {found}, so "
                                         "which one is the video is ambiguous: pass key=")
                    key = found[0]
                if key not in f or not isinstance(f[key], h5py.Dataset):
                    raise ValueError(f"key {key!r} is not a dataset in {path}")
                return f[key][()]
        except OSError as err:
            raise ValueError(f"could not read {path} as an HDF5 file: {err}") from None
    raise ValueError(f"unknown extension {path.suffix!r} of {path}: expected .npy, .npz, .h5 "
                     "or .hdf5")


def _area_matrix(n_in, n_out):
    """(n_out, n_in) area-averaging weights: output pixel i averages the input over
    [i·n_in/n_out, (i + 1)·n_in/n_out) in input-pixel units; rows sum to 1."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    j = np.arange(n_in)
    overlap = np.clip(np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j),
                      0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def load_depth_video(
    path,
    key=None,
    size: int = 30,
    low_percentile: float = 0.01,
    high_percentile: float = 99.99,
    noise_sd: float = 1e-3,
    seed: int = 0,
) -> np.ndarray:
    """Load aligned, cropped top-down depth video and preprocess it as the 2016 code did.

    Input: one recording (T, H, W) or several of equal shape (R, T, H, W), frames already
    centred on the mouse and rotated to a common heading (as the MoSeq extraction writes
    them), any real dtype (e.g. uint16 mm or float heights). Per recording:

    1. resize each frame to size × size by area averaging (each output pixel is the mean of
       the input area it covers, fractional pixels weighted by their overlap; exact
       down- and up-sampling of a constant, no aliasing; a non-square H × W is stretched).
       Resizing comes first because the 2016 data were already 30×30 when scaled;
    2. x ← (x − p_low) / (p_high − p_low), with p_low, p_high the ``low_percentile`` and
       ``high_percentile`` (numpy's linear interpolation) of all the recording's resized
       pixels. This is the 2016 code's "subtract the 0.01th percentile, then divide by the
       99.99th percentile" (of the already recentred data: percentiles shift with the data),
       so p_low maps to 0 and p_high to 1;
    3. add N(0, noise_sd²) i.i.d. per pixel (the 2016 code added 1e-3 · N(0, 1)), drawn from
       ``np.random.default_rng(seed)`` over the whole output at once.

    Args:
        path: a ``.npy`` file, a ``.npz`` archive (``key`` names the array; may be omitted if
            it holds exactly one) or an ``.h5``/``.hdf5`` file (``key`` names the dataset, may
            be omitted if there is exactly one; needs ``h5py``).
        key: see ``path``; must be ``None`` for ``.npy``.
        size: output H = W ≥ 1.
        low_percentile, high_percentile: 0 ≤ low < high ≤ 100.
        noise_sd: ≥ 0.  seed: int ≥ 0.
    Returns:
        float32 (T, size, size), or (R, T, size, size) for a file of R recordings. Flatten
        with :func:`flatten_frames` for the models.
    Raises:
        ValueError: a missing file, an unknown extension, an unreadable file, an ambiguous or
            unknown ``key``, an array that is not (T, H, W) or (R, T, H, W) or not real
            numbers, non-finite values, fewer than 2 frames, a recording with p_high = p_low,
            or a bad argument.
        ImportError: an ``.h5`` file without ``h5py`` installed (``pip install h5py``).
    """
    size = check_int("size", size)
    low = check_float("low_percentile", low_percentile, positive=False)
    high = check_float("high_percentile", high_percentile, positive=False)
    if not low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low_percentile < high_percentile "
                         f"<= 100, got {low_percentile!r}, {high_percentile!r}")
    noise_sd = check_float("noise_sd", noise_sd, positive=False)
    seed = check_int("seed", seed, minimum=0)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"depth video file not found: {path}")

    video = np.asarray(_read_array(path, key))
    if video.dtype.kind not in "iuf":
        raise ValueError(f"the video must hold real numbers, got dtype {video.dtype} in {path}")
    if video.ndim not in (3, 4):
        raise ValueError(f"the video must have shape (T, H, W) or (R, T, H, W), got shape "
                         f"{video.shape} in {path}")
    if video.shape[-3] < 2:
        raise ValueError(f"the video has fewer than 2 frames (shape {video.shape}) in {path}")
    if min(video.shape) < 1:
        raise ValueError(f"the video is empty (shape {video.shape}) in {path}")
    if video.dtype.kind == "f" and not np.all(np.isfinite(video)):
        raise ValueError(f"the video holds non-finite values (NaN or inf) in {path}")

    recordings = video[None] if video.ndim == 3 else video
    num_rec, num_frames, height, width = recordings.shape
    rows, cols = _area_matrix(height, size), _area_matrix(width, size)
    out = np.empty((num_rec, num_frames, size, size), np.float64)
    for r in range(num_rec):
        for start in range(0, num_frames, _RESIZE_CHUNK):
            block = recordings[r, start:start + _RESIZE_CHUNK].astype(np.float64)
            out[r, start:start + _RESIZE_CHUNK] = rows @ block @ cols.T
        p_low, p_high = np.percentile(out[r], [low, high])
        if not p_high > p_low:
            raise ValueError(f"recording {r} of {path} is constant between the {low} and "
                             f"{high} percentiles ({p_low}), so it cannot be scaled")
        out[r] = (out[r] - p_low) / (p_high - p_low)
    if noise_sd > 0:
        out += noise_sd * np.random.default_rng(seed).standard_normal(out.shape)
    out = out.astype(np.float32)
    return out[0] if video.ndim == 3 else out
