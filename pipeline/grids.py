"""Grid layout and typesetting of the paper-style figures (:mod:`pipeline.figures`).

The machinery every figure shares: the cell size, gaps, fonts and resolution
(:data:`CELL_PX`, :data:`DPI`, ...); checks of the images and labels a figure is given
(``parse_*``); :func:`fit_to_cell`, which resizes any image to the displayed cell;
:class:`Typesetter`, which measures and wraps text in pixels; and :func:`render_grid`, which
lays a :class:`Grid` of cells and labels out in pixels and saves it as a PNG (:func:`save`).
What each figure shows is in :mod:`pipeline.figures`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.transforms import IdentityTransform
from PIL import Image

from pipeline.errors import ConfigError

__all__ = [
    "CAPTION_PT",
    "CELL_LABEL_PT",
    "CELL_PX",
    "DPI",
    "FONT_FAMILY",
    "GAP_PX",
    "LABEL_PT",
    "PAD_PX",
    "TITLE_PT",
    "Grid",
    "Typesetter",
    "draw_line",
    "fit_row",
    "fit_to_cell",
    "parse_images",
    "parse_label",
    "parse_labels",
    "parse_out",
    "parse_rows",
    "render_grid",
    "save",
]

#: Displayed side of every image cell in pixels, whatever the array's own size.
CELL_PX = 160
#: White space between neighbouring cells, pixels (the paper's grids are nearly touching).
GAP_PX = 4
#: Wider space separating a group of columns (the original photograph from its decodings).
GROUP_GAP_PX = 14
#: Resolution the point sizes below are rendered at: 9 pt is ~19 px.
DPI = 150
#: Margin around the whole figure, pixels.
PAD_PX = 14
#: Narrowest figure: below this a caption would wrap into a tall column of words.
MIN_WIDTH_PX = 640

FONT_FAMILY = "DejaVu Serif"  # bundled with matplotlib: same glyphs on every machine
TITLE_PT = 11.0
LABEL_PT = 9.0  # column and row labels
CELL_LABEL_PT = 7.0  # per-image labels (neuron index, class name)
CAPTION_PT = 8.5
LINE_SPACING = 1.25  # line height / font size


# ---------------------------------------------------------------------------------------
# input validation


def parse_images(images: object, what: str) -> np.ndarray:
    """Check one batch of images: ``(N, H, W, 3)`` uint8 with N, H, W > 0."""
    if not isinstance(images, np.ndarray):
        raise ConfigError(
            f"{what}: expected a numpy array of shape (N, H, W, 3), got {type(images).__name__}"
        )
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError(
            f"{what}: expected RGB images of shape (N, H, W, 3), got shape {images.shape}; "
            "add a leading axis for a single image (image[None])"
        )
    if images.dtype != np.uint8:
        raise ConfigError(
            f"{what}: expected uint8 pixels, got {images.dtype}; convert decoder output in "
            "[0, 1] with np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)"
        )
    if 0 in images.shape:
        raise ConfigError(f"{what}: no pixels (shape {images.shape}); pass at least one image")
    return images


def parse_label(label: object, what: str) -> str:
    if not isinstance(label, str):
        raise ConfigError(f"{what}: expected a str label, got {type(label).__name__}")
    return label


def parse_labels(labels: Sequence[str], n: int, what: str, per: str) -> list[str]:
    if isinstance(labels, str):
        raise ConfigError(f"{what}: expected a sequence of {n} labels, got one str")
    out = [parse_label(s, f"{what}[{i}]") for i, s in enumerate(labels)]
    if len(out) != n:
        raise ConfigError(f"{what} has {len(out)} labels for {n} {per}; pass one label per {per}")
    return out


def parse_rows(rows: Sequence[tuple[str, np.ndarray]], what: str) -> list[tuple[str, np.ndarray]]:
    if len(rows) == 0:
        raise ConfigError(f"{what} is empty; pass at least one (label, images) row")
    return [
        (parse_label(label, f"{what}[{i}] label"), parse_images(images, f"{what} {label!r}"))
        for i, (label, images) in enumerate(rows)
    ]


def fit_to_cell(image: np.ndarray, size: int = CELL_PX) -> np.ndarray:
    """Resize one image to the displayed cell, keeping its aspect ratio.

    Parameters
    ----------
    image : (H, W, 3) uint8 ndarray
        RGB image of any size.
    size : int
        Side of the square cell in pixels.

    Returns
    -------
    (size, size, 3) uint8 ndarray
        The image scaled (Lanczos) so that its longer side is ``size``, centred on white.
    """
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(image)
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.LANCZOS)
    cell = np.full((size, size, 3), 255, np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    cell[top : top + new_h, left : left + new_w] = np.asarray(resized)
    return cell


def fit_row(images: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray | None]:
    """One grid row: every image of ``images`` (a list, or a (K, H, W, 3) array) fitted."""
    return [fit_to_cell(im) for im in images]


# ---------------------------------------------------------------------------------------
# text measurement and layout


class Typesetter:
    """Measures and wraps text in pixels, with the fonts the figure will draw it in."""

    def __init__(self, dpi: float) -> None:
        self.dpi = dpi
        self._renderer = FigureCanvasAgg(Figure(figsize=(1, 1), dpi=dpi)).get_renderer()

    @staticmethod
    def font(size: float, bold: bool = False) -> FontProperties:
        return FontProperties(family=FONT_FAMILY, size=size, weight="bold" if bold else "normal")

    def width(self, text: str, size: float, bold: bool = False) -> float:
        if not text:
            return 0.0
        w, _, _ = self._renderer.get_text_width_height_descent(
            text, self.font(size, bold), ismath=False
        )
        return float(w)

    def line_height(self, size: float) -> float:
        return size * LINE_SPACING * self.dpi / 72.0

    def _clip(self, text: str, width: float, size: float, bold: bool) -> str:
        """``text`` cut to ``width`` with an ellipsis, or unchanged if it fits."""
        if self.width(text, size, bold) <= width:
            return text
        while text and self.width(text + "…", size, bold) > width:
            text = text[:-1]
        return text.rstrip() + "…"

    def wrap(
        self,
        text: str,
        width: float,
        size: float,
        *,
        bold: bool = False,
        max_lines: int | None = None,
    ) -> list[str]:
        """Greedy word wrap to ``width`` pixels; the last kept line ends in "…" if cut."""
        lines: list[str] = []
        for paragraph in text.split("\n"):
            line = ""
            for word in paragraph.split():
                trial = f"{line} {word}" if line else word
                if line and self.width(trial, size, bold) > width:
                    lines.append(line)
                    line = word
                else:
                    line = trial
            lines.append(line)
        lines = [self._clip(s, width, size, bold) for s in lines]
        while lines and not lines[-1]:
            lines.pop()
        if max_lines is not None and len(lines) > max_lines:
            lines = lines[:max_lines]
            lines[-1] = self._clip(lines[-1] + " …", width, size, bold)
        return lines


@dataclass(frozen=True)
class Grid:
    """What to draw: cells[row][col] of fitted images (None: blank), and every label."""

    cells: list[list[np.ndarray | None]]
    col_labels: list[str] | None = None
    row_labels: list[str] | None = None
    cell_labels: list[list[str]] | None = None  # same raggedness as cells
    side_header: str = ""
    side_lines: list[list[str]] | None = None  # per row, a text block right of the row
    group_after: frozenset[int] = frozenset()  # columns followed by GROUP_GAP_PX


@dataclass(frozen=True)
class _Labels:
    """Every label of a :class:`Grid`, wrapped into lines, and the room they take (pixels)."""

    col: list[list[str]]  # per column, its lines above the grid
    side_header: list[str]  # lines above the side text blocks
    row: list[list[str]]  # per row, its lines left of the grid
    cell: list[list[list[str]]]  # per row and cell, its lines under the image
    side: list[list[str]]  # per row, its lines right of the grid
    header_h: int  # height of the column labels above the grid
    left_w: int  # width of the row labels left of the grid
    row_h: int  # height of a row: the cell and its labels
    side_w: int  # width of the side text blocks right of the grid


def _wrap_labels(grid: Grid, ts: Typesetter) -> _Labels:
    """Wrap and clip every label of ``grid`` and measure the room each kind takes."""
    p = CELL_PX
    lh_label = ts.line_height(LABEL_PT)
    col_lines = [ts.wrap(s, p + GAP_PX, LABEL_PT, max_lines=2) for s in grid.col_labels or []]
    side_header = ts.wrap(grid.side_header, 2.5 * p, LABEL_PT, max_lines=2)
    header_lines = max([len(s) for s in col_lines] + [len(side_header), 0])
    header_h = math.ceil(header_lines * lh_label + 4) if header_lines else 0

    row_lines = [ts.wrap(s, 1.6 * p, LABEL_PT, max_lines=4) for s in grid.row_labels or []]
    row_w = max([ts.width(s, LABEL_PT) for lines in row_lines for s in lines] + [0.0])
    left_w = math.ceil(row_w + 10) if row_w else 0

    lh_cell = ts.line_height(CELL_LABEL_PT)
    cell_lines = [
        [ts.wrap(s, p, CELL_LABEL_PT, max_lines=2) for s in row] for row in grid.cell_labels or []
    ]
    n_cell_lines = max([len(s) for row in cell_lines for s in row] + [0])
    row_h = p + (math.ceil(n_cell_lines * lh_cell + 3) if n_cell_lines else 0)

    side_max_lines = max(1, int(row_h // lh_label))
    side_lines = [
        [ts._clip(s, 2.5 * p, LABEL_PT, False) for s in lines[:side_max_lines]]
        for lines in grid.side_lines or []
    ]
    side_text_w = max(
        [ts.width(s, LABEL_PT) for lines in side_lines for s in lines]
        + [ts.width(s, LABEL_PT) for s in side_header]
        + [0.0]
    )
    side_w = math.ceil(side_text_w + 12) if side_text_w else 0
    return _Labels(
        col_lines, side_header, row_lines, cell_lines, side_lines, header_h, left_w, row_h, side_w
    )


def draw_line(
    fig: Figure, height: int, xy: tuple[float, float], s: str, font: FontProperties, ha: str
) -> None:
    """Draw one line of text with its top at ``xy``, y measured down from the top of ``fig``.

    ``height`` is the figure's height in pixels; ``ha`` the horizontal alignment at x.
    """
    x, y = xy
    fig.text(
        x,
        height - y,
        s,
        transform=IdentityTransform(),
        fontproperties=font,
        ha=ha,
        va="top",
        parse_math=False,
    )


def _draw_rows(
    fig: Figure,
    ts: Typesetter,
    grid: Grid,
    labels: _Labels,
    col_x: list[int],
    origin: tuple[int, int],
    height: int,
) -> None:
    """Paste each row's cells at ``col_x`` from the grid's top-left ``origin``, and its labels."""
    p, g = CELL_PX, GAP_PX
    x0, y0 = origin
    lh_label, lh_cell = ts.line_height(LABEL_PT), ts.line_height(CELL_LABEL_PT)
    label_font, cell_font = ts.font(LABEL_PT), ts.font(CELL_LABEL_PT)
    side_x = x0 + (col_x[-1] + p) + 12
    for r, row in enumerate(grid.cells):
        y = y0 + r * (labels.row_h + g)
        for c, cell in enumerate(row):
            if cell is not None:
                fig.figimage(cell, xo=x0 + col_x[c], yo=height - y - p, origin="upper")
        if labels.row:
            lines = labels.row[r]
            top = y + p / 2 - len(lines) * lh_label / 2
            for k, line in enumerate(lines):
                draw_line(fig, height, (x0 - 10, top + k * lh_label), line, label_font, "right")
        if labels.cell:
            for c, lines in enumerate(labels.cell[r]):
                for k, line in enumerate(lines):
                    xy = (x0 + col_x[c] + p / 2, y + p + 2 + k * lh_cell)
                    draw_line(fig, height, xy, line, cell_font, "center")
        if labels.side:
            for k, line in enumerate(labels.side[r]):
                draw_line(fig, height, (side_x, y + k * lh_label), line, label_font, "left")


def render_grid(grid: Grid, out: Path, *, title: str, caption: str) -> Path:
    """Lay out and draw ``grid`` in pixels, then save it as a PNG."""
    ts = Typesetter(DPI)
    p, g = CELL_PX, GAP_PX
    nrows = len(grid.cells)
    ncols = max(len(row) for row in grid.cells)

    # columns: x offsets from the grid's left edge
    col_x = [0]
    for j in range(1, ncols):
        col_x.append(col_x[-1] + p + (GROUP_GAP_PX if j - 1 in grid.group_after else g))
    grid_w = col_x[-1] + p
    labels = _wrap_labels(grid, ts)
    lh_label = ts.line_height(LABEL_PT)

    content_w = labels.left_w + grid_w + labels.side_w
    width = max(2 * PAD_PX + content_w, MIN_WIDTH_PX)
    x0 = (width - content_w) // 2 + labels.left_w  # grid's left edge; narrow grids are centred
    text_w = width - 2 * PAD_PX
    title_lines = ts.wrap(title, text_w, TITLE_PT, bold=True)
    lh_title = ts.line_height(TITLE_PT)
    title_h = math.ceil(len(title_lines) * lh_title + 6) if title_lines else 0
    caption_lines = ts.wrap(caption, text_w, CAPTION_PT)
    lh_caption = ts.line_height(CAPTION_PT)
    caption_h = math.ceil(len(caption_lines) * lh_caption) if caption_lines else 0
    y0 = PAD_PX + title_h + labels.header_h  # grid's top edge
    grid_h = nrows * labels.row_h + (nrows - 1) * g
    height = y0 + grid_h + (10 if caption_lines else 0) + caption_h + PAD_PX

    # +0.01 px: Agg truncates width * dpi to an int; keep it from losing the last pixel
    fig = Figure(figsize=((width + 0.01) / DPI, (height + 0.01) / DPI), dpi=DPI, facecolor="w")
    FigureCanvasAgg(fig)

    def text(x: float, y: float, s: str, size: float, ha: str, bold: bool = False) -> None:
        """Draw one line with its top at (x, y), y measured down from the figure's top."""
        draw_line(fig, height, (x, y), s, ts.font(size, bold), ha)

    for i, line in enumerate(title_lines):
        text(width / 2, PAD_PX + i * lh_title, line, TITLE_PT, "center", bold=True)
    for j, lines in enumerate(labels.col):
        top = y0 - 4 - len(lines) * lh_label
        for k, line in enumerate(lines):
            text(x0 + col_x[j] + p / 2, top + k * lh_label, line, LABEL_PT, "center")
    side_x = x0 + grid_w + 12
    for k, line in enumerate(labels.side_header):
        text(side_x, y0 - 4 - (len(labels.side_header) - k) * lh_label, line, LABEL_PT, "left")
    _draw_rows(fig, ts, grid, labels, col_x, (x0, y0), height)

    cap_y = y0 + grid_h + 10
    for k, line in enumerate(caption_lines):
        text(PAD_PX, cap_y + k * lh_caption, line, CAPTION_PT, "left")
    return save(fig, out)


def parse_out(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"out must name a .png file, got {str(out)!r}")
    return out


def save(fig: Figure, out: Path) -> Path:
    """Write ``fig`` to ``out`` as an RGB PNG, atomically (a reader never sees half a PNG)."""
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg), "figures are drawn on the Agg canvas"
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]  # (H, W, 3): the background is opaque
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    Image.fromarray(rgb).save(tmp, format="PNG")
    tmp.replace(out)
    return out
