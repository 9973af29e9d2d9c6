"""Connections in the atlas gallery: each unit's strongest inputs and outputs between the
channel layers of an atlas (lucent_core.atlas.index + gallery), checked against
lucent_core.recipes.circuits on a tiny two-conv zoo model; stored and reused; refused with a
note for other weights; and followed in a headless Chromium."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lucent_core import atlas
from lucent_core.atlas import index as index_module
from lucent_core.atlas import AtlasStore, Series
from lucent_core.models import ModelConfig, Preprocessing, create_model
from lucent_core.recipes.circuits import expanded_weights, top_inputs, top_outputs
from test_atlas_gallery import VIEWPORT, _check_links, _check_page, _parse, browser  # noqa: F401

MODEL = "tiny_two_conv_for_connections"
FAST = {"steps": 4, "size": 16, "progress": False}


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(6, 5, 3, padding=1), nn.ReLU())


@pytest.fixture(scope="module", autouse=True)
def _zoo_model():
    """A zoo model, so that the index can build it again; registered for this module only
    (other tests run over every registered model)."""
    from lucent_core.models import registry
    registry._REGISTRY[MODEL] = lambda: ModelConfig(MODEL, "two 3x3 convolutions", _tiny,
                                                    Preprocessing(), input_size=(16, 16))
    yield
    registry._REGISTRY.pop(MODEL, None)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[nn.Module, Path]:
    """Every unit of both convolutions, the later layer named first; the index built by
    render_atlas with its model."""
    model = create_model(MODEL, pretrained=False)
    out = tmp_path_factory.mktemp("atlas") / "atlas"
    atlas.render_atlas(model, out, ["2", "0"], **FAST)
    return model, out


def _copy(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


def _linked(out: Path) -> dict[str, dict[int, dict]]:
    """Per layer, per unit, the connections the manifest lists."""
    return {s["layer"]: {int(unit): found for unit, found in s.get("connections", {}).items()}
            for s in atlas.load_manifest(out)["series"]}


def _listed(side: dict, sign: str) -> list[tuple[int, float]]:
    return [(entry["unit"], entry["norm"]) for entry in side[sign]]


def _assert_matches_circuits(model: nn.Module, out: Path) -> None:
    weights = expanded_weights(model, "0", "2", size=16)
    linked = _linked(out)
    assert sorted(linked["2"]) == list(range(5)) and sorted(linked["0"]) == list(range(6))
    for unit, page in linked["2"].items():
        found = top_inputs(model, "2", unit, "0", k=4, weights=weights)
        side = page["inputs"]
        assert (side["series"], side["layer"]) == ("0", "0")
        assert "outputs" not in page                           # the last layer of the atlas
        for sign, connections in (("positive", found.positive), ("negative", found.negative)):
            assert [u for u, _ in _listed(side, sign)] == [c.source for c in connections]
            assert [n for _, n in _listed(side, sign)] == pytest.approx(
                [c.norm for c in connections], rel=1e-5)
            assert all(e["sign"] == (1 if sign == "positive" else -1) for e in side[sign])
    for unit, page in linked["0"].items():
        found = top_outputs(model, "0", unit, "2", k=4, weights=weights)
        side = page["outputs"]
        assert "inputs" not in page                            # the first layer of the atlas
        for sign, connections in (("positive", found.positive), ("negative", found.negative)):
            assert [u for u, _ in _listed(side, sign)] == [c.target for c in connections]
            assert [n for _, n in _listed(side, sign)] == pytest.approx(
                [c.norm for c in connections], rel=1e-5)


def _pictures(out: Path) -> list[Path]:
    return [out / entry["weights"] for layer in _linked(out).values()
            for page in layer.values() for side in page.values()
            if isinstance(side, dict) for sign in ("positive", "negative") for entry in side[sign]]


# --- what is listed, stored and shown -------------------------------------------------------

def test_each_unit_lists_the_strongest_inputs_and_outputs_of_circuits(rendered):
    model, out = rendered
    _assert_matches_circuits(model, out)
    summary = atlas.load_manifest(out)["connections"]
    assert summary["layers"] == ["0", "2"]                     # the model's order, not the call's
    assert [(p["source"], p["target"]) for p in summary["pairs"]] == [("0", "2")]
    assert (out / summary["pairs"][0]["file"]).is_file() and summary["top"] == 4


def test_weight_pictures_exist_with_one_scale_per_page(rendered):
    model, out = rendered
    pictures = _pictures(out)
    assert len(pictures) == len(set(pictures)) > 20
    for path in pictures:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (48, 48)   # 3 x 3, upsampled 16x
    # unit 0 of "2": each picture is its kernel drawn at the page's scale (max |weight|)
    page = _linked(out)["2"][0]
    weights = expanded_weights(model, "0", "2", size=16)[0]
    entries = page["inputs"]["positive"] + page["inputs"]["negative"]
    scale = max(float(weights[e["unit"]].abs().max()) for e in entries)
    assert page["scale"] == pytest.approx(scale, rel=1e-5)
    strongest = max(entries, key=lambda e: float(weights[e["unit"]].abs().max()))
    rgb = np.asarray(Image.open(out / strongest["weights"]).convert("RGB"))
    assert {tuple(rgb[y, x]) for y in range(0, 48, 16) for x in range(0, 48, 16)} & \
        {(214, 64, 24), (33, 102, 172)}, "the page's strongest weight is drawn in full colour"


def test_pages_show_the_connections_and_every_link_resolves(rendered):
    _, out = rendered
    assert _check_links(out) > 200
    page = _parse(out / "2" / "units" / "00000.html")
    inputs = _linked(out)["2"][0]["inputs"]
    hrefs = [a["href"] for tag, a in page.tags if tag == "a"]
    for entry in inputs["positive"] + inputs["negative"]:
        assert f"../../0/units/{entry['unit']:05d}.html" in hrefs
    sources = [a["src"] for tag, a in page.tags if tag == "img"]
    assert sum(src.startswith("../../connections/pictures/2/") for src in sources) == \
        len(inputs["positive"]) + len(inputs["negative"])
    text = " ".join(page.text)
    assert "Connections" in text and "Inputs from" in text and "Outputs to" not in text
    assert "excitatory" in text and "inhibitory" in text
    raw = (out / "2" / "units" / "00000.html").read_text(encoding="utf-8")
    assert "<tr><th>connections</th>" not in raw              # not in the unit's record
    overview = "".join(_parse(out / "index.html").text)
    assert "Connections:" in overview and "0 → 2" in overview


def test_units_not_rendered_are_listed_without_a_picture_or_link(tmp_path):
    model = create_model(MODEL, pretrained=False)
    atlas.render_atlas(model, tmp_path, ["0", "2"], units="0:2", **FAST)
    inputs = _linked(tmp_path)["2"][0]["inputs"]
    listed = {e["unit"] for sign in ("positive", "negative") for e in inputs[sign]}
    assert listed - {0, 1}, "some strongest input of unit 0 is not rendered"
    page = (tmp_path / "2" / "units" / "00000.html").read_text(encoding="utf-8")
    assert page.count("not rendered") == len(listed - {0, 1})
    _check_links(tmp_path)


def test_a_later_index_reuses_what_is_stored_without_the_model(rendered, tmp_path,
                                                               monkeypatch):
    model, out = rendered
    copy = _copy(out, tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(index_module, "expanded_weights", fail)
    monkeypatch.setattr(index_module, "create_model", fail)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atlas.build_index(copy)
        _assert_matches_circuits(model, copy)
        four = _linked(copy)
        atlas.build_index(copy, connections=2)                 # fewer: sliced from the store
    two = _linked(copy)
    for layer in ("0", "2"):
        for unit, page in two[layer].items():
            for direction, side in page.items():
                if direction == "scale":
                    continue
                for sign in ("positive", "negative"):
                    assert side[sign] == four[layer][unit][direction][sign][:2]
    # pictures of connections no longer shown are removed, the others are there
    assert sorted((copy / "connections" / "pictures").rglob("*.png")) == sorted(_pictures(copy))
    stored = sum(p.stat().st_size for p in (copy / "connections").rglob("*") if p.is_file())
    assert stored < 100_000


def test_the_index_builds_a_zoo_model_again_from_the_settings(rendered, tmp_path):
    model, out = rendered
    copy = _copy(out, tmp_path)
    shutil.rmtree(copy / "connections")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atlas.build_index(copy)                                # model=None: create_model(MODEL)
    _assert_matches_circuits(model, copy)
    assert (copy / "connections" / "0--2.pt").is_file()


def test_without_the_model_the_index_has_no_connections_and_says_why(tmp_path):
    torch.manual_seed(0)
    net = _tiny()                                              # given in Python: not rebuilt
    atlas.render_atlas(net, tmp_path, ["0", "2"], index=False, **FAST)
    with pytest.warns(UserWarning, match=r"build_index\(out, model=\.\.\.\)"):
        atlas.build_index(tmp_path)
    manifest = atlas.load_manifest(tmp_path)
    assert "not a zoo model" in manifest["connections"]["note"]
    assert not any("connections" in s for s in manifest["series"])
    assert "Connections" not in (tmp_path / "2" / "units" / "00000.html").read_text()
    assert "No connections between layers" in (tmp_path / "index.html").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atlas.build_index(tmp_path, connections=0)             # none asked: nothing said
    assert "connections" not in atlas.load_manifest(tmp_path)
    atlas.build_index(tmp_path, model=net)                     # given: computed
    assert "inputs" in _linked(tmp_path)["2"][0]


def test_a_model_with_other_weights_is_refused_with_a_note(tmp_path):
    changed = create_model(MODEL, pretrained=False)
    with torch.no_grad():
        changed[2].weight.mul_(-1)                            # still "random weights, seed 0"
    atlas.render_atlas(changed, tmp_path, ["0", "2"], index=False, **FAST)
    with pytest.warns(UserWarning, match="not the atlas's"):
        atlas.build_index(tmp_path)                            # rebuilt: the unchanged weights
    with pytest.warns(UserWarning, match="not the atlas's"):
        atlas.build_index(tmp_path, model=create_model(MODEL, pretrained=False))
    manifest = atlas.load_manifest(tmp_path)
    assert "weights" in manifest["connections"]["note"]
    assert not (tmp_path / "connections").exists()
    assert not any("connections" in s for s in manifest["series"])


def test_neuron_and_direction_series_have_no_connections(tmp_path):
    model = create_model(MODEL, pretrained=False)
    series = ["0", Series("2", "neuron"), Series("2", "direction", torch.eye(5)[:2])]
    atlas.render_atlas(model, tmp_path, series, units="0:2", **FAST)
    manifest = atlas.load_manifest(tmp_path)
    assert "connections" not in manifest and not (tmp_path / "connections").exists()


def test_a_layer_that_is_not_spatial_is_left_out(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    atlas.render_atlas(net, tmp_path, ["0", "2"], index=False, **FAST)
    AtlasStore(tmp_path).open_series(Series("5"), 2)          # a (B, C) layer, none rendered
    atlas.build_index(tmp_path, model=net)
    summary = atlas.load_manifest(tmp_path)["connections"]
    assert summary["layers"] == ["0", "2"] and summary["not_spatial"] == ["5"]
    assert [(p["source"], p["target"]) for p in summary["pairs"]] == [("0", "2")]


@pytest.mark.parametrize("call, error, name", [
    (lambda out: atlas.build_index(out, connections=-1), ValueError, "connections"),
    (lambda out: atlas.build_index(out, connections=1.5), TypeError, "connections"),
    (lambda out: atlas.build_index(out, connections=True), TypeError, "connections"),
    (lambda out: atlas.build_index(out, model="vgg16_hed"), TypeError, "model"),
])
def test_bad_arguments(rendered, call, error, name):
    with pytest.raises(error, match=name):
        call(rendered[1])


# --- a real browser -------------------------------------------------------------------------

def test_walking_the_connections_in_headless_chromium(browser, rendered, tmp_path):  # noqa: F811
    _, out = rendered
    linked = _linked(out)
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    failures: list[str] = []
    page.on("requestfailed", lambda request: None if request.failure == "net::ERR_ABORTED"
            else failures.append(f"{request.url}: {request.failure}"))
    page.on("pageerror", lambda error: failures.append(str(error)))
    title = f"2 unit 0 — {MODEL} atlas"
    try:
        page.goto((out / "2" / "units" / "00000.html").as_uri())
        page.locator("section.connections").scroll_into_view_if_needed()
        _check_page(page, title, failures, tmp_path / "inputs.png")
        inputs = linked["2"][0]["inputs"]
        shown = len(inputs["positive"]) + len(inputs["negative"])
        assert page.locator("figure.connection img.weights").count() == shown
        assert page.locator("figure.connection img.unit-thumb").count() == shown

        first = inputs["positive"][0]["unit"]                 # input -> its own page
        page.click("figure.connection >> nth=0 >> a >> nth=0")
        page.wait_for_load_state()
        assert page.url == (out / "0" / "units" / f"{first:05d}.html").as_uri()
        _check_page(page, f"0 unit {first} — {MODEL} atlas", failures, tmp_path / "out.png")
        assert page.locator("section.connections h3").all_text_contents() == ["Outputs to 2"]
        outputs = linked["0"][first]["outputs"]
        targets = [e["unit"] for sign in ("positive", "negative") for e in outputs[sign]]
        hrefs = page.eval_on_selector_all("figure.connection a",
                                          "links => links.map(link => link.href)")
        assert {h.rsplit("/", 1)[-1] for h in hrefs} == {f"{u:05d}.html" for u in targets}
        page.click("figure.connection >> nth=0 >> figcaption a")     # and on, to layer 2
        page.wait_for_load_state()
        assert page.title().startswith("2 unit ")
    finally:
        context.close()
