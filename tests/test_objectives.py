"""Tests for lucent_core.objectives: exact values on hand-made activations and tiny fixed-weight
models, the objective algebra and its names, errors, and "rendering improves the objective"
for every objective in the catalogue."""

from __future__ import annotations

import itertools
import math
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from lucent_core import param, render_vis
from lucent_core.hooks import capture, run_to_layers
from lucent_core.objectives import (Objective, as_objective, batch_channels, channel, class_logit,
                                    deepdream, direction, direction_neuron, diversity, neuron,
                                    wrap_objective)


def arange_acts(*shape: int) -> torch.Tensor:
    return torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape)


# (B=3, C=2, H=3, W=5): value = 30 * b + 15 * c + 5 * row + col
ACTS = {"conv": arange_acts(3, 2, 3, 5)}


def value(obj: Objective, acts=None) -> float:
    return obj(ACTS if acts is None else acts).item()


# --- neuron ----------------------------------------------------------------------------------

def test_neuron_centre_on_non_square_map_is_column_x_row_y():
    acts = {"conv": arange_acts(1, 2, 3, 5)}
    # H=3, W=5: centre is x (column) = 5 // 2 = 2, y (row) = 3 // 2 = 1
    assert value(neuron("conv", 1), acts) == 15 + 5 * 1 + 2
    assert value(neuron("conv", 0), acts) == 7.0


def test_neuron_explicit_position():
    acts = {"conv": arange_acts(1, 2, 3, 5)}
    assert value(neuron("conv", 1, x=4, y=0), acts) == 15 + 4     # x up to W-1=4 is valid
    assert value(neuron("conv", 1, x=0, y=2), acts) == 15 + 10
    assert value(neuron("conv", 0, x=3), acts) == 5 + 3             # y defaults to the centre row
    assert value(neuron("conv", 0, y=0), acts) == 2                 # x: the centre column


def test_neuron_batch_and_negative_batch():
    assert value(neuron("conv", 1)) == 15 + 7 + 30                  # mean of 22, 52, 82
    assert value(neuron("conv", 1, batch=0)) == 22
    assert value(neuron("conv", 1, batch=1)) == 52
    assert value(neuron("conv", 1, batch=-1)) == 82
    assert value(neuron("conv", 1, batch=-3)) == 22


def test_neuron_through_tiny_model():
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.5, 1.0]))
    model = nn.Sequential(OrderedDict(conv=conv, act=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1),
                                      flat=nn.Flatten()))
    x = arange_acts(1, 1, 3, 5)   # x[row, col] = 5 row + col; centre value 7
    objectives = {
        "n0": neuron("conv", 0),                       # 7 + 0.5
        "n1": neuron("conv", 1, x=4, y=2),             # -2 * 14 + 1
        "c0": channel("conv", 0),                      # mean(x) + 0.5 = 7.5
        "c1": channel("conv", 1),                      # -2 * 7 + 1 = -13
        "relu1": channel("act", 1),                    # only x=0 gives 1, rest 0 -> 1/15
        "logit0": class_logit(0),                      # pooled ReLU'd channel 0 = 7.5
        "labels1": as_objective("labels:1"),           # 1/15
        "dd": deepdream("conv"),
    }
    layers = sorted(set().union(*(o.layers for o in objectives.values())))
    with torch.no_grad(), capture(model, layers) as acts:
        run_to_layers(model, x, acts)
        got = {k: o(acts).item() for k, o in objectives.items()}
    expected_dd = float(((x + 0.5) ** 2).sum() + ((-2 * x + 1) ** 2).sum()) / 30
    assert got == pytest.approx({"n0": 7.5, "n1": -27.0, "c0": 7.5, "c1": -13.0,
                                 "relu1": 1 / 15, "logit0": 7.5, "labels1": 1 / 15,
                                 "dd": expected_dd}, rel=1e-6)


# --- channel, batch_channels -----------------------------------------------------------------

def test_channel_mean_and_batch():
    # channel 0 of image b has mean 30 b + 7
    assert value(channel("conv", 0)) == 37.0
    assert value(channel("conv", 1)) == 52.0
    assert value(channel("conv", 0, batch=2)) == 67.0
    assert value(channel("conv", 1, batch=-2)) == 52.0
    assert value(channel("fc", 2), {"fc": torch.tensor([[1.0, 2.0, 3.0], [5.0, 6.0, 8.0]])}) == 5.5


