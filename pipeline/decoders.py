"""Up-convolutional decoders that reconstruct an image from a feature representation.

One decoder per inverted representation (docs/method.md §4): the shallow features HOG, SIFT and LBP
(256×256 output) and the eight AlexNet layer groups CONV1..FC8 (216/208/192/128 output).
Every layer is named as in the supplement's tables (``convA1``, ``upconvJ4``, ``fc1``, ...), so
a checkpoint's keys read like the paper (``convA1.weight``).

Conventions shared by every decoder
-----------------------------------
- The first operation is :class:`InputNorm` (``input_norm.mean`` / ``input_norm.std`` buffers).
- Every convolution, transposed convolution and fully connected layer is followed by a leaky
  ReLU of slope 0.2, except the last layer, whose output is the image with no activation.
- All layers have a bias (Caffe's default), so a layer holds ``k*k*cin*cout + cout`` (conv)
  or ``cin*cout + cout`` (fc) parameters.
- Paddings are chosen so that every layer gives exactly the sizes of the tables:
  K5 S1 conv: pad 2; K3 S1 conv: pad 1 ("same"); K5 S2 conv: pad 2 (32→16);
  K3 S2 conv: pad 1 (8→4); K4 S2 upconv: pad 1 (doubles); K5 S2 upconv: pad 2 plus
  ``output_padding`` 1 (doubles).
- ``width`` scales every hidden channel count ``c`` to ``max(8, floor(c*width + 0.5))``
  (round half up, at least 8 channels); the input channels and the 3 output channels are never
  scaled. ``width=1.0`` is the paper.

Public API: :data:`TARGETS`, :func:`input_shape`, :func:`output_size`, :func:`build`,
:func:`parameter_count`, the family versions (:data:`FAMILY_VERSIONS`, :data:`FAMILIES`,
:func:`family`, :func:`version`), and the model classes :class:`HogDecoder`, :class:`SiftDecoder`,
:class:`LbpDecoder`, :class:`ConvDecoder`, :class:`FcDecoder`, and :class:`Ensemble` (the mean
of several trained decoders of one target).

References
----------
.. [1] A. Dosovitskiy and T. Brox, "Inverting Visual Representations with Convolutional
   Networks", CVPR 2016 (arXiv:1506.02753), and its supplementary material, Tables 2–6.

Notes
-----
Departures from the paper (also in the README's table):

- CONV1–CONV4 decoders are not tabulated in the supplement. They follow Table 5: three K3 S1
  convs with 256 channels at the input size, then K5 S2 upconvs doubling up to 216 (CONV1,
  3 upconvs) or 208 (CONV2–4, 4 upconvs). The upconvs keep Table 5's channel count *per
  resolution* (the last upconvs of 256, 128, 64, 32, 3): CONV1 upconvs give 64, 32, 3
  channels; CONV2–4 upconvs give 128, 64, 32, 3 channels.
- FC6 and FC7 decoders follow Table 6 with 4096 inputs instead of 1000.
- The reshape after ``fc3`` is to ``(256, 4, 4)`` channel-major, Caffe's memory layout of the
  table's 4×4×256 blob.
- Weights use PyTorch's default initialisation; the paper does not state one.
- Every decoder first standardises its input per channel with the training split's
  statistics (:class:`InputNorm`, set by the training stage); the paper feeds raw features.
- ``width`` and ``in_channels`` are project extensions for quick CPU runs and for
  torchvision's AlexNet (64/192/384/256/256 conv channels); the defaults are the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from pipeline.errors import ConfigError

__all__ = [
    "FAMILIES",
    "FAMILY_VERSIONS",
    "LEAKY_SLOPE",
    "TARGETS",
    "ConvDecoder",
    "Ensemble",
    "FcDecoder",
    "HogDecoder",
    "InputNorm",
    "LbpDecoder",
    "SiftDecoder",
    "build",
    "family",
    "input_shape",
    "output_size",
    "parameter_count",
    "scaled",
    "version",
]

#: Negative slope of every leaky ReLU (docs/method.md §4, supplement p. 1).
LEAKY_SLOPE = 0.2

#: Fewest channels a hidden layer keeps when ``width`` shrinks it.
MIN_HIDDEN_CHANNELS = 8

#: Channels of the 3 K3 S1 convs at the input size of the CONV1..CONV5 decoders (Table 5).
CONV_HIDDEN = 256

#: Output channels of Table 5's upconvs at 12, 24, 48, 96 px; the final upconv gives 3.
#: Decoders with fewer upconvs use the last entries (the channel count per resolution).
CONV_UPCONV_CHANNELS = (256, 128, 64, 32)

#: Width of the three fc layers of Table 6.
FC_HIDDEN = 4096

#: ``fc3``'s output is reshaped to (FC_RESHAPE_CHANNELS, 4, 4) (Table 6: 4×4×256).
FC_RESHAPE_CHANNELS = 256
FC_RESHAPE_SIZE = 4

#: Version of each decoder family, one per network class below: ``hog`` (HogDecoder),
#: ``sift`` (SiftDecoder), ``lbp`` (LbpDecoder), ``conv`` (ConvDecoder: conv1..conv5) and
#: ``fc`` (FcDecoder: fc6..fc8). Bump a family's number whenever its decoders compute
#: something else from the same seed, input and ``width`` (layers, channels, paddings,
#: activations, initialisation, parameter names): checkpoints record it and are refused by
#: another version, and ``tests/test_golden.py`` fails on an output change without a bump.
#: Version 2 (all families): the input standardisation :class:`InputNorm` (``input_norm.*``).
FAMILY_VERSIONS: dict[str, int] = {"hog": 2, "sift": 2, "lbp": 2, "conv": 2, "fc": 2}


def scaled(channels: int, width: float) -> int:
    """Hidden channel count at ``width``: ``max(8, floor(channels*width + 0.5))``."""
    return max(MIN_HIDDEN_CHANNELS, math.floor(channels * width + 0.5))


def _conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Conv2d:
    """A conv whose output is ``ceil(size / stride)``: pad ``kernel // 2`` (K5 → 2, K3 → 1)."""
    return nn.Conv2d(cin, cout, kernel_size=kernel, stride=stride, padding=kernel // 2)


def _upconv(cin: int, cout: int, kernel: int) -> nn.ConvTranspose2d:
    """A stride-2 transposed conv that exactly doubles the size.

    Output size is ``(n - 1)*2 - 2*pad + kernel + output_padding``: K4 with pad 1 gives
    ``2n``; K5 with pad 2 gives ``2n - 1``, so it takes ``output_padding=1``.
    """
    if kernel == 4:
        return nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1)
    if kernel == 5:
        return nn.ConvTranspose2d(cin, cout, kernel_size=5, stride=2, padding=2, output_padding=1)
    raise AssertionError(f"upconv kernel {kernel} is not in the paper's tables (4 or 5)")


