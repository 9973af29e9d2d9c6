"""Expanded weights, strongest connections and weight pictures (lucent_core.recipes.circuits).

Known answers: adjacent convolutions give the convolution's own weights; deeper pairs give the
brute-force response of a hand-linearised twin to unit deltas, or the sum over the paths of a
branching block; InceptionV1's mixed3b gives its four branches' composed weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lucent_core.hooks import UnknownLayerError
from lucent_core.models import create_model
from lucent_core.models.inceptionv1 import LocalResponseNorm, PaddedMaxPool2d
from lucent_core.recipes.circuits import (COOL, WARM, expanded_weights, top_inputs,
                                          top_outputs, weight_picture)
from lucent_core.relu import RedirectedReLU


def seeded(build, seed=0):
    torch.manual_seed(seed)
    return build()


def centre_crop(full: torch.Tensor, y: int, x: int, ry: int, rx: int) -> torch.Tensor:
    """``full[..., y - ry : y + ry + 1, x - rx : x + rx + 1]``, zeros outside the map."""
    return F.pad(full, (rx, rx, ry, ry))[..., y:y + 2 * ry + 1, x:x + 2 * rx + 1]


def delta_response(tail: nn.Module, source_shape: tuple[int, int, int]) -> torch.Tensor:
    """``(C_target, C_source, H, W)``: how a unit delta at each source unit and position moves
    each target channel at the target map's centre (response to the delta minus response to
    zeros), by brute force."""
    channels, height, width = source_shape
    deltas = torch.eye(channels * height * width).view(-1, channels, height, width)
    with torch.no_grad():
        response = tail(deltas) - tail(torch.zeros(1, *source_shape))
    cy, cx = response.shape[2] // 2, response.shape[3] // 2
    return response[:, :, cy, cx].T.reshape(-1, channels, height, width)


def aligned(position: int, target_length: int, source_length: int) -> int:
    """The source row whose centre is nearest the target row's: floor((p + 0.5) * S / T)."""
    return int(np.floor((position + 0.5) * source_length / target_length))


def assert_brute_force(weights: torch.Tensor, full: torch.Tensor, target_size: int) -> None:
    """``weights`` is ``full`` cropped around the aligned centre, holds all of it, and is no
    larger than needed."""
    kh, kw = weights.shape[2:]
    assert kh % 2 == 1 and kw % 2 == 1
    size = full.shape[2]
    y = aligned(target_size // 2, target_size, size)
    crop = centre_crop(full, y, y, kh // 2, kw // 2)
    torch.testing.assert_close(weights, crop, atol=1e-6, rtol=1e-5)
    outside = full.clone()  # nothing outside the crop (but rounding: the biases cancel)
    outside[..., y - kh // 2:y + kh // 2 + 1, y - kw // 2:y + kw // 2 + 1] = 0
    assert outside.abs().max() < 1e-5
    assert weights[:, :, [0, -1]].abs().sum() > 0 and weights[..., [0, -1]].abs().sum() > 0


# --- adjacent convolutions -----------------------------------------------------------------

@pytest.mark.parametrize("kernel", [3, (3, 5), 1])
def test_adjacent_convolutions_give_the_convolution_weights(kernel):
    padding = (kernel // 2) if isinstance(kernel, int) else (kernel[0] // 2, kernel[1] // 2)
    net = seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                       nn.Conv2d(4, 5, kernel, padding=padding)))
    weights = expanded_weights(net, "0", "2", size=12)
    assert torch.equal(weights, net[2].weight.detach())  # exactly, same orientation


# --- deeper: the brute-force response of the linearised twin -------------------------------

POOLS = {"3x3 stride 1": lambda: nn.MaxPool2d(3, 1, 1),
         "2x2 stride 2": lambda: nn.MaxPool2d(2),
         "3x3 stride 2 ceil": lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True)}
RELUS = {"relu": lambda: nn.ReLU(), "in place": lambda: nn.ReLU(inplace=True),
         "redirected": lambda: RedirectedReLU(True)}


def linear_twin(net: nn.Sequential) -> nn.Sequential:
    """The layers after ``net[0]``, sharing its weights, without ReLUs and with average pools."""
    layers = []
    for layer in list(net)[1:]:
        if isinstance(layer, nn.MaxPool2d):
            layers.append(nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding,
                                       layer.ceil_mode, count_include_pad=False))
        elif not isinstance(layer, (nn.ReLU, RedirectedReLU)):
            layers.append(layer)
    return nn.Sequential(*layers)


