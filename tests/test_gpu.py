"""The CUDA paths against the CPU: a training step, AlexNet, HOG, checkpoints across devices.

Marked ``gpu``: ``python -m pytest -m gpu`` runs them on a CUDA device and skips them
without one. ``scripts/gpu_check.sh --dry-run`` sets ``INVERT_GPU_TESTS_ON_CPU=1``, which
runs them with the CPU standing in for the GPU (same code, CPU bf16 autocast), so that CI
checks that they run at all.
"""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline import decoders
from pipeline.extract import ExtractParams, extract_store
from pipeline.loader import LoaderParams
from pipeline.pixels import target_images
from pipeline.runner import RunnerParams
from pipeline.training import TrainParams, train, train_step

pytestmark = pytest.mark.gpu

#: bf16 keeps 8 bits of mantissa: a relative error of 2**-8 per rounding
BF16_RTOL = 2e-2


@pytest.fixture(scope="module")
def device() -> torch.device:
    """The CUDA device; the CPU standing in for it in a dry run; else the test is skipped."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get("INVERT_GPU_TESTS_ON_CPU") == "1":
        return torch.device("cpu")
    pytest.skip("needs a CUDA device (INVERT_GPU_TESTS_ON_CPU=1: the CPU stands in)")


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """What ``train`` uses on a GPU: bf16 autocast (on the CPU in a dry run)."""
    return torch.autocast(device.type, dtype=torch.bfloat16)


@pytest.mark.parametrize("target", ["hog", "conv5"])
def test_training_step_on_the_device_equals_the_cpu_step(target: str, device: torch.device) -> None:
    """One Adam step, bf16 autocast and channels_last on the device, against float32 on the
    CPU: same loss and gradients within bf16's precision, same update direction."""
    torch.manual_seed(0)
    cpu_net = decoders.build(target, width=0.25)
    dev_net = copy.deepcopy(cpu_net).to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    feats = torch.relu(torch.randn(4, *decoders.input_shape(target)))
    images = torch.randint(0, 256, (4, 3, 256, 256), dtype=torch.uint8)
    losses, grads, deltas = [], [], []
    for net, dev, autocast in (
        (cpu_net, torch.device("cpu"), None),
        (dev_net, device, _autocast(device)),
    ):
        before = [p.detach().clone().cpu() for p in net.parameters()]
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        y = target_images(images.to(dev), target)
        losses.append(train_step(net, opt, feats.to(dev), y, autocast=autocast))
        grads.append(torch.cat([p.grad.float().cpu().flatten() for p in net.parameters()]))  # type: ignore[union-attr]
        deltas.append(
            torch.cat([(p.detach().cpu() - b).flatten() for p, b in zip(net.parameters(), before)])
        )
    assert losses[1] == pytest.approx(losses[0], rel=BF16_RTOL)
    g_cpu, g_dev = grads
    assert float((g_dev - g_cpu).norm() / g_cpu.norm()) < 5 * BF16_RTOL
    # Adam's first step moves every weight by about lr * sign(gradient): the same sign
    # wherever the gradient is not lost in bf16's rounding
    big = g_cpu.abs() > g_cpu.abs().quantile(0.9)  # the largest tenth of the gradients
    same = torch.sign(deltas[1][big]) == torch.sign(deltas[0][big])
    assert float(same.float().mean()) > 0.99


def test_alexnet_activations_on_the_device_equal_the_cpu(device: torch.device) -> None:
    from pipeline.alexnet import LAYERS
    from pipeline.alexnet.activations import AlexNetParams, activations

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 256, 256, 3), dtype=np.uint8)
    params = AlexNetParams(weights="random:0")
    on_cpu = activations(images, params, list(LAYERS), "cpu", dtype="float32")
    on_dev = activations(images, params, list(LAYERS), str(device), dtype="float32")
    for layer in LAYERS:
        scale = float(np.abs(on_cpu[layer]).max())
        assert scale > 0, layer
        err = float(np.abs(on_dev[layer] - on_cpu[layer]).max()) / scale
        assert err <= 1e-3, (layer, err)


