"""Process-level robustness of ``lucent-core atlas``: real subprocesses killed, interrupted,
sharded and run under torchrun, compared pixel for pixel with one uninterrupted run.

Every run renders the same small atlas (two series of the tiny net in ``atlas_models``: layers
``0`` and ``2``, units 0..7 of each, cut into 8 batches of 2), long enough (~3 s of rendering)
to be stopped half-way. Subprocesses run with ``OMP_NUM_THREADS=1`` so CPU results are
bit-reproducible between processes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lucent_core.cli import main

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SIZE, STEPS, BATCH = 24, 96, 2
LAYERS, UNITS = ("0", "2"), range(8)
EXPECTED = {(layer, unit) for layer in LAYERS for unit in UNITS}   # (series dir, unit)
# (series, unit) in the order the CLI cuts batches: batch k = ORDER[2k:2k+2] goes to worker k % W
ORDER = [(layer, unit) for layer in LAYERS for unit in UNITS]
ARGS = ["atlas", "--model", "atlas_models:tiny", "--random-weights",
        *[w for layer in LAYERS for w in ("--layer", layer)], "--units", "0:8",
        "--size", str(SIZE), "--batch", str(BATCH), "--quiet"]
TEMP = re.compile(r"^(?P<name>.+)\.(?P<pid>\d+)\.(?P<kind>partial|new)$")  # write_atomically/_claim
WAIT_S = 120   # generous bound on waiting for a subprocess; only reached if something hangs


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), str(REPO),
                                                        env.get("PYTHONPATH")])))
    return env


def command(out: Path, *extra: str, steps: int = STEPS) -> list[str]:
    """The ``lucent-core atlas`` command line of this file's atlas."""
    return [sys.executable, "-m", "lucent_core.cli", *ARGS, "--steps", str(steps),
            "--out", str(out), *extra]


def _default_sigint() -> None:
    # a child inherits an ignored SIGINT (e.g. from a background shell) and Python would then
    # not turn it into KeyboardInterrupt: give every child the default disposition
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Processes:
    """Starts subprocesses (own session each) and kills any still running at teardown."""

    def __init__(self, logs: Path):
        self.logs, self.started = logs, []

    def start(self, argv: list[str], name: str) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "w") as stream:   # the child writes to its own copy of the descriptor
            proc = subprocess.Popen(argv, cwd=REPO, env=_env(), stdout=stream,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_default_sigint)  # noqa: PLW1509 (no threads)
        proc.log = log
        self.started.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen) -> tuple[int, str]:
        """Wait for the process; its exit status and everything it printed."""
        code = proc.wait(timeout=WAIT_S)
        return code, proc.log.read_text()

    def run(self, argv: list[str], name: str) -> str:
        """Run to the end; must succeed. Returns its output."""
        code, output = self.finish(self.start(argv, name))
        assert code == 0, f"{argv} failed with exit status {code}:\n{output}"
        return output

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)   # its own session: itself and children
                proc.wait()


@pytest.fixture
def procs(tmp_path):
    processes = Processes(tmp_path / "logs")
    yield processes
    processes.cleanup()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The atlas rendered by one uninterrupted single process."""
    out = tmp_path_factory.mktemp("reference") / "atlas"
    processes = Processes(out.parent / "logs")
    try:
        processes.run(command(out), "reference")
    finally:
        processes.cleanup()
    return out


# --- looking at an atlas on disk -------------------------------------------------------------

def record_paths(out: Path) -> list[Path]:
    return sorted(out.glob("*/units/*.json"))   # temporary names end in .partial / .new


def done(out: Path) -> set[tuple[str, int]]:
    return {(p.parent.parent.name, int(p.stem)) for p in record_paths(out)}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()   # decodes every byte: a truncated PNG raises here
        assert image.size == (SIZE, SIZE) and image.mode == "RGB", (path, image.size, image.mode)
        return np.asarray(image).astype(int)


def temp_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if TEMP.match(p.name))


def snapshot(out: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every finished unit's record and picture: inode, modification time and bytes.

    A rewrite, even with the same bytes, replaces the file (a new inode and time).
    """
    return {p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for record in record_paths(out) for p in (record, record.with_suffix(".png"))}


