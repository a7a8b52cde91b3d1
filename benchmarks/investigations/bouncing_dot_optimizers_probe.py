"""Probe: one optimiser of the bouncing-dot chapter's q(θ) at chosen step sizes (quick sizes,
seed 0 unless --seeds); prints whether each run left the domain and its smoothed training
ELBO (nats per frame per pixel) every fifth logged chunk.

    .venv/bin/python benchmarks/investigations/bouncing_dot_optimizers_probe.py sgd \
        --step-sizes 1e-3 1e-2 1e-1 1 10 --steps 400
"""

import argparse
import dataclasses
import time

import numpy as np

from svae_core.experiments import bouncing_dot as bd
from svae_core.experiments import curves

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("optimizer", choices=bd.OPTIMIZERS)
parser.add_argument("--step-sizes", type=float, nargs="+", required=True)
parser.add_argument("--steps", type=int, default=400)
parser.add_argument("--seeds", type=int, nargs="+", default=[0])
args = parser.parse_args()

settings = dataclasses.replace(bd.PROFILES["quick"], steps=args.steps,
                               early_step=bd.PROFILES["quick"].log_every,
                               seeds=tuple(args.seeds),
                               step_sizes={args.optimizer: tuple(args.step_sizes)})
bench = bd.dataset(settings)
start = time.time()
runs = bd.train(bench, settings, args.optimizer, progress=False)
print(f"{args.optimizer}: {len(runs.runs)} runs, {args.steps} steps, {time.time() - start:.0f} s")
smooth, halted = curves.smoothed_elbo(runs.history), bd.halted_at(runs)
steps = np.asarray(runs.history["step"])
for j, (seed, rate) in enumerate(runs.runs):
    left = f"left the domain at update {halted[j]}" if halted[j] >= 0 else "stayed in the domain"
    print(f"seed {seed} step {rate:g}: {left}; smoothed training ELBO "
          + " ".join(f"{s}:{e:.3f}" for s, e in zip(steps[4::5], smooth[4::5, j], strict=True)))
