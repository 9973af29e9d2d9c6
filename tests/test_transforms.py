"""Tests for lucent_core.transforms: pure ops with known answers, random modules that replay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lucent_core import transforms
from lucent_core.transforms import functional as TF
from lucent_core.transforms.random import (Compose, Jitter, Pad, RandomRotate, RandomScale,
                                           standard_transforms)

SHAPES = [(2, 3, 32, 32), (3, 3, 37, 64), (1, 3, 50, 29)]

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ramp(batch=1, channels=3, height=6, width=6, dtype=torch.float32) -> torch.Tensor:
    """Every pixel distinct, so any misplacement is visible."""
    return torch.arange(batch * channels * height * width, dtype=dtype).reshape(
        batch, channels, height, width)


# --- shapes ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_output_shapes(shape):
    b, c, h, w = shape
    x = torch.rand(shape)
    assert TF.pad(x, 5).shape == (b, c, h + 10, w + 10)
    assert Pad(12)(x).shape == (b, c, h + 24, w + 24)
    assert Jitter(8)(x, gen(0)).shape == (b, c, h - 8, w - 8)
    assert TF.scale(x, 0.5).shape == (b, c, int(0.5 * h), int(0.5 * w))
    assert TF.scale(x, 1.1).shape == (b, c, int(1.1 * h), int(1.1 * w))
    assert RandomScale([0.9])(x).shape == (b, c, int(0.9 * h), int(0.9 * w))
    assert TF.rotate(x, 7.0).shape == shape
    assert RandomRotate([-5, 5])(x, gen(0)).shape == shape


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_standard_transforms_shape_follows_draws(shape, seed):
    b, c, h, w = shape
    y, draws = standard_transforms().forward_with_params(torch.rand(shape), gen(seed))
    factor = draws[2]["factor"]
    # pad 12 -> jitter 8 -> scale -> rotate (same size) -> jitter 4
    expected = (b, c, int(factor * (h + 24 - 8)) - 4, int(factor * (w + 24 - 8)) - 4)
    assert y.shape == expected
    assert draws[0] == {} and set(draws[1]) == {"top", "left"}
    assert 0.9 - 1e-9 <= factor <= 1.1 + 1e-9
    assert draws[3]["degrees"] in [float(a) for a in range(-10, 11)]


# --- pad ---------------------------------------------------------------------------------

def test_pad_constant_value():
    x = torch.rand(2, 3, 4, 5)
    y = TF.pad(x, 3, value=0.25)
    assert torch.equal(y[..., 3:-3, 3:-3], x)
    border = torch.ones(7 + 3, 5 + 6, dtype=torch.bool)
    border[3:-3, 3:-3] = False
    assert (y[..., border] == 0.25).all()
    assert (Pad(2)(x)[..., 0, :] == 0.5).all()  # default grey


@pytest.mark.parametrize("mode, np_mode", [("reflect", "reflect"), ("replicate", "edge")])
def test_pad_reflect_and_replicate_content(mode, np_mode):
    x = ramp(1, 2, 4, 5)
    y = Pad(2, mode=mode)(x)
    expected = np.pad(x.numpy(), [(0, 0), (0, 0), (2, 2), (2, 2)], mode=np_mode)
    np.testing.assert_array_equal(y.numpy(), expected)


def test_pad_reflect_known_corner():
    x = torch.arange(16.).reshape(1, 1, 4, 4)
    y = TF.pad(x, 2, mode="reflect")
    # padded (row -2, col -2) reflects to (row 2, col 2) = 10; row -1 col 0 -> (1, 0) = 4
    assert y[0, 0, 0, 0] == 10 and y[0, 0, 1, 2] == 4 and y[0, 0, 7, 7] == 5


BAD_PAD_MODES = ["wrap", "circular", "zeros"]
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("call, error, name", [
    *[(lambda mode=mode: Pad(2, mode=mode), ValueError, "mode") for mode in BAD_PAD_MODES],
    (lambda: Pad(-3), ValueError, "width"),
    (lambda: Pad(2.5), TypeError, "width"),
    (lambda: Pad(2, value=NAN), ValueError, "value"),
])
def test_pad_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    *[(lambda mode=mode: TF.pad(torch.zeros(1, 3, 4, 4), 2, mode), ValueError, "mode")
      for mode in BAD_PAD_MODES],
    (lambda: TF.pad(torch.rand(1, 3, 16, 16), -2), ValueError, "width"),
    (lambda: TF.pad(torch.rand(1, 3, 16, 16), 40, mode="reflect"), ValueError, "width"),
])
def test_functional_pad_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- crop / jitter -----------------------------------------------------------------------

def test_crop_picks_exact_window():
    x = torch.arange(16.).reshape(1, 1, 4, 4)
    assert TF.crop(x, 1, 2, 2, 2).flatten().tolist() == [6.0, 7.0, 10.0, 11.0]
    x = ramp(2, 3, 7, 9)
    assert torch.equal(TF.crop(x, 2, 3, 4, 5), x[:, :, 2:6, 3:8])


def test_jitter_applies_the_drawn_window():
    x = ramp(2, 3, 10, 13)
    jitter = Jitter(4)
    for seed in range(5):
        params = jitter.sample(x, gen(seed))
        y = jitter.apply_transform(x, params)
        top, left = params["top"], params["left"]
        assert torch.equal(y, x[..., top:top + 6, left:left + 9])


def test_jitter_covers_every_shift_0_to_d():
    jitter, g = Jitter(3), gen(0)
    x = torch.zeros(1, 3, 8, 8)
    draws = [jitter.sample(x, g) for _ in range(200)]
    assert {d["top"] for d in draws} == {0, 1, 2, 3}
    assert {d["left"] for d in draws} == {0, 1, 2, 3}


@pytest.mark.parametrize("call, error, name", [
    (lambda: Jitter(0), ValueError, r"\bd\b"),
    (lambda: Jitter(2.5), TypeError, r"\bd\b"),
    (lambda: Jitter("2"), TypeError, r"\bd\b"),
    (lambda: Jitter(8)(torch.zeros(1, 3, 8, 20)), ValueError, "jitter"),
    (lambda: Jitter(8)(torch.zeros(1, 3, 20, 8)), ValueError, "jitter"),
])
def test_jitter_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: TF.crop(torch.rand(1, 3, 16, 16), 20, 20, 4, 4), ValueError, "top"),
])
def test_functional_crop_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- scale -------------------------------------------------------------------------------

def test_scale_one_is_identity():
    x = torch.rand(2, 3, 9, 11)
    assert torch.equal(TF.scale(x, 1.0), x)
    assert torch.equal(RandomScale([1.0])(x), x)


def test_scale_half_is_2x2_average():
    # bilinear, align_corners=False, factor 1/2 samples exactly between pixel pairs
    x = torch.rand(2, 3, 8, 12)
    torch.testing.assert_close(TF.scale(x, 0.5), F.avg_pool2d(x, 2))


def test_scale_keeps_constant_images_constant():
    x = torch.full((1, 3, 10, 14), 0.3)
    for factor in (0.9, 1.1, 2.0):
        torch.testing.assert_close(TF.scale(x, factor), torch.full_like(TF.scale(x, factor), 0.3))


def test_random_scale_draws_only_from_list():
    scale, g = RandomScale([0.5, 2.0]), gen(0)
    factors = {scale.sample(torch.zeros(1, 3, 4, 4), g)["factor"] for _ in range(50)}
    assert factors == {0.5, 2.0}


# --- rotate ------------------------------------------------------------------------------

def test_rotate_zero_is_identity():
    x = torch.rand(2, 3, 9, 13)
    assert torch.equal(TF.rotate(x, 0.0), x)
    assert torch.equal(RandomRotate([0])(x), x)


def test_rotate_90_is_anticlockwise_marked_pixel():
    n = 6
    x = torch.zeros(1, 1, n, n)
    x[0, 0, 0, n - 1] = 1.0     # top-right corner
    x[0, 0, 0, 4] = 0.5         # row 0, col 4
    y = TF.rotate(x, 90.0)
    # anticlockwise about the centre: (row r, col c) -> (row n-1-c, col r)
    assert y[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-4)   # top-right -> top-left
    assert y[0, 0, 1, 0] == pytest.approx(0.5, abs=1e-4)
    assert y.sum() == pytest.approx(1.5, abs=1e-4)
    # and -90 (clockwise) sends the top-right corner to the bottom-right
    assert TF.rotate(x, -90.0)[0, 0, n - 1, n - 1] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("n", [7, 8])
def test_rotate_matches_rot90(n):
    x = torch.rand(2, 3, n, n)
    torch.testing.assert_close(TF.rotate(x, 90.0), torch.rot90(x, 1, dims=(-2, -1)),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(TF.rotate(x, 180.0), torch.flip(x, dims=(-2, -1)),
                               atol=1e-5, rtol=0)


def test_rotate_per_image_angles():
    x = torch.rand(2, 3, 8, 8)
    y = TF.rotate(x, torch.tensor([0.0, 90.0]))
    torch.testing.assert_close(y[0], x[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(y[1], torch.rot90(x[1], 1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_random_rotate_draws_only_from_list():
    rotate, g = RandomRotate([-10, 10]), gen(0)
    angles = {rotate.sample(torch.zeros(1, 3, 4, 4), g)["degrees"] for _ in range(50)}
    assert angles == {-10.0, 10.0}


@pytest.mark.parametrize("call, error, name", [
    (lambda: RandomScale([]), ValueError, "scales"),
    (lambda: RandomScale([0]), ValueError, "scales"),
    (lambda: RandomScale([-1]), ValueError, "scales"),
    (lambda: RandomScale([NAN]), ValueError, "scales"),
    (lambda: RandomScale("12"), ValueError, "scales"),
    (lambda: RandomScale(1.1), ValueError, "scales"),
])
def test_random_scale_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: RandomRotate([]), ValueError, "angles"),
    (lambda: RandomRotate([NAN]), ValueError, "angles"),
    (lambda: RandomRotate(10), ValueError, "angles"),
])
def test_random_rotate_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: TF.scale(torch.rand(1, 3, 16, 16), factor), ValueError, "factor")
    for factor in (0, -1, NAN)
])
def test_functional_scale_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_pure_operations_accept_what_stays_inside_the_image():
    assert TF.crop(torch.rand(1, 3, 16, 16), 12, 12, 4, 4).shape[-2:] == (4, 4)


@pytest.mark.parametrize("call, error, name", [
    (lambda: Compose(Pad(2)), TypeError, "transforms"),
    (lambda: Compose(5), TypeError, "transforms"),
    (lambda: Compose({Pad(2), Jitter(4)}), TypeError, "transforms"),
    (lambda: Compose([Pad(2), 3]), TypeError, "transforms"),
    (lambda: Compose([Pad(2), Jitter(2)]).apply_transform(torch.zeros(1, 3, 8, 8), [{}]),
     ValueError, "draws"),
    (lambda: Compose([Pad(2), Jitter(4)]).apply_transform(torch.rand(1, 3, 8, 8), [{}, {}]),
     ValueError, "draws"),
])
def test_compose_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- reproducibility and replay ----------------------------------------------------------

def test_same_seed_same_output_different_seed_different_draws():
    x = torch.rand(2, 3, 48, 40)
    t = standard_transforms()
    runs = {}
    for seed in (0, 0, 1):
        g = gen(seed)
        outputs, draws = [], []
        for _ in range(6):
            y, d = t.forward_with_params(x, g)
            outputs.append(y)
            draws.append(d)
        if seed in runs:
            first_outputs, first_draws = runs[seed]
            assert first_draws == draws
            assert all(torch.equal(a, b) for a, b in zip(first_outputs, outputs))
        runs[seed] = (outputs, draws)
    assert runs[0][1] != runs[1][1]
    # draws also vary from call to call within one generator
    assert len({repr(d) for d in runs[0][1]}) > 1


def test_forward_with_generator_matches_forward_with_params():
    x = torch.rand(1, 3, 40, 40)
    t = standard_transforms()
    assert torch.equal(t(x, gen(3)), t.forward_with_params(x, gen(3))[0])


def test_compose_replay_is_exact():
    x = torch.rand(2, 3, 37, 64)
    t = standard_transforms()
    for seed in range(4):
        y, draws = t.forward_with_params(x, gen(seed))
        assert torch.equal(t.apply_transform(x, draws), y)


def test_compose_with_plain_callable_and_replay():
    x = torch.rand(1, 3, 10, 10)
    t = Compose([Pad(2, value=0.0), lambda im: im * 2, Jitter(3)])
    y, draws = t.forward_with_params(x, gen(0))
    assert draws[1] == {}
    top, left = draws[2]["top"], draws[2]["left"]
    expected = (F.pad(x, [2] * 4) * 2)[..., top:top + 11, left:left + 11]
    assert torch.equal(y, expected)
    assert torch.equal(t.apply_transform(x, draws), y)


def test_package_exports():
    assert transforms.standard_transforms is standard_transforms
    assert transforms.functional is TF


# --- dtype, device, gradients ------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transforms_keep_dtype_and_device(device, dtype):
    x = torch.rand(2, 3, 37, 48, dtype=dtype, device=device)
    outputs = [TF.pad(x, 3), TF.pad(x, 3, mode="reflect"), TF.crop(x, 1, 1, 5, 5),
               TF.scale(x, 0.9), TF.rotate(x, 10.0), TF.rotate(x, torch.tensor([5.0, -5.0])),
               standard_transforms()(x, gen(0))]
    for y in outputs:
        assert y.dtype == dtype and y.device == x.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_same_seed_same_draws_on_cpu_and_cuda():
    x = torch.rand(1, 3, 40, 40)
    t = standard_transforms()
    y_cpu, d_cpu = t.forward_with_params(x, gen(5))
    y_gpu, d_gpu = t.forward_with_params(x.cuda(), gen(5))
    assert d_cpu == d_gpu
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-4, rtol=0)


def test_gradients_flow_through_standard_transforms():
    x = torch.rand(2, 3, 48, 48, requires_grad=True)
    t = standard_transforms()
    for seed in range(3):
        x.grad = None
        t(x, gen(seed)).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert x.grad.abs().sum() > 0


def test_jitter_gradient_is_window_indicator():
    x = torch.rand(1, 3, 10, 10, requires_grad=True)
    t = Compose([Jitter(4)])
    y, draws = t.forward_with_params(x, gen(1))
    y.sum().backward()
    top, left = draws[0]["top"], draws[0]["left"]
    expected = torch.zeros_like(x)
    expected[..., top:top + 6, left:left + 6] = 1
    assert torch.equal(x.grad, expected)


# --- RandomAffine: the fused, per-image version of the standard transforms -----------------

def test_affine_without_scale_or_rotation_is_pad_and_two_crops():
    x = torch.rand(3, 3, 20, 24)
    t = transforms.RandomAffine(pad=5, jitter=(4, 2), scales=[1.0], angles=[0])
    params = t.sample(x, gen(0))
    y = t.apply_transform(x, params)
    assert y.shape == (3, 3, 24, 28)
    for i, (top1, left1, _, _, top2, left2) in enumerate(params["draws"].int().tolist()):
        ref = TF.pad(x[i:i + 1], 5)
        ref = TF.crop(ref, top1, left1, 26, 30)
        ref = TF.crop(ref, top2, left2, 24, 28)
        torch.testing.assert_close(y[i:i + 1], ref, atol=2e-5, rtol=0)


def test_affine_rotation_and_scale_agree_with_the_separate_ops():
    x = torch.rand(2, 3, 20, 24)
    black = {"pad": 0, "jitter": (0, 0), "pad_value": 0.0}   # kornia fills with zeros
    rotated = transforms.RandomAffine(scales=[1.0], angles=[7], **black)(x)
    torch.testing.assert_close(rotated, TF.rotate(x, 7.0), atol=2e-5, rtol=0)
    zoomed = transforms.RandomAffine(scales=[1.1], angles=[0], **black)(x)
    import kornia.geometry.transform as KT
    torch.testing.assert_close(zoomed, KT.scale(x, torch.tensor([1.1, 1.1])), atol=2e-5, rtol=0)


def test_affine_draws_per_image_make_each_image_independent_of_its_batch():
    t = transforms.standard_affine()
    x = torch.rand(4, 3, 32, 32)
    together = t(x, [gen(s) for s in (10, 11, 12, 13)])
    for i, s in enumerate((10, 11, 12, 13)):
        torch.testing.assert_close(together[i:i + 1], t(x[i:i + 1], [gen(s)]), atol=1e-6, rtol=0)
    draws = t.sample(torch.zeros(16, 3, 8, 8), gen(0))["draws"]
    assert len({tuple(row) for row in draws.tolist()}) > 8   # one generator: draws still differ


def test_affine_replays_and_counts_generators():
    t = transforms.standard_affine()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(t(x, gen(3)), t(x, gen(3)), atol=0, rtol=0)


@pytest.mark.parametrize("call, error, name", [
    (lambda: transforms.RandomAffine(scales=[0]), ValueError, "scales"),
    (lambda: transforms.RandomAffine(scales=[INF]), ValueError, "scales"),
    (lambda: transforms.RandomAffine(angles=[NAN]), ValueError, "angles"),
    (lambda: transforms.RandomAffine(pad_value=NAN), ValueError, "pad_value"),
    (lambda: transforms.RandomAffine(pad=2.5), TypeError, "pad"),
    (lambda: transforms.RandomAffine(jitter=4), ValueError, "jitter"),
    (lambda: transforms.RandomAffine(jitter=(4, -1)), ValueError, r"jitter\[1\]"),
    (lambda: transforms.RandomAffine(pad_mode="wrap"), ValueError, "pad_mode"),
    (lambda: transforms.RandomAffine(pad=0, jitter=(8, 4))(torch.rand(1, 3, 8, 8)), ValueError,
     "pad"),
    (lambda: transforms.standard_affine()(torch.rand(2, 3, 32, 32), [gen(0), gen(1), gen(2)]),
     ValueError, "generators"),
    (lambda: transforms.RandomAffine()(torch.rand(2, 3, 8, 8), "seed"), TypeError, "generators"),
])
def test_random_affine_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("mode, corner", [("constant", 0.25), ("replicate", 1.0)])
def test_affine_fills_outside_the_image_like_its_pad_mode(mode, corner):
    x = torch.ones(1, 3, 16, 16)
    y = transforms.RandomAffine(pad=6, jitter=(0, 0), scales=[1.0], angles=[0], pad_mode=mode,
                                pad_value=0.25)(x)
    assert y.shape == (1, 3, 28, 28)
    assert y[..., 0, 0].allclose(torch.full((1, 3), corner), atol=1e-5)
    assert y[..., 14, 14].allclose(torch.ones(1, 3), atol=1e-5)


def test_rotate_takes_one_angle_per_image_as_a_list_array_or_tensor():
    import numpy as np
    from lucent_core.transforms import functional as TF
    x = torch.rand(2, 3, 9, 9)
    expected = TF.rotate(x, torch.tensor([90.0, 0.0]))
    torch.testing.assert_close(TF.rotate(x, [90.0, 0.0]), expected)
    torch.testing.assert_close(TF.rotate(x, np.array([90.0, 0.0])), expected)
    assert TF.rotate(x, np.float32(0.0)) is x


@pytest.mark.parametrize("call, error, name", [
    (lambda: TF.rotate(torch.rand(2, 3, 8, 8), [1.0, 2.0, 3.0]), ValueError, "degrees"),
])
def test_functional_rotate_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_compose_takes_any_list_like_and_affine_takes_whole_numbers_of_any_kind():
    x = torch.rand(1, 3, 16, 16)
    assert Compose(transforms.standard_transforms().steps)(x).dim() == 4  # a ModuleList
    assert len(Compose(t for t in [Pad(1), Jitter(2)]).steps) == 2       # a generator
    for jitter in ((4.0, 4.0), np.array([4, 4]), torch.tensor([4, 4])):
        assert transforms.RandomAffine(pad=4.0, jitter=jitter).jitter == (4, 4)
    assert TF.pad(x, torch.tensor(2)).shape[-1] == 20
    assert Pad(2.0).width == 2 and Jitter(4.0).d == 4  # whole numbers, as from a config file


def test_the_draws_forward_with_params_returns_replay():
    t = Compose([Pad(2), Jitter(4)])
    y, draws = t.forward_with_params(torch.rand(1, 3, 8, 8))
    assert t.apply_transform(torch.rand(1, 3, 8, 8), draws).shape == y.shape
