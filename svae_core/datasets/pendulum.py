r"""Noisy videos of a swinging pendulum: the synthetic data set of Zhao & Linderman (2023, §4.3).

The paper renders "a 24×24 pixel movie of a swinging pendulum ... with noise", after
Schirmer et al. (2022), whose data files were not published; this module is a re-implementation
in NumPy, deterministic given a seed::

    dynamics   θ'' = −(g/l) sin θ − γ θ'     (friction γ ≥ 0, default 0; no process noise;
                                             RK4 on substeps)
    frames     x_t = render(θ_t) + ε_t,      ε_t ~ N(0, noise_std² I) i.i.d. per pixel

Conventions. θ in radians, 0 = hanging straight down, positive = bob to the right of the
pivot (so θ grows counter-clockwise on screen, where the row index grows downwards, as
``imshow`` shows it). ω = dθ/dt in rad/s. Time in seconds. The pivot sits at the image
centre ((size − 1)/2, (size − 1)/2) in pixel-index coordinates (row, column), and the bob's
centre at ``row = c + L cos θ``, ``col = c + L sin θ`` with L = ``arm_length · size`` pixels.
Angles are unwrapped (continuous in time); use sin θ, cos θ as regression targets.

Defaults: a point-mass pendulum with g/l = 9.81 s⁻² (l = 1 m), frames rendered every
``dt = 0.05`` s and, as in the paper, every second rendered frame kept (``frame_skip = 2``).
(The RKN generator of Becker et al. 2019, which Schirmer et al.'s builds on, models a rod
with optional friction and transition noise; the paper states none of those details, so this
one is the textbook point-mass pendulum without transition noise, frictionless at the default
``friction = 0`` and damped for γ > 0, where a swing's energy decays at the rate γω²; the
book's experiment, :mod:`svae_core.experiments.pendulum`, renders γ = 0.1 s⁻¹.) Kept
frames are then 0.1 s apart and a small swing lasts 2π/√(g/l) ≈ 2.006 s ≈ 20 frames (γ = 0;
friction lengthens it by the factor 1/√(1 − γ²l/(4g)), 1.0001 at γ = 0.1 s⁻¹). Larger swings
last longer (≈ 24 frames at the frictionless default data set's median amplitude of 90°, ≈ 42
at its largest, 163°): 100 frames show two to five periods.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from svae_core.datasets._validation import check_float, check_int

__all__ = [
    "PendulumBenchmark",
    "PendulumData",
    "make_pendulum_dataset",
    "pendulum_energy",
    "render_frames",
    "simulate_pendulum",
]


# ----------------------------------------------------------------------------- dynamics


def simulate_pendulum(
    theta0, omega0, num_frames: int, dt: float, g_over_l: float = 9.81, substeps: int = 40,
    friction: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Integrate θ'' = −(g/l) sin θ − γ θ' with classical RK4 and sample it every ``dt`` seconds.

    Each interval of ``dt`` is crossed in ``substeps`` RK4 steps of ``dt / substeps``; RK4's
    global error is O(h⁴): with h = 2.5 ms (the defaults, dt = 0.1 s) and no friction the
    energy of a swing of amplitude up to 3 rad drifts by < 1e-10 · g/l over 100 frames (2e-8
    with h = 5 ms). All sequences advance together (vectorised over the broadcast shape of
    ``theta0``, ``omega0``).

    Args:
        theta0: initial angle(s) θ(0) in rad (0 = hanging down), scalar or array.
        omega0: initial angular velocity ω(0) in rad/s, broadcastable against ``theta0``.
        num_frames: T ≥ 1 samples, at t = 0, dt, ..., (T − 1)·dt (the first is the initial state).
        dt: seconds between samples, > 0.
        g_over_l: g/l in s⁻², > 0 (small-angle period 2π/√(g/l) s).
        substeps: RK4 steps per sample interval, ≥ 1.
        friction: γ in s⁻¹, ≥ 0 (default 0: the energy is conserved; γ > 0 lets it decay,
            as the RKN generator's friction option does).
    Returns:
        (angle, velocity), each float64 of shape ``broadcast(theta0, omega0).shape + (T,)``,
        in rad and rad/s; the angle is unwrapped.
    Raises:
        ValueError: on non-finite initial conditions, shapes that do not broadcast, a
            non-positive ``num_frames``, ``dt``, ``g_over_l`` or ``substeps``, or a negative
            or non-finite ``friction``.
    """
    num_frames = check_int("num_frames", num_frames)
    substeps = check_int("substeps", substeps)
    dt = check_float("dt", dt)
    k = check_float("g_over_l", g_over_l)
    gamma = check_float("friction", friction, positive=False)
    try:
        theta, omega = np.broadcast_arrays(np.asarray(theta0, np.float64),
                                           np.asarray(omega0, np.float64))
    except ValueError as err:
        raise ValueError(f"theta0 {np.shape(theta0)} and omega0 {np.shape(omega0)} do not "
                         f"broadcast: {err}") from None
    if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(omega))):
        raise ValueError("theta0 and omega0 must be finite")
    theta, omega = theta.copy(), omega.copy()
    h = dt / substeps

    angle = np.empty(theta.shape + (num_frames,))
    velocity = np.empty_like(angle)
    angle[..., 0], velocity[..., 0] = theta, omega
    for t in range(1, num_frames):
        for _ in range(substeps):
            # Classical RK4 on (θ, ω)' = (ω, −k sin θ − γω).
            a1 = omega
            b1 = -k * np.sin(theta) - gamma * a1
            a2 = omega + 0.5 * h * b1
            b2 = -k * np.sin(theta + 0.5 * h * a1) - gamma * a2
            a3 = omega + 0.5 * h * b2
            b3 = -k * np.sin(theta + 0.5 * h * a2) - gamma * a3
            a4 = omega + h * b3
            b4 = -k * np.sin(theta + h * a3) - gamma * a4
            theta = theta + (h / 6) * (a1 + 2 * a2 + 2 * a3 + a4)
            omega = omega + (h / 6) * (b1 + 2 * b2 + 2 * b3 + b4)
        angle[..., t], velocity[..., t] = theta, omega
    return angle, velocity


