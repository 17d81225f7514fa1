"""The SIFT backends: the numba kernels give the numpy path's bytes; the fallback.

The ``"opencv"`` SIFT backend runs compiled kernels (:mod:`pipeline.features.sift._kernel`:
the DoG extrema, the quadratic refinement, the orientation histograms) where numba is
installed, and its numpy code elsewhere, with ``INVERT_KERNELS=numpy``, or on images holding
non-finite or huge values (:func:`pipeline.features.base.kernel_backend`). The stored feature
bytes must not depend on which.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from pipeline.errors import ConfigError, ExtractionError
from pipeline.features import base
from pipeline.features.base import to_grey
from pipeline.features.sift import (
    SiftParams,
    _kernel,
    detector,
    grid_from_keypoints,
    keypoints,
    sift,
)
from tests.test_lbp import needs_numba
from tests.test_sift import PHOTOS, grey, photo


def _crops() -> list[tuple[str, np.ndarray]]:
    """Photographs, random crops of odd sizes, grey and colour, flat and tiny images."""
    rng = np.random.default_rng(14)
    cases = [(f"{name} 256", photo(name)[None]) for name in PHOTOS]
    cases.append(("four photos", np.stack([photo(name, 128, 160) for name in PHOTOS[:4]])))
    for name in ("astronaut", "camera", "brick", "grass", "text", "moon"):
        image = getattr(data, name)()
        height, width = int(rng.integers(24, 200)), int(rng.integers(24, 200))
        top = int(rng.integers(0, image.shape[0] - height + 1))
        left = int(rng.integers(0, image.shape[1] - width + 1))
        cases.append(
            (f"{name} {height}x{width} crop", image[None, top : top + height, left:][:, :, :width])
        )
    flat = np.full((2, 64, 64, 3), 128, dtype=np.uint8)
    edge = flat.copy()
    edge[:, :, 32:] = 255
    cases += [
        ("constant", flat),
        ("one edge", edge),
        ("tiny", photo("coffee", 8, 12)[None]),
        ("few grey levels", rng.integers(0, 3, (2, 48, 40), dtype=np.uint8) * 100),  # many ties
        ("noise", rng.integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)),
    ]
    return cases


def _both(images: np.ndarray, params: SiftParams, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVERT_KERNELS", "numpy")
    reference = sift(images, params)
    monkeypatch.setenv("INVERT_KERNELS", "numba")
    got = sift(images, params)
    assert got.dtype == reference.dtype == np.float32
    assert np.array_equal(got, reference), f"{images.shape} {params}"


@needs_numba
@pytest.mark.parametrize(
    "params",
    [
        SiftParams(),
        SiftParams(first_octave=-1, levels_per_octave=4),
        SiftParams(first_octave=1, peak_threshold=0.01, edge_threshold=3.0, cell_size=2),
    ],
    ids=["paper", "octave -1, 4 levels", "octave 1, thresholds"],
)
def test_sift_grid_is_bit_identical(params: SiftParams, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, images in _crops():
        if min(images.shape[1:3]) >= params.cell_size:
            _both(images, params, monkeypatch)
            assert name  # the case's name shows in the traceback


@needs_numba
def test_frames_and_descriptors_are_bit_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PHOTOS:
        image = grey(name)
        monkeypatch.setenv("INVERT_KERNELS", "numpy")
        frames, descriptors = keypoints(image)
        monkeypatch.setenv("INVERT_KERNELS", "numba")
        got_frames, got_descriptors = keypoints(image)
        assert len(frames) > 100, name  # a photograph has keypoints to compare
        np.testing.assert_array_equal(got_frames, frames)
        np.testing.assert_array_equal(got_descriptors, descriptors)


@needs_numba
def test_large_finite_values_take_the_kernels_with_the_same_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = grey("camera", 96, 96).copy()
    image[40, 40], image[60, 10] = 1e17, -3.0  # inside MAX_ABS: the kernels run
    calls = []
    kernel = _kernel.orientation_histograms
    monkeypatch.setattr(
        _kernel, "orientation_histograms", lambda *args: calls.append(1) or kernel(*args)
    )
    monkeypatch.setenv("INVERT_KERNELS", "numpy")
    expected = keypoints(image)
    assert not calls
    monkeypatch.setenv("INVERT_KERNELS", "numba")
    got = keypoints(image)
    assert calls
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def _refuse(*args: object) -> None:
    raise AssertionError("a numba kernel was called")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy warns of NaN / inf arithmetic
@pytest.mark.parametrize("value", [np.nan, np.inf, 1e20])
def test_non_finite_or_huge_images_take_the_numpy_path(
    value: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = grey("coffee", 64, 64).copy()
    image[20:24, 30:33] = value
    monkeypatch.setenv("INVERT_KERNELS", "numpy")
    expected = keypoints(image)
    monkeypatch.setenv("INVERT_KERNELS", "auto")
    for name in ("extrema", "refine", "orientation_histograms"):
        monkeypatch.setattr(_kernel, name, _refuse)
    got = keypoints(image)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@needs_numba
def test_extrema_kernel_on_ties_and_thresholds() -> None:
    rng = np.random.default_rng(3)
    for levels in (2, 3, 6):  # few values: many ties with the 26 neighbours
        dog = (rng.integers(-levels, levels + 1, (5, 31, 47)) / levels).astype(np.float32)
        dog[:, 10] = -0.0  # signed zeros compare equal
        for threshold in (0.0, 0.3, 1.0):
            expected = detector._extrema(dog, threshold)
            got = detector._extrema(dog, threshold, compiled=True)
            assert len(expected[0]) > 0 or threshold == 1.0
            for a, b in zip(got, expected, strict=True):
                assert a.dtype == b.dtype == np.int64
                np.testing.assert_array_equal(a, b)


@needs_numba
@pytest.mark.parametrize("params", [SiftParams(), SiftParams(first_octave=-1, edge_threshold=3.0)])
def test_refine_kernel_gives_the_same_float64_fits(params: SiftParams) -> None:
    # _refine's float64 outputs (x + offset, ...) show any difference in the fits' roundings
    octaves = [oc for name in PHOTOS for oc in detector._scale_space(grey(name, 128, 128), params)]
    flat = np.concatenate([(oc.gss[1:] - oc.gss[:-1]).ravel() for oc in octaves])
    dogs, used = [], 0
    for oc in octaves:
        shape = (len(oc.gss) - 1, *oc.gss.shape[1:])
        dogs.append(flat[used : used + int(np.prod(shape))].reshape(shape))
        used += dogs[-1].size
    found = [detector._extrema(dog, params.peak_threshold) for dog in dogs]
    expected = detector._refine(flat, dogs, found, params)
    got = detector._refine(flat, dogs, found, params, compiled=True)
    assert len(expected[0]) > 200
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@needs_numba
def test_orientation_votes_at_the_image_border() -> None:
    # keypoints near and on every border, windows larger than the level, several radii
    rng = np.random.default_rng(7)
    h, w = 23, 17
    # magnitudes over 2^60: the float64 sums round, so their order shows in the bits
    level = (rng.random((2, h, w)) * 2.0 ** rng.integers(-30, 30, (2, h, w))).astype(np.float32)
    level[1, :, 5] = level[1, :, 4]  # zero gradients: the magnitude threshold
    n = 200
    x, y = rng.uniform(-0.49, w - 0.51, n), rng.uniform(-0.49, h - 0.51, n)
    sigma_w = rng.uniform(0.2, 9.0, n)
    radius = np.maximum(np.floor(3.0 * sigma_w), 1).astype(np.int64)
    xi, yi = (x + 0.5).astype(np.int64), (y + 0.5).astype(np.int64)
    table = detector._expn_table().astype(np.float32)
    args = (
        level.ravel(),
        rng.integers(0, 2, n) * h * w,
        np.full(n, h),
        np.full(n, w),
        xi,
        yi,
        (xi - x).astype(np.float32),
        (yi - y).astype(np.float32),
        (256 / 25.0 / (2 * sigma_w**2)).astype(np.float32),
        radius,
        table,
        np.diff(table, append=table[-1:]),
    )
    expected = detector._orientation_votes_numpy(*args)
    got = np.full((n, 36), np.nan)
    _kernel.orientation_histograms(*args, got)
    assert (expected > 0).sum() > n
    np.testing.assert_array_equal(got, expected)


def test_fallback_without_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    images = np.stack([photo("astronaut", 96, 128), photo("coins", 96, 128)])
    monkeypatch.setenv("INVERT_KERNELS", "numpy")
    expected = sift(images)
    monkeypatch.delenv("INVERT_KERNELS", raising=False)
    monkeypatch.setattr(base, "_import_numba", lambda: None)  # as if `import numba` failed
    for name in ("extrema", "refine", "orientation_histograms"):
        monkeypatch.setattr(_kernel, name, _refuse)
    assert base.kernel_backend() == "numpy"
    np.testing.assert_array_equal(sift(images), expected)
    np.testing.assert_array_equal(sift(to_grey(images)), expected)
    assert expected[:, -1].sum() > 100  # keypoints were compared
    monkeypatch.setenv("INVERT_KERNELS", "numba")
    with pytest.raises(ConfigError, match="numba is not installed"):
        sift(images)


def test_grid_filled_in_place_equals_a_new_grid() -> None:
    # sift() fills its output in place (out=); the grid must be the one returned without it
    frames, descriptors = keypoints(grey("chelsea", 64, 80))
    expected = grid_from_keypoints(frames, descriptors, 64, 80, 4)
    out = np.zeros((2, *expected.shape), dtype=np.float32)
    grid_from_keypoints(frames, descriptors, 64, 80, 4, out=out[1])
    np.testing.assert_array_equal(out[1], expected)
    assert not out[0].any()
    assert expected[-1].sum() > 20
    with pytest.raises(ExtractionError, match="out must be a float32 array of shape"):
        grid_from_keypoints(frames, descriptors, 64, 80, 4, out=out[1, :, :-1])
