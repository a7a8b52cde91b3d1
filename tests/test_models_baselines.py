"""The four baseline posterior families (RNN-MF, RNN-AR-L, RNN-AR-NL, CNN-AR-L).

References are independent of svae_core: the exact KL between q and the LDS prior is computed
from dense joint Gaussians over all T·D coordinates in NumPy float64, and log q is checked
against the change-of-variables density of the sampler's own noise-to-path map.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from reference import dense_prior_moments

from svae_core.models import MODELS, ModelConfig, build_model
from svae_core.models.base import LearnedLDSPrior

BASELINES = ["rnn_mf", "rnn_ar_l", "rnn_ar_nl", "cnn_ar_l"]
D, N = 2, 4


def _config():
    return ModelConfig(latent_dim=D, obs_dim=N, rnn_hidden=8, head_hidden=(16,),
                       cnn_features=8, cnn_layers=2, cnn_kernel=3)


def _data(T, seed=0):
    """y (T, N) and mask (T,) with every fourth step hidden (NumPy: no eager JAX ops)."""
    y = np.random.default_rng(seed).normal(size=(T, N)).astype(np.float32)
    return y, np.arange(T) % 4 != 1


@functools.cache
def _model(name):
    """(model, jitted apply, initial params), shared by the tests: compiling dominates their
    time, so every test reuses one init and one jitted apply (the parameters do not depend
    on T)."""
    model = build_model(name, _config())
    params = jax.jit(model.init)(jax.random.key(1), *_data(5), jax.random.key(2))
    return model, jax.jit(model.apply, static_argnames=("num_samples", "method")), params


def _setup(name, T=30, seed=0):
    model, apply, params = _model(name)
    return (model, apply, params, *_data(T, seed))


@functools.cache
def _svae_param_shapes():
    shapes = jax.eval_shape(build_model("svae", _config()).init, jax.random.key(0), *_data(5),
                            jax.random.key(1))
    return jax.tree.map(jnp.shape, shapes["params"])


def _noise(seed, S, T):
    return np.random.default_rng(seed).normal(size=(S, T, D)).astype(np.float32)


def test_registry_holds_the_papers_five_families():
    assert set(MODELS) == {"svae", *BASELINES}


@pytest.mark.parametrize("name", BASELINES)
def test_terms_finite_and_consistent(name):
    model, apply, params, y, mask = _setup(name)
    # Prior and decoder have the SVAE's parameter names, so they are comparable across models.
    assert {"prior", "decoder"} <= set(params["params"])
    svae_params = _svae_param_shapes()
    for part in ("prior", "decoder"):
        assert jax.tree.map(jnp.shape, params["params"][part]) == svae_params[part]
    terms = apply(params, y, mask, jax.random.key(5), num_samples=2)
    for v in terms:
        assert v.shape == () and np.isfinite(float(v))
    post = apply(params, y, mask, jax.random.key(5), num_samples=2, method="posterior")
    assert post.samples.shape == (2, 30, D)
    assert (post.mean is None) == (name == "rnn_ar_nl")
    if post.mean is not None:
        assert post.mean.shape == (30, D)
    with pytest.raises(ValueError):
        apply(params, y[:, :2], mask, jax.random.key(5))


@pytest.mark.parametrize("name", BASELINES)
def test_masked_steps_hidden_from_encoder(name):
    model, apply, params, y, mask = _setup(name)
    key = jax.random.key(7)
    hidden_changed = np.where(mask[:, None], y, 100.0).astype(np.float32)
    visible_changed = y.copy()
    visible_changed[2] += 1.0  # step 2 is visible
    assert mask[2] and not mask[1]

    def samples(yy):
        return apply(params, yy, mask, key, num_samples=2, method="posterior").samples

    np.testing.assert_array_equal(samples(hidden_changed), samples(y))
    assert not np.allclose(samples(visible_changed), samples(y))
    # The reconstruction term still scores every step, hidden ones included.
    rec = apply(params, y, mask, key, num_samples=2).reconstruction
    rec_changed = apply(params, hidden_changed, mask, key, num_samples=2).reconstruction
    assert float(rec_changed) < float(rec) - 100.0
    # Never-observed steps (the contract's ``observed``) are hidden and not scored at all.
    observed = np.arange(y.shape[0]) % 5 != 0
    never_seen_changed = np.where(observed[:, None], y, 100.0).astype(np.float32)
    a = apply(params, y, mask, key, num_samples=2, observed=observed)
    b = apply(params, never_seen_changed, mask, key, num_samples=2, observed=observed)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(a.reconstruction) > float(rec)  # fewer steps scored


@pytest.mark.parametrize("name", BASELINES)
def test_log_q_is_density_of_sampler(name):
    """log q(x(ε)) = log N(ε; 0, I) − log|det ∂x/∂ε| for the sampler's map ε -> x."""
    T, S = 30, 2
    model, apply, params, y, mask = _setup(name, T=T)
    eps = _noise(3, S, T)

    def path(e):
        x, _ = apply(params, y, mask, e.reshape(S, T, D), method="sample_and_log_prob")
        return x.reshape(-1)

    # Samples are independent, so the joint log-density is the sum over both of them.
    jac = np.asarray(jax.jacfwd(path)(eps.reshape(-1)), np.float64)
    e = eps.astype(np.float64).reshape(-1)
    expected = -0.5 * (e @ e + e.size * np.log(2 * np.pi)) - np.linalg.slogdet(jac)[1]
    _, log_q = apply(params, y, mask, eps, method="sample_and_log_prob")
    assert log_q.shape == (S,)
    np.testing.assert_allclose(float(np.sum(log_q)), expected, rtol=1e-5)


