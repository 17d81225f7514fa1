"""Parity with VLFeat against stored references, and the SIFT grid built by hand.

``tests/data/vlfeat_refs.npz`` holds VLFeat's HOG, LBP and SIFT of three photograph crops
(``scripts/make_vlfeat_refs.py``, which says how and with which versions). The project's
extractors are run through the registry the stages use (:func:`pipeline.features.compute`)
and compared with them at the live tests' tolerances, so that an install without VLFeat
(pip only, no cyvlfeat) still tests parity; where VLFeat is installed, the live tests in
``test_hog.py``, ``test_lbp.py`` and ``test_sift.py`` run as well, and one test here checks
that the stored file is still what VLFeat computes.

The SIFT grid (docs/method.md §2) is checked against a gridding written here from its
definition, not with the module's ``grid_from_keypoints``.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import features
from pipeline.features.sift import grid_from_keypoints
from tests.test_hog import ATOL_FLOAT32 as HOG_ATOL
from tests.test_lbp import ATOL_FLOAT32 as LBP_ATOL

ROOT = Path(__file__).resolve().parents[1]
REFS = ROOT / "tests" / "data" / "vlfeat_refs.npz"

#: SIFT grid channels after the 128 of the descriptor: x and y offset in the cell, log2
#: scale, orientation as a fraction of a turn, presence (docs/method.md §2).
X, Y, SCALE, ANGLE, PRESENT = 128, 129, 130, 131, 132
#: The live test's thresholds for the pip-only backend against VLFeat
#: (test_sift.test_opencv_backend_agrees_with_vlfeat): per image, then pooled.
MIN_RECALL, MIN_MEDIAN_COSINE, MIN_POOLED_RECALL = 0.9, 0.99, 0.97
#: ... and its match radius and scale tolerance (keypoint_agreement's defaults).
MAX_DISTANCE, MAX_SCALE_ERROR = 1.5, 0.2


@functools.cache
def refs() -> dict[str, np.ndarray]:
    with np.load(REFS) as stored:
        return {key: stored[key] for key in stored.files}


def sift_params(**change: Any) -> Any:
    """The stored references' SIFT settings, parsed as the ``extract.sift`` section is."""
    r = refs()
    section = {
        "cell_size": 4,
        "levels_per_octave": int(r["sift_levels_per_octave"]),
        "first_octave": int(r["sift_first_octave"]),
        "peak_threshold": float(r["sift_peak_threshold"]),
        "edge_threshold": float(r["sift_edge_threshold"]),
        **change,
    }
    return features.parse_params("sift", section)


