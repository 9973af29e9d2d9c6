"""`explain_photo` and `lucent-core explain`: the report of one photo, its files, its page in
headless Chromium, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lucent_core.cli import main
from lucent_core.explain import default_target, explain_photo
from test_atlas_gallery import VIEWPORT, _check_links, _check_page, _parse, browser  # noqa: F401

skimage_data = pytest.importorskip("skimage.data")

FILES = ["index.html", "photo.png", "attribution_grad_x_act.png",
         "attribution_integrated_gradients.png", "dictionary.png", "activation_grid.png",
         "explain.json"]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 5, 3), nn.ReLU(),
                         nn.Conv2d(5, 4, 3), nn.ReLU())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    photo = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(1))
    explain_photo(_net(), photo, "3", out, target="5:1", steps=3, size=16, image_size=None,
                  k=2, groups=2, grid=3, cell_size=16, ig_steps=8, progress=False)
    return out


def test_files_and_settings(report):
    for name in FILES:
        assert (report / name).is_file(), name
    units = sorted(report.glob("units/*.png"))
    groups = sorted(report.glob("groups/*.png"))
    assert units and len(groups) == 4  # two groups: each rendering and where it fires
    settings = json.loads((report / "explain.json").read_text())
    assert settings["layer"] == "3" and settings["target"] == "5:1" and settings["steps"] == 3
    assert np.isfinite(settings["target_value"])
    with Image.open(report / "photo.png") as photo:
        assert photo.size == (28, 28)


def test_every_link_of_the_page_resolves(report):
    images = [attrs["src"] for tag, attrs in _parse(report / "index.html").tags if tag == "img"]
    on_disk = [p.relative_to(report).as_posix() for p in report.rglob("*.png")]
    assert sorted(set(images)) == sorted(on_disk)  # every picture shown, none left out
    assert _check_links(report) == len(images) + 1  # and explain.json


def test_default_target():
    classifier = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 5))
    photo = torch.rand(1, 3, 4, 4)
    logits = classifier(photo)
    assert default_target(classifier, "0", photo) == f"labels:{int(logits.argmax())}"
    net = _net()
    acts = net(photo := torch.rand(1, 3, 16, 16))
    assert default_target(net, "1", photo) == f"5:{int(acts[0].flatten(1).mean(1).argmax())}"
    with pytest.raises(ValueError, match="target"):
        default_target(net, "5", photo)


def test_cli_on_the_trained_network(tmp_path, capsys):
    photo = tmp_path / "chelsea.png"
    Image.fromarray(skimage_data.chelsea()).save(photo)
    out = tmp_path / "report"
    status = main(["explain", "--model", "vgg16_hed", "--image", str(photo), "--layer",
                   "block3_conv3", "--target", "block4_conv1:7", "--out", str(out), "--steps",
                   "2", "--size", "16", "--image-size", "48", "--grid", "2", "--groups", "2",
                   "--k", "1", "--quiet"])
    assert status == 0, capsys.readouterr().err
    assert str(out / "index.html") in capsys.readouterr().out
    settings = json.loads((out / "explain.json").read_text())
    assert settings["command"].startswith("lucent-core") and settings["image_size"] == 48


@pytest.mark.parametrize("arguments, words", [
    (["--layer", "no_such_layer"], "no_such_layer"),
    (["--layer", "block3_conv3", "--target", "block9_conv1:0"], "block9_conv1"),
    (["--layer", "block3_conv3", "--steps", "0"], "steps"),
    (["--layer", "block3_conv3", "--image", "missing.png"], "missing.png"),
])
def test_cli_errors(tmp_path, capsys, arguments, words):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(photo)
    argv = ["explain", "--model", "vgg16_hed", "--random-weights", "--image", str(photo),
            "--out", str(tmp_path / "out"), "--image-size", "32", "--quiet", *arguments]
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_in_headless_chromium(browser, report, tmp_path):  # noqa: F811
    page = browser.new_context(viewport=VIEWPORT).new_page()
    failures: list[str] = []
    page.on("requestfailed", lambda request: failures.append(f"{request.url}: {request.failure}"))
    page.on("pageerror", lambda error: failures.append(str(error)))
    page.goto((report / "index.html").as_uri())
    _check_page(page, "What 3 sees in this photo", failures, tmp_path / "report.png")
    assert page.locator("section").count() == 5
    assert page.locator("section h2").all_text_contents()[1].startswith("Attribution to")
