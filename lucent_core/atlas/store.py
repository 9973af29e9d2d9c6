"""The atlas on disk: settings, one PNG and one JSON record per unit, written atomically.

Layout (paths relative to the atlas directory)::

    atlas.json                       settings every unit was rendered with
    <series>/series.json             the series (layer, kind, directions hash)
    <series>/units/00476.png         the unit's picture
    <series>/units/00476.json        its record; written after the PNG (whose SHA256 it holds),
                                     so it marks the unit done
    manifest.json, index.html, ...   written by :func:`~lucent_core.atlas.build_index`
    connections/                     the units' strongest inputs and outputs between layers,
                                     computed by the index when it has the model
    .locks/worker-0-of-4.lock        held while worker 0 of 4 renders (see worker_lock)

Every file is written to a temporary name and renamed, so a crash or ``kill -9`` never leaves
a half-written file under a real name; processes (ranks, shards) write disjoint units, so they
can share one tree.

What is read back is checked, since people, file managers and disks change files too: a
``units/`` folder holds only files named like a unit's (``00476.png``, ``00476.json``,
``00476.failed.json``, and the gallery's pages); a record is a JSON object whose ``unit`` is
the number in its name and whose ``image`` is the PNG beside it; and a unit is done only while
its PNG's SHA256 is the one its record holds (else a resume renders it again, and
:func:`~lucent_core.atlas.build_index` refuses it).
"""

from __future__ import annotations

import os
import re
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the guard below is then skipped
    fcntl = None  # type: ignore[assignment]

import numpy as np
from PIL import Image

from lucent_core.atlas.plan import ATLAS_FORMAT, AtlasSettings, Series, settings_of_record
from lucent_core.io import save_png, sha256sum, unique_suffix
from lucent_core.results import AtlasError, AtlasWriteError, check_layer_spelling, differences, \
    read_json, write_json

__all__ = ["AtlasError", "AtlasStore", "AtlasWriteError", "read_json", "write_json"]


def _try_flock(handle, operation: int, tries: int = 1) -> bool:
    """Take ``operation`` (``LOCK_EX`` / ``LOCK_SH``) on ``handle`` without blocking."""
    for attempt in range(tries):
        try:
            fcntl.flock(handle, operation | fcntl.LOCK_NB)
            return True
        except OSError:
            if attempt + 1 < tries:
                time.sleep(0.05)
    return False


def _holder(handle) -> str:
    handle.seek(0)
    return handle.read().strip() or "another process"


def _running_other_split(locks: Path, count: int) -> tuple[str, str] | None:
    """``("i/n", holder)`` of a running worker whose share count is not ``count``, else None."""
    for path in sorted(locks.glob("worker-*-of-*.lock")):
        index, _, other_count = path.stem[len("worker-"):].partition("-of-")
        if other_count == str(count):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                if _try_flock(handle, fcntl.LOCK_SH):  # nobody holds it: a finished worker
                    fcntl.flock(handle, fcntl.LOCK_UN)
                    continue
                return f"{index}/{other_count}", _holder(handle)
        except OSError:  # removed or unreadable meanwhile: not a running worker
            continue
    return None


def _unit_number(path: Path) -> tuple[int, str]:
    """Sort key of a unit's file (``00476.json``, ``123456.failed.json``): its unit number."""
    return int(path.name.split(".")[0]), path.name


# the only pictures and records of a units folder (its gallery pages and temporary files
# end otherwise: .html, .partial, .new)
_UNIT_FILE = re.compile(r"\d{5,}(\.failed)?\.json|\d{5,}\.png")
# keys of a record that the index and gallery read, and their types (the first two required)
_RECORD_KEYS = {"unit": int, "image": str, "sha256": str,
                "peak_activation": (int, float, type(None)), "quality": dict}
_DELETE = "delete it and its PNG to render the unit again"


