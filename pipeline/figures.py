"""Paper-style figures of the reconstructions (docs/method.md §6), written as PNG files.

Rendering only: every function takes arrays that other stages computed (photographs,
reconstructions, loss logs) and lays them out like the figures of the paper [1]_ — a tight
grid of equally sized images, labels above the columns and left of the rows, no axes, a title
above and a caption line under the figure. Nothing here decodes, trains or measures.

=====================  ==========================================================
function               paper figure
=====================  ==========================================================
reconstruction_grid    Fig. 1 (Original, HOG, SIFT, LBP), Fig. 2 (Original,
                       CONV1..FC8), Fig. 5 (Ours / M&V [2] / autoencoder × layers)
dark_knowledge         Fig. 3: from all of FC8, from its top 5, from all but its top 5
single_neurons         Fig. 4: from one active neuron of FC6, FC7, FC8
interpolations         Fig. 6–7: decoded interpolations between two feature vectors
random_samples         Fig. 8–10: decoded random feature vectors
loss_curves            training loss against step, one line per target (log y)
=====================  ==========================================================

Images are ``uint8`` RGB arrays ``(N, H, W, 3)``. A figure may mix sizes (256 for HOG, SIFT
and LBP; 216, 208, 192 or 128 for the AlexNet layers): every image is resized to the same
displayed cell of :data:`CELL_PX` pixels (:func:`fit_to_cell`) and pasted unresampled, so a
figure is deterministic and its cells are exactly :func:`fit_to_cell` of the inputs.

Matplotlib draws the text through :class:`matplotlib.figure.Figure` and the Agg canvas
directly; pyplot's global state is never touched, so these functions are safe in workers
and under any ``MPLBACKEND``.

References
----------
.. [1] A. Dosovitskiy and T. Brox, "Inverting Visual Representations with Convolutional
   Networks", CVPR 2016 (arXiv:1506.02753), Figures 1–10.
.. [2] A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting
   Them", CVPR 2015.

Notes
-----
Departures from the paper's figures:

- Every figure carries a title and a caption inside the PNG (the paper's captions are in the
  text), so a figure copied out of a report still says which weights and data made it.
- Fig. 3 can list the top-5 class names beside each row (``top5_labels``); the paper does not.
- Fig. 6–7 label the first and last columns "A" and "B".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import IdentityTransform
from PIL import Image

from pipeline.errors import ConfigError

__all__ = [
    "CELL_PX",
    "DPI",
    "GAP_PX",
    "dark_knowledge",
    "fit_to_cell",
    "interpolations",
    "loss_curves",
    "random_samples",
    "reconstruction_grid",
    "single_neurons",
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


def _parse_images(images: object, what: str) -> np.ndarray:
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


def _parse_label(label: object, what: str) -> str:
    if not isinstance(label, str):
        raise ConfigError(f"{what}: expected a str label, got {type(label).__name__}")
    return label


def _parse_labels(labels: Sequence[str], n: int, what: str, per: str) -> list[str]:
    if isinstance(labels, str):
        raise ConfigError(f"{what}: expected a sequence of {n} labels, got one str")
    out = [_parse_label(s, f"{what}[{i}]") for i, s in enumerate(labels)]
    if len(out) != n:
        raise ConfigError(f"{what} has {len(out)} labels for {n} {per}; pass one label per {per}")
    return out


def _parse_rows(rows: Sequence[tuple[str, np.ndarray]], what: str) -> list[tuple[str, np.ndarray]]:
    if len(rows) == 0:
        raise ConfigError(f"{what} is empty; pass at least one (label, images) row")
    return [
        (_parse_label(label, f"{what}[{i}] label"), _parse_images(images, f"{what} {label!r}"))
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


def _fit_row(images: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray | None]:
    """One grid row: every image of ``images`` (a list, or a (K, H, W, 3) array) fitted."""
    return [fit_to_cell(im) for im in images]


# ---------------------------------------------------------------------------------------
# text measurement and layout


class _Typesetter:
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
class _Grid:
    """What to draw: cells[row][col] of fitted images (None: blank), and every label."""

    cells: list[list[np.ndarray | None]]
    col_labels: list[str] | None = None
    row_labels: list[str] | None = None
    cell_labels: list[list[str]] | None = None  # same raggedness as cells
    side_header: str = ""
    side_lines: list[list[str]] | None = None  # per row, a text block right of the row
    group_after: frozenset[int] = frozenset()  # columns followed by GROUP_GAP_PX


def _render_grid(grid: _Grid, out: Path, *, title: str, caption: str) -> Path:
    """Lay out and draw ``grid`` in pixels, then save it as a PNG."""
    ts = _Typesetter(DPI)
    p, g = CELL_PX, GAP_PX
    nrows = len(grid.cells)
    ncols = max(len(row) for row in grid.cells)

    # columns: x offsets from the grid's left edge
    col_x = [0]
    for j in range(1, ncols):
        col_x.append(col_x[-1] + p + (GROUP_GAP_PX if j - 1 in grid.group_after else g))
    grid_w = col_x[-1] + p

    lh_label = ts.line_height(LABEL_PT)
    col_lines = [ts.wrap(s, p + g, LABEL_PT, max_lines=2) for s in grid.col_labels or []]
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

    content_w = left_w + grid_w + side_w
    width = max(2 * PAD_PX + content_w, MIN_WIDTH_PX)
    x0 = (width - content_w) // 2 + left_w  # grid's left edge; narrow grids are centred
    text_w = width - 2 * PAD_PX
    title_lines = ts.wrap(title, text_w, TITLE_PT, bold=True)
    lh_title = ts.line_height(TITLE_PT)
    title_h = math.ceil(len(title_lines) * lh_title + 6) if title_lines else 0
    caption_lines = ts.wrap(caption, text_w, CAPTION_PT)
    lh_caption = ts.line_height(CAPTION_PT)
    caption_h = math.ceil(len(caption_lines) * lh_caption) if caption_lines else 0
    y0 = PAD_PX + title_h + header_h  # grid's top edge
    grid_h = nrows * row_h + (nrows - 1) * g
    height = y0 + grid_h + (10 if caption_lines else 0) + caption_h + PAD_PX

    # +0.01 px: Agg truncates width * dpi to an int; keep it from losing the last pixel
    fig = Figure(figsize=((width + 0.01) / DPI, (height + 0.01) / DPI), dpi=DPI, facecolor="w")
    FigureCanvasAgg(fig)

    def text(x: float, y: float, s: str, size: float, ha: str, bold: bool = False) -> None:
        """Draw one line with its top at (x, y), y measured down from the figure's top."""
        fig.text(
            x,
            height - y,
            s,
            transform=IdentityTransform(),
            fontproperties=ts.font(size, bold),
            ha=ha,
            va="top",
            parse_math=False,
        )

    for i, line in enumerate(title_lines):
        text(width / 2, PAD_PX + i * lh_title, line, TITLE_PT, "center", bold=True)
    for j, lines in enumerate(col_lines):
        top = y0 - 4 - len(lines) * lh_label
        for k, line in enumerate(lines):
            text(x0 + col_x[j] + p / 2, top + k * lh_label, line, LABEL_PT, "center")
    side_x = x0 + grid_w + 12
    for k, line in enumerate(side_header):
        text(side_x, y0 - 4 - (len(side_header) - k) * lh_label, line, LABEL_PT, "left")

    for r, row in enumerate(grid.cells):
        y = y0 + r * (row_h + g)
        for c, cell in enumerate(row):
            if cell is not None:
                fig.figimage(cell, xo=x0 + col_x[c], yo=height - y - p, origin="upper")
        if row_lines:
            lines = row_lines[r]
            top = y + p / 2 - len(lines) * lh_label / 2
            for k, line in enumerate(lines):
                text(x0 - 10, top + k * lh_label, line, LABEL_PT, "right")
        if cell_lines:
            for c, lines in enumerate(cell_lines[r]):
                for k, line in enumerate(lines):
                    text(
                        x0 + col_x[c] + p / 2,
                        y + p + 2 + k * lh_cell,
                        line,
                        CELL_LABEL_PT,
                        "center",
                    )
        if side_lines:
            for k, line in enumerate(side_lines[r]):
                text(side_x, y + k * lh_label, line, LABEL_PT, "left")

    cap_y = y0 + grid_h + 10
    for k, line in enumerate(caption_lines):
        text(PAD_PX, cap_y + k * lh_caption, line, CAPTION_PT, "left")
    return _save(fig, out)


