"""Conjugate exponential families: exactness against independent references, in float64.

References: scipy.stats densities and samplers (multivariate_normal, dirichlet, invwishart,
matrix_normal), textbook closed forms (moments, KLs, Isserlis' theorem, Murphy 2007's NIW
updates), and Monte Carlo with 20,000 samples held to 5 standard errors. The Monte Carlo draws
come from fixed seeds, so every run sees the same numbers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats as st
from jax.flatten_util import ravel_pytree
from reference import murphy_niw_posterior, spd
from scipy.special import digamma, gammaln, polygamma

from svae_core.expfam import base, categorical, dirichlet, gaussian, mniw, niw, unconstrained

N_MC = 20_000
# Sizes of the matrix fields that pair with symmetric statistics (Fisher null directions).
SYMMETRIC_FIELD_DIMS = {"gaussian": [3], "categorical": [], "dirichlet": [], "niw": [3],
                        "mniw": [2, 3]}
FAMILIES = ["gaussian", "categorical", "dirichlet", "niw", "mniw"]
MODULES = {"gaussian": gaussian, "categorical": categorical, "dirichlet": dirichlet,
           "niw": niw, "mniw": mniw}


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# ----------------------------------------------------------------------------- problems


def standard_params(family, seed=0):
    """One member's standard parameters, as a dict of NumPy float64 arrays."""
    rng = np.random.default_rng(seed)
    if family == "gaussian":
        return dict(mean=rng.normal(size=3), cov=spd(rng, 3))
    if family == "categorical":
        return dict(probs=rng.dirichlet(np.full(4, 2.0)))
    if family == "dirichlet":
        return dict(alpha=rng.uniform(0.7, 3.0, size=4))
    if family == "niw":
        return dict(m=rng.normal(size=3), kappa=rng.uniform(0.5, 2.0), S=spd(rng, 3, 4.0),
                    nu=7.0 + rng.uniform())
    if family == "mniw":
        return dict(M=rng.normal(size=(2, 3)), K=spd(rng, 3, 2.0), S=spd(rng, 2, 3.0),
                    nu=6.0 + rng.uniform())
    raise ValueError(family)


def natural(family, seed=0):
    return MODULES[family].from_standard(**standard_params(family, seed))


def scipy_samples(family, p, n, seed):
    """n draws from scipy (or NumPy from scipy's pieces), independent of the package's samplers."""
    rng = np.random.default_rng(seed)
    if family == "gaussian":
        return (st.multivariate_normal(p["mean"], p["cov"]).rvs(n, random_state=rng),)
    if family == "categorical":
        return (rng.choice(len(p["probs"]), size=n, p=p["probs"]),)
    if family == "dirichlet":
        return (st.dirichlet(p["alpha"]).rvs(n, random_state=rng),)
    Sigma = st.invwishart(df=p["nu"], scale=p["S"]).rvs(n, random_state=rng)
    if family == "niw":
        z = rng.normal(size=(n, len(p["m"])))
        mu = p["m"] + np.einsum("nij,nj->ni", np.linalg.cholesky(Sigma), z) / np.sqrt(p["kappa"])
        return mu, Sigma
    # mniw: vec A ~ N(vec M, K⁻¹ ⊗ Σ) (column-stacking vec), from the Kronecker covariance.
    d_out, d_in = p["M"].shape
    cov = np.einsum("ij,nkl->nikjl", np.linalg.inv(p["K"]), Sigma).reshape(n, d_in * d_out,
                                                                           d_in * d_out)
    vec = np.einsum("nij,nj->ni", np.linalg.cholesky(cov), rng.normal(size=(n, d_in * d_out)))
    A = p["M"] + vec.reshape(n, d_in, d_out).transpose(0, 2, 1)
    return A, Sigma


def package_samples(family, eta, n, seed):
    draws = MODULES[family].sample(jax.random.PRNGKey(seed), eta, (n,))
    return tuple(np.asarray(d) for d in (draws if isinstance(draws, tuple) else (draws,)))


@functools.cache
def _flat_stats(family):
    """Jitted samples -> (n, P) flattened sufficient statistics of each."""
    mod = MODULES[family]
    if family == "categorical":
        fn = lambda z: mod.sufficient_stats(z, 4)
    else:
        fn = mod.sufficient_stats
    return jax.jit(jax.vmap(lambda *x: ravel_pytree(fn(*x))[0]))


