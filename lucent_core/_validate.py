"""Argument checks for the public entry points (the policy is in CONTRIBUTING.md).

The helpers: :func:`integer` (whole numbers: counts, sizes), :func:`index` (indices, strictly
integers), :func:`real` / :func:`reals` (finite numbers), :func:`flag` (booleans),
:func:`choice` (one of a few names), :func:`size_pair` (a ``(height, width)``), :func:`seed`;
plus :func:`not_both` and :func:`steps_or_thresholds` for options that replace each other.
Each returns the checked value converted (use it, not the raw argument), and raises
``TypeError`` for the wrong kind of value, ``ValueError`` for a value out of range, with one
line that names the argument.
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


def whole_number(value: object) -> int | None:
    """``value`` as an ``int`` if it is one whole number: an index (see :func:`is_index`) or a
    float without a fraction (``2.0``, as configuration files give). Else None.

    Example:
        >>> whole_number(np.int64(3)), whole_number(4.0), whole_number(2.5), whole_number(True)
        (3, 4, None, None)
    """
    if is_index(value):
        return operator.index(value)  # type: ignore[arg-type]
    if _bool_like(value):
        return None
    number = real_scalar(value)
    return int(number) if number is not None and math.isfinite(number) \
        and number.is_integer() else None


def positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is a Python or NumPy integer (not a bool) of at least
    ``minimum``; callers may use ``value`` itself after the check.

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


def positive_ints(minimum: int = 1, **values: object) -> None:
    """:func:`positive_int` for each named value (sizes, counts), in the order given.

    Example:
        >>> positive_ints(batch=1, height=8, width=0)
        Traceback (most recent call last):
        ...
        ValueError: width must be a positive integer, got 0
    """
    for name, value in values.items():
        positive_int(name, value, minimum)


def index_value(name: str, value: object, minimum: int = 0) -> int:
    """``value`` as an ``int`` if it is an index (see :func:`is_index`) of at least
    ``minimum``.

    Example:
        >>> index_value("a unit", np.int64(3))
        3
        >>> index_value("a unit", 0.5)
        Traceback (most recent call last):
        ...
        ValueError: a unit must be an integer >= 0, got 0.5
    """
    if not is_index(value) or operator.index(value) < minimum:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return operator.index(value)  # type: ignore[arg-type]


def whole_count(name: str, value: object, minimum: int = 0) -> int:
    """Like :func:`positive_int`, but also for whole numbers of other kinds (``4.0`` from a
    configuration file, a 0-d integer tensor); use the ``int`` it returns.

    Example:
        >>> whole_count("pad", 4.0), whole_count("pad", np.array(2))
        (4, 2)
    """
    number = whole_number(value)
    return positive_int(name, value if number is None else number, minimum)


def random_seed(name: str, value: object) -> int:
    """``value`` as an ``int`` if it is a whole number that ``torch.manual_seed`` takes
    (``-2**63`` to ``2**64 - 1``).

    Example:
        >>> random_seed("seed", 7)
        7
        >>> random_seed("seed", 2**64)
        Traceback (most recent call last):
        ...
        ValueError: seed must be an integer from -2**63 to 2**64 - 1, got 18446744073709551616
    """
    number = integer(name, value)
    if not -2**63 <= number < 2**64:
        raise ValueError(f"{name} must be an integer from -2**63 to 2**64 - 1, got {value!r}")
    return number


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


def finite_real(name: str, value: object, minimum: float | None = None,
                positive: bool = False) -> float:
    """``value`` as a float if it is one finite real number (and ``> 0`` with ``positive``,
    ``>= minimum`` with ``minimum``).

    Example:
        >>> finite_real("lr", 0.05, positive=True)
        0.05
        >>> finite_real("sd", float("nan"))
        Traceback (most recent call last):
        ...
        ValueError: sd must be a finite number, got nan
    """
    number = real_scalar(value)
    if number is None or not np.isfinite(number) \
            or (positive and not number > 0) or (minimum is not None and number < minimum):
        kind = ("a finite number > 0" if positive else
                f"a finite number >= {minimum:g}" if minimum is not None else "a finite number")
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return number


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


def steps_or_thresholds(steps: object, thresholds: object, default_steps: int) -> object:
    """The render's ``thresholds``: as given, or ``(steps,)`` (``default_steps`` when neither
    is given); giving both is an error, as one would be ignored.

    Example:
        >>> steps_or_thresholds(None, None, 256), steps_or_thresholds(None, (8, 16), 256)
        ((256,), (8, 16))
    """
    if thresholds is None:
        return (positive_int("steps", default_steps if steps is None else steps),)
    if steps is not None:
        raise ValueError(f"give either steps= or thresholds=, not both (got steps={steps!r}, "
                         f"thresholds={thresholds!r})")
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


def finite_reals(name: str, values: object, positive: bool = False) -> list[float]:
    """A non-empty sequence of finite numbers (each ``> 0`` with ``positive``) as floats.

    Example:
        >>> finite_reals("scales", (0.9, 1, 1.1), positive=True)
        [0.9, 1.0, 1.1]
        >>> finite_reals("angles", 10)
        Traceback (most recent call last):
        ...
        ValueError: angles must be a non-empty list of finite numbers, got 10
    """
    kind = "finite numbers > 0" if positive else "finite numbers"
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list of {kind}, got {values!r}")
    numbers = [real_scalar(v) for v in values]
    if any(v is None or not np.isfinite(v) or (positive and not v > 0) for v in numbers):
        raise ValueError(f"{name} must be a non-empty list of {kind}, got {list(values)!r}")
    return numbers


# --- the helpers of the policy ----------------------------------------------------------------

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
    number = whole_number(value)
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
    return finite_real(name, value, minimum, positive)


def reals(name: str, values: object, positive: bool = False) -> list[float]:
    """A non-empty sequence of finite numbers (each ``> 0`` with ``positive``) as floats.

    Example:
        >>> reals("scales", (0.9, 1, 1.1), positive=True)
        [0.9, 1.0, 1.1]
    """
    return finite_reals(name, values, positive)


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


def seed(name: str, value: object) -> int:
    """``value`` as an ``int`` if it is a whole number ``torch.manual_seed`` takes
    (``-2**63`` to ``2**64 - 1``).

    Example:
        >>> seed("seed", 7)
        7
    """
    return random_seed(name, value)
