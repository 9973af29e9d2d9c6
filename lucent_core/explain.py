"""What the network sees in one photo: one static report of the Building Blocks analyses.

"The Building Blocks of Interpretability" (Olah et al., Distill 2018) explains a photo by
combining feature visualisation with the activations it causes: which positions and channels of
a layer matter for a target (attribution), which units fire where (the semantic dictionary),
what each position's whole activation vector looks for (the activation grid) and which units
fire together (neuron groups). :func:`explain_photo` runs the four recipes on one photo and
writes them as plain files with a static ``index.html`` (no server, relative links, every string
escaped), plus ``explain.json`` with the settings that reproduce it:

    DIR/index.html            the report
    DIR/photo.png             the photo as the model saw it
    DIR/attribution_*.png     attribution maps over the photo, one per method
    DIR/dictionary.png        the semantic dictionary (photo + top unit per position)
    DIR/units/<channel>.png   the feature visualisation of each unit the page shows
    DIR/activation_grid.png   one rendering per cell of the layer, on the photo's grid
    DIR/groups/*.png          each neuron group's rendering and where it fires
    DIR/explain.json          settings, target value, versions

The page is written last, so an interrupted run leaves no page that points at missing files.

Example:
    >>> from torch import nn
    >>> import tempfile, torch
    >>> net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.ReLU())
    >>> page = explain_photo(net, torch.rand(3, 24, 24), "1", tempfile.mkdtemp(), target="3:0",
    ...                      steps=2, size=16, image_size=None, progress=False)
    >>> page.name
    'index.html'
"""

from __future__ import annotations

import html
import os
import platform
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

import numpy as np
import torch
from PIL import Image
from torch import nn

from lucent_core.activations import ImageSource, load_image, run_layers
from lucent_core.hooks import OUTPUT_LAYER, list_layers, resolve_layer
from lucent_core.io import save_png, write_atomically
from lucent_core.recipes.activation_grid import activation_grid
from lucent_core.recipes.attribution import ATTRIBUTION_METHODS, attribution, attribution_overlay
from lucent_core.recipes.groups import groups_overlay, neuron_groups, render_groups
from lucent_core.recipes.semantic_dictionary import semantic_dictionary
from lucent_core.results import write_json
from lucent_core.validate import integer
from lucent_core.version import __version__

__all__ = ["default_target", "explain_photo"]

DICTIONARY_UNITS = 27  # unit pictures listed under the semantic dictionary (3 rows of 9)

CSS = """\
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fafafa; --muted: #6b6b70;
  --card: #ffffff; --line: #d9d9de; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e8e8ea; --bg: #161618; --muted: #a0a0a8; --card: #202024; --line: #3a3a40; }
}
body { margin: 0 auto; max-width: 1200px; padding: 1rem 1.25rem 3rem; color: var(--fg);
  background: var(--bg); font: 15px/1.45 system-ui, "DejaVu Sans", sans-serif; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: .4rem 1rem 1rem; margin: 1rem 0; }
.muted { color: var(--muted); }
.row { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; image-rendering: auto; border-radius: 4px; }
.big img { width: 320px; }
.units { display: grid; grid-template-columns: repeat(auto-fill, minmax(96px, 1fr)); gap: 8px; }
.units img { width: 100%; aspect-ratio: 1 / 1; }
figcaption { font-size: 12px; }
table { border-collapse: collapse; }
td, th { text-align: left; padding: .15rem .8rem .15rem 0; border-bottom: 1px solid var(--line); }
"""


def _spatial_layers(model: nn.Module, photo: torch.Tensor) -> list[str]:
    """The model's layers with a (C, H, W) output, in the order they run."""
    size = tuple(photo.shape[-3:])
    return [info.name for info in list_layers(model, size) if info.shape and len(info.shape) == 3]


