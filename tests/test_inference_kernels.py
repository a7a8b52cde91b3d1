"""The hand-written kernels under the smoother: Gauss–Jordan inverse and the blocked scan."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svae_core.inference.linalg import SMALL_DIM, cholesky, inv_and_logabsdet, mm
from svae_core.inference.scan import chunked_scan


@pytest.mark.parametrize("dim", [1, 2, 3, 5, SMALL_DIM, SMALL_DIM + 3])
def test_inverse_and_logdet_match_numpy(dim):
    rng = np.random.default_rng(dim)
    mats = rng.normal(size=(20, dim, dim))
    mats[0] = np.eye(dim)[::-1]  # needs pivoting: zero leading entry
    if dim > 1:
        mats[1, 0, 0] = 1e-12  # tiny leading pivot
    with jax.enable_x64(True):
        inv, logdet = jax.vmap(inv_and_logabsdet)(jnp.asarray(mats))
    np.testing.assert_allclose(inv, np.linalg.inv(mats), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(logdet, np.linalg.slogdet(mats)[1], rtol=1e-10, atol=1e-10)


def test_identity_inverts_exactly():
    for dim in (1, 3, 6):
        inv, logdet = inv_and_logabsdet(jnp.eye(dim))
        assert np.array_equal(np.asarray(inv), np.eye(dim)) and float(logdet) == 0.0
        x = jnp.arange(dim * dim, dtype=jnp.float32).reshape(dim, dim) / 7
        assert np.array_equal(np.asarray(mm(inv, x)), np.asarray(x))


def test_inverse_derivatives_match_finite_differences():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        M = jnp.asarray(rng.normal(size=(3, 3)) + 2 * np.eye(3))
        W = jnp.asarray(rng.normal(size=(3, 3)))
        f = lambda m: jnp.sum(W * inv_and_logabsdet(m)[0]) + inv_and_logabsdet(m)[1]
        g = np.asarray(jax.grad(f)(M))
        eps = 1e-6
        for i in range(3):
            for j in range(3):
                d = np.zeros((3, 3))
                d[i, j] = eps
                fd = (f(M + d) - f(M - d)) / (2 * eps)
                np.testing.assert_allclose(g[i, j], fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dim", [1, 2, 3, 5, SMALL_DIM, SMALL_DIM + 2])
def test_cholesky_matches_numpy_and_its_gradient_matches_finite_differences(dim):
    rng = np.random.default_rng(dim)
    X = rng.normal(size=(6, dim, dim))
    spd = X @ X.transpose(0, 2, 1) + 0.1 * np.eye(dim)
    with jax.enable_x64(True):
        L = np.asarray(jax.vmap(cholesky)(jnp.asarray(spd)))
        np.testing.assert_allclose(L, np.linalg.cholesky(spd), rtol=1e-10, atol=1e-12)
        assert np.all(np.triu(L, 1) == 0)
        # The gradient of a weighted sum of L, against central differences along a
        # symmetric direction (the factor is only defined on symmetric matrices).
        W = jnp.asarray(np.tril(rng.normal(size=(dim, dim))))
        f = lambda m: jnp.sum(W * cholesky(0.5 * (m + m.T)))
        M = jnp.asarray(spd[0])
        S = rng.normal(size=(dim, dim))
        S = jnp.asarray(S + S.T)
        eps = 1e-6
        fd = (f(M + eps * S) - f(M - eps * S)) / (2 * eps)
        np.testing.assert_allclose(jnp.sum(jax.grad(f)(M) * S), fd, rtol=1e-6, atol=1e-9)


def _affine(earlier, later):  # x ↦ a x + b, applied earlier first: not commutative
    return later[0] * earlier[0], later[0] * earlier[1] + later[1]


@pytest.mark.parametrize("T", [1, 2, 3, 4, 10, 17, 64, 101])
@pytest.mark.parametrize("reverse", [False, True])
def test_chunked_scan_matches_associative_scan(T, reverse):
    rng = np.random.default_rng(T)
    with jax.enable_x64(True):
        elems = (jnp.asarray(rng.uniform(0.8, 1.2, T)), jnp.asarray(rng.normal(size=T)))
        ident = (jnp.ones(()), jnp.zeros(()))
        combine = _affine  # with reverse=True both scans call it as (later, earlier)
        ours = chunked_scan(combine, elems, ident, reverse=reverse)
        ref = jax.lax.associative_scan(jax.vmap(combine), elems, reverse=reverse)
        for a, b in zip(ours, ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)
        # and against a plain loop
        acc, out = None, []
        order = range(T - 1, -1, -1) if reverse else range(T)
        for t in order:
            e = (elems[0][t], elems[1][t])
            acc = e if acc is None else combine(acc, e)
            out.append(acc[1])
        loop = np.array(out[::-1] if reverse else out)
        np.testing.assert_allclose(ours[1], loop, rtol=1e-12)
