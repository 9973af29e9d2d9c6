"""Device housekeeping for render loops: small host tensors moved without stalling a GPU,
host memory handed back on the CPU, and allocations too large for a device refused before
they are tried."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

import torch

__all__ = ["DeviceCopies", "check_memory", "distributed_rank", "free_memory", "image_bytes",
           "parse_shard", "release_freed_host_memory", "to_device"]

MEMINFO = "/proc/meminfo"  # Linux: MemAvailable, what can be allocated without swapping


def free_memory(device: "torch.device | str | None" = None) -> int | None:
    """Bytes that ``device`` (default: torch's default device) can still allocate, or None
    where that cannot be told (MPS, XPU, meta, ...).

    The CPU: ``MemAvailable`` of ``/proc/meminfo``, else (no such file: macOS, Windows) the
    physical memory; a CUDA GPU: the free memory ``torch.cuda.mem_get_info`` reports.

    Example:
        >>> free_memory("cpu") > 0, free_memory("meta")
        (True, None)
    """
    device = torch.device(device) if device is not None else _default_device()
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open(MEMINFO) as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return None


def _default_device() -> torch.device:
    """Where torch allocates new tensors (``torch.set_default_device``; torch >= 2.3 says)."""
    get = getattr(torch, "get_default_device", None)
    return get() if get is not None else torch.device("cpu")


def image_bytes(batch: int, height: int, width: int, factor: float = 1.0) -> int:
    """The bytes of ``factor`` float32 ``(batch, 3, height, width)`` images: what a
    parameterisation needs is this times the few image-sized tensors its kind keeps.

    Example:
        >>> image_bytes(2, 128, 128, factor=4)
        1572864
    """
    return int(batch * 3 * height * width * 4 * factor)


def check_memory(what: str, needed: int, device: "torch.device | str | None" = None,
                 advice: str = "use a smaller size or batch") -> None:
    """Refuse, with a ``MemoryError`` naming ``what`` (the arguments and their values), an
    allocation of about ``needed`` bytes that ``device`` (default: torch's default device)
    cannot hold; before it is tried, rather than after gigabytes were allocated.

    Example:
        >>> check_memory("width=8", 1024, "cpu")   # fits: nothing happens
        >>> check_memory("batch=10**15", 10**20, "cpu")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        MemoryError: batch=10**15 needs about 100000.0 PB, but the CPU has ... available: ...
    """
    device = torch.device(device) if device is not None else _default_device()
    free = free_memory(device)
    if free is not None and needed > free:
        where = "the CPU has" if device.type == "cpu" else f"{device} has"
        state = "available" if device.type == "cpu" else "free"
        raise MemoryError(f"{what} needs about {_size(needed)}, but {where} {_size(free)} "
                          f"{state}: {advice}")


def _size(count: float) -> str:
    """``count`` bytes in decimal units: ``"4.3 GB"``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if count < 1000:
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1000
    return f"{count:.1f} PB"


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, Windows, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_host_memory() -> None:
    """Give memory that freed tensors left in glibc's heaps back to the system.

    A CPU render allocates and frees the same large tensors every step; glibc keeps much of
    what is freed (its mmap threshold rises after the first big frees, and channels-last
    reorders fragment the heap), so without this a 512-step render's resident memory grows
    by megabytes a step (4.7 GB for a 128 px VGG16 render). No-op without glibc.

    Example:
        >>> release_freed_host_memory()
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def to_device(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None
              ) -> torch.Tensor:
    """``tensor`` on ``device`` (in ``dtype``); a CPU-to-GPU copy goes through pinned memory
    and does not wait, so the host keeps queueing work (a plain ``.to`` synchronises).

    Example:
        >>> to_device(torch.ones(2), torch.device("cpu"), torch.float64).dtype
        torch.float64
    """
    if dtype is not None:
        tensor = tensor.to(dtype)
    if tensor.device.type == "cpu" and torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class DeviceCopies:
    """A constant tensor with a copy kept per device and dtype it is used with, so a step on
    a GPU does not copy it from the host again.

    Example:
        >>> vector = DeviceCopies(torch.tensor([1, 2]))
        >>> vector.like(torch.zeros(1, dtype=torch.float64))
        tensor([1., 2.], dtype=torch.float64)
    """

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor
        self._copies: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def on(self, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The tensor on ``device`` in ``dtype`` (default: its own dtype)."""
        key = (torch.device(device), dtype or self.tensor.dtype)
        if key not in self._copies:
            with torch.inference_mode(False):  # a normal tensor even if first used there
                copy = to_device(self.tensor, *key)
                self._copies[key] = copy.clone() if copy.is_inference() else copy
        return self._copies[key]

    def like(self, t: torch.Tensor) -> torch.Tensor:
        """The tensor on ``t``'s device, in ``t``'s dtype."""
        return self.on(t.device, t.dtype)


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun (or an initialised process group), else (0, 1).

    Example:
        >>> distributed_rank()  # a plain process
        (0, 1)
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else (0, 1)


def parse_shard(shard: "tuple[int, int] | str") -> tuple[int, int]:
    """A share of the work, ``(i, n)`` or ``"i/n"``, as ``(i, n)`` with ``0 <= i < n``.

    Example:
        >>> parse_shard("1/4"), parse_shard((0, 1))
        ((1, 4), (0, 1))
    """
    try:
        index, count = (int(p) for p in shard.split("/")) if isinstance(shard, str) else shard
    except (TypeError, ValueError):
        raise ValueError(f"shard {shard!r}: write it as i/n, e.g. 0/4 (shards 0..n-1)") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: the index must be in 0..{count - 1}")
    return index, count
