"""Recipes: analyses built from the core (objectives, parameterisations, the render loop) and
the model zoo, one module each, as Lucid kept its recipes apart from ``optvis``.

* :mod:`~lucent_core.recipes.inversion`: feature inversion and caricatures of a photo.
* :mod:`~lucent_core.recipes.groups`: neuron groups (NMF of a layer's activations on a photo).
* :mod:`~lucent_core.recipes.maco`: MACO's render (phase-only, many crops).
* :mod:`~lucent_core.recipes.clip`: CLIP text objectives, text directions, prompt renders.
* :mod:`~lucent_core.recipes.quality`: how robust and diverse renders are.
* :mod:`~lucent_core.recipes.examples`: dataset examples (top-k over a folder of images).
* :mod:`~lucent_core.recipes.figures`: figures with a side-car that reproduces every panel.
* :mod:`~lucent_core.recipes.circuits`: expanded weights between layers, a unit's strongest
  inputs and outputs, weight pictures and circuit figures.
* :mod:`~lucent_core.recipes.circuits`: expanded weights between layers, strongest connections.

Example:
    >>> import torch
    >>> from lucent_core.recipes import feature_inversion
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    >>> feature_inversion(net, "1", torch.rand(3, 8, 8)).name
    "feature_inversion('1')"
"""

from lucent_core.recipes import figures, quality
from lucent_core.recipes.circuits import (Connection, Connections, circuit_figure,
                                          expanded_weights, save_circuit_figure, top_inputs,
                                          top_outputs, weight_picture)
from lucent_core.recipes.examples import find_examples, load_examples
from lucent_core.recipes.groups import (NeuronGroups, groups_overlay, neuron_groups, nmf,
                                        render_groups)
from lucent_core.recipes.inversion import caricature, feature_inversion
from lucent_core.recipes.maco import render_maco

__all__ = ["Connection", "Connections", "NeuronGroups", "caricature", "circuit_figure",
           "expanded_weights", "save_circuit_figure",
           "feature_inversion", "figures", "find_examples", "groups_overlay", "load_examples",
           "neuron_groups", "nmf", "quality", "render_groups", "render_maco", "top_inputs",
           "top_outputs", "weight_picture"]
