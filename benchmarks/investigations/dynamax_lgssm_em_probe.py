"""Probe: dynamax's LinearGaussianSSM.fit_em on one sequence and on a batch of sequences
simulated from a random LDS (D = 2, N = 4, 40 × 50 steps), float32 or float64. Prints the log
likelihood of the first EM iterations; the reason svae_core.experiments.linear_ssm fits by
Adam on the exact likelihood instead.

    .venv/bin/python benchmarks/investigations/dynamax_lgssm_em_probe.py [--x64] [--iters 5]
"""

import argparse

import jax

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--x64", action="store_true")
parser.add_argument("--iters", type=int, default=5)
args = parser.parse_args()
jax.config.update("jax_enable_x64", args.x64)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from dynamax.linear_gaussian_ssm import LinearGaussianSSM  # noqa: E402

from svae_core.datasets.lds import random_lds, sample_ssm  # noqa: E402

ssm = random_lds(jax.random.PRNGKey(0), 2, 4, q=0.1, r=0.1, emission_bias_scale=1.0,
                 dynamics_bias_scale=0.1)
_, y = sample_ssm(jax.random.PRNGKey(1), ssm, 40, 50)
y = jnp.asarray(y, jnp.float64 if args.x64 else jnp.float32)
model = LinearGaussianSSM(2, 4)
params, props = model.initialize(jax.random.PRNGKey(0))
for name, data in (("one sequence", y[0]), ("batch of 40", y)):
    _, lls = model.fit_em(params, props, data, num_iters=args.iters, verbose=False)
    print(f"{name}: log-likelihood by EM iteration {np.asarray(lls)}")
