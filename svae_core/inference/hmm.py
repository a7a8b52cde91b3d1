r"""Exact inference in a discrete-state chain (hidden Markov model) with node log-potentials.

The model, stated once for every routine in this module::

    prior      p(z) = π(z_1) ∏_{t=1}^{T-1} A_t(z_t, z_{t+1}),   z_t ∈ {0, …, K−1}
    potentials φ_t(z_t) = exp(log_potentials[t, z_t]),          t = 1..T
    posterior  q(z) ∝ p(z) ∏_t φ_t(z_t)
    log_normalizer = log Σ_z p(z) ∏_t φ_t(z_t)

with π = exp(log_initial) (K,) and A_t = exp(log_transitions) (K, K), row i = from state i,
time-invariant, or time-varying (T−1, K, K) with entry t−1 for the step z_t → z_{t+1}. π and
the rows of A_t need not be normalised: q is then the normalised posterior of the unnormalised
model, and log_normalizer includes log Σπ and the row sums (for normalised π and rows it is
log E_p[∏ φ_t]). ``-inf`` entries forbid a transition or a state; results stay finite, with
finite gradients, as long as some path has positive probability (within float range: see
Numerics). A row of zeros in log_potentials is exactly a missing step (φ_t ≡ 1): q(z_t) there
is what the prior's dynamics carry from the observed steps, and the row adds nothing to
log_normalizer (for normalised π and rows, appending zero rows leaves it unchanged and zeroing
step t gives the log-normalizer of the chain without φ_t).

Numerics. Messages are probability vectors normalised at every step, with the log scales they
shed summed in log space: a step is one product with a K × K matrix in probability space and
one conditioning on exponentiated potentials, not a logsumexp over K × K, and float32 stays
finite for T = 100 000 and potentials of magnitude 10³. The transitions enter normalised:
A_t = M_t diag(exp c_t) with M_t column-stochastic, the log column sums c_t joining the log
potentials of step t+1 into the evidence u_{t+1} (u_1 = log φ_1 + log π), and, for the parallel
path's backward filter, A_t = diag(exp r_t) P_t with P_t row-stochastic, r_t likewise. Every log
is guarded so that log 0 = -inf has a zero (not NaN) gradient.

The two paths shift the evidence differently before the exp. ``"parallel"`` conditions
q ∝ p ⊙ exp(u − s) with s the largest u among the states the prediction p can reach, so evidence
that disagrees with the prediction by any margin never underflows the reachable states to zero
(one exp of K numbers per step). ``"sequential"`` takes E_t = exp(u_t − max_k u_t(k)) for all
steps at once before its loops, so that a loop step holds no exp or log; a state whose evidence
is below the step's largest by more than the float range (e^-87 to e^-103 in float32) then
weighs 0 even where the states above it are unreachable.

The limit of probability space: a state whose filtered probability is below the smallest float
relative to the most probable one (e^-87 to e^-103 in float32, e^-745 in float64) is dropped
when propagating. That changes nothing unless the posterior must pass through it, i.e. unless
transitions are forbidden (or below ~e^-87) and the potentials differ by hundreds of nats (the
sequential path's shift above needs the same); then float32 results can be wrong, or degenerate
(log_normalizer -inf, zero marginals), but never NaN. A logsumexp over K × K per step would
avoid this at several times the cost for K ≳ 10, and K³ exps per step in the parallel path.

Smoothing. Neither path forms a ratio of a smoothed to a predicted probability, which overflows
when the prediction is tiny and the future certain; the marginals of all steps are formed at
once after the recursions (two products per pair-marginal entry; when the caller discards the
pair marginals, jit drops them).
``"sequential"``: a forward loop for the filter α_t ∝ p(z_t, φ_1..φ_t) and a backward loop for
β_t ∝ p(φ_{t+1}..φ_T | z_t), b_t = M_t (E_{t+1} ⊙ β_{t+1}) and β_t = b_t / Σ b_t, each loop
carrying one K-vector and its sum. q(z_t) ∝ α_t ⊙ β_t (a product of probabilities, so it shares
the limit above), and q(z_t = i, z_{t+1} = j) = q(z_t = i) M_t(i, j) E_{t+1}(j) β_{t+1}(j) / b_t(i),
a term of b_t(i) over their sum.
``"parallel"``: two-filter, the forward filter α_t and a backward filter
γ_t ∝ p(φ_t..φ_T | z_t), both normalised per step; q(z_t) ∝ α_t ⊙ exp(r_t) ⊙ P_t γ_{t+1} is
formed in log space, and q(z_t = i, z_{t+1} = j) = q(z_t = i) P_t(i, j) γ_{t+1}(j) /
(P_t γ_{t+1})(i).

Each routine has two implementations that agree to rounding: ``method="sequential"``
(``lax.scan``, O(T) depth; the smoother's forward and backward loops depend only on E, not on
each other) and ``method="parallel"``: a blocked scan over ≈√T blocks of ≈√T steps, running
both filters of the smoother at once (vmapped).
Within each block (all blocks at once) it runs K filters, one per state at the step before the
block (a K × K matrix product per step), each with its own log scale; a sequential walk across
the blocks then mixes each block's K filters into the true filter (a vector–matrix product per
step, all steps of a block at once). Depth O(√T), work ≈ T·K³, and the compiled program holds
the step twice whatever T is. This is :func:`.scan.chunked_scan`'s schedule specialised so that
the prefixes are vectors (K² per step, not K³) and no log scale is shared across rows. With a
generic matrix combine, :func:`.scan.chunked_scan` and ``lax.associative_scan`` were 1.1–5×
slower than it for the filter on CPU (float32, batch 10, K = 2, 5, 10, 30, T = 100, 1000,
10 000).

All functions are pure, jit-compiled, differentiable in every input, and vmap over batches.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from svae_core.inference.scan import chunked_scan

METHODS = ("parallel", "sequential")


class HMMFiltered(NamedTuple):
    """Filtered marginals q(z_t | φ_1..φ_t) (the model truncated after step t).

    marginals: (T, K).  log_normalizer: scalar, as in the module docstring.
    log_normalizer_increments: (T,) the per-step terms log Σ_{z_t} p(z_t, φ_1..φ_t) −
    log Σ_{z_{t-1}} p(z_{t-1}, φ_1..φ_{t-1}); they sum to log_normalizer.
    """

    marginals: jax.Array
    log_normalizer: jax.Array
    log_normalizer_increments: jax.Array


class HMMPosterior(NamedTuple):
    """Posterior marginals of q(z) ∝ p(z) ∏_t φ_t(z_t).

    marginals: (T, K), q(z_t = k).  pair_marginals: (T−1, K, K), q(z_t = i, z_{t+1} = j).
    log_normalizer: scalar, as in the module docstring.  transition_counts: (K, K), the
    expected transition counts Σ_t q(z_t = i, z_{t+1} = j) that EM and SVI steps need, formed
    without the per-step array (one K × T by T × K product for time-invariant transitions), so
    a caller that reads only these, the marginals and the log-normalizer never pays T·K² memory
    (jit drops pair_marginals when unused).
    """

    marginals: jax.Array
    pair_marginals: jax.Array
    log_normalizer: jax.Array
    transition_counts: jax.Array


def _transition_counts(weights, M, right):
    """Σ_t weights_t(i) M_t(i, j) right_t(j): (K, K). weights, right (T−1, K); M (K, K) or
    (T−1, K, K)."""
    if M.ndim == 2:
        return M * (weights.T @ right)
    return jnp.einsum("ti,tij,tj->ij", weights, M, right)


class _Chain(NamedTuple):
    """A chain in the form the message passing runs on (one direction).

    With q_t the filtered distribution at step t (probabilities, normalised), the predicted
    one is p_{t+1} = q_t M_t and q_{t+1} ∝ p_{t+1} ⊙ exp(u_{t+1}); p_1 = 1.
    M: (K, K) or (T−1, K, K) transitions in probability space, each column summing to 1
    (or 0).  log_evidence: (T, K) u_t, the log potential plus the log scale taken out of
    the transition into step t (log π at the first step); -inf allowed.
    """

    M: jax.Array
    log_evidence: jax.Array


# ----------------------------------------------------------------------------- validation


def _validate(log_initial, log_transitions, log_potentials, method):
    """Check shapes and promote dtypes; raise ValueError naming the shapes."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    init_shape = jnp.shape(log_initial)
    trans_shape = jnp.shape(log_transitions)
    pot_shape = jnp.shape(log_potentials)
    shapes = f"log_initial={init_shape}, log_transitions={trans_shape}, log_potentials={pot_shape}"
    if len(init_shape) != 1 or init_shape[0] < 1:
        raise ValueError(f"log_initial must have shape (K,) with K >= 1; got {shapes}")
    K = init_shape[0]
    if len(pot_shape) != 2 or pot_shape[1] != K:
        raise ValueError(f"log_potentials must have shape (T, K) with K={K} from log_initial; "
                         f"got {shapes}")
    T = pot_shape[0]
    if T < 1:
        raise ValueError(f"log_potentials must have T >= 1 steps; got {shapes}")
    if trans_shape not in ((K, K), (T - 1, K, K)):
        raise ValueError(
            f"log_transitions must have shape (K, K)=({K}, {K}) or time-varying "
            f"(T-1, K, K)=({T - 1}, {K}, {K}) for K={K}, T={T}; got {shapes}"
        )
    dtype = jnp.result_type(log_initial, log_transitions, log_potentials, jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"inputs must be real floating point, got dtype {dtype}")
    return tuple(jnp.asarray(x, dtype) for x in (log_initial, log_transitions, log_potentials))


