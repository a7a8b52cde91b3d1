"""The LDS-SVAE: masking drops exactly the masked potentials; ELBO terms are consistent.

Each test runs its model calls in one jitted program: flax's init and apply outside jit would
compile every small operation separately, which costs far more than the computations. The
masking and KL tests use the sequential smoother, which ``smoother="auto"`` picks on CPU: it
compiles in about 40% of the parallel one's time, and what these tests check does not depend
on the smoother (test_inference_lds checks that the two agree).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svae_core.models import ModelConfig, build_model


@pytest.mark.parametrize("potential", ["diagonal", "dense"])
def test_masking_drops_exactly_the_masked_potentials(potential):
    model = build_model("svae", ModelConfig(3, 5, potential=potential, smoother="sequential"))
    y = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    full, mask = np.ones(40, bool), np.arange(40) % 7 != 3
    y2 = y.copy()
    y2[3] += 5.0  # a hidden step

    @jax.jit
    def run(ys, masks):
        """Potentials and ELBO terms of each (y, mask) pair, the same key for every pair (one
        vmapped program: the smoother is compiled once)."""
        params = model.init(jax.random.PRNGKey(1), ys[0], masks[0], jax.random.PRNGKey(2))
        key = jax.random.PRNGKey(3)
        return jax.vmap(lambda y, m: (model.apply(params, y, m, method=model.potentials),
                                      model.apply(params, y, m, key, num_samples=2)))(ys, masks)

    pots, terms = jax.tree.map(np.asarray, run(np.stack([y, y, y2]),
                                               np.stack([full, mask, mask])))
    (J_full, J, _), (h_full, h, _) = pots.J, pots.h
    hidden = ~mask
    assert np.all(J[hidden] == 0) and np.all(h[hidden] == 0)
    np.testing.assert_array_equal(J[~hidden], J_full[~hidden])
    np.testing.assert_array_equal(h[~hidden], h_full[~hidden])
    # Hidden steps still count in the reconstruction: changing y there changes the ELBO,
    # but not the posterior.
    _, a, b = (jax.tree.map(lambda v, i=i: v[i], terms) for i in range(3))
    assert float(a.kl) == pytest.approx(float(b.kl), rel=1e-6)
    assert abs(float(a.reconstruction - b.reconstruction)) > 1.0


def test_closed_form_kl_matches_monte_carlo():
    """KL from the closed form equals a Monte Carlo estimate of E_q[log q − log p]."""
    from svae_core.inference import lds_log_prob, lds_smoother_and_sample

    model = build_model("svae", ModelConfig(2, 3, smoother="sequential"))
    y = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    mask = np.ones(8, bool)

    @jax.jit
    def run(y, mask):
        """(closed-form KL, log q − log p at 20,000 draws from q)."""
        params = model.init(jax.random.PRNGKey(1), y, mask, jax.random.PRNGKey(2))
        terms = model.apply(params, y, mask, jax.random.PRNGKey(3), num_samples=4)
        prior = model.apply(params, method=lambda m: m.prior())
        pots = model.apply(params, y, mask, method=model.potentials)
        # One forward pass for the marginals and the draws (equal to lds_smoother's and
        # lds_sample's with the same key).
        post, x = lds_smoother_and_sample(jax.random.PRNGKey(4), prior, pots, num_samples=20000,
                                          method="sequential")
        log_phi = jnp.sum(pots.h * x, -1) - 0.5 * jnp.sum(pots.J * x**2, -1)  # diagonal J
        log_q = jnp.sum(log_phi, -1) - post.log_normalizer + jax.vmap(lambda s: lds_log_prob(
            prior, s))(x)
        return terms.kl, log_q - jax.vmap(lambda s: lds_log_prob(prior, s))(x)

    kl, log_ratio = jax.tree.map(np.asarray, run(y, mask))
    mc, se = float(np.mean(log_ratio)), float(np.std(log_ratio) / np.sqrt(log_ratio.shape[0]))
    assert abs(mc - float(kl)) < 4 * se + 1e-4


def test_bad_sequence_shapes():
    model = build_model("svae", ModelConfig(3, 5))
    y = np.zeros((10, 5), np.float32)
    params = jax.jit(model.init)(jax.random.PRNGKey(1), y, np.ones(10, bool),
                              jax.random.PRNGKey(2))
    with pytest.raises(ValueError, match=r"\(T, 5\)"):
        model.apply(params, np.zeros((10, 4), np.float32), np.ones(10, bool),
                    jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="mask"):
        model.apply(params, y, np.ones(9, bool), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="unknown model"):
        build_model("transformer", ModelConfig(3, 5))


def test_dynamics_init_choices():
    """"decay" starts A near 0.95·I; "rotation" starts it at 0.99 times an orthogonal matrix
    with a nonzero rotation angle; both reach every model family; other names are refused."""
    names, inits = ("svae", "rnn_mf", "rnn_ar_nl"), ("decay", "rotation")

    @jax.jit
    def initial_dynamics(key):
        """{(family, dynamics_init): the prior's A after the model's init}. Only the prior is
        initialised: flax derives its parameters from the submodule's name, so they equal the
        full init's, and tracing the whole model six times would cost most of the test."""
        out = {}
        for name in names:
            for init in inits:
                model = build_model(name, ModelConfig(3, 4, dynamics_init=init))
                params = model.init(key, method=lambda m: m.prior())
                out[name, init] = model.apply(params, method=lambda m: m.prior()).A
        return out

    A_all = jax.tree.map(np.asarray, initial_dynamics(jax.random.PRNGKey(0)))
    for name in names:
        A = {init: A_all[name, init] for init in inits}
        np.testing.assert_allclose(A["decay"], 0.95 * np.eye(3), atol=0.05)
        np.testing.assert_allclose(A["rotation"].T @ A["rotation"], 0.99**2 * np.eye(3),
                                   atol=1e-5)
        assert np.abs(np.angle(np.linalg.eigvals(A["rotation"]))).max() > 1e-2
    with pytest.raises(ValueError, match="dynamics_init"):
        ModelConfig(3, 4, dynamics_init="random")
