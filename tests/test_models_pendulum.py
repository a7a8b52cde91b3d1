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
from svae_core.models import MODELS, ModelConfig, build_model, effective_sample_size
from svae_core.networks import FrameDecoder, FrameEncoder, PatchConv, PatchDeconv

NAMES = list(MODELS)
H = W = 12
T, D, T0, S = 10, 2, 6, 8


# Compiling dominates these tests' time; the programs are tiny, so skip XLA's expensive passes.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _jit(f, **kw):
    return jax.jit(f, compiler_options=FAST_COMPILE, **kw)


def _frame_config():
    return ModelConfig(D, H * W, frame_shape=(H, W), frame_channels=(4, 8), frame_features=16,
                       rnn_hidden=8, head_hidden=(8,), cnn_features=8, cnn_layers=2,
                       cnn_kernel=3, smoother="sequential")


def _frames(seed=0):
    """(T, H·W) standard normal pixels (NumPy: test inputs need no eager JAX ops)."""
    return np.random.default_rng(seed).normal(size=(T, H * W)).astype(np.float32)


MASK = np.arange(T) % 4 != 1  # steps 1, 5, 9 hidden


@functools.cache
def _frame_model(name):
    """(model, probe): probe(y, mask, key) initialises the model (a fixed key; parameters do
    not depend on y's values) and runs every query in one compiled program, so each model
    compiles once for all the image tests; it returns NumPy arrays."""
    model = build_model(name, _frame_config())

    @_jit
    def probe(y, mask, key):
        params = model.init(jax.random.key(1), y, mask, jax.random.key(2))
        ap = functools.partial(model.apply, params)
        x_future = ap(y, num_observed=T0, key=key, num_samples=S, method="forecast")
        return dict(
            params=params,
            terms=ap(y, mask, key, num_samples=2),
            samples=ap(y, mask, key, num_samples=S, method="posterior_samples"),
            mean=ap(y, mask, method="posterior_mean"),
            future=x_future,
            decoded=ap(x_future, method="decode"),
            pll=ap(y, num_observed=T0, key=key, num_samples=S,
                   method="predictive_log_likelihood"),
        )

    return model, lambda y, mask, key: jax.tree.map(np.asarray, probe(y, mask, key))


def test_frame_config_validation():
    with pytest.raises(ValueError, match="frame_shape"):
        ModelConfig(2, 100, frame_shape=(12, 12))
    with pytest.raises(ValueError, match="frame_channels"):
        ModelConfig(2, 144, frame_shape=(12, 12), frame_channels=())
    assert ModelConfig(2, 144, frame_shape=[12, 12]).frame_shape == (12, 12)


def test_patch_layers_are_stride_2_convolutions():
    x = np.random.default_rng(0).normal(size=(2, 6, 4, 3)).astype(np.float32)

    @_jit
    def run(x):
        conv, deconv = PatchConv(5), PatchDeconv(5)
        pc, pd = conv.init(jax.random.key(1), x), deconv.init(jax.random.key(2), x)
        expected = jax.lax.conv_general_dilated(x, pc["params"]["kernel"], (2, 2), "VALID",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return pc["params"], conv.apply(pc, x), pd["params"], deconv.apply(pd, x), expected

    pc, out_c, pd, out_d, expected = jax.tree.map(np.asarray, run(x))
    np.testing.assert_allclose(out_c, expected + pc["bias"], atol=1e-5)
    assert out_d.shape == (2, 12, 8, 5)
    for a in range(2):
        for b in range(2):  # output pixel (2i + a, 2j + b) reads input pixel (i, j) only
            np.testing.assert_allclose(out_d[:, a::2, b::2],
                                       x @ pd["kernel"][:, a, b] + pd["bias"], atol=1e-5)


def test_frame_networks_odd_sizes_pad_and_crop():
    """A 10×7 frame is the 12×8 frame zero-padded at the bottom and right; the 10×7 decoder
    is the top-left crop of the 12×8 one (same parameters: only log_var's size differs)."""
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(2, 3, 10, 7)).astype(np.float32)
    padded = np.pad(frames, ((0, 0), (0, 0), (0, 2), (0, 1)))
    x = rng.normal(size=(4, 2, 3)).astype(np.float32)

    @_jit
    def run(frames, padded, x):
        enc, enc_full = FrameEncoder((10, 7), (4, 8), 5), FrameEncoder((12, 8), (4, 8), 5)
        dec, dec_full = FrameDecoder((10, 7), (4, 8), (6,)), FrameDecoder((12, 8), (4, 8), (6,))
        pe, pd = enc.init(jax.random.key(1), frames), dec.init(jax.random.key(2), x)
        pd_full = {"params": {**pd["params"], "log_var": jnp.zeros(96)}}
        return (enc.apply(pe, frames), enc_full.apply(pe, padded),
                dec.apply(pd, x), dec_full.apply(pd_full, x))

    feats, feats_full, (mean, log_var), (mean_full, _) = run(frames, padded, x)
    assert feats.shape == (2, 3, 5) and log_var.shape == (70,)
    np.testing.assert_array_equal(feats, feats_full)
    assert np.any(np.asarray(feats) != 0)  # not every ReLU unit is off
    crop = np.asarray(mean_full).reshape(4, 2, 12, 8)[..., :10, :7].reshape(4, 2, 70)
    np.testing.assert_array_equal(mean, crop)


