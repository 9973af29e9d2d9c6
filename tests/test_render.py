"""Tests for lucent_core.render: result structure, exact repeatability, the model left unchanged
(also after failures and Ctrl-C), NaN detection, argument checks, devices and dtypes,
preprocessing, transforms, the optimiser factory and the progress bar."""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lucent_core import Preprocessing, RenderResult, frozen, param, render_vis
from lucent_core.preprocessing import preprocessing_of
from lucent_core.models.inceptionv1 import LocalResponseNorm, PaddedMaxPool2d
from lucent_core.relu import RedirectedReLU
from lucent_core.objectives import Objective, channel, direction
from lucent_core.render import _build_param, _build_transforms
from lucent_core.transforms import RandomAffine


# --- tiny models -----------------------------------------------------------------------------

class Recorder(nn.Module):
    """Identity that records what it sees: the input, its size and dtype, and its own mode."""

    def __init__(self):
        super().__init__()
        self.inputs: list[torch.Tensor] = []
        self.modes: list[bool] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        self.modes.append(self.training)
        return x

    @property
    def sizes(self) -> list[tuple[int, int]]:
        return [tuple(x.shape[-2:]) for x in self.inputs]


class InterruptAt(nn.Module):
    """Raises KeyboardInterrupt on its ``k``-th call."""

    def __init__(self, k: int):
        super().__init__()
        self.k, self.calls = k, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.k:
            raise KeyboardInterrupt
        return x


def make_net(recorder: nn.Module | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        rec=recorder if recorder is not None else Recorder(),
        conv=nn.Conv2d(3, 4, 3, padding=1),
        bn=nn.BatchNorm2d(4),
        relu=nn.ReLU(),
        head=nn.Conv2d(4, 2, 1),
    ))


def all_hooks(model: nn.Module) -> list:
    return [h for m in model.modules() for h in (*m._forward_hooks.values(),
                                                  *m._forward_pre_hooks.values())]


def counted(obj: Objective, at: int, exc: BaseException) -> Objective:
    """``obj``, except that its ``at``-th evaluation raises ``exc``."""
    calls = [0]

    def fn(acts):
        calls[0] += 1
        if calls[0] == at:
            raise exc
        return obj(acts)
    return Objective(fn, obj.layers, "counted")


def image_factory(w: int = 16, h: int | None = None, batch: int = 1):
    return lambda: param.image(w, h, batch=batch)


def sgd0(params):
    return torch.optim.SGD(params, lr=0.0)


def quick(model, obj="conv:1", **kwargs):
    kwargs.setdefault("param_f", image_factory())
    kwargs.setdefault("transforms", [])
    kwargs.setdefault("thresholds", (3,))
    kwargs.setdefault("progress", False)
    kwargs.setdefault("seed", 0)
    return render_vis(model, obj, **kwargs)


# --- result structure -------------------------------------------------------------------------

def test_result_structure():
    result = quick(make_net(), channel("conv", 1), param_f=image_factory(16, batch=2),
                   thresholds=(5, 1, 3))
    assert isinstance(result, RenderResult)
    assert result.thresholds == [1, 3, 5]
    assert len(result.images) == 3
    for img in result.images:
        assert isinstance(img, np.ndarray)
        assert img.shape == (2, 16, 16, 3) and img.dtype == np.float32
        assert img.min() >= 0.0 and img.max() <= 1.0
    assert len(result.history) == 5 and all(isinstance(v, float) for v in result.history)
    assert result.objective == "channel('conv', 1)"
    assert result.interrupted is False
    assert result.image is result.images[-1]
    # the last image is the parameterisation's final state
    with torch.no_grad():
        final = result.param().permute(0, 2, 3, 1).numpy()
    assert np.array_equal(result.image, final)
    # the images really are snapshots taken at different steps
    assert not np.array_equal(result.images[0], result.images[2])


def test_history_is_objective_before_each_step():
    torch.manual_seed(0)
    p = param.image(16)
    with torch.no_grad():
        start = p().clone()
    model = make_net().eval()
    result = quick(model, channel("head", 0), param_f=p, thresholds=(4,))
    with torch.no_grad():
        expected = model(start)[:, 0].mean().item()
    assert result.history[0] == pytest.approx(expected, rel=1e-6)
    assert result.history[-1] > result.history[0]


