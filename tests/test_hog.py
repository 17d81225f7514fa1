"""Tests of :mod:`pipeline.features.hog` on photographs from ``skimage.data``.

Four kinds: parity with VLFeat's ``vl_hog`` through cyvlfeat (``@pytest.mark.vlfeat``),
properties, an exact equivariance (180° rotation) and gradients, and one ``pytest.raises``
per validation branch. Every test runs on both backends of :func:`hog` (the torch path, and
the numba kernel where numba is installed); ``tests/test_hog_backends.py`` checks that the
two give the same bytes.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import resize

from pipeline.errors import ConfigError, ExtractionError
from pipeline.features import base
from pipeline.features import hog as hog_module
from pipeline.features.hog import (
    EXTRACTOR,
    HogParams,
    hog,
    hog_torch,
    hog_vlfeat,
    output_shape,
)

#: (cell_size, num_orientations) besides the paper's: 2..12 orientations (odd O have mirrored
#: float tables, whose products are shared; even O do not); 72 > _FAST_MAX_ORIENTATIONS takes
#: the exact scores for every pixel; odd and non-power-of-two cells have inexact float32
#: vote weights.
OTHER_PARAMS = [(8, 2), (8, 3), (8, 4), (8, 6), (8, 7), (8, 10), (8, 12), (8, 72)]
OTHER_PARAMS += [(3, 9), (4, 5), (5, 9), (6, 9), (16, 9)]

#: Features are float32 in [0, 0.43]; ours and VLFeat's sum the same float32 votes in another
#: order and VLFeat normalises in double: a few float32 roundings apart (1.8e-7 observed).
ATOL_FLOAT32 = 1e-6

COLOUR = ("astronaut", "coffee", "chelsea", "rocket")
GREY = ("camera", "coins")

needs_numba = pytest.mark.skipif(
    not base.numba_available(),
    reason="numba is not installed: the torch path runs, and its tests do (pip install numba)",
)


@pytest.fixture(autouse=True, params=["numpy", pytest.param("numba", marks=needs_numba)])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test on one backend (``INVERT_KERNELS``, read by ``hog`` on every call)."""
    monkeypatch.setenv("INVERT_KERNELS", request.param)
    assert base.kernel_backend() == request.param
    return str(request.param)


def needs_cyvlfeat() -> None:
    pytest.importorskip(
        "cyvlfeat.hog",
        reason="cyvlfeat is not installed (apt-get install libvlfeat-dev, then "
        "pip install --no-build-isolation cython numpy cyvlfeat)",
    )


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
    return np.stack([photo(n, height, width, top=13 * i, left=29 * i) for i, n in enumerate(names)])


def downsized(names: tuple[str, ...], side: int) -> np.ndarray:
    """Whole photographs resized to ``side`` x ``side``, float64 in [0, 1] (not quantised)."""
    return np.stack([resize(getattr(data, n)(), (side, side), anti_aliasing=True) for n in names])


# --------------------------------------------------------------------------------------------
# Against VLFeat
# --------------------------------------------------------------------------------------------

SIZES = [(256, 256), (200, 320), (77, 131), (45, 63)]


@pytest.mark.vlfeat
@pytest.mark.parametrize(("height", "width"), SIZES)
def test_colour_matches_vlfeat(height: int, width: int) -> None:
    needs_cyvlfeat()
    images = batch(COLOUR, height, width)
    ours, ref = hog(images), hog_vlfeat(images)
    assert ours.shape == ref.shape == (4, 31, (height + 4) // 8, (width + 4) // 8)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=ATOL_FLOAT32)


@pytest.mark.vlfeat
@pytest.mark.parametrize(("height", "width"), SIZES)
def test_grey_matches_vlfeat(height: int, width: int) -> None:
    needs_cyvlfeat()
    images = batch(GREY, height, width)  # (N, H, W) uint8
    np.testing.assert_allclose(hog(images), hog_vlfeat(images), rtol=0, atol=ATOL_FLOAT32)
    with_axis = images[..., None]  # (N, H, W, 1)
    np.testing.assert_allclose(hog(with_axis), hog_vlfeat(with_axis), rtol=0, atol=ATOL_FLOAT32)


@pytest.mark.vlfeat
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_input_matches_vlfeat(dtype: type) -> None:
    # the paper's input: whole photographs resized to 256x256; not quantised to 1/255, so
    # gradients take any float value (near-vertical ones with a tiny gx included)
    needs_cyvlfeat()
    images = downsized(COLOUR[:2], 256).astype(dtype)
    np.testing.assert_allclose(hog(images), hog_vlfeat(images), rtol=0, atol=ATOL_FLOAT32)


@pytest.mark.vlfeat
def test_brightness_changed_image_matches_vlfeat() -> None:
    # 0.3 x + 0.2 in float32 rounds gradients off the 1/255 grid, ties and near-ties included
    needs_cyvlfeat()
    images = (0.3 * (batch(COLOUR, 96, 128) / 255) + 0.2).astype(np.float32)
    np.testing.assert_allclose(hog(images), hog_vlfeat(images), rtol=0, atol=ATOL_FLOAT32)


@pytest.mark.vlfeat
@pytest.mark.parametrize(("cell_size", "num_orientations"), OTHER_PARAMS)
def test_other_params_match_vlfeat(cell_size: int, num_orientations: int) -> None:
    needs_cyvlfeat()
    params = HogParams(cell_size=cell_size, num_orientations=num_orientations)
    images = batch(COLOUR[:2], 83, 117)
    ours, ref = hog(images, params), hog_vlfeat(images, params)
    assert ours.shape == ref.shape == (2, *output_shape(params, 83, 117))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=ATOL_FLOAT32)


