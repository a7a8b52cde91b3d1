"""Seconds per training step of every model at one sequence length (paper Fig. 3 setting:
batch of 10 sequences, D = 3, N = 5, GRU width 10, CNN kernel 10), median over compiled
calls after the one that compiles (:func:`svae_core.experiments.timing.time_train_step`).

    .venv/bin/python benchmarks/train_step.py [--T 1000] [--repeats 10]

Prints a Markdown table with each model's time and its ratio to the faster SVAE; writes JSON.
The Timing chapter of the book runs the same measurement across T.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from svae_core.experiments.timing import STEP_VARIANTS, time_train_step
from svae_core.reporting import describe_device


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=10, help="timed calls of 2 steps each")
    ap.add_argument("--variants", nargs="+", default=list(STEP_VARIANTS),
                    choices=list(STEP_VARIANTS))
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "train_step.json")
    args = ap.parse_args()
    rows = {}
    for label in args.variants:
        model, smoother = STEP_VARIANTS[label]
        rows[label] = time_train_step(model, args.T, smoother=smoother,
                                      repeats=args.repeats)["median_s"]
        print(f"{label:<22} {1e3 * rows[label]:8.2f} ms/step", flush=True)
    ref = min(v for k, v in rows.items() if k.startswith("SVAE"))
    device = describe_device()["summary"]
    lines = [f"T = {args.T}, batch 10, D = 3, N = 5, float32; {device}. Median ms per training "
             f"step (value_and_grad + Adam) over {args.repeats} compiled calls; ratio = model "
             "/ faster SVAE.", "", "| model | ms/step | ratio |", "|---|---|---|"]
    lines += [f"| {k} | {1e3 * v:.2f} | {v / ref:.1f}× |" for k, v in rows.items()]
    table = "\n".join(lines)
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"T": args.T, "device": device, "seconds_per_step": rows,
                                    "table": table}, indent=2))


if __name__ == "__main__":
    main()
