"""DeePSiM training: the adversary and the alternating step of a ``loss: deepsim`` run [1].

:mod:`pipeline.training` runs the loop, checkpoints and outputs of every decoder run; with
``train.loss: deepsim`` it takes its steps, its extra checkpoint state, its config record
and its extra metrics from here. The losses and the pausing rule themselves are
:mod:`pipeline.deepsim`'s; this module wires them into one optimiser step:

- :class:`Adversary`: comparator, discriminator, the discriminator's Adam and the pausing
  rule, with their checkpoint state (:meth:`Adversary.checkpoint_state`,
  :meth:`Adversary.restore`); built by :func:`build_adversary`, whose comparator network
  comes from :func:`comparator_params`;
- :func:`deepsim_step`: one step of the decoder, then of the discriminator, returning a
  :class:`DeepSimStep` (a row of the loss-curve CSV);
- :func:`step_rng`: the global RNG seeded from ``(seed, step)`` around one step, so that a
  resumed run draws what an uninterrupted one does;
- :func:`run_record` (``config["deepsim"]``, with :data:`DISC_VERSION`) and
  :func:`run_metrics` (the metrics JSON's DeePSiM keys).

Nothing here imports :mod:`pipeline.training`: it is given what it needs as arguments.

References
----------
.. [1] A. Dosovitskiy, T. Brox. Generating Images with Perceptual Similarity Metrics
   based on Deep Networks. NIPS 2016 (:mod:`pipeline.deepsim`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import alexnet, deepsim, features
from pipeline.alexnet.activations import AlexNetParams
from pipeline.deepsim import Alternation, DeepSimParams
from pipeline.errors import CheckpointError, ConfigError, PipelineError

__all__ = [
    "DISC_VERSION",
    "Adversary",
    "DeepSimStep",
    "build_adversary",
    "comparator_params",
    "deepsim_step",
    "run_metrics",
    "run_record",
    "step_rng",
]

log = logging.getLogger(__name__)

#: Version of :class:`pipeline.deepsim.Discriminator`'s layers, recorded by DeePSiM runs:
#: bump it when they change, so that a checkpoint of the old layers is not resumed.
DISC_VERSION = 1

#: a trainable encoder (autoencoder mode): uint8 images (B, 3, 256, 256) to features (B, ...)
Encoder = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Adversary:
    """The DeePSiM side of a ``loss: deepsim`` run [1]: what :func:`deepsim_step` updates.

    Attributes
    ----------
    params : DeepSimParams
        The weights of the three terms, the pausing ratio, the discriminator's Adam.
    comparator : nn.Module or None
        The frozen AlexNet layer group of :class:`pipeline.deepsim.Comparator` on the
        training device; ``None`` when ``lambda_feat`` is 0 (no feature term).
    disc : nn.Module
        :class:`pipeline.deepsim.Discriminator` of the image and the decoder's input
        features. Trained even when ``lambda_adv`` is 0, where its losses are a diagnostic
        only (how well reconstructions can be told from their targets).
    opt : torch.optim.Optimizer
        The discriminator's own Adam (``disc_lr``, ``disc_betas``; no learning-rate decay).
    alternation : Alternation
        [1]'s pausing rule and its history.
    """

    params: DeepSimParams
    comparator: nn.Module | None
    disc: nn.Module
    opt: torch.optim.Optimizer
    alternation: Alternation

    #: checkpoint keys of the state beyond
    #: :func:`pipeline.checkpoints.model_weights`'s ``discriminator``
    STATE_KEYS: ClassVar[tuple[str, ...]] = ("disc_optimizer", "alternation")

    def checkpoint_state(self) -> dict[str, Any]:
        """The discriminator's Adam and the pausing rule, as ``save_checkpoint``'s ``extra``."""
        return {
            "disc_optimizer": self.opt.state_dict(),
            "alternation": self.alternation.state_dict(),
        }

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        """Load the discriminator, its Adam and the pausing rule from a checkpoint."""
        missing = [k for k in ("discriminator", *self.STATE_KEYS) if k not in ckpt]
        if missing:
            raise CheckpointError(
                f"the checkpoint has no {', '.join(missing)}: it was not written by a "
                "loss: deepsim run of this code; delete its folder to train from scratch"
            )
        self.disc.load_state_dict(ckpt["discriminator"])
        self.opt.load_state_dict(ckpt["disc_optimizer"])
        self.alternation = Alternation.from_state_dict(ckpt["alternation"])


@dataclass(frozen=True)
class DeepSimStep:
    """The losses of one :func:`deepsim_step`, all measured before its updates.

    ``objective`` is the decoder's loss (:func:`pipeline.deepsim.total_generator_loss`),
    ``pixel`` its pixel MSE, ``feature`` the comparator term (NaN when ``lambda_feat`` is
    0), ``adv_g`` / ``adv_d`` the generator's and the discriminator's adversarial losses;
    ``disc_trained`` / ``gen_adv_used`` say which side the pausing rule let train.
    """

    objective: float
    pixel: float
    feature: float
    adv_g: float
    adv_d: float
    disc_trained: bool
    gen_adv_used: bool

    #: the loss-curve CSV's columns after ``step`` (``loss`` is ``objective``)
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "loss",
        "pixel",
        "feature",
        "adv_g",
        "adv_d",
        "disc_trained",
        "gen_adv_used",
    )

    def row(self) -> tuple[float, ...]:
        """The values in :attr:`COLUMNS`' order (the booleans as 0/1)."""
        return (
            self.objective,
            self.pixel,
            self.feature,
            self.adv_g,
            self.adv_d,
            float(self.disc_trained),
            float(self.gen_adv_used),
        )


