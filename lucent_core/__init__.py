"""lucent_core: feature visualisation for PyTorch in the DeepDream / Lucid tradition.

The package is layered, each layer importing only from those before it (``lint-imports``
checks it): the core (``param``, ``transforms``, ``objectives``, ``hooks``, ``render``, ``io``
and what they need), then ``models`` (the zoo), ``recipes`` (analyses), ``atlas`` (batch
rendering of whole layers) and ``cli``. The names below are the everyday ones.

Example:
    >>> import torch
    >>> from lucent_core import objectives, param, render_vis
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    >>> result = render_vis(net, objectives.channel("0", 5), param.image(64), thresholds=(16,),
    ...                     progress=False, seed=0)
    >>> result.image.shape
    (1, 64, 64, 3)
"""

from lucent_core import objectives, param, transforms
from lucent_core.activations import image_activations, layer_activations, load_image
from lucent_core.hooks import LayerInfo, capture, list_layers, resolve_layer
from lucent_core.io import image_grid, save_png, show, to_numpy, to_pil
from lucent_core.preprocessing import Preprocessing
from lucent_core.recipes import (NeuronGroups, caricature, feature_accentuation,
                                 feature_inversion, figures, find_examples, groups_overlay,
                                 load_examples, neuron_groups, nmf, quality, render_groups,
                                 render_maco, style)
from lucent_core.recipes.activation_atlas import activation_atlas
from lucent_core.recipes.activation_grid import activation_grid
from lucent_core.recipes.attribution import attribution
from lucent_core.recipes.semantic_dictionary import semantic_dictionary
from lucent_core.render import RenderResult, frozen, render_vis
from lucent_core.version import __version__

__all__ = ["LayerInfo", "NeuronGroups", "Preprocessing", "RenderResult", "__version__",
           "activation_atlas", "activation_grid", "attribution", "capture", "caricature",
           "feature_accentuation", "feature_inversion", "figures", "find_examples", "frozen",
           "groups_overlay", "image_activations", "image_grid", "layer_activations",
           "list_layers", "load_examples", "load_image", "neuron_groups", "nmf", "objectives",
           "param", "quality", "render_groups", "render_maco", "render_vis", "resolve_layer",
           "save_png", "semantic_dictionary", "show", "style", "to_numpy", "to_pil", "transforms"]
