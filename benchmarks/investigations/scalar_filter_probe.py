"""A negative result, kept so it can be rerun: the sequential Kalman filter written with every
matrix entry as its own array (D = 3, diagonal potentials), so that the scan body is
elementwise code only, against ``lds_filter(method="sequential")``.

    .venv/bin/python benchmarks/investigations/scalar_filter_probe.py [--T 1000] [--repeats 31]

The idea: on a CPU the filter's 1000 steps cost a fixed overhead per XLA kernel in the scan
body, not arithmetic, so a body XLA could fuse into fewer kernels should run faster. Prints
the log-normalizers of both (they must agree to float32 rounding), the kernels (fusions) in
each compiled program and the median ms of the forward pass and of the gradient in (J, h),
batch 10 by vmap. Not used by the library: its gradient is slower than ours (the book's
appendix, "What did not work, and why").
"""

from __future__ import annotations

import argparse
import re

import jax
import jax.numpy as jnp
from jax import lax

from svae_core.experiments.timing import time_compiled
from svae_core.inference import GaussianPotentials, LDSPrior, lds_filter
from svae_core.inference.linalg import cholesky_entries
from svae_core.reporting import describe_device

KERNEL = re.compile(r"= \S+ fusion\(")  # one fused XLA kernel in compiled HLO text


def scalar_filter_log_normalizer(prior: LDSPrior, J, h):
    """log Z of one sequence; J (T, D) diagonal potentials, h (T, D). Conditions on a step by
    P = LLᵀ, K = I + LᵀJL = CCᵀ, posterior covariance (L C⁻ᵀ)(L C⁻ᵀ)ᵀ, log det K = 2Σ log C_ii."""
    D = prior.m1.shape[0]
    A = {(i, j): prior.A[i, j] for i in range(D) for j in range(D)}
    Q = {(i, j): prior.Q[i, j] for i in range(D) for j in range(i + 1)}
    lower = [(i, j) for i in range(D) for j in range(i + 1)]

    def step(carry, x):
        m, P = carry[0], dict(zip(lower, carry[1], strict=True))
        Jt, ht = x
        L = cholesky_entries(lambda i, j: P[i, j], D)
        K = {(i, j): sum((L[k, i] * Jt[k] * L[k, j] for k in range(i, D)), 0.0)
             + (1.0 if i == j else 0.0) for i, j in lower}
        C = cholesky_entries(lambda i, j: K[i, j], D)
        W = {}
        for r in range(D):  # W = L C⁻ᵀ, row by row by forward substitution
            for i in range(D):
                lv = L[r, i] if r >= i else 0.0
                W[r, i] = (lv - sum((C[i, k] * W[r, k] for k in range(i)), 0.0)) / C[i, i]
        S = {(i, j): sum(W[i, k] * W[j, k] for k in range(D)) for i, j in lower}
        Sf = lambda i, j: S[max(i, j), min(i, j)]
        resid = [ht[i] - Jt[i] * m[i] for i in range(D)]
        shift = [sum(Sf(i, k) * resid[k] for k in range(D)) for i in range(D)]
        mu = [m[i] + shift[i] for i in range(D)]
        log_z = (-sum(jnp.log(C[i, i]) for i in range(D))
                 + sum((ht[i] - 0.5 * Jt[i] * m[i]) * m[i] for i in range(D))
                 + 0.5 * sum(resid[i] * shift[i] for i in range(D)))
        m_next = tuple(sum(A[i, k] * mu[k] for k in range(D)) + prior.b[i] for i in range(D))
        AS = {(i, j): sum(A[i, k] * Sf(k, j) for k in range(D)) for i in range(D)
              for j in range(D)}
        P_next = tuple(sum(AS[i, k] * A[j, k] for k in range(D)) + Q[i, j] for i, j in lower)
        return (m_next, P_next), log_z

    init = (tuple(prior.m1[i] for i in range(D)), tuple(prior.Q1[i, j] for i, j in lower))
    xs = (tuple(J[:, i] for i in range(D)), tuple(h[:, i] for i in range(D)))
    return lax.scan(step, init, xs)[1].sum()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=31)
    args = ap.parse_args(argv)
    D, B = 3, 10
    key_J, key_h = jax.random.split(jax.random.PRNGKey(0))
    prior = LDSPrior(jnp.full(D, 0.3), jnp.eye(D), 0.9 * jnp.eye(D) + 0.05, jnp.full(D, 0.1),
                     0.1 * jnp.eye(D))
    J = 2 * jax.random.uniform(key_J, (B, args.T, D))
    h = jax.random.normal(key_h, (B, args.T, D))
    variants = {
        "lds_filter (sequential)": lambda J, h: jax.vmap(lambda j, k: lds_filter(
            prior, GaussianPotentials(j, k), method="sequential").log_normalizer)(J, h).sum(),
        "entry-by-entry filter": lambda J, h: jax.vmap(
            lambda j, k: scalar_filter_log_normalizer(prior, j, k))(J, h).sum(),
    }
    print(f"{describe_device()['summary']}; T = {args.T}, batch {B}, D = {D}, diagonal J; "
          f"median ms of {args.repeats} calls\n")
    print("| filter | log Z (batch sum) | forward ms [kernels] | gradient ms [kernels] |")
    print("|---|---|---|---|")
    for name, fn in variants.items():
        forward, gradient = fn, jax.grad(fn, argnums=(0, 1))
        compiled = {f: jax.jit(f).lower(J, h).compile() for f in (forward, gradient)}
        cells = [f"{time_compiled(f, (J, h), args.repeats)[0]:.2f} "
                 f"[{len(KERNEL.findall(c.as_text()))}]" for f, c in compiled.items()]
        print(f"| {name} | {float(compiled[forward](J, h)):.3f} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
