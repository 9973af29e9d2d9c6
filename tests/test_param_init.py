"""Tests for starting the other image parameterisations from a photo (``init=``): the RGBA image
(an RGB photo with an opaque or given alpha, or an RGBA photo), the Laplacian pyramid (exact)
and the low-resolution image (its small image exact, the full one its upsampling), in every
colour mode, at odd sizes, shared by a batch or one per image; and the bad starts refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lucent_core import param

# sigmoid(logit(x)) in float32, with the Fourier spectrum computed in float64: measured
# errors are below 3e-6; the tolerance leaves room for other BLAS and FFT builds.
ATOL = 2e-5
EPS = 1e-4  # how far inside (0, 1) a sigmoid start is kept (1 comes back as 1 - EPS)

MODES = [pytest.param(fft, decorrelate, mode, id=f"{'fourier' if fft else 'pixel'}-"
                      f"{'decorrelated' if decorrelate else 'rgb'}-{mode}")
         for fft in (True, False) for decorrelate in (True, False)
         for mode in ("sigmoid", "clamp")]


def photos(batch: int, channels: int = 3, height: int = 9, width: int = 14,
           seed: int = 0) -> torch.Tensor:
    """Random photos, values kept inside [0.01, 0.99] (away from the sigmoid's clamp)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, height, width, generator=g) * 0.98 + 0.01


def close(made: torch.Tensor, want: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(made, want.expand_as(made), atol=atol, rtol=0)


# --- RGBA ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fft, decorrelate, mode", MODES)
def test_an_rgba_image_from_an_rgb_photo_gives_it_back_opaque(fft, decorrelate, mode):
    photo = photos(1)                                       # odd height, even width
    made = param.image_rgba(14, 9, batch=2, fft=fft, decorrelate=decorrelate, mode=mode,
                            init=photo[0])()                # (3, H, W): shared by the batch
    assert made.shape == (2, 4, 9, 14)
    close(made[:, :3], photo)
    close(made[:, 3:], torch.full((1, 1, 9, 14), 1 - EPS), atol=1e-6)


@pytest.mark.parametrize("fft, decorrelate, mode", MODES)
def test_an_rgba_image_from_an_rgba_photo_gives_every_channel_back(fft, decorrelate, mode):
    per_image = photos(2, channels=4, height=7, width=5)   # odd both ways, one per image
    made = param.image_rgba(5, 7, batch=2, fft=fft, decorrelate=decorrelate, mode=mode,
                            init=per_image)()
    close(made, per_image)


@pytest.mark.parametrize("fft", [True, False], ids=["fourier", "pixel"])
@pytest.mark.parametrize("init_alpha", [0.0, 0.3, 1.0])
def test_an_rgba_image_starts_at_the_alpha_asked_for(fft, init_alpha):
    photo = photos(1)
    made = param.image_rgba(14, 9, fft=fft, init=photo, init_alpha=init_alpha)()
    close(made[:, :3], photo)
    want = min(max(init_alpha, EPS), 1 - EPS)
    close(made[:, 3:], torch.full((1, 1, 9, 14), want), atol=1e-6)
    # without a photo: noise colour, but the opacity asked for
    noise = param.image_rgba(14, 9, fft=fft, init_alpha=init_alpha)()
    close(noise[:, 3:], torch.full((1, 1, 9, 14), want), atol=1e-6)


def test_an_rgba_start_survives_compositing():
    # opaque over any background: the photo itself; half transparent: halfway to it
    photo = photos(1)
    opaque = param.composite(param.image_rgba(14, 9, init=photo)(), 0.0)
    close(opaque, photo, atol=2e-4)
    half = param.composite(param.image_rgba(14, 9, init=photo, init_alpha=0.5)(), 1.0)
    close(half, (photo + 1) / 2)


# --- Laplacian pyramid -----------------------------------------------------------------------

@pytest.mark.parametrize("decorrelate", [True, False], ids=["decorrelated", "rgb"])
@pytest.mark.parametrize("mode", ["sigmoid", "clamp"])
@pytest.mark.parametrize("levels, level_weights", [(1, 1.0), (3, 2.0), (5, (0.5, 1, 1, 2, 3))])
def test_a_pyramid_from_a_photo_gives_it_back(decorrelate, mode, levels, level_weights):
    shared, per_image = photos(1, width=13), photos(2, width=13, seed=1)
    for start in (shared, per_image):
        made = param.laplacian_pyramid_image(13, 9, batch=2, levels=levels,
                                             level_weights=level_weights,
                                             decorrelate=decorrelate, mode=mode, init=start)
        close(made(), start)
        assert all((level == 0).all() for level in made.spatial.pyramid[1:])


def test_the_pyramids_assign_is_exact_at_any_finest_weight():
    pyramid = param.LaplacianPyramid(12, 8, levels=3, level_weights=(-0.5, 1.0, 1.0))
    image = torch.randn(1, 3, 8, 12)
    pyramid.assign(image)
    close(pyramid(), image, atol=1e-6)


# --- low resolution --------------------------------------------------------------------------

@pytest.mark.parametrize("fft, decorrelate, mode", MODES)
def test_a_lowres_image_holds_the_photo_downsampled_exactly(fft, decorrelate, mode):
    photo = photos(2, height=11, width=17)                  # 3 x 5 small pixels at scale 4
    made = param.lowres_image(17, 11, batch=2, scale=4, fft=fft, decorrelate=decorrelate,
                              mode=mode, init=photo)
    small = F.interpolate(photo, size=(3, 5), mode="bilinear", align_corners=False,
                          antialias=True)
    close(made.to_rgb(made.spatial.inner()), small)
    assert made().shape == (2, 3, 11, 17)


@pytest.mark.parametrize("fft", [True, False], ids=["fourier", "pixel"])
def test_a_lowres_image_at_scale_1_gives_the_photo_back(fft):
    photo = photos(1)
    close(param.lowres_image(14, 9, scale=1, fft=fft, init=photo)(), photo)


def test_a_lowres_image_of_a_smooth_photo_is_close_to_it():
    # a gentle colour ramp: little detail finer than 4 px, so the upsampled start is near
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 48), indexing="ij")
    photo = torch.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.8 - 0.5 * x * y])[None]
    made = param.lowres_image(48, 32, scale=4, init=photo)()
    error = (made - photo).abs()
    # measured: mean 0.0025, max 0.049 (at the border, where the upsampling holds the outer
    # small pixels' values instead of continuing the ramp)
    assert error.mean() < 0.005 and error.max() < 0.08, (error.mean(), error.max())
    noise = param.lowres_image(48, 32, scale=4)()           # where it would start otherwise
    assert (noise - photo).abs().mean() > 0.1


