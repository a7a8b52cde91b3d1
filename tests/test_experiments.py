"""svae_core.experiments: the drivers behind the LDS-grid and timing chapters."""

from __future__ import annotations

import dataclasses
import json

# dynamax (the timing test's reference) sets jax_default_matmul_precision when imported, and
# that setting keys every jit cache: imported here, before any test compiles, it does not void
# the programs compiled so far.
import dynamax  # noqa: F401
import numpy as np
import pytest

from svae_core.datasets import LDSSetting, make_lds_benchmark
from svae_core.evaluation import gap_fraction
from svae_core.experiments import best_run, lds_grid, runs, timing

TINY = lds_grid.GridConfig(steps=20, num_train=10, num_test=4, num_timesteps=20,
                           eval_samples=2, eval_repeats=2, log_every=10)


def _cell(setting, model, elbo, se=0.001, true=-1.0, null=-2.0):
    return {"setting": setting, "model": model, "test_elbo": elbo, "test_elbo_se": se,
            "true_mll": true, "null_ll": null, "gap_fraction": gap_fraction(elbo, null, true)}


def test_best_run_selects_on_training_elbo_not_test():
    records = [{"train_elbo": -1.0, "test_elbo": -5.0}, {"train_elbo": -2.0, "test_elbo": -0.5}]
    assert best_run(records) is records[0]
    with pytest.raises(ValueError):
        best_run([])


def test_grid_key_changes_with_every_config_field():
    base = TINY.key("D3_N5_q0.1_r0.1", "svae")
    assert TINY.key("D3_N5_q0.1_r0.1", "svae") == base
    assert TINY.key("D3_N5_q0.1_r0.1", "rnn_mf") != base
    for field, value in [("steps", 21), ("mask_fraction", 0.4), ("seeds", (1,)),
                         ("learning_rates", (1e-3,)), ("data_seed", 1),
                         ("dynamics_init", "rotation")]:
        assert dataclasses.replace(TINY, **{field: value}).key("D3_N5_q0.1_r0.1", "svae") != base


def test_cell_configs_carry_the_grid_settings_to_the_model_and_trainer():
    cfg = dataclasses.replace(TINY, dynamics_init="rotation", mask_fraction=0.3,
                              baseline_mask_after=7, num_train=5)
    model_config, train_config = lds_grid.cell_configs("D5_N10_q0.1_r1", "rnn_mf", cfg)
    assert (model_config.latent_dim, model_config.obs_dim) == (5, 10)
    assert model_config.dynamics_init == "rotation" and model_config.rnn_hidden == 20
    assert (train_config.steps, train_config.batch_size) == (20, 5)
    assert (train_config.mask_fraction, train_config.mask_after) == (0.3, 7)
    _, svae_train = lds_grid.cell_configs("D5_N10_q0.1_r1", "svae", cfg)
    assert svae_train.mask_after == 0  # the SVAE is masked from the start


