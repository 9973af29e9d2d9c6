"""Starting from a photo: feature inversion, caricatures, style, and feature accentuation.

Run a photo through the model once, keep its activation at a layer as a fixed *target*, then
render an image whose activation at that layer resembles the target:

* :func:`feature_inversion` reproduces the photo as the layer sees it: by default it minimises
  the relative L2 distance (:func:`~lucent_core.objectives.activation_distance`, Mahendran
  & Vedaldi, 2015).
* :func:`caricature` exaggerates what the layer sees: it maximises the dot product with the
  target (:func:`~lucent_core.objectives.activation_match`, Lucid's ``dot_compare`` with a
  cosine-similarity power).
* :func:`style` reproduces the photo's *texture*, not its layout: it matches the Gram
  matrices of several layers (:func:`~lucent_core.objectives.style`, Gatys et al., 2016).

:func:`feature_accentuation` goes the other way round: it starts the render *from* the photo
and raises a feature while staying close to the photo's activations (Hamblin et al., 2024),
showing what in this very photo the feature responds to.

Images are RGB in [0, 1] (:func:`~lucent_core.activations.load_image` reads PIL images,
paths, arrays and tensors). The photo goes through the model's own preprocessing
(:func:`lucent_core.preprocessing.preprocessing_of`), exactly as rendered images do, so render
at the photo's size (``param.image(width, height)``) to get activations of the target's shape.

Example:
    >>> from torch import nn
    >>> from lucent_core import param, render_vis
    >>> import torch
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> photo = torch.rand(1, 3, 16, 16)
    >>> result = render_vis(net, feature_inversion(net, "1", photo),
    ...                     param_f=lambda: param.image(16), transforms=[], thresholds=(5,),
    ...                     progress=False, seed=0)
    >>> result.image.shape
    (1, 16, 16, 3)
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from lucent_core import objectives
from lucent_core._device import DeviceCopies
from lucent_core.validate import choice, instance, integer, real, steps_or_thresholds
from lucent_core.activations import ImageSource, Size, image_activations, load_image, run_layers
from lucent_core.hooks import INPUT_LAYER, model_device
from lucent_core.objectives import Objective, activation_distance, activation_match, as_objective
from lucent_core.objectives.core import Activations
from lucent_core.param import image as image_param
from lucent_core.preprocessing import Preprocessing
from lucent_core.render import OptimizerFactory, RenderResult, TransformSpec, render_vis
from lucent_core.transforms import Compose, Jitter, Pad

__all__ = ["ACCENTUATION_JITTER", "ACCENTUATION_REG_WEIGHT", "ACCENTUATION_STEPS",
           "accentuation_transforms", "caricature", "feature_accentuation", "feature_inversion",
           "style"]

#: Steps of :func:`feature_accentuation` unless told otherwise.
ACCENTUATION_STEPS = 256
#: The weight of :func:`feature_accentuation`'s pull back to the photo unless told otherwise
#: (see its docstring for how it behaves).
ACCENTUATION_REG_WEIGHT = 40.0
#: The largest shift of :func:`accentuation_transforms`, in pixels each way.
ACCENTUATION_JITTER = 4
#: The parameterisations :func:`feature_accentuation` can start from a photo.
ACCENTUATION_PARAMS = ("fourier", "pixel")


def _matching(kind: str, model: nn.Module, layer: str, image: ImageSource,
              cossim_pow: float | None, size: Size, preprocess: Preprocessing | None
              ) -> Objective:
    if cossim_pow is not None:  # checked before the model runs
        cossim_pow = real("cossim_pow", cossim_pow, minimum=0)
    target = image_activations(model, layer, image, size=size, preprocess=preprocess)
    if cossim_pow is None:
        objective = -activation_distance(layer, target)
        objective.name = f"{kind}({layer!r})"
    else:
        objective = activation_match(layer, target, cossim_pow=cossim_pow)
        objective.name = f"{kind}({layer!r}, cossim_pow={cossim_pow:g})"
    return objective


def feature_inversion(model: nn.Module, layer: str, image: ImageSource,
                      cossim_pow: float | None = None, size: Size = None,
                      preprocess: Preprocessing | None = None) -> Objective:
    """Objective for *feature inversion*: render an image the model sees as it sees ``image``.

    Runs ``image`` through the model once to get its activation ``t`` at ``layer``, then:

    * ``cossim_pow=None`` (default): ``-activation_distance(layer, t)``, Mahendran & Vedaldi's
      relative L2 loss. Its maximum, 0, is ``a == t``, so the render's activation converges on
      the photo's.
    * a number: Lucid's objective, ``activation_match(layer, t, cossim_pow)`` (dot product
      times cosine similarity to that power; 1 at ``a == t``). Lucid's recipe uses this one
      objective, with ``cossim_pow=0``, for feature inversion and caricatures alike; it keeps
      rewarding activations larger than the photo's, so it drifts into a caricature
      (:func:`caricature`).

    Render it at the image's size (with the standard transforms, which pad the image, the
    centre of the render's activation map is compared), usually with a smoothness penalty::

        objective = feature_inversion(model, "block3_conv1", "photo.jpg", size=128) \\
            - 1e-4 * total_variation()
        render_vis(model, objective, param_f=lambda: param.image(128))

    Args:
        model: the network (its ``preprocessing`` is applied to the image).
        layer: the layer whose activation is matched.
        image: anything :func:`load_image` accepts (PIL image, path, ``(H, W, 3)`` array,
            ``(3, H, W)`` / ``(1, 3, H, W)`` tensor in [0, 1]).
        cossim_pow: None for the L2 loss, or the exponent of :func:`activation_match`.
        size: passed to :func:`load_image` (None: the image's own size).
        preprocess: how images become model input (default: the model's own).

    Returns:
        An :class:`~lucent_core.objectives.Objective` reading ``layer``.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> photo = torch.rand(3, 8, 8)
        >>> objective = feature_inversion(net, "0", photo)
        >>> objective.name, objective({"0": image_activations(net, "0", photo)}).item() == 0
        ("feature_inversion('0')", True)
    """
    return _matching("feature_inversion", model, layer, image, cossim_pow, size, preprocess)


def caricature(model: nn.Module, layer: str, image: ImageSource, cossim_pow: float = 0.0,
               size: Size = None, preprocess: Preprocessing | None = None) -> Objective:
    """Objective for a *caricature*: exaggerate what ``layer`` sees in ``image``.

    Lucid's caricature recipe (``lucid/recipes/caricature.py``, and the "Feature Inversion
    Caricatures" notebook behind *The Building Blocks of Interpretability*): maximise the dot
    product between the render's activation and the photo's (``dot_compare``, default
    ``cossim_pow=0``), starting from random noise (Lucid does *not* start from the photo) with
    the standard robustness transforms. Since the dot product keeps growing as the activation
    grows along the photo's, the render amplifies the features the layer finds in the photo.
    Raise ``cossim_pow`` to stay closer to the photo; see :func:`feature_inversion`.

    Args:
        model: the network (its ``preprocessing`` is applied to the image).
        layer: the layer whose activation is exaggerated.
        image: anything :func:`load_image` accepts.
        cossim_pow: the cosine-similarity exponent of :func:`activation_match`.
        size: passed to :func:`load_image` (None: the image's own size).
        preprocess: how images become model input (default: the model's own).

    Returns:
        An :class:`~lucent_core.objectives.Objective` reading ``layer`` (the photo itself
        scores 1).

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> caricature(net, "0", torch.rand(3, 8, 8)).name
        "caricature('0', cossim_pow=0)"
    """
    if cossim_pow is None:
        raise ValueError("cossim_pow must be a number (Lucid's: 0); None is feature_inversion's")
    return _matching("caricature", model, layer, image, cossim_pow, size, preprocess)


def style(model: nn.Module, layers: str | Sequence[str], image: ImageSource,
          weights: Sequence[float] | None = None, size: Size = None,
          preprocess: Preprocessing | None = None) -> Objective:
    """Objective for *style* or *texture*: render something with the photo's Gram matrices.

    Runs ``image`` through the model once, keeps its activations at ``layers`` and returns
    :func:`~lucent_core.objectives.style` of them: minus the squared difference between the
    render's Gram matrices and the photo's (Gatys, Ecker & Bethge, 2016), 0 for a perfect
    match. A Gram matrix keeps which channels fire together and forgets where, so the render
    takes the photo's textures and colours, not its layout, and may have any size. Layers
    from several depths (``block1_conv2`` to ``block4_conv2`` of a VGG, say) match textures
    from fine to coarse.

    Args:
        model: the network (its ``preprocessing`` is applied to the image).
        layers: a layer name or a list of them.
        image: anything :func:`~lucent_core.activations.load_image` accepts.
        weights: one weight per layer (default: all 1); see
            :func:`~lucent_core.objectives.style`.
        size: passed to :func:`~lucent_core.activations.load_image` (None: its own size).
        preprocess: how images become model input (default: the model's own).

    Returns:
        An :class:`~lucent_core.objectives.Objective` reading ``layers``, named
        ``style([...])``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
        >>> photo = torch.rand(3, 16, 16)
        >>> objective = style(net, ["1", "2"], photo)
        >>> objective.name
        "style(['1', '2'])"
        >>> objective(run_layers(net, photo[None], ["1", "2"])).item() == 0  # the photo itself
        True
    """
    names = [layers] if isinstance(layers, str) else layers
    instance("layers", names, (list, tuple), "a layer name or a list of them")
    found = run_layers(model, load_image(image, size), names, preprocess)
    return objectives.style(layers, found, weights)


def accentuation_transforms(jitter: int = ACCENTUATION_JITTER) -> Compose:
    """:func:`feature_accentuation`'s transforms: a random shift of up to ``jitter`` pixels
    each way (reflect-pad by ``jitter``, then crop back to the image's size at a random
    place), one draw for the whole batch; no rotation, no scaling.

    Example:
        >>> accentuation_transforms(4)(torch.rand(1, 3, 32, 24)).shape
        torch.Size([1, 3, 32, 24])
    """
    jitter = integer("jitter", jitter, minimum=0)
    return Compose([Pad(jitter, mode="reflect"), Jitter(2 * jitter)] if jitter else [])


class _AppendPhoto(nn.Module):
    """The first transform of an accentuation: the photo joins the batch as its last image,
    so the random transforms after it move the photo and the render alike."""

    def __init__(self, photo: torch.Tensor):
        super().__init__()
        self.photo = DeviceCopies(photo)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.photo.like(x)])

    def extra_repr(self) -> str:
        return f"photo {tuple(self.photo.tensor.shape)}"


def _renders_only(objective: Objective) -> Objective:
    """``objective`` of the rendered images only: the model's layers without their last row
    (the photo :class:`_AppendPhoto` added)."""
    def inner(acts: Activations) -> torch.Tensor:
        renders = copy.copy(acts)  # the same kind of mapping, with what it carries
        for layer in objective.layers - {INPUT_LAYER}:
            renders[layer] = acts[layer][:-1]
        return objective(renders)
    return Objective(inner, objective.layers, objective.name)


def _distance_to_photo(layer: str) -> Objective:
    """Relative squared L2 distance (as :func:`~lucent_core.objectives.activation_distance`)
    between each render's activation at ``layer`` and the photo's, the batch's last row."""
    def inner(acts: Activations) -> torch.Tensor:
        flat = acts[layer].flatten(1)
        renders, photo = flat[:-1], flat[-1:]
        return ((renders - photo).pow(2).sum(1) / photo.pow(2).sum(1)).mean()
    return Objective(inner, [layer], f"activation_distance({layer!r}, photo)")


def feature_accentuation(model: nn.Module, image: ImageSource, target: "Objective | str", *,
                         reg_layer: str | None = None,
                         reg_weight: float = ACCENTUATION_REG_WEIGHT,
                         steps: int | None = None, thresholds: Sequence[int] | None = None,
                         size: Size = None, param: str = "fourier", seed: int | None = 0,
                         progress: bool = False, transforms: TransformSpec = None,
                         optimizer: OptimizerFactory | None = None,
                         preprocess: Preprocessing | None = None) -> RenderResult:
    """*Feature accentuation*: change a photo, a little, so that a feature responds more.

    Hamblin, Fel, Saha, Konkle & Alvarez, "Feature Accentuation: Revealing 'What' Features
    Respond to in Natural Images" (2024). Feature visualisation started from the photo instead
    of noise: the parameterisation begins as the photo exactly (``param.image(w, h,
    init=photo)``), and the render maximises::

        target - reg_weight * activation_distance(reg_layer, the photo's activation)

    The first term raises the feature; the second, the relative squared L2 distance
    ``|a - p|^2 / |p|^2`` between the render's activations ``a`` at ``reg_layer`` and the
    photo's ``p`` (as :func:`~lucent_core.objectives.activation_distance`), keeps the render
    what the model takes for the same photo. What changes is then what this feature reads *in
    this photo*: attribution shows where a feature looks, the accentuation what it sees there.

    Choices, and why:

    * The photo goes through the model with the render at every step, as the last image of
      the batch, under the *same* random transforms, and ``p`` is its activation there (as
      the paper's own library does). A fixed ``p`` would be misaligned with every shifted
      render: on VGG16, a shift of one pixel alone moves the activations of ``block2_conv2``
      to ``block5_conv3`` by 4-30 % of their squared norm, which the pull would then fight
      instead of holding the photo. So
      the pull is exactly 0 at the start, whatever the transforms; the transforms must draw
      once for the whole batch (those of :mod:`lucent_core.transforms` do, except
      :func:`~lucent_core.transforms.standard_affine`, which draws per image).
    * ``reg_layer`` defaults to the target's own layer, which every model has and which needs
      no knowledge of the architecture: the rest of that layer (other channels, other
      positions) is held near the photo's while the target rises. The paper holds the
      target's layer or an earlier one (its examples raise a class logit and hold an early
      mixed layer); an earlier ``reg_layer`` holds lower-level features, so the change stays
      closer to the photo's pixels.
    * The distance is relative, so it does not grow with the activations' scale; but it is
      spread over all of a layer's channels and positions, so raising one channel of
      hundreds costs little, and a channel objective has no ceiling: ``reg_weight`` must be
      large, and how large depends on the layer. Measured on VGG16 (HED weights), a 128 px
      photo, 256 steps, a channel of ``block3_conv3`` or ``block4_conv3`` held at its own
      layer: at 20 the feature takes the photo over (its channel 20-100 times the photo's),
      at the default :data:`ACCENTUATION_REG_WEIGHT` (40) the photo stays recognisable with
      the feature's patterns painted in (6-40 times), at 100 it barely changes (1.6-6
      times); 0 is plain feature visualisation started from the photo.
    * Fourier basis with decorrelated colour, as in the paper: steps change smooth patches
      rather than single pixels, which keeps the photo natural-looking.
    * Light transforms (:func:`accentuation_transforms`: a random shift of up to
      :data:`ACCENTUATION_JITTER` px, no rotation or scaling; the paper uses random crops
      and a little noise): enough to keep adversarial high frequencies out.
    * :data:`ACCENTUATION_STEPS` steps of Adam (lr 0.05) by default: a few hundred, as in
      the paper.

    Args:
        model: the network (its ``preprocessing`` is applied to the photo and the render).
        image: the photo: anything :func:`~lucent_core.activations.load_image` accepts.
        target: what to raise: an :class:`~lucent_core.objectives.Objective` or
            ``"layer:unit"`` (``"labels:N"`` for class ``N``).
        reg_layer: the layer whose activations are held near the photo's (default: the one
            layer the target reads).
        reg_weight: the weight of that pull (>= 0; see above).
        steps: how many steps (default :data:`ACCENTUATION_STEPS`); or ``thresholds``.
        thresholds: steps after which to take the images (instead of ``steps``).
        size: passed to :func:`~lucent_core.activations.load_image` (None: the photo's own
            size); the render has the photo's size.
        param: ``"fourier"`` or ``"pixel"``, the basis the photo is written in.
        seed: makes the render repeatable (None: not seeded).
        progress: show a progress bar.
        transforms: as for :func:`~lucent_core.render.render_vis` (default:
            :func:`accentuation_transforms`), drawing once per batch (see above).
        optimizer: as for :func:`~lucent_core.render.render_vis` (default Adam, lr 0.05).
        preprocess: how images become model input (default: the model's own).

    Returns:
        The :class:`~lucent_core.render.RenderResult` of the render, whose ``extra`` holds
        ``"target_on_photo"``: the target's value on the photo itself, to compare with.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> result = feature_accentuation(net, torch.rand(3, 24, 24), "1:0", steps=8)
        >>> result.image.shape, result.objective
        ((1, 24, 24, 3), "feature_accentuation(channel('1', 0), reg_layer='1', reg_weight=40)")
    """
    objective = as_objective(target)
    reg_weight = real("reg_weight", reg_weight, minimum=0)
    fft = choice("param", param, ACCENTUATION_PARAMS) == "fourier"
    thresholds = steps_or_thresholds(steps, thresholds, ACCENTUATION_STEPS)
    photo = load_image(image, size)
    read = sorted(objective.layers - {INPUT_LAYER})
    if reg_layer is None and len(read) != 1:
        raise ValueError(f"reg_layer must be given: the target reads {len(read)} layers {read}")
    reg_layer = read[0] if reg_layer is None else instance("reg_layer", reg_layer, str,
                                                           "a layer name such as 'mixed3a'")
    found = run_layers(model, photo, [reg_layer, *read], preprocess)  # unknown layers: here
    if reg_weight and not found[reg_layer].any():
        raise ValueError(f"the photo's activation at reg_layer {reg_layer!r} is all zeros: "
                         "there is nothing to hold; choose another reg_layer")
    found[INPUT_LAYER] = photo.to(model_device(model)[0])
    on_photo = objective(found).item()  # and a unit out of range: here, before the render
    accentuate = _renders_only(objective)
    if reg_weight:
        accentuate = accentuate - reg_weight * _distance_to_photo(reg_layer)
    accentuate.name = (f"feature_accentuation({objective.name}, reg_layer={reg_layer!r}, "
                       f"reg_weight={reg_weight:g})")
    transforms = [accentuation_transforms()] if transforms is None else \
        list(transforms) if isinstance(transforms, (list, tuple)) else [transforms]
    height, width = photo.shape[-2:]
    result = render_vis(model, accentuate, param_f=lambda: image_param(width, height, init=photo,
                                                                        fft=fft),
                        optimizer=optimizer, thresholds=thresholds, seed=seed,
                        progress=progress, preprocess=preprocess,
                        transforms=Compose([_AppendPhoto(photo), *transforms]))
    result.extra["target_on_photo"] = on_photo
    return result