def test_non_square_param():
    result = quick(make_net(), param_f=param.image(48, 32), thresholds=(2,))
    assert result.image.shape == (1, 32, 48, 3)


def test_duplicate_and_integer_thresholds():
    assert quick(make_net(), thresholds=(2, 2, 1)).thresholds == [1, 2]
    assert quick(make_net(), thresholds=2).thresholds == [2]
    assert quick(make_net(), thresholds=[np.int64(2)]).thresholds == [2]
    assert quick(make_net(), thresholds=np.int64(2)).thresholds == [2]


def test_default_param_is_128px():
    result = render_vis(make_net(), "conv:0", transforms=[], thresholds=(1,), progress=False,
                        seed=0)
    assert result.image.shape == (1, 128, 128, 3)


def test_string_objective():
    result = quick(make_net(), "head:1")
    assert result.objective == "channel('head', 1)"


# --- repeatability -----------------------------------------------------------------------------

def seeded_render(seed, model=None):
    model = make_net() if model is None else model
    return render_vis(model, channel("head", 1), image_factory(24), transforms=None,
                      thresholds=(2, 4), progress=False, seed=seed)


def test_same_seed_is_exactly_repeatable():
    torch.manual_seed(123)
    a = seeded_render(0)
    torch.manual_seed(456)           # the caller's global state does not matter
    b = seeded_render(0)
    assert a.history == b.history
    for x, y in zip(a.images, b.images):
        assert np.array_equal(x, y)


def test_different_seeds_differ():
    a, b = seeded_render(0), seeded_render(1)
    assert a.history != b.history
    assert not np.array_equal(a.image, b.image)


def test_seeded_render_keeps_caller_rng_state():
    model = make_net()                # (make_net seeds the global RNG itself)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    seeded_render(0, model)
    assert torch.equal(torch.get_rng_state(), state)
    # and the next draw is what it would have been without the render
    after = torch.rand(3)
    torch.set_rng_state(state)
    assert torch.equal(torch.rand(3), after)


# --- model left unchanged -----------------------------------------------------------------------

def model_with_mixed_state():
    rec = Recorder()
    model = make_net(rec).train()
    model.conv.weight.requires_grad_(False)          # a mix of flags
    model.head.eval()                                 # a submodule with its own mode
    snapshot = {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "flags": {n: p.requires_grad for n, p in model.named_parameters()},
        "modes": {n: m.training for n, m in model.named_modules()},
    }
    assert snapshot["flags"]["conv.weight"] is False and snapshot["flags"]["conv.bias"] is True
    return model, rec, snapshot


def assert_unchanged(model, snapshot):
    for key, value in model.state_dict().items():   # weights and BatchNorm statistics
        assert torch.equal(value, snapshot["state"][key]), key
    assert {n: p.requires_grad for n, p in model.named_parameters()} == snapshot["flags"]
    assert {n: m.training for n, m in model.named_modules()} == snapshot["modes"]
    assert all(p.grad is None for p in model.parameters())
    assert all_hooks(model) == []


def test_model_unchanged_after_render():
    model, rec, snapshot = model_with_mixed_state()
    quick(model, channel("head", 0), thresholds=(3,))
    assert rec.modes == [False, False, False]        # eval during the render
    assert_unchanged(model, snapshot)
    assert model.training and model.bn.training and not model.head.training


def test_model_unchanged_after_failing_render():
    model, rec, snapshot = model_with_mixed_state()
    failing = counted(channel("head", 0), 2, RuntimeError("objective failed"))
    with pytest.raises(RuntimeError, match="objective failed"):
        quick(model, failing, thresholds=(5,))
    assert rec.modes == [False, False]
    assert_unchanged(model, snapshot)


def test_model_unchanged_after_keyboard_interrupt():
    model, _, snapshot = model_with_mixed_state()
    result = quick(model, counted(channel("head", 0), 3, KeyboardInterrupt()), thresholds=(5,))
    assert result.interrupted
    assert_unchanged(model, snapshot)


def test_frozen_restores_modes_and_flags():
    model, _, snapshot = model_with_mixed_state()
    with frozen(model):
        assert not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
    assert_unchanged(model, snapshot)
    with pytest.raises(KeyboardInterrupt):
        with frozen(model):
            raise KeyboardInterrupt
    assert_unchanged(model, snapshot)


