"""A damaged or edited atlas directory: clear errors naming the file, or the unit rendered again.

Every test starts from a copy of one small finished atlas (units 0..3 of layer ``2`` of a tiny
net, no index yet), damages it the way a person, a file manager or a disk would, and then
resumes it and/or builds its index.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from lucent_core import atlas
from lucent_core.atlas import AtlasError, AtlasSettings, Series
from lucent_core.cli import main

FAST = {"steps": 8, "size": 24, "batch": 4, "progress": False}


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, stride=2), nn.ReLU())


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "atlas"
    atlas.render_atlas(tiny, out, "2", units="0:4", index=False, **FAST)
    return out


@pytest.fixture
def out(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "atlas"))


def resume(tiny, out: Path, **settings) -> atlas.AtlasSummary:
    return atlas.render_atlas(tiny, out, "2", **{"units": "0:4", **FAST, **settings})


def units(out: Path) -> Path:
    return out / "2" / "units"


def edit_record(out: Path, number: int, **changes) -> Path:
    path = units(out) / f"{number:05d}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return path


def nothing_indexed(out: Path) -> bool:
    return not any((out / name).exists() for name in ("manifest.json", "index.html", "2/grid.png"))


# --- 4: records of the wrong shape, files that are not records ------------------------------

@pytest.mark.parametrize("content", ["{}", "[1, 2]", '"text"', '{"unit": "1", "image": 3}'])
def test_a_record_of_the_wrong_shape_is_an_error_naming_it(tiny, out, content):
    (units(out) / "00001.json").write_text(content)
    with pytest.raises(AtlasError, match=r"00001\.json"):
        atlas.build_index(out)
    with pytest.raises(AtlasError, match=r"00001\.json"):
        resume(tiny, out)
    assert nothing_indexed(out)


@pytest.mark.parametrize("stem", ["notes", "00001 copy", "1", "00001.old"])
def test_a_json_and_png_pair_that_is_no_units_files_is_refused_before_anything_is_written(
        tiny, out, stem):
    for suffix in (".json", ".png"):
        shutil.copy(units(out) / f"00001{suffix}", units(out) / f"{stem}{suffix}")
    with pytest.raises(AtlasError, match=f"{stem}.*move it out"):
        atlas.build_index(out)
    assert nothing_indexed(out)   # checked before the manifest or a contact sheet is written
    with pytest.raises(AtlasError, match=stem):
        resume(tiny, out)


# --- 5 and 6: pictures damaged or replaced ---------------------------------------------------

def test_records_carry_their_pictures_sha256(out):
    for unit in range(4):
        record = json.loads((units(out) / f"{unit:05d}.json").read_text())
        assert record["sha256"] == hashlib.sha256(
            (units(out) / f"{unit:05d}.png").read_bytes()).hexdigest()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 16] = b"\0" * 16
    path.write_bytes(bytes(data))


def replace_by_unit_0(path: Path) -> None:
    shutil.copy(path.with_name("00000.png"), path)


@pytest.mark.parametrize("damage", [truncate, garble, replace_by_unit_0, Path.unlink])
def test_a_damaged_or_replaced_picture_is_refused_by_the_index_and_rendered_again(
        tiny, out, damage):
    picture = units(out) / "00002.png"
    before = picture.read_bytes()
    damage(picture)
    if picture.exists():
        with pytest.raises(AtlasError, match=r"00002\.png.*SHA256.*run the atlas"):
            atlas.build_index(out)
        assert nothing_indexed(out)
    with pytest.warns(UserWarning, match=r"rendering 1 unit again.*2:2") as warned:
        summary = resume(tiny, out)
    assert len([w for w in warned if "again" in str(w.message)]) == 1   # said once
    assert (summary.rendered, summary.skipped, summary.missing) == (1, 3, 0)
    assert picture.read_bytes() == before          # the same picture as the first time
    assert summary.index is not None and (out / "2" / "grid.png").is_file()


def test_a_record_whose_unit_was_edited_is_refused(tiny, out):
    edit_record(out, 2, unit=3)   # the manifest would list unit 3 twice
    with pytest.raises(AtlasError, match=r"00002\.json.*unit 3"):
        atlas.build_index(out)
    with pytest.raises(AtlasError, match=r"00002\.json"):
        resume(tiny, out)


# --- 8: a record's image names a file outside its units folder -------------------------------

@pytest.mark.parametrize("image", ["../outside.png", "2/units/../../outside.png", "outside.png",
                                   "/tmp/outside.png", "2/units/00001.png"])
def test_a_record_may_only_name_its_own_picture(tiny, out, image):
    outside = out / "outside.png"
    shutil.copy(units(out) / "00002.png", outside)   # a valid picture with the right hash
    edit_record(out, 2, image=image)
    with pytest.raises(AtlasError, match=r"00002\.json.*image"):
        atlas.build_index(out)
    assert nothing_indexed(out)
    with pytest.raises(AtlasError, match=r"00002\.json"):
        resume(tiny, out)


# --- 7: atlas.json deleted -------------------------------------------------------------------

def test_without_atlas_json_the_records_settings_guard_a_resume(tiny, out):
    (out / "atlas.json").unlink()
    with pytest.raises(AtlasError, match=r"00000\.json.*steps: 8 in the atlas, 9 now"):
        resume(tiny, out, steps=9)
    assert not (out / "atlas.json").exists()
    summary = resume(tiny, out)          # the same settings: atlas.json is written again
    assert (summary.rendered, summary.skipped) == (0, 4)
    assert atlas.AtlasStore(out).settings().steps == 8


def test_without_atlas_json_other_precision_is_refused_too(tiny, out):
    (out / "atlas.json").unlink()
    with pytest.raises(AtlasError, match="precision"):
        resume(tiny, out, precision="bfloat16")


# --- 3: the thread count ---------------------------------------------------------------------

def test_records_state_the_thread_count_and_commands_set_it(out):
    record = json.loads((units(out) / "00001.json").read_text())
    assert record["threads"] == torch.get_num_threads()
    assert f" --threads {torch.get_num_threads()} " in record["command"]
    settings = AtlasSettings(model="m", weights_sha256="ab")
    assert "--threads 3 " in atlas.reproduce_command(settings, Series("2"), 1, threads=3)
    assert "--threads" not in atlas.reproduce_command(settings, Series("2"), 1)  # on a GPU


def test_the_thread_count_is_no_setting_of_the_atlas(tiny, out):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert resume(tiny, out, units="0:5").rendered == 1   # adds unit 4, keeps the others
    finally:
        torch.set_num_threads(threads)
    assert json.loads((units(out) / "00004.json").read_text())["threads"] == 2
    assert "threads" not in json.loads((out / "atlas.json").read_text())["settings"]


def test_cli_atlas_threads_sets_the_thread_count_before_rendering(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    try:
        assert main(["atlas", "--model", "atlas_models:tiny", "--random-weights", "--layer",
                     "2", "--units", "0:2", "--steps", "4", "--size", "24", "--quiet",
                     "--threads", "2", "--out", str(tmp_path)]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    record = json.loads((tmp_path / "2" / "units" / "00001.json").read_text())
    assert record["threads"] == 2 and "--threads 2 " in record["command"]


# --- 14: the progress bar --------------------------------------------------------------------

class CountingBar:
    made: list["CountingBar"] = []

    def __init__(self, total=None, **kwargs):
        self.total, self.n, self.updates = total, 0, []
        CountingBar.made.append(self)

    def update(self, n=1):
        self.n += n
        self.updates.append(n)

    def set_postfix_str(self, *args, **kwargs):
        pass

    def close(self):
        pass


def test_the_progress_bar_counts_every_render_step_of_every_unit(tiny, out, monkeypatch):
    from lucent_core.atlas import runner
    monkeypatch.setattr(runner, "tqdm", CountingBar)
    CountingBar.made = []
    for name in ("00001.json", "00001.png", "00003.json", "00003.png"):
        (units(out) / name).unlink()
    resume(tiny, out, units="0:6", batch=2, progress=True, index=False)
    (bar,) = CountingBar.made
    todo = 4   # units 1 and 3 (removed), 4 and 5 (new)
    assert bar.total == bar.n == todo * FAST["steps"]
    # batches (0, 1), (2, 3), (4, 5): one update per step, of that batch's units to render
    assert bar.updates == [1] * 8 + [1] * 8 + [2] * 8


def test_records_older_than_hashes_are_trusted_while_their_picture_decodes(tiny, out):
    for number in range(4):
        record = json.loads((units(out) / f"{number:05d}.json").read_text())
        record.pop("sha256")
        (units(out) / f"{number:05d}.json").write_text(json.dumps(record))
    picture = units(out) / "00002.png"
    picture.write_bytes(picture.read_bytes()[:200])  # truncated: that unit only is rendered again
    with pytest.warns(UserWarning, match="2:2"):
        summary = resume(tiny, out)
    assert (summary.rendered, summary.skipped) == (1, 3)
    atlas.build_index(out)
