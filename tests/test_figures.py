"""Tests for lucent_core.figures: grid sizes against the documented formula, labels where they
are asked for, exact cell pixels, RGBA; re-rendering at other sizes (known cosines, round
trips, large-then-downscaled against small for every parameterisation, planted gratings);
the JSON side-car (keys, values, atomic files, errors before anything is written)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lucent_core import figures, objectives, param, render_vis
from lucent_core.recipes.figures import (PANEL_KEYS, FigureLayout, figure_grid, fourier_resample,
                                 panel_record, render_at, save_figure, save_high_res)
from lucent_core.io import to_pil
from lucent_core.models import Preprocessing
from lucent_core.models.weights import state_dict_sha256
from lucent_core.render import describe_transforms
from lucent_core.transforms import Jitter, Pad, standard_affine
from test_planted import fixed_conv, gabor

WHITE = (255, 255, 255)


def planted(height: int, width: int, seed: int, channels: int = 3) -> np.ndarray:
    """A uint8 image of distinct random values: any shift, flip or resize shows up."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)


def expected_size(rows, cols, cell_h, cell_w, padding, font_size=12, row_labels=False,
                  col_labels=False, title=False, row_label_width=None):
    """The documented formula, written out independently of FigureLayout."""
    left = (row_label_width or 6 * font_size) if row_labels else 0
    top = 2 * font_size if col_labels else 0
    title_band = 3 * font_size if title else 0
    return (left + cols * cell_w + (cols + 1) * padding,
            title_band + top + rows * cell_h + (rows + 1) * padding)


def ink(region: np.ndarray, background=WHITE) -> int:
    """Number of pixels in ``region`` that differ from the background colour."""
    return int((region[..., :len(background)] != np.array(background)).any(-1).sum())


# --- figure_grid: size, placement, labels ---------------------------------------------------

@pytest.mark.parametrize("rows, cols, cell, padding", [(1, 1, (16, 16), 0), (2, 3, (20, 30), 8),
                                                       (3, 2, (33, 17), 5), (1, 4, (8, 40), 1)])
@pytest.mark.parametrize("labels", ["none", "rows", "cols", "both+title"])
def test_grid_size_is_the_documented_formula(rows, cols, cell, padding, labels):
    font_size = 10
    row_labels = [f"r{i}" for i in range(rows)] if labels in ("rows", "both+title") else None
    col_labels = [f"c{i}" for i in range(cols)] if labels in ("cols", "both+title") else None
    title = "T" if labels == "both+title" else None
    images = [planted(*cell, seed=i) for i in range(rows * cols)]
    grid = figure_grid(images, rows, cols, padding=padding, row_labels=row_labels,
                       col_labels=col_labels, title=title, font_size=font_size)
    assert grid.size == expected_size(rows, cols, *cell, padding, font_size,
                                      row_labels is not None, col_labels is not None,
                                      title is not None)
    assert grid.mode == "RGB"


def test_grid_size_known_numbers():
    images = [planted(32, 48, seed=0)] * 6
    # 3 * 48 + 4 * 8 = 176 wide; 2 * 32 + 3 * 8 = 88 high
    assert figure_grid(images, 2, 3).size == (176, 88)
    # + a 72 px row-label band (6 * 12), a 24 px column-label band, a 36 px title band
    assert figure_grid(images, 2, 3, row_labels=["a", "b"], col_labels=["x", "y", "z"],
                       title="t").size == (248, 148)
    assert figure_grid(images, 2, 3, row_labels=["a", "b"], row_label_width=20).size == (196, 88)
    # cell given: images are resized; an int is a square cell
    assert figure_grid(images, 2, 3, cell=10, padding=2).size == (38, 26)
    assert figure_grid(images, 2, 3, cell=(10, 20), padding=0).size == (60, 20)


def test_layout_class_matches_the_formula_and_places_cells():
    layout = FigureLayout(rows=2, cols=3, cell_h=20, cell_w=30, padding=4, title_band=36,
                          top_band=24, left_band=72)
    assert layout.size == (72 + 90 + 16, 36 + 24 + 40 + 12)
    assert layout.cell_box(0, 0) == (76, 64, 106, 84)
    assert layout.cell_box(1, 2) == (76 + 2 * 34, 64 + 24, 76 + 2 * 34 + 30, 64 + 24 + 20)
    with pytest.raises(IndexError, match=r"outside the 2 x 3 grid"):
        layout.cell_box(2, 0)


