"""The ``"opencv"`` SIFT backend: VLFeat's detector re-implemented, OpenCV's descriptor.

:func:`keypoints_opencv` is what :func:`pipeline.features.sift.keypoints` runs for
``backend="opencv"``: the Gaussian scale space with VLFeat's kernels, the 3x3x3 DoG extrema,
the quadratic refinement and its tests, the 36-bin orientation histograms (``vl/sift.c``,
step by step), then OpenCV's descriptor at those frames in VLFeat's bin layout. Conventions
and departures: :mod:`pipeline.features.sift`.

The extrema, the refinement and the orientation histograms have two implementations with the
same bits: the numpy code here, and numba kernels (:mod:`._kernel`, one keypoint or pixel at
a time, the GIL released) that :func:`keypoints_opencv_batch` runs where
:func:`pipeline.features.base.kernel_backend` says ``"numba"`` and the images are finite and
below ``_kernel.MAX_ABS``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from pipeline.errors import ExtractionError
from pipeline.features.base import kernel_backend
from pipeline.features.sift import _kernel

if TYPE_CHECKING:
    from pipeline.features.sift import SiftParams

DESCRIPTOR_SIZE = 128  # 4 x 4 spatial bins x 8 orientation bins (Lowe 2004, §6.1)
DESCRIPTOR_SCALE = 512.0  # cv2.SIFT stores round(512 d) clamped to 255, like VLFeat

# VLFeat's scale-space constants (vl/sift.c, vl_sift_new), all after Lowe (2004).
_SIGMA_BASE = 1.6  # smoothing of level s = -1 of every octave
_SIGMA_NOMINAL = 0.5  # blur the input image is assumed to carry already (camera/anti-aliasing)
_KERNEL_HALF_WIDTH = 4.0  # VLFeat's smoothing kernel has ceil(4 sigma) taps on each side
_MAX_REFINE_STEPS = 5  # VLFeat moves a DoG extremum at most 5 times while refining it
_REFINE_MOVE = 0.6  # ... by one pixel whenever the quadratic fit's offset exceeds 0.6
_REFINE_MAX_OFFSET = 1.5  # a fit whose final offset is >= 1.5 (any axis) is rejected
_SINGULAR_PIVOT = 1e-10  # VLFeat gives up on the quadratic fit below this pivot
_ORI_BINS = 36  # orientation histogram bins (10 degrees each)
_ORI_WINDOW = 1.5  # the orientation window's sigma, in units of the keypoint sigma
_ORI_SMOOTHING_PASSES = 6  # circular [1 1 1]/3 box filter, applied 6 times
_ORI_PEAK_RATIO = 0.8  # secondary orientations within 80 % of the highest peak
_ORI_MAX_ANGLES = 4  # VLFeat keeps at most 4 orientations per keypoint
_ZERO_GRADIENT2 = 1e-8  # VLFeat's fast sqrt returns 0 below this squared magnitude
# VLFeat's fast_expn: exp(-x) tabulated on [0, 25] at 256 steps, linearly interpolated.
_EXPN_MAX = 25.0
_EXPN_STEPS = 256
# VLFeat's vl_fast_atan2_f polynomial coefficients and float32 epsilon.
_ATAN_C1 = np.float32(0.9675)
_ATAN_C3 = np.float32(0.1821)
_FLOAT_EPS = np.float32(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class _Octave:
    """One octave of the Gaussian scale space: index ``o`` and levels ``s = -1 .. S + 1``."""

    index: int
    gss: np.ndarray  # (S + 3, h, w) float32


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """VLFeat's Gaussian smoothing: ceil(4 sigma) taps a side, replicated border."""
    half = max(math.ceil(_KERNEL_HALF_WIDTH * sigma), 1)
    taps = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    kernel = (taps / taps.sum()).astype(np.float32)
    return cv2.sepFilter2D(image, cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REPLICATE)


def _double(image: np.ndarray) -> np.ndarray:
    """VLFeat's 2x upsampling: even pixels copied, odd ones the mean of their neighbours."""
    h, w = image.shape
    rows = np.empty((h, 2 * w), dtype=np.float32)
    rows[:, 0::2] = image
    rows[:, 1:-1:2] = 0.5 * (image[:, :-1] + image[:, 1:])
    rows[:, -1] = image[:, -1]
    out = np.empty((2 * h, 2 * w), dtype=np.float32)
    out[0::2] = rows
    out[1:-1:2] = 0.5 * (rows[:-1] + rows[1:])
    out[-1] = rows[-1]
    return out


