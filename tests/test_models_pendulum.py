"""Image observations (CNN trunk and decoder) and the forecasting API of every model.

The strong check is exactness: for a linear-Gaussian SVAE whose recognition potentials are
hand-set to the exact likelihood potentials, the Monte Carlo predictive log-likelihood must
approach log p(y_future | y_past) computed from the dense joint Gaussian of y in float64.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import dense_prior_moments

from svae_core.datasets.lds import prior_marginals
from svae_core.models import MODELS, ModelConfig, build_model

NAMES = list(MODELS)
H = W = 12
T, D, T0, S = 10, 2, 6, 8


def _frame_config():
    return ModelConfig(D, H * W, frame_shape=(H, W), frame_channels=(4, 8), frame_features=16,
                       rnn_hidden=8, head_hidden=(8,), cnn_features=8, cnn_layers=2,
                       cnn_kernel=3)


def _frames(seed=0):
    return jax.random.normal(jax.random.key(seed), (T, H * W))


MASK = jnp.arange(T) % 4 != 1  # steps 1, 5, 9 hidden


@functools.cache
def _frame_model(name):
    """(model, params, probe): probe(params, y, mask, key) runs every query in one compiled
    program, so each model compiles once for all the image tests."""
    model = build_model(name, _frame_config())
    params = jax.jit(model.init)(jax.random.key(1), _frames(), MASK, jax.random.key(2))

    @jax.jit
    def probe(params, y, mask, key):
        ap = functools.partial(model.apply, params)
        x_future = ap(y, num_observed=T0, key=key, num_samples=S, method="forecast")
        return dict(
            terms=ap(y, mask, key, num_samples=2),
            samples=ap(y, mask, key, num_samples=S, method="posterior_samples"),
            mean=ap(y, mask, method="posterior_mean"),
            future=x_future,
            decoded=ap(x_future, method="decode"),
            log_w=ap(y, num_observed=T0, key=key, num_samples=S, method="forecast_log_weights"),
            pll=ap(y, num_observed=T0, key=key, num_samples=S,
                   method="predictive_log_likelihood"),
        )

    return model, params, probe


def test_frame_config_validation():
    with pytest.raises(ValueError, match="frame_shape"):
        ModelConfig(2, 100, frame_shape=(12, 12))
    with pytest.raises(ValueError, match="frame_channels"):
        ModelConfig(2, 144, frame_shape=(12, 12), frame_channels=())
    assert ModelConfig(2, 144, frame_shape=[12, 12]).frame_shape == (12, 12)


@pytest.mark.parametrize("name", NAMES)
def test_frame_models(name):
    model, params, probe = _frame_model(name)
    assert "frame_encoder" in params["params"]
    y, key = _frames(), jax.random.key(5)
    out = probe(params, y, MASK, key)
    terms = out["terms"]
    assert all(np.isfinite(float(v)) for v in terms)
    assert out["samples"].shape == (S, T, D) and out["mean"].shape == (T, D)
    assert out["future"].shape == (S, T - T0, D)
    assert out["decoded"][0].shape == (S, T - T0, H * W)
    assert out["decoded"][1].shape == (H * W,)
    assert out["log_w"].shape == (S,) and out["pll"][0].shape == ()

    # A visible frame reaches the posterior and the ELBO; a hidden one only the
    # reconstruction (it is still scored), never the posterior.
    visible = probe(params, y.at[2].add(jnp.linspace(-1, 1, H * W)), MASK, key)
    assert not np.allclose(visible["samples"], out["samples"])
    assert abs(float(visible["terms"].elbo - terms.elbo)) > 1e-3
    hidden = probe(params, jnp.where(MASK[:, None], y, 7.0), MASK, key)
    np.testing.assert_array_equal(hidden["samples"], out["samples"])
    np.testing.assert_array_equal(hidden["mean"], out["mean"])
    assert float(hidden["terms"].reconstruction) < float(terms.reconstruction) - 100.0

    # Forecasts read frames 1..T0 only (the scored future enters the weights alone).
    future_changed = probe(params, y.at[T0:].set(3.0), MASK, key)
    np.testing.assert_array_equal(future_changed["future"], out["future"])
    assert not np.allclose(future_changed["log_w"], out["log_w"])
    past_changed = probe(params, y.at[T0 - 1].add(jnp.linspace(-1, 1, H * W)), MASK, key)
    assert not np.allclose(past_changed["future"], out["future"])

    # Baselines see hidden frames as zero frames; the SVAE drops their potentials instead,
    # which differs from a visible zero frame.
    zeroed = probe(params, jnp.where(MASK[:, None], y, 0.0), jnp.ones(T, bool), key)
    if name == "svae":
        assert not np.allclose(zeroed["samples"], out["samples"])
    else:
        np.testing.assert_allclose(zeroed["samples"], out["samples"], rtol=1e-6, atol=1e-6)

    # The estimator is the float64 log-mean-exp of the decoded futures' log-likelihoods.
    mean, log_var = (np.asarray(a, np.float64) for a in out["decoded"])
    yf = np.asarray(y[T0:], np.float64)
    log_w = -0.5 * np.sum((yf - mean) ** 2 / np.exp(log_var) + log_var + np.log(2 * np.pi),
                          axis=(-2, -1))
    np.testing.assert_allclose(out["log_w"], log_w, rtol=1e-5)
    m = log_w.max()
    est = m + np.log(np.mean(np.exp(log_w - m)))
    ratio = np.exp(log_w - est)
    se = ratio.std(ddof=1) / np.sqrt(S)
    np.testing.assert_allclose(float(out["pll"][0]), est, rtol=1e-5)
    np.testing.assert_allclose(float(out["pll"][1]), se, rtol=1e-3, atol=1e-6)


def test_svae_all_frames_masked_gives_prior_marginals():
    model, params, _ = _frame_model("svae")
    params = _set_prior(params, _ROT, _B, 0.1 * np.eye(D), [1.0, -0.5], np.eye(D))
    none = jnp.zeros(T, bool)
    post, _ = jax.jit(functools.partial(model.apply, method="posterior"))(
        params, _frames(), none, jax.random.key(0))
    prior = model.apply(params, method=lambda m: m.prior())
    means, covs = prior_marginals(prior, T)
    np.testing.assert_allclose(post.mean, means, atol=1e-5)
    np.testing.assert_allclose(post.cov, covs, rtol=1e-4, atol=1e-5)
    assert abs(float(post.log_normalizer)) < 1e-5
    assert np.abs(np.asarray(means[1] - means[0])).max() > 0.1  # the marginals do move


# ----------------------------------------------------------------------------- vector models


def _raw_psd(cov):
    """Inverse of base.psd_from_raw (jitter 1e-6): raw with psd_from_raw(raw) == cov."""
    L = np.linalg.cholesky(cov - 1e-6 * np.eye(len(cov)))
    return np.tril(L, -1) + np.diag(np.log(np.expm1(np.diag(L))))


def _set_prior(params, A, b, Q, m1=None, Q1=None):
    p = jax.tree.map(np.array, params["params"])
    p["prior"]["A_raw"] = np.asarray(A, np.float32)
    p["prior"]["b"] = np.asarray(b, np.float32)
    p["prior"]["Q_raw"] = _raw_psd(np.asarray(Q)).astype(np.float32)
    if m1 is not None:
        p["prior"]["m1"] = np.asarray(m1, np.float32)
        p["prior"]["Q1_raw"] = _raw_psd(np.asarray(Q1)).astype(np.float32)
    return {"params": p}


_ROT = 0.9 * np.array([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]])
_B = np.array([0.3, -0.2])


@pytest.mark.parametrize("name", ["svae", "rnn_ar_nl"])
def test_forecast_rolls_the_prior_forward(name):
    N, TT, t0, num = 3, 12, 4, 4000
    model = build_model(name, ModelConfig(D, N, rnn_hidden=8, head_hidden=(8,)))
    y = jax.random.normal(jax.random.key(0), (TT, N))
    params = model.init(jax.random.key(1), y, jnp.ones(TT, bool), jax.random.key(2))
    forecast = jax.jit(functools.partial(model.apply, method="forecast"),
                       static_argnames=("num_observed", "num_samples"))
    key = jax.random.key(3)
    k_post, _ = jax.random.split(key)
    x_last = model.apply(params, y, jnp.arange(TT) < t0, k_post, num, method="posterior_samples")
    x_last = np.asarray(x_last[:, t0 - 1], np.float64)

    # Q -> tiny (1e-6 I): the rollout is the deterministic map x_{k+1} = A x_k + b.
    tiny = _set_prior(params, _ROT, _B, 2e-6 * np.eye(D))
    x = np.asarray(forecast(tiny, y, num_observed=t0, key=key, num_samples=num), np.float64)
    assert x.shape == (num, TT - t0, D)
    expected, prev = [], x_last
    for _ in range(TT - t0):
        prev = prev @ _ROT.T + _B
        expected.append(prev)
    np.testing.assert_allclose(x, np.stack(expected, 1), atol=2e-2)

    # With Q = Q0 the one-step residuals x_{k+1} − A x_k − b are N(0, Q0), independent of k.
    Q0 = np.array([[0.3, 0.1], [0.1, 0.2]])
    x = np.asarray(forecast(_set_prior(params, _ROT, _B, Q0), y, num_observed=t0, key=key,
                            num_samples=num), np.float64)
    path = np.concatenate([x_last[:, None], x], axis=1)
    resid = path[:, 1:] - path[:, :-1] @ _ROT.T - _B  # (num, TT - t0, D)
    flat = resid.reshape(-1, D)
    np.testing.assert_allclose(flat.mean(0), 0.0, atol=0.03)
    np.testing.assert_allclose(np.cov(flat.T), Q0, atol=0.02)
    np.testing.assert_allclose(np.corrcoef(resid[:, 0, 0], resid[:, 1, 0])[0, 1], 0.0,
                               atol=0.06)


def test_predictive_log_likelihood_is_exact_for_a_linear_gaussian_svae():
    """Hand-set linear SVAE = the true LDS: recognition potentials are the exact likelihood
    potentials (J = CᵀR⁻¹C, h = CᵀR⁻¹(y − d)), the decoder is N(Cx + d, R). Then the forecast
    samples x_{t0} from the exact filter and the estimator converges to log p(y_f | y_p)."""
    N, TT, t0, num = 3, 10, 6, 20000
    rng = np.random.default_rng(0)
    C = rng.normal(size=(N, D)).astype(np.float32)
    d = np.array([0.5, -1.0, 0.2], np.float32)
    r = np.array([0.5, 0.3, 0.8], np.float32)  # diagonal of R
    Q, m1, Q1 = 0.1 * np.eye(D), np.array([1.0, -0.5]), np.eye(D)
    J = C.T @ np.diag(1 / r) @ C

    model = build_model("svae", ModelConfig(D, N, potential="dense"))
    y0 = jnp.zeros((TT, N))
    params = _set_prior(model.init(jax.random.key(1), y0, jnp.ones(TT, bool), jax.random.key(2)),
                        _ROT, _B, Q, m1, Q1)
    p = params["params"]
    L = np.linalg.cholesky(J)
    raw = np.tril(L, -1) + np.diag(np.log(np.expm1(np.diag(L))) - 1.0)  # inverts +1, softplus
    p["encoder"]["precision"] = {"kernel": np.zeros((N, D * D), np.float32),
                                 "bias": raw.reshape(-1).astype(np.float32)}
    gain = np.linalg.solve(J, C.T @ np.diag(1 / r))  # mean = J⁻¹CᵀR⁻¹(y − d)
    p["encoder"]["mean"] = {"kernel": gain.T.astype(np.float32),
                            "bias": (-gain @ d).astype(np.float32)}
    p["decoder"]["mean"] = {"kernel": C.T.copy(), "bias": d}
    p["decoder"]["log_var"] = np.log(r)

    # Exact: the dense joint Gaussian of y_{1:T} under the model's own prior, in float64.
    prior = {k: np.asarray(v, np.float64)
             for k, v in model.apply(params, method=lambda m: m.prior())._asdict().items()}
    np.testing.assert_allclose(prior["A"], _ROT, atol=1e-6)
    mu_x, cov_x = dense_prior_moments(prior, TT)
    Cb = np.kron(np.eye(TT), C.astype(np.float64))
    mu_y = Cb @ mu_x + np.tile(d, TT)
    cov_y = Cb @ cov_x @ Cb.T + np.kron(np.eye(TT), np.diag(r.astype(np.float64)))
    x_true = rng.multivariate_normal(mu_x, cov_x)
    y = (Cb @ x_true + np.tile(d, TT) + np.sqrt(np.tile(r, TT)) * rng.normal(size=TT * N))
    past, fut = slice(0, t0 * N), slice(t0 * N, TT * N)
    gain_y = cov_y[fut, past] @ np.linalg.inv(cov_y[past, past])
    cond_mean = mu_y[fut] + gain_y @ (y[past] - mu_y[past])
    cond_cov = cov_y[fut, fut] - gain_y @ cov_y[past, fut]
    diff = y[fut] - cond_mean
    exact = -0.5 * (diff @ np.linalg.solve(cond_cov, diff) + np.linalg.slogdet(cond_cov)[1]
                    + diff.size * np.log(2 * np.pi))

    y32 = jnp.asarray(y.reshape(TT, N), jnp.float32)
    # The hand-set potentials make q the exact posterior: check its means first.
    post_mean = model.apply(params, y32, jnp.ones(TT, bool), method="posterior_mean")
    cov_xy = cov_x @ Cb.T
    exact_mean = mu_x + cov_xy @ np.linalg.solve(cov_y, y - mu_y)
    np.testing.assert_allclose(np.asarray(post_mean).reshape(-1), exact_mean, atol=1e-4)

    est, se = jax.jit(functools.partial(model.apply, method="predictive_log_likelihood"),
                      static_argnames=("num_observed", "num_samples"))(
        params, y32, num_observed=t0, key=jax.random.key(7), num_samples=num)
    est, se = float(est), float(se)
    assert 0 < se < 0.05, se
    assert abs(est - exact) < 4 * se + 2e-3, (est, exact, se)
    # Conditioning on the wrong past (the whole sequence hidden) is clearly worse.
    prior_only = -0.5 * ((y[fut] - mu_y[fut]) @ np.linalg.solve(cov_y[fut, fut], y[fut] - mu_y[fut])
                         + np.linalg.slogdet(cov_y[fut, fut])[1] + diff.size * np.log(2 * np.pi))
    assert abs(prior_only - exact) > 20 * se
