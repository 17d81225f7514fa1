"""Train a decoder to invert a representation (``invert train TARGET``), docs/method.md §5.

Pixel-space mean squared error, Adam, step decay of the learning rate; only the decoder
trains (mode ``fixed``), or the AlexNet encoder with it (mode ``autoencoder``). With
``loss: deepsim`` the objective is the follow-up paper's instead (:mod:`pipeline.deepsim`):
pixel + comparator-feature + adversarial terms, the discriminator trained in alternation;
its step, adversary and records are :mod:`pipeline.deepsim_training`'s, which this loop
calls. A pixel run's outputs are byte-identical to those of the code before that option
existed. Batches stream from the stores (:mod:`pipeline.loader`) or, with ``online: true``,
the features are computed from the images on the training device by the target's extractor
(:attr:`pipeline.features.base.Extractor.on_device`). The run's params and the parser of
the ``train`` section (:class:`~pipeline.train_params.TrainParams`,
:func:`~pipeline.train_params.parse_train_section`, re-exported here) are
:mod:`pipeline.train_params`'s.

Free functions, as in the torchvision reference scripts: :func:`train_step` (one optimiser
step; :func:`pipeline.deepsim_training.deepsim_step` for DeePSiM), ``_run_steps`` (the
steps between two checkpoints), ``_fit`` (resume, then steps and checkpoints,
:mod:`pipeline.checkpoints`), :func:`evaluate_loss` (the test loss), setup helpers (inputs,
decoder, optimiser, torchrun) and :func:`train`, which wires them.

Checkpoints are written every ``checkpoint_every`` steps into a folder named by the hash of
everything that determines the weights (target, decoder and its version, optimiser settings,
seed, loader, feature parameters, input stores): a run that is killed and started again with
the same inputs resumes from the last good checkpoint and reaches the same weights as an
uninterrupted run (deterministic on the CPU), and ``model.pt`` is byte-identical.

Outputs: ``OUT/model.pt`` (weights + config), ``OUT/config.json``, a metrics JSON for
``dvc metrics show`` and a loss-curve CSV for ``dvc plots show``. Run-time facts (samples
per second, how long) go to the log only, so the outputs depend on the inputs alone.

References
----------
A. Dosovitskiy, T. Brox. Inverting Visual Representations with Convolutional Networks.
CVPR 2016, Sec. 3 (training).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import decoders, deepsim_training, features, trivial
from pipeline.alexnet.activations import AlexNetParams
from pipeline.checkpoints import (
    model_weights,
    read_model_file,
    resume_checkpoint,
    save_atomic,
    save_checkpoint,
)
from pipeline.deepsim_training import Adversary, DeepSimStep, deepsim_step, step_rng
from pipeline.devices import resolve_device
from pipeline.errors import ConfigError, IncompatibleStoreError, PipelineError
from pipeline.loader import StoreStream, collage_samples, make_loader, usable_indices
from pipeline.pixels import target_images
from pipeline.progress import progress_bar
from pipeline.provenance import identity_params, open_feature_store
from pipeline.store import Store, identity_of, open_store
from pipeline.train_params import TrainParams, parse_train_section

__all__ = [
    "TrainParams",
    "TrainResult",
    "diverged",
    "evaluate_loss",
    "input_statistics",
    "parse_train_section",
    "train",
    "train_step",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """Where a training run left its outputs and its final figures."""

    model_path: Path
    metrics: dict[str, Any]


Encoder = Callable[[torch.Tensor], torch.Tensor]


def _online_encoder(
    target: str, params: TrainParams, feature_params: Any, device: torch.device
) -> tuple[Encoder, nn.Module | None]:
    """The target's extractor on ``device``: trainable in autoencoder mode, frozen otherwise."""
    extractor = features.get(target)
    if extractor.on_device is None or (params.mode == "autoencoder" and extractor.family is None):
        what = "an autoencoder" if params.mode == "autoencoder" else "online features"
        raise ConfigError(
            f"{what} is not available for {target!r} (AlexNet layers"
            f"{'' if params.mode == 'autoencoder' else ' and hog'} only); extract a feature "
            "store and set online: false, mode: fixed"
        )
    run = extractor.on_device(feature_params, device)
    net: nn.Module | None = run.network
    if net is not None:
        trainable = params.mode == "autoencoder"
        net.train(trainable)
        for p in net.parameters():
            p.requires_grad_(trainable)
    return run.encode, net