class InputNorm(nn.Module):
    """Per-channel standardisation of the input features: ``(x - mean) / std``.

    The statistics are buffers (in the state dict, not trained), set once by the training
    stage from the training split's features (:meth:`set`); the identity until then. HOG
    cells are ~0.1, LBP histogram bins and SIFT values span three orders of magnitude between
    channels: standardised inputs let a short run learn the features' structure instead of
    the training images' mean colour (docs/method.md §5; a project departure, README).

    Parameters
    ----------
    channels : int
        Input channels (features for fc targets).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def set(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the training statistics, ``mean`` and ``std`` of shape ``(channels,)``."""
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ConfigError(
                f"input statistics of shape {tuple(mean.shape)} / {tuple(std.shape)} for a "
                f"decoder with {self.mean.shape[0]} input channels"
            )
        if not bool((std > 0).all()):
            raise ConfigError("input standard deviations must be > 0")
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) → (B, C, ...), standardised per channel."""
        shape = (1, -1) + (1,) * (x.dim() - 2)  # broadcast over the spatial dimensions
        return (x - self.mean.view(shape)) / self.std.view(shape)


class HogDecoder(nn.Module):
    """Two-stream decoder from HOG (Table 2): ``(B, 31, 32, 32)`` → ``(B, 3, 256, 256)``.

    Stream A compresses to 4×4 to gather global brightness and comes back to 32×32; stream B
    keeps local detail at 32×32; the joint stream J concatenates them and upsamples ×8.

    Parameters
    ----------
    in_channels : int
        HOG channels, 31 for the UoCTTI variant.
    width : float
        Hidden-channel multiplier (module docstring); 1.0 is the paper.

    References
    ----------
    Dosovitskiy & Brox (CVPR 2016), supplement Table 2.
    """

    def __init__(self, in_channels: int = 31, *, width: float = 1.0) -> None:
        super().__init__()
        c = partial(scaled, width=width)
        self.input_norm = InputNorm(in_channels)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        # stream A: 32 → 4 → 32
        self.convA1 = _conv(in_channels, c(256), 5, 2)
        self.convA2 = _conv(c(256), c(512), 5, 2)
        self.convA3 = _conv(c(512), c(1024), 3, 2)
        self.upconvA1 = _upconv(c(1024), c(512), 4)
        self.upconvA2 = _upconv(c(512), c(256), 4)
        self.upconvA3 = _upconv(c(256), c(128), 4)
        # stream B: stays at 32
        self.convB1 = _conv(in_channels, c(128), 5, 1)
        self.convB2 = _conv(c(128), c(128), 3, 1)
        # joint stream: 32 → 256
        self.convJ1 = _conv(c(128) + c(128), c(256), 3, 1)
        self.convJ2 = _conv(c(256), c(128), 3, 1)
        self.upconvJ4 = _upconv(c(128), c(64), 4)
        self.upconvJ5 = _upconv(c(64), c(32), 4)
        self.upconvJ6 = _upconv(c(32), 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """features : (B, 31, 32, 32) → image : (B, 3, 256, 256); channels below at width 1."""
        x = self.input_norm(x)  # (B, 31, 32, 32), standardised
        a = self.act(self.convA1(x))  # (B, 256, 16, 16)
        a = self.act(self.convA2(a))  # (B, 512, 8, 8)
        a = self.act(self.convA3(a))  # (B, 1024, 4, 4)
        a = self.act(self.upconvA1(a))  # (B, 512, 8, 8)
        a = self.act(self.upconvA2(a))  # (B, 256, 16, 16)
        a = self.act(self.upconvA3(a))  # (B, 128, 32, 32)
        b = self.act(self.convB1(x))  # (B, 128, 32, 32)
        b = self.act(self.convB2(b))  # (B, 128, 32, 32)
        j = torch.cat([a, b], dim=1)  # (B, 256, 32, 32)
        j = self.act(self.convJ1(j))  # (B, 256, 32, 32)
        j = self.act(self.convJ2(j))  # (B, 128, 32, 32)
        j = self.act(self.upconvJ4(j))  # (B, 64, 64, 64)
        j = self.act(self.upconvJ5(j))  # (B, 32, 128, 128)
        return self.upconvJ6(j)  # (B, 3, 256, 256), no activation


class SiftDecoder(nn.Module):
    """Decoder from the SIFT cell map (Table 3): ``(B, 133, 64, 64)`` → ``(B, 3, 256, 256)``.

    Parameters
    ----------
    in_channels : int
        Values per 4×4-pixel cell: 128 descriptor + 5 keypoint values.
    width : float
        Hidden-channel multiplier (module docstring); 1.0 is the paper.

    References
    ----------
    Dosovitskiy & Brox (CVPR 2016), supplement Table 3.
    """

    def __init__(self, in_channels: int = 133, *, width: float = 1.0) -> None:
        super().__init__()
        c = partial(scaled, width=width)
        self.input_norm = InputNorm(in_channels)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.conv1 = _conv(in_channels, c(256), 5, 2)
        self.conv2 = _conv(c(256), c(512), 3, 2)
        self.conv3 = _conv(c(512), c(1024), 3, 2)
        self.conv4 = _conv(c(1024), c(2048), 3, 2)
        self.conv5 = _conv(c(2048), c(2048), 3, 1)
        self.conv6 = _conv(c(2048), c(1024), 3, 1)
        self.upconv1 = _upconv(c(1024), c(512), 4)
        self.upconv2 = _upconv(c(512), c(256), 4)
        self.upconv3 = _upconv(c(256), c(128), 4)
        self.upconv4 = _upconv(c(128), c(64), 4)
        self.upconv5 = _upconv(c(64), c(32), 4)
        self.upconv6 = _upconv(c(32), 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """features : (B, 133, 64, 64) → image : (B, 3, 256, 256); channels at width 1."""
        x = self.input_norm(x)  # (B, 133, 64, 64), standardised
        x = self.act(self.conv1(x))  # (B, 256, 32, 32)
        x = self.act(self.conv2(x))  # (B, 512, 16, 16)
        x = self.act(self.conv3(x))  # (B, 1024, 8, 8)
        x = self.act(self.conv4(x))  # (B, 2048, 4, 4)
        x = self.act(self.conv5(x))  # (B, 2048, 4, 4)
        x = self.act(self.conv6(x))  # (B, 1024, 4, 4)
        x = self.act(self.upconv1(x))  # (B, 512, 8, 8)
        x = self.act(self.upconv2(x))  # (B, 256, 16, 16)
        x = self.act(self.upconv3(x))  # (B, 128, 32, 32)
        x = self.act(self.upconv4(x))  # (B, 64, 64, 64)
        x = self.act(self.upconv5(x))  # (B, 32, 128, 128)
        return self.upconv6(x)  # (B, 3, 256, 256), no activation


class LbpDecoder(nn.Module):
    """Two-stream decoder from LBP (Table 4): ``(B, 58, 16, 16)`` → ``(B, 3, 256, 256)``.

    Parameters
    ----------
    in_channels : int
        LBP histogram bins, 58 for VLFeat's uniform quantisation.
    width : float
        Hidden-channel multiplier (module docstring); 1.0 is the paper.

    References
    ----------
    Dosovitskiy & Brox (CVPR 2016), supplement Table 4.
    """

    def __init__(self, in_channels: int = 58, *, width: float = 1.0) -> None:
        super().__init__()
        c = partial(scaled, width=width)
        self.input_norm = InputNorm(in_channels)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        # stream A: 16 → 4 → 16
        self.convA1 = _conv(in_channels, c(256), 5, 2)
        self.convA2 = _conv(c(256), c(512), 5, 2)
        self.convA3 = _conv(c(512), c(1024), 3, 1)
        self.upconvA1 = _upconv(c(1024), c(512), 4)
        self.upconvA2 = _upconv(c(512), c(256), 4)
        # stream B: stays at 16
        self.convB1 = _conv(in_channels, c(128), 5, 1)
        self.convB2 = _conv(c(128), c(128), 3, 1)
        # joint stream: 16 → 256 (the table numbers its upconvs J3..J6)
        self.convJ1 = _conv(c(256) + c(128), c(256), 3, 1)
        self.convJ2 = _conv(c(256), c(128), 3, 1)
        self.upconvJ3 = _upconv(c(128), c(128), 4)
        self.upconvJ4 = _upconv(c(128), c(64), 4)
        self.upconvJ5 = _upconv(c(64), c(32), 4)
        self.upconvJ6 = _upconv(c(32), 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """features : (B, 58, 16, 16) → image : (B, 3, 256, 256); channels at width 1."""
        x = self.input_norm(x)  # (B, 58, 16, 16), standardised
        a = self.act(self.convA1(x))  # (B, 256, 8, 8)
        a = self.act(self.convA2(a))  # (B, 512, 4, 4)
        a = self.act(self.convA3(a))  # (B, 1024, 4, 4)
        a = self.act(self.upconvA1(a))  # (B, 512, 8, 8)
        a = self.act(self.upconvA2(a))  # (B, 256, 16, 16)
        b = self.act(self.convB1(x))  # (B, 128, 16, 16)
        b = self.act(self.convB2(b))  # (B, 128, 16, 16)
        j = torch.cat([a, b], dim=1)  # (B, 384, 16, 16)
        j = self.act(self.convJ1(j))  # (B, 256, 16, 16)
        j = self.act(self.convJ2(j))  # (B, 128, 16, 16)
        j = self.act(self.upconvJ3(j))  # (B, 128, 32, 32)
        j = self.act(self.upconvJ4(j))  # (B, 64, 64, 64)
        j = self.act(self.upconvJ5(j))  # (B, 32, 128, 128)
        return self.upconvJ6(j)  # (B, 3, 256, 256), no activation


class ConvDecoder(nn.Module):
    """Decoder from an AlexNet conv layer (Table 5 pattern): ``(B, C, n, n)`` → ``(B, 3, S, S)``.

    Three K3 S1 convs ``conv1..conv3`` with 256 channels at the input size ``n``, then
    ``num_upconvs`` K5 S2 upconvs ``upconv1..upconvN``, so ``S = n * 2**num_upconvs``.

    Parameters
    ----------
    in_channels : int
        Channels of the AlexNet activation (96, 256, 384, 384, 256 for CONV1..CONV5).
    num_upconvs : int
        3 for CONV1 (27→216), 4 for CONV2–4 (13→208), 5 for CONV5 (6→192), at most 5.
    width : float
        Hidden-channel multiplier (module docstring); 1.0 is the paper.

    References
    ----------
    Dosovitskiy & Brox (CVPR 2016), supplement Table 5 (CONV5); CONV1–4 per the main text.

    Notes
    -----
    The upconvs' channels are the last ``num_upconvs - 1`` of (256, 128, 64, 32), then 3: the
    channel count Table 5 has at each resolution (module Notes).
    """

    def __init__(self, in_channels: int, num_upconvs: int, *, width: float = 1.0) -> None:
        super().__init__()
        assert 1 <= num_upconvs <= len(CONV_UPCONV_CHANNELS) + 1, (
            f"num_upconvs={num_upconvs}: Table 5 has at most {len(CONV_UPCONV_CHANNELS) + 1}"
        )
        c = partial(scaled, width=width)
        self.num_upconvs = num_upconvs
        self.input_norm = InputNorm(in_channels)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.conv1 = _conv(in_channels, c(CONV_HIDDEN), 3, 1)
        self.conv2 = _conv(c(CONV_HIDDEN), c(CONV_HIDDEN), 3, 1)
        self.conv3 = _conv(c(CONV_HIDDEN), c(CONV_HIDDEN), 3, 1)
        hidden = CONV_UPCONV_CHANNELS[len(CONV_UPCONV_CHANNELS) - (num_upconvs - 1) :]
        channels = [c(CONV_HIDDEN), *(c(h) for h in hidden), 3]
        for i in range(num_upconvs):
            self.add_module(f"upconv{i + 1}", _upconv(channels[i], channels[i + 1], 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """features : (B, C, n, n) → image : (B, 3, n * 2**num_upconvs, same)."""
        x = self.input_norm(x)  # (B, C, n, n), standardised
        x = self.act(self.conv1(x))  # (B, 256, n, n)
        x = self.act(self.conv2(x))  # (B, 256, n, n)
        x = self.act(self.conv3(x))  # (B, 256, n, n)
        for i in range(1, self.num_upconvs + 1):
            x = getattr(self, f"upconv{i}")(x)  # (B, C_i, n * 2**i, n * 2**i)
            if i < self.num_upconvs:  # the last upconv is the image: no activation
                x = self.act(x)
        return x


class FcDecoder(nn.Module):
    """Decoder from an AlexNet fc layer (Table 6 pattern): ``(B, D)`` → ``(B, 3, 128, 128)``.

    Three fc layers of 4096, a reshape to 256×4×4, then five K5 S2 upconvs (4 → 128).

    Parameters
    ----------
    in_features : int
        Length of the activation: 1000 for FC8, 4096 for FC6 and FC7.
    width : float
        Hidden-channel multiplier (module docstring); 1.0 is the paper. ``fc3`` gives
        ``16 * scaled(256)`` features so that the reshape stays 4×4.

    References
    ----------
    Dosovitskiy & Brox (CVPR 2016), supplement Table 6 (FC8); FC6/FC7 per the main text.
    """

    def __init__(self, in_features: int, *, width: float = 1.0) -> None:
        super().__init__()
        c = partial(scaled, width=width)
        self.reshape_channels = c(FC_RESHAPE_CHANNELS)
        self.input_norm = InputNorm(in_features)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.fc1 = nn.Linear(in_features, c(FC_HIDDEN))
        self.fc2 = nn.Linear(c(FC_HIDDEN), c(FC_HIDDEN))
        self.fc3 = nn.Linear(c(FC_HIDDEN), self.reshape_channels * FC_RESHAPE_SIZE**2)
        self.upconv1 = _upconv(self.reshape_channels, c(256), 5)
        self.upconv2 = _upconv(c(256), c(128), 5)
        self.upconv3 = _upconv(c(128), c(64), 5)
        self.upconv4 = _upconv(c(64), c(32), 5)
        self.upconv5 = _upconv(c(32), 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """features : (B, D) → image : (B, 3, 128, 128); channels at width 1."""
        x = self.input_norm(x)  # (B, D), standardised
        x = self.act(self.fc1(x))  # (B, 4096)
        x = self.act(self.fc2(x))  # (B, 4096)
        x = self.act(self.fc3(x))  # (B, 4096)
        # (B, 4096) -> (B, 256, 4, 4), channel-major like Caffe's reshape of a 4×4×256 blob
        x = x.view(x.shape[0], self.reshape_channels, FC_RESHAPE_SIZE, FC_RESHAPE_SIZE)
        x = self.act(self.upconv1(x))  # (B, 256, 8, 8)
        x = self.act(self.upconv2(x))  # (B, 128, 16, 16)
        x = self.act(self.upconv3(x))  # (B, 64, 32, 32)
        x = self.act(self.upconv4(x))  # (B, 32, 64, 64)
        return self.upconv5(x)  # (B, 3, 128, 128), no activation


class Ensemble(nn.Module):
    """The mean of several decoders of one target: ``(B, ...)`` → ``(B, 3, S, S)``.

    Decoders of one target trained from different seeds on a small training set make
    different errors on new images; the mean of their reconstructions has a lower expected
    squared error than a member's (by the members' spread), and varies less from one draw
    of seeds to the next (``train.ensemble``; a departure from the paper, README).

    Parameters
    ----------
    members : sequence of nn.Module
        Decoders with the same input and output shapes (at least one).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ConfigError("an ensemble needs at least one decoder")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """features (B, ...) → the members' mean reconstruction (B, 3, S, S)."""
        out = self.members[0](x)
        for member in self.members[1:]:
            out = out + member(x)
        return out / len(self.members)


