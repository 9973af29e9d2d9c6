"""Robustness transforms as modules: each samples its arguments, then applies a pure op.

Every random module has ``sample(x, generator=None)`` (returns the drawn arguments, a dict) and
``apply_transform(x, params)``; ``forward(x)`` does both. Passing the same ``generator``
state, or a replayed ``params`` dict, reproduces a draw exactly. Random numbers are drawn on the
CPU, so a seed gives the same draws on any device. One draw is shared by the whole batch, as
in Lucid.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from lucent_core.validate import choice, instance, integer, real, reals, shape
from lucent_core.transforms import functional as TF

__all__ = ["Compose", "Jitter", "Lambda", "Pad", "RandomRotate", "RandomScale", "RandomTransform",
           "standard_transforms"]


def _choose(choices: Sequence[Any], generator: torch.Generator | None) -> Any:
    return choices[int(torch.randint(len(choices), (1,), generator=generator))]


class RandomTransform(nn.Module):
    """Base class: ``forward(x) = apply_transform(x, sample(x))``."""

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        return {}

    def apply_transform(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply_transform(x, self.sample(x, generator))


class Pad(RandomTransform):
    """Pad by ``width`` pixels (deterministic).

    Example:
        >>> Pad(12)(torch.zeros(1, 3, 8, 8)).shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(self, width: int, mode: str = "constant", value: float = 0.5):
        super().__init__()
        self.width = integer("width", width, minimum=0)
        self.mode, self.value = choice("mode", mode, TF.PAD_MODES), real("value", value)

    def apply_transform(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        return TF.pad(x, self.width, self.mode, self.value)

    def extra_repr(self) -> str:
        return f"{self.width}, mode={self.mode!r}, value={self.value!r}"


class Jitter(RandomTransform):
    """Random crop that loses ``d`` pixels in each dimension: a shift of 0..d pixels.

    Example:
        >>> Jitter(8)(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 3, 24, 24])
    """

    def __init__(self, d: int):
        super().__init__()
        self.d = integer("d", d, minimum=1)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        top, left = torch.randint(self.d + 1, (2,), generator=generator).tolist()
        return {"top": top, "left": left}

    def apply_transform(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        height, width = x.shape[-2] - self.d, x.shape[-1] - self.d
        if height < 1 or width < 1:
            raise ValueError(f"jitter {self.d} px is too large for a {tuple(x.shape[-2:])} image")
        return TF.crop(x, params["top"], params["left"], height, width)

    def extra_repr(self) -> str:
        return f"{self.d}"


class RandomScale(RandomTransform):
    """Resize by a factor drawn from ``scales``.

    Example:
        >>> RandomScale([0.5])(torch.zeros(1, 3, 8, 8)).shape
        torch.Size([1, 3, 4, 4])
    """

    def __init__(self, scales: Sequence[float]):
        super().__init__()
        self.scales = reals("scales", scales, positive=True)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        return {"factor": _choose(self.scales, generator)}

    def apply_transform(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        return TF.scale(x, params["factor"])

    def extra_repr(self) -> str:
        return f"{self.scales}"


class RandomRotate(RandomTransform):
    """Rotate by an angle in degrees drawn from ``angles``.

    Example:
        >>> RandomRotate([-5, 5])(torch.zeros(1, 3, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(self, angles: Sequence[float]):
        super().__init__()
        self.angles = reals("angles", angles)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        return {"degrees": _choose(self.angles, generator)}

    def apply_transform(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        return TF.rotate(x, params["degrees"])

    def extra_repr(self) -> str:
        return f"{self.angles}"


class Lambda(nn.Module):
    """Wrap a plain callable on image tensors so it can sit in a :class:`Compose`."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)


class Compose(nn.Module):
    """Apply transforms in order (random ones draw from ``generator``).

    ``forward_with_params`` also returns every draw, and ``apply_transform`` replays them exactly.

    Example:
        >>> t = Compose([Pad(2), Jitter(4)])
        >>> x = torch.rand(1, 3, 8, 8)
        >>> y, draws = t.forward_with_params(x)
        >>> torch.equal(t.apply_transform(x, draws), y)
        True
    """

    def __init__(self, transforms: Sequence[Callable[[torch.Tensor], torch.Tensor]]):
        super().__init__()
        listed = isinstance(transforms, (nn.ModuleList, nn.Sequential)) or (
            isinstance(transforms, Iterable)
            and not isinstance(transforms, (str, nn.Module, set, frozenset, dict)))
        if not listed:  # one transform, a string, or an unordered set
            raise TypeError(f"transforms must be a list (in order), got {transforms!r}")
        transforms = list(transforms)
        for t in transforms:
            instance("transforms", t, Callable, "callables on image tensors")
        self.steps = nn.ModuleList(t if isinstance(t, nn.Module) else Lambda(t)
                                   for t in transforms)

    def forward_with_params(self, x: torch.Tensor, generator: torch.Generator | None = None
                            ) -> tuple[torch.Tensor, list[dict]]:
        draws = []
        for t in self.steps:
            params = t.sample(x, generator) if isinstance(t, RandomTransform) else {}
            x = t.apply_transform(x, params) if isinstance(t, RandomTransform) else t(x)
            draws.append(params)
        return x, draws

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.forward_with_params(x, generator)[0]

    def apply_transform(self, x: torch.Tensor, draws: Sequence[dict]) -> torch.Tensor:
        """Replay the draws returned by :meth:`forward_with_params`."""
        shape("draws", draws, (len(self.steps),))  # one per step
        for i, (t, params) in enumerate(zip(self.steps, draws, strict=True)):
            if not isinstance(t, RandomTransform):
                x = t(x)
                continue
            try:
                x = t.apply_transform(x, params)
            except (KeyError, TypeError) as error:  # a hand-made draw without what it needs
                raise ValueError(f"draw {i} ({params!r}) does not fit {t!r} ({error!r}); "
                                 "replay the draws forward_with_params returns") from error
        return x

    def __repr__(self) -> str:  # one line, as recorded in render settings and figure panels
        return f"Compose([{', '.join(repr(t) for t in self.steps)}])"


def standard_transforms() -> Compose:
    """Lucid's default robustness transforms.

    Pad 12 px with grey, jitter 8 px, scale by one of 0.9..1.1 (steps of 0.02), rotate by one
    of -10..10 degrees (0 six times as likely as any other angle), jitter 4 px.

    Example:
        >>> standard_transforms()(torch.zeros(1, 3, 128, 128)).shape[1]
        3
    """
    return Compose([
        Pad(12, mode="constant", value=0.5),
        Jitter(8),
        RandomScale([1 + (i - 5) / 50.0 for i in range(11)]),
        RandomRotate(list(range(-10, 11)) + 5 * [0]),
        Jitter(4),
    ])
