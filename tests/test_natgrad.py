"""Natural-gradient SVI as an optax transformation (svae_core.natgrad), in float64.

References: dense NumPy pseudo-inverses of the Fisher matrix; Murphy (2007)'s NIW posterior;
the closed-form conjugate direction η₀ + (N/|B|)·E[t] − η (expfam.base.natural_gradient);
central finite differences of the objective against those of the mean parameters; and Eq. 4
of Johnson et al. (2016) assembled term by term on a small SVAE-shaped model.

Compilation, not arithmetic, is what these tests cost. Every compiled program is reused where
it can be: members hold float64 NumPy leaves (not weakly typed scalars, which would be
another program's inputs), :func:`solve` calls fisher_solve as natural_gradient does, each
gradient is jitted once outside its loop, and the larger computations (Eq. 4's terms, the
finite differences of the objective) run under one ``jax.jit`` rather than op by op.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from reference import murphy_niw_posterior, spd
from scipy.special import polygamma

from svae_core.expfam import base, categorical, dirichlet, gaussian, mniw, niw
from svae_core.natgrad import (
    HaltState,
    NaturalGradientState,
    fisher_matrix,
    fisher_solve,
    halt_outside_domain,
    in_domain,
    natural_gradient,
)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def as_numpy(tree):
    """The tree with float64 NumPy leaves: strongly typed, so every member of one shape is
    the same input type to a compiled program."""
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def member(family, seed=0):
    """One member's natural parameters (float64 NumPy leaves), from standard parameters."""
    rng = np.random.default_rng(seed)
    if family == "niw":
        eta = niw.from_standard(rng.normal(size=3), rng.uniform(0.5, 2.0), spd(rng, 3, 4.0),
                                6.0 + rng.uniform())
    elif family == "mniw":
        eta = mniw.from_standard(rng.normal(size=(2, 3)), spd(rng, 3, 2.0), spd(rng, 2, 3.0),
                                 5.0 + rng.uniform())
    elif family == "dirichlet":
        eta = dirichlet.from_standard(rng.uniform(0.7, 3.0, size=4))
    elif family == "categorical":
        eta = categorical.from_standard(rng.dirichlet(np.full(4, 2.0)))
    elif family == "gaussian":
        eta = gaussian.from_standard(rng.normal(size=3), spd(rng, 3))
    else:
        raise ValueError(family)
    return as_numpy(eta)


# fisher_solve called as natural_gradient calls it (rtol by keyword), so that the two share
# one compiled program per member shape.
solve = functools.partial(fisher_solve, rtol=None)


LOG_PARTITION = {"niw": niw.log_partition, "mniw": mniw.log_partition,
                 "dirichlet": dirichlet.log_partition,
                 "categorical": categorical.log_partition, "gaussian": gaussian.log_partition}


def stack(trees):
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def one_update(tx, grads, params):
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


def niw_expected_loglik(eta, stats):
    """Σ_n E_q[log N(x_n | μ, Σ)] from statistics packed (Σxxᵀ, Σx, N, N), written out from
    the expected precision statistics (not through expfam.base.conjugate_elbo)."""
    e = niw.expected_precision_stats(eta)
    dim = eta.km.shape[-1]
    return (-0.5 * jnp.sum(e.prec * stats.Phi) + e.prec_mean @ stats.km
            - 0.5 * stats.kappa * e.mean_prec_mean + 0.5 * stats.nu * e.logdet_prec
            - 0.5 * stats.nu * dim * math.log(2 * math.pi))


# ----------------------------------------------------------------------------- (1) F⁺g


MODULES = {"niw": niw, "mniw": mniw, "dirichlet": dirichlet, "categorical": categorical}