@pytest.mark.slow
def test_run_cell_trains_audits_and_is_reused_from_cache(tmp_path, monkeypatch):
    """The cell's SVAE smooths sequentially here: training, audit and cache do not depend on
    the smoother, and the sequential one compiles faster on CPU (the two agree to rounding:
    tests/test_inference_lds.py; tests/test_cli.py trains with the parallel one)."""
    grid_configs = lds_grid.cell_configs

    def sequential(*args):
        model_config, train_config = grid_configs(*args)
        return dataclasses.replace(model_config, smoother="sequential"), train_config

    monkeypatch.setattr(lds_grid, "cell_configs", sequential)
    cfg = dataclasses.replace(TINY, seeds=(0, 1))
    cell = lds_grid.run_cell("D3_N5_q0.1_r0.1", "svae", cfg, cache_dir=tmp_path)
    assert len(cell["runs"]) == 2 and cell["seed"] in (0, 1)
    best = max(cell["runs"], key=lambda r: r["train_elbo"])
    assert cell["test_elbo"] == best["test_elbo"]
    # the reported references are the exact ones for this data set
    bench = make_lds_benchmark("D3_N5_q0.1_r0.1", 0, num_train=10, num_test=4, num_timesteps=20)
    true_ll, null_ll = runs.reference_log_likelihoods(bench.ssm, np.asarray(bench.y_test))
    assert cell["true_mll"] == pytest.approx(true_ll) and cell["null_ll"] == pytest.approx(null_ll)
    assert cell["test_elbo"] <= cell["true_mll"] + 4 * cell["test_elbo_se"]
    assert cell["gap_fraction"] == pytest.approx(
        gap_fraction(cell["test_elbo"], cell["null_ll"], cell["true_mll"]))
    # a second request reads the JSON and trains nothing
    monkeypatch.setattr(lds_grid, "train_and_evaluate",
                        lambda *a, **k: pytest.fail("trained again despite the cache"))
    again = lds_grid.run_cell("D3_N5_q0.1_r0.1", "svae", cfg, cache_dir=tmp_path)
    assert again == json.loads(json.dumps(cell))
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_settings_are_ordered_as_the_paper_and_a_losing_svae_is_flagged():
    cells = [_cell("D3_N5_q0.01_r10", "svae", -1.1), _cell("D3_N5_q0.01_r10", "rnn_mf", -1.5),
             _cell("D3_N5_q0.1_r0.1", "svae", -1.6), _cell("D3_N5_q0.1_r0.1", "rnn_mf", -1.2)]
    rows = lds_grid._by_setting(cells)
    assert list(rows) == ["D3_N5_q0.1_r0.1", "D3_N5_q0.01_r10"]
    assert lds_grid.svae_is_best(rows["D3_N5_q0.1_r0.1"]) is False
    assert lds_grid.svae_is_best(rows["D3_N5_q0.01_r10"]) is True
    # within two standard errors counts as a tie, not a loss
    tie = [_cell("D3_N5_q0.1_r0.1", "svae", -1.201, se=0.001),
           _cell("D3_N5_q0.1_r0.1", "rnn_mf", -1.2, se=0.001)]
    assert lds_grid.svae_is_best({c["model"]: c for c in tie}) is True
    assert lds_grid.svae_is_best({"rnn_mf": tie[1]}) is None


def test_lds_grid_claims_follow_the_cells():
    def cell(setting, model, elbo, steps=3000):
        return {**_cell(setting, model, elbo, true=-1.0, null=-2.0), "config": {"steps": steps}}

    grid = [cell("D3_N5_q0.1_r0.1", "svae", -1.05), cell("D3_N5_q0.1_r0.1", "rnn_mf", -1.2),
            cell("D5_N10_q0.1_r0.1", "svae", -1.3), cell("D5_N10_q0.1_r0.1", "rnn_mf", -1.1)]
    (row,) = lds_grid.claims({"lds_grid": grid}, [], [])
    assert row["reproduced"] is False and "1 of 2 settings" in row["ours"]
    (row,) = lds_grid.claims({"lds_grid": grid[:2]}, [], [])
    assert row["reproduced"] is True
    # appendix A: within the paper's distance of the true MLL (0.694 at D = 32), or not
    near = [cell("D32_N64_q0.1_r1", "svae", -1.5), cell("D32_N64_q0.1_r1", "rnn_mf", -3.0)]
    assert lds_grid.claims({"lds_grid_appendix": near}, [], [])[0]["reproduced"] is True
    far = [cell("D32_N64_q0.1_r1", "svae", -1.8), near[1]]
    assert lds_grid.claims({"lds_grid_appendix": far}, [], [])[0]["reproduced"] is False
    # ... where a resumed (decayed) run of the same setting replaces the SVAE's number
    claim = lds_grid.claims({"lds_grid_appendix": far,
                             "lds_grid_appendix_decay": [cell("D32_N64_q0.1_r1", "svae", -1.5,
                                                              steps=4000)]}, [], [])[0]
    assert claim["reproduced"] is True and "after 4000 steps" in claim["ours"]
    # appendix B: masking must lower every pair's ELBO
    unmasked, masked = [cell("D3_N5_q0.1_r0.1", "svae", -1.1)], [cell("D3_N5_q0.1_r0.1",
                                                                       "svae", -1.2)]
    assert lds_grid.claims({}, unmasked, masked)[0]["reproduced"] is True
    assert lds_grid.claims({}, masked, unmasked)[0]["reproduced"] is False


