"""CLIP (RN50, RN50x4, ViT-B/32) image towers as visualisation targets.

The models come from ``open_clip`` (``pip install 'lucent_core[clip]'``), imported only when
a CLIP model is built. Registered names: ``clip_rn50``, ``clip_rn50x4``, ``clip_vit_b32``.

* ``create_model("clip_rn50", pretrained=False)`` gives random weights (offline).
* :func:`clip_model` with ``pretrained=True`` gives OpenAI's weights, which ``open_clip``
  downloads and caches itself (``open_clip.create_model(name, pretrained="openai",
  force_quick_gelu=True)``: OpenAI's models use QuickGELU); they do
  not go through :mod:`lucent_core.models.weights`, so ``ModelConfig.weights`` is None.

The built model is a :class:`CLIPVisual`: ``forward(image)`` returns the (unnormalised) image
embedding, its layers are the image tower's (``visual.layer1`` .. ``visual.layer4`` and their
blocks ``visual.layer3.2`` for the ResNets, ``visual.transformer.resblocks.N`` for the ViT)
plus ``image_embedding``, and ``encode_text`` embeds prompts with the text tower.

Example:
    >>> from lucent_core.models import create_model
    >>> model = create_model("clip_vit_b32", pretrained=False)  # doctest: +SKIP
    >>> model.image_size  # doctest: +SKIP
    (224, 224)

Text-defined objectives and prompt renders are a recipe: :mod:`lucent_core.recipes.clip`.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn


from lucent_core.preprocessing import Preprocessing
from lucent_core.relu import use_redirected_relus
from lucent_core.models.registry import ModelConfig, get_config, register_model

__all__ = ["CLIPVisual", "CLIP_MEAN", "CLIP_MODELS", "CLIP_STD", "EMBEDDING_LAYER", "VIT_BLOCKS",
           "clip_model"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
EMBEDDING_LAYER = "image_embedding"
VIT_BLOCKS = "visual.transformer.resblocks"
INSTALL_HINT = "pip install 'lucent_core[clip]'"

# registry name -> (open_clip name, fallback architecture used only when open_clip is absent:
# image size, ResNet width or ViT width, number of ResNet stages / ViT blocks, embedding size)
CLIP_MODELS: dict[str, str] = {"clip_rn50": "RN50", "clip_rn50x4": "RN50x4",
                               "clip_vit_b32": "ViT-B-32"}
_FALLBACK = {"RN50": {"image_size": 224, "width": 64, "layers": (3, 4, 6, 3), "embed_dim": 1024},
             "RN50x4": {"image_size": 288, "width": 80, "layers": (4, 6, 10, 6),
                        "embed_dim": 640},
             "ViT-B-32": {"image_size": 224, "width": 768, "layers": 12, "embed_dim": 512}}


def _import_open_clip():
    try:
        import open_clip
    except ImportError as error:
        raise ImportError(f"CLIP models need the open_clip package: {INSTALL_HINT} "
                          "(or pip install open_clip_torch)") from error
    return open_clip


def _architecture(open_clip_name: str) -> dict:
    """Image size, tower widths and depth from open_clip's config (no model is built)."""
    try:
        import open_clip
        cfg = open_clip.get_model_config(open_clip_name)
    except ImportError:
        cfg = None
    if not cfg:
        return dict(_FALLBACK[open_clip_name])
    vision = cfg["vision_cfg"]
    return {"image_size": vision["image_size"], "width": vision["width"],
            "layers": vision["layers"], "embed_dim": cfg["embed_dim"]}


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return (image_size, image_size)
    return (int(image_size[0]), int(image_size[1]))


