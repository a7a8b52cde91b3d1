"""Probe: train the spiral GMM-SVAE with one optimiser of q(θ)
(svae_core.experiments.spiral.OPTIMIZERS) at the quick profile's sizes, float64 globals, and
print one row per run.

    .venv/bin/python benchmarks/investigations/spiral_optimizers_probe.py natgrad \
        --step-sizes 0.003 0.01 0.03 --steps 300 --second-term-from 0
"""

import argparse
import dataclasses
import time

import jax

jax.config.update("jax_enable_x64", True)

from svae_core.experiments import spiral as sp  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("optimizer", choices=sp.OPTIMIZERS)
parser.add_argument("--step-sizes", type=float, nargs="+", required=True)
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--seeds", type=int, nargs="+", default=[0])
parser.add_argument("--second-term-from", type=float,
                    default=sp.PROFILES["quick"].second_term_from)
args = parser.parse_args()
quick = sp.PROFILES["quick"]
settings = dataclasses.replace(quick, steps=args.steps, seeds=tuple(args.seeds),
                               second_term_from=args.second_term_from,
                               step_sizes={**quick.step_sizes,
                                           args.optimizer: tuple(args.step_sizes)})
bench = sp.dataset(settings)
start = time.time()
runs = sp.train_gmm_svae(bench, settings, args.optimizer, progress=False)
rows = sp.evaluate_gmm_svae(runs, bench, settings)
print(f"{args.optimizer}, {args.steps} steps, second term from {args.second_term_from}: "
      f"{time.time() - start:.0f} s, {1e3 * runs.seconds_per_step:.1f} ms per step")
for r in rows:
    print("  ", {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in r.items()})
