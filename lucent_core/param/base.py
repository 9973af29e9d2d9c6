"""The protocol every parameterisation follows, so the render loop, figures and atlases need
not know one kind from another.

A parameterisation is an ``nn.Module`` whose ``forward()`` gives images (or, for the spatial
part of an image, an unconstrained ``(B, 3, H, W)`` tensor). Beyond that it

* knows its size: :attr:`size` is ``(height, width)`` of ``forward()``'s images;
* can be evaluated at another size from the same parameters: :meth:`render_at`;
* describes itself for records: :meth:`describe` (its kind, size and settings);
* refuses, before it allocates anything, a size the machine cannot hold: its constructor
  calls :meth:`check_fits` (a ``MemoryError`` naming the size and batch, the estimate and
  what the device has).

Example:
    >>> from lucent_core import param
    >>> image = param.image(32, 24)
    >>> image.size, image.render_at((48, 64)).shape, image.describe()["kind"]
    ((24, 32), torch.Size([1, 3, 48, 64]), 'fourier')
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from lucent_core._device import check_memory, image_bytes

__all__ = ["Parameterisation", "seeded_batch"]


class Parameterisation(nn.Module):
    """Base class of the parameterisations (see the module docstring).

    Subclasses set :attr:`kind` (their registry name, or None for wrappers that take it from
    their spatial part), keep ``self.size`` and implement :meth:`render_at`.
    """

    kind: str | None = None
    size: tuple[int, int]
    #: Image-sized float32 tensors a render step keeps for this kind, per ``(batch, 3, height,
    #: width)`` image: by default its parameters, their gradient and Adam's two moments. A
    #: lower bound, so that a size that cannot fit is refused and one that can never is.
    memory_factor: float = 4.0

    def check_fits(self, width: int, height: int, batch: int, factor: float | None = None
                   ) -> None:
        """Refuse (``MemoryError``) images whose render needs more memory than torch's default
        device has (``factor``, default :attr:`memory_factor`, image-sized tensors); called
        by constructors once their arguments are checked, before they allocate."""
        check_memory(f"{type(self).__name__}(width={width}, height={height}, batch={batch})",
                     image_bytes(batch, height, width, factor or self.memory_factor))

    def render_at(self, size: tuple[int, int], interpolation: str | None = None
                  ) -> torch.Tensor:
        """``forward()``'s images at ``size`` (``(height, width)``) from the same parameters.

        ``interpolation`` (``"bicubic"`` or ``"bilinear"``) applies to pixel images only.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot be evaluated at another size")

    def describe(self) -> dict[str, object]:
        """What records say about this parameterisation: class, kind and size ``[h, w]``."""
        return {"class": type(self).__name__, "kind": self.kind, "size": list(self.size)}


def seeded_batch(factory: Callable[[int], nn.Module], seeds: Sequence[int]) -> nn.Module:
    """A batch parameterisation whose image ``i`` starts exactly as ``factory(1)`` seeded by
    ``seeds[i]``: a picture then does not depend on the batch (or shard) it is rendered in.

    ``factory(n)`` builds a parameterisation of ``n`` images whose every parameter has the batch
    first; the caller's random state is left as it was.

    Example:
        >>> from lucent_core import param
        >>> batch = seeded_batch(lambda n: param.image(8, batch=n), [3, 5])
        >>> torch.manual_seed(5); alone = param.image(8)  # doctest: +ELLIPSIS
        <...>
        >>> torch.equal(batch()[1], alone()[0])
        True
    """
    with torch.random.fork_rng(devices=[]):
        batch = factory(len(seeds))
        singles = []
        for seed in seeds:
            torch.manual_seed(seed)
            singles.append(dict(factory(1).named_parameters()))
    with torch.no_grad():
        for name, p in batch.named_parameters():
            for i, single in enumerate(singles):
                q = single[name]
                if p.shape[0] != len(seeds) or q.shape != (1, *p.shape[1:]):
                    raise ValueError(f"parameter {name} {tuple(p.shape)} needs the batch first")
                p[i].copy_(q[0])
    return batch
