"""The model registry: a config per model, ``list_models()`` and ``create_model()``."""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from lucent_core import validate
from lucent_core.validate import flag, instance
from lucent_core.preprocessing import Preprocessing
from lucent_core.relu import use_redirected_relus
from lucent_core.models.weights import WeightsError, WeightsSource, load_weights

__all__ = ["ModelConfig", "create_model", "get_config", "list_models", "register_family",
           "register_model"]

TORCHVISION_PREFIX = "torchvision:"
RANDOM_WEIGHTS_SEED = 0  # create_model(pretrained=False) draws its weights from this seed


@dataclass(frozen=True)
class ModelConfig:
    """Everything the library needs to know about a model besides its code.

    Attributes:
        name: registry name.
        description: one line for listings.
        build: makes the architecture with random weights.
        preprocessing: how rendered RGB [0, 1] images become model input.
        input_size: the usual ``(height, width)`` of one input (for listing layer shapes).
        layers: the main layers researchers target, with their channel counts.
        weights: where the trained weights come from, or None.
        load_pretrained: for models whose own library fetches their trained weights (CLIP via
            open_clip): builds the model with them. Used when ``weights`` is None.
        revision: raised whenever a change to the definition changes what the model computes
            for the same weights; atlases and dataset examples of an older revision are not
            resumed (their pictures would mix two models).
    """

    name: str
    description: str
    build: Callable[[], nn.Module]
    preprocessing: Preprocessing
    input_size: tuple[int, int] = (224, 224)
    layers: dict[str, int] = field(default_factory=dict)
    weights: WeightsSource | None = None
    load_pretrained: Callable[[], nn.Module] | None = None
    revision: int = 1


_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}
#: Families of models named ``"<prefix><name>"`` (e.g. ``"torchvision:resnet50"``): the zoo
#: registers a function from the name to its config.
_FAMILIES: dict[str, Callable[[str], ModelConfig]] = {}


def register_family(prefix: str, make_config: Callable[[str], ModelConfig]) -> None:
    """Register every model named ``prefix + name``: ``make_config(name)`` gives its config.

    Example:
        >>> register_family("tiny:", lambda n: ModelConfig(f"tiny:{n}", "a 1x1 conv",
        ...                 lambda: nn.Conv2d(3, 2, 1), Preprocessing()))
        >>> get_config("tiny:a").name
        'tiny:a'
    """
    _FAMILIES[prefix] = make_config


def register_model(name: str) -> Callable[[Callable[[], ModelConfig]], Callable[[], ModelConfig]]:
    """Decorator registering a function that returns a model's :class:`ModelConfig`.

    Example:
        >>> @register_model("tiny_example")
        ... def _tiny():
        ...     return ModelConfig("tiny_example", "a 1x1 conv", lambda: nn.Conv2d(3, 2, 1),
        ...                        Preprocessing())
        >>> "tiny_example" in list_models()
        True
    """
    def decorator(make_config: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = make_config
        return make_config
    return decorator


def list_models() -> list[str]:
    """Names accepted by :func:`create_model` (plus any ``"torchvision:<name>"``).

    Example:
        >>> "inceptionv1" in list_models() and "vgg16_hed" in list_models()
        True
    """
    return sorted(_REGISTRY)


def _imported_config(name: str) -> ModelConfig:
    """The config of ``"package.module:function"``: a function returning a config or a model."""
    module_name, _, attribute = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import model {name!r} ({error}); write it as 'package.module:"
                         "function', importable from the current directory or PYTHONPATH") from None
    try:
        inspect.signature(factory, follow_wrapped=False).bind()
    except TypeError as error:  # not callable, or it needs arguments
        raise ValueError(f"model {name!r} cannot be called without arguments ({error}); give a "
                         "no-argument function returning an nn.Module or a ModelConfig") from None
    except ValueError:  # a builtin without a signature: call it and see
        pass
    made = factory()
    if isinstance(made, ModelConfig):
        return made
    if not isinstance(made, nn.Module):
        raise ValueError(f"model {name!r} gave {type(made).__name__}, not an nn.Module/ModelConfig")
    return ModelConfig(name=name, description=f"{type(made).__name__} from {module_name}",
                       build=lambda: made, load_pretrained=lambda: made,
                       preprocessing=getattr(made, "preprocessing", None) or Preprocessing())


