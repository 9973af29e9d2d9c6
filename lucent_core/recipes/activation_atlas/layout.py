"""Activation atlases, step 2: laying the collected activation vectors out in two dimensions.

The atlas places similar activation vectors near each other (Carter et al., "Exploring Neural
Networks with Activation Atlases", Distill 2019, use UMAP) so that binning the plane into a
grid gathers vectors of one kind per cell. Three methods:

- ``"umap"`` (McInnes, Healy & Melville 2018) through ``umap-learn``, the paper's choice: it
  keeps local neighbourhoods and much of the global arrangement. Seeded, it runs on one core:
  100,000 vectors take minutes (a first call in a process also spends ~10 s compiling).
- ``"tsne"`` (van der Maaten & Hinton 2008) through scikit-learn's Barnes-Hut t-SNE: clusters
  separate well, distances between them mean little; slower than UMAP on large samples.
- ``"pca"``: the projection on the two principal components, computed with torch alone
  (deterministic, seconds even for 100,000 vectors, but a linear view that crowds clusters).

With ``metric="cosine"`` (the default: directions matter, not lengths) PCA projects the
vectors scaled to unit length; UMAP and t-SNE take the metric as given.

The result is normalised to the unit square, aspect ratio kept: both axes are scaled by one
factor, the larger of the two spans between the 1st and 99th percentiles, centred, and clipped
to [0, 1], so that a few outliers do not shrink the rest into a corner (Lucid clips outliers
likewise). ``x`` (column 0) grows to the right, ``y`` (column 1) downward.

Example:
    >>> rng = np.random.default_rng(0)
    >>> points = layout(rng.normal(size=(50, 8)), "pca")
    >>> points.shape, points.dtype, bool(points.min() >= 0 and points.max() <= 1)
    ((50, 2), dtype('float32'), True)
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from lucent_core.validate import choice, flag, instance, integer, real, shape
from lucent_core.io import save_npy
from lucent_core.results import AtlasError, AtlasWriteError, read_json, write_json
from lucent_core.recipes.activation_atlas.collect import load_vectors

__all__ = ["LAYOUTS", "layout", "layout_atlas", "normalise_layout"]

#: The layout methods.
LAYOUTS = ("umap", "tsne", "pca")
_INSTALL = "pip install 'lucent_core[atlas]'"
_CHUNK = 65536  # rows cast from float16 to float32 at a time
_CLIP_PERCENTILES = (1.0, 99.0)
_DEFAULTS = {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine"}


def _as_float32(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` (an array, a memory map, a tensor) as a float32 array, cast in chunks."""
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().cpu().numpy()
    found = np.empty(vectors.shape, dtype=np.float32)
    for start in range(0, len(vectors), _CHUNK):
        found[start:start + _CHUNK] = vectors[start:start + _CHUNK]
    return found


def _pca(vectors: np.ndarray, metric: str) -> np.ndarray:
    """The projection on the two principal components (signs fixed: largest loading > 0);
    the covariance is summed in float64, chunk by chunk."""
    x = torch.from_numpy(vectors)
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    total, gram = torch.zeros(x.shape[1], dtype=torch.float64), 0
    for chunk in x.split(_CHUNK):
        total += chunk.double().sum(0)
        gram = gram + chunk.double().T @ chunk.double()
    mean = total / len(x)
    _, vecs = torch.linalg.eigh(gram / len(x) - torch.outer(mean, mean))  # ascending
    axes = vecs[:, -2:].flip(1)  # (C, 2): the two largest first
    axes = axes * axes.gather(0, axes.abs().argmax(0, keepdim=True)).sign()
    if axes.shape[1] < 2:  # one channel: the second coordinate is flat
        axes = torch.cat([axes, torch.zeros_like(axes)], 1)
    return ((x - mean.float()) @ axes.float()).numpy()


def _umap(vectors: np.ndarray, seed: int, n_neighbors: int, min_dist: float, metric: str
          ) -> np.ndarray:
    try:
        import umap
    except ImportError as error:
        raise ImportError(f"the UMAP layout needs umap-learn: {_INSTALL} (or use "
                          "method='pca', which needs nothing)") from error
    with warnings.catch_warnings():  # "n_jobs overridden to 1 by setting random_state": wanted
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden", category=UserWarning)
        reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(vectors) - 1),
                            min_dist=min_dist, metric=metric, random_state=seed)
        return reducer.fit_transform(vectors)


def _tsne(vectors: np.ndarray, seed: int, metric: str) -> np.ndarray:
    try:
        from sklearn.manifold import TSNE
    except ImportError as error:
        raise ImportError(f"the t-SNE layout needs scikit-learn: {_INSTALL} (or use "
                          "method='pca', which needs nothing)") from error
    perplexity = min(30.0, (len(vectors) - 1) / 3)  # must stay below the number of points
    return TSNE(n_components=2, perplexity=perplexity, metric=metric, init="pca",
                learning_rate="auto", random_state=seed).fit_transform(vectors)


