"""The command line: a happy path on each data source and every bad-input path."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from svae_core.cli import build_parser, main, summary_line

TINY = ["--steps", "20", "--log-every", "10", "--warmup-steps", "5", "--eval-samples", "2",
        "--eval-repeats", "2", "--no-progress"]
# The happy path's LDS data; the cases refused after the data are generated use it too, so
# that its generation compiles once
LDS = ["--data", "lds", "--latent-dim", "2", "--obs-dim", "3", "--num-train", "10",
       "--num-test", "4", "--num-timesteps", "30"]
KEYS = {"config", "train_elbo", "test_elbo", "test_elbo_se", "true_mll", "null_ll",
        "gap_fraction", "seconds_per_step", "version"}


def test_train_on_generated_lds(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["train", "--model", "svae", *LDS, "--out", str(out),
            "--lr-decay-start", "10", "--lr-decay-steps", "10"]
    assert main(argv + TINY) == 0  # the masked npz runs below force the parallel smoother
    res = json.loads(out.read_text())
    assert KEYS <= set(res)
    assert res["config"]["model"] == "svae"
    # defaults: --smoother auto is sequential on CPU; a constant 3e-3 rate, no masking
    on_cpu = jax.default_backend() == "cpu"
    assert res["config"]["model_config"]["smoother"] == ("sequential" if on_cpu else "parallel")
    assert res["config"]["train_config"]["learning_rate"] == 3e-3
    assert res["config"]["train_config"]["mask_fraction"] == 0.0
    stdout = capsys.readouterr().out.strip().splitlines()
    assert stdout[-1].startswith("done: svae, 20 steps, held-out ELBO "), stdout
    assert "% of the null→true gap" in stdout[-1] and stdout[-1].endswith(f"results in {out}")
    decay = {k: res["config"]["train_config"][k] for k in ("lr_decay_start", "lr_decay_steps")}
    assert decay == {"lr_decay_start": 10, "lr_decay_steps": 10}
    sizes = {k: res["config"][k] for k in ("num_train", "num_test", "num_timesteps")}
    assert sizes == {"num_train": 10, "num_test": 4, "num_timesteps": 30}
    for k in ("train_elbo", "test_elbo", "test_elbo_se", "true_mll", "null_ll", "gap_fraction"):
        assert np.isfinite(res[k]), k
    # An ELBO is a lower bound on the true log-likelihood.
    assert res["test_elbo"] <= res["true_mll"] + 4 * res["test_elbo_se"]
    assert res["null_ll"] < res["true_mll"]


def test_train_with_natural_gradient_globals_on_a_user_npz_with_mask(tmp_path):
    """--globals natgrad: q(θ) by SVI; the JSON records it, the held-out ELBO is finite and
    the ELBO under the trained q(θ) improves on the prior's (the first logged chunk)."""
    rng = np.random.default_rng(1)
    # the generated-LDS test's sizes: the eager operations compiled there serve here
    y = rng.normal(size=(10, 30, 3)).astype(np.float32)
    mask = np.ones((10, 30), bool)
    mask[:, 5:8] = False
    data = tmp_path / "d.npz"
    np.savez(data, y=y, y_test=rng.normal(size=(4, 30, 3)), mask=mask)
    out = tmp_path / "r.json"
    argv = ["train", "--model", "svae", "--data", str(data), "--latent-dim", "2",
            "--batch-size", "3", "--globals", "natgrad", "--natgrad-step", "0.5",
            "--mask-fraction", "0.2", "--out", str(out)]
    assert main(argv + TINY) == 0
    res = json.loads(out.read_text())
    assert res["config"]["globals"] == "natgrad" and res["config"]["natgrad_step"] == 0.5
    assert np.isfinite(res["test_elbo"]) and np.isfinite(res["train_elbo"])
    assert res["history"]["elbo"][-1] > res["history"]["elbo"][0]
    # the defaults for a user's data: one hidden layer of 64 in the encoder and decoder
    mc = res["config"]["model_config"]
    assert mc["encoder_hidden"] == [64] and mc["decoder_hidden"] == [64]


