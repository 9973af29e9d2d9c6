"""Figures for papers: labelled grids, high-resolution re-rendering, PNGs with a JSON side-car.

Three pieces:

* :func:`figure_grid`: images in a grid with row labels on the left, column labels on top and
  an optional title, with spacing that is exactly computable (see :class:`FigureLayout`).
* :func:`render_at` / :func:`save_high_res`: evaluate an optimised parameterisation at another
  size from the *same* parameters (Fourier images by zero-padding their spectrum, CPPNs by
  sampling their coordinates more densely, pixel images by interpolation).
* :func:`panel_record` / :func:`save_figure`: write the figure as a PNG and, next to it, a JSON
  side-car holding what is needed to reproduce every panel.

Side-car format (``fig.json`` next to ``fig.png``, format ``"lucent_core.figure"``, version 1)::

    {
      "format": "lucent_core.figure", "format_version": 1,
      "image": "fig.png",                   # the PNG's file name, in the same directory
      "png_sha256": "...",                  # of the PNG file's bytes
      "size": {"width": 400, "height": 150},  # pixels
      "mode": "RGB" | "RGBA",
      "layout": {"rows": 1, "cols": 3, "cell": [h, w], "padding": 8, ...},  # null if unknown
      "versions": {"lucent_core": ..., "torch": ..., "numpy": ..., "pillow": ..., "python": ...},
      "created": "2026-01-01T12:00:00+00:00",
      "panels": [{"row": 0, "col": 0, "label": ..., "objective": ..., ...}, ...],
      "metadata": {...}                     # free-form keyword arguments of save_figure
    }

Each panel holds the keys :data:`PANEL_KEYS` (``None`` where unknown); see
:func:`panel_record`. Values are plain JSON: no NaN or infinity (they become ``null``).

Conventions: sizes are ``(height, width)`` unless named otherwise; PIL's ``.size`` is
``(width, height)``; row 0 is the top row; images are floats in [0, 1] or ``uint8``, as in
:mod:`lucent_core.io`.
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import json
import math
import operator
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np
import PIL
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from lucent_core._validate import is_index, positive_int, positive_ints, size_pair
from lucent_core.io import ImageLike, save_png, to_numpy, to_pil, write_atomically
from lucent_core.models.config import registry_name
from lucent_core.models.weights import state_dict_sha256
from lucent_core.param.alpha import RGBAImage
from lucent_core.param.cppn import CPPNImage
from lucent_core.param.images import ImageParam
from lucent_core.param.maco import MacoImage
from lucent_core.param.multiscale import LaplacianPyramid, LowResImage
from lucent_core.param.spatial import FourierImage, PixelImage
from lucent_core.render import RenderResult, describe_transforms

__all__ = ["DEFAULT_FONT_SIZE", "FIGURE_FORMAT", "FIGURE_FORMAT_VERSION", "FigureLayout",
           "INTERPOLATIONS", "PANEL_KEYS", "figure_grid", "fourier_resample", "panel_record",
           "render_at", "save_figure", "save_high_res"]

#: Default label font size in pixels.
DEFAULT_FONT_SIZE = 12
#: The side-car's ``"format"`` and ``"format_version"`` values.
FIGURE_FORMAT = "lucent_core.figure"
FIGURE_FORMAT_VERSION = 1
#: Every panel record of a side-car has these keys (``None`` where unknown).
PANEL_KEYS = ("row", "col", "label", "objective", "objective_value", "model", "weights_sha256",
              "param", "image_size", "batch_index", "steps", "thresholds", "interrupted",
              "seed", "transforms", "render", "versions", "extra")
#: Valid ``interpolation`` values of :func:`render_at` (pixel images only).
INTERPOLATIONS = ("bicubic", "bilinear")
#: Key under which :func:`figure_grid` records its layout in the image's ``info`` dict.
LAYOUT_INFO_KEY = "lucent_core.figure_layout"

PathLike = Union[str, os.PathLike]
Colour = Sequence[int]


# --- figure grids ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FigureLayout:
    """Where everything goes in a :func:`figure_grid`; all numbers are pixels.

    From the top: a title band (``title_band`` high), a column-label band (``top_band``
    high), then the grid; the row-label band (``left_band`` wide) runs down the left side
    below the title. Cells are ``cell_h x cell_w`` with ``padding`` between them and
    around the grid (not between the bands and the edge of the picture), so::

        width  = left_band + cols * cell_w + (cols + 1) * padding
        height = title_band + top_band + rows * cell_h + (rows + 1) * padding

    Band sizes for a font size ``s``: ``title_band = 3 * s`` with a title, ``top_band = 2 * s``
    with column labels, ``left_band = row_label_width`` (default ``6 * s``) with row labels;
    each is 0 otherwise.

    Example:
        >>> layout = FigureLayout(rows=2, cols=3, cell_h=32, cell_w=48, padding=4,
        ...                       top_band=24)
        >>> layout.size  # (width, height), as PIL reports it
        (160, 100)
        >>> layout.cell_box(1, 2)  # (left, top, right, bottom) of row 1, column 2
        (108, 64, 156, 96)
    """

    rows: int
    cols: int
    cell_h: int
    cell_w: int
    padding: int
    title_band: int = 0
    top_band: int = 0
    left_band: int = 0

    def __post_init__(self) -> None:
        positive_ints(rows=self.rows, cols=self.cols, cell_h=self.cell_h, cell_w=self.cell_w)
        positive_ints(0, padding=self.padding, title_band=self.title_band,
                      top_band=self.top_band, left_band=self.left_band)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the whole figure."""
        width = self.left_band + self.cols * self.cell_w + (self.cols + 1) * self.padding
        height = (self.title_band + self.top_band + self.rows * self.cell_h
                  + (self.rows + 1) * self.padding)
        return width, height

    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of a cell (right and bottom exclusive)."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise IndexError(f"cell ({row}, {col}) is outside the {self.rows} x {self.cols} "
                             f"grid (rows 0..{self.rows - 1}, columns 0..{self.cols - 1})")
        left = self.left_band + self.padding + col * (self.cell_w + self.padding)
        top = self.title_band + self.top_band + self.padding + row * (self.cell_h + self.padding)
        return left, top, left + self.cell_w, top + self.cell_h


