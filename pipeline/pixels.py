"""The pixel convention of reconstruction targets, shared by training, evaluation and [1].

A decoder is trained to output ``x / 255 - 0.5`` (zero-centred, so the last, linear layer
starts near the mean image) at its output size: the 256×256 image for the shallow features,
the 227×227 centre crop AlexNet saw, resized with antialiasing, for AlexNet layers
(docs/method.md §4).
Evaluation and the optimisation baseline [1] score reconstructions against the same targets.

References
----------
A. Dosovitskiy, T. Brox. Inverting Visual Representations with Convolutional Networks.
CVPR 2016, Sec. 3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline import decoders

__all__ = ["ALEXNET_CROP", "PIXEL_OFFSET", "SHALLOW_TARGETS", "target_images"]

#: Pixel targets are x / 255 - 0.5.
PIXEL_OFFSET = 0.5
#: AlexNet targets: the centre crop the network saw (docs/method.md §1).
ALEXNET_CROP = 227
#: Targets reconstructed at the full image size (no crop).
SHALLOW_TARGETS = ("hog", "sift", "lbp")


def target_images(x: torch.Tensor, target: str) -> torch.Tensor:
    """The reconstruction target of a batch of images (docs/method.md §4).

    Parameters
    ----------
    x : (B, 3, 256, 256) Tensor of uint8 (or floats in 0..255)
        Images of the image store.
    target : str
        A decoder target (:data:`pipeline.decoders.TARGETS`).

    Returns
    -------
    (B, 3, S, S) Tensor of float32
        ``x / 255 - 0.5`` at the decoder's output size S: the image itself for the shallow
        features (256); for AlexNet layers the 227 centre crop the network saw, resized with
        antialiasing to 216 / 208 / 192 / 128.
    """
    y = x.float() / 255.0 - PIXEL_OFFSET  # (B, 3, H, W) in [-0.5, 0.5]
    size = decoders.output_size(target)
    if target in SHALLOW_TARGETS:
        if y.shape[-1] == size:
            return y
        return F.interpolate(
            y, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    top = (y.shape[-2] - ALEXNET_CROP) // 2
    left = (y.shape[-1] - ALEXNET_CROP) // 2
    crop = y[..., top : top + ALEXNET_CROP, left : left + ALEXNET_CROP]  # (B, 3, 227, 227)
    return F.interpolate(  # (B, 3, S, S)
        crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