def _check_num_samples(num_samples):
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")


# ----------------------------------------------------------------------------- guarded logs


def _finite_or_zero(x):
    return jnp.where(jnp.isfinite(x), x, 0.0)


def _safe_log(x):
    """log x for x ≥ 0, with log 0 = -inf and a zero (not NaN) gradient there."""
    positive = x > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), -jnp.inf)


def _max_shift(x, axis):
    """max over ``axis`` (kept), without gradient, 0 where it is not finite (all -inf)."""
    return lax.stop_gradient(_finite_or_zero(jnp.max(x, axis=axis, keepdims=True)))


def _exp_normalize(x, axis=-1):
    """(exp x / Σ exp x, log Σ exp x) over ``axis`` (an int or a tuple), by one exp of
    x − max x. All -inf gives (0, -inf) with zero gradients."""
    e = jnp.exp(x - _max_shift(x, axis))
    total = jnp.sum(e, axis=axis, keepdims=True)
    probs = e / jnp.where(total > 0, total, 1.0)
    return probs, jnp.squeeze(_safe_log(total) + _max_shift(x, axis), axis)


def _log_normalize(x, axis=-1):
    """x − log Σ exp x over ``axis`` (rows all -inf stay -inf), and log Σ exp x."""
    _, lse = _exp_normalize(x, axis)
    return x - _finite_or_zero(jnp.expand_dims(lse, axis)), lse


