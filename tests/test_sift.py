"""Tests of the SIFT grid extractor (docs/method.md §2) on photographs from ``skimage.data``."""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np
import pytest
import skimage.data
from skimage.transform import resize

from pipeline.errors import ConfigError, ExtractionError
from pipeline.features import sift as sift_package
from pipeline.features.base import to_grey
from pipeline.features.sift import (
    EXTRACTOR,
    SIFT_CHANNELS,
    SiftParams,
    grid_from_keypoints,
    keypoints,
    output_shape,
    sift,
)
from pipeline.features.sift_agreement import keypoint_agreement

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")


@functools.cache
def photo(name: str, height: int = 256, width: int = 256) -> np.ndarray:
    """``skimage.data.<name>()`` resized to ``height`` x ``width``: RGB uint8 (H, W, 3)."""
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = resize(image[..., :3], (height, width), anti_aliasing=True, preserve_range=True)
    out = np.clip(np.round(image), 0, 255).astype(np.uint8)
    out.flags.writeable = False
    return out


def grey(name: str, height: int = 256, width: int = 256) -> np.ndarray:
    return to_grey(photo(name, height, width)[None])[0]


@pytest.fixture(scope="module")
def cy_sift() -> Any:
    module = pytest.importorskip(
        "cyvlfeat.sift",
        reason="cyvlfeat is not installed (Debian libvlfeat-dev + "
        "`pip install --no-build-isolation cyvlfeat`): VLFeat comparisons skipped",
    )
    return module.sift


# --- shape and the Extractor record ------------------------------------------------------------


def test_shape_and_dtype_for_256() -> None:
    batch = np.stack([photo("astronaut"), photo("coffee")])
    out = sift(batch)
    assert out.shape == (2, 133, 64, 64)
    assert out.dtype == np.float32
    assert output_shape(SiftParams(), 256, 256) == (133, 64, 64)
    assert np.isfinite(out).all()


