"""svae_core: structured variational autoencoders (Johnson et al. 2016; Zhao & Linderman 2023).

Subpackages and modules: :mod:`svae_core.inference` (message passing),
:mod:`svae_core.datasets` (synthetic data and observation potentials),
:mod:`svae_core.models` (the SVAE and the baseline posterior families) with
:mod:`svae_core.networks` (their convolutional networks for image observations),
:mod:`svae_core.expfam` (conjugate exponential families) with :mod:`svae_core.natgrad`
(natural-gradient SVI as an optax transformation),
:mod:`svae_core.training` (many runs trained at once), :mod:`svae_core.evaluation`
(held-out ELBOs, the gap fraction, linear decoding), :mod:`svae_core.experiments` (the
drivers behind the book's chapters), :mod:`svae_core.reporting` (what the chapters record
about their results) and :mod:`svae_core.cli`.
"""

__version__ = "0.1.0"
