"""Exact inference routines.

Gaussian chains (LDS priors with Gaussian potentials) live in :mod:`.lds`, built on the small
dense kernels of :mod:`.linalg` and the blocked prefix scan of :mod:`.scan`. :mod:`.expected_prior`
turns a mean-field q(θ)'s expected dynamics statistics into a prior, potentials and a constant
for the same smoother. Discrete chains (HMMs with node log-potentials: forward–backward smoother,
filter and joint sampler, sequential or parallel) live in :mod:`.hmm`.
"""

from svae_core.inference.expected_prior import (
    ExpectedLDSPrior,
    add_potentials,
    expected_lds_prior,
)
from svae_core.inference.hmm import (
    HMMFiltered,
    HMMPosterior,
    hmm_filter,
    hmm_sample,
    hmm_smoother,
)
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
    "ExpectedLDSPrior",
    "GaussianPotentials",
    "HMMFiltered",
    "HMMPosterior",
    "LDSFiltered",
    "LDSPosterior",
    "LDSPrior",
    "add_potentials",
    "expected_lds_prior",
    "hmm_filter",
    "hmm_sample",
    "hmm_smoother",
    "lds_filter",
    "lds_log_prob",
    "lds_sample",
    "lds_smoother",
    "lds_smoother_and_sample",
]