def test_batch_channels_equals_sum_of_per_image_channels():
    units = [1, 0, 1]
    total = sum(value(channel("conv", u, batch=i)) for i, u in enumerate(units))
    assert value(batch_channels("conv", units)) == total == 22 + 37 + 82
    vec = {"fc": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
    assert value(batch_channels("fc", [1, 0]), vec) == 5.0


# --- direction -------------------------------------------------------------------------------

def test_direction_plain_dot_mean():
    v = [2.0, -1.0]
    # per position: 2 * (30b + 5r + c) - (30b + 15 + 5r + c) = 30b + 5r + c - 15; mean b=1,r=1,c=2
    assert value(direction("conv", v)) == pytest.approx(30 + 5 + 2 - 15)
    assert value(direction("conv", torch.tensor(v), batch=0)) == pytest.approx(-8.0)
    assert value(direction("conv", np.array(v), batch=-1)) == pytest.approx(52.0)
    assert value(direction("fc", [1.0, -1.0]), {"fc": torch.tensor([[3.0, 1.0]])}) == 2.0


def lucid_dot_cossim(vectors: list[list[float]], v: list[float], power: float) -> float:
    """Lucid's formula written out per position: dot * max(0.1, cos)^power, eps 1e-4."""
    eps = 1e-4
    v_norm = math.sqrt(sum(a * a for a in v))
    out = []
    for p in vectors:
        dot = sum(a * b for a, b in zip(p, v))
        cos = dot / (eps + math.sqrt(sum(a * a for a in p))) / (eps + v_norm)
        out.append(dot * max(0.1, cos) ** power)
    return sum(out) / len(out)


@pytest.mark.parametrize("power", [1.0, 2.0, 3.5])
def test_direction_with_cossim_pow_matches_lucid(power):
    positions = [[3.0, 4.0], [-1.0, -1.0], [2.0, -1.0], [0.5, 0.1]]  # aligned, opposite, orthogonal
    v = [1.0, 2.0]
    acts = {"c": torch.tensor(positions).T.reshape(1, 2, 2, 2)}
    expected = lucid_dot_cossim(positions, v, power)
    assert value(direction("c", v, cossim_pow=power), acts) == pytest.approx(expected, rel=1e-6)
    # the floor at 0.1 matters: position 2 (cos < 0) contributes -3 * 0.1^power
    assert expected != pytest.approx(lucid_dot_cossim(positions, v, 0.0))
    assert value(direction("c", v), acts) == pytest.approx(lucid_dot_cossim(positions, v, 0.0))


def test_direction_neuron_centre_and_position():
    acts = {"conv": arange_acts(1, 2, 3, 5)}
    # centre (row 1, col 2): channel 0 is 7, channel 1 is 22
    assert value(direction_neuron("conv", [1.0, -1.0]), acts) == -15.0
    assert value(direction_neuron("conv", [1.0, 1.0], x=4, y=0), acts) == 4 + 19
    assert value(direction_neuron("conv", [0.0, 1.0], batch=2)) == 82.0
    power = 2.0
    expected = lucid_dot_cossim([[7.0, 22.0]], [1.0, 3.0], power)
    assert value(direction_neuron("conv", [1.0, 3.0], cossim_pow=power), acts) == \
        pytest.approx(expected, rel=1e-6)


# --- diversity -------------------------------------------------------------------------------

def diversity_by_hand(t: np.ndarray) -> float:
    batch, channels = t.shape[:2]
    grams = []
    for b in range(batch):
        flat = t[b].reshape(channels, -1)
        g = np.array([[float(np.dot(flat[i], flat[j])) for j in range(channels)]
                      for i in range(channels)])
        grams.append(g / np.sqrt((g * g).sum()))
    total = sum(float((grams[i] * grams[j]).sum())
                for i, j in itertools.permutations(range(batch), 2))
    return total / batch


def test_diversity_three_images_by_hand():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(3, 4, 2, 3)).astype(np.float64)
    got = value(diversity("l"), {"l": torch.tensor(t)})
    assert got == pytest.approx(diversity_by_hand(t), rel=1e-10)
    # images that differ give less than the maximum B - 1
    assert got < 2.0


