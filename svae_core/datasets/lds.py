r"""Synthetic linear-dynamical-system data: a rotating prior, simulation, observation potentials.

Everything here is pure JAX and follows the conventions of :mod:`svae_core.inference.lds`::

    prior         x_1 ~ N(m1, Q1),   x_{t+1} = A x_t + b + w_t,   w_t ~ N(0, Q)
    observations  y_t = x_t + v_t,   v_t ~ N(0, diag(r))          (only where mask[t] is True)
    potentials    φ_t(x) = exp(h_t·x − ½ xᵀ J_t x),  J_t = diag(1/r),  h_t = y_t / r

so that ``N(y_t | x_t, diag(r)) = φ_t(x_t) · exp(c_t)`` with the x-free constant
``c_t = −½ Σ_d y_{td}² / r_d − ½ Σ_d log(2π r_d)`` (:func:`observation_log_constant`), and
``log p(y_observed) = lds_smoother(prior, potentials).log_normalizer + Σ_t c_t``.

The second half holds the LDS benchmark of Zhao & Linderman (2023, §4.1 and appendix A):
:class:`LinearGaussianSSM` (the prior above with emissions y_t = C x_t + d + N(0, R)),
:func:`random_lds` (the paper's random rotating system), :func:`sample_ssm`, the presets
:data:`LDS_GRID` and :data:`LDS_APPENDIX` with :func:`make_lds_benchmark`, and the two
reference likelihoods the paper normalises by: the exact :func:`ssm_log_likelihood` and the
static baseline :func:`static_null_log_likelihood`.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from svae_core.inference.lds import GaussianPotentials, LDSPrior
from svae_core.inference.lds import lds_filter as _lds_filter


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _rotation_block(angle, decay, dtype):
    c, s = jnp.cos(angle), jnp.sin(angle)
    return decay * jnp.array([[c, -s], [s, c]], dtype=dtype)


def rotating_lds_prior(
    dim: int = 2,
    angle: float | tuple[float, ...] = 2 * math.pi / 40,
    decay: float = 0.98,
    q: float = 0.1,
    initial_mean=None,
    initial_var: float | None = None,
    dtype=jnp.float32,
) -> LDSPrior:
    """An LDS prior whose dynamics rotate and shrink the state: A = decay · R(angle).

    For ``dim = 2``, ``A = decay · [[cos θ, −sin θ], [sin θ, cos θ]]``: the mean spirals inwards,
    turning by θ per step (period 2π/θ steps) and shrinking by ``decay``. For larger ``dim``
    the coordinates are paired, (0, 1), (2, 3), ..., and each pair gets its own 2×2 rotation
    block (block-diagonal A); an odd last coordinate decays without rotating. ``dim = 1``
    gives the scalar AR(1) prior ``x_{t+1} = decay · x_t + w_t``.

    Args:
        dim: state dimension D ≥ 1.
        angle: rotation per step in radians: one float for every block, or a sequence of
            ``dim // 2`` floats, one per block.
        decay: spectral radius of A, > 0 (every eigenvalue has modulus ``decay``).
        q: dynamics noise variance, Q = q · I, > 0.
        initial_mean: (D,) mean m1 of x_1; zeros when None.
        initial_var: Q1 = initial_var · I. When None, Q1 is the stationary covariance
            q / (1 − decay²) · I (A is decay times an orthogonal matrix), so the zero-mean
            prior is stationary: every x_t ~ N(0, Q1). Needs ``decay < 1`` in that case.
        dtype: floating dtype of every array.
    Returns:
        :class:`~svae_core.inference.LDSPrior` with m1 (D,), Q1 (D, D), A (D, D), b = 0 (D,),
        Q (D, D).
    Raises:
        ValueError: on a non-positive ``dim``, ``q``, ``decay`` or ``initial_var``, a wrong
            number of angles, a wrong ``initial_mean`` shape, or ``decay ≥ 1`` without
            ``initial_var``.
    """
    if not (isinstance(dim, int | np.integer) and dim >= 1):
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if not q > 0:
        raise ValueError(f"q (dynamics noise variance) must be > 0, got {q!r}")
    if not decay > 0:
        raise ValueError(f"decay must be > 0, got {decay!r}")
    num_blocks = dim // 2
    angles = np.atleast_1d(np.asarray(angle, dtype=np.float64))
    if angles.ndim != 1 or angles.shape[0] not in (1, max(num_blocks, 1)):
        raise ValueError(
            f"angle must be a float or a sequence of dim // 2 = {num_blocks} floats, "
            f"got shape {np.shape(angle)}"
        )
    angles = np.broadcast_to(angles, (num_blocks,))

    A = decay * jnp.eye(dim, dtype=dtype)
    for k, theta in enumerate(angles):
        A = A.at[2 * k : 2 * k + 2, 2 * k : 2 * k + 2].set(_rotation_block(theta, decay, dtype))

    if initial_var is None:
        if not decay < 1:
            raise ValueError(
                f"decay={decay!r} >= 1 has no stationary covariance; pass initial_var explicitly"
            )
        initial_var = q / (1.0 - decay**2)
    if not initial_var > 0:
        raise ValueError(f"initial_var must be > 0, got {initial_var!r}")
    if initial_mean is None:
        m1 = jnp.zeros(dim, dtype)
    else:
        m1 = jnp.asarray(initial_mean, dtype)
        if m1.shape != (dim,):
            raise ValueError(f"initial_mean must have shape (dim,)=({dim},), got {m1.shape}")
    eye = jnp.eye(dim, dtype=dtype)
    return LDSPrior(m1=m1, Q1=initial_var * eye, A=A, b=jnp.zeros(dim, dtype), Q=q * eye)


def _check_prior(prior) -> tuple[LDSPrior, int]:
    if not isinstance(prior, LDSPrior):
        prior = LDSPrior(*prior)
    m1_shape = jnp.shape(prior.m1)
    if len(m1_shape) != 1:
        raise ValueError(f"LDSPrior.m1 must have shape (D,), got {m1_shape}")
    dim = m1_shape[0]
    want = {"m1": (dim,), "Q1": (dim, dim), "A": (dim, dim), "b": (dim,), "Q": (dim, dim)}
    got = {k: jnp.shape(v) for k, v in prior._asdict().items()}
    if got != want:
        raise ValueError(f"LDSPrior shapes disagree with D={dim}: got {got}; expected {want}")
    return prior, dim


@partial(jax.jit, static_argnames=("num_timesteps", "num_sequences"))
def sample_lds(
    key: jax.Array, prior: LDSPrior, num_timesteps: int, num_sequences: int | None = None
) -> jax.Array:
    """Simulate latent trajectories from the LDS prior by ``lax.scan``.

    x_1 = m1 + chol(Q1) ε_1,  x_{t+1} = A x_t + b + chol(Q) ε_{t+1},  ε_t ~ N(0, I).

    Args:
        key: a JAX PRNG key.
        prior: :class:`~svae_core.inference.LDSPrior` with D-dimensional state.
        num_timesteps: T ≥ 1 (static).
        num_sequences: S ≥ 1 independent sequences, or None for a single one (static).
    Returns:
        (T, D) when ``num_sequences`` is None, else (S, T, D); the dtype of the prior.
    Raises:
        ValueError: on a non-positive T or S, or prior shapes that disagree.
    """
    if not (isinstance(num_timesteps, int) and num_timesteps >= 1):
        raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps!r}")
    if num_sequences is not None and not (isinstance(num_sequences, int) and num_sequences >= 1):
        raise ValueError(f"num_sequences must be a positive int or None, got {num_sequences!r}")
    prior, dim = _check_prior(prior)
    dtype = jnp.result_type(*prior, jnp.float32)
    m1, Q1, A, b, Q = (jnp.asarray(v, dtype) for v in prior)
    chol_Q1, chol_Q = jnp.linalg.cholesky(Q1), jnp.linalg.cholesky(Q)
    batch = 1 if num_sequences is None else num_sequences
    noise = jax.random.normal(key, (num_timesteps, batch, dim), dtype)

    def step(x, eps):
        x_next = x @ A.T + b + eps @ chol_Q.T
        return x_next, x_next

    x1 = m1 + noise[0] @ chol_Q1.T  # (S, D)
    _, rest = lax.scan(step, x1, noise[1:])
    states = jnp.swapaxes(jnp.concatenate([x1[None], rest]), 0, 1)  # (S, T, D)
    return states[0] if num_sequences is None else states


def sample_observations(key: jax.Array, states, obs_noise_var) -> jax.Array:
    """Direct noisy observations of latent states: y_t = x_t + v_t, v_t ~ N(0, diag(r)).

    Args:
        key: a JAX PRNG key.
        states: (T, D) latent states, or (..., T, D) (e.g. (S, T, D) from :func:`sample_lds`).
        obs_noise_var: r > 0, a scalar or (D,) per coordinate.
    Returns:
        Observations with the shape and floating dtype of ``states``.
    Raises:
        ValueError: on states that are not at least 2-D, or a bad ``obs_noise_var``.
    """
    states, r, _ = _check_observations(states, obs_noise_var, None)
    return states + jnp.sqrt(r) * jax.random.normal(key, states.shape, states.dtype)


def missing_span_mask(num_timesteps: int, start: int, stop: int) -> jax.Array:
    """(T,) observation mask with the contiguous stretch ``start <= t < stop`` unobserved.

    True = observed, as :func:`potentials_from_observations` expects. ``start == stop``
    gives an all-True mask.

    Raises:
        ValueError: unless ``0 <= start <= stop <= num_timesteps`` (all ints, T >= 1).
    """
    ints = all(isinstance(v, int | np.integer) for v in (num_timesteps, start, stop))
    if not ints or not (num_timesteps >= 1 and 0 <= start <= stop <= num_timesteps):
        raise ValueError(
            "need ints with 0 <= start <= stop <= num_timesteps and num_timesteps >= 1, got "
            f"num_timesteps={num_timesteps!r}, start={start!r}, stop={stop!r}"
        )
    t = jnp.arange(num_timesteps)
    return (t < start) | (t >= stop)


def _check_observations(y, obs_noise_var, mask):
    y = jnp.asarray(y)
    if y.ndim < 2 or y.shape[-2] < 1 or y.shape[-1] < 1:
        raise ValueError(f"y must have shape (T, D) or (..., T, D) with T, D >= 1, got {y.shape}")
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(jnp.float32)
    dim = y.shape[-1]
    r = jnp.asarray(obs_noise_var, y.dtype)
    if r.shape not in ((), (dim,)):
        raise ValueError(
            f"obs_noise_var must be a scalar or have shape (D,)=({dim},) to match y={y.shape}, "
            f"got {r.shape}"
        )
    if _is_concrete(r) and not bool(jnp.all(r > 0)):
        raise ValueError(f"obs_noise_var must be > 0, got {np.asarray(r)}")
    if mask is None:
        mask = jnp.ones(y.shape[:-1], bool)
    else:
        mask = jnp.asarray(mask)
        if mask.shape != y.shape[:-1]:
            raise ValueError(
                f"mask must have shape y.shape[:-1]={y.shape[:-1]} (one flag per time step), "
                f"got {mask.shape}"
            )
        if mask.dtype != jnp.bool_:
            if not jnp.issubdtype(mask.dtype, jnp.integer):
                raise ValueError(f"mask must be boolean (True = observed), got dtype {mask.dtype}")
            mask = mask != 0
    return y, jnp.broadcast_to(r, (dim,)), mask


def potentials_from_observations(y, obs_noise_var, mask=None) -> GaussianPotentials:
    """Gaussian potentials for direct noisy observations y_t = x_t + N(0, diag(r)).

    As a function of x_t the likelihood N(y_t | x_t, diag(r)) is, up to an x-free factor
    (see :func:`observation_log_constant`), the potential exp(h_t·x_t − ½ x_tᵀ J_t x_t) with
    J_t = diag(1/r) and h_t = y_t / r. A masked step (``mask[t]`` False) gets J_t = 0 and
    h_t = 0 exactly, whatever ``y[t]`` holds (NaN included): the step then carries no
    evidence, which the smoothers in :mod:`svae_core.inference` treat exactly as missing.

    Args:
        y: (T, D) observations; leading batch axes (..., T, D) are allowed.
        obs_noise_var: observation noise variance r > 0, a scalar or (D,) per coordinate.
        mask: (T,) (or y.shape[:-1]) booleans, True = observed; None = all observed.
    Returns:
        :class:`~svae_core.inference.GaussianPotentials` in diagonal form: J (..., T, D),
        h (..., T, D), dtype of y (float32 for integer y).
    Raises:
        ValueError: when y is not at least 2-D, obs_noise_var is not a scalar or (D,),
            or not positive, or mask does not have shape y.shape[:-1] or is not boolean.
    """
    y, r, mask = _check_observations(y, obs_noise_var, mask)
    observed = mask[..., None]
    y_safe = jnp.where(observed, y, 0)  # keeps NaNs at masked steps out of values and grads
    J = jnp.where(observed, 1 / r, 0).astype(y.dtype)
    h = jnp.where(observed, y_safe / r, 0).astype(y.dtype)
    return GaussianPotentials(J=J, h=h)


def observation_log_constant(y, obs_noise_var, mask=None) -> jax.Array:
    """Σ over observed t of log N(y_t | x_t, diag(r)) − log φ_t(x_t), which does not depend on x.

    With potentials from :func:`potentials_from_observations`,
    ``log p(y_observed) = log_normalizer + observation_log_constant(y, r, mask)``, where
    ``log_normalizer`` comes from :func:`~svae_core.inference.lds_smoother`.

    Args: as :func:`potentials_from_observations`.
    Returns:
        Array of shape y.shape[:-2] (a scalar for a single (T, D) sequence):
        Σ_{t observed} [−½ Σ_d y_{td}² / r_d − ½ Σ_d log(2π r_d)].
    """
    y, r, mask = _check_observations(y, obs_noise_var, mask)
    y_safe = jnp.where(mask[..., None], y, 0)
    per_step = -0.5 * jnp.sum(y_safe**2 / r, axis=-1) - 0.5 * jnp.sum(jnp.log(2 * jnp.pi * r))
    return jnp.sum(jnp.where(mask, per_step, 0), axis=-1)


# =============================================================================================
# The paper's benchmark: random rotating LDS with linear-Gaussian emissions
# (Zhao & Linderman 2023, §4.1 and appendix A)
# =============================================================================================


class LinearGaussianSSM(NamedTuple):
    """A linear-Gaussian state-space model: an LDS prior with affine Gaussian emissions::

        x_1 ~ N(m1, Q1),  x_{t+1} = A x_t + b + N(0, Q),  y_t = C x_t + d + N(0, R).

    prior: :class:`~svae_core.inference.LDSPrior` with D-dimensional state.
    C: (N, D) emission matrix.  d: (N,) emission offset.  R: (N, N) emission noise covariance (PD).
    """

    prior: LDSPrior
    C: jax.Array
    d: jax.Array
    R: jax.Array


def _check_ssm(ssm) -> tuple[LinearGaussianSSM, int, int]:
    if not isinstance(ssm, LinearGaussianSSM):
        ssm = LinearGaussianSSM(*ssm)
    prior, dim = _check_prior(ssm.prior)
    C_shape = jnp.shape(ssm.C)
    if len(C_shape) != 2 or C_shape[1] != dim:
        raise ValueError(f"C must have shape (N, D) with D={dim} from the prior, got {C_shape}")
    obs_dim = C_shape[0]
    if jnp.shape(ssm.d) != (obs_dim,) or jnp.shape(ssm.R) != (obs_dim, obs_dim):
        raise ValueError(
            f"emission shapes disagree with C {C_shape}: d={jnp.shape(ssm.d)} (want "
            f"({obs_dim},)), R={jnp.shape(ssm.R)} (want ({obs_dim}, {obs_dim}))"
        )
    return LinearGaussianSSM(prior, ssm.C, ssm.d, ssm.R), dim, obs_dim


def _random_orthogonal(normals: np.ndarray) -> np.ndarray:
    """Haar-distributed orthogonal matrix from a (D, D) standard-normal draw (QR, signs fixed)."""
    q_mat, r_mat = np.linalg.qr(normals)
    signs = np.sign(np.diagonal(r_mat))
    signs[signs == 0] = 1.0
    return q_mat * signs


def random_lds(
    key: jax.Array,
    latent_dim: int,
    obs_dim: int,
    q: float,
    r: float,
    *,
    max_angle: float = math.pi / 2,
    decay: float = 1.0,
    emission_scale: float = 1.0,
    dynamics_bias_scale: float = 0.0,
    emission_bias_scale: float = 0.0,
    initial_var: float = 1.0,
    dtype=jnp.float32,
) -> LinearGaussianSSM:
    """The paper's random LDS: A a rotation about a random axis, Q = q·I, R = r·I, C random.

    Zhao & Linderman (2023, §4.1) sample "A as a rotation around a random axis in the
    D-dimensional latent space". As in dynamax's ``random_rotation`` (the field's convention),
    A is a planar rotation embedded in D dimensions and conjugated by a random orthogonal
    matrix::

        A = decay · Ω · blockdiag([[cos θ, −sin θ], [sin θ, cos θ]], I_{D−2}) · Ωᵀ

    with the choices made here:

    * θ ~ Uniform(0, ``max_angle``); the default π/2 matches dynamax (a "slow" rotation: at
      least 4 steps per turn).
    * Ω Haar-distributed on O(D) (QR of a Gaussian matrix with the signs of R's diagonal
      fixed; dynamax uses QR of a uniform matrix, which is not Haar, but the idea is the same).
    * ``decay = 1`` (default) gives the paper's pure rotation: A is orthogonal, ‖A‖₂ = 1,
      every eigenvalue has modulus 1, so the state is a random walk with no stationary
      distribution and its prior covariance grows as Q1 + (t−1)·q·I. D = 1 gives A = decay.
    * Q = q·I, R = r·I.
    * C has i.i.d. N(0, ``emission_scale``²) entries. The default scale 1 is calibrated
      against the paper: with (q, r) = (0.1, 1.0) it reproduces appendix A's "True MLL"
      (−1.905 and −2.039 nats per step per dimension for (D, N) = (32, 64), (64, 128)) to
      about 0.01, whereas N(0, 1/D) entries give about −1.52.
    * b ~ N(0, ``dynamics_bias_scale``²·I) and d ~ N(0, ``emission_bias_scale``²·I); both
      default to exactly 0, as in the paper's equations (y_t ~ N(C x_t, R)). Note that with a
      pure rotation a non-zero b makes the mean drift linearly along the rotation axis.
    * m1 = 0 and Q1 = ``initial_var``·I, default I. A rotation has no stationary covariance,
      so there is no canonical Q1; I is dynamax's default initial covariance and the learned
      prior's initialisation (Q1 = q·I gives the same appendix likelihoods to within 0.01).

    The draw uses jax.random (so it is reproducible from ``key`` on any backend); the algebra
    runs in NumPy float64 and the result is cast to ``dtype``. Not traceable (no jit).

    Args:
        key: JAX PRNG key.
        latent_dim: D ≥ 1.  obs_dim: N ≥ 1.
        q: dynamics noise variance > 0.  r: emission noise variance > 0.
        max_angle: upper end of the rotation-angle range, radians.
        decay: spectral radius of A, > 0 (1 = the paper's rotation).
        emission_scale: standard deviation of C's entries, > 0.
        dynamics_bias_scale, emission_bias_scale: standard deviations of b and d, ≥ 0.
        initial_var: Q1 = initial_var · I, > 0.
        dtype: floating dtype of every array.
    Returns:
        :class:`LinearGaussianSSM` with prior (m1 (D,), Q1 (D,D), A (D,D), b (D,), Q (D,D)),
        C (N, D), d (N,), R (N, N).
    Raises:
        ValueError: on non-positive sizes, variances or scales.
    """
    for name, value in (("latent_dim", latent_dim), ("obs_dim", obs_dim)):
        if not (isinstance(value, int | np.integer) and value >= 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name, value in (("q", q), ("r", r), ("decay", decay), ("emission_scale", emission_scale),
                        ("initial_var", initial_var)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    for name, value in (("dynamics_bias_scale", dynamics_bias_scale),
                        ("emission_bias_scale", emission_bias_scale)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    D, N = int(latent_dim), int(obs_dim)
    k_angle, k_axes, k_C, k_b, k_d = jax.random.split(key, 5)
    theta = float(jax.random.uniform(k_angle, (), minval=0.0, maxval=max_angle))
    omega = _random_orthogonal(np.asarray(jax.random.normal(k_axes, (D, D)), np.float64))
    planar = np.eye(D)
    if D >= 2:
        c, s = math.cos(theta), math.sin(theta)
        planar[:2, :2] = [[c, -s], [s, c]]
    A = decay * omega @ planar @ omega.T
    C = emission_scale * np.asarray(jax.random.normal(k_C, (N, D)), np.float64)
    b = dynamics_bias_scale * np.asarray(jax.random.normal(k_b, (D,)), np.float64)
    d = emission_bias_scale * np.asarray(jax.random.normal(k_d, (N,)), np.float64)
    cast = lambda a: jnp.asarray(a, dtype)
    prior = LDSPrior(m1=cast(np.zeros(D)), Q1=cast(initial_var * np.eye(D)), A=cast(A), b=cast(b),
                     Q=cast(q * np.eye(D)))
    return LinearGaussianSSM(prior=prior, C=cast(C), d=cast(d), R=cast(r * np.eye(N)))


_ROW_BUCKET = 16


def _pad_rows(a, multiple: int = _ROW_BUCKET):
    """Pad axis 0 up to a multiple of ``multiple`` by repeating the last row, so that jitted
    batch functions compile once for every batch size in a bucket (results are sliced back)."""
    n = a.shape[0]
    idx = np.minimum(np.arange(-(-n // multiple) * multiple), n - 1)
    return a[idx]


@partial(jax.jit, static_argnames="num_timesteps")
def _sample_ssm(keys, ssm, num_timesteps):
    prior = ssm.prior
    dim, obs_dim = ssm.C.shape[1], ssm.C.shape[0]
    dtype = ssm.C.dtype
    # One standard-normal draw per sequence (from its own key): state noise, then emission noise.
    eps = jax.vmap(lambda k: jax.random.normal(k, (num_timesteps, dim + obs_dim), dtype))(keys)
    eps = jnp.swapaxes(eps, 0, 1)  # (T, S, D + N)
    chol_Q1, chol_Q = jnp.linalg.cholesky(prior.Q1), jnp.linalg.cholesky(prior.Q)
    chol_R = jnp.linalg.cholesky(ssm.R)

    def step(x, e):
        x_next = x @ prior.A.T + prior.b + e[:, :dim] @ chol_Q.T
        return x_next, x_next

    x1 = prior.m1 + eps[0, :, :dim] @ chol_Q1.T  # (S, D)
    _, rest = lax.scan(step, x1, eps[1:])
    x = jnp.swapaxes(jnp.concatenate([x1[None], rest]), 0, 1)  # (S, T, D)
    y = x @ ssm.C.T + ssm.d + jnp.swapaxes(eps[..., dim:], 0, 1) @ chol_R.T
    return x, y


def sample_ssm(
    key: jax.Array, ssm: LinearGaussianSSM, num_sequences: int, num_timesteps: int
) -> tuple[jax.Array, jax.Array]:
    """Simulate independent sequences from a :class:`LinearGaussianSSM`.

    Sequence i uses its own key ``jax.random.split(key, num_sequences)[i]``, so the first k
    sequences of a larger draw with the same key are the same as a draw of k (drawing 1000
    training sequences extends the 100 of the smaller data set).

    Args:
        key: JAX PRNG key.
        ssm: the model (D-dim state, N-dim emissions).
        num_sequences: S ≥ 1.  num_timesteps: T ≥ 1.
    Returns:
        (x (S, T, D), y (S, T, N)): latent states and observations, dtype of the model.
    Raises:
        ValueError: on non-positive S or T or inconsistent model shapes.
    """
    for name, value in (("num_sequences", num_sequences), ("num_timesteps", num_timesteps)):
        if not (isinstance(value, int | np.integer) and value >= 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    ssm, _, _ = _check_ssm(ssm)
    dtype = jnp.result_type(*ssm.prior, ssm.C, ssm.d, ssm.R, jnp.float32)
    ssm = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), ssm)
    keys = jax.random.split(key, int(num_sequences))
    x, y = _sample_ssm(_pad_rows(keys), ssm, int(num_timesteps))
    return x[:num_sequences], y[:num_sequences]


@partial(jax.jit, static_argnames="num_timesteps")
def prior_marginals(prior: LDSPrior, num_timesteps: int) -> tuple[jax.Array, jax.Array]:
    """Prior marginal moments of each x_t: m_1 = m1, P_1 = Q1, m_{t+1} = A m_t + b,
    P_{t+1} = A P_t Aᵀ + Q.

    Returns:
        (means (T, D), covs (T, D, D)).
    """
    def step(carry, _):
        m, P = carry
        nxt = (prior.A @ m + prior.b, prior.A @ P @ prior.A.T + prior.Q)
        return nxt, carry

    _, (means, covs) = lax.scan(step, (prior.m1, prior.Q1), None, length=num_timesteps)
    return means, 0.5 * (covs + jnp.swapaxes(covs, -1, -2))


def _prepare_emissions(ssm, y, mask):
    """Validate and promote; flatten leading axes of y to one batch axis."""
    ssm, dim, obs_dim = _check_ssm(ssm)
    y = jnp.asarray(y)
    if y.ndim < 2 or y.shape[-1] != obs_dim or y.shape[-2] < 1:
        raise ValueError(f"y must have shape (..., T, N) with N={obs_dim} and T>=1, got {y.shape}")
    if mask is None:
        mask = jnp.ones(y.shape[:-1], bool)
    else:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            if not jnp.issubdtype(mask.dtype, jnp.integer):
                raise ValueError(f"mask must be boolean (True = observed), got dtype {mask.dtype}")
            mask = mask != 0
        if mask.shape == y.shape[-2:-1]:
            mask = jnp.broadcast_to(mask, y.shape[:-1])
        elif mask.shape != y.shape[:-1]:
            raise ValueError(
                f"mask must have shape y.shape[:-1]={y.shape[:-1]} or (T,)={y.shape[-2:-1]}, "
                f"got {mask.shape}"
            )
    dtype = jnp.result_type(*ssm.prior, ssm.C, ssm.d, ssm.R, y, jnp.float32)
    ssm = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), ssm)
    batch_shape = y.shape[:-2]
    T = y.shape[-2]
    y = jnp.asarray(y, dtype).reshape(-1, T, obs_dim)
    mask = mask.reshape(-1, T)
    return ssm, y, mask, batch_shape


def _whitened_emissions(ssm):
    """L = chol(R), W = L⁻¹C (N, D), so that CᵀR⁻¹C = WᵀW."""
    chol_R = jnp.linalg.cholesky(ssm.R)
    W = jax.scipy.linalg.solve_triangular(chol_R, ssm.C, lower=True)
    return chol_R, W


@partial(jax.jit, static_argnames=("method", "batch_size"))
def _ssm_log_likelihood(ssm, y, mask, method, batch_size):
    chol_R, W = _whitened_emissions(ssm)
    obs_dim = W.shape[0]
    J_obs = W.T @ W
    log_det_2pi_R = 2 * jnp.sum(jnp.log(jnp.diagonal(chol_R))) + obs_dim * jnp.log(2 * jnp.pi)

    def one(args):
        y_s, m_s = args  # (T, N), (T,)
        resid = jnp.where(m_s[:, None], y_s - ssm.d, 0)  # keeps NaN at masked steps out
        white = jax.scipy.linalg.solve_triangular(chol_R, resid.T, lower=True).T  # (T, N)
        keep = m_s.astype(y_s.dtype)
        h = (white @ W) * keep[:, None]
        J = keep[:, None, None] * J_obs
        const = jnp.sum(keep * (-0.5 * jnp.sum(white**2, axis=-1) - 0.5 * log_det_2pi_R))
        filtered = _lds_filter(ssm.prior, GaussianPotentials(J, h), method=method)
        return filtered.log_normalizer + const

    return lax.map(one, (y, mask), batch_size=batch_size)


def ssm_log_likelihood(
    ssm: LinearGaussianSSM, y, mask=None, *, method: str = "sequential", batch_size: int = 8
) -> jax.Array:
    """Exact log p(y_{1:T}) of each sequence under a :class:`LinearGaussianSSM` (nats).

    As a function of x_t, N(y_t; C x_t + d, R) = exp(c_t) · exp(h_t·x_t − ½ x_tᵀ J_t x_t) with

        J_t = CᵀR⁻¹C,   h_t = CᵀR⁻¹(y_t − d),
        c_t = −½ (y_t − d)ᵀR⁻¹(y_t − d) − ½ log det(2πR),

    so log p(y) = log E_p(x)[∏_t φ_t(x_t)] + Σ_t c_t, the first term being
    :func:`~svae_core.inference.lds_filter`'s log-normalizer. Unobserved steps (``mask``
    False) get J_t = 0, h_t = 0 and no c_t: the result is then the exact log-density of the
    observed steps only (marginalising the rest), whatever y holds there (NaN included).

    Args:
        ssm: the model.
        y: (T, N) one sequence, or (..., T, N) a batch, e.g. (S, T, N).
        mask: booleans, True = observed, of shape y.shape[:-1] or (T,) (shared by all
            sequences); None = all observed.
        method: the filter's ``"sequential"`` (default: compiles in a fraction of the time,
            and this is a one-off evaluation) or ``"parallel"`` implementation; they agree to
            rounding.
        batch_size: sequences per vectorised chunk (bounds memory: each holds (T, D, D)
            arrays). The batch is padded to a multiple of it, so one compilation serves every
            number of sequences.
    Returns:
        y.shape[:-2]: nats per sequence (a scalar for one sequence). Divide by T·N for the
        paper's unit (see :func:`svae_core.evaluation.per_step_per_dim`).
    Raises:
        ValueError: on inconsistent shapes or a non-boolean mask.
    """
    ssm, y2, mask2, batch_shape = _prepare_emissions(ssm, y, mask)
    if not (isinstance(batch_size, int | np.integer) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    num = y2.shape[0]
    out = _ssm_log_likelihood(ssm, _pad_rows(y2, batch_size), _pad_rows(mask2, batch_size),
                              method, int(batch_size))
    return out[:num].reshape(batch_shape)


@jax.jit
def _static_null_log_likelihood(ssm, y, mask):
    T, obs_dim = y.shape[-2:]
    means, covs = prior_marginals(ssm.prior, T)
    mean_y = means @ ssm.C.T + ssm.d  # (T, N)
    cov_y = jnp.einsum("nd,tde,me->tnm", ssm.C, covs, ssm.C) + ssm.R  # (T, N, N)
    chol = jnp.linalg.cholesky(0.5 * (cov_y + jnp.swapaxes(cov_y, -1, -2)))
    resid = jnp.where(mask[..., None], y - mean_y, 0)  # (S, T, N)
    white = jax.vmap(
        lambda L, e: jax.scipy.linalg.solve_triangular(L, e.T, lower=True).T,
        in_axes=(0, 1), out_axes=1,
    )(chol, resid)
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)  # (T,)
    per_step = -0.5 * (jnp.sum(white**2, axis=-1) + log_det + obs_dim * jnp.log(2 * jnp.pi))
    return jnp.sum(jnp.where(mask, per_step, 0), axis=-1)


def static_null_log_likelihood(ssm: LinearGaussianSSM, y, mask=None) -> jax.Array:
    """The paper's static baseline ("null model"): log ∏_t N(y_t; C m_t + d, C P_t Cᵀ + R).

    Zhao & Linderman (2023, §4.1) compare against the best model that ignores time: each x_t
    is drawn independently from its prior marginal N(m_t, P_t) (see :func:`prior_marginals`)
    and emitted through the true C, d, R, so p_st(y) = ∏_t N(y_t; C m_t + d, C P_t Cᵀ + R),
    i.e. the true marginal of each y_t with all correlations across time dropped. The paper
    prints the covariance as "Q̂ + CRCᵀ", an evident typo for C Q̂ Cᵀ + R (Q̂ = P_t is a D×D
    latent covariance and R an N×N emission covariance, so only C Q̂ Cᵀ + R is the marginal
    covariance of y_t). The marginals are per time step: with the paper's rotation the prior
    covariance grows, P_t = Q1 + (t−1)·q·I, so there is no single Q̂.

    Since E_true[log p_true(y) − log p_st(y)] = KL(p_true ‖ p_st) ≥ 0, the null likelihood is
    below the true one on average (not necessarily for every sequence).

    Args:
        ssm: the model.
        y: (T, N) or (..., T, N) observations.
        mask: booleans, y.shape[:-1] or (T,); unobserved steps contribute 0. None = all.
    Returns:
        y.shape[:-2]: nats per sequence.
    """
    ssm, y2, mask2, batch_shape = _prepare_emissions(ssm, y, mask)
    out = _static_null_log_likelihood(ssm, _pad_rows(y2), _pad_rows(mask2))
    return out[: y2.shape[0]].reshape(batch_shape)


# ----------------------------------------------------------------------------- presets


@dataclasses.dataclass(frozen=True)
class LDSSetting:
    """One cell of the paper's LDS benchmark: latent dim D, observation dim N, Q = q·I, R = r·I.

    ``name`` is a stable identifier, e.g. ``"D3_N5_q0.1_r0.1"`` (filled in when omitted).
    """

    latent_dim: int
    obs_dim: int
    q: float
    r: float
    name: str = ""

    def __post_init__(self):
        if not self.name:
            object.__setattr__(
                self, "name", f"D{self.latent_dim}_N{self.obs_dim}_q{self.q:g}_r{self.r:g}"
            )


#: The §4.1 grid, (q, r) outer, (D, N) inner: 9 settings, T = 200, 100 training sequences.
LDS_GRID: tuple[LDSSetting, ...] = tuple(
    LDSSetting(D, N, q, r)
    for q, r in ((0.1, 0.1), (0.1, 1.0), (0.01, 10.0))
    for D, N in ((3, 5), (5, 10), (10, 20))
)

#: Appendix A: (D, N) = (32, 64) and (64, 128). The appendix does not state (q, r); (0.1, 1.0)
#: is the grid's middle noise level and, with :func:`random_lds`'s defaults, reproduces its
#: Table 1 "True MLL" (−1.905, −2.039 nats per step per dimension) to about 0.01. The paper
#: sampled 10× more training data for the 64-dimensional one (``num_train=1000``).
LDS_APPENDIX: tuple[LDSSetting, ...] = (
    LDSSetting(32, 64, 0.1, 1.0),
    LDSSetting(64, 128, 0.1, 1.0),
)

LDS_SETTINGS: dict[str, LDSSetting] = {s.name: s for s in LDS_GRID + LDS_APPENDIX}


def lds_setting(name: str) -> LDSSetting:
    """The preset called ``name`` (one of ``LDS_SETTINGS``)."""
    if name not in LDS_SETTINGS:
        raise ValueError(f"unknown LDS setting {name!r}; choose from {sorted(LDS_SETTINGS)}")
    return LDS_SETTINGS[name]


class LDSBenchmark(NamedTuple):
    """A generated data set: the true model, train/test observations and their latents.

    ssm: :class:`LinearGaussianSSM`.  y_train (S_train, T, N), y_test (S_test, T, N),
    x_train (S_train, T, D), x_test (S_test, T, D).  setting: the :class:`LDSSetting`.
    """

    ssm: LinearGaussianSSM
    y_train: jax.Array
    y_test: jax.Array
    x_train: jax.Array
    x_test: jax.Array
    setting: LDSSetting


def make_lds_benchmark(
    setting: LDSSetting | str,
    seed: int,
    num_train: int = 100,
    num_test: int = 100,
    num_timesteps: int = 200,
    dtype=jnp.float32,
) -> LDSBenchmark:
    """Generate the paper's data for one setting, deterministically from ``seed``.

    ``PRNGKey(seed)`` splits into (model, train, test) keys: the model comes from
    :func:`random_lds` (defaults documented there), the sequences from :func:`sample_ssm`.
    Consequences: the same seed gives the same A and C (and the same standard-normal noise)
    across settings of equal (D, N), differing only in q and r; the test set does not depend
    on ``num_train``; a larger ``num_train`` extends the smaller training set.

    Args:
        setting: an :class:`LDSSetting` or its name.
        seed: int.
        num_train, num_test: sequences in each split (≥ 1).  num_timesteps: T (paper: 200).
        dtype: floating dtype.
    Returns:
        :class:`LDSBenchmark`.
    """
    if isinstance(setting, str):
        setting = lds_setting(setting)
    k_model, k_train, k_test = jax.random.split(jax.random.PRNGKey(seed), 3)
    ssm = random_lds(k_model, setting.latent_dim, setting.obs_dim, setting.q, setting.r,
                     dtype=dtype)
    x_train, y_train = sample_ssm(k_train, ssm, num_train, num_timesteps)
    x_test, y_test = sample_ssm(k_test, ssm, num_test, num_timesteps)
    return LDSBenchmark(ssm, y_train, y_test, x_train, x_test, setting)


__all__ = [
    "LDS_APPENDIX",
    "LDS_GRID",
    "LDS_SETTINGS",
    "LDSBenchmark",
    "LDSSetting",
    "LinearGaussianSSM",
    "lds_setting",
    "make_lds_benchmark",
    "missing_span_mask",
    "observation_log_constant",
    "potentials_from_observations",
    "prior_marginals",
    "random_lds",
    "rotating_lds_prior",
    "sample_lds",
    "sample_observations",
    "sample_ssm",
    "ssm_log_likelihood",
    "static_null_log_likelihood",
]
