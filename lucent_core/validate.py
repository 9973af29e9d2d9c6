"""Argument checks for the public entry points (the policy is in CONTRIBUTING.md); public, so
that code registering its own parameterisations, unit kinds or models checks the same way.

The helpers: :func:`integer` (whole numbers: counts, sizes), :func:`index` (indices, strictly
integers), :func:`real` / :func:`reals` (finite numbers), :func:`flag` (booleans),
:func:`choice` (one of a few names), :func:`instance` (a type), :func:`shape` (a tensor's,
array's or list's shape), :func:`size_pair` (a ``(height, width)``), :func:`seed`;
plus :func:`not_both` and :func:`steps_or_thresholds` for options that replace each other.
Each returns the checked value converted (use it, not the raw argument), and raises
``TypeError`` for the wrong kind of value, ``ValueError`` for a value out of range, with one
line that names the argument. :func:`is_index` and :func:`real_scalar` are the predicates
underneath.
"""

from __future__ import annotations

import math
import numbers
import operator

import numpy as np


def _bool_like(value: object) -> bool:
    """A bool, or a 0-d array/tensor of bools or of uint8 (which torch indexing reads as a
    mask, not a number)."""
    dtype = str(getattr(value, "dtype", ""))
    return isinstance(value, (bool, np.bool_)) or "bool" in dtype or dtype.endswith("uint8")


def is_index(value: object) -> bool:
    """Whether ``value`` is one integer as indexing takes it: a Python or NumPy integer or a
    0-d integer array or tensor (such as ``argmax`` gives); not a bool (nor uint8, a mask to
    torch), not a float.

    Example:
        >>> is_index(3), is_index(np.int64(3)), is_index(3.0), is_index(True)
        (True, True, False, False)
    """
    if _bool_like(value) or getattr(value, "ndim", 0) != 0:
        return False
    try:
        operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


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


def _at_least(minimum: float | None) -> str:
    return "" if minimum is None else " > 0" if minimum == 1 else f" >= {minimum:g}"


def integer(name: str, value: object, minimum: int | None = None) -> int:
    """``value`` as an ``int`` if it is a whole number (a Python or NumPy integer, a 0-d
    integer tensor, or a float without a fraction such as ``4.0``; not a bool) of at least
    ``minimum``.

    Example:
        >>> integer("steps", 8.0, minimum=1), integer("seed", np.int64(-3))
        (8, -3)
        >>> integer("steps", 0, minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: steps must be an integer > 0, got 0
    """
    number = operator.index(value) if is_index(value) else None  # type: ignore[arg-type]
    if number is None and not _bool_like(value):
        whole = real_scalar(value)
        number = int(whole) if whole is not None and math.isfinite(whole) \
            and whole.is_integer() else None
    if number is None:
        raise TypeError(f"{name} must be an integer{_at_least(minimum)}, got {value!r}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be an integer{_at_least(minimum)}, got {value!r}")
    return number


def integers(minimum: int | None = None, **values: object) -> list[int]:
    """:func:`integer` for each named value, in the order given.

    Example:
        >>> integers(1, height=8, width=6.0)
        [8, 6]
    """
    return [integer(name, value, minimum) for name, value in values.items()]


def index(name: str, value: object, minimum: int | None = None) -> int:
    """``value`` as an ``int`` if it is an index (see :func:`is_index`: no floats, no bools)
    of at least ``minimum``.

    Example:
        >>> index("unit", np.int64(3))
        3
        >>> index("unit", 3.0)
        Traceback (most recent call last):
        ...
        TypeError: unit must be an integer index, got 3.0
    """
    if not is_index(value):
        raise TypeError(f"{name} must be an integer index, got {value!r}")
    number = operator.index(value)  # type: ignore[arg-type]
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be an integer{_at_least(minimum)}, got {value!r}")
    return number


def real(name: str, value: object, minimum: float | None = None, positive: bool = False
         ) -> float:
    """``value`` as a float if it is one finite real number (``> 0`` with ``positive``,
    ``>= minimum`` with ``minimum``).

    Example:
        >>> real("lr", 0.05, positive=True)
        0.05
        >>> real("sd", float("nan"))
        Traceback (most recent call last):
        ...
        ValueError: sd must be a finite number, got nan
    """
    number = real_scalar(value)
    if number is None or not math.isfinite(number) \
            or (positive and not number > 0) or (minimum is not None and number < minimum):
        kind = ("a finite number > 0" if positive else
                f"a finite number >= {minimum:g}" if minimum is not None else "a finite number")
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return number


def reals(name: str, values: object, positive: bool = False) -> list[float]:
    """A non-empty sequence of finite numbers (each ``> 0`` with ``positive``) as floats.

    Example:
        >>> reals("scales", (0.9, 1, 1.1), positive=True)
        [0.9, 1.0, 1.1]
        >>> reals("angles", 10)
        Traceback (most recent call last):
        ...
        ValueError: angles must be a non-empty list of finite numbers, got 10
    """
    kind = "finite numbers > 0" if positive else "finite numbers"
    found = [] if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") \
        else [real_scalar(v) for v in values]
    if not found or any(v is None or not math.isfinite(v) or (positive and not v > 0)
                        for v in found):
        raise ValueError(f"{name} must be a non-empty list of {kind}, got {values!r}")
    return found  # type: ignore[return-value]