# ----------------------------------------------------------------------------- the chain


def _column_split(log_transitions):
    """log A = log M + c(j) with M column-stochastic: (M (…, K, K), c (…, K)). A column of
    -inf gives M = 0, c = -inf."""
    log_M, c = _log_normalize(log_transitions, -2)
    return jnp.exp(log_M), c


def _evidence(first, scales, log_potentials):
    """u_t = log φ_t + (first at t = 0, scales[t − 1] after); scales (K,) or (T−1, K)."""
    T, K = log_potentials.shape
    scales = jnp.broadcast_to(scales, (T - 1, K))
    return log_potentials + jnp.concatenate([first[None], scales])


def _chains(log_initial, log_transitions, log_potentials):
    """The forward and the backward chain, stacked on a leading axis of length 2; and the
    row-stochastic P_t (K, K) or (T−1, K, K) and the row log-sums r_t (T, K) (0 at T) with
    A_t(i, j) = exp(r_t(i)) P_t(i, j).

    Forward: M_t = A_t with its columns normalised, their log-sums moved into u_{t+1}; its
    filtered distributions are α_t ∝ p(z_t, φ_1..φ_t).
    Backward (time reversed): M = P_tᵀ (the transposed rows of A_t, normalised), u_t =
    log φ_t + r_t; its filtered distributions, reversed, are γ_t ∝ p(φ_t..φ_T | z_t) and its
    predicted ones β_t ∝ exp(−r_t) p(φ_{t+1}..φ_T | z_t).
    """
    T, K = log_potentials.shape
    M_fwd, c = _column_split(log_transitions)
    log_P, r = _log_normalize(log_transitions, -1)
    P = jnp.exp(log_P)
    r = jnp.concatenate([jnp.broadcast_to(r, (T - 1, K)), jnp.zeros((1, K), r.dtype)])
    M_back = jnp.swapaxes(P, -1, -2)
    if log_transitions.ndim == 3:
        M_back = jnp.flip(M_back, 0)
    chains = _Chain(
        M=jnp.stack([M_fwd, M_back]),
        log_evidence=jnp.stack([_evidence(log_initial, c, log_potentials),
                                jnp.flip(log_potentials + r, 0)]),
    )
    return chains, P, r