@dataclass(frozen=True)
class _Entry:
    """What the registry knows about one target."""

    input_shape: tuple[int, ...]  # per-sample feature shape, channels first
    output_size: int  # side of the square output image
    make: Callable[..., nn.Module]  # make(in_channels, width=...) -> decoder
    family: str  # key of FAMILY_VERSIONS: the network class that make builds


_REGISTRY: dict[str, _Entry] = {
    "hog": _Entry((31, 32, 32), 256, HogDecoder, "hog"),
    "sift": _Entry((133, 64, 64), 256, SiftDecoder, "sift"),
    "lbp": _Entry((58, 16, 16), 256, LbpDecoder, "lbp"),
    "conv1": _Entry((96, 27, 27), 216, partial(ConvDecoder, num_upconvs=3), "conv"),  # 27·2³
    "conv2": _Entry((256, 13, 13), 208, partial(ConvDecoder, num_upconvs=4), "conv"),  # 13·2⁴
    "conv3": _Entry((384, 13, 13), 208, partial(ConvDecoder, num_upconvs=4), "conv"),
    "conv4": _Entry((384, 13, 13), 208, partial(ConvDecoder, num_upconvs=4), "conv"),
    "conv5": _Entry((256, 6, 6), 192, partial(ConvDecoder, num_upconvs=5), "conv"),  # 6·2⁵
    "fc6": _Entry((4096,), 128, FcDecoder, "fc"),  # 4·2⁵
    "fc7": _Entry((4096,), 128, FcDecoder, "fc"),
    "fc8": _Entry((1000,), 128, FcDecoder, "fc"),
}

