"""Probe: train the spiral GMM-SVAE for a few hundred steps with each optimiser of q(θ)
(svae_core.experiments.spiral.OPTIMIZERS), float64 globals, and print one row per run.

    .venv/bin/python benchmarks/investigations/spiral_optimizers_probe.py \
        natgrad_first,natgrad,sgd,adam 300
"""

import dataclasses
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

from svae_core.experiments import spiral as sp  # noqa: E402

steps = int(sys.argv[2]) if len(sys.argv) > 2 else 100
settings = dataclasses.replace(sp.PROFILES["quick"], steps=steps, seeds=(0,))
bench = sp.dataset(settings)
for opt in sys.argv[1].split(","):
    t = time.time()
    runs = sp.train_gmm_svae(bench, settings, opt, progress=False)
    rows = sp.evaluate_gmm_svae(runs, bench, settings)
    print(opt, f"{time.time() - t:.1f}s, {runs.seconds_per_step:.4f} s/step")
    for r in rows:
        print("  ", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})
