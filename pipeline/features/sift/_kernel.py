"""Compiled SIFT kernels (numba), bit-identical to the numpy path of :mod:`.detector`.

:func:`orientation_histograms` is the histogram accumulation of ``detector._orientations``
keypoint by keypoint, window pixel by window pixel, where the numpy path builds arrays of
``(keypoints, 2r + 1, 2r + 1)`` per window radius. Every float32 operation is the numpy
path's, in the numpy path's order, and the float64 sums are the ones ``index_add_`` makes, so
the bytes are equal (``tests/test_sift_backends.py``):

- numpy 2 (NEP 50) computes a float32 array with a Python float in float32: ``mag2 < 1e-8``
  compares with ``float32(1e-8)``, ``1 - fbin`` subtracts in float32. Here every constant is
  a float32, as numba would otherwise widen ``float32 op float`` to float64. The one float64
  step of the numpy path, ``t -= i`` (float32 minus int32 goes through float64), is written
  so; it is exact either way.
- The histogram of a keypoint starts at 0.0 and receives, in float64, all its "lower" votes in
  row-major window order, then all its "upper" votes in the same order: what the two
  ``index_add_`` calls of its radius group add (a 1-d ``index_add_`` on the CPU adds in index
  order; each keypoint is in one group).
- Pixels outside the circular window or the image vote ``weight * 0`` in the numpy path; here
  they are skipped. Where the gradients are finite, that vote is ``+0`` or ``-0``, and a sum
  that starts at ``+0.0`` never becomes ``-0.0`` (``x + -x`` is ``+0`` when rounding to nearest),
  so adding it changes no bit. ``detector.keypoints_opencv_batch`` runs the kernels only on
  images whose values are finite and below :data:`MAX_ABS` in magnitude, where every
  gradient, its squared magnitude and the weights are finite.

:func:`extrema` is the 3x3x3 test of ``detector._extrema``: cv2's dilate/erode, the loose
test and the strict one together say that a pixel is kept where its DoG value is above all 26
neighbours (and ``>= 0.8 peak_threshold``), or below all 26 (and ``<= -0.8 peak_threshold``);
with finite values these float32 comparisons are the same, so the same pixels are found, in
``np.nonzero``'s order (level, row, column).

:func:`refine` is the fitting loop of ``detector._refine`` (``_refine_numpy``) one keypoint at
a time: the same float64 finite differences, ``detector._solve3``'s elimination step by step
and the same moves; the peak and edge tests stay in numpy (``np.einsum``'s sum may use SIMD
lanes in an order a scalar loop would not copy).

The functions are compiled with ``nogil=True`` (the threads of ``extract()`` run them in
parallel) and ``cache=True`` (:func:`pipeline.features.base.compiled`); nothing in them
depends on thread scheduling. Without numba they are plain Python and never called
(:func:`pipeline.features.base.kernel_backend`).
"""

from __future__ import annotations

import numpy as np

from pipeline.features.base import compiled

__all__ = ["MAX_ABS", "extrema", "orientation_histograms", "refine"]

#: The kernels run on images whose values lie in [-MAX_ABS, MAX_ABS]: their smoothed levels
#: do too, a central difference is at most 2 MAX_ABS and the squared gradient magnitude at
#: most 8 MAX_ABS^2 = 8e36, below float32's 3.4e38, so no intermediate overflows.
MAX_ABS = 1e18

_U = np.uint64  # unsigned indices: numba wraps negative signed ones, at a cost per access

# detector._ORI_BINS and the float32 constants of detector._orientations /
# _gradient_polar_at / _fast_atan2_2pi (not imported: detector imports this module).
_BINS = 36
_ZERO_GRADIENT2 = np.float32(1e-8)
_EPS = np.float32(np.finfo(np.float32).eps)
_ATAN_C1 = np.float32(0.9675)
_ATAN_C3 = np.float32(0.1821)
_PI_4 = np.float32(np.pi / 4)
_PI = np.float32(np.pi)
_TWO_PI = np.float32(2 * np.pi)
_BIN_SCALE = np.float32(_BINS / (2 * np.pi))
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_EXPN_STEPS = np.float32(256)  # detector._EXPN_STEPS


