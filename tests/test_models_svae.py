"""The LDS-SVAE: masking drops exactly the masked potentials; ELBO terms are consistent."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svae_core.inference import lds_smoother
from svae_core.models import ModelConfig, build_model


@pytest.mark.parametrize("potential", ["diagonal", "dense"])
def test_masking_drops_exactly_the_masked_potentials(potential):
    model = build_model("svae", ModelConfig(3, 5, potential=potential))
    y = jax.random.normal(jax.random.PRNGKey(0), (40, 5))
    full, mask = jnp.ones(40, bool), jnp.arange(40) % 7 != 3
    params = model.init(jax.random.PRNGKey(1), y, full, jax.random.PRNGKey(2))
    pots_full = model.apply(params, y, full, method=model.potentials)
    pots = model.apply(params, y, mask, method=model.potentials)
    hidden = ~np.asarray(mask)
    assert np.all(np.asarray(pots.J)[hidden] == 0) and np.all(np.asarray(pots.h)[hidden] == 0)
    np.testing.assert_array_equal(np.asarray(pots.J)[~hidden], np.asarray(pots_full.J)[~hidden])
    np.testing.assert_array_equal(np.asarray(pots.h)[~hidden], np.asarray(pots_full.h)[~hidden])
    # Hidden steps still count in the reconstruction: changing y there changes the ELBO,
    # but not the posterior.
    y2 = y.at[3].add(5.0)
    key = jax.random.PRNGKey(3)
    a = model.apply(params, y, mask, key, num_samples=2)
    b = model.apply(params, y2, mask, key, num_samples=2)
    assert float(a.kl) == pytest.approx(float(b.kl), rel=1e-6)
    assert abs(float(a.reconstruction - b.reconstruction)) > 1.0


def test_closed_form_kl_matches_monte_carlo():
    """KL from the closed form equals a Monte Carlo estimate of E_q[log q − log p]."""
    from svae_core.inference import lds_log_prob, lds_sample

    model = build_model("svae", ModelConfig(2, 3))
    y = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
    mask = jnp.ones(8, bool)
    params = model.init(jax.random.PRNGKey(1), y, mask, jax.random.PRNGKey(2))
    terms = model.apply(params, y, mask, jax.random.PRNGKey(3), num_samples=4)
    prior = model.apply(params, method=lambda m: m.prior())
    pots = model.apply(params, y, mask, method=model.potentials)
    post = lds_smoother(prior, pots)
    x = lds_sample(jax.random.PRNGKey(4), prior, pots, num_samples=20000)
    log_phi = jnp.sum(pots.h * x, -1) - 0.5 * jnp.sum(pots.J * x**2, -1)  # diagonal J
    log_q = jnp.sum(log_phi, -1) - post.log_normalizer + jax.vmap(lambda s: lds_log_prob(
        prior, s))(x)
    log_ratio = log_q - jax.vmap(lambda s: lds_log_prob(prior, s))(x)
    mc, se = float(jnp.mean(log_ratio)), float(jnp.std(log_ratio) / np.sqrt(x.shape[0]))
    assert abs(mc - float(terms.kl)) < 4 * se + 1e-4


def test_bad_sequence_shapes():
    model = build_model("svae", ModelConfig(3, 5))
    y = jnp.zeros((10, 5))
    params = model.init(jax.random.PRNGKey(1), y, jnp.ones(10, bool), jax.random.PRNGKey(2))
    with pytest.raises(ValueError, match=r"\(T, 5\)"):
        model.apply(params, jnp.zeros((10, 4)), jnp.ones(10, bool), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="mask"):
        model.apply(params, y, jnp.ones(9, bool), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="unknown model"):
        build_model("transformer", ModelConfig(3, 5))


def test_dynamics_init_choices():
    """"decay" starts A near 0.95·I; "rotation" starts it at 0.99 times an orthogonal matrix
    with a nonzero rotation angle; both reach every model family; other names are refused."""
    y, mask, key = jnp.zeros((6, 4)), jnp.ones(6, bool), jax.random.PRNGKey(0)
    for name in ("svae", "rnn_mf", "rnn_ar_nl"):
        A = {}
        for init in ("decay", "rotation"):
            model = build_model(name, ModelConfig(3, 4, dynamics_init=init))
            params = model.init(key, y, mask, key)
            A[init] = np.asarray(model.apply(params, method=lambda m: m.prior()).A)
        np.testing.assert_allclose(A["decay"], 0.95 * np.eye(3), atol=0.05)
        np.testing.assert_allclose(A["rotation"].T @ A["rotation"], 0.99**2 * np.eye(3),
                                   atol=1e-5)
        assert np.abs(np.angle(np.linalg.eigvals(A["rotation"]))).max() > 1e-2
    with pytest.raises(ValueError, match="dynamics_init"):
        ModelConfig(3, 4, dynamics_init="random")
