"""Why the spiral chapter trains q(θ) in float64: the natural gradient computed as a Fisher
solve (svae_core.natgrad.fisher_solve, which is what the optax transform does) against its
closed form on the first term of Eq. 4, η + ρ(η₀ + (N/|B|)E[t] − η), on the spiral GMM-SVAE
at initialisation, four minibatches of 50 (each step taken in closed form), in float32 and
in float64. Prints the largest relative error per family and whether each NIW component of
the Fisher-solve update is still in the domain.

    .venv/bin/python benchmarks/investigations/spiral_fisher_precision.py
"""

import dataclasses
import subprocess
import sys


def run(precision: str) -> None:
    import jax

    jax.config.update("jax_enable_x64", precision == "float64")
    import jax.numpy as jnp
    import numpy as np

    from svae_core.experiments import spiral as sp
    from svae_core.expfam import dirichlet, niw
    from svae_core.models import gmm_svae as gs
    from svae_core.natgrad import fisher_solve, in_domain

    settings = dataclasses.replace(sp.PROFILES["quick"], seeds=(0,))
    y = jnp.asarray(sp.dataset(settings).train.points, jnp.float32)
    N, B, rho = y.shape[0], settings.batch_size, 0.1
    task = sp.gmm_svae_task(settings, N, "natgrad_first")
    params = task.init(jax.random.PRNGKey(0), y)
    model = sp.model_for(settings)
    model = model.clone(config=dataclasses.replace(model.config, global_gradient="first"))
    prior = gs.prior_globals(settings.num_components, settings.latent_dim)
    print(f"{precision}: q(θ) in {params['globals'].niw.Phi.dtype}")
    for it in range(4):
        batch, key = y[it * B:(it + 1) * B], jax.random.PRNGKey(it)
        grad = jax.grad(lambda p, b=batch, k=key: task.loss(p, b, k, 0)[0])(params)["globals"]
        stats = model.apply(params["networks"], batch, params["globals"], prior, key, N).stats
        glob = params["globals"]
        closed = jax.tree.map(lambda e0, s, e: e + rho * (e0 + N / B * s - e), prior, stats, glob)
        solved = gs.GMMGlobals(
            fisher_solve(dirichlet.log_partition, glob.dirichlet, grad.dirichlet),
            jax.vmap(lambda e, g: fisher_solve(niw.log_partition, e, g))(glob.niw, grad.niw))
        new = jax.tree.map(lambda e, n: e - rho * N * n, glob, solved)
        err = {name: max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
                         for a, b in zip(jax.tree.leaves(getattr(new, name)),
                                         jax.tree.leaves(getattr(closed, name)), strict=True))
               for name in ("dirichlet", "niw")}
        inside = np.asarray(in_domain("niw", new.niw, batch_dims=1))
        print(f"  step {it}: relative error dirichlet {err['dirichlet']:.1e}, "
              f"niw {err['niw']:.1e}; NIW components in the domain after the "
              f"Fisher-solve step {inside.sum()} of {inside.size}")
        params = {"networks": params["networks"], "globals": closed}


if __name__ == "__main__":
    if len(sys.argv) > 1:
        run(sys.argv[1])
    else:  # each precision in its own process: x64 is set before any JAX work
        for precision in ("float32", "float64"):
            subprocess.run([sys.executable, __file__, precision], check=True)