def check_consistent(out: Path) -> None:
    """What any state of an atlas, however its writers died, must satisfy."""
    for path in out.rglob("*"):
        if path.is_file() and not TEMP.match(path.name):
            if path.suffix == ".json":
                json.loads(path.read_text())   # every real JSON file is complete
            elif path.suffix == ".png" and path.parent.name == "units":
                pixels(path)                    # every real PNG decodes, at the right size
    for record in record_paths(out):            # a record is written after its picture
        assert record.with_suffix(".png").is_file(), f"{record} has no picture"
        data = json.loads(record.read_text())
        assert (data["series"], data["unit"]) == (record.parent.parent.name, int(record.stem))


def check_complete(out: Path) -> dict:
    """Every requested unit has a picture and a record, and the manifest lists exactly them."""
    check_consistent(out)
    assert done(out) == EXPECTED
    for path in out.glob("*/units/*"):   # pictures, records, gallery pages, temporary files
        assert re.fullmatch(r"\d{5}\.(png|json|html)", path.name) or TEMP.match(path.name), path
    manifest = json.loads((out / "manifest.json").read_text())
    listed = [(s["dir"], r["unit"]) for s in manifest["series"] for r in s["units"]]
    assert sorted(listed) == sorted(EXPECTED)   # each exactly once
    for series in manifest["series"]:
        assert series["count"] == len(UNITS) and series["total"] == 8 + 4 * (series["dir"] == "2")
        with Image.open(out / series["grid"]) as grid:
            grid.load()
        for record in series["units"]:
            assert record == json.loads((out / series["dir"] / "units" /
                                         f"{record['unit']:05d}.json").read_text())
    assert (out / "index.html").is_file()
    return manifest


def max_pixel_difference(out: Path, reference: Path) -> dict[tuple[str, int], int]:
    """Per unit, the largest difference (0..255) between the two atlases' pictures."""
    return {(s, u): int(np.abs(pixels(out / s / "units" / f"{u:05d}.png") -
                               pixels(reference / s / "units" / f"{u:05d}.png")).max())
            for s, u in sorted(EXPECTED)}


def assert_same_pictures(out: Path, reference: Path) -> None:
    differences = max_pixel_difference(out, reference)
    assert set(differences.values()) == {0}, f"pixels differ from one process: {differences}"
    for s, u in EXPECTED:   # same seeds, same objective values from the same pictures
        mine, theirs = (json.loads((root / s / "units" / f"{u:05d}.json").read_text())
                        for root in (out, reference))
        assert mine["seed"] == theirs["seed"]
        assert mine["activation"] == pytest.approx(theirs["activation"], rel=1e-5, abs=1e-6)


def workers(out: Path) -> dict[tuple[str, int], str]:
    return {(json.loads(p.read_text())["series"], int(p.stem)): json.loads(p.read_text())["worker"]
            for p in record_paths(out)}


def expected_workers(count: int) -> dict[tuple[str, int], str]:
    """Batch k of the full request goes to worker k % count."""
    return {key: f"{(i // BATCH) % count}/{count}" for i, key in enumerate(ORDER)}


