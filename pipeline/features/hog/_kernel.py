"""Compiled HOG kernels (numba), bit-identical to :func:`pipeline.features.hog.hog`'s torch path.

One image at a time, one block of ``cell_size`` rows at a time, in memory that stays in
cache: per image row the gradients and channel choice, VLFeat's orientation bin from its
float32 scores, the magnitude and the x-votes (:func:`_row_votes`); per block the y-votes
into the cells' directed histograms (:func:`hog_hist`). Every float32
operation is the torch path's, in the torch path's order, so the bytes are equal:

- x-votes: ``index_add_`` adds, per buffer cell, the votes into the left cell in pixel order,
  then those into the right cell; here the same two passes per row.
- y-votes: ``hog._y_votes`` accumulates, for ``k = 0 .. c - 1`` from 0,
  ``acc = acc + tent[k] * buffer[k]``, the product and the sum each rounded to float32;
  here the same (numba does not fuse them). No BLAS is involved on either side, so the
  order, and the bytes, do not depend on the CPU's instruction set.

The block normalisation stays with torch (``hog._block_normalise``, ~8% of the time), whose
sums are written out term by term for the same reason.

Compiled with ``nogil=True`` and ``cache=True`` (:func:`pipeline.features.base.compiled`);
without numba these are plain Python and never called.
"""

from __future__ import annotations

import numpy as np

from pipeline.features.base import compiled

__all__ = ["hog_hist"]

_U = np.uint64  # unsigned indices: numba wraps negative signed ones, at a cost per access


@compiled
def _row_votes(
    planes: np.ndarray,
    y: int,
    cos: np.ndarray,
    sin: np.ndarray,
    cell_x: np.ndarray,
    weight_x: np.ndarray,
    gx: np.ndarray,
    gy: np.ndarray,
    grad2: np.ndarray,
    best: np.ndarray,
    bins: np.ndarray,
    votes: np.ndarray,
) -> None:
    """Gradients, orientation bins and x-votes of interior image row ``y`` into ``votes``.

    Parameters
    ----------
    planes : (C, H, W) ndarray of float32
    y : int
        An interior row, ``1 .. H - 2``.
    cos, sin : (O,) ndarray of float32
        VLFeat's orientation tables (``hog._orientation_tables``).
    cell_x : (2, W - 2) ndarray of int64
        Left and right cell of every interior column (``hog._axis_votes``).
    weight_x : (2, W - 2) ndarray of float32
        Their weights (0 for a cell outside the grid).
    gx, gy, grad2, best : (W - 2,) ndarray of float32
        Scratch.
    bins : (W - 2,) ndarray of int64
        Scratch.
    votes : (2O, w) ndarray of float32
        This row's buffer row: the votes are added to it.

    Notes
    -----
    As ``hog._gradients``: central differences of channel 0, replaced by those of a later
    channel whose ``gx² + gy²`` is strictly larger. As ``hog._exact_directed_bins``: the
    ``k`` maximising ``|fl(cos_k gx) + fl(sin_k gy)|`` (the first on a tie), plus ``O`` where
    ``gy`` (``gx`` for ``k = 0``) is negative. The magnitude is the IEEE ``sqrt``.
    """
    channels, _, width = planes.shape
    n = width - 2
    o = cos.shape[0]
    plane = planes[0]
    up, mid, down = plane[y - 1], plane[y], plane[y + 1]
    for j in range(_U(n)):
        a = mid[j + _U(2)] - mid[j]
        b = down[j + _U(1)] - up[j + _U(1)]
        gx[j], gy[j], grad2[j] = a, b, a * a + b * b
    for ch in range(1, channels):
        plane = planes[ch]
        up, mid, down = plane[y - 1], plane[y], plane[y + 1]
        for j in range(_U(n)):
            a = mid[j + _U(2)] - mid[j]
            b = down[j + _U(1)] - up[j + _U(1)]
            g2 = a * a + b * b
            if g2 > grad2[j]:
                gx[j], gy[j], grad2[j] = a, b, g2
    for j in range(_U(n)):
        best[j] = abs(gx[j])  # k = 0: cos 0 = 1, sin 0 = 0
        bins[j] = 0
    for k in range(1, o):
        c, s = cos[k], sin[k]
        for j in range(_U(n)):
            score = abs(c * gx[j] + s * gy[j])
            if score > best[j]:
                best[j] = score
                bins[j] = k
    for j in range(_U(n)):
        sign = gx[j] if bins[j] == 0 else gy[j]
        if sign < 0:
            bins[j] += o
        best[j] = np.sqrt(grad2[j])  # the magnitude, reusing the scratch
    for side in range(2):
        cells, weights = cell_x[side], weight_x[side]
        for j in range(_U(n)):
            votes[_U(bins[j]), _U(cells[j])] += weights[j] * best[j]


