"""Metrics that see sharpness: SSIM [1] and the high-frequency power ratio.

The paper's normalised error [2] is a distance in pixel space, which a blurred
reconstruction minimises: the training-mean image, a smooth blob, scores about 0.8 on
photographs. The two measures here tell blur apart from detail, and are reported beside the
error for the decoders and for the trivial baselines (:func:`sharpness_metrics`, called by
:mod:`pipeline.evaluation` and :mod:`pipeline.baseline`):

- :func:`ssim`: the structural similarity index of Wang et al. [1], per image, with the
  paper's Gaussian window (11×11, σ = 1.5) and constants (K1 = 0.01, K2 = 0.03);
- :func:`high_frequency_ratio`: the power of the reconstructions above a cut-off frequency
  relative to their targets' (1 for identical images, below 1 for blurred ones, 0 for flat
  ones).

Both work on the grey (ITU-R BT.601 luma) image of RGB batches in [0, 1], the range of the
decoders' outputs and targets (:meth:`pipeline.evaluation.Decoded.decode`).

Public API: :data:`SSIM_WINDOW`, :data:`SSIM_SIGMA`, :data:`SSIM_K`, :data:`HF_CUTOFF`,
:func:`ssim`, :func:`high_frequency_ratio`, :func:`sharpness_metrics`.

References
----------
.. [1] Z. Wang, A. C. Bovik, H. R. Sheikh and E. P. Simoncelli, "Image Quality Assessment:
   From Error Visibility to Structural Similarity", IEEE Trans. Image Processing 13(4),
   2004.
.. [2] A. Dosovitskiy and T. Brox, "Inverting Visual Representations with Convolutional
   Networks", CVPR 2016.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pipeline.errors import ConfigError

__all__ = [
    "HF_CUTOFF",
    "SSIM_K",
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "high_frequency_ratio",
    "sharpness_metrics",
    "ssim",
]

#: side of [1]'s square Gaussian window (Sec. III-C: 11×11, circular-symmetric)
SSIM_WINDOW = 11
#: its standard deviation in pixels ([1], Sec. III-C)
SSIM_SIGMA = 1.5
#: [1]'s stabilising constants ``(K1, K2)``: ``C1 = (K1·L)²``, ``C2 = (K2·L)²`` (Sec. III-B)
SSIM_K = (0.01, 0.03)
#: frequencies above this fraction of Nyquist count as high in the evaluation metrics
HF_CUTOFF = 0.25
#: images per block in :func:`ssim` (bounds the memory of its five filtered maps)
_BLOCK = 16


def _check_rgb(*batches: np.ndarray) -> None:
    """Refuse batches that differ in shape or are not channel-last RGB ``(N, H, W, 3)``."""
    shapes = [b.shape for b in batches]
    if len(set(shapes)) != 1 or len(shapes[0]) != 4 or shapes[0][-1] != 3:
        raise ConfigError(
            "expected reconstructions and targets of one shape (N, S, S, 3), got "
            f"{' and '.join(str(s) for s in shapes)}; pass channel-last RGB batches"
        )


def _grey(images: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma ``(N, H, W)`` of RGB images ``(N, H, W, 3)``, float64."""
    return images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _window() -> np.ndarray:
    """[1]'s 1-D Gaussian ``(SSIM_WINDOW,)``, summing to 1; its outer product is the 2-D one."""
    r = np.arange(SSIM_WINDOW) - (SSIM_WINDOW - 1) / 2
    g = np.exp(-(r**2) / (2.0 * SSIM_SIGMA**2))
    return g / g.sum()


