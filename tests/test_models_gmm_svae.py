"""The GMM-SVAE (svae_core.models.gmm_svae): local mean field, gradients through its fixed
point, the bound, the global KL and clustering.

Independent references: scipy.stats.multivariate_normal for the exact mixture likelihood of a
linear-Gaussian decoder, the textbook Gaussian KL in NumPy, central finite differences in
float64, and a NumPy adjusted Rand index. Sizes are tiny, so compiling dominates: each test
runs its JAX work in a few jitted programs (flax init and library calls included, which outside
jit would compile every small operation separately) and prepares inputs in NumPy.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
from scipy.special import logsumexp

from svae_core.expfam import dirichlet, niw
from svae_core.expfam.gaussian import GaussianNatural
from svae_core.inference import GaussianPotentials
from svae_core.models import gmm_svae as g

tmap = jax.tree_util.tree_map


def spd(rng, dim, scale=1.0):
    a = rng.normal(size=(dim, dim))
    return scale * (a @ a.T / dim + 0.5 * np.eye(dim))


def tree_dot(a, b):
    return sum(float(np.sum(np.asarray(x) * np.asarray(y))) for x, y in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


def adjusted_rand_index(a, b):
    """Hubert & Arabie's ARI from the contingency table of two labelings."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)

    def pairs(x):
        return np.sum(x * (x - 1) / 2)

    n = len(a)
    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / (n * (n - 1) / 2)
    return (index - expected) / (0.5 * (rows + cols) - expected)


def spread_globals(K, D, seed, spread=2.0, kappa=4.0):
    """q(θ) with distinct component means (spread apart) and some confidence in them."""
    prior = g.prior_globals(K, D, kappa=kappa)
    means = spread * np.random.default_rng(seed).normal(size=(K, D))
    alpha = np.random.default_rng(seed + 1).uniform(1.0, 4.0, size=K)
    return g.GMMGlobals(dirichlet.from_standard(jnp.asarray(alpha)),
                        g.with_means(prior.niw, means))


# ----------------------------------------------------------------------------- (1) fixed point


def test_local_step_is_a_fixed_point_reached_by_monotone_coordinate_ascent():
    with jax.enable_x64(True):
        K, D, B = 4, 2, 6
        rng = np.random.default_rng(0)
        pots = GaussianPotentials(rng.uniform(0.3, 2.0, (B, D)), rng.normal(size=(B, D)))

        @jax.jit
        def run(pots):
            """L̂ after each half step of 40 sweeps from uniform r (B, 80); the converged local
            posterior, one more sweep from it, and L̂ there."""
            stats = g.expected_global_stats(spread_globals(K, D, seed=0))

            def trace(pot):
                def sweep(log_r, _):
                    qx = g.gaussian_step(jnp.exp(log_r), stats, pot)
                    after_gauss = g.surrogate_objective(log_r, qx, stats, pot)
                    log_r = g.label_step(qx, stats)
                    after_label = g.surrogate_objective(log_r, qx, stats, pot)
                    return log_r, jnp.stack([after_gauss, after_label])

                _, values = jax.lax.scan(sweep, jnp.full((K,), -math.log(K)), None, length=40)
                return values.reshape(-1)

            post = g.batch_local_meanfield(stats, pots, tol=1e-12, max_iter=1000)

            def again(p, pot):
                qx = g.gaussian_step(p.responsibilities, stats, pot)
                return qx, jnp.exp(g.label_step(qx, stats))

            qx, resp = jax.vmap(again)(post, pots)
            final = jax.vmap(lambda p, pot: g.surrogate_objective(
                p.log_resp, GaussianNatural(p.J, p.h), stats, pot))(post, pots)
            return jax.vmap(trace)(pots), post, qx, resp, final

        values, post, qx, resp, final = jax.tree.map(np.asarray, run(pots))
        steps = np.diff(values, axis=1)
        assert steps.min() > -1e-12, steps.min()  # coordinate ascent never decreases L̂
        assert np.all(values[:, -1] > values[:, 0])

        assert int(post.num_iters.max()) < 1000
        assert float(post.residual.max()) < 1e-11
        np.testing.assert_allclose(resp, post.responsibilities, atol=1e-10)
        np.testing.assert_allclose(qx.J, post.J, atol=1e-10)
        np.testing.assert_allclose(qx.h, post.h, atol=1e-10)
        np.testing.assert_allclose(post.responsibilities.sum(-1), 1.0, atol=1e-12)
        # The fixed point is where the monotone trace ends up.
        np.testing.assert_allclose(final, values[:, -1], atol=1e-8)