# --- Ctrl-C -----------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [2, 4])
def test_interrupt_in_objective_returns_partial_result(k):
    obj = channel("head", 1)
    result = quick(make_net(), counted(obj, k, KeyboardInterrupt()), thresholds=(10,))
    assert result.interrupted is True
    assert len(result.history) == k - 1
    assert result.thresholds == [k - 1]
    assert len(result.images) == 1
    # the image is exactly where a k-1 step render gets to
    reference = quick(make_net(), obj, thresholds=(k - 1,))
    assert np.array_equal(result.image, reference.image)
    assert result.history == reference.history


def test_interrupt_in_model_module():
    interrupt = InterruptAt(3)
    model = make_net(interrupt)
    result = quick(model, channel("head", 0), thresholds=(10,))
    assert interrupt.calls == 3
    assert result.interrupted and len(result.history) == 2 and result.thresholds == [2]
    assert len(result.images) == 1
    assert all_hooks(model) == [] and model.training


def test_interrupt_right_after_a_threshold_does_not_duplicate_images():
    result = quick(make_net(), counted(channel("head", 1), 3, KeyboardInterrupt()),
                   thresholds=(2, 10))
    assert result.thresholds == [2] and len(result.images) == 1 and len(result.history) == 2


def test_interrupt_before_first_step_has_no_image():
    result = quick(make_net(), counted(channel("head", 1), 1, KeyboardInterrupt()))
    assert result.interrupted and result.images == [] and result.history == []
    with pytest.raises(ValueError, match="interrupted"):
        _ = result.image


# --- non-finite objectives ---------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_objective_names_the_step(bad):
    obj = Objective(lambda acts: acts["conv"].mean() * bad, ["conv"], "bad")
    with pytest.raises(FloatingPointError, match="step 1"):
        quick(make_net(), obj)


def test_non_finite_later_step_is_named():
    calls = [0]

    def fn(acts):
        calls[0] += 1
        value = acts["conv"].mean()
        return value * float("nan") if calls[0] >= 3 else value
    model = make_net()
    with pytest.raises(FloatingPointError, match="at step 3"):
        quick(model, Objective(fn, ["conv"], "late nan"), thresholds=(5,))
    assert all_hooks(model) == []


def test_an_update_that_breaks_the_image_is_an_error_not_a_nan_picture():
    # The objective of step 1 is finite; the update after it makes the image NaN.
    with pytest.raises(FloatingPointError, match="update of step 1"):
        quick(make_net(), thresholds=(1,),
              optimizer=lambda params: torch.optim.Adam(params, lr=float("inf")))


# --- argument checks ----------------------------------------------------------------------------

def frozen_param():
    p = param.image(8)
    return p.requires_grad_(False)


def with_preprocessing(preprocessing):
    model = make_net()
    model.preprocessing = preprocessing
    return model


NOT_A_PREPROCESSING = [{"mean": (0.5,)}, (0, 255), lambda x: x]


