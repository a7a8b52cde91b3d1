"""svae_core.experiments: the drivers behind the LDS-grid and timing chapters."""

from __future__ import annotations

import dataclasses
import json

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
                         ("learning_rates", (1e-3,)), ("data_seed", 1)]:
        assert dataclasses.replace(TINY, **{field: value}).key("D3_N5_q0.1_r0.1", "svae") != base


@pytest.mark.slow
def test_run_cell_trains_audits_and_is_reused_from_cache(tmp_path, monkeypatch):
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


def test_gap_table_orders_settings_and_flags_a_losing_svae():
    cells = [_cell("D3_N5_q0.01_r10", "svae", -1.1), _cell("D3_N5_q0.01_r10", "rnn_mf", -1.5),
             _cell("D3_N5_q0.1_r0.1", "svae", -1.6), _cell("D3_N5_q0.1_r0.1", "rnn_mf", -1.2)]
    lines = lds_grid.gap_table(cells).splitlines()
    assert lines[2].startswith("| D3_N5_q0.1_r0.1") and lines[3].startswith("| D3_N5_q0.01_r10")
    assert "40.0%" in lines[2] and "80.0%" in lines[2] and lines[2].endswith("**no** |")
    assert "90.0%" in lines[3] and lines[3].endswith("yes |")
    # within two standard errors counts as a tie, not a loss
    tie = [_cell("D3_N5_q0.1_r0.1", "svae", -1.201, se=0.001),
           _cell("D3_N5_q0.1_r0.1", "rnn_mf", -1.2, se=0.001)]
    assert lds_grid.svae_is_best({c["model"]: c for c in tie}) is True


def test_paper_table1_puts_ours_beside_the_papers():
    cells = [_cell("D32_N64_q0.1_r1", "svae", -2.1, true=-1.9),
             _cell("D32_N64_q0.1_r1", "rnn_mf", -3.0, true=-1.9)]
    text = lds_grid.paper_table1(cells)
    ours = next(line for line in text.splitlines() if "| ours |" in line)
    assert "-2.100" in ours and "-3.000" in ours and ours.endswith("| 0.200 |")
    paper = [line for line in text.splitlines() if "| paper |" in line]
    assert len(paper) == 2 and paper[0].endswith("| 0.694 |") and paper[1].endswith("| 1.380 |")


def test_masking_table_reports_the_change():
    text = lds_grid.masking_table([_cell("D3_N5_q0.1_r0.1", "svae", -1.2)],
                                  [_cell("D3_N5_q0.1_r0.1", "svae", -1.3)])
    assert "| -0.1000 |" in text and "80.0%" in text and "70.0%" in text


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
def test_ours_and_dynamax_time_the_same_answer():
    """The timed functions compute the same smoother (so the timings compare like with like)."""
    import jax

    prior, pots, y, R = timing.smoother_problem(12, 3, 2)
    ours, _ = timing.smoother_functions("ours sequential")
    theirs, _ = timing.smoother_functions("dynamax sequential")
    m1, c1, _ = jax.vmap(ours, in_axes=(None, 0))(prior, pots)
    m2, c2, _ = jax.vmap(theirs, in_axes=(None, 0, 0))(prior, y, R)
    np.testing.assert_allclose(m1, m2, atol=1e-4)
    np.testing.assert_allclose(c1, c2, atol=1e-4)
    row = timing.time_smoother("ours sequential", 12, batch=2, repeats=3)
    assert row["fwd_ms"] > 0 and row["vg_ms"] > 0 and row["fwd_compile_s"] > 0


@pytest.mark.slow
def test_time_train_step_reports_each_timed_call():
    row = timing.time_train_step("svae", 8, smoother="sequential", batch_size=2, repeats=3)
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