# ----------------------------------------------------------------------------- (2) gradients


def test_implicit_gradient_matches_finite_differences_and_one_step_is_biased():
    """Central differences (ε = 1e-5, float64) of the converged minibatch ELBO (tol 1e-13)
    along random directions of the encoder parameters and of the global natural parameters.
    Implicit differentiation agrees to < 1e-6 relative error (measured 5e-11 to 2e-8); the
    2016 one-step gradient misses by 0.2% and 8% along the encoder directions and by 9× and
    84% along the globals directions here (points with uncertain responsibilities)."""
    with jax.enable_x64(True):
        K, D, P, B = 3, 2, 3, 5
        cfg = g.GMMSVAEConfig(latent_dim=D, obs_dim=P, num_components=K, encoder_hidden=(8,),
                              decoder_hidden=(8,), meanfield_tol=1e-13, meanfield_max_iter=3000)
        model = g.GMMSVAE(cfg)

        @jax.jit
        def start():
            """The data, initial encoder and decoder parameters, the prior, and q(θ) with
            random means."""
            key = jax.random.PRNGKey(0)
            y = jax.random.normal(key, (B, P))
            return (y, model.init(key, y, method="init_networks"), g.prior_globals(K, D),
                    g.init_globals(jax.random.PRNGKey(1), K, D, mean_scale=1.0))

        # NumPy float64 from here on: the perturbations below are then NumPy arithmetic.
        y, params, prior, globals_ = tmap(lambda a: np.asarray(a, np.float64), start())
        sample_key = jax.random.PRNGKey(2)

        def elbo_fn(mode):
            m = g.GMMSVAE(dataclasses.replace(cfg, fixed_point_gradient=mode))
            return lambda p, gl: m.apply(p, y, gl, prior, sample_key, 100.0, 2).elbo

        f = jax.jit(elbo_fn("implicit"))  # the forward pass is the same in both modes
        grads = {mode: jax.jit(jax.grad(elbo_fn(mode), argnums=(0, 1)))(params, globals_)
                 for mode in g.FIXED_POINT_GRADIENTS}
        rng = np.random.default_rng(0)
        eps = 1e-5
        errors = {mode: [] for mode in grads}
        for which in (0, 1):
            for _ in range(2):
                base_point = (params, globals_)[which]
                v = tmap(lambda a: rng.normal(size=np.shape(a)), base_point)
                if which == 1:  # a symmetric direction for the NIW's Phi
                    v = v._replace(niw=v.niw._replace(
                        Phi=0.5 * (v.niw.Phi + np.swapaxes(v.niw.Phi, -1, -2))))
                plus = tmap(lambda a, b: a + eps * b, base_point, v)
                minus = tmap(lambda a, b: a - eps * b, base_point, v)
                args_p = (plus, globals_) if which == 0 else (params, plus)
                args_m = (minus, globals_) if which == 0 else (params, minus)
                fd = (float(f(*args_p)) - float(f(*args_m))) / (2 * eps)
                for mode, grad in grads.items():
                    errors[mode].append(abs(tree_dot(grad[which], v) - fd) / abs(fd))
        assert max(errors["implicit"]) < 1e-6, errors
        assert max(errors["one_step"]) > 1e-2, errors  # biased: it drops ψ -> r* -> q(x)
        # The decoder does not enter the local step: both modes agree on its gradient.
        for a, b in zip(jax.tree_util.tree_leaves(grads["implicit"][0]["params"]["decoder"]),
                        jax.tree_util.tree_leaves(grads["one_step"][0]["params"]["decoder"]),
                        strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- (3) the bound


def _linear_gaussian_problem(K, seed=0, N=20, D=2, P=3):
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(P, D))
    d = rng.normal(size=P)
    v = rng.uniform(0.3, 0.6, size=P)
    pi = rng.dirichlet(np.full(K, 3.0))
    mus = 3.0 * rng.normal(size=(K, D))
    covs = np.stack([spd(rng, D) for _ in range(K)])
    z = rng.choice(K, size=N, p=pi)
    x = np.stack([rng.multivariate_normal(mus[k], covs[k]) for k in z])
    y = x @ C.T + d + rng.normal(size=(N, P)) * np.sqrt(v)
    log_p = logsumexp(np.stack([np.log(pi[k]) + st.multivariate_normal(
        mus[k] @ C.T + d, C @ covs[k] @ C.T + np.diag(v)).logpdf(y) for k in range(K)]), axis=0)
    return dict(C=C, d=d, v=v, pi=pi, mus=mus, covs=covs, y=y, log_p=log_p)


