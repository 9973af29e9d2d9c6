"""Tests for lucent_core.io: PNG round trips, atomic writes, grids, labels, notebook display."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from lucent_core import io

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def planted(height: int = 5, width: int = 7) -> np.ndarray:
    """A non-square (H, W, 3) uint8 image: red at row 0 / col 0, blue at the bottom-right,
    every other pixel a distinct grey-ish value so any transposition or flip shows up."""
    rng = np.random.default_rng(0)
    image = rng.integers(30, 220, size=(height, width, 3), dtype=np.uint8)
    image[0, 0] = RED
    image[-1, -1] = BLUE
    return image


def read_png(path) -> tuple[np.ndarray, str]:
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        return np.asarray(picture).copy(), picture.mode


def check_planted(pixels: np.ndarray, expected: np.ndarray) -> None:
    assert pixels.shape == expected.shape  # (H, W, 3): not transposed
    assert tuple(pixels[0, 0]) == RED      # top-left, RGB order (BGR would give blue here)
    assert tuple(pixels[-1, -1]) == BLUE
    np.testing.assert_array_equal(pixels, expected)


# --- save_png round trips ----------------------------------------------------------------

def test_save_png_float_hwc_round_trip_exact(tmp_path):
    expected = planted()
    path = io.save_png(expected.astype(np.float64) / 255.0, tmp_path / "a.png")
    assert path == tmp_path / "a.png"
    pixels, mode = read_png(path)
    assert mode == "RGB"
    check_planted(pixels, expected)


def test_save_png_uint8_array_round_trip_exact(tmp_path):
    expected = planted(6, 9)
    pixels, _ = read_png(io.save_png(expected, tmp_path / "u8.png"))
    check_planted(pixels, expected)


def test_save_png_batch_of_one_array(tmp_path):
    expected = planted()
    pixels, _ = read_png(io.save_png(expected[None].astype(np.float32) / 255, tmp_path / "b.png"))
    check_planted(pixels, expected)


@pytest.mark.parametrize("batched", [False, True])
def test_save_png_chw_tensor_round_trip_exact(tmp_path, batched):
    expected = planted()
    tensor = torch.from_numpy(expected).permute(2, 0, 1).float() / 255.0  # (3, H, W)
    if batched:
        tensor = tensor[None]
    pixels, _ = read_png(io.save_png(tensor, tmp_path / "t.png"))
    check_planted(pixels, expected)


def test_save_png_tensor_requiring_grad(tmp_path):
    tensor = torch.full((1, 3, 4, 4), 0.2, requires_grad=True)
    pixels, _ = read_png(io.save_png(tensor, tmp_path / "g.png"))
    assert (pixels == round(0.2 * 255)).all()


def test_save_png_rgba_kept(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., :3] = planted(4, 6)
    rgba[..., 3] = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    pixels, mode = read_png(io.save_png(rgba, tmp_path / "rgba.png"))
    assert mode == "RGBA"
    np.testing.assert_array_equal(pixels, rgba)


OVERSHOOT = np.array([[[-1e-4, 0.0, 1.0], [1.0 + 1e-4, 1.0 / 255, 0.5 + 1e-3]]])


def test_save_png_clips_rounding_overshoot(tmp_path):
    pixels, _ = read_png(io.save_png(OVERSHOOT, tmp_path / "clip.png"))
    np.testing.assert_array_equal(pixels, [[[0, 0, 255], [255, 1, 128]]])


BAD_SHAPES = [
    np.zeros((4, 4, 5)),            # 5 channels
    np.zeros((1, 2, 4, 4, 3)),      # 5 dims
    np.zeros(7),                    # 1 dim
    torch.zeros(2, 5, 4, 4),        # 5 channels
    torch.zeros(4, 4),              # 2-d tensor
]


@pytest.mark.parametrize("call, error, name", [
    *(((lambda out, bad=bad: io.save_png(bad, out / "bad.png")), ValueError, "images")
      for bad in BAD_SHAPES),
    (lambda out: io.save_png(OVERSHOOT * 255, out / "bad.png"), ValueError, "images"),
    (lambda out: io.save_png(OVERSHOOT - 0.5, out / "bad.png"), ValueError, "images"),
    (lambda out: io.save_png(np.full((2, 2, 3), np.nan), out / "bad.png"), ValueError, "images"),
    (lambda out: io.save_png((OVERSHOOT * 255).astype(np.int64), out / "bad.png"), TypeError,
     "images"),
    (lambda out: io.save_png(np.zeros((4, 4, 3)), out / "bad.jpg"), ValueError, "path"),
    (lambda out: io.save_png(np.zeros((4, 4, 3)), out / "bad.webp"), ValueError, "path"),
])
def test_save_png_rejects_bad_arguments_and_writes_nothing(tmp_path, call, error, name):
    with pytest.raises(error, match=name):
        call(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_values_outside_0_1_get_a_hint():
    with pytest.raises(ValueError, match=r"images must be in \[0, 1\] or uint8, got"):
        io.to_numpy(OVERSHOOT * 255)


def test_save_png_grayscale_channel_is_repeated(tmp_path):
    gray = np.linspace(0, 1, 12).reshape(3, 4, 1)
    pixels, mode = read_png(io.save_png(gray, tmp_path / "gray.png"))
    assert mode == "RGB"
    expected = np.round(gray[..., 0] * 255).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], expected)


def test_save_png_batch_writes_grid(tmp_path):
    batch = np.zeros((3, 5, 7, 3))
    batch[1, 0, 0] = (1, 0, 0)
    pixels, _ = read_png(io.save_png(batch, tmp_path / "grid.png"))
    # default grid: 2 columns, 2 rows, 4 px padding
    assert pixels.shape == (2 * 5 + 3 * 4, 2 * 7 + 3 * 4, 3)
    assert tuple(pixels[4, 4 + 7 + 4]) == RED   # image 1 is row 0, column 1


def test_save_png_creates_parent_directories(tmp_path):
    path = io.save_png(planted(), tmp_path / "deep" / "er" / "x.png")
    assert path.is_file()


# --- atomic write ------------------------------------------------------------------------

def test_save_png_leaves_no_partial_file(tmp_path):
    io.save_png(planted(), tmp_path / "out.png")
    io.save_png(planted(3, 3), tmp_path / "out.png")  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    assert read_png(tmp_path / "out.png")[0].shape == (3, 3, 3)


def test_save_png_destination_appears_only_when_complete(tmp_path, monkeypatch):
    dest = tmp_path / "out.png"
    seen = {}
    real_replace = io.os.replace

    def spy_replace(src, dst):
        # At the moment of the rename the destination does not exist yet and the source
        # is already a complete, readable PNG.
        seen["dest_existed"] = dest.exists()
        seen["src_pixels"] = read_png(src)[0]
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", spy_replace)
    io.save_png(planted(), dest)
    assert seen["dest_existed"] is False
    check_planted(seen["src_pixels"], planted())
    check_planted(read_png(dest)[0], planted())


def failing_save(self, fp, *args, **kwargs):
    with open(fp, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n truncated")
    raise OSError("disk full")


def test_save_png_failure_does_not_touch_destination(tmp_path, monkeypatch):
    dest = tmp_path / "out.png"
    io.save_png(planted(), dest)
    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_png(np.zeros((3, 3, 3)), dest)
    check_planted(read_png(dest)[0], planted())  # the old, complete file is still there


def test_save_png_failure_on_new_path_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError):
        io.save_png(np.zeros((3, 3, 3)), tmp_path / "new.png")
    assert not (tmp_path / "new.png").exists()


def test_save_png_failure_cleans_up_partial(tmp_path, monkeypatch):
    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError):
        io.save_png(np.zeros((3, 3, 3)), tmp_path / "new.png")
    assert list(tmp_path.iterdir()) == []


# --- to_numpy / to_pil -------------------------------------------------------------------

def test_to_pil_single_image_size_and_mode():
    picture = io.to_pil(torch.zeros(3, 5, 7))
    assert picture.size == (7, 5) and picture.mode == "RGB"
    assert io.to_pil(np.zeros((5, 7, 4))).mode == "RGBA"


@pytest.mark.parametrize("call, error, name", [
    (lambda: io.to_pil(np.zeros((2, 4, 4, 3))), ValueError, "image"),
    (lambda: io.to_pil(torch.zeros(2, 3, 4, 4)), ValueError, "image"),
])
def test_to_pil_rejects_a_batch(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_to_numpy_pil_round_trip():
    expected = planted()
    array = io.to_numpy(Image.fromarray(expected))
    assert array.dtype == np.float32 and array.shape == (1, 5, 7, 3)
    np.testing.assert_array_equal(np.round(array[0] * 255).astype(np.uint8), expected)


def test_to_numpy_uint8_tensor_scaled_like_uint8_array():
    tensor = torch.full((3, 2, 2), 128, dtype=torch.uint8)
    np.testing.assert_allclose(io.to_numpy(tensor), 128 / 255, rtol=1e-6)


@pytest.mark.parametrize("call, error, name", [
    *(((lambda bad=bad: io.to_numpy(bad)), ValueError, "images") for bad in BAD_SHAPES),
    (lambda: io.to_numpy("photo.png"), TypeError, "images"),
    (lambda: io.to_numpy(None), TypeError, "images"),
    (lambda: io.to_numpy(np.zeros((3, 8, 8))), ValueError, "images"),
    (lambda: io.to_numpy(np.zeros((2, 3, 8, 8))), ValueError, "images"),
    (lambda: io.to_numpy([np.zeros((4, 5, 3)), np.zeros((5, 5, 3))]), ValueError, "images"),
])
def test_to_numpy_rejects_bad_images(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("bad", [np.zeros((3, 8, 8)), np.zeros((2, 3, 8, 8))])
def test_channels_first_arrays_get_a_hint(bad):
    with pytest.raises(ValueError, match=r"images \(.*3, 8, 8\) look channels-first"):
        io.to_numpy(bad)


# --- image_grid --------------------------------------------------------------------------

def grid_size(count, ncols, height, width, padding, text_h):
    nrows = -(-count // ncols)
    return (ncols * width + (ncols + 1) * padding,
            nrows * (height + text_h) + (nrows + 1) * padding)


@pytest.mark.parametrize("count, ncols, height, width, padding, labelled, label_height", [
    (5, 3, 8, 8, 1, False, None),
    (5, None, 8, 8, 4, False, None),      # default ncols = ceil(sqrt(5)) = 3
    (4, None, 6, 10, 2, False, None),     # 2 x 2, non-square cells
    (1, None, 9, 5, 0, False, None),
    (7, 7, 3, 4, 3, False, None),         # one row
    (7, 1, 3, 4, 3, False, None),         # one column
    (5, 2, 8, 12, 2, True, None),         # default label strip: 14 px
    (5, 2, 8, 12, 2, True, 20),
    (3, 3, 10, 6, 0, True, 9),
])
def test_image_grid_exact_size(count, ncols, height, width, padding, labelled, label_height):
    labels = [f"#{i}" for i in range(count)] if labelled else None
    grid = io.image_grid(np.zeros((count, height, width, 3)), ncols=ncols, labels=labels,
                         padding=padding, label_height=label_height)
    cols = ncols or int(np.ceil(np.sqrt(count)))
    text_h = 0 if not labelled else (14 if label_height is None else label_height)
    assert grid.size == grid_size(count, cols, height, width, padding, text_h)


def test_image_grid_label_height_has_no_effect_without_labels():
    # as documented: the strip is 0 without labels, so one call fits labelled and plain grids
    grid = io.image_grid(np.zeros((2, 5, 5, 3)), ncols=2, padding=1, label_height=30)
    assert grid.size == (13, 7)


def coloured_batch(count, height, width):
    """Image i is filled with a distinct colour (10 * i + 5, 200 - 10 * i, 7 * i)."""
    colours = np.array([(10 * i + 5, 200 - 10 * i, 7 * i) for i in range(count)], dtype=np.uint8)
    return np.broadcast_to(colours[:, None, None, :], (count, height, width, 3)).copy(), colours


@pytest.mark.parametrize("labels", [None, ["a", "b", "c", "d", "e"]])
def test_image_grid_cell_placement(labels):
    count, height, width, padding, ncols = 5, 6, 9, 3, 2
    batch, colours = coloured_batch(count, height, width)
    batch[3, 0, 0] = RED                   # mark the top-left pixel of image 3
    grid = io.image_grid(batch, ncols=ncols, labels=labels, padding=padding, label_height=11)
    pixels = np.asarray(grid)
    text_h = 0 if labels is None else 11
    covered = np.zeros(pixels.shape[:2], bool)
    for i in range(count):
        row, col = divmod(i, ncols)
        top = padding + row * (height + text_h + padding)
        left = padding + col * (width + padding)
        cell = pixels[top:top + height, left:left + width]
        expected = batch[i]
        np.testing.assert_array_equal(cell, expected)
        covered[top:top + height + text_h, left:left + width] = True
    # image 3 is row 1, col 1: its marked pixel lands at the computed offset
    assert tuple(pixels[padding + height + text_h + padding,
                        padding + width + padding]) == RED
    # everything outside cells and label strips (padding, the empty 6th slot) is background
    assert (pixels[~covered] == 255).all()


def label_strips(pixels, count, ncols, height, width, padding, text_h):
    for i in range(count):
        row, col = divmod(i, ncols)
        top = padding + row * (height + text_h + padding) + height
        left = padding + col * (width + padding)
        yield pixels[top:top + text_h, left:left + width]


def test_image_grid_labels_are_drawn_under_their_cell():
    count, height, width, padding = 4, 8, 30, 2
    labels = ["Hello", "", "W", ""]
    grid = io.image_grid(np.ones((count, height, width, 3)), ncols=2, labels=labels,
                         padding=padding)
    pixels = np.asarray(grid)
    strips = list(label_strips(pixels, count, 2, height, width, padding, 14))
    inked = [bool((strip != 255).any()) for strip in strips]
    assert inked == [True, False, True, False]
    # outside the strips (and the all-white cells) nothing is drawn
    assert (pixels == 255).sum() == pixels.size - sum(int((s != 255).sum()) for s in strips)


def test_image_grid_without_labels_draws_nothing_but_images():
    grid = io.image_grid(np.ones((4, 8, 30, 3)), ncols=2, padding=2)
    assert (np.asarray(grid) == 255).all()


def test_image_grid_accepts_lists_and_tensors():
    images = [torch.rand(3, 4, 6) for _ in range(3)]
    from_list = np.asarray(io.image_grid(images, ncols=3, padding=1))
    from_batch = np.asarray(io.image_grid(torch.stack(images), ncols=3, padding=1))
    from_hwc = np.asarray(io.image_grid(torch.stack(images).permute(0, 2, 3, 1).numpy(),
                                        ncols=3, padding=1))
    assert from_list.shape == (6, 22, 3)
    np.testing.assert_array_equal(from_list, from_batch)
    np.testing.assert_array_equal(from_list, from_hwc)


def test_image_grid_rgba():
    grid = io.image_grid(np.full((2, 4, 4, 4), 0.5), ncols=2, padding=1)
    assert grid.mode == "RGBA"
    pixels = np.asarray(grid)
    assert tuple(pixels[0, 0]) == (255, 255, 255, 255)   # background gets opaque alpha
    assert tuple(pixels[1, 1]) == (128, 128, 128, 128)


def test_image_grid_background_colour():
    pixels = np.asarray(io.image_grid(np.zeros((1, 2, 2, 3)), padding=1, background=(1, 2, 3)))
    assert tuple(pixels[0, 0]) == (1, 2, 3)
    assert tuple(pixels[1, 1]) == (0, 0, 0)


THREE = np.zeros((3, 4, 4, 3))


@pytest.mark.parametrize("call, error, name", [
    (lambda: io.image_grid([np.zeros((8, 8, 3)), np.zeros((8, 9, 3))]), ValueError, "images"),
    (lambda: io.image_grid(np.zeros((3, 4, 4, 2))), ValueError, "images"),
    (lambda: io.image_grid([]), ValueError, "images"),
    (lambda: io.image_grid(np.zeros((0, 4, 4, 3))), ValueError, "images"),
    (lambda: io.image_grid(THREE, labels=["a", "b"]), ValueError, "labels"),
    (lambda: io.image_grid(THREE, labels="abc"), TypeError, "labels"),
    (lambda: io.image_grid(THREE, ncols=-1), ValueError, "ncols"),
    (lambda: io.image_grid(THREE, ncols=0), ValueError, "ncols"),
    (lambda: io.image_grid(THREE, ncols=2.5), TypeError, "ncols"),
    (lambda: io.image_grid(THREE, padding=-3), ValueError, "padding"),
    (lambda: io.image_grid(THREE, labels=["a", "b", "c"], label_height=-1), ValueError,
     "label_height"),
    (lambda: io.image_grid(THREE, background="red"), ValueError, "background"),
    (lambda: io.image_grid(THREE, background=(300, 0, 0)), ValueError, "background"),
    (lambda: io.image_grid(THREE, background=(1, 2)), ValueError, "background"),
    (lambda: io.image_grid(THREE, background=(1, 2, 3, 4)), ValueError, "background"),
])
def test_image_grid_rejects_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_save_png_takes_png_names_and_names_without_a_suffix(tmp_path):
    assert io.save_png(np.zeros((4, 4, 3)), tmp_path / "X.PNG").exists()
    assert io.save_png(np.zeros((4, 4, 3)), tmp_path / "no_suffix").exists()
    assert io.save_png(np.zeros((4, 4, 3)), tmp_path / "layer1.0.conv1").exists()


def test_a_list_of_images_is_a_batch_and_colours_may_be_arrays(tmp_path):
    a = np.zeros((4, 5, 3))
    assert io.to_numpy([a, torch.ones(3, 4, 5)]).shape == (2, 4, 5, 3)
    grid = io.image_grid([a, a], background=np.array([255, 0, 0]), padding=1)
    assert grid.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("call, error, name", [
    (lambda: io.centre_crop_box(0, 10, 5), ValueError, "height"),
    (lambda: io.centre_crop_box(10, 10.5, 5), TypeError, "width"),
    (lambda: io.centre_crop_box(10, 10, -5), ValueError, "side"),
])
def test_centre_crop_box_rejects_bad_sizes(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- show --------------------------------------------------------------------------------

def test_show_without_ipython_mentions_notebooks_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython", None)
    monkeypatch.setitem(sys.modules, "IPython.display", None)
    with pytest.raises(ImportError, match=r"notebooks"):
        io.show(np.zeros((4, 4, 3)))


@pytest.fixture
def fake_ipython(monkeypatch):
    shown = []
    package = types.ModuleType("IPython")
    display_module = types.ModuleType("IPython.display")
    display_module.display = shown.append
    package.display = display_module
    monkeypatch.setitem(sys.modules, "IPython", package)
    monkeypatch.setitem(sys.modules, "IPython.display", display_module)
    return shown


def test_show_displays_single_image(fake_ipython):
    assert io.show(planted()) is None
    assert len(fake_ipython) == 1
    picture = fake_ipython[0]
    assert isinstance(picture, Image.Image) and picture.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(picture), planted())


def test_show_displays_labelled_grid(fake_ipython):
    io.show(torch.zeros(3, 3, 4, 5), labels=["a", "b", "c"])
    assert len(fake_ipython) == 1
    assert fake_ipython[0].size == grid_size(3, 2, 4, 5, 4, 14)


def test_open_photo_reads_16_bit_grey_pngs_without_clipping(tmp_path):
    from lucent_core.io import open_photo
    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(open_photo(path))
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], (ramp >> 8).astype(np.uint8))
    assert rgb.min() == 0 and rgb.max() == 255 and (rgb == 255).mean() < 0.01
