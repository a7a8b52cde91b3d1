"""LDS-grid report (Zhao & Linderman 2023, §4.1, Fig. 2, appendix A): every model on every
setting, trained and evaluated through the CLI, summarised as the percentage of the
null→true gap covered on the held-out set.

    .venv/bin/python benchmarks/lds_grid.py --steps 2000 [--settings D3_N5_q0.1_r0.1 ...]
        [--models svae rnn_mf ...] [--out-dir benchmarks/results/lds_grid]

Each (setting, model) is one ``python -m svae_core train`` run whose JSON lands in out-dir;
runs whose JSON exists are reused (delete it to rerun). Prints the chapter's tables of them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from svae_core.datasets import LDS_GRID, LDS_SETTINGS
from svae_core.experiments import lds_grid, tables
from svae_core.models import MODEL_LABELS, MODELS


def run_one(setting, model, args, out_dir):
    out = out_dir / f"{setting.name}__{model}.json"
    if out.exists():
        return json.loads(out.read_text())
    cmd = [
        sys.executable, "-m", "svae_core", "train", "--model", model, "--data", "lds",
        "--latent-dim", str(setting.latent_dim), "--obs-dim", str(setting.obs_dim),
        "--q", str(setting.q), "--r", str(setting.r), "--num-train", str(args.num_train),
        "--steps", str(args.steps), "--seed", str(args.seed), "--lr", str(args.lr),
        "--out", str(out), "--no-progress", *args.extra,
    ]
    if model != "svae" and args.baseline_mask_after:
        cmd += ["--mask-after", str(args.baseline_mask_after)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"FAILED {setting.name} {model}: {proc.stderr.strip()[-2000:]}", flush=True)
        return None
    res = json.loads(out.read_text())
    print(f"{setting.name:<22} {model:<10} test ELBO {res['test_elbo']:.4f} ± "
          f"{res['test_elbo_se']:.4f}  gap {100 * res['gap_fraction']:6.1f}%  "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=[s.name for s in LDS_GRID])
    ap.add_argument("--models", nargs="+", default=list(MODEL_LABELS),
                    choices=sorted(MODELS))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--num-train", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline-mask-after", type=int, default=None,
                    help="unmasked warm-up steps for the RNN/CNN families (default: steps/4)")
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results" / "lds_grid")
    ap.add_argument("extra", nargs="*", help="more CLI flags, after --")
    args = ap.parse_args()
    if args.baseline_mask_after is None:
        args.baseline_mask_after = args.steps // 4
    args.out_dir.mkdir(parents=True, exist_ok=True)
    unknown = [s for s in args.settings if s not in LDS_SETTINGS]
    if unknown:
        ap.error(f"unknown settings {unknown}; choose from {sorted(LDS_SETTINGS)}")

    for name in args.settings:
        for model in args.models:
            run_one(LDS_SETTINGS[name], model, args, args.out_dir)

    cells = [c for c in lds_grid.load_cli_results(args.out_dir)
             if c["setting"] in args.settings and c["model"] in args.models]
    print(f"\n{args.out_dir}: steps {args.steps}, lr {args.lr}, seed {args.seed}, "
          f"{args.num_train} training sequences; % of the null→true gap (test ELBO ± MC s.e.)\n")
    print(tables.gap_table(cells))
    if any(c["setting"] in lds_grid.PAPER_TABLE1 for c in cells):
        print("\n" + tables.paper_table1(cells))

if __name__ == "__main__":
    main()
