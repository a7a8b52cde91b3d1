"""The command line: a happy path on each data source and every bad-input path."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from svae_core.cli import main

TINY = ["--steps", "20", "--log-every", "10", "--warmup-steps", "5", "--eval-samples", "2",
        "--eval-repeats", "2", "--no-progress"]
KEYS = {"config", "train_elbo", "test_elbo", "test_elbo_se", "true_mll", "null_ll",
        "gap_fraction", "seconds_per_step", "version"}


def test_train_on_generated_lds(tmp_path):
    out = tmp_path / "r.json"
    argv = ["train", "--model", "svae", "--data", "lds", "--latent-dim", "2", "--obs-dim", "3",
            "--num-train", "10", "--num-test", "4", "--num-timesteps", "30", "--out", str(out),
            "--lr-decay-start", "10", "--lr-decay-steps", "10", "--smoother", "sequential"]
    assert main(argv + TINY) == 0  # the npz test below runs the default (parallel) smoother
    res = json.loads(out.read_text())
    assert KEYS <= set(res)
    assert res["config"]["model"] == "svae"
    assert res["config"]["model_config"]["smoother"] == "sequential"
    decay = {k: res["config"]["train_config"][k] for k in ("lr_decay_start", "lr_decay_steps")}
    assert decay == {"lr_decay_start": 10, "lr_decay_steps": 10}
    sizes = {k: res["config"][k] for k in ("num_train", "num_test", "num_timesteps")}
    assert sizes == {"num_train": 10, "num_test": 4, "num_timesteps": 30}
    for k in ("train_elbo", "test_elbo", "test_elbo_se", "true_mll", "null_ll", "gap_fraction"):
        assert np.isfinite(res[k]), k
    # An ELBO is a lower bound on the true log-likelihood.
    assert res["test_elbo"] <= res["true_mll"] + 4 * res["test_elbo_se"]
    assert res["null_ll"] < res["true_mll"]


def test_train_on_user_npz_with_mask(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.normal(size=(8, 25, 3)).astype(np.float32)
    mask = np.ones((8, 25), bool)
    mask[:, 10:15] = False
    y[~mask] = 1e6  # never observed: must not matter
    data = tmp_path / "d.npz"
    np.savez(data, y=y, y_test=rng.normal(size=(3, 25, 3)), mask=mask)
    out = tmp_path / "r.json"
    argv = ["train", "--model", "svae", "--data", str(data), "--latent-dim", "2",
            "--batch-size", "4", "--out", str(out)]
    assert main(argv + TINY) == 0
    res = json.loads(out.read_text())
    assert np.isfinite(res["test_elbo"]) and np.isfinite(res["train_elbo"])
    assert res["true_mll"] is None and res["null_ll"] is None and res["gap_fraction"] is None
    assert (res["config"]["num_train"], res["config"]["num_test"]) == (8, 3)
    assert res["train_elbo"] > -100, "unobserved steps leaked into the training ELBO"


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
        (lambda p: ["--model", "svae", "--data", "lds", "--mask-fraction", "2"], "mask_fraction"),
        (lambda p: ["--model", "svae", "--data", "lds", "--lr-final-fraction", "-1"],
         "lr_final_fraction"),
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


def test_module_entry_point_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "svae_core", "train", "--model", "svae", "--data",
         str(tmp_path / "nope.npz"), "--out", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: data file not found")
