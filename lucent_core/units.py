"""Units: what one picture of an atlas, a dataset-example scan or a quality score is about.

A *series* is the units of one kind at one layer: the channels of a layer (``"channel"``), its
centre neurons (``"neuron"``) or the rows of a direction matrix (``"direction"``, dotted with
the channels). This module says, for every kind, what a unit's activation map is
(:func:`unit_maps`, :func:`layer_unit_maps`), its objective value (:func:`unit_values`), how
people and the command line name it (:class:`Series`), and which units a request selects
(:func:`parse_units`).

Example:
    >>> acts = torch.arange(8.).reshape(2, 4)
    >>> unit_values(acts, Series("fc"), torch.tensor([3, 0])).tolist()
    [3.0, 4.0]
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from lucent_core import validate
from lucent_core.validate import choice, index
from lucent_core.activations import run_layers
from lucent_core.hooks import token_major_layers
from lucent_core.preprocessing import Preprocessing

__all__ = ["ChannelUnits", "DirectionUnits", "NeuronUnits", "Series", "UNIT_KINDS", "UnitKind",
           "layer_shapes", "layer_unit_maps", "load_directions", "parse_units",
           "register_unit_kind", "select_units", "unit_maps", "unit_values"]

class UnitKind:
    """One kind of unit: what its activation map is, how its objective is named in Python and
    in records, and how the command line selects it. A new kind is a subclass plus one
    :func:`register_unit_kind` call.

    Attributes:
        name: the kind's name (``Series(layer, kind=name)``, records, ``series.json``).
        cli_flag: the command-line flag that selects it (None: the default kind).
        needs_directions: its series carries an ``(N, C)`` direction matrix (its command-line
            flag then takes the matrix's file).
        cli_help: the flag's help text.
    """

    name: str = ""
    cli_flag: str | None = None
    needs_directions: bool = False
    cli_help: str = ""

    def layer_maps(self, acts: torch.Tensor, series: "Series",
                   directions: torch.Tensor | None) -> torch.Tensor:
        """``(B, U, ...)``: the maps of every unit of the series for each image."""
        raise NotImplementedError

    def unit_maps(self, acts: torch.Tensor, series: "Series", units: torch.Tensor,
                  directions: torch.Tensor | None) -> torch.Tensor:
        """``(B, ...)``: image ``i``'s map of unit ``units[i]``."""
        rows = torch.arange(acts.shape[0], device=acts.device)
        return self.layer_maps(acts, series, directions)[rows, units]

    def check_layer(self, series: "Series", shape: tuple[int, ...]) -> None:
        """Refuse a layer (activation ``shape`` without the batch) the kind cannot read."""

    def dir_name(self, series: "Series") -> str:
        """The series' directory name inside an atlas."""
        return f"{_safe(series.layer)}--{self.name}"

    def objective_name(self, series: "Series", unit: int) -> str:
        """The readable objective of one unit, as the catalogue names it."""
        return f"{self.name}({series.layer!r}, {unit})"

    def python(self, series: "Series", unit: int) -> str:
        """A Python expression for the unit's objective (``import torch, lucent_core``)."""
        return f"lucent_core.objectives.{self.name}({series.layer!r}, {unit})"

    def command_words(self, series: "Series") -> list[str]:
        """The command-line words that select this kind (for reproduce commands)."""
        return [self.cli_flag] if self.cli_flag else []

    def fixed_position(self, acts: torch.Tensor) -> tuple[int, int] | None:
        """The one map position ``(y, x)`` every unit reads, or None (it varies)."""
        return None


class ChannelUnits(UnitKind):
    """A channel: its whole activation map (its value is the mean)."""

    name = "channel"

    def layer_maps(self, acts, series, directions):
        return acts

    def dir_name(self, series):
        return _safe(series.layer)


class NeuronUnits(UnitKind):
    """A channel at the centre position of a spatial layer."""

    name = "neuron"
    cli_flag = "--neuron"
    cli_help = "the centre neuron of each channel"

    def layer_maps(self, acts, series, directions):
        self.check_layer(series, tuple(acts.shape[1:]))
        centre = acts[:, :, acts.shape[2] // 2, acts.shape[3] // 2]
        return centre[:, :, None, None]

    def check_layer(self, series, shape):
        if len(shape) != 3:
            raise ValueError(f"neurons need a spatial layer; {series.layer!r} gives {shape}")

    def fixed_position(self, acts):
        return acts.shape[2] // 2, acts.shape[3] // 2


class DirectionUnits(UnitKind):
    """A row of a direction matrix, dotted with the channels at each position."""

    name = "direction"
    cli_flag = "--directions"
    needs_directions = True
    cli_help = ("the rows of an N x C matrix (.pt or .npy file) as directions in the layer's "
                "channel space (e.g. an SAE dictionary)")

    def layer_maps(self, acts, series, directions):
        rows = series.directions if directions is None else directions
        return torch.einsum("bc...,nc->bn...", acts, rows.to(device=acts.device,
                                                                  dtype=acts.dtype))

    def unit_maps(self, acts, series, units, directions):
        if directions is None:  # image i's own row: not one of the series' rows
            raise ValueError("a direction series needs directions=: each image's (B, C) row")
        v = directions.to(device=acts.device, dtype=acts.dtype)
        return (acts * v.reshape(*v.shape, *([1] * (acts.dim() - 2)))).sum(1)

    def check_layer(self, series, shape):
        validate.shape(f"directions for layer {series.layer!r}", series.directions, ("N", shape[0]))

    def dir_name(self, series):
        stem = Path(series.source).stem if series.source else series.directions_sha256[:12]
        return f"{_safe(series.layer)}--directions-{_safe(stem)}"

    def objective_name(self, series, unit):
        return f"direction({series.layer!r}, {series.source or 'directions'}[{unit}])"

    def python(self, series, unit):
        source = series.source or "directions.pt"
        return (f"lucent_core.objectives.direction({series.layer!r}, "
                f"lucent_core.units.load_directions({source!r})[{unit}])")

    def command_words(self, series):
        return [self.cli_flag, series.source or "DIRECTIONS.pt"]


#: The unit kinds by name, in the order they were registered.
UNIT_KINDS: dict[str, UnitKind] = {}


def register_unit_kind(kind: UnitKind) -> UnitKind:
    """Make ``kind`` available as ``Series(layer, kind.name)`` (and its ``cli_flag``).

    Example:
        >>> class Peak(UnitKind):  # a channel's strongest position
        ...     name = "peak_example"
        ...     def layer_maps(self, acts, series, directions):
        ...         return acts.amax((2, 3), keepdim=True)
        >>> _ = register_unit_kind(Peak())
        >>> Series("conv", "peak_example").dir
        'conv--peak_example'
    """
    if kind.name in UNIT_KINDS:
        raise ValueError(f"unit kind {kind.name!r} is already registered")
    UNIT_KINDS[kind.name] = kind
    return kind


for _kind in (ChannelUnits(), NeuronUnits(), DirectionUnits()):
    register_unit_kind(_kind)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"


@dataclass(frozen=True)
class Series:
    """One row of an atlas: the units of one kind at one layer.

    Attributes:
        layer: the layer's name.
        kind: a registered :class:`UnitKind`'s name: ``"channel"`` (mean of a channel),
            ``"neuron"`` (a channel at the centre position) or ``"direction"`` (a row of
            ``directions``, dotted with the channels).
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
        choice("series kind", self.kind, UNIT_KINDS)
        needs = self.unit_kind.needs_directions
        if needs != (self.directions is not None):
            raise ValueError(f"kind {self.kind!r} {'needs' if needs else 'takes no'} directions")
        if isinstance(self.directions, np.ndarray):
            object.__setattr__(self, "directions", torch.from_numpy(self.directions))
        if self.directions is not None and (not isinstance(self.directions, torch.Tensor)
                                            or self.directions.dim() != 2):
            shown = tuple(getattr(self.directions, "shape", ())) or type(self.directions).__name__
            raise ValueError(f"directions must be an N x C matrix (one row each), got {shown}")

    @property
    def unit_kind(self) -> UnitKind:
        """The :class:`UnitKind` this series' units are."""
        return UNIT_KINDS[self.kind]

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
        return self.unit_kind.dir_name(self)

    def identity(self) -> dict:
        """What must match to resume this series."""
        return {"layer": self.layer, "kind": self.kind, "directions_sha256": self.directions_sha256}

    def count(self, channels: int) -> int:
        """How many units the series has at a layer with ``channels`` channels."""
        return channels if self.directions is None else self.directions.shape[0]

    def check_layer(self, shape: tuple[int, ...]) -> None:
        """Refuse a layer (activation ``shape`` without the batch) its units cannot read."""
        self.unit_kind.check_layer(self, tuple(shape))

    def objective_name(self, unit: int) -> str:
        """The readable objective of one unit, as the catalogue names it."""
        return self.unit_kind.objective_name(self, unit)

    def python(self, unit: int) -> str:
        """A Python expression for the unit's objective (``import torch, lucent_core``)."""
        return self.unit_kind.python(self, unit)

    def command_words(self) -> list[str]:
        """The command-line words that select this series' kind (``--neuron``, ...)."""
        return self.unit_kind.command_words(self)


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
                chosen = range(count)[slice(*bits)]
                # past the end is a mistake, not "all": suggest the bounds clipped to the end
                fits = [b if b is None else max(-count, min(b, count)) for b in bits[:2]]
                shown = ":".join("" if b is None else str(b) for b in fits + bits[2:]) \
                    if range(count)[slice(*fits, *bits[2:])] else f"0:{count}"
                if not clip_ranges and fits != bits[:2]:
                    raise IndexError(f"units {part!r} reach past {count} units; use {shown}")
            else:
                unit = int(part)
                if not -count <= unit < count:
                    raise IndexError(f"unit {unit} is out of range: valid 0..{count - 1}")
                chosen = [unit % count]
        except (ValueError, TypeError):  # not numbers, a zero step, or more than 3 parts
            raise ValueError(f"cannot read units {text!r}; e.g. 0:64, 0:64:2 or 3,7,9") from None
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
        ValueError: units is an empty list; give unit numbers, a range like '0:64', or None
    """
    if units is None or isinstance(units, str):
        return parse_units(units, count, clip_ranges)
    units = [index("units", unit) for unit in units]
    if not units:
        raise ValueError("units is an empty list; give unit numbers, a range like '0:64', or None")
    return parse_units(",".join(map(str, units)), count)


def unit_maps(acts: torch.Tensor, series: Series, units: torch.Tensor,
              directions: torch.Tensor | None = None) -> torch.Tensor:
    """Each image's activation map of its own unit: image ``i``, unit ``units[i]``.

    A channel's map is its spatial activations; a direction's is the dot product of the
    direction with the activation vector at each position; a neuron's is the single centre
    position. Layers without spatial dimensions give ``(B,)`` maps.

    Args:
        acts: the layer's activations, ``(B, C, ...)``.
        series: says which kind of unit.
        units: ``(B,)`` unit numbers.
        directions: ``(B, C)`` rows, for a direction series.

    Returns:
        ``(B, ...)``: the spatial shape of ``acts`` (``(B, 1, 1)`` for neurons).

    Example:
        >>> acts = torch.arange(16.).reshape(2, 2, 2, 2)
        >>> unit_maps(acts, Series("conv"), torch.tensor([1, 0]))[0].tolist()
        [[4.0, 5.0], [6.0, 7.0]]
    """
    validate.shape("units", units, (acts.shape[0],))  # one per image
    return series.unit_kind.unit_maps(acts, series, units, directions)


def unit_values(acts: torch.Tensor, series: Series, units: torch.Tensor,
                directions: torch.Tensor | None = None) -> torch.Tensor:
    """Each image's objective value: image ``i`` scored on unit ``units[i]`` of the series.

    Equal to ``channel(layer, units[i], batch=i)`` (or ``neuron`` / ``direction``) for each
    ``i``, computed for the whole batch at once: the mean of :func:`unit_maps`.

    Returns:
        ``(B,)`` values.

    Example:
        >>> acts = torch.arange(8.).reshape(2, 4)
        >>> unit_values(acts, Series("fc"), torch.tensor([3, 0])).tolist()
        [3.0, 4.0]
    """
    maps = unit_maps(acts, series, units, directions)
    return maps.reshape(maps.shape[0], -1).mean(1)


def layer_unit_maps(acts: torch.Tensor, series: Series,
                    directions: torch.Tensor | None = None) -> torch.Tensor:
    """The activation maps of *every* unit of the series for each image.

    Args:
        acts: the layer's activations, ``(B, C, ...)``.
        series: says which kind of unit (a direction series uses ``directions``, or its own).
        directions: ``(N, C)`` direction rows (default: ``series.directions``).

    Returns:
        ``(B, U, ...)``: channels ``(B, C, ...)``, neurons ``(B, C, 1, 1)`` (the centre),
        directions ``(B, N, ...)``.

    Example:
        >>> acts = torch.ones(1, 3, 2, 2)
        >>> layer_unit_maps(acts, Series("conv", "neuron")).shape
        torch.Size([1, 3, 1, 1])
    """
    return series.unit_kind.layer_maps(acts, series, directions)


def layer_shapes(model: nn.Module, layers: Sequence[str], size: int,
                  preprocess: Preprocessing) -> dict[str, tuple[int, ...]]:
    """Each layer's activation shape (without batch) for one grey ``size`` x ``size`` image.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
        >>> layer_shapes(net, ["0"], 10, Preprocessing())
        {'0': (4, 8, 8)}
    """
    for layer in token_major_layers(model, layers):  # units would be tokens, not channels
        raise ValueError(f"layer {layer!r} is in a transformer block; for its channels use "
                         "lucent_core.recipes.clip.vit_channel")
    grey = torch.full((1, 3, size, size), 0.5)
    shapes = {}
    for layer, found in run_layers(model, grey, layers, preprocess).items():
        if not isinstance(found, torch.Tensor):
            raise ValueError(f"layer {layer!r} returns {type(found).__name__}, not a tensor")
        shapes[layer] = tuple(found.shape[1:])
    return shapes


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
        raise ValueError(f"directions file {path} must be .pt, .pth (torch.save) or .npy")
    try:
        matrix = (torch.from_numpy(np.load(path, allow_pickle=False)) if path.suffix == ".npy"
                  else torch.load(path, map_location="cpu", weights_only=True))
    except Exception as error:  # damaged, or pickled objects that weights_only refuses
        raise ValueError(f"cannot read the directions file {path} ({str(error).splitlines()[0]}); "
                         "save an N x C tensor with torch.save or numpy.save") from error
    if path.suffix != ".npy":
        if isinstance(matrix, dict):
            tensors = [v for v in matrix.values() if isinstance(v, torch.Tensor) and v.dim() == 2]
            if len(tensors) != 1:
                raise ValueError(f"{path} holds {len(tensors)} matrices ({list(matrix)}); save one")
            matrix = tensors[0]
    if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2:
        shape = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
        raise ValueError(f"{path} must hold an N x C matrix (one direction per row), got {shape}")
    return matrix.float()
