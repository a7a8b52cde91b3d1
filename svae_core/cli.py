"""Command line: train any model on the paper's LDS data or on your own sequences.

    python -m svae_core train --model svae --data lds --latent-dim 3 --obs-dim 5 \\
        --q 0.1 --r 0.1 --steps 2000 --seed 0 --out results.json
    python -m svae_core train --model rnn_mf --data my_sequences.npz --latent-dim 4 \\
        --steps 5000 --out results.json

A ``.npz`` file holds ``y`` (sequences, T, N), optionally ``y_test`` (held-out sequences,
same T and N) and ``mask`` (sequences, T) bool, False at steps that were never observed.
Results are JSON; ELBOs are in nats per time step per observation dimension. Bad input prints
one ``error:`` line and exits with status 2, writing nothing.
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


class CLIError(Exception):
    """Bad input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise CLIError(message)


def _widths(text):
    try:
        return tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths like 64,64, got {text!r}") from None


def build_parser():
    from svae_core.models import MODELS

    parser = _Parser(prog="python -m svae_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("train", help="train a model and evaluate its held-out ELBO")
    p.add_argument("--model", required=True, choices=sorted(MODELS))
    p.add_argument("--data", required=True, help="'lds' (the paper's generator) or a .npz path")
    g = p.add_argument_group("LDS data (--data lds)")
    g.add_argument("--latent-dim", type=int, default=3, help="D (also the model's latent size)")
    g.add_argument("--obs-dim", type=int, default=5, help="N for --data lds")
    g.add_argument("--q", type=float, default=0.1, help="dynamics noise variance")
    g.add_argument("--r", type=float, default=0.1, help="emission noise variance")
    g.add_argument("--num-train", type=int, default=100)
    g.add_argument("--num-test", type=int, default=100)
    g.add_argument("--num-timesteps", type=int, default=200)
    g.add_argument("--data-seed", type=int, default=0, help="seed of the generated data set")
    m = p.add_argument_group("model")
    m.add_argument("--potential", choices=["diagonal", "dense"], default="diagonal")
    m.add_argument("--smoother", choices=["parallel", "sequential"], default="parallel")
    m.add_argument("--decoder-hidden", type=_widths, default=(), help="e.g. 64,64; default linear")
    m.add_argument("--encoder-hidden", type=_widths, default=())
    m.add_argument("--rnn-hidden", type=int, default=20)
    m.add_argument("--cnn-kernel", type=int, default=10)
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch-size", type=int, default=10)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup-steps", type=int, default=200)
    t.add_argument("--lr-decay-start", type=int, default=0,
                   help="step where a cosine decay of the rate begins (0: constant rate)")
    t.add_argument("--lr-decay-steps", type=int, default=1000, help="length of that decay")
    t.add_argument("--lr-final-fraction", type=float, default=0.03,
                   help="rate at the end of the decay, as a fraction of --lr")
    t.add_argument("--num-samples", type=int, default=1, help="posterior samples per step")
    t.add_argument("--mask-fraction", type=float, default=0.4, help="0 disables masking")
    t.add_argument("--mask-after", type=int, default=0, help="unmasked warm-up steps")
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--checkpoint-dir", type=Path)
    t.add_argument("--checkpoint-every", type=int, default=0)
    t.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    e = p.add_argument_group("evaluation")
    e.add_argument("--eval-samples", type=int, default=10, help="samples per ELBO estimate")
    e.add_argument("--eval-repeats", type=int, default=4, help="independent estimates")
    p.add_argument("--out", type=Path, required=True, help="results JSON")
    p.add_argument("--no-progress", action="store_true")
    return parser


# ---------------------------------------------------------------------------- data


def _check_array(name, a, ndim, path):
    if a.ndim != ndim:
        shape = "(sequences, T, N)" if ndim == 3 else "(sequences, T)"
        raise CLIError(f"{path}: array '{name}' must have shape {shape}, got {a.shape}")
    if a.dtype != bool and not np.all(np.isfinite(a)):
        raise CLIError(f"{path}: array '{name}' contains NaN or Inf "
                       f"(mark unobserved steps with 'mask' instead)")