def _mantissa(value: float) -> int:
    """The leading digit of ``value`` (2 for 0.02), 0 where it is not a round number."""
    if value <= 0:
        return 0
    m = value / 10 ** math.floor(math.log10(value))
    return round(m) if abs(m - round(m)) < 1e-6 else 0


def _parse_out(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"out must name a .png file, got {str(out)!r}")
    return out


def _save(fig: Figure, out: Path) -> Path:
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


# ---------------------------------------------------------------------------------------
# the figures


def reconstruction_grid(
    columns: Sequence[tuple[str, np.ndarray]],
    out: str | Path,
    *,
    title: str,
    caption: str,
    row_labels: Sequence[str] | None = None,
    transpose: bool = False,
) -> Path:
    """Images and their reconstructions side by side (Fig. 1, 2 and 5).

    Parameters
    ----------
    columns : sequence of (str, (N, H, W, 3) uint8 ndarray)
        Column label (``"Original"``, ``"HOG"``, ``"CONV1"``, ...) and its N images, the
        same N images in the same order in every column. ``H, W`` may differ between
        columns; every image is shown at the same size.
    out : str or Path
        PNG file to write.
    title : str
        Line above the figure.
    caption : str
        Text under the figure (which weights and data made it).
    row_labels : sequence of N str, optional
        Label left of each row (image names, or methods for Fig. 5).
    transpose : bool
        Draw each ``(label, images)`` pair as a row labelled on the left, and put
        ``row_labels`` above the columns instead. Fig. 5 with one pair per method
        (``"Ours"``, ``"M&V [1]"``, ``"Autoencoder"``) of N = 8 layers and
        ``row_labels=["CONV1", ..., "FC8"]`` gives the paper's layout.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ConfigError
        No columns, a column that is not (N, H, W, 3) uint8, columns of different N, or
        ``row_labels`` not of length N.
    """
    out = _parse_out(out)
    parsed = _parse_rows(columns, "columns")
    first, n = parsed[0][0], parsed[0][1].shape[0]
    for label, images in parsed[1:]:
        if images.shape[0] != n:
            raise ConfigError(
                f"column {label!r} has {images.shape[0]} images but column {first!r} has {n}; "
                "every column must hold the same images in the same order"
            )
    rows = None if row_labels is None else _parse_labels(row_labels, n, "row_labels", "image")
    cells = [_fit_row([images[i] for _, images in parsed]) for i in range(n)]
    # (N rows, C columns)
    cols: list[str] | None = [label for label, _ in parsed]
    if transpose:
        cells = [list(col) for col in zip(*cells)]  # (C rows, N columns)
        cols, rows = rows, cols
    grid = _Grid(cells=cells, col_labels=cols, row_labels=rows)
    return _render_grid(grid, out, title=title, caption=caption)