def _open_features(
    target: str, features_path: str | Path | None, feature_params: Any, images: Store
) -> Store:
    """The target's feature store, refused unless made with ``feature_params`` from ``images``."""
    if features_path is None:
        raise ConfigError(f"train {target}: give --features STORE or set online: true")
    store = open_feature_store(features_path, target, feature_params, images=images)
    shape = store.array("features").shape[1:]
    expected = decoders.input_shape(target)
    if tuple(shape[1:]) != tuple(expected[1:]):
        raise IncompatibleStoreError(
            f"feature store {str(features_path)!r} holds {shape} per sample; the {target} "
            f"decoder takes {expected}: the images must be 256x256 with the paper's cell size"
        )
    return store


def input_statistics(
    batches: Iterator[torch.Tensor], channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of features, for :class:`decoders.InputNorm`.

    Parameters
    ----------
    batches : iterator of (B, C, ...) Tensor
        Features of the training samples (any number of batches).
    channels : int
        C.

    Returns
    -------
    mean, std : (C,) Tensor of float32
        Over samples and positions, accumulated in float64 in the batches' order. A channel
        that barely varies (a dead unit, an empty histogram bin) gets a tenth of the mean
        standard deviation instead, so that a rare test value does not explode.
    """
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for f in batches:
        f = f.detach().to("cpu", torch.float64).transpose(0, 1).reshape(channels, -1)  # (C, B*P)
        total += f.sum(dim=1)
        squares += (f * f).sum(dim=1)
        count += f.shape[1]
    if count == 0:
        raise PipelineError("no training sample to compute the input statistics from")
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0.0).sqrt()
    floor = 0.1 * float(std.mean()) if float(std.mean()) > 0 else 1.0
    return mean.float(), std.clamp_min(floor).float()


def _feature_batches(
    source: Callable[[np.ndarray], torch.Tensor],
    store_path: str | Path,
    count: int,
    seed: int,
    skip: np.ndarray | None = None,
) -> Iterator[torch.Tensor]:
    """Features of ``count`` training samples of ``store_path`` in store order, 64 at a time;
    samples where the (N,) bool ``skip`` is set are not drawn."""
    usable = usable_indices(store_path, "train")
    if skip is not None:
        usable = usable[~skip[usable]]
    subset = trivial.training_subset(usable, count, seed)
    for i in range(0, len(subset), 64):
        yield source(subset[i : i + 64])


def train_step(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    feats: torch.Tensor,
    targets: torch.Tensor,
    *,
    encoder: Encoder | None = None,
    images: torch.Tensor | None = None,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
) -> float:
    """One Adam step on the pixel MSE (docs/method.md §5).

    Parameters
    ----------
    net : nn.Module
        The decoder (or its DDP wrapper).
    opt : torch.optim.Optimizer
    feats : (B, ...) Tensor or None
        Input features on the device (ignored when ``encoder`` is given).
    targets : (B, 3, S, S) Tensor of float32
        :func:`pipeline.pixels.target_images` of the batch.
    encoder : callable, optional
        A trainable encoder (autoencoder mode) applied to ``images`` inside the graph.
    images : (B, 3, 256, 256) Tensor of uint8, optional
        The encoder's input.
    autocast : context manager, optional
        bf16 autocast on CUDA.

    Returns
    -------
    float
        The batch loss before the step.
    """
    with autocast or contextlib.nullcontext():
        if encoder is not None:
            assert images is not None
            feats = encoder(images)  # the encoder trains with the decoder
        out = net(feats)  # (B, 3, S, S)
        loss = F.mse_loss(out.float(), targets)
    if not torch.isfinite(loss):
        raise PipelineError(f"loss became {loss.item()}; lower lr")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.item())


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    target: str,
    images_path: str | Path,
    features_path: str | Path | None,
    params: TrainParams,
    device: torch.device,
    encoder: Encoder | None,
) -> float | None:
    """Mean pixel MSE over the first ``eval_batches`` test batches (a fixed order).

    Returns ``None`` when ``eval_batches`` is 0 or the store has no usable test split.
    """
    if params.eval_batches == 0:
        return None
    loader_params = replace(params.loader, workers=0)
    try:
        stream = StoreStream(
            images_path,
            features_path,
            split="test",
            batch_size=min(params.batch_size, 16),
            params=loader_params,
            seed=12345,
        )
    except PipelineError as err:
        log.warning("no test loss: %s", err)
        return None
    model.eval()
    losses = []
    for k, (feats, x) in enumerate(stream):
        if k == params.eval_batches:
            break
        x = x.to(device)
        f = encoder(x) if encoder is not None else feats.to(device).float()
        losses.append(float(F.mse_loss(model(f).float(), target_images(x, target))))
    model.train()
    return float(np.mean(losses)) if losses else None


def _distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(world size, rank, device) under torchrun (one process per GPU, or gloo on CPUs).

    A run started by torchrun joins a process group (NCCL on GPUs, gloo on CPUs) and trains
    through DistributedDataParallel even as a single process, so that ``torchrun
    --nproc_per_node 1`` exercises the multi-GPU path (``scripts/gpu_check.sh``); with one
    process DDP's gradient average is the gradient itself.
    """
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if world > 1 or "TORCHELASTIC_RUN_ID" in os.environ:  # set by torchrun
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, rank, device


def _process_group() -> bool:
    """Whether this process is part of an initialised process group (torchrun)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@dataclass(frozen=True)
class _Inputs:
    """Where the decoder's inputs come from: a feature store, or the extractor on the device.

    ``images`` (at ``images_path``) holds the targets and the extractor's inputs. ``encoder``
    is the target's extractor on the device (``online: true`` and autoencoders) and
    ``encoder_net`` its network (AlexNet layers; trainable in autoencoder mode); otherwise
    ``store`` is the feature store at ``features_path`` (both None with an ``encoder``).
    ``feature_shape`` is one sample's features ``(C, ...)``.
    """

    images: Store
    images_path: str | Path
    encoder: Encoder | None
    encoder_net: nn.Module | None
    store: Store | None
    features_path: str | Path | None
    in_channels: int
    feature_shape: tuple[int, ...]


def _open_inputs(
    target: str,
    params: TrainParams,
    feature_params: Any,
    images_path: str | Path,
    features_path: str | Path | None,
    device: torch.device,
) -> _Inputs:
    """The image store and the target's feature store, or its extractor on ``device``."""
    images = open_store(images_path, kind="images")
    if params.online or params.mode == "autoencoder":
        encoder, net = _online_encoder(target, params, feature_params, device)
        shape = tuple(features.get(target).output_shape(feature_params, 256, 256))  # (C, ...)
        return _Inputs(images, images_path, encoder, net, None, None, int(shape[0]), shape)
    store = _open_features(target, features_path, feature_params, images)
    shape = tuple(store.array("features").shape[1:])  # features: (N, C, ...)
    return _Inputs(images, images_path, None, None, store, features_path, int(shape[0]), shape)


def _run_config(
    target: str,
    params: TrainParams,
    feature_params: Any,
    inputs: _Inputs,
    comparator_params: AlexNetParams | None = None,
) -> dict[str, Any]:
    """``config.json``: what made the decoder (also inside ``model.pt`` and every checkpoint).

    A ``loss: deepsim`` run adds ``deepsim`` (:func:`pipeline.deepsim_training.run_record`:
    the comparator's network and the discriminator's version). Pixel runs record what they
    did before DeePSiM existed.
    """
    extractor = features.get(target)
    described = extractor.describe(feature_params)
    store = inputs.store
    config = {
        "target": target,
        "decoder_version": decoders.version(target),
        "params": params.record(),
        "feature_params": identity_params(feature_params),
        "extractor_version": extractor.version,
        "encoder_weights": described.get("weights") if inputs.encoder_net is not None else None,
        "random_weights": bool(
            described.get("random_weights") if store is None else store.attrs.get("random_weights")
        ),
        "in_channels": inputs.in_channels,
        "images_fingerprint": inputs.images.fingerprint,
        "features_fingerprint": None if store is None else store.fingerprint,
    }
    if params.loss == "deepsim":
        record = deepsim_training.run_record(params.deepsim, comparator_params)
        config["deepsim"] = record
        # a random comparator shaped the weights too: said where every reader looks
        comparator = record["comparator"]
        if comparator is not None and comparator["random_weights"]:
            config["random_weights"] = True
    return config


@dataclass(frozen=True)
class _Run:
    """The fixed facts of one training run, passed to its pieces (torchvision's ``args``).

    ``rank`` and ``world`` are this process's rank and the number of processes (1 without
    torchrun); ``identity`` hashes everything that determines the weights and names the
    checkpoint ``folder``; ``config`` is :func:`_run_config`.
    """

    target: str
    params: TrainParams
    device: torch.device
    rank: int
    world: int
    config: dict[str, Any]
    identity: str
    folder: Path


#: what a decoder started from another one must share with it
_INIT_MUST_MATCH = ("target", "decoder_version", "feature_params", "in_channels")


def _init_record(path: str | Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """``config["init"]`` of a run started from the decoder in ``path`` (``--init-from``).

    The decoder must be of the same target, family version, features and width; the record
    (its file's sha256 and step count, no path) enters the run identity, so a checkpoint
    of a run started from another decoder is not resumed.
    """
    _, made = read_model_file(path)
    for key in _INIT_MUST_MATCH:
        if made.get(key) != config.get(key):
            raise IncompatibleStoreError(
                f"--init-from {str(path)!r}: its {key} is {made.get(key)!r}, this run's "
                f"{config.get(key)!r}; start from a decoder of the same target and features"
            )
    width, own = made["params"].get("width"), config["params"]["width"]
    if width != own:
        raise IncompatibleStoreError(
            f"--init-from {str(path)!r}: width {width}, this run's {own}; set the same width"
        )
    if made["params"].get("mode") == "autoencoder":
        raise IncompatibleStoreError(f"--init-from {str(path)!r}: an autoencoder, not a decoder")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"sha256": digest, "steps": made["params"].get("steps")}


def _build_decoder(
    target: str, params: TrainParams, inputs: _Inputs, device: torch.device
) -> nn.Module:
    """The decoder of ``target``, initialised from ``params.seed``, on ``device``.

    With ``params.input_statistics`` (fixed mode) its :class:`decoders.InputNorm` is set from
    that many training samples, read from the feature store or computed on the device.
    """
    torch.manual_seed(params.seed)
    model = decoders.build(target, width=params.width, in_channels=inputs.in_channels).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if not params.input_statistics or params.mode != "fixed":
        return model
    norm = model.get_submodule("input_norm")
    assert isinstance(norm, decoders.InputNorm)
    path = inputs.images_path if inputs.features_path is None else inputs.features_path
    read = _sample_features(inputs, device)
    skip = None if params.collages else collage_samples(inputs.images_path)
    stats = _feature_batches(read, path, params.input_statistics, params.seed, skip)
    mean, std = input_statistics(stats, inputs.in_channels)
    norm.set(mean.to(device), std.to(device))
    return model


def _sample_features(inputs: _Inputs, device: torch.device) -> Callable[[np.ndarray], torch.Tensor]:
    """A reader of given samples' features: stored, or computed from the images on ``device``."""
    if inputs.store is not None:
        stored = inputs.store.array("features")

        def read(sel: np.ndarray) -> torch.Tensor:  # (B, C, ...)
            return torch.from_numpy(np.stack([stored[int(k) : int(k) + 1][0] for k in sel]))

        return read
    pixels, encoder = inputs.images.array("images"), inputs.encoder
    assert encoder is not None

    def encode(sel: np.ndarray) -> torch.Tensor:  # (B, C, ...)
        x = np.stack([pixels[int(k) : int(k) + 1][0] for k in sel])  # (B, H, W, 3)
        with torch.no_grad():
            return encoder(torch.from_numpy(x).permute(0, 3, 1, 2).to(device))  # (B, 3, H, W) in

    return encode


def _build_optimiser(
    model: nn.Module, encoder_net: nn.Module | None, params: TrainParams
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.StepLR]:
    """Adam over the decoder (and the encoder in autoencoder mode) and its step decay."""
    trainable = list(model.parameters())
    if params.mode == "autoencoder" and encoder_net is not None:
        trainable += list(encoder_net.parameters())
    opt = torch.optim.Adam(trainable, lr=params.lr, betas=params.betas)
    return opt, torch.optim.lr_scheduler.StepLR(opt, params.lr_decay_every, params.lr_decay)


def _build_adversary(
    params: TrainParams,
    inputs: _Inputs,
    comparator_params: AlexNetParams | None,
    device: torch.device,
) -> Adversary | None:
    """The comparator, discriminator and its Adam of a ``loss: deepsim`` run, else ``None``.

    :func:`pipeline.deepsim_training.build_adversary`, conditioned on the decoder's input
    features, with the decoder's ``width``, seeded from ``params.seed``.
    """
    if params.loss != "deepsim":
        return None
    return deepsim_training.build_adversary(
        params.deepsim,
        comparator_params,
        feature_size=math.prod(inputs.feature_shape),  # (C, ...) -> C*h*w
        width=params.width,
        seed=params.seed,
        device=device,
    )


def _parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel under torchrun, else ``model`` itself."""
    if not _process_group():
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def _batches(loader: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    yield from loader


#: A pixel loss above ``DIVERGENCE_FACTOR`` times the median of the last
#: ``DIVERGENCE_WINDOW`` steps' is a divergence (:func:`diverged`): targets lie in
#: [-0.5, 0.5], so a sane decoder's loss never jumps three orders of magnitude.
DIVERGENCE_FACTOR = 1000.0
DIVERGENCE_WINDOW = 50


def diverged(recent: Sequence[float], loss: float) -> bool:
    """Whether the pixel ``loss`` of a step is a divergence after the losses ``recent``.

    Parameters
    ----------
    recent : sequence of float
        The pixel losses of the steps before it, oldest first; fewer than
        :data:`DIVERGENCE_WINDOW` (the start of a run, or of a resumed one) never diverge.
    loss : float

    Returns
    -------
    bool
        ``loss > DIVERGENCE_FACTOR * median(recent[-DIVERGENCE_WINDOW:])``. Adam at a rate
        too high for a decoder can run stable for hundreds of steps and then explode (LBP,
        width 0.5, lr 1e-3: 0.018 to 3.7e5 within 80 steps); its weights decode noise.
    """
    if len(recent) < DIVERGENCE_WINDOW:
        return False
    return loss > DIVERGENCE_FACTOR * float(np.median(list(recent)[-DIVERGENCE_WINDOW:]))


class _Meter:
    """The loss curve, the losses since its last point, the progress bar (cf. ``MetricLogger``).

    ``curve`` gets a point ``[step, mean loss]`` every ``log_every`` steps and at the last
    step; the bar shows the latest loss and the samples per second of this process. A
    DeePSiM run records a row of values per step (:meth:`DeepSimStep.row`) and its points
    are ``[step, mean of each]``.
    """

    def __init__(
        self, target: str, params: TrainParams, step: int, curve: list[list[float]], show: bool
    ) -> None:
        self.params, self.curve = params, curve
        self.running: list[Any] = []  # floats, or rows of floats (DeePSiM)
        self.recent: deque[float] = deque(maxlen=DIVERGENCE_WINDOW)  # pixel losses
        self.bar = progress_bar(
            total=params.steps,
            initial=step,
            desc=f"train {target}",
            unit="step",
            disable=not show,
            dynamic_ncols=True,
        )
        self.t0, self.n0 = time.perf_counter(), step

    def update(self, step: int, loss: float | tuple[float, ...]) -> None:
        """Record the loss (or row of losses) of the step that brought the run to ``step``."""
        self.running.append(loss)
        if not isinstance(loss, tuple):
            self.recent.append(loss)
        if step % self.params.log_every == 0 or step == self.params.steps:
            if isinstance(loss, tuple):
                self.curve.append([step, *(float(np.mean(c)) for c in zip(*self.running))])
            else:
                self.curve.append([step, float(np.mean(self.running))])
            self.running = []
        rate = (step - self.n0) * self.params.batch_size / max(time.perf_counter() - self.t0, 1e-9)
        last = self.running[-1] if self.running else self.curve[-1][1:]
        latest = last[0] if isinstance(last, (tuple, list)) else last
        self.bar.set_postfix(loss=f"{latest:.4f}", samples_s=f"{rate:.0f}")
        self.bar.update(1)

    def log_speed(self, target: str, step: int, device: torch.device) -> None:
        """Log this process's steps and speed: a run-time fact, never stored in an output."""
        elapsed, done = time.perf_counter() - self.t0, step - self.n0
        if done > 0:
            rate = done * self.params.batch_size / elapsed
            text = "train %s: %d steps in %.1f s (%.1f samples/s on %s)"
            log.info(text, target, done, elapsed, rate, device)


def _run_steps(
    run: _Run,
    net: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    steps: range,
    encoder: Encoder | None,
    meter: _Meter,
    adversary: Adversary | None = None,
) -> None:
    """Take the optimiser steps ``steps`` (counted from 0): the loop between two checkpoints.

    Parameters
    ----------
    run : _Run
    net : nn.Module
        The decoder (or its DDP wrapper).
    opt, sched : Adam and its learning-rate schedule (stepped once per step)
    batches : iterator of ((B, ...) Tensor, (B, 3, 256, 256) Tensor of uint8)
        Features (unused when ``encoder`` is given) and images, from the run's first step on.
    steps : range
    encoder : callable or None
        The target's extractor on the device: frozen in fixed mode, trained in autoencoder mode.
    meter : _Meter
        Records every step's loss.
    adversary : Adversary, optional
        A ``loss: deepsim`` run's: each step is a :func:`deepsim_step` under an RNG
        seeded from ``(seed, step)`` (:func:`~pipeline.deepsim_training.step_rng`) instead of a
        :func:`train_step`.
    """
    trained = encoder if run.params.mode == "autoencoder" else None
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if run.device.type == "cuda"
        else contextlib.nullcontext()
    )
    for step in steps:
        feats, x = next(batches)
        x = x.to(run.device, non_blocking=True)
        with torch.no_grad():
            y = target_images(x, run.target)  # (B, 3, S, S)
            if encoder is not None and trained is None:
                feats = encoder(x)  # online features
            elif encoder is None:
                feats = feats.to(run.device, non_blocking=True).float()
        loss: float | tuple[float, ...]
        try:
            if adversary is None:
                loss = train_step(net, opt, feats, y, encoder=trained, images=x, autocast=autocast)
            else:
                with step_rng(run.params.seed, step, run.device):
                    loss = deepsim_step(
                        net, opt, adversary, feats, y, encoder=trained, images=x, autocast=autocast
                    ).row()
        except PipelineError as err:
            raise PipelineError(f"train {run.target}, step {step}: {err}") from None
        if not isinstance(loss, tuple) and diverged(meter.recent, loss):
            median = float(np.median(list(meter.recent)))
            raise PipelineError(
                f"train {run.target} (seed {run.params.seed}), step {step}: the loss "
                f"diverged ({loss:.3g} against a "
                f"median of {median:.3g} over the last {len(meter.recent)} steps); nothing "
                "from this step on is saved (the last checkpoint is kept): lower train.lr "
                "or train.lr_decay_every for this target, which starts a new run"
            )
        sched.step()
        meter.update(step + 1, loss)


