"""Compiled evaluation programs of a trained conjugate LDS-SVAE
(:class:`svae_core.models.conjugate_svae.ConjugateSVAE`), shared by the chapters that use it
(bouncing dot, mouse) and by every run and profile within one process."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from svae_core.models import ModelConfig
from svae_core.models import conjugate_svae as cs


@functools.cache
def conjugate_programs(config: ModelConfig, observed: int, num_samples: int):
    """(posterior means, decoded predictions), jitted and vmapped over sequences:

    * ``means(params, y (S, T, N)) -> (S, T, D)``: E_q[x_t] with every frame observed;
    * ``predict(params, y (S, T, N), keys (S, 2)) -> (S, num_samples, T, N)``: decoded joint
      samples of q(x) given the first ``observed`` frames (later potentials zero: exactly
      missing data, Johnson et al. 2016, Fig. 4)."""
    model = cs.ConjugateSVAE(config)

    def mean(params, y):
        return model.apply(params, y, jnp.ones(y.shape[0], bool), method="posterior_mean")

    def predict(params, y, key):
        seen = jnp.arange(y.shape[0]) < observed
        x = model.apply(params, y, seen, key, num_samples, method="posterior_samples")
        return model.apply(params, x, method="decode")[0]

    return jax.jit(jax.vmap(mean, (None, 0))), jax.jit(jax.vmap(predict, (None, 0, 0)))