@pytest.mark.parametrize("call, error, name", [
    (lambda: quick(make_net(), thresholds=(0,)), ValueError, "thresholds"),
    (lambda: quick(make_net(), thresholds=(-1,)), ValueError, "thresholds"),
    (lambda: quick(make_net(), thresholds=(2.5,)), TypeError, "thresholds"),
    (lambda: quick(make_net(), thresholds=(4, 2.5)), TypeError, "thresholds"),
    (lambda: quick(make_net(), thresholds=("10",)), TypeError, "thresholds"),
    (lambda: quick(make_net(), thresholds="10"), TypeError, "thresholds"),
    (lambda: quick(make_net(), thresholds=(True,)), TypeError, "thresholds"),
    (lambda: quick(make_net(), thresholds=()), ValueError, "thresholds"),
    (lambda: quick(make_net(), thresholds=[]), ValueError, "thresholds"),
    (lambda: quick(make_net(), thresholds=0), ValueError, "thresholds"),
    (lambda: quick(make_net(), thresholds=(4, 0)), ValueError, "thresholds"),
    (lambda: quick(make_net(), thresholds=None), TypeError, "thresholds"),
    (lambda: render_vis("vgg", "0:1", progress=False), TypeError, "model"),
    (lambda: quick(make_net(), param_f=frozen_param()), ValueError, "param_f"),
    (lambda: quick(make_net(), param_f=param.image(16).to("meta")), ValueError, "param_f"),
    (lambda: quick(make_net(), param_f=lambda: torch.zeros(1, 3, 8, 8)), TypeError, "param_f"),
    (lambda: quick(make_net(), param_f=5), TypeError, "param_f"),
    (lambda: render_vis(nn.Sequential(nn.Conv2d(3, 2, 1)), "0:0", transforms=[],  # not composited
                        param_f=lambda: param.image_rgba(16), thresholds=(2,), progress=False),
     ValueError, "param_f"),
    (lambda: quick(make_net(), transforms=5), TypeError, "transforms"),
    (lambda: quick(make_net(), optimizer=torch.optim.Adam([torch.zeros(1, requires_grad=True)])),
     TypeError, "optimizer"),
    (lambda: quick(make_net(), optimizer="adam"), TypeError, "optimizer"),
    (lambda: quick(make_net(), optimizer=lambda params: 3), TypeError, "optimizer"),
    (lambda: quick(make_net(), compile="no"), TypeError, "compile"),
    (lambda: quick(make_net(), redirected_relu="no"), TypeError, "redirected_relu"),
    (lambda: quick(make_net(), channels_last=2), TypeError, "channels_last"),
    (lambda: quick(make_net(), progress=None), TypeError, "progress"),
    (lambda: quick(make_net(), seed=1.5), TypeError, "seed"),
    (lambda: quick(make_net(), seed="abc"), TypeError, "seed"),
    (lambda: quick(make_net(), autocast=torch.float64), ValueError, "autocast"),
    *[(lambda bad=bad: quick(with_preprocessing(bad)), TypeError, "preprocessing")
      for bad in NOT_A_PREPROCESSING],
])
def test_render_vis_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_objective_must_be_scalar():
    obj = Objective(lambda acts: acts["conv"].mean((2, 3)).sum(1), ["conv"], "vector")
    model = make_net()
    with pytest.raises(ValueError, match=r"objective\(acts\) must have shape \(\), got \(1,\)"):
        quick(model, obj)
    assert all_hooks(model) == []


# --- devices and dtypes ----------------------------------------------------------------------

def test_param_factory_is_built_on_model_device():
    built = _build_param(image_factory(8), torch.device("meta"))
    assert {p.device.type for p in built.parameters()} == {"meta"}
    assert {b.device.type for b in built.buffers()} == {"meta"}
    calls = []

    def factory():
        calls.append(1)
        return param.image(8)
    result = quick(make_net(), param_f=factory)
    assert calls == [1]
    assert {p.device.type for p in result.param.parameters()} == {"cpu"}


def test_float64_model():
    rec = Recorder()
    model = make_net(rec).double()
    result = quick(model, channel("head", 0), thresholds=(3,))
    assert {x.dtype for x in rec.inputs} == {torch.float64}
    assert np.isfinite(result.history).all() and result.history[-1] > result.history[0]
    assert result.image.dtype == np.float32


# --- preprocessing --------------------------------------------------------------------------

def fixed_image(w=16, h=12):
    torch.manual_seed(0)
    p = param.image(w, h, sd=0.5)
    with torch.no_grad():
        return p, p().clone()


def test_model_preprocessing_is_used():
    p, img = fixed_image()
    rec = Recorder()
    model = make_net(rec)
    model.preprocessing = Preprocessing(value_range=(-117.0, 138.0), channel_order="BGR",
                                        mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 8.0),
                                        input_size=(10, 20))
    quick(model, param_f=p, optimizer=sgd0, thresholds=(2,))
    # by hand: resize (antialiased: the height shrinks), map [0, 1] -> [-117, 138],
    # RGB -> BGR, subtract mean, divide by std
    x = F.interpolate(img, size=(10, 20), mode="bilinear", align_corners=False, antialias=True)
    x = x * 255.0 - 117.0
    x = torch.stack([x[:, 2], x[:, 1], x[:, 0]], 1)
    x = (x - torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)) / torch.tensor(
        [2.0, 4.0, 8.0]).view(1, 3, 1, 1)
    assert rec.sizes == [(10, 20), (10, 20)]
    for seen in rec.inputs:
        torch.testing.assert_close(seen, x, rtol=1e-5, atol=1e-4)


