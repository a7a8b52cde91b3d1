"""The LDS-SVAE with a conjugate q(θ) (svae_core.models.conjugate_svae).

References: the point-estimate smoother with the true (A, Q) for a concentrated q(θ); Monte
Carlo over x ~ q(x) and θ ~ q(θ) (the expfam samplers) with NumPy Gaussian densities for the
local KL; the closed-form first term of Eq. 4 for the natural gradient. float64, tiny sizes.

Compilation, not arithmetic, is what these tests cost: the model is initialised once for the
module, and each test's model computations run under one ``jax.jit`` rather than op by op.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svae_core.expfam import mniw, niw
from svae_core.inference import LDSPrior, lds_log_prob, lds_smoother_and_sample
from svae_core.inference.expected_prior import add_potentials, expected_lds_prior
from svae_core.models import conjugate_svae as cs
from svae_core.models.base import ModelConfig, reconstruction
from svae_core.models.svae import expected_log_potentials
from svae_core.natgrad import fisher_solve

tmap = jax.tree_util.tree_map
D, P, T, N_SEQ = 2, 3, 6, 8


@pytest.fixture(scope="module", autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def setup():
    """(model, float64 params at the prior, y, mask), initialised once for the module."""
    cfg = ModelConfig(latent_dim=D, obs_dim=P, encoder_hidden=(5,), decoder_hidden=(5,),
                      smoother="sequential")
    model = cs.ConjugateSVAE(cfg, N_SEQ)

    @jax.jit
    def init():
        y = jax.random.normal(jax.random.PRNGKey(0), (T, P))
        mask = jnp.ones(T, bool).at[2].set(False)
        params = model.init(jax.random.PRNGKey(1), y, mask, jax.random.PRNGKey(2))
        return tmap(lambda a: a.astype(jnp.float64), params), y, mask

    return model, *init()


def with_globals(params, globals_):
    return {"params": {**params["params"], "globals": globals_}}


def rotation(theta=0.3, decay=0.9):
    c, s = np.cos(theta), np.sin(theta)
    return decay * np.array([[c, -s], [s, c]])


def test_starts_at_the_prior_with_zero_global_kl(setup):
    model, params, y, mask = setup
    prior = jax.jit(cs.prior_globals, static_argnums=0)(D)
    for a, b in zip(jax.tree_util.tree_leaves(params["params"]["globals"]),
                    jax.tree_util.tree_leaves(prior), strict=True):
        np.testing.assert_allclose(a, b)
    global_kl = jax.jit(lambda p: model.apply(p, method="global_kl"))
    assert abs(float(global_kl(params))) < 1e-10
    moved = with_globals(params, prior._replace(
        dynamics=mniw.from_standard(rotation(), np.eye(D), 3 * np.eye(D), 5.0)))
    assert float(global_kl(moved)) > 0.1


def test_concentrated_q_theta_is_the_point_estimate_svae(setup):
    """q(θ) = point mass up to 1e-9: the ELBO equals the point-estimate SVAE's with the same
    networks, key and (m1, Q1, A, Q), minus KL(q(θ)‖p(θ))/N."""
    model, params, y, mask = setup
    A, Q = rotation(), np.array([[0.3, 0.1], [0.1, 0.2]])
    m1, Q1 = np.array([0.5, -1.0]), np.array([[1.0, 0.2], [0.2, 0.5]])
    prior = LDSPrior(m1, Q1, A, np.zeros(D), Q)

    @jax.jit
    def both(prior, key):
        """The conjugate model's terms, and the point-estimate SVAE's from the same parts."""
        glob = cs.concentrated_globals(prior, 1e10)
        std = mniw.to_standard(glob.dynamics)  # the documented standard parameters
        p = with_globals(params, glob)
        out = model.apply(p, y, mask, key, num_samples=4)
        pots = model.apply(p, y, mask, method="potentials")
        post, x = lds_smoother_and_sample(key, prior, pots, num_samples=4, method="sequential")
        recon = reconstruction(lambda z: model.apply(p, z, method="decode"), x, y)
        kl = expected_log_potentials(pots.J, pots.h, post.mean, post.cov) - post.log_normalizer
        gkl = model.apply(p, method="global_kl") / N_SEQ
        return std, niw.to_standard(glob.init).m, out, recon, kl, gkl

    std, m1_got, out, recon, kl, gkl = both(prior, jax.random.PRNGKey(3))
    np.testing.assert_allclose(std.S / std.nu, Q, rtol=1e-12)
    np.testing.assert_allclose(std.K, 1e10 * np.eye(D), rtol=1e-12)
    np.testing.assert_allclose(m1_got, m1, rtol=1e-12)
    np.testing.assert_allclose(out.reconstruction, recon, rtol=1e-6)
    np.testing.assert_allclose(out.kl - gkl, kl, rtol=1e-6, atol=1e-6)


def test_local_kl_matches_monte_carlo_over_x_and_theta(setup):
    """KL_local = E_{q(x)q(θ)}[log q(x) − log p(x | θ)], by 20,000 joint draws (5 s.e.)."""
    model, params, y, mask = setup
    glob = cs.LDSGlobals(niw.from_standard(np.array([0.2, 0.1]), 2.0, 3.0 * np.eye(D), 6.0),
                         mniw.from_standard(rotation(), 4.0 * np.eye(D),
                                            np.array([[1.0, 0.2], [0.2, 0.8]]), 7.0))
    n = 20_000

    @jax.jit
    def model_and_draws(glob):
        """The model's local KL; n draws of x ~ q(x) with log q(x), and of θ ~ q(θ)."""
        p = with_globals(params, glob)
        out = model.apply(p, y, mask, jax.random.PRNGKey(3))
        local_kl = out.kl - model.apply(p, method="global_kl") / N_SEQ
        pots = model.apply(p, y, mask, method="potentials")
        ep = expected_lds_prior(*cs.smoother_stats(glob), num_timesteps=T)
        total = add_potentials(pots, ep.potentials)
        post, x = lds_smoother_and_sample(jax.random.PRNGKey(4), ep.prior, total,
                                          num_samples=n, method="sequential")
        # log q(x) = log p̄(x) + Σ_t log ψ_t(x_t) + Σ_t log φ_t(x_t) − log Z_smoother
        J = total.J
        log_pots = (jnp.einsum("sti,ti->s", x, total.h)
                    - 0.5 * jnp.einsum("sti,tij,stj->s", x, J, x))
        log_q = (jax.vmap(lambda xs: lds_log_prob(ep.prior, xs))(x) + log_pots
                 - post.log_normalizer)
        return (local_kl, x, log_q, niw.sample(jax.random.PRNGKey(5), glob.init, (n,)),
                mniw.sample(jax.random.PRNGKey(6), glob.dynamics, (n,)))

    local_kl, x, log_q, (mu1, S1), (A, Sig) = model_and_draws(glob)
    local_kl = float(local_kl)

    def log_normal(v, mean, cov):
        chol = np.linalg.cholesky(cov)
        z = np.linalg.solve(chol, (v - mean)[..., None])[..., 0]
        return (-0.5 * np.sum(z ** 2, -1) - np.sum(np.log(np.diagonal(chol, 0, -2, -1)), -1)
                - 0.5 * D * np.log(2 * np.pi))

    x, A, Sig = np.asarray(x), np.asarray(A), np.asarray(Sig)
    log_p = log_normal(x[:, 0], np.asarray(mu1), np.asarray(S1))
    for t in range(T - 1):
        log_p += log_normal(x[:, t + 1], np.einsum("sij,sj->si", A, x[:, t]), Sig)
    draws = np.asarray(log_q) - log_p
    se = draws.std() / np.sqrt(n)
    assert abs(draws.mean() - local_kl) < 5 * se, (draws.mean(), local_kl, se)
    assert local_kl > 0


