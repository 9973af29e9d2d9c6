"""Tests for lucent_core.hooks: layer names, scoped hooks, early stopping, list_layers and
model_device, on tiny hand-built models whose activations are known exactly."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from lucent_core.hooks import (OUTPUT_LAYER, LayerInfo, UnknownLayerError, capture, frozen,
                               is_transformer_block, list_layers, model_device, resolve_layer,
                               run_to_layers)


# --- tiny deterministic models -------------------------------------------------------------

class Scale(nn.Module):
    """Multiplies by a fixed factor and counts its calls."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * self.factor


class Bomb(nn.Module):
    """Raises if it is ever executed."""

    def forward(self, x):
        raise AssertionError("Bomb executed: the forward pass did not stop early")


class Boom(Exception):
    pass


def nested_model() -> nn.Sequential:
    """stem (x2) -> block.conv (x3) -> block.act (x5) -> head (x7), with counters."""
    return nn.Sequential(OrderedDict(
        stem=Scale(2.0),
        block=nn.Sequential(OrderedDict(conv=Scale(3.0), act=Scale(5.0))),
        head=Scale(7.0),
    ))


def all_hooks(model: nn.Module) -> list:
    return [h for m in model.modules() for h in (*m._forward_hooks.values(),
                                                  *m._forward_pre_hooks.values())]


def conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 4, 3),                    # (4, H-2, W-2)
        relu=nn.ReLU(),
        pool=nn.MaxPool2d(2),                        # (4, (H-2)//2, (W-2)//2)
        block=nn.Sequential(OrderedDict(conv=nn.Conv2d(4, 6, 1), bn=nn.BatchNorm2d(6))),
        gap=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(),
        fc=nn.Linear(6, 5),
    ))


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Conv2d(3, 2, 1)
        self.unused = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.used(x)


# --- names -----------------------------------------------------------------------------------

def test_capture_by_dotted_and_underscore_names_exact_values():
    model = nested_model()
    x = torch.tensor([[1.0, -2.0]])
    with capture(model, ["stem", "block.conv", "block_act", "head"]) as acts:
        out = run_to_layers(model, x, acts)
    assert set(out) == {"stem", "block.conv", "block_act", "head"}
    assert torch.equal(acts["stem"], x * 2)
    assert torch.equal(acts["block.conv"], x * 6)
    assert torch.equal(acts["block_act"], x * 30)
    assert torch.equal(acts["head"], x * 210)


def test_resolve_layer_spellings():
    model = nested_model()
    assert resolve_layer(model, "block.conv") == "block.conv"
    assert resolve_layer(model, "block_conv") == "block.conv"
    assert resolve_layer(model, "block") == "block"
    for alias in ("output", "labels", "logits"):
        assert resolve_layer(model, alias) == OUTPUT_LAYER


def test_same_layer_under_two_spellings_gets_both_keys():
    model = nested_model()
    x = torch.ones(1, 2)
    with capture(model, ["block.conv", "block_conv"]) as acts:
        run_to_layers(model, x, acts)
    assert torch.equal(acts["block.conv"], torch.full((1, 2), 6.0))
    assert torch.equal(acts["block_conv"], torch.full((1, 2), 6.0))


def test_ambiguous_underscore_name_errors():
    # "a.b_c" and "a_b.c" are both spelled "a_b_c" with underscores
    inner_a = nn.Module()
    inner_a.add_module("b_c", nn.Identity())
    inner_b = nn.Module()
    inner_b.add_module("c", nn.Identity())
    model = nn.Module()
    model.add_module("a", inner_a)
    model.add_module("a_b", inner_b)
    with pytest.raises(ValueError, match="ambiguous") as info:
        resolve_layer(model, "a_b_c")
    assert "a.b_c" in str(info.value) and "a_b.c" in str(info.value)
    # the dotted names themselves are fine
    assert resolve_layer(model, "a.b_c") == "a.b_c"
    assert resolve_layer(model, "a_b.c") == "a_b.c"


@pytest.mark.parametrize("alias", ["output", "labels", "logits"])
def test_output_pseudo_layer_is_model_output(alias):
    model = nested_model()
    x = torch.tensor([[1.0, 0.5]])
    with capture(model, [alias]) as acts:
        run_to_layers(model, x, acts)
    assert torch.equal(acts[alias], x * 210)


def test_output_together_with_a_layer():
    model = nested_model()
    x = torch.tensor([[1.0]])
    with capture(model, ["stem", "labels"]) as acts:
        run_to_layers(model, x, acts)
    assert acts["stem"].item() == 2.0 and acts["labels"].item() == 210.0


