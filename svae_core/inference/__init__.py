"""Exact and structured inference routines.

Gaussian chains (LDS priors with Gaussian potentials) live in :mod:`.lds`; discrete chains
(HMM forward-backward) and switching-LDS structured mean field will sit beside it.
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
