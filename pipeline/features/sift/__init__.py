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
    layout. Measured against VLFeat by ``benchmarks/sift_agreement.py``. Where numba is
    installed, the DoG extrema, the refinement and the orientation histograms run as
    compiled kernels (``sift/_kernel.py``, the GIL released) that give the numpy code's
    bytes (``tests/test_sift_backends.py``); ``INVERT_KERNELS=numpy`` forces the numpy code
    (:func:`pipeline.features.base.kernel_backend`).
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

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, ExtractionError
from pipeline.features.base import Extractor, to_grey
from pipeline.features.sift.detector import (
    DESCRIPTOR_SCALE,
    DESCRIPTOR_SIZE,
    keypoints_opencv,
    keypoints_opencv_batch,
)

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

_DESCRIPTOR_SIZE = DESCRIPTOR_SIZE  # 4 x 4 spatial bins x 8 orientation bins (Lowe 2004)
_EXTRA = 5  # x offset, y offset, log2 scale, orientation, presence
#: Channels of a grid cell: the descriptor, then the 5 extra values of :func:`grid_from_keypoints`.
SIFT_CHANNELS = _DESCRIPTOR_SIZE + _EXTRA
_CH_X, _CH_Y, _CH_SCALE, _CH_ANGLE, _CH_PRESENT = range(_DESCRIPTOR_SIZE, SIFT_CHANNELS)

#: Images whose keypoints the ``"opencv"`` backend refines and orients together
#: (:func:`~pipeline.features.sift.detector.keypoints_opencv_batch`): their scale spaces,
#: ~2 MiB each for 256x256, are kept until then.
_BATCH_IMAGES = 8


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
    *,
    out: np.ndarray | None = None,
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
    out : (133, height // cell_size, width // cell_size) ndarray of float32, optional
        All zeros: the grid is written into it (:func:`sift` fills its output in place).

    Returns
    -------
    (133, height // cell_size, width // cell_size) ndarray of float32
        ``out`` where given.
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
    if out is None:
        grid = np.zeros((SIFT_CHANNELS, rows, cols), dtype=np.float32)
    elif out.shape != (SIFT_CHANNELS, rows, cols) or out.dtype != np.float32:
        raise ExtractionError(
            f"out must be a float32 array of shape {(SIFT_CHANNELS, rows, cols)}, got "
            f"{out.dtype} {out.shape}"
        )
    else:
        grid = out
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
    out = np.zeros((n, *shape), dtype=np.float32)  # each image's grid is filled in place
    for start in range(0, n, _BATCH_IMAGES):
        if params.backend == "vlfeat":
            found = [keypoints(image, params) for image in grey[start : start + _BATCH_IMAGES]]
        else:  # the per-keypoint steps on a batch at once, bit-identical to one image at a time
            found = keypoints_opencv_batch(grey[start : start + _BATCH_IMAGES], params)
        for i, (frames, descriptors) in enumerate(found, start=start):
            grid_from_keypoints(frames, descriptors, height, width, params.cell_size, out=out[i])
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
    return keypoints_opencv(image, params)


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
    return out, descriptors / np.float32(DESCRIPTOR_SCALE)


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