def load_npz(path: Path):
    """(y, y_test or None, mask or None) from a user's .npz, validated."""
    if not path.exists():
        raise CLIError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # zip/format errors
        raise CLIError(f"cannot read {path} as .npz: {exc}") from None
    if "y" not in arrays:
        raise CLIError(f"{path}: no array 'y' (found {sorted(arrays)})")
    y = arrays["y"]
    if not np.issubdtype(y.dtype, np.number):
        raise CLIError(f"{path}: 'y' must be numeric, got dtype {y.dtype}")
    _check_array("y", y, 3, path)
    y_test = arrays.get("y_test")
    if y_test is not None:
        _check_array("y_test", y_test, 3, path)
        if y_test.shape[1:] != y.shape[1:]:
            raise CLIError(f"{path}: 'y_test' {y_test.shape} must match y's (T, N) = "
                           f"{y.shape[1:]}")
    mask = arrays.get("mask")
    if mask is not None:
        if mask.shape != y.shape[:2]:
            raise CLIError(f"{path}: 'mask' must have shape {y.shape[:2]}, got {mask.shape}")
        mask = mask.astype(bool)
    return y.astype(np.float32), None if y_test is None else y_test.astype(np.float32), mask


def load_data(args):
    """dict with y_train, y_test, observed, ssm (or None), setting name."""
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
                    observed=None, ssm=bench.ssm, source=bench.setting.name)
    y, y_test, mask = load_npz(Path(args.data))
    return dict(y_train=y, y_test=y_test, observed=mask, ssm=None, source=str(args.data))


# ---------------------------------------------------------------------------- train


def run_train(args) -> dict:
    from svae_core.experiments import train_and_evaluate
    from svae_core.models import ModelConfig
    from svae_core.training import CheckpointError, TrainConfig

    data = load_data(args)
    y_train = data["y_train"]
    N = y_train.shape[2]
    try:
        model_config = ModelConfig(
            latent_dim=args.latent_dim, obs_dim=N, decoder_hidden=args.decoder_hidden,
            encoder_hidden=args.encoder_hidden, potential=args.potential,
            smoother=args.smoother, rnn_hidden=args.rnn_hidden, cnn_kernel=args.cnn_kernel,
        )
        train_config = TrainConfig(
            steps=args.steps, batch_size=min(args.batch_size, y_train.shape[0]),
            learning_rate=args.lr, warmup_steps=args.warmup_steps, num_samples=args.num_samples,
            mask_fraction=args.mask_fraction, mask_after=args.mask_after,
            log_every=min(args.log_every, args.steps), checkpoint_every=args.checkpoint_every,
            lr_decay_start=args.lr_decay_start, lr_decay_steps=args.lr_decay_steps,
            lr_final_fraction=args.lr_final_fraction,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if args.resume and not args.checkpoint_dir:
        raise CLIError("--resume needs --checkpoint-dir")
    try:
        runs = train_and_evaluate(
            args.model, y_train, model_config, train_config, y_test=data["y_test"],
            observed=data["observed"], ssm=data["ssm"], seeds=[args.seed],
            eval_samples=args.eval_samples, eval_repeats=args.eval_repeats,
            progress=not args.no_progress, checkpoint_dir=args.checkpoint_dir,
            resume=args.resume)
    except CheckpointError as exc:  # nothing to resume, or another config
        raise CLIError(str(exc)) from None
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
        },
        "units": "nats per time step per observation dimension",
    }
    keys = ("train_elbo", "train_elbo_se", "test_elbo", "test_elbo_se", "true_mll", "null_ll",
            "gap_fraction", "seconds_per_step", "history", "device")
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
            summary = {k: results[k] for k in ("train_elbo", "test_elbo", "true_mll", "null_ll",
                                               "gap_fraction", "seconds_per_step")}
            print(json.dumps(_json_safe(summary)))
        return 0
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


__all__ = ["CLIError", "build_parser", "load_npz", "main"]
