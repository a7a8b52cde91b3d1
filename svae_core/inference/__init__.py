"""Exact inference routines.

Gaussian chains (LDS priors with Gaussian potentials) live in :mod:`.lds`, built on the small
dense kernels of :mod:`.linalg` and the blocked prefix scan of :mod:`.scan`.
"""

from svae_core.inference.lds import (
    METHODS,
    GaussianPotentials,
    LDSFiltered,
    LDSPosterior,
    LDSPrior,
    lds_filter,
    lds_log_prob,
    lds_sample,
    lds_smoother,
    lds_smoother_and_sample,
)

__all__ = [
    "METHODS",
    "GaussianPotentials",
    "LDSFiltered",
    "LDSPosterior",
    "LDSPrior",
    "lds_filter",
    "lds_log_prob",
    "lds_sample",
    "lds_smoother",
    "lds_smoother_and_sample",
]
