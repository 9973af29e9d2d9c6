"""Tests for lucent_core.recipes.semantic_dictionary.

Known answers on a 1x1-conv net with planted colour channels, on a photo whose left columns
are red, middle columns black and right columns blue: channel 2 (red) is the top channel on
the left, channel 5 (blue) on the right, and the black middle fires nothing. Then the given
scores, the one batched render, pictures taken from a real unit atlas, the figure, the trained
VGG16 HED, and bad input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lucent_core import atlas as unit_atlas
from lucent_core.activations import image_activations, load_image
from lucent_core.hooks import UnknownLayerError
from lucent_core.recipes import semantic_dictionary as module
from lucent_core.recipes.semantic_dictionary import SemanticDictionary, semantic_dictionary

#: 1x1 colour units (rows: output channels; columns: R, G, B).
WEIGHTS = torch.tensor([[0.1, 0.1, 0.1],     # 0: brightness, weak everywhere lit
                        [-0.5, 1.0, -0.5],   # 1: green (silent on the photo)
                        [1.0, -0.5, -0.5],   # 2: red
                        [0.3, 0.0, 0.0],     # 3: a weaker red
                        [0.0, 0.0, 0.3],     # 4: a weaker blue
                        [-0.5, -0.5, 1.0]])  # 5: blue
RED, DARK, BLUE = slice(0, 2), slice(2, 4), slice(4, 6)  # columns of the 4 x 6 positions
FAST = {"steps": 2, "size": 16}


def planted_net() -> nn.Sequential:
    """"0": the colour units, "1": after the ReLU, "2": 4 x 4 mean pooled, "3": flattened."""
    conv = nn.Conv2d(3, 6, 1)
    with torch.no_grad():
        conv.weight.copy_(WEIGHTS.view(6, 3, 1, 1))
        conv.bias.zero_()
    return nn.Sequential(conv, nn.ReLU(), nn.AvgPool2d(4), nn.Flatten())


def planted_photo() -> np.ndarray:
    """(16, 24, 3) uint8: red, black and blue bands, 8 px wide (two positions of layer "2")."""
    photo = np.zeros((16, 24, 3), np.uint8)
    photo[:, :8, 0] = 255
    photo[:, 16:, 2] = 255
    return photo


@pytest.fixture
def renders(monkeypatch) -> list:
    """The channels of every render the module makes (render_vis wrapped, not replaced)."""
    calls, original = [], module.render_vis

    def wrapper(model, objective, *args, **kwargs):
        calls.append(objective.name)
        return original(model, objective, *args, **kwargs)
    monkeypatch.setattr(module, "render_vis", wrapper)
    return calls


# --- known answers ---------------------------------------------------------------------------

def test_planted_channels_are_found_where_they_fire_best_first(renders):
    found = semantic_dictionary(planted_net(), planted_photo(), "2", k=3, **FAST)
    assert isinstance(found, SemanticDictionary) and found.layer == "2"
    assert found.channels.shape == found.scores.shape == (4, 6, 3)
    assert found.channels.dtype == torch.int64 and found.scores.dtype == torch.float32
    assert found.activations.shape == (6, 4, 6)
    assert (found.channels[:, RED] == torch.tensor([2, 3, 0])).all()
    assert (found.channels[:, BLUE] == torch.tensor([5, 4, 0])).all()
    torch.testing.assert_close(found.scores[:, RED], torch.tensor([1.0, 0.3, 0.1]).expand(4, 2, 3))
    # the scores are the activations of the channels named, best first
    gathered = torch.gather(found.activations.permute(1, 2, 0), 2, found.channels)
    torch.testing.assert_close(found.scores, gathered)
    assert (found.scores[..., :-1] >= found.scores[..., 1:]).all()
    # the black middle fires nothing: its entries stay, score 0, ties to the lowest channels
    assert (found.scores[:, DARK] == 0).all()
    assert (found.channels[:, DARK] == torch.tensor([0, 1, 2])).all()
    # a picture for exactly the channels that appear, all from one render
    assert set(found.pictures) == set(found.source) == {0, 1, 2, 3, 4, 5}
    assert renders == ["batch_channels('2', [0, 1, 2, 3, 4, 5])"]


@pytest.mark.parametrize("k", [1, 2, 6])
def test_k_entries_per_position(k):
    found = semantic_dictionary(planted_net(), planted_photo(), "2", k=k, **FAST)
    assert found.channels.shape == (4, 6, k)
    assert (found.channels[:, RED, 0] == 2).all() and (found.channels[:, BLUE, 0] == 5).all()
    assert set(found.pictures) == set(found.channels.unique().tolist())
    # every position ranks each channel at most once
    assert all(len(set(row)) == k for row in found.channels.reshape(-1, k).tolist())


def test_given_scores_rank_the_channels_instead_of_the_activations(renders):
    scores = torch.zeros(6, 4, 6)
    scores[1] = 3.0                          # the silent green unit: first everywhere
    scores[4, :, :3] = 2.0                   # the weak blue unit: second on the left half
    found = semantic_dictionary(planted_net(), planted_photo(), "2", k=2, scores=scores[None],
                                **FAST)
    assert (found.channels[..., 0] == 1).all()
    assert (found.channels[:, :3, 1] == 4).all()
    assert (found.channels[:, 3:, 1] == 0).all()      # ties: the lower channel
    torch.testing.assert_close(found.scores[..., 0], torch.full((4, 6), 3.0))
    # the activations are still the layer's own; the pictures follow the ranking
    assert found.activations[2, :, RED].min() == 1.0
    assert set(found.pictures) == {0, 1, 4}
    assert renders == ["batch_channels('2', [0, 1, 4])"]
    as_array = semantic_dictionary(planted_net(), planted_photo(), "2", k=2,
                                   scores=scores.numpy(), **FAST)
    assert torch.equal(as_array.channels, found.channels)


def test_the_image_size_and_the_preprocessing_are_used():
    found = semantic_dictionary(planted_net(), planted_photo(), "2", k=1, image_size=(8, 12),
                                **FAST)
    assert found.channels.shape == (2, 3, 1)
    swap = lambda x: x.flip(1)               # noqa: E731 - RGB -> BGR: red reads as blue
    found = semantic_dictionary(planted_net(), planted_photo(), "2", k=1, preprocess=swap,
                                **FAST)
    assert (found.channels[:, RED, 0] == 5).all() and (found.channels[:, BLUE, 0] == 2).all()


# --- rendering --------------------------------------------------------------------------------

def test_a_rendered_picture_shows_its_planted_channel(renders):
    net = planted_net()
    found = semantic_dictionary(net, planted_photo(), "1", k=1, steps=128, size=16, seed=1)
    assert found.channels.shape == (16, 24, 1)
    assert set(found.pictures) == {0, 2, 5} and set(found.source.values()) == {"rendered"}
    assert renders == ["batch_channels('1', [0, 2, 5])"]          # one batched render

    def mean(channel: int, picture: np.ndarray) -> float:
        return float(image_activations(net, "1", np.asarray(picture))[0, channel].mean())
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for channel, other in ((2, 5), (5, 2)):
        picture = found.pictures[channel]
        assert picture.mode == "RGB" and picture.size == (16, 16)
        # measured (seeds 0-3): 0.33-0.37 on its own picture, 0.15-0.16 on noise, 0.04-0.06
        # on the other colour's picture
        drawn = mean(channel, picture)
        assert drawn > 1.8 * mean(channel, noise), (channel, drawn, mean(channel, noise))
        assert drawn > 4 * mean(channel, found.pictures[other])


def test_renders_are_seeded():
    first = semantic_dictionary(planted_net(), planted_photo(), "2", k=1, seed=3, **FAST)
    again = semantic_dictionary(planted_net(), planted_photo(), "2", k=1, seed=3, **FAST)
    other = semantic_dictionary(planted_net(), planted_photo(), "2", k=1, seed=4, **FAST)
    assert np.array_equal(np.asarray(first.pictures[2]), np.asarray(again.pictures[2]))
    assert not np.array_equal(np.asarray(first.pictures[2]), np.asarray(other.pictures[2]))


# --- atlas --------------------------------------------------------------------------------------

def test_an_atlas_supplies_the_pictures_it_has_the_rest_are_rendered(tmp_path, renders):
    net = planted_net()
    unit_atlas.render_atlas(net, tmp_path / "atlas", ["2"], units=[2, 5], steps=2, size=16,
                            progress=False, index=False)
    found = semantic_dictionary(net, planted_photo(), "2", k=2, atlas=tmp_path / "atlas",
                                **FAST)
    assert set(found.pictures) == {0, 1, 2, 3, 4, 5}
    for channel in (2, 5):
        png = tmp_path / "atlas" / "2" / "units" / f"{channel:05d}.png"
        assert found.source[channel] == f"atlas:{png}"
        assert np.array_equal(np.asarray(found.pictures[channel]),
                              np.asarray(Image.open(png).convert("RGB")))
    assert {found.source[c] for c in (0, 1, 3, 4)} == {"rendered"}
    assert renders == ["batch_channels('2', [0, 1, 3, 4])"]


def test_an_atlas_that_has_every_picture_renders_nothing(tmp_path, renders):
    net = planted_net()
    unit_atlas.render_atlas(net, tmp_path, ["2"], steps=2, size=16, progress=False, index=False)
    found = semantic_dictionary(net, planted_photo(), "2", k=2, atlas=str(tmp_path), **FAST)
    assert all(source.startswith("atlas:") for source in found.source.values())
    assert renders == []


def test_an_atlas_of_other_weights_is_refused(tmp_path):
    net = planted_net()
    unit_atlas.render_atlas(net, tmp_path, ["2"], units=[2], steps=2, size=16, progress=False,
                            index=False)
    with torch.no_grad():
        net[0].bias.add_(0.01)
    with pytest.raises(ValueError, match="other weights"):
        semantic_dictionary(net, planted_photo(), "2", k=1, atlas=tmp_path, **FAST)


# --- the figure -----------------------------------------------------------------------------------

def test_figure_draws_each_position_its_pictures_sized_by_score():
    found = semantic_dictionary(planted_net(), planted_photo(), "2", k=2, **FAST)
    cell = 20                                # k = 2: two 10 px slots side by side
    figure = found.figure(cell=cell)
    assert figure.mode == "RGB" and figure.size == (6 * cell, 4 * cell)
    pixels = np.asarray(figure)
    # the best score of the dictionary fills its slot: channel 2's picture in a red block,
    # the one row of slots centred in the block
    expected = np.asarray(found.pictures[2].resize((10, 10), Image.BILINEAR))
    assert np.array_equal(pixels[5:15, 0:10], expected)
    # the second entry (score 0.3) is sqrt(0.3) as wide, centred in its slot
    side = int(10 * 0.3 ** 0.5)
    top, left = 5 + (10 - side) // 2, 10 + (10 - side) // 2
    expected = np.asarray(found.pictures[3].resize((side, side), Image.BILINEAR))
    assert np.array_equal(pixels[top:top + side, left:left + side], expected)
    # the black middle scores 0 everywhere: its blocks are blank (inside the grid lines)
    assert (pixels[1:cell, 2 * cell + 1:3 * cell] == 255).all()
    with_photo = found.figure(planted_photo(), cell=cell)
    assert with_photo.size == (2 * 6 * cell + module.GAP, 4 * cell)
    photo = np.asarray(with_photo)[:, :6 * cell]           # the bands, blurred where they meet
    assert (photo[:, :2 * cell - 5] == (255, 0, 0)).all()
    assert (photo[:, -2 * cell + 5:] == (0, 0, 255)).all()
    assert np.array_equal(np.asarray(with_photo)[:, -6 * cell:], pixels)


# --- the trained VGG16 (offline HED weights) ----------------------------------------------------

def test_vgg_semantic_dictionary_of_a_cat(vgg):
    skimage_data = pytest.importorskip("skimage.data")
    cat = skimage_data.chelsea()
    found = semantic_dictionary(vgg, cat, "block4_conv3", k=2, steps=4, size=32, image_size=96)
    assert found.channels.shape == (12, 12, 2) and found.activations.shape == (512, 12, 12)
    assert (found.scores[..., 0] > 0).all() and (found.scores[..., 0] >= found.scores[..., 1]).all()
    best = found.activations.max(0)
    torch.testing.assert_close(found.scores[..., 0], best.values)
    assert set(found.pictures) == set(found.channels.unique().tolist())
    assert all(p.size == (32, 32) for p in found.pictures.values())
    figure = found.figure(load_image(cat, 96), cell=16)
    assert figure.size == (2 * 12 * 16 + module.GAP, 12 * 16)
    assert np.asarray(figure)[:, -12 * 16:].std() > 10      # pictures drawn, not blank


# --- bad input ------------------------------------------------------------------------------------

def dictionary(**changes):
    arguments = {"model": planted_net(), "image": planted_photo(), "layer": "2", "k": 2, **FAST,
                 **changes}
    return semantic_dictionary(**arguments)


@pytest.mark.parametrize("changes, error, name", [
    (dict(k=0), ValueError, r"\bk\b"),
    (dict(k=7), ValueError, r"\bk\b"),
    (dict(k=1.5), TypeError, r"\bk\b"),
    (dict(layer="9x"), UnknownLayerError, "layer"),
    (dict(layer="3"), ValueError, "layer"),
    (dict(scores=torch.zeros(6, 4, 5)), ValueError, "scores"),
    (dict(scores=torch.zeros(5, 4, 6)), ValueError, "scores"),
    (dict(scores=torch.full((6, 4, 6), float("nan"))), ValueError, "scores"),
    (dict(scores=[[0.0]]), TypeError, "scores"),
    (dict(atlas="/no/such/atlas"), ValueError, "atlas"),
    (dict(atlas=3), TypeError, "atlas"),
    (dict(image=[[0.0]]), TypeError, "source|image"),
    (dict(image=np.zeros((8, 8, 5))), ValueError, "source|image"),
    (dict(image=torch.zeros(2, 3, 8, 8)), ValueError, "source|image"),
    (dict(steps=0), ValueError, "steps"),
    (dict(size=0), ValueError, "size"),
    (dict(seed=0.5), TypeError, "seed"),
    (dict(progress="no"), TypeError, "progress"),
])
def test_semantic_dictionary_rejects_bad_input(changes, error, name):
    with pytest.raises(error, match=name):
        dictionary(**changes)


def test_a_folder_that_is_not_an_atlas_is_refused(tmp_path):
    with pytest.raises(ValueError, match="atlas"):
        dictionary(atlas=tmp_path)


@pytest.mark.parametrize("cell, error", [(0, ValueError), (2.5, TypeError)])
def test_figure_rejects_bad_cells(cell, error):
    with pytest.raises(error, match="cell"):
        dictionary().figure(cell=cell)
