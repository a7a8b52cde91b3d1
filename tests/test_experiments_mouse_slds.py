"""Helpers of the mouse chapter's driver (svae_core.experiments.mouse_slds); the whole
pipeline runs in the smoke book (tests/test_book.py)."""

from __future__ import annotations

import numpy as np

from svae_core.experiments import mouse_slds as ms


def test_run_lengths_leave_out_the_runs_cut_by_the_window():
    labels = np.array([[0, 0, 1, 1, 1, 2, 2, 0],
                       [3, 3, 3, 3, 3, 3, 3, 3],
                       [1, 2, 2, 2, 2, 1, 1, 1]])
    np.testing.assert_array_equal(ms.run_lengths(labels), [3, 2, 4])


def test_state_examples_take_the_most_probable_moments_apart_from_each_other():
    m = np.full((2, 30, 2), 0.5)
    m[..., 1] = 0.0
    m[..., 0] = 0.2
    m[0, 10, 0], m[0, 12, 0], m[1, 3, 0], m[0, 25, 0] = 0.99, 0.98, 0.97, 0.6
    m[..., 1] = 1 - m[..., 0]
    picks = ms.state_examples(m, num=3, gap=5)
    # state 0: (0, 10) first; (0, 12) is too close to it; then (1, 3), then (0, 25)
    assert picks[0] == [(0, 10), (1, 3), (0, 25)]
    # state 1 is likely (0.8) almost everywhere: three picks, pairwise apart within a sequence
    assert len(picks[1]) == 3
    for a in picks[1]:
        for b in picks[1]:
            assert a == b or a[0] != b[0] or abs(a[1] - b[1]) >= 5
    # no moment below probability one half is shown
    assert ms.state_examples(np.full((1, 10, 3), 1 / 3))[0] == []


def test_majority_labels_name_each_state_by_its_most_frequent_behaviour():
    truth = np.array([[0, 0, 0, 1, 1, 2, 2, 2]])
    pred = np.array([[5, 5, 7, 7, 7, 9, 9, 5]])
    # state 5 meets 0, 0, 2 -> 0; state 7 meets 0, 1, 1 -> 1; state 9 meets 2, 2 -> 2
    np.testing.assert_array_equal(ms.majority_labels(truth, pred), [[0, 0, 1, 1, 1, 2, 2, 0]])
