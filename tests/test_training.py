"""Training loop: masks, vmapped runs, exact resume, NaN guard."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from svae_core.models import ModelConfig, build_model
from svae_core.training import (
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    default_optimizer,
    learning_rate_schedule,
    load_checkpoint,
    random_block_masks,
    save_checkpoint,
)

# The trainer's mechanics do not depend on the smoother; the sequential one compiles in
# about half the time on CPU (both agree to rounding: tests/test_inference_lds.py).
SMOOTHER = "sequential"


def small_data(num=12, T=30, N=4, seed=0):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=(num, T, 2)) * 0.3, axis=1)
    C = rng.normal(size=(N, 2))
    return jnp.asarray(x @ C.T + 0.1 * rng.normal(size=(num, T, N)), jnp.float32)


def test_random_block_masks_hide_one_contiguous_block():
    # jitted whole (as in the training step): one compile instead of one per eager op
    masks_of = jax.jit(random_block_masks, static_argnums=(1, 2, 3))
    masks = np.asarray(masks_of(jax.random.PRNGKey(0), 500, 50, 0.4))
    lengths = []
    for row in masks:
        hidden = np.flatnonzero(~row)
        if hidden.size:
            assert np.all(np.diff(hidden) == 1), "hidden steps must be contiguous"
        lengths.append(hidden.size)
    assert max(lengths) <= 20 and min(lengths) == 0
    assert len(set(lengths)) > 10  # lengths vary from step to step
    assert np.all(np.asarray(masks_of(jax.random.PRNGKey(1), 5, 50, 0.0)))


@pytest.fixture(scope="module")
def trainer():
    y = small_data()
    cfg = TrainConfig(steps=40, batch_size=4, learning_rate=5e-3, warmup_steps=5, log_every=10,
                      checkpoint_every=20, mask_fraction=0.4)  # masked: resume must replay masks
    return Trainer(build_model("svae", ModelConfig(2, 4, smoother=SMOOTHER)), y, cfg)


def _leaves(states):
    return [np.asarray(x) for x in jax.tree.leaves(states.params)]


def test_runs_batched_together_equal_runs_alone(trainer):
    both = trainer.fit(trainer.init_runs([3, 4]), progress=False).states
    alone = trainer.fit(trainer.init_runs([4]), progress=False).states
    for b, a in zip(_leaves(both), _leaves(alone), strict=True):
        np.testing.assert_allclose(b[1], a[0], rtol=2e-5, atol=2e-6)


def test_resume_continues_exactly(trainer, tmp_path):
    full = trainer.fit(trainer.init_runs([7]), progress=False)
    half_cfg = TrainConfig(**{**trainer.config.__dict__, "steps": 20})
    half = Trainer(trainer.model, trainer.y, half_cfg).fit(trainer.init_runs([7]),
                                                           progress=False)
    save_checkpoint(tmp_path, half.states, 20, half.history, half_cfg)
    states, step, history = load_checkpoint(tmp_path, trainer.init_runs([7]), trainer.config)
    assert step == 20 and len(history["elbo"]) == 2
    resumed = trainer.fit(states, start_step=step, history=history, progress=False)
    for r, f in zip(_leaves(resumed.states), _leaves(full.states), strict=True):
        np.testing.assert_allclose(r, f, rtol=1e-6, atol=1e-7)
    assert resumed.history["step"] == full.history["step"]


def test_fit_until_then_continue_equals_one_fit(trainer):
    full = trainer.fit(trainer.init_runs([5]), progress=False)
    first = trainer.fit(trainer.init_runs([5]), progress=False, until=20)
    assert first.history["step"] == [10, 20]
    rest = trainer.fit(first.states, start_step=20, history=first.history, progress=False)
    for r, f in zip(_leaves(rest.states), _leaves(full.states), strict=True):
        np.testing.assert_allclose(r, f, rtol=1e-6, atol=1e-7)
    assert rest.history["step"] == full.history["step"]


def test_runs_may_start_from_given_parameters(trainer):
    """Runs may start from given (e.g. pretrained) parameters: those are their start exactly,
    their optimiser state is fresh; a list of the wrong length is refused."""
    first = trainer.fit(trainer.init_runs([5]), progress=False).states
    start = jax.tree.map(lambda x: x[0], jax.device_get(first.params))
    again = trainer.init_runs([6, 7], params=[start, start])
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(start), strict=True):
        np.testing.assert_array_equal(a[0], b)
        np.testing.assert_array_equal(a[1], b)
    fresh = trainer.init_runs([6])
    for a, b in zip(jax.tree.leaves(again.opt_state), jax.tree.leaves(fresh.opt_state),
                    strict=True):
        if a.dtype.kind == "f" and a.ndim > 1:  # Adam's moments start at zero either way
            np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="starting parameters"):
        trainer.init_runs([6, 7], params=[start])


def test_checkpoint_refuses_other_config(trainer, tmp_path):
    states = trainer.init_runs([0])
    save_checkpoint(tmp_path, states, 0, {"step": []}, trainer.config)
    other = TrainConfig(**{**trainer.config.__dict__, "learning_rate": 1.0})
    with pytest.raises(ValueError, match="learning_rate"):
        load_checkpoint(tmp_path, states, other)


def test_learning_rate_schedule_warmup_constant_then_cosine():
    cfg = TrainConfig(warmup_steps=10, lr_decay_start=50, lr_decay_steps=40,
                      lr_final_fraction=0.1)
    rate = learning_rate_schedule(2.0, cfg)
    steps = np.arange(120)
    cosine = 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * np.clip(steps - 50, 0, 40) / 40))
    expected = np.where(steps < 10, 2.0 * steps / 10, np.where(steps < 50, 2.0, 2.0 * cosine))
    np.testing.assert_allclose(jax.jit(jax.vmap(rate))(steps), expected, rtol=1e-5, atol=1e-6)
    plain = learning_rate_schedule(2.0, TrainConfig(warmup_steps=10))
    assert float(plain(10_000)) == 2.0


def test_weight_decay_shrinks_parameters_the_loss_does_not_touch():
    """With a zero gradient Adam leaves a parameter alone; AdamW multiplies it by
    1 − rate·weight_decay each step (after clipping, which a zero gradient passes)."""
    params = {"w": jnp.array([2.0, -4.0])}
    zero = jax.tree.map(jnp.zeros_like, params)
    for decay, factor in ((0.0, 1.0), (0.1, 1.0 - 0.5 * 0.1)):
        opt = default_optimizer(0.5, TrainConfig(warmup_steps=1, weight_decay=decay))

        @jax.jit  # one compile instead of one per eager op
        def three_steps(p, opt=opt):
            state = opt.init(p)
            for _ in range(3):
                updates, state = opt.update(zero, state, p)
                p = optax.apply_updates(p, updates)
            return p

        # step 0 is the warm-up's zero rate: two decayed steps at the full rate
        np.testing.assert_allclose(three_steps(params)["w"], params["w"] * factor**2, rtol=1e-6)
    with pytest.raises(ValueError, match="weight_decay"):
        TrainConfig(weight_decay=-1.0)


def _decayed(config, start):
    return TrainConfig(**{**config.__dict__, "lr_decay_start": start, "lr_decay_steps": 10})


def test_resume_may_add_a_decay_that_has_not_begun(trainer, tmp_path):
    """A constant-rate run checkpointed at step 20 and resumed with a decay from step 20 ends
    where a run with that decay from the start ends; a decay that would have begun before the
    checkpoint is refused, and so is a changed decay once it has begun."""
    decayed = _decayed(trainer.config, 20)
    full = Trainer(trainer.model, trainer.y, decayed).fit(trainer.init_runs([7]), progress=False)
    half_cfg = TrainConfig(**{**trainer.config.__dict__, "steps": 20})
    half = Trainer(trainer.model, trainer.y, half_cfg).fit(trainer.init_runs([7]),
                                                           progress=False)
    save_checkpoint(tmp_path, half.states, 20, half.history, half_cfg)
    states, step, history = load_checkpoint(tmp_path, trainer.init_runs([7]), decayed)
    resumed = Trainer(trainer.model, trainer.y, decayed).fit(
        states, start_step=step, history=history, progress=False)
    for r, f in zip(_leaves(resumed.states), _leaves(full.states), strict=True):
        np.testing.assert_allclose(r, f, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="lr_decay_start"):
        load_checkpoint(tmp_path, states, _decayed(trainer.config, 10))
    save_checkpoint(tmp_path, half.states, 20, half.history, _decayed(half_cfg, 10))
    with pytest.raises(ValueError, match="lr_decay_start"):
        load_checkpoint(tmp_path, states, _decayed(trainer.config, 20))


def test_checkpoint_without_the_decay_fields_loads(trainer, tmp_path):
    states = trainer.init_runs([0])
    save_checkpoint(tmp_path, states, 20, {"step": []}, trainer.config)
    meta = json.loads((tmp_path / "meta.json").read_text())
    for name in ("lr_decay_start", "lr_decay_steps", "lr_final_fraction"):
        del meta["config"][name]
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert load_checkpoint(tmp_path, states, _decayed(trainer.config, 30))[1] == 20


def test_training_improves_elbo(trainer):
    result = trainer.fit(trainer.init_runs([0]), progress=False)
    elbo = [e[0] for e in result.history["elbo"]]
    assert elbo[-1] > elbo[0] + 0.1, elbo


def test_nan_guard_names_step_and_quantity(trainer):
    """A NaN in the data makes the first chunk's ELBO non-finite. The fixture's model and
    settings on data of its shape: the compiled chunk is the fixture's."""
    tr = Trainer(trainer.model, trainer.y.at[:, 5, 0].set(jnp.nan), trainer.config)
    with pytest.raises(TrainingDivergedError, match=r"non-finite elbo .* at step 0 in run 0"):
        tr.fit(tr.init_runs([0]), progress=False)