@pytest.mark.parametrize("batch", [2, 3, 5])
def test_diversity_of_identical_images_is_batch_minus_one(batch):
    one = torch.rand(1, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    assert value(diversity("l"), {"l": one.repeat(batch, 1, 1, 1)}) == \
        pytest.approx(batch - 1, rel=1e-5)


def test_diversity_of_orthogonal_grams_is_zero():
    t = torch.zeros(2, 2, 1, 1)
    t[0, 0] = 1.0   # gram of image 0: only entry (0, 0)
    t[1, 1] = 1.0   # gram of image 1: only entry (1, 1)
    assert value(diversity("l"), {"l": t}) == 0.0


# --- deepdream, class_logit, shorthand -------------------------------------------------------

def test_deepdream_mean_square():
    t = ACTS["conv"]
    assert value(deepdream("conv")) == pytest.approx(float((t ** 2).mean()))
    assert value(deepdream("conv", batch=1)) == pytest.approx(float((t[1] ** 2).mean()))
    assert value(deepdream("fc"), {"fc": torch.tensor([[1.0, 3.0]])}) == 5.0


def test_class_logit():
    acts = {"output": torch.tensor([[0.5, 2.0, -1.0], [1.5, 4.0, 3.0]])}
    assert value(class_logit(1), acts) == 3.0
    assert value(class_logit(2, batch=0), acts) == -1.0
    assert class_logit(1).layers == {"output"}
    assert value(class_logit(0, layer="fc"), {"fc": torch.tensor([[9.0, 1.0]])}) == 9.0


def test_shorthand_strings():
    obj = as_objective("conv:1")
    assert obj.name == "channel('conv', 1)"
    assert obj.layers == {"conv"}
    assert value(obj) == 52.0
    labels = as_objective("labels:2")
    assert labels.layers == {"labels"}
    assert value(labels, {"labels": torch.tensor([[0.0, 1.0, 7.0]])}) == 7.0
    dotted = as_objective("block.conv:0")
    assert dotted.layers == {"block.conv"}
    same = channel("conv", 0)
    assert as_objective(same) is same


@pytest.mark.parametrize("call, error, name", [
    *[(lambda bad=bad: as_objective(bad), ValueError, "objective")
      for bad in ["conv", "conv:", ":3", "conv:a", "conv:1.5", ""]],
    *[(lambda bad=bad: as_objective(bad), TypeError, "objective")
      for bad in [3, None, 1.5, ["conv", 1], ("conv", 1)]],
])
def test_as_objective_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- arithmetic ------------------------------------------------------------------------------

A = Objective(lambda acts: acts["x"].sum(), ["x"], "a")   # 6 on XY
B = Objective(lambda acts: acts["y"].sum(), ["y"], "b")   # -2 on XY
XY = {"x": torch.tensor([1.0, 2.0, 3.0]), "y": torch.tensor([-2.0])}


@pytest.mark.parametrize("make, expected, name", [
    (lambda: A + 2, 8.0, "a + 2"),
    (lambda: 2 + A, 8.0, "a + 2"),
    (lambda: A - 2, 4.0, "a - 2"),
    (lambda: 2 - A, -4.0, "-a + 2"),
    (lambda: A * 3, 18.0, "3 * a"),
    (lambda: 3 * A, 18.0, "3 * a"),
    (lambda: A / 4, 1.5, "0.25 * a"),
    (lambda: 3 / A, 0.5, "(3) / (a)"),
    (lambda: -A, -6.0, "-a"),
    (lambda: A + B, 4.0, "a + b"),
    (lambda: A - B, 8.0, "a - b"),
    (lambda: B - 0.5 * A, -5.0, "b - 0.5 * a"),
    (lambda: A * B, -12.0, "(a) * (b)"),
    (lambda: A / B, -3.0, "(a) / (b)"),
    (lambda: -(A - B), -8.0, "-a + b"),
    (lambda: 2 * (A + 1) - 3, 11.0, "2 * a - 1"),
    (lambda: sum([A, B, A]), 10.0, "a + b + a"),
])
def test_arithmetic_values_and_names(make, expected, name):
    obj = make()
    assert isinstance(obj, Objective)
    assert obj(XY).item() == pytest.approx(expected)
    assert obj.name == name


def test_arithmetic_layers_union():
    assert (A + B).layers == {"x", "y"}
    assert (A * B).layers == {"x", "y"}
    assert (3 / A).layers == {"x"}
    assert (A + 1).layers == {"x"}
    assert (channel("a", 1) - 1e2 * diversity("b") + deepdream("a")).layers == {"a", "b"}


def test_division_by_zero():
    with pytest.raises(ZeroDivisionError, match="zero"):
        A / 0
    with pytest.raises(ZeroDivisionError):
        A / 0.0


def test_arithmetic_with_unsupported_types():
    with pytest.raises(TypeError):
        A + "b"
    with pytest.raises(TypeError):
        A * [1]
    with pytest.raises(TypeError):
        "b" - A


def test_readable_names():
    obj = channel("a", 1) - 100 * diversity("a")
    assert obj.name == "channel('a', 1) - 100 * diversity('a')"
    assert repr(obj) == "Objective(channel('a', 1) - 100 * diversity('a'))"
    assert neuron("conv", 3, x=1, y=2).name == "neuron('conv', 3, x=1, y=2)"
    assert direction("c", [1.0, 2.0], cossim_pow=1).name == \
        "direction('c', [1.0, 2.0], cossim_pow=1)"
    assert direction("c", torch.zeros(100)).name == "direction('c', tensor(100,))"
    assert (channel("a", 1) * channel("a", 2)).name == "(channel('a', 1)) * (channel('a', 2))"
    assert class_logit(5).name == "class_logit(5)"


def test_custom_names_and_wrap_objective():
    @wrap_objective
    def total(layer, scale=1.0):
        return Objective(lambda acts: scale * acts[layer].sum(), [layer])

    assert total("x").name == "total('x')"
    assert total("x", scale=2.0).name == "total('x', scale=2.0)"
    assert total("x", scale=2.0)(XY).item() == 12.0
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1))
    assert total(model).name == "total(Sequential)", "a model is named, not printed"
    model.config = types.SimpleNamespace(name="tiny_net")
    assert total(model).name == "total(tiny_net)", "a registered model goes by its name"

    @wrap_objective
    def doubled(objective):
        return 2 * objective

    assert doubled(channel("a", 1)).name == "doubled(channel('a', 1))"
    obj = A + B
    obj.name = "custom"
    assert obj.name == "custom"
    obj.name = None
    assert obj.name == "a + b"