#: Every representation a decoder can be built for.
TARGETS: tuple[str, ...] = tuple(_REGISTRY)

#: Decoder family -> its targets, in :data:`TARGETS` order.
FAMILIES: dict[str, tuple[str, ...]] = {
    name: tuple(t for t, e in _REGISTRY.items() if e.family == name) for name in FAMILY_VERSIONS
}
assert sorted(t for ts in FAMILIES.values() for t in ts) == sorted(TARGETS), (
    "every decoder target needs a family in FAMILY_VERSIONS"
)


def _entry(target: str) -> _Entry:
    if target not in _REGISTRY:
        raise ConfigError(
            f"unknown decoder target {target!r}; use one of: {', '.join(TARGETS)} (lower case)"
        )
    return _REGISTRY[target]


def _parse_width(width: float) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        raise ConfigError(f"width must be a number such as 1.0 (the paper), got {width!r}")
    if not (math.isfinite(width) and width > 0):
        raise ConfigError(f"width must be a finite number > 0 (1.0 is the paper), got {width!r}")
    return float(width)


def _parse_in_channels(in_channels: int | None, default: int) -> int:
    if in_channels is None:
        return default
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(
            f"in_channels must be a positive int (or None for the paper's {default}), "
            f"got {in_channels!r}"
        )
    return in_channels


