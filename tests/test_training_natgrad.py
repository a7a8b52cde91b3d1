"""A TrainingTask through the Trainer: conjugate globals by natural gradient, a network by Adam,
in one optax.multi_transform, 2 seeds × 2 natural step sizes vmapped in one program.

The toy: points y_n ∈ R² with an NIW global q(μ, Σ) (prior NIW(0, 0.5, 2.5·I, 2.5)) and a
"denoiser" Dense(2) whose log-likelihood log N(y_n; W y_n + b, I) is a separate term, so the
globals' and the network's gradients do not mix. The loss is the negative ELBO per point, so
the natural step of a run, ρ, is passed to natural_gradient as ρ·N (natgrad's "Scale"):
with a full batch, η ← η + ρ(η₀ + s − η); ρ = 1 lands on the conjugate posterior in one step
(checked against Murphy 2007's formulas, computed here in NumPy), ρ = ½ halves the distance.

float64 (``jax.enable_x64``) for the globals, as natgrad recommends, so that the exact
identities can be checked to 1e-9; the network stays float32 (flax's default).

Compiling the training step is most of these tests' cost: every Trainer here has the one task
(:func:`make_task` is cached) and CONFIG, so they share one compiled chunk, and the one-step
run is the first step of the four-step Trainer's ``fit`` (``until=1``).
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from reference import murphy_niw_posterior

from svae_core.expfam import niw
from svae_core.natgrad import natural_gradient
from svae_core.training import (
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    TrainingTask,
    default_optimizer,
    learning_rate_schedule,
    load_checkpoint,
)

N, D = 24, 2
SEEDS, RHOS = (0, 1), (1.0, 0.5)
RUNS = [(s, r) for s in SEEDS for r in RHOS]  # 4 runs: seeds × natural step sizes
ADAM_RATE = 1e-2
PRIOR = dict(m=np.zeros(D), kappa=0.5, S=(D + 0.5) * np.eye(D), nu=D + 0.5)
# full batch; warm-up of 1 step (Adam's rate is 0 at step 0); a clip that never binds
CONFIG = TrainConfig(steps=4, batch_size=N, learning_rate=ADAM_RATE, warmup_steps=1,
                     log_every=1, checkpoint_every=1, clip_norm=1e6)


@pytest.fixture(scope="module", autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    return rng.multivariate_normal(np.array([1.5, -1.0]), cov, size=N)


DENOISER = nn.Dense(D)


def network_loglik(net, y):
    """mean_n log N(y_n; W y_n + b, I)."""
    mean = DENOISER.apply(net, y)
    return jnp.mean(-0.5 * jnp.sum((y - mean) ** 2, -1) - 0.5 * D * math.log(2 * math.pi))


def expected_loglik(eta, y):
    """mean_n E_q[log N(y_n | μ, Σ)], from E[Σ⁻¹], E[Σ⁻¹μ], E[μᵀΣ⁻¹μ], E[log|Σ⁻¹|]."""
    e = niw.expected_precision_stats(eta)
    quad = jnp.einsum("ni,ij,nj->n", y, e.prec, y)
    return jnp.mean(-0.5 * quad + y @ e.prec_mean - 0.5 * e.mean_prec_mean
                    + 0.5 * e.logdet_prec - 0.5 * D * math.log(2 * math.pi))


@functools.cache
def make_task(num_data=N):
    """The task: one object per num_data, so that Trainers of it share a compiled program;
    its init is jitted (one program rather than flax's initialisation op by op)."""
    prior = niw.from_standard(**PRIOR)

    @jax.jit
    def init(key, data):
        k_net, k_glob = jax.random.split(key)
        net = DENOISER.init(k_net, data[:1])
        m = jax.random.normal(k_glob, (D,), jnp.float64)  # each seed starts elsewhere
        return {"networks": net, "globals": niw.from_standard(m, 2.0, 3.0 * jnp.eye(D), 6.0)}

    def loss(params, batch, key, step):
        del key, step
        conj = expected_loglik(params["globals"], batch)
        kl = niw.kl(params["globals"], prior) / num_data
        recon = conj + network_loglik(params["networks"], batch)
        elbo = recon - kl
        return -elbo, {"elbo": elbo, "reconstruction": recon, "kl": kl}

    def optimizer(rates, config, params):
        del params  # labels by prefix
        return optax.multi_transform(
            {"adam": default_optimizer(rates["adam"], config),
             # the loss is per point: the SVI step ρ is ρ·N on its gradient
             "natural": natural_gradient(niw.log_partition, rates["natural"] * num_data)},
            {"networks": "adam", "globals": "natural"})

    return TrainingTask(init, loss, optimizer, data_size=num_data)


def rates():
    return [{"adam": ADAM_RATE, "natural": rho} for _, rho in RUNS]


def seeds():
    return [seed for seed, _ in RUNS]


def natural(std):
    """NumPy NIW natural parameters (S + κmmᵀ, κm, κ, ν), flattened."""
    m, kappa, S, nu = std["m"], std["kappa"], std["S"], std["nu"]
    return np.concatenate([(S + kappa * np.outer(m, m)).ravel(), kappa * m, [kappa, nu]])


def flat_globals(states, run):
    g = states.params["globals"]
    return np.concatenate([np.asarray(g.Phi[run]).ravel(), np.asarray(g.km[run]),
                           [float(g.kappa[run]), float(g.nu[run])]])


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The 4 runs: one step (writing its checkpoint), and the full 4 steps from the start."""
    y = make_data()
    ckpt = tmp_path_factory.mktemp("ckpt")
    full = Trainer(None, y, CONFIG, task=make_task())
    init = full.init_runs(seeds(), rates())
    one = full.fit(full.init_runs(seeds(), rates()), checkpoint_dir=ckpt, progress=False,
                   until=1)
    result = full.fit(full.init_runs(seeds(), rates()), progress=False)
    return dict(y=y, trainer=full, init=init, one=one, full=result, ckpt=ckpt)


def test_one_natural_step_of_size_one_is_the_conjugate_posterior(trained):
    post = murphy_niw_posterior(PRIOR["m"], PRIOR["kappa"], PRIOR["S"], PRIOR["nu"],
                               trained["y"])
    target = natural(post)
    init, one, full = trained["init"], trained["one"].states, trained["full"].states
    assert init.params["globals"].Phi.dtype == jnp.float64
    assert not np.allclose(flat_globals(init, 0), flat_globals(init, 2))  # seeds differ
    for run, (_, rho) in enumerate(RUNS):
        start = flat_globals(init, run)
        # after one step: η + ρ(η₀ + s − η); after four: the distance shrinks by (1 − ρ)⁴
        for states, k in ((one, 1), (full, 4)):
            expected = target + (1 - rho) ** k * (start - target)
            np.testing.assert_allclose(flat_globals(states, run), expected, rtol=1e-9,
                                       atol=1e-9, err_msg=f"run {run}, {k} step(s)")
        if rho == 1.0:  # the standard parameters too
            g = jax.tree.map(lambda a, run=run: a[run], one.params["globals"])
            got = niw.to_standard(g)._asdict()
            for name, value in post.items():
                np.testing.assert_allclose(got[name], value, rtol=1e-9, err_msg=name)
    # the natural-gradient branch counted its steps per run
    counts = [leaf for leaf in jax.tree.leaves(full.opt_state) if leaf.dtype == jnp.int32]
    assert counts and all(np.all(np.asarray(c) == 4) for c in counts)


def test_network_moves_as_adam_alone(trained):
    """The network branch is the default clip + Adam at the warm-up schedule: the same
    parameters as optax.adam on the network's loss alone (the clip never binds here)."""
    y = jnp.asarray(trained["y"])
    adam = optax.adam(learning_rate_schedule(jnp.asarray(ADAM_RATE), CONFIG))
    grad = jax.grad(lambda net: -network_loglik(net, y))

    @jax.jit
    def adam_alone(net):
        opt = adam.init(net)
        for _ in range(CONFIG.steps):
            updates, opt = adam.update(grad(net), opt, net)
            net = optax.apply_updates(net, updates)
        return net

    for run in range(len(RUNS)):
        start = jax.tree.map(lambda a, run=run: a[run], trained["init"].params["networks"])
        net = adam_alone(start)
        got = jax.tree.map(lambda a, run=run: a[run], trained["full"].states.params["networks"])
        # the full batch is a permutation of the data: sums in another order (float32 params)
        for g, e, s in zip(leaves(got), leaves(net), leaves(start), strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-8)
            assert not np.allclose(g, s)  # it did move (3 steps of size ~1e-2)


def test_history_and_resume_from_checkpoint_continue_exactly(trained):
    full = trained["full"]
    assert full.history["step"] == [1, 2, 3, 4]
    elbo = np.asarray(full.history["elbo"])  # (log points, runs)
    assert elbo.shape == (4, 4) and np.all(np.isfinite(elbo))
    assert np.all(elbo[-1] > elbo[0])  # every run improved
    trainer = trained["trainer"]
    template = trainer.init_runs(seeds(), rates())
    states, step, history = load_checkpoint(trained["ckpt"], template, CONFIG)
    assert step == 1 and history["step"] == [1]
    resumed = trainer.fit(states, start_step=step, history=history, progress=False)
    for r, f in zip(leaves(resumed.states), leaves(full.states), strict=True):
        np.testing.assert_array_equal(r, f)
    assert resumed.history == full.history


def test_nan_in_the_data_trips_the_guard():
    y = make_data()
    y[5, 0] = np.nan
    trainer = Trainer(None, y, CONFIG, task=make_task())
    with pytest.raises(TrainingDivergedError, match=r"non-finite elbo .* at step 0 in run 0"):
        trainer.fit(trainer.init_runs(seeds(), rates()), progress=False)


def test_task_inputs_are_checked():
    y = make_data()
    task = make_task()
    with pytest.raises(ValueError, match="data_size"):
        Trainer(None, y[:10], TrainConfig(batch_size=4), task=task)
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(None, y, TrainConfig(batch_size=N + 1), task=task)
    with pytest.raises(ValueError, match="mask_fraction"):
        Trainer(None, y, TrainConfig(batch_size=4, mask_fraction=0.2), task=task)
    with pytest.raises(ValueError, match="observed"):
        Trainer(None, y, TrainConfig(batch_size=4), observed=np.ones(N, bool), task=task)
    with pytest.raises(ValueError, match="leading axis"):
        Trainer(None, {"a": y, "b": y[:5]}, TrainConfig(batch_size=4), task=task)
    # metrics are per step: they must be scalars (a per-point array would be kept every step)
    def per_point_kl(*args):
        loss, metrics = task.loss(*args)
        return loss, {**metrics, "kl": jnp.ones(3)}

    shaped = TrainingTask(task.init, per_point_kl, task.optimizer, N)
    trainer = Trainer(None, y, TrainConfig(batch_size=4, steps=1, log_every=1), task=shaped)
    with pytest.raises(ValueError, match="scalars"):
        trainer.fit(trainer.init_runs([0], rates()[:1]), progress=False)


# Runs in a child process with 4 host devices (jax fixes the count at start-up): runs 0 and 3
# of RUNS on a 2 × 2 ("runs", "batch") mesh, so both the run states and each minibatch are split.
SHARDED_RUNS = (0, 3)
CHILD = """
import sys
from pathlib import Path
out, tests = Path(sys.argv[1]), sys.argv[2]
sys.path.insert(0, tests)
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
from test_training_natgrad import (CONFIG, RUNS, SHARDED_RUNS, make_data, make_task, rates,
                                   seeds)
from svae_core.training import Trainer, device_mesh
trainer = Trainer(None, make_data(), CONFIG, task=make_task())
pick = lambda xs: [xs[i] for i in SHARDED_RUNS]
result = trainer.fit(trainer.init_runs(pick(seeds()), pick(rates())), progress=False)
mesh = device_mesh(len(SHARDED_RUNS), CONFIG.batch_size)
np.savez(out / "sharded.npz", *[np.asarray(x) for x in jax.tree.leaves(result.states.params)],
         num_devices=result.num_devices, mesh=np.array([mesh.shape["runs"], mesh.shape["batch"]]),
         elbo=np.asarray(result.history["elbo"]))
"""


def test_sharded_over_four_devices_matches_one(trained, tmp_path):
    if jax.device_count() != 1:
        pytest.skip("the in-process reference needs a single device")
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    tests = Path(__file__).parent
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(tests)],
                           cwd=tests.parent, env={**os.environ, "XLA_FLAGS": flags.strip()},
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-4000:]
    got = np.load(tmp_path / "sharded.npz")
    assert int(got["num_devices"]) == 4 and got["mesh"].tolist() == [2, 2]
    single = trained["full"]
    expected = [np.asarray(x)[list(SHARDED_RUNS)] for x in jax.tree.leaves(single.states.params)]
    for i, e in enumerate(expected):
        # float64 globals; float32 network (sums over a split batch add in another order)
        tol = dict(rtol=1e-9, atol=1e-9) if e.dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(got[f"arr_{i}"], e, **tol)
    np.testing.assert_allclose(got["elbo"], np.asarray(single.history["elbo"])[:, SHARDED_RUNS],
                               rtol=1e-6)
