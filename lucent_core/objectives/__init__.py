"""Objectives: what a render maximises. Combine them with ``+ - * /``.

Example:
    >>> from lucent_core import objectives
    >>> obj = objectives.channel("mixed4a", 476) - 1e2 * objectives.diversity("mixed4a")
    >>> obj.name
    "channel('mixed4a', 476) - 100 * diversity('mixed4a')"
"""

from lucent_core.objectives.catalogue import (batch_channels, channel, class_logit, deepdream,
                                              direction, direction_neuron, diversity, neuron)
from lucent_core.objectives.core import Objective, as_objective, wrap_objective

__all__ = ["Objective", "as_objective", "batch_channels", "channel", "class_logit", "deepdream",
           "direction", "direction_neuron", "diversity", "neuron", "wrap_objective"]
