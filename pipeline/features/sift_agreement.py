"""How well one set of SIFT keypoints reproduces another (tests and benchmarks only).

:func:`keypoint_agreement` measures the ``"opencv"`` backend of :mod:`pipeline.features.sift`
against VLFeat's keypoints (``tests/test_sift.py``, ``benchmarks/sift_agreement.py``). No
stage runs it, so it lives outside the extractor module: editing it does not invalidate the
SIFT feature store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Agreement", "keypoint_agreement"]


@dataclass(frozen=True)
class Agreement:
    """How well a keypoint set reproduces a reference set (see :func:`keypoint_agreement`).

    Attributes
    ----------
    recall : float
        Fraction of reference keypoints with a match candidate (1.0 for an empty reference).
    median_cosine : float
        Median cosine similarity between the descriptors of matched pairs (nan if none).
    n_reference, n_found : int
        Number of reference keypoints, and of those with a match.
    """

    recall: float
    median_cosine: float
    n_reference: int
    n_found: int


def keypoint_agreement(
    reference_frames: np.ndarray,
    reference_descriptors: np.ndarray,
    frames: np.ndarray,
    descriptors: np.ndarray,
    *,
    max_distance: float = 1.5,
    max_scale_error: float = 0.2,
) -> Agreement:
    """Recall of reference keypoints and descriptor similarity of the matches.

    A reference keypoint is found where a keypoint of ``frames`` lies within
    ``max_distance`` pixels of it at a scale within ``max_scale_error`` (relative) of its
    own. Its match is the nearest such keypoint; between equally near ones (one keypoint
    with several orientations) the one of the closest orientation.

    Parameters
    ----------
    reference_frames : (K, 4) ndarray
        ``(x, y, sigma, angle)``, e.g. VLFeat's.
    reference_descriptors : (K, 128) ndarray
    frames : (M, 4) ndarray
    descriptors : (M, 128) ndarray
    max_distance : float
        Pixels; 1.5 by default.
    max_scale_error : float
        Relative scale difference ``|sigma - sigma_ref| / sigma_ref``; 0.2 by default.

    Returns
    -------
    Agreement
    """
    ref = np.asarray(reference_frames, dtype=np.float64).reshape(-1, 4)
    ours = np.asarray(frames, dtype=np.float64).reshape(-1, 4)
    if len(ref) == 0:
        return Agreement(1.0, float("nan"), 0, 0)
    if len(ours) == 0:
        return Agreement(0.0, float("nan"), len(ref), 0)
    dist = np.hypot(ref[:, None, 0] - ours[None, :, 0], ref[:, None, 1] - ours[None, :, 1])
    scale_ok = np.abs(ours[None, :, 2] - ref[:, None, 2]) <= max_scale_error * ref[:, None, 2]
    dist = np.where((dist <= max_distance) & scale_ok, dist, np.inf)  # (K, M) candidates
    found = np.isfinite(dist).any(axis=1)
    turn = np.angle(np.exp(1j * (ref[:, None, 3] - ours[None, :, 3])))
    nearest = dist == dist.min(axis=1, keepdims=True)
    match = np.argmin(np.where(nearest & np.isfinite(dist), np.abs(turn), np.inf), axis=1)
    a = np.asarray(reference_descriptors, dtype=np.float64)[found]
    b = np.asarray(descriptors, dtype=np.float64)[match[found]]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.einsum("ij,ij->i", a, b) / np.maximum(norms, np.finfo(np.float64).tiny)
    n_found = int(found.sum())
    median = float(np.median(cosine)) if n_found else float("nan")
    return Agreement(n_found / len(ref), median, len(ref), n_found)