@pytest.mark.parametrize(("height", "width", "cell"), [(190, 250, 4), (128, 96, 8), (64, 64, 1)])
def test_shape_for_other_sizes_and_cells(height: int, width: int, cell: int) -> None:
    params = SiftParams(cell_size=cell)
    out = sift(photo("chelsea", height, width)[None], params)
    assert out.shape == (1, *output_shape(params, height, width))
    assert out.shape[1:] == (SIFT_CHANNELS, height // cell, width // cell)


def test_extractor_record() -> None:
    assert EXTRACTOR.name == "sift"
    assert EXTRACTOR.params_type is SiftParams
    assert EXTRACTOR.dims == ("channel", "y", "x")
    assert EXTRACTOR.output_shape(SiftParams(), 256, 256) == (133, 64, 64)
    batch = photo("rocket")[None]
    np.testing.assert_array_equal(EXTRACTOR.compute(batch, SiftParams()), sift(batch))


def test_input_layouts_agree() -> None:
    rgb = photo("coffee", 128, 160)[None]  # (1, H, W, 3) uint8
    expected = sift(rgb)
    np.testing.assert_array_equal(sift(rgb.astype(np.float32) / 255), expected)
    grey_u8 = photo("camera", 128, 160)[None, ..., 0]  # grey photo, all channels equal
    np.testing.assert_array_equal(sift(grey_u8), sift(grey_u8[..., None]))


def test_batch_equals_one_image_at_a_time() -> None:
    # the opencv backend refines and orients the keypoints of several images at once
    images = np.stack([photo(name, 96, 112) for name in PHOTOS])  # one flat-ish: coins
    images = np.concatenate([images, images[:5]])  # 11: a batch of 8 and a short one of 3
    assert sift_package._BATCH_IMAGES < len(images) < 2 * sift_package._BATCH_IMAGES
    one_by_one = np.concatenate([sift(image[None]) for image in images])
    assert one_by_one[:, -1].any(axis=(1, 2)).all()  # every image has keypoints
    np.testing.assert_array_equal(sift(images), one_by_one)


# --- grid semantics ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_grid_semantics_on_real_keypoints(name: str) -> None:
    image = grey(name)
    frames, descriptors = keypoints(image)
    assert len(frames) > 100
    grid = sift(photo(name)[None])[0]
    cell = 4
    cx = np.floor((frames[:, 0] + 0.5) / cell).astype(int)
    cy = np.floor((frames[:, 1] + 0.5) / cell).astype(int)
    occupied = np.zeros((64, 64), dtype=bool)
    occupied[cy, cx] = True
    # The presence flag marks exactly the cells holding a keypoint centre.
    np.testing.assert_array_equal(grid[132] == 1, occupied)
    np.testing.assert_array_equal(grid[:, ~occupied], 0)
    for row, col in zip(*np.nonzero(occupied)):
        inside = np.nonzero((cy == row) & (cx == col))[0]
        best = inside[np.argmax(frames[inside, 2])]  # first of the largest sigma
        np.testing.assert_array_equal(grid[:128, row, col], descriptors[best])
        x, y, sigma, angle = frames[best].astype(np.float64)
        np.testing.assert_allclose(grid[128, row, col], (x + 0.5) / cell - col, atol=1e-5)
        np.testing.assert_allclose(grid[129, row, col], (y + 0.5) / cell - row, atol=1e-5)
        np.testing.assert_allclose(grid[130, row, col], np.log2(sigma), rtol=1e-6)
        np.testing.assert_allclose(grid[131, row, col], angle / (2 * np.pi), atol=1e-6)
    extras = grid[128:132, occupied]
    assert ((extras[:2] >= 0) & (extras[:2] < 1)).all()
    assert ((extras[3] >= 0) & (extras[3] < 1)).all()


def test_largest_scale_wins_and_ties_keep_the_first() -> None:
    rng = np.random.default_rng(0)
    descriptors = rng.random((5, 128)).astype(np.float32)
    frames = np.array(
        [
            [5.0, 5.0, 2.0, 0.1],  # cell (1, 1)
            [6.2, 4.0, 3.5, 0.2],  # cell (1, 1), larger scale: kept
            [4.0, 6.1, 1.0, 0.3],  # cell (1, 1)
            [13.0, 1.0, 2.0, 1.0],  # cell (0, 3), first of a tie: kept
            [13.0, 1.0, 2.0, 4.0],  # cell (0, 3), same keypoint, other orientation
        ],
        dtype=np.float32,
    )
    grid = grid_from_keypoints(frames, descriptors, 16, 16, 4)
    assert grid.shape == (133, 4, 4)
    assert set(zip(*np.nonzero(grid[132]))) == {(1, 1), (0, 3)}
    np.testing.assert_array_equal(grid[:128, 1, 1], descriptors[1])
    np.testing.assert_array_equal(grid[:128, 0, 3], descriptors[3])
    np.testing.assert_allclose(
        grid[128:132, 1, 1], [6.7 / 4 - 1, 4.5 / 4 - 1, np.log2(3.5), 0.2 / (2 * np.pi)], rtol=1e-6
    )
    np.testing.assert_allclose(grid[131, 0, 3], 1.0 / (2 * np.pi), rtol=1e-6)


def test_cell_edges_and_keypoints_outside_the_grid() -> None:
    descriptors = np.ones((4, 128), dtype=np.float32)
    frames = np.array(
        [
            [3.49, 0.0, 2.0, 0.0],  # pixel 3 -> cell 0 (covers x in [-0.5, 3.5))
            [3.5, 0.0, 2.0, 0.0],  # cell 1
            [9.0, 0.0, 2.0, 0.0],  # column 9 of a 10 px wide image: beyond the 2 whole cells
            [0.0, 8.2, 2.0, 0.0],  # row 8 of a 9 px high image: beyond the 2 whole cells
        ],
        dtype=np.float32,
    )
    grid = grid_from_keypoints(frames, descriptors, 9, 10, 4)
    assert grid.shape == (133, 2, 2)
    np.testing.assert_array_equal(grid[132], [[1, 1], [0, 0]])
    np.testing.assert_allclose(grid[128, 0, :], [3.99 / 4, 0.0], atol=1e-6)


def test_no_keypoints_gives_zero_grid() -> None:
    grid = grid_from_keypoints(np.zeros((0, 4)), np.zeros((0, 128)), 32, 32, 4)
    assert grid.shape == (133, 8, 8)
    assert not grid.any()


@pytest.mark.parametrize("value", [0, 128, 255])
def test_flat_image_gives_zero_grid(value: int) -> None:
    flat = np.full((2, 64, 96, 3), value, dtype=np.uint8)
    out = sift(flat)
    assert out.shape == (2, 133, 16, 24)
    assert not out.any()
    frames, descriptors = keypoints(np.full((64, 96), value / 255, dtype=np.float32))
    assert frames.shape == (0, 4)
    assert descriptors.shape == (0, 128)


# --- keypoint conventions ----------------------------------------------------------------------


def test_descriptors_are_unit_vectors() -> None:
    frames, descriptors = keypoints(grey("chelsea"))
    assert frames.dtype == descriptors.dtype == np.float32
    assert descriptors.shape == (len(frames), 128)
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=0.01)
    assert (descriptors >= 0).all()
    assert (descriptors <= 0.5).all()


