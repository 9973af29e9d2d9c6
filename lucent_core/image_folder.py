"""Streaming a folder of images: every image file under a folder, read in order, resized and
centre-cropped to a square, by worker processes that leave stopping to the main process.

What dataset examples (and any scan over a folder) build on: :func:`image_files` lists the
files once (relative paths, sorted, so a scan is deterministic and resumable by position),
:class:`ImageFiles` reads them for a ``DataLoader`` (a file PIL cannot read is reported, never
fatal), :func:`collate_images` batches them as NumPy arrays, and
:func:`leave_stopping_to_the_main_process` is the workers' ``worker_init_fn``.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> folder = Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (40, 20)).save(folder / "a.png")
    >>> image_files(folder), load_square(folder / "a.png", 16).shape
    (['a.png'], (16, 16, 3))
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from lucent_core.io import centre_crop_box, open_photo

__all__ = ["IMAGE_SUFFIXES", "ImageFiles", "collate_images", "files_sha256", "image_files",
           "leave_stopping_to_the_main_process", "load_square", "scan_lines"]

#: File suffixes read as images (compared case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
PR_SET_PDEATHSIG = 1  # prctl option (<linux/prctl.h>): the signal to get when the parent dies
_NOT_REGULAR = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket",
                stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}


def image_files(folder: Path, skip: Path | None = None) -> list[str]:
    """The relative POSIX path of every image under ``folder``, sorted.

    Symbolic links to folders are followed (each real folder once); any other entry is kept
    whatever it is (a link to nothing, a named pipe, a device), so that reading it fails and it
    is counted and listed as skipped. ``skip`` (the output
    atlas, when it lies inside the folder) is left out, so earlier crops are never scanned.
    Only the relative paths are kept (a short string per file): folders of millions of images
    are fine.
    """
    if not folder.exists():
        raise FileNotFoundError(f"the images folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"images must be a folder of images, got the file {folder}")
    found, seen = [], {os.path.realpath(folder)}
    if skip is not None:
        seen.add(os.path.realpath(skip))  # as if already walked
    for root, dirs, files in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(dirs):  # each real folder once: no loops, no twins
            target = os.path.realpath(os.path.join(root, name))
            if target not in seen:
                seen.add(target)
                kept.append(name)
        dirs[:] = kept
        for name in files:
            path = Path(root) / name
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.append(path.relative_to(folder).as_posix())
    if not found:
        raise ValueError(f"no images in {folder} (or below) ending in {', '.join(IMAGE_SUFFIXES)}")
    found.sort()
    return found


def scan_lines(files: int, processed: int, seconds: float, resumed: int, outcome: str,
               skipped: Sequence[str], reasons: dict[str, str]) -> list[str]:
    """The lines a folder scan's summary opens with: files read, rate, resume point,
    ``outcome`` (what the scan kept), and the first unreadable files with their reasons.

    Example:
        >>> for line in scan_lines(3, 3, 1.5, 0, "9 kept", ["b.png"], {"b.png": "no image"}):
        ...     print(line)
        3 image files: 3 read in 1.5s (2.0 files/s); 9 kept, 1 skipped
        skipped (unreadable): b.png (no image)
    """
    rate = f" ({processed / seconds:.1f} files/s)" if processed and seconds > 0 else ""
    again = f", resumed after {resumed}" if resumed else ""
    lines = [f"{files} image files: {processed} read in {seconds:.1f}s{rate}{again}; "
             f"{outcome}, {len(skipped)} skipped"]
    if skipped:
        shown = [f"{name} ({reasons[name]})" if name in reasons else name for name in skipped[:5]]
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        lines.append("skipped (unreadable): " + ", ".join(shown) + more)
    return lines


def files_sha256(folder: Path, files: Sequence[str]) -> str:
    """Digest of the file list: every relative path and file size, in order."""
    digest = hashlib.sha256()
    for relative in files:
        path = folder / relative
        size = path.stat().st_size if path.exists() else -1  # -1: a link to nothing
        digest.update(f"{relative}\0{size}\n".encode())
    return digest.hexdigest()


def load_square(path: Path, size: int) -> np.ndarray:
    """The file as ``(size, size, 3)`` uint8 RGB: shorter side resized to ``size``, centre crop.

    EXIF orientation is applied, as image viewers do. Raises whatever PIL raises for a file
    it cannot read, and ``OSError`` for one that is not a regular file, which is never opened:
    opening a named pipe (or a link to one) would wait for a writer for ever.
    """
    mode = os.stat(path).st_mode  # at reading time: also right for a file replaced meanwhile
    if not stat.S_ISREG(mode):
        kind = _NOT_REGULAR.get(stat.S_IFMT(mode), "an unknown kind of file")
        raise OSError(f"not a regular file but {kind}, never opened: {path}")
    picture = open_photo(path)
    (height, width), (top, left) = centre_crop_box(picture.height, picture.width, size)
    if (width, height) != picture.size:
        picture = picture.resize((width, height), Image.Resampling.BILINEAR)  # antialiased
    return np.asarray(picture.crop((left, top, left + size, top + size)))


class ImageFiles(Dataset):
    """Files ``start..`` of the list as ``(file number, uint8 (3, S, S) or None, reason)``."""

    def __init__(self, folder: Path, files: Sequence[str], size: int, start: int = 0):
        self.folder, self.files, self.size, self.start = folder, files, size, start

    def __len__(self) -> int:
        return len(self.files) - self.start

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        number = self.start + i
        try:
            pixels = load_square(self.folder / self.files[number], self.size)
        except Exception as error:  # any file PIL cannot read is skipped, never fatal
            return number, None, f"{type(error).__name__}: {error}"[:200]
        return number, np.ascontiguousarray(pixels.transpose(2, 0, 1)), None


def collate_images(items: list) -> tuple[np.ndarray, np.ndarray | None, list, int]:
    """Drop unreadable files: (file numbers, images or None, [(number, reason)], file count).

    NumPy arrays, not tensors: a worker process then sends them through its pipe, where
    tensors would go through torch's file-descriptor sharing, whose server thread prints a
    traceback when the job is stopped mid-scan."""
    good = [(n, pixels) for n, pixels, _ in items if pixels is not None]
    bad = [(n, reason) for n, pixels, reason in items if pixels is None]
    numbers = np.array([n for n, _ in good], dtype=np.int64)
    images = np.stack([p for _, p in good]) if good else None
    return numbers, images, bad, len(items)


def leave_stopping_to_the_main_process(worker_id: int, parent: int | None = None) -> None:
    """In a DataLoader worker: Ctrl-C and a scheduler's SIGTERM reach the whole process group;
    the main process saves the scan's progress and stops. The worker ignores Ctrl-C and leaves
    quietly on SIGTERM (the DataLoader also ends its workers with SIGTERM): killed by the
    signal, it would make the DataLoader print its own error and traceback.

    The worker also dies with its parent: a main process killed by SIGKILL cannot stop its
    workers, which would otherwise live on, holding its stdout open. ``parent`` is the pid of
    the process that starts the worker, recorded there before the start: if it is no longer
    the worker's parent, the parent has died already and the worker leaves (None: unchecked).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
    linux = sys.platform.startswith("linux")
    if not (linux and ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0):
        threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    if parent is not None and os.getppid() != parent:  # died before the signal was asked for
        os._exit(0)


def _exit_when_orphaned(parent: int) -> None:
    """Without prctl (macOS): poll the parent pid every second and exit once it changes."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)