def default_target(model: nn.Module, layer: str, photo: torch.Tensor) -> str:
    """The target a report explains when none is given: the top class of a classifier
    (``"labels:N"``), else the most active channel of the model's deepest spatial layer.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 5))
        >>> default_target(net, "0", torch.rand(1, 3, 4, 4)).startswith("labels:")
        True
    """
    output = run_layers(model, photo, [OUTPUT_LAYER])[OUTPUT_LAYER]
    if output.dim() == 2:
        return f"labels:{int(output[0].argmax())}"
    deepest = _spatial_layers(model, photo)[-1]
    acts = run_layers(model, photo, [deepest])[deepest]
    if resolve_layer(model, deepest) == resolve_layer(model, layer):
        raise ValueError(f"layer {layer!r} is the model's deepest: give a --target after it")
    return f"{deepest}:{int(acts[0].flatten(1).mean(1).argmax())}"


def _save(image: Image.Image | np.ndarray | torch.Tensor, path: Path) -> str:
    return save_png(image, path).name


def _link(*parts: str) -> str:
    return "/".join(quote(part) for part in parts)


def _figure(src: str, caption: str, classes: str = "") -> str:
    return (f'<figure class="{classes}"><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _units(out: Path, pictures: dict[int, Image.Image], channels: Sequence[int],
           captions: dict[int, str]) -> str:
    """Unit pictures (saved under ``units/``) as a grid of figures."""
    cells = []
    for channel in channels:
        if channel in pictures:
            _save(pictures[channel], out / "units" / f"{channel}.png")
            cells.append(_figure(_link("units", f"{channel}.png"), captions[channel]))
    return f'<div class="units">{"".join(cells)}</div>'