def _with_row(y, t, row):
    """A copy of y with step t replaced by row."""
    y = y.copy()
    y[t] = row
    return y


@pytest.mark.parametrize("name", NAMES)
def test_frame_models(name):
    model, probe = _frame_model(name)
    y, key = _frames(), jax.random.key(5)
    out = probe(y, MASK, key)
    assert "frame_encoder" in out["params"]["params"]
    terms = out["terms"]
    assert all(np.isfinite(float(v)) for v in terms)
    assert out["samples"].shape == (S, T, D) and out["mean"].shape == (T, D)
    assert out["future"].shape == (S, T - T0, D)
    assert out["decoded"][0].shape == (S, T - T0, H * W)
    assert out["decoded"][1].shape == (H * W,)
    assert out["pll"][0].shape == () and out["pll"][1].shape == ()

    # A visible frame reaches the posterior and the ELBO; a hidden one only the
    # reconstruction (it is still scored), never the posterior.
    ramp = np.linspace(-1, 1, H * W, dtype=np.float32)
    visible = probe(_with_row(y, 2, y[2] + ramp), MASK, key)
    assert not np.allclose(visible["samples"], out["samples"])
    assert abs(float(visible["terms"].elbo - terms.elbo)) > 1e-3
    hidden = probe(np.where(MASK[:, None], y, np.float32(7.0)), MASK, key)
    np.testing.assert_array_equal(hidden["samples"], out["samples"])
    np.testing.assert_array_equal(hidden["mean"], out["mean"])
    assert float(hidden["terms"].reconstruction) < float(terms.reconstruction) - 100.0

    # Forecasts read frames 1..T0 only (the scored future enters the weights alone).
    future_changed = probe(np.where(np.arange(T)[:, None] < T0, y, np.float32(3.0)), MASK,
                           key)
    np.testing.assert_array_equal(future_changed["future"], out["future"])
    assert abs(float(future_changed["pll"][0] - out["pll"][0])) > 1.0
    past_changed = probe(_with_row(y, T0 - 1, y[T0 - 1] + ramp), MASK, key)
    assert not np.allclose(past_changed["future"], out["future"])

    # Baselines see hidden frames as zero frames; the SVAE drops their potentials instead,
    # which differs from a visible zero frame.
    zeroed = probe(np.where(MASK[:, None], y, np.float32(0.0)), np.ones(T, bool), key)
    if name == "svae":
        assert not np.allclose(zeroed["samples"], out["samples"])
    else:
        np.testing.assert_allclose(zeroed["samples"], out["samples"], rtol=1e-6, atol=1e-6)

    # The estimator is the float64 log-mean-exp of the decoded futures' log-likelihoods.
    mean, log_var = (np.asarray(a, np.float64) for a in out["decoded"])
    yf = y[T0:].astype(np.float64)
    log_w = -0.5 * np.sum((yf - mean) ** 2 / np.exp(log_var) + log_var + np.log(2 * np.pi),
                          axis=(-2, -1))
    m = log_w.max()
    est = m + np.log(np.mean(np.exp(log_w - m)))
    ratio = np.exp(log_w - est)
    se = ratio.std(ddof=1) / np.sqrt(S)
    np.testing.assert_allclose(float(out["pll"][0]), est, rtol=1e-5)
    np.testing.assert_allclose(float(out["pll"][1]), se, rtol=1e-3, atol=1e-6)
    ess = np.sum(ratio) ** 2 / np.sum(ratio**2)
    np.testing.assert_allclose(float(_jit(effective_sample_size)(log_w.astype(np.float32))),
                               ess, rtol=1e-4)


