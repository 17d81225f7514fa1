"""Reconstruct the test split with a trained decoder and measure the errors (docs/method.md §6).

The paper's figure of merit is the **normalised reconstruction error**: the mean over test
images of ``||x - x̂||₂`` divided by the mean ``||x_i - x_j||₂`` over pairs of distinct test
images (so 1.0 is as far as a random other test image). SSIM and PSNR are reported beside it.
Pixels are compared in [0, 1] at the decoder's output size (256 for HOG/SIFT/LBP, the 227
centre crop resized to 216/208/192/128 for AlexNet layers; see
:func:`pipeline.pixels.target_images`).

Reconstructions are written to a store (kind ``reconstructions``) so that figures and the
report read them instead of recomputing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import features, trivial
from pipeline.checkpoints import load_decoder, read_model_file
from pipeline.devices import resolve_device
from pipeline.errors import CheckpointError, ConfigError, IncompatibleStoreError
from pipeline.loader import usable_indices
from pipeline.pixels import PIXEL_OFFSET, target_images
from pipeline.provenance import identity_params
from pipeline.sharpness import sharpness_metrics
from pipeline.store import (
    ArraySpec,
    StoreWriter,
    content_digest,
    identity_of,
    open_store,
    write_shard,
)

__all__ = [
    "PAPER_ERRORS",
    "Decoded",
    "EvalParams",
    "Photos",
    "decode_features",
    "error_metrics",
    "evaluate",
    "load_inverter",
    "normalised_error",
    "score_photos",
    "test_batches",
    "write_reconstructions",
]

log = logging.getLogger(__name__)

#: Normalised errors the paper reports (docs/method.md §6; "~" values recollected, not read).
PAPER_ERRORS: dict[str, float] = {"hog": 0.24, "sift": 0.28, "lbp": 0.38}
#: HOG inversions by other methods, as the paper reports them.
PAPER_BASELINES: dict[str, dict[str, float]] = {"hog": {"HOGgles": 0.61, "M&V [1]": 0.63}}


@dataclass(frozen=True)
class EvalParams:
    """The ``evaluate`` section of ``params.yaml``.

    Attributes
    ----------
    batch_size : int
        Test images decoded at once.
    max_images : int or None
        Evaluate only the first test images (quick runs); ``None``: the whole test split.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    baseline_images : int
        Training images (a seeded random subset of the training split) behind the trivial
        baselines scored beside the decoder: their mean image, and the nearest neighbour in
        feature space (:mod:`pipeline.trivial`).
    photo_crops : int
        ``invert score``: random crops per photograph after its centre square.
    """

    batch_size: int = 16
    max_images: int | None = None
    device: str = "auto"
    baseline_images: int = 512
    photo_crops: int = 11

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.baseline_images < 1:
            raise ConfigError("evaluate: batch_size and baseline_images must be >= 1")
        if self.photo_crops < 0:
            raise ConfigError(f"evaluate: photo_crops must be >= 0, got {self.photo_crops}")


def normalised_error(
    x: np.ndarray, x_hat: np.ndarray, reference: np.ndarray | None = None
) -> float:
    """The paper's normalised reconstruction error.

    Parameters
    ----------
    x, x_hat : (N, ...) ndarray
        Originals and reconstructions, same scale.
    reference : (M, ...) ndarray, optional
        The images whose mean pairwise distance is the denominator (default ``x``; the
        optimisation baseline inverts a subset of the test split but divides by the whole
        split's distance, like the decoders).

    Returns
    -------
    float
        ``mean_i ||x_i - x̂_i|| / mean_{i != j} ||r_i - r_j||``.
    """
    x = x.reshape(len(x), -1).astype(np.float64)
    x_hat = x_hat.reshape(len(x_hat), -1).astype(np.float64)
    r = x if reference is None else reference.reshape(len(reference), -1).astype(np.float64)
    if len(r) < 2:
        raise ConfigError(
            "the normalised error needs at least two reference images; give the test split "
            "more images (prepare.test_samples or prepare.test_fraction)"
        )
    num = np.linalg.norm(x - x_hat, axis=1).mean()
    sq = (r**2).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * r @ r.T, 0.0)
    off = ~np.eye(len(r), dtype=bool)
    return float(num / np.sqrt(d2[off]).mean())


def write_reconstructions(
    out: str | Path,
    provenance: dict[str, Any],
    *,
    reconstructions: np.ndarray,
    targets: np.ndarray,
    index: np.ndarray,
    metrics: dict[str, Any],
    metrics_path: str | Path | None,
) -> Path:
    """Write a reconstruction store and the metrics JSON (``evaluate`` and ``baseline``).

    Parameters
    ----------
    out : str or Path
    provenance : dict
        What made the reconstructions (kind ``reconstructions``).
    reconstructions, targets : (M, S, S, 3) ndarray of float in [0, 1]
        Stored as uint8.
    index : (M,) ndarray of int
        The samples' positions in the image store.
    metrics : dict
        Kept in the store's attrs and written to ``metrics_path``.
    metrics_path : str or Path or None
    """
    rec8 = (reconstructions * 255.0 + 0.5).astype(np.uint8)
    tgt8 = (targets * 255.0 + 0.5).astype(np.uint8)
    n, s = rec8.shape[0], rec8.shape[1]
    dims = ("sample", "y", "x", "rgb")
    chunk = max((d for d in range(1, min(16, n) + 1) if n % d == 0), default=1)  # divides n
    arrays = [
        ArraySpec("reconstructions", (n, s, s, 3), "uint8", chunk, n, dims),
        ArraySpec("targets", (n, s, s, 3), "uint8", chunk, n, dims),
        ArraySpec("index", (n,), "int64", n, n, ("sample",)),
    ]
    with StoreWriter(out, provenance, arrays, overwrite=True) as writer:
        if not writer.up_to_date:
            data: dict[str, np.ndarray] = {
                "reconstructions": rec8,
                "targets": tgt8,
                "index": index.astype(np.int64),
            }
            write_shard(writer.scratch, 0, data, {})
            content = content_digest(rec8, tgt8)
            writer.finalize(
                fingerprint=identity_of({"content": content, "id": writer.identity}),
                attrs={"metrics": rounded(metrics)},
            )
    if metrics_path is not None:
        Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics_path).write_text(json.dumps(rounded(metrics), indent=2) + "\n")
    return Path(out)


#: decimals kept in a metrics file: what the numbers mean, not the float noise of a machine
DECIMALS = {
    "normalised_error": 4,
    "normalised_error_subset": 4,
    "interval_low": 4,
    "interval_high": 4,
    "mean_image": 4,
    "nearest_neighbour": 4,
    "ssim": 4,
    "psnr": 2,
    "ssim_gaussian": 4,
    "hf_ratio": 4,
}


def rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with the figures of :data:`DECIMALS` rounded, in nested dicts too (the
    ``sharpness`` block); others unchanged."""
    return {
        k: rounded(v)
        if isinstance(v, dict)
        else round(v, DECIMALS[k])
        if k in DECIMALS and isinstance(v, float)
        else v
        for k, v in metrics.items()
    }


def error_interval(
    x: np.ndarray,
    x_hat: np.ndarray,
    reference: np.ndarray | None = None,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% bootstrap interval of the normalised error over test images.

    Each resample draws the test images with replacement and recomputes both the mean
    reconstruction distance and the mean distance between distinct draws (the denominator).

    Parameters
    ----------
    x, x_hat : (N, ...) ndarray
        Targets and reconstructions (N >= 2).
    reference : (M, ...) ndarray, optional
        As :func:`normalised_error`: a fixed set whose mean pairwise distance is the
        denominator (then only the reconstructions are resampled).
    resamples : int
    seed : int

    Returns
    -------
    (float, float)
        The 2.5th and 97.5th percentiles.
    """
    a = x.reshape(len(x), -1).astype(np.float64)
    num = np.linalg.norm(a - x_hat.reshape(len(x_hat), -1).astype(np.float64), axis=1)  # (N,)
    sq = (a**2).sum(axis=1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * a @ a.T, 0.0))  # (N, N)
    rng = np.random.default_rng(seed)
    n = len(a)
    draws = rng.integers(0, n, size=(resamples, n))  # (R, N)
    if reference is not None:
        r = reference.reshape(len(reference), -1).astype(np.float64)
        rsq = (r**2).sum(axis=1)
        rd = np.sqrt(np.maximum(rsq[:, None] + rsq[None, :] - 2.0 * r @ r.T, 0.0))
        denominator = rd[~np.eye(len(r), dtype=bool)].mean()
        values = num[draws].mean(axis=1) / denominator
        low, high = np.percentile(values, [2.5, 97.5])
        return float(low), float(high)
    values = []
    for idx in draws:
        distinct = idx[:, None] != idx[None, :]  # pairs of two different images
        if distinct.any():  # a draw of one image repeated has no denominator: skipped
            values.append(num[idx].mean() / dist[np.ix_(idx, idx)][distinct].mean())
    if not values:
        point = normalised_error(x, x_hat)
        return point, point
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def error_metrics(x: np.ndarray, x_hat: np.ndarray) -> dict[str, Any]:
    """Normalised error with its 95% interval, mean SSIM and mean PSNR.

    Parameters
    ----------
    x, x_hat : (N, H, W, 3) ndarray of float in [0, 1]
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    ssim = [structural_similarity(a, b, channel_axis=-1, data_range=1.0) for a, b in zip(x, x_hat)]
    psnr = [peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(x, x_hat)]
    low, high = error_interval(x, x_hat)
    return {
        "normalised_error": normalised_error(x, x_hat),
        "interval_low": low,
        "interval_high": high,
        "ssim": float(np.mean(ssim)),
        "psnr": float(np.mean(psnr)),
        "images": len(x),
    }


@dataclass
class Decoded:
    """A trained inverter: decoder, and how to get its input features.

    ``encoder`` computes features on the device: the trained AlexNet of an autoencoder, or
    the extractor of a decoder trained on online features; ``None`` when the decoder was
    trained on a feature store (its features come from that store).
    """

    target: str
    decoder: torch.nn.Module
    encoder: Callable[[torch.Tensor], torch.Tensor] | None
    config: dict[str, Any]
    device: torch.device

    @property
    def mode(self) -> str:
        return str(self.config["params"]["mode"])

    @property
    def loss(self) -> str:
        """``pixel`` (the paper) or ``deepsim``: the decoder's training loss."""
        return str(self.config["params"].get("loss", "pixel"))

    @property
    def random_weights(self) -> bool:
        return bool(self.config.get("random_weights"))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features of (B, 3, 256, 256) uint8 images on the device, with ``encoder``."""
        assert self.encoder is not None
        return self.encoder(x.to(self.device))

    @torch.no_grad()
    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """(B, ...) features -> (B, 3, S, S) images in [0, 1]."""
        y = self.decoder(features.to(self.device).float())
        return (y + PIXEL_OFFSET).clamp(0.0, 1.0)


def load_inverter(model_path: str | Path, *, device: str = "auto") -> Decoded:
    """A trained decoder, with its encoder where it needs one, ready to decode.

    Autoencoders get their trained AlexNet back (the network is built without reading its
    initial weights, then loaded from ``model.pt``); decoders trained on online features get
    the extractor with the parameters they were trained with.
    """
    dev = resolve_device(device)
    decoder, config = load_decoder(model_path, device=dev)
    target = config["target"]
    encoder = None
    online = config["params"]["mode"] == "autoencoder" or config["params"].get("online")
    if online:
        extractor = features.get(target)
        assert extractor.on_device is not None, target
        params = features.parse_params(target, config.get("feature_params") or {})
        blob, _ = read_model_file(model_path)
        run = extractor.on_device(params, dev, pretrained="encoder" not in blob)
        if "encoder" in blob:
            if run.network is None:
                raise CheckpointError(f"{str(model_path)!r}: {target} has no network to load")
            run.network.load_state_dict(blob["encoder"])
        if run.network is not None:
            run.network.eval()
        encoder = run.encode
    return Decoded(target, decoder, encoder, config, dev)


def decode_features(inv: Decoded, features: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Decode a batch of feature vectors to (N, S, S, 3) uint8 images."""
    out = []
    for i in range(0, len(features), batch_size):
        y = inv.decode(torch.from_numpy(np.ascontiguousarray(features[i : i + batch_size])))
        out.append((y.permute(0, 2, 3, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, 1, 1, 3), np.uint8)


def _training_features(inv: Decoded, features_path: str | Path | None) -> Any:
    """The feature store ``inv`` was trained on, checked; ``None`` when it has an encoder.

    Raises
    ------
    IncompatibleStoreError
        No store given for a decoder trained on one, or another store than its training
        store (the fingerprints differ).
    """
    if inv.encoder is not None:
        return None
    if features_path is None:
        raise IncompatibleStoreError(
            f"{inv.target} was trained on a feature store: pass it with --features"
        )
    fs = open_store(features_path, kind="features")
    if fs.fingerprint != inv.config.get("features_fingerprint"):
        raise IncompatibleStoreError(
            f"feature store {str(features_path)!r} is not the one decoder {inv.target!r} was "
            "trained on (fingerprints differ); pass the store it was trained with"
        )
    return fs


def test_batches(
    inv: Decoded,
    images_path: str | Path,
    features_path: str | Path | None,
    *,
    batch_size: int,
    max_images: int | None = None,
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """(sample indices, features, uint8 images) of the test split, in store order.

    Features come from the trained encoder (autoencoder / online) or the feature store,
    which must be the one the decoder was trained on.
    """
    images = open_store(images_path, kind="images")
    idx = usable_indices(images_path, "test")
    fs = _training_features(inv, features_path)
    store_feats = None
    if fs is not None:
        store_feats = fs.array("features")
        idx = idx[fs.array("valid")[:][idx] > 0]
    if max_images is not None:
        idx = idx[:max_images]
    arr = images.array("images")
    for i in range(0, len(idx), batch_size):
        sel = idx[i : i + batch_size]
        x = torch.from_numpy(np.stack([arr[int(k) : int(k) + 1][0] for k in sel])).permute(
            0, 3, 1, 2
        )
        if store_feats is not None:
            f = torch.from_numpy(
                np.stack([store_feats[int(k) : int(k) + 1][0] for k in sel]).astype(np.float32)
            )
        else:  # autoencoder or online features
            f = inv.encode(x)
        yield sel, f, x


def trivial_predictions(
    inv: Decoded,
    images_path: str | Path,
    features_path: str | Path | None,
    queries: Sequence[np.ndarray],
    params: EvalParams,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The training-mean image and the nearest-neighbour targets (:mod:`pipeline.trivial`).

    The training subset is read once for every query set (the test split and, with
    ``--photos``, the new photographs).

    Parameters
    ----------
    inv : Decoded
    images_path, features_path : str or Path
        As :func:`evaluate`; features come from the store or the inverter's encoder, as the
        decoder's do.
    queries : sequence of (N_k, D) ndarray
        Each query set's features, flattened, in the order of its reconstructions.
    params : EvalParams

    Returns
    -------
    mean_image : (S, S, 3) ndarray of float32
    nearest : list of (N_k, S, S, 3) ndarray of float32
        Per query set, the nearest training image's target per image.
    """
    source = features_path if inv.encoder is None else images_path
    assert source is not None
    subset = trivial.training_subset(usable_indices(source, "train"), params.baseline_images, 0)
    images = open_store(images_path, kind="images").array("images")
    store_feats = None
    if inv.encoder is None:
        assert features_path is not None
        store_feats = open_store(features_path, kind="features").array("features")
    total: list[np.ndarray] = []

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, len(subset), params.batch_size):
            sel = subset[i : i + params.batch_size]
            x = torch.from_numpy(np.stack([images[int(k) : int(k) + 1][0] for k in sel]))
            x = x.permute(0, 3, 1, 2)  # (B, 3, 256, 256) uint8
            if store_feats is not None:
                f = np.stack([store_feats[int(k) : int(k) + 1][0] for k in sel])
            else:
                f = inv.encode(x).float().cpu().numpy()
            (t,) = trivial.training_targets(iter([x]), inv.target, inv.device)
            total.append(t.sum(axis=0, dtype=np.float64))
            yield f.reshape(len(sel), -1), t

    sizes = [len(q) for q in queries]
    nearest = trivial.nearest_neighbour(np.concatenate(queries), batches)
    mean_image = (np.sum(total, axis=0) / len(subset)).astype(np.float32)
    return mean_image, np.split(nearest, np.cumsum(sizes)[:-1])


def _reconstruct(
    inv: Decoded, feats: torch.Tensor, x: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one batch; (reconstructions, targets), each (B, S, S, 3) float32 in [0, 1].

    ``feats`` are (B, ...) decoder inputs, ``x`` the (B, 3, 256, 256) uint8 images.
    """
    y = inv.decode(feats)  # (B, 3, S, S)
    t = (target_images(x.to(inv.device), inv.target) + PIXEL_OFFSET).clamp(0, 1)
    return y.permute(0, 2, 3, 1).cpu().numpy(), t.permute(0, 2, 3, 1).cpu().numpy()


def _scores(
    inv: Decoded,
    tgt: np.ndarray,
    rec: np.ndarray,
    mean_image: np.ndarray,
    nearest: np.ndarray,
    params: EvalParams,
    **extra: Any,
) -> dict[str, Any]:
    """The metrics of one set of reconstructions beside the trivial baselines.

    ``tgt``, ``rec``, ``nearest``: (N, S, S, 3); ``mean_image``: (S, S, 3). ``extra`` keys
    come after ``baseline_images``; the ``sharpness`` block
    (:func:`pipeline.sharpness.sharpness_metrics` of the reconstructions, the mean image and
    the nearest neighbour) comes last.
    """
    mean = np.broadcast_to(mean_image, tgt.shape)
    predictions = {"reconstructions": rec, "mean_image": mean, "nearest_neighbour": nearest}
    return {
        "target": inv.target,
        "mode": inv.mode,
        **({"loss": inv.loss} if inv.loss != "pixel" else {}),  # pixel files as before
        **error_metrics(tgt, rec),
        "mean_image": normalised_error(tgt, mean),
        "nearest_neighbour": normalised_error(tgt, nearest),
        "baseline_images": params.baseline_images,
        **extra,
        "random_weights": inv.random_weights,
        "sharpness": sharpness_metrics(tgt, predictions),
    }


def _write_metrics(metrics: dict[str, Any], path: str | Path) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rounded(metrics), indent=2) + "\n")


@dataclass(frozen=True)
class Photos:
    """New photographs to score a decoder on (``invert score``, ``evaluate --photos``).

    Attributes
    ----------
    images : (N, 256, 256, 3) ndarray of uint8
        The photographs' crops (:func:`pipeline.images.photo_crops`), N >= 2.
    feature_params : params dataclass
        The extractor's parameters (``extract.<section>``); refused unless the decoder was
        trained with them.
    metrics_path : str or Path, optional
        Metrics JSON of their scores.
    names : tuple of str
        The photographs the crops come from, in order (file names or sample names; the
        ``photo`` of :func:`pipeline.images.photo_crops`'s ``photo#k`` ids), recorded in the
        metrics as ``photographs`` so that a score says what it was measured on; ``()``
        records nothing.
    """

    images: np.ndarray
    feature_params: Any
    metrics_path: str | Path | None = None
    names: tuple[str, ...] = ()


def _photo_batch(
    inv: Decoded,
    model_path: str | Path,
    photos: Photos,
    features_path: str | Path | None,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, ...), images (N, 3, 256, 256) uint8) of the photographs, as trained on."""
    trained_with = inv.config.get("feature_params")
    if trained_with is not None and identity_params(photos.feature_params) != trained_with:
        raise IncompatibleStoreError(
            f"decoder {str(model_path)!r} was trained on {inv.target} features made with "
            f"{trained_with}, not {identity_params(photos.feature_params)}; score it with the "
            "params file it was trained with"
        )
    fs = _training_features(inv, features_path)
    x = torch.from_numpy(np.ascontiguousarray(photos.images)).permute(0, 3, 1, 2)
    if fs is None:
        n = batch_size
        return torch.cat([inv.encode(x[i : i + n]).float().cpu() for i in range(0, len(x), n)]), x
    computed = features.compute(
        inv.target, photos.images, photos.feature_params, device=str(inv.device)
    )
    stored = fs.array("features").dtype
    return torch.from_numpy(computed.astype(stored).astype(np.float32)), x  # as trained on


def _decode_test_split(
    inv: Decoded,
    images_path: str | Path,
    features_path: str | Path | None,
    params: EvalParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode the test split batch by batch.

    Returns
    -------
    reconstructions, targets : (M, S, S, 3) ndarray of float32
        In [0, 1], as :func:`_reconstruct` gives them.
    index : (M,) ndarray
        The test samples' positions in the image store.
    features : (M, D) ndarray of float32
        Their features, flattened: the nearest-neighbour queries.
    """
    recs, tgts, index, test_feats = [], [], [], []
    for sel, f, x in test_batches(
        inv, images_path, features_path, batch_size=params.batch_size, max_images=params.max_images
    ):
        y, t = _reconstruct(inv, f, x)
        recs.append(y)
        tgts.append(t)
        index.append(sel)
        test_feats.append(f.float().cpu().numpy().reshape(len(sel), -1))  # (B, D)
    return (
        np.concatenate(recs),
        np.concatenate(tgts),
        np.concatenate(index),
        np.concatenate(test_feats),
    )


def _reconstruction_provenance(
    inv: Decoded, params: EvalParams, images_fingerprint: str
) -> dict[str, Any]:
    """The reconstruction store's provenance: the decoder, its mode and the image store."""
    return {
        "kind": "reconstructions",
        "stage": "evaluate",
        "producer": inv.target,
        "params": {
            "mode": inv.mode,
            "max_images": params.max_images,
            "baseline_images": params.baseline_images,
        },
        "decoder": identity_of(inv.config),
        "input_fingerprint": images_fingerprint,
        "dims": ["sample", "y", "x", "rgb"],
    }


def evaluate(
    model_path: str | Path,
    *,
    images_path: str | Path,
    features_path: str | Path | None,
    out: str | Path,
    metrics_path: str | Path | None = None,
    params: EvalParams | None = None,
    photos: Photos | None = None,
) -> dict[str, Any]:
    """Reconstruct the test split, store the reconstructions, write the metrics.

    Parameters
    ----------
    model_path : str or Path
        ``model.pt`` of ``invert train``.
    images_path : str or Path
        The image store the decoder was trained with.
    features_path : str or Path or None
        Its feature store (``None`` for autoencoder / online decoders).
    out : str or Path
        Reconstruction store: ``reconstructions`` and ``targets`` (M, S, S, 3) uint8,
        ``index`` (M,) — the test samples' positions in the image store.
    metrics_path : str or Path, optional
        Metrics JSON (``dvc metrics show``).
    params : EvalParams, optional
    photos : Photos, optional
        Also score the decoder on these new photographs (as :func:`score_photos`, sharing
        the one read of the training subset behind the baselines); their metrics are
        returned under ``"photos"`` and written to ``photos.metrics_path``.

    Returns
    -------
    dict
        The metrics (with ``"photos"`` when ``photos`` is given).
    """
    params = params or EvalParams()
    inv = load_inverter(model_path, device=params.device)
    rec, tgt, ind, test_feats = _decode_test_split(inv, images_path, features_path, params)
    queries = [test_feats]
    if photos is not None:
        photo_feats, photo_x = _photo_batch(
            inv, model_path, photos, features_path, params.batch_size
        )
        queries.append(photo_feats.numpy().reshape(len(photo_feats), -1))
    mean_image, nearest = trivial_predictions(inv, images_path, features_path, queries, params)
    metrics = _scores(
        inv,
        tgt,
        rec,
        mean_image,
        nearest[0],
        params,
        steps=int(inv.config["params"]["steps"]),
        paper=PAPER_ERRORS.get(inv.target) if inv.mode == "fixed" else None,
    )
    images = open_store(images_path, kind="images")
    write_reconstructions(
        out,
        _reconstruction_provenance(inv, params, images.fingerprint),
        reconstructions=rec,
        targets=tgt,
        index=ind,
        metrics=metrics,
        metrics_path=metrics_path,
    )
    how = inv.mode if inv.loss == "pixel" else f"{inv.mode}, {inv.loss} loss"
    log.info("%s (%s): normalised error %.3f", inv.target, how, metrics["normalised_error"])
    if photos is not None:
        scored = _photo_scores(inv, photos, photo_feats, photo_x, mean_image, nearest[1], params)
        if photos.metrics_path is not None:
            _write_metrics(scored, photos.metrics_path)
        metrics = {**metrics, "photos": scored}
    return metrics


def _score_batch(
    inv: Decoded,
    feats: torch.Tensor,
    x: torch.Tensor,
    mean_image: np.ndarray,
    nearest: np.ndarray,
    params: EvalParams,
) -> dict[str, Any]:
    recs, tgts = [], []
    for i in range(0, len(x), params.batch_size):
        y, t = _reconstruct(inv, feats[i : i + params.batch_size], x[i : i + params.batch_size])
        recs.append(y)
        tgts.append(t)
    return _scores(inv, np.concatenate(tgts), np.concatenate(recs), mean_image, nearest, params)


def _photo_scores(
    inv: Decoded,
    photos: Photos,
    feats: torch.Tensor,
    x: torch.Tensor,
    mean_image: np.ndarray,
    nearest: np.ndarray,
    params: EvalParams,
) -> dict[str, Any]:
    """:func:`_score_batch` of the photographs' crops, naming the photographs (if known)."""
    scored: dict[str, Any] = {}
    for key, value in _score_batch(inv, feats, x, mean_image, nearest, params).items():
        scored[key] = value
        if key == "images" and photos.names:  # right after the crop count
            scored["photographs"] = list(photos.names)
    return scored


def score_photos(
    model_path: str | Path,
    photos: Photos,
    *,
    images_path: str | Path,
    features_path: str | Path | None,
    params: EvalParams | None = None,
) -> dict[str, Any]:
    """Score a trained decoder on new photographs, with the same trivial baselines.

    How a lab checks a decoder on its own images (``invert score``): the photographs'
    features are computed here with the parameters the decoder was trained with, decoded,
    and compared with their targets like the test split in :func:`evaluate`; the mean image
    and the nearest neighbour come from the same training stores.

    Parameters
    ----------
    model_path : str or Path
        ``model.pt`` of ``invert train``.
    photos : Photos
        The photographs, the extractor parameters, where to write the metrics.
    images_path, features_path : str or Path
        The stores the decoder was trained with (the baselines' training images and
        features; ``features_path`` is ``None`` for autoencoders and online features);
        a feature store other than the training one is refused.
    params : EvalParams, optional

    Returns
    -------
    dict
        As :func:`evaluate`'s metrics, with ``images`` the number of photographs' crops,
        followed by ``photographs``: their names (``photos.names``), when given.
    """
    params = params or EvalParams()
    inv = load_inverter(model_path, device=params.device)
    feats, x = _photo_batch(inv, model_path, photos, features_path, params.batch_size)
    mean_image, (nearest,) = trivial_predictions(
        inv, images_path, features_path, [feats.numpy().reshape(len(feats), -1)], params
    )
    metrics = _photo_scores(inv, photos, feats, x, mean_image, nearest, params)
    if photos.metrics_path is not None:
        _write_metrics(metrics, photos.metrics_path)
    return metrics
