"""Training curves of runs trained together, and the optimiser race the 2016 chapters run:
which optimiser of q(θ) reaches the best alternative's final training ELBO first.

A ``history`` is the trainer's: {"step": (chunks,), "elbo": (chunks, runs), ...}, each entry
already the mean over ``log_every`` minibatches. A ``row`` is one run's dict with at least
"optimizer", "seed", "step_size", "final_elbo" and "left_domain"."""

from __future__ import annotations

import numpy as np


def smoothed_elbo(history: dict, window: int = 5) -> np.ndarray:
    """(chunks, runs) training ELBO, a trailing moving average over ``window`` logged chunks
    (the first chunks padded with the first value)."""
    elbo = np.asarray(history["elbo"], float)
    kernel = np.ones(window) / window
    out = np.empty_like(elbo)
    for j in range(elbo.shape[1]):
        padded = np.concatenate([np.full(window - 1, elbo[0, j]), elbo[:, j]])
        out[:, j] = np.convolve(padded, kernel, mode="valid")
    return out


def steps_to_reach(history: dict, threshold, window: int = 5) -> list:
    """Per run, the first logged step whose smoothed training ELBO ≥ threshold (None: never).
    threshold: one number for every run, or (runs,) with None for runs not to score."""
    smooth = smoothed_elbo(history, window)
    steps = np.asarray(history["step"])
    per_run = np.broadcast_to(np.asarray(threshold, object), smooth.shape[1:])
    out = []
    for j in range(smooth.shape[1]):
        hit = [] if per_run[j] is None else np.nonzero(smooth[:, j] >= per_run[j])[0]
        out.append(int(steps[hit[0]]) if len(hit) else None)
    return out


def final_elbo(history: dict, window: int = 5) -> np.ndarray:
    """(runs,) the last smoothed training ELBO (:func:`smoothed_elbo`): what a run ends at,
    on the scale that :func:`steps_to_reach` compares with a threshold."""
    return smoothed_elbo(history, window)[-1]


def kept(rows: list[dict]) -> dict:
    """The row with the best final training ELBO (the run a user would keep)."""
    return max(rows, key=lambda r: r["final_elbo"])


def optimizer_race(rows: list[dict], histories: dict, alternatives=("sgd", "adam"),
                   fields=()) -> dict:
    """Score every run against the best alternative.

    rows: one per run, in each optimiser's run order; histories: optimiser -> its runs'
    history. The best alternative is the kept run among the ``alternatives``' runs that stayed
    in the domain; ``threshold`` its final ELBO, ``seed_thresholds`` the same per seed.
    Returns {"optimizers": one entry per run with ``steps_to_threshold`` and
    ``steps_to_seed_threshold`` (None for runs that left the domain) and the row's
    "optimizer", "seed", "step_size", "final_elbo", "left_domain", "halted_at_step" and
    ``fields``; "threshold"; "seed_thresholds"; "best_alternative"}."""
    valid = [r for r in rows if not r["left_domain"]]
    alts = [r for r in valid if r["optimizer"] in alternatives]
    best = kept(alts) if alts else None
    threshold = best["final_elbo"] if best else None
    seed_thresholds = {seed: kept([r for r in alts if r["seed"] == seed])["final_elbo"]
                       for seed in sorted({r["seed"] for r in alts})}
    keys = ("optimizer", "seed", "step_size", "final_elbo", "left_domain", "halted_at_step",
            *fields)
    optimizers = []
    for opt, history in histories.items():
        mine = [r for r in rows if r["optimizer"] == opt]
        steps = steps_to_reach(history, threshold)
        own = steps_to_reach(history, [seed_thresholds.get(r["seed"]) for r in mine])
        for r, n, n_seed in zip(mine, steps, own, strict=True):
            optimizers.append({**{k: r[k] for k in keys},
                               "steps_to_threshold": None if r["left_domain"] else n,
                               "steps_to_seed_threshold": None if r["left_domain"] else n_seed})
    return {"optimizers": optimizers, "threshold": threshold, "seed_thresholds": seed_thresholds,
            "best_alternative": ({k: best[k] for k in ("optimizer", "seed", "step_size",
                                                       "final_elbo")} if best else None)}


