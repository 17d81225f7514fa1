"""What the report shows of a run: its metrics, loss logs, figures and provenance.

:func:`make_report` reads the test and new-photograph metrics of every decoder, autoencoder
and optimisation-based inversion [1], the training loss logs and the figures of
:func:`pipeline.paper.make_figures`, says in one sentence per decoder whether it beats the
trivial baselines (:func:`findings`), and hands it all to :func:`pipeline.report.write_report`,
which writes ``index.html``. Where the inputs are is not known here: ``dvc.yaml`` passes every
path, as a template with ``{name}`` standing for the target (:class:`ReportInputs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import figures
from pipeline.config import parse_yaml
from pipeline.evaluation import PAPER_ERRORS
from pipeline.paper import ALEXNET, CAPTIONS, SAME_IMAGES, SHALLOW, parse_template
from pipeline.report import standing, undertrained
from pipeline.store import open_store

__all__ = ["ReportInputs", "findings", "make_report", "run_provenance", "sharpness_rows"]


@dataclass(frozen=True)
class ReportInputs:
    """Where :func:`make_report` reads from: paths as ``dvc.yaml`` passes them.

    Each template holds ``{name}``, which becomes a target (``hog``, ``conv1`` ... ``fc8``);
    a file that does not exist leaves its row or curve out.

    Attributes
    ----------
    metrics : str
        The decoder's test metrics (``metrics/eval/{name}.json``).
    ae_metrics : str
        The autoencoder's (``metrics/eval/ae_{name}.json``).
    mv_metrics : str
        The optimisation-based inversion's [1] (``metrics/eval/mv_{name}.json``).
    photo_metrics : str
        The decoder on new photographs (``metrics/photos/{name}.json``).
    ae_photo_metrics : str
        The autoencoder on them (``metrics/photos/ae_{name}.json``).
    loss_curves : str
        The decoder's training loss log, CSV ``step,loss`` (``plots/train/{name}.csv``).
    ae_loss_curves : str
        The autoencoder's (``plots/train/ae_{name}.csv``).
    figures : Path
        The folder of ``invert figures`` (its ``captions.json`` and ``same_images.json``).
    ds_metrics, ds_photo_metrics : str, optional
        The DeePSiM decoders' test and new-photograph metrics (``metrics/eval/ds_{name}.json``,
        ``metrics/photos/ds_{name}.json``); None: no DeePSiM rows.
    """

    metrics: str
    ae_metrics: str
    mv_metrics: str
    photo_metrics: str
    ae_photo_metrics: str
    loss_curves: str
    ae_loss_curves: str
    figures: Path
    ds_metrics: str | None = None
    ds_photo_metrics: str | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name != "figures" and value is not None:
                object.__setattr__(self, field.name, parse_template(value, field.name))
        object.__setattr__(self, "figures", Path(self.figures))


def _read_json(template: str | None, name: str) -> dict[str, Any] | None:
    if template is None:
        return None
    path = Path(template.format(name=name))
    return json.loads(path.read_text()) if path.is_file() else None


def _read_metrics(
    inputs: ReportInputs,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(test metrics, new-photo metrics), keyed ``T``, ``ae_T``, ``ds_T`` and ``mv_T``.

    The keys name the decoder, the autoencoder, the DeePSiM decoder and [1] (test only) of
    target T, as :func:`findings` and :func:`pipeline.report.undertrained` expect.
    """
    evals: dict[str, dict[str, Any]] = {}
    photos: dict[str, dict[str, Any]] = {}
    for name in [*SHALLOW, *ALEXNET]:
        for key, test, new in (
            (name, inputs.metrics, inputs.photo_metrics),
            (f"ae_{name}", inputs.ae_metrics, inputs.ae_photo_metrics),
            (f"mv_{name}", inputs.mv_metrics, None),
            (f"ds_{name}", inputs.ds_metrics, inputs.ds_photo_metrics),
        ):
            if (m := _read_json(test, name)) is not None:
                evals[key] = m
            if new is not None and (m := _read_json(new, name)) is not None:
                photos[key] = m
    return evals, photos


