"""Colour: Lucid's ImageNet colour decorrelation and the map to valid RGB in [0, 1]."""

from __future__ import annotations

import torch
from torch import nn

from lucent_core.validate import choice, flag

# Square root of the ImageNet RGB colour covariance (from its SVD), as used by Lucid.
COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                           [0.27, 0.00, -0.05],
                                           [0.27, -0.09, 0.03]])
# The ImageNet mean colour, added when decorrelated colours are clamped rather than squashed.
COLOR_MEAN = torch.tensor([0.48, 0.46, 0.41])

VALID_RGB_MODES = ("sigmoid", "clamp")

__all__ = ["COLOR_CORRELATION_SVD_SQRT", "COLOR_MEAN", "ToRGB", "straight_through_clamp"]


def straight_through_clamp(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Clamp in the forward pass, identity gradient in the backward pass.

    A hard clamp would give saturated pixels zero gradient forever; this one lets them return.

    Example:
        >>> straight_through_clamp(torch.tensor([-1.0, 0.5, 2.0]))
        tensor([0.0000, 0.5000, 1.0000])
    """
    return x + (x.clamp(low, high) - x).detach()


class ToRGB(nn.Module):
    """Maps an unconstrained ``(B, 3, H, W)`` tensor to an RGB image in [0, 1].

    Args:
        decorrelate: treat the input as decorrelated colour (ImageNet colour statistics) and
            mix it back to RGB with the normalised square-root colour-covariance matrix.
        mode: ``"sigmoid"`` (smooth squash) or ``"clamp"`` (straight-through clamp to [0, 1],
            centred on mid-grey or, when decorrelated, the ImageNet mean colour; Lucid's clip
            mode adds no mid-grey without decorrelation, and blocks some gradients of
            saturated pixels, where this one passes them all).

    Example:
        >>> ToRGB()(torch.zeros(1, 3, 2, 2)).unique()
        tensor([0.5000])
    """

    def __init__(self, decorrelate: bool = True, mode: str = "sigmoid"):
        super().__init__()
        self.decorrelate = flag("decorrelate", decorrelate)
        self.mode = choice("mode", mode, VALID_RGB_MODES)
        matrix = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()
        self.register_buffer("color_matrix", matrix, persistent=False)
        self.register_buffer("color_mean", COLOR_MEAN.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3:
            raise ValueError(f"x must be (B, 3, H, W), got shape {tuple(x.shape)}")
        if self.decorrelate:
            x = torch.einsum("ij,bjhw->bihw", self.color_matrix.to(x.dtype), x)
        if self.mode == "sigmoid":
            return torch.sigmoid(x)
        centre = self.color_mean.to(x.dtype).view(1, 3, 1, 1) if self.decorrelate else 0.5
        return straight_through_clamp(x + centre)

    def inverse(self, images: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
        """The unconstrained tensor this module maps to ``images`` (RGB in [0, 1]); values
        are first kept ``eps`` inside (0, 1), where the sigmoid is invertible (so the
        round trip is exact up to that clamp).

        Example:
            >>> rgb = ToRGB()
            >>> x = torch.rand(1, 3, 4, 4) * 0.9 + 0.05
            >>> torch.allclose(rgb(rgb.inverse(x)), x, atol=1e-5)
            True
        """
        x = images.clamp(eps, 1 - eps) if self.mode == "sigmoid" else images
        x = torch.logit(x) if self.mode == "sigmoid" else x - (
            self.color_mean.to(x.dtype).view(1, 3, 1, 1) if self.decorrelate else 0.5)
        if self.decorrelate:
            x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.color_matrix.double()).to(
                x.dtype), x)
        return x

    def extra_repr(self) -> str:
        return f"decorrelate={self.decorrelate}, mode={self.mode!r}"
