r"""Natural-gradient SVI for conjugate global parameters, as an optax transformation.

Johnson et al. (2016, §4.2, Proposition 4.2, Eq. 4) update the natural parameters η of each
conjugate global factor q(θ) by the natural gradient of the SVAE objective

    ∇̃_η L = (η₀ + E_{q*(x)}[(t_x(x), 1)] − η) + (∇_{η_x} L(η, η_x*), 0),

(with minibatches the expected statistics are scaled by N/|B|). The 2016 code kept only the
first term. :func:`natural_gradient` gets both from the Euclidean gradient that backprop
already computes, so a model can train its conjugate globals by natural gradient and its
networks by Adam in one ``optax.multi_transform``, inside the vmapped training loop.

**Why F⁻¹∇_η L is Eq. 4 (both terms).** Write μ(η) = ∇A(η) for the mean parameters; the
Jacobian ∂μ/∂η = ∇²A(η) = F(η) is the Fisher information, symmetric. If the objective
depends on η only through μ, L(η) = L̃(μ(η)), the chain rule gives ∇_η L = F ∇_μ L̃, so

    F⁻¹ ∇_η L = ∇_μ L̃:   the natural gradient is the gradient in mean parameters.

Apply it to the SVAE objective L_SVAE(η) = L(η, η_x*(η)) (Eq. 3 at the local optimum):

1. At fixed q(x) the terms of Eq. 3 that involve q(θ) are E_{q(θ)}[log p₀(θ) + log p(x | θ)
   − log q(θ)], and log p(x | θ) = ⟨t_θ(θ), (t_x(x), 1)⟩, so they are the conjugate ELBO
   L_c(η) = ⟨η₀ + s − η, μ⟩ + A(η) − A(η₀) with s = E_{q(x)}[(t_x(x), 1)]
   (:func:`svae_core.expfam.base.conjugate_elbo`). Its gradient is
   ∇_η L_c = −μ + F(η₀ + s − η) + μ = F(η₀ + s − η): the first term of Eq. 4, times F.
2. The local optimum of the surrogate objective is η_x* = E_{q(θ)}[η_x(θ)] + r(y; φ)
   = Πμ(η) + r, where the linear map Π picks (and, in this package's packings, rescales:
   NIW → Gaussian information form is J = −2μ_Phi, h = μ_km) the block of μ that pairs with
   t_x. Hence ∂η_x*/∂η = ΠF, and the chain rule through η_x* adds (ΠF)ᵀ∇_{η_x}L
   = F Πᵀ ∇_{η_x} L. (The same holds when η_x* is an iterated mean-field fixed point, e.g.
   the GMM's: its updates see η only through μ.)

So ∇_η L_SVAE = F[(η₀ + s − η) + Πᵀ∇_{η_x}L] and F⁻¹∇_η L_SVAE is exactly Eq. 4; with the
local terms of the loss multiplied by N/|B|, s carries the same factor. Backprop of the
loss computes ∇_η L_SVAE (both paths), and this transform multiplies by F⁻¹. For a loss
that uses η some other way (e.g. reparameterised samples θ ~ q(θ)), F⁻¹∇L is still the
natural gradient (Amari 1998), just not in the closed form of Eq. 4.

**Scale.** The update is −step_size · F⁻¹g for the gradient g of a *loss* (the negative ELBO):
a descent step on the loss, an ascent step along Eq. 4. If the loss is the negative ELBO
divided by a constant c (per data point: c = N; per time step and output dimension: c = N·T·D),
F⁻¹g is Eq. 4 divided by c, so the SVI step ρ of Hoffman et al. (2013) is step_size = ρ·c
(the 2016 code's update −(scale/N)(η₀ + (N/|B|)E[t] − η) is this with a per-point loss).
With step_size = 1·c and a full batch, one step lands on η₀ + s, the exact conjugate
posterior. Put this transform in its own ``multi_transform`` branch, not behind
``clip_by_global_norm`` or Adam, which would rescale g and break these identities.

**Singular Fisher matrices.** F is taken in the flattened coordinates of the natural-parameter
NamedTuple (``jax.flatten_util.ravel_pytree``). The matrix fields that pair with symmetric
statistics (NIW/MNIW Phi and K, Gaussian J) are symmetrised inside A, so F v = 0 for every
antisymmetric v — exactly, even in floating point (the (i, j) and (j, i) rows and columns of
F are computed identically); the categorical logits have F·1 = 0. Those directions change
neither A nor the distribution, and the gradient of any loss that sees η only through the
distribution has no component along them (symmetric matrix gradients; zero-sum logit
gradients), so F x = g is consistent and :func:`fisher_solve` returns its minimum-norm
solution x = F⁺g: matrix fields come out symmetric, logits zero-sum. A ridge (F + λI)⁻¹g was
rejected: F's nonzero eigenvalues span many orders of magnitude (they scale like the data's
units squared and like 1/ν, 1/κ), so no single λ is both negligible and stabilising.

The pseudo-inverse is computed on the Jacobi-scaled matrix F̃ = D^{-1/2} F D^{-1/2}
(D = diag F), whose eigendecomposition drops eigenvalues below ``rtol``·max (default
10·P·eps for P coordinates, as ``jnp.linalg.pinv``); the null directions of F̃ mapped back
(D^{-1/2}·null F̃ = null F) are then projected out, so the result is F⁺g. The scaling matters
in float32: on the spiral data's scale (points ~10) the unscaled pseudo-inverse is wrong by
O(1) while the scaled one is accurate to ~1e-5. It cannot undo all ill-conditioning: for
concentrated posteriors (ν, κ in the thousands, e.g. an MNIW after 5000 transitions) the
scaled Fisher has eigenvalues near 1e-10, which float32 cannot resolve; those directions are
dropped (not amplified), and a float32 step of size 1 then misses the exact posterior by up
to ~1e-2 nats of KL (NIW, D = 2 to 10: ≤ 2e-7). Keep such globals in float64
(``jax.enable_x64``; the networks can stay float32) when that matters.

**Leaving the domain.** :func:`in_domain` tells whether natural parameters still describe a
distribution (NIW: κ > 0, ν > D − 1, S = Phi − κ⁻¹(κm)(κm)ᵀ positive definite; …): plain
gradient steps can leave it, natural-gradient steps of size ≤ 1 cannot, being convex
combinations of η and η₀ + s, both in the domain (up to the second term of Eq. 4).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from svae_core.expfam import base, categorical, dirichlet, gaussian, mniw, niw


class NaturalGradientState(NamedTuple):
    """count: () int32, the number of updates made (the schedule's argument)."""

    count: jax.Array


@partial(jax.jit, static_argnums=0)
def fisher_matrix(log_partition: Callable, eta) -> jax.Array:
    """F(η) = ∇²A(η) in the flattened coordinates of η (``ravel_pytree`` order): (P, P).

    eta: one member's natural parameters (no batch axes); P = total number of entries.
    """
    flat, unravel = ravel_pytree(eta)
    return jax.hessian(lambda f: log_partition(unravel(f)))(flat)


def _default_rtol(size: int, dtype) -> float:
    return 10.0 * size * float(jnp.finfo(dtype).eps)


def _min_norm_solve(F, g, rtol):
    """x = F⁺g for symmetric PSD F (P, P) and g (P,), through the Jacobi-scaled matrix."""
    F = 0.5 * (F + F.T)
    d = jnp.diagonal(F)
    pos = d > jnp.finfo(F.dtype).tiny
    scale = jnp.where(pos, jax.lax.rsqrt(jnp.where(pos, d, 1.0)), 1.0)  # D^{-1/2}
    w, V = jnp.linalg.eigh(scale[:, None] * F * scale[None, :])
    keep = w > rtol * jnp.max(w)
    inv_w = jnp.where(keep, 1.0 / jnp.where(keep, w, 1.0), 0.0)
    x = scale * (V @ (inv_w * (V.T @ (scale * g))))
    # Null space of F = D^{-1/2}·(null space of F̃): project x orthogonally off it.
    N = scale[:, None] * V * (~keep)[None, :].astype(F.dtype)  # zero columns where kept
    gram = N.T @ N + jnp.diag(keep.astype(F.dtype))
    return x - N @ jnp.linalg.solve(gram, N.T @ x)


@partial(jax.jit, static_argnums=0, static_argnames="rtol")
def fisher_solve(log_partition: Callable, eta, grad, rtol: float | None = None):
    """F(η)⁺ · g: the natural gradient of a function whose Euclidean gradient at η is ``grad``.

    log_partition: η -> scalar A(η) (a module-level function: it is a static argument).
    eta, grad: one member's natural parameters and a gradient, pytrees of one structure
    (vmap for a batch). rtol: eigenvalue cutoff relative to the largest eigenvalue of the
    Jacobi-scaled Fisher matrix; default 10·P·eps(dtype). Returns a pytree shaped like eta.
    For gradients with components along F's null directions (antisymmetric parts of
    symmetric matrix fields), those components are discarded.
    """
    flat_eta, unravel = ravel_pytree(eta)
    flat_grad, _ = ravel_pytree(grad)
    flat_grad = flat_grad.astype(flat_eta.dtype)
    tol = _default_rtol(flat_eta.size, flat_eta.dtype) if rtol is None else rtol
    return unravel(_min_norm_solve(fisher_matrix(log_partition, eta), flat_grad, tol))


def _is_namedtuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _is_masked(x) -> bool:
    return isinstance(x, optax.MaskedNode)


def natural_gradient(log_partition: Callable, step_size: float | optax.Schedule = 1.0, *,
                     batch_dims: int = 0, member_type: type | None = None,
                     rtol: float | None = None) -> optax.GradientTransformation:
    """An optax transformation mapping the gradient g of a loss at natural parameters η to
    the update −step_size · F(η)⁺ g, F = ∇²A(η) (see the module docstring).

    Args:
        log_partition: A of the family, η -> scalar, for one member (e.g. ``niw.log_partition``;
            pass the module-level function, not a fresh lambda).
        step_size: a float, an array (e.g. a per-run rate traced under vmap), or an optax
            schedule of the update count.
        batch_dims: number of leading axes shared by every leaf of a member that index
            separate members (e.g. 1 for K mixture components stacked as one NIWNatural
            with Phi (K, D, D), km (K, D), kappa (K,), nu (K,)); each is solved on its own.
        member_type: the NamedTuple class of the natural parameters. The transform finds
            the members as the subtrees of ``params`` of that type (default: the outermost
            NamedTuple on each path; if ``params`` holds none, all of ``params`` is one
            member). Members masked out by ``optax.masked`` / ``multi_transform`` pass
            through; array leaves outside members are an error.
        rtol: eigenvalue cutoff of :func:`fisher_solve`.

    ``update(grads, state, params)`` needs ``params`` (the η at which F is taken). The state
    is :class:`NaturalGradientState`; it vmaps over runs like any optax state.
    """
    if batch_dims < 0:
        raise ValueError(f"batch_dims must be >= 0, got {batch_dims}")
    is_member = ((lambda x: isinstance(x, member_type)) if member_type is not None
                 else _is_namedtuple)

    solve = partial(fisher_solve, log_partition, rtol=rtol)
    for _ in range(batch_dims):
        solve = jax.vmap(solve)

    def init_fn(params):
        del params
        return NaturalGradientState(count=jnp.zeros([], jnp.int32))

    def update_one(g, eta, rate):
        leaves = jax.tree_util.tree_leaves(g, is_leaf=_is_masked)
        if not leaves or all(_is_masked(leaf) for leaf in leaves):
            return g  # masked out: another branch of a multi_transform updates it
        if any(_is_masked(leaf) for leaf in leaves):
            raise ValueError("a natural-parameter member is only partly selected by the "
                             "optax mask; label all of its fields alike")
        nat = solve(eta, g)
        return jax.tree_util.tree_map(lambda n, e: (-rate * n).astype(e.dtype), nat, g)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("natural_gradient needs params (the natural parameters η)")
        rate = step_size(state.count) if callable(step_size) else step_size
        nodes = jax.tree_util.tree_leaves(params, is_leaf=is_member)
        if not any(is_member(n) for n in nodes):
            new = update_one(updates, params, rate)
        else:
            def per_node(g, eta):
                if is_member(g):
                    return update_one(g, eta, rate)
                raise ValueError(
                    f"natural_gradient got an array outside any natural-parameter member "
                    f"(shape {jnp.shape(g)}); label it for another transformation")
            new = jax.tree_util.tree_map(per_node, updates, params, is_leaf=is_member)
        return new, NaturalGradientState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


class HaltState(NamedTuple):
    """inner: the wrapped transformation's state. count: () int32 updates proposed so far.
    halted_at: () int32, the update count at which a proposal first left the domain
    (−1 while every update has stayed inside)."""

    inner: optax.OptState
    count: jax.Array
    halted_at: jax.Array


def halt_outside_domain(inner: optax.GradientTransformation,
                        is_valid: Callable) -> optax.GradientTransformation:
    """Wrap ``inner`` so that a run stops at its last valid parameters instead of leaving
    the domain: the first update whose result fails ``is_valid(params + update)`` (a scalar
    bool, e.g. built from :func:`in_domain`) is replaced by zero, and so is every later one;
    ``HaltState.halted_at`` records when. A vmapped batch of runs keeps its other runs going
    (one run's NaNs would otherwise stop the whole program), and the halted run's ELBO stays
    finite at its last valid value. Nothing is rescaled: a run either takes ``inner``'s
    update or stops, so counting halted runs counts the runs ``inner`` drives out.
    """

    def init_fn(params):
        return HaltState(inner.init(params), jnp.zeros([], jnp.int32),
                         jnp.full([], -1, jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("halt_outside_domain needs params")
        new_updates, new_inner = inner.update(updates, state.inner, params)
        ok = (state.halted_at < 0) & is_valid(optax.apply_updates(params, new_updates))
        keep = partial(jax.tree_util.tree_map, lambda a, b: jnp.where(ok, a, b))
        updates_out = jax.tree_util.tree_map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)),
                                             new_updates)
        halted_at = jnp.where((state.halted_at < 0) & ~ok, state.count, state.halted_at)
        return updates_out, HaltState(keep(new_inner, state.inner),
                                      optax.safe_increment(state.count), halted_at)

    return optax.GradientTransformation(init_fn, update_fn)


