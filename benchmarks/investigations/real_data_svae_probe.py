"""Probe: the SVAE against the linear SSM on one real data set and latent size, with one
setting changed at a time from the CLI's defaults (potential, widths, steps, rate).

    .venv/bin/python benchmarks/investigations/real_data_svae_probe.py --data japanese_vowels \
        --latent 8 --variants default dense w128 steps10k lr1e-3 linear
"""

from __future__ import annotations

import argparse
import dataclasses

from svae_core.experiments import real_data as rd
from svae_core.experiments.linear_ssm import fit_linear_ssm, heldout_nats
from svae_core.experiments.runs import train_and_evaluate

VARIANTS = {
    "default": ({}, {}),
    "dense": ({"potential": "dense"}, {}),
    "w128": ({"encoder_hidden": (128,), "decoder_hidden": (128,)}, {}),
    "linear": ({"encoder_hidden": (), "decoder_hidden": ()}, {}),
    "steps10k": ({}, {"steps": 10_000}),
    "lr1e-3": ({}, {"learning_rate": 1e-3}),
    "dense_steps10k": ({"potential": "dense"}, {"steps": 10_000}),
    "steps1k": ({}, {"steps": 1000}),
    "steps1500": ({}, {"steps": 1500}),
    "wd1e-2": ({}, {"weight_decay": 1e-2}),
    "wd1e-1": ({}, {"weight_decay": 1e-1}),
    "mask": ({}, {"mask_fraction": 0.3}),
    "dense_linear": ({"potential": "dense", "encoder_hidden": (), "decoder_hidden": ()}, {}),
    "dense_wd1e-1": ({"potential": "dense"}, {"weight_decay": 1e-1}),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="japanese_vowels")
    ap.add_argument("--latent", type=int, default=8)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=sorted(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    data = rd.prepared_data(args.data, rd.PROFILES["quick"])
    S, _, N = data["y_train"].shape
    lin = fit_linear_ssm(data["y_train"], args.latent, data["observed_train"], steps=3000)
    lin_test = heldout_nats(lin.ssm, data["y_test"], data["observed_test"])
    print(f"{args.data} D={args.latent}: linear SSM held-out {lin_test:.4f}, training "
          f"{-lin.trace[-1]:.4f}", flush=True)
    for name in args.variants:
        model_change, train_change = VARIANTS[name]
        mc, tc = rd.cli_default_configs("svae", args.latent, N, S)
        mc = dataclasses.replace(mc, **model_change)
        tc = dataclasses.replace(tc, **train_change)
        runs = train_and_evaluate("svae", data["y_train"], mc, tc, y_test=data["y_test"],
                                  observed=data["observed_train"],
                                  observed_test=data["observed_test"], seeds=args.seeds,
                                  progress=False)
        for r in runs.records:
            print(f"  {name:15s} seed {r['seed']}: held-out {r['test_elbo']:.4f} ± "
                  f"{r['test_elbo_se']:.4f} ({r['test_elbo'] - lin_test:+.4f} vs linear), "
                  f"training {r['train_elbo']:.4f}", flush=True)


if __name__ == "__main__":
    main()
