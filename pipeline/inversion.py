"""Optimisation-based inversion, the baseline of Fig. 5 (Mahendran & Vedaldi [1]_).

docs/method.md §6.

Instead of training a decoder, each image is reconstructed on its own by gradient descent on
the image ``x`` (values in [0, 1]) from its features ``Φ0``::

    E(x) = ||Φ(x) - Φ0||² / ||Φ0||²  +  λ_α Σ |x - 0.5|^α  +  λ_TV TV_β(x)

    TV_β(x) = Σ_{c, i, j} ((x[c, i, j+1] - x[c, i, j])² + (x[c, i+1, j] - x[c, i, j])²)^(β/2)

with ``Φ`` differentiable: :func:`pipeline.features.hog.hog_torch` for HOG, or a fixed
AlexNet's :meth:`~pipeline.alexnet.AlexNetBase.forward_layers` for ``conv1`` .. ``fc8``
(:func:`feature_function`). LBP and SIFT are not differentiable and have no baseline
(docs/method.md §6). :func:`invert` optimises a batch of images at once, each with its own
objective;
:func:`invert_target` goes from uint8 images to reconstructions in the pipeline's pixel
convention, comparable with the decoders' (:func:`pipeline.pixels.target_images`).

Public API: :class:`InversionParams`, :func:`invert`, :func:`feature_function`,
:func:`invert_target`, :func:`to_target_convention`, :func:`default_lambda_tv` and the
objective's terms
:func:`feature_loss`, :func:`alpha_norm`, :func:`total_variation`.

References
----------
.. [1] A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting
   Them", CVPR 2015; code ``aravindhm/deep-goggle`` (``core/invert_nn.m``,
   ``experiments/experiment_cnn.m``, ``experiments/experiment_shallow_quantitative.m``).
.. [2] A. Dosovitskiy and T. Brox, "Inverting Visual Representations with Convolutional
   Networks", CVPR 2016, Fig. 5 and the HOG comparison of Sec. 4.

Notes
-----
**Normalisation.** [1]_ works on Caffe-scaled pixels ``x' = 255 (x - m)`` (``m`` the mean),
scales the regularisers by ``1 / x0_σ²`` with ``x0_σ = 27098.1`` (``x0_sigma.mat``: the norm
of a typical mean-subtracted 227×227×3 image) and the feature term by ``1 / ||Φ0||²``, and
steps ``x' ← x' + v``, ``v ← 0.9 v - η x0_σ² ∇E``. Rewritten for ``x`` in [0, 1] the same
iteration minimises the ``E`` above with

- ``λ_α = λ'_α 255^α / (2 x0_σ²)``: ``λ'_α = 8e-10``, ``α = 6`` give ``1.498e-4``;
- ``λ_TV = λ'_TV 255^β / (2 x0_σ²)``: ``β = 2`` and [1]_'s ``λ'_TV`` of 1 (conv1 and HOG),
  10 (conv2 .. conv4) and 100 (conv5 .. fc8) give ``4.43e-5``, ``4.43e-4``, ``4.43e-3``
  (:func:`default_lambda_tv`);
- the step ``η x0_σ² / 255²``: ``η = 0.004`` gives ``lr = 45.17``;
- the initial noise, ``x0_σ`` spread over a 227×227×3 image, a standard deviation of
  ``x0_σ / sqrt(227 · 227 · 3) / 255 = 0.2703`` around grey.

**Departures from [1]_** (and what [2]_ compares against):

- Steps: [1]_'s own counts by default (:func:`default_steps`: 400 for AlexNet, 800
  for HOG), and the step is cut ×0.1 after 60 % and again after 90 % of them; [1]_'s
  AlexNet schedule cuts after 25 % and 75 % of 400 (100 steps at the full step; HOG: 200 of
  800). With a budget of 50-200 steps the longer first run reached lower errors on four
  photographs (random-weights CaffeNet conv2 at 50 steps: normalised error 0.51 vs 0.67;
  HOG at 200 steps: 0.74 vs 0.76). The momentum is reset at each cut, as in [1]_.
- The α-norm is taken about grey 0.5 (the pipeline's pixel convention), not about the
  ImageNet mean image.
- HOG: [1]_ inverted the HOG of the grey image; here ``Φ0`` is the pipeline's HOG of the
  colour image (the decoders' input) and the reconstruction is grey, one channel repeated
  three times (:func:`invert` with ``channels=1``); the regularisers act on that one
  channel, as in [1]_. [1]_'s HOG is VLFeat's written as a network of convolutions
  (``hog_net.m``); ours is :func:`~pipeline.features.hog.hog_torch`, which follows
  ``vl_hog`` exactly and differentiates through the magnitudes only.
- The result is clipped to [0, 1]; [1]_ leaves it unbounded and rescales it for display.
- An all-zero ``Φ0`` (possible with random weights) is not divided by: its feature term is
  ``||Φ(x)||²``.
- Adam is offered beside [1]_'s momentum SGD (:attr:`InversionParams.optimizer`); on
  random-weights CaffeNet it did worse at the same budget (conv5, 50 steps: normalised
  error 0.79 at the best Adam step tried vs 0.65), so it is not the default.
- For ``torchvision``'s AlexNet (224×224 input) the 227 crop is optimised and the network
  sees its central 224 at offset 2, i.e. exactly its crop of the 256×256 image; the
  outer pixels (2 at the top and left, 1 at the bottom and right) are set by the
  regularisers alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline import alexnet, decoders
from pipeline.devices import resolve_device
from pipeline.errors import ConfigError, ExtractionError
from pipeline.features.hog import HogParams, hog_torch
from pipeline.pixels import ALEXNET_CROP, PIXEL_OFFSET, target_images
from pipeline.progress import progress_bar

__all__ = [
    "IMAGE_SIZE",
    "InversionParams",
    "alpha_norm",
    "default_lambda_tv",
    "default_steps",
    "feature_function",
    "feature_loss",
    "invert",
    "invert_target",
    "to_target_convention",
    "total_variation",
]

#: Side of the pipeline's images (docs/method.md §1); HOG is inverted at this size.
IMAGE_SIZE = 256

#: [1]'s ``x0_sigma.mat``: the norm of a typical mean-subtracted 227×227×3 Caffe image.
_X0_SIGMA = 27098.11571533
#: Caffe pixel scale of [1]: a white pixel is 255.
_PIXEL_MAX = 255.0
#: [1]'s settings in its own units (experiment_cnn.m): the first learning rate and the
#: weight of the α-norm ("lambdaL2", α = "beta" = 6).
_CAFFE_LR = 0.004
_CAFFE_LAMBDA_ALPHA = 8e-10
#: Pixels of the 227×227×3 image ``x0_σ`` was measured on.
_X0_PIXELS = 227 * 227 * 3

#: [1]'s ``lambdaTV`` per layer group (experiment_cnn.m: layers 1-6 -> 1, 7-12 -> 10,
#: 13-20 -> 100; experiment_shallow_quantitative.m: HOG -> 1), in Caffe units.
_CAFFE_LAMBDA_TV = {
    "hog": 1.0,
    "conv1": 1.0,  # [1]'s layer 4 (norm1)
    "conv2": 10.0,  # layer 8 (norm2)
    "conv3": 10.0,  # layer 10 (relu3)
    "conv4": 10.0,  # layer 12 (relu4)
    "conv5": 100.0,  # layer 15 (pool5)
    "fc6": 100.0,
    "fc7": 100.0,
    "fc8": 100.0,
}

#: Targets without a differentiable Φ (docs/method.md §6).
_NOT_DIFFERENTIABLE = ("lbp", "sift")


def default_lambda_tv(target: str, beta: float = 2.0) -> float:
    """[1]'s TV weight for ``target`` rescaled to images in [0, 1] (see the module Notes).

    Parameters
    ----------
    target : str
        ``"hog"`` or an AlexNet layer ``"conv1"`` .. ``"fc8"``.
    beta : float
        The TV exponent; the weight scales as ``255^β``.

    Returns
    -------
    float
        ``λ'_TV 255^β / (2 x0_σ²)``: 4.43e-5 (hog, conv1), 4.43e-4 (conv2-4), 4.43e-3
        (conv5-fc8) at ``β = 2``.
    """
    if target not in _CAFFE_LAMBDA_TV:
        raise ConfigError(
            f"no inversion baseline for {target!r}; use one of {', '.join(_CAFFE_LAMBDA_TV)}"
        )
    # [1]'s λ/2 · Σ(255 x)^β / x0_σ² rewritten for x in [0, 1]
    return _CAFFE_LAMBDA_TV[target] * _PIXEL_MAX**beta / (2.0 * _X0_SIGMA**2)


def default_steps(target: str) -> int:
    """[1]'s number of gradient steps: 800 for HOG, 400 for an AlexNet layer."""
    default_lambda_tv(target)  # refuses a target [1] has no baseline for
    return 800 if target == "hog" else 400