def deepsim_step(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    adversary: Adversary,
    feats: torch.Tensor,
    targets: torch.Tensor,
    *,
    encoder: Encoder | None = None,
    images: torch.Tensor | None = None,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
) -> DeepSimStep:
    """One step of [1]'s alternating training: the decoder, then the discriminator.

    Parameters
    ----------
    net : nn.Module
        The decoder (the generator of [1]).
    opt : torch.optim.Optimizer
        The decoder's Adam (and the encoder's in autoencoder mode).
    adversary : Adversary
        Comparator, discriminator, its Adam and the pausing rule; ``adversary.alternation``
        is advanced by this step.
    feats : (B, ...) Tensor
        Input features on the device (ignored when ``encoder`` is given); also the
        discriminator's condition.
    targets : (B, 3, S, S) Tensor of float32
        :func:`pipeline.pixels.target_images` of the batch.
    encoder, images, autocast
        As in :func:`pipeline.training.train_step`.

    Returns
    -------
    DeepSimStep

    Notes
    -----
    The decision of [1]'s pausing rule comes from the previous step's losses
    (:class:`pipeline.deepsim.Alternation`): a paused generator term leaves the adversarial
    loss out of the decoder's objective; a paused discriminator takes no step. Both
    adversarial losses are measured every step, paused or not. The discriminator's
    condition is detached: in autoencoder mode the encoder learns from the decoder's
    objective only through the reconstruction, not through the discriminator's input.
    Dropout in the discriminator draws from the global RNG (the training loop seeds it per
    step with :func:`step_rng`).
    """
    p = adversary.params
    decision = adversary.alternation.decision()
    with autocast or contextlib.nullcontext():
        if encoder is not None:
            assert images is not None
            feats = encoder(images)  # the encoder trains with the decoder
        x_hat = net(feats).float()  # (B, 3, S, S)
        pixel = F.mse_loss(x_hat, targets)
        feat = None
        if adversary.comparator is not None:
            feat = deepsim.feature_loss(adversary.comparator, x_hat, targets)
        d_loss, g_adv = deepsim.adversarial_losses(adversary.disc, x_hat, targets, feats.detach())
        adv = g_adv if decision.update_gen_adv else None
        objective = deepsim.total_generator_loss(p, pixel, feat, adv)
    if not (torch.isfinite(objective) and torch.isfinite(d_loss)):
        raise PipelineError(
            f"loss became {objective.item()} (discriminator: {d_loss.item()}); lower lr or "
            "train.deepsim.disc_lr"
        )
    opt.zero_grad(set_to_none=True)
    objective.backward()  # a DDP decoder averages its gradients across ranks here
    opt.step()
    # g_adv's backward also filled the discriminator's gradients: dropped here, unused
    adversary.opt.zero_grad(set_to_none=True)
    if decision.update_disc:
        d_loss.backward()  # x_hat is detached in d_loss: only the discriminator learns
        _average_gradients(adversary.disc)
        adversary.opt.step()
    nan = torch.tensor(math.nan, device=pixel.device)
    terms = (objective, pixel, nan if feat is None else feat, g_adv, d_loss)
    losses = torch.stack([t.detach().float() for t in terms])
    objective_, pixel_, feature, adv_g, adv_d = _mean_over_ranks(losses)
    adversary.alternation.observe(adv_d, adv_g)
    return DeepSimStep(
        objective=objective_,
        pixel=pixel_,
        feature=feature,
        adv_g=adv_g,
        adv_d=adv_d,
        disc_trained=decision.update_disc,
        gen_adv_used=decision.update_gen_adv,
    )


