"""Histograms of oriented gradients, VLFeat's UoCTTI variant ``vl_hog(im, 8)`` (docs/method.md §2).

Central-difference gradients at the interior pixels (for colour, the channel with the largest
gradient); each pixel votes its magnitude into the nearest of ``2 * O`` directed orientation
bins, bilinearly over the four nearest cells; every cell is normalised by the four 2×2 blocks of
cells around it, clipped at 0.2 and projected to ``3 * O + 4`` channels: ``2 * O`` directed,
``O`` undirected and 4 texture (energy) channels. A 256×256 image gives ``(31, 32, 32)``.

:func:`hog_torch` is ours: batched and written in torch, so that it runs on a GPU and can be
differentiated through (the optimisation-based inversion of Mahendran & Vedaldi needs the
gradient of HOG with respect to the image). :func:`hog` is its numpy entry point, the one the
feature store calls; where numba is installed it computes the histograms with a compiled
kernel (``_kernel.py``) that gives the same bytes. :func:`hog_vlfeat` calls VLFeat through
``cyvlfeat`` and is the parity reference.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from pipeline.errors import ConfigError, ExtractionError
from pipeline.features.base import Extractor, OnDevice, as_float_images, kernel_backend
from pipeline.features.hog import _kernel

__all__ = ["EXTRACTOR", "HogParams", "hog", "hog_torch", "hog_vlfeat", "output_shape"]

#: Block-normalisation regulariser: ``1 / sqrt(block energy + 1e-4)`` (``vl/hog.c``, "as
#: implemented in UOCTTI code"); keeps flat regions from being blown up to full contrast.
_NORM_EPS = 1e-4

#: Each normalised value is clipped here before the four blocks are summed (Dalal & Triggs'
#: L2-Hys threshold, kept by Felzenszwalb et al.).
_CLIP = 0.2

#: Texture channels: the clipped undirected values normalised by one block, summed, times
#: VLFeat's float constant ``1.0f / sqrtf(18.0f)`` (this is its float32 value), whatever ``O``.
_TEXTURE_WEIGHT = 0.23570228

#: VLFeat asserts ``width > 3`` and ``height > 3`` (``vl_hog_prepare_buffers``).
_MIN_SIDE = 4

#: Pixels whose exact orientation scores are computed in one go: the (O, chunk) float64 keys
#: take 4.5 MiB for O = 9; measured fastest of 2**12..2**16 when every pixel takes this path.
_CHUNK_PIXELS = 2**16

#: Images per :func:`hog_torch` call in :func:`hog`: torch's per-call overhead (~60 calls, each
#: a few µs of Python holding the GIL) is shared, while a float32 plane of 8 256×256 images
#: (2 MiB) still mostly stays in the L2/L3 caches. One thread, CPU time per image on a 2-core
#: Xeon: 1.80, 1.72, 1.65, 1.77 ms for 2, 4, 8, 16; with ``extract``'s two threads, 8 gave
#: ~20% more than 2 (there, the threads reached ~0.77 of two processes running the same code).
_CHUNK_IMAGES = 8

#: The fast orientation path (:func:`_directed_bins`) sends a gradient to the exact scores when
#: its atan2 angle lies within this fraction of a bin of a bin boundary. Elsewhere VLFeat's
#: float32 scores (the difference of two errs by <= 5e-7 |g|, table rounding included) cannot
#: reorder: the two best differ by >= 2 |g| sin(π/2O) sin(1e-3 π/O) >= 2.4e-6 |g| up to
#: O = 64, and the float32 angle errs by < 3e-5 bin.
_BOUNDARY_MARGIN = 1e-3

#: Above this many orientations the margin argument above no longer holds: exact scores only.
_FAST_MAX_ORIENTATIONS = 64


@dataclass(frozen=True)
class HogParams:
    """Parameters of :func:`hog`; the defaults are the paper's (``vl_hog(im, 8)``).

    Attributes
    ----------
    cell_size : int
        Side of a cell in pixels. 8 gives the paper's 32×32 cells for 256×256 images.
    num_orientations : int
        Undirected orientations ``O`` in [0, π); there are ``2 * O`` directed ones and
        ``3 * O + 4`` output channels. VLFeat's default 9 gives 31 channels.
    """

    cell_size: int = 8  # paper: vl_hog(im, 8), 256 px / 8 = 32 cells a side
    num_orientations: int = 9  # VLFeat's default: 20° undirected bins, 31 channels

    def __post_init__(self) -> None:
        for name, value, example in (
            ("cell_size", self.cell_size, 8),
            ("num_orientations", self.num_orientations, 9),
        ):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ConfigError(
                    f"hog: {name} must be an integer, got {value!r} ({type(value).__name__}); "
                    f"pass e.g. {name}={example}"
                )
        if self.cell_size < 2:
            # a 1-pixel cell makes the bilinear vote a plain copy and VLFeat's cell grid degenerate
            raise ConfigError(
                f"hog: cell_size must be >= 2, got {self.cell_size}; the paper uses cell_size=8"
            )
        if self.num_orientations < 2:
            # one undirected orientation cannot tell any two edges apart
            raise ConfigError(
                f"hog: num_orientations must be >= 2, got {self.num_orientations}; "
                "VLFeat's default (the paper's) is num_orientations=9"
            )


def output_shape(params: HogParams, height: int, width: int) -> tuple[int, int, int]:
    """Per-image HOG shape ``(3 * O + 4, h, w)``.

    ``h = (height + cell_size // 2) // cell_size`` (VLFeat: the last cell is at least half
    inside the image), ``w`` likewise.

    Raises
    ------
    ExtractionError
        The image is smaller than VLFeat accepts (a side below 4 pixels or no whole cell).
    """
    c = params.cell_size
    h, w = (height + c // 2) // c, (width + c // 2) // c
    if min(height, width) < _MIN_SIDE or h < 1 or w < 1:
        raise ExtractionError(
            f"hog: images of {height}×{width} pixels are too small for cell_size={c}; each side "
            f"must be at least {max(_MIN_SIDE, c - c // 2)} pixels (resize or pad the images, "
            "or pass a smaller cell_size)"
        )
    return 3 * params.num_orientations + 4, h, w


@dataclass(frozen=True)
class _Plan:
    """Constant tensors for one batch shape on one device (built by :func:`_plan`).

    Orientation scores are computed in rows: row 0 is ``k = 0`` (``|gx|``, as cos 0 = 1 and
    sin 0 = 0 exactly); then the ``K`` pairs ``(k, O - k)`` whose float32 table entries are
    exact mirrors (``cos`` negated, ``sin`` equal), which share their two products; then the
    remaining ``D`` orientations, computed directly. ``code`` holds ``O - k`` for every row.
    """

    pair_cos: torch.Tensor  # (K,) float32 cos(kπ/O) of the paired k < O/2
    pair_sin: torch.Tensor  # (K,) float32 sin(kπ/O)
    direct_cos: torch.Tensor  # (D,) float32, the unpaired k > 0
    direct_sin: torch.Tensor  # (D,)
    code: torch.Tensor  # (O, 1) int64, O - k of every row
    vertical: int | None  # VLFeat's bin of every (0, gy > 0) gradient, if one for all gy
    index: torch.Tensor  # (2, N * P) int32 x-vote buffer index, without the bin term
    weight_x: torch.Tensor  # (2, N * P) float32 x-vote weights
    tent: torch.Tensor  # (h + 1, 2, cell) float32 y-vote weights of the buffer's row blocks


@functools.lru_cache(maxsize=8)
def _orientation_tables(num_orientations: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``cos(kπ/O)`` and ``sin(kπ/O)``, ``(O,)`` each, rounded from double as VLFeat."""
    angles = [k * math.pi / num_orientations for k in range(num_orientations)]
    cos = np.array([math.cos(a) for a in angles], dtype=np.float32)
    sin = np.array([math.sin(a) for a in angles], dtype=np.float32)
    return cos, sin


