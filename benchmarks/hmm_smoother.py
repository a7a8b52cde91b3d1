"""Benchmark: our HMM smoother (sequential, parallel) vs dynamax (sequential, parallel).

Times, for a batch of sequences (vmap) after a warm-up call:
  fwd   the smoother with all its outputs: ours returns the per-step pair marginals
        (T−1, K, K); dynamax's time-invariant smoothers return them summed over t (K, K),
        so ours writes T·K² more numbers;
  marg  the smoother's marginals and log-normalizer only (the same quantities on every
        path; jit drops everything else);
  stats marginals, log-normalizer and the pair marginals summed over t (K, K; ours: the
        posterior's transition_counts): the expected statistics an EM or SVI step needs,
        and the same quantities on every path;
  v+g   (with --vg) value_and_grad of Σ_batch [log-normalizer + Σ_t Σ_k marginals[t, k]·k/K]
        in the initial, transition and potential log-parameters. Off by default: dynamax's
        parallel smoother differentiates through a gradient, and at K = 30, T = 10 000 one
        such call takes ~15 s and its compile ~1 min on a 2-core CPU.
Compile time is measured separately by ahead-of-time lowering. Prints a Markdown table and
writes JSON.

    .venv/bin/python benchmarks/hmm_smoother.py [--K 5 30] [--T 100 1000 10000] [--batch 10]
        [--vg] [--paths ours "dynamax sequential"]

dynamax receives the same normalised model: initial_probs = exp(log_initial), transition_matrix
= exp(log_transitions) and log_likelihoods = log_potentials (its ``hmm_smoother`` in
``hidden_markov_model.inference`` and ``hidden_markov_model.parallel_inference``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from svae_core.experiments.timing import time_compiled
from svae_core.inference import hmm_smoother
from svae_core.reporting import describe_device

#: Seconds of timed calls per case at most (slow cases get fewer repeats, at least 3).
BUDGET_S = 4.0

PATHS = ("ours sequential", "ours parallel", "dynamax sequential", "dynamax parallel")


def hmm_problem(num_states: int, num_timesteps: int, batch: int, seed: int = 0):
    """A batch of smoothing problems: log_initial (K,), log_transitions (K, K) (a sticky,
    normalised random matrix), log_potentials (B, T, K) (Gaussian emission log-likelihoods
    of noisy observations of a sampled path)."""
    rng = np.random.default_rng(seed)
    K = num_states
    trans = 0.8 * np.eye(K) + 0.2 * rng.dirichlet(np.ones(K), size=K)
    init = rng.dirichlet(np.ones(K))
    means = rng.normal(size=K) * 2.0
    z = np.zeros((batch, num_timesteps), int)
    z[:, 0] = rng.choice(K, size=batch, p=init)
    cum = np.cumsum(trans, 1)
    for t in range(1, num_timesteps):
        u = rng.random(batch)
        z[:, t] = np.minimum((u[:, None] > cum[z[:, t - 1]]).sum(1), K - 1)
    y = means[z] + rng.normal(size=z.shape)
    log_potentials = -0.5 * (y[..., None] - means) ** 2
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    return f32(np.log(init)), f32(np.log(trans)), f32(log_potentials)


def hmm_functions(path: str):
    """(forward, marginals, stats, loss) of one path on one sequence; forward returns the
    path's full posterior, marginals (marginals, log-normalizer), stats those and the pair
    marginals summed over t, loss is what value_and_grad times."""
    kind, method = path.split()
    if kind == "ours":
        def forward(log_initial, log_transitions, log_potentials):
            return hmm_smoother(log_initial, log_transitions, log_potentials, method=method)
    else:
        # dynamax is the test oracle, an optional dependency (extra "oracle").
        from dynamax.hidden_markov_model import inference as dx_seq
        from dynamax.hidden_markov_model import parallel_inference as dx_par

        module = dx_seq if method == "sequential" else dx_par

        def forward(log_initial, log_transitions, log_potentials):
            return module.hmm_smoother(jnp.exp(log_initial), jnp.exp(log_transitions),
                                       log_potentials)

    def marginals(*args):
        post = forward(*args)
        if kind == "ours":
            return post.marginals, post.log_normalizer
        return post.smoothed_probs, post.marginal_loglik

    def stats(*args):
        post = forward(*args)
        if kind == "ours":
            return post.marginals, post.log_normalizer, post.transition_counts
        return post.smoothed_probs, post.marginal_loglik, post.trans_probs

    def loss(*args):
        probs, log_z = marginals(*args)
        K = probs.shape[-1]
        return log_z + jnp.sum(probs * (jnp.arange(K) / K))

    return forward, marginals, stats, loss


def time_hmm(path: str, num_states: int, num_timesteps: int, *, batch: int = 10,
             repeats: int = 10, compile_repeats: int = 1, vg: bool = False) -> dict:
    """fwd, marg and (if ``vg``) value_and_grad timings of one path on a vmapped batch
    (medians, ms) and the fwd and v+g compile times (medians, s); v+g entries are None
    without ``vg``."""
    log_initial, log_transitions, log_potentials = hmm_problem(num_states, num_timesteps, batch)
    args = (log_initial, log_transitions, log_potentials)
    forward, marginals, stats, loss = hmm_functions(path)
    batched = lambda f: jax.vmap(f, in_axes=(None, None, 0))

    def batch_loss(*args):
        return batched(loss)(*args).sum()

    fwd_ms, fwd_c = time_compiled(batched(forward), args, repeats, compile_repeats, BUDGET_S)
    marg_ms, _ = time_compiled(batched(marginals), args, repeats, 1, BUDGET_S)
    stats_ms, _ = time_compiled(batched(stats), args, repeats, 1, BUDGET_S)
    vg_ms = vg_c = None
    if vg:
        vg_ms, vg_c = time_compiled(jax.value_and_grad(batch_loss, argnums=(0, 1, 2)), args,
                                    repeats, compile_repeats, BUDGET_S)
    return dict(K=num_states, T=num_timesteps, path=path, fwd_ms=fwd_ms, fwd_compile_s=fwd_c,
                marg_ms=marg_ms, stats_ms=stats_ms, vg_ms=vg_ms, vg_compile_s=vg_c, repeats=repeats)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--K", type=int, nargs="+", default=[5, 30])
    ap.add_argument("--T", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--compile-repeats", type=int, default=1)
    ap.add_argument("--vg", action="store_true", help="also time value_and_grad")
    ap.add_argument("--paths", nargs="+", default=None, help="subset of paths to run")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "hmm_smoother.json"))
    args = ap.parse_args()

    paths = [p for p in PATHS if not args.paths or any(q in p for q in args.paths)]
    # Pay XLA's one-time start-up before anything is timed.
    jax.block_until_ready(jax.jit(lambda x: jax.nn.logsumexp(x @ x))(jnp.eye(3)))
    rows = []
    for K in args.K:
        for T in args.T:
            repeats = max(3, min(args.repeats, int(args.repeats * 1000 / T) + 3))
            for name in paths:
                row = time_hmm(name, K, T, batch=args.batch, repeats=repeats,
                               compile_repeats=args.compile_repeats, vg=args.vg)
                rows.append(row)
                vg = (f"  value+grad {row['vg_ms']:9.2f} ms [{row['vg_compile_s']:5.1f} s]"
                      if args.vg else "")
                print(f"K={K:>3} T={T:>6} {name:<20} fwd {row['fwd_ms']:9.2f} ms "
                      f"[{row['fwd_compile_s']:5.1f} s]  marg {row['marg_ms']:9.2f} ms  "
                      f"stats {row['stats_ms']:9.2f} ms{vg}",
                      flush=True)

    device_info = describe_device()
    device = device_info["summary"]
    lines = [
        f"Device: {device}; float32; batch {args.batch} (vmap). Median ms per call after "
        f"warm-up [median s to trace and compile, {args.compile_repeats} fresh compile(s)]; "
        "fwd = all outputs (ours: pair marginals per step, (T−1, K, K); dynamax: summed, "
        "(K, K)), marg = marginals + log-normalizer only, stats = those + pair marginals "
        "summed over t"
        + (", v+g = value_and_grad" if args.vg else "") + "; speed-up = dynamax / ours on "
        "the same path (> 1: ours faster).",
        "",
        "| K | T | path | fwd ms [compile s] | marg ms | stats ms |"
        + (" v+g ms [compile s] |" if args.vg else "")
        + " fwd speed-up | marg speed-up | stats speed-up |"
        + (" v+g speed-up |" if args.vg else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if args.vg else ""),
    ]
    metrics = ("fwd", "marg", "stats", "vg") if args.vg else ("fwd", "marg", "stats")
    by = {(r["K"], r["T"], r["path"]): r for r in rows}
    ratios = []
    for K in args.K:
        for T in args.T:
            for kind in ("sequential", "parallel"):
                if (K, T, f"ours {kind}") not in by or (K, T, f"dynamax {kind}") not in by:
                    continue
                o, d = by[(K, T, f"ours {kind}")], by[(K, T, f"dynamax {kind}")]
                ratio = {m: d[f"{m}_ms"] / o[f"{m}_ms"] for m in metrics}
                ratios.append(dict(K=K, T=T, method=kind, **{f"{m}_speedup": v
                                                             for m, v in ratio.items()}))
                for r in (o, d):
                    cells = [f"{r['fwd_ms']:.2f} [{r['fwd_compile_s']:.1f}]", f"{r['marg_ms']:.2f}",
                             f"{r['stats_ms']:.2f}"]
                    if args.vg:
                        cells.append(f"{r['vg_ms']:.2f} [{r['vg_compile_s']:.1f}]")
                    cells += [f"{ratio[m]:.2f}×" if r is o else "" for m in metrics]
                    lines.append(f"| {K} | {T} | {r['path']} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print()
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = dict(K=args.K, T=args.T, batch=args.batch, repeats=args.repeats,
                  compile_repeats=args.compile_repeats, vg=args.vg, paths=paths,
                  dtype="float32", timing="median after a warm-up call; calls slower than "
                  "4 s / repeats get fewer repeats (at least 3)")
    out.write_text(json.dumps(dict(config=config, device=device_info, rows=rows,
                                   ratios=ratios, table=table), indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
