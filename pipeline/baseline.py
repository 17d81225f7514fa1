"""The optimisation-based baseline of Mahendran & Vedaldi [1] on the test split (docs/method.md §6).

Inverts the first ``images`` test images of the image store with :mod:`pipeline.inversion`
and writes a reconstruction store and metrics laid out like :func:`pipeline.evaluation.evaluate`'s,
so the error table and Fig. 5 put both methods side by side. The normalised error's
denominator is the mean distance between *all* test images (as for the decoders), so the
numbers are comparable although [1] runs on fewer images.

References
----------
A. Mahendran, A. Vedaldi. Understanding Deep Image Representations by Inverting Them.
CVPR 2015.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import features
from pipeline.devices import resolve_device
from pipeline.errors import ConfigError
from pipeline.evaluation import (
    error_interval,
    error_metrics,
    normalised_error,
    write_reconstructions,
)
from pipeline.features.hog import HogParams
from pipeline.inversion import InversionParams, invert_target
from pipeline.loader import usable_indices
from pipeline.pixels import PIXEL_OFFSET, target_images
from pipeline.provenance import identity_params
from pipeline.sharpness import sharpness_metrics
from pipeline.store import Store, open_store

__all__ = ["BaselineParams", "run_baseline"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaselineParams:
    """The ``baseline`` section of ``params.yaml``.

    Attributes
    ----------
    images : int
        Test images inverted (the optimisation costs seconds per image and layer).
    batch_size : int
        Images optimised at once.
    device : str
    inversion : InversionParams
        [1]'s objective and optimiser.
    """

    images: int = 8
    batch_size: int = 8
    device: str = "auto"
    inversion: InversionParams = field(default_factory=InversionParams)

    def __post_init__(self) -> None:
        if self.images < 2 or self.batch_size < 1:
            raise ConfigError("baseline: images must be >= 2 and batch_size >= 1")


def _representation(
    target: str, feature_params: Any | None
) -> tuple[Any, dict[str, Any], HogParams | None]:
    """Refuse what [1] cannot invert; the parsed params and :func:`invert_target`'s arguments.

    Returns
    -------
    feature_params : params dataclass
        ``feature_params`` parsed (paper defaults when ``None``).
    network : dict
        ``arch`` and ``weights`` for an AlexNet layer, empty for HOG.
    hog_params : HogParams or None
        The HOG parameters for ``hog``, else ``None``.
    """
    if target in ("lbp", "sift"):
        raise ConfigError(
            f"{target} is not differentiable: [1] has no baseline for it (docs/method.md §6)"
        )
    if feature_params is None or isinstance(feature_params, dict):
        feature_params = features.parse_params(target, dict(feature_params or {}))
    network = (
        {} if target == "hog" else {"arch": feature_params.arch, "weights": feature_params.weights}
    )
    hog_params = feature_params if target == "hog" else None
    return feature_params, network, hog_params


def _test_split(
    store: Store, images_path: str | Path, target: str
) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """Every test image of the store and its target.

    Returns
    -------
    index : (M,) ndarray
        The test samples' positions in the image store.
    images : (M, 256, 256, 3) Tensor of uint8
    targets : (M, S, S, 3) ndarray of float32
        In [0, 1], in ``target``'s convention: the error's denominator.
    """
    idx = usable_indices(images_path, "test")
    arr = store.array("images")
    everything = torch.from_numpy(np.stack([arr[int(k) : int(k) + 1][0] for k in idx]))
    ref = (target_images(everything.permute(0, 3, 1, 2), target) + PIXEL_OFFSET).clamp(0, 1)
    ref_np = ref.permute(0, 2, 3, 1).numpy()  # all test targets: the error's denominator
    return idx, everything, ref_np


def _scores(
    target: str, tgt_np: np.ndarray, rec_np: np.ndarray, ref_np: np.ndarray
) -> dict[str, Any]:
    """The errors of ``rec_np`` (N, S, S, 3) against ``tgt_np``, normalised over ``ref_np``."""
    metrics = {"target": target, "mode": "optimisation [1]", **error_metrics(tgt_np, rec_np)}
    # the decoders' denominator: the mean distance between all test images
    metrics["normalised_error"] = normalised_error(tgt_np, rec_np, reference=ref_np)
    low, high = error_interval(tgt_np, rec_np, reference=ref_np)
    metrics["interval_low"], metrics["interval_high"] = low, high
    metrics["normalised_error_subset"] = normalised_error(tgt_np, rec_np)
    return metrics


def _provenance(
    target: str,
    params: BaselineParams,
    feature_params: Any,
    described: dict[str, Any],
    images_fingerprint: str,
) -> dict[str, Any]:
    """The reconstruction store's provenance: [1]'s budget, the representation, the images."""
    return {
        "kind": "reconstructions",
        "stage": "baseline",
        "producer": f"mv_{target}",
        "params": {
            "images": params.images,
            "inversion": dict(params.inversion.__dict__),
        },
        "feature_params": identity_params(feature_params),
        "extractor_version": features.get(target).version,
        **described,
        "input_fingerprint": images_fingerprint,
        "dims": ["sample", "y", "x", "rgb"],
    }


def run_baseline(
    target: str,
    *,
    images_path: str | Path,
    out: str | Path,
    metrics_path: str | Path | None,
    params: BaselineParams,
    feature_params: Any | None = None,
) -> dict[str, Any]:
    """Invert the first test images of ``target`` by optimisation; store them and the errors.

    Parameters
    ----------
    target : str
        ``hog`` or an AlexNet layer.
    images_path : str or Path
        The image store; its first ``params.images`` test images are inverted.
    out : str or Path
        The reconstruction store to write.
    metrics_path : str or Path or None
        The metrics JSON.
    params : BaselineParams
        [1]'s budget and optimiser.
    feature_params : params dataclass or mapping, optional
        The representation inverted: ``extract.hog`` (cell size, orientations) or
        ``extract.alexnet`` (arch, weights) — the ones the decoders saw. Paper defaults
        when omitted.

    Returns
    -------
    dict
        The metrics.
    """
    feature_params, network, hog_params = _representation(target, feature_params)
    device = resolve_device(params.device)
    store = open_store(images_path, kind="images")
    idx, everything, ref_np = _test_split(store, images_path, target)
    chosen = idx[: params.images]
    rec = invert_target(
        target,
        everything[: len(chosen)].numpy(),
        params=params.inversion,
        **network,
        hog_params=hog_params,
        batch_size=params.batch_size,
        device=device,
    )
    rec_np = np.clip(np.transpose(rec, (0, 2, 3, 1)) + PIXEL_OFFSET, 0, 1)
    tgt_np = ref_np[: len(chosen)]
    metrics = _scores(target, tgt_np, rec_np, ref_np)
    described = features.get(target).describe(feature_params)
    metrics["random_weights"] = bool(described.get("random_weights"))
    metrics["sharpness"] = sharpness_metrics(tgt_np, {"reconstructions": rec_np})
    write_reconstructions(
        out,
        _provenance(target, params, feature_params, described, store.fingerprint),
        reconstructions=rec_np,
        targets=tgt_np,
        index=chosen,
        metrics=metrics,
        metrics_path=metrics_path,
    )
    log.info("[1] on %s: normalised error %.3f", target, metrics["normalised_error"])
    return metrics
