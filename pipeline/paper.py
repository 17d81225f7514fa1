"""The paper's figures from the pipeline's outputs (docs/method.md §6).

:func:`make_figures` reads trained models (fixed decoders and autoencoders), reconstruction
stores (of the decoders, the autoencoders and the optimisation baseline [1]) and AlexNet
feature stores, runs the feature-space experiments of :mod:`pipeline.experiments`, and renders
with :mod:`pipeline.figures`, one function per figure. Targets whose inputs are missing are
left out of a figure, with a log line, so a partial run still gets the figures it can have.
:mod:`pipeline.run_report` gathers metrics, loss logs and these figures into the report.

Where the inputs are is not known here: ``dvc.yaml`` passes every path, as a template with
``{name}`` standing for the target (:class:`FigureInputs`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import experiments, figures
from pipeline.errors import ConfigError, StoreError
from pipeline.evaluation import decode_features, load_inverter
from pipeline.loader import usable_indices
from pipeline.store import open_store

__all__ = [
    "ALEXNET",
    "CAPTIONS",
    "SAME_IMAGES",
    "SHALLOW",
    "FigureInputs",
    "FigureParams",
    "make_figures",
    "parse_template",
]

log = logging.getLogger(__name__)

SHALLOW = ("hog", "sift", "lbp")
ALEXNET = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


@dataclass(frozen=True)
class FigureParams:
    """The ``figures`` section of ``params.yaml``.

    Attributes
    ----------
    images : int
        Test images per reconstruction figure (rows).
    neurons : int
        Single-neuron images per layer (Fig. 4).
    interpolation_steps : int
        Images per interpolation row, ends included (Figs. 6–7).
    random_samples : int
        Images per random-feature row (Figs. 8–10).
    train_features : int
        Training feature vectors used to fit the random-feature distributions and to pick
        the single neurons' values.
    seed : int
    """

    images: int = 4
    neurons: int = 6
    interpolation_steps: int = 7
    random_samples: int = 6
    train_features: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.images, self.neurons, self.random_samples, self.train_features) < 1:
            raise ConfigError("figures: images, neurons, random_samples, train_features >= 1")
        if self.interpolation_steps < 2:
            raise ConfigError("figures: interpolation_steps must be >= 2")


def parse_template(value: str | Path, what: str) -> str:
    """A path template of ``dvc.yaml``: ``{name}`` stands for the target."""
    value = str(value)
    if "{name}" not in value:
        raise ConfigError(
            f"{what}: expected a path template containing {{name}} (the target), got "
            f"{value!r}; e.g. models/{{name}}/model.pt"
        )
    return value


@dataclass(frozen=True)
class FigureInputs:
    """Where :func:`make_figures` reads from: paths as ``dvc.yaml`` passes them.

    Each template holds ``{name}``, which becomes a target (``hog``, ``conv1`` ... ``fc8``).

    Attributes
    ----------
    images : Path
        The image store.
    features : str
        AlexNet feature store of layer ``{name}`` (``cache/features/alexnet/{name}.zarr``).
    decoders : str
        Trained decoder of target ``{name}`` (``models/{name}/model.pt``).
    autoencoders : str
        Trained autoencoder of layer ``{name}`` (``models/ae_{name}/model.pt``).
    reconstructions : str
        The decoder's test reconstructions (``cache/reconstructions/{name}.zarr``).
    ae_reconstructions : str
        The autoencoder's (``cache/reconstructions/ae_{name}.zarr``).
    mv_reconstructions : str
        The optimisation-based inversion's [1] (``cache/reconstructions/mv_{name}.zarr``).
    ds_reconstructions : str, optional
        Those of the decoders trained with the DeePSiM loss
        (``cache/reconstructions/ds_{name}.zarr``; :mod:`pipeline.deepsim`); None: no
        DeePSiM figure.
    """

    images: Path
    features: str
    decoders: str
    autoencoders: str
    reconstructions: str
    ae_reconstructions: str
    mv_reconstructions: str
    ds_reconstructions: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", Path(self.images))
        for field in fields(self)[1:]:
            value = getattr(self, field.name)
            if value is not None:
                object.__setattr__(self, field.name, parse_template(value, field.name))

    def decoder(self, name: str) -> Path | None:
        path = Path(self.decoders.format(name=name))
        return path if path.is_file() else None

    def autoencoder(self, name: str) -> Path | None:
        path = Path(self.autoencoders.format(name=name))
        return path if path.is_file() else None

    def feature_store(self, layer: str) -> Path:
        return Path(self.features.format(name=layer))

    def recon(self, name: str) -> Recon | None:
        """The decoder's reconstructions of target ``name``, or None where there are none."""
        return _read_recon(Path(self.reconstructions.format(name=name)))

    def ae_recon(self, name: str) -> Recon | None:
        return _read_recon(Path(self.ae_reconstructions.format(name=name)))

    def mv_recon(self, name: str) -> Recon | None:
        return _read_recon(Path(self.mv_reconstructions.format(name=name)))

    def ds_recon(self, name: str) -> Recon | None:
        if self.ds_reconstructions is None:
            return None
        return _read_recon(Path(self.ds_reconstructions.format(name=name)))

    def scores(self, names: list[str]) -> str:
        """Caption text: each target's error on the test split beside the trivial baselines."""
        parts, n = [], None
        for name in names:
            try:
                store = open_store(self.reconstructions.format(name=name), kind="reconstructions")
            except StoreError:
                continue
            m = store.attrs.get("metrics", {})
            if "mean_image" not in m:
                continue
            n = m["images"]
            parts.append(
                f"{name.upper()} {m['normalised_error']:.2f} ({m['mean_image']:.2f}, "
                f"{m['nearest_neighbour']:.2f})"
            )
        if not parts:
            return ""
        return (
            f"Normalised error on the {n} test images (training-mean image, nearest training "
            f"image in feature space): {', '.join(parts)}."
        )


