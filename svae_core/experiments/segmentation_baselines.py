r"""The two behaviour-segmentation baselines of the mouse chapter (Johnson et al. 2016, §6.2–6.3),
against which the SLDS-SVAE's discrete states are compared, and the scores of a segmentation.

* **PCA + AR-HMM** (:func:`pca_arhmm_segment`), the classic MoSeq pipeline (Wiltschko et
  al. 2015): project every flattened depth frame on the top principal components of the
  training frames, bring the scores to unit scale, fit an autoregressive HMM to them by EM
  (dynamax's ``LinearAutoregressiveHMM``, a sticky Dirichlet prior on the transition matrix,
  k-means initialisation) and label every frame with its Viterbi (most likely) state path.
* **k-means** (:func:`kmeans_segment`) on per-frame latents (e.g. an SVAE's posterior means or
  the PCA scores): cluster all training time points, label each frame by its nearest centroid.
  It ignores time, so it shows what the dynamics of the other two methods add.

:func:`segmentation_scores` compares a segmentation with the true behaviour labels: NMI and ARI
over all frames (label values need not correspond) and the F1 of the change points within a
tolerance (:mod:`svae_core.evaluation`)::

    bench = make_mouse_dataset(seed=0)
    train, test = flatten_frames(bench.train.frames), flatten_frames(bench.test.frames)
    z_train, z_test = pca_arhmm_segment(train, test, num_states=6)
    segmentation_scores(bench.test.labels, z_test)  # {"nmi", "ari", "boundary_f1", ...}

All functions are deterministic given ``seed``. dynamax is an optional dependency (the extra
``oracle``), imported only by :func:`pca_arhmm_segment`.
"""

from __future__ import annotations

import warnings

import numpy as np

from svae_core.evaluation import adjusted_rand_index, boundary_f1, normalized_mutual_information

__all__ = [
    "kmeans_segment",
    "pca_arhmm_segment",
    "pca_scores",
    "segmentation_scores",
]


def _int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _sequences(name, x):
    """(S, T, N) finite float64 array, or ValueError."""
    x = np.asarray(x, np.float64)
    if x.ndim != 3 or min(x.shape) < 1:
        raise ValueError(f"{name} must have shape (S, T, N) with S, T, N >= 1 (sequences, "
                         f"frames, features), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite")
    return x


def _pair(train, test, train_name, test_name):
    train, test = _sequences(train_name, train), _sequences(test_name, test)
    if train.shape[2] != test.shape[2]:
        raise ValueError(f"{train_name} and {test_name} must have the same feature dimension, "
                         f"got {train.shape[2]} and {test.shape[2]}")
    return train, test


def pca_scores(train, test, num_components: int = 10, whiten: bool = False):
    """Scores of train and test frames on the top principal components of the training frames.

    PCA by the SVD of all S·T training frames centred on their mean; both splits are
    centred with the training mean and projected on the same components (orthonormal, so
    scores are in the data's unit). Whitened scores are divided by each component's training
    sd, so every score has unit variance over the training frames.

    Args:
        train: (S, T, N) training frames, e.g. flattened depth images (any unit).
        test: (S', T', N) held-out frames, same features.
        num_components: C, 1 ≤ C ≤ min(N, S·T).
        whiten: divide the scores by the components' sd (True) or keep the data's unit.
    Returns:
        (train_scores (S, T, C), test_scores (S', T', C), explained (C,)): float64 scores,
        and the fraction of the training variance each component explains.
    Raises:
        ValueError: on bad shapes, non-finite data, mismatched feature dimensions or
            ``num_components`` out of range.
    """
    train, test = _pair(train, test, "train", "test")
    S, T, N = train.shape
    num_components = _int("num_components", num_components, 1)
    if num_components > min(N, S * T):
        raise ValueError(f"num_components must be <= min(feature dim, training frames) = "
                         f"{min(N, S * T)}, got {num_components}")
    flat = train.reshape(S * T, N)
    mean = flat.mean(axis=0)
    _, sv, vt = np.linalg.svd(flat - mean, full_matrices=False)
    components = vt[:num_components]  # (C, N), orthonormal rows
    var = sv**2 / max(S * T - 1, 1)
    explained = var[:num_components] / var.sum() if var.sum() > 0 else np.zeros(num_components)
    scale = np.ones(num_components)
    if whiten:
        sd = np.sqrt(var[:num_components])
        # A component with no variance (more components than the data's rank) keeps unit scale.
        scale = np.where(sd > 1e-12 * sd[0], sd, 1.0)

    def project(x):
        return ((x - mean) @ components.T) / scale

    return project(train), project(test), explained


def _lagged_inputs(scores, num_lags):
    """(S, T, L·C) inputs [y_{t−1}, …, y_{t−L}] (dynamax's order); before the first frame the
    sequence is padded with copies of its first frame, a stationary start."""
    S, T, C = scores.shape
    padded = np.concatenate([np.repeat(scores[:, :1], num_lags, axis=1), scores], axis=1)
    return np.concatenate([padded[:, num_lags - lag: num_lags - lag + T]
                           for lag in range(1, num_lags + 1)], axis=2)