def _world() -> int:
    """The number of ranks of the process group (torchrun), 1 without one."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _average_gradients(module: nn.Module) -> None:
    """Average ``module``'s gradients across ranks (what DDP does for the decoder).

    The discriminator is not wrapped in DistributedDataParallel: its forward runs twice a
    step (the generator's and its own loss) and its gradients from the generator's loss are
    dropped, which DDP's one-forward-one-backward reducer does not allow. Every rank starts
    from the same weights (seeded) and takes the same averaged step, so they stay equal.
    """
    world = _world()
    if world == 1:
        return
    import torch.distributed as dist

    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def _mean_over_ranks(values: torch.Tensor) -> list[float]:
    """``values`` (K,) averaged across ranks, as floats (themselves without torchrun).

    Every rank then feeds the pausing rule the same losses (those of the whole batch) and
    takes the same decision next step, and the loss curve is the whole batch's.
    """
    world = _world()
    if world > 1:
        import torch.distributed as dist

        values = values.clone()
        dist.all_reduce(values)
        values = values / world
    return [float(v) for v in values.cpu()]


@contextlib.contextmanager
def step_rng(seed: int, step: int, device: torch.device) -> Iterator[None]:
    """The global RNG seeded from ``(seed, step)`` for one step, restored afterwards.

    What a DeePSiM step draws (the discriminator's dropout masks) is then a function of
    the run's seed and the step alone: a resumed run draws what an uninterrupted one does,
    with no RNG state in the checkpoint, and nothing else sees the draws.

    Parameters
    ----------
    seed : int
        The run's ``train.seed``.
    step : int
        The step about to be taken, counted from 0.
    device : torch.device
        The training device: a CUDA device's generator is forked and seeded too.
    """
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        # mixed by SeedSequence: torch's CPU generator keeps only 32 bits of a seed
        mixed = np.random.SeedSequence([seed & (2**64 - 1), step]).generate_state(1)[0]
        torch.manual_seed(int(mixed))
        yield


def comparator_params(p: DeepSimParams, given: Any | None) -> AlexNetParams | None:
    """The comparator's network params (``extract.alexnet``) when the run needs them.

    Parameters
    ----------
    p : DeepSimParams
        The run's ``train.deepsim`` (its ``loss`` is the run's:
        :class:`pipeline.train_params.TrainParams` sets it).
    given : AlexNetParams or mapping or None
        :func:`pipeline.training.train`'s ``comparator_params``.

    Returns
    -------
    AlexNetParams or None
        ``None`` for a pixel run or one without a feature term (``lambda_feat`` 0).

    Raises
    ------
    ConfigError
        When a feature term needs the comparator and ``given`` is missing or not
        ``extract.alexnet`` params.
    """
    if p.loss != "deepsim" or p.lambda_feat == 0:
        return None
    if given is None:
        raise ConfigError(
            f"loss: deepsim with lambda_feat={p.lambda_feat} compares images "
            "through AlexNet: pass comparator_params (the extract.alexnet section: arch and "
            "weights), or set train.deepsim.lambda_feat: 0"
        )
    if isinstance(given, Mapping):
        given = features.parse_params("conv5", dict(given))
    if not isinstance(given, AlexNetParams):
        raise ConfigError(f"comparator_params must be extract.alexnet params, got {given!r}")
    return given


def build_adversary(
    p: DeepSimParams,
    comparator_params: AlexNetParams | None,
    *,
    feature_size: int,
    width: float,
    seed: int,
    device: torch.device,
) -> Adversary:
    """Comparator, discriminator and its Adam of a ``loss: deepsim`` run.

    Parameters
    ----------
    p : DeepSimParams
        The run's ``train.deepsim``.
    comparator_params : AlexNetParams or None
        :func:`comparator_params`: the comparator network's arch and weights (the one
        source used everywhere, ``extract.alexnet``); ``None`` without a feature term.
    feature_size : int
        Values in one sample's decoder input features (C·h·w): the discriminator's
        condition.
    width : float
        The decoder's ``train.width``, which the discriminator shares.
    seed : int
        ``train.seed``: the discriminator's initialisation, drawn without touching the
        global RNG.
    device : torch.device

    Returns
    -------
    Adversary
        The comparator frozen and the discriminator in train mode, both on ``device``.
    """
    comparator: nn.Module | None = None
    if comparator_params is not None:
        assert p.comparator_layer is not None  # DeepSimParams: lambda_feat > 0 needs one
        if alexnet.is_random_weights(comparator_params.weights):
            log.warning(
                "the DeePSiM comparator is a random AlexNet (extract.alexnet.weights %s): "
                "the feature loss is not DeePSiM's (NIPS 2016: a trained AlexNet)",
                comparator_params.weights,
            )
        net = alexnet.build(comparator_params.arch, weights=comparator_params.weights)
        comparator = deepsim.Comparator(net, p.comparator_layer, comparator_params.arch)
        comparator = comparator.to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        disc = deepsim.Discriminator(feature_size, width=width)
    disc = disc.to(device).train()
    opt = torch.optim.Adam(disc.parameters(), lr=p.disc_lr, betas=p.disc_betas)
    return Adversary(p, comparator, disc, opt, Alternation(p.pause_ratio))


def run_record(p: DeepSimParams, comparator_params: AlexNetParams | None) -> dict[str, Any]:
    """``config["deepsim"]`` of a ``loss: deepsim`` run: its comparator and discriminator.

    Parameters
    ----------
    p : DeepSimParams
        The run's ``train.deepsim``.
    comparator_params : AlexNetParams or None
        :func:`comparator_params`.

    Returns
    -------
    dict
        ``comparator``: the network's arch, layer, weights and whether they are random
        (``None`` without a feature term); ``discriminator_version``: :data:`DISC_VERSION`.
    """
    comparator = None
    if comparator_params is not None and p.lambda_feat > 0:
        comparator = {
            "arch": comparator_params.arch,
            "layer": p.comparator_layer,
            "weights": alexnet.describe_weights(comparator_params.weights),
            "random_weights": alexnet.is_random_weights(comparator_params.weights),
        }
    return {"comparator": comparator, "discriminator_version": DISC_VERSION}


def run_metrics(adversary: Adversary, curve: list[list[float]]) -> dict[str, Any]:
    """The metrics JSON's DeePSiM keys, after the pixel run's.

    Parameters
    ----------
    adversary : Adversary
        The run's, after its last step.
    curve : list of [step, *DeepSimStep.COLUMNS] lists
        The loss curve (empty for a run of no steps).

    Returns
    -------
    dict
        ``loss``, ``train_objective`` (the last point's objective, to 4 significant digits)
        and how many steps the pausing rule paused the discriminator and the generator's
        adversarial term (``disc_paused``, ``gen_paused``).
    """
    return {
        "loss": "deepsim",
        "train_objective": float(f"{curve[-1][1]:.4g}") if curve else math.nan,
        "disc_paused": adversary.alternation.disc_paused,
        "gen_paused": adversary.alternation.gen_paused,
    }
