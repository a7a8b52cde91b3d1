"""The switching-LDS SVAE (svae_core.models.slds_svae).

References: the conjugate LDS-SVAE for K = 1; the general expected-prior route
(svae_core.inference.expected_prior) on per-step weighted statistics; the exponential-family
inner product ⟨E[t(θ)], E[t(x)]⟩ for the state log-likelihoods; monotone coordinate ascent.
float64, tiny sizes.

Compilation, not arithmetic, is what these tests cost: each model computation runs under one
``jax.jit`` (an eager ``lax.scan`` would compile its body anew on every call), the mean field
of the (T, K) problem has one sweep count so that its tests share one program, and the
references are written in NumPy."""

from __future__ import annotations

import functools
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
SWEEPS = 12  # mean-field sweeps for every (T, K) problem here, so that they share one program

# One compiled program per (shapes, num_sweeps), shared by the tests.
mean_field = jax.jit(ss.mean_field, static_argnums=2)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def config():
    return ModelConfig(latent_dim=D, obs_dim=P, encoder_hidden=(5,), decoder_hidden=(5,),
                       smoother="sequential")


@functools.partial(jax.jit, static_argnames=("num_states", "strength", "affine"))
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


@jax.jit
def potentials(key, strength=2.0):
    k1, k2 = jax.random.split(key)
    J = strength * (0.5 + jax.random.uniform(k1, (T, D)))
    return GaussianPotentials(J, J * jax.random.normal(k2, (T, D)) * 2.0)


def test_one_state_is_the_conjugate_lds_svae():
    cfg = config()
    slds = ss.SLDSSVAE(cfg, 1, num_sweeps=3)
    conj = cs.ConjugateSVAE(cfg)

    @jax.jit
    def both():
        y = jax.random.normal(jax.random.PRNGKey(0), (T, P))
        mask = jnp.ones(T, bool).at[4].set(False)
        p = slds.init(jax.random.PRNGKey(1), y, mask, jax.random.PRNGKey(2))
        p = jax.tree.map(lambda a: a.astype(jnp.float64), p)
        g = sharp_globals(jax.random.PRNGKey(3), 1)
        p = {"params": {**p["params"], "globals": g}}
        pc = {"params": {**p["params"], "globals": cs.LDSGlobals(
            g.init, jax.tree.map(lambda a: a[0], g.dynamics))}}
        key = jax.random.PRNGKey(4)
        return slds.apply(p, y, mask, key, 3), conj.apply(pc, y, mask, key, 3)

    a, b = both()
    np.testing.assert_allclose(a.reconstruction, b.reconstruction, rtol=1e-10)
    np.testing.assert_allclose(a.kl, b.kl, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.marginals, 1.0)


@pytest.mark.parametrize("affine", [False, True])
def test_coordinate_ascent_never_lowers_the_surrogate_objective(affine):
    g = sharp_globals(jax.random.PRNGKey(0), affine=affine)
    for seed in range(3):
        mf = mean_field(g, potentials(jax.random.PRNGKey(10 + seed)), SWEEPS)
        s = np.asarray(mf.surrogate)
        assert np.all(np.diff(s) >= -1e-9 * np.abs(s[:-1])), s
        assert s[-1] > s[0] + 1e-6  # the sweeps do move q(z) away from its first guess
        m = np.asarray(mf.qz.marginals)
        np.testing.assert_allclose(m.sum(-1), 1.0, rtol=1e-10)
        assert m.max(-1).mean() > 1 / K + 0.1  # informative, not uniform