@pytest.fixture(scope="module")
def masked_npz_runs(tmp_path_factory):
    """CLI results of one model trained on one user .npz whose training sequences have steps
    that were never observed (``mask`` False; NaN or 1e6 there), scored on held-out sequences
    padded after their end (``mask_test`` False): with NaN padding ("nan"), with 1e6 padding
    ("1e6"), and on the same zero-padded file without ``mask_test`` ("unmasked"). The runs
    share one model, one training set and so their compiled programs."""
    tmp_path = tmp_path_factory.mktemp("masked_npz")
    rng = np.random.default_rng(2)
    y = rng.normal(size=(6, 12, 2)).astype(np.float32)
    mask = np.ones((6, 12), bool)
    mask[:, 4:7] = False
    y[~mask] = 1e6  # never observed: must not matter, NaN included
    y[:3, 4:7] = np.nan
    y_test = rng.normal(size=(3, 12, 2)).astype(np.float32)
    mask_test = np.ones((3, 12), bool)
    mask_test[0, 7:] = mask_test[2, 3:] = False  # shorter held-out sequences, padded
    files = {name: dict(y=y, mask=mask, y_test=np.where(mask_test[..., None], y_test, fill),
                        mask_test=mask_test)
             for name, fill in (("nan", np.nan), ("1e6", 1e6))}
    files["unmasked"] = dict(y=y, mask=mask, y_test=np.where(mask_test[..., None], y_test, 0.0))
    results = {}
    for name, arrays in files.items():
        data, out = tmp_path / f"{name}.npz", tmp_path / f"{name}.json"
        np.savez(data, **arrays)
        argv = ["train", "--model", "svae", "--data", str(data), "--latent-dim", "2",
                "--batch-size", "3", "--encoder-hidden", "none", "--decoder-hidden", "",
                "--out", str(out), "--smoother", "parallel"]
        assert main(argv + TINY) == 0, name
        results[name] = json.loads(out.read_text())
    return results


def test_train_on_user_npz_with_mask(masked_npz_runs):
    res = masked_npz_runs["nan"]
    assert res["config"]["model_config"]["smoother"] == "parallel"  # overrides auto
    assert np.isfinite(res["test_elbo"]) and np.isfinite(res["train_elbo"])
    assert res["true_mll"] is None and res["null_ll"] is None and res["gap_fraction"] is None
    assert (res["config"]["num_train"], res["config"]["num_test"]) == (6, 3)
    assert res["train_elbo"] > -100, "unobserved steps leaked into the training ELBO"


def test_test_mask_leaves_unobserved_held_out_steps_unscored(masked_npz_runs):
    """With mask_test, held-out steps marked False are neither seen nor scored: NaN or huge
    values there give the same held-out ELBO, unlike the same zero-padded file without
    mask_test, and `none` widths give linear nets."""
    elbos = [masked_npz_runs[name]["test_elbo"] for name in ("nan", "1e6")]
    # the same zero-padded file without mask_test scores the padding as observed zeros
    unmasked = masked_npz_runs["unmasked"]["test_elbo"]
    assert np.isfinite(elbos[0]) and elbos[0] > -20, elbos
    np.testing.assert_allclose(elbos, elbos[0], rtol=1e-6)
    assert abs(unmasked - elbos[0]) > 0.05, (unmasked, elbos[0])
    mc = masked_npz_runs["nan"]["config"]["model_config"]
    assert mc["encoder_hidden"] == [] and mc["decoder_hidden"] == []


