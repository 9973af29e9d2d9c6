"""Image parameterisations: ``nn.Module``\\ s whose ``forward()`` returns images in [0, 1].

Example:
    >>> from lucent_core import param
    >>> param.image(64, batch=2)().shape
    torch.Size([2, 3, 64, 64])
"""

from lucent_core.param.color import ToRGB, straight_through_clamp
from lucent_core.param.images import ImageParam, image
from lucent_core.param.spatial import FourierImage, PixelImage, fourier_frequencies

__all__ = ["FourierImage", "ImageParam", "PixelImage", "ToRGB", "fourier_frequencies", "image",
           "straight_through_clamp"]
