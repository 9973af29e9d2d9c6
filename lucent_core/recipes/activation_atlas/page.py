"""Assembling an activation atlas: the mosaic, each cell's dataset patches, a static page.

Step (5) of an activation atlas (Carter et al., Distill 2019). Once every cell of the plan is
rendered (:mod:`.render`), :func:`assemble` writes, into the plan's directory:

- ``activation_atlas.png``: the renderings on the ``N x N`` grid at their (row, column), row 0
  at the top, empty cells transparent;
- ``patches/<cell index>.png``: per cell, a strip of the dataset patches of its vectors nearest
  its average (the image region each vector's position sees: its receptive field, measured by
  :func:`~.render.render_cells` into ``receptive_field.json``);
- ``index.html``: the whole atlas as a grid of cells, zoomable with a slider; clicking a cell
  opens a panel with its rendering, its vector count, its top classes (classifiers) and its
  patches. One self-contained file: CSS and the slider's few lines of script are inline, every
  link is relative and percent-encoded and every string HTML-escaped, so it works from disk
  (``file://``) and after the folder is moved. The panels open with the CSS ``:target``
  selector, so they need no script at all.
"""

from __future__ import annotations

import html
import os
import warnings
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from lucent_core.image_folder import load_square
from lucent_core.io import save_png, write_atomically
from lucent_core.receptive_field import ReceptiveField
from lucent_core.results import AtlasError, read_json
from lucent_core.validate import integer
from lucent_core.recipes.activation_atlas.cells import Cells, cell_done, plan_dir, read_cells

__all__ = ["PATCH_PX", "assemble"]

PATCH_PX = 64        # side of one dataset patch in a cell's strip
_PATCH_GAP = 2
_PAGE_WIDTH = 960    # the atlas's initial width on the page, in CSS pixels

CSS = """\
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fafafa; --muted: #6b6b70;
  --card: #ffffff; --line: #d9d9de; --accent: #0b5cad; --empty: #ececf0; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e8e8ea; --bg: #161618; --muted: #a0a0a8; --card: #202024; --line: #3a3a40;
    --accent: #7ab4f5; --empty: #26262b; }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 1rem 1.25rem 3rem; color: var(--fg); background: var(--bg);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  overflow-wrap: anywhere; }
a { color: var(--accent); }
h1 { font-size: 1.4rem; margin: .3rem 0 .4rem; }
h2 { font-size: 1.1rem; margin: 0 0 .4rem; }
h3 { font-size: .95rem; margin: .8rem 0 .3rem; }
.muted { color: var(--muted); }
.controls { display: flex; flex-wrap: wrap; gap: .5rem 1.2rem; align-items: center;
  margin: .6rem 0 1rem; }
.scroll { overflow: auto; max-width: 100%; }
.atlas { display: grid; grid-template-columns: repeat(var(--grid), var(--cell));
  grid-template-rows: repeat(var(--grid), var(--cell)); background: var(--empty);
  width: max-content; }
.cell { display: block; width: var(--cell); height: var(--cell); }
.cell img { display: block; width: 100%; height: 100%; }
.cell:hover, .cell:focus { outline: 2px solid var(--accent); outline-offset: -2px;
  position: relative; }
.panel { display: none; position: fixed; top: 1rem; right: 1rem; width: min(440px, 92vw);
  max-height: calc(100vh - 2rem); overflow: auto; background: var(--card);
  border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem 1rem;
  box-shadow: 0 6px 24px rgba(0, 0, 0, .25); }
.panel:target { display: block; }
.panel .close { float: right; text-decoration: none; font-size: 1.4rem; line-height: 1; }
.panel img.rendering { display: block; width: 100%; height: auto; border-radius: 4px; }
.panel img.patches { display: block; max-width: 100%; height: auto; }
.panel ol, .panel ul { margin: .2rem 0; padding-left: 1.4rem; }
.sources { font-size: 12px; color: var(--muted); }
"""

SCRIPT = """\
const zoom = document.getElementById("zoom");
const atlas = document.getElementById("atlas");
const shown = document.getElementById("zoom-value");
zoom.addEventListener("input", () => {
  atlas.style.setProperty("--cell", zoom.value + "px");
  shown.textContent = zoom.value + " px";
});
"""


def _e(text: object) -> str:
    """HTML-escaped ``str`` of any value (quotes too: safe inside attributes)."""
    return html.escape(str(text), quote=True)


def _href(path: str) -> str:
    """A relative path as an escaped, percent-encoded URL."""
    return _e(quote(path, safe="/", errors="surrogateescape"))


