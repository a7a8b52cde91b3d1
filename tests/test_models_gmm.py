"""The adjusted Rand index (svae_core.evaluation) and the variational Bayes GMM on raw
observations (svae_core.models.gmm).

Independent references: brute-force pair counting for the ARI; Murphy's (2007) conjugate NIW
posterior and marginal likelihood in NumPy/SciPy; scipy.stats.multivariate_normal for the
exact mixture density; Monte Carlo over q(θ) drawn with scipy.stats for E_q log p(y | θ).
Sizes are tiny; comparisons that must be exact run in float64.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
from reference import murphy_niw_posterior
from scipy.special import logsumexp, multigammaln

from svae_core.evaluation import adjusted_rand_index
from svae_core.expfam import dirichlet, niw
from svae_core.models import gmm
from svae_core.models import gmm_svae as g


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def blobs(seed, n_per=50, spread=6.0, std=0.5, offset=(0.0, 0.0)):
    """Three 2-D Gaussian clusters at the corners of a triangle, shuffled: (y (3n, 2), labels)."""
    rng = np.random.default_rng(seed)
    centres = spread * np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.9]]) + np.asarray(offset)
    labels = rng.permutation(np.repeat(np.arange(3), n_per))
    return centres[labels] + std * rng.normal(size=(len(labels), 2)), labels


# ----------------------------------------------------------------------------- ARI


def brute_force_ari(a, b):
    """ARI from the 2×2 pair-confusion counts over all pairs i < j (no contingency table)."""
    tp = fp = fn = tn = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        same_a, same_b = a[i] == a[j], b[i] == b[j]
        tp += same_a and same_b
        fn += same_a and not same_b
        fp += same_b and not same_a
        tn += not same_a and not same_b
    den = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    return 1.0 if den == 0 else 2.0 * (tp * tn - fn * fp) / den


def test_ari_matches_brute_force_pair_counting():
    rng = np.random.default_rng(0)
    values = []
    for _ in range(300):
        n = int(rng.integers(2, 16))
        a = rng.choice(rng.integers(-50, 50, size=int(rng.integers(1, 6))), size=n)
        b = rng.choice(rng.integers(-50, 50, size=int(rng.integers(1, 6))), size=n)
        got = adjusted_rand_index(a, b)
        assert isinstance(got, float)
        np.testing.assert_allclose(got, brute_force_ari(a, b), rtol=1e-12, atol=1e-12)
        values.append(got)
    assert min(values) < 0 and any(0 < v < 1 for v in values)  # partial and sub-chance cases


def test_ari_is_invariant_to_relabelling_and_symmetric():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 4, size=30), rng.integers(0, 3, size=30)
    ref = adjusted_rand_index(a, b)
    relabel = np.array([7, -3, 100, 0])  # injective map of a's values
    assert adjusted_rand_index(relabel[a], b) == pytest.approx(ref, abs=1e-14)
    assert adjusted_rand_index(b, a) == pytest.approx(ref, abs=1e-14)
    assert adjusted_rand_index(a, relabel[a]) == 1.0
    assert adjusted_rand_index(a, b) < 0.5  # random labelings are far from 1


def test_ari_known_values_and_degenerate_partitions():
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7, abs=1e-15)
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5, abs=1e-15)
    assert adjusted_rand_index([3, 3, 3], [9, 9, 9]) == 1.0  # one cluster each
    assert adjusted_rand_index([0, 1, 2, 3], [5, 6, 7, 8]) == 1.0  # all singletons each
    assert adjusted_rand_index([0, 0, 0, 0], [0, 1, 2, 3]) == 0.0
    assert adjusted_rand_index([4], [2]) == 1.0
    with pytest.raises(ValueError):
        adjusted_rand_index([0, 1, 2], [0, 1])
    with pytest.raises(ValueError):
        adjusted_rand_index(np.zeros((2, 2)), np.zeros((2, 2)))


# ----------------------------------------------------------------------------- VB GMM


def random_prior(K, D, seed):
    """A prior with different (m, κ, S, ν) and Dirichlet parameters per component."""
    rng = np.random.default_rng(seed)
    std = []
    for _ in range(K):
        a = rng.normal(size=(D, D))
        std.append(niw.from_standard(rng.normal(size=D), rng.uniform(0.2, 2.0),
                                     a @ a.T / D + np.eye(D), D + rng.uniform(0.5, 3.0)))
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *std)
    return g.GMMGlobals(dirichlet.DirichletNatural(jnp.asarray(rng.uniform(0.0, 2.0, K))),
                        stacked)


def test_global_step_with_one_hot_labels_is_the_conjugate_posterior(x64):
    K, D = 4, 2
    y, labels = blobs(2, n_per=7)  # labels use components 0..2; component 3 is empty
    prior = random_prior(K, D, seed=3)
    post = gmm.global_step(prior, jnp.asarray(y), jax.nn.one_hot(labels, K))
    np.testing.assert_allclose(dirichlet.to_standard(post.dirichlet),
                               np.asarray(dirichlet.to_standard(prior.dirichlet)) + [7, 7, 7, 0],
                               rtol=1e-14)
    p0 = jax.vmap(niw.to_standard)(prior.niw)
    got = jax.vmap(niw.to_standard)(post.niw)
    for k in range(3):
        ref = murphy_niw_posterior(np.asarray(p0.m[k]), float(p0.kappa[k]),
                                   np.asarray(p0.S[k]), float(p0.nu[k]), y[labels == k])
        np.testing.assert_allclose(got.m[k], ref["m"], rtol=1e-11)
        np.testing.assert_allclose(got.kappa[k], ref["kappa"], rtol=1e-14)
        np.testing.assert_allclose(got.S[k], ref["S"], rtol=1e-10)
        np.testing.assert_allclose(got.nu[k], ref["nu"], rtol=1e-14)
    for a, b in zip(jax.tree_util.tree_leaves(tuple(x[3] for x in post.niw)),
                    jax.tree_util.tree_leaves(tuple(x[3] for x in prior.niw)), strict=True):
        np.testing.assert_array_equal(a, b)  # no data: the prior


def test_one_component_elbo_is_the_exact_log_marginal_likelihood(x64):
    """K = 1: q(z) is trivial and one sweep gives the exact posterior, so N·ELBO = log p(y)
    (Murphy 2007, eq. 266), which tests L_n, the global step and the KL together."""
    rng = np.random.default_rng(4)
    N, D = 12, 2
    y = rng.normal(size=(N, D)) @ np.array([[2.0, 0.3], [0.0, 0.7]]) + 1.0
    m0, kappa0, S0, nu0 = np.array([0.5, -0.5]), 0.8, np.array([[1.5, 0.2], [0.2, 0.9]]), 3.0
    prior = g.GMMGlobals(
        dirichlet.DirichletNatural(jnp.array([0.05])),
        jax.tree_util.tree_map(lambda x: x[None], niw.from_standard(m0, kappa0, S0, nu0)))
    q = gmm.vb_update(prior, prior, jnp.asarray(y))
    post = murphy_niw_posterior(m0, kappa0, S0, nu0, y)
    log_py = (-0.5 * N * D * np.log(np.pi) + multigammaln(post["nu"] / 2, D)
              - multigammaln(nu0 / 2, D) + 0.5 * nu0 * np.linalg.slogdet(S0)[1]
              - 0.5 * post["nu"] * np.linalg.slogdet(post["S"])[1]
              + 0.5 * D * np.log(kappa0 / post["kappa"]))
    np.testing.assert_allclose(N * gmm.training_elbo(q, prior, jnp.asarray(y)), log_py,
                               rtol=1e-11)
    # Before the sweep q = prior: the ELBO is strictly below log p(y).
    assert N * gmm.training_elbo(prior, prior, jnp.asarray(y)) < log_py - 1.0


def test_training_elbo_is_non_decreasing_and_fit_matches_manual_sweeps(x64):
    y, _ = blobs(5, n_per=20, spread=3.0, std=0.8)  # overlapping: many sweeps of real work
    y = jnp.asarray(y)
    K, num_iters, key = 4, 25, jax.random.PRNGKey(3)
    prior = gmm.data_prior(y, K)
    out = gmm.fit(y, K, key=key, num_iters=num_iters, prior=prior, tol=None)
    history = np.asarray(out.elbo_history)
    assert int(out.num_sweeps) == num_iters and history.shape == (num_iters + 1,)
    assert np.all(np.diff(history) >= -1e-12 * np.abs(history[1:]))
    assert history[-1] > history[0] + 0.1

    q = gmm.initial_globals(key, y, prior)
    manual = []
    for _ in range(num_iters):
        manual.append(float(gmm.training_elbo(q, prior, y)))
        q = gmm.vb_update(q, prior, y)
    manual.append(float(gmm.training_elbo(q, prior, y)))
    np.testing.assert_allclose(history, manual, rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(out.globals), jax.tree_util.tree_leaves(q),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_fit_recovers_well_separated_blobs(x64):
    y, labels = blobs(6)
    y_test, labels_test = blobs(7, n_per=20)
    for seed in range(3):
        out = gmm.fit(y, 3, key=jax.random.PRNGKey(seed), num_iters=100,
                      prior=gmm.data_prior(y, 3), tol=1e-9)
        sweeps = int(out.num_sweeps)
        assert 1 <= sweeps < 100  # the tolerance test stopped it
        assert np.all(np.isnan(out.elbo_history[sweeps + 1:]))
        assert np.all(np.isfinite(out.elbo_history[:sweeps + 1]))
        assert adjusted_rand_index(labels, np.asarray(gmm.predict(out.globals, y))) > 0.95
        assert adjusted_rand_index(labels_test,
                                   np.asarray(gmm.predict(out.globals, y_test))) > 0.95
    # The data prior makes the fit equivariant to shifting and rescaling the data.
    z = 10.0 * y + np.array([-40.0, 25.0])
    out_z = gmm.fit(z, 3, key=jax.random.PRNGKey(0), prior=gmm.data_prior(z, 3), tol=1e-9)
    assert adjusted_rand_index(np.asarray(gmm.predict(out.globals, y)),
                               np.asarray(gmm.predict(out_z.globals, z))) == 1.0


def test_data_prior_matches_the_data_scale(x64):
    y, _ = blobs(8, offset=(30.0, -10.0))
    K, D = 5, 2
    prior = gmm.data_prior(y, K)
    c = K ** (-2.0 / D)
    stats = jax.vmap(niw.expected_precision_stats)(prior.niw)
    std = jax.vmap(niw.to_standard)(prior.niw)
    for k in range(K):
        np.testing.assert_allclose(stats.prec[k], np.linalg.inv(c * np.cov(y.T)), rtol=1e-10)
        np.testing.assert_allclose(std.m[k], y.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std.kappa, c, rtol=1e-12)
    np.testing.assert_allclose(std.nu, D + 0.5, rtol=1e-12)


def concentrated_globals(weights, means, covs, count):
    """q(θ) with `count` pseudo-observations everywhere: E[Σ⁻¹] = covs⁻¹ exactly, and as
    count → ∞ it concentrates on (weights, means, covs)."""
    std = [niw.from_standard(m, count, count * c, count) for m, c in zip(means, covs, strict=True)]
    return g.GMMGlobals(dirichlet.from_standard(jnp.asarray(count * weights)),
                        jax.tree_util.tree_map(lambda *x: jnp.stack(x), *std))


def mixture_log_density(y, weights, means, covs):
    comps = [np.log(w) + st.multivariate_normal(m, c).logpdf(y)
             for w, m, c in zip(weights, means, covs, strict=True)]
    return logsumexp(np.stack(comps, -1), axis=-1)


def test_heldout_elbo_concentrated_limit_and_jensen_bound(x64):
    rng = np.random.default_rng(9)
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[0.0, 0.0], [2.0, 1.0], [-1.0, 2.0]])
    covs = np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 0.8]],
                     [[0.6, -0.2], [-0.2, 0.3]]])
    y = rng.normal(size=(8, 2)) * 1.5 + 0.5
    exact = mixture_log_density(y, weights, means, covs)

    # Concentrated q(θ): L_n → log p(y_n | θ); the error is O(1/count).
    err = {}
    for count in (1e3, 1e7):
        got = np.asarray(gmm.heldout_elbo(concentrated_globals(weights, means, covs, count), y))
        err[count] = np.max(np.abs(got - exact))
    assert err[1e7] < 1e-4 < err[1e3]

    # Broad q(θ): L_n ≤ E_q log p(y_n | θ), by Monte Carlo with θ drawn by scipy.stats.
    count, S = 4.0, 4000
    q = concentrated_globals(weights, means, covs, count)
    bound = np.asarray(gmm.heldout_elbo(q, y))
    alpha = count * weights
    pis = st.dirichlet(alpha).rvs(S, random_state=rng)  # (S, K)
    log_terms = []
    for k in range(3):
        sig = st.invwishart(df=count, scale=count * covs[k]).rvs(S, random_state=rng)
        mu = means[k] + np.einsum("sij,sj->si", np.linalg.cholesky(sig / count),
                                  rng.normal(size=(S, 2)))
        diff = y[None] - mu[:, None]  # (S, N, D)
        solved = np.linalg.solve(sig[:, None], diff[..., None])[..., 0]  # Σ_s⁻¹(y_n − μ_s)
        maha = np.einsum("sni,sni->sn", diff, solved)
        log_n = -0.5 * (maha + np.linalg.slogdet(sig)[1][:, None] + 2 * np.log(2 * np.pi))
        log_terms.append(np.log(pis[:, k])[:, None] + log_n)
    samples = logsumexp(np.stack(log_terms, -1), axis=-1)  # (S, N) log p(y_n | θ_s)
    mc, se = samples.mean(0), samples.std(0, ddof=1) / np.sqrt(S)
    assert np.all(bound <= mc + 4 * se)
    assert np.mean(mc - bound) > 10 * np.sqrt(np.mean(se**2))  # a real Jensen gap


def test_observed_moments_is_a_point_mass(x64):
    y = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    m = gmm.observed_moments(y)
    np.testing.assert_array_equal(m.cov, 0.0)
    np.testing.assert_array_equal(m.second[1], np.outer([0.5, 3.0], [0.5, 3.0]))
    q = g.point_mass_stats(jnp.array([0.4, 0.6]), jnp.array([[0.0, 0.0], [1.0, 1.0]]),
                           jnp.stack([jnp.eye(2), 2.0 * jnp.eye(2)]))
    got = jax.vmap(g.expected_log_normals, in_axes=(0, None))(m, q)
    ref = [[st.multivariate_normal(mu, c).logpdf(yn) for mu, c in
            zip([[0.0, 0.0], [1.0, 1.0]], [np.eye(2), 2.0 * np.eye(2)], strict=True)]
           for yn in y]
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_kmeanspp_seeding_follows_the_squared_distance_law(x64):
    """The chance that D² seeding puts the 3 means in 3 different clusters, exactly (sum over
    all first and second picks) against the frequency over 2000 keys; uniform draws of
    three points would score 2/9. All-identical points still give finite means."""
    y, labels = blobs(10)
    N = len(y)
    d2 = np.sum((y[:, None] - y[None]) ** 2, axis=-1)
    exact = 0.0
    for i in range(N):
        second = d2[i] / d2[i].sum()
        for j in np.flatnonzero(labels != labels[i]):
            nearest = np.minimum(d2[i], d2[j])
            third = (labels != labels[i]) & (labels != labels[j])
            exact += second[j] * nearest[third].sum() / nearest.sum() / N
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    means = np.asarray(jax.vmap(lambda k: gmm.kmeanspp_means(k, y, 3))(keys))  # (S, 3, D)
    rows = np.argmin(np.sum((means[:, :, None] - y) ** 2, axis=-1), axis=-1)  # chosen points
    np.testing.assert_allclose(means, y[rows], rtol=0, atol=0)  # means are data points
    freq = np.mean([len(set(labels[r])) == 3 for r in rows])
    assert abs(freq - exact) < 4 * np.sqrt(exact * (1 - exact) / len(keys))
    assert exact > 0.9
    same = np.asarray(gmm.kmeanspp_means(jax.random.PRNGKey(0), np.ones((5, 2)), 3))
    np.testing.assert_array_equal(same, 1.0)
