"""`lucent-core examples` in real subprocesses: a named pipe in the folder never blocks the
scan, and the image-reading workers die with a main process killed by SIGKILL.

Each test bounds its wait, so that a regression fails instead of hanging CI, and kills what it
started (the subprocess has its own session: its process group holds its workers too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch import nn

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
WAIT_S = 60   # bound on a subprocess that should take seconds; only reached if it hangs


class Pause(nn.Module):
    """Sleeps on scan batches (more than one image), so the scan lasts while it is killed."""

    def forward(self, x):
        if x.shape[0] > 1:
            time.sleep(0.2)
        return x


def slow_tiny() -> nn.Module:
    """A tiny net whose scan takes ~0.2 s a batch: the CLI imports it as
    ``test_examples_faults:slow_tiny``."""
    return nn.Sequential(Pause(), nn.Conv2d(3, 4, 3), nn.ReLU())


def examples(photos: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lucent_core.cli", "examples", "--model",
            "test_examples_faults:slow_tiny", "--random-weights", "--layer", "1", "--images",
            str(photos), "--out", str(out), "--quiet", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), str(REPO),
                                                        os.environ.get("PYTHONPATH")]))}


def make_photos(folder: Path, count: int, side: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = (rng.random((side, side, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{i:03d}.png")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_named_pipes_and_devices_are_skipped_never_opened(tmp_path):
    photos = tmp_path / "photos"
    make_photos(photos, 3, 12)
    os.mkfifo(tmp_path / "real")
    (photos / "fifo.jpg").symlink_to(tmp_path / "real")   # opening it would wait for a writer
    os.mkfifo(photos / "pipe.png")
    (photos / "null.webp").symlink_to(os.devnull)
    (photos / "folder.jpg").mkdir()                       # a folder: walked, never opened
    try:
        done = subprocess.run(examples(photos, tmp_path / "out", "--workers", "0", "--size",
                                       "8"), cwd=REPO, env=env(), capture_output=True,
                              text=True, timeout=WAIT_S)
    except subprocess.TimeoutExpired:   # subprocess.run has killed it
        pytest.fail("the scan blocked on a named pipe")
    assert done.returncode == 0, done.stderr
    assert "6 image files: 6 read" in done.stdout and "3 scanned, 3 skipped" in done.stdout
    assert "fifo.jpg (OSError: not a regular file but a named pipe" in done.stdout
    assert "null.webp (OSError: not a regular file but a device" in done.stdout


def process_table() -> dict[int, tuple[str, int]]:
    """pid -> (state, parent pid) of every process, from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:   # gone meanwhile
            continue
        table[int(stat.parent.name)] = (fields[0], int(fields[1]))
    return table


def alive(pid: int) -> bool:
    """Running: not gone and not a zombie (an orphan's zombie waits for whoever reaps it)."""
    return process_table().get(pid, ("Z", 0))[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_die_with_a_main_process_killed_by_sigkill(tmp_path):
    photos, log = tmp_path / "photos", tmp_path / "log.txt"
    make_photos(photos, 200, 80)     # 8 x 64 x 64 RGB a batch: more than a pipe holds
    with open(log, "w") as stream:
        main = subprocess.Popen(examples(photos, tmp_path / "out", "--workers", "2", "--size",
                                         "64", "--batch-size", "8"), cwd=REPO, env=env(),
                                stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + WAIT_S
        while len(workers) < 2:
            assert main.poll() is None, f"ended before its workers started:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no workers started:\n{log.read_text()}"
            time.sleep(0.05)
            workers = [pid for pid, (_, ppid) in process_table().items() if ppid == main.pid]
        time.sleep(1)                # the workers fill the pipe to the busy main process
        os.kill(main.pid, signal.SIGKILL)
        main.wait(timeout=WAIT_S)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if alive(pid)], "workers outlived their main process"
    finally:
        try:
            os.killpg(main.pid, signal.SIGKILL)   # its session: the main process and workers
        except ProcessLookupError:
            pass
        main.wait(timeout=WAIT_S)