def test_unknown_layer_lists_close_matches_and_list_layers():
    model = nested_model()
    with pytest.raises(ValueError) as info:
        resolve_layer(model, "block.cnv")
    message = str(info.value)
    assert "'block.cnv'" in message
    assert "block.conv" in message
    assert "list_layers" in message
    with pytest.raises(ValueError, match="unknown layer 'nothing_like_it_at_all'"):
        with capture(model, ["nothing_like_it_at_all"]):
            pass  # pragma: no cover
    assert all_hooks(model) == []


def test_unknown_layer_of_a_small_model_without_close_matches_lists_every_layer():
    model = nested_model()
    with pytest.raises(ValueError) as info:
        resolve_layer(model, "zzzzzzzz")
    message = str(info.value)
    assert "Close matches" not in message
    assert message.endswith("the model's layers: " + ", ".join(n for n, _ in
                                                               model.named_modules() if n))


def test_unknown_layer_of_a_large_model_without_close_matches_mentions_list_layers():
    model = nn.Sequential(*[nn.ReLU() for _ in range(30)])
    with pytest.raises(ValueError) as info:
        resolve_layer(model, "zzzzzzzz")
    assert "Close matches" not in str(info.value) and "'29'" not in str(info.value)
    assert "list_layers" in str(info.value)


@pytest.mark.parametrize("call, error, name", [
    (lambda: resolve_layer(nested_model(), 0), TypeError, "name"),
])
def test_resolve_layer_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_capture_takes_one_name_as_one_layer_not_its_characters():
    model = nn.Sequential(*[nn.Identity() for _ in range(13)])
    with capture(model, "12") as acts:
        run_to_layers(model, torch.ones(1, 2), acts)
    assert list(acts) == ["12"]


# --- hooks are scoped ------------------------------------------------------------------------

def test_hooks_removed_after_block():
    model = nested_model()
    with capture(model, ["stem", "block.act"]) as acts:
        assert len(all_hooks(model)) == 2
        run_to_layers(model, torch.ones(1, 1), acts)
    assert all_hooks(model) == []
    for m in model.modules():
        assert len(m._forward_hooks) == 0


def test_hooks_removed_when_block_raises():
    model = nested_model()
    with pytest.raises(Boom):
        with capture(model, ["stem", "head"]):
            assert len(all_hooks(model)) == 2
            raise Boom
    assert all_hooks(model) == []


def test_hooks_removed_on_keyboard_interrupt():
    model = nested_model()
    with pytest.raises(KeyboardInterrupt):
        with capture(model, ["block_conv"]) as acts:
            run_to_layers(model, torch.ones(1, 1), acts)
            raise KeyboardInterrupt
    assert all_hooks(model) == []


def test_hooks_removed_when_forward_raises_inside_block():
    model = nn.Sequential(OrderedDict(a=Scale(1.0), b=Bomb(), c=Scale(1.0)))
    with pytest.raises(AssertionError, match="Bomb executed"):
        with capture(model, ["c"]) as acts:
            run_to_layers(model, torch.ones(1), acts)
    assert all_hooks(model) == []


def test_activations_refresh_on_every_forward():
    model = nested_model()
    with capture(model, ["block.conv"]) as acts:
        run_to_layers(model, torch.ones(1, 1), acts)
        assert acts["block.conv"].item() == 6.0
        run_to_layers(model, torch.full((1, 1), 2.0), acts)
        assert acts["block.conv"].item() == 12.0


@pytest.mark.parametrize("call, error, name", [
    (lambda: run_to_layers(nested_model(), torch.ones(1), {}), TypeError, "acts"),
])
def test_run_to_layers_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- early stop ------------------------------------------------------------------------------

def test_early_stop_never_runs_later_layers():
    model = nn.Sequential(OrderedDict(stem=Scale(2.0), mid=Scale(3.0), bomb=Bomb()))
    with capture(model, ["stem"]) as acts:
        out = run_to_layers(model, torch.ones(1, 1), acts)
    assert out["stem"].item() == 2.0
    assert model.mid.calls == 0
    # the deepest requested layer decides where to stop
    with capture(model, ["stem", "mid"]) as acts:
        run_to_layers(model, torch.ones(1, 1), acts)
    assert acts["mid"].item() == 6.0
    assert model.mid.calls == 1
    assert all_hooks(model) == []


