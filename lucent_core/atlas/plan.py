"""What an atlas renders: its settings, the series of units, per-unit seeds and the work split.

An atlas is a set of *series* (the channels of a layer, its centre neurons, or the rows of a
direction matrix) rendered with one set of :class:`AtlasSettings`. Everything that changes a
picture is in the settings or the series, and each unit's seed is derived from them, so any
unit can be rendered again, alone or in any batch, and give the same picture.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lucent_core._validate import finite_real, flag, positive_int, random_seed

__all__ = ["ATLAS_FORMAT", "AtlasSettings", "KINDS", "PARAMS", "PRECISIONS", "Series",
           "TRANSFORMS", "Batch",
           "load_directions", "parse_units", "plan_batches", "select_units", "unit_seed"]

ATLAS_FORMAT = "lucent-core-atlas/1"
PARAMS = ("fourier", "pixel", "cppn")
TRANSFORMS = ("standard", "none")
#: Precisions of the model's forward pass (``torch.autocast`` dtypes; float32: no autocast).
PRECISIONS = ("float32", "bfloat16", "float16")
KINDS = ("channel", "neuron", "direction")


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
        param: ``"fourier"``, ``"pixel"`` or ``"cppn"``.
        decorrelate: decorrelated colour (Fourier and pixel).
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
    param: str = "fourier"
    decorrelate: bool = True
    transforms: str = "standard"
    lr: float = 0.05
    redirected_relu: bool = True
    seed: int = 0
    precision: str = "float32"
    model_revision: int = 1
    weights_seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "size"):
            object.__setattr__(self, name, positive_int(name, getattr(self, name)))
        object.__setattr__(self, "seed", random_seed("seed", self.seed))
        if self.weights_seed is not None:
            object.__setattr__(self, "weights_seed",
                               random_seed("weights_seed", self.weights_seed))
        for name in ("decorrelate", "redirected_relu"):
            object.__setattr__(self, name, flag(name, getattr(self, name)))
        if self.param not in PARAMS:
            raise ValueError(f"unknown param {self.param!r}; choose one of {PARAMS}")
        if self.transforms not in TRANSFORMS:
            raise ValueError(f"unknown transforms {self.transforms!r}; choose one of "
                             f"{TRANSFORMS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of "
                             f"{PRECISIONS}")
        object.__setattr__(self, "lr", finite_real("lr", self.lr, positive=True))

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


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"


@dataclass(frozen=True)
class Series:
    """One row of an atlas: the units of one kind at one layer.

    Attributes:
        layer: the layer's name.
        kind: ``"channel"`` (mean of a channel), ``"neuron"`` (a channel at the centre
            position) or ``"direction"`` (a row of ``directions``, dotted with the channels).
        directions: the ``(N, C)`` matrix for ``kind="direction"``.
        source: where the directions came from (a file name), for people.

    Example:
        >>> Series("mixed4a").dir, Series("mixed4a", "neuron").dir
        ('mixed4a', 'mixed4a--neuron')
    """

    layer: str
    kind: str = "channel"
    directions: torch.Tensor | None = field(default=None, compare=False, repr=False)
    source: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown series kind {self.kind!r}; choose one of {KINDS}")
        if (self.kind == "direction") != (self.directions is not None):
            raise ValueError("a 'direction' series needs directions (an N x C matrix), and only "
                             "it takes them")
        if isinstance(self.directions, np.ndarray):
            object.__setattr__(self, "directions", torch.from_numpy(self.directions))
        if self.directions is not None and (not isinstance(self.directions, torch.Tensor)
                                            or self.directions.dim() != 2):
            shown = tuple(getattr(self.directions, "shape", ())) or type(self.directions).__name__
            raise ValueError(f"directions must be an N x C matrix (one direction per row), got "
                             f"{shown}")

    def row_is_finite(self, unit: int) -> bool:
        """Whether unit ``unit``'s direction row is finite (always, for other kinds)."""
        return self.directions is None or bool(torch.isfinite(self.directions[unit]).all())

    @property
    def directions_sha256(self) -> str | None:
        """Hash of the direction matrix's float32 values (None for other kinds)."""
        if self.directions is None:
            return None
        values = self.directions.detach().cpu().float().contiguous().numpy()
        return hashlib.sha256(f"{values.shape}".encode() + values.tobytes()).hexdigest()

    @property
    def dir(self) -> str:
        """The series' directory name inside the atlas."""
        if self.kind == "channel":
            return _safe(self.layer)
        if self.kind == "neuron":
            return f"{_safe(self.layer)}--neuron"
        stem = Path(self.source).stem if self.source else self.directions_sha256[:12]
        return f"{_safe(self.layer)}--directions-{_safe(stem)}"

    def identity(self) -> dict:
        """What must match to resume this series."""
        return {"layer": self.layer, "kind": self.kind, "directions_sha256": self.directions_sha256}

    def count(self, channels: int) -> int:
        """How many units the series has at a layer with ``channels`` channels."""
        return channels if self.directions is None else self.directions.shape[0]

    def objective_name(self, unit: int) -> str:
        """The readable objective of one unit, as the catalogue names it."""
        if self.kind == "direction":
            return f"direction({self.layer!r}, {self.source or 'directions'}[{unit}])"
        return f"{self.kind}({self.layer!r}, {unit})"

    def python(self, unit: int) -> str:
        """A Python expression for the unit's objective (``import torch, lucent_core``)."""
        if self.kind == "direction":
            source = self.source or "directions.pt"
            return (f"lucent_core.objectives.direction({self.layer!r}, "
                    f"lucent_core.atlas.load_directions({source!r})[{unit}])")
        return f"lucent_core.objectives.{self.kind}({self.layer!r}, {unit})"


