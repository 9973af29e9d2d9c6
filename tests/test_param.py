"""Tests for lucent_core.param: shapes, value ranges, fitting a target, buffers, 1/f spectrum,
colour decorrelation with hand-computed values, and errors."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from lucent_core import param
from lucent_core.param.color import COLOR_MEAN, ToRGB, straight_through_clamp
from lucent_core.param.spatial import FourierImage, PixelImage, fourier_frequencies

SIZES = [(32, 32), (37, 64), (33, 17), (1, 5)]   # (height, width): square, odd, tiny


# --- shapes and ranges -------------------------------------------------------------------

@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("height, width", SIZES)
@pytest.mark.parametrize("batch", [1, 3])
def test_shapes(fft, height, width, batch):
    image = param.image(width, height, batch=batch, fft=fft)
    assert image().shape == (batch, 3, height, width)
    assert image.spatial().shape == (batch, 3, height, width)


def test_default_height_is_width():
    assert param.image(29)().shape == (1, 3, 29, 29)
    assert FourierImage(7, 5, batch=2)().shape == (2, 3, 5, 7)
    assert PixelImage(6, 4, batch=2)().shape == (2, 3, 4, 6)


@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("decorrelate", [True, False])
@pytest.mark.parametrize("mode", ["sigmoid", "clamp"])
def test_outputs_in_unit_range_even_when_saturated(fft, decorrelate, mode):
    torch.manual_seed(0)
    out = param.image(24, 20, batch=2, sd=5.0, fft=fft, decorrelate=decorrelate, mode=mode)()
    assert out.min() >= 0.0 and out.max() <= 1.0
    # the large init really does push values to (or close to) both ends
    assert out.min() < 0.05 and out.max() > 0.95


@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("decorrelate", [True, False])
def test_initial_image_is_mid_grey_for_sigmoid(fft, decorrelate):
    torch.manual_seed(0)
    out = param.image(40, 30, batch=2, fft=fft, decorrelate=decorrelate)()
    assert (out - 0.5).abs().max() < 0.02
    assert out.std() > 0  # but not exactly constant: it is random


def test_initial_image_for_clamp_is_centred_on_grey_or_imagenet_mean():
    torch.manual_seed(0)
    plain = param.image(16, fft=False, decorrelate=False, mode="clamp", sd=1e-4)()
    decorrelated = param.image(16, fft=False, decorrelate=True, mode="clamp", sd=1e-4)()
    torch.testing.assert_close(plain, torch.full_like(plain, 0.5), atol=1e-3, rtol=0)
    torch.testing.assert_close(decorrelated.mean(dim=(0, 2, 3)), COLOR_MEAN, atol=1e-3, rtol=0)


# --- every parameterisation can fit a target image ---------------------------------------

def smooth_target(batch: int = 2, height: int = 32, width: int = 48) -> torch.Tensor:
    """A smooth random-ish image: a few low-frequency sinusoids, rescaled to [0.1, 0.9]."""
    g = torch.Generator().manual_seed(0)
    yy = torch.linspace(0, 1, height).view(1, 1, height, 1)
    xx = torch.linspace(0, 1, width).view(1, 1, 1, width)
    target = torch.zeros(batch, 3, height, width)
    for _ in range(4):
        amplitude = torch.rand(batch, 3, 1, 1, generator=g) * 2 - 1
        fx, fy, phase = (torch.rand(3, generator=g) * 3).tolist()
        target = target + amplitude * torch.sin(2 * math.pi * (fx * xx + fy * yy) + 2 * phase)
    low = target.amin(dim=(1, 2, 3), keepdim=True)
    high = target.amax(dim=(1, 2, 3), keepdim=True)
    return 0.1 + 0.8 * (target - low) / (high - low)


@pytest.mark.parametrize("fft, decorrelate, mode", [
    (True, True, "sigmoid"), (True, False, "sigmoid"),
    (False, True, "sigmoid"), (False, False, "sigmoid"),
    (False, False, "clamp"), (False, True, "clamp"), (True, True, "clamp"),
])
def test_parameterisation_can_fit_target(fft, decorrelate, mode):
    # Measured (seeds 0-7): 400 Adam steps at lr 0.1 reach mean abs error <= 0.0013 for the
    # slowest case (fft + decorrelate + sigmoid), ~0.3 s; every other case reaches < 1e-4.
    torch.manual_seed(0)
    target = smooth_target()
    image = param.image(48, 32, batch=2, fft=fft, decorrelate=decorrelate, mode=mode)
    start_error = (image() - target).abs().mean().item()
    optimiser = torch.optim.Adam(image.parameters(), lr=0.1)
    for _ in range(400):
        optimiser.zero_grad()
        loss = ((image() - target) ** 2).mean()
        loss.backward()
        optimiser.step()
    error = (image() - target).abs().mean().item()
    assert start_error > 0.1
    assert error < 0.01


# --- modules: dtype, buffers, state dict -------------------------------------------------

@pytest.mark.parametrize("fft", [True, False])
def test_to_float64_moves_everything(fft):
    image = param.image(12, 10, batch=2, fft=fft).to(torch.float64)
    tensors = dict(image.named_parameters()) | dict(image.named_buffers())
    assert "to_rgb.color_matrix" in tensors and "to_rgb.color_mean" in tensors
    if fft:
        assert "spatial.scale" in tensors
    assert all(t.dtype == torch.float64 for t in tensors.values()), \
        {k: t.dtype for k, t in tensors.items()}
    assert image().dtype == torch.float64
    assert image.spatial().dtype == torch.float64
    # buffer values survive the move
    torch.testing.assert_close(image.to_rgb.color_matrix.float(), ToRGB().color_matrix)
    if fft:
        torch.testing.assert_close(image.spatial.scale.float(), FourierImage(12, 10).scale)


def fourier_reference(module: FourierImage) -> torch.Tensor:
    spectrum = torch.view_as_complex(module.spectrum.detach()) * module.scale
    return torch.fft.irfft2(spectrum, s=module.size, norm="ortho") / 4


def test_fourier_float32_matches_reference():
    module = FourierImage(8, 6, batch=2)
    torch.testing.assert_close(module(), fourier_reference(module))


def test_fourier_float64_keeps_double_precision():
    module = FourierImage(8, 6, batch=2).to(torch.float64)
    with torch.no_grad():
        module.spectrum.copy_(torch.randn(module.spectrum.shape, dtype=torch.float64))
    assert (module() - fourier_reference(module)).abs().max() < 1e-12


@pytest.mark.parametrize("fft, key", [(True, "spatial.spectrum"), (False, "spatial.pixels")])
def test_state_dict_holds_only_learnable_tensors(fft, key):
    image = param.image(8, 6, batch=2, fft=fft)
    state = image.state_dict()
    assert list(state) == [key]
    assert [name for name, _ in image.named_parameters()] == [key]
    other = param.image(8, 6, batch=2, fft=fft)
    assert not torch.equal(other(), image())
    other.load_state_dict(state)
    assert torch.equal(other(), image())


# --- Fourier 1/f -------------------------------------------------------------------------

def test_fourier_frequencies_known_values():
    # fftfreq(3) = [0, 1/3, -1/3] (rows), rfftfreq(4) = [0, 1/4, 1/2] (columns)
    third, quarter, half = 1 / 3, 1 / 4, 1 / 2
    expected = [[0.0, quarter, half],
                [third, math.hypot(third, quarter), math.hypot(third, half)],
                [third, math.hypot(third, quarter), math.hypot(third, half)]]
    torch.testing.assert_close(fourier_frequencies(3, 4),
                               torch.tensor(expected, dtype=torch.float32))
    fy, fx = np.fft.fftfreq(5), np.fft.rfftfreq(7)
    torch.testing.assert_close(fourier_frequencies(5, 7).double(),
                               torch.from_numpy(np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)))
    assert fourier_frequencies(37, 64).shape == (37, 33)


def test_fourier_scale_known_values():
    frequencies = fourier_frequencies(4, 6)
    scale = FourierImage(6, 4, decay_power=1.0).scale
    assert scale[0, 0] == pytest.approx(6.0)          # DC clamped to 1 / max(H, W)
    assert scale[0, 1] == pytest.approx(6.0)          # f = 1/6 exactly at the clamp
    assert scale[0, 3] == pytest.approx(2.0)          # Nyquist column, f = 1/2
    torch.testing.assert_close(scale[1:, 1:], 1 / frequencies[1:, 1:])
    assert torch.equal(FourierImage(6, 4, decay_power=0.0).scale, torch.ones(4, 4))
    torch.testing.assert_close(FourierImage(6, 4, decay_power=2.0).scale, scale ** 2)


def test_fourier_single_coefficient_known_images():
    height, width = 4, 6
    module = FourierImage(width, height)
    with torch.no_grad():
        module.spectrum.zero_()
        module.spectrum[0, 0, 0, 0, 0] = 1.0   # red channel: DC, real part 1
        module.spectrum[0, 1, 0, 1, 0] = 1.0   # green channel: one horizontal cycle
    out = module()[0]
    norm = math.sqrt(height * width) * 4        # ortho inverse FFT, then / 4
    torch.testing.assert_close(out[0], torch.full((height, width), 6.0 / norm))
    column = torch.arange(width, dtype=torch.float32)
    expected = 2 * 6.0 * torch.cos(2 * math.pi * column / width) / norm   # Hermitian pair
    torch.testing.assert_close(out[1], expected.expand(height, width))
    assert torch.equal(out[2], torch.zeros(height, width))


def low_frequency_energy(decay_power: float, seed: int = 0) -> tuple[float, float]:
    torch.manual_seed(seed)
    module = FourierImage(48, 32, batch=4, sd=1.0, decay_power=decay_power)
    power = torch.fft.rfft2(module().detach(), norm="ortho").abs() ** 2
    low = fourier_frequencies(32, 48) < 0.125
    expected = (module.scale ** 2)[low].sum() / (module.scale ** 2).sum()
    return (power[..., low].sum() / power.sum()).item(), expected.item()


def test_fourier_init_energy_concentrated_in_low_frequencies():
    white, white_expected = low_frequency_energy(0.0)
    pink, pink_expected = low_frequency_energy(1.0)
    # decay 0 is white noise: the low band (4.75% of coefficients) holds ~4.75% of energy;
    # decay 1 puts ~63% of the energy there (expected fraction = sum(scale^2) over the band).
    assert white_expected == pytest.approx(0.0475, abs=1e-4)
    assert white == pytest.approx(white_expected, abs=0.03)
    assert pink == pytest.approx(pink_expected, abs=0.1)
    assert pink > 0.4 > 0.1 > white


# --- colour ------------------------------------------------------------------------------

# COLOR_CORRELATION_SVD_SQRT columns have norms sqrt(.26^2+.27^2+.27^2) = 0.4619524,
# sqrt(.09^2+.09^2) = 0.1273 and sqrt(.02^2+.05^2+.03^2) = 0.0616; the matrix is divided by
# the largest, 0.4619524. For input (1, 2, -1):
#   R = (.26*1 + .09*2 + .02*-1) / 0.4619524 = 0.42 / 0.4619524 = 0.9091846
#   G = (.27*1 + .00*2 - .05*-1) / 0.4619524 = 0.32 / 0.4619524 = 0.6927121
#   B = (.27*1 - .09*2 + .03*-1) / 0.4619524 = 0.06 / 0.4619524 = 0.1298835
DECORRELATED_121 = (0.9091846, 0.6927121, 0.1298835)


def test_to_rgb_decorrelate_known_value_sigmoid():
    x = torch.tensor([1.0, 2.0, -1.0]).view(1, 3, 1, 1).expand(2, 3, 2, 3)
    out = ToRGB(decorrelate=True, mode="sigmoid")(x)
    expected = torch.tensor([1 / (1 + math.exp(-v)) for v in DECORRELATED_121])
    torch.testing.assert_close(out, expected.view(1, 3, 1, 1).expand(2, 3, 2, 3))


def test_to_rgb_decorrelate_known_value_clamp():
    # input (0.3, 0.6, -0.3) is 0.3 * (1, 2, -1); the ImageNet mean (.48, .46, .41) is added
    x = torch.tensor([0.3, 0.6, -0.3]).view(1, 3, 1, 1)
    out = ToRGB(decorrelate=True, mode="clamp")(x).flatten()
    expected = torch.tensor([0.3 * v + m for v, m in zip(DECORRELATED_121, (0.48, 0.46, 0.41))])
    torch.testing.assert_close(out, expected)
    assert out.tolist() == pytest.approx([0.7527554, 0.6678136, 0.4489651], abs=1e-6)


def test_to_rgb_color_matrix_normalised():
    matrix = ToRGB().color_matrix
    assert matrix.norm(dim=0).max() == pytest.approx(1.0)
    assert matrix[0, 0] == pytest.approx(0.26 / 0.4619524, abs=1e-6)


def test_to_rgb_without_decorrelation():
    x = torch.randn(2, 3, 4, 5) * 3
    torch.testing.assert_close(ToRGB(decorrelate=False, mode="sigmoid")(x), torch.sigmoid(x))
    torch.testing.assert_close(ToRGB(decorrelate=False, mode="clamp")(x), (x + 0.5).clamp(0, 1))


def test_straight_through_clamp_gradient_is_identity():
    x = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    y = straight_through_clamp(x)
    assert y.tolist() == [0.0, 0.5, 1.0]
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0]   # saturated pixels still get gradient


# --- errors ------------------------------------------------------------------------------

SIZE_CASES = [  # (image(...) arguments, error, the argument named)
    (dict(w=0, h=8), ValueError, "width"), (dict(w=8, h=0), ValueError, "height"),
    (dict(w=-3, h=8), ValueError, "width"), (dict(w=8, h=-1), ValueError, "height"),
    (dict(w=8, batch=0), ValueError, "batch"), (dict(w=8, batch=-2), ValueError, "batch"),
    (dict(w=8.5, h=8), TypeError, "width"), (dict(w=0), ValueError, "height"),  # h is w
    (dict(w=16, batch=True), TypeError, "batch"),
]


@pytest.mark.parametrize("call, error, name", [
    *(((lambda fft=fft, kwargs=kwargs: param.image(fft=fft, **kwargs)), error, name)
      for fft in (True, False) for kwargs, error, name in SIZE_CASES),
    (lambda: param.image(8, mode="tanh"), ValueError, "mode"),
    (lambda: param.image(8, fft=False, decay_power=2.0), ValueError, "decay_power"),
    (lambda: param.image(8, fft=False, decay_power=0.0), ValueError, "decay_power"),
    (lambda: param.image(8, sd=float("nan")), ValueError, "sd"),
    (lambda: param.image(8, sd=-0.1), ValueError, "sd"),
    (lambda: param.image(8, sd=float("nan"), fft=False), ValueError, "sd"),
    (lambda: param.image(8, decay_power=float("inf")), ValueError, "decay_power"),
    (lambda: param.image(8, fft="no"), TypeError, "fft"),
    (lambda: param.image(8, decorrelate="no"), TypeError, "decorrelate"),
])
def test_image_rejects_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: ToRGB(mode="tanh"), ValueError, "mode"),
    (lambda: ToRGB(decorrelate="no"), TypeError, "decorrelate"),
    (lambda: ToRGB()(torch.zeros(1, 4, 2, 2)), ValueError, r"\bx\b"),
])
def test_to_rgb_rejects_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_a_bad_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"'tanh'.*'sigmoid', 'clamp'"):
        param.image(8, mode="tanh")


def test_decay_power_applies_with_fft():
    assert param.image(8, fft=True, decay_power=2.0)().shape == (1, 3, 8, 8)


@pytest.mark.parametrize("make", [param.image, param.cppn, param.image_rgba])
def test_sizes_may_be_numpy_integers(make):
    assert make(np.int64(16))().shape[-2:] == (16, 16)


@pytest.mark.parametrize("kwargs", [dict(w=8.0), dict(w=8, batch=2.0), dict(w=torch.tensor(8))])
def test_sizes_may_be_whole_numbers_of_other_kinds(kwargs):
    # converted to int where they are checked, so torch gets an int
    image = param.image(**kwargs)
    assert image().shape[-1] == 8 and image.size == (8, 8)
    assert all(isinstance(n, int) for n in image.size)


# --- memory: a parameterisation larger than the machine is refused before it is allocated -----

TERABYTES = [  # (call, the argument and value named): each would need terabytes
    (lambda: param.image(10**6), "width=1000000"),
    (lambda: param.image(10**6, fft=False), "width=1000000"),
    (lambda: param.image(128, batch=10**9), "batch=1000000000"),
    (lambda: param.image(128, 10**7, batch=10**3), "height=10000000"),
    (lambda: param.image_rgba(10**6), "width=1000000"),
    (lambda: param.cppn(10**6), "width=1000000"),
    (lambda: param.lowres_image(10**6), "width=1000000"),
    (lambda: param.laplacian_pyramid_image(10**6), "width=1000000"),
    (lambda: param.maco(10**6), "width=1000000"),
    (lambda: param.maco(128, batch=10**9), "batch=1000000000"),
    (lambda: param.make_param("fourier", 128, batch=10**9), "batch=1000000000"),
]


@pytest.mark.parametrize("call, name", TERABYTES)
def test_a_size_needing_terabytes_is_refused_before_allocating(call, name, monkeypatch):
    def allocates(*args, **kwargs):
        raise AssertionError("allocated before the memory check")
    for factory in ("randn", "zeros", "empty", "sqrt", "meshgrid"):
        monkeypatch.setattr(torch, factory, allocates)
    with pytest.raises(MemoryError, match=name) as info:
        call()
    message = str(info.value)
    assert re.search(r"needs about [\d.]+ [TP]B", message), message
    assert "the CPU has" in message and "available" in message
    assert len(message.splitlines()) == 1


def test_sizes_that_fit_are_not_refused():
    assert param.image(512, batch=4)().shape == (4, 3, 512, 512)
    assert param.cppn(64, batch=2)().shape == (2, 3, 64, 64)


@pytest.mark.parametrize("fft", [True, False], ids=["fourier", "pixel"])
@pytest.mark.parametrize("decorrelate", [True, False])
@pytest.mark.parametrize("mode", ["sigmoid", "clamp"])
def test_an_image_started_from_a_photo_gives_it_back_at_step_0(fft, decorrelate, mode):
    torch.manual_seed(0)
    photo = torch.rand(1, 3, 9, 14) * 0.98 + 0.01       # odd height, even width
    made = param.image(14, 9, batch=2, fft=fft, decorrelate=decorrelate, mode=mode, init=photo)
    torch.testing.assert_close(made(), photo.expand(2, -1, -1, -1), atol=2e-5, rtol=0)
    per_image = torch.rand(2, 3, 9, 14) * 0.98 + 0.01
    torch.testing.assert_close(param.image(14, 9, batch=2, fft=fft, decorrelate=decorrelate,
                                           mode=mode, init=per_image)(), per_image,
                               atol=2e-5, rtol=0)


@pytest.mark.parametrize("call, error, name", [
    (lambda: param.image(8, init=torch.rand(3, 8, 9)), ValueError, "init"),
    (lambda: param.image(8, batch=2, init=torch.rand(3, 3, 8, 8)), ValueError, "init"),
    (lambda: param.image(8, init=np.zeros((8, 8, 3))), TypeError, "init"),
])
def test_a_start_image_of_another_shape_or_type_is_refused(call, error, name):
    with pytest.raises(error, match=name):
        call()
