r"""Real multivariate time series that ship inside a PyPI package, standardised for the models.

The files come from the ``sktime`` wheel (pinned in the ``test`` and ``book`` extras), so they
load offline once it is installed. sktime is only the carrier: this module locates the
package's folder without importing it and parses the bundled UEA/UCR ``.ts`` text files itself,
so loading takes a fraction of a second and needs no pandas or scikit-learn at run time.

Data sets (``REAL_DATASETS``; the split is the archive's own, fixed)::

    basic_motions     BasicMotions, UEA multivariate archive (Bagnall et al. 2018, "The UEA
                      multivariate time series classification archive, 2018",
                      arXiv:1811.00075): a smart watch's 3-D accelerometer and 3-D gyroscope
                      worn by four students while standing, walking, running and playing
                      badminton, 10 s per recording at 10 Hz.
                      train (40, 100, 6), test (40, 100, 6), 10 recordings per activity in
                      each split; all 100 steps observed, so no masks.
                      channels accel_x, accel_y, accel_z, gyro_x, gyro_y, gyro_z (the archive's
                      order; it documents no units).
    japanese_vowels   JapaneseVowels, UCI (Kudo, Toyama & Shimbo 1999, "Multidimensional curve
                      classification using passing-through regions", Pattern Recognition
                      Letters 20(11–13):1103–1111): nine Japanese male speakers each uttering
                      the vowel pair /ae/; per utterance, 12 LPC cepstrum coefficients of
                      25.6 ms frames of 10 kHz audio taken every 6.4 ms (156.25 frames/s;
                      the UCI description's analysis parameters, not restated in the file),
                      7–29 frames long.
                      train (270, 26, 12), 30 utterances per speaker; test (370, 29, 12),
                      24–88 per speaker; masks mark the frames each utterance has.
                      channels lpc_cepstrum_1 … lpc_cepstrum_12.

``train_labels``, ``test_labels``: each sequence's class (activity; speaker), an index into
``class_names``.

The same four files ship, byte for byte, in the ``aeon`` wheel; sktime is the lighter carrier
(no numba) and supports Python 3.10.

Standardisation, per channel n, with mean_n and scale_n (the population sd, ddof 0) taken over
every observed step of every *training* sequence::

    y[s, t, n] = (x[s, t, n] − mean_n) / scale_n      (observed steps, both splits)
    y[s, t, n] = 0,  mask[s, t] = False                (padding)

so the training split has mean 0 and sd 1 per channel over its observed steps and the test
split is scaled by the same numbers (its statistics are near, not at, 0 and 1). ``x = y ·
scale + mean`` recovers the file's values to float32 rounding. The SVAE treats masked steps as
missing observations.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import NamedTuple

import numpy as np

#: The package whose wheel carries the files, and the version the extras pin.
DATA_PACKAGE = "sktime"
DATA_PACKAGE_VERSION = "1.2.0"
_DATA_FOLDER = "datasets/data"  # inside the package


class _Spec(NamedTuple):
    folder: str  # <package>/datasets/data/<folder>/<folder>_{TRAIN,TEST}.ts
    channels: tuple[str, ...]
    sampling_rate_hz: float | None


_SPECS = {
    "basic_motions": _Spec(
        folder="BasicMotions",
        channels=("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"),
        sampling_rate_hz=10.0,
    ),
    "japanese_vowels": _Spec(
        folder="JapaneseVowels",
        channels=tuple(f"lpc_cepstrum_{i}" for i in range(1, 13)),
        sampling_rate_hz=1.0 / 6.4e-3,
    ),
}

#: Names accepted by :func:`load_real_dataset`.
REAL_DATASETS = tuple(_SPECS)


class RealDataSource(NamedTuple):
    """Where a data set's values come from: the package, its installed version, and the two
    files' paths inside the package folder."""

    package: str
    version: str
    train_file: str
    test_file: str