def test_bad_trainer_inputs():
    y = small_data()
    model = build_model("svae", ModelConfig(2, 4, smoother=SMOOTHER))
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(model, y, TrainConfig(batch_size=100))
    with pytest.raises(ValueError, match="shape"):
        Trainer(model, y[0], TrainConfig())
    with pytest.raises(ValueError, match="mask_fraction"):
        TrainConfig(mask_fraction=1.5)
    with pytest.raises(ValueError, match="lr_final_fraction"):
        TrainConfig(lr_final_fraction=2.0)
    with pytest.raises(ValueError, match="lr_decay_steps"):
        TrainConfig(lr_decay_start=10, lr_decay_steps=0)


def test_trainers_of_equal_settings_share_one_compiled_chunk_and_train_on_their_own_data():
    """The chunk program takes the data as an argument: a second Trainer of an equal model and
    step settings (other data, step count, logging and rate) reuses the first's compiled
    program, yet trains on its own data; a setting inside the step (masking) gets its own. The
    runs' initialisation is shared the same way and is flax's."""
    from svae_core import training

    rng = np.random.default_rng(3)
    model = build_model("svae", ModelConfig(2, 3, smoother="sequential"))
    y_a, y_b = (rng.normal(size=(6, 8, 3)).astype(np.float32) for _ in range(2))
    base = TrainConfig(steps=4, batch_size=3, log_every=2, warmup_steps=1)
    first = Trainer(model, y_a, base)
    again = Trainer(model, y_a, dataclasses.replace(base, steps=6, learning_rate=1e-2))
    other = Trainer(model, y_b, dataclasses.replace(base, log_every=3, checkpoint_every=3))
    masked = Trainer(model, y_a, dataclasses.replace(base, mask_fraction=0.3))
    program = training._chunk_program(first._program)
    assert training._chunk_program(again._program) is program
    assert training._chunk_program(other._program) is program
    assert training._chunk_program(masked._program) is not program
    init = training._init_program(first._program)
    assert training._init_program(other._program) is init

    h_first = first.fit(first.init_runs([0]), progress=False).history["elbo"]
    h_again = again.fit(again.init_runs([0], [base.learning_rate]), progress=False,
                        until=4).history["elbo"]
    h_other = other.fit(other.init_runs([0]), progress=False, until=2).history["elbo"]
    assert program._cache_size() == 1  # one compiled chunk served all three runs
    assert init._cache_size() == 1  # and one compiled initialisation
    # the compiled initialisation is flax's, from the keys init_state documents
    k_init, k_apply, _ = jax.random.split(jax.random.PRNGKey(0), 3)
    flax_init = jax.jit(lambda: model.init(k_init, y_a[0], np.ones(8, bool), k_apply))()
    for got, ref in zip(jax.tree.leaves(first.init_state(0).params), jax.tree.leaves(flax_init),
                        strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(h_again, h_first)  # same data, seed and rate: same run
    assert not np.allclose(h_other[0], h_first[0])  # its own data, not the first Trainer's
