"""Tests for the image regularisers (lucent_core.objectives.image): exact values on small
tensors, the sign convention (higher = more of the quantity), Lucid's blur-each-step update,
and renders: a total-variation penalty smooths, an L1 pull towards grey reaches grey."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lucent_core import param, render_vis
from lucent_core.objectives import channel
from lucent_core.objectives.image import L1, L2, blur, blur_input_each_step, total_variation


def image_tv(image: np.ndarray) -> float:
    """Total variation of an (H, W, 3) array, measured independently of the objective."""
    return float(np.abs(np.diff(image, axis=0)).sum() + np.abs(np.diff(image, axis=1)).sum())


# --- exact values ------------------------------------------------------------------------

def test_l1_exact_values():
    x = torch.tensor([[[[0.0, 1.0], [0.25, 0.5]]], [[[1.0, 1.0], [1.0, 1.0]]]])  # (2, 1, 2, 2)
    assert L1()({"input": x}).item() == pytest.approx(0 + 1 + 0.25 + 0.5 + 4)
    assert L1(constant=0.5)({"input": x}).item() == pytest.approx(0.5 + 0.5 + 0.25 + 0 + 4 * 0.5)
    assert L1(constant=0.5, batch=0)({"input": x}).item() == pytest.approx(1.25)
    assert L1("conv", batch=-1)({"conv": x}).item() == pytest.approx(4.0)


def test_l2_exact_values():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert L2()({"input": x}).item() == pytest.approx(5.0)
    assert L2(constant=1.0)({"input": x}).item() == pytest.approx(np.sqrt(4 + 9 + 1 + 1))
    assert L2(batch=1)({"input": x}).item() == pytest.approx(1e-3)  # sqrt(epsilon)
    assert L2(batch=1, epsilon=0.0)({"input": x}).item() == 0.0


def test_total_variation_exact_values():
    x = torch.zeros(2, 2, 3, 3)
    x[0, 0] = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    x[1, 1, 1, 1] = 2.0  # a spike: 4 neighbours, each 2 away
    # image 0: horizontal |1-0| on rows 0 and 1 = 2; vertical |0-1| twice in row 1->2 = 2
    assert total_variation()({"input": x}).item() == pytest.approx(4.0 + 8.0)
    assert total_variation(batch=0)({"input": x}).item() == pytest.approx(4.0)
    assert total_variation("conv", batch=1)({"conv": x}).item() == pytest.approx(8.0)
    assert total_variation()({"input": torch.full((1, 3, 5, 4), 0.7)}).item() == 0.0


def test_blur_exact_values_including_borders():
    delta = torch.zeros(1, 1, 3, 3)
    delta[0, 0, 1, 1] = 1.0
    # centre: weight 1 of a total 1 + 8 * 0.5; edge middles: 0.5 of 1 + 5 * 0.5; corners:
    # 0.5 of 1 + 3 * 0.5
    expected = torch.tensor([[0.2, 1 / 7, 0.2], [1 / 7, 0.2, 1 / 7], [0.2, 1 / 7, 0.2]])
    assert torch.allclose(blur(delta)[0, 0], expected)
    flat = torch.full((2, 3, 4, 5), 0.3)
    assert torch.allclose(blur(flat), flat)  # a constant image stays constant at the borders
    two = torch.stack([delta[0, 0], 2 * delta[0, 0]])[None]  # channels are blurred separately
    assert torch.allclose(blur(two)[0, 1], 2 * expected)


def test_blur_input_each_step_value_and_stopped_gradient():
    delta = torch.zeros(1, 1, 3, 3)
    delta[0, 0, 1, 1] = 1.0
    value = blur_input_each_step()({"input": delta}).item()
    assert value == pytest.approx(0.5 * (0.8 ** 2 + 4 * 0.2 ** 2 + 4 * (1 / 7) ** 2))

    x = torch.rand(2, 3, 6, 7, generator=torch.Generator().manual_seed(0)).requires_grad_()
    blur_input_each_step()({"input": x}).backward()
    # the blurred copy carries no gradient, so the gradient is exactly x - blur(x)
    assert torch.allclose(x.grad, x.detach() - blur(x.detach()), atol=1e-6)


def test_minus_k_blur_each_step_is_lucids_blending_update():
    """A gradient-ascent step (lr 1) on -k * blur_input_each_step() gives
    x <- (1 - k) * x + k * blur(x)."""
    k = 0.3
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_()
    (-k * blur_input_each_step())({"input": x}).backward()
    stepped = x.detach() + x.grad
    assert torch.allclose(stepped, (1 - k) * x.detach() + k * blur(x.detach()), atol=1e-6)


# --- sign convention, names, errors ------------------------------------------------------

def test_higher_means_more_of_the_quantity():
    g = torch.Generator().manual_seed(0)
    noisy = torch.rand(1, 3, 16, 16, generator=g)
    smooth = torch.full((1, 3, 16, 16), 0.5)
    for objective in (total_variation(), blur_input_each_step(), L1(constant=0.5),
                      L2(constant=0.5)):
        assert objective({"input": noisy}).item() > objective({"input": smooth}).item() + 1
    # ... so a penalty is subtracted: the smooth image scores higher under channel - k * TV
    penalised = channel("input", 0) - 1e-3 * total_variation()
    assert penalised({"input": smooth}).item() > penalised({"input": noisy}).item()


def test_names_and_layers():
    assert total_variation().name == "total_variation()"
    assert L1(constant=0.5).name == "L1(constant=0.5)"
    assert blur_input_each_step().layers == {"input"}
    objective = channel("mixed4a", 3) - 1e-3 * total_variation()
    assert objective.layers == {"mixed4a", "input"}
    assert objective.name == "channel('mixed4a', 3) - 0.001 * total_variation()"


VECTOR = {"fc": torch.ones(2, 5)}  # a (B, C) layer: no spatial structure


def test_l1_and_l2_work_on_any_shape():
    assert L1("fc")(VECTOR).item() == 10.0


@pytest.mark.parametrize("call, error, name", [
    (lambda: total_variation("fc")(VECTOR), ValueError, "layer"),
])
def test_total_variation_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: blur_input_each_step("fc")(VECTOR), ValueError, "layer"),
])
def test_blur_input_each_step_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: L1("fc", batch=2)(VECTOR), IndexError, "batch"),
])
def test_l1_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- renders -----------------------------------------------------------------------------

def test_total_variation_penalty_gives_a_smoother_render():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    unit = channel("2", 0)

    def render(objective):
        return render_vis(net, objective, param_f=lambda: param.image(48, fft=False),
                          transforms=[], thresholds=(64,), progress=False, seed=0).image[0]

    plain, smoothed = render(unit), render(unit - 3e-6 * total_variation())
    assert image_tv(smoothed) < 0.6 * image_tv(plain)  # measured: 240 vs 490
    assert smoothed.std() > 0.08  # still a picture with contrast, not flat grey

    def unit_value(image):
        return net(torch.from_numpy(image).permute(2, 0, 1)[None])[0, 0].mean().item()
    assert unit_value(smoothed) > 0.6 * unit_value(plain)  # and the unit still fires


def test_image_only_objective_drives_the_image_to_grey():
    image = param.image(24, fft=False, sd=1.0)
    with torch.no_grad():
        start = image()
    assert (start - 0.5).abs().mean() > 0.1  # starts far from grey
    net = nn.Sequential(nn.Conv2d(3, 2, 3))  # never run: the objective reads only "input"
    result = render_vis(net, -L1(constant=0.5), param_f=image, transforms=[],
                        thresholds=(150,), progress=False, seed=0)
    assert np.abs(result.image - 0.5).max() < 0.01
    assert abs(result.history[-1]) < 0.05 * abs(result.history[0])  # the distance is ~gone
