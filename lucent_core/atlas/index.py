"""Merge an atlas's per-unit records into ``manifest.json``, contact sheets and the HTML gallery,
with each unit's strongest connections to the neighbouring layers of the atlas."""

from __future__ import annotations

import io
import math
import os
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from lucent_core.activations import run_layers
from lucent_core.atlas.gallery import write_gallery
from lucent_core.atlas.plan import ATLAS_FORMAT, AtlasSettings
from lucent_core.atlas.store import AtlasError, AtlasStore, read_json, write_json
from lucent_core.hooks import model_revision
from lucent_core.io import image_grid, write_atomically
from lucent_core.models import create_model, get_config, list_models
from lucent_core.models.registry import TORCHVISION_PREFIX
from lucent_core.models.weights import WeightsError, find_weights, state_dict_sha256
from lucent_core.recipes.circuits import Connections, CutOffWarning, expanded_weights, \
    top_inputs, top_outputs, weight_picture
from lucent_core.recipes.quality import superstimulus_ratio
from lucent_core.validate import instance, integer

__all__ = ["CONNECTIONS", "build_index", "load_manifest"]

# Contact sheets stay below ~64 megapixels: large series get smaller cells.
MAX_SHEET_PIXELS = 64_000_000
STALE_SECONDS = 600  # temporary files older than this belong to killed processes
#: build_index's default: the strongest inputs and outputs of each sign shown per unit.
CONNECTIONS = 4
CONNECTIONS_FORMAT = "lucent-core-connections/1"
MAX_KERNEL = 25      # weight pictures are stored cropped to their central 25 x 25 weights
PICTURE_PIXELS = 48  # a weight picture's longer side, at least (whole pixels per weight)
SIZES = (32, 64, 128, 256, 512)  # grey image sizes tried until the expanded weights fit


def _contact_sheet(root: Path, series_dir: Path, records: list[dict]) -> str:
    """Write ``<series>/grid.png`` with every unit, labelled by number; return its path."""
    with Image.open(root / records[0]["image"]) as first:
        cell = min(first.size)
    while len(records) * (cell + 18) ** 2 > MAX_SHEET_PIXELS and cell > 16:
        cell //= 2
    cells = np.stack([np.asarray(Image.open(root / r["image"]).convert("RGB")
                                 .resize((cell, cell), Image.Resampling.LANCZOS))
                      for r in records])
    sheet = image_grid(cells, ncols=math.ceil(math.sqrt(len(records))),
                       labels=[str(r["unit"]) for r in records], padding=2)
    path = series_dir / "grid.png"
    write_atomically(path, lambda tmp: sheet.save(tmp, format="PNG"))
    return path.relative_to(root).as_posix()


def _remove_stale_partials(root: Path) -> None:
    now = time.time()
    for pattern in ("**/*.partial", "**/*.new"):
        for path in root.glob(pattern):
            try:
                if now - path.stat().st_mtime > STALE_SECONDS:
                    path.unlink()
            except FileNotFoundError:  # another process finished or removed it
                pass


def _attach_examples(root: Path, series_dir: str, records: list[dict]) -> dict | None:
    """Add each record's dataset examples (from ``lucent-core examples``) and its
    superstimulus ratio; return a summary of the examples run, or None without one."""
    path = root / "examples" / series_dir / "examples.json"
    if not path.is_file():
        return None
    found = read_json(path)
    for record in records:
        examples = found["units"].get(str(record["unit"]))
        if not examples:
            continue
        record["examples"] = examples
        if record.get("peak_activation") is not None:
            ratio = superstimulus_ratio(record["peak_activation"],
                                        [e["activation"] for e in examples])
            record.setdefault("quality", {})["superstimulus"] = (
                None if ratio is None else round(ratio, 6))
    return {"images": found["images"], "scanned": found["scanned"],
            "skipped": len(found["skipped"]), "top": found["top"]}


# --- connections between the channel series of neighbouring layers ------------------------

def _rebuilt(settings: AtlasSettings) -> tuple[nn.Module | None, str | None]:
    """The atlas's zoo model built again from its settings, offline; else None and why not."""
    name, weights = settings.model, settings.weights
    if weights == "custom" or not (name in list_models() or name.startswith(TORCHVISION_PREFIX)):
        return None, (f"the atlas's model {name!r} is not a zoo model that can be built again "
                      "from its settings: give it, build_index(out, model=...)")
    try:
        if weights == "random":
            model = create_model(name, pretrained=False, seed=settings.weights_seed or 0)
        elif weights == "pretrained":
            source = get_config(name).weights
            if source is None:
                return None, (f"{name}'s trained weights are fetched by its own library, not "
                              "looked up offline: give the model, build_index(out, model=...)")
            find_weights(source, download=False)  # a WeightsError where they are not here
            model = create_model(name)
        else:  # the path of a weights file
            model = create_model(name, weights=weights)
    except (WeightsError, ValueError, OSError, ImportError, RuntimeError) as error:
        first = (str(error).splitlines() or [""])[0]
        return None, (f"the model {name!r} cannot be built offline ({type(error).__name__}: "
                      f"{first}): give the model, build_index(out, model=...)")
    return model.to("cuda" if torch.cuda.is_available() else "cpu"), None


