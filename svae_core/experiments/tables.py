"""Markdown tables of the chapters' results and the merging of report files: the one place
where results are formatted for reading. The experiment drivers (:mod:`.lds_grid`,
:mod:`.pendulum`) compute and return plain dicts; this module turns them, or the JSON reports
the ``benchmarks/`` scripts write, into tables for the book and the terminal.

    print(gap_table(cells))                       # LDS grid: % of the null→true gap
    print(pendulum_report(report, "pendulum.json"))  # a pendulum report, every table
"""

from __future__ import annotations

import dataclasses

import numpy as np

from svae_core.experiments.lds_grid import MODEL_ORDER, PAPER_TABLE1, _by_setting, svae_is_best
from svae_core.experiments.pendulum import PAPER_TABLE2, PendulumConfig
from svae_core.models import MODEL_LABELS

# ----------------------------------------------------------------------------- LDS grid


def gap_table(cells, models=MODEL_ORDER) -> str:
    """Markdown: one row per setting; % of the null→true gap (test ELBO ± MC s.e.)."""
    rows = _by_setting(cells)
    models = [m for m in models if any(m in r for r in rows.values())]
    lines = ["| setting | true MLL | null | " + " | ".join(MODEL_LABELS[m] for m in models)
             + " | SVAE best? |", "|---" * (len(models) + 4) + "|"]
    for name, row in rows.items():
        any_cell = next(iter(row.values()))
        cells_txt = [f"{100 * row[m]['gap_fraction']:.1f}% ({row[m]['test_elbo']:.3f}"
                     f"±{row[m]['test_elbo_se']:.3f})" if m in row else "—" for m in models]
        best = {True: "yes", False: "**no**", None: "—"}[svae_is_best(row)]
        lines.append(f"| {name} | {any_cell['true_mll']:.3f} | {any_cell['null_ll']:.3f} | "
                     + " | ".join(cells_txt) + f" | {best} |")
    return "\n".join(lines)


def paper_table1(cells, models=MODEL_ORDER) -> str:
    """Markdown: our ELBOs beside the paper's appendix Table 1, for the settings run."""
    rows = _by_setting(cells)
    lines = ["| setting | | true MLL | " + " | ".join(MODEL_LABELS[m] for m in models)
             + " | SVAE below true MLL |", "|---" * (len(models) + 4) + "|"]
    for name, paper in PAPER_TABLE1.items():
        row = rows.get(name, {})
        if row:
            any_cell = next(iter(row.values()))
            ours = [f"{row[m]['test_elbo']:.3f}" if m in row else "—" for m in models]
            below = f"{any_cell['true_mll'] - row['svae']['test_elbo']:.3f}" \
                if "svae" in row else "—"
            lines.append(f"| {name} | ours | {any_cell['true_mll']:.3f} | " + " | ".join(ours)
                         + f" | {below} |")
        lines.append(f"| {name} | paper | {paper['true_mll']:.3f} | "
                     + " | ".join(f"{paper[m]:.3f}" for m in models)
                     + f" | {paper['true_mll'] - paper['svae']:.3f} |")
    return "\n".join(lines)


def lds_masking_table(unmasked, masked, models=MODEL_ORDER) -> str:
    """Markdown: test ELBO and gap % with and without self-supervised masking (appendix B)."""
    a, b = _by_setting(unmasked), _by_setting(masked)
    lines = ["| setting | model | test ELBO, no mask | test ELBO, masked | change |",
             "|---|---|---|---|---|"]
    for name in a:
        for m in models:
            if m in a[name] and m in b.get(name, {}):
                x, y = a[name][m], b[name][m]
                lines.append(f"| {name} | {MODEL_LABELS[m]} | {x['test_elbo']:.4f} "
                             f"({100 * x['gap_fraction']:.1f}%) | {y['test_elbo']:.4f} "
                             f"({100 * y['gap_fraction']:.1f}%) | "
                             f"{y['test_elbo'] - x['test_elbo']:+.4f} |")
    return "\n".join(lines)

# ----------------------------------------------------------------------------- pendulum