def pendulum_energy(angle, velocity, g_over_l: float = 9.81) -> np.ndarray:
    """Energy per unit m·l², E = ½ω² − (g/l) cos θ (s⁻²).

    Without friction the dynamics conserve it; with friction γ it decays, dE/dt = −γω².
    E < g/l: the pendulum swings; E > g/l: it rotates over the top.
    """
    angle, velocity = np.asarray(angle, np.float64), np.asarray(velocity, np.float64)
    return 0.5 * velocity**2 - float(g_over_l) * np.cos(angle)


# ----------------------------------------------------------------------------- rendering


def render_frames(
    angle, size: int = 24, arm_length: float = 0.375, bob_sigma: float = 0.0625
) -> np.ndarray:
    """Noise-free images of the bob: a Gaussian blob of peak 1 on a black background.

    Pixel (i, j) (row i, column j, centres at integer indices) has intensity
    exp(−[(i − r)² + (j − q)²] / (2 s²)) with the bob centre r = c + L cos θ, q = c + L sin θ,
    c = (size − 1)/2, L = ``arm_length · size`` and s = ``bob_sigma · size`` pixels (at the
    defaults and size 24: L = 9 px, s = 1.5 px, the blob ≥ 2.4 px = 1.6 s inside the border, so
    it is never cut off by more than a few percent of its mass). Only the bob is drawn, not
    the rod: one frame then determines θ, and no frame determines ω.

    Args:
        angle: (...,) angles in rad, e.g. (S, T).
        size: H = W ≥ 3 pixels.
        arm_length: pivot-to-bob distance as a fraction of ``size``, in (0, 0.5].
        bob_sigma: blob standard deviation as a fraction of ``size``, > 0.
    Returns:
        float32 (..., size, size), values in [0, 1].
    Raises:
        ValueError: on a bad ``size``, ``arm_length`` or ``bob_sigma``, or non-finite angles.
    """
    size = check_int("size", size, minimum=3)
    arm_length = check_float("arm_length", arm_length)
    if arm_length > 0.5:
        raise ValueError(f"arm_length must be <= 0.5 (a fraction of size), got {arm_length}")
    sigma = check_float("bob_sigma", bob_sigma) * size
    angle = np.asarray(angle, np.float64)
    if not np.all(np.isfinite(angle)):
        raise ValueError("angle must be finite")
    c, L = (size - 1) / 2, arm_length * size
    row, col = c + L * np.cos(angle), c + L * np.sin(angle)
    pix = np.arange(size, dtype=np.float64)
    # The blob is separable: exp(−(Δi² + Δj²)/2s²) = g(Δi) g(Δj), an outer product per frame.
    g_row = np.exp(-0.5 * ((pix - row[..., None]) / sigma) ** 2)  # (..., H)
    g_col = np.exp(-0.5 * ((pix - col[..., None]) / sigma) ** 2)  # (..., W)
    return (g_row[..., :, None] * g_col[..., None, :]).astype(np.float32)