def explain_photo(model: nn.Module, image: ImageSource, layer: str, out: str | os.PathLike,
                  *, target: Any = None, steps: int = 256, size: int = 96,
                  image_size: int | None = 224, k: int = 4, groups: int = 4, grid: int = 8,
                  cell_size: int = 48, ig_steps: int = 32, atlas: str | os.PathLike | None = None,
                  seed: int = 0, progress: bool = True, command: str | None = None) -> Path:
    """Explain one photo at one layer and write ``out/index.html`` (see the module docstring).

    Args:
        model: the network (its ``preprocessing`` is applied).
        image: anything :func:`~lucent_core.activations.load_image` reads.
        layer: the layer explained (a spatial one, e.g. ``"block4_conv3"``).
        out: the report's directory (created; files of an earlier report are replaced).
        target: what the attribution explains (see
            :func:`~lucent_core.recipes.attribution.attribution`); default
            :func:`default_target`.
        steps: optimisation steps of every rendering (dictionary units, grid, groups).
        size: pixel size of unit and group renderings.
        image_size: the photo's size (its centre square, resized); None keeps it as it is.
        k: channels per position in the semantic dictionary.
        groups: number of neuron groups.
        grid: activation-grid cells per side at most.
        cell_size: pixel size of each activation-grid cell.
        ig_steps: integrated-gradients steps.
        atlas: a unit atlas to take unit pictures from (the rest are rendered).
        seed: seed of every rendering.
        progress: show progress bars.
        command: the command line that made the report, recorded in ``explain.json``.

    Returns:
        The path of ``index.html``.
    """
    out = Path(out)
    steps, size, groups = integer("steps", steps, 1), integer("size", size, 1), \
        integer("groups", groups, 1)
    photo = load_image(image, size=image_size)
    target = default_target(model, layer, photo) if target is None else target
    out.mkdir(parents=True, exist_ok=True)
    sections = [f"<h2>The photo</h2><div class=row>"
                f"{_figure(_save(photo[0], out / 'photo.png'), 'as the model saw it', 'big')}"]

    found = {method: attribution(model, photo, layer, target, method=method, steps=ig_steps)
             for method in ATTRIBUTION_METHODS}
    first = found[ATTRIBUTION_METHODS[0]]
    for method, result in found.items():
        sections[0] += _figure(_save(attribution_overlay(result, photo),
                                     out / f"attribution_{method}.png"),
                               f"attribution, {method.replace('_', ' ')}", "big")
    sections[0] += "</div>"

    dictionary = semantic_dictionary(model, photo, layer, k=k, atlas=atlas, steps=steps,
                                     size=size, seed=seed, progress=progress)
    top = first.top_channels(8)
    rows = "".join(f"<tr><td>{c}</td>" + "".join(f"<td>{float(found[m].channels[c]):.4g}</td>"
                                                   for m in ATTRIBUTION_METHODS) + "</tr>"
                   for c in top)
    integrated = found["integrated_gradients"]
    sections.append(
        f"<h2>Attribution to {html.escape(first.target)}</h2>"
        f"<p class=muted>Target on the photo: {first.target_value:.4g}. Integrated gradients "
        f"sum to {float(integrated.full.sum()):.4g} (the target minus its value on the "
        f"baseline: {first.target_value - integrated.baseline_value:.4g}). The channels that "
        f"contribute most:</p><table><tr><th>channel</th><th>activation x gradient</th>"
        f"<th>integrated gradients</th></tr>{rows}</table>"
        + _units(out, dictionary.pictures, top, {c: f"{layer}:{c}" for c in top}))

    counts = torch.bincount(dictionary.channels[..., 0].flatten(),
                            minlength=dictionary.activations.shape[0])
    leading = [int(c) for c in counts.argsort(descending=True) if counts[c] > 0]
    shown = leading[:DICTIONARY_UNITS]
    sections.append(
        f"<h2>Semantic dictionary</h2><p class=muted>The {k} strongest units at each position "
        f"of {html.escape(layer)}, each drawn by its feature visualisation, its area by its "
        f"activation. Below, the {len(shown)} units that come first at the most positions "
        f"(of {len(leading)} that come first somewhere), with how many they lead.</p>"
        + _figure(_save(dictionary.figure(photo[0]), out / "dictionary.png"), "semantic dictionary")
        + _units(out, dictionary.pictures, shown,
                 {c: f"{layer}:{c}, {int(counts[c])} positions" for c in shown}))

    cells = activation_grid(model, photo, layer, grid=grid, cell_size=cell_size, steps=steps,
                            seed=seed, progress=progress)
    sections.append("<h2>Activation grid</h2><p class=muted>Each cell renders that position's "
                    "whole activation vector (cosine-weighted direction).</p><div class=row>"
                    + _figure("photo.png", "the photo", "big")
                    + _figure(_save(cells.mosaic(), out / "activation_grid.png"),
                              "activation grid", "big") + "</div>")

    found_groups = neuron_groups(model, layer, photo, k=groups, seed=seed)
    rendered = render_groups(model, found_groups, steps=steps, size=size, seed=seed,
                             progress=progress).image
    maps = groups_overlay(found_groups)
    seen = photo[0].permute(1, 2, 0).numpy()
    figures = []
    for i in range(found_groups.k):
        figures.append(_figure(_link("groups", _save(rendered[i], out / "groups" / f"{i}.png")),
                               f"group {i}")
                       + _figure(_link("groups", _save(seen * (0.15 + 0.85 * maps[i, ..., None]),
                                                       out / "groups" / f"{i}_where.png")),
                                 f"where group {i} fires"))
    sections.append(f"<h2>Neuron groups</h2><p class=muted>{found_groups.k} groups of units "
                    f"that fire together (NMF; reconstruction error "
                    f"{found_groups.reconstruction_error:.3f}).</p>"
                    f"<div class=units>{''.join(figures)}</div>")

    settings = {"layer": layer, "target": str(first.target), "target_value": first.target_value,
                "steps": steps, "size": size, "image_size": image_size, "k": k, "groups": groups,
                "grid": grid, "cell_size": cell_size, "ig_steps": ig_steps, "seed": seed,
                "atlas": None if atlas is None else str(atlas), "command": command,
                "lucent_core": __version__, "torch": torch.__version__,
                "python": platform.python_version()}
    write_json(out / "explain.json", settings)
    title = f"What {html.escape(layer)} sees in this photo"
    page = (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{title}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<style>{CSS}</style></head><body><h1>{title}</h1>"
            f"<p class=muted>lucent_core {__version__}; settings in "
            f"<a href=explain.json>explain.json</a>.</p>"
            + "".join(f"<section>{s}</section>" for s in sections) + "</body></html>\n")
    return write_atomically(out / "index.html",
                            lambda temporary: temporary.write_text(page, encoding="utf-8"))