def pca_arhmm_segment(
    train,
    test,
    num_states: int,
    num_components: int = 10,
    num_lags: int = 1,
    num_iters: int = 50,
    seed: int = 0,
    stickiness: float | None = None,
    whiten: bool = False,
):
    r"""Segment frame sequences with the MoSeq pipeline: PCA, then an AR-HMM fitted by EM.

    1. :func:`pca_scores`: the scores of every frame on the top ``num_components`` principal
       components of all training frames, divided by one common scale so that their mean
       square over the training frames is 1 (``whiten=False``: the PCA geometry is kept, the
       start's unit covariances fit the data), or each by its own sd (``whiten=True``: the
       low-variance components, mostly pixel noise, then weigh as much as the leading ones).
    2. An autoregressive HMM on the scores y_t (dynamax ``LinearAutoregressiveHMM``),
       y_t | z_t = k ~ N(Σ_l A_{k,l} y_{t−l} + b_k, Σ_k), z a Markov chain whose transition
       rows have the prior Dir(1.1·1 + κ e_k), κ = ``stickiness``. Start: biases at k-means
       centroids of the training scores, A = 0, Σ = I, transitions drawn from the prior (key
       ``seed``); then ``num_iters`` EM iterations on all training sequences together (MAP
       for the transitions, maximum likelihood for the emissions). Before the first frame
       of a sequence the lags are copies of that frame (a stationary start).
    3. Labels: each sequence's Viterbi path under the fitted model, train and test.

    Stickiness. The M-step's self-transition of state k is the prior's mode,
    (n_kk + κ + 0.1) / (n_k + κ + 0.1·K) with n_kk the expected self-transitions out of n_k
    expected visits. The default κ = S·T (the number of training frames) is a strong
    preference for staying: with n_k ≈ S·T/K the self-transitions are at least ≈ K/(K + 1)
    (0.86 for K = 6, 0.91 for K = 10), the range of behaviours lasting 6–15 frames
    (0.83–0.93), so the emissions, not a weak transition matrix, must justify each switch.
    A κ small next to n_k leaves the transitions at their maximum likelihood, and the AR-HMM
    splits behaviours into runs a few frames long. On ``make_mouse_dataset(seed=0)`` (100
    training and 20 test windows of 100 frames, K = 6, C = 10) κ = 100 gives test NMI 0.74,
    boundary F1 0.73 and runs of 5.8 frames on average, κ = S·T gives 0.77, 0.86 and 7.5
    (true runs: 9.6), and κ = 10⁵ little more; ``whiten=True`` lowers the NMI to 0.68.

    Args:
        train: (S, T, N) float training frames (e.g. ``flatten_frames(bench.train.frames)``).
        test: (S', T', N) float held-out frames, same N (T' may differ from T).
        num_states: K, 1 ≤ K ≤ S·T discrete states.
        num_components: C principal components, 1 ≤ C ≤ min(N, S·T).
        num_lags: L ≥ 1 autoregressive lags.
        num_iters: EM iterations, ≥ 1.
        seed: int ≥ 0, the initialisation's PRNG seed.
        stickiness: κ ≥ 0, pseudo-counts of self-transitions per state in the transition
            prior; ``None`` (default): S·T.
        whiten: scale each PC score to unit training variance (default: one common scale).
    Returns:
        (train_labels (S, T), test_labels (S', T')), int64 states in 0..K−1 (some may be
        unused).
    Raises:
        ValueError: on bad shapes or arguments, non-finite frames, or an EM fit that ends
            with non-finite parameters (too many states, components or lags for the data:
            a state left with fewer frames than C·L + 1 has a singular regression).
        ImportError: without dynamax (the optional extra ``oracle``).
    """
    train, test = _pair(train, test, "train", "test")
    S, T, _ = train.shape
    num_states = _int("num_states", num_states, 1)
    num_lags = _int("num_lags", num_lags, 1)
    num_iters = _int("num_iters", num_iters, 1)
    seed = _int("seed", seed, 0)
    stickiness = float(S * T if stickiness is None else stickiness)
    if not (np.isfinite(stickiness) and stickiness >= 0):
        raise ValueError(f"stickiness must be finite and >= 0, got {stickiness}")
    if num_states > S * T:
        raise ValueError(f"num_states must be <= the number of training frames {S * T}, "
                         f"got {num_states}")
    y_train, y_test, _ = pca_scores(train, test, num_components, whiten)
    if not whiten:
        # One scale for all components: EM is equivariant to it; it only fits the data to
        # the unit covariances of the start.
        rms = np.sqrt(np.mean(y_train**2))
        if rms > 0:
            y_train, y_test = y_train / rms, y_test / rms

    # dynamax is the optional "oracle" extra: import it only here.
    import jax
    import jax.numpy as jnp
    from dynamax.hidden_markov_model import LinearAutoregressiveHMM

    C = y_train.shape[2]
    model = LinearAutoregressiveHMM(num_states, C, num_lags=num_lags,
                                    transition_matrix_stickiness=stickiness)
    dtype = jnp.asarray(0.0).dtype  # float32 unless jax_enable_x64
    emissions = jnp.asarray(y_train, dtype)
    inputs = jnp.asarray(_lagged_inputs(y_train, num_lags), dtype)
    params, props = model.initialize(jax.random.PRNGKey(seed), method="kmeans",
                                     emissions=emissions.reshape(-1, C))
    params, _ = model.fit_em(params, props, emissions, inputs, num_iters=num_iters,
                             verbose=False)
    if not all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(params)):
        raise ValueError(f"the AR-HMM fit ended with non-finite parameters (num_states="
                         f"{num_states}, num_components={C}, num_lags={num_lags}): use fewer "
                         "states or components, or more training frames")

    viterbi = jax.jit(jax.vmap(model.most_likely_states, in_axes=(None, 0, 0)))

    def label(y):
        lagged = jnp.asarray(_lagged_inputs(y, num_lags), dtype)
        return np.asarray(viterbi(params, jnp.asarray(y, dtype), lagged), np.int64)

    return label(y_train), label(y_test)


