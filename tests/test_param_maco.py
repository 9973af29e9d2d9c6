"""Tests for lucent_core.param.maco: the fixed magnitude spectrum, fitting a target by phase
alone, the crops transform, the transparency map, and planted units rendered with MACO.

The fixed quantity is the amplitude spectrum of ``MacoImage.spatial()``, the image before the
colour mixing and the sigmoid: ``|rfft2(spatial(), norm="ortho")|`` must equal the
``magnitude`` buffer whatever the phase (the sigmoid afterwards is pointwise and non-linear, so
the spectrum of the final RGB image is not exactly fixed, and is not claimed to be).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from test_planted import angle_difference, dominant_orientation, fixed_conv, gabor
from torch import nn

from lucent_core import objectives
from lucent_core.objectives import Objective
from lucent_core.param.color import ToRGB
from lucent_core.param.maco import (PAPER_CROP_DECAY, MacoImage, RandomCrops, ShrinkingCrops,
                                    crop_resize, maco, maco_transforms, magnitude_from_images,
                                    natural_magnitude)
from lucent_core.recipes.maco import render_maco
from lucent_core.param.spatial import fourier_frequencies

SIZES = [(24, 32), (17, 23), (1, 5), (6, 1), (2, 2), (9, 40)]   # (height, width)


def amplitude(image: MacoImage) -> torch.Tensor:
    return torch.fft.rfft2(image.spatial().detach(), norm="ortho").abs()


# --- the parameterisation ----------------------------------------------------------------

@pytest.mark.parametrize("height, width", SIZES)
@pytest.mark.parametrize("batch", [1, 3])
def test_shapes_range_and_only_phase_is_learnable(height, width, batch):
    torch.manual_seed(0)
    image = maco(width, height, batch=batch)
    out = image()
    assert out.shape == (batch, 3, height, width)
    assert out.min() >= 0 and out.max() <= 1
    assert [name for name, _ in image.named_parameters()] == ["phase"]
    assert image.phase.shape == (batch, 3, height, width // 2 + 1)
    assert image.magnitude.shape == (3, height, width // 2 + 1)
    assert not image.magnitude.requires_grad
    assert list(image.state_dict()) == ["phase"]


@pytest.mark.parametrize("height, width", SIZES)
def test_amplitude_spectrum_equals_magnitude_for_any_phase(height, width):
    torch.manual_seed(0)
    image = maco(width, height, batch=2)
    for scale in (0.1, 1.0, 10.0):
        with torch.no_grad():
            image.phase.normal_(0, scale)
        torch.testing.assert_close(amplitude(image), image.magnitude.expand(2, -1, -1, -1),
                                   atol=2e-6, rtol=1e-4)
        spatial = image.spatial()
        # zero mean (no DC) and unit standard deviation, as the paper's standardised image
        assert spatial.mean().abs() < 1e-5
        assert spatial.pow(2).mean().sqrt().item() == pytest.approx(1.0, abs=1e-4)


def test_images_of_a_batch_differ():
    torch.manual_seed(0)
    out = maco(16, batch=2)()
    assert out.shape == (2, 3, 16, 16)   # h defaults to w
    assert (out[0] - out[1]).abs().mean() > 0.02


def test_magnitude_stays_fixed_while_phase_changes_during_a_render():
    net = nn.Sequential(nn.Conv2d(3, 4, 5), nn.ReLU())
    torch.manual_seed(1)
    result = render_maco(net, objectives.channel("1", 2), w=24, h=20, steps=20, n_crops=2,
                         crop_scale=(0.6, 1.0), progress=False, seed=0)
    image = result.param
    torch.manual_seed(0)   # render_maco builds its image under seed 0: rebuild the start
    start = maco(24, 20)
    torch.testing.assert_close(start.magnitude, image.magnitude)
    after, before = image.spectrum().detach(), start.spectrum().detach()
    # the phase moved a lot: the spectra differ by much more than their size, coefficient-wise
    angle = torch.angle(after * before.conj()).abs()
    assert angle[after.abs() > 1e-3].mean() > 0.5
    assert result.history[-1] > result.history[0]
    torch.testing.assert_close(amplitude(image), image.magnitude[None], atol=2e-6, rtol=1e-4)
    torch.testing.assert_close(amplitude(start), image.magnitude[None], atol=2e-6, rtol=1e-4)


def test_fits_a_target_with_the_same_magnitude():
    # MACO cannot fit an arbitrary image (its spectrum is fixed), but a target built from the
    # same magnitude with another phase is reachable. Measured (seeds 0-2): 200 NAdam steps at
    # the paper's lr 1.0 take the mean absolute error from ~0.12 to 0.0014-0.0029 (~0.4 s).
    torch.manual_seed(0)
    with torch.no_grad():
        target = maco(32, 24, batch=2)()
    image = maco(32, 24, batch=2)
    start = (image() - target).abs().mean().item()
    optimiser = torch.optim.NAdam(image.parameters(), lr=1.0)
    for _ in range(200):
        optimiser.zero_grad()
        ((image() - target) ** 2).mean().backward()
        optimiser.step()
    error = (image() - target).abs().mean().item()
    assert start > 0.08
    assert error < 0.01 and error < start / 10


def test_without_decorrelation_spatial_is_plain_sigmoid():
    torch.manual_seed(0)
    image = maco(12, 10, decorrelate=False)
    torch.testing.assert_close(image(), torch.sigmoid(image.spatial()))
    decorrelated = maco(12, 10)
    with torch.no_grad():
        decorrelated.phase.copy_(image.phase)
    torch.testing.assert_close(decorrelated(), ToRGB()(decorrelated.spatial()))


def test_standardize_phase_makes_the_image_invariant_to_phase_scale_and_shift():
    torch.manual_seed(0)
    image = maco(16, 12)
    before = image().detach()
    with torch.no_grad():
        image.phase.mul_(3.0).add_(0.7)
    torch.testing.assert_close(image().detach(), before, atol=1e-5, rtol=0)
    raw = maco(16, 12, standardize_phase=False)
    before = raw().detach()
    with torch.no_grad():
        raw.phase.mul_(3.0)
    assert (raw().detach() - before).abs().max() > 0.01


def test_to_float64_moves_everything():
    torch.manual_seed(0)
    image = maco(12, 10, batch=2).to(torch.float64)
    tensors = dict(image.named_parameters()) | dict(image.named_buffers())
    assert {"phase", "magnitude", "importance", "to_rgb.color_matrix"} <= set(tensors)
    assert all(t.dtype == torch.float64 for t in tensors.values())
    with torch.no_grad():
        image.phase.normal_()
    out = image()
    assert out.dtype == torch.float64
    spectrum = torch.fft.rfft2(image.spatial().detach(), norm="ortho").abs()
    assert (spectrum - image.magnitude).abs().max() < 1e-12
    out.sum().backward()
    assert image.importance.dtype == torch.float64 and image.importance.sum() > 0


# --- magnitudes --------------------------------------------------------------------------

def test_natural_magnitude_is_one_over_f_alpha():
    for alpha in (0.5, 1.0, 2.0):
        m = natural_magnitude(32, 24, alpha=alpha)
        freqs = fourier_frequencies(24, 32)
        assert m.shape == (3, 24, 17)
        assert m[:, 0, 0].eq(0).all()   # no mean
        keep = freqs >= 1 / 32
        torch.testing.assert_close(m[0][keep], freqs[keep] ** -alpha)
        assert torch.equal(m[0], m[1]) and torch.equal(m[0], m[2])
    per_channel = natural_magnitude(8, alpha=(1.0, 1.5, 2.0))
    assert per_channel[2, 0, 4].item() == pytest.approx(0.5 ** -2.0)
    assert per_channel[0, 0, 4].item() == pytest.approx(2.0)


def test_magnitude_from_images_round_trips_through_maco():
    # the spatial images of a MACO image have exactly its magnitude as amplitude spectrum
    torch.manual_seed(0)
    source = maco(30, 20, batch=4, alpha=1.5)
    measured = magnitude_from_images(source.spatial().detach(), (20, 30), decorrelate=False)
    torch.testing.assert_close(measured, source.magnitude, atol=2e-6, rtol=1e-4)
    # and a MacoImage built from it keeps it (up to the overall scale, normalised)
    rebuilt = maco(30, 20, magnitude=measured)
    torch.testing.assert_close(rebuilt.magnitude, source.magnitude, atol=1e-5, rtol=1e-4)


def test_magnitude_from_images_known_values():
    torch.manual_seed(0)
    photos = torch.rand(3, 3, 16, 20)
    plain = magnitude_from_images(photos, (16, 20), decorrelate=False)
    expected = torch.fft.rfft2(photos.double(), norm="ortho").abs().mean(0).float()
    torch.testing.assert_close(plain, expected)
    matrix = ToRGB().color_matrix.double()
    decorrelated = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(matrix), photos.double())
    expected = torch.fft.rfft2(decorrelated, norm="ortho").abs().mean(0).float()
    torch.testing.assert_close(magnitude_from_images(photos, (16, 20)), expected,
                               rtol=1e-4, atol=1e-5)
    # a list of differently sized photos is resized first
    mixed = magnitude_from_images([torch.rand(3, 40, 50), torch.rand(3, 17, 9)], 12)
    assert mixed.shape == (3, 12, 7) and torch.isfinite(mixed).all()


def test_a_magnitude_of_another_size_is_resampled_in_frequency():
    big = natural_magnitude(64, 48, alpha=1.0)
    image = maco(32, 24, magnitude=big)
    reference = maco(32, 24, alpha=1.0)
    # 1/f in cycles per pixel does not depend on the image size: same spectrum after resampling
    torch.testing.assert_close(image.magnitude, reference.magnitude, atol=1e-4, rtol=1e-3)


def test_anisotropic_magnitude_gives_oriented_images():
    # all the power on frequencies whose wave vector is horizontal: vertical stripes (0 deg)
    fy = torch.fft.fftfreq(32).view(-1, 1).expand(32, 17)
    fx = torch.fft.rfftfreq(32).view(1, -1).expand(32, 17)
    magnitude = ((fy.abs() < 0.02) & (fx > 0.05)).float()
    torch.manual_seed(0)
    out = maco(32, magnitude=magnitude, decorrelate=False)()[0].detach().permute(1, 2, 0)
    assert angle_difference(dominant_orientation(out.numpy()), 0.0) < 5


# --- transparency (importance) map -------------------------------------------------------

def test_importance_is_the_accumulated_absolute_gradient():
    torch.manual_seed(0)
    image = maco(10, 8, batch=2)
    weights = torch.randn(2, 3, 8, 10)
    expected = torch.zeros(2, 8, 10)
    for step in range(3):
        out = image()
        out.retain_grad()
        (out * weights * (step + 1)).sum().backward()
        expected += out.grad.abs().sum(1)
        torch.testing.assert_close(image.importance, expected)   # added once per backward
    assert image.importance.min() >= 0 and not image.importance.requires_grad
    with torch.no_grad():
        image()   # a snapshot adds nothing
    detached = image.importance_map()
    torch.testing.assert_close(detached, expected)
    detached += 1   # a copy: the buffer is untouched
    torch.testing.assert_close(image.importance, expected)
    normalised = image.importance_map(normalize=True)
    assert normalised.flatten(1).amax(1).tolist() == pytest.approx([1.0, 1.0])
    image.reset_importance()
    assert image.importance.eq(0).all()
    off = maco(10, 8, track_importance=False)
    off().sum().backward()
    assert off.importance.eq(0).all()


def spot_net() -> nn.Sequential:
    r = torch.arange(15, dtype=torch.float64) - 7
    d2 = r[None, :] ** 2 + r[:, None] ** 2
    dog = torch.exp(-d2 / (2 * 1.5 ** 2)) / 1.5 ** 2 - torch.exp(-d2 / (2 * 4.0 ** 2)) / 4.0 ** 2
    return fixed_conv((dog.float() / 3).expand(1, 3, -1, -1), padding="same")


def test_importance_and_spot_are_where_a_localised_unit_looks():
    # A centre-surround unit read at (x, y) of a 64 x 48 map. Crops of side s in [0.8, 1] at a
    # uniform position are resized back to 64 x 48, so position x of a crop is, on average,
    # W/2 + 0.9 (x - W/2) in the image. Measured (seeds 0-2, 64 steps, ~2 s): importance peak
    # within 1 px of it, 99.9% of the importance within 12 px.
    x, y = 44, 16
    expected_col, expected_row = 32 + 0.9 * (x - 32), 24 + 0.9 * (y - 24)
    result = render_maco(spot_net(), objectives.neuron("1", 0, x=x, y=y), w=64, h=48, steps=64,
                         n_crops=4, crop_scale=(0.8, 1.0), noise=0.02, progress=False, seed=0)
    importance = result.extra["importance"][0]
    transparency = result.extra["transparency"][0]
    assert importance.shape == (48, 64) and importance.min() >= 0
    assert transparency.max() == pytest.approx(1.0) and transparency.min() >= 0
    np.testing.assert_allclose(transparency, importance / importance.max(), rtol=1e-6)
    smooth = ndimage.gaussian_filter(importance, 2.0)
    row, col = np.unravel_index(smooth.argmax(), smooth.shape)
    assert abs(row - expected_row) <= 3 and abs(col - expected_col) <= 3
    rows, cols = np.mgrid[0:48, 0:64]
    near = np.hypot(cols - expected_col, rows - expected_row) < 12   # 15% of the image
    assert importance[near].sum() > 0.9 * importance.sum()
    # the picture: a bright spot there (the unit's centre is positive)
    luminance = ndimage.gaussian_filter(result.image[0].mean(-1), 1.0)
    row, col = np.unravel_index(np.abs(luminance - luminance.mean()).argmax(), luminance.shape)
    assert abs(row - expected_row) <= 3 and abs(col - expected_col) <= 3
    assert luminance[row, col] > 0.8
    assert result.history[-1] > 3 * result.history[0]


def test_gabor_neurons_render_their_orientation():
    """Planted Gabor units at 30 and 120 degrees, read at the centre, one per image of a batch.

    Orientation is the robust check with MACO: colour-opponent units are not, because the mean
    colour (the zero frequency) is fixed. Objectives index crops: crop i of image b is batch
    entry b * n + i. Measured (seeds 0-5, 96 steps): within 5 degrees, ~2 s.
    """
    angles = [30.0, 120.0]
    net = fixed_conv(torch.stack([gabor(a).expand(3, -1, -1) / 3 for a in angles]))
    n = 4
    objective = Objective.sum([objectives.neuron("1", unit, batch=b * n + i)
                               for b, unit in enumerate([0, 1]) for i in range(n)])
    result = render_maco(net, objective, w=48, batch=2, steps=96, n_crops=n,
                         crop_scale=(0.8, 1.0), noise=0.02, progress=False, seed=0)
    for image, angle in zip(result.image, angles):
        assert angle_difference(dominant_orientation(image), angle) < 8
    assert result.history[-1] > 5 * result.history[0]


# --- random crops ------------------------------------------------------------------------

def test_crop_resize_identity_and_known_values():
    x = torch.rand(2, 3, 6, 8)
    whole = torch.tensor([[0.0, 0.0, 8.0, 6.0]] * 2)
    torch.testing.assert_close(crop_resize(x, whole, (6, 8)), x)
    # a pixel-aligned box at the same scale is plain slicing
    box = torch.tensor([[2.0, 1.0, 6.0, 4.0], [0.0, 3.0, 4.0, 6.0]])
    crops = crop_resize(x, box, (3, 4))
    torch.testing.assert_close(crops[0], x[0, :, 1:4, 2:6])
    torch.testing.assert_close(crops[1], x[1, :, 3:6, 0:4])
    # a box twice the output size averages 2 x 2 blocks (bilinear at the block centres)
    crops = crop_resize(x, torch.tensor([[0.0, 0.0, 8.0, 6.0]] * 2), (3, 4))
    torch.testing.assert_close(crops, nn.functional.avg_pool2d(x, 2))


def test_random_crops_shapes_and_ordering():
    batch, n = 3, 5
    x = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1).expand(batch, 3, 20, 30)
    crops = RandomCrops(n, scale=(0.3, 0.6))(x)
    assert crops.shape == (batch * n, 3, 20, 30)   # default size: the input's
    for index in range(batch * n):   # crop i of image b is at b * n + i
        torch.testing.assert_close(crops[index], torch.full_like(crops[index], index // n))
    assert RandomCrops(2, size=8)(x).shape == (6, 3, 8, 8)
    assert RandomCrops(2, size=(7, 11))(x).shape == (6, 3, 7, 11)
    # each crop is its own box of its own image, cut alone
    x = torch.rand(batch, 3, 20, 30)
    transform = RandomCrops(n, scale=(0.3, 0.6), size=(9, 13))
    params = transform.sample(x, torch.Generator().manual_seed(0))
    crops = transform.apply_transform(x, params)
    for b in range(batch):
        for i in range(n):
            k = b * n + i
            alone = crop_resize(x[b:b + 1], params["boxes"][k:k + 1], (9, 13))
            torch.testing.assert_close(crops[k:k + 1], alone)


def test_random_crops_boxes_within_scale_and_image():
    crops = RandomCrops(200, scale=(0.25, 0.5))
    params = crops.sample(torch.zeros(2, 3, 40, 60), torch.Generator().manual_seed(0))
    boxes = params["boxes"]
    assert boxes.shape == (400, 4)
    side = (boxes[:, 2] - boxes[:, 0]) / 60
    torch.testing.assert_close(side, (boxes[:, 3] - boxes[:, 1]) / 40)   # aspect kept
    assert side.min() >= 0.25 and side.max() <= 0.5 and side.max() - side.min() > 0.2
    assert boxes[:, :2].min() >= 0
    assert (boxes[:, 2] <= 60 + 1e-4).all() and (boxes[:, 3] <= 40 + 1e-4).all()


def test_shrinking_crops_average_side_goes_from_start_to_end_then_stays():
    crops = ShrinkingCrops(500, start=0.5, end=0.05, steps=10)
    g, x = torch.Generator().manual_seed(0), torch.zeros(1, 3, 40, 60)
    averages = []
    for _ in range(12):     # two calls past the render's steps
        boxes = crops.sample(x, g)["boxes"]
        side = (boxes[:, 2] - boxes[:, 0]) / 60
        torch.testing.assert_close(side, (boxes[:, 3] - boxes[:, 1]) / 40)   # aspect kept
        assert side.min() >= 0.05 - 1e-6 and side.max() <= 1
        averages.append(float(side.mean()))
    expected = [0.5 - 0.45 * min(i, 9) / 9 for i in range(12)]
    # normal around the average (spread 0.05), clipped at 0.05: exact in the middle
    assert averages[0] == pytest.approx(0.5, abs=0.01)
    assert averages[4] == pytest.approx(expected[4], abs=0.01)
    assert all(a > b for a, b in zip(averages[:9], averages[1:9]))
    assert averages[9] == pytest.approx(averages[11], abs=0.01) and averages[9] < 0.09


def test_maco_transforms_with_decay_counts_from_a_fresh_start():
    first = maco_transforms(4, decay=PAPER_CROP_DECAY, steps=4, size=8)
    again = maco_transforms(4, decay=PAPER_CROP_DECAY, steps=4, size=8)
    x = torch.rand(1, 3, 32, 32)
    for _ in range(3):
        first(x)
    assert first.steps[0].calls == 3 and again.steps[0].calls == 0
    assert again(x).shape == (4, 3, 8, 8)


def test_render_maco_with_the_papers_shrinking_crops():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    result = render_maco(net, "0:1", w=32, steps=6, n_crops=2, crop_decay=PAPER_CROP_DECAY,
                         crop_size=16, progress=False, seed=0)
    assert result.image.shape == (1, 32, 32, 3)
    assert "ShrinkingCrops" in result.settings["transforms"]
    assert "steps=6" in result.settings["transforms"]


def test_random_crops_reproducible_with_a_generator_and_replayable():
    x = torch.rand(2, 3, 24, 24)
    crops = RandomCrops(3, scale=(0.4, 0.9), noise=0.1, size=12)
    a = crops(x, generator=torch.Generator().manual_seed(7))
    b = crops(x, generator=torch.Generator().manual_seed(7))
    c = crops(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    params = crops.sample(x, torch.Generator().manual_seed(7))
    assert torch.equal(crops.apply_transform(x, params), a)
    composed = maco_transforms(3, scale=(0.4, 0.9), noise=0.1, size=12)
    y, draws = composed.forward_with_params(x, torch.Generator().manual_seed(7))
    assert torch.equal(y, a) and torch.equal(composed.apply_transform(x, draws), a)


def test_random_crops_noise_level():
    x = torch.full((1, 3, 64, 64), 0.5)
    clean = RandomCrops(4, noise=0.0)(x)
    torch.testing.assert_close(clean, torch.full_like(clean, 0.5))
    noisy = RandomCrops(4, noise=0.2)(x) - 0.5
    # Gaussian (sd 0.2) plus uniform on [-0.1, 0.1] (sd 0.2 / sqrt(12))
    assert noisy.mean().abs() < 0.005
    assert noisy.std().item() == pytest.approx(0.2 * math.sqrt(1 + 1 / 12), rel=0.02)


def test_random_crops_gradient_reaches_the_image():
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    RandomCrops(4, scale=(0.5, 1.0))(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --- render_maco and errors --------------------------------------------------------------

def test_render_maco_crop_size_defaults_to_the_models_input_size():
    from lucent_core.preprocessing import Preprocessing

    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            seen.append(tuple(x.shape))
            return self.conv(x)

    net = Spy()
    render_maco(net, "conv:0", w=20, h=16, steps=1, n_crops=3, crop_scale=(0.5, 1.0),
                progress=False, seed=0)
    assert seen[-1] == (3, 3, 16, 20)
    net.preprocessing = Preprocessing(input_size=(12, 14))
    render_maco(net, "conv:0", w=20, h=16, steps=1, n_crops=2, crop_scale=(0.5, 1.0),
                progress=False, seed=0)
    assert seen[-1] == (2, 3, 12, 14)


def test_render_maco_is_repeatable_with_a_seed():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    kwargs = dict(w=16, steps=3, n_crops=2, crop_scale=(0.5, 1.0), progress=False, seed=3)
    a, b = render_maco(net, "1:0", **kwargs), render_maco(net, "1:0", **kwargs)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.extra["importance"], b.extra["importance"])


@pytest.mark.parametrize("call, error, name", [
    (lambda: maco(0, 8), ValueError, "width"),
    (lambda: maco(8, 0), ValueError, "height"),
    (lambda: maco(8, batch=0), ValueError, "batch"),
    (lambda: maco(1), ValueError, "magnitude"),                  # a 1x1 image would be flat
    (lambda: maco(8, magnitude=torch.ones(3, 8, 5), alpha=1.0), ValueError, "alpha"),
    (lambda: maco(8, magnitude=torch.ones(2, 8, 5)), ValueError, "magnitude"),
    (lambda: maco(8, magnitude=-torch.ones(3, 8, 5)), ValueError, "magnitude"),
    (lambda: maco(8, magnitude=torch.full((3, 8, 5), float("nan"))), ValueError, "magnitude"),
])
def test_maco_rejects_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: natural_magnitude(8, alpha=(1.0, 2.0)), ValueError, "alpha"),
    (lambda: natural_magnitude(8, alpha=float("nan")), ValueError, "alpha"),
    (lambda: natural_magnitude(0), ValueError, "width"),
])
def test_natural_magnitude_rejects_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: magnitude_from_images(torch.rand(2, 1, 8, 8), 8), ValueError, "images"),
    (lambda: magnitude_from_images([torch.rand(1, 8, 8)], 8), ValueError, r"images\[0\]"),
    (lambda: magnitude_from_images([np.zeros((3, 8, 8))], 8), ValueError, r"images\[0\]"),
    (lambda: magnitude_from_images(torch.rand(8, 8), 8), ValueError, "images"),
    (lambda: magnitude_from_images([], 8), ValueError, "images"),
    (lambda: magnitude_from_images(torch.rand(1, 3, 8, 8), (8, 0)), ValueError, "width"),
])
def test_magnitude_from_images_rejects_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: RandomCrops(0), ValueError, "n_crops"),
    (lambda: RandomCrops(2, scale=(0.0, 0.5)), ValueError, "scale"),
    (lambda: RandomCrops(2, scale=(0.8, 0.5)), ValueError, "scale"),
    (lambda: RandomCrops(2, scale=(0.5, 1.5)), ValueError, "scale"),
    (lambda: RandomCrops(2, scale=0.5), ValueError, "scale"),
    (lambda: RandomCrops(2, noise=-0.1), ValueError, "noise"),
    (lambda: RandomCrops(2, size=(8,)), ValueError, "size"),
    (lambda: ShrinkingCrops(2, start=0.5, end=1.5), ValueError, "start and end"),
    (lambda: ShrinkingCrops(2, steps=0), ValueError, "steps"),
    (lambda: ShrinkingCrops(2, spread=-1), ValueError, "spread"),
    (lambda: maco_transforms(2, decay=(0.5, 0.2, 0.1)), ValueError, "decay"),
    (lambda: maco_transforms(2, scale=(0.3, 1.0), decay=(0.5, 0.05)), ValueError, "decay"),
    (lambda: crop_resize(torch.rand(2, 3, 8, 8), torch.zeros(3, 4), (4, 4)), ValueError,
     "boxes"),
])
def test_random_crops_reject_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    # crop options with transforms= are an error, not ignored
    (lambda render, net: render(net, "0:1", w=16, steps=1, n_crops=2, noise=0.1, transforms=[],
                                progress=False), ValueError, "n_crops"),
    # steps and thresholds together are an error, not one ignored
    (lambda render, net: render(net, "0:1", w=16, steps=4, thresholds=(2,), transforms=[],
                                progress=False), ValueError, "thresholds"),
    (lambda render, net: render(net, "0:1", w=16, steps=0, transforms=[], progress=False),
     ValueError, "steps"),
    (lambda render, net: render(net, "0:1", w=16, steps=1, crop_scale=(0.3, 1.0),
                                crop_decay=(0.5, 0.05), progress=False), ValueError, "crop_decay"),
    (lambda render, net: render(net, "0:1", w=16, steps=1, crop_decay=(0.5, 0.05),
                                transforms=[], progress=False), ValueError, "crop_decay"),
])
def test_render_maco_rejects_bad_input(call, error, name):
    from lucent_core.recipes.maco import render_maco
    with pytest.raises(error, match=name):
        call(render_maco, nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))


def test_render_maco_takes_transforms_without_crop_options():
    from lucent_core.recipes.maco import render_maco
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    result = render_maco(net, "0:1", w=16, steps=1, transforms=[], progress=False)
    assert result.image.shape == (1, 16, 16, 3)


def test_render_maco_takes_thresholds():
    from lucent_core.recipes.maco import render_maco
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    result = render_maco(net, "0:1", w=16, thresholds=(1, 2), transforms=[], progress=False)
    assert result.thresholds == [1, 2]
