"""Training many runs of one model at once: one compiled program, runs stacked on a leading
axis and advanced together by ``jax.vmap``.

A *run* is (seed, learning rate); runs share the model, the data and every shape. Each
training step draws its minibatch, masks and reparameterisation noise from
``fold_in(run_key, step)``, so a run's trajectory depends only on its seed and the step count:
resuming from a checkpoint continues it exactly.

Several devices: :func:`device_mesh` lays the devices out on a ("runs", "batch") mesh, and
:meth:`Trainer.fit` places the stacked run states on it and marks each minibatch's batch
axis, and jit's SPMD partitioner splits the program over the devices; the values computed are
the same as on one device up to float32 rounding (sums over a split batch add in another order).

Self-supervised masking (Zhao & Linderman 2023, §3.3): at every step each training sequence
gets one random contiguous hidden block of length uniform in {0, …, ⌊mask_fraction·T⌋};
the encoder does not see it, the loss still reconstructs it.

**Other model families: a** :class:`TrainingTask`. The five sequence models train through
their flax ``init``/``apply`` and :func:`batch_elbo` on sequences (S, T, N) with Adam
(:func:`default_optimizer`). A family that does not fit that mould (data that are not
sequences, trainable state that is not only flax parameters, another optimiser) passes
``Trainer(None, data, config, task=TrainingTask(init, loss, optimizer, data_size))``:

* ``init(key, data) -> params``: the run's whole trainable pytree, e.g.
  ``{"networks": flax_params, "globals": GMMGlobals(...)}``; ``data`` is the training data.
* ``loss(params, batch, key, step) -> (loss, metrics)``: a scalar to minimise on a minibatch
  ``batch`` (``batch_size`` entries drawn without replacement along the leading axis of every
  leaf of ``data``, an array or a pytree of arrays; e.g. points (B, P)), with ``key`` for its
  noise and ``step`` (int) the global step. ``metrics``: a dict (or NamedTuple) of scalars
  holding at least "elbo", "reconstruction" and "kl", which the history records and the NaN
  guard checks (as it checks the gradient norm).
* ``optimizer(learning_rate, config, params) -> optax.GradientTransformation``: built anew
  in every step from the run's ``learning_rate`` (traced under vmap) and ``params`` (to
  derive ``multi_transform`` labels); default :func:`default_optimizer` (clip + Adam).
* ``data_size``: the N that the loss (and the natural-gradient step sizes) are normalised
  by; the Trainer refuses data whose leading axis differs (None: unchecked).

A run's ``learning_rate`` (:class:`RunState`) is then whatever pytree of per-run rates the
task's optimizer reads, e.g. ``{"adam": 3e-3, "natural": 1.0}`` for Adam on the networks and
natural-gradient SVI (:func:`svae_core.natgrad.natural_gradient`) on the conjugate globals;
``init_runs(seeds, learning_rates)`` takes one such pytree per run (None: the scalar
``config.learning_rate``), so seeds × step sizes are one vmapped program. Convention for
natural steps: store the SVI step ρ of Hoffman et al. (2013) and let the optimizer multiply
it by the loss's normaliser (``data_size`` for a per-point loss; see natgrad's "Scale"),
so ρ = 1 with a full batch lands on the conjugate posterior. Sketch (GMM-SVAE)::

    labels = {"networks": "adam", "globals": GMMGlobals("dirichlet", "niw")}  # a prefix
    def optimizer(rates, config, params):
        step = rates["natural"] * num_data  # the loss is the negative ELBO per point
        return optax.multi_transform({
            "adam": default_optimizer(rates["adam"], config),
            "niw": natural_gradient(niw.log_partition, step, batch_dims=1,
                                    member_type=niw.NIWNatural),
            "dirichlet": natural_gradient(dirichlet.log_partition, step,
                                          member_type=DirichletNatural)}, labels)

(``member_type`` because GMMGlobals is itself a NamedTuple.) With a task,
``mask_fraction`` must be 0 and ``observed`` None (they belong to the sequence path); the
minibatch draw, per-run keys, vmapped runs, sharding over :func:`device_mesh` (the batch
axis of every data leaf is split), checkpoints, history and the NaN guard are shared.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm  # text bars: tqdm.auto wants ipywidgets inside notebooks


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """steps: optimiser steps. batch_size: sequences per step (drawn without replacement).
    learning_rate: Adam's rate after a linear warm-up of warmup_steps; from step lr_decay_start
    (0: never) a cosine decay takes it to lr_final_fraction·learning_rate over lr_decay_steps
    steps, where it stays. num_samples: posterior
    samples per sequence for the ELBO. mask_fraction: longest hidden block as a fraction of T
    (0 disables masking); mask_after: step at which masking starts (an unmasked warm-up for
    the RNN/CNN families). clip_norm: global gradient-norm clip. log_every: steps per compiled
    chunk, progress update and NaN check. checkpoint_every: steps between checkpoints (0: none).
    weight_decay: AdamW's decoupled decay of every parameter, per unit of rate (0: Adam).
    """

    steps: int = 1000
    batch_size: int = 10
    learning_rate: float = 3e-3  # the best constant rate measured on the paper's LDS data
    warmup_steps: int = 200
    num_samples: int = 1
    mask_fraction: float = 0.0  # masking is for learning dynamics (e.g. from video), not the fit
    mask_after: int = 0
    clip_norm: float = 10.0
    log_every: int = 50
    checkpoint_every: int = 0
    lr_decay_start: int = 0
    lr_decay_steps: int = 1000
    lr_final_fraction: float = 0.03
    weight_decay: float = 0.0

    def __post_init__(self):
        for name in ("steps", "batch_size", "num_samples", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.mask_fraction < 1.0:
            raise ValueError(f"mask_fraction must be in [0, 1), got {self.mask_fraction}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.lr_decay_start < 0 or self.lr_decay_steps < 1:
            raise ValueError("lr_decay_start must be >= 0 and lr_decay_steps >= 1, got "
                             f"{self.lr_decay_start} and {self.lr_decay_steps}")
        if not 0.0 <= self.lr_final_fraction <= 1.0:
            raise ValueError(f"lr_final_fraction must be in [0, 1], got {self.lr_final_fraction}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


class RunState(NamedTuple):
    """Per-run training state; in a batch of runs every leaf has a leading run axis.

    learning_rate: Adam's peak rate (float32 scalar); with a :class:`TrainingTask`, the
    pytree of per-run rates its optimizer reads (in the default float dtype)."""

    params: Any
    opt_state: Any
    key: jax.Array
    learning_rate: jax.Array


class TrainingDivergedError(FloatingPointError):
    """A loss or gradient became NaN/Inf; the message names the step, run and quantity."""


class CheckpointError(ValueError):
    """No checkpoint to resume from, or one written with another training config."""


class TrainResult(NamedTuple):
    states: RunState  # stacked over runs
    history: dict  # "step": [...], "elbo", "reconstruction", "kl": [[per run] per log point]
    seconds_per_step: float  # wall time per step for all runs together, compile excluded
    chunk_seconds: tuple = ()  # wall time of each full timed chunk of log_every steps
    num_devices: int = 1  # devices the runs were sharded over (see device_mesh)


RUNS_AXIS, BATCH_AXIS = "runs", "batch"


def device_mesh(num_runs: int, batch_size: int, devices=None) -> Mesh | None:
    """The mesh that training num_runs runs on minibatches of batch_size sequences is sharded
    over, or None when it runs on one device.

    With D devices (default ``jax.devices()``, on every host) the mesh has axes ("runs",
    "batch") of sizes r = gcd(num_runs, D) and b = gcd(batch_size, D // r), over the first
    r·b devices: the runs axis takes as many devices as divide the runs evenly (all D when
    D divides num_runs), the batch axis as many of the rest as divide the batch. Shapes:
    every run-state leaf (num_runs, ...) is split r ways on its leading axis and replicated
    b ways; each run's minibatch (batch_size, T, N) is split b ways on its batch axis; the
    training data and the per-step metrics (num_runs, log_every) are replicated. Devices
    that do not divide the counts stay idle; with r·b = 1 (one device, or counts sharing no
    factor with D) the answer is None and training is the plain single-device program.

    Raises:
        ValueError: across several processes (``jax.distributed``) when r·b < D, since every
            process must own devices of the mesh.
    """
    devices = jax.devices() if devices is None else list(devices)
    runs = math.gcd(num_runs, len(devices))
    batch = math.gcd(batch_size, len(devices) // runs)
    if runs * batch < len(devices) and jax.process_count() > 1:
        raise ValueError(
            f"{num_runs} run(s) with batch size {batch_size} use {runs * batch} of the "
            f"{len(devices)} devices, but on several hosts every device must take part: make "
            "the device count divide (number of runs) x (batch size)")
    if runs * batch == 1:
        return None
    grid = np.asarray(devices[: runs * batch], dtype=object).reshape(runs, batch)
    return Mesh(grid, (RUNS_AXIS, BATCH_AXIS))


def training_device_count(num_runs: int, batch_size: int) -> int:
    """Number of devices :meth:`Trainer.fit` shards num_runs runs with this batch size over."""
    mesh = device_mesh(num_runs, batch_size)
    return 1 if mesh is None else mesh.size


def _host_local(tree):
    """tree itself when this process holds all of every array; else (arrays spread over
    several hosts) a full copy of each on this process's default device."""
    if all(getattr(x, "is_fully_addressable", True) for x in jax.tree.leaves(tree)):
        return tree
    return jax.tree.map(jnp.asarray, multihost_utils.process_allgather(tree, tiled=True))


_DECAY_FIELDS = ("lr_decay_start", "lr_decay_steps", "lr_final_fraction")


def learning_rate_schedule(learning_rate, config: TrainConfig):
    """step -> Adam's rate: linear warm-up, constant, then (if lr_decay_start) cosine decay."""
    warm = optax.warmup_constant_schedule(0.0, learning_rate, max(config.warmup_steps, 1))
    if not config.lr_decay_start:
        return warm
    decay = optax.cosine_decay_schedule(learning_rate, config.lr_decay_steps,
                                        alpha=config.lr_final_fraction)
    return optax.join_schedules([warm, decay], [config.lr_decay_start])


def default_optimizer(learning_rate, config: TrainConfig) -> optax.GradientTransformation:
    """The sequence models' optimiser: global-norm clipping at ``config.clip_norm``, then Adam
    at :func:`learning_rate_schedule` (peak ``learning_rate``, a scalar, traced per run), or
    AdamW when ``config.weight_decay`` > 0."""
    schedule = learning_rate_schedule(learning_rate, config)
    adam = (optax.adamw(schedule, weight_decay=config.weight_decay) if config.weight_decay
            else optax.adam(schedule))
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), adam)