def _dense_logpdf(x, mean, cov):
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, (x - mean).T)
    return -0.5 * (np.sum(z**2, axis=0) + 2 * np.sum(np.log(np.diag(chol)))
                   + mean.size * np.log(2 * np.pi))


@pytest.mark.parametrize("name", ["rnn_mf", "rnn_ar_l", "cnn_ar_l"])
def test_monte_carlo_kl_matches_exact(name):
    T, S = 5, 20000
    model, _, params, y, mask = _setup(name, T=T, seed=1)
    p = jax.tree.map(np.array, params["params"])
    # A non-trivial prior offset and, for AR-L, transitions of order 1 rather than ~0.
    p["prior"]["m1"] = np.array([0.5, -0.3], np.float32)
    p["prior"]["b"] = np.array([0.2, 0.1], np.float32)
    if "transition_out" in p["heads"]:
        p["heads"]["transition_out"]["kernel"] *= 20.0
        p["heads"]["transition_out"]["bias"] = np.array([0.6, 0.3, -0.4, 0.5], np.float32)
    params = {"params": p}

    @jax.jit
    def run(params, key):
        """(q's parameters, the model's KL estimate, posterior means and samples for S draws,
        the prior)."""
        ap = functools.partial(model.apply, params, y, mask)
        return (ap(method="gaussian_params"), ap(key, num_samples=S).kl,
                ap(key, num_samples=S, method="posterior"),
                LearnedLDSPrior(D).apply({"params": params["params"]["prior"]}))

    q, kl, post, prior = run(params, jax.random.key(11))
    q = jax.tree.map(lambda a: np.asarray(a, np.float64), q)
    if name != "rnn_mf":
        assert np.abs(q.A[1:]).max() > 0.3
    # q's joint moments: (I − B) x = m + √v ε with B_{t,t-1} = A_t.
    B = np.zeros((T * D, T * D))
    for t in range(1, T):
        B[t * D:(t + 1) * D, (t - 1) * D:t * D] = q.A[t]
    L = np.linalg.inv(np.eye(T * D) - B)
    mean_q = L @ q.m.reshape(-1)
    cov_q = L @ np.diag(q.v.reshape(-1)) @ L.T
    mean_p, cov_p = dense_prior_moments(
        {k: np.asarray(v, np.float64) for k, v in prior._asdict().items()}, T)
    P = np.linalg.inv(cov_p)
    diff = mean_p - mean_q
    exact = 0.5 * (np.trace(P @ cov_q) + diff @ P @ diff - T * D
                   + np.linalg.slogdet(cov_p)[1] - np.linalg.slogdet(cov_q)[1])

    kl = float(kl)
    np.testing.assert_allclose(np.asarray(post.mean, np.float64).reshape(-1), mean_q,
                               rtol=1e-5, atol=1e-5)
    x = np.asarray(post.samples, np.float64).reshape(S, -1)
    per_sample = _dense_logpdf(x, mean_q, cov_q) - _dense_logpdf(x, mean_p, cov_p)
    se = per_sample.std() / np.sqrt(S)
    # The model's estimate is this same average (float32), and within 4 SE of the exact KL.
    np.testing.assert_allclose(kl, per_sample.mean(), rtol=1e-4, atol=1e-3)
    assert abs(kl - exact) < 4 * se, (kl, exact, se)
    assert exact > 20 * se  # the comparison is informative


