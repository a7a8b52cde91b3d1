"""Tests for svae_core.datasets.real: the real data sets bundled in the sktime wheel.

The reference for the raw values is sktime's own loader (``sktime.datasets``), which parses the
same files with its own code; the module under test never imports sktime. Against it: the
shapes, labels and lengths, the standardisation by training statistics only (the training and
pooled means differ, so a loader using the wrong statistics fails), the masks, determinism and
the errors.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pytest

from svae_core.datasets import REAL_DATASETS, RealSequences, load_real_dataset, real

EXPECTED = {  # shapes, classes and rates documented in the module docstring
    "basic_motions": dict(train=(40, 100, 6), test=(40, 100, 6), masked=False,
                          classes=("Standing", "Running", "Walking", "Badminton"),
                          per_class_train=10, rate=10.0),
    "japanese_vowels": dict(train=(270, 26, 12), test=(370, 29, 12), masked=True,
                            classes=tuple(str(i) for i in range(1, 10)),
                            per_class_train=30, rate=156.25),
}


@pytest.fixture(scope="module")
def loaded():
    return {name: load_real_dataset(name) for name in REAL_DATASETS}


@pytest.fixture(scope="module")
def raw():
    """Per data set and split: the raw cases as float64 (T_i, N) and their string labels, as
    sktime's loader reads them."""
    from sktime.datasets import load_basic_motions, load_japanese_vowels

    loaders = {"basic_motions": load_basic_motions, "japanese_vowels": load_japanese_vowels}
    out = {}
    for name, loader in loaders.items():
        for split in ("train", "test"):
            X, y = loader(split=split, return_X_y=True)
            cases = []
            for i in range(len(X)):
                cases.append(np.stack([np.asarray(X.iloc[i, d], np.float64)
                                       for d in range(X.shape[1])], axis=1))
            out[name, split] = cases, np.asarray(y).astype(str)
    return out


def _observed(values, mask):
    """(observed steps, N) rows of a (S, T, N) array."""
    return values.reshape(-1, values.shape[-1]) if mask is None else values[mask]


def test_loading_does_not_import_the_data_package():
    # First in the file: the fixtures below import sktime for the reference values.
    for module in list(sys.modules):
        if module == "sktime" or module.startswith("sktime."):
            pytest.skip("sktime already imported in this process")
    load_real_dataset("japanese_vowels")
    assert "sktime" not in sys.modules


