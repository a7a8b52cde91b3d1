"""The switching-LDS SVAE (svae_core.models.slds_svae).

References: the conjugate LDS-SVAE for K = 1; the general expected-prior route
(svae_core.inference.expected_prior) on per-step weighted statistics; the exponential-family
inner product ⟨E[t(θ)], E[t(x)]⟩ for the state log-likelihoods; monotone coordinate ascent.
float64, tiny sizes."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svae_core.expfam import mniw, niw
from svae_core.inference import GaussianPotentials, lds_smoother
from svae_core.inference.expected_prior import expected_lds_prior
from svae_core.models import conjugate_svae as cs
from svae_core.models import slds_svae as ss
from svae_core.models.base import ModelConfig

D, P, T, K = 2, 3, 12, 3


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def config():
    return ModelConfig(latent_dim=D, obs_dim=P, encoder_hidden=(5,), decoder_hidden=(5,),
                       smoother="sequential")


def sharp_globals(key, num_states=K, strength=50.0, affine=False):
    """q(θ) with distinct, fairly concentrated state dynamics (rotations at different speeds,
    with ``affine`` also different offsets) and uneven transition rows: what mean field sees
    after some training."""
    g = ss.prior_globals(num_states, D, affine=affine)
    angles = jnp.linspace(0.2, 1.2, num_states)
    M = jax.vmap(lambda a: 0.95 * jnp.array([[jnp.cos(a), -jnp.sin(a)],
                                             [jnp.sin(a), jnp.cos(a)]]))(angles)
    if affine:
        offsets = jnp.stack([jnp.linspace(-1.0, 1.0, num_states),
                             jnp.linspace(0.5, -0.5, num_states)], -1)
        M = jnp.concatenate([M, offsets[:, :, None]], -1)
    dyn = jax.vmap(lambda m: mniw.from_standard(m, strength * jnp.eye(m.shape[-1]),
                                                0.1 * strength * jnp.eye(D), strength))(M)
    rows = jax.random.uniform(key, (num_states, num_states), minval=1.0, maxval=20.0)
    return g._replace(dynamics=dyn, transitions=g.transitions._replace(alpha_minus_one=rows))


def potentials(key, strength=2.0):
    k1, k2 = jax.random.split(key)
    J = strength * (0.5 + jax.random.uniform(k1, (T, D)))
    return GaussianPotentials(J, J * jax.random.normal(k2, (T, D)) * 2.0)


def test_one_state_is_the_conjugate_lds_svae():
    cfg = config()
    slds = ss.SLDSSVAE(cfg, 1, num_sweeps=3)
    conj = cs.ConjugateSVAE(cfg)
    y = jax.random.normal(jax.random.PRNGKey(0), (T, P))
    mask = jnp.ones(T, bool).at[4].set(False)
    p = slds.init(jax.random.PRNGKey(1), y, mask, jax.random.PRNGKey(2))
    p = jax.tree.map(lambda a: a.astype(jnp.float64), p)
    g = sharp_globals(jax.random.PRNGKey(3), 1)
    p = {"params": {**p["params"], "globals": g}}
    pc = {"params": {**p["params"], "globals": cs.LDSGlobals(
        g.init, jax.tree.map(lambda a: a[0], g.dynamics))}}
    key = jax.random.PRNGKey(4)
    a = slds.apply(p, y, mask, key, 3)
    b = conj.apply(pc, y, mask, key, 3)
    np.testing.assert_allclose(a.reconstruction, b.reconstruction, rtol=1e-10)
    np.testing.assert_allclose(a.kl, b.kl, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.marginals, 1.0)


@pytest.mark.parametrize("affine", [False, True])
def test_coordinate_ascent_never_lowers_the_surrogate_objective(affine):
    g = sharp_globals(jax.random.PRNGKey(0), affine=affine)
    for seed in range(3):
        mf = ss.mean_field(g, potentials(jax.random.PRNGKey(10 + seed)), num_sweeps=12)
        s = np.asarray(mf.surrogate)
        assert np.all(np.diff(s) >= -1e-9 * np.abs(s[:-1])), s
        assert s[-1] > s[0] + 1e-6  # the sweeps do move q(z) away from its first guess
        m = np.asarray(mf.qz.marginals)
        np.testing.assert_allclose(m.sum(-1), 1.0, rtol=1e-10)
        assert m.max(-1).mean() > 1 / K + 0.1  # informative, not uniform


@pytest.mark.parametrize("affine", [False, True])
def test_mixture_prior_equals_the_general_route_on_weighted_statistics(affine):
    g = sharp_globals(jax.random.PRNGKey(0), affine=affine)
    w = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), (T - 1, K)) * 2.0, -1)
    mine = ss.mixture_expected_prior(g, w)
    stats = jax.vmap(mniw.expected_dynamics_stats)(g.dynamics)
    per_step = tuple(jnp.einsum("tk,k...->t...", w, s) for s in stats)
    ref = expected_lds_prior(tuple(niw.expected_precision_stats(g.init)), per_step)
    for a, b in ((mine.prior.A, ref.prior.A), (mine.prior.Q, ref.prior.Q),
                 (mine.prior.m1, ref.prior.m1), (mine.prior.Q1, ref.prior.Q1),
                 (mine.prior.b, ref.prior.b), (mine.potentials.J, ref.potentials.J),
                 (mine.potentials.h, ref.potentials.h), (mine.constant, ref.constant)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("affine", [False, True])
def test_state_log_likelihoods_are_the_exponential_family_inner_products(affine):
    g = sharp_globals(jax.random.PRNGKey(0), affine=affine)
    pots = potentials(jax.random.PRNGKey(1))
    ep = ss.mixture_expected_prior(g, jnp.full((T - 1, K), 1.0 / K))
    qx = lds_smoother(ep.prior, pots, method="sequential")
    L = np.asarray(ss.state_log_likelihoods(g, qx))
    assert L.shape == (T, K) and np.all(L[0] == 0)
    theta = jax.vmap(mniw.expected_stats)(g.dynamics)
    mu, cov, cross = qx.mean, qx.cov, qx.cross_cov
    pad = (lambda a: jnp.pad(a, ((0, 1), (0, 1)))) if affine else (lambda a: a)
    for t in range(T - 1):
        m_t = jnp.append(mu[t], 1.0) if affine else mu[t]
        second_next = cov[t + 1] + jnp.outer(mu[t + 1], mu[t + 1])
        pair = (jnp.pad(cross[t].T, ((0, 0), (0, 1))) if affine else cross[t].T) \
            + jnp.outer(mu[t + 1], m_t)
        second = pad(cov[t]) + jnp.outer(m_t, m_t)
        for k in range(K):
            e = jax.tree.map(lambda a, k=k: a[k], theta)
            ref = (jnp.sum(e.Phi * second_next) + jnp.sum(e.MK * pair) + jnp.sum(e.K * second)
                   + e.nu - 0.5 * D * math.log(2 * math.pi))
            np.testing.assert_allclose(L[t + 1, k], ref, rtol=1e-9)


@pytest.mark.parametrize("affine", [False, True])
def test_expected_statistics_count_every_step_once(affine):
    g = sharp_globals(jax.random.PRNGKey(0), affine=affine)
    mf = ss.mean_field(g, potentials(jax.random.PRNGKey(2)), num_sweeps=4)
    stats = ss.expected_stats(mf.qz, mf.qx, affine)
    np.testing.assert_allclose(jnp.sum(stats.dynamics.nu), T - 1, rtol=1e-10)
    np.testing.assert_allclose(jnp.sum(stats.transitions.alpha_minus_one), T - 1, rtol=1e-10)
    np.testing.assert_allclose(jnp.sum(stats.initial.alpha_minus_one), 1.0, rtol=1e-10)
    # the state-weighted second moments add up to the single-LDS sums
    one = cs.expected_local_stats(mf.qx)
    np.testing.assert_allclose(jnp.sum(stats.dynamics.Phi, 0), one.dynamics.Phi, rtol=1e-10)
    np.testing.assert_allclose(jnp.sum(stats.dynamics.MK, 0)[:, :D], one.dynamics.MK,
                               rtol=1e-10)
    if affine:  # the offset column: Σ_t E[x_{t+1}] over the steps into x_2..x_T
        np.testing.assert_allclose(jnp.sum(stats.dynamics.MK, 0)[:, D],
                                   jnp.sum(mf.qx.mean[1:], 0), rtol=1e-10)
        np.testing.assert_allclose(jnp.sum(stats.dynamics.K, 0)[D, D], T - 1, rtol=1e-10)


def test_task_takes_the_svi_step_on_every_global():
    """slds_svae_task: one update of q(θ) is η + ρ(η₀ + N·mean_B E[t] − η) on the Dirichlets,
    the NIW and every state's MNIW alike, from the statistics of the task's own model."""
    import optax

    from svae_core.experiments.runs import slds_svae_task
    from svae_core.training import TrainConfig

    cfg = ModelConfig(latent_dim=D, obs_dim=P, smoother="sequential")
    S, B, rho = 5, 2, 0.3
    train_config = TrainConfig(steps=10, batch_size=B)
    data = {"y": jax.random.normal(jax.random.PRNGKey(9), (S, T, P)),
            "observed": jnp.ones((S, T), bool)}
    batch = jax.tree.map(lambda x: x[:B], data)
    task = slds_svae_task(cfg, train_config, K, S, T, num_sweeps=3)
    params = task.init(jax.random.PRNGKey(10), data)
    glob = params["params"]["globals"]
    key = jax.random.PRNGKey(11)
    grads = jax.jit(jax.grad(lambda p: task.loss(p, batch, key, 0)[0]))(params)
    _, k_elbo = jax.random.split(key)
    model = ss.SLDSSVAE(cfg, K, S, num_sweeps=3)
    out = jax.jit(jax.vmap(lambda y, k: model.apply(params, y, jnp.ones(T, bool), k)))(
        batch["y"], jax.random.split(k_elbo, B))
    target = jax.tree.map(lambda e0, t: e0 + S * jnp.mean(t, 0), ss.prior_globals(K, D),
                          out.stats)
    tx = task.optimizer({"networks": 1e-3, "globals": rho}, train_config, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)["params"]["globals"]
    for a, e, t in zip(*(jax.tree.leaves(x) for x in (new, glob, target)), strict=True):
        np.testing.assert_allclose(a, e + rho * (t - e), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("affine", [False, True])
def test_globals_from_a_segmentation_are_the_conjugate_posterior_of_those_paths(affine):
    rng = np.random.default_rng(0)
    S_, T_ = 3, 7
    x = rng.normal(size=(S_, T_, D))
    z = rng.integers(0, K, (S_, T_))
    prior = ss.prior_globals(K, D, affine=affine)
    g = ss.globals_from_segmentation(prior, x, z, weight=0.5)
    for k in range(K):  # state k's MNIW, by a loop over the steps into x_{t+1}
        Phi = sum(np.outer(x[s, t + 1], x[s, t + 1]) for s in range(S_) for t in range(T_ - 1)
                  if z[s, t + 1] == k)
        count = np.sum(z[:, 1:] == k)
        np.testing.assert_allclose(g.dynamics.Phi[k], prior.dynamics.Phi[k] + 0.5 * Phi,
                                   rtol=1e-12)
        np.testing.assert_allclose(g.dynamics.nu[k], prior.dynamics.nu[k] + 0.5 * count)
        x_in = lambda s, t: np.append(x[s, t], 1.0) if affine else x[s, t]
        MK = sum(np.outer(x[s, t + 1], x_in(s, t)) for s in range(S_) for t in range(T_ - 1)
                 if z[s, t + 1] == k)
        np.testing.assert_allclose(g.dynamics.MK[k], prior.dynamics.MK[k] + 0.5 * MK,
                                   rtol=1e-12)
    trans = np.zeros((K, K))
    for s in range(S_):
        for t in range(T_ - 1):
            trans[z[s, t], z[s, t + 1]] += 1
    np.testing.assert_allclose(g.transitions.alpha_minus_one,
                               prior.transitions.alpha_minus_one + 0.5 * trans)
    np.testing.assert_allclose(g.init.km, prior.init.km + 0.5 * x[:, 0].sum(0), rtol=1e-12)


def test_offsets_let_mean_field_find_states_that_differ_only_in_their_fixed_points():
    """Two states with the same A = 0.7·I but fixed points (±2, 0): paths simulated from them
    and observed with noise; q(z) under the true q(θ) (concentrated) recovers the states."""
    rng = np.random.default_rng(0)
    T_, A = 60, 0.7
    fixed = np.array([[2.0, 0.0], [-2.0, 0.0]])
    z = np.arange(T_) // 10 % 2
    x = np.zeros((T_, D))
    for t in range(1, T_):
        x[t] = A * x[t - 1] + (1 - A) * fixed[z[t]] + 0.2 * rng.normal(size=D)
    y = x + 0.3 * rng.normal(size=(T_, D))
    J = np.full((T_, D), 1 / 0.09)
    g = ss.prior_globals(2, D, affine=True)
    M = np.stack([np.concatenate([A * np.eye(D), (1 - A) * f[:, None]], 1) for f in fixed])
    strength = 1e3
    dyn = jax.vmap(lambda m: mniw.from_standard(m, strength * jnp.eye(D + 1),
                                                0.04 * strength * jnp.eye(D), strength))(
        jnp.asarray(M))
    g = g._replace(dynamics=dyn)
    mf = ss.mean_field(g, GaussianPotentials(jnp.asarray(J), jnp.asarray(J * y)), 5)
    found = np.asarray(mf.qz.marginals).argmax(-1)[1:]
    assert np.mean(found == z[1:]) > 0.9
