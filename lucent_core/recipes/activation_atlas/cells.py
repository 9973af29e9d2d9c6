"""Binning an activation atlas: the laid-out activation vectors cut into an ``N x N`` grid.

Step (3) of an activation atlas (Carter, Armstrong, Schubert, Johnson & Olah, "Exploring Neural
Networks with Activation Atlases", Distill 2019). Every collected vector has a place in the
unit square from the 2-D layout; the square is cut into ``grid x grid`` cells, and every cell
holding at least ``min_count`` vectors becomes one picture of the atlas: the direction of its
vectors' average, later rendered (:mod:`.render`). Sparse cells are left empty: their average
is too noisy to stand for a region of the layer's space. For classifiers each cell also keeps
the classes its vectors support most, and every cell keeps the indices of the vectors nearest
its average, whose dataset patches the page shows beside the rendering.

Averages are taken in chunks straight from the ``float16`` memory map of the collection, so
memory stays bounded by the grid, not by the number of vectors. :func:`whitening` gives the
inverse square root of the activations' covariance (Lucid's atlases optionally render whitened
directions, which stops a few high-variance channels from dominating every picture), and
:func:`class_filter` keeps the vectors that most support one class (the paper's *class
activation atlases*).

On disk (:func:`plan_cells`): ``cells.json`` (the grid, the plan's settings and one entry per
cell) and ``cell_vectors.npy`` (the cells' averages, float32), in the atlas directory or, for a
class atlas, in ``class_<N>/`` under it.

Example:
    >>> rng = np.random.default_rng(0)
    >>> layout = np.array([[0.1, 0.1]] * 5 + [[0.9, 0.9]] * 5, dtype=np.float32)
    >>> vectors = np.concatenate([np.eye(3)[[0] * 5], np.eye(3)[[2] * 5]]).astype(np.float16)
    >>> cells = bin_cells(layout, vectors, grid=2, min_count=3)
    >>> cells.rows.tolist(), cells.cols.tolist(), cells.counts.tolist()
    ([0, 1], [0, 1], [5, 5])
    >>> cells.vectors.round(3).tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from lucent_core import validate
from lucent_core.results import AtlasError, derived_seed, differences, read_json, write_json
from lucent_core.io import save_npy, sha256sum
from lucent_core.validate import index, integer, real, shape

__all__ = ["CELLS_FORMAT", "NEAREST", "TOP_CLASSES", "Cells", "bin_cells", "cell_done",
           "cell_name", "cell_seed", "class_filter", "plan_cells", "plan_dir", "read_cells",
           "whitening"]

CELLS_FORMAT = 1
NEAREST = 8          # vectors nearest each cell's average kept (their patches are shown)
TOP_CLASSES = 5      # classes kept per cell
CHUNK = 65536        # vectors read from the memory map at a time


@dataclass
class Cells:
    """The non-empty cells of an atlas grid, in row-major order.

    Attributes:
        grid: cells per side.
        min_count: the fewest vectors a kept cell holds.
        rows, cols: ``(K,)`` each cell's row (0 at the top) and column (0 at the left).
        counts: ``(K,)`` vectors in each cell.
        vectors: ``(K, C)`` float32, each cell's average vector.
        top_classes: per cell, up to :data:`TOP_CLASSES` ``(class, score)`` pairs, best first:
            the classes its vectors support most (score: the summed attribution divided by
            the cell's count); empty lists without class data.
        nearest: per cell, the row indices (in ``vectors.npy``) of up to :data:`NEAREST` of
            its vectors with the highest cosine similarity to its average, nearest first.
        seed: the plan's seed; each cell's own seed is :func:`cell_seed` of it (:attr:`seeds`).
        settings: what the plan was made from (empty for :func:`bin_cells` alone).
    """

    grid: int
    min_count: int
    rows: np.ndarray
    cols: np.ndarray
    counts: np.ndarray
    vectors: np.ndarray
    top_classes: list = field(default_factory=list)
    nearest: list = field(default_factory=list)
    seed: int = 0
    settings: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def seeds(self) -> list[int]:
        """Each cell's own seed, from the plan's seed and the cell's place only."""
        return [cell_seed(self.seed, r, c) for r, c in zip(self.rows.tolist(),
                                                            self.cols.tolist())]

    def names(self) -> list[str]:
        """Each cell's file stem, ``r{row:03d}_c{col:03d}``."""
        return [cell_name(r, c) for r, c in zip(self.rows.tolist(), self.cols.tolist())]

    def to_json(self) -> dict:
        """The content of ``cells.json``."""
        cells = [{"row": r, "col": c, "count": n, "seed": s,
                  "top_classes": [[int(k), round(float(v), 6)] for k, v in top],
                  "nearest": [int(i) for i in near]}
                 for r, c, n, s, top, near in zip(self.rows.tolist(), self.cols.tolist(),
                                                  self.counts.tolist(), self.seeds,
                                                  self.top_classes, self.nearest)]
        return {"format": CELLS_FORMAT, "grid": self.grid, "min_count": self.min_count,
                "seed": self.seed, "settings": self.settings, "cells": cells}


def cell_seed(seed: int, row: int, col: int) -> int:
    """A cell's own seed: a hash of the plan's seed and the cell's place (63 bits).

    Example:
        >>> cell_seed(0, 1, 2) == cell_seed(0, 1, 2), cell_seed(0, 1, 2) == cell_seed(0, 2, 1)
        (True, False)
    """
    return derived_seed("activation_atlas", int(seed), int(row), int(col))


def cell_name(row: int, col: int) -> str:
    """The file stem of a cell's rendering and record.

    Example:
        >>> cell_name(3, 12)
        'r003_c012'
    """
    return f"r{row:03d}_c{col:03d}"


def plan_dir(out: "str | os.PathLike", subdir: "str | None" = None) -> Path:
    """The directory of one plan: the atlas directory, or ``subdir`` under it (a class atlas's
    ``class_<N>``).

    Example:
        >>> plan_dir("atlas", "class_3").as_posix()
        'atlas/class_3'
    """
    root = Path(out)
    if subdir is None:
        return root
    validate.instance("subdir", subdir, str, "a folder name such as 'class_3'")
    if subdir in ("", ".", "..") or "/" in subdir or "\\" in subdir:
        raise ValueError(f"subdir must be one folder name such as 'class_3', got {subdir!r}")
    return root / subdir


def cell_done(directory: Path, name: str, settings: dict | None = None) -> bool:
    """Whether the cell ``name`` of the plan in ``directory`` is rendered: its record exists,
    names its PNG's SHA256 and (when given) holds these render ``settings``.

    Example:
        >>> import tempfile
        >>> cell_done(Path(tempfile.mkdtemp()), "r000_c000")
        False
    """
    record_path = directory / "cells" / f"{name}.json"
    try:
        record = read_json(record_path)
        matches = record.get("sha256") == sha256sum(directory / "cells" / f"{name}.png")
    except (OSError, AtlasError):
        return False
    return matches and (settings is None or record.get("settings") == settings)


# --- binning ----------------------------------------------------------------------------------

def _chunks(count: int):
    return ((start, min(start + CHUNK, count)) for start in range(0, count, CHUNK))


def _rows_of(vectors, indices: np.ndarray | None, start: int, stop: int) -> np.ndarray:
    rows = vectors[start:stop] if indices is None else vectors[indices[start:stop]]
    return np.asarray(rows, dtype=np.float64)


def _top_classes(totals: np.ndarray, counts: np.ndarray) -> list[list[tuple[int, float]]]:
    found = []
    for cell, row in enumerate(totals):
        order = np.argsort(-row, kind="stable")[:TOP_CLASSES]
        found.append([(int(k), float(row[k] / counts[cell])) for k in order if row[k] > 0])
    return found


def bin_cells(layout: np.ndarray, vectors, grid: int = 20, min_count: int = 3,
              class_ids: np.ndarray | None = None, class_scores: np.ndarray | None = None,
              *, indices: np.ndarray | None = None) -> Cells:
    """Cut the laid-out vectors into a ``grid x grid`` grid and average each full cell.

    Point ``(x, y)`` of the layout falls in column ``floor(x * grid)`` and row
    ``floor(y * grid)`` (1.0 in the last); only cells with at least ``min_count`` vectors are
    kept. Vectors are read ``65536`` at a time (a ``float16`` memory map is never loaded
    whole) and summed in float64.

    Args:
        layout: ``(N, 2)`` points ``(x, y)`` in [0, 1], x to the right, y downward.
        vectors: ``(M, C)`` array or memory map; point ``i`` is row ``i`` (or ``indices[i]``).
        grid: cells per side.
        min_count: the fewest vectors a kept cell holds.
        class_ids, class_scores: ``(M, k)`` each vector's top classes and their attribution
            scores (both or neither): each cell then keeps the classes with the highest summed
            scores.
        indices: ``(N,)`` the rows of ``vectors`` the points are (default: ``0..N-1``).

    Returns:
        :class:`Cells`, in row-major order.

    Raises:
        ValueError: for bad shapes, or when no cell holds ``min_count`` vectors (use a
            smaller grid or min_count).

    Example:
        >>> layout = np.array([[0.2, 0.7], [0.3, 0.6], [0.9, 0.1]])
        >>> cells = bin_cells(layout, np.ones((3, 4)), grid=2, min_count=2)
        >>> cells.rows.tolist(), cells.cols.tolist(), cells.nearest
        ([1], [0], [[0, 1]])
    """
    grid, min_count = integer("grid", grid, 1), integer("min_count", min_count, 1)
    count = shape("layout", layout, ("N", 2))[0]
    rows_available = shape("vectors", vectors, ("M", "C"))[0]
    if indices is not None:
        indices = np.asarray(indices, dtype=np.int64)
        shape("indices", indices, (count,))
    needed = count if indices is None else int(indices.max(initial=-1)) + 1
    if rows_available < needed:
        raise ValueError(f"vectors has {rows_available} rows; the layout's points need {needed}")
    if (class_ids is None) != (class_scores is None):
        raise ValueError("give class_ids and class_scores together, or neither")
    points = np.clip(np.nan_to_num(np.asarray(layout, dtype=np.float64), nan=0.5), 0, 1)
    place = np.minimum((points * grid).astype(np.int64), grid - 1)
    flat = place[:, 1] * grid + place[:, 0]                       # row-major cell number
    per_cell = np.bincount(flat, minlength=grid * grid)
    kept = np.flatnonzero(per_cell >= min_count)
    if not len(kept):
        raise ValueError(f"no cell of the {grid} x {grid} grid holds min_count={min_count} of "
                         f"the {count} vectors: use a smaller grid or min_count")
    slot = np.full(grid * grid, -1, dtype=np.int64)
    slot[kept] = np.arange(len(kept))
    where = slot[flat]                                            # each point's cell, or -1
    width = int(vectors.shape[1])
    sums = torch.zeros(len(kept), width, dtype=torch.float64)
    totals = np.zeros((len(kept), 0))
    for start, stop in _chunks(count):
        inside = where[start:stop] >= 0
        chunk = torch.from_numpy(_rows_of(vectors, indices, start, stop)[inside])
        sums.index_add_(0, torch.from_numpy(where[start:stop][inside]), chunk)
        if class_ids is not None:
            rows = np.arange(start, stop)[inside]
            rows = rows if indices is None else indices[rows]
            ids = np.asarray(class_ids[rows], dtype=np.int64)
            scores = np.asarray(class_scores[rows], dtype=np.float64)
            if ids.size and ids.max() >= totals.shape[1]:
                totals = np.pad(totals, ((0, 0), (0, int(ids.max()) + 1 - totals.shape[1])))
            cells = np.repeat(where[start:stop][inside], ids.shape[1])
            totals += np.bincount(cells * totals.shape[1] + ids.ravel(), scores.ravel(),
                                  minlength=totals.size).reshape(totals.shape)
    counts = per_cell[kept]
    means = (sums / torch.from_numpy(counts)[:, None]).numpy()
    nearest = _nearest(vectors, indices, where, means, count)
    top = _top_classes(totals, counts) if class_ids is not None else [[] for _ in kept]
    return Cells(grid=grid, min_count=min_count, rows=kept // grid, cols=kept % grid,
                 counts=counts, vectors=means.astype(np.float32), top_classes=top,
                 nearest=nearest)


def _nearest(vectors, indices: np.ndarray | None, where: np.ndarray, means: np.ndarray,
             count: int) -> list[list[int]]:
    """Per cell, its vectors with the highest cosine similarity to its mean (chunked)."""
    unit_means = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    cells = len(means)
    best_cell = np.repeat(np.arange(cells), NEAREST)
    best_score = np.full(cells * NEAREST, -np.inf)
    best_row = np.full(cells * NEAREST, -1, dtype=np.int64)
    for start, stop in _chunks(count):
        inside = where[start:stop] >= 0
        chunk = _rows_of(vectors, indices, start, stop)[inside]
        cell = where[start:stop][inside]
        cosine = (chunk * unit_means[cell]).sum(1) / np.maximum(np.linalg.norm(chunk, axis=1),
                                                                1e-12)
        rows = np.arange(start, stop)[inside]
        rows = rows if indices is None else indices[rows]
        all_cell = np.concatenate([best_cell, cell])
        all_score = np.concatenate([best_score, cosine])
        all_row = np.concatenate([best_row, rows])
        order = np.lexsort((all_row, -all_score, all_cell))     # by cell, best first
        rank = np.arange(len(order)) - np.searchsorted(all_cell[order], all_cell[order])
        keep = order[rank < NEAREST]
        best_cell, best_score, best_row = all_cell[keep], all_score[keep], all_row[keep]
    return [best_row[(best_cell == c) & (best_row >= 0)].tolist() for c in range(cells)]


# --- whitening and class atlases --------------------------------------------------------------

def whitening(vectors, ridge: float = 1e-5) -> torch.Tensor:
    """The inverse square root of the vectors' covariance: ``W`` with ``W @ cov @ W.T ~ I``.

    The covariance is centred and computed in float64 in chunks (a memory map is never loaded
    whole); ``ridge`` times the average variance is added to its diagonal first, so that
    directions the activations never take (a dead channel) are not blown up. Rendering
    ``W @ v`` instead of ``v`` (Lucid's ``whiten`` option) keeps the channels that vary most
    from dominating every cell's picture.

    Args:
        vectors: ``(N, C)`` array, memory map or tensor, ``N >= 2``.
        ridge: the regulariser, relative to the average variance (>= 0).

    Returns:
        ``(C, C)`` float32 symmetric matrix.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(500, 3)) * [1.0, 5.0, 0.2]
        >>> w = whitening(x).double()
        >>> cov = torch.from_numpy(np.cov(x.T, bias=True))
        >>> bool(torch.allclose(w @ cov @ w.T, torch.eye(3, dtype=torch.float64), atol=0.01))
        True
    """
    count, width = shape("vectors", vectors, ("N", "C"))
    ridge = real("ridge", ridge, minimum=0)
    if count < 2:
        raise ValueError(f"vectors must hold at least 2 rows for a covariance, got {count}")
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().cpu().numpy()
    total = np.zeros(width)
    moment = np.zeros((width, width))
    for start, stop in _chunks(count):
        chunk = np.asarray(vectors[start:stop], dtype=np.float64)
        total += chunk.sum(0)
        moment += chunk.T @ chunk
    mean = total / count
    cov = torch.from_numpy(moment / count - np.outer(mean, mean))
    cov = (cov + cov.T) / 2
    values, basis = torch.linalg.eigh(cov)
    values = values.clamp(min=0) + ridge * max(float(values.clamp(min=0).mean()), 1e-12)
    return (basis @ torch.diag(values.rsqrt()) @ basis.T).float()


def class_filter(class_ids: np.ndarray, class_scores: np.ndarray, class_index: int,
                 fraction: float = 0.1) -> np.ndarray:
    """The vectors that most support one class: a class activation atlas keeps only these.

    A vector's support for ``class_index`` is its attribution score where the class is among
    its top classes (activation x gradient of the class logit at its position). The vectors
    with a positive score are ranked by it and the best ``fraction`` of *all* vectors is kept
    (fewer if fewer support the class).

    Args:
        class_ids: ``(N, k)`` each vector's top classes.
        class_scores: ``(N, k)`` their scores.
        class_index: the class.
        fraction: the share of all vectors kept (> 0; 1 or more keeps every supporter).

    Returns:
        The kept row indices, sorted ascending (int64).

    Raises:
        ValueError: if no vector supports the class.

    Example:
        >>> ids = np.array([[3, 1], [1, 3], [2, 0], [3, 2]])
        >>> scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.5, 0.1], [0.2, 0.1]])
        >>> class_filter(ids, scores, 3, fraction=0.5).tolist()
        [0, 1]
    """
    count, k = shape("class_ids", class_ids, ("N", "k"))
    shape("class_scores", class_scores, (count, k))
    class_index = index("class_index", class_index, minimum=0)
    fraction = real("fraction", fraction, positive=True)
    ids = np.asarray(class_ids)
    scores = np.where(ids == class_index, np.asarray(class_scores, dtype=np.float64), -np.inf)
    support = scores.max(1)
    candidates = np.flatnonzero(support > 0)
    if not len(candidates):
        raise ValueError(f"no vector supports class {class_index}: choose another class_index")
    keep = max(1, int(round(fraction * count)))
    order = np.argsort(-support[candidates], kind="stable")[:keep]
    return np.sort(candidates[order])


# --- the plan on disk -------------------------------------------------------------------------

def _fit_square(points: np.ndarray) -> np.ndarray:
    """Points scaled to fill the unit square along their longer side, aspect kept, centred."""
    low, high = points.min(0), points.max(0)
    extent = high - low
    span = max(float(extent.max()), 1e-12)
    return (points - low) / span + (1 - extent / span) / 2


def read_cells(out: "str | os.PathLike", subdir: "str | None" = None) -> Cells:
    """The plan of an atlas directory (``cells.json`` and ``cell_vectors.npy``), as
    :func:`plan_cells` wrote it.

    Example:
        >>> read_cells("no-such-atlas")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no cells.json in no-such-atlas: run plan_cells first
    """
    directory = plan_dir(out, subdir)
    path = directory / "cells.json"
    if not path.is_file():
        raise FileNotFoundError(f"no cells.json in {directory}: run plan_cells first")
    data = read_json(path)
    vectors = np.load(directory / "cell_vectors.npy")
    entries = data["cells"]
    if len(vectors) != len(entries):
        raise AtlasError(f"{directory}/cell_vectors.npy has {len(vectors)} rows but cells.json "
                         f"{len(entries)} cells: run plan_cells again")

    def column(key: str) -> np.ndarray:
        return np.array([cell[key] for cell in entries], dtype=np.int64)

    return Cells(grid=data["grid"], min_count=data["min_count"], rows=column("row"),
                 cols=column("col"), counts=column("count"), vectors=vectors,
                 top_classes=[[tuple(pair) for pair in cell["top_classes"]] for cell in entries],
                 nearest=[cell["nearest"] for cell in entries], seed=data["seed"],
                 settings=data.get("settings", {}))


def plan_cells(out: "str | os.PathLike", grid: int = 20, min_count: int = 3,
               class_index: int | None = None, seed: int = 0, *, fraction: float = 0.1
               ) -> Cells:
    """Bin the collected vectors of an atlas directory and write the plan of its cells.

    Reads ``collect.json``, ``vectors.npy``, ``layout.npy`` (and the class files) from ``out``,
    bins with :func:`bin_cells` and writes ``cells.json`` and ``cell_vectors.npy``. With
    ``class_index`` only the vectors of :func:`class_filter` are binned, their layout points
    rescaled to fill the square, and the plan goes to ``out/class_<N>/``. Each cell gets its
    own seed from ``(seed, row, col)`` (:func:`cell_seed`), so its picture does not depend on
    which batch or shard renders it.

    A plan with other settings (or made from another layout) is replaced only while none of
    its cells is rendered; otherwise the call is refused, naming the differences.

    Args:
        out: the atlas directory (collected and laid out).
        grid: cells per side.
        min_count: the fewest vectors a kept cell holds.
        class_index: make a class atlas of this class (classifiers only).
        seed: the plan's seed.
        fraction: for a class atlas, the share of all vectors kept (:func:`class_filter`).

    Returns:
        The :class:`Cells` written.

    Raises:
        FileNotFoundError: without a collection or a layout.
        AtlasError: the layout is older than the collection, or rendered cells exist with
            another plan.
        ValueError: bad arguments, or no cell holds ``min_count`` vectors.

    Example:
        >>> plan_cells("no-such-atlas")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no collect.json in no-such-atlas: collect activations first
    """
    root = Path(out)
    grid, min_count = integer("grid", grid, 1), integer("min_count", min_count, 1)
    seed = validate.seed("seed", seed)
    for name in ("collect.json", "layout.json"):
        if not (root / name).is_file():
            step = "collect activations" if name == "collect.json" else "lay the vectors out"
            raise FileNotFoundError(f"no {name} in {root}: {step} first")
    collected, laid_out = read_json(root / "collect.json"), read_json(root / "layout.json")
    count = int(collected["count"])
    if laid_out.get("count") != count:
        raise AtlasError(f"the layout of {root} has {laid_out.get('count')} points but the "
                         f"collection {count} vectors: lay the vectors out again")
    layout = np.load(root / "layout.npy", mmap_mode="r")
    vectors = np.load(root / "vectors.npy", mmap_mode="r")
    settings = {"grid": grid, "min_count": min_count, "seed": seed, "class_index": class_index,
                "count": count, "layer": collected.get("layer"), "layout": laid_out,
                "collection": {k: collected.get(k) for k in ("images_sha256", "weights_sha256")}}
    indices, class_ids, class_scores = None, None, None
    if int(collected.get("classes", 0)):
        class_ids = np.load(root / "classes.npy", mmap_mode="r")
        class_scores = np.load(root / "class_scores.npy", mmap_mode="r")
    points = np.asarray(layout[:count], dtype=np.float64)
    if class_index is not None:
        if class_ids is None:
            raise ValueError("class_index needs a classifier's collection (it has no classes)")
        indices = class_filter(class_ids[:count], class_scores[:count], class_index, fraction)
        class_index = settings["class_index"] = int(class_index)
        settings["fraction"] = float(fraction)
        points = _fit_square(points[indices])
    directory = root / f"class_{class_index}" if class_index is not None else root
    _check_replan(directory, settings)
    cells = bin_cells(points, vectors, grid, min_count, class_ids, class_scores,
                      indices=indices)
    cells = replace(cells, seed=seed, settings=settings)
    save_npy(directory / "cell_vectors.npy", cells.vectors)
    write_json(directory / "cells.json", cells.to_json())
    return cells


def _check_replan(directory: Path, settings: dict) -> None:
    """Refuse to replace a plan some of whose cells are rendered."""
    path = directory / "cells.json"
    if not path.is_file():
        return
    found = read_json(path).get("settings", {})
    if found == settings:
        return
    rendered = sorted((directory / "cells").glob("*.json"))
    if rendered:
        lines = "; ".join(differences(found, settings))
        raise AtlasError(f"{directory} holds {len(rendered)} rendered cells of another plan "
                         f"({lines}): plan into another atlas directory, or delete "
                         f"{directory / 'cells'} to start the renders again")
