"""Matching a photo's activations: feature inversion and caricatures.

Run a photo through the model once, keep its activation at a layer as a fixed *target*, then
render an image whose activation at that layer resembles the target:

* :func:`feature_inversion` reproduces the photo as the layer sees it: by default it minimises
  the relative L2 distance (:func:`~lucent_core.objectives.activation_distance`, Mahendran
  & Vedaldi, 2015).
* :func:`caricature` exaggerates what the layer sees: it maximises the dot product with the
  target (:func:`~lucent_core.objectives.activation_match`, Lucid's ``dot_compare`` with a
  cosine-similarity power).

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

from torch import nn

from lucent_core.validate import real
from lucent_core.activations import ImageSource, Size, image_activations
from lucent_core.objectives import Objective, activation_distance, activation_match
from lucent_core.preprocessing import Preprocessing

__all__ = ["caricature", "feature_inversion"]


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
