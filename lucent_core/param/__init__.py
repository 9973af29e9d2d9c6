"""Image parameterisations: ``nn.Module``\\ s whose ``forward()`` returns images in [0, 1].

Example:
    >>> from lucent_core import param
    >>> param.image(64, batch=2)().shape
    torch.Size([2, 3, 64, 64])
"""

from lucent_core.param.base import Parameterisation, seeded_batch
from lucent_core.param.alpha import (CompositeBackground, RGBAImage, alpha_penalty,
                                     alpha_transforms, composite, image_rgba, mean_alpha,
                                     random_background)
from lucent_core.param.color import ToRGB, straight_through_clamp
from lucent_core.param.cppn import CPPNImage, cppn
from lucent_core.param.images import ImageParam, image
from lucent_core.param.maco import (MacoImage, RandomCrops, ShrinkingCrops, maco,
                                    maco_transforms, magnitude_from_images, natural_magnitude)
from lucent_core.param.registry import (DEFAULT_PARAM, check_param, make_param, param_names,
                                        register_param)
from lucent_core.param.multiscale import (LaplacianPyramid, LowResImage, laplacian_pyramid_image,
                                          lowres_image)
from lucent_core.param.spatial import FourierImage, PixelImage, fourier_frequencies

__all__ = ["CPPNImage", "CompositeBackground", "Parameterisation", "RGBAImage", "alpha_penalty",
           "DEFAULT_PARAM", "alpha_transforms", "check_param", "seeded_batch",
           "composite", "cppn", "image_rgba", "mean_alpha", "random_background",
           "FourierImage", "ImageParam", "LaplacianPyramid", "LowResImage", "MacoImage",
           "PixelImage", "RandomCrops", "ShrinkingCrops", "ToRGB", "fourier_frequencies", "image",
           "laplacian_pyramid_image", "lowres_image", "maco", "maco_transforms",
           "magnitude_from_images", "make_param", "natural_magnitude", "param_names",
           "register_param", "straight_through_clamp"]