def _is_real(value: object) -> bool:
    """A real number (int or float), not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class InversionParams:
    """Settings of the optimisation (the ``invert`` baseline); defaults are [1]'s, rescaled.

    Attributes
    ----------
    steps : int
        Gradient steps. [1]_ ran 400 (AlexNet) and 800 (HOG).
    optimizer : {"sgd", "adam"}
        ``"sgd"``: [1]'s momentum gradient descent; ``"adam"``: Adam (β 0.9, 0.999) at ``lr``.
    lr : float
        Initial step. 45.17 is [1]'s 0.004 for x in [0, 1] (momentum SGD); try ~0.1 for Adam.
    momentum : float
        SGD momentum, [1]'s 0.9 (unused by Adam).
    decay_at : tuple of float
        Fractions of ``steps`` after which the step is multiplied by ``decay_factor`` (and
        the momentum reset). [1]'s AlexNet schedule is (0.25, 0.75): 100, 200, 100 steps at
        1, 0.1, 0.01; ours keeps the full step longer (module Notes).
    decay_factor : float
        [1]'s 0.1.
    alpha : float
        Exponent of the α-norm, [1]'s 6.
    lambda_alpha : float
        Weight of ``Σ |x - 0.5|^α``; [1]'s 8e-10 rescaled (module Notes).
    beta : float
        Exponent of TV_β, [1]'s 2 ("β = 2 reduces the spiking artefacts").
    lambda_tv : float or None
        Weight of TV_β; ``None`` takes [1]'s per-layer value, :func:`default_lambda_tv`.
    init_std : float
        Standard deviation of the Gaussian noise around grey the image starts from; [1]'s
        ``x0_σ`` per pixel of a 227×227×3 image.
    seed : int
        Seed of the initial noise (with the image's index, so every image has its own).
    """

    steps: int | None = None  # None: [1]'s own count, 400 (AlexNet) / 800 (HOG)
    optimizer: Literal["sgd", "adam"] = "sgd"  # [1]: gradient descent with momentum
    lr: float = _CAFFE_LR * _X0_SIGMA**2 / _PIXEL_MAX**2  # [1]'s 0.004 for x in [0, 1]: 45.17
    momentum: float = 0.9  # [1]
    decay_at: tuple[float, ...] = (0.6, 0.9)  # [1]: 0.25, 0.75 (of 400 steps); see Notes
    decay_factor: float = 0.1  # [1]
    alpha: float = 6.0  # [1]
    lambda_alpha: float = _CAFFE_LAMBDA_ALPHA * _PIXEL_MAX**6 / (2 * _X0_SIGMA**2)  # 1.498e-4
    beta: float = 2.0  # [1]
    lambda_tv: float | None = None  # None: [1]'s per layer, 1 / 10 / 100 · 255² / (2 x0_σ²)
    init_std: float = _X0_SIGMA / math.sqrt(_X0_PIXELS) / _PIXEL_MAX  # [1]'s x0_σ: 0.2703
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "seed"):
            value = getattr(self, name)
            if name == "steps" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(
                    f"inversion: {name} must be a non-negative integer, got {value!r}"
                )
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(
                f"inversion: optimizer must be 'sgd' or 'adam', got {self.optimizer!r}"
            )
        rules: tuple[tuple[str, Callable[[float], bool], str], ...] = (
            ("lr", lambda v: v > 0, "> 0 (e.g. 45.17 for sgd, 0.1 for adam)"),
            ("momentum", lambda v: 0 <= v < 1, "in [0, 1) ([1]: 0.9)"),
            ("decay_factor", lambda v: 0 < v <= 1, "in (0, 1] ([1]: 0.1)"),
            ("alpha", lambda v: v >= 1, ">= 1 ([1]: 6)"),
            ("lambda_alpha", lambda v: v >= 0, ">= 0 ([1]: 1.498e-4 for x in [0, 1])"),
            ("beta", lambda v: v >= 1, ">= 1 ([1]: 1 or 2)"),
            ("init_std", lambda v: v >= 0, ">= 0 ([1]: 0.2703)"),
        )
        for name, ok, rule in rules:
            value = getattr(self, name)
            if not (_is_real(value) and math.isfinite(value) and ok(value)):
                raise ConfigError(f"inversion: {name} must be {rule}, got {value!r}")
        if self.lambda_tv is not None and not (
            _is_real(self.lambda_tv) and math.isfinite(self.lambda_tv) and self.lambda_tv >= 0
        ):
            raise ConfigError(
                f"inversion: lambda_tv must be >= 0, or null for [1]'s per-layer value; got "
                f"{self.lambda_tv!r}"
            )
        fractions = tuple(self.decay_at)
        if any(not (_is_real(f) and 0 < f < 1) for f in fractions) or list(fractions) != sorted(
            fractions
        ):
            raise ConfigError(
                f"inversion: decay_at must be increasing fractions of the steps in (0, 1), "
                f"got {self.decay_at!r}; e.g. [0.6, 0.9] (the default) or [1]'s [0.25, 0.75]"
            )

    def for_target(self, target: str) -> InversionParams:
        """These params with ``lambda_tv`` and ``steps`` set: [1]'s for ``target`` where None."""
        lambda_tv = default_lambda_tv(target, self.beta) if self.lambda_tv is None else None
        steps = default_steps(target) if self.steps is None else self.steps
        return dataclasses.replace(
            self, lambda_tv=self.lambda_tv if lambda_tv is None else lambda_tv, steps=steps
        )

    def phases(self) -> list[tuple[int, float]]:
        """The schedule as ``(steps, learning rate)`` runs; empty runs are dropped."""
        if self.steps is None:
            raise ConfigError("inversion: steps is None; use params.for_target(target)")
        bounds = [0, *(round(f * self.steps) for f in self.decay_at), self.steps]
        runs = [
            (end - start, self.lr * self.decay_factor**k)
            for k, (start, end) in enumerate(itertools.pairwise(bounds))
        ]
        return [(n, lr) for n, lr in runs if n > 0]


# -- the objective ----------------------------------------------------------------------------
def feature_loss(features: Tensor, target: Tensor) -> Tensor:
    """[1]'s normalised feature reconstruction error, per image.

    Parameters
    ----------
    features, target : (B, ...) Tensor
        ``Φ(x)`` and ``Φ0``.

    Returns
    -------
    (B,) Tensor
        ``||Φ(x) - Φ0||² / ||Φ0||²`` per image; ``||Φ(x)||²`` where ``Φ0`` is all zero.
    """
    diff = (features - target).flatten(1)
    norm2 = target.detach().flatten(1).square().sum(1)
    return diff.square().sum(1) / torch.where(norm2 > 0, norm2, torch.ones_like(norm2))


def alpha_norm(x: Tensor, alpha: float) -> Tensor:
    """``Σ |x|^α`` per image.

    Parameters
    ----------
    x : (B, C, H, W) Tensor
        A centred image (the pipeline's ``x - 0.5``).
    alpha : float

    Returns
    -------
    (B,) Tensor
    """
    return x.abs().pow(alpha).flatten(1).sum(1)


def total_variation(x: Tensor, beta: float) -> Tensor:
    """[1]'s ``TV_β``: ``Σ_{c,i,j} (dx² + dy²)^(β/2)`` per image, forward differences.

    Parameters
    ----------
    x : (B, C, H, W) Tensor
    beta : float

    Returns
    -------
    (B,) Tensor
        ``dx = x[c, i, j+1] - x[c, i, j]``, ``dy = x[c, i+1, j] - x[c, i, j]``; both are 0 on
        the last column / row (``[1]``'s ``x(:, [2:end end])`` replicates the border). Each
        channel separately, as in [1]'s ``tv.m``.

    Notes
    -----
    Where ``dx = dy = 0`` and ``β < 2`` the gradient is set to 0 (it is undefined; [1]_
    clamps the magnitude at 1e-5 instead).
    """
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))  # (B, C, H, W), last column 0
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))  # last row 0
    s = dx.square() + dy.square()
    if beta == 2.0:
        v = s
    else:
        positive = s > 0
        v = torch.where(positive, torch.where(positive, s, 1.0).pow(beta / 2), 0.0)
    return v.flatten(1).sum(1)