# ----------------------------------------------------------------------------- data set


class PendulumData(NamedTuple):
    """One split of the pendulum data set.

    frames: (S, T, H, W) float32, clean frames plus N(0, noise_std²) per pixel (not clipped).
    clean_frames: (S, T, H, W) float32, the noise-free rendering, values in [0, 1].
    angle: (S, T) float32, θ in rad (0 = hanging down, unwrapped).
    velocity: (S, T) float32, ω = dθ/dt in rad/s.
    """

    frames: np.ndarray
    clean_frames: np.ndarray
    angle: np.ndarray
    velocity: np.ndarray


class PendulumBenchmark(NamedTuple):
    """:func:`make_pendulum_dataset`'s result: ``train`` and ``test`` :class:`PendulumData`,
    and ``config``, a dict of every generating parameter plus ``frame_interval`` (s between
    kept frames) and ``small_angle_period`` (s) / ``small_angle_period_frames``."""

    train: PendulumData
    test: PendulumData
    config: dict


def _make_split(seeds, num_frames, size, noise_std, interval, g_over_l, substeps, max_angle,
                speed_fraction, arm_length, bob_sigma, friction):
    rngs = [np.random.default_rng(s) for s in seeds]
    # Per sequence: θ0 ~ U(−max_angle, max_angle), ω0 = u · speed_fraction · ω_sep(θ0) with
    # u ~ U(−1, 1) and ω_sep(θ0) = 2√(g/l) cos(θ0/2) the speed that would just carry the bob
    # over the top (E = g/l); speed_fraction < 1 therefore guarantees a swing.
    draws = np.array([rng.uniform(-1.0, 1.0, size=2) for rng in rngs])  # (S, 2)
    theta0 = max_angle * draws[:, 0]
    omega0 = draws[:, 1] * speed_fraction * 2 * math.sqrt(g_over_l) * np.cos(theta0 / 2)
    angle, velocity = simulate_pendulum(theta0, omega0, num_frames, interval, g_over_l, substeps,
                                        friction)
    clean = render_frames(angle, size, arm_length, bob_sigma)
    noise = np.stack([rng.standard_normal((num_frames, size, size)) for rng in rngs])
    frames = (clean + noise_std * noise).astype(np.float32)
    return PendulumData(frames, clean, angle.astype(np.float32), velocity.astype(np.float32))


