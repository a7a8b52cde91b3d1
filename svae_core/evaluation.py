r"""Held-out evaluation in the units of Zhao & Linderman (2023, §4.1): ELBO estimates with
Monte Carlo error bars, the "percentage of the gap" between the static null model and the true
model, and an audit that refuses an ELBO above the true log-likelihood.

Units. A model returns nats per sequence (see :mod:`svae_core.models.base`); the paper reports
nats per time step per observation dimension, i.e. per-sequence nats / (T·N)
(:func:`per_step_per_dim`). The reconstruction term of the model contract scores every step
of y that was observed, hidden from the encoder by ``mask`` or not, so T counts every observed
step.

Typical use, with the data of :func:`svae_core.datasets.make_lds_benchmark`::

    est = evaluate_elbo(model, params, bench.y_test, key)
    true_ll = per_step_per_dim(ssm_log_likelihood(bench.ssm, bench.y_test), T, N).mean()
    null_ll = per_step_per_dim(static_null_log_likelihood(bench.ssm, bench.y_test), T, N).mean()
    audit_elbo_bound(est.mean, est.se, true_ll)     # raises if the ELBO beats log p(y)
    gap_fraction(est.mean, null_ll, true_ll)        # 1 = as good as the true model
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ELBOAboveLikelihoodError",
    "ELBOEstimate",
    "adjusted_rand_index",
    "audit_elbo_bound",
    "evaluate_elbo",
    "gap_fraction",
    "linear_decoding_r2",
    "per_step_per_dim",
]


def per_step_per_dim(total_nats, num_timesteps: int, obs_dim: int):
    """Nats per sequence → the paper's unit, nats per time step per observation dimension.

    Args:
        total_nats: scalar or array of per-sequence log-densities / ELBOs (nats).
        num_timesteps: T ≥ 1 steps per sequence.  obs_dim: N ≥ 1 observation dimensions.
    Returns:
        ``total_nats / (T·N)``, same shape (and array type) as the input.
    """
    if not (num_timesteps >= 1 and obs_dim >= 1):
        raise ValueError(f"need num_timesteps, obs_dim >= 1, got {num_timesteps}, {obs_dim}")
    return total_nats / (num_timesteps * obs_dim)


class ELBOEstimate(NamedTuple):
    """Result of :func:`evaluate_elbo`.

    elbo: (S,) float64, nats per sequence: each sequence's ELBO averaged over the repeats.
    elbo_repeats: (S, K) float64, nats per sequence: the K independent estimates.
    reconstruction, kl: (S,) float64, nats per sequence: the model's two ELBO terms
        (ELBO = reconstruction − kl), averaged over the repeats.
    mean: float, nats per scored time step per obs dim: Σ_s elbo[s] / (N · Σ_s T_s), where
        T_s is the number of scored steps of sequence s (T, or the count of ``observed``
        steps). With every step observed this is the test-set average of elbo / (T·N); with
        missing data compare it with ``Σ_s ssm_log_likelihood(ssm, y, observed)[s]`` over the
        same denominator (:attr:`num_scored`·N).
    se: float, same unit: Monte Carlo standard error of ``mean`` for this fixed test set,
        sqrt(Σ_s var_k(elbo_repeats[s]) / K) / (N · Σ_s T_s) with the unbiased (ddof = 1)
        variance over repeats. It measures only the sampling noise of the estimator (the
        reparameterised samples): the exact ELBO of these S sequences, in this unit, lies
        within a few ``se`` of ``mean``. It is the right error bar for comparing against
        quantities computed on the same sequences (the true and null log-likelihoods).
    sequence_se: float, same unit (all-observed case): standard error of ``mean`` as an
        estimate of the expected ELBO over new sequences from the data distribution, i.e.
        std over sequences of elbo / (T_s·N), / √S (it includes the MC noise; NaN for S = 1).
        Use it to compare results on different test sets.
    num_timesteps: T.  obs_dim: N.  num_samples: samples per estimate.
    num_scored: Σ_s T_s, the number of scored (observed) time steps in the test set.
    """

    elbo: np.ndarray
    elbo_repeats: np.ndarray
    reconstruction: np.ndarray
    kl: np.ndarray
    mean: float
    se: float
    sequence_se: float
    num_timesteps: int
    obs_dim: int
    num_samples: int
    num_scored: int


def _elbo_fn_uncached(model, num_samples):
    def one(params, y, mask, observed, key):
        terms = model.apply(params, y, mask, key, num_samples=num_samples, observed=observed)
        return jnp.stack([terms.elbo, terms.reconstruction, terms.kl])

    over_repeats = jax.vmap(one, in_axes=(None, None, None, None, 0))
    return jax.jit(jax.vmap(over_repeats, in_axes=(None, 0, 0, 0, 0)))


_elbo_fn_cached = functools.lru_cache(maxsize=16)(_elbo_fn_uncached)


def _elbo_fn(model, num_samples):
    try:
        return _elbo_fn_cached(model, num_samples)
    except TypeError:  # an unhashable module: compile afresh
        return _elbo_fn_uncached(model, num_samples)


def _per_sequence_flags(flags, name, S, T):
    if flags is None:
        return jnp.ones((S, T), bool)
    flags = jnp.asarray(flags)
    if flags.shape == (T,):
        flags = jnp.broadcast_to(flags, (S, T))
    if flags.shape != (S, T):
        raise ValueError(f"{name} must have shape (S, T)=({S}, {T}) or (T,), got {flags.shape}")
    if flags.dtype != jnp.bool_ and not jnp.issubdtype(flags.dtype, jnp.integer):
        raise ValueError(f"{name} must be boolean (True = visible/observed), got {flags.dtype}")
    return flags.astype(bool)


EVAL_BATCH_SIZE = 32  # sequences per compiled evaluation call: bounds memory


def evaluate_elbo(
    model,
    params,
    y,
    key: jax.Array,
    num_samples: int = 16,
    num_repeats: int = 4,
    mask=None,
    batch_size: int = EVAL_BATCH_SIZE,
    observed=None,
) -> ELBOEstimate:
    """Estimate the held-out ELBO of every sequence, with a Monte Carlo standard error.

    Sequence s, repeat k is one call ``model.apply(params, y[s], mask[s], key_sk,
    num_samples=num_samples, observed=observed[s])`` (the model contract of
    :mod:`svae_core.models.base`), with ``key_sk = jax.random.split(key, (S, K))[s, k]``: the
    estimates do not depend on ``batch_size``. Calls are jitted and vmapped over repeats and
    over chunks of ``batch_size`` sequences (the last chunk is padded, so one compilation
    serves all chunks; the compiled function is cached per (model, num_samples)).

    The two masks differ as in the contract: ``mask`` hides steps from the encoder only, and
    those steps are still scored (an imputation test: the ELBO drops, it stays a valid bound
    on log p(y)); ``observed`` marks steps that were never observed, which are neither seen
    nor scored (the ELBO bounds log p(y_observed), see
    :func:`svae_core.datasets.ssm_log_likelihood`'s ``mask``).

    Args:
        model: a flax module following the model contract (accepting ``observed``).
        params: its parameters.
        y: (S, T, N) test sequences (a single (T, N) sequence is treated as S = 1).
        key: JAX PRNG key.
        num_samples: posterior samples inside each estimate (the model's ``num_samples``).
        num_repeats: K ≥ 2 independent estimates per sequence (needed for the error bar).
        mask: encoder mask, True = visible; (S, T), or (T,) for all sequences; None = all.
        batch_size: sequences per compiled call (bounds memory).
        observed: True = observed; (S, T) or (T,); None = every step observed.
    Returns:
        :class:`ELBOEstimate` (per-sequence nats; ``mean``/``se`` in nats per scored step
        per obs dim).
    Raises:
        ValueError: on bad shapes, ``num_repeats < 2``, non-positive sizes, or a sequence
            with no observed step.
    """
    y = jnp.asarray(y)
    if y.ndim == 2:
        y = y[None]
    if y.ndim != 3 or min(y.shape) < 1:
        raise ValueError(f"y must have shape (S, T, N) (or (T, N)), got {y.shape}")
    S, T, N = y.shape
    if not (isinstance(num_repeats, int) and num_repeats >= 2):
        raise ValueError(f"num_repeats must be an int >= 2 (the SE needs a spread), "
                         f"got {num_repeats!r}")
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    mask = _per_sequence_flags(mask, "mask", S, T)
    observed = _per_sequence_flags(observed, "observed", S, T)
    scored = np.asarray(observed.sum(axis=1), np.int64)  # (S,) T_s
    if np.any(scored == 0):
        raise ValueError(f"sequences {np.flatnonzero(scored == 0).tolist()} have no observed "
                         "step; drop them (their ELBO is 0 by definition)")
    keys = jax.random.split(key, (S, num_repeats))
    fn = _elbo_fn(model, num_samples)

    chunk = min(batch_size, S)
    out = []
    for start in range(0, S, chunk):
        idx = np.minimum(np.arange(start, start + chunk), S - 1)  # pad by repeating the last
        vals = fn(params, y[idx], mask[idx], observed[idx], keys[idx])  # (chunk, K, 3)
        out.append(np.asarray(vals, np.float64)[: min(chunk, S - start)])
    terms = np.concatenate(out)  # (S, K, 3): elbo, reconstruction, kl
    repeats = terms[..., 0]

    per_seq = repeats.mean(axis=1)
    unit = float(N * scored.sum())  # nats per scored step per dim
    mc_var_of_sum = repeats.var(axis=1, ddof=1).sum() / num_repeats
    normalised = per_seq / (scored * N)
    seq_se = normalised.std(ddof=1) / np.sqrt(S) if S > 1 else float("nan")
    return ELBOEstimate(
        elbo=per_seq,
        elbo_repeats=repeats,
        reconstruction=terms[..., 1].mean(axis=1),
        kl=terms[..., 2].mean(axis=1),
        mean=float(per_seq.sum() / unit),
        se=float(np.sqrt(mc_var_of_sum) / unit),
        sequence_se=float(seq_se),
        num_timesteps=T,
        obs_dim=N,
        num_samples=num_samples,
        num_scored=int(scored.sum()),
    )


def gap_fraction(elbo, null_ll, true_ll):
    """The paper's normalised score: the fraction of the null→true gap an ELBO covers.

    ``(elbo − null_ll) / (true_ll − null_ll)``: 0 = no better than the static null model,
    1 = as good as the true model's log-likelihood (the most a correct ELBO can reach). Any
    consistent unit (nats per sequence, or per step per dim); scalars (test-set averages, as in
    the paper's figure) or broadcastable arrays.

    Returns:
        float for scalar inputs, else an ndarray.
    Raises:
        ValueError: when ``true_ll − null_ll`` is not positive somewhere (the score would be
            meaningless; on average over sequences from the true model it is a KL ≥ 0).
    """
    elbo, null_ll, true_ll = (np.asarray(v, np.float64) for v in (elbo, null_ll, true_ll))
    gap = true_ll - null_ll
    if not np.all(gap > 0):
        raise ValueError(f"true_ll − null_ll must be > 0, got {gap}")
    out = (elbo - null_ll) / gap
    return float(out) if out.ndim == 0 else out


class ELBOAboveLikelihoodError(ValueError):
    """A held-out ELBO exceeds the true log-likelihood beyond Monte Carlo error: a bug."""


def audit_elbo_bound(elbo_mean, elbo_se, true_ll_mean, z: float = 4.0, atol: float = 0.0):
    """Check ELBO ≤ log p(y) up to Monte Carlo error; return the margin log p(y) − ELBO.

    A model's ELBO is at most its own log-likelihood, and on held-out data from the true model
    E[log p_model(y)] ≤ E[log p_true(y)] (Gibbs' inequality). On a finite held-out set of S
    sequences the model's average log-likelihood can exceed the true one only by sampling
    luck, and for that the model must be nearly exact: with KL = E[log p_true − log p_model]
    per sequence the excess is about z·√(2·KL/S) − KL ≤ z²/(2S) nats per sequence (0.08 for
    z = 4, S = 100, i.e. 8e-5 nats per step per dim at T·N = 1000), negligible next to a
    typical Monte Carlo error; pass it as ``atol`` when the estimate's SE is that small. So an
    estimated held-out ELBO above ``true_ll_mean`` by more than ``z`` Monte Carlo standard
    errors is a bug (a mis-scaled decoder variance, a dropped constant, a mismatch of units or
    of which steps are scored, or test data that leaked into training), never a result.

    All three numbers in one unit (e.g. nats per step per dim), computed on the same test
    sequences, with ``true_ll_mean`` the log-likelihood of exactly the data the ELBO scores
    (the model contract's reconstruction scores every observed step, even ones hidden from the
    encoder by ``mask``; never-``observed`` steps are left out of both).

    Args:
        elbo_mean: the ELBO estimate (e.g. :attr:`ELBOEstimate.mean`).
        elbo_se: its Monte Carlo standard error (:attr:`ELBOEstimate.se`), finite, ≥ 0.
        true_ll_mean: the true log-likelihood, same unit and sequences.
        z: allowed excess in standard errors.
        atol: extra absolute slack in the same unit (for rounding), default 0.
    Returns:
        float: ``true_ll_mean − elbo_mean`` (≥ −(z·se + atol); positive is the usual case).
    Raises:
        ELBOAboveLikelihoodError: if ``elbo_mean − true_ll_mean > z·elbo_se + atol``.
        ValueError: on a negative or non-finite ``elbo_se`` or non-finite means.
    """
    elbo_mean, elbo_se, true_ll_mean = float(elbo_mean), float(elbo_se), float(true_ll_mean)
    if not (np.isfinite(elbo_se) and elbo_se >= 0):
        raise ValueError(f"elbo_se must be finite and >= 0, got {elbo_se}")
    if not (np.isfinite(elbo_mean) and np.isfinite(true_ll_mean)):
        raise ValueError(f"non-finite ELBO {elbo_mean} or true log-likelihood {true_ll_mean}")
    margin = true_ll_mean - elbo_mean
    excess = -margin
    if excess > z * elbo_se + atol:
        in_se = f"{excess / elbo_se:.1f} standard errors" if elbo_se > 0 else "zero SE"
        raise ELBOAboveLikelihoodError(
            f"held-out ELBO {elbo_mean:.6g} exceeds the true log-likelihood {true_ll_mean:.6g} "
            f"by {excess:.3g} ({in_se}; allowed z={z:g} x SE {elbo_se:.3g} + atol {atol:g}). "
            "An ELBO above log p(y) is a bug, not a result: check the decoder variance, "
            "dropped constants, units (nats per sequence vs per step per dim) and that both "
            "numbers score the same steps of the same sequences."
        )
    return margin


def _decoding_arrays(features, targets, split):
    """Validate one split; return (X (n, D), Y (n, K), single-target flag), float64."""
    X, Y = np.asarray(features), np.asarray(targets)
    if X.ndim < 2 or X.shape[-1] < 1:
        raise ValueError(f"features_{split} must have shape (..., D) with at least one leading "
                         f"axis and D >= 1, got {X.shape}")
    lead = X.shape[:-1]
    # A target array shaped like the features' leading axes is one target (K = 1); otherwise
    # its leading axes must match the features' and its last axis holds the K targets.
    single = Y.shape == lead
    if not single and (Y.ndim < 2 or Y.shape[:-1] != lead or Y.shape[-1] < 1):
        raise ValueError(f"targets_{split} must have shape features.shape[:-1] + (K,) = "
                         f"{lead} + (K,), or {lead} for one target; got {Y.shape} against "
                         f"features_{split} {X.shape}")
    X = X.reshape(-1, X.shape[-1]).astype(np.float64)
    Y = Y.reshape(X.shape[0], -1).astype(np.float64)
    if X.shape[0] < 1:
        raise ValueError(f"features_{split} has no rows: {np.shape(features)}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
        raise ValueError(f"features_{split} and targets_{split} must be finite")
    return X, Y, single


def linear_decoding_r2(features_train, targets_train, features_test, targets_test):
    """Held-out R² of a least-squares linear read-out (with intercept) of targets from features.

    Zhao & Linderman (2023, §4.3, Fig. 4) regress the true pendulum state onto the posterior
    means: fit ``y ≈ W x + c`` by ordinary least squares on the training rows, then score each
    target column k on the test rows as

        R²_k = 1 − Σ_i (y_ik − ŷ_ik)² / Σ_i (y_ik − ȳ_k)²,   ȳ_k the TEST mean of column k,

    so 1 = perfect, 0 = no better than predicting the test mean, negative = worse (possible
    out of sample). All leading axes are flattened into rows, e.g. (S, T, D) posterior means
    against (S, T, 2) targets (sin θ, cos θ) or (S, T) angular velocity. The fit is computed in
    float64 on centred data (the intercept then is ȳ_train − W x̄_train) with ``np.linalg.lstsq``,
    which returns the minimum-norm solution when features are collinear.

    Args:
        features_train: (..., D) regressors, e.g. posterior means (S, T, D).
        targets_train: (..., K) with the same leading axes, or shaped like
            ``features_train.shape[:-1]`` for a single target.
        features_test: (..., D) with the same D.  targets_test: as ``targets_train`` for them,
            with the same K (or single) as the training targets.
    Returns:
        (K,) float64 array of per-column R², or a float for a single target. Average columns
        with ``r2.mean()`` (e.g. one number for the angle from its (sin θ, cos θ) pair). A
        column whose test targets are constant has no variance to explain: NaN.
    Raises:
        ValueError: on mismatched or empty shapes, different D or K between the splits, or
            non-finite values.
    """
    X_tr, Y_tr, single_tr = _decoding_arrays(features_train, targets_train, "train")
    X_te, Y_te, single_te = _decoding_arrays(features_test, targets_test, "test")
    if X_tr.shape[1] != X_te.shape[1]:
        raise ValueError(f"train and test features differ in D: {X_tr.shape[1]} vs "
                         f"{X_te.shape[1]}")
    if single_tr != single_te or Y_tr.shape[1] != Y_te.shape[1]:
        raise ValueError(f"train and test targets differ in K: {np.shape(targets_train)} vs "
                         f"{np.shape(targets_test)} (against features "
                         f"{np.shape(features_train)}, {np.shape(features_test)})")
    x_mean, y_mean = X_tr.mean(axis=0), Y_tr.mean(axis=0)
    W, *_ = np.linalg.lstsq(X_tr - x_mean, Y_tr - y_mean, rcond=None)  # (D, K)
    pred = (X_te - x_mean) @ W + y_mean
    sse = np.sum((Y_te - pred) ** 2, axis=0)
    sst = np.sum((Y_te - Y_te.mean(axis=0)) ** 2, axis=0)
    # Test exactly for constant columns: their rounded SST can be a tiny positive number.
    varies = np.ptp(Y_te, axis=0) > 0
    r2 = np.where(varies, 1.0 - sse / np.where(varies, sst, 1.0), np.nan)
    return float(r2[0]) if single_tr else r2


def contingency_table(labels_true, labels_pred) -> np.ndarray:
    """(I, J) int64 counts n_ij of points in cluster i of one partition and j of the other,
    clusters numbered by sorted label value.

    Raises:
        ValueError: unless both are 1-D of the same length N ≥ 1.
    """
    a, b = np.asarray(labels_true), np.asarray(labels_pred)
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two label arrays of the same shape (N,), N >= 1; got "
                         f"{a.shape} and {b.shape}")
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1), np.int64)
    np.add.at(table, (a, b), 1)
    return table


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """Adjusted Rand index of two partitions of the same N points (Hubert & Arabie, 1985).

    The Rand index counts the pairs of points that both partitions treat alike (together in
    both, or apart in both); the adjusted index subtracts its expectation when the two
    partitions are drawn at random with their cluster sizes fixed (hypergeometric model) and
    rescales, so 1 = identical partitions up to relabelling, ≈ 0 = chance agreement, negative
    = less than chance. From the contingency table n_ij (points in cluster i of one and j of
    the other), with a_i, b_j its row and column sums and C(x) = x(x − 1)/2::

        ARI = (Σ_ij C(n_ij) − E) / (½(Σ_i C(a_i) + Σ_j C(b_j)) − E),
        E   = Σ_i C(a_i) · Σ_j C(b_j) / C(N).

    The denominator vanishes only when both partitions are one cluster or both are all
    singletons (or N < 2); the partitions then agree and the index is 1.0.

    Args:
        labels_true, labels_pred: (N,) cluster labels, any integer values (only equality
            matters, so the result is invariant to relabelling), N ≥ 1.
    Returns:
        float in [−1, 1]; symmetric in its arguments.
    Raises:
        ValueError: unless both are 1-D of the same length N ≥ 1.
    """
    table = contingency_table(labels_true, labels_pred)

    def pairs(counts):  # Σ C(count, 2) as an exact Python integer
        return int(np.sum(counts * (counts - 1) // 2))

    index, rows, cols = pairs(table), pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    n = int(table.sum())
    total = n * (n - 1) // 2
    if (rows == cols == total) or (rows == cols == 0):  # one cluster each, or all singletons
        return 1.0
    expected = rows * cols / total  # exact integer product, one rounding
    return float((index - expected) / (0.5 * (rows + cols) - expected))


def normalized_mutual_information(labels_true, labels_pred) -> float:
    """Normalised mutual information of two partitions of the same N points, with the
    arithmetic-mean normalisation: NMI = I(U; V) / ½(H(U) + H(V)), entropies in nats of the
    empirical cluster frequencies. 1 = identical up to relabelling, 0 = independent; 1.0 when
    both are a single cluster (nothing to disagree on), 0.0 when exactly one is.

    Args:
        labels_true, labels_pred: (N,) integer labels (only equality matters), N ≥ 1.
    Returns:
        float in [0, 1], symmetric in its arguments.
    Raises:
        ValueError: unless both are 1-D of the same length N ≥ 1.
    """
    table = contingency_table(labels_true, labels_pred)
    joint = table / table.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    entropy = lambda p: float(-np.sum(p * np.log(p)))
    ha, hb = entropy(pa), entropy(pb)
    if ha == 0.0 and hb == 0.0:
        return 1.0
    nz = joint > 0
    mi = float(np.sum(joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])))
    return float(np.clip(mi / (0.5 * (ha + hb)), 0.0, 1.0))


def boundaries(labels) -> np.ndarray:
    """Indices t ≥ 1 at which a label sequence (T,) changes (labels[t] ≠ labels[t − 1])."""
    labels = np.asarray(labels)
    return np.flatnonzero(labels[1:] != labels[:-1]) + 1


def boundary_f1(labels_true, labels_pred, tolerance: int = 3) -> dict:
    """Precision, recall and F1 of the change points of a segmentation against the true ones,
    a predicted change point counting as correct when it lies within ``tolerance`` frames of a
    true one not yet matched (each true change point matches at most one prediction; matching
    in time order is a maximum matching for points on a line).

    Args:
        labels_true, labels_pred: (T,) or (S, T) label sequences (change points are counted
            within each sequence, never across). Label values need not correspond.
        tolerance: frames, ≥ 0.
    Returns:
        {"precision", "recall", "f1", "true", "predicted", "matched"}; precision (recall) is
        1.0 when there are no predicted (true) change points, F1 0.0 when either ratio is 0.
    Raises:
        ValueError: on shape mismatch or a negative tolerance.
    """
    a, b = np.atleast_2d(np.asarray(labels_true)), np.atleast_2d(np.asarray(labels_pred))
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] < 1:
        raise ValueError(f"need label arrays of the same shape (T,) or (S, T); got "
                         f"{np.shape(labels_true)} and {np.shape(labels_pred)}")
    if not (isinstance(tolerance, int | np.integer) and tolerance >= 0):
        raise ValueError(f"tolerance must be an int >= 0, got {tolerance!r}")
    n_true = n_pred = matched = 0
    for row_true, row_pred in zip(a, b, strict=True):
        bt, bp = boundaries(row_true), boundaries(row_pred)
        n_true, n_pred = n_true + bt.size, n_pred + bp.size
        i = 0
        for p in bp:
            while i < bt.size and bt[i] < p - tolerance:
                i += 1
            if i < bt.size and abs(bt[i] - p) <= tolerance:
                matched, i = matched + 1, i + 1
    precision = matched / n_pred if n_pred else 1.0
    recall = matched / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true": n_true,
            "predicted": n_pred, "matched": matched}