@functools.lru_cache(maxsize=32)
def _axis_votes(
    length: int, cell_size: int, cells: int, first: int = 1, last: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The two cells each pixel of one image axis votes into, and the weights.

    Parameters
    ----------
    length : int
        Pixels along the axis.
    cell_size : int
    cells : int
        Cells along the axis (:func:`output_shape`).
    first, last : int
        The pixels ``first .. last`` to describe; the interior ones, ``1 .. length - 2``, by
        default.

    Returns
    -------
    cell : (2, last - first + 1) ndarray of int32
        ``floor(hx)`` and ``floor(hx) + 1``, clamped into ``0 .. cells - 1``.
    weight : (2, last - first + 1) ndarray of float32
        ``1 - frac(hx)`` and ``frac(hx)``; 0 for a cell outside the grid (VLFeat drops it).
    """
    last = length - 2 if last is None else last
    # VLFeat: hx = (x + 0.5) / cell - 0.5 in double, stored as float; weights in float
    pos = np.arange(first, last + 1, dtype=np.float64)
    hx = ((pos + 0.5) / cell_size - 0.5).astype(np.float32)
    lo = np.floor(hx)
    w2 = (hx - lo).astype(np.float32)
    w1 = (1.0 - w2.astype(np.float64)).astype(np.float32)
    cell = np.stack([lo, lo + 1]).astype(np.int64)
    inside = (cell >= 0) & (cell < cells)
    weight = np.where(inside, np.stack([w1, w2]), np.float32(0)).astype(np.float32)
    return np.clip(cell, 0, cells - 1).astype(np.int32), weight


@functools.lru_cache(maxsize=32)
def _tent(height: int, c: int, h: int) -> np.ndarray:
    """The y-vote weights of :func:`_plan`: ``(h + 1, 2, c)`` float32, read-only.

    Buffer row ``i`` is image row ``y = i - c // 2`` in block ``m = i // c``; it votes
    ``tent[m, 0, i % c]`` into cell ``m`` and ``tent[m, 1, i % c]`` into cell ``m - 1``
    (VLFeat's weights, :func:`_axis_votes`; 0 outside the interior rows and the grid).
    """
    top = c // 2 + 1  # buffer row of image row 1 (the first interior row)
    # every buffer row i is image row y = i - top + 1 in block m = i // c; it votes wy1 into
    # cell floor(hy) and wy2 into the next one, which are cells m - 1 and m (see _axis_votes)
    y = np.arange((h + 1) * c) - top + 1
    cy, wy = _axis_votes(height, c, h, first=int(y[0]), last=int(y[-1]))  # (2, (h+1) c)
    block = np.arange((h + 1) * c) // c
    interior = (y >= 1) & (y <= height - 2)
    by_side = np.zeros((2, (h + 1) * c), np.float32)  # to cell m, to cell m - 1
    for side, cell in ((0, block), (1, block - 1)):
        for which in range(2):
            hit = interior & (cy[which] == cell) & (wy[which] > 0)
            by_side[side, hit] = wy[which, hit]
    tent = np.ascontiguousarray(by_side.reshape(2, h + 1, c).transpose(1, 0, 2))
    tent.setflags(write=False)
    return tent


@functools.lru_cache(maxsize=8)
def _plan(batch: int, height: int, width: int, params: HogParams, device: torch.device) -> _Plan:
    """Orientation tables and vote layout for ``batch`` images of ``height × width``.

    The bilinear vote ``|g| * wx * wy`` goes in its two separable halves. Along x, each pixel
    adds ``|g| * wx`` into the two cells of its own image row (one ``index_add`` into a buffer
    laid out ``(N, rows, 2O, w)``; ``index`` is every interior pixel's flat index there, pixels
    ordered images, rows, columns, without the ``bin * w`` term). Along y, cell ``j`` takes
    the image rows ``c j - c // 2 .. c j - c // 2 + 2c - 1``: with the buffer's rows padded so
    that they split into blocks of ``c`` (block ``m`` starts at image row ``c m - c // 2``),
    cell ``j`` is block ``j`` weighted by ``tent[j, 0]`` plus block ``j + 1`` weighted by
    ``tent[j + 1, 1]`` (:func:`_y_votes`). The weights are VLFeat's, row by row.
    """
    o, c = params.num_orientations, params.cell_size
    _, h, w = output_shape(params, height, width)
    rows, cols = height - 2, width - 2
    cx, wx = _axis_votes(width, c, w)  # (2, W-2)
    row_stride = 2 * o * w
    image_stride = (h + 1) * c * row_stride  # buffer rows: padded, see the tent below
    if batch * image_stride >= 2**31:
        raise ExtractionError(
            f"hog: a batch of {batch} images of {height}×{width} pixels overflows the int32 "
            "vote index; pass fewer images at a time"
        )
    top = c // 2 + 1  # buffer row of image row 1 (the first interior row)
    image = np.arange(batch)[None, :, None, None] * image_stride
    row = (top + np.arange(rows))[None, None, :, None] * row_stride
    index = (image + row + cx[:, None, None, :]).reshape(2, -1).astype(np.int32)
    weight_x = np.broadcast_to(wx[:, None, None, :], (2, batch, rows, cols)).reshape(2, -1)
    tent = _tent(height, c, h)  # (h+1, 2, c)

    cos, sin = _orientation_tables(o)
    pairs = [k for k in range(1, (o + 1) // 2) if cos[o - k] == -cos[k] and sin[o - k] == sin[k]]
    direct = [k for k in range(1, o) if k not in pairs and o - k not in pairs]
    order = [0, *pairs, *(o - k for k in pairs), *direct]  # k of every score row
    assert sorted(order) == list(range(o)), order
    # gx = 0: the scores are gy * sin, whose order is the table's unless two entries lie so
    # close (< 2**-22 apart, relative) that a product can round them equal
    sin_top = float(sin.max())
    sin_next = float(sin[sin < sin_top].max())
    vertical = int(np.argmax(sin)) if sin_top > sin_next * (1 + 2.0**-22) else None

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)

    return _Plan(
        pair_cos=tensor(cos[pairs]),
        pair_sin=tensor(sin[pairs]),
        direct_cos=tensor(cos[direct]),
        direct_sin=tensor(sin[direct]),
        code=tensor(o - np.array(order, dtype=np.int64)[:, None]),
        vertical=vertical,
        index=tensor(index),
        weight_x=tensor(weight_x),
        tent=tensor(tent.copy()),  # _tent is read-only; torch wants a writable array
    )


def _exact_sqrt(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float32 square root (no autograd).

    torch's CPU ``sqrt`` (a vectorised approximation) is one ulp off for ~1 in 6 float32
    values; numpy's is the IEEE instruction, as VLFeat's ``sqrtf``. CUDA's ``sqrtf`` is
    correctly rounded by default.
    """
    if x.device.type == "cpu":
        return torch.from_numpy(np.sqrt(x.numpy()))
    return torch.sqrt(x)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` whose gradient is 0, not NaN, where ``x == 0``."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), 0.0)


def _exact_directed_bins(gx: torch.Tensor, gy: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """VLFeat's directed orientation bin of each gradient from its ``O`` scores (ties included).

    Parameters
    ----------
    gx, gy : (P,) Tensor of float32
        Gradient components (x along the columns, y down the rows).
    plan : _Plan
        The float32 tables ``cos(kπ/O)``, ``sin(kπ/O)`` in score-row order.

    Returns
    -------
    (P,) Tensor of int32
        ``k`` in ``0 .. 2O - 1``: the ``k`` in ``0 .. O - 1`` maximising the float32 score
        ``|gx * cos(kπ/O) + gy * sin(kπ/O)|`` (the first ``k`` on a tie), plus ``O`` where
        that score is negative. Arbitrary where the gradient is zero (it votes nothing).

    Notes
    -----
    VLFeat scans ``k`` in order and keeps a score only if it is strictly larger. To get the
    same winner, ties included, in one reduction, every ``|score|`` (a float32, whose double
    has 29 zero low mantissa bits) is widened to float64 and the code ``O - k`` is written into
    those low bits: the int64 bit patterns of non-negative doubles order as their values, so
    the largest key is the largest score and, among equal scores, the smallest ``k``.

    Scores are float32 products and sums rounded one by one as in VLFeat (no fused
    multiply-add); mirrored orientations ``k``, ``O - k`` reuse the products:
    ``score(O - k) = gy * sin - gx * cos`` exactly when the table entries are mirrors.

    The sign needs no second look-up: the winning direction lies within ``π / 2O`` of the
    gradient line, so its score has the sign of ``gy`` (of ``gx`` for ``k = 0``).
    """
    o = plan.code.shape[0]
    pairs, direct = plan.pair_cos.numel(), plan.direct_cos.numel()
    total = gx.numel()
    chunk = min(total, _CHUNK_PIXELS)
    codes = torch.empty(total, dtype=torch.int64, device=gx.device)
    # buffers reused across chunks: a fresh multi-MiB tensor costs a page fault per 4 KiB
    across = torch.empty((pairs + direct) * chunk, dtype=torch.float32, device=gx.device)
    down = torch.empty((pairs + direct) * chunk, dtype=torch.float32, device=gx.device)
    wide = torch.empty(o * chunk, dtype=torch.float64, device=gx.device)
    for start in range(0, total, chunk):
        m = min(chunk, total - start)
        x, y = gx[start : start + m], gy[start : start + m]
        a = across[: (pairs + direct) * m].view(pairs + direct, m)
        b = down[: (pairs + direct) * m].view(pairs + direct, m)
        score = wide[: o * m].view(o, m)  # float32 scores, widened; rows in plan order
        score[0].copy_(x)  # k = 0: gx * 1 + gy * 0
        torch.outer(plan.pair_cos, x, out=a[:pairs])
        torch.outer(plan.pair_sin, y, out=b[:pairs])
        torch.add(b[:pairs], a[:pairs], out=score[1 : 1 + pairs])  # k
        torch.sub(b[:pairs], a[:pairs], out=score[1 + pairs : 1 + 2 * pairs])  # O - k
        if direct:
            torch.outer(plan.direct_cos, x, out=a[pairs:])
            torch.outer(plan.direct_sin, y, out=b[pairs:])
            torch.add(b[pairs:], a[pairs:], out=score[1 + 2 * pairs :])
        key = score.abs_().view(torch.int64).bitwise_or_(plan.code)  # (O, m)
        torch.amax(key, dim=0, out=codes[start : start + m])
    code = codes.bitwise_and_((1 << o.bit_length()) - 1).to(torch.float32)  # O - k, exact
    first = torch.eq(code, o, out=torch.empty_like(gx))  # 1.0 where k == 0
    negative = torch.lt(torch.lerp(gy, gx, first), 0, out=first)  # lerp by 0/1 selects exactly
    return code.neg_().add_(o).add_(negative, alpha=o).to(torch.int32)


def _directed_bins(gx: torch.Tensor, gy: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """VLFeat's directed orientation bin of each gradient, exactly; fast path.

    Parameters
    ----------
    gx, gy : (P,) Tensor of float32
    plan : _Plan

    Returns
    -------
    (P,) Tensor of int32
        As :func:`_exact_directed_bins`.

    Notes
    -----
    The bin is the nearest of the ``2O`` directions ``dπ/O`` to ``atan2(gy, gx)``, except
    near a boundary between two bins, where VLFeat's float32 scores, not the angle, decide
    (ties go to the smaller ``k``). Gradients within ``_BOUNDARY_MARGIN`` of a boundary go to
    :func:`_exact_directed_bins`; so do all when ``O > _FAST_MAX_ORIENTATIONS``. Vertical
    gradients (``gx = 0``) sit exactly on a boundary when ``O`` is odd; their scores are
    ``gy * sin(kπ/O)``, so their bin is the table's largest ``sin`` (``plan.vertical``).
    """
    o = plan.code.shape[0]
    if o > _FAST_MAX_ORIENTATIONS:
        return _exact_directed_bins(gx, gy, plan)
    turns = torch.atan2(gy, gx).mul_(o / math.pi)  # (P,) angle in bins, in [-O, O]
    if plan.vertical is not None:
        # put vertical gradients on their bin's centre: lerp by a 0/1 weight selects exactly
        vertical = torch.eq(gx, 0, out=torch.empty_like(gx))
        below = torch.lt(gy, 0, out=torch.empty_like(gy))  # gy < 0: the opposite direction
        turns.lerp_(below.mul_(o).add_(plan.vertical), vertical)
    bins = torch.round(turns)
    distance = torch.sub(turns, bins).abs_()  # from the bin centre, in bins
    limit = np.float32(0.5 - _BOUNDARY_MARGIN)  # the float32 a comparison with torch's uses
    if distance.device.type == "cpu":
        # numpy's bool comparison and nonzero take ~1/7 of torch's on the CPU (~0.1 ms an image)
        exact = torch.from_numpy(np.flatnonzero(distance.numpy() > limit))
    else:
        exact = (distance > float(limit)).nonzero().squeeze(1)
    bins.add_(torch.lt(bins, 0, out=turns), alpha=2 * o)  # -O .. O  ->  0 .. 2O - 1
    bins_int = bins.to(torch.int32)
    if exact.numel():
        bins_int[exact] = _exact_directed_bins(gx[exact], gy[exact], plan)
    return bins_int


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Central differences of the channel with the largest gradient, at interior pixels.

    Parameters
    ----------
    x : (N, C, H, W) Tensor of float32

    Returns
    -------
    gx, gy : (N * (H - 2) * (W - 2),) Tensor of float32
        ``x[y, x + 1] - x[y, x - 1]`` and ``x[y + 1, x] - x[y - 1, x]`` of the chosen channel;
        pixels ordered images, rows, columns. Differentiable.
    grad2 : (N * (H - 2) * (W - 2),) Tensor of float32
        ``gx * gx + gy * gy`` rounded as VLFeat's float arithmetic (no autograd).

    Notes
    -----
    VLFeat keeps a channel only when its squared gradient is strictly larger than the best so
    far: on a tie the earlier channel wins. ``lerp`` by a 0/1 weight selects exactly.
    """
    gx = x[:, 0, 1:-1, 2:] - x[:, 0, 1:-1, :-2]  # (N, H-2, W-2)
    gy = x[:, 0, 2:, 1:-1] - x[:, 0, :-2, 1:-1]
    with torch.no_grad():
        grad2 = gx * gx + gy * gy
    for c in range(1, x.shape[1]):
        gx_c = x[:, c, 1:-1, 2:] - x[:, c, 1:-1, :-2]
        gy_c = x[:, c, 2:, 1:-1] - x[:, c, :-2, 1:-1]
        with torch.no_grad():
            grad2_c = gx_c * gx_c + gy_c * gy_c
            larger = torch.gt(grad2_c, grad2, out=torch.empty_like(grad2))  # 1.0 / 0.0
            grad2 = torch.maximum(grad2, grad2_c)
        gx, gy = torch.lerp(gx, gx_c, larger), torch.lerp(gy, gy_c, larger)
    return gx.reshape(-1), gy.reshape(-1), grad2.reshape(-1)


def _block_normalise(hist: torch.Tensor, o: int) -> torch.Tensor:
    """UoCTTI block normalisation and projection of the directed histograms.

    Parameters
    ----------
    hist : (N, h, 2O, w) Tensor of float32
        Directed orientation histograms of the cells (the layout the votes come in).
    o : int
        ``O``.

    Returns
    -------
    (N, h, 3O + 4, w) Tensor of float32
        Directed, undirected and texture channels.
    """
    # squared norm of the undirected (folded) histogram of every cell, border replicated;
    # the energy of the four 2x2 blocks around each cell
    # every sum is written out term by term, in index order: torch's reductions split a sum
    # by the CPU's vector width (AVX2 and AVX-512 give other last bits), elementwise adds don't
    undirected = hist[:, :, :o] + hist[:, :, o:]  # (N, h, O, w)
    energy = _ordered_sum(undirected * undirected, dim=2)[:, None]  # (N, 1, h, w)
    energy = torch.nn.functional.pad(energy, (1, 1, 1, 1), mode="replicate")[:, 0]
    blocks = energy[:, :-1, :-1] + energy[:, :-1, 1:] + energy[:, 1:, :-1] + energy[:, 1:, 1:]
    factor = torch.rsqrt(blocks + _NORM_EPS)  # (N, h+1, w+1)
    # VLFeat's factors 1..4: the blocks up-left, up-right, down-left, down-right of the cell
    corners = [factor[:, :-1, :-1], factor[:, :-1, 1:], factor[:, 1:, :-1], factor[:, 1:, 1:]]
    directed = hist * torch.stack(corners)[:, :, :, None]  # (4, N, h, 2O, w)
    folded = directed[:, :, :, :o] + directed[:, :, :, o:]  # VLFeat sums the scaled halves
    directed = directed.clamp(max=_CLIP)
    folded = folded.clamp(max=_CLIP)
    texture = _ordered_sum(folded, dim=3).permute(1, 2, 0, 3) * _TEXTURE_WEIGHT  # (N, h, 4, w)
    return torch.cat(
        [0.5 * _ordered_sum(directed, dim=0), 0.5 * _ordered_sum(folded, dim=0), texture], dim=2
    )


def _ordered_sum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x.sum(dim)`` as ``((x_0 + x_1) + x_2) + ...``: the same bytes on every CPU and GPU."""
    terms = x.unbind(dim)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _y_votes(tent: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The y-votes of every block of buffer rows, summed in one fixed order.

    ``blocks[..., m, j, :] = sum_k tent[m, j, k] * rows[..., m, k, :]``, accumulated from 0
    for ``k = 0 .. c - 1`` with each product and each sum rounded to float32 (no fused
    multiply-add). A ``torch.matmul`` would hand the sum to the BLAS, whose order depends on
    the CPU's instruction set (MKL's AVX2 and AVX-512 ``sgemm`` give other last bits), so the
    stored bytes would depend on the machine; elementwise products and sums do not, on any
    CPU or GPU. The numba kernel (:mod:`._kernel`) sums in this order too.

    Parameters
    ----------
    tent : (h + 1, 2, c) Tensor of float32
        The weights of buffer row ``k`` of block ``m`` into cells ``m`` (``j = 0``) and
        ``m - 1`` (``j = 1``).
    rows : (N, h + 1, c, S) Tensor of float32
        The x-voted buffer rows, ``S = 2O w``.

    Returns
    -------
    (N, h + 1, 2, S) Tensor of float32
    """
    n, blocks, c, span = rows.shape
    acc = torch.zeros((n, blocks, 2, span), dtype=rows.dtype, device=rows.device)
    for k in range(c):
        acc = acc + tent[None, :, :, k, None] * rows[:, :, None, k]
    return acc


def hog_torch(images: torch.Tensor, params: HogParams = HogParams()) -> torch.Tensor:
    """UoCTTI HOG of a batch of images, differentiable with respect to the images.

    Parameters
    ----------
    images : (N, C, H, W) Tensor of floating, C in {1, 3}
        Pixel values in [0, 1] (MATLAB ``im2single``), channels first (any strides); any
        device. Computed in float32.
    params : HogParams
        Cell size and number of orientations; the defaults are the paper's.

    Returns
    -------
    (N, 3 * O + 4, h, w) Tensor of float32
        Channels ``0 .. 2O - 1`` directed orientations, ``2O .. 3O - 1`` undirected,
        ``3O .. 3O + 3`` texture; ``h = (H + cell_size // 2) // cell_size``, ``w`` likewise
        (:func:`output_shape`), row ``y`` of cells along the image rows.

    Raises
    ------
    ExtractionError
        ``images`` is not a 4-d floating tensor with 1 or 3 channels, or is too small.

    Notes
    -----
    Follows ``vl/hog.c`` of VLFeat 0.9.21 (the release ``cyvlfeat`` links; 0.9.20's is the
    same) step by step, with float32 where VLFeat uses float, and agrees with
    :func:`hog_vlfeat` to about 2e-7. The channel choice and the orientation bins are
    VLFeat's exactly, ties included (:func:`_directed_bins`: the nearest direction to the
    atan2 angle, VLFeat's own float32 scores near a bin boundary). Departures:

    - The bilinear vote is split into its x and y halves (:func:`_plan`), so the sums run in
      another order: differences of a few float32 roundings. On CUDA ``index_add`` sums with
      atomics, so the last bit may change from run to run.
    - The block normalisation runs in float32 where VLFeat uses double (same formula).
    - Gradients: the orientation bin and the colour channel choice are piecewise constant and
      get none; they flow through the magnitudes, the bilinear weights and the block
      normalisation. Under autograd the magnitude uses torch's ``sqrt`` (one ulp off now and
      then on the CPU), whose gradient is set to 0 at a zero gradient.
    - The orientation scores use the raw gradient, as the VLFeat releases do (docs/method.md
      §2); VLFeat's code after 0.9.21 divides it by its norm first, which moves a gradient
      lying within a rounding of a bin boundary to the neighbouring bin now and then.
    - Exactness of the bins assumes gradients in float32's normal range (|g| > 1.2e-38): no
      image with pixel differences that small occurs in practice.

    References
    ----------
    .. [1] P. Felzenszwalb, R. Girshick, D. McAllester and D. Ramanan, "Object Detection with
       Discriminatively Trained Part-Based Models", IEEE TPAMI 32(9), 2010.
    .. [2] A. Vedaldi and B. Fulkerson, "VLFeat: An Open and Portable Library of Computer
       Vision Algorithms", 2008; ``vl/hog.c`` (``VlHogVariantUoctti``), release 0.9.21.
    .. [3] A. Dosovitskiy and T. Brox, "Inverting Visual Representations with Convolutional
       Networks", CVPR 2016 (HOG features of 256×256 images, 32×32×31).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ExtractionError(
            f"hog_torch takes a (N, C, H, W) tensor, got {got}; add a batch axis with "
            "images[None] and put channels first (images.permute(0, 3, 1, 2) for NHWC)"
        )
    if not images.is_floating_point():
        raise ExtractionError(
            f"hog_torch takes floating images in [0, 1], got dtype {images.dtype}; "
            "divide uint8 images by 255"
        )
    n, channels, height, width = images.shape
    if channels not in (1, 3):
        raise ExtractionError(
            f"hog_torch takes 1 (grey) or 3 (RGB) channels, got {channels} in shape "
            f"{tuple(images.shape)}; channels go in dim 1 (images.permute(0, 3, 1, 2) for NHWC)"
        )
    dim, h, w = output_shape(params, height, width)
    o = params.num_orientations
    x = images.to(torch.float32)
    plan = _plan(n, height, width, params, x.device)

    gx, gy, grad2 = _gradients(x)  # (N * P,) each
    with torch.no_grad():
        bins = _directed_bins(gx.detach(), gy.detach(), plan)  # (N * P,) int32
    if torch.is_grad_enabled() and gx.requires_grad:
        magnitude = _safe_sqrt(gx * gx + gy * gy)  # differentiable, ~1 ulp off on the CPU
    else:
        magnitude = _exact_sqrt(grad2)

    # bilinear votes: along x into (N, rows, 2O, w) with index_add, along y by row blocks;
    # every image alone in its matrix products, so that a batch gives its images' bytes
    c = params.cell_size
    index = plan.index + bins.mul_(w)  # (2, N * P)
    by_row = torch.zeros(n * (h + 1) * c * 2 * o * w, dtype=torch.float32, device=x.device)
    by_row.index_add_(0, index.view(-1), (plan.weight_x * magnitude).view(-1))  # autograd-safe
    blocks = _y_votes(plan.tent, by_row.view(n, h + 1, c, 2 * o * w))  # (N, h+1, 2, 2O w)
    hist = blocks[:, :-1, 0] + blocks[:, 1:, 1]  # (N, h, 2O * w)

    out = _block_normalise(hist.view(n, h, 2 * o, w), o).permute(0, 2, 1, 3)  # (N, 3O+4, h, w)
    assert out.shape == (n, dim, h, w), (out.shape, (n, dim, h, w))
    return out


def hog(images: np.ndarray, params: HogParams | None = None) -> np.ndarray:
    """UoCTTI HOG of a batch of images (numpy in, numpy out).

    Parameters
    ----------
    images : (N, H, W, 3), (N, H, W, 1) or (N, H, W) ndarray of uint8 or floating
        RGB or grey; uint8 is divided by 255, floating is taken to be in [0, 1].
    params : HogParams, optional
        Defaults to the paper's (cell size 8, 9 orientations).

    Returns
    -------
    (N, 3 * O + 4, h, w) ndarray of float32
        Channel-first, as :func:`hog_torch`.

    Notes
    -----
    Runs :func:`hog_torch` on the CPU without autograd, ``_CHUNK_IMAGES`` images at a time,
    with torch's current thread settings (they are not changed here). Where numba is
    installed (:func:`pipeline.features.base.kernel_backend`), the directed histograms come
    from a compiled kernel instead (:func:`_hog_numba`, the GIL released), with the same
    bytes; float images holding inf or NaN still take :func:`hog_torch`.
    """
    params = HogParams() if params is None else params
    images = np.asarray(images)
    _, height, width, channels = as_float_images(images[:0]).shape  # validates, converts nothing
    if channels not in (1, 3):
        raise ExtractionError(
            f"hog takes grey (N, H, W) / (N, H, W, 1) or RGB (N, H, W, 3) images, got shape "
            f"{images.shape}; drop an alpha channel with images[..., :3]"
        )
    out = np.empty((len(images), *output_shape(params, height, width)), np.float32)
    if (
        kernel_backend() == "numba"
        and (images.dtype == np.uint8 or np.isfinite(images).all())
        and _kernel_matches_torch()
    ):
        _hog_numba(images, params, out)
        return out
    with torch.no_grad():
        for start in range(0, len(images), _CHUNK_IMAGES):
            # converted chunk by chunk (it stays in cache)
            chunk = torch.from_numpy(_channels_first(images[start : start + _CHUNK_IMAGES]))
            out[start : start + _CHUNK_IMAGES] = hog_torch(chunk, params).numpy()
    return out


@functools.lru_cache(maxsize=1)
def _kernel_matches_torch() -> bool:
    """Whether the numba kernel gives :func:`hog_torch`'s bytes here (checked once a process).

    The kernel copies the order in which the torch path sums (``index_add_``, then the
    y-votes of :func:`_y_votes`: :mod:`._kernel`). Neither goes through a BLAS, so the order
    is the same on every CPU; another torch build could still change ``index_add_``'s, and a
    stored feature must not depend on the backend: two small batches are compared bit for
    bit, and on a difference the torch path is used from then on, with a warning.
    """
    rng = np.random.default_rng(0)
    params = HogParams()
    for shape in ((3, 40, 56, 3), (2, 12, 9, 3)):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        got = np.empty((shape[0], *output_shape(params, shape[1], shape[2])), np.float32)
        _hog_numba(images, params, got)
        with torch.no_grad():
            expected = hog_torch(torch.from_numpy(_channels_first(images)), params).numpy()
        if not np.array_equal(got, expected):
            warnings.warn(
                "hog: the numba kernel does not reproduce this torch build's sums bit for bit "
                f"(torch {torch.__version__}); using the torch path. Set INVERT_KERNELS=numpy "
                "to silence this",
                RuntimeWarning,
                stacklevel=3,
            )
            return False
    return True


def _hog_numba(images: np.ndarray, params: HogParams, out: np.ndarray) -> None:
    """:func:`hog`'s compiled path, ``_CHUNK_IMAGES`` at a time, into ``out``.

    The directed histograms come from :func:`._kernel.hog_hist` (gradients, bins and votes,
    with the GIL released); the block normalisation is torch's :func:`_block_normalise`, as
    in :func:`hog_torch`. Bit-identical to the torch path (``tests/test_hog_backends.py``).
    Float images holding inf or NaN take the torch path instead (see :func:`hog`).
    """
    o, c = params.num_orientations, params.cell_size
    _, h, w = output_shape(params, images.shape[1], images.shape[2])
    cos, sin = _orientation_tables(o)
    cell_x, weight_x = _axis_votes(images.shape[2], c, w)
    tent = _tent(images.shape[1], c, h)
    cells = cell_x.astype(np.int64)
    hist = np.empty((min(len(images), _CHUNK_IMAGES), h, 2 * o, w), np.float32)
    with torch.no_grad():
        for start in range(0, len(images), _CHUNK_IMAGES):
            planes = _channels_first(images[start : start + _CHUNK_IMAGES])  # (k, C, H, W)
            part = hist[: len(planes)]
            _kernel.hog_hist(planes, cos, sin, cells, weight_x, tent, part)  # (k, h, 2O, w)
            normalised = _block_normalise(torch.from_numpy(part), o)  # (k, h, 3O + 4, w)
            out[start : start + _CHUNK_IMAGES] = normalised.permute(0, 2, 1, 3).numpy()


@functools.lru_cache(maxsize=1)
def _level_table() -> np.ndarray:
    """``as_float_images`` of every uint8 level, ``(256,)`` float32 (``fl(v / 255)``)."""
    table = as_float_images(np.arange(256, dtype=np.uint8)[None, None])[0, 0, :, 0]
    table.setflags(write=False)
    return table


def _channels_first(images: np.ndarray) -> np.ndarray:
    """Images as contiguous channel planes in [0, 1], bit-identical to ``as_float_images``.

    Parameters
    ----------
    images : (n, H, W, C) or (n, H, W) ndarray of uint8 or floating

    Returns
    -------
    (n, C, H, W) ndarray of float32, C-contiguous
        Whole rows of one channel side by side: :func:`_gradients`' differences then read
        contiguous memory (~7% of HOG's time over a channels-first view of ``(n, H, W, C)``).
        uint8 goes through OpenCV's table look-up of :func:`_level_table`, one plane at a time.
    """
    if images.dtype != np.uint8:
        return np.ascontiguousarray(as_float_images(images).transpose(0, 3, 1, 2))
    x = images if images.ndim == 4 else images[..., None]  # (n, H, W, C)
    n, height, width, channels = x.shape
    out = np.empty((n, channels, height, width), np.float32)
    table = _level_table()
    for i in range(n):
        image = np.ascontiguousarray(x[i])
        planes = cv2.split(image) if channels > 1 else (image[..., 0],)
        for c, plane in enumerate(planes):
            cv2.LUT(plane, table, dst=out[i, c])
    return out


def hog_vlfeat(images: np.ndarray, params: HogParams | None = None) -> np.ndarray:
    """The reference: VLFeat's ``vl_hog`` through ``cyvlfeat``, one image at a time.

    Parameters
    ----------
    images : (N, H, W, 3), (N, H, W, 1) or (N, H, W) ndarray of uint8 or floating
    params : HogParams, optional

    Returns
    -------
    (N, 3 * O + 4, h, w) ndarray of float32
        The layout of :func:`hog`: cyvlfeat's ``(h, w, D)`` moved to ``(D, h, w)``.

    Raises
    ------
    ExtractionError
        ``cyvlfeat`` is not installed.
    """
    try:
        from cyvlfeat.hog import hog as cy_hog
    except ImportError as err:
        raise ExtractionError(
            "hog_vlfeat needs cyvlfeat: install Debian's libvlfeat-dev, then "
            "`pip install --no-build-isolation cython numpy cyvlfeat` (extra `vlfeat`)"
        ) from err
    params = HogParams() if params is None else params
    x = as_float_images(images)  # (N, H, W, C)
    out = np.empty((x.shape[0], *output_shape(params, x.shape[1], x.shape[2])), np.float32)
    for i, image in enumerate(x):
        # cyvlfeat moves channels first itself and returns (h, w, D), rows first
        feats = cy_hog(
            np.ascontiguousarray(image),
            params.cell_size,
            variant="UoCTTI",
            n_orientations=params.num_orientations,
        )
        out[i] = feats.transpose(2, 0, 1)
    return out


def _on_device(params: HogParams, device: Any, pretrained: bool = True) -> OnDevice:
    """HOG of (B, 3, H, W) uint8 batches computed where they are (differentiable)."""
    return OnDevice(lambda x: hog_torch(x.float() / 255.0, params))


EXTRACTOR = Extractor(
    name="hog",
    version=1,
    params_type=HogParams,
    compute=lambda images, p: hog(images, p),
    output_shape=output_shape,
    dims=("channel", "y", "x"),
    description="VLFeat UoCTTI HOG (vl_hog(im, 8)): 31 channels per 8x8-pixel cell",
    on_device=_on_device,
)
