"""Figures for papers with their provenance: PNGs with a JSON side-car that holds what is
needed to reproduce every panel, on top of the drawing functions of :mod:`lucent_core.drawing`
(re-exported here, so ``lucent_core.figures`` has everything for a figure in one place).

* :func:`panel_record`: what a render knows about itself (objective, model and weights,
  parameterisation, seed, transforms, render settings, versions), as JSON-safe data.
* :func:`save_figure`: write the figure as a PNG and, next to it, the side-car.

Side-car format (``fig.json`` next to ``fig.png``, format ``"lucent_core.figure"``, version 1)::

    {
      "format": "lucent_core.figure", "format_version": 1,
      "image": "fig.png",                   # the PNG's file name, in the same directory
      "png_sha256": "...",                  # of the PNG file's bytes
      "size": {"width": 400, "height": 150},  # pixels
      "mode": "RGB" | "RGBA",
      "layout": {"rows": 1, "cols": 3, "cell": [h, w], "padding": 8, ...},  # null if unknown
      "versions": {"lucent_core": ..., "torch": ..., "numpy": ..., "pillow": ..., "python": ...},
      "created": "2026-01-01T12:00:00+00:00",
      "panels": [{"row": 0, "col": 0, "label": ..., "objective": ..., ...}, ...],
      "metadata": {...}                     # free-form keyword arguments of save_figure
    }

Each panel holds the keys :data:`PANEL_KEYS` (``None`` where unknown); see
:func:`panel_record`. Values are plain JSON: no NaN or infinity (they become ``null``).
"""

from __future__ import annotations

import datetime
import difflib
import json
import math
import os
import platform
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np
import PIL
import torch
from PIL import Image
from torch import nn

from lucent_core import validate
from lucent_core.validate import instance, integer, size_pair
from lucent_core.drawing import (DEFAULT_FONT_SIZE, INTERPOLATIONS, LAYOUT_INFO_KEY, FigureLayout,
                                 figure_grid, fourier_resample, render_at, save_high_res)
from lucent_core.hooks import registry_name
from lucent_core.io import ImageLike, sha256sum, to_numpy, to_pil, write_atomically
from lucent_core.models.weights import state_dict_sha256
from lucent_core.render import RenderResult, describe_transforms
from lucent_core.version import __version__

__all__ = ["DEFAULT_FONT_SIZE", "FIGURE_FORMAT", "FIGURE_FORMAT_VERSION", "FigureLayout",
           "INTERPOLATIONS", "PANEL_KEYS", "figure_grid", "fourier_resample", "panel_record",
           "render_at", "save_figure", "save_high_res"]

#: The side-car's ``"format"`` and ``"format_version"`` values.
FIGURE_FORMAT = "lucent_core.figure"
FIGURE_FORMAT_VERSION = 1
#: Every panel record of a side-car has these keys (``None`` where unknown).
PANEL_KEYS = ("row", "col", "label", "objective", "objective_value", "model", "weights_sha256",
              "param", "image_size", "batch_index", "steps", "thresholds", "interrupted",
              "seed", "transforms", "render", "versions", "extra")

PathLike = Union[str, os.PathLike]


def _versions() -> dict[str, str]:
    return {"lucent_core": __version__, "torch": torch.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__,
            "python": platform.python_version()}