def test_early_stop_counts_calls():
    model = nested_model()
    with capture(model, ["block.conv"]) as acts:
        for _ in range(3):
            run_to_layers(model, torch.ones(1, 1), acts)
    assert (model.stem.calls, model.block.conv.calls, model.block.act.calls,
            model.head.calls) == (3, 3, 0, 0)


def test_output_runs_everything():
    model = nested_model()
    with capture(model, ["stem", "output"]) as acts:
        run_to_layers(model, torch.ones(1, 1), acts)
    assert (model.stem.calls, model.block.conv.calls, model.block.act.calls,
            model.head.calls) == (1, 1, 1, 1)


def test_stop_early_false_runs_everything():
    model = nested_model()
    with capture(model, ["stem"], stop_early=False) as acts:
        run_to_layers(model, torch.ones(1, 1), acts)
    assert acts["stem"].item() == 2.0
    assert model.head.calls == 1 and model.block.act.calls == 1
    bomb = nn.Sequential(OrderedDict(stem=Scale(2.0), bomb=Bomb()))
    with pytest.raises(AssertionError, match="Bomb executed"):
        with capture(bomb, ["stem"], stop_early=False) as acts:
            run_to_layers(bomb, torch.ones(1, 1), acts)


class SharedAct(nn.Module):
    """Calls one ReLU module twice, like torchvision's BasicBlock reuses ``self.relu``."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()
        self.tail = Scale(10.0)

    def forward(self, x):
        first = self.act(x)               # relu(x)
        second = self.act(3.0 - first)    # relu(3 - relu(x))
        return self.tail(second)


def test_reused_module_activation_does_not_depend_on_stop_early():
    model = SharedAct()
    x = torch.tensor([[1.0, 5.0]])
    results = []
    for layers, stop in ((["act"], True), (["act"], False), (["act", "output"], True)):
        with capture(model, layers, stop_early=stop) as acts:
            run_to_layers(model, x, acts)
        results.append(acts["act"])
    # a module called twice is captured at its first call, however the forward ends
    assert torch.equal(results[0], torch.tensor([[1.0, 5.0]]))
    assert torch.equal(results[1], results[0])
    assert torch.equal(results[2], results[0])


def test_module_never_called_in_forward_is_named():
    model = WithUnused()
    with pytest.raises(RuntimeError, match="never reached") as info:
        with capture(model, ["used", "unused"]) as acts:
            run_to_layers(model, torch.zeros(1, 3, 4, 4), acts)
    assert "unused" in str(info.value)
    assert all_hooks(model) == []


# --- list_layers ---------------------------------------------------------------------------

def test_list_layers_names_types_shapes_non_square():
    model = conv_net()
    layers = list_layers(model, (3, 10, 14))
    assert [(info.name, info.type, info.shape) for info in layers] == [
        ("conv1", "Conv2d", (4, 8, 12)),
        ("relu", "ReLU", (4, 8, 12)),
        ("pool", "MaxPool2d", (4, 4, 6)),
        ("block", "Sequential", (6, 4, 6)),
        ("block.conv", "Conv2d", (6, 4, 6)),
        ("block.bn", "BatchNorm2d", (6, 4, 6)),
        ("gap", "AdaptiveAvgPool2d", (6, 1, 1)),
        ("flat", "Flatten", (6,)),
        ("fc", "Linear", (5,)),
    ]
    assert [info.channels for info in layers] == [4, 4, 4, 6, 6, 6, 6, 6, 5]
    assert all(isinstance(info, LayerInfo) for info in layers)


def test_list_layers_unreachable_module_has_no_shape():
    layers = {info.name: info for info in list_layers(WithUnused(), (3, 5, 7))}
    assert layers["used"].shape == (2, 5, 7)
    assert layers["unused"].shape is None
    assert layers["unused"].channels is None
    assert layers["unused"].type == "Conv2d"


def test_list_layers_leaves_model_unchanged():
    model = conv_net().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    list_layers(model, (3, 8, 8))
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    # eval mode during the pass: BatchNorm running statistics are untouched
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all_hooks(model) == []
    model.eval()
    list_layers(model, (3, 8, 8))
    assert not model.training and not any(m.training for m in model.modules())


def test_list_layers_keeps_per_module_modes():
    model = conv_net().train()
    model.block.bn.eval()  # e.g. frozen BatchNorm while fine-tuning
    list_layers(model, (3, 8, 8))
    assert model.training
    assert not model.block.bn.training


def test_list_layers_hooks_removed_when_forward_fails():
    model = nn.Sequential(OrderedDict(a=Scale(1.0), b=Bomb()))
    with pytest.raises(AssertionError):
        list_layers(model, (1, 2, 2))
    assert all_hooks(model) == []
    assert model.training


def test_list_layers_float64_model():
    model = nn.Sequential(nn.Conv2d(3, 2, 3)).double()
    assert [info.shape for info in list_layers(model, (3, 5, 6))] == [(2, 3, 4)]


def test_layer_info_channels():
    assert LayerInfo("x", "Conv2d", (7, 3, 3)).channels == 7
    assert LayerInfo("x", "Linear", (10,)).channels == 10
    assert LayerInfo("x", "Conv2d", None).channels is None


# --- model_device ----------------------------------------------------------------------------

def test_model_device_float64():
    model = nn.Linear(2, 2).double()
    assert model_device(model) == (torch.device("cpu"), torch.float64)


def test_model_device_without_parameters():
    assert model_device(nn.ReLU()) == (torch.device("cpu"), torch.float32)
    assert model_device(nn.Sequential(nn.Flatten(), nn.Identity())) == (torch.device("cpu"),
                                                                        torch.float32)


def test_model_device_skips_integer_buffers():
    model = nn.Module()
    model.register_buffer("count", torch.zeros(1, dtype=torch.long))
    model.register_buffer("scale", torch.ones(1, dtype=torch.float16))
    assert model_device(model) == (torch.device("cpu"), torch.float16)


def test_model_device_meta():
    model = nn.Linear(2, 2, device="meta")
    assert model_device(model) == (torch.device("meta"), torch.float32)


# --- activations the forward overwrites in place ----------------------------------------------

class InPlaceBlock(nn.Module):
    """A ResNet-style block: an in-place ReLU after ``bn``, ``out += identity`` after ``conv``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.bn = nn.Conv2d(3, 3, 1)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        out = self.relu(self.bn(x))
        identity = out
        out = self.conv(out)
        out += identity
        return self.head(out)


