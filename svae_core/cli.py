"""Command line: train any model on the paper's LDS data or on your own sequences.

    python -m svae_core train --model svae --data lds --latent-dim 3 --obs-dim 5 \\
        --q 0.1 --r 0.1 --steps 3000 --seed 0 --out results.json
    python -m svae_core train --model rnn_mf --data my_sequences.npz --latent-dim 4 \\
        --steps 5000 --out results.json

A ``.npz`` file holds ``y`` (sequences, T, N), optionally ``y_test`` (held-out sequences,
same T and N), ``mask`` (sequences, T) bool, False at steps of ``y`` that were never observed,
and ``mask_test`` the same for ``y_test``; every sequence needs at least one observed step.
Sequences of different lengths: pad them to one T and mark the padding False.
Results are JSON; ELBOs are in nats per time step per observation dimension. The last line
on stdout is a one-line summary (held-out ELBO, or the training ELBO without ``y_test``, and
the JSON's path). Bad input prints one ``error:`` line and exits with status 2, writing
nothing; training that diverges prints one ``error:`` line and exits with status 1.

Defaults come from measurements. On the paper's LDS data (D=3, N=5, q=r=0.1, 3,000 steps)
a constant rate of 3e-3 without masking covered 91–92% of the null→true gap, against 71%
with 40% block masking at a rate of 1e-3. Masking (``--mask-fraction``) helps a model learn
dynamics from video, not the ELBO, so it is off unless asked for. On real sensor data
(``benchmarks/real_data_defaults.py``, the real-data chapter) linear networks make the SVAE a
linear-Gaussian SSM and it scores no better than one; one hidden layer of 64 units in the
encoder and decoder puts it well above at D = 2, 4, 8 on BasicMotions and at D = 2, 4 on
JapaneseVowels (not at D = 8 there, where it overfits), so that is the default
(``--encoder-hidden none --decoder-hidden none`` gives the paper's linear LDS networks).
``--smoother auto`` takes the sequential smoother on CPU and the parallel one on an
accelerator, the faster of the two on each.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 1
# TrainConfig's defaults (kept here so --help needs no JAX import; a test checks they agree)
DEFAULT_LR = 3e-3
DEFAULT_MASK_FRACTION = 0.0
DEFAULT_HIDDEN = (64,)  # encoder and decoder hidden widths (ModelConfig's are linear)


class CLIError(Exception):
    """Reported as one ``error:`` line; exit status ``code`` (2: bad input)."""

    def __init__(self, message, code=EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise CLIError(message)


def _widths(text):
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        widths = None
    if widths is None or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(
            f"expected positive widths like 64,64 or none, got {text!r}")
    return widths


def build_parser():
    from svae_core.models import MODELS

    parser = _Parser(prog="python -m svae_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser(
        "train", help="train a model and evaluate its held-out ELBO",
        description="Train one model, evaluate its ELBO (held-out when there is test data), "
                    "write the results JSON and print a one-line summary.")
    p.add_argument("--model", required=True, choices=sorted(MODELS),
                   help="model family: svae (structured posterior through an LDS smoother) "
                        "or one of the paper's RNN/CNN baselines.")
    p.add_argument("--data", required=True,
                   help="'lds' to generate the paper's linear-dynamical-system data, or a "
                        ".npz path with y (sequences, T, N), optional y_test (held-out, same "
                        "T and N), optional bool mask (sequences, T), False where unobserved, "
                        "and optional bool mask_test, the same for y_test.")
    g = p.add_argument_group("LDS data (--data lds)")
    g.add_argument("--obs-dim", type=int, default=5, metavar="N",
                   help="observation dimension N of the generated data; a .npz's y sets N "
                        "itself (default 5).")
    g.add_argument("--q", type=float, default=0.1,
                   help="dynamics noise variance of the generated LDS (default 0.1).")
    g.add_argument("--r", type=float, default=0.1,
                   help="emission noise variance of the generated LDS (default 0.1).")
    g.add_argument("--num-train", type=int, default=100,
                   help="number of generated training sequences (default 100).")
    g.add_argument("--num-test", type=int, default=100,
                   help="number of generated held-out sequences (default 100).")
    g.add_argument("--num-timesteps", type=int, default=200, metavar="T",
                   help="length T of each generated sequence, in steps (default 200).")
    g.add_argument("--data-seed", type=int, default=0,
                   help="seed of the generated data set, independent of --seed (default 0).")
    m = p.add_argument_group("model")
    m.add_argument("--latent-dim", type=int, default=3, metavar="D",
                   help="latent dimension D of the model, and of the generated LDS with "
                        "--data lds (default 3).")
    m.add_argument("--globals", choices=["point", "natgrad"], default="point",
                   help="how --model svae holds the LDS parameters: point estimates trained by "
                        "Adam with the networks (point), or a conjugate posterior q(θ) (NIW on "
                        "the initial state, MNIW on the dynamics) trained by natural-gradient "
                        "SVI (natgrad; Johnson et al. 2016). Default point.")
    m.add_argument("--natgrad-step", type=float, default=0.1, metavar="RHO",
                   help="SVI step size ρ in (0, 1] of --globals natgrad (default 0.1).")
    m.add_argument("--potential", choices=["diagonal", "dense"], default="diagonal",
                   help="precision matrix of the SVAE's per-step Gaussian potentials: diagonal "
                        "(cheaper) or dense (default diagonal).")
    m.add_argument("--smoother", choices=["auto", "sequential", "parallel"], default="auto",
                   help="SVAE smoother: sequential (a Kalman scan, fastest on CPU), parallel "
                        "(a scan of depth O(sqrt T), fastest on an accelerator) or auto, which "
                        "takes sequential on CPU and parallel otherwise; the JSON records the "
                        "one used (default auto).")
    m.add_argument("--decoder-hidden", type=_widths, default=DEFAULT_HIDDEN, metavar="WIDTHS",
                   help="hidden-layer widths of the decoder MLP, comma-separated like 64,64, "
                        "or none for a linear decoder (default 64).")
    m.add_argument("--encoder-hidden", type=_widths, default=DEFAULT_HIDDEN, metavar="WIDTHS",
                   help="hidden-layer widths of the SVAE's recognition MLP, comma-separated, "
                        "or none for a linear one as in the paper's LDS runs (default 64).")
    m.add_argument("--rnn-hidden", type=int, default=20,
                   help="width of the bidirectional GRU in the RNN baselines (default 20).")
    m.add_argument("--cnn-kernel", type=int, default=10,
                   help="temporal kernel length of cnn_ar_l's convolutions, in steps "
                        "(default 10).")
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=int, default=3000,
                   help="number of optimiser steps (default 3000: the SVAE covers 91%% of the "
                        "null→true gap on the paper's LDS data there, 60%% at 1000).")
    t.add_argument("--seed", type=int, default=0,
                   help="seed of the initial parameters, minibatches and samples (default 0).")
    t.add_argument("--batch-size", type=int, default=10,
                   help="training sequences per step, at most the number of training "
                        "sequences (default 10).")
    t.add_argument("--lr", type=float, default=DEFAULT_LR,
                   help="Adam learning rate after the warm-up, the best constant rate measured "
                        "on the LDS data (default 3e-3).")
    t.add_argument("--warmup-steps", type=int, default=200,
                   help="steps of linear warm-up of the rate from 0 to --lr (default 200).")
    t.add_argument("--lr-decay-start", type=int, default=0,
                   help="step at which a cosine decay of the rate begins (default 0: a "
                        "constant rate).")
    t.add_argument("--lr-decay-steps", type=int, default=1000,
                   help="length of that decay, in steps (default 1000).")
    t.add_argument("--lr-final-fraction", type=float, default=0.03,
                   help="rate at the end of the decay, as a fraction of --lr (default 0.03).")
    t.add_argument("--weight-decay", type=float, default=0.0,
                   help="decoupled weight decay of every parameter per step, as a fraction of "
                        "the rate (AdamW; default 0: plain Adam).")
    t.add_argument("--num-samples", type=int, default=1,
                   help="posterior samples per sequence in each training step's ELBO "
                        "(default 1).")
    t.add_argument("--mask-fraction", type=float, default=DEFAULT_MASK_FRACTION,
                   help="longest block of steps hidden from the encoder at each training step, "
                        "as a fraction of T, for learning dynamics from video (the pendulum "
                        "chapter uses 0.4); it lowers the ELBO (default 0: no masking).")
    t.add_argument("--mask-after", type=int, default=0,
                   help="step at which masking starts, after an unmasked warm-up that helps "
                        "the RNN/CNN baselines (default 0).")
    t.add_argument("--log-every", type=int, default=50,
                   help="steps per compiled chunk, progress update, history entry and NaN "
                        "check (default 50).")
    t.add_argument("--checkpoint-dir", type=Path,
                   help="folder for checkpoints and for --resume (default none).")
    t.add_argument("--checkpoint-every", type=int, default=0,
                   help="steps between checkpoints in --checkpoint-dir (default 0: none).")
    t.add_argument("--resume", action="store_true",
                   help="continue exactly from the last checkpoint in --checkpoint-dir; a "
                        "larger --steps extends the run.")
    e = p.add_argument_group("evaluation")
    e.add_argument("--eval-samples", type=int, default=10,
                   help="posterior samples inside each final ELBO estimate (default 10).")
    e.add_argument("--eval-repeats", type=int, default=4,
                   help="independent ELBO estimates per sequence, at least 2, whose spread "
                        "gives the standard error (default 4).")
    p.add_argument("--out", type=Path, required=True,
                   help="path of the results JSON (config, ELBOs in nats per step per "
                        "observation dimension, history); its folder must exist.")
    p.add_argument("--no-progress", action="store_true",
                   help="hide the progress bar (a tqdm bar on stderr).")
    return parser


# ---------------------------------------------------------------------------- data


def _list_some(indices, limit=5):
    shown = ", ".join(str(i) for i in indices[:limit])
    return f"[{shown}{', ...' if len(indices) > limit else ''}] ({len(indices)} of them)"


def _check_array(name, a, path):
    """a as float32 (sequences, T, N) with every size >= 1; non-finite entries are left for
    the caller, which knows which steps are observed."""
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise CLIError(f"{path}: '{name}' must be real numbers, got dtype {a.dtype}")
    if a.ndim != 3:
        raise CLIError(f"{path}: array '{name}' must have shape (sequences, T, N), got {a.shape}")
    if min(a.shape) < 1:
        raise CLIError(f"{path}: array '{name}' is empty, shape {a.shape}")
    with np.errstate(over="ignore"):  # beyond float32's range becomes Inf, reported below
        return a.astype(np.float32)


def _check_mask(mask, shape, path, name="mask"):
    """mask as bool (sequences, T): a bool array, or numbers that are all 0 or 1."""
    data = "y" if name == "mask" else "y_test"
    if mask.shape != shape:
        raise CLIError(f"{path}: '{name}' must have shape {shape} (sequences, T) like "
                       f"{data}'s, got {mask.shape}")
    if mask.dtype != bool:
        numeric = np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)
        if not (numeric and np.all((mask == 0) | (mask == 1))):
            raise CLIError(f"{path}: '{name}' must be bool (True = observed), or 0/1, got "
                           f"dtype {mask.dtype} with other values")
    mask = mask.astype(bool)
    if not mask.any():
        raise CLIError(f"{path}: '{name}' is False everywhere: no step of any sequence is "
                       "observed, so there is nothing to train on or to score")
    empty = np.flatnonzero(~mask.any(axis=1)).tolist()
    if empty:  # their ELBO is 0 by definition: nothing to learn from or to score
        raise CLIError(f"{path}: sequences {_list_some(empty)} have no observed step "
                       f"('{name}' all False); drop them from '{data}' and '{name}'")
    return mask


def load_npz(path: Path):
    """(y, y_test or None, mask or None, mask_test or None) from a user's .npz, validated;
    y and y_test float32.

    Entries of y (y_test) at unobserved steps, mask (mask_test) False, may be anything, NaN
    included: they are set to 0, and neither seen by the encoder nor scored. Everywhere else
    y and y_test must be finite."""
    if not path.exists():
        raise CLIError(f"data file not found: {path}")
    if path.is_dir():
        raise CLIError(f"data path is a folder, not a .npz file: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # zip/format errors, object arrays
        raise CLIError(f"cannot read {path} as .npz: {exc}") from None
    if "y" not in arrays:
        raise CLIError(f"{path}: no array 'y' (found {sorted(arrays)})")
    y = _check_array("y", arrays["y"], path)
    y_test = arrays.get("y_test")
    if y_test is not None:
        y_test = _check_array("y_test", y_test, path)
        if y_test.shape[1:] != y.shape[1:]:
            raise CLIError(f"{path}: 'y_test' {y_test.shape} must match y's (T, N) = "
                           f"{y.shape[1:]}")
    mask_test = arrays.get("mask_test")
    if mask_test is not None:
        if y_test is None:
            raise CLIError(f"{path}: 'mask_test' needs 'y_test'")
        mask_test = _check_mask(mask_test, y_test.shape[:2], path, "mask_test")
        y_test = np.where(mask_test[..., None], y_test, np.float32(0))
    if y_test is not None and not np.all(np.isfinite(y_test)):
        raise CLIError(f"{path}: array 'y_test' contains NaN or Inf at observed steps (mark "
                       "unobserved steps False in 'mask_test')")
    mask = arrays.get("mask")
    if mask is not None:
        mask = _check_mask(mask, y.shape[:2], path)
        y = np.where(mask[..., None], y, np.float32(0))
    if not np.all(np.isfinite(y)):
        raise CLIError(f"{path}: array 'y' contains NaN or Inf at observed steps (mark "
                       "unobserved steps False in 'mask')")
    return y, y_test, mask, mask_test


def load_data(args):
    """dict with y_train, y_test, observed, observed_test, ssm (or None), source name."""
    from svae_core.datasets import LDSSetting, make_lds_benchmark

    if args.data == "lds":
        for name in ("latent_dim", "obs_dim", "num_train", "num_test", "num_timesteps"):
            if getattr(args, name) < 1:
                raise CLIError(f"--{name.replace('_', '-')} must be >= 1")
        if args.q <= 0 or args.r <= 0:
            raise CLIError("--q and --r must be > 0")
        bench = make_lds_benchmark(
            LDSSetting(args.latent_dim, args.obs_dim, args.q, args.r), args.data_seed,
            num_train=args.num_train, num_test=args.num_test, num_timesteps=args.num_timesteps,
        )
        return dict(y_train=np.asarray(bench.y_train), y_test=np.asarray(bench.y_test),
                    observed=None, observed_test=None, ssm=bench.ssm,
                    source=bench.setting.name)
    y, y_test, mask, mask_test = load_npz(Path(args.data))
    return dict(y_train=y, y_test=y_test, observed=mask, observed_test=mask_test, ssm=None,
                source=str(args.data))


# ---------------------------------------------------------------------------- train


def resolve_smoother(choice: str) -> str:
    """:func:`svae_core.models.resolve_smoother` (imported when called: --help needs no JAX)."""
    from svae_core.models import resolve_smoother as resolve

    return resolve(choice)


def _check_options(args):
    """Options whose bad values would otherwise surface only after training."""
    if not math.isfinite(args.lr):
        raise CLIError(f"--lr must be a finite number > 0, got {args.lr}")
    for name, least in (("eval_samples", 1), ("eval_repeats", 2), ("rnn_hidden", 1),
                        ("cnn_kernel", 1), ("checkpoint_every", 0), ("warmup_steps", 0),
                        ("mask_after", 0)):
        if getattr(args, name) < least:
            raise CLIError(f"--{name.replace('_', '-')} must be >= {least}, "
                           f"got {getattr(args, name)}")
    if args.globals == "natgrad" and args.model != "svae":
        raise CLIError(f"--globals natgrad needs --model svae, got --model {args.model}")
    if not 0.0 < args.natgrad_step <= 1.0:
        raise CLIError(f"--natgrad-step must be in (0, 1], got {args.natgrad_step}")
    if args.out.is_dir():
        raise CLIError(f"--out is a folder, not a file path: {args.out}")


def configs_from_args(args, num_sequences: int, obs_dim: int):
    """(ModelConfig, TrainConfig) of a ``train`` command's parsed ``args`` for data of
    ``num_sequences`` training sequences with ``obs_dim`` channels."""
    from svae_core.models import ModelConfig
    from svae_core.training import TrainConfig

    N = obs_dim
    try:
        model_config = ModelConfig(
            latent_dim=args.latent_dim, obs_dim=N, decoder_hidden=args.decoder_hidden,
            encoder_hidden=args.encoder_hidden, potential=args.potential,
            smoother=resolve_smoother(args.smoother), rnn_hidden=args.rnn_hidden,
            cnn_kernel=args.cnn_kernel,
        )
        train_config = TrainConfig(
            steps=args.steps, batch_size=min(args.batch_size, num_sequences),
            learning_rate=args.lr, warmup_steps=args.warmup_steps, num_samples=args.num_samples,
            mask_fraction=args.mask_fraction, mask_after=args.mask_after,
            log_every=min(args.log_every, args.steps), checkpoint_every=args.checkpoint_every,
            lr_decay_start=args.lr_decay_start, lr_decay_steps=args.lr_decay_steps,
            lr_final_fraction=args.lr_final_fraction, weight_decay=args.weight_decay,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return model_config, train_config


def run_train(args) -> dict:
    from svae_core.experiments import train_and_evaluate
    from svae_core.training import CheckpointError, TrainingDivergedError

    _check_options(args)
    data = load_data(args)
    y_train = data["y_train"]
    model_config, train_config = configs_from_args(args, y_train.shape[0], y_train.shape[2])
    if args.resume and not args.checkpoint_dir:
        raise CLIError("--resume needs --checkpoint-dir")
    try:
        runs = train_and_evaluate(
            args.model, y_train, model_config, train_config, y_test=data["y_test"],
            observed=data["observed"], observed_test=data["observed_test"], ssm=data["ssm"],
            seeds=[args.seed],
            eval_samples=args.eval_samples, eval_repeats=args.eval_repeats,
            progress=not args.no_progress, checkpoint_dir=args.checkpoint_dir,
            resume=args.resume, globals_mode=args.globals, natgrad_step=args.natgrad_step)
    except CheckpointError as exc:  # nothing to resume, or another config
        raise CLIError(str(exc)) from None
    except TrainingDivergedError as exc:  # the message names the step and suggests a fix
        raise CLIError(f"training diverged: {exc}", code=EXIT_DIVERGED) from None
    rec = runs.records[0]
    out = {
        "version": rec["version"],
        "config": {
            "command": "train", "model": args.model, "data": data["source"],
            "model_config": rec["model_config"], "train_config": rec["train_config"],
            "seed": args.seed, "data_seed": args.data_seed if args.data == "lds" else None,
            # the data's sizes, whatever their source (they are not in the setting's name)
            "num_train": int(y_train.shape[0]), "num_timesteps": int(y_train.shape[1]),
            "num_test": None if data["y_test"] is None else int(data["y_test"].shape[0]),
            "eval_samples": args.eval_samples, "eval_repeats": args.eval_repeats,
            "globals": rec["globals"], "natgrad_step": rec["natgrad_step"],
        },
        "units": "nats per time step per observation dimension",
    }
    keys = ("train_elbo", "train_elbo_se", "test_elbo", "test_elbo_se", "true_mll", "null_ll",
            "gap_fraction", "seconds_per_step", "num_devices", "history", "device")
    out.update({k: rec[k] for k in keys})
    return out


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def summary_line(results: dict, out: Path) -> str:
    """One line: model, steps, the held-out ELBO ± its s.e. (the training ELBO when there is
    no test split), the gap fraction when the generating model is known, the JSON's path."""
    cfg = results["config"]
    split, key = ("held-out", "test") if results["test_elbo"] is not None else ("train", "train")
    elbo, se = results[f"{key}_elbo"], results[f"{key}_elbo_se"]
    gap = results.get("gap_fraction")
    gap_text = "" if gap is None else f" ({100 * gap:.1f}% of the null→true gap)"
    return (f"done: {cfg['model']}, {cfg['train_config']['steps']} steps, {split} ELBO "
            f"{elbo:.3f} ± {se:.3f} nats/step/dim{gap_text}, results in {out}")


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "train":
            if args.out.parent and not args.out.parent.exists():
                raise CLIError(f"output folder does not exist: {args.out.parent}")
            t0 = time.perf_counter()
            results = run_train(args)
            results["wall_seconds"] = time.perf_counter() - t0
            args.out.write_text(json.dumps(_json_safe(results), indent=2))
            print(summary_line(results, args.out))
        return 0
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


__all__ = ["CLIError", "build_parser", "configs_from_args", "load_npz", "main",
           "resolve_smoother", "summary_line"]