def _field(root: Path, collected: dict) -> ReceptiveField:
    """The receptive field the patches are cropped with: as measured, or else (without
    ``receptive_field.json``) a box twice a map step wide centred on the position."""
    size = int(collected["image_size"])
    path = root / "receptive_field.json"
    if path.is_file():
        found = read_json(path)
        if found.get("image_size") == size:
            return ReceptiveField((size, size), found["map_size"] and tuple(found["map_size"]),
                                  tuple(found["stride"]), tuple(found["offset"]),
                                  tuple(found["extent"]))
    if not collected.get("map_size"):
        return ReceptiveField((size, size), None)
    rows, cols = collected["map_size"]
    stride = (size / rows, size / cols)
    return ReceptiveField((size, size), (rows, cols), stride,
                          (-stride[0] / 2, -stride[1] / 2), (2 * stride[0], 2 * stride[1]))


def _strip(crops: list[np.ndarray | None]) -> np.ndarray:
    """Patches side by side, each fitted into a ``PATCH_PX`` square; RGBA, gaps transparent."""
    count = max(len(crops), 1)
    canvas = Image.new("RGBA", (count * PATCH_PX + (count - 1) * _PATCH_GAP, PATCH_PX))
    for i, crop in enumerate(crops):
        if crop is None or crop.size == 0:
            continue
        picture = Image.fromarray(crop)
        scale = PATCH_PX / max(picture.size)
        fitted = picture.resize((max(1, round(picture.width * scale)),
                                 max(1, round(picture.height * scale))),
                                Image.Resampling.LANCZOS)
        canvas.paste(fitted, (i * (PATCH_PX + _PATCH_GAP) + (PATCH_PX - fitted.width) // 2,
                              (PATCH_PX - fitted.height) // 2))
    return np.asarray(canvas)


def _patches(root: Path, directory: Path, cells: Cells, collected: dict) -> list[list[str]]:
    """Write ``patches/<i>.png`` for every cell; return each cell's patch sources (text)."""
    folder, size = Path(collected["images"]), int(collected["image_size"])
    files = read_json(root / "files.json")
    origins = np.load(root / "origins.npy", mmap_mode="r")
    field = _field(root, collected)
    wanted: dict[int, list[tuple[int, int, int, int]]] = {}   # file -> (cell, slot, y, x)
    sources: list[list[str]] = []
    for i, rows in enumerate(cells.nearest):
        sources.append([])
        for slot, row in enumerate(rows):
            number, y, x = (int(v) for v in origins[row])
            wanted.setdefault(number, []).append((i, slot, y, x))
            sources[i].append(f"{files[number]} (y {y}, x {x})")
    crops: list[list[np.ndarray | None]] = [[None] * len(rows) for rows in cells.nearest]
    unreadable = []
    for number in sorted(wanted):
        try:
            pixels = load_square(folder / files[number], size)
        except Exception as error:  # a file moved or damaged since: its patches stay blank
            unreadable.append(f"{files[number]} ({type(error).__name__})")
            continue
        for i, slot, y, x in wanted[number]:
            top, left, bottom, right = field.box(y, x)
            crops[i][slot] = pixels[top:bottom, left:right]
    if unreadable:
        warnings.warn(f"{len(unreadable)} images of {folder} could not be read, their patches "
                      f"are left blank: {', '.join(unreadable[:5])}", stacklevel=3)
    for i, cell_crops in enumerate(crops):
        save_png(_strip(cell_crops), directory / "patches" / f"{i}.png")
    return sources


def _mosaic(directory: Path, cells: Cells, cell_px: int) -> Path:
    canvas = Image.new("RGBA", (cells.grid * cell_px, cells.grid * cell_px))
    for name, row, col in zip(cells.names(), cells.rows.tolist(), cells.cols.tolist()):
        with Image.open(directory / "cells" / f"{name}.png") as opened:
            picture = opened.convert("RGBA")
        if picture.size != (cell_px, cell_px):
            picture = picture.resize((cell_px, cell_px), Image.Resampling.LANCZOS)
        canvas.paste(picture, (col * cell_px, row * cell_px))
    return save_png(np.asarray(canvas), directory / "activation_atlas.png")


def _panel(i: int, cells: Cells, name: str, sources: list[str]) -> str:
    row, col = int(cells.rows[i]), int(cells.cols[i])
    count = int(cells.counts[i])
    classes = ""
    if cells.top_classes[i]:
        items = "".join(f'<li>class {_e(k)} <span class="muted">{float(v):.4g}</span></li>'
                        for k, v in cells.top_classes[i])
        classes = f"<h3>Top classes</h3>\n<ol>{items}</ol>\n"
    listed = "".join(f"<li>{_e(source)}</li>" for source in sources)
    return (f'<section class="panel" id="cell-{i}" aria-label="cell {i}">\n'
            f'<a class="close" href="#" title="close">&times;</a>\n'
            f"<h2>Row {row}, column {col}</h2>\n"
            f'<img class="rendering" src="{_href(f"cells/{name}.png")}" '
            f'alt="rendering of cell {i}">\n'
            f'<p>{count} vector{"s" * (count != 1)} <span class="muted">(cell {i})</span></p>\n'
            f"{classes}<h3>Nearest dataset patches</h3>\n"
            f'<img class="patches" src="{_href(f"patches/{i}.png")}" '
            f'alt="dataset patches nearest cell {i}">\n'
            f'<ol class="sources">{listed}</ol>\n</section>')


def _page(cells: Cells, collected: dict, cell_px: int, sources: list[list[str]]) -> str:
    title = f"{collected.get('model', 'model')} {collected.get('layer', '')} activation atlas"
    shown = max(4, min(cell_px, _PAGE_WIDTH // cells.grid))
    names = cells.names()
    links = "\n".join(
        f'<a class="cell" href="#cell-{i}" style="grid-row: {r + 1}; grid-column: {c + 1}" '
        f'title="row {r}, column {c}: {n} vectors"><img src="{_href(f"cells/{name}.png")}" '
        f'alt="cell {i}" loading="lazy"></a>'
        for i, (name, r, c, n) in enumerate(zip(names, cells.rows.tolist(),
                                                cells.cols.tolist(), cells.counts.tolist())))
    panels = "\n".join(_panel(i, cells, names[i], sources[i]) for i in range(len(cells)))
    facts = (f"{len(cells)} cells on a {cells.grid} &times; {cells.grid} grid, each the average "
             f"of at least {cells.min_count} of {_e(collected.get('count', '?'))} activation "
             f"vectors from {_e(collected.get('files', '?'))} images")
    layout = cells.settings.get("layout", {}).get("method")
    if layout:
        facts += f"; layout {_e(layout)}"
    if cells.settings.get("class_index") is not None:
        facts += f"; vectors supporting class {_e(cells.settings['class_index'])} only"
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{_e(title)}</h1>\n<p class=\"muted\">{facts}. Click a cell for its "
            f"details.</p>\n"
            f'<div class="controls"><label for="zoom">Zoom</label>'
            f'<input type="range" id="zoom" min="4" max="{max(2 * cell_px, shown)}" '
            f'value="{shown}"><span id="zoom-value">{shown} px</span>'
            f'<a href="{_href("activation_atlas.png")}">activation_atlas.png</a>'
            f'<a href="{_href("cells.json")}">cells.json</a></div>\n'
            f'<div class="scroll"><div class="atlas" id="atlas" '
            f'style="--grid: {cells.grid}; --cell: {shown}px">\n{links}\n</div></div>\n'
            f"{panels}\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n")


def assemble(out: "str | os.PathLike", *, cell_px: int | None = None,
             subdir: str | None = None) -> Path:
    """Build ``activation_atlas.png``, ``patches/`` and ``index.html`` of a rendered atlas.

    Args:
        out: the atlas directory.
        cell_px: side of one cell in ``activation_atlas.png`` (default: the renderings' size).
        subdir: the plan's folder under ``out`` (a class atlas's ``"class_<N>"``).

    Returns:
        The path of ``index.html``.

    Raises:
        AtlasError: when cells are not rendered yet (saying how many).

    Example:
        >>> assemble("no-such-atlas")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no cells.json in no-such-atlas: run plan_cells first
    """
    if cell_px is not None:
        cell_px = integer("cell_px", cell_px, minimum=1)
    root, directory = Path(out), plan_dir(out, subdir)
    cells = read_cells(out, subdir)
    names = cells.names()
    missing = [name for name in names if not cell_done(directory, name)]
    if missing:
        raise AtlasError(f"{len(missing)} of {len(cells)} cells of {directory} are not rendered "
                         f"yet (e.g. {missing[0]}): run render_cells (every shard) first")
    if cell_px is None:
        with Image.open(directory / "cells" / f"{names[0]}.png") as first:
            cell_px = first.width
    collected = read_json(root / "collect.json")
    _mosaic(directory, cells, cell_px)
    sources = _patches(root, directory, cells, collected)
    text = _page(cells, collected, cell_px, sources)
    return write_atomically(directory / "index.html",
                            lambda tmp: tmp.write_text(text, encoding="utf-8"))
