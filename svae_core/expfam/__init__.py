"""Conjugate exponential families, in natural parameters that are pytrees of arrays.

One module per family, each with the same routines (``from_standard``, ``to_standard``,
``log_partition``, ``sufficient_stats``, ``expected_stats``, ``log_prob``, ``kl``, ``sample``)
and its natural-parameter convention stated in its docstring:

* :mod:`.gaussian` — N(μ, Σ) in information form (J, h), matching the chain potentials;
* :mod:`.categorical` — labels, natural parameter = logits;
* :mod:`.dirichlet` — natural parameter α − 1 (the 2016 SVAE code's convention);
* :mod:`.niw` — normal-inverse-Wishart on (μ, Σ), packed (S + κmmᵀ, κm, κ, ν);
* :mod:`.mniw` — matrix-normal-inverse-Wishart on dynamics (A, Σ), packed (S + MKMᵀ, MK, K, ν).

:mod:`.base` holds the family-independent algebra (∇A as expected statistics, KL as a
Bregman divergence, the conjugate natural gradient); :mod:`.wishart` the Bartlett sampler;
:mod:`.unconstrained` maps Dirichlet and NIW members to free coordinates (for Adam).
"""

from svae_core.expfam import (
    base,
    categorical,
    dirichlet,
    gaussian,
    mniw,
    niw,
    unconstrained,
    wishart,
)
from svae_core.expfam.base import (
    conjugate_elbo,
    expected_stats,
    inner,
    kl,
    natural_gradient,
    natural_gradient_step,
)
from svae_core.expfam.categorical import CategoricalNatural
from svae_core.expfam.dirichlet import DirichletNatural
from svae_core.expfam.gaussian import GaussianNatural, GaussianStandard
from svae_core.expfam.mniw import MNIWExpectedStats, MNIWNatural, MNIWStandard
from svae_core.expfam.niw import NIWExpectedStats, NIWNatural, NIWStandard

__all__ = [
    "CategoricalNatural",
    "DirichletNatural",
    "GaussianNatural",
    "GaussianStandard",
    "MNIWExpectedStats",
    "MNIWNatural",
    "MNIWStandard",
    "NIWExpectedStats",
    "NIWNatural",
    "NIWStandard",
    "base",
    "categorical",
    "conjugate_elbo",
    "dirichlet",
    "expected_stats",
    "gaussian",
    "inner",
    "kl",
    "mniw",
    "natural_gradient",
    "natural_gradient_step",
    "niw",
    "unconstrained",
    "wishart",
]