@compiled
def orientation_histograms(
    levels: np.ndarray,
    start: np.ndarray,
    height: np.ndarray,
    width: np.ndarray,
    xi: np.ndarray,
    yi: np.ndarray,
    fx: np.ndarray,
    fy: np.ndarray,
    expn_scale: np.ndarray,
    radius: np.ndarray,
    table: np.ndarray,
    slope: np.ndarray,
    hist: np.ndarray,
) -> None:
    """The 36-bin orientation histograms of keypoints (``detector._orientations``' votes).

    Parameters
    ----------
    levels : (P,) ndarray of float32
        GSS levels, each ``(h, w)`` row-major, concatenated.
    start, height, width : (K,) ndarray of int64
        Offset in ``levels`` of each keypoint's level, and its size.
    xi, yi : (K,) ndarray of int64
        The pixel nearest each keypoint.
    fx, fy : (K,) ndarray of float32
        ``xi - x``, ``yi - y``: that pixel's offset from the sub-pixel centre.
    expn_scale : (K,) ndarray of float32
        ``1 / (2 sigma_w^2)`` in units of the exp table's steps.
    radius : (K,) ndarray of int64
        The window's radius, >= 1.
    table, slope : (257,) ndarray of float32
        VLFeat's ``fast_expn`` table and the difference to the next entry (0 after the last).
    hist : (K, 36) ndarray of float64
        Written: the histograms, before smoothing.

    Raises
    ------
    ValueError
        A bin outside 0 .. 35: a non-finite gradient (the caller checks the image first).
    """
    n = len(xi)
    r_max = 1
    for k in range(n):
        r_max = max(r_max, radius[k])
    side = 2 * r_max + 1
    upper_bin = np.empty(side * side, dtype=np.int64)
    upper_vote = np.empty(side * side, dtype=np.float64)
    for k in range(n):
        r, base, h, w = radius[k], start[k], height[k], width[k]
        inside = np.float32(r * r + 0.6)  # the circle, r^2 + 0.6 rounded to float32
        row = hist[k]
        row[:] = 0.0
        count = 0
        for dy in range(-r, r + 1):
            py = yi[k] + dy
            if py < 0 or py >= h:
                continue
            oy = fy[k] + np.float32(dy)
            down = w if py < h - 1 else 0
            up = w if py > 0 else 0
            for dx in range(-r, r + 1):
                px = xi[k] + dx
                if px < 0 or px >= w:
                    continue
                ox = fx[k] + np.float32(dx)
                r2 = ox * ox + oy * oy
                if not r2 < inside:
                    continue
                # _gradient_polar_at: central differences inside, one-sided on the border
                p = base + py * w + px
                right = 1 if px < w - 1 else 0
                left = 1 if px > 0 else 0
                gx = levels[_U(p + right)] - levels[_U(p - left)]
                if right == 1 and left == 1:
                    gx = gx * _HALF
                gy = levels[_U(p + down)] - levels[_U(p - up)]
                if down > 0 and up > 0:
                    gy = gy * _HALF
                mag2 = gx * gx + gy * gy
                mag = np.sqrt(mag2)
                if mag2 < _ZERO_GRADIENT2:
                    mag = np.float32(0.0)
                # _fast_atan2_2pi
                ay = np.abs(gy) + _EPS
                ax = np.abs(gx)
                q = (ax - ay) / (ax + ay)
                angle = q * q
                angle = angle * _ATAN_C3
                angle = angle - _ATAN_C1
                angle = angle * q
                angle = angle + _PI_4
                if gx < 0:
                    angle = _PI - angle
                if gy < 0:
                    angle = _TWO_PI - angle
                # fast_expn(r2 / (2 sigma_w^2)) times the magnitude
                t = min(r2 * expn_scale[k], _EXPN_STEPS)
                i = np.int32(t)  # t >= 0: truncation is VLFeat's floor
                t = np.float32(np.float64(t) - np.float64(i))  # numpy: float32 - int32
                weight = table[i] + t * slope[i]
                weight = weight * mag
                # bilinear between the bin centres below and above
                fbin = angle * _BIN_SCALE - _HALF
                lower = np.floor(fbin)
                fbin = fbin - lower
                lo = np.int64(lower)
                hi = lo + 1
                if lo < 0:
                    lo += _BINS
                if hi >= _BINS:
                    hi -= _BINS
                if lo < 0 or lo >= _BINS or hi < 0:
                    raise ValueError("sift: orientation bin out of range (non-finite gradient)")
                row[lo] += np.float64(weight * (_ONE - fbin))
                upper_bin[count] = hi
                upper_vote[count] = np.float64(weight * fbin)
                count += 1
        for j in range(count):  # the upper votes, after all the lower ones
            row[upper_bin[j]] += upper_vote[j]


