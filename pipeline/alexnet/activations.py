"""AlexNet activations CONV1 … FC8 as a family of extractors (docs/method.md §3).

``extract("conv5", images, arch="caffenet", weights="bvlc_reference_caffenet.caffemodel")``
returns ``(N, 256, 6, 6)``; fc layers return ``(N, C)``. The feature runner computes every
requested layer of the family in **one** forward pass (:func:`activations`) and stores them
as float16 by default: ReLU zeros and the halved width make a CONV5–FC7 sample about a
quarter of its float32 size (``benchmarks/run_all.py --only activations`` prints it).

References
----------
A. Dosovitskiy, T. Brox. Inverting Visual Representations with Convolutional Networks.
CVPR 2016; supplementary Table 1 (the Caffe reference network).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from pipeline.alexnet import network as alexnet
from pipeline.errors import ConfigError, WeightsError
from pipeline.features.base import Extractor, OnDevice

__all__ = ["EXTRACTORS", "AlexNetParams", "activations"]


@dataclass(frozen=True)
class AlexNetParams:
    """The ``extract.alexnet`` section: which network makes the activations.

    Attributes
    ----------
    arch : str
        ``caffenet`` (the paper's network, docs/method.md §3) or ``torchvision`` (a different
        network,
        64/192/384/256/256 channels, no LRN or groups: never used in place of caffenet).
    weights : str
        A ``.caffemodel``, ``.npz``, ``.pth`` / ``.pt`` file of that architecture, or
        ``random:SEED`` (the embedded default: nothing can be downloaded; every store,
        checkpoint and figure made from it says so).
    dtype : {"float16", "float32"}
        Stored precision. float16's relative error (~5e-4) is far below what decoders
        resolve; bf16 (~4e-3) was measured and not offered.
    layers : tuple of str
        The layers ``invert extract alexnet`` caches (training computes others online).
    """

    arch: str = "caffenet"
    weights: str = "random:0"
    dtype: Literal["float16", "float32"] = "float16"
    layers: tuple[str, ...] = alexnet.LAYERS

    #: ``layers`` says which stores to make, not what is in them: not part of a store's identity
    NOT_IN_PROVENANCE: ClassVar[tuple[str, ...]] = ("layers",)

    def __post_init__(self) -> None:
        alexnet.get_architecture(self.arch)  # ConfigError for an unknown name
        unknown = [layer for layer in self.layers if layer not in alexnet.LAYERS]
        if unknown:
            raise ConfigError(f"unknown AlexNet layer(s) {unknown}; layers: {alexnet.LAYERS}")
        if alexnet.is_random_weights(self.weights):
            alexnet.parse_random_seed(self.weights)


@functools.lru_cache(maxsize=4)
def _network(arch: str, weights: str, device: str) -> alexnet.AlexNetBase:
    """The built network, memoised per process (building reads a weights file)."""
    return alexnet.build(arch, weights=weights).to(torch.device(device))


def activations(
    images: np.ndarray,
    params: AlexNetParams,
    layers: Sequence[str],
    device: str = "cpu",
    dtype: str = "float32",
) -> dict[str, np.ndarray]:
    """Activations of several AlexNet layers from one forward pass.

    Parameters
    ----------
    images : (N, H, W, 3) ndarray of uint8
        RGB, at least the crop size (the pipeline's are 256×256; the centre crop is taken).
    params : AlexNetParams
    layers : sequence of str
        Names among ``conv1 … fc8``.
    device : str
        Where the forward runs.
    dtype : {"float32", "float16"}
        Returned precision; the cast happens on ``device`` (10x faster than numpy's on the
        CPU, and half the bytes to copy back from a GPU).

    Returns
    -------
    dict of str to ndarray of ``dtype``
        ``(N, C, h, w)`` for conv layers, ``(N, C)`` for fc layers.
    """
    out_dtype = {"float32": torch.float32, "float16": torch.float16}[dtype]
    net = _network(params.arch, params.weights, device)
    with torch.inference_mode():
        x = alexnet.preprocess(images, params.arch).to(device)  # (N, 3, S, S)
        out = net.forward_layers(x, list(layers))
    return {name: out[name].to(out_dtype).cpu().numpy() for name in layers}


def _describe(params: AlexNetParams) -> dict[str, Any]:
    try:
        weights = alexnet.describe_weights(params.weights)
    except WeightsError:
        raise
    return {"weights": weights, "random_weights": alexnet.is_random_weights(params.weights)}


def _on_device(layer: str) -> Any:
    def make(params: AlexNetParams, device: torch.device, pretrained: bool = True) -> OnDevice:
        """The network on ``device`` and layer ``layer`` of (B, 3, 256, 256) uint8 batches."""
        weights = params.weights if pretrained else "random:0"
        net = alexnet.build(params.arch, weights=weights).to(device)

        def encode(x: torch.Tensor) -> torch.Tensor:
            images = x.permute(0, 2, 3, 1).float() / 255.0  # (B, H, W, 3) in [0, 1]
            # the network's crop -> (B, C, h, w) or (B, C)
            return net.forward_layers(alexnet.preprocess(images, params.arch), [layer])[layer]

        return OnDevice(encode, net)

    return make


def _extractor(layer: str) -> Extractor:
    conv = layer.startswith("conv")
    return Extractor(
        name=layer,
        version=1,
        params_type=AlexNetParams,
        compute=lambda images, p: activations(images, p, [layer])[layer],
        output_shape=lambda p, h, w: alexnet.output_shape(p.arch, layer),
        dims=("channel", "y", "x") if conv else ("channel",),
        description=f"AlexNet {layer.upper()} activations (after all of the group's steps)",
        family="alexnet",
        compute_many=lambda images, p, names, device: activations(
            images, p, names, device, dtype=p.dtype
        ),
        store_dtype=lambda p: p.dtype,
        describe=_describe,
        # CONV1-CONV4 (88% of the bytes): lz4, 3x faster to encode than zstd (the
        # extraction's main cost beside the forward); CONV5-FC8: zstd, <= 35% of float32
        codec="lz4-shuffle" if layer in ("conv1", "conv2", "conv3", "conv4") else "zstd-fast",
        on_device=_on_device(layer),
    )


#: conv1 … fc8, registered in :mod:`pipeline.features`.
EXTRACTORS: dict[str, Extractor] = {layer: _extractor(layer) for layer in alexnet.LAYERS}
