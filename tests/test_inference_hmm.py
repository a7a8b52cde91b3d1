"""Discrete-chain (HMM) message passing: exactness against independent references.

References: brute-force enumeration of all K^T paths in NumPy float64 (no code shared with
svae_core), dynamax's HMM smoother (float32), prior propagation for missing steps, central
finite differences, sample frequencies.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# dynamax sets jax_default_matmul_precision when imported, and that setting keys every jit
# cache: imported here, before any test compiles, it does not void the programs compiled so far.
from dynamax.hidden_markov_model import inference as dynamax_hmm

from svae_core.inference import hmm_filter, hmm_sample, hmm_smoother

METHODS = ["sequential", "parallel"]


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------- brute force, float64


def brute_force(log_initial, log_transitions, log_potentials):
    """(marginals (T, K), pair marginals (T−1, K, K), log normalizer) by enumerating paths."""
    T, K = log_potentials.shape
    paths = np.array(list(itertools.product(range(K), repeat=T)))
    steps = np.arange(T)
    with np.errstate(invalid="ignore"):
        log_w = log_initial[paths[:, 0]] + log_potentials[steps, paths].sum(1)
        for t in range(T - 1):
            A = log_transitions[t] if log_transitions.ndim == 3 else log_transitions
            log_w = log_w + A[paths[:, t], paths[:, t + 1]]
    top = log_w.max()
    w = np.exp(log_w - top)
    log_z = np.log(w.sum()) + top
    w /= w.sum()
    marginals = np.zeros((T, K))
    pairs = np.zeros((max(T - 1, 0), K, K))
    for t in range(T):
        np.add.at(marginals[t], paths[:, t], w)
    for t in range(T - 1):
        np.add.at(pairs[t], (paths[:, t], paths[:, t + 1]), w)
    return marginals, pairs, log_z


def random_model(seed, K, T, time_varying, forbid=True):
    """Unnormalised log π, log A_t and potentials, with forbidden transitions, a state that is
    impossible at one step and (time-varying) a dead-end state, so -inf appears everywhere."""
    rng = np.random.default_rng(seed)
    log_initial = rng.normal(size=K)
    log_transitions = rng.normal(size=(T - 1, K, K) if time_varying else (K, K)) + 0.7
    log_potentials = 1.5 * rng.normal(size=(T, K))
    if forbid and K > 1:
        log_transitions[..., 0, 1] = -np.inf  # 0 -> 1 forbidden
        if K > 2:
            log_initial[K - 1] = -np.inf  # cannot start in the last state
        if T > 2:
            log_potentials[T // 2, 0] = -np.inf  # state 0 impossible mid-sequence
        if time_varying and T > 2 and K > 2:
            log_transitions[0, 2, :] = -np.inf  # state 2 at t = 0 is a dead end
    return log_initial, log_transitions, log_potentials


def normalised(log_initial, log_transitions):
    lse = lambda x, axis: np.log(np.exp(x).sum(axis, keepdims=True))
    return log_initial - lse(log_initial, 0)[0], log_transitions - lse(log_transitions, -1)


# ---------------------------------------------------------------- exactness


# The T = 1, (3, 7, False) and K = 4, T = 6 cases have the shapes of later tests' problems,
# which reuse the smoothers compiled here.
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("K,T,time_varying",
                         [(2, 1, False), (2, 1, True), (3, 2, False), (3, 7, False),
                          (3, 5, True), (4, 6, False), (4, 6, True), (2, 9, True)])
def test_smoother_matches_brute_force(method, K, T, time_varying):
    model = random_model(K * 100 + T, K, T, time_varying)
    marginals, pairs, log_z = brute_force(*model)
    post = hmm_smoother(*model, method=method)
    assert post.marginals.dtype == jnp.float64
    assert post.marginals.shape == (T, K) and post.pair_marginals.shape == (T - 1, K, K)
    np.testing.assert_allclose(post.marginals, marginals, rtol=0, atol=1e-10)
    np.testing.assert_allclose(post.pair_marginals, pairs, rtol=0, atol=1e-10)
    np.testing.assert_allclose(post.transition_counts, pairs.sum(0), rtol=0, atol=1e-10 * T)
    np.testing.assert_allclose(post.log_normalizer, log_z, rtol=1e-12, atol=1e-10)
    # Forbidden transitions and impossible states get exactly zero probability.
    assert np.all(np.asarray(post.pair_marginals)[pairs == 0] == 0)
    assert np.all(np.asarray(post.transition_counts)[pairs.sum(0) == 0] == 0)
    assert np.all(np.asarray(post.marginals)[marginals == 0] == 0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("time_varying", [False, True])
def test_filter_matches_brute_force_of_truncated_chains(method, time_varying):
    K, T = 3, 6
    log_initial, log_transitions, log_potentials = random_model(7, K, T, time_varying)
    filt = hmm_filter(log_initial, log_transitions, log_potentials, method=method)
    filtered, increments = np.asarray(filt.marginals), np.asarray(filt.log_normalizer_increments)
    for t in range(T):
        trans = log_transitions[:t] if time_varying else log_transitions
        marginals, _, log_z = brute_force(log_initial, trans, log_potentials[: t + 1])
        np.testing.assert_allclose(filtered[t], marginals[-1], rtol=0, atol=1e-10)
        np.testing.assert_allclose(np.sum(increments[: t + 1]), log_z, rtol=1e-12, atol=1e-10)
    _, _, log_z = brute_force(log_initial, log_transitions, log_potentials)
    np.testing.assert_allclose(filt.log_normalizer, log_z, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_single_step(method):
    """T = 1 with time-invariant (K, K) and empty time-varying (0, K, K) transitions (K = 2,
    the brute-force T = 1 cases' shapes, so their compiled smoothers are reused)."""
    log_initial, log_potentials = np.array([0.3, 2.0]), np.array([[1.0, -3.0]])
    for log_transitions in (np.zeros((2, 2)), np.zeros((0, 2, 2))):
        post = hmm_smoother(log_initial, log_transitions, log_potentials, method=method)
        x = log_initial + log_potentials[0]
        np.testing.assert_allclose(np.asarray(post.marginals)[0], np.exp(x) / np.exp(x).sum(),
                                   atol=1e-14)
        np.testing.assert_allclose(post.log_normalizer, np.log(np.exp(x).sum()), atol=1e-14)
        assert post.pair_marginals.shape == (0, 2, 2)
        samples = hmm_sample(jax.random.PRNGKey(0), log_initial, log_transitions,
                             log_potentials, num_samples=4, method=method)
        assert samples.shape == (4, 1) and samples.dtype == jnp.int32


def test_vmap_matches_single_sequences():
    K, T = 3, 7
    log_initial, log_transitions, _ = random_model(3, K, T, False)
    pots = np.random.default_rng(4).normal(size=(4, T, K))
    for method in METHODS:
        batched = jax.vmap(lambda p, m=method: hmm_smoother(log_initial, log_transitions, p,
                                                             method=m))(pots)
        batched = jax.tree.map(np.asarray, batched)
        for b in range(4):
            one = hmm_smoother(log_initial, log_transitions, pots[b], method=method)
            np.testing.assert_allclose(batched.marginals[b], one.marginals, atol=1e-13)
            np.testing.assert_allclose(batched.log_normalizer[b], one.log_normalizer,
                                       atol=1e-12)


# ---------------------------------------------------------------- dynamax, float32


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("time_varying", [False, True])
def test_matches_dynamax_float32(method, time_varying):
    K, T = 5, 200
    rng = np.random.default_rng(11)
    log_initial, log_transitions = normalised(
        rng.normal(size=K), rng.normal(size=(T - 1, K, K) if time_varying else (K, K)))
    log_potentials = 3.0 * rng.normal(size=(T, K))
    with jax.enable_x64(False):
        args = [np.asarray(x, np.float32) for x in (log_initial, log_transitions,
                                                    log_potentials)]
        post = hmm_smoother(*args, method=method)
        ref = dynamax_hmm.hmm_smoother(np.exp(args[0]), np.exp(args[1]), args[2])
        assert post.marginals.dtype == jnp.float32
    post = jax.tree.map(np.asarray, post)
    np.testing.assert_allclose(post.marginals, ref.smoothed_probs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(post.log_normalizer, ref.marginal_loglik, rtol=1e-5)
    # dynamax sums the pair marginals over t for a time-invariant transition matrix.
    pairs = post.pair_marginals if time_varying else post.pair_marginals.sum(0)
    scale = 1.0 if time_varying else T
    np.testing.assert_allclose(pairs, ref.trans_probs, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(post.transition_counts, np.asarray(ref.trans_probs).reshape(
        -1, K, K).sum(0), rtol=0, atol=1e-5 * T)


# ---------------------------------------------------------------- missing steps


def compose_out(log_transitions, T, missing):
    """Time-varying log transitions of the chain with the (interior) steps in ``missing``
    marginalised out: A_{t−1} A_t composed in probability space."""
    A = [np.exp(log_transitions[t] if log_transitions.ndim == 3 else log_transitions)
         for t in range(T - 1)]
    kept, out, current = [t for t in range(T) if t not in missing], [], None
    for t in range(T - 1):
        current = A[t] if current is None else current @ A[t]
        if t + 1 in kept:
            out.append(current)
            current = None
    return kept, np.log(np.stack(out))


@pytest.mark.parametrize("method", METHODS)
def test_zero_potentials_are_missing_steps(method):
    K, T = 3, 7
    rng = np.random.default_rng(5)
    log_initial, log_transitions = normalised(rng.normal(size=K), rng.normal(size=(K, K)))
    log_potentials = 2.0 * rng.normal(size=(T, K))
    missing = (2, 3)
    log_potentials[list(missing)] = 0.0
    smooth = lambda pots: jax.tree.map(
        np.asarray, hmm_smoother(log_initial, log_transitions, pots, method=method))
    post = smooth(log_potentials)

    # The chain with those steps removed (their transitions composed): same posterior at the
    # observed steps, same log normalizer.
    kept, composed = compose_out(log_transitions, T, missing)
    marginals, _, log_z = brute_force(log_initial, composed, log_potentials[kept])
    np.testing.assert_allclose(post.marginals[np.array(kept)], marginals, atol=1e-12)
    np.testing.assert_allclose(post.log_normalizer, log_z, rtol=1e-12)
    # Inside the gap: q(z_2) = Σ_i q(z_1 = i) A(i, ·) ... conditioned on z_4; check against
    # the brute force of the full chain (whose step potentials are exactly 1 there).
    full, _, _ = brute_force(log_initial, log_transitions, log_potentials)
    np.testing.assert_allclose(post.marginals, full, atol=1e-12)

    # Appended zero rows: log Z and the earlier posterior unchanged; the new steps are the
    # prior propagation of the last observed marginal.
    extra = np.concatenate([log_potentials, np.zeros((3, K))])
    longer = smooth(extra)
    np.testing.assert_allclose(longer.log_normalizer, post.log_normalizer, rtol=1e-13)
    np.testing.assert_allclose(longer.marginals[:T], post.marginals, atol=1e-13)
    A = np.exp(log_transitions)
    propagated = post.marginals[-1]
    for t in range(T, T + 3):
        propagated = propagated @ A
        np.testing.assert_allclose(longer.marginals[t], propagated, atol=1e-13)

    # All missing: the prior marginals π Aᵗ and log Z = 0.
    prior = smooth(np.zeros((T, K)))
    marginal = np.exp(log_initial)
    for t in range(T):
        np.testing.assert_allclose(prior.marginals[t], marginal, atol=1e-13)
        marginal = marginal @ A
    np.testing.assert_allclose(prior.log_normalizer, 0.0, atol=1e-13)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("method", METHODS)
def test_gradients_are_the_posterior_marginals(method):
    """K = 4, T = 6: the shapes of two brute-force cases, whose compiled smoothers this reuses."""
    K, T = 4, 6
    log_initial, log_transitions, log_potentials = random_model(21, K, T, True)
    log_z = lambda *a: hmm_smoother(*a, method=method).log_normalizer
    post = hmm_smoother(log_initial, log_transitions, log_potentials, method=method)
    g_init, g_trans, g_pots = jax.jit(jax.grad(log_z, argnums=(0, 1, 2)))(
        log_initial, log_transitions, log_potentials)
    np.testing.assert_allclose(g_pots, post.marginals, atol=1e-12)
    np.testing.assert_allclose(g_trans, post.pair_marginals, atol=1e-12)
    np.testing.assert_allclose(g_init, np.asarray(post.marginals)[0], atol=1e-12)
    # Time-invariant transitions: the pair marginals summed over t.
    tied = log_transitions[1]
    g_tied = jax.jit(jax.grad(log_z, argnums=1))(log_initial, tied, log_potentials)
    tied_post = hmm_smoother(log_initial, tied, log_potentials, method=method)
    np.testing.assert_allclose(g_tied, np.asarray(tied_post.pair_marginals).sum(0), atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_match_finite_differences_and_are_finite(method):
    """A direction through log Z and through the marginals (what an SVAE differentiates),
    with -inf entries present: central differences, and no NaN anywhere."""
    K, T = 3, 6
    log_initial, log_transitions, log_potentials = random_model(22, K, T, True)
    rng = np.random.default_rng(23)
    weights, pair_weights = rng.normal(size=(T, K)), rng.normal(size=(T - 1, K, K))

    def objective(lt, lp):
        post = hmm_smoother(log_initial, lt, lp, method=method)
        return (post.log_normalizer + jnp.sum(post.marginals * weights)
                + jnp.sum(post.pair_marginals * pair_weights))

    d_trans = np.where(np.isfinite(log_transitions), rng.normal(size=log_transitions.shape), 0)
    d_pots = np.where(np.isfinite(log_potentials), rng.normal(size=log_potentials.shape), 0)
    value_and_grad = jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))  # one program
    g_trans, g_pots = map(np.asarray, value_and_grad(log_transitions, log_potentials)[1])
    assert np.all(np.isfinite(g_trans)) and np.all(np.isfinite(g_pots))
    eps = 1e-5
    fd = (value_and_grad(log_transitions + eps * d_trans, log_potentials + eps * d_pots)[0]
          - value_and_grad(log_transitions - eps * d_trans, log_potentials - eps * d_pots)[0]
          ) / (2 * eps)
    analytic = np.sum(g_trans * d_trans) + np.sum(g_pots * d_pots)
    np.testing.assert_allclose(analytic, fd, rtol=1e-7)


# ---------------------------------------------------------------- float32, long sequences


def test_float32_long_sequence_large_potentials():
    """T = 100 000, K = 10, potentials uniform in ±500: finite in float32 on both paths, and
    within 1e-4 of a float64 run and of each other (float32 resolves a log potential of 500 to
    ~3e-5 nats, so probabilities carry relative errors of that size)."""
    K, T = 10, 100_000
    rng = np.random.default_rng(31)
    log_initial, log_transitions = normalised(rng.normal(size=K), rng.normal(size=(K, K)))
    log_potentials = rng.uniform(-500, 500, size=(T, K))
    reference = hmm_smoother(log_initial, log_transitions, log_potentials, method="sequential")
    with jax.enable_x64(False):
        args = [np.asarray(x, np.float32) for x in (log_initial, log_transitions,
                                                    log_potentials)]
        posts = {m: hmm_smoother(*args, method=m) for m in METHODS}
    for m, post in posts.items():
        assert post.marginals.dtype == jnp.float32
        for field in post:
            assert np.all(np.isfinite(field)), m
        np.testing.assert_allclose(post.marginals, reference.marginals, rtol=0, atol=1e-4)
        np.testing.assert_allclose(post.pair_marginals, reference.pair_marginals, rtol=0,
                                   atol=1e-4)
        np.testing.assert_allclose(post.transition_counts, reference.transition_counts,
                                   rtol=1e-3, atol=1e-2)
        np.testing.assert_allclose(post.log_normalizer, reference.log_normalizer, rtol=1e-6)
    seq, par = posts["sequential"], posts["parallel"]
    np.testing.assert_allclose(par.marginals, seq.marginals, rtol=0, atol=1e-4)
    np.testing.assert_allclose(par.pair_marginals, seq.pair_marginals, rtol=0, atol=1e-4)
    np.testing.assert_allclose(par.log_normalizer, seq.log_normalizer, rtol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_float32_forbidden_transitions(method):
    """Forbidden transitions and impossible states in float32 with potentials of ±20:
    within float32 rounding of the float64 result (the sequential one for both methods: one
    float64 program to compile; both exact paths match test_smoother_matches_brute_force's
    enumeration to 1e-10)."""
    K, T = 6, 2000
    rng = np.random.default_rng(32)
    log_initial, log_transitions = normalised(rng.normal(size=K), rng.normal(size=(K, K)))
    log_transitions[np.arange(K), (np.arange(K) + 1) % K] = -np.inf
    log_potentials = rng.uniform(-20, 20, size=(T, K))
    log_potentials[rng.random((T, K)) < 0.2] = -np.inf
    log_potentials[np.arange(T), rng.integers(0, K, T)] = 0.0  # keep a path possible
    reference = hmm_smoother(log_initial, log_transitions, log_potentials, method="sequential")
    assert np.isfinite(reference.log_normalizer)
    with jax.enable_x64(False):
        post = hmm_smoother(*[np.asarray(x, np.float32) for x in (
            log_initial, log_transitions, log_potentials)], method=method)
    np.testing.assert_allclose(post.marginals, reference.marginals, rtol=0, atol=1e-5)
    np.testing.assert_allclose(post.pair_marginals, reference.pair_marginals, rtol=0, atol=1e-5)
    np.testing.assert_allclose(post.log_normalizer, reference.log_normalizer, rtol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_float32_underflow_degrades_without_nan(method):
    """The documented limit: messages are float32 probability vectors, so a state 200 nats
    below the best (e^-200 < 1e-45) is dropped. When the only possible path runs through it
    the result is wrong (log Z = -inf instead of -200), but nothing is NaN, gradients
    included."""
    log_initial = np.zeros(2)
    log_transitions = np.array([[0.0, -np.inf], [-np.inf, 0.0]])
    log_potentials = np.array([[0.0, -200.0], [-np.inf, 0.0], [0.0, 0.0]])
    exact = hmm_smoother(log_initial, log_transitions, log_potentials, method=method)
    np.testing.assert_allclose(exact.log_normalizer, -200.0)  # float64 holds e^-200

    def objective(*args):
        post = hmm_smoother(*args, method=method)
        return post.log_normalizer + jnp.sum(post.marginals[:, 1]), post

    with jax.enable_x64(False):
        args = [np.asarray(x, np.float32) for x in (log_initial, log_transitions,
                                                    log_potentials)]
        # The posterior and its gradients from one compiled program.
        grads, post = jax.jit(jax.grad(objective, argnums=(0, 1, 2), has_aux=True))(*args)
    assert np.asarray(post.log_normalizer) == -np.inf
    for x in (*post, *grads):
        assert not np.any(np.isnan(x))


# ---------------------------------------------------------------- samples


@pytest.mark.parametrize("method", METHODS)
def test_samples_match_marginals_and_pair_marginals(method):
    """20 000 joint draws: every frequency of z_t = k and of (z_t, z_{t+1}) = (i, j) within
    5 standard errors sqrt(p(1−p)/N) of the smoother's (so exactly 0 where p = 0). K = 4,
    T = 6: a brute-force case's shapes, whose compiled smoother this reuses."""
    K, T, N = 4, 6, 20_000
    model = random_model(41, K, T, True)
    post = hmm_smoother(*model, method=method)
    z = hmm_sample(jax.random.PRNGKey(1), *model, num_samples=N, method=method)
    assert z.shape == (N, T) and z.dtype == jnp.int32
    z = np.asarray(z)
    freq = np.stack([np.bincount(z[:, t], minlength=K) for t in range(T)]) / N
    pair_freq = np.stack([np.bincount(z[:, t] * K + z[:, t + 1], minlength=K * K)
                          for t in range(T - 1)]).reshape(T - 1, K, K) / N
    for f, p in ((freq, np.asarray(post.marginals)), (pair_freq,
                                                      np.asarray(post.pair_marginals))):
        p = np.clip(p, 0, 1)
        assert np.all(np.abs(f - p) <= 5 * np.sqrt(p * (1 - p) / N) + 1e-12)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("args,match", [
    ((np.zeros(3), np.zeros((3, 3)), np.zeros((5, 4))), "log_potentials must have shape"),
    ((np.zeros(3), np.zeros((3, 4)), np.zeros((5, 3))), "log_transitions must have shape"),
    ((np.zeros(3), np.zeros((5, 3, 3)), np.zeros((5, 3))), r"\(T-1, K, K\)=\(4, 3, 3\)"),
    ((np.zeros(3), np.zeros((3, 3)), np.zeros((0, 3))), "T >= 1"),
    ((np.zeros(3), np.zeros((3, 3)), np.zeros(3)), "log_potentials must have shape"),
    ((np.zeros((1, 3)), np.zeros((3, 3)), np.zeros((5, 3))), "log_initial must have shape"),
])
def test_bad_inputs_raise(args, match):
    for fn in (hmm_smoother, hmm_filter):
        with pytest.raises(ValueError, match=match):
            fn(*args)
    with pytest.raises(ValueError, match=match):
        hmm_sample(jax.random.PRNGKey(0), *args)


def test_bad_method_and_num_samples_raise():
    args = (np.zeros(3), np.zeros((3, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="method must be one of"):
        hmm_smoother(*args, method="fast")
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        hmm_sample(jax.random.PRNGKey(0), *args, num_samples=0)