def test_first_term_natural_gradient_is_the_conjugate_update(setup):
    """With second_term=False, N · F⁻¹ ∇_η(−mean ELBO over a batch) = η − η₀ − (N/B) Σ_b E[t];
    with the path live the gradient differs."""
    model, params, _, _ = setup
    B = 3
    ys = jax.random.normal(jax.random.PRNGKey(7), (B, T, P))
    masks = jnp.ones((B, T), bool)
    keys = jax.random.split(jax.random.PRNGKey(8), B)
    glob = cs.LDSGlobals(niw.from_standard(np.array([0.2, 0.1]), 2.0, 3.0 * np.eye(D), 6.0),
                         mniw.from_standard(rotation(), 4.0 * np.eye(D), np.eye(D), 7.0))
    prior = jax.jit(cs.prior_globals, static_argnums=0)(D)

    @jax.jit
    def grad(gl, live):
        """∇_η(−mean ELBO) and the batch's statistics; ``live`` (a traced bool, so that both
        settings share one program) is the model's second_term."""
        def loss(gl):
            out = jax.vmap(lambda yy, mm, kk: model.apply(with_globals(params, gl), yy, mm, kk,
                                                          second_term=live))(ys, masks, keys)
            return -jnp.mean(out.elbo), out.stats
        return jax.grad(loss, has_aux=True)(gl)

    g_first, stats = grad(glob, False)
    g_live, _ = grad(glob, True)
    batch = tmap(lambda s: jnp.sum(s, 0), stats)
    closed = tmap(lambda e, e0, s: e - e0 - (N_SEQ / B) * s, glob, prior, batch)
    natural = cs.LDSGlobals(fisher_solve(niw.log_partition, glob.init, g_first.init),
                            fisher_solve(mniw.log_partition, glob.dynamics, g_first.dynamics))
    for a, b in zip(jax.tree_util.tree_leaves(tmap(lambda v: N_SEQ * v, natural)),
                    jax.tree_util.tree_leaves(closed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-7 * float(jnp.max(jnp.abs(b))))
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
               zip(jax.tree_util.tree_leaves(g_live), jax.tree_util.tree_leaves(g_first),
                   strict=True))
    assert diff > 1e-6


