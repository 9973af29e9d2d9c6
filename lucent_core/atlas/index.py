"""Merge an atlas's per-unit records into ``manifest.json``, contact sheets and the HTML gallery."""

from __future__ import annotations

import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from lucent_core.atlas.gallery import write_gallery
from lucent_core.atlas.plan import ATLAS_FORMAT
from lucent_core.atlas.store import AtlasStore, read_json, write_json
from lucent_core.io import image_grid, write_atomically
from lucent_core.recipes.quality import superstimulus_ratio

__all__ = ["build_index", "load_manifest"]

# Contact sheets stay below ~64 megapixels: large series get smaller cells.
MAX_SHEET_PIXELS = 64_000_000
STALE_SECONDS = 600  # temporary files older than this belong to killed processes


def _contact_sheet(root: Path, series_dir: Path, records: list[dict]) -> str:
    """Write ``<series>/grid.png`` with every unit, labelled by number; return its path."""
    first = Image.open(root / records[0]["image"])
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


def build_index(out: str | os.PathLike) -> Path:
    """Merge all unit records into ``manifest.json``; write contact sheets and the gallery.

    Safe to run at any time, also while shards are still rendering (it indexes what is
    finished) and by several processes at once (every file is replaced atomically).

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
    store = AtlasStore(out)
    settings = store.settings()
    root = store.root
    series = []
    for series_dir in store.series_dirs():
        info = read_json(series_dir / "series.json")
        records = list(store.records(series_dir))
        examples = _attach_examples(root, info["dir"], records)
        series.append({
            "name": info["name"], "dir": info["dir"], "layer": info["layer"],
            "kind": info["kind"], "source": info.get("source"),
            "grid": _contact_sheet(root, series_dir, records) if records else None,
            "count": len(records), "total": info["count"], "units": records,
            "failed": store.failures(series_dir), "examples": examples})
    manifest = {"format": ATLAS_FORMAT, "settings": settings.as_dict(),
                "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "series": series}
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