def test_cells_hold_the_resized_images_at_the_computed_offsets():
    rows, cols, padding, font_size = 2, 2, 6, 10
    images = [planted(20, 30, 0), planted(40, 25, 1), planted(20, 30, 2), planted(7, 9, 3)]
    grid = figure_grid(images, rows, cols, padding=padding, row_labels=["a", "b"],
                       col_labels=["x", "y"], title="title", font_size=font_size)
    pixels = np.asarray(grid)
    left0, top0 = 6 * font_size + padding, 3 * font_size + 2 * font_size + padding
    for i, image in enumerate(images):
        row, col = divmod(i, cols)
        left, top = left0 + col * (30 + padding), top0 + row * (20 + padding)
        expected = to_pil(image).resize((30, 20), Image.Resampling.LANCZOS)
        np.testing.assert_array_equal(pixels[top:top + 20, left:left + 30], np.asarray(expected))
    # images of the cell size are pasted unchanged
    np.testing.assert_array_equal(pixels[top0:top0 + 20, left0:left0 + 30], images[0])
    # the padding between and below the cells is background
    assert ink(pixels[top0:, left0 + 30:left0 + 30 + padding]) == 0
    assert ink(pixels[-padding:]) == 0 and ink(pixels[:, -padding:]) == 0


def test_without_labels_everything_outside_the_cells_is_background():
    grid = np.asarray(figure_grid([planted(10, 10, i) for i in range(4)], 2, 2, padding=3,
                                  background=(10, 20, 30)))
    mask = np.ones(grid.shape[:2], bool)
    for row in range(2):
        for col in range(2):
            top, left = 3 + row * 13, 3 + col * 13
            mask[top:top + 10, left:left + 10] = False
    assert (grid[mask] == (10, 20, 30)).all()


