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
    lds_sample,
    lds_smoother,
)

__all__ = [
    "METHODS",
    "GaussianPotentials",
    "LDSFiltered",
    "LDSPosterior",
    "LDSPrior",
    "lds_filter",
    "lds_sample",
    "lds_smoother",
]
