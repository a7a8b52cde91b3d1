"""The mouse chapter's segmentation baselines (svae_core.experiments.segmentation_baselines):
PCA + AR-HMM and k-means recover the states of synthetic switching data whose truth is known,
their labels have the promised shapes and ranges, the scores are the evaluation module's, bad
inputs are refused, and the pipeline runs on a tiny stand-in mouse video."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from svae_core import evaluation
from svae_core.datasets import flatten_frames, make_mouse_dataset
from svae_core.experiments import segmentation_baselines as sb

# dynamax is the optional extra "oracle"; only the AR-HMM needs it.
needs_dynamax = pytest.mark.skipif(importlib.util.find_spec("dynamax") is None,
                                   reason="dynamax (extra 'oracle') is not installed")

# Three states with well-separated means in a 2-D latent space (sd of the noise 0.5).
MEANS = np.array([[4.0, 0.0], [-2.0, 3.5], [-2.0, -3.5]])


def _sticky_labels(rng, num_seq, num_frames, num_states, stay=0.9):
    """(S, T) labels of a Markov chain staying with probability ``stay`` (runs of ~10)."""
    labels = np.empty((num_seq, num_frames), np.int64)
    labels[:, 0] = rng.integers(num_states, size=num_seq)
    for t in range(1, num_frames):
        move = rng.random(num_seq) > stay
        jump = (labels[:, t - 1] + rng.integers(1, num_states, size=num_seq)) % num_states
        labels[:, t] = np.where(move, jump, labels[:, t - 1])
    return labels


def _switching_ar(seed, num_seq, num_frames, obs_dim=20, decay=0.6, noise=0.5):
    """Labels (S, T) and observations (S, T, obs_dim): a 2-D AR(1) process pulled towards
    its state's mean, x_t = μ_z + decay·(x_{t−1} − μ_z) + noise·ε, embedded linearly into
    ``obs_dim`` dimensions plus N(0, 0.1²) noise per dimension."""
    rng = np.random.default_rng(seed)
    labels = _sticky_labels(rng, num_seq, num_frames, len(MEANS))
    x = np.empty((num_seq, num_frames, 2))
    x[:, 0] = MEANS[labels[:, 0]]
    for t in range(1, num_frames):
        mu = MEANS[labels[:, t]]
        x[:, t] = mu + decay * (x[:, t - 1] - mu) + noise * rng.standard_normal((num_seq, 2))
    embed = rng.standard_normal((2, obs_dim))
    y = x @ embed + 0.1 * rng.standard_normal((num_seq, num_frames, obs_dim))
    return labels, y


@pytest.fixture(scope="module")
def switching():
    labels, y = _switching_ar(0, 14, 60)
    return labels[:10], y[:10], labels[10:], y[10:]


@pytest.fixture(scope="module")
def arhmm_fit(switching):
    _, y_train, _, y_test = switching
    # The last test sequences repeat training ones, to check train and test are labelled alike.
    test = np.concatenate([y_test, y_train[:2]])
    return sb.pca_arhmm_segment(y_train, test, num_states=3, num_components=3, num_iters=30,
                                seed=0)


@needs_dynamax
def test_pca_arhmm_recovers_the_states_of_a_switching_ar_process(switching, arhmm_fit):
    z_train, _, z_test_true, _ = switching
    train_labels, test_labels = arhmm_fit
    assert train_labels.shape == (10, 60) and test_labels.shape == (6, 60)
    for labels in arhmm_fit:
        assert labels.dtype == np.int64
        assert labels.min() >= 0 and labels.max() < 3
    test_scores = sb.segmentation_scores(z_test_true, test_labels[:4])
    assert test_scores["nmi"] > 0.8, test_scores
    assert test_scores["states_used"] == 3
    assert sb.segmentation_scores(z_train, train_labels)["nmi"] > 0.8
    # A sequence's Viterbi path does not depend on the split it is passed in.
    np.testing.assert_array_equal(test_labels[4:], train_labels[:2])
    # The dynamics matter: frames in transit between two means fool k-means on the same
    # scores (NMI ≈ 0.8), not the AR-HMM (≈ 1.0).
    _, y_train, _, y_test = switching
    kmeans_test = sb.kmeans_segment(*sb.pca_scores(y_train, y_test, 3)[:2], num_states=3)[1]
    assert (sb.segmentation_scores(z_test_true, kmeans_test)["nmi"]
            < test_scores["nmi"] - 0.1)


@needs_dynamax
def test_pca_arhmm_accepts_test_sequences_of_another_length(switching):
    _, y_train, _, y_test = switching
    train_labels, test_labels = sb.pca_arhmm_segment(y_train[:4], y_test[:, :25], num_states=2,
                                                     num_components=2, num_iters=3)
    assert train_labels.shape == (4, 60) and test_labels.shape == (4, 25)


@needs_dynamax
def test_a_fit_with_too_many_states_for_the_data_raises():
    y = np.random.default_rng(0).standard_normal((1, 20, 8))
    with pytest.raises(ValueError, match="non-finite parameters"):
        sb.pca_arhmm_segment(y, y, num_states=10, num_components=5, num_iters=20)


@needs_dynamax
def test_lagged_inputs_match_dynamax_with_the_first_frame_as_history():
    from dynamax.hidden_markov_model import LinearAutoregressiveHMM

    y = np.random.default_rng(1).standard_normal((2, 7, 3))
    model = LinearAutoregressiveHMM(2, 3, num_lags=3)
    ours = sb._lagged_inputs(y, 3)
    for s in range(2):
        theirs = model.compute_inputs(y[s], prev_emissions=np.repeat(y[s, :1], 3, axis=0))
        np.testing.assert_allclose(ours[s], np.asarray(theirs), rtol=1e-6)


def test_pca_scores_project_both_splits_on_the_training_components():
    rng = np.random.default_rng(6)
    basis = np.linalg.qr(rng.standard_normal((12, 2)))[0].T  # (2, 12) orthonormal rows
    latent = rng.standard_normal((5, 40, 2)) * np.array([3.0, 1.0])
    train = latent[:4] @ basis + 7.0  # rank 2 around an offset
    test = latent[4:] @ basis + 7.0
    y_train, y_test, explained = sb.pca_scores(train, test, 3)
    assert y_train.shape == (4, 40, 3) and y_test.shape == (1, 40, 3)
    np.testing.assert_allclose(explained[:2].sum(), 1.0, atol=1e-9)
    assert explained[0] > 0.8  # the sd-3 direction
    np.testing.assert_allclose(y_train[..., 2], 0.0, atol=1e-9)
    # Scores keep distances within the rank-2 data (orthonormal projection, data unit).
    d_scores = np.linalg.norm(y_test[0, 1:] - y_test[0, :-1], axis=-1)
    d_frames = np.linalg.norm(test[0, 1:] - test[0, :-1], axis=-1)
    np.testing.assert_allclose(d_scores, d_frames, rtol=1e-9)
    # Both splits are centred with the training mean.
    np.testing.assert_allclose(sb.pca_scores(train, train[1:2], 3)[1], y_train[1:2], atol=1e-9)
    w_train, _, _ = sb.pca_scores(train, test, 2, whiten=True)
    np.testing.assert_allclose(w_train.reshape(-1, 2).var(axis=0, ddof=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(w_train.reshape(-1, 2).mean(axis=0), 0.0, atol=1e-9)


def test_kmeans_recovers_well_separated_clusters():
    rng = np.random.default_rng(2)
    truth = _sticky_labels(rng, 8, 50, 4)
    centres = 6.0 * rng.standard_normal((4, 5))
    latents = centres[truth] + rng.standard_normal((8, 50, 5))
    train_labels, test_labels = sb.kmeans_segment(latents[:6], latents[6:], num_states=4,
                                                  seed=0)
    assert train_labels.shape == (6, 50) and test_labels.shape == (2, 50)
    assert train_labels.dtype == np.int64 and test_labels.dtype == np.int64
    assert 0 <= train_labels.min() and train_labels.max() < 4
    assert sb.segmentation_scores(truth[6:], test_labels)["nmi"] > 0.9
    assert sb.segmentation_scores(truth[:6], train_labels)["nmi"] > 0.9
    again = sb.kmeans_segment(latents[:6], latents[:2], num_states=4, seed=0)
    np.testing.assert_array_equal(again[0], train_labels)  # deterministic given the seed
    np.testing.assert_array_equal(again[1], train_labels[:2])  # nearest centroid, any split


def test_kmeans_keeps_the_restart_with_the_lowest_distortion():
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((4, 30, 2))

    def distortion(labels):
        points = latents.reshape(-1, 2)
        codes = labels.ravel()
        return sum(np.sum((points[codes == k] - points[codes == k].mean(0)) ** 2)
                   for k in np.unique(codes))

    one = sb.kmeans_segment(latents, latents[:1], num_states=5, seed=0, num_restarts=1)[0]
    many = sb.kmeans_segment(latents, latents[:1], num_states=5, seed=0, num_restarts=8)[0]
    assert distortion(many) <= distortion(one) + 1e-9


def test_segmentation_scores_are_the_evaluation_functions():
    rng = np.random.default_rng(4)
    truth = _sticky_labels(rng, 3, 40, 4)
    pred = np.where(rng.random((3, 40)) < 0.2, 4, truth) * 10 + 3  # a fifth label, renamed
    scores = sb.segmentation_scores(truth, pred, tolerance=2)
    assert scores == {
        "nmi": evaluation.normalized_mutual_information(truth.ravel(), pred.ravel()),
        "ari": evaluation.adjusted_rand_index(truth.ravel(), pred.ravel()),
        "boundary_f1": evaluation.boundary_f1(truth, pred, tolerance=2)["f1"],
        "states_used": 5,
    }
    assert all(type(v) is float for k, v in scores.items() if k != "states_used")
    assert type(scores["states_used"]) is int
    assert sb.segmentation_scores(truth, truth)["nmi"] == pytest.approx(1.0)
    assert sb.segmentation_scores(truth, np.zeros_like(truth))["states_used"] == 1


@pytest.mark.parametrize("call, message", [
    (lambda d: sb.pca_arhmm_segment(d, d[..., :5], 2), "same feature dimension"),
    (lambda d: sb.pca_arhmm_segment(d, d, 0), "num_states"),
    (lambda d: sb.pca_arhmm_segment(d, d, 2, num_components=21), "num_components"),
    (lambda d: sb.pca_arhmm_segment(d[0], d[0], 2), r"\(S, T, N\)"),
    (lambda d: sb.pca_arhmm_segment(d, d, 2, num_lags=0), "num_lags"),
    (lambda d: sb.pca_arhmm_segment(d, d, 2, stickiness=-1.0), "stickiness"),
    (lambda d: sb.pca_arhmm_segment(d, d, 2.5), "num_states"),
    (lambda d: sb.pca_arhmm_segment(np.full_like(d, np.nan), d, 2), "finite"),
    (lambda d: sb.pca_scores(d, d, 0), "num_components"),
    (lambda d: sb.kmeans_segment(d, d[..., :3], 2), "same feature dimension"),
    (lambda d: sb.kmeans_segment(d, d, 0), "num_states"),
    (lambda d: sb.kmeans_segment(d[:1, :2], d, 3), "num_states"),
    (lambda d: sb.segmentation_scores(np.zeros((2, 5), int), np.zeros((2, 4), int)), "shape"),
    (lambda d: sb.segmentation_scores(np.zeros(5, int), np.zeros(5)), "integer"),
    (lambda d: sb.segmentation_scores(np.zeros(5, int), np.zeros(5, int), -1), "tolerance"),
])
def test_bad_inputs_raise(call, message):
    data = np.random.default_rng(5).standard_normal((3, 8, 20))
    with pytest.raises(ValueError, match=message):
        call(data)


@needs_dynamax
def test_pipeline_runs_on_a_tiny_mouse_video():
    bench = make_mouse_dataset(seed=0, num_train=4, num_test=2, num_frames=60)
    train, test = flatten_frames(bench.train.frames), flatten_frames(bench.test.frames)
    train_labels, test_labels = sb.pca_arhmm_segment(train, test, num_states=6,
                                                     num_components=3, num_iters=5)
    assert train_labels.shape == (4, 60) and test_labels.shape == (2, 60)
    assert 0 <= test_labels.min() and test_labels.max() < 6
    scores = sb.segmentation_scores(bench.test.labels, test_labels)
    assert all(np.isfinite(v) for v in scores.values())
    assert 1 <= scores["states_used"] <= 6
    scores_pca = sb.pca_scores(train, test, 3)
    latents_labels = sb.kmeans_segment(scores_pca[0], scores_pca[1], num_states=6)
    assert np.isfinite(sb.segmentation_scores(bench.test.labels, latents_labels[1])["nmi"])
