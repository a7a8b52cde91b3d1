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
from pathlib import Path

import jax
import jax.numpy as jnp

from svae_core.experiments.timing import time_smoother
from svae_core.reporting import describe_device

PATHS = ("ours sequential", "ours parallel", "dynamax sequential", "dynamax parallel")


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

    paths = [p for p in PATHS if not args.paths or any(q in p for q in args.paths)]
    # Pay XLA's one-time start-up before anything is timed.
    jax.block_until_ready(jax.jit(lambda x: jnp.linalg.inv(x) @ x)(jnp.eye(3)))
    rows = []
    for T in args.T:
        repeats = max(3, min(args.repeats, int(args.repeats * 1000 / T) + 3))
        for name in paths:
            row = time_smoother(name, T, dim=args.dim, batch=args.batch, repeats=repeats,
                                compile_repeats=args.compile_repeats)
            rows.append(row)
            print(f"T={T:>6} {name:<20} fwd {row['fwd_ms']:9.2f} ms [{row['fwd_compile_s']:5.1f}"
                  f" s]  value+grad {row['vg_ms']:9.2f} ms [{row['vg_compile_s']:5.1f} s]",
                  flush=True)

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