@pytest.mark.parametrize("relu", RELUS)
@pytest.mark.parametrize("pool", POOLS)
def test_two_convs_with_relu_and_max_pool_equal_the_delta_response(pool, relu):
    net = seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), RELUS[relu](),
                                       nn.Conv2d(4, 5, 3, padding=1), RELUS[relu](),
                                       POOLS[pool](), nn.Conv2d(5, 3, 3, padding=1)))
    weights = expanded_weights(net, "0", "5", size=16)
    target_size = net[:6](torch.zeros(1, 3, 16, 16)).shape[2]
    assert weights.shape[:2] == (3, 4)
    assert_brute_force(weights, delta_response(linear_twin(net), (4, 16, 16)), target_size)


class FunctionalNet(nn.Module):
    """The net of the test above, with ReLU and max pool called as functions."""

    def __init__(self, modules: nn.Sequential):
        super().__init__()
        self.first, self.second, self.third = modules[0], modules[2], modules[5]

    def forward(self, x):
        x = F.relu(self.first(x))
        x = torch.relu(self.second(x))
        return self.third(F.max_pool2d(x, 2))


def test_functional_relu_and_max_pool_are_linearised_too():
    net = seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                       nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                                       nn.MaxPool2d(2), nn.Conv2d(5, 3, 3, padding=1)))
    functional = FunctionalNet(net)
    torch.testing.assert_close(expanded_weights(functional, "first", "third", size=16),
                               expanded_weights(net, "0", "5", size=16))
    assert F.relu is torch.nn.functional.relu and torch.relu(torch.tensor(-1.0)) == 0


# --- branches, concatenation, residual: the sum over the paths ----------------------------

class Branchy(nn.Module):
    """``x -> cat(1x1(x), 3x3(relu(x))) = z -> z + 3x3(z)``."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.one = nn.Conv2d(4, 2, 1)
        self.three = nn.Conv2d(4, 3, 3, padding=1)
        self.residual = nn.Conv2d(5, 5, 3, padding=1)
        self.out = nn.Identity()

    def forward(self, x):
        x = self.stem(x)
        z = torch.cat([self.one(x), self.three(F.relu(x))], dim=1)
        return self.out(z + self.residual(nn.functional.relu(z)))


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """The kernel of ``conv(outer)`` after ``conv(inner)`` (both cross-correlations)."""
    kh, kw = outer.shape[2:]
    composed = torch.zeros(outer.shape[0], inner.shape[1], kh + inner.shape[2] - 1,
                           kw + inner.shape[3] - 1)
    for py in range(kh):
        for px in range(kw):
            composed[:, :, py:py + inner.shape[2], px:px + inner.shape[3]] += torch.einsum(
                "om,mihw->oihw", outer[:, :, py, px], inner)
    return composed


def test_branches_and_residual_equal_the_sum_over_paths():
    net = seeded(Branchy)
    with torch.no_grad():
        branches = torch.cat([F.pad(net.one.weight, (1, 1, 1, 1)), net.three.weight])
        expected = F.pad(branches, (1, 1, 1, 1)) + compose(net.residual.weight, branches)
    torch.testing.assert_close(expanded_weights(net, "stem", "out", size=16), expected)
    assert torch.equal(expanded_weights(net, "stem", "one", size=16),
                       net.one.weight.detach())


# --- the model is left as it was -----------------------------------------------------------

class Zoo(nn.Module):
    """Every kind of module that is swapped: ReLUs, max pools, InceptionV1's pool and LRN."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), RedirectedReLU(),
                                      nn.MaxPool2d(3, 1, 1), PaddedMaxPool2d(3, 2, (0, 1, 0, 1)),
                                      LocalResponseNorm(3, k=2.0), nn.Conv2d(4, 4, 3, padding=1),
                                      nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                                      nn.Conv2d(4, 2, 1))
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def snapshot(model: nn.Module) -> dict:
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "types": [(name, type(m)) for name, m in model.named_modules()],
            "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks),
                       len(m._backward_hooks)) for m in model.modules()],
            "modes": [m.training for m in model.modules()],
            "grads": [p.requires_grad for p in model.parameters()],
            "functions": (F.relu, F.relu_, torch.relu, torch.relu_, F.max_pool2d,
                          torch.max_pool2d)}


