"""Probe: the conjugate LDS-SVAE (q(θ) by natural-gradient SVI) on the 2016 bouncing dot.
Prints per run the held-out R² of the dot's position from posterior means (linear read-out fit
on the training sequences) and the mean absolute error of the predicted position over the
frames after the first ``--observed`` (potentials zeroed there, 50 samples), read two ways:
by the same linear read-out applied to the latent samples, and off the decoded frames
(:func:`svae_core.datasets.bouncing_dot.frame_positions`, as the chapter does).

    .venv/bin/python benchmarks/investigations/bouncing_dot_probe.py --steps 2000 \
        --natgrad-steps 0.1 1.0
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from svae_core.datasets import make_bouncing_dot_dataset
from svae_core.datasets.bouncing_dot import frame_positions
from svae_core.experiments.runs import conjugate_svae_task
from svae_core.models import ModelConfig
from svae_core.models.conjugate_svae import ConjugateSVAE
from svae_core.training import TrainConfig, Trainer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--natgrad-steps", type=float, nargs="+", default=[0.1])
parser.add_argument("--seeds", type=int, nargs="+", default=[0])
parser.add_argument("--latent-dim", type=int, default=10)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--observed", type=int, default=25)
args = parser.parse_args()

bench = make_bouncing_dot_dataset(seed=0, num_train=100, num_test=20, num_frames=50)
y, y_test = jnp.asarray(bench.train.frames), jnp.asarray(bench.test.frames)
S, T, P = y.shape
mc = ModelConfig(latent_dim=args.latent_dim, obs_dim=P, encoder_hidden=(50,),
                 decoder_hidden=(50,), smoother="sequential")
tc = TrainConfig(steps=args.steps, batch_size=10, learning_rate=args.lr,
                 log_every=max(1, args.steps // 10))
task = conjugate_svae_task(mc, tc, S, T)
trainer = Trainer(None, {"y": y, "observed": jnp.ones((S, T), bool)}, tc, task=task)
runs = [(s, r) for s in args.seeds for r in args.natgrad_steps]
start = time.time()
result = trainer.fit(trainer.init_runs([s for s, _ in runs],
                                       [{"networks": args.lr, "globals": r} for _, r in runs]),
                     progress=False)
print(f"{len(runs)} runs, {args.steps} steps: {time.time() - start:.0f} s")
model = ConjugateSVAE(mc)
full = jnp.ones(T, bool)
seen = jnp.arange(T) < args.observed
for i, (seed, rho) in enumerate(runs):
    params = jax.tree.map(lambda x, i=i: x[i], result.states.params)
    mean = jax.vmap(lambda yy, p=params: model.apply(p, yy, full, method="posterior_mean"))
    X_tr, X_te = np.asarray(mean(y)), np.asarray(mean(y_test))
    A = np.c_[X_tr.reshape(-1, X_tr.shape[-1]), np.ones(S * T)]
    w, *_ = np.linalg.lstsq(A, bench.train.positions.reshape(-1), rcond=None)
    read = lambda X, w=w: X @ w[:-1] + w[-1]
    pos_te = bench.test.positions
    r2 = 1 - np.sum((read(X_te) - pos_te) ** 2) / np.sum((pos_te - pos_te.mean()) ** 2)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(y_test))
    samples = jax.vmap(lambda yy, k, p=params: model.apply(
        p, yy, seen, k, 50, method="posterior_samples"))(y_test, keys)  # (S', 50, T, D)
    predicted = read(np.asarray(samples)).mean(axis=1)  # (S', T)
    err = np.abs(predicted[:, args.observed:] - pos_te[:, args.observed:]).mean()
    decoded = np.asarray(model.apply(params, samples, method="decode")[0])
    from_frames = frame_positions(decoded).mean(axis=1)  # (S', T)
    err_frames = np.abs(from_frames[:, args.observed:] - pos_te[:, args.observed:]).mean()
    elbo = np.asarray(result.history["elbo"])[:, i]
    print(f"seed {seed} rho {rho}: position R² {r2:.3f}, prediction MAE over frames "
          f"{args.observed}-{T - 1}: linear read-out of latents {err:.3f}, read off decoded "
          f"frames {err_frames:.3f} (image units); training ELBO by chunk "
          f"{' '.join(f'{e:.2f}' for e in elbo)}")
