"""Tests for lucent_core.atlas: planning, seeding, the renderer, resume, the manifest, the CLI.

Process-level behaviour (kill -9, torchrun, concurrent shards, Ctrl-C) is in
test_atlas_processes.py; the HTML gallery in test_atlas_gallery.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lucent_core import atlas, objectives
from lucent_core.atlas import AtlasError, AtlasSettings, AtlasWriteError, Series
from lucent_core.atlas.runner import _finish_before_interrupt, _param_factory
from lucent_core.param import seeded_batch
from lucent_core.cli import main
from test_planted import OPPONENT, angle_difference, assert_renders_colour, dominant_orientation, \
    fixed_conv, gabor

FAST = {"steps": 12, "size": 24, "progress": False}


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, stride=2), nn.ReLU())


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def records(out: Path, series: str) -> dict[int, dict]:
    return {json.loads(p.read_text())["unit"]: json.loads(p.read_text())
            for p in sorted((out / series / "units").glob("*.json"))}


# --- planning ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (None, list(range(6))), ("all", list(range(6))), ("2:4", [2, 3]), ("0:6:2", [0, 2, 4]),
    ("5,1,5", [5, 1]), ("-1", [5]), ("4:", [4, 5]), (":2,3", [0, 1, 3]), ("0:6", list(range(6))),
    ("-2:", [4, 5]),
])
def test_parse_units(text, expected):
    assert atlas.parse_units(text, 6) == expected


@pytest.mark.parametrize("call, error, name", [
    (lambda: atlas.parse_units("7", 6), IndexError, "unit"),
    (lambda: atlas.parse_units("a:b", 6), ValueError, "units"),
    (lambda: atlas.parse_units("1:2:3:4", 6), ValueError, "units"),
    (lambda: atlas.parse_units("4:2", 6), ValueError, "units"),
    (lambda: atlas.parse_units("0:100", 6), IndexError, "units"),
    (lambda: atlas.parse_units("-7:", 6), IndexError, "units"),
])
def test_parse_units_rejects_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_plan_gives_every_unit_to_exactly_one_worker_with_the_same_batches():
    work = [(Series("a"), range(10)), (Series("b"), [5, 1, 7])]
    alone = atlas.plan_batches(work, 4)
    assert [b.units for b in alone] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9), (5, 1, 7)]
    for workers in (2, 3, 7):
        shares = [atlas.plan_batches(work, 4, w, workers) for w in range(workers)]
        assert sorted((b.series.dir, b.units) for share in shares for b in share) == \
            sorted((b.series.dir, b.units) for b in alone)


@pytest.mark.parametrize("call, error, name", [
    (lambda work: atlas.plan_batches(work, 4, 2, 2), ValueError, "worker"),
    (lambda work: atlas.plan_batches(work, 0), ValueError, "batch"),
    (lambda work: atlas.plan_batches(work, 1.5), TypeError, "batch"),
])
def test_plan_batches_rejects_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call([(Series("a"), range(10))])


def test_unit_seeds_depend_on_every_setting_but_not_on_where_the_weights_came_from():
    base = AtlasSettings(model="m", weights_sha256="ab")
    seed = atlas.unit_seed(base, Series("conv"), 3)
    assert atlas.unit_seed(AtlasSettings(model="m", weights_sha256="ab", weights="random"),
                           Series("conv"), 3) == seed
    others = [AtlasSettings(model="m", weights_sha256="ac"),
              AtlasSettings(model="m", weights_sha256="ab", steps=511),
              AtlasSettings(model="m", weights_sha256="ab", seed=1)]
    assert all(atlas.unit_seed(s, Series("conv"), 3) != seed for s in others)
    assert atlas.unit_seed(base, Series("conv", "neuron"), 3) != seed
    assert 0 <= seed < 2 ** 63


@pytest.mark.parametrize("call, error, name", [
    (lambda settings: settings(param="fft"), ValueError, "param"),
    (lambda settings: settings(steps=0), ValueError, "steps"),
    (lambda settings: settings(size=2.5), TypeError, "size"),
    (lambda settings: settings(lr="0.1"), ValueError, "lr"),
    (lambda settings: settings(lr=float("inf")), ValueError, "lr"),
    (lambda settings: settings(seed="abc"), TypeError, "seed"),
    (lambda settings: settings(seed=1.5), TypeError, "seed"),
    (lambda settings: settings(weights_seed=2**64), ValueError, "weights_seed"),
    (lambda settings: settings(decorrelate="no"), TypeError, "decorrelate"),
    (lambda settings: settings(redirected_relu=2), TypeError, "redirected_relu"),
    (lambda settings: settings(transforms="all"), ValueError, "transforms"),
    (lambda settings: settings(precision="fp8"), ValueError, "precision"),
])
def test_atlas_settings_reject_bad_values(call, error, name):
    with pytest.raises(error, match=name):
        call(lambda **bad: AtlasSettings(model="m", weights_sha256="ab", **bad))


@pytest.mark.parametrize("call, error, name", [
    (lambda: Series("conv", "unit"), ValueError, "kind"),
    (lambda: Series("conv", "direction"), ValueError, "directions"),
    (lambda: Series("conv", "channel", torch.ones(2, 3)), ValueError, "directions"),
    (lambda: Series("conv", "direction", torch.ones(3)), ValueError, "directions"),
])
def test_series_reject_bad_values(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_a_direction_series_takes_an_array():
    assert Series("conv", "direction", np.eye(4)).directions.shape == (4, 4)


def test_a_direction_row_with_nan_fails_that_unit_alone_and_keeps_the_numbering(tmp_path):
    # a dead SAE feature normalised as 0 / 0: the atlas's unit numbers must stay the row ids
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU())
    rows = torch.randn(3, 6)
    rows[1, 2] = float("nan")
    np.save(tmp_path / "sae.npy", rows.numpy())
    loaded = atlas.load_directions(tmp_path / "sae.npy")
    summary = atlas.render_atlas(net, tmp_path / "atlas",
                                 Series("1", "direction", loaded, source="sae.npy"),
                                 batch=3, **FAST)
    directory = tmp_path / "atlas" / "1--directions-sae"
    assert summary.failed == ["1--directions-sae:1"] and summary.rendered == 2
    failure = json.loads((directory / "units" / "00001.failed.json").read_text())
    assert failure["failed"] == "its direction row has NaN or infinite values"
    assert (directory / "units" / "00002.png").is_file()


@pytest.mark.parametrize("call, error, name", [
    # a known setting with a bad value is not called unknown
    (lambda net, out: atlas.render_atlas(net, out, "2", lr="0.1", steps=1, size=12),
     ValueError, "lr"),
    (lambda net, out: atlas.render_atlas(net, out, "2", stepz=1), ValueError, "stepz"),
    (lambda net, out: atlas.render_atlas(net, out, "2", weights_sha256="ab"), ValueError,
     "weights_sha256"),
    # an empty list once read as "" = every unit, and 1.5 as unit 1
    (lambda net, out: atlas.render_atlas(net, out, "2", units=[], **FAST), ValueError, "units"),
    (lambda net, out: atlas.render_atlas(net, out, "2", units=[0, 1.5], **FAST), TypeError,
     "units"),
    (lambda net, out: atlas.render_atlas(net, out, "2", units=[9], **FAST), IndexError, "unit"),
    (lambda net, out: atlas.render_atlas(net, out, [], **FAST), ValueError, "layer"),
    (lambda net, out: atlas.render_atlas(net, out, ["2", "2"], **FAST), ValueError, "series"),
    (lambda net, out: atlas.render_atlas(net, out, "9", **FAST), ValueError, "layer"),
    (lambda net, out: atlas.render_atlas(net, out, "2", **{**FAST, "size": 1}), ValueError,
     "size"),
    (lambda net, out: atlas.render_atlas(net, out, "2", batch=0, **FAST), ValueError, "batch"),
    (lambda net, out: atlas.render_atlas(net, out, "2", shard="x", **FAST), ValueError, "shard"),
    (lambda net, out: atlas.render_atlas(net, out, "2", shard=(2, 2), **FAST), ValueError,
     "shard"),
    (lambda net, out: atlas.render_atlas(net, out, "2", param="cppn", decorrelate=False,
                                         **FAST), ValueError, "decorrelate"),
])
def test_render_atlas_rejects_bad_input_and_leaves_no_atlas_behind(tiny, tmp_path, call, error,
                                                                   name):
    out = tmp_path / "atlas"
    with pytest.raises(error, match=name):
        call(tiny, out)
    assert not (out / "atlas.json").exists()
    assert not list(out.glob("*/units/*.png"))


# --- per-unit objectives and seeds ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["channel", "neuron", "direction"])
def test_unit_values_equal_the_catalogue_objectives(kind):
    acts = torch.randn(3, 5, 4, 6)
    units = [4, 0, 2]
    directions = torch.randn(5, 5)
    series = Series("l", kind, directions if kind == "direction" else None)
    rows = directions[units] if kind == "direction" else None
    values = atlas.unit_values(acts, series, torch.tensor(units), rows)
    for i, unit in enumerate(units):
        if kind == "direction":
            expected = objectives.direction("l", directions[unit], batch=i)({"l": acts})
        else:
            expected = getattr(objectives, kind)("l", unit, batch=i)({"l": acts})
        torch.testing.assert_close(values[i], expected)


@pytest.mark.parametrize("name", ["fourier", "pixel", "cppn"])
def test_each_image_starts_from_its_own_seed(name):
    factory = _param_factory(AtlasSettings(model="m", weights_sha256="ab", param=name, size=16))
    batch = seeded_batch(factory, [11, 22, 33])()
    torch.manual_seed(22)
    alone = factory(1)()
    torch.testing.assert_close(batch[1:2], alone)
    assert not torch.allclose(batch[0], batch[1])


# --- rendering -----------------------------------------------------------------------------

def test_atlas_end_to_end_manifest_matches_the_files(tiny, tmp_path):
    summary = atlas.render_atlas(tiny, tmp_path, ["2", Series("2", "neuron")], batch=4, **FAST)
    assert (summary.rendered, summary.skipped, summary.missing) == (12, 0, 0)
    assert summary.index == tmp_path / "index.html" and summary.index.is_file()
    manifest = atlas.load_manifest(tmp_path)
    assert manifest["settings"]["steps"] == 12
    assert [(s["dir"], s["kind"], s["count"], s["total"]) for s in manifest["series"]] == \
        [("2", "channel", 6, 6), ("2--neuron", "neuron", 6, 6)]
    on_disk = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/units/*.png"))
    listed = sorted(r["image"] for s in manifest["series"] for r in s["units"])
    assert listed == on_disk and len(on_disk) == 12
    for series in manifest["series"]:
        assert [r["unit"] for r in series["units"]] == list(range(6))
        assert Image.open(tmp_path / series["grid"]).size[0] > 3 * 24
        for record in series["units"]:
            assert record == json.loads((tmp_path / record["image"]).with_suffix(".json")
                                        .read_text())
            assert Image.open(tmp_path / record["image"]).size == (24, 24)
            assert record["weights_sha256"] == atlas.runner.state_dict_sha256(tiny)
            assert record["objective"] == f"{series['kind']}('2', {record['unit']})"
            assert len(record["history"]["steps"]) == len(record["history"]["values"]) == 12
            for key in ("seed", "device", "torch_version", "lucent_core_version", "seconds",
                        "finished_at", "command", "python", "transforms", "param", "lr"):
                assert key in record
    assert not list(tmp_path.rglob("*.partial"))


def test_recorded_activation_is_the_saved_pictures_activation(tiny, tmp_path):
    atlas.render_atlas(tiny, tmp_path, "2", units="1,4", batch=2, **FAST)
    for unit, record in records(tmp_path, "2").items():
        image = torch.from_numpy(pixels(tmp_path / record["image"])).float().permute(2, 0, 1)
        value = tiny[:3](image[None] / 255)[0, unit].mean()   # layer "2": the conv
        assert record["activation"] == pytest.approx(value.item(), rel=1e-4, abs=1e-6)


def test_a_unit_renders_the_same_alone_as_in_a_batch(tiny, tmp_path):
    atlas.render_atlas(tiny, tmp_path / "batch", "2", batch=6, **FAST)
    atlas.render_atlas(tiny, tmp_path / "alone", "2", units="4", batch=1, **FAST)
    np.testing.assert_array_equal(pixels(tmp_path / "alone/2/units/00004.png"),
                                  pixels(tmp_path / "batch/2/units/00004.png"))
    assert records(tmp_path / "alone", "2")[4]["seed"] == \
        records(tmp_path / "batch", "2")[4]["seed"]


def test_the_optimisation_raises_each_units_activation(tiny, tmp_path):
    atlas.render_atlas(tiny, tmp_path, "2", batch=6, **{**FAST, "steps": 40})
    for record in records(tmp_path, "2").values():
        values = record["history"]["values"]
        assert values[-1] > values[0]


def test_planted_units_render_their_pattern_in_an_atlas(tmp_path):
    """Gabor units draw their orientation, colour-opponent units their colour."""
    gabors = fixed_conv(torch.stack([gabor(a).expand(3, -1, -1) / 3 for a in (30.0, 120.0)]))
    atlas.render_atlas(gabors, tmp_path / "gabor", "1", batch=2, steps=128, size=128,
                       progress=False)
    for unit, angle in ((0, 30.0), (1, 120.0)):
        image = pixels(tmp_path / "gabor" / records(tmp_path / "gabor", "1")[unit]["image"])
        assert angle_difference(dominant_orientation(image / 255), angle) < 5
    # colour units are read before their ReLU, where they are linear (optimum: one colour)
    opponents = fixed_conv(OPPONENT.view(3, 3, 1, 1))
    atlas.render_atlas(opponents, tmp_path / "colour", "0", batch=2, steps=512, size=32,
                       progress=False)
    for unit, record in records(tmp_path / "colour", "0").items():
        assert_renders_colour(pixels(tmp_path / "colour" / record["image"]) / 255, unit)


def test_direction_series_render_one_image_per_row(tiny, tmp_path):
    directions = torch.eye(6)[[1, 3, 5]] + 0.1
    source = tmp_path / "dirs.npy"
    np.save(source, directions.numpy())
    series = Series("2", "direction", atlas.load_directions(source), source=str(source))
    summary = atlas.render_atlas(tiny, tmp_path / "atlas", series, batch=2, **FAST)
    assert summary.rendered == 3
    found = records(tmp_path / "atlas", "2--directions-dirs")
    assert sorted(found) == [0, 1, 2]
    assert found[2]["objective"] == f"direction('2', {source}[2])"
    assert "load_directions" in found[2]["python"] and str(source) in found[2]["command"]
    with pytest.raises(ValueError, match=r"directions for layer '2' must have shape \(N, 6\)"):
        atlas.render_atlas(tiny, tmp_path / "bad", Series("2", "direction", torch.ones(2, 3)),
                           **FAST)


# --- resume and refusal --------------------------------------------------------------------

def test_resume_renders_only_what_is_missing(tiny, tmp_path):
    atlas.render_atlas(tiny, tmp_path, "2", batch=4, **FAST)
    def pictures_and_records() -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in (tmp_path / "2/units").iterdir()
                if p.suffix in (".png", ".json")}

    before = pictures_and_records()
    (tmp_path / "2/units/00003.json").unlink()      # as if killed between PNG and record
    (tmp_path / "2/units/00005.png").unlink()
    with pytest.warns(UserWarning, match="rendering 1 unit again .*: 2:5$"):  # not 3: no record
        summary = atlas.render_atlas(tiny, tmp_path, "2", batch=4, **FAST)
    assert (summary.rendered, summary.skipped) == (2, 4)
    after = pictures_and_records()
    assert after.keys() == before.keys()
    changed = {p.name for p in before if before[p] != after[p]}
    assert changed <= {"00003.json", "00005.json", "00005.png", "00003.png"}
    for name in ("00003.png", "00005.png"):   # re-rendered alone: the same picture
        assert after[tmp_path / "2/units" / name] == before[tmp_path / "2/units" / name]
    assert atlas.render_atlas(tiny, tmp_path, "2", batch=4, **FAST).rendered == 0


def test_different_settings_are_refused_with_the_difference_named(tiny, tmp_path):
    atlas.render_atlas(tiny, tmp_path, "2", units="0", **FAST)
    with pytest.raises(AtlasError, match="steps: 12 in the atlas, 13 now"):
        atlas.render_atlas(tiny, tmp_path, "2", units="0", **{**FAST, "steps": 13})
    other = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(),
                          nn.Conv2d(8, 6, 3, stride=2), nn.ReLU())
    with pytest.raises(AtlasError, match="weights_sha256"):
        atlas.render_atlas(other, tmp_path, "2", units="0", **FAST)
    source = Series("2", "direction", torch.ones(2, 6), source="d.pt")
    atlas.render_atlas(tiny, tmp_path, source, **FAST)
    with pytest.raises(AtlasError, match="other series.*directions_sha256"):
        atlas.render_atlas(tiny, tmp_path, Series("2", "direction", torch.zeros(2, 6),
                                                  source="d.pt"), **FAST)
    with pytest.raises(ValueError, match="valid settings"):
        atlas.render_atlas(tiny, tmp_path, "2", stepz=3)


def test_more_units_and_layers_can_be_added_to_an_atlas(tiny, tmp_path):
    atlas.render_atlas(tiny, tmp_path, "2", units="0:2", **FAST)
    summary = atlas.render_atlas(tiny, tmp_path, ["2", "0"], units="0:4", **FAST)
    assert (summary.rendered, summary.skipped) == (6, 2)
    assert [s["count"] for s in atlas.load_manifest(tmp_path)["series"]] == [4, 4]


# --- failures ------------------------------------------------------------------------------

def test_a_full_disk_stops_with_a_clear_error_and_keeps_finished_units(tiny, tmp_path,
                                                                       monkeypatch):
    from lucent_core.atlas import store as store_module
    real = store_module.write_json
    calls = []

    def fill_up(path, data):
        calls.append(path)
        if len(calls) == 4:   # atlas.json, series.json, two records, then the disk is full
            real(path.with_name("x.tmp"), {})  # something half-done must not stay
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(store_module, "write_json", fill_up)
    with pytest.raises(AtlasWriteError, match="No space left on device.*run the same command"):
        atlas.render_atlas(tiny, tmp_path, "2", batch=3, **FAST)
    assert sorted(records(tmp_path, "2")) == [0]
    assert not list(tmp_path.rglob("*.partial"))
    monkeypatch.setattr(store_module, "write_json", real)
    summary = atlas.render_atlas(tiny, tmp_path, "2", batch=3, **FAST)
    assert (summary.rendered, summary.missing) == (5, 0)


def test_an_unusable_output_directory_is_a_clear_error(tiny, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(AtlasWriteError, match="cannot create the atlas directory"):
        atlas.render_atlas(tiny, blocker / "atlas", "2", **FAST)
    (tmp_path / "bad" / "atlas.json").parent.mkdir()
    (tmp_path / "bad" / "atlas.json").write_text("{half")
    with pytest.raises(AtlasError, match="not valid JSON"):
        atlas.render_atlas(tiny, tmp_path / "bad", "2", **FAST)


@pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows: the guard is off")
def test_the_same_share_cannot_run_twice_at_once_and_a_dead_holder_blocks_nothing(tiny,
                                                                                  tmp_path):
    out = tmp_path / "atlas"
    store = atlas.AtlasStore(out)
    with store.worker_lock((1, 2)):           # as if another process were rendering 1/2
        with pytest.raises(AtlasError, match=r"worker 1/2 of this atlas is already running "
                                             rf"\(pid {os.getpid()} on .*\); wait for it"):
            atlas.render_atlas(tiny, out, "2", shard="1/2", batch=2, **FAST)
        other = atlas.render_atlas(tiny, out, "2", shard="0/2", batch=2, **FAST)
        assert other.rendered == 4 and other.missing == 2   # another share runs meanwhile
        # another split of the units beside a running 1/2 would render the same units again
        with pytest.raises(AtlasError, match=r"worker 0/4 cannot start while worker 1/2 of this "
                                             r"atlas is running \(pid .*same --shard count"):
            atlas.render_atlas(tiny, out, "2", shard="0/4", batch=2, **FAST)
    # a holder killed with SIGKILL leaves the lock file but not the lock
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from lucent_core.atlas import AtlasStore\n"
        f"lock = AtlasStore({str(out)!r}).worker_lock((1, 2)); lock.__enter__()\n"
        "print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(AtlasError, match="already running"):
            atlas.render_atlas(tiny, out, "2", shard="1/2", batch=2, **FAST)
    finally:
        holder.kill()
        holder.wait()
    # the finished 0/2 and the killed 1/2 left their lock files: neither blocks another split
    resplit = atlas.render_atlas(tiny, out, "2", shard="0/4", batch=2, **FAST)
    assert resplit.rendered == 0 and resplit.skipped == 2   # 0/2 had rendered its units
    done = atlas.render_atlas(tiny, out, "2", shard="1/2", batch=2, **FAST)
    assert done.rendered == 2 and done.missing == 0 and (out / "index.html").is_file()


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_while_writing_waits_until_the_batch_is_written(signal_number):
    class Terminated(Exception):
        pass

    def terminate(number, frame):  # stands in for SIGTERM's default: ending the process
        raise Terminated
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        done = []
        # the held signal reaches the handler that was there before, once the block is done
        expected = KeyboardInterrupt if signal_number == signal.SIGINT else Terminated
        with pytest.raises(expected):
            with _finish_before_interrupt():
                os.kill(os.getpid(), signal_number)
                done.append("still writing")
        assert done == ["still writing"]
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_ctrl_c_during_a_render_keeps_the_finished_batches(tiny, tmp_path, monkeypatch):
    from lucent_core.atlas import runner
    real = runner.render_vis
    calls = []

    def interrupted_second_time(*args, **kwargs):
        calls.append(1)
        result = real(*args, **kwargs)
        result.interrupted = len(calls) == 2
        return result

    monkeypatch.setattr(runner, "render_vis", interrupted_second_time)
    summary = atlas.render_atlas(tiny, tmp_path, "2", batch=2, **FAST)
    assert summary.interrupted and summary.rendered == 2 and summary.index is None
    assert sorted(records(tmp_path, "2")) == [0, 1]
    assert "run the same command again to resume" in str(summary)


# --- command line --------------------------------------------------------------------------

ARGS = ["atlas", "--model", "atlas_models:tiny", "--random-weights", "--layer", "2",
        "--steps", "6", "--size", "24", "--batch", "4", "--quiet"]


def test_cli_atlas_and_index(tmp_path, capsys):
    assert main(ARGS + ["--units", "0:5", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "rendered 5 units" in out and "gallery:" in out
    record = records(tmp_path, "2")[3]
    assert record["weights"] == "random" and record["model"] == "atlas_models:tiny"
    assert "--random-weights" in record["command"] and "--units 3" in record["command"]
    (tmp_path / "manifest.json").unlink()
    assert main(["atlas-index", str(tmp_path)]) == 0
    assert "5 of 12 units" in capsys.readouterr().out
    assert len(atlas.load_manifest(tmp_path)["series"][0]["units"]) == 5


def test_cli_reproduce_command_gives_the_same_picture(tmp_path, capsys, monkeypatch):
    assert main(ARGS + ["--units", "0:4", "--out", str(tmp_path / "a")]) == 0
    command = records(tmp_path / "a", "2")[2]["command"].split()
    assert command[:2] == ["lucent-core", "atlas"]
    monkeypatch.chdir(tmp_path)
    assert main(command[1:] + ["--quiet"]) == 0
    reproduced = next(tmp_path.glob("reproduce-2-2/2/units/00002.png"))
    np.testing.assert_array_equal(pixels(reproduced), pixels(tmp_path / "a/2/units/00002.png"))


def test_a_unit_rendered_alone_gives_back_its_picture_from_a_batch(tmp_path, monkeypatch):
    # oneDNN's batch-1 convolutions round differently from larger batches'; a lone unit
    # rides with a copy of itself, so its reproduce command gives the very same pixels
    argv = ["atlas", "--model", "vgg16_hed", "--random-weights", "--layer", "block3_conv1",
            "--steps", "24", "--size", "32", "--quiet", "--no-index"]
    assert main(argv + ["--units", "0:2", "--batch", "2", "--out", str(tmp_path / "a")]) == 0
    monkeypatch.chdir(tmp_path)
    for unit in (0, 1):
        command = records(tmp_path / "a", "block3_conv1")[unit]["command"].split()
        assert main(command[1:] + ["--quiet", "--no-index"]) == 0
        alone = tmp_path / f"reproduce-block3_conv1-{unit}/block3_conv1/units/{unit:05d}.png"
        np.testing.assert_array_equal(
            pixels(alone), pixels(tmp_path / f"a/block3_conv1/units/{unit:05d}.png"))


@pytest.mark.parametrize("extra, name", [
    (["--neuron", "--directions", "d.pt"], "--directions"),
    (["--layer", "0", "--directions", "d.pt"], "--layer"),
    (["--shard", "2/2"], "shard"),
    (["--shard", "x"], "shard"),
    (["--units", "99"], "unit"),
    (["--layer", "nope"], "layer"),
    (["--threads", "0"], "--threads"),
])
def test_cli_atlas_errors_are_one_clear_line(tmp_path, capsys, extra, name):
    assert main(ARGS + extra + ["--out", str(tmp_path / "atlas")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lucent-core: error:") and name in err
    assert len(err.strip().splitlines()) == 1


# --- precision and torch.compile ---------------------------------------------------------------

def test_precision_is_a_setting_that_resume_compares(tiny, tmp_path):
    plain = AtlasSettings(model="m", weights_sha256="ab")
    assert "precision" not in plain.identity()  # seeds of float32 atlases never change
    assert AtlasSettings(model="m", weights_sha256="ab", precision="bfloat16"
                         ).identity()["precision"] == "bfloat16"
    atlas.render_atlas(tiny, tmp_path, "2", units="0:2", precision="bfloat16", **FAST)
    record = records(tmp_path, "2")[1]
    assert record["precision"] == "bfloat16"
    assert "--precision bfloat16" in record["command"]
    with pytest.raises(AtlasError, match="precision"):
        atlas.render_atlas(tiny, tmp_path, "2", units="0:2", **FAST)


def test_bfloat16_atlas_is_close_to_float32(tiny, tmp_path):
    a = atlas.render_atlas(tiny, tmp_path / "a", "2", units="0:3", **FAST)
    b = atlas.render_atlas(tiny, tmp_path / "b", "2", units="0:3", precision="bfloat16", **FAST)
    assert a.rendered == b.rendered == 3
    for unit in range(3):
        fp32 = records(tmp_path / "a", "2")[unit]["activation"]
        bf16 = records(tmp_path / "b", "2")[unit]["activation"]
        assert bf16 == pytest.approx(fp32, rel=0.1, abs=0.05)


def test_compile_reaches_the_render(tiny, tmp_path, monkeypatch):
    from lucent_core.atlas import runner
    seen = []
    real = runner.render_vis
    monkeypatch.setattr(runner, "render_vis",
                        lambda *a, **k: seen.append(k["compile"]) or real(*a, **k))
    assert main(ARGS + ["--units", "0:2", "--compile", "--out", str(tmp_path)]) == 0
    assert seen == [True]


def test_cli_render_takes_precision_and_rejects_unknown_ones(tmp_path, capsys):
    out = tmp_path / "u.png"
    assert main(["render", "--model", "atlas_models:tiny", "--random-weights", "--layer", "2",
                 "--unit", "1", "--steps", "3", "--size", "16", "--quiet",
                 "--precision", "bfloat16", "-o", str(out)]) == 0
    assert Image.open(out).size == (16, 16)
    with pytest.raises(SystemExit):
        main(["render", "--layer", "2", "--unit", "1", "--precision", "fp8"])
    assert "invalid choice" in capsys.readouterr().err


# --- quality scores and dataset examples in records -------------------------------------------

def test_records_carry_peak_activation_and_robustness(tiny, tmp_path):
    from lucent_core.units import unit_maps
    from lucent_core.recipes.quality import robustness
    atlas.render_atlas(tiny, tmp_path, "2", units="0:3", **FAST)
    scored = []
    for unit, record in records(tmp_path, "2").items():
        saved = torch.from_numpy(pixels(tmp_path / record["image"])).float().permute(2, 0, 1)[
            None] / 255
        with torch.no_grad():
            maps = unit_maps(tiny[:3](saved), Series("2"), torch.tensor([unit]))  # layer "2"
        assert record["peak_activation"] == pytest.approx(maps.max().item(), rel=1e-5)
        assert record["peak_activation"] >= record["activation"]
        expected = robustness(tiny, saved, "2", [unit]).item()
        if math.isnan(expected):      # the value on the picture is not positive: no ratio
            assert record["quality"]["robustness"] is None
        else:
            assert record["quality"]["robustness"] == pytest.approx(expected, rel=1e-4)
            scored.append(unit)
    assert scored


def write_examples(out: Path, series_dir: str, units: dict[int, list[float]]) -> None:
    """An examples.json as `lucent-core examples` writes it, with crops on disk."""
    crops = out / "examples" / series_dir / "crops"
    crops.mkdir(parents=True)
    listing = {}
    for unit, peaks in units.items():
        listing[str(unit)] = []
        for rank, peak in enumerate(peaks):
            name = f"{unit:05d}-{rank}.png"
            Image.new("RGB", (8, 8), (200, 40, 40)).save(crops / name)
            listing[str(unit)].append({"image": f"examples/{series_dir}/crops/{name}",
                                       "source": f"photos/{unit}-{rank}.jpg", "activation": peak,
                                       "position": [1, 2], "box": [0, 0, 8, 8]})
    (out / "examples" / series_dir / "examples.json").write_text(json.dumps(
        {"format": 1, "identity": {}, "images": "photos", "files": 9, "scanned": 8,
         "skipped": ["photos/broken.jpg"], "layer": "2", "kind": "channel", "top": 2,
         "size": 24, "units": listing}))


def test_index_attaches_examples_and_superstimulus_ratio(tiny, tmp_path):
    atlas.render_atlas(tiny, tmp_path, "2", units="0:3", **FAST)
    peaks = {u: r["peak_activation"] for u, r in records(tmp_path, "2").items()}
    best, other, rest = sorted(peaks, key=peaks.get, reverse=True)
    assert peaks[best] > 0
    write_examples(tmp_path, "2", {best: [peaks[best] / 2, 0.0], other: [-1.0, -2.0]})
    atlas.build_index(tmp_path)
    manifest = atlas.load_manifest(tmp_path)
    series = manifest["series"][0]
    assert series["examples"] == {"images": "photos", "scanned": 8, "skipped": 1, "top": 2}
    by_unit = {r["unit"]: r for r in series["units"]}
    assert by_unit[best]["quality"]["superstimulus"] == pytest.approx(2.0, rel=1e-5)
    assert by_unit[best]["examples"][0]["source"] == f"photos/{best}-0.jpg"
    assert by_unit[other]["quality"]["superstimulus"] is None  # no example activates the unit
    assert "examples" not in by_unit[rest] and "superstimulus" not in by_unit[rest]["quality"]
    page = (tmp_path / "2" / "units" / f"{best:05d}.html").read_text()
    assert "Dataset examples" in page and "superstimulus 2" in page
    assert f"photos/{best}-0.jpg" in page and f"examples/2/crops/{best:05d}-0.png" in page


def test_the_reproduce_command_keeps_every_digit_of_the_learning_rate():
    settings = AtlasSettings(model="vgg16_hed", weights_sha256="ab", lr=0.05 / 3)
    command = atlas.reproduce_command(settings, Series("block4_conv3"), 7)
    assert "--lr 0.016666666666666666 " in command
    assert float(command.split("--lr ")[1].split()[0]) == settings.lr  # the seed hashes it


def test_records_come_in_unit_order_past_unit_99999(tmp_path):
    units = tmp_path / "layer" / "units"
    units.mkdir(parents=True)
    empty = hashlib.sha256(b"").hexdigest()
    for unit in (9, 100000, 10001, 123456, 99999):
        (units / f"{unit:05d}.json").write_text(json.dumps(
            {"unit": unit, "image": f"layer/units/{unit:05d}.png", "sha256": empty}))
        (units / f"{unit:05d}.png").write_bytes(b"")
    order = [r["unit"] for r in atlas.AtlasStore(tmp_path).records(tmp_path / "layer")]
    assert order == [9, 10001, 99999, 100000, 123456]


def test_settings_of_an_atlas_with_no_finished_unit_can_be_dropped(tiny, tmp_path):
    out = tmp_path / "atlas"
    atlas.AtlasStore(out).open(AtlasSettings(model="Sequential", weights_sha256="ab",
                                             size=512))  # e.g. ran out of memory at once
    with pytest.raises(AtlasError, match=r"No unit of it is finished yet: to start it again "
                                         r"with the new settings, delete .*atlas.json"):
        atlas.render_atlas(tiny, out, "2", units="0:2", batch=2, **FAST)
    (out / "atlas.json").unlink()
    assert atlas.render_atlas(tiny, out, "2", units="0:2", batch=2, **FAST).rendered == 2
    with pytest.raises(AtlasError) as info:  # now units exist: no such advice
        atlas.render_atlas(tiny, out, "2", units="0:2", batch=2, **{**FAST, "steps": 5})
    assert "delete" not in str(info.value)


def test_one_layer_has_one_spelling_in_an_atlas(tmp_path):
    torch.manual_seed(0)
    nested = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(),
                           nn.Sequential(nn.Conv2d(4, 3, 3), nn.ReLU()))
    out = tmp_path / "atlas"
    atlas.render_atlas(nested, out, "2_1", **FAST)
    with pytest.raises(AtlasError, match=r"layer '2.1' is '2_1' in .* \(the same module\): "
                                         r"use '2_1'"):
        atlas.render_atlas(nested, out, "2.1", **FAST)
    assert sorted(p.name for p in out.glob("*/series.json")) == ["series.json"]
    # dataset examples under one spelling bind the atlas to it as well
    other = tmp_path / "examples-first"
    (other / "examples" / "2.1").mkdir(parents=True)
    (other / "examples" / "2.1" / "examples.json").write_text(
        json.dumps({"identity": {"layer": "2.1"}}))
    with pytest.raises(AtlasError, match="use '2.1'"):
        atlas.render_atlas(nested, other, "2_1", **FAST)


@pytest.mark.parametrize("name, content", [
    ("numpy-inside.pt", lambda p: torch.save(np.ones((2, 3), dtype=np.float32), p)),
    ("junk.pt", lambda p: p.write_bytes(b"not a torch file")),
    ("junk.npy", lambda p: p.write_bytes(b"not numpy")),
])
def test_an_unreadable_directions_file_is_one_clear_error(tmp_path, capsys, name, content):
    path = tmp_path / name
    content(path)
    with pytest.raises(ValueError, match=rf"cannot read the directions file .*{name}"):
        atlas.load_directions(path)
    rc = main(["atlas", "--model", "vgg16_hed", "--random-weights", "--layer", "block1_conv1",
               "--directions", str(path), "--out", str(tmp_path / "atlas"), "--quiet"])
    assert rc == 2 and "cannot read the directions file" in capsys.readouterr().err


def test_an_atlas_is_not_made_beside_dataset_examples_of_other_weights(tiny, tmp_path):
    out = tmp_path / "atlas"
    (out / "examples" / "2").mkdir(parents=True)
    (out / "examples" / "2" / "examples.json").write_text(
        json.dumps({"identity": {"layer": "2", "weights_sha256": "0" * 64}}))
    with pytest.raises(AtlasError, match=r"dataset examples of weights 0{64}, but this "
                                         r"model's weights are [0-9a-f]{64}"):
        atlas.render_atlas(tiny, out, "2", **FAST)
    assert not (out / "atlas.json").exists()


def test_a_zoo_model_with_random_weights_is_recorded_as_such(tmp_path):
    from lucent_core.models import create_model
    model = create_model("vgg16_hed", pretrained=False)
    assert model.weights_origin == "random"
    atlas.render_atlas(model, tmp_path, "block1_conv1", units="0", steps=2, size=16,
                       progress=False, index=False)
    record = json.loads((tmp_path / "block1_conv1" / "units" / "00000.json").read_text())
    assert record["weights"] == "random" and "--random-weights" in record["command"]


@pytest.mark.parametrize("weights_seed, atlas_seed", [(0, 0), (7, 0), (0, 3)])
def test_the_reproduce_command_of_random_weights_rebuilds_the_same_weights(
        tmp_path, monkeypatch, weights_seed, atlas_seed):
    from lucent_core.models import create_model
    model = create_model("vgg16_hed", pretrained=False, seed=weights_seed)
    atlas.render_atlas(model, tmp_path / "python", "block1_conv1", units="1", steps=2, size=16,
                       seed=atlas_seed, progress=False, index=False)
    record = json.loads((tmp_path / "python" / "block1_conv1" / "units" / "00001.json")
                        .read_text())
    assert ("--weights-seed" in record["command"]) == (weights_seed != atlas_seed)
    monkeypatch.chdir(tmp_path)
    argv = record["command"].split()[1:] + ["--quiet", "--no-index"]
    assert main(argv) == 0
    again = json.loads((tmp_path / "reproduce-block1_conv1-1" / "atlas.json").read_text())
    python = json.loads((tmp_path / "python" / "atlas.json").read_text())
    assert again["settings"]["weights_sha256"] == python["settings"]["weights_sha256"]


def test_a_unit_whose_objective_overflows_fails_alone_and_the_atlas_goes_on(tmp_path, capsys,
                                                                            monkeypatch):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(),
                        nn.Conv2d(8, 6, 3, stride=2), nn.ReLU())
    with torch.no_grad():
        net[2].weight[3] = 3e38          # channel 3 overflows to inf at once
    summary = atlas.render_atlas(net, tmp_path, "3", batch=3, **FAST)
    assert summary.rendered == 5 and summary.failed == ["3:3"] and summary.missing == 0
    assert "1 units failed (their objective stopped being finite): 3:3" in str(summary)
    failure = json.loads((tmp_path / "3" / "units" / "00003.failed.json").read_text())
    assert failure["failed"].startswith("the objective became inf at step 1")
    assert not (tmp_path / "3" / "units" / "00003.png").exists()
    # the others are exactly what they are without the failing unit in their batch
    clean = atlas.render_atlas(net, tmp_path / "alone", "3", units=[4, 5], batch=2, **FAST)
    assert clean.rendered == 2
    for unit in (4, 5):
        name = f"3/units/{unit:05d}.png"
        assert np.abs(pixels(tmp_path / name) - pixels(tmp_path / "alone" / name)).max() <= 1
    manifest = atlas.load_manifest(tmp_path)  # the index was built: nothing is missing
    assert [f["unit"] for f in manifest["series"][0]["failed"]] == [3]
    # a second run has nothing left to do
    again = atlas.render_atlas(net, tmp_path, "3", batch=3, **FAST)
    assert again.rendered == 0 and again.skipped == 6 and again.failed == []
    assert again.failed_earlier == 1 and "1 requested units failed in earlier runs" in str(again)


class _NaNGradient(torch.autograd.Function):
    """Identity forward; the gradient reaching channel 1 comes back NaN (where it is not 0)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:, 1] = torch.where(grad[:, 1] != 0, float("nan"), 0.0)
        return grad