@dataclasses.dataclass(frozen=True)
class TrainingTask:
    """How a model family that is not a sequence model trains (module docstring).

    init: (key, data) -> params, the run's trainable pytree.
    loss: (params, batch, key, step) -> (scalar loss, metrics with "elbo", "reconstruction",
        "kl" scalars); batch: ``batch_size`` entries along the leading axis of every data leaf.
    optimizer: (learning_rate, config, params) -> optax.GradientTransformation; learning_rate
        is the run's :attr:`RunState.learning_rate` pytree.
    data_size: N, the leading size the loss is normalised for (None: not checked).
    """

    init: Callable
    loss: Callable
    optimizer: Callable = default_optimizer
    data_size: int | None = None


_REQUIRED_METRICS = ("elbo", "reconstruction", "kl")


def random_block_masks(key, num_sequences, num_timesteps, max_fraction):
    """(S, T) bool, False on one contiguous block per sequence of length ~ U{0..⌊f·T⌋}."""
    max_len = int(math.floor(max_fraction * num_timesteps))
    k_len, k_start = jax.random.split(key)
    length = jax.random.randint(k_len, (num_sequences, 1), 0, max_len + 1)
    start = jax.random.randint(k_start, (num_sequences, 1), 0, num_timesteps - length + 1)
    t = jnp.arange(num_timesteps)
    return ~((t >= start) & (t < start + length))