def stats_of(family, samples):
    """Sufficient statistics of each sample, flattened: (n, P), in ravel_pytree order."""
    return np.asarray(_flat_stats(family)(*samples))


@functools.cache
def _flat_expected_stats(family):
    """Jitted η -> ∇A(η) flattened in ravel_pytree order."""
    return jax.jit(lambda eta: ravel_pytree(MODULES[family].expected_stats(eta))[0])


def scipy_log_density(family, p, samples):
    """log p(x) for each sample by scipy (NIW's conditional normal and the matrix normal by
    their textbook formulas in NumPy; the latter checked against scipy in its own test)."""
    if family == "gaussian":
        return st.multivariate_normal(p["mean"], p["cov"]).logpdf(samples[0])
    if family == "categorical":
        return np.log(p["probs"])[samples[0]]
    if family == "dirichlet":
        return st.dirichlet(p["alpha"]).logpdf(samples[0].T)
    theta, Sigma = samples
    out = st.invwishart(df=float(p["nu"]), scale=p["S"]).logpdf(np.moveaxis(Sigma, 0, -1))
    if family == "niw":
        return out + normal_logpdf(theta, p["m"], Sigma / p["kappa"])
    return out + matrix_normal_logpdf(theta, p["M"], Sigma, p["K"])


def normal_logpdf(x, mean, cov):
    """Batched log N(x | mean, cov); x (n, D), cov (n, D, D)."""
    d = x - mean
    maha = np.einsum("ni,ni->n", d, np.linalg.solve(cov, d[..., None])[..., 0])
    return -0.5 * (maha + np.linalg.slogdet(cov)[1] + x.shape[-1] * np.log(2 * np.pi))


def matrix_normal_logpdf(A, M, Sigma, K):
    """Batched log MN(A | M, row cov Σ, column cov K⁻¹); A (n, Do, Di), Σ (n, Do, Do)."""
    d_out, d_in = M.shape
    d = A - M
    quad = np.einsum("ij,nkj,nki->n", K, d, np.linalg.solve(Sigma, d))  # tr(K dᵀ Σ⁻¹ d)
    return (-0.5 * d_out * d_in * np.log(2 * np.pi) - 0.5 * d_in * np.linalg.slogdet(Sigma)[1]
            + 0.5 * d_out * np.linalg.slogdet(K)[1] - 0.5 * quad)


def closed_form_expected_stats(family, p):
    """E[t] by textbook formulas, flattened in ravel_pytree order."""
    if family == "gaussian":
        mean, cov = p["mean"], p["cov"]
        parts = [-0.5 * (cov + np.outer(mean, mean)), mean]
    elif family == "categorical":
        parts = [p["probs"]]
    elif family == "dirichlet":
        parts = [digamma(p["alpha"]) - digamma(p["alpha"].sum())]
    else:
        S, nu = p["S"], p["nu"]
        d = len(S)
        Si = np.linalg.inv(S)
        e_logdet_prec = (sum(digamma((nu - i) / 2) for i in range(d)) + d * np.log(2)
                         - np.linalg.slogdet(S)[1])
        if family == "niw":
            m, kappa = p["m"], p["kappa"]
            quad = d / kappa + nu * m @ Si @ m
            parts = [-0.5 * nu * Si, nu * Si @ m, -0.5 * quad, 0.5 * e_logdet_prec]
        else:
            M, K = p["M"], p["K"]
            quad = nu * M.T @ Si @ M + d * np.linalg.inv(K)
            parts = [-0.5 * nu * Si, nu * Si @ M, -0.5 * quad, 0.5 * e_logdet_prec]
    return np.concatenate([np.ravel(x) for x in parts])


@functools.cache
def _flat_hessian_fn(log_partition):
    """Jitted η -> ∇²A(η) in ravel_pytree coordinates (one per family, shared by the tests)."""
    def hessian(eta):
        flat, unravel = ravel_pytree(eta)
        return jax.hessian(lambda f: log_partition(unravel(f)))(flat)

    return jax.jit(hessian)


def flat_hessian(log_partition, eta):
    return np.asarray(_flat_hessian_fn(log_partition)(eta))


# ----------------------------------------------------------------------------- conversions