def test_value_range_only():
    p, img = fixed_image()
    rec = Recorder()
    model = make_net(rec)
    model.preprocessing = Preprocessing(value_range=(0, 255))
    quick(model, param_f=p, optimizer=sgd0, thresholds=(1,))
    torch.testing.assert_close(rec.inputs[0], img * 255)
    assert rec.inputs[0].max() > 1.5   # not in [0, 1] any more


def test_explicit_preprocess_overrides_model_preprocessing():
    p, img = fixed_image()
    rec = Recorder()
    model = make_net(rec)
    model.preprocessing = Preprocessing(value_range=(0, 255), input_size=(30, 30))
    quick(model, param_f=p, optimizer=sgd0, thresholds=(1,),
          preprocess=Preprocessing(channel_order="BGR"))
    assert torch.equal(rec.inputs[0], img.flip(1))


def test_no_preprocessing_means_rgb_in_unit_range():
    p, img = fixed_image()
    rec = Recorder()
    quick(make_net(rec), param_f=p, optimizer=sgd0, thresholds=(1,))
    assert torch.equal(rec.inputs[0], img)


def test_preprocessing_exact_values():
    rgb = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).expand(2, 3, 2, 3).contiguous()
    assert torch.equal(Preprocessing()(rgb), rgb)
    assert Preprocessing(value_range=(-1, 1))(rgb)[0, :, 0, 0].tolist() == [-1.0, 0.0, 1.0]
    assert Preprocessing(value_range=(0, 255))(rgb)[1, :, 1, 2].tolist() == [0.0, 127.5, 255.0]
    assert Preprocessing(channel_order="BGR")(rgb)[0, :, 0, 0].tolist() == [1.0, 0.5, 0.0]
    # mean and std are in the model's channel order (after the flip) and value range
    bgr = Preprocessing(value_range=(0, 255), channel_order="BGR", mean=(100.0, 50.0, 0.0),
                        std=(5.0, 2.5, 1.0))(rgb)
    assert bgr[0, :, 0, 0].tolist() == [31.0, 31.0, 0.0]
    imagenet = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    out = imagenet(torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
    assert out.abs().max().item() < 1e-6
    resized = Preprocessing(input_size=(4, 5))(rgb)
    assert resized.shape == (2, 3, 4, 5)
    assert resized[0, :, 3, 4].tolist() == [0.0, 0.5, 1.0]   # constant planes stay constant
    same = Preprocessing(input_size=(2, 3))(rgb)
    assert torch.equal(same, rgb)


def test_preprocessing_float64():
    x = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
    out = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.1, 0.1, 0.1))(x)
    assert out.dtype == torch.float64 and out.abs().max().item() == 0.0


@pytest.mark.parametrize("call, error, name", [
    (lambda: Preprocessing(channel_order=order), ValueError, "channel_order")
    for order in ["rgb", "GBR", "", "BGRA"]
])
def test_preprocessing_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda bad=bad: preprocessing_of(with_preprocessing(bad)), TypeError, "preprocessing")
    for bad in NOT_A_PREPROCESSING
])
def test_preprocessing_of_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_preprocessing_of_plain_model_is_identity():
    assert preprocessing_of(nn.Linear(1, 1)) == Preprocessing()


# --- transforms -------------------------------------------------------------------------------

def test_transforms_none_uses_the_fused_standard_affine():
    rec = Recorder()
    quick(make_net(rec), param_f=image_factory(32), transforms=None, thresholds=(6,))
    # pad 12 on each side, jitters of 8 and 4: a fixed 44 px, the scale zooms about the centre
    assert rec.sizes == [(44, 44)] * 6
    default = _build_transforms(None)
    assert isinstance(default, RandomAffine)
    torch.manual_seed(0)
    draws = default.sample(torch.rand(8, 3, 32, 32))["draws"]
    assert len({tuple(row.tolist()) for row in draws}) > 1  # a draw per image, not per batch


def test_empty_transforms_means_none():
    p, img = fixed_image(20, 14)
    rec = Recorder()
    quick(make_net(rec), param_f=p, transforms=[], optimizer=sgd0, thresholds=(3,))
    assert rec.sizes == [(14, 20)] * 3
    for seen in rec.inputs:
        assert torch.equal(seen, img)


