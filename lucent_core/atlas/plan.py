"""What an atlas renders: its settings, the series of units, per-unit seeds and the work split.

An atlas is a set of *series* (the channels of a layer, its centre neurons, or the rows of a
direction matrix) rendered with one set of :class:`AtlasSettings`. Everything that changes a
picture is in the settings or the series, and each unit's seed is derived from them, so any
unit can be rendered again, alone or in any batch, and give the same picture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Sequence


from lucent_core.validate import choice, flag, integer, real, seed
from lucent_core.param import DEFAULT_PARAM, param_names
from lucent_core.results import derived_seed
from lucent_core.units import Series

__all__ = ["ATLAS_FORMAT", "AtlasSettings", "Batch", "PRECISIONS", "TRANSFORMS",
           "plan_batches", "record_settings", "settings_of_record", "unit_seed"]

ATLAS_FORMAT = "lucent-core-atlas/1"
TRANSFORMS = ("standard", "none")
#: Precisions of the model's forward pass (``torch.autocast`` dtypes; float32: no autocast).
PRECISIONS = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class AtlasSettings:
    """Everything that decides what an atlas's pictures look like.

    Attributes:
        model: the model's name (a registry name, ``module:function``, or any label).
        weights_sha256: :func:`~lucent_core.models.weights.state_dict_sha256` of the weights.
        weights: where the weights came from (``"pretrained"``, ``"random"``, ``"custom"`` for a
            model given in Python, or a path); shown in records and commands, not compared on
            resume (the hash is).
        weights_seed: the seed random weights were drawn from (``model.weights_seed``), for
            the reproduce commands; not compared on resume either.
        steps: optimisation steps per unit.
        size: image size in pixels.
        param: a registered parameterisation (:func:`~lucent_core.param.param_names`:
            ``"fourier"``, ``"pixel"``, ``"cppn"``, ...).
        decorrelate: decorrelated colour (all but the CPPN).
        transforms: ``"standard"`` (:func:`~lucent_core.transforms.standard_affine`, drawn per
            image) or ``"none"``.
        lr: Adam's learning rate.
        redirected_relu: Lucid's redirected ReLU gradient during the render.
        seed: the atlas's base seed; each unit's seed is derived from it.
        precision: ``"float32"``, or ``"bfloat16"`` / ``"float16"`` to run the model under
            ``torch.autocast`` (faster on GPUs with tensor cores; slightly different images).
        model_revision: the model definition's revision (``ModelConfig.revision``; 1 for
            models without a config), set by :func:`render_atlas`.

    Example:
        >>> AtlasSettings(model="tiny", weights_sha256="ab", steps=64).size
        128
    """

    model: str
    weights_sha256: str
    weights: str = "pretrained"
    steps: int = 512
    size: int = 128
    param: str = DEFAULT_PARAM
    decorrelate: bool = True
    transforms: str = "standard"
    lr: float = 0.05
    redirected_relu: bool = True
    seed: int = 0
    precision: str = "float32"
    model_revision: int = 1
    weights_seed: int | None = None

    def __post_init__(self) -> None:
        checked = {"steps": integer("steps", self.steps, minimum=1),
                   "size": integer("size", self.size, minimum=1),
                   "seed": seed("seed", self.seed),
                   "decorrelate": flag("decorrelate", self.decorrelate),
                   "redirected_relu": flag("redirected_relu", self.redirected_relu),
                   "param": choice("param", self.param, param_names()),
                   "transforms": choice("transforms", self.transforms, TRANSFORMS),
                   "precision": choice("precision", self.precision, PRECISIONS),
                   "lr": real("lr", self.lr, positive=True)}
        if self.weights_seed is not None:
            checked["weights_seed"] = seed("weights_seed", self.weights_seed)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def as_dict(self) -> dict:
        """All settings as a JSON-ready dict."""
        return asdict(self)

    def identity(self) -> dict:
        """The settings that must match to add to (or resume) an atlas: all but ``weights`` and
        ``weights_seed`` (the weights' hash is compared).

        The default precision (float32) and model revision (1) are left out, so that unit
        seeds, and atlases made before these settings existed, stay as they were.
        """
        defaults = {"precision": "float32", "model_revision": 1}
        return {k: v for k, v in self.as_dict().items()
                if k not in ("weights", "weights_seed") and not (k in defaults
                                                                and v == defaults[k])}

    @classmethod
    def from_dict(cls, data: dict) -> "AtlasSettings":
        """Inverse of :meth:`as_dict` (unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown atlas settings {unknown}; known: {sorted(known)}")
        return cls(**data)


def settings_of_record(record: dict) -> AtlasSettings:
    """The settings a unit record holds (its settings' keys, ``seed`` as ``atlas_seed``).

    Example:
        >>> s = AtlasSettings(model="tiny", weights_sha256="ab", steps=8)
        >>> settings_of_record({"unit": 3, **record_settings(s)}) == s
        True
    """
    names = [f.name for f in fields(AtlasSettings)]
    return AtlasSettings.from_dict({name: record[_record_key(name)] for name in names
                                    if _record_key(name) in record})


def record_settings(settings: AtlasSettings) -> dict:
    """The settings as every unit record holds them (``seed`` as ``atlas_seed``, since the
    record's ``seed`` is the unit's own)."""
    return {_record_key(k): v for k, v in settings.as_dict().items()}


def _record_key(name: str) -> str:
    return "atlas_seed" if name == "seed" else name


def unit_seed(settings: AtlasSettings, series: Series, unit: int) -> int:
    """The unit's own seed: a hash of the atlas settings, the series and the unit number.

    Example:
        >>> s = AtlasSettings(model="tiny", weights_sha256="ab")
        >>> unit_seed(s, Series("conv"), 3) == unit_seed(s, Series("conv"), 3)
        True
        >>> unit_seed(s, Series("conv"), 3) == unit_seed(s, Series("conv"), 4)
        False
    """
    return derived_seed(settings.identity(), series.identity(), int(unit))


@dataclass(frozen=True)
class Batch:
    """Units of one series optimised together in one render."""

    series: Series
    units: tuple[int, ...]


def plan_batches(work: Sequence[tuple[Series, Sequence[int]]], batch: int, worker: int = 0,
                 workers: int = 1) -> list[Batch]:
    """Cut each series' units into batches and keep every ``workers``-th one for ``worker``.

    The cut depends only on the requested units and ``batch``, never on what is already done,
    so every worker (rank, shard, or a later resume) agrees on who renders what.

    Example:
        >>> work = [(Series("conv"), range(10))]
        >>> [b.units for b in plan_batches(work, 4, worker=1, workers=2)]
        [(4, 5, 6, 7)]
    """
    batch = integer("batch", batch, minimum=1)
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} is not in 0..{workers - 1}")
    batches = [Batch(series, tuple(units[i:i + batch]))
               for series, units in ((s, list(u)) for s, u in work)
               for i in range(0, len(units), batch)]
    return batches[worker::workers]