@pytest.mark.vlfeat
def test_exact_orientation_path_matches_vlfeat(monkeypatch: pytest.MonkeyPatch) -> None:
    # every pixel through the O scores (the fast path sends only boundary pixels there)
    needs_cyvlfeat()
    monkeypatch.setattr(hog_module, "_FAST_MAX_ORIENTATIONS", 0)
    images = batch(COLOUR, 64, 96)
    np.testing.assert_allclose(hog(images), hog_vlfeat(images), rtol=0, atol=ATOL_FLOAT32)


@pytest.mark.vlfeat
@pytest.mark.parametrize(("height", "width"), [(4, 4), (4, 11), (5, 9), (12, 4)])
def test_tiny_images_match_vlfeat(height: int, width: int) -> None:
    # one or two cells a side, most of them fed by the replicated border blocks
    needs_cyvlfeat()
    images = batch(COLOUR[:2], height, width)
    np.testing.assert_allclose(hog(images), hog_vlfeat(images), rtol=0, atol=ATOL_FLOAT32)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


def test_fast_orientation_path_equals_exact_scores() -> None:
    # photographs, their brightness-changed float versions, and gradients placed on (and one
    # float32 step either side of) every bin boundary
    images = batch(COLOUR, 120, 140)
    floats = (0.3 * (images / 255) + 0.2).astype(np.float32)
    x = torch.from_numpy(np.concatenate([images / 255, floats]).astype(np.float32))
    gx, gy, _ = hog_module._gradients(x.permute(0, 3, 1, 2))
    for o in (2, 3, 6, 9, 10):
        angles = (np.arange(4 * o) + 0.5) * np.pi / (2 * o)  # every half bin, boundaries too
        scale = np.array([1e-3, 0.02, 0.7])[:, None]
        bx = (scale * np.cos(angles)).astype(np.float32).ravel()
        by = (scale * np.sin(angles)).astype(np.float32).ravel()
        bx = np.concatenate([bx, np.nextafter(bx, 1), np.nextafter(bx, -1), bx, bx])
        by = np.concatenate([by, by, by, np.nextafter(by, 1), np.nextafter(by, -1)])
        all_x = torch.cat([gx, torch.from_numpy(bx), torch.zeros(3)])
        all_y = torch.cat([gy, torch.from_numpy(by), torch.tensor([0.5, -0.25, 0.0])])
        plan = hog_module._plan(1, 16, 16, HogParams(num_orientations=o), torch.device("cpu"))
        fast = hog_module._directed_bins(all_x, all_y, plan)
        exact = hog_module._exact_directed_bins(all_x, all_y, plan)
        moving = (all_x != 0) | (all_y != 0)  # a zero gradient's bin is arbitrary
        assert torch.equal(fast[moving], exact[moving]), o