class RealSequences(NamedTuple):
    """A standardised real data set (module docstring: the data sets and the formula).

    Fields:
        name: the data set's name in ``REAL_DATASETS``.
        train: float32 (S, T, N), standardised with the training statistics; 0 at padding.
        test: float32 (S', T', N), standardised with the *training* statistics.
        train_mask, test_mask: bool (S, T), (S', T'), True at observed steps (a prefix of
            each sequence); None for a data set whose sequences all have every step.
        train_labels, test_labels: int64 (S,), (S',), indices into ``class_names``.
        class_names: the classes as the files name them.
        channels: N channel names.
        sampling_rate_hz: steps per second, or None where the source does not say.
        mean, scale: float64 (N,), the per-channel training mean and sd (ddof 0) used:
            raw = standardised · scale + mean.
        source: package, installed version and the two files read.
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    train_mask: np.ndarray | None
    test_mask: np.ndarray | None
    train_labels: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    channels: tuple[str, ...]
    sampling_rate_hz: float | None
    mean: np.ndarray
    scale: np.ndarray
    source: RealDataSource


def load_real_dataset(name: str) -> RealSequences:
    """Load one of ``REAL_DATASETS`` from the files bundled with the data package, standardised
    per channel with the training split's mean and sd (module docstring).

    Deterministic: the same installed files give identical arrays.

    Args:
        name: one of ``REAL_DATASETS`` ("basic_motions", "japanese_vowels").
    Returns:
        :class:`RealSequences`.
    Raises:
        ValueError: an unknown ``name`` (the message lists the names), or a bundled file that
            is not the expected ``.ts`` layout.
        ImportError: the data package is not installed (the message gives the pip command).
        FileNotFoundError: the package is installed but lacks the file (another version).
    """
    if name not in _SPECS:
        raise ValueError(f"unknown real data set {name!r}; choose one of "
                         f"{', '.join(REAL_DATASETS)}")
    spec = _SPECS[name]
    root, version = _package_folder(name)

    splits = []
    for split in ("TRAIN", "TEST"):
        relative = f"{_DATA_FOLDER}/{spec.folder}/{spec.folder}_{split}.ts"
        path = root / relative
        if not path.is_file():
            raise FileNotFoundError(
                f"{DATA_PACKAGE} {version} has no {relative} (looked in {root}); the "
                f"{name!r} data set is read from {DATA_PACKAGE}=={DATA_PACKAGE_VERSION}: "
                f"pip install {DATA_PACKAGE}=={DATA_PACKAGE_VERSION}")
        cases, labels, class_names = _read_ts(path)
        if cases[0].shape[1] != len(spec.channels):
            raise ValueError(f"{path}: expected {len(spec.channels)} channels, found "
                             f"{cases[0].shape[1]}")
        splits.append((relative, cases, labels, class_names))
    (train_file, train_cases, train_labels, class_names), (test_file, test_cases,
                                                           test_labels, test_classes) = splits
    if test_classes != class_names:
        raise ValueError(f"{name}: the train and test files name different classes "
                         f"({class_names} vs {test_classes})")

    observed = np.concatenate(train_cases)  # (observed training steps, N)
    mean = observed.mean(axis=0)
    scale = observed.std(axis=0)
    if np.any(scale == 0):
        constant = [c for c, s in zip(spec.channels, scale, strict=True) if s == 0]
        raise ValueError(f"{name}: channels {constant} are constant over the training split, "
                         f"so they cannot be standardised")

    train, train_mask = _pad(train_cases, mean, scale)
    test, test_mask = _pad(test_cases, mean, scale)
    if train_mask.all() and test_mask.all():
        train_mask = test_mask = None
    return RealSequences(
        name=name, train=train, test=test, train_mask=train_mask, test_mask=test_mask,
        train_labels=train_labels, test_labels=test_labels, class_names=class_names,
        channels=spec.channels, sampling_rate_hz=spec.sampling_rate_hz, mean=mean,
        scale=scale,
        source=RealDataSource(package=DATA_PACKAGE, version=version, train_file=train_file,
                              test_file=test_file),
    )


def _package_folder(name):
    """The data package's installed folder and version, found without importing it."""
    spec = importlib.util.find_spec(DATA_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the {name!r} data set is read from files shipped in the {DATA_PACKAGE} package, "
            f"which is not installed; install it with: pip install "
            f"{DATA_PACKAGE}=={DATA_PACKAGE_VERSION}  (or pip install -e '.[book]')")
    try:
        version = importlib.metadata.version(DATA_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return Path(next(iter(spec.submodule_search_locations))), version


def _read_ts(path):
    """The cases, labels and class names of a UEA/UCR ``.ts`` file with class labels and
    without time stamps or missing values.

    Layout: ``#`` comment lines; ``@key value…`` header lines up to ``@data``; then one case
    per line, its channels separated by ``:`` (each a ``,``-separated list of numbers, all of
    one length within the case) and the class label last.

    Returns:
        (cases, labels, class_names): a list of float64 (T_i, N) arrays, int64 (S,) indices
        into class_names, and the class names in the ``@classLabel`` line's order.
    Raises:
        ValueError: any other layout, naming the file and line.
    """
    header = {}
    cases, labels = [], []
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            where = f"{path}:{number}"
            if not line or line.startswith("#"):
                continue
            if "data" not in header:
                if not line.startswith("@"):
                    raise ValueError(f"{where}: expected a header line (@...), got "
                                     f"{line[:40]!r}")
                key, _, value = line[1:].partition(" ")
                header[key.lower()] = value.split()
                continue
            if not cases:  # the header is complete: check what it declares
                _check_header(header, path)
            *fields, label = line.split(":")
            class_names = header["classlabel"][1:]
            if label not in class_names:
                raise ValueError(f"{where}: class label {label!r} is not among the declared "
                                 f"{class_names}")
            if any("?" in field for field in fields):
                raise ValueError(f"{where}: missing values ('?') are not supported")
            try:
                channels = [np.array(field.split(","), dtype=np.float64) for field in fields]
            except ValueError as err:
                raise ValueError(f"{where}: not a list of numbers ({err})") from None
            if len({c.size for c in channels}) != 1:
                raise ValueError(f"{where}: channels of unequal length "
                                 f"{[c.size for c in channels]}")
            case = np.stack(channels, axis=1)
            if cases and case.shape[1] != cases[0].shape[1]:
                raise ValueError(f"{where}: {case.shape[1]} channels, the first case has "
                                 f"{cases[0].shape[1]}")
            cases.append(case)
            labels.append(class_names.index(label))
    if not cases:
        raise ValueError(f"{path}: no cases after @data")
    return cases, np.asarray(labels, np.int64), tuple(header["classlabel"][1:])


def _check_header(header, path):
    if [v.lower() for v in header.get("timestamps", ["false"])] != ["false"]:
        raise ValueError(f"{path}: time-stamped .ts files are not supported")
    class_label = header.get("classlabel", [])
    if not class_label or class_label[0].lower() != "true" or len(class_label) < 2:
        raise ValueError(f"{path}: expected '@classLabel true <names>', got "
                         f"{' '.join(class_label)!r}")


def _pad(cases, mean, scale):
    """Standardised cases zero-padded to the longest: float32 (S, T, N) and the bool (S, T)
    mask of observed steps."""
    length = max(len(case) for case in cases)
    values = np.zeros((len(cases), length, cases[0].shape[1]), np.float32)
    mask = np.zeros((len(cases), length), bool)
    for i, case in enumerate(cases):
        values[i, :len(case)] = (case - mean) / scale
        mask[i, :len(case)] = True
    return values, mask
