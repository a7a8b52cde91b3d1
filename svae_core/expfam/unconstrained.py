r"""Unconstrained coordinates for Dirichlet and NIW members: what a practitioner hands to Adam.

Every real vector maps to a valid distribution, so a gradient step can never leave the
domain (the property natural-gradient SVI gets from convex combinations instead)::

    Dirichlet   log_alpha (K,)                 α = exp(log_alpha)
    NIW         m (D,)                         mean of μ
                log_kappa ()                   κ = exp(log_kappa)
                scale_tril (D, D)              S = L Lᵀ, L = tril(scale_tril) with its
                                               diagonal replaced by exp(diagonal)
                log_dof_excess ()              ν = D − 1 + exp(log_dof_excess)

The strictly upper triangle of ``scale_tril`` is ignored (it receives zero gradient).
Routines act on one member; vmap over a batch (e.g. the K components of a mixture).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from svae_core.expfam import dirichlet, niw
from svae_core.expfam.dirichlet import DirichletNatural
from svae_core.expfam.niw import NIWNatural


class NIWUnconstrained(NamedTuple):
    """m (D,), log_kappa (), scale_tril (D, D), log_dof_excess () (module docstring)."""

    m: jax.Array
    log_kappa: jax.Array
    scale_tril: jax.Array
    log_dof_excess: jax.Array


def dirichlet_from_unconstrained(log_alpha) -> DirichletNatural:
    """log α (K,) -> the Dirichlet's natural parameter α − 1."""
    return dirichlet.from_standard(jnp.exp(log_alpha))


def dirichlet_to_unconstrained(eta: DirichletNatural) -> jax.Array:
    """The Dirichlet's natural parameter -> log α (K,)."""
    return jnp.log(dirichlet.to_standard(eta))


def niw_from_unconstrained(raw: NIWUnconstrained) -> NIWNatural:
    """Unconstrained coordinates -> NIWNatural (S + κmmᵀ, κm, κ, ν)."""
    D = raw.m.shape[-1]
    L = jnp.tril(raw.scale_tril, -1) + jnp.diag(jnp.exp(jnp.diagonal(raw.scale_tril)))
    return niw.from_standard(raw.m, jnp.exp(raw.log_kappa), L @ L.T,
                             D - 1.0 + jnp.exp(raw.log_dof_excess))


def niw_to_unconstrained(eta: NIWNatural) -> NIWUnconstrained:
    """NIWNatural -> unconstrained coordinates (the inverse of :func:`niw_from_unconstrained`
    for members in the domain)."""
    std = niw.to_standard(eta)
    D = std.m.shape[-1]
    L = jnp.linalg.cholesky(std.S)
    raw_L = jnp.tril(L, -1) + jnp.diag(jnp.log(jnp.diagonal(L)))
    return NIWUnconstrained(std.m, jnp.log(std.kappa), raw_L, jnp.log(std.nu - (D - 1.0)))


__all__ = [
    "NIWUnconstrained",
    "dirichlet_from_unconstrained",
    "dirichlet_to_unconstrained",
    "niw_from_unconstrained",
    "niw_to_unconstrained",
]
