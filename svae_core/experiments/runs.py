"""Train one model on one data set (a batch of runs in one compiled program) and evaluate
every run on held-out data, in the paper's units (nats per time step per observation dim)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import svae_core
from svae_core import evaluation
from svae_core.models import ModelConfig, build_model
from svae_core.models import conjugate_svae as cs
from svae_core.models import slds_svae as ss
from svae_core.natgrad import svi_term
from svae_core.reporting import describe_device
from svae_core.training import (
    TrainConfig,
    Trainer,
    TrainingTask,
    default_optimizer,
    load_checkpoint,
    random_block_masks,
)

#: How the SVAE holds the LDS parameters θ: "point" (estimates trained by Adam with the
#: networks) or "natgrad" (q(θ) = NIW × MNIW by natural-gradient SVI,
#: :mod:`svae_core.models.conjugate_svae`).
GLOBALS = ("point", "natgrad")

# Evaluation keys are derived from the run's seed, away from the training keys.
_EVAL_SEED_OFFSET = 1_000_003


class TrainedRuns(NamedTuple):
    model: Any  # the flax module
    params: Any  # parameters stacked over runs (leading axis = run)
    records: list  # one JSON-ready dict per run, see :func:`train_and_evaluate`


def reference_log_likelihoods(ssm, y, observed=None) -> tuple[float, float]:
    """(true model, static null model) log-likelihood of the observed steps of y (S, T, N)
    (observed (S, T) bool; None: all) under the generating LDS, in nats per observed time step
    per observation dimension, the unit of :class:`~svae_core.evaluation.ELBOEstimate`."""
    from svae_core.datasets import ssm_log_likelihood, static_null_log_likelihood

    S, T, N = y.shape
    count = S * T * N if observed is None else int(np.sum(observed)) * N
    true_ll = float(np.sum(ssm_log_likelihood(ssm, y, observed))) / count
    null_ll = float(np.sum(static_null_log_likelihood(ssm, y, observed))) / count
    return true_ll, null_ll


def svi_task(model, prior_globals, model_config: ModelConfig, train_config: TrainConfig,
             num_sequences: int, num_timesteps: int, globals_after: int = 0,
             initial_globals=None) -> TrainingTask:
    """The :class:`~svae_core.training.TrainingTask` of a sequence model whose conjugate
    globals q(θ) (the flax parameter ``globals``) learn by natural-gradient SVI and whose
    networks learn by Adam: the conjugate LDS-SVAE and the SLDS-SVAE.

    model: a flax module called as ``model(y, mask, key, num_samples, observed=)`` returning
    elbo, reconstruction, kl (nats per sequence) and ``stats``, the sequence's expected
    statistics packed like its globals; prior_globals: dtype -> η₀.

    Data: {"y": (S, T, N), "observed": (S, T) bool}. Loss: the negative ELBO per time step
    per observation dimension (the sequence models' unit), with the masking of
    ``train_config`` (``mask_fraction``, ``mask_after``) applied here. q(θ) takes the SVI step
    η ← η + ρ(η₀ + (N/|B|)Σ_B E[t] − η), Eq. 4's first term in closed form
    (:func:`svae_core.natgrad.svi_term`, plain SGD at rate ρ·N·T·obs_dim); the networks Adam.
    Rates per run: {"networks": Adam's rate, "globals": ρ}. ``globals_after``: q(θ) stays at
    its start for this many steps while the networks train. ``initial_globals``: q(θ)'s start
    (None: the model's own initialisation)."""
    scale = num_timesteps * model_config.obs_dim

    def init(key, data):
        k_init, k_apply = jax.random.split(key)
        params = model.init(k_init, data["y"][0], jnp.ones(num_timesteps, bool), k_apply)
        if initial_globals is None:
            return params
        start = jax.tree.map(lambda g, x: jnp.asarray(x, g.dtype),
                             params["params"]["globals"], initial_globals)
        return {"params": {**params["params"], "globals": start}}

    def loss(params, batch, key, step):
        k_mask, k_elbo = jax.random.split(key)
        B = batch["y"].shape[0]
        mask = random_block_masks(k_mask, B, num_timesteps, train_config.mask_fraction)
        mask = mask | (step < train_config.mask_after)
        glob = params["params"]["globals"]
        # q(θ)'s gradient comes from svi_term alone; the ELBO sees it as a constant
        frozen = {"params": {**params["params"], "globals": jax.lax.stop_gradient(glob)}}
        apply = lambda y, m, o, k: model.apply(frozen, y, m, k, train_config.num_samples,
                                               observed=o)
        out = jax.vmap(apply)(batch["y"], mask, batch["observed"], jax.random.split(k_elbo, B))
        prior = prior_globals(jax.tree.leaves(glob)[0].dtype)
        target = jax.tree.map(lambda e0, t: e0 + num_sequences * jnp.mean(t, 0), prior,
                              out.stats)
        metrics = {k: jnp.mean(getattr(out, k)) / scale for k in ("elbo", "reconstruction", "kl")}
        return (-metrics["elbo"] + svi_term(glob, target, num_sequences * scale)), metrics

    def make_optimizer(rates, config, params):
        labels = {"params": {k: "globals" if k == "globals" else "networks"
                             for k in params["params"]}}
        return optax.multi_transform(
            {"networks": default_optimizer(rates["networks"], config),
             "globals": optax.sgd(lambda count: jnp.where(
                 count < globals_after, 0.0, rates["globals"] * num_sequences * scale))},
            labels)

    return TrainingTask(init, loss, make_optimizer, data_size=num_sequences)


def conjugate_svae_task(model_config: ModelConfig, train_config: TrainConfig,
                        num_sequences: int, num_timesteps: int, globals_after: int = 0,
                        initial_globals=None) -> TrainingTask:
    """:func:`svi_task` of the conjugate LDS-SVAE
    (:class:`~svae_core.models.conjugate_svae.ConjugateSVAE`; q(θ) starts at the prior unless
    ``initial_globals``)."""
    model = cs.ConjugateSVAE(model_config, num_sequences)
    prior = lambda dtype: cs.prior_globals(model_config.latent_dim, dtype)
    return svi_task(model, prior, model_config, train_config, num_sequences, num_timesteps,
                    globals_after, initial_globals)


def slds_svae_task(model_config: ModelConfig, train_config: TrainConfig, num_states: int,
                   num_sequences: int, num_timesteps: int, num_sweeps: int = 10,
                   concentration: float = 5.0, sticky: float = 0.0, prior_scale: float = 1.0,
                   globals_after: int = 0, initial_globals=None,
                   affine: bool = False) -> TrainingTask:
    """:func:`svi_task` of the SLDS-SVAE (:class:`~svae_core.models.slds_svae.SLDSSVAE` with
    ``num_states`` states, ``num_sweeps`` mean-field sweeps per sequence, the prior of
    :func:`~svae_core.models.slds_svae.prior_globals`, state offsets with ``affine``)."""
    model = ss.SLDSSVAE(model_config, num_states, num_sequences, num_sweeps, concentration,
                        sticky, prior_scale, affine)
    prior = lambda dtype: ss.prior_globals(num_states, model_config.latent_dim, concentration,
                                           sticky, dtype, prior_scale, affine)
    return svi_task(model, prior, model_config, train_config, num_sequences, num_timesteps,
                    globals_after, initial_globals)


def train_and_evaluate(
    model_name: str,
    y_train,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    y_test=None,
    observed=None,
    observed_test=None,
    ssm=None,
    seeds=(0,),
    learning_rates=None,
    eval_samples: int = 10,
    eval_repeats: int = 4,
    progress: bool = True,
    checkpoint_dir=None,
    resume: bool = False,
    globals_mode: str = "point",
    natgrad_step: float = 0.1,
    globals_after: int = 0,
    initial_globals=None,
) -> TrainedRuns:
    """Train runs (seed_i, learning_rate_i) of one model together, then evaluate each.

    Args:
        model_name: a key of :data:`svae_core.models.MODELS`.
        y_train: (S, T, N) training sequences.  y_test: optional (S', T', N) held-out ones.
        observed: optional (S, T) bool, False at training steps never observed (neither
            seen nor scored); observed_test: the same for y_test (S', T').
        ssm: the generating LDS when known; then ``true_mll``, ``null_ll`` and
            ``gap_fraction`` are filled in and each test ELBO is audited against the true
            log-likelihood (:func:`svae_core.evaluation.audit_elbo_bound` raises on a bug).
        seeds, learning_rates: one run per pair (``learning_rates`` None: the config's).
        checkpoint_dir, resume: periodic checkpoints (``train_config.checkpoint_every``) and
            continuing exactly from the last one.
        globals_mode: :data:`GLOBALS`; "natgrad" (``model_name`` "svae" only) trains q(θ) by
            SVI with step ``natgrad_step`` from step ``globals_after``
            (:func:`conjugate_svae_task`), starting from ``initial_globals`` (None: the
            prior; ``natgrad_step=0`` holds q(θ) there). Its ELBOs are then
            the local ELBOs (no share of KL(q(θ)‖p(θ))), bounds on E_q(θ) log p(y | θ, γ).
    Returns:
        :class:`TrainedRuns`; each record holds ``model``, ``seed``, ``learning_rate``,
        ``train_elbo`` (±``train_elbo_se``), ``test_elbo`` (±``test_elbo_se``), ``true_mll``,
        ``null_ll``, ``gap_fraction`` (None when unknown), ``seconds_per_step`` (all runs
        together), ``num_devices`` (the devices the runs were sharded over), ``history`` (step,
        elbo of this run) and ``device``.
    """
    y_train = np.asarray(y_train, np.float32)
    seeds = list(seeds)
    lrs = [train_config.learning_rate] * len(seeds) if learning_rates is None \
        else [float(lr) for lr in learning_rates]
    if globals_mode not in GLOBALS:
        raise ValueError(f"globals_mode must be one of {GLOBALS}, got {globals_mode!r}")
    if globals_mode == "natgrad":
        if model_name != "svae":
            raise ValueError("globals_mode='natgrad' is for model 'svae' (a conjugate prior on "
                             f"its LDS); got model {model_name!r}")
        S, T = y_train.shape[:2]
        obs = np.ones((S, T), bool) if observed is None else np.asarray(observed, bool)
        task = conjugate_svae_task(model_config, train_config, S, T, globals_after,
                                   initial_globals)
        trainer = Trainer(None, {"y": y_train, "observed": obs},
                          dataclasses.replace(train_config, mask_fraction=0.0), task=task)
        model = cs.ConjugateSVAE(model_config)  # evaluation: local ELBOs, no global KL share
        run_rates = [{"networks": lr, "globals": natgrad_step} for lr in lrs]
    else:
        model = build_model(model_name, model_config)
        trainer = Trainer(model, y_train, train_config, observed=observed)
        run_rates = lrs
    states, start, history = trainer.init_runs(seeds, run_rates), 0, None
    if resume:
        states, start, history = load_checkpoint(checkpoint_dir, states, train_config)
    result = trainer.fit(states, start_step=start, history=history,
                         checkpoint_dir=checkpoint_dir, progress=progress,
                         run_labels=[f"seed {s}, lr {lr:g}" for s, lr in zip(seeds, lrs,
                                                                           strict=True)])
    true_ll = null_ll = None
    if ssm is not None and y_test is not None:
        true_ll, null_ll = reference_log_likelihoods(ssm, np.asarray(y_test),
                                                     observed_test)
    device = describe_device()["summary"]
    # One chunk size for both splits, so their evaluations share one compiled program (the
    # estimates do not depend on it).
    eval_batch = min(evaluation.EVAL_BATCH_SIZE, len(y_train),
                     *([] if y_test is None else [len(y_test)]))
    records = []
    for i, (seed, lr) in enumerate(zip(seeds, lrs, strict=True)):
        params = jax.tree.map(lambda x, i=i: x[i], result.states.params)
        k_train, k_test = jax.random.split(jax.random.PRNGKey(seed + _EVAL_SEED_OFFSET))
        evaluate = lambda y, k, obs=None, params=params: evaluation.evaluate_elbo(
            model, params, y, k, num_samples=eval_samples, num_repeats=eval_repeats,
            observed=obs, batch_size=eval_batch)
        train_eval = evaluate(y_train, k_train, observed)
        rec = {
            "model": model_name, "seed": seed, "learning_rate": lr,
            "globals": globals_mode,
            "natgrad_step": natgrad_step if globals_mode == "natgrad" else None,
            "train_elbo": train_eval.mean, "train_elbo_se": train_eval.se,
            "test_elbo": None, "test_elbo_se": None,
            "true_mll": true_ll, "null_ll": null_ll, "gap_fraction": None,
            "seconds_per_step": result.seconds_per_step, "num_devices": result.num_devices,
            "history": {"step": result.history["step"],
                        **{k: [row[i] for row in result.history[k]]
                           for k in ("elbo", "reconstruction", "kl")}},
            "model_config": dataclasses.asdict(model_config),
            "train_config": dataclasses.asdict(train_config),
            "eval_samples": eval_samples, "eval_repeats": eval_repeats,
            "version": svae_core.__version__, "device": device,
        }
        if y_test is not None:
            test_eval = evaluate(np.asarray(y_test, np.float32), k_test, observed_test)
            rec["test_elbo"], rec["test_elbo_se"] = test_eval.mean, test_eval.se
            if true_ll is not None:
                evaluation.audit_elbo_bound(test_eval.mean, test_eval.se, true_ll)
                rec["gap_fraction"] = evaluation.gap_fraction(test_eval.mean, null_ll, true_ll)
        records.append(rec)
    return TrainedRuns(model, result.states.params, records)


def cache_key(config, *labels) -> str:
    """File stem for a cached result: the labels joined by "__" and a digest of the labels
    and every field of the (dataclass) config, so any change of either misses the cache."""
    blob = json.dumps([list(labels), dataclasses.asdict(config)], sort_keys=True)
    return "__".join(map(str, labels)) + "__" + hashlib.sha256(blob.encode()).hexdigest()[:10]


def best_run(records: list[dict]) -> dict:
    """The run with the highest *training* ELBO (model selection never looks at test data)."""
    if not records:
        raise ValueError("no runs")
    return max(records, key=lambda r: r["train_elbo"])