def _bad_npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    "make_argv,message",
    [
        (lambda p: ["--model", "svae", "--data", str(p / "missing.npz")], "not found"),
        (lambda p: ["--model", "transformer", "--data", "lds"], "invalid choice"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((4, 5)))],
         r"shape \(sequences, T, N\)"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.full((2, 5, 3), np.nan))],
         "NaN"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, x=np.zeros((2, 5, 3)))],
         "no array 'y'"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((2, 5, 3)),
                                                          y_test=np.zeros((2, 6, 3)))],
         "y_test"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((2, 5, 3)),
                                                          mask=np.ones((2, 4), bool))], "mask"),
        (lambda p: ["--model", "svae", "--data", "lds", "--q", "-1"], "--q"),
        (lambda p: ["--model", "svae", *LDS, "--mask-fraction", "2"], "mask_fraction"),
        (lambda p: ["--model", "svae", *LDS, "--lr-final-fraction", "-1"],
         "lr_final_fraction"),
        # every sequence unobserved, or one of them: nothing to train on or to score
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((2, 5, 3)),
                                                          mask=np.zeros((2, 5), bool))],
         "no step of any sequence is observed"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((2, 5, 3)),
                                                          mask=np.arange(10).reshape(2, 5) > 4)],
         r"sequences \[0\] .*no observed step"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((2, 5, 3)),
                                                          mask=np.full((2, 5), 2))], "0/1"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.full((2, 5, 3), np.inf))],
         "Inf"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((2, 5, 3)),
                                                          y_test=np.zeros((2, 5, 4)))],
         "y_test"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((2, 5, 3)),
                                                          y_test=np.full((1, 5, 3), np.nan))],
         "y_test' contains NaN"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((2, 5, 3)),
                                                          mask_test=np.ones((2, 5), bool))],
         "'mask_test' needs 'y_test'"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((2, 5, 3)),
                                                          y_test=np.zeros((3, 5, 3)),
                                                          mask_test=np.ones((2, 5), bool))],
         "'mask_test' must have shape"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((2, 5, 3)),
                                                          y_test=np.zeros((2, 5, 3)),
                                                          mask_test=np.arange(10).reshape(2, 5)
                                                          > 4)],
         r"sequences \[0\] .*'mask_test' all False"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((2, 5, 3)),
                                                          y_test=np.full((2, 5, 3), np.nan),
                                                          mask_test=np.arange(10).reshape(2, 5)
                                                          > 0)],
         "'y_test' contains NaN or Inf at observed steps"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((0, 5, 3)))], "empty"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((2, 0, 3)))], "empty"),
        (lambda p: ["--model", "svae", "--data", _bad_npz(p, y=np.zeros((2, 5, 3), complex))],
         "real numbers"),
        (lambda p: ["--model", "svae", "--data", "lds", "--eval-repeats", "1"], "--eval-repeats"),
        (lambda p: ["--model", "svae", "--data", "lds", "--lr", "nan"], "--lr"),
        (lambda p: ["--model", "svae", "--data", "lds", "--decoder-hidden", "0"], "widths"),
        (lambda p: ["--model", "rnn_mf", "--data", "lds", "--globals", "natgrad"],
         "needs --model svae"),
        (lambda p: ["--model", "svae", "--data", "lds", "--globals", "natgrad",
                    "--natgrad-step", "1.5"], "--natgrad-step"),
    ],
)
def test_bad_input_one_error_line_exit_2(tmp_path, capsys, make_argv, message):
    out = tmp_path / "r.json"
    code = main(["train", *make_argv(tmp_path), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert pytest.importorskip("re").search(message, err[0]), err[0]
    assert not out.exists()


@pytest.mark.parametrize("name,message", [("nope.npz", "error: data file not found"),
                                           ("unobserved.npz", "error: ")])
def test_module_entry_point_exit_code(tmp_path, name, message):
    np.savez(tmp_path / "unobserved.npz", y=np.ones((3, 5, 2)), mask=np.zeros((3, 5), bool))
    proc = subprocess.run(
        [sys.executable, "-m", "svae_core", "train", "--model", "svae", "--data",
         str(tmp_path / name), "--out", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr


def test_diverged_training_one_error_line_exit_1(tmp_path, capsys, monkeypatch):
    import svae_core.experiments
    from svae_core.training import TrainingDivergedError

    def diverge(*args, **kwargs):
        raise TrainingDivergedError("non-finite elbo (nan) at step 7 in run seed 0, lr 0.003")

    monkeypatch.setattr(svae_core.experiments, "train_and_evaluate", diverge)
    out = tmp_path / "r.json"
    argv = ["train", "--model", "svae", *LDS, "--out", str(out), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: training diverged: non-finite"), err
    assert not out.exists()


def test_every_option_has_a_help_sentence():
    parser = build_parser()
    train = next(a for a in parser._actions if a.dest == "command").choices["train"]
    options = [a for a in train._actions if a.option_strings and a.dest != "help"]
    assert len(options) > 30
    for action in options:
        assert action.help and action.help.endswith("."), action.option_strings


def test_summary_line_falls_back_to_the_training_elbo():
    res = {"config": {"model": "rnn_mf", "train_config": {"steps": 50}}, "test_elbo": None,
           "test_elbo_se": None, "train_elbo": -1.23456, "train_elbo_se": 0.0123,
           "gap_fraction": None}
    assert summary_line(res, "out/r.json") == \
        "done: rnn_mf, 50 steps, train ELBO -1.235 ± 0.012 nats/step/dim, results in out/r.json"


def test_cli_defaults_are_the_trainers():
    """The CLI keeps its defaults as constants (its --help imports no JAX); they must be the
    library's own."""
    from svae_core import cli
    from svae_core.models import RECOMMENDED_HIDDEN
    from svae_core.training import TrainConfig

    assert (cli.DEFAULT_LR, cli.DEFAULT_MASK_FRACTION) == (TrainConfig.learning_rate,
                                                          TrainConfig.mask_fraction)
    assert cli.DEFAULT_HIDDEN == RECOMMENDED_HIDDEN


@pytest.mark.parametrize("model", ["svae", "rnn_ar_nl"])
def test_real_data_chapter_trains_what_the_bare_cli_command_trains(model):
    """The chapter's configurations are those of `train --model M --data F --latent-dim D`
    with no other flag (and --steps where a profile shortens the run)."""
    from svae_core import cli
    from svae_core.experiments.real_data import cli_default_configs

    for extra, steps in (([], 3000), (["--steps", "40"], 40)):
        args = build_parser().parse_args(["train", "--model", model, "--data", "mine.npz",
                                          "--latent-dim", "4", "--out", "r.json", *extra])
        assert cli.configs_from_args(args, 7, 6) == cli_default_configs(model, 4, 6, 7, steps)