def _forward_chain(log_initial, log_transitions, log_potentials):
    """The forward chain alone (what the filter needs)."""
    M, c = _column_split(log_transitions)
    return _Chain(M, _evidence(log_initial, c, log_potentials))


def _condition(predicted, log_evidence):
    """(q, log Σ predicted·exp(log_evidence)) with q ∝ predicted ⊙ exp(log_evidence)
    normalised over the last axis. The exp is shifted by the largest log_evidence among
    the states with predicted > 0, so a state the prediction can reach is never lost to
    underflow however strongly the evidence disagrees."""
    masked = jnp.where(predicted > 0, log_evidence, -jnp.inf)
    shift = _max_shift(masked, -1)
    e = predicted * jnp.exp(masked - shift)
    total = jnp.sum(e, -1, keepdims=True)
    q = e / jnp.where(total > 0, total, 1.0)
    return q, jnp.squeeze(_safe_log(total) + shift, -1)


def _divide(x, total):
    """x / total with 0 / 0 = 0 (total ≥ 0 is zero only where x is), and finite gradients."""
    return x / jnp.where(total > 0, total, 1.0)


def _reciprocal(total):
    """1 / total, with 1 / 0 = 1 (total ≥ 0 is zero only where what it scales is)."""
    return 1.0 / jnp.where(total > 0, total, 1.0)


def _scaled_chain(log_initial, log_transitions, log_potentials):
    """The forward chain in the form the sequential path runs on: (M, E (T, K), shift (T,)).

    M: (K, K) or (T−1, K, K), the column-stochastic transitions of :func:`_forward_chain`.
    E_t = exp(u_t − shift_t) ∈ [0, 1], u_t its log evidence and shift_t = max_k u_t(k) (0 where
    all are -inf, no gradient): every exp of the recursion, taken for all steps at once.
    """
    M, u = _forward_chain(log_initial, log_transitions, log_potentials)
    shift = _max_shift(u, -1)
    return M, jnp.exp(u - shift), shift[:, 0]


def _transition(M, t):
    """M_t of a time-invariant (K, K) or time-varying (T−1, K, K) M (t clipped into range;
    zeros when T = 1, where the loops discard the product)."""
    if M.ndim == 2:
        return M
    if M.shape[0] == 0:
        return jnp.zeros(M.shape[1:], M.dtype)
    return M[jnp.clip(t, 0, M.shape[0] - 1)]


def _forward_scan(M, E):
    """Unnormalised filtered vectors e (T, K): e_1 = E_1, e_t = (α_{t−1} M_{t−1}) ⊙ E_t with
    α_t = e_t / Σ e_t the filtered distribution, so Σ e_t · exp(shift_t) is the increment of
    the normalizer. The loop carries e and its sum and divides by the sum inside the next
    step's product: one K × K product, one elementwise pass and one sum per step. It runs
    over all T steps (the first one's prediction replaced by 1), so that E is its input and
    e its output as they are, without a sliced or concatenated copy."""

    def step(carry, inputs):
        e, total, t = carry
        predicted = jnp.where(t > 0, e @ _transition(M, t - 1), 1.0)
        e = predicted * _divide(inputs, total)
        return (e, jnp.sum(e), t + 1), e

    start = (jnp.ones_like(E[0]), jnp.ones((), E.dtype), jnp.zeros((), jnp.int32))
    return lax.scan(step, start, E)[1]


def _backward_scan(M, E):
    """Unnormalised backward vectors b (T, K): b_T = 1, b_t = M_t (E_{t+1} ⊙ β_{t+1}) with
    β_t = b_t / Σ b_t; β_t ∝ p(φ_{t+1}..φ_T | z_t) (A_t = M_t diag(exp c_t), the column scales
    c_t being in E_{t+1}). Carries b and its sum, as :func:`_forward_scan`, over all T steps
    (the first one's product unused); the product is taken as a row vector times M_tᵀ, so
    that batched (vmapped) it is one plain matrix product whose output needs no
    transposition."""
    M_T = jnp.swapaxes(M, -1, -2)

    def step(carry, inputs):
        b, total, t = carry
        previous = (inputs * _divide(b, total)) @ _transition(M_T, t - 1)
        return (previous, jnp.sum(previous), t - 1), b

    T = E.shape[0]
    start = (jnp.ones_like(E[0]), jnp.asarray(E.shape[1], E.dtype), jnp.asarray(T - 1, jnp.int32))
    return lax.scan(step, start, E, reverse=True)[1]


