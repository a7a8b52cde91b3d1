"""Prefix scans over time for message passing, with an associative combine of elements.

``chunked_scan`` is the parallel scan used on every backend: it splits the T elements into
about √T blocks, scans each block sequentially (all blocks at once, vectorised), then walks
across the blocks, combining each block's running prefix with all of that block's elements at
once. Depth is O(√T), work about 2T combines, and the compiled program holds the combine
twice whatever T is.
``lax.associative_scan`` (depth O(log T)) holds it about 2·log₂T times, which on CPU costs
seconds of XLA compile per level for the Kalman combine (benchmarks/smoother.py).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax


def _tree_concat(a, b):
    return jax.tree.map(lambda x, y: jnp.concatenate([x, y]), a, b)


def chunked_scan(combine, elems, identity, reverse=False):
    """Inclusive prefix scan: out_t = e_1 ⊗ e_2 ⊗ … ⊗ e_t (or e_t ⊗ … ⊗ e_T if reverse).

    Args:
        combine: associative (earlier, later) -> combined, on single (unbatched) elements.
            With ``reverse=True`` it is called as combine(later, earlier), matching
            ``lax.associative_scan(..., reverse=True)``.
        elems: pytree of arrays with a common leading time axis T.
        identity: pytree of single elements, e ⊗ identity = identity ⊗ e = e (pads T up
            to a multiple of the block length).
        reverse: scan from the end.
    Returns:
        pytree like ``elems`` of inclusive prefixes.
    """
    leaves = jax.tree.leaves(elems)
    T = leaves[0].shape[0]
    if reverse:
        flip = lambda tree: jax.tree.map(lambda x: jnp.flip(x, 0), tree)
        return flip(chunked_scan(combine, flip(elems), identity))
    block = max(1, math.isqrt(T - 1) + 1) if T > 1 else 1
    num_blocks = -(-T // block)
    pad = num_blocks * block - T
    if pad:
        fill = jax.tree.map(lambda e: jnp.broadcast_to(e, (pad, *e.shape)), identity)
        elems = _tree_concat(elems, fill)
    blocks = jax.tree.map(lambda x: x.reshape(num_blocks, block, *x.shape[1:]), elems)
    vcombine = jax.vmap(combine)

    # 1. within each block, sequentially; all blocks side by side.
    def within(carry, x):
        carry = vcombine(carry, x)
        return carry, carry

    first = jax.tree.map(lambda x: x[:, 0], blocks)
    rest = jax.tree.map(lambda x: jnp.swapaxes(x[:, 1:], 0, 1), blocks)
    _, local = lax.scan(within, first, rest)  # (block-1, num_blocks, ...)
    local = jax.tree.map(
        lambda f, r: jnp.concatenate([f[:, None], jnp.swapaxes(r, 0, 1)], axis=1), first, local
    )  # (num_blocks, block, ...)

    # 2. across blocks, sequentially: each block's elements get the running prefix, all at
    # once; the block's last fixed element is the next prefix.
    def across(prefix, block_elems):
        fixed = jax.vmap(combine, in_axes=(None, 0))(prefix, block_elems)
        return jax.tree.map(lambda x: x[-1], fixed), fixed

    if num_blocks > 1:
        first_prefix = jax.tree.map(lambda x: x[0, -1], local)
        _, fixed = lax.scan(across, first_prefix, jax.tree.map(lambda x: x[1:], local))
        local = _tree_concat(jax.tree.map(lambda x: x[:1], local), fixed)
    return jax.tree.map(lambda x: x.reshape(num_blocks * block, *x.shape[2:])[:T], local)


__all__ = ["chunked_scan"]
