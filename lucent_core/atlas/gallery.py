"""A static HTML gallery for an atlas: overview -> one page per series -> one page per unit.

The gallery is plain files next to the atlas's images: ``index.html``, ``gallery.css``,
``gallery.js`` (copy buttons and arrow-key paging, optional), ``<series dir>/index.html`` and
``<series dir>/units/<stem>.html`` beside each unit's ``<stem>.png``. Every link is relative and
percent-encoded, so the tree works from disk (``file://``, no server) and after it is moved.
Every string from the manifest is HTML-escaped. The gallery never opens an image: thumbnails
are the unit PNGs scaled by CSS and loaded lazily, so a layer of thousands of units costs only
the text of its pages.

Manifest paths (``image``, ``grid``, ``examples[].image``, the ``weights`` of connections) are
relative to the atlas root and use ``/``; see :func:`write_gallery` for the fields read.
"""

from __future__ import annotations

import html
import json
import math
import os
import posixpath
import re
from pathlib import Path, PurePosixPath
from typing import Any, Union
from urllib.parse import quote

from lucent_core.atlas.plan import ATLAS_FORMAT
from lucent_core.io import write_atomically
from lucent_core.results import AtlasError
from lucent_core.validate import instance

__all__ = ["write_gallery"]

INDEX_THUMBNAILS = 8       # thumbnails per series on the overview page
SPARK_WIDTH, SPARK_HEIGHT = 240, 56

CSS = """\
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fafafa; --muted: #6b6b70;
  --card: #ffffff; --line: #d9d9de; --accent: #0b5cad; --code: #f1f1f4; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e8e8ea; --bg: #161618; --muted: #a0a0a8; --card: #202024; --line: #3a3a40;
    --accent: #7ab4f5; --code: #2a2a30; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1400px; padding: 1rem 1.25rem 3rem; color: var(--fg);
  background: var(--bg); font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto,
  "DejaVu Sans", sans-serif; overflow-wrap: anywhere; }
a { color: var(--accent); }
h1 { font-size: 1.5rem; margin: .4rem 0 .6rem; }
h2 { font-size: 1.15rem; margin: 1.4rem 0 .5rem; }
h3 { font-size: 1rem; margin: .8rem 0 .3rem; }
.muted, .empty { color: var(--muted); }
h1 .muted { font-size: .6em; font-weight: normal; }
nav { display: flex; flex-wrap: wrap; gap: .4rem 1rem; align-items: baseline; margin: .3rem 0; }
nav .disabled { color: var(--muted); }
code, pre { font: 13px/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
table { border-collapse: collapse; margin: .3rem 0; }
th, td { text-align: left; vertical-align: top; padding: .2rem .7rem .2rem 0;
  border-bottom: 1px solid var(--line); }
th { font-weight: 600; white-space: nowrap; }
td code { white-space: pre-wrap; }
.series { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: .6rem 1rem 1rem; margin: 1rem 0; }
.series h2 { margin-top: .3rem; }
.strip { display: flex; flex-wrap: wrap; gap: 6px; margin: .5rem 0; }
.strip img { width: 96px; height: 96px; object-fit: contain; background: var(--code);
  border-radius: 4px; display: block; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(112px, 1fr));
  gap: 8px; margin: 1rem 0; }
.grid figure, .examples figure { margin: 0; }
.grid a { text-decoration: none; color: inherit; display: block; }
.grid img { width: 100%; aspect-ratio: 1 / 1; object-fit: contain; display: block;
  background: var(--code); border-radius: 4px; }
.grid a:hover img, .grid a:focus img { outline: 2px solid var(--accent); }
figcaption { font-size: 12px; display: flex; justify-content: space-between; gap: .3rem; }
figcaption .act { color: var(--muted); }
.unit-main { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
.rendering { margin: 0; }
.rendering img { display: block; width: 384px; max-width: 100%; height: auto;
  border-radius: 4px; }
.examples { flex: 1 1 300px; }
.examples h2 { margin-top: 0; }
.examples .strip img { width: 128px; height: 128px; }
.examples figcaption { flex-direction: column; max-width: 128px; }
svg.spark { background: var(--card); border: 1px solid var(--line); border-radius: 4px; }
svg.spark polyline { fill: none; stroke: var(--accent); stroke-width: 1.5; }
svg.spark circle { fill: var(--accent); }
svg.spark text { fill: var(--muted); font: 10px ui-monospace, "DejaVu Sans Mono", monospace; }
.code { position: relative; }
.code pre { background: var(--code); padding: .6rem 4.5rem .6rem .7rem; border-radius: 6px;
  white-space: pre-wrap; margin: 0; }
.code button { position: absolute; top: .35rem; right: .35rem; font-size: 12px; }
.connections .row { display: flex; gap: .8rem; align-items: flex-start; margin: .3rem 0; }
.connections .sign { width: 6.5rem; flex: none; padding-top: .3rem; color: var(--muted); }
.connections .strip { margin: 0; gap: 10px; }
figure.connection { margin: 0; display: grid; grid-template-columns: 72px 40px; gap: 3px;
  align-items: end; }
figure.connection .unit-thumb { width: 72px; height: 72px; object-fit: contain; display: grid;
  place-items: center; background: var(--code); border-radius: 4px; font-size: 11px;
  text-align: center; color: var(--muted); }
figure.connection a:hover .unit-thumb { outline: 2px solid var(--accent); }
figure.connection img.weights { width: 40px; height: 40px; image-rendering: pixelated;
  border: 1px solid var(--line); }
figure.connection figcaption { grid-column: 1 / 3; white-space: nowrap; font-size: 11px; }
"""

