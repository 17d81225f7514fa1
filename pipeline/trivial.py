"""The trivial predictors a decoder must beat to show it learnt anything.

- **Mean image**: predict, for every test image, the mean of the training split's targets.
  It knows nothing of the features: a decoder no better than it has not learnt to read them.
- **Nearest neighbour**: predict the target of the training image whose features are nearest
  (Euclidean) to the test image's, in the same feature space. A decoder no better than it
  has memorised the training set rather than learnt to invert.

Both are scored with the paper's normalised error on the same test images and the same
denominator as the decoder (:func:`pipeline.evaluation.normalised_error`). They use a seeded
random subset of the training split (``evaluate.baseline_images``), so their cost stays
bounded at ImageNet scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from pipeline.errors import StoreError
from pipeline.pixels import PIXEL_OFFSET, target_images

__all__ = ["nearest_neighbour", "training_subset", "training_targets"]


def training_subset(train_indices: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` training-sample indices drawn without replacement, in store order.

    Parameters
    ----------
    train_indices : (M,) ndarray of int
        The usable training samples.
    count : int
        How many to keep (all of them when ``count >= M``).
    seed : int

    Returns
    -------
    (min(count, M),) ndarray of int64, sorted
    """
    if count >= len(train_indices):
        return np.asarray(train_indices, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(train_indices, size=count, replace=False)).astype(np.int64)


def training_targets(
    images: Iterator[torch.Tensor], target: str, device: torch.device
) -> Iterator[np.ndarray]:
    """Reconstruction targets in [0, 1] of batches of uint8 images.

    Parameters
    ----------
    images : iterator of (B, 3, 256, 256) Tensor of uint8
    target : str
    device : torch.device

    Yields
    ------
    (B, S, S, 3) ndarray of float32
    """
    for x in images:
        t = (target_images(x.to(device), target) + PIXEL_OFFSET).clamp(0, 1)
        yield t.permute(0, 2, 3, 1).cpu().numpy()


def nearest_neighbour(
    test: np.ndarray, train_batches: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
) -> np.ndarray:
    """For each test feature vector, the target of the nearest training feature vector.

    Parameters
    ----------
    test : (N, D) ndarray of float
        Test features, flattened.
    train_batches : callable
        Returns an iterator of ``(features (B, D), targets (B, S, S, 3))`` over the training
        subset; read once, so memory holds one batch and the N current best targets.

    Returns
    -------
    (N, S, S, 3) ndarray of float32
        The nearest training image's target per test image (ties: the first in store order).
    """
    test = np.asarray(test, dtype=np.float64)
    best = np.full(len(test), np.inf)
    out: np.ndarray | None = None
    sq_test = (test**2).sum(axis=1)
    for feats, targets in train_batches():
        f = np.asarray(feats, dtype=np.float64).reshape(len(feats), -1)
        d2 = sq_test[:, None] + (f**2).sum(axis=1)[None, :] - 2.0 * test @ f.T  # (N, B)
        k = d2.argmin(axis=1)
        closer = d2[np.arange(len(test)), k] < best
        if out is None:
            out = np.zeros((len(test), *targets.shape[1:]), np.float32)
        out[closer] = targets[k[closer]]
        best[closer] = d2[np.arange(len(test)), k][closer]
    if out is None:
        raise StoreError("no usable training sample to take a nearest neighbour from")
    return out
