"""The optimisation-based inversion baseline (Mahendran & Vedaldi), pipeline.inversion."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from pipeline import alexnet, decoders
from pipeline.config import parse
from pipeline.errors import ConfigError, ExtractionError
from pipeline.features.hog import hog_torch
from pipeline.inversion import (
    IMAGE_SIZE,
    InversionParams,
    alpha_norm,
    default_lambda_tv,
    feature_function,
    feature_loss,
    invert,
    invert_target,
    to_target_convention,
    total_variation,
)
from pipeline.pixels import target_images


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine two threads ran ~50x slower, not ~2x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _as_float(images: np.ndarray) -> torch.Tensor:
    """(B, 256, 256, 3) uint8 -> (B, 3, 256, 256) float in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def _centre(x: torch.Tensor, size: int) -> torch.Tensor:
    at = (x.shape[-1] - size) // 2
    return x[..., at : at + size, at : at + size]


def _run(target: str, images: np.ndarray, steps: int) -> dict[str, torch.Tensor]:
    """Invert ``images`` from ``target``; losses and per-image MSEs of result, init and grey."""
    phi, size = feature_function(target)
    original = _centre(_as_float(images), size)  # (B, 3, S, S)
    with torch.no_grad():
        phi0 = phi(original)
    channels = 1 if target == "hog" else 3
    params = InversionParams(steps=steps).for_target(target)
    result = invert(phi, phi0, size=size, params=params, channels=channels)
    start = invert(
        phi, phi0, size=size, params=dataclasses.replace(params, steps=0), channels=channels
    )
    with torch.no_grad():
        loss, loss0 = feature_loss(phi(result), phi0), feature_loss(phi(start), phi0)

    def mse(x: torch.Tensor) -> torch.Tensor:
        return (x - original).square().flatten(1).mean(1)

    grey_result, grey_original = result.mean(1).flatten(1), original.mean(1).flatten(1)
    corr = torch.stack(
        [torch.corrcoef(torch.stack([a, b]))[0, 1] for a, b in zip(grey_result, grey_original)]
    )
    return {
        "result": result,
        "loss": loss,
        "loss0": loss0,
        "mse": mse(result),
        "mse0": mse(start),
        "mse_grey": mse(torch.full_like(original, 0.5)),
        "corr": corr,
    }


# -- the objective's terms, by hand ------------------------------------------------------------
def test_total_variation_by_hand() -> None:
    x = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 0.5]]], [[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]]])
    for beta in (2.0, 1.0, 3.0):
        expected = []
        for image in x:  # (1, 2, 3)
            total = 0.0
            for c, i, j in itertools.product(range(1), range(2), range(3)):
                dx = image[c, i, j + 1] - image[c, i, j] if j + 1 < 3 else 0.0
                dy = image[c, i + 1, j] - image[c, i, j] if i + 1 < 2 else 0.0
                total += float(dx**2 + dy**2) ** (beta / 2)
            expected.append(total)
        np.testing.assert_allclose(total_variation(x, beta).numpy(), expected, rtol=1e-6)


def test_total_variation_sums_channels_separately() -> None:
    x = torch.rand(1, 3, 5, 4, generator=torch.Generator().manual_seed(0))
    per_channel = sum(total_variation(x[:, c : c + 1], 1.0) for c in range(3))
    torch.testing.assert_close(total_variation(x, 1.0), per_channel)


def test_alpha_norm_by_hand() -> None:
    x = torch.tensor([[[[0.5, -0.25], [0.0, -0.5]]]])
    assert alpha_norm(x, 6.0).item() == pytest.approx(2 * 0.5**6 + 0.25**6)
    assert alpha_norm(x, 1.0).item() == pytest.approx(1.25)


def test_feature_loss_by_hand() -> None:
    target = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    features = torch.tensor([[3.0, 2.0], [1.0, 2.0]])
    # image 0: |(0, -2)|² / |(3, 4)|² = 4/25; image 1: all-zero target, not divided by
    np.testing.assert_allclose(feature_loss(features, target).numpy(), [4 / 25, 5.0])


def test_gradients_are_finite_where_undefined() -> None:
    flat = torch.full((1, 1, 8, 8), 0.25, requires_grad=True)  # TV_1 kinks at dx = dy = 0
    total_variation(flat, 1.0).sum().backward()
    assert flat.grad is not None
    assert torch.isfinite(flat.grad).all() and (flat.grad == 0).all()
    grey = torch.full((1, 3, 64, 64), 0.5, requires_grad=True)  # HOG of a flat image: no edges
    hog_torch(grey).sum().backward()
    assert grey.grad is not None and torch.isfinite(grey.grad).all()


