"""Sequence models that share the LDS prior and the Gaussian decoder (see :mod:`.base`), with
image observations (``ModelConfig.frame_shape``) and forecasting (:class:`SequenceModel`).

``MODELS`` maps the CLI's model names to flax modules built from a :class:`ModelConfig`.
"""

from svae_core.models.base import (
    DYNAMICS_INITS,
    RECOMMENDED_HIDDEN,
    ELBOTerms,
    ModelConfig,
    SequenceModel,
    effective_sample_size,
    log_mean_exp,
    resolve_smoother,
    rollout_prior,
)
from svae_core.models.cnn_ar_l import CNNARL
from svae_core.models.recognition import BaselinePosterior
from svae_core.models.rnn_ar_l import RNNARL
from svae_core.models.rnn_ar_nl import RNNARNL
from svae_core.models.rnn_mf import RNNMF
from svae_core.models.svae import SVAE

MODELS = {"svae": SVAE, "rnn_mf": RNNMF, "rnn_ar_l": RNNARL, "rnn_ar_nl": RNNARNL,
          "cnn_ar_l": CNNARL}

#: The name of each model in tables and figures, in the paper's order.
MODEL_LABELS = {"svae": "SVAE", "rnn_mf": "RNN-MF", "rnn_ar_l": "RNN-AR-L",
                "rnn_ar_nl": "RNN-AR-NL", "cnn_ar_l": "CNN-AR-L"}


def build_model(name: str, config: ModelConfig):
    """The flax module for model ``name`` (one of ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](config)


__all__ = ["CNNARL", "RNNARL", "RNNARNL", "RNNMF", "SVAE", "BaselinePosterior", "ELBOTerms",
           "DYNAMICS_INITS", "MODELS", "RECOMMENDED_HIDDEN", "MODEL_LABELS", "ModelConfig",
           "SequenceModel",
           "build_model", "effective_sample_size", "log_mean_exp", "resolve_smoother",
           "rollout_prior"]