def _filter_sequential(log_initial, log_transitions, log_potentials):
    """(filtered α (T, K), log α (T, K), increments (T,)) by :func:`_forward_scan`."""
    M, E, shift = _scaled_chain(log_initial, log_transitions, log_potentials)
    e = _forward_scan(M, E)
    log_total = _safe_log(jnp.sum(e, -1))
    log_alpha = _safe_log(e) - _finite_or_zero(log_total)[:, None]
    return _divide(e, jnp.sum(e, -1, keepdims=True)), log_alpha, log_total + shift


def _smooth_sequential(log_initial, log_transitions, log_potentials):
    """Forward–backward with :func:`_forward_scan` and :func:`_backward_scan`; the marginals
    and pair marginals of all steps at once after the two loops."""
    M, E, shift = _scaled_chain(log_initial, log_transitions, log_potentials)
    e = _forward_scan(M, E)
    b = _backward_scan(M, E)
    totals = jnp.sum(e, -1, keepdims=True)
    # q(z_t) ∝ α_t ⊙ β_t, both normalised (e and b alone can underflow together). Scaled by
    # reciprocals: products, unlike divisions, are recomputed inside the fused passes rather
    # than stored as (T, K) intermediates.
    joint = (e * _reciprocal(totals)) * (b * _reciprocal(jnp.sum(b, -1, keepdims=True)))
    marginals = joint * _reciprocal(jnp.sum(joint, -1, keepdims=True))
    # q(z_t = i, z_{t+1} = j) = q(z_t = i) M_t(i, j) w_{t+1}(j) / b_t(i), w = E ⊙ β the vector
    # the backward loop multiplied by M_t: the conditional of z_{t+1} given z_t = i is each
    # term of b_t(i) over their sum, at most 1 (no ratio that can overflow).
    w = E[1:] * _divide(b[1:], jnp.sum(b[1:], -1, keepdims=True))
    row = b[:-1, :, None]
    terms = M * w[:, None, :]
    conditional = jnp.where(row > 0, terms / jnp.where(row > 0, row, 1.0), 0.0)
    pairs = marginals[:-1, :, None] * conditional
    log_normalizer = jnp.sum(_safe_log(totals[:, 0]) + shift)
    weights = _divide(marginals[:-1], b[:-1])  # q(z_t) is 0 wherever b_t is
    return HMMPosterior(marginals, pairs, log_normalizer, _transition_counts(weights, M, w))


def _block_filters(u, M):
    """Phase 1 of the blocked scan, for one block of L steps (vmapped over blocks).

    Runs K filters, filter i started from a point mass on z = i at the step before the
    block: the rows of a K × K matrix of distributions, each with its own log scale.
    Returns (Q (L, K, K), scale (L, K)): Q_l(i, ·) is filter i's normalised filtered
    distribution at step l and scale_l(i) its log-normalizer so far.
    """
    K = u.shape[-1]

    def step(carry, inputs):
        Q, scale = carry
        u_t, M_t = inputs if M.ndim == 3 else (inputs, M)
        Q, increment = _condition(Q @ M_t, u_t)
        scale = scale + increment
        return (Q, scale), (Q, scale)

    start = (jnp.eye(K, dtype=u.dtype), jnp.zeros(K, u.dtype))
    _, (Q, scale) = lax.scan(step, start, (u, M) if M.ndim == 3 else u)
    return Q, scale


