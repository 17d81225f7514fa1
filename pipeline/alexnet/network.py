"""The AlexNet family whose layers the paper inverts (docs/method.md §3, supplement Table 1).

Two named architectures, never substituted for one another:

- ``"caffenet"`` — :class:`CaffeNet`, Caffe's ``bvlc_reference_caffenet``, the network of the
  paper: 96/256/384/384/256 channels, grouped convolutions, local response normalisation.
- ``"torchvision"`` — :class:`TorchvisionAlexNet`, torchvision's ``alexnet``
  (64/192/384/256/256 channels, no groups, no LRN), whose ``.pth`` files load directly.

Both expose the eight layer groups :data:`LAYERS` (``conv1`` ... ``fc8``) through one
forward, :meth:`AlexNetBase.forward_layers`. The group -> module mapping is the
``GROUP_ENDS`` table of each class; :func:`build` makes a model in eval mode from a weights
file or from ``"random:SEED"``; :func:`preprocess` turns uint8 RGB images into the input the
architecture was trained on.

References
----------
.. [1] Dosovitskiy and Brox, "Inverting Visual Representations with Convolutional Networks",
   CVPR 2016, supplementary material, Table 1.
.. [2] Krizhevsky, Sutskever and Hinton, "ImageNet Classification with Deep Convolutional
   Neural Networks", NIPS 2012.
.. [3] Jia et al., "Caffe: Convolutional Architecture for Fast Feature Embedding", ACM MM
   2014; ``models/bvlc_reference_caffenet`` of BVLC/caffe.
.. [4] Krizhevsky, "One weird trick for parallelizing convolutional neural networks",
   arXiv:1404.5997, 2014 (torchvision's ``alexnet``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.alexnet.weights import (
    ExpectedLayer,
    expected_layers,
    file_sha256,
    find_mismatches,
    load_params,
    mismatch_message,
    to_state_dict,
)
from pipeline.errors import ConfigError, ExtractionError, WeightsError

__all__ = [
    "ARCHITECTURES",
    "LAYERS",
    "AlexNetBase",
    "Architecture",
    "CaffeNet",
    "TorchvisionAlexNet",
    "build",
    "describe_weights",
    "get_architecture",
    "init_random_",
    "is_random_weights",
    "output_shape",
    "parse_random_seed",
    "preprocess",
]

#: The layer groups whose activations the paper inverts, shallow to deep.
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")

_RANDOM_PREFIX = "random:"


class AlexNetBase(nn.Module):
    """The forward shared by both architectures: the children run in registration order.

    A subclass registers ``features`` (an ``nn.Sequential``), optionally ``avgpool``,
    ``flatten`` and ``classifier`` (an ``nn.Sequential``), and fills three tables.

    Attributes
    ----------
    INPUT_SIZE : int
        Side of the square input the fully connected layers need.
    GROUP_ENDS : mapping of str to str
        Layer group -> path of the module after which its activation is taken. The one
        place that says where ``conv1`` ... ``fc8`` are.
    PARAM_LAYERS : mapping of str to str
        Layer name in the architecture's weight files -> module path.
    """

    INPUT_SIZE: ClassVar[int]
    GROUP_ENDS: ClassVar[Mapping[str, str]]
    PARAM_LAYERS: ClassVar[Mapping[str, str]]

    def steps(self) -> list[tuple[str, nn.Module]]:
        """Every processing step in forward order, as ``(module path, module)``."""
        steps: list[tuple[str, nn.Module]] = []
        for name, child in self.named_children():
            if isinstance(child, nn.Sequential):
                steps += [(f"{name}.{sub}", module) for sub, module in child.named_children()]
            else:
                steps.append((name, child))
        return steps

    def forward_layers(self, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        """Activations of several layer groups from one forward pass.

        Parameters
        ----------
        x : (N, 3, S, S) Tensor
            Preprocessed images (:func:`preprocess`); ``S = INPUT_SIZE`` for ``fc6`` and
            deeper, the convolutional groups take any size that survives the pooling.
        layers : sequence of str
            Names from :data:`LAYERS`, in any order; a single name may be passed as a str.

        Returns
        -------
        dict of str to Tensor
            ``{layer: (N, *output_shape(arch, layer))}`` in the order asked; the forward
            stops after the deepest layer asked for.

        Raises
        ------
        ConfigError
            For an unknown or empty list of layers.
        ExtractionError
            For an input that is not ``(N, 3, H, W)``, or too small/large for ``fc6``.
        """
        wanted = _parse_layers(layers)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ExtractionError(
                f"expected preprocessed images (N, 3, H, W), got shape {tuple(x.shape)}; "
                "pass images through pipeline.alexnet.preprocess first"
            )
        ends = {self.GROUP_ENDS[layer]: layer for layer in wanted}
        steps = self.steps()
        last = max(i for i, (name, _) in enumerate(steps) if name in ends)
        found: dict[str, Tensor] = {}
        for name, module in steps[: last + 1]:
            if isinstance(module, nn.Flatten):
                self._check_flatten_input(x)
            x = module(x)
            if name in ends:
                found[ends[name]] = x
        return {layer: found[layer] for layer in wanted}

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``fc8``, ``(N, 1000)``."""
        return self.forward_layers(x, ("fc8",))["fc8"]

    def _check_flatten_input(self, x: Tensor) -> None:
        fc6 = next(module for _, module in self.steps() if isinstance(module, nn.Linear))
        if math.prod(x.shape[1:]) != fc6.in_features:
            raise ExtractionError(
                f"fc6 needs a pooled conv5 of {fc6.in_features} values, got shape "
                f"{tuple(x.shape[1:])}; feed {self.INPUT_SIZE}x{self.INPUT_SIZE} crops "
                "(pipeline.alexnet.preprocess makes them)"
            )


