"""Tests for lucent_core.param.alpha: RGBA images, compositing with known answers, random
backgrounds (fresh every call, replayable), the alpha objectives, fitting an RGBA target, a
planted unit rendered with the transparency recipe, and RGBA PNG export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lucent_core import objectives, render_vis, save_png
from lucent_core.param import alpha
from lucent_core.param.alpha import (BACKGROUNDS, CompositeBackground, alpha_penalty,
                                     alpha_transforms, composite, image_rgba, mean_alpha,
                                     random_background)
from lucent_core.transforms import Compose, Pad, standard_transforms
from test_planted import fixed_conv


# --- the RGBA parameterisation ---------------------------------------------------------------

@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("height, width", [(32, 32), (37, 64), (1, 5)])
@pytest.mark.parametrize("batch", [1, 3])
def test_rgba_shapes_and_starting_values(fft, height, width, batch):
    torch.manual_seed(0)
    image = image_rgba(width, height, batch=batch, fft=fft)
    out = image()
    assert out.shape == (batch, 4, height, width)
    assert (out[:, :3] - 0.5).abs().max() < 0.05      # mid-grey colour ...
    assert (out[:, 3] - 0.5).abs().max() < 0.05       # ... half transparent
    assert out[:, 3].std() > 0 or height * width == 1 or not fft   # but random


@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("mode", ["sigmoid", "clamp"])
def test_rgba_values_stay_in_unit_range_when_saturated(fft, mode):
    torch.manual_seed(0)
    out = image_rgba(24, 20, batch=2, sd=5.0, fft=fft, mode=mode)()
    assert out.min() >= 0 and out.max() <= 1
    assert out[:, 3].min() < 0.05 and out[:, 3].max() > 0.95


@pytest.mark.parametrize("fft, key", [(True, "spectrum"), (False, "pixels")])
def test_alpha_has_one_channel_and_its_own_parameters(fft, key):
    image = image_rgba(8, 6, batch=2, fft=fft)
    shapes = {name: tuple(p.shape) for name, p in image.named_parameters()}
    assert set(shapes) == {f"spatial.{key}", f"alpha.{key}"}
    assert shapes[f"spatial.{key}"][1] == 3 and shapes[f"alpha.{key}"][1] == 1
    assert list(image.state_dict()) == [f"spatial.{key}", f"alpha.{key}"]
    assert image.alpha().shape == (2, 1, 6, 8)


def test_rgba_to_float64():
    image = image_rgba(10, 8, batch=2).to(torch.float64)
    assert all(t.dtype == torch.float64 for t in image.state_dict().values())
    assert image().dtype == torch.float64


@pytest.mark.parametrize("call, error, name", [
    (lambda: image_rgba(8, fft=False, decay_power=2.0), ValueError, "decay_power"),
    (lambda: image_rgba(8, mode="tanh"), ValueError, "mode"),
    (lambda: image_rgba(0), ValueError, "height"),
    (lambda: image_rgba(8, fft="no"), TypeError, "fft"),
])
def test_image_rgba_rejects_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_rgba_fits_a_target():
    # Measured: 300 Adam steps at lr 0.1 reach a mean abs error of ~0.002 over all 4 channels.
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 24), torch.linspace(0, 1, 32), indexing="ij")
    rgb = 0.2 + 0.6 * torch.rand(2, 3, 1, 1, generator=g) * torch.stack([xx, yy, xx * yy])
    alpha = (0.1 + 0.8 * torch.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.1)).expand(2, 1, -1, -1)
    target = torch.cat([rgb, alpha], 1)
    torch.manual_seed(0)
    image = image_rgba(32, 24, batch=2)
    start = (image() - target).abs().mean().item()
    optimiser = torch.optim.Adam(image.parameters(), lr=0.1)
    for _ in range(300):
        optimiser.zero_grad()
        ((image() - target) ** 2).mean().backward()
        optimiser.step()
    error = (image() - target).abs().mean(dim=(0, 2, 3))
    assert start > 0.1
    assert error.max() < 0.01, error     # every channel, alpha included


# --- compositing ---------------------------------------------------------------------------

def test_composite_known_answers():
    foreground = torch.tensor([0.9, 0.2, 0.4])
    background = torch.tensor([0.1, 0.6, 1.0])
    for a, expected in [(0.0, background), (1.0, foreground),
                        (0.5, (foreground + background) / 2),
                        (0.25, 0.25 * foreground + 0.75 * background)]:
        rgba = torch.cat([foreground, torch.tensor([a])]).view(1, 4, 1, 1)
        out = composite(rgba, background.view(1, 3, 1, 1))
        assert out.shape == (1, 3, 1, 1)
        torch.testing.assert_close(out.flatten(), expected)
        torch.testing.assert_close(composite(rgba, background), out)        # a colour (3,)
    rgba = torch.tensor([1.0, 1.0, 1.0, 0.5]).view(1, 4, 1, 1)
    assert composite(rgba, 0.0).flatten().tolist() == [0.5, 0.5, 0.5]       # a grey level


def test_composite_per_pixel_and_batch():
    torch.manual_seed(0)
    rgba = torch.rand(2, 4, 5, 6)
    background = torch.rand(2, 3, 5, 6)
    expected = rgba[:, :3] * rgba[:, 3:] + background * (1 - rgba[:, 3:])
    torch.testing.assert_close(composite(rgba, background), expected)
    # one background image for the whole batch broadcasts
    torch.testing.assert_close(composite(rgba, background[:1])[1],
                               rgba[1, :3] * rgba[1, 3] + background[0] * (1 - rgba[1, 3]))


@pytest.mark.parametrize("call, error, name", [
    (lambda: composite(torch.rand(1, 3, 4, 4), 0.5), ValueError, "rgba"),
    (lambda: composite(torch.rand(1, 4, 4, 4), (0.1, 0.2)), ValueError, "background"),
    (lambda: composite(torch.rand(1, 4, 4, 4), torch.rand(1, 4, 4, 4)), ValueError,
     "background"),
    (lambda: composite(torch.rand(1, 4, 4, 4), torch.rand(4, 4)), ValueError, "background"),
    (lambda: composite(torch.rand(1, 4, 2, 2), 2.0), ValueError, "background"),
    (lambda: composite(torch.rand(1, 4, 2, 2), torch.zeros(1, 3, 5, 5)), ValueError,
     "background"),
    (lambda: composite(torch.rand(2, 4, 2, 2), torch.zeros(3, 3, 2, 2)), ValueError,
     "background"),
])
def test_composite_rejects_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- random backgrounds --------------------------------------------------------------------

@pytest.mark.parametrize("kind", BACKGROUNDS)
def test_backgrounds_are_random_each_call_and_replayable(kind):
    first = random_background(3, 20, 16, kind)
    assert first.shape == (3, 3, 16, 20)
    assert first.min() >= 0 and first.max() <= 1
    assert not torch.equal(first, random_background(3, 20, 16, kind))         # fresh draws
    assert not torch.allclose(first[0], first[1])                             # per image
    one = random_background(3, 20, 16, kind, generator=torch.Generator().manual_seed(7))
    two = random_background(3, 20, 16, kind, generator=torch.Generator().manual_seed(7))
    assert torch.equal(one, two)
    assert random_background(1, 4, 4, kind, dtype=torch.float64).dtype == torch.float64


def test_background_kinds_have_their_statistics():
    g = torch.Generator().manual_seed(0)
    colour = random_background(4, 8, 8, "color", generator=g)
    assert torch.all(colour == colour[:, :, :1, :1])          # one colour per image
    noise = random_background(4, 64, 64, "noise", generator=g)
    fourier = random_background(4, 64, 64, "fourier", generator=g)

    def roughness(x):  # mean difference of horizontal neighbours, relative to the spread
        return ((x[..., 1:] - x[..., :-1]).abs().mean() / x.std()).item()

    # measured: white noise ~1.1, the recipe's 1/f^1.5 noise ~0.1 (smooth blotches)
    assert roughness(noise) > 0.8 and roughness(fourier) < 0.3
    assert fourier.std() > 0.05   # visible colour variation, not flat grey
    assert noise.mean().item() == pytest.approx(0.5, abs=0.02)


def test_composite_background_transform():
    t = CompositeBackground()
    rgba = torch.rand(2, 4, 12, 16)
    out = t(rgba)
    assert out.shape == (2, 3, 12, 16)
    assert not torch.equal(out, t(rgba))                      # a new background every call
    draw = t.sample(rgba, generator=torch.Generator().manual_seed(1))
    again = t.sample(rgba, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(t.apply_transform(rgba, draw), t.apply_transform(rgba, again))
    torch.testing.assert_close(t.apply_transform(rgba, draw), composite(rgba, draw["background"]))
    # opaque pixels show the image whatever the background; transparent ones the background
    opaque = torch.cat([rgba[:, :3], torch.ones(2, 1, 12, 16)], 1)
    torch.testing.assert_close(t(opaque), rgba[:, :3])
    clear = torch.cat([rgba[:, :3], torch.zeros(2, 1, 12, 16)], 1)
    torch.testing.assert_close(t.apply_transform(clear, draw), draw["background"])
    assert t(rgba.double()).dtype == torch.float64


def test_composite_background_in_a_compose_replays_exactly():
    t = alpha_transforms()
    assert isinstance(t, Compose) and isinstance(t.steps[0], CompositeBackground)
    assert len(t.steps) == 1 + len(standard_transforms().steps)
    rgba = torch.rand(1, 4, 64, 64)
    out, draws = t.forward_with_params(rgba, generator=torch.Generator().manual_seed(0))
    assert out.shape[:2] == (1, 3)
    assert torch.equal(t.apply_transform(rgba, draws), out)
    assert alpha_transforms("color").steps[0].kind == "color"


@pytest.mark.parametrize("call, error, name", [
    (lambda: CompositeBackground("checkerboard"), ValueError, "kind"),
    (lambda: CompositeBackground(decay_power=float("inf")), ValueError, "decay_power"),
    (lambda: CompositeBackground(sd=-1.0), ValueError, "sd"),
    (lambda: CompositeBackground(decorrelate="no"), TypeError, "decorrelate"),
    # an RGB image: no alpha, or placed after a transform that already made it RGB
    (lambda: CompositeBackground()(torch.rand(1, 3, 8, 8)), ValueError, "input"),
    (lambda: Compose([Pad(2), CompositeBackground()])(torch.rand(1, 3, 8, 8)), ValueError,
     "input"),
    (lambda: CompositeBackground().apply_transform(
        torch.rand(1, 4, 8, 8), CompositeBackground().sample(torch.rand(1, 4, 6, 6))),
     ValueError, r"params\['background'\]"),
])
def test_composite_background_rejects_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: random_background(1, 4, 4, "plasma"), ValueError, "kind"),
    (lambda: random_background(0, 4, 4), ValueError, "batch"),
    (lambda: random_background(1, 4, -4), ValueError, "height"),
    (lambda: random_background(1, 4, 4, sd=float("nan")), ValueError, "sd"),
])
def test_random_background_rejects_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_a_bad_background_kind_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"fourier.*color.*noise"):
        CompositeBackground("checkerboard")


# --- objectives ----------------------------------------------------------------------------

def test_mean_alpha_and_alpha_penalty_values():
    rgba = torch.zeros(2, 4, 3, 3)
    rgba[0, 3] = 0.2
    rgba[1, 3] = 0.6
    acts = {"input": rgba, "layer": torch.full((2, 2), 5.0)}
    assert mean_alpha()(acts).item() == pytest.approx(0.4)
    assert mean_alpha(batch=1)(acts).item() == pytest.approx(0.6)
    assert mean_alpha(batch=-2)(acts).item() == pytest.approx(0.2)
    assert mean_alpha().layers == {"input"}
    assert mean_alpha().name == "mean_alpha()"
    penalised = alpha_penalty(objectives.channel("layer", 1))
    assert penalised(acts).item() == pytest.approx(5.0 * 0.6)
    assert penalised.layers == {"input", "layer"}
    assert penalised.name.startswith("alpha_penalty(")
    assert alpha_penalty("layer:1", batch=0)(acts).item() == pytest.approx(5.0 * 0.8)
    assert (objectives.channel("layer", 0) - 2 * mean_alpha())(acts).item() == pytest.approx(4.2)


@pytest.mark.parametrize("call, error, name", [
    (lambda: mean_alpha()({"input": torch.rand(1, 3, 4, 4)}), ValueError, "'input'"),
    (lambda: mean_alpha(batch=2)({"input": torch.rand(2, 4, 4, 4)}), IndexError, "batch"),
    (lambda: mean_alpha()({"layer": torch.rand(2, 4)}), KeyError, "input"),
])
def test_alpha_objectives_reject_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_objective_reading_only_alpha_drives_it_down():
    """With only an alpha cost, a render makes the image transparent (the model never runs)."""
    net = fixed_conv(torch.ones(1, 3, 1, 1))
    result = render_vis(net, -mean_alpha(), param_f=lambda: image_rgba(16),
                        transforms=alpha_transforms(), thresholds=(30, 100), progress=False,
                        seed=0)
    assert result.image.shape == (1, 16, 16, 4)
    # measured: mean alpha 0.5 -> 0.37 (30 steps) -> 0.15 (100 steps)
    early, late = (image[..., 3].mean() for image in result.images)
    assert late < early < 0.45 and late < 0.2
    assert result.history[-1] > result.history[0]


# --- a planted unit rendered with the transparency recipe ----------------------------------

def centre_surround_net():
    r = torch.arange(15, dtype=torch.float64) - 7
    d2 = r[None, :] ** 2 + r[:, None] ** 2
    dog = torch.exp(-d2 / (2 * 1.5 ** 2)) / 1.5 ** 2 - torch.exp(-d2 / (2 * 4.0 ** 2)) / 4.0 ** 2
    return fixed_conv((dog.float() / 3).expand(1, 3, -1, -1), padding="same")


@pytest.fixture(scope="module")
def transparent_render():
    """A centre-surround unit read (before its ReLU) at one position of a 96 x 64 map, with the
    recipe: RGBA image, random Fourier backgrounds, standard transforms, objective *
    (1 - mean alpha). Measured (seeds 0-4; 128 steps, ~1.5 s): mean alpha 0.93-1.0 within
    6 px of the receptive field's centre, 0.09-0.12 beyond 25 px; the centre of the opaque
    region within 4.3 px of the expected place."""
    x, y = 70, 30
    result = render_vis(centre_surround_net(), alpha_penalty(objectives.neuron("0", 0, x=x, y=y)),
                        param_f=lambda: image_rgba(96, 64), transforms=alpha_transforms(),
                        thresholds=(128,), progress=False, seed=0)
    # standard transforms: +12 px of padding, then crops of on average 4 and 2 px
    return result, (x - 12 + 4 + 2, y - 12 + 4 + 2)


def test_planted_unit_is_opaque_at_its_receptive_field_and_transparent_far_away(
        transparent_render):
    result, (col, row) = transparent_render
    alpha = result.image[0, ..., 3]
    assert result.image.shape == (1, 64, 96, 4)
    rows, cols = np.mgrid[:alpha.shape[0], :alpha.shape[1]]
    distance = np.hypot(cols - col, rows - row)
    near, far = alpha[distance < 6].mean(), alpha[distance > 25].mean()
    assert near > 0.8 and far < 0.3, (near, far)
    # the opaque region is where the receptive field is
    opaque_row, opaque_col = np.argwhere(alpha > 0.5).mean(0)
    assert abs(opaque_row - row) <= 6 and abs(opaque_col - col) <= 6
    assert result.history[-1] > result.history[0]


def test_the_same_render_repeats_with_a_seed(transparent_render):
    result, _ = transparent_render
    again = render_vis(centre_surround_net(), alpha_penalty(objectives.neuron("0", 0, x=70, y=30)),
                       param_f=lambda: image_rgba(96, 64), transforms=alpha_transforms(),
                       thresholds=(8,), progress=False, seed=0)
    other = render_vis(centre_surround_net(), alpha_penalty(objectives.neuron("0", 0, x=70, y=30)),
                       param_f=lambda: image_rgba(96, 64), transforms=alpha_transforms(),
                       thresholds=(8,), progress=False, seed=0)
    assert np.array_equal(again.image, other.image)
    assert again.history == result.history[:8]


# --- export --------------------------------------------------------------------------------

def test_rgba_render_saves_as_a_valid_rgba_png(transparent_render, tmp_path):
    result, _ = transparent_render
    path = save_png(result.image, tmp_path / "unit.png")
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.mode == "RGBA"
        assert picture.size == (96, 64)
        pixels = np.asarray(picture)
    assert pixels[..., 3].min() < 128 and pixels[..., 3].max() > 200     # not all 255
    np.testing.assert_array_equal(pixels, np.round(result.image[0] * 255).astype(np.uint8))


def test_rgba_tensor_batch_saves_as_an_rgba_grid(tmp_path):
    torch.manual_seed(0)
    batch = image_rgba(8, 6, batch=2, sd=2.0)().detach()
    with Image.open(save_png(batch, tmp_path / "grid.png")) as picture:
        assert picture.mode == "RGBA"
        alpha = np.asarray(picture)[..., 3]
    assert (alpha < 255).any()


def test_composite_takes_one_colour_per_image():
    rgba = torch.zeros(2, 4, 3, 3)                       # fully transparent
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).view(2, 3, 1, 1)
    out = alpha.composite(rgba, colours)
    assert torch.equal(out, colours.expand(2, 3, 3, 3))