def batch_elbo(model, params, y, mask, key, num_samples, observed=None):
    """ELBOTerms averaged over a batch y (B, T, N), in nats per time step per obs dim."""
    keys = jax.random.split(key, y.shape[0])
    apply = lambda yi, mi, ki, oi: model.apply(params, yi, mi, ki, num_samples=num_samples,
                                               observed=oi)
    terms = jax.vmap(apply)(y, mask, keys, observed)  # observed=None maps to None
    scale = 1.0 / (y.shape[1] * y.shape[2])
    return jax.tree.map(lambda v: jnp.mean(v) * scale, terms)


@dataclasses.dataclass(frozen=True)
class _Program:
    """What a training chunk's compiled program depends on: the model, the task and the
    config fields that enter the traced step. The data are arguments of the program, so
    Trainers with equal programs (flax modules compare by their fields) share one compiled
    chunk per data shape: a second Trainer of the same model and settings compiles nothing.
    """

    model: Any
    config: TrainConfig
    task: TrainingTask | None

    @classmethod
    def of(cls, model, config: TrainConfig, task: TrainingTask | None) -> _Program:
        if task is None:  # the per-run rate is state; the step count and logging are the loop's
            config = dataclasses.replace(config, steps=1, log_every=1, checkpoint_every=0,
                                         learning_rate=1.0)
        return cls(model, config, task)

    def optimizer(self, learning_rate, params):
        if self.task is None:
            return default_optimizer(learning_rate, self.config)
        return self.task.optimizer(learning_rate, self.config, params)

    def initial_state(self, key, learning_rate, data, params=None) -> RunState:
        """One run's state from its key: the model's (or task's) initialisation unless
        ``params`` are given, and the optimizer's state. Jitted once per program
        (:func:`_init_program`): flax's initialisation outside jit would compile each of its
        small operations separately, which costs more than the initialisation itself."""
        k_init, k_apply, k_run = jax.random.split(key, 3)
        if params is None and self.task is not None:
            params = self.task.init(k_init, data)
        elif params is None:
            params = self.model.init(k_init, data[0], jnp.ones(data.shape[1], bool), k_apply)
        return RunState(params, self.optimizer(learning_rate, params).init(params), k_run,
                        learning_rate)

    def task_loss(self, params, data, step_key, step, mesh=None):
        k_batch, k_loss = jax.random.split(step_key)
        num_data = jax.tree.leaves(data)[0].shape[0]
        idx = jax.random.choice(k_batch, num_data, (self.config.batch_size,), replace=False)
        batch = jax.tree.map(lambda x: x[idx], data)
        if mesh is not None:  # every leaf split on its batch axis
            batch = jax.lax.with_sharding_constraint(batch, NamedSharding(mesh, P(BATCH_AXIS)))
        loss, metrics = self.task.loss(params, batch, k_loss, step)
        metrics = dict(metrics._asdict() if hasattr(metrics, "_asdict") else metrics)
        missing = [name for name in _REQUIRED_METRICS if name not in metrics]
        if missing:
            raise ValueError(f"the task's loss must report the metrics {missing}")
        shaped = {name: jnp.shape(v) for name, v in metrics.items() if jnp.ndim(v)}
        if shaped or jnp.ndim(loss):
            raise ValueError("the task's loss and metrics must be scalars (they are kept for "
                             f"every step), got shapes {shaped or jnp.shape(loss)}")
        return loss, metrics

    def loss(self, params, data, observed, step_key, step, mesh=None):
        if self.task is not None:
            return self.task_loss(params, data, step_key, step, mesh)
        cfg = self.config
        S, T, _ = data.shape
        k_batch, k_mask, k_elbo = jax.random.split(step_key, 3)
        idx = jax.random.choice(k_batch, S, (cfg.batch_size,), replace=False)
        y = data[idx]
        if mesh is not None:  # (B, T, N) split on B; vmap adds the runs axis in front
            y = jax.lax.with_sharding_constraint(y, NamedSharding(mesh, P(BATCH_AXIS)))
        mask = random_block_masks(k_mask, cfg.batch_size, T, cfg.mask_fraction)
        mask = mask | (step < cfg.mask_after)
        observed = None if observed is None else observed[idx]
        terms = batch_elbo(self.model, params, y, mask, k_elbo, cfg.num_samples, observed)
        return -terms.elbo, terms

    def step(self, state: RunState, step, data, observed, mesh=None):
        loss = functools.partial(self.loss, data=data, observed=observed, mesh=mesh)
        grads, terms = jax.grad(loss, has_aux=True)(
            state.params, step_key=jax.random.fold_in(state.key, step), step=step)
        updates, opt_state = self.optimizer(state.learning_rate, state.params).update(
            grads, state.opt_state, state.params
        )
        params = optax.apply_updates(state.params, updates)
        metrics = dict(terms if isinstance(terms, dict) else terms._asdict(),
                       grad_norm=optax.tree.norm(grads))
        return state._replace(params=params, opt_state=opt_state), metrics

    def run_chunk(self, state, data, observed, first_step, length, mesh=None):
        def one(carry, step):
            return self.step(carry, step, data, observed, mesh)
        return jax.lax.scan(one, state, first_step + jnp.arange(length))

    def compile(self, mesh: Mesh | None = None):
        """(states, data, observed, first_step, length) -> (states, metrics), jitted: runs
        vmapped over the states' leading axis; with ``mesh``, states in and out split on
        "runs" and metrics replicated (so every host can read them)."""
        run = functools.partial(self.run_chunk, mesh=mesh)
        if mesh is None:
            return jax.jit(jax.vmap(run, in_axes=(0, None, None, None, None)),
                           static_argnums=4, donate_argnums=0)
        return jax.jit(
            jax.vmap(run, in_axes=(0, None, None, None, None), spmd_axis_name=RUNS_AXIS),
            static_argnums=4, donate_argnums=0,
            out_shardings=(NamedSharding(mesh, P(RUNS_AXIS)), NamedSharding(mesh, P())))


