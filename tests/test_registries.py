"""Parameterisations and unit kinds behind one protocol each, found by name: a new one is one
class plus one registration, and the atlas, figures, records and CLI take it from there."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lucent_core import atlas, param
from lucent_core.drawing import render_at
from lucent_core.param import registry as param_registry
from lucent_core.param.base import Parameterisation
from lucent_core.units import UNIT_KINDS, Series, UnitKind, register_unit_kind, unit_values


@pytest.mark.parametrize("name", param.param_names())
def test_every_registered_parameterisation_follows_the_protocol(name):
    torch.manual_seed(0)
    made = param.make_param(name, 12, 8, batch=2)
    assert isinstance(made, Parameterisation)
    images = made()
    assert images.shape == (2, 3, 8, 12) and made.size == (8, 12)
    assert 0 <= images.min() and images.max() <= 1
    described = made.describe()
    assert described["kind"] == name and described["size"] == [8, 12]
    with torch.no_grad():  # the native size gives back forward() itself
        torch.testing.assert_close(render_at(made, (8, 12)), made(), atol=1e-5, rtol=0)
    assert render_at(made, (16, 24)).shape == (2, 3, 16, 24)
    assert all(p.shape[0] == 2 for p in made.parameters())  # an atlas seeds each image alone


@pytest.mark.parametrize("call, error, name", [
    (lambda: param.make_param("fourrier", 8), ValueError, "param"),
    (lambda: atlas.AtlasSettings(model="m", weights_sha256="ab", param="fourrier"), ValueError,
     "param"),
    (lambda: param.register_param("fourier", lambda w, h=None, batch=1, decorrelate=True: None),
     ValueError, "name"),
    (lambda: Series("conv", "neuronn"), ValueError, "kind"),
    (lambda: register_unit_kind(UNIT_KINDS["channel"]), ValueError, "kind"),
])
def test_names_are_checked_where_they_enter(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_decorrelate_false_is_refused_where_there_is_no_decorrelation_to_turn_off():
    with pytest.raises(ValueError, match="decorrelate=False .* not to a cppn"):
        param.make_param("cppn", 8, decorrelate=False)
    for name in set(param.param_names()) - param_registry.PLAIN_RGB:  # the others take it
        assert param.make_param(name, 8, decorrelate=False)().shape == (1, 3, 8, 8)


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="fourrier.*choose one of.*'fourier'"):
        param.make_param("fourrier", 8)


class _Flat(nn.Module):
    """A 1x1 conv net: unit i of layer "0" is the weighted colour sum i."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])[:, :, None, None])
            self.conv.bias.zero_()

    def forward(self, x):
        return self.conv(x)


def test_a_parameterisation_registered_at_run_time_renders_an_atlas(tmp_path, monkeypatch):
    monkeypatch.setitem(param_registry._PARAMS, "flat_fourier",
                        lambda w, h=None, batch=1, decorrelate=True:
                        param.image(w, h, batch=batch, decorrelate=decorrelate, decay_power=0))
    summary = atlas.render_atlas(_Flat(), tmp_path, "conv", steps=4, size=8, param="flat_fourier",
                                 progress=False)
    assert summary.rendered == 2 and summary.missing == 0
    assert atlas.load_manifest(tmp_path)["settings"]["param"] == "flat_fourier"


class _Peak(UnitKind):
    """A channel's strongest position (a kind the package does not have)."""

    name = "peak_test"
    cli_flag = "--peak-test"

    def layer_maps(self, acts, series, directions):
        return acts.amax((2, 3), keepdim=True)


def test_a_unit_kind_registered_at_run_time_renders_an_atlas(tmp_path, monkeypatch):
    monkeypatch.setitem(UNIT_KINDS, _Peak.name, _Peak())
    acts = torch.arange(16.0).reshape(2, 2, 2, 2)
    assert unit_values(acts, Series("conv", "peak_test"), torch.tensor([1, 0])).tolist() == \
        [7.0, 11.0]
    summary = atlas.render_atlas(_Flat(), tmp_path, Series("conv", "peak_test"), steps=4,
                                 size=8, progress=False)
    assert summary.rendered == 2
    series = atlas.load_manifest(tmp_path)["series"]
    assert [s["dir"] for s in series] == ["conv--peak_test"]
    assert "--peak-test" in atlas.reproduce_command(
        atlas.AtlasSettings(model="m", weights_sha256="ab"), Series("conv", "peak_test"), 0)
