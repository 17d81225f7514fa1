"""Compiled LBP kernels (numba), bit-identical to the numpy path of :func:`.lbp.lbp`.

One image at a time, in three loops over memory that stays in cache: the grey image (uint8
RGB through the per-channel tables of ``lbp._grey_tables``), one row at a time the 8-bit
codes and their packed integer votes into (bin, block) sums, then the cells and their
normalisation. The integer arithmetic is the numpy path's (``lbp._Plan``, ``lbp._cells``),
and the float32 steps are the same IEEE operations in the same order (the bin sum of a cell
from bin 0 to 57, as ``numpy.sum`` over that axis adds), so the outputs are equal bit for bit
(``tests/test_lbp.py``).

The functions are compiled with ``nogil=True`` (the threads of ``extract()`` run them in
parallel) and ``cache=True``; nothing in them depends on thread scheduling. Without numba
they are plain Python and never called (:func:`pipeline.features.base.kernel_backend`).
"""

from __future__ import annotations

import numpy as np

from pipeline.features.base import compiled

__all__ = ["lbp_grey", "lbp_rgb"]

_N_BINS = 58  # pipeline.features.lbp.N_BINS (not imported: lbp imports this module)

#: Unsigned indices: numba adds a negative-index wraparound to every signed index, which
#: made the vote loop 2.5x slower and the code loop gather its neighbours.
_U = np.uint64


@compiled
def _grey_rgb(image: np.ndarray, tables: np.ndarray, grey: np.ndarray) -> None:
    """``grey = (R[r] + G[g]) + B[b]`` in float32: ``to_grey`` of one uint8 RGB image.

    Parameters
    ----------
    image : (H, W, 3) ndarray of uint8
    tables : (4, 256) ndarray of float32
        ``lbp._grey_tables()``: the R, G and B terms of each level (row 3 unused here).
    grey : (H, W) ndarray of float32
        Written.
    """
    height, width = grey.shape
    red, green, blue = tables[0], tables[1], tables[2]
    for y in range(_U(height)):
        pixels, out = image[y], grey[y]
        for x in range(_U(width)):
            out[x] = (red[pixels[x, 0]] + green[pixels[x, 1]]) + blue[pixels[x, 2]]


@compiled
def _block_sums(
    grey: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    bin_offset: np.ndarray,
    y_block: np.ndarray,
    y_factor: np.ndarray,
    x_block: np.ndarray,
    x_words: np.ndarray,
    codes: np.ndarray,
    sums: np.ndarray,
) -> None:
    """The packed (bin, block) vote sums of one grey image (``lbp._Plan``'s words).

    Parameters
    ----------
    grey : (H, W) ndarray of float32
    rows, cols : (2,) ndarray of int64
        ``[first, stop)`` of the voting rows and columns: the interior pixels (VLFeat skips
        the 1-pixel border) that have a first cell.
    bin_offset : (256,) ndarray of int64
        ``n_blocks`` times the bin of each 8-bit code (``uniform_lbp_table``).
    y_block : (H,) ndarray of int64
        ``(w + 1)`` times the block row of each row.
    y_factor : (H,) ndarray of int64
        ``1 + (o_y << s)`` of each row.
    x_block : (W,) ndarray of int64
        Block column of each column.
    x_words : (n_words, W) ndarray of int64
        One word ``F + (C << t)`` per column, or the two words ``F`` and ``C``; the vote of
        pixel (y, x) is ``y_factor[y] * x_words[:, x]``.
    codes : (W,) ndarray of uint8
        Scratch for one row's codes.
    sums : (n_words, 58 * n_blocks) ndarray of int64
        Zeroed and written: index ``n_blocks * bin + (w + 1) * block_row + block_column``.

    Notes
    -----
    Bit k of a code is set where neighbour k (E, SE, S, SW, W, NW, N, NE; y down) is strictly
    greater than the centre (``lbp._NEIGHBOURS``); NaN compares false. Integer sums are exact
    (``lbp._make_plan`` sizes the fields), so their order does not matter.
    """
    sums[:] = 0
    n_words = x_words.shape[0]
    first, stop = _U(cols[0]), _U(cols[1])
    for y in range(rows[0], rows[1]):
        up, mid, down = grey[y - 1], grey[y], grey[y + 1]
        for x in range(first, stop):  # vectorised by LLVM: eight compares a lane
            c, left, right = mid[x], x - _U(1), x + _U(1)
            codes[x] = (
                (mid[right] > c) * 1
                + (down[right] > c) * 2
                + (down[x] > c) * 4
                + (down[left] > c) * 8
                + (mid[left] > c) * 16
                + (up[left] > c) * 32
                + (up[x] > c) * 64
                + (up[right] > c) * 128
            )
        row, factor = _U(y_block[y]), y_factor[y]
        for word in range(n_words):
            acc, weights = sums[word], x_words[word]
            for x in range(first, stop):  # unsigned indices: no negative-index wraparound
                acc[_U(bin_offset[codes[x]]) + row + _U(x_block[x])] += factor * weights[x]


