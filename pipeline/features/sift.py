"""SIFT keypoints laid out on a grid of cells (docs/method.md §2).

The paper runs VLFeat's SIFT detector with its default settings (3 levels per octave, first
octave 0, peak threshold 0, edge threshold 10) and turns the keypoints into a dense array: the
image is split into ``cell_size`` x ``cell_size`` pixel cells, every keypoint goes into the
cell that holds its centre, and a cell's vector is the keypoint's 128-d descriptor followed by
5 values. For a 256 x 256 image that is a ``(133, 64, 64)`` array.

Two backends compute the keypoints:

``"opencv"`` (default, needs only pip packages)
    Our own re-implementation of VLFeat's detector — the Gaussian scale space with VLFeat's
    kernels, the 3x3x3 DoG extrema, the quadratic refinement and its tests, the 36-bin
    orientation histograms — written with NumPy and OpenCV filters, followed by OpenCV's SIFT
    descriptor (``cv2.SIFT.compute``) evaluated on those frames and converted to VLFeat's bin
    layout. Measured against VLFeat by ``benchmarks/sift_agreement.py``.
``"vlfeat"``
    VLFeat itself through ``cyvlfeat`` (the parity reference; needs Debian's ``libvlfeat-dev``
    and ``pip install --no-build-isolation cyvlfeat``).

Conventions shared by both backends
-----------------------------------
Frames ``(x, y, sigma, angle)``: ``x`` is the column and ``y`` the row in pixel units, pixel
``(i, j)`` having its centre at ``x = j, y = i`` (VLFeat's convention; cyvlfeat itself returns
``(y, x, ...)``); ``sigma`` is VLFeat's keypoint scale; ``angle`` is in radians in
``[0, 2*pi)``, measured from the +x axis towards +y (y pointing down, as VLFeat).
Descriptors are 128 float32 values laid out as VLFeat's ``(y bin, x bin, orientation bin)``
with the orientation fastest, on VLFeat's scale divided by 512. VLFeat's float output is
``min(512 v, 255)`` with ``v`` the L2-normalised histogram, clipped at 0.2 and normalised
again; ours is therefore ``min(v, 255/512)``: a unit vector, except for the rare descriptor
with a component above 0.498 (1 of the 2452 keypoints of the benchmark photographs). The
uint8 descriptors of MATLAB's ``vl_sift`` are ``floor(512 * ours)``.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pipeline.errors import ConfigError, ExtractionError
from pipeline.features.base import Extractor, to_grey

__all__ = [
    "BACKENDS",
    "EXTRACTOR",
    "SIFT_CHANNELS",
    "SiftParams",
    "grid_from_keypoints",
    "keypoints",
    "output_shape",
    "sift",
]

#: The backends :func:`keypoints` understands.
BACKENDS = ("opencv", "vlfeat")

_DESCRIPTOR_SIZE = 128  # 4 x 4 spatial bins x 8 orientation bins (Lowe 2004, §6.1)
_EXTRA = 5  # x offset, y offset, log2 scale, orientation, presence
#: Channels of a grid cell: the descriptor, then the 5 extra values of :func:`grid_from_keypoints`.
SIFT_CHANNELS = _DESCRIPTOR_SIZE + _EXTRA
_CH_X, _CH_Y, _CH_SCALE, _CH_ANGLE, _CH_PRESENT = range(_DESCRIPTOR_SIZE, SIFT_CHANNELS)

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
_OPENCV_DESCRIPTOR_SCALE = 512.0  # cv2.SIFT stores round(512 d) clamped to 255, like VLFeat


@dataclass(frozen=True)
class SiftParams:
    """Parameters of the SIFT grid; the defaults are the paper's (VLFeat's ``vl_sift``).

    Attributes
    ----------
    cell_size : int
        Side of a grid cell in pixels; 4 makes a 256 x 256 image a 64 x 64 grid.
    backend : str
        ``"opencv"`` (our VLFeat-like detector + OpenCV descriptor, pip only) or
        ``"vlfeat"`` (cyvlfeat).
    peak_threshold : float
        VLFeat's ``PeakThresh``: minimum absolute DoG value of a keypoint, for images in
        [0, 1]. 0 keeps every extremum.
    edge_threshold : float
        VLFeat's ``EdgeThresh`` r: keypoints whose DoG Hessian has
        ``trace^2 / det >= (r + 1)^2 / r`` lie on edges and are dropped. At least 1.
    levels_per_octave : int
        VLFeat's ``Levels`` S: DoG levels searched per octave.
    first_octave : int
        VLFeat's ``FirstOctave``: -1 doubles the image first, 0 starts at full resolution,
        k > 0 starts at 1/2^k.
    """

    cell_size: int = 4
    backend: str = "opencv"
    peak_threshold: float = 0.0
    edge_threshold: float = 10.0
    levels_per_octave: int = 3
    first_octave: int = 0

    def __post_init__(self) -> None:
        _parse_int("cell_size", self.cell_size, minimum=1)
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"sift: backend must be one of {', '.join(map(repr, BACKENDS))}, "
                f"got {self.backend!r}"
            )
        _parse_float("peak_threshold", self.peak_threshold, minimum=0.0)
        _parse_float("edge_threshold", self.edge_threshold, minimum=1.0)
        _parse_int("levels_per_octave", self.levels_per_octave, minimum=1)
        # OpenCV's descriptor pyramid can start one octave below the image at most.
        _parse_int("first_octave", self.first_octave, minimum=-1)


def _parse_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"sift: {name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"sift: {name} must be an integer >= {minimum}, got {value}")


def _parse_float(name: str, value: Any, *, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"sift: {name} must be a finite number >= {minimum}, got {value!r}")
    if not math.isfinite(float(value)) or value < minimum:
        raise ConfigError(f"sift: {name} must be a finite number >= {minimum}, got {value}")


def output_shape(params: SiftParams, height: int, width: int) -> tuple[int, int, int]:
    """Per-image shape of :func:`sift`'s output: ``(133, height // cell, width // cell)``."""
    return (SIFT_CHANNELS, height // params.cell_size, width // params.cell_size)


# ---------------------------------------------------------------------------------------------
# The grid


def grid_from_keypoints(
    frames: np.ndarray,
    descriptors: np.ndarray,
    height: int,
    width: int,
    cell_size: int,
) -> np.ndarray:
    """Lay keypoints out on a grid of ``cell_size`` x ``cell_size`` pixel cells.

    Parameters
    ----------
    frames : (K, 4) ndarray
        ``(x, y, sigma, angle)`` per keypoint, in the conventions of the module docstring.
    descriptors : (K, 128) ndarray
        One descriptor per frame.
    height, width : int
        Size of the image the frames come from, in pixels.
    cell_size : int
        Side of a cell in pixels.

    Returns
    -------
    (133, height // cell_size, width // cell_size) ndarray of float32
        For a cell holding a keypoint: channels 0-127 the descriptor, then

        * 128: x offset of the centre inside the cell, in cell units, in [0, 1);
        * 129: y offset likewise;
        * 130: ``log2(sigma)``, the keypoint scale in octaves (sigma in pixels);
        * 131: orientation as a fraction of a full turn, ``angle / (2 pi)`` in [0, 1);
        * 132: presence flag, 1.

        All 133 channels of a cell holding no keypoint are 0.

    Notes
    -----
    Pixel ``j`` covers ``[j - 0.5, j + 0.5)``, so cell ``c`` covers
    ``[c * cell - 0.5, (c + 1) * cell - 0.5)`` and a keypoint at ``x`` goes to cell
    ``floor((x + 0.5) / cell)``. Keypoints outside the grid (in the right or bottom strip
    that does not fill a whole cell when the size is not a multiple of ``cell_size``) are
    dropped. Of several keypoints in one cell the one with the largest ``sigma`` is kept;
    ties (one keypoint with several orientations) go to the first in the given order,
    which for VLFeat's order is the orientation of the lowest histogram bin.
    """
    frames = np.asarray(frames, dtype=np.float64)
    descriptors = np.asarray(descriptors, dtype=np.float32)
    if frames.ndim != 2 or frames.shape[1] != 4:
        raise ExtractionError(
            f"frames must have shape (K, 4) (x, y, sigma, angle), got {frames.shape}"
        )
    if descriptors.shape != (len(frames), _DESCRIPTOR_SIZE):
        raise ExtractionError(
            f"descriptors must have shape ({len(frames)}, {_DESCRIPTOR_SIZE}) to match the "
            f"frames, got {descriptors.shape}"
        )
    _parse_int("cell_size", cell_size, minimum=1)
    rows, cols = height // cell_size, width // cell_size
    grid = np.zeros((SIFT_CHANNELS, rows, cols), dtype=np.float32)
    if len(frames) == 0 or rows == 0 or cols == 0:
        return grid

    u = (frames[:, 0] + 0.5) / cell_size  # x in cell units, cell edges at integers
    v = (frames[:, 1] + 0.5) / cell_size
    cx, cy = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    inside = (cx >= 0) & (cx < cols) & (cy >= 0) & (cy < rows)
    order = np.nonzero(inside)[0]
    cell = cy[order] * cols + cx[order]
    # Sort by cell, then by decreasing sigma, then by input order; keep each cell's first.
    order = order[np.lexsort((order, -frames[order, 2], cell))]
    cell = cy[order] * cols + cx[order]
    _, first = np.unique(cell, return_index=True)
    keep = order[first]
    ky, kx = cy[keep], cx[keep]

    grid[:_DESCRIPTOR_SIZE, ky, kx] = descriptors[keep].T
    grid[_CH_X, ky, kx] = u[keep] - kx
    grid[_CH_Y, ky, kx] = v[keep] - ky
    grid[_CH_SCALE, ky, kx] = np.log2(frames[keep, 2])
    grid[_CH_ANGLE, ky, kx] = np.mod(frames[keep, 3] / (2 * np.pi), 1.0)
    grid[_CH_PRESENT, ky, kx] = 1.0
    return grid


def sift(images: np.ndarray, params: SiftParams | None = None) -> np.ndarray:
    """SIFT keypoints of a batch of images, on a grid of cells (docs/method.md §2).

    Parameters
    ----------
    images : (N, H, W, 3) or (N, H, W, 1) or (N, H, W) ndarray, uint8 or floating
        RGB or grey images; uint8 in 0-255, floating in [0, 1]. Colour is turned grey with
        MATLAB's ``rgb2gray`` weights (:func:`pipeline.features.base.to_grey`).
    params : SiftParams, optional
        Defaults to the paper's settings.

    Returns
    -------
    (N, 133, H // cell_size, W // cell_size) ndarray of float32
        One :func:`grid_from_keypoints` grid per image. An image with no keypoint (a flat
        image) gives an all-zero grid.

    Notes
    -----
    The paper fixes the detector (VLFeat's defaults), the cell size and the 133 channels;
    the project chose, where the paper leaves it open:

    * the 5 extra values: x and y offset inside the cell, ``log2`` scale, orientation as a
      fraction of a turn, presence flag (:func:`grid_from_keypoints`);
    * several keypoints in one cell: the largest scale is kept;
    * keypoints outside the whole cells of a size that is not a multiple of ``cell_size``
      are dropped;
    * the descriptor scale: unit vectors (VLFeat's ``512 x`` output divided by 512).

    The default backend, ``"opencv"``, is not VLFeat but reproduces its keypoints
    (departures in :func:`keypoints`); ``backend="vlfeat"`` is the paper's pipeline.

    References
    ----------
    .. [1] A. Dosovitskiy and T. Brox, "Inverting Visual Representations with Convolutional
       Networks", CVPR 2016 — supplementary material, SIFT features.
    .. [2] D. G. Lowe, "Distinctive Image Features from Scale-Invariant Keypoints", IJCV 60(2),
       2004.
    .. [3] A. Vedaldi and B. Fulkerson, "VLFeat: An Open and Portable Library of Computer
       Vision Algorithms", 2008 — ``vl/sift.c``.
    """
    params = SiftParams() if params is None else params
    grey = to_grey(images)  # (N, H, W) float32
    n, height, width = grey.shape
    shape = output_shape(params, height, width)
    if shape[1] == 0 or shape[2] == 0:
        raise ExtractionError(
            f"sift: images of {height}x{width} pixels hold no whole {params.cell_size}x"
            f"{params.cell_size} cell; use images of at least {params.cell_size} pixels a side "
            "or a smaller cell_size"
        )
    out = np.empty((n, *shape), dtype=np.float32)
    for i in range(n):
        frames, descriptors = keypoints(grey[i], params)
        out[i] = grid_from_keypoints(frames, descriptors, height, width, params.cell_size)
    return out


def keypoints(
    image_grey: np.ndarray, params: SiftParams | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """SIFT frames and descriptors of one grey image, with the selected backend.

    Parameters
    ----------
    image_grey : (H, W) ndarray of float32
        Grey image in [0, 1].
    params : SiftParams, optional
        Defaults to the paper's settings.

    Returns
    -------
    frames : (K, 4) ndarray of float32
        ``(x, y, sigma, angle)`` per keypoint (conventions in the module docstring); a
        keypoint with several orientations appears once per orientation.
    descriptors : (K, 128) ndarray of float32
        Unit-norm SIFT descriptors in VLFeat's layout.

    Notes
    -----
    Departures of the ``"opencv"`` backend from VLFeat (the ``"vlfeat"`` backend *is*
    VLFeat):

    * The detector and orientation assignment follow ``vl/sift.c`` step by step, including
      VLFeat's fast ``atan2`` and ``exp`` approximations, but sum in another order
      (OpenCV's separable filter), so a few weak keypoints of near-flat areas move or
      appear/disappear (measured in ``benchmarks/sift_agreement.py``).
    * The descriptor is OpenCV's: computed on OpenCV's own Gaussian pyramid of the image
      quantised to uint8 (``cv2.SIFT`` takes uint8 only), centred on the keypoint's nearest
      pixel rather than its sub-pixel position, and rounded to multiples of 1/512. Its
      orientation bins run the other way round than VLFeat's and are permuted back.
    * Both backends inherit the clipping of ``512 d`` at 255 (VLFeat's output, OpenCV's
      internal uint8 scale), so a component saturates at 255/512 ~ 0.498; that needs a
      histogram with almost all its mass in 4 or fewer bins (1 of 2452 keypoints on the
      benchmark photographs).

    References
    ----------
    .. [1] D. G. Lowe, "Distinctive Image Features from Scale-Invariant Keypoints", IJCV
       60(2), 2004.
    .. [2] VLFeat ``vl/sift.c`` (``vl_sift_detect``, ``vl_sift_calc_keypoint_orientations``,
       ``vl_sift_calc_keypoint_descriptor``), version 0.9.21.
    """
    params = SiftParams() if params is None else params
    image = np.asarray(image_grey)
    if image.ndim != 2:
        raise ExtractionError(
            f"keypoints expects one grey image (H, W), got shape {image.shape}; convert colour "
            "with pipeline.features.base.to_grey and pass images one at a time"
        )
    if not np.issubdtype(image.dtype, np.floating):
        raise ExtractionError(
            f"keypoints expects a float image in [0, 1], got dtype {image.dtype}; use "
            "pipeline.features.base.as_float_images or divide uint8 by 255"
        )
    image = np.ascontiguousarray(image, dtype=np.float32)
    if params.backend == "vlfeat":
        return _keypoints_vlfeat(image, params)
    return _keypoints_opencv(image, params)


# ---------------------------------------------------------------------------------------------
# The "vlfeat" backend


def _keypoints_vlfeat(image: np.ndarray, params: SiftParams) -> tuple[np.ndarray, np.ndarray]:
    """cyvlfeat's ``sift`` with frames reordered to ``(x, y, sigma, angle)``."""
    try:
        from cyvlfeat.sift import sift as cy_sift
    except ImportError as err:
        raise ConfigError(
            "sift: backend='vlfeat' needs cyvlfeat (install Debian's libvlfeat-dev, then "
            "`pip install --no-build-isolation cyvlfeat`), or use backend='opencv'"
        ) from err
    frames, descriptors = cy_sift(
        image,
        n_levels=params.levels_per_octave,
        first_octave=params.first_octave,
        peak_thresh=params.peak_threshold,
        edge_thresh=params.edge_threshold,
        compute_descriptor=True,
        float_descriptors=True,
    )
    frames = np.asarray(frames, dtype=np.float32).reshape(-1, 4)
    out = np.empty_like(frames)
    out[:, 0], out[:, 1], out[:, 2] = frames[:, 1], frames[:, 0], frames[:, 2]  # (y, x) -> (x, y)
    out[:, 3] = np.mod(frames[:, 3], np.float32(2 * np.pi))
    descriptors = np.asarray(descriptors, dtype=np.float32).reshape(-1, _DESCRIPTOR_SIZE)
    return out, descriptors / np.float32(_OPENCV_DESCRIPTOR_SCALE)


# ---------------------------------------------------------------------------------------------
# The "opencv" backend: VLFeat's detector re-implemented, OpenCV's descriptor


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


def _extrema(dog: np.ndarray, peak_threshold: float) -> tuple[np.ndarray, ...]:
    """Strict 3x3x3 extrema of a DoG octave (``vl_sift_detect``).

    Parameters
    ----------
    dog : (S + 2, h, w) ndarray of float32
    peak_threshold : float
        VLFeat pre-filters with ``|v| >= 0.8 * peak_threshold``; the final test is in
        :func:`_refine`.

    Returns
    -------
    level, y, x : (K,) ndarrays of int64
        DoG level index (1 .. S) and interior pixel of every extremum.
    """
    _, h, w = dog.shape
    inner = (slice(None), slice(1, h - 1), slice(1, w - 1))
    # 3x3 maxima / minima of every level (centre included), interior pixels only.
    dil, ero = np.empty_like(dog), np.empty_like(dog)
    for i in range(len(dog)):
        cv2.dilate(dog[i], _SQUARE, dst=dil[i])
        cv2.erode(dog[i], _SQUARE, dst=ero[i])
    dil, ero = dil[inner], ero[inner]  # (S + 2, h - 2, w - 2)
    v = dog[1:-1, 1:-1, 1:-1]  # (S, h - 2, w - 2)
    threshold = np.float32(0.8 * peak_threshold)
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


def _refine(
    dogs: list[np.ndarray],
    found: list[tuple[np.ndarray, ...]],
    params: SiftParams,
) -> tuple[np.ndarray, ...]:
    """Quadratic refinement and the peak / edge tests of ``vl_sift_detect``, all octaves at once.

    Parameters
    ----------
    dogs : list of (S + 2, h_o, w_o) ndarray of float32
        The DoG of each octave.
    found : list of (level, y, x) int arrays
        :func:`_extrema` of each octave.

    Returns
    -------
    octave, level, x, y, s : (K,) ndarrays
        Octave position in ``dogs``, integer DoG level the keypoint was found at, and the
        refined position ``(x, y)`` (octave pixels) and level ``s`` (fractional, VLFeat's
        ``s`` index: DoG level - 1) of every keypoint that passes.
    """
    levels = params.levels_per_octave
    flat = np.concatenate([d.ravel() for d in dogs]).astype(np.float64)
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
    active = np.arange(n)
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
            return flat[c + dx + dy * wa + ds * ss]

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


def _gradient_polar(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient magnitude and angle of GSS levels (VLFeat's ``update_gradient``).

    Parameters
    ----------
    levels : (L, h, w) ndarray of float32, h, w >= 2

    Returns
    -------
    magnitude, angle : (L, h, w) ndarray of float32
        Central differences inside, one-sided differences on the border rows and columns;
        the angle in [0, 2 pi), from +x towards +y (y down).
    """
    gx = np.empty_like(levels)
    gx[:, :, 1:-1] = 0.5 * (levels[:, :, 2:] - levels[:, :, :-2])
    gx[:, :, 0] = levels[:, :, 1] - levels[:, :, 0]
    gx[:, :, -1] = levels[:, :, -1] - levels[:, :, -2]
    gy = np.empty_like(levels)
    gy[:, 1:-1] = 0.5 * (levels[:, 2:] - levels[:, :-2])
    gy[:, 0] = levels[:, 1] - levels[:, 0]
    gy[:, -1] = levels[:, -1] - levels[:, -2]
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
) -> tuple[np.ndarray, np.ndarray]:
    """Orientations of keypoints (``vl_sift_calc_keypoint_orientations``), all at once.

    Parameters
    ----------
    octaves : list of _Octave
    oct_id, lvl : (K,) ndarray of int64
        Octave position and DoG level index (= GSS level index of VLFeat's ``is``).
    x, y, sigma : (K,) ndarray of float64
        Position and scale in the pixels of the keypoint's octave.

    Returns
    -------
    which : (M,) ndarray of int64
        The keypoint each orientation belongs to (a keypoint has 0 to 4 orientations).
    angle : (M,) ndarray of float64
        Orientation in radians.
    """
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    # Gradients of the levels keypoints can sit on (GSS 1 .. S, VLFeat's is = 0 .. S - 1) of
    # every octave holding one, flattened into one buffer.
    mags, angs, octave_start = [], [], np.zeros(len(octaves), dtype=np.int64)
    offset = 0
    for o in np.unique(oct_id).tolist():
        mag, ang = _gradient_polar(octaves[o].gss[1:-2])
        mags.append(mag.ravel())
        angs.append(ang.ravel())
        octave_start[o] = offset
        offset += mag.size
    mag_all, ang_all = np.concatenate(mags), np.concatenate(angs)
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
    flat_hist = np.zeros(n * _ORI_BINS)  # (K * 36,) bincount's output layout
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
        pix = start[idx, None, None] + np.clip(py, 0, hk - 1) * wk + np.clip(px, 0, wk - 1)
        t = r2 * expn_scale[idx, None, None]
        np.minimum(t, np.float32(_EXPN_STEPS), out=t)
        i = t.astype(np.int32)  # t >= 0: truncation is VLFeat's floor
        t -= i
        weight = table[i] + t * slope[i]  # fast_expn(r2 / (2 sigma_w^2))
        weight *= mag_all[pix]
        weight *= valid
        fbin = ang_all[pix] * np.float32(_ORI_BINS / (2 * np.pi)) - np.float32(0.5)
        lower = np.floor(fbin)  # bilinear between the bin centres below and above
        fbin -= lower  # the fraction going to the upper bin
        lower_i = lower.astype(np.int64)
        row = (idx * _ORI_BINS)[:, None, None]
        bins = np.concatenate(
            [(row + lower_i % _ORI_BINS).ravel(), (row + (lower_i + 1) % _ORI_BINS).ravel()]
        )
        votes = np.concatenate([(weight * (1 - fbin)).ravel(), (weight * fbin).ravel()])
        flat_hist += np.bincount(bins, votes, minlength=flat_hist.size)
    hist = flat_hist.reshape(n, _ORI_BINS)
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


# OpenCV's descriptor counts orientation bins the other way round than VLFeat's:
# VLFeat's bin t is OpenCV's bin (-t mod 8), spatial bins agree.
_OPENCV_TO_VLFEAT = (
    np.arange(_DESCRIPTOR_SIZE).reshape(4, 4, 8)[:, :, (-np.arange(8)) % 8].reshape(-1)
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
        return np.zeros((0, _DESCRIPTOR_SIZE), dtype=np.float32)
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
    return out / np.float32(_OPENCV_DESCRIPTOR_SCALE)


def _keypoints_opencv(image: np.ndarray, params: SiftParams) -> tuple[np.ndarray, np.ndarray]:
    """VLFeat's detector re-implemented, then OpenCV's descriptor (module docstring)."""
    levels = params.levels_per_octave
    octaves = _scale_space(image, params)
    dogs = [oc.gss[1:] - oc.gss[:-1] for oc in octaves]  # (S + 2, h, w): levels s = -1 .. S
    found = [_extrema(d, params.peak_threshold) for d in dogs]
    if sum(len(f[0]) for f in found) == 0:
        return np.zeros((0, 4), dtype=np.float32), np.zeros((0, _DESCRIPTOR_SIZE), np.float32)
    oct_id, lvl, x, y, s = _refine(dogs, found, params)
    sigma = _SIGMA_BASE * 2.0 ** ((s + 1) / levels)  # sigma0 2^(s/S), octave pixels
    which, angle = _orientations(octaves, oct_id, lvl, x, y, sigma)
    index = np.array([oc.index for oc in octaves], dtype=np.int64)[oct_id[which]]
    scale = 2.0 ** index.astype(np.float64)
    frames = np.stack(
        [x[which] * scale, y[which] * scale, sigma[which] * scale, angle], axis=1
    ).astype(np.float32)
    descriptors = _opencv_descriptors(image, frames, index, lvl[which], params)
    return frames, descriptors


EXTRACTOR = Extractor(
    name="sift",
    version=1,
    params_type=SiftParams,
    compute=lambda images, p: sift(images, p),
    output_shape=output_shape,
    dims=("channel", "y", "x"),
    description=(
        "VLFeat SIFT keypoints (3 levels/octave, peak 0, edge 10) on 4x4-pixel cells: "
        "128-d descriptor + x/y offset, log2 scale, orientation, presence (133 channels)"
    ),
    codec="lz4",  # ~96% of the cells are empty: lz4 + bit shuffle packs them away
)