def test_labels_are_drawn_in_their_bands_and_nowhere_else():
    rows, cols, padding, font_size, cell = 2, 3, 8, 12, (40, 50)
    images = [planted(*cell, seed=i) for i in range(rows * cols)]
    grid = np.asarray(figure_grid(images, rows, cols, padding=padding,
                                  row_labels=[None, "row b"], col_labels=["col a", "", "c"],
                                  title="Title", font_size=font_size))
    title_band, top_band, left_band = 36, 24, 72
    col_band = grid[title_band:title_band + top_band]
    for col, labelled in enumerate([True, False, True]):
        left = left_band + padding + col * (cell[1] + padding)
        # each column label stays within its column's share of the band
        share = col_band[:, left - padding // 2:left + cell[1] + padding // 2]
        assert (ink(share) > 0) == labelled
    assert ink(col_band[:, :left_band]) == 0   # nothing above the row-label band
    row_band = grid[title_band + top_band:, :left_band]
    for row, labelled in enumerate([False, True]):
        top = padding + row * (cell[0] + padding)
        assert (ink(row_band[top:top + cell[0]]) > 0) == labelled
    assert ink(grid[:title_band]) > 0
    # the title is centred: ink on both halves of the figure
    assert ink(grid[:title_band, :grid.shape[1] // 2]) > 0
    assert ink(grid[:title_band, grid.shape[1] // 2:]) > 0


def test_none_cells_stay_background_and_cell_can_be_given():
    grid = np.asarray(figure_grid([None, planted(10, 10, 0), None, None], 2, 2, padding=2))
    assert ink(grid[2:12, 2:12]) == 0 and ink(grid[14:24]) == 0
    np.testing.assert_array_equal(grid[2:12, 14:24], planted(10, 10, 0))
    assert figure_grid([None] * 2, 1, 2, cell=(5, 7), padding=1).size == (17, 7)


def test_rgba_images_keep_their_alpha():
    rgba = planted(12, 12, 0, channels=4)
    rgba[..., 3] = np.arange(12)[None, :] * 20   # an alpha ramp, 0 (transparent) to 220
    grid = figure_grid([rgba, planted(12, 12, 1)], 1, 2, padding=4)
    assert grid.mode == "RGBA"
    pixels = np.asarray(grid)
    np.testing.assert_array_equal(pixels[4:16, 4:16], rgba)          # not composited
    np.testing.assert_array_equal(pixels[4:16, 20:32, :3], planted(12, 12, 1))
    assert (pixels[4:16, 20:32, 3] == 255).all()                     # RGB cells are opaque
    assert (pixels[:4] == (255, 255, 255, 255)).all()                # opaque white background
    clear = np.asarray(figure_grid([rgba, None], 1, 2, padding=4, background=None,
                                   col_labels=["a", "b"]))
    assert (clear[24:28, :, 3] == 0).all() and (clear[28:40, 20:32, 3] == 0).all()
    assert clear[:24, :, 3].max() == 255                              # opaque label ink
    # a transparent background turns RGB images into an RGBA figure too
    assert figure_grid([planted(4, 4, 0)], 1, 1, background=None).mode == "RGBA"


def test_inputs_batches_tensors_pil_and_layout_record():
    batch = torch.rand(4, 3, 6, 8)
    grid = figure_grid(batch, 2, 2, padding=1)
    assert grid.size == (2 * 8 + 3, 2 * 6 + 3)
    np.testing.assert_array_equal(np.asarray(grid)[1:7, 10:18], np.asarray(to_pil(batch[1])))
    pil = Image.fromarray(planted(6, 8, 0))
    assert figure_grid([pil, None], 1, 2, padding=0).getpixel((0, 0)) == pil.getpixel((0, 0))
    layout = grid.info[figures.LAYOUT_INFO_KEY]
    assert (layout["rows"], layout["cols"], layout["cell"], layout["padding"]) == (2, 2, [6, 8],
                                                                                  1)


TWO = [planted(10, 10, 0)] * 2


@pytest.mark.parametrize("call, error, name", [
    (lambda: figure_grid(TWO, 1, 3), ValueError, "images"),
    (lambda: figure_grid(TWO + [None], 1, 3, col_labels=["a", "b"]), ValueError, "col_labels"),
    (lambda: figure_grid(TWO, 1, 2, padding=2, col_labels=["a very long column label", "b"]),
     ValueError, "column label"),
    (lambda: figure_grid(TWO, 2, 1, row_labels=["a label far too long for the band", "b"]),
     ValueError, "row label"),
    (lambda: figure_grid(TWO, 1, 2, padding=1, title="a long title that cannot fit in 23 px"),
     ValueError, "title"),
    (lambda: figure_grid(TWO, 1, 2, row_label_width=40), ValueError, "row_label_width"),
    (lambda: figure_grid(TWO, 1, 2, background=(300, 0, 0)), ValueError, "background"),
    (lambda: figure_grid([np.zeros((2, 4, 4, 3)), None], 1, 2), ValueError, "images"),
    (lambda: figure_grid(TWO, 1, 2, padding=-1), ValueError, "padding"),
    (lambda: figure_grid([None] * 2, 1, 2), ValueError, "cell"),
    (lambda: figure_grid(TWO, 0, 2), ValueError, "rows"),
    (lambda: figure_grid(TWO, 1, 2, cell=(0, 4)), ValueError, "cell"),
    (lambda: figure_grid(TWO, 1, 2, font_size=0), ValueError, "font_size"),
    (lambda: figure_grid(TWO, 1, 2, col_labels="ab"), TypeError, "col_labels"),
    (lambda: figure_grid(TWO, 1, 2, title=3), TypeError, "title"),
    (lambda: figure_grid(TWO, 2, 1, row_labels=["a", "b"], row_label_width=0), ValueError,
     "row_label_width"),
    (lambda: figure_grid(TWO, 1, 2, text_color=(0, 0, 0, 255)), ValueError, "text_color"),
    (lambda: figure_grid("images", 1, 2), TypeError, "images"),
])
def test_figure_grid_rejects_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: FigureLayout(rows=-1, cols=1, cell_h=4, cell_w=4, padding=0), ValueError, "rows"),
    (lambda: FigureLayout(rows=1, cols=1, cell_h=4, cell_w=4, padding=-2), ValueError,
     "padding"),
])
def test_figure_layout_rejects_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- re-rendering at other sizes ------------------------------------------------------------

def area_down(large: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(large, size=size, mode="area")


def assert_close_match(small: torch.Tensor, large: torch.Tensor, mad: float = 0.02,
                       corr: float = 0.98) -> None:
    down = area_down(large, tuple(small.shape[-2:]))
    assert (down - small).abs().mean().item() < mad
    a, b = (down - down.mean()).flatten(), (small - small.mean()).flatten()
    assert (a @ b / (a.norm() * b.norm())).item() > corr


def cosine(height: int, width: int, ky: int, kx: int, phase: float) -> torch.Tensor:
    """``cos`` with ``ky``, ``kx`` cycles per image, sampled at pixel centres."""
    v = (torch.arange(height, dtype=torch.float64) + 0.5) / height
    u = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    return torch.cos(2 * math.pi * (ky * v[:, None] + kx * u[None, :]) + phase)


@pytest.mark.parametrize("small, large", [((8, 8), (24, 24)), ((7, 10), (21, 25)),
                                          ((10, 7), (13, 30)), ((12, 12), (5, 7)),
                                          ((9, 16), (4, 6))])
def test_fourier_resample_samples_band_limited_cosines_exactly(small, large):
    limit_y = (min(small[0], large[0]) - 1) // 2    # frequencies below both Nyquists
    limit_x = (min(small[1], large[1]) - 1) // 2
    for ky in range(-limit_y, limit_y + 1):
        for kx in range(0, limit_x + 1):
            resampled = fourier_resample(cosine(*small, ky, kx, 0.3), large)
            torch.testing.assert_close(resampled, cosine(*large, ky, kx, 0.3), atol=1e-12,
                                       rtol=0)


@pytest.mark.parametrize("small, large", [((8, 8), (32, 32)), ((7, 10), (21, 25)),
                                          ((6, 9), (7, 10))])
def test_fourier_resample_up_then_down_is_the_identity(small, large):
    x = torch.randn(2, 3, *small, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    up = fourier_resample(x, large)
    assert up.shape == (2, 3, *large) and up.dtype == torch.float64
    torch.testing.assert_close(fourier_resample(up, small), x, atol=1e-12, rtol=0)
    assert fourier_resample(x, small) is x


@pytest.mark.parametrize("small, large", [((8, 6), (20, 15)), ((7, 9), (16, 12)),
                                          ((12, 10), (5, 8))])
def test_fourier_resample_commutes_with_flips_and_keeps_nyquist_symmetric(small, large):
    """Pixel centres are symmetric about the image centre, so resampling a mirrored image
    gives the mirrored result; an even size's Nyquist term must be split evenly for this."""
    x = torch.randn(3, *small, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for dims in [(-2,), (-1,), (-2, -1)]:
        torch.testing.assert_close(fourier_resample(x.flip(dims), large),
                                   fourier_resample(x, large).flip(dims), atol=1e-12, rtol=0)
    if small[0] % 2 == 0 and large[0] > small[0]:
        # a checkerboard along y (the Nyquist row) times a cosine along x: the enlarged image is
        # cos(pi * y) * cos(2 pi u) at the new pixel centres, y in old pixels
        checker = (-1.0) ** torch.arange(small[0], dtype=torch.float64)[:, None] \
            * cosine(1, small[1], 0, 1, 0.0)
        y = (torch.arange(large[0], dtype=torch.float64) + 0.5) * small[0] / large[0] - 0.5
        expected = torch.cos(math.pi * y)[:, None] * cosine(1, large[1], 0, 1, 0.0)
        torch.testing.assert_close(fourier_resample(checker, large), expected, atol=1e-12,
                                   rtol=0)


@pytest.mark.parametrize("make", [
    lambda: param.image(12, 10, batch=2, sd=0.5),
    lambda: param.image(12, 10, fft=False, sd=0.5),
    lambda: param.image_rgba(12, 10, sd=0.5),
    lambda: param.image_rgba(12, 10, fft=False, sd=0.5),
    lambda: param.cppn(12, 10, batch=2),
    lambda: param.maco(12, 10),
    lambda: param.lowres_image(12, 10, scale=3, sd=0.5),
    lambda: param.lowres_image(12, 10, scale=3, sd=0.5, fft=True),
    lambda: param.laplacian_pyramid_image(12, 10, levels=3, sd=0.5),
], ids=["fourier", "pixel", "rgba", "rgba-pixel", "cppn", "maco", "lowres", "lowres-fft",
        "pyramid"])
def test_native_size_gives_exactly_the_parameterisation_s_own_image(make):
    torch.manual_seed(0)
    image = make()
    with torch.no_grad():
        own = image()
    assert torch.equal(render_at(image, (10, 12)), own)
    before = [p.detach().clone() for p in image.parameters()]
    bigger = render_at(image, (30, 36))
    assert bigger.shape == (own.shape[0], own.shape[1], 30, 36)
    assert not bigger.requires_grad and bigger.min() >= 0 and bigger.max() <= 1
    assert all(torch.equal(a, b) for a, b in zip(before, image.parameters()))


@pytest.mark.parametrize("decorrelate", [True, False])
def test_fourier_large_downscaled_matches_small(decorrelate):
    torch.manual_seed(0)
    image = param.image(32, 24, batch=3, sd=0.5, decorrelate=decorrelate)
    with torch.no_grad():
        small = image()
    assert_close_match(small, render_at(image, 128))           # 4x, aspect ratio kept
    assert_close_match(small, render_at(image, (72, 96)))      # 3x


def box_down(large: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area downscale by a non-integer factor (PIL's box filter weighs partial pixels)."""
    return torch.from_numpy(np.stack([[np.asarray(
        Image.fromarray(channel.numpy(), mode="F").resize(size[::-1], Image.Resampling.BOX))
        for channel in image] for image in large]))


@pytest.mark.parametrize("decorrelate", [True, False])
def test_fourier_non_integer_factors_match(decorrelate):
    torch.manual_seed(0)
    image = param.image(32, 24, batch=3, sd=0.2, decay_power=1.5, decorrelate=decorrelate)
    with torch.no_grad():
        small = image()
    for size in [(60, 80), (50, 70)]:
        large = render_at(image, size)
        assert large.shape == (3, 3, *size)
        assert_close_match(small, box_down(large, (24, 32)))


def test_fourier_shrinking_keeps_the_frequencies_that_fit():
    """A picture without detail finer than the smaller size loses nothing when shrunk: it
    comes back exactly when enlarged again."""
    torch.manual_seed(0)
    image = param.image(32, 24, batch=2, sd=0.5, decorrelate=False)
    with torch.no_grad():
        fy = torch.fft.fftfreq(24).abs()[:, None]
        fx = torch.fft.rfftfreq(32)[None, :]
        image.spatial.spectrum.mul_(((fy < 0.2) & (fx < 0.2))[..., None])   # band-limit
        small = image()
    shrunk = render_at(image, 16)
    assert shrunk.shape == (2, 3, 12, 16)
    again = torch.sigmoid(fourier_resample(torch.logit(shrunk.double()), (24, 32)))
    torch.testing.assert_close(again.float(), small, atol=1e-5, rtol=0)
    assert_close_match(area_down(small, (12, 16)), shrunk)


def test_render_at_differs_from_plain_upsampling_of_the_image():
    """Zero-padding the spectrum is not the same as bicubic resizing of the small picture."""
    torch.manual_seed(0)
    image = param.image(16, sd=1.0)
    with torch.no_grad():
        small = image()
    large = render_at(image, 64)
    resized = F.interpolate(small, size=(64, 64), mode="bicubic", align_corners=False)
    assert (large - resized).abs().max() > 0.02
    # but the spectrum route is exactly what the module's own spatial image resampled gives
    with torch.no_grad():
        expected = image.to_rgb(fourier_resample(image.spatial(), (64, 64)))
    torch.testing.assert_close(large, expected)


@pytest.fixture(scope="module")
def grating_net() -> nn.Module:
    angles = [30.0, 120.0]
    return fixed_conv(torch.stack([gabor(a, period=12.0, size=17, sigma=5.0).expand(3, -1, -1)
                                   / 3 for a in angles]))


@pytest.mark.parametrize("fft", [True, False], ids=["fourier", "pixel"])
@pytest.mark.parametrize("decorrelate", [True, False])
def test_optimised_render_re_rendered_large_matches(grating_net, fft, decorrelate):
    result = render_vis(grating_net, objectives.batch_channels("1", [0, 1]),
                        param_f=lambda: param.image(48, batch=2, fft=fft,
                                                    decorrelate=decorrelate),
                        transforms=[], thresholds=(32,), progress=False, seed=0)
    small = torch.from_numpy(result.image).permute(0, 3, 1, 2)
    assert small.mean(1).std((1, 2)).min() > 0.1     # real gratings, not the initial noise
    large = render_at(result, 192)
    assert large.shape == (2, 3, 192, 192)
    assert_close_match(small, large)


def test_pixel_images_are_interpolated_before_the_colour_mapping():
    torch.manual_seed(0)
    image = param.image(8, 6, fft=False, sd=1.0)
    pixels = image.spatial.pixels.detach()
    for mode in ("bicubic", "bilinear"):
        expected = image.to_rgb(F.interpolate(pixels, size=(18, 24), mode=mode,
                                              align_corners=False))
        got = render_at(image, 24, interpolation=None if mode == "bicubic" else mode)
        torch.testing.assert_close(got, expected, atol=0, rtol=0)
    smooth = param.image(32, fft=False)
    with torch.no_grad():   # a smooth planted picture: interpolation loses nothing visible
        smooth.spatial.pixels.copy_(2 * cosine(32, 32, 2, 3, 0.5).float().expand(1, 3, -1, -1))
        small = smooth()
    assert_close_match(small, render_at(smooth, 128), mad=0.005, corr=0.999)


def test_cppn_renders_at_the_new_size_and_matches():
    torch.manual_seed(0)
    image = param.cppn(24, batch=2)
    with torch.no_grad():
        image.output.weight.mul_(30.0)   # a textured picture rather than a faint one
        small = image()
        expected = image.render(96, 96)
    large = render_at(image, 96)
    assert torch.equal(large, expected)
    assert small.std() > 0.05
    assert_close_match(small, large, mad=0.005, corr=0.995)


def test_rgba_fourier_keeps_alpha_and_matches():
    torch.manual_seed(0)
    image = param.image_rgba(32, batch=2, sd=0.5)
    with torch.no_grad():
        small = image()
    large = render_at(image, 128)
    assert large.shape == (2, 4, 128, 128)
    assert small[:, 3].std() > 0.01
    assert_close_match(small[:, 3:], large[:, 3:])    # alpha on its own
    assert_close_match(small, large)


def test_maco_large_matches_small():
    torch.manual_seed(0)
    image = param.maco(32, 24, batch=2)
    with torch.no_grad():
        small = image()
    large = render_at(image, (96, 128))
    assert_close_match(small, large)
    assert image.importance.abs().sum() == 0     # re-rendering records no transparency


@pytest.mark.parametrize("call, error, name", [
    (lambda: render_at(nn.Linear(2, 2), 64), TypeError, "(?i)param"),
    (lambda: render_at(param.ImageParam(nn.Identity(), param.ToRGB()), 64), TypeError,
     "(?i)param"),
    (lambda: render_at(param.image(8, fft=False), 16, interpolation="nearest"), ValueError,
     "interpolation"),
    (lambda: render_at(param.image(8), 16, interpolation="bilinear"), ValueError,
     "interpolation"),
    (lambda: render_at(param.cppn(8), 16, interpolation="bilinear"), ValueError,
     "interpolation"),
    (lambda: render_at(param.image(8), (0, 16)), ValueError, "size"),
])
def test_render_at_rejects_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda image, out: save_high_res(image, out, 48), ValueError, "index"),
    (lambda image, out: save_high_res(image, out, 48, index=2), IndexError, "index"),
])
def test_save_high_res_needs_an_index_for_batches(tmp_path, call, error, name):
    with pytest.raises(error, match=name):
        call(param.image_rgba(16, batch=2, sd=1.0), tmp_path / "x.png")
    assert listing(tmp_path) == []


def test_save_high_res_writes_rgba_pngs(tmp_path):
    torch.manual_seed(0)
    image = param.image_rgba(16, batch=2, sd=1.0)
    path = save_high_res(image, tmp_path / "big.png", 48, index=1)
    with Image.open(path) as png:
        assert png.mode == "RGBA" and png.size == (48, 48)
        pixels = np.asarray(png)
    expected = np.round(render_at(image, 48)[1].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]


# --- side-car JSON ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def renders():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    torch.manual_seed(0)
    for p in net.parameters():
        nn.init.normal_(p, std=0.3)
    results = [render_vis(net, objectives.channel("0", unit),
                          param_f=lambda: param.image(16), thresholds=(2, 3), progress=False,
                          seed=unit) for unit in range(3)]
    return net, results


def listing(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_side_car_holds_one_record_per_panel(tmp_path, renders):
    net, results = renders
    grid = figure_grid([r.image for r in results], 1, 3, cell=48, padding=4,
                       col_labels=[f"unit {u}" for u in range(3)])
    panels = [panel_record(r, model=net, label=f"unit {u}", steps=3, lr=0.05, note=[1, 2])
              for u, r in enumerate(results)]
    path = save_figure(grid, tmp_path / "fig.png", panels=panels, caption="three units",
                       dpi=300)
    assert path == tmp_path / "fig.png"
    assert listing(tmp_path) == ["fig.json", "fig.png"]     # nothing else, no temp files
    record = json.loads((tmp_path / "fig.json").read_text())
    assert record["format"] == "lucent_core.figure" and record["format_version"] == 1
    assert record["image"] == "fig.png"
    assert record["png_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with Image.open(path) as png:
        assert [record["size"]["width"], record["size"]["height"]] == list(png.size)
        assert record["mode"] == png.mode == "RGB"
    assert record["size"] == dict(zip(("width", "height"), grid.size))
    layout = record["layout"]
    assert (layout["rows"], layout["cols"], layout["cell"], layout["padding"]) == (1, 3,
                                                                                  [48, 48], 4)
    assert layout["col_labels"] == ["unit 0", "unit 1", "unit 2"]
    assert record["metadata"] == {"caption": "three units", "dpi": 300}
    assert set(record["versions"]) >= {"lucent_core", "torch"}
    assert record["versions"]["torch"] == torch.__version__
    assert len(record["panels"]) == 3
    sha = state_dict_sha256(net)
    for u, (panel, result) in enumerate(zip(record["panels"], results)):
        assert list(panel) == list(PANEL_KEYS)
        assert (panel["row"], panel["col"], panel["label"]) == (0, u, f"unit {u}")
        assert panel["objective"] == result.objective == f"channel('0', {u})"
        assert panel["objective_value"] == pytest.approx(result.history[-1])
        assert panel["model"] == "Sequential" and panel["weights_sha256"] == sha
        assert panel["param"] == {"class": "ImageParam", "spatial": "FourierImage",
                                  "kind": "fourier", "size": [16, 16], "batch": 1,
                                  "channels": 3, "decay_power": 1.0, "decorrelate": True,
                                  "color_mode": "sigmoid"}
        assert panel["image_size"] == [16, 16]
        assert (panel["steps"], panel["thresholds"], panel["seed"]) == (3, [2, 3], u)
        # seed, transforms and the other settings come from the render itself
        assert panel["transforms"] == describe_transforms(None) == repr(standard_affine())
        assert panel["transforms"].startswith("RandomAffine(pad=12, jitter=(8, 4), scales=[0.9,")
        assert panel["render"] == {"optimizer": "Adam(lr=0.05)", "preprocess": repr(
            Preprocessing()), "redirected_relu": False, "autocast": None,  # a plain nn.ReLU
            "channels_last": True, "compile": False}
        assert panel["interrupted"] is False
        assert panel["extra"] == {"lr": 0.05, "note": [1, 2]}
        assert panel["versions"]["lucent_core"] == record["versions"]["lucent_core"]


def test_side_car_is_json_safe_and_positions_can_be_given(tmp_path, renders):
    _, results = renders
    unrecorded = dataclasses.replace(results[0], settings={})  # e.g. a result built by hand
    record = panel_record(unrecorded, model="inceptionv1", row=1, col=0, index=0,
                          score=float("nan"), big=np.float32(np.inf), count=np.int64(3),
                          transforms=[nn.Identity()], seed=7)
    assert record["model"] == "inceptionv1" and record["weights_sha256"] is None
    assert record["extra"] == {"score": None, "big": None, "count": 3}
    assert record["transforms"] == "Compose([Identity()])" and record["batch_index"] == 0
    assert record["seed"] == 7 and record["render"] is None
    odd = {"label": "by hand", "row": 0, "col": 1, "objective_value": float("nan")}
    path = save_figure(np.zeros((10, 20, 3)), tmp_path / "f.png", panels=[record, odd], rows=2,
                       cols=2, ratio=float("inf"))
    text = path.with_suffix(".json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    saved = json.loads(text)
    assert saved["layout"] == {"rows": 2, "cols": 2, "cell": None, "padding": None}
    assert saved["metadata"] == {"ratio": None}
    by_hand = saved["panels"][1]
    assert list(by_hand) == list(PANEL_KEYS)
    assert (by_hand["row"], by_hand["col"], by_hand["label"]) == (0, 1, "by hand")
    assert by_hand["objective_value"] is None and by_hand["model"] is None
    assert (saved["panels"][0]["row"], saved["panels"][0]["col"]) == (1, 0)


def test_panel_settings_come_from_the_render_and_disagreement_is_an_error(renders):
    net, results = renders
    assert panel_record(results[2], seed=2)["seed"] == 2          # agreeing is fine
    plain = render_vis(net, "0:1", param_f=lambda: param.image(16), transforms=[Pad(4),
                       Jitter(2)], optimizer=lambda p: torch.optim.SGD(p, lr=0.5),
                       thresholds=(1,), progress=False)
    record = panel_record(plain, transforms=[Pad(4), Jitter(2)])  # the same transforms agree
    assert record["transforms"] == "Compose([Pad(4, mode='constant', value=0.5), Jitter(2)])"
    assert record["seed"] is None and record["render"]["optimizer"] == "SGD(lr=0.5)"
    # a render seeded globally (torch.manual_seed) recorded no seed: the caller may give it
    assert panel_record(plain, seed=3)["seed"] == 3


def test_rgba_figures_are_saved_untouched(tmp_path):
    rgba = planted(9, 11, 0, channels=4)
    rgba[0, 0, 3], rgba[-1, -1, 3] = 0, 1          # fully and almost fully transparent
    path = save_figure(rgba, tmp_path / "alpha.png", note="rgba")
    with Image.open(path) as png:
        assert png.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(png), rgba)
    grid = figure_grid([rgba, rgba], 1, 2, background=None)
    save_figure(grid, tmp_path / "grid.png")
    with Image.open(tmp_path / "grid.png") as png:
        np.testing.assert_array_equal(np.asarray(png), np.asarray(grid))
    assert json.loads((tmp_path / "grid.json").read_text())["mode"] == "RGBA"


def test_save_figure_overwrites_both_files(tmp_path):
    save_figure(planted(4, 4, 0), tmp_path / "f.png", version=1)
    save_figure(planted(6, 6, 1), tmp_path / "f.png", version=2)
    assert listing(tmp_path) == ["f.json", "f.png"]
    assert json.loads((tmp_path / "f.json").read_text())["metadata"] == {"version": 2}
    with Image.open(tmp_path / "f.png") as png:
        np.testing.assert_array_equal(np.asarray(png), planted(6, 6, 1))


ONE_BY_THREE = figure_grid([np.zeros((16, 16, 3))] * 3, 1, 3)
SMALL = np.zeros((8, 8, 3))


@pytest.mark.parametrize("call, error, name", [
    (lambda out: save_figure(ONE_BY_THREE, out / "a.png", model=nn.Linear(1, 1)), TypeError,
     r"metadata\['model'\]"),
    (lambda out: save_figure(ONE_BY_THREE, out / "a.png", note={1: 2}), TypeError,
     r"metadata\['note'\]"),
    (lambda out: save_figure(ONE_BY_THREE, out / "a.jpg"), ValueError, "path"),
    (lambda out: save_figure(np.zeros((2, 8, 8, 3)), out / "a.png"), ValueError, "image"),
    (lambda out: save_figure(ONE_BY_THREE, out / "a.png", panels=[{"row": 1, "col": 0}]),
     ValueError, "panels"),
    (lambda out: save_figure(ONE_BY_THREE, out / "a.png", panels=[{"row": 0, "col": 1}, {}]),
     ValueError, "panels"),
    (lambda out: save_figure(ONE_BY_THREE, out / "a.png", cols=2), ValueError, "cols"),
    (lambda out: save_figure(ONE_BY_THREE, out / "a.png", padding=-1), ValueError, "padding"),
    (lambda out: save_figure(ONE_BY_THREE, out / "a.png", cell=(0, 4)), ValueError, "cell"),
    (lambda out: save_figure(np.zeros((4, 4, 3)), out / "a.png", panels=[{}, {}]), ValueError,
     "panels"),
    (lambda out: save_figure(ONE_BY_THREE, out / "a.png", panels=[{"row": 0}]), ValueError,
     "panels"),
    (lambda out: save_figure(SMALL, out / "f.png", panels={"label": "a"}), TypeError, "panels"),
    (lambda out: save_figure(SMALL, out / "f.png", panels=["a"]), TypeError, "panels"),
    (lambda out: save_figure(SMALL, out / "f.png", panels=[{"lable": "a"}]), ValueError,
     r"panels\[0\]"),
    (lambda out: save_figure(SMALL, out / "f.png", panels=[{"colour": "red"}]), ValueError,
     r"panels\[0\]"),
    (lambda out: save_figure(SMALL, out / "f.png", panels=[{"row": "a", "col": 0}]), TypeError,
     r"panels\[0\] row"),
    (lambda out: save_figure(SMALL, out / "f.png", panels=[{"row": 0, "col": -1}]), ValueError,
     r"panels\[0\] col"),
    (lambda out: save_figure(SMALL, out / "f.png", rows=2, cols=2, cell=8, padding=1),
     ValueError, "cell"),
])
def test_save_figure_rejects_bad_input_and_writes_nothing(tmp_path, call, error, name):
    with pytest.raises(error, match=name):
        call(tmp_path)
    assert listing(tmp_path) == []


def test_a_misspelt_panel_key_gets_a_suggestion(tmp_path):
    with pytest.raises(ValueError, match=r"did you mean label\?"):
        save_figure(SMALL, tmp_path / "f.png", panels=[{"lable": "a"}])


def test_failed_png_write_leaves_no_files(tmp_path, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as handle:
            handle.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_figure(planted(4, 4, 0), tmp_path / "f.png")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("call, error, name", [
    (lambda results: panel_record(results[0], steps=5), ValueError, "steps"),
    (lambda results: panel_record(results[0], steps=0), ValueError, "steps"),
    (lambda results: panel_record(results[0].image), TypeError, "result"),
    (lambda results: panel_record(results[0], model=3), TypeError, "model"),
    (lambda results: panel_record(results[0], index=1), IndexError, "index"),
    (lambda results: panel_record(results[0], index=0.5), TypeError, "index"),
    (lambda results: panel_record(results[0], weights=torch.zeros(3)), TypeError,
     r"\['weights'\]"),
    (lambda results: panel_record(results[0], row="a"), TypeError, "row"),
    (lambda results: panel_record(results[0], col=-1), ValueError, "col"),
    (lambda results: panel_record(results[2], seed=5), ValueError, "seed"),
    (lambda results: panel_record(results[2], transforms=[Pad(4)]), ValueError, "transforms"),
])
def test_panel_record_rejects_bad_input(renders, call, error, name):
    with pytest.raises(error, match=name):
        call(renders[1])


def test_save_figure_takes_a_layout_that_fits_the_picture(tmp_path):
    assert save_figure(np.zeros((19, 19, 3)), tmp_path / "f.png", rows=2, cols=2, cell=8,
                       padding=1).exists()


@pytest.mark.parametrize("call, error, name", [
    (lambda: fourier_resample(torch.zeros(4, 4, dtype=torch.int64), 8), TypeError, r"\bx\b"),
    (lambda: fourier_resample(torch.zeros(4, 4, dtype=torch.complex64), 8), TypeError,
     r"\bx\b"),
])
def test_fourier_resample_needs_real_floats(call, error, name):
    with pytest.raises(error, match=name):
        call()
