"""The paper's feature-space experiments (docs/method.md §6, Figs. 3, 4, 6–10).

Feature vectors only.

Each function builds the feature vectors an experiment decodes; decoding them is
:func:`pipeline.evaluation.decode_features`.

References
----------
A. Dosovitskiy, T. Brox. Inverting Visual Representations with Convolutional Networks.
CVPR 2016, Sec. 5 ("dark knowledge", single neurons, interpolation, random features).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "dark_knowledge",
    "histogram_samples",
    "interpolate",
    "single_neurons",
    "truncated_gaussian_samples",
]


def dark_knowledge(fc8: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FC8 vectors as they are, with only the top ``k`` kept, and with the top ``k`` zeroed.

    Parameters
    ----------
    fc8 : (N, 1000) ndarray
    k : int
        The paper uses 5.

    Returns
    -------
    all_, top, rest : (N, 1000) ndarray of float32
        ``top`` keeps the ``k`` largest activations of each row (others 0); ``rest`` is the
        row with those ``k`` set to 0 — the "dark knowledge" that still carries the image.
    """
    fc8 = np.asarray(fc8, np.float32)
    order = np.argsort(-fc8, axis=1)[:, :k]  # (N, k) the largest
    top = np.zeros_like(fc8)
    rows = np.arange(len(fc8))[:, None]
    top[rows, order] = fc8[rows, order]
    rest = fc8.copy()
    rest[rows, order] = 0.0
    return fc8, top, rest


def single_neurons(dim: int, neurons: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Feature vectors with one active neuron each (docs/method.md §6, Fig. 4).

    Parameters
    ----------
    dim : int
        Layer width (4096 for FC6/FC7, 1000 for FC8).
    neurons : (K,) ndarray of int
    values : (K,) ndarray
        The activation of each chosen neuron (we use its largest value over the training
        features, so the decoder sees a magnitude it was trained on).

    Returns
    -------
    (K, dim) ndarray of float32
    """
    out = np.zeros((len(neurons), dim), np.float32)
    out[np.arange(len(neurons)), neurons] = values
    return out


def interpolate(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """Linear interpolation from feature vector ``a`` to ``b`` (Figs. 6–7).

    Parameters
    ----------
    a, b : (...) ndarray
        Features of two images, same shape.
    steps : int
        Number of vectors, ends included.

    Returns
    -------
    (steps, ...) ndarray of float32
    """
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32).reshape(-1, *([1] * np.ndim(a)))
    return ((1 - t) * np.asarray(a, np.float32) + t * np.asarray(b, np.float32)).astype(np.float32)


def histogram_samples(train: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random feature vectors, each dimension drawn independently from its empirical histogram.

    Parameters
    ----------
    train : (M, ...) ndarray
        Training features (the empirical distribution of every dimension).
    n : int
    rng : numpy Generator

    Returns
    -------
    (n, ...) ndarray of float32

    Notes
    -----
    Drawing a dimension from its empirical histogram with bins as fine as the data is the
    same as copying that dimension from a random training vector, chosen anew for every
    dimension; that is what is done (no binning artefacts).
    """
    train = np.asarray(train, np.float32)
    flat = train.reshape(len(train), -1)
    pick = rng.integers(0, len(flat), size=(n, flat.shape[1]))
    return np.take_along_axis(flat, pick, axis=0).reshape(n, *train.shape[1:])


def truncated_gaussian_samples(train: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random feature vectors from per-dimension Gaussians fitted to training features,
    negative values set to 0 (ReLU outputs are non-negative).

    Parameters
    ----------
    train : (M, ...) ndarray
    n : int
    rng : numpy Generator

    Returns
    -------
    (n, ...) ndarray of float32
    """
    train = np.asarray(train, np.float32)
    mu, sd = train.mean(axis=0), train.std(axis=0)
    return np.maximum(rng.standard_normal((n, *train.shape[1:])) * sd + mu, 0.0).astype(np.float32)
