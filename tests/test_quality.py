"""Quality scores: known values on tiny models; held-out transforms fixed and reproducible."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lucent_core import objectives
from lucent_core.recipes import quality
from lucent_core.atlas import Series
from lucent_core.recipes.quality import (apply_held_out, diversity_score, held_out_transforms,
                                 robustness, superstimulus_ratio)
from lucent_core.transforms.affine import LUCID_ANGLES, LUCID_SCALES


def brightness_net() -> nn.Module:
    """Channel 0: mean of R, G and B (a unit that measures brightness), no ReLU."""
    net = nn.Sequential(nn.Conv2d(3, 2, 1))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0] = 1 / 3
        net[0].weight[1, 0] = 1.0
        net[0].bias.zero_()
    return net


def identity_net() -> nn.Module:
    """Channels = R, G, B."""
    net = nn.Sequential(nn.Conv2d(3, 3, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3)[:, :, None, None])
    return net


# --- held-out transforms ---------------------------------------------------------------------

def test_held_out_transforms_are_fixed_and_reproducible():
    rows = held_out_transforms()
    assert rows.shape == (16, 6) and rows.dtype == torch.float64
    assert torch.equal(rows, held_out_transforms())
    assert not torch.equal(rows, held_out_transforms(seed=1))
    assert held_out_transforms(4).shape == (4, 6)
    x = torch.rand(2, 3, 20, 20)
    assert torch.equal(apply_held_out(x, rows), apply_held_out(x, held_out_transforms()))


def test_held_out_transforms_differ_from_the_render_transforms():
    angle, scale = held_out_transforms()[:, 0], held_out_transforms()[:, 1]
    # the render's transforms rotate at most 10 degrees and scale within 0.9..1.1
    assert max(LUCID_ANGLES) == 10 and min(LUCID_SCALES) == pytest.approx(0.9)
    assert (angle.abs() > 10).sum() >= 4
    assert ((scale < 0.9) | (scale > 1.1)).sum() >= 4
    assert (angle.abs() <= 25).all() and ((scale >= 0.8) & (scale <= 1.25)).all()


def test_identity_row_leaves_the_image_and_a_shift_moves_it():
    x = torch.rand(1, 3, 16, 16) * 0.5 + 0.25
    identity = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(apply_held_out(x, identity), x, atol=1e-5)
    dot = torch.zeros(1, 3, 16, 16)
    dot[..., 5, 5] = 1.0
    shifted = apply_held_out(dot, torch.tensor([[0.0, 1.0, 0.125, 0.25, 0.0, 1.0]]))
    assert shifted[0, 0].argmax().item() == (5 + 4) * 16 + (5 + 2)  # 2 px right, 4 px down
    brighter = apply_held_out(x, torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.1, 1.0]]))
    assert torch.allclose(brighter, x + 0.1, atol=1e-5)


# --- robustness ------------------------------------------------------------------------------

def test_robustness_of_a_brightness_unit_on_grey_is_known():
    rows = held_out_transforms()
    grey = torch.full((1, 3, 24, 24), 0.5)
    # moving a flat image changes nothing, contrast about its mean changes nothing: only the
    # brightness offsets of the rows change the unit's value
    expected = float((0.5 + rows[:, 4]).mean() / 0.5)
    assert robustness(brightness_net(), grey, "0", [0]).item() == pytest.approx(expected,
                                                                                rel=1e-5)


def test_a_position_bound_image_is_less_robust_than_a_spread_one():
    net = identity_net()
    spot = torch.zeros(1, 3, 21, 21)
    spot[:, 0, 10, 10] = 1.0                       # one red pixel exactly at the centre neuron
    stripes = torch.zeros(1, 3, 21, 21)
    stripes[:, 0] = 0.6                           # red everywhere
    neuron = Series("0", "neuron")
    scores = robustness(net, torch.cat([spot, stripes]), neuron, [0, 0])
    assert scores[0] < 0.5 < 0.9 < scores[1]


def test_robustness_is_nan_without_a_positive_value_and_checks_units():
    dark = torch.zeros(1, 3, 8, 8)
    assert math.isnan(robustness(brightness_net(), dark, "0", [0]).item())


def test_robustness_of_a_direction_matches_the_equal_channel():
    images = torch.rand(2, 3, 16, 16)
    direction = Series("0", "direction", torch.eye(3))
    by_direction = robustness(identity_net(), images, direction, [1, 2],
                              directions=torch.eye(3)[[1, 2]])
    by_channel = robustness(identity_net(), images, "0", [1, 2])
    assert torch.allclose(by_direction, by_channel, rtol=1e-5)


# --- diversity -------------------------------------------------------------------------------

def test_diversity_score_known_values():
    net = identity_net()
    red, green = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    red[:, 0], green[:, 1] = 1.0, 1.0
    assert diversity_score(net, torch.cat([red, red, red]), "0") == pytest.approx(1.0)
    assert diversity_score(net, torch.cat([red, green]), "0") == pytest.approx(0.0)
    # red, green, red: pairs (r,g)=0, (r,r)=1, (g,r)=0 -> mean 1/3
    assert diversity_score(net, torch.cat([red, green, red]), "0") == pytest.approx(1 / 3)


def test_diversity_score_is_the_diversity_objective_per_pair():
    images = torch.rand(4, 3, 8, 8)
    net = identity_net()
    with torch.no_grad():
        objective = objectives.diversity("0")({"0": net(images)}).item()
    assert diversity_score(net, images, "0") == pytest.approx(objective / 3, rel=1e-5)


# --- superstimulus ---------------------------------------------------------------------------

def test_superstimulus_ratio():
    assert superstimulus_ratio(6.0, [3.0, 2.0]) == 2.0
    assert superstimulus_ratio(1.0, [4.0]) == 0.25
    assert superstimulus_ratio(1.0, []) is None
    assert superstimulus_ratio(1.0, [0.0, -1.0]) is None


def test_robustness_of_a_direction_series_uses_its_own_rows_and_refuses_stray_directions():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    images = torch.rand(2, 3, 16, 16)
    rows = torch.rand(3, 4)
    series = Series("1", "direction", rows)
    own = robustness(net, images, series, [0, 2])
    given = robustness(net, images, series, [0, 2], directions=rows[[0, 2]])
    torch.testing.assert_close(own, given)


def test_diversity_of_images_a_layer_ignores_is_nan_not_perfect():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    with torch.no_grad():
        net[0].bias.fill_(-100.0)             # dead for every image
    assert math.isnan(diversity_score(net, torch.rand(3, 3, 8, 8), "1"))


def test_superstimulus_ignores_non_finite_example_peaks_wherever_they_are():
    assert superstimulus_ratio(4.0, [float("nan"), 2.0]) == 2.0
    assert superstimulus_ratio(4.0, [2.0, float("nan")]) == 2.0
    assert superstimulus_ratio(4.0, [float("inf")]) is None


def test_robustness_takes_the_arrays_render_vis_returns():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    images = torch.rand(2, 3, 16, 16)
    as_array = images.permute(0, 2, 3, 1).numpy()       # (B, H, W, 3), like result.images[-1]
    torch.testing.assert_close(robustness(net, as_array, "1", [0, 1]),
                               robustness(net, images, "1", [0, 1]))


def _robustness(**kwargs):
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    return quality.robustness(net, torch.rand(2, 3, 12, 12), "1", **kwargs)


@pytest.mark.parametrize("call, error, name", [
    (lambda: _robustness(units=[9, 0]), IndexError, "unit"),
    (lambda: _robustness(units=[-1, 0]), ValueError, "units"),
    (lambda: _robustness(units=[0.5, 0]), TypeError, "units"),
    (lambda: _robustness(units="01"), TypeError, "units"),
    (lambda: _robustness(units=[0]), ValueError, "units"),
    (lambda: _robustness(units=[0, 1], batch_size=0), ValueError, "batch_size"),
    (lambda: _robustness(units=[0, 1], transforms=torch.rand(4, 3)), ValueError, "transforms"),
    (lambda: _robustness(units=[0, 1], transforms=torch.rand(0, 6)), ValueError, "transforms"),
    (lambda: _robustness(units=[0, 1], transforms=torch.full((2, 6), float("nan"))),
     ValueError, "transforms"),
    (lambda: _robustness(units=[0, 1], directions=torch.rand(2, 4)), ValueError, "directions"),
    (lambda: robustness(brightness_net(), torch.zeros(1, 3, 8, 8), "0", [0, 1]), ValueError,
     "units"),
])
def test_robustness_rejects_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: held_out_transforms(0), ValueError, "count"),
    (lambda: held_out_transforms(2, seed=1.5), TypeError, "seed"),
    (lambda: apply_held_out(torch.rand(3, 8, 8), held_out_transforms(2)), ValueError, "images"),
    (lambda: apply_held_out(torch.rand(1, 3, 8, 8), torch.rand(2, 5)), ValueError,
     "transforms"),
    (lambda: superstimulus_ratio(1.0, "12"), TypeError, "example_peaks"),
    (lambda: diversity_score(identity_net(), torch.zeros(1, 3, 8, 8), "0"), ValueError,
     "images"),
    (lambda: diversity_score(identity_net(), [torch.rand(3, 8, 8)] * 2, "0"), TypeError,
     "images"),
])
def test_quality_helpers_reject_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_robustness_takes_units_as_a_tensor():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    images = torch.rand(2, 3, 12, 12)
    torch.testing.assert_close(quality.robustness(net, images, "1", torch.tensor([0, 1])),
                               quality.robustness(net, images, "1", [0, 1]), equal_nan=True)