def _initial_noise(
    ids: Sequence[int], shape: tuple[int, ...], params: InversionParams, device: torch.device
) -> Tensor:
    """``init_std`` · N(0, 1) noise, ``(B, *shape)``; image ``i`` drawn from ``(seed, i)``."""
    draws = []
    for i in ids:
        seed = int(np.random.SeedSequence([params.seed, int(i)]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        draws.append(torch.randn(shape, generator=generator))
    return (torch.stack(draws) * params.init_std).to(device)


def _prepare_inversion(
    target_features: Tensor,
    params: InversionParams,
    *,
    channels: int,
    image_ids: Sequence[int] | None,
    device: str | torch.device,
) -> tuple[float, torch.device, Tensor, list[int]]:
    """Check :func:`invert`'s arguments; its ``lambda_tv``, device, target and image ids.

    Returns
    -------
    lambda_tv : float
    device : torch.device
    target : (B, ...) Tensor of float32
        ``target_features`` detached, on ``device``.
    ids : list of int
        One per image (default ``0 .. B - 1``).
    """
    if channels not in (1, 3):
        raise ConfigError(f"invert: channels must be 1 (grey) or 3 (RGB), got {channels}")
    if params.lambda_tv is None or params.steps is None:
        raise ConfigError(
            "invert: params.lambda_tv or params.steps is None; pass params.for_target(target) "
            "to take [1]'s values for the target, or set them"
        )
    lambda_tv = params.lambda_tv
    dev = resolve_device(str(device)) if isinstance(device, str) else device
    target = target_features.detach().to(dev, torch.float32)
    batch = target.shape[0]
    ids = list(range(batch)) if image_ids is None else [int(i) for i in image_ids]
    if len(ids) != batch:
        raise ConfigError(f"invert: {len(ids)} image_ids for {batch} images; pass one per image")
    return lambda_tv, dev, target, ids


# -- optimisation -----------------------------------------------------------------------------
def invert(
    phi: Callable[[Tensor], Tensor],
    target_features: Tensor,
    *,
    size: int,
    params: InversionParams,
    channels: int = 3,
    image_ids: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Tensor:
    """Images whose features under ``phi`` match ``target_features``, by gradient descent.

    Parameters
    ----------
    phi : callable
        ``(B, 3, size, size)`` float images in [0, 1] -> ``(B, ...)`` features,
        differentiable (:func:`feature_function`).
    target_features : (B, ...) Tensor
        ``Φ0``, one row per image.
    size : int
        Side of the square image optimised.
    params : InversionParams
        With ``lambda_tv`` set (:meth:`InversionParams.for_target` fills in [1]'s).
    channels : {3, 1}
        1 optimises a grey image, repeated into the 3 channels ``phi`` sees ([1]'s HOG).
    image_ids : sequence of int, optional
        One id per image for its initial noise (default ``0 .. B - 1``): an image's result
        depends on its features, id and ``params`` only, not on the rest of the batch.
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"auto"``...
    progress : bool
        Show a progress bar over the steps.

    Returns
    -------
    (B, 3, size, size) Tensor of float32
        In [0, 1], on ``device``, detached.

    Notes
    -----
    The objective is the sum over the batch of every image's own ``E`` (module docstring),
    so images do not interact: the gradient of one is that of its objective alone. On a CPU
    the steps run on one torch thread, which makes them reproducible bit for bit (on two,
    [1] on HOG ended in one of two results from run to run).
    """
    lambda_tv, dev, target, ids = _prepare_inversion(
        target_features, params, channels=channels, image_ids=image_ids, device=device
    )
    # the centred image x - 0.5 is the variable: [1] optimises the mean-subtracted image
    z = _initial_noise(ids, (channels, size, size), params, dev).requires_grad_(True)

    def objective() -> tuple[Tensor, Tensor]:
        image = (z + PIXEL_OFFSET).expand(-1, 3, -1, -1)  # (B, 3, S, S) in ~[0, 1]
        fit = feature_loss(phi(image), target)  # (B,)
        reg = params.lambda_alpha * alpha_norm(z, params.alpha)
        if lambda_tv:
            reg = reg + lambda_tv * total_variation(z, params.beta)
        return fit, fit + reg

    bar = progress_bar(total=params.steps, desc="invert", unit="step", disable=not progress)
    with _one_thread_on_cpu(dev):
        _optimise(z, objective, params, bar, progress)
    bar.close()
    with torch.no_grad():
        return (z + PIXEL_OFFSET).expand(-1, 3, -1, -1).clamp(0.0, 1.0).contiguous()


@contextlib.contextmanager
def _one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """Torch's intra-op threads set to 1 on a CPU, restored afterwards.

    Same inputs, same bytes: on 2 threads [1] on HOG (800 steps) ended in one of two
    results from run to run of the same process command (2 of 11 runs 0.6316, the others
    0.6331); on one thread 19 of 19 runs gave the same bytes. A lab inverting many images on
    CPUs runs them as parallel processes (``baseline`` stages, Dask workers) instead.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _optimise(
    z: Tensor,
    objective: Callable[[], tuple[Tensor, Tensor]],
    params: InversionParams,
    bar: Any,
    progress: bool,
) -> None:
    """[1]'s gradient steps on ``z`` in place: the phases of ``params``, momentum reset."""
    optimizer: torch.optim.Optimizer | None = None
    for run, lr in params.phases():
        if params.optimizer == "sgd":  # [1] resets the momentum whenever the step changes
            optimizer = torch.optim.SGD([z], lr=lr, momentum=params.momentum)
        elif optimizer is None:
            optimizer = torch.optim.Adam([z], lr=lr, betas=(0.9, 0.999))
        else:
            for group in optimizer.param_groups:
                group["lr"] = lr
        for _ in range(run):
            optimizer.zero_grad(set_to_none=True)
            fit, total = objective()
            total.sum().backward()
            optimizer.step()
            bar.update()
            if progress:  # .item() waits for the device
                bar.set_postfix(fit=f"{fit.mean().item():.4f}", refresh=False)


# -- what is inverted -------------------------------------------------------------------------
def feature_function(
    target: str,
    *,
    arch: str = "caffenet",
    weights: str = "random:0",
    hog_params: HogParams | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Callable[[Tensor], Tensor], int]:
    """The differentiable ``Φ`` of ``target`` and the image size to optimise at.

    Parameters
    ----------
    target : str
        ``"hog"`` or an AlexNet layer ``"conv1"`` .. ``"fc8"``.
    arch : str
        ``"caffenet"`` (the paper's) or ``"torchvision"`` (AlexNet layers only).
    weights : str
        The network's weights file, or ``"random:SEED"`` (:func:`pipeline.alexnet.build`).
    hog_params : HogParams, optional
        HOG's parameters (default: the paper's ``vl_hog(im, 8)``).
    device : str or torch.device

    Returns
    -------
    phi : callable
        ``(B, 3, S, S)`` float images in [0, 1] -> features: ``(B, 31, 32, 32)`` for HOG,
        ``(B, *alexnet.output_shape(arch, target))`` for a layer. The network is frozen
        (no parameter gradients) and in eval mode.
    size : int
        ``S``: 256 for HOG (the whole image), 227 for AlexNet layers (the crop the network
        sees; torchvision's 224 input is the centre of it, see the module Notes).

    Raises
    ------
    ConfigError
        For ``lbp`` and ``sift`` (not differentiable: no baseline) and unknown targets.
    """
    if target in _NOT_DIFFERENTIABLE:
        raise ConfigError(
            f"{target}: not differentiable: no baseline (docs/method.md §6); the "
            "optimisation-based "
            "inversion exists for hog and conv1 .. fc8 only"
        )
    dev = resolve_device(str(device)) if isinstance(device, str) else device
    if target == "hog":
        hp = HogParams() if hog_params is None else hog_params
        return (lambda x: hog_torch(x, hp)), IMAGE_SIZE
    if target not in alexnet.LAYERS:
        raise ConfigError(
            f"no inversion baseline for {target!r}; use hog or one of {', '.join(alexnet.LAYERS)}"
        )
    spec = alexnet.get_architecture(arch)
    net = alexnet.build(spec, weights=weights).to(dev).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    # where the network's crop of the 256 image lies inside the 227 crop optimised
    offset = (IMAGE_SIZE - spec.input_size) // 2 - (IMAGE_SIZE - ALEXNET_CROP) // 2
    if offset < 0:
        raise ConfigError(f"{spec.name}'s {spec.input_size} input is larger than the 227 crop")
    end = offset + spec.input_size

    def phi(x: Tensor) -> Tensor:
        view = x[..., offset:end, offset:end].permute(0, 2, 3, 1)  # (B, S', S', 3) in [0, 1]
        return net.forward_layers(alexnet.preprocess(view, spec), [target])[target]

    return phi, ALEXNET_CROP


def to_target_convention(reconstruction: Tensor, target: str) -> Tensor:
    """A reconstruction in [0, 1] as :func:`~pipeline.pixels.target_images` makes targets.

    Parameters
    ----------
    reconstruction : (B, 3, S, S) Tensor
        In [0, 1]: the whole 256 image (HOG) or the 227 AlexNet crop.
    target : str

    Returns
    -------
    (B, 3, S_out, S_out) Tensor of float32
        ``x - 0.5`` at ``decoders.output_size(target)``: the very crop and resize
        ``target_images`` applies to the original image (the crop is placed back into a
        256 canvas at the offset the crop was taken from, then handed to it).
    """
    size = reconstruction.shape[-1]
    if target in alexnet.LAYERS:
        if size != ALEXNET_CROP:
            raise ExtractionError(f"{target}: expected a {ALEXNET_CROP} crop, got {size}")
        canvas = reconstruction.new_zeros((*reconstruction.shape[:2], IMAGE_SIZE, IMAGE_SIZE))
        at = (IMAGE_SIZE - ALEXNET_CROP) // 2
        canvas[..., at : at + size, at : at + size] = reconstruction
        reconstruction = canvas
    # target_images divides by 255: hand it 0..255 floats, never rounded to uint8
    return target_images(reconstruction.float() * 255.0, target)


def invert_target(
    target: str,
    images: np.ndarray,
    *,
    params: InversionParams,
    arch: str = "caffenet",
    weights: str = "random:0",
    hog_params: HogParams | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Reconstruct uint8 images from their ``target`` features by [1]'s optimisation.

    Parameters
    ----------
    target : str
        ``"hog"`` or ``"conv1"`` .. ``"fc8"``.
    images : (B, 256, 256, 3) ndarray of uint8
        Images of the image store; their features ``Φ0`` are computed here.
    params : InversionParams
    arch, weights : str
        The AlexNet whose layer is inverted (ignored for HOG).
    hog_params : HogParams, optional
    batch_size : int
        Images optimised at once (the result does not depend on it beyond rounding).
    device : str or torch.device
    progress : bool

    Returns
    -------
    (B, 3, S_out, S_out) ndarray of float32
        Reconstructions as ``x - 0.5`` at ``decoders.output_size(target)``, the crop and
        resize of :func:`pipeline.pixels.target_images`: directly comparable with the
        decoders' outputs and targets.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (256, 256, 3):
        raise ExtractionError(
            f"invert_target takes (B, 256, 256, 3) uint8 images, got {images.dtype} "
            f"{images.shape}; read them from the image store"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(
            f"invert_target: batch_size must be a positive integer, got {batch_size!r}"
        )
    dev = resolve_device(str(device)) if isinstance(device, str) else device
    phi, size = feature_function(
        target, arch=arch, weights=weights, hog_params=hog_params, device=dev
    )
    params = params.for_target(target)
    out = np.empty(
        (len(images), 3, decoders.output_size(target), decoders.output_size(target)), np.float32
    )
    at = (IMAGE_SIZE - size) // 2
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(images[start : start + batch_size]).to(dev)
        x = chunk.permute(0, 3, 1, 2).float() / 255.0  # (b, 3, 256, 256) in [0, 1]
        with torch.no_grad():
            phi0 = phi(x[..., at : at + size, at : at + size])
        recon = invert(
            phi,
            phi0,
            size=size,
            params=params,
            channels=1 if target == "hog" else 3,
            image_ids=range(start, start + len(chunk)),
            device=dev,
            progress=progress,
        )
        out[start : start + len(chunk)] = to_target_convention(recon, target).cpu().numpy()
    return out
