"""Checkpoint and model files: written atomically, read without executing code.

A training run keeps its resumable state in ``CHECKPOINTS/T-<identity>/step-N.pt`` (the
last two kept: a kill can cut the newest short) and its result in ``OUT/model.pt``. Both are
``torch.save`` dicts of tensors and plain data, read with ``weights_only=True``; the bytes
of a file depend only on its contents (no file name, time or process id inside), so two runs
that reach the same weights write identical files.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline import decoders
from pipeline.errors import CheckpointError

__all__ = [
    "checkpoint_files",
    "load_checkpoint",
    "load_decoder",
    "model_weights",
    "read_model_file",
    "resume_checkpoint",
    "save_atomic",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

#: what a truncated or corrupt ``torch.load`` raises
_UNREADABLE = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError)


def save_atomic(obj: Mapping[str, Any], path: Path) -> None:
    """Write ``obj`` with ``torch.save`` to ``path``, whole or not at all.

    Serialised through a buffer: ``torch.save`` to a path names the zip archive after the
    file, which would make the bytes depend on the temporary name.
    """
    buffer = io.BytesIO()
    torch.save(dict(obj), buffer)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(buffer.getbuffer())
    os.replace(tmp, path)


def checkpoint_files(folder: Path) -> list[Path]:
    """The ``step-N.pt`` files of a checkpoint folder, oldest step first."""
    return sorted(folder.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))


def load_checkpoint(folder: Path, identity: str) -> dict[str, Any] | None:
    """The newest readable checkpoint of run ``identity``; a corrupt newest one falls back.

    Returns
    -------
    dict or None
        ``None`` when the folder holds no checkpoint (a fresh run).

    Raises
    ------
    CheckpointError
        A checkpoint of another run, or none readable.
    """
    for path in reversed(checkpoint_files(folder)):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except _UNREADABLE as err:
            log.warning("checkpoint %s is unreadable (%s); trying an older one", path, err)
            continue
        if ckpt.get("identity") != identity:
            raise CheckpointError(
                f"checkpoint {str(path)!r} belongs to another run; delete {str(folder)!r}"
            )
        return dict(ckpt)
    if checkpoint_files(folder):
        raise CheckpointError(
            f"no readable checkpoint in {str(folder)!r} (all truncated or corrupt); delete the "
            "folder to train from scratch"
        )
    return None


def model_weights(
    model: nn.Module,
    config: Mapping[str, Any],
    encoder: nn.Module | None = None,
    discriminator: nn.Module | None = None,
) -> dict[str, Any]:
    """What ``model.pt`` holds (read back by :func:`read_model_file`), and every checkpoint.

    Parameters
    ----------
    model : nn.Module
        The decoder (not its DDP wrapper).
    config : mapping
        The effective training config and provenance, stored as JSON text.
    encoder : nn.Module, optional
        The trained encoder of an autoencoder.
    discriminator : nn.Module, optional
        The DeePSiM discriminator of a ``loss: deepsim`` run (:mod:`pipeline.deepsim`).

    Returns
    -------
    dict
        ``encoder`` (autoencoders only), ``model`` (state dicts), ``config`` and
        ``discriminator`` (DeePSiM runs only), in that order: the order is part of the
        file's bytes.
    """
    extra = {} if encoder is None else {"encoder": encoder.state_dict()}
    adversary = {} if discriminator is None else {"discriminator": discriminator.state_dict()}
    return {**extra, "model": model.state_dict(), "config": json.dumps(config), **adversary}


def save_checkpoint(
    folder: Path,
    step: int,
    weights: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    curve: list[list[float]],
    identity: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``folder/step-<step>.pt`` atomically and keep only the newest two checkpoints.

    Parameters
    ----------
    folder : Path
        The run's checkpoint folder (``CHECKPOINTS/T-<identity>``).
    step : int
        Optimiser steps taken.
    weights : mapping
        :func:`model_weights` of the run.
    optimizer, scheduler
        Their state dicts are stored.
    curve : list of [step, loss, ...]
        The loss curve so far.
    identity : str
        The run identity, checked by :func:`load_checkpoint`.
    extra : mapping, optional
        More state to resume from (tensors and plain data only, loadable with
        ``weights_only=True``), stored after the rest: a DeePSiM run's discriminator
        optimiser and pausing rule. Read back by ``resume_checkpoint``'s ``restore``.

    Returns
    -------
    Path
        The file written.
    """
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "curve": curve,
        "identity": identity,
    }
    path = folder / f"step-{step}.pt"
    save_atomic({**weights, **state, **dict(extra or {})}, path)
    for old in checkpoint_files(folder)[:-2]:  # keep the last two: one may be cut short
        old.unlink()
    return path


