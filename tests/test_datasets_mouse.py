"""Tests for svae_core.datasets.mouse: the behaviour chain, the pose dynamics, the renderer,
the data set and the depth-video loader.

The checks measure what the module docstring designs: run lengths within the documented
bounds, rearing frames higher than walking ones, opposite left/right asymmetry of the two
turns, a 3–5 Hz lateral oscillation while walking and none while pausing, and frames that
change smoothly across label boundaries.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from svae_core.datasets import (
    MouseBenchmark,
    flatten_frames,
    load_depth_video,
    make_mouse_dataset,
    render_mouse,
    sample_behaviour_labels,
    simulate_poses,
)
from svae_core.datasets.mouse import BEHAVIOURS, POSE_DIM, POSE_NAMES

K = len(BEHAVIOURS)
X = np.linspace(-1.0, 1.0, 30)  # column coordinates (image left → right)


@pytest.fixture(scope="module")
def bench():
    return make_mouse_dataset(seed=0, num_train=24, num_test=4, num_frames=100)


def _runs(labels):
    """Lengths of the runs of equal labels in a 1-D sequence."""
    change = np.flatnonzero(np.diff(labels)) + 1
    return np.diff(np.concatenate([[0], change, [len(labels)]]))


def _x_centroid(frames, rows=slice(None)):
    part = frames[..., rows, :]
    return (part * X).sum((-1, -2)) / part.sum((-1, -2))


def _pose(**values):
    pose = np.zeros(POSE_DIM)
    defaults = dict(length=1.1, torso_height=0.65, head_height=0.5, width=0.16)
    for name, value in {**defaults, **values}.items():
        pose[POSE_NAMES.index(name)] = value
    return pose


# ----------------------------------------------------------------------------- data set


def test_shapes_dtypes_and_metadata(bench):
    assert isinstance(bench, MouseBenchmark)
    assert bench.behaviours == BEHAVIOURS == ("pause", "walk", "turn_left", "turn_right",
                                              "rear", "groom")
    assert bench.duration_frames == (6, 15)
    np.testing.assert_allclose(bench.transition_matrix.sum(1), 1.0)
    assert np.all(np.diag(bench.transition_matrix) == 0)
    for split, s in ((bench.train, 24), (bench.test, 4)):
        assert split.frames.shape == split.clean_frames.shape == (s, 100, 30, 30)
        assert split.frames.dtype == split.clean_frames.dtype == np.float32
        assert split.labels.shape == (s, 100) and np.issubdtype(split.labels.dtype, np.integer)
        assert split.poses.shape == (s, 100, POSE_DIM) and split.poses.dtype == np.float32
        assert split.labels.min() >= 0 and split.labels.max() < K
        assert np.all(np.isfinite(split.frames))
        assert split.clean_frames.min() >= 0 and 0.8 < split.clean_frames.max() < 1.1
    assert flatten_frames(bench.train.frames).shape == (24, 100, 900)
    np.testing.assert_array_equal(flatten_frames(bench.train.frames)[3, 7],
                                  bench.train.frames[3, 7].ravel())
    # Noise: the residual has the documented sd.
    resid = bench.train.frames - bench.train.clean_frames
    assert abs(resid.std() - 0.02) < 1e-3


def test_determinism_and_independent_seeds():
    a = make_mouse_dataset(seed=3, num_train=2, num_test=2, num_frames=30)
    b = make_mouse_dataset(seed=3, num_train=2, num_test=2, num_frames=30)
    c = make_mouse_dataset(seed=4, num_train=2, num_test=2, num_frames=30)
    np.testing.assert_array_equal(a.train.frames, b.train.frames)
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    assert not np.array_equal(a.train.frames, c.train.frames)
    assert not np.array_equal(a.train.poses, c.train.poses)
    # Sequences within and across splits differ; more training sequences extend the set and
    # leave the test set alone.
    assert not np.array_equal(a.train.poses[0], a.train.poses[1])
    assert not np.array_equal(a.train.poses[0], a.test.poses[0])
    big = make_mouse_dataset(seed=3, num_train=3, num_test=2, num_frames=30)
    np.testing.assert_array_equal(big.train.frames[:2], a.train.frames)
    np.testing.assert_array_equal(big.test.frames, a.test.frames)


def test_every_behaviour_appears_and_runs_have_documented_lengths():
    labels = sample_behaviour_labels(3000, seed=1)
    assert set(np.unique(labels)) == set(range(K))
    runs = _runs(labels)
    assert runs[0] >= 1 and runs[0] <= 15 and runs[-1] >= 1
    assert runs[1:-1].min() >= 6 and runs[1:-1].max() <= 15
    assert set(runs[1:-1]) == set(range(6, 16))  # uniform over 6..15
    assert np.all(np.diff(labels)[np.diff(labels) != 0] != 0)  # no self-transitions
    # At 60 fps the same 0.2–0.5 s become 12–30 frames.
    runs60 = _runs(sample_behaviour_labels(3000, seed=1, fps=60))[1:-1]
    assert runs60.min() >= 12 and runs60.max() <= 30


def test_dataset_runs_within_bounds(bench):
    for row in bench.train.labels:
        runs = _runs(row)
        if len(runs) > 2:
            assert runs[1:-1].min() >= 6 and runs[1:-1].max() <= 15
        assert runs.max() <= 15


def test_user_transition_matrix_is_followed():
    cycle = np.roll(np.eye(K), 1, axis=1)  # 0 → 1 → 2 → ... → 5 → 0
    labels = sample_behaviour_labels(500, seed=2, transition_matrix=cycle)
    order = labels[np.r_[0, np.flatnonzero(np.diff(labels)) + 1]]
    np.testing.assert_array_equal(np.diff(order) % K, 1)


def test_rear_is_higher_and_turns_bend_opposite_ways(bench):
    frames, labels = bench.train.frames, bench.train.labels
    top = np.sort(frames.reshape(*frames.shape[:2], -1), axis=-1)[..., -10:].mean(-1)
    name = {b: i for i, b in enumerate(BEHAVIOURS)}
    assert top[labels == name["rear"]].mean() > top[labels == name["walk"]].mean() + 0.15
    assert top[labels == name["rear"]].mean() > top[labels == name["pause"]].mean() + 0.1
    # Nose half (top rows): mass to the image's (and mouse's) left in a left turn.
    front = _x_centroid(frames, slice(0, 15))
    left, right = front[labels == name["turn_left"]], front[labels == name["turn_right"]]
    assert left.mean() < -0.01 and right.mean() > 0.01
    assert abs(front[labels == name["walk"]].mean()) < 0.008
    # Groom is hunched: shorter than walk, so its mass spreads over fewer rows.
    rows = (frames.sum(-1) > 0.5).sum(-1)
    assert rows[labels == name["groom"]].mean() < rows[labels == name["walk"]].mean() - 2


def test_walk_oscillates_in_gait_band_and_pause_does_not():
    rng = np.random.default_rng(0)
    t_len, fps = 150, 30.0
    freqs = np.fft.rfftfreq(t_len, 1 / fps)
    band = (freqs >= 3) & (freqs <= 5)

    def band_fraction(behaviour, seed):
        poses = simulate_poses(np.full(t_len, BEHAVIOURS.index(behaviour)), seed=seed, fps=fps)
        frames = render_mouse(poses) + 0.02 * rng.standard_normal((t_len, 30, 30))
        midline = _x_centroid(frames, slice(15, 30))  # tail half: the lateral sway
        power = np.abs(np.fft.rfft((midline - midline.mean()) * np.hanning(t_len))) ** 2
        return power[band].sum() / power[1:].sum(), freqs[1 + np.argmax(power[1:])]

    walk = [band_fraction("walk", s) for s in range(3)]
    pause = [band_fraction("pause", s) for s in range(3)]
    assert all(3 <= peak <= 5 for _, peak in walk)
    assert np.mean([f for f, _ in walk]) > 0.35
    assert np.mean([f for f, _ in pause]) < 0.25


def test_frames_do_not_jump_at_label_boundaries(bench):
    clean, labels = bench.train.clean_frames.astype(np.float64), bench.train.labels
    step = np.sqrt(((clean[:, 1:] - clean[:, :-1]) ** 2).mean((-1, -2)))  # (S, T − 1)
    boundary = labels[:, 1:] != labels[:, :-1]
    assert boundary.sum() > 100
    assert step[boundary].mean() < 2.5 * step[~boundary].mean()
    # The first step is a fraction of the change the transition makes over the next frames.
    s, t = np.nonzero(boundary)
    keep = t + 6 < labels.shape[1]
    s, t = s[keep], t[keep]
    later = np.sqrt(((clean[s, t + 6] - clean[s, t]) ** 2).mean((-1, -2)))
    assert step[s, t].mean() < 0.6 * later.mean()


def test_poses_relax_to_new_behaviour_mean():
    labels = np.r_[np.zeros(30, int), np.full(30, BEHAVIOURS.index("rear"))]
    poses = simulate_poses(labels, seed=0)
    torso = poses[:, POSE_NAMES.index("torso_height")]
    assert abs(torso[25:30].mean() - 0.65) < 0.05 and abs(torso[50:].mean() - 0.95) < 0.06
    assert np.abs(np.diff(torso)).max() < 0.15  # no jump at frame 30
    assert torso[30] < 0.85  # one frame after the switch the pose is still on its way


def test_dropout_zeroes_pixels():
    data = make_mouse_dataset(seed=0, num_train=2, num_test=1, num_frames=20, dropout=0.1).train
    assert 0.08 < np.mean(data.frames == 0) < 0.12


@pytest.mark.parametrize("kwargs", [
    dict(seed=-1), dict(num_train=0), dict(num_frames=0), dict(fps=0), dict(noise_sd=-0.1),
    dict(dropout=1.0), dict(size=2), dict(duration_range=(0.5, 0.2)),
    dict(duration_range=0.3), dict(transition_matrix=np.full((K, K), 1 / K)),
    dict(transition_matrix=np.eye(3)),
])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        make_mouse_dataset(**{**dict(num_train=1, num_test=1, num_frames=10), **kwargs})


# ----------------------------------------------------------------------------- renderer


def test_rest_pose_is_mirror_symmetric_and_centred():
    frame = render_mouse(_pose()).astype(np.float64)
    assert frame.shape == (30, 30) and frame.min() >= 0
    np.testing.assert_allclose(frame, frame[:, ::-1], atol=1e-6)
    y = np.linspace(1.0, -1.0, 30)
    mass = frame.sum()
    assert abs((frame * X).sum() / mass) < 1e-6
    assert abs((frame.sum(1) * y).sum() / mass) < 0.035  # within half a pixel
    # The body is long in y, and its narrow end (the nose) is at the top.
    cols = (frame > 0.1).sum(1)
    occupied = np.flatnonzero(cols)
    assert len(occupied) > 1.5 * cols.max()
    assert cols[occupied[:4]].sum() < cols[occupied[-4:]].sum()
    # Background is zero height in the corners.
    assert frame[0, 0] < 1e-6 and frame[-1, -1] < 1e-6


def test_renderer_mirror_and_heights():
    left = render_mouse(_pose(curvature=1.2, head_yaw=0.4))
    right = render_mouse(_pose(curvature=-1.2, head_yaw=-0.4))
    np.testing.assert_allclose(left, right[:, ::-1], atol=1e-5)
    assert _x_centroid(left, slice(0, 15)) < -0.02
    low = render_mouse(_pose(torso_height=0.5, head_height=0.4))
    high = render_mouse(_pose(torso_height=1.0, head_height=1.0))
    assert high.max() > 1.5 * low.max()
    negative = render_mouse(_pose(head_height=-0.3))
    assert negative.min() >= 0
    batch = render_mouse(np.stack([_pose(), _pose(curvature=0.5)])[None])
    assert batch.shape == (1, 2, 30, 30)
    np.testing.assert_array_equal(batch[0, 0], render_mouse(_pose()))
    assert render_mouse(_pose(), size=48).shape == (48, 48)
    with pytest.raises(ValueError, match="shape"):
        render_mouse(np.zeros(3))
    with pytest.raises(ValueError, match="length and width"):
        render_mouse(_pose(length=0.0))


# ----------------------------------------------------------------------------- loader


def test_load_npy_round_trip_and_percentile_scaling(tmp_path):
    rng = np.random.default_rng(0)
    video = rng.gamma(2.0, 10.0, size=(5, 30, 30))
    path = tmp_path / "video.npy"
    np.save(path, video)
    out = load_depth_video(path, noise_sd=0.0)
    assert out.shape == (5, 30, 30) and out.dtype == np.float32
    lo, hi = np.percentile(video, [0.01, 99.99])
    np.testing.assert_allclose(out, (video - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.percentile(out, [0.01, 99.99]), [0.0, 1.0], atol=1e-5)
    # Other percentiles map to 0 and 1 in the same way.
    out2 = load_depth_video(path, low_percentile=5, high_percentile=95, noise_sd=0.0)
    np.testing.assert_allclose(np.percentile(out2, [5, 95]), [0.0, 1.0], atol=1e-5)
    # The noise is N(0, noise_sd²) on top, and seeded.
    noisy = load_depth_video(path, noise_sd=0.1, seed=1)
    assert abs((noisy - out).std() - 0.1) < 0.01
    np.testing.assert_array_equal(noisy, load_depth_video(path, noise_sd=0.1, seed=1))


def test_load_resizes_by_area_averaging(tmp_path):
    video = np.random.default_rng(1).uniform(0, 100, size=(3, 64, 48)).astype(np.uint16)
    np.save(tmp_path / "v.npy", video)
    out = load_depth_video(tmp_path / "v.npy", noise_sd=0.0)
    assert out.shape == (3, 30, 30) and out.dtype == np.float32
    # A constant-by-blocks image stays a block image: a 60×60 → 30×30 halving averages 2×2.
    blocks = np.kron(np.arange(2 * 900, dtype=float).reshape(2, 30, 30), np.ones((2, 2)))
    np.save(tmp_path / "b.npy", blocks)
    halved = load_depth_video(tmp_path / "b.npy", noise_sd=0.0)
    flat = np.arange(2 * 900, dtype=float).reshape(2, 30, 30)
    lo, hi = np.percentile(flat, [0.01, 99.99])
    np.testing.assert_allclose(halved, (flat - lo) / (hi - lo), atol=1e-5)


def test_load_npz_with_key_single_array_and_recordings(tmp_path):
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=(4, 30, 30)), rng.uniform(size=(6, 30, 30))
    np.savez(tmp_path / "one.npz", depth=a)
    np.savez(tmp_path / "two.npz", first=a, second=b)
    single = load_depth_video(tmp_path / "one.npz", noise_sd=0.0)
    keyed = load_depth_video(tmp_path / "two.npz", key="second", noise_sd=0.0)
    np.testing.assert_allclose(single, load_depth_video(tmp_path / "one.npz", key="depth",
                                                        noise_sd=0.0))
    assert single.shape == (4, 30, 30) and keyed.shape == (6, 30, 30)
    # Several recordings: each scaled by its own percentiles.
    recs = np.stack([a, 10 * a + 5])
    np.save(tmp_path / "recs.npy", recs)
    out = load_depth_video(tmp_path / "recs.npy", noise_sd=0.0)
    assert out.shape == (2, 4, 30, 30)
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)


@pytest.mark.parametrize("case, match", [
    ("missing", "not found"),
    ("extension", "unknown extension"),
    ("ndim", r"\(T, H, W\) or \(R, T, H, W\)"),
    ("nonfinite", "non-finite"),
    ("one_frame", "fewer than 2 frames"),
    ("ambiguous", "ambiguous"),
    ("bad_key", "not in"),
    ("npy_key", "key"),
    ("constant", "constant"),
    ("corrupt", "could not read"),
    ("strings", "real numbers"),
])
def test_load_rejects_bad_files(tmp_path, case, match):
    good = np.random.default_rng(0).uniform(size=(3, 8, 8))
    path, key = tmp_path / "v.npy", None
    if case == "missing":
        path = tmp_path / "absent.npy"
    elif case == "extension":
        path = tmp_path / "v.mp4"
        path.write_bytes(b"\x00")
    elif case == "ndim":
        np.save(path, good[0])
    elif case == "nonfinite":
        bad = good.copy()
        bad[1, 2, 3] = np.nan
        np.save(path, bad)
    elif case == "one_frame":
        np.save(path, good[:1])
    elif case in ("ambiguous", "bad_key"):
        path = tmp_path / "v.npz"
        np.savez(path, a=good, b=good)
        key = "c" if case == "bad_key" else None
    elif case == "npy_key":
        np.save(path, good)
        key = "depth"
    elif case == "constant":
        np.save(path, np.ones((3, 8, 8)))
    elif case == "corrupt":
        path.write_bytes(b"not a numpy file")
    elif case == "strings":
        np.save(path, np.full((3, 8, 8), "x"))
    with pytest.raises(ValueError, match=match):
        load_depth_video(path, key=key)


def test_load_h5_without_h5py_says_to_install_it(tmp_path, monkeypatch):
    path = tmp_path / "video.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n")
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(ImportError, match="pip install h5py"):
        load_depth_video(path)


def test_load_h5_round_trip(tmp_path):
    h5py = pytest.importorskip("h5py")
    video = np.random.default_rng(3).uniform(size=(4, 30, 30))
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["frames"] = video
    out = load_depth_video(tmp_path / "v.h5", noise_sd=0.0)
    np.testing.assert_allclose(out, load_depth_video(tmp_path / "v.h5", key="frames",
                                                     noise_sd=0.0))
    assert out.shape == (4, 30, 30)


@pytest.mark.parametrize("kwargs", [dict(size=0), dict(low_percentile=50, high_percentile=50),
                                    dict(high_percentile=101), dict(noise_sd=-1)])
def test_load_bad_arguments(tmp_path, kwargs):
    np.save(tmp_path / "v.npy", np.random.default_rng(0).uniform(size=(3, 8, 8)))
    with pytest.raises(ValueError):
        load_depth_video(tmp_path / "v.npy", **kwargs)
