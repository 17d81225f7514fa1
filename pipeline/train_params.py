"""The ``train`` section of ``params.yaml``: :class:`TrainParams` and its parser.

:func:`parse_train_section` reads the common keys, the ``autoencoder`` overrides, a target's
own subsection and the ``deepsim_run`` overrides of a ``loss: deepsim`` run, in that order,
validating every subsection it is given (also those of other targets), and returns the frozen
:class:`TrainParams` of one run. :meth:`TrainParams.record` is what a run records and
:meth:`TrainParams.identity_fields` what names its checkpoint folder; the loop that uses them
is :mod:`pipeline.training`.

References
----------
A. Dosovitskiy, T. Brox. Inverting Visual Representations with Convolutional Networks.
CVPR 2016, Sec. 3 (training).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pipeline import decoders
from pipeline.config import as_dict, parse
from pipeline.deepsim import LOSSES, DeepSimParams
from pipeline.errors import ConfigError
from pipeline.loader import LoaderParams

__all__ = ["TrainParams", "parse_train_section"]


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
    eval_batches : int
        Test-split batches averaged for the final ``test_loss``.
    collages : bool
        Train on the image store's collages as well as its photographs (``prepare.collages``,
        :mod:`pipeline.collages`); ``false``: on the photographs only (the same store, the
        collages skipped by the loader and the input statistics). A per-target choice: LBP
        codes carry no intensity, and the collages' flat disks did not teach an LBP decoder
        to guess it on new photographs (README, results).
    ensemble : int
        Decoders trained, from seeds ``seed``, ``seed + 1``, ...; more than one makes the
        model file an ensemble that decodes with their mean
        (:class:`pipeline.decoders.Ensemble`). 1 is the paper. Fixed mode with the pixel
        loss only (:func:`pipeline.training.train` refuses the others; a target's
        subsection may set it while other targets train as autoencoders).
    input_statistics : int
        Training samples whose features set the decoder's per-channel input standardisation
        (:class:`pipeline.decoders.InputNorm`); 0 leaves the raw features (the paper). Not
        used in autoencoder mode, where the encoder's output changes as it trains.
    loader : LoaderParams
    loss : {"pixel", "deepsim"}
        ``pixel``: the paper's pixel MSE alone (:func:`pipeline.training.train_step`).
        ``deepsim``: the follow-up's pixel + feature + adversarial mix
        (:func:`pipeline.deepsim_training.deepsim_step`, [1]).
    deepsim : DeepSimParams
        The ``train.deepsim`` subsection: [1]'s weights, comparator layer, pausing rule and
        discriminator optimiser; used only with ``loss: deepsim``. Its own ``loss`` field
        is set to ``loss`` whatever it was given (and validated for it);
        ``train.deepsim.loss`` is refused by :func:`parse_train_section`.

    Notes
    -----
    ``loss`` and ``deepsim`` enter the recorded config and the run identity only when
    ``loss`` is ``deepsim``, so a pixel run's files are those of the code before DeePSiM;
    ``collages`` only when it is ``false`` and ``ensemble`` only when it is above 1, for
    the same reason.

    References
    ----------
    .. [1] A. Dosovitskiy, T. Brox. Generating Images with Perceptual Similarity Metrics
       based on Deep Networks. NIPS 2016 (:mod:`pipeline.deepsim`).
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
    eval_batches: int = 4
    input_statistics: int = 1024
    collages: bool = True
    ensemble: int = 1
    loader: LoaderParams = field(default_factory=LoaderParams)
    loss: Literal["pixel", "deepsim"] = "pixel"
    deepsim: DeepSimParams = field(default_factory=DeepSimParams)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"invalid train value for loss: {self.loss!r}; use one of {LOSSES}")
        if self.deepsim.loss != self.loss:  # the subsection's loss follows train.loss
            object.__setattr__(self, "deepsim", replace(self.deepsim, loss=self.loss))
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
            "input_statistics": self.input_statistics >= 0,
            "ensemble": self.ensemble >= 1,
            "betas": len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid train value(s) for {', '.join(bad)}: {self}")

    def record(self) -> dict[str, Any]:
        """The params as recorded in ``config.json``, ``model.pt`` and every checkpoint.

        ``loss`` and ``deepsim`` appear only for a ``deepsim`` run (without the subsection's
        copy of ``loss``): a pixel run records what it recorded before DeePSiM existed.
        """
        d = as_dict(self)
        if self.collages:  # the defaults: recorded as before the keys existed
            d.pop("collages")
        if self.ensemble == 1:
            d.pop("ensemble")
        if self.loss == "pixel":
            d.pop("loss")
            d.pop("deepsim")
        else:
            d["deepsim"].pop("loss")
        return d

    def identity_fields(self) -> dict[str, Any]:
        """What determines the weights (not steps, logging, checkpointing or device)."""
        d = self.record()
        for k in ("steps", "checkpoint_every", "log_every", "device", "eval_batches"):
            d.pop(k)
        d["loader"].pop("prefetch")
        d["loader"].pop("pin_memory")
        return d


#: subsections merged key by key when an override names them (the rest are replaced whole)
_NESTED = ("loader", "deepsim")


def _overlay(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s keys on top; :data:`_NESTED` subsections merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        if key in _NESTED and isinstance(value, Mapping):
            merged[key] = {**dict(merged.get(key) or {}), **dict(value)}
        else:
            merged[key] = value
    return merged


def _refuse_nested_loss(section: Mapping[str, Any], where: str) -> None:
    """``where.deepsim.loss`` would say the loss twice: it is set by ``where.loss`` alone."""
    sub = section.get("deepsim") if isinstance(section, Mapping) else None
    if isinstance(sub, Mapping) and "loss" in sub:
        raise ConfigError(
            f"params key '{where}.deepsim.loss' is not allowed: choose the loss with "
            f"'{where}.loss: deepsim' (or pixel); train.deepsim holds its weights only"
        )


def _deepsim_run(section: dict[str, Any], where: str) -> dict[str, Any]:
    """Pop and check ``where.deepsim_run``: the overrides of a ``loss: deepsim`` run."""
    run = section.pop("deepsim_run", None) or {}
    if not isinstance(run, Mapping):
        raise ConfigError(f"params section '{where}.deepsim_run' must be a mapping")
    if "loss" in run or "deepsim_run" in run:
        raise ConfigError(
            f"params section '{where}.deepsim_run' holds the other train keys of a DeePSiM "
            "run (steps, batch_size, lr, ...); the loss is chosen by train.loss or --loss"
        )
    return dict(run)


def parse_train_section(
    section: Mapping[str, Any] | None, target: str, *, loss: str | None = None
) -> TrainParams:
    """The ``train`` section with target ``target``'s subsection applied on top.

    Parameters
    ----------
    section : mapping or None
        ``{<common keys>, autoencoder: {...}, deepsim_run: {...}, <target>: {<overrides>},
        ...}``; keys naming a decoder target hold that target's overrides; ``autoencoder``
        holds overrides applied when ``mode`` is ``autoencoder`` (before the target's);
        ``deepsim_run`` (also inside a target's subsection, merged key by key into the
        common one) holds overrides applied last when the loss is ``deepsim`` — a DeePSiM
        run of a target next to its pixel run (``invert train hog --loss deepsim``). The
        ``loader`` and ``deepsim`` subsections of an override are merged key by key
        (``train.hog.deepsim: {lambda_adv: 0}`` keeps ``train.deepsim``'s other keys).
    target : str
    loss : {"pixel", "deepsim"}, optional
        Overrides ``loss`` after the target's subsection (``invert train --loss``).

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
    deepsim_run = _deepsim_run(section, "train")
    _refuse_nested_loss(section, "train")
    _refuse_nested_loss(autoencoder, "train.autoencoder")
    parse(TrainParams, section, section="train")  # the common keys, reported as train.KEY
    parse(TrainParams, {**section, **deepsim_run}, section="train.deepsim_run")
    parse(TrainParams, {**section, **dict(autoencoder)}, section="train.autoencoder")
    if section.get("mode") == "autoencoder":  # the autoencoder subsection applies on top
        section = _overlay(section, autoencoder)
    own = overrides.get(target) or {}
    if not isinstance(own, Mapping):
        raise ConfigError(f"params section 'train.{target}' must be a mapping")
    runs = {}
    for name, sub in overrides.items():  # validate the other targets' keys too
        if not isinstance(sub or {}, Mapping):
            raise ConfigError(f"params section 'train.{name}' must be a mapping")
        sub = dict(sub or {})
        _refuse_nested_loss(sub, f"train.{name}")
        runs[name] = {**deepsim_run, **_deepsim_run(sub, f"train.{name}")}
        parse(TrainParams, {**section, **sub}, section=f"train.{name}")
        parse(TrainParams, {**section, **sub, **runs[name]}, section=f"train.{name}.deepsim_run")
        overrides[name] = sub
    merged = _overlay(section, overrides.get(target) or {})
    if loss is not None:
        merged["loss"] = loss
    if merged.get("loss") == "deepsim":
        merged = _overlay(merged, runs.get(target, deepsim_run))
    return parse(TrainParams, merged, section=f"train.{target}")