class CLIPVisual(nn.Module):
    """A CLIP model seen as an image network: ``forward(image)`` is the image embedding.

    Submodules, in ``named_modules()`` order: ``visual`` (the image tower, so its layers are
    named ``visual.layer4.2`` or ``visual.transformer.resblocks.7``), ``image_embedding`` (an
    identity on the embedding, a layer to hook) and ``clip`` (the whole open_clip model, for
    the text tower; its image tower is the same module as ``visual`` and is listed only once).

    Args:
        clip: an open_clip ``CLIP`` model.
        name: the open_clip model name, used to pick the tokenizer.

    Example:
        >>> import open_clip  # doctest: +SKIP
        >>> model = CLIPVisual(open_clip.create_model("RN50"), "RN50")  # doctest: +SKIP
        >>> model(torch.rand(1, 3, 224, 224)).shape  # doctest: +SKIP
        torch.Size([1, 1024])
    """

    def __init__(self, clip: nn.Module, name: str):
        super().__init__()
        self.visual = clip.visual
        self.image_embedding = nn.Identity()
        self.clip = clip
        self.open_clip_name = name
        self._tokenizer = None

    @property
    def batch_first(self) -> bool | None:
        """Layout of the ViT residual stream: True ``(B, N, C)``, False ``(N, B, C)``.

        open_clip >= 2.2x runs its transformer batch-first and says so in
        ``visual.transformer.batch_first``; older versions had no such attribute and were
        sequence-first. None for the ResNets.
        """
        transformer = getattr(self.visual, "transformer", None)
        if transformer is None:
            return None
        return bool(getattr(transformer, "batch_first", False))

    @property
    def image_size(self) -> tuple[int, int]:
        """The fixed ``(height, width)`` the image tower takes."""
        return _size(self.visual.image_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_embedding(self.visual(image))

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Token ids of ``texts`` with this model's own open_clip tokenizer."""
        if self._tokenizer is None:
            self._tokenizer = _import_open_clip().get_tokenizer(self.open_clip_name)
        return self._tokenizer([texts] if isinstance(texts, str) else list(texts))

    def encode_text(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Unnormalised text embeddings ``(len(texts), D)``, on the model's device."""
        device = next(self.clip.parameters()).device
        return self.clip.encode_text(self.tokenize(texts).to(device))


def _config(registry_name: str) -> ModelConfig:
    open_clip_name = CLIP_MODELS[registry_name]
    arch = _architecture(open_clip_name)
    size = _size(arch["image_size"])
    if isinstance(arch["layers"], int):  # ViT: residual stream of the given width
        layers = {f"{VIT_BLOCKS}.{i}": arch["width"] for i in range(arch["layers"])}
    else:  # ModifiedResNet: bottleneck stages of width * 4 * 2**i channels
        layers = {f"visual.layer{i + 1}": arch["width"] * 4 * 2 ** i
                  for i in range(len(arch["layers"]))}
    layers[EMBEDDING_LAYER] = arch["embed_dim"]

    return ModelConfig(
        name=registry_name,
        description=f"OpenAI CLIP {open_clip_name} image tower (output: image embedding); "
                    f"needs {INSTALL_HINT}",
        build=lambda: _create(open_clip_name, pretrained=None),
        load_pretrained=lambda: _create(open_clip_name, pretrained="openai"),
        preprocessing=Preprocessing(mean=CLIP_MEAN, std=CLIP_STD, input_size=size),
        input_size=size,
        layers=layers,
        weights=None,  # open_clip downloads and caches OpenAI's weights itself
        revision=1 if isinstance(arch["layers"], int) else 2,  # ResNets 2: redirected ReLUs
    )


def _create(open_clip_name: str, pretrained: str | None, cache_dir: str | None = None
            ) -> CLIPVisual:
    open_clip = _import_open_clip()
    # OpenAI trained with QuickGELU; open_clip >= 2.2x only warns when it is not forced
    # random weights were asked for: open_clip's root-logger warning saying so is noise
    quiet = logging.Filter()
    quiet.filter = lambda record: not record.getMessage().startswith(  # type: ignore[method-assign]
        "No pretrained weights loaded")
    logging.root.addFilter(quiet)
    try:
        built = open_clip.create_model(open_clip_name, pretrained=pretrained,
                                       force_quick_gelu=True, cache_dir=cache_dir)
    finally:
        logging.root.removeFilter(quiet)
    model = CLIPVisual(built, open_clip_name)
    use_redirected_relus(model)  # the ResNet towers' nn.ReLUs (ViTs have none)
    return model


@register_model("clip_rn50")
def _clip_rn50() -> ModelConfig:
    return _config("clip_rn50")


@register_model("clip_rn50x4")
def _clip_rn50x4() -> ModelConfig:
    return _config("clip_rn50x4")


@register_model("clip_vit_b32")
def _clip_vit_b32() -> ModelConfig:
    return _config("clip_vit_b32")


def clip_model(name: str, pretrained: bool = True, cache_dir: str | None = None) -> CLIPVisual:
    """A CLIP model in eval mode, with OpenAI's weights, carrying config and preprocessing.

    The same as :func:`~lucent_core.models.create_model` (the weights are fetched and cached by
    ``open_clip`` itself, ``open_clip.create_model(name, pretrained="openai")``), plus a choice
    of open_clip's cache directory.

    Args:
        name: ``"clip_rn50"``, ``"clip_rn50x4"`` or ``"clip_vit_b32"``.
        pretrained: False gives random weights (offline).
        cache_dir: where open_clip keeps downloaded weights (default: its own cache).

    Raises:
        ValueError: for an unknown name. ImportError: if open_clip is not installed.

    Example:
        >>> model = clip_model("clip_rn50", pretrained=False)  # doctest: +SKIP
        >>> model.preprocessing.input_size  # doctest: +SKIP
        (224, 224)
    """
    if name not in CLIP_MODELS:
        raise ValueError(f"unknown CLIP model {name!r}; choose one of {sorted(CLIP_MODELS)}")
    config = get_config(name)
    model = _create(CLIP_MODELS[name], "openai" if pretrained else None, cache_dir)
    model.eval()
    model.config = config
    model.preprocessing = config.preprocessing
    model.weights_origin = "pretrained" if pretrained else "random"
    return model
