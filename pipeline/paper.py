"""The paper's figures and report from the pipeline's outputs (docs/method.md §6).

Reads trained models (``models/T/model.pt``, ``models/ae_T/model.pt``), reconstruction
stores (``cache/reconstructions/T.zarr``, ``mv_T.zarr`` of the optimisation baseline) and
feature stores, runs the feature-space experiments of :mod:`pipeline.experiments`, and renders
with :mod:`pipeline.figures`; :func:`make_report` gathers metrics and figures into
``report/index.html``. Targets whose inputs are missing are left out of a figure, with a log
line, so a partial run still gets the figures it can have.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import experiments, figures
from pipeline.errors import ConfigError, StoreError
from pipeline.evaluation import PAPER_ERRORS, decode_features, load_inverter
from pipeline.loader import usable_indices
from pipeline.report import undertrained
from pipeline.store import open_store

__all__ = ["FigureParams", "make_figures", "make_report"]

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


class _Sources:
    """Where the pipeline's outputs live, and what exists."""

    def __init__(self, images: Path, features: Path, models: Path, reconstructions: Path) -> None:
        self.images, self.features = images, features
        self.models, self.reconstructions = models, reconstructions

    def model(self, name: str) -> Path | None:
        path = self.models / name / "model.pt"
        return path if path.is_file() else None

    def feature_store(self, target: str) -> Path:
        if target in SHALLOW:
            return self.features / f"{target}.zarr"
        return self.features / "alexnet" / f"{target}.zarr"

    def recon(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        path = self.reconstructions / f"{name}.zarr"
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

    def scores(self, names: list[str]) -> str:
        """Caption text: each target's error on the test split beside the trivial baselines."""
        parts, n = [], None
        for name in names:
            try:
                store = open_store(self.reconstructions / f"{name}.zarr", kind="reconstructions")
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


#: the figure manifest `invert figures` writes beside the PNGs: [[caption, file name], ...]
CAPTIONS = "captions.json"
#: the decoders scored on exactly the test images [1] inverted, beside the figures
SAME_IMAGES = "same_images.json"


def same_images(src: _Sources) -> dict[str, dict[str, Any]]:
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
        ours, mv = src.recon(name), src.recon(f"mv_{name}")
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


def _caption(sources: _Sources, random_weights: bool | str) -> str:
    parts = []
    try:
        info = open_store(sources.images).attrs.get("source", {})
    except StoreError:
        info = {}
    if info.get("kind") == "sample":
        parts.append(
            "Embedded default: crops of the photographs inside scikit-image and matplotlib, "
            "small decoders trained briefly on a CPU — not the paper's ImageNet run."
        )
    if random_weights:
        which = f" ({random_weights})" if isinstance(random_weights, str) else ""
        parts.append(f"AlexNet with RANDOM weights{which}, not the trained CaffeNet.")
    return " ".join(parts)


def _aligned(recons: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """Test-sample indices present in every reconstruction set, first ``n``."""
    common = None
    for _, _, index in recons.values():
        common = set(index.tolist()) if common is None else common & set(index.tolist())
    return np.array(sorted(common or []))[:n]


def _pick(
    rec: tuple[np.ndarray, np.ndarray, np.ndarray], keep: np.ndarray, which: int
) -> np.ndarray:
    pos = {int(k): i for i, k in enumerate(rec[2])}
    return rec[which][[pos[int(k)] for k in keep]]


def _test_features(sources: _Sources, target: str, count: int) -> np.ndarray:
    path = sources.feature_store(target)
    idx = usable_indices(path, "test")[:count]
    arr = open_store(path).array("features")
    return np.stack([arr[int(i) : int(i) + 1][0] for i in idx]).astype(np.float32)


def _train_features(sources: _Sources, target: str, count: int, seed: int) -> np.ndarray:
    path = sources.feature_store(target)
    idx = usable_indices(path, "train")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(idx, size=min(count, len(idx)), replace=False))
    arr = open_store(path).array("features").zarr_array
    return np.asarray(arr.get_orthogonal_selection((idx,)), dtype=np.float32)


def _encoded_train_features(src: _Sources, inv: Any, count: int, seed: int) -> np.ndarray:
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


def make_figures(
    *,
    images: str | Path,
    features: str | Path,
    models: str | Path,
    reconstructions: str | Path,
    out: str | Path,
    params: FigureParams | None = None,
) -> list[tuple[str, Path]]:
    """Render every figure whose inputs exist; returns ``(caption, png)`` pairs in order."""
    p = params or FigureParams()
    src = _Sources(Path(images), Path(features), Path(models), Path(reconstructions))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    made: list[tuple[str, Path]] = []
    random_weights: bool | str = False
    for name in ALEXNET:
        for prefix in ("", "ae_"):
            model = src.model(prefix + name)
            if model is not None:
                inv = load_inverter(model, device="cpu")
                if inv.random_weights:  # say which: random:SEED as params.yaml has it
                    random_weights = str(inv.config["feature_params"].get("weights", True))
    note = _caption(src, random_weights)
    shallow_note = _caption(src, False)  # Fig. 1 involves no AlexNet

    def add(caption: str, path: Path) -> None:
        made.append((caption, path))
        log.info("figure %s", path)

    # Fig. 1: shallow features
    recs = {t: r for t in SHALLOW if (r := src.recon(t)) is not None}
    if recs:
        keep = _aligned(recs, p.images)
        cols = [("Original", _pick(next(iter(recs.values())), keep, 1))]
        cols += [(t.upper(), _pick(r, keep, 0)) for t, r in recs.items()]
        names = ", ".join(t.upper() for t in recs)
        cap = (
            f"Reconstructions from {names} features (test images: photographs the decoders "
            f"never saw). {src.scores(list(recs))} {shallow_note}"
        )
        add(
            cap,
            figures.reconstruction_grid(
                cols,
                out / "fig1_shallow.png",
                title="Fig. 1: inverting shallow features",
                caption=cap,
            ),
        )
    # Fig. 2: every AlexNet layer
    recs = {t: r for t in ALEXNET if (r := src.recon(t)) is not None}
    if recs:
        keep = _aligned(recs, p.images)
        cols = [("Original", _pick(next(iter(recs.values())), keep, 1))]
        cols += [(t.upper(), _pick(r, keep, 0)) for t, r in recs.items()]
        cap = f"Reconstructions from AlexNet layers (test images). {src.scores(list(recs))} {note}"
        add(
            cap,
            figures.reconstruction_grid(
                cols, out / "fig2_alexnet.png", title="Fig. 2: inverting AlexNet", caption=cap
            ),
        )
    # Fig. 3: dark knowledge
    fc8 = src.model("fc8")
    if fc8 is not None and src.feature_store("fc8").exists():
        inv = load_inverter(fc8, device="cpu")
        f = _test_features(src, "fc8", p.images)
        all_, top, rest = experiments.dark_knowledge(f)
        rec = src.recon("fc8")
        original = rec[1][: len(f)] if rec is not None else decode_features(inv, all_)
        cap = f"FC8: all activations, only the 5 largest, all but the 5 largest. {note}"
        add(
            cap,
            figures.dark_knowledge(
                original,
                decode_features(inv, all_),
                decode_features(inv, top),
                decode_features(inv, rest),
                out / "fig3_dark_knowledge.png",
                caption=cap,
                title="Fig. 3: dark knowledge in FC8",
            ),
        )
    # Fig. 4: single neurons
    rows = []
    for layer in ("fc6", "fc7", "fc8"):
        model = src.model(layer)
        if model is None or not src.feature_store(layer).exists():
            continue
        inv = load_inverter(model, device="cpu")
        train = _train_features(src, layer, p.train_features, p.seed)
        neurons = np.argsort(-train.mean(axis=0))[: p.neurons]  # the most active on average
        values = train.max(axis=0)[neurons]
        feats = experiments.single_neurons(train.shape[1], neurons, values)
        rows.append((layer.upper(), decode_features(inv, feats), [f"#{n}" for n in neurons]))
    if rows:
        cap = f"One active neuron (its largest training value), all others zero. {note}"
        add(
            cap,
            figures.single_neurons(
                rows,
                out / "fig4_single_neurons.png",
                caption=cap,
                title="Fig. 4: images from single neurons",
            ),
        )
    # Fig. 5: ours vs optimisation [1] vs autoencoder
    cols = []
    for layer in ALEXNET:
        ours, mv, ae = src.recon(layer), src.recon(f"mv_{layer}"), src.recon(f"ae_{layer}")
        if ours is None or (mv is None and ae is None):
            continue
        have = {k: v for k, v in (("ours", ours), ("mv", mv), ("ae", ae)) if v is not None}
        keep = _aligned(have, min(p.images, 2))
        stack = [_pick(ours, keep, 1), _pick(ours, keep, 0)]
        stack.append(_pick(mv, keep, 0) if mv is not None else np.full_like(stack[0], 255))
        stack.append(_pick(ae, keep, 0) if ae is not None else np.full_like(stack[0], 255))
        cols.append((layer.upper(), np.concatenate(stack)))
    if cols:
        k = len(cols[0][1]) // 4
        methods = ("Original", "Ours", "M&V [1]", "Autoenc.")
        labels = [f"{m} {i + 1}" for m in methods for i in range(k)]
        cap = (
            "Decoders (ours) vs optimisation-based inversion [1] vs autoencoder; blank: not "
            f"run. {note}"
        )
        add(
            cap,
            figures.reconstruction_grid(
                cols,
                out / "fig5_methods.png",
                title="Fig. 5: ours vs [1] vs autoencoder",
                caption=cap,
                row_labels=labels,
            ),
        )
    # Figs. 6-7: interpolations, fixed and autoencoder
    rows2: list[tuple[str, np.ndarray]] = []
    for layer in ALEXNET:
        model = src.model(layer)
        if model is None or not src.feature_store(layer).exists():
            continue
        f = _test_features(src, layer, 12)
        if len(f) < 2:
            continue
        inv = load_inverter(model, device="cpu")
        feats = experiments.interpolate(f[0], f[-1], p.interpolation_steps)
        rows2.append((layer.upper(), decode_features(inv, feats)))
    if rows2:
        cap = f"Decoding linear interpolations between the features of two test images. {note}"
        add(
            cap,
            figures.interpolations(
                rows2,
                out / "fig6_interpolation.png",
                caption=cap,
                title="Fig. 6: interpolation between feature vectors",
            ),
        )
    rows3: list[tuple[str, np.ndarray]] = []
    for layer in ALEXNET:
        model = src.model(f"ae_{layer}")
        if model is None:
            continue
        import torch

        inv = load_inverter(model, device="cpu")
        idx = usable_indices(src.images, "test")
        arr = open_store(src.images).array("images")
        a, b = int(idx[0]), int(idx[min(11, len(idx) - 1)])  # as the fixed rows: 1st and 12th
        x = torch.from_numpy(np.stack([arr[a : a + 1][0], arr[b : b + 1][0]])).permute(0, 3, 1, 2)
        f = inv.encode(x).numpy()
        rows3.append(
            (
                f"{layer.upper()} AE",
                decode_features(inv, experiments.interpolate(f[0], f[1], p.interpolation_steps)),
            )
        )
    if rows3:
        cap = f"Interpolations with the autoencoders (encoder trained jointly). {note}"
        add(
            cap,
            figures.interpolations(
                rows3,
                out / "fig7_interpolation_ae.png",
                caption=cap,
                title="Fig. 7: interpolation with the autoencoders",
            ),
        )
    # Figs. 8-10: random feature vectors
    rng = np.random.default_rng(p.seed)
    rows4: list[tuple[str, np.ndarray]] = []
    for layer in ("fc6", "fc7", "fc8"):
        model = src.model(layer)
        if model is None or not src.feature_store(layer).exists():
            continue
        inv = load_inverter(model, device="cpu")
        train = _train_features(src, layer, p.train_features, p.seed)
        for label, fn in (
            ("histogram", experiments.histogram_samples),
            ("trunc. Gaussian", experiments.truncated_gaussian_samples),
        ):
            rows4.append(
                (f"{layer.upper()} {label}", decode_features(inv, fn(train, p.random_samples, rng)))
            )
    for layer in ("fc6", "fc7", "fc8"):  # the autoencoders: features from their own encoder
        model = src.model(f"ae_{layer}")
        if model is None:
            continue
        inv = load_inverter(model, device="cpu")
        train = _encoded_train_features(src, inv, p.train_features, p.seed)
        for label, fn in (
            ("histogram", experiments.histogram_samples),
            ("trunc. Gaussian", experiments.truncated_gaussian_samples),
        ):
            rows4.append(
                (
                    f"{layer.upper()} AE {label}",
                    decode_features(inv, fn(train, p.random_samples, rng)),
                )
            )
    if rows4:
        cap = (
            "Images from random feature vectors: per-dimension histograms and truncated "
            f"Gaussians fitted to training features (fixed AlexNet and autoencoders). {note}"
        )
        add(
            cap,
            figures.random_samples(
                rows4,
                out / "fig8_random_features.png",
                caption=cap,
                title="Figs. 8–10: images from random feature vectors",
            ),
        )
    (out / SAME_IMAGES).write_text(json.dumps(same_images(src), indent=2) + "\n")
    manifest = [[caption, path.name] for caption, path in made]
    (out / CAPTIONS).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return made


def make_report(
    *,
    metrics: str | Path,
    figures_dir: str | Path,
    out: str | Path,
    provenance: dict[str, Any],
    figure_list: list[tuple[str, Path]] | None = None,
    run: str = "",
) -> Path:
    """Gather ``metrics/eval/*.json``, the figures and the loss curves into an HTML report.

    ``run`` is the run's name (``report.run``), shown under the title.
    """
    from pipeline.report import write_report

    metrics = Path(metrics)
    rows: list[dict[str, Any]] = []
    same_path = Path(figures_dir) / SAME_IMAGES
    same = json.loads(same_path.read_text()) if same_path.is_file() else {}
    evals = {p.stem: json.loads(p.read_text()) for p in sorted((metrics / "eval").glob("*.json"))}
    photos = {
        p.stem: json.loads(p.read_text()) for p in sorted((metrics / "photos").glob("*.json"))
    }
    for name in [*SHALLOW, *ALEXNET]:
        for key in (name, f"ae_{name}"):
            m = evals.get(key)
            if m is None:
                continue
            mv = evals.get(f"mv_{name}")
            new = photos.get(key, {})
            rows.append(
                {
                    "target": name,
                    "mode": m["mode"],
                    "ours": m["normalised_error"],
                    "paper": PAPER_ERRORS.get(name) if m["mode"] == "fixed" else None,
                    "ssim": m["ssim"],
                    "psnr": m["psnr"],
                    "baseline": mv["normalised_error"] if mv and key == name else None,
                    "baseline_images": mv.get("images") if mv and key == name else None,
                    "interval_low": m.get("interval_low"),
                    "interval_high": m.get("interval_high"),
                    "ours_same": same.get(name, {}).get("ours") if key == name else None,
                    "mean_image": m.get("mean_image"),
                    "nearest_neighbour": m.get("nearest_neighbour"),
                    "images": m.get("images"),
                    "photos": new.get("normalised_error"),
                    "photos_mean_image": new.get("mean_image"),
                    "photos_images": new.get("images"),
                    "undertrained": undertrained(evals, key),
                }
            )
    curves = {}
    for csv in sorted((metrics.parent / "plots" / "train").glob("*.csv")):
        data = np.loadtxt(csv, delimiter=",", skiprows=1, ndmin=2)
        if len(data):
            curves[csv.stem] = (data[:, 0], data[:, 1])
    loss = None
    if curves:
        Path(out).mkdir(parents=True, exist_ok=True)
        path = figures.loss_curves(
            curves,
            Path(out) / "loss_curves.png",  # the report's own file: figures/ is another stage's
            caption="Training loss (pixel MSE) per target.",
        )
        loss = ("Training loss (pixel MSE) per target.", path)
    if figure_list is not None:
        figs = figure_list
    elif (Path(figures_dir) / CAPTIONS).is_file():  # written by `invert figures`
        manifest = json.loads((Path(figures_dir) / CAPTIONS).read_text())
        figs = [(c, Path(figures_dir) / name) for c, name in manifest]
    else:
        figs = [(p.stem.replace("_", " "), p) for p in sorted(Path(figures_dir).glob("fig*.png"))]
    notes = [
        "Normalised error: mean ||x - x̂|| over test images divided by the mean distance between "
        "two distinct test images (docs/method.md §6). With the embedded default's three test "
        "photographs the denominator is small, so the figures are not comparable with the "
        "paper's ImageNet values.",
        "New photos: the same decoder on crops of photographs in neither split "
        "(prepare.holdout_photos, `invert evaluate --photos`), beside the training-mean image "
        "on those crops.",
    ]
    return write_report(
        out,
        title="Inverting visual representations — reproduction report",
        error_table=rows,
        figures=figs,
        provenance=provenance,
        notes=notes,
        loss_figure=loss,
        findings=findings(evals, photos),
        run=run,
    )


def findings(
    evals: dict[str, dict[str, Any]], photos: dict[str, dict[str, Any]] | None = None
) -> list[str]:
    """One sentence per decoder: does it beat the trivial baselines on the test images?

    Parameters
    ----------
    evals : dict
        Metrics file stem (``hog``, ``ae_conv5``, ``mv_fc8``) -> its evaluation metrics.
    photos : dict, optional
        The same for the new photographs (``invert evaluate --photos``).
    """
    photos = photos or {}
    out = []
    for name in [*SHALLOW, *ALEXNET]:
        for key, what in ((name, "decoder"), (f"ae_{name}", "autoencoder")):
            m = evals.get(key)
            if m is None or "mean_image" not in m:
                continue
            err, mean, nn = m["normalised_error"], m["mean_image"], m["nearest_neighbour"]
            head = f"{name.upper()} {what}: {err:.3f} on {m['images']} test images"
            high = m.get("interval_high")
            if err >= mean:
                verdict = (
                    f"no better than the training-mean image ({mean:.3f}): its reconstructions "
                    "carry nothing of the features"
                )
            elif high is not None and high >= mean:
                verdict = (
                    f"below the training-mean image ({mean:.3f}) but inside its own 95% interval "
                    f"[{m['interval_low']:.3f}, {high:.3f}]: not a clear difference"
                )
            elif err >= nn:
                verdict = (
                    f"beats the mean image ({mean:.3f}) but not the nearest training image in "
                    f"feature space ({nn:.3f}): it recalls training images rather than inverting"
                )
            else:
                verdict = f"beats the mean image ({mean:.3f}) and the nearest neighbour ({nn:.3f})"
            new = photos.get(key)
            if new is not None and new.get("mean_image"):
                ratio = new["normalised_error"] / new["mean_image"]
                verdict += (
                    f"; on {new['images']} crops of new photographs {new['normalised_error']:.3f}"
                    f" against the mean image's {new['mean_image']:.3f} ({ratio:.2f}x)"
                )
            if undertrained(evals, key):
                verdict += (
                    f" (undertrained: {evals[key]['steps']} steps against the decoder's "
                    f"{evals[name]['steps']})"
                )
            out.append(f"{head} — {verdict}.")
    return out