def _scale_space(image: np.ndarray, params: SiftParams) -> list[_Octave]:
    """VLFeat's Gaussian scale space (``vl_sift_process_first_octave`` / ``_next_octave``).

    Level ``s`` of octave ``o`` has smoothing ``sigma0 * 2^(o + s / S)`` in input pixels,
    with ``sigma0 = 1.6 * 2^(1/S)``, for ``s = -1 .. S + 1``.
    """
    levels = params.levels_per_octave
    o_min = params.first_octave
    height, width = image.shape
    n_octaves = max(math.floor(math.log2(min(height, width))) - o_min - 3, 1)
    k = 2.0 ** (1.0 / levels)
    sigma0 = _SIGMA_BASE * k
    dsigma0 = sigma0 * math.sqrt(1.0 - 1.0 / (k * k))  # increment between two levels at s=0
    s_min, s_max = -1, levels + 1

    if o_min < 0:
        base = _double(image)
    elif o_min > 0:
        step = 2**o_min
        base = np.ascontiguousarray(
            image[: height // step * step : step, : width // step * step : step]
        )
    else:
        base = image
    sa, sb = sigma0 * k**s_min, _SIGMA_NOMINAL * 2.0 ** (-o_min)
    if sa > sb:
        base = _smooth(base, math.sqrt(sa * sa - sb * sb))

    octaves = []
    for o in range(o_min, o_min + n_octaves):
        h, w = base.shape
        if h < 3 or w < 3:  # no interior pixel to search: VLFeat finds nothing here either
            break
        gss = np.empty((s_max - s_min + 1, h, w), dtype=np.float32)
        gss[0] = base
        for i, s in enumerate(range(s_min + 1, s_max + 1), start=1):
            gss[i] = _smooth(gss[i - 1], dsigma0 * k**s)
        octaves.append(_Octave(o, gss))
        # The next octave starts from level s_min + S (twice the smoothing of s_min),
        # subsampled: every other pixel, as VLFeat's copy_and_downsample.
        s_best = min(s_min + levels, s_max)
        base = np.ascontiguousarray(gss[s_best - s_min, : h // 2 * 2 : 2, : w // 2 * 2 : 2])
        sa, sb = sigma0 * k**s_min, sigma0 * k ** (s_best - levels)
        if sa > sb:
            base = _smooth(base, math.sqrt(sa * sa - sb * sb))
    return octaves


_SQUARE = np.ones((3, 3), dtype=np.uint8)


def _extrema(
    dog: np.ndarray, peak_threshold: float, compiled: bool = False
) -> tuple[np.ndarray, ...]:
    """Strict 3x3x3 extrema of a DoG octave (``vl_sift_detect``).

    Parameters
    ----------
    dog : (S + 2, h, w) ndarray of float32
    peak_threshold : float
        VLFeat pre-filters with ``|v| >= 0.8 * peak_threshold``; the final test is in
        :func:`_refine`.
    compiled : bool
        Run :func:`._kernel.extrema` (finite ``dog`` only) instead of the numpy code.

    Returns
    -------
    level, y, x : (K,) ndarrays of int64
        DoG level index (1 .. S) and interior pixel of every extremum.
    """
    threshold = np.float32(0.8 * peak_threshold)
    if compiled:
        return _kernel.extrema(dog, threshold)
    _, h, w = dog.shape
    inner = (slice(None), slice(1, h - 1), slice(1, w - 1))
    # 3x3 maxima / minima of every level (centre included), interior pixels only.
    dil, ero = np.empty_like(dog), np.empty_like(dog)
    for i in range(len(dog)):
        cv2.dilate(dog[i], _SQUARE, dst=dil[i])
        cv2.erode(dog[i], _SQUARE, dst=ero[i])
    dil, ero = dil[inner], ero[inner]  # (S + 2, h - 2, w - 2)
    v = dog[1:-1, 1:-1, 1:-1]  # (S, h - 2, w - 2)
    # Loose test: >= every same-level neighbour, > every neighbour on the levels around.
    up = (v >= dil[1:-1]) & (v > np.maximum(dil[:-2], dil[2:])) & (v >= threshold)
    down = (v <= ero[1:-1]) & (v < np.minimum(ero[:-2], ero[2:])) & (v <= -threshold)
    lvl, y, x = np.nonzero(up | down)
    lvl, y, x = lvl + 1, y + 1, x + 1
    # Strict test against the 8 same-level neighbours: VLFeat drops ties.
    centre = dog[lvl, y, x]
    sign = np.where(up[lvl - 1, y - 1, x - 1], np.float32(1), np.float32(-1))
    strict = np.ones(len(lvl), dtype=bool)
    for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)):
        strict &= sign * centre > sign * dog[lvl, y + dy, x + dx]
    return lvl[strict].astype(np.int64), y[strict].astype(np.int64), x[strict].astype(np.int64)


def _solve3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve K 3x3 systems by Gaussian elimination with partial pivoting, as VLFeat.

    Parameters
    ----------
    a : (K, 3, 3) ndarray of float64
    b : (K, 3) ndarray of float64

    Returns
    -------
    (K, 3) ndarray of float64
        The solutions; zero where a pivot falls below VLFeat's 1e-10 (singular fit).
    """
    a, b = a.copy(), b.copy()
    k = np.arange(len(b))
    ok = np.ones(len(b), dtype=bool)
    for j in range(3):
        piv = j + np.argmax(np.abs(a[:, j:, j]), axis=1)
        pivot = a[k, piv, j]
        ok &= np.abs(pivot) >= _SINGULAR_PIVOT
        pivot = np.where(ok, pivot, 1.0)
        # Swap rows j and piv (piv may be j: write row j last), then normalise row j.
        row_j, row_p = a[k, j].copy(), a[k, piv].copy()
        a[k, piv] = row_j
        a[k, j] = row_p / pivot[:, None]
        b_j, b_p = b[k, j].copy(), b[k, piv].copy()
        b[k, piv] = b_j
        b[k, j] = b_p / pivot
        for i in range(j + 1, 3):
            factor = a[:, i, j].copy()
            a[:, i] -= factor[:, None] * a[:, j]
            b[:, i] -= factor * b[:, j]
    for i in (2, 1):
        for row in range(i):
            b[:, row] -= b[:, i] * a[:, row, i]
    b[~ok] = 0.0
    return b


def _refine_numpy(
    flat: np.ndarray,
    base: np.ndarray,
    h: np.ndarray,
    w: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    grad: np.ndarray,
    hess: np.ndarray,
    offset: np.ndarray,
    value: np.ndarray,
) -> None:
    """The quadratic fits and moves of :func:`_refine`, numpy's way, in place.

    Arguments as :func:`._kernel.refine`. All the keypoints still moving at once, up to
    VLFeat's 5 fits each; the DoG values are taken to float64 (exactly) as they are read.
    """
    active = np.arange(len(x))
    for step in range(_MAX_REFINE_STEPS):
        xa, ya, wa, ha = x[active], y[active], w[active], h[active]
        centre = base[active] + ya * wa + xa
        sstride = ha * wa

        def at(
            dx: int,
            dy: int,
            ds: int,
            c: np.ndarray = centre,
            wa: np.ndarray = wa,
            ss: np.ndarray = sstride,
        ) -> np.ndarray:
            return flat[c + dx + dy * wa + ds * ss].astype(np.float64)  # exact

        v = at(0, 0, 0)
        g = np.stack(
            [
                0.5 * (at(1, 0, 0) - at(-1, 0, 0)),
                0.5 * (at(0, 1, 0) - at(0, -1, 0)),
                0.5 * (at(0, 0, 1) - at(0, 0, -1)),
            ],
            axis=1,
        )  # (Ka, 3) gradient in (x, y, s)
        dxx = at(1, 0, 0) + at(-1, 0, 0) - 2 * v
        dyy = at(0, 1, 0) + at(0, -1, 0) - 2 * v
        dss = at(0, 0, 1) + at(0, 0, -1) - 2 * v
        dxy = 0.25 * (at(1, 1, 0) + at(-1, -1, 0) - at(-1, 1, 0) - at(1, -1, 0))
        dxs = 0.25 * (at(1, 0, 1) + at(-1, 0, -1) - at(-1, 0, 1) - at(1, 0, -1))
        dys = 0.25 * (at(0, 1, 1) + at(0, -1, -1) - at(0, -1, 1) - at(0, 1, -1))
        hs = np.stack(
            [
                np.stack([dxx, dxy, dxs], 1),
                np.stack([dxy, dyy, dys], 1),
                np.stack([dxs, dys, dss], 1),
            ],
            axis=1,
        )  # (Ka, 3, 3) Hessian
        b = _solve3(hs, -g)
        grad[active], hess[active], offset[active], value[active] = g, hs, b, v
        # Move by one pixel along an axis whose offset exceeds 0.6, staying inside.
        mx = ((b[:, 0] > _REFINE_MOVE) & (xa < wa - 2)).astype(np.int64) - (
            (b[:, 0] < -_REFINE_MOVE) & (xa > 1)
        )
        my = ((b[:, 1] > _REFINE_MOVE) & (ya < ha - 2)).astype(np.int64) - (
            (b[:, 1] < -_REFINE_MOVE) & (ya > 1)
        )
        moving = (mx != 0) | (my != 0)
        if step < _MAX_REFINE_STEPS - 1:  # VLFeat's last move is never evaluated
            x[active[moving]] += mx[moving]
            y[active[moving]] += my[moving]
        active = active[moving]
        if len(active) == 0:
            break


def _refine(
    flat: np.ndarray,
    dogs: list[np.ndarray],
    found: list[tuple[np.ndarray, ...]],
    params: SiftParams,
    compiled: bool = False,
) -> tuple[np.ndarray, ...]:
    """Quadratic refinement and the peak / edge tests of ``vl_sift_detect``, all octaves at once.

    Parameters
    ----------
    flat : (P,) ndarray of float32
        The DoG of every octave, concatenated.
    dogs : list of (S + 2, h_o, w_o) ndarray of float32
        The DoG of each octave: consecutive views of ``flat``, from its start.
    found : list of (level, y, x) int arrays
        :func:`_extrema` of each octave.
    compiled : bool
        Fit and move with :func:`._kernel.refine` instead of the numpy code (the same bits).

    Returns
    -------
    octave, level, x, y, s : (K,) ndarrays
        Octave position in ``dogs``, integer DoG level the keypoint was found at, and the
        refined position ``(x, y)`` (octave pixels) and level ``s`` (fractional, VLFeat's
        ``s`` index: DoG level - 1) of every keypoint that passes.
    """
    levels = params.levels_per_octave
    starts = np.cumsum([0] + [d.size for d in dogs[:-1]])
    oct_id = np.concatenate([np.full(len(f[0]), i) for i, f in enumerate(found)]).astype(np.int64)
    lvl = np.concatenate([f[0] for f in found])
    y = np.concatenate([f[1] for f in found])
    x = np.concatenate([f[2] for f in found])
    h = np.array([d.shape[1] for d in dogs], dtype=np.int64)[oct_id]
    w = np.array([d.shape[2] for d in dogs], dtype=np.int64)[oct_id]
    base = starts[oct_id] + lvl * h * w  # offset of each keypoint's DoG level
    n = len(x)
    grad = np.zeros((n, 3))
    hess = np.zeros((n, 3, 3))
    offset = np.zeros((n, 3))
    value = np.zeros(n)
    if compiled:
        _kernel.refine(flat, base, h, w, x, y, grad, hess, offset, value)
    else:
        _refine_numpy(flat, base, h, w, x, y, grad, hess, offset, value)

    peak = value + 0.5 * np.einsum("ki,ki->k", grad, offset)
    dxx, dyy, dxy = hess[:, 0, 0], hess[:, 1, 1], hess[:, 0, 1]
    det = dxx * dyy - dxy * dxy
    trace2 = (dxx + dyy) ** 2
    te = params.edge_threshold
    # score = trace^2 / det must lie in [0, (te + 1)^2 / te); det = 0 gives inf / nan: rejected.
    with np.errstate(divide="ignore", invalid="ignore"):
        score = trace2 / det
    edge_ok = (score >= 0) & (score < (te + 1) ** 2 / te)
    xn, yn = x + offset[:, 0], y + offset[:, 1]
    sn = (lvl - 1) + offset[:, 2]
    good = (
        (np.abs(peak) > params.peak_threshold)
        & edge_ok
        & (np.abs(offset) < _REFINE_MAX_OFFSET).all(axis=1)
        & (xn >= 0)
        & (xn <= w - 1)
        & (yn >= 0)
        & (yn <= h - 1)
        & (sn >= -1)
        & (sn <= levels + 1)
    )
    return oct_id[good], lvl[good], xn[good], yn[good], sn[good]


def _fast_atan2_2pi(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """VLFeat's ``vl_fast_atan2_f`` taken modulo 2 pi, in float32.

    VLFeat approximates ``atan2`` by a cubic in ``r = (|x| - |y|) / (|x| + |y|)`` (with
    ``|y|`` raised by float32's epsilon) around pi/4 (x >= 0) or 3 pi/4 (x < 0); the
    gradient code then wraps the angle into [0, 2 pi).
    """
    ay = np.abs(y)
    ay += _FLOAT_EPS
    ax = np.abs(x)
    r = ax - ay
    r /= ax + ay  # the denominator is > 0: ay > 0
    angle = r * r
    angle *= _ATAN_C3
    angle -= _ATAN_C1
    angle *= r
    angle += np.float32(np.pi / 4)  # the x >= 0 branch, in [0, pi/2]
    np.subtract(np.float32(np.pi), angle, out=angle, where=x < 0)  # pi/4 - p + pi/2
    np.subtract(np.float32(2 * np.pi), angle, out=angle, where=y < 0)  # -angle + 2 pi
    return angle


@functools.cache
def _expn_table() -> np.ndarray:
    """exp(-x) at x = 0, 25/256, ..., 25: the table of VLFeat's ``fast_expn``."""
    return np.exp(-np.arange(_EXPN_STEPS + 1) * (_EXPN_MAX / _EXPN_STEPS))


def _gradient_polar_at(
    flat: np.ndarray,
    pix: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    width: np.ndarray,
    height: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient magnitude and angle of GSS levels (VLFeat's ``update_gradient``) at some pixels.

    Parameters
    ----------
    flat : (P,) ndarray of float32
        GSS levels, each ``(h, w)`` row-major, concatenated.
    pix : ndarray of int64
        Flat index of each pixel asked for.
    x, y, width, height : ndarrays of int64, broadcasting to ``pix``
        Its column and row, and the size of its level.

    Returns
    -------
    magnitude, angle : ndarrays of float32, shaped as ``pix``
        Central differences ``0.5 (next - previous)`` inside, one-sided ``next - this`` /
        ``this - previous`` on the first / last row and column; magnitude 0 below VLFeat's
        fast-sqrt threshold; the angle in [0, 2 pi), from +x towards +y (y down). Each value
        is computed as on the whole level, so taking only the window pixels changes no bit.
    """
    half, one = np.float32(0.5), np.float32(1.0)  # times 1 is exact: the border's difference
    right, left = (x < width - 1).astype(np.int64), (x > 0).astype(np.int64)
    down, up = (y < height - 1) * width, (y > 0) * width
    gx = flat[pix + right] - flat[pix - left]
    gx *= np.where((right == 1) & (left == 1), half, one)
    gy = flat[pix + down] - flat[pix - up]
    gy *= np.where((down > 0) & (up > 0), half, one)
    mag2 = gx * gx + gy * gy
    mag = np.sqrt(mag2)
    mag[mag2 < _ZERO_GRADIENT2] = 0.0
    return mag, _fast_atan2_2pi(gy, gx)


def _orientations(
    octaves: list[_Octave],
    oct_id: np.ndarray,
    lvl: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    sigma: np.ndarray,
    compiled: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Orientations of keypoints (``vl_sift_calc_keypoint_orientations``), all at once.

    Parameters
    ----------
    octaves : list of _Octave
    oct_id, lvl : (K,) ndarray of int64
        Octave position and DoG level index (= GSS level index of VLFeat's ``is``).
    x, y, sigma : (K,) ndarray of float64
        Position and scale in the pixels of the keypoint's octave.
    compiled : bool
        Accumulate the histograms with :func:`._kernel.orientation_histograms` (finite
        levels below ``_kernel.MAX_ABS`` only) instead of the numpy code, with the same bits.

    Returns
    -------
    which : (M,) ndarray of int64
        The keypoint each orientation belongs to (a keypoint has 0 to 4 orientations).
    angle : (M,) ndarray of float64
        Orientation in radians.
    """
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    # The levels keypoints can sit on (GSS 1 .. S, VLFeat's is = 0 .. S - 1) of every octave
    # holding one, flattened into one buffer; their gradients are taken at the window pixels
    # only (:func:`_gradient_polar_at`), a fifth of the pixels of whole levels.
    levels, octave_start = [], np.zeros(len(octaves), dtype=np.int64)
    offset = 0
    for o in np.unique(oct_id).tolist():
        levels.append(octaves[o].gss[1:-2].ravel())
        octave_start[o] = offset
        offset += levels[-1].size
    level_all = np.concatenate(levels)
    h = np.array([oc.gss.shape[1] for oc in octaves], dtype=np.int64)[oct_id]
    w = np.array([oc.gss.shape[2] for oc in octaves], dtype=np.int64)[oct_id]
    start = octave_start[oct_id] + (lvl - 1) * h * w  # offset of each keypoint's level

    sigma_w = _ORI_WINDOW * sigma
    radius = np.maximum(np.floor(3.0 * sigma_w), 1).astype(np.int64)
    xi, yi = (x + 0.5).astype(np.int64), (y + 0.5).astype(np.int64)
    # Offsets of pixel (xi, yi) from the sub-pixel centre, and 1 / (2 sigma_w^2) in the
    # units of VLFeat's exp table.
    fx, fy = (xi - x).astype(np.float32), (yi - y).astype(np.float32)
    expn_scale = (_EXPN_STEPS / _EXPN_MAX / (2 * sigma_w**2)).astype(np.float32)
    table = _expn_table().astype(np.float32)
    slope = np.diff(table, append=table[-1:])
    n = len(x)
    if compiled:
        hist = np.empty((n, _ORI_BINS))  # (K, 36) float64
        _kernel.orientation_histograms(
            level_all, start, h, w, xi, yi, fx, fy, expn_scale, radius, table, slope, hist
        )
    else:
        hist = _orientation_votes_numpy(
            level_all, start, h, w, xi, yi, fx, fy, expn_scale, radius, table, slope
        )
    for _ in range(_ORI_SMOOTHING_PASSES):
        hist = (np.roll(hist, 1, axis=1) + hist + np.roll(hist, -1, axis=1)) / 3.0

    before, after = np.roll(hist, 1, axis=1), np.roll(hist, -1, axis=1)
    peak = (
        (hist > _ORI_PEAK_RATIO * hist.max(axis=1, keepdims=True))
        & (hist > before)
        & (hist > after)
    )
    peak &= np.cumsum(peak, axis=1) <= _ORI_MAX_ANGLES  # the first 4 in bin order
    which, b = np.nonzero(peak)
    h0, hm, hp = hist[which, b], before[which, b], after[which, b]
    shift = -0.5 * (hp - hm) / (hp + hm - 2 * h0)  # quadratic fit; h0 is a strict peak
    angle = 2 * np.pi * (b + shift + 0.5) / _ORI_BINS
    return which, np.mod(angle, 2 * np.pi)


def _orientation_votes_numpy(
    level_all: np.ndarray,
    start: np.ndarray,
    h: np.ndarray,
    w: np.ndarray,
    xi: np.ndarray,
    yi: np.ndarray,
    fx: np.ndarray,
    fy: np.ndarray,
    expn_scale: np.ndarray,
    radius: np.ndarray,
    table: np.ndarray,
    slope: np.ndarray,
) -> np.ndarray:
    """The orientation histograms of :func:`_orientations` before smoothing, numpy's way.

    Arguments as :func:`._kernel.orientation_histograms`; returns its ``(K, 36)`` float64
    ``hist``. One vectorised pass per window radius over ``(k, 2r + 1, 2r + 1)`` arrays.
    """
    n = len(xi)
    flat_hist = np.zeros(n * _ORI_BINS)  # (K * 36,) float64, keypoint by keypoint
    hist_t = torch.from_numpy(flat_hist)  # the same memory
    for r in np.unique(radius).tolist():  # one vectorised pass per window size
        idx = np.nonzero(radius == r)[0]
        d = np.arange(-r, r + 1)
        px = xi[idx, None, None] + d  # (k, 1, 2r+1)
        py = yi[idx, None, None] + d[:, None]  # (k, 2r+1, 1)
        ox = fx[idx, None, None] + d.astype(np.float32)
        oy = fy[idx, None, None] + d[:, None].astype(np.float32)
        r2 = ox * ox + oy * oy  # (k, 2r+1, 2r+1) squared distance to the centre
        wk, hk = w[idx, None, None], h[idx, None, None]
        # VLFeat's circular window, clipped to the image.
        valid = (r2 < np.float32(r * r + 0.6)) & (px >= 0) & (px < wk) & (py >= 0) & (py < hk)
        cx, cy = np.clip(px, 0, wk - 1), np.clip(py, 0, hk - 1)
        pix = start[idx, None, None] + cy * wk + cx
        mag, ang = _gradient_polar_at(level_all, pix, cx, cy, wk, hk)
        t = r2 * expn_scale[idx, None, None]
        np.minimum(t, np.float32(_EXPN_STEPS), out=t)
        i = t.astype(np.int32)  # t >= 0: truncation is VLFeat's floor
        t -= i
        weight = table[i] + t * slope[i]  # fast_expn(r2 / (2 sigma_w^2))
        weight *= mag
        weight *= valid
        fbin = ang * np.float32(_ORI_BINS / (2 * np.pi)) - np.float32(0.5)
        lower = np.floor(fbin)  # bilinear between the bin centres below and above
        fbin -= lower  # the fraction going to the upper bin
        # the angle lies in [0, 2 pi] (give or take VLFeat's fast atan2's 2e-6), so the lower
        # bin is -1 .. 35 and the upper one 0 .. 36: wrapped without an integer division
        lower_i = lower.astype(np.int64)
        upper_i = lower_i + 1
        lower_i += (lower_i < 0) * _ORI_BINS
        upper_i -= (upper_i >= _ORI_BINS) * _ORI_BINS
        row = (idx * _ORI_BINS)[:, None, None]
        # np.bincount's sums: in float64, in input order (lower votes, then upper ones) from
        # 0.0, as a 1-d index_add_ on the CPU adds; each keypoint is in one radius group
        for which_bin, vote in ((lower_i, weight * (1 - fbin)), (upper_i, weight * fbin)):
            hist_t.index_add_(
                0,
                torch.from_numpy((row + which_bin).ravel()),
                torch.from_numpy(vote.ravel().astype(np.float64)),
            )
    return flat_hist.reshape(n, _ORI_BINS)


# OpenCV's descriptor counts orientation bins the other way round than VLFeat's:
# VLFeat's bin t is OpenCV's bin (-t mod 8), spatial bins agree.
_OPENCV_TO_VLFEAT = (
    np.arange(DESCRIPTOR_SIZE).reshape(4, 4, 8)[:, :, (-np.arange(8)) % 8].reshape(-1)
)


def _opencv_descriptors(
    image: np.ndarray,
    frames: np.ndarray,
    octave: np.ndarray,
    layer: np.ndarray,
    params: SiftParams,
) -> np.ndarray:
    """OpenCV's SIFT descriptor at given frames, in VLFeat's layout and unit scale.

    ``layer`` is OpenCV's Gaussian layer index (``sigma = 1.6 * 2^(layer / S)``), i.e.
    VLFeat's integer level ``is`` + 1.
    """
    if len(frames) == 0:
        return np.zeros((0, DESCRIPTOR_SIZE), dtype=np.float32)
    image_u8 = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    points = [
        # size is a diameter (2 sigma); angle in degrees with the same sense as VLFeat's;
        # octave packs the octave (low byte, two's complement) and layer (second byte).
        cv2.KeyPoint(
            float(fx),
            float(fy),
            float(2 * fs),
            float(np.degrees(fa)),
            0.0,
            (int(o) & 0xFF) | (int(s) << 8),
        )
        for (fx, fy, fs, fa), o, s in zip(frames.tolist(), octave.tolist(), layer.tolist())
    ]
    extractor = cv2.SIFT_create(  # type: ignore[attr-defined]  # absent from OpenCV 5's stubs
        nfeatures=0,
        nOctaveLayers=params.levels_per_octave,
        contrastThreshold=0.0,
        edgeThreshold=params.edge_threshold,
        sigma=_SIGMA_BASE,
        enable_precise_upscale=True,  # octave -1: pixel x doubled to 2x, as VLFeat
    )
    kept, descriptors = extractor.compute(image_u8, points)
    if descriptors is None or len(kept) != len(points):
        raise ExtractionError(
            f"sift: OpenCV returned {0 if descriptors is None else len(kept)} descriptors for "
            f"{len(points)} keypoints; use backend='vlfeat' for this image"
        )
    out = descriptors[:, _OPENCV_TO_VLFEAT].astype(np.float32)
    return out / np.float32(DESCRIPTOR_SCALE)


def keypoints_opencv(image: np.ndarray, params: SiftParams) -> tuple[np.ndarray, np.ndarray]:
    """VLFeat's detector re-implemented, then OpenCV's descriptor (module docstring)."""
    return keypoints_opencv_batch(image[None], params)[0]


def keypoints_opencv_batch(
    images: np.ndarray, params: SiftParams
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`keypoints_opencv` of each image of a batch, bit for bit.

    Parameters
    ----------
    images : (N, H, W) ndarray of float32
        Grey images in [0, 1].
    params : SiftParams

    Returns
    -------
    list of (frames, descriptors)
        Per image, as :func:`keypoints_opencv`.

    Notes
    -----
    The scale space, the DoG (into one buffer for the batch) and its extrema are computed
    image by image (while they are in cache); the refinement and the orientations, which are
    per keypoint, run once on the keypoints of all the images (for the numpy code, many
    small calls: a quarter of the time of a call per image); the descriptor is OpenCV's, one
    call per image. Every value is computed as for one image alone: keypoints of other
    images change no bit, and each image's keypoints keep their order. The extrema, the
    refinement and the orientation histograms run as numba kernels (:mod:`._kernel`) where
    :func:`pipeline.features.base.kernel_backend` says ``"numba"`` and every value of the
    batch is finite and at most ``_kernel.MAX_ABS`` in magnitude; elsewhere as numpy code,
    with the same bits (``tests/test_sift_backends.py``).
    """
    levels = params.levels_per_octave
    empty = (np.zeros((0, 4), dtype=np.float32), np.zeros((0, DESCRIPTOR_SIZE), np.float32))
    if len(images) == 0:
        return []
    # The compiled kernels where numba is installed, on images where they give the numpy
    # path's bits (:mod:`._kernel`: finite values, none above MAX_ABS; NaN fails the test).
    compiled = (
        kernel_backend() == "numba"
        and images.size > 0
        and bool(np.abs(images).max() <= _kernel.MAX_ABS)
    )
    octaves: list[_Octave] = []
    dogs, found, owner = [], [], []
    first = _scale_space(images[0], params)
    # The DoG of every octave of every image, in one buffer (the images have one shape).
    flat = np.empty(
        len(images) * sum((len(oc.gss) - 1) * oc.gss[0].size for oc in first), np.float32
    )
    used = 0
    for i, image in enumerate(images):
        for octave in first if i == 0 else _scale_space(image, params):
            gss = octave.gss
            dog = flat[used : used + (len(gss) - 1) * gss[0].size].reshape(
                len(gss) - 1, *gss.shape[1:]
            )
            np.subtract(gss[1:], gss[:-1], out=dog)  # (S + 2, h, w): levels s = -1 .. S
            used += dog.size
            octaves.append(octave)
            dogs.append(dog)
            found.append(_extrema(dog, params.peak_threshold, compiled))
            owner.append(i)
    if sum(len(f[0]) for f in found) == 0:
        return [empty for _ in images]
    oct_id, lvl, x, y, s = _refine(flat, dogs, found, params, compiled)
    sigma = _SIGMA_BASE * 2.0 ** ((s + 1) / levels)  # sigma0 2^(s/S), octave pixels
    which, angle = _orientations(octaves, oct_id, lvl, x, y, sigma, compiled)
    index = np.array([oc.index for oc in octaves], dtype=np.int64)[oct_id[which]]
    scale = 2.0 ** index.astype(np.float64)
    frames = np.stack(
        [x[which] * scale, y[which] * scale, sigma[which] * scale, angle], axis=1
    ).astype(np.float32)
    image_of = np.array(owner, dtype=np.int64)[oct_id[which]]  # ascending: images in order
    bounds = np.searchsorted(image_of, np.arange(len(images) + 1))
    layer = lvl[which]
    out = []
    for i, image in enumerate(images):
        lo, hi = bounds[i], bounds[i + 1]
        if lo == hi:
            out.append(empty)
            continue
        descriptors = _opencv_descriptors(image, frames[lo:hi], index[lo:hi], layer[lo:hi], params)
        out.append((frames[lo:hi], descriptors))
    return out
