"""Results directories on disk: what unit atlases, dataset examples and activation atlases share.

One directory holds the settings it was made with (``atlas.json``), series of units
(``<series>/series.json``), and dataset examples (``examples/<series>/examples.json``). Every
JSON file is written atomically (a temporary name, then a rename), so a crash never leaves a
half-written file under a real name; a directory made with other settings is refused with the
differences named.

Example:
    >>> import tempfile
    >>> path = write_json(Path(tempfile.mkdtemp()) / "a.json", {"steps": 8})
    >>> read_json(path), differences({"steps": 8}, {"steps": 9})
    ({'steps': 8}, ['steps: 8 in the atlas, 9 now'])
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

from lucent_core.io import sha256sum, write_atomically

__all__ = ["AtlasError", "AtlasWriteError", "check_layer_spelling", "derived_seed", "differences",
           "finished_picture", "read_json", "write_json"]


class AtlasError(ValueError):
    """The atlas directory does not match the request (other settings, another series)."""


class AtlasWriteError(OSError):
    """A file of the atlas could not be written (full disk, no permission, ...)."""


def derived_seed(*key: object) -> int:
    """A seed (63 bits) that is a hash of ``key`` (JSON values): the same key, the same seed,
    on any machine and Python; an atlas gives each unit or cell its own this way, so that a
    resumed or sharded run renders exactly what one run would.

    Example:
        >>> derived_seed("cell", 0, 1, 2) == derived_seed("cell", 0, 1, 2)
        True
        >>> derived_seed("cell", 0, 1, 2) == derived_seed("cell", 0, 2, 1)
        False
    """
    text = json.dumps(list(key), sort_keys=True)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def write_json(path: Path, data: dict) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=1, sort_keys=False, allow_nan=True) + "\n"
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: Path) -> dict:
    """Read a JSON file of the atlas, with an error that names the file if it is damaged."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AtlasError(f"{path} is not valid JSON ({error}); it was not written by "
                         "lucent-core (whose writes are atomic): move it away") from error


def finished_picture(record_path: Path, weights_sha256: str) -> tuple[Image.Image, dict] | None:
    """A unit atlas's finished picture of one unit, as RGB, with its record; None where the
    record or its PNG is missing, or the PNG is not the one whose SHA256 the record holds.

    A picture rendered with other weights than ``weights_sha256`` is an :class:`AtlasError`:
    it would show another network's unit.
    """
    png = record_path.with_suffix(".png")
    if not (record_path.is_file() and png.is_file()):
        return None
    record = read_json(record_path)
    if record.get("sha256") != sha256sum(png):
        return None
    if record.get("weights_sha256") != weights_sha256:
        raise AtlasError(f"{record_path} was rendered with other weights (sha256 "
                         f"{str(record.get('weights_sha256'))[:12]}...) than the model's "
                         f"({weights_sha256[:12]}...): use that model's atlas, or none")
    with Image.open(png) as picture:
        return picture.convert("RGB"), record


def differences(found: dict, wanted: dict) -> list[str]:
    """One line per key whose value differs: what a refusal to resume names."""
    keys = sorted(set(found) | set(wanted))
    return [f"{k}: {found.get(k)!r} in the atlas, {wanted.get(k)!r} now" for k in keys
            if found.get(k) != wanted.get(k)]


def check_layer_spelling(root: Path, layers: Sequence[str],
                         same_module: Callable[[str, str], bool]) -> None:
    """Refuse two spellings of one layer (``"2_1"`` and ``"2.1"`` name one module), among
    ``layers`` or beside a layer the directory already has (a series or dataset examples): it
    would be a second series, rendered again with other seeds, and its dataset examples would
    not reach the first one's pages. ``same_module(a, b)`` says whether two names are one
    module."""
    for i, a in enumerate(layers):
        for b in layers[i + 1:]:
            if a != b and same_module(a, b):
                raise AtlasError(f"layers {a!r} and {b!r} are the same module: spell it one way")
    known = [read_json(p).get("identity", {}).get("layer")
             for p in [*root.glob("*/series.json"), *root.glob("examples/*/examples.json")]]
    for layer in layers:
        for other in sorted({k for k in known if isinstance(k, str) and k != layer}):
            if same_module(other, layer):
                raise AtlasError(f"layer {layer!r} is {other!r} in {root} (the same module): "
                                 f"use {other!r}, to keep one series")
