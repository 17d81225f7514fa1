"""What a feature store is made of, and opening one only if it was made as expected.

Every feature store records its provenance (:func:`feature_provenance`): the extractor, its
version, the parameters that decide the numbers, the weights (AlexNet) and the fingerprint of
the image store it was computed from. Consumers (training, evaluation, figures) open it with
:func:`open_feature_store`, which refuses a store made by another extractor version, other
parameters or from other images. This module is small on purpose: training imports it
without importing the extraction runner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import features
from pipeline.config import as_dict
from pipeline.store import Store, open_store

__all__ = ["feature_provenance", "identity_params", "open_feature_store"]


def identity_params(params: Any) -> dict[str, Any]:
    """The parameters that decide the numbers (``NOT_IN_PROVENANCE`` fields left out)."""
    skip = getattr(params, "NOT_IN_PROVENANCE", ())
    return {k: v for k, v in as_dict(params).items() if k not in skip}


def feature_provenance(name: str, params: Any, images: Store) -> dict[str, Any]:
    """What makes feature store ``name``: extractor, its version and params, the input."""
    extractor = features.get(name)
    return {
        "kind": "features",
        "stage": "extract",
        "producer": name,
        "extractor_version": extractor.version,
        "params": identity_params(params),
        **extractor.describe(params),
        "input_fingerprint": images.fingerprint,
        "image_size": list(images.array("images").shape[1:3]),
        "dims": ["sample", *extractor.dims],
    }


def open_feature_store(
    path: str | Path, name: str, params: Any | None = None, *, images: Store | None = None
) -> Store:
    """Open feature store ``name`` and refuse one made differently.

    Parameters
    ----------
    path : str or Path
    name : str
        The feature the store must hold.
    params : params dataclass, optional
        The parameters it must have been made with (e.g. from ``params.yaml``).
    images : Store, optional
        The image store it must have been made from.

    Raises
    ------
    IncompatibleStoreError
        Another feature, other parameters, another extractor version or another input.
    """
    expect: dict[str, Any] = {
        "producer": name,
        "extractor_version": features.get(name).version,
    }
    if params is not None:
        expect["params"] = identity_params(params)
    if images is not None:
        expect["input_fingerprint"] = images.fingerprint
    return open_store(path, kind="features", expect=expect)