def test_timing_claims_compare_the_rows_at_one_length():
    row = lambda label, ms, T=100: {"label": label, "num_timesteps": T, "median_s": ms / 1e3}
    steps = [row("SVAE (sequential)", 2.0), row("SVAE (parallel)", 3.0), row("RNN-MF", 5.0),
             row("RNN-AR-NL", 9.0), row("CNN-AR-L", 2.5), row("RNN-MF", 1.0, T=10)]
    faster, slowest, cnn = timing.claims(steps, 100)
    assert faster["reproduced"] and "ratio 2.5×" in faster["ours"]
    assert slowest["reproduced"] and not cnn["reproduced"]
    assert not timing.claims(steps[:2] + [row("RNN-MF", 1.5)], 100)[0]["reproduced"]


def test_load_cli_results_reads_cli_json(tmp_path):
    res = {"config": {"seed": 3, "train_config": {"steps": 7, "learning_rate": 0.01,
                                                  "mask_fraction": 0.0}},
           "true_mll": -1.0, "null_ll": -2.0, "test_elbo": -1.5, "test_elbo_se": 0.01,
           "train_elbo": -1.4, "gap_fraction": 0.5, "seconds_per_step": 0.1, "device": "cpu",
           "version": "0", "history": {"step": [5], "elbo": [-1.6]}}
    (tmp_path / "D3_N5_q0.1_r0.1__svae.json").write_text(json.dumps(res))
    (tmp_path / "summary.json").write_text("{}")  # not a cell
    (cell,) = lds_grid.load_cli_results(tmp_path)
    assert (cell["setting"], cell["model"], cell["seed"]) == ("D3_N5_q0.1_r0.1", "svae", 3)
    assert cell["config"]["steps"] == 7 and cell["history"]["elbo"] == [-1.6]


def test_smoother_problem_gives_dynamax_the_same_evidence():
    prior, pots, y, R = timing.smoother_problem(7, 3, 2)
    np.testing.assert_allclose(np.einsum("btij,btj->bti", pots.J, y), pots.h, atol=1e-4)
    np.testing.assert_allclose(np.einsum("btij,btjk->btik", pots.J, R),
                               np.broadcast_to(np.eye(3), R.shape), atol=1e-4)


@pytest.mark.slow
def test_ours_and_dynamax_time_the_same_answer(monkeypatch):
    """The timed functions compute the same smoother (so the timings compare like with like).

    time_smoother clears JAX's caches before each compile, so that a repeated compile is
    timed cold; it compiles each program once here, a first compile anyway, and clearing
    would make the tests after this one recompile every program they share."""
    import jax

    prior, pots, y, R = timing.smoother_problem(12, 3, 2)
    ours, _ = timing.smoother_functions("ours sequential")
    theirs, _ = timing.smoother_functions("dynamax sequential")
    # jitted whole: one compile each instead of one per eager op
    m1, c1, _ = jax.jit(jax.vmap(ours, in_axes=(None, 0)))(prior, pots)
    m2, c2, _ = jax.jit(jax.vmap(theirs, in_axes=(None, 0, 0)))(prior, y, R)
    np.testing.assert_allclose(m1, m2, atol=1e-4)
    np.testing.assert_allclose(c1, c2, atol=1e-4)
    monkeypatch.setattr(jax, "clear_caches", lambda: None)
    row = timing.time_smoother("ours sequential", 12, batch=2, repeats=3)
    assert row["fwd_ms"] > 0 and row["vg_ms"] > 0 and row["fwd_compile_s"] > 0