def unit_seed(settings: AtlasSettings, series: Series, unit: int) -> int:
    """The unit's own seed: a hash of the atlas settings, the series and the unit number.

    Example:
        >>> s = AtlasSettings(model="tiny", weights_sha256="ab")
        >>> unit_seed(s, Series("conv"), 3) == unit_seed(s, Series("conv"), 3)
        True
        >>> unit_seed(s, Series("conv"), 3) == unit_seed(s, Series("conv"), 4)
        False
    """
    key = json.dumps([settings.identity(), series.identity(), int(unit)], sort_keys=True)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def parse_units(text: str | None, count: int, clip_ranges: bool = False) -> list[int]:
    """Unit numbers from ``"0:508"``, ``"0:64:2"``, ``"3,7,9"``, ``"0:10,20"`` or None (all).

    Python slice rules (end excluded, negative numbers count from the end), except that a
    start or stop past the series' end is an error (with ``clip_ranges``, clipped as Python
    does: one ``--units`` for layers of different widths); duplicates are dropped, order is
    kept.

    Example:
        >>> parse_units("0:4,10,-1", 12)
        [0, 1, 2, 3, 10, 11]
    """
    if text is None or text.strip() in ("", "all", ":"):
        return list(range(count))
    units: dict[int, None] = {}
    for part in text.split(","):
        part = part.strip()
        try:
            if ":" in part:
                bits = [int(b) if b.strip() else None for b in part.split(":")]
                if len(bits) > 3:
                    raise ValueError
                for bound in bits[:2]:  # a start or stop past the end is a mistake, not "all"
                    if not clip_ranges and bound is not None and not -count <= bound <= count:
                        raise IndexError(f"units {part!r} reach past the series' {count} units "
                                         f"(0..{count - 1}); use 0:{count}, or ':' for all")
                chosen = range(count)[slice(*bits)]
            else:
                unit = int(part)
                if not -count <= unit < count:
                    raise IndexError(f"unit {unit} is out of range: the series has {count} "
                                     f"units (0..{count - 1})")
                chosen = [unit % count]
        except ValueError:
            raise ValueError(f"cannot read units {text!r}: use start:stop[:step], numbers, or "
                             "a comma-separated mix, e.g. 0:64 or 3,7,9") from None
        units.update(dict.fromkeys(chosen))
    if not units:
        raise ValueError(f"units {text!r} selects nothing from {count} units (0..{count - 1})")
    return list(units)


def select_units(units: "str | Sequence[int] | None", count: int, clip_ranges: bool = False
                 ) -> list[int]:
    """:func:`parse_units` for what users pass: a string, None (all), or unit numbers.

    Example:
        >>> select_units([3, 1], 8), select_units("6:", 8)
        ([3, 1], [6, 7])
        >>> select_units([], 8)
        Traceback (most recent call last):
        ...
        ValueError: units is an empty list; give unit numbers, a range like '0:64', or None for all
    """
    if units is None or isinstance(units, str):
        return parse_units(units, count, clip_ranges)
    units = list(units)
    if not units:
        raise ValueError("units is an empty list; give unit numbers, a range like '0:64', or "
                         "None for all")
    for unit in units:
        if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)):
            raise ValueError(f"units must be integers (or a string like '0:64'), got {unit!r}")
    return parse_units(",".join(str(int(u)) for u in units), count)


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
    if batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch}")
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} is not in 0..{workers - 1}")
    batches = [Batch(series, tuple(units[i:i + batch]))
               for series, units in ((s, list(u)) for s, u in work)
               for i in range(0, len(units), batch)]
    return batches[worker::workers]


def load_directions(path: str | os.PathLike) -> torch.Tensor:
    """Read an ``(N, C)`` direction matrix from ``.pt``/``.pth`` (a tensor) or ``.npy``.

    A ``.pt`` file may also hold a dict with exactly one matrix (e.g. a sparse autoencoder's
    decoder weights saved alone).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "dirs.npy"
        >>> np.save(path, np.eye(3))
        >>> load_directions(path).shape
        torch.Size([3, 3])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"directions file {path} does not exist")
    if path.suffix not in (".npy", ".pt", ".pth"):
        raise ValueError(f"directions file {path}: unknown type {path.suffix!r}; use .pt, .pth "
                         "(torch.save of a tensor) or .npy")
    try:
        matrix = (torch.from_numpy(np.load(path, allow_pickle=False)) if path.suffix == ".npy"
                  else torch.load(path, map_location="cpu", weights_only=True))
    except Exception as error:  # damaged, or pickled objects that weights_only refuses
        raise ValueError(f"cannot read the directions file {path} ({type(error).__name__}: "
                         f"{str(error).splitlines()[0]}); save a plain N x C tensor with "
                         "torch.save, or an array with numpy.save") from error
    if path.suffix != ".npy":
        if isinstance(matrix, dict):
            tensors = [v for v in matrix.values() if isinstance(v, torch.Tensor) and v.dim() == 2]
            if len(tensors) != 1:
                raise ValueError(f"{path} holds a dict with {len(tensors)} matrices "
                                 f"(keys {sorted(matrix)}); save the one N x C tensor alone")
            matrix = tensors[0]
    if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2:
        shape = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
        raise ValueError(f"{path} must hold an N x C matrix (one direction per row), got {shape}")
    return matrix.float()