def normalise_layout(points: np.ndarray) -> np.ndarray:
    """2-D points scaled into the unit square, aspect ratio kept, outliers clipped.

    Both axes are divided by the larger of their spans between the 1st and 99th percentiles,
    centred on 0.5 and clipped to [0, 1]; identical points all land on the centre.

    Example:
        >>> points = np.array([[0.0, 0.0], [4.0, 2.0], [2.0, 1.0]])  # x spans twice y's span
        >>> normalise_layout(points).astype(float).round(2).tolist()
        [[0.0, 0.24], [1.0, 0.76], [0.5, 0.5]]
    """
    low, high = np.percentile(points, _CLIP_PERCENTILES, axis=0)
    span = float((high - low).max())
    scaled = (points - (low + high) / 2) / (span if span > 0 else 1.0) + 0.5
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def _checked(method: str, seed: int, **options) -> tuple[str, int, dict]:
    """The method, the seed and the options that matter to it (``n_neighbors``, ``min_dist``
    and ``metric`` for UMAP, ``metric`` for the others), checked, defaults filled in."""
    method = choice("method", method, LAYOUTS)
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown layout option(s) {unknown}; choose from {tuple(_DEFAULTS)}")
    options = {**_DEFAULTS, **options}
    seed = integer("seed", seed, minimum=0)
    if seed >= 2**32:
        raise ValueError(f"seed must be an integer from 0 to 2**32 - 1, got {seed}")
    metric = instance("metric", options["metric"], str, "a metric's name such as 'cosine'")
    if method != "umap":  # t-SNE and PCA use the metric only
        return method, seed, {"metric": choice("metric", metric, ("cosine", "euclidean"))
                              if method == "pca" else metric}
    return method, seed, {"n_neighbors": integer("n_neighbors", options["n_neighbors"], 2),
                          "min_dist": real("min_dist", options["min_dist"], minimum=0),
                          "metric": metric}


def layout(vectors: "np.ndarray | torch.Tensor", method: str = "umap", *, seed: int = 0,
           n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "cosine") -> np.ndarray:
    """Lay ``(N, C)`` vectors out in the unit square: similar vectors near each other.

    Args:
        vectors: ``(N, C)`` array or tensor (float16 memory maps are cast in chunks); N >= 3.
        method: ``"umap"``, ``"tsne"`` or ``"pca"`` (see the module's docstring).
        seed: the random seed of UMAP and t-SNE (0 to 2**32 - 1; PCA is deterministic).
        n_neighbors: UMAP's neighbourhood size (at most N - 1 is used).
        min_dist: UMAP's smallest distance between laid-out points.
        metric: the distance between vectors: ``"cosine"`` or ``"euclidean"`` for every method,
            any metric umap-learn or scikit-learn knows for those.

    Returns:
        float32 ``(N, 2)`` positions (x, y) in [0, 1] (see :func:`normalise_layout`).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> centres = rng.normal(size=(2, 8)) * 5
        >>> points = layout(np.repeat(centres, 20, 0) + rng.normal(size=(40, 8)), "pca")
        >>> bool(abs(points[:20].mean(0) - points[20:].mean(0)).max() > 0.5)
        True
    """
    shape("vectors", vectors, ("N", "C"))
    if len(vectors) < 3:
        raise ValueError(f"vectors must hold at least 3 rows to lay out, got {len(vectors)}")
    method, seed, options = _checked(method, seed, n_neighbors=n_neighbors, min_dist=min_dist,
                                     metric=metric)
    x = _as_float32(vectors)
    if method == "umap":
        points = _umap(x, seed, **options)
    elif method == "tsne":
        points = _tsne(x, seed, **options)
    else:
        points = _pca(x, **options)
    return normalise_layout(np.asarray(points, dtype=np.float64))


def _vectors_sha256(vectors: np.ndarray) -> str:
    digest = hashlib.sha256()
    for start in range(0, len(vectors), _CHUNK):
        digest.update(np.ascontiguousarray(vectors[start:start + _CHUNK]).tobytes())
    return digest.hexdigest()


def layout_atlas(out: str | os.PathLike, method: str = "umap", *, seed: int = 0,
                 progress: bool = True, **options) -> np.ndarray:
    """Lay out the activation vectors collected under ``out``; write ``layout.npy`` and
    ``layout.json``.

    ``layout.npy`` is float32 ``(count, 2)`` in [0, 1], row ``i`` the position of vector ``i``;
    ``layout.json`` (written after it) holds ``{"method", "seed", "count", "options",
    "vectors_sha256"}``. When both exist with the same settings and the same vectors, the
    layout is read, not computed again; other settings compute it again and replace it.

    Args:
        out: the directory of a finished
            :func:`~lucent_core.recipes.activation_atlas.collect.collect_activations`.
        method: ``"umap"``, ``"tsne"`` or ``"pca"``.
        seed: the layout's random seed.
        progress: print what is being done and how long it took.
        **options: :func:`layout`'s ``n_neighbors``, ``min_dist``, ``metric``.

    Returns:
        The float32 ``(count, 2)`` layout.

    Example:
        >>> import tempfile
        >>> layout_atlas(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: no activation vectors in ...
    """
    method, seed, options = _checked(method, seed, **options)
    progress = flag("progress", progress)
    out = Path(out)
    collected = load_vectors(out)
    if not collected.complete:
        raise AtlasError(f"the collection in {out} is unfinished ({collected.count} vectors "
                         "so far): run collect_activations again with the same settings to "
                         "finish it first")
    settings = {"method": method, "seed": seed, "count": collected.count, "options": options,
                "vectors_sha256": _vectors_sha256(collected.vectors)}
    json_path, npy_path = out / "layout.json", out / "layout.npy"
    if json_path.is_file() and npy_path.is_file() and read_json(json_path) == settings:
        points = np.load(npy_path)
        if points.shape == (collected.count, 2):
            if progress:
                print(f"layout: {method} of {collected.count} vectors already in {npy_path}")
            return points
    if progress:
        print(f"layout: {method} of {collected.count} vectors ...", flush=True)
    started = time.perf_counter()
    points = layout(collected.vectors, method, seed=seed, **options)
    try:
        save_npy(npy_path, points)
        write_json(json_path, settings)
    except OSError as error:
        raise AtlasWriteError(f"could not write the layout in {out}: {error}") from error
    if progress:
        print(f"layout: done in {time.perf_counter() - started:.1f}s: {npy_path}")
    return points