def _fit(
    run: _Run,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    inputs: _Inputs,
    *,
    progress: bool,
    adversary: Adversary | None = None,
) -> tuple[int, list[list[float]]]:
    """Resume the run from its last checkpoint and train it to ``params.steps``.

    A checkpoint is written every ``checkpoint_every`` steps and at the last step (by rank
    0); a DeePSiM run's also holds the discriminator, its Adam and the pausing rule
    (``adversary``, restored on resume). Returns the steps taken and the loss curve, both
    counted from the run's start.
    """
    p, device = run.params, run.device
    restore = None if adversary is None else adversary.restore
    resumed = resume_checkpoint(
        run.folder, run.identity, model, opt, sched, inputs.encoder_net, restore=restore
    )
    if resumed is not None:
        log.info("resuming %s from step %d (%s)", run.target, resumed[0], run.folder)
    step, curve = resumed or (0, [])
    net = _parallel(model, device)
    stream = StoreStream(
        inputs.images_path,
        inputs.features_path,
        batch_size=p.batch_size,
        params=p.loader,
        seed=p.seed,
        start_batch=step,
        rank=run.rank,
        world_size=run.world,
        collages=p.collages,
    )
    loader = make_loader(stream, pin_memory=device.type == "cuda")
    meter = _Meter(run.target, p, step, curve, show=progress and run.rank == 0)
    model.train()
    batches = _batches(loader)
    try:
        while step < p.steps:
            stop = min(p.steps, (step // p.checkpoint_every + 1) * p.checkpoint_every)
            todo = range(step, stop)
            _run_steps(run, net, opt, sched, batches, todo, inputs.encoder, meter, adversary)
            step = stop
            if run.rank == 0:
                disc = None if adversary is None else adversary.disc
                weights = model_weights(model, run.config, inputs.encoder_net, disc)
                extra = None if adversary is None else adversary.checkpoint_state()
                save_checkpoint(
                    run.folder, step, weights, opt, sched, meter.curve, run.identity, extra
                )
    finally:
        meter.bar.close()
        del batches, loader
    meter.log_speed(run.target, step, device)
    return step, meter.curve


def _write_outputs(
    out: Path,
    blob: Mapping[str, Any],
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    curve: list[list[float]],
    metrics_path: str | Path | None,
    plots_path: str | Path | None,
) -> None:
    """``model.pt``, ``config.json``, the metrics JSON and the loss CSV.

    The CSV is ``step,loss``; a DeePSiM run's points carry :attr:`DeepSimStep.COLUMNS`.
    """
    out.mkdir(parents=True, exist_ok=True)
    save_atomic(blob, out / "model.pt")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if metrics_path is not None:
        Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics_path).write_text(json.dumps(metrics, indent=2) + "\n")
    if plots_path is not None:
        Path(plots_path).parent.mkdir(parents=True, exist_ok=True)
        if curve and len(curve[0]) > 2:  # DeePSiM
            head = ",".join(("step", *DeepSimStep.COLUMNS))
            lines = [head] + [f"{s}," + ",".join(f"{v:.6g}" for v in vs) for s, *vs in curve]
        else:
            lines = ["step,loss"] + [f"{s},{v:.6g}" for s, v in curve]
        Path(plots_path).write_text("\n".join(lines) + "\n")


def _metrics(
    run: _Run,
    model: nn.Module,
    inputs: _Inputs,
    step: int,
    curve: list[list[float]],
    adversary: Adversary | None = None,
) -> dict[str, Any]:
    """The metrics JSON: steps, final train loss and test loss, parameters.

    ``train_loss`` is the pixel MSE (comparable with ``test_loss``) for either loss; a
    DeePSiM run adds its objective and how often the pausing rule paused each side.
    """
    if inputs.encoder_net is not None:
        inputs.encoder_net.eval()
    images, stored, encoder = inputs.images_path, inputs.features_path, inputs.encoder
    test_loss = evaluate_loss(model, run.target, images, stored, run.params, run.device, encoder)
    pixel = 1 if adversary is None else 1 + DeepSimStep.COLUMNS.index("pixel")
    metrics: dict[str, Any] = {
        "target": run.target,
        "steps": step,
        # pixel MSE to 4 significant digits: the float noise between machines is below that
        "train_loss": float(f"{curve[-1][pixel]:.4g}") if curve else math.nan,
        "test_loss": None if test_loss is None else float(f"{test_loss:.4g}"),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if adversary is not None:
        metrics.update(deepsim_training.run_metrics(adversary, curve))
    return metrics


def train(
    target: str,
    *,
    images_path: str | Path,
    features_path: str | Path | None,
    out: str | Path,
    checkpoints: str | Path,
    params: TrainParams,
    feature_params: Any | None = None,
    metrics_path: str | Path | None = None,
    plots_path: str | Path | None = None,
    progress: bool = True,
    comparator_params: Any | None = None,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train (or resume, or finish) the decoder of ``target``.

    Parameters
    ----------
    target : str
        One of :data:`pipeline.decoders.TARGETS`.
    images_path : str or Path
        The image store (targets, and inputs of online features).
    features_path : str or Path or None
        The feature store of ``target``; ``None`` with ``params.online`` or an autoencoder.
    out : str or Path
        Folder for ``model.pt`` and ``config.json``.
    checkpoints : str or Path
        Parent folder of the checkpoint folders (one per run identity).
    params : TrainParams
    feature_params : params dataclass or mapping, optional
        The target extractor's parameters (``extract.hog``, ``extract.alexnet``, ...; the
        paper's defaults when omitted): the feature store must have been made with them;
        online and in autoencoder mode they configure the extractor on the device.
    metrics_path, plots_path : str or Path, optional
        Metrics JSON and loss-curve CSV.
    progress : bool
        Show a progress bar.
    comparator_params : AlexNetParams or mapping, optional
        The ``extract.alexnet`` section (arch and weights): the comparator network of a
        ``loss: deepsim`` run with ``lambda_feat > 0``, where it is required. Not used
        otherwise.
    init_from : str or Path, optional
        A trained decoder (``model.pt``) of the same target, features and width to start
        from instead of a random initialisation: a DeePSiM run fine-tuning the pixel-loss
        decoder (``invert train --init-from``). Its sha256 is part of the run's identity.

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Besides invalid inputs: ``loss: deepsim`` with a feature term and no
        ``comparator_params``.
    """
    if target not in decoders.TARGETS:
        raise ConfigError(f"unknown target {target!r}; targets: {', '.join(decoders.TARGETS)}")
    if params.ensemble > 1 and (params.mode != "fixed" or params.loss != "pixel"):
        raise ConfigError(
            f"ensemble: {params.ensemble} (train.ensemble or train.{target}.ensemble) trains "
            f"fixed decoders with the pixel loss; this {target} run is mode {params.mode}, "
            f"loss {params.loss}: set train.{target}.ensemble to 1 (and leave train.ensemble "
            "unset)"
        )
    if feature_params is None or isinstance(feature_params, Mapping):
        feature_params = features.parse_params(target, dict(feature_params or {}))
    comparator = deepsim_training.comparator_params(params.deepsim, comparator_params)
    world, rank, device = _distributed(resolve_device(params.device))
    inputs = _open_inputs(target, params, feature_params, images_path, features_path, device)
    config = _run_config(target, params, feature_params, inputs, comparator)
    if init_from is not None:
        if params.mode != "fixed":
            raise ConfigError("--init-from starts a fixed decoder; not an autoencoder")
        config["init"] = _init_record(init_from, config)
    if init_from is not None and "members" in read_model_file(init_from)[0]:
        raise ConfigError(
            f"--init-from {str(init_from)!r} is an ensemble (train.ensemble > 1); start from a "
            "single decoder"
        )
    models: list[nn.Module] = []
    curves: list[list[list[float]]] = []
    for m in range(params.ensemble):
        # member m: the run of seed + m alone (its own checkpoints; member 0 is the plain run)
        member = (
            params if params.ensemble == 1 else replace(params, seed=params.seed + m, ensemble=1)
        )
        made = config if member is params else {**config, "params": member.record()}
        identity = identity_of({**made, "params": member.identity_fields(), "world_size": world})
        folder = Path(checkpoints) / f"{target}-{identity[:16]}"
        folder.mkdir(parents=True, exist_ok=True)
        run = _Run(target, member, device, rank, world, made, identity, folder)
        if params.ensemble > 1:
            log.info(
                "train %s: ensemble member %d of %d (seed %d)",
                target,
                m + 1,
                params.ensemble,
                member.seed,
            )
        model = _build_decoder(target, member, inputs, device)
        if init_from is not None:
            model.load_state_dict(read_model_file(init_from)[0]["model"])
        opt, sched = _build_optimiser(model, inputs.encoder_net, member)
        adversary = _build_adversary(member, inputs, comparator, device)
        step, curve = _fit(run, model, opt, sched, inputs, progress=progress, adversary=adversary)
        models.append(model)
        curves.append(curve)
    if rank != 0:
        return TrainResult(Path(out) / "model.pt", {"rank": rank})
    out = Path(out)
    if len(models) == 1:
        metrics = _metrics(run, model, inputs, step, curve, adversary)
        disc = None if adversary is None else adversary.disc
        weights = model_weights(model, config, inputs.encoder_net, disc)
    else:  # the members' mean decodes; the loss curve is the members' mean at each step
        curve = [[rows[0][0], sum(r[1] for r in rows) / len(rows)] for rows in zip(*curves)]
        metrics = _metrics(run, decoders.Ensemble(models), inputs, step, curve)
        states = [m.state_dict() for m in models]
        weights = {"members": states, "config": json.dumps(config)}
    _write_outputs(out, weights, config, metrics, curve, metrics_path, plots_path)
    return TrainResult(out / "model.pt", metrics)