@pytest.mark.slow
def test_time_train_step_reports_each_timed_call():
    """Ten sequences of T = 20 (D = 3, N = 5) and the sequential smoother, as in the run_cell
    test above: the data generation and model initialisation compiled there serve here."""
    row = timing.time_train_step("svae", 20, smoother="sequential", batch_size=10, repeats=3)
    assert len(row["all_s"]) == 3 and all(t > 0 for t in row["all_s"])
    assert row["median_s"] == sorted(row["all_s"])[1]
    assert row["compile_s"] > 0


def test_setting_objects_and_names_are_interchangeable():
    assert lds_grid._setting("D3_N5_q0.1_r0.1") == LDSSetting(3, 5, 0.1, 0.1)


def test_pendulum_linear_readout_recovers_an_affine_map():
    from svae_core.experiments import pendulum

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 30, 3))
    W = rng.normal(size=(4, 2))
    y = np.concatenate([x, np.ones(x.shape[:-1] + (1,))], -1) @ W
    np.testing.assert_allclose(pendulum._fit_linear(x, y), W, atol=1e-10)
    np.testing.assert_allclose(pendulum._apply_linear(W, x), y, atol=1e-12)


def test_pendulum_cache_key_changes_with_masking():
    from svae_core.experiments import pendulum

    cfg = pendulum.PendulumConfig()
    assert cfg.key("svae", 3) != dataclasses.replace(cfg, mask_fraction=0.0).key("svae", 3)
    assert cfg.key("svae", 3) != cfg.key("svae", 2)


def test_pendulum_decodability_scores_theta_and_its_sin_cos_against_the_true_states(
        monkeypatch):
    """Wiring check with posterior means replaced by known functions of the true state: a
    latent (θ, ω, ·) decodes θ and ω exactly but cos θ (even in θ) hardly at all, while a latent
    (sin θ, cos θ, ω) decodes the (sin, cos) angle and ω exactly but θ only approximately."""
    from svae_core.datasets import make_pendulum_dataset
    from svae_core.experiments import pendulum

    bench = make_pendulum_dataset(seed=3, num_train=20, num_test=10, num_frames=40, size=8)
    y = {"train": np.zeros((20, 40, 64)), "test": np.zeros((10, 40, 64))}

    def decodability(features):
        means = lambda model, params, frames: features(
            bench.train if frames.shape[0] == 20 else bench.test)
        monkeypatch.setattr(pendulum, "posterior_means", means)
        return pendulum.linear_decodability(None, None, bench, y["train"], y["test"])[0]

    rng = np.random.default_rng(0)
    r2 = decodability(lambda d: np.stack([2 * d.angle - 1, d.velocity + 3,
                                          rng.normal(size=d.angle.shape)], -1))
    assert r2["r2_theta"] > 1 - 1e-9 and r2["r2_velocity"] > 1 - 1e-9
    assert r2["r2_cos"] < 0.5 and r2["r2_angle"] == pytest.approx(
        (r2["r2_sin"] + r2["r2_cos"]) / 2)
    r2 = decodability(lambda d: np.stack([np.sin(d.angle), np.cos(d.angle), d.velocity], -1))
    assert min(r2["r2_sin"], r2["r2_cos"], r2["r2_velocity"]) > 1 - 1e-9
    assert 0.5 < r2["r2_theta"] < 1 - 1e-3