@pytest.mark.parametrize(("height", "width"), [(256, 256), (200, 320), (77, 131), (4, 4)])
def test_shape_formula(height: int, width: int) -> None:
    images = batch(COLOUR[:1], height, width)
    for params in (HogParams(), HogParams(cell_size=5, num_orientations=4)):
        c = params.cell_size
        expected = (3 * params.num_orientations + 4, (height + c // 2) // c, (width + c // 2) // c)
        assert output_shape(params, height, width) == expected
        assert hog(images, params).shape == (1, *expected)


def test_values_are_bounded() -> None:
    features = hog(batch(COLOUR, 96, 96))
    assert features.dtype == np.float32
    assert features.min() >= 0
    # directed and undirected: half a sum of four values clipped at 0.2
    assert features[:, :27].max() <= 0.4 + 1e-7
    # texture: nine clipped values times 1/sqrt(18)
    assert features[:, 27:].max() <= 9 * 0.2 / np.sqrt(18) + 1e-7
    assert features.max() > 0.1  # photographs are far from flat


def test_constant_image_gives_zeros() -> None:
    for value in (0, 77, 255):
        images = np.full((2, 40, 56, 3), value, np.uint8)
        np.testing.assert_array_equal(hog(images), 0)


def test_batch_equals_one_image_at_a_time() -> None:
    images = batch(COLOUR, 72, 88)
    one_by_one = np.concatenate([hog(image[None]) for image in images])
    np.testing.assert_array_equal(hog(images), one_by_one)
    eleven = np.concatenate([images, images, images[:3]])  # chunks of hog(), the last one short
    assert hog_module._CHUNK_IMAGES < len(eleven) < 2 * hog_module._CHUNK_IMAGES
    np.testing.assert_array_equal(hog(eleven), np.concatenate([one_by_one] * 2 + [one_by_one[:3]]))
    x = torch.from_numpy(eleven).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():  # one hog_torch call for all eleven
        np.testing.assert_array_equal(hog_torch(x).numpy(), hog(eleven))


def test_uint8_equals_float_in_unit_range() -> None:
    images = batch(COLOUR[:2], 64, 64)
    np.testing.assert_array_equal(hog(images), hog((images / np.float32(255)).astype(np.float32)))


def test_grey_layouts_and_grey_rgb_agree() -> None:
    grey = batch(GREY, 64, 80)  # (N, H, W)
    expected = hog(grey)
    np.testing.assert_array_equal(hog(grey[..., None]), expected)
    np.testing.assert_array_equal(hog(np.repeat(grey[..., None], 3, axis=-1)), expected)


@pytest.mark.parametrize("names", [COLOUR, GREY])
def test_rotation_by_180_degrees(names: tuple[str, ...]) -> None:
    # gradients negate exactly: the undirected bin is kept, the directed one moves by O; the
    # cell grid (sides a multiple of the cell) and the bilinear weights are symmetric; the
    # texture channels are per block (up-left, up-right, down-left, down-right): reversed
    o = 9
    images = batch(names, 96, 128)
    ours = hog(images)
    rotated = hog(np.ascontiguousarray(images[:, ::-1, ::-1]))
    expected = np.concatenate(
        [np.roll(ours[:, : 2 * o], o, axis=1), ours[:, 2 * o : 3 * o], ours[:, 3 * o :][:, ::-1]],
        axis=1,
    )[:, :, ::-1, ::-1]
    np.testing.assert_allclose(rotated, expected, rtol=0, atol=ATOL_FLOAT32)


def test_torch_entry_point_matches_numpy_one() -> None:
    images = batch(COLOUR[:2], 64, 72)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W)
    with torch.no_grad():
        np.testing.assert_array_equal(hog_torch(x).numpy(), hog(images))
        np.testing.assert_array_equal(hog_torch(x.contiguous().double()).numpy(), hog(images))


def test_gradient_matches_finite_differences() -> None:
    # grey, so that a nudge cannot change the chosen channel; pixels whose four neighbours
    # have strong gradients away from a bin boundary, so that a nudge cannot change a bin
    image = photo("camera", 48, 48, top=200, left=200).astype(np.float32) / 255
    weights = torch.rand(1, 31, 6, 6, generator=torch.Generator().manual_seed(0))

    def loss(x: torch.Tensor) -> torch.Tensor:
        return (hog_torch(x[None, None]).double() * weights).sum()

    x = torch.from_numpy(image).requires_grad_(True)
    loss(x).backward()
    assert x.grad is not None
    grad = x.grad.numpy()
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0

    gx = np.zeros_like(image)
    gy = np.zeros_like(image)
    gx[1:-1, 1:-1] = image[1:-1, 2:] - image[1:-1, :-2]
    gy[1:-1, 1:-1] = image[2:, 1:-1] - image[:-2, 1:-1]
    turns = np.arctan2(gy, gx) * 9 / np.pi
    steady = (np.hypot(gx, gy) > 0.08) & (np.abs(turns - np.round(turns)) < 0.3)
    pixels = [
        (y, x)
        for y in range(3, 45)
        for x in range(3, 45)
        if steady[y, x - 1] and steady[y, x + 1] and steady[y - 1, x] and steady[y + 1, x]
    ]
    assert len(pixels) >= 4
    step = 1e-3
    for y, x_ in pixels[:6]:
        up, down = image.copy(), image.copy()
        up[y, x_] += step
        down[y, x_] -= step
        with torch.no_grad():
            numeric = (loss(torch.from_numpy(up)) - loss(torch.from_numpy(down))) / (2 * step)
        assert abs(float(numeric) - grad[y, x_]) <= 0.01 + 0.02 * abs(grad[y, x_]), (y, x_)


def test_gradient_is_finite_on_flat_regions() -> None:
    # zero gradients (sqrt at 0) and zero block energies must not give NaN
    image = torch.zeros(1, 3, 32, 40)
    image[:, :, 10:20, 12:30] = 0.5
    image.requires_grad_(True)
    hog_torch(image).sum().backward()
    assert image.grad is not None
    assert torch.isfinite(image.grad).all()


def test_does_not_change_torch_threads() -> None:
    before = torch.get_num_threads()
    hog(batch(COLOUR[:1], 40, 40))
    assert torch.get_num_threads() == before


def test_extractor_record() -> None:
    images = batch(COLOUR[:2], 256, 256)
    features = EXTRACTOR.compute(images, HogParams())
    assert features.shape == (2, 31, 32, 32)
    assert EXTRACTOR.output_shape(HogParams(), 256, 256) == (31, 32, 32)
    assert EXTRACTOR.name == "hog"
    assert EXTRACTOR.version == 1
    assert EXTRACTOR.params_type is HogParams
    assert EXTRACTOR.dims == ("channel", "y", "x")
    np.testing.assert_array_equal(features, hog(images))


# --------------------------------------------------------------------------------------------
# Validation: one test per branch
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["cell_size", "num_orientations"])
@pytest.mark.parametrize("value", [8.0, True, "8"])
def test_params_must_be_integers(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"{field} must be an integer.*pass e\.g\."):
        HogParams(**{field: value})  # type: ignore[arg-type]