def test_objective_sum_of_many_terms():
    acts = {"x": torch.arange(3.0).reshape(1, 3)}
    terms = [channel("x", i % 3) for i in range(5000)]
    total = Objective.sum(terms)
    # 1667 * 0 + 1667 * 1 + 1666 * 2
    assert total(acts).item() == 1667 + 2 * 1666
    assert total.layers == {"x"}
    with pytest.raises(ValueError, match="at least one"):
        Objective.sum([])


def test_python_loop_sum_flattens():
    acts = {"x": torch.arange(3.0).reshape(1, 3)}
    obj = channel("x", 1)
    for i in range(5000):
        obj = obj + channel("x", i % 3)
    assert obj(acts).item() == 1 + 1667 + 2 * 1666   # no RecursionError
    assert obj.name.startswith("channel('x', 1) + channel('x', 0) + channel('x', 1)")
    neg = -channel("x", 2)
    for _ in range(2000):
        neg = neg - channel("x", 2) * 0.5
    assert neg(acts).item() == pytest.approx(-2 - 2000)


def test_product_of_objectives():
    prod = channel("x", 1) * channel("x", 2) * 2
    acts = {"x": torch.tensor([[0.0, 3.0, 5.0]])}
    assert prod(acts).item() == 30.0
    quotient = (channel("x", 1) + 1) / channel("x", 2)
    assert quotient(acts).item() == pytest.approx(0.8)
    assert (1 / channel("x", 2))(acts).item() == pytest.approx(0.2)


def test_gradient_flows_through_algebra():
    t = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    obj = 2 * channel("x", 0) - channel("x", 1) * channel("x", 2) + 5
    obj({"x": t}).backward()
    assert t.grad.tolist() == [[2.0, -3.0, -2.0]]


# --- errors ---------------------------------------------------------------------------------

# Arguments are checked when the objective is made; what only the layer can tell (a channel
# or position out of range, a vector of the wrong length) when it is first evaluated.

