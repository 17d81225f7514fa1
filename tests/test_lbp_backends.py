"""The LBP backends: the numba kernels give the numpy path's bytes; the choice; the fallback.

:func:`pipeline.features.lbp.lbp` runs compiled kernels (:mod:`pipeline.features.lbp._kernel`)
where numba is installed, and its numpy path elsewhere or with ``INVERT_KERNELS=numpy``
(:func:`pipeline.features.base.kernel_backend`). The stored feature bytes must not depend on which.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from pipeline.errors import ConfigError
from pipeline.features import base
from pipeline.features import lbp as lbp_module
from pipeline.features.base import to_grey
from pipeline.features.lbp import LbpParams, _kernel, lbp
from tests.test_lbp import COLOUR, GREY, batch, downsized, needs_numba


def _both(images: np.ndarray, params: LbpParams | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVERT_KERNELS", "numpy")
    reference = lbp(images, params)
    monkeypatch.setenv("INVERT_KERNELS", "numba")
    got = lbp(images, params)
    assert got.dtype == reference.dtype == np.float32
    assert got.shape == reference.shape
    assert np.array_equal(got, reference, equal_nan=True), (
        f"{images.shape} {images.dtype} {params}: max diff {np.abs(got - reference).max()}"
    )


def _varied_inputs() -> list[tuple[str, np.ndarray, LbpParams | None]]:
    """Photographs, random crops, noise, odd sizes, grey and colour, uint8 and float."""
    rng = np.random.default_rng(14)
    cases: list[tuple[str, np.ndarray, LbpParams | None]] = [
        ("paper input", downsized(COLOUR, 256), None),
        ("paper input, grey", downsized(GREY, 256), None),
    ]
    for name in COLOUR + GREY + ("brick", "grass", "text", "moon"):
        image = getattr(data, name)()
        for _ in range(2):
            height = int(rng.integers(20, 260))
            width = int(rng.integers(20, 260))
            top = int(rng.integers(0, image.shape[0] - height + 1))
            left = int(rng.integers(0, image.shape[1] - width + 1))
            crop = image[None, top : top + height, left : left + width]
            params = LbpParams(int(rng.choice([2, 3, 5, 8, 16])))
            cases += [
                (f"{name} crop", crop, params),
                (f"{name} float32", crop.astype(np.float32) / 255, params),
                (f"{name} float64", crop / 255.0, params),
                (f"{name} mirrored view", crop[:, :, ::-1], params),
            ]
    for height, width in [(3, 3), (2, 40), (17, 33), (255, 257), (270, 250)]:
        for cell in (2, 3, 16, 17, 32, 100, 256):
            if cell <= min(height, width):
                noise = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
                levels = rng.integers(0, 3, (2, height, width), dtype=np.uint8)  # many ties
                cases += [
                    (f"noise {height}x{width}", noise, LbpParams(cell)),
                    (f"few levels {height}x{width}", levels, LbpParams(cell)),
                    (f"grey channel {height}x{width}", noise[..., 1:2], LbpParams(cell)),
                ]
    special = rng.random((2, 64, 64)).astype(np.float32)
    special[0, 10:20, 5:9] = np.nan
    special[1, ::7] = np.inf
    cases.append(("nan and inf", special, LbpParams(8)))
    return cases


@needs_numba
def test_numba_equals_numpy_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    # cell sizes above 16 use two words, and above 64 round the float32 cells and their sums
    for _, images, params in _varied_inputs():
        _both(images, params, monkeypatch)


@needs_numba
def test_numba_grey_is_bit_identical_to_to_grey_for_every_colour() -> None:
    levels = np.arange(256, dtype=np.uint8)
    grey = np.empty((64 * 256, 256), dtype=np.float32)
    for red in range(0, 256, 64):  # 2**24 colours in four slices of 64 x 256 x 256
        rgb = np.stack(np.meshgrid(levels[red : red + 64], levels, levels, indexing="ij"), -1)
        rgb = rgb.reshape(64 * 256, 256, 3)
        _kernel._grey_rgb(rgb, lbp_module._grey_tables(), grey)
        np.testing.assert_array_equal(grey, to_grey(rgb[None])[0])


def test_fallback_without_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    images = batch(COLOUR, 64, 96)
    monkeypatch.setenv("INVERT_KERNELS", "numpy")
    expected = lbp(images)
    monkeypatch.delenv("INVERT_KERNELS", raising=False)
    monkeypatch.setattr(base, "_import_numba", lambda: None)  # as if `import numba` failed

    def refuse(*args: object) -> None:
        raise AssertionError("a numba kernel was called without numba")

    monkeypatch.setattr(_kernel, "lbp_rgb", refuse)
    monkeypatch.setattr(_kernel, "lbp_grey", refuse)
    assert not base.numba_available()
    assert base.kernel_backend() == "numpy"
    np.testing.assert_array_equal(lbp(images), expected)
    np.testing.assert_array_equal(lbp(to_grey(images)), expected)
    monkeypatch.setenv("INVERT_KERNELS", "numba")
    with pytest.raises(ConfigError, match="numba is not installed"):
        lbp(images)


@needs_numba
def test_numba_is_the_default_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVERT_KERNELS", raising=False)
    assert base.kernel_backend() == "numba"
    monkeypatch.setenv("INVERT_KERNELS", "auto")
    assert base.kernel_backend() == "numba"


def test_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVERT_KERNELS", "cuda")
    with pytest.raises(ConfigError, match="INVERT_KERNELS must be one of auto, numba, numpy"):
        lbp(batch(COLOUR[:1], 32, 32))