def test_frames_lie_inside_the_image() -> None:
    image = grey("rocket", 120, 300)  # non-square: catches an (x, y) swap
    frames, _ = keypoints(image)
    x, y, sigma, angle = frames.T
    assert (x >= 0).all() and (x <= 299).all() and x.max() > 120
    assert (y >= 0).all() and (y <= 119).all()
    assert (sigma > 1.5).all()
    assert (angle >= 0).all() and (angle < 2 * np.pi).all()


@pytest.mark.parametrize("backend", ["opencv", pytest.param("vlfeat", marks=pytest.mark.vlfeat)])
def test_transposed_image_gives_transposed_frames(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """Transposing the image swaps x and y and mirrors angles: theta -> pi/2 - theta."""
    if backend == "vlfeat":
        request.getfixturevalue("cy_sift")  # skips without cyvlfeat
    params = SiftParams(backend=backend)
    image = grey("coffee", 200, 256)
    frames, descriptors = keypoints(image, params)
    frames_t, descriptors_t = keypoints(np.ascontiguousarray(image.T), params)
    mirrored = frames_t[:, [1, 0, 2, 3]].copy()
    mirrored[:, 3] = np.mod(np.pi / 2 - mirrored[:, 3], 2 * np.pi)
    agreement = keypoint_agreement(
        frames, descriptors, mirrored, descriptors_t, max_distance=0.1, max_scale_error=0.01
    )
    assert agreement.recall > 0.9
    # Orientations mirror too: each keypoint has a counterpart at the mirrored angle.
    same_place = np.hypot(*(frames[:, None, :2] - mirrored[None, :, :2]).transpose(2, 0, 1)) < 0.1
    turn = np.abs(np.angle(np.exp(1j * (frames[:, None, 3] - mirrored[None, :, 3]))))
    closest = np.where(same_place, turn, np.inf).min(axis=1)
    assert np.mean(closest < 0.01) > 0.9


# --- agreement with VLFeat ---------------------------------------------------------------------


@pytest.mark.vlfeat
@pytest.mark.parametrize(("height", "width"), [(256, 256), (192, 320)])
def test_opencv_backend_agrees_with_vlfeat(cy_sift: Any, height: int, width: int) -> None:
    # Measured (benchmarks/sift_agreement.py, 12 photos at 256 px): recall 0.999, cosine 0.998.
    found = total = 0
    for name in PHOTOS:
        image = grey(name, height, width)
        reference = keypoints(image, SiftParams(backend="vlfeat"))
        agreement = keypoint_agreement(*reference, *keypoints(image))
        assert agreement.recall >= 0.9, name
        assert agreement.median_cosine >= 0.99, name
        found += agreement.n_found
        total += agreement.n_reference
    assert found / total >= 0.97


@pytest.mark.vlfeat
@pytest.mark.parametrize(
    "change",
    [
        {"first_octave": -1},
        {"first_octave": 1},
        {"levels_per_octave": 4},
        {"peak_threshold": 0.01},
        {"edge_threshold": 3.0},
    ],
)
def test_opencv_backend_follows_the_parameters(cy_sift: Any, change: dict[str, Any]) -> None:
    for name in PHOTOS[:3]:
        image = grey(name)
        reference = keypoints(image, SiftParams(backend="vlfeat", **change))
        agreement = keypoint_agreement(*reference, *keypoints(image, SiftParams(**change)))
        assert agreement.recall >= 0.95, name
        assert agreement.median_cosine >= 0.99, name


@pytest.mark.vlfeat
def test_vlfeat_frames_are_x_then_y(cy_sift: Any) -> None:
    image = grey("rocket", 120, 300)
    raw = cy_sift(image, compute_descriptor=False)
    frames, _ = keypoints(image, SiftParams(backend="vlfeat"))
    np.testing.assert_array_equal(frames[:, 0], raw[:, 1])
    np.testing.assert_array_equal(frames[:, 1], raw[:, 0])
    assert frames[:, 0].max() > 120


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cell_size": 0}, "cell_size must be an integer >= 1"),
        ({"cell_size": 4.0}, "cell_size must be an integer"),
        ({"cell_size": True}, "cell_size must be an integer"),
        ({"backend": "sklearn"}, "backend must be one of 'opencv', 'vlfeat'"),
        ({"peak_threshold": -0.1}, "peak_threshold must be a finite number >= 0"),
        ({"peak_threshold": float("nan")}, "peak_threshold must be a finite number"),
        ({"peak_threshold": "0"}, "peak_threshold must be a finite number"),
        ({"edge_threshold": 0.5}, "edge_threshold must be a finite number >= 1"),
        ({"edge_threshold": float("inf")}, "edge_threshold must be a finite number"),
        ({"levels_per_octave": 0}, "levels_per_octave must be an integer >= 1"),
        ({"first_octave": -2}, "first_octave must be an integer >= -1"),
        ({"first_octave": 0.5}, "first_octave must be an integer"),
    ],
)
def test_params_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SiftParams(**kwargs)