JS = """\
// Copy buttons on unit pages, and left/right arrow keys for the prev/next links.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const code = document.getElementById(button.dataset.target);
  try {
    await navigator.clipboard.writeText(code.textContent);
    button.textContent = "Copied";
  } catch (error) {  // no clipboard access (e.g. some file:// setups): select for Ctrl+C
    const range = document.createRange();
    range.selectNodeContents(code);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
});
document.addEventListener("keydown", (event) => {
  if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
  const rel = {ArrowLeft: "prev", ArrowRight: "next"}[event.key];
  const link = rel && document.querySelector('nav a[rel="' + rel + '"]');
  if (link) window.location.href = link.href;
});
"""


# --- small helpers ------------------------------------------------------------------------

def _e(text: Any) -> str:
    """HTML-escape any value's ``str`` (also quotes, so it is safe inside attributes)."""
    return html.escape(str(text), quote=True)


def _url(target: str, start: str) -> str:
    """Escaped relative URL of root-relative ``target`` from a page in root-relative ``start``."""
    parts = posixpath.normpath(target).split("/")
    here = start.split("/") if start else []   # a checked series dir: no '', '.' or '..'
    common = 0
    while common < min(len(parts), len(here)) and parts[common] == here[common]:
        common += 1
    relative = "/".join([".."] * (len(here) - common) + parts[common:]) or "."
    return _e(quote(relative, safe="/", errors="surrogateescape"))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def _show(value: Any) -> str:
    """A record value as readable text: strings as they are, everything else as compact JSON."""
    return value if isinstance(value, str) else _json(value)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    return f"{value:.4g}"