#: (reconstructions (M, S, S, 3) uint8, targets (M, S, S, 3) uint8, index (M,)) of a store
Recon = tuple[np.ndarray, np.ndarray, np.ndarray]


def _read_recon(path: Path) -> Recon | None:
    try:
        store = open_store(path, kind="reconstructions")
    except StoreError:
        log.info("no reconstructions %s: left out of the figures", path)
        return None
    return (
        store.array("reconstructions")[:],
        store.array("targets")[:],
        store.array("index")[:],
    )


#: the figure manifest `invert figures` writes beside the PNGs: [[caption, file name], ...]
CAPTIONS = "captions.json"
#: the decoders scored on exactly the test images [1] inverted, beside the figures
SAME_IMAGES = "same_images.json"


def same_images(src: FigureInputs) -> dict[str, dict[str, Any]]:
    """Each decoder's normalised error on exactly the test images [1] inverted.

    [1] runs on the first few test images; its error divides by the mean distance between
    all test images, as the decoder's does. Scoring the decoder's reconstructions of the
    same images with the same denominator makes the two comparable.

    Returns
    -------
    dict
        target -> ``{"ours": float, "mv": float, "images": int}``.
    """
    from pipeline.evaluation import normalised_error

    out: dict[str, dict[str, Any]] = {}
    for name in [*SHALLOW, *ALEXNET]:
        ours, mv = src.recon(name), src.mv_recon(name)
        if ours is None or mv is None:
            continue
        rec, tgt, index = (a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a for a in ours)
        pos = {int(k): i for i, k in enumerate(index)}
        if not all(int(k) in pos for k in mv[2]):
            continue  # [1] inverted images the decoder did not (another split)
        sel = [pos[int(k)] for k in mv[2]]
        mv_rec = mv[0].astype(np.float64) / 255.0
        out[name] = {
            "ours": round(normalised_error(tgt[sel], rec[sel], reference=tgt), 4),
            "mv": round(normalised_error(tgt[sel], mv_rec, reference=tgt), 4),
            "images": len(sel),
        }
    return out