def input_shape(target: str, *, in_channels: int | None = None) -> tuple[int, ...]:
    """Per-sample feature shape the decoder for ``target`` takes, channels first.

    Parameters
    ----------
    target : str
        One of :data:`TARGETS`.
    in_channels : int, optional
        Replaces the first dimension (channels, or features for fc targets), as in
        :func:`build`.

    Returns
    -------
    shape : tuple of int
        e.g. ``(31, 32, 32)`` for ``"hog"``, ``(1000,)`` for ``"fc8"``.
    """
    shape = _entry(target).input_shape
    return (_parse_in_channels(in_channels, shape[0]), *shape[1:])


def family(target: str) -> str:
    """Name of the decoder family of ``target``, a key of :data:`FAMILY_VERSIONS`.

    Parameters
    ----------
    target : str
        One of :data:`TARGETS`.

    Returns
    -------
    family : str
        ``"hog"``, ``"sift"``, ``"lbp"``, ``"conv"`` (conv1..conv5) or ``"fc"`` (fc6..fc8).

    Raises
    ------
    ConfigError
        Unknown ``target``.
    """
    return _entry(target).family


def version(target: str) -> int:
    """Version of the decoder family that :func:`build` makes for ``target``.

    Parameters
    ----------
    target : str
        One of :data:`TARGETS`.

    Returns
    -------
    version : int
        ``FAMILY_VERSIONS[family(target)]``, bumped whenever the family's decoders compute
        something else (:data:`FAMILY_VERSIONS`); all targets of a family share it.

    Raises
    ------
    ConfigError
        Unknown ``target``.

    Examples
    --------
    >>> version("conv3") == FAMILY_VERSIONS["conv"]
    True
    """
    return FAMILY_VERSIONS[family(target)]