def test_hog_on_the_device_equals_the_cpu(device: torch.device, photo_batch: np.ndarray) -> None:
    from pipeline.features.hog import hog, hog_torch

    x = torch.from_numpy(photo_batch).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        on_dev = hog_torch(x.to(device)).cpu().numpy()
    expected = hog(photo_batch)
    assert float(np.abs(expected).max()) > 0.1
    np.testing.assert_allclose(on_dev, expected, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def hog_store(image_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gpu-feat") / "hog.zarr"
    return extract_store("hog", image_store, out, run=ExtractParams(runner=RunnerParams(workers=2)))


def test_a_checkpoint_written_on_the_device_resumes_on_the_cpu_and_back(
    device: torch.device, image_store: Path, hog_store: Path, tmp_path: Path
) -> None:
    """3 steps on the device, 3 more on the CPU from its checkpoint, 3 more on the device
    from the CPU's: each run continues the loss curve of the checkpoint it started from."""
    base = TrainParams(
        width=0.125,
        batch_size=4,
        lr=1e-3,
        checkpoint_every=3,
        log_every=1,
        eval_batches=1,
        loader=LoaderParams(workers=0, block_reads=2),
    )

    def run(steps: int, on: torch.device) -> dict[str, Any]:
        params = TrainParams(**{**base.__dict__, "steps": steps, "device": str(on)})
        result = train(
            "hog",
            images_path=image_store,
            features_path=hog_store,
            out=tmp_path / "out",
            checkpoints=tmp_path / "ckpt",
            params=params,
            progress=False,
        )
        assert result.metrics["steps"] == steps
        (folder,) = (tmp_path / "ckpt").iterdir()  # device is not part of the run's identity
        blob = torch.load(folder / f"step-{steps}.pt", map_location="cpu", weights_only=True)
        return dict(blob)

    first = run(3, device)
    second = run(6, torch.device("cpu"))
    assert second["curve"][:3] == first["curve"]  # resumed, not restarted
    third = run(9, device)
    assert third["curve"][:6] == second["curve"]
    assert any(not torch.equal(third["model"][k], second["model"][k]) for k in third["model"])


def test_deepsim_step_on_the_device(device: torch.device) -> None:
    """DeePSiM's comparator and discriminator on the device: the feature loss equals the CPU's
    within bf16's precision, and one step under bf16 autocast gives finite losses and moves
    the decoder and the discriminator (their dropout draws differ between devices, so the
    adversarial terms are not compared)."""
    from pipeline.alexnet.activations import AlexNetParams
    from pipeline.deepsim import DeepSimParams, feature_loss
    from pipeline.deepsim_training import build_adversary, deepsim_step

    p = DeepSimParams(loss="deepsim", lambda_feat=1e-8)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    y = target_images(images, "conv5")  # (2, 3, 192, 192)
    x_hat = (y + 0.05 * torch.randn_like(y)).clamp(-0.5, 0.5)
    feats = torch.relu(torch.randn(2, *decoders.input_shape("conv5")))
    size = int(np.prod(decoders.input_shape("conv5")))
    weights = AlexNetParams(weights="random:0")
    losses = []
    for dev, autocast in ((torch.device("cpu"), None), (device, _autocast(device))):
        adv = build_adversary(p, weights, feature_size=size, width=0.25, seed=0, device=dev)
        assert adv.comparator is not None
        with autocast or contextlib.nullcontext(), torch.no_grad():
            losses.append(float(feature_loss(adv.comparator, x_hat.to(dev), y.to(dev))))
    assert losses[1] == pytest.approx(losses[0], rel=5 * BF16_RTOL)

    adv = build_adversary(p, weights, feature_size=size, width=0.25, seed=0, device=device)
    torch.manual_seed(0)
    net = decoders.build("conv5", width=0.25).to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    net_before = [q.detach().clone() for q in net.parameters()]
    disc_before = [q.detach().clone() for q in adv.disc.parameters()]
    step = deepsim_step(net, opt, adv, feats.to(device), y.to(device), autocast=_autocast(device))
    assert all(np.isfinite([step.objective, step.pixel, step.feature, step.adv_g, step.adv_d]))
    assert step.disc_trained  # nothing to pause at the first step
    assert any(not torch.equal(a, b) for a, b in zip(net_before, net.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(disc_before, adv.disc.parameters()))