def test_pendulum_masking_table_pairs_runs_and_cites_the_paper():
    from svae_core.experiments import pendulum

    row = lambda m, elbo, pll: {"model": m, "latent_dim": 5, "test_elbo": elbo,
                                "predictive_ll": pll}
    text = pendulum.masking_table([row("svae", -0.31, -0.15), row("rnn_mf", -0.3, -0.2)],
                                  [row("svae", -0.28, -0.19)])
    lines = text.splitlines()
    assert len(lines) == 3  # header, rule, and only the model run both ways
    assert "| 5 | SVAE | -0.3100 | -0.2800 | -0.1500 | -0.1900 |" in lines[2]
    assert "-0.3015 / -0.2763, -0.1558 / -0.1910" in lines[2]
    cfg = pendulum.PendulumConfig()
    assert cfg.key("svae", 3) != dataclasses.replace(cfg, mask_fraction=0.0).key("svae", 3)


def test_pendulum_report_markdown_names_the_run_and_adds_the_ablation_when_present():
    from svae_core.experiments import pendulum

    cfg = dataclasses.asdict(pendulum.PendulumConfig(steps=123, num_test=7))
    run = lambda m, pll: {"model": m, "latent_dim": 3, "test_elbo": 0.8, "test_elbo_se": 0.01,
                          "r2_angle": 0.95, "r2_velocity": 0.5, "predictive_ll": pll,
                          "predictive_ll_se": 0.001, "device": "CPU: test"}
    report = {"config": cfg, "masked": [run("svae", 0.56), run("rnn_ar_l", 0.4)],
              "unmasked": []}
    text = pendulum.report_markdown(report, "pendulum.json")
    assert text.startswith("**`pendulum.json`**: 123 steps") and "CPU: test" in text
    # written before R² θ existed: "—"; with it, its own column
    assert "| 3 | SVAE | 0.8000 ± 0.01 | 0.950 | — | 0.500 | 0.5600 ± 0.001 |" in text
    report["masked"][0] = {**report["masked"][0], "r2_theta": 0.987}
    assert "| 3 | SVAE | 0.8000 ± 0.01 | 0.950 | 0.987 | 0.500 | 0.5600 ± 0.001 |" in \
        pendulum.report_markdown(report)
    assert "pred. LL no mask" not in text
    report["unmasked"] = [run("svae", 0.17)]
    ablation = pendulum.report_markdown(report).split("pred. LL no mask")[1]
    assert "| 3 | SVAE | 0.8000 | 0.8000 | 0.5600 | 0.1700 |" in ablation
    assert "decay" not in text
    report["config"] = {**cfg, "lr_decay_start": 100, "lr_decay_steps": 23}
    assert "123 steps, lr 0.003 (cosine decay to 0.03× over steps 100–123)" in \
        pendulum.report_markdown(report)
    assert "friction" not in text
    report["config"] = {**cfg, "friction": 0.1}
    assert "7 test sequences, friction 0.1 s⁻¹, 200 forecast" in pendulum.report_markdown(report)
    assert "initialised" not in text
    report["config"] = {**cfg, "dynamics_init": "rotation"}
    assert "123 steps, lr 0.003, A initialised as rotation, 100 training" in \
        pendulum.report_markdown(report)
    assert "masked block" not in text
    report["config"] = {**cfg, "mask_fraction": 0.6}
    assert "123 steps, lr 0.003, longest masked block 0.6 of a sequence, 100 training" in \
        pendulum.report_markdown(report)