# --- bad starts ------------------------------------------------------------------------------

def outside(value: float) -> torch.Tensor:
    start = torch.full((3, 8, 8), 0.5)
    start[0, 0, 0] = value
    return start


FACTORIES = {"image_rgba": param.image_rgba, "lowres_image": param.lowres_image,
             "laplacian_pyramid_image": param.laplacian_pyramid_image}
BAD_STARTS = [
    (lambda make: make(8, init=torch.rand(3, 8, 9)), ValueError, "init"),          # width
    (lambda make: make(8, init=torch.rand(3, 9, 8)), ValueError, "init"),          # height
    (lambda make: make(8, batch=2, init=torch.rand(3, 3, 8, 8)), ValueError, "init"),
    (lambda make: make(8, init=torch.rand(2, 8, 8)), ValueError, "init"),          # channels
    (lambda make: make(8, init=torch.rand(8, 8)), ValueError, "init"),
    (lambda make: make(8, init=np.zeros((8, 8, 3))), TypeError, "init"),
    (lambda make: make(8, init=[[[0.5]]]), TypeError, "init"),
    (lambda make: make(8, init=outside(1.5)), ValueError, "init"),
    (lambda make: make(8, init=outside(-0.01)), ValueError, "init"),
    (lambda make: make(8, init=outside(float("nan"))), ValueError, "init"),
]


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("call, error, name", BAD_STARTS)
def test_a_bad_start_image_is_refused(factory, call, error, name):
    with pytest.raises(error, match=name):
        call(FACTORIES[factory])


@pytest.mark.parametrize("call, error, name", [
    (lambda: param.image_rgba(8, init=torch.rand(5, 8, 8)), ValueError, "init"),
    (lambda: param.image_rgba(8, init=torch.rand(4, 8, 8), init_alpha=0.5), ValueError,
     "init_alpha"),
    (lambda: param.image_rgba(8, init_alpha=1.5), ValueError, "init_alpha"),
    (lambda: param.image_rgba(8, init_alpha=-0.5), ValueError, "init_alpha"),
    (lambda: param.image_rgba(8, init_alpha="opaque"), ValueError, "init_alpha"),
    (lambda: param.image_rgba(8, init_alpha=float("nan")), ValueError, "init_alpha"),
    (lambda: param.laplacian_pyramid_image(8, levels=2, level_weights=(0, 1),
                                           init=torch.rand(3, 8, 8)), ValueError,
     "level_weights"),
])
def test_rgba_and_pyramid_starts_refuse_what_they_cannot_give_back(call, error, name):
    with pytest.raises(error, match=name):
        call()