def test_images_smaller_than_a_cell() -> None:
    with pytest.raises(ExtractionError, match="hold no whole 8x8 cell"):
        sift(np.zeros((1, 6, 64), dtype=np.uint8), SiftParams(cell_size=8))


def test_keypoints_input_validation() -> None:
    with pytest.raises(ExtractionError, match="one grey image"):
        keypoints(np.zeros((1, 32, 32), dtype=np.float32))
    with pytest.raises(ExtractionError, match="expects a float image"):
        keypoints(np.zeros((32, 32), dtype=np.uint8))


def test_sift_input_validation() -> None:
    with pytest.raises(ExtractionError, match="expected 1 or 3 colour channels"):
        sift(np.zeros((1, 32, 32, 2), dtype=np.uint8))
    with pytest.raises(ExtractionError, match="add a leading batch axis"):
        sift(np.zeros((32, 32, 3, 1, 1), dtype=np.uint8))


def test_grid_input_validation() -> None:
    with pytest.raises(ExtractionError, match=r"frames must have shape \(K, 4\)"):
        grid_from_keypoints(np.zeros((3, 3)), np.zeros((3, 128)), 16, 16, 4)
    with pytest.raises(ExtractionError, match=r"descriptors must have shape \(3, 128\)"):
        grid_from_keypoints(np.zeros((3, 4)), np.zeros((2, 128)), 16, 16, 4)
    with pytest.raises(ConfigError, match="cell_size must be an integer >= 1"):
        grid_from_keypoints(np.zeros((0, 4)), np.zeros((0, 128)), 16, 16, 0)


def test_vlfeat_backend_without_cyvlfeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cyvlfeat.sift", None)  # makes the import fail
    with pytest.raises(ConfigError, match="backend='vlfeat' needs cyvlfeat"):
        keypoints(grey("camera", 64, 64), SiftParams(backend="vlfeat"))