# uint8 and bool tensors are not indices: torch reads them as masks (channel 2 of [[1, 2, 3, 4]]
# would average them all)
MASKS = [torch.tensor(2, dtype=torch.uint8), torch.tensor(True), np.array(2, np.uint8)]
OUTSIDE = [(5, 0), (0, 3), (-1, 0), (0, -1), (4, 3)]  # positions outside the 5 x 3 map of ACTS


@pytest.mark.parametrize("call, error, name", [
    (lambda: channel("c", 1.5), TypeError, "unit"),
    (lambda: channel("c", "1"), TypeError, "unit"),
    (lambda: channel("c", True), TypeError, "unit"),
    *[(lambda bad=bad: channel("fc", bad), TypeError, "unit") for bad in MASKS],
    (lambda: channel(0, 1), TypeError, "layer"),
    (lambda: channel("c", 1, batch=0.5), TypeError, "batch"),
    (lambda: value(channel("conv", 2)), IndexError, "unit"),
    (lambda: value(channel("conv", -3)), IndexError, "unit"),
    (lambda: value(channel("conv", 0, batch=3)), IndexError, "batch"),
])
def test_channel_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: neuron("c", 1, x=1.5), TypeError, r"\bx\b"),
    (lambda: neuron("c", 1, y="2"), TypeError, r"\by\b"),
    (lambda: value(neuron("conv", -3)), IndexError, "unit"),
    (lambda: value(neuron("conv", 0, batch=-4)), IndexError, "batch"),
    *[(lambda x=x, y=y: value(neuron("conv", 0, x=x, y=y)), IndexError, r"\bx\b")
      for x, y in OUTSIDE],
    (lambda: value(neuron("fc", 0), {"fc": torch.zeros(1, 3)}), ValueError, "layer"),
])
def test_neuron_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: deepdream(["c"]), TypeError, "layer"),
    (lambda: value(deepdream("conv", batch=5)), IndexError, "batch"),
])
def test_deepdream_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: diversity(None), TypeError, "layer"),
    (lambda: diversity("c")({"c": torch.rand(1, 2, 4, 4)}), ValueError, "diversity"),  # 1 image
])
def test_diversity_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: batch_channels("c", [1.7, 2.2]), TypeError, r"units\[0\]"),
    (lambda: batch_channels("c", "12"), TypeError, "units"),
    (lambda: batch_channels("c", []), ValueError, "units"),
    (lambda: value(batch_channels("conv", [0, 1])), ValueError, "units"),
    (lambda: value(batch_channels("conv", [0, 1, 2])), IndexError, "unit"),
    (lambda: value(batch_channels("conv", [0, -3, 1])), IndexError, "unit"),
])
def test_batch_channels_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: direction("c", [1.0, 2.0], cossim_pow=float("nan")), ValueError, "cossim_pow"),
    (lambda: direction("c", [1.0, 2.0], cossim_pow=-1), ValueError, "cossim_pow"),
    (lambda: direction("conv", [[1.0, 2.0]]), ValueError, "vector"),
    (lambda: direction("conv", 3.0), ValueError, "vector"),
    (lambda: direction("c", [1.0, float("nan")]), ValueError, "vector"),
    (lambda: value(direction("conv", [1.0, 2.0, 3.0])), ValueError, "vector"),
])
def test_direction_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: direction_neuron("c", [1.0, 2.0], x=0.5), TypeError, r"\bx\b"),
    (lambda: direction_neuron("conv", torch.ones(2, 2)), ValueError, "vector"),
    (lambda: value(direction_neuron("conv", [1.0])), ValueError, "vector"),
    *[(lambda x=x, y=y: value(direction_neuron("conv", [1.0, 1.0], x=x, y=y)), IndexError,
       r"\bx\b") for x, y in OUTSIDE],
])
def test_direction_neuron_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("call, error, name", [
    (lambda: class_logit(2.0), TypeError, "unit"),
    (lambda: value(class_logit(3), {"output": torch.zeros(1, 3)}), IndexError, "unit"),
])
def test_class_logit_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


# --- rendering improves each objective --------------------------------------------------------

