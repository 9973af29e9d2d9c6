"""Objectives: what a render maximises. Combine them with ``+ - * /``.

Example:
    >>> from lucent_core import objectives
    >>> obj = objectives.channel("mixed4a", 476) - 1e2 * objectives.diversity("mixed4a")
    >>> obj.name
    "channel('mixed4a', 476) - 100 * diversity('mixed4a')"
"""

from lucent_core.objectives.catalogue import (as_objective, batch_channels, channel, class_logit,
                                              deepdream, direction, direction_neuron, diversity,
                                              neuron)
from lucent_core.objectives.batch import alignment, channel_interpolate
from lucent_core.objectives.core import Objective, wrap_objective
from lucent_core.objectives.image import L1, L2, blur_input_each_step, total_variation
from lucent_core.objectives.matching import (activation_distance, activation_match, gram_matrix,
                                             style)

__all__ = ["L1", "L2", "Objective", "activation_distance", "activation_match", "alignment",
           "as_objective", "batch_channels", "blur_input_each_step", "channel",
           "channel_interpolate", "class_logit", "deepdream", "direction", "direction_neuron",
           "diversity", "gram_matrix", "neuron", "style", "total_variation", "wrap_objective"]