def dark_knowledge(
    original: np.ndarray,
    all_: np.ndarray,
    top5: np.ndarray,
    rest: np.ndarray,
    out: str | Path,
    *,
    caption: str,
    top5_labels: Sequence[Sequence[str]] | None = None,
    title: str = "Reconstructions from parts of FC8",
) -> Path:
    """Fig. 3: what the non-maximal FC8 activations ("dark knowledge") still encode.

    Parameters
    ----------
    original : (N, H, W, 3) uint8 ndarray
        The photographs.
    all_ : (N, h, w, 3) uint8 ndarray
        Decoded from all 1000 FC8 activations.
    top5 : (N, h, w, 3) uint8 ndarray
        Decoded from the 5 largest activations only (the rest set to zero).
    rest : (N, h, w, 3) uint8 ndarray
        Decoded from all but the 5 largest (those set to zero).
    out : str or Path
        PNG file to write.
    caption : str
        Text under the figure.
    top5_labels : sequence of N sequences of str, optional
        The class names of each image's 5 largest activations, listed right of its row.
    title : str
        Line above the figure.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ConfigError
        An array that is not (N, H, W, 3) uint8, arrays of different N, or ``top5_labels``
        not of length N.
    """
    out = _parse_out(out)
    named = [
        ("Original", original),
        ("All FC8", all_),
        ("Only top-5", top5),
        ("All but top-5", rest),
    ]
    parsed = [(label, _parse_images(images, f"{label!r} images")) for label, images in named]
    n = parsed[0][1].shape[0]
    for label, images in parsed[1:]:
        if images.shape[0] != n:
            raise ConfigError(
                f"{label!r} has {images.shape[0]} images but 'Original' has {n}; pass the "
                "reconstructions of the same images in the same order"
            )
    side: list[list[str]] | None = None
    if top5_labels is not None:
        if len(top5_labels) != n:
            raise ConfigError(
                f"top5_labels has {len(top5_labels)} entries for {n} images; pass one list of "
                "class names per image"
            )
        side = []
        for i, names in enumerate(top5_labels):
            if isinstance(names, str):
                raise ConfigError(f"top5_labels[{i}]: expected a list of class names, got a str")
            checked = [_parse_label(s, f"top5_labels[{i}][{k}]") for k, s in enumerate(names)]
            side.append([f"{k + 1}. {s}" for k, s in enumerate(checked)])
    grid = _Grid(
        cells=[_fit_row([images[i] for _, images in parsed]) for i in range(n)],
        col_labels=[label for label, _ in parsed],
        side_header="Top-5 classes" if side is not None else "",
        side_lines=side,
        group_after=frozenset({0}),
    )
    return _render_grid(grid, out, title=title, caption=caption)


