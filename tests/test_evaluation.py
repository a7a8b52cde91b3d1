"""Tests for svae_core.evaluation.

The central check: an SVAE whose parameters are *set* to the true linear-Gaussian model has the
exact posterior, so its held-out ELBO must equal the true log-likelihood (exactly in expectation;
the estimate differs only by the Monte Carlo noise of the reconstruction term, while
reconstruction-in-closed-form − KL matches to float32 rounding). Mechanics of the estimator
(keys, chunking, the standard error) are pinned with a tiny fake model whose ELBO noise is known.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svae_core.datasets import random_lds, sample_ssm, ssm_log_likelihood
from svae_core.evaluation import (
    ELBOAboveLikelihoodError,
    audit_elbo_bound,
    evaluate_elbo,
    gap_fraction,
    per_step_per_dim,
)
from svae_core.inference import GaussianPotentials, lds_smoother
from svae_core.models import ModelConfig, build_model
from svae_core.models.base import ELBOTerms

D, N, T, S = 3, 5, 100, 8
NUM_SAMPLES, NUM_REPEATS = 128, 4


# ------------------------------------------------------------------ an SVAE set to the truth


def _softplus_inv(x):
    return np.log(np.expm1(x))


def _raw_for_psd(P, jitter=1e-6):
    """Inverse of models.base.psd_from_raw: raw with L Lᵀ + jitter·I = P."""
    L = np.linalg.cholesky(P - jitter * np.eye(len(P)))
    return np.tril(L, -1) + np.diag(_softplus_inv(np.diag(L)))


def true_svae_params(params, ssm, potential):
    """Overwrite SVAE parameters so that prior, decoder and encoder are the true model's.

    Prior: m1, b as is; A_raw = A (‖A‖₂ = 1, so contract_spectral_norm leaves it); Q1_raw, Q_raw
    invert psd_from_raw. Decoder: kernel Cᵀ, bias d, log_var log diag R. Encoder: precision
    J = CᵀR⁻¹C from a constant (zero-kernel) head, mean = J⁻¹CᵀR⁻¹(y − d) so that
    h = J·mean = CᵀR⁻¹(y − d).
    """
    f64 = lambda a: np.asarray(a, np.float64)
    prior = {k: f64(v) for k, v in ssm.prior._asdict().items()}
    C, d, R = f64(ssm.C), f64(ssm.d), f64(ssm.R)
    J = C.T @ np.linalg.solve(R, C)
    K = np.linalg.solve(R, C) @ np.linalg.inv(J)  # (N, D): mean = (y − d) @ K
    if potential == "diagonal":
        assert np.allclose(J, np.diag(np.diag(J)), atol=1e-5), "diagonal case needs CᵀR⁻¹C diagonal"
        precision = dict(kernel=np.zeros((N, D)), bias=_softplus_inv(np.diag(J)) - 1.0)
    else:
        L = np.linalg.cholesky(J)
        raw = np.tril(L, -1) + np.diag(_softplus_inv(np.diag(L)) - 1.0)
        precision = dict(kernel=np.zeros((N, D * D)), bias=raw.reshape(-1))
    new = dict(
        prior=dict(m1=prior["m1"], b=prior["b"], A_raw=prior["A"],
                   Q1_raw=_raw_for_psd(prior["Q1"]), Q_raw=_raw_for_psd(prior["Q"])),
        decoder=dict(log_var=np.log(np.diag(R)), mean=dict(kernel=C.T, bias=d)),
        encoder=dict(mean=dict(kernel=K, bias=-d @ K), precision=precision),
    )
    shapes = jax.tree_util.tree_map(jnp.shape, params["params"])
    assert jax.tree_util.tree_map(np.shape, new) == shapes, \
        "the SVAE's parameter layout differs from the one set here"
    return {"params": jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), new)}


@functools.cache
def true_case(potential):
    base = random_lds(jax.random.PRNGKey(0), D, N, q=0.1, r=0.5, emission_bias_scale=1.0)
    if potential == "diagonal":  # orthogonal columns: CᵀR⁻¹C is diagonal
        U, _ = np.linalg.qr(np.asarray(base.C, np.float64))
        base = base._replace(C=jnp.asarray(U * np.array([2.0, 1.0, 0.6]), jnp.float32))
    smoother = "sequential" if potential == "diagonal" else "parallel"
    model = build_model("svae", ModelConfig(D, N, potential=potential, smoother=smoother))
    _, y = sample_ssm(jax.random.PRNGKey(1), base, S, T)
    # Parameters do not depend on T: initialise on 2 steps (much cheaper to trace).
    init = jax.jit(model.init)(jax.random.PRNGKey(2), y[0, :2], jnp.ones(2, bool),
                               jax.random.PRNGKey(3))
    params = true_svae_params(init, base, potential)
    est = evaluate_elbo(model, params, y, jax.random.PRNGKey(4), num_samples=NUM_SAMPLES,
                        num_repeats=NUM_REPEATS, batch_size=S)
    true_ll = np.asarray(ssm_log_likelihood(base, y), np.float64)
    return dict(ssm=base, model=model, params=params, y=y, est=est, true_ll=true_ll,
                true_mean=float(per_step_per_dim(true_ll, T, N).mean()))


@pytest.mark.parametrize("potential", ["diagonal", "dense"])
def test_svae_set_to_the_true_model_has_elbo_equal_to_log_likelihood(potential):
    case = true_case(potential)
    est, ssm = case["est"], case["ssm"]
    prior = case["model"].apply(case["params"], method=lambda m: m.prior())
    for ours, truth in zip(prior, ssm.prior, strict=True):
        np.testing.assert_allclose(ours, truth, atol=2e-6)
    assert est.elbo.shape == (S,) and est.elbo_repeats.shape == (S, NUM_REPEATS)
    # The error bar is small enough for the comparison to bite ...
    assert 0 < est.se < 5e-4
    # ... and the ELBO equals log p(y) within it (and within 1e-3 nats per step per dim).
    diff = est.mean - case["true_mean"]
    assert abs(diff) < 4 * est.se and abs(diff) < 1e-3, (est.mean, case["true_mean"], est.se)
    # Per sequence, with the MC s.d. pooled over sequences (same model, similar spread).
    pooled_se = np.sqrt(est.elbo_repeats.var(axis=1, ddof=1).mean() / NUM_REPEATS)
    assert np.all(np.abs(est.elbo - case["true_ll"]) < 5 * pooled_se)
    audit_elbo_bound(est.mean, est.se, case["true_mean"])  # an exact model passes the audit


def test_true_svae_kl_is_exact_so_closed_form_elbo_is_log_likelihood_to_rounding():
    """ELBO = E_q[log p(y|x)] − KL; with E_q in closed form (true posterior marginals) and the
    model's own exact KL, the sum is log p(y) up to float32 rounding, far below MC noise."""
    case = true_case("dense")
    ssm, y, est = case["ssm"], case["y"], case["est"]
    C, d, R = (np.asarray(a, np.float64) for a in (ssm.C, ssm.d, ssm.R))
    J = C.T @ np.linalg.solve(R, C)
    resid = np.asarray(y, np.float64) - d  # (S, T, N)
    h = resid @ np.linalg.solve(R, C)  # (S, T, D)
    with jax.enable_x64(True):
        prior64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), ssm.prior)
        post = jax.vmap(lambda hh: lds_smoother(
            prior64, GaussianPotentials(jnp.broadcast_to(J, (T, D, D)), hh),
            method="sequential"))(jnp.asarray(h))
        mu, cov = np.asarray(post.mean), np.asarray(post.cov)
    err = resid - mu @ C.T
    R_inv = np.linalg.inv(R)
    expected_recon = (
        -0.5 * np.einsum("stn,nm,stm->s", err, R_inv, err)
        - 0.5 * np.einsum("nm,md,stde,ne->s", R_inv, C, cov, C)
        - 0.5 * T * np.linalg.slogdet(2 * np.pi * R)[1]
    )
    closed_form_elbo = expected_recon - est.kl  # the KL is exact: the same in every repeat
    np.testing.assert_allclose(closed_form_elbo, case["true_ll"], atol=2e-2)  # ~1e-5 /step/dim
    # The MC reconstruction agrees with the closed form within its own noise.
    pooled_se = np.sqrt(est.elbo_repeats.var(axis=1, ddof=1).mean() / NUM_REPEATS)
    assert np.all(np.abs(est.reconstruction - expected_recon) < 5 * pooled_se)


