"""The :class:`Objective` type and its arithmetic.

An objective reads the activations captured at named layers and returns a scalar to
*maximise*; the render loop negates it exactly once. Objectives combine with ``+ - * /``
(with numbers and with each other), so
``channel("mixed4a", 476) - 1e2 * diversity("mixed4a")`` is an objective too.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Callable, Iterable, Mapping, Union

import torch

from lucent_core.hooks import registry_name
from lucent_core.validate import instance

Activations = Mapping[str, torch.Tensor]
Number = Union[int, float]

__all__ = ["Objective", "layer_output", "wrap_objective"]


class Objective:
    """A differentiable scalar computed from the activations of named layers.

    Args:
        fn: maps ``{layer name: activation}`` to a scalar tensor (higher is better).
        layers: the layer names ``fn`` reads.
        name: a readable description, shown in progress bars and metadata.

    Example:
        >>> double = Objective(lambda acts: 2 * acts["fc"].sum(), ["fc"], "double")
        >>> (double - 1)({"fc": torch.ones(1, 3)}).item()
        5.0
    """

    def __init__(self, fn: Callable[[Activations], torch.Tensor], layers: Iterable[str],
                 name: str | None = None):
        self._fn = fn
        self.layers = frozenset([layers] if isinstance(layers, str) else layers)
        self._name = name

    def _describe(self) -> str:
        return "objective"

    @property
    def name(self) -> str:
        return self._name if self._name is not None else self._describe()

    @name.setter
    def name(self, value: str | None) -> None:
        self._name = value

    def __call__(self, acts: Activations) -> torch.Tensor:
        return self._fn(acts)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    # Arithmetic. Sums and scalings flatten into one linear node (no deep recursion);
    # products and quotients of two objectives make a binary node.
    def _linear(self) -> "_Linear":
        return _Linear([(1.0, self)], 0.0)

    def __add__(self, other: "Objective | Number") -> "Objective":
        if isinstance(other, Objective):
            return _Linear.combine(self._linear(), other._linear())
        if isinstance(other, (int, float)):
            lin = self._linear()
            return _Linear(lin.terms, lin.constant + _finite(other))
        return NotImplemented

    __radd__ = __add__

    def __neg__(self) -> "Objective":
        return self * -1.0

    def __sub__(self, other: "Objective | Number") -> "Objective":
        if not isinstance(other, (Objective, int, float)):
            return NotImplemented
        return self + (-other)

    def __rsub__(self, other: Number) -> "Objective":
        if not isinstance(other, (int, float)):
            return NotImplemented
        return (-self) + other

    def __mul__(self, other: "Objective | Number") -> "Objective":
        if isinstance(other, (int, float)):
            other, lin = _finite(other), self._linear()
            return _Linear([(c * other, t) for c, t in lin.terms], lin.constant * other)
        if isinstance(other, Objective):
            return _Binary(self, other, "*", lambda a, b: a * b)
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other: "Objective | Number") -> "Objective":
        if isinstance(other, (int, float)):
            if other == 0:
                raise ZeroDivisionError("objective divided by zero")
            return self * (1.0 / other)
        if isinstance(other, Objective):
            return _Binary(self, other, "/", lambda a, b: a / b)
        return NotImplemented

    def __rtruediv__(self, other: Number) -> "Objective":
        if not isinstance(other, (int, float)):
            return NotImplemented
        return _Binary(_constant(_finite(other)), self, "/", lambda a, b: a / b)

    @staticmethod
    def sum(objectives: Iterable["Objective"]) -> "Objective":
        """Sum many objectives into one flat node (safe for thousands of terms).

        Example:
            >>> def pick(i):
            ...     return Objective(lambda acts: acts["x"][0, i], ["x"], f"x{i}")
            >>> total = Objective.sum(pick(i) for i in range(3))
            >>> total({"x": torch.tensor([[1.0, 2.0, 3.0]])}).item(), total.name
            (6.0, 'x0 + x1 + x2')
        """
        terms: list[tuple[float, Objective]] = []
        constant = 0.0
        for obj in objectives:
            instance("Objective.sum's terms", obj, Objective, "Objectives (see as_objective)")
            lin = obj._linear()
            terms.extend(lin.terms)
            constant += lin.constant
        if not terms:
            raise ValueError("Objective.sum needs at least one objective")
        return _Linear(terms, constant)


def _finite(number: "int | float") -> float:
    if not math.isfinite(number):
        raise ValueError(f"an objective can only be combined with finite numbers, got {number!r}")
    return float(number)


def _constant(value: float) -> Objective:
    return Objective(lambda acts: torch.tensor(float(value)), [], _format_number(value))


def _format_number(value: float) -> str:
    return f"{value:g}"


class _Linear(Objective):
    """``constant + sum(coefficient * objective)``, kept flat."""

    def __init__(self, terms: list[tuple[float, Objective]], constant: float):
        self.terms = terms
        self.constant = constant
        layers = frozenset().union(*(t.layers for _, t in terms)) if terms else frozenset()
        super().__init__(self._evaluate, layers)  # name derived from the terms unless set

    @staticmethod
    def combine(a: "_Linear", b: "_Linear") -> "_Linear":
        return _Linear(a.terms + b.terms, a.constant + b.constant)

    def _linear(self) -> "_Linear":
        # a named combination (feature_inversion, ...) stays one term, keeping its name
        return self if self._name is None else _Linear([(1.0, self)], 0.0)

    def _evaluate(self, acts: Activations) -> torch.Tensor:
        total = None
        for coefficient, term in self.terms:
            value = term(acts) if coefficient == 1.0 else coefficient * term(acts)
            total = value if total is None else total + value
        if total is None:
            return torch.tensor(self.constant)
        return total + self.constant if self.constant else total

    def _describe(self) -> str:
        parts = []
        for coefficient, term in self.terms:
            sign = "-" if coefficient < 0 else "+"
            magnitude = abs(coefficient)
            text = term.name if magnitude == 1.0 else f"{_format_number(magnitude)} * {term.name}"
            # a composite term is parenthesised, unless it carries its own (call-like) name
            if isinstance(term, (_Linear, _Binary)) and term._name is None and \
                    len(self.terms) > 1:
                text = f"({term.name})" if magnitude == 1.0 else \
                    f"{_format_number(magnitude)} * ({term.name})"
            parts.append((sign, text))
        if self.constant:
            parts.append(("-" if self.constant < 0 else "+", _format_number(abs(self.constant))))
        if not parts:
            return _format_number(self.constant)
        first_sign, first = parts[0]
        text = ("-" if first_sign == "-" else "") + first
        return text + "".join(f" {sign} {part}" for sign, part in parts[1:])


class _Binary(Objective):
    def __init__(self, left: Objective, right: Objective, symbol: str,
                 op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.left, self.right, self.symbol = left, right, symbol
        super().__init__(lambda acts: op(left(acts), right(acts)), left.layers | right.layers)

    def _describe(self) -> str:
        return f"({self.left.name}) {self.symbol} ({self.right.name})"


def wrap_objective(factory: Callable[..., Objective]) -> Callable[..., Objective]:
    """Decorator for objective factories: names each objective after the call that made it.

    Example:
        >>> @wrap_objective
        ... def total(layer):
        ...     return Objective(lambda acts: acts[layer].sum(), [layer])
        >>> total("conv1").name
        "total('conv1')"
    """
    signature = inspect.signature(factory)

    @functools.wraps(factory)
    def wrapper(*args, **kwargs) -> Objective:
        objective = factory(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        shown = []
        for i, (key, value) in enumerate(bound.arguments.items()):
            text = _format_argument(value)
            shown.append(text if i < len(args) else f"{key}={text}")
        objective.name = f"{factory.__name__}({', '.join(shown)})"
        return objective

    return wrapper


def _format_argument(value: object) -> str:
    if isinstance(value, Objective):  # an objective built from another: by its name
        return value.name
    if isinstance(value, torch.nn.Module):  # a model: its registry name, not its printout
        return registry_name(value)
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}" if value.numel() > 8 else repr(value.tolist())
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # numpy arrays
        return f"array{tuple(value.shape)}"
    return repr(value)


def layer_output(acts: Activations, layer: str, batch: int | None) -> torch.Tensor:
    """The captured activations of ``layer``; with ``batch=i``, only image ``i`` (kept as a
    batch of one), so one render can optimise a different target in every image.

    Example:
        >>> layer_output({"conv": torch.zeros(4, 2)}, "conv", batch=-1).shape
        torch.Size([1, 2])
    """
    t = acts[layer]
    if batch is None:
        return t
    if not -t.shape[0] <= batch < t.shape[0]:
        raise IndexError(f"batch={batch} is out of range: the render has {t.shape[0]} image(s)")
    return t[batch:batch + 1] if batch >= 0 else t[batch:][:1]