class CaffeNet(AlexNetBase):
    """Caffe's ``bvlc_reference_caffenet``: the AlexNet of the paper (supplement Table 1).

    Layer groups (activation taken after the last step listed), for a 227x227 input:

    ====== ============================================================ ============
    group  steps                                                        output
    ====== ============================================================ ============
    conv1  conv1 11x11 s4 (96) -> relu1 -> pool1 3x3 s2 -> norm1         (96, 27, 27)
    conv2  conv2 5x5 pad 2, 2 groups (256) -> relu2 -> pool2 -> norm2    (256, 13, 13)
    conv3  conv3 3x3 pad 1 (384) -> relu3                                (384, 13, 13)
    conv4  conv4 3x3 pad 1, 2 groups (384) -> relu4                      (384, 13, 13)
    conv5  conv5 3x3 pad 1, 2 groups (256) -> relu5 -> pool5             (256, 6, 6)
    fc6    fc6 (4096) -> relu6 (drop6 only in training, after the tap)   (4096,)
    fc7    fc7 (4096) -> relu7 (drop7 likewise)                          (4096,)
    fc8    fc8 (1000), no ReLU: the logits                               (1000,)
    ====== ============================================================ ============

    Module names are Caffe's layer names (``features.conv1``, ``classifier.fc6``), so a
    ``.caffemodel``'s blobs map by name. Input: BGR, 0-255, mean subtracted
    (:func:`preprocess`).

    Notes
    -----
    Departures from [2]_ that are Caffe's, kept because the paper used Caffe's model:
    pooling before normalisation (CaffeNet, not AlexNet's norm-then-pool) and a single
    network rather than two GPUs (the 2 groups reproduce the split connectivity).
    Local response normalisation: Caffe divides ``alpha`` by the window size,
    ``b = a / (k + alpha / n * sum(a^2))^beta``; ``nn.LocalResponseNorm`` uses the same
    convention, so ``alpha = 1e-4`` is passed unchanged. Max pooling rounds the output size
    up as Caffe does (``ceil_mode=True``); at 227x227 the sizes equal the floor ones.

    References
    ----------
    .. [1] Dosovitskiy and Brox, CVPR 2016, supplement Table 1.
    .. [2] Krizhevsky, Sutskever and Hinton, NIPS 2012.
    .. [3] Caffe ``models/bvlc_reference_caffenet/deploy.prototxt``.
    """

    INPUT_SIZE = 227
    GROUP_ENDS: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "conv1": "features.norm1",
            "conv2": "features.norm2",
            "conv3": "features.relu3",
            "conv4": "features.relu4",
            "conv5": "features.pool5",
            "fc6": "classifier.relu6",
            "fc7": "classifier.relu7",
            "fc8": "classifier.fc8",
        }
    )
    PARAM_LAYERS: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "conv1": "features.conv1",
            "conv2": "features.conv2",
            "conv3": "features.conv3",
            "conv4": "features.conv4",
            "conv5": "features.conv5",
            "fc6": "classifier.fc6",
            "fc7": "classifier.fc7",
            "fc8": "classifier.fc8",
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(3, 96, kernel_size=11, stride=4)),  # 227 -> 55
                    ("relu1", nn.ReLU()),
                    ("pool1", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),  # -> 27
                    ("norm1", nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)),
                    ("conv2", nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2)),
                    ("relu2", nn.ReLU()),
                    ("pool2", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),  # -> 13
                    ("norm2", nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)),
                    ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)),
                    ("relu3", nn.ReLU()),
                    ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2)),
                    ("relu4", nn.ReLU()),
                    ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2)),
                    ("relu5", nn.ReLU()),
                    ("pool5", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),  # -> 6
                ]
            )
        )
        self.flatten = nn.Flatten(1)  # (N, 256, 6, 6) -> (N, 9216), Caffe's C-major order
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    ("fc6", nn.Linear(256 * 6 * 6, 4096)),
                    ("relu6", nn.ReLU()),
                    ("drop6", nn.Dropout(p=0.5)),
                    ("fc7", nn.Linear(4096, 4096)),
                    ("relu7", nn.ReLU()),
                    ("drop7", nn.Dropout(p=0.5)),
                    ("fc8", nn.Linear(4096, 1000)),
                ]
            )
        )