# -- params --------------------------------------------------------------------------------------
def test_default_lambda_tv_is_mahendran_vedaldi_rescaled() -> None:
    # [1]: lambdaTV 1 / 10 / 100 on 0..255 pixels with the terms divided by 2 x0_sigma²
    unit = 255.0**2 / (2 * 27098.11571533**2)
    assert default_lambda_tv("hog") == pytest.approx(unit)
    assert default_lambda_tv("conv1") == pytest.approx(unit)
    for layer in ("conv2", "conv3", "conv4"):
        assert default_lambda_tv(layer) == pytest.approx(10 * unit)
    for layer in ("conv5", "fc6", "fc7", "fc8"):
        assert default_lambda_tv(layer) == pytest.approx(100 * unit)
    assert InversionParams().lambda_alpha == pytest.approx(
        8e-10 * 255.0**6 / (2 * 27098.11571533**2)
    )
    assert InversionParams().for_target("conv5").lambda_tv == default_lambda_tv("conv5")
    assert InversionParams(lambda_tv=0.5).for_target("conv5").lambda_tv == 0.5


def test_schedule_covers_every_step() -> None:
    phases = InversionParams(steps=200).phases()
    assert [n for n, _ in phases] == [120, 60, 20]
    np.testing.assert_allclose([lr for _, lr in phases], [45.171, 4.5171, 0.45171], rtol=1e-4)
    assert InversionParams().init_std == pytest.approx(0.27028, rel=1e-4)
    for steps in (0, 1, 3, 7, 50, 201):
        phases = InversionParams(steps=steps).phases()
        assert sum(n for n, _ in phases) == steps
        assert all(n > 0 for n, _ in phases)
    assert InversionParams(steps=400, decay_at=(0.25, 0.75)).phases()[0][0] == 100  # [1]'s


def test_params_parse_from_a_params_section() -> None:
    params = parse(
        InversionParams, {"steps": 50, "decay_at": [0.5], "lambda_tv": None}, section="x"
    )
    assert params.decay_at == (0.5,) and params.steps == 50 and params.lambda_tv is None
    with pytest.raises(ConfigError, match="unknown key"):
        parse(InversionParams, {"step": 50}, section="x")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("steps", -1, "steps must be a non-negative integer"),
        ("steps", 2.5, "steps must be a non-negative integer"),
        ("seed", True, "seed must be a non-negative integer"),
        ("optimizer", "lbfgs", "optimizer must be 'sgd' or 'adam'"),
        ("lr", 0.0, "lr must be > 0"),
        ("lr", float("nan"), "lr must be > 0"),
        ("momentum", 1.0, r"momentum must be in \[0, 1\)"),
        ("decay_factor", 0.0, r"decay_factor must be in \(0, 1\]"),
        ("alpha", 0.5, "alpha must be >= 1"),
        ("beta", 0.5, "beta must be >= 1"),
        ("lambda_alpha", -1e-4, "lambda_alpha must be >= 0"),
        ("lambda_tv", -1.0, "lambda_tv must be >= 0, or null"),
        ("init_std", -0.1, "init_std must be >= 0"),
        ("decay_at", (0.9, 0.5), "decay_at must be increasing fractions"),
        ("decay_at", (1.0,), "decay_at must be increasing fractions"),
    ],
)
def test_bad_params_are_refused(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        InversionParams(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["lbp", "sift"])
def test_non_differentiable_targets_have_no_baseline(target: str) -> None:
    with pytest.raises(ConfigError, match="not differentiable: no baseline"):
        feature_function(target)
    with pytest.raises(ConfigError, match="not differentiable: no baseline"):
        invert_target(target, np.zeros((1, 256, 256, 3), np.uint8), params=InversionParams())


def test_bad_calls_are_refused() -> None:
    with pytest.raises(ConfigError, match="no inversion baseline for 'conv6'"):
        feature_function("conv6")
    with pytest.raises(ConfigError, match="unknown AlexNet architecture"):
        feature_function("conv1", arch="vgg")
    phi = hog_torch
    phi0 = torch.zeros(1, 31, 4, 4)
    with pytest.raises(ConfigError, match=r"lambda_tv or params\.steps is None; pass params"):
        invert(phi, phi0, size=32, params=InversionParams(steps=1))
    with pytest.raises(ConfigError, match="channels must be 1"):
        invert(phi, phi0, size=32, params=InversionParams(steps=1, lambda_tv=0.0), channels=2)
    with pytest.raises(ConfigError, match="2 image_ids for 1 images"):
        invert(phi, phi0, size=32, params=InversionParams(steps=1, lambda_tv=0.0), image_ids=[0, 1])
    with pytest.raises(ConfigError, match="steps is None"):
        invert(phi, phi0, size=32, params=InversionParams(lambda_tv=0.0))
    # None takes [1]'s own step counts
    assert InversionParams().for_target("hog").steps == 800
    assert InversionParams().for_target("conv3").steps == 400
    assert InversionParams(steps=7).for_target("conv3").steps == 7
    with pytest.raises(ExtractionError, match=r"\(B, 256, 256, 3\) uint8"):
        invert_target("hog", np.zeros((1, 227, 227, 3), np.uint8), params=InversionParams())
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        invert_target(
            "hog", np.zeros((1, 256, 256, 3), np.uint8), params=InversionParams(), batch_size=0
        )


# -- alignment with the decoders' targets -------------------------------------------------------
@pytest.mark.parametrize("target", ["hog", "conv3", "fc8"])
def test_a_perfect_reconstruction_equals_the_decoder_target(
    photo_batch: np.ndarray, target: str
) -> None:
    images = photo_batch[:2]
    size = IMAGE_SIZE if target == "hog" else 227
    converted = to_target_convention(_centre(_as_float(images), size), target)
    expected = target_images(torch.from_numpy(images).permute(0, 3, 1, 2), target)
    assert converted.shape == (2, 3, decoders.output_size(target), decoders.output_size(target))
    torch.testing.assert_close(converted, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["caffenet", "torchvision"])
def test_phi_of_the_crop_is_the_network_on_the_whole_image(
    photo_batch: np.ndarray, arch: str
) -> None:
    images = photo_batch[:2]
    phi, size = feature_function("conv1", arch=arch, weights="random:3")
    assert size == 227
    net = alexnet.build(arch, weights="random:3")
    with torch.no_grad():
        expected = net.forward_layers(alexnet.preprocess(images, arch), ["conv1"])["conv1"]
        got = phi(_centre(_as_float(images), size))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)


