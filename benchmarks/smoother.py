"""Benchmark: our Gaussian-chain smoother (sequential, parallel) vs dynamax (sequential, parallel).

Times the smoother forward pass and value_and_grad of (log-normalizer + Σ smoothed means) for a
batch of sequences (vmap), after a warm-up call; compile time is measured separately by
ahead-of-time lowering. Prints a Markdown table and writes JSON.

    .venv/bin/python benchmarks/smoother.py [--T 100 1000 10000] [--batch 10] [--dim 3]

dynamax receives the same problem as emissions y_t = J_t⁻¹h_t, H = I, R_t = J_t⁻¹
(converted once, outside the timed region).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from dynamax.linear_gaussian_ssm import inference as dx_seq
from dynamax.linear_gaussian_ssm import parallel_inference as dx_par

from svae_core.inference import GaussianPotentials, LDSPrior, lds_smoother
from svae_core.reporting import describe_device


def make_problem(T, dim, batch, seed=0):
    rng = np.random.default_rng(seed)
    angle = 0.3
    rot = np.eye(dim)
    rot[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    prior = LDSPrior(
        m1=jnp.asarray(rng.normal(size=dim), jnp.float32),
        Q1=jnp.eye(dim, dtype=jnp.float32),
        A=jnp.asarray(0.98 * rot, jnp.float32),
        b=jnp.asarray(0.1 * rng.normal(size=dim), jnp.float32),
        Q=jnp.asarray(0.1 * np.eye(dim), jnp.float32),
    )
    B = rng.normal(size=(batch, T, dim, dim)) * 0.3
    J = np.eye(dim) * 2.0 + np.einsum("btik,btjk->btij", B, B)
    h = rng.normal(size=(batch, T, dim))
    pots = GaussianPotentials(jnp.asarray(J, jnp.float32), jnp.asarray(h, jnp.float32))
    R = np.linalg.inv(J)
    y = np.einsum("btij,btj->bti", R, h)
    return prior, pots, jnp.asarray(y, jnp.float32), jnp.asarray(R, jnp.float32)


def dynamax_params(prior, R):
    dim = prior.m1.shape[0]
    return dx_seq.make_lgssm_params(
        prior.m1, prior.Q1, prior.A, prior.Q, jnp.eye(dim), R, dynamics_bias=prior.b
    )


def ours(method):
    def forward(prior, pots):
        post = lds_smoother(prior, pots, method=method)
        return post.mean, post.cov, post.log_normalizer

    def loss(prior, pots):
        post = lds_smoother(prior, pots, method=method)
        return post.log_normalizer + post.mean.sum()

    return forward, loss


def theirs(module):
    def forward(prior, y, R):
        post = module.lgssm_smoother(dynamax_params(prior, R), y)
        return post.smoothed_means, post.smoothed_covariances, post.marginal_loglik

    def loss(prior, y, R):
        post = module.lgssm_smoother(dynamax_params(prior, R), y)
        return post.marginal_loglik + post.smoothed_means.sum()

    return forward, loss


def time_fn(fn, args, repeats, compile_repeats):
    """(median ms per call after a warm-up call, median s to trace, lower and compile)."""
    compile_times = []
    for _ in range(compile_repeats):
        jax.clear_caches()  # or the second compile is a cache hit
        t0 = time.perf_counter()
        compiled = jax.jit(fn).lower(*args).compile()
        compile_times.append(time.perf_counter() - t0)
    compile_s = statistics.median(compile_times)
    jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, compile_s


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--dim", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--compile-repeats", type=int, default=3)
    ap.add_argument("--paths", nargs="+", default=None, help="subset of paths to run")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "smoother.json"))
    args = ap.parse_args()

    paths = {
        "ours sequential": ours("sequential"),
        "ours parallel": ours("parallel"),
        "dynamax sequential": theirs(dx_seq),
        "dynamax parallel": theirs(dx_par),
    }
    if args.paths:
        paths = {k: v for k, v in paths.items() if any(p in k for p in args.paths)}
    # Pay XLA's one-time start-up before anything is timed.
    jax.block_until_ready(jax.jit(lambda x: jnp.linalg.inv(x) @ x)(jnp.eye(3)))
    rows = []
    for T in args.T:
        prior, pots, y, R = make_problem(T, args.dim, args.batch)
        repeats = max(3, min(args.repeats, int(args.repeats * 1000 / T) + 3))
        for name, (forward, loss) in paths.items():
            data = (pots,) if name.startswith("ours") else (y, R)
            fwd = jax.vmap(forward, in_axes=(None,) + (0,) * len(data))

            def batch_loss(prior, *data, loss=loss):
                return jax.vmap(loss, in_axes=(None,) + (0,) * len(data))(prior, *data).sum()

            vg = jax.value_and_grad(batch_loss, argnums=tuple(range(1 + len(data))))
            fwd_ms, fwd_c = time_fn(fwd, (prior, *data), repeats, args.compile_repeats)
            vg_ms, vg_c = time_fn(vg, (prior, *data), repeats, args.compile_repeats)
            row = dict(T=T, path=name, fwd_ms=fwd_ms, fwd_compile_s=fwd_c, vg_ms=vg_ms,
                       vg_compile_s=vg_c, repeats=repeats)
            rows.append(row)
            print(f"T={T:>6} {name:<20} fwd {fwd_ms:9.2f} ms [{fwd_c:5.1f} s]  "
                  f"value+grad {vg_ms:9.2f} ms [{vg_c:5.1f} s]", flush=True)

    device_info = describe_device()
    device = device_info["summary"]
    lines = [
        f"Device: {device}; float32; batch {args.batch} (vmap), "
        f"D={args.dim}. Median ms per call after warm-up [median s to trace and compile, "
        f"{args.compile_repeats} fresh compiles]; speed-up = dynamax / ours on the same path; "
        "compile ratio = ours / dynamax.",
        "",
        "| T | path | forward ms [compile s] | value+grad ms [compile s] "
        "| fwd speed-up | v+g speed-up | compile ratio (fwd, v+g) |",
        "|---|---|---|---|---|---|---|",
    ]
    by = {(r["T"], r["path"]): r for r in rows}
    for T in args.T:
        for kind in ("sequential", "parallel"):
            if (T, f"ours {kind}") not in by or (T, f"dynamax {kind}") not in by:
                continue
            o, d = by[(T, f"ours {kind}")], by[(T, f"dynamax {kind}")]
            for r in (o, d):
                extra = ""
                if r is o:
                    extra = (
                        f" {d['fwd_ms'] / o['fwd_ms']:.2f}× | {d['vg_ms'] / o['vg_ms']:.2f}× | "
                        f"{o['fwd_compile_s'] / d['fwd_compile_s']:.2f}, "
                        f"{o['vg_compile_s'] / d['vg_compile_s']:.2f} |"
                    )
                else:
                    extra = " | | |"
                lines.append(
                    f"| {T} | {r['path']} | {r['fwd_ms']:.2f} [{r['fwd_compile_s']:.1f}] | "
                    f"{r['vg_ms']:.2f} [{r['vg_compile_s']:.1f}] |{extra}"
                )
    table = "\n".join(lines)
    print()
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(device=device_info, batch=args.batch,
                                   dim=args.dim, rows=rows, table=table), indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