def test_cell_size_must_be_at_least_two() -> None:
    with pytest.raises(
        ConfigError, match=r"cell_size must be >= 2, got 1; the paper uses cell_size=8"
    ):
        HogParams(cell_size=1)


def test_num_orientations_must_be_at_least_two() -> None:
    with pytest.raises(ConfigError, match=r"num_orientations must be >= 2, got 1.*=9"):
        HogParams(num_orientations=1)


@pytest.mark.parametrize(("height", "width", "cell_size"), [(3, 40, 2), (40, 3, 2), (40, 5, 16)])
def test_images_too_small(height: int, width: int, cell_size: int) -> None:
    params = HogParams(cell_size=cell_size)
    with pytest.raises(ExtractionError, match=r"too small.*at least \d+ pixels.*resize or pad"):
        output_shape(params, height, width)
    with pytest.raises(ExtractionError, match="too small"):
        hog(np.zeros((1, height, width, 3), np.uint8), params)


@pytest.mark.parametrize(
    "images", [np.zeros((1, 3, 16, 16), np.float32), torch.zeros(3, 16, 16)], ids=["numpy", "3d"]
)
def test_torch_entry_point_wants_a_4d_tensor(images: object) -> None:
    with pytest.raises(ExtractionError, match=r"takes a \(N, C, H, W\) tensor.*images\[None\]"):
        hog_torch(images)  # type: ignore[arg-type]


def test_torch_entry_point_wants_floats() -> None:
    with pytest.raises(ExtractionError, match=r"floating images in \[0, 1\].*divide uint8"):
        hog_torch(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_torch_entry_point_wants_one_or_three_channels() -> None:
    with pytest.raises(ExtractionError, match=r"1 \(grey\) or 3 \(RGB\) channels, got 16"):
        hog_torch(torch.zeros(1, 16, 16, 3))  # channels last by mistake


def test_numpy_entry_point_wants_one_or_three_channels() -> None:
    with pytest.raises(ExtractionError, match=r"grey .* or RGB .*images\[\.\.\., :3\]"):
        hog(np.zeros((1, 16, 16, 4), np.uint8))


def test_numpy_entry_point_wants_a_batch() -> None:
    with pytest.raises(ExtractionError, match=r"batch of images.*image\[None\]"):
        hog(np.zeros((16, 16), np.uint8))


def test_numpy_entry_point_wants_uint8_or_floats() -> None:
    with pytest.raises(ExtractionError, match=r"uint8 or floating.*convert"):
        hog(np.zeros((1, 16, 16, 3), np.int32))


def test_vote_index_overflow_says_to_split_the_batch() -> None:
    with pytest.raises(ExtractionError, match=r"overflows the int32 vote index; pass fewer"):
        hog_module._plan(200_000, 256, 256, HogParams(), torch.device("cpu"))


def test_missing_cyvlfeat_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cyvlfeat.hog", None)  # import raises ImportError
    with pytest.raises(ExtractionError, match=r"needs cyvlfeat.*libvlfeat-dev.*cyvlfeat"):
        hog_vlfeat(batch(COLOUR[:1], 32, 32))
