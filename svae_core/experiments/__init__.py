"""Experiment drivers behind the book's chapters and the report scripts: each function
trains and evaluates through :mod:`svae_core.training` and :mod:`svae_core.evaluation` and
returns plain dicts ready for JSON, so a chapter is parameters, calls and plots.

* :mod:`.runs`: train one model on one data set (many seeds / learning rates at once) and
  evaluate every run.
* :mod:`.lds_grid`: the LDS grid of Zhao & Linderman (2023, §4.1, Fig. 2, appendix A–B).
* :mod:`.timing`: seconds per training step and smoother timings (§4.2, Fig. 3).
* :mod:`.pendulum`: the pendulum video experiment (§4.3, Figs. 4–6, appendix B); saving and
  loading its trained models.
* :mod:`.tables`: every Markdown table of results, and the merging of report files.
"""

from svae_core.experiments.runs import TrainedRuns, best_run, train_and_evaluate

__all__ = ["TrainedRuns", "best_run", "train_and_evaluate"]
