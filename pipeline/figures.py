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
and under any ``MPLBACKEND``. The grid layout, text measurement and cell fitting they
share are in :mod:`pipeline.grids`.

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
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from pipeline.errors import ConfigError
from pipeline.grids import (
    CAPTION_PT,
    CELL_LABEL_PT,
    CELL_PX,
    DPI,
    FONT_FAMILY,
    GAP_PX,
    LABEL_PT,
    PAD_PX,
    TITLE_PT,
    Grid,
    Typesetter,
    draw_line,
    fit_row,
    fit_to_cell,
    parse_images,
    parse_label,
    parse_labels,
    parse_out,
    parse_rows,
    render_grid,
    save,
)

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


def _mantissa(value: float) -> int:
    """The leading digit of ``value`` (2 for 0.02), 0 where it is not a round number."""
    if value <= 0:
        return 0
    m = value / 10 ** math.floor(math.log10(value))
    return round(m) if abs(m - round(m)) < 1e-6 else 0


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
    out = parse_out(out)
    parsed = parse_rows(columns, "columns")
    first, n = parsed[0][0], parsed[0][1].shape[0]
    for label, images in parsed[1:]:
        if images.shape[0] != n:
            raise ConfigError(
                f"column {label!r} has {images.shape[0]} images but column {first!r} has {n}; "
                "every column must hold the same images in the same order"
            )
    rows = None if row_labels is None else parse_labels(row_labels, n, "row_labels", "image")
    cells = [fit_row([images[i] for _, images in parsed]) for i in range(n)]
    # (N rows, C columns)
    cols: list[str] | None = [label for label, _ in parsed]
    if transpose:
        cells = [list(col) for col in zip(*cells)]  # (C rows, N columns)
        cols, rows = rows, cols
    grid = Grid(cells=cells, col_labels=cols, row_labels=rows)
    return render_grid(grid, out, title=title, caption=caption)


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
    out = parse_out(out)
    named = [
        ("Original", original),
        ("All FC8", all_),
        ("Only top-5", top5),
        ("All but top-5", rest),
    ]
    parsed = [(label, parse_images(images, f"{label!r} images")) for label, images in named]
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
            checked = [parse_label(s, f"top5_labels[{i}][{k}]") for k, s in enumerate(names)]
            side.append([f"{k + 1}. {s}" for k, s in enumerate(checked)])
    grid = Grid(
        cells=[fit_row([images[i] for _, images in parsed]) for i in range(n)],
        col_labels=[label for label, _ in parsed],
        side_header="Top-5 classes" if side is not None else "",
        side_lines=side,
        group_after=frozenset({0}),
    )
    return render_grid(grid, out, title=title, caption=caption)


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
    out = parse_out(out)
    if len(rows) == 0:
        raise ConfigError("rows is empty; pass at least one (label, images, labels) row")
    row_labels: list[str] = []
    cells: list[list[np.ndarray | None]] = []
    cell_labels: list[list[str]] = []
    for i, row in enumerate(rows):
        if len(row) != 3:
            raise ConfigError(f"rows[{i}]: expected (label, images, per-image labels)")
        label, images, labels = row
        label = parse_label(label, f"rows[{i}] label")
        images = parse_images(images, f"row {label!r}")
        k = images.shape[0]
        cell_labels.append(parse_labels(labels, k, f"row {label!r} labels", "image"))
        row_labels.append(label)
        cells.append(fit_row(images))
    grid = Grid(cells=cells, row_labels=row_labels, cell_labels=cell_labels)
    return render_grid(grid, out, title=title, caption=caption)


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
    out = parse_out(out)
    parsed = parse_rows(rows, "rows")
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
    grid = Grid(
        cells=[fit_row(images) for _, images in parsed],
        col_labels=cols,
        row_labels=[label for label, _ in parsed],
    )
    return render_grid(grid, out, title=title, caption=caption)


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
    out = parse_out(out)
    parsed = parse_rows(rows, "rows")
    grid = Grid(
        cells=[fit_row(images) for _, images in parsed],
        row_labels=[label for label, _ in parsed],
    )
    return render_grid(grid, out, title=title, caption=caption)


def _parse_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Each curve as (name, (T',) steps, (T',) losses): finite positive points, by step.

    Raises
    ------
    ConfigError
        No curves, steps and losses that are not 1-D of one length, or a curve with no
        finite positive loss.
    """
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
    return parsed


def _loss_panel(
    fig: Figure,
    ts: Typesetter,
    curve: tuple[str, np.ndarray, np.ndarray],
    box: tuple[float, float, float, float],
    size: tuple[int, int],
) -> None:
    """Draw one target's (name, steps, losses) on log-y axes inside a panel of ``fig``.

    ``box`` is the panel's (left, top, width, height) and ``size`` the figure's (width,
    height), in pixels with y measured down from the figure's top.
    """
    name, steps, losses = curve
    cell_x, cell_y, cell_w, panel_h = box
    width, height = size
    left, right, top, bottom = 64, 12, 26, 30  # margins inside a panel
    x0, y0 = cell_x + left, cell_y + top
    ax_w, ax_h = cell_w - left - right, panel_h - top - bottom
    ax = fig.add_axes((x0 / width, (height - y0 - ax_h) / height, ax_w / width, ax_h / height))
    ax.plot(steps, losses, color="C0", linewidth=1.4, marker="o" if len(steps) == 1 else None)
    ax.set_yscale("log")
    ax.set_title(f"{name} (last {losses[-1]:.4g})", fontproperties=ts.font(CELL_LABEL_PT + 1, True))
    ax.grid(True, which="major", color="0.85", linewidth=0.6)
    # plain numbers ("0.05"), not mathtext powers in another font; minor ticks labelled
    # only where the axis spans less than a decade, or they collide
    ymin, ymax = ax.get_ylim()
    one_decade = math.log10(ymax / ymin) < 1.0
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(
        FuncFormatter(lambda v, _, d=one_decade: f"{v:.3g}" if d and _mantissa(v) in (2, 5) else "")
    )
    ax.tick_params(which="both", labelsize=CELL_LABEL_PT, labelfontfamily=FONT_FAMILY)


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
    out = parse_out(out)
    parsed = _parse_curves(curves)

    ts = Typesetter(DPI)
    cols = min(4, len(parsed))
    rows = -(-len(parsed) // cols)
    panel_w, panel_h = 270, 200  # pixels per panel: one small multiple per target
    width = max(1080, cols * panel_w)
    plot_h = rows * panel_h + 40  # + the shared x label
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
    for i, curve in enumerate(parsed):
        r, c = divmod(i, cols)
        box = (c * cell_w, PAD_PX + title_h + r * panel_h, cell_w, panel_h)
        _loss_panel(fig, ts, curve, box, (width, height))
    draw_line(
        fig,
        height,
        (width / 2, PAD_PX + title_h + rows * panel_h + 8),
        "training step (x) — training loss, pixel MSE, log scale (y); one panel per decoder",
        ts.font(LABEL_PT),
        "center",
    )
    for k, line in enumerate(title_lines):
        title_xy = (width / 2, PAD_PX + k * lh_title)
        draw_line(fig, height, title_xy, line, ts.font(TITLE_PT, True), "center")
    cap_y = PAD_PX + title_h + plot_h
    for k, line in enumerate(caption_lines):
        draw_line(fig, height, (PAD_PX, cap_y + k * lh_caption), line, ts.font(CAPTION_PT), "left")
    return save(fig, out)