@pytest.mark.parametrize("call", [
    lambda net: expanded_weights(net, "features.0", "features.8", size=16),
    lambda net: expanded_weights(net, "features.8", "features.0", size=16),  # an error
    lambda net: top_outputs(net, "features.2", 1, "features.5", k=2),
])
def test_the_model_is_unchanged_after(call):
    net = seeded(Zoo).train()
    net.features[3].register_forward_hook(lambda *_: None)  # the user's hook stays
    before = snapshot(net)
    try:
        call(net)
    except ValueError:
        pass
    after = snapshot(net)
    assert after["types"] == before["types"] and after["hooks"] == before["hooks"]
    assert after["modes"] == before["modes"] == [True] * len(before["modes"])
    assert after["grads"] == before["grads"] and after["functions"] == before["functions"]
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key


def test_the_lrn_is_skipped_and_padded_pools_average_real_inputs():
    net = seeded(Zoo)
    weights = expanded_weights(net, "features.0", "features.5", size=16)
    # the twin: no ReLU, average pools, no LRN (whose slope at zero, k ** -beta, is not 1);
    # zero padding before the stride-2 pool differs from "real inputs only" at the bottom and
    # right edges, which the centre's receptive field does not reach
    twin = nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False),
                         nn.ZeroPad2d((0, 1, 0, 1)), nn.AvgPool2d(3, 2), net.features[5])
    assert weights.shape == (4, 4, 9, 9)
    assert_brute_force(weights, delta_response(twin, (4, 16, 16)), 8)


# --- InceptionV1 and ResNet ----------------------------------------------------------------

@pytest.fixture(scope="module")
def inception():
    return seeded(lambda: create_model("inceptionv1", pretrained=False))


def test_inceptionv1_mixed3a_to_mixed3b_is_its_four_branches(inception):
    weights = expanded_weights(inception, "mixed3a", "mixed3b", size=64, batch_size=128)
    assert weights.shape == (480, 256, 5, 5)
    block = inception.mixed3b
    conv = {name: block._modules[f"{name}_pre_relu_conv"].weight.detach()
            for name in ("1x1", "3x3_bottleneck", "3x3", "5x5_bottleneck", "5x5", "pool_reduce")}
    with torch.no_grad():
        expected = torch.cat([
            F.pad(conv["1x1"], (2, 2, 2, 2)),
            F.pad(compose(conv["3x3"], conv["3x3_bottleneck"]), (1, 1, 1, 1)),
            compose(conv["5x5"], conv["5x5_bottleneck"]),
            F.pad(conv["pool_reduce"].expand(-1, -1, 3, 3) / 9, (1, 1, 1, 1))])
    torch.testing.assert_close(weights, expected, atol=1e-6, rtol=1e-4)


def test_inceptionv1_adjacent_convolutions(inception):
    weights = expanded_weights(inception, "conv2d1", "conv2d2", size=64)
    assert torch.equal(weights, inception.conv2d2_pre_relu_conv.weight.detach())
    some = expanded_weights(inception, "conv2d1", "conv2d2", size=64, targets=[5, 0])
    assert torch.equal(some, weights[[5, 0]])


def test_resnet18_adjacent_convolutions_through_batch_norm():
    net = seeded(lambda: torchvision.models.resnet18(weights=None))
    block = net.layer1[0]
    with torch.no_grad():
        block.bn1.running_var.uniform_(0.5, 2.0)
        block.bn1.running_mean.normal_()
        block.bn1.weight.normal_()
    weights = expanded_weights(net, "layer1.0.conv1", "layer1.0.conv2", size=64)
    scale = block.bn1.weight / torch.sqrt(block.bn1.running_var + block.bn1.eps)
    torch.testing.assert_close(weights, (block.conv2.weight * scale[None, :, None, None])
                               .detach())


