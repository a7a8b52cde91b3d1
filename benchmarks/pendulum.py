"""Pendulum report (Zhao & Linderman 2023, §4.3, appendix B) at a chosen training length:
linear decodability, predictive log-likelihood and the masking ablation, on our rendered video.

    .venv/bin/python benchmarks/pendulum.py --steps 3000 --models svae rnn_ar_l \
        [--latent-dims 3] [--no-mask-models svae] [--num-test 40] [--seeds 0 1 2 3 4]
    .venv/bin/python benchmarks/pendulum.py --merge a.json b.json --out ab.json
    .venv/bin/python benchmarks/pendulum.py --combine a.json b.json --out pendulum.json

``--combine`` joins reports of different models or latent sizes under one configuration into
the chapter's canonical report (:func:`svae_core.experiments.tables.combine_reports`);
``--merge`` joins reports that trained disjoint seeds of the same configuration into one
(:func:`svae_core.experiments.tables.merge_reports`), so more seeds can be run in parts.

Each (model, D, masking) run is :func:`svae_core.experiments.pendulum.run_cell`, cached as JSON
in ``--cache-dir`` (large: it holds the forecast frames; not committed). The metrics of every
run go to ``--out`` (committed), with the configuration and device, and are printed as the
chapter's tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from svae_core.experiments import pendulum, tables
from svae_core.experiments.pendulum import PendulumConfig
from svae_core.models import DYNAMICS_INITS, MODELS

HERE = Path(__file__).parent


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["svae", "rnn_ar_l"], choices=sorted(MODELS))
    ap.add_argument("--latent-dims", nargs="+", type=int, default=[3])
    ap.add_argument("--no-mask-models", nargs="*", default=["svae"], choices=sorted(MODELS),
                    help="also train these without masking (appendix B's ablation)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0],
                    help="trained together; the best by training ELBO is kept, every seed's "
                         "decodability is reported")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--lr-decay-start", type=int, default=0,
                    help="step where a cosine decay of the rate begins (0: constant rate)")
    ap.add_argument("--lr-decay-steps", type=int, default=1000)
    ap.add_argument("--num-test", type=int, default=40)
    ap.add_argument("--mask-fraction", type=float, default=0.4,
                    help="longest hidden block of a masked run, as a fraction of the sequence "
                         "(0.4: the paper's)")
    ap.add_argument("--friction", type=float, default=PendulumConfig.friction,
                    help="γ in s⁻¹ of the rendered swings (default: the chapter's damped "
                         "video; 0 for frictionless swings)")
    ap.add_argument("--dynamics-init", default="decay", choices=DYNAMICS_INITS,
                    help="the prior's initial A (see ModelConfig.dynamics_init)")
    ap.add_argument("--select", default="train_elbo", choices=pendulum.SELECTION_RULES,
                    help="which seed is kept: best training ELBO or best predictive "
                         "log-likelihood on training sequences")
    ap.add_argument("--cache-dir", type=Path, default=HERE / "results" / "pendulum_cache")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "pendulum.json")
    ap.add_argument("--params-dir", type=Path,
                    help="save each kept seed's trained parameters here (msgpack, with the "
                         "command that made them), for the chapter to load")
    ap.add_argument("--combine", nargs="+", type=Path, metavar="JSON",
                    help="join these reports (different models or D, same configuration) into "
                         "the chapter's canonical report instead of training")
    ap.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                    help="join these reports (disjoint seeds, same configuration) instead of "
                         "training")
    args = ap.parse_args(argv)
    if args.combine:
        try:
            parts = [json.loads(p.read_text()) for p in args.combine]
            report = tables.combine_reports({r.get("command", p.name): r
                                             for p, r in zip(args.combine, parts, strict=True)})
        except (OSError, ValueError) as e:
            ap.error(str(e))
        print(tables.pendulum_report(report, args.out.name))
        write(args.out, report)
        return
    if args.merge:
        try:
            report = tables.merge_reports([json.loads(p.read_text()) for p in args.merge])
        except (OSError, ValueError) as e:
            ap.error(str(e))
        print(tables.pendulum_report(report, args.out.name))
        write(args.out, report)
        return

    config = PendulumConfig(steps=args.steps, learning_rate=args.lr,
                                     seeds=tuple(args.seeds),
                                     lr_decay_start=args.lr_decay_start,
                                     lr_decay_steps=args.lr_decay_steps,
                                     friction=args.friction, mask_fraction=args.mask_fraction,
                                     dynamics_init=args.dynamics_init, select=args.select,
                                     num_test=args.num_test, num_pll_sequences=args.num_test)
    unmasked_config = dataclasses.replace(config, mask_fraction=0.0)
    command = "benchmarks/pendulum.py " + " ".join(argv if argv is not None else sys.argv[1:])
    saved = dict(params_dir=args.params_dir, command=command)
    masked = pendulum.run_cells(args.models, args.latent_dims, config, args.cache_dir, **saved)
    unmasked = pendulum.run_cells(args.no_mask_models, args.latent_dims, unmasked_config,
                                  args.cache_dir, **saved) if args.no_mask_models else []

    print("\nMasked training (the paper's protocol):\n")
    print(tables.pendulum_table(masked))
    if seeds := tables.seeds_table(masked, rule=args.select):
        print(f"\nSeeds:\n\n{seeds}")
    if unmasked:
        print("\nMasking ablation:\n")
        print(tables.pendulum_masking_table(masked, unmasked))
    keep = lambda cells: [{k: c[k] for k in ("model", "latent_dim", *pendulum.METRICS,
                                             "device", "seed", "per_seed") if k in c}
                          for c in cells]
    write(args.out, {"command": command, "config": dataclasses.asdict(config),
                     "masked": keep(masked),
                     "unmasked": keep(unmasked), "paper_table2": pendulum.PAPER_TABLE2})


def write(path, report):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
