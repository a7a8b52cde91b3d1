r"""Synthetic linear-dynamical-system data: a rotating prior, simulation, observation potentials.

Everything here is pure JAX and follows the conventions of :mod:`svae_core.inference.lds`::

    prior         x_1 ~ N(m1, Q1),   x_{t+1} = A x_t + b + w_t,   w_t ~ N(0, Q)
    observations  y_t = x_t + v_t,   v_t ~ N(0, diag(r))          (only where mask[t] is True)
    potentials    φ_t(x) = exp(h_t·x − ½ xᵀ J_t x),  J_t = diag(1/r),  h_t = y_t / r

so that ``N(y_t | x_t, diag(r)) = φ_t(x_t) · exp(c_t)`` with the x-free constant
``c_t = −½ Σ_d y_{td}² / r_d − ½ Σ_d log(2π r_d)`` (:func:`observation_log_constant`), and
``log p(y_observed) = lds_smoother(prior, potentials).log_normalizer + Σ_t c_t``.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from svae_core.inference.lds import GaussianPotentials, LDSPrior


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


__all__ = [
    "missing_span_mask",
    "observation_log_constant",
    "potentials_from_observations",
    "rotating_lds_prior",
    "sample_lds",
    "sample_observations",
]