def test_pendulum_joint_decoding_table_counts_seeds_across_reports():
    from svae_core.experiments import pendulum

    seed = lambda i, angle, vel: {"seed": i, "r2_angle": angle, "r2_velocity": vel}
    svae = {"model": "svae", "latent_dim": 3, "r2_angle": 0.97, "r2_velocity": 0.1,
            "per_seed": [seed(0, 0.97, 0.1), seed(1, 0.8, 0.95)]}
    reports = {
        "a.json": {"masked": [svae, {"model": "svae", "latent_dim": 5, "r2_angle": 0.99,
                                     "r2_velocity": 0.99}], "unmasked": []},
        # an old report: one run, no per_seed rows; it counts as one seed
        "b.json": {"masked": [{"model": "svae", "latent_dim": 3, "r2_angle": 0.91,
                               "r2_velocity": 0.92},
                              {"model": "rnn_ar_l", "latent_dim": 3, "r2_angle": 0.95,
                               "r2_velocity": 0.6}],
                   "unmasked": [{"model": "svae", "latent_dim": 3, "r2_angle": 0.99,
                                 "r2_velocity": 0.99}]},
    }
    lines = pendulum.joint_decoding_table(reports).splitlines()
    assert "≥ 0.9" in lines[0] and len(lines) == 4  # the D = 5 and unmasked runs are left out
    assert lines[2] == "| SVAE | 3 | 1 | 0.910 / 0.920 (`b.json`) |"
    assert lines[3] == "| RNN-AR-L | 1 | 0 | 0.950 / 0.600 (`b.json`) |"
    assert "| SVAE | 3 | 0 |" in pendulum.joint_decoding_table(reports, threshold=0.95)
    only_a = pendulum.joint_decoding_table({"a.json": reports["a.json"]}).splitlines()
    assert only_a[2:] == ["| SVAE | 2 | 0 | 0.800 / 0.950 (`a.json`, seed 1) |"]
    assert pendulum.joint_decoding_table(reports, latent_dim=2) == ""


def test_pendulum_amplitude_markdown_has_one_row_per_data_set_with_its_thirds():
    from svae_core.experiments import pendulum

    cfg = dataclasses.asdict(pendulum.PendulumConfig(steps=77))
    third = lambda lo, hi, r2: {"amplitude_deg": [lo, hi], "r2_velocity": r2}
    row = lambda a, vel: {"max_angle_deg": a, "r2_angle": 0.5, "r2_sin": 0.9, "r2_cos": 0.1,
                          "r2_velocity": vel,
                          "velocity_r2_by_amplitude_third": [third(10, 20, 0.91),
                                                             third(21, 30, 0.92),
                                                             third(31, 44.6, 0.93)]}
    text = pendulum.amplitude_markdown({"config": cfg, "device": "CPU: test",
                                        "rows": [row(45.0, 0.99), row(162.0, 0.3)]})
    lines = text.splitlines()
    assert lines[0].startswith("SVAE, D = 3, 77 steps") and lines[0].endswith("CPU: test")
    assert len(lines) == 6  # caption, blank, header, rule, two rows
    assert lines[4] == ("| 45° | 0.500 | 0.900 | 0.100 | — | 0.990 | 10–20°: 0.910; "
                        "21–30°: 0.920; 31–45°: 0.930 |")
    assert lines[5].startswith("| 162° |") and "| 0.300 |" in lines[5]
    damped = {**row(162.0, 0.8), "friction": 0.1, "r2_theta": 0.95}
    text = pendulum.amplitude_markdown({"config": cfg, "device": "CPU: test", "rows": [damped]})
    assert text.splitlines()[4].startswith("| 162°, friction 0.1 s⁻¹ | 0.500 | 0.900 | 0.100 | "
                                           "0.950 | 0.800 |")


