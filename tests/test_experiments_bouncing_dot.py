"""The bouncing-dot driver (svae_core.experiments.bouncing_dot): its data split, the three
optimisers' tasks (start, halting, gradients) on a tiny model, and its bookkeeping on
hand-made rows; the training at scale runs in the chapter (the smoke book in test_book.py)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svae_core.experiments import bouncing_dot as bd
from svae_core.models import conjugate_svae as cs
from svae_core.training import Trainer

TINY = dataclasses.replace(bd.PROFILES["smoke"], num_train=6, num_test=2, num_frames=8,
                           observed=4, latent_dim=2, hidden=(4,), steps=4, early_step=2,
                           batch_size=3, log_every=2)


def test_dataset_split_lengths_and_distinct_windows():
    bench = bd.dataset(TINY)
    assert bench.train.frames.shape == (6, 8, 20)
    # held-out windows: the observed frames plus the predicted bounce periods
    assert bench.test.frames.shape[:2] == (2, 4 + int(np.ceil(bench.period_frames)))
    first = bench.test.positions[:, :8]
    assert not any(np.allclose(first[i], bench.train.positions[j])
                   for i in range(2) for j in range(6))


def _trainer(optimizer, bench):
    y = jnp.asarray(bench.train.frames)
    S, T, P = y.shape
    task = bd.conjugate_task(TINY, S, T, P, optimizer)
    return Trainer(None, {"y": y, "observed": jnp.ones((S, T), bool)}, bd.train_config(TINY),
                   task=task)


@pytest.fixture(scope="module")
def bench():
    return bd.dataset(TINY)


@pytest.mark.parametrize("optimizer", bd.OPTIMIZERS)
def test_every_optimizer_starts_at_the_prior(optimizer, bench):
    trainer = _trainer(optimizer, bench)
    states = trainer.init_runs([0], [{"networks": 1e-3, "globals": 0.1}])
    params = jax.tree.map(lambda x: x[0], states.params)
    glob = bd.natural_params(params, optimizer)["params"]["globals"]
    prior = cs.prior_globals(TINY.latent_dim)
    for a, b in zip(jax.tree.leaves(glob), jax.tree.leaves(prior), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_plain_gradient_step_too_large_halts_and_keeps_the_last_valid_globals(bench):
    trainer = _trainer("sgd", bench)
    states = trainer.init_runs([0, 0], [{"networks": 1e-3, "globals": 1e-3},
                                        {"networks": 1e-3, "globals": 1e9}])
    result = trainer.fit(states, progress=False)
    halted = np.asarray(result.states.opt_state.halted_at)
    assert halted[0] == -1 and halted[1] == 0
    glob = result.states.params["params"]["globals"]
    prior = cs.prior_globals(TINY.latent_dim)
    moved = []
    for a, b in zip(jax.tree.leaves(glob), jax.tree.leaves(prior), strict=True):
        np.testing.assert_allclose(a[1], b, rtol=1e-6)  # halted at update 0: never moved
        moved.append(np.max(np.abs(np.asarray(a[0]) - np.asarray(b))))
    assert max(moved) > 1e-6  # the small steps did move q(θ)
    assert bool(bd.globals_in_domain(jax.tree.map(lambda x: x[0], glob)))


def hrow(optimizer, seed, step, final, left=False, r2=0.99, err=0.05):
    return {"optimizer": optimizer, "seed": seed, "step_size": step, "final_elbo": final,
            "left_domain": left, "halted_at_step": 0 if left else None, "heldout_elbo": -1.0,
            "r2_position": r2, "prediction_error": err}


def history(*curves):
    curves = np.asarray(curves, float).T
    return {"step": 10 * np.arange(1, curves.shape[0] + 1), "elbo": curves}


def test_summary_keeps_the_best_natgrad_run_and_claims_follow_the_numbers():
    # the rows' final ELBOs are their histories' (smoothed over 5 chunks)
    histories = {"natgrad": history([-2] + [-1] * 9, [-2, -2] + [-1.5] * 8),
                 "sgd": history([-2] * 4 + [-1.8] * 6, [-2.0] * 10),
                 "adam": history([-2] * 4 + [-1.2] * 6)}
    rows = [hrow("natgrad", 0, 0.1, -1.0, r2=0.97, err=0.08),
            hrow("natgrad", 0, 1.0, -1.5, r2=0.5, err=0.5),
            hrow("sgd", 0, 1e3, -1.8), hrow("sgd", 0, 1e5, -2.0, left=True),
            hrow("adam", 0, 0.1, -1.2)]
    s = bd.summarize(rows, histories)
    assert s["kept"]["step_size"] == 0.1
    assert (s["r2_position"], s["prediction_error"]) == (0.97, 0.08)
    assert s["best_alternative"]["optimizer"] == "adam" and s["threshold"] == -1.2
    by = {(o["optimizer"], o["step_size"]): o for o in s["optimizers"]}
    assert by[("sgd", 1e5)]["steps_to_threshold"] is None  # left the domain: not scored
    assert by[("natgrad", 0.1)]["steps_to_threshold"] == 50
    assert by[("adam", 0.1)]["steps_to_threshold"] == 90
    assert by[("sgd", 1e3)]["steps_to_threshold"] is None
    c = bd.claims(s)
    assert len(c) == 5 and all(x["reproduced"] for x in c), c
    worse = bd.claims(bd.summarize(
        [hrow("natgrad", 0, 0.1, -1.0, r2=0.9, err=0.3), *rows[1:]], histories))
    assert [x["reproduced"] for x in worse[:2]] == [False, False]