def _page(title: str, here: str, body: str, head: str = "") -> str:
    """A complete HTML5 page in directory ``here`` (relative to the atlas ``root``)."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n"
            f'<link rel="stylesheet" href="{_url("gallery.css", here)}">\n'
            f'<script src="{_url("gallery.js", here)}" defer></script>\n{head}'
            f"</head>\n<body>\n{body}\n</body>\n</html>\n")


def _write(path: Path, text: str) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8",
                                                      errors="replace"))


def _link_path(value: Any, what: str) -> str:
    """Validate a root-relative path that pages link to (it may point outside the atlas)."""
    if not isinstance(value, str) or not value.strip():
        raise AtlasError(f"{what} must be a non-empty relative path using '/', got {value!r}")
    if value.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[/\\]", value):
        raise AtlasError(f"{what} must be relative to the atlas directory, got {value!r}")
    return value


def _dir_path(value: Any, what: str) -> str:
    """Validate a series directory: we write pages there, so it must stay inside the atlas."""
    path = _link_path(value, what)
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise AtlasError(f"{what} must stay inside the atlas (no '', '.', '..'), got {value!r}")
    return path


# --- manifest checking --------------------------------------------------------------------

_GALLERY_FILES = ("gallery.css", "gallery.js", "index.html", "manifest.json")  # no series dirs


def _check_manifest(manifest: Any) -> tuple[dict, list[dict]]:
    """Validate the fields the gallery relies on; return settings and normalised series."""
    instance("manifest", manifest, dict, "a dict (the parsed manifest.json)")
    found = manifest.get("format", ATLAS_FORMAT)
    if found != ATLAS_FORMAT:
        raise AtlasError(f"unknown manifest format {found!r}; this gallery reads {ATLAS_FORMAT!r}")
    settings = manifest.get("settings") or {}
    if not isinstance(settings, dict):
        raise AtlasError(f"manifest 'settings' must be a dict, got {type(settings).__name__}")
    raw_series = manifest.get("series", [])
    if not isinstance(raw_series, list):
        raise AtlasError(f"manifest 'series' must be a list, got {type(raw_series).__name__}")
    seen_dirs: dict[str, str] = {}
    all_series = []
    for i, series in enumerate(raw_series):
        if not isinstance(series, dict):
            raise AtlasError(f"series[{i}] must be a dict, got {type(series).__name__}")
        if "dir" not in series:
            raise AtlasError(f"series[{i}] ({series.get('name', '?')!r}) has no 'dir'")
        directory = _dir_path(series["dir"], f"series[{i}]['dir']")
        if directory.split("/")[0] in _GALLERY_FILES:
            raise AtlasError(f"series[{i}]['dir'] {directory!r} clashes with the gallery's files")
        if directory in seen_dirs:
            raise AtlasError(f"series[{i}]: dir {directory!r} is taken by {seen_dirs[directory]!r}")
        name = str(series.get("name", directory))
        seen_dirs[directory] = name
        units = series.get("units") or []
        if not isinstance(units, list):
            raise AtlasError(f"series {name!r}: 'units' must be a list")
        linked = series.get("connections", {})
        if not isinstance(linked, dict):
            raise AtlasError(f"series {name!r}: 'connections' must map units to their "
                             f"connections, got {type(linked).__name__}")
        records = []
        stems: dict[str, Any] = {}
        for j, record in enumerate(units):
            if not isinstance(record, dict) or "unit" not in record or "image" not in record:
                raise AtlasError(f"series {name!r} units[{j}] lacks 'unit'/'image': {record!r:.80}")
            unit = record["unit"]
            image = _link_path(record["image"], f"series {name!r}, unit {unit!r} 'image'")
            stem = PurePosixPath(image).stem
            if not stem or stem in stems:
                raise AtlasError(f"series {name!r}: unit {unit!r} reuses the image stem {stem!r}")
            stems[stem] = unit
            for k, example in enumerate(_examples(record)):
                _link_path(example.get("image"), f"series {name!r}, unit {unit!r} "
                                                 f"examples[{k}]['image']")
            for direction, sign, entry in _connections(linked.get(str(unit)), unit):
                _link_path(entry.get("weights"), f"series {name!r}, unit {unit!r} connections "
                                                 f"{direction} {sign} 'weights'")
            records.append((record, stem))
        records.sort(key=lambda pair: _sort_key(pair[0]["unit"]))
        grid = series.get("grid")
        all_series.append({
            "name": name, "dir": directory, "layer": series.get("layer"),
            "kind": series.get("kind"), "source": series.get("source"),
            "grid": None if grid is None else _link_path(grid, f"series {name!r} 'grid'"),
            "count": len(records), "total": series.get("total"), "units": records,
            "connections": linked})
    return settings, all_series


def _sort_key(unit: Any) -> tuple:
    if isinstance(unit, (int, float)) and not isinstance(unit, bool):
        return (0, unit, "")
    return (1, 0, str(unit))


def _examples(record: dict) -> list[dict]:
    examples = record.get("examples")
    if examples is None:
        return []
    if not isinstance(examples, list) or not all(isinstance(x, dict) for x in examples):
        raise AtlasError(f"unit {record['unit']!r}: 'examples' must be a list of dicts")
    return examples


SIGNS = (("positive", "excitatory"), ("negative", "inhibitory"))
DIRECTIONS = (("inputs", "Inputs from"), ("outputs", "Outputs to"))


def _connections(found: Any, unit: Any) -> list[tuple[str, str, dict]]:
    """``(direction, sign, entry)`` of each of a unit's connections (see write_gallery)."""
    if found is None:
        return []
    listed = []
    for direction, _ in DIRECTIONS:
        side = found.get(direction) if isinstance(found, dict) else []
        if side is None:
            continue
        if not isinstance(side, dict) or not isinstance(side.get("series"), str):
            side = None
        for sign, _ in SIGNS:
            entries = side.get(sign, []) if side is not None else None
            if not isinstance(entries, list) or not all(isinstance(e, dict) and "unit" in e
                                                        for e in entries):
                raise AtlasError(f"unit {unit!r}: its 'connections' must map 'inputs' and "
                                 "'outputs' to {'series', 'positive': [...], 'negative': [...]}"
                                 ", lists of dicts with 'unit' and 'weights'")
            listed += [(direction, sign, entry) for entry in entries]
    return listed


