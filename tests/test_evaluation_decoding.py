"""Tests for svae_core.evaluation.linear_decoding_r2: held-out R² of a linear read-out.

References are cases with a known answer: exact affine targets (R² = 1), independent targets
(R² ≈ 0), y = x + noise (R² = 1/(1 + σ²)), a hand-computed score against the test mean, and a
least-squares fit with an explicit intercept column (np.linalg.lstsq on the raw design).
"""

from __future__ import annotations

import numpy as np
import pytest

from svae_core.evaluation import linear_decoding_r2


def test_exact_affine_targets_give_r2_one():
    rng = np.random.default_rng(0)
    A, b = rng.normal(size=(3, 2)), np.array([100.0, -50.0])  # a large intercept
    x_tr, x_te = rng.normal(size=(10, 20, 3)), rng.normal(size=(5, 20, 3))
    r2 = linear_decoding_r2(x_tr, x_tr @ A + b, x_te, x_te @ A + b)
    assert isinstance(r2, np.ndarray) and r2.shape == (2,)
    np.testing.assert_allclose(r2, 1.0, atol=1e-6)


def test_independent_targets_give_r2_near_zero():
    rng = np.random.default_rng(1)
    n, D, K = 20_000, 5, 3
    r2 = linear_decoding_r2(rng.normal(size=(n, D)), rng.normal(size=(n, K)),
                            rng.normal(size=(n, D)), rng.normal(size=(n, K)))
    assert r2.shape == (K,)
    assert np.all(np.abs(r2) < 0.01)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_signal_plus_noise_matches_closed_form(sigma):
    # y = x + σ ε with var(x) = 1: the best linear predictor explains 1/(1 + σ²) of var(y).
    # Two extra irrelevant features must not change that.
    rng = np.random.default_rng(2)
    n = 50_000

    def draw():
        x = rng.normal(size=(n, 3))
        return x, x[:, 0] + sigma * rng.normal(size=n)

    (x_tr, y_tr), (x_te, y_te) = draw(), draw()
    r2 = linear_decoding_r2(x_tr, y_tr, x_te, y_te)
    assert isinstance(r2, float)
    np.testing.assert_allclose(r2, 1 / (1 + sigma**2), atol=0.01)


def test_single_target_equals_one_column_and_a_direct_least_squares_fit():
    rng = np.random.default_rng(3)
    x_tr, x_te = rng.normal(size=(4, 30, 2)), rng.normal(size=(4, 30, 2))
    y_tr = np.sin(x_tr[..., 0]) + 0.3 * x_tr[..., 1] + 2.0
    y_te = np.sin(x_te[..., 0]) + 0.3 * x_te[..., 1] + 2.0
    single = linear_decoding_r2(x_tr, y_tr, x_te, y_te)
    column = linear_decoding_r2(x_tr, y_tr[..., None], x_te, y_te[..., None])
    assert column.shape == (1,)
    assert single == pytest.approx(column[0], abs=1e-12)
    # Reference: least squares on [x, 1] (uncentred, intercept as a column), R² on the test
    # rows around the test mean. The target is nonlinear in x, so the fit is not exact.
    X_tr, X_te = x_tr.reshape(-1, 2), x_te.reshape(-1, 2)
    coef, *_ = np.linalg.lstsq(np.c_[X_tr, np.ones(len(X_tr))], y_tr.ravel(), rcond=None)
    resid = y_te.ravel() - np.c_[X_te, np.ones(len(X_te))] @ coef
    expected = 1 - np.sum(resid**2) / np.sum((y_te - y_te.mean()) ** 2)
    assert single == pytest.approx(expected, rel=1e-10)


def test_r2_is_scored_around_the_test_mean():
    # Train y = 2x + 1; the test targets carry an extra offset of 5, so every prediction is
    # 5 too low: SSE = n·25 and SST = Σ (y − ȳ_test)² = 4 Σ (x − x̄)², known exactly.
    rng = np.random.default_rng(4)
    x_tr, x_te = rng.normal(size=(200, 1)), rng.normal(size=(300, 1))
    y_tr, y_te = 2 * x_tr + 1, 2 * x_te + 1 + 5
    expected = 1 - 300 * 25 / (4 * np.sum((x_te - x_te.mean()) ** 2))
    r2 = linear_decoding_r2(x_tr, y_tr, x_te, y_te)
    # expected ≈ 1 − 25/4, far worse than predicting the test mean; around the training mean
    # (SST ≈ Σ (2(x − x̄) + 5)²) it would be ≈ 1 − 25/29 instead.
    np.testing.assert_allclose(r2, [expected], rtol=1e-9)


def test_constant_test_column_is_nan():
    rng = np.random.default_rng(5)
    x_tr, x_te = rng.normal(size=(50, 2)), rng.normal(size=(40, 2))
    y_tr = np.stack([x_tr[:, 0], np.full(50, 0.1)], axis=-1)
    y_te = np.stack([x_te[:, 0], np.full(40, 0.1)], axis=-1)
    r2 = linear_decoding_r2(x_tr, y_tr, x_te, y_te)
    np.testing.assert_allclose(r2[0], 1.0, atol=1e-9)
    assert np.isnan(r2[1])


def test_accepts_jax_float32_arrays():
    jnp = pytest.importorskip("jax.numpy")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 40, 2)).astype(np.float32)
    y = x @ np.array([[1.0], [2.0]], np.float32) - 3.0
    r2 = linear_decoding_r2(jnp.asarray(x), jnp.asarray(y), jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(r2, 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "shapes",
    [
        ((10,), (10,), (5, 2), (5,)),  # features without a feature axis
        ((10, 2), (9,), (5, 2), (5,)),  # train rows disagree
        ((10, 2), (10, 3), (5, 2), (4, 3)),  # test rows disagree
        ((10, 2), (10,), (5, 3), (5,)),  # D differs between splits
        ((10, 2), (10, 3), (5, 2), (5, 2)),  # K differs between splits
        ((10, 2), (10,), (5, 2), (5, 1)),  # single target vs one column
        ((4, 5, 2), (20, 1), (5, 2), (5,)),  # leading axes must match, not just their size
        ((0, 2), (0,), (5, 2), (5,)),  # no training rows
    ],
)
def test_shape_errors_raise(shapes):
    arrays = [np.ones(s) for s in shapes]
    with pytest.raises(ValueError):
        linear_decoding_r2(*arrays)


def test_non_finite_values_raise():
    x, y = np.ones((5, 2)), np.ones(5)
    with pytest.raises(ValueError):
        linear_decoding_r2(x, y, np.full((5, 2), np.nan), y)