def single_neurons(
    rows: Sequence[tuple[str, np.ndarray, Sequence[str]]],
    out: str | Path,
    *,
    caption: str,
    title: str = "Reconstructions from single neurons",
) -> Path:
    """Fig. 4: images decoded from a feature vector with one active neuron.

    Parameters
    ----------
    rows : sequence of (str, (K, H, W, 3) uint8 ndarray, sequence of K str)
        Per layer (``"FC6"``, ``"FC7"``, ``"FC8"``): its label, K decoded images, and a
        label under each image (the neuron index, or the FC8 class name). K may differ
        between rows.
    out : str or Path
        PNG file to write.
    caption : str
        Text under the figure.
    title : str
        Line above the figure.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ConfigError
        No rows, images that are not (K, H, W, 3) uint8, or a row whose label count is not K.
    """
    out = _parse_out(out)
    if len(rows) == 0:
        raise ConfigError("rows is empty; pass at least one (label, images, labels) row")
    row_labels: list[str] = []
    cells: list[list[np.ndarray | None]] = []
    cell_labels: list[list[str]] = []
    for i, row in enumerate(rows):
        if len(row) != 3:
            raise ConfigError(f"rows[{i}]: expected (label, images, per-image labels)")
        label, images, labels = row
        label = _parse_label(label, f"rows[{i}] label")
        images = _parse_images(images, f"row {label!r}")
        k = images.shape[0]
        cell_labels.append(_parse_labels(labels, k, f"row {label!r} labels", "image"))
        row_labels.append(label)
        cells.append(_fit_row(images))
    grid = _Grid(cells=cells, row_labels=row_labels, cell_labels=cell_labels)
    return _render_grid(grid, out, title=title, caption=caption)


