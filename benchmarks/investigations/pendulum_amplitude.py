"""Does the swing amplitude decide whether a 3-D SVAE latent encodes angular velocity?

    .venv/bin/python benchmarks/investigations/pendulum_amplitude.py [--steps 3000]
        [--max-angles 45 162] [--friction 0.1] [--out benchmarks/results/pendulum_amplitude.json]
        (rows already there are reused)

A diagnostic beside the Pendulum chapter (not one of the paper's experiments). For each
largest initial angle (degrees) the rendered data set is regenerated with only that changed,
an SVAE with D = 3 is trained with the chapter's masking and learning rate, and the held-out
R² of the linear read-outs (Fig. 4) is printed, together with the velocity R² within thirds
of the test sequences sorted by swing amplitude (the read-out fit on all training sequences).
A linear prior has one set of frequencies, while a pendulum's period grows with its
amplitude (by 18% at 90°, 2.1× at 162°); if that mismatch is what hides the velocity, the
small-swing data set should decode it and the large swings should be the worst third.
``--friction γ`` (s⁻¹) renders damped swings instead, as the RKN generator can; its rows are
kept beside the frictionless ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from svae_core.evaluation import linear_decoding_r2
from svae_core.experiments.pendulum import (
    PendulumConfig,
    dataset,
    linear_decodability,
    train_best,
)
from svae_core.reporting import describe_device

HERE = Path(__file__).parent


def amplitude(data, g_over_l):
    """(S,) initial swing amplitude in rad of each sequence, from its initial energy."""
    energy = 0.5 * data.velocity[:, 0] ** 2 - g_over_l * np.cos(data.angle[:, 0])
    return np.arccos(np.clip(-energy / g_over_l, -1.0, 1.0))


def run(max_angle_deg, friction, config: PendulumConfig):
    bench, y_train, y_test = dataset(config, max_angle=math.radians(max_angle_deg),
                                     friction=friction)
    model, params, best = train_best("svae", 3, config, y_train, y_test)
    r2, m_train, m_test = linear_decodability(model, params, bench, y_train, y_test)

    # Velocity R² per amplitude third of the test set, with the read-out fit on all of train.
    g = bench.config["g_over_l"]
    amp = amplitude(bench.test, g)
    thirds = np.array_split(np.argsort(amp), 3)
    by_third = []
    for idx in thirds:
        r2_third = linear_decoding_r2(m_train, bench.train.velocity, m_test[idx],
                                      bench.test.velocity[idx])
        by_third.append({"amplitude_deg": [float(np.degrees(amp[idx].min())),
                                           float(np.degrees(amp[idx].max()))],
                         "r2_velocity": float(r2_third)})
    return {"max_angle_deg": max_angle_deg, "friction": friction, **r2,
            "test_elbo": best["test_elbo"],
            "velocity_r2_by_amplitude_third": by_third, "steps": config.steps,
            "seconds_per_step": best["seconds_per_step"], "device": best["device"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--max-angles", nargs="+", type=float, default=[45.0, 162.0],
                    help="largest initial angle per data set, degrees (default data: 162)")
    ap.add_argument("--friction", type=float, default=0.0, help="γ in s⁻¹ (default 0)")
    ap.add_argument("--num-test", type=int, default=40)
    ap.add_argument("--out", type=Path, default=HERE.parent / "results" / "pendulum_amplitude.json")
    args = ap.parse_args(argv)
    # frictionless by default: the diagnostic's question is about undamped swings
    config = PendulumConfig(steps=args.steps, num_test=args.num_test, friction=0.0)
    # Rows already in --out for the same configuration are kept and not rerun (fields the
    # configuration gained since take their defaults), unless they lack a metric added since.
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    as_json = lambda c: json.loads(json.dumps(c))  # tuples become lists, as in the file
    old_config = {**as_json(dataclasses.asdict(PendulumConfig())), **old.get("config", {})}
    rows = old.get("rows", []) if old_config == as_json(dataclasses.asdict(config)) else []
    same = lambda r, a: (r["max_angle_deg"], r.get("friction", 0.0)) == (a, args.friction)
    for a in args.max_angles:
        if any(same(r, a) and "r2_theta" in r for r in rows):
            r = next(r for r in rows if same(r, a))
        else:
            rows = [r for r in rows if not same(r, a)]
            rows.append(run(a, args.friction, config))
            r = rows[-1]
        thirds = ", ".join(f"{t['amplitude_deg'][0]:.0f}–{t['amplitude_deg'][1]:.0f}°: "
                           f"{t['r2_velocity']:.3f}" for t in r["velocity_r2_by_amplitude_third"])
        print(f"max angle {a:5.1f}°, friction {args.friction:g}  R² angle "
              f"{r['r2_angle']:.3f}  θ {r['r2_theta']:.3f}  velocity {r['r2_velocity']:.3f}  "
              f"(by amplitude third: {thirds})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows.sort(key=lambda r: (r.get("friction", 0.0), r["max_angle_deg"]))
    args.out.write_text(json.dumps({"config": dataclasses.asdict(config), "rows": rows,
                                    "device": describe_device()["summary"]}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
