"""The real-data chapter's driver: the data as the models see them, forecasts, claims."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svae_core.datasets import load_real_dataset
from svae_core.experiments import real_data as rd
from svae_core.models import ModelConfig, build_model


def test_variable_length_data_are_padded_unobserved_and_forecast_only_where_long_enough():
    settings = dataclasses.replace(rd.PROFILES["quick"], forecast_sequences=1000)
    data = rd.prepared_data("japanese_vowels", settings)
    raw = load_real_dataset("japanese_vowels")
    S, T, N = data["y_train"].shape
    assert (S, N) == (270, 12) and T == data["y_test"].shape[1] == 29
    assert data["observed_train"].sum() == raw.train_mask.sum()
    assert data["observed_test"].sum() == raw.test_mask.sum()
    assert np.all(data["y_test"][~data["observed_test"]] == 0)
    t0, H = data["num_observed"], data["horizon"]
    lengths = raw.test_mask.sum(axis=1)
    np.testing.assert_array_equal(data["forecast_index"], np.flatnonzero(lengths >= t0 + H))
    np.testing.assert_array_equal(data["forecast_y"],
                                  np.asarray(raw.test)[data["forecast_index"], : t0 + H])
    assert not data["all_observed"]


def test_forecasts_score_the_model_own_predictive_likelihood_per_step_and_channel():
    D, N, F, t0, T = 2, 3, 3, 5, 8
    model = build_model("svae", ModelConfig(latent_dim=D, obs_dim=N, smoother="sequential"))
    y = jax.random.normal(jax.random.PRNGKey(0), (F, T, N))
    params = model.init(jax.random.PRNGKey(1), y[0], jnp.ones(T, bool), jax.random.PRNGKey(2))
    data = {"forecast_y": np.asarray(y), "num_observed": t0, "horizon": T - t0}
    key = jax.random.PRNGKey(3)
    out = rd.model_forecasts(model, params, data, 64, key)
    k_terms = jax.random.split(key)[0]
    ref = [model.apply(params, y[f], t0, jax.random.split(k, 2)[0], 64,
                       method="predictive_log_likelihood")[0]
           for f, k in enumerate(jax.random.split(k_terms, F))]
    np.testing.assert_allclose(out["predictive_ll"], np.mean(ref) / ((T - t0) * N), rtol=1e-5)
    lo, mid, hi = out["bands"]
    assert lo.shape == (F, T - t0, N) and np.all(lo <= mid) and np.all(mid <= hi)


def _result(svae, svae_se, baseline, linear, pll=(-1.0, 0.01, -1.1)):
    row = lambda test, se: {"test": test, "test_se": se, "predictive_ll": pll[0],
                            "predictive_ll_se": pll[1]}
    return {"results": {"x": {str(D): {"linear_ssm": {"test": lin, "predictive_ll": pll[2]},
                                       "svae": row(s, svae_se), "rnn_mf": row(b, 0.001)}
                              for D, s, b, lin in zip((2, 4), svae, baseline, linear,
                                                      strict=True)}}}


@pytest.mark.parametrize("svae,baseline,expected", [
    ((-0.9, -0.8), (-1.0, -0.9), (True, True)),
    ((-0.9, -1.2), (-1.0, -0.9), (False, False)),   # below the linear SSM at D = 4
    ((-0.9, -0.8), (-0.5, -0.9), (True, False)),    # a baseline ahead at D = 2
    ((-0.999, -0.8), (-1.2, -0.9), (False, True)),  # above by less than 2 s.e.
])
def test_claims_hold_only_at_every_latent_size(svae, baseline, expected):
    claims = rd.claims(_result(svae, 0.001, baseline, (-1.0, -1.0)))
    assert [c["reproduced"] for c in claims[:2]] == list(expected)
    assert claims[2]["reproduced"]  # forecasts: -1.0 ± 0.01 against -1.1
    assert not rd.claims(_result(svae, 0.001, baseline, (-1.0, -1.0),
                                 pll=(-1.2, 0.01, -1.1)))[2]["reproduced"]


def test_summary_rows_measure_against_the_linear_model():
    rows = rd.summary_rows(_result((-0.9, -0.8), 0.001, (-1.0, -0.9), (-1.0, -1.1)))
    by = {(r["D"], r["method"]): r for r in rows}
    assert by[(4, "svae")]["vs_linear"] == pytest.approx(0.3)
    assert by[(4, "svae")]["above_linear"] and not by[(2, "rnn_mf")]["above_linear"]
    assert by[(2, "linear_ssm")]["se"] == 0.0