@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 6, 3, padding=1),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(6, 6, 3, padding=1, stride=2),   # 16 x 16 for a 32 px image
        relu2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(),
        fc=nn.Linear(6, 4),
    )).eval()
    with torch.no_grad():   # PyTorch's default init is weak for 3 px kernels: make the units
        for m in model.modules():   # respond clearly to the image
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(3.0)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def evaluate(model: nn.Module, obj: Objective, images: torch.Tensor) -> float:
    with torch.no_grad(), capture(model, sorted(obj.layers)) as acts:
        return obj(run_to_layers(model, images, acts)).item()


def adam(params):
    return torch.optim.Adam(params, lr=0.2)


def render(model, obj, p, steps=40):
    return render_vis(model, obj, p, optimizer=adam, transforms=[], thresholds=(steps,),
                      progress=False, seed=0)


def improved(before: float, after: float) -> bool:
    return after - before > max(0.2, 0.3 * abs(before))


def render_and_compare(model, obj, batch=1, steps=40):
    torch.manual_seed(0)
    p = param.image(32, batch=batch)
    with torch.no_grad():
        before = p().clone()
    result = render(model, obj, p, steps)
    with torch.no_grad():
        after = p()
    assert np.allclose(result.image, after.permute(0, 2, 3, 1).numpy())
    return evaluate(model, obj, before), evaluate(model, obj, after), result


@pytest.mark.parametrize("make", [
    lambda: neuron("conv2", 1),
    lambda: neuron("conv2", 2, x=3, y=12),
    lambda: channel("conv2", 0),
    lambda: channel("conv1", 4),
    lambda: direction("conv2", [1.0, -1.0, 0.5, 0.0, 2.0, -0.5]),
    lambda: direction("conv2", [1.0, -1.0, 0.5, 0.0, 2.0, -0.5], cossim_pow=2.0),
    lambda: direction_neuron("conv2", [0.0, 1.0, 1.0, -1.0, 0.0, 0.5]),
    lambda: deepdream("conv2"),
    lambda: class_logit(2),
    lambda: as_objective("labels:0"),
], ids=["neuron", "neuron_xy", "channel", "channel_conv1", "direction", "direction_cossim",
        "direction_neuron", "deepdream", "class_logit", "labels_shorthand"])
def test_rendering_improves_objective(net, make):
    obj = make()
    before, after, result = render_and_compare(net, obj)
    assert improved(before, after), (obj.name, before, after)
    assert result.history[-1] > result.history[0]


def test_rendering_improves_batch_channels(net):
    obj = batch_channels("conv2", [0, 3, 5])
    before, after, _ = render_and_compare(net, obj, batch=3)
    assert improved(before, after), (before, after)


def test_batch_channels_each_image_improves_its_unit(net):
    units = [0, 3, 5]
    torch.manual_seed(0)
    p = param.image(32, batch=3)
    with torch.no_grad():
        before = p().clone()
    render(net, batch_channels("conv2", units), p)
    with torch.no_grad():
        after = p()
    for i, unit in enumerate(units):
        single = channel("conv2", unit, batch=i)
        assert improved(evaluate(net, single, before), evaluate(net, single, after)), unit


def test_diversity_term_lowers_diversity(net):
    target = channel("conv2", 0)
    div = diversity("relu1")
    outcomes = {}
    for name, obj in {"plain": target, "diverse": target - 5.0 * div}.items():
        torch.manual_seed(0)
        p = param.image(32, batch=3)
        render(net, obj, p)
        with torch.no_grad():
            images = p()
        outcomes[name] = (evaluate(net, div, images), evaluate(net, target, images))
    assert outcomes["diverse"][0] < outcomes["plain"][0] - 0.5, outcomes
    # diversity is a trade-off, not a different objective: the channel still improved
    torch.manual_seed(0)
    start = evaluate(net, target, param.image(32, batch=3)().detach())
    assert outcomes["diverse"][1] > start


def test_an_objective_given_one_layer_name_as_a_string_keeps_it_whole():
    from lucent_core.objectives import Objective
    assert Objective(lambda acts: acts["conv"].mean(), "conv", "mean").layers == {"conv"}


def test_a_named_combination_keeps_its_name_in_further_arithmetic():
    from lucent_core import objectives
    from lucent_core.recipes.inversion import feature_inversion
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    inversion = feature_inversion(net, "1", torch.rand(3, 8, 8))
    combined = inversion - 1e-3 * objectives.total_variation()
    assert combined.name == "feature_inversion('1') - 0.001 * total_variation()"
    acts = {"1": torch.rand(1, 4, 6, 6), "input": torch.rand(1, 3, 8, 8)}
    torch.testing.assert_close(combined(acts), inversion(acts)
                               - 1e-3 * objectives.total_variation()(acts))


