"""Where an SVAE training step's time goes, beside RNN-MF's (Timing chapter's setting: batch 10,
D = 3, N = 5, GRU width 10, T = 1000 by default).

    .venv/bin/python benchmarks/investigations/svae_step_breakdown.py [--T 1000] [--repeats 21]

Times the forward pass and the gradient (in the model parameters) of the batch ELBO and of
its parts: the SVAE's KL term alone (filter + smoother), its reconstruction term alone
(filter + backward sampler) and the log-normalizer alone (filter only). Median ms per
compiled call, all in one process so the ratios compare like with like.
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp

from svae_core.datasets import LDSSetting, make_lds_benchmark
from svae_core.experiments.timing import time_compiled
from svae_core.inference import lds_filter
from svae_core.models import ModelConfig, build_model
from svae_core.reporting import describe_device
from svae_core.training import batch_elbo


def log_normalizer(model, y, mask):
    """Batch mean of the SVAE's log-normalizer: the filter's forward pass only."""

    def one(params, yi, mi):
        body = lambda m: lds_filter(m.prior(), m.potentials(yi, mi),
                                    method=m.config.smoother).log_normalizer
        return nn.apply(body, model)(params)

    return lambda params: jax.vmap(one, in_axes=(None, 0, 0))(params, y, mask).mean()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args(argv)

    data = make_lds_benchmark(LDSSetting(3, 5, 0.1, 0.1), 0, num_train=10, num_test=1,
                              num_timesteps=args.T)
    y = jnp.asarray(data.y_train)
    mask = jnp.ones(y.shape[:2], bool)
    key = jax.random.PRNGKey(0)
    rows = []
    for name, model_name, smoother in [("SVAE (sequential)", "svae", "sequential"),
                                       ("RNN-MF", "rnn_mf", None)]:
        config = ModelConfig(3, 5, rnn_hidden=10,
                             **({"smoother": smoother} if smoother else {}))
        model = build_model(model_name, config)
        params = model.init(key, y[0], mask[0], key)
        term = lambda field, m=model: (
            lambda p: getattr(batch_elbo(m, p, y, mask, key, 1), field))
        parts = {f"{name}: ELBO": term("elbo")}
        if model_name == "svae":  # jit drops the passes a lone term does not use
            parts |= {"SVAE: KL term (filter + smoother) only": term("kl"),
                      "SVAE: reconstruction (filter + sampler) only": term("reconstruction"),
                      "SVAE: log-normalizer (filter) only": log_normalizer(model, y, mask)}
        for what, fn in parts.items():
            rows.append((what, time_compiled(fn, (params,), args.repeats)[0],
                         time_compiled(jax.grad(fn), (params,), args.repeats)[0]))
    print(f"{describe_device()['summary']}; T = {args.T}, batch 10, D = 3, N = 5; "
          f"median ms of {args.repeats} calls\n")
    print("| what | forward ms | gradient ms |\n|---|---|---|")
    for what, fwd, grad in rows:
        print(f"| {what} | {fwd:.2f} | {grad:.2f} |")


if __name__ == "__main__":
    main()