class TorchvisionAlexNet(AlexNetBase):
    """torchvision's ``alexnet`` ([4]_), with torchvision's state-dict keys.

    A second, named architecture (docs/method.md §3): 64/192/384/256/256 channels, no groups,
    no LRN,
    conv1 with padding 2, an adaptive 6x6 average pool before the classifier, dropout before
    fc6 and fc7. Its layer groups, for a 224x224 input, take the activation after:

    ====== ======================================================== ============
    group  module (steps)                                           output
    ====== ======================================================== ============
    conv1  ``features.2`` (conv 11x11 s4 -> ReLU -> max pool)       (64, 27, 27)
    conv2  ``features.5`` (conv 5x5 -> ReLU -> max pool)            (192, 13, 13)
    conv3  ``features.7`` (conv 3x3 -> ReLU)                        (384, 13, 13)
    conv4  ``features.9`` (conv 3x3 -> ReLU)                        (256, 13, 13)
    conv5  ``avgpool`` (conv 3x3 -> ReLU -> max pool -> avg pool)   (256, 6, 6)
    fc6    ``classifier.2`` (fc -> ReLU)                            (4096,)
    fc7    ``classifier.5`` (fc -> ReLU)                            (4096,)
    fc8    ``classifier.6`` (fc, the logits)                        (1000,)
    ====== ======================================================== ============

    The mapping follows Table 1's rule (a group ends after its pooling / normalisation);
    torchvision has no normalisation, so conv1 and conv2 end at their pools. Input: RGB in
    [0, 1], normalised by the ImageNet mean and std (:func:`preprocess`).

    Notes
    -----
    ReLUs are not in place (torchvision's are), so the returned activations are never
    overwritten by a later step; the state dict is unaffected. ``flatten`` has no
    parameters and adds no key.

    References
    ----------
    .. [4] Krizhevsky, arXiv:1404.5997, 2014; pytorch/vision ``torchvision/models/alexnet.py``.
    """

    INPUT_SIZE = 224
    GROUP_ENDS: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "conv1": "features.2",
            "conv2": "features.5",
            "conv3": "features.7",
            "conv4": "features.9",
            "conv5": "avgpool",
            "fc6": "classifier.2",
            "fc7": "classifier.5",
            "fc8": "classifier.6",
        }
    )
    PARAM_LAYERS: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            name: name
            for name in (
                "features.0",
                "features.3",
                "features.6",
                "features.8",
                "features.10",
                "classifier.1",
                "classifier.4",
                "classifier.6",
            )
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),  # 224 -> 55
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),  # -> 27
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),  # -> 13
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),  # -> 6
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.flatten = nn.Flatten(1)  # (N, 256, 6, 6) -> (N, 9216)
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(),
            nn.Dropout(p=0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, 1000),
        )