@compiled
def extrema(dog: np.ndarray, threshold: np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strict 3x3x3 extrema of a DoG octave (``detector._extrema``'s result).

    Parameters
    ----------
    dog : (S + 2, h, w) ndarray of float32, C-contiguous, finite
    threshold : float32
        ``0.8 peak_threshold`` rounded to float32.

    Returns
    -------
    level, y, x : (K,) ndarrays of int64
        DoG level (1 .. S) and interior pixel of every extremum, in level, row, column order.
    """
    n_levels, h, w = dog.shape
    capacity = 256
    out = np.empty((3, capacity), dtype=np.int64)
    count = 0
    flags = np.empty(max(w, 1), dtype=np.uint8)
    for s in range(1, n_levels - 1):
        below, level, above = dog[s - 1], dog[s], dog[s + 1]
        for y in range(1, h - 1):
            a, b, c = level[y - 1], level[y], level[y + 1]
            # the 8 same-level neighbours, branch-free (vectorised by LLVM)
            for x in range(_U(1), _U(w - 1)):
                v = b[x]
                left, right = x - _U(1), x + _U(1)
                is_max = (
                    (v > a[left])
                    & (v > a[x])
                    & (v > a[right])
                    & (v > b[left])
                    & (v > b[right])
                    & (v > c[left])
                    & (v > c[x])
                    & (v > c[right])
                    & (v >= threshold)
                )
                is_min = (
                    (v < a[left])
                    & (v < a[x])
                    & (v < a[right])
                    & (v < b[left])
                    & (v < b[right])
                    & (v < c[left])
                    & (v < c[x])
                    & (v < c[right])
                    & (v <= -threshold)
                )
                flags[x] = is_max * 1 + is_min * 2
            for x in range(1, w - 1):
                f = flags[x]
                if f == 0:
                    continue
                v = level[y, x]
                keep = True
                for other in (below, above):
                    for yy in range(y - 1, y + 2):
                        for xx in range(x - 1, x + 2):
                            n = other[yy, xx]
                            if (f == 1 and not v > n) or (f == 2 and not v < n):
                                keep = False
                if keep:
                    if count == capacity:
                        capacity *= 2
                        grown = np.empty((3, capacity), dtype=np.int64)
                        grown[:, :count] = out[:, :count]
                        out = grown
                    out[0, count], out[1, count], out[2, count] = s, y, x
                    count += 1
    return out[0, :count].copy(), out[1, :count].copy(), out[2, :count].copy()


_MAX_REFINE_STEPS = 5  # detector._MAX_REFINE_STEPS
_REFINE_MOVE = 0.6  # detector._REFINE_MOVE
_SINGULAR_PIVOT = 1e-10  # detector._SINGULAR_PIVOT


@compiled
def refine(
    flat: np.ndarray,
    base: np.ndarray,
    height: np.ndarray,
    width: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    grad: np.ndarray,
    hess: np.ndarray,
    offset: np.ndarray,
    value: np.ndarray,
) -> None:
    """The quadratic fits and moves of ``detector._refine``, keypoint by keypoint.

    Parameters
    ----------
    flat : (P,) ndarray of float32
        The DoG octaves, each ``(S + 2, h, w)`` row-major, concatenated.
    base : (K,) ndarray of int64
        Offset in ``flat`` of each keypoint's DoG level.
    height, width : (K,) ndarray of int64
        The size of its octave.
    x, y : (K,) ndarray of int64
        Its interior pixel; moved in place as the numpy path moves it.
    grad, hess, offset : (K, 3), (K, 3, 3), (K, 3) ndarrays of float64
        Written: gradient, Hessian (in x, y, s) and the fit's offset at the last position.
    value : (K,) ndarray of float64
        Written: the DoG value there.

    Notes
    -----
    The same float64 operations as the numpy path, in its order: the finite differences as
    written there, then ``detector._solve3``'s elimination (partial pivoting with the first
    of equal pivots, as ``np.argmax``; rows divided by the pivot; an offset of 0 below the
    1e-10 pivot), then the moves. The peak and edge tests stay in numpy.
    """
    a = np.empty((3, 3))
    b = np.empty(3)
    row = np.empty(3)
    for k in range(len(x)):
        xk, yk, w = x[k], y[k], width[k]
        ss = height[k] * w
        for step in range(_MAX_REFINE_STEPS):
            c = base[k] + yk * w + xk
            v = np.float64(flat[_U(c)])
            xp, xm = np.float64(flat[_U(c + 1)]), np.float64(flat[_U(c - 1)])
            yp, ym = np.float64(flat[_U(c + w)]), np.float64(flat[_U(c - w)])
            sp, sm = np.float64(flat[_U(c + ss)]), np.float64(flat[_U(c - ss)])
            g0, g1, g2 = 0.5 * (xp - xm), 0.5 * (yp - ym), 0.5 * (sp - sm)
            dxx, dyy, dss = xp + xm - 2 * v, yp + ym - 2 * v, sp + sm - 2 * v
            dxy = 0.25 * (
                np.float64(flat[_U(c + 1 + w)])
                + np.float64(flat[_U(c - 1 - w)])
                - np.float64(flat[_U(c - 1 + w)])
                - np.float64(flat[_U(c + 1 - w)])
            )
            dxs = 0.25 * (
                np.float64(flat[_U(c + 1 + ss)])
                + np.float64(flat[_U(c - 1 - ss)])
                - np.float64(flat[_U(c - 1 + ss)])
                - np.float64(flat[_U(c + 1 - ss)])
            )
            dys = 0.25 * (
                np.float64(flat[_U(c + w + ss)])
                + np.float64(flat[_U(c - w - ss)])
                - np.float64(flat[_U(c - w + ss)])
                - np.float64(flat[_U(c + w - ss)])
            )
            h = hess[k]
            h[0, 0], h[0, 1], h[0, 2] = dxx, dxy, dxs
            h[1, 0], h[1, 1], h[1, 2] = dxy, dyy, dys
            h[2, 0], h[2, 1], h[2, 2] = dxs, dys, dss
            grad[k, 0], grad[k, 1], grad[k, 2] = g0, g1, g2
            value[k] = v
            # detector._solve3 of (h, -g)
            a[:, :] = h
            b[0], b[1], b[2] = -g0, -g1, -g2
            ok = True
            for j in range(3):
                piv, best = j, np.abs(a[j, j])
                for i in range(j + 1, 3):
                    if np.abs(a[i, j]) > best:
                        piv, best = i, np.abs(a[i, j])
                pivot = a[piv, j]
                if not np.abs(pivot) >= _SINGULAR_PIVOT:
                    ok = False
                    break
                row[:] = a[piv]
                a[piv] = a[j]
                for col in range(3):
                    a[j, col] = row[col] / pivot
                b_p = b[piv]
                b[piv] = b[j]
                b[j] = b_p / pivot
                for i in range(j + 1, 3):
                    factor = a[i, j]
                    for col in range(3):
                        a[i, col] -= factor * a[j, col]
                    b[i] -= factor * b[j]
            if ok:
                for i in (2, 1):
                    for r in range(i):
                        b[r] -= b[i] * a[r, i]
            else:
                b[:] = 0.0
            offset[k, 0], offset[k, 1], offset[k, 2] = b[0], b[1], b[2]
            # move by one pixel along an axis whose offset exceeds 0.6, staying inside
            mx = (1 if b[0] > _REFINE_MOVE and xk < w - 2 else 0) - (
                1 if b[0] < -_REFINE_MOVE and xk > 1 else 0
            )
            my = (1 if b[1] > _REFINE_MOVE and yk < height[k] - 2 else 0) - (
                1 if b[1] < -_REFINE_MOVE and yk > 1 else 0
            )
            if mx == 0 and my == 0:
                break
            if step < _MAX_REFINE_STEPS - 1:  # VLFeat's last move is never evaluated
                xk += mx
                yk += my
        x[k], y[k] = xk, yk