# --- pages --------------------------------------------------------------------------------

def _model_title(settings: dict) -> str:
    model = settings.get("model")
    return f"{model} atlas" if model else "Atlas"


def _series_heading(series: dict) -> str:
    parts = [f"<code>{_e(series['layer'])}</code>" if series["layer"] is not None else "",
             _e(series["kind"]) if series["kind"] is not None else "",
             (f"from <code>{_e(series['source'])}</code>" if series["source"] else "")]
    return " · ".join(p for p in parts if p)


def _count_text(series: dict) -> str:
    count, total = series["count"], series["total"]
    text = f"{count} unit{'' if count == 1 else 's'}"
    if isinstance(total, int) and not isinstance(total, bool) and total != count:
        text += f" of {total} rendered"
    return text


def _connections_summary(connections: Any) -> str:
    """The overview's line on the connections between layers ('' without any)."""
    if not isinstance(connections, dict):
        return ""
    if connections.get("note"):
        return f'<p class="muted">No connections between layers: {_e(connections["note"])}</p>'
    pairs = [p for p in connections.get("pairs") or [] if isinstance(p, dict)]
    if not pairs:
        return ""
    shown = ", ".join(f"<code>{_e(p.get('source'))}</code> → <code>{_e(p.get('target'))}</code>"
                      for p in pairs)
    return (f"<p>Connections: {shown} <span class=\"muted\">(each unit page shows the "
            f"{_e(connections.get('top'))} strongest inputs and outputs of each sign)</span></p>")


def _index_page(settings: dict, all_series: list[dict], has_manifest: bool,
                connections: Any = None) -> str:
    title = _model_title(settings)
    sha = settings.get("weights_sha256")
    subtitle = (f' <span class="muted">weights <code title="{_e(sha)}">{_e(str(sha)[:12])}'
                f"</code></span>" if sha else "")
    rows = "\n".join(f"<tr><th>{_e(k)}</th><td><code>{_e(_show(v))}</code></td></tr>"
                     for k, v in settings.items())
    parts = [f"<h1>{_e(title)}{subtitle}</h1>"]
    if rows:
        parts.append(f'<h2>Settings</h2>\n<table class="settings">\n{rows}\n</table>')
    if has_manifest:
        parts.append('<p><a href="manifest.json">manifest.json</a> '
                     '<span class="muted">(every unit\'s record)</span></p>')
    summary = _connections_summary(connections)
    if summary:
        parts.append(summary)
    parts.append(f"<h2>Series ({len(all_series)})</h2>")
    if not all_series:
        parts.append('<p class="empty">This atlas has no series yet.</p>')
    for series in all_series:
        page = _url(f"{series['dir']}/index.html", "")
        links = [f'<a class="series-link" href="{page}">all units</a>']
        if series["grid"]:
            links.append(f'<a class="grid-link" href="{_url(series["grid"], "")}">'
                         f"contact sheet</a>")
        thumbs = "".join(
            f'<a href="{_url(_unit_page(series, stem), "")}" title="unit {_e(r["unit"])}">'
            f'<img src="{_url(r["image"], "")}" alt="unit {_e(r["unit"])}" loading="lazy">'
            f"</a>" for r, stem in series["units"][:INDEX_THUMBNAILS])
        parts.append(
            f'<section class="series">\n<h2><a href="{page}">{_e(series["name"])}</a></h2>\n'
            f'<p>{_series_heading(series)} · {_e(_count_text(series))}</p>\n'
            + (f'<div class="strip">{thumbs}</div>\n' if thumbs else
               '<p class="empty">No units rendered yet.</p>\n')
            + f"<nav>{' '.join(links)}</nav>\n</section>")
    return _page(title, "", "\n".join(parts))


def _unit_page(series: dict, stem: str) -> str:
    return f"{series['dir']}/units/{stem}.html"