@pytest.mark.parametrize("family", ["niw", "mniw", "dirichlet", "categorical"])
def test_transform_is_minus_step_pinv_fisher_times_gradient(family):
    """update = −step · pinv(∇²A(η)) · g, against NumPy's dense pseudo-inverse, for gradients
    with and without components along the Fisher null space (antisymmetric matrix parts).
    The dense Fisher matrix is checked against central differences of ∇A (float64)."""
    eta = member(family)
    lp, mod = LOG_PARTITION[family], MODULES[family]
    flat_eta, unravel = ravel_pytree(eta)
    fisher = np.asarray(fisher_matrix(lp, eta))
    columns = []
    for i in range(flat_eta.size):
        h = 1e-6 * max(1.0, abs(float(flat_eta[i])))
        e = np.zeros(flat_eta.size)
        e[i] = h
        columns.append((flat(mod.expected_stats(unravel(flat_eta + e)))
                        - flat(mod.expected_stats(unravel(flat_eta - e)))) / (2 * h))
    np.testing.assert_allclose(fisher, np.stack(columns, 1), rtol=1e-6,
                               atol=1e-7 * np.abs(fisher).max())
    pinv = np.linalg.pinv(fisher, rtol=1e-10)
    rng = np.random.default_rng(1)
    raw = rng.normal(size=flat_eta.shape)
    # A gradient of a loss that sees η only through the distribution: symmetric matrix fields
    # (categorical: zero-sum), built as F·v; and the raw vector, which has null-space parts.
    grads = [fisher @ raw, raw] if family != "categorical" else [fisher @ raw]
    tx = natural_gradient(lp, 0.3)
    for g in grads:
        got = flat(one_update(tx, unravel(jnp.asarray(g)), eta))
        np.testing.assert_allclose(got, -0.3 * pinv @ g, rtol=1e-8,
                                   atol=1e-10 * np.abs(pinv @ g).max())
    if family == "dirichlet":  # nonsingular, closed form diag ψ'(α) − ψ'(Σα)·11ᵀ
        alpha = np.asarray(dirichlet.to_standard(eta))
        closed = np.diag(polygamma(1, alpha)) - polygamma(1, alpha.sum())
        np.testing.assert_allclose(fisher, closed, rtol=1e-10)
        np.testing.assert_allclose(flat(solve(lp, eta, unravel(jnp.asarray(raw)))),
                                   np.linalg.solve(closed, raw), rtol=1e-9)


def test_singular_directions_are_removed_exactly():
    """Antisymmetric directions are exact null vectors of F; the solution is symmetric."""
    eta = member("niw")
    fisher = np.asarray(fisher_matrix(niw.log_partition, eta))
    d = 3
    for i in range(d):
        for j in range(i + 1, d):
            v = np.zeros((d, d))
            v[i, j], v[j, i] = 1.0, -1.0
            vec = np.concatenate([v.ravel(), np.zeros(d + 2)])
            assert np.abs(fisher @ vec).max() == 0.0
    rng = np.random.default_rng(2)
    g = niw.NIWNatural(rng.normal(size=(d, d)), rng.normal(size=d), np.asarray(0.3),
                       np.asarray(-0.2))
    x = solve(niw.log_partition, eta, g)
    np.testing.assert_allclose(x.Phi, x.Phi.T, rtol=0, atol=1e-12 * np.abs(x.Phi).max())
    assert np.linalg.matrix_rank(fisher, rtol=1e-10) == fisher.shape[0] - d * (d - 1) // 2


def test_batch_dims_schedules_and_member_detection():
    members = [member("niw", s) for s in range(3)]
    batch = stack(members)
    grads = stack([jax.grad(lambda e: -base.conjugate_elbo(niw.log_partition, e, members[0],
                                                           members[2]))(m) for m in members])
    tx = natural_gradient(niw.log_partition, optax.linear_schedule(0.5, 1.0, 1), batch_dims=1)
    state = tx.init(batch)
    assert isinstance(state, NaturalGradientState) and int(state.count) == 0
    up0, state = tx.update(grads, state, batch)
    up1, state = tx.update(grads, state, batch)
    assert int(state.count) == 2
    for i, m in enumerate(members):
        g_i = jax.tree_util.tree_map(lambda a, i=i: a[i], grads)
        ref = flat(solve(niw.log_partition, m, g_i))
        np.testing.assert_allclose(flat(jax.tree_util.tree_map(lambda a, i=i: a[i], up0)),
                                   -0.5 * ref, rtol=1e-10)
        np.testing.assert_allclose(flat(jax.tree_util.tree_map(lambda a, i=i: a[i], up1)),
                                   -1.0 * ref, rtol=1e-10)
        # = the closed-form conjugate direction η₀ + s − η (here η₀ = members[0], s = members[2]).
        np.testing.assert_allclose(flat(jax.tree_util.tree_map(lambda a, i=i: a[i], up1)),
                                   flat(base.natural_gradient(m, members[0], members[2])),
                                   rtol=1e-8, atol=1e-9)
    # Members found inside a larger tree (default: NamedTuples; or by member_type).
    tree = {"a": members[0], "b": [members[1]]}
    gtree = {"a": grads_at(members[0]), "b": [grads_at(members[1])]}
    for kw in ({}, {"member_type": niw.NIWNatural}):
        up = one_update(natural_gradient(niw.log_partition, 1.0, **kw), gtree, tree)
        np.testing.assert_allclose(flat(up["b"][0]),
                                   -flat(solve(niw.log_partition, members[1],
                                               gtree["b"][0])), rtol=1e-12)
    with pytest.raises(ValueError, match="needs params"):
        natural_gradient(niw.log_partition).update(gtree, NaturalGradientState(jnp.int32(0)))
    with pytest.raises(ValueError, match="outside any natural-parameter member"):
        one_update(natural_gradient(niw.log_partition), {**gtree, "w": jnp.ones(2)},
                   {**tree, "w": jnp.ones(2)})