class _BreaksChannelOne(nn.Module):
    """Channel 1's value stays finite, but its gradient is NaN: the update after the one step
    breaks that unit's image while the objective never saw a non-finite value."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NaNGradient.apply(x)


def test_a_unit_whose_image_breaks_in_the_last_update_fails_alone(tmp_path):
    net = nn.Sequential(nn.Identity(), _BreaksChannelOne())
    summary = atlas.render_atlas(net, tmp_path, "1", batch=2, steps=1, size=16,
                                 progress=False, index=False)
    assert summary.failed == ["1:1"] and summary.rendered == 2  # channels 0 and 2
    failure = json.loads((tmp_path / "1" / "units" / "00001.failed.json").read_text())
    assert failure["failed"] == "the image became NaN"
    assert (tmp_path / "1" / "units" / "00000.png").is_file()


def test_the_cli_exits_1_when_units_failed(tmp_path, capsys, monkeypatch):
    from lucent_core.atlas.runner import AtlasSummary
    monkeypatch.setattr(atlas, "render_atlas", lambda *a, **k: AtlasSummary(
        out=tmp_path, rendered=5, skipped=0, missing=0, seconds=1.0, failed=["3:3"]))
    rc = main(["atlas", "--model", "vgg16_hed", "--random-weights", "--layer", "block1_conv1",
               "--out", str(tmp_path), "--quiet"])
    assert rc == 1 and "1 units failed" in capsys.readouterr().out


def test_the_reproduce_command_writes_a_numpy_learning_rate_as_a_number():
    settings = AtlasSettings(model="vgg16_hed", weights_sha256="ab", lr=np.float64(0.05))
    assert "--lr 0.05 " in atlas.reproduce_command(settings, Series("block4_conv3"), 7)


def test_one_units_range_over_layers_of_different_widths_is_clipped_to_each(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU())
    summary = atlas.render_atlas(net, tmp_path, ["1", "3"], units="0:6", **FAST)
    assert summary.rendered == 4 + 6 and summary.missing == 0
    with pytest.raises(IndexError, match="reach past"):   # fits neither layer: an error
        atlas.render_atlas(net, tmp_path / "b", ["1", "3"], units="0:9", **FAST)


def test_two_spellings_of_one_layer_in_one_call_are_refused(tmp_path):
    nested = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    with pytest.raises(AtlasError, match="'0.1' and '0_1' are the same module"):
        atlas.render_atlas(nested, tmp_path, ["0.1", "0_1"], **FAST)
    assert not (tmp_path / "atlas.json").exists()


def test_an_atlas_of_an_older_model_definition_is_not_resumed(tmp_path):
    from lucent_core.models import create_model
    model = create_model("inceptionv1", pretrained=False)
    assert model.config.revision == 2
    atlas.render_atlas(model, tmp_path, "conv2d0", units="0:2", steps=2, size=32,
                       progress=False, index=False)
    settings = json.loads((tmp_path / "atlas.json").read_text())
    assert settings["identity"]["model_revision"] == 2
    # an atlas made by the previous definition (no revision recorded) is refused
    del settings["identity"]["model_revision"]
    (tmp_path / "atlas.json").write_text(json.dumps(settings))
    with pytest.raises(AtlasError, match=r"model_revision: None in the atlas, 2 now"):
        atlas.render_atlas(model, tmp_path, "conv2d0", units="2:4", steps=2, size=32,
                           progress=False, index=False)
    # models without a revision bump keep their identity (and unit seeds) as before
    assert "model_revision" not in AtlasSettings(model="tiny", weights_sha256="ab").identity()


def test_an_atlas_of_a_layer_without_positions_renders_and_scores_its_units(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    summary = atlas.render_atlas(net, tmp_path, "4", steps=3, size=16, progress=False)
    assert summary.rendered == 3 and not summary.failed
    records = atlas.load_manifest(tmp_path)["series"][0]["units"]
    assert [r["unit"] for r in records] == [0, 1, 2]