class AtlasStore:
    """Reads and writes one atlas directory.

    Example:
        >>> import tempfile
        >>> store = AtlasStore(tempfile.mkdtemp())
        >>> store.open(AtlasSettings(model="tiny", weights_sha256="ab"))
        >>> store.is_done(Series("conv"), 3)
        False
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # -- settings -------------------------------------------------------------------------
    def _claim(self, path: Path, data: dict, identity_key: str, what: str) -> None:
        """Write ``data`` to ``path`` unless it exists; if it does, its identity must match."""
        if not path.exists():
            try:
                # write a private copy, then link it to the real name: fails if another
                # process got there first, so the first writer's file is the one kept
                private = write_json(path.with_name(f"{path.name}.{unique_suffix()}.new"), data)
                try:
                    os.link(private, path)
                except FileExistsError:
                    pass
                except OSError:  # no hard links on this file system: plain atomic rename
                    os.replace(private, path)
                finally:
                    private.unlink(missing_ok=True)
            except OSError as error:
                raise AtlasWriteError(f"cannot write the atlas in {self.root}: {error}") from error
        found = read_json(path).get(identity_key, {})
        changed = differences(found, data[identity_key])
        if changed:
            empty = "" if any(self.root.glob("*/units/*.json")) else (
                f" No unit of it is finished yet: to start it again with the new {what}, "
                f"delete {path}.")
            raise AtlasError(f"{path} was rendered with other {what}; refusing to mix two "
                             f"atlases. Differences: " + "; ".join(changed) +
                             ". Use the atlas's settings to resume it, or another output "
                             "directory." + empty)

    def _check_records_settings(self, settings: AtlasSettings) -> None:
        """Without ``atlas.json`` (deleted by hand), the settings every record holds guard the
        atlas: refuse other settings rather than mix two atlases."""
        for series_dir in self.series_dirs():
            for path in self.record_paths(series_dir):
                record = self.read_record(path)
                try:
                    found = settings_of_record(record).identity()
                except (TypeError, ValueError) as error:
                    raise AtlasError(f"{path} holds no valid atlas settings ({error}) and "
                                     f"{self.root / 'atlas.json'} is missing: move the record "
                                     "out of the atlas, or " + _DELETE) from error
                changed = differences(found, settings.identity())
                if changed:
                    raise AtlasError(
                        f"{self.root / 'atlas.json'} is missing, and {path} was rendered with "
                        "other settings; refusing to mix two atlases. Differences: "
                        + "; ".join(changed) + ". Use the atlas's settings to resume it, or "
                        "another output directory.")

    def open(self, settings: AtlasSettings) -> None:
        """Create the atlas, or check that an existing one has the same settings (those of
        ``atlas.json``, or of every record if it is missing)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise AtlasWriteError(f"cannot create the atlas directory {self.root}: "
                                  f"{error}") from error
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise AtlasWriteError(f"the atlas directory {self.root} is not a writable directory")
        for path in sorted(self.root.glob("examples/*/examples.json")):
            found = read_json(path).get("identity", {}).get("weights_sha256")
            if found != settings.weights_sha256:
                raise AtlasError(f"{path} holds dataset examples of weights {found}, but this "
                                 f"model's weights are {settings.weights_sha256}: they would "
                                 "be shown beside its units and mislead. Use the examples' "
                                 "model, or another output directory.")
        if not (self.root / "atlas.json").exists():
            self._check_records_settings(settings)
        data = {"format": ATLAS_FORMAT, "identity": settings.identity(),
                "settings": settings.as_dict()}
        self._claim(self.root / "atlas.json", data, "identity", "settings")

    def settings(self) -> AtlasSettings:
        """The settings recorded in ``atlas.json``."""
        path = self.root / "atlas.json"
        if not path.is_file():
            raise AtlasError(f"{self.root} is not an atlas: it has no atlas.json")
        data = read_json(path)
        if data.get("format") != ATLAS_FORMAT:
            raise AtlasError(f"{path} has format {data.get('format')!r}; this version of "
                             f"lucent-core reads {ATLAS_FORMAT!r}")
        return AtlasSettings.from_dict(data["settings"])

    @contextmanager
    def worker_lock(self, worker: tuple[int, int]) -> Iterator[None]:
        """Hold ``worker`` (index, count)'s lock: a second process with the same share fails,
        and so does a share of another split of the units while one of that split runs.

        Two processes rendering the same units would not corrupt anything (every file is
        written atomically) but would do the work twice, which is usually a mistake (a job
        started twice, a requeued job whose first run is still alive, ``--shard 0/2`` started
        beside a running ``--shard 1/4``). One after the other, splits may change freely: units
        already done are skipped. The lock is an advisory ``flock`` that the operating system
        drops when its process ends, however it ends, so a crashed run never blocks the next.
        No-op where ``fcntl`` is missing (Windows).

        Example:
            >>> import tempfile
            >>> store = AtlasStore(tempfile.mkdtemp())
            >>> with store.worker_lock((0, 2)):
            ...     with store.worker_lock((0, 2)):
            ...         pass
            Traceback (most recent call last):
            ...
            lucent_core.results.AtlasError: worker 0/2 of this atlas is already running ...
        """
        if fcntl is None:
            yield
            return
        index, count = worker
        locks = self.root / ".locks"
        path = locks / f"worker-{index}-of-{count}.lock"
        try:
            locks.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+", encoding="utf-8")
        except OSError as error:
            raise AtlasWriteError(f"cannot create the lock file {path}: {error}") from error
        with handle:
            # a few tries: another split's start-up check holds this lock for a moment
            if not _try_flock(handle, fcntl.LOCK_EX, tries=5):
                raise AtlasError(f"worker {index}/{count} of this atlas is already running "
                                 f"({_holder(handle)}); wait for it to finish, or stop it and "
                                 "run again to resume")
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                         f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}\n")
            handle.flush()
            try:
                other = _running_other_split(locks, count)
                if other:
                    raise AtlasError(
                        f"worker {index}/{count} cannot start while worker {other[0]} of this "
                        f"atlas is running ({other[1]}): two splits of the units would render "
                        "the same units twice. Give every worker running at once the same "
                        "--shard count (a later run may use another; finished units are skipped)")
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def check_layer_spelling(self, requested: Sequence[Series],
                             same_module: Callable[[str, str], bool]) -> None:
        """:func:`lucent_core.results.check_layer_spelling` for the requested series."""
        check_layer_spelling(self.root, [s.layer for s in requested], same_module)

    def open_series(self, series: Series, count: int) -> None:
        """Create the series' directory, or check an existing one is the same series."""
        data = {"identity": series.identity(), "name": series.dir, "dir": series.dir,
                "layer": series.layer, "kind": series.kind, "source": series.source,
                "count": count}
        self._claim(self.root / series.dir / "series.json", data, "identity", "series")

    def series_dirs(self) -> list[Path]:
        """Directories of the series present, sorted by name."""
        return sorted(p.parent for p in self.root.glob("*/series.json"))

    # -- units ----------------------------------------------------------------------------
    def image_path(self, series: Series, unit: int) -> Path:
        return self.root / series.dir / "units" / f"{unit:05d}.png"

    def record_path(self, series: Series, unit: int) -> Path:
        return self.root / series.dir / "units" / f"{unit:05d}.json"

    def failure_path(self, series: Series, unit: int) -> Path:
        return self.root / series.dir / "units" / f"{unit:05d}.failed.json"

    def record_paths(self, series_dir: Path) -> list[Path]:
        """The unit records of one series directory, in unit order; first, any other ``.json``
        or ``.png`` in its units folder (a copy, a note) is refused, naming it."""
        units = series_dir / "units"
        for path in sorted([*units.glob("*.json"), *units.glob("*.png")]):
            if not _UNIT_FILE.fullmatch(path.name):
                raise AtlasError(f"{path} is not a file of the atlas (units are named like "
                                 "00001.png and 00001.json; a copy or a note confuses resumes "
                                 f"and the index): move it out of {units}")
        return sorted((p for p in units.glob("*.json") if not p.name.endswith(".failed.json")),
                      key=_unit_number)

    def read_record(self, path: Path) -> dict:
        """The unit record at ``path``, checked: a JSON object with an integer ``unit``, the
        number in its file name, and the ``image`` beside it (``<series>/units/<name>.png``)."""
        record = read_json(path)
        if not isinstance(record, dict):
            raise AtlasError(f"{path} is not a unit record (a JSON object), it holds "
                             f"{type(record).__name__}: move it out of the atlas, or {_DELETE}")
        for key, kind in _RECORD_KEYS.items():
            value = record.get(key)
            if (key in record or key in ("unit", "image")) and (
                    not isinstance(value, kind) or isinstance(value, bool)):
                raise AtlasError(f"{path} is not a unit record: its {key!r} is {value!r:.60}, "
                                 f"not of type {getattr(kind, '__name__', 'number')}: move it "
                                 f"out of the atlas, or {_DELETE}")
        if record["unit"] != int(path.stem):
            raise AtlasError(f"{path} says it is unit {record['unit']}, but its name says "
                             f"{int(path.stem)}: a record's unit must be the number in its "
                             f"name; {_DELETE}")
        own = path.with_suffix(".png").relative_to(self.root).as_posix()
        if record["image"] != own:
            raise AtlasError(f"{path} names the image {record['image']!r}; a record may name "
                             f"only its own picture, {own!r}, in its units folder: {_DELETE}")
        return record

    @staticmethod
    def picture_matches(path: Path, record: dict) -> bool:
        """Whether the PNG beside record ``path`` is there and has the SHA256 the record holds;
        for a record made before records held one, whether the PNG decodes whole (so older
        atlases resume without rendering everything again)."""
        picture = path.with_suffix(".png")
        try:
            if "sha256" in record:
                return record["sha256"] == sha256sum(picture)
            with Image.open(picture) as image:
                image.load()
            return True
        except (OSError, SyntaxError, ValueError):  # missing, truncated or not a PNG
            return False

    def is_done(self, series: Series, unit: int) -> bool:
        """True once the unit's record (written after its PNG) exists and its PNG is the one
        the record names, or once it failed (a ``.failed.json`` record: delete it to try the
        unit again). A damaged, replaced or missing PNG makes its unit not done."""
        if self.failure_path(series, unit).is_file():
            return True
        path = self.record_path(series, unit)
        return path.is_file() and self.picture_matches(path, self.read_record(path))

    def write_failure(self, series: Series, unit: int, record: dict) -> None:
        """Record that the unit could not be rendered (no PNG)."""
        try:
            write_json(self.failure_path(series, unit), record)
        except OSError as error:
            raise AtlasWriteError(f"could not write {self.failure_path(series, unit)}: "
                                  f"{error}") from error

    def failures(self, series_dir: Path) -> list[dict]:
        """The failure records of one series directory, in unit order."""
        return [read_json(p) for p in sorted((series_dir / "units").glob("*.failed.json"),
                                               key=_unit_number)]

    def write_unit(self, series: Series, unit: int, image: np.ndarray, record: dict) -> None:
        """Save the unit's PNG, then its record with the PNG's ``sha256`` (the record marks it
        finished)."""
        try:
            picture = save_png(image, self.image_path(series, unit))
            write_json(self.record_path(series, unit), {**record, "sha256": sha256sum(picture)})
        except OSError as error:
            raise AtlasWriteError(
                f"could not write unit {unit} of {series.dir} in {self.root}: {error}. Every "
                "unit finished before it is kept; fix the problem (disk space, permissions) "
                "and run the same command again to resume.") from error

    def records(self, series_dir: Path) -> list[dict]:
        """The checked records of one series directory, in unit order (by number: names grow
        past five digits at unit 100000), of units with a PNG only. A PNG that is not the one
        its record names (damaged or replaced) is an error naming it."""
        found = []
        for path in self.record_paths(series_dir):
            picture = path.with_suffix(".png")
            if not picture.is_file():
                continue
            record = self.read_record(path)
            if not self.picture_matches(path, record):
                raise AtlasError(
                    f"{picture} is not the picture its record {path.name} names (unreadable, "
                    "damaged or replaced since it was rendered: its SHA256 differs, or the "
                    "record, from an older lucent-core, holds none): run the atlas command "
                    "again to render the unit again (a resume does so), or delete both files")
            found.append(record)
        return found
