"""Segmentation scores (svae_core.evaluation): NMI against a direct double sum over the joint
table, and boundary F1 against a brute-force maximum matching."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from svae_core.evaluation import boundaries, boundary_f1, normalized_mutual_information


def nmi_by_definition(u, v):
    n = len(u)
    cu, cv = sorted(set(u)), sorted(set(v))
    p = {(i, j): sum(1 for a, b in zip(u, v, strict=True) if a == i and b == j) / n
         for i in cu for j in cv}
    pu = {i: sum(p[i, j] for j in cv) for i in cu}
    pv = {j: sum(p[i, j] for i in cu) for j in cv}
    mi = sum(p[i, j] * math.log(p[i, j] / (pu[i] * pv[j])) for i in cu for j in cv if p[i, j])
    hu = -sum(q * math.log(q) for q in pu.values())
    hv = -sum(q * math.log(q) for q in pv.values())
    return mi / (0.5 * (hu + hv))


def test_nmi_matches_the_definition_and_is_invariant_to_relabelling():
    rng = np.random.default_rng(0)
    for _ in range(5):
        u = rng.integers(0, 4, 60)
        v = np.where(rng.random(60) < 0.7, u, rng.integers(0, 5, 60))
        assert normalized_mutual_information(u, v) == pytest.approx(nmi_by_definition(u, v),
                                                                    rel=1e-12)
        assert normalized_mutual_information(u, 7 - 2 * u) == pytest.approx(1.0)
        assert normalized_mutual_information(u, v) == pytest.approx(
            normalized_mutual_information(v, u))


def test_nmi_of_independent_labels_is_near_zero_and_edge_cases():
    rng = np.random.default_rng(1)
    u, v = rng.integers(0, 3, 20000), rng.integers(0, 3, 20000)
    assert normalized_mutual_information(u, v) < 1e-3
    assert normalized_mutual_information([0, 0, 0], [1, 1, 1]) == 1.0
    assert normalized_mutual_information([0, 0, 1], [1, 1, 1]) == 0.0
    with pytest.raises(ValueError):
        normalized_mutual_information([0, 1], [0])


def brute_force_matches(bt, bp, tol):
    """The largest one-to-one matching of predicted to true change points within tol."""
    best = 0
    for k in range(min(len(bt), len(bp)), 0, -1):
        for chosen in itertools.combinations(bp, k):
            for perm in itertools.permutations(bt, k):
                if all(abs(a - b) <= tol for a, b in zip(chosen, perm, strict=True)):
                    return k
    return best


def test_boundary_f1_matches_a_brute_force_maximum_matching():
    rng = np.random.default_rng(2)
    for _ in range(40):
        T = 25
        true = np.cumsum(rng.random(T) < 0.2)
        pred = np.cumsum(rng.random(T) < 0.25)
        bt, bp = boundaries(true), boundaries(pred)
        if len(bt) > 5 or len(bp) > 5:
            continue
        for tol in (0, 1, 3):
            out = boundary_f1(true, pred, tol)
            assert out["matched"] == brute_force_matches(list(bt), list(bp), tol)
            assert (out["true"], out["predicted"]) == (len(bt), len(bp))


def test_boundary_f1_known_values_and_sequences_kept_apart():
    true = np.array([0, 0, 0, 1, 1, 1, 2, 2])  # change points 3, 6
    pred = np.array([5, 5, 5, 5, 7, 7, 7, 7])  # change point 4
    out = boundary_f1(true, pred, 1)
    assert (out["precision"], out["recall"]) == (1.0, 0.5)
    assert out["f1"] == pytest.approx(2 / 3)
    assert boundary_f1(true, pred, 0)["f1"] == 0.0
    # two sequences: no change point is made by the seam between them
    both = boundary_f1(np.stack([true, true + 10]), np.stack([true, true + 10]), 0)
    assert both["true"] == 4 and both["f1"] == 1.0
    assert boundary_f1([1, 1, 1], [2, 2, 2])["f1"] == 1.0
    with pytest.raises(ValueError):
        boundary_f1(true, pred, -1)
