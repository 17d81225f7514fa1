"""Tests of :mod:`pipeline.features.lbp` on photographs from ``skimage.data``.

Four kinds: parity with VLFeat's C code (``@pytest.mark.vlfeat``), properties, exact
equivariances under flips and rotations, and one ``pytest.raises`` per validation branch.
Every test runs on both backends (the numpy path, and the numba kernels where numba is
installed); ``tests/test_lbp_backends.py`` checks that the two give the same bytes.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import cv2
import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import resize

from pipeline.errors import ConfigError, ExtractionError
from pipeline.features import base
from pipeline.features import lbp as lbp_module
from pipeline.features.base import to_grey
from pipeline.features.lbp import (
    EXTRACTOR,
    N_BINS,
    LbpParams,
    find_libvl,
    lbp,
    lbp_vlfeat,
    output_shape,
    uniform_lbp_table,
)

#: float32 features: VLFeat sums float32 weights, we sum exact integers, then both round.
ATOL_FLOAT32 = 1e-5

needs_vlfeat = pytest.mark.skipif(
    find_libvl() is None,
    reason="VLFeat's libvl.so is not installed (apt-get install libvlfeat-dev)",
)

needs_numba = pytest.mark.skipif(
    not base.numba_available(),
    reason="numba is not installed: the numpy path runs, and its tests do (pip install numba)",
)


@pytest.fixture(autouse=True, params=["numpy", pytest.param("numba", marks=needs_numba)])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test on one backend (``INVERT_KERNELS``, read by ``lbp`` on every call)."""
    monkeypatch.setenv("INVERT_KERNELS", request.param)
    assert base.kernel_backend() == request.param
    return str(request.param)


COLOUR = ("astronaut", "coffee", "chelsea", "rocket")
GREY = ("camera", "coins")


