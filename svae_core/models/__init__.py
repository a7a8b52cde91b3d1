"""Sequence models that share the LDS prior and the Gaussian decoder (see :mod:`.base`).

``MODELS`` maps the CLI's model names to flax modules built from a :class:`ModelConfig`.
"""

from svae_core.models.base import ELBOTerms, ModelConfig
from svae_core.models.svae import SVAE

MODELS = {"svae": SVAE}


def build_model(name: str, config: ModelConfig):
    """The flax module for model ``name`` (one of ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](config)


__all__ = ["ELBOTerms", "MODELS", "ModelConfig", "SVAE", "build_model"]
