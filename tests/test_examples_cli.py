"""`lucent-core examples` end to end: an atlas, a folder of photos, examples in the gallery."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lucent_core import atlas
from lucent_core.cli import main

MODEL = ["--model", "atlas_models:tiny", "--random-weights", "--layer", "2"]


def make_photos(folder, count=12):
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    for i in range(count):
        pixels = (rng.random((20 + i, 30, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / ("sub" if i % 2 else ".") / f"photo{i:02d}.png")
    (folder / "broken.jpg").write_bytes(b"not a picture")


def test_examples_join_the_atlas_gallery(tmp_path, capsys):
    out, photos = tmp_path / "atlas", tmp_path / "photos"
    make_photos(photos)
    assert main(["atlas", *MODEL, "--units", "0:3", "--steps", "4", "--size", "24",
                 "--quiet", "--out", str(out)]) == 0
    assert main(["examples", *MODEL, "--units", "0:3", "--images", str(photos), "--top", "2",
                 "--size", "24", "--workers", "0", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "broken.jpg" in printed and "gallery:" in printed
    found = json.loads((out / "examples/2/examples.json").read_text())
    assert found["scanned"] == 12 and found["skipped"] == ["broken.jpg"]
    units = {r["unit"]: r for r in atlas.load_manifest(out)["series"][0]["units"]}
    ratios = []
    for unit, record in units.items():
        assert [e["source"] for e in record["examples"]] == [
            e["source"] for e in found["units"][str(unit)]]
        best = record["examples"][0]["activation"]
        if best > 0:
            ratios.append(record["quality"]["superstimulus"])
            assert ratios[-1] == pytest.approx(record["peak_activation"] / best, rel=1e-5)
    assert ratios
    page = (out / "2/units/00001.html").read_text()
    assert "Dataset examples" in page and "examples/2/crops/00001-0.png" in page


def test_examples_of_other_random_weights_are_refused(tmp_path, capsys):
    out, photos = tmp_path / "atlas", tmp_path / "photos"
    make_photos(photos, count=3)
    assert main(["atlas", *MODEL, "--units", "0", "--steps", "2", "--size", "16", "--quiet",
                 "--seed", "3", "--out", str(out)]) == 0
    assert main(["examples", *MODEL, "--images", str(photos), "--size", "16", "--workers",
                 "0", "--quiet", "--out", str(out)]) == 2          # built with seed 0
    assert "weights" in capsys.readouterr().err
    assert main(["examples", *MODEL, "--images", str(photos), "--size", "16", "--workers",
                 "0", "--quiet", "--seed", "3", "--out", str(out)]) == 0
