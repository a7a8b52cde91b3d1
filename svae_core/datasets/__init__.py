"""Data sets for the book's chapters, the tests and the benchmarks: synthetic ones, and real
multivariate time series bundled in a PyPI package.

:mod:`.bouncing_dot`: the 2016 bouncing-dot videos (Johnson et al. 2016, §6.1): a Gaussian
bump on a 20-pixel 1-D image whose centre follows a triangle wave between walls at ±1 (speed
0.75, dt 0.1), pixel noise sd 0.1, seeded train/test windows of 50 frames with the true
positions and velocities.

:mod:`.lds`: a rotating linear-dynamical-system prior, simulation from it, direct noisy
observations of its state, and the Gaussian potentials those (optionally masked) observations
define; and the LDS benchmark of Zhao & Linderman (2023, §4.1, appendix A): random rotating
linear-Gaussian state-space models, the grid and appendix presets, and the exact and
static-baseline ("null model") log-likelihoods.

:mod:`.mouse`: a stand-in for the 2016 mouse depth video (§6.2–6.3), whose recordings were
never released: 30×30 egocentric top-down depth frames of a rodent-like body whose pose
follows behaviour-specific linear dynamics (pause, walk, turn left/right, rear, groom) under a
semi-Markov chain of 0.2–0.5 s runs, with the true behaviour and pose of every frame; and a
loader applying the 2016 preprocessing (per-recording percentile scaling, 1e-3 noise) to real
.npy/.npz/.h5 depth video.

:mod:`.pendulum`: noisy 24×24 videos of a swinging pendulum (Zhao & Linderman 2023, §4.3):
RK4 simulation of θ'' = −(g/l) sin θ − γθ' (friction γ ≥ 0, default 0: frictionless), a
Gaussian-blob renderer, and the seeded train/test data set with the true angles and angular
velocities.

:mod:`.real`: real multivariate time series read offline from files in the sktime wheel
(BasicMotions: smart-watch accelerometer and gyroscope, 6 channels at 10 Hz; JapaneseVowels:
12 LPC cepstrum coefficients of variable-length utterances, with masks), with the archives'
train/test splits, standardised per channel by the training statistics.

:mod:`.spiral`: the 2016 pinwheel data (5 arms, radial sd 0.3, tangential sd 0.05, rate 0.25,
×10), seeded train/test splits with arm labels (Johnson et al. 2016, Fig. 1).
"""

from svae_core.datasets.bouncing_dot import (
    BouncingDotBenchmark,
    BouncingDotData,
    make_bouncing_dot_dataset,
    triangle_wave,
)
from svae_core.datasets.lds import (
    LDS_APPENDIX,
    LDS_GRID,
    LDS_SETTINGS,
    LDSBenchmark,
    LDSSetting,
    LinearGaussianSSM,
    lds_setting,
    make_lds_benchmark,
    missing_span_mask,
    observation_log_constant,
    potentials_from_observations,
    prior_marginals,
    random_lds,
    rotating_lds_prior,
    sample_lds,
    sample_observations,
    sample_ssm,
    ssm_log_likelihood,
    static_null_log_likelihood,
)
from svae_core.datasets.mouse import (
    MouseBenchmark,
    MouseData,
    flatten_frames,
    load_depth_video,
    make_mouse_dataset,
    render_mouse,
    sample_behaviour_labels,
    simulate_poses,
)
from svae_core.datasets.pendulum import (
    PendulumBenchmark,
    PendulumData,
    make_pendulum_dataset,
    pendulum_energy,
    render_frames,
    simulate_pendulum,
)
from svae_core.datasets.real import (
    REAL_DATASETS,
    RealDataSource,
    RealSequences,
    load_real_dataset,
)
from svae_core.datasets.spiral import (
    SpiralBenchmark,
    SpiralData,
    make_spiral_dataset,
    spiral_points,
)

__all__ = [
    "BouncingDotBenchmark",
    "BouncingDotData",
    "LDS_APPENDIX",
    "LDS_GRID",
    "LDS_SETTINGS",
    "LDSBenchmark",
    "LDSSetting",
    "LinearGaussianSSM",
    "MouseBenchmark",
    "MouseData",
    "PendulumBenchmark",
    "PendulumData",
    "REAL_DATASETS",
    "RealDataSource",
    "RealSequences",
    "SpiralBenchmark",
    "SpiralData",
    "flatten_frames",
    "lds_setting",
    "load_depth_video",
    "load_real_dataset",
    "make_bouncing_dot_dataset",
    "make_lds_benchmark",
    "make_mouse_dataset",
    "make_pendulum_dataset",
    "make_spiral_dataset",
    "missing_span_mask",
    "observation_log_constant",
    "pendulum_energy",
    "potentials_from_observations",
    "prior_marginals",
    "random_lds",
    "render_frames",
    "render_mouse",
    "rotating_lds_prior",
    "sample_behaviour_labels",
    "sample_lds",
    "sample_observations",
    "sample_ssm",
    "simulate_pendulum",
    "simulate_poses",
    "spiral_points",
    "ssm_log_likelihood",
    "static_null_log_likelihood",
    "triangle_wave",
]
