"""The feature extractors of the paper, behind one registry (SPEC §2–3).

>>> from pipeline.features import extract
>>> feats = extract("hog", images)            # (N, 256, 256, 3) uint8 -> (N, 31, 32, 32)
>>> feats = extract("hog", images, cell_size=4)

Each extractor lives in its own module (``hog.py``, ``lbp.py``, ``sift.py``) and exposes an
``EXTRACTOR`` record (:class:`~pipeline.features.base.Extractor`); this module maps names to
those modules and imports one only when it is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from pipeline.config import parse
from pipeline.errors import ExtractionError, UnknownFeatureError
from pipeline.features.base import Extractor

__all__ = ["Extractor", "extract", "get", "names", "parse_params"]

#: name -> module defining ``EXTRACTOR``; the one place a new feature is registered.
_REGISTRY: dict[str, str] = {
    "hog": "pipeline.features.hog",
    "lbp": "pipeline.features.lbp",
    "sift": "pipeline.features.sift",
}


def names() -> tuple[str, ...]:
    """The registered feature names."""
    return tuple(_REGISTRY)


def get(name: str) -> Extractor:
    """The :class:`Extractor` registered as ``name``.

    Raises
    ------
    UnknownFeatureError
        ``name`` is not registered; the message lists the names that are.
    """
    if name not in _REGISTRY:
        raise UnknownFeatureError(
            f"unknown feature {name!r}; registered features: {', '.join(names())}"
        )
    module = importlib.import_module(_REGISTRY[name])
    extractor = module.EXTRACTOR
    assert isinstance(extractor, Extractor) and extractor.name == name, _REGISTRY[name]
    return extractor


def parse_params(name: str, params: dict[str, Any] | None = None) -> Any:
    """Validate keyword parameters of extractor ``name`` into its frozen params dataclass."""
    return parse(get(name).params_type, params or {}, section=f"extract.{name}")


def extract(name: str, images: np.ndarray, **params: Any) -> np.ndarray:
    """Compute feature ``name`` for a batch of images.

    Parameters
    ----------
    name : str
        A registered feature (:func:`names`).
    images : (N, H, W, 3) ndarray of uint8
        RGB images.
    **params
        The extractor's parameters (paper defaults when omitted); unknown keys are an error.

    Returns
    -------
    (N, *shape) ndarray of float32
        ``shape`` is ``get(name).output_shape(params, H, W)``, e.g. (31, 32, 32) for HOG of
        256×256 images.
    """
    extractor = get(name)
    p = parse_params(name, params)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ExtractionError(
            f"extract({name!r}) takes (N, H, W, 3) RGB images, got shape {images.shape}; "
            "stack single images with images[None] and grey ones with np.repeat(..., 3, -1)"
        )
    out = extractor.compute(images, p)
    expected = (images.shape[0], *extractor.output_shape(p, images.shape[1], images.shape[2]))
    assert out.shape == expected, (out.shape, expected)
    return out.astype(np.float32, copy=False)
