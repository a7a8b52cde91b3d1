"""Probe: the SLDS-SVAE on the synthetic mouse video, networks pretrained as the conjugate
LDS-SVAE. Prints the held-out segmentation scores (NMI, ARI, boundary F1 at ±3 frames, states
used) of argmax q(z_t) against the true behaviours, and of k-means (K clusters) on the
LDS-SVAE's posterior means for comparison. The SLDS starts from the pretrained networks and,
with --init-weight > 0, from q(θ) fitted to those k-means segments.

    .venv/bin/python benchmarks/investigations/mouse_slds_probe.py --pretrain 1000 \
        --steps 1000 --states 6
"""

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.cluster.vq import kmeans2

from svae_core.datasets import flatten_frames, make_mouse_dataset
from svae_core.evaluation import adjusted_rand_index, boundary_f1, normalized_mutual_information
from svae_core.experiments.runs import conjugate_svae_task, slds_svae_task
from svae_core.expfam import mniw
from svae_core.models import ModelConfig
from svae_core.models.conjugate_svae import ConjugateSVAE
from svae_core.models.slds_svae import SLDSSVAE, globals_from_segmentation, prior_globals
from svae_core.training import TrainConfig, Trainer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--pretrain", type=int, default=1000)
parser.add_argument("--steps", type=int, default=1000)
parser.add_argument("--states", type=int, default=6)
parser.add_argument("--latent-dim", type=int, default=8)
parser.add_argument("--hidden", type=int, default=200)
parser.add_argument("--sweeps", type=int, default=10)
parser.add_argument("--rho", type=float, default=0.1)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--pretrain-lr", type=float, default=None,
                    help="Adam's rate while pretraining (default: --lr)")
parser.add_argument("--sticky", type=float, default=0.0)
parser.add_argument("--num-train", type=int, default=100)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--affine", action="store_true", help="give every state an offset b_k")
parser.add_argument("--init-weight", type=float, default=1.0,
                    help="start q(θ) from k-means segments of the pretrained latents with this "
                         "weight (0: the prior with spread state means)")
args = parser.parse_args()

bench = make_mouse_dataset(seed=0, num_train=args.num_train, num_test=20, num_frames=100)
y = jnp.asarray(flatten_frames(bench.train.frames))
y_test = jnp.asarray(flatten_frames(bench.test.frames))
S, T, N = y.shape
mc = ModelConfig(latent_dim=args.latent_dim, obs_dim=N, encoder_hidden=(args.hidden,),
                 decoder_hidden=(args.hidden,), smoother="sequential")
data = {"y": y, "observed": jnp.ones((S, T), bool)}
rates = [{"networks": args.lr, "globals": args.rho}]


def fit(task, steps, label, lr=args.lr):
    tc = TrainConfig(steps=steps, batch_size=10, learning_rate=lr,
                     log_every=max(1, steps // 10))
    trainer = Trainer(None, data, tc, task=task)
    start = time.time()
    result = trainer.fit(trainer.init_runs([args.seed], [{**rates[0], "networks": lr}]),
                         progress=False)
    elbo = " ".join(f"{e[0]:.3f}" for e in result.history["elbo"])
    print(f"{label}: {steps} steps, {time.time() - start:.0f} s; ELBO per pixel by chunk {elbo}",
          flush=True)
    return jax.tree.map(lambda a: a[0], result.states.params)


def scores(pred, truth):
    return (f"NMI {normalized_mutual_information(truth.ravel(), pred.ravel()):.3f}, "
            f"ARI {adjusted_rand_index(truth.ravel(), pred.ravel()):.3f}, "
            f"boundary F1 {boundary_f1(truth, pred, 3)['f1']:.3f}, "
            f"states used {len(np.unique(pred))}")


tc0 = TrainConfig(steps=args.pretrain, batch_size=10, learning_rate=args.lr)
lds = fit(conjugate_svae_task(mc, tc0, S, T), args.pretrain, "LDS-SVAE pretraining",
          args.pretrain_lr or args.lr)
full = jnp.ones(T, bool)
means = lambda p, yy: np.asarray(jax.vmap(lambda s: ConjugateSVAE(mc).apply(
    p, s, full, method="posterior_mean"))(yy))
x_tr, x_te = means(lds, y), means(lds, y_test)
centroids, _ = kmeans2(x_tr.reshape(-1, x_tr.shape[-1]), args.states, seed=args.seed,
                       minit="++")
assign = lambda x: np.argmin(((x[..., None, :] - centroids) ** 2).sum(-1), -1)
print("k-means on LDS-SVAE latents:", scores(assign(x_te), bench.test.labels))

scale = float(np.std(x_tr))  # the prior's noise scale follows the pretrained latents
pots = jax.vmap(lambda s: ConjugateSVAE(mc).apply(lds, s, full, method="potentials"))(y)
noise = mniw.to_standard(lds["params"]["globals"].dynamics)
precision = np.diag(np.asarray(noise.nu * np.linalg.inv(noise.S)))  # E[Q⁻¹] = ν S⁻¹
print(f"pretrained latents' sd {scale:.3g}; recognition precisions J, median "
      f"{np.median(pots[0]):.3g}; LDS noise precisions (diagonal of E[Q⁻¹]), median "
      f"{np.median(precision):.3g}")
start = None
if args.init_weight > 0:  # each state's dynamics fitted to its k-means segments
    start = globals_from_segmentation(prior_globals(args.states, args.latent_dim, 5.0,
                                                    args.sticky, scale=scale,
                                                    affine=args.affine), x_tr,
                                      assign(x_tr), args.init_weight)
base = slds_svae_task(mc, tc0, args.states, S, T, num_sweeps=args.sweeps, sticky=args.sticky,
                      prior_scale=scale, initial_globals=start, affine=args.affine)
nets = {k: v for k, v in lds["params"].items() if k != "globals"}
task = dataclasses.replace(base, init=lambda key, d: {
    "params": {**base.init(key, d)["params"], **nets}})
slds = fit(task, args.steps, "SLDS-SVAE")
model = SLDSSVAE(mc, args.states, num_sweeps=args.sweeps, sticky=args.sticky,
                 prior_scale=scale, affine=args.affine)
start_marg = np.asarray(jax.vmap(lambda s: model.apply(
    {"params": {**nets, "globals": start if start is not None else slds["params"]["globals"]}},
    s, full, method="infer").qz.marginals)(y_test))
print("SLDS start (pretrained networks, initial q(θ)):",
      scores(start_marg.argmax(-1), bench.test.labels))
marg = np.asarray(jax.vmap(lambda s: model.apply(slds, s, full, method="infer").qz.marginals)(
    y_test))
print("SLDS-SVAE argmax q(z):", scores(marg.argmax(-1), bench.test.labels))