def test_task_takes_the_svi_step_and_holds_the_prior_during_globals_after():
    """conjugate_svae_task: one update of q(θ) is η + ρ(η₀ + N·mean_B E[t] − η) (SGD on
    svi_term), and zero while the step count is below globals_after."""
    import optax

    from svae_core.experiments.runs import conjugate_svae_task
    from svae_core.training import TrainConfig

    cfg = ModelConfig(latent_dim=D, obs_dim=P, smoother="sequential")
    S, B, rho = 5, 2, 0.3
    train_config = TrainConfig(steps=10, batch_size=B)
    data = {"y": jax.random.normal(jax.random.PRNGKey(9), (S, T, P)),
            "observed": jnp.ones((S, T), bool)}
    batch = jax.tree.map(lambda x: x[:B], data)
    task = conjugate_svae_task(cfg, train_config, S, T)
    params = jax.jit(task.init)(jax.random.PRNGKey(10), data)
    glob = params["params"]["globals"]
    rates = {"networks": 1e-3, "globals": rho}
    afters = (0, 3)

    @jax.jit
    def updates_and_target(params, key):
        """The globals after one update of the tasks with each globals_after, and the target
        from the same minibatch's statistics, from the model the task trains."""
        grads = jax.grad(lambda p: task.loss(p, batch, key, 0)[0])(params)
        _, k_elbo = jax.random.split(key)
        out = jax.vmap(lambda y, k: cs.ConjugateSVAE(cfg, S).apply(
            params, y, jnp.ones(T, bool), k))(batch["y"], jax.random.split(k_elbo, B))
        target = tmap(lambda e0, t: e0 + S * jnp.mean(t, 0), cs.prior_globals(D), out.stats)
        news = []
        for after in afters:
            tx = conjugate_svae_task(cfg, train_config, S, T, after).optimizer(
                rates, train_config, params)
            updates, _ = tx.update(grads, tx.init(params), params)
            news.append(optax.apply_updates(params, updates)["params"]["globals"])
        return news, target

    news, target = updates_and_target(params, jax.random.PRNGKey(11))
    for after, new in zip(afters, news, strict=True):
        for a, e, t in zip(*(jax.tree_util.tree_leaves(x) for x in (new, glob, target)),
                           strict=True):
            expected = e + rho * (t - e) if after == 0 else e
            np.testing.assert_allclose(a, expected, rtol=1e-6, atol=1e-8)


def test_expected_prior_in_standard_parameters_equals_the_general_route_and_keeps_float32():
    """cs.expected_prior = expected_lds_prior(smoother_stats) in float64; for a q(θ) that has
    seen ~20,000 transitions, in float32 it stays close to the float64 answer where the general
    route's remainder W = E[AᵀQ⁻¹A] − … loses its digits."""
    glob = cs.LDSGlobals(niw.from_standard(np.array([0.2, 0.1]), 2.0, 3.0 * np.eye(D), 6.0),
                         mniw.from_standard(rotation(), 4.0 * np.eye(D),
                                            np.array([[1.0, 0.2], [0.2, 0.8]]), 7.0))

    @jax.jit
    def both(glob):
        """(this module's expected prior, the general route's) for q(θ) = glob."""
        return cs.expected_prior(glob, T), expected_lds_prior(*cs.smoother_stats(glob),
                                                              num_timesteps=T)

    fast, ref = both(glob)
    for a, b in zip(jax.tree_util.tree_leaves(fast), jax.tree_util.tree_leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)

    n = 2e4  # transitions seen: ν and K grow like n
    big = cs.LDSGlobals(niw.from_standard(np.array([0.2, 0.1]), 100.0, 100 * 0.3 * np.eye(D),
                                          100.0),
                        mniw.from_standard(rotation(), n * np.eye(D),
                                           n * np.array([[0.1, 0.02], [0.02, 0.08]]), n))
    exact = np.asarray(both(big)[0].potentials.J[0])
    with jax.enable_x64(False):
        b32 = tmap(lambda x: jnp.asarray(x, jnp.float32), big)
        fast32, general32 = (np.asarray(e.potentials.J[0]) for e in both(b32))
        assert fast32.dtype == general32.dtype == np.float32
    err_fast = float(np.max(np.abs(fast32 - exact)) / np.max(np.abs(exact)))
    err_general = float(np.max(np.abs(general32 - exact)) / np.max(np.abs(exact)))
    assert err_fast < 1e-5 and err_general > 100 * err_fast, (err_fast, err_general)