def _linear_model(prob):
    K = len(prob["pi"])
    D, P = prob["C"].shape[1], prob["C"].shape[0]
    cfg = g.GMMSVAEConfig(latent_dim=D, obs_dim=P, num_components=K, encoder_hidden=(),
                          linear_decoder=True, variance_floor=0.0, meanfield_tol=1e-12,
                          meanfield_max_iter=2000)
    model = g.GMMSVAE(cfg)
    params = jax.jit(model.init, static_argnames="method")(jax.random.PRNGKey(0), prob["y"],
                                                         method="init_networks")
    params = tmap(lambda a: np.asarray(a, np.float64), params)
    dec = {"kernel": jnp.asarray(prob["C"].T), "bias": jnp.asarray(prob["d"]),
           "raw_variance": jnp.asarray(np.log(np.expm1(prob["v"])))}
    params = {"params": {**params["params"], "decoder": dec}}
    return model, params


def _exact_potential(prob):
    C, v = prob["C"], prob["v"]
    J = C.T @ np.diag(1 / v) @ C
    h = (prob["y"] - prob["d"]) / v @ C
    return GaussianPotentials(jnp.asarray(np.broadcast_to(J, (len(h), *J.shape))),
                              jnp.asarray(h))


def _gaussian_kl(m0, S0, m1, S1):
    D = len(m0)
    S1i = np.linalg.inv(S1)
    return 0.5 * (np.trace(S1i @ S0) + (m1 - m0) @ S1i @ (m1 - m0) - D
                  + np.linalg.slogdet(S1)[1] - np.linalg.slogdet(S0)[1])