@functools.lru_cache(maxsize=64)
def _jitted(program: _Program, mesh: Mesh | None, init: bool):
    """The program's jitted chunk over ``mesh`` or, with ``init``, its initialisation
    (:meth:`_Program.initial_state`; the partial keeps jit from hashing the program)."""
    if init:
        return jax.jit(functools.partial(program.initial_state))
    return program.compile(mesh)


def _shared(program: _Program, mesh: Mesh | None = None, init: bool = False):
    """:func:`_jitted`, one per equal program."""
    try:
        return _jitted(program, mesh, init)
    except TypeError:  # a model or task that cannot be hashed: its own program
        return _jitted.__wrapped__(program, mesh, init)


def _chunk_program(program: _Program, mesh: Mesh | None = None):
    return _shared(program, mesh)


def _init_program(program: _Program):
    return _shared(program, init=True)


class Trainer:
    """Runs training for one model, one data set and a batch of runs.

    The compiled chunk of steps takes the data as an argument and is shared by every Trainer
    of an equal model, task and step settings (not ``steps``, ``log_every``,
    ``checkpoint_every`` or ``learning_rate``, which the loop and the run states carry).

    Args:
        model: a flax module following :mod:`svae_core.models.base`'s contract (with a
            ``task``: anything, kept as ``self.model``, e.g. None).
        y_train: (S, T, N) training sequences; with a ``task``, its data: an array or a
            pytree of arrays sharing a leading axis of size S >= batch_size.
        config: :class:`TrainConfig`.
        observed: optional (S, T) bool; False marks steps that were never observed (hidden
            from the encoder and left out of the reconstruction). Sequence models only.
        task: optional :class:`TrainingTask`; None trains ``model`` as a sequence model.
    """

    def __init__(self, model, y_train, config: TrainConfig, observed=None, *,
                 task: TrainingTask | None = None):
        self.task = task
        if task is not None:
            self._init_task(model, y_train, config, observed)
            return
        y_train = jnp.asarray(y_train)
        if y_train.ndim != 3:
            raise ValueError(f"y_train must have shape (sequences, T, N), got {y_train.shape}")
        if config.batch_size > y_train.shape[0]:
            raise ValueError(
                f"batch_size {config.batch_size} exceeds the {y_train.shape[0]} training sequences"
            )
        if observed is not None:
            observed = jnp.asarray(observed, bool)
            if observed.shape != y_train.shape[:2]:
                raise ValueError(f"observed must have shape {y_train.shape[:2]}, "
                                 f"got {observed.shape}")
        self.model, self.y, self.config, self.observed = model, y_train, config, observed
        self._program = _Program.of(model, config, None)

    def _init_task(self, model, data, config, observed):
        if observed is not None:
            raise ValueError("observed is for sequence models; a task's loss handles its own "
                             "missing data")
        if config.mask_fraction:
            raise ValueError("mask_fraction is for sequence models; with a task it must be 0, "
                             f"got {config.mask_fraction}")
        data = jax.tree.map(jnp.asarray, data)
        sizes = {x.shape[0] if x.ndim else None for x in jax.tree.leaves(data)}
        if len(sizes) != 1 or None in sizes:
            raise ValueError("the task's data must be arrays sharing a leading axis, got "
                             f"shapes {[x.shape for x in jax.tree.leaves(data)]}")
        (size,) = sizes
        if config.batch_size > size:
            raise ValueError(f"batch_size {config.batch_size} exceeds the {size} training points")
        if self.task.data_size is not None and self.task.data_size != size:
            raise ValueError(f"the task is normalised for data_size {self.task.data_size}, "
                             f"but the data hold {size}")
        self.model, self.y, self.config, self.observed = model, data, config, None
        self._program = _Program.of(model, config, self.task)

    @property
    def num_data(self) -> int:
        """Number of training sequences (or, with a task, data points)."""
        return jax.tree.leaves(self.y)[0].shape[0]

    # ------------------------------------------------------------------ per-run functions

    def init_state(self, seed: int, learning_rate: Any = None, params: Any = None
                   ) -> RunState:
        """The state of run (seed, learning_rate): a float (Adam's rate), or with a task the
        pytree of rates its optimizer reads; None: ``config.learning_rate``. ``params``: the
        run's starting flax variables (e.g. pretrained ones) in place of the model's or
        task's initialisation; the seed still sets the run's random stream."""
        if self.task is not None:
            rates = self.config.learning_rate if learning_rate is None else learning_rate
            dtype = jnp.result_type(float)
            lr = jax.tree.map(lambda v: jnp.asarray(v, dtype), rates)
        else:
            lr = jnp.asarray(self.config.learning_rate if learning_rate is None
                             else learning_rate, jnp.float32)
        return _init_program(self._program)(jax.random.PRNGKey(seed), lr, self.y, params)

    def init_runs(self, seeds, learning_rates=None, params=None) -> RunState:
        """Stack the initial states of runs (seed_i, learning_rate_i) on a leading axis;
        ``params``: optional list of each run's starting variables (:meth:`init_state`)."""
        seeds = list(seeds)
        lrs = [None] * len(seeds) if learning_rates is None else list(learning_rates)
        starts = [None] * len(seeds) if params is None else list(params)
        if len(lrs) != len(seeds) or len(starts) != len(seeds):
            raise ValueError(f"{len(seeds)} seeds but {len(lrs)} learning rates and "
                             f"{len(starts)} starting parameters")
        states = [self.init_state(s, lr, p) for s, lr, p in zip(seeds, lrs, starts, strict=True)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *states)

    def lower_chunk(self, states: RunState, first_step, length: int, mesh: Mesh | None = None):
        """The chunk program lowered for these states (``jax.stages.Lowered``: e.g. its HLO
        text), over ``mesh`` when given."""
        return _chunk_program(self._program, mesh).lower(states, self.y, self.observed,
                                                         first_step, length)

    # ------------------------------------------------------------------ driver

    def fit(self, states: RunState, start_step: int = 0, history=None, checkpoint_dir=None,
            progress: bool = True, run_labels=None, until: int | None = None) -> TrainResult:
        """Advance every run from start_step to ``until`` (default config.steps; log_every
        steps per compiled call), checking for NaN/Inf after each chunk. Stopping early and
        calling again with the returned states, ``start_step=until`` and the history continues
        the same runs (a snapshot during training; the schedules depend on the step only).

        With several devices the runs and minibatches are sharded over
        :func:`device_mesh` (``TrainResult.num_devices`` says over how many devices); the
        returned states then live on that mesh (on several hosts: a full copy on each)."""
        cfg = self.config
        history = history or {"step": [], "elbo": [], "reconstruction": [], "kl": []}
        num_runs = jax.tree.leaves(states)[0].shape[0]
        mesh = device_mesh(num_runs, cfg.batch_size)
        chunk = _chunk_program(self._program, mesh)
        if mesh is not None:  # every leaf (num_runs, ...) split on its run axis
            states = jax.device_put(jax.device_get(states), NamedSharding(mesh, P(RUNS_AXIS)))
        labels = run_labels or [str(i) for i in range(num_runs)]
        stop = cfg.steps if until is None else min(int(until), cfg.steps)
        bar = tqdm(total=stop, initial=start_step, disable=not progress, unit="step",
                   desc=f"training {num_runs} run(s)")
        step, chunk_seconds = start_step, []
        while step < stop:
            length = min(cfg.log_every, stop - step)
            t0 = time.perf_counter()
            states, metrics = chunk(states, self.y, self.observed, jnp.asarray(step), length)
            metrics = jax.device_get(metrics)  # (runs, length) each
            elapsed = time.perf_counter() - t0
            if step > start_step and length == cfg.log_every:  # first chunk: compilation
                chunk_seconds.append(elapsed)
            _check_finite(metrics, step, labels)
            step += length
            history["step"].append(step)
            for name in ("elbo", "reconstruction", "kl"):
                history[name].append(np.mean(metrics[name], axis=1).tolist())
            bar.update(length)
            bar.set_postfix(elbo=f"{np.mean(history['elbo'][-1]):.4f}")
            if checkpoint_dir and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save_checkpoint(checkpoint_dir, _host_local(states), step, history, cfg)
        bar.close()
        sps = sum(chunk_seconds) / (len(chunk_seconds) * cfg.log_every) if chunk_seconds \
            else float("nan")
        return TrainResult(_host_local(states), history, sps, tuple(chunk_seconds),
                           1 if mesh is None else mesh.size)