def grads_at(eta):
    prior = member("niw", 5)
    return jax.grad(lambda e: -base.conjugate_elbo(niw.log_partition, e, prior, prior))(eta)


# ----------------------------------------------------------------------------- (2) conjugate


def test_one_full_batch_step_of_size_one_lands_on_the_exact_posterior():
    """Gaussian data, NIW prior, loss = −(Σ_n E_q log N(x_n | μ, Σ) − KL(q‖p₀)): one step of
    size 1 from several starts gives Murphy's posterior; the same for K components at once."""
    rng = np.random.default_rng(6)
    d, n = 3, 40
    prior = dict(m=rng.normal(size=d), kappa=0.5, S=(d + 0.5) * np.eye(d), nu=d + 0.5)
    x = rng.multivariate_normal(rng.normal(size=d), spd(rng, d), size=n)
    eta0 = as_numpy(niw.from_standard(**prior))
    stats = niw.likelihood_stats(jnp.asarray(x))
    loss = lambda e: -(niw_expected_loglik(e, stats) - niw.kl(e, eta0))
    ref = murphy_niw_posterior(prior["m"], prior["kappa"], prior["S"], prior["nu"], x)
    tx = natural_gradient(niw.log_partition, 1.0)
    grad = jax.jit(jax.grad(loss))
    starts = [eta0, member("niw", 7),
              as_numpy(niw.from_standard(np.zeros(d), 30.0, np.eye(d), 9.0))]
    for start in starts:
        new = optax.apply_updates(start, one_update(tx, grad(start), start))
        got = niw.to_standard(new)._asdict()
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-9, err_msg=k)
    # K components with observed labels, stacked on a leading axis (batch_dims=1).
    k = 3
    labels = rng.integers(0, k, size=n)
    onehot = jax.nn.one_hot(labels, k)
    stats_k = jax.vmap(niw.likelihood_stats, (None, 1))(jnp.asarray(x), onehot)
    prior_k = stack([eta0] * k)
    loss_k = lambda e: -jnp.sum(jax.vmap(niw_expected_loglik)(e, stats_k)
                                - jax.vmap(niw.kl)(e, prior_k))
    start = stack(starts)
    tx = natural_gradient(niw.log_partition, 1.0, batch_dims=1)
    new = jax.vmap(niw.to_standard)(
        optax.apply_updates(start, one_update(tx, jax.jit(jax.grad(loss_k))(start), start)))
    for j in range(k):
        ref = murphy_niw_posterior(prior["m"], prior["kappa"], prior["S"], prior["nu"],
                                   x[labels == j])
        for name in ref:
            np.testing.assert_allclose(getattr(new, name)[j], ref[name], rtol=1e-9)


