"""Tests for lucent_core.models.inceptionv1: the inception5h state dict contract, layer names,
channel counts and sizes, LRN and padding known answers, early stop and redirected ReLUs.

All on random weights: nothing here downloads ``inception5h.pth``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lucent_core.hooks import capture, run_to_layers
from lucent_core.models.inceptionv1 import (INCEPTIONV1_BLOCKS, INCEPTIONV1_LRN,
                                            INCEPTIONV1_VALUE_RANGE, InceptionBlock, InceptionV1,
                                            LocalResponseNorm, PaddedMaxPool2d)
from lucent_core.relu import RedirectedReLU, set_redirected_relu

FIXTURE = Path(__file__).parent / "fixtures" / "inceptionv1_state_dict.json"
BRANCHES = ("1x1", "3x3_bottleneck", "3x3", "5x5_bottleneck", "5x5", "pool_reduce")

# Expected channels and spatial size (at a 224 x 224 input) of the named layers.
STEM = {"conv2d0": (64, 112), "maxpool0": (64, 56), "localresponsenorm0": (64, 56),
        "conv2d1": (64, 56), "conv2d2": (192, 56), "localresponsenorm1": (192, 56),
        "maxpool1": (192, 28), "maxpool4": (480, 14), "maxpool10": (832, 7)}
BLOCK_CHANNELS = {"mixed3a": 256, "mixed3b": 480, "mixed4a": 508, "mixed4b": 512,
                  "mixed4c": 512, "mixed4d": 528, "mixed4e": 832, "mixed5a": 832,
                  "mixed5b": 1024}
BLOCK_SIZE = {"3": 28, "4": 14, "5": 7}


def expected_layers() -> dict[str, tuple[int, int]]:
    """Every hookable layer name (Lucid spelling) -> (channels, side at 224 x 224)."""
    layers: dict[str, tuple[int, int]] = {}
    for name, (channels, side) in STEM.items():
        layers[name] = (channels, side)
        if name.startswith("conv2d"):
            layers[f"{name}_pre_relu"] = (channels, side)
    for block, channels in BLOCK_CHANNELS.items():
        side = BLOCK_SIZE[block[5]]
        layers[block] = layers[f"{block}_pre_relu"] = (channels, side)
        for branch, width in zip(BRANCHES, INCEPTIONV1_BLOCKS[block]):
            layers[f"{block}_{branch}"] = layers[f"{block}_{branch}_pre_relu"] = (width, side)
    return layers


@pytest.fixture(scope="module")
def shapes() -> dict[str, list[int]]:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def model() -> InceptionV1:
    torch.manual_seed(0)
    return InceptionV1().eval()


def random_input(*size: int, seed: int = 0) -> torch.Tensor:
    low, high = INCEPTIONV1_VALUE_RANGE
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(*size, generator=generator) * (high - low) + low


@pytest.fixture(scope="module")
def acts224(model) -> dict[str, torch.Tensor]:
    """Every hookable layer for one 224 x 224 input, from a single forward."""
    with torch.no_grad(), capture(model, list(expected_layers())
                                  + ["softmax2_pre_activation_matmul", "softmax2", "labels"],
                                  stop_early=False) as acts:
        run_to_layers(model, random_input(1, 3, 224, 224), acts)
        return dict(acts)


# --- state dict ---------------------------------------------------------------------------

def test_state_dict_keys_and_shapes_match_inception5h(model, shapes):
    state = model.state_dict()
    assert list(state) == list(shapes)  # same keys, in the same order
    assert {key: list(value.shape) for key, value in state.items()} == shapes
    assert len(state) == 116
    assert sum(value.numel() for value in state.values()) == 7_066_380
    assert sum(p.numel() for p in model.parameters()) == 7_066_380
    assert list(model.buffers()) == []


def test_state_dict_from_file_shapes_loads_strict_and_round_trips(shapes):
    torch.manual_seed(1)
    file_state = {key: torch.randn(shape) for key, shape in shapes.items()}
    keys_before = list(file_state)
    model = InceptionV1()
    result = model.load_state_dict(file_state)  # strict by default
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert list(file_state) == keys_before  # the caller's dict is not renamed
    state = model.state_dict()
    assert list(state) == list(file_state)
    for key, value in file_state.items():
        assert torch.equal(state[key], value), key
    # parameters really moved: a block conv inside the module tree holds the file's tensor
    assert torch.equal(model.mixed4a._modules["3x3_pre_relu_conv"].weight,
                       file_state["mixed4a_3x3_pre_relu_conv.weight"])


def test_state_dict_survives_torch_save_and_weights_only_load(shapes):
    torch.manual_seed(2)
    model = InceptionV1()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other = InceptionV1()
    other.load_state_dict(torch.load(buffer, weights_only=True))
    for (key, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), key


def test_state_dict_strict_errors_use_file_keys(shapes):
    state = {key: torch.zeros(shape) for key, shape in shapes.items()}
    missing = dict(state)
    del missing["mixed4c_5x5_pre_relu_conv.bias"]
    with pytest.raises(RuntimeError, match=r'Missing key\(s\).*"mixed4c_5x5_pre_relu_conv\.bias"'):
        InceptionV1().load_state_dict(missing)
    extra = dict(state, mixed4c_bogus=torch.zeros(1))
    with pytest.raises(RuntimeError, match="Unexpected key.*mixed4c_bogus"):
        InceptionV1().load_state_dict(extra)
    result = InceptionV1().load_state_dict(missing, strict=False)
    assert result.missing_keys == ["mixed4c_5x5_pre_relu_conv.bias"]
    assert result.unexpected_keys == []


def test_state_dict_keys_when_nested(shapes):
    wrapper = nn.Sequential(nn.Identity(), InceptionV1())
    state = wrapper.state_dict()
    assert list(state) == [f"1.{key}" for key in shapes]
    assert not wrapper.load_state_dict(state).missing_keys
    # the module-path spelling loads too
    dotted = {name: p.detach().clone() for name, p in wrapper.named_parameters()}
    assert "1.mixed3a.1x1_pre_relu_conv.weight" in dotted
    assert not wrapper.load_state_dict(dotted).missing_keys


def test_state_dict_mapping_on_torch_without_public_hook_apis(shapes, monkeypatch):
    """Older torch has only the private hook registration methods: the fallback works too."""
    for name in ("register_state_dict_post_hook", "register_load_state_dict_pre_hook"):
        monkeypatch.delattr(nn.Module, name, raising=False)
    model = InceptionV1()
    assert list(model.state_dict()) == list(shapes)
    assert not model.load_state_dict({k: torch.zeros(v) for k, v in shapes.items()}).missing_keys
    assert model.mixed5b._modules["5x5_pre_relu_conv"].weight.abs().sum() == 0


# --- structure ----------------------------------------------------------------------------

def test_blocks_are_one_reusable_class(model):
    blocks = [m for m in model.modules() if isinstance(m, InceptionBlock)]
    assert [b.widths for b in blocks] == list(INCEPTIONV1_BLOCKS.values())
    assert [b.out_channels for b in blocks] == list(BLOCK_CHANNELS.values())
    assert model.block_names() == list(INCEPTIONV1_BLOCKS)


def test_every_relu_is_redirected_relu():
    model = InceptionV1(redirected_relu=True)
    relus = [m for m in model.modules() if isinstance(m, RedirectedReLU)]
    assert len(relus) == 3 + 9 * 6
    assert all(relu.redirect for relu in relus)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert set_redirected_relu(model, False) == 57
    assert not any(relu.redirect for relu in relus)
    assert not any(relu.redirect for relu in InceptionV1().modules()
                   if isinstance(relu, RedirectedReLU))


# --- forward ------------------------------------------------------------------------------

def test_logits_shape_and_softmax2(model, acts224):
    logits = acts224["labels"]
    assert logits.shape == (1, 1008)
    assert torch.equal(logits, acts224["softmax2_pre_activation_matmul"])
    assert torch.allclose(acts224["softmax2"], logits.softmax(1))


@pytest.mark.parametrize("height, width", [(160, 200), (33, 47)])
def test_non_square_and_small_inputs(model, height, width):
    with torch.no_grad():
        assert model(random_input(2, 3, height, width)).shape == (2, 1008)


def test_every_layer_has_expected_channels_and_size(acts224):
    for name, (channels, side) in expected_layers().items():
        assert acts224[name].shape == (1, channels, side, side), name


def test_preprocessing_maps_unit_range_to_value_range(model):
    out = model.preprocessing(torch.tensor([0.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2))
    assert out[0, 0].eq(-117).all() and out[0, 1].eq(138).all()


@pytest.mark.parametrize("block", ["mixed3a", "mixed4a", "mixed5b"])
def test_block_pre_relu_is_concat_of_branch_pre_relus(acts224, block):
    pre = acts224[f"{block}_pre_relu"]
    branches = [acts224[f"{block}_{b}_pre_relu"] for b in ("1x1", "3x3", "5x5", "pool_reduce")]
    assert torch.equal(pre, torch.cat(branches, dim=1))
    assert torch.equal(pre.relu(), acts224[block])
    assert (pre < 0).any() and (pre > 0).any()  # so the relu comparison means something
    posts = [acts224[f"{block}_{b}"] for b in ("1x1", "3x3", "5x5", "pool_reduce")]
    assert torch.equal(acts224[block], torch.cat(posts, dim=1))


def test_branch_wiring(model, acts224):
    """Each branch conv reads what the table says it reads (checked for mixed4a)."""
    block, x = model.mixed4a, acts224["maxpool4"]
    conv = block._modules
    assert torch.allclose(conv["3x3_pre_relu_conv"](acts224["mixed4a_3x3_bottleneck"]),
                          acts224["mixed4a_3x3_pre_relu"], atol=1e-5)
    assert torch.allclose(conv["5x5_pre_relu_conv"](acts224["mixed4a_5x5_bottleneck"]),
                          acts224["mixed4a_5x5_pre_relu"], atol=1e-5)
    pooled = F.max_pool2d(x, 3, stride=1, padding=1)
    assert torch.allclose(conv["pool_reduce_pre_relu_conv"](pooled),
                          acts224["mixed4a_pool_reduce_pre_relu"], atol=1e-5)
    assert torch.allclose(conv["1x1_pre_relu_conv"](x), acts224["mixed4a_1x1_pre_relu"],
                          atol=1e-5)


# --- known answers ------------------------------------------------------------------------

def lrn_reference(x: torch.Tensor, size: int, alpha: float, beta: float, k: float
                  ) -> torch.Tensor:
    """torch's local_response_norm, written out channel by channel (zero-padded window)."""
    out = torch.empty_like(x)
    channels = x.shape[1]
    for c in range(channels):
        window = x[:, max(0, c - size // 2):min(channels, c + (size - 1) // 2 + 1)]
        out[:, c] = x[:, c] / (k + alpha / size * window.pow(2).sum(1)) ** beta
    return out


def tensorflow_lrn(x: torch.Tensor, depth_radius: int, alpha: float, beta: float, bias: float
                   ) -> torch.Tensor:
    """tf.nn.local_response_normalization (alpha on the sum of squares), channel by channel."""
    out = torch.empty_like(x)
    channels = x.shape[1]
    for c in range(channels):
        window = x[:, max(0, c - depth_radius):min(channels, c + depth_radius + 1)]
        out[:, c] = x[:, c] / (bias + alpha * window.pow(2).sum(1)) ** beta
    return out


def test_inceptionv1_lrn_is_the_reference_conversion():
    # the facts of the widely used conversion (Lucent's, Captum's): LRN size 9,
    # alpha 9.99999974738e-05, beta 0.5, k 1, in torch's F.local_response_norm
    assert INCEPTIONV1_LRN == {"size": 9, "alpha": 9.99999974738e-05, "beta": 0.5, "k": 1.0}
    torch.manual_seed(3)
    x = torch.randn(2, 20, 5, 6, dtype=torch.float64) * 60  # alpha * mean(x^2) is O(1)
    expected = F.local_response_norm(x, 9, alpha=9.99999974738e-05, beta=0.5, k=1.0)
    assert torch.allclose(LocalResponseNorm(**INCEPTIONV1_LRN)(x), expected, rtol=1e-10, atol=0)
    # TensorFlow's alpha scales the sum: the same graph attributes there mean another function
    assert not torch.allclose(tensorflow_lrn(x, 4, 9.99999974738e-05, 0.5, 1.0), expected,
                              rtol=1e-3)


@pytest.mark.parametrize("size", [1, 4, 5, 11])
@pytest.mark.parametrize("beta", [0.5, 0.75])
@pytest.mark.parametrize("shape", [(2, 20, 5, 6), (2, 7, 9)])
def test_lrn_is_torchs_formula_for_any_size_beta_and_rank_and_its_gradient(size, beta, shape):
    torch.manual_seed(4)
    x = (torch.randn(*shape, dtype=torch.float64) * 60).requires_grad_()
    lrn = LocalResponseNorm(size=size, alpha=1e-3, beta=beta, k=2.0)
    expected = lrn_reference(x, size, 1e-3, beta, 2.0)
    assert torch.allclose(lrn(x), expected, rtol=1e-10, atol=0)
    torchs = F.local_response_norm(x, size, alpha=1e-3, beta=beta, k=2.0)
    assert torch.allclose(torchs, expected, rtol=1e-10, atol=0)
    grad, = torch.autograd.grad(lrn(x).sum(), x)
    expected_grad, = torch.autograd.grad(expected.sum(), x)
    assert torch.allclose(grad, expected_grad, rtol=1e-8, atol=1e-12)


def test_a_tensorflow_lrn_is_size_2r_plus_1_and_alpha_times_size():
    # the docstring's conversion, e.g. for the attributes others read from Lucid's graph
    torch.manual_seed(5)
    x = torch.randn(2, 30, 4, 4, dtype=torch.float64) * 60
    expected = tensorflow_lrn(x, depth_radius=5, alpha=1e-4, beta=0.5, bias=2.0)
    lrn = LocalResponseNorm(size=11, alpha=11e-4, beta=0.5, k=2.0)
    assert torch.allclose(lrn(x), expected, rtol=1e-10, atol=0)


def test_lrn_keeps_channels_last_layout_and_values():
    x = torch.randn(1, 16, 6, 6) * 60
    lrn = LocalResponseNorm(**INCEPTIONV1_LRN)
    out = lrn(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, lrn(x), rtol=1e-5, atol=1e-6)


def test_model_lrns_are_torchs_local_response_norm_with_the_reference_parameters(acts224):
    pairs = (("maxpool0", "localresponsenorm0"), ("conv2d2", "localresponsenorm1"))
    for source, name in pairs:
        expected = F.local_response_norm(acts224[source].double(), 9, 9.99999974738e-05, 0.5,
                                         1.0)
        assert torch.allclose(acts224[name].double(), expected, rtol=1e-5, atol=1e-6), name


def test_other_lrn_parameters_can_be_given():
    torch.manual_seed(0)
    model = InceptionV1(lrn={"size": 11, "alpha": 11e-4, "beta": 0.5, "k": 2.0}).eval()
    assert (model.localresponsenorm0.size, model.localresponsenorm1.k) == (11, 2.0)
    assert "size=11, alpha=0.0011, beta=0.5, k=2.0" in repr(model.localresponsenorm0)


def test_conv2d0_padding_is_left_top_2_right_bottom_3(model):
    x = random_input(1, 3, 64, 48, seed=4)
    with torch.no_grad(), capture(model, ["conv2d0_pre_relu"]) as acts:
        run_to_layers(model, x, acts)
    conv = model.conv2d0_pre_relu_conv
    expected = F.conv2d(F.pad(x, (2, 3, 2, 3)), conv.weight, conv.bias, stride=2)
    assert acts["conv2d0_pre_relu"].shape == (1, 64, 32, 24)
    assert torch.allclose(acts["conv2d0_pre_relu"], expected, rtol=1e-4, atol=1e-3)
    symmetric = F.conv2d(x, conv.weight, conv.bias, stride=2, padding=3)[..., :32, :24]
    assert not torch.allclose(acts["conv2d0_pre_relu"], symmetric, rtol=1e-2, atol=1e-1)


@pytest.mark.parametrize("name", ["maxpool0", "maxpool1", "maxpool4", "maxpool10"])
def test_maxpools_pad_right_bottom_with_minus_inf(model, name):
    pool = getattr(model, name)
    assert isinstance(pool, PaddedMaxPool2d)
    x = -1 - torch.rand(1, 2, 8, 6)  # all negative: zero padding would win at the edges
    out = pool(x)
    assert out.shape == (1, 2, 4, 3)
    assert torch.equal(out, F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2))
    assert torch.equal(out[..., -1, -1], x[..., 6:, 4:].amax((-2, -1)))  # window hangs off
    assert torch.equal(out[..., 0, 0], x[..., :3, :3].amax((-2, -1)))  # no padding at top-left
    assert (out < 0).all()
    assert (F.max_pool2d(F.pad(x, (0, 1, 0, 1)), 3, 2)[..., -1, -1] == 0).all()


def test_block_pool_branch_pads_with_minus_inf():
    block = InceptionBlock(4, INCEPTIONV1_BLOCKS["mixed3a"])
    x = -1 - torch.rand(1, 4, 5, 5)
    assert torch.equal(block.pool(x)[..., 0, 0], x[..., :2, :2].amax((-2, -1)))


# --- hooks, early stop, redirected ReLU ---------------------------------------------------

def test_capture_stops_after_mixed3a(model):
    later = [model.mixed3b, model.maxpool4, *model.mixed4a.modules(), model.mixed5b,
             model.softmax2_pre_activation_matmul, model.softmax2]
    calls: list[str] = []
    handles = [m.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
               for m in later]
    try:
        x = random_input(1, 3, 64, 64, seed=5)
        with torch.no_grad(), capture(model, ["mixed3a"]) as acts:
            run_to_layers(model, x, acts)
        assert acts["mixed3a"].shape == (1, 256, 8, 8)
        assert calls == []
        with torch.no_grad():
            model(x)  # sanity check: the counting hooks do fire on a full forward
        assert len(calls) == len(later)
    finally:
        for handle in handles:
            handle.remove()


def test_redirected_relu_reaches_a_dead_mixed3a_unit():
    torch.manual_seed(6)
    model = InceptionV1().eval()
    channel = 10  # in the 1x1 branch (channels 0..63 of mixed3a)
    with torch.no_grad():
        model.mixed3a._modules["1x1_pre_relu_conv"].bias[channel] = -1e4  # dead everywhere
    x = random_input(1, 3, 64, 64, seed=7)

    def input_grad(redirect: bool) -> torch.Tensor:
        set_redirected_relu(model, redirect)
        image = x.clone().requires_grad_(True)
        with capture(model, ["mixed3a"]) as acts:
            run_to_layers(model, image, acts)
        assert acts["mixed3a"][:, channel].eq(0).all()
        # the loss to *minimise* (the render loop negates the objective): push the unit up
        (-acts["mixed3a"][:, channel].mean()).backward()
        return image.grad

    assert torch.equal(input_grad(False), torch.zeros_like(x))
    assert input_grad(True).abs().sum() > 0