def test_local_elbo_bounds_the_exact_mixture_likelihood_and_is_tight_for_one_component():
    """Linear-Gaussian decoder y = Cx + d + N(0, diag v) and a fixed θ, given to the local step
    as the point values of the statistics (g.point_mass_stats), reconstruction in closed form.
    Then log p(y | θ) = log Σ_k π_k N(y | Cμ_k + d, CΣ_kCᵀ + R) (scipy) bounds ELBO_n for every
    point and every potential; the exact conjugate potential (J = CᵀR⁻¹C, h = CᵀR⁻¹(y − d))
    shrinks the gap, to exactly 0 for K = 1."""
    with jax.enable_x64(True):
        prob = _linear_gaussian_problem(K=3)
        model, params = _linear_model(prob)
        one = _linear_gaussian_problem(K=1, seed=3)
        model1, params1 = _linear_model(one)
        rng = np.random.default_rng(1)
        other_pots = GaussianPotentials(rng.uniform(0.2, 1.0, (20, 2)), rng.normal(size=(20, 2)))

        @jax.jit
        def run(exact_pots, other_pots, one_pots):
            """Local terms at θ for the exact and another potential; the held-out ELBO under
            q(θ) concentrated at θ (κ = ν = α/π = 1e8); the K = 1 problem's ELBO."""
            stats = g.point_mass_stats(prob["pi"], prob["mus"], prob["covs"])
            terms = [model.apply(params, prob["y"], stats, potentials=pots, method="local_terms")
                     for pots in (exact_pots, other_pots)]
            big = 1e8
            concentrated = g.GMMGlobals(
                dirichlet.from_standard(big * prob["pi"]),
                jax.vmap(niw.from_standard)(prob["mus"], jnp.full(3, big), big * prob["covs"],
                                            jnp.full(3, big)))
            heldout = model.apply(params, prob["y"], concentrated, potentials=exact_pots,
                                  method="heldout_elbo")
            stats1 = g.point_mass_stats(one["pi"], one["mus"], one["covs"])
            elbo1 = model1.apply(params1, one["y"], stats1, potentials=one_pots,
                                 method="local_terms").elbo
            return *terms, heldout, elbo1

        exact, other, heldout, elbo1 = jax.tree.map(np.asarray, run(
            _exact_potential(prob), other_pots, _exact_potential(one)))
        gap_exact = prob["log_p"] - np.asarray(exact.elbo)
        gap_other = prob["log_p"] - np.asarray(other.elbo)
        assert gap_exact.min() > -1e-10 and gap_other.min() > -1e-10
        # Measured: exact potential mean gap 0.24 nats (max 0.66), other 2.6 (min 0.20).
        assert np.all(gap_exact < gap_other), (gap_exact, gap_other)
        assert gap_exact.mean() < 0.1 * gap_other.mean()

        # The local KL against the textbook form for a point mass θ:
        # Σ_k r_k [log r_k − log π_k + KL(q(x) ‖ N(μ_k, Σ_k))].
        post = exact.posterior
        for n in range(3):
            r = np.asarray(post.responsibilities[n])
            m, S = np.asarray(post.mean[n]), np.asarray(post.cov[n])
            ref = sum(r[k] * (np.log(r[k]) - np.log(prob["pi"][k])
                              + _gaussian_kl(m, S, prob["mus"][k], prob["covs"][k]))
                      for k in range(3))
            np.testing.assert_allclose(exact.kl[n], ref, rtol=1e-10)

        # q(θ) concentrated at θ gives the same held-out ELBO.
        np.testing.assert_allclose(heldout, exact.elbo, rtol=0, atol=1e-5)
        np.testing.assert_allclose(elbo1, one["log_p"], rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- (4) global KL


def test_global_kl_vanishes_at_the_prior_and_is_positive_elsewhere():
    with jax.enable_x64(True):
        @jax.jit
        def run():
            """The prior, its first component's standard parameters, KL(prior ‖ prior), an
            initial q(θ) and KL(q ‖ prior)."""
            prior = g.prior_globals(5, 3)
            q = g.init_globals(jax.random.PRNGKey(0), 5, 3)
            return (prior, niw.to_standard(tmap(lambda a: a[0], prior.niw)),
                    g.global_kl(prior, prior), q, g.global_kl(q, prior))

        prior, std, kl_prior, q, kl = jax.tree.map(np.asarray, run())
        assert abs(float(kl_prior)) < 1e-12
        np.testing.assert_allclose(prior.dirichlet.alpha_minus_one, 0.01)
        np.testing.assert_allclose(std.S, 3.5 * np.eye(3))
        assert float(std.kappa) == 0.5 and float(std.nu) == 3.5
        np.testing.assert_allclose(std.m, 0.0)
        # Only the means moved: KL = Σ_k (κ/2) E[(m_k)ᵀΣ⁻¹m_k] = Σ_k (κ/2) ν m_kᵀS⁻¹m_k.
        means = q.niw.km / 0.5
        np.testing.assert_allclose(float(kl), np.sum(0.5 * 0.5 * 3.5 * means**2 / 3.5),
                                   rtol=1e-10)


# ----------------------------------------------------------------------------- (5) clustering


def test_responsibilities_recover_separated_clusters_with_identity_networks():
    """Three well-separated 2-D clusters; identity potentials (J = 25·I, h = 25·y: q(x) is
    pulled to y) and conjugate updates of q(θ) from expected_local_stats (VB for a GMM).
    The hard assignments match the truth (ARI ≥ 0.99), through the model's method too."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        centres = np.array([[-6.0, 0.0], [6.0, 0.0], [0.0, 8.0]])
        truth = np.repeat(np.arange(3), 40)
        y = centres[truth] + 0.7 * rng.normal(size=(120, 2))
        pots = GaussianPotentials(np.full((120, 2), 25.0), 25.0 * y)
        # Farthest-point initialisation of the component means.
        chosen = [0]
        for _ in range(2):
            dist = np.min(((y[:, None] - y[chosen][None]) ** 2).sum(-1), axis=1)
            chosen.append(int(np.argmax(dist)))
        cfg = g.GMMSVAEConfig(latent_dim=2, obs_dim=2, num_components=3, encoder_hidden=(),
                              decoder_hidden=(), meanfield_tol=1e-8, meanfield_max_iter=200)
        model = g.GMMSVAE(cfg)

        @jax.jit
        def start(means):
            """The prior, and q(θ) = the prior with the given component means."""
            prior = g.prior_globals(3, 2)
            return prior, g.GMMGlobals(prior.dirichlet, g.with_means(prior.niw, means))

        @jax.jit
        def vb_step(prior, gl, pots):
            post = g.batch_local_meanfield(g.expected_global_stats(gl), pots, tol=1e-8,
                                           max_iter=200)
            stats = g.expected_local_stats(post)
            return tmap(jnp.add, prior, stats), post, stats

        @jax.jit
        def check(gl, post, pots):
            """The model's responsibilities under gl, and niw.likelihood_stats of the means
            weighted by component 1's responsibilities."""
            params = model.init(jax.random.PRNGKey(0), y, method="init_networks")
            return (model.apply(params, y, gl, potentials=pots, method="responsibilities"),
                    niw.likelihood_stats(post.mean, weights=post.responsibilities[:, 1]))

        prior, globals_ = start(y[chosen])
        for _ in range(15):
            globals_, post, stats = vb_step(prior, globals_, pots)
        resp, ref = check(globals_, post, pots)
        post, stats = jax.tree.map(np.asarray, (post, stats))
        labels = post.responsibilities.argmax(-1)
        assert adjusted_rand_index(truth, labels) >= 0.99

        # The statistics are niw.likelihood_stats of the means, weighted by r_k, plus Σ r cov.
        np.testing.assert_allclose(stats.dirichlet.alpha_minus_one.sum(), 120.0, rtol=1e-12)
        r1 = post.responsibilities[:, 1]
        np.testing.assert_allclose(stats.niw.Phi[1], ref.Phi + np.einsum(
            "n,nij->ij", r1, post.cov), rtol=1e-10)
        np.testing.assert_allclose(stats.niw.km[1], ref.km, rtol=1e-10)
        np.testing.assert_allclose(stats.niw.kappa[1], ref.kappa, rtol=1e-12)
        assert adjusted_rand_index(truth, np.asarray(resp.argmax(-1))) >= 0.99


# ----------------------------------------------------------------------------- float32 path


def test_default_config_trains_in_float32():
    """The 2016 sizes (K = 15, D = 2, 2×40 tanh MLPs) in float32: finite ELBO and gradients
    for the networks and the globals, normalised responsibilities, statistics that count the
    batch."""
    cfg = g.GMMSVAEConfig()
    model = g.GMMSVAE(cfg)
    y = 5.0 * np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)

    @jax.jit
    def loss_and_grad(key):
        """Loss, terms and gradients at the initial networks and q(θ)."""
        params = model.init(jax.random.PRNGKey(1), y, method="init_networks")
        prior = g.prior_globals(15, 2)
        globals_ = g.init_globals(jax.random.PRNGKey(2), 15, 2, mean_scale=3.0)

        def loss(p, gl):
            out = model.apply(p, y, gl, prior, key, 500, 1)
            return -out.elbo, out
        return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, globals_)

    (value, out), grads = jax.tree.map(np.asarray, loss_and_grad(jax.random.PRNGKey(3)))
    assert value.dtype == jnp.float32 and np.isfinite(float(value))
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(grads))
    np.testing.assert_allclose(out.responsibilities.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out.stats.dirichlet.alpha_minus_one.sum(), 32.0, rtol=1e-5)
    assert float(out.global_kl) > 0 and float(out.local_kl) > 0