def test_minibatch_scaling_reproduces_the_first_term():
    """Loss with the N/|B| factor on a minibatch: F⁺∇ = η₀ + (N/|B|)·s_B − η (the 2016 code's
    first term); dividing the loss by N and multiplying the step by N changes nothing."""
    rng = np.random.default_rng(3)
    d, n, b = 2, 200, 20
    x = 3.0 * rng.normal(size=(n, d)) + 1.0
    eta0 = niw.from_standard(np.zeros(d), 0.5, (d + 0.5) * np.eye(d), d + 0.5)
    eta = niw.from_standard(np.ones(d), 2.0, 5.0 * np.eye(d), 7.0)
    batch = rng.choice(n, size=b, replace=False)
    stats_b = niw.likelihood_stats(jnp.asarray(x[batch]))
    loss = lambda e: -((n / b) * niw_expected_loglik(e, stats_b) - niw.kl(e, eta0))
    scaled = jax.tree_util.tree_map(lambda s: (n / b) * s, stats_b)
    target = flat(base.natural_gradient(eta, eta0, scaled))
    per_point = lambda e: loss(e) / n
    g_loss, g_point = jax.jit(lambda e: (jax.grad(loss)(e), jax.grad(per_point)(e)))(eta)
    for rho in (1.0, 0.1):
        up = one_update(natural_gradient(niw.log_partition, rho), g_loss, eta)
        np.testing.assert_allclose(flat(up), rho * target, rtol=1e-8, atol=1e-10)
        up = one_update(natural_gradient(niw.log_partition, rho * n), g_point, eta)
        np.testing.assert_allclose(flat(up), rho * target, rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------- (4) second term


def central_difference(f, x, v, eps=1e-5):
    """(f(x + εv) − f(x − εv)) / 2ε for pytrees x, v (f returns a pytree or a scalar)."""
    plus = f(jax.tree_util.tree_map(lambda a, b: a + eps * b, x, v))
    minus = f(jax.tree_util.tree_map(lambda a, b: a - eps * b, x, v))
    return jax.tree_util.tree_map(lambda p, m: (p - m) / (2 * eps), plus, minus)


@pytest.mark.parametrize("family", ["niw", "dirichlet"])
def test_natural_gradient_of_a_nonconjugate_term_is_its_mean_parameter_gradient(family):
    """L(η) = conjugate ELBO + g(μ(η)), g(μ) = Σ c ⊙ sin(μ) (c symmetric on matrix fields):
    the natural gradient is (η₀ + s − η) + c ⊙ cos(μ), and it is the gradient in mean
    parameters: ⟨ñ, dμ⟩ = dL along random directions, by central differences in float64."""
    lp = LOG_PARTITION[family]
    eta, prior, data = member(family, 0), member(family, 1), member(family, 2)
    stats = jax.tree_util.tree_map(lambda a: 0.5 * a, data)
    rng = np.random.default_rng(5)

    def sym_like(tree):
        def one(a):
            r = rng.normal(size=np.shape(a))
            return jnp.asarray(0.5 * (r + r.T) if r.ndim == 2 and r.shape[0] == r.shape[1]
                               else r)
        return jax.tree_util.tree_map(one, tree)

    c = sym_like(eta)
    mean = lambda e: base.expected_stats(lp, e)
    g = lambda mu: base.inner(c, jax.tree_util.tree_map(jnp.sin, mu))
    objective = lambda e: base.conjugate_elbo(lp, e, prior, stats) + g(mean(e))
    up = one_update(natural_gradient(lp, 1.0), jax.jit(jax.grad(lambda e: -objective(e)))(eta), eta)
    nat = flat(up)  # step −1·F⁺∇(−L) = F⁺∇L
    expected = (flat(base.natural_gradient(eta, prior, stats))
                + flat(jax.tree_util.tree_map(lambda ci, m: ci * jnp.cos(m), c, mean(eta))))
    np.testing.assert_allclose(nat, expected, rtol=1e-8, atol=1e-9 * np.abs(expected).max())
    differences = jax.jit(lambda v: (central_difference(objective, eta, v),
                                     central_difference(mean, eta, v)))
    for _ in range(3):
        d_loss, d_mean = differences(sym_like(eta))
        np.testing.assert_allclose(nat @ flat(d_mean), float(d_loss), rtol=1e-6)


def test_eq4_on_an_svae_shaped_model():
    """Proposition 4.2 on a small model: NIW global on (μ, Σ), latent x_n ~ N(μ, Σ), Poisson-like
    observations log p(y | x) = Σ_d (y_d x_d − e^{x_d}), recognition potentials (J_n, h_n).
    q*(x_n) = N(J = E[Σ⁻¹] + J_n, h = E[Σ⁻¹μ] + h_n) maximises the surrogate; the transform's
    output on ∇(−L_SVAE) must equal Eq. 4 assembled term by term, second term included."""
    rng = np.random.default_rng(8)
    d, n = 2, 6
    y = rng.poisson(2.0, size=(n, d)).astype(float)
    J_r = jnp.asarray(np.stack([np.diag(rng.uniform(0.5, 2.0, d)) for _ in range(n)]))
    h_r = jnp.asarray(rng.normal(size=(n, d)))
    eta0 = niw.from_standard(np.zeros(d), 0.5, (d + 0.5) * np.eye(d), d + 0.5)
    eta = niw.from_standard(np.array([0.3, -0.2]), 1.5, np.array([[2.0, 0.3], [0.3, 1.0]]), 5.0)

    def local_optimum(eta):
        mu = niw.expected_stats(eta)  # (E[−½Σ⁻¹], E[Σ⁻¹μ], ·, ·)
        return gaussian.GaussianNatural(-2.0 * mu.Phi + J_r, mu.km + h_r)

    def gaussian_moments(eta_x):
        cov = jnp.linalg.inv(eta_x.J)
        m = jnp.einsum("nij,nj->ni", cov, eta_x.h)
        return m, cov, cov + jnp.einsum("ni,nj->nij", m, m)

    def objective(eta, eta_x, surrogate=False):
        """Eq. 3 for q(θ) = NIW(η), q(x_n) = N(J_n, h_n), in closed form (no sampling); with
        surrogate=True, log p(y_n | x) is replaced by ψ_n(x) = −½xᵀJ_n x + h_nᵀx."""
        m, cov, exx = gaussian_moments(eta_x)
        if surrogate:
            lik = jnp.sum(-0.5 * jnp.einsum("nij,nij->n", J_r, exx)
                          + jnp.einsum("ni,ni->n", h_r, m))
        else:
            lik = jnp.sum(y * m - jnp.exp(m + 0.5 * jnp.diagonal(cov, axis1=1, axis2=2)))
        stats = niw.NIWNatural(exx.sum(0), m.sum(0), jnp.asarray(float(n)), jnp.asarray(float(n)))
        entropy = jnp.sum(0.5 * jnp.linalg.slogdet(2 * math.pi * math.e * cov)[1])
        return lik + niw_expected_loglik(eta, stats) + entropy - niw.kl(eta, eta0), stats

    svae = lambda e: objective(e, local_optimum(e))[0]

    @jax.jit
    def gradients_and_terms(eta):
        """∇_η(−L_SVAE); the surrogate's gradient in η_x at q*; Eq. 4's two terms."""
        g = jax.grad(lambda e: -svae(e))(eta)
        eta_x = local_optimum(eta)
        g_hat = jax.grad(lambda ex: objective(eta, ex, surrogate=True)[0])(eta_x)
        _, s = objective(eta, eta_x)
        first = base.natural_gradient(eta, eta0, s)
        gx = jax.grad(lambda ex: objective(eta, ex)[0])(eta_x)
        # η_x* = (−2μ_Phi + J_r, μ_km + h_r): Πᵀ∇_{η_x}L = (−2 Σ_n ∂L/∂J_n, Σ_n ∂L/∂h_n, 0, 0),
        # with ∂L/∂J_n the gradient among symmetric matrices (the symmetric part of jax's).
        second = niw.NIWNatural(-2.0 * base.symmetrize(gx.J.sum(0)), gx.h.sum(0),
                                jnp.asarray(0.0), jnp.asarray(0.0))
        return g, g_hat, first, second

    g, g_hat, first, second = gradients_and_terms(eta)
    up = one_update(natural_gradient(niw.log_partition, 1.0), g, eta)
    # q* is the surrogate's optimum: the surrogate's gradient in η_x vanishes there.
    assert np.abs(flat(g_hat)).max() < 1e-9
    eq4 = flat(first) + flat(second)
    np.testing.assert_allclose(flat(up), eq4, rtol=1e-8, atol=1e-10 * np.abs(eq4).max())
    # The second term matters here: the 2016 code's first term alone is off.
    assert np.abs(flat(second)).max() > 0.1 * np.abs(flat(first)).max()


# ----------------------------------------------------------------------------- (5) multi_transform


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(jnp.tanh(nn.Dense(8)(x)))


def test_multi_transform_natgrad_and_adam_under_vmap_over_runs():
    """One optimiser: K = 2 NIW components and Dirichlet weights by natural gradient (a
    schedule 0.5 then 1), an MLP by Adam, vmapped over 3 runs as the Trainer does. After two
    steps the globals are each run's exact posterior; the MLP matches Adam run alone."""
    d, n, k = 2, 30, 2
    mlp = MLP()
    eta0 = niw.from_standard(np.zeros(d), 0.5, (d + 0.5) * np.eye(d), d + 0.5)
    prior = {"niw": stack([eta0] * k), "pi": dirichlet.from_standard(np.full(k, 2.0))}

    def run_data(seed):
        key = jax.random.PRNGKey(seed)
        k1, k2, k3 = jax.random.split(key, 3)
        x = jax.random.normal(k1, (n, d)) * 2.0 + seed
        labels = jax.random.randint(k2, (n,), 0, k)
        target = jax.random.normal(k3, (n, 1))
        return x, labels, target

    def init(seed):
        x, _, _ = run_data(seed)
        comps = stack([niw.from_standard(jnp.full(d, 1.0 * (seed + j)), 1.0 + j,
                                         (2.0 + seed) * jnp.eye(d), 6.0) for j in range(k)])
        return {"niw": comps, "pi": dirichlet.from_standard(jnp.full(k, 3.0 + seed)),
                "net": mlp.init(jax.random.PRNGKey(100 + seed), x)}

    def stats_of(seed):
        x, labels, _ = run_data(seed)
        onehot = jax.nn.one_hot(labels, k)
        return {"niw": jax.vmap(niw.likelihood_stats, (None, 1))(x, onehot),
                "pi": dirichlet.likelihood_stats(labels, k)}

    def net_loss(net, seed):
        x, _, target = run_data(seed)
        return jnp.mean((mlp.apply(net, x) - target) ** 2)

    def loss(params, seed):
        s = stats_of(seed)
        conj = (jnp.sum(jax.vmap(base.conjugate_elbo, (None, 0, 0, 0))(
                    niw.log_partition, params["niw"], prior["niw"], s["niw"]))
                + base.conjugate_elbo(dirichlet.log_partition, params["pi"], prior["pi"],
                                      s["pi"]))
        return -conj + net_loss(params["net"], seed)

    schedule = optax.linear_schedule(0.5, 1.0, 1)
    tx = optax.multi_transform(
        {"niw": natural_gradient(niw.log_partition, schedule, batch_dims=1),
         "pi": natural_gradient(dirichlet.log_partition, schedule),
         "adam": optax.adam(1e-3)},
        {"niw": "niw", "pi": "pi", "net": "adam"})

    def init_run(seed):
        # strong dtypes, so that the step's outputs match its inputs (one compilation)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, a.dtype), init(seed))
        return params, tx.init(params)

    def step(state, seed):
        p, opt_state = state
        grads = jax.grad(loss)(p, seed)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    @jax.jit
    def reference(seed):
        """Per run, without vmap or multi_transform: the posterior, and Adam on the MLP."""
        start = init(seed)
        post = jax.tree_util.tree_map(jnp.add, prior, stats_of(seed))
        adam = optax.adam(1e-3)
        net, opt, nets = start["net"], adam.init(start["net"]), []
        for _ in range(2):
            u, opt = adam.update(jax.grad(net_loss)(net, seed), opt, net)
            net = optax.apply_updates(net, u)
            nets.append(net)
        return start, post, nets

    seeds = jnp.arange(3)
    states = jax.jit(jax.vmap(init_run))(seeds)  # leaves stacked on a leading run axis
    run_step = jax.jit(jax.vmap(step))
    first = run_step(states, seeds)
    states = run_step(first, seeds)
    for i in range(len(seeds)):
        start, post, nets = reference(seeds[i])
        take = lambda tree, i=i: flat(jax.tree_util.tree_map(lambda a: a[i], tree))
        for name in ("niw", "pi"):
            # step 1 (rate 0.5): halfway from the start to the posterior; step 2 (rate 1): there.
            np.testing.assert_allclose(take(first[0][name]),
                                       0.5 * (flat(start[name]) + flat(post[name])), rtol=1e-9)
            np.testing.assert_allclose(take(states[0][name]), flat(post[name]), rtol=1e-9,
                                       atol=1e-9)
        for got, net in ((first[0]["net"], nets[0]), (states[0]["net"], nets[1])):
            # flax keeps the MLP in float32, and Adam divides by √v + 1e-8: agreement to 1e-4
            # of a step (lr = 1e-3) where gradients are tiny.
            np.testing.assert_allclose(take(got), flat(net), rtol=1e-5, atol=1e-4 * 1e-3)
        assert not np.allclose(flat(nets[1]), flat(start["net"]))
    # The natural-gradient branches counted two steps per run.
    counts = [leaf for leaf in jax.tree_util.tree_leaves(states[1])
              if jnp.issubdtype(leaf.dtype, jnp.integer)]
    assert all(np.all(np.asarray(c) == 2) for c in counts)


def test_partially_masked_members_are_refused():
    eta, prior = member("niw", 0), member("niw", 1)
    stats = niw.likelihood_stats(jnp.ones((3, 3)))
    grads = jax.grad(lambda e: -base.conjugate_elbo(niw.log_partition, e, prior, stats))(eta)
    tx = optax.multi_transform({"ng": natural_gradient(niw.log_partition, 1.0),
                                "sgd": optax.sgd(0.1)},
                               niw.NIWNatural("ng", "ng", "sgd", "ng"))
    with pytest.raises(ValueError, match="partly selected"):
        tx.update(grads, tx.init(eta), eta)


# ----------------------------------------------------------------------------- domain


def test_in_domain_predicates():
    d = 3
    good = member("niw")
    assert bool(in_domain(niw, good)) and bool(in_domain("niw", good))
    assert not bool(in_domain(niw, good._replace(kappa=np.asarray(-0.1))))
    assert not bool(in_domain(niw, good._replace(nu=np.asarray(d - 1.0))))
    assert bool(in_domain(niw, good._replace(nu=np.asarray(d - 0.9))))
    # S = Phi − km kmᵀ/κ indefinite while Phi stays positive definite.
    bad_s = good._replace(km=good.km * 0 + 10.0)
    assert np.linalg.eigvalsh(np.asarray(bad_s.Phi)).min() > 0
    assert not bool(in_domain(niw, bad_s))
    assert not bool(in_domain(niw, good._replace(nu=np.asarray(np.nan))))
    batch = stack([good, good._replace(kappa=np.asarray(-1.0)), member("niw", 3)])
    np.testing.assert_array_equal(in_domain(niw, batch, batch_dims=1), [True, False, True])
    m = member("mniw")
    assert bool(in_domain(mniw, m))
    assert not bool(in_domain(mniw, m._replace(K=-m.K)))
    assert not bool(in_domain(mniw, m._replace(nu=np.asarray(1.0))))
    assert not bool(in_domain(mniw, m._replace(Phi=m.Phi - 100.0 * jnp.eye(2))))
    assert bool(in_domain(dirichlet, dirichlet.DirichletNatural(jnp.array([-0.5, 0.0, 2.0]))))
    assert not bool(in_domain(dirichlet, dirichlet.DirichletNatural(jnp.array([-1.0, 0.0]))))
    g = member("gaussian")
    assert bool(in_domain(gaussian, g)) and not bool(in_domain(gaussian, g._replace(J=-g.J)))
    assert bool(in_domain(categorical, member("categorical")))
    with pytest.raises(ValueError, match="unknown family"):
        in_domain("wishart", good)


def test_plain_gradient_steps_leave_the_domain_natural_steps_do_not():
    """The chapter's count: an SGD step on the same loss can exit the NIW domain where the
    natural step of size 1 lands on the posterior (a convex combination stays inside)."""
    rng = np.random.default_rng(9)
    d = 2
    x = 10.0 * rng.normal(size=(50, d))
    eta0 = niw.from_standard(np.zeros(d), 0.5, (d + 0.5) * np.eye(d), d + 0.5)
    stats = niw.likelihood_stats(jnp.asarray(x))
    loss = lambda e: -base.conjugate_elbo(niw.log_partition, e, eta0, stats)
    g = jax.grad(loss)(eta0)
    sgd = optax.apply_updates(eta0, one_update(optax.sgd(1.0), g, eta0))
    nat = optax.apply_updates(eta0, one_update(natural_gradient(niw.log_partition, 1.0), g, eta0))
    assert not bool(in_domain(niw, sgd))
    assert bool(in_domain(niw, nat))
    for rho in (0.25, 0.5, 0.75):
        half = optax.apply_updates(eta0, one_update(natural_gradient(niw.log_partition, rho),
                                                    g, eta0))
        assert bool(in_domain(niw, half))


def test_halt_outside_domain_stops_a_run_at_its_last_valid_params():
    # Inner: momentum SGD (stateful) on a scalar that must stay positive, constant gradient 1:
    # updates -1, -1.5, -1.75, ... take 2.5 -> 1.5 -> (0.0: refused at update 1). Every later
    # update is zero, even one that would be valid again, and the inner state keeps its value
    # from before the refused update.
    inner = optax.sgd(1.0, momentum=0.5)
    tx = halt_outside_domain(inner, lambda p: p["x"] > 0)
    params = {"x": jnp.asarray(2.5)}
    state = tx.init(params)
    path, states = [], []
    for g in [1.0, 1.0, 1.0, -4.0, -4.0]:
        updates, state = tx.update({"x": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)
        path.append(float(params["x"]))
        states.append(state)
    assert isinstance(state, HaltState)
    assert int(state.halted_at) == 1 and int(state.count) == 5
    np.testing.assert_allclose(path, [1.5] * 5)
    for a, b in zip(jax.tree_util.tree_leaves(state.inner),
                    jax.tree_util.tree_leaves(states[0].inner), strict=True):
        np.testing.assert_array_equal(a, b)

    # A run that stays valid is the inner transform unchanged.
    plain, plain_state = {"x": jnp.asarray(50.0)}, inner.init({"x": jnp.asarray(50.0)})
    wrapped, wrapped_state = dict(plain), tx.init(plain)
    for g in [1.0, -2.0, 3.0]:
        u, plain_state = inner.update({"x": jnp.asarray(g)}, plain_state, plain)
        plain = optax.apply_updates(plain, u)
        u, wrapped_state = tx.update({"x": jnp.asarray(g)}, wrapped_state, wrapped)
        wrapped = optax.apply_updates(wrapped, u)
    np.testing.assert_allclose(wrapped["x"], plain["x"], rtol=1e-14)
    assert int(wrapped_state.halted_at) == -1

    # Under vmap over runs, one run halting leaves the other's updates untouched.
    params = {"x": jnp.array([2.5, 100.0])}
    state = jax.vmap(tx.init)(params)
    for _ in range(4):
        updates, state = jax.vmap(tx.update)({"x": jnp.ones(2)}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(np.asarray(state.halted_at), [1, -1])
    np.testing.assert_allclose(params["x"], [1.5, 100.0 - (1 + 1.5 + 1.75 + 1.875)])
    with pytest.raises(ValueError, match="needs params"):
        tx.update({"x": jnp.ones(())}, tx.init({"x": jnp.ones(())}))


def test_svi_term_makes_sgd_the_closed_form_svi_step_in_float32():
    """svi_term is 0, its gradient is (η − target)/scale, and SGD at ρ·scale lands on
    η + ρ(target − η) to float32 rounding, inside the domain."""
    from svae_core.natgrad import svi_term

    eta = member("niw", seed=1)
    target = niw.from_standard(np.array([3.0, -1.0, 0.5]), 40.0, spd(np.random.default_rng(2),
                                                                      3, 200.0), 45.0)
    scale, rho = 7.0, 0.3
    value_and_grad = jax.jit(jax.value_and_grad(lambda e, t: svi_term(e, t, scale)))
    value, grad = value_and_grad(eta, target)
    assert float(value) == 0.0
    for g, e, t in zip(*(jax.tree_util.tree_leaves(x) for x in (grad, eta, target)),
                       strict=True):
        np.testing.assert_allclose(g, (e - t) / scale, rtol=1e-12)
    with jax.enable_x64(False):
        e32, t32 = (jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), x)
                    for x in (eta, target))
        _, g32 = value_and_grad(e32, t32)
        new = optax.apply_updates(e32, one_update(optax.sgd(rho * scale), g32, e32))
        assert new.Phi.dtype == jnp.float32
    for a, e, t in zip(*(jax.tree_util.tree_leaves(x) for x in (new, eta, target)),
                       strict=True):
        np.testing.assert_allclose(a, (1 - rho) * np.asarray(e) + rho * np.asarray(t),
                                   rtol=2e-6, atol=1e-5)
    assert bool(in_domain("niw", new))