def _json_safe(value: object, where: str) -> object:
    """``value`` as plain JSON types; NaN and infinities become None; an error for objects
    JSON cannot hold (naming where they are)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{where} is a tensor of shape {tuple(value.shape)}; use .tolist()")
        return _json_safe(value.item(), where)
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist(), where)
    if isinstance(value, (os.PathLike, torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has the key {key!r}; JSON keys must be strings")
            out[key] = _json_safe(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_json_safe(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{where} is a {type(value).__name__}, which JSON cannot hold")


def _describe_param(param: nn.Module, image_size: list[int] | None, batch: int | None
                    ) -> dict[str, object]:
    """What a panel record says about a parameterisation (its own ``describe()``)."""
    keys = ("class", "spatial", "kind", "size", "channels", "decay_power", "decorrelate",
            "color_mode")
    described = param.describe() if hasattr(param, "describe") else {
        "class": type(param).__name__, "size": image_size, "channels": 3}
    return {**{key: described.get(key) for key in keys}, "batch": batch}


def _recorded(result: RenderResult, key: str, given: object) -> object:
    """The render's own record of ``key``, or ``given`` where it has none (or recorded None,
    e.g. a render seeded globally rather than with ``seed=``); never both apart."""
    if result.settings.get(key) is None:
        return given
    recorded = result.settings[key]
    if given is not None and given != recorded:
        raise ValueError(f"{key}={given!r}, but the render recorded {recorded!r}; leave it out")
    return recorded


def panel_record(result: RenderResult, *, model: "nn.Module | str | None" = None,
                 label: str | None = None, seed: int | None = None, steps: int | None = None,
                 transforms: object = None, index: int | None = None, row: int | None = None,
                 col: int | None = None, **extra: object) -> dict[str, object]:
    """What a render knows about itself, as a JSON-safe panel record for :func:`save_figure`.

    Keys (:data:`PANEL_KEYS`): ``row``, ``col`` (filled in by :func:`save_figure` in
    row-major order when None), ``label``, ``objective`` (its readable name),
    ``objective_value`` (the last step's value), ``model`` (registry name, else class name,
    or the string given), ``weights_sha256`` (of the model's state dict, when a model is
    given), ``param`` (``class``, ``spatial``, ``kind``, ``size`` ``[h, w]``, ``batch``,
    ``channels``, ``decay_power`` (Fourier), ``decorrelate``, ``color_mode``), ``image_size``
    ``[h, w]`` of the rendered image, ``batch_index``, ``steps`` (the step the last image was
    taken at), ``thresholds``, ``interrupted``, ``seed`` and ``transforms`` (a one-line
    description), ``render`` (the optimiser, preprocessing, redirected ReLU, autocast,
    channels-last and compile settings), ``versions`` (lucent_core, torch, numpy, pillow,
    python), ``extra`` (the other keyword arguments). The seed, transforms and render
    settings come from the render itself (:attr:`RenderResult.settings`).

    Args:
        result: what :func:`~lucent_core.render_vis` returned.
        model: the model (its name and weights hash are recorded) or just its name.
        label: the panel's label.
        seed: the seed the render used; only needed for a result that does not record it
            (an error if it disagrees with the recorded one).
        steps: the number of steps (checked against the render's last threshold).
        transforms: the transforms used, as a string or objects described by their ``repr``;
            only needed for a result that does not record them (likewise checked).
        index: which image of the render's batch the panel shows.
        row, col: the panel's position in the figure.
        **extra: anything else (JSON-safe values).

    Returns:
        A dict of plain JSON values.

    Example:
        >>> from lucent_core import render_vis
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> result = render_vis(net, "0:1", thresholds=(2,), progress=False, seed=0)
        >>> record = panel_record(result, model=net, label="unit 1")
        >>> record["objective"], record["steps"], record["param"]["kind"], record["seed"]
        ("channel('0', 1)", 2, 'laplacian_pyramid', 0)
    """
    instance("result", result, RenderResult, "what render_vis returns")
    row = None if row is None else integer("row", row, minimum=0)
    col = None if col is None else integer("col", col, minimum=0)
    reached = result.thresholds[-1] if result.thresholds else None
    if steps is not None:
        steps = integer("steps", steps, minimum=1)
        if reached is not None and steps != reached:
            raise ValueError(f"steps={steps} but the render's last image is of step {reached}")
    if model is None or isinstance(model, str):
        model_name, weights = model, None
    elif isinstance(model, nn.Module):
        model_name = registry_name(model)
        weights = state_dict_sha256(model)
    else:
        raise TypeError(f"model must be an nn.Module, a name or None, got {type(model).__name__}")
    image_size = list(result.images[-1].shape[1:3]) if result.images else None
    batch = result.images[-1].shape[0] if result.images else None
    if index is not None and batch is not None:
        index = validate.index("index", index)
        if not 0 <= index < batch:
            raise IndexError(f"index {index} is out of range: valid 0..{batch - 1}")
    record = {
        "row": row, "col": col, "label": label, "objective": result.objective,
        "objective_value": result.history[-1] if result.history else None,
        "model": model_name, "weights_sha256": weights,
        "param": _describe_param(result.param, image_size, batch), "image_size": image_size,
        "batch_index": index, "steps": steps if steps is not None else reached,
        "thresholds": list(result.thresholds), "interrupted": bool(result.interrupted),
        "seed": _recorded(result, "seed", seed),
        "transforms": _recorded(result, "transforms", transforms if transforms is None or
                                isinstance(transforms, str) else describe_transforms(transforms)),
        "render": {key: value for key, value in result.settings.items()
                   if key not in ("seed", "transforms")} or None,
        "versions": _versions(), "extra": dict(extra)}
    return _json_safe(record, "panel")  # type: ignore[return-value]


def _layout_record(picture: Image.Image, given: dict[str, object]) -> dict[str, object] | None:
    recorded = picture.info.get(LAYOUT_INFO_KEY)
    layout = dict(recorded) if isinstance(recorded, dict) else {}
    for key, value in given.items():
        if value is None:
            continue
        value = list(size_pair("cell", value)) if key == "cell" else \
            integer(key, value, minimum=0 if key == "padding" else 1)
        if key in layout and layout[key] != value:
            raise ValueError(f"{key}={value!r} disagrees with the figure's {key}={layout[key]!r}")
        layout[key] = value
    if not layout:
        return None
    for key in ("rows", "cols", "cell", "padding"):
        layout.setdefault(key, None)
    if None not in layout.values():  # a grid that does not fit the picture was misdescribed
        needed = (layout["cols"] * layout["cell"][1] + (layout["cols"] + 1) * layout["padding"],
                  layout["rows"] * layout["cell"][0] + (layout["rows"] + 1) * layout["padding"])
        if needed[0] > picture.width or needed[1] > picture.height:
            raise ValueError(f"rows, cols, cell, padding need {needed} px; picture: {picture.size}")
    return layout


def _panels(panels: Sequence[Mapping[str, object]] | None, layout: dict[str, object] | None
            ) -> list[dict[str, object]]:
    if panels is None:
        return []
    if isinstance(panels, Mapping):
        raise TypeError("panels must be a list of panel records (one dict per panel)")
    rows = layout.get("rows") if layout else None
    cols = layout.get("cols") if layout else None
    out, seen = [], {}
    for i, panel in enumerate(panels):
        instance(f"panels[{i}]", panel, Mapping, "a dict")
        unknown = sorted(set(panel) - set(PANEL_KEYS), key=str)
        if unknown:
            close = [m for key in unknown
                     for m in difflib.get_close_matches(str(key), PANEL_KEYS, n=1)]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"panels[{i}] has unknown key(s) {unknown}{hint}; use 'extra'")
        record = {key: None for key in PANEL_KEYS}
        record.update(_json_safe(dict(panel), f"panels[{i}]"))  # type: ignore[arg-type]
        for key in ("row", "col"):
            if record[key] is not None:
                record[key] = integer(f"panels[{i}] {key}", record[key], minimum=0)
        if record["row"] is None and record["col"] is None:
            if cols is None:
                if len(panels) > 1:
                    raise ValueError(f"panels[{i}] has no position: give row/col, or rows=, cols=")
                record["row"], record["col"] = 0, 0
            else:
                record["row"], record["col"] = divmod(i, cols)
        elif record["row"] is None or record["col"] is None:
            raise ValueError(f"panels[{i}] has only one of row and col; give both or neither")
        position = (record["row"], record["col"])
        if None not in (rows, cols) and not (0 <= position[0] < rows and 0 <= position[1] < cols):
            raise ValueError(f"panels[{i}] at {position} is outside the {rows} x {cols} grid")
        if position in seen:
            raise ValueError(f"panels[{seen[position]}] and panels[{i}] are both at {position}")
        seen[position] = i
        out.append(record)
    return out


def save_figure(image: "Image.Image | ImageLike", path: PathLike,
                panels: Sequence[Mapping[str, object]] | None = None, *,
                rows: int | None = None, cols: int | None = None,
                cell: "int | tuple[int, int] | None" = None, padding: int | None = None,
                **metadata: object) -> Path:
    """Save a figure as a PNG with a JSON side-car (same name, ``.json``) that describes it.

    The PNG is written as it is (an RGBA figure stays RGBA, alpha not composited), then the
    side-car; each file appears atomically (written to a temporary name and renamed), so a
    side-car never exists without its complete PNG. Everything is checked before either file
    is written. The side-car's format is described in :mod:`lucent_core.figures`.

    Args:
        image: the figure: a PIL image (e.g. from :func:`figure_grid`, whose layout is
            recorded) or one image as an array/tensor.
        path: where to write the PNG (must end in ``.png``).
        panels: one record per panel (see :func:`panel_record`; plain dicts work too:
            missing :data:`PANEL_KEYS` become None). Panels without a position are placed
            in row-major order.
        rows, cols, cell, padding: the grid's layout, when not recorded by
            :func:`figure_grid` (given values must agree with a recorded layout).
        **metadata: free-form JSON-safe values, stored under ``"metadata"``.

    Returns:
        The PNG's path; the side-car is ``path.with_suffix(".json")``.

    Example:
        >>> import tempfile
        >>> grid = figure_grid([np.zeros((8, 8, 3))] * 2, rows=1, cols=2)
        >>> png = save_figure(grid, Path(tempfile.mkdtemp()) / "fig.png",
        ...                   panels=[{"label": "a"}, {"label": "b"}], caption="test")
        >>> record = json.loads(png.with_suffix(".json").read_text())
        >>> [(p["row"], p["col"], p["label"]) for p in record["panels"]], record["size"]
        ([(0, 0, 'a'), (0, 1, 'b')], {'width': 40, 'height': 24})
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    if isinstance(image, Image.Image):
        picture = image
    else:
        array = to_numpy(image)
        if array.shape[0] != 1:
            raise ValueError(f"image is a batch of {array.shape[0]}; arrange it with figure_grid")
        picture = to_pil(array)
    layout = _layout_record(picture, {"rows": rows, "cols": cols, "cell": cell,
                                      "padding": padding})
    record = {
        "format": FIGURE_FORMAT, "format_version": FIGURE_FORMAT_VERSION, "image": path.name,
        "png_sha256": None, "size": {"width": picture.width, "height": picture.height},
        "mode": picture.mode, "layout": _json_safe(layout, "layout"), "versions": _versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "panels": _panels(panels, layout), "metadata": _json_safe(metadata, "metadata")}
    json.dumps(record, allow_nan=False)  # any problem shows here, before a file is written
    write_atomically(path, lambda partial: picture.save(partial, format="PNG"))
    record["png_sha256"] = sha256sum(path)
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    write_atomically(path.with_suffix(".json"), lambda partial: partial.write_text(text))
    return path