@dataclass(frozen=True)
class Architecture:
    """A registered architecture and the input convention of its weights.

    Attributes
    ----------
    name : str
        Registry name.
    model : type of AlexNetBase
        The module class; its ``INPUT_SIZE``, ``GROUP_ENDS`` and ``PARAM_LAYERS``.
    channel_order : {"BGR", "RGB"}
        Channel order the first convolution expects.
    pixel_max : float
        Value of a white pixel before normalisation: 255 (Caffe) or 1 (torchvision).
    mean, std : tuple of 3 float
        Per-channel normalisation ``(x - mean) / std`` in ``channel_order`` and
        ``pixel_max`` units.
    output_shapes : mapping of str to tuple of int
        Per-image shape of each layer group at ``input_size``.
    """

    name: str
    model: type[AlexNetBase]
    channel_order: str
    pixel_max: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_shapes: Mapping[str, tuple[int, ...]]

    @property
    def input_size(self) -> int:
        """Side of the square centre crop the network takes (227 or 224)."""
        return self.model.INPUT_SIZE


#: The architectures by name; ``build``, ``preprocess`` and ``output_shape`` look them up here.
ARCHITECTURES: Mapping[str, Architecture] = MappingProxyType(
    {
        "caffenet": Architecture(
            name="caffenet",
            model=CaffeNet,
            channel_order="BGR",
            pixel_max=255.0,
            # Per-channel means (B, G, R) of Caffe's ilsvrc_2012_mean.binaryproto, as Caffe's
            # Python classifier example uses them (mean image averaged over its pixels).
            mean=(104.00698793, 116.66876762, 122.67891434),
            std=(1.0, 1.0, 1.0),
            output_shapes=MappingProxyType(
                {
                    "conv1": (96, 27, 27),
                    "conv2": (256, 13, 13),
                    "conv3": (384, 13, 13),
                    "conv4": (384, 13, 13),
                    "conv5": (256, 6, 6),
                    "fc6": (4096,),
                    "fc7": (4096,),
                    "fc8": (1000,),
                }
            ),
        ),
        "torchvision": Architecture(
            name="torchvision",
            model=TorchvisionAlexNet,
            channel_order="RGB",
            pixel_max=1.0,
            mean=(0.485, 0.456, 0.406),  # torchvision's ImageNet normalisation
            std=(0.229, 0.224, 0.225),
            output_shapes=MappingProxyType(
                {
                    "conv1": (64, 27, 27),
                    "conv2": (192, 13, 13),
                    "conv3": (384, 13, 13),
                    "conv4": (256, 13, 13),
                    "conv5": (256, 6, 6),
                    "fc6": (4096,),
                    "fc7": (4096,),
                    "fc8": (1000,),
                }
            ),
        ),
    }
)