def test_a_small_size_warns_that_weights_are_cut_off():
    net = seeded(lambda: nn.Sequential(nn.Conv2d(3, 2, 3, padding=1),
                                       nn.Conv2d(2, 2, 5, padding=2)))
    with pytest.warns(UserWarning, match="larger size"):
        expanded_weights(net, "0", "1", size=3)


# --- strongest connections -----------------------------------------------------------------

def planted() -> nn.Sequential:
    net = seeded(lambda: nn.Sequential(nn.Conv2d(3, 6, 3, padding=1),
                                       nn.Conv2d(6, 5, 3, padding=1)))
    with torch.no_grad():
        weight = net[1].weight
        weight.mul_(0.01)
        weight[2, 4] = 1.0    # the strongest input of unit 2 (norm 3)
        weight[2, 0] = 0.5    # its second positive one
        weight[2, 1] = -0.8   # its strongest negative one
        weight[2, 5] = -0.2   # its second negative one
        weight[3, 4] = -0.5   # unit 4's strongest inhibition
    return net


def test_top_inputs_find_the_planted_connections():
    net = planted()
    found = top_inputs(net, "1", 2, "0", k=2)
    assert [c.source for c in found.positive] == [4, 0]
    assert [c.source for c in found.negative] == [1, 5]
    first = found.positive[0]
    assert (first.target, first.sign, first.norm) == (2, 1, pytest.approx(3.0))
    assert torch.equal(first.weights, net[1].weight[2, 4].detach())
    assert all(c.sign == -1 and c.target == 2 for c in found.negative)
    reused = top_inputs(net, "1", 2, "0", k=2, weights=expanded_weights(net, "0", "1", size=16))
    assert summary(reused) == summary(found)


def summary(found):
    return [[(c.source, c.target, c.norm, c.sign, c.weights.tolist()) for c in side]
            for side in found]


def test_top_outputs_find_the_planted_connections():
    net = planted()
    weights = expanded_weights(net, "0", "1", size=16)
    found = top_outputs(net, "0", 4, "1", k=1, weights=weights)
    assert found.positive[0].target == 2 and found.negative[0].target == 3
    assert found.positive[0].source == 4 and found.negative[0].norm == pytest.approx(1.5)
    assert len(found.positive) == len(found.negative) == 1
    assert summary(top_outputs(net, "0", 4, "1", k=3)) == \
        summary(top_outputs(net, "0", 4, "1", k=3, weights=weights))


# --- weight pictures -----------------------------------------------------------------------

def test_weight_picture_colours():
    picture = weight_picture(torch.tensor([[0.0, 1.0], [-1.0, 0.5]]), upsample=3)
    assert picture.shape == (6, 6, 3) and picture.dtype == np.uint8
    assert picture[0, 0].tolist() == [255, 255, 255]       # zero is white
    assert picture[0, 3].tolist() == list(WARM)            # the largest positive
    assert picture[3, 0].tolist() == list(COOL)            # the largest negative
    red, green, blue = picture[3, 3].astype(int)           # half way: a lighter warm
    assert red > blue and 255 > blue > WARM[2]
    assert (picture[:3, :3] == picture[0, 0]).all()        # nearest-neighbour blocks


def test_weight_pictures_share_a_scale():
    weak, strong = np.array([[0.5, -0.5]]), np.array([[1.0, -1.0]])
    own = weight_picture(weak)
    shared = weight_picture(weak, scale=float(np.abs(strong).max()))
    assert own[0, 0].tolist() == list(WARM)                 # its own scale: full colour
    assert (shared[0, 0] > own[0, 0]).any()                 # the shared one is lighter
    assert weight_picture(strong, scale=0.5)[0, 1].tolist() == list(COOL)  # clipped
    assert (weight_picture(np.zeros((3, 3))) == 255).all()