def _shared_config(reports: dict) -> dict:
    """The configuration reports ({name: report}) share, without ``seeds``; a field a report
    lacks (written before the field existed) counts as its :class:`PendulumConfig` default.
    Raises ValueError naming the report and the fields when they differ otherwise."""
    defaults = dataclasses.asdict(PendulumConfig())
    strip = lambda cfg: {k: v for k, v in {**defaults, **cfg}.items() if k != "seeds"}
    (first, *rest) = reports.items()
    base = strip(first[1]["config"])
    for name, r in rest:
        other = strip(r["config"])
        if other != base:
            diff = sorted(k for k in base.keys() | other.keys() if base.get(k) != other.get(k))
            raise ValueError(f"report {name!r} differs in config fields {diff}; only seeds "
                             "may differ")
    return base


def merge_reports(reports: list[dict]) -> dict:
    """One report from several ``benchmarks/pendulum.py`` reports (their JSON, loaded) that
    trained disjoint seeds under the same configuration otherwise, as if the seeds were
    trained in one program: every (masking, model, D) cell's ``per_seed`` rows are joined and
    the cell kept is the one whose kept seed ranks first by the reports' ``select`` rule (each
    report's kept seed is its best by that rule, so the best of those is the best of all).
    Seeds are independent runs; only their summation order and the Monte Carlo keys of the
    training predictive LL (drawn from each report's first seed) differ from a single program.

    Raises ValueError when the configurations differ beyond ``seeds``, seeds repeat, or the
    reports do not hold the same cells."""
    if len(reports) < 2:
        raise ValueError("merge_reports needs at least two reports")
    base = _shared_config({i: r for i, r in enumerate(reports)})
    seeds = [s for r in reports for s in r["config"]["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat across the reports: {seeds}")
    key = base.get("select", "train_elbo")  # each rule is named after its per-seed key
    merged = {**reports[0], "config": {**reports[0]["config"], "seeds": sorted(seeds)}}
    for part in ("masked", "unmasked"):
        cells = {}
        for r in reports:
            for c in r[part]:
                cells.setdefault((c["model"], c["latent_dim"]), []).append(c)
        if any(len(v) != len(reports) for v in cells.values()):
            raise ValueError(f"the reports do not hold the same {part} cells")
        joined = []
        for group in cells.values():
            kept_row = lambda c: next(r for r in c["per_seed"] if r["seed"] == c["seed"])
            best = max(group, key=lambda c: kept_row(c)[key])
            joined.append({**best, "per_seed": [r for c in group for r in c["per_seed"]]})
        merged[part] = joined
    return merged


def _r2(row, key):
    """A stored R² to 3 decimals, or "—" for results written before the metric existed."""
    return f"{row[key]:.3f}" if key in row else "—"


def pendulum_table(cells) -> str:
    """Markdown: one row per (D, model) with the chapter's metrics; Monte Carlo standard
    errors to one significant digit (they are often far below the values' last digit).
    "R² angle" is the mean over (sin θ, cos θ); "R² θ" regresses θ itself, as the paper did."""
    lines = ["| D | model | test ELBO | R² angle | R² θ | R² velocity | predictive LL |",
             "|---|---|---|---|---|---|---|"]
    for c in sorted(cells, key=lambda c: (c["latent_dim"], list(MODEL_LABELS).index(c["model"]))):
        lines.append(f"| {c['latent_dim']} | {MODEL_LABELS[c['model']]} | "
                     f"{c['test_elbo']:.4f} ± {c['test_elbo_se']:.1g} | {c['r2_angle']:.3f} | "
                     f"{_r2(c, 'r2_theta')} | "
                     f"{c['r2_velocity']:.3f} | {c['predictive_ll']:.4f} ± "
                     f"{c['predictive_ll_se']:.1g} |")
    return "\n".join(lines)


def pendulum_masking_table(masked, unmasked) -> str:
    """Markdown: appendix B's table, ours beside the paper's (its D = 5 numbers)."""
    u = {(c["model"], c["latent_dim"]): c for c in unmasked}
    lines = ["| D | model | ELBO masked | ELBO no mask | pred. LL masked | pred. LL no mask "
             "| paper (D=5): ELBO masked / no mask, pred. masked / no mask |",
             "|---|---|---|---|---|---|---|"]
    for c in masked:
        k = (c["model"], c["latent_dim"])
        if k not in u:
            continue
        p = PAPER_TABLE2.get(c["model"])
        paper = (f"{p['elbo']:.4f} / {p['elbo_no_mask']:.4f}, {p['prediction']:.4f} / "
                 f"{p['prediction_no_mask']:.4f}") if p else "—"
        lines.append(f"| {c['latent_dim']} | {MODEL_LABELS[c['model']]} | {c['test_elbo']:.4f} | "
                     f"{u[k]['test_elbo']:.4f} | {c['predictive_ll']:.4f} | "
                     f"{u[k]['predictive_ll']:.4f} | {paper} |")
    return "\n".join(lines)


def seeds_table(cells, top: int = 5, rule: str = "train_elbo") -> str:
    """Markdown: for every (D, model) trained with several seeds, the seed kept (by ``rule``,
    the report's :data:`SELECTION_RULES` entry) and its velocity R², the seed the best
    training predictive log-likelihood picks (where recorded) with its R² of angle and
    velocity, the mean R² over the paper's selection (the ``top`` runs by test ELBO), and every
    seed's (test ELBO, R² angle, R² velocity, training predictive LL where recorded), best
    test ELBO first; the R² of θ itself follows the angle's in brackets where recorded."""
    kept_by = {"train_elbo": "best train ELBO", "train_predictive_ll": "best train pred. LL"}
    lines = [f"| D | model | seeds | kept ({kept_by[rule]}): R² velocity | best train pred. LL: "
             f"R² angle / velocity | paper's rule (top {top} by test ELBO): mean R² angle / "
             "velocity | every seed: test ELBO, R² angle, R² velocity, train pred. LL |",
             "|---|---|---|---|---|---|---|"]
    theta = lambda r: f" (θ {r['r2_theta']:.3f})" if "r2_theta" in r else ""
    for c in cells:
        rows = sorted(c.get("per_seed", []), key=lambda r: -r["test_elbo"])
        if len(rows) < 2:
            continue
        kept = next(r for r in rows if r["seed"] == c["seed"])
        by_pll = "—"
        if all("train_predictive_ll" in r for r in rows):
            r = max(rows, key=lambda r: r["train_predictive_ll"])
            by_pll = f"seed {r['seed']}: {r['r2_angle']:.3f}{theta(r)} / {r['r2_velocity']:.3f}"
        angle, velocity = (float(np.mean([r[k] for r in rows[:top]]))
                           for k in ("r2_angle", "r2_velocity"))
        mean_theta = (f" (θ {np.mean([r['r2_theta'] for r in rows[:top]]):.3f})"
                      if all("r2_theta" in r for r in rows) else "")
        each = "; ".join(f"seed {r['seed']}: {r['test_elbo']:.4f}, {r['r2_angle']:.3f}"
                         + theta(r) + f", {r['r2_velocity']:.3f}"
                         + (f", {r['train_predictive_ll']:.4f}"
                            if "train_predictive_ll" in r else "") for r in rows)
        lines.append(f"| {c['latent_dim']} | {MODEL_LABELS[c['model']]} | {len(rows)} | "
                     f"seed {kept['seed']}: {kept['r2_velocity']:.3f} | {by_pll} | "
                     f"{angle:.3f}{mean_theta} / {velocity:.3f} | {each} |")
    return "\n".join(lines) if len(lines) > 2 else ""



def pendulum_report(report: dict, name: str = "report") -> str:
    """Markdown for a ``benchmarks/pendulum.py`` report (its JSON, loaded): a heading naming
    the training length and devices, :func:`pendulum_table` of the masked runs, then
    :func:`seeds_table` when some run had several seeds and :func:`pendulum_masking_table` when the
    report has unmasked runs."""
    cfg = report["config"]
    devices = sorted({c["device"] for c in report["masked"] + report["unmasked"]})
    rate = f"lr {cfg['learning_rate']}"
    data = f", friction {cfg['friction']:g} s⁻¹" if cfg.get("friction") else ""
    if cfg.get("mask_fraction", PendulumConfig.mask_fraction) != PendulumConfig.mask_fraction:
        rate += f", longest masked block {cfg['mask_fraction']:g} of a sequence"
    if cfg.get("dynamics_init", "decay") != "decay":
        rate += f", A initialised as {cfg['dynamics_init']}"
    if cfg.get("lr_decay_start"):
        end = cfg["lr_decay_start"] + cfg["lr_decay_steps"]
        rate += (f" (cosine decay to {cfg['lr_final_fraction']:g}× over steps "
                 f"{cfg['lr_decay_start']}–{end})")
    text = [f"**`{name}`**: {cfg['steps']} steps, {rate}, "
            f"{cfg['num_train']} training / {cfg['num_test']} test sequences{data}, "
            f"{cfg['num_forecast_samples']} forecast samples; {', '.join(devices)}",
            "", pendulum_table(report["masked"])]
    if seeds := seeds_table(report["masked"], rule=cfg.get("select", "train_elbo")):
        text += ["", seeds]
    if report["unmasked"]:
        text += ["", pendulum_masking_table(report["masked"], report["unmasked"])]
    return "\n".join(text)


def combine_reports(reports: dict) -> dict:
    """One report from several ``benchmarks/pendulum.py`` reports ({command: report}) that
    trained different (model, D) cells under one configuration (seeds may differ): the
    canonical report a chapter renders. Its ``config`` is the shared one without ``seeds``;
    each cell keeps its ``per_seed`` rows; ``runs`` lists each command with its seeds.

    Raises ValueError when the configurations differ beyond ``seeds`` or a cell repeats."""
    if not reports:
        raise ValueError("combine_reports needs at least one report")
    first = next(iter(reports.values()))
    combined = {"config": _shared_config(reports), "masked": [], "unmasked": [], "runs": [],
                "paper_table2": first.get("paper_table2", PAPER_TABLE2)}
    seen = set()
    for command, r in reports.items():
        for part in ("masked", "unmasked"):
            for c in r[part]:
                key = (part, c["model"], c["latent_dim"])
                if key in seen:
                    raise ValueError(f"{part} {c['model']} D = {c['latent_dim']} repeats")
                seen.add(key)
                combined[part].append(c)
        combined["runs"].append({"command": command, "seeds": r["config"]["seeds"]})
    for part in ("masked", "unmasked"):
        combined[part].sort(key=lambda c: (c["latent_dim"], list(MODEL_LABELS).index(c["model"])))
    return combined


def headline_table(summary: dict) -> str:
    """Markdown: per D and model (:func:`svae_core.experiments.pendulum.summarize`'s
    "masked" part), the kept seed's test ELBO, R² of θ, ω and (sin θ, cos θ), predictive
    log-likelihood, and the paper's top-five means of the R² of θ and ω."""
    lines = ["| D | model | seeds | test ELBO | R² θ | R² ω | R² (sin θ, cos θ) | top-5 mean "
             "R² θ / ω | predictive LL |", "|---|---|---|---|---|---|---|---|---|"]
    rows = [(D, m, s) for m, by_d in summary.items() for D, s in by_d.items()]
    for D, m, s in sorted(rows, key=lambda r: (r[0], list(MODEL_LABELS).index(r[1]))):
        top = f"{s['top_r2_theta']:.3f} / {s['top_r2_velocity']:.3f}" if s["seeds"] > 1 else "—"
        lines.append(f"| {D} | {MODEL_LABELS[m]} | {s['seeds']} | {s['test_elbo']:.4f} | "
                     f"{s['r2_theta']:.3f} | {s['r2_velocity']:.3f} | {s['r2_angle']:.3f} | "
                     f"{top} | {s['predictive_ll']:.4f} |")
    return "\n".join(lines)


def claims_table(claims: list[dict]) -> str:
    """Markdown: each paper claim, the paper's number, ours, and whether it reproduces."""
    lines = ["| paper claim | paper | ours | reproduced |", "|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c['claim']} | {c['paper']} | {c['ours']} | "
                     f"{'yes' if c['reproduced'] else '**no**'} |")
    return "\n".join(lines)