def get_architecture(arch: str | Architecture) -> Architecture:
    """The registered :class:`Architecture` called ``arch``.

    Raises
    ------
    ConfigError
        For a name that is not registered.
    """
    if isinstance(arch, Architecture):
        return arch
    if arch not in ARCHITECTURES:
        raise ConfigError(
            f"unknown AlexNet architecture {arch!r}; use one of {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[arch]


def _parse_layers(layers: Sequence[str]) -> tuple[str, ...]:
    """Validated layer names; a single str counts as one name."""
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    if not names:
        raise ConfigError(f"no layers asked for; pass some of {', '.join(LAYERS)}")
    unknown = [name for name in names if name not in LAYERS]
    if unknown:
        raise ConfigError(f"unknown AlexNet layer(s) {unknown}; use names from {LAYERS}")
    return tuple(dict.fromkeys(names))


def output_shape(arch: str | Architecture, layer: str) -> tuple[int, ...]:
    """Per-image shape of ``layer``'s activation, e.g. ``(256, 6, 6)`` for caffenet conv5.

    Raises
    ------
    ConfigError
        For an unknown architecture or layer.
    """
    (name,) = _parse_layers((layer,))
    return tuple(get_architecture(arch).output_shapes[name])


def preprocess(images: np.ndarray | Tensor, arch: str | Architecture) -> Tensor:
    """Images as the network's input: centre crop, channel order, scale, normalisation.

    Parameters
    ----------
    images : (N, H, W, 3) ndarray or Tensor
        RGB, uint8 in 0..255, or floating in [0, 1] (a float tensor keeps its gradient and
        device). ``H, W >= input_size``; the pipeline's images are 256x256 (docs/method.md §1).
    arch : str or Architecture
        ``"caffenet"``: 227x227 crop, BGR, 0..255 minus the per-channel ImageNet mean
        (B, G, R) = (104.007, 116.669, 122.679). ``"torchvision"``: 224x224 crop, RGB in
        [0, 1], ``(x - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)``.

    Returns
    -------
    (N, 3, S, S) Tensor of float32
        ``S = input_size`` of the architecture.

    Raises
    ------
    ExtractionError
        For images that are not ``(N, H, W, 3)``, smaller than the crop, or neither uint8
        nor floating.

    Notes
    -----
    The crop starts at ``((H - S) // 2, (W - S) // 2)``, Caffe's test-time crop (offset 14
    for 256 -> 227). Departures: images are not resized first (torchvision's recipe resizes
    to 256; ours are 256 already), and Caffe subtracts the mean per channel, not the full
    256x256 mean image it was trained with.
    """
    spec = get_architecture(arch)
    size = spec.input_size
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ExtractionError(
            f"expected RGB images (N, H, W, 3), got shape {tuple(images.shape)}; "
            "add a batch axis for one image (image[None]) and drop any alpha channel"
        )
    height, width = int(images.shape[1]), int(images.shape[2])
    if height < size or width < size:
        raise ExtractionError(
            f"{spec.name} takes a {size}x{size} centre crop; images of {height}x{width} are "
            f"too small, resize them to at least {size}x{size} (the pipeline uses 256x256)"
        )
    top, left = (height - size) // 2, (width - size) // 2
    crop = images[:, top : top + size, left : left + size, :]  # (N, S, S, 3)
    x = crop if isinstance(crop, Tensor) else torch.from_numpy(np.array(crop))
    if x.dtype == torch.uint8:
        x = x.to(torch.float32) * (spec.pixel_max / 255.0)
    elif x.is_floating_point():
        x = x.to(torch.float32) * spec.pixel_max
    else:
        raise ExtractionError(
            f"expected uint8 (0..255) or floating ([0, 1]) images, got {x.dtype}; convert them"
        )
    x = x.permute(0, 3, 1, 2)  # (N, 3, S, S), RGB
    if spec.channel_order == "BGR":
        x = x.flip(1)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def is_random_weights(spec: str | Path) -> bool:
    """Whether a weights spec is ``"random:SEED"`` rather than a file.

    Features computed with random weights are not the paper's; whatever records them
    (store attrs, checkpoints, figure captions) must say so.
    """
    return isinstance(spec, str) and spec.startswith(_RANDOM_PREFIX)


def parse_random_seed(spec: str) -> int:
    """The seed of ``"random:SEED"``.

    Raises
    ------
    ConfigError
        If ``spec`` is not ``"random:"`` followed by a non-negative integer.
    """
    seed = spec.removeprefix(_RANDOM_PREFIX)
    if not is_random_weights(spec) or not seed.isdigit():
        raise ConfigError(
            f"random weights are written 'random:SEED' with a non-negative integer SEED "
            f"(e.g. 'random:0'); got {spec!r}"
        )
    return int(seed)


def init_random_(model: nn.Module, seed: int) -> nn.Module:
    """Fill every convolution and linear layer deterministically from ``seed``, in place.

    Weights are He-normal, ``N(0, 2 / fan_in)`` with ``fan_in = in / groups * kh * kw``,
    drawn from a private ``torch.Generator`` in module order; biases are zero. The global
    RNG is not touched. The same seed gives the same weights with the same torch version.

    Returns
    -------
    nn.Module
        ``model``, for chaining.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                draw = torch.randn(module.weight.shape, generator=generator)
                module.weight.copy_(draw * math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.zero_()
    return model


def _expected(spec: Architecture, model: AlexNetBase | None = None) -> list[ExpectedLayer]:
    """The layers ``spec``'s weight files hold (shapes from a meta-device model)."""
    if model is None:
        with torch.device("meta"):
            model = spec.model()
    return expected_layers(model, spec.model.PARAM_LAYERS)


def build(arch: str | Architecture, *, weights: str | Path) -> AlexNetBase:
    """An AlexNet of the named architecture with its weights, in eval mode on the CPU.

    Parameters
    ----------
    arch : str or Architecture
        ``"caffenet"`` or ``"torchvision"`` (:data:`ARCHITECTURES`).
    weights : str or Path
        A ``.caffemodel``, ``.npz`` (keys ``"<layer>/weight"``, ``"<layer>/bias"``),
        ``.pth`` or ``.pt`` (a state dict) file of that architecture, or
        ``"random:SEED"`` (:func:`init_random_`; results must then say they come from a
        random network, see :func:`is_random_weights`).

    Returns
    -------
    AlexNetBase
        :class:`CaffeNet` or :class:`TorchvisionAlexNet`, ``eval()``-ed.

    Raises
    ------
    ConfigError
        For an unknown architecture or a malformed ``"random:"`` spec.
    WeightsError
        For an unreadable file, or one whose layers or shapes do not match the
        architecture; the message lists expected vs found tensors and names the
        architecture the file does fit, if any.
    """
    spec = get_architecture(arch)
    with torch.device("meta"):
        model = spec.model()  # no default init: every parameter is written below
    model = model.to_empty(device="cpu")
    if is_random_weights(weights):
        init_random_(model, parse_random_seed(str(weights)))
        return model.eval()
    params = load_params(weights)
    expected = _expected(spec, model)
    problems = find_mismatches(params, expected)
    if problems:
        fits = [
            other.name
            for other in ARCHITECTURES.values()
            if other.name != spec.name and not find_mismatches(params, _expected(other))
        ]
        raise WeightsError(mismatch_message(weights, spec.name, problems, fits))
    model.load_state_dict(to_state_dict(params, expected), strict=True)
    return model.eval()


def describe_weights(weights: str | Path) -> dict[str, str | int]:
    """Provenance of a weights spec, for store attrs and checkpoints.

    Returns
    -------
    dict
        ``{"kind": "random", "seed": SEED}`` or
        ``{"kind": "file", "file": <name>, "sha256": <hex digest>}``.
    """
    if is_random_weights(weights):
        return {"kind": "random", "seed": parse_random_seed(str(weights))}
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(
            f"no weights file at {str(path)!r} (extract.alexnet.weights in params.yaml; a "
            "relative path is relative to the folder the command runs in, the repository root "
            "under dvc repro); check the path or use 'random:SEED'"
        )
    return {"kind": "file", "file": path.name, "sha256": file_sha256(path)}