def test_pendulum_selection_rules_keep_the_seed_their_training_quantity_ranks_first():
    from svae_core.experiments import pendulum
    from svae_core.experiments.runs import TrainedRuns

    records = [{"seed": s, "train_elbo": e} for s, e in [(0, 0.80), (1, 0.83), (2, 0.79)]]
    runs = TrainedRuns(None, {"w": np.arange(3.0)}, records)
    rows = [{"seed": s, "train_predictive_ll": p} for s, p in [(0, 0.4), (1, 0.2), (2, 0.6)]]
    params, best = pendulum._best(runs, rows, "train_elbo")
    assert best["seed"] == 1 and float(params["w"]) == 1.0
    params, best = pendulum._best(runs, rows, "train_predictive_ll")
    assert best["seed"] == 2 and float(params["w"]) == 2.0
    with pytest.raises(ValueError, match="select"):
        pendulum.PendulumConfig(select="test_elbo")


def test_pendulum_merge_reports_joins_seeds_and_keeps_the_best_by_the_rule():
    from svae_core.experiments import tables

    def report(seeds, plls, select="train_predictive_ll", **config):
        rows = [{"seed": s, "train_elbo": 0.9 - p, "train_predictive_ll": p}
                for s, p in zip(seeds, plls, strict=True)]
        kept = max(rows, key=lambda r: r[select])["seed"]
        cell = {"model": "svae", "latent_dim": 3, "seed": kept, "per_seed": rows,
                "r2_velocity": kept / 10}
        return {"config": {"seeds": seeds, "steps": 30, "select": select, **config},
                "masked": [cell], "unmasked": [], "paper_table2": {}}

    a, b = report([0, 1], [0.50, 0.55]), report([5, 6], [0.58, 0.52])
    merged = tables.merge_reports([a, b])
    (cell,) = merged["masked"]
    assert merged["config"]["seeds"] == [0, 1, 5, 6] and merged["config"]["steps"] == 30
    assert cell["seed"] == 5 and cell["r2_velocity"] == 0.5  # the kept cell is seed 5's run
    assert [r["seed"] for r in cell["per_seed"]] == [0, 1, 5, 6]
    # by training ELBO (0.9 - pll) seed 0 of the first report wins instead
    a, b = report([0, 1], [0.50, 0.55], "train_elbo"), report([5, 6], [0.58, 0.52], "train_elbo")
    assert tables.merge_reports([a, b])["masked"][0]["seed"] == 0
    with pytest.raises(ValueError, match=r"config fields \['steps'\]"):
        tables.merge_reports([a, {**b, "config": {**b["config"], "steps": 40}}])
    with pytest.raises(ValueError, match="seeds repeat"):
        tables.merge_reports([a, a])
    with pytest.raises(ValueError, match="same masked cells"):
        tables.merge_reports([a, {**b, "masked": []}])
    with pytest.raises(ValueError, match="at least two"):
        tables.merge_reports([a])


def _pendulum_cell(model, D, theta, velocity, pll, elbo=0.85, seeds=None):
    rows = seeds or [{"seed": 0, "test_elbo": elbo, "r2_theta": theta, "r2_velocity": velocity}]
    return {"model": model, "latent_dim": D, "seed": rows[0]["seed"], "test_elbo": elbo,
            "r2_theta": theta, "r2_velocity": velocity, "r2_angle": 0.9, "predictive_ll": pll,
            "per_seed": rows}


def test_pendulum_seed_summary_averages_the_top_five_by_test_elbo():
    from svae_core.experiments import pendulum

    rows = [{"seed": s, "test_elbo": e, "r2_theta": t, "r2_velocity": v}
            for s, e, t, v in [(0, 0.80, 0.9, 0.9), (1, 0.70, 0.0, 0.0), (2, 0.84, 0.5, 0.1),
                               (3, 0.83, 0.6, 0.2), (4, 0.82, 0.7, 0.3), (5, 0.81, 0.8, 0.4)]]
    s = pendulum.seed_summary(_pendulum_cell("svae", 3, 0.9, 0.9, 0.6, seeds=rows))
    assert s["seeds"] == 6 and s["seed"] == 0
    # seed 1 (lowest test ELBO) is left out: (0.9 + 0.5 + 0.6 + 0.7 + 0.8) / 5
    assert s["top_r2_theta"] == pytest.approx(0.7) and s["top_r2_velocity"] == pytest.approx(0.38)


