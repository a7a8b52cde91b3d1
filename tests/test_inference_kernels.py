"""The hand-written kernels under the smoother: Gauss–Jordan inverse and the blocked scan.

Every check runs its kernels inside one ``jax.jit`` (as the smoother does), with inputs made in
NumPy: op-by-op execution would compile each small array op separately, which is most of what
these tests would otherwise cost.
"""

from __future__ import annotations

from functools import partial

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
        inv, logdet = jax.jit(jax.vmap(inv_and_logabsdet))(mats)
    np.testing.assert_allclose(inv, np.linalg.inv(mats), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(logdet, np.linalg.slogdet(mats)[1], rtol=1e-10, atol=1e-10)


@jax.jit
def _invert_identities(eyes, xs):
    """(I⁻¹, log|det I|, I⁻¹ x) for each identity matrix and right-hand side."""
    out = []
    for eye, x in zip(eyes, xs, strict=True):
        inv, logdet = inv_and_logabsdet(eye)
        out.append((inv, logdet, mm(inv, x)))
    return out


def test_identity_inverts_exactly():
    dims = (1, 3, 6)
    eyes = [np.eye(dim, dtype=np.float32) for dim in dims]
    xs = [np.arange(dim * dim, dtype=np.float32).reshape(dim, dim) / 7 for dim in dims]
    for dim, x, (inv, logdet, product) in zip(dims, xs, _invert_identities(eyes, xs),
                                              strict=True):
        assert np.array_equal(np.asarray(inv), np.eye(dim)) and float(logdet) == 0.0
        assert np.array_equal(np.asarray(product), x)


def test_inverse_derivatives_match_finite_differences():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        M = rng.normal(size=(3, 3)) + 2 * np.eye(3)
        W = rng.normal(size=(3, 3))
        f = lambda m: jnp.sum(W * inv_and_logabsdet(m)[0]) + inv_and_logabsdet(m)[1]
        value_and_grad = jax.jit(jax.value_and_grad(f))  # one program: values at the bumps too
        g = np.asarray(value_and_grad(M)[1])
        eps = 1e-6
        for i in range(3):
            for j in range(3):
                d = np.zeros((3, 3))
                d[i, j] = eps
                fd = (value_and_grad(M + d)[0] - value_and_grad(M - d)[0]) / (2 * eps)
                np.testing.assert_allclose(g[i, j], fd, rtol=1e-6, atol=1e-8)


@partial(jax.jit, static_argnames="eps")
def _cholesky_and_directional_derivatives(spd, W, S, eps):
    """The factors of a batch, and along S at spd[0] the derivative of the weighted sum of the
    factor both by autodiff and by central differences (the factor is only defined on symmetric
    matrices, so f symmetrises its argument)."""
    f = lambda m: jnp.sum(W * cholesky(0.5 * (m + m.T)))
    M = spd[0]
    fd = (f(M + eps * S) - f(M - eps * S)) / (2 * eps)
    return jax.vmap(cholesky)(spd), jnp.sum(jax.grad(f)(M) * S), fd


@pytest.mark.parametrize("dim", [1, 2, 3, 5, SMALL_DIM, SMALL_DIM + 2])
def test_cholesky_matches_numpy_and_its_gradient_matches_finite_differences(dim):
    rng = np.random.default_rng(dim)
    X = rng.normal(size=(6, dim, dim))
    spd = X @ X.transpose(0, 2, 1) + 0.1 * np.eye(dim)
    W = np.tril(rng.normal(size=(dim, dim)))
    S = rng.normal(size=(dim, dim))
    S = S + S.T
    with jax.enable_x64(True):
        L, directional, fd = _cholesky_and_directional_derivatives(spd, W, S, eps=1e-6)
    L = np.asarray(L)
    np.testing.assert_allclose(L, np.linalg.cholesky(spd), rtol=1e-10, atol=1e-12)
    assert np.all(np.triu(L, 1) == 0)
    np.testing.assert_allclose(directional, fd, rtol=1e-6, atol=1e-9)


def _affine(earlier, later):  # x ↦ a x + b, applied earlier first: not commutative
    return later[0] * earlier[0], later[0] * earlier[1] + later[1]


@partial(jax.jit, static_argnames="reverse")
def _both_scans(elems, reverse):
    """chunked_scan and lax.associative_scan of the affine maps, in one program."""
    ident = (jnp.ones((), elems[0].dtype), jnp.zeros((), elems[1].dtype))
    combine = _affine  # with reverse=True both scans call it as (later, earlier)
    ours = chunked_scan(combine, elems, ident, reverse=reverse)
    ref = jax.lax.associative_scan(jax.vmap(combine), elems, reverse=reverse)
    return ours, ref


@pytest.mark.parametrize("T", [1, 2, 3, 4, 10, 17, 64, 101])
@pytest.mark.parametrize("reverse", [False, True])
def test_chunked_scan_matches_associative_scan(T, reverse):
    rng = np.random.default_rng(T)
    elems = (rng.uniform(0.8, 1.2, T), rng.normal(size=T))
    with jax.enable_x64(True):
        ours, ref = _both_scans(elems, reverse=reverse)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    # and against a plain loop, in NumPy float64
    acc, out = None, []
    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        e = (elems[0][t], elems[1][t])
        acc = e if acc is None else _affine(acc, e)
        out.append(acc[1])
    loop = np.array(out[::-1] if reverse else out)
    np.testing.assert_allclose(ours[1], loop, rtol=1e-12)
