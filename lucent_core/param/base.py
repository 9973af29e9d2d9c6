"""The protocol every parameterisation follows, so the render loop, figures and atlases need
not know one kind from another.

A parameterisation is an ``nn.Module`` whose ``forward()`` gives images (or, for the spatial
part of an image, an unconstrained ``(B, 3, H, W)`` tensor). Beyond that it

* knows its size: :attr:`size` is ``(height, width)`` of ``forward()``'s images;
* can be evaluated at another size from the same parameters: :meth:`render_at`;
* describes itself for records: :meth:`describe` (its kind, size and settings).

Example:
    >>> from lucent_core import param
    >>> image = param.image(32, 24)
    >>> image.size, image.render_at((48, 64)).shape, image.describe()["kind"]
    ((24, 32), torch.Size([1, 3, 48, 64]), 'fourier')
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Parameterisation"]


class Parameterisation(nn.Module):
    """Base class of the parameterisations (see the module docstring).

    Subclasses set :attr:`kind` (their registry name, or None for wrappers that take it from
    their spatial part), keep ``self.size`` and implement :meth:`render_at`.
    """

    kind: str | None = None
    size: tuple[int, int]

    def render_at(self, size: tuple[int, int], interpolation: str | None = None
                  ) -> torch.Tensor:
        """``forward()``'s images at ``size`` (``(height, width)``) from the same parameters.

        ``interpolation`` (``"bicubic"`` or ``"bilinear"``) applies to pixel images only.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot be evaluated at another size")

    def describe(self) -> dict[str, object]:
        """What records say about this parameterisation: class, kind and size ``[h, w]``."""
        return {"class": type(self).__name__, "kind": self.kind, "size": list(self.size)}
