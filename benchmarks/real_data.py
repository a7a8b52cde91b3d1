"""Report: every model of the real-data chapter at the CLI's defaults (3,000 steps) on both
data sets and at D = 2, 4, 8, beside the linear SSM's exact likelihood; the chapter's
"all five posterior families" table and training curves read its output.

Runs :func:`svae_core.experiments.real_data.run` with the ``full`` profile's settings, or
with the seeds, latent sizes, models and steps given, and writes
``benchmarks/results/real_data.json``: the settings, the device, one row per (data set, D,
method) (:func:`~svae_core.experiments.real_data.summary_rows`) and each run's training
history and per-seed figures (no forecast bands).

    .venv/bin/python benchmarks/real_data.py [--seeds 0] [--latent 2 4 8] [--models ...]
        [--steps 3000] [--out benchmarks/results/real_data.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from svae_core.experiments import real_data as rd
from svae_core.models import MODELS
from svae_core.reporting import describe_device, save_results

HERE = Path(__file__).parent


def main(argv=None):
    full = rd.PROFILES["full"]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(full.seeds))
    ap.add_argument("--latent", type=int, nargs="+", default=list(full.latent_dims))
    ap.add_argument("--models", nargs="+", default=list(full.models), choices=sorted(MODELS))
    ap.add_argument("--datasets", nargs="+", default=list(full.datasets))
    ap.add_argument("--steps", type=int, default=full.steps)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "real_data.json")
    args = ap.parse_args(argv)
    settings = dataclasses.replace(full, seeds=tuple(args.seeds), latent_dims=tuple(args.latent),
                                   models=tuple(args.models), datasets=tuple(args.datasets),
                                   steps=args.steps)
    start = time.perf_counter()
    result = rd.run(settings, progress=False, log=lambda s: print(s, flush=True))
    runs = {name: {str(D): {m: {k: v for k, v in r.items() if k not in ("bands", "trace")}
                            for m, r in row.items()}
                   for D, row in by_d.items()}
            for name, by_d in result["results"].items()}
    given = sys.argv[1:] if argv is None else argv
    report = {"command": " ".join([".venv/bin/python benchmarks/real_data.py", *given]),
              "settings": result["settings"], "device": describe_device(),
              "seconds": time.perf_counter() - start, "rows": rd.summary_rows(result),
              "runs": runs, "claims": rd.claims(result)}
    path = save_results(args.out.stem, report, args.out.parent)
    for r in report["rows"]:
        print(f"{r['data']:16s} D={r['D']} {r['method']:10s} {r['test']:.4f} ± {r['se']:.4f} "
              f"({r['vs_linear']:+.4f}) forecast {r['predictive_ll']:.3f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
