"""Images out: tensors/arrays to PIL, PNG files, labelled grids, inline notebook display.

Image conventions: arrays are ``(H, W, C)`` or ``(B, H, W, C)`` (as :func:`render_vis`
returns), tensors are ``(C, H, W)`` or ``(B, C, H, W)``; values are floats in [0, 1] (or
``uint8``); ``C`` is 3 (RGB) or 4 (RGBA). Row 0 is the top of the image.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import uuid
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

from lucent_core.validate import integer, integers

ImageLike = Union[np.ndarray, torch.Tensor, Image.Image]

__all__ = ["centre_crop_box", "image_grid", "open_photo", "save_npy", "save_png", "sha256sum",
           "show", "to_numpy", "to_pil", "unique_suffix", "write_atomically"]

_OTHER_IMAGE_SUFFIXES = {suffix for suffix, kind in Image.registered_extensions().items()
                         if kind != "PNG"}  # ".jpg", ".webp", ...; "layer1.0.conv1" is fine
_RANGE_TOLERANCE = 1e-3  # float images may overshoot [0, 1] by rounding, no more


def open_photo(path: Union[str, os.PathLike]) -> Image.Image:
    """Read an image file as 8-bit RGB, upright: EXIF orientation applied, as image viewers
    do; 16-bit grey images keep their top 8 bits (PIL alone would clip them to white).

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "red.png")
        >>> Image.new("RGB", (4, 2), (255, 0, 0)).save(path)
        >>> open_photo(path).size
        (4, 2)
    """
    with Image.open(path) as opened:
        picture = ImageOps.exif_transpose(opened)
        if picture.mode.startswith("I"):  # 16-bit (or 32-bit integer) grey: keep the top byte
            values = np.asarray(picture).astype(np.int64)
            if picture.mode.startswith("I;16") or values.max(initial=0) > 255:
                values = values >> 8
            picture = Image.fromarray(values.clip(0, 255).astype(np.uint8), "L")
        return picture.convert("RGB")


def centre_crop_box(height: int, width: int, side: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where a ``height x width`` image goes when its shorter side is scaled to ``side`` and
    the centre ``side x side`` square is cut out: ``((scaled_h, scaled_w), (top, left))``.

    The one rule for every "resize and centre-crop" in the library (dataset examples,
    ``load_image(size=int)``).

    Example:
        >>> centre_crop_box(20, 40, 10)
        ((10, 20), (0, 5))
    """
    height, width, side = integers(1, height=height, width=width, side=side)
    scale = side / min(height, width)
    scaled = (max(side, round(height * scale)), max(side, round(width * scale)))
    return scaled, ((scaled[0] - side) // 2, (scaled[1] - side) // 2)


def to_numpy(images: ImageLike) -> np.ndarray:
    """Any supported image or batch (or a list of them, stacked) as a float32
    ``(B, H, W, C)`` array in [0, 1].

    uint8 images are divided by 255; float images must lie in [0, 1] (rounding errors up to
    1e-3 are clipped), anything else is an error rather than a silently clipped picture.

    Example:
        >>> to_numpy(torch.zeros(3, 4, 5)).shape
        (1, 4, 5, 3)
    """
    if isinstance(images, Image.Image):
        images = np.asarray(images.convert("RGBA" if "A" in images.getbands() else "RGB"))
    if isinstance(images, torch.Tensor):
        t = images.detach().cpu()
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        if t.dim() not in (3, 4) or t.shape[-3] not in (1, 3, 4):
            raise ValueError(f"images must be ([B,] C, H, W), C 1, 3 or 4, got {tuple(t.shape)}")
        if t.dim() == 3:
            t = t.unsqueeze(0)
        array = t.permute(0, 2, 3, 1).numpy()
    elif isinstance(images, np.ndarray):
        array = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim == 3:
            array = array[None]
        if array.ndim == 4 and array.shape[1] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            raise ValueError(f"images {images.shape} look channels-first: np.moveaxis(x, -3, -1)")
        if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
            raise ValueError(f"images must be ([B,] H, W, C), C 1, 3 or 4, got {images.shape}")
    elif isinstance(images, (list, tuple)) and images:  # a list of images: one batch
        parts = [to_numpy(image) for image in images]
        shapes = sorted({part.shape[1:] for part in parts})
        if len(shapes) != 1:
            raise ValueError(f"images of a list must have one size, got (H, W, C) {shapes}")
        return np.concatenate(parts)
    else:
        raise TypeError(f"images must be an array, tensor, PIL image or list, got {type(images)}")
    if array.dtype.kind not in "f":
        raise TypeError(f"images must be uint8 (0..255) or float in [0, 1], got {array.dtype}")
    if array.size and not -_RANGE_TOLERANCE <= array.min() <= array.max() <= 1 + _RANGE_TOLERANCE:
        raise ValueError(f"images must be in [0, 1] or uint8, got {array.min():g}..{array.max():g}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def to_pil(image: ImageLike) -> Image.Image:
    """One image as an 8-bit PIL image (RGB, or RGBA for 4 channels).

    Example:
        >>> to_pil(np.ones((2, 3, 3))).size  # (width, height)
        (3, 2)
    """
    array = to_numpy(image)
    if array.shape[0] != 1:
        raise ValueError(f"image must be one image (image_grid takes more), got {array.shape[0]}")
    pixels = np.round(array[0] * 255.0).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGBA" if pixels.shape[-1] == 4 else "RGB")


def image_grid(images: ImageLike | Sequence[ImageLike], ncols: int | None = None,
               labels: Sequence[str] | None = None, padding: int = 4,
               background: tuple[int, ...] = (255, 255, 255), label_height: int | None = None
               ) -> Image.Image:
    """Arrange images of equal size in a grid with even spacing and optional labels below.

    The result is exactly ``ncols * w + (ncols + 1) * padding`` wide and
    ``nrows * (h + label_height) + (nrows + 1) * padding`` high, where ``label_height`` is 0
    without labels and 14 by default with them.

    Args:
        images: a batch ``(B, H, W, C)`` / ``(B, C, H, W)`` or a list of images.
        ncols: columns (default: ``ceil(sqrt(B))``).
        labels: one text per image, drawn under it.
        padding: pixels between cells and around the edge.
        background: fill colour.
        label_height: pixels reserved under each cell for its label (none without labels).

    Example:
        >>> image_grid(np.zeros((5, 8, 8, 3)), ncols=3, padding=1).size
        (28, 19)
    """
    empty_list = isinstance(images, (list, tuple)) and not images
    batch = np.zeros((0, 1, 1, 3)) if empty_list else to_numpy(images)  # lists are stacked
    count, height, width, channels = batch.shape
    if count == 0:
        raise ValueError("images is empty; image_grid needs at least one image")
    if isinstance(labels, (str, bytes)):
        raise TypeError(f"labels must be a list of texts, one per image, got {labels!r}")
    if labels is not None and len(labels) != count:
        raise ValueError(f"labels must be {count} texts, one per image, got {len(labels)}")
    ncols = math.ceil(math.sqrt(count)) if ncols is None else integer("ncols", ncols, minimum=1)
    padding = integer("padding", padding, minimum=0)
    nrows = math.ceil(count / ncols)
    text_h = 0 if labels is None else (
        14 if label_height is None else integer("label_height", label_height, minimum=0))
    mode = "RGBA" if channels == 4 else "RGB"
    fill = parse_color("background", background)
    if mode == "RGB" and len(fill) == 4:
        raise ValueError(f"background {background!r} has an alpha value but the images are RGB")
    fill += (255,) if mode == "RGBA" and len(fill) == 3 else ()
    grid = Image.new(mode, (ncols * width + (ncols + 1) * padding,
                            nrows * (height + text_h) + (nrows + 1) * padding), fill)
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i in range(count):
        row, col = divmod(i, ncols)
        left = padding + col * (width + padding)
        top = padding + row * (height + text_h + padding)
        grid.paste(to_pil(batch[i]), (left, top))
        if labels is not None:
            draw.text((left, top + height + 1), str(labels[i]), fill=(0, 0, 0), font=font)
    return grid


def parse_color(name: str, value: object) -> tuple[int, ...]:
    """An ``(R, G, B)`` or ``(R, G, B, A)`` colour of integers 0..255 (a tuple, list or array)
    as a tuple of ints; what :func:`image_grid` and ``figure_grid`` take as colours."""
    color = list(value) if isinstance(value, (tuple, list, np.ndarray)) else []
    in_range = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255
                   for v in color)
    if len(color) not in (3, 4) or not in_range:
        raise ValueError(f"{name} must be (R, G, B) or (R, G, B, A) of ints 0..255, got {value!r}")
    return tuple(int(v) for v in color)


def save_png(images: ImageLike, path: Union[str, os.PathLike], labels: Sequence[str] | None = None
             ) -> Path:
    """Save one image as an 8-bit PNG, or a batch as a grid (see :func:`image_grid`).

    The file is written to a temporary name and renamed, so a crash never leaves a
    half-written PNG under ``path``.

    Example:
        >>> import tempfile
        >>> save_png(np.zeros((8, 8, 3)), Path(tempfile.mkdtemp()) / "black.png").name
        'black.png'
    """
    path = Path(path)
    if path.suffix.lower() in _OTHER_IMAGE_SUFFIXES:  # a .jpg name would get PNG bytes
        raise ValueError(f"path must end in .png (save_png writes PNG files), got {path}")
    array = to_numpy(images)
    picture = to_pil(array) if array.shape[0] == 1 and labels is None else \
        image_grid(array, labels=labels)
    return write_atomically(path, lambda partial: picture.save(partial, format="PNG"))


def sha256sum(path: str | os.PathLike) -> str:
    """SHA256 hex digest of a file, read in chunks.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "empty"; p.write_bytes(b"")
        0
        >>> sha256sum(p)[:12]
        'e3b0c44298fc'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_npy(path: Union[str, os.PathLike], array: np.ndarray) -> Path:
    """Save ``array`` as a ``.npy`` file, atomically (see :func:`write_atomically`).

    Example:
        >>> import tempfile
        >>> path = save_npy(Path(tempfile.mkdtemp()) / "eye.npy", np.eye(2))
        >>> np.load(path).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    def write(partial: Path) -> None:
        with open(partial, "wb") as stream:  # a file object: np.save would append ".npy" to a name
            np.save(stream, array)
    return write_atomically(path, write)


def unique_suffix() -> str:
    """A name part no other process writing the same folder uses, even on another machine
    sharing the file system, or in another container with the same process id.

    Example:
        >>> unique_suffix() != unique_suffix()
        True
    """
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def write_atomically(path: Union[str, os.PathLike], write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)``, then rename the result to ``path`` in one step.

    Readers never see a half-written ``path``: it either does not exist (or keeps its old
    content) or is complete. The temporary name is unique to the process, so processes
    writing the same file do not disturb each other; it is removed if ``write`` fails (a full
    disk, a crash inside ``write``). The parent directory is created if needed.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "note.txt"
        >>> write_atomically(target, lambda tmp: tmp.write_text("done")).read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{unique_suffix()}.partial")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def show(images: ImageLike, labels: Sequence[str] | None = None) -> None:
    """Display an image or a batch (as a labelled grid) inline in Jupyter.

    Example:
        >>> show(result.image)  # doctest: +SKIP
    """
    try:
        from IPython.display import display
    except ImportError as error:
        raise ImportError("show() needs IPython: pip install 'lucent_core[notebooks]'") from error
    array = to_numpy(images)
    display(to_pil(array) if array.shape[0] == 1 and labels is None else
            image_grid(array, labels=labels))
