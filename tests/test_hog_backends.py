"""The HOG backends: the numba kernel gives the torch path's bytes; the fallback.

:func:`pipeline.features.hog.hog` computes the cells' directed histograms with a compiled
kernel (:mod:`pipeline.features.hog._kernel`) where numba is installed, and with
:func:`~pipeline.features.hog.hog_torch` elsewhere or with ``INVERT_KERNELS=numpy``
(:func:`pipeline.features.base.kernel_backend`). The stored feature bytes must not depend on
which. The kernel copies the order in which the torch path sums (``index_add_``, then the y-votes
and block sums written out term by term, no BLAS), so these tests are the check that it
still does with the torch installed here, and that the bytes do not depend on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from pipeline.features import base
from pipeline.features import hog as hog_module
from pipeline.features.hog import HogParams, _kernel, hog
from tests.test_hog import COLOUR, GREY, batch, needs_numba


def _both(images: np.ndarray, params: HogParams | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVERT_KERNELS", "numpy")
    reference = hog(images, params)
    monkeypatch.setenv("INVERT_KERNELS", "numba")
    got = hog(images, params)
    assert got.dtype == reference.dtype == np.float32
    assert got.shape == reference.shape
    assert np.array_equal(got, reference), (
        f"{images.shape} {images.dtype} {params}: {(got != reference).sum()} values differ, "
        f"by up to {np.abs(got - reference).max()}"
    )


def _varied_inputs() -> list[tuple[str, np.ndarray, HogParams | None]]:
    """Photographs, random crops, noise, odd and tiny sizes, grey and colour, uint8 and float."""
    rng = np.random.default_rng(14)
    cases: list[tuple[str, np.ndarray, HogParams | None]] = [
        ("paper input", batch(COLOUR + COLOUR + COLOUR[:1], 256, 256), None),  # 8 + 1 images
        ("paper input, grey", batch(GREY, 256, 256), None),
    ]
    for name in COLOUR + GREY + ("brick", "grass", "text", "clock"):
        image = getattr(data, name)()
        for _ in range(2):
            height = int(rng.integers(8, min(260, image.shape[0])))
            width = int(rng.integers(8, min(260, image.shape[1])))
            top = int(rng.integers(0, image.shape[0] - height + 1))
            left = int(rng.integers(0, image.shape[1] - width + 1))
            crop = image[None, top : top + height, left : left + width]
            cell = int(rng.choice([2, 3, 5, 8, 16]))
            if min(height, width) < cell - cell // 2:
                cell = 8
            params = HogParams(cell, int(rng.choice([2, 4, 7, 9, 12])))
            cases += [
                (f"{name} crop", crop, params),
                (f"{name} float32", crop.astype(np.float32) / 255, params),
                (f"{name} float64", crop / 255.0, params),
                (f"{name} mirrored view", crop[:, :, ::-1], params),
            ]
    # tiny and odd sizes, few levels (many ties), float noise
    for height, width in [(4, 4), (5, 9), (11, 22), (32, 11), (77, 131), (270, 250)]:
        for cell in (2, 3, 8, 16):
            if min(height, width) >= max(4, cell - cell // 2):
                noise = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
                levels = rng.integers(0, 3, (2, height, width), dtype=np.uint8)  # many ties
                cases += [
                    (f"noise {height}x{width}", noise, HogParams(cell)),
                    (f"few levels {height}x{width}", levels, HogParams(cell)),
                    (f"float noise {height}x{width}", rng.random((2, height, width)), None),
                ]
    cases.append(
        ("72 orientations: exact scores only", batch(COLOUR[:2], 64, 80), HogParams(8, 72))
    )
    return cases


@needs_numba
def test_numba_equals_torch_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    for _, images, params in _varied_inputs():
        _both(images, params, monkeypatch)


@needs_numba
def test_numba_equals_torch_on_every_torch_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    images = batch(COLOUR, 128, 160)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            _both(images, None, monkeypatch)
    finally:
        torch.set_num_threads(before)


def test_y_votes_sum_in_the_stated_order() -> None:
    # hog._y_votes: acc = acc + tent[k] * buffer[k] from 0, each product and sum rounded to
    # float32 (numpy's float32 arithmetic, one rounding per operation, is the reference)
    rng = np.random.default_rng(0)
    for cell, columns in [(8, 18), (2, 72), (3, 54), (8, 72), (16, 36), (8, 576)]:
        tent = rng.random((3, 2, cell), dtype=np.float32)
        rows = rng.random((2, 3, cell, columns), dtype=np.float32) ** 4
        got = hog_module._y_votes(torch.from_numpy(tent), torch.from_numpy(rows)).numpy()
        expected = np.zeros((2, 3, 2, columns), np.float32)
        for k in range(cell):
            expected = expected + tent[None, :, :, k, None] * rows[:, :, None, k]
        assert expected.dtype == np.float32
        assert np.array_equal(got, expected), (cell, columns)
        fused = (tent[None, :, :, :, None].astype(np.float64) * rows[:, :, None]).sum(axis=3)
        assert not np.array_equal(got, fused.astype(np.float32))  # the order is visible


def test_fallback_without_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    images = batch(COLOUR[:2], 64, 96)
    monkeypatch.setenv("INVERT_KERNELS", "numpy")
    expected = hog(images)
    monkeypatch.delenv("INVERT_KERNELS")
    monkeypatch.setattr(base, "_import_numba", lambda: None)  # as if `import numba` failed

    def refuse(*args: object) -> None:
        raise AssertionError("the numba kernel was called without numba")

    monkeypatch.setattr(_kernel, "hog_hist", refuse)
    assert base.kernel_backend() == "numpy"
    np.testing.assert_array_equal(hog(images), expected)


@needs_numba
def test_non_finite_float_images_take_the_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVERT_KERNELS", "numba")
    calls: list[str] = []

    def stub(images: torch.Tensor, params: HogParams) -> torch.Tensor:
        calls.append("torch")
        dim, h, w = hog_module.output_shape(params, images.shape[2], images.shape[3])
        return torch.zeros((images.shape[0], dim, h, w))

    monkeypatch.setattr(hog_module, "hog_torch", stub)
    finite = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32)
    hog(finite)
    assert calls == []
    infinite = finite.copy()
    infinite[0, 5, 5] = np.inf
    hog(infinite)
    assert calls == ["torch"]


@needs_numba
def test_a_kernel_that_sums_otherwise_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    images = batch(COLOUR[:2], 48, 64)
    monkeypatch.setenv("INVERT_KERNELS", "numpy")
    expected = hog(images)
    monkeypatch.setenv("INVERT_KERNELS", "numba")
    real = _kernel.hog_hist

    def off_by_one_ulp(*args: object) -> None:  # a torch that rounds one sum otherwise
        real(*args)
        hist = args[-1]
        assert isinstance(hist, np.ndarray)
        hist.flat[np.argmax(hist)] = np.nextafter(hist.max(), np.float32(1))

    monkeypatch.setattr(_kernel, "hog_hist", off_by_one_ulp)
    monkeypatch.setattr(
        hog_module, "_kernel_matches_torch", hog_module._kernel_matches_torch.__wrapped__
    )
    with pytest.warns(RuntimeWarning, match="does not reproduce this torch build's sums"):
        got = hog(images)
    np.testing.assert_array_equal(got, expected)


@needs_numba
def test_the_kernel_matches_torch_here() -> None:
    hog_module._kernel_matches_torch.cache_clear()
    assert hog_module._kernel_matches_torch()