@pytest.mark.parametrize("family", FAMILIES)
def test_natural_standard_round_trip(family):
    mod = MODULES[family]
    p = standard_params(family)
    eta = mod.from_standard(**p)
    back = mod.to_standard(eta)
    back = back._asdict() if hasattr(back, "_asdict") else {next(iter(p)): back}
    assert back.keys() == p.keys()
    for k in p:
        np.testing.assert_allclose(back[k], p[k], rtol=1e-12, atol=1e-12, err_msg=k)
    again = mod.from_standard(**back)
    for a, b in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(eta), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_documented_conventions():
    # Dirichlet: natural parameter α − 1 (the 2016 code's "0.05/K" is α ≈ 1).
    np.testing.assert_allclose(dirichlet.from_standard(np.array([1.0, 2.5])).alpha_minus_one,
                               [0.0, 1.5])
    # NIW: the 2016 packing (S + κmmᵀ, κm, κ, ν).
    m, kappa, S, nu = np.array([1.0, -2.0]), 0.5, 2.5 * np.eye(2), 2.5
    eta = niw.from_standard(m, kappa, S, nu)
    np.testing.assert_allclose(eta.Phi, S + kappa * np.outer(m, m))
    np.testing.assert_allclose(eta.km, kappa * m)
    assert float(eta.kappa) == kappa and float(eta.nu) == nu
    # Gaussian: (J, h) = (Σ⁻¹, Σ⁻¹μ); categorical: logits = log π.
    g = gaussian.from_standard(np.array([1.0, 2.0]), np.diag([2.0, 4.0]))
    np.testing.assert_allclose(g.J, np.diag([0.5, 0.25]))
    np.testing.assert_allclose(g.h, [0.5, 0.5])


def test_unconstrained_coordinates_round_trip_and_cover_only_the_domain():
    from svae_core.natgrad import in_domain

    # A member in the domain survives natural -> unconstrained -> natural.
    for family, to_raw, from_raw in [
            ("niw", unconstrained.niw_to_unconstrained, unconstrained.niw_from_unconstrained),
            ("dirichlet", unconstrained.dirichlet_to_unconstrained,
             unconstrained.dirichlet_from_unconstrained)]:
        eta = natural(family, seed=3)
        back = from_raw(to_raw(eta))
        for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(eta),
                        strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    # Any real vector is a member (kappa > 0, nu > D - 1, S > 0) whose standard parameters are
    # the documented transforms; the strictly upper triangle of scale_tril is ignored.
    rng = np.random.default_rng(4)
    for _ in range(5):
        raw = unconstrained.NIWUnconstrained(rng.normal(size=3), rng.normal(),
                                             3.0 * rng.normal(size=(3, 3)), rng.normal() - 3.0)
        eta = unconstrained.niw_from_unconstrained(raw)
        assert bool(in_domain("niw", eta))
        std = niw.to_standard(eta)
        L = np.tril(raw.scale_tril, -1) + np.diag(np.exp(np.diag(raw.scale_tril)))
        np.testing.assert_allclose(std.S, L @ L.T, rtol=1e-10)
        np.testing.assert_allclose(std.nu, 2.0 + np.exp(raw.log_dof_excess), rtol=1e-12)
        np.testing.assert_allclose(std.kappa, np.exp(raw.log_kappa), rtol=1e-12)
        np.testing.assert_allclose(std.m, raw.m, atol=1e-10)
        again = unconstrained.niw_to_unconstrained(eta)
        # log-diagonal and lower triangle back to ~1e-6: S = Phi - km kmᵀ/kappa cancels digits
        np.testing.assert_allclose(again.scale_tril, np.tril(raw.scale_tril), atol=1e-5)
        log_alpha = rng.normal(size=4)
        d = unconstrained.dirichlet_from_unconstrained(log_alpha)
        assert bool(in_domain("dirichlet", d))
        np.testing.assert_allclose(dirichlet.to_standard(d), np.exp(log_alpha), rtol=1e-12)


def random_mniw_raw(rng, d_out, d_in, scale):
    """Every field of MNIWUnconstrained drawn i.i.d. N(0, scale²)."""
    return unconstrained.MNIWUnconstrained(
        scale * rng.normal(size=(d_out, d_in)), scale * rng.normal(size=(d_in, d_in)),
        scale * rng.normal(size=(d_out, d_out)), scale * rng.normal())


def tril_exp_diag(raw):
    return np.tril(raw, -1) + np.diag(np.exp(np.diag(raw)))


