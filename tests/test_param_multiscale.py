"""Tests for lucent_core.param.multiscale: low-resolution and Laplacian-pyramid images.

Shapes for any aspect ratio, fitting a target (exactly for the pyramid; as well as the
resolution allows for the low-resolution image), a planted colour unit, dtype, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_param import smooth_target
from test_planted import OPPONENT, assert_renders_colour, fixed_conv

from lucent_core import objectives, render_vis
from lucent_core.param.color import ToRGB
from lucent_core.param.images import ImageParam
from lucent_core.param.multiscale import (LaplacianPyramid, LowResImage, laplacian_pyramid_image,
                                          lowres_image, max_pyramid_levels)
from lucent_core.param.spatial import FourierImage, PixelImage

SIZES = [(32, 32), (37, 64), (33, 17), (1, 5), (5, 1)]   # (height, width)


def make(kind: str, w: int, h: int | None = None, **kwargs) -> ImageParam:
    if kind == "lowres":
        return lowres_image(w, h, **kwargs)
    return laplacian_pyramid_image(w, h, **kwargs)


# --- shapes ------------------------------------------------------------------------------

@pytest.mark.parametrize("height, width", SIZES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind, kwargs", [
    ("lowres", dict(scale=4)), ("lowres", dict(scale=3, fft=True)), ("lowres", dict(scale=1)),
    ("pyramid", dict(levels=1)), ("pyramid", dict(levels=3)),
])
def test_shapes_and_range(height, width, batch, kind, kwargs):
    torch.manual_seed(0)
    image = make(kind, width, height, batch=batch, sd=3.0, **kwargs)
    out = image()
    assert out.shape == (batch, 3, height, width)
    assert image.spatial().shape == (batch, 3, height, width)
    assert out.min() >= 0 and out.max() <= 1
    assert isinstance(image.to_rgb, ToRGB)


def test_default_height_is_width_and_small_sizes():
    assert lowres_image(20)().shape == (1, 3, 20, 20)
    assert laplacian_pyramid_image(20)().shape == (1, 3, 20, 20)
    low = lowres_image(30, 10, scale=4)
    assert isinstance(low.spatial, LowResImage) and isinstance(low.spatial.inner, PixelImage)
    assert low.spatial.inner.pixels.shape == (1, 3, 3, 8)   # ceil(10 / 4), ceil(30 / 4)
    assert isinstance(lowres_image(30, 10, fft=True).spatial.inner, FourierImage)
    pyramid = laplacian_pyramid_image(30, 10, levels=5).spatial
    assert [tuple(p.shape[-2:]) for p in pyramid.pyramid] == [(10, 30), (5, 15), (3, 8),
                                                                (2, 4), (1, 2)]


def test_initial_image_is_near_grey():
    torch.manual_seed(0)
    for image in (lowres_image(24, 16, batch=2), laplacian_pyramid_image(24, 16, batch=2)):
        out = image()
        assert (out - 0.5).abs().max() < 0.03 and out.std() > 0


def test_lowres_is_a_bilinear_upsampling_of_its_small_image():
    torch.manual_seed(0)
    spatial = LowResImage(20, 12, batch=2, scale=4)
    small = spatial.inner()
    torch.testing.assert_close(spatial(), F.interpolate(small, size=(12, 20), mode="bilinear",
                                                        align_corners=False))
    # only detail coarser than the scale: the image is smooth at the pixel level
    out = spatial().detach()
    assert (out[..., 1:] - out[..., :-1]).abs().max() < (small[..., 1:] - small[..., :-1]
                                                          ).abs().max()


def test_pyramid_is_the_weighted_sum_of_upsampled_levels():
    torch.manual_seed(0)
    pyramid = LaplacianPyramid(14, 9, batch=2, levels=3, level_weights=(1.0, 0.5, 3.0))
    expected = pyramid.pyramid[0] * 1.0
    for level, weight in zip(pyramid.pyramid[1:], (0.5, 3.0)):
        expected = expected + weight * F.interpolate(level, size=(9, 14), mode="bilinear",
                                                     align_corners=False)
    torch.testing.assert_close(pyramid(), expected)
    assert LaplacianPyramid(14, 9, levels=3, level_weights=2.0).level_weights.tolist() == \
        [1.0, 2.0, 4.0]
    # a weight acts like a learning rate: under Adam, one step moves that level's contribution
    # in proportion to its weight
    for weights in ((1.0, 1.0), (1.0, 8.0)):
        torch.manual_seed(0)
        pyramid = LaplacianPyramid(16, 16, levels=2, level_weights=weights)
        coarse_before = pyramid.pyramid[1].detach().clone()
        optimiser = torch.optim.Adam(pyramid.parameters(), lr=0.01)
        pyramid().sum().backward()
        optimiser.step()
        moved = (pyramid.pyramid[1].detach() - coarse_before).abs().mean() * weights[1]
        assert moved.item() == pytest.approx(0.01 * weights[1], rel=1e-3)


def test_batch_images_are_independent():
    torch.manual_seed(0)
    for image in (lowres_image(16, batch=2), laplacian_pyramid_image(16, batch=2)):
        out = image()
        assert not torch.allclose(out[0], out[1])
        out[0].sum().backward()   # image 0's loss does not touch image 1's parameters
        for p in image.parameters():
            assert p.grad[1].abs().max() == 0 and p.grad[0].abs().max() > 0


# --- fitting a target --------------------------------------------------------------------

def fit(image: ImageParam, target: torch.Tensor, steps: int = 400) -> float:
    optimiser = torch.optim.Adam(image.parameters(), lr=0.1)
    for _ in range(steps):
        optimiser.zero_grad()
        ((image() - target) ** 2).mean().backward()
        optimiser.step()
    return (image() - target).abs().mean().item()


@pytest.mark.parametrize("level_weights", [1.0, 2.0])
def test_pyramid_fits_a_target(level_weights):
    # Measured (seeds 0-2): weights 1 reach 4e-8, weights 2**k <= 0.002 in 400 steps (~0.5 s)
    torch.manual_seed(0)
    target = smooth_target()
    image = laplacian_pyramid_image(48, 32, batch=2, levels=4, level_weights=level_weights)
    start = (image() - target).abs().mean().item()
    assert start > 0.1
    assert fit(image, target) < 0.01


def least_squares_lowres_error(target: torch.Tensor, small: tuple[int, int]) -> float:
    """The error of the best low-resolution image found by linear least squares in the
    decorrelated logit space (the space the parameterisation optimises in)."""
    to_rgb = ToRGB()
    height, width = target.shape[-2:]
    decorrelated = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_rgb.color_matrix),
                                torch.logit(target))
    n = small[0] * small[1]
    basis = torch.eye(n).view(n, 1, *small)
    upsample = F.interpolate(basis, size=(height, width), mode="bilinear",
                             align_corners=False).reshape(n, -1).T
    solution = torch.linalg.lstsq(upsample, decorrelated.reshape(-1, height * width).T).solution
    best = (upsample @ solution).T.reshape(target.shape)
    return (to_rgb(best) - target).abs().mean().item()


@pytest.mark.parametrize("fft", [False, True])
def test_lowres_fits_a_smooth_target_as_well_as_its_resolution_allows(fft):
    # Measured: Adam reaches 0.0222 (pixels) / 0.0232 (Fourier); the least-squares optimum in
    # logit space gives 0.0224; a 4x area-downsample-then-upsample of the target gives 0.042.
    torch.manual_seed(0)
    target = smooth_target()
    best = least_squares_lowres_error(target, (8, 12))
    error = fit(lowres_image(48, 32, batch=2, scale=4, fft=fft), target)
    assert error < 1.1 * best
    assert best > 0.01   # the target really has detail finer than 4 px: the limit is real


def test_lowres_fits_a_target_at_its_own_resolution_exactly():
    torch.manual_seed(1)
    small = torch.randn(2, 3, 8, 12)
    target = ToRGB()(F.interpolate(small, size=(32, 48), mode="bilinear", align_corners=False))
    torch.manual_seed(0)
    assert fit(lowres_image(48, 32, batch=2, scale=4), target) < 0.005


# --- a planted unit ----------------------------------------------------------------------

@pytest.mark.parametrize("kind, kwargs", [("lowres", dict(scale=4)),
                                          ("pyramid", dict(levels=3))])
def test_colour_units_render_their_colour(kind, kwargs):
    """Colour-opponent 1x1 units read before their ReLU: image i must be colour i.

    Adam at lr 0.2 for 128 steps (~0.4 s). Measured: opponent values (0.91, 0.72, 0.92) for the
    low-resolution image, which for a uniform colour behaves exactly like a pixel image (green
    is the slowest in decorrelated colour), and (0.99, 0.95, 0.99) for the 3-level pyramid,
    whose levels add up to a larger step on a uniform colour.
    """
    net = fixed_conv(OPPONENT.view(3, 3, 1, 1))
    result = render_vis(net, objectives.batch_channels("0", [0, 1, 2]),
                        param_f=lambda: make(kind, 32, batch=3, **kwargs),
                        optimizer=lambda params: torch.optim.Adam(params, lr=0.2),
                        thresholds=(128,), progress=False, seed=0)
    for unit, image in enumerate(result.image):
        assert_renders_colour(image, unit)
    assert np.isfinite(result.history).all()


# --- dtype and errors --------------------------------------------------------------------

@pytest.mark.parametrize("kind, kwargs", [("lowres", dict()), ("lowres", dict(fft=True)),
                                          ("pyramid", dict(levels=3))])
def test_to_float64_moves_everything(kind, kwargs):
    image = make(kind, 12, 10, batch=2, **kwargs).to(torch.float64)
    tensors = dict(image.named_parameters()) | dict(image.named_buffers())
    assert all(t.dtype == torch.float64 for t in tensors.values()), \
        {k: t.dtype for k, t in tensors.items()}
    assert image().dtype == torch.float64 and image.spatial().dtype == torch.float64


def test_state_dict_holds_only_learnable_tensors():
    assert list(lowres_image(8).state_dict()) == ["spatial.inner.pixels"]
    assert list(laplacian_pyramid_image(8, levels=3).state_dict()) == [
        "spatial.pyramid.0", "spatial.pyramid.1", "spatial.pyramid.2"]


def test_max_pyramid_levels():
    assert max_pyramid_levels(64, 64) == 7        # 64, 32, 16, 8, 4, 2, 1
    assert max_pyramid_levels(65, 20) == 8        # 65, 33, 17, 9, 5, 3, 2, 1
    assert max_pyramid_levels(1, 1) == 1
    assert laplacian_pyramid_image(64, levels=7).spatial.pyramid[-1].shape[-2:] == (1, 1)


@pytest.mark.parametrize("call, error, name", [
    (lambda: lowres_image(0, 8), ValueError, "width"),
    (lambda: lowres_image(8, 0), ValueError, "height"),
    (lambda: lowres_image(8, batch=0), ValueError, "batch"),
    (lambda: lowres_image(8, scale=0), ValueError, "scale"),
    (lambda: lowres_image(8, scale=2.5), TypeError, "scale"),
    (lambda: lowres_image(8, mode="tanh"), ValueError, "mode"),
])
def test_lowres_image_rejects_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: laplacian_pyramid_image(0), ValueError, "height"),
    (lambda: laplacian_pyramid_image(8, levels=0), ValueError, "levels"),
    (lambda: laplacian_pyramid_image(8, levels=5), ValueError, "levels"),
    (lambda: laplacian_pyramid_image(8, levels=2, level_weights=(1.0,)), ValueError,
     "level_weights"),
    (lambda: laplacian_pyramid_image(8, levels=2, level_weights=float("inf")), ValueError,
     "level_weights"),
    (lambda: laplacian_pyramid_image(8, levels=2, level_weights=(1.0, float("nan"))),
     ValueError, "level_weights"),
    (lambda: laplacian_pyramid_image(8, mode="tanh"), ValueError, "mode"),
])
def test_laplacian_pyramid_image_rejects_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_too_many_levels_names_the_most():
    with pytest.raises(ValueError, match=r"1\.\.4"):
        laplacian_pyramid_image(8, levels=5)
