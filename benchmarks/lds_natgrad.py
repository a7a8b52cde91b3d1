"""Natural-gradient report (Johnson et al. 2016, §4.2, Fig. 5a, on the 2023 headline LDS):
the LDS-SVAE with point-estimate dynamics (Adam, with the networks) against q(θ) = NIW × MNIW
by natural-gradient SVI, on the headline setting (D=3, N=5, q=r=0.1, 100 sequences of T=200),
seeds trained together in one program per configuration, all configurations in one run.

    .venv/bin/python benchmarks/lds_natgrad.py [--steps 20000] [--seeds 0 1 2]
        [--natgrad-steps 0.1 1.0] [--out benchmarks/results/lds_natgrad.json]

Configurations: ``point`` (today's SVAE), ``natgrad ρ`` for each step size, and ``oracle``:
q(θ) held concentrated at the generating LDS (step 0), so only the networks learn: how fast
the networks learn when θ needs no learning at all. The oracle's latent basis whitens the
exact recognition potential: x' = Λ^{1/2}Uᵀx with CᵀR⁻¹C = UΛUᵀ, so its precision is the
identity, diagonal as the SVAE's encoder outputs it and of order one, as a network starting
near zero outputs it (in the generator's own basis it is of order 1/r). ``--configs`` reruns some
configurations and keeps the other rows of an existing ``--out``.

Per run it records the held-out ELBO (a local ELBO for q(θ) models: a bound on
E_q(θ) log p(y | θ, γ), audited against the true marginal log-likelihood), its gap fraction,
the training-ELBO gap fraction by step (smoothed over ``--window`` logged chunks), the first
step reaching 90/95/99% of the training null→true gap, and the first step reaching the point
SVAE's final smoothed training ELBO of the same seed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from svae_core.datasets import LDSSetting, make_lds_benchmark
from svae_core.experiments.runs import reference_log_likelihoods, train_and_evaluate
from svae_core.inference import LDSPrior
from svae_core.models import ModelConfig
from svae_core.models.conjugate_svae import concentrated_globals
from svae_core.reporting import describe_device
from svae_core.training import TrainConfig

FRACTIONS = (0.9, 0.95, 0.99)


def smoothed(values, window):
    """Trailing moving average over ``window`` entries (the first entries padded)."""
    v = np.asarray(values, float)
    padded = np.concatenate([np.full(window - 1, v[0]), v])
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def first_step(steps, curve, threshold):
    hit = np.nonzero(curve >= threshold)[0]
    return int(steps[hit[0]]) if len(hit) else None


def oracle_prior(ssm) -> LDSPrior:
    """The generating LDS in the basis x' = Λ^{1/2}Uᵀx (CᵀR⁻¹C = UΛUᵀ), where the exact
    recognition potential CᵀR⁻¹(y − d) of one frame has precision I."""
    C, R = np.asarray(ssm.C, np.float64), np.asarray(ssm.R, np.float64)
    lam, U = np.linalg.eigh(C.T @ np.linalg.solve(R, C))
    S = np.sqrt(lam)[:, None] * U.T
    S_inv = U / np.sqrt(lam)[None, :]
    p = ssm.prior
    vec = lambda v: S @ np.asarray(v, np.float64)
    cov = lambda M: S @ np.asarray(M, np.float64) @ S.T
    return LDSPrior(vec(p.m1), cov(p.Q1), S @ np.asarray(p.A, np.float64) @ S_inv, vec(p.b),
                    cov(p.Q))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--natgrad-steps", type=float, nargs="+", default=[0.1, 1.0])
    ap.add_argument("--configs", nargs="+", default=None,
                    help="rerun only these configurations (point, natgrad, oracle)")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/lds_natgrad.json"))
    args = ap.parse_args()

    setting = LDSSetting(3, 5, 0.1, 0.1)
    bench = make_lds_benchmark(setting, 0, num_train=100, num_test=100, num_timesteps=200)
    y, y_test = np.asarray(bench.y_train), np.asarray(bench.y_test)
    true_tr, null_tr = reference_log_likelihoods(bench.ssm, y)
    mc = ModelConfig(latent_dim=3, obs_dim=5, smoother="sequential")
    tc = TrainConfig(steps=args.steps, batch_size=10, log_every=args.log_every)
    configs = [("point", dict(globals_mode="point"))]
    configs += [(f"natgrad {rho:g}", dict(globals_mode="natgrad", natgrad_step=rho))
                for rho in args.natgrad_steps]
    configs.append(("oracle", dict(globals_mode="natgrad", natgrad_step=0.0,
                                   initial_globals=concentrated_globals(
                                       oracle_prior(bench.ssm)))))
    names, kept_rows = [c[0] for c in configs], []
    if args.configs is not None:
        configs = [c for c in configs if c[0].split()[0] in args.configs]
        rerun = {c[0] for c in configs}
        if args.out.exists():
            kept_rows = [r for r in json.loads(args.out.read_text())["runs"]
                         if r["config"] not in rerun]
    rows = []
    for name, kwargs in configs:
        start = time.time()
        records = train_and_evaluate("svae", y, mc, tc, y_test=y_test, ssm=bench.ssm,
                                     seeds=args.seeds, progress=False, **kwargs).records
        wall = time.time() - start
        for rec in records:
            steps = np.asarray(rec["history"]["step"])
            curve = smoothed(rec["history"]["elbo"], args.window)
            gap = (curve - null_tr) / (true_tr - null_tr)
            rows.append({
                "config": name, "seed": rec["seed"], "test_elbo": rec["test_elbo"],
                "test_elbo_se": rec["test_elbo_se"], "gap_fraction": rec["gap_fraction"],
                "true_mll": rec["true_mll"], "null_ll": rec["null_ll"],
                "final_train_elbo": float(curve[-1]),
                "steps_to": {f"{f:g}": first_step(steps, gap, f) for f in FRACTIONS},
                "step": steps.tolist(), "train_gap_fraction": gap.round(5).tolist(),
                "seconds_per_step": rec["seconds_per_step"], "wall_seconds": wall,
            })
        fractions = ", ".join(f"{r['gap_fraction']:.4f}" for r in records)
        print(f"{name}: held-out gap fraction {fractions} ({wall:.0f} s)", flush=True)
    rows = sorted(kept_rows + rows, key=lambda r: (names.index(r["config"])
                                                   if r["config"] in names else len(names)))
    point_final = {r["seed"]: r["final_train_elbo"] for r in rows if r["config"] == "point"}
    for r in rows:
        curve = np.asarray(r["train_gap_fraction"]) * (true_tr - null_tr) + null_tr
        r["steps_to_point_final"] = first_step(np.asarray(r["step"]), curve,
                                               point_final[r["seed"]])
    report = {
        "setting": setting.name,
        "num_train": 100, "num_test": 100, "num_timesteps": 200, "data_seed": 0,
        "steps": args.steps, "seeds": args.seeds, "log_every": args.log_every,
        "window": args.window, "train_true_ll": true_tr, "train_null_ll": null_tr,
        "model_config": {"latent_dim": 3, "obs_dim": 5, "smoother": "sequential"},
        "learning_rate": tc.learning_rate, "device": describe_device()["summary"],
        "command": "benchmarks/lds_natgrad.py " + " ".join(
            f"--steps {args.steps} --seeds {' '.join(map(str, args.seeds))} "
            f"--natgrad-steps {' '.join(f'{r:g}' for r in args.natgrad_steps)}".split()),
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for r in rows:
        print(f"{r['config']:<12} seed {r['seed']}: held-out gap {r['gap_fraction']:.4f}; "
              f"steps to 90/95/99% {r['steps_to']}; to point's final ELBO "
              f"{r['steps_to_point_final']}")


if __name__ == "__main__":
    main()