@pytest.mark.parametrize("d_out, d_in", [(3, 4), (2, 2)])
def test_mniw_unconstrained_round_trip(d_out, d_in):
    rng = np.random.default_rng(5)
    std = dict(M=rng.normal(size=(d_out, d_in)), K=spd(rng, d_in, 2.0), S=spd(rng, d_out, 3.0),
               nu=d_out + 2.0 + rng.uniform())
    eta = mniw.from_standard(**std)
    raw = unconstrained.mniw_to_unconstrained(eta)
    assert raw.M.shape == (d_out, d_in) and raw.precision_tril.shape == (d_in, d_in)
    assert raw.scale_tril.shape == (d_out, d_out) and raw.log_dof_excess.shape == ()
    # The raw fields are the documented transforms of the standard parameters.
    np.testing.assert_allclose(raw.M, std["M"], rtol=1e-10, atol=1e-10)
    L_K, L_S = tril_exp_diag(raw.precision_tril), tril_exp_diag(raw.scale_tril)
    np.testing.assert_allclose(L_K @ L_K.T, std["K"], rtol=1e-10)
    np.testing.assert_allclose(L_S @ L_S.T, std["S"], rtol=1e-10)
    np.testing.assert_allclose(d_out - 1.0 + np.exp(raw.log_dof_excess), std["nu"], rtol=1e-12)
    np.testing.assert_array_equal(np.triu(raw.precision_tril, 1), 0.0)
    np.testing.assert_array_equal(np.triu(raw.scale_tril, 1), 0.0)
    back = unconstrained.mniw_from_unconstrained(raw)
    for a, b in zip(back, eta, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d_out, d_in", [(3, 4), (2, 2)])
def test_mniw_unconstrained_covers_only_the_domain(d_out, d_in):
    from svae_core.natgrad import in_domain

    for seed in range(6):
        raw = random_mniw_raw(np.random.default_rng(seed), d_out, d_in, scale=2.0)
        eta = unconstrained.mniw_from_unconstrained(raw)
        assert bool(in_domain("mniw", eta)), seed
        # The member's parameters are the documented transforms; the strict upper
        # triangles of precision_tril and scale_tril are ignored.
        assert float(eta.nu) > d_out - 1
        np.testing.assert_allclose(eta.nu, d_out - 1.0 + np.exp(raw.log_dof_excess),
                                   rtol=1e-12)
        L_K = tril_exp_diag(raw.precision_tril)
        np.testing.assert_allclose(eta.K, L_K @ L_K.T, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(eta.MK, raw.M @ L_K @ L_K.T, rtol=1e-10, atol=1e-10)


def test_mniw_unconstrained_ignores_the_strict_upper_triangles():
    rng = np.random.default_rng(7)
    raw = random_mniw_raw(rng, 3, 4, scale=0.5)
    weights = mniw.MNIWNatural(rng.normal(size=(3, 3)), rng.normal(size=(3, 4)),
                               rng.normal(size=(4, 4)), rng.normal())

    def f(r):
        eta = unconstrained.mniw_from_unconstrained(r)
        return mniw.log_partition(eta) + base.inner(weights, eta)

    g = jax.jit(jax.grad(f))(raw)
    for field, d in [("precision_tril", 4), ("scale_tril", 3)]:
        grad = np.asarray(getattr(g, field))
        np.testing.assert_array_equal(grad[np.triu_indices(d, 1)], 0.0)
        assert np.all(grad[np.tril_indices(d)] != 0.0)  # the lower triangle does matter


@pytest.mark.parametrize("family", FAMILIES)
def test_log_prob_matches_scipy(family):
    """log_prob = ⟨η, t⟩ − A(η) + log h against scipy's densities: checks A, t and h together."""
    p = standard_params(family)
    eta = natural(family)
    samples = scipy_samples(family, p, 6, seed=1)
    ours = np.asarray(jax.vmap(MODULES[family].log_prob, (None,) + (0,) * len(samples))(
        eta, *samples))
    if family == "mniw":  # scipy's matrix normal, one sample at a time
        ref = st.invwishart(df=p["nu"], scale=p["S"]).logpdf(np.moveaxis(samples[1], 0, -1))
        ref = ref + np.array([st.matrix_normal(p["M"], S, np.linalg.inv(p["K"])).logpdf(A)
                              for A, S in zip(*samples, strict=True)])
        np.testing.assert_allclose(scipy_log_density(family, p, samples), ref, rtol=1e-12)
    elif family == "niw":
        ref = st.invwishart(df=p["nu"], scale=p["S"]).logpdf(np.moveaxis(samples[1], 0, -1))
        ref = ref + np.array([st.multivariate_normal(p["m"], S / p["kappa"]).logpdf(mu)
                              for mu, S in zip(*samples, strict=True)])
        np.testing.assert_allclose(scipy_log_density(family, p, samples), ref, rtol=1e-12)
    else:
        ref = scipy_log_density(family, p, samples)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- expected statistics


@pytest.mark.parametrize("family", FAMILIES)
def test_expected_stats_closed_form(family):
    grad = _flat_expected_stats(family)(natural(family))
    np.testing.assert_allclose(grad, closed_form_expected_stats(family, standard_params(family)),
                               rtol=1e-10, atol=1e-12)


def test_expected_precision_and_dynamics_stats():
    p = standard_params("niw")
    e = niw.expected_precision_stats(niw.from_standard(**p))
    Si = np.linalg.inv(p["S"])
    np.testing.assert_allclose(e.prec, p["nu"] * Si, rtol=1e-12)
    np.testing.assert_allclose(e.prec_mean, p["nu"] * Si @ p["m"], rtol=1e-12)
    np.testing.assert_allclose(e.mean_prec_mean, 3 / p["kappa"] + p["nu"] * p["m"] @ Si @ p["m"],
                               rtol=1e-12)
    # E[log|Σ⁻¹|] for Σ⁻¹ ~ W(S⁻¹, ν): ψ_D(ν/2) + D log 2 + log|S⁻¹|.
    ref = sum(digamma((p["nu"] - i) / 2) for i in range(3)) + 3 * np.log(2) + np.log(
        np.linalg.det(Si))
    np.testing.assert_allclose(e.logdet_prec, ref, rtol=1e-12)
    q = standard_params("mniw")
    e = mniw.expected_dynamics_stats(mniw.from_standard(**q))
    Si = np.linalg.inv(q["S"])
    np.testing.assert_allclose(e.prec, q["nu"] * Si, rtol=1e-12)
    np.testing.assert_allclose(e.prec_A, q["nu"] * Si @ q["M"], rtol=1e-12)
    np.testing.assert_allclose(e.At_prec_A, q["nu"] * q["M"].T @ Si @ q["M"]
                               + 2 * np.linalg.inv(q["K"]), rtol=1e-12)


@pytest.mark.parametrize("source", ["package", "scipy"])
@pytest.mark.parametrize("family", FAMILIES)
def test_expected_stats_monte_carlo(family, source):
    """∇A(η) against sample means of t(x), 20k draws, 5 standard errors per component.
    Draws from the package's sampler test the sampler too; draws from scipy test ∇A alone."""
    p = standard_params(family)
    eta = natural(family)
    if source == "package":
        samples = package_samples(family, eta, N_MC, seed=2)
    else:
        samples = scipy_samples(family, p, N_MC, seed=2)
    t = stats_of(family, samples)
    mean, se = t.mean(0), t.std(0, ddof=1) / np.sqrt(N_MC)
    grad = np.asarray(_flat_expected_stats(family)(eta))
    z = np.abs(mean - grad) / np.maximum(se, 1e-300)
    assert np.all((z < 5) | (np.abs(mean - grad) < 1e-12)), (z.max(), mean, grad)


def test_sampler_matches_scipy_moments():
    """Σ from the Bartlett sampler: E[Σ] = S/(ν − D − 1) as in scipy.stats.invwishart.mean."""
    p = standard_params("niw")
    _, Sigma = package_samples("niw", natural("niw"), N_MC, seed=3)
    ref = st.invwishart(df=p["nu"], scale=p["S"]).mean()
    se = Sigma.std(0, ddof=1) / np.sqrt(N_MC)
    assert np.all(np.abs(Sigma.mean(0) - ref) < 5 * se)


# ----------------------------------------------------------------------------- KL divergences


def kl_pair(family):
    """Standard parameters of q and p, close enough that log q − log p has modest variance."""
    return standard_params(family, seed=0), standard_params(family, seed=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_kl_monte_carlo(family):
    pq, pp = kl_pair(family)
    mod = MODULES[family]
    q = mod.from_standard(**pq)
    kl, kl_self = float(mod.kl(q, mod.from_standard(**pp))), float(mod.kl(q, q))
    samples = scipy_samples(family, pq, N_MC, seed=4)
    ratio = scipy_log_density(family, pq, samples) - scipy_log_density(family, pp, samples)
    se = ratio.std(ddof=1) / np.sqrt(N_MC)
    assert kl > 0 and abs(ratio.mean() - kl) < 5 * se, (kl, ratio.mean(), se)
    assert abs(kl_self) < 1e-12


def test_kl_closed_forms():
    # Gaussian: ½[tr(Σp⁻¹Σq) + (μp−μq)ᵀΣp⁻¹(μp−μq) − D + log|Σp|/|Σq|].
    q, p = kl_pair("gaussian")
    Pi = np.linalg.inv(p["cov"])
    d = p["mean"] - q["mean"]
    ref = 0.5 * (np.trace(Pi @ q["cov"]) + d @ Pi @ d - 3
                 + np.linalg.slogdet(p["cov"])[1] - np.linalg.slogdet(q["cov"])[1])
    ours = gaussian.kl(gaussian.from_standard(**q), gaussian.from_standard(**p))
    np.testing.assert_allclose(ours, ref, rtol=1e-11)
    # Dirichlet.
    q, p = kl_pair("dirichlet")
    a, b = q["alpha"], p["alpha"]
    ref = (gammaln(a.sum()) - gammaln(a).sum() - gammaln(b.sum()) + gammaln(b).sum()
           + ((a - b) * (digamma(a) - digamma(a.sum()))).sum())
    ours = dirichlet.kl(dirichlet.from_standard(a), dirichlet.from_standard(b))
    np.testing.assert_allclose(ours, ref, rtol=1e-11)
    # Categorical, with the logits shifted by constants (the parameter is over-complete).
    q, p = kl_pair("categorical")
    ref = np.sum(q["probs"] * np.log(q["probs"] / p["probs"]))
    ours = categorical.kl(categorical.CategoricalNatural(np.log(q["probs"]) + 3.0),
                          categorical.CategoricalNatural(np.log(p["probs"]) - 1.0))
    np.testing.assert_allclose(ours, ref, rtol=1e-11)


# ----------------------------------------------------------------------------- Fisher information


def test_hessian_is_fisher_closed_forms():
    # Gaussian: Cov of t = (−½ x xᵀ, x) by Isserlis' theorem.
    p = standard_params("gaussian")
    mu, S = p["mean"], p["cov"]
    c4 = (np.einsum("ik,jl->ijkl", S, S) + np.einsum("il,jk->ijkl", S, S)
          + np.einsum("i,k,jl->ijkl", mu, mu, S) + np.einsum("i,l,jk->ijkl", mu, mu, S)
          + np.einsum("j,k,il->ijkl", mu, mu, S) + np.einsum("j,l,ik->ijkl", mu, mu, S))
    c3 = np.einsum("i,jk->ijk", mu, S) + np.einsum("j,ik->ijk", mu, S)
    fisher = np.block([[0.25 * c4.reshape(9, 9), -0.5 * c3.reshape(9, 3)],
                       [-0.5 * c3.reshape(9, 3).T, S]])
    np.testing.assert_allclose(flat_hessian(gaussian.log_partition, natural("gaussian")), fisher,
                               rtol=1e-10, atol=1e-12)
    # Categorical: diag(π) − ππᵀ.
    pi = standard_params("categorical")["probs"]
    np.testing.assert_allclose(flat_hessian(categorical.log_partition, natural("categorical")),
                               np.diag(pi) - np.outer(pi, pi), rtol=1e-10, atol=1e-14)
    # Dirichlet: Cov(log π) = diag ψ'(α) − ψ'(Σα) 11ᵀ.
    a = standard_params("dirichlet")["alpha"]
    np.testing.assert_allclose(flat_hessian(dirichlet.log_partition, natural("dirichlet")),
                               np.diag(polygamma(1, a)) - polygamma(1, a.sum()), rtol=1e-10)


@pytest.mark.parametrize("family", ["niw", "mniw", "dirichlet"])
def test_hessian_is_fisher_monte_carlo(family):
    """∇²A(η) against the sample covariance of t over scipy's draws, each entry within 5 s.e."""
    p = standard_params(family)
    t = stats_of(family, scipy_samples(family, p, N_MC, seed=5))
    c = t - t.mean(0)
    prods = c[:, :, None] * c[:, None, :]
    cov, se = prods.mean(0), prods.std(0, ddof=1) / np.sqrt(N_MC)
    hess = flat_hessian(MODULES[family].log_partition, natural(family))
    z = np.abs(cov - hess) / np.maximum(se, 1e-300)
    assert np.all((z < 5) | (np.abs(cov - hess) < 1e-12)), z.max()


# ----------------------------------------------------------------------------- natural gradients


@pytest.mark.parametrize("family", FAMILIES)
def test_natural_gradient_is_fisher_inverse_times_gradient(family):
    """For L(η) = conjugate_elbo(η; η₀, s): Fisher⁻¹ ∇L = η₀ + s − η (float64).

    Matrix fields pair with symmetric statistics, so the Fisher matrix in the full coordinates
    is singular exactly on antisymmetric directions (and the categorical one along 1); the
    pseudo-inverse is the inverse on the complement, where the targets lie (categorical:
    compared after projecting out 1).
    """
    mod = MODULES[family]
    eta, prior, other = natural(family, 0), natural(family, 1), natural(family, 2)
    # any data statistics, packed like η
    stats = jax.tree_util.tree_map(lambda a: 0.7 * np.asarray(a), other)

    @jax.jit
    def gradient_and_target(eta):
        """∇L(η) and the natural gradient η₀ + s − η, flattened."""
        elbo = lambda e: base.conjugate_elbo(mod.log_partition, e, prior, stats)
        return (ravel_pytree(jax.grad(elbo)(eta))[0],
                ravel_pytree(base.natural_gradient(eta, prior, stats))[0])

    grad, target = (np.asarray(a) for a in gradient_and_target(eta))
    fisher = flat_hessian(mod.log_partition, eta)
    nat = np.linalg.pinv(fisher, rtol=1e-10) @ grad
    if family == "categorical":
        target = target - target.mean()
    else:
        antisymmetric = sum(d * (d - 1) // 2 for d in SYMMETRIC_FIELD_DIMS[family])
        assert np.linalg.matrix_rank(fisher, rtol=1e-10) == len(target) - antisymmetric
    np.testing.assert_allclose(nat, target, rtol=1e-8, atol=1e-8 * np.abs(target).max())


# ----------------------------------------------------------------------------- conjugate models


def test_niw_one_natural_step_lands_on_exact_posterior():
    rng = np.random.default_rng(6)
    d, n = 3, 40
    prior = dict(m=rng.normal(size=d), kappa=0.5, S=(d + 0.5) * np.eye(d), nu=d + 0.5)
    x = rng.multivariate_normal(rng.normal(size=d), spd(rng, d), size=n)
    eta0 = niw.from_standard(**prior)
    stats = niw.likelihood_stats(jnp.asarray(x))
    ref = murphy_niw_posterior(prior["m"], prior["kappa"], prior["S"], prior["nu"], x)
    post = base.natural_gradient_step(eta0, eta0, stats, 1.0)
    for start in [eta0, natural("niw", 7), niw.from_standard(np.zeros(d), 30.0, np.eye(d), 9.0)]:
        stepped = base.natural_gradient_step(start, eta0, stats, 1.0)
        for a, b in zip(stepped, post, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-12)
    got = niw.to_standard(post)._asdict()
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-11, err_msg=k)
    # η₀ + s maximises the conjugate ELBO: its gradient vanishes there.
    g = jax.jit(jax.grad(lambda e: base.conjugate_elbo(niw.log_partition, e, eta0, stats)))(post)
    assert np.abs(ravel_pytree(g)[0]).max() < 1e-9
    # And it is Bayes' rule: log p₀(θ) + Σ log N(x | θ) − log p_post(θ) is the same for all θ.
    mu, Sigma = scipy_samples("niw", prior, 5, seed=8)
    lik = np.array([st.multivariate_normal(m, S).logpdf(x).sum()
                    for m, S in zip(mu, Sigma, strict=True)])
    evidence = (scipy_log_density("niw", prior, (mu, Sigma)) + lik
                - scipy_log_density("niw", ref, (mu, Sigma)))
    np.testing.assert_allclose(evidence, evidence[0], rtol=1e-10)


def test_mniw_posterior_is_bayes_rule():
    rng = np.random.default_rng(9)
    d_out, d_in, n = 2, 3, 30
    prior = standard_params("mniw", seed=3)
    A_true = rng.normal(size=(d_out, d_in))
    x = rng.normal(size=(n, d_in))
    y = x @ A_true.T + rng.normal(size=(n, d_out)) @ np.linalg.cholesky(spd(rng, d_out)).T
    eta0 = mniw.from_standard(**prior)
    post = base.natural_gradient_step(natural("mniw", 4), eta0, mniw.likelihood_stats(x, y), 1.0)
    ref = {k: np.asarray(v) for k, v in mniw.to_standard(post)._asdict().items()}
    A, Sigma = scipy_samples("mniw", prior, 5, seed=10)
    lik = np.array([normal_logpdf(y, x @ a.T, np.broadcast_to(S, (n, d_out, d_out))).sum()
                    for a, S in zip(A, Sigma, strict=True)])
    evidence = (scipy_log_density("mniw", prior, (A, Sigma)) + lik
                - scipy_log_density("mniw", ref, (A, Sigma)))
    np.testing.assert_allclose(evidence, evidence[0], rtol=1e-10)


def test_mixture_with_observed_labels_one_step_is_exact():
    """Dirichlet weights and K NIW components, labels observed: the step of size 1 from any
    globals gives α + counts and each component's Murphy posterior from its own points."""
    rng = np.random.default_rng(11)
    k, d, n = 3, 2, 60
    labels = rng.integers(0, k, size=n)
    centres = 4.0 * rng.normal(size=(k, d))
    x = centres[labels] + rng.normal(size=(n, d))
    alpha0 = np.full(k, 0.05 / k + 1.0)  # natural parameter 0.05/K, as in the 2016 code
    niw0 = dict(m=np.zeros(d), kappa=0.5, S=(d + 0.5) * np.eye(d), nu=d + 0.5)

    @jax.jit
    def step(labels, x):
        """The standard parameters after one step of size 1 from arbitrary globals."""
        prior = (dirichlet.from_standard(alpha0),
                 jax.vmap(lambda _: niw.from_standard(**niw0))(jnp.arange(k)))
        onehot = jax.nn.one_hot(labels, k)
        stats = (dirichlet.likelihood_stats(labels, k),
                 jax.vmap(niw.likelihood_stats, (None, 1))(x, onehot))
        components = [niw.from_standard(np.full(d, j), 1.0 + j, (2.0 + j) * np.eye(d), 5.0)
                      for j in range(k)]
        start = (dirichlet.from_standard(np.full(k, 7.0)),
                 jax.tree_util.tree_map(lambda *a: jnp.stack(a), *components))
        post = base.natural_gradient_step(start, prior, stats, 1.0)
        return dirichlet.to_standard(post[0]), jax.vmap(niw.to_standard)(post[1])

    alpha, got = step(labels, x)
    np.testing.assert_allclose(alpha, alpha0 + np.bincount(labels, minlength=k))
    for j in range(k):
        ref = murphy_niw_posterior(niw0["m"], niw0["kappa"], niw0["S"], niw0["nu"],
                                   x[labels == j])
        for name in ref:
            np.testing.assert_allclose(getattr(got, name)[j], ref[name], rtol=1e-11,
                                       err_msg=f"component {j}, {name}")


# ----------------------------------------------------------------------------- pytrees


def test_pytrees_vmap_jit_optax_and_float32():
    etas = [natural("niw", s) for s in range(3)]
    batch = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *etas)
    batched = jax.jit(jax.vmap(niw.expected_stats))(batch)
    assert isinstance(batched, niw.NIWNatural)
    for i, e in enumerate(etas):
        for a, b in zip(batched, niw.expected_stats(e), strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-12)

    # optax treats η as any other parameter pytree; the natural gradient is the update.
    @jax.jit
    def sgd_step(eta, eta_prior, stats):
        opt = optax.sgd(0.5)
        ng = base.natural_gradient(eta, eta_prior, stats)
        updates, _ = opt.update(jax.tree_util.tree_map(jnp.negative, ng), opt.init(eta))
        return optax.apply_updates(eta, updates)

    new = sgd_step(etas[0], etas[1], niw.likelihood_stats(np.ones((4, 3))))
    assert isinstance(new, niw.NIWNatural)
    # Sampling shapes (traced only: the shapes are all this checks).
    mu, Sigma = jax.eval_shape(lambda eta: niw.sample(jax.random.PRNGKey(0), eta, (2, 5)),
                               etas[0])
    assert mu.shape == (2, 5, 3) and Sigma.shape == (2, 5, 3, 3)
    # float32 by default, nothing promoted.
    e32 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), natural("mniw"))
    with jax.enable_x64(False):

        @jax.jit
        def float32_outputs(e32):
            out = mniw.expected_stats(e32)
            A, Sigma = mniw.sample(jax.random.PRNGKey(0), e32, (3,))
            return out, A, Sigma, mniw.kl(e32, e32)

        out, A, Sigma, kl = float32_outputs(e32)
        assert A.shape == (3, 2, 3) and Sigma.shape == (3, 2, 2)
        for a in [*out, A, Sigma, kl]:
            assert a.dtype == jnp.float32 and bool(np.all(np.isfinite(a)))