def _series_page(settings: dict, series: dict) -> str:
    here = series["dir"]
    title = f"{series['name']} — {_model_title(settings)}"
    links = [f'<a rel="up" href="{_url("index.html", here)}">↑ all series</a>']
    if series["grid"]:
        links.append(f'<a class="grid-link" href="{_url(series["grid"], here)}">'
                     f"contact sheet</a>")
    cells = []
    for record, stem in series["units"]:
        unit = _e(record["unit"])
        activation = _number(record.get("activation"))
        cells.append(
            f'<figure><a href="{_url(_unit_page(series, stem), here)}">'
            f'<img src="{_url(record["image"], here)}" alt="unit {unit}" loading="lazy">'
            f'<figcaption><span class="unit">{unit}</span>'
            + (f'<span class="act" title="final activation">{_e(activation)}</span>'
               if activation else "")
            + "</figcaption></a></figure>")
    grid = ('<div class="grid">\n' + "\n".join(cells) + "\n</div>" if cells else
            '<p class="empty">This series has no rendered units yet.</p>')
    body = (f"<nav>{' '.join(links)}</nav>\n<h1>{_e(series['name'])}</h1>\n"
            f"<p>{_series_heading(series)} · {_e(_count_text(series))}</p>\n{grid}")
    return _page(title, here, body)


def _sparkline(history: Any) -> str:
    """An inline SVG line of the objective's values over steps ('' if there is nothing)."""
    if isinstance(history, dict):
        steps, values = history.get("steps"), history.get("values")
    else:
        steps, values = None, history
    if not isinstance(values, list):
        return ""
    if not isinstance(steps, list) or len(steps) != len(values):
        steps = list(range(1, len(values) + 1))
    points = [(float(s), float(v)) for s, v in zip(steps, values, strict=True)
              if all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                     for x in (s, v))]
    if not points:
        return ""
    pad_x, pad_y = 4.0, 12.0
    (x0, x1), (y0, y1) = ((min(c), max(c)) for c in zip(*points, strict=True))
    sx = (SPARK_WIDTH - 2 * pad_x) / ((x1 - x0) or 1.0)
    sy = (SPARK_HEIGHT - 2 * pad_y) / ((y1 - y0) or 1.0)
    xy = [(pad_x + (x - x0) * sx, SPARK_HEIGHT - pad_y - (y - y0) * sy) for x, y in points]
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    label = (f"objective from {points[0][1]:.4g} (step {points[0][0]:g}) to "
             f"{points[-1][1]:.4g} (step {points[-1][0]:g}); min {y0:.4g}, max {y1:.4g}")
    return (f'<svg class="spark" width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" '
            f'viewBox="0 0 {SPARK_WIDTH} {SPARK_HEIGHT}" role="img" aria-label="{_e(label)}">'
            f"<title>{_e(label)}</title>"
            f'<text x="{pad_x}" y="9">max {y1:.4g}</text>'
            f'<text x="{pad_x}" y="{SPARK_HEIGHT - 2}">min {y0:.4g} · steps {x0:g}–{x1:g}</text>'
            f'<polyline points="{coords}"/>'
            f'<circle cx="{xy[-1][0]:.1f}" cy="{xy[-1][1]:.1f}" r="2.5"/></svg>')


def _code_block(key: str, value: Any, heading: str) -> str:
    return (f"<h3>{_e(heading)}</h3>\n<div class=\"code\"><pre><code id=\"{key}\">"
            f"{_e(_show(value))}</code></pre>"
            f'<button type="button" class="copy" data-target="{key}">Copy</button></div>')


def _connection_figure(entry: dict, sign: str, side: dict, here: str, pages: dict) -> str:
    """One connection: the other unit's picture linked to its page (if rendered), its weight
    picture, its number and its weight norm with its sign."""
    unit = entry["unit"]
    label = _e(f"{side.get('layer') or side['series']} unit {unit}")
    norm = entry.get("norm")
    signed = ("+" if sign == "positive" else "−") + (
        f"{norm:.3g}" if isinstance(norm, (int, float)) else _number(norm))
    found = pages.get((side["series"], str(unit)))
    if found:
        other_series, other_record, other_stem = found
        href = _url(_unit_page(other_series, other_stem), here)
        thumb = (f'<a href="{href}" title="{label}"><img class="unit-thumb" '
                 f'src="{_url(other_record["image"], here)}" alt="{label}" loading="lazy"></a>')
        name = f'<a href="{href}">unit {_e(unit)}</a>'
    else:
        thumb = f'<span class="unit-thumb" title="{label}">not rendered</span>'
        name = f"unit {_e(unit)}"
    weights = (f'<img class="weights" src="{_url(entry["weights"], here)}" loading="lazy" '
               f'alt="weights, {label}" title="weights, {label}">' if entry.get("weights") else "")
    return (f'<figure class="connection">{thumb}{weights}<figcaption><span>{name}</span>'
            f'<span class="act" title="weight norm, with its sign">{_e(signed)}</span>'
            f"</figcaption></figure>")