def _caption(src: FigureInputs, random_weights: bool | str) -> str:
    parts = []
    try:
        info = open_store(src.images).attrs.get("source", {})
    except StoreError:
        info = {}
    if info.get("kind") == "sample":
        parts.append(
            "Embedded default: crops of the photographs inside scikit-image, matplotlib, "
            "scikit-learn and PyWavelets (and collages of the training ones), "
            "small decoders trained briefly on a CPU — not the paper's ImageNet run."
        )
    if random_weights:
        which = f" ({random_weights})" if isinstance(random_weights, str) else ""
        parts.append(f"AlexNet with RANDOM weights{which}, not the trained CaffeNet.")
    return " ".join(parts)


def _random_weights(src: FigureInputs) -> bool | str:
    """``random:SEED`` (as params.yaml has it) where an AlexNet model used random weights."""
    random_weights: bool | str = False
    for name in ALEXNET:
        for model in (src.decoder(name), src.autoencoder(name)):
            if model is not None:
                inv = load_inverter(model, device="cpu")
                if inv.random_weights:  # say which: random:SEED as params.yaml has it
                    random_weights = str(inv.config["feature_params"].get("weights", True))
    return random_weights


def _aligned(recons: dict[str, Recon], n: int) -> np.ndarray:
    """Test-sample indices present in every reconstruction set, first ``n``."""
    common = None
    for _, _, index in recons.values():
        common = set(index.tolist()) if common is None else common & set(index.tolist())
    return np.array(sorted(common or []))[:n]


def _pick(rec: Recon, keep: np.ndarray, which: int) -> np.ndarray:
    pos = {int(k): i for i, k in enumerate(rec[2])}
    return rec[which][[pos[int(k)] for k in keep]]


def _test_features(src: FigureInputs, layer: str, count: int) -> np.ndarray:
    path = src.feature_store(layer)
    idx = usable_indices(path, "test")[:count]
    arr = open_store(path).array("features")
    return np.stack([arr[int(i) : int(i) + 1][0] for i in idx]).astype(np.float32)


def _train_features(src: FigureInputs, layer: str, count: int, seed: int) -> np.ndarray:
    path = src.feature_store(layer)
    idx = usable_indices(path, "train")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(idx, size=min(count, len(idx)), replace=False))
    arr = open_store(path).array("features").zarr_array
    return np.asarray(arr.get_orthogonal_selection((idx,)), dtype=np.float32)