def _error_row(
    name: str,
    key: str,
    evals: dict[str, dict[str, Any]],
    photos: dict[str, dict[str, Any]],
    same: dict[str, Any],
) -> dict[str, Any]:
    """The error table's row of ``key`` (decoder ``T`` or autoencoder ``ae_T``) of target T."""
    m = evals[key]
    mv = evals.get(f"mv_{name}")
    new = photos.get(key, {})
    return {
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


def sharpness_rows(
    evals: dict[str, dict[str, Any]], photos: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The sharpness table: every decoder with a ``sharpness`` block, its DeePSiM one after it.

    Each row: ``target``, ``loss`` (``pixel`` or ``deepsim``), the normalised error, the
    Gaussian SSIM and high-frequency power ratio of the reconstructions and of the two
    trivial baselines (:func:`pipeline.sharpness.sharpness_metrics`), ``images`` (n) and
    the error on the new photographs.
    """
    rows = []
    for name in [*SHALLOW, *ALEXNET]:
        for key, loss in ((name, "pixel"), (f"ds_{name}", "deepsim")):
            m = evals.get(key)
            if m is None or "sharpness" not in m:
                continue
            sharp = m["sharpness"]
            rec, mean, nn = (
                sharp["reconstructions"],
                sharp["mean_image"],
                sharp["nearest_neighbour"],
            )
            rows.append(
                {
                    "target": name,
                    "loss": loss,
                    "error": m["normalised_error"],
                    "ssim": rec["ssim_gaussian"],
                    "hf_ratio": rec["hf_ratio"],
                    "images": sharp["images"],
                    "mean_image": m["mean_image"],
                    "mean_image_ssim": mean["ssim_gaussian"],
                    "mean_image_hf": mean["hf_ratio"],
                    "nearest_ssim": nn["ssim_gaussian"],
                    "nearest_hf": nn["hf_ratio"],
                    "photos": photos.get(key, {}).get("normalised_error"),
                    "photos_images": photos.get(key, {}).get("images"),
                    "steps": m.get("steps"),
                }
            )
    return rows


def _loss_figure(inputs: ReportInputs, out: Path) -> tuple[str, Path] | None:
    """The training-loss panels of every decoder and autoencoder with a loss log."""
    logs = {}
    for name in [*SHALLOW, *ALEXNET]:
        # labelled as the runs are named: T the decoder, ae_T the autoencoder
        logs[name] = Path(inputs.loss_curves.format(name=name))
        logs[f"ae_{name}"] = Path(inputs.ae_loss_curves.format(name=name))
    curves = {}
    for label in sorted(logs):
        if not logs[label].is_file():
            continue
        data = np.loadtxt(logs[label], delimiter=",", skiprows=1, ndmin=2)  # (T, 2): step, loss
        if len(data):
            curves[label] = (data[:, 0], data[:, 1])
    if not curves:
        return None
    out.mkdir(parents=True, exist_ok=True)
    caption = "Training loss (pixel MSE) per target."
    # the report's own file: figures/ is another stage's
    return caption, figures.loss_curves(curves, out / "loss_curves.png", caption=caption)


def _figure_list(figures_dir: Path) -> list[tuple[str, Path]]:
    """The figures to show, with captions: ``captions.json`` of `invert figures` if any."""
    if (figures_dir / CAPTIONS).is_file():
        manifest = json.loads((figures_dir / CAPTIONS).read_text())
        return [(c, figures_dir / name) for c, name in manifest]
    return [(p.stem.replace("_", " "), p) for p in sorted(figures_dir.glob("fig*.png"))]


_NOTES = [
    "Normalised error: mean ||x - x̂|| over test images divided by the mean distance between "
    "two distinct test images (docs/method.md §6). With the embedded default's three test "
    "photographs the denominator is small, so the figures are not comparable with the "
    "paper's ImageNet values.",
    "New photos: the same decoder on crops of photographs in neither split "
    "(prepare.holdout_photos, `invert evaluate --photos`), beside the training-mean image "
    "on those crops.",
]


def make_report(
    *,
    inputs: ReportInputs,
    out: str | Path,
    provenance: dict[str, Any],
    figure_list: list[tuple[str, Path]] | None = None,
    run: str = "",
) -> Path:
    """Gather the metrics, the figures and the loss curves into ``out/index.html``.

    ``figure_list`` overrides the figures of ``inputs.figures``; ``run`` is the run's name
    (``report.run``), shown under the title.
    """
    from pipeline.report import write_report

    same_path = inputs.figures / SAME_IMAGES
    same = json.loads(same_path.read_text()) if same_path.is_file() else {}
    evals, photos = _read_metrics(inputs)
    rows = [
        _error_row(name, key, evals, photos, same)
        for name in [*SHALLOW, *ALEXNET]
        for key in (name, f"ae_{name}")
        if key in evals
    ]
    return write_report(
        out,
        title="Inverting visual representations — reproduction report",
        error_table=rows,
        figures=figure_list if figure_list is not None else _figure_list(inputs.figures),
        provenance=provenance,
        notes=_NOTES,
        loss_figure=_loss_figure(inputs, Path(out)),
        findings=findings(evals, photos),
        run=run,
        sharpness=sharpness_rows(evals, photos),
    )


def run_provenance(
    images: str | Path, alexnet_store: str | Path | None, params_file: str | Path
) -> dict[str, Any]:
    """How the run was made, for the report: its data, AlexNet's weights, the params file.

    Parameters
    ----------
    images : str or Path
        The image store (its source and split counts).
    alexnet_store : str or Path, optional
        One AlexNet feature store (its network parameters and weights); left out where
        None or absent.
    params_file : str or Path
        The params file, shown whole where it exists.
    """
    prov: dict[str, Any] = {}
    store = open_store(images)
    prov["data"] = store.attrs.get("source", {}).get("kind")
    prov["images"] = {
        "source": store.provenance.get("source"),
        "samples": len(store),
        "split_counts": store.attrs.get("split_counts"),
    }
    if alexnet_store is not None and Path(alexnet_store).exists():
        p = open_store(alexnet_store).provenance
        prov["alexnet"] = {
            "params": p.get("params"),
            "weights": p.get("weights"),
            "random_weights": p.get("random_weights"),
        }
    if Path(params_file).is_file():
        prov["params"] = parse_yaml(Path(params_file).read_text())
    return prov


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
            err = m["normalised_error"]
            head = f"{name.upper()} {what}: {err:.3f} on {m['images']} test images"
            verdict = _verdict(m)
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
        out += _deepsim_finding(name, evals)
    return out


def _verdict(m: dict[str, Any]) -> str:
    """The report's words for :func:`pipeline.report.standing` of one decoder's metrics."""
    mean, nn = m["mean_image"], m["nearest_neighbour"]
    match standing(m):
        case "worse":
            return (
                f"no better than the training-mean image ({mean:.3f}): its reconstructions "
                "carry nothing of the features"
            )
        case "unclear":
            name, value = ("mean image", mean) if mean <= nn else ("nearest neighbour", nn)
            return (
                f"below the errors of the mean image ({mean:.3f}) and the nearest neighbour "
                f"({nn:.3f}), but its 95% interval [{m['interval_low']:.3f}, "
                f"{m['interval_high']:.3f}] reaches the {name}'s {value:.3f}: not clearly "
                f"better than the {name}"
            )
        case "recalls":
            return (
                f"beats the mean image ({mean:.3f}) but not the nearest training image in "
                f"feature space ({nn:.3f}): it recalls training images rather than inverting"
            )
    return f"beats the mean image ({mean:.3f}) and the nearest neighbour ({nn:.3f})"


def _deepsim_finding(name: str, evals: dict[str, dict[str, Any]]) -> list[str]:
    """One sentence comparing target ``name``'s DeePSiM decoder with its pixel-loss one."""
    pixel, ds = evals.get(name), evals.get(f"ds_{name}")
    if pixel is None or ds is None or "sharpness" not in pixel or "sharpness" not in ds:
        return []
    a, b = pixel["sharpness"]["reconstructions"], ds["sharpness"]["reconstructions"]
    sharper = "sharper" if b["hf_ratio"] > a["hf_ratio"] else "not sharper"
    against = "" if standing(ds) is None else f" Against the trivial predictors: {_verdict(ds)}."
    return [
        f"{name.upper()} DeePSiM decoder ({ds.get('steps')} steps from the pixel-loss "
        f"decoder): error {_with_interval(ds)} against the pixel loss's "
        f"{_with_interval(pixel)}, high-frequency ratio {b['hf_ratio']:.3f} against "
        f"{a['hf_ratio']:.3f} ({sharper}; the originals: 1), SSIM {b['ssim_gaussian']:.3f} "
        f"against {a['ssim_gaussian']:.3f}, on the same {ds['sharpness']['images']} test "
        f"images.{against}"
    ]


def _with_interval(m: dict[str, Any]) -> str:
    """``0.665 [0.647, 0.685]``: an error and its 95% interval, if it has one."""
    if m.get("interval_low") is None:
        return f"{m['normalised_error']:.3f}"
    return f"{m['normalised_error']:.3f} [{m['interval_low']:.3f}, {m['interval_high']:.3f}]"