def test_first_term_natural_gradient_is_eq4_first_term_and_second_term_switches():
    """With the path through the local optimum stopped (config "first", or second_term False,
    traced), F⁻¹ times the gradient of the per-point loss, times N, is η − η₀ − (N/|B|)E[t]:
    Eq. 4's first term in closed form (float64, fisher_solve on each member). With the path
    live the gradient differs, by the second term."""
    from svae_core.natgrad import fisher_solve

    with jax.enable_x64(True):
        K, D, N = 3, 2, 40
        model = g.GMMSVAE(g.GMMSVAEConfig(latent_dim=D, obs_dim=2, num_components=K,
                                          encoder_hidden=(8,), decoder_hidden=(8,)))
        first = model.clone(config=dataclasses.replace(model.config, global_gradient="first"))

        @jax.jit
        def run(key):
            """Eq. 4's first term in closed form, the natural gradient with the path stopped
            (config "first"), and the Euclidean gradients: "first", then second_term False and
            True (vmapped: one traced program for both)."""
            y = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (10, 2))
            params = model.init(jax.random.PRNGKey(1), y, method="init_networks")
            prior = g.prior_globals(K, D)
            glob = spread_globals(K, D, seed=3)

            def grad(m, live):
                def loss(gl):
                    out = m.apply(params, y, gl, prior, key, N, 1, second_term=live)
                    return -out.elbo, out.stats
                return jax.grad(loss, has_aux=True)(glob)

            g_first, stats = grad(first, True)
            both = jax.vmap(lambda live: grad(model, live)[0])(jnp.array([False, True]))
            natural = g.GMMGlobals(
                fisher_solve(dirichlet.log_partition, glob.dirichlet, g_first.dirichlet),
                jax.vmap(lambda e, v: fisher_solve(niw.log_partition, e, v))(glob.niw,
                                                                            g_first.niw))
            closed = tmap(lambda e, e0, t: e - e0 - (N / y.shape[0]) * t, glob, prior, stats)
            return (closed, natural, g_first, tmap(lambda a: a[0], both),
                    tmap(lambda a: a[1], both))

        closed, natural, g_first, g_off, g_live = jax.tree.map(np.asarray,
                                                               run(jax.random.PRNGKey(4)))
        for a, b in zip(jax.tree_util.tree_leaves(tmap(lambda x: N * x, natural)),
                        jax.tree_util.tree_leaves(closed), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-7 * float(np.max(np.abs(b))))
        for a, b in zip(jax.tree_util.tree_leaves(g_off), jax.tree_util.tree_leaves(g_first),
                        strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(
            jax.tree_util.tree_leaves(g_live), jax.tree_util.tree_leaves(g_first), strict=True))
        assert diff > 1e-4


def test_config_validation():
    with pytest.raises(ValueError, match="fixed_point_gradient"):
        g.GMMSVAEConfig(fixed_point_gradient="unrolled")
    with pytest.raises(ValueError, match="positive"):
        g.GMMSVAEConfig(num_components=0)