def resume_checkpoint(
    folder: Path,
    identity: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    encoder: nn.Module | None = None,
    restore: Callable[[Mapping[str, Any]], None] | None = None,
) -> tuple[int, list[list[float]]] | None:
    """Load the newest readable checkpoint of run ``identity`` into the training state.

    Parameters
    ----------
    folder : Path
        The run's checkpoint folder.
    identity : str
        The run identity (a checkpoint of another run is refused).
    model, optimizer, scheduler : the decoder (not its DDP wrapper), its Adam and its schedule
    encoder : nn.Module, optional
        The trainable encoder of an autoencoder; loaded when the checkpoint holds one.
    restore : callable, optional
        Called with the whole checkpoint after the rest is loaded, for the state the run
        saved itself (``save_checkpoint``'s ``extra``, :func:`model_weights`'s
        ``discriminator``).

    Returns
    -------
    (step, curve) or None
        The steps taken and the loss curve so far; ``None`` for a fresh run (nothing loaded).

    Raises
    ------
    CheckpointError
        See :func:`load_checkpoint`.
    """
    ckpt = load_checkpoint(folder, identity)
    if ckpt is None:
        return None
    model.load_state_dict(ckpt["model"])
    if encoder is not None and "encoder" in ckpt:
        encoder.load_state_dict(ckpt["encoder"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if restore is not None:
        restore(ckpt)
    return int(ckpt["step"]), [list(p) for p in ckpt["curve"]]


def read_model_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tensors and the config of a ``model.pt`` written by ``invert train``.

    Returns
    -------
    blob : dict
        ``model`` (the decoder's state dict) or, for an ensemble (``train.ensemble > 1``),
        ``members`` (a list of them); ``encoder`` (autoencoders only), ``config``,
        ``discriminator`` (``loss: deepsim`` runs only; not needed to reconstruct).
    config : dict
        The effective training config and provenance (parsed from ``blob["config"]``).

    Raises
    ------
    CheckpointError
        The file is unreadable, or made by another version of its decoder family.
    """
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        config = json.loads(blob["config"])
    except (*_UNREADABLE, KeyError, TypeError) as err:
        raise CheckpointError(f"cannot read decoder {str(path)!r}: {err}; retrain it") from err
    target = config.get("target")
    if target not in decoders.TARGETS:
        raise CheckpointError(f"{str(path)!r} is not a decoder of this pipeline (target {target})")
    made, now = config.get("decoder_version"), decoders.version(target)
    if made != now:
        raise CheckpointError(
            f"decoder {str(path)!r} was made by version {made} of the {target} decoder family; "
            f"this code builds version {now}: retrain it (dvc repro train@{target})"
        )
    return dict(blob), config


def load_decoder(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a trained decoder (``model.pt``) without executing code.

    Returns
    -------
    model : nn.Module
        In eval mode, on ``device``: the decoder, or the :class:`~pipeline.decoders.Ensemble`
        of an ensemble's members.
    config : dict
        The effective training config and provenance it was trained with.
    """
    blob, config = read_model_file(path)
    states = blob["members"] if "members" in blob else [blob.get("model") or {}]
    members = []
    for state in states:
        member = decoders.build(
            config["target"], width=config["params"]["width"], in_channels=config.get("in_channels")
        )
        try:
            member.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as err:
            raise CheckpointError(
                f"decoder {str(path)!r} does not match its config: {err}"
            ) from err
        members.append(member)
    model = members[0] if "members" not in blob else decoders.Ensemble(members)
    return model.to(device).eval(), config