def svi_term(eta, target, scale) -> jax.Array:
    """A scalar that is 0 in value and whose gradient in ``eta`` is (η − target)/scale.

    Add it to a loss in which η's own path is stopped (``jax.lax.stop_gradient``), and plain
    gradient descent on η at rate ρ·scale takes the SVI step η ← η + ρ(target − η) of Hoffman
    et al. (2013). With target = η₀ + (N/|B|)·Σ_B E[t], the minibatch's conjugate update, that
    is Eq. 4's first term in closed form: no Fisher solve, so it holds to rounding in float32,
    and for ρ ≤ 1 the step is a convex combination of two members, inside the domain.
    ``scale``: the constant the loss divides the negative ELBO by (see "Scale" above).
    ``target`` is treated as a constant (its gradient is stopped)."""
    target = jax.lax.stop_gradient(target)
    terms = jax.tree_util.tree_map(
        lambda e, t: jnp.sum((e - jax.lax.stop_gradient(e)) * jax.lax.stop_gradient(e - t)),
        eta, target)
    return sum(jax.tree_util.tree_leaves(terms)) / scale


# ---------------------------------------------------------------------- the domain of η


def _pos_def(a) -> jax.Array:
    return jnp.linalg.eigvalsh(base.symmetrize(a))[..., 0] > 0


