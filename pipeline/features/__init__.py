"""The feature extractors of the paper, behind one registry (docs/method.md §2–3).

>>> from pipeline.features import extract
>>> feats = extract("hog", images)            # (N, 256, 256, 3) uint8 -> (N, 31, 32, 32)
>>> feats = extract("hog", images, cell_size=4)

Each extractor lives in its own package (``hog/``, ``lbp/``, ``sift/``) and exposes an
``EXTRACTOR`` record (:class:`~pipeline.features.base.Extractor`); this module maps names to
those modules and imports one only when it is asked for.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np

from pipeline.config import parse
from pipeline.errors import ExtractionError, UnknownFeatureError
from pipeline.features.base import Extractor

__all__ = [
    "FAMILIES",
    "Extractor",
    "compute",
    "extract",
    "get",
    "module_of",
    "names",
    "parse_params",
]

#: name -> module defining ``EXTRACTOR``; the one place a new feature is registered.
_REGISTRY: dict[str, str] = {
    "hog": "pipeline.features.hog:EXTRACTOR",
    "lbp": "pipeline.features.lbp:EXTRACTOR",
    "sift": "pipeline.features.sift:EXTRACTOR",
    **{
        layer: f"pipeline.alexnet.activations:EXTRACTORS.{layer}"
        for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
    },
}
#: family name -> its members, in order; ``invert extract alexnet`` means the cached layers.
FAMILIES: dict[str, tuple[str, ...]] = {
    "alexnet": ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"),
}


def names() -> tuple[str, ...]:
    """The registered feature names."""
    return tuple(_REGISTRY)


def _unknown(name: str) -> UnknownFeatureError:
    """The error for an unregistered ``name``: what is registered, and the families."""
    return UnknownFeatureError(
        f"unknown feature {name!r}; registered features: {', '.join(names())}, and the "
        f"families {', '.join(FAMILIES)} (all their cached layers; invert extract only)"
    )


def module_of(name: str) -> str:
    """The module that defines extractor ``name`` (imported only when it is asked for).

    ``dvc.yaml`` lists it among the deps of the stages that run ``name``
    (``tests/test_deps.py``).
    """
    if name not in _REGISTRY:
        raise _unknown(name)
    return _REGISTRY[name].partition(":")[0]


def get(name: str) -> Extractor:
    """The :class:`Extractor` registered as ``name``.

    Raises
    ------
    UnknownFeatureError
        ``name`` is not registered; the message lists the names that are.
    """
    if name not in _REGISTRY:
        raise _unknown(name)
    module_name, _, attr = _REGISTRY[name].partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    assert isinstance(obj, Extractor) and obj.name == name, _REGISTRY[name]
    return obj


def parse_params(name: str, params: dict[str, Any] | None = None) -> Any:
    """Validate keyword parameters of extractor ``name`` into its frozen params dataclass."""
    ext = get(name)
    return parse(ext.params_type, params or {}, section=f"extract.{ext.section}")


def extract(
    name: str, images: np.ndarray, *, device: str = "cpu", workers: int = 0, **params: Any
) -> np.ndarray:
    """Compute feature ``name`` for a batch of images.

    Parameters
    ----------
    name : str
        A registered feature (:func:`names`).
    images : (N, H, W, 3) ndarray of uint8
        RGB images.
    device : str
        Where networks run (``"cpu"``, ``"cuda"``); shallow features ignore it.
    workers : int
        Shallow features (HOG, LBP, SIFT): threads computing parts of the batch at once,
        each with one torch and one OpenCV thread, as the ``invert extract`` runner does;
        0 (the default) means one per core, 1 one call on the whole batch with torch's and
        OpenCV's thread settings left alone. Networks (AlexNet layers) ignore it and use
        the device's own parallelism.
    **params
        The extractor's parameters (paper defaults when omitted); unknown keys are an error.
        AlexNet layers take ``arch``, ``weights`` (a file or ``random:SEED``) and ``dtype``.

    Returns
    -------
    (N, *shape) ndarray of float32
        ``shape`` is ``get(name).output_shape(params, H, W)``, e.g. (31, 32, 32) for HOG of
        256×256 images, (256, 6, 6) for CONV5, (4096,) for FC6.
    """
    return compute(name, images, parse_params(name, params), device=device, workers=workers)


def compute(
    name: str, images: np.ndarray, params: Any, *, device: str = "cpu", workers: int = 0
) -> np.ndarray:
    """:func:`extract` with the extractor's parameters already parsed (a params dataclass).

    Parameters
    ----------
    name : str
    images : (N, H, W, 3) ndarray of uint8
    params : params dataclass
        :func:`parse_params` of ``name``, e.g. the ``extract.hog`` section a decoder was
        trained with.
    device, workers
        As :func:`extract`.

    Returns
    -------
    (N, *shape) ndarray of float32
    """
    extractor = get(name)
    p = params
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ExtractionError(
            f"extract({name!r}) takes (N, H, W, 3) RGB images, got shape {images.shape}; "
            "stack single images with images[None] and grey ones with np.repeat(..., 3, -1)"
        )
    if workers < 0:
        raise ExtractionError(f"extract: workers must be >= 0 (0: one per core), got {workers}")
    if extractor.compute_many is not None:
        out = extractor.compute_many(images, p, [name], device)[name]
    else:
        out = _on_every_core(extractor, images, p, workers or os.cpu_count() or 1)
    expected = (images.shape[0], *extractor.output_shape(p, images.shape[1], images.shape[2]))
    assert out.shape == expected, (out.shape, expected)
    return out.astype(np.float32, copy=False)


def _on_every_core(
    extractor: Extractor, images: np.ndarray, params: Any, workers: int
) -> np.ndarray:
    """``extractor.compute(images, params)`` with ``workers`` parts of the batch at once.

    Parameters
    ----------
    extractor : Extractor
        A shallow feature (no ``compute_many``).
    images : (N, H, W, 3) ndarray of uint8
    params : dataclass
        The extractor's parameters.
    workers : int
        Threads, each computing one part at a time with one torch and one OpenCV thread
        (the runner's scheme: ``pipeline.runner.limit_threads``); parts of at most 16
        images are handed out as threads free up, so that images of unequal cost (SIFT's
        keypoint counts) balance. 1: one ``compute`` call on the whole batch. Torch's
        and OpenCV's thread settings are process-wide: they are set for the call and
        restored after it.

    Returns
    -------
    (N, *shape) ndarray
        Equal, bit for bit, to one ``compute`` call on the whole batch: every extractor
        computes each image on its own (``tests/test_extract.py``).
    """
    n = len(images)
    part = max(1, min(16, -(-n // (4 * workers))))
    bounds = [(lo, min(lo + part, n)) for lo in range(0, n, part)]
    if workers == 1 or len(bounds) == 1:
        return extractor.compute(images, params)
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    import torch

    shape = extractor.output_shape(params, images.shape[1], images.shape[2])
    out = np.empty((n, *shape), np.float32)

    def run(lo_hi: tuple[int, int]) -> None:
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        out[lo_hi[0] : lo_hi[1]] = extractor.compute(images[lo_hi[0] : lo_hi[1]], params)

    old = torch.get_num_threads(), cv2.getNumThreads()
    try:
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        with ThreadPoolExecutor(min(workers, len(bounds))) as pool:
            list(pool.map(run, bounds))
    finally:
        torch.set_num_threads(old[0])
        cv2.setNumThreads(old[1])
    return out