@compiled
def hog_hist(
    planes: np.ndarray,
    cos: np.ndarray,
    sin: np.ndarray,
    cell_x: np.ndarray,
    weight_x: np.ndarray,
    tent: np.ndarray,
    hist: np.ndarray,
) -> None:
    """The cells' directed orientation histograms of a batch of channel planes.

    Parameters
    ----------
    planes : (N, C, H, W) ndarray of float32, C-contiguous
        Pixel values in [0, 1] (``hog._channels_first``).
    cos, sin : (O,) ndarray of float32
    cell_x, weight_x : (2, W - 2) ndarrays of int64 and float32
        As :func:`_row_votes`.
    tent : (h + 1, 2, c) ndarray of float32
        The y-weights of every block of ``c`` buffer rows into cells ``m`` and ``m - 1``
        (``hog._tent``); buffer row ``m c + k`` is image row ``m c + k - c // 2``.
    hist : (N, h, 2O, w) ndarray of float32
        Written: what ``hog_torch`` hands to ``_block_normalise``.
    """
    n, _, height, width = planes.shape
    c_rows = tent.shape[2]
    _, h, o2, w = hist.shape
    span = o2 * w
    buffer = np.empty((c_rows, o2, w), dtype=np.float32)
    flat = buffer.reshape(c_rows, span)
    across = np.empty(span, dtype=np.float32)  # blocks[m, 1]: into cell m - 1
    previous = np.empty(span, dtype=np.float32)  # blocks[m - 1, 0]: into cell m - 1
    gx = np.empty(width - 2, dtype=np.float32)
    gy = np.empty_like(gx)
    grad2 = np.empty_like(gx)
    best = np.empty_like(gx)
    bins = np.empty(width - 2, dtype=np.int64)
    zero = np.float32(0.0)
    for image in range(n):
        cells = hist[image].reshape(h, span)
        for m in range(h + 1):
            buffer[:] = 0
            for k in range(c_rows):
                y = m * c_rows + k - c_rows // 2
                if 1 <= y <= height - 2:
                    _row_votes(
                        planes[image],
                        y,
                        cos,
                        sin,
                        cell_x,
                        weight_x,
                        gx,
                        gy,
                        grad2,
                        best,
                        bins,
                        buffer[k],
                    )
            # hog._y_votes: acc = acc + tent[k] * buffer[k], k = 0 .. c - 1, from 0
            into_m, into_m1 = tent[m, 0], tent[m, 1]
            for q in range(span):
                if m:
                    cells[m - 1, q] = previous[q]  # blocks[m - 1, 0]; blocks[m, 1] added below
                across[q] = zero
                previous[q] = zero
            for k in range(c_rows):
                for q in range(span):
                    across[q] = across[q] + into_m1[k] * flat[k, q]
                    previous[q] = previous[q] + into_m[k] * flat[k, q]
            if m:
                for q in range(span):
                    cells[m - 1, q] = cells[m - 1, q] + across[q]