def test_a_layer_overwritten_in_place_later_is_captured_as_its_own_output():
    model = InPlaceBlock()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        true_bn = model.bn(x)
        true_conv = model.conv(torch.relu(true_bn))
    assert (true_bn < 0).any()
    for stop_early in (True, False):
        with capture(model, ["bn", "conv", "head"], stop_early=stop_early) as acts:
            for _ in range(2):  # the first forward notices, later ones copy straight away
                run_to_layers(model, x, acts)
                torch.testing.assert_close(acts["bn"], true_bn)
                torch.testing.assert_close(acts["conv"], true_conv)
            assert acts.copied == {"bn", "conv"}
    # gradients flow through the copies: d(sum of bn)/dx is the bn weights' column sums
    image = x.clone().requires_grad_()
    with capture(model, ["bn", "head"]) as acts:
        run_to_layers(model, image, acts)
        acts["bn"].sum().backward()
    expected = model.bn.weight.sum(0).view(3, 1, 1).expand(3, 6, 6)
    torch.testing.assert_close(image.grad[0], expected)


def test_layers_nobody_overwrites_are_not_copied():
    model = InPlaceBlock()
    with capture(model, ["head"]) as acts:
        run_to_layers(model, torch.randn(1, 3, 6, 6), acts)
    assert acts.copied == set()


def test_calling_the_model_directly_inside_capture_says_how_to_run_it():
    model = nested_model()
    with pytest.raises(BaseException, match=r"run_to_layers\(model, x, acts\).*stop_early=False"):
        with capture(model, ["stem"]):
            model(torch.ones(1, 1))
    with capture(model, ["stem"], stop_early=False) as acts:
        model(torch.ones(1, 1))
    assert "stem" in acts


def test_under_torch_compile_captured_layers_are_copies_too():
    model = InPlaceBlock()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        true_bn = model.bn(x)
    compiled = torch.compile(run_to_layers)
    with torch.no_grad(), capture(model, ["bn", "head"]) as acts:
        compiled(model, x, acts)
        torch.testing.assert_close(acts["bn"], true_bn)


def test_a_model_writing_to_its_input_does_not_spoil_the_rerun():
    class Doubles(nn.Module):
        def forward(self, x):
            return x.mul_(2)

    torch.manual_seed(0)
    model = nn.Sequential(Doubles(), nn.Conv2d(3, 3, 1), nn.ReLU(inplace=True),
                          nn.Conv2d(3, 2, 1))
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        true_1 = model[1](2 * x)
        true_3 = model[3](torch.relu(true_1))
    with torch.no_grad(), capture(model, ["1", "3"]) as acts:
        run_to_layers(model, x.clone(), acts)
        torch.testing.assert_close(acts["1"], true_1)
        torch.testing.assert_close(acts["3"], true_3)


