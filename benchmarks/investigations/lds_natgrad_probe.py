"""Probe: the LDS-SVAE with point-estimate dynamics (Adam) against q(θ) by natural-gradient
SVI (--globals natgrad), on one generated LDS setting, one seed each; prints the held-out ELBO,
its gap fraction and the training ELBO's gap fraction at every logged step.

    .venv/bin/python benchmarks/investigations/lds_natgrad_probe.py --steps 2000 \
        --natgrad-steps 0.1 0.5 --seeds 0 1 2 3 4
"""

import argparse
import time

import numpy as np

from svae_core.datasets import LDSSetting, make_lds_benchmark
from svae_core.experiments.runs import reference_log_likelihoods, train_and_evaluate
from svae_core.models import ModelConfig
from svae_core.training import TrainConfig

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--natgrad-steps", type=float, nargs="+", default=[0.1])
parser.add_argument("--num-train", type=int, default=100)
parser.add_argument("--num-timesteps", type=int, default=200)
parser.add_argument("--log-every", type=int, default=100)
parser.add_argument("--globals-after", type=int, nargs="+", default=[0])
parser.add_argument("--no-point", action="store_true")
parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="model seeds, trained together in one program (the data: seed 0)")
args = parser.parse_args()

bench = make_lds_benchmark(LDSSetting(3, 5, 0.1, 0.1), 0, num_train=args.num_train,
                           num_test=100, num_timesteps=args.num_timesteps)
y, y_test = np.asarray(bench.y_train), np.asarray(bench.y_test)
true_tr, null_tr = reference_log_likelihoods(bench.ssm, y)
mc = ModelConfig(latent_dim=3, obs_dim=5, smoother="sequential")
tc = TrainConfig(steps=args.steps, batch_size=10, log_every=args.log_every)
runs = [] if args.no_point else [("point", None, 0)]
runs += [("natgrad", r, w) for r in args.natgrad_steps for w in args.globals_after]
for mode, rho, after in runs:
    start = time.time()
    records = train_and_evaluate("svae", y, mc, tc, y_test=y_test, ssm=bench.ssm,
                                 seeds=args.seeds, progress=False, globals_mode=mode,
                                 natgrad_step=rho or 0.1, globals_after=after).records
    fractions = [r["gap_fraction"] for r in records]
    print(f"{mode} rho={rho} after={after}: held-out gap fraction per seed "
          f"{', '.join(f'{g:.3f}' for g in fractions)}; median {np.median(fractions):.3f} "
          f"(true {records[0]['true_mll']:.4f}, null {records[0]['null_ll']:.4f}); "
          f"{time.time() - start:.0f} s")
    for rec in records:
        gaps = (np.asarray(rec["history"]["elbo"]) - null_tr) / (true_tr - null_tr)
        print(f"   seed {rec['seed']} training-ELBO gap fraction by step:",
              " ".join(f"{s}:{g:.2f}" for s, g in zip(rec["history"]["step"], gaps,
                                                       strict=True)))
