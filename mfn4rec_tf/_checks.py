"""Argument checks shared by the layers: each raises ValueError naming the argument and the value."""

from __future__ import annotations

import numbers


def check_positive_int(name, value):
    """Return `value` as an int if it is a positive integer, else raise ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def check_rate(name, value):
    """Return `value` as a float if it is a rate in [0, 1), else raise ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1). Received: {name}={value!r}")
    return float(value)


def check_fraction(name, value):
    """Return `value` as a float if it is a number in [0, 1], else raise ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}")
    return float(value)


class NotApplicable(ValueError):
    """The model needs a feature modality (or a setting) that the dataset or the configuration lacks."""