def _finite(eta) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(eta)]))


def _niw_in_domain(eta: niw.NIWNatural):
    dim = eta.km.shape[-1]
    kappa_pos = eta.kappa > 0
    kappa = jnp.where(kappa_pos, eta.kappa, 1.0)
    S = base.symmetrize(eta.Phi) - jnp.outer(eta.km, eta.km) / kappa
    return kappa_pos & (eta.nu > dim - 1) & _pos_def(S)


def _mniw_in_domain(eta: mniw.MNIWNatural):
    d_out = eta.MK.shape[0]
    K = base.symmetrize(eta.K)
    K_pd = _pos_def(K)
    K_safe = jnp.where(K_pd, K, jnp.eye(K.shape[0], dtype=K.dtype))
    S = base.symmetrize(eta.Phi - eta.MK @ jnp.linalg.solve(K_safe, eta.MK.T))
    return K_pd & (eta.nu > d_out - 1) & _pos_def(S)


def _gaussian_in_domain(eta: gaussian.GaussianNatural):
    return _pos_def(eta.J)


def _dirichlet_in_domain(eta: dirichlet.DirichletNatural):
    return jnp.all(eta.alpha_minus_one + 1.0 > 0)


def _categorical_in_domain(eta: categorical.CategoricalNatural):
    return jnp.asarray(True)


