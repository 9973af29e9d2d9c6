"""Tests for lucent_core.models.clip: CLIP models (random weights, offline) and objectives."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("open_clip",
                    reason="CLIP tests need open_clip: pip install 'lucent_core[clip]'")

from lucent_core import render_vis  # noqa: E402
from lucent_core.models import create_model, get_config  # noqa: E402
from lucent_core.models.clip import CLIP_MEAN, CLIP_STD, CLIPVisual, clip_model  # noqa: E402
from lucent_core.recipes.clip import (clip_image, clip_text, render_prompts,  # noqa: E402
                                      text_direction, text_direction_vector, vit_channel)
from lucent_core.objectives import channel  # noqa: E402
from lucent_core.param import image  # noqa: E402

SIZE = 32  # parameterised image; preprocessing resizes it to the model's fixed input size


def _random(name: str) -> CLIPVisual:
    torch.manual_seed(0)
    return create_model(name, pretrained=False)


@pytest.fixture(scope="module")
def rn50() -> CLIPVisual:
    return _random("clip_rn50")


@pytest.fixture(scope="module")
def rn50x4() -> CLIPVisual:
    return _random("clip_rn50x4")


@pytest.fixture(scope="module")
def vit() -> CLIPVisual:
    return _random("clip_vit_b32")


def _render(model, objective, steps=3, batch=1, seed=0):
    return render_vis(model, objective, param_f=lambda: image(SIZE, batch=batch),
                      transforms=[], thresholds=(steps,), seed=seed, progress=False)


def _similarity(model: CLIPVisual, pictures: np.ndarray, prompt: str) -> float:
    x = torch.from_numpy(pictures).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        img = F.normalize(model(model.preprocessing(x)), dim=1)
        txt = F.normalize(model.encode_text([prompt]), dim=1)
    return (img @ txt.T).mean().item()


@pytest.mark.parametrize("fixture, size, towers, embed", [
    ("rn50", 224, ["visual.layer1", "visual.layer4", "visual.layer4.2", "visual.attnpool"], 1024),
    ("rn50x4", 288, ["visual.layer1", "visual.layer4", "visual.layer3.9"], 640),
    ("vit", 224, ["visual.transformer.resblocks.0", "visual.transformer.resblocks.11"], 512),
])
def test_entries_build_with_layers_and_fixed_size(request, fixture, size, towers, embed):
    model = request.getfixturevalue(fixture)
    names = dict(model.named_modules())
    for layer in towers + ["image_embedding"]:
        assert layer in names, layer
    assert not any(n.startswith("clip.visual") for n in names)  # image tower listed once
    # size taken from open_clip, equal to the built tower's own
    assert model.config.input_size == (size, size) == model.image_size
    assert model.preprocessing.input_size == (size, size)
    assert model.preprocessing.mean == CLIP_MEAN and model.preprocessing.std == CLIP_STD
    assert model.config.layers["image_embedding"] == embed
    assert set(model.config.layers) <= set(names)
    with torch.no_grad():
        out = model(model.preprocessing(torch.rand(1, 3, SIZE, SIZE)))
    assert out.shape == (1, embed)
    assert not model.training


def test_config_layer_widths_match_activations(rn50):
    from lucent_core.activations import image_activations
    for layer, width in rn50.config.layers.items():
        assert image_activations(rn50, layer, torch.rand(3, SIZE, SIZE)).shape[1] == width


def test_channel_renders_on_resnet_blocks(rn50x4):
    objective = channel("visual.layer3.2", 5)
    result = _render(rn50x4, objective, steps=2)
    assert result.image.shape == (1, SIZE, SIZE, 3)
    assert result.history[-1] > result.history[0]


def test_vit_channel_renders(vit):
    result = _render(vit, vit_channel(5, 7, token="cls"), steps=3)
    assert result.history[-1] > result.history[0]
    # the layout detector agrees with the model's own flag
    same = _render(vit, vit_channel(5, 7, token="cls", batch_first=vit.batch_first), steps=3)
    assert same.history == pytest.approx(result.history, rel=1e-5)


def test_clip_text_raises_similarity_and_negative_lowers_it(vit):
    # random text towers embed similar prompts almost identically ("a photo of a dog" vs
    # "... cat": cosine 0.96), so compare renders with and without the negative prompt
    plain = _render(vit, clip_text(vit, "a photo of a dog"), steps=6)
    # history[0] is the cosine similarity of the initial image (no transforms)
    assert plain.history[-1] > plain.history[0] + 0.02
    assert _similarity(vit, plain.image, "a photo of a dog") > plain.history[0] + 0.02
    away = _render(vit, clip_text(vit, "a photo of a dog", negative="a photo of a cat"),
                   steps=6)
    assert _similarity(vit, away.image, "a photo of a cat") < \
        _similarity(vit, plain.image, "a photo of a cat") - 0.02


def test_text_embedded_once_per_render(vit, monkeypatch):
    calls = []
    original = vit.clip.encode_text

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)
    monkeypatch.setattr(vit.clip, "encode_text", counting)
    objective = clip_text(vit, ["a red apple", "a tree"], weights=[1.0, 0.5], negative="a car")
    built = len(calls)
    assert built >= 1
    _render(vit, objective, steps=3)
    assert len(calls) == built  # no text encoding during the 3 steps


def test_clip_image_objective_matches_reference(rn50):
    reference = torch.rand(3, 40, 40)
    objective = clip_image(rn50, reference)
    with torch.no_grad():
        emb = rn50(rn50.preprocessing(reference[None]))
    assert objective({"image_embedding": emb}).item() == pytest.approx(1.0, abs=1e-5)
    result = _render(rn50, objective, steps=3)
    assert result.history[-1] > result.history[0]


@pytest.mark.parametrize("batch_first", [True, False, None])
def test_vit_channel_reads_the_intended_axis(batch_first):
    batch, tokens, width = 2, 5, 4
    stream = torch.zeros(batch, tokens, width)      # (B, N, C)
    stream[:, 0, 3] = 10.0                          # class token, channel 3
    stream[:, 1:, 3] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # patch tokens
    stream[1, 2, 3] += 8.0                          # one image, one patch: mean +1 over 2x4
    layout = stream if batch_first in (True, None) else stream.transpose(0, 1).contiguous()
    acts = {"blk": layout, "input": torch.zeros(batch, 3, 8, 8)}
    for shape_known in ([True] if batch_first is None else [batch_first, None]):
        bf = None if shape_known is None else batch_first
        assert vit_channel("blk", 3, "cls", batch_first=bf)(acts).item() == 10.0
        assert vit_channel("blk", 3, "mean", batch_first=bf)(acts).item() == pytest.approx(3.5)
        assert vit_channel("blk", 3, 2, batch_first=bf)(acts).item() == pytest.approx(6.0)
    if batch_first is False:  # reading it with the wrong layout gives something else
        assert vit_channel("blk", 3, "cls", batch_first=True)(acts).item() != 10.0


SQUARE = {"blk": torch.zeros(2, 2, 4), "input": torch.zeros(2, 3, 8, 8)}  # B = N: ambiguous


@pytest.mark.parametrize("call, error, name", [
    (lambda: vit_channel(3, 0, token="first"), ValueError, "token"),
    (lambda: vit_channel(3, 0, token=True), ValueError, "token"),
    (lambda: vit_channel(3, 0.5), TypeError, "unit"),
    (lambda: vit_channel("blk", 0)(SQUARE), ValueError, "batch_first"),
    (lambda: vit_channel("blk", 9, batch_first=True)(SQUARE), IndexError, "channel"),
    (lambda: vit_channel("blk", 0, token=5, batch_first=True)(SQUARE), IndexError, "token"),
])
def test_vit_channel_rejects_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_vit_channel_of_a_block_number_reads_the_input_to_find_the_layout():
    assert vit_channel(4, 0).layers == {"visual.transformer.resblocks.4", "input"}


@pytest.mark.parametrize("call, error, name", [
    (lambda vit: clip_text(torch.nn.Linear(2, 2), "a dog"), TypeError, "model"),
    (lambda vit: clip_text(vit, ["a", "b"], weights=[1.0]), ValueError, "weights"),
    (lambda vit: clip_text(vit, ["a"], weights=[float("nan")]), ValueError, "weights"),
    (lambda vit: clip_text(vit, 5), TypeError, "prompts"),
    (lambda vit: clip_text(vit, []), ValueError, "prompts"),
    (lambda vit: clip_text(vit, "a dog", negative=[""]), TypeError, "negative"),
])
def test_clip_text_rejects_bad_input(vit, call, error, name):
    with pytest.raises(error, match=name):
        call(vit)


@pytest.mark.parametrize("call, error, name", [
    (lambda: clip_image(torch.nn.Linear(2, 2), torch.rand(3, 8, 8)), TypeError, "model"),
    (lambda: clip_model("clip_rn51", pretrained=False), ValueError, "model"),
])
def test_clip_image_and_clip_model_reject_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_missing_open_clip_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    config = get_config("clip_rn50x4")  # the config itself needs no open_clip
    assert config.input_size == (288, 288)
    with pytest.raises(ImportError, match=r"lucent_core\[clip\]"):
        create_model("clip_rn50", pretrained=False)
    with pytest.raises(ImportError, match=r"lucent_core\[clip\]"):
        clip_model("clip_vit_b32", pretrained=True)


def test_pretrained_route_asks_open_clip_for_openai_weights(vit, monkeypatch):
    import open_clip
    seen = {}

    def fake_create_model(name, **kwargs):  # offline stand-in for the download
        seen.update(kwargs, name=name)
        return vit.clip
    monkeypatch.setattr(open_clip, "create_model", fake_create_model)
    model = clip_model("clip_vit_b32")
    assert seen["name"] == "ViT-B-32" and seen["pretrained"] == "openai"
    seen.clear()
    same = create_model("clip_vit_b32")  # the registry takes the same route (pretrained=True)
    assert seen["pretrained"] == "openai" and isinstance(same, CLIPVisual)
    assert seen["force_quick_gelu"] is True  # OpenAI's weights were trained with QuickGELU
    assert isinstance(model, CLIPVisual) and not model.training
    assert model.preprocessing.input_size == (224, 224)
    # the random build uses the same (QuickGELU) architecture
    assert any(type(m).__name__ == "QuickGELU" for m in vit.modules())


@pytest.mark.parametrize("fixture, layer", [("rn50", "visual.layer3"), ("vit", 6)])
def test_text_direction_moves_the_embedding_towards_the_prompt(request, fixture, layer):
    model = request.getfixturevalue(fixture)
    vector = text_direction_vector(model, layer, "a photo of a spider")
    assert vector.shape == ((1024,) if fixture == "rn50" else (768,))
    assert torch.isclose(vector.norm(), torch.tensor(1.0))
    # the direction is the linearisation of the text similarity: maximising it raises that
    # similarity in a short render from grey
    text = clip_text(model, "a photo of a spider")
    objective = text_direction(model, layer, "a photo of a spider")
    result = render_vis(model, objective, param_f=lambda: image(32), transforms=[],
                        thresholds=(4,), progress=False, seed=0)
    assert result.history[-1] > result.history[0]
    with torch.no_grad():
        before = text({"image_embedding": model(model.preprocessing(torch.full((1, 3, 32, 32),
                                                                               0.5)))})
        after = text({"image_embedding": model(model.preprocessing(
            torch.from_numpy(result.image).permute(0, 3, 1, 2)))})
    assert after > before


@pytest.mark.parametrize("call, error, name", [
    (lambda rn50: text_direction_vector(rn50, "image_embedding", "a dog"), ValueError, "layer"),
    (lambda rn50: text_direction_vector(torch.nn.Linear(2, 2), 3, "a dog"), TypeError, "model"),
])
def test_text_direction_vector_rejects_bad_input(rn50, call, error, name):
    with pytest.raises(error, match=name):
        call(rn50)


def test_render_prompts_renders_one_image_per_prompt_with_a_grid(vit):
    prompts = ["a photo of a spider", "a red sports car"]
    result, grid = render_prompts(vit, prompts, size=24, steps=3, progress=False, seed=0,
                                  transforms=[])
    assert result.image.shape == (2, 24, 24, 3)
    assert grid.size[0] > 2 * 24 and grid.size[1] > 24  # two cells plus the label strip
    assert result.history[-1] > result.history[0]


@pytest.mark.parametrize("call, error, name", [
    (lambda vit: render_prompts(vit, [], progress=False), ValueError, "prompts"),
    (lambda vit: render_prompts(torch.nn.Linear(2, 2), ["a cat"]), TypeError, "model"),
    # options that replace each other are an error
    (lambda vit: render_prompts(vit, ["a cat"], steps=3, thresholds=(2,), progress=False),
     ValueError, "thresholds"),
    (lambda vit: render_prompts(vit, ["a cat"], size=24, param_f=lambda: None,
                                progress=False), ValueError, "param_f"),
    (lambda vit: render_prompts(vit, ["a cat"], steps=0, progress=False), ValueError, "steps"),
])
def test_render_prompts_rejects_bad_input(vit, call, error, name):
    with pytest.raises(error, match=name):
        call(vit)


def test_render_prompts_takes_thresholds_instead_of_steps(vit):
    result, _ = render_prompts(vit, ["a cat"], size=16, thresholds=(1, 2), progress=False,
                               transforms=[])
    assert result.thresholds == [1, 2]


def test_the_resnet_towers_relus_can_be_redirected_the_vits_have_none(rn50, vit):
    from lucent_core.relu import RedirectedReLU
    assert not any(type(m) is torch.nn.ReLU for m in rn50.modules())
    assert sum(isinstance(m, RedirectedReLU) for m in rn50.modules()) > 40
    assert not any(isinstance(m, RedirectedReLU) for m in vit.modules())


def test_text_direction_on_a_vit_block_honours_cossim_pow(vit):
    from lucent_core.objectives.catalogue import dot_cossim
    from lucent_core._device import DeviceCopies
    vector = text_direction_vector(vit, 6, "a dog")
    tokens = torch.randn(2, 50, 768)                 # (B, 1 class + 49 patch tokens, C)
    acts = {"visual.transformer.resblocks.6": tokens if vit.batch_first
            else tokens.transpose(0, 1)}
    plain = text_direction(vit, 6, "a dog")(acts)
    torch.testing.assert_close(plain, (tokens[:, 1:] @ vector).mean())
    sharper = text_direction(vit, 6, "a dog", cossim_pow=2.0)(acts)
    expected = dot_cossim(tokens[:, 1:].transpose(1, 2), DeviceCopies(vector), "b", 2.0).mean()
    torch.testing.assert_close(sharper, expected)
    assert not torch.isclose(sharper, plain)


def test_building_clip_keeps_the_applications_logging_settings():
    import logging
    from lucent_core.models.clip import clip_model
    logging.disable(logging.INFO)
    try:
        clip_model("clip_rn50", pretrained=False)
        assert logging.root.manager.disable == logging.INFO
        assert logging.root.filters == []
    finally:
        logging.disable(logging.NOTSET)
