"""Recipes: analyses built from the core (objectives, parameterisations, the render loop) and
the model zoo, one module each, as Lucid kept its recipes apart from ``optvis``.

* :mod:`~lucent_core.recipes.inversion`: feature inversion, caricatures, style (Gram
  matrices) and feature accentuation of a photo.
* :mod:`~lucent_core.recipes.attribution`: how much each position and channel of a layer
  contributes to a target (activation x gradient, integrated gradients; Captum).
* :mod:`~lucent_core.recipes.semantic_dictionary`: the strongest units at each position of a
  photo, each shown by its feature visualisation.
* :mod:`~lucent_core.recipes.activation_grid`: one render per position of a layer on a photo,
  laid out on its grid.
* :mod:`~lucent_core.recipes.activation_atlas`: what a layer represents across a folder of
  images (collect, lay out, bin, render, page).
* :mod:`~lucent_core.recipes.groups`: neuron groups (NMF of a layer's activations on a photo).
* :mod:`~lucent_core.recipes.maco`: MACO's render (phase-only, many crops).
* :mod:`~lucent_core.recipes.clip`: CLIP text objectives, text directions, prompt renders.
* :mod:`~lucent_core.recipes.quality`: how robust and diverse renders are.
* :mod:`~lucent_core.recipes.examples`: dataset examples (top-k over a folder of images).
* :mod:`~lucent_core.recipes.figures`: figures with a side-car that reproduces every panel.
* :mod:`~lucent_core.recipes.circuits`: expanded weights between layers, a unit's strongest
  inputs and outputs, weight pictures and circuit figures.

Example:
    >>> import torch
    >>> from lucent_core.recipes import feature_inversion
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    >>> feature_inversion(net, "1", torch.rand(3, 8, 8)).name
    "feature_inversion('1')"
"""

from lucent_core.recipes import figures, quality
# activation_atlas, activation_grid, attribution, semantic_dictionary: each module's main
# function has the module's name, so the name here stays the module (as figures and quality);
# the functions are at the top level (lucent_core.attribution, ...)
from lucent_core.recipes import activation_atlas, activation_grid, attribution, semantic_dictionary
from lucent_core.recipes.activation_grid import ActivationGrid
from lucent_core.recipes.attribution import ATTRIBUTION_METHODS, Attribution, attribution_overlay
from lucent_core.recipes.circuits import (Connection, Connections, circuit_figure,
                                          expanded_weights, save_circuit_figure, top_inputs,
                                          top_outputs, weight_picture)
from lucent_core.recipes.examples import find_examples, load_examples
from lucent_core.recipes.groups import (NeuronGroups, groups_overlay, neuron_groups, nmf,
                                        render_groups)
from lucent_core.recipes.inversion import (accentuation_transforms, caricature,
                                           feature_accentuation, feature_inversion, style)
from lucent_core.recipes.maco import render_maco
from lucent_core.recipes.semantic_dictionary import SemanticDictionary

__all__ = ["ATTRIBUTION_METHODS", "ActivationGrid", "Attribution", "Connection", "Connections",
           "NeuronGroups", "SemanticDictionary", "accentuation_transforms", "activation_atlas",
           "activation_grid", "attribution", "attribution_overlay", "caricature",
           "circuit_figure", "expanded_weights", "feature_accentuation", "feature_inversion",
           "figures", "find_examples", "groups_overlay", "load_examples", "neuron_groups", "nmf",
           "quality", "render_groups", "render_maco", "save_circuit_figure",
           "semantic_dictionary", "style", "top_inputs", "top_outputs", "weight_picture"]