def _colour(name: str, value: object) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) not in (3, 4) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255
            for v in value):
        raise ValueError(f"{name} must be an (R, G, B) or (R, G, B, A) tuple of integers "
                         f"0..255, got {value!r}")
    return tuple(int(v) for v in value)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in font at ``size`` pixels (works offline); the fixed-size bitmap font on
    Pillow builds without FreeType or older than 10.1."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, ImportError, OSError):
        return ImageFont.load_default()


def _labels(name: str, labels: Sequence[object] | None, count: int) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of {count} labels, got the string "
                         f"{labels!r}")
    labels = list(labels)
    if len(labels) != count:
        raise ValueError(f"got {len(labels)} {name} for {count} "
                         f"{'rows' if name == 'row_labels' else 'columns'}; use None or '' "
                         "for no label")
    return ["" if label is None else str(label) for label in labels]


def _as_cells(images: object, count: int) -> list[Image.Image | None]:
    """The grid's images as 8-bit PIL images (RGB or RGBA), None for empty cells."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        batch = to_numpy(images)
        items: list[object] = [batch[i] for i in range(batch.shape[0])]
    elif isinstance(images, Image.Image):
        items = [images]
    elif isinstance(images, (list, tuple)):
        items = list(images)
    else:
        raise TypeError(f"images must be a list of images (arrays, tensors, PIL images or None) "
                        f"or a batch array/tensor, got {type(images).__name__}")
    if len(items) != count:
        raise ValueError(f"got {len(items)} images for a grid of {count} cells; give exactly "
                         "rows * cols images in row-major order, None for an empty cell")
    cells: list[Image.Image | None] = []
    for i, item in enumerate(items):
        if item is None:
            cells.append(None)
            continue
        array = to_numpy(item)
        if array.shape[0] != 1:
            raise ValueError(f"images[{i}] is a batch of {array.shape[0]} images; each cell "
                             "takes one image (split the batch into the list)")
        cells.append(to_pil(array))
    return cells


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Any) -> tuple[int, int, int, int]:
    """``(width, height, x_offset, y_offset)`` of the inked box of ``text``."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top, left, top


def _draw_text(draw: ImageDraw.ImageDraw, text: str, font: Any, box: tuple[int, int, int, int],
               fill: tuple[int, ...], align: str, what: str, advice: str) -> None:
    """Draw ``text`` inside ``box`` (left, top, right, bottom), centred vertically and
    horizontally (``align="centre"``) or against the right edge; an error if it does not fit."""
    width, height, dx, dy = _text_size(draw, text, font)
    box_w, box_h = box[2] - box[0], box[3] - box[1]
    if width > box_w or height > box_h:
        raise ValueError(f"{what} {text!r} needs {width} x {height} px but has {box_w} x "
                         f"{box_h} px; {advice}")
    x = box[0] + (box_w - width) // 2 if align == "centre" else box[2] - width
    y = box[1] + (box_h - height) // 2
    draw.text((x - dx, y - dy), text, font=font, fill=fill)