# -- the optimisation --------------------------------------------------------------------------
def test_hog_inversion_recovers_the_image(photo_batch: np.ndarray) -> None:
    out = _run("hog", photo_batch[:2], steps=200)
    assert (out["loss"] < 0.25 * out["loss0"]).all(), (out["loss"], out["loss0"])
    assert (out["mse"] < 0.6 * out["mse0"]).all(), (out["mse"], out["mse0"])
    # HOG is normalised per block, so brightness and contrast are free: the grey image is a
    # strong competitor in MSE (seen: 0.081 vs 0.103, 0.100 vs 0.111) ...
    assert (out["mse"] < out["mse_grey"]).all(), (out["mse"], out["mse_grey"])
    # ... and the correlation with the original's brightness is the clearer sign (seen 0.51, 0.43)
    assert (out["corr"] > 0.3).all(), out["corr"]
    result = out["result"]
    assert torch.equal(result[:, 0], result[:, 1]) and torch.equal(result[:, 0], result[:, 2])


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_alexnet_inversion_recovers_the_image(photo_batch: np.ndarray, layer: str) -> None:
    out = _run(layer, photo_batch[:2], steps=60)  # random-weights CaffeNet
    assert (out["loss"] < 0.3 * out["loss0"]).all(), (out["loss"], out["loss0"])  # seen <= 0.15
    assert (out["mse"] < 0.5 * out["mse0"]).all(), (out["mse"], out["mse0"])
    assert (out["mse"] < 0.75 * out["mse_grey"]).all(), (out["mse"], out["mse_grey"])  # <= 0.58
    assert (out["corr"] > 0.6).all(), out["corr"]  # seen >= 0.77


@pytest.mark.parametrize("layer", alexnet.LAYERS)
def test_gradients_reach_the_image_from_every_layer(layer: str) -> None:
    phi, size = feature_function(layer)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        phi0 = phi(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(2)))
    x.requires_grad_(True)
    feature_loss(phi(x), phi0).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("target", ["hog", "conv5", "fc8"])
def test_invert_target_gives_the_decoder_convention(photo_batch: np.ndarray, target: str) -> None:
    params = InversionParams(steps=2)
    out = invert_target(target, photo_batch[:2], params=params, batch_size=1)
    s = decoders.output_size(target)
    assert out.shape == (2, 3, s, s) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= -0.5 and out.max() <= 0.5


def test_seeded_and_independent_of_the_batch(photo_batch: np.ndarray) -> None:
    x = torch.nn.functional.interpolate(_as_float(photo_batch[:2]), size=(64, 64), mode="area")
    phi0 = hog_torch(x)  # (2, 31, 8, 8)
    params = InversionParams(steps=15, lambda_tv=default_lambda_tv("hog"))
    first = invert(hog_torch, phi0, size=64, params=params)
    assert torch.equal(first, invert(hog_torch, phi0, size=64, params=params))
    other = invert(hog_torch, phi0, size=64, params=dataclasses.replace(params, seed=1))
    assert not torch.equal(first, other)
    alone = invert(hog_torch, phi0[1:], size=64, params=params, image_ids=[1])
    torch.testing.assert_close(alone[0], first[1], atol=1e-4, rtol=0)
    assert not torch.equal(first[0], first[1])


def test_cpu_optimisation_runs_on_one_thread_and_restores_the_count(
    photo_batch: np.ndarray,
) -> None:
    """Two threads gave [1] on HOG one of two results run to run; the steps run on one."""
    x = torch.nn.functional.interpolate(_as_float(photo_batch[:1]), size=(32, 32), mode="area")
    phi0 = hog_torch(x)
    seen: list[int] = []

    def phi(image: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return hog_torch(image)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        invert(phi, phi0, size=32, params=InversionParams(steps=3, lambda_tv=0.0))
        assert seen == [1, 1, 1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
