"""Models: a registry of configured networks (InceptionV1, HED VGG16, torchvision) and weights.

Example:
    >>> from lucent_core.models import create_model, list_models
    >>> model = create_model("vgg16_hed", pretrained=False)
    >>> model.preprocessing.channel_order
    'BGR'
"""

from lucent_core.preprocessing import Preprocessing, preprocessing_of
from lucent_core.models.registry import (ModelConfig, create_model, get_config, list_models,
                                         register_model)
from lucent_core.relu import RedirectedReLU, redirected_relu, set_redirected_relu
from lucent_core.models.weights import WEIGHTS_ENV, WeightsError, WeightsSource
from lucent_core.models import clip, zoo  # noqa: F401  (register the models)

__all__ = ["ModelConfig", "Preprocessing", "RedirectedReLU", "WEIGHTS_ENV", "WeightsError",
           "WeightsSource", "create_model", "get_config", "list_models", "preprocessing_of",
           "redirected_relu", "register_model", "set_redirected_relu"]