def _encoded_train_features(src: FigureInputs, inv: Any, count: int, seed: int) -> np.ndarray:
    """Training features of an autoencoder: a random sample of training images, encoded."""
    import torch

    idx = usable_indices(src.images, "train")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(idx, size=min(count, len(idx)), replace=False))
    arr = open_store(src.images).array("images")
    out = []
    for i in range(0, len(idx), 32):
        x = np.stack([arr[int(k) : int(k) + 1][0] for k in idx[i : i + 32]])
        out.append(inv.encode(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy())
    return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------------------------------
# one function per figure: (caption, PNG) or None where its inputs are missing

Made = tuple[str, Path] | None


def _reconstructions_figure(
    src: FigureInputs, targets: tuple[str, ...], n: int
) -> tuple[dict[str, Recon], list[tuple[str, np.ndarray]]]:
    """The decoders' reconstructions of ``targets`` that exist, and the grid's columns."""
    recs = {t: r for t in targets if (r := src.recon(t)) is not None}
    if not recs:
        return recs, []
    keep = _aligned(recs, n)
    cols = [("Original", _pick(next(iter(recs.values())), keep, 1))]
    cols += [(t.upper(), _pick(r, keep, 0)) for t, r in recs.items()]
    return recs, cols


def fig1_shallow(src: FigureInputs, p: FigureParams, out: Path, note: str) -> Made:
    """Fig. 1: reconstructions from HOG, SIFT and LBP (``note``: no AlexNet involved)."""
    recs, cols = _reconstructions_figure(src, SHALLOW, p.images)
    if not recs:
        return None
    names = ", ".join(t.upper() for t in recs)
    cap = (
        f"Reconstructions from {names} features (test images: photographs the decoders "
        f"never saw). {src.scores(list(recs))} {note}"
    )
    path = figures.reconstruction_grid(
        cols, out / "fig1_shallow.png", title="Fig. 1: inverting shallow features", caption=cap
    )
    return cap, path


def fig2_alexnet(src: FigureInputs, p: FigureParams, out: Path, note: str) -> Made:
    """Fig. 2: reconstructions from every AlexNet layer."""
    recs, cols = _reconstructions_figure(src, ALEXNET, p.images)
    if not recs:
        return None
    cap = f"Reconstructions from AlexNet layers (test images). {src.scores(list(recs))} {note}"
    path = figures.reconstruction_grid(
        cols, out / "fig2_alexnet.png", title="Fig. 2: inverting AlexNet", caption=cap
    )
    return cap, path


def fig3_dark_knowledge(src: FigureInputs, p: FigureParams, out: Path, note: str) -> Made:
    """Fig. 3: FC8 from all activations, from the 5 largest, from all but the 5 largest."""
    fc8 = src.decoder("fc8")
    if fc8 is None or not src.feature_store("fc8").exists():
        return None
    inv = load_inverter(fc8, device="cpu")
    f = _test_features(src, "fc8", p.images)
    all_, top, rest = experiments.dark_knowledge(f)
    rec = src.recon("fc8")
    original = rec[1][: len(f)] if rec is not None else decode_features(inv, all_)
    cap = f"FC8: all activations, only the 5 largest, all but the 5 largest. {note}"
    path = figures.dark_knowledge(
        original,
        decode_features(inv, all_),
        decode_features(inv, top),
        decode_features(inv, rest),
        out / "fig3_dark_knowledge.png",
        caption=cap,
        title="Fig. 3: dark knowledge in FC8",
    )
    return cap, path


def fig4_single_neurons(src: FigureInputs, p: FigureParams, out: Path, note: str) -> Made:
    """Fig. 4: one active neuron of FC6, FC7, FC8 (the most active on average), others zero."""
    rows = []
    for layer in ("fc6", "fc7", "fc8"):
        model = src.decoder(layer)
        if model is None or not src.feature_store(layer).exists():
            continue
        inv = load_inverter(model, device="cpu")
        train = _train_features(src, layer, p.train_features, p.seed)
        neurons = np.argsort(-train.mean(axis=0))[: p.neurons]  # the most active on average
        values = train.max(axis=0)[neurons]
        feats = experiments.single_neurons(train.shape[1], neurons, values)
        rows.append((layer.upper(), decode_features(inv, feats), [f"#{n}" for n in neurons]))
    if not rows:
        return None
    cap = f"One active neuron (its largest training value), all others zero. {note}"
    path = figures.single_neurons(
        rows,
        out / "fig4_single_neurons.png",
        caption=cap,
        title="Fig. 4: images from single neurons",
    )
    return cap, path


def fig5_methods(src: FigureInputs, p: FigureParams, out: Path, note: str) -> Made:
    """Fig. 5: ours vs the optimisation-based inversion [1] vs the autoencoder, per layer."""
    cols = []
    for layer in ALEXNET:
        ours, mv, ae = src.recon(layer), src.mv_recon(layer), src.ae_recon(layer)
        if ours is None or (mv is None and ae is None):
            continue
        have = {k: v for k, v in (("ours", ours), ("mv", mv), ("ae", ae)) if v is not None}
        keep = _aligned(have, min(p.images, 2))
        stack = [_pick(ours, keep, 1), _pick(ours, keep, 0)]
        stack.append(_pick(mv, keep, 0) if mv is not None else np.full_like(stack[0], 255))
        stack.append(_pick(ae, keep, 0) if ae is not None else np.full_like(stack[0], 255))
        cols.append((layer.upper(), np.concatenate(stack)))  # (4 k, S, S, 3): methods × images
    if not cols:
        return None
    k = len(cols[0][1]) // 4
    methods = ("Original", "Ours", "M&V [1]", "Autoenc.")
    labels = [f"{m} {i + 1}" for m in methods for i in range(k)]
    cap = (
        "Decoders (ours) vs optimisation-based inversion [1] vs autoencoder; blank: not "
        f"run. {note}"
    )
    path = figures.reconstruction_grid(
        cols,
        out / "fig5_methods.png",
        title="Fig. 5: ours vs [1] vs autoencoder",
        caption=cap,
        row_labels=labels,
    )
    return cap, path


def fig6_interpolation(src: FigureInputs, p: FigureParams, out: Path, note: str) -> Made:
    """Fig. 6: decoded interpolations between the features of the 1st and 12th test images."""
    rows: list[tuple[str, np.ndarray]] = []
    for layer in ALEXNET:
        model = src.decoder(layer)
        if model is None or not src.feature_store(layer).exists():
            continue
        f = _test_features(src, layer, 12)
        if len(f) < 2:
            continue
        inv = load_inverter(model, device="cpu")
        feats = experiments.interpolate(f[0], f[-1], p.interpolation_steps)
        rows.append((layer.upper(), decode_features(inv, feats)))
    if not rows:
        return None
    cap = f"Decoding linear interpolations between the features of two test images. {note}"
    path = figures.interpolations(
        rows,
        out / "fig6_interpolation.png",
        caption=cap,
        title="Fig. 6: interpolation between feature vectors",
    )
    return cap, path


def fig7_interpolation_ae(src: FigureInputs, p: FigureParams, out: Path, note: str) -> Made:
    """Fig. 7: the same interpolations with the autoencoders' own encoders."""
    import torch

    rows: list[tuple[str, np.ndarray]] = []
    for layer in ALEXNET:
        model = src.autoencoder(layer)
        if model is None:
            continue
        inv = load_inverter(model, device="cpu")
        idx = usable_indices(src.images, "test")
        arr = open_store(src.images).array("images")
        a, b = int(idx[0]), int(idx[min(11, len(idx) - 1)])  # as the fixed rows: 1st and 12th
        x = torch.from_numpy(np.stack([arr[a : a + 1][0], arr[b : b + 1][0]])).permute(0, 3, 1, 2)
        f = inv.encode(x).numpy()
        feats = experiments.interpolate(f[0], f[1], p.interpolation_steps)
        rows.append((f"{layer.upper()} AE", decode_features(inv, feats)))
    if not rows:
        return None
    cap = f"Interpolations with the autoencoders (encoder trained jointly). {note}"
    path = figures.interpolations(
        rows,
        out / "fig7_interpolation_ae.png",
        caption=cap,
        title="Fig. 7: interpolation with the autoencoders",
    )
    return cap, path


#: Figs. 8-10: the two distributions random feature vectors are drawn from, in drawing order
_SAMPLERS = (
    ("histogram", experiments.histogram_samples),
    ("trunc. Gaussian", experiments.truncated_gaussian_samples),
)


def fig8_random_features(src: FigureInputs, p: FigureParams, out: Path, note: str) -> Made:
    """Figs. 8-10: images from random FC6-FC8 feature vectors, fixed decoders then autoencoders.

    One generator seeded with ``p.seed`` draws every row in turn.
    """
    rng = np.random.default_rng(p.seed)
    rows: list[tuple[str, np.ndarray]] = []
    for layer in ("fc6", "fc7", "fc8"):
        model = src.decoder(layer)
        if model is None or not src.feature_store(layer).exists():
            continue
        inv = load_inverter(model, device="cpu")
        train = _train_features(src, layer, p.train_features, p.seed)
        for label, fn in _SAMPLERS:
            feats = fn(train, p.random_samples, rng)
            rows.append((f"{layer.upper()} {label}", decode_features(inv, feats)))
    for layer in ("fc6", "fc7", "fc8"):  # the autoencoders: features from their own encoder
        model = src.autoencoder(layer)
        if model is None:
            continue
        inv = load_inverter(model, device="cpu")
        train = _encoded_train_features(src, inv, p.train_features, p.seed)
        for label, fn in _SAMPLERS:
            feats = fn(train, p.random_samples, rng)
            rows.append((f"{layer.upper()} AE {label}", decode_features(inv, feats)))
    if not rows:
        return None
    cap = (
        "Images from random feature vectors: per-dimension histograms and truncated "
        f"Gaussians fitted to training features (fixed AlexNet and autoencoders). {note}"
    )
    path = figures.random_samples(
        rows,
        out / "fig8_random_features.png",
        caption=cap,
        title="Figs. 8–10: images from random feature vectors",
    )
    return cap, path


#: every figure, in the report's order
def _sharpness(template: str, name: str) -> str:
    """``error e, SSIM s, high-frequency ratio h`` of one reconstruction store's metrics."""
    try:
        m = open_store(template.format(name=name), kind="reconstructions").attrs["metrics"]
    except (StoreError, KeyError):
        return "not scored"
    parts = [f"error {m['normalised_error']:.2f}"]
    sharp = m.get("sharpness", {}).get("reconstructions")
    if sharp is not None:
        parts.append(f"SSIM {sharp['ssim_gaussian']:.2f}")
        parts.append(f"high-frequency ratio {sharp['hf_ratio']:.2f}")
    return ", ".join(parts)


def fig9_deepsim(src: FigureInputs, p: FigureParams, out: Path, note: str) -> Made:
    """Beyond the paper: pixel-loss vs DeePSiM decoders of the same features, side by side.

    Dosovitskiy & Brox, NIPS 2016 (:mod:`pipeline.deepsim`): the same generator trained with
    a feature loss and an adversarial loss beside the pixel loss. Columns: targets with both
    decoders; rows: original, pixel loss, DeePSiM, for the first test images of both.
    """
    cols, scores = [], []
    for name in (*SHALLOW, *ALEXNET):
        pixel, deepsim = src.recon(name), src.ds_recon(name)
        if pixel is None or deepsim is None:
            continue
        keep = _aligned({"pixel": pixel, "deepsim": deepsim}, min(p.images, 3))
        stack = [_pick(pixel, keep, 1), _pick(pixel, keep, 0), _pick(deepsim, keep, 0)]
        cols.append((name.upper(), np.concatenate(stack)))  # (3 k, S, S, 3): rows × images
        assert src.ds_reconstructions is not None
        scores.append(
            f"{name.upper()}: pixel {_sharpness(src.reconstructions, name)}; DeePSiM "
            f"{_sharpness(src.ds_reconstructions, name)}"
        )
    if not cols:
        return None
    k = len(cols[0][1]) // 3
    labels = [f"{m} {i + 1}" for m in ("Original", "Pixel loss", "DeePSiM") for i in range(k)]
    cap = (
        "Beyond the paper: decoders of the same features trained with the pixel loss (the "
        "paper's), and the same decoders fine-tuned with DeePSiM's pixel + feature + "
        "adversarial loss (Dosovitskiy & Brox, NIPS 2016; train_deepsim stages), on the same "
        "test images. Normalised error rewards blur; SSIM and the "
        "high-frequency power ratio (reconstruction over original; 1 is the original's "
        f"detail, 0 a flat image) measure sharpness. {'. '.join(scores)}. {note}"
    )
    path = figures.reconstruction_grid(
        cols,
        out / "fig9_deepsim.png",
        title="Beyond the paper: pixel loss vs DeePSiM",
        caption=cap,
        row_labels=labels,
    )
    return cap, path


FIGURES = (
    fig1_shallow,
    fig2_alexnet,
    fig3_dark_knowledge,
    fig4_single_neurons,
    fig5_methods,
    fig6_interpolation,
    fig7_interpolation_ae,
    fig8_random_features,
    fig9_deepsim,
)


def make_figures(
    *, inputs: FigureInputs, out: str | Path, params: FigureParams | None = None
) -> list[tuple[str, Path]]:
    """Render every figure whose inputs exist; returns ``(caption, png)`` pairs in order.

    Also writes ``out/captions.json`` (the pairs, for the report) and ``out/same_images.json``
    (:func:`same_images`).
    """
    p = params or FigureParams()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    note = _caption(inputs, _random_weights(inputs))
    made: list[tuple[str, Path]] = []
    for figure in FIGURES:
        # Fig. 1 involves no AlexNet: its caption says nothing of the weights
        result = figure(inputs, p, out, _caption(inputs, False) if figure is fig1_shallow else note)
        if result is not None:
            made.append(result)
            log.info("figure %s", result[1])
    (out / SAME_IMAGES).write_text(json.dumps(same_images(inputs), indent=2) + "\n")
    manifest = [[caption, path.name] for caption, path in made]
    (out / CAPTIONS).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return made