def flag(name: str, value: object) -> bool:
    """``value`` as a bool if it is one (or the integer 0 or 1); a string such as ``"no"``
    would read as True.

    Example:
        >>> flag("pretrained", False), flag("fft", 1)
        (False, True)
        >>> flag("pretrained", "no")
        Traceback (most recent call last):
        ...
        TypeError: pretrained must be True or False, got 'no'
    """
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer))
                                              and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def choice(name: str, value: object, choices: "tuple | list | dict") -> object:
    """``value`` if it is one of ``choices`` (a sequence, or a dict's keys).

    Example:
        >>> choice("mode", "clamp", ("sigmoid", "clamp"))
        'clamp'
        >>> choice("mode", "tanh", ("sigmoid", "clamp"))
        Traceback (most recent call last):
        ...
        ValueError: unknown mode 'tanh'; choose one of ('sigmoid', 'clamp')
    """
    known = tuple(choices)
    try:
        found = value in known
    except TypeError:  # an unhashable value against a dict
        found = False
    if not found:
        raise ValueError(f"unknown {name} {value!r}; choose one of {known}")
    return value


def instance(name: str, value: object, types: "type | tuple[type, ...]", what: str) -> object:
    """``value`` if it is an instance of ``types``; else a TypeError saying ``what`` it must be.

    Example:
        >>> instance("title", "Fig. 1", str, "a string")
        'Fig. 1'
        >>> instance("title", 3, str, "a string")
        Traceback (most recent call last):
        ...
        TypeError: title must be a string, got int
    """
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    return value


def shape(name: str, value: object, *shapes: "tuple[int | str, ...]") -> tuple[int, ...]:
    """The shape of ``value`` (a tensor's or array's ``.shape``; a sequence's ``(len,)``) if it
    matches one of ``shapes``, whose entries are sizes (int) or names of free sizes (str).

    Example:
        >>> shape("image", np.zeros((4, 5, 3)), ("H", "W", 3))
        (4, 5, 3)
        >>> shape("images", np.zeros((2, 4)), ("B", 3, "H", "W"), (3, "H", "W"))
        Traceback (most recent call last):
        ...
        ValueError: images must have shape (B, 3, H, W) or (3, H, W), got (2, 4)
    """
    found = tuple(value.shape) if hasattr(value, "shape") else \
        (len(value),) if hasattr(value, "__len__") else None  # type: ignore[arg-type]
    if found is None or not any(len(found) == len(want) and all(
            isinstance(w, str) or w == f for w, f in zip(want, found)) for want in shapes):
        shown = " or ".join("(" + ", ".join(map(str, want)) + ("," if len(want) == 1 else "")
                            + ")" for want in shapes)
        raise ValueError(f"{name} must have shape {shown}, got {found}")
    return found


def size_pair(name: str, value: object) -> tuple[int, int]:
    """An int or an ``(height, width)`` pair of positive integers, as ``(height, width)``.

    Example:
        >>> size_pair("size", 64), size_pair("size", (32, 48.0))
        ((64, 64), (32, 48))
    """
    if not isinstance(value, (tuple, list)):
        value = (value, value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a (height, width) pair, got {value!r}")
    return integer(f"{name} height", value[0], 1), integer(f"{name} width", value[1], 1)


def seed(name: str, value: object) -> int:
    """``value`` as an ``int`` if it is a whole number ``torch.manual_seed`` takes
    (``-2**63`` to ``2**64 - 1``).

    Example:
        >>> seed("seed", 7)
        7
        >>> seed("seed", 2**64)
        Traceback (most recent call last):
        ...
        ValueError: seed must be an integer from -2**63 to 2**64 - 1, got 18446744073709551616
    """
    number = integer(name, value)
    if not -2**63 <= number < 2**64:
        raise ValueError(f"{name} must be an integer from -2**63 to 2**64 - 1, got {value!r}")
    return number


def steps_or_thresholds(steps: object, thresholds: object, default_steps: int) -> object:
    """The render's ``thresholds``: as given, or ``(steps,)`` (``default_steps`` when neither
    is given); giving both is an error, as one would be ignored.

    Example:
        >>> steps_or_thresholds(None, None, 256), steps_or_thresholds(None, (8, 16), 256)
        ((256,), (8, 16))
    """
    if thresholds is None:
        return (integer("steps", default_steps if steps is None else steps, 1),)
    not_both("steps", steps, "thresholds", thresholds)
    return thresholds


def not_both(first: str, first_value: object, second: str, second_value: object) -> None:
    """An error when two options that replace each other are both given.

    Example:
        >>> not_both("size", 64, "param_f", None)
        >>> not_both("size", 64, "param_f", print)
        Traceback (most recent call last):
        ...
        ValueError: give either size= or param_f=, not both: param_f replaces what size sets
    """
    if first_value is not None and second_value is not None:
        raise ValueError(f"give either {first}= or {second}=, not both: {second} replaces what "
                         f"{first} sets")