def test_svae_all_frames_masked_gives_prior_marginals():
    model, probe = _frame_model("svae")
    params = probe(_frames(), MASK, jax.random.key(0))["params"]
    params = _set_prior(params, _ROT, _B, 0.1 * np.eye(D), [1.0, -0.5], np.eye(D))

    @_jit
    def run(params, y, mask, key):
        """(q with every frame hidden, the prior's marginals)."""
        post, _ = model.apply(params, y, mask, key, method="posterior")
        return post, prior_marginals(model.apply(params, method=lambda m: m.prior()), T)

    post, (means, covs) = jax.tree.map(np.asarray, run(params, _frames(), np.zeros(T, bool),
                                                       jax.random.key(0)))
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


# A linear-Gaussian SVAE hand-set to be the true LDS: its recognition potentials are the
# exact likelihood potentials (J = CᵀR⁻¹C, h = CᵀR⁻¹(y − d)) and its decoder is N(Cx + d, R),
# so q is the exact posterior and the forecast draws x_{t0} from the exact filter.
N_VEC, T_VEC, T0_VEC, S_VEC = 3, 10, 6, 20000


@functools.cache
def _linear_svae():
    rng = np.random.default_rng(0)
    C = rng.normal(size=(N_VEC, D)).astype(np.float32)
    d = np.array([0.5, -1.0, 0.2], np.float32)
    r = np.array([0.5, 0.3, 0.8], np.float32)  # diagonal of R
    J = C.astype(np.float64).T @ np.diag(1 / r) @ C
    model = build_model("svae", ModelConfig(D, N_VEC, potential="dense", smoother="sequential"))
    y0 = np.zeros((T_VEC, N_VEC), np.float32)
    params = _jit(model.init)(jax.random.key(1), y0, np.ones(T_VEC, bool), jax.random.key(2))
    params = _set_prior(params, _ROT, _B, 0.1 * np.eye(D), [1.0, -0.5], np.eye(D))
    p = params["params"]
    L = np.linalg.cholesky(J)
    raw = np.tril(L, -1) + np.diag(np.log(np.expm1(np.diag(L))) - 1.0)  # inverts softplus(·+1)
    p["encoder"]["precision"] = {"kernel": np.zeros((N_VEC, D * D), np.float32),
                                 "bias": raw.reshape(-1).astype(np.float32)}
    gain = np.linalg.solve(J, C.T @ np.diag(1 / r))  # mean = J⁻¹CᵀR⁻¹(y − d)
    p["encoder"]["mean"] = {"kernel": gain.T.astype(np.float32),
                            "bias": (-gain @ d).astype(np.float32)}
    p["decoder"]["mean"] = {"kernel": C.T.copy(), "bias": d}
    p["decoder"]["log_var"] = np.log(r)

    @_jit
    def run(params, y, key):
        """(x_{t0} draws of forecast, forecast, predictive_log_likelihood, posterior_mean)."""
        ap = functools.partial(model.apply, params)
        k_post = jax.random.split(key)[0]  # forecast's documented use of its key
        x_last = ap(y, jnp.arange(T_VEC) < T0_VEC, k_post, S_VEC, method="posterior_samples")
        return (x_last[:, T0_VEC - 1],
                ap(y, num_observed=T0_VEC, key=key, num_samples=S_VEC, method="forecast"),
                ap(y, num_observed=T0_VEC, key=key, num_samples=S_VEC,
                   method="predictive_log_likelihood"),
                ap(y, jnp.ones(T_VEC, bool), method="posterior_mean"))

    return model, params, (C.astype(np.float64), d.astype(np.float64), r.astype(np.float64)), run