def _connections_html(found: dict | None, here: str, pages: dict) -> str:
    """A unit's strongest inputs and outputs ('' if the manifest lists none)."""
    if not found:
        return ""
    scale = _number(found.get("scale"))
    parts = ['<section class="connections"><h2>Connections</h2>',
             "<p class=\"muted\">Expanded weights between the layers (ReLUs as identities, max "
             "pools as averages): each picture shows where the other unit, at each offset, "
             "excites (warm) or inhibits (cool) the later one"
             + (f"; full colour at ±{_e(scale)}, one scale for this page" if scale else "")
             + ". The number is the weight norm, with its sign.</p>"]
    for direction, heading in DIRECTIONS:
        side = found.get(direction)
        if not side:
            continue
        parts.append(f"<h3>{heading} <code>{_e(side.get('layer') or side['series'])}</code></h3>")
        for sign, word in SIGNS:
            cells = "".join(_connection_figure(entry, sign, side, here, pages)
                            for entry in side.get(sign, []))
            parts.append(f'<div class="row {sign}"><span class="sign">{word}</span>'
                         + (f'<div class="strip">{cells}</div>' if cells else
                            '<span class="empty">none</span>') + "</div>")
    return "\n".join(parts) + "\n</section>"


def _unit_html(settings: dict, series: dict, index: int, pages: dict) -> str:
    here = f"{series['dir']}/units"
    record, stem = series["units"][index]
    unit = record["unit"]
    title = f"{series['name']} unit {unit} — {_model_title(settings)}"
    nav, head = [], []
    for rel, step, arrow in (("prev", -1, "← prev"), ("next", 1, "next →")):
        other = index + step
        if 0 <= other < len(series["units"]):
            other_record, other_stem = series["units"][other]
            href = _url(_unit_page(series, other_stem), here)
            nav.append(f'<a rel="{rel}" href="{href}">{arrow} '
                       f'<span class="muted">({_e(other_record["unit"])})</span></a>')
            head.append(f'<link rel="{rel}" href="{href}">\n')
        else:
            nav.append(f'<span class="disabled {rel}" aria-disabled="true">{arrow}</span>')
    nav.insert(1, f'<a rel="up" href="{_url(series["dir"] + "/index.html", here)}">'
                  f"↑ {_e(series['name'])}</a>")
    nav.append(f'<a class="home" href="{_url("index.html", here)}">atlas</a>')
    image = _url(record["image"], here)
    facts = [(label, _number(value)) for label, value in (
        ("final activation", record.get("activation")),
        ("peak", record.get("peak_activation")),
        *((key, value) for key, value in (record.get("quality") or {}).items()))]
    caption = " · ".join(f"{_e(label)} {_e(value)}" for label, value in facts if value)
    main = [f'<figure class="rendering"><a href="{image}"><img src="{image}" '
            f'alt="{_e(series["name"])} unit {_e(unit)}"></a>'
            + (f"<figcaption>{caption}</figcaption>" if caption else "") + "</figure>"]
    examples = _examples(record)
    if examples:
        cells = []
        for example in examples:
            src = _url(example["image"], here)
            act = _number(example.get("activation"))
            source = example.get("source")
            cells.append(
                f'<figure><a href="{src}"><img src="{src}" loading="lazy" '
                f'alt="dataset example{", " + _e(source) if source else ""}"></a>'
                f"<figcaption>{'<span>' + _e(act) + '</span>' if act else ''}"
                f"{'<span class=act>' + _e(source) + '</span>' if source else ''}"
                f"</figcaption></figure>")
        main.append(f'<section class="examples"><h2>Dataset examples</h2>'
                    f'<div class="strip">{"".join(cells)}</div></section>')
    parts = [f"<nav>{' '.join(nav)}</nav>",
             f"<h1>{_e(series['name'])} · unit {_e(unit)}</h1>",
             f"<p>{_series_heading(series)}"
             + (f" · <code>{_e(record['objective'])}</code>" if record.get("objective") else "")
             + "</p>",
             f'<div class="unit-main">{"".join(main)}</div>']
    connections = _connections_html(series["connections"].get(str(unit)), here, pages)
    if connections:
        parts.append(connections)
    spark = _sparkline(record.get("history"))
    if spark:
        parts.append(f"<h2>Objective during the render</h2>\n{spark}")
    code = [_code_block(key, record[key], heading) for key, heading in
            (("command", "Shell"), ("python", "Python")) if record.get(key) is not None]
    if code:
        parts.append("<h2>Reproduce</h2>\n" + "\n".join(code))
    rows = "\n".join(f"<tr><th>{_e(k)}</th><td><code>{_e(_show(v))}</code></td></tr>"
                     for k, v in record.items())
    parts.append(f'<h2>Record</h2>\n<table class="meta">\n{rows}\n</table>')
    return _page(title, here, "\n".join(parts), head="".join(head))


