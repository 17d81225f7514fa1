"""Train a decoder to invert a representation (``invert train TARGET``), SPEC §5.

Pixel-space mean squared error, Adam, step decay of the learning rate; only the decoder
trains (mode ``fixed``). Batches stream from the stores (:mod:`pipeline.loader`) or, with
``online: true``, the features are computed from the images on the training device.

Checkpoints are written every ``checkpoint_every`` steps into a folder named by the hash of
everything that determines the weights (target, decoder, optimiser settings, seed, loader,
input stores): a run that is killed and started again with the same inputs resumes from the
last good checkpoint and reaches the same weights as an uninterrupted run (deterministic on
the CPU). Checkpoints hold tensors and plain data only and are loaded with
``torch.load(..., weights_only=True)``.

Outputs: ``OUT/model.pt`` (weights + config), ``OUT/config.json``, a metrics JSON for
``dvc metrics show`` and a loss-curve CSV for ``dvc plots show``.

References
----------
A. Dosovitskiy, T. Brox. Inverting Visual Representations with Convolutional Networks.
CVPR 2016, Sec. 3 (training).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pipeline import __version__, alexnet, decoders
from pipeline.config import as_dict, parse
from pipeline.errors import ConfigError, IncompatibleStoreError, PipelineError
from pipeline.loader import LoaderParams, StoreStream, make_loader
from pipeline.store import identity_of, open_store

__all__ = [
    "TrainParams",
    "TrainResult",
    "load_decoder",
    "load_encoder",
    "parse_train_section",
    "resolve_device",
    "target_images",
    "train",
]

log = logging.getLogger(__name__)

#: Pixel targets are x / 255 - 0.5: zero-centred, so the decoder's last (linear) layer
#: starts near the mean image.
PIXEL_OFFSET = 0.5
#: AlexNet targets: the centre crop the network saw (SPEC §1).
ALEXNET_CROP = 227


class CheckpointError(PipelineError):
    """A checkpoint that cannot be read (truncated, corrupt) or belongs to another run."""


@dataclass(frozen=True)
class TrainParams:
    """The ``train`` section of ``params.yaml`` (per-target subsections override it).

    Attributes
    ----------
    mode : {"fixed", "autoencoder"}
        ``fixed``: only the decoder trains on cached (or online) features.
        ``autoencoder``: the AlexNet encoder trains jointly (AlexNet targets only).
    width : float
        Scale of every hidden channel count of the decoder; 1.0 is the paper's network.
    steps : int
        Optimiser steps (the paper: a few hundred thousand).
    batch_size : int
        The paper: 64.
    lr : float
        Adam learning rate (the paper: 1e-4).
    betas : tuple of float
        Adam's (β1, β2) (the paper: 0.9, 0.999).
    lr_decay_every, lr_decay : int, float
        Multiply the learning rate by ``lr_decay`` every ``lr_decay_every`` steps.
    checkpoint_every : int
        Steps between checkpoints (and at the end).
    log_every : int
        Steps between loss-curve points.
    seed : int
        Decoder initialisation and data order.
    device : str
        ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:1``.
    online : bool
        Compute the features from the images on the training device instead of reading a
        feature store (the sane choice for CONV1 at ImageNet scale).
    arch, weights : str
        The AlexNet of online AlexNet features and of the autoencoder's encoder (its
        initialisation). With a feature store, the store's provenance names the network.
    eval_batches : int
        Test-split batches averaged for the final ``test_loss``.
    loader : LoaderParams
    """

    mode: Literal["fixed", "autoencoder"] = "fixed"
    width: float = 1.0
    steps: int = 300_000
    batch_size: int = 64
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    lr_decay_every: int = 100_000
    lr_decay: float = 0.5
    checkpoint_every: int = 5_000
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    online: bool = False
    arch: str = "caffenet"
    weights: str = "random:0"
    eval_batches: int = 4
    loader: LoaderParams = field(default_factory=LoaderParams)

    def __post_init__(self) -> None:
        checks = {
            "width": self.width > 0,
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "lr_decay_every": self.lr_decay_every >= 1,
            "lr_decay": 0 < self.lr_decay <= 1,
            "checkpoint_every": self.checkpoint_every >= 1,
            "log_every": self.log_every >= 1,
            "eval_batches": self.eval_batches >= 0,
            "betas": len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid train value(s) for {', '.join(bad)}: {self}")

    def identity_fields(self) -> dict[str, Any]:
        """What determines the weights (not steps, logging, checkpointing or device)."""
        d = as_dict(self)
        for k in ("steps", "checkpoint_every", "log_every", "device", "eval_batches"):
            d.pop(k)
        d["loader"].pop("prefetch")
        d["loader"].pop("pin_memory")
        return d


def parse_train_section(section: Mapping[str, Any] | None, target: str) -> TrainParams:
    """The ``train`` section with target ``target``'s subsection applied on top.

    Parameters
    ----------
    section : mapping or None
        ``{<common keys>, autoencoder: {...}, <target>: {<overrides>}, ...}``; keys naming a
        decoder target hold that target's overrides; ``autoencoder`` holds overrides applied
        when ``mode`` is ``autoencoder`` (before the target's).
    target : str

    Returns
    -------
    TrainParams
    """
    if target not in decoders.TARGETS:
        raise ConfigError(f"unknown target {target!r}; targets: {', '.join(decoders.TARGETS)}")
    section = dict(section or {})
    overrides = {k: section.pop(k) for k in list(section) if k in decoders.TARGETS}
    autoencoder = section.pop("autoencoder", None) or {}
    if not isinstance(autoencoder, Mapping):
        raise ConfigError("params section 'train.autoencoder' must be a mapping")
    if section.get("mode") == "autoencoder":  # the autoencoder subsection applies on top
        section = {**section, **{k: v for k, v in autoencoder.items() if k != "loader"}}
        if "loader" in autoencoder:
            section["loader"] = {**dict(section.get("loader") or {}), **autoencoder["loader"]}
    else:
        parse(TrainParams, {**section, **dict(autoencoder)}, section="train.autoencoder")
    merged = dict(section)
    own = overrides.get(target) or {}
    if not isinstance(own, Mapping):
        raise ConfigError(f"params section 'train.{target}' must be a mapping")
    for key, value in own.items():
        if key == "loader" and isinstance(value, Mapping):
            merged["loader"] = {**dict(merged.get("loader") or {}), **dict(value)}
        else:
            merged[key] = value
    for name, sub in overrides.items():  # validate the other targets' keys too
        if name != target:
            parse(TrainParams, {**section, **dict(sub or {})}, section=f"train.{name}")
    return parse(TrainParams, merged, section=f"train.{target}")


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given (checked)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for but CUDA is not available; use auto or cpu")
    return device


def target_images(x: torch.Tensor, target: str) -> torch.Tensor:
    """The reconstruction target of a batch of images (SPEC §4).

    Parameters
    ----------
    x : (B, 3, 256, 256) Tensor of uint8
        Images of the image store.
    target : str

    Returns
    -------
    (B, 3, S, S) Tensor of float32
        ``x / 255 - 0.5`` at the decoder's output size S: the image itself for the shallow
        features (256); for AlexNet layers the 227 centre crop the network saw, resized with
        antialiasing to 216 / 208 / 192 / 128.
    """
    y = x.float() / 255.0 - PIXEL_OFFSET
    size = decoders.output_size(target)
    if target in ("hog", "sift", "lbp"):
        return (
            y
            if y.shape[-1] == size
            else F.interpolate(
                y, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        )
    top = (y.shape[-2] - ALEXNET_CROP) // 2
    left = (y.shape[-1] - ALEXNET_CROP) // 2
    crop = y[..., top : top + ALEXNET_CROP, left : left + ALEXNET_CROP]
    return F.interpolate(
        crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


@dataclass(frozen=True)
class TrainResult:
    """Where a training run left its outputs and its final figures."""

    model_path: Path
    metrics: dict[str, Any]


# -- online features ----------------------------------------------------------------------
def _online_encoder(
    target: str, params: TrainParams, feature_params: Mapping[str, Any], device: torch.device
) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module | None]:
    """Features of uint8 image batches computed on their device.

    Returns the function and, for AlexNet layers, the network (trainable in autoencoder
    mode, frozen otherwise).
    """
    if target == "hog" and params.mode == "fixed":
        from pipeline.features.hog import HogParams, hog_torch

        hp = parse(HogParams, feature_params, section="extract.hog")
        return (lambda x: hog_torch(x.float() / 255.0, hp)), None
    if target in alexnet.LAYERS:
        net = alexnet.build(params.arch, weights=params.weights).to(device)
        trainable = params.mode == "autoencoder"
        net.train(trainable)
        for p in net.parameters():
            p.requires_grad_(trainable)

        def encode(x: torch.Tensor) -> torch.Tensor:
            # (B, 3, 256, 256) uint8 -> the network's crop -> (B, C, h, w) or (B, C)
            images = x.permute(0, 2, 3, 1).float() / 255.0  # (B, H, W, 3) in [0, 1]
            return net.forward_layers(alexnet.preprocess(images, params.arch), [target])[target]

        return encode, net
    what = "an autoencoder" if params.mode == "autoencoder" else "online features"
    raise ConfigError(
        f"{what} is not available for {target!r} (AlexNet layers only"
        f"{'' if params.mode == 'autoencoder' else ' and hog'}); extract a feature store and "
        "set online: false, mode: fixed"
    )


# -- checkpoints --------------------------------------------------------------------------
def _save_atomic(obj: Mapping[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(dict(obj), tmp)
    os.replace(tmp, path)


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))


def _load_checkpoint(folder: Path, identity: str) -> dict[str, Any] | None:
    """The newest readable checkpoint of this run; a corrupt newest one falls back to older."""
    for path in reversed(_checkpoints(folder)):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
            log.warning("checkpoint %s is unreadable (%s); trying an older one", path, err)
            continue
        if ckpt.get("identity") != identity:
            raise CheckpointError(
                f"checkpoint {str(path)!r} belongs to another run; delete {str(folder)!r}"
            )
        return dict(ckpt)
    if _checkpoints(folder):
        raise CheckpointError(
            f"no readable checkpoint in {str(folder)!r} (all truncated or corrupt); delete the "
            "folder to train from scratch"
        )
    return None


def load_encoder(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module | None:
    """The trained AlexNet encoder of an autoencoder ``model.pt`` (``None`` for fixed mode)."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    if "encoder" not in blob:
        return None
    config = json.loads(blob["config"])
    net = alexnet.build(config["params"]["arch"], weights="random:0")
    net.load_state_dict(blob["encoder"])
    return net.to(device).eval()


def load_decoder(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a trained decoder (``model.pt``) without executing code.

    Returns
    -------
    model : nn.Module
        In eval mode.
    config : dict
        The effective training config and provenance it was trained with.
    """
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"cannot read decoder {str(path)!r}: {err}; retrain it") from err
    config = json.loads(blob["config"])
    model = decoders.build(
        config["target"], width=config["params"]["width"], in_channels=config.get("in_channels")
    )
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as err:
        raise CheckpointError(f"decoder {str(path)!r} does not match its config: {err}") from err
    return model.to(device).eval(), config


# -- the loop -----------------------------------------------------------------------------
def _batches(loader: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    yield from loader


def train(
    target: str,
    *,
    images_path: str | Path,
    features_path: str | Path | None,
    out: str | Path,
    checkpoints: str | Path,
    params: TrainParams,
    feature_params: Mapping[str, Any] | None = None,
    metrics_path: str | Path | None = None,
    plots_path: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume, or finish) the decoder of ``target``.

    Parameters
    ----------
    target : str
        One of :data:`pipeline.decoders.TARGETS`.
    images_path : str or Path
        The image store (targets, and inputs of online features).
    features_path : str or Path or None
        The feature store of ``target``; ``None`` with ``params.online``.
    out : str or Path
        Folder for ``model.pt`` and ``config.json``.
    checkpoints : str or Path
        Parent folder of the checkpoint folders (one per run identity).
    params : TrainParams
    feature_params : mapping, optional
        The extractor's parameters: the feature store must have been made with them; with
        ``online`` they configure the on-device extractor.
    metrics_path, plots_path : str or Path, optional
        Metrics JSON and loss-curve CSV.
    progress : bool
        Show a progress bar.

    Returns
    -------
    TrainResult
    """
    device = resolve_device(params.device)
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if world > 1:  # started by torchrun: one process per GPU (or CPU process with gloo)
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    images = open_store(images_path, kind="images")
    feats_store = None
    in_channels = None
    online = params.online or params.mode == "autoencoder"
    encoder_net: nn.Module | None = None
    if online:
        encoder, encoder_net = _online_encoder(target, params, feature_params or {}, device)
        if encoder_net is not None:
            in_channels = int(alexnet.output_shape(params.arch, target)[0])
    else:
        if features_path is None:
            raise ConfigError(f"train {target}: give --features STORE or set online: true")
        from pipeline import features as feature_registry
        from pipeline.extract import open_feature_store

        fp = None
        if feature_params is not None and target in feature_registry.names():
            fp = feature_registry.parse_params(target, dict(feature_params))
        feats_store = open_feature_store(features_path, target, fp, images=images)
        shape = feats_store.array("features").shape[1:]
        expected = decoders.input_shape(target)
        if tuple(shape[1:]) != tuple(expected[1:]):
            raise IncompatibleStoreError(
                f"feature store {str(features_path)!r} holds {shape} per sample; the {target} "
                f"decoder takes {expected}: the images must be 256x256 with the paper's cell size"
            )
        in_channels = int(shape[0])

    config = {
        "target": target,
        "params": as_dict(params),
        "encoder_weights": None
        if encoder_net is None
        else alexnet.describe_weights(params.weights),
        "random_weights": bool(
            (encoder_net is not None and alexnet.is_random_weights(params.weights))
            or (feats_store is not None and feats_store.attrs.get("random_weights"))
        ),
        "in_channels": in_channels,
        "feature_params": dict(feature_params or {}),
        "images_fingerprint": images.fingerprint,
        "features_fingerprint": None if feats_store is None else feats_store.fingerprint,
        "code_version": __version__,
    }
    identity = identity_of({**config, "params": params.identity_fields(), "world_size": world})
    ckpt_dir = Path(checkpoints) / f"{target}-{identity[:16]}"
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(params.seed)
    model = decoders.build(target, width=params.width, in_channels=in_channels).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    trainable = list(model.parameters())
    if params.mode == "autoencoder" and encoder_net is not None:
        trainable += list(encoder_net.parameters())
    opt = torch.optim.Adam(trainable, lr=params.lr, betas=params.betas)
    sched = torch.optim.lr_scheduler.StepLR(opt, params.lr_decay_every, params.lr_decay)
    step, curve = 0, []
    ckpt = _load_checkpoint(ckpt_dir, identity)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        if encoder_net is not None and "encoder" in ckpt:
            encoder_net.load_state_dict(ckpt["encoder"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        step, curve = int(ckpt["step"]), [list(p) for p in ckpt["curve"]]
        log.info("resuming %s from step %d (%s)", target, step, ckpt_dir)

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def save(at: int) -> None:
        if rank != 0:
            return
        extra = {} if encoder_net is None else {"encoder": encoder_net.state_dict()}
        _save_atomic(
            {
                **extra,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "step": at,
                "curve": curve,
                "identity": identity,
                "config": json.dumps(config),
            },
            ckpt_dir / f"step-{at}.pt",
        )
        for old in _checkpoints(ckpt_dir)[:-2]:  # keep the last two: one may be cut short
            old.unlink()

    stream = StoreStream(
        images_path,
        None if online else features_path,
        batch_size=params.batch_size,
        params=params.loader,
        seed=params.seed,
        start_batch=step,
        rank=rank,
        world_size=world,
    )
    loader = make_loader(stream, pin_memory=device.type == "cuda")
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    bar = tqdm(
        total=params.steps,
        initial=step,
        desc=f"train {target}",
        unit="step",
        disable=not progress or rank != 0,
        dynamic_ncols=True,
    )
    t0, n0 = time.perf_counter(), step
    running: list[float] = []
    model.train()
    batches = _batches(loader)
    try:
        while step < params.steps:
            feats, x = next(batches)
            x = x.to(device, non_blocking=True)
            with torch.no_grad():
                y = target_images(x, target)
                if online and params.mode == "fixed":
                    f = encoder(x)
                elif not online:
                    f = feats.to(device, non_blocking=True).float()
            with autocast:
                if params.mode == "autoencoder":
                    f = encoder(x)  # the encoder trains with the decoder
                out_img = net(f)
                loss = F.mse_loss(out_img.float(), y)
            if not torch.isfinite(loss):
                raise PipelineError(
                    f"train {target}: loss became {loss.item()} at step {step}; lower lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            running.append(loss.item())
            if step % params.log_every == 0 or step == params.steps:
                curve.append([step, float(np.mean(running))])
                running = []
            rate = (step - n0) * params.batch_size / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(
                loss=f"{running[-1] if running else curve[-1][1]:.4f}", samples_s=f"{rate:.0f}"
            )
            bar.update(1)
            if step % params.checkpoint_every == 0 or step == params.steps:
                save(step)
    finally:
        bar.close()
        del batches, loader
    elapsed = time.perf_counter() - t0

    if rank != 0:
        return TrainResult(Path(out) / "model.pt", {"rank": rank})
    if encoder_net is not None:
        encoder_net.eval()
    test_loss = _evaluate(
        model,
        target,
        images_path,
        None if online else features_path,
        params,
        device,
        encoder if online else None,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = {} if encoder_net is None else {"encoder": encoder_net.state_dict()}
    _save_atomic(
        {**extra, "model": model.state_dict(), "config": json.dumps(config)}, out / "model.pt"
    )
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    metrics = {
        "target": target,
        "steps": step,
        "train_loss": curve[-1][1] if curve else math.nan,
        "test_loss": test_loss,
        "parameters": sum(p.numel() for p in model.parameters()),
        "samples_per_s": (step - n0) * params.batch_size / elapsed if step > n0 else None,
        "device": str(device),
    }
    if metrics_path is not None:
        Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics_path).write_text(json.dumps(metrics, indent=2) + "\n")
    if plots_path is not None:
        Path(plots_path).parent.mkdir(parents=True, exist_ok=True)
        lines = ["step,loss"] + [f"{s},{v:.6g}" for s, v in curve]
        Path(plots_path).write_text("\n".join(lines) + "\n")
    return TrainResult(out / "model.pt", metrics)


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    target: str,
    images_path: str | Path,
    features_path: str | Path | None,
    params: TrainParams,
    device: torch.device,
    encoder: Callable[[torch.Tensor], torch.Tensor] | None,
) -> float | None:
    """Mean pixel MSE over the first ``eval_batches`` test batches (a fixed order)."""
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
