"""svae_core: structured variational autoencoders (Johnson et al. 2016; Zhao & Linderman 2023).

Subpackages: :mod:`svae_core.inference` (message passing), later ``models``, ``datasets``.
"""

__version__ = "0.1.0"