def vlfeat_keypoints(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``i``'s stored VLFeat keypoints: ``(x, y, sigma, angle)`` frames, unit descriptors.

    cyvlfeat returns ``(y, x, sigma, angle)`` with the angle in ``(-pi, pi]`` and
    descriptors ``512 v``; the grid's conventions are x first, the angle in ``[0, 2 pi)``
    and ``v``.
    """
    r = refs()
    start, stop = np.concatenate([[0], np.cumsum(r["sift_counts"])])[i : i + 2]
    raw = r["sift_frames"][start:stop]  # (K, 4) float32
    angle = np.mod(raw[:, 3], np.float32(2 * np.pi))
    frames = np.stack([raw[:, 1], raw[:, 0], raw[:, 2], angle], axis=1)
    return frames, r["sift_descriptors"][start:stop] / np.float32(512)


def grid_by_hand(
    frames: np.ndarray, descriptors: np.ndarray, height: int, width: int, cell: int
) -> np.ndarray:
    """The grid of docs/method.md §2, one keypoint at a time.

    Pixel ``j`` covers ``[j - 0.5, j + 0.5)``; a keypoint goes to the whole cell holding its
    centre (none beyond the last whole cell); of several in one cell the largest sigma is
    kept, and of equal ones the first.

    Returns
    -------
    (133, height // cell, width // cell) ndarray of float32
    """
    rows, cols = height // cell, width // cell
    grid = np.zeros((133, rows, cols), np.float32)
    best_sigma: dict[tuple[int, int], float] = {}
    for (x, y, sigma, angle), descriptor in zip(frames.astype(np.float64), descriptors):
        u, v = (x + 0.5) / cell, (y + 0.5) / cell  # cell units, cell edges at integers
        col, row = int(np.floor(u)), int(np.floor(v))
        if not (0 <= row < rows and 0 <= col < cols):
            continue
        if best_sigma.get((row, col), -np.inf) >= sigma:
            continue  # a larger (or an equal, earlier) keypoint holds the cell
        best_sigma[row, col] = sigma
        grid[:128, row, col] = descriptor
        grid[X, row, col] = u - col
        grid[Y, row, col] = v - row
        grid[SCALE, row, col] = np.log2(sigma)
        grid[ANGLE, row, col] = (angle / (2 * np.pi)) % 1.0
        grid[PRESENT, row, col] = 1.0
    return grid


def assert_grids_equal(got: np.ndarray, expected: np.ndarray) -> None:
    """Descriptors and presence bit for bit, the 4 extra values to float32 rounding."""
    np.testing.assert_array_equal(got[PRESENT], expected[PRESENT])
    np.testing.assert_array_equal(got[:128], expected[:128])
    np.testing.assert_allclose(got[X:PRESENT], expected[X:PRESENT], rtol=0, atol=1e-6)


def grid_keypoints(grid: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """The keypoints a grid holds: ``(K, 4)`` ``(x, y, sigma, angle)`` and ``(K, 128)``."""
    rows, cols = np.nonzero(grid[PRESENT])
    x = (cols + grid[X, rows, cols].astype(np.float64)) * cell - 0.5
    y = (rows + grid[Y, rows, cols].astype(np.float64)) * cell - 0.5
    sigma = 2.0 ** grid[SCALE, rows, cols].astype(np.float64)
    angle = grid[ANGLE, rows, cols].astype(np.float64) * 2 * np.pi
    return np.stack([x, y, sigma, angle], axis=1), grid[:128, rows, cols].T


# --------------------------------------------------------------------------------------------
# The stored references
# --------------------------------------------------------------------------------------------


def test_references_are_the_papers_settings() -> None:
    r = refs()
    hog = features.parse_params("hog")
    assert (hog.cell_size, hog.num_orientations) == (r["hog_cell_size"], r["hog_num_orientations"])
    assert features.parse_params("lbp").cell_size == r["lbp_cell_size"]
    assert sift_params() == features.parse_params("sift", {"backend": "opencv"})
    assert r["images"].shape == (3, 100, 124, 3) and r["images"].dtype == np.uint8
    assert str(r["vlfeat_version"]) and str(r["cyvlfeat_version"])
    assert (r["sift_counts"] >= 10).all() and r["sift_counts"].sum() == len(r["sift_frames"])


@pytest.mark.vlfeat
def test_stored_references_are_what_vlfeat_computes() -> None:
    pytest.importorskip("cyvlfeat.hog", reason="cyvlfeat is not installed")
    spec = importlib.util.spec_from_file_location(
        "make_vlfeat_refs", ROOT / "scripts" / "make_vlfeat_refs.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    fresh = script.references()
    stored = refs()
    assert sorted(fresh) == sorted(stored)
    for key in ("images", "grey", "sift_counts", "sift_frames", "sift_descriptors", "lbp"):
        np.testing.assert_array_equal(fresh[key], stored[key], err_msg=key)
    np.testing.assert_allclose(fresh["hog"], stored["hog"], rtol=0, atol=HOG_ATOL)


# --------------------------------------------------------------------------------------------
# HOG and LBP: the extractors the stages run, against VLFeat's stored output
# --------------------------------------------------------------------------------------------


def test_hog_matches_stored_vlfeat() -> None:
    r = refs()
    params = features.parse_params(
        "hog",
        {"cell_size": int(r["hog_cell_size"]), "num_orientations": int(r["hog_num_orientations"])},
    )
    ours = features.compute("hog", r["images"], params, workers=1)
    assert ours.shape == r["hog"].shape == (3, 31, (100 + 4) // 8, (124 + 4) // 8)
    assert ours.dtype == r["hog"].dtype == np.float32
    np.testing.assert_allclose(ours, r["hog"], rtol=0, atol=HOG_ATOL)
    assert r["hog"].max() > 0.1  # photographs, not flat


def test_lbp_matches_stored_vlfeat() -> None:
    r = refs()
    params = features.parse_params("lbp", {"cell_size": int(r["lbp_cell_size"])})
    ours = features.compute("lbp", r["images"], params, workers=1)
    assert ours.shape == r["lbp"].shape == (3, 58, 100 // 16, 124 // 16)
    assert ours.dtype == r["lbp"].dtype == np.float32
    np.testing.assert_allclose(ours, r["lbp"], rtol=0, atol=LBP_ATOL)
    np.testing.assert_allclose(np.linalg.norm(r["lbp"], axis=1), 1.0, atol=1e-6)  # every cell votes


# --------------------------------------------------------------------------------------------
# SIFT: the grid of VLFeat's stored keypoints
# --------------------------------------------------------------------------------------------


def test_sift_opencv_backend_agrees_with_stored_vlfeat() -> None:
    """The pip-only backend against VLFeat's keypoints, on the grid the stages store.

    Every keypoint of the grid of VLFeat's keypoints must have a keypoint of our grid within
    1.5 pixels at a scale within 20 % (the nearest is its match), with the live test's
    recall and median descriptor cosine.
    """
    r = refs()
    params = sift_params()
    assert params.backend == "opencv"
    ours = features.compute("sift", r["images"], params, workers=1)
    assert ours.shape == (3, 133, 25, 31) and ours.dtype == np.float32
    found = total = 0
    for i in range(3):
        reference = grid_by_hand(*vlfeat_keypoints(i), 100, 124, 4)
        ref_frames, ref_desc = grid_keypoints(reference, 4)
        frames, desc = grid_keypoints(ours[i], 4)
        dist = np.hypot(*(ref_frames[:, None, :2] - frames[None, :, :2]).transpose(2, 0, 1))
        scale_ok = np.abs(frames[None, :, 2] / ref_frames[:, None, 2] - 1) <= MAX_SCALE_ERROR
        dist = np.where((dist <= MAX_DISTANCE) & scale_ok, dist, np.inf)  # (K_ref, K_ours)
        matched = np.isfinite(dist).any(axis=1)
        nearest = np.argmin(dist, axis=1)[matched]
        a, b = ref_desc[matched].astype(np.float64), desc[nearest].astype(np.float64)
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert matched.mean() >= MIN_RECALL, (i, matched.mean())
        assert np.median(cosine) >= MIN_MEDIAN_COSINE, (i, np.median(cosine))
        found += int(matched.sum())
        total += len(matched)
    assert found / total >= MIN_POOLED_RECALL


@pytest.mark.vlfeat
def test_sift_vlfeat_backend_equals_grid_of_stored_vlfeat() -> None:
    pytest.importorskip("cyvlfeat.sift", reason="cyvlfeat is not installed")
    r = refs()
    ours = features.compute("sift", r["images"], sift_params(backend="vlfeat"), workers=1)
    for i in range(3):
        assert_grids_equal(ours[i], grid_by_hand(*vlfeat_keypoints(i), 100, 124, 4))


# --------------------------------------------------------------------------------------------
# The module's gridding against keypoints made here, the expected grid written out
# --------------------------------------------------------------------------------------------


def test_grid_from_hand_made_keypoints() -> None:
    # a 14 x 17 image in 4-pixel cells: 3 rows (pixels 12, 13 left over), 4 columns (16)
    frames = np.array(
        [
            [5.0, 5.0, 2.0, 0.5],  # 0: cell (1, 1)
            [6.2, 4.0, 4.0, 3.0],  # 1: cell (1, 1), larger sigma: kept
            [4.4, 6.9, 1.0, 6.0],  # 2: cell (1, 1), smaller
            [-0.5, 0.0, 1.6, 6.2],  # 3: x = -0.5 is the left edge of cell (0, 0)
            [9.0, 1.0, 1.5, 1.0],  # 4: cell (0, 2)
            [9.0, 1.0, 1.5, 4.0],  # 5: the same keypoint, another orientation: 4 is kept
            [15.4, 11.4, 3.0, 2.0],  # 6: cell (2, 3), its last pixel
            [15.6, 5.0, 8.0, 2.0],  # 7: x + 0.5 = 16.1: column 4, not a whole cell: dropped
            [2.0, 11.6, 8.0, 2.0],  # 8: y + 0.5 = 12.1: row 3, dropped
        ],
        dtype=np.float32,
    )
    descriptors = np.zeros((9, 128), np.float32)
    descriptors[np.arange(9), np.arange(9)] = 1.0  # descriptor k: unit vector e_k
    descriptors[np.arange(9), 127 - np.arange(9)] = 0.25

    expected = np.zeros((133, 3, 4), np.float32)
    kept = {  # cell: (keypoint, x offset, y offset)
        (1, 1): (1, 6.7 / 4 - 1, 4.5 / 4 - 1),
        (0, 0): (3, 0.0, 0.5 / 4),
        (0, 2): (4, 9.5 / 4 - 2, 1.5 / 4),
        (2, 3): (6, 15.9 / 4 - 3, 11.9 / 4 - 2),
    }
    for (row, col), (k, dx, dy) in kept.items():
        sigma, angle = float(frames[k, 2]), float(frames[k, 3])
        expected[:128, row, col] = descriptors[k]
        expected[X:, row, col] = [dx, dy, np.log2(sigma), angle / (2 * np.pi), 1.0]

    grid = grid_from_keypoints(frames, descriptors, 14, 17, 4)
    assert grid.shape == (133, 3, 4) and grid.dtype == np.float32
    assert_grids_equal(grid, expected)
    # the hand gridding of this file agrees with the written-out grid as well
    assert_grids_equal(grid_by_hand(frames, descriptors, 14, 17, 4), expected)
    # the keypoints' order decides only ties: reversed, orientation 4.0 wins cell (0, 2)
    reversed_grid = grid_from_keypoints(frames[::-1], descriptors[::-1], 14, 17, 4)
    expected[:128, 0, 2] = descriptors[5]
    expected[ANGLE, 0, 2] = 4.0 / (2 * np.pi)
    assert_grids_equal(reversed_grid, expected)