def make_pendulum_dataset(
    seed: int = 0,
    num_train: int = 100,
    num_test: int = 100,
    num_frames: int = 100,
    size: int = 24,
    noise_std: float = 0.1,
    dt: float = 0.05,
    frame_skip: int = 2,
    g_over_l: float = 9.81,
    substeps: int = 20,
    max_angle: float = 0.9 * math.pi,
    speed_fraction: float = 0.5,
    arm_length: float = 0.375,
    bob_sigma: float = 0.0625,
    friction: float = 0.0,
) -> PendulumBenchmark:
    """Generate the §4.3 pendulum videos, deterministically from ``seed`` (paper: 100 × 100).

    Frames are rendered every ``dt`` seconds and every ``frame_skip``-th one is kept (the
    paper kept every second one), so kept frames are ``dt · frame_skip`` seconds apart; only
    the kept frames are simulated at full RK4 accuracy (``substeps`` per *rendered* interval)
    and drawn. Initial state per sequence: θ0 ~ U(−max_angle, max_angle) (default ±162°, so the
    small-angle approximation fails for most sequences) and ω0 = u · speed_fraction · ω_sep(θ0),
    u ~ U(−1, 1), where ω_sep(θ0) = 2√(g/l) cos(θ0/2) is the speed at which the bob would just
    reach the top. ``speed_fraction < 1`` (default 0.5) guarantees every sequence swings
    (|θ| < π); ``speed_fraction > 1`` lets some rotate. Noise: ``noise_std`` (default 0.1,
    a tenth of the bob's peak brightness: the bob stays visible in every frame while single
    pixels are unreliable) i.i.d. Gaussian per pixel and frame, the same in every frame.

    Randomness: ``SeedSequence(seed)`` spawns a train and a test stream, each spawning one
    stream per sequence. So the test set does not depend on ``num_train``, and a larger
    ``num_train`` (or ``num_test``) extends the smaller set; only ``noise_std``,
    ``num_frames`` and the dynamics parameters change existing sequences.

    Args:
        seed: int ≥ 0.
        num_train, num_test: sequences per split, ≥ 1.  num_frames: kept frames T ≥ 1.
        size: H = W pixels, ≥ 3.  noise_std: pixel noise standard deviation, ≥ 0.
        dt: seconds between rendered frames, > 0.  frame_skip: keep every k-th, ≥ 1.
        g_over_l: s⁻², > 0.  substeps: RK4 steps per rendered interval, ≥ 1.
        max_angle: in (0, π], rad.  speed_fraction: ≥ 0.
        arm_length, bob_sigma: see :func:`render_frames`.
        friction: γ in s⁻¹, ≥ 0 (default 0, frictionless); see :func:`simulate_pendulum`.
    Returns:
        :class:`PendulumBenchmark`.
    Raises:
        ValueError: on any out-of-range argument.
    """
    seed = check_int("seed", seed, minimum=0)
    num_train = check_int("num_train", num_train)
    num_test = check_int("num_test", num_test)
    num_frames = check_int("num_frames", num_frames)
    size = check_int("size", size, minimum=3)
    frame_skip = check_int("frame_skip", frame_skip)
    substeps = check_int("substeps", substeps)
    dt = check_float("dt", dt)
    g_over_l = check_float("g_over_l", g_over_l)
    max_angle = check_float("max_angle", max_angle)
    friction = check_float("friction", friction, positive=False)
    if max_angle > math.pi:
        raise ValueError(f"max_angle must be in (0, π], got {max_angle}")
    noise_std = check_float("noise_std", noise_std, positive=False)
    speed_fraction = check_float("speed_fraction", speed_fraction, positive=False)
    render_frames(np.zeros(0), size, arm_length, bob_sigma)  # validates the rendering arguments

    interval = dt * frame_skip
    period = 2 * math.pi / math.sqrt(g_over_l)
    config = dict(
        seed=seed, num_train=num_train, num_test=num_test, num_frames=num_frames, size=size,
        noise_std=noise_std, dt=dt, frame_skip=frame_skip, frame_interval=interval,
        g_over_l=g_over_l, substeps=substeps, max_angle=max_angle,
        speed_fraction=speed_fraction, arm_length=float(arm_length),
        bob_sigma=float(bob_sigma), friction=friction, small_angle_period=period,
        small_angle_period_frames=period / interval,
    )
    train_ss, test_ss = np.random.SeedSequence(seed).spawn(2)
    common = (num_frames, size, noise_std, interval, g_over_l, substeps * frame_skip,
              max_angle, speed_fraction, float(arm_length), float(bob_sigma), friction)
    train = _make_split(train_ss.spawn(num_train), *common)
    test = _make_split(test_ss.spawn(num_test), *common)
    return PendulumBenchmark(train, test, config)