def kmeans_segment(train_latents, test_latents, num_states: int, seed: int = 0,
                   num_restarts: int = 5):
    """Label every time point by its nearest k-means centroid, fitted on all training points.

    k-means++ initialisation and Lloyd iterations (``scipy.cluster.vq.kmeans2``) on the S·T
    training points, ``num_restarts`` times from seeds drawn from ``seed``, keeping the fit
    with the lowest distortion (mean squared distance to the nearest centroid); time order
    is ignored. Latents are used as given (no standardisation).

    Args:
        train_latents: (S, T, D) float per-frame features, e.g. posterior means or PC scores.
        test_latents: (S', T', D) float, same D.
        num_states: K clusters, 1 ≤ K ≤ S·T.
        seed: int ≥ 0.
        num_restarts: k-means runs, ≥ 1.
    Returns:
        (train_labels (S, T), test_labels (S', T')), int64 cluster indices in 0..K−1.
    Raises:
        ValueError: on bad shapes or arguments or non-finite latents.
    """
    from scipy.cluster.vq import kmeans2, vq

    train, test = _pair(train_latents, test_latents, "train_latents", "test_latents")
    num_states = _int("num_states", num_states, 1)
    seed = _int("seed", seed, 0)
    num_restarts = _int("num_restarts", num_restarts, 1)
    S, T, D = train.shape
    if num_states > S * T:
        raise ValueError(f"num_states must be <= the number of training points {S * T}, "
                         f"got {num_states}")
    points = train.reshape(S * T, D)
    best, best_distortion = None, np.inf
    for child in np.random.SeedSequence(seed).spawn(num_restarts):
        with warnings.catch_warnings():
            # An empty cluster keeps its centroid; the restart is then simply worse.
            warnings.simplefilter("ignore")
            centroids, _ = kmeans2(points, num_states, minit="++",
                                   seed=np.random.default_rng(child))
        _, dist = vq(points, centroids, check_finite=False)
        distortion = float(np.mean(dist**2))
        if distortion < best_distortion:
            best, best_distortion = centroids, distortion

    def label(x):
        codes, _ = vq(x.reshape(-1, D), best, check_finite=False)
        return codes.astype(np.int64).reshape(x.shape[:2])

    return label(train), label(test)


def segmentation_scores(truth, pred, tolerance: int = 3) -> dict:
    """Agreement of a segmentation with the true labels, JSON-ready.

    Args:
        truth: (S, T) (or (T,)) int true labels.
        pred: same shape, int predicted labels; values need not correspond to ``truth``'s.
        tolerance: frames, ≥ 0, within which a predicted change point matches a true one.
    Returns:
        {"nmi": float, "ari": float, "boundary_f1": float, "states_used": int}:
        :func:`~svae_core.evaluation.normalized_mutual_information` and
        :func:`~svae_core.evaluation.adjusted_rand_index` over all S·T frames, the ``f1`` of
        :func:`~svae_core.evaluation.boundary_f1` (change points within each sequence), and
        the number of distinct predicted labels.
    Raises:
        ValueError: on mismatched or empty shapes, non-integer labels or a bad tolerance.
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape or truth.ndim not in (1, 2) or truth.size == 0:
        raise ValueError(f"truth and pred must have the same shape (S, T) or (T,), non-empty; "
                         f"got {truth.shape} and {pred.shape}")
    for name, x in (("truth", truth), ("pred", pred)):
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.bool_)):
            raise ValueError(f"{name} must hold integer labels, got dtype {x.dtype}")
    tolerance = _int("tolerance", tolerance, 0)
    return {
        "nmi": float(normalized_mutual_information(truth.ravel(), pred.ravel())),
        "ari": float(adjusted_rand_index(truth.ravel(), pred.ravel())),
        "boundary_f1": float(boundary_f1(truth, pred, tolerance=tolerance)["f1"]),
        "states_used": int(np.unique(pred).size),
    }