_DOMAINS = {
    "niw": _niw_in_domain,
    "mniw": _mniw_in_domain,
    "gaussian": _gaussian_in_domain,
    "dirichlet": _dirichlet_in_domain,
    "categorical": _categorical_in_domain,
}


def in_domain(family: str | types.ModuleType, eta, batch_dims: int = 0) -> jax.Array:
    """Whether natural parameters η describe a distribution of the family (and are finite).

    family: a module of :mod:`svae_core.expfam` or its name ("niw", "mniw", "gaussian",
    "dirichlet", "categorical"). Conditions: NIW κ > 0, ν > D − 1, S = Phi − κ⁻¹(κm)(κm)ᵀ
    positive definite; MNIW K positive definite, ν > D_out − 1, S = Phi − MK K⁻¹ (MK)ᵀ
    positive definite; Gaussian J positive definite; Dirichlet α = η + 1 > 0; categorical
    any finite logits. Matrix fields are judged by their symmetric parts (all A sees).
    batch_dims: leading axes of members, as in :func:`natural_gradient`.
    Returns a bool array of the batch shape (() for one member).
    """
    name = family.__name__.rsplit(".", 1)[-1] if isinstance(family, types.ModuleType) else family
    if name not in _DOMAINS:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(_DOMAINS)}")
    return _domain_check(name, batch_dims)(eta)


@functools.cache
def _domain_check(name: str, batch_dims: int):
    def one(e):
        return _DOMAINS[name](e) & _finite(e)

    for _ in range(batch_dims):
        one = jax.vmap(one)
    return jax.jit(one)


__all__ = [
    "HaltState",
    "NaturalGradientState",
    "fisher_matrix",
    "fisher_solve",
    "halt_outside_domain",
    "in_domain",
    "natural_gradient",
    "svi_term",
]
