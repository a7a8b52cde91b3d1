"""Probe: train the spiral GMM-SVAE for a few hundred steps with each optimiser of q(θ)
(svae_core.experiments.spiral.OPTIMIZERS) in float64 globals and print one row per run
(final training ELBO, halted step if it left the domain, held-out ELBO, ARI, components).

    .venv/bin/python benchmarks/investigations/spiral_optimizers_probe.py natgrad_first,natgrad,sgd,adam 300
"""
import sys, types, time, dataclasses
import jax; jax.config.update("jax_enable_x64", True)
from svae_core.experiments import spiral as sp
import numpy as np
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 100
st = dataclasses.replace(sp.PROFILES["quick"], steps=steps, seeds=(0,))
bench = sp.dataset(st)
for opt in sys.argv[1].split(","):
    t = time.time()
    runs = sp.train_gmm_svae(bench, st, opt, progress=False)
    rows = sp.evaluate_gmm_svae(runs, bench, st)
    print(opt, f"{time.time()-t:.1f}s sps={runs.seconds_per_step:.4f}")
    for r in rows: print("  ", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})