def test_wrong_decoder_variance_lowers_the_elbo_and_passes_the_audit():
    case = true_case("diagonal")
    for factor in (3.0, 1 / 3):
        inner = case["params"]["params"]
        decoder = {**inner["decoder"], "log_var": inner["decoder"]["log_var"] + np.log(factor)}
        params = {"params": {**inner, "decoder": decoder}}
        est = evaluate_elbo(case["model"], params, case["y"], jax.random.PRNGKey(6),
                            num_samples=NUM_SAMPLES, num_repeats=NUM_REPEATS, batch_size=S)
        margin = audit_elbo_bound(est.mean, est.se, case["true_mean"])
        assert margin > 20 * est.se and margin > 0.02


def test_hiding_steps_from_the_encoder_lowers_the_elbo_and_passes_the_audit():
    case = true_case("diagonal")
    mask = (jnp.arange(T) // 10) % 2 == 0  # every other block of 10 steps hidden
    est = evaluate_elbo(case["model"], case["params"], case["y"], jax.random.PRNGKey(7),
                        num_samples=NUM_SAMPLES, num_repeats=NUM_REPEATS, mask=mask,
                        batch_size=S)
    margin = audit_elbo_bound(est.mean, est.se, case["true_mean"])
    assert margin > 10 * est.se


def test_never_observed_steps_are_neither_seen_nor_scored():
    """With ``observed`` the true SVAE's ELBO is exactly log p(y_observed) (the posterior given
    the observed steps is still exact), in nats per *scored* step per dim; garbage at the
    unobserved steps must not matter."""
    case = true_case("diagonal")
    observed = np.ones((S, T), bool)
    observed[:, 30:45] = False
    observed[0, 80:] = False
    y = np.where(observed[..., None], np.asarray(case["y"]), 1e6).astype(np.float32)
    est = evaluate_elbo(case["model"], case["params"], y, jax.random.PRNGKey(8),
                        num_samples=NUM_SAMPLES, num_repeats=NUM_REPEATS, batch_size=S,
                        observed=observed)
    ll = np.asarray(ssm_log_likelihood(case["ssm"], y, observed), np.float64)
    true_mean = ll.sum() / (N * observed.sum())
    assert abs(est.mean - true_mean) < 4 * est.se and est.se < 5e-4
    audit_elbo_bound(est.mean, est.se, true_mean)
    with pytest.raises(ValueError, match="no observed step"):
        evaluate_elbo(case["model"], case["params"], y, jax.random.PRNGKey(8),
                      observed=np.zeros((S, T), bool))


def test_audit_raises_for_an_elbo_above_the_true_likelihood():
    case = true_case("diagonal")
    est, truth = case["est"], case["true_mean"]
    with pytest.raises(ELBOAboveLikelihoodError, match="exceeds the true log-likelihood"):
        audit_elbo_bound(truth + 0.01, est.se, truth)  # fabricated: 0.01 nats/step/dim too high
    with pytest.raises(ValueError):  # a ValueError subclass
        audit_elbo_bound(truth + 5 * est.se, est.se, truth)
    # Within z standard errors (or atol) passes, and the margin is returned.
    assert audit_elbo_bound(truth + 3 * est.se, est.se, truth) == pytest.approx(-3 * est.se)
    assert audit_elbo_bound(-2.0, 0.0, -1.5) == pytest.approx(0.5)
    with pytest.raises(ELBOAboveLikelihoodError, match="zero SE"):
        audit_elbo_bound(-1.0 + 1e-9, 0.0, -1.0)
    assert audit_elbo_bound(-1.0 + 1e-9, 0.0, -1.0, atol=1e-6) == pytest.approx(-1e-9)
    with pytest.raises(ELBOAboveLikelihoodError):
        audit_elbo_bound(-0.9, 0.01, -1.0, z=2.0)
    for bad in (dict(elbo_se=-1.0), dict(elbo_se=float("nan")), dict(elbo_mean=float("nan"))):
        args = dict(elbo_mean=-1.0, elbo_se=0.1, true_ll_mean=-1.0) | bad
        with pytest.raises(ValueError) as info:
            audit_elbo_bound(**args)
        assert not isinstance(info.value, ELBOAboveLikelihoodError)


# ------------------------------------------------------------------ units and the gap


def test_per_step_per_dim():
    assert per_step_per_dim(-1000.0, 200, 5) == pytest.approx(-1.0)
    np.testing.assert_allclose(per_step_per_dim(np.array([-100.0, -50.0]), 10, 5), [-2.0, -1.0])
    with pytest.raises(ValueError):
        per_step_per_dim(1.0, 0, 5)


def test_gap_fraction_known_numbers():
    assert gap_fraction(-1.5, -2.0, -1.0) == pytest.approx(0.5)
    assert gap_fraction(-1.0, -2.0, -1.0) == pytest.approx(1.0)
    assert gap_fraction(-2.0, -2.0, -1.0) == pytest.approx(0.0)
    assert gap_fraction(-2.5, -2.0, -1.0) == pytest.approx(-0.5)  # worse than the null model
    assert gap_fraction(-0.9, -2.0, -1.0) == pytest.approx(1.1)  # above the truth: > 1
    # Unit-free: nats per sequence or per step per dim give the same fraction.
    per_seq = gap_fraction(-1.7 * 1000, -2.6 * 1000, -1.6 * 1000)
    assert per_seq == pytest.approx(gap_fraction(-1.7, -2.6, -1.6)) == pytest.approx(0.9)
    np.testing.assert_allclose(gap_fraction(np.array([-1.5, -1.25]), -2.0, -1.0), [0.5, 0.75])
    with pytest.raises(ValueError, match="must be > 0"):
        gap_fraction(-1.0, -1.0, -1.0)
    with pytest.raises(ValueError, match="must be > 0"):
        gap_fraction(-1.0, -1.0, -2.0)


# ------------------------------------------------------------------ estimator mechanics


class NoisyFake(nn.Module):
    """Contract-following stand-in: ELBO = Σ_t mask_t observed_t Σ_n y_tn + scale · (mean of S
    normals). Its per-estimate Monte Carlo variance is scale² / num_samples, known exactly."""

    scale: float = 30.0

    @nn.compact
    def __call__(self, y, mask, key, num_samples=1, observed=None):
        offset = self.param("offset", nn.initializers.zeros, ())
        noise = jax.random.normal(key, (num_samples,)).mean()
        seen = mask if observed is None else mask & observed
        value = jnp.sum(y * seen[:, None]) + offset + self.scale * noise
        return ELBOTerms(value, value, jnp.zeros(()))


def test_estimator_mean_and_standard_error_on_a_known_noise():
    model, Sf, Tf, Nf, K, ns = NoisyFake(), 32, 6, 2, 8, 4
    y = jax.random.normal(jax.random.PRNGKey(0), (Sf, Tf, Nf))
    params = model.init(jax.random.PRNGKey(1), y[0], jnp.ones(Tf, bool), jax.random.PRNGKey(2))
    est = evaluate_elbo(model, params, y, jax.random.PRNGKey(3), num_samples=ns, num_repeats=K,
                        batch_size=16)
    exact = np.asarray(jnp.sum(y, axis=(1, 2)), np.float64)
    se_exact = 30.0 / np.sqrt(ns * K * Sf) / (Tf * Nf)  # MC s.e. of the test-set mean
    assert est.se == pytest.approx(se_exact, rel=0.3)
    assert abs(est.mean - exact.mean() / (Tf * Nf)) < 4 * se_exact
    per_seq_sd = 30.0 / np.sqrt(ns * K)
    assert np.all(np.abs(est.elbo - exact) < 5 * per_seq_sd)
    # sequence_se also contains the spread of the sequences themselves: per sequence the
    # estimate is Σ y (variance T·N, y standard normal) plus the MC noise (per_seq_sd²).
    assert est.sequence_se > est.se
    seq_se_exact = np.sqrt(Tf * Nf + per_seq_sd**2) / np.sqrt(Sf) / (Tf * Nf)
    # rel 0.4 ≈ 3 standard errors of a standard deviation estimated from 32 sequences.
    assert est.sequence_se == pytest.approx(seq_se_exact, rel=0.4)


def test_estimates_do_not_depend_on_chunking_and_masks_broadcast():
    model, Sf, Tf, Nf = NoisyFake(), 5, 6, 2
    y = jax.random.normal(jax.random.PRNGKey(0), (Sf, Tf, Nf))
    params = model.init(jax.random.PRNGKey(1), y[0], jnp.ones(Tf, bool), jax.random.PRNGKey(2))
    key = jax.random.PRNGKey(3)
    run = functools.partial(evaluate_elbo, model, params, num_samples=2, num_repeats=3)
    a, b = run(y, key, batch_size=2), run(y, key, batch_size=16)
    np.testing.assert_allclose(a.elbo_repeats, b.elbo_repeats, rtol=1e-6)
    assert not np.allclose(a.elbo_repeats, run(y, jax.random.PRNGKey(4)).elbo_repeats)
    mask = jnp.arange(Tf) < 3
    m1 = run(y, key, mask=mask)
    m2 = run(y, key, mask=jnp.broadcast_to(mask, (Sf, Tf)))
    np.testing.assert_allclose(m1.elbo_repeats, m2.elbo_repeats, rtol=1e-6)
    assert not np.allclose(m1.elbo_repeats, a.elbo_repeats)
    single = run(y[0], key)
    assert single.elbo.shape == (1,) and np.isnan(single.sequence_se)
    with pytest.raises(ValueError, match="num_repeats"):
        run(y, key, num_repeats=1)
    with pytest.raises(ValueError, match="mask"):
        run(y, key, mask=jnp.ones((Sf, Tf + 1), bool))
    with pytest.raises(ValueError, match="observed must be boolean"):
        run(y, key, observed=jnp.ones((Sf, Tf)))
    with pytest.raises(ValueError, match="y must have shape"):
        run(y[None], key)
