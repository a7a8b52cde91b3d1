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
finite gradients, as long as some path has positive probability. A row of zeros in
log_potentials is exactly a missing step (φ_t ≡ 1): q there is the prior's propagation and,
for a normalised prior, zeroing or appending such rows leaves log_normalizer unchanged.

Numerics: the rows of A_t are split as A_t(i, j) = exp(r_t(i)) P_t(i, j) with P_t row-stochastic
(r_t = row log-sums, carried in log space). Messages are log vectors normalised at every step;
the matrix–vector products with P_t run in probability space after subtracting the message's
maximum (one exp, one matmul and one log per step, instead of a logsumexp over K × K), so float32
stays finite for T = 100 000 and potentials of magnitude 10³. Every log and logsumexp is guarded
so that all-``-inf`` arguments give ``-inf`` values with zero (not NaN) gradients.

Smoothing is two-filter: a forward filter α_t ∝ p(z_t, φ_1..φ_t) and a backward filter
γ_t ∝ p(φ_t..φ_T | z_t), computed together (one scan carries both); then
q(z_t = i, z_{t+1} = j) ∝ α_t(i) A_t(i, j) γ_{t+1}(j), all t at once, and the marginals are the
pair marginals' row sums (α_T at the last step), so the two agree exactly.

Each routine has two implementations that agree to rounding: ``method="sequential"``
(``lax.scan``, O(T) depth) and ``method="parallel"``: a blocked scan over ≈√T blocks of ≈√T
steps. Within each block (all blocks at once) it runs K filters, one per state at the block's
start (a K × K matrix product per step); a sequential walk across the blocks then turns each
block's K filters into the true filter by one vector–matrix product per step, all steps of a
block at once. Depth O(√T), work ≈ T·K³, and the compiled program holds the step twice whatever
T is. This is :func:`.scan.chunked_scan`'s schedule, specialised so that prefixes are vectors
(K² per step, not K³) and each of the K filters keeps its own log scale (no underflow across
rows). It was faster on CPU than :func:`.scan.chunked_scan` and ``lax.associative_scan`` with a
generic matrix combine for K = 2..30, T = 100..10 000 (benchmarks/hmm_smoother.py).

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
    log_normalizer: scalar, as in the module docstring.
    """

    marginals: jax.Array
    pair_marginals: jax.Array
    log_normalizer: jax.Array


class _Chain(NamedTuple):
    """A chain in the form the message passing runs on (one direction).

    A message m_t (log, over the K states at step t) is propagated by
    m_{t+1}(j) = d_t(j) + log Σ_i exp(m_t(i) + s_t(i)) M_t(i, j), then gets the potential.
    init: (K,) log message before the first potential.  M: (K, K) or (T−1, K, K), entries in
    [0, 1] (probability space).  s, d: (K,) or (T−1, K) log biases on the source and the
    destination state (-inf allowed).  log_potentials: (T, K).
    """

    init: jax.Array
    M: jax.Array
    s: jax.Array
    d: jax.Array
    log_potentials: jax.Array


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


def _logsumexp(x, axis=-1):
    """log Σ exp x over ``axis`` (an int or a tuple): -inf, with zero gradients, when every
    entry is -inf."""
    shift = _max_shift(x, axis)
    total = jnp.sum(jnp.exp(x - shift), axis=axis, keepdims=True)
    return jnp.squeeze(_safe_log(total) + shift, axis)


def _normalize(x, axis=-1):
    """(x − logsumexp x, logsumexp x); rows that are all -inf stay -inf."""
    lse = _logsumexp(x, axis)
    lse_kept = jnp.expand_dims(lse, axis)
    return x - _finite_or_zero(lse_kept), lse


def _propagate(message, s, M, d):
    """d(j) + log Σ_i exp(message(i) + s(i)) M(i, j) for message (..., K): the max of
    message + s is taken out, the sum runs in probability space (a matmul)."""
    w = message + s
    shift = _max_shift(w, -1)
    return _safe_log(jnp.exp(w - shift) @ M) + shift + d


# ----------------------------------------------------------------------------- the chain


def _split_transitions(log_transitions):
    """log A = r(i) + log P(i, j) with P row-stochastic: (P, r). An all -inf row has P = 0,
    r = -inf."""
    log_P, r = _normalize(log_transitions, -1)
    return jnp.exp(log_P), r


def _chains(log_initial, log_transitions, log_potentials):
    """The forward and the backward chain, stacked on a leading axis of length 2.

    Forward: init = log π, M_t = P_t, s_t = r_t, d_t = 0; its filtered messages are α_t.
    Backward (time reversed): init = 0, M_t = P_tᵀ, s_t = 0, d_t = r_t; its filtered
    messages, reversed, are γ_t ∝ p(φ_t..φ_T | z_t).
    """
    P, r = _split_transitions(log_transitions)
    zeros = jnp.zeros_like(r)
    if log_transitions.ndim == 3:
        P_back, r_back, zeros_back = (jnp.flip(x, 0) for x in (jnp.swapaxes(P, -1, -2), r, zeros))
    else:
        P_back, r_back, zeros_back = P.T, r, zeros
    return _Chain(
        init=jnp.stack([log_initial, jnp.zeros_like(log_initial)]),
        M=jnp.stack([P, P_back]),
        s=jnp.stack([r, zeros_back]),
        d=jnp.stack([zeros, r_back]),
        log_potentials=jnp.stack([log_potentials, jnp.flip(log_potentials, 0)]),
    )


def _forward_chain(log_initial, log_transitions, log_potentials):
    """The forward chain alone (what the filter needs)."""
    P, r = _split_transitions(log_transitions)
    return _Chain(log_initial, P, r, jnp.zeros_like(r), log_potentials)


def _filter_sequential(chain):
    """Normalised filtered log messages (T, K) and the log-normalizer increments (T,)."""
    time_varying = chain.M.ndim == 3

    def step(message, inputs):
        if time_varying:
            log_potential, M, s, d = inputs
        else:
            log_potential, (M, s, d) = inputs, (chain.M, chain.s, chain.d)
        filtered, increment = _normalize(message + log_potential)
        return _propagate(filtered, s, M, d), (filtered, increment)

    if time_varying:
        # Step t propagates to t + 1 with transition t; the last step's output is discarded,
        # so it gets a dummy transition.
        pad = lambda x: jnp.concatenate([x, jnp.zeros((1, *x.shape[1:]), x.dtype)])
        inputs = (chain.log_potentials, *(pad(x) for x in (chain.M, chain.s, chain.d)))
    else:
        inputs = chain.log_potentials
    _, (filtered, increments) = lax.scan(step, chain.init, inputs)
    return filtered, increments


def _block_filters(M, s, d, log_potentials):
    """Phase 1 of the blocked scan, for one block of L steps (vmapped over blocks).

    Runs K filters, filter i started from z = i just before the block: rows of a K × K log
    matrix F, each normalised, with its log scale c(i) accumulated separately.
    Returns (exp F (L, K, K), c (L, K)): the unnormalised log filter at step l of the block
    given start state i is c_l(i) + F_l(i, ·).
    """
    K = log_potentials.shape[-1]
    time_varying = M.ndim == 3
    log_eye = jnp.where(jnp.eye(K, dtype=bool), 0.0, -jnp.inf).astype(log_potentials.dtype)

    def step(carry, inputs):
        F, c = carry
        if time_varying:
            log_potential, M_t, s_t, d_t = inputs
        else:
            log_potential, M_t, s_t, d_t = inputs, M, s, d
        F, scale = _normalize(_propagate(F, s_t, M_t, d_t) + log_potential)
        c = c + scale
        return (F, c), (jnp.exp(F), c)

    inputs = (log_potentials, M, s, d) if time_varying else log_potentials
    zeros = jnp.zeros(K, log_potentials.dtype)
    _, (expF, c) = lax.scan(step, (log_eye, zeros), inputs)
    return expF, c


def _filter_blocked(chain):
    """The blocked parallel filter: same outputs as :func:`_filter_sequential`."""
    T, K = chain.log_potentials.shape
    first, first_increment = _normalize(chain.init + chain.log_potentials[0])
    if T == 1:
        return first[None], first_increment[None]
    n = T - 1  # steps 1..T-1, each a transition then a potential
    block = math.isqrt(n - 1) + 1 if n > 1 else 1
    num_blocks = -(-n // block)
    pad = num_blocks * block - n
    time_varying = chain.M.ndim == 3

    def blocks(x, fill):
        if pad:
            x = jnp.concatenate([x, jnp.full((pad, *x.shape[1:]), fill, x.dtype)])
        return x.reshape(num_blocks, block, *x.shape[1:])

    # Padding steps come after T - 1 and never reach the outputs; any values do.
    log_potentials = blocks(chain.log_potentials[1:], 0.0)
    if time_varying:
        args = (blocks(chain.M, 1.0), blocks(chain.s, 0.0), blocks(chain.d, 0.0))
        expF, c = jax.vmap(_block_filters)(*args, log_potentials)
    else:
        expF, c = jax.vmap(_block_filters, in_axes=(None, None, None, 0))(
            chain.M, chain.s, chain.d, log_potentials)

    # Phase 2: across blocks; each step's filter is the previous block's last filter pushed
    # through that step's K filters.
    def across(message, block_elems):
        expF_b, c_b = block_elems
        weights, _ = _normalize(message + c_b)  # (L, K)
        filtered, _ = _normalize(_safe_log(jnp.einsum("lk,lkj->lj", jnp.exp(weights), expF_b)))
        return filtered[-1], filtered

    _, filtered = lax.scan(across, first, (expF, c))
    filtered = jnp.concatenate([first[None], filtered.reshape(-1, K)[:n]])
    # The increments, all steps at once, by the sequential filter's formula (differences of
    # the prefix log-normalizers would lose float32 digits once they grow large).
    if time_varying:
        predicted = jax.vmap(_propagate)(filtered[:-1], chain.s, chain.M, chain.d)
    else:
        predicted = _propagate(filtered[:-1], chain.s, chain.M, chain.d)
    increments = _logsumexp(predicted + chain.log_potentials[1:])
    return filtered, jnp.concatenate([first_increment[None], increments])


def _run_filter(chain, method):
    if method == "parallel":
        return _filter_blocked(chain)
    return _filter_sequential(chain)


def _filter(log_initial, log_transitions, log_potentials, method):
    filtered, increments = _run_filter(
        _forward_chain(log_initial, log_transitions, log_potentials), method)
    return filtered, increments


def _smooth(log_initial, log_transitions, log_potentials, method):
    chains = _chains(log_initial, log_transitions, log_potentials)
    messages, increments = jax.vmap(lambda c: _run_filter(c, method))(chains)
    alpha, gamma = messages[0], jnp.flip(messages[1], 0)
    log_pairs = alpha[:-1, :, None] + log_transitions + gamma[1:, None, :]
    log_pairs, _ = _normalize(log_pairs, (-2, -1))
    pairs = jnp.exp(log_pairs)
    marginals = jnp.concatenate([pairs.sum(-1), jnp.exp(alpha[-1:])])
    return HMMPosterior(marginals, pairs, jnp.sum(increments[0]))


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
    filtered, increments = _filter(*args, method)
    return HMMFiltered(jnp.exp(filtered), jnp.sum(increments), increments)


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
    alpha, _ = _filter(log_initial, log_transitions, log_potentials, method)
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