@compiled
def _cells(sums: np.ndarray, cell: int, s: int, t: int, eps: np.float32, out: np.ndarray) -> None:
    """Cells from the block sums, then VLFeat's ``sqrt(hist) / (sqrt(sum(hist)) + eps)``.

    Parameters
    ----------
    sums : (n_words, 58 * n_blocks) ndarray of int64
        :func:`_block_sums`.
    cell, s : int
        Cell size; bit offset of the ``o_y``-weighted field.
    t : int
        Bit offset of C in the word; -1 where F and C are two words.
    eps : float32
        ``2 cell 1e-10`` rounded to float32, as ``lbp._normalise`` adds it.
    out : (58, h, w) ndarray of float32
        Written: the normalised cells of one image.

    Notes
    -----
    As ``lbp._cells``: the x stage ``X = F[block column L + 1] + C[block column L]``, the
    y stage ``2c X_lo[K + 1] - X_hi[K + 1] + X_hi[K]``, cast to float32; then the bin sum of
    every cell in float32 from bin 0 to 57 (numpy's order for ``sum(axis=1)``), its square
    root plus ``eps``, and every bin's square root divided by it.
    """
    _, h, w = out.shape
    down = _U(w + 1)
    n_blocks = _U(h + 1) * down
    low = (np.int64(1) << s) - 1
    two_c = 2 * cell
    f_mask = (np.int64(1) << max(t, 0)) - 1
    f_sums = sums[0]
    c_sums = sums[sums.shape[0] - 1]  # the same word where t >= 0
    cells = out.reshape(_N_BINS, h * w)
    for b in range(_U(_N_BINS)):
        for k in range(_U(h)):
            i = b * n_blocks + k * down  # block (k, 0); block (k + 1, 0) is i + down
            j = k * _U(w)
            if t >= 0:
                for col in range(_U(w)):
                    x0 = (f_sums[i + col + _U(1)] & f_mask) + (c_sums[i + col] >> t)
                    x1 = (f_sums[i + down + col + _U(1)] & f_mask) + (c_sums[i + down + col] >> t)
                    cells[b, j + col] = np.float32(two_c * (x1 & low) - (x1 >> s) + (x0 >> s))
            else:
                for col in range(_U(w)):
                    x0 = f_sums[i + col + _U(1)] + c_sums[i + col]
                    x1 = f_sums[i + down + col + _U(1)] + c_sums[i + down + col]
                    cells[b, j + col] = np.float32(two_c * (x1 & low) - (x1 >> s) + (x0 >> s))
    norm = np.zeros(h * w, dtype=np.float32)
    for b in range(_U(_N_BINS)):  # numpy's order: norm = ((0 + bin 0) + bin 1) + ...
        for q in range(_U(h * w)):
            norm[q] += cells[b, q]
    for q in range(_U(h * w)):
        norm[q] = np.sqrt(norm[q]) + eps
    for b in range(_U(_N_BINS)):
        for q in range(_U(h * w)):
            cells[b, q] = np.sqrt(cells[b, q]) / norm[q]


@compiled
def lbp_rgb(
    images: np.ndarray,
    tables: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    bin_offset: np.ndarray,
    y_block: np.ndarray,
    y_factor: np.ndarray,
    x_block: np.ndarray,
    x_words: np.ndarray,
    cell: int,
    s: int,
    t: int,
    eps: np.float32,
    out: np.ndarray,
) -> None:
    """LBP cells of a batch of uint8 RGB images, written into ``out``.

    Parameters
    ----------
    images : (N, H, W, 3) ndarray of uint8, C-contiguous
    tables : (4, 256) ndarray of float32
        ``lbp._grey_tables()``.
    rows, cols, bin_offset, y_block, y_factor, x_block, x_words
        As :func:`_block_sums`.
    cell, s, t, eps
        As :func:`_cells`.
    out : (N, 58, h, w) ndarray of float32
        Written.
    """
    n, height, width = images.shape[:3]
    grey = np.empty((height, width), dtype=np.float32)
    codes = np.empty(width, dtype=np.uint8)
    sums = np.empty(
        (x_words.shape[0], _N_BINS * (out.shape[2] + 1) * (out.shape[3] + 1)), dtype=np.int64
    )
    for i in range(n):
        _grey_rgb(images[i], tables, grey)
        _block_sums(grey, rows, cols, bin_offset, y_block, y_factor, x_block, x_words, codes, sums)
        _cells(sums, cell, s, t, eps, out[i])


@compiled
def lbp_grey(
    grey: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    bin_offset: np.ndarray,
    y_block: np.ndarray,
    y_factor: np.ndarray,
    x_block: np.ndarray,
    x_words: np.ndarray,
    cell: int,
    s: int,
    t: int,
    eps: np.float32,
    out: np.ndarray,
) -> None:
    """LBP cells of a batch of float32 grey images, written into ``out``.

    Parameters
    ----------
    grey : (N, H, W) ndarray of float32, C-contiguous
        ``to_grey`` of the images.
    rows, cols, bin_offset, y_block, y_factor, x_block, x_words
        As :func:`_block_sums`.
    cell, s, t, eps
        As :func:`_cells`.
    out : (N, 58, h, w) ndarray of float32
        Written.
    """
    n, _, width = grey.shape
    codes = np.empty(width, dtype=np.uint8)
    sums = np.empty(
        (x_words.shape[0], _N_BINS * (out.shape[2] + 1) * (out.shape[3] + 1)), dtype=np.int64
    )
    for i in range(n):
        _block_sums(
            grey[i], rows, cols, bin_offset, y_block, y_factor, x_block, x_words, codes, sums
        )
        _cells(sums, cell, s, t, eps, out[i])