def get_config(name: str) -> ModelConfig:
    """The :class:`ModelConfig` of a registered model, ``"torchvision:<name>"``, or your own.

    Your own models: ``"package.module:function"`` imports ``function``, which returns a
    :class:`ModelConfig` or an ``nn.Module`` (then with its ``preprocessing`` attribute, if
    any, else RGB in [0, 1]) with whatever weights the function gives it.

    Example:
        >>> get_config("torch.nn:Identity").description
        'Identity from torch.nn'
    """
    instance("name", name, str, "a model's name, e.g. 'inceptionv1'")
    for prefix, make_config in _FAMILIES.items():
        if name.startswith(prefix):
            return make_config(name[len(prefix):])
    if ":" in name:
        return _imported_config(name)
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Registered: {', '.join(list_models())}, "
                         "'torchvision:<name>' and your own 'package.module:function'")
    return _REGISTRY[name]()


def _load_state(model: nn.Module, state: dict, name: str, weights: object) -> None:
    """``model.load_state_dict(state)``, with one clear line when the file is for another model."""
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        own = set(model.state_dict())
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        detail = (f"{len(missing)} of its parameters missing (e.g. {missing[:2]}), "
                  f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})" if missing or unexpected
                  else "parameters of other shapes")
        where = weights if weights is not None else "the weights file"
        raise WeightsError(f"{where} does not fit model {name!r}: {detail}") from error


def create_model(name: str, pretrained: bool = True, weights: str | os.PathLike | None = None,
                 *, seed: int | None = None) -> nn.Module:
    """Build a registered model in eval mode, carrying its config and preprocessing.

    Args:
        name: a name from :func:`list_models` or ``"torchvision:<name>"``.
        pretrained: load the trained weights (see :mod:`lucent_core.models.weights` for where
            they are looked for); ``False`` gives random weights, offline.
        weights: a local weights file to load instead (implies ``pretrained``).
        seed: random weights only: the seed they are drawn from (default 0), so a name and a
            seed always give the same model, the one the command line's ``--random-weights
            --weights-seed S`` builds; the caller's random state is left as it was.

    Returns:
        The model, with ``model.config`` (:class:`ModelConfig`) and ``model.preprocessing``
        set, so :func:`~lucent_core.render_vis` preprocesses correctly by itself, and
        ``model.weights_origin`` (``"pretrained"``, ``"random"`` or the weights path) and
        ``model.weights_seed`` (random weights' seed, else None) for records.

    Example:
        >>> model = create_model("inceptionv1", pretrained=False)
        >>> model.preprocessing.value_range
        (-117.0, 138.0)
    """
    random_weights = not flag("pretrained", pretrained) and weights is None
    if seed is not None and not random_weights:
        raise ValueError("seed= chooses random weights: give it with pretrained=False only")
    seed = (RANDOM_WEIGHTS_SEED if seed is None else validate.seed("seed", seed)) \
        if random_weights else None
    with torch.random.fork_rng(devices=[]):
        if seed is not None:  # also for "package.module:function", which builds in get_config
            torch.manual_seed(seed)
        config = get_config(name)
        loads_itself = pretrained and weights is None and config.weights is None \
            and config.load_pretrained is not None
        model = config.load_pretrained() if loads_itself else config.build()
    if not loads_itself and not random_weights:
        if config.weights is None:
            raise ValueError(f"model {name!r} has no trained weights file; use pretrained=False")
        _load_state(model, load_weights(config.weights, weights), name, weights)
    use_redirected_relus(model)  # torchvision's and open_clip's nn.ReLUs, for renders
    model.eval()
    model.config = config
    model.preprocessing = config.preprocessing
    model.weights_origin = str(weights) if weights is not None else \
        "pretrained" if pretrained else "random"
    model.weights_seed = seed
    return model