def figure_grid(images: "Sequence[ImageLike | None] | np.ndarray | torch.Tensor", rows: int,
                cols: int, *, cell: "int | tuple[int, int] | None" = None, padding: int = 8,
                row_labels: Sequence[str | None] | None = None,
                col_labels: Sequence[str | None] | None = None, title: str | None = None,
                background: Colour | None = (255, 255, 255), font_size: int = DEFAULT_FONT_SIZE,
                row_label_width: int | None = None, text_color: Colour = (0, 0, 0)
                ) -> Image.Image:
    """A labelled grid of images for a paper, with exactly computable spacing.

    Every image is resized to ``cell`` (LANCZOS; an image of another aspect ratio is
    stretched; one already of that size is pasted unchanged). Column labels are centred in a
    band above their column, row labels right-aligned in a band left of their row, the title
    centred in a band on top. The size is given by :class:`FigureLayout`::

        width  = left_band + cols * cell_w + (cols + 1) * padding
        height = title_band + top_band + rows * cell_h + (rows + 1) * padding

    with ``title_band = 3 * font_size`` (title drawn at ``3 * font_size // 2``),
    ``top_band = 2 * font_size``, ``left_band = row_label_width or 6 * font_size``, each 0
    when there is no title / no column labels / no row labels. A label that does not fit its
    band (or a column label wider than ``cell_w + padding``) is an error, never cut off.

    The result is RGBA if any image is RGBA, if ``background`` has 4 values or is ``None``
    (transparent); RGBA images are pasted with their alpha unchanged (not composited). The
    layout is recorded in ``result.info["lucent_core.figure_layout"]``, which
    :func:`save_figure` reads.

    Args:
        images: ``rows * cols`` images in row-major order (arrays, tensors or PIL images, RGB
            or RGBA; ``None`` leaves a cell empty), or a batch array/tensor.
        rows, cols: grid shape.
        cell: cell size, an int (square) or ``(height, width)``; default: the first image's.
        padding: pixels between cells and around the grid.
        row_labels: one label per row (``None`` or ``""``: none), or None for no band.
        col_labels: one label per column, or None for no band.
        title: drawn on top, or None for no band.
        background: ``(R, G, B)`` or ``(R, G, B, A)`` fill, or None for transparent.
        font_size: label font size in pixels (PIL's built-in font).
        row_label_width: width of the row-label band (default ``6 * font_size``).
        text_color: ``(R, G, B)`` of the labels.

    Returns:
        A PIL image, ``FigureLayout(...).size`` pixels.

    Example:
        >>> grid = figure_grid([np.zeros((16, 16, 3))] * 6, rows=2, cols=3, padding=2,
        ...                    col_labels=["a", "b", "c"], font_size=10)
        >>> grid.size  # (3 * 16 + 4 * 2, 2 * 10 + 2 * 16 + 3 * 2)
        (56, 58)
    """
    rows, cols = positive_int("rows", rows), positive_int("cols", cols)
    padding = positive_int("padding", padding, minimum=0)
    font_size = positive_int("font_size", font_size)
    row_texts = _labels("row_labels", row_labels, rows)
    col_texts = _labels("col_labels", col_labels, cols)
    if row_label_width is not None and row_texts is None:
        raise ValueError("row_label_width is given but there are no row_labels")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a string or None, got {type(title).__name__}")
    fill_colour = None if background is None else _colour("background", background)
    ink = _colour("text_color", text_color)
    cells = _as_cells(images, rows * cols)
    if cell is None:
        first = next((c for c in cells if c is not None), None)
        if first is None:
            raise ValueError("every cell is empty: give cell=(height, width)")
        cell_h, cell_w = first.height, first.width
    else:
        cell_h, cell_w = size_pair("cell", cell)
    if row_texts is None:
        left_band = 0
    elif row_label_width is None:
        left_band = 6 * font_size
    else:
        left_band = positive_int("row_label_width", row_label_width)
    layout = FigureLayout(
        rows=rows, cols=cols, cell_h=cell_h, cell_w=cell_w, padding=padding,
        title_band=3 * font_size if title else 0,
        top_band=2 * font_size if col_texts is not None else 0,
        left_band=left_band)

    rgba = (fill_colour is None or len(fill_colour) == 4
            or any(c is not None and c.mode == "RGBA" for c in cells))
    mode = "RGBA" if rgba else "RGB"
    if fill_colour is None:
        fill_colour = (0, 0, 0, 0)
    elif rgba and len(fill_colour) == 3:
        fill_colour = fill_colour + (255,)
    if rgba and len(ink) == 3:
        ink = ink + (255,)
    elif not rgba and len(ink) == 4:
        raise ValueError("text_color has an alpha value but the figure is RGB; give (R, G, B) "
                         "or an RGBA background")
    figure = Image.new(mode, layout.size, fill_colour)
    for index, picture in enumerate(cells):
        if picture is None:
            continue
        if picture.size != (cell_w, cell_h):
            picture = picture.resize((cell_w, cell_h), Image.Resampling.LANCZOS)
        if picture.mode != mode:
            picture = picture.convert(mode)
        left, top, _, _ = layout.cell_box(*divmod(index, cols))
        figure.paste(picture, (left, top))  # no mask: RGBA pixels are copied, not composited

    draw = ImageDraw.Draw(figure)
    font = _font(font_size)
    grid_top = layout.title_band + layout.top_band
    if title:
        _draw_text(draw, title, _font(3 * font_size // 2),
                   (0, 0, layout.size[0], layout.title_band), ink, "centre", "the title",
                   "use a smaller font_size or a shorter title")
    for col, text in enumerate(col_texts or []):
        if text:
            left, _, right, _ = layout.cell_box(0, col)
            box = (left - padding // 2, layout.title_band, right + (padding + 1) // 2, grid_top)
            _draw_text(draw, text, font, box, ink, "centre", "column label",
                       "use larger cells, a smaller font_size or a shorter label")
    for row, text in enumerate(row_texts or []):
        if text:
            _, top, _, bottom = layout.cell_box(row, 0)
            _draw_text(draw, text, font, (0, top, layout.left_band, bottom), ink, "right",
                       "row label", "pass a larger row_label_width, a smaller font_size or a "
                       "shorter label")
    figure.info[LAYOUT_INFO_KEY] = {
        **asdict(layout), "cell": [cell_h, cell_w], "font_size": font_size,
        "row_labels": row_texts, "col_labels": col_texts, "title": title,
        "background": None if background is None else list(fill_colour)}
    return figure


# --- re-rendering at another size -----------------------------------------------------------

def _phase(freqs: torch.Tensor, old: int, new: int, dtype: torch.dtype,
           device: torch.device) -> torch.Tensor:
    """``exp(2 pi i k delta / old)``: moves the samples so pixel centres line up
    (``align_corners=False``): new pixel ``j`` sits at old position
    ``(j + 0.5) * old / new - 0.5``."""
    delta = 0.5 * (old / new - 1.0)
    angle = freqs.to(torch.float64) * (2.0 * math.pi * delta / old)
    return torch.polar(torch.ones_like(angle), angle).to(device=device, dtype=dtype)


def _resample_full(spectrum: torch.Tensor, old: int, new: int, dim: int) -> torch.Tensor:
    """Along ``dim``, a full (complex-signal) spectrum in ``fftfreq`` order, ``norm="forward"``:
    ``old`` coefficients to ``new``."""
    spectrum = spectrum.movedim(dim, -1)
    keep = min(old, new)
    positive, negative = (keep + 1) // 2, (keep - 1) // 2   # frequencies 0..p-1 and -q..-1
    shape = spectrum.shape[:-1] + (new,)
    out = spectrum.new_zeros(shape)
    if new > old:
        out[..., :positive] = spectrum[..., :positive]
        if negative:
            out[..., new - negative:] = spectrum[..., old - negative:]
        if old % 2 == 0:   # the old Nyquist coefficient is +old/2 and -old/2 at once: split it
            out[..., old // 2] = spectrum[..., old // 2] / 2
            out[..., new - old // 2] = spectrum[..., old // 2] / 2
        freqs = torch.fft.fftfreq(new, d=1.0 / new)
        out = out * _phase(freqs, old, new, out.dtype, out.device)
    else:
        freqs = torch.fft.fftfreq(old, d=1.0 / old)
        spectrum = spectrum * _phase(freqs, old, new, spectrum.dtype, spectrum.device)
        out[..., :positive] = spectrum[..., :positive]
        if negative:
            out[..., new - negative:] = spectrum[..., old - negative:]
        if new % 2 == 0:   # +new/2 and -new/2 become the same coefficient: they add up
            out[..., new // 2] = spectrum[..., new // 2] + spectrum[..., old - new // 2]
    return out.movedim(-1, dim)


def _resample_half(spectrum: torch.Tensor, old: int, new: int) -> torch.Tensor:
    """Along the last dim, an ``rfft`` half spectrum (``norm="forward"``) of a real signal of
    ``old`` samples, to one of ``new`` samples (``new // 2 + 1`` coefficients)."""
    out = spectrum.new_zeros(spectrum.shape[:-1] + (new // 2 + 1,))
    if new > old:
        out[..., :old // 2 + 1] = spectrum
        if old % 2 == 0:   # the old Nyquist term stands for +old/2 and -old/2: halve it
            out[..., old // 2] = spectrum[..., old // 2] / 2
        freqs = torch.arange(new // 2 + 1)
        return out * _phase(freqs, old, new, out.dtype, out.device)
    freqs = torch.arange(old // 2 + 1)
    spectrum = spectrum * _phase(freqs, old, new, spectrum.dtype, spectrum.device)
    out[...] = spectrum[..., :new // 2 + 1]
    if new % 2 == 0:   # the new Nyquist term gathers +new/2 and its mirror -new/2
        out[..., new // 2] = 2 * spectrum[..., new // 2].real
    return out


def fourier_resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample real, periodic images ``(..., h, w)`` to ``(..., H, W)`` in the Fourier domain.

    The spectrum is zero-padded (to enlarge) or truncated (to shrink): the result is the
    band-limited (periodic sinc) interpolation of the input, adding no frequencies it did not
    have. A Nyquist coefficient of an even size is split evenly between ``+f`` and ``-f``
    (enlarging) or gathers both (shrinking), so the result stays real. Pixel centres line up
    as in ``F.interpolate(..., align_corners=False)``: the picture covers the same area, so
    averaging ``k x k`` blocks of an image enlarged ``k`` times gives (nearly) the original.
    The same size returns ``x`` itself.

    Args:
        x: real tensor, at least 2-D; the last two dims are resampled.
        size: ``(H, W)``.

    Returns:
        ``(..., H, W)``, in ``x``'s dtype (computed in at least float32).

    Example:
        >>> x = torch.cos(torch.arange(8.0) * 2 * math.pi / 8).repeat(8, 1)  # 1 cycle across
        >>> big = fourier_resample(x, (16, 16))
        >>> torch.allclose(F.avg_pool2d(big[None], 2)[0], x, atol=0.05)
        True
    """
    height, width = size_pair("size", size)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"fourier_resample needs a real floating-point tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() < 2:
        raise ValueError(f"fourier_resample needs a tensor of at least 2 dims, got shape "
                         f"{tuple(x.shape)}")
    old_h, old_w = x.shape[-2:]
    if (old_h, old_w) == (height, width):
        return x
    work = x if x.dtype == torch.float64 else x.float()
    spectrum = torch.fft.rfft(work, dim=-1, norm="forward")
    if width != old_w:
        spectrum = _resample_half(spectrum, old_w, width)
    if height != old_h:
        spectrum = torch.fft.fft(spectrum, dim=-2, norm="forward")
        spectrum = _resample_full(spectrum, old_h, height, dim=-2)
        spectrum = torch.fft.ifft(spectrum, dim=-2, norm="forward")
    return torch.fft.irfft(spectrum, n=width, dim=-1, norm="forward").to(x.dtype)


def _interpolate(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=shrink)


_SUPPORTED = ("ImageParam or RGBAImage (param.image, param.image_rgba, param.lowres_image, "
              "param.laplacian_pyramid_image) whose spatial part is a FourierImage, PixelImage, "
              "LowResImage or LaplacianPyramid; CPPNImage (param.cppn); MacoImage (param.maco)")


def _native_size(param: nn.Module) -> tuple[int, int]:
    """The ``(height, width)`` that ``param()`` renders at."""
    if isinstance(param, (ImageParam, RGBAImage)):
        param = param.spatial
    if isinstance(param, PixelImage):
        return tuple(param.pixels.shape[-2:])  # type: ignore[return-value]
    if isinstance(param, (FourierImage, LowResImage, LaplacianPyramid, CPPNImage, MacoImage)):
        return tuple(param.size)  # type: ignore[return-value]
    raise TypeError(f"render_at cannot re-render a {type(param).__name__}; supported: "
                    f"{_SUPPORTED}")


def _spatial_at(spatial: nn.Module, size: tuple[int, int], interpolation: str | None
                ) -> torch.Tensor:
    """The unconstrained image of a spatial parameterisation at ``size``."""
    if isinstance(spatial, PixelImage):
        return _interpolate(spatial(), size, interpolation or "bicubic")
    if interpolation is not None:
        raise ValueError(f"interpolation={interpolation!r} applies to pixel images only; a "
                         f"{type(spatial).__name__} is re-rendered its own way (see render_at)")
    if isinstance(spatial, FourierImage):
        return fourier_resample(spatial(), size)
    if isinstance(spatial, LowResImage):   # its own bilinear upsampling, to the new size
        return _interpolate(spatial.inner(), size, "bilinear")
    if isinstance(spatial, LaplacianPyramid):
        weights = spatial.level_weights.to(spatial.pyramid[0].dtype)
        return sum(_interpolate(level, size, "bilinear") * weight
                   for level, weight in zip(spatial.pyramid, weights))
    raise TypeError(f"render_at cannot re-render a spatial part {type(spatial).__name__}; "
                    f"supported: {_SUPPORTED}")


def _target_size(native: tuple[int, int], size: "int | tuple[int, int]") -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        width = positive_int("size", size)
        return max(1, round(width * native[0] / native[1])), width
    return size_pair("size", size)


def render_at(param: "nn.Module | RenderResult", size: "int | tuple[int, int]", *,
              interpolation: str | None = None) -> torch.Tensor:
    """Evaluate an optimised parameterisation at another size, from the same parameters.

    * Fourier images (:func:`~lucent_core.param.image`, the default): the learned spectrum,
      times its 1/f scale, is zero-padded in frequency space (:func:`fourier_resample`), then
      goes through the same colour decorrelation and sigmoid. Each coefficient keeps its
      frequency in cycles per *image* (so the 1/f weighting of every learned coefficient is
      kept: it is what a Fourier image of the large size would give with the same coefficients,
      rescaled for its own 1/f scale and FFT normalisation, and zeros above), and the
      normalisation is chosen so the large image, downscaled, matches the small one; no new
      detail appears (the picture is band-limited).
    * MACO images: the same, on the spectrum ``magnitude * exp(i phase)``.
    * CPPNs: :meth:`~lucent_core.param.CPPNImage.render`, the network evaluated at denser
      coordinates (real detail at every size).
    * Pixel images: the pixels are interpolated (``interpolation``, default bicubic;
      antialiased when shrinking) before the colour mapping: interpolation, not new detail.
    * Low-resolution and Laplacian-pyramid images: their own bilinear upsampling, to the new
      size.
    * RGBA images (:func:`~lucent_core.param.image_rgba`): colour and alpha are each resampled
      as above; the result keeps 4 channels.

    Another aspect ratio stretches the picture (a CPPN instead shows more or less of its
    pattern). The native size returns exactly ``param()``. Computed without gradients.

    Args:
        param: the parameterisation (e.g. ``result.param``) or a
            :class:`~lucent_core.render.RenderResult`.
        size: ``(height, width)``, or an int: the new width, the height keeping the aspect
            ratio (as :meth:`~lucent_core.param.CPPNImage.render`).
        interpolation: for pixel images, one of :data:`INTERPOLATIONS`; an error for others.

    Returns:
        ``(B, C, H, W)`` in [0, 1] on the parameterisation's device; ``C`` is 3, or 4 for RGBA.

    Raises:
        TypeError: for a parameterisation it does not know (the message lists those it does).

    Example:
        >>> from lucent_core import param
        >>> small = param.image(32, 24, batch=2)
        >>> render_at(small, 128).shape
        torch.Size([2, 3, 96, 128])
    """
    if isinstance(param, RenderResult):
        param = param.param
    if not isinstance(param, nn.Module):
        raise TypeError(f"render_at needs a parameterisation (an nn.Module) or a RenderResult, "
                        f"got {type(param).__name__}")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of "
                         f"{INTERPOLATIONS}")
    target = _target_size(_native_size(param), size)
    with torch.no_grad():
        if isinstance(param, CPPNImage):
            if interpolation is not None:
                raise ValueError(f"interpolation={interpolation!r} applies to pixel images "
                                 "only; a CPPN is evaluated at the new size")
            return param.render(target[1], target[0])
        if isinstance(param, MacoImage):
            if interpolation is not None:
                raise ValueError(f"interpolation={interpolation!r} applies to pixel images "
                                 "only; a MACO image is resampled through its spectrum")
            return param.to_rgb(fourier_resample(param.spatial(), target))
        if isinstance(param, RGBAImage):
            rgb = param.to_rgb(_spatial_at(param.spatial, target, interpolation))
            alpha = torch.sigmoid(_spatial_at(param.alpha, target, interpolation))
            return torch.cat([rgb, alpha], dim=1)
        return param.to_rgb(_spatial_at(param.spatial, target, interpolation))


def save_high_res(param: "nn.Module | RenderResult", path: PathLike,
                  size: "int | tuple[int, int]", *, index: int | None = None,
                  interpolation: str | None = None) -> Path:
    """Re-render at ``size`` (see :func:`render_at`) and save one image as a PNG (atomically).

    RGBA parameterisations give RGBA PNGs (alpha kept, not composited).

    Args:
        param: the parameterisation or a :class:`~lucent_core.render.RenderResult`.
        path: the PNG to write.
        size: ``(height, width)``, or the new width (keeping the aspect ratio).
        index: which image of a batch; required when the batch has more than one.
        interpolation: for pixel images (see :func:`render_at`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile
        >>> from lucent_core import param
        >>> out = save_high_res(param.image(16), Path(tempfile.mkdtemp()) / "big.png", 64)
        >>> Image.open(out).size
        (64, 64)
    """
    images = render_at(param, size, interpolation=interpolation)
    count = images.shape[0]
    if index is None:
        if count != 1:
            raise ValueError(f"the parameterisation holds a batch of {count} images; pass "
                             f"index=0..{count - 1} (or build a grid with render_at and "
                             "figure_grid)")
        index = 0
    if not is_index(index) or not -count <= operator.index(index) < count:
        raise IndexError(f"index {index!r} is out of range for a batch of {count} image(s) "
                         f"(valid: 0..{count - 1})")
    return save_png(images[operator.index(index)], path)


# --- panel records and the side-car ---------------------------------------------------------

def _versions() -> dict[str, str]:
    import lucent_core  # lazily: lucent_core/__init__ may one day import this module

    return {"lucent_core": lucent_core.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__,
            "python": platform.python_version()}


def _json_safe(value: object, where: str) -> object:
    """``value`` as plain JSON types; NaN and infinities become None; an error for objects
    JSON cannot hold (naming where they are)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{where} is a tensor of shape {tuple(value.shape)}; JSON metadata "
                            "takes numbers and short lists (use .tolist())")
        return _json_safe(value.item(), where)
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist(), where)
    if isinstance(value, (os.PathLike, torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has the key {key!r} ({type(key).__name__}); JSON "
                                "object keys must be strings")
            out[key] = _json_safe(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_json_safe(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{where} is a {type(value).__name__}, which JSON cannot hold; pass a "
                    "string, number, bool, None, or a list/dict of them")


_KINDS = ((FourierImage, "fourier"), (PixelImage, "pixel"), (LowResImage, "lowres"),
          (LaplacianPyramid, "laplacian_pyramid"), (CPPNImage, "cppn"), (MacoImage, "maco"))


def _describe_param(param: nn.Module, image_size: list[int] | None, batch: int | None
                    ) -> dict[str, object]:
    """What a panel record says about a parameterisation."""
    spatial = param.spatial if isinstance(param, (ImageParam, RGBAImage)) else param
    kind = next((name for cls, name in _KINDS if isinstance(spatial, cls)), None)
    to_rgb = getattr(param, "to_rgb", None)
    try:
        size: list[int] | None = list(_native_size(param))
    except TypeError:
        size = image_size
    return {"class": type(param).__name__,
            "spatial": type(spatial).__name__ if spatial is not param else None,
            "kind": kind, "size": size,
            "batch": batch,
            "channels": 4 if isinstance(param, RGBAImage) else 3,
            "decay_power": getattr(spatial, "decay_power", None),
            "decorrelate": getattr(to_rgb, "decorrelate", None),
            "color_mode": getattr(to_rgb, "mode", None)}


def _recorded(result: RenderResult, key: str, given: object) -> object:
    """The render's own record of ``key``, or ``given`` where it has none (or recorded None,
    e.g. a render seeded globally rather than with ``seed=``); never both apart."""
    if result.settings.get(key) is None:
        return given
    recorded = result.settings[key]
    if given is not None and given != recorded:
        raise ValueError(f"{key}={given!r} disagrees with what the render recorded "
                         f"({key}={recorded!r}); leave {key} out to use the recorded value")
    return recorded


def panel_record(result: RenderResult, *, model: "nn.Module | str | None" = None,
                 label: str | None = None, seed: int | None = None, steps: int | None = None,
                 transforms: object = None, index: int | None = None, row: int | None = None,
                 col: int | None = None, **extra: object) -> dict[str, object]:
    """What a render knows about itself, as a JSON-safe panel record for :func:`save_figure`.

    Keys (:data:`PANEL_KEYS`): ``row``, ``col`` (filled in by :func:`save_figure` in
    row-major order when None), ``label``, ``objective`` (its readable name),
    ``objective_value`` (the last step's value), ``model`` (registry name, else class name,
    or the string given), ``weights_sha256`` (of the model's state dict, when a model is
    given), ``param`` (``class``, ``spatial``, ``kind``, ``size`` ``[h, w]``, ``batch``,
    ``channels``, ``decay_power`` (Fourier), ``decorrelate``, ``color_mode``), ``image_size``
    ``[h, w]`` of the rendered image, ``batch_index``, ``steps`` (the step the last image was
    taken at), ``thresholds``, ``interrupted``, ``seed`` and ``transforms`` (a one-line
    description), ``render`` (the optimiser, preprocessing, redirected ReLU, autocast,
    channels-last and compile settings), ``versions`` (lucent_core, torch, numpy, pillow,
    python), ``extra`` (the other keyword arguments). The seed, transforms and render
    settings come from the render itself (:attr:`RenderResult.settings`).

    Args:
        result: what :func:`~lucent_core.render_vis` returned.
        model: the model (its name and weights hash are recorded) or just its name.
        label: the panel's label.
        seed: the seed the render used; only needed for a result that does not record it
            (an error if it disagrees with the recorded one).
        steps: the number of steps (checked against the render's last threshold).
        transforms: the transforms used, as a string or objects described by their ``repr``;
            only needed for a result that does not record them (likewise checked).
        index: which image of the render's batch the panel shows.
        row, col: the panel's position in the figure.
        **extra: anything else (JSON-safe values).

    Returns:
        A dict of plain JSON values.

    Example:
        >>> from lucent_core import render_vis
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> result = render_vis(net, "0:1", thresholds=(2,), progress=False, seed=0)
        >>> record = panel_record(result, model=net, label="unit 1")
        >>> record["objective"], record["steps"], record["param"]["kind"], record["seed"]
        ("channel('0', 1)", 2, 'fourier', 0)
    """
    if not isinstance(result, RenderResult):
        raise TypeError(f"panel_record takes a RenderResult (what render_vis returns), got "
                        f"{type(result).__name__}")
    for name, value in (("row", row), ("col", col)):
        if value is not None:
            positive_int(name, value, minimum=0)
    reached = result.thresholds[-1] if result.thresholds else None
    if steps is not None:
        steps = positive_int("steps", steps)
        if reached is not None and steps != reached:
            raise ValueError(f"steps={steps} but the render's last image was taken at step "
                             f"{reached} (thresholds {result.thresholds})")
    if model is None or isinstance(model, str):
        model_name, weights = model, None
    elif isinstance(model, nn.Module):
        model_name = registry_name(model)
        weights = state_dict_sha256(model)
    else:
        raise TypeError(f"model must be an nn.Module, its name (a string) or None, got "
                        f"{type(model).__name__}")
    image_size = list(result.images[-1].shape[1:3]) if result.images else None
    batch = result.images[-1].shape[0] if result.images else None
    if index is not None and batch is not None:
        if not (is_index(index) and 0 <= operator.index(index) < batch):
            raise IndexError(f"index {index!r} is out of range for a render of {batch} "
                             f"image(s) (valid: 0..{batch - 1})")
        index = operator.index(index)
    record = {
        "row": row, "col": col, "label": label, "objective": result.objective,
        "objective_value": result.history[-1] if result.history else None,
        "model": model_name, "weights_sha256": weights,
        "param": _describe_param(result.param, image_size, batch), "image_size": image_size,
        "batch_index": index, "steps": steps if steps is not None else reached,
        "thresholds": list(result.thresholds), "interrupted": bool(result.interrupted),
        "seed": _recorded(result, "seed", seed),
        "transforms": _recorded(result, "transforms", transforms if transforms is None or
                                isinstance(transforms, str) else describe_transforms(transforms)),
        "render": {key: value for key, value in result.settings.items()
                   if key not in ("seed", "transforms")} or None,
        "versions": _versions(), "extra": dict(extra)}
    return _json_safe(record, "panel")  # type: ignore[return-value]


def _layout_record(picture: Image.Image, given: dict[str, object]) -> dict[str, object] | None:
    recorded = picture.info.get(LAYOUT_INFO_KEY)
    layout = dict(recorded) if isinstance(recorded, dict) else {}
    for key, value in given.items():
        if value is None:
            continue
        if key == "cell":
            value = list(size_pair("cell", value))
        else:
            value = positive_int(key, value, minimum=0 if key == "padding" else 1)
        if key in layout and layout[key] != value:
            raise ValueError(f"{key}={value!r} disagrees with the layout figure_grid recorded "
                             f"({key}={layout[key]!r})")
        layout[key] = value
    if not layout:
        return None
    for key in ("rows", "cols", "cell", "padding"):
        layout.setdefault(key, None)
    if None not in layout.values():  # a grid that does not fit the picture was misdescribed
        needed = (layout["cols"] * layout["cell"][1] + (layout["cols"] + 1) * layout["padding"],
                  layout["rows"] * layout["cell"][0] + (layout["rows"] + 1) * layout["padding"])
        if needed[0] > picture.width or needed[1] > picture.height:
            raise ValueError(f"a {layout['rows']} x {layout['cols']} grid of {layout['cell']} "
                             f"cells with padding {layout['padding']} needs {needed[0]} x "
                             f"{needed[1]} pixels, but the picture is {picture.width} x "
                             f"{picture.height}")
    return layout


def _panels(panels: Sequence[Mapping[str, object]] | None, layout: dict[str, object] | None
            ) -> list[dict[str, object]]:
    if panels is None:
        return []
    if isinstance(panels, Mapping):
        raise TypeError("panels must be a list of panel records (one dict per panel)")
    rows = layout.get("rows") if layout else None
    cols = layout.get("cols") if layout else None
    out, seen = [], {}
    for i, panel in enumerate(panels):
        if not isinstance(panel, Mapping):
            raise TypeError(f"panels[{i}] is a {type(panel).__name__}; each panel is a dict "
                            "(see panel_record)")
        unknown = sorted(set(panel) - set(PANEL_KEYS), key=str)
        if unknown:
            close = [m for key in unknown
                     for m in difflib.get_close_matches(str(key), PANEL_KEYS, n=1)]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"panels[{i}] has unknown key(s) {unknown}{hint}; a panel has the "
                             f"keys {list(PANEL_KEYS)}: put your own values under 'extra'")
        for key in ("row", "col"):
            if panel.get(key) is not None:
                positive_int(f"panels[{i}] {key}", panel[key], minimum=0)
        record = {key: None for key in PANEL_KEYS}
        record.update(_json_safe(dict(panel), f"panels[{i}]"))  # type: ignore[arg-type]
        if record["row"] is None and record["col"] is None:
            if cols is None:
                if len(panels) > 1:
                    raise ValueError(f"panels[{i}] has no position and the figure's layout is "
                                     "unknown: give row/col in each panel, or rows= and cols= "
                                     "(or save an image made by figure_grid)")
                record["row"], record["col"] = 0, 0
            else:
                record["row"], record["col"] = divmod(i, cols)
        elif record["row"] is None or record["col"] is None:
            raise ValueError(f"panels[{i}] has only one of row and col; give both or neither")
        position = (record["row"], record["col"])
        if rows is not None and cols is not None and not (
                0 <= position[0] < rows and 0 <= position[1] < cols):
            raise ValueError(f"panels[{i}] is at (row, col) {position}, outside the {rows} x "
                             f"{cols} grid")
        if position in seen:
            raise ValueError(f"panels[{seen[position]}] and panels[{i}] are both at (row, col) "
                             f"{position}")
        seen[position] = i
        out.append(record)
    return out


def save_figure(image: "Image.Image | ImageLike", path: PathLike,
                panels: Sequence[Mapping[str, object]] | None = None, *,
                rows: int | None = None, cols: int | None = None,
                cell: "int | tuple[int, int] | None" = None, padding: int | None = None,
                **metadata: object) -> Path:
    """Save a figure as a PNG with a JSON side-car (same name, ``.json``) that describes it.

    The PNG is written as it is (an RGBA figure stays RGBA, alpha not composited), then the
    side-car; each file appears atomically (written to a temporary name and renamed), so a
    side-car never exists without its complete PNG. Everything is checked before either file
    is written. The side-car's format is described in :mod:`lucent_core.figures`.

    Args:
        image: the figure: a PIL image (e.g. from :func:`figure_grid`, whose layout is
            recorded) or one image as an array/tensor.
        path: where to write the PNG (must end in ``.png``).
        panels: one record per panel (see :func:`panel_record`; plain dicts work too:
            missing :data:`PANEL_KEYS` become None). Panels without a position are placed
            in row-major order.
        rows, cols, cell, padding: the grid's layout, when not recorded by
            :func:`figure_grid` (given values must agree with a recorded layout).
        **metadata: free-form JSON-safe values, stored under ``"metadata"``.

    Returns:
        The PNG's path; the side-car is ``path.with_suffix(".json")``.

    Example:
        >>> import tempfile
        >>> grid = figure_grid([np.zeros((8, 8, 3))] * 2, rows=1, cols=2)
        >>> png = save_figure(grid, Path(tempfile.mkdtemp()) / "fig.png",
        ...                   panels=[{"label": "a"}, {"label": "b"}], caption="test")
        >>> record = json.loads(png.with_suffix(".json").read_text())
        >>> [(p["row"], p["col"], p["label"]) for p in record["panels"]], record["size"]
        ([(0, 0, 'a'), (0, 1, 'b')], {'width': 40, 'height': 24})
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_figure writes PNG files; give a path ending in .png, got "
                         f"{str(path)!r}")
    if isinstance(image, Image.Image):
        picture = image
    else:
        array = to_numpy(image)
        if array.shape[0] != 1:
            raise ValueError(f"save_figure takes one image, got a batch of {array.shape[0]}; "
                             "arrange it with figure_grid first")
        picture = to_pil(array)
    layout = _layout_record(picture, {"rows": rows, "cols": cols, "cell": cell,
                                      "padding": padding})
    record = {
        "format": FIGURE_FORMAT, "format_version": FIGURE_FORMAT_VERSION, "image": path.name,
        "png_sha256": None, "size": {"width": picture.width, "height": picture.height},
        "mode": picture.mode, "layout": _json_safe(layout, "layout"), "versions": _versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "panels": _panels(panels, layout), "metadata": _json_safe(metadata, "metadata")}
    json.dumps(record, allow_nan=False)  # any problem shows here, before a file is written
    write_atomically(path, lambda partial: picture.save(partial, format="PNG"))
    record["png_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    write_atomically(path.with_suffix(".json"), lambda partial: partial.write_text(text))
    return path