def _check_finite(metrics, first_step, labels):
    for name in ("elbo", "reconstruction", "kl", "grad_norm"):
        bad = ~np.isfinite(metrics[name])
        if bad.any():
            run, offset = np.argwhere(bad)[0]
            raise TrainingDivergedError(
                f"non-finite {name} ({metrics[name][run, offset]}) at step "
                f"{first_step + offset} in run {labels[run]}; lower the learning rate or check "
                "the data for NaN/Inf"
            )


# ---------------------------------------------------------------------- checkpoints


def save_checkpoint(directory, states: RunState, step: int, history: dict, config: TrainConfig):
    """Write states (msgpack) and step/history/config (JSON) atomically into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "state.msgpack.tmp"
    tmp.write_bytes(flax.serialization.to_bytes(jax.device_get(states)))
    tmp.replace(directory / "state.msgpack")
    meta = {"step": step, "history": history, "config": dataclasses.asdict(config)}
    (directory / "meta.json.tmp").write_text(json.dumps(meta))
    (directory / "meta.json.tmp").replace(directory / "meta.json")


def _decay_started_by(config: dict, step: int) -> bool:
    return bool(config["lr_decay_start"]) and config["lr_decay_start"] < step


def load_checkpoint(directory, template: RunState, config: TrainConfig):
    """(states, step, history) from ``directory``; the training config must match, except
    ``steps`` (a run may be extended) and a learning-rate decay that neither the checkpoint's
    config nor the new one had begun by the checkpoint's step (so the steps already taken
    followed the same schedule)."""
    directory = Path(directory)
    meta_path, state_path = directory / "meta.json", directory / "state.msgpack"
    if not (meta_path.exists() and state_path.exists()):
        raise CheckpointError(f"no checkpoint in {directory}")
    meta = json.loads(meta_path.read_text())
    # config fields missing from a checkpoint take their defaults
    saved = {**dataclasses.asdict(TrainConfig()), **meta["config"]}
    now = dataclasses.asdict(config)
    ignored = {"steps"}
    if not (_decay_started_by(saved, meta["step"]) or _decay_started_by(now, meta["step"])):
        ignored.update(_DECAY_FIELDS)
    saved = {k: v for k, v in saved.items() if k not in ignored}
    now = {k: v for k, v in now.items() if k not in ignored}
    if saved != now:
        diff = {k: (saved.get(k), now.get(k)) for k in now if saved.get(k) != now.get(k)}
        raise CheckpointError(f"checkpoint in {directory} was written with another config: {diff}")
    states = flax.serialization.from_bytes(template, state_path.read_bytes())
    return jax.tree.map(jnp.asarray, states), meta["step"], meta["history"]


__all__ = [
    "CheckpointError",
    "RunState",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "TrainingTask",
    "batch_elbo",
    "default_optimizer",
    "device_mesh",
    "learning_rate_schedule",
    "load_checkpoint",
    "random_block_masks",
    "save_checkpoint",
    "training_device_count",
]
