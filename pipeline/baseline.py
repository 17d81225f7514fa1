"""The optimisation-based baseline of Mahendran & Vedaldi [1] on the test split (SPEC §6).

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

from pipeline import alexnet
from pipeline.errors import ConfigError
from pipeline.evaluation import error_metrics, normalised_error, write_reconstructions
from pipeline.inversion import InversionParams, invert_target
from pipeline.loader import usable_indices
from pipeline.store import open_store
from pipeline.training import PIXEL_OFFSET, resolve_device, target_images

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
    arch, weights : str
        The AlexNet whose layers are inverted (must be the one the decoders saw).
    device : str
    inversion : InversionParams
        [1]'s objective and optimiser.
    """

    images: int = 8
    batch_size: int = 8
    arch: str = "caffenet"
    weights: str = "random:0"
    device: str = "auto"
    inversion: InversionParams = field(default_factory=InversionParams)

    def __post_init__(self) -> None:
        if self.images < 2 or self.batch_size < 1:
            raise ConfigError("baseline: images must be >= 2 and batch_size >= 1")


def run_baseline(
    target: str,
    *,
    images_path: str | Path,
    out: str | Path,
    metrics_path: str | Path | None,
    params: BaselineParams,
) -> dict[str, Any]:
    """Invert the first test images of ``target`` by optimisation; store them and the errors."""
    if target in ("lbp", "sift"):
        raise ConfigError(f"{target} is not differentiable: [1] has no baseline for it (SPEC §6)")
    device = resolve_device(params.device)
    store = open_store(images_path, kind="images")
    idx = usable_indices(images_path, "test")
    arr = store.array("images")
    everything = torch.from_numpy(np.stack([arr[int(k) : int(k) + 1][0] for k in idx]))
    ref = (target_images(everything.permute(0, 3, 1, 2), target) + PIXEL_OFFSET).clamp(0, 1)
    ref_np = ref.permute(0, 2, 3, 1).numpy()  # all test targets: the error's denominator
    chosen = idx[: params.images]
    rec = invert_target(
        target,
        everything[: len(chosen)].numpy(),
        params=params.inversion,
        arch=params.arch,
        weights=params.weights,
        batch_size=params.batch_size,
        device=device,
    )
    rec_np = np.clip(np.transpose(rec, (0, 2, 3, 1)) + PIXEL_OFFSET, 0, 1)
    tgt_np = ref_np[: len(chosen)]
    metrics = {"target": target, "mode": "optimisation [1]", **error_metrics(tgt_np, rec_np)}
    # the decoders' denominator: the mean distance between all test images
    metrics["normalised_error"] = normalised_error(tgt_np, rec_np, reference=ref_np)
    metrics["normalised_error_subset"] = normalised_error(tgt_np, rec_np)
    metrics["random_weights"] = target != "hog" and alexnet.is_random_weights(params.weights)
    provenance = {
        "kind": "reconstructions",
        "stage": "baseline",
        "producer": f"mv_{target}",
        "params": {
            "images": params.images,
            "arch": params.arch,
            "weights": params.weights,
            "inversion": dict(params.inversion.__dict__),
        },
        "input_fingerprint": store.fingerprint,
        "dims": ["sample", "y", "x", "rgb"],
    }
    write_reconstructions(
        out,
        provenance,
        reconstructions=rec_np,
        targets=tgt_np,
        index=chosen,
        metrics=metrics,
        metrics_path=metrics_path,
    )
    log.info("[1] on %s: normalised error %.3f", target, metrics["normalised_error"])
    return metrics
