"""Tests for lucent_core.recipes.activation_grid: pooling (exact activations, known averages),
one batched render of the live cells only, planted colour features rendered in their own
cells, the shared low-resolution parameterisation (neighbours closer, fits a target), the
mosaic layout, VGG16 HED on a photo, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lucent_core.activations import image_activations
from lucent_core.hooks import UnknownLayerError, capture, run_to_layers
from lucent_core.objectives import direction_neuron
from lucent_core.recipes import activation_grid as module
from lucent_core.recipes.activation_grid import ActivationGrid, SharedGridImage, activation_grid
from test_planted import fixed_conv

# 1x1 colour detectors: channel 0 red, 1 green, 2 blue (each silent on the other two colours)
COLOR_WEIGHTS = torch.tensor([[1.0, -0.5, -0.5],
                              [-0.5, 1.0, -0.5],
                              [-0.5, -0.5, 1.0]]).view(3, 3, 1, 1)
RED, BLUE = 0, 2


def color_net() -> nn.Sequential:
    """Layer "1": the colour detectors after their ReLU; "2": 4x4 mean pooled."""
    net = fixed_conv(COLOR_WEIGHTS)
    net.append(nn.AvgPool2d(4))
    return net


def red_blue_photo(size: int = 16, right: int = BLUE) -> np.ndarray:
    """(size, size, 3) float: red on the left half, ``right`` colour (or black: None) on the
    right half."""
    photo = np.zeros((size, size, 3), np.float32)
    photo[:, :size // 2, RED] = 1.0
    if right is not None:
        photo[:, size // 2:, right] = 1.0
    return photo


@pytest.fixture
def render_calls(monkeypatch):
    """The result of every render_vis call the recipe makes."""
    calls, original = [], module.render_vis

    def recording(*args, **kwargs):
        calls.append(original(*args, **kwargs))
        return calls[-1]
    monkeypatch.setattr(module, "render_vis", recording)
    return calls


# --- the cells' vectors ----------------------------------------------------------------------

def test_without_pooling_the_vectors_are_the_activations():
    photo = torch.rand(3, 6, 5, generator=torch.Generator().manual_seed(0))
    grid = activation_grid(color_net(), photo, "1", grid=None, cell_size=8, steps=1)
    expected = image_activations(color_net(), "1", photo)[0].permute(1, 2, 0)
    assert grid.vectors.shape == (6, 5, 3) and grid.rendered.shape == (6, 5)
    assert torch.equal(grid.vectors, expected)


def test_grid_average_pools_the_map():
    photo = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    activation = image_activations(color_net(), "2", photo)  # (1, 3, 4, 4)
    grid = activation_grid(color_net(), photo, "2", grid=2, cell_size=8, steps=1)
    torch.testing.assert_close(grid.vectors, F.avg_pool2d(activation, 2)[0].permute(1, 2, 0))
    assert grid.images.shape == (2, 2, 3, 8, 8)
    # a grid larger than the map keeps every position
    big = activation_grid(color_net(), photo, "2", grid=9, cell_size=8, steps=1)
    assert torch.equal(big.vectors, activation[0].permute(1, 2, 0))


# --- one batched render, dead cells skipped ---------------------------------------------------

def test_one_render_of_the_live_cells_dead_ones_blank(render_calls):
    photo = red_blue_photo(right=None)  # the right half is black: the detectors are silent
    grid = activation_grid(color_net(), photo, "1", grid=4, cell_size=8, steps=3)
    assert len(render_calls) == 1
    result = render_calls[0]
    assert result.image.shape == (8, 8, 8, 3) and result.thresholds == [3]  # 8 live cells
    assert "cells=8" in result.objective
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:, :2] = True
    assert torch.equal(grid.rendered, expected)
    assert (grid.images[:, 2:] == 1).all()                              # blank: white
    assert not (grid.images[:, :2] == 1).all()
    assert (grid.vectors[:, 2:] == 0).all() and (grid.vectors[:, :2, RED] > 0).all()
    # the live renders sit in their cells, row by row
    torch.testing.assert_close(grid.images[grid.rendered],
                               torch.from_numpy(result.image).permute(0, 3, 1, 2))


def cell_scores(net: nn.Module, layer: str, grid: ActivationGrid) -> torch.Tensor:
    """scores[i, j]: cell j's direction objective on cell i's render (cells row-major)."""
    images = grid.images.flatten(0, 1)
    vectors = grid.vectors.flatten(0, 1)
    with torch.no_grad(), capture(net, [layer]) as acts:
        run_to_layers(net, images, acts)
        return torch.tensor([[direction_neuron(layer, v, batch=i, cossim_pow=1.0)(acts).item()
                              for v in vectors] for i in range(len(images))])


def test_planted_colours_render_in_their_own_cells():
    net = color_net()
    grid = activation_grid(net, red_blue_photo(), "1", grid=4, cell_size=16, steps=64, seed=0)
    assert grid.rendered.all()
    red_left = torch.zeros(4, 4, dtype=torch.bool)
    red_left[:, :2] = True
    assert (grid.vectors[red_left].argmax(-1) == RED).all()
    assert (grid.vectors[~red_left].argmax(-1) == BLUE).all()
    redness = grid.images[:, :, 0].mean((-2, -1)) - grid.images[:, :, 2].mean((-2, -1))
    # measured (seeds 0-2): left cells 0.09..0.13 redder than blue, right cells 0.11..0.15 bluer
    assert (redness[red_left] > 0.05).all() and (redness[~red_left] < -0.05).all(), redness
    # each render serves its own cell better than any render of the other colour does
    scores = cell_scores(net, "1", grid)
    left = red_left.flatten()
    for j in range(16):
        assert scores[j, j] > scores[left != left[j], j].max() + 0.2, (j, scores[:, j])


# --- the shared parameterisation ---------------------------------------------------------------

def mean_distance(parts: torch.Tensor, where: torch.Tensor, far: bool) -> float:
    """Mean distance between the shared parts of cells 1 apart (``far``: 4 or more apart)."""
    gaps = (where[:, None] - where[None]).abs().sum(-1)
    pairs = gaps >= 4 if far else gaps == 1
    return torch.cdist(parts.flatten(1), parts.flatten(1))[pairs].mean().item()


def test_neighbouring_cells_share_more_than_distant_ones():
    torch.manual_seed(0)
    images = SharedGridImage(torch.ones(4, 8, dtype=torch.bool), 16, sd=1.0)
    assert images.blocks == (2, 4) and images().shape == (32, 3, 16, 16)
    with torch.no_grad():
        parts = images.shared_part()
    near, far = (mean_distance(parts, images.where, f) for f in (False, True))
    assert near < 0.5 * far, (near, far)
    # the shared part is smooth within a cell: it lives at a quarter of the resolution
    assert tuple(images.shared.inner().shape[-2:]) == (4, 4)
    # without sharing, there is no shared term at all
    alone = SharedGridImage(torch.ones(4, 8, dtype=torch.bool), 16, shared=False)
    assert alone.shared is None and not alone.shared_part().any()
    assert sum(p.numel() for p in alone.parameters()) == \
        sum(p.numel() for p in images.own.parameters())


@pytest.mark.parametrize("shared", [True, False])
def test_the_grid_parameterisation_fits_a_target(shared):
    torch.manual_seed(0)
    cells = torch.ones(3, 4, dtype=torch.bool)
    cells[1, 2] = False
    images = SharedGridImage(cells, 16, shared=shared)
    target = 0.2 + 0.6 * F.interpolate(torch.rand(11, 3, 4, 4), size=(16, 16), mode="bilinear",
                                       align_corners=False)
    optimizer = torch.optim.Adam(images.parameters(), 0.05)
    for _ in range(200):
        optimizer.zero_grad()
        loss = ((images() - target) ** 2).mean()
        loss.backward()
        optimizer.step()
    assert loss.item() < 5e-4  # measured: 4e-5 shared, 1e-4 not (start: 1.6e-2)


def test_render_at_and_describe():
    images = SharedGridImage(torch.ones(2, 3, dtype=torch.bool), 8)
    assert images.render_at((12, 12)).shape == (6, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(images.render_at((8, 8)), images())
    assert images.describe() == {"class": "SharedGridImage", "kind": None, "size": [8, 8],
                                 "grid": [2, 3], "cells": 6, "shared": True}


# --- the mosaic -----------------------------------------------------------------------------------

@pytest.mark.parametrize("gap", [0, 3])
def test_mosaic_places_each_cell_on_the_grid(gap):
    rows, cols, size = 2, 3, 5
    levels = 40 * torch.arange(rows * cols).view(rows, cols)  # a grey level (0..255) per cell
    shades = levels.float() / 255
    images = shades[:, :, None, None, None].expand(rows, cols, 3, size, size).clone()
    grid = ActivationGrid("x", images, torch.ones(rows, cols, 1),
                          torch.ones(rows, cols, dtype=torch.bool))
    mosaic = grid.mosaic(gap=gap)
    assert mosaic.size == (cols * size + (cols - 1) * gap, rows * size + (rows - 1) * gap)
    pixels = np.asarray(mosaic)
    for r in range(rows):
        for c in range(cols):
            top, left = r * (size + gap), c * (size + gap)
            cell = pixels[top:top + size, left:left + size]
            assert (cell == levels[r, c].item()).all(), (r, c)
    if gap:
        assert (pixels[size:size + gap] == 255).all() and (pixels[:, size:size + gap] == 255).all()


# --- the real VGG16 (offline HED weights) -----------------------------------------------------

def test_vgg_activation_grid_of_a_photo(vgg, render_calls):
    data = pytest.importorskip("skimage.data")
    grid = activation_grid(vgg, data.chelsea(), "block4_conv1", grid=3, cell_size=32, steps=4,
                           image_size=96)
    assert grid.images.shape == (3, 3, 3, 32, 32) and grid.vectors.shape == (3, 3, 512)
    assert grid.rendered.all() and 0 <= grid.images.min() and grid.images.max() <= 1
    activation = image_activations(vgg, "block4_conv1", data.chelsea(), 96)  # (1, 512, 12, 12)
    torch.testing.assert_close(grid.vectors, F.avg_pool2d(activation, 4)[0].permute(1, 2, 0))
    history = render_calls[0].history
    assert history[-1] > history[0]
    assert grid.mosaic(gap=2).size == (100, 100)


# --- bad input ----------------------------------------------------------------------------------

PHOTO = red_blue_photo()


@pytest.mark.parametrize("call, error, name", [
    (lambda net: activation_grid(net, PHOTO, "conv9"), UnknownLayerError, "conv9"),
    (lambda net: activation_grid(nn.Sequential(nn.Flatten(), nn.Linear(768, 4)), PHOTO, "1"),
     ValueError, "layer"),
    (lambda net: activation_grid(net, PHOTO, "1", grid=0), ValueError, "grid"),
    (lambda net: activation_grid(net, PHOTO, "1", grid=2.5), TypeError, "grid"),
    (lambda net: activation_grid(net, PHOTO, "1", cell_size=0), ValueError, "cell_size"),
    (lambda net: activation_grid(net, PHOTO, "1", cell_size="8"), TypeError, "cell_size"),
    (lambda net: activation_grid(net, PHOTO, "1", steps=-1), ValueError, "steps"),
    (lambda net: activation_grid(net, PHOTO, "1", cossim_pow=-1.0), ValueError, "cossim_pow"),
    (lambda net: activation_grid(net, PHOTO, "1", shared="yes"), TypeError, "shared"),
    (lambda net: activation_grid(net, [[0.0]], "1"), TypeError, "source|image"),
    (lambda net: activation_grid(net, np.zeros((8, 8, 5)), "1"), ValueError, "source|image"),
    (lambda net: activation_grid(net, torch.zeros(2, 3, 8, 8), "1"), ValueError, "source|image"),
    (lambda net: activation_grid(net, np.zeros((8, 8, 3), np.float32), "1"), ValueError,
     "layer"),  # all dead: a black photo
    (lambda net: activation_grid("vgg", PHOTO, "1"), TypeError, "model"),
    (lambda net: ActivationGrid("1", torch.ones(1, 1, 3, 4, 4), torch.ones(1, 1, 3),
                                torch.ones(1, 1, dtype=torch.bool)).mosaic(gap=-1),
     ValueError, "gap"),
    (lambda net: SharedGridImage(torch.zeros(2, 2, dtype=torch.bool), 8), ValueError, "cells"),
    (lambda net: SharedGridImage(torch.ones(4), 8), ValueError, "cells"),
    (lambda net: SharedGridImage(torch.ones(2, 2, dtype=torch.bool), 0), ValueError,
     "cell_size"),
])
def test_activation_grid_rejects_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call(color_net())


def test_all_dead_error_suggests_another_layer():
    with pytest.raises(ValueError, match="another"):
        activation_grid(color_net(), np.zeros((8, 8, 3), np.float32), "1")