def _filter_blocked(chain):
    """The blocked parallel filter: (predicted (T, K), increments (T,)), the predicted
    distributions p_t (probabilities; p_1 = 1) and the log-normalizer increments
    log Σ p_t·exp(u_t)."""
    M, u = chain
    T, K = u.shape
    ones = jnp.ones_like(u[0])
    first, first_increment = _condition(ones, u[0])
    if T == 1:
        return ones[None], first_increment[None]
    n = T - 1  # steps 2..T, each a transition then the evidence
    block = math.isqrt(n - 1) + 1
    num_blocks = -(-n // block)
    pad = num_blocks * block - n

    def blocks(x):
        # Padding steps come after T and never reach the outputs; zeros keep them finite.
        x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
        return x.reshape(num_blocks, block, *x.shape[1:])

    if M.ndim == 3:
        Q, scale = jax.vmap(_block_filters)(blocks(u[1:]), blocks(M))
    else:
        Q, scale = jax.vmap(_block_filters, in_axes=(0, None))(blocks(u[1:]), M)

    # Phase 2: across blocks. Step l's filter is the mixture of the block's K filters with
    # weights ∝ q(i) exp(scale_l(i)), q the filter at the step before the block.
    def across(q, inputs):
        Q_b, scale_b = inputs
        weights, _ = _condition(q, scale_b)  # (L, K)
        filtered = jnp.einsum("lk,lkj->lj", weights, Q_b)
        return filtered[-1], filtered

    _, filtered = lax.scan(across, first, (Q, scale))
    filtered = jnp.concatenate([first[None], filtered.reshape(-1, K)[:n]])
    # Predictions and increments of all steps at once, by the sequential filter's formulas.
    if M.ndim == 3:
        predicted = jnp.einsum("tk,tkj->tj", filtered[:-1], M)
    else:
        predicted = filtered[:-1] @ M
    _, increments = _condition(predicted, u[1:])
    return (jnp.concatenate([ones[None], predicted]),
            jnp.concatenate([first_increment[None], increments]))


def _log_filtered(predicted, log_evidence, increments):
    """log q_t = log p_t + u_t − increment_t (T, K)."""
    return _safe_log(predicted) + log_evidence - _finite_or_zero(increments)[:, None]


def _smooth_parallel(log_initial, log_transitions, log_potentials):
    chains, P, r = _chains(log_initial, log_transitions, log_potentials)
    predicted, increments = jax.vmap(_filter_blocked)(chains)
    log_alpha = _log_filtered(predicted[0], chains.log_evidence[0], increments[0])
    beta = jnp.flip(predicted[1], 0)  # β_t = P_t γ_{t+1} (γ normalised)
    gamma = jnp.exp(jnp.flip(_log_filtered(predicted[1], chains.log_evidence[1],
                                           increments[1]), 0))
    # q(z_t) ∝ α_t(i) exp(r_t(i)) β_t(i), in log space.
    marginals, _ = _exp_normalize(log_alpha + _safe_log(beta) + r)
    # q(z_t = i, z_{t+1} = j) = q(z_t = i) P_t(i, j) γ_{t+1}(j) / β_t(i): two products per
    # entry, no exp over K × K.
    weights = _divide(marginals[:-1], beta[:-1])  # q(z_t) is 0 wherever β_t is
    pairs = weights[:, :, None] * P * gamma[1:, None, :]
    return HMMPosterior(marginals, pairs, jnp.sum(increments[0]),
                        _transition_counts(weights, P, gamma[1:]))


def _smooth(log_initial, log_transitions, log_potentials, method):
    if method == "sequential":
        return _smooth_sequential(log_initial, log_transitions, log_potentials)
    return _smooth_parallel(log_initial, log_transitions, log_potentials)


def _filter(log_initial, log_transitions, log_potentials, method):
    """(filtered α (T, K), log α (T, K), increments (T,)); jit drops what the caller does not
    use."""
    if method == "sequential":
        return _filter_sequential(log_initial, log_transitions, log_potentials)
    chain = _forward_chain(log_initial, log_transitions, log_potentials)
    predicted, increments = _filter_blocked(chain)
    log_alpha = _log_filtered(predicted, chain.log_evidence, increments)
    return jnp.exp(log_alpha), log_alpha, increments


# ----------------------------------------------------------------------------- sampling


def _sample(key, log_transitions, alpha, num_samples, method):
    """Joint draws z ~ q: z_T ~ α_T, then z_t | z_{t+1} = j ∝ α_t(i) A_t(i, j) (Gumbel-max)."""
    T, K = alpha.shape
    last_key, key = jax.random.split(key)
    last = jax.random.categorical(last_key, alpha[-1], shape=(num_samples,)).astype(jnp.int32)
    if T == 1:
        return last[:, None]
    # logits[t, j, i] = log α_t(i) + log A_t(i, j)
    logits = alpha[:-1, None, :] + jnp.swapaxes(log_transitions, -1, -2)
    if method == "sequential":
        noise = jax.random.gumbel(key, (T - 1, num_samples, K), alpha.dtype)

        def step(z_next, inputs):
            logits_t, noise_t = inputs
            z = jnp.argmax(logits_t[z_next] + noise_t, axis=-1).astype(jnp.int32)
            return z, z

        _, path = lax.scan(step, last, (logits, noise), reverse=True)
        return jnp.concatenate([path, last[None]]).T
    # Parallel: draw z_t for every possible z_{t+1} (a map K -> K per step), then compose the
    # maps from the end: z_t = S_t[S_{t+1}[…[z_T]]], a reverse prefix scan of gathers.
    noise = jax.random.gumbel(key, (num_samples, T - 1, K, K), alpha.dtype)
    maps = jnp.argmax(logits + noise, axis=-1).astype(jnp.int32)  # (S, T-1, K)

    def compose(later, earlier):
        return earlier[later]

    def one(maps_s, last_s):
        elems = jnp.concatenate([maps_s, jnp.full((1, K), last_s, jnp.int32)])
        return chunked_scan(compose, elems, jnp.arange(K, dtype=jnp.int32), reverse=True)[:, 0]

    return jax.vmap(one)(maps, last)


# ----------------------------------------------------------------------------- public API


@partial(jax.jit, static_argnames="method")
def hmm_filter(log_initial, log_transitions, log_potentials, method: str = "parallel"):
    """Filtered marginals q(z_t | φ_1..φ_t) and the log-normalizer.

    Args:
        log_initial: (K,) log π.
        log_transitions: (K, K) or time-varying (T−1, K, K) log A_t, row i = from state i.
        log_potentials: (T, K) log φ_t.
        method: ``"parallel"`` (blocked scan) or ``"sequential"`` (``lax.scan``).
    Returns:
        :class:`HMMFiltered` with marginals (T, K), log_normalizer (scalar) and its per-step
        increments (T,).
    Raises:
        ValueError: on a shape mismatch (the message names the shapes) or unknown method.
    """
    args = _validate(log_initial, log_transitions, log_potentials, method)
    filtered, _, increments = _filter(*args, method)
    return HMMFiltered(filtered, jnp.sum(increments), increments)


@partial(jax.jit, static_argnames="method")
def hmm_smoother(log_initial, log_transitions, log_potentials, method: str = "parallel"):
    """Posterior marginals of q(z) ∝ p(z) ∏_t φ_t(z_t) (forward–backward).

    Args: as :func:`hmm_filter`.
    Returns:
        :class:`HMMPosterior` with marginals (T, K), pair_marginals (T−1, K, K) and
        log_normalizer (scalar). ∂ log_normalizer / ∂ log_potentials = marginals and
        ∂ log_normalizer / ∂ log_transitions = pair_marginals (summed over t if time-invariant).
    """
    args = _validate(log_initial, log_transitions, log_potentials, method)
    return _smooth(*args, method)


@partial(jax.jit, static_argnames=("num_samples", "method"))
def hmm_sample(key, log_initial, log_transitions, log_potentials, num_samples: int = 1,
               method: str = "parallel"):
    """Joint samples z ~ q(z) ∝ p(z) ∏_t φ_t(z_t): forward filter, backward sampling.

    ``method="parallel"`` draws z_t for each value of z_{t+1} at every step and composes these
    maps with a prefix scan; ``"sequential"`` draws backwards one step at a time (fewer random
    numbers: T·K per sample instead of T·K²). The two give different draws from the same law.

    Returns:
        (num_samples, T) int32 array of state paths.
    """
    _check_num_samples(num_samples)
    log_initial, log_transitions, log_potentials = _validate(
        log_initial, log_transitions, log_potentials, method)
    _, alpha, _ = _filter(log_initial, log_transitions, log_potentials, method)
    T, K = log_potentials.shape
    if log_transitions.ndim == 2:
        log_transitions = jnp.broadcast_to(log_transitions, (max(T - 1, 0), K, K))
    return _sample(key, log_transitions, alpha, num_samples, method)


__all__ = [
    "HMMFiltered",
    "HMMPosterior",
    "METHODS",
    "hmm_filter",
    "hmm_sample",
    "hmm_smoother",
]
