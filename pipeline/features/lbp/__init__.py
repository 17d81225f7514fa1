"""Uniform local binary patterns (LBP), VLFeat's ``vl_lbp(grey, 16)`` (docs/method.md §2).

Every interior pixel gets an 8-bit code, one bit per 3×3 neighbour (bit k is 1 when that
neighbour is strictly brighter than the centre); the 256 codes are quantised to 58 bins; the
bins are accumulated bilinearly into ``cell_size``-pixel cells, and each cell's histogram is
square-rooted and L2-normalised. A 256×256 image gives ``(58, 16, 16)``.

:func:`lbp` is ours: compiled numba kernels where numba is installed (``_kernel.py``), else
vectorised over chunks of the batch (numpy comparisons, OpenCV table lookups, one ``torch``
scatter-add of exact integer weights per chunk), both giving the same bytes;
:func:`lbp_vlfeat` calls VLFeat's C library through ``ctypes`` and is the parity reference.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline.errors import ConfigError, ExtractionError
from pipeline.features.base import Extractor, kernel_backend, to_grey
from pipeline.features.lbp import _kernel

__all__ = [
    "EXTRACTOR",
    "N_BINS",
    "LbpParams",
    "find_libvl",
    "lbp",
    "lbp_vlfeat",
    "output_shape",
    "uniform_lbp_table",
]

#: Quantised LBP bins (VLFeat ``VlLbpUniform``): 8 start bits × 7 run lengths of the codes with
#: exactly one 0→1 and one 1→0 transition, one bin for all-0/all-1, one for all other codes.
N_BINS = 58
_CONSTANT_BIN = 56  # codes 0x00 and 0xff
_OTHER_BIN = 57  # the 198 codes with more than two transitions

#: (dy, dx) of the neighbour that sets bit k, y pointing down the rows: E, SE, S, SW, W, NW, N,
#: NE — VLFeat's order for a row-major image (``vl/lbp.c``, ``transposed = false``).
_NEIGHBOURS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))

#: Pixels per chunk of the batch: four 256×256 images, ~50 bytes of scratch a pixel. Of 1, 2,
#: 4, 8 and 16 images a chunk, 4 and 8 were fastest on a 2-core EPYC (16: out of cache; 1:
#: per-call overhead); benchmarks/bench_lbp_kernel.py.
_CHUNK_PIXELS = 4 * 256 * 256

#: Largest cell size: the packed per-block sums of _make_plan stay exact in int64 up to here
#: (7 log2(cell) + 4 bits); a 256-pixel cell is a whole 256×256 image.
_MAX_CELL = 256

#: Where Debian's ``libvlfeat-dev`` puts the library, tried after ``ctypes.util.find_library``.
_DEBIAN_LIBVL = Path("/usr/lib/x86_64-linux-gnu/libvl.so")


@dataclass(frozen=True)
class LbpParams:
    """Parameters of :func:`lbp`; the defaults are the paper's (``vl_lbp(im, 16)``).

    Attributes
    ----------
    cell_size : int
        Side of a histogram cell in pixels. 16 gives the paper's 16×16 cells for 256×256.
    """

    cell_size: int = 16  # paper: 256 px / 16 = 16 cells a side, the LBP decoder's input size

    def __post_init__(self) -> None:
        if isinstance(self.cell_size, bool) or not isinstance(self.cell_size, int | np.integer):
            raise ConfigError(
                f"lbp: cell_size must be an integer, got {self.cell_size!r} "
                f"({type(self.cell_size).__name__}); pass e.g. cell_size=16"
            )
        if not 2 <= self.cell_size <= _MAX_CELL:
            # below 2 the bilinear split degenerates; above _MAX_CELL the exact sums overflow
            raise ConfigError(
                f"lbp: cell_size must be in [2, {_MAX_CELL}], got {self.cell_size}; "
                "the paper uses cell_size=16"
            )


def _parse_params(params: LbpParams | None) -> LbpParams:
    if params is None:
        return LbpParams()
    if not isinstance(params, LbpParams):
        raise ConfigError(
            f"lbp: params must be an LbpParams, got {type(params).__name__}; "
            "pass LbpParams(cell_size=...) or None for the paper's defaults"
        )
    return params


def output_shape(params: LbpParams, height: int, width: int) -> tuple[int, int, int]:
    """Per-image feature shape ``(58, height // cell_size, width // cell_size)``.

    Parameters
    ----------
    params : LbpParams
    height, width : int
        Image size in pixels.

    Returns
    -------
    tuple of int
        ``(N_BINS, h, w)``; VLFeat drops the pixels past the last whole cell.

    Raises
    ------
    ExtractionError
        When the image holds no whole cell.
    """
    params = _parse_params(params)
    c = params.cell_size
    h, w = height // c, width // c
    if h < 1 or w < 1:
        raise ExtractionError(
            f"lbp: a {height}x{width} image holds no whole {c}x{c} cell; use images of at least "
            f"{c}x{c} pixels or a smaller cell_size (a single (H, W, 3) image needs a leading "
            "batch axis: image[None])"
        )
    return (N_BINS, h, w)


def uniform_lbp_table() -> np.ndarray:
    """VLFeat's quantisation of the 256 codes into 58 bins (``VlLbpUniform``).

    Returns
    -------
    (256,) ndarray of uint8
        ``table[code]`` is the bin of an 8-bit code whose bit k is neighbour k of
        ``_NEIGHBOURS``. A code whose ones form a single circular run of length j (1–7)
        starting at bit i goes to bin ``7 * i + (j - 1)``; 0x00 and 0xff go to bin 56; every
        other code to bin 57.

    References
    ----------
    VLFeat ``vl/lbp.c``, ``_vl_lbp_init_uniform`` (the row-major, ``transposed = false`` table).
    """
    table = np.full(256, _OTHER_BIN, dtype=np.uint8)
    table[0x00] = table[0xFF] = _CONSTANT_BIN
    for start in range(8):
        for run in range(1, 8):
            code = 0
            for k in range(start, start + run):
                code |= 1 << (k % 8)
            table[code] = 7 * start + (run - 1)
    return table


# --------------------------------------------------------------------------------------------
# Grey
# --------------------------------------------------------------------------------------------


def _read_only(array: np.ndarray) -> np.ndarray:
    """``array``, flagged read-only: cached tables must not be changed by a caller."""
    array.setflags(write=False)
    return array


@functools.lru_cache(maxsize=1)
def _grey_tables() -> np.ndarray:
    """``to_grey``'s value for each uint8 level alone in each channel.

    Returns
    -------
    (4, 256) ndarray of float32, read-only
        Rows 0–2: the R, G and B terms of :func:`pipeline.features.base.to_grey` — a pixel
        ``(v, 0, 0)`` gives ``fl(0.2989 fl(v / 255))`` exactly, as adding +0.0 is exact.
        Row 3: a grey uint8 level, ``fl(v / 255)``. Derived by calling ``to_grey`` so that the
        weights and roundings stay defined in one place.
    """
    levels = np.arange(256, dtype=np.uint8)
    probe = np.zeros((1, 3, 256, 3), dtype=np.uint8)  # (1, channel, level, RGB)
    for channel in range(3):
        probe[0, channel, :, channel] = levels
    tables = np.concatenate([to_grey(probe)[0], to_grey(levels[None, None, :])[0]])
    return _read_only(tables)


def _grey(images: np.ndarray) -> np.ndarray:
    """Flat grey images, bit-identical to :func:`pipeline.features.base.to_grey`.

    For uint8 input the grey value is ``(R[r] + G[g]) + B[b]``, the per-channel terms of
    :func:`_grey_tables` summed in float32 in ``to_grey``'s order; OpenCV's table lookups make
    this ~1.4x faster than ``to_grey`` (the tests check all 2**24 colours). Float input, and
    input ``to_grey`` refuses, go through ``to_grey``.

    Parameters
    ----------
    images : (k, H, W, 3) or (k, H, W, 1) or (k, H, W) ndarray

    Returns
    -------
    (k * H * W,) ndarray of float32
    """
    if images.dtype != np.uint8 or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        return to_grey(images).reshape(-1)
    tables = _grey_tables()
    rows = images.shape[0] * images.shape[1]  # OpenCV images are 2-d: (k * H, W)
    if images.ndim == 3 or images.shape[-1] == 1:
        return cv2.LUT(np.ascontiguousarray(images).reshape(rows, -1), tables[3]).reshape(-1)
    red, green, blue = cv2.split(np.ascontiguousarray(images).reshape(rows, -1, 3))
    grey: np.ndarray = cv2.LUT(red, tables[0])
    np.add(grey, cv2.LUT(green, tables[1]), out=grey)  # float32, in to_grey's order: (R + G) + B
    np.add(grey, cv2.LUT(blue, tables[2]), out=grey)
    return grey.reshape(-1)


# --------------------------------------------------------------------------------------------
# Codes
# --------------------------------------------------------------------------------------------


def _codes(flat: np.ndarray, width: int, table: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """Quantised LBP code of every position of a flat grey array, mapped through ``table``.

    Bit k is set where neighbour k (``_NEIGHBOURS``) is strictly greater than the centre, as in
    VLFeat. Each comparison fills one byte plane with 0/1; the planes are then merged 8 pixels
    at a time through uint64 views (shifting a word by < 8 keeps each 0/1 byte's bit inside
    its byte).

    Parameters
    ----------
    flat : (P,) ndarray of float32
        Row-major images of width ``width``, concatenated.
    table : (256,) ndarray of uint8 or int32
        What each 8-bit code maps to (:func:`uniform_lbp_table`, or a multiple of it).
    planes : (8, >= P) ndarray of bool
        Scratch space, its length a multiple of 8.

    Returns
    -------
    (P - 2 width - 2,) ndarray of ``table``'s dtype
        For positions ``width + 1 .. P - width - 2``; all 8 neighbours of those are in
        bounds, and the caller ignores the image borders among them.
    """
    lo, hi = width + 1, flat.size - width - 1
    m = hi - lo
    if m <= 0:  # a single image of height <= 2 has no interior pixel
        return np.empty(0, dtype=table.dtype)
    centre = flat[lo:hi]
    for k, (dy, dx) in enumerate(_NEIGHBOURS):
        shift = dy * width + dx
        np.greater(flat[lo + shift : hi + shift], centre, out=planes[k, :m])
    words = planes.view(np.uint64)  # (8, len / 8): plane k holds bit k of 8 pixels a word
    for step in (1, 2, 4):  # planes k and k + step merge into plane k
        high = words[step :: 2 * step]
        np.left_shift(high, step, out=high)
        np.bitwise_or(words[:: 2 * step], high, out=words[:: 2 * step])
    return cv2.LUT(words[0].view(np.uint8)[:m], table).reshape(-1)


# --------------------------------------------------------------------------------------------
# Bilinear cells
# --------------------------------------------------------------------------------------------


def _axis_weights(size: int, cell: int, n_cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block and integer bilinear weight of every pixel along one axis.

    VLFeat gives pixel t the fractional cell coordinate ``u = (t + 0.5) / cell - 0.5`` and
    splits its vote between cells ``floor(u)`` (weight ``1 - frac(u)``) and ``floor(u) + 1``
    (weight ``frac(u)``). With ``s = 2t + 1 - cell`` that is ``floor(u) = s // (2 cell)`` and
    ``frac(u) = o / (2 cell)`` with the integer ``o = s mod 2 cell``: scaled by ``2 cell``,
    the weights are the integers ``2 cell - o`` and ``o``.

    Returns
    -------
    block : (size,) ndarray of int64
        ``floor(u) + 1``: the block on a grid padded by one block before the first cell;
        block b votes into cells b - 1 (weight ``2 cell - o``) and b (weight ``o``).
    o : (size,) ndarray of int64
    valid : (size,) ndarray of bool
        Interior pixels (VLFeat skips the 1-pixel border) with a first cell.
    """
    t = np.arange(size, dtype=np.int64)
    s = 2 * t + 1 - cell
    first = s // (2 * cell)
    valid = (t >= 1) & (t <= size - 2) & (first < n_cells)
    return first + 1, s - 2 * cell * first, valid


@dataclass(frozen=True)
class _Plan:
    """Scatter tables for one image size, cell size and chunk of images.

    A pixel scatters, into its (image, bin, block) slot, integer fields made of its x-weights
    into the cells left and right of its block (scaled by ``2c``, c the cell size), times 1
    and times its y-weight ``o_y`` into the cell below::

        F = (2c - o_x) + 2**s (2c - o_x) o_y
        C = o_x        + 2**s o_x o_y
        word = F + 2**t C      (or F and C as two words where that needs more than 63 bits)

    Summed over a block's pixels of one bin, and over two blocks in :func:`_cells`, every
    field stays below its bit width, so the sums are exact.
    """

    cell: int
    h: int  # cells down
    w: int  # cells across
    n_blocks: int  # (h + 1) * (w + 1) padded blocks per image and bin
    s: int  # bit offset of the o_y-weighted field in F and C
    t: int | None  # bit offset of C in the word; None: F and C are two words
    index: np.ndarray  # (M,) int64, read-only: 58 * n_blocks * image + block, per position
    weights: tuple[torch.Tensor, ...]  # (M,) int64 words, 0 where a position does not vote


@functools.lru_cache(maxsize=16)
def _fields(cell: int) -> tuple[int, int | None]:
    """Bit offsets of the packed vote fields of :class:`_Plan` for one cell size.

    Returns
    -------
    s : int
        Bit offset of the ``o_y``-weighted field in F and C.
    t : int or None
        Bit offset of C in the one word ``F + 2**t C``; None where that needs more than 63
        bits (cells above 16 pixels) and F and C are two words.
    """
    two_c = 2 * cell
    # Bit widths from the largest sums: every pixel of a block in one bin (F, C), then two
    # blocks (the x stage of _cells). o_block: the c values o takes in a block.
    o_block = 2 * np.arange(cell, dtype=np.int64) + (1 if cell % 2 == 0 else 0)
    left, right = int((two_c - o_block).sum()), int(o_block.sum())
    x_lo_max = cell * (left + right)  # x-weights into one cell, c rows of 2c pixels: 2c**3
    x_hi_max = (left + right) * right  # ... times o_y
    s = x_lo_max.bit_length()
    f_max = cell * left + ((left * right) << s)
    c_max = cell * right + ((right * right) << s)
    assert (x_lo_max + (x_hi_max << s)).bit_length() <= 63, f"cell {cell} overflows int64"
    shift = max(f_max, c_max).bit_length()
    if shift + c_max.bit_length() <= 63:  # one word up to cell 16
        return s, shift
    return s, None


@functools.lru_cache(maxsize=8)
def _make_plan(height: int, width: int, cell: int, chunk: int) -> _Plan:
    """The :class:`_Plan` for ``chunk`` images flattened into one row-major array.

    Positions are those :func:`_codes` returns, ``width + 1 .. P - width - 2`` with
    ``P = chunk * height * width``. Cached: every chunk of a batch, and every batch of the same
    size, reuses the tables.
    """
    _, h, w = output_shape(LbpParams(cell), height, width)
    by, oy, vy = _axis_weights(height, cell, h)
    bx, ox, vx = _axis_weights(width, cell, w)
    valid = vy[:, None] & vx[None, :]  # (H, W)
    block = np.where(valid, by[:, None] * (w + 1) + bx[None, :], 0)  # (H, W)
    s, t = _fields(cell)
    f_word = (2 * cell - ox)[None, :] * (1 + (oy[:, None] << s))  # (H, W)
    c_word = ox[None, :] * (1 + (oy[:, None] << s))  # (H, W)
    words = [f_word, c_word] if t is None else [f_word + (c_word << t)]
    n_blocks = (h + 1) * (w + 1)
    lo, hi = width + 1, chunk * height * width - width - 1
    images = np.arange(chunk, dtype=np.int64)[:, None, None]
    index = (images * (N_BINS * n_blocks) + block[None]).reshape(-1)[lo:hi]  # (M,)
    return _Plan(
        cell=cell,
        h=h,
        w=w,
        n_blocks=n_blocks,
        s=s,
        t=t,
        index=_read_only(np.ascontiguousarray(index)),
        weights=tuple(
            torch.from_numpy(np.tile(np.where(valid, word, 0).reshape(-1), chunk)[lo:hi].copy())
            for word in words
        ),
    )


def _cells(sums: list[np.ndarray], plan: _Plan, images: int) -> np.ndarray:
    """Cell histograms from the per-block sums, scaled by ``(2 cell)**2``.

    Parameters
    ----------
    sums : list of (images * 58 * n_blocks,) ndarray of int64
        The scattered words of :class:`_Plan`, laid out (image, bin, block row, block
        column); used as scratch.

    Returns
    -------
    (images, 58, h, w) ndarray of float32
        ``(2 cell)**2`` times VLFeat's histograms: integers, exact below 2**24.

    Notes
    -----
    x stage: cell column L takes F from block column L + 1 and C from block column L,
    ``X = F[L + 1] + C[L]``, with the fields ``X_lo`` (sum of x-weights) and ``X_hi`` (sum of
    x-weight times ``o_y``). y stage: cell row K takes the weights ``2c - o_y`` from block
    row K + 1 and ``o_y`` from block row K: ``2c X_lo[K + 1] - X_hi[K + 1] + X_hi[K]``. The
    shifts by one block are offsets on the flat arrays (1 across, ``w + 1`` down); what wraps
    around lands in the padding row and column, which are cropped.
    """
    c, h, w, s = plan.cell, plan.h, plan.w, plan.s
    if plan.t is None:
        f, right = sums
    else:
        right = sums[0] >> plan.t
        f = np.bitwise_and(sums[0], (1 << plan.t) - 1, out=sums[0])
    x = f[1:]  # F of block column L + 1 ...
    x += right[:-1]  # ... plus C of column L (another array: no aliasing)
    x_hi = x >> s
    x_lo = np.bitwise_and(x, (1 << s) - 1, out=x)
    down = w + 1
    hist = np.zeros(images * N_BINS * plan.n_blocks, dtype=np.int64)
    scaled = hist[: x.size - down]
    np.multiply(x_lo[down:], 2 * c, out=scaled)
    scaled -= x_hi[down:]
    scaled += x_hi[:-down]
    grid = hist.reshape(images, N_BINS, h + 1, w + 1)[:, :, :h, :w]
    return np.ascontiguousarray(grid, dtype=np.float32)


def _normalise(cells: np.ndarray, cell: int) -> np.ndarray:
    """VLFeat's cell normalisation ``sqrt(hist) / (sqrt(sum(hist)) + 1e-10)``, in place.

    Parameters
    ----------
    cells : (N, 58, h, w) ndarray of float32
        ``(2 cell)**2`` times the histograms (:func:`_cells`); the epsilon is scaled to match.

    Returns
    -------
    (N, 58, h, w) ndarray of float32
        ``cells``, normalised; a cell without votes stays all-zero.
    """
    norm = cells.sum(axis=1, keepdims=True)  # (N, 1, h, w)
    np.sqrt(norm, out=norm)
    norm += np.float32(2 * cell * 1e-10)  # VLFeat: sqrtf(sum) + 1e-10f on the unscaled sums
    np.sqrt(cells, out=cells)
    cells /= norm
    return cells


def lbp(images: np.ndarray, params: LbpParams | None = None) -> np.ndarray:
    """Uniform LBP cell histograms of a batch of images, as VLFeat's ``vl_lbp``.

    Parameters
    ----------
    images : (N, H, W, 3) or (N, H, W, 1) or (N, H, W) ndarray of uint8 or float
        RGB or grey; uint8 is divided by 255, floats are taken as [0, 1] (the codes only
        compare pixels, so the range does not matter). Colour goes to grey with MATLAB's
        ``rgb2gray`` weights (:func:`pipeline.features.base.to_grey`).
    params : LbpParams, optional
        Defaults to the paper's ``LbpParams()`` (16-pixel cells).

    Returns
    -------
    (N, 58, H // cell_size, W // cell_size) ndarray of float32
        Channel-first. Each cell is square-rooted and L2-normalised (norm 1, or all zero for a
        cell without votes).

    Raises
    ------
    ConfigError
        ``params`` is not an :class:`LbpParams`.
    ExtractionError
        Images of the wrong rank, dtype or channel count, or smaller than one cell.

    Notes
    -----
    Departures from VLFeat's ``vl/lbp.c``; none changes a code or a bin, and for cell sizes
    that are powers of two the output is bit-identical (otherwise within ~2e-6):

    - VLFeat adds float32 weights pixel by pixel. We scatter, per (image, bin, block of
      ``cell_size`` pixels), exact integer sums of the pixels' bilinear weights scaled by
      ``2 cell_size`` (``torch.Tensor.scatter_add_``), combine neighbouring blocks into cells
      in int64 and normalise in float32 (:func:`_make_plan`, :func:`_cells`).
    - For uint8 images the grey values come from per-channel tables taken from ``to_grey``
      (:func:`_grey`); they are bit-identical to ``to_grey``'s.
    - MATLAB's ``vl_lbp`` hands VLFeat the column-major image with ``transposed = true``; this
      is the row-major equivalent (same bins and cells, checked against both calls).
    - ``cell_size`` is limited to [2, 256] so that the integer sums fit in int64.

    As in VLFeat: the 1-pixel image border gets no code; pixels past the last whole cell vote
    only into cells that exist, and edge cells are not renormalised; a tie (neighbour ==
    centre) gives bit 0, and so does NaN.

    Two backends give the same bytes (:func:`pipeline.features.base.kernel_backend`): where
    numba is installed, compiled kernels (:mod:`._kernel`) on the calling thread, one image
    at a time with the GIL released; elsewhere (or with ``INVERT_KERNELS=numpy``) whole-chunk
    numpy passes, ``_CHUNK_PIXELS`` at a time, on the calling thread and on torch's and
    OpenCV's own thread pools. Thread settings are left alone.

    References
    ----------
    .. [1] A. Dosovitskiy and T. Brox, "Inverting Visual Representations with Convolutional
       Networks", CVPR 2016 (LBP features from ``vl_lbp(im, 16)``).
    .. [2] T. Ojala, M. Pietikäinen and T. Mäenpää, "Multiresolution gray-scale and rotation
       invariant texture classification with local binary patterns", PAMI 24(7), 2002.
    .. [3] A. Vedaldi and B. Fulkerson, VLFeat, ``vl/lbp.c`` (``vl_lbp_process``).
    """
    params = _parse_params(params)
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ExtractionError(
            f"lbp: expected a batch of images (N, H, W) or (N, H, W, C), got shape "
            f"{images.shape}; add a leading batch axis for a single image (image[None])"
        )
    n, height, width = images.shape[:3]
    _, h, w = output_shape(params, height, width)
    out = np.empty((n, N_BINS, h, w), dtype=np.float32)
    if n == 0:
        to_grey(images)  # the dtype and channel checks
        return out
    if kernel_backend() == "numba":
        _lbp_numba(images, params.cell_size, out)
    else:
        _lbp_numpy(images, params.cell_size, out)
    return out


def _lbp_numpy(images: np.ndarray, cell: int, out: np.ndarray) -> None:
    """:func:`lbp`'s numpy path: chunks of the batch as whole-array passes, into ``out``.

    Parameters
    ----------
    images : (N, H, W[, C]) ndarray, N >= 1
    cell : int
    out : (N, 58, h, w) ndarray of float32
        Written.
    """
    n, height, width = images.shape[:3]
    chunk = max(1, min(n, _CHUNK_PIXELS // (height * width)))
    plan = _make_plan(height, width, cell, chunk)
    offsets = uniform_lbp_table().astype(np.int32) * np.int32(plan.n_blocks)  # code -> bin slot
    planes = np.zeros((8, -(-chunk * height * width // 8) * 8), dtype=np.bool_)
    index = np.empty(plan.index.shape, dtype=np.int64)
    size = chunk * N_BINS * plan.n_blocks
    scratch = [torch.empty(size, dtype=torch.int64) for _ in plan.weights]
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        grey = _grey(images[start : start + k])  # (k * H * W,) float32
        slots = _codes(grey, width, offsets, planes)  # (m,) int32: n_blocks * bin
        m = slots.size
        np.add(plan.index[:m], slots, out=index[:m])  # int64 + int32: one pass, no cast first
        size = k * N_BINS * plan.n_blocks
        sums = [
            buffer[:size].zero_().scatter_add_(0, torch.from_numpy(index[:m]), weights[:m]).numpy()
            for buffer, weights in zip(scratch, plan.weights)
        ]  # (k * 58 * n_blocks,) per word: index = (58 image + bin) n_blocks + block
        out[start : start + k] = _normalise(_cells(sums, plan, k), cell)


@dataclass(frozen=True)
class _KernelTables:
    """The per-row and per-column tables of the compiled kernels (:mod:`._kernel`).

    The same integers as :class:`_Plan`, factored: the vote of pixel (y, x) is
    ``y_factor[y] * x_words[:, x]`` into slot ``bin_offset[code] + y_block[y] + x_block[x]``
    of its image's sums.
    """

    rows: np.ndarray  # (2,) int64: [first, stop) of the voting rows
    cols: np.ndarray  # (2,) int64: [first, stop) of the voting columns
    bin_offset: np.ndarray  # (256,) int64: n_blocks * bin of each code
    y_block: np.ndarray  # (H,) int64: (w + 1) * block row
    y_factor: np.ndarray  # (H,) int64: 1 + (o_y << s)
    x_block: np.ndarray  # (W,) int64: block column
    x_words: np.ndarray  # (n_words, W) int64: F + (C << t), or F and C
    s: int
    t: int  # -1: two words


@functools.lru_cache(maxsize=8)
def _kernel_tables(height: int, width: int, cell: int) -> _KernelTables:
    """The :class:`_KernelTables` of one image size and cell size (cached)."""
    _, h, w = output_shape(LbpParams(cell), height, width)
    by, oy, vy = _axis_weights(height, cell, h)
    bx, ox, vx = _axis_weights(width, cell, w)
    s, t = _fields(cell)

    def span(valid: np.ndarray) -> np.ndarray:  # the voting pixels are one run: first < cells
        where = np.flatnonzero(valid)
        return np.array([where[0], where[-1] + 1] if where.size else [1, 1], dtype=np.int64)

    f_word, c_word = 2 * cell - ox, ox
    words = [f_word, c_word] if t is None else [f_word + (c_word << t)]
    n_blocks = (h + 1) * (w + 1)
    return _KernelTables(
        rows=_read_only(span(vy)),
        cols=_read_only(span(vx)),
        bin_offset=_read_only(uniform_lbp_table().astype(np.int64) * n_blocks),
        y_block=_read_only(by * (w + 1)),
        y_factor=_read_only(1 + (oy << s)),
        x_block=_read_only(bx),
        x_words=_read_only(np.stack(words)),
        s=s,
        t=-1 if t is None else t,
    )


def _lbp_numba(images: np.ndarray, cell: int, out: np.ndarray) -> None:
    """:func:`lbp`'s compiled path (:mod:`._kernel`), one image at a time, into ``out``.

    uint8 RGB goes to grey inside the kernel; other input through :func:`_grey` first, one
    chunk of ``_CHUNK_PIXELS`` at a time.
    """
    n, height, width = images.shape[:3]
    k = _kernel_tables(height, width, cell)
    eps = np.float32(2 * cell * 1e-10)  # as _normalise adds it
    tables = (k.rows, k.cols, k.bin_offset, k.y_block, k.y_factor, k.x_block, k.x_words)
    if images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3:
        rgb = np.ascontiguousarray(images)
        _kernel.lbp_rgb(rgb, _grey_tables(), *tables, cell, k.s, k.t, eps, out)
        return
    chunk = max(1, min(n, _CHUNK_PIXELS // (height * width)))
    for start in range(0, n, chunk):
        grey = _grey(images[start : start + chunk]).reshape(-1, height, width)
        _kernel.lbp_grey(grey, *tables, cell, k.s, k.t, eps, out[start : start + chunk])


# --------------------------------------------------------------------------------------------
# The reference: VLFeat through ctypes
# --------------------------------------------------------------------------------------------


def find_libvl() -> str | None:
    """Path or soname of VLFeat's shared library, or None where it is not installed."""
    name = ctypes.util.find_library("vl")
    if name is not None:
        return name
    if _DEBIAN_LIBVL.exists():
        return str(_DEBIAN_LIBVL)
    return None


@functools.lru_cache(maxsize=1)
def _libvl() -> ctypes.CDLL:
    """Load ``libvl.so`` once and declare the LBP functions (``vl/lbp.h``)."""
    path = find_libvl()
    if path is None:
        raise ExtractionError(
            "lbp_vlfeat: VLFeat's libvl.so was not found; install Debian's libvlfeat-dev "
            "(apt-get install libvlfeat-dev) or use lbp() instead"
        )
    lib = ctypes.CDLL(path)
    vl_size = ctypes.c_uint64  # vl_size is vl_uint64 on LP64 (vl/host.h)
    lib.vl_lbp_new.restype = ctypes.c_void_p
    lib.vl_lbp_new.argtypes = [ctypes.c_int, ctypes.c_int]  # (VlLbpMappingType, vl_bool)
    lib.vl_lbp_delete.restype = None
    lib.vl_lbp_delete.argtypes = [ctypes.c_void_p]
    lib.vl_lbp_get_dimension.restype = vl_size
    lib.vl_lbp_get_dimension.argtypes = [ctypes.c_void_p]
    lib.vl_lbp_process.restype = None
    lib.vl_lbp_process.argtypes = [
        ctypes.c_void_p,  # VlLbp *
        ctypes.c_void_p,  # float * features
        ctypes.c_void_p,  # float * image
        vl_size,  # width
        vl_size,  # height
        vl_size,  # cellSize
    ]
    return lib


_VL_LBP_UNIFORM = 0  # VlLbpMappingType.VlLbpUniform


def lbp_vlfeat(
    images: np.ndarray, params: LbpParams | None = None, *, transposed: bool = False
) -> np.ndarray:
    """The same features computed by VLFeat's C code (``vl_lbp_process``), one image at a time.

    Parameters
    ----------
    images : (N, H, W, 3) or (N, H, W, 1) or (N, H, W) ndarray of uint8 or float
        As for :func:`lbp` (the same grey conversion).
    params : LbpParams, optional
    transposed : bool
        False: hand VLFeat the row-major image (``width = W``) with ``transposed = false``.
        True: do what MATLAB's ``vl_lbp`` does — the column-major image (``width = H``) with
        ``transposed = true`` — and transpose the cells back. Both give the same features.

    Returns
    -------
    (N, 58, H // cell_size, W // cell_size) ndarray of float32

    Raises
    ------
    ExtractionError
        Where ``libvl.so`` is not installed, or on input :func:`lbp` refuses.

    References
    ----------
    .. [1] VLFeat ``vl/lbp.c`` and ``toolbox/misc/vl_lbp.c``.
    """
    params = _parse_params(params)
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ExtractionError(
            f"lbp_vlfeat: expected a batch of images (N, H, W) or (N, H, W, C), got shape "
            f"{images.shape}; add a leading batch axis for a single image (image[None])"
        )
    n, height, width = images.shape[:3]
    dim, h, w = output_shape(params, height, width)
    lib = _libvl()
    handle = lib.vl_lbp_new(_VL_LBP_UNIFORM, int(transposed))
    if not handle:
        raise MemoryError("vl_lbp_new returned NULL")
    try:
        got = lib.vl_lbp_get_dimension(handle)
        if got != dim:
            raise ExtractionError(
                f"lbp_vlfeat: libvl.so reports {got} LBP bins, expected {dim}; install a VLFeat "
                "0.9.2x build (Debian libvlfeat-dev)"
            )
        out = np.empty((n, dim, h, w), dtype=np.float32)
        for i in range(n):
            grey = to_grey(images[i : i + 1])[0]  # (H, W) float32, one image at a time
            if transposed:
                image = np.ascontiguousarray(grey.T)  # MATLAB's memory order: rows fastest
                cells = np.empty((dim, w, h), dtype=np.float32)  # dimension x columns x rows
                lib.vl_lbp_process(
                    handle, cells.ctypes.data, image.ctypes.data, height, width, params.cell_size
                )
                out[i] = cells.transpose(0, 2, 1)
            else:
                image = np.ascontiguousarray(grey)
                cells = out[i]  # (dim, h, w) contiguous: dimension x rows x columns
                lib.vl_lbp_process(
                    handle, cells.ctypes.data, image.ctypes.data, width, height, params.cell_size
                )
    finally:
        lib.vl_lbp_delete(handle)
    return out


EXTRACTOR = Extractor(
    name="lbp",
    version=1,
    params_type=LbpParams,
    compute=lambda images, p: lbp(images, p),
    output_shape=output_shape,
    dims=("channel", "y", "x"),
    description="VLFeat uniform LBP (vl_lbp): 58 bins per cell_size cell, sqrt + L2 per cell",
)