def test_numpy_integers_and_integer_tensors_are_indices():
    acts = {"c": torch.arange(6.0).reshape(2, 3)}
    assert channel("c", np.int64(2), batch=np.int32(1))(acts).item() == 5.0
    best = torch.arange(6.0).reshape(2, 3)[1].argmax()          # as argmax gives it
    assert channel("c", best, batch=1)(acts).item() == 5.0
    assert batch_channels("c", torch.tensor([2, 0]))(acts).item() == 2.0 + 3.0
    spatial = {"c": torch.arange(18.0).reshape(1, 2, 3, 3)}
    assert neuron("c", 1, x=torch.tensor(2), y=0)(spatial).item() == 11.0


@pytest.mark.parametrize("combine", [lambda o: o * float("nan"), lambda o: o + float("inf"),
                                     lambda o: float("nan") - o, lambda o: o / float("nan"),
                                     lambda o: float("inf") / o])
def test_an_objective_combined_with_a_non_finite_number_is_an_error(combine):
    with pytest.raises(ValueError, match="finite numbers"):
        combine(channel("c", 0))


# --- negative channels count from the end, as Python's indices do ----------------------------

def test_a_negative_channel_is_counted_from_the_layers_last():
    assert value(channel("conv", -1)) == value(channel("conv", 1)) == 52.0
    assert value(channel("conv", -2, batch=0)) == value(channel("conv", 0, batch=0))
    assert value(neuron("conv", -1)) == value(neuron("conv", 1))
    assert value(batch_channels("conv", [-1, 0, -2])) == value(batch_channels("conv", [1, 0, 0]))
    assert value(class_logit(-1), {"output": torch.tensor([[0.5, 2.0]])}) == 2.0


# --- transformer blocks: (batch, tokens, channels) activations ---------------------------------

@pytest.fixture(scope="module")
def vit():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=2,
                                                num_heads=2, hidden_dim=32, mlp_dim=64).eval()


BLOCK = "encoder.layers.encoder_layer_1"


@pytest.mark.parametrize("make", [
    lambda: channel(BLOCK, 3),
    lambda: channel("encoder_layers_encoder_layer_1", 3),  # the underscore spelling too
    lambda: channel(BLOCK, 30),   # more than the 5 tokens: once said "5 channels"
    lambda: neuron(BLOCK, 3),
    lambda: direction(BLOCK, torch.ones(32)),
    lambda: batch_channels(BLOCK, [3]),
    lambda: as_objective(f"{BLOCK}:3"),
    lambda: channel("encoder.layers.encoder_layer_0.mlp", 3),  # inside a block
], ids=["channel", "underscored", "past_the_tokens", "neuron", "direction", "batch_channels",
        "shorthand", "inside_a_block"])
def test_a_channel_of_a_transformer_block_is_refused_with_the_objective_to_use(vit, make):
    obj = make()
    with pytest.raises(ValueError, match="token") as info:
        render_vis(vit, obj, param.image(32), transforms=[], thresholds=(1,), progress=False)
    message = str(info.value)
    assert "lucent_core.recipes.clip.vit_channel" in message and "(batch, tokens, channels)" \
        in message
    assert len(message.splitlines()) == 1


def test_vit_channel_renders_a_channel_of_a_torchvision_vit(vit):
    from lucent_core.recipes.clip import vit_channel
    obj = vit_channel(BLOCK, 3, batch_first=True)
    result = render_vis(vit, obj, param.image(32), transforms=[], thresholds=(20,),
                        progress=False, seed=0)
    assert result.history[-1] > result.history[0]


def test_channels_of_a_conv1d_layer_are_still_channels():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(flat=nn.Flatten(2), conv=nn.Conv1d(3, 4, 5)))
    acts = arange_acts(2, 4, 6)  # (B, C, L)
    assert channel("conv", 1)({"conv": acts}).item() == acts[:, 1].mean().item()
    result = render_vis(model, channel("conv", 2), param.image(16), transforms=[],
                        thresholds=(20,), progress=False, seed=0)
    assert result.history[-1] > result.history[0]
