"""Report: the SVAE on a real data set through the CLI's code path, at the CLI's defaults and
with MLP encoder/decoder widths, beside a linear-Gaussian SSM's exact held-out likelihood.

For each latent size D, the SVAE (``train_and_evaluate("svae", ...)`` with the CLI's default
TrainConfig: 3,000 steps, rate 3e-3, no masking) is trained for each encoder/decoder width and
seed (seeds in one program), and the linear SSM is fitted by Adam on its exact likelihood
(:mod:`svae_core.experiments.linear_ssm`). Prints a Markdown table of held-out nats per step
per channel (SVAE: ELBO ± Monte Carlo s.e., median seed; linear SSM: exact) and writes JSON.
Data sets of equal-length sequences only (the held-out ELBO has no test mask).

    .venv/bin/python benchmarks/real_data_defaults.py [--data basic_motions] [--latent 2 4 8]
        [--widths none 64 128] [--seeds 0 1 2] [--steps 3000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from svae_core.cli import DEFAULT_LR, DEFAULT_MASK_FRACTION
from svae_core.datasets import load_real_dataset
from svae_core.experiments import train_and_evaluate
from svae_core.experiments.linear_ssm import fit_linear_ssm, heldout_nats
from svae_core.models import ModelConfig
from svae_core.reporting import describe_device
from svae_core.training import TrainConfig


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="basic_motions")
    ap.add_argument("--latent", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--widths", nargs="+", default=["none", "64", "128"],
                    help="encoder and decoder hidden widths: 'none' (linear) or one layer")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--ssm-steps", type=int, default=3000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    data = load_real_dataset(args.data)
    if data.train_mask is not None or data.test_mask is not None:
        raise SystemExit(f"error: {args.data} has variable-length sequences; this report "
                         "needs equal lengths")
    y_train, y_test = np.asarray(data.train), np.asarray(data.test)
    S, T, N = y_train.shape
    rows = []
    for D in args.latent:
        start = time.perf_counter()
        lin = fit_linear_ssm(y_train, D, steps=args.ssm_steps)
        lin_nats = heldout_nats(lin.ssm, y_test)
        rows.append({"D": D, "model": "linear SSM (exact)", "widths": None,
                     "test": lin_nats, "se": 0.0, "train": -float(lin.trace[-1]),
                     "seconds": time.perf_counter() - start})
        print(f"D={D} linear SSM: held-out {lin_nats:.4f} nats/step/channel", flush=True)
        for w in args.widths:
            hidden = () if w == "none" else (int(w),)
            mc = ModelConfig(latent_dim=D, obs_dim=N, encoder_hidden=hidden,
                             decoder_hidden=hidden)
            tc = TrainConfig(steps=args.steps, batch_size=min(10, S), learning_rate=DEFAULT_LR,
                             mask_fraction=DEFAULT_MASK_FRACTION, warmup_steps=200,
                             log_every=min(50, args.steps))
            start = time.perf_counter()
            runs = train_and_evaluate("svae", y_train, mc, tc, y_test=y_test,
                                      seeds=args.seeds, progress=False)
            recs = sorted(runs.records, key=lambda r: r["test_elbo"])
            mid = recs[len(recs) // 2]
            rows.append({"D": D, "model": "SVAE", "widths": list(hidden),
                         "test": mid["test_elbo"], "se": mid["test_elbo_se"],
                         "train": mid["train_elbo"],
                         "per_seed": [r["test_elbo"] for r in runs.records],
                         "seconds": time.perf_counter() - start})
            seeds = ", ".join(f"{r['test_elbo']:.4f}" for r in runs.records)
            print(f"D={D} SVAE widths {hidden or 'linear'}: held-out "
                  f"{mid['test_elbo']:.4f} ± {mid['test_elbo_se']:.4f} (median of seeds "
                  f"{seeds}); linear SSM {lin_nats:.4f}", flush=True)

    lines = [f"{args.data}: {S} training and {y_test.shape[0]} held-out sequences of {T} "
             f"steps, {N} channels; {describe_device()['summary']}. Held-out nats per step "
             "per channel (SVAE: ELBO ± Monte Carlo s.e., median of seeds "
             f"{args.seeds}, {args.steps} steps at the CLI's defaults; linear SSM: exact "
             "log-likelihood).", "",
             "| D | model | encoder/decoder widths | held-out | vs linear SSM |",
             "|---|---|---|---|---|"]
    for r in rows:
        base = next(b["test"] for b in rows if b["D"] == r["D"] and b["widths"] is None)
        widths = "—" if r["widths"] is None else (str(tuple(r["widths"])) if r["widths"]
                                                   else "linear (CLI default)")
        lines.append(f"| {r['D']} | {r['model']} | {widths} | {r['test']:.4f} ± {r['se']:.4f} "
                     f"| {r['test'] - base:+.4f} |")
    table = "\n".join(lines)
    print("\n" + table)
    out = Path(args.out or Path(__file__).parent / "results"
               / f"real_data_defaults_{args.data}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": vars(args), "device": describe_device(), "rows": rows,
                               "table": table}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