@pytest.mark.parametrize("model, layer", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3)), "2"),
    (nn.Sequential(nn.MaxPool2d(4), nn.Conv2d(3, 2, 1)), "1")])
def test_an_input_too_small_for_the_model_is_named_with_its_size(model, layer):
    with capture(model, [layer]) as acts:
        with pytest.raises(ValueError, match=r"image \(3, 3\) is too small"):
            run_to_layers(model, torch.rand(1, 3, 3, 3), acts)


@pytest.mark.parametrize("call, error, name", [
    (lambda: frozen("x").__enter__(), TypeError, "model"),
])
def test_frozen_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- transformer blocks: their activations are (batch, tokens, channels) --------------------

def tiny_vit() -> nn.Module:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=2,
                                                num_heads=2, hidden_dim=32, mlp_dim=64)


def open_clip_like(name: str) -> type:
    """A class named as open_clip names its blocks, in open_clip's module (not imported)."""
    return type(name, (nn.Identity,), {"__module__": "open_clip.transformer"})


@pytest.mark.parametrize("module, is_block", [
    (nn.TransformerEncoderLayer(8, 2), True),
    (nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2), 1, enable_nested_tensor=False),
     True),
    (nn.MultiheadAttention(8, 2), True),
    (open_clip_like("ResidualAttentionBlock")(), True),
    (open_clip_like("Transformer")(), True),
    (type("Encoder", (nn.Identity,), {"__module__": "my_autoencoder"})(), False),  # same name
    (type("Transformer", (nn.Identity,), {"__module__": "my_models"})(), False),
    (nn.Conv1d(3, 4, 3), False),
    (nn.Linear(3, 4), False),
])
def test_transformer_blocks_are_known_by_their_class(module, is_block):
    assert is_transformer_block(module) is is_block


def test_capture_notes_the_layers_inside_transformer_blocks():
    model = tiny_vit()
    layers = ["encoder.layers.encoder_layer_1", "encoder_layers_encoder_layer_0_mlp_0",
              "encoder.ln", "conv_proj", "heads"]
    with torch.no_grad(), capture(model, layers) as acts:
        run_to_layers(model, torch.zeros(1, 3, 32, 32), acts)
    assert acts.token_major == {"encoder.layers.encoder_layer_1",
                                "encoder_layers_encoder_layer_0_mlp_0", "encoder.ln"}
    assert acts["encoder.layers.encoder_layer_1"].shape == (1, 5, 32)  # 4 patches + class


def test_capture_of_convolutions_notes_no_token_major_layer():
    model = nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU())
    with capture(model, ["0", "1"]) as acts:
        run_to_layers(model, torch.zeros(1, 3, 8), acts)
    assert acts.token_major == set()


@pytest.mark.parametrize("name, closest", [
    ("encoder_layer_1", "encoder.layers.encoder_layer_1"),  # the block's own name, unprefixed
    ("ln", "encoder.ln"),
    ("encoder.layers.encoder_layer1", "encoder.layers.encoder_layer_1"),
    ("encoder_layers_encoder_layer1", "encoder_layers_encoder_layer_1"),  # spelt as given
])
def test_an_unknown_layer_lists_the_closest_layers_first_each_once(name, closest):
    with pytest.raises(UnknownLayerError) as info:
        resolve_layer(tiny_vit(), name)
    matches = info.value.close_matches
    assert matches[0] == closest, matches
    assert len({m.replace(".", "_") for m in matches}) == len(matches)  # no layer twice
    assert f"Close matches: {closest}" in str(info.value)
    assert "list_layers(model)" in str(info.value)


def test_atlas_and_examples_refuse_transformer_layers_whose_units_would_be_tokens(tmp_path):
    from torchvision.models import VisionTransformer

    from lucent_core import atlas
    from lucent_core.preprocessing import Preprocessing
    from lucent_core.units import layer_shapes
    vit = VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2,
                            hidden_dim=32, mlp_dim=64)
    layer = "encoder.layers.encoder_layer_1"
    with pytest.raises(ValueError, match="transformer block.*vit_channel"):
        layer_shapes(vit, [layer], 32, Preprocessing())
    with pytest.raises(ValueError, match="transformer block"):
        atlas.render_atlas(vit, tmp_path / "a", layer, steps=2, size=32, progress=False)
    assert layer_shapes(vit, ["conv_proj"], 32, Preprocessing()) == {"conv_proj": (32, 2, 2)}