def _filter_valid(images: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local means ``(B, H - w + 1, W - w + 1)`` of ``(B, H, W)``.

    Only where the whole window fits in the image ("valid", as [1]'s MATLAB code filters):
    the window is separable, so rows then columns, each a sum of ``w`` shifted slices.
    """
    w = len(g)
    h, v = images.shape[1] - w + 1, images.shape[2] - w + 1
    rows = sum(g[k] * images[:, k : k + h, :] for k in range(w))  # (B, h, W)
    return np.asarray(sum(g[k] * rows[:, :, k : k + v] for k in range(w)))  # (B, h, v)


def ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity [1] of each pair of images, on their grey (luma) values.

    Parameters
    ----------
    x, y : (N, H, W, 3) ndarray
        Targets and reconstructions, RGB, same shape, values in ``[0, data_range]``;
        ``H, W >= SSIM_WINDOW``. The measure is symmetric in ``x`` and ``y``.
    data_range : float
        ``L`` in [1]'s constants: 1 for this project's images in [0, 1].

    Returns
    -------
    (N,) ndarray of float64
        The mean over each image of the SSIM map ([1], Eq. 13, with the Gaussian-weighted
        statistics of Eqs. 14–16): 1 for identical images, lower for blurred or noisy ones.

    Raises
    ------
    ConfigError
        For shapes that differ or are not ``(N, H, W, 3)``, images smaller than the window,
        or a ``data_range`` that is not positive.

    Notes
    -----
    As [1] specifies: 11×11 Gaussian window of σ = 1.5 normalised to sum 1, K1 = 0.01,
    K2 = 0.03, the map taken where the window fits inside the image and averaged (the
    "mean SSIM"). Departures: [1] works on 8-bit grey images and its MATLAB code
    downsamples large ones first; here the BT.601 luma of the RGB images is used at full
    resolution. Matches ``skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)`` on the luma (tests).
    """
    x, y = np.asarray(x), np.asarray(y)
    _check_rgb(x, y)
    if min(x.shape[1:3]) < SSIM_WINDOW:
        raise ConfigError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (its window), "
            f"got {x.shape[1]}x{x.shape[2]}"
        )
    if not data_range > 0:
        raise ConfigError(f"data_range must be the positive pixel range L, got {data_range}")
    c1 = (SSIM_K[0] * data_range) ** 2
    c2 = (SSIM_K[1] * data_range) ** 2
    g = _window()
    out = np.empty(len(x), dtype=np.float64)
    for i in range(0, len(x), _BLOCK):
        a, b = _grey(x[i : i + _BLOCK]), _grey(y[i : i + _BLOCK])  # (B, H, W)
        mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
        var_a = _filter_valid(a * a, g) - mu_a**2  # σ_x² (Eq. 15)
        var_b = _filter_valid(b * b, g) - mu_b**2
        cov = _filter_valid(a * b, g) - mu_a * mu_b  # σ_xy (Eq. 16)
        num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
        den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
        out[i : i + _BLOCK] = (num / den).mean(axis=(1, 2))
    return out


def _radial_power(grey: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum ``(S // 2 + 1,)`` of ``(N, S, S)``, batch-averaged.

    Ring ``k`` holds the frequencies of radius ``round(r · S)`` for ``r`` in cycles per
    pixel, so ring ``S // 2`` is the Nyquist frequency; the corners beyond it are dropped.
    """
    side = grey.shape[-1]
    power = (np.abs(np.fft.fft2(grey)) ** 2).mean(axis=0)  # (S, S)
    freq = np.fft.fftfreq(side)  # cycles per pixel, |f| <= 0.5
    radius = np.hypot(freq[:, None], freq[None, :])  # (S, S)
    ring = np.rint(radius * side).astype(np.int64)
    keep = ring <= side // 2
    totals = np.bincount(ring[keep], weights=power[keep], minlength=side // 2 + 1)
    counts = np.bincount(ring[keep], minlength=side // 2 + 1)
    return totals / np.maximum(counts, 1)


def high_frequency_ratio(recon: np.ndarray, target: np.ndarray, cutoff: float = HF_CUTOFF) -> float:
    """High-frequency power of reconstructions relative to their targets (sharpness).

    Parameters
    ----------
    recon, target : (N, S, S, 3) ndarray of float in [0, 1]
        Reconstructions and their targets, RGB, same shape.
    cutoff : float
        In ``(0, 1)``: frequencies above ``cutoff`` × Nyquist count as high.

    Returns
    -------
    float
        ``Σ_{k > cutoff·S/2} P_recon(k) / Σ_{k > cutoff·S/2} P_target(k)`` of the radially
        averaged power spectra of the grey (BT.601 luma) images, averaged over the batch: 1
        for identical images, below 1 for blurred reconstructions, 0 for flat ones.

    Raises
    ------
    ConfigError
        For shapes that differ or are not ``(N, S, S, 3)``, a cutoff outside ``(0, 1)``, or
        targets with no power above the cutoff.

    Notes
    -----
    A project metric, not one of [2]'s. The ratio is of the batch's mean power, not a mean
    of per-image ratios: one nearly flat target (a photograph of sky) would make its own
    ratio, and such a mean, as large as it likes.
    """
    recon, target = np.asarray(recon), np.asarray(target)
    _check_rgb(recon, target)
    if recon.shape[1] != recon.shape[2]:
        raise ConfigError(f"expected square images, got {recon.shape[1]}x{recon.shape[2]}")
    if not 0 < cutoff < 1:
        raise ConfigError(f"cutoff must be a fraction of Nyquist in (0, 1), got {cutoff}")
    side = recon.shape[1]
    high = np.arange(side // 2 + 1) > cutoff * (side // 2)  # rings above the cutoff
    p_recon = _radial_power(_grey(recon))[high].sum()
    p_target = _radial_power(_grey(target))[high].sum()
    if not p_target > 0:
        raise ConfigError(
            "the targets have no power above the cutoff (flat images?); lower cutoff or "
            "pass textured targets"
        )
    return float(p_recon / p_target)


def sharpness_metrics(
    targets: np.ndarray, predictions: Mapping[str, np.ndarray], cutoff: float = HF_CUTOFF
) -> dict[str, Any]:
    """Mean SSIM and high-frequency ratio of each set of predictions of the same targets.

    Parameters
    ----------
    targets : (N, S, S, 3) ndarray of float in [0, 1]
    predictions : mapping of str to (N, S, S, 3) ndarray of float in [0, 1]
        E.g. ``{"reconstructions": ..., "mean_image": ..., "nearest_neighbour": ...}``
        (a broadcast view is fine).
    cutoff : float
        :func:`high_frequency_ratio`'s.

    Returns
    -------
    dict
        ``{"images": N, "hf_cutoff": cutoff, NAME: {"ssim_gaussian": mean of :func:`ssim`,
        "hf_ratio": high_frequency_ratio}, ...}``, the names in ``predictions``' order.
    """
    out: dict[str, Any] = {"images": len(targets), "hf_cutoff": cutoff}
    for name, pred in predictions.items():
        out[name] = {
            "ssim_gaussian": float(np.mean(ssim(targets, pred))),
            "hf_ratio": high_frequency_ratio(pred, targets, cutoff),
        }
    return out