def test_names_and_unknown_name():
    assert REAL_DATASETS == ("basic_motions", "japanese_vowels")
    with pytest.raises(ValueError, match="basic_motions, japanese_vowels"):
        load_real_dataset("BasicMotions")
    with pytest.raises(ValueError, match="unknown real data set"):
        load_real_dataset("")


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_shapes_dtypes_and_metadata(loaded, name):
    data, exp = loaded[name], EXPECTED[name]
    assert isinstance(data, RealSequences) and data.name == name
    assert data.train.shape == exp["train"] and data.test.shape == exp["test"]
    assert data.train.dtype == data.test.dtype == np.float32
    assert np.all(np.isfinite(data.train)) and np.all(np.isfinite(data.test))
    n = exp["train"][-1]
    assert len(data.channels) == n == len(set(data.channels))
    assert data.mean.shape == data.scale.shape == (n,) and np.all(data.scale > 0)
    assert data.sampling_rate_hz == pytest.approx(exp["rate"])
    assert data.class_names == exp["classes"]
    assert data.train_labels.shape == (exp["train"][0],)
    assert data.test_labels.shape == (exp["test"][0],)
    counts = np.bincount(data.train_labels, minlength=len(exp["classes"]))
    assert np.all(counts == exp["per_class_train"])
    assert set(np.unique(data.test_labels)) == set(range(len(exp["classes"])))
    if exp["masked"]:
        assert data.train_mask.shape == exp["train"][:2] and data.train_mask.dtype == bool
        assert data.test_mask.shape == exp["test"][:2] and data.test_mask.dtype == bool
    else:
        assert data.train_mask is None and data.test_mask is None
    assert data.source.package == real.DATA_PACKAGE == "sktime"
    assert data.source.version == real.DATA_PACKAGE_VERSION
    folder = real._SPECS[name].folder
    assert data.source.train_file == f"datasets/data/{folder}/{folder}_TRAIN.ts"
    assert data.source.test_file == f"datasets/data/{folder}/{folder}_TEST.ts"


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_training_split_is_standardised_over_observed_steps(loaded, name):
    data = loaded[name]
    observed = _observed(data.train, data.train_mask).astype(np.float64)
    np.testing.assert_allclose(observed.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(observed.std(0), 1.0, atol=1e-5)
    # The test split is scaled by the training numbers, so its own moments are off 0 and 1.
    test_observed = _observed(data.test, data.test_mask).astype(np.float64)
    assert np.abs(test_observed.mean(0)).max() > 1e-3


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_both_splits_use_training_statistics_of_the_raw_values(loaded, raw, name):
    data = loaded[name]
    train_cases, train_labels = raw[name, "train"]
    test_cases, test_labels = raw[name, "test"]
    train_rows = np.concatenate(train_cases)
    np.testing.assert_allclose(data.mean, train_rows.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(data.scale, train_rows.std(0), rtol=1e-10)
    # Sensitivity: statistics over both splits differ from the training ones.
    pooled = np.concatenate(train_cases + test_cases)
    assert np.abs(pooled.mean(0) - data.mean).max() > 1e-3 * data.scale.max()

    for values, cases, labels, names in ((data.train, train_cases, data.train_labels,
                                          train_labels),
                                         (data.test, test_cases, data.test_labels,
                                          test_labels)):
        assert len(values) == len(cases)
        # sktime's reader lowercases class names ("standing" for the file's "Standing").
        assert [data.class_names[k].lower() for k in labels] == [n.lower() for n in names]
        for i, case in enumerate(cases):
            expected = (case - train_rows.mean(0)) / train_rows.std(0)
            np.testing.assert_allclose(values[i, :len(case)], expected, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(values[i, :len(case)] * data.scale + data.mean, case,
                                       rtol=1e-5, atol=1e-5 * data.scale.max())


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_masks_mark_exactly_the_padded_steps(loaded, raw, name):
    data = loaded[name]
    for split, values, mask in (("train", data.train, data.train_mask),
                                ("test", data.test, data.test_mask)):
        lengths = np.array([len(case) for case in raw[name, split][0]])
        if mask is None:
            assert np.all(lengths == values.shape[1])
            continue
        np.testing.assert_array_equal(mask, np.arange(values.shape[1]) < lengths[:, None])
        assert np.all(values[~mask] == 0)
        # Observed steps carry data: no observed step is all zeros after standardising.
        assert np.all(np.any(values[mask] != 0, axis=-1))
    if name == "japanese_vowels":  # UCI: utterances of 7 to 29 frames
        lengths = np.concatenate([data.train_mask.sum(1), data.test_mask.sum(1)])
        assert lengths.min() == 7 and lengths.max() == 29


def test_deterministic(loaded):
    for name in REAL_DATASETS:
        again = load_real_dataset(name)
        for field, value in again._asdict().items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(value, getattr(loaded[name], field))
                assert value is not getattr(loaded[name], field)
            else:
                assert value == getattr(loaded[name], field), field


def test_missing_package_gives_the_pip_command(monkeypatch):
    monkeypatch.setattr(real, "DATA_PACKAGE", "svae_no_such_package")
    with pytest.raises(ImportError, match=r"pip install svae_no_such_package==1\.2\.0"):
        load_real_dataset("basic_motions")


def test_missing_file_names_the_version(monkeypatch):
    specs = dict(real._SPECS)
    specs["basic_motions"] = specs["basic_motions"]._replace(folder="NoSuchFolder")
    monkeypatch.setattr(real, "_SPECS", specs)
    with pytest.raises(FileNotFoundError, match="NoSuchFolder_TRAIN.ts"):
        load_real_dataset("basic_motions")


def test_pyproject_pins_the_data_package_in_test_and_book():
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    pin = f"{real.DATA_PACKAGE}=={real.DATA_PACKAGE_VERSION}"
    assert pin in extras["test"] and pin in extras["book"]
    assert importlib.metadata.version(real.DATA_PACKAGE) == real.DATA_PACKAGE_VERSION


# ----------------------------------------------------------------------------- .ts parser


_TS = """# a comment
@problemName toy
@timeStamps false
@classLabel true a b
@data
1,2,3:4,5,6:b
7,8:9,10:a
"""


def test_read_ts_unequal_lengths_labels_and_padding(tmp_path):
    path = tmp_path / "toy.ts"
    path.write_text(_TS)
    cases, labels, classes = real._read_ts(path)
    assert classes == ("a", "b")
    np.testing.assert_array_equal(labels, [1, 0])
    np.testing.assert_array_equal(cases[0], [[1, 4], [2, 5], [3, 6]])
    np.testing.assert_array_equal(cases[1], [[7, 9], [8, 10]])
    mean, scale = np.zeros(2), np.ones(2)
    values, mask = real._pad(cases, mean, scale)
    assert values.shape == (2, 3, 2) and values.dtype == np.float32
    np.testing.assert_array_equal(mask, [[True, True, True], [True, True, False]])
    assert np.all(values[1, 2] == 0)


@pytest.mark.parametrize("body, message", [
    ("1,2:3:a\n", "unequal length"),
    ("1,?:3,4:a\n", "missing values"),
    ("1,2:3,4:c\n", "class label 'c'"),
    ("1,x:3,4:a\n", "not a list of numbers"),
    ("1,2:3,4:a\n1,2:a\n", "1 channels"),
])
def test_read_ts_rejects_other_layouts(tmp_path, body, message):
    path = tmp_path / "bad.ts"
    path.write_text("@classLabel true a b\n@data\n" + body)
    with pytest.raises(ValueError, match=message):
        real._read_ts(path)
    path.write_text("@timeStamps true\n@classLabel true a b\n@data\n(0,1):a\n")
    with pytest.raises(ValueError, match="time-stamped"):
        real._read_ts(path)