def fastest(optimizers: list[dict], names, seed=None, key="steps_to_threshold"):
    """The fewest steps to the threshold among runs of optimisers ``names`` (one name or a
    tuple; of one seed when given), None if none reached it."""
    names = (names,) if isinstance(names, str) else tuple(names)
    steps = [o[key] for o in optimizers if o["optimizer"] in names and o[key] is not None
             and (seed is None or o["seed"] == seed)]
    return min(steps) if steps else None


def seed_wins(summary: dict, name: str, alternatives=("sgd", "adam")) -> list[bool]:
    """Per seed with a threshold: whether optimiser ``name`` reached that seed's best
    alternative first (:func:`optimizer_race`)."""
    opts = summary["optimizers"]
    wins = []
    for seed in sorted(summary.get("seed_thresholds", {})):
        mine = fastest(opts, name, seed, "steps_to_seed_threshold")
        theirs = fastest(opts, alternatives, seed, "steps_to_seed_threshold")
        wins.append(mine is not None and (theirs is None or mine < theirs))
    return wins


def race_claims(summary: dict, labels: dict, natgrads, unit: str, digits: int = 3,
                sgd_paper: str = "Fig. 5a: standard gradient steps much slower") -> list[dict]:
    """The natural-gradient claims of Johnson et al. (2016, §4.2, Fig. 5a) checked against an
    :func:`optimizer_race` summary: for each optimiser in ``natgrads`` that ran, no run leaves
    the domain, it reaches the best alternative's final ELBO in fewer steps and (when the runs
    have several seeds) it does so seed by seed; and every ``sgd`` run leaves the domain or is
    slower than the fastest of ``natgrads``. labels: optimiser -> its name in the claims;
    unit: the ELBO's unit. A list of {"claim", "paper", "ours", "reproduced"}."""
    opts = summary["optimizers"]
    present = [n for n in natgrads if any(o["optimizer"] == n for o in opts)]
    out = []
    for name in present:
        runs = [o for o in opts if o["optimizer"] == name]
        left = sum(o["left_domain"] for o in runs)
        rates = ", ".join(f"{r:g}" for r in sorted({o["step_size"] for o in runs}))
        out.append({"claim": f"{labels[name]}: no run leaves the parameter domain",
                    "paper": "§4.2: natural-gradient SVI steps are convex combinations",
                    "ours": f"{left} of {len(runs)} runs left it (step sizes {rates})",
                    "reproduced": left == 0})
    sgd = [o for o in opts if o["optimizer"] == "sgd"]
    best_natgrad = fastest(opts, tuple(present))
    if sgd:
        left = sum(o["left_domain"] for o in sgd)
        slower = [o for o in sgd if not o["left_domain"]
                  and (o["steps_to_threshold"] is None or best_natgrad is None
                       or o["steps_to_threshold"] > best_natgrad)]
        out.append({"claim": f"{labels['sgd']} at {len(sgd)} step sizes × seeds: every run "
                             "leaves the domain or is slower than the natural gradient",
                    "paper": sgd_paper,
                    "ours": f"{left} of {len(sgd)} left the domain, {len(slower)} slower",
                    "reproduced": left + len(slower) == len(sgd)})
    alt = summary["best_alternative"]
    if alt is None:
        return out
    alt_steps = fastest(opts, alt["optimizer"])
    for name in present:
        mine = fastest(opts, name)
        out.append({
            "claim": f"{labels[name]} reaches the best alternative's final training ELBO in "
                     "fewer steps",
            "paper": "Fig. 5a: natural gradient much faster than standard gradient",
            "ours": f"threshold {summary['threshold']:.{digits}f} {unit} (best of "
                    f"{labels[alt['optimizer']]}, step {alt['step_size']:g}): "
                    f"{'never' if mine is None else f'{mine} steps'} against {alt_steps} steps",
            "reproduced": mine is not None and alt_steps is not None and mine < alt_steps})
    alternatives = " / ".join(labels[o] for o in ("sgd", "adam") if o in labels)
    several_seeds = len({o["seed"] for o in opts}) > 1
    for name in present:
        wins = seed_wins(summary, name)
        if several_seeds and wins:
            out.append({
                "claim": f"{labels[name]}, seed by seed: reaches the final training ELBO of "
                         f"that seed's best alternative ({alternatives}) in fewer steps",
                "paper": "Fig. 5a: natural gradient much faster than standard gradient",
                "ours": f"{sum(wins)} of {len(wins)} seeds",
                "reproduced": bool(all(wins))})
    return out
