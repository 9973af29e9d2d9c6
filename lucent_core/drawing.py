"""Drawing figures: labelled grids and parameterisations re-rendered at another size.

* :func:`figure_grid`: images in a grid with row labels on the left, column labels on top and
  an optional title, with spacing that is exactly computable (see :class:`FigureLayout`).
* :func:`render_at` / :func:`save_high_res`: evaluate an optimised parameterisation at another
  size from the *same* parameters (each parameterisation's own ``render_at``: Fourier images
  by zero-padding their spectrum, CPPNs by sampling their coordinates more densely, pixel
  images by interpolation).

Figures with a JSON side-car that records how to reproduce every panel are a recipe on top of
this: :mod:`lucent_core.recipes.figures` (``lucent_core.figures``).

Conventions: sizes are ``(height, width)`` unless named otherwise; PIL's ``.size`` is
``(width, height)``; row 0 is the top row; images are floats in [0, 1] or ``uint8``, as in
:mod:`lucent_core.io`.
"""

from __future__ import annotations

import operator
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from lucent_core.validate import choice, instance, integer, integers, is_index, size_pair
from lucent_core.io import ImageLike, parse_color, save_png, to_numpy, to_pil
from lucent_core.param.base import Parameterisation
from lucent_core.param.resample import INTERPOLATIONS, fourier_resample
from lucent_core.render import RenderResult

__all__ = ["DEFAULT_FONT_SIZE", "FigureLayout", "INTERPOLATIONS", "LAYOUT_INFO_KEY",
           "figure_grid", "fourier_resample", "render_at", "save_high_res"]

#: Default label font size in pixels.
DEFAULT_FONT_SIZE = 12
#: Key under which :func:`figure_grid` records its layout in the image's ``info`` dict.
LAYOUT_INFO_KEY = "lucent_core.figure_layout"

PathLike = Union[str, os.PathLike]
Color = Sequence[int]


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
        for i, field in enumerate(fields(self)):  # rows, cols, cell_h, cell_w > 0; others >= 0
            value = integer(field.name, getattr(self, field.name), minimum=1 if i < 4 else 0)
            object.__setattr__(self, field.name, value)

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
            raise IndexError(f"cell ({row}, {col}) is outside the {self.rows} x {self.cols} grid")
        left = self.left_band + self.padding + col * (self.cell_w + self.padding)
        top = self.title_band + self.top_band + self.padding + row * (self.cell_h + self.padding)
        return left, top, left + self.cell_w, top + self.cell_h


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
        raise TypeError(f"{name} must be a sequence of {count} labels, got {labels!r}")
    labels = list(labels)
    if len(labels) != count:
        raise ValueError(f"{name} must be {count} labels (None or '' for none), got {len(labels)}")
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
        raise TypeError(f"images must be a list of images (or None) or a batch array/tensor, "
                        f"got {type(images).__name__}")
    if len(items) != count:
        raise ValueError(f"images must be rows * cols = {count} (None: empty), got {len(items)}")
    cells: list[Image.Image | None] = []
    for i, item in enumerate(items):
        if item is None:
            cells.append(None)
            continue
        array = to_numpy(item)
        if array.shape[0] != 1:
            raise ValueError(f"images[{i}] must be one image, got a batch of {array.shape[0]}")
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
        raise ValueError(f"{what} {text!r} needs {width}x{height}px, has {box_w}x{box_h}; {advice}")
    x = box[0] + (box_w - width) // 2 if align == "centre" else box[2] - width
    y = box[1] + (box_h - height) // 2
    draw.text((x - dx, y - dy), text, font=font, fill=fill)


def figure_grid(images: "Sequence[ImageLike | None] | np.ndarray | torch.Tensor", rows: int,
                cols: int, *, cell: "int | tuple[int, int] | None" = None, padding: int = 8,
                row_labels: Sequence[str | None] | None = None,
                col_labels: Sequence[str | None] | None = None, title: str | None = None,
                background: Color | None = (255, 255, 255), font_size: int = DEFAULT_FONT_SIZE,
                row_label_width: int | None = None, text_color: Color = (0, 0, 0)
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
    rows, cols, font_size = integers(1, rows=rows, cols=cols, font_size=font_size)
    row_texts = _labels("row_labels", row_labels, rows)
    col_texts = _labels("col_labels", col_labels, cols)
    if row_label_width is not None and row_texts is None:
        raise ValueError("row_label_width is given but there are no row_labels")
    instance("title", title, (str, type(None)), "a string or None")
    fill_color = None if background is None else parse_color("background", background)
    ink = parse_color("text_color", text_color)
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
        left_band = integer("row_label_width", row_label_width, minimum=1)
    layout = FigureLayout(  # checks padding
        rows=rows, cols=cols, cell_h=cell_h, cell_w=cell_w, padding=padding,
        title_band=3 * font_size if title else 0,
        top_band=2 * font_size if col_texts is not None else 0,
        left_band=left_band)
    padding = layout.padding

    rgba = (fill_color is None or len(fill_color) == 4
            or any(c is not None and c.mode == "RGBA" for c in cells))
    mode = "RGBA" if rgba else "RGB"
    if fill_color is None:
        fill_color = (0, 0, 0, 0)
    elif rgba and len(fill_color) == 3:
        fill_color = fill_color + (255,)
    if rgba and len(ink) == 3:
        ink = ink + (255,)
    elif not rgba and len(ink) == 4:
        raise ValueError(f"text_color {text_color!r} has an alpha value but the figure is RGB")
    figure = Image.new(mode, layout.size, fill_color)
    for number, picture in enumerate(cells):
        if picture is None:
            continue
        if picture.size != (cell_w, cell_h):
            picture = picture.resize((cell_w, cell_h), Image.Resampling.LANCZOS)
        if picture.mode != mode:
            picture = picture.convert(mode)
        left, top, _, _ = layout.cell_box(*divmod(number, cols))
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
        "background": None if background is None else list(fill_color)}
    return figure


# --- re-rendering at another size -----------------------------------------------------------

def _target_size(native: tuple[int, int], size: "int | tuple[int, int]") -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        width = integer("size", size, minimum=1)
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
        TypeError: for something that is not a parameterisation.

    Example:
        >>> from lucent_core import param
        >>> small = param.image(32, 24, batch=2)
        >>> render_at(small, 128).shape
        torch.Size([2, 3, 96, 128])
    """
    if isinstance(param, RenderResult):
        param = param.param
    parts = {"param": param}  # and the parts of a wrapper (ImageParam, RGBAImage)
    parts.update((f"param.{name}", getattr(param, name)) for name in ("spatial", "alpha")
                 if isinstance(getattr(param, name, None), nn.Module))
    for name, part in parts.items():
        instance(name, part, Parameterisation, "a Parameterisation (param.image, param.cppn, ...)")
    if interpolation is not None:
        interpolation = choice("interpolation", interpolation, INTERPOLATIONS)
    with torch.no_grad():
        return param.render_at(_target_size(param.size, size), interpolation)


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
            raise ValueError(f"index is needed for a batch of {count} images: 0..{count - 1}")
        index = 0
    if not is_index(index) or not -count <= operator.index(index) < count:
        raise IndexError(f"index must be an integer in 0..{count - 1}, got {index!r}")
    return save_png(images[operator.index(index)], path)
