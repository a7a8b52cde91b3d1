"""Probe: does Eq. 4's second term (the path from q(θ) through q(x)) explain why point-estimate
dynamics learn faster than natural-gradient SVI on the headline LDS setting? Trains the
conjugate LDS-SVAE with q(θ) updated by the Fisher-solve natural gradient of the full
objective (both terms; float64 q(θ)), beside the first term alone, one seed each.

    .venv/bin/python benchmarks/investigations/lds_natgrad_second_term_probe.py --steps 2000
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from svae_core.datasets import LDSSetting, make_lds_benchmark  # noqa: E402
from svae_core.experiments.runs import conjugate_svae_task, reference_log_likelihoods  # noqa: E402
from svae_core.expfam import mniw, niw  # noqa: E402
from svae_core.models import ModelConfig  # noqa: E402
from svae_core.models import conjugate_svae as cs  # noqa: E402
from svae_core.natgrad import halt_outside_domain, in_domain, natural_gradient  # noqa: E402
from svae_core.training import (  # noqa: E402
    TrainConfig,
    Trainer,
    TrainingTask,
    default_optimizer,
)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--rho", type=float, nargs="+", default=[0.1])
args = parser.parse_args()

bench = make_lds_benchmark(LDSSetting(3, 5, 0.1, 0.1), 0, num_train=100, num_test=100,
                           num_timesteps=200)
y = np.asarray(bench.y_train, np.float32)
S, T, P = y.shape
true_tr, null_tr = reference_log_likelihoods(bench.ssm, y)
mc = ModelConfig(latent_dim=3, obs_dim=5, smoother="sequential")
tc = TrainConfig(steps=args.steps, batch_size=10, log_every=100)
data = {"y": jnp.asarray(y), "observed": jnp.ones((S, T), bool)}
first = conjugate_svae_task(mc, tc, S, T)
model = cs.ConjugateSVAE(mc, S)
scale = T * P


def both_loss(params, batch, key, step):
    B = batch["y"].shape[0]
    out = jax.vmap(lambda yy, k: model.apply(params, yy, jnp.ones(T, bool), k))(
        batch["y"], jax.random.split(jax.random.split(key)[1], B))
    metrics = {k: jnp.mean(getattr(out, k)) / scale for k in ("elbo", "reconstruction", "kl")}
    return -metrics["elbo"], metrics


def both_optimizer(rates, config, params):
    step = rates["globals"] * S * scale
    labels = {"params": {k: cs.LDSGlobals("niw", "mniw") if k == "globals" else "networks"
                         for k in params["params"]}}
    inner = optax.multi_transform(
        {"networks": default_optimizer(rates["networks"], config),
         "niw": natural_gradient(niw.log_partition, step, member_type=niw.NIWNatural),
         "mniw": natural_gradient(mniw.log_partition, step, member_type=mniw.MNIWNatural)},
        labels)
    return halt_outside_domain(inner, lambda p: in_domain("niw", p["params"]["globals"].init)
                               & in_domain("mniw", p["params"]["globals"].dynamics))


both = TrainingTask(first.init, both_loss, both_optimizer, data_size=S)
for name, task in (("first term (closed form)", first), ("both terms (Fisher solve)", both)):
    start = time.time()
    trainer = Trainer(None, data, tc, task=task)
    states = trainer.init_runs([0] * len(args.rho),
                               [{"networks": 3e-3, "globals": r} for r in args.rho])
    res = trainer.fit(states, progress=False)
    elbo = np.asarray(res.history["elbo"], float)
    gaps = (elbo - null_tr) / (true_tr - null_tr)
    halted = getattr(res.states.opt_state, "halted_at", None)
    print(f"{name}: {time.time() - start:.0f} s; halted at {halted}")
    for j, r in enumerate(args.rho):
        print(f"  rho {r}: training-ELBO gap fraction by step:",
              " ".join(f"{s}:{g:.2f}" for s, g in zip(res.history["step"], gaps[:, j],
                                                       strict=True)))