@pytest.mark.parametrize("name, autoregressive",
                         [("rnn_mf", False), ("rnn_ar_l", True), ("rnn_ar_nl", True),
                          ("cnn_ar_l", True)])
def test_sampling_dependence_on_earlier_noise(name, autoregressive):
    T, t = 30, 10
    model, apply, params, y, mask = _setup(name, T=T)
    eps = _noise(2, 2, T)
    eps_changed = eps.copy()
    eps_changed[:, t - 1] += 1.5

    def path(e):
        return apply(params, y, mask, e, method="sample_and_log_prob")[0]

    x, x_changed = path(eps), path(eps_changed)
    np.testing.assert_array_equal(x[:, : t - 1], x_changed[:, : t - 1])  # causal in ε
    assert not np.allclose(x[:, t - 1], x_changed[:, t - 1])
    if autoregressive:
        assert np.abs(x[:, t] - x_changed[:, t]).max() > 1e-4
    else:
        np.testing.assert_array_equal(x[:, t:], x_changed[:, t:])


def _lds_data(num_seq=5, T=20, seed=0):
    rng = np.random.default_rng(seed)
    theta = 0.3
    A = 0.95 * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    C = rng.normal(size=(N, D))
    x = np.zeros((num_seq, T, D))
    x[:, 0] = rng.normal(size=(num_seq, D))
    for t in range(1, T):
        x[:, t] = x[:, t - 1] @ A.T + np.sqrt(0.1) * rng.normal(size=(num_seq, D))
    y = x @ C.T + np.sqrt(0.1) * rng.normal(size=(num_seq, T, N))
    return y.astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
def test_elbo_improves_with_training(name):
    y = _lds_data()
    B, T = y.shape[:2]
    mask = np.ones((B, T), bool)
    model, _, params = _model(name)
    opt = optax.adam(1e-2)

    def mean_elbo(params, key, num_samples):
        keys = jax.random.split(key, B)
        terms = jax.vmap(lambda yi, mi, ki: model.apply(params, yi, mi, ki,
                                                        num_samples=num_samples))(y, mask, keys)
        return jnp.mean(terms.elbo)

    @jax.jit
    def train(params, key):
        def step(carry, k):
            params, state = carry
            grads = jax.grad(lambda p: -mean_elbo(p, k, 1))(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)),
                                      jax.random.split(key, 300))
        return params

    evaluate = jax.jit(lambda p: mean_elbo(p, jax.random.key(99), 64))
    before = float(evaluate(params))
    after = float(evaluate(train(params, jax.random.key(2))))
    assert np.isfinite(after)
    assert after > before + 0.5 * abs(before), (before, after)


TIME_CONV_KERNELS = (1, 4, 5, 10)


@functools.cache
def _time_convs():
    """{kernel: (TimeConv params, nn.Conv params, both outputs with one random kernel)} for
    every kernel size of the test below, from one compiled program."""
    import flax.linen as nn

    from svae_core.models.cnn_ar_l import TimeConv

    @jax.jit
    def run():
        x = jax.random.normal(jax.random.PRNGKey(1), (17, 3))
        out = {}
        for kernel in TIME_CONV_KERNELS:
            ours, ref = TimeConv(6, kernel), nn.Conv(6, (kernel,), padding="SAME")
            p = {"params": {"kernel": jax.random.normal(jax.random.PRNGKey(3), (kernel, 3, 6)),
                            "bias": jnp.arange(6.0)}}
            out[kernel] = (ours.init(jax.random.PRNGKey(2), x), ref.init(jax.random.PRNGKey(2), x),
                           ours.apply(p, x), ref.apply(p, x))
        return out

    return run()


@pytest.mark.parametrize("kernel", TIME_CONV_KERNELS)
def test_time_conv_equals_flax_conv_same(kernel):
    """The matmul convolution of CNN-AR-L is nn.Conv(padding='SAME'): same init, same output."""
    p_ours, p_ref, out_ours, out_ref = _time_convs()[kernel]
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), p_ours, p_ref)
    np.testing.assert_allclose(out_ours, out_ref, rtol=1e-5, atol=1e-5)