def test_forecast_rolls_the_prior_forward():
    """forecast = x_{t0} from posterior_samples (first half of the key), then the prior's
    x_{k+1} = A x_k + b + N(0, Q) (code shared by every model)."""
    model, params, _, run = _linear_svae()
    y = np.random.default_rng(0).normal(size=(T_VEC, N_VEC)).astype(np.float32)
    key = jax.random.key(3)

    # Q -> tiny (2e-6 I): the rollout is the deterministic map x_{k+1} = A x_k + b.
    x_last, x, _, _ = run(_set_prior(params, _ROT, _B, 2e-6 * np.eye(D)), y, key)
    x_last, x = np.asarray(x_last, np.float64), np.asarray(x, np.float64)
    assert x.shape == (S_VEC, T_VEC - T0_VEC, D)
    expected, prev = [], x_last
    for _ in range(T_VEC - T0_VEC):
        prev = prev @ _ROT.T + _B
        expected.append(prev)
    np.testing.assert_allclose(x, np.stack(expected, 1), atol=2e-2)

    # With Q = Q0 the one-step residuals x_{k+1} − A x_k − b are N(0, Q0), independent of k.
    Q0 = np.array([[0.3, 0.1], [0.1, 0.2]])
    x_last, x, _, _ = run(_set_prior(params, _ROT, _B, Q0), y, key)
    path = np.concatenate([np.asarray(x_last, np.float64)[:, None], x], axis=1)
    resid = path[:, 1:] - path[:, :-1] @ _ROT.T - _B  # (S, T − t0, D)
    flat = resid.reshape(-1, D)
    np.testing.assert_allclose(flat.mean(0), 0.0, atol=0.02)
    np.testing.assert_allclose(np.cov(flat.T), Q0, atol=0.015)
    np.testing.assert_allclose(np.corrcoef(resid[:, 0, 0], resid[:, 1, 0])[0, 1], 0.0,
                               atol=0.04)


def _gaussian_logpdf(x, mean, cov):
    diff = x - mean
    return -0.5 * (diff @ np.linalg.solve(cov, diff) + np.linalg.slogdet(cov)[1]
                   + diff.size * np.log(2 * np.pi))


def test_predictive_log_likelihood_is_exact_for_a_linear_gaussian_svae():
    """The estimator converges to log p(y_{t0+1:T} | y_{1:t0}) from the dense joint Gaussian
    of y_{1:T} (float64) under the hand-set SVAE's own prior."""
    model, params, (C, d, r), run = _linear_svae()
    TT, t0, N = T_VEC, T0_VEC, N_VEC
    prior = _jit(lambda p: model.apply(p, method=lambda m: m.prior()))(params)
    prior = {k: np.asarray(v, np.float64) for k, v in prior._asdict().items()}
    np.testing.assert_allclose(prior["A"], _ROT, atol=1e-6)
    mu_x, cov_x = dense_prior_moments(prior, TT)
    Cb = np.kron(np.eye(TT), C)
    mu_y = Cb @ mu_x + np.tile(d, TT)
    cov_y = Cb @ cov_x @ Cb.T + np.kron(np.eye(TT), np.diag(r))
    rng = np.random.default_rng(1)
    y = Cb @ rng.multivariate_normal(mu_x, cov_x) + np.tile(d, TT) \
        + np.sqrt(np.tile(r, TT)) * rng.normal(size=TT * N)
    past, fut = slice(0, t0 * N), slice(t0 * N, TT * N)
    gain_y = cov_y[fut, past] @ np.linalg.inv(cov_y[past, past])
    exact = _gaussian_logpdf(y[fut], mu_y[fut] + gain_y @ (y[past] - mu_y[past]),
                             cov_y[fut, fut] - gain_y @ cov_y[past, fut])

    _, _, (est, se), post_mean = run(params, y.reshape(TT, N).astype(np.float32),
                                     jax.random.key(7))
    # The hand-set potentials make q the exact posterior: its means are E[x | y].
    exact_mean = mu_x + cov_x @ Cb.T @ np.linalg.solve(cov_y, y - mu_y)
    np.testing.assert_allclose(np.asarray(post_mean).reshape(-1), exact_mean, atol=1e-4)
    est, se = float(est), float(se)
    assert 0 < se < 0.05, se
    assert abs(est - exact) < 4 * se + 2e-3, (est, exact, se)
    # Informative: ignoring the past, or conditioning on the future too, is far off.
    assert abs(_gaussian_logpdf(y[fut], mu_y[fut], cov_y[fut, fut]) - exact) > 20 * se
