"""Small helpers the book's chapters use to record what they computed and where.

* :func:`describe_device`: the accelerator / CPU a result came from.
* :func:`max_abs_differences`: field-by-field agreement of two results (e.g. two smoothers).
* :func:`save_results`: a chapter's numbers as ``<output_dir>/<name>.json``, beside the
  executed notebook. ``book/build.py`` passes ``output_dir`` to each chapter as a papermill
  parameter; without it the ``SVAE_OUTPUT_DIR`` environment variable, then the current
  directory, is used.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

OUTPUT_DIR_ENV = "SVAE_OUTPUT_DIR"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_device() -> dict[str, Any]:
    """Where JAX computes: platform, device kind and count, CPU model, versions.

    Returns:
        dict with ``platform`` (``"cpu"``, ``"gpu"``, ...), ``device_kind`` (e.g. ``"cpu"``,
        ``"NVIDIA H100 80GB HBM3"``), ``num_devices``, ``cpu_model`` (from /proc/cpuinfo),
        ``cpu_count``, ``jax_version``, ``python_version``, ``xla_flags`` (the ``XLA_FLAGS``
        environment variable, "" when unset) and a one-line ``summary`` (naming the flags
        when set).
    """
    device = jax.devices()[0]
    info = {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "num_devices": jax.device_count(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__,
        "python_version": platform.python_version(),
    }
    if device.platform == "cpu":
        summary = f"CPU: {info['cpu_model']} ({info['cpu_count']} cores)"
    else:
        summary = f"{device.platform.upper()}: {device.device_kind} × {info['num_devices']}"
    info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    # Non-default compiler flags change timings; say so wherever a result names its device.
    flags = f"; XLA_FLAGS={info['xla_flags']}" if info["xla_flags"] else ""
    info["summary"] = f"{summary}; jax {jax.__version__}{flags}"
    return info


def max_abs_differences(a, b) -> dict[str, float]:
    """max |a.f − b.f| for every array field f shared by two NamedTuples (or dicts).

    Nested NamedTuple fields are skipped; use it on e.g. two ``LDSPosterior`` results to get
    ``{"mean": ..., "cov": ..., "cross_cov": ..., "log_normalizer": ...}``.

    Raises:
        ValueError: when a shared field has different shapes in ``a`` and ``b``.
    """
    fa = a._asdict() if hasattr(a, "_asdict") else dict(a)
    fb = b._asdict() if hasattr(b, "_asdict") else dict(b)
    out = {}
    for name, va in fa.items():
        if name not in fb or hasattr(va, "_asdict") or isinstance(va, dict):
            continue
        xa, xb = jnp.asarray(va), jnp.asarray(fb[name])
        if xa.shape != xb.shape:
            raise ValueError(f"field {name!r}: shapes differ, {xa.shape} vs {xb.shape}")
        out[name] = float(jnp.max(jnp.abs(xa - xb))) if xa.size else 0.0
    return out


def _to_json(value, path="results"):
    if isinstance(value, dict):
        return {str(k): _to_json(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str | bool) or value is None:
        return value
    if isinstance(value, jax.Array | np.ndarray | np.generic | int | float):
        arr = np.asarray(value)
        if arr.dtype == bool:
            return arr.tolist()
        if not (np.issubdtype(arr.dtype, np.number)):
            raise TypeError(f"{path}: cannot store dtype {arr.dtype} as JSON")
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise ValueError(f"{path}: non-finite value(s) {arr!r}; results must be finite")
        return arr.tolist()
    raise TypeError(f"{path}: cannot store {type(value).__name__} as JSON")


def resolve_output_dir(output_dir: str | os.PathLike | None = None) -> Path:
    """``output_dir`` if given, else ``$SVAE_OUTPUT_DIR``, else the current directory."""
    chosen = output_dir or os.environ.get(OUTPUT_DIR_ENV) or "."
    return Path(chosen).resolve()


def save_results(
    name: str, results: dict[str, Any], output_dir: str | os.PathLike | None = None
) -> Path:
    """Write a chapter's results as pretty-printed JSON to ``<output_dir>/<name>.json``.

    Args:
        name: file stem, normally the chapter's notebook name (``"message_passing"``).
        results: nested dicts / lists of str, bool, None, Python or NumPy numbers and JAX or
            NumPy arrays (stored as nested lists).
        output_dir: see :func:`resolve_output_dir`; created if missing.
    Returns:
        The path written.
    Raises:
        ValueError: on a non-finite float anywhere (the message names its key path) or a
            name that is not a plain file stem.
        TypeError: on a value JSON cannot hold.
    """
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"name must be a plain file stem like 'message_passing', got {name!r}")
    payload = _to_json(results)
    directory = resolve_output_dir(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def load_results(name: str, output_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read back what :func:`save_results` wrote."""
    return json.loads((resolve_output_dir(output_dir) / f"{name}.json").read_text())


__all__ = [
    "OUTPUT_DIR_ENV",
    "describe_device",
    "load_results",
    "max_abs_differences",
    "resolve_output_dir",
    "save_results",
]