def test_pendulum_seeds_table_applies_both_selection_rules():
    from svae_core.experiments import pendulum

    seed = lambda s, train, test, vel: {"seed": s, "train_elbo": train, "test_elbo": test,
                                        "r2_angle": 0.9, "r2_velocity": vel}
    rows = [seed(0, 0.80, 0.81, 0.1), seed(1, 0.83, 0.70, 0.2), seed(2, 0.79, 0.84, 0.3),
            seed(3, 0.78, 0.83, 0.4), seed(4, 0.77, 0.82, 0.5), seed(5, 0.76, 0.85, 0.9)]
    multi = {"model": "svae", "latent_dim": 3, "seed": 1, "per_seed": rows}
    single = {"model": "rnn_mf", "latent_dim": 3, "seed": 0, "per_seed": rows[:1]}
    assert pendulum.seeds_table([single]) == ""
    lines = pendulum.seeds_table([multi, single]).splitlines()
    assert len(lines) == 3  # header, rule, only the multi-seed run
    # kept: seed 1 (best training ELBO); top 5 by test ELBO leave out seed 1 (0.70):
    # velocity mean of seeds 5, 2, 3, 4, 0 = (0.9 + 0.3 + 0.4 + 0.5 + 0.1) / 5 = 0.44
    assert lines[2].startswith("| 3 | SVAE | 6 | seed 1: 0.200 | — | 0.900 / 0.440 | seed 5: ")
    assert lines[2].endswith("seed 1: 0.7000, 0.900, 0.200 |")
    # with R² θ recorded, it follows the angle's: (0.5 + 0.2 + 0.3 + 0.4 + 0.0) / 5 = 0.28
    with_theta = [{**r, "r2_theta": r["seed"] / 10} for r in rows]
    line = pendulum.seeds_table([{**multi, "per_seed": with_theta}]).splitlines()[2]
    assert "| 0.900 (θ 0.280) / 0.440 |" in line and line.endswith("0.900 (θ 0.100), 0.200 |")
    # with training predictive LLs recorded: the seed they pick (seed 3) gets its own column,
    # and the rule the report kept by names the kept column
    with_pll = [{**r, "train_predictive_ll": 0.5 - abs(r["seed"] - 3) / 10} for r in rows]
    text = pendulum.seeds_table([{**multi, "seed": 3, "per_seed": with_pll}],
                                rule="train_predictive_ll")
    assert "| kept (best train pred. LL): R² velocity |" in text.splitlines()[0]
    line = text.splitlines()[2]
    assert line.startswith("| 3 | SVAE | 6 | seed 3: 0.400 | seed 3: 0.900 / 0.400 | 0.900 /")
    assert line.endswith("seed 1: 0.7000, 0.900, 0.200, 0.3000 |")


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
    from svae_core.experiments import pendulum

    def report(seeds, plls, select="train_predictive_ll", **config):
        rows = [{"seed": s, "train_elbo": 0.9 - p, "train_predictive_ll": p}
                for s, p in zip(seeds, plls, strict=True)]
        kept = max(rows, key=lambda r: r[select])["seed"]
        cell = {"model": "svae", "latent_dim": 3, "seed": kept, "per_seed": rows,
                "r2_velocity": kept / 10}
        return {"config": {"seeds": seeds, "steps": 30, "select": select, **config},
                "masked": [cell], "unmasked": [], "paper_table2": {}}

    a, b = report([0, 1], [0.50, 0.55]), report([5, 6], [0.58, 0.52])
    merged = pendulum.merge_reports([a, b])
    (cell,) = merged["masked"]
    assert merged["config"]["seeds"] == [0, 1, 5, 6] and merged["config"]["steps"] == 30
    assert cell["seed"] == 5 and cell["r2_velocity"] == 0.5  # the kept cell is seed 5's run
    assert [r["seed"] for r in cell["per_seed"]] == [0, 1, 5, 6]
    # by training ELBO (0.9 - pll) seed 0 of the first report wins instead
    a, b = report([0, 1], [0.50, 0.55], "train_elbo"), report([5, 6], [0.58, 0.52], "train_elbo")
    assert pendulum.merge_reports([a, b])["masked"][0]["seed"] == 0
    with pytest.raises(ValueError, match=r"config fields \['steps'\]"):
        pendulum.merge_reports([a, {**b, "config": {**b["config"], "steps": 40}}])
    with pytest.raises(ValueError, match="seeds repeat"):
        pendulum.merge_reports([a, a])
    with pytest.raises(ValueError, match="same masked cells"):
        pendulum.merge_reports([a, {**b, "masked": []}])
    with pytest.raises(ValueError, match="at least two"):
        pendulum.merge_reports([a])
