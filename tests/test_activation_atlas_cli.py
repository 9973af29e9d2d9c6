"""`lucent-core activation-atlas`: the five steps from the command line, run again (nothing
redone), settings changed under an existing atlas (refused), bad flags."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lucent_core.cli import main

BASE = ["activation-atlas", "--model", "vgg16_hed", "--random-weights", "--layer",
        "block2_conv2", "--grid", "3", "--min-count", "1", "--per-image", "4", "--image-size",
        "32", "--layout", "pca", "--steps", "2", "--size", "16", "--batch", "4", "--workers",
        "0"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(6):
        pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        pixels[:, : 10 + 4 * i] = (255 * (i % 2), 80, 255 * (1 - i % 2))  # a coloured band
        Image.fromarray(pixels).save(folder / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


def _run(argv, capsys) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_makes_the_atlas_and_a_second_run_redoes_nothing(photos, tmp_path, capsys):
    out = tmp_path / "aa"
    status, printed, err = _run([*BASE, "--images", str(photos), "--out", str(out)], capsys)
    assert status == 0, err
    assert f"open {out / 'index.html'}" in printed and "broken.jpg" in printed
    settings = json.loads((out / "collect.json").read_text())
    assert settings["count"] == 6 * 4 and settings["skipped"][0][0] == "broken.jpg"
    cells = json.loads((out / "cells.json").read_text())["cells"]
    assert len(list((out / "cells").glob("*.png"))) == len(cells) > 0
    with Image.open(out / "activation_atlas.png") as picture:
        assert picture.size == (3 * 16, 3 * 16)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.png")}

    status, printed, err = _run([*BASE, "--images", str(photos), "--out", str(out)], capsys)
    assert status == 0, err
    assert "already complete" in printed and "rendered 0 cells" in printed
    assert before == {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.png")}


def test_changed_settings_under_an_existing_atlas_are_refused(photos, tmp_path, capsys):
    out = tmp_path / "aa"
    assert _run([*BASE, "--images", str(photos), "--out", str(out), "--quiet"], capsys)[0] == 0
    argv = [*BASE, "--images", str(photos), "--out", str(out), "--quiet"]
    argv[argv.index("--per-image") + 1] = "3"
    status, _, err = _run(argv, capsys)
    assert status == 2 and "per_image" in err


@pytest.mark.parametrize("flags, words", [
    (["--layer", "no_such_layer"], "no_such_layer"),
    (["--shard", "2/2"], "shard"),
    (["--grid", "0"], "grid"),
])
def test_bad_flags_are_one_clear_error(photos, tmp_path, capsys, flags, words):
    argv = [*BASE, "--images", str(photos), "--out", str(tmp_path / "aa"), "--quiet", *flags]
    status, _, err = _run(argv, capsys)
    assert status == 2 and words in err


def test_an_unknown_layout_is_refused_with_the_choices(photos, tmp_path, capsys):
    argv = [*BASE, "--images", str(photos), "--out", str(tmp_path / "aa"), "--layout", "mds"]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2 and "umap" in capsys.readouterr().err