@pytest.mark.parametrize("affine", [False, True])
def test_mixture_prior_equals_the_general_route_on_weighted_statistics(affine):
    @jax.jit
    def both(g, key):
        w = jax.nn.softmax(jax.random.normal(key, (T - 1, K)) * 2.0, -1)
        stats = jax.vmap(mniw.expected_dynamics_stats)(g.dynamics)
        per_step = tuple(jnp.einsum("tk,k...->t...", w, s) for s in stats)
        return (ss.mixture_expected_prior(g, w),
                expected_lds_prior(tuple(niw.expected_precision_stats(g.init)), per_step))

    mine, ref = both(sharp_globals(jax.random.PRNGKey(0), affine=affine), jax.random.PRNGKey(1))
    for a, b in ((mine.prior.A, ref.prior.A), (mine.prior.Q, ref.prior.Q),
                 (mine.prior.m1, ref.prior.m1), (mine.prior.Q1, ref.prior.Q1),
                 (mine.prior.b, ref.prior.b), (mine.potentials.J, ref.potentials.J),
                 (mine.potentials.h, ref.potentials.h), (mine.constant, ref.constant)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("affine", [False, True])
def test_state_log_likelihoods_are_the_exponential_family_inner_products(affine):
    @jax.jit
    def smoothed(g, pots):
        ep = ss.mixture_expected_prior(g, jnp.full((T - 1, K), 1.0 / K))
        qx = lds_smoother(ep.prior, pots, method="sequential")
        return ss.state_log_likelihoods(g, qx), jax.vmap(mniw.expected_stats)(g.dynamics), qx

    L, theta, qx = jax.tree.map(np.asarray, smoothed(
        sharp_globals(jax.random.PRNGKey(0), affine=affine), potentials(jax.random.PRNGKey(1))))
    assert L.shape == (T, K) and np.all(L[0] == 0)
    mu, cov, cross = qx.mean, qx.cov, qx.cross_cov
    pad = (lambda a: np.pad(a, ((0, 1), (0, 1)))) if affine else (lambda a: a)
    for t in range(T - 1):
        m_t = np.append(mu[t], 1.0) if affine else mu[t]
        second_next = cov[t + 1] + np.outer(mu[t + 1], mu[t + 1])
        pair = (np.pad(cross[t].T, ((0, 0), (0, 1))) if affine else cross[t].T) \
            + np.outer(mu[t + 1], m_t)
        second = pad(cov[t]) + np.outer(m_t, m_t)
        for k in range(K):
            e = jax.tree.map(lambda a, k=k: a[k], theta)
            ref = (np.sum(e.Phi * second_next) + np.sum(e.MK * pair) + np.sum(e.K * second)
                   + e.nu - 0.5 * D * math.log(2 * math.pi))
            np.testing.assert_allclose(L[t + 1, k], ref, rtol=1e-9)


@pytest.mark.parametrize("affine", [False, True])
def test_expected_statistics_count_every_step_once(affine):
    g = sharp_globals(jax.random.PRNGKey(0), affine=affine)
    mf = mean_field(g, potentials(jax.random.PRNGKey(2)), SWEEPS)

    @jax.jit
    def stats_of(qz, qx):
        return ss.expected_stats(qz, qx, affine), cs.expected_local_stats(qx)

    stats, one = jax.tree.map(np.asarray, stats_of(mf.qz, mf.qx))
    np.testing.assert_allclose(np.sum(stats.dynamics.nu), T - 1, rtol=1e-10)
    np.testing.assert_allclose(np.sum(stats.transitions.alpha_minus_one), T - 1, rtol=1e-10)
    np.testing.assert_allclose(np.sum(stats.initial.alpha_minus_one), 1.0, rtol=1e-10)
    # the state-weighted second moments add up to the single-LDS sums
    np.testing.assert_allclose(np.sum(stats.dynamics.Phi, 0), one.dynamics.Phi, rtol=1e-10)
    np.testing.assert_allclose(np.sum(stats.dynamics.MK, 0)[:, :D], one.dynamics.MK,
                               rtol=1e-10)
    if affine:  # the offset column: Σ_t E[x_{t+1}] over the steps into x_2..x_T
        np.testing.assert_allclose(np.sum(stats.dynamics.MK, 0)[:, D],
                                   np.sum(np.asarray(mf.qx.mean)[1:], 0), rtol=1e-10)
        np.testing.assert_allclose(np.sum(stats.dynamics.K, 0)[D, D], T - 1, rtol=1e-10)


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
    params = jax.jit(task.init)(jax.random.PRNGKey(10), data)
    glob = params["params"]["globals"]
    model = ss.SLDSSVAE(cfg, K, S, num_sweeps=3)

    @jax.jit
    def update_and_target(params, key):
        """The task's update of the globals, and the target from the same minibatch's stats."""
        grads = jax.grad(lambda p: task.loss(p, batch, key, 0)[0])(params)
        _, k_elbo = jax.random.split(key)
        out = jax.vmap(lambda y, k: model.apply(params, y, jnp.ones(T, bool), k))(
            batch["y"], jax.random.split(k_elbo, B))
        target = jax.tree.map(lambda e0, t: e0 + S * jnp.mean(t, 0), ss.prior_globals(K, D),
                              out.stats)
        tx = task.optimizer({"networks": 1e-3, "globals": rho}, train_config, params)
        updates, _ = tx.update(grads, tx.init(params), params)
        return optax.apply_updates(params, updates)["params"]["globals"], target

    new, target = update_and_target(params, jax.random.PRNGKey(11))
    for a, e, t in zip(*(jax.tree.leaves(x) for x in (new, glob, target)), strict=True):
        np.testing.assert_allclose(a, e + rho * (t - e), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("affine", [False, True])
def test_globals_from_a_segmentation_are_the_conjugate_posterior_of_those_paths(affine):
    rng = np.random.default_rng(0)
    S_, T_ = 3, 7
    x = rng.normal(size=(S_, T_, D))
    z = rng.integers(0, K, (S_, T_))

    @jax.jit
    def posterior(x, z):
        prior = ss.prior_globals(K, D, affine=affine)
        return prior, ss.globals_from_segmentation(prior, x, z, weight=0.5)

    prior, g = jax.tree.map(np.asarray, posterior(x, z))
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
    M = np.stack([np.concatenate([A * np.eye(D), (1 - A) * f[:, None]], 1) for f in fixed])
    strength = 1e3

    @jax.jit
    def true_globals(M):
        dyn = jax.vmap(lambda m: mniw.from_standard(m, strength * jnp.eye(D + 1),
                                                    0.04 * strength * jnp.eye(D), strength))(M)
        return ss.prior_globals(2, D, affine=True)._replace(dynamics=dyn)

    mf = mean_field(true_globals(M), GaussianPotentials(jnp.asarray(J), jnp.asarray(J * y)), 5)
    found = np.asarray(mf.qz.marginals).argmax(-1)[1:]
    assert np.mean(found == z[1:]) > 0.9
