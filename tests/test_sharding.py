"""Training on several devices (jax.sharding) matches training on one to float32 rounding.

jax fixes the device count when it starts, so the sharded training runs in a child process
whose ``XLA_FLAGS`` add ``--xla_force_host_platform_device_count=4`` to this session's (the
fast-compile flag from conftest, or none); this process, on its single CPU device, trains the
same runs as the reference. Both use the sequential smoother and a tiny SVAE, because compile
time is nearly all of the cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from svae_core.models import ModelConfig, build_model
from svae_core.training import TrainConfig, Trainer, device_mesh, training_device_count

TESTS = Path(__file__).parent
FORCED_DEVICES = 4
# 2 runs x batch 4 on 4 devices: a 2 x 2 ("runs", "batch") mesh, so both axes are split.
SEEDS = (0, 1)
CONFIG = TrainConfig(steps=6, batch_size=4, learning_rate=5e-3, warmup_steps=2, log_every=3)
# data: a .npz of 4 sequences (T = 10, N = 3) without y_test, the cheapest CLI run; linear
# nets make its model make_trainer's, whose initialisation the child has compiled already
CLI_ARGS = ["train", "--model", "svae", "--latent-dim", "2", "--batch-size", "4", "--steps", "2",
            "--log-every", "2", "--warmup-steps", "1", "--smoother", "sequential",
            "--encoder-hidden", "none", "--decoder-hidden", "none",
            "--eval-samples", "1", "--eval-repeats", "2", "--no-progress"]


def make_trainer() -> Trainer:
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=(8, 10, 2)) * 0.3, axis=1)
    y = x @ rng.normal(size=(3, 2)).T + 0.1 * rng.normal(size=(8, 10, 3))
    return Trainer(build_model("svae", ModelConfig(2, 3, smoother="sequential")),
                   y.astype(np.float32), CONFIG)


# Runs in the child, with 4 host devices; writes params.npz, cli.json and report.json.
CHILD = """
import json, sys
from pathlib import Path
out, tests = Path(sys.argv[1]), sys.argv[2]
sys.path.insert(0, tests)
import jax, jax.numpy as jnp, numpy as np
from test_sharding import CLI_ARGS, SEEDS, make_trainer
from svae_core.cli import main
from svae_core.training import device_mesh

tr = make_trainer()
result = tr.fit(tr.init_runs(SEEDS), progress=False)
leaf = jax.tree.leaves(result.states.params)[0]
mesh = device_mesh(len(SEEDS), tr.config.batch_size)
hlo = tr.lower_chunk(result.states, jnp.asarray(0), tr.config.log_every, mesh).as_text()
np.savez(out / "params.npz", *[np.asarray(x) for x in jax.tree.leaves(result.states.params)])
np.savez(out / "data.npz", y=np.asarray(tr.y[:4]))
cli_rc = main(CLI_ARGS + ["--data", str(out / "data.npz"), "--out", str(out / "cli.json")])
shape = lambda m: None if m is None else dict(m.shape)
report = {
    "device_count": jax.device_count(), "num_devices": result.num_devices,
    "mesh": shape(mesh), "history": result.history, "cli_rc": cli_rc,
    "leaf_devices": len(leaf.sharding.device_set), "leaf_spec": str(leaf.sharding.spec),
    "shard_shapes": [list(s.data.shape) for s in leaf.addressable_shards],
    "leaf_shape": list(leaf.shape),
    # the minibatch (runs, B, T, N) is constrained to runs x batch (Shardy's notation)
    "batch_split": '[{"runs"}, {"batch"}, {}, {}]' in hlo,
    "other_meshes": {f"{r} runs, batch {b}": shape(device_mesh(r, b))
                     for r, b in [(4, 3), (3, 10), (3, 5), (1, 8)]},
}
(out / "report.json").write_text(json.dumps(report))
"""


def test_sharded_training_matches_single_device(tmp_path):
    if jax.device_count() != 1:
        pytest.skip("the in-process reference needs a single device")
    flags = f"{os.environ.get('XLA_FLAGS', '')} " \
            f"--xla_force_host_platform_device_count={FORCED_DEVICES}".strip()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(TESTS)], cwd=TESTS.parent,
        env={**os.environ, "XLA_FLAGS": flags}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:  # the reference trains here while the child compiles (compiling is single-threaded)
        trainer = make_trainer()
        single = trainer.fit(trainer.init_runs(SEEDS), progress=False)
    finally:
        log, _ = child.communicate(timeout=600)
    assert child.returncode == 0, log[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())

    assert single.num_devices == 1 and device_mesh(len(SEEDS), CONFIG.batch_size) is None
    assert training_device_count(len(SEEDS), CONFIG.batch_size) == 1
    # the child saw 4 devices and really split the work over them
    assert report["device_count"] == FORCED_DEVICES
    assert report["num_devices"] == FORCED_DEVICES
    assert report["mesh"] == {"runs": 2, "batch": 2}
    assert report["leaf_devices"] == FORCED_DEVICES and report["leaf_spec"] == "P('runs',)"
    runs, *rest = report["leaf_shape"]
    assert report["shard_shapes"] == [[runs // 2, *rest]] * FORCED_DEVICES
    assert report["batch_split"]
    assert report["other_meshes"] == {
        "4 runs, batch 3": {"runs": 4, "batch": 1},  # runs split 4 ways
        "3 runs, batch 10": {"runs": 1, "batch": 2},  # only 2 of the 4 devices divide
        "3 runs, batch 5": None,  # nothing divides: the single-device program
        "1 runs, batch 8": {"runs": 1, "batch": 4},
    }

    # Sharding changes only the order of float32 additions (a mean over a split batch adds
    # partial sums) and how XLA fuses the program: differences of a few ulps (1.2e-7
    # relative each) that 6 Adam steps carry into the parameters, observed up to 2.4e-6
    # relative on entries near 0 and 3e-8 absolute. The tolerance is the one for runs
    # batched differently in tests/test_training.py.
    sharded = np.load(tmp_path / "params.npz")
    expected = [np.asarray(x) for x in jax.tree.leaves(single.states.params)]
    assert len(sharded.files) == len(expected)
    for i, e in enumerate(expected):
        np.testing.assert_allclose(sharded[f"arr_{i}"], e, rtol=2e-5, atol=2e-6)
    assert report["history"]["step"] == single.history["step"]
    np.testing.assert_allclose(report["history"]["elbo"], single.history["elbo"], rtol=2e-5)

    # the CLI (1 run, batch 4) shards its batch over the 4 devices and says so
    assert report["cli_rc"] == 0
    cli = json.loads((tmp_path / "cli.json").read_text())
    assert cli["num_devices"] == FORCED_DEVICES and np.isfinite(cli["train_elbo"])