def test_pendulum_claims_reproduce_only_when_the_numbers_say_so():
    from svae_core.experiments import pendulum

    def report(svae_velocity=0.95, base_pll=0.4, nomask_pll=0.2):
        masked = [_pendulum_cell("svae", D, 0.99, svae_velocity if D == 3 else 0.0, 0.6)
                  for D in (2, 3)]
        masked += [_pendulum_cell("rnn_ar_l", D, 0.8, 0.5 if D == 3 else 0.01, base_pll)
                   for D in (2, 3)]
        unmasked = [_pendulum_cell("svae", D, 0.9, 0.1, nomask_pll, elbo=0.87) for D in (2, 3)]
        return {"masked": masked, "unmasked": unmasked}

    ok = {c["claim"]: c["reproduced"] for c in pendulum.claims(report())}
    assert all(ok.values()) and len(ok) == 6
    bad = [c for c in pendulum.claims(report(svae_velocity=0.45)) if not c["reproduced"]]
    assert [c["claim"][:6] for c in bad] == ["D = 3:", "D = 3,"]
    bad = [c["claim"] for c in pendulum.claims(report(base_pll=0.7)) if not c["reproduced"]]
    assert bad == ["the SVAE's predictive log-likelihood is the highest at every D"]
    bad = [c["claim"] for c in pendulum.claims(report(nomask_pll=0.65)) if not c["reproduced"]]
    assert bad == ["masking raises the SVAE's predictive log-likelihood"]


def test_pendulum_combine_reports_joins_cells_under_one_configuration():
    from svae_core.experiments import tables

    cfg = {"steps": 30, "friction": 0.1, "seeds": [0]}
    a = {"config": {**cfg, "seeds": [0, 1]}, "masked": [_pendulum_cell("svae", 3, 1, 1, 1)],
         "unmasked": []}
    b = {"config": cfg, "masked": [_pendulum_cell("rnn_ar_l", 2, 1, 1, 1)],
         "unmasked": [_pendulum_cell("svae", 3, 1, 1, 1)]}
    combined = tables.combine_reports({"cmd a": a, "cmd b": b})
    assert [(c["model"], c["latent_dim"]) for c in combined["masked"]] == [("rnn_ar_l", 2),
                                                                         ("svae", 3)]
    assert combined["runs"] == [{"command": "cmd a", "seeds": [0, 1]},
                                {"command": "cmd b", "seeds": [0]}]
    assert "seeds" not in combined["config"] and combined["config"]["friction"] == 0.1
    with pytest.raises(ValueError, match=r"\['friction'\]"):
        tables.combine_reports({"a": a, "c": {**b, "config": {**cfg, "friction": 0.0}}})
    with pytest.raises(ValueError, match="repeats"):
        tables.combine_reports({"a": a, "a again": a})


def test_pendulum_saved_model_loads_with_its_config_and_parameters(tmp_path):
    from svae_core.experiments import pendulum

    cfg = pendulum.PendulumConfig(steps=7, seeds=(0, 3), size=8, friction=0.05)
    params = {"params": {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3)}}
    path = tmp_path / pendulum.params_name("rnn_ar_l", 4, masked=False)
    pendulum.save_trained(path, "rnn_ar_l", 4, cfg, params, seed=3, command="x")
    trained = pendulum.load_trained(path)
    assert trained.config == cfg and trained.meta["seed"] == 3
    assert trained.model.config.latent_dim == 4 and trained.model.config.frame_shape == (8, 8)
    np.testing.assert_array_equal(trained.params["params"]["w"], params["params"]["w"])
    assert path.name == "rnn_ar_l_D4_nomask.msgpack"