def output_size(target: str) -> int:
    """Side ``S`` of the decoder's square output ``(B, 3, S, S)`` (docs/method.md §4).

    256 for hog/sift/lbp; 216 for conv1 (27·8); 208 for conv2–4 (13·16); 192 for conv5
    (6·32); 128 for fc6–fc8 (4·32).
    """
    return _entry(target).output_size


def build(target: str, *, width: float = 1.0, in_channels: int | None = None) -> nn.Module:
    """The decoder for ``target``, freshly initialised.

    Parameters
    ----------
    target : str
        One of :data:`TARGETS`.
    width : float
        Multiplier of every hidden channel count, ``max(8, round_half_up(c * width))``;
        never the input or the 3 output channels. 1.0 is the paper.
    in_channels : int, optional
        Input channels (fc targets: input features) instead of the paper's, e.g. 64 for
        torchvision AlexNet's conv1 or 192 for its conv2. The spatial size stays the paper's.

    Returns
    -------
    decoder : nn.Module
        Maps ``(B, *input_shape(target))`` to ``(B, 3, S, S)``, ``S = output_size(target)``.

    Raises
    ------
    ConfigError
        Unknown ``target``, ``width <= 0``, or ``in_channels`` not a positive int.
    """
    entry = _entry(target)
    width = _parse_width(width)
    channels = _parse_in_channels(in_channels, entry.input_shape[0])
    return entry.make(channels, width=width)


def parameter_count(target: str, width: float = 1.0, *, in_channels: int | None = None) -> int:
    """Number of trainable parameters of ``build(target, width=width, in_channels=...)``.

    The model is built on the ``meta`` device, so no memory is allocated even for SIFT's
    ~10⁸ parameters at width 1.
    """
    with torch.device("meta"):
        model = build(target, width=width, in_channels=in_channels)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