def wait_until(condition, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the atlas process ended (status {proc.returncode}) before {what}:\n"
                        f"{proc.log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.005)


# --- kill -9 and resume ----------------------------------------------------------------------

def test_kill_9_repeatedly_then_resume_completes_without_redoing_finished_units(
        tmp_path, procs, reference):
    out = tmp_path / "atlas"
    seed = random.randrange(2 ** 32)
    print(f"kill delays drawn with random.Random({seed})")   # shown if the test fails
    rng = random.Random(seed)
    # how long one batch takes on this machine, from the reference run's records
    batch_s = BATCH * float(np.median([json.loads(p.read_text())["seconds"]
                                       for p in record_paths(reference)]))
    kept: dict[str, tuple] = {}   # every finished unit's record + PNG, as first seen
    killed = []
    for cycle in range(3):
        before = done(out)
        proc = procs.start(command(out), f"killed-{cycle}")
        # let it finish at least one new batch, then kill it at a random moment while it
        # renders (or writes) the next one: at most 2 of the 8 batches are done per cycle
        wait_until(lambda before=before: len(done(out)) > len(before), proc,
                   "its first batch was recorded")
        time.sleep(rng.uniform(0.0, 0.75 * batch_s))
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        assert procs.finish(proc)[0] == -signal.SIGKILL
        killed.append(proc.pid)

        check_consistent(out)
        now = done(out)
        print(f"kill {cycle}: {len(now)} of {len(EXPECTED)} units recorded, "
              f"{len(list(out.glob('*/units/*.png')))} pictures, temporary files "
              f"{[p.name for p in temp_files(out)]}")
        assert before < now < EXPECTED, "each kill must land mid-run, after some progress"
        current = snapshot(out)
        for name, content in kept.items():   # nothing recorded before was touched again
            assert current[name] == content, f"{name} changed after it was recorded"
        kept.update(current)

    # What kill -9 at the most unlucky moments leaves behind, made on purpose (the random kills
    # above rarely hit a window this short): a batch cut between its units' records (unit B
    # has its picture, here a wrong one, but no record), temporary files of writes that never
    # finished, some of them older than the index's 10-minute clean-up age.
    recorded = sorted(done(out), key=ORDER.index)
    partner = next(key for key in recorded
                   if ORDER.index(key) % BATCH == 1 and ORDER[ORDER.index(key) - 1] in recorded)
    series, unit = partner
    units_dir = out / series / "units"
    (units_dir / f"{unit:05d}.json").unlink()
    del kept[f"{series}/units/{unit:05d}.json"], kept[f"{series}/units/{unit:05d}.png"]
    Image.new("RGB", (SIZE, SIZE)).save(units_dir / f"{unit:05d}.png")
    some_png = (units_dir / f"{unit - 1:05d}.png").read_bytes()
    pid = killed[-1]
    stale = [units_dir / f"{unit:05d}.json.{pid}.partial", out / f"manifest.json.{pid}.partial"]
    fresh = units_dir / f"{unit:05d}.png.{pid}.partial"
    stale[0].write_text('{"unit": ')
    stale[1].write_text('{"series": [')
    fresh.write_bytes(some_png[: len(some_png) // 2])
    for path in stale:
        os.utime(path, (time.time() - 3600,) * 2)

    output = procs.run(command(out), "final")
    missing = len(EXPECTED) - len(kept) // 2
    assert f"rendered {missing} units" in output and f"{len(kept) // 2} already done" in output

    check_complete(out)
    final = snapshot(out)
    for name, content in kept.items():
        assert final[name] == content, f"{name} was rendered again after it was recorded"
    # the unit whose record was lost was rendered again, alone (its partner was done)
    record = json.loads((units_dir / f"{unit:05d}.json").read_text())
    assert record["batch"] == 1
    # temporary files: the stale ones are cleaned up by the index, a recent one (it could
    # belong to a live writer) is left alone but never taken for a real file; any others come
    # from the killed processes, never from the one that finished
    left = temp_files(out)
    assert not set(stale) & set(left)
    assert fresh in left
    assert {int(TEMP.match(p.name)["pid"]) for p in left} <= set(killed)

    # resuming changes no picture: the atlas equals one uninterrupted run, pixel for pixel,
    # including units rendered in smaller batches than in the reference
    assert_same_pictures(out, reference)


# --- torchrun and shards ---------------------------------------------------------------------

def test_torchrun_two_ranks_render_the_same_atlas_as_one_process(tmp_path, procs, reference):
    out = tmp_path / "atlas"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2", "-m", *command(out)[2:]]
    output = procs.run(torchrun, "torchrun")
    assert "worker 0/2: rendered 8 units" in output and "worker 1/2: rendered 8 units" in output
    check_complete(out)
    assert workers(out) == expected_workers(2)   # both ranks rendered, each its own batches
    assert temp_files(out) == []
    assert_same_pictures(out, reference)


def test_two_concurrent_shards_in_one_directory_render_the_same_atlas(tmp_path, procs, capsys,
                                                                      reference):
    out = tmp_path / "atlas"
    shards = [procs.start(command(out, "--shard", f"{i}/2"), f"shard-{i}") for i in range(2)]
    outputs = []
    for proc in shards:
        code, output = procs.finish(proc)
        assert code == 0, output
        outputs.append(output)
    assert all("rendered 8 units" in output for output in outputs)
    # whichever shard saw the atlas complete built the index (both may have, atomically)
    assert any("gallery:" in output for output in outputs), outputs
    first = check_complete(out)
    assert workers(out) == expected_workers(2)
    assert temp_files(out) == []
    assert_same_pictures(out, reference)

    # had neither seen it complete, `lucent-core atlas-index` builds the same manifest
    (out / "manifest.json").unlink()
    (out / "index.html").unlink()
    assert main(["atlas-index", str(out)]) == 0
    assert capsys.readouterr().out.count(" 8 of ") == 2
    again = check_complete(out)
    assert again["series"] == first["series"]


# --- Ctrl-C ----------------------------------------------------------------------------------

def test_ctrl_c_keeps_finished_units_says_how_to_resume_and_a_rerun_completes(
        tmp_path, procs, reference):
    out = tmp_path / "atlas"
    proc = procs.start(command(out), "interrupted")
    wait_until(lambda: len(done(out)) >= 1, proc, "a unit was recorded")
    proc.send_signal(signal.SIGINT)
    code, output = procs.finish(proc)
    assert code == 130, output
    assert "interrupted: every finished unit is saved; run the same command again to resume" \
        in output
    assert "Traceback" not in output
    # no half-written files: no temporary file is left, every picture has its record
    assert temp_files(out) == []
    check_consistent(out)
    pictures = {(p.parent.parent.name, int(p.stem)) for p in out.glob("*/units/*.png")}
    kept = done(out)
    assert pictures == kept and set() < kept < EXPECTED
    assert not (out / "manifest.json").exists()
    recorded = snapshot(out)

    output = procs.run(command(out), "resumed")
    assert f"{len(kept)} already done" in output
    check_complete(out)
    assert all(snapshot(out)[name] == content for name, content in recorded.items())
    assert_same_pictures(out, reference)


# --- different settings ----------------------------------------------------------------------

def tree(out: Path) -> dict[str, tuple[int, bytes]]:
    return {p.relative_to(out).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(out.rglob("*")) if p.is_file()}


def test_rerun_with_other_settings_is_refused_and_changes_nothing(tmp_path, procs, capsys,
                                                                  reference):
    out = tmp_path / "atlas"
    shutil.copytree(reference, out)
    before = tree(out)
    # the real command line, with another --steps
    code, output = procs.finish(procs.start(command(out, steps=48), "other-steps"))
    assert code == 2, output
    assert "rendered with other settings" in output
    assert "steps: 96 in the atlas, 48 now" in output
    assert output.strip().count("\n") == 0, output   # one clear line, no traceback
    assert tree(out) == before
    # the same for another setting, in this process
    assert main(command(out, "--lr", "0.1")[3:]) == 2
    assert "lr: 0.05 in the atlas, 0.1 now" in capsys.readouterr().err
    assert tree(out) == before


# --- a scheduler's SIGTERM to a dataset-example scan with worker processes ----------------------

def test_sigterm_to_the_whole_group_of_an_examples_scan_saves_progress_without_a_traceback(
        tmp_path, procs):
    # the scheduler signals every process of the job: the DataLoader's workers too; they
    # leave stopping to the main process, which saves the scan and exits 130
    photos, out = tmp_path / "photos", tmp_path / "atlas"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(400):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(
            photos / f"p{i:03d}.png")
    proc = procs.start([sys.executable, "-m", "lucent_core.cli", "examples", "--model",
                        "vgg16_hed", "--random-weights", "--layer", "block3_conv1", "--units",
                        "0:4", "--images", str(photos), "--out", str(out), "--size", "64",
                        "--batch-size", "2", "--workers", "2", "--quiet"], "examples")
    progress = out / "examples" / "block3_conv1" / "progress.pt"
    wait_until(progress.exists, proc, "the scan saved its progress")
    os.killpg(proc.pid, signal.SIGTERM)
    code, output = procs.finish(proc)
    assert code == 130, output
    assert "interrupted: the progress is saved" in output and "Traceback" not in output
    assert progress.exists()