def _model_for(settings: AtlasSettings, model: nn.Module | None
               ) -> tuple[nn.Module | None, str | None]:
    """``model``, or the one rebuilt from the settings, if its weights are the atlas's; else
    None and why not."""
    if model is None:
        model, note = _rebuilt(settings)
        if model is None:
            return None, note
    found = state_dict_sha256(model)
    if found != settings.weights_sha256:
        return None, (f"the model's weights (SHA256 {found[:12]}) are not the atlas's "
                      f"({settings.weights_sha256[:12]})")
    if model_revision(model) != settings.model_revision:
        return None, (f"the model's definition is revision {model_revision(model)}, the "
                      f"atlas's {settings.model_revision}")
    return model, None


def _fitted_weights(model: nn.Module, source: str, target: str) -> torch.Tensor:
    """:func:`expanded_weights` at the smallest size of :data:`SIZES` that holds them whole
    (small images are fast; a model that refuses one is tried at the next)."""
    for size in SIZES:
        last = size == SIZES[-1]
        with warnings.catch_warnings():
            if not last:
                warnings.simplefilter("error", CutOffWarning)
            try:
                return expanded_weights(model, source, target, size=size,
                                        batch_size=max(1, min(64, 2 ** 18 // size ** 2)))
            except CutOffWarning:
                continue
            except RuntimeError:
                if last:
                    raise
    raise AssertionError("unreachable: the last size returns or raises")


def _table(found: list[Connections], other: str, top: int, kernel: tuple[int, int]) -> dict:
    """Connections of every unit as tensors: ``units`` (the other unit, -1 for none) and
    ``norms`` ``(N, 2, top)`` (positive, negative), and their ``kernels`` ``(N, 2, top, kh,
    kw)``, cropped to the central ``MAX_KERNEL`` weights."""
    kh, kw = (min(length, MAX_KERNEL) for length in kernel)  # both odd
    units = torch.full((len(found), 2, top), -1, dtype=torch.int64)
    norms = torch.zeros(len(found), 2, top)
    kernels = torch.zeros(len(found), 2, top, kh, kw)
    for i, sides in enumerate(found):
        for j, side in enumerate(sides):
            for r, connection in enumerate(side):
                w = connection.weights
                y, x = (w.shape[0] - kh) // 2, (w.shape[1] - kw) // 2
                units[i, j, r] = getattr(connection, other)
                norms[i, j, r] = connection.norm
                kernels[i, j, r] = w[y:y + kh, x:x + kw].float().cpu()
    return {"units": units, "norms": norms, "kernels": kernels}


def _computed(folder: Path, settings: AtlasSettings, channel: dict[str, dict],
              model: nn.Module, top: int) -> tuple[dict, list[dict]]:
    """Order the layers as the model runs them, compute the top connections between each
    spatial layer and the next, and store them in ``folder``: ``(plan, tables)``."""
    grey = torch.full((1, 3, settings.size, settings.size), 0.5)
    acts = run_layers(model, grey, list(channel))
    order = [layer for layer, act in acts.items()  # in the order the forward reached them
             if isinstance(act, torch.Tensor) and act.dim() == 4]
    pairs, tables = [], []
    for source, target in zip(order, order[1:]):
        weights = _fitted_weights(model, source, target)
        kernel = tuple(weights.shape[2:])
        inputs = [top_inputs(model, target, t, source, top, weights)
                  for t in range(weights.shape[0])]
        outputs = [top_outputs(model, source, s, target, top, weights)
                   for s in range(weights.shape[1])]
        table = {"format": CONNECTIONS_FORMAT, "weights_sha256": settings.weights_sha256,
                 "source_layer": source, "target_layer": target, "top": top,
                 "kernel": list(kernel), "inputs": _table(inputs, "source", top, kernel),
                 "outputs": _table(outputs, "target", top, kernel)}
        name = f"{channel[source]['dir']}--{channel[target]['dir']}.pt"
        write_atomically(folder / name, lambda tmp: torch.save(table, tmp))
        pairs.append({"source": source, "target": target, "file": name, "kernel": list(kernel)})
        tables.append(table)
    plan = {"format": CONNECTIONS_FORMAT, "weights_sha256": settings.weights_sha256,
            "model_revision": settings.model_revision, "top": top, "layers": order,
            "not_spatial": sorted(set(channel) - set(order)), "pairs": pairs}
    write_json(folder / "connections.json", plan)
    return plan, tables


def _cached(folder: Path, settings: AtlasSettings, layers: set[str], top: int
            ) -> tuple[dict, list[dict]] | None:
    """The stored plan and tables if they hold these layers' connections at the atlas's
    weights, with at least ``top`` of each sign; else None (to compute them again)."""
    try:
        plan = read_json(folder / "connections.json")
    except (OSError, AtlasError):
        return None
    if (plan.get("format") != CONNECTIONS_FORMAT
            or plan.get("weights_sha256") != settings.weights_sha256
            or plan.get("model_revision") != settings.model_revision
            or plan.get("top", 0) < top
            or set(plan.get("layers", [])) | set(plan.get("not_spatial", [])) != layers):
        return None
    tables = []
    for pair in plan.get("pairs", []):
        try:
            table = torch.load(folder / pair["file"], map_location="cpu", weights_only=True)
        except Exception:  # missing, damaged or foreign: computed again, not trusted
            return None
        if table.get("weights_sha256") != settings.weights_sha256:
            return None
        tables.append(table)
    return plan, tables


def _save_picture(path: Path, rgb: np.ndarray) -> None:
    """Write ``rgb`` as a PNG at ``path``, unless the file holds those bytes already."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    data = buffer.getvalue()
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    write_atomically(path, lambda tmp: tmp.write_bytes(data))


def _link(series: dict, table: dict, direction: str, other: dict, top: int,
          drawn: dict[tuple[str, int], tuple[dict, list]]) -> None:
    """List each unit of ``series`` its ``direction`` ("inputs" or "outputs") from ``table``,
    whose other units are ``other``'s, in ``series["connections"][str(unit)]``; each
    connection's weight picture (path and kernel) goes into ``drawn[(dir, unit)]``."""
    short = "in" if direction == "inputs" else "out"
    units, norms = table["units"].tolist(), table["norms"].tolist()
    for record in series["units"]:
        unit = record["unit"]
        if unit >= len(units):
            continue
        page = series.setdefault("connections", {}).setdefault(str(unit), {})
        pictures = drawn.setdefault((series["dir"], unit), (page, []))[1]
        page[direction] = found = {"series": other["dir"], "layer": other["layer"]}
        for j, sign in enumerate(("positive", "negative")):
            found[sign] = []
            for r, source in enumerate(units[unit][j][:top]):
                if source < 0:
                    break
                picture = (f"connections/pictures/{series['dir']}/"
                           f"{unit:05d}-{short}-{source:05d}.png")
                found[sign].append({"unit": source, "norm": round(norms[unit][j][r], 6),
                                    "sign": 1 - 2 * j, "weights": picture})
                pictures.append((picture, table["kernels"][unit, j, r]))


def _attach_connections(root: Path, settings: AtlasSettings, series: list[dict],
                        model: nn.Module | None, top: int) -> dict | None:
    """List each channel unit's strongest connections in its series' ``connections`` (and
    write their weight pictures to ``connections/pictures/``); return the manifest's summary
    of them, a note of why there are none, or None where the atlas has no two channel
    layers."""
    channel = {s["layer"]: s for s in series if s["kind"] == "channel"}
    if top == 0 or len(channel) < 2:
        return None
    folder = root / "connections"
    found = _cached(folder, settings, set(channel), top)
    if found is None:
        model, note = _model_for(settings, model)
        if model is not None:
            try:
                found = _computed(folder, settings, channel, model, top)
            except (ValueError, RuntimeError, NotImplementedError) as error:
                note = f"they could not be computed ({type(error).__name__}: {error})"
        if found is None:
            warnings.warn(f"the gallery shows no connections: {note}", stacklevel=3)
            return {"note": note}
    plan, tables = found
    drawn: dict[tuple[str, int], tuple[dict, list]] = {}
    for pair, table in zip(plan["pairs"], tables):
        source, target = channel[pair["source"]], channel[pair["target"]]
        _link(target, table["inputs"], "inputs", source, top, drawn)
        _link(source, table["outputs"], "outputs", target, top, drawn)
    written: set[Path] = set()
    for page, pictures in drawn.values():
        scale = max((float(kernel.abs().max()) for _, kernel in pictures), default=0.0)
        page["scale"] = round(scale, 6)
        for path, kernel in pictures:
            upsample = -(-PICTURE_PIXELS // max(kernel.shape))
            _save_picture(root / path, weight_picture(kernel, scale or None, upsample))
            written.add(root / path)
    for s in channel.values():  # pictures of connections no longer shown
        for path in (folder / "pictures" / s["dir"]).glob("*.png"):
            if path not in written:
                path.unlink(missing_ok=True)
    return {"top": top, "layers": plan["layers"], "not_spatial": plan["not_spatial"],
            "pairs": [{**pair, "file": f"connections/{pair['file']}"}
                      for pair in plan["pairs"]]}


def build_index(out: str | os.PathLike, model: nn.Module | None = None,
                connections: int = CONNECTIONS) -> Path:
    """Merge all unit records into ``manifest.json``; write contact sheets and the gallery.

    Safe to run at any time, also while shards are still rendering (it indexes what is
    finished) and by several processes at once (every file is replaced atomically).

    Every record and picture is checked first, and nothing is written if one is wrong: a
    file in a units folder that is not a unit's, a record of the wrong shape (or naming
    another unit or picture), or a PNG whose SHA256 is not its record's (damaged or replaced)
    is an :class:`AtlasError` naming the file. Such a PNG is refused, not skipped: running the
    atlas command again renders its unit again.

    **Connections.** When the atlas holds channel series of two or more spatial layers, each
    unit page shows the unit's strongest inputs from the previous of these layers and outputs
    to the next (in the order the model runs them), as in the Circuits papers: for each
    connection, the other unit's picture linked to its page, its weight picture (warm
    excites, cool inhibits; one colour scale per page) and its weight norm, the ``connections``
    strongest of each sign. They are read from the :func:`~lucent_core.recipes.circuits.
    expanded_weights` between the layers (ReLUs as identities, max pools as average pools;
    computed at the smallest grey image of 32, 64, ... 512 px that holds the weights whole),
    exactly as :func:`~lucent_core.recipes.circuits.top_inputs` and
    :func:`~lucent_core.recipes.circuits.top_outputs` rank them, over all the other layer's
    channels (a connection to a unit not rendered is shown without its picture). Neuron and
    direction series have none (their units are not a layer's channels), nor do layers
    without ``(B, C, H, W)`` activations.

    Computing them needs the model: ``model``, or, when it is None, the atlas's zoo model
    built again from its settings (its trained weights only where they are on this machine:
    nothing is downloaded). A model whose weights' SHA256 is not the atlas's, or an atlas
    whose model cannot be built again (a model given in Python), gets no connections: a
    warning says why, and so does the overview page. What is computed is stored in
    ``connections/`` (``connections.json``, the layer order and pairs; per pair of layers
    ``<source dir>--<target dir>.pt``, each unit's top connections with their weights,
    cropped to the central 25 x 25; ``pictures/<series dir>/<unit>-in-<other>.png`` and
    ``-out-``, the weight pictures), so later indexes reuse it without the model, until the
    channel layers of the atlas or a larger ``connections`` ask for more.

    Args:
        out: the atlas directory.
        model: the atlas's model, for the connections (default: built again from the
            settings where it is a zoo model).
        connections: strongest inputs and outputs of each sign shown per unit; 0 for none.

    Returns:
        The gallery's ``index.html``.

    Example:
        >>> import tempfile, torch
        >>> from lucent_core.atlas import render_atlas
        >>> out = tempfile.mkdtemp()
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3))
        >>> _ = render_atlas(net, out, "0", steps=2, size=16, progress=False, index=False)
        >>> build_index(out).name
        'index.html'
    """
    if model is not None:
        instance("model", model, nn.Module, "the atlas's nn.Module")
    connections = integer("connections", connections, minimum=0)
    store = AtlasStore(out)
    settings = store.settings()
    root = store.root
    # every record and picture is checked before anything is written
    found = [(series_dir, read_json(series_dir / "series.json"), store.records(series_dir))
             for series_dir in store.series_dirs()]
    series = []
    for series_dir, info, records in found:
        examples = _attach_examples(root, info["dir"], records)
        series.append({
            "name": info["name"], "dir": info["dir"], "layer": info["layer"],
            "kind": info["kind"], "source": info.get("source"),
            "grid": _contact_sheet(root, series_dir, records) if records else None,
            "count": len(records), "total": info["count"], "units": records,
            "failed": store.failures(series_dir), "examples": examples})
    linked = _attach_connections(root, settings, series, model, connections)
    manifest = {"format": ATLAS_FORMAT, "settings": settings.as_dict(),
                "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "series": series, **({"connections": linked} if linked else {})}
    write_json(root / "manifest.json", manifest)
    _remove_stale_partials(root)
    return write_gallery(root, manifest)


def load_manifest(out: str | os.PathLike) -> dict:
    """Read ``manifest.json`` of an atlas (build it with :func:`build_index`).

    Example:
        >>> load_manifest("no-such-atlas")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: no-such-atlas has no manifest.json ...
    """
    path = Path(out) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{out} has no manifest.json; build it with "
                                f"`lucent-core atlas-index {out}`")
    return read_json(path)
