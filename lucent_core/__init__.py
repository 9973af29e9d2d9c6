"""lucent_core: feature visualisation for PyTorch in the DeepDream / Lucid tradition.

Example:
    >>> import torch
    >>> from lucent_core import objectives, param, render_vis
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    >>> result = render_vis(net, objectives.channel("0", 5), param.image(64), thresholds=(16,),
    ...                     progress=False, seed=0)
    >>> result.image.shape
    (1, 64, 64, 3)
"""

from lucent_core import figures, objectives, param, quality, transforms
from lucent_core.examples import find_examples, load_examples
from lucent_core.groups import NeuronGroups, groups_overlay, neuron_groups, nmf, render_groups
from lucent_core.hooks import LayerInfo, capture, list_layers, resolve_layer
from lucent_core.io import image_grid, save_png, show, to_numpy, to_pil
from lucent_core.objectives.matching import load_image
from lucent_core.models import Preprocessing
from lucent_core.render import RenderResult, frozen, render_vis

__version__ = "0.1.0"

__all__ = ["LayerInfo", "NeuronGroups", "Preprocessing", "RenderResult", "__version__", "capture",
           "figures", "find_examples", "frozen", "groups_overlay", "image_grid", "list_layers",
           "load_examples", "load_image", "neuron_groups", "nmf", "objectives", "param",
           "quality", "render_groups", "render_vis", "resolve_layer", "save_png", "show",
           "to_numpy", "to_pil", "transforms"]
