"""Argument checks shared by the data-set generators, so that each rejects bad sizes, seeds
and scales with the same rule and the same message."""

from __future__ import annotations

import numpy as np


def check_int(name, value, minimum=1):
    """``value`` as a Python int, if it is an integer (not a bool) ≥ ``minimum``.

    Raises:
        ValueError: otherwise, naming the argument ``name``.
    """
    if not (isinstance(value, int | np.integer) and not isinstance(value, bool)
            and value >= minimum):
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_float(name, value, *, positive=True):
    """``value`` as a Python float, if it is a finite real number (not a bool), > 0 when
    ``positive``, else ≥ 0.

    Raises:
        ValueError: otherwise, naming the argument ``name``.
    """
    if not (isinstance(value, int | float | np.number) and not isinstance(value, bool)
            and np.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, "
                         f"got {value!r}")
    return float(value)
