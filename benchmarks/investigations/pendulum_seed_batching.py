"""Does a seed train the same inside a several-seed program as alone? The D = 3 pendulum SVAE,
seed 0, trained alone and as the first of seeds (0, 1) in one vmapped program, same data,
batches and initial parameters; prints both training-ELBO histories and the largest
parameter difference after ``--steps`` steps (float summation order differs between the two
compiled programs; long runs magnify it).

    .venv/bin/python benchmarks/investigations/pendulum_seed_batching.py [--steps 100]
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import numpy as np

from svae_core.experiments import pendulum


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args(argv)
    config = pendulum.PendulumConfig(steps=args.steps, num_test=10, log_every=args.steps // 4,
                                     eval_samples=2, eval_repeats=2)
    _, y_train, y_test = pendulum.dataset(config)
    alone = pendulum.train_seeds("svae", 3, config, y_train, y_test)
    pair = pendulum.train_seeds("svae", 3, dataclasses.replace(config, seeds=(0, 1)),
                                y_train, y_test)
    first = lambda runs: jax.tree.map(lambda x: np.asarray(x[0]), runs.params)
    diff = max(float(np.max(np.abs(a - b)))
               for a, b in zip(jax.tree.leaves(first(alone)), jax.tree.leaves(first(pair)),
                               strict=True))
    print("step              ", alone.records[0]["history"]["step"])
    print("train ELBO alone  ", alone.records[0]["history"]["elbo"])
    print("train ELBO in pair", pair.records[0]["history"]["elbo"])
    print(f"largest parameter difference after {args.steps} steps: {diff:.2e}")


if __name__ == "__main__":
    main()
