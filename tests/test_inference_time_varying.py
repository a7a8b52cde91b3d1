"""Time-varying LDS dynamics and the mean-field expected prior (issue 21, deliverable 1).

Oracle: the joint (T·D)-dimensional Gaussian built densely in NumPy float64 from the log-density
itself — a block-tridiagonal precision assembled term by term from the (expected) statistics
E[Q⁻¹], E[Q⁻¹Ã], E[ÃᵀQ⁻¹Ã], E[log|Q⁻¹|] — with no code shared with svae_core.inference.
One shape (T = 5, D = 2, float64) throughout, and one sample count, so each smoother and
sampler compiles once per method.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import dense_posterior, random_potentials, random_prior

from svae_core.expfam import mniw, niw
from svae_core.inference import (
    GaussianPotentials,
    LDSPrior,
    add_potentials,
    expected_lds_prior,
    lds_log_prob,
    lds_sample,
    lds_smoother,
)

METHODS = ["sequential", "parallel"]
T, D = 5, 2
MISSING = (1, 2)  # a masked span
NUM_SAMPLES = 20_000


# ---------------------------------------------------------------- dense float64 oracle


def point_stats(p):
    """Point-mass statistics of a prior: init (P1, r1, s1, ℓ1), dynamics per step (P, R, S, ℓ)
    with Ã = [A b] acting on [x; 1]."""
    A, b, Q = (np.asarray(p[k], np.float64) for k in ("A", "b", "Q"))
    if A.ndim == 2:
        A, b, Q = A[None], b[None], Q[None]
    P1 = np.linalg.inv(p["Q1"])
    init = (P1, P1 @ p["m1"], p["m1"] @ P1 @ p["m1"], -np.linalg.slogdet(p["Q1"])[1])
    At = np.concatenate([A, b[..., None]], axis=-1)
    P = np.linalg.inv(Q)
    R = P @ At
    dyn = (P, R, np.swapaxes(At, -1, -2) @ R, -np.linalg.slogdet(Q)[1])
    return init, dyn


def dense_oracle(init, dyn, J, h):
    """log ∫ exp(E[log p(x|θ)]) ∏φ_t dx and the posterior moments, from the joint precision.

    E[log p(x|θ)] = −½xᵀΛx + ηᵀx + κ, assembled from
    E[log N(x_1|m1,Q1)] = −½x₁ᵀP₁x₁ + r₁ᵀx₁ − ½s₁ + ½ℓ₁ − (D/2)log 2π and
    E[log N(y|Ãx̃,Q)] = −½yᵀPy + yᵀRx̃ − ½x̃ᵀSx̃ + ½ℓ − (D/2)log 2π, x̃ = [x; 1].
    """
    J, h = np.asarray(J, np.float64), np.asarray(h, np.float64)
    T, dim = h.shape
    n = T * dim
    sl = lambda t: slice(t * dim, (t + 1) * dim)
    Lam, eta = np.zeros((n, n)), np.zeros(n)
    P1, r1, s1, l1 = init
    Lam[sl(0), sl(0)] += P1
    eta[sl(0)] += r1
    kappa = -0.5 * s1 + 0.5 * l1 - 0.5 * dim * np.log(2 * np.pi)
    P, R, S, ell = (np.broadcast_to(x, (T - 1, *np.shape(x)[-k:]) if k else (T - 1,))
                    for x, k in zip(dyn, (2, 2, 2, 0), strict=True))
    for t in range(T - 1):
        x, y = sl(t), sl(t + 1)
        Lam[y, y] += P[t]
        Lam[y, x] -= R[t][:, :dim]
        Lam[x, y] -= R[t][:, :dim].T
        Lam[x, x] += S[t][:dim, :dim]
        eta[y] += R[t][:, dim]
        eta[x] -= S[t][:dim, dim]
        kappa += -0.5 * S[t][dim, dim] + 0.5 * ell[t] - 0.5 * dim * np.log(2 * np.pi)
    post = Lam.copy()
    for t in range(T):
        post[sl(t), sl(t)] += J[t]
    eta_post = eta + h.reshape(-1)
    cov = np.linalg.inv(post)
    mean = cov @ eta_post
    log_z = (kappa + 0.5 * eta_post @ mean - 0.5 * np.linalg.slogdet(post)[1]
             + 0.5 * n * np.log(2 * np.pi))
    return dict(
        mean=mean.reshape(T, dim),
        cov=np.stack([cov[sl(t), sl(t)] for t in range(T)]),
        cross_cov=np.stack([cov[sl(t), sl(t + 1)] for t in range(T - 1)]),
        log_normalizer=log_z,
        joint_cov=cov,
        log_density=lambda v: -0.5 * v @ Lam @ v + eta @ v + kappa,
    )


def assert_matches(post, ref, log_z=None, rtol=1e-9, atol=1e-10):
    np.testing.assert_allclose(post.mean, ref["mean"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(post.cov, ref["cov"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(post.cross_cov, ref["cross_cov"], rtol=rtol, atol=atol)
    got = post.log_normalizer if log_z is None else log_z
    np.testing.assert_allclose(got, ref["log_normalizer"], rtol=1e-10, atol=1e-10)


def tv_problem(seed):
    """A time-varying prior (every step its own A_t, b_t, Q_t) and potentials, masked span."""
    rng = np.random.default_rng(seed)
    steps = [random_prior(rng, D) for _ in range(T - 1)]
    p = dict(m1=steps[0]["m1"], Q1=steps[0]["Q1"],
             **{k: np.stack([s[k] for s in steps]) for k in ("A", "b", "Q")})
    J, h = random_potentials(rng, T, D)
    J[list(MISSING)], h[list(MISSING)] = 0.0, 0.0
    return p, J, h


def random_mniw(rng, d_in):
    M = 0.5 * rng.normal(size=(D, d_in))
    B = rng.normal(size=(d_in, d_in))
    K = B @ B.T + 0.5 * np.eye(d_in)
    C = rng.normal(size=(D, D))
    return mniw.from_standard(M, K, 0.5 * C @ C.T + 0.5 * np.eye(D), D + 2.0 + rng.uniform())


# Per-step dynamics statistics of a stack of MNIWs; one jitted function, compiled once.
expected_dynamics_stats_per_step = jax.jit(jax.vmap(mniw.expected_dynamics_stats))


def random_expected_stats(seed, per_step=True, d_in=D + 1):
    """Genuine (non-point-mass) expectations: NIW for the initial state, MNIW for dynamics."""
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(D, D))
    init = niw.expected_precision_stats(
        niw.from_standard(rng.normal(size=D), 0.7, B @ B.T + np.eye(D), D + 1.5))
    if per_step:
        etas = [random_mniw(rng, d_in) for _ in range(T - 1)]
        dyn = expected_dynamics_stats_per_step(jax.tree.map(lambda *x: np.stack(x), *etas))
        return init, dyn, etas
    eta = random_mniw(rng, d_in)
    return init, mniw.expected_dynamics_stats(eta), [eta]


def as_numpy(stats):
    return tuple(np.asarray(x, np.float64) for x in stats)


# ---------------------------------------------------------------- time-varying dynamics


def test_dense_oracle_agrees_with_reference_for_time_invariant_prior():
    """The precision-built oracle equals tests/reference.py's covariance-built one."""
    rng = np.random.default_rng(1)
    p = random_prior(rng, D)
    J, h = random_potentials(rng, T, D)
    ref = dense_posterior(p, J, h)
    ours = dense_oracle(*point_stats(p), J, h)
    for k in ("mean", "cov", "cross_cov", "log_normalizer"):
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_time_varying_matches_dense_with_masked_span(method):
    p, J, h = tv_problem(2)
    ref = dense_oracle(*point_stats(p), J, h)
    with jax.enable_x64(True):
        post = lds_smoother(LDSPrior(**p), GaussianPotentials(J, h), method=method)
        assert post.mean.dtype == jnp.float64
        assert_matches(post, ref)
        # Broadcasting: a shared Q with time-varying A and b is the stacked Q.
        shared_Q = lds_smoother(LDSPrior(**{**p, "Q": p["Q"][0]}), GaussianPotentials(J, h),
                                method=method)
        stacked = lds_smoother(LDSPrior(**{**p, "Q": np.broadcast_to(p["Q"][0], p["Q"].shape)}),
                               GaussianPotentials(J, h), method=method)
        np.testing.assert_allclose(shared_Q.mean, stacked.mean, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", METHODS)
def test_time_varying_samples_match_dense_moments(method):
    S = NUM_SAMPLES
    p, J, h = tv_problem(3)
    ref = dense_oracle(*point_stats(p), J, h)
    with jax.enable_x64(True):
        x = np.asarray(lds_sample(jax.random.PRNGKey(0), LDSPrior(**p), GaussianPotentials(J, h),
                                  num_samples=S, method=method))
    flat = x.reshape(S, T * D)
    var = np.diag(ref["joint_cov"])
    assert np.all(np.abs(flat.mean(0) - ref["mean"].reshape(-1)) < 5 * np.sqrt(var / S))
    assert np.all(np.abs(np.cov(flat.T) - ref["joint_cov"])
                  < 5 * np.sqrt(2 / S) * np.sqrt(np.outer(var, var)))


@pytest.mark.parametrize("method", METHODS)
def test_identical_steps_equal_time_invariant(method):
    rng = np.random.default_rng(4)
    p = random_prior(rng, D)
    J, h = random_potentials(rng, T, D)
    J[3], h[3] = 0.0, 0.0
    stacked = {**p, **{k: np.stack([p[k]] * (T - 1)) for k in ("A", "b", "Q")}}
    key = jax.random.PRNGKey(1)
    with jax.enable_x64(True):
        pots = GaussianPotentials(J, h)
        ti = lds_smoother(LDSPrior(**p), pots, method=method)
        tv = lds_smoother(LDSPrior(**stacked), pots, method=method)
        for a, b in zip(jax.tree.leaves(ti), jax.tree.leaves(tv), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(
            lds_sample(key, LDSPrior(**p), pots, num_samples=NUM_SAMPLES, method=method),
            lds_sample(key, LDSPrior(**stacked), pots, num_samples=NUM_SAMPLES, method=method),
            rtol=1e-12, atol=1e-13)


def test_time_varying_log_prob_matches_dense():
    p, _, _ = tv_problem(5)
    ref = dense_oracle(*point_stats(p), np.zeros((T, D, D)), np.zeros((T, D)))
    x = np.random.default_rng(6).normal(size=(T, D))
    with jax.enable_x64(True):
        ours = float(lds_log_prob(LDSPrior(**p), jnp.asarray(x)))
    np.testing.assert_allclose(ours, ref["log_density"](x.reshape(-1)), rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_time_varying_gradients_match_finite_differences(method):
    p, J, h = tv_problem(7)
    w = np.random.default_rng(8).normal(size=(T, D))

    def objective(prior):
        post = lds_smoother(prior, GaussianPotentials(J, h), method=method)
        return post.log_normalizer + jnp.sum(w * post.mean)

    def bump(prior, name, idx, step):
        value = getattr(prior, name).copy()
        value[idx] += step
        return prior._replace(**{name: value})

    with jax.enable_x64(True):
        prior = LDSPrior(**p)
        # One compiled program gives the gradient and, at the bumped points, the values.
        value_and_grad = jax.jit(jax.value_and_grad(objective))
        grad = jax.tree.map(np.asarray, value_and_grad(prior)[1])
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))
        f, eps = lambda prior: value_and_grad(prior)[0], 1e-6
        for name, idx in [("A", (0, 0, 1)), ("A", (2, 1, 0)), ("A", (3, 1, 1)), ("b", (1, 0)),
                          ("Q", (2, 0, 1))]:
            numeric = (f(bump(prior, name, idx, eps)) - f(bump(prior, name, idx, -eps))) / (2 * eps)
            np.testing.assert_allclose(getattr(grad, name)[idx], numeric, rtol=1e-6, atol=1e-8)
        # A step inside the masked span still moves the answer through the prediction.
        assert np.any(grad.A[1] != 0.0)


def test_time_varying_single_step():
    """T = 1: empty (0, D, D) dynamics; the answer is the time-invariant one's."""
    p = random_prior(np.random.default_rng(17), D)
    empty = {**p, "A": np.zeros((0, D, D)), "b": np.zeros((0, D)), "Q": np.zeros((0, D, D))}
    pots = GaussianPotentials(np.eye(D)[None], np.ones((1, D)))
    ref = dense_posterior(p, *pots)
    with jax.enable_x64(True):
        for method in METHODS:
            post = lds_smoother(LDSPrior(**empty), pots, method=method)
            np.testing.assert_allclose(post.mean, ref["mean"], rtol=1e-12)
            np.testing.assert_allclose(post.log_normalizer, ref["log_normalizer"], rtol=1e-12)


@pytest.mark.parametrize(
    "change,pattern",
    [
        (lambda p: {**p, "A": p["A"][:-1]}, r"A=\(3, 2, 2\)"),
        (lambda p: {**p, "b": p["b"][:-1]}, r"b=\(3, 2\)"),
        (lambda p: {k: (v[:-1] if k in "AbQ" else v) for k, v in p.items()}, r"T-1=4"),
    ],
)
def test_bad_time_varying_shapes_raise(change, pattern):
    p, J, h = tv_problem(9)
    with pytest.raises(ValueError, match=pattern):
        lds_smoother(LDSPrior(**change(p)), GaussianPotentials(J, h))


# ---------------------------------------------------------------- the expected prior


@pytest.mark.parametrize("shared", [False, True])
def test_point_mass_reproduces_the_plain_smoother(shared):
    """q(θ) a point mass: ψ = 0, c = 0, p̄ = p, and the smoother's answer is today's."""
    p, J, h = tv_problem(10)
    if shared:
        p = {**p, **{k: p[k][0] for k in ("A", "b", "Q")}}
    init, dyn = point_stats(p)
    if shared:
        dyn = tuple(x[0] for x in dyn)
    with jax.enable_x64(True):
        out = expected_lds_prior(init, dyn, num_timesteps=T)
        assert out.prior.A.shape == ((D, D) if shared else (T - 1, D, D))
        for k, v in p.items():
            np.testing.assert_allclose(getattr(out.prior, k), v, rtol=1e-12, atol=1e-13)
        assert out.potentials.J.shape == (T, D, D) and out.potentials.h.shape == (T, D)
        np.testing.assert_allclose(out.potentials.J, 0.0, atol=1e-12)
        np.testing.assert_allclose(out.potentials.h, 0.0, atol=1e-12)
        np.testing.assert_allclose(out.constant, 0.0, atol=1e-12)
        for method in METHODS:
            ref = lds_smoother(LDSPrior(**p), GaussianPotentials(J, h), method=method)
            post = lds_smoother(out.prior, add_potentials(GaussianPotentials(J, h),
                                                          out.potentials), method=method)
            for a, b in zip(jax.tree.leaves(post), jax.tree.leaves(ref), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("per_step,d_in", [(True, D + 1), (False, D + 1), (False, D)])
def test_expected_prior_matches_dense_expected_log_joint(per_step, d_in):
    """Non-point-mass NIW × MNIW expectations: smoother(p̄, φ + ψ) + c is the dense Gaussian
    integral of exp(E_q(θ) log p(x|θ)) ∏φ_t, with its posterior moments."""
    _, J, h = tv_problem(11)
    with jax.enable_x64(True):
        init, dyn, etas = random_expected_stats(12 + per_step + d_in, per_step, d_in)
        out = expected_lds_prior(init, dyn, num_timesteps=T)
        init_np, dyn_np = as_numpy(init), as_numpy(dyn)
        if d_in == D:  # no offset: pad Ã = [A 0] for the oracle
            P, R, S, ell = dyn_np
            dyn_np = (P, np.pad(R, [(0, 0), (0, 1)]), np.pad(S, [(0, 1), (0, 1)]), ell)
        ref = dense_oracle(init_np, dyn_np, J, h)
        assert np.abs(out.constant) > 1e-3  # not a point mass: the constant matters
        assert np.max(np.abs(out.potentials.J)) > 1e-3
        # W = S − RᵀP⁻¹R is D·K⁻¹ for an MNIW (closed form), hence PSD.
        for t, eta in enumerate(etas):
            K_inv = np.linalg.inv(np.asarray(eta.K))
            np.testing.assert_allclose(np.asarray(out.potentials.J)[t], D * K_inv[:D, :D],
                                       rtol=1e-9)
        assert np.all(np.linalg.eigvalsh(out.potentials.J) > -1e-12)
        pots = add_potentials(GaussianPotentials(J, h), out.potentials)
        for method in METHODS:
            post = lds_smoother(out.prior, pots, method=method)
            assert_matches(post, ref, log_z=float(post.log_normalizer) + float(out.constant))


def test_expected_prior_pointwise_and_gradient():
    """At any x, log p̄(x) + ψ(x) + c = E_q(θ)[log p(x|θ)] (dense); gradients are finite."""
    x = np.random.default_rng(13).normal(size=(T, D))
    with jax.enable_x64(True):
        init, dyn, _ = random_expected_stats(14)
        out = expected_lds_prior(init, dyn)
        ours = (float(lds_log_prob(out.prior, x)) + float(out.constant)
                + np.sum(-0.5 * np.einsum("ti,tij,tj->t", x, out.potentials.J, x)
                         + np.einsum("ti,ti->t", out.potentials.h, x)))
        ref = dense_oracle(as_numpy(init), as_numpy(dyn), np.zeros((T, D, D)), np.zeros((T, D)))
        np.testing.assert_allclose(ours, ref["log_density"](x.reshape(-1)), rtol=1e-11)
        grads = jax.jit(jax.grad(lambda s: expected_lds_prior(init, s).constant
                                 + jnp.sum(expected_lds_prior(init, s).prior.A)))(dyn)
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_expected_prior_bad_inputs():
    with jax.enable_x64(True):
        init, dyn, _ = random_expected_stats(15, per_step=False)
        with pytest.raises(ValueError, match="num_timesteps"):
            expected_lds_prior(init, dyn)
        with pytest.raises(ValueError, match="dynamics statistics"):
            expected_lds_prior(init, dyn._replace(prec_A=np.asarray(dyn.prec_A)[:, :1]),
                               num_timesteps=T)
        init, dyn, _ = random_expected_stats(16)
        with pytest.raises(ValueError, match="num_timesteps=3"):
            expected_lds_prior(init, dyn, num_timesteps=3)
