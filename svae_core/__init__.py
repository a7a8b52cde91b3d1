"""svae_core: structured variational autoencoders (Johnson et al. 2016; Zhao & Linderman 2023).

Subpackages: :mod:`svae_core.inference` (message passing), :mod:`svae_core.datasets`
(synthetic data and observation potentials), :mod:`svae_core.reporting` (what the book's
chapters record about their results); later ``models``.
"""

__version__ = "0.1.0"
