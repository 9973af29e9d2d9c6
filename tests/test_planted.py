"""Planted features: units built by hand to detect a known pattern must render that pattern.

These run the whole pipeline with the default settings (128 px Fourier image, decorrelated
colour, standard transforms, Adam, 512 steps) and check the picture, not just that it runs.
"""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from lucent_core import objectives, param, render_vis


def fixed_conv(weights: torch.Tensor, padding: int | str = 0) -> nn.Sequential:
    conv = nn.Conv2d(weights.shape[1], weights.shape[0], weights.shape[-1], padding=padding)
    with torch.no_grad():
        conv.weight.copy_(weights)
        conv.bias.zero_()
    return nn.Sequential(conv, nn.ReLU())


def gabor(degrees: float, period: float = 8.0, size: int = 15, sigma: float = 4.0) -> torch.Tensor:
    """Zero-mean Gabor kernel whose wave vector points at ``degrees`` (anticlockwise, y up)."""
    r = torch.arange(size, dtype=torch.float64) - size // 2
    y, x = torch.meshgrid(r, r, indexing="ij")  # y grows downwards (rows)
    t = math.radians(degrees)
    along = x * math.cos(t) - y * math.sin(t)
    g = torch.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2)) * torch.cos(2 * math.pi * along / period)
    return (g - g.mean()).float()


def dominant_orientation(image: np.ndarray, min_frequency: float = 1 / 32) -> float:
    """Orientation (degrees in [0, 180), wave-vector convention, y up) of the strongest pattern.

    Power-weighted circular mean of doubled angles over the windowed spectrum, ignoring the
    lowest frequencies (overall shading).
    """
    grey = image.mean(-1)
    grey = grey - grey.mean()
    h, w = grey.shape
    power = np.abs(np.fft.fft2(grey * np.outer(np.hanning(h), np.hanning(w)))) ** 2
    fy = np.fft.fftfreq(h)[:, None] * np.ones((1, w))
    fx = np.ones((h, 1)) * np.fft.fftfreq(w)[None]
    power[np.hypot(fx, fy) < min_frequency] = 0
    z = (power * np.exp(2j * np.arctan2(-fy, fx))).sum()
    return math.degrees(np.angle(z) / 2) % 180


def angle_difference(a: float, b: float) -> float:
    d = abs(a - b) % 180
    return min(d, 180 - d)


def test_orientation_measure_reads_a_known_grating():
    y, x = np.mgrid[0:96, 0:128]
    t = math.radians(30)
    grating = np.cos(2 * math.pi * (x * math.cos(t) - y * math.sin(t)) / 8)
    assert angle_difference(dominant_orientation(np.repeat(grating[..., None], 3, -1)), 30) < 1


def test_gabor_units_render_gratings_at_their_orientation():
    angles = [30.0, 120.0]
    weights = torch.stack([gabor(a).expand(3, -1, -1) / 3 for a in angles])
    net = fixed_conv(weights)
    result = render_vis(net, objectives.batch_channels("1", [0, 1]),
                        param_f=lambda: param.image(128, batch=2), progress=False, seed=0)
    for image, angle in zip(result.image, angles):
        assert angle_difference(dominant_orientation(image), angle) < 5
        assert image.mean(-1).std() > 0.1  # a visible, high-contrast pattern


OPPONENT = torch.tensor([[1.0, -0.5, -0.5], [-0.5, 1.0, -0.5], [-0.5, -0.5, 1.0]])


def assert_renders_colour(image: np.ndarray, unit: int) -> None:
    """``image`` (H, W, 3) shows the colour of opponent unit ``unit`` (0 red, 1 green, 2 blue)."""
    opponent = image.reshape(-1, 3) @ OPPONENT.numpy().T  # per pixel: R-, G-, B-opponent value
    others = [c for c in range(3) if c != unit]
    assert opponent[:, unit].mean() > 0.5
    assert opponent[:, others].mean(0).max() < -0.2
    # the colour fills most of the image, not only a few pixels (edges may saturate)
    assert (opponent[:, unit] > 0.2).mean() > 0.7


@pytest.mark.parametrize("unit, colour", [(0, "red"), (1, "green"), (2, "blue")])
def test_colour_units_render_their_colour(colour_render, unit, colour):
    assert_renders_colour(colour_render[unit], unit)


@pytest.fixture(scope="module")
def colour_render():
    """Colour-opponent 1x1 units, read before their ReLU (a linear unit: its optimum is uniform)."""
    net = fixed_conv(OPPONENT.view(3, 3, 1, 1))
    result = render_vis(net, objectives.batch_channels("0", [0, 1, 2]),
                        param_f=lambda: param.image(64, batch=3), progress=False, seed=0)
    return result.image


def test_spot_neuron_renders_a_spot_where_its_receptive_field_is():
    """A centre-surround unit read at one position of a non-square map draws a spot there."""
    r = torch.arange(15, dtype=torch.float64) - 7
    d2 = r[None, :] ** 2 + r[:, None] ** 2
    dog = torch.exp(-d2 / (2 * 1.5 ** 2)) / 1.5 ** 2 - torch.exp(-d2 / (2 * 4.0 ** 2)) / 4.0 ** 2
    net = fixed_conv((dog.float() / 3).expand(1, 3, -1, -1), padding="same")
    x, y = 100, 40  # column, row of the activation map
    result = render_vis(net, objectives.neuron("1", 0, x=x, y=y),
                        param_f=lambda: param.image(160, 96), progress=False, seed=0)
    luminance = ndimage.gaussian_filter(result.image[0].mean(-1), 2.0)
    row, col = np.unravel_index(np.argmax(luminance), luminance.shape)
    # standard transforms: +12 px of padding, then crops of on average 4 and 2 px
    expected_col, expected_row = x - 12 + 4 + 2, y - 12 + 4 + 2
    assert abs(col - expected_col) <= 6 and abs(row - expected_row) <= 6
    # the spot is local: far from it the image stays near the starting grey
    far = np.ones_like(luminance, dtype=bool)
    far[max(0, row - 25):row + 25, max(0, col - 25):col + 25] = False
    assert luminance.max() - 0.5 > 3 * np.abs(luminance[far] - 0.5).mean()
