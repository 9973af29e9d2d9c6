"""Argument checks shared by the public functions: one message format for bad numbers."""

from __future__ import annotations

import numbers

import numpy as np


def positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) of at least ``minimum``.

    Example:
        >>> positive_int("steps", 8)
        8
        >>> positive_int("padding", -1, minimum=0)
        Traceback (most recent call last):
        ...
        ValueError: padding must be an integer >= 0, got -1
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def size_pair(name: str, value: object) -> tuple[int, int]:
    """An int or an ``(height, width)`` pair of positive integers, as ``(height, width)``.

    Example:
        >>> size_pair("size", 64), size_pair("size", (32, 48))
        ((64, 64), (32, 48))
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be an int or a (height, width) pair, got {value!r}")
    return positive_int(f"{name} height", value[0]), positive_int(f"{name} width", value[1])


def real_scalar(value: object) -> float | None:
    """``value`` as a float if it is one real number (Python, NumPy, or a 0-d array/tensor;
    not a bool), else None.

    Example:
        >>> real_scalar(np.float32(2.0)), real_scalar([1.0, 2.0]), real_scalar(True)
        (2.0, None, None)
    """
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "shape", None) == () and getattr(value, "dtype", None) is not None:
        try:
            return float(value)  # 0-d array or tensor
        except (TypeError, ValueError):
            return None
    return None
