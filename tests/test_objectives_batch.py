"""Tests for the batch objectives (lucent_core.objectives.batch): exact values on hand-made
activations, a planted colour sweep (red to blue) and alignment of neighbouring images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lucent_core import param, render_vis
from lucent_core.hooks import capture, run_to_layers
from lucent_core.objectives.batch import alignment, channel_interpolate
from test_planted import OPPONENT, fixed_conv, gabor


def activations(net: torch.nn.Module, layer: str, images: np.ndarray) -> torch.Tensor:
    """Activation at ``layer`` of rendered (B, H, W, 3) images."""
    with capture(net, [layer]) as acts, torch.no_grad():
        run_to_layers(net, torch.from_numpy(images).permute(0, 3, 1, 2), acts)
    return acts[layer]


# --- exact values ------------------------------------------------------------------------

def test_channel_interpolate_exact_value():
    # (B=4, C=3, 1, 2): image i's channel means are known
    acts = torch.zeros(4, 3, 1, 2)
    acts[:, 0] = torch.tensor([6.0, 3.0, 9.0, 1.0]).view(4, 1, 1)
    acts[:, 2] = torch.tensor([[0.0, 2.0], [3.0, 3.0], [0.0, 6.0], [5.0, 7.0]]).view(4, 1, 2)
    # weights of unit 2: 0, 1/3, 2/3, 1
    expected = 6.0 + (2 / 3 * 3 + 1 / 3 * 3) + (1 / 3 * 9 + 2 / 3 * 3) + 6.0
    assert channel_interpolate("c", 0, "c", 2)({"c": acts}).item() == pytest.approx(expected)


def test_channel_interpolate_across_two_layers():
    acts = {"a": torch.tensor([[2.0], [4.0]]), "b": torch.tensor([[0.0, 10.0], [0.0, 30.0]])}
    objective = channel_interpolate("a", 0, "b", 1)
    assert objective(acts).item() == pytest.approx(2.0 + 30.0)
    assert objective.layers == {"a", "b"}
    assert objective.name == "channel_interpolate('a', 0, 'b', 1)"


ONE_IMAGE = {"c": torch.rand(1, 2, 4, 4)}  # what the batch objectives cannot compare


@pytest.mark.parametrize("call, error, name", [
    (lambda: channel_interpolate("c", 0, "c", 1)({"c": torch.ones(1, 2)}), ValueError,
     "channel_interpolate"),
    (lambda: channel_interpolate("c", 0, "c", 1)(ONE_IMAGE), ValueError, "channel_interpolate"),
    (lambda: channel_interpolate("c", 0, "c", 5)({"c": torch.ones(3, 2)}), IndexError, "unit"),
    (lambda: channel_interpolate("a", 0, "b", 0)({"a": torch.ones(3, 2), "b": torch.ones(2, 2)}),
     ValueError, "layers"),
])
def test_channel_interpolate_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_alignment_exact_value():
    acts = torch.tensor([[0.0, 0.0], [2.0, 2.0], [2.0, 4.0], [0.0, 0.0], [1.0, 1.0],
                         [5.0, 5.0]])
    def msd(i, j):  # mean squared difference between images i and j
        return ((acts[i] - acts[j]) ** 2).mean().item()

    expected = sum(msd(i, i + d) / 2 ** d for d in (1, 2, 3, 4) for i in range(6 - d))
    assert alignment("c")({"c": acts}).item() == pytest.approx(-expected)  # distance 5 ignored
    expected3 = sum(msd(i, i + d) / 3 ** d for d in (1, 2) for i in range(6 - d))
    assert alignment("c", decay_ratio=3, max_distance=2)({"c": acts}).item() == \
        pytest.approx(-expected3)


def test_alignment_of_identical_images_is_zero():
    same = torch.ones(3, 2, 4, 4, requires_grad=True)
    value = alignment("c")({"c": same})
    assert value.item() == 0.0
    value.backward()  # differentiable even when there is nothing to align


# One image is an error, not a silent zero (diversity's case is in test_objectives.py)
@pytest.mark.parametrize("call, error, name", [
    (lambda: alignment("c")(ONE_IMAGE), ValueError, "alignment"),
    (lambda: alignment("c", decay_ratio=0), ValueError, "decay_ratio"),
    (lambda: alignment("c", max_distance=0), ValueError, "max_distance"),
])
def test_alignment_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- renders -----------------------------------------------------------------------------

def test_channel_interpolate_sweeps_from_red_to_blue():
    """Image i of 4 maximises (1 - i/3) * red-opponent + (i/3) * blue-opponent (pre-ReLU).

    These units are linear, so each image runs to a corner of the colour cube: red, then
    red-magenta, blue-magenta and blue (the middle images may tie on the colour their
    objective ignores, hence the small tolerance)."""
    net = fixed_conv(OPPONENT.view(3, 3, 1, 1))
    result = render_vis(net, channel_interpolate("0", 0, "0", 2),
                        param_f=lambda: param.image(16, batch=4), transforms=[],
                        thresholds=(128,), progress=False, seed=0,
                        optimizer=lambda p: torch.optim.Adam(p, 0.2))
    opponent = (result.image.reshape(4, -1, 3) @ OPPONENT.numpy().T).mean(1)
    red, blue = opponent[:, 0], opponent[:, 2]
    assert np.all(np.diff(red) < 0.03) and np.all(np.diff(blue) > -0.03)
    assert red[0] > 0.5 and blue[0] < -0.2  # image 0 is red
    assert blue[3] > 0.5 and red[3] < -0.2  # the last image is blue
    assert red[1] - red[2] > 0.5 and blue[2] - blue[1] > 0.5  # the sweep crosses in the middle


def test_alignment_brings_neighbouring_images_closer():
    """Two Gabor units at 30 and 120 degrees: an interpolation of 4 images, with and without
    alignment at the same layer; with it, neighbours' activations are far more alike."""
    weights = torch.stack([gabor(a).expand(3, -1, -1) / 3 for a in (30.0, 120.0)])
    net = fixed_conv(weights)
    sweep = channel_interpolate("1", 0, "1", 1)

    def render(objective):
        images = render_vis(net, objective, param_f=lambda: param.image(48, batch=4),
                            transforms=[], thresholds=(64,), progress=False, seed=0).image
        acts = activations(net, "1", images)
        neighbours = (acts[1:] - acts[:-1]).pow(2).mean().item()
        return neighbours, sweep({"1": acts}).item()

    free_distance, free_sweep = render(sweep)
    aligned_distance, aligned_sweep = render(sweep + 0.1 * alignment("1"))
    assert aligned_distance < 0.5 * free_distance  # measured: 7.8 vs 30
    assert aligned_sweep > 0.7 * free_sweep  # the interpolation still works (12.5 vs 14.3)