def photo(name: str, height: int, width: int, *, top: int = 0, left: int = 0) -> np.ndarray:
    """A ``height`` x ``width`` crop of a skimage photograph, resized first if it is too small."""
    image = getattr(data, name)()
    if image.shape[0] < top + height or image.shape[1] < left + width:
        scale = max((top + height) / image.shape[0], (left + width) / image.shape[1])
        size = (int(np.ceil(image.shape[0] * scale)), int(np.ceil(image.shape[1] * scale)))
        image = (resize(image, size, anti_aliasing=True) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def batch(names: tuple[str, ...], height: int, width: int) -> np.ndarray:
    """``(N, height, width[, 3])`` uint8: the photographs, each cropped at its own offset."""
    return np.stack([photo(n, height, width, top=7 * i, left=11 * i) for i, n in enumerate(names)])


def downsized(names: tuple[str, ...], side: int) -> np.ndarray:
    """Whole photographs resized to ``side`` x ``side`` (the paper's 256x256 input)."""
    out = [
        (resize(getattr(data, n)(), (side, side), anti_aliasing=True) * 255).round() for n in names
    ]
    return np.stack(out).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Against VLFeat
# --------------------------------------------------------------------------------------------

SIZES = [(256, 256), (200, 300), (77, 131), (270, 250)]


@pytest.mark.vlfeat
@needs_vlfeat
@pytest.mark.parametrize(("height", "width"), SIZES)
def test_colour_matches_vlfeat(height: int, width: int) -> None:
    images = batch(COLOUR, height, width)
    ours, ref = lbp(images), lbp_vlfeat(images)
    assert ours.shape == ref.shape == (4, N_BINS, height // 16, width // 16)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=ATOL_FLOAT32)


@pytest.mark.vlfeat
@needs_vlfeat
def test_paper_input_matches_vlfeat() -> None:
    images = downsized(COLOUR, 256)
    np.testing.assert_allclose(lbp(images), lbp_vlfeat(images), rtol=0, atol=ATOL_FLOAT32)


@pytest.mark.vlfeat
@needs_vlfeat
@pytest.mark.parametrize(("height", "width"), SIZES)
def test_grey_matches_vlfeat(height: int, width: int) -> None:
    images = batch(GREY, height, width)  # (N, H, W) uint8
    np.testing.assert_allclose(lbp(images), lbp_vlfeat(images), rtol=0, atol=ATOL_FLOAT32)
    with_axis = images[..., None]  # (N, H, W, 1)
    np.testing.assert_allclose(lbp(with_axis), lbp_vlfeat(with_axis), rtol=0, atol=ATOL_FLOAT32)


@pytest.mark.vlfeat
@needs_vlfeat
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_input_matches_vlfeat(dtype: type) -> None:
    images: np.ndarray = (batch(COLOUR[:2], 96, 112) / 255).astype(dtype)
    np.testing.assert_allclose(lbp(images), lbp_vlfeat(images), rtol=0, atol=ATOL_FLOAT32)


@pytest.mark.vlfeat
@needs_vlfeat
@pytest.mark.parametrize("cell_size", [2, 3, 5, 8, 17, 32, 64])
def test_other_cell_sizes_match_vlfeat(cell_size: int) -> None:
    # 32 and 64 scatter two words (_Plan.t is None); odd cells have inexact float32 weights
    params = LbpParams(cell_size=cell_size)
    images = batch(("coffee", "chelsea"), 150, 190)
    ours, ref = lbp(images, params), lbp_vlfeat(images, params)
    assert ours.shape == ref.shape == (2, N_BINS, *(s // cell_size for s in (150, 190)))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=ATOL_FLOAT32)


@pytest.mark.vlfeat
@needs_vlfeat
def test_brightness_changed_image_matches_vlfeat() -> None:
    # x -> 0.5 x + 0.1 in float32 can merge neighbouring grey values into ties; whatever it
    # does to the codes, ours and VLFeat's must agree on the changed image
    images = (0.5 * (batch(COLOUR, 128, 128) / 255) + 0.1).astype(np.float32)
    np.testing.assert_allclose(lbp(images), lbp_vlfeat(images), rtol=0, atol=ATOL_FLOAT32)


@pytest.mark.vlfeat
@needs_vlfeat
def test_matlab_call_equals_row_major_call() -> None:
    # MATLAB's vl_lbp: column-major image, transposed = true; ours mirrors the row-major call
    images = batch(COLOUR[:2], 112, 160)
    np.testing.assert_allclose(
        lbp_vlfeat(images, transposed=True), lbp_vlfeat(images), rtol=0, atol=1e-6
    )


@pytest.mark.vlfeat
@needs_vlfeat
def test_tiny_images_match_vlfeat() -> None:
    # heights 2 and 3 with 2-pixel cells: no or one interior row
    params = LbpParams(cell_size=2)
    for height in (2, 3):
        images = batch(("camera",), height, 9)
        np.testing.assert_allclose(
            lbp(images, params), lbp_vlfeat(images, params), rtol=0, atol=ATOL_FLOAT32
        )


def test_missing_library_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lbp_module, "find_libvl", lambda: None)
    lbp_module._libvl.cache_clear()
    try:
        with pytest.raises(ExtractionError, match=r"libvl\.so was not found.*libvlfeat-dev"):
            lbp_vlfeat(batch(GREY[:1], 32, 32))
    finally:
        lbp_module._libvl.cache_clear()


def _fake_libvl(dimension: int, handle: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        vl_lbp_new=lambda kind, transposed: handle,
        vl_lbp_get_dimension=lambda h: dimension,
        vl_lbp_delete=lambda h: None,
    )


def test_wrong_vlfeat_build_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lbp_module, "_libvl", lambda: _fake_libvl(59, 1))
    with pytest.raises(ExtractionError, match="reports 59 LBP bins, expected 58"):
        lbp_vlfeat(batch(GREY[:1], 32, 32))


def test_failed_vlfeat_allocation_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lbp_module, "_libvl", lambda: _fake_libvl(58, 0))
    with pytest.raises(MemoryError, match="vl_lbp_new returned NULL"):
        lbp_vlfeat(batch(GREY[:1], 32, 32))


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


def test_paper_shape_and_extractor_record() -> None:
    images = downsized(COLOUR[:2], 256)
    features = EXTRACTOR.compute(images, LbpParams())
    assert features.shape == (2, 58, 16, 16)
    assert features.dtype == np.float32
    assert EXTRACTOR.output_shape(LbpParams(), 256, 256) == (58, 16, 16)
    assert output_shape(LbpParams(cell_size=8), 270, 250) == (58, 33, 31)
    assert EXTRACTOR.name == "lbp"
    assert EXTRACTOR.params_type is LbpParams
    assert EXTRACTOR.dims == ("channel", "y", "x")
    np.testing.assert_array_equal(features, lbp(images))


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_cells_are_unit_or_zero_and_non_negative(height: int, width: int) -> None:
    features = lbp(batch(COLOUR, height, width))
    assert np.isfinite(features).all()
    assert (features >= 0).all()
    norms = np.linalg.norm(features.astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=0, atol=1e-6)


def test_cells_without_votes_are_zero() -> None:
    # a 2-pixel-high image has no interior pixel; the third row of a 3-pixel one votes
    params = LbpParams(cell_size=2)
    assert not lbp(batch(GREY, 2, 40), params).any()
    norms = np.linalg.norm(lbp(batch(GREY, 3, 40), params), axis=1)
    assert norms[:, :, 0].min() > 0.99 and norms[:, :, -1].min() > 0.99  # edge cells vote too


def test_flat_image_votes_only_for_the_constant_bin() -> None:
    flat = np.full((1, 64, 80, 3), 200, dtype=np.uint8)
    features = lbp(flat)
    np.testing.assert_array_equal(features[:, 56], 1.0)
    assert not np.delete(features, 56, axis=1).any()


def test_uniform_table() -> None:
    table = uniform_lbp_table()
    counts = np.bincount(table, minlength=N_BINS)
    assert counts.size == N_BINS
    np.testing.assert_array_equal(counts[:56], 1)  # one code per uniform bin
    assert counts[56] == 2 and table[0x00] == table[0xFF] == 56
    assert counts[57] == 256 - 58
    for code in range(256):
        bits = [(code >> k) & 1 for k in range(8)]
        transitions = sum(bits[k] != bits[(k + 1) % 8] for k in range(8))
        if transitions == 2:
            start = next(k for k in range(8) if bits[k] and not bits[(k - 1) % 8])
            assert table[code] == 7 * start + sum(bits) - 1
        else:
            assert table[code] == (56 if transitions == 0 else 57)


def test_batch_equals_one_image_at_a_time() -> None:
    # 9 images: chunks of 4, 4 and 1 (lbp_module._CHUNK_PIXELS holds four 256x256 images)
    images = np.concatenate([downsized(COLOUR, 256), downsized(COLOUR, 256)[:, ::-1]])
    images = np.concatenate([images, downsized(("coffee",), 256)])
    together = lbp(images)
    for i, image in enumerate(images):
        np.testing.assert_array_equal(together[i], lbp(image[None])[0])


def test_uint8_and_float_input_agree_exactly() -> None:
    images = batch(COLOUR, 96, 128)
    np.testing.assert_array_equal(lbp(images), lbp(images.astype(np.float32) / 255))
    grey = batch(GREY, 96, 128)
    np.testing.assert_array_equal(lbp(grey), lbp(grey[..., None]))


def test_grey_is_bit_identical_to_to_grey_for_every_colour() -> None:
    levels = np.arange(256, dtype=np.uint8)
    for red in range(0, 256, 64):  # 2**24 colours in four slices of 64 x 256 x 256
        rgb = np.stack(np.meshgrid(levels[red : red + 64], levels, levels, indexing="ij"), -1)
        rgb = rgb.reshape(1, 64 * 256, 256, 3)
        np.testing.assert_array_equal(lbp_module._grey(rgb), to_grey(rgb).reshape(-1))
    grey = levels.reshape(1, 16, 16)
    np.testing.assert_array_equal(lbp_module._grey(grey), to_grey(grey).reshape(-1))


def test_invariant_to_exact_brightness_changes() -> None:
    colour = batch(COLOUR, 128, 144).astype(np.float32) / 255
    # halving is exact in float32, so every comparison is kept
    np.testing.assert_array_equal(lbp(colour), lbp(colour * np.float32(0.5)))
    # uint8 grey levels are 1/255 apart: 0.5 x + 0.1 keeps every comparison, ties included
    grey = batch(GREY, 128, 144)
    brighter = (0.5 * (grey / 255.0) + 0.1).astype(np.float32)
    np.testing.assert_array_equal(lbp(grey), lbp(brighter))


def test_leaves_thread_settings_alone() -> None:
    before = torch.get_num_threads(), cv2.getNumThreads()
    lbp(batch(COLOUR[:1], 64, 64))
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before


# --------------------------------------------------------------------------------------------
# Equivariances: a flip or rotation of the image permutes cells and bins, exactly
# --------------------------------------------------------------------------------------------


def _bin_permutation(move: Callable[[int, int], tuple[int, int]]) -> np.ndarray:
    """``perm[b]``: the bin that bin b becomes when neighbours move (dy, dx) -> move(dy, dx)."""
    neighbours = list(lbp_module._NEIGHBOURS)
    table = uniform_lbp_table()
    perm = np.full(N_BINS, -1)
    for code in range(256):
        moved = 0
        for k, (dy, dx) in enumerate(neighbours):
            if (code >> k) & 1:
                moved |= 1 << neighbours.index(move(dy, dx))
        old, new = table[code], table[moved]
        assert perm[old] in (-1, new), "a geometric move must map bins to bins"
        perm[old] = new
    assert sorted(perm) == list(range(N_BINS))
    return perm


EQUIVARIANCES = {
    # name: (image transform on (N, H, W[, C]), cell transform on (N, 58, h, w), neighbour move)
    "flip x": (lambda x: x[:, :, ::-1], lambda f: f[:, :, :, ::-1], lambda dy, dx: (dy, -dx)),
    "flip y": (lambda x: x[:, ::-1], lambda f: f[:, :, ::-1], lambda dy, dx: (-dy, dx)),
    "transpose": (
        lambda x: x.swapaxes(1, 2),
        lambda f: f.swapaxes(2, 3),
        lambda dy, dx: (dx, dy),
    ),
    "rotate 90": (
        lambda x: np.rot90(x, 1, axes=(1, 2)),
        lambda f: np.rot90(f, 1, axes=(2, 3)),
        lambda dy, dx: (-dx, dy),
    ),
}


@pytest.mark.parametrize("name", sorted(EQUIVARIANCES))
@pytest.mark.parametrize("cell_size", [16, 5])
def test_equivariant_to_flips_and_rotations(name: str, cell_size: int) -> None:
    # the cell grid is symmetric when the image is a whole number of cells
    side = 240 if cell_size == 16 else 235  # 15 and 47 cells
    transform_image, transform_cells, move = EQUIVARIANCES[name]
    images = downsized(COLOUR[:2], side)
    params = LbpParams(cell_size=cell_size)
    expected = transform_cells(lbp(images, params))[:, np.argsort(_bin_permutation(move))]
    moved = lbp(np.ascontiguousarray(transform_image(images)), params)
    np.testing.assert_array_equal(moved, expected)


# --------------------------------------------------------------------------------------------
# Validation: one pytest.raises per branch
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell_size", [1, 0, 257])
def test_cell_size_out_of_range(cell_size: int) -> None:
    with pytest.raises(ConfigError, match=r"cell_size must be in \[2, 256\].*cell_size=16"):
        LbpParams(cell_size=cell_size)


@pytest.mark.parametrize("cell_size", [16.0, True, "16"])
def test_cell_size_not_an_integer(cell_size: object) -> None:
    with pytest.raises(ConfigError, match=r"cell_size must be an integer.*cell_size=16"):
        LbpParams(cell_size=cell_size)  # type: ignore[arg-type]


def test_params_of_the_wrong_type() -> None:
    with pytest.raises(ConfigError, match=r"params must be an LbpParams.*LbpParams"):
        lbp(batch(GREY[:1], 32, 32), {"cell_size": 16})  # type: ignore[arg-type]


@pytest.mark.parametrize("function", [lbp, lbp_vlfeat])
def test_images_of_the_wrong_rank(function: Callable[..., np.ndarray]) -> None:
    with pytest.raises(ExtractionError, match=r"expected a batch.*image\[None\]"):
        function(photo("camera", 32, 32))  # (H, W): no batch axis


def test_image_smaller_than_a_cell() -> None:
    # a single (H, W, 3) image read as a batch of H images of width 3
    with pytest.raises(ExtractionError, match=r"holds no whole 16x16 cell.*image\[None\]"):
        lbp(photo("astronaut", 64, 64))
    with pytest.raises(ExtractionError, match="holds no whole 16x16 cell"):
        output_shape(LbpParams(), 15, 256)


def test_wrong_dtype() -> None:
    with pytest.raises(ExtractionError, match="expected uint8 or floating images"):
        lbp(batch(GREY[:1], 32, 32).astype(np.int16))
    with pytest.raises(ExtractionError, match="expected uint8 or floating images"):
        lbp(batch(GREY[:1], 32, 32).astype(np.int16)[:0])  # checked for an empty batch too


def test_wrong_channel_count() -> None:
    rgba = np.concatenate([batch(COLOUR[:1], 32, 32)] * 2, axis=-1)[..., :4]
    with pytest.raises(ExtractionError, match="expected 1 or 3 colour channels"):
        lbp(rgba)