def interpolations(
    rows: Sequence[tuple[str, np.ndarray]],
    out: str | Path,
    *,
    caption: str,
    title: str = "Interpolation between feature vectors",
) -> Path:
    """Fig. 6–7: decoded interpolations from the features of image A to those of image B.

    Parameters
    ----------
    rows : sequence of (str, (K, H, W, 3) uint8 ndarray)
        Row label (layer and decoder, e.g. ``"FC8 fixed"``) and K >= 2 decoded images,
        the first from A's features and the last from B's.
    out : str or Path
        PNG file to write.
    caption : str
        Text under the figure.
    title : str
        Line above the figure.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ConfigError
        No rows, images that are not (K, H, W, 3) uint8, or a row with fewer than 2 images.
    """
    out = _parse_out(out)
    parsed = _parse_rows(rows, "rows")
    for label, images in parsed:
        if images.shape[0] < 2:
            raise ConfigError(
                f"row {label!r} has {images.shape[0]} image; an interpolation needs at least "
                "2 (from A to B)"
            )
    lengths = {images.shape[0] for _, images in parsed}
    cols = None
    if len(lengths) == 1:  # a shared column layout: mark the two ends
        k = lengths.pop()
        cols = ["A", *[""] * (k - 2), "B"]
    grid = _Grid(
        cells=[_fit_row(images) for _, images in parsed],
        col_labels=cols,
        row_labels=[label for label, _ in parsed],
    )
    return _render_grid(grid, out, title=title, caption=caption)


def random_samples(
    rows: Sequence[tuple[str, np.ndarray]],
    out: str | Path,
    *,
    caption: str,
    title: str = "Images from random feature vectors",
) -> Path:
    """Fig. 8–10: images decoded from random feature vectors of the top layers.

    Parameters
    ----------
    rows : sequence of (str, (K, H, W, 3) uint8 ndarray)
        Row label (``"FC6 histogram"``, ``"FC6 truncated Gaussian"``, ...) and its K
        samples; K may differ between rows.
    out : str or Path
        PNG file to write.
    caption : str
        Text under the figure.
    title : str
        Line above the figure.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ConfigError
        No rows, or images that are not (K, H, W, 3) uint8.
    """
    out = _parse_out(out)
    parsed = _parse_rows(rows, "rows")
    grid = _Grid(
        cells=[_fit_row(images) for _, images in parsed],
        row_labels=[label for label, _ in parsed],
    )
    return _render_grid(grid, out, title=title, caption=caption)


