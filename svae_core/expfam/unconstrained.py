r"""Unconstrained Dirichlet, NIW and MNIW coordinates: what a practitioner hands to Adam.

Every real vector maps to a valid distribution, so a gradient step can never leave the
domain (the property natural-gradient SVI gets from convex combinations instead)::

    Dirichlet   log_alpha (K,)                 α = exp(log_alpha)
    NIW         m (D,)                         mean of μ
                log_kappa ()                   κ = exp(log_kappa)
                scale_tril (D, D)              S = L Lᵀ, L = tril(scale_tril) with its
                                               diagonal replaced by exp(diagonal)
                log_dof_excess ()              ν = D − 1 + exp(log_dof_excess)
    MNIW        M (D_out, D_in)                mean of A
                precision_tril (D_in, D_in)    K = L Lᵀ, L = tril(precision_tril) with its
                                               diagonal replaced by exp(diagonal)
                scale_tril (D_out, D_out)      S = L Lᵀ, likewise
                log_dof_excess ()              ν = D_out − 1 + exp(log_dof_excess)

The strictly upper triangles of ``scale_tril`` and ``precision_tril`` are ignored (they
receive zero gradient).
Routines act on one member; vmap over a batch (e.g. the K components of a mixture).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from svae_core.expfam import dirichlet, mniw, niw
from svae_core.expfam.dirichlet import DirichletNatural
from svae_core.expfam.mniw import MNIWNatural
from svae_core.expfam.niw import NIWNatural


class NIWUnconstrained(NamedTuple):
    """m (D,), log_kappa (), scale_tril (D, D), log_dof_excess () (module docstring)."""

    m: jax.Array
    log_kappa: jax.Array
    scale_tril: jax.Array
    log_dof_excess: jax.Array


class MNIWUnconstrained(NamedTuple):
    """M (D_out, D_in), precision_tril (D_in, D_in), scale_tril (D_out, D_out),
    log_dof_excess () (module docstring)."""

    M: jax.Array
    precision_tril: jax.Array
    scale_tril: jax.Array
    log_dof_excess: jax.Array


def _tril_exp_diag(raw):
    """(D, D) real -> the lower-triangular L with positive diagonal: strict lower triangle of
    ``raw`` kept, diagonal exponentiated, strict upper triangle dropped."""
    return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diagonal(raw)))


def _tril_log_diag(L):
    """Inverse of :func:`_tril_exp_diag` on lower-triangular L with positive diagonal."""
    return jnp.tril(L, -1) + jnp.diag(jnp.log(jnp.diagonal(L)))


def dirichlet_from_unconstrained(log_alpha) -> DirichletNatural:
    """log α (K,) -> the Dirichlet's natural parameter α − 1."""
    return dirichlet.from_standard(jnp.exp(log_alpha))


def dirichlet_to_unconstrained(eta: DirichletNatural) -> jax.Array:
    """The Dirichlet's natural parameter -> log α (K,)."""
    return jnp.log(dirichlet.to_standard(eta))


def niw_from_unconstrained(raw: NIWUnconstrained) -> NIWNatural:
    """Unconstrained coordinates -> NIWNatural (S + κmmᵀ, κm, κ, ν)."""
    D = raw.m.shape[-1]
    L = _tril_exp_diag(raw.scale_tril)
    return niw.from_standard(raw.m, jnp.exp(raw.log_kappa), L @ L.T,
                             D - 1.0 + jnp.exp(raw.log_dof_excess))


def niw_to_unconstrained(eta: NIWNatural) -> NIWUnconstrained:
    """NIWNatural -> unconstrained coordinates (the inverse of :func:`niw_from_unconstrained`
    for members in the domain)."""
    std = niw.to_standard(eta)
    D = std.m.shape[-1]
    raw_L = _tril_log_diag(jnp.linalg.cholesky(std.S))
    return NIWUnconstrained(std.m, jnp.log(std.kappa), raw_L, jnp.log(std.nu - (D - 1.0)))


def mniw_from_unconstrained(raw: MNIWUnconstrained) -> MNIWNatural:
    """Unconstrained coordinates -> MNIWNatural (S + M K Mᵀ, M K, K, ν)."""
    d_out = raw.M.shape[-2]
    L_K = _tril_exp_diag(raw.precision_tril)
    L_S = _tril_exp_diag(raw.scale_tril)
    return mniw.from_standard(raw.M, L_K @ L_K.T, L_S @ L_S.T,
                              d_out - 1.0 + jnp.exp(raw.log_dof_excess))


def mniw_to_unconstrained(eta: MNIWNatural) -> MNIWUnconstrained:
    """MNIWNatural -> unconstrained coordinates (the inverse of
    :func:`mniw_from_unconstrained` for members in the domain)."""
    std = mniw.to_standard(eta)
    d_out = std.M.shape[-2]
    return MNIWUnconstrained(std.M, _tril_log_diag(jnp.linalg.cholesky(std.K)),
                             _tril_log_diag(jnp.linalg.cholesky(std.S)),
                             jnp.log(std.nu - (d_out - 1.0)))


__all__ = [
    "MNIWUnconstrained",
    "NIWUnconstrained",
    "dirichlet_from_unconstrained",
    "dirichlet_to_unconstrained",
    "mniw_from_unconstrained",
    "mniw_to_unconstrained",
    "niw_from_unconstrained",
    "niw_to_unconstrained",
]