# --- bad input -----------------------------------------------------------------------------

def small() -> nn.Sequential:
    return seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                        nn.Conv2d(4, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                                        nn.Flatten(), nn.Linear(2, 3)))


W = torch.zeros(2, 4, 3, 3)


@pytest.mark.parametrize("call, error, name", [
    (lambda: expanded_weights(small(), "nope", "2", size=8), UnknownLayerError, "nope"),
    (lambda: expanded_weights(small(), "0", "conv9", size=8), UnknownLayerError, "conv9"),
    (lambda: expanded_weights(small(), "2", "0", size=8), ValueError, "source_layer"),
    (lambda: expanded_weights(Branchy(), "one", "three", size=8), ValueError, "source_layer"),
    (lambda: expanded_weights(small(), "output", "2", size=8), ValueError, "source_layer"),
    (lambda: expanded_weights(small(), "4", "5", size=8), ValueError, "source_layer"),
    (lambda: expanded_weights(small(), "0", "4", size=8), ValueError, "target_layer"),
    (lambda: expanded_weights(small(), "0", "output", size=8), ValueError, "target_layer"),
    (lambda: expanded_weights("net", "0", "2"), TypeError, "model"),
    (lambda: expanded_weights(small(), "0", "2", size=0), ValueError, "size"),
    (lambda: expanded_weights(small(), "0", "2", batch_size=0), ValueError, "batch_size"),
    (lambda: expanded_weights(small(), "0", "2", size=8, targets=[2]), IndexError, "targets"),
    (lambda: expanded_weights(small(), "0", "2", size=8, targets=[0.5]), TypeError, "targets"),
    (lambda: expanded_weights(small(), "0", "2", size=8, targets=3), TypeError, "targets"),
    (lambda: expanded_weights(small(), "0", "2", size=8, targets=[]), ValueError, "targets"),
    (lambda: top_inputs(small(), "2", 2, "0"), IndexError, "unit"),
    (lambda: top_inputs(small(), "2", -1, "0"), IndexError, "unit"),
    (lambda: top_inputs(small(), "2", 1.0, "0"), TypeError, "unit"),
    (lambda: top_inputs(small(), "2", 2, "0", weights=W), IndexError, "unit"),
    (lambda: top_inputs(small(), "2", 0, "0", k=0, weights=W), ValueError, r"\bk\b"),
    (lambda: top_inputs(small(), "2", 0, "0", weights=W[0]), ValueError, "weights"),
    (lambda: top_inputs(small(), "2", 0, "0", weights=W.numpy()), TypeError, "weights"),
    (lambda: top_outputs(small(), "0", 4, "2", weights=W), IndexError, "unit"),
    (lambda: top_outputs(small(), "0", 4, "2"), IndexError, "unit"),
    (lambda: top_outputs(small(), "4", 0, "2"), ValueError, "source_layer"),
    (lambda: weight_picture(W[0]), ValueError, "weights"),
    (lambda: weight_picture([[1.0]]), TypeError, "weights"),
    (lambda: weight_picture(np.array([[np.nan]])), ValueError, "weights"),
    (lambda: weight_picture(W[0, 0], scale=0), ValueError, "scale"),
    (lambda: weight_picture(W[0, 0], upsample=0), ValueError, "upsample"),
])
def test_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_clip_resnet_adjacent_convolutions_through_batch_norm():
    pytest.importorskip("open_clip")
    from lucent_core.models import create_model
    model = create_model("clip_rn50", pretrained=False)
    block = model.get_submodule("visual.layer1.0")
    with torch.no_grad():
        block.bn1.running_var.uniform_(0.5, 2.0)
        block.bn1.weight.normal_()
    weights = expanded_weights(model, "visual.layer1.0.conv1", "visual.layer1.0.conv2", size=64,
                               targets=[0, 7])
    scale = block.bn1.weight / torch.sqrt(block.bn1.running_var + block.bn1.eps)
    expected = (block.conv2.weight * scale[None, :, None, None]).detach()[[0, 7]]
    torch.testing.assert_close(weights, expected)