def test_list_of_transforms_is_composed_in_order():
    p, img = fixed_image()
    rec = Recorder()
    quick(make_net(rec), param_f=p, optimizer=sgd0, thresholds=(1,),
          transforms=[lambda x: x * 0.5, lambda x: x + 0.25, lambda x: x[..., 1:, :]])
    expected = (img * 0.5 + 0.25)[..., 1:, :]
    torch.testing.assert_close(rec.inputs[0], expected)


def test_single_callable_transform():
    p, img = fixed_image()
    rec = Recorder()
    quick(make_net(rec), param_f=p, optimizer=sgd0, thresholds=(1,), transforms=lambda x: 1 - x)
    torch.testing.assert_close(rec.inputs[0], 1 - img)


# --- optimiser ---------------------------------------------------------------------------------

def test_optimizer_factory_is_used():
    p, img = fixed_image()
    seen = []

    def factory(params):
        params = list(params)
        seen.append(params)
        return torch.optim.SGD(params, lr=0.0)
    result = quick(make_net(), channel("head", 0), param_f=p, optimizer=factory, thresholds=(4,))
    assert len(seen) == 1
    assert {id(t) for t in seen[0]} == {id(t) for t in p.parameters()}
    assert np.array_equal(result.image, img.permute(0, 2, 3, 1).numpy())
    assert len(set(result.history)) == 1      # nothing moved: the same value every step


def test_whole_number_seeds_thresholds_and_0_or_1_flags_are_fine():
    a = quick(make_net(), seed=1.0, progress=0, compile=0, redirected_relu=1, thresholds=3.0)
    assert a.thresholds == [3]
    assert a.settings["compile"] is False and a.settings["seed"] == 1   # recorded as bools
    assert a.settings["redirected_relu"] is False  # a plain nn.ReLU: nothing was redirected
    b = quick(make_net(), seed=torch.tensor(1))
    assert np.array_equal(a.image, quick(make_net(), seed=1).image)
    assert np.array_equal(b.image, a.image)


def test_default_optimizer_moves_the_image():
    p, img = fixed_image()
    result = quick(make_net(), channel("head", 0), param_f=p, thresholds=(4,))
    assert not np.array_equal(result.image, img.permute(0, 2, 3, 1).numpy())


# --- progress bar --------------------------------------------------------------------------

def test_progress_off_is_silent(capsys):
    quick(make_net(), thresholds=(3,), progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_progress_on_writes_a_bar(capsys):
    quick(make_net(), "head:1", thresholds=(3,), progress=True)
    captured = capsys.readouterr()
    assert "channel('head', 1)" in captured.err
    assert "3/3" in captured.err


def test_the_bar_shows_every_steps_objective_on_the_cpu(capsys, monkeypatch):
    import tqdm
    shown = []
    original = tqdm.tqdm.set_postfix
    monkeypatch.setattr(tqdm.tqdm, "set_postfix", lambda bar, *args, **kwargs: (
        shown.append(kwargs["objective"]), original(bar, *args, **kwargs)))
    result = quick(make_net(), "head:1", thresholds=(7,), progress=True)
    assert shown == [f"{value:.4g}" for value in result.history]  # not only at step 1 and 7
    last_line = capsys.readouterr().err.strip().split("\r")[-1]
    assert f"objective={result.history[-1]:.4g}" in last_line


def test_input_pseudo_layer_is_the_rendered_image_and_skips_the_model():
    calls = []

    class Recorder(nn.Module):
        def forward(self, x):
            calls.append(x.shape)
            return x

    seen = []

    def read_input(acts):
        seen.append(acts["input"].detach().clone())
        return -(acts["input"] - 0.8).abs().mean()

    result = render_vis(Recorder(), Objective(read_input, ["input"], "fit 0.8"),
                        param_f=lambda: param.image(12, 10), thresholds=(60,), progress=False,
                        seed=0)
    assert calls == []  # an image-only objective never runs the model
    assert seen[0].shape == (1, 3, 10, 12)  # the image before transforms
    assert result.history[-1] > result.history[0] + 0.1


def test_rgba_images_composited_by_the_alpha_transforms_reach_the_model():
    net = nn.Sequential(nn.Conv2d(3, 2, 1))
    result = render_vis(net, "0:0", param_f=lambda: param.image_rgba(16),
                        transforms=param.alpha_transforms(), thresholds=(2,), progress=False)
    assert result.image.shape == (1, 16, 16, 4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_render_reaches_the_float32_objective_within_a_few_percent(dtype):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 5), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2),
                        nn.ReLU(), nn.Conv2d(16, 8, 3), nn.ReLU())
    objective = channel("4", 3)
    finals = []
    for autocast in (None, dtype):
        result = render_vis(net, objective, lambda: param.image(48), thresholds=(64,),
                            progress=False, seed=0, autocast=autocast)
        image = torch.from_numpy(result.image).permute(0, 3, 1, 2)
        finals.append(net[:5](image)[0, 3].mean().item())   # both judged in float32
        assert result.history[-1] > result.history[0]
    assert finals[1] == pytest.approx(finals[0], rel=0.05)