def loss_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    out: str | Path,
    *,
    caption: str,
    title: str = "Training loss",
) -> Path:
    """Training loss against step, one small panel per target, on log scales.

    Parameters
    ----------
    curves : mapping of str to ((T,) ndarray, (T,) ndarray)
        Target name (``"hog"``, ``"fc8"``, ...) to its steps and losses. Points whose loss
        is not finite or not positive (a diverged run) cannot be drawn on a log axis and
        are left out; each panel's title gives the target and its last drawn loss.
    out : str or Path
        PNG file to write.
    caption : str
        Text under the plot.
    title : str
        Line above the plot.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ConfigError
        No curves, steps and losses that are not 1-D of one length, or a curve with no
        finite positive loss.
    """
    out = _parse_out(out)
    if len(curves) == 0:
        raise ConfigError("curves is empty; pass at least one target's (steps, losses)")
    parsed: list[tuple[str, np.ndarray, np.ndarray]] = []
    for name, pair in curves.items():
        if len(pair) != 2:
            raise ConfigError(f"curve {name!r}: expected a (steps, losses) pair")
        steps = np.asarray(pair[0], dtype=np.float64)
        losses = np.asarray(pair[1], dtype=np.float64)
        if steps.ndim != 1 or steps.shape != losses.shape:
            raise ConfigError(
                f"curve {name!r}: steps {steps.shape} and losses {losses.shape} must be 1-D "
                "arrays of the same length"
            )
        keep = np.isfinite(steps) & np.isfinite(losses) & (losses > 0)
        if not keep.any():
            raise ConfigError(
                f"curve {name!r} has no finite positive loss to draw on a log axis; check the "
                "training log"
            )
        order = np.argsort(steps[keep], kind="stable")
        parsed.append((str(name), steps[keep][order], losses[keep][order]))

    ts = _Typesetter(DPI)
    cols = min(4, len(parsed))
    rows = -(-len(parsed) // cols)
    panel_w, panel_h = 270, 200  # pixels per panel: one small multiple per target
    width = max(1080, cols * panel_w)
    plot_h = rows * panel_h + 40  # + the shared x label
    left, right, top, bottom = 64, 12, 26, 30  # margins inside a panel
    title_lines = ts.wrap(title, width - 2 * PAD_PX, TITLE_PT, bold=True)
    lh_title = ts.line_height(TITLE_PT)
    title_h = math.ceil(len(title_lines) * lh_title + 6) if title_lines else 0
    caption_lines = ts.wrap(caption, width - 2 * PAD_PX, CAPTION_PT)
    lh_caption = ts.line_height(CAPTION_PT)
    caption_h = math.ceil(len(caption_lines) * lh_caption)
    height = PAD_PX + title_h + plot_h + caption_h + PAD_PX

    fig = Figure(figsize=((width + 0.01) / DPI, (height + 0.01) / DPI), dpi=DPI, facecolor="w")
    FigureCanvasAgg(fig)
    cell_w = width / cols
    font = ts.font(LABEL_PT)
    for i, (name, steps, losses) in enumerate(parsed):
        r, c = divmod(i, cols)
        x0, y0 = c * cell_w + left, PAD_PX + title_h + r * panel_h + top
        ax_w, ax_h = cell_w - left - right, panel_h - top - bottom
        ax = fig.add_axes((x0 / width, (height - y0 - ax_h) / height, ax_w / width, ax_h / height))
        ax.plot(steps, losses, color="C0", linewidth=1.4, marker="o" if len(steps) == 1 else None)
        ax.set_yscale("log")
        ax.set_title(
            f"{name} (last {losses[-1]:.4g})", fontproperties=ts.font(CELL_LABEL_PT + 1, True)
        )
        ax.grid(True, which="major", color="0.85", linewidth=0.6)
        # plain numbers ("0.05"), not mathtext powers in another font; minor ticks labelled
        # only where the axis spans less than a decade, or they collide
        ymin, ymax = ax.get_ylim()
        one_decade = math.log10(ymax / ymin) < 1.0
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.yaxis.set_minor_formatter(
            FuncFormatter(
                lambda v, _, d=one_decade: f"{v:.3g}" if d and _mantissa(v) in (2, 5) else ""
            )
        )
        ax.tick_params(which="both", labelsize=CELL_LABEL_PT, labelfontfamily=FONT_FAMILY)
    fig.text(
        width / 2,
        height - (PAD_PX + title_h + rows * panel_h + 8),
        "training step (x) — training loss, pixel MSE, log scale (y); one panel per decoder",
        transform=IdentityTransform(),
        fontproperties=font,
        ha="center",
        va="top",
        parse_math=False,
    )

    def text(y: float, s: str, size: float, x: float, ha: str, bold: bool = False) -> None:
        fig.text(
            x,
            height - y,
            s,
            transform=IdentityTransform(),
            fontproperties=ts.font(size, bold),
            ha=ha,
            va="top",
            parse_math=False,
        )

    for k, line in enumerate(title_lines):
        text(PAD_PX + k * lh_title, line, TITLE_PT, width / 2, "center", bold=True)
    cap_y = PAD_PX + title_h + plot_h
    for k, line in enumerate(caption_lines):
        text(cap_y + k * lh_caption, line, CAPTION_PT, PAD_PX, "left")
    return _save(fig, out)
