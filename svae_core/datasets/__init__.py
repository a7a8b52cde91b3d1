"""Synthetic data sets for the book's chapters and the tests.

:mod:`.lds`: a rotating linear-dynamical-system prior, simulation from it, direct noisy
observations of its state, and the Gaussian potentials those (optionally masked) observations
define.
"""

from svae_core.datasets.lds import (
    missing_span_mask,
    observation_log_constant,
    potentials_from_observations,
    rotating_lds_prior,
    sample_lds,
    sample_observations,
)

__all__ = [
    "missing_span_mask",
    "observation_log_constant",
    "potentials_from_observations",
    "rotating_lds_prior",
    "sample_lds",
    "sample_observations",
]
