"""DeePSiM losses: decoders trained with pixel, feature and adversarial losses [1].

The CVPR paper this project reproduces [2] trains its decoders on the pixel MSE alone, which
gives blurry reconstructions. Its follow-up [1] ("Deep Perceptual Similarity Metrics",
DeePSiM) adds two terms to the generator's (here: decoder's) objective,

    L = λ_img · L_img + λ_feat · L_feat + λ_adv · L_adv        ([1], Sec. 3, recollected)

- ``L_img``: the squared distance in image space (:func:`total_generator_loss`'s ``pixel``,
  the project's existing loss);
- ``L_feat``: the squared distance between features of a fixed *comparator* network
  (:class:`Comparator`, :func:`feature_loss`);
- ``L_adv``: a GAN term from a :class:`Discriminator` that sees the image and the decoder's
  input features (:func:`adversarial_losses`), trained in alternation with the decoder under
  a pausing rule (:class:`Alternation`).

:func:`pipeline.sharpness.high_frequency_ratio` measures the sharpness the extra terms are
meant to bring back.

Training wires it in with ``train.loss: deepsim`` and the ``train.deepsim`` subsection
(:class:`pipeline.train_params.TrainParams`, :func:`pipeline.deepsim_training.deepsim_step`).

Public API: :class:`DeepSimParams`, :data:`LOSSES`, :data:`PAPER_LAMBDAS`,
:func:`paper_weights`, :class:`Comparator`, :func:`feature_loss`, :class:`Discriminator`,
:func:`adversarial_losses`, :class:`Decision`, :func:`decide`, :class:`Alternation`,
:func:`total_generator_loss`.

References
----------
.. [1] A. Dosovitskiy and T. Brox, "Generating Images with Perceptual Similarity Metrics
   based on Deep Networks", NIPS 2016 (arXiv:1602.02644).
.. [2] A. Dosovitskiy and T. Brox, "Inverting Visual Representations with Convolutional
   Networks", CVPR 2016.

Notes
-----
No copy of [1] was at hand when this module was written: every value and section number
marked *recollected* below is from memory and must be checked against the paper before a
result is reported as a reproduction of [1].

Units. [1] writes its losses as sums of squares over the pixel values of 0..255 images
(recollected); this project's pixel loss is the per-value mean of squares on images scaled
to ``x / 255 - 0.5`` (:mod:`pipeline.pixels`). For one image of ``P = 3·S·S`` values,

    L_img[1] = 255² · P · pixel

so the paper's weights carry over by dividing all three by ``λ_img[1] · 255² · P``, which
keeps their ratios and makes the pixel weight 1 (:func:`paper_weights`). ``L_feat`` and
``L_adv`` are per image in both (sum of squares over the comparator's features; binary cross
entropy), and every term here is a mean over the batch, so the batch size cancels. A
Caffe ``EuclideanLoss`` would add a factor 1/2 to ``L_img`` and ``L_feat`` alike; it does not
change their ratio and is ignored.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline import alexnet
from pipeline.errors import ConfigError
from pipeline.pixels import PIXEL_OFFSET

__all__ = [
    "LOSSES",
    "PAPER_LAMBDAS",
    "PAPER_SIZE",
    "Alternation",
    "Comparator",
    "Decision",
    "DeepSimParams",
    "Discriminator",
    "adversarial_losses",
    "decide",
    "feature_loss",
    "paper_weights",
    "total_generator_loss",
]

#: ``"pixel"``: the CVPR paper's MSE alone [2]; ``"deepsim"``: pixel + feature + adversarial [1].
LOSSES = ("pixel", "deepsim")

#: [1]'s weights for feature inversion, ``(λ_img, λ_feat, λ_adv)``, in its units (sums of
#: squares on 0..255 pixels). Recollected, not read: check against [1]'s Sec. 5 (feature
#: inversion experiments) before relying on them.
PAPER_LAMBDAS = (2e-6, 0.01, 100.0)

#: Output side at which the defaults of :class:`DeepSimParams` convert [1]'s weights: the
#: 256×256 output of the HOG/SIFT/LBP decoders (the AlexNet decoders' 216/208/192/128 change
#: the pixel term's relative weight by at most (256/128)² = 4, see :func:`paper_weights`).
PAPER_SIZE = 256


def paper_weights(output_size: int) -> tuple[float, float, float]:
    """[1]'s ``(λ_img, λ_feat, λ_adv)`` in this project's units, pixel weight 1.

    Parameters
    ----------
    output_size : int
        Side ``S`` of the decoder's square output ``(B, 3, S, S)``.

    Returns
    -------
    tuple of 3 float
        ``(1, λ_feat / k, λ_adv / k)`` with ``k = λ_img · 255² · 3·S²`` from
        :data:`PAPER_LAMBDAS`: the same ratios as [1] once its per-image sum of squares on
        0..255 pixels is written as the project's per-value mean on ``x / 255 - 0.5``
        (module Notes). At ``S = 256``: ``k ≈ 25569``, ``λ_feat ≈ 3.91e-7``,
        ``λ_adv ≈ 3.91e-3``.
    """
    if output_size <= 0:
        raise ConfigError(f"output_size must be a positive image side, got {output_size}")
    lam_img, lam_feat, lam_adv = PAPER_LAMBDAS
    k = lam_img * 255.0**2 * 3 * output_size**2
    return 1.0, lam_feat / k, lam_adv / k


_DEFAULT_IMG, _DEFAULT_FEAT, _DEFAULT_ADV = paper_weights(PAPER_SIZE)


@dataclass(frozen=True)
class DeepSimParams:
    """The loss of a decoder run: the CVPR paper's pixel MSE or [1]'s DeePSiM mix.

    Attributes
    ----------
    loss : {"pixel", "deepsim"}
        ``"pixel"`` keeps the project's objective (the weights below are not used);
        ``"deepsim"`` is :func:`total_generator_loss`'s weighted sum.
    lambda_img, lambda_feat, lambda_adv : float
        Weights of the pixel, feature and adversarial terms, ``>= 0``, in this project's
        units. Defaults: [1]'s feature-inversion weights ``2e-6, 0.01, 100`` (recollected)
        converted at a 256×256 output with the pixel weight set to 1
        (:func:`paper_weights`), so a ``deepsim`` run with ``lambda_feat = lambda_adv = 0``
        is exactly the ``pixel`` run.
    comparator_layer : str or None
        AlexNet layer group (:data:`pipeline.alexnet.LAYERS`) whose activations
        :func:`feature_loss` compares. ``conv5``: [1]'s choice for its main results
        (recollected). ``None`` only with ``lambda_feat = 0``.
    pause_ratio : float
        :class:`Alternation`'s threshold, in ``(0, 1)``: the discriminator pauses while its
        loss is below ``pause_ratio`` × the generator's adversarial loss, and the generator's
        adversarial term pauses in the opposite case. 0.1 in [1] (recollected).
    disc_lr : float
        Adam learning rate of the discriminator, ``> 0``. 2e-4 (recollected, [1]'s Sec. 4
        training details give one Adam setting for generator and discriminator).
    disc_betas : tuple of 2 float
        Adam ``(β1, β2)`` of the discriminator, each in ``[0, 1)``. ``(0.9, 0.999)``
        (recollected; Adam's own defaults).

    Raises
    ------
    ConfigError
        For an unknown loss, a negative weight, an unknown layer, a ``deepsim`` loss with
        ``lambda_feat > 0`` and no comparator, or a ratio, lr or beta out of range.
    """

    loss: str = "pixel"
    lambda_img: float = _DEFAULT_IMG
    lambda_feat: float = _DEFAULT_FEAT
    lambda_adv: float = _DEFAULT_ADV
    comparator_layer: str | None = "conv5"
    pause_ratio: float = 0.1
    disc_lr: float = 2e-4
    disc_betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; use one of {LOSSES}")
        for name in ("lambda_img", "lambda_feat", "lambda_adv"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite weight >= 0, got {value}")
        if self.comparator_layer is not None and self.comparator_layer not in alexnet.LAYERS:
            raise ConfigError(
                f"unknown comparator_layer {self.comparator_layer!r}; use one of "
                f"{alexnet.LAYERS} (conv5 in DeePSiM, NIPS 2016)"
            )
        if self.loss == "deepsim" and self.lambda_feat > 0 and self.comparator_layer is None:
            raise ConfigError(
                f"loss 'deepsim' with lambda_feat={self.lambda_feat} needs a comparator: set "
                "comparator_layer (e.g. conv5) or lambda_feat: 0"
            )
        if not 0 < self.pause_ratio < 1:
            raise ConfigError(
                f"pause_ratio must be in (0, 1) (0.1 in DeePSiM, NIPS 2016), got {self.pause_ratio}"
            )
        if not (math.isfinite(self.disc_lr) and self.disc_lr > 0):
            raise ConfigError(f"disc_lr must be a learning rate > 0, got {self.disc_lr}")
        if len(self.disc_betas) != 2 or not all(0 <= b < 1 for b in self.disc_betas):
            raise ConfigError(f"disc_betas must be two Adam betas in [0, 1), got {self.disc_betas}")


class Comparator(nn.Module):
    """A frozen AlexNet layer group as [1]'s comparator ``C``, on decoder-space images.

    Parameters
    ----------
    model : AlexNetBase
        A built network (:func:`pipeline.alexnet.build`); its parameters are frozen and it
        stays in eval mode.
    layer : str
        Layer group from :data:`pipeline.alexnet.LAYERS` (``conv5`` in [1]).
    arch : str
        The architecture whose input convention to apply (``"caffenet"``/``"torchvision"``).

    Notes
    -----
    The input is the decoder's output ``(B, 3, S, S)`` in ``x / 255 - 0.5`` units; it is
    mapped to the network's input convention (channel order, pixel scale, per-channel
    mean and std) as :func:`pipeline.alexnet.preprocess` does, but without its centre crop:
    the decoders' outputs (192..256) are compared whole, and the convolutional groups take
    any size. ``fc6``..``fc8`` need the network's input size, so for them the image is
    first resized (bilinear) to it.
    """

    order: Tensor  # (3,) channel permutation RGB -> the network's order
    mean: Tensor  # (1, 3, 1, 1)
    std: Tensor  # (1, 3, 1, 1)

    def __init__(self, model: alexnet.AlexNetBase, layer: str, arch: str) -> None:
        super().__init__()
        if layer not in alexnet.LAYERS:
            raise ConfigError(f"unknown comparator layer {layer!r}; use one of {alexnet.LAYERS}")
        spec = alexnet.get_architecture(arch)
        if not isinstance(model, spec.model):
            raise ConfigError(
                f"comparator model is a {type(model).__name__}, not the {spec.name} "
                f"({spec.model.__name__}) whose input convention was asked for; pass "
                "the arch the model was built with"
            )
        self.model = model.requires_grad_(False).eval()
        self.layer = layer
        self.spec = spec
        order = [2, 1, 0] if spec.channel_order == "BGR" else [0, 1, 2]
        self.register_buffer("order", torch.tensor(order), persistent=False)
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def train(self, mode: bool = True) -> Comparator:
        """Stay in eval mode whatever is asked: the comparator is fixed."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """Features ``(B, *shape)`` of decoder-space images ``(B, 3, S, S)``."""
        x = (images.float() + PIXEL_OFFSET) * self.spec.pixel_max  # (B, 3, S, S), RGB
        x = x.index_select(1, self.order)  # (B, 3, S, S) in the network's channel order
        x = (x - self.mean) / self.std
        if self.layer.startswith("fc") and x.shape[-1] != self.spec.input_size:
            size = (self.spec.input_size, self.spec.input_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.model.forward_layers(x, (self.layer,))[self.layer]


def feature_loss(comparator: nn.Module, x_hat: Tensor, x: Tensor) -> Tensor:
    """[1]'s ``L_feat``: squared L2 distance of comparator features, mean over the batch.

    Parameters
    ----------
    comparator : nn.Module
        Maps ``(2B, 3, S, S)`` images to ``(2B, ...)`` features (:class:`Comparator`). Its
        parameters get no gradient from this loss whatever their ``requires_grad``; pass it
        in eval mode (a :class:`Comparator` always is).
    x_hat : (B, 3, S, S) Tensor
        Reconstructions; the gradient flows back to them.
    x : (B, 3, S, S) Tensor
        Targets, same shape; treated as constants.

    Returns
    -------
    () Tensor
        ``mean_b Σ_j (C(x_hat)_bj - C(x)_bj)²``.

    Notes
    -----
    Reconstructions and targets go through the comparator in one forward on their
    concatenation ``(2B, 3, S, S)``, so both see the same mode and device state.
    """
    if x_hat.shape != x.shape:
        raise ConfigError(
            f"reconstructions {tuple(x_hat.shape)} and targets {tuple(x.shape)} differ; "
            "resize the targets to the decoder's output (pipeline.pixels.target_images)"
        )
    batch = x_hat.shape[0]
    frozen = {name: p.detach() for name, p in comparator.named_parameters()}
    both = torch.cat([x_hat, x.detach()], dim=0)  # (2B, 3, S, S)
    feats = torch.func.functional_call(comparator, frozen, (both,), strict=False)
    f_hat, f_x = feats[:batch], feats[batch:].detach()  # (B, ...) each
    return (f_hat - f_x).pow(2).flatten(1).sum(dim=1).mean()


def _conv_channels(channels: int, width: float) -> int:
    """Hidden channel count scaled by ``width``, at least 8 (as :mod:`pipeline.decoders`)."""
    return max(8, math.floor(channels * width + 0.5))


class Discriminator(nn.Module):
    """[1]'s discriminator: an image path and a feature path fused into one logit.

    Layers (``c`` = channels before ``width`` scaling; [1]'s supplementary table,
    recollected):

    ======== ================================================= =======================
    path     layers                                            output for 256×256
    ======== ================================================= =======================
    image    conv1 7×7 s4 (32), conv2 5×5 s1 (64),              (c5, 1, 1) → (c5,)
             conv3 3×3 s2 (128), conv4 3×3 s1 (256),
             conv5 3×3 s2 (256), each + ReLU; global average
             pooling
    features flatten, fc1 (1024), fc2 (512), each + ReLU       (512,)
    joint    concat, dropout, fc3 (512) + ReLU, dropout, fc4   (1,) logit
    ======== ================================================= =======================

    Parameters
    ----------
    feature_dim : int
        Number of values per image of the decoder's input features (they are flattened,
        so any ``(B, ...)`` shape of that size works).
    width : float
        Multiplies every hidden channel and unit count (at least 8); 1.0 is [1]. Small
        values keep CPU tests fast.
    dropout : float
        Dropout before fc3 and fc4 (0.5, recollected; 0 turns it off).

    Notes
    -----
    Departures: one logit with binary cross entropy instead of a 2-way softmax (the same
    function of the two logits' difference); paddings are ``kernel // 2`` so every input
    side >= 16 works (the decoders' 128..256 all do); weights use PyTorch's default
    initialisation.
    """

    def __init__(self, feature_dim: int, width: float = 1.0, dropout: float = 0.5) -> None:
        super().__init__()
        if feature_dim <= 0:
            raise ConfigError(f"feature_dim must be >= 1, got {feature_dim}")
        if width <= 0:
            raise ConfigError(f"width must be > 0 (1.0 is the paper), got {width}")
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")

        def c(n: int) -> int:
            return _conv_channels(n, width)

        layers: list[tuple[str, nn.Module]] = []
        # (kernel, stride, out channels) of conv1..conv5
        spec = [(7, 4, 32), (5, 1, 64), (3, 2, 128), (3, 1, 256), (3, 2, 256)]
        cin = 3
        for i, (kernel, stride, cout) in enumerate(spec, start=1):
            conv = nn.Conv2d(cin, c(cout), kernel_size=kernel, stride=stride, padding=kernel // 2)
            layers += [(f"conv{i}", conv), (f"relu{i}", nn.ReLU(inplace=True))]
            cin = c(cout)
        layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
        self.image = nn.Sequential(OrderedDict(layers))
        self.features = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                fc1=nn.Linear(feature_dim, c(1024)),
                relu1=nn.ReLU(inplace=True),
                fc2=nn.Linear(c(1024), c(512)),
                relu2=nn.ReLU(inplace=True),
            )
        )
        self.joint = nn.Sequential(
            OrderedDict(
                drop3=nn.Dropout(dropout),
                fc3=nn.Linear(cin + c(512), c(512)),
                relu3=nn.ReLU(inplace=True),
                drop4=nn.Dropout(dropout),
                fc4=nn.Linear(c(512), 1),
            )
        )
        self.feature_dim = feature_dim

    def forward(self, images: Tensor, feats: Tensor) -> Tensor:
        """Logits ``(B,)`` that ``images`` ``(B, 3, S, S)`` are real, given ``feats``.

        ``feats`` is ``(B, ...)`` with ``feature_dim`` values per image.
        """
        if math.prod(feats.shape[1:]) != self.feature_dim or feats.shape[0] != images.shape[0]:
            raise ConfigError(
                f"features {tuple(feats.shape)} do not match {images.shape[0]} images of "
                f"{self.feature_dim} feature values; build the Discriminator with "
                "feature_dim = the decoder's input size"
            )
        a = self.image(images.float())  # (B, c5)
        b = self.features(feats.float())  # (B, c(512))
        return self.joint(torch.cat([a, b], dim=1)).squeeze(1)  # (B,)


def adversarial_losses(
    disc: nn.Module, x_hat: Tensor, x: Tensor, feats: Tensor
) -> tuple[Tensor, Tensor]:
    """[1]'s discriminator loss and the generator's non-saturating adversarial loss.

    Parameters
    ----------
    disc : nn.Module
        ``disc(images (n, 3, S, S), feats (n, ...)) -> logits (n,)`` (:class:`Discriminator`).
    x_hat : (B, 3, S, S) Tensor
        Reconstructions.
    x : (B, 3, S, S) Tensor
        Real images (the targets).
    feats : (B, ...) Tensor
        The decoder's input features, the condition of both calls.

    Returns
    -------
    d_loss : () Tensor
        ``mean_b[-log σ(D(x)) - log(1 - σ(D(x_hat)))]``; ``x_hat`` is detached, so it
        trains only the discriminator.
    g_loss : () Tensor
        ``mean_b[-log σ(D(x_hat))]``, the non-saturating generator loss of [1]'s
        ``L_adv``; gradients reach ``x_hat`` *and* the discriminator's parameters, so the
        training loop steps only the generator's optimizer with it and zeroes the
        discriminator's gradients before the next discriminator step.

    Notes
    -----
    The discriminator sees real and fake images in one forward on ``(2B, 3, S, S)``.
    """
    batch = x.shape[0]
    both = torch.cat([x, x_hat.detach()], dim=0)  # (2B, 3, S, S)
    cond = torch.cat([feats, feats], dim=0)  # (2B, ...)
    logits = disc(both, cond)  # (2B,)
    labels = torch.cat([logits.new_ones(batch), logits.new_zeros(batch)])
    # sum of the two means: -log D(x) - log(1 - D(x_hat)) per pair, averaged over pairs
    d_loss = 2 * F.binary_cross_entropy_with_logits(logits, labels)
    fake = disc(x_hat, feats)  # (B,)
    g_loss = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    return d_loss, g_loss


@dataclass(frozen=True)
class Decision:
    """Which adversarial updates to run this step (:func:`decide`)."""

    update_disc: bool
    update_gen_adv: bool


def decide(d_loss: float | None, g_adv: float | None, ratio: float) -> Decision:
    """[1]'s pausing rule on the losses of the previous step.

    Parameters
    ----------
    d_loss, g_adv : float or None
        The last discriminator loss and generator adversarial loss; ``None`` before the
        first step (then both update).
    ratio : float
        ``pause_ratio`` in ``(0, 1)``, 0.1 in [1] (recollected).

    Returns
    -------
    Decision
        ``update_disc`` is False while ``d_loss < ratio · g_adv`` (the discriminator wins
        too easily); ``update_gen_adv`` is False while ``g_adv < ratio · d_loss`` (the
        generator does). With ``ratio < 1`` and losses ``>= 0`` the two never pause at once.
    """
    if d_loss is None or g_adv is None:
        return Decision(update_disc=True, update_gen_adv=True)
    return Decision(
        update_disc=not d_loss < ratio * g_adv, update_gen_adv=not g_adv < ratio * d_loss
    )


@dataclass
class Alternation:
    """The pausing rule with its history, to save in and restore from a checkpoint.

    Attributes
    ----------
    ratio : float
        ``pause_ratio`` (:class:`DeepSimParams`).
    last_d_loss, last_g_adv : float or None
        The losses :meth:`observe` got last; ``None`` before the first.
    disc_paused, gen_paused : int
        Steps on which the discriminator / the generator's adversarial term was paused.

    Notes
    -----
    A training step calls :meth:`decision`, runs the updates it allows, and calls
    :meth:`observe` with both losses of that step, computed whether or not their update ran
    (a paused player's loss must still be measured to know when to resume). The state is a
    plain dict of numbers (:meth:`state_dict`), and the rule is deterministic.
    """

    ratio: float
    last_d_loss: float | None = None
    last_g_adv: float | None = None
    disc_paused: int = 0
    gen_paused: int = 0
    _FIELDS: ClassVar[tuple[str, ...]] = (
        "ratio",
        "last_d_loss",
        "last_g_adv",
        "disc_paused",
        "gen_paused",
    )

    def __post_init__(self) -> None:
        if not 0 < self.ratio < 1:
            raise ConfigError(
                f"pause ratio must be in (0, 1) (0.1 in DeePSiM, NIPS 2016), got {self.ratio}"
            )

    def decision(self) -> Decision:
        """What to update on the coming step, from the last observed losses."""
        return decide(self.last_d_loss, self.last_g_adv, self.ratio)

    def observe(self, d_loss: float, g_adv: float) -> Decision:
        """Record a step's losses; returns (and counts) the decision that step ran under."""
        ran = self.decision()
        self.disc_paused += not ran.update_disc
        self.gen_paused += not ran.update_gen_adv
        self.last_d_loss, self.last_g_adv = float(d_loss), float(g_adv)
        return ran

    def state_dict(self) -> dict[str, Any]:
        """The state as a plain dict of float/int/None (JSON and ``torch.save`` safe)."""
        return {name: getattr(self, name) for name in self._FIELDS}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Alternation:
        """The inverse of :meth:`state_dict`; refuses missing or extra keys."""
        fields = cls._FIELDS
        if set(state) != set(fields):
            raise ConfigError(
                f"alternation state has keys {sorted(state)}, expected {sorted(fields)}; "
                "the checkpoint was written by another version of pipeline.deepsim"
            )
        return cls(**{name: state[name] for name in fields})


def total_generator_loss(
    params: DeepSimParams, pixel: Tensor, feat: Tensor | None, adv: Tensor | None
) -> Tensor:
    """The decoder's objective ``λ_img·pixel + λ_feat·feat + λ_adv·adv`` ([1], Sec. 3).

    Parameters
    ----------
    params : DeepSimParams
        ``loss == "pixel"`` returns ``pixel`` unchanged (the CVPR objective).
    pixel : () Tensor
        Per-value MSE on ``x / 255 - 0.5`` images (the project's loss).
    feat : () Tensor or None
        :func:`feature_loss`; ``None`` when not computed (``lambda_feat = 0``).
    adv : () Tensor or None
        :func:`adversarial_losses`'s ``g_loss``; ``None`` on a step where
        :class:`Alternation` pauses the generator's adversarial term.

    Returns
    -------
    () Tensor
    """
    if params.loss == "pixel":
        return pixel
    if feat is None and params.lambda_feat > 0:
        raise ConfigError(
            f"lambda_feat={params.lambda_feat} but no feature loss was passed; compute "
            "feature_loss or set lambda_feat: 0"
        )
    total = params.lambda_img * pixel
    if feat is not None:
        total = total + params.lambda_feat * feat
    if adv is not None:
        total = total + params.lambda_adv * adv
    return total