# --- memory layout and torch.compile ----------------------------------------------------------

def test_channels_last_input_by_default_for_conv_models_with_the_same_result():
    rec = Recorder()
    fast = quick(make_net(rec), thresholds=(5,))
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in rec.inputs)
    rec_plain = Recorder()
    plain = quick(make_net(rec_plain), thresholds=(5,), channels_last=False)
    assert all(x.is_contiguous() for x in rec_plain.inputs)
    np.testing.assert_allclose(fast.history, plain.history, rtol=1e-5)
    np.testing.assert_allclose(fast.image, plain.image, atol=1e-5)


def test_channels_last_stays_off_for_models_without_convolutions():
    rec = Recorder()
    net = nn.Sequential(OrderedDict(rec=rec, pool=nn.AdaptiveAvgPool2d(2)))
    quick(net, "pool:1")
    assert rec.inputs and all(x.is_contiguous() for x in rec.inputs)


class Viewing(nn.Module):
    """A model written with .view() on its activations, which a channels-last input breaks."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4 * 14 * 14, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.head(y.view(y.shape[0], -1))


def test_a_view_that_breaks_under_channels_last_names_the_switch():
    with pytest.raises(RuntimeError, match="channels_last=False"):
        quick(Viewing(), "head:0")
    assert len(quick(Viewing(), "head:0", channels_last=False).history) == 3


def test_compiled_renders_of_many_layers_all_stay_compiled():
    # one compiled graph per layer set: dynamo's default limit (8 per function) would send
    # the ninth layer of an atlas back to eager mode
    from torch._dynamo.utils import counters
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Sequential(nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1),
                                        nn.ReLU()) for i in range(12)])
    before = counters["stats"]["unique_graphs"]
    for i in range(12):
        quick(net, f"{i}:0", param_f=image_factory(16), thresholds=(1,), compile=True)
    assert counters["stats"]["unique_graphs"] - before >= 12


def test_compiled_forward_gives_the_eager_render():
    eager = quick(make_net(), thresholds=(4,))
    compiled = quick(make_net(), thresholds=(4,), compile=True)
    np.testing.assert_allclose(compiled.history, eager.history, rtol=1e-4)
    np.testing.assert_allclose(compiled.image, eager.image, atol=1e-4)
    again = quick(make_net(), thresholds=(4,), compile=True)  # served from the compile cache
    np.testing.assert_allclose(again.history, compiled.history, rtol=1e-6)


def test_compiled_forward_with_redirected_relus_gives_the_eager_render():
    """The zoo's layers (redirected ReLU, banded LRN, padded max pool) render the same compiled.

    (That the redirected backward compiles without graph breaks, whose absence once made
    InceptionV1's compiled render fail, is tested in test_models_relu.py.)
    """
    def zoo_like():
        torch.manual_seed(0)
        net = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(3, 8, 3, padding=1), relu=RedirectedReLU(redirect=True),
            lrn=LocalResponseNorm(size=5, alpha=5e-3, beta=0.75, k=1.0),
            pool=PaddedMaxPool2d(), head=nn.Conv2d(8, 4, 1), head_relu=RedirectedReLU(True)))
        with torch.no_grad():
            net.head.bias[2] = -1.0      # unit 2 starts dead: only the redirect reaches it
        return net

    options = {"param_f": image_factory(24, batch=2), "thresholds": (1, 10)}
    eager = quick(zoo_like(), "head_relu:2", **options)
    compiled = quick(zoo_like(), "head_relu:2", compile=True, **options)
    assert max(eager.history) == 0.0, "the unit is dead throughout"
    assert np.abs(eager.images[1] - eager.images[0]).max() > 1e-3, \
        "only the redirected gradient can move the image of a dead unit"
    np.testing.assert_allclose(compiled.history, eager.history, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(compiled.image, eager.image, atol=1e-4)


def test_cpu_renders_hand_freed_host_memory_back_every_32_steps(monkeypatch):
    # glibc keeps what the per-step tensors free (a 512-step 128 px VGG16 render grew to
    # 4.7 GB without this); the call itself is glibc's malloc_trim, a no-op elsewhere
    from lucent_core import render as render_module
    calls = []
    monkeypatch.setattr(render_module, "release_freed_host_memory", lambda: calls.append(1))
    quick(make_net(), thresholds=(70,))
    assert len(calls) == 2
    from lucent_core._device import release_freed_host_memory
    release_freed_host_memory()  # callable here, whatever the C library


def test_a_render_after_inference_mode_use_of_the_preprocessing_works():
    from lucent_core.models import Preprocessing
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    net.preprocessing = Preprocessing(mean=(0.41, 0.42, 0.43), std=(0.21, 0.22, 0.23))
    with torch.inference_mode():  # e.g. a quick prediction first: caches must not keep this
        net(net.preprocessing(torch.rand(1, 3, 16, 16)))
    result = render_vis(net, "1:1", param_f=lambda: param.image(16), thresholds=(2,),
                        progress=False, seed=0)
    assert result.image.shape == (1, 16, 16, 3)
    single = Preprocessing(mean=0.5, std=0.25)   # one number for every channel
    assert single.mean == (0.5,) and torch.equal(single(torch.ones(1, 3, 2, 2)),
                                                  torch.full((1, 3, 2, 2), 2.0))


def test_an_objective_made_under_inference_mode_renders():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with torch.inference_mode():  # its direction vector is an inference tensor
        objective = direction("1", torch.ones(4))
    result = render_vis(net, objective, param_f=lambda: param.image(16), thresholds=(2,),
                        progress=False, seed=0)
    assert np.isfinite(result.history).all()


def test_an_error_in_the_first_step_shows_no_empty_bar(capsys):
    with pytest.raises(IndexError, match="channel 9 is out of range"):
        quick(make_net(), "head:9", progress=True)
    assert capsys.readouterr().err == ""


# --- memory: what a device has, and a render refused when its images cannot fit ---------------

def test_free_memory_of_the_cpu_is_memavailable_else_the_physical_memory(monkeypatch, tmp_path):
    from lucent_core import _device
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000 kB\nMemFree:  100 kB\nMemAvailable:  2048 kB\n")
    monkeypatch.setattr(_device, "MEMINFO", str(meminfo))
    assert _device.free_memory(torch.device("cpu")) == 2048 * 1024
    monkeypatch.setattr(_device, "MEMINFO", str(tmp_path / "no such file"))
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert _device.free_memory(torch.device("cpu")) == physical
    assert _device.free_memory(torch.device("meta")) is None  # unknown: never refused


def test_free_memory_of_a_gpu_is_what_cuda_reports(monkeypatch):
    from lucent_core import _device
    asked = []
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda device=None: asked.append(device) or (3 * 2**30, 80 * 2**30))
    assert _device.free_memory(torch.device("cuda", 1)) == 3 * 2**30
    assert asked == [torch.device("cuda", 1)]
    with pytest.raises(MemoryError, match=r"^size needs about 4.3 GB, but cuda:1 has 3.2 GB free"):
        _device.check_memory("size", 4 * 2**30, torch.device("cuda", 1))
    _device.check_memory("size", 2 * 2**30, torch.device("cuda", 1))  # fits: nothing happens


def test_images_too_large_for_the_models_gpu_are_refused_before_they_move(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**20, 2**30))
    with pytest.raises(MemoryError, match=r"param_f .* cuda:0"):
        _build_param(image_factory(256, batch=4), torch.device("cuda", 0))
