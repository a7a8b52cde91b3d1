"""Seconds per training step of every model at one sequence length (paper Fig. 3 setting:
batch of 10 sequences, D = 3, N = 5), measured with the Trainer after compilation.

    .venv/bin/python benchmarks/train_step.py [--T 1000] [--steps 60]

Prints a Markdown table with each model's time and its ratio to the SVAE's; writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from svae_core.datasets import LDSSetting, make_lds_benchmark
from svae_core.models import MODELS, ModelConfig, build_model
from svae_core.reporting import describe_device
from svae_core.training import TrainConfig, Trainer


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=60, help="first chunk (compile) not timed")
    ap.add_argument("--chunk", type=int, default=20)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "train_step.json")
    args = ap.parse_args()
    data = make_lds_benchmark(LDSSetting(3, 5, 0.1, 0.1), 0, num_train=20, num_test=1,
                              num_timesteps=args.T)
    cfg = TrainConfig(steps=args.steps, batch_size=10, log_every=args.chunk)
    rows = {}
    for name in args.models:
        smoothers = ["parallel", "sequential"] if name == "svae" else [None]
        for smoother in smoothers:
            label = name if smoother is None else f"{name} ({smoother})"
            config = ModelConfig(3, 5, **({"smoother": smoother} if smoother else {}))
            trainer = Trainer(build_model(name, config), data.y_train, cfg)
            result = trainer.fit(trainer.init_runs([0]), progress=False)
            rows[label] = result.seconds_per_step
            print(f"{label:<22} {1e3 * result.seconds_per_step:8.2f} ms/step", flush=True)
    ref = min(v for k, v in rows.items() if k.startswith("svae"))
    device = describe_device()["summary"]
    lines = [f"T = {args.T}, batch 10, D = 3, N = 5, float32; {device}. ms per training step "
             f"(value_and_grad + Adam), mean over {args.steps - args.chunk} steps after "
             "compilation; ratio = model / fastest SVAE.", "",
             "| model | ms/step | ratio |", "|---|---|---|"]
    lines += [f"| {k} | {1e3 * v:.2f} | {v / ref:.1f}× |" for k, v in rows.items()]
    table = "\n".join(lines)
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"T": args.T, "device": device, "seconds_per_step": rows,
                                    "table": table}, indent=2))


if __name__ == "__main__":
    main()