# --- entry point --------------------------------------------------------------------------

def write_gallery(out_dir: Union[str, os.PathLike], manifest: dict) -> Path:
    """Write the static HTML gallery of an atlas into ``out_dir``; return its ``index.html``.

    Pages written (every file replaced atomically, every link relative):

    - ``gallery.css``, ``gallery.js``: shared style, copy buttons and arrow-key paging;
    - ``index.html``: title (model, short weights hash), settings table, and per series its
      unit count, a few thumbnails, a link to its page and to its contact sheet;
    - ``<dir>/index.html`` per series: a thumbnail grid (unit number and final activation),
      each linking to its unit page;
    - ``<dir>/units/<stem>.html`` per unit, beside ``<stem>.png``: the image, prev / up /
      next links, the objective's history as a sparkline, the ``command`` and ``python``
      to reproduce it, the record's every key in a table, its dataset ``examples`` when the
      record has them, and its connections when its series lists them: per direction
      (``inputs``, ``outputs``) the other layer and the strongest ``positive`` and ``negative``
      connections, each the other unit (its picture and page when it is in the manifest), its
      weight picture and its weight norm and sign.

    Args:
        out_dir: the atlas directory; all manifest paths are relative to it.
        manifest: the parsed ``manifest.json`` (format ``"lucent-core-atlas/1"``):
            ``{"settings": {...}, "series": [{"name", "dir", "layer", "kind", "source",
            "grid", "units": [record, ...]}, ...], "connections": {...}}``. Only ``dir``
            per series and ``unit`` and ``image`` per record are required; other keys are
            shown when present. A series' ``connections`` maps ``str(unit)`` to ``{"inputs":
            {"series": dir, "layer": name, "positive": [{"unit", "norm", "sign", "weights":
            png}, ...], "negative": [...]}, "outputs": {...}, "scale": number}``; the manifest's
            ``connections`` (the layer ``pairs`` and ``top``, or a ``note`` saying why there
            are none) is summed up on the overview.

    Returns:
        Path of ``out_dir/index.html``.

    Raises:
        AtlasError: (a ValueError) a malformed manifest (the message names the field), an
            absolute path, a series directory leaving ``out_dir``, or two units whose pages
            would collide.

    Example:
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> manifest = {"format": "lucent-core-atlas/1", "settings": {"model": "tiny"},
        ...             "series": [{"name": "conv", "dir": "conv", "layer": "conv",
        ...                         "kind": "channel", "units": [
        ...                             {"unit": 0, "image": "conv/units/00000.png"}]}]}
        >>> write_gallery(out, manifest).name
        'index.html'
        >>> sorted(p.name for p in (Path(out) / "conv" / "units").iterdir())
        ['00000.html']
    """
    root = Path(out_dir)
    settings, all_series = _check_manifest(manifest)
    pages = {(series["dir"], str(record["unit"])): (series, record, stem)
             for series in all_series for record, stem in series["units"]}
    _write(root / "gallery.css", CSS)
    _write(root / "gallery.js", JS)
    for series in all_series:
        for i in range(len(series["units"])):
            _write(root / _unit_page(series, series["units"][i][1]),
                   _unit_html(settings, series, i, pages))
        _write(root / series["dir"] / "index.html", _series_page(settings, series))
    # The overview last: once it exists, everything it links to does too.
    index = root / "index.html"
    _write(index, _index_page(settings, all_series, (root / "manifest.json").is_file(),
                              manifest.get("connections")))
    return index
